//! The membership core: one per node, it keeps the node's view of the
//! [`Directory`] and, on the nodes of the directory group, runs the group itself
//! (ballot leader election and Sequence Paxos over [`DirCommand`]s).
//!
//! * **Every node** holds the newest directory it has seen and reports each change
//!   as [`MembershipEvent::Layout`]. It learns changes from [`MembershipMsg::State`],
//!   which the directory replicas send to every member after each decided change;
//!   a state is taken only if it is newer (its [`Directory::version`]) and comes
//!   from a replica of the directory group.
//! * **Directory replicas** decide commands: joins ([`Membership::request_join`]),
//!   and, later, reconfigurations and removals ([`Membership::propose`]). A join
//!   request reaching a node that is not a replica is passed on to the replicas.
//! * **Joining nodes** have no directory yet. They ask a member (the host sends its
//!   check-in); once the directory has decided the join, the replicas' `State`
//!   reaches them as to any member, and they install it.
//!
//! Like every core here it is sans-IO: `handle`, `tick`, and drained outboxes.
//! See `docs/membership.md`.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::NodeId;
use crate::ble::{Ble, BleConfig, BleEvent, BleMsg};
use crate::directory::{DIRECTORY_GROUP, DirCommand, Directory, Member};
use crate::sequence_paxos::{PaxosConfig, PaxosEvent, PaxosMsg, SequencePaxos, Snapshot};

/// Messages between the membership cores of two nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembershipMsg {
    /// Sequence Paxos of the directory group in `epoch`.
    Paxos {
        /// The directory group's epoch.
        epoch: u64,
        /// The message.
        msg: PaxosMsg<DirCommand>,
    },
    /// Leader election of the directory group in `epoch`.
    Ble {
        /// The directory group's epoch.
        epoch: u64,
        /// The message.
        msg: BleMsg,
    },
    /// "This process wants to be a member": to a directory replica, which gets it
    /// decided.
    Join(Member),
    /// The directory, as decided so far (replica → every member).
    State(Arc<Directory>),
}

/// What the core tells its host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembershipEvent {
    /// The node's view of the directory changed (the first install included).
    Layout(Arc<Directory>),
}

/// Settings of the membership core.
#[derive(Clone, Debug)]
pub struct MembershipConfig {
    /// This node's process.
    pub me: Member,
    /// Ticks per heartbeat round of the directory's leader election.
    pub hb_round_ticks: u64,
    /// Ticks between resends (Sequence Paxos) and between repeated join proposals.
    pub resend_ticks: u64,
    /// Directory commands between snapshots of the directory's log.
    pub snapshot_interval: u64,
    /// Most directory commands buffered (Sequence Paxos `max_pending`).
    pub max_pending: usize,
}

/// The directory group as run on one of its replicas.
#[derive(Debug)]
struct DirReplica {
    epoch: u64,
    group: Vec<NodeId>,
    ble: Ble,
    px: SequencePaxos<DirCommand>,
    /// The state after every decided command (`applied` of them).
    state: Directory,
    applied: u64,
    last_snapshot: u64,
}

/// One node's membership: its view of the directory, and the directory replica
/// when it is one.
#[derive(Debug)]
pub struct Membership {
    cfg: MembershipConfig,
    /// The newest directory seen. Invariant: its version never decreases.
    view: Option<Arc<Directory>>,
    replica: Option<DirReplica>,
    /// Joins proposed here and the tick they were last proposed (rate limit).
    joins: BTreeMap<Member, u64>,
    ticks: u64,
    outgoing: Vec<(NodeId, MembershipMsg)>,
    events: Vec<MembershipEvent>,
    ble_out: Vec<(NodeId, BleMsg)>,
    ble_events: Vec<BleEvent>,
    px_out: Vec<(NodeId, PaxosMsg<DirCommand>)>,
    px_events: Vec<PaxosEvent<DirCommand>>,
}

impl Membership {
    /// A node without a directory yet.
    pub fn new(cfg: MembershipConfig) -> Self {
        Membership {
            cfg,
            view: None,
            replica: None,
            joins: BTreeMap::new(),
            ticks: 0,
            outgoing: Vec::new(),
            events: Vec::new(),
            ble_out: Vec::new(),
            ble_events: Vec::new(),
            px_out: Vec::new(),
            px_events: Vec::new(),
        }
    }

