//! The delivery role (`shared/DESIGN.md` §4): consume the queue, route by MX, deliver over
//! pooled, throttled connections, retry through delay tiers, bounce with DSNs, and emit an
//! event for every outcome.
//!
//! # Layout
//! - [`engine`]: [`Deliverer`]: partitions → records → attempt → durable outcomes → ack.
//! - `attempt.rs`: one attempt of one record: route, site, throttles, connection, verdicts.
//! - [`route`]: domain → MX hosts → site (hickory-resolver), static smarthost routes.
//! - [`pool`]: connections per site, reused across messages; the site's ready queue.
//! - [`throttle`]: connection slots, GCRA rate, adaptive slow-down per site.
//! - [`egress`]: local source addresses and EHLO names, chosen by weight.
//! - [`client`]: the outbound SMTP client (PIPELINING, STARTTLS, SIZE, 8BITMIME, SMTPUTF8).
//! - [`retry`]: the retry tiers and expiry.
//! - [`classify`]: permanent-failure reply → bounce class; [`dsn`]: RFC 3464 reports.
//! - [`reply`]: a remote server's reply; [`config`]: `[deliver]`; [`metrics`].

mod attempt;
pub mod classify;
pub mod client;
pub mod config;
pub mod dsn;
pub mod egress;
pub mod engine;
pub mod metrics;
pub mod pool;
pub mod reply;
pub mod retry;
pub mod route;
pub mod throttle;

pub use config::DeliverConfig;
pub use engine::{DeliverError, Deliverer};
pub use metrics::DeliverMetrics;
pub use reply::RemoteReply;
