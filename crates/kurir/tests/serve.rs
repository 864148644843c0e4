//! The real `kurir` binary: `serve` comes up, reports ready, and exits 0 on SIGTERM;
//! `config check` / `config example` behave as documented.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const KURIR: &str = env!("CARGO_BIN_EXE_kurir");
const TIMEOUT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(25);

/// `kurir` with a clean environment: no inherited KURIR__ overrides or RUST_LOG.
fn kurir() -> Command {
    let mut command = Command::new(KURIR);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("KURIR") || name == "RUST_LOG" {
            command.env_remove(name);
        }
    }
    command
}

/// Kills the child if the test fails before it exits.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn write_config(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("kurir.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// The child's stdout lines, as they come.
fn stdout_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}

/// Waits for the stdout line `<prefix>ADDR` and returns the address.
fn announced(lines: &mpsc::Receiver<String>, prefix: &str) -> SocketAddr {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no `{prefix}` line"));
        if let Some(addr) = line.strip_prefix(prefix) {
            return addr.parse().expect("address");
        }
    }
}

/// A config for `serve` on free ports with its data in `dir`.
fn serve_config(dir: &Path, extra: &str) -> std::path::PathBuf {
    let text = format!(
        "[node]\ndata_dir = \"{}\"\n[http]\nlisten = \"127.0.0.1:0\"\n[lifecycle]\ngrace_period = \"5s\"\n\
         [smtp]\nlisteners = [{{ address = \"127.0.0.1:0\", mode = \"plain\" }}]\n{extra}",
        dir.join("data").display()
    );
    write_config(dir, &text)
}

/// Status code of `GET path`, or `None` if the endpoint is not answering.
fn get(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).ok()?;
    reply.split(' ').nth(1)?.parse().ok()
}

fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(POLL);
    }
}

fn wait_for_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "kurir did not exit");
        std::thread::sleep(POLL);
    }
}

#[test]
fn serve_becomes_ready_and_exits_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = serve_config(dir.path(), "");
    let child = kurir()
        .args(["serve", "--role", "submit,deliver", "--config"])
        .arg(&config)
        .env("KURIR__NODE__ID", "serve-test")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kurir");
    let mut running = Running(child);
    let lines = stdout_lines(&mut running.0);
    let addr = announced(&lines, kurir::serve::HTTP_LISTENING);

    wait_until("/healthz 200", || get(addr, "/healthz") == Some(200));
    wait_until("/readyz 200", || get(addr, "/readyz") == Some(200));
    assert_eq!(get(addr, "/nope"), Some(404));
    assert_eq!(get(addr, "/metrics"), Some(200));

    let pid = running.0.id().to_string();
    let kill = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("run kill");
    assert!(kill.success());
    let status = wait_for_exit(&mut running.0);
    let mut stderr = String::new();
    if let Some(mut pipe) = running.0.stderr.take() {
        pipe.read_to_string(&mut stderr).expect("read stderr");
    }
    assert!(
        status.success(),
        "exit status {status:?}; stderr:\n{stderr}"
    );
    assert!(stderr.contains("SIGTERM"), "stderr:\n{stderr}");
    assert!(stderr.contains("drain complete"), "stderr:\n{stderr}");
    assert!(
        get(addr, "/healthz").is_none(),
        "endpoint closed after exit"
    );
}

fn check(config_text: Option<&str>, env: &[(&str, &str)]) -> Output {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut command = kurir();
    command.args(["config", "check"]);
    if let Some(text) = config_text {
        command.arg("--config").arg(write_config(dir.path(), text));
    }
    command
        .envs(env.iter().copied())
        .output()
        .expect("run kurir")
}

#[test]
fn config_check_accepts_a_good_config() {
    let output = check(Some("[http]\nlisten = \"0.0.0.0:9090\"\n"), &[]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "ok\n");
    assert!(check(None, &[]).status.success(), "defaults are valid");
}

/// Config text, environment, expected start of the error.
type Case = (
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static str,
);

