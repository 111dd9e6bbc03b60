//! One FIFO run queue, on the driver's thread, shared by every system.
//!
//! Every component of every system of a simulation is scheduled here, and so are the
//! futures Kompact spawns (system start-up and shutdown). Jobs run one at a time, in
//! the order they were queued, when the driver calls [`FifoScheduler::run_until_idle`]:
//! a `tell` to a component of another system lands in the same queue, so the whole
//! simulation is one deterministic sequence of handler executions.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};

use kompact::component::SchedulingDecision;
use kompact::prelude::CoreContainer;
use kompact::runtime::{Scheduler, SchedulerShutdownError};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

enum Job {
    Component(Arc<dyn CoreContainer>),
    Task(Arc<Task>),
}

/// A spawned future; it re-queues itself when woken.
struct Task {
    future: Mutex<Option<BoxFuture<()>>>,
    queue: FifoScheduler,
}

impl Wake for Task {
    fn wake(self: Arc<Self>) {
        let q = self.queue.clone();
        q.push(Job::Task(self));
    }
}

impl Task {
    fn poll(self: &Arc<Self>) {
        let mut slot = self.future.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(fut) = slot.as_mut() {
            let waker = Waker::from(self.clone());
            let mut cx = Context::from_waker(&waker);
            if fut.as_mut().poll(&mut cx).is_ready() {
                *slot = None;
            }
        }
    }
}

/// The simulation's scheduler: a FIFO queue drained by the driver thread.
#[derive(Clone, Default)]
pub struct FifoScheduler {
    queue: Arc<Mutex<VecDeque<Job>>>,
}

/// A run exceeded its job budget at one instant (a livelock: handlers keep sending
/// each other messages without virtual time passing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Livelock {
    /// Jobs run before giving up.
    pub jobs: u64,
}

impl FifoScheduler {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<Job>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, job: Job) {
        self.lock().push_back(job);
    }

    /// Whether nothing is queued.
    pub fn is_idle(&self) -> bool {
        self.lock().is_empty()
    }

    /// Runs queued jobs (and whatever they queue) until the queue is empty, or fails
    /// after `budget` jobs. Returns the number of jobs run.
    pub fn run_until_idle(&self, budget: u64) -> Result<u64, Livelock> {
        let mut jobs = 0;
        loop {
            let job = self.lock().pop_front();
            let Some(job) = job else { return Ok(jobs) };
            jobs += 1;
            match job {
                Job::Component(c) => loop {
                    match c.execute() {
                        SchedulingDecision::Schedule => {
                            self.push(Job::Component(c));
                            break;
                        }
                        SchedulingDecision::Resume => continue,
                        _ => break,
                    }
                },
                Job::Task(t) => t.poll(),
            }
            if jobs >= budget {
                return Err(Livelock { jobs });
            }
        }
    }
}

impl Scheduler for FifoScheduler {
    fn schedule(&self, c: Arc<dyn CoreContainer>) {
        self.push(Job::Component(c));
    }

    fn shutdown_async(&self) {}

    fn shutdown(&self) -> Result<(), SchedulerShutdownError> {
        Ok(())
    }

    fn shutdown_notify(&self) -> BoxFuture<Result<(), SchedulerShutdownError>> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn box_clone(&self) -> Box<dyn Scheduler> {
        Box::new(self.clone())
    }

    fn poison(&self) {}

    fn spawn(&self, future: BoxFuture<()>) {
        let task = Arc::new(Task {
            future: Mutex::new(Some(future)),
            queue: self.clone(),
        });
        self.push(Job::Task(task));
    }
}

/// Polls `fut` once with a waker that does nothing (the driver polls again after
/// pumping the queue).
pub fn poll_once<F: Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
    let waker = Waker::noop();
    let mut cx = Context::from_waker(waker);
    Pin::new(fut).poll(&mut cx)
}
