//! The demo's all-in-one node: its configuration, start and stop.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use kurir_deliver::config::{RouteConfig, TlsPolicy};
use kurir_submit::grpc::{ApiKeyConfig, ApiService};
use kurir_submit::smtp::{ListenerConfig, ListenerMode, SuppressedAction};

use super::outcomes::Outcomes;
use crate::config::Config;
use crate::roles::QueueBackend;
use crate::serve::{self, RoleSet, Started};

/// The domains the demo sends to (and its sender's domain): all routed to the sink.
pub(super) const DEMO_DOMAINS: &str = "*.demo.test";

/// How long the node may take to drain when the demo is over.
const GRACE_PERIOD: Duration = Duration::from_secs(5);

/// A running node.
pub(super) struct Node {
    started: Started,
    pub(super) smtp: SocketAddr,
    pub(super) grpc: SocketAddr,
    pub(super) http: SocketAddr,
    events_topic: String,
}

/// The node's configuration: everything on loopback port 0, data in `data_dir`, the demo
/// domains routed to `sink` in plain text, short retry tiers, one API key (by its SHA-256).
pub(super) fn config(data_dir: &Path, sink: SocketAddr, key_sha256: String) -> Config {
    let loopback = |port| SocketAddr::from(([127, 0, 0, 1], port));
    let mut config = Config::default();
    config.node.id = "kurir-demo".into();
    config.node.data_dir = data_dir.to_path_buf();
    config.log.level = "error".into();
    config.http.listen = loopback(0);
    config.lifecycle.grace_period = GRACE_PERIOD;
    config.queue.partitions = 4;
    config.queue.retry_partitions = 2;
    config.queue.events_partitions = 2;
    config.queue.retry_tiers = vec![Duration::from_secs(1), Duration::from_secs(2)];
    config.queue.drain_timeout = Duration::from_secs(2);
    config.smtp.hostname = "kurir.demo.test".into();
    config.smtp.listeners = vec![ListenerConfig {
        address: loopback(0),
        mode: ListenerMode::Plain,
    }];
    // A dropped suppressed recipient becomes a SUPPRESSED event the summary can count.
    config.smtp.suppressed_recipients = SuppressedAction::Drop;
    config.grpc.listen = loopback(0);
    config.grpc.api_keys = vec![ApiKeyConfig {
        name: "demo".into(),
        sha256: key_sha256,
        tenant: config.smtp.default_tenant.clone(),
        services: vec![ApiService::Submission, ApiService::Suppression],
        rate_per_second: 0.0,
    }];
    config.deliver.hostname = "kurir.demo.test".into();
    config.deliver.routes = vec![RouteConfig {
        domains: vec![DEMO_DOMAINS.into()],
        host: sink.to_string(),
        tls: TlsPolicy::Disable,
        auth: None,
    }];
    config
}

impl Node {
    /// Validates `config` and starts every role and the telemetry endpoint.
    pub(super) async fn start(config: Config) -> anyhow::Result<Self> {
        config.validate().context("the demo's configuration")?;
        serve::init_tracing(&config)?;
        let started =
            Started::start(&config, RoleSet::from_roles(&[]), "demo".to_owned(), true).await?;
        let addrs = started.running.addrs().clone();
        Ok(Self {
            smtp: *addrs.smtp.first().context("no SMTP listener")?,
            grpc: addrs.grpc.context("no gRPC listener")?,
            http: started.endpoint.addr,
            events_topic: config.queue.topics().events(),
            started,
        })
    }

    /// Follows the node's outcome events in a consumer group of the demo's own.
    pub(super) async fn outcomes(&self, sender: &str) -> anyhow::Result<Outcomes> {
        let topic = self.events_topic.clone();
        let queue = self.started.running.queue();
        match queue.context("the node runs no queue")? {
            QueueBackend::Embedded(q) => Outcomes::follow(q.clone(), topic, sender).await,
            QueueBackend::Kafka(q) => Outcomes::follow(q.clone(), topic, sender).await,
        }
    }

    /// Drains (within the grace period) and stops everything, closing the stores.
    pub(super) async fn stop(self) {
        self.started
            .stop(async |lifecycle| {
                let report = lifecycle.drain(GRACE_PERIOD).await;
                if !report.is_complete() {
                    tracing::warn!(
                        remaining = report.remaining.len(),
                        "the demo node did not drain"
                    );
                }
            })
            .await;
    }
}
