//! The directory: the cluster's layout as a replicated state machine.
//!
//! After boot, who is a member and which nodes replicate which partition is not
//! fixed: nodes join, crashed replicas are replaced, an operator takes a node out or
//! spreads replicas after joins. All of that is state of its own, [`Directory`], kept
//! by a small Sequence Paxos group (the directory group) like any partition, so no
//! node is special once the cluster is formed. See `docs/membership.md`.
//!
//! # State
//!
//! * **Members**: every node, by address, with the *incarnation* its process drew at
//!   start. A process restarted at the same address is a new incarnation: an empty
//!   node that must not vote as its former self, so replicas recorded with the old
//!   incarnation count as lost.
//! * **Groups**: for every partition, and for the directory itself
//!   ([`DIRECTORY_GROUP`]), a [`GroupConfig`]: an epoch and the replicas (members with
//!   their incarnation) of that epoch.
//!
//! # Commands
//!
//! [`DirCommand`]s are decided in the directory's log and applied in order by
//! [`Directory::apply`], a pure function of the state and the command: every
//! directory replica reaches the same state and the same [`DirOutcome`].
//!
//! A [`DirCommand::Reconfigure`] of a partition records the configuration its next
//! epoch must have; the partition's own group then moves there by deciding a
//! stop-sign (its log is where the old epoch really ends), and a replica that decided
//! it reports [`DirCommand::Stopped`], which marks the group *settled*. A group is
//! reconfigured again only once settled, so only its current epoch and the one
//! before it can be running, and the directory keeps both configurations. A
//! reconfiguration of the directory group is itself the directory log's stop-sign
//! (see the [`LogEntry`] impl).
//!
//! # Policies
//!
//! [`Directory::plan_repair`], [`Directory::plan_removal`] and
//! [`Directory::plan_rebalance`] compute the next commands from the state and the
//! caller's knowledge of which members are down; they are pure too, so they are
//! tested here and the host only decides *when* to run them.
//!
//! # Snapshot format (version 1)
//!
//! All integers little-endian.
//!
//! ```text
//! magic        4 bytes  "KVDR"
//! version      u16      2
//! partitions   u32
//! replication  u32
//! changes      u64      number of state changes applied so far
//! n_members    u32      then n_members × (addr, incarnation u64), addresses increasing
//! groups       partitions + 1 × group (partition 0, 1, ..., then the directory):
//!                epoch u64, settled u8 (0 | 1),
//!                n u32, n × (addr, incarnation u64)   replicas, addresses increasing
//!                m u32, m × (addr, incarnation u64)   previous epoch's replicas
//! checksum     u64      FNV-1a 64 of every byte before it
//! addr         u8 family (4 | 6), 4 or 16 address bytes, u16 port
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::partition::{MAX_PARTITIONS, TableError, fnv1a};
use crate::sequence_paxos::LogEntry;
use crate::{NodeId, PartitionId};

/// The group id of the directory itself, next to partitions `0..partitions`.
pub const DIRECTORY_GROUP: PartitionId = u32::MAX;

/// The most members a directory accepts (a bound on state and message sizes).
pub const MAX_MEMBERS: usize = 4096;

/// One node process: its address and the incarnation it drew when it started.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Member {
    /// The address the node listens on (its identity across restarts).
    pub addr: NodeId,
    /// Random, drawn at process start: tells a restarted process from its former self.
    pub incarnation: u64,
}

/// The replicas of one group in one epoch, and of the epoch before it.
///
/// Invariant (for every config in a [`Directory`]): replicas sorted by address, no
/// address twice, at least one replica; `previous` sorted too, empty in epoch 0.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GroupConfig {
    /// The configuration's epoch: 0 at boot, one more at every reconfiguration.
    pub epoch: u64,
    /// The replicas.
    pub replicas: Vec<Member>,
    /// The replicas of epoch `epoch - 1` (empty in epoch 0): the nodes that hold the
    /// state this epoch starts from, once they decided their stop-sign.
    pub previous: Vec<Member>,
    /// Whether epoch `epoch - 1` is known to be over: one of its replicas decided the
    /// stop-sign ([`DirCommand::Stopped`]). Always true in epoch 0 and for the
    /// directory group. A group is only reconfigured again once settled, so at most
    /// two epochs of a group are ever live: the current one and the one it follows.
    pub settled: bool,
}

