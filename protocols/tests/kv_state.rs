//! The replicated KV state machine: operation semantics, exactly-once sessions and
//! deterministic session expiry.

use std::collections::BTreeMap;

use kv_protocols::NodeId;
use kv_protocols::kv::{Applied, ClientId, ENTRY_OVERHEAD, KvCommand, KvOp, KvResult, KvState};
use proptest::prelude::*;

fn addr() -> NodeId {
    NodeId::from(([127, 0, 0, 1], 4000))
}

fn cmd(client: ClientId, seq: u64, stamp_ms: u64, op: KvOp) -> KvCommand {
    KvCommand {
        client,
        seq,
        reply_to: addr(),
        origin: addr(),
        stamp_ms,
        op,
    }
}

fn get(key: &str) -> KvOp {
    KvOp::Get { key: key.into() }
}

fn put(key: &str, value: &str) -> KvOp {
    KvOp::Put {
        key: key.into(),
        value: value.into(),
    }
}

fn cas(key: &str, expected: &str, new: &str) -> KvOp {
    KvOp::Cas {
        key: key.into(),
        expected: Some(expected.into()),
        new: new.into(),
    }
}

fn create(key: &str, new: &str) -> KvOp {
    KvOp::Cas {
        key: key.into(),
        expected: None,
        new: new.into(),
    }
}

fn del(key: &str) -> KvOp {
    KvOp::Delete { key: key.into() }
}

fn executed(r: KvResult) -> Applied {
    Applied::Executed(r)
}

#[test]
fn get_put_cas_follow_the_client_protocol() {
    let mut kv = KvState::new(60_000, 100);
    assert_eq!(
        kv.apply(&cmd(1, 1, 0, get("k"))),
        executed(KvResult::NotFound)
    );
    assert_eq!(
        kv.apply(&cmd(1, 2, 0, cas("k", "a", "b"))),
        executed(KvResult::NotFound),
        "CAS on a missing key is NotFound"
    );
    assert_eq!(kv.get("k"), None);
    assert_eq!(
        kv.apply(&cmd(1, 3, 0, put("k", "a"))),
        executed(KvResult::Done)
    );
    assert_eq!(
        kv.apply(&cmd(1, 4, 0, get("k"))),
        executed(KvResult::Value("a".into()))
    );
    assert_eq!(
        kv.apply(&cmd(1, 5, 0, cas("k", "x", "b"))),
        executed(KvResult::CasMismatch {
            current: "a".into()
        })
    );
    assert_eq!(kv.get("k"), Some("a"));
    assert_eq!(
        kv.apply(&cmd(1, 6, 0, cas("k", "a", "b"))),
        executed(KvResult::Done)
    );
    assert_eq!(kv.get("k"), Some("b"));
    assert_eq!(kv.len(), 1);
    assert!(!kv.is_empty());
}

#[test]
fn delete_says_whether_the_key_existed() {
    let mut kv = KvState::new(60_000, 100);
    assert_eq!(
        kv.apply(&cmd(1, 1, 0, del("k"))),
        executed(KvResult::NotFound),
        "DELETE of a missing key is NotFound"
    );
    kv.apply(&cmd(1, 2, 0, put("k", "a")));
    kv.apply(&cmd(1, 3, 0, put("other", "b")));
    assert_eq!(kv.apply(&cmd(1, 4, 0, del("k"))), executed(KvResult::Done));
    assert_eq!(kv.get("k"), None);
    assert_eq!(
        kv.apply(&cmd(1, 5, 0, get("k"))),
        executed(KvResult::NotFound)
    );
    assert_eq!(
        kv.apply(&cmd(1, 6, 0, cas("k", "a", "b"))),
        executed(KvResult::NotFound),
        "a deleted key is missing for CAS too"
    );
    assert_eq!(
        kv.apply(&cmd(1, 7, 0, del("k"))),
        executed(KvResult::NotFound)
    );
    assert_eq!(kv.len(), 1);
    assert_eq!(kv.get("other"), Some("b"));
}

