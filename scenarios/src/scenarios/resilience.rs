//! **ResilienceTest** (course scenario 3): a replication group of three survives one
//! crash and refuses to answer, rather than answer wrongly, after two.
//!
//! - [`one_crash`] (course 3a): server 1, the bootstrap server, is killed at 22 s; a
//!   client contacting server 2 at 82 s reads `test0` ..= `test100`: all answered
//!   with the prefilled values.
//! - [`leader_crash_under_load`]: the *current leader* is killed while ten
//!   closed-loop sessions run; every operation still completes (none times out).
//! - [`restarted_bootstrap_server`]: server 1, the bootstrap server, is killed at
//!   22 s and started again at its address at once (a new incarnation, as a user
//!   restarting it would); it rejoins through its seeds as a member without its
//!   former replica, and a client contacting it at 82 s reads everything through
//!   the two surviving replicas.
//! - [`lagging_replica`]: server 3 is cut off while 101 writes go through servers
//!   1 and 2, whose logs keep only 40 entries; after the cut heals, server 3 can
//!   only catch up from a snapshot, which (like every replication message above
//!   700 bytes here) it pulls in chunks. Then server 1 is killed, so nothing is
//!   decided without server 3, and a client contacting server 3 reads every value.
//! - [`two_crashes`] (course 3b): servers 1 and 2 are killed at 22 s and 23 s; a
//!   client starts at 83 s contacting `contact` (the course: the dead server 2) and
//!   reads: no operation is answered, and none wrongly.

use kv_ports::KvOp;

use crate::scenario::{ANY_LIVE, Scenario, ms, secs};
use crate::sim::DelayModel;
use crate::workload::{ClosedLoop, Mix, Plan};

/// Course 3a.
pub fn one_crash(delay: DelayModel, seed: u64) -> Scenario {
    Scenario::new("resilience-one-crash")
        .seed(seed)
        .network(delay)
        .cluster(3, 1, 3)
        .start_nodes(secs(0), secs(1))
        .burst(secs(10), 1, 1, super::ops::prefill_ops())
        .kill(secs(22), 1)
        .burst(secs(82), 2, 2, super::ops::gets(100))
        .end_when_done(secs(142))
}

/// Course 3a with a restart instead of a crash; see the module docs.
pub fn restarted_bootstrap_server(delay: DelayModel, seed: u64) -> Scenario {
    Scenario::new("resilience-restarted-bootstrap-server")
        .seed(seed)
        .network(delay)
        .cluster(3, 1, 3)
        .with_seeds()
        .start_nodes(secs(0), secs(1))
        .burst(secs(10), 1, 1, super::ops::prefill_ops())
        .restart(secs(22), 1)
        .burst(secs(82), 2, 1, super::ops::gets(100))
        .end_when_done(secs(142))
}

/// See the module docs.
pub fn lagging_replica(delay: DelayModel, seed: u64) -> Scenario {
    Scenario::new("resilience-lagging-replica")
        .seed(seed)
        .network(delay)
        .cluster(3, 1, 3)
        .snapshot_interval(20)
        .max_message_bytes(700)
        .start_nodes(secs(0), secs(1))
        .partition(secs(8), vec![vec![1, 2], vec![3]])
        .burst(secs(10), 1, 1, super::ops::prefill_ops())
        .heal(secs(30))
        .kill(secs(40), 1)
        .burst(secs(50), 2, 3, super::ops::gets(100))
        .end_when_done(secs(110))
}

/// The key space of the load in [`leader_crash_under_load`].
pub fn load_keys() -> Vec<String> {
    (0..5).map(|i| format!("k{i}")).collect()
}

/// The leader of the only partition crashes at 21 s while ten sessions (client 2)
/// run 40 operations each on five keys; client 3, contacting a live server, reads
/// everything at 60 s.
pub fn leader_crash_under_load(delay: DelayModel, seed: u64) -> Scenario {
    let sessions = (0..10)
        .map(|s| {
            Plan::ClosedLoop(ClosedLoop {
                ops: 40,
                keys: load_keys(),
                mix: Mix::default(),
                seed: seed ^ ((s as u64 + 1) * 0x9e37_79b9),
                think: ms(20),
            })
        })
        .collect();
    let reads = load_keys()
        .into_iter()
        .map(|key| Plan::Burst(vec![KvOp::Get { key }]))
        .collect();
    Scenario::new("resilience-leader-crash")
        .seed(seed)
        .network(delay)
        .cluster(3, 1, 3)
        .start_nodes(secs(0), secs(1))
        .client(secs(20), 2, 3, sessions)
        .kill_leader(secs(21), 0)
        .client(secs(60), 3, ANY_LIVE, reads)
        .end_when_done(secs(120))
}

/// Course 3b; `contact` is the server the reading client knows (2 in the course).
pub fn two_crashes(delay: DelayModel, seed: u64, contact: usize) -> Scenario {
    Scenario::new("resilience-two-crashes")
        .seed(seed)
        .network(delay)
        .cluster(3, 1, 3)
        .start_nodes(secs(0), secs(1))
        .burst(secs(10), 1, 1, super::ops::prefill_ops())
        .kill(secs(22), 1)
        .kill(secs(23), 2)
        .burst(secs(83), 2, contact, super::ops::gets(100))
        .end_when_done(secs(143))
}
