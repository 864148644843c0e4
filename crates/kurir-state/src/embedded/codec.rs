//! The embedded store's on-disk layout: keyspaces, keys and value encodings.
//!
//! Keys are ordered bytes, so each keyspace is laid out for the scans it serves:
//!
//! | keyspace       | key                                   | value                               |
//! |----------------|---------------------------------------|-------------------------------------|
//! | `suppressions` | scope, `NUL`, address                 | expiry, reason, created, source     |
//! | `bounces`      | tenant, `NUL`, address                | expiry, soft-bounce times           |
//! | `domains`      | domain, `NUL`, counter                | count (`u64`)                       |
//! | `ledger`       | message id (16 bytes), address        | expiry                              |
//! | `idempotency`  | tenant, `NUL`, key                    | expiry, state, result               |
//! | `tracking`     | message id (16 bytes), sequence (u32) | expiry, entry (JSON)                |
//! | `pauses`       | domain                                | expiry (`until`), action, reason    |
//! | `expiry`       | expiry second, keyspace tag, key      | empty                               |
//!
//! The scope is `g` (global) or `t` followed by the tenant name; tenants and domains never
//! contain `NUL`, so the first `NUL` ends them. Addresses are in normal form
//! ([`kurir_core::Address`]'s `Display`), so spellings of one address share a key. Integers
//! are big-endian so keys sort numerically.
//!
//! Every value that can expire starts with a 12-byte expiry (seconds `u64`, nanoseconds
//! `u32` since the Unix epoch; seconds `u64::MAX` means never). Readers ignore expired
//! values; the `expiry` keyspace indexes them by expiry second so the sweep
//! ([`super::sweep`]) deletes them without scanning live data.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kurir_core::{Address, MessageId};

use crate::error::StateError;
use crate::model::{PauseAction, Reason, Scope, Suppression, Tenant, truncate_text};

/// Which keyspace an `expiry` index entry points into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Tag {
    Suppression = 1,
    Bounce = 2,
    Ledger = 3,
    Idempotency = 4,
    /// Points at a whole message history (the key is the 16-byte message id).
    Tracking = 5,
    Pause = 6,
}

impl Tag {
    pub(super) fn from_byte(b: u8) -> Option<Self> {
        [
            Self::Suppression,
            Self::Bounce,
            Self::Ledger,
            Self::Idempotency,
            Self::Tracking,
            Self::Pause,
        ]
        .into_iter()
        .find(|t| *t as u8 == b)
    }
}

pub(super) const TIME_LEN: usize = 12;

pub(super) fn corrupt(what: &str) -> StateError {
    StateError::Corrupt(format!("embedded state: malformed {what}"))
}

/// A time as 12 bytes (times before the epoch are stored as the epoch).
pub(super) fn encode_time(t: SystemTime) -> [u8; TIME_LEN] {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let mut out = [0; TIME_LEN];
    out[..8].copy_from_slice(&d.as_secs().to_be_bytes());
    out[8..].copy_from_slice(&d.subsec_nanos().to_be_bytes());
    out
}

/// `None` for the "never" marker or bytes that are too short.
fn decode_time(bytes: &[u8]) -> Option<Option<SystemTime>> {
    let secs = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
    let nanos = u32::from_be_bytes(bytes.get(8..TIME_LEN)?.try_into().ok()?);
    if secs == u64::MAX {
        return Some(None);
    }
    Some(UNIX_EPOCH.checked_add(Duration::new(secs, nanos.min(999_999_999))))
}

pub(super) fn read_time(bytes: &[u8], what: &str) -> Result<SystemTime, StateError> {
    decode_time(bytes).flatten().ok_or_else(|| corrupt(what))
}

/// The expiry header of a value.
pub(super) fn put_expiry(out: &mut Vec<u8>, expires: Option<SystemTime>) {
    match expires {
        Some(t) => out.extend_from_slice(&encode_time(t)),
        None => {
            out.extend_from_slice(&u64::MAX.to_be_bytes());
            out.extend_from_slice(&0u32.to_be_bytes());
        }
    }
}

pub(super) fn expiry_of(value: &[u8]) -> Result<Option<SystemTime>, StateError> {
    decode_time(value).ok_or_else(|| corrupt("expiry header"))
}

/// Whether a value with an expiry header is still in force at `now`.
pub(super) fn is_live(value: &[u8], now: SystemTime) -> Result<bool, StateError> {
    Ok(expiry_of(value)?.is_none_or(|e| e > now))
}

