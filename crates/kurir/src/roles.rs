//! The roles `kurir serve` runs, on the configured backends.
//!
//! Backends are chosen at run time (`queue.backend`, `state.backend`) while the servers are
//! generic over `Queue` and `State`, so the choice is made once here with two nested
//! matches and every combination runs the same code.
//!
//! The publish acknowledgement timeout follows the queue: Kafka's `delivery_timeout` plus a
//! second (so librdkafka answers first, with a precise error), 10 s for the embedded queue
//! (an fsync never takes that long on a healthy disk). Timeout budget, inner to outer:
//! queue ack < `smtp.timeouts.data` (the client is still waiting) < `lifecycle.grace_period`;
//! a gRPC `Submit` waits for the same ack, so a client deadline should exceed it too.
//!
//! The submit role runs the SMTP server and, unless `grpc.enabled = false`, the gRPC API.
//! Both servers are built (certificates loaded, keys parsed) before either binds, and every
//! listener is bound before the node reports ready, so a taken port fails the start. The
//! admin API sees this process's delivery sites only when the deliver role runs here too.

#![allow(clippy::print_stdout)] // the bound address lines are part of the CLI contract

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use kurir_deliver::Deliverer;
use kurir_deliver::pool::SiteSnapshot;
use kurir_lifecycle::Lifecycle;
use kurir_proto::v1;
use kurir_queue::embedded::EmbeddedQueue;
use kurir_queue::kafka::KafkaQueue;
use kurir_queue::{Queue, config::Backend as QueueKind};
use kurir_state::embedded::EmbeddedState;
use kurir_state::redis::RedisState;
use kurir_state::{State, config::Backend as StateKind};
use kurir_submit::grpc::{AdminHooks, GrpcServer};
use kurir_submit::publish::{PublishConfig, Publisher};
use kurir_submit::smtp::SmtpServer;
use kurir_telemetry::Metrics;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::serve::RoleSet;

/// The prefix of the stdout line for each SMTP listener: `smtp listening on 127.0.0.1:2525`.
pub const SMTP_LISTENING: &str = "smtp listening on ";

/// The prefix of the stdout line for the gRPC listener: `grpc listening on 127.0.0.1:50051`.
pub const GRPC_LISTENING: &str = "grpc listening on ";

/// The delivery role's site state, for the admin API's `QueueStats`.
type SitesHook = Arc<dyn Fn() -> Vec<v1::SiteStats> + Send + Sync>;

/// How long the servers may take to stop after the drain.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// The queue backend in use.
#[derive(Debug, Clone)]
pub(crate) enum QueueBackend {
    Embedded(EmbeddedQueue),
    Kafka(KafkaQueue),
}

/// The state backend in use.
#[derive(Debug, Clone)]
enum StateBackend {
    Embedded(EmbeddedState),
    Redis(RedisState),
}

/// The running roles.
#[derive(Debug)]
pub struct Running {
    tasks: Vec<JoinHandle<()>>,
    queue: Option<QueueBackend>,
    state: Option<StateBackend>,
    /// Where the servers listen (port 0 in the config: the port the system chose).
    addrs: Addrs,
}

/// Where the submission servers listen.
#[derive(Debug, Clone, Default)]
pub struct Addrs {
    /// Every SMTP listener, in `smtp.listeners` order.
    pub smtp: Vec<SocketAddr>,
    /// The gRPC listener, when `grpc.enabled`.
    pub grpc: Option<SocketAddr>,
}

/// The servers' tasks and where they listen.
struct Started {
    tasks: Vec<JoinHandle<()>>,
    addrs: Addrs,
}

/// Opens the backends and starts the roles in `roles`; prints where each server listens
/// ([`SMTP_LISTENING`], [`GRPC_LISTENING`]) once every listener is bound.
pub async fn start(
    config: &Config,
    roles: RoleSet,
    lifecycle: &Lifecycle,
    metrics: &Metrics,
) -> anyhow::Result<Running> {
    let running = start_quietly(config, roles, lifecycle, metrics).await?;
    for addr in &running.addrs.smtp {
        println!("{SMTP_LISTENING}{addr}");
    }
    if let Some(addr) = running.addrs.grpc {
        println!("{GRPC_LISTENING}{addr}");
    }
    Ok(running)
}

