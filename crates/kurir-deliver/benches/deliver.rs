//! Delivery throughput benchmark (not a test): messages/s a delivery node moves from the
//! durable embedded queue to local SMTP sinks, next to the machine's ceiling measured in
//! the same run, and how throughput to a slow receiver grows with the connections allowed.
//!
//!     cargo bench -p kurir-deliver --bench deliver                # everything, ~2 minutes
//!     cargo bench -p kurir-deliver --bench deliver -- kurir slow  # some sections only
//!     cargo bench -p kurir-deliver --bench deliver -- kurir 2KB domains=100 in_flight=500
//!
//! Sections (arguments pick some; none means all); `2KB`/`100KB` and `domains=N` narrow
//! the kurir runs, `connections=N` and `in_flight=N` change the node's tuning:
//! - `ceiling`: Postfix's `smtp-source` into Postfix's `smtp-sink` (accepts and discards),
//!   50 sessions reused (`-d`), 2 KB and 100 KB: what this machine's loopback SMTP path
//!   carries with no MTA in the middle. Every kurir row measures it again just before
//!   itself (others' load on a shared machine changes between rows) and compares with
//!   that. CPU time per message is reported for both sides (from /proc: smtp-source,
//!   smtp-sink, this process while the node runs): its ratio is what the throughput ratio
//!   would be with both CPU-bound on an otherwise idle machine, and varies far less.
//! - `kurir`: a [`Deliverer`] on the embedded queue and state in a temp dir (durable, as
//!   shipped: every outcome fsynced), routing by MX through the test kit's DNS server. N
//!   messages (one recipient each) are first published to the mail topic as `Queued`
//!   records, as the submission role would (the generator's rate is reported), then the
//!   node is started and timed until every message has had its first attempt. Delivered
//!   messages/s is the node's `delivered` counter (a recipient counts once its ledger entry
//!   and event are fsynced) over the time from the node's start to the last delivery.
//!   Every recipient domain's MX is the same `smtp-sink` host, so all domains form one site
//!   and share its connection limit.
//! - `spread`: the same with the domains' MX records spread over four `smtp-sink`s (four
//!   sites, each with its own connection limit), 2 KB.
//! - `slow`: the test kit's `SmtpSink` answering every final dot after 50 ms; throughput
//!   for `pool.max_connections` 1, 5, 20 and 50 (about connections × 20/s expected).
//!
//! Needs `smtp-source` and `smtp-sink` (`apt-get install postfix`; scripts/bench-deliver.sh
//! installs them). Loopback only: sinks listen on 127.0.0.x, recipients are `.test`
//! domains, and the resolver asks only the test kit's DNS server.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use kurir_core::{Address, Domain, Envelope, MessageId, Recipient, RoutingKey};
use kurir_deliver::{DeliverConfig, DeliverMetrics, Deliverer};
use kurir_lifecycle::Lifecycle;
use kurir_proto::Queued;
use kurir_queue::embedded::EmbeddedQueue;
use kurir_queue::{OutgoingRecord, Queue, QueueConfig};
use kurir_state::StateConfig;
use kurir_state::embedded::EmbeddedState;
use kurir_testkit::DnsServer;
use kurir_testkit::smtp_sink::{Action, Match, SmtpSink, Stage};

const KB: usize = 1024;
/// `smtp-source` sessions for the ceiling, and kurir's per-site connection limit.
const SESSIONS: u32 = 50;
/// Records a mail-topic partition may have in flight in the node (default 1000): 1,600
/// over the 16 partitions, 2 per connection with one domain (all its mail is in one
/// partition). More only adds waiters; with 10,000 domains 500 per partition start ~8,000
/// MX lookups at once, which overflow the DNS server's UDP receive buffer (lookups time
/// out, messages are deferred).
const IN_FLIGHT: usize = 100;
/// Sinks (and sites) of the `spread` section.
const SPREAD_SINKS: u8 = 4;
/// A case whose messages have not all had their first attempt by then is reported as
/// timed out.
const CASE_LIMIT: Duration = Duration::from_secs(120);
const SENDER: &str = "sender@bench.test";
/// The slow sink's delay before answering the final dot.
const SLOW_DELAY: Duration = Duration::from_millis(50);

