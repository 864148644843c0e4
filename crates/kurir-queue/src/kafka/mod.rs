//! The Kafka backend of [`Queue`]: librdkafka through `rdkafka`.
//!
//! Kafka already has the semantics the queue needs (keyed partitions, consumer groups,
//! committed offsets); this module maps the [`Queue`] contract onto it and adds what Kafka
//! leaves to the application: committing only the low watermark of finished records, and
//! holding retry-tier records back until their not-before time.
//!
//! # Layout
//! - `mod.rs`: [`KafkaQueue`], client settings shared by producer, consumer and admin.
//! - `producer.rs`: `publish` with an idempotent `FutureProducer`; backpressure when the
//!   local queue is full; librdkafka errors classified into [`PublishError`].
//! - `consumer.rs`: a group member: the poll thread, the rebalance callbacks, the
//!   [`SubscriptionControl`](crate::SubscriptionControl) handle.
//! - `partition.rs`: one owned partition: the reader task (in-flight slots, not-before
//!   pauses), the offset-storing task, and the bounded drain on revocation.
//! - `admin.rs`: `ensure_topics` and `lag`.

mod admin;
mod consumer;
mod partition;
mod producer;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;

use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureProducer;

use crate::config::{KafkaConfig, QueueConfig};
use crate::consumer::Subscription;
use crate::error::{PublishError, QueueError};
use crate::record::OutgoingRecord;
use crate::topic::TopicSpec;
use crate::{PartitionLag, Queue};

/// The Kafka backend. Cheap to clone: clones share one producer.
#[derive(Clone)]
pub struct KafkaQueue {
    inner: Arc<Inner>,
}

struct Inner {
    config: QueueConfig,
    producer: FutureProducer<Logs>,
}

impl fmt::Debug for KafkaQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaQueue")
            .field("brokers", &self.inner.config.kafka.brokers)
            .finish_non_exhaustive()
    }
}

impl KafkaQueue {
    /// Creates the producer. librdkafka connects lazily, so this fails only on invalid
    /// settings, not on an unreachable broker.
    pub fn connect(config: &QueueConfig) -> Result<Self, QueueError> {
        let producer = producer::create(&config.kafka)?;
        Ok(Self {
            inner: Arc::new(Inner {
                config: config.clone(),
                producer,
            }),
        })
    }
}

impl Queue for KafkaQueue {
    async fn ensure_topics(&self, topics: &[TopicSpec]) -> Result<(), QueueError> {
        admin::ensure_topics(&self.inner.config.kafka, topics).await
    }

    async fn publish(&self, topic: &str, records: Vec<OutgoingRecord>) -> Result<(), PublishError> {
        producer::publish(
            &self.inner.producer,
            &self.inner.config.kafka,
            topic,
            records,
        )
        .await
    }

    async fn subscribe(&self, group: &str, topics: &[String]) -> Result<Subscription, QueueError> {
        consumer::subscribe(&self.inner.config, group, topics)
    }

    async fn lag(&self, group: &str, topic: &str) -> Result<Vec<PartitionLag>, QueueError> {
        admin::lag(&self.inner.config.kafka, group, topic).await
    }
}

/// Settings every client shares: the brokers. Role-specific settings come next, then
/// [`apply_properties`] so an operator's `queue.kafka.properties` win.
fn base_config(kafka: &KafkaConfig) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &kafka.brokers)
        .set_log_level(log_level());
    config
}

/// librdkafka's log level, from what `tracing` would record (rdkafka would otherwise take
/// it from the `log` crate).
fn log_level() -> RDKafkaLogLevel {
    use tracing::level_filters::LevelFilter;
    match LevelFilter::current() {
        LevelFilter::TRACE | LevelFilter::DEBUG => RDKafkaLogLevel::Debug,
        LevelFilter::INFO => RDKafkaLogLevel::Info,
        LevelFilter::WARN => RDKafkaLogLevel::Warning,
        _ => RDKafkaLogLevel::Error,
    }
}

/// Passes `queue.kafka.properties` (security settings and the like) through as they are.
fn apply_properties(config: &mut ClientConfig, kafka: &KafkaConfig) {
    for (key, value) in &kafka.properties {
        config.set(key, value);
    }
}

/// Routes librdkafka's logs and client errors to `tracing`, with stable messages and the
/// details in fields.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Logs;

impl ClientContext for Logs {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        log_librdkafka(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(error = %error, reason, "kafka client error");
    }
}

/// For the short-lived lag client, which never joins its group.
impl ConsumerContext for Logs {}

fn log_librdkafka(level: RDKafkaLogLevel, facility: &str, message: &str) {
    use RDKafkaLogLevel as L;
    // `queue.kafka.properties` go to every client, so a producer property on a consumer
    // (or the reverse) is expected, not a misconfiguration.
    let shared_property = facility == "CONFWARN" && message.contains("will be ignored by this");
    match level {
        _ if shared_property => tracing::debug!(facility, message, "librdkafka"),
        L::Emerg | L::Alert | L::Critical | L::Error => {
            tracing::error!(facility, message, "librdkafka");
        }
        L::Warning => tracing::warn!(facility, message, "librdkafka"),
        L::Notice | L::Info => tracing::info!(facility, message, "librdkafka"),
        L::Debug => tracing::debug!(facility, message, "librdkafka"),
    }
}

/// A librdkafka duration property in milliseconds.
fn millis(duration: std::time::Duration) -> String {
    duration.as_millis().to_string()
}

/// A backend error with what was being done.
fn backend(context: &str, error: impl fmt::Display) -> QueueError {
    QueueError::Backend(format!("{context}: {error}"))
}
