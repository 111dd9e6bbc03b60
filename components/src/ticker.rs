//! A periodic tick over the [`Timer`](kv_ports::Timer) port, for components that
//! drive a sans-IO core with `tick()`.

use std::time::Duration;

use kv_ports::{Timeout, TimerId, TimerRequest};

/// One periodic timer owned by one component.
///
/// The timer provider is shared, so every connected component sees every
/// `Timeout`; [`Ticker::is_mine`] picks out this component's.
#[derive(Debug)]
pub struct Ticker {
    id: TimerId,
    period: Duration,
}

impl Ticker {
    /// A ticker with a fresh id.
    pub fn new(period: Duration) -> Self {
        Ticker {
            id: TimerId::fresh(),
            period,
        }
    }

    /// The request that starts it.
    pub fn start(&self) -> TimerRequest {
        TimerRequest::SchedulePeriodic {
            id: self.id,
            delay: self.period,
            period: self.period,
        }
    }

    /// The request that stops it.
    pub fn stop(&self) -> TimerRequest {
        TimerRequest::Cancel(self.id)
    }

    /// Whether `t` is this ticker's timeout.
    pub fn is_mine(&self, t: &Timeout) -> bool {
        t.0 == self.id
    }

    /// The tick period.
    pub fn period(&self) -> Duration {
        self.period
    }
}

/// How many ticks of `tick` fit in `d` (at least 1).
pub fn ticks(d: Duration, tick: Duration) -> u64 {
    let t = tick.as_nanos().max(1);
    ((d.as_nanos() / t) as u64).max(1)
}

/// Starts a component's [`Ticker`] with the component and stops it with it. Needs the
/// fields `timer_port: RequiredPort<Timer>` and `ticker: Ticker`, and Kompact's
/// prelude in scope. `ticker_lifecycle!(Comp, |this| { ... })` also runs the block
/// on start, after the ticker started, with `this` the component.
#[macro_export]
macro_rules! ticker_lifecycle {
    ($comp:ty) => {
        $crate::ticker_lifecycle!($comp, |_this| {});
    };
    ($comp:ty, |$this:ident| $on_start:block) => {
        impl ComponentLifecycle for $comp {
            fn on_start(&mut self) -> HandlerResult {
                self.timer_port.trigger(self.ticker.start());
                let $this = &mut *self;
                $on_start
                Handled::OK
            }

            fn on_stop(&mut self) -> HandlerResult {
                self.timer_port.trigger(self.ticker.stop());
                Handled::OK
            }

            fn on_kill(&mut self) -> HandlerResult {
                self.timer_port.trigger(self.ticker.stop());
                Handled::OK
            }
        }
    };
}

/// The shared shape of a component that drives a sans-IO core with ticks: start
/// and stop its [`Ticker`] with the component, on each of its own timeouts call
/// `self.core.tick()` then `self.flush()`, and take no actor messages.
///
/// The component needs the fields `timer_port: RequiredPort<Timer>`,
/// `ticker: Ticker` and `core` (with `tick()`), and a method `flush(&mut self)`.
macro_rules! tick_driven_component {
    ($comp:ty) => {
        $crate::ticker_lifecycle!($comp);

        impl Require<kv_ports::Timer> for $comp {
            fn handle(&mut self, t: kv_ports::Timeout) -> HandlerResult {
                if self.ticker.is_mine(&t) {
                    self.core.tick();
                    self.flush();
                }
                Handled::OK
            }
        }

        impl Actor for $comp {
            type Message = Never;

            fn receive_local(&mut self, msg: Self::Message) -> HandlerResult {
                match msg {}
            }

            fn receive_network(&mut self, _msg: kompact::prelude::NetMessage) -> HandlerResult {
                Handled::OK
            }
        }
    };
}

pub(crate) use tick_driven_component;
