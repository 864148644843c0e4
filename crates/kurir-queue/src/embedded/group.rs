//! Consumer groups in one process: members, partition assignment, and the tasks that feed
//! and commit each owned partition.
//!
//! Assignment is round-robin per topic over the members subscribed to it, recomputed when a
//! member joins or leaves. A partition changes hands only after its old owner's revoke has
//! finished (reader stopped, in-flight records drained within the drain timeout, final
//! position committed), so no record is handed to two members at once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::reader::{self, ReaderArgs};
use super::store::{CommittedEntry, Store};
use super::topics::{PartitionState, TopicState};
use crate::config::QueueConfig;
use crate::consumer::{PartitionEvent, PartitionStream, Subscription, SubscriptionControl};
use crate::error::QueueError;
use crate::watermark::PartitionTracker;

/// Capacity of a member's event channel: far more than the partitions one member can own.
const EVENT_CAPACITY: usize = 65_536;
/// How often a partition's committed position is written while records finish. A crash
/// redelivers at most the records finished in the last interval (at-least-once).
const COMMIT_INTERVAL: Duration = Duration::from_millis(100);
/// After the queue is opened, how long nothing is forgotten by [`Coordinator::expire_idle`]:
/// the node's own groups join within it, also after a restart that came later than the
/// retention (their last commits are then older than it).
const OPEN_GRACE: Duration = Duration::from_secs(3600);
/// Records deleted per commit at most, so one commit never becomes a huge batch.
const MAX_DELETE_PER_COMMIT: u64 = 10_000;

type PartitionKey = (Arc<str>, u32);
type Pauses = Arc<Mutex<HashMap<(String, u32), watch::Sender<bool>>>>;

/// The coordinator of every group of one embedded queue.
#[derive(Debug, Clone)]
pub(crate) struct Coordinator {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    store: Store,
    drain_timeout: Duration,
    max_in_flight: usize,
    groups: tokio::sync::Mutex<HashMap<String, BTreeMap<u64, Member>>>,
    /// Every group's committed position per (topic id, partition): records below the
    /// smallest are deleted.
    committed: Mutex<HashMap<(u32, u32), HashMap<String, u64>>>,
    next_member: AtomicU64,
}

#[derive(Debug)]
struct Member {
    topics: Vec<Arc<TopicState>>,
    events: mpsc::Sender<PartitionEvent>,
    owned: HashMap<PartitionKey, Owned>,
    pauses: Pauses,
}

/// A partition a member owns, with the tasks serving it.
#[derive(Debug)]
struct Owned {
    topic_id: u32,
    partition: Arc<PartitionState>,
    tracker: Arc<PartitionTracker>,
    cancel: watch::Sender<bool>,
    reader: JoinHandle<()>,
    committer: JoinHandle<()>,
}

impl Coordinator {
    pub(crate) fn new(store: Store, config: &QueueConfig) -> Self {
        let shared = Shared {
            store,
            drain_timeout: config.drain_timeout,
            max_in_flight: config.max_in_flight_per_partition,
            groups: tokio::sync::Mutex::new(HashMap::new()),
            committed: Mutex::new(HashMap::new()),
            next_member: AtomicU64::new(1),
        };
        Self {
            shared: Arc::new(shared),
        }
    }

    /// Adds a member to `group` and rebalances.
    pub(crate) async fn join(&self, group: &str, topics: Vec<Arc<TopicState>>) -> Subscription {
        let id = self.shared.next_member.fetch_add(1, Ordering::SeqCst);
        let (events, rx) = mpsc::channel(EVENT_CAPACITY);
        let pauses = Pauses::default();
        let member = Member {
            topics,
            events,
            owned: HashMap::new(),
            pauses: pauses.clone(),
        };
        let mut groups = self.shared.groups.lock().await;
        groups
            .entry(group.to_owned())
            .or_default()
            .insert(id, member);
        self.rebalance(group, groups.get_mut(group).expect("just inserted"))
            .await;
        let control = Control {
            coordinator: self.clone(),
            group: group.to_owned(),
            member: id,
            pauses,
            closed: AtomicBool::new(false),
        };
        Subscription::new(rx, Box::new(control))
    }

    /// Removes a member: its partitions are revoked (drained, committed) and handed to the
    /// others; then its event stream ends.
    pub(crate) async fn leave(&self, group: &str, member_id: u64) {
        let mut groups = self.shared.groups.lock().await;
        let Some(members) = groups.get_mut(group) else {
            return;
        };
        let Some(mut member) = members.remove(&member_id) else {
            return;
        };
        self.revoke_all(group, &mut member).await;
        self.rebalance(group, members).await;
        if members.is_empty() {
            groups.remove(group);
        }
    }

