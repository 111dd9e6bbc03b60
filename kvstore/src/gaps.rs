//! `kvstore history-gaps`: how long each partition went without a successful
//! operation, read off a `bench --history` file.
//!
//! A fault test injects a fault at a known time and wants to know how long clients
//! saw no service on the partition the fault hit. For every partition and every
//! window asked for, this prints the longest interval between two consecutive
//! successful returns (an answered operation, whatever its result: a value, not
//! found, a CAS mismatch) among the gaps that overlap the window. The gap is not
//! clipped to the window: it runs from the last success before it to the first
//! after it, so a window only has to contain the fault roughly. A partition that
//! never answered again is reported as not recovered.
//!
//! Times are seconds on the history's clock (`bench` starts it when its sessions
//! start); a key's partition is `partition_of(key_hash(key), partitions)`, as in the
//! store.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use kv_checker::HistoryOp;
use kv_protocols::partition::{key_hash, partition_of};

/// Arguments of `kvstore history-gaps`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The history file (JSON lines, as written by `bench --history`).
    file: PathBuf,
    /// Number of partitions of the cluster that produced the history.
    #[arg(long)]
    partitions: u32,
    /// A window `[NAME=]START..END` in seconds of the history's clock (e.g.
    /// `kill=12.5..20`); repeatable. Without one, the whole history.
    #[arg(long = "window")]
    windows: Vec<String>,
    /// Print one JSON object per window and partition instead of text.
    #[arg(long)]
    json: bool,
}

/// A window of the history, in nanoseconds.
#[derive(Clone, Debug, PartialEq)]
pub struct Window {
    /// Its name (`window` when none was given).
    pub name: String,
    /// Start, ns.
    pub start: u64,
    /// End, ns.
    pub end: u64,
}

/// Parse `[NAME=]START..END` (seconds; START may be negative and is then 0).
pub fn parse_window(s: &str) -> Result<Window, String> {
    let (name, range) = match s.split_once('=') {
        Some((n, r)) => (n.trim().to_string(), r),
        None => ("window".to_string(), s),
    };
    let (a, b) = range
        .split_once("..")
        .ok_or_else(|| format!("{s:?}: expected [NAME=]START..END in seconds, e.g. 12.5..20"))?;
    let secs = |x: &str| -> Result<f64, String> {
        x.trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| format!("{s:?}: {x:?} is not a number of seconds"))
    };
    let (a, b) = (secs(a)?, secs(b)?);
    if b < a {
        return Err(format!("{s:?}: the window ends before it starts"));
    }
    let ns = |v: f64| (v.max(0.0) * 1e9) as u64;
    Ok(Window {
        name,
        start: ns(a),
        end: ns(b),
    })
}

/// What one partition looked like in one window.
#[derive(Clone, Debug, PartialEq)]
pub struct PartitionGap {
    /// The partition.
    pub partition: u32,
    /// Successful returns inside the window.
    pub ok_ops: u64,
    /// Operations called inside the window whose outcome is unknown (timed out).
    pub unknown_ops: u64,
    /// The longest gap overlapping the window, `(from, to)` in ns; `to` is `None`
    /// when no operation on the partition succeeded after `from` (not recovered).
    /// `None` when the partition had no successful operation at all.
    pub gap: Option<(u64, Option<u64>)>,
}

impl PartitionGap {
    /// Length of the gap in ns (to the end of the history when not recovered).
    pub fn gap_ns(&self, history_end: u64) -> Option<u64> {
        self.gap
            .map(|(a, b)| b.unwrap_or(history_end.max(a)).saturating_sub(a))
    }
}

/// Successful return times per partition, sorted.
pub fn returns_by_partition(ops: &[HistoryOp], partitions: u32) -> Vec<Vec<u64>> {
    let mut by = vec![Vec::new(); partitions.max(1) as usize];
    for op in ops {
        if let Some(ret) = op.ret {
            let p = partition_of(key_hash(op.op.key().as_bytes()), partitions.max(1));
            by[p as usize].push(ret);
        }
    }
    for v in &mut by {
        v.sort_unstable();
    }
    by
}

