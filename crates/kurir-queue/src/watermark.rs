//! Out-of-order completion with in-order commits.
//!
//! Delivery finishes records in any order (a slow domain must not hold up a fast one), but a
//! queue position can only be committed when *every* record before it is finished. Each
//! owned partition has a [`PartitionTracker`]: records are `begin`-ed as they are handed out
//! and finished through their [`Ack`]; the committed position is the **low watermark**, the
//! smallest offset still in flight (or the next offset to hand out when none is). Backends
//! watch [`PartitionTracker::watermark`] and persist it (Kafka: `store_offsets`; embedded: the
//! consumer-group table).
//!
//! In-flight records per partition are bounded by a semaphore: a backend must
//! [`PartitionTracker::reserve`] a slot before handing out a record, so a consumer that is far
//! behind never buffers more than `max_in_flight` records of a partition in memory.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};

/// Completion tracking for one owned partition.
#[derive(Debug)]
pub struct PartitionTracker {
    state: Mutex<State>,
    /// Slots for records in flight; a permit travels inside each [`Ack`].
    slots: Arc<Semaphore>,
    /// The committable position; backends persist it when it changes.
    watermark: watch::Sender<u64>,
    /// Woken whenever a record finishes (drain waits on it).
    finished: Notify,
}

#[derive(Debug)]
struct State {
    in_flight: BTreeSet<u64>,
    /// The offset after the last one handed out: the watermark when nothing is in flight.
    next: u64,
    /// After revocation finished records no longer move the watermark: the partition
    /// belongs to another consumer now.
    revoked: bool,
}

impl PartitionTracker {
    /// A tracker for a partition whose committed position is `start`.
    pub fn new(start: u64, max_in_flight: usize) -> Arc<Self> {
        let (watermark, _) = watch::channel(start);
        Arc::new(Self {
            state: Mutex::new(State {
                in_flight: BTreeSet::new(),
                next: start,
                revoked: false,
            }),
            slots: Arc::new(Semaphore::new(max_in_flight.max(1))),
            watermark,
            finished: Notify::new(),
        })
    }

    /// Waits for a free in-flight slot. Hand the returned [`Slot`] to [`Self::begin`].
    pub async fn reserve(self: &Arc<Self>) -> Slot {
        let permit = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore never closed");
        Slot(permit)
    }

    /// Marks `offset` as handed out and returns the [`Ack`] that finishes it.
    pub fn begin(self: &Arc<Self>, offset: u64, slot: Slot) -> Ack {
        let mut state = self.state.lock().expect("tracker lock");
        state.in_flight.insert(offset);
        state.next = state.next.max(offset + 1);
        Ack {
            offset,
            tracker: Some(self.clone()),
            _slot: slot.0,
        }
    }

    /// Records handed out past `offset` are skipped without being in flight (e.g. a gap in
    /// Kafka offsets, or a record filtered by the backend); moves the watermark if possible.
    pub fn skip_to(&self, next: u64) {
        let mut state = self.state.lock().expect("tracker lock");
        state.next = state.next.max(next);
        self.publish(&state);
    }

    /// The committable position, as a watch so backends see each advance.
    pub fn watermark(&self) -> watch::Receiver<u64> {
        self.watermark.subscribe()
    }

    /// The committable position now.
    pub fn low_watermark(&self) -> u64 {
        Self::compute(&self.state.lock().expect("tracker lock"))
    }

    /// How many records are in flight.
    pub fn in_flight(&self) -> usize {
        self.state.lock().expect("tracker lock").in_flight.len()
    }

    /// Stops tracking: later acks do not move the watermark.
    pub fn revoke(&self) {
        self.state.lock().expect("tracker lock").revoked = true;
    }

