//! A submission server over a real embedded queue and state in a temp dir, in-memory and
//! TCP clients for it, and reading back what was queued.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use kurir_lifecycle::Lifecycle;
use kurir_proto::{Queued, v1};
use kurir_queue::embedded::EmbeddedQueue;
use kurir_queue::{AckedRecord, Queue, QueueConfig, TopicSpec};
use kurir_state::embedded::EmbeddedState;
use kurir_state::{State, StateConfig};
use kurir_submit::publish::{PublishConfig, Publisher};
use kurir_submit::smtp::{ListenerMode, SmtpConfig, SmtpServer, TlsConfig, UserConfig};
use kurir_testkit::TestCa;
use rustls::pki_types::ServerName;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

/// Where TCP tests listen.
pub(crate) const LOOPBACK_0: &str = "127.0.0.1:0";
pub(crate) const TOPIC: &str = "kurir.mail";
/// The events topic next to [`TOPIC`] (same prefix), where the publisher writes events.
pub(crate) const EVENTS_TOPIC: &str = "kurir.events";
pub(crate) const HOSTNAME: &str = "mx.kurir.test";
/// In `relay.allowed_networks` by default.
pub(crate) const LOCAL_PEER: &str = "127.0.0.1:40000";
/// Not in any allowed network (TEST-NET-1).
pub(crate) const REMOTE_PEER: &str = "192.0.2.10:40000";
pub(crate) const USER: &str = "app";
pub(crate) const PASSWORD: &str = "correct horse";
pub(crate) const USER_TENANT: &str = "acme";

/// A cheap argon2id hash (tests only: real hashes use the default, slow parameters).
pub(crate) fn hash(password: &str) -> String {
    let params = Params::new(1024, 1, 1, None).unwrap();
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    let salt = SaltString::from_b64("a3VyaXJ0ZXN0c2FsdA").unwrap();
    argon
        .hash_password(password.as_bytes(), &salt)
        .unwrap()
        .to_string()
}

/// The test config: TLS from a [`TestCa`], one user, short timeouts.
pub(crate) fn config(cert: (PathBuf, PathBuf)) -> SmtpConfig {
    let mut config = SmtpConfig {
        hostname: HOSTNAME.into(),
        tls: Some(TlsConfig {
            cert_file: cert.0,
            key_file: cert.1,
            reload_interval: Duration::from_secs(5),
        }),
        ..SmtpConfig::default()
    };
    config.auth.users.push(UserConfig {
        name: USER.into(),
        password_hash: hash(PASSWORD),
        tenant: USER_TENANT.into(),
    });
    config.limits.max_message_size = 64 * 1024;
    config.limits.max_recipients = 5;
    config.timeouts.command = Duration::from_secs(10);
    config.timeouts.data = Duration::from_secs(10);
    config
}

pub(crate) fn state_config() -> StateConfig {
    StateConfig {
        tenants: vec!["default".into(), USER_TENANT.into()],
        ..StateConfig::default()
    }
}

/// A running server (not yet listening on TCP) over real embedded storage.
pub(crate) struct Harness<St: State + Clone = EmbeddedState> {
    pub(crate) dir: TempDir,
    pub(crate) ca: TestCa,
    pub(crate) queue: EmbeddedQueue,
    pub(crate) state: St,
    pub(crate) lifecycle: Lifecycle,
    pub(crate) server: SmtpServer<EmbeddedQueue, St>,
}

impl Harness<EmbeddedState> {
    pub(crate) async fn start(tweak: impl FnOnce(&mut SmtpConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let state = EmbeddedState::open(&dir.path().join("state"), &state_config()).unwrap();
        Self::with_state(dir, state, tweak).await
    }
}

impl<St: State + Clone> Harness<St> {
    pub(crate) async fn with_state(
        dir: TempDir,
        state: St,
        tweak: impl FnOnce(&mut SmtpConfig),
    ) -> Self {
        let ca = TestCa::new();
        let cert = ca
            .write_cert_and_key(dir.path(), &[HOSTNAME, "localhost", "127.0.0.1"])
            .unwrap();
        let mut config = config(cert);
        tweak(&mut config);
        let queue =
            EmbeddedQueue::open(&dir.path().join("queue"), &QueueConfig::default()).unwrap();
        let specs = [TOPIC, EVENTS_TOPIC].map(|name| TopicSpec {
            name: name.into(),
            partitions: 4,
        });
        queue.ensure_topics(&specs).await.unwrap();
        let publisher = Publisher::new(
            queue.clone(),
            PublishConfig {
                hostname: HOSTNAME.into(),
                topic: TOPIC.into(),
                ack_timeout: Duration::from_secs(10),
                shards: Default::default(),
            },
        );
        let lifecycle = Lifecycle::new();
        let server = SmtpServer::new(config, publisher, state.clone(), lifecycle.clone()).unwrap();
        Self {
            dir,
            ca,
            queue,
            state,
            lifecycle,
            server,
        }
    }

