//! [`GrpcServer`]: the tonic server with every service, health and reflection.

use std::sync::Arc;

use kurir_lifecycle::Lifecycle;
use kurir_queue::Queue;
use kurir_state::State;
use tokio::net::TcpListener;

use super::AdminHooks;
use super::auth::Authenticator;
use super::config::GrpcConfig;
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
    publisher: Publisher<Q>,
    queue: Q,
    state: S,
    hooks: AdminHooks,
    auth: Arc<Authenticator>,
    lifecycle: Lifecycle,
}

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
        let auth = Arc::new(Authenticator::new(&config));
        Ok(Self {
            config,
            publisher,
            queue,
            state,
            hooks,
            auth,
            lifecycle,
        })
    }

    /// Serves on `listener` until shutdown.
    pub async fn serve(self, listener: TcpListener) -> Result<(), GrpcError> {
        let _ = (
            listener,
            &self.config,
            &self.publisher,
            &self.queue,
            &self.state,
        );
        let _ = (&self.hooks, &self.auth, &self.lifecycle);
        Err(GrpcError::Serve("not implemented".into()))
    }
}
