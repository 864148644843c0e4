//! Queue errors. Publish errors say whether trying again can help, because submission turns
//! retryable ones into `451 4.3.0` and the others into a permanent refusal.

use std::time::Duration;

/// Why a publish failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// Not acknowledged within the delivery timeout (broker down, queue full for too long).
    #[error("the queue did not acknowledge within {0:?}")]
    Timeout(Duration),
    /// A transient backend failure (connection lost, leader moving, …).
    #[error("transient queue error: {0}")]
    Transient(String),
    /// The record is larger than the queue accepts; retrying cannot help.
    #[error("record of {size} bytes exceeds the queue's limit")]
    TooLarge { size: usize },
    /// The queue refused us (authorisation, unknown topic, bad configuration); retrying
    /// cannot help until an operator fixes it.
    #[error("fatal queue error: {0}")]
    Fatal(String),
    /// The queue is shutting down.
    #[error("the queue is closed")]
    Closed,
}

impl PublishError {
    /// Whether the same publish may succeed later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Timeout(_) | Self::Transient(_) | Self::Closed)
    }
}

/// Errors of subscribing, topic administration and lag queries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    #[error("queue backend error: {0}")]
    Backend(String),
    #[error("the queue is closed")]
    Closed,
}
