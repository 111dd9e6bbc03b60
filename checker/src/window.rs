//! The shortest stretch of a key's history that already cannot be ordered.
//!
//! [`crate::check_history`] names the first offending key and a small window of its
//! operations around the point where the search got stuck. That window illustrates
//! the problem but can sit anywhere in a long history, and the history before it is
//! part of why it fails. To draw a violation, [`violation_window`] first finds the
//! earliest time `T` such that the key's history *up to `T`* is not linearizable,
//! and then asks the checker for its window there.
//!
//! "The history up to `T`" keeps the operations called at or before `T`; one still
//! running at `T` (returned later, or never) counts as having an unknown outcome,
//! since at `T` nobody knows it yet. Cutting a history this way never turns a
//! linearizable history into a non-linearizable one (take a valid order of the whole
//! history: the operations that took effect by `T` keep their places, and every
//! other one simply has not happened yet), so a failing prefix is a genuine
//! violation, and a longer prefix of a failing one fails too. That makes the
//! earliest failing `T` a binary search over the key's return times.

use crate::{CheckOptions, CheckResult, HistoryOp, check_history_with};

/// Where the operations on one key stop admitting any valid order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ViolationWindow {
    /// The offending key.
    pub key: String,
    /// The earliest call among [`ViolationWindow::involved`], ns.
    pub start: u64,
    /// The earliest time by which the key's operations cannot be ordered, ns: the
    /// operations called up to here, with those still running counted as
    /// unfinished, are already not linearizable. Invariant: `start <= end`.
    pub end: u64,
    /// The checker's window on that shortened history (the operation the search
    /// got stuck at, the last one that took effect before it, those overlapping it
    /// and the writers of the value it needed), as they appear in the history,
    /// sorted by call time.
    pub involved: Vec<HistoryOp>,
    /// Every operation on the key called by `end` that overlaps `[start, end]`
    /// (the involved ones included), sorted by call time; at most
    /// [`MAX_CONTEXT`], the ones closest to `[start, end]` kept.
    pub context: Vec<HistoryOp>,
    /// What goes wrong there, in words.
    pub explanation: String,
}

/// The most operations [`ViolationWindow::context`] holds.
pub const MAX_CONTEXT: usize = 200;

