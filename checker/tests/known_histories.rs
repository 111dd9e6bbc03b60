//! Hand-written histories with a known verdict.

use kv_checker::{CheckOptions, CheckResult, HistoryOp, Op, check_history, check_history_with};

fn put(client: u64, call: u64, ret: u64, key: &str, value: &str) -> HistoryOp {
    HistoryOp {
        client,
        call,
        ret: Some(ret),
        op: Op::Put {
            key: key.into(),
            value: value.into(),
        },
    }
}

fn get(client: u64, call: u64, ret: u64, key: &str, out: Option<&str>) -> HistoryOp {
    HistoryOp {
        client,
        call,
        ret: Some(ret),
        op: Op::Get {
            key: key.into(),
            out: out.map(Into::into),
        },
    }
}

fn cas(client: u64, call: u64, ret: u64, key: &str, from: &str, to: &str, ok: bool) -> HistoryOp {
    HistoryOp {
        client,
        call,
        ret: Some(ret),
        op: Op::Cas {
            key: key.into(),
            from: Some(from.into()),
            to: to.into(),
            ok,
        },
    }
}

/// A create-if-absent: a CAS whose expected state is "the key does not exist".
fn create(client: u64, call: u64, ret: u64, key: &str, to: &str, ok: bool) -> HistoryOp {
    HistoryOp {
        client,
        call,
        ret: Some(ret),
        op: Op::Cas {
            key: key.into(),
            from: None,
            to: to.into(),
            ok,
        },
    }
}

fn del(client: u64, call: u64, ret: u64, key: &str, existed: bool) -> HistoryOp {
    HistoryOp {
        client,
        call,
        ret: Some(ret),
        op: Op::Del {
            key: key.into(),
            existed,
        },
    }
}

fn unknown(mut op: HistoryOp) -> HistoryOp {
    op.ret = None;
    op
}

fn assert_linearizable(h: &[HistoryOp]) {
    let r = check_history(h);
    assert_eq!(r, CheckResult::Linearizable, "{r:#?}");
}

fn assert_violation(h: &[HistoryOp], key: &str) -> Vec<HistoryOp> {
    match check_history(h) {
        CheckResult::NotLinearizable {
            key: k,
            ops,
            explanation,
        } => {
            assert_eq!(k, key);
            assert!(!explanation.is_empty());
            assert!(!ops.is_empty());
            ops
        }
        other => panic!("expected a violation on {key:?}, got {other:?}"),
    }
}

#[test]
fn empty_history_is_linearizable() {
    assert_linearizable(&[]);
}

#[test]
fn sequential_history_is_linearizable() {
    assert_linearizable(&[
        get(1, 0, 1, "k", None),
        put(1, 2, 3, "k", "a"),
        get(1, 4, 5, "k", Some("a")),
        cas(1, 6, 7, "k", "a", "b", true),
        cas(1, 8, 9, "k", "a", "c", false),
        get(1, 10, 11, "k", Some("b")),
    ]);
}

#[test]
fn stale_read_is_caught() {
    let window = assert_violation(
        &[
            put(1, 0, 10, "k", "a"),
            put(2, 20, 30, "k", "b"),
            get(3, 40, 50, "k", Some("a")),
        ],
        "k",
    );
    // The window shows the read and the write that overwrote "a".
    assert!(window.contains(&get(3, 40, 50, "k", Some("a"))));
    assert!(window.contains(&put(2, 20, 30, "k", "b")));
}

#[test]
fn lost_write_is_caught() {
    // An acknowledged write is not seen by a later read, which sees the old value.
    assert_violation(
        &[
            put(1, 0, 10, "k", "a"),
            put(2, 20, 30, "k", "b"),
            get(1, 40, 50, "k", Some("b")),
            get(3, 60, 70, "k", Some("a")),
        ],
        "k",
    );
    // Or reads "not found" after a completed write.
    assert_violation(&[put(1, 0, 10, "k", "a"), get(2, 20, 30, "k", None)], "k");
}

#[test]
fn cas_succeeding_against_an_overwritten_value_is_caught() {
    assert_violation(
        &[
            put(1, 0, 10, "k", "a"),
            put(2, 20, 30, "k", "b"),
            cas(3, 40, 50, "k", "a", "c", true),
        ],
        "k",
    );
}

#[test]
fn cas_on_a_missing_key_must_fail() {
    assert_violation(&[cas(1, 0, 10, "k", "a", "b", true)], "k");
    assert_linearizable(&[cas(1, 0, 10, "k", "a", "b", false)]);
}

#[test]
fn failed_cas_whose_expected_value_was_certainly_there_is_caught() {
    assert_violation(
        &[
            put(1, 0, 10, "k", "a"),
            cas(2, 20, 30, "k", "a", "b", false),
        ],
        "k",
    );
}

