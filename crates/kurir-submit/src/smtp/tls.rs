//! The server certificate, loaded from files and reloaded without a restart.
//!
//! Certificates are renewed by tools (cert-manager, certbot) that replace the files in
//! place. Each handshake asks [`TlsSource::acceptor`] for the current config; at most once
//! per `reload_interval` that looks at the files' modification times and, if they changed,
//! loads the new pair. A pair that fails to load is logged and the old one kept, so a
//! half-written renewal never takes TLS down.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use super::config::TlsConfig;

/// Why a certificate pair could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: no certificate found")]
    NoCertificate { path: String },
    #[error("{path}: no private key found")]
    NoKey { path: String },
    #[error("certificate and key: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The current TLS config with what it was loaded from.
#[derive(Debug)]
pub(crate) struct TlsSource {
    config: TlsConfig,
    cached: Mutex<Cached>,
}

#[derive(Debug)]
struct Cached {
    server: Arc<ServerConfig>,
    mtimes: (Option<SystemTime>, Option<SystemTime>),
    checked: Instant,
}

impl TlsSource {
    /// Loads the pair once; an error here stops the server from starting.
    pub(crate) fn load(config: &TlsConfig) -> Result<Self, TlsError> {
        let cached = Cached {
            server: load_server_config(config)?,
            mtimes: mtimes(config),
            checked: Instant::now(),
        };
        Ok(Self {
            config: config.clone(),
            cached: Mutex::new(cached),
        })
    }

    /// The acceptor for a new handshake, reloading the files when they changed.
    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if cached.checked.elapsed() >= self.config.reload_interval {
            cached.checked = Instant::now();
            let now = mtimes(&self.config);
            if now != cached.mtimes {
                cached.mtimes = now;
                match load_server_config(&self.config) {
                    Ok(server) => {
                        tracing::info!(cert = %self.config.cert_file.display(), "TLS certificate reloaded");
                        cached.server = server;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "TLS certificate reload failed, keeping the old one");
                    }
                }
            }
        }
        TlsAcceptor::from(cached.server.clone())
    }
}

fn mtimes(config: &TlsConfig) -> (Option<SystemTime>, Option<SystemTime>) {
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    (mtime(&config.cert_file), mtime(&config.key_file))
}

fn open(path: &Path) -> Result<BufReader<File>, TlsError> {
    File::open(path)
        .map(BufReader::new)
        .map_err(|source| TlsError::Read {
            path: path.display().to_string(),
            source,
        })
}

fn load_server_config(config: &TlsConfig) -> Result<Arc<ServerConfig>, TlsError> {
    let cert_path = config.cert_file.display().to_string();
    let key_path = config.key_file.display().to_string();
    let read_err = |path: &str| {
        let path = path.to_owned();
        move |source| TlsError::Read { path, source }
    };
    let certs = rustls_pemfile::certs(&mut open(&config.cert_file)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_err(&cert_path))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { path: cert_path });
    }
    let key = rustls_pemfile::private_key(&mut open(&config.key_file)?)
        .map_err(read_err(&key_path))?
        .ok_or(TlsError::NoKey { path: key_path })?;
    // The provider is passed explicitly: no process-wide default is installed.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(Arc::new(server))
}

/// `TLSv1.3`-style name of a negotiated version, for `Received` headers and logs.
pub(crate) fn version_name(version: Option<rustls::ProtocolVersion>) -> String {
    match version {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".into(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".into(),
        Some(other) => format!("{other:?}"),
        None => "TLS".into(),
    }
}