/// The longest gap between consecutive returns in `rets` (sorted) that overlaps
/// `[w.start, w.end]`; the gap before the first return (from the window start when
/// there is none before it) and after the last one count too.
pub fn longest_gap(rets: &[u64], w: &Window) -> Option<(u64, Option<u64>)> {
    // Index of the first return after the window start.
    let first_after = rets.partition_point(|&t| t <= w.start);
    // The gap containing w.start begins at the return before it (or at w.start when
    // the partition had none yet).
    let mut from = if first_after == 0 {
        w.start
    } else {
        rets[first_after - 1]
    };
    let mut best: Option<(u64, Option<u64>)> = None;
    let mut best_len = 0u64;
    let mut i = first_after;
    loop {
        let to = rets.get(i).copied();
        let len = match to {
            Some(t) => t - from,
            None => u64::MAX, // never answered again: longer than any finite gap
        };
        if best.is_none() || len > best_len {
            best = Some((from, to));
            best_len = len;
        }
        match to {
            Some(t) if t < w.end => {
                from = t;
                i += 1;
            }
            _ => break,
        }
    }
    best
}

/// Analyse `ops` for every window (the whole history when `windows` is empty).
pub fn analyse(
    ops: &[HistoryOp],
    partitions: u32,
    windows: &[Window],
) -> Vec<(Window, Vec<PartitionGap>)> {
    let rets = returns_by_partition(ops, partitions);
    let end = history_end(ops);
    let whole = [Window {
        name: "history".to_string(),
        start: 0,
        end,
    }];
    let windows = if windows.is_empty() {
        &whole[..]
    } else {
        windows
    };
    windows
        .iter()
        .map(|w| {
            let per = rets
                .iter()
                .enumerate()
                .map(|(p, r)| {
                    let ok_ops = r.iter().filter(|&&t| t >= w.start && t <= w.end).count() as u64;
                    let unknown_ops = ops
                        .iter()
                        .filter(|o| o.ret.is_none() && o.call >= w.start && o.call <= w.end)
                        .filter(|o| {
                            partition_of(key_hash(o.op.key().as_bytes()), partitions.max(1))
                                == p as u32
                        })
                        .count() as u64;
                    PartitionGap {
                        partition: p as u32,
                        ok_ops,
                        unknown_ops,
                        gap: if r.is_empty() {
                            None
                        } else {
                            longest_gap(r, w)
                        },
                    }
                })
                .collect();
            (w.clone(), per)
        })
        .collect()
}

