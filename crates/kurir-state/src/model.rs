//! The values the state store keeps.

use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

use kurir_core::{Address, Domain, MessageId};
use serde::{Deserialize, Serialize};

use crate::error::StateError;

/// A tenant: a customer of the platform whose suppression list, idempotency keys and
/// messages are kept apart from other tenants'. `[a-z0-9_-]`, 1–64 characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Tenant(String);

impl Tenant {
    pub fn new(name: &str) -> Result<Self, StateError> {
        let ok = (1..=64).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if ok {
            Ok(Self(name.to_owned()))
        } else {
            Err(StateError::invalid(
                "tenant",
                "must be 1-64 characters of a-z, 0-9, '-' and '_'",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Tenant {
    type Error = StateError;
    fn try_from(s: String) -> Result<Self, StateError> {
        Self::new(&s)
    }
}

impl From<Tenant> for String {
    fn from(t: Tenant) -> String {
        t.0
    }
}

impl fmt::Display for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a suppression applies: one tenant, or every tenant (global).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Global,
    Tenant(Tenant),
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Global => f.write_str("global"),
            Self::Tenant(t) => write!(f, "tenant:{t}"),
        }
    }
}

/// Why an address is suppressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// A permanent failure (bad mailbox, bad domain).
    HardBounce,
    /// Too many soft bounces within the configured window.
    SoftBounces,
    /// The recipient complained (feedback loop).
    Complaint,
    /// The recipient unsubscribed.
    Unsubscribe,
    /// An operator added it.
    Manual,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HardBounce => "hard-bounce",
            Self::SoftBounces => "soft-bounces",
            Self::Complaint => "complaint",
            Self::Unsubscribe => "unsubscribe",
            Self::Manual => "manual",
        }
    }
}

/// The names of [`Reason::as_str`], in any case, `_` accepted for `-` (`hard_bounce` is
/// how the command line spells it).
impl FromStr for Reason {
    type Err = StateError;
    fn from_str(s: &str) -> Result<Self, StateError> {
        [
            Self::HardBounce,
            Self::SoftBounces,
            Self::Complaint,
            Self::Unsubscribe,
            Self::Manual,
        ]
        .into_iter()
        .find(|r| {
            r.as_str().len() == s.len()
                && r.as_str()
                    .bytes()
                    .zip(s.bytes())
                    .all(|(a, b)| a == b.to_ascii_lowercase() || (a == b'-' && b == b'_'))
        })
        .ok_or_else(|| {
            StateError::invalid(
                "reason",
                "must be hard-bounce, soft-bounces, complaint, unsubscribe or manual",
            )
        })
    }
}

/// One suppression-list entry. The address is in normal form (domain lower-cased A-label,
/// local part as given), so spellings of one address are one entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suppression {
    pub scope: Scope,
    #[serde(with = "address_serde")]
    pub address: Address,
    pub reason: Reason,
    /// What caused it: an event id, an operator name, an import file.
    pub source: String,
    pub created: SystemTime,
    /// The entry is ignored (and eventually removed) after this time.
    pub expires: Option<SystemTime>,
}

impl Suppression {
    /// The entry a bounce of `class` suppresses `address` with, in the tenant's scope: a hard
    /// bounce at once, soft bounces once they reach the threshold. Both backends use it.
    pub fn for_bounce(
        tenant: &Tenant,
        address: &Address,
        class: kurir_core::BounceClass,
        source: &str,
    ) -> Self {
        Self {
            scope: Scope::Tenant(tenant.clone()),
            address: address.clone(),
            reason: if class.is_hard() {
                Reason::HardBounce
            } else {
                Reason::SoftBounces
            },
            source: source.to_owned(),
            created: SystemTime::now(),
            expires: None,
        }
    }

    /// Whether the entry is in force at `now`.
    pub fn is_active(&self, now: SystemTime) -> bool {
        self.expires.is_none_or(|e| e > now)
    }
}

/// Free text kept in the store (a suppression's source, a pause's reason, a history
/// entry's detail) is cut to this many bytes by every backend.
pub const MAX_TEXT: usize = 1024;

/// `s` cut to at most [`MAX_TEXT`] bytes, at a character boundary.
pub fn truncate_text(s: &str) -> &str {
    if s.len() <= MAX_TEXT {
        return s;
    }
    let mut end = MAX_TEXT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The longest idempotency key accepted, in bytes.
pub const MAX_IDEMPOTENCY_KEY: usize = 256;

/// How long a pending claim outlives a submission that died without completing or
/// releasing it (at most `idempotency_ttl`); a retry after that claims the key afresh.
pub const PENDING_CLAIM_TTL: std::time::Duration = std::time::Duration::from_secs(300);

/// Checks an idempotency key the same way for every backend.
pub fn check_idempotency_key(key: &str) -> Result<(), StateError> {
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY {
        return Err(StateError::invalid(
            "idempotency_key",
            format!("must be 1-{MAX_IDEMPOTENCY_KEY} bytes"),
        ));
    }
    Ok(())
}

/// A page of a listing; pass `next` back to continue, `None` means the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

/// What recording a bounce did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BounceVerdict {
    /// Soft bounces of the address within the window, this one included (0 for a hard
    /// bounce).
    pub soft_bounces: u32,
    /// Whether the address is now suppressed because of this bounce.
    pub suppressed: bool,
}

