//! The Redis backend: one Redis server shared by every node (key layout in
//! `docs/state-redis.md`).
//!
//! Every command runs under `command_timeout` through [`RedisState::run`]: a Redis outage
//! makes callers fail fast with [`StateError::Unavailable`], and the connection manager
//! reconnects by itself, so recovery needs nothing from the caller.
//!
//! # Layout
//! - `keys`: every key name. `codec`: how values are encoded. `scripts`: the Lua scripts.
//! - `suppression`, `bounces`, `records` (ledger, idempotency, tracking), `domains`: the
//!   operations, grouped as in the [`State`] trait.

mod bounces;
mod codec;
mod domains;
mod keys;
mod records;
mod scripts;
mod suppression;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kurir_core::{Address, BounceClass, Domain, MessageId};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, RedisError, RedisResult, ServerErrorKind};

use self::keys::Keys;
use crate::config::StateConfig;
use crate::error::StateError;
use crate::model::{
    BounceVerdict, Claim, DomainCounter, DomainCounters, DomainPause, Page, Scope, Settlement,
    Suppression, Tenant, TrackEntry,
};
use crate::{Result, State};

/// The Redis backend. Cheap to clone: clones share one multiplexed connection.
#[derive(Clone)]
pub struct RedisState {
    inner: Arc<Inner>,
}

struct Inner {
    /// Reconnects by itself after a connection error (the failing command still fails).
    conn: ConnectionManager,
    keys: Keys,
    config: StateConfig,
    tenants: HashSet<String>,
}

impl fmt::Debug for RedisState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisState")
            .field("key_prefix", &self.inner.config.redis.key_prefix)
            .field("command_timeout", &self.inner.config.redis.command_timeout)
            .finish_non_exhaustive()
    }
}

impl RedisState {
    /// Connects to `config.redis.url` (within `connect_timeout`). Fails with
    /// [`StateError::Unavailable`] if the server cannot be reached.
    pub async fn connect(config: &StateConfig) -> Result<RedisState> {
        config
            .validate()
            .map_err(|e| StateError::invalid("state", e.to_string()))?;
        let r = &config.redis;
        let client = redis::Client::open(r.url.as_str())
            .map_err(|e| StateError::invalid("state.redis.url", e.to_string()))?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(r.connect_timeout))
            .set_response_timeout(Some(r.command_timeout))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let connecting = ConnectionManager::new_with_config(client, manager_config);
        let conn = match tokio::time::timeout(r.connect_timeout * 2, connecting).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return Err(unavailable("connect", &e)),
            Err(_) => {
                return Err(StateError::Unavailable(format!(
                    "redis: connect timed out after {:?}",
                    r.connect_timeout * 2
                )));
            }
        };
        let inner = Inner {
            conn,
            keys: Keys::new(&r.key_prefix),
            config: config.clone(),
            tenants: config.tenants.iter().cloned().collect(),
        };
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    fn conn(&self) -> ConnectionManager {
        self.inner.conn.clone()
    }

    fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    fn config(&self) -> &StateConfig {
        &self.inner.config
    }

    /// Awaits one round trip under `command_timeout`, mapping every failure.
    async fn run<T>(
        &self,
        what: &'static str,
        round_trip: impl Future<Output = RedisResult<T>>,
    ) -> Result<T> {
        let limit = self.inner.config.redis.command_timeout;
        match tokio::time::timeout(limit, round_trip).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(map_error(what, &e)),
            Err(_) => Err(StateError::Unavailable(format!(
                "redis: {what} timed out after {limit:?}"
            ))),
        }
    }

    fn check_tenant(&self, tenant: &Tenant) -> Result<()> {
        if self.inner.tenants.contains(tenant.as_str()) {
            Ok(())
        } else {
            Err(StateError::UnknownTenant(tenant.to_string()))
        }
    }

    fn check_scope(&self, scope: &Scope) -> Result<()> {
        match scope {
            Scope::Global => Ok(()),
            Scope::Tenant(t) => self.check_tenant(t),
        }
    }
}

