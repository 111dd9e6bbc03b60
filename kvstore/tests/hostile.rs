//! Hostile input and stopped processes, on clusters of `kvstore start` processes on
//! loopback (issue 14, "Done when"):
//!
//! - **An attack on every node's port under load.** While a closed-loop workload
//!   runs, threads open connections to every node and send what an attacker would:
//!   a crafted 16-byte transport hello of the kind that used to panic a node's
//!   network thread, random bytes, truncated and oversized frames, handshakes with a
//!   wrong cluster secret and a wrong cluster name, connections that never say
//!   anything, and, with the right secret, data frames that do not decode. Every
//!   node keeps serving, none panics or exits, every node logged the refusals, and
//!   the history stays linearizable. The workload's throughput is measured before,
//!   during and after the attack, in the same test, and the ratio is printed (a
//!   measurement, not asserted).
//! - **SIGSTOP / SIGCONT of each node in turn under load.** Each node is stopped
//!   until another node suspects it, the workload must progress without it, and it
//!   is resumed until it is restored. No panic, every acknowledged write is read
//!   back, and the history is linearizable.
//!
//! Waits poll a condition with a bound; nothing sleeps to synchronise (the
//! attackers and the workload pace themselves, which is load shape, not
//! synchronisation).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::workload::{Workload, assert_linearizable};
use common::{Cluster, Node, WAIT, run, wait_until};
use kv_client::ClientOptions;
use kv_protocols::rng::SplitMix64;
use kv_transport::frame::FrameEncoder;
use kv_transport::handshake::{Handshake, HandshakeConfig, Identity, Role};

const SECRET: &str = "only the cluster knows this";
/// The test clusters' name (the nodes' default).
const CLUSTER: &str = "kompact-kv";

// ---------------------------------------------------------------------------------
// The attacker

/// One kind of hostile connection.
#[derive(Clone, Copy, Debug)]
enum Attack {
    /// kompact-net's hello with a valid magic number and length but an address
    /// family byte that is neither 4 nor 6 (it panicked kompact-net's reader).
    CraftedHello,
    /// 1 to 4,096 random bytes.
    RandomBytes,
    /// A handshake hello cut short, then the connection closed.
    TruncatedHello,
    /// A frame header announcing 4 GiB.
    HugeLength,
    /// A complete handshake with a wrong cluster secret.
    WrongSecret,
    /// A complete handshake naming another cluster.
    WrongCluster,
    /// A connection that never sends anything (closed by the node's handshake
    /// timeout, or by us after a while).
    Silent,
    /// The right secret, then data frames that are not messages, a frame of an
    /// unknown kind and an oversized length.
    BadFramesAfterHandshake,
}

const ATTACKS: [Attack; 8] = [
    Attack::CraftedHello,
    Attack::RandomBytes,
    Attack::TruncatedHello,
    Attack::HugeLength,
    Attack::WrongSecret,
    Attack::WrongCluster,
    Attack::Silent,
    Attack::BadFramesAfterHandshake,
];

/// A frame as the transport sends it after the handshake: kind byte, then body.
fn data_frame(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    FrameEncoder::new(1 << 20)
        .encode_parts(&[&[kind], body], &mut f)
        .expect("a small frame");
    f
}

/// Runs our handshake as a dialer over `s` with `cluster` and `secret`; true when
/// the node accepted it.
fn handshake(s: &mut TcpStream, to: SocketAddr, cluster: &str, secret: &[u8], id: u16) -> bool {
    let cfg = HandshakeConfig {
        cluster: cluster.to_string(),
        identity: Identity {
            addr: SocketAddr::from(([127, 0, 0, 1], id)),
            incarnation: 1,
        },
        secret: Some(secret.to_vec()),
        client: false,
    };
    let Ok(mut hs) = Handshake::new(&cfg, Role::Dialer, Some(to), [7; 32]) else {
        return false;
    };
    let mut out = Vec::new();
    hs.take_output(&mut out);
    if s.write_all(&out).is_err() {
        return false;
    }
    let mut buf = [0u8; 4096];
    loop {
        let n = match s.read(&mut buf) {
            Ok(0) | Err(_) => return false,
            Ok(n) => n,
        };
        let mut input = &buf[..n];
        let progress = hs.receive(&mut input);
        out.clear();
        hs.take_output(&mut out);
        if !out.is_empty() && s.write_all(&out).is_err() {
            return false;
        }
        match progress {
            Ok(kv_transport::handshake::Progress::Done(_)) => return true,
            Ok(_) => {}
            Err(_) => return false,
        }
    }
}

