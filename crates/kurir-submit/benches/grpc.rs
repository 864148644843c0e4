//! gRPC submission throughput and latency (not a test): 2 KB raw messages through
//! `kurir.v1.SubmissionService` into the durable embedded queue, as shipped.
//!
//!     cargo bench -p kurir-submit --bench grpc                  # every case
//!     cargo bench -p kurir-submit --bench grpc -- unary stream  # only some kinds
//!     cargo bench -p kurir-submit --bench grpc -- paced 9000    # paced at a given rate
//!
//! Kinds (all by default): `unary` (1, 16 and 64 concurrent callers on one channel),
//! `stream` (one stream, default `grpc.stream_window` 64), `windows` (one stream with
//! windows 256 and 1024), `streams` (four streams, one connection each), `idem` (one
//! stream, each request with its own idempotency key), `paced` (one stream on a fixed
//! schedule at half the rate `stream` reached, or at the rate given).
//!
//! Each case starts a fresh [`GrpcServer`] on 127.0.0.1:0 with an embedded queue (default
//! `[queue]`: 16 mail partitions, group commit, fsync before every acknowledgement) and an
//! embedded state in a temp dir, warms it with 500 messages, then measures. The server has
//! its own tokio runtime (default size: one worker per core, as `kurir serve`) and the
//! clients another (two workers), so that server and clients are apart as in two processes;
//! both share the machine's cores. Nothing consumes the queue.
//!
//! Latency is per message: from handing the request to tonic (unary: the call; stream: the
//! moment tonic takes it from the request stream) to receiving its response. The paced
//! case sends on a fixed schedule and reports the achieved rate next to the offered one.
//!
//! The machine is shared: each row shows how many of the cores this bench kept busy
//! (server and clients together) and how many other processes took meanwhile (from
//! /proc/stat), next to the load average before and after. Below the table, the CPU time
//! of each thread group (from /proc/self/task) per message: where the cores went.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use hdrhistogram::Histogram;
use kurir_lifecycle::Lifecycle;
use kurir_proto::v1;
use kurir_proto::v1::submission_service_client::SubmissionServiceClient;
use kurir_queue::embedded::EmbeddedQueue;
use kurir_queue::{Queue, QueueConfig};
use kurir_state::StateConfig;
use kurir_state::embedded::EmbeddedState;
use kurir_submit::grpc::server::GrpcError;
use kurir_submit::grpc::{
    AdminHooks, ApiKeyConfig, ApiService, GrpcConfig, GrpcServer, api_key_sha256,
};
use kurir_submit::publish::{PublishConfig, Publisher};
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;
use tonic::Request;
use tonic::transport::{Channel, Endpoint};

/// The bench's API key (only its SHA-256 is configured).
const KEY: &str = "kurir-bench-submit-2c5e8a9b7d1f4e36";
const TENANT: &str = "default";
/// Size of the raw message (header and body) before normalisation.
const MESSAGE_BYTES: usize = 2048;
const WARMUP: u64 = 500;

/// A 2 KB message as an application would send it: no Message-ID or Date (kurir adds
/// them), one recipient over 100 domains (so records spread over the partitions).
fn request(i: u64, idempotent: bool) -> v1::SubmitRequest {
    let rcpt = format!("rcpt{i}@dest{}.test", i % 100);
    let mut data = format!(
        "From: Shop <app@shop.test>\r\nTo: <{rcpt}>\r\nSubject: Your order {i}\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    )
    .into_bytes();
    let line = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod.\r\n";
    while data.len() + line.len() <= MESSAGE_BYTES {
        data.extend_from_slice(line);
    }
    data.resize(MESSAGE_BYTES - 2, b'x');
    data.extend_from_slice(b"\r\n");
    v1::SubmitRequest {
        client_id: i.to_string(),
        idempotency_key: if idempotent {
            format!("bench-{i}-{}", std::process::id())
        } else {
            String::new()
        },
        message: Some(v1::submit_request::Message::Raw(v1::RawMessage {
            envelope_from: "bounces@shop.test".into(),
            envelope_to: vec![rcpt],
            data,
        })),
        tags: Default::default(),
    }
}

fn authed<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {KEY}").parse().expect("ascii"),
    );
    request
}