/// The shortest failing prefix of the operations on `key` in `ops`, and the
/// checker's window in it; `None` when the operations on `key` are linearizable
/// (or the search gave up on every prefix).
pub fn violation_window(
    ops: &[HistoryOp],
    key: &str,
    opts: &CheckOptions,
) -> Option<ViolationWindow> {
    let mut on_key: Vec<&HistoryOp> = ops.iter().filter(|o| o.op.key() == key).collect();
    on_key.sort_by_key(|o| o.call);
    let mut ends: Vec<u64> = on_key.iter().filter_map(|o| o.ret).collect();
    ends.sort_unstable();
    ends.dedup();
    let fails = |t: u64| -> Option<(Vec<HistoryOp>, String)> {
        let prefix = prefix_until(&on_key, t);
        match check_history_with(&prefix, opts).result {
            CheckResult::NotLinearizable {
                ops, explanation, ..
            } => Some((ops, explanation)),
            _ => None,
        }
    };
    // Binary search for the first end time whose prefix fails; the whole history
    // (the last return, or the last call when later calls never returned) must.
    let last = on_key
        .iter()
        .map(|o| o.ret.unwrap_or(o.call).max(o.call))
        .max()?;
    let (mut lo, mut hi) = (0usize, ends.len());
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if fails(ends[mid]).is_some() {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    let end = ends.get(lo).copied().unwrap_or(last);
    let (window, explanation) = fails(end).or_else(|| fails(last))?;
    // The window holds the shortened copies; show the operations as recorded.
    let involved: Vec<HistoryOp> = window
        .iter()
        .filter_map(|w| {
            on_key
                .iter()
                .find(|o| o.client == w.client && o.call == w.call && o.op == w.op)
                .map(|o| (*o).clone())
        })
        .collect();
    let start = involved
        .iter()
        .map(|o| o.call)
        .min()
        .unwrap_or(end)
        .min(end);
    let mut context: Vec<HistoryOp> = on_key
        .iter()
        .filter(|o| o.call <= end && o.ret.is_none_or(|r| r >= start))
        .map(|o| (*o).clone())
        .collect();
    if context.len() > MAX_CONTEXT {
        // Keep the involved operations and those whose calls are nearest the window.
        let distance = |o: &HistoryOp| {
            if involved.contains(o) {
                0
            } else {
                start.saturating_sub(o.call).max(o.call.saturating_sub(end)) + 1
            }
        };
        context.sort_by_key(|o| (distance(o), o.call));
        context.truncate(MAX_CONTEXT);
        context.sort_by_key(|o| o.call);
    }
    Some(ViolationWindow {
        key: key.to_owned(),
        start,
        end,
        involved,
        context,
        explanation: format!(
            "The operations on key {key:?} called by t={end} ns (those still running then \
             counted as unfinished) already cannot be ordered; every shorter prefix can. \
             {explanation}"
        ),
    })
}

/// The operations of `on_key` called by `t`, those returning after `t` with an
/// unknown outcome.
fn prefix_until(on_key: &[&HistoryOp], t: u64) -> Vec<HistoryOp> {
    on_key
        .iter()
        .filter(|o| o.call <= t)
        .map(|o| {
            let mut o = (*o).clone();
            if o.ret.is_some_and(|r| r > t) {
                o.ret = None;
            }
            o
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Op, parse_history};

    fn history(text: &str) -> Vec<HistoryOp> {
        parse_history(text).expect("a valid history")
    }

    #[test]
    fn a_linearizable_key_has_no_window() {
        let h = history(
            r#"{"client":1,"call":0,"ret":10,"body":{"op":"put","key":"k","value":"a"}}
{"client":2,"call":20,"ret":30,"body":{"op":"get","key":"k","out":"a"}}"#,
        );
        assert_eq!(violation_window(&h, "k", &CheckOptions::default()), None);
    }

    #[test]
    fn the_window_ends_at_the_first_return_that_cannot_be_explained() {
        // A long linearizable run on k, a stale read at 1000..1010, then more
        // linearizable operations: the window ends at the stale read's return, and
        // the later operations are not part of it.
        let mut lines = Vec::new();
        for i in 0..50u64 {
            lines.push(format!(
                r#"{{"client":1,"call":{},"ret":{},"body":{{"op":"put","key":"k","value":"v{i}"}}}}"#,
                i * 10,
                i * 10 + 5
            ));
        }
        lines.push(
            r#"{"client":2,"call":1000,"ret":1010,"body":{"op":"get","key":"k","out":"v3"}}"#
                .into(),
        );
        for i in 0..20u64 {
            lines.push(format!(
                r#"{{"client":3,"call":{},"ret":{},"body":{{"op":"get","key":"k","out":"v49"}}}}"#,
                2000 + i * 10,
                2005 + i * 10
            ));
        }
        let h = history(&lines.join("\n"));
        let w = violation_window(&h, "k", &CheckOptions::default()).expect("a violation");
        assert_eq!(w.key, "k");
        assert_eq!(w.end, 1010);
        assert!(w.start <= 1000, "{w:?}");
        assert!(
            w.involved
                .iter()
                .any(|o| o.call == 1000
                    && matches!(&o.op, Op::Get { out: Some(v), .. } if v == "v3")),
            "the stale read is involved: {w:?}"
        );
        assert!(w.context.iter().all(|o| o.call <= 1010), "{w:?}");
        assert!(w.explanation.contains("\"k\""), "{}", w.explanation);
    }

    #[test]
    fn an_operation_still_running_at_the_cut_is_shown_as_recorded() {
        // The put of b is still running when the read of b returns... and the read
        // of a after the put of b returned fails only at 60.
        let h = history(
            r#"{"client":1,"call":0,"ret":10,"body":{"op":"put","key":"k","value":"a"}}
{"client":2,"call":20,"ret":50,"body":{"op":"put","key":"k","value":"b"}}
{"client":3,"call":30,"ret":40,"body":{"op":"get","key":"k","out":"b"}}
{"client":1,"call":45,"ret":60,"body":{"op":"get","key":"k","out":"a"}}"#,
        );
        let w = violation_window(&h, "k", &CheckOptions::default()).expect("a violation");
        assert_eq!(w.end, 60);
        // Ops are reported with their recorded returns, not the shortened copies.
        assert!(w.context.iter().all(|o| o.ret.is_some()), "{w:?}");
        assert!(w.context.iter().any(|o| o.call == 20 && o.ret == Some(50)));
    }
}
