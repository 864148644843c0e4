//! [`Connection`]: the session with one remote host (see the contract in `mod.rs`).
//!
//! `connect` runs the session's opening: TCP, banner, EHLO, STARTTLS, AUTH (in
//! [`Connection::open`]); `send` runs one transaction (`transaction.rs`).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use tokio::net::{TcpSocket, TcpStream};

use super::wire::{Stream, Wire, bounded};
use super::{
    Capabilities, ClientError, ClientSettings, Phase, Target, Transaction, TransactionReplies,
    ehlo, tls,
};
use crate::config::{TimeoutsConfig, TlsPolicy};
use crate::reply::RemoteReply;

/// How long a failed write looks for a reply the server sent before it hung up.
const PARTING_REPLY: Duration = Duration::from_secs(1);

/// One SMTP session to one remote host.
#[derive(Debug)]
pub struct Connection {
    pub(super) wire: Wire,
    capabilities: Capabilities,
    target: Target,
    pub(super) timeouts: TimeoutsConfig,
    tls_version: Option<&'static str>,
    /// MAIL FROMs written so far.
    pub(super) transactions: u32,
    /// Cleared by any error of `send`/`reset` (IO, timeout, protocol, 421): the session is
    /// in an unknown state and must not carry another transaction.
    usable: bool,
}

impl Connection {
    /// Connects, reads the banner, EHLO, STARTTLS per policy (EHLO again), AUTH when
    /// configured.
    ///
    /// When the server refuses at a phase with a reply (other than 421), or the policy
    /// cannot be met (no STARTTLS, no AUTH), QUIT is sent before returning the error (best
    /// effort, bounded by the quit timeout).
    pub async fn connect(target: &Target, settings: &ClientSettings) -> Result<Self, ClientError> {
        let timeouts = settings.timeouts;
        let tcp = open_tcp(target.addr, settings.source, timeouts.connect).await?;
        let mut conn = Self {
            wire: Wire::new(Stream::Plain(tcp)),
            capabilities: Capabilities::default(),
            target: target.clone(),
            timeouts,
            tls_version: None,
            transactions: 0,
            usable: true,
        };
        match conn.open(settings).await {
            Ok(()) => Ok(conn),
            Err(error) => {
                let polite = match &error {
                    ClientError::Rejected { reply, .. } => reply.code != 421,
                    ClientError::TlsNotOffered | ClientError::AuthUnavailable(_) => true,
                    _ => false,
                };
                if polite {
                    conn.quit().await;
                }
                Err(error)
            }
        }
    }

    async fn open(&mut self, settings: &ClientSettings) -> Result<(), ClientError> {
        let banner = self.reply(Phase::Banner, self.timeouts.banner).await?;
        if banner.code != 220 {
            return Err(ClientError::Rejected {
                phase: Phase::Banner,
                reply: banner,
            });
        }
        self.capabilities = self.greet(&settings.ehlo).await?;
        self.start_tls(settings).await?;
        if let Some((user, password)) = &settings.auth {
            self.authenticate(user, password).await?;
        }
        Ok(())
    }

    /// EHLO; HELO when EHLO gets a 5xx (then no extension is offered).
    async fn greet(&mut self, name: &str) -> Result<Capabilities, ClientError> {
        let limit = self.timeouts.ehlo;
        self.wire
            .send(format!("EHLO {name}\r\n").as_bytes(), Phase::Ehlo, limit)
            .await?;
        let (reply, raw) = self.wire.reply_with_raw(Phase::Ehlo, limit).await?;
        if reply.code == 250 {
            return ehlo::parse(&raw).map_err(|detail| ClientError::Protocol {
                phase: Phase::Ehlo,
                detail: format!("EHLO reply: {detail}"),
            });
        }
        if reply.is_positive() {
            return Ok(Capabilities::default());
        }
        if !reply.is_permanent() {
            return Err(ClientError::Rejected {
                phase: Phase::Ehlo,
                reply,
            });
        }
        self.wire
            .send(format!("HELO {name}\r\n").as_bytes(), Phase::Ehlo, limit)
            .await?;
        let reply = self.reply(Phase::Ehlo, limit).await?;
        if !reply.is_positive() {
            return Err(ClientError::Rejected {
                phase: Phase::Ehlo,
                reply,
            });
        }
        Ok(Capabilities::default())
    }

