//! The server: accept loops over bound listeners, admission (limits, shutdown), one task
//! per session, and the drain.
//!
//! Admission order: a session is first an [`Activity`] of the lifecycle (refused once
//! shutdown has begun: `421 4.3.2`), then a slot under the connection limits (`421 4.7.0`).
//! Refusals on plain-text listeners are written without blocking the accept loop (a
//! refused client never gets a task of its own); on implicit-TLS listeners the connection
//! is just closed, since a plain-text reply would be garbage to a TLS client and a
//! handshake is too expensive to spend on a client being refused.
//!
//! After shutdown begins the listeners keep answering `421 4.3.2` until every session has
//! finished (idle ones are told 421 at once, messages being received complete), then
//! [`SmtpServer::serve`] returns. The binary bounds all of this with its drain grace period.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use kurir_lifecycle::{Activity, Lifecycle, SHUTTING_DOWN_REPLY};
use kurir_queue::Queue;
use kurir_smtp::Reply;
use kurir_state::{State, Tenant};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::timeout;

use super::config::{ConfigError, ListenerMode, SmtpConfig};
use super::conn::Conn;
use super::credentials::Credentials;
use super::limits::{Admission, AuthFailures, ConnectionLimits, Refusal};
use super::metrics::SmtpMetrics;
use super::session::Session;
use super::tls::{TlsError, TlsSource};
use crate::publish::Publisher;

/// How long refusing a connection may take on the in-memory path.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(1);
/// Accept queue length asked for (the kernel caps it at `net.core.somaxconn`).
const LISTEN_BACKLOG: u32 = 4096;
/// Pause after a failed accept (out of file descriptors, …) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum SmtpError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("smtp.tls: {0}")]
    Tls(#[from] TlsError),
}

/// What every session shares.
pub(crate) struct Shared<Q, St> {
    pub(crate) config: SmtpConfig,
    pub(crate) relay: Vec<IpNet>,
    pub(crate) credentials: Credentials,
    pub(crate) default_tenant: Tenant,
    pub(crate) tls: Option<TlsSource>,
    pub(crate) publisher: Publisher<Q>,
    pub(crate) state: St,
    pub(crate) lifecycle: Lifecycle,
    pub(crate) limits: ConnectionLimits,
    pub(crate) auth_failures: AuthFailures,
    pub(crate) metrics: SmtpMetrics,
    /// Sessions running now; the drain waits for zero.
    sessions: watch::Sender<usize>,
}

/// The SMTP submission server. Cheap to clone.
pub struct SmtpServer<Q, St> {
    shared: Arc<Shared<Q, St>>,
}

impl<Q, St> Clone for SmtpServer<Q, St> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<Q, St> std::fmt::Debug for SmtpServer<Q, St> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpServer")
            .field("hostname", &self.shared.config.hostname)
            .field("sessions", &*self.shared.sessions.borrow())
            .finish_non_exhaustive()
    }
}

/// Decrements the session count (and gauge) when a session task ends, however it ends.
struct SessionGuard {
    sessions: watch::Sender<usize>,
    metrics: SmtpMetrics,
    _admission: Admission,
    _activity: Activity,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.sessions.send_modify(|n| *n -= 1);
        self.metrics.session_closed();
    }
}

/// Binds the configured listeners (the binary's job; tests may bind port 0 themselves, or
/// configure port 0 here and read `local_addr`).
pub fn bind(config: &SmtpConfig) -> std::io::Result<Vec<(TcpListener, ListenerMode)>> {
    config
        .listeners
        .iter()
        .map(|l| {
            let socket = listen(l.address).map_err(|e| {
                std::io::Error::new(e.kind(), format!("smtp listener {}: {e}", l.address))
            })?;
            Ok((socket, l.mode))
        })
        .collect()
}

