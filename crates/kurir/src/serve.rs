//! `kurir serve`: telemetry endpoint, signal handling, readiness and the bounded drain.
//!
//! Shutdown order (DESIGN.md §8): SIGTERM/SIGINT → readiness false → shutdown signal to
//! every task → drain under `lifecycle.grace_period` → stop the telemetry endpoint → exit.
//! The endpoint outlives the drain so `/readyz` answers 503 and `/metrics` shows the
//! drain while it runs. A second signal exits at once.

#![allow(clippy::print_stdout)] // the bound address line is part of the CLI contract

use std::fmt;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use kurir_lifecycle::{Lifecycle, OsSignals};
use kurir_telemetry::http::{self, CLOSE_TIMEOUT};
use kurir_telemetry::{BuildInfo, HttpConfig, Metrics, TelemetryError};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::Config;

/// The prefix of the stdout line that tells tests and scripts where the telemetry
/// endpoint listens (useful with port 0): `http listening on 127.0.0.1:9090`.
pub const HTTP_LISTENING: &str = "http listening on ";

/// A role `--role` can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// Submission over SMTP and the gRPC API (`[grpc]`).
    Submit,
    /// Delivery to recipients' MX hosts (or static routes).
    Deliver,
    /// Every role, with the embedded queue and state.
    All,
}

/// The set of roles this process runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RoleSet {
    /// Run the submission role.
    pub submit: bool,
    /// Run the delivery role.
    pub deliver: bool,
}

impl RoleSet {
    /// The union of `roles`; `all` (or nothing) means every role.
    pub fn from_roles(roles: &[Role]) -> Self {
        let all = roles.is_empty() || roles.contains(&Role::All);
        Self {
            submit: all || roles.contains(&Role::Submit),
            deliver: all || roles.contains(&Role::Deliver),
        }
    }
}

impl fmt::Display for RoleSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = [(self.submit, "submit"), (self.deliver, "deliver")];
        let names: Vec<_> = names
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, n)| *n)
            .collect();
        f.write_str(&names.join(","))
    }
}

/// Runs a node with a validated `config` until SIGTERM/SIGINT and the drain; returns the
/// process exit code.
pub async fn run(config: Config, roles: RoleSet) -> anyhow::Result<ExitCode> {
    match kurir_telemetry::init_tracing(&config.log) {
        // An embedding process (a test) may have installed its own subscriber.
        Ok(()) | Err(TelemetryError::AlreadyInitialised) => {}
        Err(error) => return Err(error.into()),
    }
    // Before anything reports ready: until then SIGTERM would kill without a drain.
    let mut signals = OsSignals::install().context("installing SIGTERM/SIGINT handlers")?;
    let lifecycle = Lifecycle::new();
    let build = BuildInfo {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        roles: roles.to_string(),
    };
    let metrics = Arc::new(Metrics::new(build, &lifecycle));
    let endpoint = HttpEndpoint::start(&config.http, metrics.clone(), &lifecycle).await?;
    announce(endpoint.addr);
    let running = crate::roles::start(&config, roles, &lifecycle, &metrics).await?;
    lifecycle.set_ready(true);
    tracing::info!(node = %config.node.id, %roles, "ready");

    let signal = signals.recv().await;
    tracing::info!(%signal, "shutting down");
    let code = shut_down(&lifecycle, &mut signals, config.lifecycle.grace_period).await;
    running.stop().await;
    endpoint.stop().await;
    tracing::info!("exiting");
    Ok(code)
}

fn announce(addr: SocketAddr) {
    println!("{HTTP_LISTENING}{addr}");
    tracing::info!(%addr, "http listening");
}

/// Readiness false, shutdown to every task, then the drain; a second signal cuts it short.
async fn shut_down(lifecycle: &Lifecycle, signals: &mut OsSignals, grace: Duration) -> ExitCode {
    lifecycle.set_ready(false);
    lifecycle.shutdown();
    tokio::select! {
        report = lifecycle.drain(grace) => {
            if report.is_complete() {
                ExitCode::SUCCESS
            } else {
                tracing::warn!(
                    remaining = report.remaining.len(),
                    grace = %humantime::format_duration(grace),
                    "grace period expired; exiting with work still in flight",
                );
                ExitCode::FAILURE
            }
        }
        signal = signals.recv() => {
            tracing::warn!(%signal, "second signal; exiting without waiting for the drain");
            ExitCode::FAILURE
        }
    }
}

/// The running telemetry endpoint.
pub(crate) struct HttpEndpoint {
    pub(crate) addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl HttpEndpoint {
    pub(crate) async fn start(
        config: &HttpConfig,
        metrics: Arc<Metrics>,
        lifecycle: &Lifecycle,
    ) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on http.listen = {}", config.listen))?;
        let addr = listener.local_addr().context("http listener address")?;
        let (stop, stopped) = oneshot::channel::<()>();
        let stopped = async move {
            let _ = stopped.await;
        };
        let task = tokio::spawn(http::serve(listener, metrics, lifecycle.clone(), stopped));
        Ok(Self { addr, stop, task })
    }

    pub(crate) async fn stop(self) {
        let _ = self.stop.send(());
        // `serve` bounds its own close; the margin only guards against a bug there.
        let bound = CLOSE_TIMEOUT + Duration::from_secs(1);
        if tokio::time::timeout(bound, self.task).await.is_err() {
            tracing::warn!("http endpoint did not stop in time");
        }
    }
}
