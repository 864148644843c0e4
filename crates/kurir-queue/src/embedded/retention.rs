//! Retention of the events topic: records older than `queue.embedded.events_retention` are
//! deleted whether a consumer group read them or not.
//!
//! Records are otherwise deleted only once every group has consumed them, and nothing in
//! `kurir serve` consumes the events topic (`kurir demo`, tests and operators' tools do), so
//! without this every delivery outcome would stay on disk forever (~230 bytes each). Mail
//! and retry records never expire: they are deleted only once delivered (consumed).
//!
//! A thread wakes every [`INTERVAL`] and deletes, partition by partition and in offset
//! order (records are appended in time order), the expired records at the head. A group
//! that joins later, or whose position is behind, starts at the first record kept (as a
//! Kafka consumer whose offset fell out of retention does).

use std::sync::Weak;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use super::Inner;
use super::codec::StoredRecord;
use super::store::Store;
use super::topics::TopicState;
use crate::error::QueueError;

/// How often the sweep runs.
const INTERVAL: Duration = Duration::from_secs(60);
/// Records read, and at most deleted, per step.
const STEP: usize = 1_000;

/// Starts the thread. It ends when `stop`'s sender is dropped (close, or the queue dropped).
pub(super) fn spawn(
    inner: Weak<Inner>,
    stop: mpsc::Receiver<()>,
    topic: String,
    retention: Duration,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("kurir-queue-retention".into())
        .spawn(move || {
            while let Err(RecvTimeoutError::Timeout) = stop.recv_timeout(INTERVAL) {
                let Some(inner) = inner.upgrade() else {
                    return;
                };
                let state = inner
                    .topics
                    .read()
                    .expect("topics lock")
                    .get(&topic)
                    .cloned();
                if let Some(state) = state {
                    run_once(&inner.store, &state, retention);
                }
            }
        })
}

fn run_once(store: &Store, topic: &TopicState, retention: Duration) {
    match sweep(store, topic, retention, SystemTime::now()) {
        Ok(0) => {}
        Ok(deleted) => {
            tracing::debug!(topic = %topic.name, deleted, "embedded queue: expired records deleted");
        }
        Err(error) => {
            tracing::warn!(topic = %topic.name, %error, "embedded queue: retention sweep failed");
        }
    }
}

/// Deletes the records of `topic` written before `now - retention`; returns how many
/// offsets it deleted.
pub(super) fn sweep(
    store: &Store,
    topic: &TopicState,
    retention: Duration,
    now: SystemTime,
) -> Result<u64, QueueError> {
    let Some(cutoff) = now.checked_sub(retention) else {
        return Ok(0);
    };
    let mut deleted = 0;
    for partition in &topic.partitions {
        loop {
            let from = partition.retained_from.load(Ordering::SeqCst);
            // Everything below the end is written (or was a failed batch): a record the
            // writer is storing now is above it and stays.
            let end = partition.end();
            if from >= end {
                break;
            }
            let rows = store.read(topic.id, partition.partition, from, STEP)?;
            let mut cut = from;
            let mut all_expired = true;
            for (offset, value) in &rows {
                let expired = *offset < end
                    && StoredRecord::decode(value.clone())
                        .and_then(|r| r.timestamp)
                        .is_some_and(|written| written < cutoff);
                if !expired {
                    all_expired = false;
                    break;
                }
                cut = offset + 1;
            }
            if cut > from {
                store.delete(topic.id, partition.partition, from..cut)?;
                partition.retained_from.fetch_max(cut, Ordering::SeqCst);
                deleted += cut - from;
            }
            if !all_expired || rows.len() < STEP {
                break;
            }
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Queue;
    use crate::config::QueueConfig;
    use crate::consumer::PartitionEvent;
    use crate::embedded::EmbeddedQueue;
    use crate::record::OutgoingRecord;

    #[tokio::test]
    async fn expired_events_are_deleted_and_a_late_group_gets_only_the_newer_ones() {
        let dir = tempfile::tempdir().unwrap();
        let config = QueueConfig::default();
        let queue = EmbeddedQueue::open(dir.path(), &config).unwrap();
        queue.ensure_topics(&config.topic_specs()).await.unwrap();
        let events = config.topics().events();
        let records = |n: usize| {
            (0..n)
                .map(|i| OutgoingRecord::new(format!("k{i}"), bytes::Bytes::from("event")))
                .collect::<Vec<_>>()
        };
        queue.publish(&events, records(20)).await.unwrap();
        let topic = queue.topic(&events).unwrap();
        let store = &queue.inner.store;
        let day = Duration::from_secs(86_400);
        let now = SystemTime::now();

        assert_eq!(
            sweep(store, &topic, day, now).unwrap(),
            0,
            "none old enough"
        );
        assert_eq!(sweep(store, &topic, day, now + 2 * day).unwrap(), 20);
        for p in &topic.partitions {
            assert_eq!(p.retained_from.load(Ordering::SeqCst), p.end());
            assert_eq!(store.first_offset(topic.id, p.partition).unwrap(), None);
        }

        // Newer records stay, and a group joining now gets them and nothing older.
        queue.publish(&events, records(3)).await.unwrap();
        assert_eq!(
            sweep(store, &topic, day, SystemTime::now() + day / 2).unwrap(),
            0
        );
        let mut subscription = queue
            .subscribe("late", std::slice::from_ref(&events))
            .await
            .unwrap();
        let mut got = 0;
        for _ in &topic.partitions {
            let event = tokio::time::timeout(Duration::from_secs(10), subscription.next_event());
            let Some(PartitionEvent::Assigned(mut stream)) = event.await.unwrap() else {
                panic!("expected every partition to be assigned");
            };
            while let Ok(Some(record)) =
                tokio::time::timeout(Duration::from_millis(300), stream.next()).await
            {
                assert_eq!(&record.value[..], b"event");
                record.ack.done();
                got += 1;
            }
        }
        assert_eq!(got, 3, "the three kept, none of the deleted");
        subscription.close().await;
        queue.close().await;
    }
}
