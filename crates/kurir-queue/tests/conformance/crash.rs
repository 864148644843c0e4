//! Embedded only: a node killed with SIGKILL at an arbitrary moment loses nothing it had
//! acknowledged as durable.
//!
//! The test re-runs its own test binary as a child that publishes from several concurrent
//! publishers and prints every value once its publish returned `Ok`. The parent kills the
//! child with SIGKILL mid-stream, reopens the store, and checks every printed value is there.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use kurir_queue::embedded::EmbeddedQueue;
use kurir_queue::{OutgoingRecord, PartitionEvent, Queue, QueueConfig, TopicSpec};

const CHILD_DIR: &str = "KURIR_CRASH_CHILD_DIR";
const PUBLISHERS: usize = 8;
/// Acknowledged values to see before the kill.
const KILL_AFTER: usize = 3000;

/// The child: publishes until killed. Does nothing in a normal test run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_until_killed() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let queue = EmbeddedQueue::open(dir.as_ref(), &QueueConfig::default()).unwrap();
    let topic = TopicSpec {
        name: "kurir.mail".into(),
        partitions: 4,
    };
    queue.ensure_topics(&[topic]).await.unwrap();
    let tasks = (0..PUBLISHERS).map(|p| {
        let queue = queue.clone();
        tokio::spawn(async move {
            for i in 0.. {
                let value = format!("p{p}-{i}");
                let record = OutgoingRecord::new(format!("d{}.test", i % 13), value.clone());
                queue.publish("kurir.mail", vec![record]).await.unwrap();
                writeln!(std::io::stdout().lock(), "acked {value}").unwrap();
            }
        })
    });
    futures::future::join_all(tasks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_survives_sigkill_with_nothing_acknowledged_lost() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "crash::publish_until_killed",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut acked = BTreeSet::new();
        let mut killed = false;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(value) = line.strip_prefix("acked ") {
                acked.insert(value.to_owned());
            }
            if !killed && acked.len() >= KILL_AFTER {
                killed = true;
                // SIGKILL while publishers are mid-flight; lines already written still count.
                let _ = Command::new("kill")
                    .args(["-KILL", &child.id().to_string()])
                    .status();
            }
        }
        let _ = child.wait();
        acked
    });
    let acked = tokio::task::spawn_blocking(move || reader.join().unwrap())
        .await
        .unwrap();
    assert!(
        acked.len() >= KILL_AFTER,
        "child stopped early after {} acks",
        acked.len()
    );

    let queue = EmbeddedQueue::open(dir.path(), &QueueConfig::default()).unwrap();
    let stored = read_everything(&queue).await;
    let missing: Vec<_> = acked.difference(&stored).take(5).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged records lost, e.g. {missing:?}",
        acked.difference(&stored).count()
    );
    queue.close().await;
}

/// Every value in the topic, read through a consumer group.
async fn read_everything(queue: &EmbeddedQueue) -> BTreeSet<String> {
    let end: u64 = queue
        .lag("reader", "kurir.mail")
        .await
        .unwrap()
        .iter()
        .map(|l| l.end)
        .sum();
    let mut subscription = queue
        .subscribe("reader", &["kurir.mail".to_owned()])
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for _ in 0..4 {
        let Some(PartitionEvent::Assigned(mut stream)) = subscription.next_event().await else {
            panic!("expected an assignment")
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(record) = stream.next().await {
                let _ = tx.send(String::from_utf8_lossy(&record.value).into_owned());
                record.ack.done();
            }
        });
    }
    let mut values = BTreeSet::new();
    while (values.len() as u64) < end {
        match tokio::time::timeout(Duration::from_secs(30), rx.recv()).await {
            Ok(Some(v)) => drop(values.insert(v)),
            _ => break,
        }
    }
    subscription.close().await;
    values
}
