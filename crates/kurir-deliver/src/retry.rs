//! Retry tiers: when a deferred message is tried again.
//!
//! After attempt `n` (counting from 1) a message waits `tiers[n - 1]` (the last tier
//! repeats) in the retry topic of that delay. A message whose next attempt would fall at
//! or after its maximum age expires now instead: it bounces with a DSN rather than wait
//! for an attempt it will never get.

use std::time::{Duration, SystemTime};

/// Where a deferred message goes next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    /// Into the tier of this delay, not before this time.
    Retry { delay: Duration, at: SystemTime },
    /// Past its maximum age: bounce it as expired.
    Expire,
}

/// The next step after `attempts` attempts (≥ 1) of a message first seen at `first_seen`.
pub fn next_step(
    tiers: &[Duration],
    attempts: u32,
    first_seen: SystemTime,
    max_age: Duration,
    now: SystemTime,
) -> NextStep {
    let Some(last) = tiers.last() else {
        return NextStep::Expire;
    };
    let index = (attempts.max(1) - 1) as usize;
    let delay = tiers.get(index).copied().unwrap_or(*last);
    let at = now + delay;
    if at >= first_seen + max_age {
        NextStep::Expire
    } else {
        NextStep::Retry { delay, at }
    }
}

/// Whether a message is past its maximum age.
pub fn is_expired(first_seen: SystemTime, max_age: Duration, now: SystemTime) -> bool {
    now >= first_seen + max_age
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_in_order_then_the_last_repeats_then_expiry() {
        let tiers = [Duration::from_secs(60), Duration::from_secs(300)];
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let day = Duration::from_secs(86_400);
        let step = |n, now| next_step(&tiers, n, t0, day, now);
        assert_eq!(
            step(1, t0),
            NextStep::Retry {
                delay: tiers[0],
                at: t0 + tiers[0]
            }
        );
        assert!(matches!(step(2, t0), NextStep::Retry { delay, .. } if delay == tiers[1]));
        assert!(matches!(step(9, t0), NextStep::Retry { delay, .. } if delay == tiers[1]));
        assert_eq!(
            step(9, t0 + day - Duration::from_secs(100)),
            NextStep::Expire
        );
        assert!(is_expired(t0, day, t0 + day));
        assert!(!is_expired(t0, day, t0 + day - Duration::from_secs(1)));
    }
}