impl GroupConfig {
    /// Whether `addr` is a replica of this configuration (any incarnation).
    pub fn contains(&self, addr: NodeId) -> bool {
        self.replicas.iter().any(|m| m.addr == addr)
    }

    /// The replicas' addresses.
    pub fn addrs(&self) -> Vec<NodeId> {
        self.replicas.iter().map(|m| m.addr).collect()
    }
}

/// A change to the layout, decided in the directory's log.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum DirCommand {
    /// A node process wants to be a member. A new address is added; a known address
    /// with another incarnation replaces the old process (whose replicas are then
    /// lost and get repaired).
    Join(Member),
    /// Group `group` in epoch `from_epoch` moves to `replicas` in epoch
    /// `from_epoch + 1`. Refused if the group is no longer in `from_epoch`, so two
    /// planners racing on one state cannot both move a group. In the directory's
    /// own log it is the stop-sign, so a refused one still ends the directory's
    /// epoch (the same replicas go on in the next).
    Reconfigure {
        /// A partition, or [`DIRECTORY_GROUP`].
        group: PartitionId,
        /// The epoch the plan was made for.
        from_epoch: u64,
        /// The next configuration's replicas (sorted by address).
        replicas: Vec<Member>,
    },
    /// Take a member out. Refused while it still replicates a group.
    Remove(NodeId),
    /// A replica of `group` decided the stop-sign of `epoch`: that epoch is over,
    /// the state it ended with is available from the replicas that decided it, and
    /// the group may be reconfigured again.
    Stopped {
        /// A partition.
        group: PartitionId,
        /// The epoch that ended.
        epoch: u64,
    },
}

/// A directory reconfiguration ends the directory's configuration, so in the
/// directory's own log it is the stop-sign.
impl LogEntry for DirCommand {
    fn is_stop_sign(&self) -> bool {
        matches!(self, DirCommand::Reconfigure { group, .. } if *group == DIRECTORY_GROUP)
    }
    fn size_hint(&self) -> usize {
        match self {
            DirCommand::Reconfigure { replicas, .. } => 32 + 32 * replicas.len(),
            _ => 48,
        }
    }
}

/// What applying a command did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DirOutcome {
    /// A new member.
    Joined,
    /// A known address with a new incarnation; it holds no replicas as that process.
    Rejoined {
        /// The incarnation it replaced.
        previous: u64,
    },
    /// The member was already there with this incarnation (a retried join).
    AlreadyMember,
    /// The group's previous epoch is now known to be over.
    Settled,
    /// The stop-sign was already recorded (a retried report) or is for an epoch
    /// that is no longer the previous one.
    AlreadySettled,
    /// The group is now in `epoch`.
    Reconfigured {
        /// The new epoch.
        epoch: u64,
    },
    /// The member is gone.
    Removed,
    /// Nothing changed, and why.
    Refused(DirError),
}

/// Why a command changed nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DirError {
    /// The group is in another epoch than the command was planned for.
    StaleEpoch {
        /// The group.
        group: PartitionId,
        /// Its current epoch.
        current: u64,
    },
    /// No such partition.
    UnknownGroup(PartitionId),
    /// A proposed replica is not a member, or not with that incarnation.
    NotAMember(NodeId),
    /// The proposed configuration is empty or names an address twice.
    BadReplicaSet,
    /// The member still replicates these groups.
    StillReplicates(Vec<PartitionId>),
    /// The directory has [`MAX_MEMBERS`] members.
    Full,
    /// The group's previous epoch has not decided its stop-sign yet; it moves again
    /// once it has.
    Unsettled(PartitionId),
}