fn unavailable(what: &str, e: &RedisError) -> StateError {
    tracing::debug!(operation = what, error = %e, "redis unavailable");
    StateError::Unavailable(format!("redis: {what}: {e}"))
}

/// Errors that say our data or our commands are wrong are `Corrupt`; everything else
/// (I/O, timeouts, a loading or failing-over server, OOM) may pass and is `Unavailable`.
fn map_error(what: &str, e: &RedisError) -> StateError {
    let ours = match e.kind() {
        ErrorKind::Parse | ErrorKind::UnexpectedReturnType => true,
        ErrorKind::Server(k) => matches!(
            k,
            ServerErrorKind::ResponseError | ServerErrorKind::CrossSlot | ServerErrorKind::NoScript
        ),
        ErrorKind::Extension => e.code() == Some("WRONGTYPE"),
        _ => false,
    };
    if ours {
        StateError::Corrupt(format!("redis: {what}: {e}"))
    } else {
        unavailable(what, e)
    }
}

impl State for RedisState {
    async fn suppress(&self, entries: &[Suppression]) -> Result<()> {
        self.suppress_entries(entries).await
    }

    async fn unsuppress(&self, scope: &Scope, addresses: &[Address]) -> Result<u64> {
        self.unsuppress_addresses(scope, addresses).await
    }

    async fn check_suppressed(
        &self,
        tenant: &Tenant,
        addresses: &[Address],
    ) -> Result<Vec<Option<Suppression>>> {
        self.check_many(tenant, addresses).await
    }

    async fn list_suppressions(
        &self,
        scope: &Scope,
        cursor: &str,
        limit: usize,
    ) -> Result<Page<Suppression>> {
        self.list_page(scope, cursor, limit).await
    }

    async fn record_bounce(
        &self,
        tenant: &Tenant,
        address: &Address,
        class: BounceClass,
        source: &str,
    ) -> Result<BounceVerdict> {
        self.bounce(tenant, address, class, source).await
    }

    async fn count_domain(&self, domain: &Domain, counter: DomainCounter) -> Result<()> {
        self.increment_domain(domain, counter).await
    }

    async fn domain_counters(&self, domain: &Domain) -> Result<DomainCounters> {
        self.read_domain_counters(domain).await
    }

    async fn mark_delivered(&self, id: MessageId, recipients: &[Address]) -> Result<()> {
        self.ledger_add(id, recipients).await
    }

    async fn settle(&self, settlement: &Settlement<'_>) -> Result<()> {
        self.settle_attempt(settlement).await
    }

    async fn delivered(&self, id: MessageId, recipients: &[Address]) -> Result<Vec<bool>> {
        self.ledger_check(id, recipients).await
    }

    async fn claim_idempotency_key(&self, tenant: &Tenant, key: &str) -> Result<Claim> {
        self.claim(tenant, key).await
    }

    async fn complete_idempotency_key(
        &self,
        tenant: &Tenant,
        key: &str,
        result: &[u8],
    ) -> Result<()> {
        self.complete(tenant, key, result).await
    }

    async fn release_idempotency_key(&self, tenant: &Tenant, key: &str) -> Result<()> {
        self.release(tenant, key).await
    }

    async fn track(&self, id: MessageId, entry: &TrackEntry) -> Result<()> {
        self.append_history(id, entry).await
    }

    async fn history(&self, id: MessageId) -> Result<Vec<TrackEntry>> {
        self.read_history(id).await
    }

    async fn pause_domain(&self, pause: &DomainPause) -> Result<()> {
        self.pause(pause).await
    }

    async fn resume_domain(&self, domain: &Domain) -> Result<bool> {
        self.resume(domain).await
    }

    async fn paused_domains(&self) -> Result<Vec<DomainPause>> {
        self.read_pauses().await
    }
}
