//! The `[queue]` section of the configuration.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::topic::{DeliverySubscription, TopicSpec, Topics};

/// Which backend carries the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Local, durable, one process (the default: no other server needed).
    #[default]
    Embedded,
    /// Apache Kafka (or a Kafka-API broker).
    Kafka,
}

/// `[queue]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    pub backend: Backend,
    /// Topic names are `<prefix>.mail`, `<prefix>.retry.<delay>`, `<prefix>.events`.
    pub topic_prefix: String,
    /// Partitions of the mail topic: the upper bound of delivery parallelism across nodes.
    pub partitions: u32,
    /// Partitions of each retry-tier topic.
    pub retry_partitions: u32,
    /// Partitions of the events topic.
    pub events_partitions: u32,
    /// Delays of the retry tiers, shortest first.
    #[serde(with = "humantime_serde_vec")]
    pub retry_tiers: Vec<Duration>,
    /// Records a partition may have in flight (handed out, not yet acked).
    pub max_in_flight_per_partition: usize,
    /// How long a revoked partition waits for in-flight acks before handing over.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    pub kafka: KafkaConfig,
    pub embedded: EmbeddedConfig,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            backend: Backend::default(),
            topic_prefix: "kurir".into(),
            partitions: 16,
            retry_partitions: 8,
            events_partitions: 8,
            retry_tiers: [60, 300, 1800, 7200, 21600]
                .map(Duration::from_secs)
                .to_vec(),
            max_in_flight_per_partition: 1000,
            drain_timeout: Duration::from_secs(10),
            kafka: KafkaConfig::default(),
            embedded: EmbeddedConfig::default(),
        }
    }
}

/// `[queue.kafka]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// Producer `linger.ms`. Batching helps real Kafka; test brokers (Tansu) want 0.
    #[serde(with = "humantime_serde")]
    pub linger: Duration,
    /// How long a publish may take before it fails as retryable (`delivery.timeout.ms`).
    #[serde(with = "humantime_serde")]
    pub delivery_timeout: Duration,
    /// Local producer buffer (`queue.buffering.max.kbytes`); when full, publishes wait
    /// (backpressure) up to the delivery timeout instead of buffering more.
    pub producer_buffer_kbytes: u32,
    /// Consumer group session timeout: `drain_timeout` must be shorter.
    #[serde(with = "humantime_serde")]
    pub session_timeout: Duration,
    /// Extra librdkafka properties (security settings and the like), passed as they are.
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            linger: Duration::from_millis(5),
            delivery_timeout: Duration::from_secs(10),
            producer_buffer_kbytes: 64 * 1024,
            session_timeout: Duration::from_secs(30),
            properties: BTreeMap::new(),
        }
    }
}

/// `[queue.embedded]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbeddedConfig {
    /// Where the queue lives; a relative path is taken under `node.data_dir`.
    pub dir: PathBuf,
    /// Records fsynced together at most (group commit).
    pub max_batch: usize,
    /// Events older than this are deleted whether a consumer group read them or not (with
    /// no group on the events topic, as in `kurir serve`, they would otherwise stay
    /// forever). Mail and retry records are never deleted before they are consumed.
    #[serde(with = "humantime_serde")]
    pub events_retention: Duration,
    /// A consumer group none of whose members has read a topic for this long has its
    /// committed positions on that topic forgotten (not in the first hour after the queue
    /// is opened, while the node's own groups join), so it no
    /// longer holds back the deletion of what the other groups consumed (Kafka's
    /// `offsets.retention.minutes`). If it comes back it starts at the oldest record kept.
    #[serde(with = "humantime_serde")]
    pub group_retention: Duration,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("queue"),
            max_batch: 4096,
            events_retention: Duration::from_secs(7 * 86_400),
            group_retention: Duration::from_secs(7 * 86_400),
        }
    }
}

/// A configuration problem, naming the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("queue.{key}: {message}")]
pub struct ConfigError {
    pub key: &'static str,
    pub message: String,
}

