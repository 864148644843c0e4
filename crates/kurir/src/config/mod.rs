//! The configuration: one TOML file, every key defaulted, unknown keys rejected,
//! `KURIR__SECTION__KEY` environment overrides, validated before anything is bound.
//!
//! `docs/configuration.md` documents every key; a test keeps the two in step.

mod env;
mod error;
mod load;
mod validate;

use std::path::PathBuf;
use std::time::Duration;

use kurir_deliver::DeliverConfig;
use kurir_queue::QueueConfig;
use kurir_state::StateConfig;
use kurir_submit::grpc::GrpcConfig;
use kurir_submit::smtp::SmtpConfig;
use kurir_telemetry::{HttpConfig, LogConfig};
use serde::{Deserialize, Serialize};

pub use env::ENV_PREFIX;
pub use error::ConfigError;
pub use validate::{MAX_GRACE_PERIOD, MIN_GRACE_PERIOD};

/// The whole configuration file.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[node]`: this process's identity and local storage.
    pub node: NodeConfig,
    /// `[log]`: log format and level.
    pub log: LogConfig,
    /// `[http]`: the `/metrics`, `/healthz`, `/readyz` endpoint.
    pub http: HttpConfig,
    /// `[lifecycle]`: shutdown behaviour.
    pub lifecycle: LifecycleConfig,
    /// `[queue]`: the queue between submission and delivery (embedded or Kafka).
    pub queue: QueueConfig,
    /// `[state]`: suppression, bounce memory, ledger, idempotency, tracking, domain pauses
    /// (embedded or Redis).
    pub state: StateConfig,
    /// `[smtp]`: the SMTP submission server.
    pub smtp: SmtpConfig,
    /// `[grpc]`: the gRPC API (submission, suppression, admin) and its API keys.
    pub grpc: GrpcConfig,
    /// `[deliver]`: the delivery role (routing, connections, throttles, retries, bounces).
    pub deliver: DeliverConfig,
}

impl Config {
    /// The embedded queue's directory: `queue.embedded.dir`, under `node.data_dir` when
    /// relative.
    pub fn embedded_queue_dir(&self) -> PathBuf {
        self.node.data_dir.join(&self.queue.embedded.dir)
    }

    /// The embedded state store's directory: `state.embedded.dir`, under `node.data_dir`
    /// when relative.
    pub fn embedded_state_dir(&self) -> PathBuf {
        self.node.data_dir.join(&self.state.embedded.dir)
    }
}

/// The `[node]` section.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// This node's name in logs, metrics and (later) the cluster: a DNS label. Defaults
    /// to the host name (in Kubernetes, the pod name), else `kurir-0`.
    pub id: String,
    /// Where the embedded stores keep their files (`queue.embedded.dir` and
    /// `state.embedded.dir` are relative to it).
    pub data_dir: PathBuf,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            id: default_node_id(),
            data_dir: PathBuf::from("./data"),
        }
    }
}

/// The `[lifecycle]` section.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LifecycleConfig {
    /// How long, after SIGTERM/SIGINT, in-flight work gets to finish before the process
    /// exits anyway. Keep it below the pod's `terminationGracePeriodSeconds`.
    #[serde(with = "humantime_serde")]
    pub grace_period: Duration,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        Self {
            grace_period: Duration::from_secs(30),
        }
    }
}

/// The fallback node id when the host name is unusable.
pub const FALLBACK_NODE_ID: &str = "kurir-0";

/// The host name's first label, lower-cased, if it is a valid node id; else
/// [`FALLBACK_NODE_ID`]. Kubernetes sets the host name to the pod name, which makes
/// every replica's id unique without per-pod config.
fn default_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .unwrap_or_default();
    let label = host
        .trim()
        .split('.')
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    if validate::is_dns_label(&label) {
        label
    } else {
        FALLBACK_NODE_ID.to_owned()
    }
}
