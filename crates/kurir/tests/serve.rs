//! The real `kurir` binary: `serve` comes up, reports ready, and exits 0 on SIGTERM;
//! `config check` / `config example` behave as documented.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

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
    use kurir_queue::Queue;
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let config = kurir_queue::QueueConfig::default();
        let queue = kurir_queue::embedded::EmbeddedQueue::open(&data_dir.join("queue"), &config)
            .expect("the queue reopens after kurir exited");
        let mut records = queue
            .subscribe("check", &["kurir.mail".to_owned()])
            .await
            .expect("subscribe")
            .all_records();
        let mut out = Vec::new();
        while out.len() < expected {
            let record = tokio::time::timeout(TIMEOUT, records.next())
                .await
                .expect("records")
                .expect("open");
            out.push(kurir_proto::Queued::decode(record.value).expect("decodes"));
        }
        records.close().await;
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
/// and whose ledger entry was not yet on disk when the process died. A connection goes
/// back to the pool as soon as its transaction ends, while the ledger write waits for its
/// fsync, so each of the 4 connections can hold two such messages: the one at the
/// receiver and the one before it (seen under CI load: 8; 4 on a quiet machine).
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
        duplicates <= 2 * 4,
        "{duplicates} duplicates: more than two per connection (4)"
    );
    let kill = Command::new("kill")
        .args(["-TERM", &running.0.id().to_string()])
        .status();
    assert!(kill.expect("run kill").success());
    assert!(wait_for_exit(&mut running.0).success());

    // Every recipient has a DELIVERED event, the ones whose first event the kill may have
    // cut off included (a replay makes it again, marked).
    let recipients: Vec<String> = (0..N)
        .map(|i| format!("u{i}@{}", domains[i % domains.len()]))
        .collect();
    let replayed = peers
        .runtime
        .block_on(delivered_events(&config, &recipients));
    eprintln!("{replayed} replayed DELIVERED events read");
}

/// Reads the events topic of the (stopped) node `config` describes, in a consumer group of
/// its own, until every one of `recipients` has a DELIVERED event (at most 30 s); returns
/// how many of the DELIVERED events read were replays.
async fn delivered_events(config: &Path, recipients: &[String]) -> usize {
    use kurir::config::Config;
    use kurir_queue::config::Backend;
    let config = Config::load(Some(config), std::iter::empty()).expect("the config");
    let topic = config.queue.topics().events();
    match config.queue.backend {
        Backend::Embedded => {
            let dir = config.embedded_queue_dir();
            let queue = kurir_queue::embedded::EmbeddedQueue::open(&dir, &config.queue)
                .expect("the node's queue");
            read_delivered(queue, topic, recipients).await
        }
        Backend::Kafka => {
            let queue = kurir_queue::kafka::KafkaQueue::connect(&config.queue).expect("kafka");
            read_delivered(queue, topic, recipients).await
        }
    }
}

async fn read_delivered<Q: kurir_queue::Queue>(
    queue: Q,
    topic: String,
    recipients: &[String],
) -> usize {
    use kurir_proto::v1::{Event, Outcome};
    let mut missing: std::collections::HashSet<&str> =
        recipients.iter().map(String::as_str).collect();
    let mut replayed = 0;
    let mut records = queue
        .subscribe("test-events", &[topic])
        .await
        .expect("subscribe")
        .all_records();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !missing.is_empty() {
        tokio::select! {
            record = records.next() => match record {
                Some(record) => {
                    let event = Event::decode_bytes(record.value).expect("an event");
                    if event.outcome() == Outcome::Delivered {
                        missing.remove(event.recipient.as_str());
                        replayed += usize::from(event.replayed);
                    }
                }
                None => break,
            },
            () = tokio::time::sleep_until(deadline) => break,
        }
    }
    records.close().await;
    assert!(
        missing.is_empty(),
        "{} delivered recipients without a DELIVERED event: {:?}",
        missing.len(),
        missing.iter().take(10).collect::<Vec<_>>()
    );
    replayed
}