/// Sink `n`'s address; every sink listens on the same port (MX hosts are connected on one
/// port, `deliver.dns.mx_port`).
fn sink_ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 10 + n)
}

fn mx_name(n: u8) -> String {
    format!("mx{n}.sink.test")
}

fn domain(n: usize) -> String {
    format!("d{n}.bench.test")
}

fn rate(n: u64, elapsed: Duration) -> f64 {
    n as f64 / elapsed.as_secs_f64()
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("Uid:"))?.to_owned();
            Some(line.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// Where a Postfix tool is: on `PATH`, or in /usr/sbin where Debian puts it (not on a
/// normal user's `PATH`). Exits with a hint when it is not installed.
fn postfix_tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file());
    found.unwrap_or_else(|| {
        writeln!(
            std::io::stderr(),
            "needs Postfix's {name}: apt-get install postfix (scripts/bench-deliver.sh does)"
        )
        .ok();
        std::process::exit(2);
    })
}

/// Postfix's `smtp-sink` on one address: accepts every message and discards it. Killed on
/// drop.
struct PostfixSink {
    child: std::process::Child,
    addr: SocketAddr,
}

impl PostfixSink {
    fn start(ip: Ipv4Addr, port: u16) -> Self {
        let addr = SocketAddr::from((ip, port));
        let mut cmd = std::process::Command::new(postfix_tool("smtp-sink"));
        if is_root() {
            // smtp-sink refuses to run as root without a user to drop to.
            cmd.args(["-u", "nobody"]);
        }
        let mut child = cmd
            .arg(addr.to_string())
            .arg("2000")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn smtp-sink");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("smtp-sink on {addr} exited: {status}");
            }
            assert!(Instant::now() < deadline, "smtp-sink on {addr} not ready");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, addr }
    }
}

impl PostfixSink {
    /// Its CPU time so far.
    fn cpu(&self) -> Duration {
        cpu_times(&self.child.id().to_string()).0
    }
}

fn sinks_cpu(sinks: &[PostfixSink]) -> Duration {
    sinks.iter().map(PostfixSink::cpu).sum()
}

impl Drop for PostfixSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One `smtp-source` run: messages/s over `sessions` reused sessions.
async fn smtp_source(addr: SocketAddr, sessions: u32, messages: u64, size: usize) -> f64 {
    let started = Instant::now();
    let status = tokio::process::Command::new(postfix_tool("smtp-source"))
        .arg("-d")
        .args(["-s", &sessions.to_string()])
        .args(["-m", &messages.to_string()])
        .args(["-l", &size.to_string()])
        .args(["-f", SENDER, "-t", "rcpt@bench.test"])
        .arg(addr.to_string())
        .stdout(Stdio::null())
        .status()
        .await
        .expect("run smtp-source");
    assert!(status.success(), "smtp-source failed: {status}");
    rate(messages, started.elapsed())
}

/// An RFC 5322 message of `size` bytes: a few headers, then 78-byte lines.
fn body(size: usize) -> Bytes {
    let mut m = format!(
        "From: <{SENDER}>\r\nTo: <rcpt@bench.test>\r\nSubject: delivery benchmark\r\n\
         Message-ID: <bench@bench.test>\r\n\r\n"
    )
    .into_bytes();
    while m.len() < size {
        let line = (size - m.len()).clamp(2, 78);
        m.extend(std::iter::repeat_n(b'x', line - 2));
        m.extend_from_slice(b"\r\n");
    }
    Bytes::from(m)
}

/// One queued message to `rcpt`, as submission publishes it (unsharded routing key).
fn record(rcpt: &str, domain: &str, body: &Bytes) -> OutgoingRecord {
    let mut envelope = Envelope::new(Some(Address::parse(SENDER).expect("sender")));
    envelope.recipients = vec![Recipient::new(Address::parse(rcpt).expect("recipient"))];
    let q = Queued {
        id: MessageId::new(),
        tenant: "default".into(),
        routing_key: RoutingKey::new(Domain::parse(domain).expect("domain")),
        envelope,
        attempts: 0,
        first_seen: SystemTime::now(),
        not_before: None,
        trace: None,
        tags: Default::default(),
        body: body.clone(),
    };
    OutgoingRecord::new(q.routing_key.to_string(), q.encode_to_bytes())
}

