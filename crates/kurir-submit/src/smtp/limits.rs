//! Connection admission and failed-AUTH memory: what keeps one client (or a flood) from
//! taking the whole server.
//!
//! Connections are capped in total by a semaphore whose permit moves into the session, and
//! per client IP by a map of counters whose guard decrements on drop; both are released
//! when the session ends however it ends. Failed AUTH attempts are counted per IP in a
//! fixed window, so password guessing from one address stops after a few tries even
//! across connections.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The per-IP failure map is pruned of expired windows when it grows past this.
const PRUNE_AT: usize = 10_000;

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    Total,
    PerIp,
}

/// Admits connections up to the configured limits.
#[derive(Debug)]
pub(crate) struct ConnectionLimits {
    total: Arc<Semaphore>,
    per_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
    max_per_ip: usize,
}

/// Held by a session for its whole life: dropping it frees its slots.
#[derive(Debug)]
pub(crate) struct Admission {
    _permit: OwnedSemaphorePermit,
    per_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section is a single map update: a poisoned lock is still consistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ConnectionLimits {
    pub(crate) fn new(max_total: usize, max_per_ip: usize) -> Self {
        Self {
            total: Arc::new(Semaphore::new(max_total)),
            per_ip: Arc::new(Mutex::new(HashMap::new())),
            max_per_ip,
        }
    }

    /// A slot for a connection from `ip`, or why there is none.
    pub(crate) fn admit(&self, ip: IpAddr) -> Result<Admission, Refusal> {
        let permit = self
            .total
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::Total)?;
        let mut map = lock(&self.per_ip);
        let count = map.entry(ip).or_default();
        if *count >= self.max_per_ip {
            return Err(Refusal::PerIp);
        }
        *count += 1;
        Ok(Admission {
            _permit: permit,
            per_ip: self.per_ip.clone(),
            ip,
        })
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut map = lock(&self.per_ip);
        if let Some(count) = map.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Failed AUTH attempts per client IP, in fixed windows.
#[derive(Debug)]
pub(crate) struct AuthFailures {
    max: usize,
    window: Duration,
    map: Mutex<HashMap<IpAddr, (Instant, usize)>>,
}

impl AuthFailures {
    pub(crate) fn new(max: usize, window: Duration) -> Self {
        Self {
            max,
            window,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `ip` used up its attempts for the current window.
    pub(crate) fn is_blocked(&self, ip: IpAddr) -> bool {
        let map = lock(&self.map);
        map.get(&ip)
            .is_some_and(|(start, n)| start.elapsed() < self.window && *n >= self.max)
    }

    /// Counts a failure; returns whether `ip` is now blocked.
    pub(crate) fn record(&self, ip: IpAddr) -> bool {
        let mut map = lock(&self.map);
        if map.len() >= PRUNE_AT {
            map.retain(|_, (start, _)| start.elapsed() < self.window);
        }
        let entry = map.entry(ip).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= self.window {
            *entry = (Instant::now(), 0);
        }
        entry.1 += 1;
        entry.1 >= self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_ip_and_total_limits_release_on_drop() {
        let limits = ConnectionLimits::new(3, 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let a1 = limits.admit(a).unwrap();
        let _a2 = limits.admit(a).unwrap();
        assert_eq!(limits.admit(a).unwrap_err(), Refusal::PerIp);
        let _b1 = limits.admit(b).unwrap();
        assert_eq!(limits.admit(b).unwrap_err(), Refusal::Total);
        drop(a1);
        assert!(limits.admit(a).is_ok());
    }

    #[test]
    fn auth_failures_block_after_max() {
        let failures = AuthFailures::new(2, Duration::from_secs(60));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(!failures.record(ip));
        assert!(!failures.is_blocked(ip));
        assert!(failures.record(ip));
        assert!(failures.is_blocked(ip));
    }
}
