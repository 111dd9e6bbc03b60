//! **Template OpsTest** (course scenario 5, from the course's own template): three
//! servers at 0, 1 and 2 s, and one client at 12 s sending GET `test0` ..= `test10`
//! at once; every operation is answered (`NotFound`: nothing was written).
//!
//! [`scenario_at`] starts the client at any time; the test starts it at the exact
//! instant the lookup table is installed, found from a first run with the same seed
//! (the run is deterministic, so the second run boots at the same instant).

use std::time::Duration;

use crate::scenario::{Scenario, secs};
use crate::sim::DelayModel;

/// The course's timing: the client at 12 s.
pub fn scenario(delay: DelayModel, seed: u64) -> Scenario {
    scenario_at(delay, seed, secs(12))
}

/// The client at `client_at`.
pub fn scenario_at(delay: DelayModel, seed: u64, client_at: Duration) -> Scenario {
    Scenario::new("template-ops")
        .seed(seed)
        .network(delay)
        .cluster(3, 1, 3)
        .start_nodes(secs(0), secs(1))
        .burst(client_at, 1, 1, super::ops::gets(10))
        .end_when_done(client_at + secs(60))
}
