//! Helpers for the process tests: free ports, a scratch directory under `target/`,
//! `kvstore` child processes that are always killed, commands run with a hang guard,
//! and bounded waits on conditions.
#![allow(dead_code)] // each test binary uses a different subset

pub mod workload;

use std::collections::HashSet;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub mod pki;

/// The binary under test.
pub const KVSTORE: &str = env!("CARGO_BIN_EXE_kvstore");

/// Upper bound of every wait on a condition (a hang guard, not a performance bound).
pub const WAIT: Duration = Duration::from_secs(30);
/// Time between two polls of a condition.
pub const POLL: Duration = Duration::from_millis(20);

/// Polls `cond` every [`POLL`] until it holds or `limit` passed; panics naming `what`.
pub fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting until {what}"
        );
        std::thread::sleep(POLL); // a poll interval, not a synchronisation
    }
}

// ---------------------------------------------------------------------------------
// One cluster at a time

/// Held while a test runs a cluster (`kvstore start` nodes or a `kvstore demo`).
///
/// An idle debug-build node keeps a good part of a core busy (Kompact's executor
/// spins before it parks), so several clusters side by side on a 2-core CI machine
/// starve each other's failure detectors into false suspicions. The tests of one
/// binary therefore run their clusters one after another; commands without a cluster
/// still run in parallel.
pub fn cluster_slot() -> MutexGuard<'static, ()> {
    static SLOT: Mutex<()> = Mutex::new(());
    // A test that failed while holding the slot poisons it; the next may still run.
    SLOT.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------
// Ports

/// A free port on 127.0.0.1, never handed out twice by this process.
///
/// Ports come from below the kernel's ephemeral range (read from
/// `/proc/sys/net/ipv4/ip_local_port_range`, 32768 by default) and are checked by
/// binding them. A released ephemeral port could be picked again by the kernel for
/// any outgoing connection or `:0` listener before the node binds it (the nodes and
/// the CLI clients open many); a port below that range is only ever taken on request.
pub fn free_port() -> u16 {
    static TAKEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let low_ephemeral = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (lo, hi) = if low_ephemeral > 12_000 {
        (10_000u64, u64::from(low_ephemeral))
    } else {
        (u64::from(low_ephemeral) + 1, 65_000)
    };
    let span = hi - lo;
    let seed = u64::from(std::process::id()).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut taken = TAKEN.lock().unwrap();
    let taken = taken.get_or_insert_with(HashSet::new);
    for _ in 0..10_000 {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let port = (lo + (seed.wrapping_add(n.wrapping_mul(7919)) % span)) as u16;
        if taken.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            taken.insert(port);
            return port;
        }
    }
    // Fall back to the kernel's choice.
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let port = l.local_addr().unwrap().port();
    taken.insert(port);
    port
}

/// `n` free loopback addresses.
pub fn free_addrs(n: usize) -> Vec<SocketAddr> {
    (0..n)
        .map(|_| SocketAddr::from(([127, 0, 0, 1], free_port())))
        .collect()
}

// ---------------------------------------------------------------------------------
// Scratch directory

/// A fresh directory under `target/tmp/`, removed when dropped unless the test is
/// failing (then its path is printed, so the node logs can be read).
pub struct Scratch {
    pub path: PathBuf,
}

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        static N: AtomicU64 = AtomicU64::new(0);
        let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "kvstore-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create scratch directory");
        Scratch { path }
    }

    /// Writes `text` to `name` in this directory; returns the path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path.join(name);
        fs::write(&p, text).expect("write scratch file");
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test files and node logs kept in {}", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

// ---------------------------------------------------------------------------------
// Running commands

/// The outcome of one finished command.
#[derive(Debug)]
pub struct Run {
    pub args: Vec<String>,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Run {
    /// A one-line description for assertion messages and logs.
    pub fn show(&self) -> String {
        format!(
            "`kvstore {}` → exit {:?} after {:.2?}, stdout {:?}, stderr {:?}",
            self.args.join(" "),
            self.code,
            self.elapsed,
            self.stdout,
            self.stderr
        )
    }
}

/// A child process that is killed (SIGKILL) and reaped when dropped.
pub struct Guard {
    pub child: Child,
}

impl Guard {
    pub fn spawn(cmd: &mut Command) -> Guard {
        Guard {
            child: cmd.spawn().expect("spawn kvstore"),
        }
    }

