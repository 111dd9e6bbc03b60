//! The page `kvstore check-history --html FILE` writes: for a history that is not
//! linearizable, the operations on the offending key as a timeline around the
//! shortest stretch that cannot be ordered ([`kv_checker::violation_window`]); for
//! any other verdict, a page that states it.

use kv_checker::{CheckResult, HistoryOp, Report, ViolationWindow};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::report::{draw_svg, err, escape, page_head};

/// Longest label on a bar; longer ones are cut with an ellipsis.
const LABEL_CHARS: usize = 44;

/// `s` cut to `max` characters, with an ellipsis when cut.
fn short(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let cut: String = s.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

/// The label of an operation's bar: the operation and its result as the checker
/// prints it, without the client and times (the picture shows those), e.g.
/// `put("k", "v")`, `get("k") -> "v"`, `cas("k", "a" -> "b") -> true`.
pub fn label(op: &HistoryOp) -> String {
    // Display is `client C [CALL, RET] OPERATION`; every kind of operation the
    // history format has is printed there, so the picture follows it.
    let shown = op.to_string();
    let text = shown
        .split_once("] ")
        .map_or(shown.as_str(), |(_, rest)| rest);
    short(text, LABEL_CHARS)
}

const INVOLVED: RGBColor = RGBColor(230, 120, 20);
const OTHER: RGBColor = RGBColor(150, 170, 200);
const CUT: RGBColor = RGBColor(200, 30, 30);

/// The timeline of `w`: one row per client, each operation a bar from its call to
/// its return (an unknown outcome runs to the right edge), the checker's window in
/// orange, the rest of the key's operations in grey-blue, the stretch that cannot
/// be ordered shaded red and its end marked.
pub fn timeline_svg(w: &ViolationWindow) -> Result<String, String> {
    let mut clients: Vec<u64> = w.context.iter().map(|o| o.client).collect();
    clients.sort_unstable();
    clients.dedup();
    let rows = clients.len().max(1);
    let lo = w
        .context
        .iter()
        .map(|o| o.call)
        .min()
        .unwrap_or(w.start)
        .min(w.start);
    let span = (w.end - lo).max(1) as f64;
    // A margin after the cut: operations still running then show as running on.
    let hi_ns = w.end as f64 + span * 0.12;
    // Times in ms from the first call shown (µs when the whole picture is shorter
    // than 2 ms).
    let (unit, scale) = if span < 2e6 {
        ("µs", 1e3)
    } else {
        ("ms", 1e6)
    };
    let x = |t: f64| (t - lo as f64) / scale;
    let x_hi = x(hi_ns);
    // Room on the left for the client names.
    let x_lo = -x_hi * 0.14;
    let height = 110 + 34 * rows as u32;
    draw_svg((1000, height), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(
                format!("Operations on key {:?}", short(&w.key, 60)),
                ("sans-serif", 20),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(0)
            .build_cartesian_2d(x_lo..x_hi, 0.0..rows as f64)
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .disable_y_axis()
            .x_desc(format!(
                "{unit} after t={lo} ns (the history's clock; the cut is at t={} ns)",
                w.end
            ))
            .x_label_formatter(&|v| {
                if *v < 0.0 {
                    String::new()
                } else {
                    format!("{v:.1}")
                }
            })
            .draw()
            .map_err(err)?;
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(x(w.start as f64), 0.0), (x(w.end as f64), rows as f64)],
                CUT.mix(0.07).filled(),
            )))
            .map_err(err)?;
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(x(w.end as f64), 0.0), (x(w.end as f64), rows as f64)],
                CUT.stroke_width(2),
            )))
            .map_err(err)?;
        chart
            .draw_series(std::iter::once(Text::new(
                "cannot be ordered by here ".to_string(),
                (x(w.end as f64), rows as f64),
                ("sans-serif", 12)
                    .into_font()
                    .color(&CUT)
                    .pos(Pos::new(HPos::Right, VPos::Top)),
            )))
            .map_err(err)?;
        // Row r (from the top) is client clients[r].
        let row_of = |client: u64| {
            let r = clients.iter().position(|&c| c == client).unwrap_or(0);
            (rows - 1 - r) as f64
        };
        for (r, c) in clients.iter().enumerate() {
            let y = (rows - 1 - r) as f64 + 0.5;
            chart
                .draw_series(std::iter::once(Text::new(
                    format!("client {c}"),
                    (x_lo, y),
                    ("sans-serif", 13).into_font().color(&BLACK),
                )))
                .map_err(err)?;
        }
        // Operations called at the same time by one client (retries recorded
        // twice) would overprint; alternate their label heights.
        for (i, op) in w.context.iter().enumerate() {
            let y = row_of(op.client);
            let involved = w.involved.contains(op);
            let colour = if involved { INVOLVED } else { OTHER };
            let end = op.ret.map_or(hi_ns, |r| (r as f64).min(hi_ns));
            let (x0, x1) = (x(op.call as f64), x(end).max(x(op.call as f64)));
            let bar = if op.ret.is_some() {
                colour.mix(0.85).filled()
            } else {
                colour.mix(0.35).filled()
            };
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(x0, y + 0.18), (x1, y + 0.62)],
                    bar,
                )))
                .map_err(err)?;
            // Ticks at call and return, so short operations still show.
            let mut ticks = vec![x0];
            if op.ret.is_some_and(|r| (r as f64) <= hi_ns) {
                ticks.push(x1);
            }
            chart
                .draw_series(ticks.into_iter().map(|t| {
                    PathElement::new(vec![(t, y + 0.12), (t, y + 0.68)], colour.stroke_width(2))
                }))
                .map_err(err)?;
            let dy = if i % 2 == 0 { 0.9 } else { 0.78 };
            // Labels of bars in the right part end at the bar's end, so that they
            // stay inside the picture.
            let (at, h) = if x0 > x_hi * 0.6 {
                (x1, HPos::Right)
            } else {
                (x0, HPos::Left)
            };
            chart
                .draw_series(std::iter::once(Text::new(
                    label(op),
                    (at, y + dy),
                    ("sans-serif", 11)
                        .into_font()
                        .color(&BLACK)
                        .pos(Pos::new(h, VPos::Top)),
                )))
                .map_err(err)?;
        }
        Ok(())
    })
}