impl QueueConfig {
    /// Cross-field checks, before anything connects.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |key, message: &str| {
            Err(ConfigError {
                key,
                message: message.to_owned(),
            })
        };
        if self.topic_prefix.is_empty()
            || !self
                .topic_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return err(
                "topic_prefix",
                "must be non-empty and made of [A-Za-z0-9._-]",
            );
        }
        for (key, n) in [
            ("partitions", self.partitions),
            ("retry_partitions", self.retry_partitions),
            ("events_partitions", self.events_partitions),
        ] {
            if n == 0 || n > 10_000 {
                return err(key, "must be between 1 and 10000");
            }
        }
        if self.retry_tiers.is_empty() || !self.retry_tiers.windows(2).all(|w| w[0] < w[1]) {
            return err(
                "retry_tiers",
                "must be a non-empty list of increasing delays",
            );
        }
        if self.retry_tiers[0] < Duration::from_secs(1) {
            return err("retry_tiers", "delays must be at least 1s");
        }
        if self.max_in_flight_per_partition == 0 {
            return err("max_in_flight_per_partition", "must be at least 1");
        }
        if self.backend == Backend::Kafka && self.drain_timeout >= self.kafka.session_timeout {
            return err(
                "drain_timeout",
                "must be shorter than queue.kafka.session_timeout",
            );
        }
        if self.embedded.events_retention < Duration::from_secs(60) {
            return err("embedded.events_retention", "must be at least 1m");
        }
        if self.embedded.group_retention < Duration::from_secs(3600) {
            return err("embedded.group_retention", "must be at least 1h");
        }
        if self.embedded.max_batch == 0 {
            return err("embedded.max_batch", "must be at least 1");
        }
        Ok(())
    }

    pub fn topics(&self) -> Topics {
        Topics::new(&self.topic_prefix)
    }

    /// What the delivery nodes of consumer group `group` read: the mail topic, in `group`
    /// itself, then each retry tier, in `<group>.<topic>`. A group per topic, so that each
    /// topic's partitions are balanced over the nodes on their own: in one group for all
    /// topics, librdkafka's sticky assignor balances partition counts per member over all
    /// its topics (a node could get only retry tiers and no mail), and members with
    /// different topics in one group stalled Tansu's rebalances for tens of seconds.
    pub fn delivery_subscriptions(&self, group: &str) -> Vec<DeliverySubscription> {
        let topics = self.topics();
        let mail = DeliverySubscription {
            group: group.to_owned(),
            topic: topics.mail(),
        };
        let tiers = self.retry_tiers.iter().map(|&delay| {
            let topic = topics.retry(delay);
            DeliverySubscription {
                group: format!("{group}.{topic}"),
                topic,
            }
        });
        std::iter::once(mail).chain(tiers).collect()
    }

    /// Every topic kurir uses, with its partition count.
    pub fn topic_specs(&self) -> Vec<TopicSpec> {
        let topics = self.topics();
        let mut specs = vec![
            TopicSpec {
                name: topics.mail(),
                partitions: self.partitions,
            },
            TopicSpec {
                name: topics.events(),
                partitions: self.events_partitions,
            },
        ];
        specs.extend(self.retry_tiers.iter().map(|&delay| TopicSpec {
            name: topics.retry(delay),
            partitions: self.retry_partitions,
        }));
        specs
    }
}

/// serde for `Vec<Duration>` written as humantime strings (`["1m", "5m"]`).
mod humantime_serde_vec {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(delays: &[Duration], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(
            delays
                .iter()
                .map(|d| humantime::format_duration(*d).to_string()),
        )
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
        let texts = Vec::<String>::deserialize(d)?;
        texts
            .iter()
            .map(|t| humantime::parse_duration(t).map_err(serde::de::Error::custom))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_name_every_topic() {
        let config = QueueConfig::default();
        config.validate().unwrap();
        let names: Vec<_> = config.topic_specs().into_iter().map(|s| s.name).collect();
        assert_eq!(
            names,
            [
                "kurir.mail",
                "kurir.events",
                "kurir.retry.1m",
                "kurir.retry.5m",
                "kurir.retry.30m",
                "kurir.retry.2h",
                "kurir.retry.6h"
            ]
        );
    }

    #[test]
    fn validation_names_the_key() {
        let mut config = QueueConfig {
            backend: Backend::Kafka,
            ..Default::default()
        };
        config.drain_timeout = Duration::from_secs(60);
        assert_eq!(config.validate().unwrap_err().key, "drain_timeout");
        let config = QueueConfig {
            retry_tiers: vec![Duration::from_secs(300), Duration::from_secs(60)],
            ..Default::default()
        };
        assert_eq!(config.validate().unwrap_err().key, "retry_tiers");
        let config: QueueConfig = toml::from_str("retry_tiers = [\"1m\", \"10m\"]").unwrap();
        assert_eq!(
            config.retry_tiers,
            [Duration::from_secs(60), Duration::from_secs(600)]
        );
        assert!(toml::from_str::<QueueConfig>("bogus = 1").is_err());
        let config: QueueConfig = toml::from_str("embedded.events_retention = \"30s\"").unwrap();
        assert_eq!(
            config.validate().unwrap_err().key,
            "embedded.events_retention"
        );
        let config: QueueConfig = toml::from_str("embedded.group_retention = \"10m\"").unwrap();
        assert_eq!(
            config.validate().unwrap_err().key,
            "embedded.group_retention"
        );
        let config: QueueConfig = toml::from_str("embedded.events_retention = \"2d\"").unwrap();
        assert_eq!(
            config.embedded.events_retention,
            Duration::from_secs(2 * 86_400)
        );
        assert!(config.validate().is_ok());
    }
}