    /// An in-memory connection from `peer` on a `mode` listener.
    pub(crate) fn connect_as(&self, peer: &str, mode: ListenerMode) -> Client {
        let (client, server_io) = tokio::io::duplex(256 * 1024);
        let server = self.server.clone();
        let peer: SocketAddr = peer.parse().unwrap();
        tokio::spawn(async move { server.handle_connection(server_io, peer, mode).await });
        Client::new(Box::new(client))
    }

    /// An in-memory connection whose first bytes were sent before the session started.
    pub(crate) fn connect_preloaded(&self, early: &[u8]) -> Client {
        let (mut client, server_io) = tokio::io::duplex(256 * 1024);
        futures::executor::block_on(client.write_all(early)).unwrap();
        let server = self.server.clone();
        let peer: SocketAddr = LOCAL_PEER.parse().unwrap();
        tokio::spawn(async move {
            server
                .handle_connection(server_io, peer, ListenerMode::Starttls)
                .await
        });
        Client::new(Box::new(client))
    }

    /// An in-memory connection from a local (relay-allowed) peer on a STARTTLS listener.
    pub(crate) fn connect(&self) -> Client {
        self.connect_as(LOCAL_PEER, ListenerMode::Starttls)
    }

    /// Reads `n` records back from the queue (then waits a moment for any extra).
    pub(crate) async fn queued(&self, n: usize) -> Vec<Queued> {
        take_queued(&self.queue, n, Duration::from_secs(30)).await
    }

    /// Reads `n` events back from the events topic (then waits a moment for any extra),
    /// each with its record key.
    pub(crate) async fn events(&self, n: usize) -> Vec<(String, v1::Event)> {
        take(
            &self.queue,
            "test-events",
            EVENTS_TOPIC,
            n,
            Duration::from_secs(30),
            |r| {
                let event = v1::Event::decode_bytes(r.value.clone()).expect("decodes");
                (r.key.clone(), event)
            },
        )
        .await
    }
}

/// Consumes the mail topic until `n` records arrived or `timeout` passed.
pub(crate) async fn take_queued(queue: &EmbeddedQueue, n: usize, timeout: Duration) -> Vec<Queued> {
    take(queue, "test-reader", TOPIC, n, timeout, |r| {
        Queued::decode(r.value.clone()).expect("decodes")
    })
    .await
}

/// Consumes `topic` as consumer group `group` until `n` records arrived or `timeout`
/// passed, decoding each with `decode`.
async fn take<T: Send + 'static>(
    queue: &EmbeddedQueue,
    group: &str,
    topic: &str,
    n: usize,
    timeout: Duration,
    decode: fn(&AckedRecord) -> T,
) -> Vec<T> {
    let mut records = queue
        .subscribe(group, &[topic.to_owned()])
        .await
        .unwrap()
        .all_records();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    while out.len() < n {
        match tokio::time::timeout_at(deadline, records.next()).await {
            Ok(Some(record)) => out.push(decode(&record)),
            _ => break,
        }
    }
    // Anything beyond `n` would be a bug: give it a moment to show up.
    while let Ok(Some(record)) =
        tokio::time::timeout(Duration::from_millis(200), records.next()).await
    {
        out.push(decode(&record));
    }
    records.close().await;
    out
}

pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A line-oriented SMTP client over any stream.
pub(crate) struct Client {
    io: Option<BufReader<Box<dyn Io>>>,
}

impl Client {
    pub(crate) fn new(io: Box<dyn Io>) -> Self {
        Self {
            io: Some(BufReader::new(io)),
        }
    }

    fn io(&mut self) -> &mut BufReader<Box<dyn Io>> {
        self.io.as_mut().expect("connected")
    }

    /// Writes raw bytes.
    pub(crate) async fn send(&mut self, bytes: impl AsRef<[u8]>) {
        let io = self.io();
        io.get_mut().write_all(bytes.as_ref()).await.unwrap();
        io.get_mut().flush().await.unwrap();
    }

