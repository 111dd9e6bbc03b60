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

/// Resend periods between two refreshes of every member's directory by the
/// directory's leader.
pub const REFRESH_ROUNDS: u64 = 10;

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
    /// "Please get this command decided": a member to a directory replica (a
    /// replica that decided a stop-sign reports it; an operator's request).
    Propose(DirCommand),
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
    /// Automatic replacement: a replica whose node has been suspected for this many
    /// ticks is replaced (by the directory's leader); `None` turns it off. Replicas
    /// of a process that restarted (a new incarnation) are replaced at once.
    pub replace_after_ticks: Option<u64>,
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

impl DirReplica {
    /// Proposes `cmd` unless its state shows it was planned for a configuration
    /// already left: a request sent again after it took effect, or raced by another
    /// plan. Such a command would only be refused when applied, except that a
    /// reconfiguration of the directory itself is this log's stop-sign and would
    /// end the epoch for nothing.
    fn offer(&mut self, cmd: DirCommand) {
        let stale = match &cmd {
            DirCommand::Reconfigure {
                group, from_epoch, ..
            } if *group == DIRECTORY_GROUP => *from_epoch != self.epoch,
            DirCommand::Reconfigure {
                group, from_epoch, ..
            } => self
                .state
                .group(*group)
                .is_some_and(|g| g.epoch > *from_epoch),
            _ => false,
        };
        if stale {
            return;
        }
        self.px.propose(cmd);
    }
}

