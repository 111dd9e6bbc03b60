//! The Redis gateway (`resp-address`) on a cluster of three `kvstore start`
//! processes on loopback:
//!
//! - a raw RESP session: every command the gateway implements, pipelined, each
//!   reply compared byte for byte, RESP3 after `HELLO 3`; bad input (a huge bulk
//!   length, a nested array, an endless line) is answered with an error and only
//!   that connection is closed;
//! - `redis-cli` (Debian's `redis-tools`): SET/GET/DEL/EXISTS/SET NX/CAS/MGET/MSET,
//!   each reply checked;
//! - redis-py: a scripted session, pipelining included;
//! - `redis-benchmark -t set,get` completes without an error.
//!
//! The last three need the tools: without them they are skipped with a message,
//! unless `KVSTORE_REQUIRE_REDIS_TOOLS` is set (CI sets it, and installs them).
//! Waits poll a condition with a bound; nothing sleeps to synchronise.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use common::{Cluster, WAIT, wait_until};

/// Starts three nodes, each with a gateway on a free port; returns the cluster and
/// the gateways' addresses.
fn cluster(name: &str) -> (Cluster, Vec<SocketAddr>) {
    let mut c = Cluster::start_with(name, 3, 2, 3, "resp-address = \"127.0.0.1:0\"");
    let mut gateways = Vec::new();
    for n in &mut c.nodes {
        n.wait_for_log("serving the Redis protocol on", WAIT);
        let log = n.log_text();
        let line = log
            .lines()
            .find(|l| l.contains("serving the Redis protocol on"))
            .expect("the line");
        let addr: SocketAddr = line
            .rsplit(' ')
            .next()
            .and_then(|a| a.trim().parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        gateways.push(addr);
    }
    // The cluster serves through the first gateway.
    wait_until("the gateway serves a write", WAIT, || {
        exchange(
            gateways[0],
            b"*3\r\n$3\r\nSET\r\n$5\r\nready\r\n$1\r\n1\r\n",
            1,
        )
        .is_ok_and(|r| r == b"+OK\r\n")
    });
    (c, gateways)
}

/// Sends `req` on a new connection and reads until `replies` complete replies
/// arrived (or the connection closed); returns the bytes read.
fn exchange(gw: SocketAddr, req: &[u8], replies: usize) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect_timeout(&gw, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(15)))?;
    s.write_all(req)?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while count_replies(&got) < replies {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    Ok(got)
}

/// Complete top-level replies in `b` (a small RESP reader for the test).
fn count_replies(b: &[u8]) -> usize {
    fn one(b: &[u8], at: usize) -> Option<usize> {
        let end = at + b.get(at..)?.windows(2).position(|w| w == b"\r\n")?;
        let head = std::str::from_utf8(&b[at + 1..end]).ok()?;
        let next = end + 2;
        match b[at] {
            b'+' | b'-' | b':' | b'_' | b',' | b'#' => Some(next),
            b'$' => {
                let n: i64 = head.parse().ok()?;
                if n < 0 {
                    Some(next)
                } else {
                    let stop = next + n as usize + 2;
                    (b.len() >= stop).then_some(stop)
                }
            }
            b'*' | b'%' => {
                let n: i64 = head.parse().ok()?;
                let items = if b[at] == b'%' { 2 * n } else { n };
                let mut p = next;
                for _ in 0..items.max(0) {
                    p = one(b, p)?;
                }
                Some(p)
            }
            _ => None,
        }
    }
    let mut n = 0;
    let mut at = 0;
    while at < b.len() {
        match one(b, at) {
            Some(next) => {
                n += 1;
                at = next;
            }
            None => break,
        }
    }
    n
}

fn cmd(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    out
}