#[test]
fn cas_against_absent_creates_only_a_missing_key() {
    let mut kv = KvState::new(60_000, 100);
    assert_eq!(
        kv.apply(&cmd(1, 1, 0, create("k", "a"))),
        executed(KvResult::Done)
    );
    assert_eq!(kv.get("k"), Some("a"));
    assert_eq!(
        kv.apply(&cmd(1, 2, 0, create("k", "b"))),
        executed(KvResult::CasMismatch {
            current: "a".into()
        }),
        "an existing key is a mismatch that names its value"
    );
    assert_eq!(kv.get("k"), Some("a"));
    kv.apply(&cmd(1, 3, 0, del("k")));
    assert_eq!(
        kv.apply(&cmd(1, 4, 0, create("k", "c"))),
        executed(KvResult::Done)
    );
    assert_eq!(kv.get("k"), Some("c"));
    // The empty string is a value like any other, not absence.
    kv.apply(&cmd(1, 5, 0, put("e", "")));
    assert_eq!(
        kv.apply(&cmd(1, 6, 0, create("e", "x"))),
        executed(KvResult::CasMismatch { current: "".into() })
    );
}

#[test]
fn a_retried_delete_returns_its_first_outcome() {
    let mut kv = KvState::new(60_000, 100);
    kv.apply(&cmd(1, 1, 0, put("k", "a")));
    let remove = cmd(1, 2, 0, del("k"));
    assert_eq!(kv.apply(&remove), executed(KvResult::Done));
    // Executed again it would say the key did not exist, and after client 2
    // recreates the key it would delete client 2's acknowledged write.
    assert_eq!(kv.apply(&remove), Applied::Duplicate(KvResult::Done));
    assert_eq!(
        kv.apply(&cmd(2, 1, 0, create("k", "b"))),
        executed(KvResult::Done)
    );
    assert_eq!(kv.apply(&remove), Applied::Duplicate(KvResult::Done));
    assert_eq!(kv.get("k"), Some("b"));
}

#[test]
fn a_retried_create_returns_its_first_outcome() {
    let mut kv = KvState::new(60_000, 100);
    let make = cmd(1, 1, 0, create("k", "a"));
    assert_eq!(kv.apply(&make), executed(KvResult::Done));
    // Executed again it would report a mismatch against its own write.
    assert_eq!(kv.apply(&make), Applied::Duplicate(KvResult::Done));
    assert_eq!(kv.get("k"), Some("a"));
}

#[test]
fn a_retried_put_takes_effect_once() {
    let mut kv = KvState::new(60_000, 100);
    let first = cmd(1, 1, 0, put("k", "a"));
    assert_eq!(kv.apply(&first), executed(KvResult::Done));
    assert_eq!(
        kv.apply(&cmd(2, 1, 0, put("k", "b"))),
        executed(KvResult::Done)
    );
    // The retry of client 1's PUT is decided again after client 2's PUT: applying it
    // again would lose client 2's acknowledged write.
    assert_eq!(kv.apply(&first), Applied::Duplicate(KvResult::Done));
    assert_eq!(kv.get("k"), Some("b"));
}

#[test]
fn a_retried_cas_returns_its_first_outcome() {
    let mut kv = KvState::new(60_000, 100);
    kv.apply(&cmd(1, 1, 0, put("k", "a")));
    let swap = cmd(1, 2, 0, cas("k", "a", "b"));
    assert_eq!(kv.apply(&swap), executed(KvResult::Done));
    // Executed again it would report a mismatch although it succeeded.
    assert_eq!(kv.apply(&swap), Applied::Duplicate(KvResult::Done));
    assert_eq!(kv.get("k"), Some("b"));
}

#[test]
fn a_retried_get_returns_the_value_it_first_read() {
    let mut kv = KvState::new(60_000, 100);
    kv.apply(&cmd(1, 1, 0, put("k", "a")));
    let read = cmd(2, 1, 0, get("k"));
    assert_eq!(kv.apply(&read), executed(KvResult::Value("a".into())));
    kv.apply(&cmd(1, 2, 0, put("k", "b")));
    assert_eq!(
        kv.apply(&read),
        Applied::Duplicate(KvResult::Value("a".into()))
    );
}

