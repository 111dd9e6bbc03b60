//! `kvstore remove ADDR` and `kvstore rebalance`: an operator moves replicas.
//!
//! The tool asks the endpoint (a booted member) for the next step
//! (`AdminRequest`); the node plans it from its directory and the nodes its failure
//! detector suspects, submits the reconfigurations (or the final removal) to the
//! directory, and answers with what it submitted or why not. The tool prints each
//! move once and asks again until the member is gone (`remove`) or every live
//! member's load is within one of the others' (`rebalance`).
//!
//! Exit codes: 0 done; 1 the request cannot be carried out (not a member, no other
//! member can take a replica, another cluster); 2 usage; 3 no answer, or not done
//! within `--timeout`.

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kompact::prelude::*;
use kv_components::connect::connect_to;
use kv_components::runtime::Runtime;
use kv_ports::{
    AdminOp, AdminReply, AdminRequest, AdminResult, NetIndication, NetRequest, Network, NodeId,
    StatusMessage,
};
use kv_protocols::directory::GroupName;

/// The options of `kvstore remove` and `kvstore rebalance`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A member of the cluster (IP:PORT); for `remove`, not the member taken out.
    #[arg(long, default_value = "127.0.0.1:45678")]
    endpoint: String,
    /// The cluster's name.
    #[arg(long, default_value = "kompact-kv")]
    cluster: String,
    /// How long the whole operation may take.
    #[arg(long, default_value = "60s", value_parser = crate::parse_duration)]
    timeout: Duration,
    /// A file holding the cluster's `cluster-secret` (one line); without it, the
    /// environment variable KVSTORE_CLUSTER_SECRET, if set.
    #[arg(long, value_name = "FILE")]
    cluster_secret_file: Option<std::path::PathBuf>,
    #[command(flatten)]
    tls: crate::TlsArgs,
}

/// Longest wait for one answer before asking again.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause between two questions while a move is under way.
const PACE: Duration = Duration::from_millis(200);

/// Sends admin requests and hands each answer to the promise of its nonce.
#[derive(ComponentDefinition)]
struct AdminProbe {
    ctx: ComponentContext<Self>,
    net_port: RequiredPort<Network>,
    next_nonce: u64,
    waiting: BTreeMap<u64, (NodeId, KPromise<AdminResult>)>,
    /// Nodes that refused us for naming another cluster, with their reason.
    wrong_cluster: Arc<Mutex<BTreeMap<NodeId, String>>>,
}

#[derive(Debug)]
struct Ask(NodeId, AdminOp, KPromise<AdminResult>);

ignore_lifecycle!(AdminProbe);

impl Require<Network> for AdminProbe {
    fn handle(&mut self, ind: NetIndication) -> HandlerResult {
        match ind {
            NetIndication::Deliver {
                src,
                msg:
                    kv_ports::NetMessage::Client(kv_ports::ClientMessage::Refused {
                        reason: kv_ports::Refusal::WrongCluster(reason),
                        ..
                    }),
            } => {
                if let Ok(mut w) = self.wrong_cluster.lock() {
                    w.insert(src, reason);
                }
            }
            NetIndication::Deliver {
                src,
                msg:
                    kv_ports::NetMessage::Status(StatusMessage::AdminReply(AdminReply {
                        nonce,
                        result,
                    })),
            } => {
                // Only the node asked may answer its nonce.
                if self.waiting.get(&nonce).is_some_and(|(n, _)| *n == src)
                    && let Some((_, p)) = self.waiting.remove(&nonce)
                {
                    let _ = p.fulfil(result);
                }
            }
            _ => {}
        }
        Handled::OK
    }
}

impl Actor for AdminProbe {
    type Message = Ask;

    fn receive_local(&mut self, Ask(node, op, promise): Ask) -> HandlerResult {
        let nonce = self.next_nonce;
        self.next_nonce = self.next_nonce.wrapping_add(1);
        self.waiting.insert(nonce, (node, promise));
        self.net_port.trigger(NetRequest::Send {
            dst: node,
            msg: kv_ports::NetMessage::Status(StatusMessage::Admin(AdminRequest { nonce, op })),
        });
        Handled::OK
    }

    fn receive_network(&mut self, _msg: NetMessage) -> HandlerResult {
        Handled::OK
    }
}