impl fmt::Display for DirError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DirError::StaleEpoch { group, current } => {
                write!(
                    f,
                    "group {} is already in epoch {current}",
                    GroupName(*group)
                )
            }
            DirError::UnknownGroup(g) => write!(f, "there is no partition {g}"),
            DirError::NotAMember(a) => {
                write!(f, "{a} is not a member (or not with that incarnation)")
            }
            DirError::BadReplicaSet => {
                f.write_str("a replica set must be non-empty with distinct addresses")
            }
            DirError::StillReplicates(gs) => {
                let names: Vec<String> = gs.iter().map(|g| GroupName(*g).to_string()).collect();
                write!(f, "the node still replicates {}", names.join(", "))
            }
            DirError::Full => write!(f, "the cluster has the maximum of {MAX_MEMBERS} members"),
            DirError::Unsettled(g) => write!(
                f,
                "{} is still moving to its current replicas; try again once it has",
                GroupName(*g)
            ),
        }
    }
}

impl std::error::Error for DirError {}

/// Displays a group id: `partition 3` or `the directory`.
#[derive(Clone, Copy, Debug)]
pub struct GroupName(pub PartitionId);

impl fmt::Display for GroupName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == DIRECTORY_GROUP {
            f.write_str("the directory")
        } else {
            write!(f, "partition {}", self.0)
        }
    }
}

/// The cluster's layout: members and the configuration of every group.
///
/// Invariant: every replica of every group is a member address (possibly with an
/// older incarnation than the member's current one: a lost replica waiting for
/// repair); `groups.len() == partitions`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Directory {
    partitions: u32,
    replication_degree: usize,
    /// Number of commands that changed the state (a version for dissemination).
    changes: u64,
    /// Member address → current incarnation.
    members: BTreeMap<NodeId, u64>,
    /// Partition `p` → its configuration.
    groups: Vec<GroupConfig>,
    /// The directory group's configuration.
    directory: GroupConfig,
}

impl Directory {
    /// The first layout, from the members the bootstrap server gathered: partition
    /// `p` on members `(p·R + i) mod N` (the lookup table's placement rule), the
    /// directory on the first `min(R, N)` members (an odd number), everything in
    /// epoch 0.
    pub fn seed(
        mut members: Vec<Member>,
        partitions: u32,
        replication_degree: usize,
    ) -> Result<Directory, TableError> {
        members.sort();
        members.dedup_by_key(|m| m.addr);
        let addrs: Vec<NodeId> = members.iter().map(|m| m.addr).collect();
        let table = crate::partition::LookupTable::build(addrs, partitions, replication_degree)?;
        let inc: BTreeMap<NodeId, u64> = members.iter().map(|m| (m.addr, m.incarnation)).collect();
        let config = |addrs: &[NodeId]| GroupConfig {
            epoch: 0,
            previous: Vec::new(),
            settled: true,
            replicas: addrs
                .iter()
                .map(|a| Member {
                    addr: *a,
                    incarnation: inc[a],
                })
                .collect::<BTreeSet<Member>>()
                .into_iter()
                .collect(),
        };
        let groups = table.groups.iter().map(|g| config(g)).collect();
        let dir_size = odd_at_most(replication_degree.min(members.len()));
        let directory = config(&table.nodes[..dir_size]);
        Ok(Directory {
            partitions,
            replication_degree,
            changes: 0,
            members: inc,
            groups,
            directory,
        })
    }

    /// Partitions of the key space.
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// Replicas each partition should have.
    pub fn replication_degree(&self) -> usize {
        self.replication_degree
    }

    /// Number of state changes applied so far: a newer directory has a larger one.
    pub fn version(&self) -> u64 {
        self.changes
    }

    /// The members, by address.
    pub fn members(&self) -> Vec<Member> {
        self.members
            .iter()
            .map(|(a, i)| Member {
                addr: *a,
                incarnation: *i,
            })
            .collect()
    }

    /// The current incarnation of the member at `addr`.
    pub fn incarnation(&self, addr: NodeId) -> Option<u64> {
        self.members.get(&addr).copied()
    }

