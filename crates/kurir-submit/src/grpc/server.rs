//! [`GrpcServer`]: the tonic server with every service, health and reflection.
//!
//! - TLS (`[grpc.tls]`) is loaded and checked in [`GrpcServer::new`], before any port is
//!   bound; with `client_ca_file` a client must present a certificate from that CA (mutual
//!   TLS) before any call, in addition to its API key.
//! - Every `kurir.v1` call is a lifecycle activity (`activity.rs`): the drain waits for it,
//!   and calls arriving once shutdown has begun are UNAVAILABLE.
//! - `grpc.health.v1`: the overall status ("") and each of our services are SERVING while
//!   the node runs and NOT_SERVING once shutdown begins (a `Watch` sees the change).
//! - Reflection (v1 and v1alpha) describes our services and health.
//! - Shutdown: the listener is closed and open connections are told to go away (HTTP/2
//!   GOAWAY); calls in flight finish. [`GrpcServer::serve`] returns when every connection
//!   is closed, or as soon as no kurir call is in flight any more: a health `Watch` may keep
//!   its connection open for as long as its client likes, and must not keep `serve` from
//!   returning.

use std::sync::Arc;
use std::time::Duration;

use kurir_lifecycle::Lifecycle;
use kurir_proto::v1;
use kurir_proto::v1::admin_service_server::AdminServiceServer;
use kurir_proto::v1::submission_service_server::SubmissionServiceServer;
use kurir_proto::v1::suppression_service_server::SuppressionServiceServer;
use kurir_queue::Queue;
use kurir_state::State;
use tokio::net::TcpListener;
use tonic::server::NamedService;
use tonic::transport::server::{Router, TcpIncoming};
use tonic::transport::{Certificate, Server, ServerTlsConfig};
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::server::HealthReporter;
use tower_layer::{Identity, Stack};

use super::AdminHooks;
use super::activity::ActivityLayer;
use super::admin::AdminApi;
use super::auth::Authenticator;
use super::config::{GrpcConfig, GrpcTlsConfig};
use super::submission::SubmissionApi;
use super::suppression::SuppressionApi;
use crate::publish::Publisher;

/// Why the server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum GrpcError {
    #[error(transparent)]
    Config(#[from] super::config::ConfigError),
    #[error("grpc.tls: {0}")]
    Tls(String),
    #[error("grpc: {0}")]
    Serve(String),
}

/// The gRPC server of a node.
#[derive(Debug)]
pub struct GrpcServer<Q, S> {
    config: GrpcConfig,
    tls: Option<ServerTlsConfig>,
    publisher: Publisher<Q>,
    queue: Q,
    state: S,
    hooks: AdminHooks,
    auth: Arc<Authenticator>,
    lifecycle: Lifecycle,
}

/// A TLS handshake that takes longer is dropped (a client that connects and says nothing
/// must not hold a connection).
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 pings on idle connections, and how long a ping may go unanswered: a client that
/// vanished with a stream open (its responses waiting for room) is noticed and its stream
/// ended, instead of holding its window of work until a restart.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// The services whose health is reported, besides the overall status "".
const SERVICES: [&str; 3] = [
    <SubmissionServiceServer<()> as NamedService>::NAME,
    <SuppressionServiceServer<()> as NamedService>::NAME,
    <AdminServiceServer<()> as NamedService>::NAME,
];

impl<Q: Queue + Clone, S: State + Clone> GrpcServer<Q, S> {
    pub fn new(
        config: GrpcConfig,
        publisher: Publisher<Q>,
        queue: Q,
        state: S,
        hooks: AdminHooks,
        lifecycle: Lifecycle,
    ) -> Result<Self, GrpcError> {
        config.validate()?;
        let tls = config.tls.as_ref().map(load_tls).transpose()?;
        let auth = Arc::new(Authenticator::new(&config));
        Ok(Self {
            config,
            tls,
            publisher,
            queue,
            state,
            hooks,
            auth,
            lifecycle,
        })
    }

    /// Serves on `listener` until shutdown (see the module docs).
    pub async fn serve(self, listener: TcpListener) -> Result<(), GrpcError> {
        let local = listener.local_addr().ok();
        let tls = self.config.tls.is_some();
        let lifecycle = self.lifecycle.clone();
        let router = self.router().await?;
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let signal = lifecycle.shutdown_signal();
        tracing::info!(listen = ?local, tls, "grpc serving");
        let serve = router.serve_with_incoming_shutdown(incoming, signal.wait());
        tokio::pin!(serve);
        tokio::select! {
            served = &mut serve => served.map_err(|e| GrpcError::Serve(e.to_string()))?,
            () = calls_done_after_shutdown(lifecycle) => {
                // A call counts as done once its last frame is handed to the connection;
                // the connections get a moment to write it (e.g. a stream's UNAVAILABLE
                // trailers) before they are dropped, so the client reads the status
                // instead of a reset connection.
                let _ = tokio::time::timeout(FLUSH_GRACE, &mut serve).await;
                tracing::debug!("grpc calls done; idle connections left to close on their own");
            }
        }
        tracing::info!("grpc stopped");
        Ok(())
    }

