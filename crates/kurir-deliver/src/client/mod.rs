//! The outbound SMTP client: one [`Connection`] to one remote host, reused for many
//! transactions (RSET between them).
//!
//! Replies and EHLO capabilities are parsed with Stalwart's `smtp-proto` (the same crate
//! the submission server uses); everything else (IO, STARTTLS, PIPELINING, timeouts) is
//! here, because the SMTP client crates (`mail-send`, `lettre`) stop a transaction at the
//! first refused recipient and do not pipeline MAIL/RCPT/DATA, and an MTA needs a reply per
//! recipient.
//!
//! CONTRACT (owned by the client helper; the engine relies on exactly this API):
//! - [`Connection::connect`] opens TCP (bound to `ClientSettings::source` when set), reads
//!   the banner, sends EHLO (falls back to HELO when EHLO gets 5xx), applies the TLS policy
//!   (STARTTLS then EHLO again), and AUTH when credentials are given (PLAIN, else LOGIN;
//!   only over TLS). Every phase has its timeout from `TimeoutsConfig`.
//! - [`Connection::send`] runs one transaction: MAIL FROM (with SIZE=, BODY= when the
//!   server offers SIZE / 8BITMIME, SMTPUTF8 when asked and offered, RET=/ENVID= and
//!   NOTIFY=/ORCPT= only when the server offers DSN), RCPT TO per recipient, DATA, the
//!   dot-stuffed body (CRLF line ends kept as they are; a final CRLF added when missing),
//!   the final dot. With PIPELINING, MAIL + all RCPTs + DATA go in one write and the
//!   replies are read in order (RFC 2920); without it, one command per round trip. When
//!   no recipient is accepted, DATA is not sent; when it was already pipelined, the
//!   server refuses it (RFC 2920: 554 when no RCPT succeeded), and a server that answers
//!   354 anyway gets a lone "." and its reply is ignored.
//! - A transaction that failed with a reply leaves the connection usable after
//!   [`Connection::reset`]; an IO error or timeout poisons it (`is_usable()` false).
//!
//! # Layout
//! - `conn`: [`Connection`]: connect (TCP, banner, EHLO/HELO, STARTTLS, AUTH), RSET, QUIT.
//! - `transaction`: `send`: MAIL/RCPT/DATA, pipelined or step by step.
//! - `commands`: the MAIL/RCPT lines with their parameters, and the dot-stuffed body.
//! - `ehlo`: [`Capabilities`] from the EHLO reply (`smtp-proto`).
//! - `tls`: rustls configs per policy, including the verifier that accepts any certificate.
//! - `wire`: the stream, the read buffer, replies (`smtp-proto`) and timeouts.

mod commands;
mod conn;
mod ehlo;
mod tls;
mod transaction;
mod wire;

pub use commands::message_size;
pub use conn::Connection;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kurir_core::Envelope;

use crate::config::{TimeoutsConfig, TlsPolicy};
use crate::reply::RemoteReply;

/// Where to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The host name (MX exchange or smarthost name): SNI and the name a `verify`
    /// certificate must match. An IP literal when the route gave one.
    pub host: String,
    pub addr: SocketAddr,
}

/// How to connect and introduce ourselves.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// The EHLO name.
    pub ehlo: String,
    /// The local address to bind before connecting (egress source); `None`: the system's
    /// choice.
    pub source: Option<IpAddr>,
    pub tls: TlsPolicy,
    /// Roots for [`TlsPolicy::Verify`] (webpki roots + `[deliver.tls] ca_file`).
    pub tls_roots: Arc<rustls::RootCertStore>,
    /// AUTH credentials (smarthosts); only ever sent over TLS.
    pub auth: Option<(String, String)>,
    pub timeouts: TimeoutsConfig,
}

/// What the server offered in its (last) EHLO reply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    pub pipelining: bool,
    /// `SIZE n`: the largest message accepted; `Some(0)` means no fixed limit.
    pub size: Option<u64>,
    pub eightbitmime: bool,
    pub smtputf8: bool,
    pub dsn: bool,
    pub chunking: bool,
    pub starttls: bool,
    pub enhanced_status_codes: bool,
    /// AUTH mechanisms offered, upper case (those `smtp-proto` knows by name; see
    /// [`Capabilities::offers_auth`]).
    pub auth: Vec<String>,
}

