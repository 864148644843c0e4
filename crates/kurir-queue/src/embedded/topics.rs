//! The in-memory view of topics and partitions: offsets handed out by the writer and the
//! end offset readers wait on.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
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
    /// The last records written, for a reader that keeps up with the writer: it takes them
    /// from here instead of reading back from the store what was just written (that read
    /// seeks every table on disk whose key range spans the partition).
    tail: Mutex<Tail>,
}

/// At most this many records are kept in a partition's tail ...
const TAIL_RECORDS: usize = 64;
/// ... and at most this many bytes of them: a partition whose reader waits (a retry tier
/// holding records until they are due, a paused delivery) pins at most this much, across
/// the default 64 partitions at most 64 MiB.
const TAIL_BYTES: usize = 1024 * 1024;

/// The most recent stored records of a partition, in offset order, without gaps other than
/// the offsets of failed batches (which were never stored).
#[derive(Debug, Default)]
struct Tail {
    records: VecDeque<(u64, Bytes)>,
    bytes: usize,
}

impl Tail {
    /// Lets go of the oldest record; `false` when there is none.
    fn pop_oldest(&mut self) -> bool {
        let Some((_, old)) = self.records.pop_front() else {
            return false;
        };
        self.bytes -= old.len();
        true
    }
}

impl PartitionState {
    fn new(partition: u32, next: u64, retained_from: u64) -> Self {
        let (end, _) = watch::channel(next);
        Self {
            partition,
            next: AtomicU64::new(next),
            end,
            retained_from: AtomicU64::new(retained_from),
            tail: Mutex::new(Tail::default()),
        }
    }

    /// The writer thread stored the record at `offset` (called in offset order, before
    /// [`Self::publish_end`] makes it readable).
    pub(crate) fn remember(&self, offset: u64, value: Bytes) {
        let mut tail = self.tail.lock().unwrap_or_else(|e| e.into_inner());
        tail.bytes += value.len();
        tail.records.push_back((offset, value));
        while (tail.records.len() > TAIL_RECORDS || tail.bytes > TAIL_BYTES) && tail.pop_oldest() {}
    }

    /// Up to `limit` stored records from `from` (inclusive) to `until` (exclusive), when the
    /// tail still holds everything from `from` on; `None` when the store must be read (the
    /// reader is behind, or nothing stored is in the range: a failed batch's gap).
    /// Records below `from` are dropped: the reader has handed them out (a second consumer
    /// group still behind them reads the store).
    pub(crate) fn recent(&self, from: u64, until: u64, limit: usize) -> Option<Vec<(u64, Bytes)>> {
        let mut tail = self.tail.lock().unwrap_or_else(|e| e.into_inner());
        while tail.records.front().is_some_and(|(first, _)| *first < from) && tail.pop_oldest() {}
        if tail.records.front().is_none_or(|(first, _)| *first > from) {
            return None;
        }
        let rows: Vec<_> = tail
            .records
            .iter()
            .filter(|(offset, _)| (from..until).contains(offset))
            .take(limit)
            .cloned()
            .collect();
        (!rows.is_empty()).then_some(rows)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn offsets(rows: Option<Vec<(u64, Bytes)>>) -> Option<Vec<u64>> {
        rows.map(|rows| rows.into_iter().map(|(o, _)| o).collect())
    }

    #[test]
    fn the_tail_serves_a_reader_that_keeps_up_and_sends_others_to_the_store() {
        let p = PartitionState::new(0, 0, 0);
        assert_eq!(offsets(p.recent(0, 1, 32)), None, "nothing written yet");
        for o in 0..3 {
            p.remember(o, Bytes::from_static(b"x"));
        }
        // Offset 3 was a failed batch (never stored); 4 and 5 were stored.
        p.remember(4, Bytes::from_static(b"y"));
        p.remember(5, Bytes::from_static(b"z"));
        assert_eq!(offsets(p.recent(1, 6, 32)), Some(vec![1, 2, 4, 5]));
        assert_eq!(
            offsets(p.recent(1, 3, 32)),
            Some(vec![1, 2]),
            "below the end only"
        );
        assert_eq!(offsets(p.recent(1, 6, 2)), Some(vec![1, 2]), "the limit");
        assert_eq!(
            offsets(p.recent(3, 4, 32)),
            None,
            "only the gap: the store decides"
        );

        // Past the record count, the oldest are dropped: a reader behind them is sent to
        // the store.
        for o in 6..6 + TAIL_RECORDS as u64 {
            p.remember(o, Bytes::from_static(b"x"));
        }
        assert_eq!(offsets(p.recent(5, 7, 32)), None);
        assert_eq!(offsets(p.recent(6, 8, 32)), Some(vec![6, 7]));
        // What the reader has passed is let go.
        assert_eq!(offsets(p.recent(8, 9, 32)), Some(vec![8]));
        let tail = p.tail.lock().unwrap();
        assert_eq!(tail.records.front().map(|r| r.0), Some(8));
        assert_eq!(tail.bytes, tail.records.len());
    }

    #[test]
    fn the_tail_is_bounded_in_bytes() {
        let p = PartitionState::new(0, 0, 0);
        let big = Bytes::from(vec![0u8; TAIL_BYTES / 2 + 1]);
        p.remember(0, big.clone());
        p.remember(1, big.clone());
        assert_eq!(
            offsets(p.recent(0, 2, 32)),
            None,
            "the first one was dropped"
        );
        assert_eq!(offsets(p.recent(1, 2, 32)), Some(vec![1]));
        // A single record larger than the bound is not kept at all.
        p.remember(2, Bytes::from(vec![0u8; TAIL_BYTES + 1]));
        assert_eq!(offsets(p.recent(2, 3, 32)), None);
    }
}
