//! Message ids.

use std::fmt;
use std::str::FromStr;

/// The id of one submitted message: a ULID, so ids sort by creation time (useful for
/// tracking look-ups and log reading) and need no coordination between submission nodes.
///
/// Rendered as 26 Crockford base32 characters, e.g. `01JD3XKQ8W6Q9V5N4ZB7T0M2RS`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageId(ulid::Ulid);

impl MessageId {
    /// A new id for a message accepted now.
    pub fn new() -> Self {
        Self(ulid::Ulid::generate())
    }

    /// The id from its 128-bit form (as stored in protobuf records).
    pub fn from_u128(v: u128) -> Self {
        Self(ulid::Ulid(v))
    }

    /// The 128-bit form.
    pub fn to_u128(self) -> u128 {
        self.0.0
    }

    /// A stable id made from this one and `label`: the same on every node and in every
    /// version, so what a replayed record makes again (a DSN) gets the id it got the first
    /// time, and the delivery ledger keeps it from being mailed twice.
    ///
    /// Keeps this id's timestamp and the top 16 of its 80 random bits; the low 64 are XORed
    /// with the XXH3-64 hash of `label` (a frozen specification, unlike `std`'s hasher,
    /// whose algorithm may change between Rust releases). Distinct labels give distinct ids
    /// but for a 64-bit hash collision; no adversary picks the labels.
    pub fn derived(self, label: &[u8]) -> Self {
        let mask = xxhash_rust::xxh3::xxh3_64(label);
        Self(ulid::Ulid(self.0.0 ^ u128::from(mask)))
    }

    /// Milliseconds since the Unix epoch when the id was made.
    pub fn timestamp_ms(self) -> u64 {
        self.0.timestamp_ms()
    }
}

impl Default for MessageId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({})", self.0)
    }
}

/// A string that is not a message id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid message id {0:?}: expected 26 Crockford base32 characters")]
pub struct InvalidMessageId(pub String);

impl FromStr for MessageId {
    type Err = InvalidMessageId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ulid::Ulid::from_string(s)
            .map(Self)
            .map_err(|_| InvalidMessageId(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_parses_back() {
        let id = MessageId::new();
        let text = id.to_string();
        assert_eq!(text.len(), 26);
        assert_eq!(text.parse::<MessageId>().unwrap(), id);
        assert_eq!(MessageId::from_u128(id.to_u128()), id);
    }

    #[test]
    fn ids_sort_by_creation_time() {
        let a = MessageId::new();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = MessageId::new();
        assert!(a < b);
        assert!(a.to_string() < b.to_string());
    }

    #[test]
    fn derived_ids_are_stable_distinct_and_keep_the_time() {
        let id: MessageId = "01JD3XKQ8W6Q9V5N4ZB7T0M2RS".parse().unwrap();
        // Fixed: a change here re-sends the DSNs of records replayed across an upgrade.
        // XXH3-64 of the empty input is 0x2D06800538D394C2 (the xxHash reference).
        assert_eq!(
            id.derived(b"").to_u128() ^ id.to_u128(),
            0x2D06_8005_38D3_94C2
        );
        assert_eq!(id.derived(b"dsn").to_string(), "01JD3XKQ8W6Q9GVHV6TW6FS4BC");
        assert_eq!(id.derived(b"dsn"), id.derived(b"dsn"));
        let labels: std::collections::HashSet<MessageId> = (0..1000)
            .map(|l| id.derived(format!("label {l}").as_bytes()))
            .collect();
        assert_eq!(labels.len(), 1000);
        assert!(!labels.contains(&id));
        assert_eq!(id.derived(b"x").timestamp_ms(), id.timestamp_ms());
    }

    #[test]
    fn rejects_garbage() {
        assert!("not-an-id".parse::<MessageId>().is_err());
        assert!("".parse::<MessageId>().is_err());
    }
}
