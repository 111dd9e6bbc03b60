//! `kvstore`: run a kompact-kv node, a local demo cluster, or talk to a cluster.

mod admin;
mod bench;
mod gaps;
mod status;

use std::io::{BufRead, IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use kv_bootstrap::config::{self, NodeConfig};
use kv_bootstrap::logging;
use kv_bootstrap::node::Node;
use kv_client::{Client, ClientOptions, Error};
use kv_components::runtime::Runtime;
use kv_ports::KvOp;

use kvstore::console::{self, Command, Outcome};

/// Exit code for usage and configuration errors.
const EXIT_USAGE: u8 = 2;
/// Exit code when the cluster is unavailable.
const EXIT_UNAVAILABLE: u8 = 3;

#[derive(Parser)]
#[command(
    name = "kvstore",
    version,
    about = "A partitioned, replicated, linearizable key-value store"
)]
struct Cli {
    /// Log level: error, warn, info, debug or trace.
    #[arg(long, global = true, default_value = "warn")]
    log_level: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args, Clone)]
struct Endpoint {
    /// A node of the cluster (IP:PORT).
    #[arg(long, default_value = "127.0.0.1:45678")]
    endpoint: String,
    /// The cluster's name.
    #[arg(long, default_value = "kompact-kv")]
    cluster: String,
    /// How long an operation may take before it is reported unavailable.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    timeout: Duration,
    /// A file holding the cluster's `cluster-secret` (one line). Without it, the
    /// secret is read from the environment variable KVSTORE_CLUSTER_SECRET, if set.
    #[arg(long, value_name = "FILE")]
    cluster_secret_file: Option<std::path::PathBuf>,
    #[command(flatten)]
    tls: TlsArgs,
}

/// The TLS flags of every command that talks to a cluster.
#[derive(clap::Args, Clone, Debug, Default)]
struct TlsArgs {
    /// The cluster CA's certificate (PEM). With it the client speaks TLS and
    /// accepts only nodes whose certificate the CA signed and names the address
    /// dialed; needed when the nodes have `tls` set.
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// A client certificate (PEM) signed by the cluster CA, presented to the nodes
    /// (optional: nodes accept clients without one). Needs --tls-key and --tls-ca.
    #[arg(long, value_name = "FILE", requires_all = ["tls_key", "tls_ca"])]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

impl TlsArgs {
    /// The client's TLS settings; `None` without --tls-ca. An error names the flag
    /// and the file.
    fn config(&self) -> Result<Option<kv_components::network::TlsConfig>, String> {
        let Some(ca) = &self.tls_ca else {
            return Ok(None);
        };
        let identity = self.tls_cert.as_deref().zip(self.tls_key.as_deref());
        kv_components::network::TlsConfig::client_files(ca, identity)
            .map(Some)
            .map_err(|e| {
                let flag = match e.item {
                    kv_components::network::TlsItem::Ca => "--tls-ca",
                    kv_components::network::TlsItem::Certificate => "--tls-cert",
                    kv_components::network::TlsItem::PrivateKey => "--tls-key",
                };
                format!("{flag}: {}", e.reason)
            })
    }
}

/// The cluster secret a client presents: the first line of `file` when given, else
/// the value of [`kv_client::SECRET_ENV`] when set; `None` without either. Never
/// taken from a flag's value, which other users could read in the process list.
fn cluster_secret(file: Option<&std::path::Path>) -> Result<Option<Vec<u8>>, String> {
    let secret = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("--cluster-secret-file {}: {e}", path.display()))?;
            text.lines().next().unwrap_or("").to_string()
        }
        None => match std::env::var(kv_client::SECRET_ENV) {
            Ok(s) => s,
            Err(std::env::VarError::NotPresent) => return Ok(None),
            Err(e) => return Err(format!("{}: {e}", kv_client::SECRET_ENV)),
        },
    };
    if secret.is_empty() {
        return Err("the cluster secret is empty".to_string());
    }
    Ok(Some(secret.into_bytes()))
}

