//! The durable, sharded queue between submission and delivery (`shared/DESIGN.md` §3).
//!
//! Submission publishes records keyed by routing key and replies 250 only once
//! [`Queue::publish`] returned (the records are durable). Delivery nodes join a consumer
//! group with [`Queue::subscribe`], receive one [`PartitionStream`] per partition they own,
//! finish records in any order through each record's [`Ack`], and the backend commits only
//! up to the low watermark of finished records ([`watermark`]).
//!
//! # Layout
//! - [`record`]: [`OutgoingRecord`] and [`IncomingRecord`]; the not-before header of retry
//!   tiers.
//! - [`watermark`]: [`PartitionTracker`] and [`Ack`]: out-of-order completion, in-order
//!   commits, bounded in-flight records per partition.
//! - [`consumer`]: [`Subscription`], [`PartitionEvent`], [`PartitionStream`]: what a group
//!   member sees, the same for every backend.
//! - [`topic`]: topic names (`kurir.mail`, `kurir.retry.<delay>`, `kurir.events`) and specs.
//! - [`config`]: [`QueueConfig`], the `[queue]` section of the configuration.
//! - [`error`]: [`PublishError`] (retryable or not) and [`QueueError`].
//! - [`poison`]: decoding queued records, reporting and skipping the undecodable ones.
//! - `kafka/` and `embedded/`: the two backends.

pub mod config;
pub mod consumer;
pub mod embedded;
pub mod error;
pub mod kafka;
pub mod poison;
pub mod record;
pub mod topic;
pub mod watermark;

use std::future::Future;

pub use config::QueueConfig;
pub use consumer::{
    AckedRecord, AllRecords, PartitionEvent, PartitionStream, Subscription, SubscriptionControl,
};
pub use error::{PublishError, QueueError};
pub use record::{IncomingRecord, NOT_BEFORE_HEADER, OutgoingRecord};
pub use topic::{DeliverySubscription, TopicSpec, Topics};
pub use watermark::{Ack, PartitionTracker};

/// How far a consumer group is behind on one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: u32,
    /// The group's committed position (next offset it will read).
    pub committed: u64,
    /// The offset the next published record will get.
    pub end: u64,
}

impl PartitionLag {
    pub fn lag(&self) -> u64 {
        self.end.saturating_sub(self.committed)
    }
}

/// What submission and delivery need from a queue, and nothing more.
pub trait Queue: Send + Sync + 'static {
    /// Creates the topics that are missing, with their partition counts. Existing topics are
    /// left as they are.
    fn ensure_topics(
        &self,
        topics: &[TopicSpec],
    ) -> impl Future<Output = Result<(), QueueError>> + Send;

    /// Appends `records` to `topic`, each to the partition of its key, and resolves once all
    /// of them are durable (Kafka: acknowledged by all in-sync replicas; embedded: fsynced).
    /// On error none of them may be assumed durable; some may be, so callers publish
    /// idempotent records (delivery checks the ledger).
    fn publish(
        &self,
        topic: &str,
        records: Vec<OutgoingRecord>,
    ) -> impl Future<Output = Result<(), PublishError>> + Send;

    /// Joins consumer group `group` for `topics`. Partitions are assigned and revoked over the
    /// subscription's life (as members join and leave) and announced as [`PartitionEvent`]s.
    fn subscribe(
        &self,
        group: &str,
        topics: &[String],
    ) -> impl Future<Output = Result<Subscription, QueueError>> + Send;

    /// The group's lag on each partition of `topic`.
    fn lag(
        &self,
        group: &str,
        topic: &str,
    ) -> impl Future<Output = Result<Vec<PartitionLag>, QueueError>> + Send;
}
