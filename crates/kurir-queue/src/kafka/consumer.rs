//! A consumer-group member: the poll thread, the rebalance callbacks, and the handle the
//! application controls it through.
//!
//! librdkafka runs rebalance callbacks on the thread that polls the consumer, and a revoked
//! partition must be drained (bounded) and committed *before* the callback returns, or the
//! next owner starts from an old position. So the consumer is polled on a dedicated thread
//! that may block in the callback, while the records themselves flow through per-partition
//! queues read by tokio tasks (`partition.rs`).
//!
//! - **Assign** (`pre_rebalance`, before the assignment takes effect): split each new
//!   partition's queue off, start its tasks, announce [`PartitionEvent::Assigned`].
//! - **Revoke** (a rebalance or [`SubscriptionControl::close`]): end the partition's stream,
//!   wait up to `drain_timeout` for its in-flight acks, store and synchronously commit the
//!   low watermark, freeze the tracker (later acks do not count), announce
//!   [`PartitionEvent::Revoked`].
//! - **Close**: end every reader, then drop the consumer: librdkafka's close revokes every
//!   partition through the same callback and leaves the group; then drop the event sender
//!   so the event stream ends.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::runtime::Handle;
use tokio::sync::mpsc;

use super::partition::{self, OwnedPartition, PauseReason};
use super::{apply_properties, backend, base_config, log_librdkafka, millis};
use crate::config::QueueConfig;
use crate::consumer::{PartitionEvent, Subscription, SubscriptionControl};
use crate::error::QueueError;
use crate::watermark::PartitionTracker;

pub(super) type KafkaConsumer = BaseConsumer<GroupContext>;

/// How long one poll of the consumer thread blocks; also how quickly it notices `close`.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Assignment and revocation events the application has not read yet.
const EVENTS_CAPACITY: usize = 1024;
/// Time on top of the drain timeout for partition tasks to stop and report.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Joins `group` for `topics` and starts the consumer thread.
pub(super) fn subscribe(
    config: &QueueConfig,
    group: &str,
    topics: &[String],
) -> Result<Subscription, QueueError> {
    let runtime =
        Handle::try_current().map_err(|e| backend("subscribing outside a Tokio runtime", e))?;
    let (events_tx, events_rx) = mpsc::channel(EVENTS_CAPACITY);
    let shared = Arc::new(Shared {
        group: group.to_owned(),
        max_in_flight: config.max_in_flight_per_partition,
        drain_timeout: config.drain_timeout,
        runtime,
        consumer: OnceLock::new(),
        owned: Mutex::new(HashMap::new()),
        events: Mutex::new(Some(events_tx)),
        closing: AtomicBool::new(false),
    });
    let consumer: KafkaConsumer = consumer_config(config, group)
        .create_with_context(GroupContext {
            shared: shared.clone(),
        })
        .map_err(|e| backend("creating the Kafka consumer", e))?;
    let consumer = Arc::new(consumer);
    let _ = shared.consumer.set(Arc::downgrade(&consumer));
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer
        .subscribe(&names)
        .map_err(|e| backend(&format!("subscribing to {topics:?}"), e))?;
    let thread_shared = shared.clone();
    std::thread::Builder::new()
        .name(format!("kafka-{group}"))
        .spawn(move || run(consumer, thread_shared))
        .map_err(|e| backend("starting the consumer thread", e))?;
    tracing::info!(group, ?topics, "joined consumer group");
    Ok(Subscription::new(
        events_rx,
        Box::new(KafkaControl { shared }),
    ))
}

fn consumer_config(config: &QueueConfig, group: &str) -> ClientConfig {
    let kafka = &config.kafka;
    // Heartbeats well inside the session timeout, at most every 3s (Kafka's default).
    let heartbeat =
        (kafka.session_timeout / 3).clamp(Duration::from_millis(100), Duration::from_secs(3));
    let mut client = base_config(kafka);
    client
        .set("group.id", group)
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("session.timeout.ms", millis(kafka.session_timeout))
        .set("heartbeat.interval.ms", millis(heartbeat));
    apply_properties(&mut client, kafka);
    client
}

/// What the consumer thread, its callbacks and the control handle share.
#[derive(Debug)]
pub(super) struct Shared {
    group: String,
    max_in_flight: usize,
    drain_timeout: Duration,
    /// Where partition tasks run (the runtime `subscribe` was called on).
    runtime: Handle,
    /// Set once right after creation; weak so that the consumer's own context does not
    /// keep it alive.
    consumer: OnceLock<Weak<KafkaConsumer>>,
    /// The partitions this member owns now.
    owned: Mutex<HashMap<(Arc<str>, i32), OwnedPartition>>,
    /// Taken (dropped) when the member has left the group: that ends the event stream.
    events: Mutex<Option<mpsc::Sender<PartitionEvent>>>,
    /// Set by `close`; the consumer thread then leaves the group.
    closing: AtomicBool,
}

