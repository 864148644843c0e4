//! API-key authentication, per-key permissions and rate limits.
//!
//! CONTRACT (the suppression and admin services use it as it is): build an
//! [`Authenticator`] once from the config; every RPC calls [`Authenticator::authorize`] with
//! its request's metadata and the service it belongs to, and gets the [`Caller`] (tenant, key
//! name) or the `Status` to return. Submission calls [`Authenticator::charge`] with the
//! number of messages before publishing.
//!
//! How it works:
//! - A key is presented as `authorization: Bearer <key>`. Its SHA-256 is looked up in a map
//!   keyed by the configured digests; the map's key type compares in constant time, so
//!   even the final equality check of the lookup does not tell how many leading bytes of a
//!   digest matched. (The key is never stored; a digest of a 128-bit random token cannot be
//!   turned back into it.)
//! - Rate limits (`rate_per_second`, a GCRA from `governor`, bursting up to one second's
//!   worth) count *requests* for the suppression and admin services, charged by
//!   [`Authenticator::authorize`] itself, and *messages* for submission, charged by the
//!   submission service with [`Authenticator::charge`] (so `authorize` does not charge
//!   submission calls: a stream of 500 messages is 500 cells, not 1).

use std::collections::{BTreeSet, HashMap};
use std::num::NonZeroU32;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
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

/// A SHA-256 digest whose equality is constant-time (see the module docs).
#[derive(Clone, Copy)]
struct Digest([u8; 32]);

