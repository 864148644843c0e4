//! The gRPC API (`proto/kurir/v1/{submission,suppression,admin}.proto`) on tonic.
//!
//! CONTRACT (implemented by helpers; the binary relies on exactly this API):
//! - [`GrpcServer::new`] checks the config (TLS files load, key hashes parse) and builds
//!   the services; [`GrpcServer::serve`] serves on a bound listener until the lifecycle
//!   shuts down, then stops accepting and lets calls in flight finish (bounded by the
//!   lifecycle's drain), with `grpc.health.v1` (SERVING until shutdown, then NOT_SERVING)
//!   and server reflection (`v1::FILE_DESCRIPTOR_SET`).
//! - Authentication ([`auth`]): `authorization: Bearer <key>` metadata; the key's SHA-256
//!   is looked up among `[[grpc.api_keys]]` (constant-time compare); missing or unknown →
//!   UNAUTHENTICATED; a service the key may not call or another tenant's data →
//!   PERMISSION_DENIED; over its rate → RESOURCE_EXHAUSTED. With mTLS, a client without a
//!   valid certificate never gets past the handshake.
//! - Submission ([`submission`]) goes through the same [`crate::publish::Publisher`] as
//!   SMTP: a raw message with its envelope is normalised the same way (Message-ID, Date;
//!   no Received header), a structured one is built with `mail-builder` first; suppressed
//!   recipients are reported per recipient (and as SUPPRESSED events), not silently
//!   dropped; idempotency keys go through `State::claim_idempotency_key`.
//! - Suppression ([`suppression`]) and admin ([`admin`]) map onto `kurir_state::State`,
//!   `kurir_state::bulk`, `kurir_queue::Queue` and [`AdminHooks`].
//!
//! # Layout
//! - [`config`]: `[grpc]`; [`auth`]: API keys, permissions, rate limits (the client side of a
//!   key is `kurir_proto::auth::Bearer`).
//! - [`server`]: the tonic server: TLS, health, reflection, shutdown; `activity.rs`: the
//!   layer that makes every kurir call a lifecycle activity.
//! - [`submission`]: `SubmissionService` (unary, flow-controlled streams, idempotency);
//!   `request.rs` checks a request (errors name the field) and takes raw messages;
//!   `build.rs` builds structured ones into MIME.
//! - [`suppression`], [`admin`]: the other two services.

mod activity;
pub mod admin;
pub mod auth;
mod build;
pub mod config;
mod request;
pub mod server;
pub mod submission;
pub mod suppression;

use std::sync::Arc;

pub use auth::api_key_sha256;
pub use config::{ApiKeyConfig, ApiService, GrpcConfig, GrpcTlsConfig};
pub use server::GrpcServer;

use kurir_proto::v1;

/// The gRPC code of a client-facing error (the shared `ErrorCode` table).
fn grpc_code(code: kurir_core::ErrorCode) -> tonic::Code {
    tonic::Code::from(i32::from(code.grpc_code()))
}

/// The status of a client-facing error: its gRPC code and its text.
fn code_status(code: kurir_core::ErrorCode) -> tonic::Status {
    tonic::Status::new(grpc_code(code), code.to_string())
}

/// The status for a store failure: the code from the shared [`kurir_core::ErrorCode`]
/// table; bad input keeps its message (it names the field), a failing store is logged
/// and answered with the generic text.
fn state_status(error: kurir_state::StateError) -> tonic::Status {
    use kurir_state::StateError;
    let code = error.code();
    match error {
        StateError::Unavailable(_) | StateError::Corrupt(_) => {
            tracing::warn!(%error, "state store call failed");
            code_status(code)
        }
        StateError::Invalid { .. } | StateError::UnknownTenant(_) => {
            tonic::Status::new(grpc_code(code), error.to_string())
        }
    }
}

/// What the admin service needs from outside this crate: the delivery role's site state
/// (when it runs in this process), the topics to create, the maximum queue age.
#[derive(Clone)]
pub struct AdminHooks {
    /// Per-site delivery state; `None` when this process does not deliver.
    pub sites: Option<Arc<dyn Fn() -> Vec<v1::SiteStats> + Send + Sync>>,
    /// The topics delivery reads, each with its consumer group
    /// (`QueueConfig::delivery_subscriptions`), for lag.
    pub delivery: Vec<kurir_queue::DeliverySubscription>,
    /// Every topic with its partition count, for `InitTopics`.
    pub topic_specs: Vec<kurir_queue::TopicSpec>,
    /// The default length of a bounce order (`deliver.max_age`).
    pub max_age: std::time::Duration,
}

impl std::fmt::Debug for AdminHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminHooks")
            .field("sites", &self.sites.is_some())
            .field("delivery", &self.delivery)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use kurir_state::StateError;

    use super::*;

    #[test]
    fn store_failures_keep_their_code() {
        let s = state_status(StateError::Unavailable("redis down".into()));
        assert_eq!(s.code(), tonic::Code::Unavailable);
        assert!(
            !s.message().contains("redis down"),
            "detail is logged, not sent"
        );
        let s = state_status(StateError::Corrupt("bad record".into()));
        assert_eq!(s.code(), tonic::Code::Unavailable);
        assert!(!s.message().contains("bad record"));
        let s = state_status(StateError::invalid("cursor", "bad"));
        assert_eq!(s.code(), tonic::Code::InvalidArgument);
        assert!(s.message().contains("cursor"));
        let s = state_status(StateError::UnknownTenant("x".into()));
        assert_eq!(s.code(), tonic::Code::PermissionDenied);
    }
}
