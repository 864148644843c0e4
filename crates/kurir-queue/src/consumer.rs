//! What a consumer-group member sees, the same for every backend.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::record::IncomingRecord;

/// A change in the partitions this member owns.
#[derive(Debug)]
pub enum PartitionEvent {
    /// This member now owns a partition: its records arrive on the stream, starting at the
    /// group's committed position.
    Assigned(PartitionStream),
    /// The partition was taken away (another member joined, or the subscription is
    /// closing). Its stream has ended; records still in flight should be finished (or left)
    /// quickly: the backend waits a bounded time for their acks before handing the partition
    /// over, and acks after that do not count.
    Revoked { topic: Arc<str>, partition: u32 },
}

/// The records of one owned partition, in offset order. Ends (`None`) when the partition is
/// revoked or the subscription closes.
#[derive(Debug)]
pub struct PartitionStream {
    pub topic: Arc<str>,
    pub partition: u32,
    records: mpsc::Receiver<IncomingRecord>,
}

impl PartitionStream {
    /// Built by backends; `records` is bounded by the partition's in-flight limit.
    pub fn new(topic: Arc<str>, partition: u32, records: mpsc::Receiver<IncomingRecord>) -> Self {
        Self {
            topic,
            partition,
            records,
        }
    }

    /// The next record, waiting for one; `None` once the partition is no longer owned.
    pub async fn next(&mut self) -> Option<IncomingRecord> {
        self.records.recv().await
    }
}

/// Backend-specific controls of a subscription.
pub trait SubscriptionControl: Send + Sync + std::fmt::Debug {
    /// Stops fetching `partition` of `topic` until [`Self::resume`]; records already handed
    /// out stay valid.
    fn pause(&self, topic: &str, partition: u32);
    fn resume(&self, topic: &str, partition: u32);
    /// Leaves the group: revokes every partition (draining in flight records within the
    /// bounded time), commits, and ends the event stream.
    fn close(&self);
}

/// Membership in a consumer group. Dropping it leaves the group like [`Subscription::close`].
#[derive(Debug)]
pub struct Subscription {
    events: mpsc::Receiver<PartitionEvent>,
    control: Box<dyn SubscriptionControl>,
}

impl Subscription {
    pub fn new(
        events: mpsc::Receiver<PartitionEvent>,
        control: Box<dyn SubscriptionControl>,
    ) -> Self {
        Self { events, control }
    }

    /// The next assignment or revocation; `None` once the subscription has closed.
    pub async fn next_event(&mut self) -> Option<PartitionEvent> {
        self.events.recv().await
    }

    pub fn pause(&self, topic: &str, partition: u32) {
        self.control.pause(topic, partition);
    }

    pub fn resume(&self, topic: &str, partition: u32) {
        self.control.resume(topic, partition);
    }

    /// Leaves the group and waits until the backend has revoked everything (the event stream
    /// ends). Records never acked are redelivered to the next owner.
    pub async fn close(mut self) {
        self.control.close();
        while self.events.recv().await.is_some() {}
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.control.close();
    }
}

/// Every record of every partition a [`Subscription`] is assigned, as one stream
/// ([`Subscription::all_records`]): a task per assigned partition forwards its records.
/// For readers that take each record as it comes, need no order across partitions and ack
/// each one as soon as they have it (the demo's outcome tally, tests).
#[derive(Debug)]
pub struct AllRecords {
    subscription: Subscription,
    tx: mpsc::UnboundedSender<AckedRecord>,
    rx: mpsc::UnboundedReceiver<AckedRecord>,
}

/// A record [`AllRecords`] handed out (and acknowledged).
#[derive(Debug, Clone)]
pub struct AckedRecord {
    pub topic: Arc<str>,
    pub partition: u32,
    pub key: String,
    pub value: Bytes,
    pub headers: Vec<(String, Bytes)>,
}

impl AckedRecord {
    /// The value of the first header called `name`.
    pub fn header(&self, name: &str) -> Option<&Bytes> {
        crate::record::header_in(&self.headers, name)
    }
}

impl Subscription {
    /// This subscription's records as one stream (see [`AllRecords`]).
    pub fn all_records(self) -> AllRecords {
        let (tx, rx) = mpsc::unbounded_channel();
        AllRecords {
            subscription: self,
            tx,
            rx,
        }
    }
}

impl AllRecords {
    /// The next record of any assigned partition, already acknowledged; `None` once the
    /// subscription has ended.
    pub async fn next(&mut self) -> Option<AckedRecord> {
        loop {
            tokio::select! {
                event = self.subscription.next_event() => match event {
                    Some(PartitionEvent::Assigned(mut stream)) => {
                        let tx = self.tx.clone();
                        tokio::spawn(async move {
                            while let Some(record) = stream.next().await {
                                let IncomingRecord {
                                    topic,
                                    partition,
                                    key,
                                    value,
                                    headers,
                                    ack,
                                    ..
                                } = record;
                                ack.done();
                                let acked = AckedRecord {
                                    topic,
                                    partition,
                                    key,
                                    value,
                                    headers,
                                };
                                if tx.send(acked).is_err() {
                                    return;
                                }
                            }
                        });
                    }
                    Some(PartitionEvent::Revoked { .. }) => {}
                    None => return None,
                },
                Some(record) = self.rx.recv() => return Some(record),
            }
        }
    }

    /// Leaves the group ([`Subscription::close`]).
    pub async fn close(self) {
        self.subscription.close().await;
    }
}
