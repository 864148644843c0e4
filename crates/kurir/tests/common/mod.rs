//! Shared by the binary's test files: running `kurir` (a clean environment, its announced
//! addresses, readiness, exit), configs on free ports, and the loopback peers (DNS server,
//! SMTP sink, optionally Kafka and Redis) the delivery role is pointed at.

// Each test file uses a different part.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub(crate) const KURIR: &str = env!("CARGO_BIN_EXE_kurir");
pub(crate) const TIMEOUT: Duration = Duration::from_secs(20);
pub(crate) const POLL: Duration = Duration::from_millis(25);

/// `kurir` with a clean environment: no inherited KURIR__ overrides or RUST_LOG.
pub(crate) fn kurir() -> Command {
    let mut command = Command::new(KURIR);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("KURIR") || name == "RUST_LOG" {
            command.env_remove(name);
        }
    }
    command
}

/// Kills the child if the test fails before it exits.
pub(crate) struct Running(pub(crate) Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("kurir.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// The child's stdout lines, as they come.
pub(crate) fn stdout_lines(child: &mut Child) -> mpsc::Receiver<String> {
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
pub(crate) fn announced(lines: &mpsc::Receiver<String>, prefix: &str) -> SocketAddr {
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

/// A config for `serve` on free ports (gRPC too, without keys) with its data in `dir`.
pub(crate) fn serve_config(dir: &Path, extra: &str) -> PathBuf {
    serve_config_with_grpc(dir, "listen = \"127.0.0.1:0\"\n", extra)
}

/// Like [`serve_config`] with `grpc` as the body of the `[grpc]` table.
pub(crate) fn serve_config_with_grpc(dir: &Path, grpc: &str, extra: &str) -> PathBuf {
    let text = format!(
        "[node]\ndata_dir = \"{}\"\n[http]\nlisten = \"127.0.0.1:0\"\n[lifecycle]\ngrace_period = \"5s\"\n\
         [smtp]\nlisteners = [{{ address = \"127.0.0.1:0\", mode = \"plain\" }}]\n[grpc]\n{grpc}{extra}",
        dir.join("data").display()
    );
    write_config(dir, &text)
}

/// A key with the suppression and admin services, tenant `default`.
pub(crate) const ADMIN_KEY: &str = "kurir-test-admin-key-6b1f0c9e2d4a7358";
/// A key with the submission service only, tenant `default`.
pub(crate) const SUBMIT_KEY: &str = "kurir-test-submit-key-93e5a7c1f0b2d846";

/// The `[grpc]` body for a free port and [`ADMIN_KEY`] and [`SUBMIT_KEY`] (their
/// `printf %s "$KEY" | sha256sum`).
pub(crate) fn grpc_with_keys() -> String {
    "listen = \"127.0.0.1:0\"\napi_keys = [\n\
     { name = \"ops\", sha256 = \"b8069c4ea8c72c9b9d7db19ffb7f7ee8b51b0932f7bf951351e45995df79d4a9\", \
       tenant = \"default\", services = [\"suppression\", \"admin\"] },\n\
     { name = \"app\", sha256 = \"e434d7e0144a93bc4dd526cb485563be3cb32645292be58f4b2ef092e5593ab1\", \
       tenant = \"default\", services = [\"submission\"] },\n]\n"
        .to_owned()
}

/// Status code of `GET path`, or `None` if the endpoint is not answering.
pub(crate) fn get(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).ok()?;
    reply.split(' ').nth(1)?.parse().ok()
}

pub(crate) fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(POLL);
    }
}

pub(crate) fn wait_for_exit(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "kurir did not exit");
        std::thread::sleep(POLL);
    }
}

/// A DNS server and an SMTP sink on loopback for the delivery role of a `kurir` child, on
/// a runtime of the test's own.
pub(crate) struct Peers {
    pub(crate) runtime: tokio::runtime::Runtime,
    pub(crate) dns: kurir_testkit::DnsServer,
    pub(crate) sink: kurir_testkit::SmtpSink,
    /// For the cluster form: the Kafka-API broker and redis-server.
    pub(crate) cluster: Option<(kurir_testkit::KafkaBroker, kurir_testkit::RedisServer)>,
}