    /// Every member of every group leaves (queue shutdown).
    pub(crate) async fn close_all(&self) {
        let mut groups = self.shared.groups.lock().await;
        for (name, members) in groups.iter_mut() {
            for member in members.values_mut() {
                self.revoke_all(name, member).await;
            }
        }
        groups.clear();
    }

    async fn revoke_all(&self, group: &str, member: &mut Member) {
        let owned: Vec<_> = member.owned.drain().collect();
        let revokes = owned
            .into_iter()
            .map(|(key, owned)| self.revoke(group, key, owned, &member.events));
        futures::future::join_all(revokes).await;
    }

    async fn rebalance(&self, group: &str, members: &mut BTreeMap<u64, Member>) {
        let desired = assignment(members);
        let mut revokes = Vec::new();
        for (id, member) in members.iter_mut() {
            let keep = desired.get(id);
            let gone: Vec<_> = member
                .owned
                .keys()
                .filter(|k| !keep.is_some_and(|s| s.contains(*k)))
                .cloned()
                .collect();
            for key in gone {
                let owned = member.owned.remove(&key).expect("listed above");
                revokes.push(self.revoke(group, key, owned, &member.events));
            }
        }
        futures::future::join_all(revokes).await;
        for (id, member) in members.iter_mut() {
            for key in desired.get(id).into_iter().flatten() {
                if !member.owned.contains_key(key) {
                    self.assign(group, member, key.clone());
                }
            }
        }
    }

    fn assign(&self, group: &str, member: &mut Member, key: PartitionKey) {
        let Some(topic) = member.topics.iter().find(|t| t.name == key.0).cloned() else {
            return;
        };
        let partition = topic.partitions[key.1 as usize].clone();
        let (start, stored) = self.start_position(group, topic.id, &partition);
        if !stored {
            // A group's position counts from its first assignment, not its first finished
            // record: until then another group's commit (or an idle group's expiry) would
            // see no position of this one and delete what it is about to read.
            self.commit(group, topic.id, &partition, start);
        }
        let tracker = PartitionTracker::new(start, self.shared.max_in_flight);
        let (records_tx, records_rx) = mpsc::channel(self.shared.max_in_flight.clamp(1, 1024));
        let (cancel, cancel_rx) = watch::channel(false);
        let paused = {
            let mut pauses = member.pauses.lock().expect("pauses lock");
            let entry = pauses
                .entry((key.0.to_string(), key.1))
                .or_insert_with(|| watch::channel(false).0);
            entry.subscribe()
        };
        let args = ReaderArgs {
            store: self.shared.store.clone(),
            topic: key.0.clone(),
            topic_id: topic.id,
            partition: partition.clone(),
            tracker: tracker.clone(),
            records: records_tx,
            cancel: cancel_rx,
            paused,
            start,
        };
        let reader = tokio::spawn(reader::run(args));
        let committer = tokio::spawn(self.clone().commit_loop(
            group.to_owned(),
            topic.id,
            partition.clone(),
            tracker.clone(),
        ));
        let stream = PartitionStream::new(key.0.clone(), key.1, records_rx);
        if member
            .events
            .try_send(PartitionEvent::Assigned(stream))
            .is_err()
        {
            tracing::error!(topic = %key.0, partition = key.1, "member's event channel full or closed");
        }
        member.owned.insert(
            key,
            Owned {
                topic_id: topic.id,
                partition,
                tracker,
                cancel,
                reader,
                committer,
            },
        );
    }

    async fn revoke(
        &self,
        group: &str,
        key: PartitionKey,
        owned: Owned,
        events: &mpsc::Sender<PartitionEvent>,
    ) {
        owned.cancel.send_replace(true);
        let _ = owned.reader.await;
        if !owned.tracker.drain(self.shared.drain_timeout).await {
            tracing::warn!(topic = %key.0, partition = key.1, in_flight = owned.tracker.in_flight(),
                "revoke: in-flight records not finished within the drain timeout; they will be redelivered");
        }
        owned.tracker.revoke();
        owned.committer.abort();
        let _ = owned.committer.await;
        self.commit(
            group,
            owned.topic_id,
            &owned.partition,
            owned.tracker.low_watermark(),
        );
        let _ = events.try_send(PartitionEvent::Revoked {
            topic: key.0,
            partition: key.1,
        });
    }