    /// Applies the TLS policy: STARTTLS, the handshake, and EHLO again.
    ///
    /// Under `opportunistic` a STARTTLS refused with a reply (other than 421) leaves the
    /// session in plain text, as if STARTTLS had not been offered; under `require` and
    /// `verify` it is an error. A failed handshake is an error under every policy (the
    /// connection is unusable by then).
    async fn start_tls(&mut self, settings: &ClientSettings) -> Result<(), ClientError> {
        let offered = self.capabilities.starttls;
        match settings.tls {
            TlsPolicy::Disable => return Ok(()),
            TlsPolicy::Opportunistic if !offered => return Ok(()),
            TlsPolicy::Require | TlsPolicy::Verify if !offered => {
                return Err(ClientError::TlsNotOffered);
            }
            _ => {}
        }
        let limit = self.timeouts.starttls;
        self.wire
            .send(b"STARTTLS\r\n", Phase::StartTls, limit)
            .await?;
        let reply = self.reply(Phase::StartTls, limit).await?;
        if reply.code != 220 {
            if settings.tls == TlsPolicy::Opportunistic {
                return Ok(());
            }
            return Err(ClientError::Rejected {
                phase: Phase::StartTls,
                reply,
            });
        }
        // Bytes after the 220 were sent in the clear before the handshake: executing them
        // as if they came over TLS is the STARTTLS command injection (CVE-2011-0411).
        if self.wire.has_buffered() {
            return Err(ClientError::Protocol {
                phase: Phase::StartTls,
                detail: "the server sent data after its 220 reply to STARTTLS".to_owned(),
            });
        }
        let Some(tcp) = self.wire.take_plain() else {
            return Err(ClientError::Protocol {
                phase: Phase::StartTls,
                detail: "TLS is already active".to_owned(),
            });
        };
        let verify = (settings.tls == TlsPolicy::Verify).then_some(&settings.tls_roots);
        let ip = self.target.addr.ip();
        let handshake = tls::handshake(tcp, &self.target.host, ip, verify);
        let stream = bounded(Phase::StartTls, limit, handshake).await?;
        self.tls_version = tls::version_name(&stream);
        self.wire = Wire::new(Stream::Tls(Box::new(stream)));
        // RFC 3207: the server forgets the EHLO; its extensions may differ over TLS.
        self.capabilities = self.greet(&settings.ehlo).await?;
        Ok(())
    }

    /// AUTH PLAIN, else AUTH LOGIN; only over TLS.
    async fn authenticate(&mut self, user: &str, password: &str) -> Result<(), ClientError> {
        if self.tls_version.is_none() {
            return Err(ClientError::AuthUnavailable(
                "the connection is not encrypted".to_owned(),
            ));
        }
        let reply = if self.capabilities.offers_auth("PLAIN") {
            let token = BASE64.encode(format!("\0{user}\0{password}"));
            let reply = self.auth_step(&format!("AUTH PLAIN {token}")).await?;
            if reply.code == 334 {
                // A server that wants the response on its own line after all.
                self.auth_step(&token).await?
            } else {
                reply
            }
        } else if self.capabilities.offers_auth("LOGIN") {
            self.auth_login(user, password).await?
        } else {
            return Err(ClientError::AuthUnavailable(format!(
                "the server offers no mechanism we speak (PLAIN, LOGIN); it offers {:?}",
                self.capabilities.auth
            )));
        };
        if reply.code != 235 {
            return Err(ClientError::Rejected {
                phase: Phase::Auth,
                reply,
            });
        }
        Ok(())
    }

    async fn auth_login(&mut self, user: &str, password: &str) -> Result<RemoteReply, ClientError> {
        let mut reply = self.auth_step("AUTH LOGIN").await?;
        for secret in [user, password] {
            if reply.code != 334 {
                return Ok(reply);
            }
            reply = self.auth_step(&BASE64.encode(secret)).await?;
        }
        Ok(reply)
    }

    /// Sends one AUTH line (never logged: it carries credentials) and reads the reply.
    async fn auth_step(&mut self, line: &str) -> Result<RemoteReply, ClientError> {
        let limit = self.timeouts.auth;
        self.wire
            .send(format!("{line}\r\n").as_bytes(), Phase::Auth, limit)
            .await?;
        self.reply(Phase::Auth, limit).await
    }

    /// The next reply; a 421 (the server is closing the session) is an error at any phase.
    pub(super) async fn reply(
        &mut self,
        phase: Phase,
        limit: Duration,
    ) -> Result<RemoteReply, ClientError> {
        let reply = self.wire.reply(phase, limit).await?;
        if reply.code == 421 {
            return Err(ClientError::Rejected { phase, reply });
        }
        Ok(reply)
    }

