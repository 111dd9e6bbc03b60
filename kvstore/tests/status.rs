//! `kvstore status` and the metrics endpoint, on a cluster of `kvstore start`
//! processes on loopback (issue 10 "Done when").
//!
//! Three nodes with `metrics-address` set; the test finds the leader with
//! `kvstore status --json`, kills it with SIGKILL, and polls until `status` reports
//! a new, confirmed leader, the killed node as not answering and as suspected by
//! every survivor. The metrics are scraped over HTTP and parsed (name, labels,
//! value): operation counters and the latency histogram move with `kvstore put`,
//! and the suspicion and leader-change counters move with the kill.
//!
//! Waits poll a condition every 20 ms up to a 30 s cap (`common::wait_until`);
//! nothing sleeps for a fixed time. Every child process is killed by a drop guard.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{Node, Run, Scratch, WAIT, free_addrs, run, wait_until};
use serde_json::Value;

/// Per-node wait of `kvstore status` while a node may be down.
const STATUS_TIMEOUT: &str = "500ms";

// ---------------------------------------------------------------------------------
// Prometheus text format

/// One sample: `name{label="value",...} number`.
#[derive(Clone, Debug, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the Prometheus text format (comments skipped); panics, naming the line, on
/// anything malformed, since the endpoint must never produce that.
fn parse_prometheus(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .unwrap_or_else(|| panic!("no value in {line:?}"));
        let name = &line[..name_end];
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line:?}"
        );
        let (labels, rest) = match line[name_end..].strip_prefix('{') {
            Some(body) => parse_labels(body, line),
            None => (BTreeMap::new(), &line[name_end..]),
        };
        let value = rest.trim();
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse::<f64>()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        out.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    out
}

/// Parses `a="x",b="y"}` (the text after `{`); returns the labels and the text
/// after the `}`.
fn parse_labels<'a>(mut rest: &'a str, line: &str) -> (BTreeMap<String, String>, &'a str) {
    let mut labels = BTreeMap::new();
    loop {
        if let Some(r) = rest.strip_prefix('}') {
            return (labels, r);
        }
        let eq = rest.find('=').unwrap_or_else(|| panic!("no = in {line:?}"));
        let key = rest[..eq].to_string();
        assert!(
            !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "bad label name in {line:?}"
        );
        rest = rest[eq + 1..]
            .strip_prefix('"')
            .unwrap_or_else(|| panic!("unquoted label value in {line:?}"));
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let close = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => panic!("dangling escape in {line:?}"),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => panic!("unterminated label value in {line:?}"),
            }
        };
        labels.insert(key, value);
        rest = &rest[close + 1..];
        if let Some(r) = rest.strip_prefix(',') {
            rest = r;
        } else if !rest.starts_with('}') {
            panic!("expected , or }} after a label in {line:?}");
        }
    }
}

/// A scrape of one node's metrics.
struct Scrape(Vec<Sample>);

impl Scrape {
    /// The sum of the samples named `name` whose labels include `labels`.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .sum()
    }

    /// The one sample named `name` with exactly `labels`; panics if absent.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.0
            .iter()
            .find(|s| s.name == name && s.labels == want)
            .unwrap_or_else(|| panic!("no sample {name}{want:?}"))
            .value
    }
}

/// `GET path` over plain HTTP/1.1; returns (status code, body).
fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read the answer");
    let (head, body) = resp
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {resp:?}"));
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line in {head:?}"));
    (code, body.to_string())
}

fn scrape(addr: SocketAddr) -> Scrape {
    let (code, body) = http_get(addr, "/metrics");
    assert_eq!(code, 200, "{body}");
    Scrape(parse_prometheus(&body))
}

// ---------------------------------------------------------------------------------
// The cluster

struct MetricsCluster {
    nodes: Vec<Node>,
    /// `metrics[i]` is the metrics address of `nodes[i]`.
    metrics: Vec<SocketAddr>,
    _scratch: Scratch,
}

