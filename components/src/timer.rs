//! The real [`Timer`] provider: Kompact's own timers (wall-clock time).
//!
//! This component and the network provider are the only ones that touch Kompact's
//! timer or network facilities; every other component gets time through the
//! [`Timer`] port, so a simulation can swap in virtual time.

use std::collections::HashMap;

use kompact::prelude::Timer as _;
use kompact::prelude::*;
use kv_ports::{Timeout, Timer, TimerId, TimerRequest};

/// Provides the [`Timer`] port over Kompact's timer service.
#[derive(ComponentDefinition)]
pub struct KompactTimer {
    ctx: ComponentContext<Self>,
    timer_port: ProvidedPort<Timer>,
    /// Live timers. Lookups only (never iterated), so a `HashMap` is fine here.
    scheduled: HashMap<TimerId, ScheduledTimer>,
}

impl KompactTimer {
    /// A timer provider with no timers scheduled.
    pub fn new() -> Self {
        KompactTimer {
            ctx: ComponentContext::uninitialised(),
            timer_port: ProvidedPort::uninitialised(),
            scheduled: HashMap::new(),
        }
    }

    fn fire_once(&mut self, id: TimerId) -> HandlerResult {
        if self.scheduled.remove(&id).is_some() {
            self.timer_port.trigger(Timeout(id));
        }
        Handled::OK
    }

    fn fire_periodic(&mut self, id: TimerId) -> HandlerResult {
        if self.scheduled.contains_key(&id) {
            self.timer_port.trigger(Timeout(id));
        }
        Handled::OK
    }
}

impl Default for KompactTimer {
    fn default() -> Self {
        Self::new()
    }
}

impl ComponentLifecycle for KompactTimer {
    fn on_stop(&mut self) -> HandlerResult {
        let timers: Vec<ScheduledTimer> = self.scheduled.drain().map(|(_, t)| t).collect();
        for t in timers {
            self.cancel_timer(t);
        }
        Handled::OK
    }

    fn on_kill(&mut self) -> HandlerResult {
        self.on_stop()
    }
}

impl Provide<Timer> for KompactTimer {
    fn handle(&mut self, req: TimerRequest) -> HandlerResult {
        match req {
            TimerRequest::ScheduleOnce { id, delay } => {
                let handle = self.schedule_once(delay, move |c, _| c.fire_once(id));
                if let Some(old) = self.scheduled.insert(id, handle) {
                    self.cancel_timer(old);
                }
            }
            TimerRequest::SchedulePeriodic { id, delay, period } => {
                let handle = self.schedule_periodic(delay, period, move |c, _| c.fire_periodic(id));
                if let Some(old) = self.scheduled.insert(id, handle) {
                    self.cancel_timer(old);
                }
            }
            TimerRequest::Cancel(id) => {
                if let Some(t) = self.scheduled.remove(&id) {
                    self.cancel_timer(t);
                }
            }
        }
        Handled::OK
    }
}

impl Actor for KompactTimer {
    type Message = Never;

    fn receive_local(&mut self, msg: Self::Message) -> HandlerResult {
        match msg {}
    }

    fn receive_network(&mut self, _msg: NetMessage) -> HandlerResult {
        Handled::OK
    }
}

// ---------------------------------------------------------------------------------

/// The production [`Timer`] provider: a dedicated thread that sleeps until the next
/// deadline.
///
/// Kompact's own timer thread yields in a busy loop whenever its next timeout is
/// less than 5 ms away; with the protocol cores ticking every 10 ms that kept an idle
/// node at about 30% of a core. This provider sleeps on a channel with a timeout
/// instead (no spinning), and hands each expiry to its component as a message, which
/// turns it into a `Timeout` on the port. [`KompactTimer`] stays for systems whose
/// clock is Kompact's (the simulator's virtual time).
#[derive(ComponentDefinition)]
pub struct WallTimer {
    ctx: ComponentContext<Self>,
    timer_port: ProvidedPort<Timer>,
    tx: Option<std::sync::mpsc::Sender<WallCmd>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Periodic timers that are live; `None` marks a one-shot timer.
    /// Lookups only, so a `HashMap` is fine.
    live: HashMap<TimerId, bool>,
}

/// A timer expiry, sent by the timer thread to its component.
#[derive(Debug, Clone, Copy)]
pub struct WallFired(TimerId);

enum WallCmd {
    Schedule {
        id: TimerId,
        delay: std::time::Duration,
        period: Option<std::time::Duration>,
    },
    Cancel(TimerId),
    Stop,
}

