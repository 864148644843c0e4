//! The embedded queue's storage: fjall keyspaces and the operations on them.
//!
//! Why fjall: an LSM tree with a write-ahead journal is the right shape for a queue (append
//! at the tail, read sequentially, delete from the head), one write batch spanning keyspaces
//! commits atomically, `PersistMode::SyncAll` on a batch gives exactly one fsync for a whole
//! group commit, large values can be stored apart from keys (KV separation), and it is 100 %
//! safe Rust. redb, the other candidate, is a copy-on-write B-tree: every commit rewrites the
//! path to each touched page, which costs more for append-heavy 2–100 KB records.
//!
//! Keyspaces:
//! - `topics`: topic name → `id: u32, partitions: u32`.
//! - `records`: `(topic id, partition, offset)` → encoded record ([`super::codec`]).
//! - `offsets`: `(group, topic id, partition)` → committed position `u64`, then the time of
//!   the commit in milliseconds since the Unix epoch `u64` (absent in entries written before
//!   idle groups expired: see [`CommittedEntry::at`]).

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, KvSeparationOptions, PersistMode};

use super::codec::{offset_key, offset_of, parse_offset_key, partition_prefix, record_key};
use crate::error::QueueError;

fn backend(context: &str) -> impl Fn(fjall::Error) -> QueueError + '_ {
    move |e| QueueError::Backend(format!("embedded queue: {context}: {e}"))
}

/// The most journal kept on disk (fjall's minimum is 64 MiB).
const MAX_JOURNAL: u64 = 64 * 1024 * 1024;

/// A topic as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredTopic {
    pub(crate) name: String,
    pub(crate) id: u32,
    pub(crate) partitions: u32,
}

/// One group's committed position on one partition, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CommittedEntry {
    pub(crate) group: String,
    pub(crate) topic_id: u32,
    pub(crate) partition: u32,
    pub(crate) position: u64,
    /// When it was committed; `None` for an entry written before commit times were kept.
    pub(crate) at: Option<SystemTime>,
}

