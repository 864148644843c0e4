//! [`Lifecycle::drain`]: wait, within a grace period, for in-flight activities to finish.

use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior, interval_at, sleep_until};

use crate::activity::ActivitySnapshot;
use crate::lifecycle::Lifecycle;

/// How often a drain that is still waiting says what it waits for. Often enough that an
/// operator watching a stuck pod sees progress, rarely enough not to flood the log.
pub const DRAIN_LOG_INTERVAL: Duration = Duration::from_secs(5);

/// What [`Lifecycle::drain`] achieved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DrainReport {
    /// How long the drain waited.
    pub elapsed: Duration,
    /// The activities still in flight when the grace period ended; empty when the drain
    /// completed.
    pub remaining: Vec<ActivitySnapshot>,
}

impl DrainReport {
    /// `true` when every activity finished within the grace period.
    pub fn is_complete(&self) -> bool {
        self.remaining.is_empty()
    }
}

impl Lifecycle {
    /// Begins shutdown (if not begun yet), then waits until every [`crate::Activity`] has
    /// been dropped or `grace` has passed, logging every [`DRAIN_LOG_INTERVAL`] and at the
    /// timeout which activities it still waits for. Activities left at the timeout are
    /// not cancelled: the caller decides (normally by exiting).
    pub async fn drain(&self, grace: Duration) -> DrainReport {
        self.shutdown();
        let start = Instant::now();
        let deadline = start + grace;
        let mut in_flight = self.in_flight_watch();
        let mut progress = interval_at(start + DRAIN_LOG_INTERVAL, DRAIN_LOG_INTERVAL);
        progress.set_missed_tick_behavior(MissedTickBehavior::Delay);
        tracing::info!(in_flight = self.in_flight(), grace = ?grace, "drain started");
        loop {
            tokio::select! {
                // The sender lives as long as `self`, so this cannot fail.
                _ = in_flight.wait_for(|n| *n == 0) => {
                    let elapsed = start.elapsed();
                    tracing::info!(elapsed = ?elapsed, "drain complete");
                    return DrainReport { elapsed, remaining: Vec::new() };
                }
                _ = progress.tick() => {
                    tracing::info!(
                        waiting_for = %self.describe_in_flight(),
                        elapsed = ?start.elapsed(),
                        "drain waiting for activities",
                    );
                }
                () = sleep_until(deadline) => return self.drain_timed_out(start),
            }
        }
    }

    fn drain_timed_out(&self, start: Instant) -> DrainReport {
        let remaining = self.snapshot();
        let elapsed = start.elapsed();
        if remaining.is_empty() {
            // The last guard went away in the same instant the deadline fired.
            return DrainReport { elapsed, remaining };
        }
        tracing::warn!(
            waiting_for = %self.describe_in_flight(),
            oldest = ?remaining.first().map(|a| a.age),
            elapsed = ?elapsed,
            "drain grace period expired with activities in flight",
        );
        DrainReport { elapsed, remaining }
    }

    /// "delivery=2, smtp_session=1": the counts per name, for a log field.
    fn describe_in_flight(&self) -> String {
        self.in_flight_by_name()
            .iter()
            .map(|(name, n)| format!("{name}={n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}
