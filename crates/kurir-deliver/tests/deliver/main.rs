//! End-to-end delivery scenarios, one per file, each on both backends (embedded queue and
//! state; Kafka and Redis). See `harness.rs`.

mod harness;

mod adaptive_backoff;
mod bounce_dsn;
mod bounce_order;
mod chunking;
mod connection_limit;
mod delivered;
mod dsn_replay;
mod egress_sources;
mod expiry;
mod implicit_mx;
mod later_tier;
mod mx_fallback;
mod null_mx;
mod paused;
mod rate_limit;
mod reuse;
mod size_refusal;
mod smarthost;
mod smtputf8_mismatch;
mod stale_connections;
mod starttls;
mod suppressed;
mod two_nodes;
