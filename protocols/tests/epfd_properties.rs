//! The EPFD's two properties, checked on a seeded simulated network: strong
//! completeness (a crashed node is eventually suspected by every correct node,
//! forever) and eventual strong accuracy (eventually no correct node is suspected
//! by a correct node). Links are perfect but have random delays.

use std::collections::{BTreeMap, BTreeSet};

use kv_protocols::NodeId;
use kv_protocols::epfd::{Epfd, EpfdConfig, EpfdEvent, EpfdMsg};
use kv_protocols::rng::SplitMix64;

fn node(i: u8) -> NodeId {
    NodeId::from(([10, 0, 0, i], 4000))
}

const INITIAL_DELAY: u64 = 4;
const INCREMENT: u64 = 3;

/// One detector per node on a network with per-link random delays, on virtual
/// time; deterministic for a given seed.
struct Sim {
    rng: SplitMix64,
    now: u64,
    fds: BTreeMap<NodeId, Epfd>,
    crashed: BTreeSet<NodeId>,
    /// Nodes whose links (both directions) are slow.
    slow: BTreeSet<NodeId>,
    /// `(deliver_at, send order) -> (from, to, msg)`.
    in_flight: BTreeMap<(u64, u64), (NodeId, NodeId, EpfdMsg)>,
    sent: u64,
    /// Every event, per observer: `(tick, event)`.
    log: BTreeMap<NodeId, Vec<(u64, EpfdEvent)>>,
}

impl Sim {
    fn new(seed: u64, n: u8) -> Self {
        let all: Vec<NodeId> = (1..=n).map(node).collect();
        let fds = all
            .iter()
            .map(|&me| {
                let cfg = EpfdConfig {
                    me,
                    nodes: all.clone(),
                    initial_delay_ticks: INITIAL_DELAY,
                    delay_increment_ticks: INCREMENT,
                };
                (me, Epfd::new(cfg))
            })
            .collect();
        Sim {
            rng: SplitMix64::new(seed),
            now: 0,
            fds,
            crashed: BTreeSet::new(),
            slow: BTreeSet::new(),
            in_flight: BTreeMap::new(),
            sent: 0,
            log: BTreeMap::new(),
        }
    }

    /// One-way delay of a message, in ticks.
    fn delay(&mut self, from: NodeId, to: NodeId) -> u64 {
        if self.slow.contains(&from) || self.slow.contains(&to) {
            self.rng.range_inclusive(12, 18)
        } else {
            self.rng.range_inclusive(0, 2)
        }
    }

    fn step(&mut self) {
        self.now += 1;
        while let Some(entry) = self.in_flight.first_entry() {
            if entry.key().0 > self.now {
                break;
            }
            let (from, to, msg) = entry.remove();
            if self.crashed.contains(&to) {
                continue;
            }
            if let Some(fd) = self.fds.get_mut(&to) {
                fd.handle(from, msg);
            }
        }
        let mut out = Vec::new();
        let mut events = Vec::new();
        let ids: Vec<NodeId> = self.fds.keys().copied().collect();
        for id in ids {
            if self.crashed.contains(&id) {
                continue;
            }
            let Some(fd) = self.fds.get_mut(&id) else {
                continue;
            };
            fd.tick();
            out.clear();
            events.clear();
            fd.take_outgoing(&mut out);
            fd.take_events(&mut events);
            let now = self.now;
            self.log
                .entry(id)
                .or_default()
                .extend(events.iter().map(|e| (now, *e)));
            for (to, msg) in out.drain(..) {
                let at = self.now + self.delay(id, to);
                self.sent += 1;
                self.in_flight.insert((at, self.sent), (id, to, msg));
            }
        }
    }

    fn run(&mut self, ticks: u64) {
        for _ in 0..ticks {
            self.step();
        }
    }

    fn correct(&self) -> Vec<NodeId> {
        self.fds
            .keys()
            .filter(|n| !self.crashed.contains(n))
            .copied()
            .collect()
    }

    fn fd(&self, n: NodeId) -> &Epfd {
        &self.fds[&n]
    }
}

