//! One owned partition: the tasks that hand its records out and persist its progress.
//!
//! Each assigned partition gets its own librdkafka queue (`split_partition_queue`) and two
//! tasks. The **reader** reserves an in-flight slot, takes the next message, holds it back
//! while its not-before time is in the future (the partition is paused meanwhile, so
//! librdkafka stops fetching instead of buffering), and hands it out with its [`Ack`]
//! (`crate::Ack`). The **offset task** watches the tracker's low watermark and stores it
//! (`store_offsets`); librdkafka's auto-commit then commits what was stored, so the
//! committed position never passes an unfinished record.
//!
//! Revocation ([`stop`]) ends the reader (which ends the record stream), then waits a bounded
//! time for the records still in flight; the consumer thread commits what was finished.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::future::join_all;
use rdkafka::consumer::Consumer;
use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use tokio::runtime::Handle;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::consumer::{GroupContext, KafkaConsumer};
use crate::consumer::PartitionStream;
use crate::record::{IncomingRecord, NOT_BEFORE_HEADER, decode_time};
use crate::watermark::{PartitionTracker, Slot};

/// How long the reader sleeps on an empty queue before looking again even without a wake-up
/// from librdkafka; a safety net, not the normal path.
const IDLE_RECHECK: Duration = Duration::from_secs(1);

/// A partition this member owns, as the consumer thread keeps it.
#[derive(Debug)]
pub(super) struct OwnedPartition {
    pub(super) topic: Arc<str>,
    pub(super) partition: i32,
    pub(super) tracker: Arc<PartitionTracker>,
    pub(super) pause: Arc<PauseState>,
    /// Set to `true` to end both tasks.
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// Starts the tasks of a newly assigned partition and returns it with the stream to hand to
/// the application. `queue` must have been split off before the assignment took effect.
pub(super) fn start(
    runtime: &Handle,
    consumer: &Arc<KafkaConsumer>,
    queue: PartitionQueue<GroupContext>,
    topic: Arc<str>,
    partition: i32,
    max_in_flight: usize,
) -> (OwnedPartition, PartitionStream) {
    // The tracker starts at 0 and is moved to the first fetched offset (`skip_to`), which
    // is the group's committed position: no offset is stored before a record was seen.
    let tracker = PartitionTracker::new(0, max_in_flight);
    let pause = Arc::new(PauseState::new(
        Arc::downgrade(consumer),
        topic.clone(),
        partition,
    ));
    let (stop, stop_rx) = watch::channel(false);
    let (records_tx, records_rx) = mpsc::channel(max_in_flight.max(1));
    let reader = Reader {
        queue: QueueHandle(Some(queue)),
        ready: Arc::new(Notify::new()),
        tracker: tracker.clone(),
        pause: pause.clone(),
        records: records_tx,
        stop: stop_rx.clone(),
    };
    let offsets = store_watermarks(
        Arc::downgrade(consumer),
        topic.clone(),
        partition,
        tracker.watermark(),
        stop_rx,
    );
    let tasks = vec![runtime.spawn(reader.run()), runtime.spawn(offsets)];
    let stream = PartitionStream::new(
        topic.clone(),
        u32::try_from(partition).unwrap_or_default(),
        records_rx,
    );
    (
        OwnedPartition {
            topic,
            partition,
            tracker,
            pause,
            stop,
            tasks,
        },
        stream,
    )
}

impl OwnedPartition {
    /// Tells both tasks to end (the record stream ends once the reader has) and hands over
    /// their handles; later calls return none.
    pub(super) fn halt(&mut self) -> Vec<JoinHandle<()>> {
        self.stop.send_replace(true);
        std::mem::take(&mut self.tasks)
    }
}

/// Waits for halted tasks to end.
pub(super) async fn join(tasks: Vec<JoinHandle<()>>) {
    for task in tasks {
        if let Err(error) = task.await {
            tracing::warn!(%error, "partition task failed");
        }
    }
}

/// Ends the tasks of `partitions` (their record streams end), then waits up to
/// `drain_timeout` for their in-flight records to be acked.
pub(super) async fn stop(mut partitions: Vec<OwnedPartition>, drain_timeout: Duration) {
    let deadline = Instant::now() + drain_timeout;
    let tasks: Vec<_> = partitions
        .iter_mut()
        .flat_map(OwnedPartition::halt)
        .collect();
    join(tasks).await;
    let remaining = deadline.saturating_duration_since(Instant::now());
    join_all(
        partitions
            .iter()
            .map(|owned| owned.tracker.drain(remaining)),
    )
    .await;
}

/// Who wants a partition paused: it is fetched only when neither does.
#[derive(Debug, Clone, Copy)]
pub(super) enum PauseReason {
    /// The application ([`crate::Subscription::pause`]).
    User,
    /// The reader, holding a record until its not-before time.
    NotBefore,
}

/// The pause state of one partition, applied to librdkafka on each change.
#[derive(Debug)]
pub(super) struct PauseState {
    consumer: Weak<KafkaConsumer>,
    topic: Arc<str>,
    partition: i32,
    /// (paused by the user, paused for a not-before time).
    flags: Mutex<(bool, bool)>,
}

impl PauseState {
    fn new(consumer: Weak<KafkaConsumer>, topic: Arc<str>, partition: i32) -> Self {
        Self {
            consumer,
            topic,
            partition,
            flags: Mutex::new((false, false)),
        }
    }