/// One hostile connection of kind `a` to `to`. Errors are the point: every outcome
/// but a hang is fine, and the socket timeouts bound the hang.
fn attack_once(a: Attack, to: SocketAddr, rng: &mut SplitMix64) {
    let Ok(mut s) = TcpStream::connect_timeout(&to, Duration::from_secs(2)) else {
        return;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    let _ = s.set_write_timeout(Some(Duration::from_millis(200)));
    let _ = s.set_nodelay(true);
    let mut sink = [0u8; 512];
    match a {
        Attack::CraftedHello => {
            // Magic, length 12, then an address family byte of 7.
            let mut hello = vec![0xC0, 0xDE, 0xBA, 0xBE, 0, 0, 0, 12, 1, 7];
            hello.extend_from_slice(&[0xAA; 6]);
            let _ = s.write_all(&hello);
        }
        Attack::RandomBytes => {
            let n = 1 + rng.below(4096) as usize;
            let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
            let _ = s.write_all(&bytes);
        }
        Attack::TruncatedHello => {
            let _ = s.write_all(&[0, 0, 0, 40, b'K', b'V', b'T', b'P', 0, 1]);
        }
        Attack::HugeLength => {
            let _ = s.write_all(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4]);
        }
        Attack::WrongSecret => {
            handshake(&mut s, to, CLUSTER, b"a guess", 1);
        }
        Attack::WrongCluster => {
            handshake(&mut s, to, "someone-else", SECRET.as_bytes(), 2);
        }
        Attack::Silent => {}
        Attack::BadFramesAfterHandshake => {
            if handshake(&mut s, to, CLUSTER, SECRET.as_bytes(), 3) {
                let n = 1 + rng.below(2048) as usize;
                let junk: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
                let _ = s.write_all(&data_frame(0, &junk));
                let _ = s.write_all(&data_frame(0, &[]));
                let _ = s.write_all(&data_frame(0xEE, b"no such kind"));
                let _ = s.write_all(&[0xff, 0xff, 0xff, 0xf0]);
            }
        }
    }
    // Wait for the node to close the connection (or the read timeout).
    while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
}

/// Threads sending [`ATTACKS`] round-robin to every node until stopped.
struct Attackers {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    threads: Vec<JoinHandle<()>>,
}

impl Attackers {
    /// One thread per node; each opens a hostile connection about every `pace`.
    fn start(nodes: &[SocketAddr], pace: Duration) -> Attackers {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let threads = nodes
            .iter()
            .enumerate()
            .map(|(i, to)| {
                let (to, stop, sent) = (*to, stop.clone(), sent.clone());
                std::thread::spawn(move || {
                    let mut rng = SplitMix64::new(0xA77AC4 + i as u64);
                    let mut k = 0;
                    while !stop.load(Ordering::SeqCst) {
                        attack_once(ATTACKS[k % ATTACKS.len()], to, &mut rng);
                        k += 1;
                        sent.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(pace); // load shape, not synchronisation
                    }
                })
            })
            .collect();
        Attackers {
            stop,
            sent,
            threads,
        }
    }

    /// Stops the threads; returns how many hostile connections they opened.
    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            t.join().expect("an attacker thread failed");
        }
        self.sent.load(Ordering::SeqCst)
    }
}

impl Drop for Attackers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

// ---------------------------------------------------------------------------------
// Checks

fn secret_cluster(name: &str) -> Cluster {
    Cluster::start_with(name, 3, 1, 3, &format!("cluster-secret = \"{SECRET}\""))
}

fn client_options(endpoint: SocketAddr) -> ClientOptions {
    let mut opts = ClientOptions::new(endpoint);
    opts.secret = Some(SECRET.as_bytes().to_vec());
    opts
}

/// Fails the test (showing the log) if a node panicked or exited.
fn assert_no_crash(nodes: &mut [Node]) {
    for n in nodes {
        let log = n.log_text();
        assert!(
            !log.contains("panicked") && n.exited().is_none(),
            "node {} panicked or exited; log:\n{log}",
            n.address
        );
    }
}

/// Operations per second while the workload answers `n` more and `also` holds.
fn rate(w: &Workload, n: u64, what: &str, also: impl Fn() -> bool) -> f64 {
    let from = w.answered();
    let t = Instant::now();
    wait_until(
        &format!("the workload gets {n} answers {what}"),
        WAIT,
        || w.answered() >= from + n && also(),
    );
    (w.answered() - from) as f64 / t.elapsed().as_secs_f64()
}

/// Every node answers a status request and reports itself a member.
fn assert_all_serve(c: &Cluster) {
    let secret = c.scratch.write("secret", &format!("{SECRET}\n"));
    let secret = secret.to_string_lossy();
    for n in &c.nodes {
        let ep = n.address.to_string();
        let r = run(&[
            "put",
            "after-attack",
            "v",
            "--endpoint",
            &ep,
            "--timeout",
            "10s",
            "--cluster-secret-file",
            &secret,
        ]);
        assert_eq!(r.code, Some(0), "node {}: {}", n.address, r.show());
    }
}

