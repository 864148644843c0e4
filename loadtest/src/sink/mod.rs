//! The SMTP sink: accepts mail as fast as it can, refuses or stalls some of it on purpose
//! ([`Faults`]), and counts what it accepted ([`SinkReport`]).
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use kurir_loadtest::sink::{Sink, SinkConfig};
//!
//! let mut config = SinkConfig::default();
//! config.listen = "127.0.0.1:0".parse()?;
//! config.faults.reject.push("550:5.1.1:0.05".parse()?);
//! let sink = Sink::start(config).await?;
//! // ... send to sink.addr() ...
//! let report = sink.stop().await;
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - `session`: one connection; `faults`: what is refused and when; `stats`: the counts.

mod faults;
mod session;
mod stats;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

pub use faults::{Faults, RateFault, RcptRule};
use session::Shared;
pub use stats::SinkReport;
use stats::Stats;

/// How often [`Sink::wait_for`] looks at the counts.
const WAIT_POLL: Duration = Duration::from_millis(20);

/// STARTTLS for the sink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SinkTls {
    /// A self-signed certificate for the host name, `localhost` and the listen address,
    /// made at start.
    SelfSigned,
    /// A PEM certificate chain and key.
    Files { cert: PathBuf, key: PathBuf },
}

/// How the sink runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SinkConfig {
    /// Where to listen (port 0: any free port; see [`Sink::addr`]).
    pub listen: SocketAddr,
    /// The name in the banner and the EHLO reply.
    pub hostname: String,
    /// Offer STARTTLS.
    pub tls: Option<SinkTls>,
    pub faults: Faults,
    /// Connections at most; more get `421 4.3.2` and are closed.
    pub max_connections: usize,
    /// Advertised as SIZE; larger messages get `552 5.3.4`.
    pub max_message_size: usize,
}

impl Default for SinkConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 2526)),
            hostname: "sink.load.test".into(),
            tls: None,
            faults: Faults::default(),
            max_connections: 10_000,
            max_message_size: 64 * 1024 * 1024,
        }
    }
}

/// A running sink.
#[derive(Debug)]
pub struct Sink {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Sink {
    /// Binds `config.listen` and starts accepting.
    pub async fn start(config: SinkConfig) -> anyhow::Result<Self> {
        config.faults.validate()?;
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let addr = listener.local_addr().context("the sink's address")?;
        let tls = match &config.tls {
            None => None,
            Some(SinkTls::SelfSigned) => {
                let names = vec![
                    config.hostname.clone(),
                    "localhost".to_owned(),
                    addr.ip().to_string(),
                ];
                Some(crate::tls::self_signed_server_config(&names)?)
            }
            Some(SinkTls::Files { cert, key }) => {
                Some(crate::tls::server_config_from_files(cert, key)?)
            }
        };
        let shared = Arc::new(Shared {
            hostname: config.hostname.clone(),
            max_message_size: config.max_message_size,
            tls: tls.map(TlsAcceptor::from),
            faults: faults::FaultState::new(config.faults.clone()),
            stats: Stats::new(),
            queue_ids: AtomicU64::new(1),
        });
        let (stop, stopped) = watch::channel(false);
        let limit = Arc::new(Semaphore::new(config.max_connections.max(1)));
        let task = tokio::spawn(accept(listener, shared.clone(), limit, stopped));
        Ok(Self {
            addr,
            shared,
            stop,
            task,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The counts so far.
    pub fn report(&self) -> SinkReport {
        self.shared.stats.report(self.addr.to_string())
    }

    /// Waits until `done` holds for the counts, at most `timeout`; returns the last counts
    /// and whether it held.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        done: impl Fn(&SinkReport) -> bool,
    ) -> (SinkReport, bool) {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut poll = tokio::time::interval(WAIT_POLL);
        loop {
            poll.tick().await;
            let report = self.report();
            if done(&report) {
                return (report, true);
            }
            if tokio::time::Instant::now() >= deadline {
                return (report, false);
            }
        }
    }

    /// Stops accepting, closes every connection, and returns the final counts.
    pub async fn stop(self) -> SinkReport {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        self.shared.stats.report(self.addr.to_string())
    }
}

/// Accepts until stopped; each connection in a task of its own, at most `limit` at once.
async fn accept(
    listener: TcpListener,
    shared: Arc<Shared>,
    limit: Arc<Semaphore>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut sessions = JoinSet::new();
    loop {
        let (stream, _peer) = tokio::select! {
            _ = stopped.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(_) => {
                    // Out of file descriptors, most likely: let some sessions end.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        while sessions.try_join_next().is_some() {}
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            tokio::spawn(refuse(stream));
            continue;
        };
        let shared = shared.clone();
        sessions.spawn(async move {
            session::run(stream, shared).await;
            drop(permit);
        });
    }
    sessions.shutdown().await;
}

async fn refuse(mut stream: TcpStream) {
    let _ = stream
        .write_all(b"421 4.3.2 Too many connections\r\n")
        .await;
    let _ = stream.shutdown().await;
}