#[test]
fn config_check_rejects_bad_configs_naming_the_key_with_exit_2() {
    let cases: [Case; 4] = [
        (
            "[http]\nlisten = \"127.0.0.1:0\"\ncolour = true\n",
            &[],
            "config error at http.colour: unknown field `colour`",
        ),
        (
            "[lifecycle]\ngrace_period = 30\n",
            &[],
            "config error at lifecycle.grace_period: invalid type",
        ),
        (
            "",
            &[("KURIR__HTTP__LISTEN", "localhost")],
            "config error in environment variable KURIR__HTTP__LISTEN: http.listen",
        ),
        (
            "",
            &[("KURIR__LOG__LEVEL", "chatty")],
            "config error in environment variable KURIR__LOG__LEVEL: log.level",
        ),
    ];
    for (text, env, expected) in cases {
        let output = check(Some(text), env);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{text:?} {env:?}: {stderr}");
        assert!(stderr.contains(expected), "{text:?} {env:?}: {stderr}");
        assert!(output.stdout.is_empty());
    }
}

#[test]
fn serve_with_a_bad_config_exits_2_before_binding() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_config(dir.path(), "[http]\nlisten = \"127.0.0.1:0\"\nport = 1\n");
    let output = kurir()
        .args(["serve", "--config"])
        .arg(config)
        .output()
        .expect("run kurir");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("http.port"));
    assert!(!String::from_utf8_lossy(&output.stdout).contains("http listening"));
}

#[test]
fn config_example_prints_the_documented_file() {
    let output = kurir()
        .args(["config", "example"])
        .output()
        .expect("run kurir");
    assert!(output.status.success());
    let documented = include_str!("../../../docs/kurir.example.toml");
    assert_eq!(String::from_utf8_lossy(&output.stdout), documented);
}

/// Sends one message with Python's smtplib; returns the final reply to DATA.
fn send_with_smtplib(port: u16) -> String {
    let script = format!(
        r#"
import smtplib
s = smtplib.SMTP("127.0.0.1", {port}, timeout=10)
s.ehlo("client.test")
s.mail("sender@sender.test")
for rcpt in ("a@one.test", "b@two.test"):
    code, _ = s.rcpt(rcpt)
    assert code == 250, code
code, reply = s.data(b"Subject: e2e\r\nFrom: sender@sender.test\r\n\r\nhello through kurir\r\n")
print(code, reply.decode())
s.quit()
"#
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// Every record in the embedded queue's mail topic, decoded.
fn queued_messages(data_dir: &Path, expected: usize) -> Vec<kurir_proto::Queued> {
    use kurir_queue::{PartitionEvent, Queue};
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let config = kurir_queue::QueueConfig::default();
        let queue = kurir_queue::embedded::EmbeddedQueue::open(&data_dir.join("queue"), &config)
            .expect("the queue reopens after kurir exited");
        let mut subscription = queue
            .subscribe("check", &["kurir.mail".to_owned()])
            .await
            .expect("subscribe");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for _ in 0..config.partitions {
            let Some(PartitionEvent::Assigned(mut stream)) = subscription.next_event().await else {
                panic!("assignment")
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                while let Some(record) = stream.next().await {
                    let _ = tx
                        .send(kurir_proto::Queued::decode(record.value.clone()).expect("decodes"));
                    record.ack.done();
                }
            });
        }
        let mut out = Vec::new();
        while out.len() < expected {
            out.push(
                tokio::time::timeout(TIMEOUT, rx.recv())
                    .await
                    .expect("records")
                    .expect("open"),
            );
        }
        subscription.close().await;
        queue.close().await;
        out
    })
}

#[test]
fn serve_accepts_mail_over_smtp_and_queues_it_durably() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Submission only: a delivery role would consume the records this test reads back.
    let (mut running, port) = start_serve(&serve_config(dir.path(), ""), "submit");

    let reply = send_with_smtplib(port);
    let id = reply.trim().rsplit(' ').next().expect("an id").to_owned();
    assert!(
        reply.starts_with("250 ") && reply.contains("queued as"),
        "{reply}"
    );

    let kill = Command::new("kill")
        .args(["-TERM", &running.0.id().to_string()])
        .status();
    assert!(kill.expect("run kill").success());
    assert!(wait_for_exit(&mut running.0).success());

    // One record per recipient domain, both durable after the drain and restart.
    let mut queued = queued_messages(&dir.path().join("data"), 2);
    queued.sort_by_key(|q| q.routing_key.to_string());
    let keys: Vec<String> = queued.iter().map(|q| q.routing_key.to_string()).collect();
    assert_eq!(keys, ["one.test", "two.test"]);
    for q in &queued {
        assert_eq!(q.id.to_string(), id);
        assert_eq!(
            q.envelope
                .sender
                .as_ref()
                .map(ToString::to_string)
                .as_deref(),
            Some("sender@sender.test")
        );
        let body = String::from_utf8_lossy(&q.body);
        assert!(body.starts_with("Received: from client.test"), "{body}");
        assert!(
            body.contains("Message-ID: <") && body.ends_with("hello through kurir\r\n"),
            "{body}"
        );
    }
}