/// The generator: publishes `n` messages over `domains` domains in batches of 500;
/// returns messages/s (building and encoding included).
async fn generate(
    queue: &EmbeddedQueue,
    topic: &str,
    n: usize,
    domains: usize,
    size: usize,
) -> f64 {
    let body = body(size);
    let started = Instant::now();
    let mut sent = 0;
    while sent < n {
        let batch = (sent..n.min(sent + 500))
            .map(|i| {
                let d = domain(i % domains);
                record(&format!("user{i}@{d}"), &d, &body)
            })
            .collect();
        queue.publish(topic, batch).await.expect("publish");
        sent = n.min(sent + 500);
    }
    rate(n as u64, started.elapsed())
}

/// A delivery config for the bench: the test DNS server only, the sinks' port, a
/// per-site connection limit; everything else as shipped.
fn deliver_config(dns: &DnsServer, port: u16, max_connections: u32) -> DeliverConfig {
    let mut c = DeliverConfig {
        hostname: "mta.bench.test".into(),
        ..DeliverConfig::default()
    };
    c.dns.nameservers = vec![dns.addr()];
    c.dns.mx_port = port;
    c.pool.max_connections = max_connections;
    c
}

/// The node's settings under test; `connections=N` and `in_flight=N` override them.
#[derive(Clone, Copy)]
struct Tuning {
    /// `deliver.pool.max_connections` (per site).
    connections: u32,
    /// `queue.max_in_flight_per_partition`.
    in_flight: usize,
}

/// Outcomes that end a message's first attempt.
const OUTCOMES: [&str; 5] = ["delivered", "deferred", "bounced", "expired", "suppressed"];

/// What one timed delivery run measured.
struct Run {
    generated: f64,
    delivered: u64,
    /// From the node's start to its last delivery (a tail of deferrals waiting for their
    /// timeouts is not counted).
    elapsed: Duration,
    metrics: DeliverMetrics,
    /// UDP datagrams the kernel dropped for full receive buffers during the run (the DNS
    /// server's socket is the only UDP receiver here).
    udp_drops: u64,
    /// CPU time of this process (node, queue and state threads, the DNS server) while the
    /// node ran.
    cpu: Duration,
}

impl Run {
    fn rate(&self) -> f64 {
        rate(self.delivered, self.elapsed)
    }

    /// CPU microseconds per delivered message.
    fn cpu_per_message(&self) -> f64 {
        micros_per(self.cpu, self.delivered)
    }

    /// Anything but a clean run: outcomes other than delivered, a timeout, lost DNS queries.
    fn note(&self, n: usize) -> String {
        let mut out = Vec::new();
        let attempted: u64 = OUTCOMES.iter().map(|o| self.metrics.outcome_count(o)).sum();
        if attempted < n as u64 {
            out.push(format!(
                "timed out after {CASE_LIMIT:?} with {attempted}/{n} attempted"
            ));
        }
        for outcome in &OUTCOMES[1..] {
            let c = self.metrics.outcome_count(outcome);
            if c > 0 {
                out.push(format!("{c} {outcome}"));
            }
        }
        if self.udp_drops > 0 {
            out.push(format!(
                "{} DNS queries dropped (UDP receive buffer full)",
                self.udp_drops
            ));
        }
        out.join("; ")
    }
}

/// CPU time (user + system) from `/proc/<pid>/stat`: the process's own, all threads
/// (exited ones included), and that of the children it has waited for.
fn cpu_times(pid: &str) -> (Duration, Duration) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    // Fields 14-17 (utime, stime, cutime, cstime) in clock ticks; the name ends field 2.
    let f: Vec<u64> = after_name
        .split_whitespace()
        .skip(11)
        .take(4)
        .filter_map(|f| f.parse().ok())
        .collect();
    // CLK_TCK is 100 on Linux.
    let ticks = |a: usize| Duration::from_millis(10 * f.iter().skip(a).take(2).sum::<u64>());
    (ticks(0), ticks(2))
}

fn process_cpu() -> Duration {
    cpu_times("self").0
}

fn micros_per(cpu: Duration, n: u64) -> f64 {
    cpu.as_secs_f64() * 1e6 / n.max(1) as f64
}