    /// The configuration of a partition or of the directory.
    pub fn group(&self, group: PartitionId) -> Option<&GroupConfig> {
        if group == DIRECTORY_GROUP {
            Some(&self.directory)
        } else {
            self.groups.get(group as usize)
        }
    }

    /// Every group id: the partitions in order, then the directory.
    pub fn group_ids(&self) -> impl Iterator<Item = PartitionId> {
        (0..self.partitions).chain(std::iter::once(DIRECTORY_GROUP))
    }

    /// Whether `m` (address and incarnation) is a live replica slot: the member's
    /// current process.
    pub fn is_current(&self, m: &Member) -> bool {
        self.members.get(&m.addr) == Some(&m.incarnation)
    }

    /// The groups `addr`'s current process replicates.
    pub fn groups_of(&self, addr: NodeId) -> Vec<PartitionId> {
        self.group_ids()
            .filter(|g| {
                self.group(*g).is_some_and(|c| {
                    c.replicas
                        .iter()
                        .any(|m| m.addr == addr && self.is_current(m))
                })
            })
            .collect()
    }

    /// The number of replicas `addr`'s current process holds.
    pub fn load(&self, addr: NodeId) -> usize {
        self.groups_of(addr).len()
    }

    /// The routing view: every member, and each partition's replicas (by address).
    pub fn lookup_table(&self) -> crate::partition::LookupTable {
        crate::partition::LookupTable {
            partitions: self.partitions,
            replication_degree: self.replication_degree,
            nodes: self.members.keys().copied().collect(),
            groups: self.groups.iter().map(GroupConfig::addrs).collect(),
        }
    }

    /// Applies a decided command.
    pub fn apply(&mut self, cmd: &DirCommand) -> DirOutcome {
        let outcome = match cmd {
            DirCommand::Join(m) => self.apply_join(*m),
            DirCommand::Reconfigure {
                group,
                from_epoch,
                replicas,
            } => self.apply_reconfigure(*group, *from_epoch, replicas),
            DirCommand::Remove(addr) => self.apply_remove(*addr),
            DirCommand::Stopped { group, epoch } => self.apply_stopped(*group, *epoch),
        };
        if !matches!(
            outcome,
            DirOutcome::Refused(_) | DirOutcome::AlreadyMember | DirOutcome::AlreadySettled
        ) {
            self.changes += 1;
        }
        outcome
    }

    fn apply_join(&mut self, m: Member) -> DirOutcome {
        match self.members.get(&m.addr).copied() {
            Some(i) if i == m.incarnation => DirOutcome::AlreadyMember,
            Some(previous) => {
                self.members.insert(m.addr, m.incarnation);
                DirOutcome::Rejoined { previous }
            }
            None if self.members.len() >= MAX_MEMBERS => DirOutcome::Refused(DirError::Full),
            None => {
                self.members.insert(m.addr, m.incarnation);
                DirOutcome::Joined
            }
        }
    }

    fn apply_reconfigure(
        &mut self,
        group: PartitionId,
        from_epoch: u64,
        replicas: &[Member],
    ) -> DirOutcome {
        let valid = self.check_replicas(replicas);
        let is_dir = group == DIRECTORY_GROUP;
        let Some(cfg) = (if is_dir {
            Some(&mut self.directory)
        } else {
            self.groups.get_mut(group as usize)
        }) else {
            return DirOutcome::Refused(DirError::UnknownGroup(group));
        };
        let checked = if cfg.epoch != from_epoch {
            Err(DirError::StaleEpoch {
                group,
                current: cfg.epoch,
            })
        } else if !cfg.settled {
            Err(DirError::Unsettled(group))
        } else {
            valid
        };
        match checked {
            Ok(()) => {
                cfg.epoch += 1;
                cfg.previous = std::mem::replace(&mut cfg.replicas, replicas.to_vec());
                // The directory group's stop-sign is the command itself.
                cfg.settled = is_dir;
                DirOutcome::Reconfigured { epoch: cfg.epoch }
            }
            Err(e) if is_dir => {
                // The directory's reconfiguration is its log's stop-sign: the old
                // instance is over whatever the command says (replicas that cannot
                // serve, or an epoch already left: a request sent again after its
                // move), so the same replicas go on in the next epoch. Refusing
                // without a new epoch would leave a stopped instance that no
                // epoch follows, and the directory could decide nothing more.
                cfg.epoch += 1;
                cfg.previous = cfg.replicas.clone();
                DirOutcome::Refused(e)
            }
            Err(e) => DirOutcome::Refused(e),
        }
    }