impl std::hash::Hash for Digest {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl PartialEq for Digest {
    fn eq(&self, other: &Self) -> bool {
        self.0
            .iter()
            .zip(other.0.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

impl Eq for Digest {}

impl Digest {
    fn of(key: &[u8]) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, key);
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        Self(out)
    }

    /// From 64 hex digits (checked by `GrpcConfig::validate`).
    fn from_hex(hex: &str) -> Option<Self> {
        let bytes = hex.as_bytes();
        if bytes.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            let hi = (pair[0] as char).to_digit(16)?;
            let lo = (pair[1] as char).to_digit(16)?;
            out[i] = (hi * 16 + lo) as u8;
        }
        Some(Self(out))
    }
}

/// The lowercase hex SHA-256 of an API key: what `[[grpc.api_keys]] sha256` holds for it
/// (`printf %s "$KEY" | sha256sum`). It is the digest [`Authenticator::authorize`] looks
/// up for a presented key, so a config made with it authenticates that key.
pub fn api_key_sha256(key: &str) -> String {
    Digest::of(key.as_bytes())
        .0
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One configured key.
struct Key {
    caller: Caller,
    services: BTreeSet<ApiService>,
}

/// A key's rate limit.
struct Limit {
    limiter: DefaultDirectRateLimiter,
    rate_per_second: f64,
}

/// The configured keys with their rate limiters.
pub struct Authenticator {
    keys: HashMap<Digest, Key>,
    /// By key name; keys without a limit are absent.
    limits: HashMap<String, Limit>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names only: digests stay out of logs.
        let mut names: Vec<&str> = self.keys.values().map(|k| k.caller.key.as_str()).collect();
        names.sort_unstable();
        f.debug_struct("Authenticator")
            .field("keys", &names)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Builds the key table. Entries `GrpcConfig::validate` would refuse (bad digest, bad
    /// tenant) are left out, so they can never authenticate.
    pub fn new(config: &GrpcConfig) -> Self {
        let mut keys = HashMap::new();
        let mut limits = HashMap::new();
        for key in &config.api_keys {
            let (Some(digest), Ok(tenant)) =
                (Digest::from_hex(&key.sha256), Tenant::new(&key.tenant))
            else {
                tracing::warn!(key = %key.name, "invalid API key entry ignored");
                continue;
            };
            let services: BTreeSet<ApiService> = key.services.iter().copied().collect();
            let caller = Caller {
                key: key.name.clone(),
                tenant,
                admin: services.contains(&ApiService::Admin),
            };
            if let Some(limiter) = limiter(key.rate_per_second) {
                limits.insert(
                    key.name.clone(),
                    Limit {
                        limiter,
                        rate_per_second: key.rate_per_second,
                    },
                );
            }
            keys.insert(digest, Key { caller, services });
        }
        Self { keys, limits }
    }

    /// UNAUTHENTICATED without a known key, PERMISSION_DENIED when the key may not call
    /// `service`. For the suppression and admin services this also charges one request
    /// to the key's rate (RESOURCE_EXHAUSTED when over it); submission charges messages
    /// itself with [`Authenticator::charge`].
    pub fn authorize(&self, metadata: &MetadataMap, service: ApiService) -> Result<Caller, Status> {
        let token = bearer(metadata)?;
        let Some(key) = self.keys.get(&Digest::of(token.as_bytes())) else {
            return Err(Status::unauthenticated("unknown API key"));
        };
        if !key.services.contains(&service) {
            return Err(Status::permission_denied(format!(
                "API key {:?} may not call the {} service",
                key.caller.key,
                service.as_str()
            )));
        }
        if service != ApiService::Submission {
            self.charge(&key.caller, 1)?;
        }
        Ok(key.caller.clone())
    }

    /// Takes `n` from the key's rate; RESOURCE_EXHAUSTED when over it.
    pub fn charge(&self, caller: &Caller, n: u32) -> Result<(), Status> {
        let (Some(limit), Some(n)) = (self.limits.get(&caller.key), NonZeroU32::new(n)) else {
            return Ok(());
        };
        match limit.limiter.check_n(n) {
            Ok(Ok(())) => Ok(()),
            // Over the rate now, or more at once than the burst ever allows.
            Ok(Err(_)) | Err(_) => Err(Status::resource_exhausted(format!(
                "API key {:?} is over its rate limit of {} per second",
                caller.key, limit.rate_per_second
            ))),
        }
    }
}

/// The key of `authorization: Bearer <key>`.
fn bearer(metadata: &MetadataMap) -> Result<&str, Status> {
    let missing = || Status::unauthenticated("missing API key (authorization: Bearer <key>)");
    let value = metadata.get("authorization").ok_or_else(missing)?;
    let value = value
        .to_str()
        .map_err(|_| Status::unauthenticated("malformed authorization header"))?;
    let (scheme, token) = value.trim().split_once(' ').ok_or_else(missing)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(missing());
    }
    Ok(token)
}

/// A GCRA for `rate` per second with a burst of one second's worth (at least 1); `None` for
/// 0 (unlimited).
fn limiter(rate: f64) -> Option<DefaultDirectRateLimiter> {
    if !rate.is_finite() || rate <= 0.0 {
        return None;
    }
    let period = Duration::from_secs_f64(1.0 / rate);
    let burst = NonZeroU32::new(rate.ceil().min(f64::from(u32::MAX)) as u32)?;
    let quota = Quota::with_period(period)?.allow_burst(burst);
    Some(RateLimiter::direct(quota))
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::super::config::ApiKeyConfig;

    fn config(rate: f64) -> GrpcConfig {
        GrpcConfig {
            api_keys: vec![ApiKeyConfig {
                name: "app".into(),
                sha256: api_key_sha256("secret-key"),
                tenant: "acme".into(),
                services: vec![ApiService::Submission, ApiService::Suppression],
                rate_per_second: rate,
            }],
            ..GrpcConfig::default()
        }
    }

    fn metadata(value: &str) -> MetadataMap {
        let mut m = MetadataMap::new();
        m.insert("authorization", value.parse().unwrap());
        m
    }

    #[test]
    fn digests_compare_by_value() {
        let a = Digest::of(b"a");
        assert!(a == Digest::of(b"a"));
        assert!(a != Digest::of(b"b"));
        let hex = api_key_sha256("a");
        assert!(Digest::from_hex(&hex).unwrap() == a);
        assert!(Digest::from_hex(&hex.to_uppercase()).unwrap() == a);
        assert!(Digest::from_hex("zz").is_none());
    }

    #[test]
    fn key_digests_are_what_sha256sum_prints() {
        // `printf %s abc | sha256sum`
        assert_eq!(
            api_key_sha256("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn known_key_with_the_service_is_the_caller() {
        let auth = Authenticator::new(&config(0.0));
        let caller = auth
            .authorize(&metadata("Bearer secret-key"), ApiService::Submission)
            .unwrap();
        assert_eq!(caller.key, "app");
        assert_eq!(caller.tenant.as_str(), "acme");
        assert!(!caller.admin);
        // The scheme is case-insensitive.
        assert!(
            auth.authorize(&metadata("bearer secret-key"), ApiService::Suppression)
                .is_ok()
        );
    }

    #[test]
    fn missing_unknown_and_unauthorised_keys_are_refused() {
        let auth = Authenticator::new(&config(0.0));
        let code = |m: &MetadataMap, s| auth.authorize(m, s).unwrap_err().code();
        assert_eq!(
            code(&MetadataMap::new(), ApiService::Submission),
            tonic::Code::Unauthenticated
        );
        assert_eq!(
            code(&metadata("Bearer other"), ApiService::Submission),
            tonic::Code::Unauthenticated
        );
        assert_eq!(
            code(&metadata("Basic secret-key"), ApiService::Submission),
            tonic::Code::Unauthenticated
        );
        assert_eq!(
            code(&metadata("Bearer secret-key"), ApiService::Admin),
            tonic::Code::PermissionDenied
        );
    }

    #[test]
    fn charge_is_limited_to_the_rate() {
        let auth = Authenticator::new(&config(2.0));
        let caller = auth
            .authorize(&metadata("Bearer secret-key"), ApiService::Submission)
            .unwrap();
        auth.charge(&caller, 2).unwrap();
        let err = auth.charge(&caller, 1).unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert!(err.message().contains("\"app\"") && err.message().contains('2'));
        // More than a burst at once can never pass.
        let fresh = Authenticator::new(&config(2.0));
        assert!(fresh.charge(&caller, 3).is_err());
    }

    #[test]
    fn other_services_are_charged_by_authorize() {
        let auth = Authenticator::new(&config(1.0));
        let m = metadata("Bearer secret-key");
        auth.authorize(&m, ApiService::Suppression).unwrap();
        let err = auth.authorize(&m, ApiService::Suppression).unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        // Submission calls are not charged by authorize.
        auth.authorize(&m, ApiService::Submission).unwrap();
    }
}