/// `RcvbufErrors` of /proc/net/snmp: UDP datagrams dropped because a socket's receive
/// buffer was full (machine-wide).
fn udp_rcvbuf_errors() -> u64 {
    let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// Starts a node and waits until every one of `n` messages has had its first attempt;
/// returns the delivered count and the time of the last delivery.
async fn time_node(
    config: DeliverConfig,
    queue_config: &QueueConfig,
    queue: &EmbeddedQueue,
    state: &EmbeddedState,
    n: u64,
) -> (u64, Duration, DeliverMetrics) {
    let lifecycle = Lifecycle::new();
    let node = Deliverer::new(
        config,
        queue_config,
        Duration::from_secs(2),
        queue.clone(),
        state.clone(),
        lifecycle.clone(),
    )
    .expect("deliverer");
    let metrics = node.metrics().clone();
    let attempted = || {
        OUTCOMES
            .iter()
            .map(|o| metrics.outcome_count(o))
            .sum::<u64>()
    };
    let started = Instant::now();
    let task = tokio::spawn(node.run(Duration::from_secs(10)));
    let (mut delivered, mut last) = (0, started);
    while attempted() < n && started.elapsed() < CASE_LIMIT {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let now = metrics.outcome_count("delivered");
        if now > delivered {
            (delivered, last) = (now, Instant::now());
        }
    }
    let now = metrics.outcome_count("delivered");
    if now > delivered {
        (delivered, last) = (now, Instant::now());
    }
    lifecycle.shutdown();
    task.await.expect("node task").expect("node run");
    (delivered, last - started, metrics)
}

/// Pre-loads `n` messages over `domains` (whose MX records the config's DNS server has)
/// into a fresh embedded queue and state, then times a node delivering them.
async fn deliver(
    config: DeliverConfig,
    tuning: Tuning,
    n: usize,
    domains: usize,
    size: usize,
) -> Run {
    let dir = tempfile::tempdir().expect("tempdir");
    let queue_config = QueueConfig {
        max_in_flight_per_partition: tuning.in_flight,
        ..QueueConfig::default()
    };
    let queue = EmbeddedQueue::open(&dir.path().join("queue"), &queue_config).expect("queue");
    let state =
        EmbeddedState::open(&dir.path().join("state"), &StateConfig::default()).expect("state");
    queue
        .ensure_topics(&queue_config.topic_specs())
        .await
        .expect("topics");
    let topic = queue_config.topics().mail();
    let generated = generate(&queue, &topic, n, domains, size).await;
    let (drops, cpu) = (udp_rcvbuf_errors(), process_cpu());
    let (delivered, elapsed, metrics) =
        time_node(config, &queue_config, &queue, &state, n as u64).await;
    let cpu = process_cpu().saturating_sub(cpu);
    let udp_drops = udp_rcvbuf_errors().saturating_sub(drops);
    queue.close().await;
    state.close().await;
    Run {
        generated,
        delivered,
        elapsed,
        metrics,
        udp_drops,
        cpu,
    }
}

/// A DNS server with `domains` recipient domains whose MX hosts are `sinks` (domain i on
/// sink i mod sinks).
async fn dns_for(domains: usize, sinks: u8) -> DnsServer {
    let dns = DnsServer::start().await.expect("dns");
    for s in 0..sinks {
        dns.add_a(&mx_name(s), sink_ip(s));
    }
    for d in 0..domains {
        dns.add_mx(&domain(d), 10, &mx_name((d % sinks as usize) as u8));
    }
    dns
}

#[derive(Clone, Copy)]
struct Size {
    bytes: usize,
    /// Messages for a kurir run.
    messages: usize,
}

const SIZES: [Size; 2] = [
    Size {
        bytes: 2 * KB,
        messages: 20_000,
    },
    Size {
        bytes: 100 * KB,
        messages: 2_000,
    },
];

fn progress(line: &str) {
    writeln!(std::io::stderr(), "{line}").ok();
}

/// `ceiling`: smtp-source → smtp-sink; returns the table lines and the 2 KB / 100 KB rates.
/// One ceiling measurement: messages/s, and CPU µs per message of smtp-source and
/// smtp-sink together.
async fn ceiling_once(sink: &PostfixSink, size: Size) -> (f64, f64) {
    let before = cpu_times("self").1 + sink.cpu();
    let n = size.messages as u64;
    let rate = smtp_source(sink.addr, SESSIONS, n, size.bytes).await;
    let cpu = (cpu_times("self").1 + sink.cpu()).saturating_sub(before);
    (rate, micros_per(cpu, n))
}

/// `ceiling`: smtp-source → smtp-sink, each size once.
async fn ceiling(sink: &PostfixSink, out: &mut Vec<String>) {
    out.push(
        "| message | sessions | messages | smtp-source → smtp-sink msg/s | CPU µs/msg (source + sink) |"
            .to_owned(),
    );
    out.push("|---|---|---|---|---|".to_owned());
    for size in &SIZES {
        let (rate, cpu) = ceiling_once(sink, *size).await;
        out.push(format!(
            "| {} KB | {SESSIONS} | {} | {rate:.0} | {cpu:.0} |",
            size.bytes / KB,
            size.messages
        ));
        progress(out.last().expect("line"));
    }
}

/// The settings line and the table header of the kurir rows.
fn kurir_header(t: Tuning, out: &mut Vec<String>) {
    out.push(format!(
        "pool.max_connections = {} per site, queue.max_in_flight_per_partition = {}, \
         queue.partitions = 16, pool.max_messages_per_connection = 100 (defaults otherwise)",
        t.connections, t.in_flight
    ));
    out.push(String::new());
    out.push(
        "| message | recipient domains | sites (smtp-sinks) | messages | generator msg/s | ceiling msg/s (just before) | delivered msg/s | delivered / ceiling | CPU µs/msg: ceiling (source + sink) | CPU µs/msg: kurir (node + sink) | ceiling CPU / kurir CPU | notes |"
            .to_owned(),
    );
    out.push("|---|---|---|---|---|---|---|---|---|---|---|---|".to_owned());
}

/// `kurir` and `spread`: delivered messages/s for 1, 100 and 10,000 recipient domains.
/// `kurir` and `spread`: delivered messages/s for 1, 100 and 10,000 recipient domains
/// over the first `n_sinks` sinks, each row after a ceiling measurement of its own (the
/// machine is shared: what else runs changes between rows).
async fn kurir(sinks: &[PostfixSink], n_sinks: u8, filter: &Filter, out: &mut Vec<String>) {
    let tuning = filter.tuning();
    let sinks = &sinks[..n_sinks as usize];
    let port = sinks[0].addr.port();
    // Spread over sinks: 2 KB only, and not one domain (which is one site whatever its MX).
    let spread = n_sinks > 1;
    for size in SIZES.iter().filter(|s| filter.size(**s)) {
        for domains in [1, 100, 10_000] {
            if (spread && (domains == 1 || size.bytes > 2 * KB)) || !filter.domains(domains) {
                continue;
            }
            let (ceiling, ceiling_cpu) = ceiling_once(&sinks[0], *size).await;
            let dns = dns_for(domains, n_sinks).await;
            let config = deliver_config(&dns, port, tuning.connections);
            let before = sinks_cpu(sinks);
            let run = deliver(config, tuning, size.messages, domains, size.bytes).await;
            let sink_cpu = micros_per(sinks_cpu(sinks).saturating_sub(before), run.delivered);
            let kurir_cpu = run.cpu_per_message() + sink_cpu;
            out.push(format!(
                "| {} KB | {domains} | {n_sinks} | {} | {:.0} | {ceiling:.0} | {:.0} | {:.0}% | {ceiling_cpu:.0} | {kurir_cpu:.0} ({:.0} + {sink_cpu:.0}) | {:.0}% | {} |",
                size.bytes / KB,
                size.messages,
                run.generated,
                run.rate(),
                100.0 * run.rate() / ceiling,
                run.cpu_per_message(),
                100.0 * ceiling_cpu / kurir_cpu,
                run.note(size.messages),
            ));
            progress(out.last().expect("line"));
        }
    }
}

/// `slow`: a sink that takes 50 ms per message, for several connection limits.
async fn slow(filter: &Filter, out: &mut Vec<String>) {
    out.push(
        "| pool.max_connections | messages | delivered msg/s | expected (connections × 20/s) | most connections open at the sink | notes |"
            .to_owned(),
    );
    out.push("|---|---|---|---|---|---|".to_owned());
    for max_connections in [1_u32, 5, 20, 50] {
        let port = kurir_testkit::free_port();
        let sink = SmtpSink::builder()
            .ip(sink_ip(0))
            .port(port)
            .hostname(mx_name(0))
            .start()
            .await
            .expect("sink");
        sink.on(Match::Any, Stage::DataEnd, Action::Delay(SLOW_DELAY));
        let dns = dns_for(100, 1).await;
        // About four seconds of work at the expected rate.
        let n = (max_connections * 80) as usize;
        let tuning = Tuning {
            connections: max_connections,
            ..filter.tuning()
        };
        let config = deliver_config(&dns, port, max_connections);
        let run = deliver(config, tuning, n, 100, 2 * KB).await;
        out.push(format!(
            "| {max_connections} | {n} | {:.0} | {} | {} | {} |",
            run.rate(),
            max_connections * 20,
            sink.max_concurrent_connections(),
            run.note(n),
        ));
        progress(out.last().expect("line"));
    }
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("model name"))?.to_owned();
            Some(line.split_once(':')?.1.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let date = time::OffsetDateTime::now_utc().date();
    format!("Machine: {cpus} CPUs, {model}; {date}")
}

/// What the arguments select: sections, and optionally message sizes (`2KB`, `100KB`) and
/// domain counts (`domains=100`) of the kurir runs, and the node's tuning
/// (`connections=50`, `in_flight=500`).
struct Filter {
    args: Vec<String>,
}

impl Filter {
    fn section(&self, name: &str) -> bool {
        let sections = ["ceiling", "kurir", "spread", "slow"];
        !self.args.iter().any(|a| sections.contains(&a.as_str()))
            || self.args.iter().any(|a| a == name)
    }

    fn size(&self, size: Size) -> bool {
        let words: Vec<_> = self.args.iter().filter(|a| a.ends_with("KB")).collect();
        words.is_empty()
            || words
                .iter()
                .any(|w| **w == format!("{}KB", size.bytes / KB))
    }

    fn domains(&self, n: usize) -> bool {
        let counts: Vec<_> = self
            .args
            .iter()
            .filter_map(|a| a.strip_prefix("domains="))
            .collect();
        counts.is_empty() || counts.iter().any(|c| c.parse() == Ok(n))
    }

    fn number(&self, key: &str) -> Option<usize> {
        self.args.iter().find_map(|a| {
            let v = a.strip_prefix(key)?.strip_prefix('=')?;
            Some(
                v.parse()
                    .unwrap_or_else(|_| panic!("{key}={v}: not a number")),
            )
        })
    }

    fn tuning(&self) -> Tuning {
        Tuning {
            connections: self.number("connections").map_or(SESSIONS, |n| n as u32),
            in_flight: self.number("in_flight").unwrap_or(IN_FLIGHT),
        }
    }
}

#[tokio::main]
async fn main() {
    // The node logs what the binary would at `warn`; RUST_LOG=info adds a line per outcome.
    kurir_telemetry::init_tracing(&kurir_telemetry::LogConfig {
        level: "warn".into(),
        ..Default::default()
    })
    .expect("tracing");
    let filter = Filter {
        args: std::env::args()
            .skip(1)
            .filter(|a| !a.starts_with('-'))
            .collect(),
    };
    let want = |s: &str| filter.section(s);
    postfix_tool("smtp-sink");
    postfix_tool("smtp-source");
    let mut out = vec![machine(), String::new()];

    let port = kurir_testkit::free_port();
    let sinks: Vec<PostfixSink> = (0..SPREAD_SINKS)
        .map(|n| PostfixSink::start(sink_ip(n), port))
        .collect();
    if want("ceiling") {
        ceiling(&sinks[0], &mut out).await;
        out.push(String::new());
    }
    if want("kurir") || want("spread") {
        kurir_header(filter.tuning(), &mut out);
    }
    if want("kurir") {
        kurir(&sinks, 1, &filter, &mut out).await;
    }
    if want("spread") {
        kurir(&sinks, SPREAD_SINKS, &filter, &mut out).await;
    }
    drop(sinks);
    if want("slow") {
        out.push(String::new());
        slow(&filter, &mut out).await;
    }
    let mut stdout = std::io::stdout().lock();
    for line in out {
        writeln!(stdout, "{line}").ok();
    }
}