    /// Whether `replicas` can be a group's next configuration: a non-empty set,
    /// sorted by address without repeats, of current members.
    pub fn check_replicas(&self, replicas: &[Member]) -> Result<(), DirError> {
        if replicas.is_empty() || !replicas.windows(2).all(|w| w[0].addr < w[1].addr) {
            return Err(DirError::BadReplicaSet);
        }
        match replicas.iter().find(|m| !self.is_current(m)) {
            Some(m) => Err(DirError::NotAMember(m.addr)),
            None => Ok(()),
        }
    }

    fn apply_stopped(&mut self, group: PartitionId, epoch: u64) -> DirOutcome {
        let Some(cfg) = self.groups.get_mut(group as usize) else {
            return DirOutcome::Refused(DirError::UnknownGroup(group));
        };
        if cfg.settled || cfg.epoch != epoch + 1 {
            return DirOutcome::AlreadySettled;
        }
        cfg.settled = true;
        DirOutcome::Settled
    }

    fn apply_remove(&mut self, addr: NodeId) -> DirOutcome {
        if !self.members.contains_key(&addr) {
            return DirOutcome::Refused(DirError::NotAMember(addr));
        }
        // Any slot at this address counts, whatever its incarnation: a lost replica
        // is still a slot to repair first.
        let held: Vec<PartitionId> = self
            .group_ids()
            .filter(|g| self.group(*g).is_some_and(|c| c.contains(addr)))
            .collect();
        if !held.is_empty() {
            return DirOutcome::Refused(DirError::StillReplicates(held));
        }
        self.members.remove(&addr);
        DirOutcome::Removed
    }

    /// Whether a replica slot is lost: its process is gone (another incarnation, or
    /// no longer a member) or its node is in `down`.
    fn is_lost(&self, m: &Member, down: &BTreeSet<NodeId>) -> bool {
        !self.is_current(m) || down.contains(&m.addr)
    }

    /// `cfg` with `out` replaced by `new`, sorted by address.
    fn swap(cfg: &GroupConfig, out: &Member, new: Member) -> Vec<Member> {
        let mut v: Vec<Member> = cfg.replicas.iter().filter(|m| *m != out).copied().collect();
        v.push(new);
        v.sort_by_key(|m| m.addr);
        v
    }

    /// One reconfiguration per group that has a lost replica (see `is_lost`): the
    /// first lost replica is replaced by the live member outside the group with the
    /// fewest replicas. A group is only moved while a majority of it is live, since
    /// that majority must decide the stop-sign; groups with no candidate stay as
    /// they are. The directory group comes first.
    pub fn plan_repair(&self, down: &BTreeSet<NodeId>) -> Vec<DirCommand> {
        let mut plans = Vec::new();
        let order = std::iter::once(DIRECTORY_GROUP).chain(0..self.partitions);
        // Replicas already given in this plan count towards the load, so one pass
        // spreads the lost replicas of several groups instead of piling them up.
        let mut planned: BTreeMap<NodeId, usize> = BTreeMap::new();
        for g in order {
            let Some(cfg) = self.group(g) else { continue };
            if !cfg.settled {
                continue; // still moving; planned again once settled
            }
            let lost: Vec<&Member> = cfg
                .replicas
                .iter()
                .filter(|m| self.is_lost(m, down))
                .collect();
            let Some(out) = lost.first() else { continue };
            let live = cfg.replicas.len() - lost.len();
            if live * 2 <= cfg.replicas.len() {
                continue; // no majority to decide the stop-sign
            }
            // A live member outside the group; the lost slot's own address may come
            // back as its new process.
            let candidate = self
                .members()
                .into_iter()
                .filter(|m| !down.contains(&m.addr))
                .filter(|m| !cfg.contains(m.addr) || m.addr == out.addr)
                .min_by_key(|m| {
                    (
                        self.load(m.addr) + planned.get(&m.addr).copied().unwrap_or(0),
                        m.addr,
                    )
                });
            let Some(new) = candidate else { continue };
            *planned.entry(new.addr).or_default() += 1;
            plans.push(DirCommand::Reconfigure {
                group: g,
                from_epoch: cfg.epoch,
                replicas: Self::swap(cfg, out, new),
            });
        }
        plans
    }

