//! Waiting in tests without sleeping: components bump a [`Signal`] whenever they
//! record something, and the test thread waits on it until its condition holds.

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// A change counter that components bump after recording an observation.
#[derive(Default)]
pub struct Signal {
    changes: Mutex<u64>,
    cv: Condvar,
}

impl Signal {
    /// Something changed. Call it after releasing the lock of what changed.
    pub fn notify(&self) {
        *self.changes.lock().unwrap() += 1;
        self.cv.notify_all();
    }

    /// Blocks until `cond` holds, re-checking it after every change; panics naming
    /// `what` after `limit` (a hang guard, not a performance assertion).
    ///
    /// `cond` runs while this signal's lock is held, so a change made between a
    /// check and the wait cannot be missed: `notify` has to take the lock first.
    pub fn wait_until(&self, what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + limit;
        let mut changes = self.changes.lock().unwrap();
        while !cond() {
            let now = Instant::now();
            assert!(
                now < deadline,
                "timed out after {limit:?} waiting until {what}"
            );
            changes = self.cv.wait_timeout(changes, deadline - now).unwrap().0;
        }
    }
}
