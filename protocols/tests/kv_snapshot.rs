//! Snapshots of the KV state machine: exact roundtrip, and no panic on any input.

use kv_protocols::NodeId;
use kv_protocols::kv::{Applied, KvCommand, KvOp, KvResult, KvState, SnapshotError};
use proptest::prelude::*;

fn cmd(client: u64, seq: u64, stamp_ms: u64, op: KvOp) -> KvCommand {
    let a = NodeId::from(([127, 0, 0, 1], 4000));
    KvCommand {
        client,
        seq,
        reply_to: a,
        origin: a,
        stamp_ms,
        op,
    }
}

/// A state built from random commands under a random session configuration, so it
/// has data and sessions of every kind; returned with that configuration.
fn arb_state() -> impl Strategy<Value = (KvState, u64, usize)> {
    let text = "[a-c\u{e9}\u{4e16}]{0,4}";
    let op = prop_oneof![
        text.prop_map(|key| KvOp::Get { key }),
        (text, text).prop_map(|(key, value)| KvOp::Put { key, value }),
        (text, prop::option::of(text), text).prop_map(|(key, expected, new)| KvOp::Cas {
            key,
            expected,
            new
        }),
        text.prop_map(|key| KvOp::Delete { key }),
    ];
    (
        prop::collection::vec((1u64..6, 1u64..4, 0u64..1000, op), 0..60),
        0u64..500,
        0usize..6,
    )
        .prop_map(|(cmds, idle, max_sessions)| {
            let mut kv = KvState::new(idle, max_sessions);
            for (i, (client, seq_div, stamp, op)) in cmds.into_iter().enumerate() {
                kv.apply(&cmd(client, i as u64 / seq_div, stamp, op));
            }
            (kv, idle, max_sessions)
        })
}

#[test]
fn restored_replica_still_recognises_retries() {
    let mut kv = KvState::new(60_000, 100);
    let put = cmd(
        1,
        1,
        10,
        KvOp::Put {
            key: "k".into(),
            value: "a".into(),
        },
    );
    kv.apply(&put);
    let bytes = kv.encode_snapshot();
    let mut restored = KvState::decode_snapshot(&bytes, 60_000, 100).expect("valid snapshot");
    assert_eq!(restored, kv);
    assert_eq!(restored.apply(&put), Applied::Duplicate(KvResult::Done));
    assert_eq!(restored.get("k"), Some("a"));
}

#[test]
fn a_snapshot_after_deletes_holds_only_the_keys_that_exist() {
    let mut kv = KvState::new(60_000, 100);
    let ops = [
        KvOp::Put {
            key: "a".into(),
            value: "1".into(),
        },
        KvOp::Put {
            key: "b".into(),
            value: "22".into(),
        },
        KvOp::Delete { key: "a".into() },
        KvOp::Cas {
            key: "c".into(),
            expected: None,
            new: "333".into(),
        },
        KvOp::Delete { key: "c".into() },
    ];
    for (i, op) in ops.into_iter().enumerate() {
        kv.apply(&cmd(1, i as u64 + 1, 0, op));
    }
    let remove_b = cmd(2, 1, 0, KvOp::Delete { key: "b".into() });
    assert_eq!(kv.apply(&remove_b), Applied::Executed(KvResult::Done));
    let put_b = cmd(
        1,
        9,
        0,
        KvOp::Put {
            key: "b".into(),
            value: "4444".into(),
        },
    );
    kv.apply(&put_b);
    let mut restored =
        KvState::decode_snapshot(&kv.encode_snapshot(), 60_000, 100).expect("valid snapshot");
    assert_eq!(restored, kv);
    assert_eq!(restored.iter().collect::<Vec<_>>(), [("b", "4444")]);
    assert_eq!(restored.data_bytes(), kv.data_bytes());
    // The remembered result of the DELETE survives: its retry still does not
    // delete the key written after it.
    assert_eq!(
        restored.apply(&remove_b),
        Applied::Duplicate(KvResult::Done)
    );
    assert_eq!(restored.get("b"), Some("4444"));
}

#[test]
fn decoding_with_a_smaller_session_limit_drops_the_least_recent_sessions() {
    let mut kv = KvState::new(u64::MAX, 10);
    for client in 1..=5 {
        kv.apply(&cmd(client, 1, 0, KvOp::Get { key: "k".into() }));
    }
    let restored =
        KvState::decode_snapshot(&kv.encode_snapshot(), u64::MAX, 2).expect("valid snapshot");
    assert_eq!(restored.session_count(), 2);
    assert_eq!(restored.session_seq(3), None);
    assert_eq!(restored.session_seq(4), Some(1));
    assert_eq!(restored.session_seq(5), Some(1));
}

#[test]
fn garbage_is_rejected_with_a_specific_error() {
    assert_eq!(
        KvState::decode_snapshot(b"", 1, 1),
        Err(SnapshotError::Truncated { what: "header" })
    );
    assert_eq!(
        KvState::decode_snapshot(b"definitely not a snapshot", 1, 1),
        Err(SnapshotError::BadMagic)
    );
    let e = KvState::decode_snapshot(b"KVSS\x02\x00........", 1, 1).expect_err("version 2");
    assert_eq!(e, SnapshotError::UnsupportedVersion(2));
    assert_eq!(e.to_string(), "unsupported snapshot version 2 (expected 1)");
}

proptest! {
    #[test]
    fn snapshot_roundtrip_is_exact((kv, idle, max) in arb_state()) {
        // Under the configuration the state was built with, decoding gives back the
        // very same state, sessions and recency order included.
        let restored = KvState::decode_snapshot(&kv.encode_snapshot(), idle, max);
        prop_assert_eq!(restored, Ok(kv));
    }

    #[test]
    fn snapshot_roundtrip_preserves_data_and_sessions((kv, _, _) in arb_state()) {
        // Decoding with limits that cannot bite preserves everything.
        let restored = KvState::decode_snapshot(&kv.encode_snapshot(), u64::MAX, usize::MAX);
        let restored = restored.map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(restored.iter().collect::<Vec<_>>(), kv.iter().collect::<Vec<_>>());
        prop_assert_eq!(restored.session_count(), kv.session_count());
        prop_assert_eq!(restored.clock_ms(), kv.clock_ms());
        for client in 0..7 {
            prop_assert_eq!(restored.session_seq(client), kv.session_seq(client));
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = KvState::decode_snapshot(&bytes, 100, 10);
        // With the right header the decoder gets past the magic and version checks.
        let mut framed = b"KVSS\x01\x00".to_vec();
        framed.extend_from_slice(&bytes);
        let _ = KvState::decode_snapshot(&framed, 100, 10);
    }

    #[test]
    fn damaged_snapshots_are_rejected_without_panicking(
        (kv, _, _) in arb_state(), pos in any::<prop::sample::Index>(), bit in 0u8..8, cut in any::<prop::sample::Index>(),
    ) {
        let bytes = kv.encode_snapshot();
        let mut flipped = bytes.clone();
        let i = pos.index(flipped.len());
        flipped[i] ^= 1 << bit;
        prop_assert!(KvState::decode_snapshot(&flipped, u64::MAX, usize::MAX).is_err());
        let truncated = &bytes[..cut.index(bytes.len())];
        prop_assert!(KvState::decode_snapshot(truncated, u64::MAX, usize::MAX).is_err());
    }
}
