//! State transfer in chunks: hand-built cases, then random runs with lossy,
//! duplicating, reordering links, crashed and empty sources, and a source that
//! corrupts data. Properties: the state arrives exactly as it was (or the failure
//! is reported), at most `window` requests are outstanding, no request asks for more
//! than one chunk, and a corrupted copy is never delivered. Each run comes from its
//! seed; a failure prints it.

use std::collections::VecDeque;
use std::sync::Arc;

use kv_protocols::NodeId;
use kv_protocols::rng::SplitMix64;
use kv_protocols::transfer::{
    FetchConfig, SnapshotFetch, SnapshotSource, TransferError, TransferMsg, checksum,
};
use proptest::prelude::*;

fn node(i: u16) -> NodeId {
    NodeId::from(([10, 2, 0, 1], 6000 + i))
}

fn cfg(chunk: u32, window: usize) -> FetchConfig {
    FetchConfig {
        chunk,
        window,
        timeout_ticks: 5,
        max_bytes: 1 << 24,
    }
}

fn state(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = SplitMix64::new(seed);
    (0..len).map(|_| rng.next_u64() as u8).collect()
}

fn out(f: &mut SnapshotFetch) -> Vec<(NodeId, TransferMsg)> {
    let mut v = Vec::new();
    f.take_outgoing(&mut v);
    v
}

#[test]
fn a_source_answers_in_bounded_chunks_and_only_for_what_it_holds() {
    let mut s = SnapshotSource::new(4);
    s.offer(3, 2, Arc::new(b"0123456789".to_vec()));
    let req = |offset, len| TransferMsg::Request {
        group: 3,
        epoch: 2,
        offset,
        len,
    };
    assert_eq!(
        s.handle(&req(8, 100)),
        Some(TransferMsg::Chunk {
            group: 3,
            epoch: 2,
            total_len: 10,
            checksum: checksum(b"0123456789"),
            offset: 8,
            data: b"89".to_vec(),
        })
    );
    let Some(TransferMsg::Chunk { data, .. }) = s.handle(&req(0, 100)) else {
        panic!()
    };
    assert_eq!(data, b"0123");
    // Past the end: an empty chunk at the end, no panic.
    let Some(TransferMsg::Chunk { data, offset, .. }) = s.handle(&req(u64::MAX, u32::MAX)) else {
        panic!()
    };
    assert_eq!((data.len(), offset), (0, 10));
    assert_eq!(
        s.handle(&TransferMsg::Request {
            group: 3,
            epoch: 1,
            offset: 0,
            len: 1
        }),
        Some(TransferMsg::Unavailable { group: 3, epoch: 1 })
    );
    s.retire_before(3, 3);
    assert!(!s.serves(3, 2));
}

#[test]
fn the_window_bounds_what_is_in_flight() {
    let data = state(100, 1);
    let mut src = SnapshotSource::new(10);
    src.offer(0, 1, Arc::new(data.clone()));
    let mut f = SnapshotFetch::new(0, 1, vec![node(1)], cfg(10, 3));
    // Before the size is known: one request.
    let first = out(&mut f);
    assert_eq!(first.len(), 1);
    let reply = src.handle(&first[0].1).unwrap();
    f.handle(node(1), reply);
    // Then the window fills: three outstanding, and no more until answers come.
    let next = out(&mut f);
    assert_eq!(next.len(), 3);
    f.tick();
    assert!(out(&mut f).is_empty());
    let mut queue: VecDeque<TransferMsg> = next.into_iter().map(|(_, m)| m).collect();
    while let Some(m) = queue.pop_front() {
        f.handle(node(1), src.handle(&m).unwrap());
        let more = out(&mut f);
        assert!(more.len() <= 1);
        queue.extend(more.into_iter().map(|(_, m)| m));
    }
    assert_eq!(f.take_result(), Some(Ok(data)));
}

#[test]
fn an_empty_state_transfers() {
    let mut src = SnapshotSource::new(10);
    src.offer(0, 1, Arc::new(Vec::new()));
    let mut f = SnapshotFetch::new(0, 1, vec![node(1)], cfg(10, 3));
    for (_, m) in out(&mut f) {
        f.handle(node(1), src.handle(&m).unwrap());
    }
    assert_eq!(f.take_result(), Some(Ok(Vec::new())));
}