/// A running server and what it runs on.
struct Server {
    addr: SocketAddr,
    lifecycle: Lifecycle,
    task: JoinHandle<Result<(), GrpcError>>,
    queue: EmbeddedQueue,
    state: EmbeddedState,
    _dir: tempfile::TempDir,
}

fn start(rt: &Runtime, window: usize) -> Server {
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let queue_config = QueueConfig::default();
        let queue = EmbeddedQueue::open(&dir.path().join("queue"), &queue_config).expect("queue");
        let state =
            EmbeddedState::open(&dir.path().join("state"), &StateConfig::default()).expect("state");
        queue
            .ensure_topics(&queue_config.topic_specs())
            .await
            .expect("topics");
        let topics = queue_config.topics();
        let publisher = Publisher::new(
            queue.clone(),
            PublishConfig {
                hostname: "bench.kurir.test".into(),
                topic: topics.mail(),
                ack_timeout: Duration::from_secs(10),
                shards: BTreeMap::new(),
            },
        );
        let hooks = AdminHooks {
            sites: None,
            delivery: queue_config.delivery_subscriptions("kurir-deliver")[..1].to_vec(),
            topic_specs: queue_config.topic_specs(),
            max_age: Duration::from_secs(5 * 86_400),
        };
        let config = GrpcConfig {
            listen: "127.0.0.1:0".parse().expect("address"),
            api_keys: vec![ApiKeyConfig {
                name: "bench".into(),
                sha256: api_key_sha256(KEY),
                tenant: TENANT.into(),
                services: vec![ApiService::Submission],
                rate_per_second: 0.0,
            }],
            stream_window: window,
            ..GrpcConfig::default()
        };
        let lifecycle = Lifecycle::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let server = GrpcServer::new(
            config,
            publisher,
            queue.clone(),
            state.clone(),
            hooks,
            lifecycle.clone(),
        )
        .expect("server");
        let task = tokio::spawn(server.serve(listener));
        Server {
            addr,
            lifecycle,
            task,
            queue,
            state,
            _dir: dir,
        }
    })
}

fn stop(rt: &Runtime, server: Server) {
    rt.block_on(async {
        server.lifecycle.shutdown();
        let _ = tokio::time::timeout(Duration::from_secs(30), server.task).await;
        server.queue.close().await;
        server.state.close().await;
    });
}

async fn client(addr: SocketAddr) -> SubmissionServiceClient<Channel> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .tcp_nodelay(true)
        .connect()
        .await
        .expect("connect");
    SubmissionServiceClient::new(channel)
}

fn histogram() -> Histogram<u64> {
    // Microseconds, 1 µs to 60 s, 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram")
}

fn check(response: &v1::SubmitResponse) {
    assert!(
        response.error.is_none() && !response.message_id.is_empty(),
        "{response:?}"
    );
}

/// `callers` concurrent unary callers on one channel, `messages` in all.
async fn unary(addr: SocketAddr, callers: u64, messages: u64) -> Histogram<u64> {
    let client = client(addr).await;
    let tasks: Vec<_> = (0..callers)
        .map(|c| {
            let mut client = client.clone();
            tokio::spawn(async move {
                let mut h = histogram();
                for i in (c..messages).step_by(callers as usize) {
                    let request = authed(request(i, false));
                    let sent = Instant::now();
                    let response = client.submit(request).await.expect("submit");
                    h.saturating_record(sent.elapsed().as_micros() as u64);
                    check(response.get_ref());
                }
                h
            })
        })
        .collect();
    let mut all = histogram();
    for task in tasks {
        all.add(task.await.expect("caller")).expect("merge");
    }
    all
}

