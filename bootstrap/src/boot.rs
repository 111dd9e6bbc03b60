//! The `Bootstrap` component: cluster formation, then membership.
//!
//! **Formation.** Every node but the bootstrap server checks in with the server
//! every keep-alive period, naming its cluster and the incarnation its process drew
//! at start. The server (the node whose `address` equals `bootstrap-address`) counts
//! the processes that checked in, itself included; when `boot-threshold` are there it
//! seeds the first layout, a [`Directory`] of exactly those processes, and sends it to
//! each of them.
//!
//! **Membership.** From then on the layout is replicated state: the component runs
//! the node's [`Membership`] core, which on the nodes of the directory group runs the
//! directory itself. A process that checks in after boot (a new node, or a node
//! restarted as a new incarnation) may ask *any* member: the member gets its join
//! decided by the directory, and the directory's next state reaches the joiner like
//! every member. A restarted process joins empty: replica slots recorded with its
//! former incarnation are not its own. The bootstrap server is special during
//! formation only. See `docs/membership.md`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use kompact::prelude::*;
use kv_components::ticker::{Ticker, ticks};
use kv_ports::{
    AdminOp, AdminReply, AdminRequest, AdminResult, BootIndication, BootRequest, BootstrapMsg,
    Bootstrapping, DirCommand, Directory, EpfdIndication, EventuallyPerfectFailureDetector, Layout,
    Member, NodeId, PerfectLink, PlIndication, PlPayload, PlRequest, ReplicaMove, Timeout, Timer,
};
use kv_protocols::directory::{DirError, GroupName};
use kv_protocols::membership::{Membership, MembershipConfig, MembershipEvent, MembershipMsg};

/// Settings of cluster formation and membership.
#[derive(Clone, Debug)]
pub struct BootSettings {
    /// This node.
    pub me: NodeId,
    /// This process's incarnation (random per start).
    pub incarnation: u64,
    /// The bootstrap server.
    pub server: NodeId,
    /// Other members to ask for admission, in turn with the server.
    pub seeds: Vec<NodeId>,
    /// Nodes needed to form the cluster.
    pub boot_threshold: usize,
    /// Partitions of the key space.
    pub partitions: u32,
    /// Replicas per partition.
    pub replication_degree: usize,
    /// The cluster's name; nodes of another cluster are refused.
    pub cluster: String,
    /// Period of check-ins.
    pub keep_alive_period: Duration,
    /// Clock tick of the membership core.
    pub tick_period: Duration,
    /// Heartbeat round of the directory's leader election.
    pub heartbeat_period: Duration,
    /// Resend period of the directory's Sequence Paxos.
    pub resend_period: Duration,
    /// Replace a replica whose node has been suspected this long (`None`: never).
    pub replace_after: Option<Duration>,
}

enum Role {
    /// Waiting for nodes to check in. Invariant: `checked_in` contains `me`.
    Server { checked_in: BTreeMap<NodeId, u64> },
    /// Checking in until this process is a member.
    Joining,
    /// A member: the layout lives in the membership core.
    Booted,
    /// This node cannot be part of the cluster.
    Refused,
}

/// Provides [`Bootstrapping`] over [`PerfectLink`] and [`Timer`].
#[derive(ComponentDefinition)]
pub struct Bootstrap {
    ctx: ComponentContext<Self>,
    boot_port: ProvidedPort<Bootstrapping>,
    pl_port: RequiredPort<PerfectLink>,
    epfd_port: RequiredPort<EventuallyPerfectFailureDetector>,
    timer_port: RequiredPort<Timer>,
    s: BootSettings,
    role: Role,
    /// Check-ins (joining role).
    ticker: Ticker,
    /// The membership core's clock.
    core_ticker: Ticker,
    core: Membership,
    out: Vec<(NodeId, MembershipMsg)>,
    events: Vec<MembershipEvent>,
    /// Check-ins sent without an answer (joining role), to warn once when the
    /// server stays silent.
    unanswered: u32,
    /// The seeds, without this node and the bootstrap server.
    seeds: Vec<NodeId>,
    /// The directory leader last logged (directory replicas only).
    directory_leader: Option<NodeId>,
}

