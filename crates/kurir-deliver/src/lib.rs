//! The delivery role (`shared/DESIGN.md` §4): consume the queue, route by MX, deliver over
//! pooled, throttled connections, retry through delay tiers, bounce with DSNs, and emit an
//! event for every outcome.
//!
//! # Layout
//! - [`config`]: `[deliver]`.
//! - [`route`]: domain → MX hosts → site (hickory-resolver), static smarthost routes.
//! - [`client`]: the outbound SMTP client (PIPELINING, STARTTLS, SIZE, 8BITMIME, SMTPUTF8).
//! - [`classify`]: permanent-failure reply → bounce class; [`dsn`]: RFC 3464 reports.
//! - [`reply`]: a remote server's reply.

pub mod classify;
pub mod client;
pub mod config;
pub mod dsn;
pub mod reply;
pub mod route;

pub use config::DeliverConfig;
pub use reply::RemoteReply;
