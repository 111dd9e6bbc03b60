//! **Healing** (course style): a replication group that loses replicas one at a
//! time gets them back, so it outlives more crashes than it has replicas.
//!
//! [`spares_outlive_four_crashes`]: servers 1–3 form a cluster of one partition with
//! three replicas; servers 4 and 5 start at 3 s and join as spares. Client 1 writes
//! `test0` ..= `test100` at 6 s. Then four crashes come one at a time, each after the
//! cluster had time to heal from the one before (`membership.replace-after` is
//! 1 s): server 1 (the bootstrap server, a replica of the partition and of the
//! directory) at 10 s, server 2 at 18 s, server 3 at 26 s, and at 34 s the
//! partition's leader of the moment. A crashed server is
//! started again as a new process 5 s after its crash (it joins as an empty spare).
//! Every crash takes out a replica of the group, so four crashes are more than a
//! group of three could ever survive without repair. Client 2, contacting any live
//! server, reads every key at 42 s: each must hold the value written before the
//! crashes.

use crate::scenario::{ANY_LIVE, Scenario, ms, secs};
use crate::sim::DelayModel;

/// `membership.replace-after` of the servers.
pub const REPLACE_AFTER_SECS: u64 = 1;

/// See the module docs.
pub fn spares_outlive_four_crashes(delay: DelayModel, seed: u64) -> Scenario {
    Scenario::new("healing-spares-outlive-four-crashes")
        .seed(seed)
        .network(delay)
        .cluster(5, 1, 3)
        .boot_threshold(3)
        .with_seeds()
        .replace_after(secs(REPLACE_AFTER_SECS))
        .start_node(ms(0), 1)
        .start_node(ms(100), 2)
        .start_node(ms(200), 3)
        .start_node(secs(3), 4)
        .start_node(secs(3), 5)
        .burst(secs(6), 1, 2, super::ops::prefill_ops())
        .kill(secs(10), 1)
        .restart(secs(15), 1)
        .kill(secs(18), 2)
        .restart(secs(23), 2)
        .kill(secs(26), 3)
        .restart(secs(31), 3)
        .kill_leader(secs(34), 0)
        .burst(secs(42), 2, ANY_LIVE, super::ops::gets(100))
        .end_when_done(secs(100))
}
