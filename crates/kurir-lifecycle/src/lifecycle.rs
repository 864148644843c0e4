//! The [`Lifecycle`] handle: shutdown flag, readiness, and the table of in-flight activities.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;
use tokio::time::Instant;

use crate::activity::{Activity, ActivitySnapshot};
use crate::signal::ShutdownSignal;

/// A cloneable handle on the process lifecycle: every clone sees the same state.
#[derive(Clone, Debug)]
pub struct Lifecycle {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    /// `true` once shutdown has begun. Flipped only while `table` is locked, so
    /// [`Lifecycle::activity`] (which checks it under the same lock) can never register
    /// work after [`Lifecycle::shutdown`] has returned.
    shutdown: watch::Sender<bool>,
    /// Set by the binary once every listener is up; `is_ready` also requires no shutdown.
    ready: AtomicBool,
    /// The activities in flight; the mutex is held only for an insert, remove or copy.
    table: Mutex<HashMap<u64, Entry>>,
    /// Number of entries in `table`, published so [`Lifecycle::drain`] can await zero
    /// without polling.
    in_flight: watch::Sender<usize>,
    next_id: AtomicU64,
}

#[derive(Debug)]
struct Entry {
    name: &'static str,
    started: Instant,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self::new()
    }
}

impl Lifecycle {
    /// A new lifecycle: not ready, not shutting down, nothing in flight.
    pub fn new() -> Self {
        let inner = Inner {
            shutdown: watch::Sender::new(false),
            ready: AtomicBool::new(false),
            table: Mutex::new(HashMap::new()),
            in_flight: watch::Sender::new(0),
            next_id: AtomicU64::new(0),
        };
        Self {
            inner: Arc::new(inner),
        }
    }

    /// Begins shutdown. Idempotent: only the first call logs and wakes the waiters.
    pub fn shutdown(&self) {
        let _table = self.inner.lock_table();
        let started = self
            .inner
            .shutdown
            .send_if_modified(|down| !std::mem::replace(down, true));
        if started {
            tracing::info!("shutdown started");
        }
    }

    /// Whether [`Lifecycle::shutdown`] has been called.
    pub fn is_shutting_down(&self) -> bool {
        *self.inner.shutdown.borrow()
    }

    /// A handle every task can await (or poll) to learn that shutdown has begun.
    pub fn shutdown_signal(&self) -> ShutdownSignal {
        ShutdownSignal::new(self.inner.shutdown.subscribe())
    }

    /// Marks the process ready (all listeners up) or not.
    pub fn set_ready(&self, ready: bool) {
        self.inner.ready.store(ready, Ordering::SeqCst);
    }

    /// Ready to take traffic: [`Lifecycle::set_ready`]`(true)` and not shutting down, so
    /// a draining process fails its readiness probe even if nobody cleared the flag.
    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::SeqCst) && !self.is_shutting_down()
    }

    /// Registers one unit of in-flight work (a session, a DATA transfer, a delivery) that
    /// the drain waits for until the guard is dropped. `None` once shutdown has begun:
    /// the caller refuses the work (SMTP: [`crate::SHUTTING_DOWN_REPLY`]).
    ///
    /// `name` is a kind, not an identity ("smtp_session", not a peer address): it labels
    /// a metric and keeps the drain log short. Put identities in tracing fields.
    pub fn activity(&self, name: &'static str) -> Option<Activity> {
        let mut table = self.inner.lock_table();
        if *self.inner.shutdown.borrow() {
            return None;
        }
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        table.insert(id, Entry { name, started });
        self.inner.in_flight.send_replace(table.len());
        Some(Activity::new(self.clone(), id, name))
    }

    /// Number of activities in flight.
    pub fn in_flight(&self) -> usize {
        *self.inner.in_flight.borrow()
    }

    /// In-flight activity counts per name, sorted by name.
    pub fn in_flight_by_name(&self) -> Vec<(&'static str, usize)> {
        let table = self.inner.lock_table();
        let mut counts: HashMap<&'static str, usize> = HashMap::new();
        for entry in table.values() {
            *counts.entry(entry.name).or_default() += 1;
        }
        let mut counts: Vec<_> = counts.into_iter().collect();
        counts.sort_unstable();
        counts
    }

    /// Resolves once no activity called `name` is in flight (at once when none is). Woken
    /// by every activity's start and end, no polling.
    pub async fn idle(&self, name: &str) {
        let mut changes = self.in_flight_watch();
        // The sender lives as long as `self`, so this cannot fail.
        let _ = changes
            .wait_for(|_| {
                self.in_flight_by_name()
                    .iter()
                    .all(|(n, count)| *n != name || *count == 0)
            })
            .await;
    }

    /// Every activity in flight, oldest first.
    pub fn snapshot(&self) -> Vec<ActivitySnapshot> {
        let now = Instant::now();
        let table = self.inner.lock_table();
        let mut all: Vec<_> = table
            .iter()
            .map(|(id, e)| (e.started, *id, e.name))
            .collect();
        all.sort_unstable();
        all.into_iter()
            .map(|(started, id, name)| ActivitySnapshot {
                id,
                name,
                age: now.saturating_duration_since(started),
            })
            .collect()
    }

    /// Called by [`Activity`]'s drop.
    pub(crate) fn finish(&self, id: u64) {
        let mut table = self.inner.lock_table();
        table.remove(&id);
        self.inner.in_flight.send_replace(table.len());
    }

    pub(crate) fn in_flight_watch(&self) -> watch::Receiver<usize> {
        self.inner.in_flight.subscribe()
    }
}

impl Inner {
    /// The table stays consistent even if a holder panicked (every critical section is
    /// a single insert/remove/copy), so a poisoned lock is safe to take over.
    fn lock_table(&self) -> MutexGuard<'_, HashMap<u64, Entry>> {
        self.table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
