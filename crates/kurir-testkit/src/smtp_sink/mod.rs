//! [`SmtpSink`]: a scriptable SMTP server standing in for a remote MX in delivery tests.
//!
//! It is a real ESMTP server on a loopback port, written independently of kurir's own SMTP
//! code so that a bug shared by our client and server cannot hide. By default it accepts
//! everything; [rules](SmtpSink::on) make it refuse, stall, slow down or hang up at any stage,
//! for chosen recipients, messages or connections, and can change while it runs. It records
//! every transaction and counts connections, including the most ever open at once.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use std::time::Duration;
//! use kurir_testkit::smtp_sink::{Action, Match, SmtpSink, Stage};
//!
//! let sink = SmtpSink::start().await?;
//! sink.on(Match::Rcpt("bad@example.test".into()), Stage::Rcpt, Action::reply(550, "5.1.1 no such user"));
//! sink.on_times(Match::Any, Stage::Mail, Action::reply(451, "4.3.0 try later"), 1);
//! // ... point the code under test at sink.addr() ...
//! let txns = sink.wait_for_transactions(2, Duration::from_secs(10)).await?;
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - [`rules`](Match): stages, matches, actions, and how they are evaluated.
//! - `session`: one connection's command loop; `conn`: its bytes (lines, bodies, TLS);
//!   `auth`: decoding SASL PLAIN and LOGIN responses.
//! - [`record`](Transaction): what is recorded.

mod auth;
mod conn;
mod record;
mod rules;
mod session;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

pub use record::{AuthInfo, Rcpt, Reply, TlsInfo, Transaction};
pub use rules::{Action, Match, RuleId, Stage};

/// The ESMTP extensions the sink advertises in its EHLO reply. Each is also honoured: SIZE is
/// enforced at MAIL and on the body, BDAT is refused without CHUNKING, enhanced status codes
/// appear in default replies only when advertised, AUTH is required before MAIL when
/// offered. (DSN is only advertised: its parameters are recorded, not acted on.)
#[derive(Debug, Clone)]
pub struct Extensions {
    /// Offer STARTTLS with this server config (see [`crate::TestCa::server_config`]).
    pub starttls: Option<Arc<rustls::ServerConfig>>,
    pub pipelining: bool,
    /// Advertise `SIZE n`; MAIL with a larger `SIZE=` gets 552 5.3.4, and so does a body
    /// larger than n.
    pub size: Option<u64>,
    pub eightbitmime: bool,
    pub smtputf8: bool,
    /// Offer BDAT.
    pub chunking: bool,
    pub enhanced_status_codes: bool,
    /// Advertise `DSN` (RFC 3461).
    pub dsn: bool,
    /// `(user, password)`: once TLS is active, advertise `AUTH PLAIN LOGIN`, answer these
    /// credentials with 235 and others with 535 5.7.8, and refuse MAIL before a successful
    /// AUTH with 530 5.7.0 (before TLS too, where AUTH is refused with 538 5.7.11).
    pub auth: Option<(String, String)>,
}

impl Default for Extensions {
    /// Everything but STARTTLS (which needs a certificate), SIZE, DSN and AUTH.
    fn default() -> Self {
        Self {
            starttls: None,
            pipelining: true,
            size: None,
            eightbitmime: true,
            smtputf8: true,
            chunking: true,
            enhanced_status_codes: true,
            dsn: false,
            auth: None,
        }
    }
}

/// Bounds that keep a session's memory finite whatever the client sends.
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// Longest command line, CRLF included; longer lines get 500 5.5.2.
    max_line: usize,
    /// Most body bytes kept per message; a longer body gets 552 5.3.4 at its end.
    max_message_size: usize,
}

/// State shared by the sink handle and all its sessions. Locks are never held across an
/// await, so a stalled session cannot block the test reading the records.
#[derive(Debug)]
struct Shared {
    hostname: String,
    limits: Limits,
    extensions: Mutex<Extensions>,
    rules: Mutex<rules::Rules>,
    transactions: Mutex<Vec<Transaction>>,
    /// MAIL commands seen, across connections: numbers transactions for `NthMessage`.
    messages: AtomicU64,
    /// Connections accepted so far; also the id of the latest.
    connections_total: AtomicU64,
    /// Connections accepted and not yet ended.
    connections_open: AtomicU64,
    /// High-water mark of `connections_open`.
    connections_max: AtomicU64,
    /// Asks the accept loop to close every open connection.
    close_all: tokio::sync::Notify,
}