#[derive(Subcommand)]
enum Cmd {
    /// Start a local cluster in this process and open a console on it.
    Demo {
        /// Nodes in the cluster.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Partitions of the key space.
        #[arg(long, default_value_t = 1)]
        partitions: u32,
        /// Replicas per partition (odd, at most --nodes).
        #[arg(long, default_value_t = 3)]
        replication: usize,
    },
    /// Start one node from a HOCON configuration file.
    Start {
        /// The node's configuration file.
        #[arg(long)]
        config: PathBuf,
    },
    /// An interactive console: get, put, cas, del, help, quit.
    Console {
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Print the value of KEY.
    Get {
        /// The key.
        key: String,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Store VALUE under KEY.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
        #[command(flatten)]
        endpoint: Endpoint,
        /// Print OK on success.
        #[arg(long)]
        verbose: bool,
    },
    /// Replace EXPECTED with NEW under KEY; with --absent, store NEW only if KEY
    /// does not exist (one linearizable create-if-absent).
    #[command(override_usage = "kvstore cas [OPTIONS] KEY EXPECTED NEW\n       \
                                kvstore cas [OPTIONS] KEY --absent NEW")]
    Cas {
        /// The key.
        key: String,
        /// EXPECTED and NEW, the value KEY must hold and the value to store; with
        /// --absent only NEW.
        #[arg(value_name = "EXPECTED NEW", num_args = 1..=2, required = true)]
        values: Vec<String>,
        /// Expect KEY not to exist instead of holding EXPECTED.
        #[arg(long)]
        absent: bool,
        #[command(flatten)]
        endpoint: Endpoint,
        /// Print OK on success.
        #[arg(long)]
        verbose: bool,
    },
    /// Remove KEY; exit code 1 ("not found") if it did not exist.
    Del {
        /// The key.
        key: String,
        #[command(flatten)]
        endpoint: Endpoint,
        /// Print OK on success.
        #[arg(long)]
        verbose: bool,
    },
    /// Closed-loop load: prints one JSON line of results on stdout.
    Bench {
        #[command(flatten)]
        endpoint: Endpoint,
        /// Concurrent client sessions.
        #[arg(long, default_value_t = 64)]
        clients: usize,
        /// Measured time [default: 10s, or no limit with --ops].
        #[arg(long, value_parser = parse_duration)]
        duration: Option<Duration>,
        /// Stop after this many measured operations. Alone, the run lasts until they
        /// are done, however long that takes; with --duration, it stops at whichever
        /// limit comes first.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        ops: Option<u64>,
        /// Unmeasured warm-up before the measured time; 0 for none.
        #[arg(long, default_value = "1s", value_parser = parse_duration_or_zero)]
        warmup: Duration,
        /// Number of distinct keys.
        #[arg(long, default_value_t = 1000)]
        keys: u64,
        /// Bytes per written value.
        #[arg(long, default_value_t = 16)]
        value_size: usize,
        /// Operation mix, e.g. get=1,put=1,cas=1,del=1 (kinds left out weigh 0).
        #[arg(long, default_value = "get=1,put=1,cas=1")]
        mix: String,
        /// Seed of the key and operation choice.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Write every operation to this file (JSON lines) for `check-history`.
        #[arg(long)]
        history: Option<PathBuf>,
        /// Write an HTML page with charts (latency by percentile; throughput, p99,
        /// errors and timeouts per second) into this directory, made if missing:
        /// DIR/index.html (self-contained), DIR/report.json (its data, for `kvstore
        /// report`), DIR/latency.svg, DIR/per-second.svg.
        #[arg(long, value_name = "DIR")]
        report: Option<PathBuf>,
    },
    /// Check a history file (JSON lines) for linearizability.
    CheckHistory {
        /// The history file.
        file: PathBuf,
        /// Also write an HTML page: for a history that is not linearizable, the
        /// operations on the offending key as a timeline around the shortest stretch
        /// that cannot be ordered; otherwise a page stating the verdict.
        #[arg(long, value_name = "FILE")]
        html: Option<PathBuf>,
    },
    /// Draw a `bench --report` again from its report.json, e.g. with the fault
    /// windows of a fault test shaded in the per-second chart.
    Report {
        /// The report.json a `bench --report DIR` wrote.
        data: PathBuf,
        /// Write the page and charts into this directory (made if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// A window `NAME=START..END` in seconds of the history's clock to shade
        /// (e.g. `kill=12.5..20`); repeatable.
        #[arg(long = "window", value_name = "NAME=START..END")]
        windows: Vec<String>,
        /// The page's title [default: the one in the data].
        #[arg(long)]
        title: Option<String>,
    },
    /// Per partition, the longest time without a successful operation in a history.
    HistoryGaps(gaps::Args),
    /// The cluster as its nodes see it: partitions, leaders, logs, suspicions.
    Status(status::Args),
    /// The cluster's members (from the endpoint's directory): incarnation, whether
    /// that process answers, and the replicas it runs.
    Members(status::Args),
    /// Take a member out: move each of its replicas to another live member, then
    /// remove it from the directory. Prints every move.
    Remove {
        /// The member to take out (IP:PORT).
        addr: String,
        #[command(flatten)]
        args: admin::Args,
    },
    /// Move replicas until every live member holds N or N+1 of them. Prints every
    /// move.
    Rebalance(admin::Args),
}

/// A duration of at least 1ms: `500ms`, `2s`, `1m`, or a bare number of milliseconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let ms = parse_millis(s)?;
    if ms < 1.0 {
        return Err(format!("{:?}: must be at least 1ms", s.trim()));
    }
    Ok(Duration::from_micros((ms * 1000.0) as u64))
}

