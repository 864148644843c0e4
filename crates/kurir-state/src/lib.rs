//! What kurir remembers across messages and nodes (`shared/DESIGN.md` §5): suppression,
//! bounce memory, the delivery ledger, idempotency keys, message tracking and domain controls.
//!
//! # Layout
//! - [`model`]: the values kept ([`Suppression`], [`TrackEntry`], [`DomainPause`], …) and
//!   [`Tenant`] / [`Scope`].
//! - [`error`]: [`StateError`]; `is_retryable()` separates an unavailable store (fail fast,
//!   retry later) from bad input.
//! - [`config`]: [`StateConfig`], the `[state]` section (policies and TTLs).
//! - [`bulk`]: streaming import and export of suppression lists (CSV, JSON lines), for any
//!   backend.
//! - [`controls`]: [`controls::DomainControls`], the cached view of paused domains delivery
//!   nodes read on every attempt, refreshed every `domain_poll_interval`.
//! - [`redis`]: the Redis backend (key layout in `docs/state-redis.md`).
//! - [`embedded`]: the embedded backend (fjall), the default.

pub mod bulk;
pub mod config;
pub mod controls;
pub mod embedded;
pub mod error;
pub mod model;
pub mod redis;

use std::future::Future;

use kurir_core::{Address, BounceClass, Domain, MessageId};

pub use config::StateConfig;
pub use error::StateError;
pub use model::{
    BounceVerdict, Claim, DomainCounter, DomainCounters, DomainPause, Page, PauseAction, Reason,
    Scope, Settlement, Suppression, Tenant, TrackEntry, TrackKind,
};

/// Shorthand for the futures the trait returns.
pub type Result<T> = std::result::Result<T, StateError>;

/// The state store. Every method fails fast with [`StateError::Unavailable`] when the
/// backend cannot answer in time; none hangs. Tenants not in the configuration are
/// [`StateError::UnknownTenant`].
pub trait State: Send + Sync + 'static {
    // --- suppression -------------------------------------------------------------------

    /// Adds or replaces entries (the same scope and address is one entry).
    fn suppress(&self, entries: &[Suppression]) -> impl Future<Output = Result<()>> + Send;

    /// Removes entries; returns how many existed.
    fn unsuppress(
        &self,
        scope: &Scope,
        addresses: &[Address],
    ) -> impl Future<Output = Result<u64>> + Send;

    /// For each address, the entry in force for `tenant` (its own scope first, then the
    /// global scope), or `None`. One round trip for the whole list. Expired entries are
    /// ignored.
    fn check_suppressed(
        &self,
        tenant: &Tenant,
        addresses: &[Address],
    ) -> impl Future<Output = Result<Vec<Option<Suppression>>>> + Send;

    /// Entries of a scope, `limit` at a time, in no particular order; start with cursor "".
    /// An entry present for the whole listing is returned exactly once.
    fn list_suppressions(
        &self,
        scope: &Scope,
        cursor: &str,
        limit: usize,
    ) -> impl Future<Output = Result<Page<Suppression>>> + Send;

    // --- bounce memory -----------------------------------------------------------------

    /// Records a bounce of `address`. A hard class (see `BounceClass::is_hard`) suppresses
    /// it at once; a soft one counts within `soft_bounce_window` and suppresses it when the
    /// count reaches `soft_bounce_threshold`. `source` is kept in the suppression entry.
    fn record_bounce(
        &self,
        tenant: &Tenant,
        address: &Address,
        class: BounceClass,
        source: &str,
    ) -> impl Future<Output = Result<BounceVerdict>> + Send;

    /// Counts an outcome for a recipient domain (for operators).
    fn count_domain(
        &self,
        domain: &Domain,
        counter: DomainCounter,
    ) -> impl Future<Output = Result<()>> + Send;

    fn domain_counters(
        &self,
        domain: &Domain,
    ) -> impl Future<Output = Result<DomainCounters>> + Send;

    // --- delivery ledger ---------------------------------------------------------------

    /// Remembers that `id` was delivered to `recipients` (for `ledger_ttl`).
    fn mark_delivered(
        &self,
        id: MessageId,
        recipients: &[Address],
    ) -> impl Future<Output = Result<()>> + Send;

    /// For each recipient, whether `id` was already delivered to it.
    fn delivered(
        &self,
        id: MessageId,
        recipients: &[Address],
    ) -> impl Future<Output = Result<Vec<bool>>> + Send;

    /// Writes what one delivery attempt settled ([`Settlement`]): ledger entries for the
    /// delivered recipients (durable on return, as [`State::mark_delivered`]), the domain's
    /// counters and the history entries, together. Equivalent to `mark_delivered`, then
    /// `count_domain` per count, then `track` per entry, in one round trip. The counters and
    /// history are for operators: a failure of theirs is logged and does not keep the
    /// ledger entries from being written.
    fn settle(&self, settlement: &Settlement<'_>) -> impl Future<Output = Result<()>> + Send;

    // --- idempotency -------------------------------------------------------------------

    /// Claims `key` for a submission. Exactly one of several concurrent claims gets
    /// [`Claim::New`]; later ones see [`Claim::Pending`] until the owner completes (then
    /// [`Claim::Done`] with its result, for `idempotency_ttl`) or releases the key.
    fn claim_idempotency_key(
        &self,
        tenant: &Tenant,
        key: &str,
    ) -> impl Future<Output = Result<Claim>> + Send;

    /// Records the result of the submission that claimed `key`.
    fn complete_idempotency_key(
        &self,
        tenant: &Tenant,
        key: &str,
        result: &[u8],
    ) -> impl Future<Output = Result<()>> + Send;

    /// Gives up a claim (the submission failed), so a retry can claim it again.
    fn release_idempotency_key(
        &self,
        tenant: &Tenant,
        key: &str,
    ) -> impl Future<Output = Result<()>> + Send;

    // --- message tracking --------------------------------------------------------------

    /// Appends to a message's history (kept `tracking_ttl`, at most
    /// `tracking_max_entries`: the oldest entries after the first are dropped).
    fn track(&self, id: MessageId, entry: &TrackEntry) -> impl Future<Output = Result<()>> + Send;

    /// A message's history, oldest first; empty if unknown or expired.
    fn history(&self, id: MessageId) -> impl Future<Output = Result<Vec<TrackEntry>>> + Send;

    // --- domain controls ---------------------------------------------------------------

    /// Pauses a domain (replacing an earlier pause of it).
    fn pause_domain(&self, pause: &DomainPause) -> impl Future<Output = Result<()>> + Send;

    /// Resumes a domain; returns whether it was paused.
    fn resume_domain(&self, domain: &Domain) -> impl Future<Output = Result<bool>> + Send;

    /// Every pause in force now (expired ones are left out).
    fn paused_domains(&self) -> impl Future<Output = Result<Vec<DomainPause>>> + Send;
}