    /// Where `group` starts reading `partition`, and whether it has a stored position there.
    fn start_position(
        &self,
        group: &str,
        topic_id: u32,
        partition: &PartitionState,
    ) -> (u64, bool) {
        let retained = partition.retained_from.load(Ordering::SeqCst);
        let committed = self
            .shared
            .store
            .committed(group, topic_id, partition.partition);
        match committed {
            Ok(c) => (c.unwrap_or(retained).max(retained), c.is_some()),
            Err(error) => {
                tracing::error!(%error, "reading committed offset; starting at the oldest record");
                (retained, true)
            }
        }
    }

    /// Persists the partition's low watermark, at most once per [`COMMIT_INTERVAL`]: advances
    /// within an interval are written together (like Kafka's auto-commit of stored offsets),
    /// not one write per finished record. Revoke and close write the final position.
    async fn commit_loop(
        self,
        group: String,
        topic_id: u32,
        partition: Arc<PartitionState>,
        tracker: Arc<PartitionTracker>,
    ) {
        let mut watermark = tracker.watermark();
        while watermark.changed().await.is_ok() {
            tokio::time::sleep(COMMIT_INTERVAL).await;
            let position = *watermark.borrow_and_update();
            self.commit(&group, topic_id, &partition, position);
        }
    }

    /// Stores `group`'s position and deletes what every group has consumed.
    fn commit(&self, group: &str, topic_id: u32, partition: &PartitionState, position: u64) {
        let p = partition.partition;
        let floor = {
            let mut committed = self.shared.committed.lock().expect("committed lock");
            let groups = committed
                .entry((topic_id, p))
                .or_insert_with(|| self.load_committed(topic_id, p));
            groups.insert(group.to_owned(), position);
            groups.values().copied().min().unwrap_or(position)
        };
        let from = partition.retained_from.load(Ordering::SeqCst);
        let to = floor.clamp(from, from + MAX_DELETE_PER_COMMIT);
        match self
            .shared
            .store
            .commit(group, topic_id, p, position, from..to)
        {
            // `fetch_max`: the retention sweep may have moved it further meanwhile.
            Ok(()) => {
                partition.retained_from.fetch_max(to, Ordering::SeqCst);
            }
            Err(error) => tracing::error!(%error, topic_id, partition = p, "committing position"),
        }
    }

    /// Forgets the positions of groups idle on a topic since before `now - retention` (as
    /// Kafka's `offsets.retention.minutes` does), and deletes what the
    /// remaining groups have all consumed; returns how many positions it forgot. A group that
    /// stopped reading a topic would otherwise keep every record after its position forever.
    ///
    /// A group is idle on a topic when none of its members reads it, and idle since its last
    /// commit there (revoke and close commit, so a group that left has its leaving time;
    /// entries stored without a time count from `opened`, when this process opened the
    /// queue). Nothing is forgotten in the first [`OPEN_GRACE`] after `opened`: the groups
    /// this node runs join by then, after a restart that came later than the retention.
    /// The furthest position on a partition always stays: it holds back nothing another
    /// group has consumed, and a partition's end after a restart is taken from its
    /// positions when its records are all gone.
    ///
    /// Blocks on the groups lock: call it from a thread of its own, not a runtime worker.
    pub(crate) fn expire_idle(
        &self,
        topics: &[Arc<TopicState>],
        retention: Duration,
        now: SystemTime,
        opened: SystemTime,
    ) -> Result<usize, QueueError> {
        let Some(cutoff) = now.checked_sub(retention) else {
            return Ok(0);
        };
        if now < opened + OPEN_GRACE {
            return Ok(0);
        }
        // Held throughout, so no group joins (and reads its position) meanwhile.
        let groups = self.shared.groups.blocking_lock();
        // A group is idle on a topic none of its members reads: `kurir-deliver` reads the
        // mail topic, and its positions from before on the retry tiers still expire.
        let reading: HashSet<(&str, u32)> = groups
            .iter()
            .flat_map(|(name, members)| {
                members
                    .values()
                    .flat_map(move |m| m.topics.iter().map(move |t| (name.as_str(), t.id)))
            })
            .collect();
        let mut by_partition: BTreeMap<(u32, u32), Vec<CommittedEntry>> = BTreeMap::new();
        for entry in self.shared.store.committed_entries()? {
            by_partition
                .entry((entry.topic_id, entry.partition))
                .or_default()
                .push(entry);
        }
        let mut forgotten = 0;
        for ((topic_id, p), mut entries) in by_partition {
            let Some((topic, partition)) = topics
                .iter()
                .find(|t| t.id == topic_id)
                .and_then(|t| Some((t.name.clone(), t.partitions.get(p as usize)?.clone())))
            else {
                continue;
            };
            let idle = |e: &CommittedEntry| {
                !reading.contains(&(e.group.as_str(), topic_id)) && e.at.unwrap_or(opened) < cutoff
            };
            // The furthest position stays (one reading the topic among equals): deletion
            // goes by the lowest, so forgetting it releases nothing, and a partition whose
            // records are all gone takes its end from its positions after a restart.
            let furthest = entries
                .iter()
                .max_by_key(|e| (e.position, !idle(e)))
                .map(|e| e.group.clone());
            entries.retain(|e| idle(e) && Some(&e.group) != furthest.as_ref());
            for entry in entries {
                // The stored position first: if that fails the group still counts.
                self.shared.store.forget(&entry.group, topic_id, p)?;
                let floor = {
                    let mut committed = self.shared.committed.lock().expect("committed lock");
                    let positions = committed
                        .entry((topic_id, p))
                        .or_insert_with(|| self.load_committed(topic_id, p));
                    positions.remove(&entry.group);
                    positions.values().copied().min()
                };
                if let Some(floor) = floor {
                    self.trim(topic_id, &partition, floor)?;
                }
                tracing::info!(group = entry.group, topic = %topic, partition = p, position = entry.position,
                    "embedded queue: forgot the position of a group idle for longer than queue.embedded.group_retention");
                forgotten += 1;
            }
        }
        Ok(forgotten)
    }