/// A duration as for [`parse_duration`], or zero (`0`, `0s`, `0ms`).
fn parse_duration_or_zero(s: &str) -> Result<Duration, String> {
    let ms = parse_millis(s)?;
    if ms != 0.0 && ms < 1.0 {
        return Err(format!("{:?}: must be 0 or at least 1ms", s.trim()));
    }
    Ok(Duration::from_micros((ms * 1000.0) as u64))
}

/// Milliseconds in `500ms`, `2s`, `1m` or a bare number; finite and not negative.
fn parse_millis(s: &str) -> Result<f64, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map(|i| s.split_at(i))
        .unwrap_or((s, "ms"));
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (examples: 500ms, 2s, 1m)"))?;
    let ms = match unit.trim() {
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        _ => return Err(format!("{s:?} is not a duration (examples: 500ms, 2s, 1m)")),
    };
    if !ms.is_finite() {
        return Err(format!("{s:?} is not a duration (examples: 500ms, 2s, 1m)"));
    }
    Ok(ms)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match logging::parse_level(&cli.log_level) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("kvstore: --log-level: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match cli.cmd {
        Cmd::Start { config } => start(&config, level),
        Cmd::Demo {
            nodes,
            partitions,
            replication,
        } => demo(nodes, partitions, replication, level),
        Cmd::Console { endpoint } => match connect(&endpoint) {
            Ok(c) => console_loop(&c),
            Err(code) => code,
        },
        Cmd::Get { key, endpoint } => one_shot(&endpoint, KvOp::Get { key }, false),
        Cmd::Put {
            key,
            value,
            endpoint,
            verbose,
        } => one_shot(&endpoint, KvOp::Put { key, value }, verbose),
        Cmd::Cas {
            key,
            values,
            absent,
            endpoint,
            verbose,
        } => match cas_op(key, values, absent) {
            Ok(op) => one_shot(&endpoint, op, verbose),
            Err(e) => {
                eprintln!("kvstore cas: {e}");
                ExitCode::from(EXIT_USAGE)
            }
        },
        Cmd::Del {
            key,
            endpoint,
            verbose,
        } => one_shot(&endpoint, KvOp::Delete { key }, verbose),
        Cmd::CheckHistory { file, html } => check_history(&file, html.as_deref()),
        Cmd::Report {
            data,
            out,
            windows,
            title,
        } => redraw_report(&data, &out, &windows, title),
        Cmd::HistoryGaps(args) => gaps::run(&args),
        Cmd::Status(args) => status::run(&args, status::View::Status),
        Cmd::Members(args) => status::run(&args, status::View::Members),
        Cmd::Remove { addr, args } => admin::run(&args, Some(&addr)),
        Cmd::Rebalance(args) => admin::run(&args, None),
        Cmd::Bench {
            endpoint,
            clients,
            duration,
            ops,
            warmup,
            keys,
            value_size,
            mix,
            seed,
            history,
            report,
        } => {
            let mix = match bench::parse_mix(&mix) {
                Ok(m) => m,
                Err(e) => {
                    eprintln!("kvstore: --mix: {e}");
                    return ExitCode::from(EXIT_USAGE);
                }
            };
            let client = match client_options(&endpoint) {
                Ok(o) => o,
                Err(code) => return code,
            };
            if clients == 0 || keys == 0 {
                eprintln!("kvstore: --clients and --keys must be at least 1");
                return ExitCode::from(EXIT_USAGE);
            }
            // A report that cannot be written is refused before the run, not after.
            if let Some(dir) = &report
                && let Err(e) = kvstore::report::prepare_dir(dir)
            {
                eprintln!("kvstore: --report {e}");
                return ExitCode::from(EXIT_USAGE);
            }
            let cfg = bench::BenchConfig {
                client,
                clients,
                duration: bench::measured_time(duration, ops),
                ops,
                warmup,
                keys,
                value_size,
                mix,
                seed,
                history,
                progress: std::io::stderr().is_terminal(),
            };
            match bench::run(&cfg) {
                Ok(r) => {
                    println!("{}", r.json());
                    if let Some(dir) = &report {
                        match kvstore::report::write_report(dir, &r.run_data()) {
                            Ok(page) => eprintln!("kvstore: report written to {}", page.display()),
                            Err(e) => {
                                eprintln!("kvstore: --report {e}");
                                return ExitCode::from(EXIT_USAGE);
                            }
                        }
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("kvstore: {e}");
                    ExitCode::from(EXIT_UNAVAILABLE)
                }
            }
        }
    }
}