/// Per-domain counters for operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DomainCounters {
    pub delivered: u64,
    pub deferred: u64,
    pub bounced: u64,
}

/// What one delivery attempt of a message settled, written by [`crate::State::settle`] in
/// one call: the delivery node's bookkeeping for a record, one round trip (Redis) or one
/// batch (embedded) instead of one per recipient and per kind.
#[derive(Debug, Clone, Copy)]
pub struct Settlement<'a> {
    pub id: MessageId,
    /// The recipient domain, whose operator counters `counts` adds to.
    pub domain: &'a Domain,
    /// Recipients now delivered: their ledger entries are durable when `settle` returns
    /// (as with [`crate::State::mark_delivered`]).
    pub delivered: &'a [Address],
    /// Added to the domain's counters.
    pub counts: DomainCounters,
    /// Appended to the message's history, in order.
    pub history: &'a [TrackEntry],
}

/// Which per-domain counter to increment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainCounter {
    Delivered,
    Deferred,
    Bounced,
}

/// The state of an idempotency key after [`crate::State::claim_idempotency_key`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The caller owns the key: it submits, then completes (or releases) the key.
    New,
    /// Another request with this key is being processed right now.
    Pending,
    /// A request with this key finished: this is its recorded result.
    Done(Vec<u8>),
}

/// What happened to a message, for tracking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TrackKind {
    Accepted,
    Delivered,
    Deferred,
    Bounced,
    Expired,
    Suppressed,
}

/// One line of a message's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackEntry {
    pub at: SystemTime,
    pub kind: TrackKind,
    /// The recipient concerned (`None` for the whole message, e.g. accepted).
    pub recipient: Option<String>,
    /// The remote reply, the MX host, or other detail; bounded in length by the store.
    pub detail: String,
}

/// A paused domain: delivery nodes do not attempt it until it is resumed or `until` passes;
/// what they do with its mail meanwhile is the [`PauseAction`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainPause {
    #[serde(with = "domain_serde")]
    pub domain: Domain,
    pub until: Option<SystemTime>,
    pub reason: String,
    /// Hold the mail, or bounce it. Values stored before this field existed read as
    /// [`PauseAction::Hold`].
    #[serde(default)]
    pub action: PauseAction,
}

/// What delivery nodes do with mail for a paused domain.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PauseAction {
    /// Keep it queued (in the first retry tier) until the pause ends.
    #[default]
    Hold,
    /// A bounce order: bounce every message (with a DSN whose diagnostic is the pause's
    /// reason) the next time a node takes it, until the order lapses.
    Bounce,
}

impl PauseAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hold => "hold",
            Self::Bounce => "bounce",
        }
    }
}

impl FromStr for PauseAction {
    type Err = StateError;
    fn from_str(s: &str) -> Result<Self, StateError> {
        [Self::Hold, Self::Bounce]
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| StateError::invalid("action", "must be hold or bounce"))
    }
}

impl DomainPause {
    /// Whether the pause is in force at `now`.
    pub fn is_active(&self, now: SystemTime) -> bool {
        self.until.is_none_or(|u| u > now)
    }
}

mod address_serde {
    use kurir_core::Address;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(a: &Address, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(a)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Address, D::Error> {
        let text = String::deserialize(d)?;
        Address::parse(&text).map_err(serde::de::Error::custom)
    }
}

mod domain_serde {
    use kurir_core::Domain;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Domain, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(d)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Domain, D::Error> {
        let text = String::deserialize(d)?;
        Domain::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_cut_at_a_char_boundary() {
        assert_eq!(truncate_text("abc"), "abc");
        assert_eq!(truncate_text(&"x".repeat(5000)).len(), MAX_TEXT);
        let accented = format!("a{}", "é".repeat(600));
        let cut = truncate_text(&accented);
        assert!(cut.len() <= MAX_TEXT && accented.starts_with(cut));
    }

    #[test]
    fn pauses_stored_without_an_action_read_as_hold() {
        let old = r#"{"domain":"a.test","until":null,"reason":"incident"}"#;
        let pause: DomainPause = serde_json::from_str(old).unwrap();
        assert_eq!(pause.action, PauseAction::Hold);
        let bounce = DomainPause {
            action: PauseAction::Bounce,
            ..pause
        };
        let json = serde_json::to_string(&bounce).unwrap();
        assert!(json.contains(r#""action":"bounce""#), "{json}");
        assert_eq!(serde_json::from_str::<DomainPause>(&json).unwrap(), bounce);
        assert_eq!("bounce".parse(), Ok(PauseAction::Bounce));
        assert!("stop".parse::<PauseAction>().is_err());
    }

    #[test]
    fn idempotency_keys_are_one_to_256_bytes() {
        assert!(check_idempotency_key("k").is_ok());
        assert!(check_idempotency_key(&"k".repeat(MAX_IDEMPOTENCY_KEY)).is_ok());
        assert!(check_idempotency_key("").is_err());
        assert!(check_idempotency_key(&"k".repeat(MAX_IDEMPOTENCY_KEY + 1)).is_err());
    }
}