/// One transaction to send.
#[derive(Debug, Clone)]
pub struct Transaction<'a> {
    /// The envelope: sender, DSN RET/ENVID, BODY, SMTPUTF8 and the recipients to attempt
    /// (with NOTIFY/ORCPT).
    pub envelope: &'a Envelope,
    /// The RFC 5322 message with CRLF line ends, not dot-stuffed.
    pub body: &'a Bytes,
    /// Whether the body may go by BDAT when the server offers CHUNKING (and PIPELINING);
    /// `false`: DATA whatever the server offers.
    pub chunking: bool,
}

/// The replies of one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransactionReplies {
    /// MAIL FROM was refused: the reply applies to every recipient.
    MailRefused(RemoteReply),
    /// MAIL FROM was accepted. `rcpts[i]` is the RCPT reply of `envelope.recipients[i]`;
    /// `data` is the reply that decided the accepted recipients' fate (the DATA command's
    /// reply when it was refused, else the reply after the final dot); `None` when no
    /// recipient was accepted.
    Sent {
        rcpts: Vec<RemoteReply>,
        data: Option<RemoteReply>,
    },
}

/// Why a connection could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{phase}: timed out after {after:?}")]
    Timeout { phase: Phase, after: Duration },
    #[error("{phase}: {source}")]
    Io {
        phase: Phase,
        source: std::io::Error,
    },
    /// The server answered with a non-success reply at a phase that has no recipient
    /// (banner, EHLO/HELO, STARTTLS, AUTH) or closed with 421 at any phase.
    #[error("{phase}: {reply}")]
    Rejected { phase: Phase, reply: RemoteReply },
    /// The reply could not be parsed, or the server broke the protocol.
    #[error("{phase}: protocol error: {detail}")]
    Protocol { phase: Phase, detail: String },
    /// The TLS policy needs STARTTLS and the server does not offer it.
    #[error("STARTTLS required by policy but not offered")]
    TlsNotOffered,
    /// The TLS handshake failed (including certificate verification under `verify`).
    #[error("TLS: {0}")]
    Tls(String),
    /// AUTH credentials are configured but the connection is not encrypted, or the server
    /// offers no mechanism we speak.
    #[error("AUTH not possible: {0}")]
    AuthUnavailable(String),
}

impl ClientError {
    /// The remote reply, when the error is one.
    pub fn reply(&self) -> Option<&RemoteReply> {
        match self {
            Self::Rejected { reply, .. } => Some(reply),
            _ => None,
        }
    }

    /// Whether this says nothing about the messages, only about the host (so the next MX
    /// may be tried): connection failures, timeouts, TLS trouble, 4xx/5xx at the banner or
    /// EHLO.
    pub fn is_connection_level(&self) -> bool {
        !matches!(self, Self::Rejected { phase, .. } if phase.is_transaction())
    }
}

/// The phase of an SMTP session, for timeouts and error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Connect,
    Banner,
    Ehlo,
    StartTls,
    Auth,
    Mail,
    Rcpt,
    Data,
    DataWrite,
    DataEnd,
    Rset,
    Quit,
}

impl Phase {
    pub fn is_transaction(self) -> bool {
        matches!(
            self,
            Self::Mail | Self::Rcpt | Self::Data | Self::DataWrite | Self::DataEnd
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Banner => "banner",
            Self::Ehlo => "EHLO",
            Self::StartTls => "STARTTLS",
            Self::Auth => "AUTH",
            Self::Mail => "MAIL FROM",
            Self::Rcpt => "RCPT TO",
            Self::Data => "DATA",
            Self::DataWrite => "message body",
            Self::DataEnd => "end of data",
            Self::Rset => "RSET",
            Self::Quit => "QUIT",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The roots `verify` trusts: the Mozilla set plus the PEM file's certificates.
pub fn tls_roots(ca_file: Option<&std::path::Path>) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    Ok(roots)
}