/// Handles to the database and its keyspaces. Cheap to clone (fjall handles are shared).
#[derive(Clone)]
pub(crate) struct Store {
    db: Database,
    topics: Keyspace,
    records: Keyspace,
    offsets: Keyspace,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    pub(crate) fn open(dir: &Path) -> Result<Self, QueueError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            QueueError::Backend(format!("embedded queue: creating {}: {e}", dir.display()))
        })?;
        let db = Database::builder(dir)
            // A journal file goes only once every keyspace's memtable holding its data is
            // flushed, and `offsets` and `topics` take few writes: with fjall's default
            // (512 MiB) the journals grew to that before older ones went, and a restart
            // replayed all of it. At this size the small memtables are flushed sooner.
            .max_journaling_size(MAX_JOURNAL)
            .open()
            .map_err(backend("opening the database"))?;
        let plain = KeyspaceCreateOptions::default;
        let topics = db
            .keyspace("topics", plain)
            .map_err(backend("opening keyspace topics"))?;
        let records = db
            .keyspace("records", || {
                // 16 MiB memtables instead of 64: the writer stalls while a full memtable
                // rotates and flushes, and a smaller one makes that pause shorter (it was
                // the p99 of paced gRPC submission: 15-50 ms every ~29,000 records).
                KeyspaceCreateOptions::default()
                    .with_kv_separation(Some(KvSeparationOptions::default()))
                    .max_memtable_size(16 * 1024 * 1024)
            })
            .map_err(backend("opening keyspace records"))?;
        let offsets = db
            .keyspace("offsets", plain)
            .map_err(backend("opening keyspace offsets"))?;
        Ok(Self {
            db,
            topics,
            records,
            offsets,
        })
    }

    pub(crate) fn load_topics(&self) -> Result<Vec<StoredTopic>, QueueError> {
        let mut out = Vec::new();
        for item in self.topics.iter() {
            let (name, value) = item.into_inner().map_err(backend("reading topics"))?;
            let (Some(id), Some(partitions)) = (be_u32(&value, 0), be_u32(&value, 4)) else {
                return Err(QueueError::Backend(
                    "embedded queue: corrupt topic entry".into(),
                ));
            };
            let name = String::from_utf8_lossy(&name).into_owned();
            out.push(StoredTopic {
                name,
                id,
                partitions,
            });
        }
        Ok(out)
    }

    /// Stores a new topic durably.
    pub(crate) fn create_topic(&self, topic: &StoredTopic) -> Result<(), QueueError> {
        let mut value = topic.id.to_be_bytes().to_vec();
        value.extend_from_slice(&topic.partitions.to_be_bytes());
        let mut batch = self.db.batch().durability(Some(PersistMode::SyncAll));
        batch.insert(&self.topics, topic.name.as_bytes(), value);
        batch.commit().map_err(backend("creating a topic"))
    }

    /// The offset after the last stored record of a partition (0 when empty).
    pub(crate) fn end_offset(&self, topic_id: u32, partition: u32) -> Result<u64, QueueError> {
        match self
            .records
            .prefix(partition_prefix(topic_id, partition))
            .next_back()
        {
            None => Ok(0),
            Some(item) => {
                let key = item.key().map_err(backend("reading the last record"))?;
                Ok(offset_of(&key).map_or(0, |o| o + 1))
            }
        }
    }

    /// The offset of the first stored record of a partition.
    pub(crate) fn first_offset(
        &self,
        topic_id: u32,
        partition: u32,
    ) -> Result<Option<u64>, QueueError> {
        match self
            .records
            .prefix(partition_prefix(topic_id, partition))
            .next()
        {
            None => Ok(None),
            Some(item) => {
                let key = item.key().map_err(backend("reading the first record"))?;
                Ok(offset_of(&key))
            }
        }
    }

    /// Up to `limit` records of a partition from `from` on, with their offsets.
    pub(crate) fn read(
        &self,
        topic_id: u32,
        partition: u32,
        from: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Bytes)>, QueueError> {
        let start = record_key(topic_id, partition, from);
        let end = record_key(topic_id, partition, u64::MAX);
        let mut out = Vec::new();
        for item in self.records.range(start..=end).take(limit) {
            let (key, value) = item.into_inner().map_err(backend("reading records"))?;
            if let Some(offset) = offset_of(&key) {
                out.push((offset, Bytes::from(value)));
            }
        }
        Ok(out)
    }

    /// Appends records (already given their offsets) with one fsync for the whole batch.
    pub(crate) fn append(&self, records: &[([u8; 16], Bytes)]) -> Result<(), QueueError> {
        let mut batch = self.db.batch().durability(Some(PersistMode::SyncAll));
        for (key, value) in records {
            batch.insert(&self.records, key.as_slice(), value.clone());
        }
        batch.commit().map_err(backend("appending records"))
    }

    pub(crate) fn committed(
        &self,
        group: &str,
        topic_id: u32,
        partition: u32,
    ) -> Result<Option<u64>, QueueError> {
        let value = self
            .offsets
            .get(offset_key(group, topic_id, partition))
            .map_err(backend("reading a committed offset"))?;
        Ok(value.and_then(|v| be_u64(&v)))
    }

    /// Every group's committed position on a partition.
    pub(crate) fn all_committed(
        &self,
        topic_id: u32,
        partition: u32,
    ) -> Result<Vec<u64>, QueueError> {
        Ok(self
            .committed_by_group(topic_id, partition)?
            .into_values()
            .collect())
    }

    /// Every group's committed position on a partition, by group name.
    pub(crate) fn committed_by_group(
        &self,
        topic_id: u32,
        partition: u32,
    ) -> Result<std::collections::HashMap<String, u64>, QueueError> {
        Ok(self
            .committed_entries()?
            .into_iter()
            .filter(|e| e.topic_id == topic_id && e.partition == partition)
            .map(|e| (e.group, e.position))
            .collect())
    }

    /// Stores a group's committed position and deletes the records `delete` (those every
    /// group has consumed). Not fsynced on its own: a crash may lose the latest commit, and
    /// the records after the previous one are delivered again (at-least-once).
    pub(crate) fn commit(
        &self,
        group: &str,
        topic_id: u32,
        partition: u32,
        offset: u64,
        delete: std::ops::Range<u64>,
    ) -> Result<(), QueueError> {
        let mut value = [0u8; 16];
        value[..8].copy_from_slice(&offset.to_be_bytes());
        let at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        value[8..].copy_from_slice(&(at.as_millis() as u64).to_be_bytes());
        let mut batch = self.db.batch();
        batch.insert(&self.offsets, offset_key(group, topic_id, partition), value);
        self.remove_records(&mut batch, topic_id, partition, delete);
        batch.commit().map_err(backend("committing an offset"))
    }

    /// Every committed position of every group.
    pub(crate) fn committed_entries(&self) -> Result<Vec<CommittedEntry>, QueueError> {
        let mut out = Vec::new();
        for item in self.offsets.iter() {
            let (key, value) = item.into_inner().map_err(backend("reading offsets"))?;
            let (Some((group, topic_id, partition)), Some(position)) =
                (parse_offset_key(&key), be_u64(&value))
            else {
                continue;
            };
            let at = value
                .get(8..16)
                .and_then(|b| b.try_into().ok())
                .map(|b| UNIX_EPOCH + Duration::from_millis(u64::from_be_bytes(b)));
            out.push(CommittedEntry {
                group: String::from_utf8_lossy(group).into_owned(),
                topic_id,
                partition,
                position,
                at,
            });
        }
        Ok(out)
    }

    /// Forgets a group's position on a partition.
    pub(crate) fn forget(
        &self,
        group: &str,
        topic_id: u32,
        partition: u32,
    ) -> Result<(), QueueError> {
        self.offsets
            .remove(offset_key(group, topic_id, partition))
            .map_err(backend("forgetting a group's position"))
    }

    /// Deletes the records `range` of a partition (retention), without an fsync of its own.
    pub(crate) fn delete(
        &self,
        topic_id: u32,
        partition: u32,
        range: std::ops::Range<u64>,
    ) -> Result<(), QueueError> {
        let mut batch = self.db.batch();
        self.remove_records(&mut batch, topic_id, partition, range);
        batch.commit().map_err(backend("deleting expired records"))
    }

    fn remove_records(
        &self,
        batch: &mut fjall::OwnedWriteBatch,
        topic_id: u32,
        partition: u32,
        range: std::ops::Range<u64>,
    ) {
        for o in range {
            batch.remove(&self.records, record_key(topic_id, partition, o).as_slice());
        }
    }

    /// Stores a position as entries were before commit times were kept.
    #[cfg(test)]
    pub(crate) fn put_untimed_offset(
        &self,
        group: &str,
        topic_id: u32,
        partition: u32,
        position: u64,
    ) {
        let key = offset_key(group, topic_id, partition);
        self.offsets.insert(key, position.to_be_bytes()).unwrap();
    }

    /// Flushes everything to disk (on close).
    pub(crate) fn persist(&self) -> Result<(), QueueError> {
        self.db
            .persist(PersistMode::SyncAll)
            .map_err(backend("persisting"))
    }
}

fn be_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn be_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?))
}
