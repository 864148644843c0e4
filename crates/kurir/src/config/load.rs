//! Loading: file (or nothing) → TOML table → environment overrides → typed [`Config`]
//! → [`Config::validate`], with every error naming its key or variable.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use toml::{Table, Value};

use super::env::{self, Override};
use super::{Config, ConfigError};

impl Config {
    /// Reads `path` (`None`: every key at its default), applies the `KURIR__…` overrides
    /// found in `env` (normally `std::env::vars_os()`), deserialises and validates.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (OsString, OsString)>,
    ) -> Result<Self, ConfigError> {
        let text = match path {
            Some(path) => std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?,
            None => String::new(),
        };
        Self::from_toml(&text, path, env)
    }

    /// Like [`Config::load`] with the file's text in hand; `origin` names it in errors.
    pub fn from_toml(
        text: &str,
        origin: Option<&Path>,
        env: impl IntoIterator<Item = (OsString, OsString)>,
    ) -> Result<Self, ConfigError> {
        let mut table: Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::Syntax {
                path: origin.map_or_else(|| PathBuf::from("<string>"), Path::to_owned),
                message: e.to_string().trim_end().to_owned(),
            })?;
        let overrides = env::apply(&mut table, env)?;
        let mut config: Self =
            serde_path_to_error::deserialize(Value::Table(table)).map_err(|e| {
                let key = e.path().to_string();
                let message = e.into_inner().message().trim_end().to_owned();
                blame_env(ConfigError::key(key, message), &overrides)
            })?;
        config.derive_settings();
        config.validate().map_err(|e| blame_env(e, &overrides))?;
        Ok(config)
    }
}

/// Turns an error about a key that an environment variable set into an error naming
/// that variable: the operator must look at the pod spec, not the file.
fn blame_env(error: ConfigError, overrides: &[Override]) -> ConfigError {
    let ConfigError::Key { key, message } = error else {
        return error;
    };
    // The key itself, or a section the override created (an unknown `[smtp]` section
    // is reported at `smtp` when KURIR__SMTP__PORT made it).
    let culprit = overrides
        .iter()
        .find(|o| o.key == key || o.key.starts_with(&format!("{key}.")));
    match culprit {
        Some(o) => ConfigError::Env {
            var: o.var.clone(),
            message: format!("{}: {message}", o.key),
        },
        None => ConfigError::Key { key, message },
    }
}