/// Unanswered check-ins after which a joining node warns once that the server may
/// still wait for nodes, be down, or be of another cluster (whose links drop our
/// frames without a reply, so no `Rejected` can reach us).
const SILENT_SERVER_WARNING: u32 = 10;

/// Directory commands between snapshots of the directory's log.
const DIRECTORY_SNAPSHOT_INTERVAL: u64 = 64;

/// Directory commands buffered at most (joins arriving faster are dropped and asked
/// again at the joiner's next check-in).
const DIRECTORY_MAX_PENDING: usize = 1024;

impl Bootstrap {
    /// A bootstrap component in the server or the joining role, by address.
    pub fn new(s: BootSettings) -> Self {
        let me = Member {
            addr: s.me,
            incarnation: s.incarnation,
        };
        let role = if s.me == s.server {
            Role::Server {
                checked_in: BTreeMap::from([(s.me, s.incarnation)]),
            }
        } else {
            Role::Joining
        };
        let tick = s.tick_period;
        let core = Membership::new(MembershipConfig {
            me,
            hb_round_ticks: ticks(s.heartbeat_period, tick),
            resend_ticks: ticks(s.resend_period, tick),
            snapshot_interval: DIRECTORY_SNAPSHOT_INTERVAL,
            max_pending: DIRECTORY_MAX_PENDING,
            replace_after_ticks: s.replace_after.map(|d| ticks(d, tick)),
        });
        Bootstrap {
            ctx: ComponentContext::uninitialised(),
            boot_port: ProvidedPort::uninitialised(),
            pl_port: RequiredPort::uninitialised(),
            epfd_port: RequiredPort::uninitialised(),
            timer_port: RequiredPort::uninitialised(),
            ticker: Ticker::new(s.keep_alive_period),
            core_ticker: Ticker::new(s.tick_period),
            core,
            out: Vec::new(),
            events: Vec::new(),
            seeds: s
                .seeds
                .iter()
                .copied()
                .filter(|a| *a != s.me && *a != s.server)
                .fold(Vec::new(), |mut v, a| {
                    if !v.contains(&a) {
                        v.push(a);
                    }
                    v
                }),
            s,
            role,
            unanswered: 0,
            directory_leader: None,
        }
    }

    /// The directory this node knows (for status and tools).
    pub fn directory(&self) -> Option<Arc<Directory>> {
        self.core.directory().cloned()
    }

    fn send(&mut self, dst: NodeId, msg: BootstrapMsg) {
        self.pl_port.trigger(PlRequest::Send {
            dst,
            payload: PlPayload::Bootstrap(msg),
        });
    }

    /// Checks in with the bootstrap server (unless that is this node) and with the
    /// next seed in turn, so seeds never slow down the formation of a new cluster.
    fn check_in(&mut self) {
        let cluster = self.s.cluster.clone();
        let incarnation = self.s.incarnation;
        let mut targets = Vec::with_capacity(2);
        if self.s.server != self.s.me {
            targets.push(self.s.server);
        }
        if !self.seeds.is_empty() {
            targets.push(self.seeds[self.unanswered as usize % self.seeds.len()]);
        }
        for target in targets {
            self.send(
                target,
                BootstrapMsg::CheckIn {
                    cluster: cluster.clone(),
                    incarnation,
                },
            );
        }
    }

