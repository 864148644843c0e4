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
use crate::roles::Running;

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
    init_tracing(&config)?;
    // Before anything reports ready: until then SIGTERM would kill without a drain.
    let mut signals = OsSignals::install().context("installing SIGTERM/SIGINT handlers")?;
    let node = Started::start(&config, roles, roles.to_string(), false).await?;
    tracing::info!(node = %config.node.id, %roles, "ready");

    let signal = signals.recv().await;
    tracing::info!(%signal, "shutting down");
    let grace = config.lifecycle.grace_period;
    let code = node
        .stop(async |lifecycle| drain(lifecycle, &mut signals, grace).await)
        .await;
    tracing::info!("exiting");
    Ok(code)
}

/// Installs the `[log]` subscriber; an embedding process (a test) may have installed its
/// own.
pub(crate) fn init_tracing(config: &Config) -> anyhow::Result<()> {
    match kurir_telemetry::init_tracing(&config.log) {
        Ok(()) | Err(TelemetryError::AlreadyInitialised) => Ok(()),
        Err(error) => Err(error.into()),
    }
}

fn announce(addr: SocketAddr) {
    println!("{HTTP_LISTENING}{addr}");
    tracing::info!(%addr, "http listening");
}

/// The drain, cut short by a second signal; the exit code says whether it completed.
async fn drain(lifecycle: &Lifecycle, signals: &mut OsSignals, grace: Duration) -> ExitCode {
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

/// A node that reports ready: its roles and the telemetry endpoint. `kurir serve` and
/// `kurir demo` start and stop a node with it, so both keep the order of DESIGN.md §8.
pub(crate) struct Started {
    pub(crate) lifecycle: Lifecycle,
    pub(crate) running: Running,
    pub(crate) endpoint: HttpEndpoint,
}

impl Started {
    /// Starts the telemetry endpoint, then `roles`, then reports ready. `build_roles` is
    /// the `roles` label of `kurir_build_info`. Unless `quiet`, the listening addresses
    /// go to stdout (the http one before the roles start).
    pub(crate) async fn start(
        config: &Config,
        roles: RoleSet,
        build_roles: String,
        quiet: bool,
    ) -> anyhow::Result<Self> {
        let lifecycle = Lifecycle::new();
        let build = BuildInfo {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            roles: build_roles,
        };
        let metrics = Arc::new(Metrics::new(build, &lifecycle));
        let endpoint = HttpEndpoint::start(&config.http, metrics.clone(), &lifecycle).await?;
        let running = if quiet {
            crate::roles::start_quietly(config, roles, &lifecycle, &metrics).await?
        } else {
            announce(endpoint.addr);
            crate::roles::start(config, roles, &lifecycle, &metrics).await?
        };
        lifecycle.set_ready(true);
        Ok(Self {
            lifecycle,
            running,
            endpoint,
        })
    }

    /// Readiness false → shutdown signal to every task → `drain` (given the lifecycle to
    /// drain; its result is returned) → stop the roles (closing the stores) → stop the
    /// telemetry endpoint, which outlives the drain so `/readyz` and `/metrics` show it.
    pub(crate) async fn stop<T>(self, drain: impl AsyncFnOnce(&Lifecycle) -> T) -> T {
        self.lifecycle.set_ready(false);
        self.lifecycle.shutdown();
        let drained = drain(&self.lifecycle).await;
        self.running.stop().await;
        self.endpoint.stop().await;
        drained
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
