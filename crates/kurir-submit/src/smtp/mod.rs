//! The SMTP submission server (RFC 5321 with PIPELINING, SIZE, 8BITMIME, SMTPUTF8,
//! ENHANCEDSTATUSCODES, STARTTLS, AUTH PLAIN/LOGIN over TLS only, CHUNKING and DSN).
//!
//! [`run`] takes bound listeners and a [`Lifecycle`](kurir_lifecycle::Lifecycle), so a test
//! runs it on port 0; [`SmtpServer::handle_connection`] runs one session on any stream, so
//! protocol tests need no socket.
//!
//! # Layout
//! The path of a connection, then of a message:
//! - [`config`]: [`SmtpConfig`], the `[smtp]` section (listeners, TLS, users, relay, limits,
//!   timeouts).
//! - [`server`]: accept loops, admission (limits, shutdown), the drain.
//! - `limits`: connection counters and the failed-AUTH memory per IP.
//! - `tls`: the certificate from files, reloaded when they change; `conn`: plain or TLS
//!   stream under one session type.
//! - `session`: the state machine, the command loop, timeouts, error counting.
//! - One file per verb: `ehlo` (EHLO/HELO), `starttls`, `auth` (with `credentials`), `mail`,
//!   `rcpt` (relay policy, suppression), `data`, `bdat`, `rset`, `quit`, `info` (NOOP, HELP,
//!   VRFY, EXPN).
//! - `submit`: the end of a message, handed to [`crate::publish::Publisher`].
//! - [`metrics`]: connections, sessions, messages by reply code.
//!
//! # Hostile clients, decided once
//! - Early talkers (commands before the banner): `554 5.5.0` and close. The socket is
//!   polled once before the banner even with the default `greeting_delay = 0`; a delay
//!   (1–5 s) is for port-25 listeners facing the internet (see [`SmtpConfig`]).
//! - SMTP smuggling: only `CRLF.CRLF` ends DATA; a body with a bare CR, bare LF or NUL is
//!   refused whole (`550 5.6.0`), never normalised (see `kurir_smtp::data`).
//! - Bytes pipelined after DATA before the `354`: `554 5.5.0` and close (`data.rs`).
//! - Bytes pipelined after STARTTLS: discarded unread (`starttls.rs`).
//! - Over-long lines `500 5.5.6`; protocol errors counted, `421 4.7.0` at `max_errors`;
//!   every wait has a deadline (`421 4.4.2`).

pub mod config;
pub mod metrics;
pub mod server;

mod auth;
mod bdat;
mod conn;
mod credentials;
mod data;
mod ehlo;
mod info;
mod limits;
mod mail;
mod quit;
mod rcpt;
mod rset;
mod session;
mod starttls;
mod submit;
mod tls;

pub use config::{
    AuthConfig, ConfigError, LimitsConfig, ListenerConfig, ListenerMode, RelayConfig, SmtpConfig,
    SuppressedAction, TimeoutsConfig, TlsConfig, UserConfig,
};
pub use metrics::SmtpMetrics;
pub use server::{SmtpError, SmtpServer, bind, listen, run};
pub use tls::TlsError;