impl MetricsCluster {
    fn start(n: usize) -> MetricsCluster {
        let scratch = Scratch::new("status");
        let addrs = free_addrs(2 * n);
        let (node_addrs, metrics) = addrs.split_at(n);
        let bootstrap = node_addrs[0];
        let mut nodes = Vec::new();
        for (i, (a, m)) in node_addrs.iter().zip(metrics).enumerate() {
            let conf = scratch.write(
                &format!("node{}.conf", i + 1),
                &format!(
                    "kvstore {{\n\
                     \x20 address = \"{a}\"\n\
                     \x20 bootstrap-address = \"{bootstrap}\"\n\
                     \x20 boot-threshold = {n}\n\
                     \x20 partitions = 1\n\
                     \x20 replication-degree = 3\n\
                     \x20 metrics-address = \"{m}\"\n\
                     }}\n"
                ),
            );
            let log = scratch.path.join(format!("node{}.log", i + 1));
            nodes.push(Node::start(*a, conf, log, "info"));
        }
        for node in &mut nodes {
            node.wait_for_log("replicas started", WAIT);
        }
        MetricsCluster {
            nodes,
            metrics: metrics.to_vec(),
            _scratch: scratch,
        }
    }

    fn metrics_of(&self, node: SocketAddr) -> SocketAddr {
        let i = self
            .nodes
            .iter()
            .position(|n| n.address == node)
            .expect("a node of the cluster");
        self.metrics[i]
    }
}

fn status_json(endpoint: SocketAddr) -> (Run, Option<Value>) {
    let ep = endpoint.to_string();
    let r = run(&[
        "status",
        "--endpoint",
        &ep,
        "--json",
        "--timeout",
        STATUS_TIMEOUT,
    ]);
    let v = (r.code == Some(0))
        .then(|| serde_json::from_str(r.stdout.trim()).ok())
        .flatten();
    (r, v)
}

fn addr_of(v: &Value) -> Option<SocketAddr> {
    v.as_str()?.parse().ok()
}

/// The confirmed leader of partition 0 in a status document.
fn confirmed_leader(v: &Value) -> Option<(SocketAddr, u64)> {
    let p = &v["partitions"][0];
    if p["leader_confirmed"] != Value::Bool(true) {
        return None;
    }
    Some((addr_of(&p["leader"])?, p["ballot"].as_u64()?))
}

/// The confirmed leader of partition 0, if every replica that answered follows it.
fn agreed_leader(v: &Value) -> Option<(SocketAddr, u64)> {
    let (l, b) = confirmed_leader(v)?;
    let all_follow = v["partitions"][0]["replica_status"]
        .as_array()?
        .iter()
        .filter(|r| r["answered"] == Value::Bool(true))
        .all(|r| addr_of(&r["leader"]) == Some(l) && r["ballot"].as_u64() == Some(b));
    all_follow.then_some((l, b))
}

fn not_answering(v: &Value) -> Vec<SocketAddr> {
    v["not_answering"]
        .as_array()
        .map(|a| a.iter().filter_map(addr_of).collect())
        .unwrap_or_default()
}

/// Whom `node` suspects, if it answered.
fn suspects_of(v: &Value, node: SocketAddr) -> Option<Vec<SocketAddr>> {
    let n = v["nodes"]
        .as_array()?
        .iter()
        .find(|n| addr_of(&n["node"]) == Some(node))?;
    if n["answered"] != Value::Bool(true) {
        return None;
    }
    Some(
        n["suspects"]
            .as_array()?
            .iter()
            .filter_map(addr_of)
            .collect(),
    )
}

fn put(endpoint: SocketAddr, key: &str, value: &str) {
    let ep = endpoint.to_string();
    let r = run(&["put", key, value, "--endpoint", &ep, "--timeout", "10s"]);
    assert_eq!(r.code, Some(0), "{}", r.show());
}

// ---------------------------------------------------------------------------------
// Tests

