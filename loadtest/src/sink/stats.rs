//! What the sink counts, and its report.
//!
//! A message is counted when the sink answered 250 to its data. Its `X-Kurir-Loadtest`
//! header gives the message id (run and number) and the time it was sent. One message to
//! recipients in several domains arrives as several transactions with the same id, so a
//! **duplicate** is the same (id, recipient) accepted a second time, and **distinct ids**
//! counts (run, number) pairs. Ids and deliveries are kept as 64-bit hashes (SipHash with
//! fixed keys): a collision among a million entries has a chance of about 3·10⁻⁸.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::latency::{Latency, Percentiles, fmt_ms};
use crate::message::{Stamp, unix_nanos};
use crate::send::report_counts;

/// The sink's counters.
#[derive(Debug)]
pub(crate) struct Stats {
    started: Instant,
    connections: AtomicU64,
    open: AtomicU64,
    max_open: AtomicU64,
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    messages: u64,
    recipients: u64,
    bytes: u64,
    unlabelled: u64,
    duplicates: u64,
    ids: HashSet<u64>,
    deliveries: HashSet<u64>,
    /// Distinct recipients refused with a 5xx.
    rejected_rcpts: HashSet<u64>,
    rejected: BTreeMap<String, u64>,
    deferred: BTreeMap<String, u64>,
    disconnects: u64,
    latency: Latency,
}

fn hash(parts: impl Hash) -> u64 {
    let mut hasher = DefaultHasher::new();
    parts.hash(&mut hasher);
    hasher.finish()
}

impl Stats {
    pub(crate) fn new() -> Self {
        Self {
            started: Instant::now(),
            connections: AtomicU64::new(0),
            open: AtomicU64::new(0),
            max_open: AtomicU64::new(0),
            counts: Mutex::default(),
        }
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A connection opened; [`Stats::closed`] when it ends.
    pub(crate) fn opened(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
        let open = self.open.fetch_add(1, Ordering::Relaxed) + 1;
        self.max_open.fetch_max(open, Ordering::Relaxed);
    }

    pub(crate) fn closed(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }

    /// A recipient refused at RCPT with `key` (`550 5.1.1`).
    pub(crate) fn refused(&self, rcpt: &str, code: u16, key: String) {
        let mut counts = self.counts();
        if code >= 500 {
            *counts.rejected.entry(key).or_default() += 1;
            counts
                .rejected_rcpts
                .insert(hash(rcpt.to_ascii_lowercase()));
        } else {
            *counts.deferred.entry(key).or_default() += 1;
        }
    }

    /// A transaction ended by the injected disconnect.
    pub(crate) fn disconnected(&self) {
        self.counts().disconnects += 1;
    }

    /// An accepted message of `bytes` octets to `rcpts`, with its header's stamp if any.
    pub(crate) fn accepted(&self, stamp: Option<&Stamp>, rcpts: &[String], bytes: usize) {
        let now = unix_nanos(SystemTime::now());
        let mut counts = self.counts();
        counts.messages += 1;
        counts.recipients += rcpts.len() as u64;
        counts.bytes += bytes as u64;
        let Some(stamp) = stamp else {
            counts.unlabelled += 1;
            return;
        };
        counts.ids.insert(hash((&stamp.run_id, stamp.seq)));
        for rcpt in rcpts {
            let fresh = counts.deliveries.insert(hash((
                &stamp.run_id,
                stamp.seq,
                rcpt.to_ascii_lowercase(),
            )));
            if !fresh {
                counts.duplicates += 1;
            }
        }
        let nanos = now.saturating_sub(stamp.sent_unix_nanos);
        let latency = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
        counts.latency.record(latency);
    }

    /// The counts so far.
    pub(crate) fn report(&self, address: String) -> SinkReport {
        let elapsed = self.started.elapsed().as_secs_f64();
        let counts = self.counts();
        SinkReport {
            address,
            elapsed_s: elapsed,
            connections: self.connections.load(Ordering::Relaxed),
            max_open_connections: self.max_open.load(Ordering::Relaxed),
            messages: counts.messages,
            recipients: counts.recipients,
            bytes: counts.bytes,
            distinct_ids: counts.ids.len() as u64,
            distinct_deliveries: counts.deliveries.len() as u64,
            duplicates: counts.duplicates,
            unlabelled: counts.unlabelled,
            rejected: counts.rejected.clone(),
            rejected_recipients: counts.rejected_rcpts.len() as u64,
            deferred: counts.deferred.clone(),
            disconnects: counts.disconnects,
            throughput_per_s: counts.messages as f64 / elapsed.max(1e-9),
            delivery_latency: counts.latency.percentiles(),
        }
    }
}

/// What the sink saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SinkReport {
    /// Where it listened.
    pub address: String,
    pub elapsed_s: f64,
    /// Connections accepted.
    pub connections: u64,
    /// The most open at once.
    pub max_open_connections: u64,
    /// Messages accepted (250 after the data).
    pub messages: u64,
    /// Recipients of accepted messages.
    pub recipients: u64,
    /// Octets of accepted messages.
    pub bytes: u64,
    /// Distinct load-test message ids (run, number) among accepted messages.
    pub distinct_ids: u64,
    /// Distinct (id, recipient) pairs accepted.
    pub distinct_deliveries: u64,
    /// (id, recipient) pairs accepted again.
    pub duplicates: u64,
    /// Accepted messages without an `X-Kurir-Loadtest` header (e.g. DSNs).
    pub unlabelled: u64,
    /// Recipients refused with a 5xx, by reply.
    pub rejected: BTreeMap<String, u64>,
    /// Distinct recipients refused with a 5xx.
    pub rejected_recipients: u64,
    /// Recipients refused with a 4xx, by reply.
    pub deferred: BTreeMap<String, u64>,
    /// Transactions ended by an injected disconnect.
    pub disconnects: u64,
    /// Accepted messages per second since the start.
    pub throughput_per_s: f64,
    /// From the header's send time to acceptance here.
    pub delivery_latency: Percentiles,
}

impl SinkReport {
    /// One line for periodic stats.
    pub fn line(&self) -> String {
        format!(
            "{:>7.1}s conns {} msgs {} ids {} dups {} rejected {} deferred {} delivery p99 {}",
            self.elapsed_s,
            self.connections,
            self.messages,
            self.distinct_ids,
            self.duplicates,
            self.rejected.values().sum::<u64>(),
            self.deferred.values().sum::<u64>(),
            fmt_ms(self.delivery_latency.p99_ms),
        )
    }
}

impl fmt::Display for SinkReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "sink {} ({:.2} s)", self.address, self.elapsed_s)?;
        writeln!(
            f,
            "  connections  {} ({} at most at once)",
            self.connections, self.max_open_connections
        )?;
        writeln!(
            f,
            "  messages     {} accepted ({} recipients, {:.1} msg/s), {} unlabelled",
            self.messages, self.recipients, self.throughput_per_s, self.unlabelled
        )?;
        writeln!(
            f,
            "  ids          {} distinct, {} distinct deliveries, {} duplicates",
            self.distinct_ids, self.distinct_deliveries, self.duplicates
        )?;
        writeln!(f, "  delivery     {}", self.delivery_latency)?;
        report_counts(f, "rejected", &self.rejected)?;
        report_counts(f, "deferred", &self.deferred)?;
        if self.disconnects > 0 {
            writeln!(f, "  disconnects  {}", self.disconnects)?;
        }
        Ok(())
    }
}