#[test]
fn strong_completeness_a_crashed_node_is_suspected_within_two_rounds_and_forever() {
    for seed in 1..=20 {
        let mut sim = Sim::new(seed, 5);
        sim.run(100 + seed); // crash at different points of a round
        let victim = node(3);
        let delays: BTreeMap<NodeId, u64> = sim
            .correct()
            .into_iter()
            .map(|n| (n, sim.fd(n).delay_ticks()))
            .collect();
        let crash_at = sim.now;
        sim.crashed.insert(victim);
        let max_delay = delays.values().copied().max().unwrap_or(0);
        sim.run(2 * max_delay);
        for n in sim.correct() {
            assert!(
                sim.fd(n).is_suspected(victim),
                "seed {seed}: {n} does not suspect the crashed node within two rounds"
            );
            let suspected_at = sim.log[&n]
                .iter()
                .rev()
                .find(|(_, e)| *e == EpfdEvent::Suspect(victim))
                .map(|(t, _)| *t);
            let limit = crash_at + 2 * delays[&n];
            assert!(
                suspected_at.is_some_and(|t| t <= limit),
                "seed {seed}: {n} suspected at {suspected_at:?}, limit {limit}"
            );
        }
        sim.run(1000);
        for n in sim.correct() {
            assert!(
                sim.fd(n).is_suspected(victim),
                "seed {seed}: restored a crashed node"
            );
            let restored_after_crash = sim.log[&n]
                .iter()
                .any(|(t, e)| *t > crash_at && *e == EpfdEvent::Restore(victim));
            assert!(
                !restored_after_crash,
                "seed {seed}: {n} restored a crashed node"
            );
        }
    }
}

/// The longest round trip through a slow link: 2 × 18 ticks.
const MAX_SLOW_RTT: u64 = 36;

#[test]
fn eventual_strong_accuracy_a_slow_node_is_restored_and_the_delay_grows_until_it_fits() {
    for seed in 1..=20 {
        let mut sim = Sim::new(seed, 4);
        let slow = node(4);
        sim.slow.insert(slow);
        // A round longer than the slowest round trip can never end before the
        // reply arrives, so false suspicions stop once every delay is above it.
        // Below it they keep happening (with random delays), so this is reached.
        while sim
            .correct()
            .iter()
            .any(|&n| sim.fd(n).delay_ticks() <= MAX_SLOW_RTT)
        {
            assert!(sim.now < 100_000, "seed {seed}: delays stopped growing");
            sim.step();
        }
        let stable_at = sim.now;
        sim.run(3000);
        for n in sim.correct() {
            let fd = sim.fd(n);
            let log = sim.log.get(&n).cloned().unwrap_or_default();
            // Nobody is suspected any more, and after one more round nobody was.
            assert!(fd.suspected().is_empty(), "seed {seed}: {n} still suspects");
            let late = log.iter().find(|(t, e)| {
                *t > stable_at + MAX_SLOW_RTT + INCREMENT && matches!(e, EpfdEvent::Suspect(_))
            });
            assert_eq!(late, None, "seed {seed}: {n} suspected a correct node");
            // Each false suspicion was undone, and every round that found one
            // grew the delay by one increment, and nothing else did.
            let mistake_rounds: BTreeSet<u64> = log
                .iter()
                .filter(|(_, e)| matches!(e, EpfdEvent::Restore(_)))
                .map(|(t, _)| *t)
                .collect();
            assert!(
                !mistake_rounds.is_empty(),
                "seed {seed}: the test is too gentle"
            );
            assert_eq!(
                fd.delay_ticks(),
                INITIAL_DELAY + INCREMENT * mistake_rounds.len() as u64,
                "seed {seed}: {n}"
            );
            // The delay grows only as far as needed: the round that lifts it above
            // the round trip may also suspect another node, restored (one more
            // increment) in the next round; after that no round finds a mistake.
            assert!(
                fd.delay_ticks() <= MAX_SLOW_RTT + 2 * INCREMENT,
                "seed {seed}: {n}"
            );
        }
        // The slow node was restored by everyone who suspected it.
        for n in [node(1), node(2), node(3)] {
            let log = sim.log.get(&n).cloned().unwrap_or_default();
            assert_eq!(
                log.last().map(|(_, e)| *e),
                Some(EpfdEvent::Restore(slow)),
                "seed {seed}: {n}"
            );
            // Fast nodes never suspected each other.
            let wrongly = log
                .iter()
                .any(|(_, e)| matches!(e, EpfdEvent::Suspect(m) if *m != slow));
            assert!(!wrongly, "seed {seed}: {n} suspected a fast node");
        }
    }
}