/// [`start`] without the stdout lines (`kurir demo` keeps stdout for its own output);
/// [`Running::addrs`] says where the servers listen.
pub async fn start_quietly(
    config: &Config,
    roles: RoleSet,
    lifecycle: &Lifecycle,
    metrics: &Metrics,
) -> anyhow::Result<Running> {
    let mut running = Running {
        tasks: Vec::new(),
        queue: None,
        state: None,
        addrs: Addrs::default(),
    };
    if !roles.submit && !roles.deliver {
        return Ok(running);
    }
    let queue = open_queue(config).await?;
    let state = open_state(config).await?;
    running.queue = Some(queue.clone());
    running.state = Some(state.clone());
    let started = match queue {
        QueueBackend::Embedded(q) => {
            with_state(config, roles, q, state, lifecycle, metrics).await?
        }
        QueueBackend::Kafka(q) => with_state(config, roles, q, state, lifecycle, metrics).await?,
    };
    running.tasks = started.tasks;
    running.addrs = started.addrs;
    Ok(running)
}

impl Running {
    /// Where the submission servers listen.
    pub fn addrs(&self) -> &Addrs {
        &self.addrs
    }

    /// The queue the roles run on (`None` when no role runs).
    pub(crate) fn queue(&self) -> Option<&QueueBackend> {
        self.queue.as_ref()
    }

    /// After the drain: waits for the servers to stop, then closes the embedded stores
    /// (flushing them).
    pub async fn stop(self) {
        for task in self.tasks {
            if tokio::time::timeout(STOP_TIMEOUT, task).await.is_err() {
                tracing::warn!("a server did not stop in time");
            }
        }
        if let Some(queue) = self.queue {
            queue.close().await;
        }
        if let Some(StateBackend::Embedded(state)) = self.state {
            state.close().await;
        }
    }
}

impl QueueBackend {
    /// Closes an embedded queue (flushing it); a Kafka client needs nothing.
    pub(crate) async fn close(self) {
        if let Self::Embedded(queue) = self {
            queue.close().await;
        }
    }
}

/// Opens the configured queue and creates its topics that are missing.
pub(crate) async fn open_queue(config: &Config) -> anyhow::Result<QueueBackend> {
    let queue = match config.queue.backend {
        QueueKind::Embedded => {
            let dir = config.embedded_queue_dir();
            let queue = EmbeddedQueue::open(&dir, &config.queue)
                .with_context(|| format!("opening the embedded queue in {}", dir.display()))?;
            QueueBackend::Embedded(queue)
        }
        QueueKind::Kafka => QueueBackend::Kafka(KafkaQueue::connect(&config.queue)?),
    };
    let topics = config.queue.topic_specs();
    match &queue {
        QueueBackend::Embedded(q) => q.ensure_topics(&topics).await,
        QueueBackend::Kafka(q) => q.ensure_topics(&topics).await,
    }
    .context("creating the queue's topics")?;
    Ok(queue)
}

async fn open_state(config: &Config) -> anyhow::Result<StateBackend> {
    Ok(match config.state.backend {
        StateKind::Embedded => {
            let dir = config.embedded_state_dir();
            let state = EmbeddedState::open(&dir, &config.state).with_context(|| {
                format!("opening the embedded state store in {}", dir.display())
            })?;
            StateBackend::Embedded(state)
        }
        StateKind::Redis => StateBackend::Redis(RedisState::connect(&config.state).await?),
    })
}

async fn with_state<Q: Queue + Clone>(
    config: &Config,
    roles: RoleSet,
    queue: Q,
    state: StateBackend,
    lifecycle: &Lifecycle,
    metrics: &Metrics,
) -> anyhow::Result<Started> {
    match state {
        StateBackend::Embedded(s) => start_roles(config, roles, queue, s, lifecycle, metrics).await,
        StateBackend::Redis(s) => start_roles(config, roles, queue, s, lifecycle, metrics).await,
    }
}

async fn start_roles<Q: Queue + Clone, S: State + Clone>(
    config: &Config,
    roles: RoleSet,
    queue: Q,
    state: S,
    lifecycle: &Lifecycle,
    metrics: &Metrics,
) -> anyhow::Result<Started> {
    let mut tasks = Vec::new();
    let mut addrs = Addrs::default();
    let mut sites = None;
    // Delivery first: a bad [deliver] section fails the start before any port is bound.
    if roles.deliver {
        let (task, hook) = start_deliver(config, queue.clone(), state.clone(), lifecycle, metrics)?;
        tasks.push(task);
        sites = Some(hook);
    }
    if roles.submit {
        let submit = start_submit(config, queue, state, sites, lifecycle, metrics).await?;
        tasks.extend(submit.tasks);
        addrs = submit.addrs;
    }
    Ok(Started { tasks, addrs })
}

