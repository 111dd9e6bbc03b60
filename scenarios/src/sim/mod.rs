//! The simulator runtime: many Kompact systems in one process, on one thread, on one
//! virtual clock.
//!
//! - [`clock::SharedClock`] gives every system the same `ManualTimer`, so every
//!   Kompact timer of every system is virtual;
//! - [`scheduler::FifoScheduler`] is every system's scheduler: one FIFO run queue that
//!   only the driver drains;
//! - [`net`] replaces the network: a [`net::SimNetwork`] per system and one
//!   [`net::SimNet`] hub.
//!
//! The driver alternates between running queued handlers until none is left
//! ([`Sim::run_until_idle`]) and moving the clock to the next timer
//! ([`Sim::advance_to_next`]). Only the driver moves time; handlers only schedule
//! timers. Same inputs, same seed: same sequence of handler executions.

pub mod clock;
pub mod net;
pub mod scheduler;

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::task::Poll;
use std::time::Duration;

use kompact::KompactLogger;
use kompact::prelude::*;
use kompact::timer::ManualTimer;

pub use clock::SharedClock;
pub use net::{DelayModel, EndpointMsg, Envelope, NetStats, SimNet, SimNetwork};
pub use scheduler::{FifoScheduler, Livelock};

/// Most handler executions at one instant before a run is declared livelocked.
pub const JOBS_PER_INSTANT: u64 = 20_000_000;

/// Most pump rounds spent waiting for a Kompact future (system start-up, shutdown).
const BLOCK_ROUNDS: usize = 10_000;

fn discard_logger() -> KompactLogger {
    static LOGGER: OnceLock<KompactLogger> = OnceLock::new();
    LOGGER
        .get_or_init(|| {
            let drain = slog_async::Async::new(slog::Discard.fuse()).build().fuse();
            slog::Logger::root_typed(Arc::new(drain), slog::o!())
        })
        .clone()
}

fn stderr_logger(level: slog::Level) -> KompactLogger {
    let decorator = slog_term::PlainSyncDecorator::new(std::io::stderr());
    let drain = slog_term::FullFormat::new(decorator).build().fuse();
    let drain = slog::LevelFilter::new(drain, level).fuse();
    let drain = slog_async::Async::new(drain).build().fuse();
    slog::Logger::root_typed(Arc::new(drain), slog::o!())
}

/// Fires at chosen virtual times so the driver can stop exactly there.
#[derive(ComponentDefinition, Actor)]
struct Alarm {
    ctx: ComponentContext<Self>,
}

ignore_lifecycle!(Alarm);

impl Alarm {
    fn ring_in(&mut self, d: Duration) {
        self.schedule_once(d, |_, _| Handled::OK);
    }
}

/// One simulation's runtime: clock, run queue, and the systems built on them.
pub struct Sim {
    clock: ManualTimer,
    scheduler: FifoScheduler,
    logger: KompactLogger,
    /// Live systems by label.
    systems: Vec<(String, KompactSystem)>,
    alarm: Option<Arc<Component<Alarm>>>,
    jobs: u64,
}

impl Sim {
    /// A runtime at virtual time 0 with no systems. Kompact's own logs are discarded
    /// unless `log` names a level, then they go to stderr.
    pub fn new(log: Option<slog::Level>) -> Self {
        let logger = match log {
            Some(level) => stderr_logger(level),
            None => discard_logger(),
        };
        let mut sim = Sim {
            clock: ManualTimer::new(),
            scheduler: FifoScheduler::new(),
            logger,
            systems: Vec::new(),
            alarm: None,
            jobs: 0,
        };
        if let Ok(sys) = sim.build_system("sim-control") {
            let alarm = sys.create(|| Alarm {
                ctx: ComponentContext::uninitialised(),
            });
            sys.start(&alarm);
            sim.alarm = Some(alarm);
            let _ = sim.run_until_idle();
        }
        sim
    }

    /// The shared virtual clock.
    pub fn clock(&self) -> ManualTimer {
        self.clock.clone()
    }

    /// Virtual time since the start.
    pub fn now(&self) -> Duration {
        self.clock.elapsed()
    }

    /// Handler executions so far.
    pub fn jobs(&self) -> u64 {
        self.jobs
    }

    /// Builds a Kompact system on the shared clock and run queue (one thread: the
    /// driver's).
    pub fn build_system(&mut self, label: &str) -> anyhow::Result<KompactSystem> {
        let mut cfg = KompactConfig::default();
        cfg.set_config_value(&kompact::config_keys::system::LABEL, label.to_string());
        cfg.set_config_value(&kompact::config_keys::system::THREADS, 1usize);
        let sched = self.scheduler.clone();
        cfg.scheduler(move |_| Box::new(sched.clone()));
        let clock = self.clock.clone();
        cfg.timer::<SharedClock, _>(move || Box::new(SharedClock(clock.clone())));
        cfg.logger(self.logger.clone());
        let fut = cfg.build();
        let system = self
            .block_on(fut)
            .ok_or_else(|| anyhow::anyhow!("system {label} did not start"))?
            .map_err(|e| anyhow::anyhow!("system {label} failed to start: {e}"))?;
        self.systems.push((label.to_string(), system.clone()));
        Ok(system)
    }

    /// Runs queued handlers until none is left.
    pub fn run_until_idle(&mut self) -> Result<(), Livelock> {
        let n = self.scheduler.run_until_idle(JOBS_PER_INSTANT)?;
        self.jobs += n;
        Ok(())
    }

    /// Moves the clock to the next instant at which a timer fires; `false` when no
    /// timer is scheduled at all.
    pub fn advance_to_next(&self) -> bool {
        self.clock.advance_to_next()
    }

    /// Makes sure the clock stops at `at` (if it is in the future).
    pub fn wake_at(&self, at: Duration) {
        let now = self.now();
        if at > now
            && let Some(alarm) = &self.alarm
        {
            alarm.on_definition(|a| a.ring_in(at - now));
        }
    }

    /// Pumps the run queue until `fut` completes (polling it with a no-op waker), or
    /// gives up after a bounded number of rounds. Never moves the clock.
    pub fn block_on<F: Future + Unpin>(&mut self, mut fut: F) -> Option<F::Output> {
        for _ in 0..BLOCK_ROUNDS {
            if let Poll::Ready(v) = scheduler::poll_once(&mut fut) {
                return Some(v);
            }
            if self.scheduler.is_idle() {
                // Nothing left to run: one last poll, then give up.
                return match scheduler::poll_once(&mut fut) {
                    Poll::Ready(v) => Some(v),
                    Poll::Pending => None,
                };
            }
            if self.run_until_idle().is_err() {
                return None;
            }
        }
        None
    }

    /// Crash-stops the system built with `label`: its components stop, and nothing
    /// of it runs again.
    pub fn stop_system(&mut self, label: &str) {
        let Some(pos) = self.systems.iter().position(|(l, _)| l == label) else {
            return;
        };
        let (_, system) = self.systems.remove(pos);
        let fut = system.shutdown();
        let _ = self.block_on(fut);
    }

    /// Shuts every system down (best effort; a system that does not stop is leaked).
    pub fn shutdown(&mut self) {
        let systems: Vec<(String, KompactSystem)> = self.systems.drain(..).collect();
        self.alarm = None;
        for (_, s) in systems.into_iter().rev() {
            let fut = s.shutdown();
            let _ = self.block_on(fut);
        }
        self.clock.stop();
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        if !self.systems.is_empty() {
            self.shutdown();
        }
    }
}
