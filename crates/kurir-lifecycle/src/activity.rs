//! The [`Activity`] guard: one unit of in-flight work the drain waits for.

use std::time::Duration;

use crate::lifecycle::Lifecycle;

/// RAII guard for one unit of in-flight work, from [`Lifecycle::activity`]. Dropping it
/// tells the drain the work is done; move it into the task that does the work.
#[derive(Debug)]
#[must_use = "the activity ends as soon as the guard is dropped"]
pub struct Activity {
    lifecycle: Lifecycle,
    id: u64,
    name: &'static str,
}

impl Activity {
    pub(crate) fn new(lifecycle: Lifecycle, id: u64, name: &'static str) -> Self {
        Self {
            lifecycle,
            id,
            name,
        }
    }

    /// The kind of work, as given to [`Lifecycle::activity`].
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Whether shutdown has begun: long-running work (a session between messages) checks
    /// this to finish early instead of holding up the drain.
    pub fn is_shutting_down(&self) -> bool {
        self.lifecycle.is_shutting_down()
    }
}

impl Drop for Activity {
    fn drop(&mut self) {
        self.lifecycle.finish(self.id);
    }
}

/// One activity in flight, as seen by [`Lifecycle::snapshot`] and [`crate::DrainReport`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActivitySnapshot {
    /// Unique per process, in registration order.
    pub id: u64,
    /// The kind of work.
    pub name: &'static str,
    /// How long it has been in flight.
    pub age: Duration,
}