    /// Writes `pieces` within `limit` (see [`Wire::send_pieces`]). When the write fails
    /// because the server hung up, a refusal it sent before hanging up (typically a 421
    /// in answer to a pipelined MAIL, the rest of the batch unread) is the error, so its
    /// text is kept and a rate limit in it is seen: it is already in the receive buffer,
    /// and [`PARTING_REPLY`] bounds the look.
    pub(super) async fn write(
        &mut self,
        pieces: &[&[u8]],
        phase: Phase,
        limit: Duration,
    ) -> Result<(), ClientError> {
        let Err(error) = self.wire.send_pieces(pieces, phase, limit).await else {
            return Ok(());
        };
        if !matches!(error, ClientError::Io { .. }) {
            return Err(error);
        }
        match self.wire.reply(phase, PARTING_REPLY).await {
            Ok(reply) if !reply.is_positive() => Err(ClientError::Rejected { phase, reply }),
            _ => Err(error),
        }
    }

    pub fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// `TLSv1.3`, `TLSv1.2`, or `None` in plain text.
    pub fn tls_version(&self) -> Option<&'static str> {
        self.tls_version
    }

    /// Transactions sent on this connection so far (counted when MAIL FROM was written).
    pub fn transactions(&self) -> u32 {
        self.transactions
    }

    /// False after an IO error, a timeout, a protocol error or a 421.
    pub fn is_usable(&self) -> bool {
        self.usable
    }

    fn check_usable(&self, phase: Phase) -> Result<(), ClientError> {
        if self.usable {
            return Ok(());
        }
        Err(ClientError::Io {
            phase,
            source: io::Error::new(
                io::ErrorKind::NotConnected,
                "the connection failed earlier and is not usable",
            ),
        })
    }

    /// One transaction. `Err` means the connection failed mid-way (it is no longer
    /// usable) and the outcome of the recipients is unknown (treat as transient).
    pub async fn send(&mut self, tx: &Transaction<'_>) -> Result<TransactionReplies, ClientError> {
        self.check_usable(Phase::Mail)?;
        let caps = &self.capabilities;
        let result = match (caps.pipelining, caps.chunking && tx.chunking) {
            (true, true) => self.send_chunked(tx).await,
            (true, false) => self.send_pipelined(tx).await,
            (false, _) => self.send_stepwise(tx).await,
        };
        if result.is_err() {
            self.usable = false;
        }
        result
    }

    /// RSET, so the connection can carry the next transaction. Any error (a refusal
    /// included) leaves the connection unusable.
    pub async fn reset(&mut self) -> Result<(), ClientError> {
        self.check_usable(Phase::Rset)?;
        let result = self.rset().await;
        if result.is_err() {
            self.usable = false;
        }
        result
    }

    async fn rset(&mut self) -> Result<(), ClientError> {
        let limit = self.timeouts.rset;
        self.wire.send(b"RSET\r\n", Phase::Rset, limit).await?;
        let reply = self.reply(Phase::Rset, limit).await?;
        if !reply.is_positive() {
            return Err(ClientError::Rejected {
                phase: Phase::Rset,
                reply,
            });
        }
        Ok(())
    }

    /// QUIT and close; errors are ignored (best effort, bounded by the quit timeout). An
    /// unusable connection is only closed.
    pub async fn quit(mut self) {
        let limit = self.timeouts.quit;
        let usable = self.usable;
        let _ = tokio::time::timeout(limit, async {
            if usable
                && self
                    .wire
                    .send(b"QUIT\r\n", Phase::Quit, limit)
                    .await
                    .is_ok()
            {
                let _ = self.wire.reply(Phase::Quit, limit).await;
            }
            self.wire.shutdown().await;
        })
        .await;
    }
}

/// Opens TCP to `addr`, from `source` when given.
async fn open_tcp(
    addr: SocketAddr,
    source: Option<IpAddr>,
    limit: Duration,
) -> Result<TcpStream, ClientError> {
    let connect = async {
        let socket = match addr {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        if let Some(ip) = source {
            socket.bind(SocketAddr::new(ip, 0)).map_err(|e| {
                io::Error::new(e.kind(), format!("cannot bind source address {ip}: {e}"))
            })?;
        }
        let stream = socket.connect(addr).await?;
        // Commands are written whole and then awaited: Nagle would only add latency.
        stream.set_nodelay(true)?;
        Ok(stream)
    };
    match tokio::time::timeout(limit, connect).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(source)) => Err(ClientError::Connect { addr, source }),
        Err(_) => Err(ClientError::Timeout {
            phase: Phase::Connect,
            after: limit,
        }),
    }
}
