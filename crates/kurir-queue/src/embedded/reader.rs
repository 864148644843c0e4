//! The task that feeds one owned partition to its consumer.
//!
//! It reads ahead a few records at a time from the store (the backlog stays on disk), holds
//! back a record whose not-before time has not come (sleeping until then: the partition is
//! paused, never polled), takes an in-flight slot before handing each record out (so a slow
//! consumer bounds memory), and stops when cancelled (revoke, close).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};

use super::codec::StoredRecord;
use super::store::Store;
use super::topics::PartitionState;
use crate::record::IncomingRecord;
use crate::watermark::{PartitionTracker, Slot};

/// Records read from the store at once (on the blocking pool: a backlog may be on disk).
const READ_AHEAD: usize = 32;
/// At most this many records past the cursor (a reader that keeps up with its writers)
/// are read on the reader's own task.
const INLINE_READ: u64 = 4;

/// Everything a reader needs.
#[derive(Debug)]
pub(crate) struct ReaderArgs {
    pub(crate) store: Store,
    pub(crate) topic: Arc<str>,
    pub(crate) topic_id: u32,
    pub(crate) partition: Arc<PartitionState>,
    pub(crate) tracker: Arc<PartitionTracker>,
    pub(crate) records: mpsc::Sender<IncomingRecord>,
    pub(crate) cancel: watch::Receiver<bool>,
    pub(crate) paused: watch::Receiver<bool>,
    pub(crate) start: u64,
}

/// Why the reader stopped waiting.
enum Stop {
    Cancelled,
}

pub(crate) async fn run(mut args: ReaderArgs) {
    let mut cursor = args.start;
    let mut buffer: VecDeque<(u64, Bytes)> = VecDeque::new();
    let mut end = args.partition.watch_end();
    loop {
        if wait_unpaused(&mut args).await.is_err() {
            return;
        }
        let Ok(slot) = cancellable(&mut args.cancel, args.tracker.reserve()).await else {
            return;
        };
        if buffer.is_empty() {
            match fill(&mut args, &mut end, cursor).await {
                Ok(Some(rows)) => buffer.extend(rows),
                Ok(None) => {
                    // A gap (a failed batch): nothing is stored below the end.
                    cursor = *end.borrow();
                    args.tracker.skip_to(cursor);
                    continue;
                }
                Err(Stop::Cancelled) => return,
            }
        }
        let Some((offset, bytes)) = buffer.pop_front() else {
            continue;
        };
        cursor = offset + 1;
        if hand_out(&mut args, offset, bytes, slot).await.is_err() {
            return;
        }
    }
}

/// Waits until the end moves past `cursor`, then reads ahead. `Ok(None)`: nothing stored in
/// `[cursor, end)`.
async fn fill(
    args: &mut ReaderArgs,
    end: &mut watch::Receiver<u64>,
    cursor: u64,
) -> Result<Option<Vec<(u64, Bytes)>>, Stop> {
    loop {
        let limit = *end.borrow_and_update();
        if limit > cursor {
            // Keeping up: the records just written, without reading them back.
            if let Some(rows) = args.partition.recent(cursor, limit, READ_AHEAD) {
                return Ok(Some(rows));
            }
            let (topic_id, partition) = (args.topic_id, args.partition.partition);
            let read = if limit - cursor <= INLINE_READ {
                // Caught up: the few records just written are in the memtable; reading
                // them here costs less than the hop to the blocking pool and back.
                Ok(args
                    .store
                    .read(topic_id, partition, cursor, INLINE_READ as usize))
            } else {
                let store = args.store.clone();
                tokio::task::spawn_blocking(move || {
                    store.read(topic_id, partition, cursor, READ_AHEAD)
                })
                .await
            };
            let rows = match read {
                Ok(Ok(rows)) => rows,
                Ok(Err(error)) => {
                    tracing::error!(%error, "embedded queue: read failed; retrying");
                    cancellable(
                        &mut args.cancel,
                        tokio::time::sleep(std::time::Duration::from_millis(100)),
                    )
                    .await?;
                    continue;
                }
                Err(_) => return Err(Stop::Cancelled),
            };
            let rows: Vec<_> = rows.into_iter().filter(|(o, _)| *o < limit).collect();
            return Ok((!rows.is_empty()).then_some(rows));
        }
        cancellable(&mut args.cancel, end.changed())
            .await?
            .map_err(|_| Stop::Cancelled)?;
    }
}

/// Decodes, holds back until due, and sends one record.
async fn hand_out(
    args: &mut ReaderArgs,
    offset: u64,
    bytes: Bytes,
    slot: Slot,
) -> Result<(), Stop> {
    let Some(record) = StoredRecord::decode(bytes) else {
        // Cannot happen unless the disk lies; skip rather than block the partition.
        tracing::error!(topic = %args.topic, partition = args.partition.partition, offset, "corrupt record skipped");
        args.tracker.skip_to(offset + 1);
        return Ok(());
    };
    let wait = record
        .not_before
        .and_then(|due| due.duration_since(SystemTime::now()).ok());
    if let Some(wait) = wait {
        cancellable(&mut args.cancel, tokio::time::sleep(wait)).await?;
    }
    let ack = args.tracker.begin(offset, slot);
    let incoming = IncomingRecord {
        topic: args.topic.clone(),
        partition: args.partition.partition,
        offset,
        key: record.key,
        value: record.value,
        not_before: record.not_before,
        headers: record.headers,
        timestamp: record.timestamp,
        ack,
    };
    cancellable(&mut args.cancel, args.records.send(incoming))
        .await?
        .map_err(|_| Stop::Cancelled)
}

async fn wait_unpaused(args: &mut ReaderArgs) -> Result<(), Stop> {
    while *args.paused.borrow_and_update() {
        let changed = cancellable(&mut args.cancel, args.paused.changed()).await?;
        if changed.is_err() {
            return Ok(());
        }
    }
    Ok(())
}

/// Runs `work` unless the reader is cancelled first.
async fn cancellable<T>(
    cancel: &mut watch::Receiver<bool>,
    work: impl Future<Output = T>,
) -> Result<T, Stop> {
    if *cancel.borrow() {
        return Err(Stop::Cancelled);
    }
    tokio::select! {
        biased;
        _ = cancel.wait_for(|c| *c) => Err(Stop::Cancelled),
        value = work => Ok(value),
    }
}
