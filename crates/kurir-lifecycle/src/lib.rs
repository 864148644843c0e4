//! Shutdown signal, in-flight activity guards and the bounded drain every kurir server shares.
//!
//! One [`Lifecycle`] exists per process. Servers take a clone (or just its
//! [`ShutdownSignal`]), register each unit of in-flight work as an [`Activity`], and stop
//! taking new work once shutdown has begun. The binary turns an OS signal into
//! [`Lifecycle::shutdown`] and then [`Lifecycle::drain`]s under the configured grace period.
//!
//! # Layout
//!
//! - [`lifecycle`]: the [`Lifecycle`] handle: shutdown, readiness and the activity table.
//! - [`activity`]: the [`Activity`] RAII guard and the [`ActivitySnapshot`] of one in flight.
//! - [`drain`]: [`Lifecycle::drain`], the bounded wait for activities, and its [`DrainReport`].
//! - [`signal`]: [`ShutdownSignal`], the future/flag every task awaits or polls.
//! - [`os_signal`]: SIGTERM / SIGINT handling ([`OsSignals`], [`wait_for_os_signal`]).

pub mod activity;
pub mod drain;
pub mod lifecycle;
pub mod os_signal;
pub mod signal;

pub use activity::{Activity, ActivitySnapshot};
pub use drain::DrainReport;
pub use lifecycle::Lifecycle;
pub use os_signal::{OsSignal, OsSignals, wait_for_os_signal};
pub use signal::ShutdownSignal;

/// The SMTP reply a server sends when [`Lifecycle::activity`] refuses new work.
pub const SHUTTING_DOWN_REPLY: &str = "421 4.3.2 shutting down";