/// The `expiry` index key: the second after `expires` (rounded up, so the sweep never
/// visits an entry before it expired), the keyspace tag, the entry's key.
pub(super) fn expiry_key(expires: SystemTime, tag: Tag, key: &[u8]) -> Vec<u8> {
    let d = expires.duration_since(UNIX_EPOCH).unwrap_or_default();
    let second = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    let mut out = Vec::with_capacity(9 + key.len());
    out.extend_from_slice(&second.to_be_bytes());
    out.push(tag as u8);
    out.extend_from_slice(key);
    out
}

/// The index key that starts the seconds after `now` (everything before it is due).
pub(super) fn expiry_bound(now: SystemTime) -> [u8; 8] {
    let secs = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    (secs + 1).to_be_bytes()
}

/// Splits an `expiry` index key into its tag and the entry's key.
pub(super) fn split_expiry_key(key: &[u8]) -> Option<(Tag, &[u8])> {
    Some((Tag::from_byte(*key.get(8)?)?, key.get(9..)?))
}

// --- suppressions ----------------------------------------------------------------------

/// The key prefix of a scope: `g NUL` or `t tenant NUL`.
pub(super) fn scope_prefix(scope: &Scope) -> Vec<u8> {
    match scope {
        Scope::Global => b"g\0".to_vec(),
        Scope::Tenant(t) => tenant_prefix(b't', t),
    }
}

/// `marker tenant NUL`.
pub(super) fn tenant_prefix(marker: u8, tenant: &Tenant) -> Vec<u8> {
    let mut out = Vec::with_capacity(tenant.as_str().len() + 2);
    out.push(marker);
    out.extend_from_slice(tenant.as_str().as_bytes());
    out.push(0);
    out
}

pub(super) fn suppression_key(scope: &Scope, address: &Address) -> Vec<u8> {
    let mut key = scope_prefix(scope);
    key.extend_from_slice(address.to_string().as_bytes());
    key
}

fn reason_byte(r: Reason) -> u8 {
    match r {
        Reason::HardBounce => 1,
        Reason::SoftBounces => 2,
        Reason::Complaint => 3,
        Reason::Unsubscribe => 4,
        Reason::Manual => 5,
    }
}

fn reason_of(b: u8) -> Option<Reason> {
    [
        Reason::HardBounce,
        Reason::SoftBounces,
        Reason::Complaint,
        Reason::Unsubscribe,
        Reason::Manual,
    ]
    .into_iter()
    .find(|r| reason_byte(*r) == b)
}

pub(super) fn encode_suppression(s: &Suppression) -> Vec<u8> {
    let source = truncate_text(&s.source);
    let mut out = Vec::with_capacity(TIME_LEN * 2 + 1 + source.len());
    put_expiry(&mut out, s.expires);
    out.push(reason_byte(s.reason));
    out.extend_from_slice(&encode_time(s.created));
    out.extend_from_slice(source.as_bytes());
    out
}

pub(super) fn decode_suppression(
    scope: Scope,
    address: Address,
    value: &[u8],
) -> Result<Suppression, StateError> {
    let what = "suppression entry";
    let expires = expiry_of(value)?;
    let reason = value
        .get(TIME_LEN)
        .copied()
        .and_then(reason_of)
        .ok_or_else(|| corrupt(what))?;
    let created = read_time(value.get(TIME_LEN + 1..).unwrap_or_default(), what)?;
    let source = value.get(TIME_LEN * 2 + 1..).ok_or_else(|| corrupt(what))?;
    let source = String::from_utf8(source.to_vec()).map_err(|_| corrupt(what))?;
    Ok(Suppression {
        scope,
        address,
        reason,
        source,
        created,
        expires,
    })
}

/// The address part of a suppression key, after the scope prefix.
pub(super) fn address_of(key: &[u8], prefix_len: usize) -> Result<Address, StateError> {
    let text = std::str::from_utf8(key.get(prefix_len..).unwrap_or_default())
        .map_err(|_| corrupt("suppression key"))?;
    Address::parse(text).map_err(|_| corrupt("suppression key"))
}

// --- pauses ----------------------------------------------------------------------------

/// The action byte of a pause. Neither 0xFE nor 0xFF occurs in UTF-8, so a value written
/// before pauses had an action (expiry, then the reason's UTF-8 bytes) is told apart by its
/// first payload byte and reads as [`PauseAction::Hold`].
fn action_byte(action: PauseAction) -> u8 {
    match action {
        PauseAction::Hold => 0xFE,
        PauseAction::Bounce => 0xFF,
    }
}

