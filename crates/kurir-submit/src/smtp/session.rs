//! One SMTP session: the state machine, the command loop and the IO rules every verb
//! relies on. The verbs themselves live in one file each (`ehlo.rs`, `mail.rs`, …).
//!
//! IO rules:
//! - Replies are buffered and written only when the session would otherwise wait for the
//!   client (no complete command left in the buffer): that is PIPELINING (RFC 2920) and
//!   costs one write per command group.
//! - Every wait has a deadline: `timeouts.command` between commands, `timeouts.data` for a
//!   body; at the deadline the client gets `421 4.4.2` and the connection is closed.
//! - While waiting for a command with no transaction open, shutdown ends the session with
//!   `421 4.3.2`; a transaction in progress (MAIL given, or a body being read) finishes.
//! - Protocol errors are counted; at `limits.max_errors` the client gets `421 4.7.0`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use kurir_core::{Address, Envelope, ErrorCode};
use kurir_smtp::{BdatReader, Command, LineError, LineReader, Reply, parse_command};
use kurir_state::{State, Tenant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, timeout, timeout_at};

use super::config::ListenerMode;
use super::conn::Conn;
use super::credentials::AuthUser;
use super::server::Shared;
use kurir_queue::Queue;

/// Bytes read from the socket at a time.
const READ_BUFFER: usize = 8 * 1024;
/// How long closing the connection may take (TLS close_notify, FIN).
const CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// What the client said in EHLO/HELO.
#[derive(Debug, Clone)]
pub(super) struct Greeting {
    pub(super) host: String,
    /// EHLO (not HELO).
    pub(super) esmtp: bool,
}

/// A mail transaction: from MAIL to the end of its body (or RSET).
#[derive(Debug)]
pub(super) struct Transaction {
    /// Recipients the queued message goes to (dropped suppressed ones are not here).
    pub(super) envelope: Envelope,
    /// RCPTs answered 250, including dropped ones.
    pub(super) accepted: usize,
    /// Suppressed recipients answered 250 and dropped (`suppressed_recipients = "drop"`):
    /// each is reported as a `SUPPRESSED` event once the message is queued.
    pub(super) suppressed: Vec<Address>,
    pub(super) tenant: Tenant,
    /// The size the client announced (`MAIL FROM SIZE=`): the body buffer's first size.
    pub(super) size: Option<u64>,
    /// The body so far, once a BDAT chunk arrived.
    pub(super) bdat: Option<BdatReader>,
}

/// The result of waiting for the client.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Read {
    Bytes(usize),
    Closed,
    TimedOut,
}

/// One connection's session state.
pub(crate) struct Session<S, Q, St> {
    pub(super) shared: Arc<Shared<Q, St>>,
    pub(super) conn: Conn<S>,
    pub(super) peer: SocketAddr,
    pub(super) mode: ListenerMode,
    pub(super) lines: LineReader,
    pub(super) buf: Box<[u8]>,
    /// Replies not written yet.
    pub(super) out: Vec<u8>,
    pub(super) greeting: Option<Greeting>,
    pub(super) auth: Option<AuthUser>,
    pub(super) tx: Option<Transaction>,
    /// Messages ended (queued or refused) in this session.
    pub(super) messages: usize,
    pub(super) errors: usize,
    /// Set when the session must end after its replies are written.
    pub(super) closing: bool,
}

impl<S, Q, St> std::fmt::Debug for Session<S, Q, St> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("peer", &self.peer)
            .field("mode", &self.mode)
            .field("messages", &self.messages)
            .field("errors", &self.errors)
            .finish_non_exhaustive()
    }
}

