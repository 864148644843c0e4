//! Queue throughput benchmark (not a test): publish and publish→consume throughput for both
//! backends, record sizes 2 KB and 100 KB, 1, 8 and 64 partitions; plus group commit from 50
//! concurrent single-record publishers and memory while a consumer is far behind.
//!
//!     cargo bench -p kurir-queue --bench queue                 # both backends
//!     cargo bench -p kurir-queue --bench queue -- embedded     # one backend
//!
//! Prints a Markdown table for docs/BENCHMARKS.md. The Kafka rows use the test broker
//! (Tansu, in-memory) started by the test kit: they measure kurir's client path against a
//! local broker, not a production Kafka cluster.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kurir_queue::config::Backend;
use kurir_queue::embedded::EmbeddedQueue;
use kurir_queue::kafka::KafkaQueue;
use kurir_queue::{OutgoingRecord, PartitionEvent, Queue, QueueConfig, TopicSpec};

const KB: usize = 1024;

#[derive(Clone, Copy)]
struct Case {
    size: usize,
    partitions: u32,
    records: usize,
}

fn cases(backend: Backend) -> Vec<Case> {
    let scale = if backend == Backend::Kafka { 5 } else { 1 };
    let mut out = Vec::new();
    for partitions in [1, 8, 64] {
        out.push(Case {
            size: 2 * KB,
            partitions,
            records: 100_000 / scale,
        });
        out.push(Case {
            size: 100 * KB,
            partitions,
            records: 4_000 / scale,
        });
    }
    out
}

fn records(n: usize, size: usize, start: usize) -> Vec<OutgoingRecord> {
    let body = Bytes::from(vec![b'x'; size]);
    (start..start + n)
        .map(|i| OutgoingRecord::new(format!("domain-{}.test", i % 997), body.clone()))
        .collect()
}

fn rate(n: usize, elapsed: Duration) -> f64 {
    n as f64 / elapsed.as_secs_f64()
}

/// Publishes `case.records` in batches of 500 from one task.
async fn publish_batches<Q: Queue>(queue: &Q, topic: &str, case: Case) -> f64 {
    let started = Instant::now();
    let mut sent = 0;
    while sent < case.records {
        let n = 500.min(case.records - sent);
        queue
            .publish(topic, records(n, case.size, sent))
            .await
            .expect("publish");
        sent += n;
    }
    rate(sent, started.elapsed())
}

/// 50 concurrent publishers of one record each call (group commit at work).
async fn publish_concurrent<Q: Queue + Clone>(queue: &Q, topic: &str, case: Case) -> f64 {
    let per_task = case.records / 50;
    let started = Instant::now();
    let tasks = (0..50).map(|t| {
        let (queue, topic) = (queue.clone(), topic.to_owned());
        tokio::spawn(async move {
            for i in 0..per_task {
                let record = records(1, case.size, t * per_task + i);
                queue.publish(&topic, record).await.expect("publish");
            }
        })
    });
    futures::future::join_all(tasks).await;
    rate(per_task * 50, started.elapsed())
}

/// Consumes (and acks) `n` records of `topic` as group `group`; returns when all arrived.
async fn consume<Q: Queue>(queue: &Q, group: &str, topic: &str, partitions: u32, n: usize) {
    let mut subscription = queue
        .subscribe(group, &[topic.to_owned()])
        .await
        .expect("subscribe");
    let seen = Arc::new(AtomicU64::new(0));
    let done = Arc::new(tokio::sync::Notify::new());
    for _ in 0..partitions {
        let Some(PartitionEvent::Assigned(mut stream)) = subscription.next_event().await else {
            panic!("assignment")
        };
        let (seen, done) = (seen.clone(), done.clone());
        tokio::spawn(async move {
            while let Some(record) = stream.next().await {
                record.ack.done();
                if seen.fetch_add(1, Ordering::SeqCst) + 1 == n as u64 {
                    done.notify_one();
                }
            }
        });
    }
    if (seen.load(Ordering::SeqCst) as usize) < n {
        tokio::time::timeout(Duration::from_secs(600), done.notified())
            .await
            .expect("consumed in time");
    }
    subscription.close().await;
}

