//! Drives a subscription the way delivery does: one task per assigned partition, every record
//! forwarded to the test with its ack, so the test decides what to finish.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kurir_queue::{Ack, PartitionEvent, Subscription};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// How long a test waits for something that should happen.
pub const WAIT: Duration = Duration::from_secs(60);

/// One record as the test sees it.
#[derive(Debug)]
pub struct Got {
    pub member: &'static str,
    pub partition: u32,
    pub offset: u64,
    pub key: String,
    pub value: Vec<u8>,
    pub ack: Option<Ack>,
}

impl Got {
    pub fn ack(&mut self) {
        self.ack.take().expect("acked once").done();
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.value).into_owned()
    }
}

/// A group member under test.
pub struct Member {
    assigned: Arc<Mutex<BTreeSet<u32>>>,
    close: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Member {
    /// Runs `subscription`, forwarding records to `out`.
    pub fn run(
        name: &'static str,
        mut subscription: Subscription,
        out: mpsc::UnboundedSender<Got>,
    ) -> Self {
        let assigned = Arc::new(Mutex::new(BTreeSet::new()));
        let (close, mut closed) = oneshot::channel();
        let owned = assigned.clone();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = &mut closed => break,
                    event = subscription.next_event() => match event {
                        Some(PartitionEvent::Assigned(mut stream)) => {
                            owned.lock().unwrap().insert(stream.partition);
                            let out = out.clone();
                            tokio::spawn(async move {
                                while let Some(r) = stream.next().await {
                                    let got = Got { member: name, partition: r.partition, offset: r.offset,
                                        key: r.key, value: r.value.to_vec(), ack: Some(r.ack) };
                                    if out.send(got).is_err() { break; }
                                }
                            });
                        }
                        Some(PartitionEvent::Revoked { partition, .. }) => {
                            owned.lock().unwrap().remove(&partition);
                        }
                        None => break,
                    }
                }
            }
            subscription.close().await;
        });
        Self {
            assigned,
            close: Some(close),
            task,
        }
    }

    /// The partitions this member owns now.
    pub fn partitions(&self) -> BTreeSet<u32> {
        self.assigned.lock().unwrap().clone()
    }

    /// Leaves the group and waits until the backend has finished the revoke.
    pub async fn leave(mut self) {
        if let Some(close) = self.close.take() {
            let _ = close.send(());
        }
        tokio::time::timeout(WAIT, &mut self.task)
            .await
            .expect("member left in time")
            .unwrap();
    }
}

/// Receives `n` records, failing after [`WAIT`].
pub async fn receive(rx: &mut mpsc::UnboundedReceiver<Got>, n: usize) -> Vec<Got> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        match tokio::time::timeout(WAIT, rx.recv()).await {
            Ok(Some(got)) => out.push(got),
            other => panic!("expected {n} records, got {} then {other:?}", out.len()),
        }
    }
    out
}

/// Asserts nothing more arrives within `quiet` (used after everything expected arrived).
pub async fn assert_quiet(rx: &mut mpsc::UnboundedReceiver<Got>, quiet: Duration) {
    if let Ok(Some(extra)) = tokio::time::timeout(quiet, rx.recv()).await {
        panic!("unexpected extra record: {extra:?}");
    }
}

/// Waits until `members` own exactly `sizes` partitions each (and so together cover them).
pub async fn wait_for_partitions(members: &[&Member], sizes: &[usize]) {
    kurir_testkit::wait_for("the group assignment", WAIT, || async {
        let now: Vec<usize> = members.iter().map(|m| m.partitions().len()).collect();
        (now == sizes).then_some(())
    })
    .await
    .unwrap();
}