    /// Kills the process with SIGKILL and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The exit status, if the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `kvstore ARGS` with `stdin` as its input, waits for it (killing it after
/// `limit`, which fails the test), and returns what it printed.
pub fn run_with_input(args: &[&str], stdin: &str, limit: Duration) -> Run {
    let started = Instant::now();
    let mut g = Guard::spawn(
        Command::new(KVSTORE)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    {
        let mut input = g.child.stdin.take().expect("stdin piped");
        input.write_all(stdin.as_bytes()).expect("write stdin");
        // Dropping `input` closes stdin: end of input for a console.
    }
    // Outputs are read on their own threads so a full pipe cannot stall the child.
    let mut out = g.child.stdout.take().expect("stdout piped");
    let mut err = g.child.stderr.take().expect("stderr piped");
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = started + limit;
    let status = loop {
        if let Some(st) = g.exited() {
            break st;
        }
        if Instant::now() > deadline {
            g.kill();
            panic!(
                "`kvstore {}` did not finish within {limit:?}; stderr so far: {}",
                args.join(" "),
                err_t.join().unwrap_or_default()
            );
        }
        std::thread::sleep(POLL);
    };
    let elapsed = started.elapsed();
    Run {
        args: args.iter().map(|s| s.to_string()).collect(),
        code: status.code(),
        stdout: out_t.join().unwrap_or_default(),
        stderr: err_t.join().unwrap_or_default(),
        elapsed,
    }
}

/// Runs `kvstore ARGS` with empty input and a [`WAIT`] hang guard.
pub fn run(args: &[&str]) -> Run {
    run_with_input(args, "", WAIT)
}

// ---------------------------------------------------------------------------------
// Nodes

/// Starts a cluster that grows after boot: nodes `0..boot` form it (node 0 is the
/// bootstrap server), then the others join as spares. Every node lists all the
/// addresses as seeds; `extra` goes into each config's `kvstore` block. Returns
/// once the boot nodes run their replicas and the spares are members; the nodes
/// come back in order.
pub fn start_growing_cluster(
    scratch: &Scratch,
    addrs: &[SocketAddr],
    boot: usize,
    partitions: u32,
    replicas: usize,
    extra: &str,
) -> Vec<Node> {
    let bootstrap = addrs[0];
    let seeds: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
    let start = |i: usize| {
        let conf = scratch.write(
            &format!("node{}.conf", i + 1),
            &format!(
                "kvstore {{\n\
                 \x20 address = \"{}\"\n\
                 \x20 bootstrap-address = \"{bootstrap}\"\n\
                 \x20 seeds = [{}]\n\
                 \x20 boot-threshold = {boot}\n\
                 \x20 partitions = {partitions}\n\
                 \x20 replication-degree = {replicas}\n\
                 \x20 {extra}\n\
                 }}\n",
                addrs[i],
                seeds.join(", ")
            ),
        );
        let log = scratch.path.join(format!("node{}.log", i + 1));
        Node::start(addrs[i], conf, log, "info")
    };
    let mut nodes = vec![start(0)];
    nodes[0].wait_for_log("bootstrap server waiting for nodes", WAIT);
    for i in 1..boot {
        nodes.push(start(i));
    }
    for n in &mut nodes {
        n.wait_for_log("replicas started", WAIT);
    }
    for i in boot..addrs.len() {
        nodes.push(start(i));
    }
    for n in &mut nodes[boot..] {
        n.wait_for_log("member of the cluster", WAIT);
    }
    nodes
}

/// One `kvstore start` process; its stderr (the log) goes to a file.
pub struct Node {
    pub address: SocketAddr,
    pub config: PathBuf,
    pub log: PathBuf,
    guard: Guard,
    pub killed: bool,
}

impl Node {
    /// Starts `kvstore start --config CONFIG --log-level LEVEL`.
    pub fn start(address: SocketAddr, config: PathBuf, log: PathBuf, level: &str) -> Node {
        let log_file = fs::File::create(&log).expect("create node log");
        let guard = Guard::spawn(
            Command::new(KVSTORE)
                .arg("start")
                .arg("--config")
                .arg(&config)
                .args(["--log-level", level])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log_file),
        );
        Node {
            address,
            config,
            log,
            guard,
            killed: false,
        }
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `needle`; panics (showing the log) after `limit`
    /// or if the process exits first.
    pub fn wait_for_log(&mut self, needle: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            if self.log_text().contains(needle) {
                return;
            }
            if let Some(st) = self.guard.exited() {
                panic!(
                    "node {} exited ({st}) before logging {needle:?}; log:\n{}",
                    self.address,
                    self.log_text()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "node {} did not log {needle:?} within {limit:?}; log:\n{}",
                    self.address,
                    self.log_text()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        self.guard.kill();
        self.killed = true;
    }

    /// The process id (for `/proc/PID/...`).
    pub fn pid(&self) -> u32 {
        self.guard.child.id()
    }

    /// The exit status, if the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.guard.exited()
    }

    /// The `leader elected` lines of the log as (partition, ballot number, leader),
    /// in log order.
    pub fn leader_lines(&self) -> Vec<(u32, u64, SocketAddr)> {
        self.log_text()
            .lines()
            .filter(|l| l.contains("leader elected"))
            .filter_map(|l| {
                let field = |name: &str| {
                    let start = l.find(&format!("{name}: "))? + name.len() + 2;
                    let rest = &l[start..];
                    let end = rest.find([',', ' ']).unwrap_or(rest.len());
                    Some(rest[..end].to_string())
                };
                Some((
                    field("partition")?.parse().ok()?,
                    field("ballot")?.parse().ok()?,
                    field("leader")?.parse().ok()?,
                ))
            })
            .collect()
    }

    /// The leader of `partition` this node elected last, if any.
    pub fn last_leader(&self, partition: u32) -> Option<SocketAddr> {
        self.leader_lines()
            .into_iter()
            .rfind(|(p, _, _)| *p == partition)
            .map(|(_, _, l)| l)
    }
}

/// A cluster of `kvstore start` processes on loopback, started from HOCON files in a
/// scratch directory under `target/tmp/`.
pub struct Cluster {
    pub nodes: Vec<Node>,
    pub partitions: u32,
    pub replication: usize,
    /// The bootstrap server (the first node).
    pub bootstrap: SocketAddr,
    pub scratch: Scratch,
    /// Dropped last: the nodes are killed before the next test's cluster starts.
    _slot: MutexGuard<'static, ()>,
}

impl Cluster {
    /// Writes one HOCON file per node and starts the nodes at log level `info`: the
    /// bootstrap server first (once it waits for check-ins), then the others; returns
    /// once every node logged that its replicas started.
    pub fn start(name: &str, n: usize, partitions: u32, replication: usize) -> Cluster {
        Self::start_with(name, n, partitions, replication, "")
    }

    /// Like [`Cluster::start`], with `extra` HOCON lines added inside every node's
    /// `kvstore { }` block (e.g. `limits.max-inflight-per-node = 8`).
    pub fn start_with(
        name: &str,
        n: usize,
        partitions: u32,
        replication: usize,
        extra: &str,
    ) -> Cluster {
        let slot = cluster_slot();
        let scratch = Scratch::new(name);
        let addrs = free_addrs(n);
        let bootstrap = addrs[0];
        let mut nodes = Vec::new();
        for (i, a) in addrs.iter().enumerate() {
            let conf = scratch.write(
                &format!("node{}.conf", i + 1),
                &format!(
                    "# node {} of the {name} test cluster\n\
                     kvstore {{\n\
                     \x20 address = \"{a}\"\n\
                     \x20 bootstrap-address = \"{bootstrap}\"\n\
                     \x20 boot-threshold = {n}\n\
                     \x20 partitions = {partitions}\n\
                     \x20 replication-degree = {replication}\n\
                     {extra}\n\
                     }}\n",
                    i + 1
                ),
            );
            let log = scratch.path.join(format!("node{}.log", i + 1));
            let mut node = Node::start(*a, conf, log, "info");
            if i == 0 {
                node.wait_for_log("bootstrap server waiting for nodes", WAIT);
            }
            nodes.push(node);
        }
        for node in &mut nodes {
            node.wait_for_log("replicas started", WAIT);
        }
        Cluster {
            nodes,
            partitions,
            replication,
            bootstrap,
            scratch,
            _slot: slot,
        }
    }

    /// The node at `address`.
    pub fn node(&mut self, address: SocketAddr) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.address == address)
            .expect("a node of the cluster")
    }

    /// The addresses of the nodes that were not killed.
    pub fn alive(&self) -> Vec<SocketAddr> {
        self.nodes
            .iter()
            .filter(|n| !n.killed)
            .map(|n| n.address)
            .collect()
    }

    /// The nodes sorted by address, as the lookup table orders them.
    pub fn sorted(&self) -> Vec<SocketAddr> {
        let mut v: Vec<_> = self.nodes.iter().map(|n| n.address).collect();
        v.sort();
        v
    }

    /// The replicas of `partition`: over the nodes sorted by address, replica `i` of
    /// partition `p` is `nodes[(p·R + i) mod N]`.
    pub fn group(&self, partition: u32) -> Vec<SocketAddr> {
        let sorted = self.sorted();
        (0..self.replication)
            .map(|i| sorted[(partition as usize * self.replication + i) % sorted.len()])
            .collect()
    }

    /// Waits until every live replica of `partition` last elected the same live node,
    /// and returns it.
    pub fn agreed_leader(&self, partition: u32) -> SocketAddr {
        let group = self.group(partition);
        let mut agreed = None;
        wait_until(
            &format!("the live replicas of partition {partition} agree on a live leader"),
            WAIT,
            || {
                let leaders: Vec<_> = self
                    .nodes
                    .iter()
                    .filter(|n| !n.killed && group.contains(&n.address))
                    .map(|n| n.last_leader(partition))
                    .collect();
                agreed = match leaders.first() {
                    Some(Some(l))
                        if leaders.iter().all(|x| *x == Some(*l)) && self.alive().contains(l) =>
                    {
                        Some(*l)
                    }
                    _ => None,
                };
                agreed.is_some()
            },
        );
        agreed.unwrap()
    }

    /// Prints every node's log (for failing tests and `--nocapture`).
    pub fn dump_logs(&self) {
        for n in &self.nodes {
            eprintln!("----- log of {} -----\n{}", n.address, n.log_text());
        }
    }
}
