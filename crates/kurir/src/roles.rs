//! The roles `kurir serve` runs, on the configured backends.
//!
//! Backends are chosen at run time (`queue.backend`, `state.backend`) while the servers are
//! generic over `Queue` and `State`, so the choice is made once here with two nested
//! matches and every combination runs the same code.
//!
//! The publish acknowledgement timeout follows the queue: Kafka's `delivery_timeout` plus a
//! second (so librdkafka answers first, with a precise error), 10 s for the embedded queue
//! (an fsync never takes that long on a healthy disk). Timeout budget, inner to outer:
//! queue ack < `smtp.timeouts.data` (the client is still waiting) < `lifecycle.grace_period`.

#![allow(clippy::print_stdout)] // the bound address lines are part of the CLI contract

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use kurir_deliver::Deliverer;
use kurir_lifecycle::Lifecycle;
use kurir_queue::embedded::EmbeddedQueue;
use kurir_queue::kafka::KafkaQueue;
use kurir_queue::{Queue, config::Backend as QueueKind};
use kurir_state::embedded::EmbeddedState;
use kurir_state::redis::RedisState;
use kurir_state::{State, config::Backend as StateKind};
use kurir_submit::publish::{PublishConfig, Publisher};
use kurir_submit::smtp::SmtpServer;
use kurir_telemetry::Metrics;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::serve::RoleSet;

/// The prefix of the stdout line for each SMTP listener: `smtp listening on 127.0.0.1:2525`.
pub const SMTP_LISTENING: &str = "smtp listening on ";

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
}

/// Opens the backends and starts the roles in `roles`.
pub async fn start(
    config: &Config,
    roles: RoleSet,
    lifecycle: &Lifecycle,
    metrics: &Metrics,
) -> anyhow::Result<Running> {
    let mut running = Running {
        tasks: Vec::new(),
        queue: None,
        state: None,
    };
    if !roles.submit && !roles.deliver {
        return Ok(running);
    }
    let queue = open_queue(config).await?;
    let state = open_state(config).await?;
    running.queue = Some(queue.clone());
    running.state = Some(state.clone());
    running.tasks = match queue {
        QueueBackend::Embedded(q) => {
            with_state(config, roles, q, state, lifecycle, metrics).await?
        }
        QueueBackend::Kafka(q) => with_state(config, roles, q, state, lifecycle, metrics).await?,
    };
    Ok(running)
}

impl Running {
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
) -> anyhow::Result<Vec<JoinHandle<()>>> {
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
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let mut tasks = Vec::new();
    // Delivery first: a bad [deliver] section fails the start before any port is bound.
    if roles.deliver {
        tasks.push(start_deliver(
            config,
            queue.clone(),
            state.clone(),
            lifecycle,
            metrics,
        )?);
    }
    if roles.submit {
        tasks.push(start_submit(config, queue, state, lifecycle, metrics).await?);
    }
    Ok(tasks)
}

/// Starts the delivery role: joins the consumer group and delivers until shutdown.
fn start_deliver<Q: Queue + Clone, S: State + Clone>(
    config: &Config,
    queue: Q,
    state: S,
    lifecycle: &Lifecycle,
    metrics: &Metrics,
) -> anyhow::Result<JoinHandle<()>> {
    let deliverer = Deliverer::new(
        config.deliver.clone(),
        &config.queue,
        queue,
        state,
        lifecycle.clone(),
    )?;
    deliverer.metrics().register(metrics);
    let drain = config.lifecycle.grace_period;
    Ok(tokio::spawn(async move {
        if let Err(error) = deliverer.run(drain).await {
            tracing::error!(%error, "the delivery role stopped");
        }
    }))
}

/// Binds the SMTP listeners and starts the submission server.
async fn start_submit<Q: Queue + Clone, S: State + Clone>(
    config: &Config,
    queue: Q,
    state: S,
    lifecycle: &Lifecycle,
    metrics: &Metrics,
) -> anyhow::Result<JoinHandle<()>> {
    let publisher = Publisher::new(queue, publish_config(config));
    // Before binding: a bad certificate or config fails the start, not the first client.
    let server = SmtpServer::new(config.smtp.clone(), publisher, state, lifecycle.clone())?;
    server.metrics().register(metrics);
    let listeners = kurir_submit::smtp::bind(&config.smtp)?;
    for (listener, mode) in &listeners {
        let addr = listener.local_addr().context("smtp listener address")?;
        println!("{SMTP_LISTENING}{addr}");
        tracing::info!(%addr, ?mode, "smtp listening");
    }
    Ok(tokio::spawn(async move { server.serve(listeners).await }))
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