    /// Deletes a partition's records below `floor`, [`MAX_DELETE_PER_COMMIT`] at a time.
    fn trim(
        &self,
        topic_id: u32,
        partition: &PartitionState,
        floor: u64,
    ) -> Result<(), QueueError> {
        loop {
            let from = partition.retained_from.load(Ordering::SeqCst);
            if from >= floor {
                return Ok(());
            }
            let to = floor.min(from + MAX_DELETE_PER_COMMIT);
            self.shared
                .store
                .delete(topic_id, partition.partition, from..to)?;
            partition.retained_from.fetch_max(to, Ordering::SeqCst);
        }
    }

    fn load_committed(&self, topic_id: u32, partition: u32) -> HashMap<String, u64> {
        self.shared
            .store
            .committed_by_group(topic_id, partition)
            .unwrap_or_else(|error| {
                tracing::error!(%error, "reading committed positions");
                HashMap::new()
            })
    }
}

/// Round-robin per topic over the members subscribed to it, in member order.
fn assignment(members: &BTreeMap<u64, Member>) -> HashMap<u64, HashSet<PartitionKey>> {
    let mut topics: BTreeMap<Arc<str>, (u32, Vec<u64>)> = BTreeMap::new();
    for (id, member) in members {
        for topic in &member.topics {
            let entry = topics
                .entry(topic.name.clone())
                .or_insert((topic.partitions.len() as u32, Vec::new()));
            entry.1.push(*id);
        }
    }
    let mut out: HashMap<u64, HashSet<PartitionKey>> = HashMap::new();
    for (name, (partitions, subscribers)) in topics {
        for p in 0..partitions {
            let owner = subscribers[p as usize % subscribers.len()];
            out.entry(owner).or_default().insert((name.clone(), p));
        }
    }
    out
}

/// The embedded backend's [`SubscriptionControl`].
#[derive(Debug)]
struct Control {
    coordinator: Coordinator,
    group: String,
    member: u64,
    pauses: Pauses,
    closed: AtomicBool,
}

impl Control {
    fn set_paused(&self, topic: &str, partition: u32, paused: bool) {
        let mut pauses = self.pauses.lock().expect("pauses lock");
        let entry = pauses
            .entry((topic.to_owned(), partition))
            .or_insert_with(|| watch::channel(false).0);
        entry.send_replace(paused);
    }
}

impl SubscriptionControl for Control {
    fn pause(&self, topic: &str, partition: u32) {
        self.set_paused(topic, partition, true);
    }

    fn resume(&self, topic: &str, partition: u32) {
        self.set_paused(topic, partition, false);
    }

    fn close(&self) {
        if self.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        let coordinator = self.coordinator.clone();
        let (group, member) = (self.group.clone(), self.member);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                drop(runtime.spawn(async move { coordinator.leave(&group, member).await }))
            }
            Err(_) => tracing::warn!(
                group,
                "subscription dropped outside a runtime; it leaves when the queue closes"
            ),
        }
    }
}
