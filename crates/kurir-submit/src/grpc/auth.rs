//! API-key authentication, per-key permissions and rate limits.
//!
//! CONTRACT (implemented by the submission helper; the suppression and admin services use
//! it as it is): build an [`Authenticator`] once from the config; every RPC calls
//! [`Authenticator::authorize`] with its request's metadata and the service it belongs to,
//! and gets the [`Caller`] (tenant, key name) or the `Status` to return. Submission calls
//! [`Authenticator::charge`] with the number of messages before publishing.

use kurir_state::Tenant;
use tonic::Status;
use tonic::metadata::MetadataMap;

use super::config::{ApiService, GrpcConfig};

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The key's configured name.
    pub key: String,
    pub tenant: Tenant,
    /// Whether the key may call the admin service (also allows global suppression lists).
    pub admin: bool,
}

/// The configured keys with their rate limiters.
#[derive(Debug)]
pub struct Authenticator {
    _private: (),
}

impl Authenticator {
    pub fn new(config: &GrpcConfig) -> Self {
        let _ = config;
        Self { _private: () }
    }

    /// UNAUTHENTICATED without a known key, PERMISSION_DENIED when the key may not call
    /// `service`.
    pub fn authorize(&self, metadata: &MetadataMap, service: ApiService) -> Result<Caller, Status> {
        let _ = (metadata, service);
        Err(Status::unauthenticated("not implemented"))
    }

    /// Takes `n` from the key's rate; RESOURCE_EXHAUSTED when over it.
    pub fn charge(&self, caller: &Caller, n: u32) -> Result<(), Status> {
        let _ = (caller, n);
        Ok(())
    }
}
