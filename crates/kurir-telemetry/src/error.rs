//! [`TelemetryError`]: what can go wrong setting up logs.

/// Errors from this crate.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// `log.level` is not a valid filter.
    #[error("invalid log level {value:?}: {reason}")]
    InvalidLogLevel {
        /// The configured value.
        value: String,
        /// Why it was rejected.
        reason: String,
    },
    /// `RUST_LOG` is set but is not a valid filter.
    #[error("invalid RUST_LOG {value:?}: {reason}")]
    InvalidRustLog {
        /// The variable's value.
        value: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A global tracing subscriber was already installed.
    #[error("tracing is already initialised")]
    AlreadyInitialised,
}
