//! [`LogConfig`] (the `[log]` config section) and [`init_tracing`].

use std::io::IsTerminal as _;

use serde::{Deserialize, Serialize};
use tracing_subscriber::EnvFilter;

use crate::error::TelemetryError;

/// The `[log]` config section.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `human` (multi-field text lines) or `json` (one JSON object per line, for log
    /// shippers).
    pub format: LogFormat,
    /// An `EnvFilter` directive such as `info` or `info,kurir_smtp=debug`. `RUST_LOG`,
    /// when set, replaces it.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Human,
            level: "info".to_owned(),
        }
    }
}

/// How log lines are written (to stderr; stdout is left to the CLI).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Text for a terminal.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

impl LogConfig {
    /// Checks that `level` is a filter, so a typo is a config error and not a silent
    /// loss of every log line.
    pub fn validate(&self) -> Result<(), TelemetryError> {
        self.filter().map(drop)
    }

    fn filter(&self) -> Result<EnvFilter, TelemetryError> {
        let invalid = |reason: String| TelemetryError::InvalidLogLevel {
            value: self.level.clone(),
            reason,
        };
        let level = self.level.trim();
        // EnvFilter reads a lone word like "debg" as a target name, which would log
        // nothing at all; a lone word must therefore be a level.
        let lone_word = !level.contains([',', '=', '[']);
        if lone_word && !LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
            return Err(invalid(format!(
                "not a level (one of {}); for per-target levels write e.g. \"info,kurir_smtp=debug\"",
                LEVELS.join(", ")
            )));
        }
        EnvFilter::try_new(level).map_err(|e| invalid(e.to_string()))
    }
}

/// Installs the global tracing subscriber, writing to stderr in `config.format`.
/// `RUST_LOG`, when set and non-empty, overrides `config.level`. Call once per process.
pub fn init_tracing(config: &LogConfig) -> Result<(), TelemetryError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(value) if !value.trim().is_empty() => {
            EnvFilter::try_new(&value).map_err(|e| TelemetryError::InvalidRustLog {
                value: value.clone(),
                reason: e.to_string(),
            })?
        }
        _ => config.filter()?,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colour codes only for a terminal: they are noise in `kubectl logs`.
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let installed = match config.format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
    };
    installed.map_err(|_| TelemetryError::AlreadyInitialised)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(level: &str) -> LogConfig {
        LogConfig {
            level: level.to_owned(),
            ..LogConfig::default()
        }
    }

    #[test]
    fn accepts_levels_and_directives() {
        for ok in [
            "info",
            "DEBUG",
            "off",
            "info,kurir_smtp=debug",
            "kurir=trace",
        ] {
            assert!(level(ok).validate().is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_a_lone_word_that_is_not_a_level() {
        let err = level("verbose").validate().unwrap_err();
        assert!(err.to_string().contains("not a level"), "{err}");
    }

    #[test]
    fn rejects_a_bad_directive() {
        assert!(level("kurir=loud").validate().is_err());
    }

    #[test]
    fn format_is_lowercase_in_config() {
        let config: LogConfig = toml::from_str("format = \"json\"").unwrap();
        assert_eq!(config.format, LogFormat::Json);
        assert_eq!(config.level, "info", "defaults fill the rest");
        assert!(toml::from_str::<LogConfig>("colour = true").is_err());
    }
}