#[test]
fn a_state_over_the_limit_is_refused() {
    let mut src = SnapshotSource::new(10);
    src.offer(0, 1, Arc::new(vec![0; 100]));
    let mut f = SnapshotFetch::new(
        0,
        1,
        vec![node(1)],
        FetchConfig {
            max_bytes: 99,
            ..cfg(10, 2)
        },
    );
    for (_, m) in out(&mut f) {
        f.handle(node(1), src.handle(&m).unwrap());
    }
    assert_eq!(
        f.take_result(),
        Some(Err(TransferError::TooLarge {
            total_len: 100,
            max_bytes: 99
        }))
    );
}

/// A random run; returns a violation, if any.
fn run(seed: u64) -> Result<(), String> {
    let mut rng = SplitMix64::new(seed);
    let len = rng.below(30_000) as usize;
    let data = state(len, seed ^ 0xabc);
    let chunk = 64 + rng.below(3000) as u32;
    let window = 1 + rng.below(6) as usize;
    let n_sources = 1 + rng.below(4) as u16;
    let mut sources: Vec<SnapshotSource> = Vec::new();
    let mut crashed = Vec::new();
    let mut corrupt = Vec::new();
    for i in 0..n_sources {
        let mut s = SnapshotSource::new(chunk + rng.below(2) as u32 * 500);
        // The last source always holds the state; others may not, may crash, or
        // (one of them) may serve a corrupted copy under the right checksum.
        let last = i + 1 == n_sources;
        if last || rng.chance(0.7) {
            s.offer(7, 3, Arc::new(data.clone()));
        }
        crashed.push(!last && rng.chance(0.3));
        corrupt.push(!last && len > 0 && rng.chance(0.2));
        sources.push(s);
    }
    let mut f = SnapshotFetch::new(7, 3, (0..n_sources).map(node).collect(), cfg(chunk, window));
    let lossy = rng.chance(0.5);
    let mut net: Vec<(NodeId, TransferMsg)> = Vec::new(); // to sources
    let mut back: Vec<(NodeId, TransferMsg)> = Vec::new(); // to the fetch
    for step in 0..200_000u64 {
        if let Some(r) = f.take_result() {
            return match r {
                Ok(got) if got == data => Ok(()),
                Ok(_) => Err("delivered a state that differs from the source's".into()),
                Err(e) => Err(format!("failed: {e}")),
            };
        }
        for (to, m) in out(&mut f) {
            if std::env::var("KV_TRACE").is_ok() {
                println!("step {step} -> {to}: {m:?} (progress {:?})", f.progress());
            }
            if let TransferMsg::Request { len, .. } = m
                && len > chunk
            {
                return Err(format!("asked for {len} bytes with chunk {chunk}"));
            }
            net.push((to, m));
        }
        if f.in_flight() > window {
            return Err(format!(
                "{} requests in flight with window {window}",
                f.in_flight()
            ));
        }
        match rng.below(10) {
            0..=3 if !net.is_empty() => {
                // Mostly in order, sometimes overtaking.
                let i = rng.below(net.len().min(4) as u64) as usize;
                let (to, m) = net.remove(i);
                let s = (to.port() - 6000) as usize;
                if crashed[s] || (lossy && rng.chance(0.1)) {
                    continue;
                }
                if let Some(mut reply) = sources[s].handle(&m) {
                    if corrupt[s]
                        && let TransferMsg::Chunk { data, .. } = &mut reply
                        && let Some(b) = data.first_mut()
                    {
                        *b ^= 0xff;
                    }
                    back.push((to, reply.clone()));
                    if lossy && rng.chance(0.05) {
                        back.push((to, reply));
                    }
                }
            }
            4..=7 if !back.is_empty() => {
                let i = rng.below(back.len().min(4) as u64) as usize;
                let (from, m) = back.remove(i);
                if lossy && rng.chance(0.1) {
                    continue;
                }
                f.handle(from, m);
            }
            _ => {
                f.tick();
                let _ = step;
            }
        }
    }
    Err(format!("no result; progress {:?} of {len}", f.progress()))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn the_state_arrives_intact_through_faults(seed in any::<u64>()) {
        if let Err(e) = run(seed) {
            prop_assert!(false, "seed {seed}: {e}");
        }
    }
}

#[test]
fn replay_seed() {
    let seed = std::env::var("KV_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    if let Err(e) = run(seed) {
        panic!("seed {seed}: {e}");
    }
}