/// One stream with `messages` requests, each taken by tonic as soon as it has room for it
/// (`interval` None) or on a fixed schedule.
async fn stream(
    addr: SocketAddr,
    messages: u64,
    interval: Option<Duration>,
    idempotent: bool,
) -> (Histogram<u64>, Vec<Histogram<u64>>) {
    let mut client = client(addr).await;
    let base = Instant::now();
    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..messages).map(|_| AtomicU64::new(0)).collect());
    let stamp = {
        let sent = sent.clone();
        move |i: u64| sent[i as usize].store(base.elapsed().as_nanos() as u64, Ordering::Relaxed)
    };
    let mut responses = match interval {
        None => {
            let requests = futures::stream::iter(0..messages).map(move |i| {
                let r = request(i, idempotent);
                stamp(i);
                r
            });
            client.submit_stream(authed(requests)).await
        }
        Some(interval) => {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            tokio::spawn(async move {
                let start = tokio::time::Instant::now();
                for i in 0..messages {
                    let due = start + interval * i as u32;
                    if due > tokio::time::Instant::now() {
                        tokio::time::sleep_until(due).await;
                    }
                    let r = request(i, idempotent);
                    stamp(i);
                    if tx.send(r).is_err() {
                        return;
                    }
                }
            });
            let requests = tokio_stream::wrappers::UnboundedReceiverStream::new(rx);
            client.submit_stream(authed(requests)).await
        }
    }
    .expect("submit_stream")
    .into_inner();
    let mut h = histogram();
    // By the second (since the stream began) each request was sent in.
    let mut by_second: Vec<Histogram<u64>> = Vec::new();
    let mut answered = 0;
    while let Some(response) = responses.message().await.expect("stream") {
        let now = base.elapsed().as_nanos() as u64;
        check(&response);
        let i: usize = response.client_id.parse().expect("client id");
        let sent_at = sent[i].load(Ordering::Relaxed);
        let latency = now.saturating_sub(sent_at) / 1000;
        h.saturating_record(latency);
        let second = (sent_at / 1_000_000_000) as usize;
        while by_second.len() <= second {
            by_second.push(histogram());
        }
        by_second[second].saturating_record(latency);
        answered += 1;
    }
    assert_eq!(answered, messages, "every request answered");
    (h, by_second)
}

/// `streams` streams (each on its own connection), `messages` in all.
async fn streams(addr: SocketAddr, streams: u64, messages: u64) -> Histogram<u64> {
    let tasks: Vec<_> = (0..streams)
        .map(|_| tokio::spawn(stream(addr, messages / streams, None, false)))
        .collect();
    let mut all = histogram();
    for task in tasks {
        all.add(task.await.expect("stream").0).expect("merge");
    }
    all
}

/// CPU time (clock ticks) of each thread of this process, by thread id, with its name
/// (digits and trailing `-` dropped: tokio names every thread of a runtime alike).
fn cpu_by_thread() -> BTreeMap<u32, (String, u64)> {
    let mut out = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for task in tasks.flatten() {
        let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ...: utime and stime are fields 14 and 15, 12th and 13th after ")".
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name: String = stat[open + 1..close]
            .trim_end_matches(|c: char| c.is_ascii_digit() || c == '-' || c == '.')
            .to_owned();
        let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
        let ticks = fields
            .get(11)
            .and_then(|u| u.parse::<u64>().ok())
            .unwrap_or(0)
            + fields
                .get(12)
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0);
        out.insert(tid, (name, ticks));
    }
    out
}

/// CPU ticks used between two snapshots, by thread name (threads that ended in between are
/// missed).
fn cpu_between(
    before: &BTreeMap<u32, (String, u64)>,
    after: BTreeMap<u32, (String, u64)>,
) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for (tid, (name, ticks)) in after {
        let earlier = before.get(&tid).map_or(0, |(_, t)| *t);
        *out.entry(name).or_default() += ticks.saturating_sub(earlier);
    }
    out.retain(|_, ticks| *ticks > 0);
    out
}

/// Busy CPU ticks of the whole machine (/proc/stat) and of this process: the difference
/// over a case is what other processes took from the two cores meanwhile.
fn busy_ticks() -> (u64, u64) {
    let machine = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|stat| {
            let line = stat.lines().next()?.to_owned();
            let v: Vec<u64> = line
                .split_whitespace()
                .skip(1)
                .filter_map(|f| f.parse().ok())
                .collect();
            // user nice system idle iowait irq softirq steal
            Some(v.iter().take(8).sum::<u64>() - v.get(3)? - v.get(4)?)
        })
        .unwrap_or(0);
    let own = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| {
            let fields: Vec<u64> = stat[stat.rfind(')')? + 2..]
                .split(' ')
                .skip(11)
                .take(2)
                .filter_map(|f| f.parse().ok())
                .collect();
            Some(fields.iter().sum())
        })
        .unwrap_or(0);
    (machine, own)
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split(' ').next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