impl<S, Q, St> Session<S, Q, St>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    Q: Queue,
    St: State,
{
    pub(crate) fn new(
        shared: Arc<Shared<Q, St>>,
        conn: Conn<S>,
        peer: SocketAddr,
        mode: ListenerMode,
    ) -> Self {
        // The configured length counts the CRLF (RFC 5321 §4.5.3.1.4); the reader's does not.
        let lines = LineReader::new(shared.config.limits.max_line_length.saturating_sub(2));
        Self {
            shared,
            conn,
            peer,
            mode,
            lines,
            buf: vec![0; READ_BUFFER].into_boxed_slice(),
            out: Vec::new(),
            greeting: None,
            auth: None,
            tx: None,
            messages: 0,
            errors: 0,
            closing: false,
        }
    }

    /// Runs the session to its end and closes the connection.
    pub(crate) async fn run(mut self) {
        if self.greet().await {
            while !self.closing {
                let Some(line) = self.next_command().await else {
                    break;
                };
                self.dispatch(line).await;
            }
        }
        let _ = self.flush().await;
        let _ = timeout(CLOSE_TIMEOUT, self.conn.shutdown()).await;
    }

    /// Watches for early talkers, then sends the banner. `false`: the session is over.
    async fn greet(&mut self) -> bool {
        let delay = self.shared.config.greeting_delay;
        // A zero delay still polls the socket once: commands that arrived before the banner
        // are caught without making honest clients wait.
        match timeout(delay, self.conn.read(&mut self.buf)).await {
            Err(_) => {}
            Ok(Ok(0) | Err(_)) => return false,
            Ok(Ok(_)) => {
                tracing::info!(peer = %self.peer, "client talked before the banner");
                self.reply(Reply::new(
                    554,
                    (5, 5, 0),
                    "Protocol error: commands sent before the greeting",
                ));
                return false;
            }
        }
        let banner = format!("{} ESMTP kurir", self.shared.config.hostname);
        // No enhanced code: the client has not seen ENHANCEDSTATUSCODES yet.
        self.reply(Reply {
            code: 220,
            enhanced: None,
            lines: vec![banner],
        });
        true
    }

    /// The next command line, flushing replies and reading as needed. `None`: the session
    /// is over (closed, timed out, or shutting down; the reply is already queued).
    pub(super) async fn next_command(&mut self) -> Option<Result<Vec<u8>, LineError>> {
        loop {
            if let Some(line) = self.lines.next_line() {
                return Some(line);
            }
            if !self.flush().await {
                return None;
            }
            let deadline = Instant::now() + self.shared.config.timeouts.command;
            let shutdown = self.shared.lifecycle.shutdown_signal().wait();
            let idle = self.tx.is_none();
            let read = tokio::select! {
                biased;
                () = shutdown, if idle => {
                    self.reply(ErrorCode::ShuttingDown.into());
                    return None;
                }
                read = read_until(&mut self.conn, &mut self.buf, deadline) => read,
            };
            if !self.absorb(read) {
                return None;
            }
        }
    }

    /// Moves read bytes into the line reader. `false`: the session is over.
    fn absorb(&mut self, read: Read) -> bool {
        match read {
            Read::Bytes(n) => {
                self.lines.push(&self.buf[..n]);
                true
            }
            Read::Closed => false,
            Read::TimedOut => {
                self.reply(ErrorCode::Timeout.into());
                false
            }
        }
    }

    /// Reads once from the client before `deadline`.
    pub(super) async fn read_some(&mut self, deadline: Instant) -> Read {
        read_until(&mut self.conn, &mut self.buf, deadline).await
    }

    async fn dispatch(&mut self, line: Result<Vec<u8>, LineError>) {
        let line = match line {
            Ok(line) => line,
            Err(error) => return self.fail(error.reply()),
        };
        let command = match parse_command(&line) {
            Ok(command) => command,
            Err(error) => return self.fail(error.reply()),
        };
        match command {
            Command::Ehlo { host } => self.ehlo(host, true),
            Command::Helo { host } => self.ehlo(host, false),
            Command::Mail { from, params } => self.mail(from, params),
            Command::Rcpt { to, params } => self.rcpt(to, params).await,
            Command::Data => self.data().await,
            Command::Bdat { size, last } => self.bdat(size, last).await,
            Command::Rset => self.rset(),
            Command::StartTls => self.starttls().await,
            Command::Auth {
                mechanism,
                initial_response,
            } => self.auth(mechanism, initial_response).await,
            Command::Quit => self.quit(),
            Command::Noop => self.noop(),
            Command::Vrfy { .. } => self.vrfy(),
            Command::Expn { .. } => self.expn(),
            Command::Help { .. } => self.help(),
        }
    }

    /// Queues a reply.
    pub(super) fn reply(&mut self, reply: Reply) {
        reply.write_to(&mut self.out, true);
        if reply.code == 421 {
            self.closing = true;
        }
    }

    /// Queues an error reply caused by the client and counts it; at `max_errors` the
    /// session ends with `421 4.7.0`.
    pub(super) fn fail(&mut self, reply: Reply) {
        self.reply(reply);
        self.errors += 1;
        if self.errors >= self.shared.config.limits.max_errors && !self.closing {
            tracing::info!(peer = %self.peer, errors = self.errors, "too many errors");
            self.reply(ErrorCode::TooManyErrors.into());
        }
    }

    /// Writes the queued replies. `false` when the client is gone.
    pub(super) async fn flush(&mut self) -> bool {
        if self.out.is_empty() {
            return true;
        }
        let deadline = Instant::now() + self.shared.config.timeouts.command;
        let (conn, out) = (&mut self.conn, &mut self.out);
        let write = async {
            conn.write_all(out).await?;
            conn.flush().await
        };
        let written = matches!(timeout_at(deadline, write).await, Ok(Ok(())));
        // Cleared, not taken: the buffer keeps its capacity for the next replies.
        out.clear();
        written
    }

    /// The client's IP address (IPv4-mapped IPv6 as IPv4).
    pub(super) fn ip(&self) -> IpAddr {
        self.peer.ip().to_canonical()
    }

    /// Whether the connection is encrypted.
    pub(super) fn is_tls(&self) -> bool {
        matches!(self.conn, Conn::Tls(_))
    }
}

/// Reads once into `buf`, or reports a close or the deadline.
pub(super) async fn read_until<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<S>,
    buf: &mut [u8],
    deadline: Instant,
) -> Read {
    match timeout_at(deadline, conn.read(buf)).await {
        Ok(Ok(0) | Err(_)) => Read::Closed,
        Ok(Ok(n)) => Read::Bytes(n),
        Err(_) => Read::TimedOut,
    }
}