/// Starts the delivery role: joins the consumer group and delivers until shutdown. Returns
/// the task and the hook that shows its sites to the admin API.
fn start_deliver<Q: Queue + Clone, S: State + Clone>(
    config: &Config,
    queue: Q,
    state: S,
    lifecycle: &Lifecycle,
    metrics: &Metrics,
) -> anyhow::Result<(JoinHandle<()>, SitesHook)> {
    let deliverer = Deliverer::new(
        config.deliver.clone(),
        &config.queue,
        config.state.domain_poll_interval,
        queue,
        state,
        lifecycle.clone(),
    )?;
    deliverer.metrics().register(metrics);
    let drain = config.lifecycle.grace_period;
    let observed = deliverer.clone();
    let sites: SitesHook = Arc::new(move || observed.sites().into_iter().map(site_stats).collect());
    let task = tokio::spawn(async move {
        if let Err(error) = deliverer.run(drain).await {
            tracing::error!(%error, "the delivery role stopped");
        }
    });
    Ok((task, sites))
}

fn site_stats(site: SiteSnapshot) -> v1::SiteStats {
    v1::SiteStats {
        site: site.site,
        open_connections: site.throttle.open,
        idle_connections: u32::try_from(site.idle).unwrap_or(u32::MAX),
        connection_limit: site.throttle.limit,
        configured_connection_limit: site.throttle.configured_limit,
        rate: site.throttle.rate,
        throttle_reason: site.throttle.reason.unwrap_or_default(),
        down_reason: site.down.unwrap_or_default(),
    }
}

/// Binds the SMTP listeners (and the gRPC one) and starts the submission servers.
async fn start_submit<Q: Queue + Clone, S: State + Clone>(
    config: &Config,
    queue: Q,
    state: S,
    sites: Option<SitesHook>,
    lifecycle: &Lifecycle,
    metrics: &Metrics,
) -> anyhow::Result<Started> {
    let publisher = Publisher::new(queue.clone(), publish_config(config));
    // Before binding: a bad certificate or config fails the start, not the first client.
    let server = SmtpServer::new(
        config.smtp.clone(),
        publisher.clone(),
        state.clone(),
        lifecycle.clone(),
    )?;
    server.metrics().register(metrics);
    let grpc = if config.grpc.enabled {
        let hooks = admin_hooks(config, sites);
        let grpc = GrpcServer::new(
            config.grpc.clone(),
            publisher,
            queue,
            state,
            hooks,
            lifecycle.clone(),
        )?;
        Some(grpc)
    } else {
        None
    };
    let listeners = kurir_submit::smtp::bind(&config.smtp)?;
    let mut addrs = Addrs::default();
    for (listener, mode) in &listeners {
        let addr = listener.local_addr().context("smtp listener address")?;
        tracing::info!(%addr, ?mode, "smtp listening");
        addrs.smtp.push(addr);
    }
    let grpc = match grpc {
        Some(grpc) => Some((grpc, bind_grpc(config).await?)),
        None => None,
    };
    let mut tasks = vec![tokio::spawn(async move { server.serve(listeners).await })];
    if let Some((grpc, listener)) = grpc {
        addrs.grpc = listener.local_addr().ok();
        tasks.push(tokio::spawn(async move {
            if let Err(error) = grpc.serve(listener).await {
                tracing::error!(%error, "the grpc server stopped");
            }
        }));
    }
    Ok(Started { tasks, addrs })
}

/// Binds `grpc.listen`.
async fn bind_grpc(config: &Config) -> anyhow::Result<TcpListener> {
    let listen = config.grpc.listen;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on grpc.listen = {listen}"))?;
    let addr = listener.local_addr().context("grpc listener address")?;
    tracing::info!(%addr, tls = config.grpc.tls.is_some(), "grpc listening");
    Ok(listener)
}

/// What the admin API needs from the rest of the node.
fn admin_hooks(config: &Config, sites: Option<SitesHook>) -> AdminHooks {
    AdminHooks {
        sites,
        delivery: config.queue.delivery_subscriptions(&config.deliver.group),
        topic_specs: config.queue.topic_specs(),
        max_age: config.deliver.max_age,
    }
}

fn publish_config(config: &Config) -> PublishConfig {
    let ack_timeout = match config.queue.backend {
        QueueKind::Kafka => config.queue.kafka.delivery_timeout + Duration::from_secs(1),
        QueueKind::Embedded => Duration::from_secs(10),
    };
    PublishConfig {
        hostname: config.smtp.hostname.clone(),
        topic: config.queue.topics().mail(),
        ack_timeout,
        shards: BTreeMap::new(),
    }
}
