//! kurir-loadtest: a load generator (SMTP or gRPC) and a fast SMTP sink with fault
//! injection, for load tests of kurir (and of any other MTA, through SMTP).
//!
//! A run sends messages that each carry `X-Kurir-Loadtest: <run-id> <seq> <unix-nanos>`;
//! the sink reads that header to count distinct messages and duplicates and to measure the
//! delivery latency from the moment the message was sent. `kurir demo` runs both in one
//! process around an all-in-one node.
//!
//! # Layout
//!
//! - [`message`]: what is sent: sizes, recipients, the header and the message text.
//! - [`send`]: the load generator: pacing, workers, the report; `send/smtp.rs` is a small
//!   pipelined SMTP client (STARTTLS, AUTH), `send/grpc.rs` the unary and streaming gRPC
//!   submission.
//! - [`sink`]: the SMTP sink: listener, one session per connection (`sink/session.rs`),
//!   fault injection ([`sink::Faults`]), counters ([`sink::SinkReport`]), TLS.
//! - [`scenario`]: scenario files (`loadtest/scenarios/*.toml`): what is sent, to what, the
//!   goal; running one and checking the goal.
//! - [`latency`]: latency histograms and their percentiles.
//! - [`cli`]: the `kurir-loadtest` command line (`send`, `sink`, `scenario`).
//! - `io`: the stream type both SMTP sides share, and SMTP reply lines.
//! - `tls`: rustls client and server configs (a self-signed sink certificate).

pub mod cli;
mod io;
pub mod latency;
pub mod message;
pub mod scenario;
pub mod send;
pub mod sink;
mod tls;