    /// This node's process.
    pub fn me(&self) -> Member {
        self.cfg.me
    }

    /// The newest directory this node has seen.
    pub fn directory(&self) -> Option<&Arc<Directory>> {
        self.view.as_ref()
    }

    /// Whether this node runs a replica of the directory group, and its epoch.
    pub fn replica_epoch(&self) -> Option<u64> {
        self.replica.as_ref().map(|r| r.epoch)
    }

    /// The leader of the directory group, as this replica sees it.
    pub fn directory_leader(&self) -> Option<NodeId> {
        self.replica
            .as_ref()
            .and_then(|r| r.px.leader())
            .map(|b| b.pid)
    }

    /// Installs the first directory (from the bootstrap server): every node of a new
    /// cluster starts from the same seed. Ignored if a newer one is known.
    pub fn install(&mut self, dir: Directory) {
        self.adopt(Arc::new(dir));
    }

    /// A process asked this node to be let in: get the join decided (here if this
    /// node is a directory replica, else by the replicas). A process that already is
    /// a member just gets the directory again.
    pub fn request_join(&mut self, m: Member) {
        let Some(view) = self.view.clone() else {
            return; // not booted ourselves; the joiner will ask again
        };
        if view.is_current(&m) {
            self.outgoing.push((m.addr, MembershipMsg::State(view)));
            return;
        }
        if self.replica.is_some() {
            let due = self
                .joins
                .get(&m)
                .is_none_or(|t| self.ticks >= t + self.cfg.resend_ticks);
            if due {
                self.joins.insert(m, self.ticks);
                self.propose(DirCommand::Join(m));
            }
        } else if let Some(g) = view.group(DIRECTORY_GROUP) {
            for r in g.addrs() {
                self.outgoing.push((r, MembershipMsg::Join(m)));
            }
        }
    }

    /// Proposes a command to the directory (only on a directory replica; elsewhere
    /// it is ignored and the host should send it to a replica).
    pub fn propose(&mut self, cmd: DirCommand) -> bool {
        let Some(r) = &mut self.replica else {
            return false;
        };
        r.px.propose(cmd);
        self.pump();
        true
    }

    /// Handles a message from `from`.
    pub fn handle(&mut self, from: NodeId, msg: MembershipMsg) {
        match msg {
            MembershipMsg::Paxos { epoch, msg } => {
                if let Some(r) = &mut self.replica
                    && r.epoch == epoch
                    && r.group.contains(&from)
                {
                    r.px.handle(from, msg);
                }
            }
            MembershipMsg::Ble { epoch, msg } => {
                if let Some(r) = &mut self.replica
                    && r.epoch == epoch
                    && r.group.contains(&from)
                {
                    r.ble.handle(from, msg);
                }
            }
            MembershipMsg::Join(m) => {
                // Only a process can ask for itself.
                if m.addr == from {
                    self.request_join(m);
                }
            }
            MembershipMsg::State(d) => self.handle_state(from, d),
        }
        self.pump();
    }

    fn handle_state(&mut self, from: NodeId, d: Arc<Directory>) {
        // From a replica of the directory group, as we know it or as it says (a
        // joining node knows nothing yet).
        let from_replica =
            |dir: &Directory| dir.group(DIRECTORY_GROUP).is_some_and(|g| g.contains(from));
        let trusted = match &self.view {
            Some(v) => from_replica(v) || from_replica(&d),
            None => from_replica(&d) && d.is_current(&self.cfg.me),
        };
        if trusted {
            self.adopt(d);
        }
    }

    /// Advances the clock of the directory replica.
    pub fn tick(&mut self) {
        self.ticks += 1;
        if let Some(r) = &mut self.replica {
            r.ble.tick();
            r.px.tick();
        }
        self.pump();
    }

    /// Moves the messages to send into `buf`.
    pub fn take_outgoing(&mut self, buf: &mut Vec<(NodeId, MembershipMsg)>) {
        buf.append(&mut self.outgoing);
    }

    /// Moves the events into `buf`.
    pub fn take_events(&mut self, buf: &mut Vec<MembershipEvent>) {
        buf.append(&mut self.events);
    }

