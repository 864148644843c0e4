//! Records as producers hand them in and as consumers receive them.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::watermark::Ack;

/// The header that carries a record's not-before time (milliseconds since the Unix epoch,
/// decimal ASCII), so a backend can hold a retry-tier record back without decoding its value.
pub const NOT_BEFORE_HEADER: &str = "kurir-not-before";

/// A record to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingRecord {
    /// The partitioning key: a routing key (`example.test`, `example.test#3`). Records with
    /// the same key land in the same partition, in publish order.
    pub key: String,
    /// The opaque payload (an encoded `QueuedMessage` or event).
    pub value: Bytes,
    /// Not to be handed to a consumer before this time (retry tiers).
    pub not_before: Option<SystemTime>,
    /// Extra headers, e.g. the W3C `traceparent`.
    pub headers: Vec<(String, Bytes)>,
}

impl OutgoingRecord {
    pub fn new(key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
            not_before: None,
            headers: Vec::new(),
        }
    }

    pub fn not_before(mut self, at: SystemTime) -> Self {
        self.not_before = Some(at);
        self
    }

    pub fn header(mut self, name: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// A record handed to a consumer. Its [`Ack`] must be finished once the record has a durable
/// outcome; until then the committed position cannot move past it.
#[derive(Debug)]
pub struct IncomingRecord {
    pub topic: Arc<str>,
    pub partition: u32,
    pub offset: u64,
    pub key: String,
    pub value: Bytes,
    pub not_before: Option<SystemTime>,
    pub headers: Vec<(String, Bytes)>,
    /// When the record was appended to the queue.
    pub timestamp: Option<SystemTime>,
    pub ack: Ack,
}

impl IncomingRecord {
    /// The value of the first header called `name`.
    pub fn header(&self, name: &str) -> Option<&Bytes> {
        header_in(&self.headers, name)
    }
}

/// The value of the first header called `name` in `headers`.
pub(crate) fn header_in<'a>(headers: &'a [(String, Bytes)], name: &str) -> Option<&'a Bytes> {
    headers.iter().find(|(n, _)| n == name).map(|(_, v)| v)
}

/// Encodes a not-before time for [`NOT_BEFORE_HEADER`].
pub fn encode_time(at: SystemTime) -> Bytes {
    let ms = at
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    Bytes::from(ms.to_string())
}

/// Decodes a [`NOT_BEFORE_HEADER`] value; `None` when malformed (treated as "due now").
pub fn decode_time(value: &[u8]) -> Option<SystemTime> {
    let ms: u64 = std::str::from_utf8(value).ok()?.parse().ok()?;
    UNIX_EPOCH.checked_add(Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_before_round_trips_at_millisecond_precision() {
        let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(decode_time(&encode_time(at)), Some(at));
        assert_eq!(decode_time(b"junk"), None);
    }
}