#[test]
fn a_pipelined_raw_session_gets_every_reply_in_order_and_bad_input_only_closes_its_connection() {
    let (mut c, gws) = cluster("resp-raw");
    let script: Vec<(Vec<u8>, &str)> = vec![
        (cmd(&["PING"]), "+PONG\r\n"),
        (cmd(&["SET", "a", "1"]), "+OK\r\n"),
        (cmd(&["GET", "a"]), "$1\r\n1\r\n"),
        (cmd(&["SET", "a", "2", "NX"]), "$-1\r\n"),
        (cmd(&["SET", "a", "3", "XX"]), "+OK\r\n"),
        (cmd(&["SET", "fresh", "x", "XX"]), "$-1\r\n"),
        (cmd(&["SETNX", "b", "x"]), ":1\r\n"),
        (cmd(&["SETNX", "b", "y"]), ":0\r\n"),
        (cmd(&["EXISTS", "a", "b", "missing"]), ":2\r\n"),
        (cmd(&["DEL", "a", "b", "missing"]), ":2\r\n"),
        (cmd(&["EXISTS", "a", "b"]), ":0\r\n"),
        (cmd(&["MSET", "k1", "v1", "k2", "v2"]), "+OK\r\n"),
        (
            cmd(&["MGET", "k1", "nope", "k2"]),
            "*3\r\n$2\r\nv1\r\n$-1\r\n$2\r\nv2\r\n",
        ),
        (cmd(&["CAS", "k1", "v1", "w1"]), ":1\r\n"),
        (cmd(&["CAS", "k1", "v1", "w2"]), ":0\r\n"),
        (cmd(&["GET", "k1"]), "$2\r\nw1\r\n"),
        (cmd(&["SET", "a", "1", "NX", "XX"]), "-ERR syntax error\r\n"),
        (
            cmd(&["SET", "a", "1", "EX", "10"]),
            "-ERR expiry is not supported by this store\r\n",
        ),
        (
            cmd(&["SET", "k"]),
            "-ERR wrong number of arguments for 'set' command\r\n",
        ),
        (
            cmd(&["FLUSHALL", "x"]),
            "-ERR unknown command 'flushall', with args beginning with: 'x'\r\n",
        ),
        (b"ECHO \"two words\"\r\n".to_vec(), "$9\r\ntwo words\r\n"),
        (cmd(&["SELECT", "0"]), "+OK\r\n"),
        (
            cmd(&["CONFIG", "GET", "appendonly"]),
            "*2\r\n$10\r\nappendonly\r\n$2\r\nno\r\n",
        ),
        (cmd(&["HELLO", "3"]), ""),
        (cmd(&["GET", "nope"]), "_\r\n"),
        (
            cmd(&["CONFIG", "GET", "save"]),
            "%1\r\n$4\r\nsave\r\n$0\r\n\r\n",
        ),
    ];
    let req: Vec<u8> = script.iter().flat_map(|(r, _)| r.clone()).collect();
    let got = exchange(gws[1], &req, script.len()).expect("the session");
    let text = String::from_utf8_lossy(&got).to_string();
    // Compare reply by reply (HELLO's map is checked for its shape only).
    let mut at = 0;
    for (i, (_, want)) in script.iter().enumerate() {
        let rest = &got[at..];
        let len = {
            let mut n = 1;
            while count_replies(&rest[..n]) < 1 {
                n += 1;
                assert!(n <= rest.len(), "reply {i} incomplete in {text:?}");
            }
            n
        };
        let reply = String::from_utf8_lossy(&rest[..len]).to_string();
        if want.is_empty() {
            assert!(reply.starts_with("%7\r\n"), "HELLO 3 → {reply:?}");
            assert!(reply.contains("proto\r\n:3\r\n"), "{reply:?}");
        } else {
            assert_eq!(
                reply,
                *want,
                "reply {i} to {:?}",
                String::from_utf8_lossy(&script[i].0)
            );
        }
        at += len;
    }
    assert_eq!(at, got.len(), "more replies than commands: {text:?}");

    // Bad input: an error, then that connection is closed; the gateway goes on.
    for (bad, error) in [
        (
            &b"*1\r\n$99999999999\r\n"[..],
            "-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            &b"*1\r\n*1\r\n$4\r\nPING\r\n"[..],
            "-ERR Protocol error: expected '$', got '*'\r\n",
        ),
        (
            &b"*99999999999\r\n"[..],
            "-ERR Protocol error: invalid multibulk length\r\n",
        ),
    ] {
        let got = exchange(gws[2], bad, 2).expect("an answer");
        assert_eq!(String::from_utf8_lossy(&got), error);
    }
    let endless = vec![b'a'; 200 * 1024];
    let got = exchange(gws[2], &endless, 2).expect("an answer");
    assert_eq!(
        String::from_utf8_lossy(&got),
        "-ERR Protocol error: too big inline request\r\n"
    );
    let got = exchange(gws[2], &cmd(&["GET", "k2"]), 1).expect("still serving");
    assert_eq!(got, b"$2\r\nv2\r\n");
    for n in &mut c.nodes {
        assert!(!n.log_text().contains("panicked") && n.exited().is_none());
    }
}

