//! The key layout (documented in `docs/state-redis.md`): every key name is built here and
//! nowhere else, so the document and the code cannot drift apart.
//!
//! Keys that a multi-key operation touches together share a hash tag (`{…}`), so the layout
//! stays valid in Redis Cluster: a scope's suppression hash, its listing index, its expiry
//! index and the tenant's soft-bounce counters all live in the slot of `{t:<tenant>}` (or
//! `{global}`).

use kurir_core::{Address, Domain, MessageId};

use crate::model::{Scope, Tenant};

/// Builds key names under the configured prefix.
#[derive(Debug, Clone)]
pub(super) struct Keys {
    prefix: String,
}

/// The three keys that hold one scope's suppression list.
#[derive(Debug, Clone)]
pub(super) struct ScopeKeys {
    /// Hash: address → encoded entry.
    pub(super) entries: String,
    /// Sorted set, every score 0: the addresses, listed in lexical order by cursor.
    pub(super) index: String,
    /// Sorted set: address → expiry in ms (only entries that expire).
    pub(super) expiry: String,
}

impl Keys {
    pub(super) fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    fn tag(scope: &Scope) -> String {
        match scope {
            Scope::Global => "{global}".to_owned(),
            Scope::Tenant(t) => format!("{{t:{t}}}"),
        }
    }

    pub(super) fn scope(&self, scope: &Scope) -> ScopeKeys {
        let base = format!("{}:sup:{}", self.prefix, Self::tag(scope));
        ScopeKeys {
            entries: self.entries(scope),
            index: format!("{base}:index"),
            expiry: format!("{base}:expiry"),
        }
    }

    /// The entries hash of a scope alone: what every suppression check reads, so it does not
    /// build the scope's other key names.
    pub(super) fn entries(&self, scope: &Scope) -> String {
        format!("{}:sup:{}:entries", self.prefix, Self::tag(scope))
    }

    /// Sorted set of one address's soft bounces (member unique per bounce, score = ms).
    pub(super) fn soft_bounces(&self, tenant: &Tenant, address: &Address) -> String {
        format!(
            "{}:soft:{}:{address}",
            self.prefix,
            Self::tag(&Scope::Tenant(tenant.clone()))
        )
    }

    /// Hash of a recipient domain's counters.
    pub(super) fn domain_counters(&self, domain: &Domain) -> String {
        format!("{}:domain:{domain}:counters", self.prefix)
    }

    /// Set of the recipients a message was delivered to.
    pub(super) fn ledger(&self, id: MessageId) -> String {
        format!("{}:ledger:{id}", self.prefix)
    }

    /// String: `P` (pending) or `D` + result.
    pub(super) fn idempotency(&self, tenant: &Tenant, key: &str) -> Vec<u8> {
        let mut k = format!("{}:idem:{tenant}:", self.prefix).into_bytes();
        k.extend_from_slice(key.as_bytes());
        k
    }

    /// List of a message's history entries (JSON), oldest first.
    pub(super) fn tracking(&self, id: MessageId) -> String {
        format!("{}:track:{id}", self.prefix)
    }

    /// Hash: domain → encoded pause. One key, so a node reads every pause with one HGETALL.
    pub(super) fn pauses(&self) -> String {
        format!("{}:pauses", self.prefix)
    }
}
