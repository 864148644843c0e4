//! Retention: what is deleted although not every consumer group has read it.
//!
//! - The events topic: records older than `queue.embedded.events_retention` are deleted
//!   whether a group read them or not. Records are otherwise deleted only once every group
//!   has consumed them, and nothing in `kurir serve` consumes the events topic (`kurir demo`,
//!   tests and operators' tools do), so without this every delivery outcome would stay on
//!   disk forever (~230 bytes each). Mail and retry records never expire: they are deleted
//!   only once delivered (consumed).
//! - Idle groups: the positions on a topic of a group none of whose members has read it for
//!   `queue.embedded.group_retention` are forgotten ([`Coordinator::expire_idle`]), so a group
//!   nobody runs any more (a renamed `deliver.group`, a tool's group) stops holding back the
//!   deletion of what the other groups consumed.
//!
//! A thread wakes every [`INTERVAL`] and does both. For the events it deletes, partition by
//! partition and in offset order (records are appended in time order), the expired records
//! at the head. A group that joins later, or whose position is behind, starts at the first
//! record kept (as a Kafka consumer whose offset fell out of retention does).
//!
//! [`Coordinator::expire_idle`]: super::group::Coordinator::expire_idle

use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Weak};
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

/// What the thread deletes.
#[derive(Debug, Clone)]
pub(super) struct Retention {
    /// The events topic's name.
    pub(super) events_topic: String,
    /// `queue.embedded.events_retention`.
    pub(super) events: Duration,
    /// `queue.embedded.group_retention`.
    pub(super) groups: Duration,
    /// When the queue was opened: the commit time of positions stored without one.
    pub(super) opened: SystemTime,
}

/// Starts the thread. It ends when `stop`'s sender is dropped (close, or the queue dropped).
pub(super) fn spawn(
    inner: Weak<Inner>,
    stop: mpsc::Receiver<()>,
    retention: Retention,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("kurir-queue-retention".into())
        .spawn(move || {
            while let Err(RecvTimeoutError::Timeout) = stop.recv_timeout(INTERVAL) {
                let Some(inner) = inner.upgrade() else {
                    return;
                };
                run_once(&inner, &retention, SystemTime::now());
            }
        })
}