#[derive(Clone, Copy)]
enum Kind {
    Unary { callers: u64 },
    Streams { streams: u64 },
    Idempotent,
    Paced { rate: u64 },
}

struct Case {
    kind: Kind,
    window: usize,
    messages: u64,
}

struct Row {
    mode: String,
    concurrency: String,
    window: usize,
    messages: u64,
    offered: Option<u64>,
    rate: f64,
    latency: Histogram<u64>,
    /// Paced cases: latency by the second the requests were sent in.
    by_second: Vec<Histogram<u64>>,
    cpu: BTreeMap<String, u64>,
    load_before: String,
    load_after: String,
    own_cores: f64,
    other_cores: f64,
}

fn run(server_rt: &Runtime, client_rt: &Runtime, case: &Case) -> Row {
    let server = start(server_rt, case.window);
    let addr = server.addr;
    client_rt.block_on(stream(addr, WARMUP, None, false));
    let mut by_second = Vec::new();
    let load_before = load();
    let cpu_before = cpu_by_thread();
    let busy_before = busy_ticks();
    let started = Instant::now();
    let latency = client_rt.block_on(async {
        match case.kind {
            Kind::Unary { callers } => unary(addr, callers, case.messages).await,
            Kind::Streams { streams: 1 } => stream(addr, case.messages, None, false).await.0,
            Kind::Streams { streams: n } => streams(addr, n, case.messages).await,
            Kind::Idempotent => stream(addr, case.messages, None, true).await.0,
            Kind::Paced { rate } => {
                let interval = Duration::from_secs_f64(1.0 / rate as f64);
                let (all, seconds) = stream(addr, case.messages, Some(interval), false).await;
                by_second = seconds;
                all
            }
        }
    });
    let elapsed = started.elapsed();
    let cpu_after = cpu_by_thread();
    let busy_after = busy_ticks();
    let load_after = load();
    stop(server_rt, server);
    let cpu = cpu_between(&cpu_before, cpu_after);
    let (mode, concurrency, offered) = match case.kind {
        Kind::Unary { callers } => ("unary", format!("{callers} callers"), None),
        Kind::Streams { streams } => (
            "stream",
            format!("{streams} stream{}", if streams == 1 { "" } else { "s" }),
            None,
        ),
        Kind::Idempotent => ("stream, idempotency keys", "1 stream".into(), None),
        Kind::Paced { rate } => ("stream, paced", "1 stream".into(), Some(rate)),
    };
    Row {
        mode: mode.to_string(),
        concurrency,
        window: case.window,
        messages: case.messages,
        offered,
        rate: case.messages as f64 / elapsed.as_secs_f64(),
        latency,
        by_second,
        cpu,
        load_before,
        load_after,
        // Cores (of 2) busy with this bench and with everything else, on average.
        own_cores: (busy_after.1 - busy_before.1) as f64 / 100.0 / elapsed.as_secs_f64(),
        other_cores: (busy_after.0.saturating_sub(busy_before.0))
            .saturating_sub(busy_after.1 - busy_before.1) as f64
            / 100.0
            / elapsed.as_secs_f64(),
    }
}

fn ms(h: &Histogram<u64>, q: f64) -> String {
    format!("{:.2}", h.value_at_quantile(q) as f64 / 1000.0)
}