/// Publish→consume: a consumer reads while a publisher publishes in batches.
async fn end_to_end<Q: Queue + Clone>(queue: &Q, topic: &str, case: Case) -> f64 {
    let started = Instant::now();
    let consumer = {
        let (queue, topic) = (queue.clone(), topic.to_owned());
        tokio::spawn(async move {
            consume(&queue, "bench-e2e", &topic, case.partitions, case.records).await
        })
    };
    publish_batches(queue, topic, case).await;
    consumer.await.expect("consumer");
    rate(case.records, started.elapsed())
}

fn rss_mib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
    };
    (
        field("VmRSS:").unwrap_or(0) / 1024,
        field("VmHWM:").unwrap_or(0) / 1024,
    )
}

async fn run_backend<Q: Queue + Clone>(
    name: &str,
    queue: Q,
    backend: Backend,
    out: &mut Vec<String>,
) {
    for (i, case) in cases(backend).into_iter().enumerate() {
        let topics: Vec<String> = (0..3).map(|k| format!("bench.{i}.{k}")).collect();
        let specs: Vec<_> = topics
            .iter()
            .map(|t| TopicSpec {
                name: t.clone(),
                partitions: case.partitions,
            })
            .collect();
        queue.ensure_topics(&specs).await.expect("topics");
        let batch = publish_batches(&queue, &topics[0], case).await;
        let concurrent = publish_concurrent(&queue, &topics[1], case).await;
        let e2e = end_to_end(&queue, &topics[2], case).await;
        let mb = |r: f64| r * case.size as f64 / 1e6;
        let line = format!(
            "| {name} | {} KB | {} | {} | {batch:.0} ({:.0} MB/s) | {concurrent:.0} | {e2e:.0} ({:.0} MB/s) |",
            case.size / KB,
            case.partitions,
            case.records,
            mb(batch),
            mb(e2e)
        );
        writeln!(std::io::stderr(), "{line}").ok();
        out.push(line);
    }
}

/// Memory with a consumer far behind: 400 MB of backlog published, then consumed.
async fn backlog_memory(queue: EmbeddedQueue, out: &mut Vec<String>) {
    let case = Case {
        size: 2 * KB,
        partitions: 8,
        records: 200_000,
    };
    queue
        .ensure_topics(&[TopicSpec {
            name: "bench.backlog".into(),
            partitions: 8,
        }])
        .await
        .expect("topic");
    let (before, _) = rss_mib();
    publish_batches(&queue, "bench.backlog", case).await;
    let (after_publish, _) = rss_mib();
    consume(&queue, "bench-backlog", "bench.backlog", 8, case.records).await;
    let (after_consume, peak) = rss_mib();
    out.push(format!(
        "\nEmbedded backlog of {} × 2 KB ({} MB) with no consumer: RSS {before} MiB before, {after_publish} MiB after publishing, {after_consume} MiB after consuming it all; peak {peak} MiB.",
        case.records, case.records * 2 * KB / 1_000_000
    ));
}

fn config(backend: Backend) -> QueueConfig {
    let mut config = QueueConfig {
        backend,
        ..QueueConfig::default()
    };
    config.kafka.linger = Duration::ZERO;
    config
}

#[tokio::main]
async fn main() {
    let filter = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .unwrap_or_default();
    let mut out = vec![
        "| backend | record | partitions | records | batch publish rec/s | 50 single-record publishers rec/s | publish→consume rec/s |".to_owned(),
        "|---|---|---|---|---|---|---|".to_owned(),
    ];
    if filter.is_empty() || filter == "embedded" {
        let dir = tempfile::tempdir().expect("tempdir");
        let queue = EmbeddedQueue::open(dir.path(), &config(Backend::Embedded)).expect("open");
        run_backend("embedded", queue.clone(), Backend::Embedded, &mut out).await;
        backlog_memory(queue.clone(), &mut out).await;
        queue.close().await;
    }
    if filter.is_empty() || filter == "kafka" {
        let broker = kurir_testkit::KafkaBroker::start().await.expect("tansu");
        let mut config = config(Backend::Kafka);
        config.kafka.brokers = broker.bootstrap_servers();
        let queue = KafkaQueue::connect(&config).expect("connect");
        run_backend("kafka (tansu)", queue, Backend::Kafka, &mut out).await;
    }
    let mut stdout = std::io::stdout().lock();
    for line in out {
        writeln!(stdout, "{line}").ok();
    }
}