/// A DNS server and an SMTP sink on loopback for the delivery role of a `kurir` child, on
/// a runtime of the test's own.
struct Peers {
    runtime: tokio::runtime::Runtime,
    dns: kurir_testkit::DnsServer,
    sink: kurir_testkit::SmtpSink,
    /// For the cluster form: the Kafka-API broker and redis-server.
    cluster: Option<(kurir_testkit::KafkaBroker, kurir_testkit::RedisServer)>,
}

impl Peers {
    /// `domains` get MX records pointing at a sink on 127.0.0.2 that takes `delay` per
    /// message.
    fn start(domains: &[&str], delay: Duration) -> Self {
        use kurir_testkit::smtp_sink::{Action, Match, Stage};
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let port = kurir_testkit::free_port();
        let (dns, sink) = runtime.block_on(async {
            let dns = kurir_testkit::DnsServer::start().await.expect("dns");
            let sink = kurir_testkit::SmtpSink::builder()
                .ip(std::net::Ipv4Addr::new(127, 0, 0, 2))
                .port(port)
                .hostname("mx.sink.test")
                .start()
                .await
                .expect("sink");
            (dns, sink)
        });
        dns.add_a("mx.sink.test", std::net::Ipv4Addr::new(127, 0, 0, 2));
        for d in domains {
            dns.add_mx(d, 10, "mx.sink.test");
        }
        if !delay.is_zero() {
            sink.on(Match::Any, Stage::DataEnd, Action::Delay(delay));
        }
        Self {
            runtime,
            dns,
            sink,
            cluster: None,
        }
    }

    /// Adds a Kafka-API broker (Tansu) and redis-server for the cluster form.
    fn with_cluster(mut self) -> Self {
        let cluster = self.runtime.block_on(async {
            let broker = kurir_testkit::KafkaBroker::start().await.expect("broker");
            let redis = kurir_testkit::RedisServer::start().await.expect("redis");
            (broker, redis)
        });
        self.cluster = Some(cluster);
        self
    }

    /// The `[deliver]` section pointing the node at these peers.
    fn deliver_config(&self) -> String {
        let mut text = format!(
            "[deliver]\nhostname = \"mta.kurir.test\"\n[deliver.dns]\nnameservers = [\"{}\"]\nmx_port = {}\n\
             [deliver.pool]\nmax_connections = 4\n",
            self.dns.addr(),
            self.sink.port()
        );
        if let Some((broker, redis)) = &self.cluster {
            // Tansu 0.6 needs one record per batch (see kurir_testkit::kafka); a short
            // session so the restarted node gets the partitions of the killed one soon.
            text.push_str(&format!(
                "[queue]\nbackend = \"kafka\"\ndrain_timeout = \"2s\"\n[queue.kafka]\nbrokers = \"{}\"\n\
                 session_timeout = \"6s\"\nproperties = {{ \"batch.num.messages\" = \"1\" }}\n\
                 [state]\nbackend = \"redis\"\n[state.redis]\nurl = \"{}\"\n",
                broker.bootstrap_servers(),
                redis.url()
            ));
        }
        text
    }

    /// Accepted recipients at the sink, with how often each arrived.
    fn received(&self) -> std::collections::HashMap<String, usize> {
        let _guard = self.runtime.enter();
        let mut seen = std::collections::HashMap::new();
        for t in self.sink.transactions() {
            for r in t.accepted_rcpts() {
                *seen.entry(r.to_owned()).or_insert(0) += 1;
            }
        }
        seen
    }
}