#[test]
fn a_late_duplicate_of_an_older_command_is_neither_executed_nor_answered() {
    let mut kv = KvState::new(60_000, 100);
    let old = cmd(1, 1, 0, put("k", "a"));
    kv.apply(&old);
    kv.apply(&cmd(1, 2, 0, put("k", "b")));
    let outcome = kv.apply(&old);
    assert_eq!(outcome, Applied::Stale { remembered_seq: 2 });
    assert_eq!(outcome.result(), None);
    assert_eq!(kv.get("k"), Some("b"));
    assert_eq!(kv.session_seq(1), Some(2));
}

#[test]
fn sessions_idle_longer_than_the_limit_expire_on_the_command_clock() {
    let mut kv = KvState::new(1_000, 100);
    kv.apply(&cmd(1, 1, 100, put("a", "1")));
    kv.apply(&cmd(2, 1, 600, put("b", "1")));
    // Exactly `session_idle_ms` idle is still kept.
    kv.apply(&cmd(3, 1, 1_100, get("a")));
    assert_eq!(kv.session_seq(1), Some(1));
    kv.apply(&cmd(3, 2, 1_101, get("a")));
    assert_eq!(kv.session_seq(1), None, "client 1 idle for 1001 ms");
    assert_eq!(kv.session_seq(2), Some(1));
    assert_eq!(kv.clock_ms(), 1_101);
    // A stamp from a proposer with a slow clock does not move the clock back.
    kv.apply(&cmd(3, 3, 5, get("a")));
    assert_eq!(kv.clock_ms(), 1_101);
    assert_eq!(kv.session_count(), 2);
}

#[test]
fn at_most_max_sessions_are_kept_dropping_the_least_recently_active() {
    let mut kv = KvState::new(u64::MAX, 2);
    kv.apply(&cmd(1, 1, 0, get("k")));
    kv.apply(&cmd(2, 1, 0, get("k")));
    kv.apply(&cmd(1, 2, 0, get("k"))); // client 1 is now more recent than 2
    kv.apply(&cmd(3, 1, 0, get("k")));
    assert_eq!(kv.session_count(), 2);
    assert_eq!(kv.session_seq(2), None);
    assert_eq!(kv.session_seq(1), Some(2));
    assert_eq!(kv.session_seq(3), Some(1));
    // A retry keeps a session fresh too.
    kv.apply(&cmd(1, 2, 0, get("k")));
    kv.apply(&cmd(4, 1, 0, get("k")));
    assert_eq!(kv.session_seq(3), None);
    assert_eq!(kv.session_seq(1), Some(2));
}

#[test]
fn zero_max_sessions_disables_deduplication() {
    let mut kv = KvState::new(u64::MAX, 0);
    let c = cmd(1, 1, 0, put("k", "a"));
    assert_eq!(kv.apply(&c), executed(KvResult::Done));
    assert_eq!(kv.apply(&c), executed(KvResult::Done));
    assert_eq!(kv.session_count(), 0);
}

#[test]
fn iteration_is_in_key_order() {
    let mut kv = KvState::new(u64::MAX, 10);
    for (i, k) in ["c", "a", "b"].into_iter().enumerate() {
        kv.apply(&cmd(1, i as u64 + 1, 0, put(k, k)));
    }
    let keys: Vec<_> = kv.iter().map(|(k, _)| k).collect();
    assert_eq!(keys, ["a", "b", "c"]);
}

/// A random command over a few clients and keys; `seq_step` 0 makes a retry and
/// lower values make late duplicates likely.
fn arb_command() -> impl Strategy<Value = (ClientId, i64, u64, KvOp)> {
    let key = prop_oneof![Just("x"), Just("y"), Just("z")];
    let value = prop_oneof![Just("1"), Just("2"), Just("é")];
    let op = prop_oneof![
        key.clone().prop_map(get),
        (key.clone(), value.clone()).prop_map(|(k, v)| put(k, v)),
        (key.clone(), value.clone(), value.clone()).prop_map(|(k, e, n)| cas(k, e, n)),
        (key.clone(), value).prop_map(|(k, n)| create(k, n)),
        key.prop_map(del),
    ];
    (1u64..5, -1i64..3, 0u64..50, op)
}

