//! `[grpc]`: the gRPC API's listener, TLS and API keys.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `[grpc]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrpcConfig {
    /// Serve the gRPC API. On by default, on loopback.
    pub enabled: bool,
    /// The listen address.
    pub listen: SocketAddr,
    /// TLS for the listener; without it the API is plain text (fine on loopback or inside
    /// a service mesh that terminates TLS).
    pub tls: Option<GrpcTlsConfig>,
    /// The API keys. Without any, every call is UNAUTHENTICATED.
    pub api_keys: Vec<ApiKeyConfig>,
    /// The largest request message accepted, in bytes (a raw message or a structured one
    /// with its attachments). Beyond the queue's record limit a message is refused anyway.
    pub max_request_bytes: usize,
    /// Requests of one `SubmitStream` in flight at once; the server reads the next request
    /// only when one finishes (flow control).
    pub stream_window: usize,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            tls: None,
            api_keys: Vec::new(),
            max_request_bytes: 26 * 1024 * 1024,
            stream_window: 64,
        }
    }
}

/// `[grpc.tls]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcTlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// PEM CA certificates: when set, clients must present a certificate signed by one
    /// of them (mutual TLS), in addition to their API key.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
}

/// What an API key may call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ApiService {
    Submission,
    Suppression,
    Admin,
}

impl ApiService {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Submission => "submission",
            Self::Suppression => "suppression",
            Self::Admin => "admin",
        }
    }
}

/// `[[grpc.api_keys]]`. Keys are random tokens (at least 128 bits); only their SHA-256 is
/// configured, e.g. `printf %s "$KEY" | sha256sum`. A fast hash is right for keys of that
/// strength (unlike passwords, they cannot be guessed), and it keeps authentication off
/// the hot path.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// A name for logs and metrics (never the key).
    pub name: String,
    /// The key's SHA-256, 64 hex digits.
    pub sha256: String,
    /// The tenant the key acts for (must be in `state.tenants`).
    pub tenant: String,
    /// The services it may call.
    pub services: Vec<ApiService>,
    /// Requests (messages, for submission) per second; 0 = unlimited.
    #[serde(default)]
    pub rate_per_second: f64,
}

/// A configuration problem, naming the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("grpc.{key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

fn err(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        message: message.into(),
    }
}

impl GrpcConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.stream_window == 0 {
            return Err(err("stream_window", "must be at least 1"));
        }
        if self.max_request_bytes < 1024 {
            return Err(err("max_request_bytes", "must be at least 1024"));
        }
        if let Some(tls) = &self.tls {
            for (key, path) in [
                ("tls.cert_file", &tls.cert_file),
                ("tls.key_file", &tls.key_file),
            ] {
                if !path.is_file() {
                    return Err(err(key, format!("{} is not a file", path.display())));
                }
            }
            if let Some(ca) = &tls.client_ca_file
                && !ca.is_file()
            {
                return Err(err(
                    "tls.client_ca_file",
                    format!("{} is not a file", ca.display()),
                ));
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, k) in self.api_keys.iter().enumerate() {
            if k.name.trim().is_empty() || !names.insert(k.name.as_str()) {
                return Err(err(
                    format!("api_keys[{i}].name"),
                    "must be unique and not empty",
                ));
            }
            if k.sha256.len() != 64 || !k.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(err(
                    format!("api_keys[{i}].sha256"),
                    "must be 64 hex digits (the SHA-256 of the key)",
                ));
            }
            kurir_state::Tenant::new(&k.tenant)
                .map_err(|e| err(format!("api_keys[{i}].tenant"), e.to_string()))?;
            if k.services.is_empty() {
                return Err(err(format!("api_keys[{i}].services"), "lists no service"));
            }
            if !k.rate_per_second.is_finite() || k.rate_per_second < 0.0 {
                return Err(err(
                    format!("api_keys[{i}].rate_per_second"),
                    "must be 0 or more",
                ));
            }
        }
        Ok(())
    }
}