    /// The next step of taking `addr` out: a reconfiguration that moves one of its
    /// replicas (one per group) to the least loaded other live member, or, once it
    /// holds none, [`DirCommand::Remove`]. `Err` if `addr` is not a member or no
    /// other member can take a replica.
    pub fn plan_removal(
        &self,
        addr: NodeId,
        down: &BTreeSet<NodeId>,
    ) -> Result<Vec<DirCommand>, DirError> {
        if !self.members.contains_key(&addr) {
            return Err(DirError::NotAMember(addr));
        }
        let mut plans = Vec::new();
        let mut stuck = Vec::new();
        // Replicas already given in this plan count towards the load, so the moves
        // of one removal spread over the other members instead of piling up.
        let mut planned: BTreeMap<NodeId, usize> = BTreeMap::new();
        for g in self.group_ids() {
            let Some(cfg) = self.group(g) else { continue };
            let Some(out) = cfg.replicas.iter().find(|m| m.addr == addr) else {
                continue;
            };
            if !cfg.settled {
                return Err(DirError::Unsettled(g));
            }
            let new = self
                .members()
                .into_iter()
                .filter(|m| !down.contains(&m.addr) && m.addr != addr)
                .filter(|m| !cfg.contains(m.addr))
                .min_by_key(|m| {
                    (
                        self.load(m.addr) + planned.get(&m.addr).copied().unwrap_or(0),
                        m.addr,
                    )
                });
            match new {
                Some(new) => {
                    *planned.entry(new.addr).or_default() += 1;
                    plans.push(DirCommand::Reconfigure {
                        group: g,
                        from_epoch: cfg.epoch,
                        replicas: Self::swap(cfg, out, new),
                    });
                }
                _ => stuck.push(g),
            }
        }
        if !stuck.is_empty() {
            return Err(DirError::StillReplicates(stuck));
        }
        if plans.is_empty() {
            plans.push(DirCommand::Remove(addr));
        }
        Ok(plans)
    }

    /// One move that evens out the replicas per live member: from the most loaded
    /// member to the least loaded one, in the first group (directory first) that has
    /// the first but not the second. `None` once every live member's load is within
    /// one of every other's.
    pub fn plan_rebalance(&self, down: &BTreeSet<NodeId>) -> Option<DirCommand> {
        let live: Vec<Member> = self
            .members()
            .into_iter()
            .filter(|m| !down.contains(&m.addr))
            .collect();
        let min = live.iter().min_by_key(|m| (self.load(m.addr), m.addr))?;
        let max = live
            .iter()
            .max_by_key(|m| (self.load(m.addr), std::cmp::Reverse(m.addr)))?;
        if self.load(max.addr) <= self.load(min.addr) + 1 {
            return None;
        }
        std::iter::once(DIRECTORY_GROUP)
            .chain(0..self.partitions)
            .find_map(|g| {
                let cfg = self.group(g).filter(|c| c.settled)?;
                let out = cfg.replicas.iter().find(|m| **m == *max)?;
                if cfg.contains(min.addr) {
                    return None;
                }
                Some(DirCommand::Reconfigure {
                    group: g,
                    from_epoch: cfg.epoch,
                    replicas: Self::swap(cfg, out, *min),
                })
            })
    }