#[test]
fn status_and_metrics_follow_a_leader_crash() {
    let started = Instant::now();
    let mut c = MetricsCluster::start(3);
    let all: Vec<SocketAddr> = c.nodes.iter().map(|n| n.address).collect();

    // Every node answers and all follow one confirmed leader.
    let mut doc = Value::Null;
    wait_until(
        "status reports every node following one confirmed leader",
        WAIT,
        || match status_json(all[0]) {
            (_, Some(v)) if agreed_leader(&v).is_some() && not_answering(&v).is_empty() => {
                doc = v;
                true
            }
            _ => false,
        },
    );
    let (leader, ballot) = confirmed_leader(&doc).unwrap();
    let p0 = &doc["partitions"][0];
    assert_eq!(p0["hash_first"], "0x0000000000000000");
    assert_eq!(p0["hash_last"], "0xffffffffffffffff");
    let mut replicas: Vec<SocketAddr> = p0["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(addr_of)
        .collect();
    replicas.sort();
    let mut sorted = all.clone();
    sorted.sort();
    assert_eq!(replicas, sorted);

    // The endpoint serves /metrics only, and survives garbage.
    let m0 = c.metrics_of(all[0]);
    assert_eq!(http_get(m0, "/").0, 404);
    {
        let mut s = TcpStream::connect(m0).unwrap();
        s.write_all(b"\x16\x03\x01garbage\r\n\r\n").unwrap();
        let mut resp = String::new();
        let _ = s.read_to_string(&mut resp);
        assert!(resp.starts_with("HTTP/1.1 400 "), "{resp:?}");
    }

    // Operations move the operation counters and the latency histogram.
    let before: Vec<Scrape> = all.iter().map(|n| scrape(c.metrics_of(*n))).collect();
    for i in 0..5 {
        put(all[i % all.len()], &format!("k{i}"), &format!("v{i}"));
    }
    let after: Vec<Scrape> = all.iter().map(|n| scrape(c.metrics_of(*n))).collect();
    let total = |s: &[Scrape], name: &str, labels: &[(&str, &str)]| -> f64 {
        s.iter().map(|x| x.sum(name, labels)).sum()
    };
    let put_ok = [("op", "put"), ("outcome", "ok")];
    assert!(
        total(&after, "kvstore_operations_total", &put_ok)
            >= total(&before, "kvstore_operations_total", &put_ok) + 5.0
    );
    let put_lat = [("op", "put")];
    assert!(
        total(&after, "kvstore_operation_duration_seconds_count", &put_lat)
            >= total(
                &before,
                "kvstore_operation_duration_seconds_count",
                &put_lat
            ) + 5.0
    );
    assert!(
        total(&after, "kvstore_proposals_total", &[])
            >= total(&before, "kvstore_proposals_total", &[]) + 5.0
    );
    let leader_metrics = scrape(c.metrics_of(leader));
    assert!(leader_metrics.get("kvstore_accept_batches_total", &[("partition", "0")]) >= 1.0);
    assert_eq!(
        leader_metrics.get("kvstore_is_leader", &[("partition", "0")]),
        1.0
    );
    for s in &after {
        // Histogram buckets are cumulative and end at the count.
        let buckets: Vec<&Sample> =
            s.0.iter()
                .filter(|x| {
                    x.name == "kvstore_operation_duration_seconds_bucket"
                        && x.labels.get("op").map(String::as_str) == Some("put")
                })
                .collect();
        assert!(buckets.windows(2).all(|w| w[0].value <= w[1].value));
        let inf = buckets.last().expect("buckets");
        assert_eq!(inf.labels["le"], "+Inf");
        assert_eq!(
            inf.value,
            s.get("kvstore_operation_duration_seconds_count", &put_lat)
        );
        assert!(s.get("kvstore_log_length", &[("partition", "0")]) >= 5.0);
        assert_eq!(s.get("kvstore_suspected_nodes", &[]), 0.0);
    }

    // Kill the leader.
    let survivors: Vec<SocketAddr> = all.iter().copied().filter(|n| *n != leader).collect();
    let before: BTreeMap<SocketAddr, Scrape> = survivors
        .iter()
        .map(|n| (*n, scrape(c.metrics_of(*n))))
        .collect();
    c.nodes
        .iter_mut()
        .find(|n| n.address == leader)
        .unwrap()
        .kill();
    let killed_at = Instant::now();

    let mut last = None;
    wait_until(
        "status reports a new leader and the killed node as suspected and silent",
        WAIT,
        || {
            let (r, v) = status_json(survivors[0]);
            let done = v.as_ref().is_some_and(|v| {
                agreed_leader(v).is_some_and(|(l, b)| l != leader && b > ballot)
                    && not_answering(v) == vec![leader]
                    && survivors
                        .iter()
                        .all(|s| suspects_of(v, *s).is_some_and(|x| x == vec![leader]))
            });
            last = Some(r);
            done
        },
    );
    let failover = killed_at.elapsed();
    let last = last.unwrap();
    let doc: Value = serde_json::from_str(last.stdout.trim()).unwrap();
    let (new_leader, _) = confirmed_leader(&doc).unwrap();
    assert!(survivors.contains(&new_leader));

    // The counters moved accordingly on every survivor.
    for s in &survivors {
        let now = scrape(c.metrics_of(*s));
        let was = &before[s];
        assert!(
            now.get("kvstore_suspicions_total", &[])
                >= was.get("kvstore_suspicions_total", &[]) + 1.0,
            "suspicions on {s}"
        );
        assert!(
            now.get("kvstore_leader_changes_total", &[("partition", "0")])
                >= was.get("kvstore_leader_changes_total", &[("partition", "0")]) + 1.0,
            "leader changes on {s}"
        );
        assert_eq!(now.get("kvstore_suspected_nodes", &[]), 1.0);
        // The failure detector keeps probing the dead node; nothing acknowledges.
        assert!(now.get("kvstore_link_unacked", &[("peer", &leader.to_string())]) >= 1.0);
        assert_eq!(
            now.get("kvstore_is_leader", &[("partition", "0")]),
            if *s == new_leader { 1.0 } else { 0.0 }
        );
    }

    // The store still works, and its counters still move.
    let ok_before = total(
        &survivors
            .iter()
            .map(|n| scrape(c.metrics_of(*n)))
            .collect::<Vec<_>>(),
        "kvstore_operations_total",
        &put_ok,
    );
    put(survivors[0], "after", "crash");
    let ok_after = total(
        &survivors
            .iter()
            .map(|n| scrape(c.metrics_of(*n)))
            .collect::<Vec<_>>(),
        "kvstore_operations_total",
        &put_ok,
    );
    assert!(ok_after >= ok_before + 1.0);

    // The table names the silent node too.
    let ep = survivors[1].to_string();
    let text = run(&["status", "--endpoint", &ep, "--timeout", STATUS_TIMEOUT]);
    assert_eq!(text.code, Some(0), "{}", text.show());
    assert!(
        text.stdout
            .lines()
            .any(|l| l == format!("not answering: {leader}")),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout
            .contains(&format!("leader {new_leader} (ballot")),
        "{}",
        text.stdout
    );

    // The log tells the story: suspicion of the dead node on every survivor.
    for n in c.nodes.iter().filter(|n| !n.killed) {
        let log = n.log_text();
        assert!(log.contains("node suspected"), "{}", log);
        assert!(log.contains("serving metrics"), "{}", log);
    }
    eprintln!(
        "status test: failover seen by `kvstore status` {failover:.2?} after the kill; \
         whole test {:.2?}",
        started.elapsed()
    );
}

#[test]
fn status_of_an_unreachable_endpoint_is_unavailable() {
    let ep = free_addrs(1)[0].to_string();
    let r = run(&["status", "--endpoint", &ep, "--timeout", "300ms"]);
    assert_eq!(r.code, Some(3), "{}", r.show());
    assert!(r.stderr.contains("no answer from"), "{}", r.show());
    assert!(r.stdout.is_empty(), "{}", r.show());
}

#[test]
fn the_prometheus_parser_reads_labels_and_escapes() {
    let s = parse_prometheus(
        "# HELP x y\n# TYPE x counter\nx 1\n\
         y{a=\"1\",b=\"q\\\"u\\\\o\\nte\"} 2.5\nz_bucket{le=\"+Inf\"} 3\nw{} +Inf\n",
    );
    assert_eq!(s.len(), 4);
    assert_eq!(s[0].name, "x");
    assert_eq!(s[0].value, 1.0);
    assert_eq!(s[1].labels["a"], "1");
    assert_eq!(s[1].labels["b"], "q\"u\\o\nte");
    assert_eq!(s[1].value, 2.5);
    assert_eq!(s[2].labels["le"], "+Inf");
    assert_eq!(s[3].value, f64::INFINITY);
}
