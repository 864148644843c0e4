//! Real servers for tests: each starts on a free loopback port with its own temporary
//! directory, is ready (a real client got an answer) before its constructor returns, and
//! stops when dropped. Nothing here is a mock: tests talk to the real programs.
//!
//! # Layout
//! - [`wait`]: `wait_for` (poll a condition with a timeout, never a bare sleep) and
//!   `free_port`.
//! - [`process`]: a child process that is killed on drop and whose output is kept for
//!   failure messages.
//! - [`redis`]: [`RedisServer`], a `redis-server` without persistence.
//! - [`kafka`]: [`KafkaBroker`], the Kafka-API broker Tansu on in-memory storage, with a helper
//!   to create topics.
//! - [`dns`]: [`DnsServer`], an in-process authoritative DNS server (hickory-server) over UDP
//!   and TCP whose zone a test sets, including answers that fail.
//! - [`smtp_sink`]: [`SmtpSink`], a scriptable SMTP server standing in for a remote MX: it
//!   accepts, refuses, stalls or disconnects as told and records every transaction.
//! - [`tls`]: [`TestCa`], a test certificate authority issuing certificates for any name.
//!
//! External programs are found on `PATH` (`redis-server`, `tansu`); `scripts/test.sh`
//! installs them. A missing program fails the test with a message that says how to install it.

pub mod dns;
pub mod kafka;
pub mod process;
pub mod redis;
pub mod smtp_sink;
pub mod tls;
pub mod wait;

pub use dns::DnsServer;
pub use kafka::KafkaBroker;
pub use redis::RedisServer;
pub use smtp_sink::SmtpSink;
pub use tls::TestCa;
pub use wait::{free_port, wait_for};