fn run_once(inner: &Inner, retention: &Retention, now: SystemTime) {
    let topics: Vec<Arc<TopicState>> = inner
        .topics
        .read()
        .expect("topics lock")
        .values()
        .cloned()
        .collect();
    if let Some(events) = topics.iter().find(|t| *t.name == *retention.events_topic) {
        match sweep(&inner.store, events, retention.events, now) {
            Ok(0) => {}
            Ok(deleted) => {
                tracing::debug!(topic = %events.name, deleted, "embedded queue: expired records deleted");
            }
            Err(error) => {
                tracing::warn!(topic = %events.name, %error, "embedded queue: retention sweep failed");
            }
        }
    }
    if let Err(error) = inner
        .groups
        .expire_idle(&topics, retention.groups, now, retention.opened)
    {
        tracing::warn!(%error, "embedded queue: expiring idle groups failed");
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
    use crate::consumer::{AllRecords, PartitionEvent};
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

    /// A queue with the default topics and a short drain timeout (the tests leave groups
    /// with records handed out but not finished).
    async fn open(dir: &std::path::Path) -> (EmbeddedQueue, QueueConfig) {
        let config = QueueConfig {
            drain_timeout: Duration::from_millis(100),
            ..QueueConfig::default()
        };
        let queue = EmbeddedQueue::open(dir, &config).unwrap();
        queue.ensure_topics(&config.topic_specs()).await.unwrap();
        (queue, config)
    }

    /// Subscribes `group` to `topic` and reads (and finishes) `n` records.
    async fn read(queue: &EmbeddedQueue, group: &str, topic: &str, n: usize) -> AllRecords {
        let subscription = queue.subscribe(group, &[topic.to_owned()]).await.unwrap();
        let mut records = subscription.all_records();
        take(&mut records, n).await;
        records
    }

    /// Reads (and finishes) `n` records.
    async fn take(records: &mut AllRecords, n: usize) {
        for _ in 0..n {
            tokio::time::timeout(Duration::from_secs(10), records.next())
                .await
                .expect("a record within 10 s")
                .expect("the subscription is open");
        }
    }

    async fn expire(queue: &EmbeddedQueue, now: SystemTime, opened: SystemTime) -> usize {
        let inner = queue.inner.clone();
        let topics: Vec<_> = inner.topics.read().unwrap().values().cloned().collect();
        tokio::task::spawn_blocking(move || {
            inner
                .groups
                .expire_idle(&topics, WEEK, now, opened)
                .unwrap()
        })
        .await
        .unwrap()
    }

    /// The records a partition still stores.
    fn stored(queue: &EmbeddedQueue, topic: &TopicState) -> u64 {
        let store = &queue.inner.store;
        topic
            .partitions
            .iter()
            .map(|p| {
                let first = store.first_offset(topic.id, p.partition).unwrap();
                first.map_or(0, |first| p.end() - first)
            })
            .sum()
    }

    /// Waits until `group`'s positions add up to `total`.
    async fn committed(queue: &EmbeddedQueue, group: &str, total: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let entries = queue.inner.store.committed_entries().unwrap();
            let sum: u64 = entries
                .iter()
                .filter(|e| e.group == group)
                .map(|e| e.position)
                .sum();
            if sum == total {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{group} committed {sum} of {total}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn groups_of(queue: &EmbeddedQueue) -> std::collections::BTreeSet<String> {
        let entries = queue.inner.store.committed_entries().unwrap();
        entries.into_iter().map(|e| e.group).collect()
    }

    const WEEK: Duration = Duration::from_secs(7 * 86_400);
    const DAY: Duration = Duration::from_secs(86_400);

    fn records(n: usize) -> Vec<OutgoingRecord> {
        (0..n)
            .map(|i| OutgoingRecord::new(format!("k{i}"), bytes::Bytes::from("mail")))
            .collect()
    }

    /// A queue in `dir` whose mail topic holds `n` records.
    async fn with_mail(
        dir: &std::path::Path,
        n: usize,
    ) -> (EmbeddedQueue, String, Arc<TopicState>) {
        let (queue, config) = open(dir).await;
        let mail = config.topics().mail();
        queue.publish(&mail, records(n)).await.unwrap();
        let topic = queue.topic(&mail).unwrap();
        (queue, mail, topic)
    }

    #[tokio::test]
    async fn a_group_idle_for_the_retention_stops_holding_back_what_others_consumed() {
        let dir = tempfile::tempdir().unwrap();
        let (queue, mail, topic) = with_mail(dir.path(), 20).await;

        // "old" joins and leaves having finished nothing: its position is 0 everywhere.
        read(&queue, "old", &mail, 0).await.close().await;
        let new = read(&queue, "new", &mail, 20).await;
        committed(&queue, "new", 20).await;
        assert_eq!(stored(&queue, &topic), 20, "old has not read them");
        let now = SystemTime::now();

        // Not while it has a member, nor before it has been gone for the retention.
        let old = read(&queue, "old", &mail, 0).await;
        assert_eq!(expire(&queue, now + 8 * DAY, now).await, 0);
        old.close().await;
        assert_eq!(expire(&queue, now + 6 * DAY, now).await, 0);
        // Nor in the first hour after the queue was opened (a restart after a week away:
        // the node's groups have not joined yet).
        let opened = now + 8 * DAY - Duration::from_secs(1800);
        assert_eq!(expire(&queue, now + 8 * DAY, opened).await, 0);
        assert_eq!(stored(&queue, &topic), 20);

        // Restarts in between (opened later) do not reset the idle time.
        let partitions = topic.partitions.len();
        assert_eq!(
            expire(&queue, now + 8 * DAY, now + 5 * DAY).await,
            partitions
        );
        assert_eq!(
            stored(&queue, &topic),
            0,
            "every record was consumed by new"
        );
        assert_eq!(groups_of(&queue), ["new".to_owned()].into());
        // Idle too once it leaves, but the furthest position on a partition stays.
        new.close().await;
        assert_eq!(expire(&queue, now + 8 * DAY, now).await, 0);

        // After a restart the partitions go on where they were, and "old" starts at the
        // first record kept.
        let ends: Vec<u64> = topic.partitions.iter().map(|p| p.end()).collect();
        queue.close().await;
        drop(queue);
        let (queue, _) = open(dir.path()).await;
        let topic = queue.topic(&mail).unwrap();
        assert_eq!(
            ends,
            topic.partitions.iter().map(|p| p.end()).collect::<Vec<_>>()
        );
        queue.publish(&mail, records(3)).await.unwrap();
        let mut old = read(&queue, "old", &mail, 3).await;
        let more = tokio::time::timeout(Duration::from_millis(300), old.next()).await;
        assert!(more.is_err(), "only the 3 new records: {more:?}");
        old.close().await;
        queue.close().await;
    }

    #[tokio::test]
    async fn a_position_stored_without_a_time_counts_from_when_the_queue_was_opened() {
        let dir = tempfile::tempdir().unwrap();
        let (queue, mail, topic) = with_mail(dir.path(), 10).await;
        for p in &topic.partitions {
            queue
                .inner
                .store
                .put_untimed_offset("legacy", topic.id, p.partition, 0);
        }
        let new = read(&queue, "new", &mail, 10).await;
        committed(&queue, "new", 10).await;
        let now = SystemTime::now();

        assert_eq!(expire(&queue, now + 8 * DAY, now + 2 * DAY).await, 0);
        assert_eq!(stored(&queue, &topic), 10);
        let partitions = topic.partitions.len();
        assert_eq!(expire(&queue, now + 8 * DAY, now).await, partitions);
        assert_eq!(stored(&queue, &topic), 0);
        new.close().await;
        queue.close().await;
    }

    #[tokio::test]
    async fn a_group_is_idle_on_a_topic_none_of_its_members_reads() {
        let dir = tempfile::tempdir().unwrap();
        let (queue, config) = open(dir.path()).await;
        let (mail, retry) = (
            config.topics().mail(),
            config.topics().retry(config.retry_tiers[0]),
        );
        queue.publish(&retry, records(5)).await.unwrap();
        // "deliver" once read the retry tier too (position 0 there); now it reads mail only,
        // and "deliver.retry" reads the tier.
        read(&queue, "deliver", &retry, 0).await.close().await;
        let tier = read(&queue, "deliver.retry", &retry, 5).await;
        committed(&queue, "deliver.retry", 5).await;
        let deliver = read(&queue, "deliver", &mail, 0).await;
        let topic = queue.topic(&retry).unwrap();
        assert_eq!(stored(&queue, &topic), 5);
        let now = SystemTime::now();

        let partitions = topic.partitions.len();
        assert_eq!(expire(&queue, now + 8 * DAY, now).await, partitions);
        assert_eq!(stored(&queue, &topic), 0);
        let mail_topic = queue.topic(&mail).unwrap();
        let entries = queue.inner.store.committed_entries().unwrap();
        assert!(
            entries
                .iter()
                .any(|e| e.group == "deliver" && e.topic_id == mail_topic.id)
        );
        assert!(
            !entries
                .iter()
                .any(|e| e.group == "deliver" && e.topic_id == topic.id)
        );
        deliver.close().await;
        tier.close().await;
        queue.close().await;
    }

    #[tokio::test]
    async fn a_group_that_joined_holds_its_records_before_it_finished_one() {
        let dir = tempfile::tempdir().unwrap();
        let (queue, mail, topic) = with_mail(dir.path(), 10).await;
        // "hold" keeps the records (position 0), "done" read them all; both leave.
        read(&queue, "hold", &mail, 0).await.close().await;
        read(&queue, "done", &mail, 10).await.close().await;
        committed(&queue, "done", 10).await;
        assert_eq!(stored(&queue, &topic), 10);
        // A new group, reading from the first record; nothing finished yet.
        let mut late = read(&queue, "late", &mail, 0).await;
        let now = SystemTime::now();
        expire(&queue, now + 8 * DAY, now).await;
        assert_eq!(stored(&queue, &topic), 10, "late has not read them");
        // "hold" is forgotten; "done", idle too, is the furthest and stays.
        let groups = ["done".to_owned(), "late".to_owned()];
        assert_eq!(groups_of(&queue), groups.into());
        // And another group's commit does not delete them either.
        read(&queue, "third", &mail, 10).await.close().await;
        committed(&queue, "third", 10).await;
        assert_eq!(stored(&queue, &topic), 10);
        take(&mut late, 10).await;
        late.close().await;
        queue.close().await;
    }
}
