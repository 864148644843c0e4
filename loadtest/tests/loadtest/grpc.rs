//! The gRPC sender against a real `GrpcServer` on the embedded queue and state: what the
//! report says was accepted is what was queued, unary and streamed; a bad key fails
//! every message with its status.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kurir_lifecycle::Lifecycle;
use kurir_loadtest::message::{HEADER, RecipientPlan, SizeMix, Stamp};
use kurir_loadtest::send::{GrpcMode, GrpcTarget, SendConfig, SendReport, Transport};
use kurir_proto::Queued;
use kurir_queue::embedded::EmbeddedQueue;
use kurir_queue::{Queue, QueueConfig};
use kurir_state::StateConfig;
use kurir_state::embedded::EmbeddedState;
use kurir_submit::grpc::{
    AdminHooks, ApiKeyConfig, ApiService, GrpcConfig, GrpcServer, api_key_sha256,
};
use kurir_submit::publish::{PublishConfig, Publisher};
use tempfile::TempDir;
use tokio::net::TcpListener;

use crate::common::send;

const KEY: &str = "kurir-loadtest-test-key-5d1e8a0c";

/// A running server and the mail records queued so far.
struct Server {
    addr: SocketAddr,
    lifecycle: Lifecycle,
    queued: Arc<Mutex<Vec<Queued>>>,
    _dir: TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.lifecycle.shutdown();
    }
}

async fn server() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let queue_config = QueueConfig {
        partitions: 2,
        retry_partitions: 1,
        events_partitions: 1,
        ..QueueConfig::default()
    };
    let queue = EmbeddedQueue::open(&dir.path().join("queue"), &queue_config).unwrap();
    queue
        .ensure_topics(&queue_config.topic_specs())
        .await
        .unwrap();
    let state = EmbeddedState::open(&dir.path().join("state"), &StateConfig::default()).unwrap();
    let topics = queue_config.topics();
    let publisher = Publisher::new(
        queue.clone(),
        PublishConfig {
            hostname: "grpc.load.test".into(),
            topic: topics.mail(),
            ack_timeout: Duration::from_secs(10),
            shards: Default::default(),
        },
    );
    let grpc = GrpcConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        api_keys: vec![ApiKeyConfig {
            name: "loadtest".into(),
            sha256: api_key_sha256(KEY),
            tenant: "default".into(),
            services: vec![ApiService::Submission],
            rate_per_second: 0.0,
        }],
        ..GrpcConfig::default()
    };
    let hooks = AdminHooks {
        sites: None,
        delivery: queue_config.delivery_subscriptions("kurir-deliver")[..1].to_vec(),
        topic_specs: queue_config.topic_specs(),
        max_age: Duration::from_secs(3600),
    };
    let lifecycle = Lifecycle::new();
    let server = GrpcServer::new(
        grpc,
        publisher,
        queue.clone(),
        state,
        hooks,
        lifecycle.clone(),
    )
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(server.serve(listener));
    let queued = Arc::new(Mutex::new(Vec::new()));
    tokio::spawn(collect(queue, topics.mail(), queued.clone()));
    Server {
        addr,
        lifecycle,
        queued,
        _dir: dir,
    }
}

/// Collects every mail record in a consumer group of the test's own.
async fn collect(queue: EmbeddedQueue, topic: String, queued: Arc<Mutex<Vec<Queued>>>) {
    let subscription = queue.subscribe("loadtest-test", &[topic]).await.unwrap();
    let mut records = subscription.all_records();
    while let Some(record) = records.next().await {
        let message = Queued::decode(record.value).unwrap();
        queued.lock().unwrap().push(message);
    }
}

fn grpc_load(server: &Server, mode: GrpcMode, key: &str, messages: u64) -> SendConfig {
    SendConfig {
        transport: Transport::Grpc(GrpcTarget {
            url: format!("http://{}", server.addr),
            api_key: Some(key.into()),
            mode,
            window: 16,
            timeout: Duration::from_secs(10),
        }),
        connections: 2,
        rate: None,
        messages: Some(messages),
        duration: None,
        sizes: SizeMix::fixed(2048),
        recipients: RecipientPlan {
            per_message: 2,
            domains: 4,
            ..RecipientPlan::default()
        },
        from: "loadtest@sender.load.test".into(),
        run_id: format!("grpc-{mode:?}"),
        messages_per_connection: 100,
    }
}

/// Waits (at most 20 s) until the queued records hold `n` distinct messages of `run_id`;
/// returns their numbers and the records.
async fn queued_run(server: &Server, run_id: &str, n: usize) -> (HashSet<u64>, usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut poll = tokio::time::interval(Duration::from_millis(20));
    loop {
        poll.tick().await;
        let records: Vec<Queued> = server.queued.lock().unwrap().clone();
        let mut seqs = HashSet::new();
        let mut count = 0;
        for record in &records {
            let Some(stamp) = stamp_of(&record.body) else {
                continue;
            };
            if stamp.run_id == run_id {
                seqs.insert(stamp.seq);
                count += 1;
            }
        }
        if seqs.len() >= n || tokio::time::Instant::now() >= deadline {
            return (seqs, count);
        }
    }
}

fn stamp_of(body: &[u8]) -> Option<Stamp> {
    let text = std::str::from_utf8(body).ok()?;
    let line = text.lines().find(|l| l.starts_with(HEADER))?;
    Stamp::parse(&line[HEADER.len() + 1..])
}

fn assert_all_accepted(report: &SendReport, messages: u64) {
    assert_eq!(report.messages, messages, "{report}");
    assert_eq!((report.accepted, report.failed), (messages, 0), "{report}");
    assert_eq!(report.recipients_accepted, 2 * messages, "{report}");
    assert_eq!(report.accept_latency.count, messages, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_and_streamed_reports_match_what_was_queued() {
    let server = server().await;
    for (mode, n) in [(GrpcMode::Unary, 60), (GrpcMode::Stream, 200)] {
        let config = grpc_load(&server, mode, KEY, n);
        let report = send(&config).await;
        assert_all_accepted(&report, n);
        let (seqs, records) = queued_run(&server, &config.run_id, n as usize).await;
        assert_eq!(seqs, (0..n).collect::<HashSet<u64>>(), "{mode:?}");
        // Two recipients in two domains: one record per domain, each with the header.
        assert_eq!(records, 2 * n as usize, "{mode:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_fails_every_message_with_its_status() {
    let server = server().await;
    for mode in [GrpcMode::Unary, GrpcMode::Stream] {
        let report = send(&grpc_load(&server, mode, "not-the-key", 10)).await;
        assert_eq!(report.accepted, 0, "{report}");
        assert_eq!(
            report.errors.get("grpc UNAUTHENTICATED"),
            Some(&report.failed),
            "{report}"
        );
        assert!(report.failed >= 1, "{report}");
    }
}