/// Runs `kvstore remove ADDR` (`op` is `Remove`) or `kvstore rebalance`.
pub fn run(args: &Args, target: Option<&str>) -> ExitCode {
    let endpoint = match kv_client::resolve(args.endpoint.as_str()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("kvstore: --endpoint {}: {e}", args.endpoint);
            return ExitCode::from(crate::EXIT_USAGE);
        }
    };
    let op = match target {
        None => AdminOp::Rebalance,
        Some(t) => match t.parse::<NodeId>() {
            Ok(a) if a == endpoint => {
                eprintln!(
                    "kvstore: {a} is the endpoint; ask another member (a node taken out no longer sees the directory, so it cannot see its own removal)"
                );
                return ExitCode::from(crate::EXIT_USAGE);
            }
            Ok(a) => AdminOp::Remove(a),
            Err(_) => {
                eprintln!("kvstore: {t:?} is not a member address (IP:PORT)");
                return ExitCode::from(crate::EXIT_USAGE);
            }
        },
    };
    let secret = match crate::cluster_secret(args.cluster_secret_file.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kvstore: {e}");
            return ExitCode::from(crate::EXIT_USAGE);
        }
    };
    let mut transport =
        kv_client::transport_config(kv_client::local_ip_towards(endpoint), &args.cluster, secret);
    transport.tls = match args.tls.config() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("kvstore: {e}");
            return ExitCode::from(crate::EXIT_USAGE);
        }
    };
    let rt = match Runtime::start(
        transport,
        2,
        Some(kv_bootstrap::logging::kompact_logger(
            slog::Level::Critical,
            "admin",
        )),
    ) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kvstore: {e}");
            return ExitCode::from(crate::EXIT_USAGE);
        }
    };
    let probe = rt.system.create(|| AdminProbe {
        ctx: ComponentContext::uninitialised(),
        net_port: RequiredPort::uninitialised(),
        next_nonce: kv_client::random_client_id(),
        waiting: BTreeMap::new(),
        wrong_cluster: Arc::default(),
    });
    let wrong_cluster = probe.on_definition(|p| p.wrong_cluster.clone());
    connect_to(&rt.net(), &probe);
    rt.system.start(&probe);
    let code = drive(args, endpoint, &op, &probe, &wrong_cluster);
    let _ = rt.system.shutdown().wait_timeout(Duration::from_secs(2));
    code
}

/// Asks until done, refused, or out of time.
fn drive(
    args: &Args,
    endpoint: NodeId,
    op: &AdminOp,
    probe: &Arc<Component<AdminProbe>>,
    wrong_cluster: &Arc<Mutex<BTreeMap<NodeId, String>>>,
) -> ExitCode {
    let started = Instant::now();
    let deadline = started + args.timeout;
    let mut printed: BTreeSet<(u32, u64)> = BTreeSet::new();
    let mut removing = false;
    let mut answered = false;
    let mut last_wait: Option<String> = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            eprintln!(
                "kvstore: unavailable: not done within {}{}",
                kv_client::fmt_duration(args.timeout),
                match (&last_wait, answered) {
                    (Some(w), _) => format!(" (last: {w})"),
                    (None, false) => format!(" ({endpoint} did not answer)"),
                    (None, true) => String::new(),
                }
            );
            return ExitCode::from(crate::EXIT_UNAVAILABLE);
        }
        let (p, f) = promise::<AdminResult>();
        probe.actor_ref().tell(Ask(endpoint, op.clone(), p));
        let Ok(result) = f.wait_timeout(left.min(ASK_TIMEOUT)) else {
            if let Some(reason) = wrong_cluster
                .lock()
                .ok()
                .and_then(|w| w.get(&endpoint).cloned())
            {
                eprintln!("kvstore: {endpoint}: wrong cluster: {reason}");
                return ExitCode::from(1);
            }
            continue;
        };
        answered = true;
        match result {
            AdminResult::Moving(moves) => {
                last_wait = None;
                for m in moves {
                    if printed.insert((m.group, m.from_epoch)) {
                        println!(
                            "{}: {} -> {} (epoch {} -> {})",
                            GroupName(m.group),
                            m.from,
                            m.to,
                            m.from_epoch,
                            m.from_epoch + 1
                        );
                    }
                }
            }
            AdminResult::Removing => removing = true,
            AdminResult::NotAMember => {
                let AdminOp::Remove(addr) = op else {
                    eprintln!("kvstore: {endpoint} answered a rebalance with \"not a member\"");
                    return ExitCode::from(1);
                };
                if removing || !printed.is_empty() {
                    println!(
                        "removed {addr} (in {})",
                        kv_client::fmt_duration(started.elapsed())
                    );
                    return ExitCode::SUCCESS;
                }
                eprintln!("kvstore: {addr} is not a member of the cluster");
                return ExitCode::from(1);
            }
            AdminResult::Balanced { min, max } => {
                if min == max {
                    println!("balanced: every live member holds {min} replicas");
                } else {
                    println!("balanced: every live member holds {min} or {max} replicas");
                }
                return ExitCode::SUCCESS;
            }
            AdminResult::Wait(why) => last_wait = Some(why),
            AdminResult::Refused(why) => {
                eprintln!("kvstore: refused: {why}");
                return ExitCode::from(1);
            }
            AdminResult::NotReady => {
                last_wait = Some(format!("{endpoint} is not a booted member"));
            }
        }
        std::thread::sleep(PACE.min(deadline.saturating_duration_since(Instant::now())));
    }
}
