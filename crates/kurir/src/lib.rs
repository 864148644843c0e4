//! kurir, an outbound mail transfer agent that runs as a cluster: the application behind
//! the thin `kurir` binary (`main.rs` only parses the command line and calls [`cli::run`]).
//!
//! # Layout
//!
//! - [`cli`]: the command line (`serve`, `demo`, `config check`, `config example`,
//!   `admin …`) and
//!   exit codes.
//! - [`admin`]: operator commands: `admin init-topics` on the configured backends, the
//!   others as a client of a node's gRPC API (suppression, queue, domains, messages).
//! - [`demo`]: `kurir demo`: a node, an SMTP sink and a load in one process, and what
//!   became of every recipient.
//! - [`config`]: the [`config::Config`] file: sections, defaults, `KURIR__…` environment
//!   overrides, validation.
//! - [`roles`]: the roles `kurir serve` runs on the configured backends: submission (SMTP
//!   and the gRPC API) and delivery.
//! - [`serve`]: `kurir serve`: telemetry endpoint, signals, readiness, the bounded drain.
//! - [`EXAMPLE_CONFIG`]: `docs/kurir.example.toml`, printed by `kurir config example`.

pub mod admin;
pub mod cli;
pub mod config;
pub mod demo;
pub mod roles;
pub mod serve;

/// The documented example configuration (`docs/kurir.example.toml`), compiled in so
/// `kurir config example` always prints the file the docs describe.
pub const EXAMPLE_CONFIG: &str = include_str!("../../../docs/kurir.example.toml");