/// A listening socket with a deep accept queue: a burst of connections (a fleet of senders
/// reconnecting after a deploy) must wait in the queue, not have their handshakes dropped
/// and retried seconds later, as happens when the default (128–1024) queue overflows.
pub fn listen(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if address.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Validates `config`, loads the certificate and serves `listeners` until shutdown has
/// begun and every session has finished.
pub async fn run<Q: Queue + Clone, St: State + Clone>(
    config: SmtpConfig,
    listeners: Vec<(TcpListener, ListenerMode)>,
    publisher: Publisher<Q>,
    state: St,
    lifecycle: Lifecycle,
) -> Result<(), SmtpError> {
    SmtpServer::new(config, publisher, state, lifecycle)?
        .serve(listeners)
        .await;
    Ok(())
}

impl<Q: Queue, St: State> SmtpServer<Q, St> {
    /// Validates `config` and loads the certificate; nothing is bound.
    pub fn new(
        config: SmtpConfig,
        publisher: Publisher<Q>,
        state: St,
        lifecycle: Lifecycle,
    ) -> Result<Self, SmtpError> {
        config.validate()?;
        let tls = config.tls.as_ref().map(TlsSource::load).transpose()?;
        let default_tenant = Tenant::new(&config.default_tenant).map_err(|e| ConfigError {
            key: "default_tenant".into(),
            message: e.to_string(),
        })?;
        let limits = &config.limits;
        let shared = Shared {
            relay: config.relay.allowed_networks.clone(),
            credentials: Credentials::new(&config.auth.users),
            default_tenant,
            tls,
            publisher,
            state,
            lifecycle,
            limits: ConnectionLimits::new(limits.max_connections, limits.max_connections_per_ip),
            auth_failures: AuthFailures::new(
                limits.max_auth_failures_per_ip,
                limits.auth_failure_window,
            ),
            metrics: SmtpMetrics::default(),
            sessions: watch::Sender::new(0),
            config,
        };
        Ok(Self {
            shared: Arc::new(shared),
        })
    }

    /// The server's metric families (register them with the process registry).
    pub fn metrics(&self) -> &SmtpMetrics {
        &self.shared.metrics
    }

    /// Sessions running now.
    pub fn sessions(&self) -> usize {
        *self.shared.sessions.borrow()
    }

    /// Serves `listeners` until shutdown has begun and every session has finished.
    pub async fn serve(&self, listeners: Vec<(TcpListener, ListenerMode)>) {
        let mut accept = JoinSet::new();
        for (listener, mode) in listeners {
            let server = self.clone();
            accept.spawn(async move { server.accept_loop(listener, mode).await });
        }
        self.shared.lifecycle.shutdown_signal().wait().await;
        let mut sessions = self.shared.sessions.subscribe();
        // The sender lives in `shared`, so this cannot fail.
        let _ = sessions.wait_for(|n| *n == 0).await;
        accept.shutdown().await;
        tracing::info!("smtp server stopped");
    }

    async fn accept_loop(&self, listener: TcpListener, mode: ListenerMode) {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            match self.admit(peer.ip()) {
                Ok(guard) => {
                    let server = self.clone();
                    tokio::spawn(async move { server.session(stream, peer, mode, guard).await });
                }
                Err(reply) => {
                    if mode != ListenerMode::ImplicitTls {
                        // A fresh socket's send buffer is empty: this does not block.
                        let _ = stream.try_write(&reply);
                    }
                }
            }
        }
    }

    /// Runs one connection to its end on any stream: what the accept loop does for a TCP
    /// connection, for in-memory streams in tests (admission and limits included).
    pub async fn handle_connection<S>(&self, mut stream: S, peer: SocketAddr, mode: ListenerMode)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        match self.admit(peer.ip()) {
            Ok(guard) => self.session(stream, peer, mode, guard).await,
            Err(reply) => {
                if mode != ListenerMode::ImplicitTls {
                    let _ = timeout(REFUSAL_TIMEOUT, async {
                        stream.write_all(&reply).await?;
                        stream.shutdown().await
                    })
                    .await;
                }
            }
        }
    }

    /// A session slot for a client, or the reply that refuses it.
    fn admit(&self, ip: IpAddr) -> Result<SessionGuard, Vec<u8>> {
        let shared = &self.shared;
        let Some(activity) = shared.lifecycle.activity("smtp_session") else {
            shared.metrics.connection("refused_shutdown");
            return Err(format!("{SHUTTING_DOWN_REPLY}\r\n").into_bytes());
        };
        let admission = match shared.limits.admit(ip.to_canonical()) {
            Ok(admission) => admission,
            Err(refusal) => {
                shared.metrics.connection("refused_limit");
                let text = match refusal {
                    Refusal::Total => "Too many connections, try again later",
                    Refusal::PerIp => "Too many connections from your address",
                };
                tracing::info!(peer = %ip, ?refusal, "connection refused");
                return Err(Reply::new(421, (4, 7, 0), text).to_bytes(true));
            }
        };
        shared.metrics.connection("accepted");
        shared.metrics.session_opened();
        shared.sessions.send_modify(|n| *n += 1);
        Ok(SessionGuard {
            sessions: shared.sessions.clone(),
            metrics: shared.metrics.clone(),
            _admission: admission,
            _activity: activity,
        })
    }

    async fn session<S>(&self, stream: S, peer: SocketAddr, mode: ListenerMode, guard: SessionGuard)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let _guard = guard;
        let conn = match (mode, &self.shared.tls) {
            (ListenerMode::ImplicitTls, Some(tls)) => {
                let handshake = self.shared.config.timeouts.tls_handshake;
                match timeout(handshake, tls.acceptor().accept(stream)).await {
                    Ok(Ok(tls)) => Conn::Tls(Box::new(tls)),
                    Ok(Err(error)) => {
                        tracing::info!(%peer, %error, "TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                }
            }
            (ListenerMode::ImplicitTls, None) => return,
            _ => Conn::Plain(stream),
        };
        tracing::debug!(%peer, ?mode, "session started");
        Session::new(self.shared.clone(), conn, peer, mode)
            .run()
            .await;
    }
}