fn print_row(out: &mut impl Write, r: &Row) {
    let offered = r.offered.map_or("max".into(), |o| o.to_string());
    writeln!(
        out,
        "| {} | {} | {} | {} | {offered} | {:.0} | {} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {} → {} |",
        r.mode,
        r.concurrency,
        r.window,
        r.messages,
        r.rate,
        ms(&r.latency, 0.5),
        ms(&r.latency, 0.9),
        ms(&r.latency, 0.99),
        ms(&r.latency, 0.999),
        r.latency.max() as f64 / 1000.0,
        r.own_cores,
        r.other_cores,
        r.load_before,
        r.load_after,
    )
    .ok();
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let named: Vec<&String> = args.iter().filter(|a| a.parse::<u64>().is_err()).collect();
    let wanted = |kind: &str| named.is_empty() || named.iter().any(|a| *a == kind);
    let paced_rate: Option<u64> = args.iter().find_map(|a| a.parse().ok());

    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("server")
        .build()
        .expect("server runtime");
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("client")
        .build()
        .expect("client runtime");

    let case = |kind, window, messages| Case {
        kind,
        window,
        messages,
    };
    let one = Kind::Streams { streams: 1 };
    let mut cases = Vec::new();
    if wanted("unary") {
        for (callers, messages) in [(1, 3_000), (16, 20_000), (64, 20_000)] {
            cases.push(case(Kind::Unary { callers }, 64, messages));
        }
    }
    if wanted("stream") {
        cases.push(case(one, 64, 50_000));
    }
    if wanted("windows") {
        cases.push(case(one, 256, 50_000));
        cases.push(case(one, 1024, 50_000));
    }
    if wanted("streams") {
        cases.push(case(Kind::Streams { streams: 4 }, 64, 50_000));
    }
    if wanted("idem") {
        cases.push(case(Kind::Idempotent, 64, 20_000));
    }

    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "| mode | concurrency | stream_window | messages | offered msg/s | achieved msg/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | bench cores | other cores | load (1 min) |"
    )
    .ok();
    writeln!(
        out,
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    )
    .ok();
    let mut rows = Vec::new();
    for case in &cases {
        let row = run(&server_rt, &client_rt, case);
        print_row(&mut out, &row);
        out.flush().ok();
        rows.push(row);
    }
    if wanted("paced") {
        // Half of what one stream reached with the default window (shipped), unless given.
        let max = rows
            .iter()
            .find(|r| r.concurrency == "1 stream" && r.window == 64)
            .map(|r| r.rate as u64);
        match paced_rate.or(max.map(|m| m / 2)) {
            None => {
                writeln!(out, "(paced: give a rate, or run `stream` too)").ok();
            }
            Some(rate) => {
                // About 12 seconds on the schedule.
                let paced = case(Kind::Paced { rate }, 64, (rate * 12).max(1_000));
                let row = run(&server_rt, &client_rt, &paced);
                print_row(&mut out, &row);
                out.flush().ok();
                rows.push(row);
            }
        }
    }

    // Where the CPU went: µs of CPU per message, by thread group.
    let groups: Vec<String> = rows
        .iter()
        .flat_map(|r| r.cpu.keys().cloned())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    writeln!(out).ok();
    writeln!(
        out,
        "CPU µs per message by thread name (from /proc, 10 ms ticks; threads a thread spawns \
         without a name of their own carry its name):"
    )
    .ok();
    writeln!(out).ok();
    writeln!(out, "| case | {} | total |", groups.join(" | ")).ok();
    writeln!(out, "|---|{}---:|", "---:|".repeat(groups.len())).ok();
    for r in &rows {
        let per = |ticks: u64| ticks as f64 * 10_000.0 / r.messages as f64;
        let cells: Vec<String> = groups
            .iter()
            .map(|g| format!("{:.0}", per(r.cpu.get(g).copied().unwrap_or(0))))
            .collect();
        writeln!(
            out,
            "| {}, {}, window {} | {} | {:.0} |",
            r.mode,
            r.concurrency,
            r.window,
            cells.join(" | "),
            per(r.cpu.values().sum())
        )
        .ok();
    }

    // Paced cases over time: are the slow messages spread out or bunched together?
    for r in rows.iter().filter(|r| !r.by_second.is_empty()) {
        writeln!(out).ok();
        writeln!(
            out,
            "{}, {} msg/s offered: p50 / p99 / max ms by the second the requests were sent in:",
            r.mode,
            r.offered.unwrap_or(0)
        )
        .ok();
        let cells: Vec<String> = r
            .by_second
            .iter()
            .map(|h| {
                format!(
                    "{} / {} / {:.1}",
                    ms(h, 0.5),
                    ms(h, 0.99),
                    h.max() as f64 / 1000.0
                )
            })
            .collect();
        writeln!(out, "{}", cells.join(" · ")).ok();
    }
}
