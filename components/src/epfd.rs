//! The `Epfd` component: the eventually perfect failure detector of a node, an
//! adapter around [`kv_protocols::epfd::Epfd`].

use std::sync::Arc;
use std::time::Duration;

use kompact::prelude::*;
use kv_ports::{
    EpfdIndication, EpfdRequest, EventuallyPerfectFailureDetector, NodeId, PerfectLink,
    PlIndication, PlPayload, PlRequest, Timer,
};
use kv_protocols::epfd::{Epfd, EpfdConfig, EpfdEvent, EpfdMsg};

use crate::metrics::{Metrics, inc};
use crate::ticker::{Ticker, tick_driven_component, ticks};

/// Settings of the failure detector.
#[derive(Clone, Debug)]
pub struct EpfdSettings {
    /// This node.
    pub me: NodeId,
    /// Clock tick of the core.
    pub tick_period: Duration,
    /// Length of the first heartbeat round.
    pub initial_delay: Duration,
    /// Growth of the round after a false suspicion.
    pub delay_increment: Duration,
}

/// Provides [`EventuallyPerfectFailureDetector`] over [`PerfectLink`] and [`Timer`].
#[derive(ComponentDefinition)]
pub struct EpfdComp {
    ctx: ComponentContext<Self>,
    epfd_port: ProvidedPort<EventuallyPerfectFailureDetector>,
    pl_port: RequiredPort<PerfectLink>,
    timer_port: RequiredPort<Timer>,
    core: Epfd,
    ticker: Ticker,
    out: Vec<(NodeId, EpfdMsg)>,
    events: Vec<EpfdEvent>,
    metrics: Arc<Metrics>,
}

impl EpfdComp {
    /// A detector that monitors nobody until asked to with `Monitor`.
    pub fn new(s: EpfdSettings) -> Self {
        let core = Epfd::new(EpfdConfig {
            me: s.me,
            nodes: Vec::new(),
            initial_delay_ticks: ticks(s.initial_delay, s.tick_period),
            delay_increment_ticks: ticks(s.delay_increment, s.tick_period),
        });
        EpfdComp {
            ctx: ComponentContext::uninitialised(),
            epfd_port: ProvidedPort::uninitialised(),
            pl_port: RequiredPort::uninitialised(),
            timer_port: RequiredPort::uninitialised(),
            core,
            ticker: Ticker::new(s.tick_period),
            out: Vec::new(),
            events: Vec::new(),
            metrics: Arc::default(),
        }
    }

    /// Counts suspicions and restores into `m`.
    pub fn with_metrics(mut self, m: Arc<Metrics>) -> Self {
        self.metrics = m;
        self
    }

    /// Nodes currently suspected (sorted).
    pub fn suspected(&self) -> Vec<NodeId> {
        self.core.suspected()
    }

    fn flush(&mut self) {
        self.core.take_outgoing(&mut self.out);
        for (dst, msg) in self.out.drain(..) {
            self.pl_port.trigger(PlRequest::Send {
                dst,
                payload: PlPayload::Epfd(msg),
            });
        }
        self.core.take_events(&mut self.events);
        for e in self.events.drain(..) {
            match e {
                EpfdEvent::Suspect(n) => {
                    inc(&self.metrics.suspicions);
                    warn!(self.ctx.log(), "node suspected"; "peer" => %n, "delay_ticks" => self.core.delay_ticks());
                    self.epfd_port.trigger(EpfdIndication::Suspect(n));
                }
                EpfdEvent::Restore(n) => {
                    inc(&self.metrics.restores);
                    info!(self.ctx.log(), "node restored"; "peer" => %n, "delay_ticks" => self.core.delay_ticks());
                    self.epfd_port.trigger(EpfdIndication::Restore(n));
                }
            }
        }
    }
}

impl Provide<EventuallyPerfectFailureDetector> for EpfdComp {
    fn handle(&mut self, req: EpfdRequest) -> HandlerResult {
        match req {
            EpfdRequest::Monitor(nodes) => {
                for n in nodes {
                    self.core.add_node(n);
                }
            }
        }
        Handled::OK
    }
}

impl Require<PerfectLink> for EpfdComp {
    fn handle(&mut self, ind: PlIndication) -> HandlerResult {
        if let PlIndication::Deliver { src, payload } = ind
            && let PlPayload::Epfd(msg) = &*payload
        {
            self.core.handle(src, msg.clone());
            self.flush();
        }
        Handled::OK
    }
}

tick_driven_component!(EpfdComp);
