//! [`ConfigError`]: every error names the file, the key or the environment variable.

use std::path::PathBuf;

/// A configuration that cannot be used. The binary exits with code 2 on any of these.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The file given with `--config`.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not TOML.
    #[error("config file {} is not valid TOML: {message}", path.display())]
    Syntax {
        /// The file given with `--config`.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A key has a bad value, is unknown, or fails validation.
    #[error("config error at {key}: {message}")]
    Key {
        /// The dotted key path, e.g. `http.listen`.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// An environment override is malformed or sets a bad value.
    #[error("config error in environment variable {var}: {message}")]
    Env {
        /// The variable, e.g. `KURIR__HTTP__LISTEN`.
        var: String,
        /// What is wrong (naming the key it overrides where there is one).
        message: String,
    },
}

impl ConfigError {
    pub(crate) fn key(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Key {
            key: key.into(),
            message: message.into(),
        }
    }
}