/// Expiry (`until`), action byte, reason.
pub(super) fn encode_pause(
    until: Option<SystemTime>,
    action: PauseAction,
    reason: &str,
) -> Vec<u8> {
    let reason = truncate_text(reason);
    let mut out = Vec::with_capacity(TIME_LEN + 1 + reason.len());
    put_expiry(&mut out, until);
    out.push(action_byte(action));
    out.extend_from_slice(reason.as_bytes());
    out
}

/// The action and reason of a pause value (after its expiry header).
pub(super) fn decode_pause(value: &[u8]) -> Result<(PauseAction, String), StateError> {
    let payload = value
        .get(TIME_LEN..)
        .ok_or_else(|| corrupt("domain pause"))?;
    let (action, reason) = match payload.split_first() {
        Some((&b, rest)) if b == action_byte(PauseAction::Hold) => (PauseAction::Hold, rest),
        Some((&b, rest)) if b == action_byte(PauseAction::Bounce) => (PauseAction::Bounce, rest),
        _ => (PauseAction::Hold, payload),
    };
    let reason = String::from_utf8(reason.to_vec()).map_err(|_| corrupt("domain pause"))?;
    Ok((action, reason))
}

// --- ledger and tracking ---------------------------------------------------------------

pub(super) fn message_key(id: MessageId) -> [u8; 16] {
    id.to_u128().to_be_bytes()
}

pub(super) fn ledger_key(id: MessageId, address: &Address) -> Vec<u8> {
    let mut key = message_key(id).to_vec();
    key.extend_from_slice(address.to_string().as_bytes());
    key
}

pub(super) fn track_key(id: MessageId, seq: u32) -> [u8; 20] {
    let mut key = [0; 20];
    key[..16].copy_from_slice(&message_key(id));
    key[16..].copy_from_slice(&seq.to_be_bytes());
    key
}

pub(super) fn track_seq(key: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(key.get(16..20)?.try_into().ok()?))
}

/// Bytes after the expiry header.
pub(super) fn payload(value: &[u8]) -> &[u8] {
    value.get(TIME_LEN..).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_with_nanoseconds() {
        let t = UNIX_EPOCH + Duration::new(1_800_000_000, 123_456_789);
        assert_eq!(decode_time(&encode_time(t)), Some(Some(t)));
        let mut never = Vec::new();
        put_expiry(&mut never, None);
        assert_eq!(expiry_of(&never), Ok(None));
    }

    #[test]
    fn expiry_keys_round_up_and_split() {
        let t = UNIX_EPOCH + Duration::new(10, 1);
        let key = expiry_key(t, Tag::Ledger, b"k");
        assert_eq!(key[..8], 11u64.to_be_bytes());
        assert_eq!(split_expiry_key(&key), Some((Tag::Ledger, &b"k"[..])));
        assert!(key.as_slice() >= &expiry_bound(UNIX_EPOCH + Duration::from_secs(10))[..]);
    }

    #[test]
    fn suppressions_round_trip() {
        let s = Suppression {
            scope: Scope::Global,
            address: Address::parse("a@b.test").unwrap(),
            reason: Reason::Complaint,
            source: "fbl".into(),
            created: UNIX_EPOCH + Duration::new(5, 6),
            expires: Some(UNIX_EPOCH + Duration::new(7, 8)),
        };
        let back = decode_suppression(Scope::Global, s.address.clone(), &encode_suppression(&s));
        assert_eq!(back, Ok(s));
    }

    #[test]
    fn pauses_round_trip_with_their_action() {
        let until = Some(UNIX_EPOCH + Duration::new(7, 8));
        for action in [PauseAction::Hold, PauseAction::Bounce] {
            for reason in ["", "incident", "ünïcode"] {
                let value = encode_pause(until, action, reason);
                assert_eq!(expiry_of(&value), Ok(until));
                assert_eq!(decode_pause(&value), Ok((action, reason.to_owned())));
            }
        }
    }

    #[test]
    fn pauses_written_without_an_action_read_as_hold() {
        for reason in ["", "incident", "ünïcode"] {
            let mut old = Vec::new();
            put_expiry(&mut old, None);
            old.extend_from_slice(reason.as_bytes());
            assert_eq!(
                decode_pause(&old),
                Ok((PauseAction::Hold, reason.to_owned()))
            );
        }
        assert!(
            decode_pause(&[0; 5]).is_err(),
            "shorter than the expiry header"
        );
    }
}