    fn maybe_boot(&mut self) {
        let Role::Server { checked_in } = &self.role else {
            return;
        };
        if checked_in.len() < self.s.boot_threshold {
            return;
        }
        let members: Vec<Member> = checked_in
            .iter()
            .map(|(a, i)| Member {
                addr: *a,
                incarnation: *i,
            })
            .collect();
        match Directory::seed(
            members.clone(),
            self.s.partitions,
            self.s.replication_degree,
        ) {
            Ok(dir) => {
                let dir = Arc::new(dir);
                info!(self.ctx.log(), "cluster formed, sending the first layout";
                    "nodes" => members.len(), "partitions" => self.s.partitions,
                    "replication" => self.s.replication_degree);
                let me = self.s.me;
                for m in members.iter().filter(|m| m.addr != me) {
                    self.send(m.addr, BootstrapMsg::Boot(dir.clone()));
                }
                self.core.install((*dir).clone());
                self.flush_core();
            }
            Err(e) => {
                error!(self.ctx.log(), "cannot build the first layout"; "error" => %e);
            }
        }
    }

    /// Sends what the membership core wants sent and reports its layouts.
    fn flush_core(&mut self) {
        let leader = self.core.directory_leader();
        if leader != self.directory_leader && leader.is_some() {
            info!(self.ctx.log(), "directory leader"; "leader" => ?leader,
                "epoch" => self.core.replica_epoch());
        }
        self.directory_leader = leader;
        self.core.take_outgoing(&mut self.out);
        for (dst, msg) in self.out.drain(..) {
            self.pl_port.trigger(PlRequest::Send {
                dst,
                payload: PlPayload::Membership(msg),
            });
        }
        self.core.take_events(&mut self.events);
        let events: Vec<MembershipEvent> = self.events.drain(..).collect();
        for MembershipEvent::Layout(d) in events {
            let me = Member {
                addr: self.s.me,
                incarnation: self.s.incarnation,
            };
            match self.role {
                Role::Booted => {
                    debug!(self.ctx.log(), "layout changed"; "version" => d.version(),
                        "members" => d.members().len());
                    self.boot_port
                        .trigger(BootIndication::Changed(Layout::of(d)));
                }
                Role::Refused => {}
                Role::Server { .. } | Role::Joining => {
                    if !d.is_current(&me) {
                        continue;
                    }
                    info!(self.ctx.log(), "member of the cluster";
                        "nodes" => d.members().len(),
                        "hosted_groups" => ?d.groups_of(self.s.me),
                        "directory_version" => d.version());
                    self.timer_port.trigger(self.ticker.stop());
                    self.role = Role::Booted;
                    self.boot_port
                        .trigger(BootIndication::Booted(Layout::of(d)));
                }
            }
        }
    }

    fn on_msg(&mut self, src: NodeId, msg: &BootstrapMsg) {
        match msg {
            BootstrapMsg::CheckIn {
                cluster,
                incarnation,
            } => self.on_check_in(src, cluster, *incarnation),
            BootstrapMsg::Boot(dir) => {
                if src != self.s.server {
                    warn!(self.ctx.log(), "ignoring a first layout from a node that is not the bootstrap server"; "from" => %src);
                    return;
                }
                if !matches!(self.role, Role::Joining) {
                    return; // duplicate
                }
                let me = Member {
                    addr: self.s.me,
                    incarnation: self.s.incarnation,
                };
                if !dir.is_current(&me) {
                    // A layout for an earlier process at this address: the server
                    // will let this one in as a new member once it is booted.
                    debug!(self.ctx.log(), "ignoring a first layout made for another process at this address"; "from" => %src);
                    return;
                }
                self.core.install((**dir).clone());
                self.flush_core();
            }
            BootstrapMsg::Rejected { reason } => {
                if src == self.s.server && matches!(self.role, Role::Joining) {
                    self.refused(reason.clone());
                }
            }
        }
    }

    fn refused(&mut self, reason: String) {
        error!(self.ctx.log(), "this node is not part of the cluster"; "reason" => &reason);
        self.timer_port.trigger(self.ticker.stop());
        self.role = Role::Refused;
        self.boot_port.trigger(BootIndication::NotInTable(reason));
    }