/// Whether `tool` can be run; without it the test is skipped, unless CI asks for
/// the Redis tools.
fn have(tool: &str, probe: &[&str]) -> bool {
    let ok = Command::new(tool)
        .args(probe)
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("KVSTORE_REQUIRE_REDIS_TOOLS").is_none(),
            "{tool} is required (KVSTORE_REQUIRE_REDIS_TOOLS is set) but cannot be run"
        );
        eprintln!(
            "skipped: {tool} is not installed (apt-get install redis-tools; pip install redis)"
        );
    }
    ok
}

fn redis_cli(gw: SocketAddr, args: &[&str]) -> String {
    let port = gw.port().to_string();
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port])
        .args(args)
        .output()
        .expect("run redis-cli");
    assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim_end().to_string()
}

#[test]
fn redis_cli_drives_the_cluster() {
    if !have("redis-cli", &["--version"]) {
        return;
    }
    let (_c, gws) = cluster("resp-cli");
    let g = gws[0];
    let steps: &[(&[&str], &str)] = &[
        (&["PING"], "PONG"),
        (&["SET", "user:1", "ada"], "OK"),
        (&["GET", "user:1"], "ada"),
        (&["SET", "user:1", "bob", "NX"], ""),
        (&["SET", "user:2", "bob", "NX"], "OK"),
        (&["EXISTS", "user:1", "user:2", "user:3"], "2"),
        (&["CAS", "user:1", "ada", "alan"], "1"),
        (&["CAS", "user:1", "ada", "grace"], "0"),
        (&["MSET", "a", "1", "b", "2"], "OK"),
        (&["MGET", "a", "b", "user:1", "none"], "1\n2\nalan"),
        (&["DEL", "a", "b", "none"], "2"),
        (&["GET", "a"], ""),
        (
            &["DBSIZE"],
            "ERR unknown command 'dbsize', with args beginning with:",
        ),
    ];
    for (args, want) in steps {
        assert_eq!(redis_cli(g, args), *want, "redis-cli {args:?}");
    }
    // Through another node's gateway, the same data.
    assert_eq!(redis_cli(gws[2], &["GET", "user:1"]), "alan");
    assert!(redis_cli(g, &["INFO"]).contains("redis_version:"));
}

#[test]
fn redis_py_runs_a_scripted_session_with_pipelining() {
    if !have("python3", &["-c", "import redis"]) {
        return;
    }
    let (_c, gws) = cluster("resp-py");
    let script = format!(
        r#"
import redis
r = redis.Redis(host="127.0.0.1", port={port}, decode_responses=True)
assert r.ping() is True
assert r.set("py:a", "1") is True
assert r.get("py:a") == "1"
assert r.set("py:a", "2", nx=True) is None
assert r.set("py:b", "x", nx=True) is True
assert r.exists("py:a", "py:b", "py:c") == 2
assert r.execute_command("CAS", "py:a", "1", "10") == 1
assert r.delete("py:b", "py:c") == 1
p = r.pipeline(transaction=False)
for i in range(50):
    p.set(f"py:k{{i}}", str(i))
for i in range(50):
    p.get(f"py:k{{i}}")
out = p.execute()
assert out[:50] == [True] * 50, out[:50]
assert out[50:] == [str(i) for i in range(50)], out[50:]
assert r.mget(["py:a", "py:k7", "py:none"]) == ["10", "7", None]
try:
    r.execute_command("NOSUCH")
    raise SystemExit("an unknown command did not fail")
except redis.ResponseError as e:
    assert "unknown command" in str(e), e
r3 = redis.Redis(host="127.0.0.1", port={port}, protocol=3, decode_responses=True)
assert r3.get("py:a") == "10"
assert r3.get("py:none") is None
print("redis-py session ok")
"#,
        port = gws[1].port()
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "redis-py: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn redis_benchmark_completes_without_errors() {
    if !have("redis-benchmark", &["--version"]) {
        return;
    }
    let (_c, gws) = cluster("resp-bench");
    let port = gws[0].port().to_string();
    let out = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &port])
        .args(["-t", "set,get", "-n", "20000", "-c", "50", "-q"])
        .output()
        .expect("run redis-benchmark");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("redis-benchmark: {stdout}");
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // `-q` prints one line per test, the last figure after a carriage return.
    for t in ["SET:", "GET:"] {
        assert!(stdout.contains(t), "no {t} result: {stdout}");
    }
    let lower = stdout.to_lowercase();
    assert!(!lower.contains("error"), "{stdout}");
}
