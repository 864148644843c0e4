//! Group commit: one writer thread turns many concurrent publishes into one fsync.
//!
//! Publishers send their records over a bounded channel (a full channel is backpressure) and
//! wait on a oneshot. The writer takes one request, then everything else already waiting, up
//! to `max_batch` records, gives the records their offsets, writes them in one fjall batch
//! with `PersistMode::SyncAll`, and only then answers every publisher in the batch and wakes
//! the partitions' readers. While one fsync runs, the next batch gathers, so durability costs
//! one fsync per batch instead of one per message.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::codec::record_key;
use super::store::Store;
use super::topics::PartitionState;
use crate::error::PublishError;

/// Records of one publish call, each already assigned to a partition.
#[derive(Debug)]
pub(crate) struct WriteRequest {
    pub(crate) topic_id: u32,
    pub(crate) records: Vec<(Arc<PartitionState>, Bytes)>,
    pub(crate) done: oneshot::Sender<Result<(), PublishError>>,
}

/// Starts the writer thread; it ends when every sender is dropped.
pub(crate) fn spawn(
    store: Store,
    max_batch: usize,
) -> (mpsc::Sender<WriteRequest>, std::thread::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(1024);
    let handle = std::thread::Builder::new()
        .name("kurir-queue-writer".into())
        .spawn(move || run(store, rx, max_batch.max(1)))
        .expect("spawning the queue writer thread");
    (tx, handle)
}

fn run(store: Store, mut rx: mpsc::Receiver<WriteRequest>, max_batch: usize) {
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        let mut count = batch[0].records.len();
        while count < max_batch {
            match rx.try_recv() {
                Ok(request) => {
                    count += request.records.len();
                    batch.push(request);
                }
                Err(_) => break,
            }
        }
        write_batch(&store, batch, count);
    }
}

fn write_batch(store: &Store, batch: Vec<WriteRequest>, count: usize) {
    let mut rows = Vec::with_capacity(count);
    let mut appended = Vec::with_capacity(count);
    for request in &batch {
        for (partition, value) in &request.records {
            let offset = partition.reserve_offset();
            rows.push((
                record_key(request.topic_id, partition.partition, offset),
                value.clone(),
            ));
            appended.push((partition, offset, value));
        }
    }
    let result = store
        .append(&rows)
        .map_err(|e| PublishError::Transient(e.to_string()));
    match &result {
        Ok(()) => {
            for (partition, offset, value) in &appended {
                partition.remember(*offset, Bytes::clone(value));
            }
        }
        Err(error) => {
            tracing::error!(%error, records = count, "embedded queue append failed");
            // Offsets handed out for the failed batch are not reused; readers skip the gap.
        }
    }
    for (partition, _, _) in appended {
        partition.publish_end();
    }
    for request in batch {
        let _ = request.done.send(result.clone());
    }
}