    fn on_check_in(&mut self, src: NodeId, cluster: &str, incarnation: u64) {
        if cluster != self.s.cluster {
            warn!(self.ctx.log(), "refusing check-in from a node of another cluster";
                "from" => %src, "their_cluster" => cluster);
            let reason = format!(
                "node {src} names cluster {cluster:?}, but the node at {} serves {:?}",
                self.s.me, self.s.cluster
            );
            self.send(src, BootstrapMsg::Rejected { reason });
            return;
        }
        match &mut self.role {
            Role::Server { checked_in } => {
                let previous = checked_in.insert(src, incarnation);
                if previous != Some(incarnation) {
                    info!(self.ctx.log(), "node checked in";
                        "from" => %src, "count" => checked_in.len(), "threshold" => self.s.boot_threshold);
                }
                self.maybe_boot();
            }
            Role::Booted => {
                let m = Member {
                    addr: src,
                    incarnation,
                };
                if !self.core.directory().is_some_and(|d| d.is_current(&m)) {
                    info!(self.ctx.log(), "node asks to join"; "from" => %src, "incarnation" => incarnation);
                }
                self.core.request_join(m);
                self.flush_core();
            }
            Role::Joining | Role::Refused => {
                debug!(self.ctx.log(), "ignoring check-in: this node is not a member yet"; "from" => %src);
            }
        }
    }
}

impl ComponentLifecycle for Bootstrap {
    fn on_start(&mut self) -> HandlerResult {
        self.timer_port.trigger(self.core_ticker.start());
        match self.role {
            Role::Joining => {
                info!(self.ctx.log(), "checking in with the bootstrap server"; "server" => %self.s.server,
                    "seeds" => ?self.s.seeds);
                self.check_in();
                self.timer_port.trigger(self.ticker.start());
            }
            Role::Server { .. } => {
                info!(self.ctx.log(), "bootstrap server waiting for nodes"; "threshold" => self.s.boot_threshold);
                self.maybe_boot();
                // A bootstrap server restarted after the cluster formed gets back in
                // through its seeds, like any restarted node.
                if !self.seeds.is_empty() && matches!(self.role, Role::Server { .. }) {
                    self.check_in();
                    self.timer_port.trigger(self.ticker.start());
                }
            }
            _ => {}
        }
        Handled::OK
    }

    fn on_stop(&mut self) -> HandlerResult {
        self.timer_port.trigger(self.ticker.stop());
        self.timer_port.trigger(self.core_ticker.stop());
        Handled::OK
    }
}

impl Provide<Bootstrapping> for Bootstrap {
    fn handle(&mut self, req: BootRequest) -> HandlerResult {
        match req {
            BootRequest::Submit(cmd) => {
                debug!(self.ctx.log(), "directory command submitted"; "command" => ?cmd);
                self.core.submit(cmd);
                self.flush_core();
            }
        }
        Handled::OK
    }
}

impl Require<EventuallyPerfectFailureDetector> for Bootstrap {
    fn handle(&mut self, ind: EpfdIndication) -> HandlerResult {
        match ind {
            EpfdIndication::Suspect(n) => self.core.suspect(n),
            EpfdIndication::Restore(n) => self.core.restore(n),
        }
        Handled::OK
    }
}

impl Require<PerfectLink> for Bootstrap {
    fn handle(&mut self, ind: PlIndication) -> HandlerResult {
        if let PlIndication::Deliver { src, payload } = ind {
            match &*payload {
                PlPayload::Bootstrap(msg) => self.on_msg(src, msg),
                PlPayload::Membership(msg) if !matches!(self.role, Role::Refused) => {
                    self.core.handle(src, msg.clone());
                    self.flush_core();
                }
                _ => {}
            }
        }
        Handled::OK
    }
}

