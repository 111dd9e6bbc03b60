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
