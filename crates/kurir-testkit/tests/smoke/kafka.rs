//! KafkaBroker: produce and consume through the real broker with librdkafka: a consumer
//! group of two splits the partitions, takes over when one member leaves, and a consumer
//! started later resumes from the committed offsets.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use kurir_testkit::{KafkaBroker, wait_for};
use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

const TOPIC: &str = "kurir.smoke";
const PARTITIONS: i32 = 4;
const GROUP: &str = "kurir-smoke";
const WAIT: Duration = Duration::from_secs(60);

/// One record as a consumer saw it.
#[derive(Debug, Clone)]
struct Seen {
    consumer: &'static str,
    partition: i32,
    key: String,
    seq: u32,
}

/// A group member that keeps polling (so rebalance callbacks run) and commits each record
/// synchronously after forwarding it, so a clean leave loses and repeats nothing.
struct Member {
    consumer: Arc<StreamConsumer>,
    task: JoinHandle<()>,
}

impl Member {
    fn join(broker: &KafkaBroker, name: &'static str, seen: mpsc::UnboundedSender<Seen>) -> Self {
        let consumer: StreamConsumer = broker
            .client_config()
            .set("group.id", GROUP)
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "500")
            .create()
            .unwrap();
        consumer.subscribe(&[TOPIC]).unwrap();
        let consumer = Arc::new(consumer);
        let polling = consumer.clone();
        let task = tokio::spawn(async move {
            loop {
                let message = polling.recv().await.expect("consume");
                let key = String::from_utf8(message.key().unwrap().to_vec()).unwrap();
                let seq = std::str::from_utf8(message.payload().unwrap())
                    .unwrap()
                    .parse()
                    .unwrap();
                let _ = seen.send(Seen {
                    consumer: name,
                    partition: message.partition(),
                    key,
                    seq,
                });
                polling
                    .commit_message(&message, CommitMode::Sync)
                    .expect("commit");
            }
        });
        Self { consumer, task }
    }

    fn partitions(&self) -> BTreeSet<i32> {
        let list = self.consumer.assignment().unwrap();
        list.elements().iter().map(|e| e.partition()).collect()
    }

    /// Leaves the group cleanly: stop polling, then close (LeaveGroup) by dropping the last
    /// reference.
    async fn leave(self) {
        self.task.abort();
        let _ = self.task.await;
        self.consumer.unsubscribe();
        drop(self.consumer);
    }
}

/// Produces `count` records over 10 keys; the payload is the per-key sequence number.
async fn produce(producer: &FutureProducer, start: u32, count: u32) {
    let sends = (start..start + count).map(|i| {
        let key = format!("domain-{}.test", i % 10);
        let payload = (i / 10).to_string();
        async move {
            let record = FutureRecord::to(TOPIC).key(&key).payload(&payload);
            producer
                .send(record, Duration::from_secs(10))
                .await
                .map_err(|(e, _)| e)
        }
    });
    for result in join_all(sends).await {
        result.expect("broker acknowledged the record");
    }
}

async fn collect(rx: &mut mpsc::UnboundedReceiver<Seen>, n: usize) -> Vec<Seen> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let seen = tokio::time::timeout(WAIT, rx.recv())
            .await
            .expect("records arrive")
            .unwrap();
        out.push(seen);
    }
    out
}

/// Every key's sequence numbers arrive in order.
fn assert_per_key_order(records: &[Seen]) {
    let mut last: BTreeMap<&str, u32> = BTreeMap::new();
    for r in records {
        if let Some(prev) = last.insert(&r.key, r.seq) {
            assert!(r.seq > prev, "key {} went from {prev} to {}", r.key, r.seq);
        }
    }
}

async fn wait_for_assignment(members: &[&Member], want: &[usize]) {
    wait_for("the group to settle", WAIT, || async {
        let sets: Vec<_> = members.iter().map(|m| m.partitions()).collect();
        let sizes: Vec<_> = sets.iter().map(BTreeSet::len).collect();
        let union: BTreeSet<_> = sets.iter().flatten().collect();
        (sizes == want && union.len() == PARTITIONS as usize).then_some(())
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_group_rebalances_and_resumes_offsets() {
    let broker = KafkaBroker::start().await.unwrap();
    broker.create_topic(TOPIC, PARTITIONS).await.unwrap();
    assert_eq!(
        broker.partition_count(TOPIC).await.unwrap(),
        Some(PARTITIONS as usize)
    );
    let producer: FutureProducer = broker
        .client_config()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()
        .unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();

    // Two members split the four partitions between them.
    let a = Member::join(&broker, "a", tx.clone());
    let b = Member::join(&broker, "b", tx.clone());
    wait_for_assignment(&[&a, &b], &[2, 2]).await;
    produce(&producer, 0, 100).await;
    let first = collect(&mut rx, 100).await;
    assert!(first.iter().any(|r| r.consumer == "a") && first.iter().any(|r| r.consumer == "b"));
    for r in &first {
        let owner = if r.consumer == "a" { &a } else { &b };
        assert!(
            owner.partitions().contains(&r.partition),
            "{r:?} read by a non-owner"
        );
    }

    // b leaves: a takes over every partition and gets all new records.
    b.leave().await;
    wait_for_assignment(&[&a], &[PARTITIONS as usize]).await;
    produce(&producer, 100, 100).await;
    let second = collect(&mut rx, 100).await;
    assert!(second.iter().all(|r| r.consumer == "a"));

    // a leaves after committing; records produced meanwhile go to a new member, which
    // resumes at the committed offsets: nothing consumed before is seen again.
    a.leave().await;
    produce(&producer, 200, 50).await;
    let c = Member::join(&broker, "c", tx.clone());
    let third = collect(&mut rx, 50).await;
    assert!(third.iter().all(|r| r.consumer == "c"));
    let extra = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await;
    assert!(extra.is_err(), "no record is delivered twice: {extra:?}");

    let all: Vec<Seen> = first.into_iter().chain(second).chain(third).collect();
    assert_per_key_order(&all);
    let distinct: BTreeSet<(String, u32)> = all.iter().map(|r| (r.key.clone(), r.seq)).collect();
    assert_eq!(distinct.len(), 250, "every record exactly once");
    c.leave().await;
}