impl Require<Timer> for Bootstrap {
    fn handle(&mut self, t: Timeout) -> HandlerResult {
        if self.core_ticker.is_mine(&t) {
            self.core.tick();
            self.flush_core();
        } else if self.ticker.is_mine(&t)
            && matches!(self.role, Role::Joining | Role::Server { .. })
        {
            self.unanswered += 1;
            if self.unanswered == SILENT_SERVER_WARNING {
                warn!(self.ctx.log(), "not a member yet: the bootstrap server may still wait for nodes, be down, or belong to another cluster (whose nodes drop our messages unanswered)";
                    "server" => %self.s.server, "check_ins" => self.unanswered, "cluster" => &self.s.cluster);
            }
            self.check_in();
        }
        Handled::OK
    }
}

impl Actor for Bootstrap {
    type Message = AdminAsk;

    fn receive_local(&mut self, ask: AdminAsk) -> HandlerResult {
        let result = match (&self.role, self.core.directory().cloned()) {
            (Role::Booted, Some(dir)) => {
                let down = self.core.suspected();
                let pending: Vec<DirCommand> = self.core.pending().cloned().collect();
                let (result, submit) = plan_admin(&dir, &ask.req.op, &down, &pending);
                info!(self.ctx.log(), "operator request"; "from" => %ask.src,
                    "op" => ?ask.req.op, "result" => ?result);
                for cmd in submit {
                    self.core.submit(cmd);
                }
                self.flush_core();
                result
            }
            _ => AdminResult::NotReady,
        };
        ask.reply_to.tell(AdminAnswer {
            dst: ask.src,
            reply: AdminReply {
                nonce: ask.req.nonce,
                result,
            },
        });
        Handled::OK
    }

    fn receive_network(&mut self, _msg: NetMessage) -> HandlerResult {
        Handled::OK
    }
}

// ---------------------------------------------------------------------------------
// Operator requests (`kvstore remove`, `kvstore rebalance`)

/// An operator's request that arrived from `src`, handed to the [`Bootstrap`]
/// component (which holds the membership core); the answer goes to `reply_to`.
#[derive(Debug)]
pub struct AdminAsk {
    /// Who asked (the answer's destination).
    pub src: NodeId,
    /// The request.
    pub req: AdminRequest,
    /// Where the answer goes.
    pub reply_to: Recipient<AdminAnswer>,
}

/// The answer to an [`AdminAsk`], to be sent to `dst`.
#[derive(Debug)]
pub struct AdminAnswer {
    /// The asker.
    pub dst: NodeId,
    /// The answer.
    pub reply: AdminReply,
}

/// The move a reconfiguration makes: the replica it drops and the one it adds.
fn move_of(dir: &Directory, cmd: &DirCommand) -> Option<ReplicaMove> {
    let DirCommand::Reconfigure {
        group,
        from_epoch,
        replicas,
    } = cmd
    else {
        return None;
    };
    let cfg = dir.group(*group)?;
    let from = cfg
        .replicas
        .iter()
        .find(|m| !replicas.iter().any(|r| r.addr == m.addr))?
        .addr;
    let to = replicas.iter().find(|r| !cfg.contains(r.addr))?.addr;
    Some(ReplicaMove {
        group: *group,
        from_epoch: *from_epoch,
        from,
        to,
    })
}

/// A submitted reconfiguration of the same group and epoch as `cmd`, if any: the
/// move already under way, which a new plan must not race.
fn pending_twin<'a>(cmd: &DirCommand, pending: &'a [DirCommand]) -> Option<&'a DirCommand> {
    let DirCommand::Reconfigure {
        group, from_epoch, ..
    } = cmd
    else {
        return None;
    };
    pending.iter().find(|p| {
        matches!(p, DirCommand::Reconfigure { group: g, from_epoch: e, .. }
            if g == group && e == from_epoch)
    })
}

