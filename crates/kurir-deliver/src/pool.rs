//! Connection pools: per destination site, open connections kept for reuse, keyed by the
//! egress pool and TLS policy they were opened with (a connection opened in plain text
//! under `opportunistic` must not carry mail that `require`s TLS).
//!
//! A site's [`Throttle`] counts its open connections, idle ones included, so the
//! connection limit holds at the receiver. Tasks that want a connection take an idle one,
//! open a new one under a free slot, close an idle one of another kind to free a slot, or
//! wait — the tasks waiting on a site are its ready queue (tokio's notifications are
//! FIFO-fair, so waiting messages are served in arrival order).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::client::Connection;
use crate::config::TlsPolicy;
use crate::route::SiteKey;
use crate::throttle::{Slot, Throttle, ThrottleSnapshot};

/// What a pooled connection was opened with; only a matching one is reused.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConnKind {
    /// The egress pool.
    pub pool: Arc<str>,
    pub tls: TlsPolicy,
}

#[derive(Debug)]
struct Idle {
    conn: Connection,
    slot: Slot,
    kind: ConnKind,
    since: Instant,
}

/// A connection in use (or a slot to open one under).
#[derive(Debug)]
pub enum Lease {
    Reused(Box<Connection>, Slot),
    Fresh(Slot),
}

/// Why a site is held back from attempts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Down {
    pub until: Instant,
    pub reason: String,
}

/// One destination site: its throttle, idle connections and down mark.
#[derive(Debug)]
pub struct Site {
    pub key: SiteKey,
    pub throttle: Throttle,
    idle: Mutex<Vec<Idle>>,
    down: Mutex<Option<Down>>,
}

impl Site {
    fn new(key: SiteKey, throttle: Throttle) -> Self {
        Self {
            key,
            throttle,
            idle: Mutex::new(Vec::new()),
            down: Mutex::new(None),
        }
    }

    /// A connection of `kind` to reuse (unless `fresh`), or a slot to open one under; waits
    /// while the site is at its connection limit. A connection closed to free a slot (of
    /// another kind, or any idle one when `fresh`) is returned too: the caller QUITs it
    /// before opening the new one under its slot.
    pub async fn lease(&self, kind: &ConnKind, fresh: bool) -> (Lease, Option<Connection>) {
        loop {
            let notified = self.throttle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut idle = self.idle.lock().expect("pool lock");
                if !fresh && let Some(i) = idle.iter().rposition(|c| &c.kind == kind) {
                    let c = idle.swap_remove(i);
                    return (Lease::Reused(Box::new(c.conn), c.slot), None);
                }
                if let Some(slot) = self.throttle.try_acquire() {
                    return (Lease::Fresh(slot), None);
                }
                if !idle.is_empty() {
                    // At the limit with an idle connection of another kind (or one not
                    // to be reused): close the oldest and take its slot.
                    let oldest = idle
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, c)| c.since)
                        .map(|(i, _)| i)
                        .expect("not empty");
                    let c = idle.swap_remove(oldest);
                    return (Lease::Fresh(c.slot), Some(c.conn));
                }
            }
            notified.await;
        }
    }

    /// Returns a connection after a transaction. It is kept when it is usable, has sent
    /// fewer than `max_messages` and the site is not over its (lowered) limit; otherwise
    /// it is handed back to be closed, with its slot, which is freed only once the
    /// connection is closed (so the receiver never sees more than the limit).
    pub fn give_back(
        &self,
        conn: Connection,
        slot: Slot,
        kind: ConnKind,
        max_messages: u32,
    ) -> Option<(Connection, Slot)> {
        if !conn.is_usable() || conn.transactions() >= max_messages || self.throttle.over_limit() {
            return Some((conn, slot));
        }
        self.idle.lock().expect("pool lock").push(Idle {
            conn,
            slot,
            kind,
            since: Instant::now(),
        });
        self.throttle.wake();
        None
    }

    /// Idle connections unused for `idle_timeout`, removed from the pool for closing (with
    /// their slots).
    fn expired(&self, idle_timeout: Duration) -> Vec<(Connection, Slot)> {
        let mut idle = self.idle.lock().expect("pool lock");
        let now = Instant::now();
        let mut out = Vec::new();
        let mut i = 0;
        while i < idle.len() {
            if now.duration_since(idle[i].since) >= idle_timeout {
                let c = idle.swap_remove(i);
                out.push((c.conn, c.slot));
            } else {
                i += 1;
            }
        }
        out
    }

    fn take_all_idle(&self) -> Vec<Connection> {
        let mut idle = self.idle.lock().expect("pool lock");
        idle.drain(..).map(|c| c.conn).collect()
    }

    pub fn idle_count(&self) -> usize {
        self.idle.lock().expect("pool lock").len()
    }

    /// Marks the site down (every host failed to connect) until `until`.
    pub fn mark_down(&self, until: Instant, reason: String) {
        *self.down.lock().expect("pool lock") = Some(Down { until, reason });
    }

    /// The down mark in force, if any.
    pub fn down(&self) -> Option<Down> {
        let mut down = self.down.lock().expect("pool lock");
        match &*down {
            Some(d) if d.until > Instant::now() => Some(d.clone()),
            Some(_) => {
                *down = None;
                None
            }
            None => None,
        }
    }

    pub fn clear_down(&self) {
        *self.down.lock().expect("pool lock") = None;
    }
}

/// A site's state for the admin API and metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct SiteSnapshot {
    pub site: String,
    pub throttle: ThrottleSnapshot,
    pub idle: usize,
    pub down: Option<String>,
}

/// Every site this node has talked to.
#[derive(Debug)]
pub struct Sites {
    sites: Mutex<HashMap<SiteKey, Arc<Site>>>,
    max_connections: u32,
    rate: f64,
    backoff: Duration,
}

impl Sites {
    pub fn new(max_connections: u32, rate: f64, backoff: Duration) -> Self {
        Self {
            sites: Mutex::new(HashMap::new()),
            max_connections,
            rate,
            backoff,
        }
    }

    pub fn get(&self, key: &SiteKey) -> Arc<Site> {
        let mut sites = self.sites.lock().expect("sites lock");
        sites
            .entry(key.clone())
            .or_insert_with(|| {
                Arc::new(Site::new(
                    key.clone(),
                    Throttle::new(self.max_connections, self.rate, self.backoff),
                ))
            })
            .clone()
    }

    fn all(&self) -> Vec<Arc<Site>> {
        let sites = self.sites.lock().expect("sites lock");
        sites.values().cloned().collect()
    }

    /// Removes idle connections past `idle_timeout` from every site, for closing.
    pub fn expired(&self, idle_timeout: Duration) -> Vec<(Connection, Slot)> {
        let sites = self.all();
        sites.iter().flat_map(|s| s.expired(idle_timeout)).collect()
    }

    /// Every idle connection, for closing at shutdown.
    pub fn take_all_idle(&self) -> Vec<Connection> {
        let sites = self.all();
        sites.iter().flat_map(|s| s.take_all_idle()).collect()
    }

    pub fn snapshot(&self) -> Vec<SiteSnapshot> {
        let sites = self.all();
        let mut out: Vec<_> = sites
            .iter()
            .map(|s| SiteSnapshot {
                site: s.key.to_string(),
                throttle: s.throttle.snapshot(),
                idle: s.idle_count(),
                down: s.down().map(|d| d.reason),
            })
            .collect();
        out.sort_by(|a, b| a.site.cmp(&b.site));
        out
    }
}