#[test]
fn concurrent_operations_may_take_effect_in_either_order() {
    // Two overlapping writes, then reads that only agree with "b then a"...
    assert_linearizable(&[
        put(1, 0, 100, "k", "a"),
        put(2, 10, 90, "k", "b"),
        get(3, 200, 210, "k", Some("a")),
    ]);
    // ...or with "a then b".
    assert_linearizable(&[
        put(1, 0, 100, "k", "a"),
        put(2, 10, 90, "k", "b"),
        get(3, 200, 210, "k", Some("b")),
    ]);
    // A read overlapping a write may see either value.
    assert_linearizable(&[
        put(1, 0, 10, "k", "a"),
        put(2, 20, 60, "k", "b"),
        get(3, 30, 40, "k", Some("a")),
        get(4, 30, 50, "k", Some("b")),
    ]);
    // Two CASes from the same value: exactly one may win.
    assert_linearizable(&[
        put(1, 0, 10, "k", "a"),
        cas(2, 20, 60, "k", "a", "b", true),
        cas(3, 20, 60, "k", "a", "c", false),
        get(4, 70, 80, "k", Some("b")),
    ]);
    assert_violation(
        &[
            put(1, 0, 10, "k", "a"),
            cas(2, 20, 60, "k", "a", "b", true),
            cas(3, 20, 60, "k", "a", "c", true),
        ],
        "k",
    );
}

#[test]
fn operations_touching_in_time_count_as_concurrent() {
    assert_linearizable(&[put(1, 0, 10, "k", "a"), get(2, 5, 10, "k", None)]);
    assert_linearizable(&[get(2, 10, 20, "k", Some("a")), put(1, 0, 10, "k", "a")]);
}

#[test]
fn an_unknown_put_may_take_effect_long_after_its_call() {
    // The timed-out write of "b" is seen only later: it took effect late.
    assert_linearizable(&[
        put(1, 0, 10, "k", "a"),
        unknown(put(2, 20, 30, "k", "b")),
        get(3, 40, 50, "k", Some("a")),
        get(3, 1_000, 1_010, "k", Some("b")),
        get(3, 2_000, 2_010, "k", Some("b")),
    ]);
    // Or never.
    assert_linearizable(&[
        put(1, 0, 10, "k", "a"),
        unknown(put(2, 20, 30, "k", "b")),
        get(3, 1_000, 1_010, "k", Some("a")),
    ]);
    // But not before it was called.
    assert_violation(
        &[
            put(1, 0, 10, "k", "a"),
            get(3, 40, 50, "k", Some("b")),
            unknown(put(2, 60, 70, "k", "b")),
        ],
        "k",
    );
    // And only once: "b" cannot come back after being overwritten.
    assert_violation(
        &[
            unknown(put(2, 0, 1, "k", "b")),
            get(3, 10, 20, "k", Some("b")),
            put(1, 30, 40, "k", "a"),
            get(3, 50, 60, "k", Some("b")),
        ],
        "k",
    );
}

#[test]
fn an_unknown_cas_swaps_only_if_it_can() {
    assert_linearizable(&[
        put(1, 0, 10, "k", "a"),
        unknown(cas(2, 20, 30, "k", "a", "b", false)),
        get(3, 100, 110, "k", Some("b")),
    ]);
    assert_violation(
        &[
            put(1, 0, 10, "k", "x"),
            unknown(cas(2, 20, 30, "k", "a", "b", false)),
            get(3, 100, 110, "k", Some("b")),
        ],
        "k",
    );
}

#[test]
fn an_unknown_get_constrains_nothing() {
    assert_linearizable(&[
        put(1, 0, 10, "k", "a"),
        unknown(get(2, 20, 30, "k", Some("never written"))),
    ]);
}

#[test]
fn keys_are_independent_and_the_first_bad_key_is_reported() {
    let h = [
        put(1, 0, 10, "a", "1"),
        put(1, 20, 30, "b", "1"),
        get(2, 40, 50, "b", None),
        get(2, 60, 70, "a", Some("1")),
        get(2, 80, 90, "c", Some("1")),
    ];
    assert_violation(&h, "b");
    // Values of other keys do not leak: "a" was written "1", "c" never.
}

#[test]
fn a_tiny_budget_reports_unknown_instead_of_searching_forever() {
    // Many concurrent writes are the expensive case: the search may have to try
    // every subset of them.
    let mut h = Vec::new();
    for i in 0..12 {
        h.push(put(i, 0, 1_000, "k", &format!("v{i}")));
    }
    h.push(get(99, 2_000, 2_010, "k", Some("v7")));
    let opts = CheckOptions {
        max_steps_per_key: 10,
    };
    let report = check_history_with(&h, &opts);
    assert_eq!(report.result, CheckResult::Unknown { key: "k".into() });
    // With the default budget the same history is settled quickly.
    assert_eq!(check_history(&h), CheckResult::Linearizable);
}

