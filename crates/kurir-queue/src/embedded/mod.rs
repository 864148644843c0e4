//! The embedded backend: the queue in one process, durable on local disk.
//!
//! Same semantics as Kafka, scaled down: topics have partitions, a record's key picks its
//! partition, publish resolves once the record is fsynced, consumer groups split partitions
//! among their members, committed positions advance to the low watermark of finished records,
//! and records every group has consumed are deleted.
//!
//! # Layout
//! - [`store`](self::store): fjall keyspaces and why fjall.
//! - `codec`: the key and record layout on disk.
//! - `topics`: in-memory partition state (offsets, the end readers wait on).
//! - `writer`: the group-commit writer thread.
//! - `group`: the in-process consumer-group coordinator and the per-partition reader tasks.
//! - `retention`: the events topic's records deleted after `queue.embedded.events_retention`,
//!   and the positions of groups idle for `queue.embedded.group_retention` forgotten.

mod codec;
mod group;
mod reader;
mod retention;
mod store;
mod topics;
mod writer;

use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use tokio::sync::{mpsc, oneshot};

use self::codec::{StoredRecord, partition_for};
use self::store::{Store, StoredTopic};
use self::topics::{TopicMap, TopicState};
use self::writer::WriteRequest;
use crate::config::QueueConfig;
use crate::consumer::Subscription;
use crate::error::{PublishError, QueueError};
use crate::record::OutgoingRecord;
use crate::topic::TopicSpec;
use crate::{PartitionLag, Queue};

/// The embedded queue. Cheap to clone; every clone is the same queue.
#[derive(Debug, Clone)]
pub struct EmbeddedQueue {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    topics: RwLock<TopicMap>,
    /// `None` once closed.
    writer: Mutex<Option<mpsc::Sender<WriteRequest>>>,
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    groups: group::Coordinator,
    /// Dropping it stops the retention thread.
    retention_stop: Mutex<Option<std::sync::mpsc::Sender<()>>>,
    retention_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl EmbeddedQueue {
    /// Opens (or creates) the queue in `dir`, recovering every topic and partition.
    pub fn open(dir: &Path, config: &QueueConfig) -> Result<Self, QueueError> {
        let store = Store::open(dir)?;
        let mut topics = TopicMap::new();
        for stored in store.load_topics()? {
            let state = topics::recover(&store, &stored)?;
            topics.insert(stored.name.clone(), Arc::new(state));
        }
        let (writer, thread) = writer::spawn(store.clone(), config.embedded.max_batch);
        let groups = group::Coordinator::new(store.clone(), config);
        let (retention_stop, stopped) = std::sync::mpsc::channel();
        let inner = Arc::new(Inner {
            store,
            topics: RwLock::new(topics),
            writer: Mutex::new(Some(writer)),
            writer_thread: Mutex::new(Some(thread)),
            groups,
            retention_stop: Mutex::new(Some(retention_stop)),
            retention_thread: Mutex::new(None),
        });
        let retention = retention::Retention {
            events_topic: config.topics().events(),
            events: config.embedded.events_retention,
            groups: config.embedded.group_retention,
            opened: SystemTime::now(),
        };
        let retention = retention::spawn(Arc::downgrade(&inner), stopped, retention)
            .map_err(|e| QueueError::Backend(format!("embedded queue: starting retention: {e}")))?;
        *inner.retention_thread.lock().expect("retention lock") = Some(retention);
        Ok(Self { inner })
    }

    /// Closes the queue: every subscription leaves its group (draining in-flight records
    /// within the drain timeout), the writer finishes what it was given, and the store is
    /// flushed. After this the directory can be opened again.
    pub async fn close(&self) {
        self.inner
            .retention_stop
            .lock()
            .expect("retention lock")
            .take();
        let retention = self
            .inner
            .retention_thread
            .lock()
            .expect("retention lock")
            .take();
        if let Some(thread) = retention {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        self.inner.groups.close_all().await;
        self.inner.writer.lock().expect("writer lock").take();
        let thread = self.inner.writer_thread.lock().expect("thread lock").take();
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        if let Err(error) = self.inner.store.persist() {
            tracing::warn!(%error, "embedded queue: final flush failed");
        }
    }

    fn topic(&self, name: &str) -> Option<Arc<TopicState>> {
        self.inner
            .topics
            .read()
            .expect("topics lock")
            .get(name)
            .cloned()
    }

    fn create_topic(&self, spec: &TopicSpec) -> Result<(), QueueError> {
        let mut topics = self.inner.topics.write().expect("topics lock");
        if topics.contains_key(&spec.name) {
            return Ok(());
        }
        let id = topics.values().map(|t| t.id + 1).max().unwrap_or(1);
        let stored = StoredTopic {
            name: spec.name.clone(),
            id,
            partitions: spec.partitions.max(1),
        };
        self.inner.store.create_topic(&stored)?;
        topics.insert(spec.name.clone(), Arc::new(topics::fresh(&stored)));
        Ok(())
    }
}

impl Queue for EmbeddedQueue {
    async fn ensure_topics(&self, topics: &[TopicSpec]) -> Result<(), QueueError> {
        for spec in topics {
            self.create_topic(spec)?;
        }
        Ok(())
    }

    async fn publish(&self, topic: &str, records: Vec<OutgoingRecord>) -> Result<(), PublishError> {
        let state = self
            .topic(topic)
            .ok_or_else(|| PublishError::Fatal(format!("unknown topic {topic}")))?;
        let now = SystemTime::now();
        let partitions = state.partitions.len() as u32;
        let rows = records
            .into_iter()
            .map(|r| {
                let partition =
                    state.partitions[partition_for(&r.key, partitions) as usize].clone();
                let stored = StoredRecord {
                    timestamp: Some(now),
                    not_before: r.not_before,
                    key: r.key,
                    headers: r.headers,
                    value: r.value,
                };
                (partition, stored.encode())
            })
            .collect();
        let (done, result) = oneshot::channel();
        let writer = self.inner.writer.lock().expect("writer lock").clone();
        let writer = writer.ok_or(PublishError::Closed)?;
        let request = WriteRequest {
            topic_id: state.id,
            records: rows,
            done,
        };
        writer
            .send(request)
            .await
            .map_err(|_| PublishError::Closed)?;
        result.await.map_err(|_| PublishError::Closed)?
    }

    async fn subscribe(&self, group: &str, topics: &[String]) -> Result<Subscription, QueueError> {
        if group.is_empty() || group.contains('\0') {
            return Err(QueueError::Backend(format!(
                "invalid consumer group name {group:?}"
            )));
        }
        let mut states = Vec::with_capacity(topics.len());
        for name in topics {
            let state = self
                .topic(name)
                .ok_or_else(|| QueueError::Backend(format!("unknown topic {name}")))?;
            states.push(state);
        }
        Ok(self.inner.groups.join(group, states).await)
    }

    async fn lag(&self, group: &str, topic: &str) -> Result<Vec<PartitionLag>, QueueError> {
        let state = self
            .topic(topic)
            .ok_or_else(|| QueueError::Backend(format!("unknown topic {topic}")))?;
        let mut out = Vec::with_capacity(state.partitions.len());
        for p in &state.partitions {
            let committed = match self.inner.store.committed(group, state.id, p.partition)? {
                Some(c) => c,
                None => p.retained_from.load(std::sync::atomic::Ordering::SeqCst),
            };
            out.push(PartitionLag {
                topic: topic.to_owned(),
                partition: p.partition,
                committed,
                end: p.end(),
            });
        }
        Ok(out)
    }
}