    /// The state as bytes (see the module docs for the format).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Vec::new();
        w.extend_from_slice(MAGIC);
        w.extend_from_slice(&VERSION.to_le_bytes());
        w.extend_from_slice(&self.partitions.to_le_bytes());
        w.extend_from_slice(&(self.replication_degree as u32).to_le_bytes());
        w.extend_from_slice(&self.changes.to_le_bytes());
        w.extend_from_slice(&(self.members.len() as u32).to_le_bytes());
        for (a, i) in &self.members {
            put_addr(&mut w, *a);
            w.extend_from_slice(&i.to_le_bytes());
        }
        for cfg in self.groups.iter().chain(std::iter::once(&self.directory)) {
            w.extend_from_slice(&cfg.epoch.to_le_bytes());
            w.push(u8::from(cfg.settled));
            for set in [&cfg.replicas, &cfg.previous] {
                w.extend_from_slice(&(set.len() as u32).to_le_bytes());
                for m in set {
                    put_addr(&mut w, m.addr);
                    w.extend_from_slice(&m.incarnation.to_le_bytes());
                }
            }
        }
        let sum = fnv1a(&w);
        w.extend_from_slice(&sum.to_le_bytes());
        w
    }

    /// Decodes and validates a state written by [`Directory::encode`]; never panics,
    /// never allocates more than the input justifies.
    pub fn decode(bytes: &[u8]) -> Result<Directory, DirDecodeError> {
        if bytes.len() < MAGIC.len() + 2 + 8 {
            return Err(DirDecodeError::Truncated("header"));
        }
        if &bytes[..4] != MAGIC {
            return Err(DirDecodeError::BadMagic);
        }
        let (body, sum) = bytes.split_at(bytes.len() - 8);
        let mut sb = [0u8; 8];
        sb.copy_from_slice(sum);
        if fnv1a(body) != u64::from_le_bytes(sb) {
            return Err(DirDecodeError::ChecksumMismatch);
        }
        let mut r = Cursor { buf: body, pos: 4 };
        let version = r.u16("version")?;
        if version != VERSION {
            return Err(DirDecodeError::UnsupportedVersion(version));
        }
        let partitions = r.u32("partitions")?;
        if partitions == 0 || partitions > MAX_PARTITIONS {
            return Err(DirDecodeError::Invalid("partition count"));
        }
        let replication_degree = r.u32("replication degree")? as usize;
        let changes = r.u64("changes")?;
        let n_members = r.u32("member count")? as usize;
        if n_members > MAX_MEMBERS || n_members == 0 {
            return Err(DirDecodeError::Invalid("member count"));
        }
        let mut members = BTreeMap::new();
        let mut last = None;
        for _ in 0..n_members {
            let a = r.addr("member address")?;
            let i = r.u64("member incarnation")?;
            if last.is_some_and(|l| l >= a) {
                return Err(DirDecodeError::Invalid("members not sorted"));
            }
            last = Some(a);
            members.insert(a, i);
        }
        let mut configs = Vec::new();
        for _ in 0..=partitions {
            let epoch = r.u64("group epoch")?;
            let settled = match r.u8("settled flag")? {
                0 => false,
                1 => true,
                _ => return Err(DirDecodeError::Invalid("settled flag")),
            };
            let replicas = r.members(n_members, Some(&members), "replica")?;
            if replicas.is_empty() {
                return Err(DirDecodeError::Invalid("replica count"));
            }
            // Previous replicas may have left the cluster since.
            let previous = r.members(MAX_MEMBERS, None, "previous replica")?;
            if epoch == 0 && !(previous.is_empty() && settled) {
                return Err(DirDecodeError::Invalid("epoch 0 with a previous epoch"));
            }
            configs.push(GroupConfig {
                epoch,
                replicas,
                previous,
                settled,
            });
        }
        if r.pos != body.len() {
            return Err(DirDecodeError::TrailingBytes(body.len() - r.pos));
        }
        let directory = configs.pop().ok_or(DirDecodeError::Invalid("groups"))?;
        Ok(Directory {
            partitions,
            replication_degree,
            changes,
            members,
            groups: configs,
            directory,
        })
    }
}