    /// Reads one (possibly multi-line) reply: its code and all its text.
    pub(crate) async fn reply(&mut self) -> (u16, String) {
        let mut text = String::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(Duration::from_secs(20), self.io().read_line(&mut line))
                .await
                .expect("reply in time")
                .expect("read");
            assert!(
                n > 0,
                "connection closed while waiting for a reply; got {text:?}"
            );
            text.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] == b' ' {
                let code = line
                    .get(..3)
                    .and_then(|c| c.parse().ok())
                    .expect("reply code");
                return (code, text);
            }
        }
    }

    /// Sends a command line and reads its reply.
    pub(crate) async fn cmd(&mut self, line: &str) -> (u16, String) {
        self.send(format!("{line}\r\n")).await;
        self.reply().await
    }

    /// Sends a command and asserts the reply code; returns the text.
    pub(crate) async fn expect(&mut self, line: &str, code: u16) -> String {
        let (got, text) = self.cmd(line).await;
        assert_eq!(got, code, "{line:?} → {text}");
        text
    }

    /// Asserts the next reply's code.
    pub(crate) async fn expect_reply(&mut self, code: u16) -> String {
        let (got, text) = self.reply().await;
        assert_eq!(got, code, "{text}");
        text
    }

    /// Whether the server closed the connection (reads to EOF, ignoring nothing).
    pub(crate) async fn is_closed(&mut self) -> bool {
        let mut rest = Vec::new();
        match tokio::time::timeout(Duration::from_secs(5), self.io().read_to_end(&mut rest)).await {
            Ok(Ok(_)) => rest.is_empty(),
            Ok(Err(_)) => true,
            Err(_) => false,
        }
    }

    /// Upgrades to TLS (after the server's 220 to STARTTLS, or at once for implicit TLS).
    pub(crate) async fn tls(&mut self, ca: &TestCa) {
        assert!(self.try_tls(ca).await, "TLS handshake failed");
    }

    /// Like [`Client::tls`], reporting a failed handshake instead of panicking.
    pub(crate) async fn try_tls(&mut self, ca: &TestCa) -> bool {
        let io = self.io.take().expect("connected");
        assert!(io.buffer().is_empty(), "bytes after the STARTTLS reply");
        let connector = tokio_rustls::TlsConnector::from(ca.client_config());
        let name = ServerName::try_from(HOSTNAME).unwrap();
        match connector.connect(name, io.into_inner()).await {
            Ok(tls) => {
                self.io = Some(BufReader::new(Box::new(tls)));
                true
            }
            Err(_) => false,
        }
    }

    /// Banner, EHLO, STARTTLS, EHLO again.
    pub(crate) async fn start_tls(&mut self, ca: &TestCa) -> String {
        self.expect_reply(220).await;
        self.expect("EHLO client.test", 250).await;
        self.expect("STARTTLS", 220).await;
        self.tls(ca).await;
        self.expect("EHLO client.test", 250).await
    }

    /// [`Client::start_tls`] then AUTH PLAIN as the test user.
    pub(crate) async fn login(&mut self, ca: &TestCa) {
        self.start_tls(ca).await;
        let token = plain(USER, PASSWORD);
        self.expect(&format!("AUTH PLAIN {token}"), 235).await;
    }

    /// A whole transaction with DATA; returns the final reply.
    pub(crate) async fn send_mail(&mut self, from: &str, to: &[&str], body: &str) -> (u16, String) {
        self.expect(&format!("MAIL FROM:<{from}>"), 250).await;
        for rcpt in to {
            self.expect(&format!("RCPT TO:<{rcpt}>"), 250).await;
        }
        self.expect("DATA", 354).await;
        self.send(format!("{body}\r\n.\r\n")).await;
        self.reply().await
    }
}

/// A SASL PLAIN token.
pub(crate) fn plain(user: &str, password: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"))
}

pub(crate) fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// A small valid message.
pub(crate) fn message(subject: &str) -> String {
    format!("From: sender@example.test\r\nTo: rcpt@dest.test\r\nSubject: {subject}\r\n\r\nHello.")
}

/// The queued id in a `250 2.0.0 Ok: queued as <id>` reply.
pub(crate) fn queued_id(reply: &str) -> String {
    reply.trim_end().rsplit(' ').next().unwrap().to_owned()
}