    /// Sets one reason and pauses or resumes the partition if that changes whether it is
    /// paused.
    pub(super) fn set(&self, reason: PauseReason, on: bool) {
        let Ok(mut flags) = self.flags.lock() else {
            return;
        };
        let before = flags.0 || flags.1;
        match reason {
            PauseReason::User => flags.0 = on,
            PauseReason::NotBefore => flags.1 = on,
        }
        let after = flags.0 || flags.1;
        if before != after {
            apply_pause(&self.consumer, &self.topic, self.partition, after);
        }
    }
}

/// Pauses or resumes fetching one partition.
pub(super) fn apply_pause(
    consumer: &Weak<KafkaConsumer>,
    topic: &str,
    partition: i32,
    paused: bool,
) {
    let Some(consumer) = consumer.upgrade() else {
        return;
    };
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, partition);
    let result = if paused {
        consumer.pause(&tpl)
    } else {
        consumer.resume(&tpl)
    };
    match result {
        Ok(()) => tracing::debug!(topic, partition, paused, "partition fetch state changed"),
        Err(error) => {
            tracing::warn!(topic, partition, paused, %error, "pausing or resuming failed")
        }
    }
}

/// A partition queue whose drop, unless released by [`Reader::run`], happens on a thread
/// of its own. The queue holds a handle to the consumer, and when it is the last one (a
/// reader task cancelled after the poll thread let go, as at runtime shutdown), dropping
/// it closes the consumer: librdkafka's close polls until the group is left, for as long
/// as the broker is unreachable. That must not block a runtime worker (it hung a test
/// runtime once, after the test's broker was gone).
struct QueueHandle(Option<PartitionQueue<GroupContext>>);

impl std::ops::Deref for QueueHandle {
    type Target = PartitionQueue<GroupContext>;

    fn deref(&self) -> &Self::Target {
        self.0.as_ref().expect("present until dropped")
    }
}

impl std::ops::DerefMut for QueueHandle {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.0.as_mut().expect("present until dropped")
    }
}

impl Drop for QueueHandle {
    fn drop(&mut self) {
        if let Some(queue) = self.0.take() {
            // If no thread can be started, the closure (and the queue) is dropped here.
            let _ = std::thread::Builder::new()
                .name("kurir-kafka-release".into())
                .spawn(move || drop(queue));
        }
    }
}

/// The task that hands out one partition's records.
struct Reader {
    queue: QueueHandle,
    /// Woken by librdkafka when the partition queue becomes non-empty.
    ready: Arc<Notify>,
    tracker: Arc<PartitionTracker>,
    pause: Arc<PauseState>,
    records: mpsc::Sender<IncomingRecord>,
    stop: watch::Receiver<bool>,
}

impl Reader {
    async fn run(mut self) {
        let ready = self.ready.clone();
        self.queue.set_nonempty_callback(move || ready.notify_one());
        let (topic, partition) = (self.pause.topic.clone(), self.pause.partition);
        while let Some(()) = self.step().await {}
        // Whatever happens, a hold must not leave the partition paused.
        self.pause.set(PauseReason::NotBefore, false);
        // A reader that stops normally releases its queue here and now: the consumer thread
        // waits for that (`halt_readers`) before it closes the consumer itself. Only a
        // cancelled task leaves the release to `QueueHandle`'s thread.
        drop(self.queue.0.take());
        tracing::debug!(topic = %topic, partition, "partition reader stopped");
    }

    /// Hands out one record; `None` when the reader must stop.
    async fn step(&mut self) -> Option<()> {
        let mut stop = self.stop.clone();
        let slot: Slot = tokio::select! {
            biased;
            _ = stopped(&mut stop) => return None,
            slot = self.tracker.reserve() => slot,
        };
        let fetched = tokio::select! {
            biased;
            _ = stopped(&mut stop) => return None,
            fetched = self.next_message() => fetched,
        };
        if let Some(at) = fetched.not_before {
            self.hold_until(at, &mut stop).await?;
        }
        let permit = tokio::select! {
            biased;
            _ = stopped(&mut stop) => return None,
            permit = self.records.reserve() => permit.ok()?,
        };
        // No await between `begin` and `send`: a record in flight always reaches the stream.
        self.tracker.skip_to(fetched.offset);
        let ack = self.tracker.begin(fetched.offset, slot);
        permit.send(fetched.into_record(self.pause.topic.clone(), self.pause.partition, ack));
        Some(())
    }