fn start(path: &std::path::Path, level: slog::Level) -> ExitCode {
    let cfg = match config::load_file(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kvstore: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let gateway_cfg = cfg.clone();
    match start_node(cfg, level) {
        Ok((rt, _node)) => {
            let _gateway = match start_gateway(&gateway_cfg, rt.address) {
                Ok(g) => g,
                Err(e) => {
                    eprintln!("kvstore: {e}");
                    return ExitCode::from(EXIT_UNAVAILABLE);
                }
            };
            loop {
                std::thread::park();
            }
        }
        Err(e) => {
            eprintln!("kvstore: {e}");
            ExitCode::from(EXIT_UNAVAILABLE)
        }
    }
}

/// The Redis gateway, when the node has `resp-address`: a client of the cluster
/// that enters through this node (`me`), serving RESP there.
fn start_gateway(
    cfg: &NodeConfig,
    me: SocketAddr,
) -> Result<Option<kvstore::gateway::Gateway>, String> {
    let Some(address) = cfg.resp_address else {
        return Ok(None);
    };
    let mut client = kv_client::ClientOptions::new(me);
    client.cluster = cfg.cluster_name.clone();
    client.secret = cfg.transport().secret;
    client.deadline = Duration::from_secs(5);
    if let Some(t) = &cfg.tls {
        client.tls = Some(
            kv_components::network::TlsConfig::client_files(
                &t.ca,
                Some((&t.certificate, &t.private_key)),
            )
            .map_err(|e| format!("resp-address: the gateway's TLS client: {e}"))?,
        );
    }
    let limits = kv_resp::Limits {
        max_bulk: cfg.limits.max_key_bytes.max(cfg.limits.max_value_bytes),
        max_request_bytes: (4 * cfg.limits.max_value_bytes).max(8 << 20),
        ..kv_resp::Limits::default()
    };
    let g = kvstore::gateway::Gateway::start(kvstore::gateway::GatewayConfig {
        address,
        client,
        limits,
        max_connections: cfg.resp_max_connections,
    })
    .map_err(|e| format!("resp-address {address}: cannot serve the Redis protocol: {e}"))?;
    eprintln!("kvstore: serving the Redis protocol on {}", g.address());
    Ok(Some(g))
}

fn start_node(cfg: NodeConfig, level: slog::Level) -> Result<(Runtime, Node), String> {
    let logger = logging::kompact_logger(level, &cfg.address.to_string());
    let rt = Runtime::start(cfg.transport(), 2, Some(logger))?;
    let incarnation = kv_client::random_client_id();
    let node = Node::start(&rt.system, cfg, rt.timer(), rt.net(), incarnation);
    let network = rt.network.clone();
    node.status_source.set_transport_stats(Box::new(move || {
        network.on_definition(|n| n.transport_stats())
    }));
    Ok((rt, node))
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("cannot find a free port: {e}"))
}