impl Peers {
    /// `domains` get MX records pointing at a sink on 127.0.0.2 that takes `delay` per
    /// message.
    pub(crate) fn start(domains: &[&str], delay: Duration) -> Self {
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
    pub(crate) fn with_cluster(mut self) -> Self {
        let cluster = self.runtime.block_on(async {
            let broker = kurir_testkit::KafkaBroker::start().await.expect("broker");
            let redis = kurir_testkit::RedisServer::start().await.expect("redis");
            (broker, redis)
        });
        self.cluster = Some(cluster);
        self
    }

    /// The `[deliver]` section pointing the node at these peers.
    pub(crate) fn deliver_config(&self) -> String {
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
    pub(crate) fn received(&self) -> std::collections::HashMap<String, usize> {
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

/// `kurir serve --role <roles>` with `config`, once ready; returns it and its SMTP port.
pub(crate) fn start_serve(config: &Path, roles: &str) -> (Running, u16) {
    let node = Node::start(config, roles, false);
    (node.process, node.smtp.port())
}

/// A running `kurir serve` and the addresses it announced.
pub(crate) struct Node {
    pub(crate) process: Running,
    pub(crate) http: SocketAddr,
    pub(crate) smtp: SocketAddr,
    /// With the submit role and `[grpc]` enabled.
    pub(crate) grpc: Option<SocketAddr>,
    /// The stdout lines after the ones read so far.
    pub(crate) lines: mpsc::Receiver<String>,
}

impl Node {
    /// `kurir serve --role <roles>` with `config`, once ready; `grpc`: wait for the
    /// `grpc listening on` line too.
    pub(crate) fn start(config: &Path, roles: &str, grpc: bool) -> Self {
        let child = kurir()
            .args(["serve", "--role", roles, "--config"])
            .arg(config)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn kurir");
        let mut process = Running(child);
        let lines = stdout_lines(&mut process.0);
        let http = announced(&lines, kurir::serve::HTTP_LISTENING);
        let smtp = announced(&lines, kurir::roles::SMTP_LISTENING);
        let grpc = grpc.then(|| announced(&lines, kurir::roles::GRPC_LISTENING));
        wait_until("/readyz 200", || get(http, "/readyz") == Some(200));
        Self {
            process,
            http,
            smtp,
            grpc,
            lines,
        }
    }

    /// The gRPC API's URL.
    pub(crate) fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc.expect("the node serves gRPC"))
    }

    /// `kurir admin <args>` against this node with `key` (through the environment).
    pub(crate) fn admin(&self, key: &str, args: &[&str]) -> Output {
        kurir()
            .arg("admin")
            .args(args)
            .env("KURIR_GRPC_URL", self.grpc_url())
            .env("KURIR_API_KEY", key)
            .output()
            .expect("run kurir admin")
    }

    /// `kurir admin <args>` with [`ADMIN_KEY`], which must succeed; returns its stdout.
    pub(crate) fn admin_ok(&self, args: &[&str]) -> String {
        let output = self.admin(ADMIN_KEY, args);
        assert!(
            output.status.success(),
            "kurir admin {args:?}: {:?}\nstderr: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("utf-8")
    }

    /// SIGTERM, then waits for the exit; returns the stdout lines not read before.
    pub(crate) fn stop(mut self) -> (ExitStatus, Vec<String>) {
        let kill = Command::new("kill")
            .args(["-TERM", &self.process.0.id().to_string()])
            .status();
        assert!(kill.expect("run kill").success());
        let status = wait_for_exit(&mut self.process.0);
        // The reader thread ends at EOF, which the exit brings.
        let rest = self.lines.iter().collect();
        (status, rest)
    }
}

/// The one stderr line of a failed command, checked to be exactly one.
pub(crate) fn one_error_line(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected: {stderr}");
    lines[0].to_owned()
}