/// The page for `report` on the history in `file`; `window` is where a
/// non-linearizable history fails (ignored for the other verdicts).
pub fn history_page(
    file: &str,
    report: &Report,
    window: Option<&ViolationWindow>,
) -> Result<String, String> {
    let stats = format!(
        "{} operations on {} keys, {} with unknown outcome",
        report.ops, report.keys, report.unknown_outcome
    );
    let mut html;
    match (&report.result, window) {
        (CheckResult::Linearizable, _) => {
            html = page_head("History is linearizable");
            html.push_str(&format!(
                "<p><code>{}</code>: {}. Every operation can be given one instant between \
                 its call and its return such that, in that order, every result is what a \
                 plain map would return; there is nothing to draw.</p>\n",
                escape(file),
                escape(&stats)
            ));
        }
        (CheckResult::Unknown { key }, _) => {
            html = page_head("History not decided");
            html.push_str(&format!(
                "<p><code>{}</code>: {}. The search on key <code>{}</code> exceeded its step \
                 budget, and no key was found not linearizable: the history may or may not be \
                 linearizable (see docs/checker.md, Limits).</p>\n",
                escape(file),
                escape(&stats),
                escape(key)
            ));
        }
        (CheckResult::NotLinearizable { key, .. }, Some(w)) => {
            html = page_head(&format!("History NOT linearizable on key {key:?}"));
            html.push_str(&format!(
                "<p><code>{}</code>: {}.</p>\n<p>{}</p>\n",
                escape(file),
                escape(&stats),
                escape(&w.explanation)
            ));
            html.push_str(&timeline_svg(w)?);
            html.push_str(&format!(
                "\n<p class=\"note\">One row per client; each operation on key <code>{}</code> \
                 is a bar from its call to its return. Orange: the operations the checker \
                 names (where its search got stuck, the last operation it could order before, \
                 those overlapping it, and the writers of the value it needed); grey-blue: the \
                 key's other operations in the picture. Pale bars had no return by the cut \
                 (still running, or given up on: outcome unknown). The red line is the \
                 earliest time by which the key's operations called so far admit no valid \
                 order; every earlier cut does.</p>\n",
                escape(key)
            ));
            html.push_str(
                "<h2>Operations named by the checker</h2>\n<table>\n\
                 <tr><th>client</th><th>call (ns)</th><th>return (ns)</th><th>operation</th></tr>\n",
            );
            for op in &w.involved {
                html.push_str(&format!(
                    "<tr><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td></tr>\n",
                    op.client,
                    op.call,
                    op.ret.map_or_else(|| "unknown".to_string(), |r| r.to_string()),
                    escape(&label(op))
                ));
            }
            html.push_str("</table>\n");
        }
        (CheckResult::NotLinearizable { key, .. }, None) => {
            // The whole history failed on `key` but no prefix search result is at
            // hand (the search gave up on every prefix): state it without a picture.
            html = page_head(&format!("History NOT linearizable on key {key:?}"));
            html.push_str(&format!(
                "<p><code>{}</code>: {}.</p>\n<pre>{}</pre>\n",
                escape(file),
                escape(&stats),
                escape(&report.to_string())
            ));
        }
    }
    html.push_str("</body>\n</html>\n");
    Ok(html)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kv_checker::{CheckOptions, check_history_with, parse_history, violation_window};

    const STALE_READ: &str = r#"{"client":1,"call":0,"ret":10,"body":{"op":"put","key":"other","value":"x"}}
{"client":1,"call":100,"ret":200,"body":{"op":"put","key":"acct<7>","value":"a"}}
{"client":2,"call":300,"ret":400,"body":{"op":"put","key":"acct<7>","value":"b"}}
{"client":3,"call":350,"body":{"op":"cas","key":"acct<7>","from":"b","to":"c"},"unknown":true}
{"client":3,"call":500,"ret":600,"body":{"op":"get","key":"acct<7>","out":"a"}}"#;

    fn page_for(text: &str) -> String {
        let ops = parse_history(text).unwrap();
        let opts = CheckOptions::default();
        let report = check_history_with(&ops, &opts);
        let w = match &report.result {
            CheckResult::NotLinearizable { key, .. } => violation_window(&ops, key, &opts),
            _ => None,
        };
        history_page("h.jsonl", &report, w.as_ref()).unwrap()
    }

    #[test]
    fn a_violation_is_drawn_with_its_key_and_operations() {
        let html = page_for(STALE_READ);
        assert!(
            html.contains("NOT linearizable on key &quot;acct&lt;7&gt;&quot;"),
            "{html}"
        );
        assert_eq!(html.matches("<svg").count(), 1);
        for s in [
            "client 1",
            "client 2",
            "client 3",
            "get(&quot;acct&lt;7&gt;&quot;) -&gt; &quot;a&quot;",
            "put(&quot;acct&lt;7&gt;&quot;, &quot;b&quot;)",
            "cannot be ordered by here",
        ] {
            assert!(html.contains(s), "{s:?} missing from {html}");
        }
        // The unrelated key is not in the picture.
        assert!(!html.contains("&quot;x&quot;"));
    }

    #[test]
    fn a_linearizable_history_gets_a_page_that_says_so() {
        let html = page_for(
            r#"{"client":1,"call":0,"ret":10,"body":{"op":"put","key":"k","value":"a"}}
{"client":2,"call":20,"ret":30,"body":{"op":"get","key":"k","out":"a"}}"#,
        );
        assert!(html.contains("History is linearizable"));
        assert!(html.contains("2 operations on 1 keys"));
        assert!(!html.contains("<svg"));
    }

    #[test]
    fn labels_name_the_operation_and_its_result() {
        let ops = parse_history(STALE_READ).unwrap();
        assert_eq!(label(&ops[1]), "put(\"acct<7>\", \"a\")");
        assert_eq!(label(&ops[3]), "cas(\"acct<7>\", \"b\" -> \"c\") -> ?");
        assert_eq!(label(&ops[4]), "get(\"acct<7>\") -> \"a\"");
        assert_eq!(short("abcdef", 4), "abc…");
        assert_eq!(short("abcd", 4), "abcd");
    }
}