    /// Waits until no record is in flight or `timeout` passed; returns whether it drained.
    pub async fn drain(&self, timeout: Duration) -> bool {
        let wait = async {
            loop {
                let notified = self.finished.notified();
                if self.in_flight() == 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }

    fn finish(&self, offset: u64) {
        {
            let mut state = self.state.lock().expect("tracker lock");
            state.in_flight.remove(&offset);
            if !state.revoked {
                self.publish(&state);
            }
        }
        self.finished.notify_waiters();
    }

    fn publish(&self, state: &State) {
        let mark = Self::compute(state);
        self.watermark.send_if_modified(|current| {
            let advanced = mark > *current;
            if advanced {
                *current = mark;
            }
            advanced
        });
    }

    fn compute(state: &State) -> u64 {
        state.in_flight.first().copied().unwrap_or(state.next)
    }
}

/// A reserved in-flight slot (see [`PartitionTracker::reserve`]).
#[derive(Debug)]
pub struct Slot(OwnedSemaphorePermit);

/// The acknowledgement of one record. Call [`Ack::done`] once the record has a durable
/// outcome (delivered and recorded, bounced with its DSN queued, or re-published to a retry
/// tier). Dropping it without `done` leaves the record unfinished: the committed position
/// stays before it, and it is delivered again after a restart or a rebalance.
#[derive(Debug)]
pub struct Ack {
    offset: u64,
    tracker: Option<Arc<PartitionTracker>>,
    _slot: OwnedSemaphorePermit,
}

impl Ack {
    /// The record has a durable outcome.
    pub fn done(mut self) {
        if let Some(tracker) = self.tracker.take() {
            tracker.finish(self.offset);
        }
    }

    pub fn offset(&self) -> u64 {
        self.offset
    }
}

impl Drop for Ack {
    fn drop(&mut self) {
        if self.tracker.is_some() {
            tracing::debug!(
                offset = self.offset,
                "record dropped without ack; it will be redelivered"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn hand_out(t: &Arc<PartitionTracker>, offset: u64) -> Ack {
        let slot = t.reserve().await;
        t.begin(offset, slot)
    }

    #[tokio::test]
    async fn watermark_advances_only_to_the_lowest_unfinished_record() {
        let t = PartitionTracker::new(10, 100);
        let acks: Vec<Ack> = futures_join(&t, 10..15).await;
        let mut acks: Vec<Option<Ack>> = acks.into_iter().map(Some).collect();
        assert_eq!(t.low_watermark(), 10);
        acks[3].take().unwrap().done(); // 13
        acks[1].take().unwrap().done(); // 11
        assert_eq!(t.low_watermark(), 10, "10 still in flight");
        acks[0].take().unwrap().done(); // 10
        assert_eq!(t.low_watermark(), 12);
        acks[2].take().unwrap().done(); // 12
        assert_eq!(t.low_watermark(), 14);
        acks[4].take().unwrap().done(); // 14
        assert_eq!(t.low_watermark(), 15);
        assert_eq!(*t.watermark().borrow(), 15);
    }

    async fn futures_join(t: &Arc<PartitionTracker>, offsets: std::ops::Range<u64>) -> Vec<Ack> {
        let mut out = Vec::new();
        for o in offsets {
            out.push(hand_out(t, o).await);
        }
        out
    }

    #[tokio::test]
    async fn a_dropped_ack_holds_the_watermark_but_frees_its_slot() {
        let t = PartitionTracker::new(0, 1);
        let first = hand_out(&t, 0).await;
        drop(first);
        let second = tokio::time::timeout(Duration::from_secs(1), hand_out(&t, 1))
            .await
            .unwrap();
        second.done();
        assert_eq!(t.low_watermark(), 0, "offset 0 was never finished");
    }

    #[tokio::test(start_paused = true)]
    async fn in_flight_records_are_bounded() {
        let t = PartitionTracker::new(0, 2);
        let a = hand_out(&t, 0).await;
        let _b = hand_out(&t, 1).await;
        let third = tokio::time::timeout(Duration::from_secs(5), t.reserve()).await;
        assert!(third.is_err(), "a third slot must wait");
        a.done();
        let slot = tokio::time::timeout(Duration::from_secs(5), t.reserve())
            .await
            .unwrap();
        t.begin(2, slot).done();
    }

    #[tokio::test(start_paused = true)]
    async fn drain_waits_for_in_flight_records_and_revoke_freezes_the_watermark() {
        let t = PartitionTracker::new(0, 10);
        let a = hand_out(&t, 0).await;
        assert!(!t.drain(Duration::from_secs(1)).await);
        t.revoke();
        let waiter = {
            let t = t.clone();
            tokio::spawn(async move { t.drain(Duration::from_secs(10)).await })
        };
        tokio::task::yield_now().await;
        a.done();
        assert!(waiter.await.unwrap());
        assert_eq!(
            *t.watermark().borrow(),
            0,
            "acks after revoke do not commit"
        );
    }

    #[tokio::test]
    async fn skipped_offsets_move_the_watermark() {
        let t = PartitionTracker::new(0, 10);
        t.skip_to(5);
        assert_eq!(t.low_watermark(), 5);
        hand_out(&t, 7).await.done();
        assert_eq!(t.low_watermark(), 8);
    }
}
