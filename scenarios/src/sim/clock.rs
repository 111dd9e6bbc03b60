//! One virtual clock shared by every Kompact system of a simulation.
//!
//! Kompact's [`ManualTimer`] is `Clone`, and all clones share one timer wheel and one
//! clock. [`SharedClock`] hands that wheel to a system as its timer service. Unlike
//! `kompact::default_components::install_manual_timer`, shutting one system down does
//! not stop the clock for the others: the shutdown hooks do nothing.
//!
//! On a system built this way, every Kompact timer is virtual, so the production
//! [`KompactTimer`](kv_components::timer::KompactTimer) (the `Timer` port over
//! Kompact's timers) *is* the simulated `Timer` provider: the simulator reuses it
//! unchanged.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use kompact::prelude::TimerRefFactory;
use kompact::runtime::{TimerComponent, TimerShutdownError};
use kompact::timer::{ManualTimer, TimerRef};

/// The timer service of every system of one simulation: a handle on the shared
/// virtual clock.
pub struct SharedClock(pub ManualTimer);

impl TimerRefFactory for SharedClock {
    fn timer_ref(&self) -> TimerRef {
        self.0.timer_ref()
    }
}

impl TimerComponent for SharedClock {
    fn shutdown(&self) -> Result<(), TimerShutdownError> {
        // The clock belongs to the simulation, not to the system being shut down.
        Ok(())
    }

    fn shutdown_notify<'a>(
        &'a self,
    ) -> Pin<Box<dyn Future<Output = Result<(), TimerShutdownError>> + Send + 'a>> {
        Box::pin(std::future::ready(Ok(())))
    }
}

/// Virtual time as whole milliseconds (the timer's resolution).
pub fn as_millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