/// Plans the next step of an operator's request from the node's directory, the
/// nodes its failure detector suspects (`down`) and the commands it submitted that
/// have not taken effect (`pending`): what to answer, and the commands to submit.
/// Pure, so it is tested without a component.
pub fn plan_admin(
    dir: &Directory,
    op: &AdminOp,
    down: &BTreeSet<NodeId>,
    pending: &[DirCommand],
) -> (AdminResult, Vec<DirCommand>) {
    let moves_for = |cmds: Vec<DirCommand>| {
        let mut moves = Vec::new();
        let mut submit = Vec::new();
        for cmd in cmds {
            let effective = match pending_twin(&cmd, pending) {
                Some(twin) => twin.clone(),
                None => {
                    submit.push(cmd.clone());
                    cmd
                }
            };
            if let Some(m) = move_of(dir, &effective) {
                moves.push(m);
            }
        }
        if moves.is_empty() {
            (
                AdminResult::Wait("the directory has not shown the last move yet".into()),
                submit,
            )
        } else {
            (AdminResult::Moving(moves), submit)
        }
    };
    match op {
        AdminOp::Remove(addr) => match dir.plan_removal(*addr, down) {
            Err(DirError::NotAMember(_)) => (AdminResult::NotAMember, Vec::new()),
            Err(e @ DirError::Unsettled(_)) => (AdminResult::Wait(e.to_string()), Vec::new()),
            Err(DirError::StillReplicates(gs)) => {
                let names: Vec<String> = gs.iter().map(|g| GroupName(*g).to_string()).collect();
                (
                    AdminResult::Refused(format!(
                        "no other live member can take its replica of {}",
                        names.join(", ")
                    )),
                    Vec::new(),
                )
            }
            Err(e) => (AdminResult::Refused(e.to_string()), Vec::new()),
            Ok(cmds) if cmds.iter().all(|c| matches!(c, DirCommand::Remove(_))) => {
                // Its former groups may still need it to end their previous epoch
                // and hand over the state: it leaves once they all moved on.
                let moving = dir.group_ids().find(|g| {
                    dir.group(*g)
                        .is_some_and(|c| !c.settled && c.previous.iter().any(|m| m.addr == *addr))
                });
                match moving {
                    Some(g) => (
                        AdminResult::Wait(DirError::Unsettled(g).to_string()),
                        Vec::new(),
                    ),
                    None => (AdminResult::Removing, cmds),
                }
            }
            Ok(cmds) => moves_for(cmds),
        },
        AdminOp::Rebalance => {
            let loads: Vec<usize> = dir
                .members()
                .iter()
                .filter(|m| !down.contains(&m.addr))
                .map(|m| dir.load(m.addr))
                .collect();
            let (Some(min), Some(max)) = (loads.iter().min(), loads.iter().max()) else {
                return (AdminResult::Refused("no member is live".into()), Vec::new());
            };
            if *max <= min + 1 {
                return (
                    AdminResult::Balanced {
                        min: *min as u64,
                        max: *max as u64,
                    },
                    Vec::new(),
                );
            }
            let unsettled = dir
                .group_ids()
                .find(|g| dir.group(*g).is_some_and(|c| !c.settled));
            if let Some(g) = unsettled {
                return (
                    AdminResult::Wait(DirError::Unsettled(g).to_string()),
                    Vec::new(),
                );
            }
            match dir.plan_rebalance(down) {
                Some(cmd) => moves_for(vec![cmd]),
                None => (
                    AdminResult::Refused(format!(
                        "live members hold {min} to {max} replicas, but no group can move \
                         from the most to the least loaded one"
                    )),
                    Vec::new(),
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kv_protocols::directory::DIRECTORY_GROUP;

    fn addr(i: u16) -> NodeId {
        format!("127.0.0.1:{}", 4000 + i).parse().unwrap()
    }

    fn member(i: u16) -> Member {
        Member {
            addr: addr(i),
            incarnation: 100 + u64::from(i),
        }
    }

    /// Three members holding one partition and the directory, and two spares.
    fn cluster() -> Directory {
        let mut d = Directory::seed(vec![member(1), member(2), member(3)], 1, 3).unwrap();
        d.apply(&DirCommand::Join(member(4)));
        d.apply(&DirCommand::Join(member(5)));
        d
    }

    #[test]
    fn remove_moves_every_replica_then_removes_the_member() {
        let mut d = cluster();
        let none = BTreeSet::new();
        let (r, cmds) = plan_admin(&d, &AdminOp::Remove(addr(1)), &none, &[]);
        let AdminResult::Moving(moves) = r else {
            panic!("{r:?}")
        };
        assert_eq!(moves.len(), 2, "partition 0 and the directory");
        assert!(moves.iter().all(|m| m.from == addr(1) && m.from_epoch == 0));
        assert!(moves.iter().any(|m| m.group == DIRECTORY_GROUP));
        // Asked again before the directory shows them: the same moves, nothing new.
        let (again, resubmit) = plan_admin(&d, &AdminOp::Remove(addr(1)), &none, &cmds);
        assert_eq!(again, AdminResult::Moving(moves.clone()));
        assert!(resubmit.is_empty());
        for c in &cmds {
            d.apply(c);
        }
        // Partition 0 has not decided its stop-sign yet.
        let (r, cmds) = plan_admin(&d, &AdminOp::Remove(addr(1)), &none, &[]);
        assert!(matches!(r, AdminResult::Wait(_)), "{r:?}");
        assert!(cmds.is_empty());
        d.apply(&DirCommand::Stopped { group: 0, epoch: 0 });
        let (r, cmds) = plan_admin(&d, &AdminOp::Remove(addr(1)), &none, &[]);
        assert_eq!(r, AdminResult::Removing);
        assert_eq!(cmds, vec![DirCommand::Remove(addr(1))]);
        d.apply(&cmds[0]);
        let (r, _) = plan_admin(&d, &AdminOp::Remove(addr(1)), &none, &[]);
        assert_eq!(r, AdminResult::NotAMember);
    }

    #[test]
    fn remove_without_a_live_member_to_take_over_is_refused() {
        let d = Directory::seed(vec![member(1), member(2), member(3)], 1, 3).unwrap();
        let (r, cmds) = plan_admin(&d, &AdminOp::Remove(addr(2)), &BTreeSet::new(), &[]);
        assert!(
            matches!(&r, AdminResult::Refused(why) if why.contains("partition 0")),
            "{r:?}"
        );
        assert!(cmds.is_empty());
        let (r, _) = plan_admin(&d, &AdminOp::Remove(addr(9)), &BTreeSet::new(), &[]);
        assert_eq!(r, AdminResult::NotAMember);
    }

    #[test]
    fn rebalance_moves_until_loads_differ_by_at_most_one() {
        let mut d = cluster();
        let none = BTreeSet::new();
        let mut steps = 0;
        loop {
            let (r, cmds) = plan_admin(&d, &AdminOp::Rebalance, &none, &[]);
            match r {
                AdminResult::Balanced { min, max } => {
                    assert!(max <= min + 1);
                    break;
                }
                AdminResult::Moving(moves) => {
                    assert_eq!(moves.len(), 1);
                    for c in &cmds {
                        d.apply(c);
                        if let DirCommand::Reconfigure {
                            group, from_epoch, ..
                        } = c
                            && *group != DIRECTORY_GROUP
                        {
                            d.apply(&DirCommand::Stopped {
                                group: *group,
                                epoch: *from_epoch,
                            });
                        }
                    }
                }
                other => panic!("{other:?}"),
            }
            steps += 1;
            assert!(steps < 10, "rebalance does not converge");
        }
        assert!(steps >= 1);
    }

    #[test]
    fn a_node_that_suspects_everyone_else_refuses_nothing_silently() {
        let d = cluster();
        let down: BTreeSet<NodeId> = [addr(2), addr(3), addr(4), addr(5)].into();
        let (r, cmds) = plan_admin(&d, &AdminOp::Remove(addr(1)), &down, &[]);
        assert!(matches!(r, AdminResult::Refused(_)), "{r:?}");
        assert!(cmds.is_empty());
    }
}