    /// Every service behind the activity layer, on a server with TLS when configured.
    async fn router(self) -> Result<Router<Stack<ActivityLayer, Identity>>, GrpcError> {
        let max = self.config.max_request_bytes;
        let health = health(&self.lifecycle).await;
        let reflection_v1 = reflection().build_v1().map_err(reflection_error)?;
        let reflection_v1alpha = reflection().build_v1alpha().map_err(reflection_error)?;
        let submission = SubmissionApi::new(
            self.publisher,
            self.state.clone(),
            self.auth.clone(),
            &self.config,
            self.lifecycle.clone(),
        );
        let suppression = SuppressionApi::new(self.state.clone(), self.auth.clone());
        let admin = AdminApi::new(self.queue, self.state, self.hooks, self.auth);

        let mut builder = Server::builder()
            .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
            .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT));
        if let Some(tls) = self.tls {
            builder = builder
                .tls_config(tls)
                .map_err(|e| GrpcError::Tls(error_chain(&e)))?;
        }
        Ok(builder
            .layer(ActivityLayer::new(self.lifecycle, max))
            .add_service(health)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(SubmissionServiceServer::new(submission).max_decoding_message_size(max))
            .add_service(SuppressionServiceServer::new(suppression).max_decoding_message_size(max))
            .add_service(AdminServiceServer::new(admin).max_decoding_message_size(max)))
    }
}

/// `grpc.health.v1`: SERVING for everything now, NOT_SERVING once shutdown begins.
async fn health(lifecycle: &Lifecycle) -> HealthServer<impl Health> {
    let (reporter, service) = tonic_health::server::health_reporter();
    for name in SERVICES {
        reporter
            .set_service_status(name, ServingStatus::Serving)
            .await;
    }
    tokio::spawn(not_serving_on_shutdown(reporter, lifecycle.clone()));
    service
}

/// Reflection describing our services and health; served as v1 and as v1alpha (which
/// older tools such as grpcurl ask for).
fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
}

fn reflection_error(error: tonic_reflection::server::Error) -> GrpcError {
    GrpcError::Serve(format!("reflection: {error}"))
}

/// Loads and checks the certificate, key and client CA.
fn load_tls(tls: &GrpcTlsConfig) -> Result<ServerTlsConfig, GrpcError> {
    let read = |key: &str, path: &std::path::Path| {
        std::fs::read(path).map_err(|e| GrpcError::Tls(format!("{key} {}: {e}", path.display())))
    };
    let cert = read("cert_file", &tls.cert_file)?;
    let key = read("key_file", &tls.key_file)?;
    let mut config = ServerTlsConfig::new()
        .identity(tonic::transport::Identity::from_pem(cert, key))
        .timeout(TLS_HANDSHAKE_TIMEOUT);
    if let Some(ca) = &tls.client_ca_file {
        config = config.client_ca_root(Certificate::from_pem(read("client_ca_file", ca)?));
    }
    // tonic parses the PEM only when the acceptor is built: build one now, so a bad file
    // fails the start and not the first connection.
    Server::builder()
        .tls_config(config.clone())
        .map_err(|e| GrpcError::Tls(error_chain(&e)))?;
    Ok(config)
}

/// The error with its causes (tonic's own text is only "transport error").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Reports NOT_SERVING for everything once shutdown begins.
async fn not_serving_on_shutdown(reporter: HealthReporter, lifecycle: Lifecycle) {
    lifecycle.shutdown_signal().wait().await;
    for name in SERVICES.into_iter().chain([""]) {
        reporter
            .set_service_status(name, ServingStatus::NotServing)
            .await;
    }
}

/// How long connections may still write after the last call finished, at shutdown. It
/// ends early once every client has closed its connection; it is only reached when
/// clients keep theirs open. 250 ms was too short on a loaded CI machine (a stream's
/// UNAVAILABLE trailers arrived as a reset connection).
const FLUSH_GRACE: Duration = Duration::from_secs(1);

/// Resolves once shutdown has begun and no `grpc` activity is left.
async fn calls_done_after_shutdown(lifecycle: Lifecycle) {
    lifecycle.shutdown_signal().wait().await;
    lifecycle.idle("grpc").await;
}
