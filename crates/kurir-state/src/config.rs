//! The `[state]` section of the configuration.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Which backend keeps the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Local, durable, one process (the default).
    #[default]
    Embedded,
    /// A Redis server shared by every node.
    Redis,
}

/// `[state]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    pub backend: Backend,
    /// The tenants that exist; any other tenant in a request is an error.
    pub tenants: Vec<String>,
    /// Soft bounces of one address within `soft_bounce_window` that suppress it.
    pub soft_bounce_threshold: u32,
    #[serde(with = "humantime_serde")]
    pub soft_bounce_window: Duration,
    /// How long the delivery ledger remembers a delivery: the queue's maximum message age.
    #[serde(with = "humantime_serde")]
    pub ledger_ttl: Duration,
    /// How long a repeat of an idempotency key returns the first result.
    #[serde(with = "humantime_serde")]
    pub idempotency_ttl: Duration,
    /// How long a message's history is kept.
    #[serde(with = "humantime_serde")]
    pub tracking_ttl: Duration,
    /// History entries kept per message at most (the oldest are dropped first, except the
    /// first one, "accepted").
    pub tracking_max_entries: u32,
    /// How often delivery nodes re-read domain pauses: a pause is seen within this time.
    #[serde(with = "humantime_serde")]
    pub domain_poll_interval: Duration,
    pub redis: RedisConfig,
    pub embedded: EmbeddedConfig,
}

impl Default for StateConfig {
    fn default() -> Self {
        Self {
            backend: Backend::default(),
            tenants: vec!["default".into()],
            soft_bounce_threshold: 5,
            soft_bounce_window: Duration::from_secs(7 * 86_400),
            ledger_ttl: Duration::from_secs(3 * 86_400),
            idempotency_ttl: Duration::from_secs(86_400),
            tracking_ttl: Duration::from_secs(7 * 86_400),
            tracking_max_entries: 50,
            domain_poll_interval: Duration::from_secs(2),
            redis: RedisConfig::default(),
            embedded: EmbeddedConfig::default(),
        }
    }
}

/// `[state.redis]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://host:port/db` (or `rediss://` for TLS).
    pub url: String,
    /// Every key starts with this (several installations can share a server).
    pub key_prefix: String,
    /// A command that takes longer fails as "unavailable" (callers fail fast, never hang).
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379/".into(),
            key_prefix: "kurir".into(),
            command_timeout: Duration::from_millis(500),
            connect_timeout: Duration::from_secs(1),
        }
    }
}

/// `[state.embedded]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbeddedConfig {
    /// Relative to `node.data_dir` unless absolute.
    pub dir: PathBuf,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("state"),
        }
    }
}

/// A configuration problem, naming the key (under `state.`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("state.{key}: {message}")]
pub struct ConfigError {
    pub key: &'static str,
    pub message: String,
}

impl StateConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |key, message: &str| {
            Err(ConfigError {
                key,
                message: message.to_owned(),
            })
        };
        if let Some(bad) = self.tenants.iter().find(|t| crate::Tenant::new(t).is_err()) {
            return err(
                "tenants",
                &format!("{bad:?} is not 1-64 characters of a-z, 0-9, '-' and '_'"),
            );
        }
        if self.soft_bounce_threshold == 0 {
            return err("soft_bounce_threshold", "must be at least 1");
        }
        if self.tracking_max_entries < 2 {
            return err("tracking_max_entries", "must be at least 2");
        }
        for (key, d) in [
            ("soft_bounce_window", self.soft_bounce_window),
            ("ledger_ttl", self.ledger_ttl),
            ("idempotency_ttl", self.idempotency_ttl),
            ("tracking_ttl", self.tracking_ttl),
            ("domain_poll_interval", self.domain_poll_interval),
        ] {
            if d < Duration::from_secs(1) {
                return err(key, "must be at least 1s");
            }
        }
        if self.redis.key_prefix.is_empty() || self.redis.key_prefix.contains(['{', '}', ' ']) {
            return err(
                "redis.key_prefix",
                "must be non-empty, without spaces or braces",
            );
        }
        if self.redis.command_timeout.is_zero() || self.redis.connect_timeout.is_zero() {
            return err("redis.command_timeout", "timeouts must be above zero");
        }
        Ok(())
    }
}
