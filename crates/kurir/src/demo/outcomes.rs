//! The node's outcome events (`kurir.events`), read in-process by the demo's own consumer
//! group and tallied per recipient.
//!
//! Delivery is at least once, so events are tallied per (message id, recipient): the first
//! final outcome (delivered, bounced, suppressed, expired) counts, a `DEFERRED` before it
//! marks the recipient as deferred first. Events for the demo's sender address are the
//! DSNs' own deliveries; bounced recipients are grouped by (message id, routing key), one
//! DSN each.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use kurir_loadtest::latency::{Latency, Percentiles};
use kurir_proto::v1;
use kurir_queue::Queue;
use tokio::task::JoinHandle;

/// The demo's consumer group on the events topic.
const GROUP: &str = "kurir-demo";

/// Follows the events until dropped.
pub(super) struct Outcomes {
    tally: Arc<Mutex<Tally>>,
    task: JoinHandle<()>,
}

impl Drop for Outcomes {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The counts so far.
#[derive(Debug, Clone, Default)]
pub(super) struct Counts {
    pub(super) delivered: u64,
    pub(super) deferred_then_delivered: u64,
    pub(super) bounced: u64,
    pub(super) suppressed: u64,
    pub(super) expired: u64,
    /// Recipients with a DEFERRED event and no final outcome yet.
    pub(super) waiting_for_retry: u64,
    /// One per (message, routing key) with a bounced recipient.
    pub(super) dsns_queued: u64,
    /// DSNs delivered to the sender (distinct DSN message ids).
    pub(super) dsns_delivered: u64,
    /// From acceptance to delivery, for delivered recipients (the events' `queued_ms`).
    pub(super) queued_to_delivered: Percentiles,
}

impl Counts {
    /// Recipients with a final outcome.
    pub(super) fn finished(&self) -> u64 {
        self.delivered + self.bounced + self.suppressed + self.expired
    }
}

#[derive(Default)]
struct Tally {
    sender: String,
    recipients: HashMap<(Vec<u8>, String), Recipient>,
    dsn_records: HashSet<(Vec<u8>, String)>,
    dsns_delivered: HashSet<Vec<u8>>,
    queued: Latency,
}

#[derive(Default)]
struct Recipient {
    deferred: bool,
    outcome: Option<v1::Outcome>,
}

impl Outcomes {
    /// Subscribes to `topic` and tallies every event; `sender` is the demo's envelope sender.
    pub(super) async fn follow<Q: Queue + Clone>(
        queue: Q,
        topic: String,
        sender: &str,
    ) -> anyhow::Result<Self> {
        let subscription = queue.subscribe(GROUP, &[topic]).await?;
        let tally = Arc::new(Mutex::new(Tally {
            sender: sender.to_owned(),
            ..Tally::default()
        }));
        let task = tokio::spawn(consume(subscription, tally.clone()));
        Ok(Self { tally, task })
    }

    /// The counts so far.
    pub(super) fn counts(&self) -> Counts {
        lock(&self.tally).counts()
    }
}

fn lock(tally: &Mutex<Tally>) -> MutexGuard<'_, Tally> {
    tally.lock().unwrap_or_else(|e| e.into_inner())
}

/// Reads every assigned partition, acknowledging each record as it is tallied.
async fn consume(subscription: kurir_queue::Subscription, tally: Arc<Mutex<Tally>>) {
    let mut records = subscription.all_records();
    while let Some(record) = records.next().await {
        if let Ok(event) = v1::Event::decode_bytes(record.value) {
            lock(&tally).add(&event);
        }
    }
}

impl Tally {
    fn add(&mut self, event: &v1::Event) {
        let outcome = event.outcome();
        if event.recipient == self.sender {
            if outcome == v1::Outcome::Delivered {
                self.dsns_delivered.insert(event.message_id.clone());
            }
            return;
        }
        let key = (event.message_id.clone(), event.recipient.clone());
        let recipient = self.recipients.entry(key).or_default();
        if recipient.outcome.is_some() {
            return;
        }
        match outcome {
            v1::Outcome::Deferred => recipient.deferred = true,
            v1::Outcome::Delivered => {
                recipient.outcome = Some(outcome);
                let ms = u64::try_from(event.queued_ms).unwrap_or(0);
                self.queued.record(std::time::Duration::from_millis(ms));
            }
            v1::Outcome::Bounced => {
                recipient.outcome = Some(outcome);
                self.dsn_records
                    .insert((event.message_id.clone(), event.routing_key.clone()));
            }
            v1::Outcome::Suppressed | v1::Outcome::Expired => recipient.outcome = Some(outcome),
            v1::Outcome::Unspecified | v1::Outcome::Undecodable => {}
        }
    }

    fn counts(&self) -> Counts {
        let mut counts = Counts::default();
        for r in self.recipients.values() {
            match r.outcome {
                Some(v1::Outcome::Delivered) => {
                    counts.delivered += 1;
                    counts.deferred_then_delivered += u64::from(r.deferred);
                }
                Some(v1::Outcome::Bounced) => counts.bounced += 1,
                Some(v1::Outcome::Suppressed) => counts.suppressed += 1,
                Some(v1::Outcome::Expired) => counts.expired += 1,
                Some(_) => {}
                None => counts.waiting_for_retry += u64::from(r.deferred),
            }
        }
        counts.dsns_queued = self.dsn_records.len() as u64;
        counts.dsns_delivered = self.dsns_delivered.len() as u64;
        counts.queued_to_delivered = self.queued.percentiles();
        counts
    }
}
