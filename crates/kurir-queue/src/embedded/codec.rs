//! The on-disk layout of the embedded queue: keys and record values.
//!
//! A private, fixed binary layout rather than protobuf or serde: these bytes never leave the
//! node, the layout is five fields, and decoding sits on the hot path of every consumed
//! record. Integers are big-endian so keys sort by (topic, partition, offset).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// `records` keyspace key: topic id, partition, offset.
pub(crate) fn record_key(topic_id: u32, partition: u32, offset: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..4].copy_from_slice(&topic_id.to_be_bytes());
    key[4..8].copy_from_slice(&partition.to_be_bytes());
    key[8..].copy_from_slice(&offset.to_be_bytes());
    key
}

/// The prefix of every record key of one partition.
pub(crate) fn partition_prefix(topic_id: u32, partition: u32) -> [u8; 8] {
    let mut prefix = [0u8; 8];
    prefix[..4].copy_from_slice(&topic_id.to_be_bytes());
    prefix[4..].copy_from_slice(&partition.to_be_bytes());
    prefix
}

/// The offset of a `records` key.
pub(crate) fn offset_of(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.get(8..16)?.try_into().ok()?))
}

/// `offsets` keyspace key: group name, NUL, topic id, partition.
pub(crate) fn offset_key(group: &str, topic_id: u32, partition: u32) -> Vec<u8> {
    let mut key = Vec::with_capacity(group.len() + 9);
    key.extend_from_slice(group.as_bytes());
    key.push(0);
    key.extend_from_slice(&partition_prefix(topic_id, partition));
    key
}

/// The group, topic id and partition of an [`offset_key`]; `None` for another layout.
pub(crate) fn parse_offset_key(key: &[u8]) -> Option<(&[u8], u32, u32)> {
    let group_len = key.len().checked_sub(9)?;
    let (group, rest) = key.split_at(group_len);
    let topic_id = u32::from_be_bytes(rest.get(1..5)?.try_into().ok()?);
    let partition = u32::from_be_bytes(rest.get(5..9)?.try_into().ok()?);
    (rest[0] == 0).then_some((group, topic_id, partition))
}

/// A stored record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredRecord {
    pub(crate) timestamp: Option<SystemTime>,
    pub(crate) not_before: Option<SystemTime>,
    pub(crate) key: String,
    pub(crate) headers: Vec<(String, Bytes)>,
    pub(crate) value: Bytes,
}

/// Times are milliseconds since the Unix epoch; 0 means "none".
fn put_time(out: &mut BytesMut, t: Option<SystemTime>) {
    let ms = t
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64);
    out.put_u64(ms);
}

fn get_time(buf: &mut Bytes) -> Option<Option<SystemTime>> {
    let ms = try_get_u64(buf)?;
    Some((ms != 0).then(|| UNIX_EPOCH + Duration::from_millis(ms)))
}

fn try_get_u64(buf: &mut Bytes) -> Option<u64> {
    (buf.remaining() >= 8).then(|| buf.get_u64())
}

fn try_get_u32(buf: &mut Bytes) -> Option<u32> {
    (buf.remaining() >= 4).then(|| buf.get_u32())
}

fn get_bytes(buf: &mut Bytes) -> Option<Bytes> {
    let len = try_get_u32(buf)? as usize;
    (buf.remaining() >= len).then(|| buf.split_to(len))
}

impl StoredRecord {
    pub(crate) fn encode(&self) -> Bytes {
        let headers_len: usize = self
            .headers
            .iter()
            .map(|(n, v)| 8 + n.len() + v.len())
            .sum();
        let mut out = BytesMut::with_capacity(28 + self.key.len() + headers_len + self.value.len());
        put_time(&mut out, self.timestamp);
        put_time(&mut out, self.not_before);
        out.put_u32(self.key.len() as u32);
        out.put_slice(self.key.as_bytes());
        out.put_u32(self.headers.len() as u32);
        for (name, value) in &self.headers {
            out.put_u32(name.len() as u32);
            out.put_slice(name.as_bytes());
            out.put_u32(value.len() as u32);
            out.put_slice(value);
        }
        out.put_slice(&self.value);
        out.freeze()
    }

    /// `None` when the bytes are not a record this code wrote (corruption is reported by the
    /// caller and the record skipped, never a panic).
    pub(crate) fn decode(mut buf: Bytes) -> Option<Self> {
        let timestamp = get_time(&mut buf)?;
        let not_before = get_time(&mut buf)?;
        let key = String::from_utf8(get_bytes(&mut buf)?.to_vec()).ok()?;
        let count = try_get_u32(&mut buf)?;
        let mut headers = Vec::with_capacity(count.min(64) as usize);
        for _ in 0..count {
            let name = String::from_utf8(get_bytes(&mut buf)?.to_vec()).ok()?;
            headers.push((name, get_bytes(&mut buf)?));
        }
        Some(Self {
            timestamp,
            not_before,
            key,
            headers,
            value: buf,
        })
    }
}

/// FNV-1a, 64 bit. Chooses a key's partition; written out here because the mapping is stored
/// implicitly on disk (a key's records must keep landing in the same partition across
/// restarts and upgrades), which rules out `std`'s unspecified `DefaultHasher`.
pub(crate) fn partition_for(key: &str, partitions: u32) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % u64::from(partitions.max(1))) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_garbage_is_refused() {
        let record = StoredRecord {
            timestamp: Some(UNIX_EPOCH + Duration::from_millis(1_700_000_000_000)),
            not_before: None,
            key: "example.test#2".into(),
            headers: vec![("traceparent".into(), Bytes::from_static(b"00-abc"))],
            value: Bytes::from_static(b"body bytes"),
        };
        let encoded = record.encode();
        assert_eq!(StoredRecord::decode(encoded.clone()), Some(record));
        assert_eq!(StoredRecord::decode(encoded.slice(..20)), None);
        assert_eq!(StoredRecord::decode(Bytes::from_static(b"\xff\xff")), None);
    }

    #[test]
    fn keys_sort_by_partition_then_offset() {
        assert!(record_key(1, 0, 255) < record_key(1, 0, 256));
        assert!(record_key(1, 0, u64::MAX) < record_key(1, 1, 0));
        assert_eq!(offset_of(&record_key(3, 4, 99)), Some(99));
    }

    #[test]
    fn partitioning_is_stable() {
        // Pinned values: changing the hash would reorder keys already on disk.
        assert_eq!(
            partition_for("example.test", 16),
            partition_for("example.test", 16)
        );
        assert_eq!(partition_for("", 7), (0xcbf2_9ce4_8422_2325u64 % 7) as u32);
    }
}