/// Locks `mutex`, ignoring poisoning: the data are records and rules, valid after any panic.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    fn extensions(&self) -> Extensions {
        lock(&self.extensions).clone()
    }

    fn rules(&self) -> MutexGuard<'_, rules::Rules> {
        lock(&self.rules)
    }

    fn next_message(&self) -> u64 {
        self.messages.fetch_add(1, Ordering::SeqCst) + 1
    }

    fn record(&self, mut txn: Transaction, body: Vec<u8>, final_reply: Option<Reply>) {
        txn.body = body;
        txn.final_reply = final_reply;
        tracing::debug!(connection = txn.connection, message = txn.message, reply = ?txn.final_reply, "smtp sink transaction");
        lock(&self.transactions).push(txn);
    }
}

/// Counts one connection as open from accept until the session ends (or QUIT is answered).
#[derive(Debug)]
struct ConnGuard {
    shared: Arc<Shared>,
    /// 1-based, in accept order.
    id: u64,
    released: bool,
}

impl ConnGuard {
    fn new(shared: Arc<Shared>) -> Self {
        let id = shared.connections_total.fetch_add(1, Ordering::SeqCst) + 1;
        let open = shared.connections_open.fetch_add(1, Ordering::SeqCst) + 1;
        shared.connections_max.fetch_max(open, Ordering::SeqCst);
        Self {
            shared,
            id,
            released: false,
        }
    }

    fn release(&mut self) {
        if !std::mem::replace(&mut self.released, true) {
            self.shared.connections_open.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.release();
    }
}

/// Configures an [`SmtpSink`] before it starts.
#[derive(Debug, Clone)]
pub struct SmtpSinkBuilder {
    ip: IpAddr,
    port: u16,
    hostname: String,
    extensions: Extensions,
    limits: Limits,
}

impl SmtpSinkBuilder {
    /// Bind this address instead of 127.0.0.1 (e.g. 127.0.0.2, so that several sinks can
    /// stand for several MX hosts on the same port).
    pub fn ip(mut self, ip: impl Into<IpAddr>) -> Self {
        self.ip = ip.into();
        self
    }

    /// Bind this port instead of a free one (0).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// The name in the greeting and EHLO reply (default `mx.example.test`).
    pub fn hostname(mut self, hostname: impl Into<String>) -> Self {
        self.hostname = hostname.into();
        self
    }

    pub fn extensions(mut self, extensions: Extensions) -> Self {
        self.extensions = extensions;
        self
    }

    /// Offer STARTTLS with this config, keeping the other extensions.
    pub fn starttls(mut self, config: Arc<rustls::ServerConfig>) -> Self {
        self.extensions.starttls = Some(config);
        self
    }

    /// Longest command line accepted, CRLF included (default 2048).
    pub fn max_line(mut self, bytes: usize) -> Self {
        self.limits.max_line = bytes;
        self
    }

    /// Most body bytes kept per message (default 32 MiB); larger bodies get 552.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.limits.max_message_size = bytes;
        self
    }

    /// Binds the listener and starts accepting. Connections made once this returns are
    /// served (the listener is bound, so they queue until accepted).
    pub async fn start(self) -> anyhow::Result<SmtpSink> {
        let addr = SocketAddr::new(self.ip, self.port);
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("smtp sink: cannot bind {addr}: {e}"))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            hostname: self.hostname,
            limits: self.limits,
            extensions: Mutex::new(self.extensions),
            rules: Mutex::default(),
            transactions: Mutex::default(),
            messages: AtomicU64::new(0),
            connections_total: AtomicU64::new(0),
            connections_open: AtomicU64::new(0),
            connections_max: AtomicU64::new(0),
            close_all: tokio::sync::Notify::new(),
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(SmtpSink {
            addr,
            shared,
            accept,
        })
    }
}

