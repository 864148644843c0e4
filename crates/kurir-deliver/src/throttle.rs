//! Throttles: how many connections may be open and how many messages per second may go
//! to a site or a domain, and how a site backs off when its receiver says "slow down".
//!
//! A [`Throttle`] is a connection-slot counter with a limit that can move (a semaphore's
//! permits cannot shrink while they are held, so the count is kept here), plus an optional
//! GCRA rate limiter (`governor`). Site throttles are adaptive: [`Throttle::slow_down`]
//! halves the connection limit and the rate for `backoff`, then [`Throttle::on_success`]
//! gives back an eighth of the configured limit per quarter `backoff` until it is whole.
//! Domain throttles keep their configured limits.

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::Notify;

/// A throttle's state, for logs, metrics and the admin API.
#[derive(Debug, Clone, PartialEq)]
pub struct ThrottleSnapshot {
    /// Connections (or transactions, for a domain) open now.
    pub open: u32,
    /// The limit in force now.
    pub limit: u32,
    /// The configured limit.
    pub configured_limit: u32,
    /// Messages per second in force now; 0 = unlimited.
    pub rate: f64,
    /// Why the limits are lowered, while they are.
    pub reason: Option<String>,
}

#[derive(Debug)]
struct Inner {
    configured_limit: u32,
    configured_rate: f64,
    backoff: Duration,
    state: Mutex<State>,
    /// Woken when a slot is freed or the limit grows (and by the pool when a connection
    /// goes back idle).
    notify: Notify,
}

#[derive(Debug)]
struct State {
    open: u32,
    limit: u32,
    rate: f64,
    limiter: Option<Arc<DefaultDirectRateLimiter>>,
    reason: Option<String>,
    /// No recovery step before this.
    next_recovery: Instant,
}

/// Connection slots and a message rate for one site or domain. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Throttle {
    inner: Arc<Inner>,
}

/// One open connection's (or transaction's) place under a throttle; freed on drop.
#[derive(Debug)]
pub struct Slot {
    inner: Arc<Inner>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut state = self.inner.state.lock().expect("throttle lock");
        state.open = state.open.saturating_sub(1);
        drop(state);
        // One freed slot serves one waiter: waking them all would make every waiting task
        // re-poll for nothing. (A woken task that is dropped passes the wake-up on.)
        self.inner.notify.notify_one();
    }
}

fn limiter(rate: f64) -> Option<Arc<DefaultDirectRateLimiter>> {
    if rate <= 0.0 {
        return None;
    }
    let period = Duration::from_secs_f64(1.0 / rate);
    let quota = Quota::with_period(period)?.allow_burst(NonZeroU32::MIN);
    Some(Arc::new(RateLimiter::direct(quota)))
}

impl Throttle {
    /// `rate` in messages per second, 0 = unlimited; `backoff` is how long a slow-down
    /// lasts before recovery starts.
    pub fn new(limit: u32, rate: f64, backoff: Duration) -> Self {
        let limit = limit.max(1);
        Self {
            inner: Arc::new(Inner {
                configured_limit: limit,
                configured_rate: rate,
                backoff,
                state: Mutex::new(State {
                    open: 0,
                    limit,
                    rate,
                    limiter: limiter(rate),
                    reason: None,
                    next_recovery: Instant::now(),
                }),
                notify: Notify::new(),
            }),
        }
    }

    /// A slot if one is free now.
    pub fn try_acquire(&self) -> Option<Slot> {
        let mut state = self.inner.state.lock().expect("throttle lock");
        if state.open < state.limit {
            state.open += 1;
            Some(Slot {
                inner: self.inner.clone(),
            })
        } else {
            None
        }
    }

    /// Waits for a free slot.
    pub async fn acquire(&self) -> Slot {
        loop {
            let notified = self.inner.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(slot) = self.try_acquire() {
                return slot;
            }
            notified.await;
        }
    }

    /// Whether more slots are open than the limit allows now (after a slow-down): the pool
    /// closes connections instead of keeping them idle.
    pub fn over_limit(&self) -> bool {
        let state = self.inner.state.lock().expect("throttle lock");
        state.open > state.limit
    }

    /// Wakes one task waiting on this throttle (a connection went back idle: any waiter
    /// can use it, reusing it or closing it for a slot of its own kind).
    pub fn wake(&self) {
        self.inner.notify.notify_one();
    }