/// One node's membership: its view of the directory, and the directory replica
/// when it is one.
#[derive(Debug)]
pub struct Membership {
    cfg: MembershipConfig,
    /// The newest directory seen. Invariant: its version never decreases.
    view: Option<Arc<Directory>>,
    replica: Option<DirReplica>,
    /// The directory group's previous epoch on this node, after its stop-sign: kept
    /// running (it decides nothing more) so that a replica that missed the
    /// stop-sign still learns it, until the group moves on again.
    retired: Option<DirReplica>,
    /// Joins proposed here and the tick they were last proposed (rate limit).
    joins: BTreeMap<Member, u64>,
    /// Commands this node wants decided, and the tick each was last sent: sent
    /// again every `resend_ticks` until the directory shows their effect.
    wanted: Vec<(DirCommand, u64)>,
    /// Nodes the failure detector suspects, and the tick since when.
    suspected: BTreeMap<NodeId, u64>,
    /// Tick of the last repair plan (rate limit).
    last_repair: Option<u64>,
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
            retired: None,
            joins: BTreeMap::new(),
            wanted: Vec::new(),
            suspected: BTreeMap::new(),
            last_repair: None,
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
        r.offer(cmd);
        self.pump();
        true
    }

    /// Gets `cmd` decided: proposed here on a directory replica, else sent to the
    /// replicas, and again every `resend_ticks` until the directory this node sees
    /// shows its effect (see [`Membership::is_done`]). Only commands whose effect can
    /// be seen are kept: [`DirCommand::Stopped`], [`DirCommand::Reconfigure`] and
    /// [`DirCommand::Remove`].
    pub fn submit(&mut self, cmd: DirCommand) {
        if matches!(cmd, DirCommand::Join(_))
            || self.is_done(&cmd)
            || self.wanted.iter().any(|(c, _)| *c == cmd)
        {
            return;
        }
        self.send_command(&cmd);
        self.wanted.push((cmd, self.ticks));
        self.pump();
    }

    /// Whether the directory this node sees shows the effect of `cmd` (or that it
    /// can no longer have one).
    pub fn is_done(&self, cmd: &DirCommand) -> bool {
        let Some(v) = &self.view else { return false };
        match cmd {
            DirCommand::Join(m) => v.is_current(m),
            DirCommand::Stopped { group, epoch } => v
                .group(*group)
                .is_none_or(|g| g.epoch > epoch + 1 || (g.epoch == epoch + 1 && g.settled)),
            // Moved on, or it names a process that is no longer a member: it can
            // never take effect (refused when decided), so stop asking.
            DirCommand::Reconfigure {
                group,
                from_epoch,
                replicas,
            } => {
                v.group(*group).is_none_or(|g| g.epoch > *from_epoch)
                    || v.check_replicas(replicas).is_err()
            }
            DirCommand::Remove(a) => v.incarnation(*a).is_none(),
        }
    }

    fn send_command(&mut self, cmd: &DirCommand) {
        if let Some(r) = &mut self.replica {
            r.offer(cmd.clone());
        } else if let Some(g) = self.view.as_ref().and_then(|v| v.group(DIRECTORY_GROUP)) {
            for r in g.addrs() {
                self.outgoing.push((r, MembershipMsg::Propose(cmd.clone())));
            }
        }
    }

    /// The commands submitted here whose effect the directory does not show yet.
    pub fn pending(&self) -> impl Iterator<Item = &DirCommand> {
        self.wanted.iter().map(|(c, _)| c)
    }

    /// The nodes the failure detector suspects now.
    pub fn suspected(&self) -> std::collections::BTreeSet<NodeId> {
        self.suspected.keys().copied().collect()
    }

    /// The failure detector suspects `node` (automatic replacement counts from now).
    pub fn suspect(&mut self, node: NodeId) {
        self.suspected.entry(node).or_insert(self.ticks);
    }

    /// The failure detector no longer suspects `node`.
    pub fn restore(&mut self, node: NodeId) {
        self.suspected.remove(&node);
    }

    /// Nodes suspected for at least `ticks` ticks.
    fn down_for(&self, ticks: u64) -> std::collections::BTreeSet<NodeId> {
        self.suspected
            .iter()
            .filter(|(_, since)| self.ticks >= *since + ticks)
            .map(|(n, _)| *n)
            .collect()
    }

    /// On the directory's leader: propose the repairs the state calls for (lost
    /// replicas replaced), at most once per resend period per plan.
    fn maybe_repair(&mut self) {
        let Some(after) = self.cfg.replace_after_ticks else {
            return;
        };
        let due = self
            .last_repair
            .is_none_or(|t| self.ticks >= t + self.cfg.resend_ticks);
        let Some(r) = &self.replica else { return };
        if !due || !r.px.is_leader() || r.px.has_stop_sign() {
            return;
        }
        let down = self.down_for(after);
        // A directory group of one or two keeps its replicas: its new replica
        // starts empty, which is only safe while the others are a majority.
        let plans: Vec<DirCommand> = r
            .state
            .plan_repair(&down)
            .into_iter()
            .filter(|c| {
                !matches!(c, DirCommand::Reconfigure { group, replicas, .. }
                    if *group == DIRECTORY_GROUP && replicas.len() < 3)
            })
            .collect();
        if plans.is_empty() {
            return;
        }
        self.last_repair = Some(self.ticks);
        for cmd in plans {
            self.submit(cmd);
        }
    }

    /// The directory instance of `epoch` on this node, current or retired.
    fn instance(&mut self, epoch: u64) -> Option<&mut DirReplica> {
        match (&mut self.replica, &mut self.retired) {
            (Some(r), _) if r.epoch == epoch => Some(r),
            (_, Some(r)) if r.epoch == epoch => Some(r),
            _ => None,
        }
    }

    /// Handles a message from `from`.
    pub fn handle(&mut self, from: NodeId, msg: MembershipMsg) {
        match msg {
            MembershipMsg::Paxos { epoch, msg } => {
                if let Some(r) = self.instance(epoch)
                    && r.group.contains(&from)
                {
                    r.px.handle(from, msg);
                }
            }
            MembershipMsg::Ble { epoch, msg } => {
                if let Some(r) = self.instance(epoch)
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
            MembershipMsg::Propose(cmd) => {
                // From members only; joins go through `Join` (a process asks for
                // itself).
                let member = self
                    .view
                    .as_ref()
                    .is_some_and(|v| v.incarnation(from).is_some());
                if member
                    && !matches!(cmd, DirCommand::Join(_))
                    && let Some(r) = &mut self.replica
                {
                    r.offer(cmd);
                }
            }
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
        for r in [&mut self.replica, &mut self.retired].into_iter().flatten() {
            r.ble.tick();
            r.px.tick();
        }
        let wanted = std::mem::take(&mut self.wanted);
        let mut keep = Vec::with_capacity(wanted.len());
        for (cmd, last) in wanted {
            if self.is_done(&cmd) {
                continue;
            }
            if self.ticks >= last + self.cfg.resend_ticks {
                self.send_command(&cmd);
                keep.push((cmd, self.ticks));
            } else {
                keep.push((cmd, last));
            }
        }
        self.wanted = keep;
        self.maybe_repair();
        self.refresh_members();
        self.pump();
    }

    /// On the directory's leader, every [`REFRESH_ROUNDS`] resend periods: the
    /// current state to every member, so one that missed a change (its copy of the
    /// broadcast was lost with a crashed sender) catches up.
    fn refresh_members(&mut self) {
        let period = self.cfg.resend_ticks.max(1) * REFRESH_ROUNDS;
        let Some(r) = &self.replica else { return };
        if !self.ticks.is_multiple_of(period) || !r.px.is_leader() {
            return;
        }
        let d = Arc::new(r.state.clone());
        let me = self.cfg.me.addr;
        for m in d.members() {
            if m.addr != me {
                self.outgoing
                    .push((m.addr, MembershipMsg::State(d.clone())));
            }
        }
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
        let (snapshot, state) = if g.epoch == 0 {
            // The instance of epoch 0 starts from the seed on every replica alike.
            if d.version() != 0 {
                return;
            }
            (None, d.clone())
        } else if g.previous.contains(&self.cfg.me) {
            // A replica of the previous epoch too: it starts the new one from the
            // state its own stop-sign left (see `pump`), never from a view.
            return;
        } else {
            // A new replica starts empty. The directory moves one replica at a
            // time, so the others of this epoch, a majority, start from the state
            // the stop-sign left; any leader's prepare meets one of them and hands
            // that state to this replica before it accepts anything.
            (None, d.clone())
        };
        self.replica = Some(self.new_instance(g.epoch, g.addrs(), snapshot, state));
    }

    fn new_instance(
        &self,
        epoch: u64,
        group: Vec<NodeId>,
        start: Option<Snapshot>,
        state: Directory,
    ) -> DirReplica {
        let me = self.cfg.me.addr;
        let cfg = PaxosConfig {
            me,
            peers: group.clone(),
            max_batch: 64,
            max_batch_bytes: 64 * 1024,
            max_inflight_batches: 4,
            resend_ticks: self.cfg.resend_ticks,
            max_log_entries: 10_000,
            max_pending: self.cfg.max_pending,
        };
        let applied = start.as_ref().map_or(0, |s| s.idx);
        let px = match start {
            Some(snap) => SequencePaxos::starting_from(cfg, snap),
            None => SequencePaxos::new(cfg),
        };
        DirReplica {
            epoch,
            group: group.clone(),
            ble: Ble::new(BleConfig {
                me,
                peers: group,
                hb_round_ticks: self.cfg.hb_round_ticks,
            }),
            px,
            state,
            applied,
            last_snapshot: applied,
        }
    }

    /// After the directory's stop-sign: the next epoch starts here from the state it
    /// left, if this process is one of its replicas; the old instance is retired.
    fn next_epoch(&mut self) {
        let Some(r) = &self.replica else { return };
        let Some((ss_idx, _)) = r.px.stopped() else {
            return;
        };
        let state = r.state.clone();
        let Some(g) = state.group(DIRECTORY_GROUP).cloned() else {
            return;
        };
        if g.epoch != r.epoch + 1 {
            return; // cannot happen: the stop-sign is what moved the epoch
        }
        let old = self.replica.take();
        let start = Snapshot {
            idx: ss_idx + 1,
            data: Arc::new(state.encode()),
        };
        if g.replicas.contains(&self.cfg.me) {
            self.replica = Some(self.new_instance(g.epoch, g.addrs(), Some(start), state));
        }
        self.retired = old;
    }

    /// Runs the replica's cores to quiescence: routes BLE's leader to Paxos, applies
    /// decisions, collects messages.
    fn pump(&mut self) {
        if let Some(r) = &mut self.retired {
            // Decides nothing more; only talks.
            route_ble(
                r,
                &mut self.ble_out,
                &mut self.ble_events,
                &mut self.outgoing,
            );
            r.px.take_events(&mut self.px_events);
            self.px_events.clear();
            send_paxos(r, &mut self.px_out, &mut self.outgoing);
        }
        self.pump_current();
        if self
            .replica
            .as_ref()
            .is_some_and(|r| r.px.stopped().is_some())
        {
            self.next_epoch();
            self.pump_current();
        }
    }

    fn pump_current(&mut self) {
        let Some(r) = &mut self.replica else { return };
        route_ble(
            r,
            &mut self.ble_out,
            &mut self.ble_events,
            &mut self.outgoing,
        );
        r.px.take_events(&mut self.px_events);
        let mut changed = false;
        for ev in self.px_events.drain(..) {
            match ev {
                PaxosEvent::Decided { idx, entry } => {
                    if idx < r.applied {
                        continue;
                    }
                    let before = r.state.version();
                    let outcome = r.state.apply(&entry);
                    r.applied = idx + 1;
                    changed |= r.state.version() != before;
                    if matches!(outcome, crate::directory::DirOutcome::Refused(_)) {
                        // Sending it again would change nothing.
                        self.wanted.retain(|(c, _)| *c != entry);
                    }
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
                data: Arc::new(r.state.encode()),
            });
        }
        // After the decisions and the snapshot: one drain takes what both sent.
        send_paxos(r, &mut self.px_out, &mut self.outgoing);
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

/// Sends what a directory instance's election wants sent, tagged with its epoch,
/// and hands the leaders it elected to its Sequence Paxos.
fn route_ble(
    r: &mut DirReplica,
    ble_out: &mut Vec<(NodeId, BleMsg)>,
    ble_events: &mut Vec<BleEvent>,
    outgoing: &mut Vec<(NodeId, MembershipMsg)>,
) {
    let epoch = r.epoch;
    r.ble.take_outgoing(ble_out);
    for (to, msg) in ble_out.drain(..) {
        outgoing.push((to, MembershipMsg::Ble { epoch, msg }));
    }
    r.ble.take_events(ble_events);
    for BleEvent::Leader(b) in ble_events.drain(..) {
        r.px.handle_leader(b);
    }
}

/// Sends what a directory instance's Sequence Paxos wants sent, tagged with its
/// epoch.
fn send_paxos(
    r: &mut DirReplica,
    px_out: &mut Vec<(NodeId, PaxosMsg<DirCommand>)>,
    outgoing: &mut Vec<(NodeId, MembershipMsg)>,
) {
    let epoch = r.epoch;
    r.px.take_outgoing(px_out);
    for (to, msg) in px_out.drain(..) {
        outgoing.push((to, MembershipMsg::Paxos { epoch, msg }));
    }
}