/// Accepts connections, one task each. The tasks live in a `JoinSet` owned by this loop, so
/// aborting the loop (dropping the sink) drops every session and closes its socket.
async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut sessions = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    spawn_session(&mut sessions, stream, peer, shared.clone());
                }
                Err(error) => {
                    // Out of descriptors and the like: back off rather than spin.
                    tracing::warn!(%error, "smtp sink accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
            () = shared.close_all.notified() => sessions.abort_all(),
        }
    }
}

fn spawn_session(
    sessions: &mut JoinSet<()>,
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
) {
    // Replies are small and awaited one by one; Nagle would only add latency.
    let _ = stream.set_nodelay(true);
    let guard = ConnGuard::new(shared.clone());
    sessions.spawn(session::run(Box::new(stream), peer, shared, guard));
}

/// A running SMTP sink. Stops (closing every connection) when dropped.
#[derive(Debug)]
pub struct SmtpSink {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl SmtpSink {
    /// A sink on a free port of 127.0.0.1 with the default [`Extensions`].
    pub async fn start() -> anyhow::Result<Self> {
        Self::builder().start().await
    }

    pub fn builder() -> SmtpSinkBuilder {
        SmtpSinkBuilder {
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 0,
            hostname: "mx.example.test".to_owned(),
            extensions: Extensions::default(),
            limits: Limits {
                max_line: 2048,
                max_message_size: 32 * 1024 * 1024,
            },
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Adds a rule for as long as the sink runs (see [`Match`], [`Stage`], [`Action`]); rules
    /// are tried in the order they were added.
    pub fn on(&self, matcher: Match, stage: Stage, action: Action) -> RuleId {
        self.shared.rules().add(matcher, stage, action, None)
    }

    /// Adds a rule that applies only the first `times` times it matches.
    pub fn on_times(&self, matcher: Match, stage: Stage, action: Action, times: u32) -> RuleId {
        self.shared.rules().add(matcher, stage, action, Some(times))
    }

    /// Removes a rule; false if it was already gone.
    pub fn remove_rule(&self, id: RuleId) -> bool {
        self.shared.rules().remove(id)
    }

    /// Removes every rule: back to accepting everything.
    pub fn clear_rules(&self) {
        self.shared.rules().clear();
    }

    /// Changes the advertised extensions for EHLOs from now on.
    pub fn set_extensions(&self, extensions: Extensions) {
        *lock(&self.shared.extensions) = extensions;
    }

    /// Every ended transaction, in the order they ended.
    pub fn transactions(&self) -> Vec<Transaction> {
        lock(&self.shared.transactions).clone()
    }

    /// Waits until at least `n` transactions have ended and returns them all.
    pub async fn wait_for_transactions(
        &self,
        n: usize,
        timeout: Duration,
    ) -> anyhow::Result<Vec<Transaction>> {
        let what = format!("{n} SMTP transactions at {}", self.addr);
        crate::wait_for(&what, timeout, || async {
            let txns = self.transactions();
            (txns.len() >= n).then_some(txns)
        })
        .await
    }

    /// Closes every open connection without a word, as an MX does that restarts or drops
    /// idle connections, and waits until they are gone. New connections are accepted as
    /// before.
    pub async fn close_connections(&self, timeout: Duration) -> anyhow::Result<()> {
        self.shared.close_all.notify_one();
        let what = format!("connections to {} closed", self.addr);
        crate::wait_for(&what, timeout, || async {
            (self.connections_open() == 0).then_some(())
        })
        .await
    }

    /// Connections accepted so far.
    pub fn connections_total(&self) -> u64 {
        self.shared.connections_total.load(Ordering::SeqCst)
    }

    /// Connections open now. A connection counts as closed once QUIT is answered, or once
    /// the sink sees the client hang up (which can lag the client by a moment).
    pub fn connections_open(&self) -> u64 {
        self.shared.connections_open.load(Ordering::SeqCst)
    }

    /// The most connections ever open at once: for asserting a connection limit held.
    pub fn max_concurrent_connections(&self) -> u64 {
        self.shared.connections_max.load(Ordering::SeqCst)
    }
}