/// Sends `n` messages (recipient `u<i>@<domain>`) over one smtplib session.
fn send_many_with_smtplib(port: u16, n: usize, domains: &[&str]) {
    let domains: Vec<String> = domains.iter().map(|d| format!("\"{d}\"")).collect();
    let script = format!(
        r#"
import smtplib
domains = [{domains}]
s = smtplib.SMTP("127.0.0.1", {port}, timeout=30)
s.ehlo("client.test")
for i in range({n}):
    rcpt = "u%d@%s" % (i, domains[i % len(domains)])
    s.sendmail("sender@sender.test", [rcpt], b"Subject: m%d\r\n\r\nbody\r\n" % i)
s.quit()
"#,
        domains = domains.join(",")
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `kurir serve --role <roles>` with `config`, once ready; returns it and its SMTP port.
fn start_serve(config: &Path, roles: &str) -> (Running, u16) {
    let child = kurir()
        .args(["serve", "--role", roles, "--config"])
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn kurir");
    let mut running = Running(child);
    let lines = stdout_lines(&mut running.0);
    let http = announced(&lines, kurir::serve::HTTP_LISTENING);
    let smtp = announced(&lines, kurir::roles::SMTP_LISTENING);
    wait_until("/readyz 200", || get(http, "/readyz") == Some(200));
    (running, smtp.port())
}

#[test]
fn serve_delivers_smtp_mail_to_the_recipients_mx() {
    let domains = ["one.test", "two.test"];
    let peers = Peers::start(&domains, Duration::ZERO);
    let dir = tempfile::tempdir().expect("temp dir");
    let config = serve_config(dir.path(), &peers.deliver_config());
    let (mut running, port) = start_serve(&config, "all");

    let reply = send_with_smtplib(port);
    assert!(reply.starts_with("250 "), "{reply}");
    wait_until("both recipients delivered", || peers.received().len() == 2);
    let received = peers.received();
    assert_eq!(received.get("a@one.test"), Some(&1));
    assert_eq!(received.get("b@two.test"), Some(&1));
    let body = {
        let _guard = peers.runtime.enter();
        peers.sink.transactions()[0].body_text()
    };
    assert!(body.starts_with("Received: from client.test"), "{body}");
    assert!(body.contains("hello through kurir"), "{body}");

    let kill = Command::new("kill")
        .args(["-TERM", &running.0.id().to_string()])
        .status();
    assert!(kill.expect("run kill").success());
    assert!(wait_for_exit(&mut running.0).success());
}

/// A node killed with SIGKILL while delivering: after a restart every message is
/// delivered; duplicates are possible only for transactions the receiver had accepted
/// when the process died (at most the connections in flight, 4).
#[test]
fn delivery_survives_sigkill_with_every_message_delivered_embedded() {
    survives_sigkill(false);
}

/// The same on Kafka (Tansu) and Redis.
#[test]
fn delivery_survives_sigkill_with_every_message_delivered_cluster() {
    survives_sigkill(true);
}

fn survives_sigkill(cluster: bool) {
    const N: usize = 200;
    let domains = ["k0.test", "k1.test", "k2.test", "k3.test"];
    let mut peers = Peers::start(&domains, Duration::from_millis(100));
    if cluster {
        peers = peers.with_cluster();
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let config = serve_config(dir.path(), &peers.deliver_config());
    let (mut running, port) = start_serve(&config, "all");

    send_many_with_smtplib(port, N, &domains);
    wait_until("some deliveries", || peers.received().len() >= 30);
    let kill = Command::new("kill")
        .args(["-KILL", &running.0.id().to_string()])
        .status();
    assert!(kill.expect("run kill").success());
    let _ = wait_for_exit(&mut running.0);
    let before = peers.received().len();
    assert!(before < N, "the kill came too late to test anything");

    let (mut running, _) = start_serve(&config, "all");
    let deadline = Instant::now() + Duration::from_secs(90);
    while peers.received().len() < N {
        assert!(
            Instant::now() < deadline,
            "only {} of {N} delivered after the restart",
            peers.received().len()
        );
        std::thread::sleep(POLL);
    }
    let received = peers.received();
    let duplicates: usize = received.values().map(|c| c - 1).sum();
    eprintln!("delivered {N} after SIGKILL at {before}: {duplicates} duplicates");
    assert_eq!(received.len(), N);
    assert!(
        duplicates <= 4,
        "{duplicates} duplicates: more than the connections in flight"
    );
    let kill = Command::new("kill")
        .args(["-TERM", &running.0.id().to_string()])
        .status();
    assert!(kill.expect("run kill").success());
    assert!(wait_for_exit(&mut running.0).success());
}
