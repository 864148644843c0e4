//! The single writer: every write of the embedded store runs on one background thread,
//! which also gives them their fsync (group commit) and sweeps expired entries.
//!
//! A caller sends a [`Job`] (a closure over the store) and waits for its answer. The thread
//! takes one job and every other one already waiting, runs them one after the other, calls
//! `Database::persist(SyncAll)` once if any of them must be durable, and only then answers
//! them all: concurrent writers share one fsync, and none waits on another's journal lock
//! or on a hop through tokio's blocking pool (a thread wake-up there and one back per call
//! was a large part of a delivery's cost). Being the only writer, the thread also makes
//! every read-modify-write (claims, counters, soft-bounce counts, history appends) atomic
//! without locks, and the sweep can never race a writer that replaces an entry it is about
//! to delete.
//!
//! Between rounds, and at least every [`SWEEP_INTERVAL`] under constant load, the thread
//! deletes expired entries ([`super::sweep`]), at most [`SWEEP_BATCH`] at a time so a round
//! never waits long behind it.
//!
//! The channel is unbounded, but each caller has one job outstanding and waits for it, so
//! what waits is bounded by the number of concurrent callers (records in flight, sessions).

use std::panic::AssertUnwindSafe;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use fjall::PersistMode;

use super::Inner;
use super::sweep;
use crate::error::StateError;

/// How often expired entries are deleted (readers ignore them before that).
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);
/// Index entries handled per sweep round; a full round is followed by another soon.
const SWEEP_BATCH: usize = 1_000;
/// Jobs run between two fsyncs at most, so the first of a long queue is not kept waiting.
const MAX_ROUND: usize = 4_096;

/// Answers a job's caller once the round is durable (`Err` if its fsync failed).
pub(super) type Answer = Box<dyn FnOnce(Result<(), StateError>) + Send>;

/// One write: run on the writer thread, answered after the round's fsync.
pub(super) struct Job {
    pub(super) run: Box<dyn FnOnce(&Inner) -> Answer + Send>,
    /// Whether the round must be fsynced before the answer. Operator counters and
    /// histories alone are not worth an fsync: they reach disk with the next durable round
    /// or on close.
    pub(super) durable: bool,
}

/// The handle to the thread. Dropping it ends the thread (after a last flush).
#[derive(Debug)]
pub(super) struct Writer {
    /// `None` once closed: later writes fail as unavailable.
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Writer {
    pub(super) fn start(inner: Arc<Inner>) -> Result<Self, StateError> {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("kurir-state-writer".into())
            .spawn(move || run(&inner, &rx))
            .map_err(|e| {
                StateError::Unavailable(format!("embedded state: starting the writer: {e}"))
            })?;
        Ok(Self {
            jobs: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queues a job; fails once the store is closed.
    pub(super) fn submit(&self, job: Job) -> Result<(), StateError> {
        let sent = match &*self.jobs.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(jobs) => jobs.send(job).is_ok(),
            None => false,
        };
        if sent {
            Ok(())
        } else {
            Err(StateError::Unavailable("embedded state is closed".into()))
        }
    }

    /// Stops the thread (it finishes the queued jobs and flushes) and waits for it.
    pub(super) async fn stop(&self) {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).take();
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

impl Drop for Writer {
    /// Without `close`, the last handle's drop still ends the thread and waits for its
    /// final flush, so the directory can be opened again at once.
    fn drop(&mut self) {
        self.jobs
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

fn run(inner: &Inner, jobs: &mpsc::Receiver<Job>) {
    // The first sweep runs soon after opening: a restart may find much to delete.
    let mut next_sweep = Instant::now() + Duration::from_secs(1);
    loop {
        match jobs.recv_timeout(next_sweep.saturating_duration_since(Instant::now())) {
            Ok(first) => {
                round(
                    inner,
                    std::iter::once(first).chain(jobs.try_iter().take(MAX_ROUND)),
                );
                if Instant::now() >= next_sweep {
                    next_sweep = sweep_round(inner);
                }
            }
            Err(RecvTimeoutError::Timeout) => next_sweep = sweep_round(inner),
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    if let Err(error) = persist(inner) {
        tracing::warn!(%error, "embedded state: final flush failed");
    }
}

/// Runs the jobs, fsyncs once if one of them must be durable, then answers them all.
fn round(inner: &Inner, jobs: impl Iterator<Item = Job>) {
    let mut durable = false;
    let mut answers = Vec::new();
    for job in jobs {
        durable |= job.durable;
        // A job that panics (a bug) drops its answer: its caller sees the store as
        // unavailable, and the writer goes on with the others.
        if let Ok(answer) = std::panic::catch_unwind(AssertUnwindSafe(|| (job.run)(inner))) {
            answers.push(answer);
        }
    }
    let result = if durable { persist(inner) } else { Ok(()) };
    for answer in answers {
        answer(result.clone());
    }
}

fn persist(inner: &Inner) -> Result<(), StateError> {
    inner.store.db.persist(PersistMode::SyncAll).map_err(|e| {
        tracing::error!(error = %e, "embedded state: fsync failed");
        StateError::Unavailable(format!("embedded state: fsync: {e}"))
    })
}

/// One sweep round; returns when the next one is due. A panic in it (a bug) is logged and
/// the writer goes on: it must not take every later write down with it.
fn sweep_round(inner: &Inner) -> Instant {
    let swept = std::panic::catch_unwind(AssertUnwindSafe(|| {
        sweep::sweep(&inner.store, SystemTime::now(), SWEEP_BATCH)
    }))
    .unwrap_or_else(|_| {
        Err(StateError::Corrupt(
            "embedded state: the sweep panicked".into(),
        ))
    });
    match swept {
        // More is due: soon, but after the jobs that arrived meanwhile.
        Ok(n) if n >= SWEEP_BATCH => Instant::now() + Duration::from_millis(10),
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