/// The largest odd number `<= n` (at least 1).
fn odd_at_most(n: usize) -> usize {
    if n <= 1 {
        1
    } else if n.is_multiple_of(2) {
        n - 1
    } else {
        n
    }
}

const MAGIC: &[u8; 4] = b"KVDR";
const VERSION: u16 = 2;

fn put_addr(w: &mut Vec<u8>, a: SocketAddr) {
    match a.ip() {
        IpAddr::V4(ip) => {
            w.push(4);
            w.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            w.push(6);
            w.extend_from_slice(&ip.octets());
        }
    }
    w.extend_from_slice(&a.port().to_le_bytes());
}

/// Why bytes are not a directory state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DirDecodeError {
    /// The input ended inside the named field.
    Truncated(&'static str),
    /// Not a directory state.
    BadMagic,
    /// A format version this build does not know.
    UnsupportedVersion(u16),
    /// The checksum does not match.
    ChecksumMismatch,
    /// A field holds an impossible value.
    Invalid(&'static str),
    /// Bytes after the last group.
    TrailingBytes(usize),
}

impl fmt::Display for DirDecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DirDecodeError::Truncated(w) => write!(f, "directory state truncated in the {w}"),
            DirDecodeError::BadMagic => f.write_str("not a directory state (bad magic)"),
            DirDecodeError::UnsupportedVersion(v) => {
                write!(f, "directory state format version {v} is not supported")
            }
            DirDecodeError::ChecksumMismatch => f.write_str("directory state checksum mismatch"),
            DirDecodeError::Invalid(w) => write!(f, "invalid directory state: {w}"),
            DirDecodeError::TrailingBytes(n) => {
                write!(f, "{n} bytes after the end of the directory state")
            }
        }
    }
}

impl std::error::Error for DirDecodeError {}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    /// A count then that many (address, incarnation), addresses increasing, at
    /// most `max`, each in `members` when given.
    fn members(
        &mut self,
        max: usize,
        members: Option<&BTreeMap<NodeId, u64>>,
        what: &'static str,
    ) -> Result<Vec<Member>, DirDecodeError> {
        let n = self.u32(what)? as usize;
        if n > max {
            return Err(DirDecodeError::Invalid(what));
        }
        let mut out: Vec<Member> = Vec::with_capacity(n.min(self.buf.len() / 8));
        for _ in 0..n {
            let addr = self.addr(what)?;
            let incarnation = self.u64(what)?;
            if members.is_some_and(|ms| !ms.contains_key(&addr)) {
                return Err(DirDecodeError::Invalid("replica is not a member"));
            }
            if out.last().is_some_and(|l| l.addr >= addr) {
                return Err(DirDecodeError::Invalid("replicas not sorted"));
            }
            out.push(Member { addr, incarnation });
        }
        Ok(out)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, DirDecodeError> {
        Ok(self.take(1, what)?[0])
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&[u8], DirDecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or(DirDecodeError::Truncated(what))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, DirDecodeError> {
        let mut b = [0u8; 2];
        b.copy_from_slice(self.take(2, what)?);
        Ok(u16::from_le_bytes(b))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, DirDecodeError> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4, what)?);
        Ok(u32::from_le_bytes(b))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, DirDecodeError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8, what)?);
        Ok(u64::from_le_bytes(b))
    }

    fn addr(&mut self, what: &'static str) -> Result<SocketAddr, DirDecodeError> {
        let ip = match self.take(1, what)?[0] {
            4 => {
                let mut b = [0u8; 4];
                b.copy_from_slice(self.take(4, what)?);
                IpAddr::V4(Ipv4Addr::from(b))
            }
            6 => {
                let mut b = [0u8; 16];
                b.copy_from_slice(self.take(16, what)?);
                IpAddr::V6(Ipv6Addr::from(b))
            }
            _ => return Err(DirDecodeError::Invalid("address family")),
        };
        Ok(SocketAddr::new(ip, self.u16(what)?))
    }
}