#[test]
fn a_violation_among_many_concurrent_writes_is_found() {
    // 30 concurrent writes; a read after all of them sees a value nobody wrote
    // (found without searching the 2^30 orders of the writes).
    let mut h = Vec::new();
    for i in 0..30 {
        h.push(put(i, 0, 1_000, "k", &format!("v{i}")));
    }
    h.push(get(99, 2_000, 2_010, "k", Some("zzz")));
    assert_eq!(assert_violation(&h, "k").len(), 1);
    // 10 concurrent writes, then two reads in real-time order that see the writes
    // in an order no single linearization allows.
    let mut h = Vec::new();
    for i in 0..10 {
        h.push(put(i, 0, 1_000, "k", &format!("v{i}")));
    }
    h.push(get(99, 2_000, 2_010, "k", Some("v3")));
    h.push(get(99, 3_000, 3_010, "k", Some("v4")));
    assert_violation(&h, "k");
}

#[test]
fn a_sequential_history_with_deletes_and_creates_is_linearizable() {
    assert_linearizable(&[
        del(1, 0, 10, "k", false),
        create(1, 20, 30, "k", "a", true),
        create(2, 40, 50, "k", "b", false),
        get(1, 60, 70, "k", Some("a")),
        del(2, 80, 90, "k", true),
        get(1, 100, 110, "k", None),
        cas(1, 120, 130, "k", "a", "c", false),
        del(2, 140, 150, "k", false),
        create(2, 160, 170, "k", "d", true),
        get(1, 180, 190, "k", Some("d")),
    ]);
}

#[test]
fn a_read_of_a_deleted_value_after_the_delete_returned_is_caught() {
    // The delete certainly took effect before the read started: a replica that
    // lost it (or a snapshot that resurrected the key) answers the old value.
    let ops = assert_violation(
        &[
            put(1, 0, 10, "k", "a"),
            del(2, 20, 30, "k", true),
            get(3, 40, 50, "k", Some("a")),
        ],
        "k",
    );
    assert!(
        ops.iter().any(|o| matches!(o.op, Op::Del { .. })),
        "{ops:?}"
    );
}

#[test]
fn a_read_concurrent_with_a_delete_may_see_either_side() {
    for out in [Some("a"), None] {
        assert_linearizable(&[
            put(1, 0, 10, "k", "a"),
            del(2, 20, 50, "k", true),
            get(3, 30, 40, "k", out),
        ]);
    }
}

#[test]
fn a_delete_must_tell_the_truth_about_the_key() {
    // It cannot find a key nobody wrote, nor miss one that certainly exists.
    assert_violation(&[del(1, 0, 10, "k", true)], "k");
    assert_violation(&[put(1, 0, 10, "k", "a"), del(2, 20, 30, "k", false)], "k");
    // Two deletes after one write: only one of them can have removed the key.
    assert_violation(
        &[
            put(1, 0, 10, "k", "a"),
            del(2, 20, 40, "k", true),
            del(3, 20, 40, "k", true),
        ],
        "k",
    );
    assert_linearizable(&[
        put(1, 0, 10, "k", "a"),
        del(2, 20, 40, "k", true),
        del(3, 20, 40, "k", false),
    ]);
}

#[test]
fn a_create_succeeds_only_on_a_missing_key() {
    assert_linearizable(&[create(1, 0, 10, "k", "a", true)]);
    assert_violation(&[create(1, 0, 10, "k", "a", false)], "k");
    assert_violation(
        &[put(1, 0, 10, "k", "a"), create(2, 20, 30, "k", "b", true)],
        "k",
    );
    // Two concurrent creates of one key: at most one wins (SET NX as a lock).
    assert_violation(
        &[
            create(1, 0, 20, "k", "a", true),
            create(2, 0, 20, "k", "b", true),
        ],
        "k",
    );
    assert_linearizable(&[
        create(1, 0, 20, "k", "a", true),
        create(2, 0, 20, "k", "b", false),
        get(3, 30, 40, "k", Some("a")),
    ]);
    // Unless a delete between them made room again.
    assert_linearizable(&[
        create(1, 0, 20, "k", "a", true),
        del(3, 0, 30, "k", true),
        create(2, 0, 40, "k", "b", true),
        get(3, 50, 60, "k", Some("b")),
    ]);
}

#[test]
fn an_unknown_delete_may_take_effect_late_or_never() {
    let h = |out| {
        [
            put(1, 0, 10, "k", "a"),
            unknown(del(2, 20, 30, "k", false)),
            get(3, 100, 110, "k", Some("a")),
            get(3, 120, 130, "k", out),
        ]
    };
    // Never, or after the first read.
    assert_linearizable(&h(Some("a")));
    assert_linearizable(&h(None));
    // But not before a read and undone after it.
    assert_violation(
        &[
            put(1, 0, 10, "k", "a"),
            unknown(del(2, 20, 30, "k", true)),
            get(3, 100, 110, "k", None),
            get(3, 120, 130, "k", Some("a")),
        ],
        "k",
    );
}

#[test]
fn an_unknown_create_takes_effect_only_on_a_missing_key() {
    assert_linearizable(&[
        unknown(create(1, 0, 10, "k", "a", false)),
        get(2, 20, 30, "k", Some("a")),
    ]);
    assert_violation(
        &[
            put(1, 0, 10, "k", "x"),
            unknown(create(2, 20, 30, "k", "a", false)),
            get(3, 100, 110, "k", Some("a")),
        ],
        "k",
    );
}
