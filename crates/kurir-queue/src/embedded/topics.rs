//! The in-memory view of topics and partitions: offsets handed out by the writer and the
//! end offset readers wait on.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;

use super::store::{Store, StoredTopic};
use crate::error::QueueError;

/// One partition of one topic.
#[derive(Debug)]
pub(crate) struct PartitionState {
    pub(crate) partition: u32,
    /// The next offset to give a record. Only the writer thread takes from it.
    next: AtomicU64,
    /// The offset after the last record whose batch was written (durable or failed): readers
    /// may read everything below it.
    end: watch::Sender<u64>,
    /// Records below this offset have been deleted (every group consumed them).
    pub(crate) retained_from: AtomicU64,
}

impl PartitionState {
    fn new(partition: u32, next: u64, retained_from: u64) -> Self {
        let (end, _) = watch::channel(next);
        Self {
            partition,
            next: AtomicU64::new(next),
            end,
            retained_from: AtomicU64::new(retained_from),
        }
    }

    /// The writer thread gives the next record this offset.
    pub(crate) fn reserve_offset(&self) -> u64 {
        self.next.fetch_add(1, Ordering::SeqCst)
    }

    /// The writer thread finished a batch: everything reserved so far is readable.
    pub(crate) fn publish_end(&self) {
        self.end.send_replace(self.next.load(Ordering::SeqCst));
    }

    pub(crate) fn end(&self) -> u64 {
        *self.end.borrow()
    }

    pub(crate) fn watch_end(&self) -> watch::Receiver<u64> {
        self.end.subscribe()
    }
}

/// A topic with its partitions.
#[derive(Debug)]
pub(crate) struct TopicState {
    pub(crate) name: Arc<str>,
    pub(crate) id: u32,
    pub(crate) partitions: Vec<Arc<PartitionState>>,
}

/// Rebuilds a topic's state from disk: a partition continues after its last stored record,
/// or after the furthest committed position when its records were all deleted.
pub(crate) fn recover(store: &Store, topic: &StoredTopic) -> Result<TopicState, QueueError> {
    let mut partitions = Vec::with_capacity(topic.partitions as usize);
    for p in 0..topic.partitions {
        let committed = store.all_committed(topic.id, p)?;
        let end = store
            .end_offset(topic.id, p)?
            .max(committed.iter().copied().max().unwrap_or(0));
        let first = store.first_offset(topic.id, p)?.unwrap_or(end);
        partitions.push(Arc::new(PartitionState::new(p, end, first)));
    }
    Ok(TopicState {
        name: topic.name.as_str().into(),
        id: topic.id,
        partitions,
    })
}

/// Topics by name.
pub(crate) type TopicMap = HashMap<String, Arc<TopicState>>;

/// A new, empty topic.
pub(crate) fn fresh(topic: &StoredTopic) -> TopicState {
    TopicState {
        name: topic.name.as_str().into(),
        id: topic.id,
        partitions: (0..topic.partitions)
            .map(|p| Arc::new(PartitionState::new(p, 0, 0)))
            .collect(),
    }
}