// ---------------------------------------------------------------------------------
// The tests

/// Operations measured per phase of the attack test (a few seconds each).
const PHASE_OPS: u64 = 15_000;
/// Times each attack is sent to each node, at least.
const ROUNDS: u64 = 4;

#[test]
fn every_node_keeps_serving_under_an_attack_on_its_port() {
    let mut c = secret_cluster("attack");
    let addrs: Vec<SocketAddr> = c.nodes.iter().map(|n| n.address).collect();
    let w = Workload::start_with(client_options(addrs[0]), 8, None);
    w.progress(200, "to warm up");

    let before = rate(&w, PHASE_OPS, "before the attack", || true);
    let attackers = Attackers::start(&addrs, Duration::from_millis(2));
    // At least ROUNDS of every attack on every node.
    let target = ROUNDS * (ATTACKS.len() * addrs.len()) as u64;
    let during = rate(&w, PHASE_OPS, "during the attack", || {
        attackers.sent.load(Ordering::SeqCst) >= target
    });
    let sent = attackers.finish();
    let after = rate(&w, PHASE_OPS, "after the attack", || true);
    let reference = (before + after) / 2.0;
    println!(
        "attack: {sent} hostile connections to {} nodes; workload {before:.0} ops/s before, \
         {during:.0} during, {after:.0} after: during / mean(before, after) = {:.2} \
         (before / after = {:.2}, the run-to-run noise)",
        addrs.len(),
        during / reference,
        before / after
    );

    let logs = w.finish();
    let rejected: Vec<&String> = logs.iter().flat_map(|l| &l.rejected).collect();
    assert!(rejected.is_empty(), "operations were refused: {rejected:?}");
    let ops = assert_linearizable(&logs, &c.scratch.path.join("attack.history.jsonl"));
    println!("attack: {ops} operations, linearizable");

    // Every node saw the attack, said so, and serves.
    for n in &c.nodes {
        let log = n.log_text();
        for needle in [
            "refused a connection that failed the cluster-secret check",
            "refused a connection from a peer of another cluster",
            "connection closed",
        ] {
            assert!(
                log.contains(needle),
                "node {} never logged {needle:?}",
                n.address
            );
        }
    }
    assert_all_serve(&c);
    assert_no_crash(&mut c.nodes);
}

/// `kill -SIG pid`.
fn signal(sig: &str, pid: u32) {
    let st = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(st.success(), "kill {sig} {pid}");
}

/// Lines of the other nodes' logs that contain `what` and name `peer`.
fn reports(c: &Cluster, peer: SocketAddr, what: &str) -> usize {
    let tag = format!("peer: {peer}");
    c.nodes
        .iter()
        .filter(|n| n.address != peer)
        .map(|n| {
            n.log_text()
                .lines()
                .filter(|l| l.contains(what) && l.contains(&tag))
                .count()
        })
        .sum()
}

#[test]
fn sigstop_and_sigcont_of_each_node_in_turn_under_load() {
    let mut c = secret_cluster("sigstop");
    let addrs = c.sorted();
    let w = Workload::start_with(client_options(addrs[0]), 3, Some(Duration::from_millis(2)));
    w.progress(100, "before the first stop");
    for a in &addrs {
        let pid = c.node(*a).pid();
        let suspected = reports(&c, *a, "node suspected");
        let restored = reports(&c, *a, "node restored");
        signal("-STOP", pid);
        let stopped = Instant::now();
        wait_until(&format!("another node suspects {a}"), WAIT, || {
            reports(&c, *a, "node suspected") > suspected
        });
        w.progress(50, &format!("while {a} is stopped"));
        signal("-CONT", pid);
        println!("stopped {a} for {:.2?}", stopped.elapsed());
        wait_until(&format!("{a} is restored"), WAIT, || {
            reports(&c, *a, "node restored") > restored
        });
        w.progress(50, &format!("after {a} resumed"));
    }
    let logs = w.finish();
    let rejected: Vec<&String> = logs.iter().flat_map(|l| &l.rejected).collect();
    assert!(rejected.is_empty(), "operations were refused: {rejected:?}");
    let acked: usize = logs.iter().map(|l| l.acked.len()).sum();
    let ops = assert_linearizable(&logs, &c.scratch.path.join("sigstop.history.jsonl"));
    println!("sigstop: {ops} operations, {acked} acknowledged writes read back, linearizable");
    assert_no_crash(&mut c.nodes);
}
