//! Group commit and the expiry sweep, on one background thread.
//!
//! Writers commit their fjall batch without an fsync (the change is in the journal buffer
//! and visible to readers at once), then ask this thread to make it durable and wait. The
//! thread takes one request and every other one already waiting, calls
//! `Database::persist(SyncAll)` once, and answers them all: concurrent writers share one
//! fsync instead of queueing behind each other's (fjall fsyncs under its journal lock).
//! A caller is told a write succeeded only after the fsync that covers it.
//!
//! Between requests the thread sweeps expired entries ([`super::sweep`]) every
//! [`SWEEP_INTERVAL`], at most [`SWEEP_BATCH`] at a time so syncs never wait long.

use std::sync::Mutex;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use fjall::PersistMode;
use tokio::sync::oneshot;

use super::store::Store;
use super::sweep;
use crate::error::StateError;

/// How often expired entries are deleted (readers ignore them before that).
pub(super) const SWEEP_INTERVAL: Duration = Duration::from_secs(60);
/// Index entries handled per sweep round; a full round is followed by another at once.
pub(super) const SWEEP_BATCH: usize = 1_000;

type Reply = oneshot::Sender<Result<(), StateError>>;

/// The handle to the thread. Dropping every sender ends it (after a last flush).
#[derive(Debug)]
pub(super) struct Syncer {
    /// `None` once closed: later writes fail as unavailable.
    requests: Mutex<Option<mpsc::Sender<Reply>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Syncer {
    pub(super) fn start(store: Store) -> Result<Self, StateError> {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("kurir-state-sync".into())
            .spawn(move || run(&store, &rx))
            .map_err(|e| {
                StateError::Unavailable(format!("embedded state: starting the sync thread: {e}"))
            })?;
        Ok(Self {
            requests: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Waits until everything committed before the call is on disk.
    pub(super) async fn sync(&self) -> Result<(), StateError> {
        let (tx, rx) = oneshot::channel();
        let sent = match &*self.requests.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(requests) => requests.send(tx).is_ok(),
            None => false,
        };
        if !sent {
            return Err(StateError::Unavailable("embedded state is closed".into()));
        }
        rx.await
            .map_err(|_| StateError::Unavailable("embedded state sync thread stopped".into()))?
    }

    /// Stops the thread (it flushes once more) and waits for it.
    pub(super) async fn stop(&self) {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

impl Drop for Syncer {
    /// Without `close`, the last handle's drop still ends the thread and waits for its
    /// final flush, so the directory can be reopened at once.
    fn drop(&mut self) {
        self.requests
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(thread) = self
            .thread
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = thread.join();
        }
    }
}

fn run(store: &Store, requests: &mpsc::Receiver<Reply>) {
    // The first sweep runs soon after opening: a restart may find much to delete.
    let mut next_sweep = Instant::now() + Duration::from_secs(1);
    loop {
        match requests.recv_timeout(next_sweep.saturating_duration_since(Instant::now())) {
            Ok(first) => {
                let waiting: Vec<Reply> =
                    std::iter::once(first).chain(requests.try_iter()).collect();
                let result = persist(store);
                for reply in waiting {
                    let _ = reply.send(result.clone());
                }
            }
            Err(RecvTimeoutError::Timeout) => next_sweep = sweep_round(store),
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    if let Err(error) = persist(store) {
        tracing::warn!(%error, "embedded state: final flush failed");
    }
}

fn persist(store: &Store) -> Result<(), StateError> {
    store.db.persist(PersistMode::SyncAll).map_err(|e| {
        tracing::error!(error = %e, "embedded state: fsync failed");
        StateError::Unavailable(format!("embedded state: fsync: {e}"))
    })
}

/// One sweep round; returns when the next one is due.
fn sweep_round(store: &Store) -> Instant {
    match sweep::sweep(store, SystemTime::now(), SWEEP_BATCH) {
        Ok(n) if n >= SWEEP_BATCH => Instant::now(),
        Ok(n) => {
            if n > 0 {
                tracing::debug!(deleted = n, "embedded state: swept expired entries");
            }
            Instant::now() + SWEEP_INTERVAL
        }
        Err(error) => {
            tracing::warn!(%error, "embedded state: expiry sweep failed");
            Instant::now() + SWEEP_INTERVAL
        }
    }
}