    /// Takes `d` as the view if it is newer, and starts the directory replica if
    /// this process is one of its replicas.
    fn adopt(&mut self, d: Arc<Directory>) {
        if self
            .view
            .as_ref()
            .is_some_and(|v| v.version() >= d.version())
        {
            return;
        }
        self.view = Some(d.clone());
        self.events.push(MembershipEvent::Layout(d.clone()));
        self.maybe_start_replica(&d);
    }

    fn maybe_start_replica(&mut self, d: &Directory) {
        let Some(g) = d.group(DIRECTORY_GROUP) else {
            return;
        };
        if !g.replicas.contains(&self.cfg.me)
            || self.replica.as_ref().is_some_and(|r| r.epoch >= g.epoch)
        {
            return;
        }
        // Only the seed starts a replica from a directory it was handed: the
        // instance of epoch 0 starts from the seed on every replica alike. (Moving
        // the directory group to a new epoch goes through its stop-sign.)
        if g.epoch != 0 || d.version() != 0 {
            return;
        }
        let me = self.cfg.me.addr;
        let group = g.addrs();
        self.replica = Some(DirReplica {
            epoch: g.epoch,
            group: group.clone(),
            ble: Ble::new(BleConfig {
                me,
                peers: group.clone(),
                hb_round_ticks: self.cfg.hb_round_ticks,
            }),
            px: SequencePaxos::new(PaxosConfig {
                me,
                peers: group,
                max_batch: 64,
                max_inflight_batches: 4,
                resend_ticks: self.cfg.resend_ticks,
                max_log_entries: 10_000,
                max_pending: self.cfg.max_pending,
            }),
            state: d.clone(),
            applied: 0,
            last_snapshot: 0,
        });
    }

    /// Runs the replica's cores to quiescence: routes BLE's leader to Paxos, applies
    /// decisions, collects messages.
    fn pump(&mut self) {
        let Some(r) = &mut self.replica else { return };
        let epoch = r.epoch;
        r.ble.take_outgoing(&mut self.ble_out);
        for (to, msg) in self.ble_out.drain(..) {
            self.outgoing.push((to, MembershipMsg::Ble { epoch, msg }));
        }
        r.ble.take_events(&mut self.ble_events);
        for BleEvent::Leader(b) in self.ble_events.drain(..) {
            r.px.handle_leader(b);
        }
        r.px.take_events(&mut self.px_events);
        let mut changed = false;
        for ev in self.px_events.drain(..) {
            match ev {
                PaxosEvent::Decided { idx, entry } => {
                    if idx < r.applied {
                        continue;
                    }
                    let before = r.state.version();
                    r.state.apply(&entry);
                    r.applied = idx + 1;
                    changed |= r.state.version() != before;
                    if let DirCommand::Join(m) = entry {
                        self.joins.remove(&m);
                    }
                }
                PaxosEvent::InstallSnapshot(s) => {
                    if let Ok(d) = Directory::decode(&s.data) {
                        r.state = d;
                        r.applied = s.idx;
                        r.last_snapshot = s.idx;
                        changed = true;
                    }
                }
                PaxosEvent::Dropped(_) => {}
            }
        }
        if r.applied >= r.last_snapshot + self.cfg.snapshot_interval.max(1)
            && r.px.stopped().is_none()
        {
            r.last_snapshot = r.applied;
            r.px.set_snapshot(Snapshot {
                idx: r.applied,
                data: r.state.encode(),
            });
        }
        // After the decisions and the snapshot: one drain takes what both sent.
        r.px.take_outgoing(&mut self.px_out);
        for (to, msg) in self.px_out.drain(..) {
            self.outgoing
                .push((to, MembershipMsg::Paxos { epoch, msg }));
        }
        if changed {
            let d = Arc::new(r.state.clone());
            let me = self.cfg.me.addr;
            for m in d.members() {
                if m.addr != me {
                    self.outgoing
                        .push((m.addr, MembershipMsg::State(d.clone())));
                }
            }
            if self.view.as_ref().is_none_or(|v| v.version() < d.version()) {
                self.view = Some(d.clone());
                self.events.push(MembershipEvent::Layout(d));
            }
        }
    }
}