fn demo(nodes: usize, partitions: u32, replication: usize, level: slog::Level) -> ExitCode {
    let mut addrs = Vec::new();
    for _ in 0..nodes {
        match free_port() {
            Ok(p) => addrs.push(SocketAddr::from(([127, 0, 0, 1], p))),
            Err(e) => {
                eprintln!("kvstore: {e}");
                return ExitCode::from(EXIT_UNAVAILABLE);
            }
        }
    }
    let Some(&server) = addrs.first() else {
        eprintln!("kvstore: --nodes must be at least 1");
        return ExitCode::from(EXIT_USAGE);
    };
    let mut running = Vec::new();
    for (i, a) in addrs.iter().enumerate() {
        let cfg = NodeConfig::reference()
            .with_address(*a)
            .with_bootstrap_address(server)
            .with_boot_threshold(nodes)
            .with_partitions(partitions)
            .with_replication_degree(replication);
        if let Err(e) = cfg.validate("kvstore demo") {
            eprintln!("kvstore: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
        match start_node(cfg, level) {
            Ok(n) => running.push(n),
            Err(e) => {
                eprintln!("kvstore: node {i}: {e}");
                return ExitCode::from(EXIT_UNAVAILABLE);
            }
        }
    }
    // Wait (bounded) until every node has its lookup table and replicas.
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let booted = running
            .iter()
            .all(|(_, n)| n.hosted.lock().map(|h| h.table.is_some()).unwrap_or(false));
        if booted {
            break;
        }
        if Instant::now() > until {
            eprintln!("kvstore: the demo cluster did not form within 30s");
            return ExitCode::from(EXIT_UNAVAILABLE);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "kompact-kv demo: {} nodes, {} partition(s), replication {} — {}",
        nodes,
        partitions,
        replication,
        addrs
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let ep = Endpoint {
        endpoint: server.to_string(),
        cluster: "kompact-kv".to_string(),
        timeout: Duration::from_secs(2),
        cluster_secret_file: None,
        tls: TlsArgs::default(),
    };
    let code = match connect(&ep) {
        Ok(c) => console_loop(&c),
        Err(code) => code,
    };
    drop(running); // the nodes stop with the process, which exits next
    code
}

/// Client options from the `--endpoint`, `--cluster` and `--timeout` flags: one
/// attempt waits a quarter of the timeout before the client tries another node.
fn client_options(ep: &Endpoint) -> Result<ClientOptions, ExitCode> {
    let endpoint = kv_client::resolve(ep.endpoint.as_str()).map_err(|e| {
        eprintln!("kvstore: --endpoint {}: {e}", ep.endpoint);
        ExitCode::from(EXIT_USAGE)
    })?;
    let mut opts = ClientOptions::new(endpoint);
    opts.cluster = ep.cluster.clone();
    opts.secret = cluster_secret(ep.cluster_secret_file.as_deref()).map_err(|e| {
        eprintln!("kvstore: {e}");
        ExitCode::from(EXIT_USAGE)
    })?;
    opts.tls = ep.tls.config().map_err(|e| {
        eprintln!("kvstore: {e}");
        ExitCode::from(EXIT_USAGE)
    })?;
    opts.deadline = ep.timeout;
    opts.request_timeout = (ep.timeout / 4).max(Duration::from_millis(50));
    Ok(opts)
}

fn connect(ep: &Endpoint) -> Result<Client, ExitCode> {
    let opts = client_options(ep)?;
    Client::with_options(opts).map_err(|e| {
        eprintln!("kvstore: {e}");
        match e {
            Error::Rejected(_) => ExitCode::from(1),
            Error::Setup(_) => ExitCode::from(EXIT_USAGE),
            _ => ExitCode::from(EXIT_UNAVAILABLE),
        }
    })
}

/// The CAS of `kvstore cas KEY EXPECTED NEW` or `kvstore cas KEY --absent NEW`.
fn cas_op(key: String, values: Vec<String>, absent: bool) -> Result<KvOp, String> {
    let mut values = values.into_iter();
    match (values.next(), values.next(), absent) {
        (Some(expected), Some(new), false) => Ok(KvOp::Cas {
            key,
            expected: Some(expected),
            new,
        }),
        (Some(new), None, true) => Ok(KvOp::Cas {
            key,
            expected: None,
            new,
        }),
        (Some(_), Some(_), true) => {
            Err("--absent takes the place of EXPECTED: give KEY --absent NEW".to_string())
        }
        _ => Err("give KEY EXPECTED NEW, or KEY --absent NEW".to_string()),
    }
}

fn one_shot(ep: &Endpoint, op: KvOp, verbose: bool) -> ExitCode {
    let client = match connect(ep) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let o = console::outcome(&op, client.execute(op.clone()));
    match &o {
        Outcome::Ok(Some(v)) => println!("{v}"),
        Outcome::Ok(None) => {
            if verbose {
                println!("OK");
            }
        }
        other => eprintln!("{}", other.line()),
    }
    client.shutdown();
    ExitCode::from(o.exit_code() as u8)
}

fn console_loop(client: &Client) -> ExitCode {
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        println!(
            "connected to a cluster of {} node(s); type help for commands",
            client.nodes().len()
        );
    }
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let mut last = 0;
    loop {
        if interactive {
            print!("kvstore> ");
            let _ = std::io::stdout().flush();
        }
        let Some(line) = lines.next() else { break };
        let Ok(line) = line else { break };
        match console::parse_line(&line) {
            Ok(Command::Nothing) => {}
            Ok(Command::Help) => println!("{}", console::HELP),
            Ok(Command::Quit) => break,
            Ok(Command::Op(op)) => {
                let o = console::outcome(&op, client.execute(op.clone()));
                println!("{}", o.line());
                last = o.exit_code();
            }
            Err(e) => {
                println!("error: {e}");
                last = EXIT_USAGE as i32;
            }
        }
    }
    let _ = last; // a console session ends successfully; each answer was printed
    ExitCode::SUCCESS
}

fn check_history(path: &std::path::Path, html: Option<&std::path::Path>) -> ExitCode {
    if let Some(p) = html
        && let (Ok(a), Ok(b)) = (std::fs::canonicalize(p), std::fs::canonicalize(path))
        && a == b
    {
        eprintln!(
            "kvstore: --html {}: that is the history itself",
            p.display()
        );
        return ExitCode::from(EXIT_USAGE);
    }
    // The page's file is made before the check, so that a path that cannot be
    // written is refused at once rather than after a long search.
    let page = match html
        .map(|p| std::fs::File::create(p).map(|f| (p, f)))
        .transpose()
    {
        Ok(page) => page,
        Err(e) => {
            eprintln!(
                "kvstore: --html {}: {e}",
                html.map_or_else(String::new, |p| p.display().to_string())
            );
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let opts = kv_checker::CheckOptions::default();
    let checked = match &page {
        // The page needs the operations again: read and parse the file once here.
        Some(_) => std::fs::read_to_string(path)
            .map_err(|source| kv_checker::Error::Io {
                path: path.display().to_string(),
                source,
            })
            .and_then(|text| {
                kv_checker::parse_history(&text).map_err(|e| kv_checker::Error::Parse {
                    path: path.display().to_string(),
                    line: e.line,
                    message: e.message,
                })
            })
            .map(|ops| (kv_checker::check_history_with(&ops, &opts), ops)),
        None => kv_checker::check_file_with(path, &opts).map(|r| (r, Vec::new())),
    };
    let (report, ops) = match checked {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kvstore: {e}");
            if let Some((p, _)) = &page {
                let _ = std::fs::remove_file(p); // nothing to show
            }
            return ExitCode::from(EXIT_USAGE);
        }
    };
    println!("{report}");
    if let Some((page_path, mut file)) = page {
        let window = match &report.result {
            kv_checker::CheckResult::NotLinearizable { key, .. } => {
                kv_checker::violation_window(&ops, key, &opts)
            }
            _ => None,
        };
        let written =
            kvstore::timeline::history_page(&path.display().to_string(), &report, window.as_ref())
                .and_then(|text| file.write_all(text.as_bytes()).map_err(|e| e.to_string()));
        match written {
            Ok(()) => eprintln!("kvstore: page written to {}", page_path.display()),
            Err(e) => {
                eprintln!("kvstore: --html {}: {e}", page_path.display());
                return ExitCode::from(EXIT_USAGE);
            }
        }
    }
    if report.is_linearizable() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// `kvstore report DATA --out DIR [--window NAME=START..END]...`.
fn redraw_report(
    data: &std::path::Path,
    out: &std::path::Path,
    windows: &[String],
    title: Option<String>,
) -> ExitCode {
    let mut shades = Vec::new();
    for w in windows {
        match gaps::parse_window(w) {
            Ok(w) => shades.push(kvstore::report::Shade {
                name: w.name,
                start_s: w.start as f64 / 1e9,
                end_s: w.end as f64 / 1e9,
            }),
            Err(e) => {
                eprintln!("kvstore: --window {e}");
                return ExitCode::from(EXIT_USAGE);
            }
        }
    }
    let mut run = match kvstore::report::load(data) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kvstore: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    run.shades = shades;
    if let Some(t) = title {
        run.title = t;
    }
    match kvstore::report::write_report(out, &run) {
        Ok(page) => {
            eprintln!("kvstore: report written to {}", page.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kvstore: --out {e}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The limits `kvstore bench ARGS` runs with: (warm-up, measured time, ops).
    fn bench(args: &[&str]) -> Result<(Duration, Option<Duration>, Option<u64>), String> {
        let cli = Cli::try_parse_from(["kvstore", "bench"].iter().chain(args))
            .map_err(|e| e.to_string())?;
        match cli.cmd {
            Cmd::Bench {
                warmup,
                duration,
                ops,
                ..
            } => Ok((warmup, bench::measured_time(duration, ops), ops)),
            _ => Err("not bench".into()),
        }
    }

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn bench_defaults_to_ten_measured_seconds_after_one_of_warm_up() {
        assert_eq!(bench(&[]), Ok((S(1), Some(S(10)), None)));
    }

    #[test]
    fn bench_warmup_zero_means_no_warm_up() {
        for zero in ["0", "0s", "0ms", "0.0s"] {
            assert_eq!(
                bench(&["--warmup", zero]),
                Ok((Duration::ZERO, Some(S(10)), None)),
                "{zero}"
            );
        }
        assert_eq!(
            bench(&["--warmup", "250ms"]).map(|b| b.0),
            Ok(Duration::from_millis(250))
        );
        let e = bench(&["--warmup", "0.5"]).unwrap_err();
        assert!(e.contains("must be 0 or at least 1ms"), "{e}");
        let e = bench(&["--warmup=-1s"]).unwrap_err();
        assert!(e.contains("--warmup"), "{e}");
    }

    #[test]
    fn bench_ops_alone_is_not_cut_short_by_a_default_duration() {
        assert_eq!(
            bench(&["--ops", "1500000"]),
            Ok((S(1), None, Some(1_500_000)))
        );
        // Both given: whichever comes first.
        assert_eq!(
            bench(&["--ops", "1500000", "--duration", "5s"]),
            Ok((S(1), Some(S(5)), Some(1_500_000)))
        );
        assert_eq!(bench(&["--duration", "2m"]), Ok((S(1), Some(S(120)), None)));
    }

    #[test]
    fn bench_refuses_empty_limits() {
        assert!(bench(&["--ops", "0"]).is_err());
        let e = bench(&["--duration", "0"]).unwrap_err();
        assert!(e.contains("must be at least 1ms"), "{e}");
        let e = bench(&["--duration", "ten"]).unwrap_err();
        assert!(e.contains("not a duration"), "{e}");
    }

    #[test]
    fn durations_elsewhere_still_need_a_millisecond() {
        assert_eq!(parse_duration("2s"), Ok(S(2)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_micros(1500)));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("0.5ms").is_err());
        assert!(Cli::try_parse_from(["kvstore", "get", "k", "--timeout", "0"]).is_err());
    }
}