impl WallTimer {
    /// A timer provider; its thread starts with the component.
    pub fn new() -> Self {
        WallTimer {
            ctx: ComponentContext::uninitialised(),
            timer_port: ProvidedPort::uninitialised(),
            tx: None,
            thread: None,
            live: HashMap::new(),
        }
    }

    fn send(&mut self, cmd: WallCmd) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(cmd);
        }
    }

    fn stop_thread(&mut self) {
        self.send(WallCmd::Stop);
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Default for WallTimer {
    fn default() -> Self {
        Self::new()
    }
}

/// The timer thread: a heap of deadlines, slept on with `recv_timeout`.
fn wall_timer_thread(rx: std::sync::mpsc::Receiver<WallCmd>, target: ActorRef<WallFired>) {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    use std::sync::mpsc::RecvTimeoutError;
    use std::time::Instant;

    // (deadline, insertion order, id); `periods` holds the live timers and their
    // period, and a generation so a cancelled-then-rescheduled id ignores old heap
    // entries.
    let mut heap: BinaryHeap<Reverse<(Instant, u64, TimerId, u64)>> = BinaryHeap::new();
    let mut periods: HashMap<TimerId, (Option<std::time::Duration>, u64)> = HashMap::new();
    let mut order = 0u64;
    loop {
        let now = Instant::now();
        while let Some(Reverse((at, _, id, generation))) = heap.peek().copied() {
            if at > now {
                break;
            }
            heap.pop();
            match periods.get(&id).copied() {
                Some((period, g)) if g == generation => {
                    target.tell(WallFired(id));
                    match period {
                        Some(p) => {
                            // Next deadline from the scheduled one, not from now, so a
                            // periodic timer does not drift; skip missed periods.
                            let mut next = at + p;
                            while next <= now {
                                next += p;
                            }
                            order += 1;
                            heap.push(Reverse((next, order, id, generation)));
                        }
                        None => {
                            periods.remove(&id);
                        }
                    }
                }
                _ => {}
            }
        }
        let cmd = match heap.peek() {
            Some(Reverse((at, ..))) => rx.recv_timeout(at.saturating_duration_since(now)),
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match cmd {
            Ok(WallCmd::Schedule { id, delay, period }) => {
                order += 1;
                let generation = order;
                periods.insert(id, (period, generation));
                heap.push(Reverse((Instant::now() + delay, order, id, generation)));
            }
            Ok(WallCmd::Cancel(id)) => {
                periods.remove(&id);
            }
            Ok(WallCmd::Stop) | Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => {}
        }
    }
}

impl ComponentLifecycle for WallTimer {
    fn on_start(&mut self) -> HandlerResult {
        if self.tx.is_none() {
            let (tx, rx) = std::sync::mpsc::channel();
            let target = self.actor_ref();
            let handle = std::thread::Builder::new()
                .name("kv-timer".into())
                .spawn(move || wall_timer_thread(rx, target));
            match handle {
                Ok(h) => {
                    self.tx = Some(tx);
                    self.thread = Some(h);
                }
                Err(e) => {
                    error!(self.ctx.log(), "cannot start the timer thread"; "error" => %e);
                }
            }
        }
        Handled::OK
    }

    fn on_stop(&mut self) -> HandlerResult {
        self.stop_thread();
        Handled::OK
    }

    fn on_kill(&mut self) -> HandlerResult {
        self.stop_thread();
        Handled::OK
    }
}

impl Provide<Timer> for WallTimer {
    fn handle(&mut self, req: TimerRequest) -> HandlerResult {
        match req {
            TimerRequest::ScheduleOnce { id, delay } => {
                self.live.insert(id, false);
                self.send(WallCmd::Schedule {
                    id,
                    delay,
                    period: None,
                });
            }
            TimerRequest::SchedulePeriodic { id, delay, period } => {
                self.live.insert(id, true);
                self.send(WallCmd::Schedule {
                    id,
                    delay,
                    period: Some(period),
                });
            }
            TimerRequest::Cancel(id) => {
                self.live.remove(&id);
                self.send(WallCmd::Cancel(id));
            }
        }
        Handled::OK
    }
}

impl Actor for WallTimer {
    type Message = WallFired;

    fn receive_local(&mut self, WallFired(id): WallFired) -> HandlerResult {
        match self.live.get(&id).copied() {
            Some(true) => self.timer_port.trigger(Timeout(id)),
            Some(false) => {
                self.live.remove(&id);
                self.timer_port.trigger(Timeout(id));
            }
            None => {} // cancelled meanwhile
        }
        Handled::OK
    }

    fn receive_network(&mut self, _msg: NetMessage) -> HandlerResult {
        Handled::OK
    }
}