impl Shared {
    /// Announces an event; called on the consumer thread only (it may block while the
    /// application is behind on events).
    fn announce(&self, event: PartitionEvent) {
        let Some(sender) = self.events.lock().ok().and_then(|events| events.clone()) else {
            return;
        };
        // An error means the application dropped the subscription: nobody to tell.
        let event = match sender.try_send(event) {
            Err(mpsc::error::TrySendError::Full(event)) => event,
            _ => return,
        };
        if Handle::try_current().is_ok() {
            // Only when the consumer is closed from a runtime thread (its last handle was
            // dropped there), where blocking is not allowed.
            tracing::warn!(group = %self.group, "event dropped: the application is behind on events");
            return;
        }
        let _ = sender.blocking_send(event);
    }

    /// Ends every partition's reader (and so its record stream) and waits for them, so
    /// that no partition queue holds the consumer any more. The partitions stay owned until
    /// librdkafka revokes them.
    fn halt_readers(&self) {
        let tasks: Vec<_> = match self.owned.lock() {
            Ok(mut owned) => owned.values_mut().flat_map(OwnedPartition::halt).collect(),
            Err(_) => return,
        };
        let (done_tx, done_rx) = std::sync::mpsc::sync_channel(1);
        self.runtime.spawn(async move {
            partition::join(tasks).await;
            let _ = done_tx.send(());
        });
        if done_rx.recv_timeout(STOP_GRACE).is_err() {
            tracing::warn!(group = %self.group, "partition readers did not stop in time");
        }
    }

    fn take_owned(&self, tpl: Option<&TopicPartitionList>) -> Vec<OwnedPartition> {
        let Ok(mut owned) = self.owned.lock() else {
            return Vec::new();
        };
        match tpl {
            None => owned.drain().map(|(_, p)| p).collect(),
            Some(tpl) => tpl
                .elements()
                .iter()
                .filter_map(|e| owned.remove(&(Arc::from(e.topic()), e.partition())))
                .collect(),
        }
    }

    /// Starts the partitions of a new assignment.
    fn assign(&self, tpl: &TopicPartitionList) {
        let Some(consumer) = self.consumer.get().and_then(Weak::upgrade) else {
            return;
        };
        for element in tpl.elements() {
            let (topic, partition) = (Arc::<str>::from(element.topic()), element.partition());
            let Some(queue) = consumer.split_partition_queue(&topic, partition) else {
                tracing::error!(topic = %topic, partition, "cannot split the partition queue");
                continue;
            };
            let (owned, stream) = partition::start(
                &self.runtime,
                &consumer,
                queue,
                topic.clone(),
                partition,
                self.max_in_flight,
            );
            if let Ok(mut map) = self.owned.lock() {
                map.insert((topic.clone(), partition), owned);
            }
            tracing::info!(group = %self.group, topic = %topic, partition, "partition assigned");
            self.announce(PartitionEvent::Assigned(stream));
        }
    }

    /// Stores and commits the final positions of revoked partitions (synchronously, except
    /// while closing).
    fn commit(&self, consumer: &KafkaConsumer, finals: &[(Arc<str>, i32, u64)]) {
        let mut tpl = TopicPartitionList::new();
        for (topic, partition, offset) in finals {
            partition::store_offset(consumer, topic, *partition, *offset);
            let offset = Offset::Offset(i64::try_from(*offset).unwrap_or(i64::MAX));
            if let Err(error) = tpl.add_partition_offset(topic, *partition, offset) {
                tracing::warn!(topic = %topic, partition, %error, "cannot list offset to commit");
            }
        }
        if tpl.count() == 0 {
            return;
        }
        // A synchronous commit waits for the group coordinator with no time limit; while
        // the member is closing (the broker may be gone: a node shutting down with its
        // cluster), an asynchronous one is sent instead and librdkafka's close, bounded by
        // the session timeout, flushes it.
        let mode = if self.closing.load(Ordering::Acquire) {
            CommitMode::Async
        } else {
            CommitMode::Sync
        };
        match consumer.commit(&tpl, mode) {
            Ok(()) => tracing::debug!(group = %self.group, offsets = ?tpl, "offsets committed"),
            Err(error) => tracing::warn!(group = %self.group, %error, "commit on revoke failed"),
        }
    }

    /// Revokes `partitions`: stops them, drains (bounded) unless the assignment was lost,
    /// commits their low watermarks (when there is a `consumer` to commit with), and
    /// announces the revocations.
    fn revoke(
        &self,
        consumer: Option<&KafkaConsumer>,
        partitions: Vec<OwnedPartition>,
        lost: bool,
    ) {
        if partitions.is_empty() {
            return;
        }
        let drain_timeout = if lost {
            Duration::ZERO
        } else {
            self.drain_timeout
        };
        let trackers: Vec<_> = partitions
            .iter()
            .map(|p| (p.topic.clone(), p.partition, p.tracker.clone()))
            .collect();
        // Waiting on a std channel rather than `Handle::block_on`: if the runtime is gone
        // (the application shut down), the task is dropped and this returns at once.
        let (done_tx, done_rx) = std::sync::mpsc::sync_channel(1);
        self.runtime.spawn(async move {
            partition::stop(partitions, drain_timeout).await;
            let _ = done_tx.send(());
        });
        if done_rx.recv_timeout(drain_timeout + STOP_GRACE).is_err() {
            tracing::warn!(group = %self.group, "partition tasks did not stop in time");
        }
        let finals = freeze(&trackers);
        if let (Some(consumer), false) = (consumer, lost) {
            self.commit(consumer, &finals);
        }
        for (topic, partition, _) in trackers {
            tracing::info!(group = %self.group, topic = %topic, partition, lost, "partition revoked");
            let partition = u32::try_from(partition).unwrap_or_default();
            self.announce(PartitionEvent::Revoked { topic, partition });
        }
    }
}