/// The latest time in the history (a call or a return).
pub fn history_end(ops: &[HistoryOp]) -> u64 {
    ops.iter()
        .map(|o| o.ret.unwrap_or(o.call).max(o.call))
        .max()
        .unwrap_or(0)
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

fn ms(ns: u64) -> f64 {
    (ns as f64 / 1e4).round() / 100.0
}

/// The report as text (or JSON lines).
pub fn render(results: &[(Window, Vec<PartitionGap>)], end: u64, json: bool) -> String {
    let mut out = String::new();
    for (w, per) in results {
        if !json {
            let _ = writeln!(
                out,
                "window {}: {:.3}s..{:.3}s",
                w.name,
                secs(w.start),
                secs(w.end)
            );
        }
        for g in per {
            let recovered = g.gap.is_some_and(|(_, to)| to.is_some());
            if json {
                let v = serde_json::json!({
                    "window": w.name,
                    "start_s": secs(w.start),
                    "end_s": secs(w.end),
                    "partition": g.partition,
                    "longest_gap_ms": g.gap_ns(end).map(ms),
                    "gap_from_s": g.gap.map(|(a, _)| secs(a)),
                    "gap_to_s": g.gap.and_then(|(_, b)| b).map(secs),
                    "recovered": recovered,
                    "ok_ops": g.ok_ops,
                    "unknown_ops": g.unknown_ops,
                });
                let _ = writeln!(out, "{v}");
                continue;
            }
            match g.gap {
                None => {
                    let _ = writeln!(
                        out,
                        "  partition {}: no successful operation in the history",
                        g.partition
                    );
                }
                Some((a, Some(b))) => {
                    let _ = writeln!(
                        out,
                        "  partition {}: longest gap {:.1} ms ({:.3}s..{:.3}s); {} ok, {} unknown-outcome ops in the window",
                        g.partition,
                        ms(b - a),
                        secs(a),
                        secs(b),
                        g.ok_ops,
                        g.unknown_ops
                    );
                }
                Some((a, None)) => {
                    let _ = writeln!(
                        out,
                        "  partition {}: NOT RECOVERED: no successful operation from {:.3}s to the end ({:.3}s); {} ok, {} unknown-outcome ops in the window",
                        g.partition,
                        secs(a),
                        secs(end),
                        g.ok_ops,
                        g.unknown_ops
                    );
                }
            }
        }
    }
    out
}

/// `kvstore history-gaps`: exit 0, 1 when some partition did not recover inside a
/// window's history, 2 on bad arguments or an unreadable file.
pub fn run(args: &Args) -> ExitCode {
    if args.partitions == 0 {
        eprintln!("kvstore: --partitions must be at least 1");
        return ExitCode::from(2);
    }
    let mut windows = Vec::new();
    for w in &args.windows {
        match parse_window(w) {
            Ok(w) => windows.push(w),
            Err(e) => {
                eprintln!("kvstore: --window {e}");
                return ExitCode::from(2);
            }
        }
    }
    let text = match std::fs::read_to_string(&args.file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("kvstore: {}: {e}", args.file.display());
            return ExitCode::from(2);
        }
    };
    let ops = match kv_checker::parse_history(&text) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("kvstore: {}:{}: {}", args.file.display(), e.line, e.message);
            return ExitCode::from(2);
        }
    };
    let results = analyse(&ops, args.partitions, &windows);
    print!("{}", render(&results, history_end(&ops), args.json));
    let unrecovered = results
        .iter()
        .flat_map(|(_, per)| per)
        .any(|g| matches!(g.gap, Some((_, None))));
    if unrecovered {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kv_checker::Op;

    fn get(key: &str, call: u64, ret: Option<u64>) -> HistoryOp {
        HistoryOp {
            client: 1,
            call,
            ret,
            op: Op::Get {
                key: key.to_string(),
                out: None,
            },
        }
    }

    fn w(start: u64, end: u64) -> Window {
        Window {
            name: "w".to_string(),
            start,
            end,
        }
    }

    #[test]
    fn windows_parse_with_and_without_a_name() {
        assert_eq!(
            parse_window("1.5..2").unwrap(),
            Window {
                name: "window".to_string(),
                start: 1_500_000_000,
                end: 2_000_000_000
            }
        );
        let k = parse_window("kill=-1..3").unwrap();
        assert_eq!(
            (k.name.as_str(), k.start, k.end),
            ("kill", 0, 3_000_000_000)
        );
        assert!(parse_window("3..1").is_err());
        assert!(parse_window("abc").is_err());
        assert!(parse_window("x=1..y").is_err());
    }

    #[test]
    fn the_longest_gap_overlapping_the_window_is_found_unclipped() {
        let rets = [10, 20, 30, 100, 110, 400, 410];
        // The 110..400 gap overlaps 105..120 only partly; it is still reported whole.
        assert_eq!(longest_gap(&rets, &w(105, 120)), Some((110, Some(400))));
        // 30..100 is the longest overlapping 25..105.
        assert_eq!(longest_gap(&rets, &w(25, 105)), Some((30, Some(100))));
        // A window past the last return: never answered again.
        assert_eq!(longest_gap(&rets, &w(0, 1000)), Some((410, None)));
        // Up to the last return: 110..400 is the longest.
        assert_eq!(longest_gap(&rets, &w(0, 410)), Some((110, Some(400))));
        // Nothing after 410: a window past it is not recovered.
        assert_eq!(longest_gap(&rets, &w(500, 600)), Some((410, None)));
        // A window before the first return measures from the window start.
        assert_eq!(longest_gap(&rets, &w(0, 5)), Some((0, Some(10))));
    }

    #[test]
    fn partitions_are_those_of_the_store_and_unknowns_are_counted() {
        // Find one key in each of two partitions.
        let key_in = |p: u32| {
            (0..)
                .map(|i| format!("k{i}"))
                .find(|k| partition_of(key_hash(k.as_bytes()), 2) == p)
                .unwrap()
        };
        let (a, b) = (key_in(0), key_in(1));
        let ops = vec![
            get(&a, 0, Some(10)),
            get(&b, 0, Some(12)),
            get(&a, 10, Some(500)),
            get(&b, 12, Some(20)),
            get(&b, 20, None),
            get(&b, 25, Some(30)),
            get(&a, 500, Some(510)),
            get(&b, 30, Some(600)),
        ];
        let r = analyse(&ops, 2, &[w(0, 500)]);
        let per = &r[0].1;
        assert_eq!(per[0].gap, Some((10, Some(500))));
        assert_eq!(per[0].ok_ops, 2);
        assert_eq!(per[1].gap, Some((30, Some(600))));
        assert_eq!(per[1].unknown_ops, 1);
        let text = render(&r, history_end(&ops), false);
        assert!(text.contains("partition 0: longest gap"), "{text}");
        let json = render(&r, history_end(&ops), true);
        assert_eq!(json.lines().count(), 2);
    }
}
