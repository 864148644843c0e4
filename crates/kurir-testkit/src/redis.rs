//! A real `redis-server` for tests.

use std::time::Duration;

use anyhow::Context;
use tempfile::TempDir;

use crate::process::ChildProcess;
use crate::wait::{free_port, wait_for};

/// How long a fresh redis-server may take to answer PING.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Attempts at finding a free port (another process may take the one we picked).
const START_ATTEMPTS: usize = 5;

/// A `redis-server` on 127.0.0.1 with no persistence (no RDB, no AOF), its working files in a
/// temp dir. Ready (answers PING) when [`RedisServer::start`] returns; killed on drop.
///
/// [`RedisServer::stop`] and [`RedisServer::restart`] (same port) let tests simulate an
/// outage and a recovery.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    dir: TempDir,
    process: Option<ChildProcess>,
}

impl RedisServer {
    /// Starts a server on a free port.
    pub async fn start() -> anyhow::Result<Self> {
        let mut dir = tempfile::Builder::new().prefix("kurir-redis-").tempdir()?;
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            let mut server = Self {
                port: free_port(),
                dir,
                process: None,
            };
            match server.spawn_and_wait().await {
                Ok(()) => return Ok(server),
                Err(e) => {
                    last_error = Some(e);
                    dir = server.into_dir();
                }
            }
        }
        Err(last_error.expect("at least one attempt"))
    }

    /// `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A new client for this server.
    pub fn client(&self) -> anyhow::Result<redis::Client> {
        redis::Client::open(self.url()).context("redis client")
    }

    /// Kills the server (SIGKILL): clients see connection errors until [`Self::restart`].
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut process) = self.process.take() {
            process.kill().await?;
        }
        Ok(())
    }

    /// Starts the server again on the same port (with an empty dataset: no persistence).
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await?;
        self.spawn_and_wait().await
    }

    fn into_dir(self) -> TempDir {
        self.dir
    }

    async fn spawn_and_wait(&mut self) -> anyhow::Result<()> {
        let args: Vec<String> = [
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "yes",
            "--dir",
            &self.dir.path().display().to_string(),
            "--logfile",
            "",
        ]
        .map(String::from)
        .to_vec();
        let mut process =
            ChildProcess::spawn("redis-server", "redis-server", &args, &[], self.dir.path())?;
        let client = self.client()?;
        let ready = wait_for("redis-server to answer PING", READY_TIMEOUT, || {
            let client = client.clone();
            let exited = process.exited().is_some();
            async move {
                if exited {
                    return Some(false);
                }
                ping(&client).await.then_some(true)
            }
        })
        .await;
        match ready {
            Ok(true) => {
                self.process = Some(process);
                Ok(())
            }
            Ok(false) => anyhow::bail!("redis-server exited at start\n{}", process.log_tail()),
            Err(e) => Err(e.context(process.log_tail())),
        }
    }
}

async fn ping(client: &redis::Client) -> bool {
    let attempt = async {
        let mut conn = client.get_multiplexed_async_connection().await.ok()?;
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .ok()
    };
    let pong = tokio::time::timeout(Duration::from_secs(1), attempt).await;
    matches!(pong, Ok(Some(p)) if p == "PONG")
}
