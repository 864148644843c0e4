//! tracing set-up, metric names, and the HTTP endpoint for `/metrics`, `/healthz` and
//! `/readyz`.
//!
//! # Layout
//!
//! - [`log`]: [`LogConfig`] (the `[log]` config section) and [`init_tracing`].
//! - [`metrics`]: every metric name and help text ([`metrics::ALL`]), and [`Metrics`], the
//!   registry later roles register their families in.
//! - [`http`]: [`HttpConfig`] (the `[http]` section) and [`http::serve`], the bounded
//!   hyper server for probes and scrapes.
//! - [`error`]: the [`TelemetryError`] enum.

pub mod error;
pub mod http;
pub mod log;
pub mod metrics;

pub use error::TelemetryError;
pub use http::HttpConfig;
pub use log::{LogConfig, LogFormat, init_tracing};
pub use metrics::{BuildInfo, MetricDef, MetricKind, Metrics};