    /// The next message of the partition, waiting (without polling) while there is none.
    async fn next_message(&self) -> Fetched {
        loop {
            match self.queue.poll(Duration::ZERO) {
                Some(Ok(message)) => return Fetched::from_message(&message),
                Some(Err(error)) => {
                    tracing::warn!(topic = %self.pause.topic, partition = self.pause.partition, %error, "fetch error");
                }
                None => {
                    let _ = tokio::time::timeout(IDLE_RECHECK, self.ready.notified()).await;
                }
            }
        }
    }

    /// Keeps the partition paused until `at`; `None` if the reader was stopped meanwhile.
    async fn hold_until(&self, at: SystemTime, stop: &mut watch::Receiver<bool>) -> Option<()> {
        let Ok(wait) = at.duration_since(SystemTime::now()) else {
            return Some(());
        };
        tracing::debug!(topic = %self.pause.topic, partition = self.pause.partition, ?wait, "holding record until its not-before time");
        self.pause.set(PauseReason::NotBefore, true);
        let due = tokio::select! {
            biased;
            _ = stopped(stop) => false,
            () = tokio::time::sleep(wait) => true,
        };
        self.pause.set(PauseReason::NotBefore, false);
        due.then_some(())
    }
}

/// A message copied out of librdkafka's buffer.
struct Fetched {
    offset: u64,
    key: String,
    value: Bytes,
    not_before: Option<SystemTime>,
    headers: Vec<(String, Bytes)>,
    timestamp: Option<SystemTime>,
}

impl Fetched {
    fn from_message(message: &BorrowedMessage<'_>) -> Self {
        let headers: Vec<(String, Bytes)> = message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|h| {
                        (
                            h.key.to_owned(),
                            h.value.map(Bytes::copy_from_slice).unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let not_before = headers
            .iter()
            .find(|(name, _)| name == NOT_BEFORE_HEADER)
            .and_then(|(_, value)| decode_time(value));
        let timestamp = message
            .timestamp()
            .to_millis()
            .and_then(|ms| u64::try_from(ms).ok())
            .and_then(|ms| SystemTime::UNIX_EPOCH.checked_add(Duration::from_millis(ms)));
        Self {
            offset: u64::try_from(message.offset()).unwrap_or_default(),
            key: message
                .key()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .unwrap_or_default(),
            value: message
                .payload()
                .map(Bytes::copy_from_slice)
                .unwrap_or_default(),
            not_before,
            headers,
            timestamp,
        }
    }

    fn into_record(self, topic: Arc<str>, partition: i32, ack: crate::Ack) -> IncomingRecord {
        IncomingRecord {
            topic,
            partition: u32::try_from(partition).unwrap_or_default(),
            offset: self.offset,
            key: self.key,
            value: self.value,
            not_before: self.not_before,
            headers: self.headers,
            timestamp: self.timestamp,
            ack,
        }
    }
}

/// Stores each advance of the low watermark; librdkafka's auto-commit commits it.
async fn store_watermarks(
    consumer: Weak<KafkaConsumer>,
    topic: Arc<str>,
    partition: i32,
    mut watermark: watch::Receiver<u64>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            biased;
            _ = stopped(&mut stop) => return,
            changed = watermark.changed() => if changed.is_err() { return },
        }
        let offset = *watermark.borrow_and_update();
        let Some(consumer) = consumer.upgrade() else {
            return;
        };
        store_offset(&consumer, &topic, partition, offset);
    }
}

/// Stores `offset` (the next offset to read) for auto-commit.
pub(super) fn store_offset(consumer: &KafkaConsumer, topic: &str, partition: i32, offset: u64) {
    let mut tpl = TopicPartitionList::new();
    let offset = Offset::Offset(i64::try_from(offset).unwrap_or(i64::MAX));
    let stored = tpl
        .add_partition_offset(topic, partition, offset)
        .and_then(|()| consumer.store_offsets(&tpl));
    match stored {
        Ok(()) => tracing::trace!(topic, partition, ?offset, "offset stored"),
        // Typically a partition that was just revoked: its final offset is committed there.
        Err(error) => tracing::debug!(topic, partition, ?offset, %error, "storing offset failed"),
    }
}

/// Resolves once `stop` is set (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}
