//! The `Ble` component: ballot leader election for one partition's replication
//! group, an adapter around [`kv_protocols::ble::Ble`].

use std::time::Duration;

use kompact::prelude::*;
use kv_ports::{
    BallotLeaderElection, Leader, NodeId, PartitionId, PerfectLink, PlIndication, PlPayload,
    PlRequest, Timer,
};
use kv_protocols::ble::{Ble, BleConfig, BleEvent, BleMsg};

use crate::ticker::{Ticker, tick_driven_component, ticks};

/// Settings of one leader election instance.
#[derive(Clone, Debug)]
pub struct BleSettings {
    /// This node.
    pub me: NodeId,
    /// The partition whose group this instance serves.
    pub partition: PartitionId,
    /// The group's configuration epoch.
    pub epoch: u64,
    /// The group, this node included.
    pub group: Vec<NodeId>,
    /// Clock tick of the core.
    pub tick_period: Duration,
    /// Length of a heartbeat round.
    pub heartbeat_period: Duration,
}

/// Provides [`BallotLeaderElection`] for one partition over [`PerfectLink`] and
/// [`Timer`].
#[derive(ComponentDefinition)]
pub struct BleComp {
    ctx: ComponentContext<Self>,
    ble_port: ProvidedPort<BallotLeaderElection>,
    pl_port: RequiredPort<PerfectLink>,
    timer_port: RequiredPort<Timer>,
    partition: PartitionId,
    epoch: u64,
    group: Vec<NodeId>,
    core: Ble,
    ticker: Ticker,
    out: Vec<(NodeId, BleMsg)>,
    events: Vec<BleEvent>,
}

impl BleComp {
    /// An election instance for one group.
    pub fn new(s: BleSettings) -> Self {
        let core = Ble::new(BleConfig {
            me: s.me,
            peers: s.group.clone(),
            hb_round_ticks: ticks(s.heartbeat_period, s.tick_period),
        });
        BleComp {
            ctx: ComponentContext::uninitialised(),
            ble_port: ProvidedPort::uninitialised(),
            pl_port: RequiredPort::uninitialised(),
            timer_port: RequiredPort::uninitialised(),
            partition: s.partition,
            epoch: s.epoch,
            group: s.group,
            core,
            ticker: Ticker::new(s.tick_period),
            out: Vec::new(),
            events: Vec::new(),
        }
    }

    fn flush(&mut self) {
        self.core.take_outgoing(&mut self.out);
        for (dst, msg) in self.out.drain(..) {
            self.pl_port.trigger(PlRequest::Send {
                dst,
                payload: PlPayload::Ble {
                    partition: self.partition,
                    epoch: self.epoch,
                    msg,
                },
            });
        }
        self.core.take_events(&mut self.events);
        for e in self.events.drain(..) {
            match e {
                BleEvent::Leader(b) => {
                    info!(self.ctx.log(), "leader elected";
                        "partition" => self.partition, "epoch" => self.epoch,
                        "leader" => %b.pid, "ballot" => b.n);
                    self.ble_port.trigger(Leader(b));
                }
            }
        }
    }
}

impl Provide<BallotLeaderElection> for BleComp {
    fn handle(&mut self, req: Never) -> HandlerResult {
        match req {}
    }
}

impl Require<PerfectLink> for BleComp {
    fn handle(&mut self, ind: PlIndication) -> HandlerResult {
        if let PlIndication::Deliver { src, payload } = ind
            && let PlPayload::Ble {
                partition,
                epoch,
                msg,
            } = &*payload
            && *partition == self.partition
            && *epoch == self.epoch
        {
            if !self.group.contains(&src) {
                warn!(self.ctx.log(), "ignoring election message from outside the group";
                    "partition" => self.partition, "from" => %src);
                return Handled::OK;
            }
            self.core.handle(src, msg.clone());
            self.flush();
        }
        Handled::OK
    }
}

tick_driven_component!(BleComp);
