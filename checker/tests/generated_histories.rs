//! Histories generated from a real sequential register (reads, writes, CAS,
//! create-if-absent and deletes): linearizable by construction, and not any more
//! once a read is made to return a value that was never written, or one that was
//! certainly gone.

use std::collections::BTreeMap;

use kv_checker::{CheckResult, HistoryOp, Op, check_history};
use proptest::prelude::*;

/// A small deterministic generator (SplitMix64), so the big test is reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Simulates `clients` clients, each issuing one operation at a time, against a
/// correct store that executes each operation at one random instant inside its
/// interval. `unknown_per_mille` of the writes time out (the client forgets the
/// answer; the write may or may not have happened).
fn simulate(
    seed: u64,
    clients: u64,
    ops: usize,
    keys: u64,
    unknown_per_mille: u64,
) -> Vec<HistoryOp> {
    let mut rng = Rng(seed);
    // (instant the op takes effect, tie-breaker) -> (client, call, ret, key, kind)
    let mut planned = Vec::new();
    let mut client_free_at = vec![0u64; clients as usize];
    for n in 0..ops {
        let c = rng.below(clients) as usize;
        let call = client_free_at[c] + rng.below(20);
        let effect = call + rng.below(50);
        let ret = effect + rng.below(50);
        client_free_at[c] = ret + 1;
        let key = format!("key{}", rng.below(keys));
        let kind = rng.below(4);
        let lost = rng.below(1000) < unknown_per_mille;
        planned.push((effect, n, c as u64, call, ret, key, kind, lost));
    }
    // Execute in effect order against a plain map.
    planned.sort_by_key(|p| (p.0, p.1));
    let mut store: BTreeMap<String, String> = BTreeMap::new();
    let mut history = Vec::new();
    for (_, n, client, call, ret, key, kind, lost) in planned {
        let op = match kind {
            0 => Op::Get {
                out: store.get(&key).cloned(),
                key,
            },
            1 => {
                let value = format!("c{client}n{n}");
                store.insert(key.clone(), value.clone());
                Op::Put { key, value }
            }
            2 => {
                // Expect the current value, absence (create-if-absent) or a stale
                // value, so that every outcome occurs.
                let current = store.get(&key).cloned();
                let from = match (&current, rng.below(3)) {
                    (Some(v), 0) => Some(v.clone()),
                    (_, 1) => None,
                    _ => Some(format!("old{n}")),
                };
                let ok = current == from;
                let to = format!("c{client}n{n}");
                if ok {
                    store.insert(key.clone(), to.clone());
                }
                Op::Cas { key, from, to, ok }
            }
            _ => {
                let existed = store.remove(&key).is_some();
                Op::Del { key, existed }
            }
        };
        let unknown = lost && !matches!(op, Op::Get { .. });
        history.push(HistoryOp {
            client,
            call,
            ret: if unknown { None } else { Some(ret) },
            op,
        });
    }
    history.sort_by_key(|h| h.call);
    history
}

#[test]
fn ten_thousand_operations_over_a_hundred_keys_check_linearizable() {
    let h = simulate(42, 32, 10_000, 100, 5);
    assert_eq!(h.len(), 10_000);
    assert_eq!(check_history(&h), CheckResult::Linearizable);
}

#[test]
fn a_stale_read_planted_in_a_large_history_is_found() {
    let mut h = simulate(7, 16, 5_000, 50, 0);
    // Find a read that returned a value and make it return an older value of the
    // same key, written and overwritten before the read started.
    let mut history_of: BTreeMap<String, Vec<(u64, u64, String)>> = BTreeMap::new();
    for op in &h {
        if let (Op::Put { key, value }, Some(ret)) = (&op.op, op.ret) {
            history_of
                .entry(key.clone())
                .or_default()
                .push((op.call, ret, value.clone()));
        }
    }
    let target = h.iter().position(|op| {
        let Op::Get { key, out: Some(_) } = &op.op else {
            return false;
        };
        let writes = &history_of[key];
        // Two writes that both finished, one after the other, before the read.
        writes
            .windows(2)
            .any(|w| w[0].1 < w[1].0 && w[1].1 < op.call)
    });
    let i = target.expect("the workload has such a read");
    let (call, key) = (h[i].call, h[i].op.key().to_owned());
    let writes = &history_of[&key];
    let stale = writes
        .windows(2)
        .filter(|w| w[0].1 < w[1].0 && w[1].1 < call)
        .map(|w| w[0].2.clone())
        .next_back();
    if let Op::Get { out, .. } = &mut h[i].op {
        *out = stale;
    }
    // The stale value might legitimately be current again if a CAS restored it;
    // CAS targets are unique here, so it cannot (and a delete writes no value).
    assert!(matches!(check_history(&h), CheckResult::NotLinearizable { key: k, .. } if k == key));
}

#[test]
fn a_read_of_a_deleted_value_planted_in_a_large_history_is_found() {
    let mut h = simulate(11, 16, 5_000, 50, 0);
    // A read, a PUT of its key and a DELETE that removed the key, each returning
    // before the next was called: after the DELETE the PUT's value is gone for
    // good (values are unique), so a read of it is what a replica that lost the
    // DELETE (or a snapshot that brought the key back) would answer.
    let done = |o: &HistoryOp| o.ret.unwrap_or(u64::MAX);
    let mut target = None;
    'search: for (i, read) in h.iter().enumerate() {
        if !matches!(read.op, Op::Get { .. }) {
            continue;
        }
        let key = read.op.key();
        let deletes = h.iter().filter(|d| {
            d.op.key() == key
                && matches!(d.op, Op::Del { existed: true, .. })
                && done(d) < read.call
        });
        for d in deletes {
            let put = h.iter().find_map(|p| match &p.op {
                Op::Put { key: k, value } if k == key && done(p) < d.call => Some(value),
                _ => None,
            });
            if let Some(value) = put {
                target = Some((i, value.clone()));
                break 'search;
            }
        }
    }
    let (i, value) = target.expect("the workload has such a read");
    let key = h[i].op.key().to_owned();
    if let Op::Get { out, .. } = &mut h[i].op {
        *out = Some(value);
    }
    let r = check_history(&h);
    assert!(
        matches!(&r, CheckResult::NotLinearizable { key: k, .. } if *k == key),
        "{r:?}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn histories_of_a_correct_register_are_linearizable(
        seed in any::<u64>(), clients in 1u64..8, ops in 0usize..200, keys in 1u64..4,
        unknown in 0u64..200,
    ) {
        let h = simulate(seed, clients, ops, keys, unknown);
        prop_assert_eq!(check_history(&h), CheckResult::Linearizable);
    }

    #[test]
    fn a_read_of_a_never_written_value_is_not_linearizable(
        seed in any::<u64>(), clients in 1u64..8, ops in 1usize..200, keys in 1u64..4,
        pick in any::<prop::sample::Index>(),
    ) {
        let mut h = simulate(seed, clients, ops, keys, 0);
        let reads: Vec<usize> = (0..h.len())
            .filter(|&i| matches!(h[i].op, Op::Get { .. }))
            .collect();
        prop_assume!(!reads.is_empty());
        let i = reads[pick.index(reads.len())];
        if let Op::Get { out, .. } = &mut h[i].op {
            *out = Some("never written".to_owned());
        }
        let is_violation = matches!(check_history(&h), CheckResult::NotLinearizable { .. });
        prop_assert!(is_violation);
    }
}