/// Freezes each tracker (later acks do not count) and returns the positions to commit:
/// the low watermark of each partition that handed out at least one record.
fn freeze(trackers: &[(Arc<str>, i32, Arc<PartitionTracker>)]) -> Vec<(Arc<str>, i32, u64)> {
    let mut finals = Vec::new();
    for (topic, partition, tracker) in trackers {
        let offset = tracker.low_watermark();
        tracker.revoke();
        let in_flight = tracker.in_flight();
        if in_flight > 0 {
            tracing::warn!(topic = %topic, partition, in_flight, offset,
                "revoked with records in flight; they will be redelivered");
        }
        // 0 means nothing was handed out (the tracker starts there): nothing to commit.
        if offset > 0 {
            finals.push((topic.clone(), *partition, offset));
        }
    }
    finals
}

/// The consumer thread: polls (which runs the rebalance callbacks) until closed, then
/// leaves the group.
fn run(consumer: Arc<KafkaConsumer>, shared: Arc<Shared>) {
    while !shared.closing.load(Ordering::Acquire) {
        poll_once(&consumer, &shared);
    }
    shared.halt_readers();
    // The readers held the other handles (through their partition queues): this drop closes
    // the consumer, and librdkafka revokes every partition through the rebalance callback
    // (drain, commit) before it leaves the group.
    if Arc::strong_count(&consumer) > 1 {
        tracing::warn!(group = %shared.group, "consumer still referenced; it closes when released");
    }
    drop(consumer);
    let rest = shared.take_owned(None);
    shared.revoke(None, rest, false);
    if let Ok(mut events) = shared.events.lock() {
        events.take();
    }
    tracing::info!(group = %shared.group, "left consumer group");
}

fn poll_once(consumer: &KafkaConsumer, shared: &Shared) {
    match consumer.poll(POLL_INTERVAL) {
        None => {}
        // Every assigned partition has its own queue; a message here would be one fetched
        // before its queue was split, which librdkafka does not do.
        Some(Ok(message)) => tracing::error!(
            group = %shared.group,
            topic = message.topic(),
            partition = message.partition(),
            offset = message.offset(),
            "message on the main queue ignored"
        ),
        Some(Err(error)) => tracing::warn!(group = %shared.group, %error, "consumer error"),
    }
}

/// The librdkafka context of a group member: rebalance callbacks and logs.
#[derive(Debug)]
pub(super) struct GroupContext {
    shared: Arc<Shared>,
}

impl ClientContext for GroupContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        log_librdkafka(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(group = %self.shared.group, %error, reason, "kafka client error");
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &KafkaConsumer, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => self.shared.assign(tpl),
            Rebalance::Revoke(tpl) => {
                let lost = consumer.assignment_lost();
                let partitions = self.shared.take_owned(Some(tpl));
                self.shared.revoke(Some(consumer), partitions, lost);
            }
            Rebalance::Error(error) => {
                tracing::warn!(group = %self.shared.group, %error, "rebalance error")
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Ok(()) => tracing::trace!(group = %self.shared.group, ?offsets, "offsets committed"),
            Err(error) => {
                tracing::warn!(group = %self.shared.group, %error, "offset commit failed")
            }
        }
    }
}

/// The application's handle on its group membership.
#[derive(Debug)]
struct KafkaControl {
    shared: Arc<Shared>,
}

impl KafkaControl {
    fn set_paused(&self, topic: &str, partition: u32, paused: bool) {
        let Ok(partition) = i32::try_from(partition) else {
            return;
        };
        let pause = self.shared.owned.lock().ok().and_then(|owned| {
            owned
                .get(&(Arc::from(topic), partition))
                .map(|p| p.pause.clone())
        });
        match pause {
            Some(pause) => pause.set(PauseReason::User, paused),
            None => tracing::debug!(
                topic,
                partition,
                paused,
                "pause or resume of a partition not owned"
            ),
        }
    }
}

impl SubscriptionControl for KafkaControl {
    fn pause(&self, topic: &str, partition: u32) {
        self.set_paused(topic, partition, true);
    }

    fn resume(&self, topic: &str, partition: u32) {
        self.set_paused(topic, partition, false);
    }

    fn close(&self) {
        self.shared.closing.store(true, Ordering::Release);
    }
}