    /// A future that completes at the next wake-up; enable it before checking conditions.
    pub fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.inner.notify.notified()
    }

    /// Waits until the rate allows one more message.
    pub async fn until_ready(&self) {
        let limiter = self
            .inner
            .state
            .lock()
            .expect("throttle lock")
            .limiter
            .clone();
        if let Some(limiter) = limiter {
            limiter.until_ready().await;
        }
    }

    /// The receiver asked us to slow down (421, 4.7.x rate limit, refused connection):
    /// halve the connection limit and the rate for `backoff`. Returns whether the limits
    /// went down (a burst of such replies within one back-off period lowers them once).
    pub fn slow_down(&self, reason: &str) -> bool {
        let now = Instant::now();
        let mut state = self.inner.state.lock().expect("throttle lock");
        if state.reason.is_some() && now < state.next_recovery {
            return false;
        }
        state.limit = (state.limit / 2).max(1);
        if self.inner.configured_rate > 0.0 {
            state.rate = (state.rate / 2.0).max(self.inner.configured_rate / 16.0);
            state.limiter = limiter(state.rate);
        }
        state.reason = Some(reason.to_owned());
        state.next_recovery = now + self.inner.backoff;
        true
    }

    /// A message went through: after the back-off period, step the limits back up.
    pub fn on_success(&self) {
        let now = Instant::now();
        let mut state = self.inner.state.lock().expect("throttle lock");
        if state.reason.is_none() || now < state.next_recovery {
            return;
        }
        let step = (self.inner.configured_limit / 8).max(1);
        state.limit = (state.limit + step).min(self.inner.configured_limit);
        if self.inner.configured_rate > 0.0 {
            state.rate = (state.rate * 1.25).min(self.inner.configured_rate);
            state.limiter = limiter(state.rate);
        }
        state.next_recovery = now + self.inner.backoff / 4;
        let whole = state.limit == self.inner.configured_limit
            && (self.inner.configured_rate <= 0.0 || state.rate >= self.inner.configured_rate);
        if whole {
            state.reason = None;
        }
        drop(state);
        self.inner.notify.notify_waiters();
    }

    pub fn snapshot(&self) -> ThrottleSnapshot {
        let state = self.inner.state.lock().expect("throttle lock");
        ThrottleSnapshot {
            open: state.open,
            limit: state.limit,
            configured_limit: self.inner.configured_limit,
            rate: if self.inner.configured_rate > 0.0 {
                state.rate
            } else {
                0.0
            },
            reason: state.reason.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_the_limit() {
        let t = Throttle::new(2, 0.0, Duration::from_secs(60));
        let a = t.try_acquire().unwrap();
        let _b = t.try_acquire().unwrap();
        assert!(t.try_acquire().is_none());
        drop(a);
        assert!(t.try_acquire().is_some());
    }

    #[test]
    fn slow_down_halves_and_recovers_in_steps() {
        let t = Throttle::new(16, 100.0, Duration::ZERO);
        assert!(t.slow_down("421 too many connections"));
        let s = t.snapshot();
        assert_eq!((s.limit, s.rate), (8, 50.0));
        assert_eq!(s.reason.as_deref(), Some("421 too many connections"));
        // Back-off of zero: every success is a recovery step of 16 / 8 = 2.
        t.on_success();
        assert_eq!(t.snapshot().limit, 10);
        for _ in 0..10 {
            t.on_success();
        }
        let s = t.snapshot();
        assert_eq!((s.limit, s.rate), (16, 100.0));
        assert_eq!(s.reason, None);
    }

    #[test]
    fn a_burst_of_slow_downs_lowers_once_per_period() {
        let t = Throttle::new(16, 0.0, Duration::from_secs(60));
        assert!(t.slow_down("a"));
        assert!(!t.slow_down("b"));
        assert_eq!(t.snapshot().limit, 8);
        let held: Vec<_> = (0..8).map(|_| t.try_acquire().unwrap()).collect();
        assert!(t.try_acquire().is_none());
        assert!(!t.over_limit());
        drop(held);
    }

    #[tokio::test]
    async fn acquire_waits_for_a_free_slot() {
        let t = Throttle::new(1, 0.0, Duration::from_secs(60));
        let first = t.try_acquire().unwrap();
        let t2 = t.clone();
        let waiter = tokio::spawn(async move { t2.acquire().await });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(first);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .unwrap();
    }
}