/// Turns relative sequence steps into absolute commands (stamps increase with noise).
fn commands(raw: Vec<(ClientId, i64, u64, KvOp)>) -> Vec<KvCommand> {
    let mut seqs: BTreeMap<ClientId, u64> = BTreeMap::new();
    let mut now = 0;
    raw.into_iter()
        .map(|(client, step, jitter, op)| {
            let seq = seqs.entry(client).or_insert(0);
            *seq = seq.saturating_add_signed(step).max(1);
            now += 10;
            cmd(client, *seq, now + jitter, op)
        })
        .collect()
}

proptest! {
    #[test]
    fn with_fresh_sequence_numbers_kv_state_behaves_like_a_map(
        raw in prop::collection::vec(arb_command(), 0..80),
    ) {
        let mut kv = KvState::new(u64::MAX, 1000);
        let mut model: BTreeMap<String, String> = BTreeMap::new();
        for (seq, (client, _, _, op)) in raw.into_iter().enumerate() {
            let expected = match &op {
                KvOp::Get { key } => model
                    .get(key)
                    .map_or(KvResult::NotFound, |v| KvResult::Value(v.clone())),
                KvOp::Put { key, value } => {
                    model.insert(key.clone(), value.clone());
                    KvResult::Done
                }
                KvOp::Cas { key, expected: Some(expected), new } => match model.get_mut(key) {
                    None => KvResult::NotFound,
                    Some(cur) if cur != expected => KvResult::CasMismatch { current: cur.clone() },
                    Some(cur) => { *cur = new.clone(); KvResult::Done }
                },
                KvOp::Cas { key, expected: None, new } => match model.get(key) {
                    Some(cur) => KvResult::CasMismatch { current: cur.clone() },
                    None => { model.insert(key.clone(), new.clone()); KvResult::Done }
                },
                KvOp::Delete { key } => match model.remove(key) {
                    Some(_) => KvResult::Done,
                    None => KvResult::NotFound,
                },
            };
            // The running size equals a recount after every operation, deletes
            // included, not only at the end.
            let c = cmd(client, seq as u64 + 1, 0, op);
            prop_assert_eq!(kv.apply(&c), Applied::Executed(expected));
            let recount: u64 = model
                .iter()
                .map(|(k, v)| ENTRY_OVERHEAD + (k.len() + v.len()) as u64)
                .sum();
            prop_assert_eq!(kv.data_bytes(), recount);
        }
        let got: Vec<_> = kv.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
        let want: Vec<_> = model.into_iter().collect();
        prop_assert_eq!(got, want);
        // The running size the snapshot schedule relies on is the data section's size.
        let size: u64 = kv
            .iter()
            .map(|(k, v)| ENTRY_OVERHEAD + (k.len() + v.len()) as u64)
            .sum();
        prop_assert_eq!(kv.data_bytes(), size);
        let restored = KvState::decode_snapshot(&kv.encode_snapshot(), u64::MAX, 1000).unwrap();
        prop_assert_eq!(restored.data_bytes(), size);
    }

    #[test]
    fn replicas_applying_the_same_log_agree_on_every_result_and_state(
        raw in prop::collection::vec(arb_command(), 0..120),
        idle in 0u64..200,
        max_sessions in 0usize..4,
    ) {
        let log = commands(raw);
        let mut a = KvState::new(idle, max_sessions);
        let mut b = KvState::new(idle, max_sessions);
        for c in &log {
            prop_assert_eq!(a.apply(c), b.apply(c));
            prop_assert!(a.session_count() <= max_sessions);
        }
        prop_assert_eq!(a, b);
    }

    #[test]
    fn a_command_never_takes_effect_twice_while_its_session_lives(
        raw in prop::collection::vec(arb_command(), 0..120),
    ) {
        // Sessions never expire here, so every retry or late duplicate must be
        // recognised: a PUT/CAS executes at most once per (client, seq).
        let log = commands(raw);
        let mut kv = KvState::new(u64::MAX, usize::MAX);
        let mut executed = std::collections::BTreeSet::new();
        for c in &log {
            if let Applied::Executed(_) = kv.apply(c) {
                prop_assert!(executed.insert((c.client, c.seq)), "executed twice: {:?}", c);
            }
        }
    }
}
