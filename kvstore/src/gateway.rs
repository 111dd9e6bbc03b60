//! The Redis gateway: a node with `resp-address` speaks RESP there, as an entry
//! point to the whole cluster, so `redis-cli`, `redis-benchmark` and Redis client
//! libraries work unmodified.
//!
//! Each connection gets a thread and a client session of its own (on one client
//! component shared by the gateway), so its commands run one after another, in the
//! order they arrived, each exactly once, and every single-key command is one
//! linearizable operation of the store. Pipelined commands are submitted together
//! and answered in order. Requests are parsed by [`kv_resp::RequestParser`] within
//! [`kv_resp::Limits`]; a protocol error is answered, then the connection is closed,
//! as Redis does; an unknown command or bad arguments get an error and the
//! connection goes on. See `docs/resp.md`.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

use kompact::prelude::{ActorRef, ActorRefFactory, Component};
use kv_client::{ClientCommand, ClientComp, ClientOptions, ClientSystem, Completion};
use kv_ports::{KvError, KvOp, KvResult};
use kv_resp::{Command, Limits, Reply, RequestParser};

/// The Redis version the gateway reports (`INFO`, `HELLO`): the command set it
/// follows for what it implements.
pub const REDIS_COMPAT_VERSION: &str = "7.0.0";

/// Settings of a gateway.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// Where to listen.
    pub address: SocketAddr,
    /// How the gateway's client reaches the cluster (the node itself, usually).
    pub client: ClientOptions,
    /// Bounds of one request.
    pub limits: Limits,
    /// Most connections served at once; more are answered with an error and closed.
    pub max_connections: usize,
}

/// Counters of a running gateway.
#[derive(Debug, Default)]
struct Counters {
    connections: AtomicUsize,
    accepted: AtomicU64,
    refused: AtomicU64,
    commands: AtomicU64,
    protocol_errors: AtomicU64,
}

/// What every connection thread shares.
struct Shared {
    client: ActorRef<ClientCommand>,
    limits: Limits,
    max_connections: usize,
    deadline: Duration,
    stop: AtomicBool,
    counters: Counters,
    port: u16,
}

/// A running gateway; dropping it stops accepting (connections end when their
/// peers close them or the process exits).
pub struct Gateway {
    address: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
    system: Option<ClientSystem>,
    _component: Arc<Component<ClientComp>>,
}

impl Gateway {
    /// Binds `cfg.address` and starts serving.
    pub fn start(cfg: GatewayConfig) -> io::Result<Gateway> {
        let listener = TcpListener::bind(cfg.address)?;
        let address = listener.local_addr()?;
        let deadline = cfg.client.deadline;
        let system = ClientSystem::start(cfg.client).map_err(io::Error::other)?;
        let session = system.session();
        let component = session.component().clone();
        let shared = Arc::new(Shared {
            client: component.actor_ref(),
            limits: cfg.limits,
            max_connections: cfg.max_connections.max(1),
            deadline,
            stop: AtomicBool::new(false),
            counters: Counters::default(),
            port: address.port(),
        });
        let s = shared.clone();
        let accept = std::thread::Builder::new()
            .name("resp-accept".into())
            .spawn(move || accept_loop(listener, s))?;
        Ok(Gateway {
            address,
            shared,
            accept: Some(accept),
            system: Some(system),
            _component: component,
        })
    }

    /// The address it listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Connections open now.
    pub fn connections(&self) -> usize {
        self.shared.counters.connections.load(Ordering::SeqCst)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect_timeout(&self.address, Duration::from_secs(1));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        if let Some(s) = self.system.take() {
            s.shutdown();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(mut stream) = stream else {
            // Out of descriptors, say: the next accept may work.
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        let c = &shared.counters;
        if c.connections.load(Ordering::SeqCst) >= shared.max_connections {
            c.refused.fetch_add(1, Ordering::Relaxed);
            let _ = stream.write_all(b"-ERR max number of clients reached\r\n");
            continue;
        }
        c.connections.fetch_add(1, Ordering::SeqCst);
        c.accepted.fetch_add(1, Ordering::Relaxed);
        let s = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("resp-conn".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                let _ = serve(stream, &s);
                s.counters.connections.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            c.connections.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// One connection's state.
struct Conn<'a> {
    shared: &'a Shared,
    session: u64,
    /// RESP version spoken: 2 until `HELLO 3`.
    version: u8,
    name: Option<Vec<u8>>,
    done_tx: Sender<Completion>,
    done_rx: Receiver<Completion>,
    /// Replies of the current batch, each with the version it is written in.
    replies: Vec<(Reply, u8)>,
    quit: bool,
}

/// Serves one connection until it closes, quits or breaks the protocol.
fn serve(mut stream: TcpStream, shared: &Shared) -> io::Result<()> {
    stream.set_nodelay(true)?;
    // Wakes the thread now and then to see whether the gateway stopped.
    stream.set_read_timeout(Some(Duration::from_secs(1)))?;
    let session = kv_client::random_client_id();
    shared.client.tell(ClientCommand::OpenSession(session));
    let (done_tx, done_rx) = mpsc::channel();
    let mut conn = Conn {
        shared,
        session,
        version: 2,
        name: None,
        done_tx,
        done_rx,
        replies: Vec::new(),
        quit: false,
    };
    let result = conn.run(&mut stream);
    shared.client.tell(ClientCommand::CloseSession(session));
    let _ = stream.shutdown(Shutdown::Both);
    result
}

impl Conn<'_> {
    fn run(&mut self, stream: &mut TcpStream) -> io::Result<()> {
        let mut parser = RequestParser::new(self.shared.limits);
        let mut buf = vec![0u8; 16 * 1024];
        let mut out = Vec::new();
        let mut batch: Vec<Command> = Vec::new();
        loop {
            let n = match stream.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    if self.shared.stop.load(Ordering::SeqCst) {
                        return Ok(());
                    }
                    continue;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            parser.feed(&buf[..n]);
            let mut error = None;
            loop {
                match parser.next_command() {
                    Ok(Some(cmd)) => batch.push(cmd),
                    Ok(None) => break,
                    Err(e) => {
                        error = Some(e);
                        break;
                    }
                }
            }
            if !batch.is_empty() {
                self.shared
                    .counters
                    .commands
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                self.execute(std::mem::take(&mut batch));
            }
            if let Some(e) = &error {
                self.shared
                    .counters
                    .protocol_errors
                    .fetch_add(1, Ordering::Relaxed);
                self.replies
                    .push((Reply::Error(format!("ERR {e}")), self.version));
            }
            for (r, v) in self.replies.drain(..) {
                r.encode(v, &mut out);
            }
            stream.write_all(&out)?;
            out.clear();
            if error.is_some() || self.quit {
                return Ok(());
            }
        }
    }

    /// Runs `cmds` in order and queues their replies. Consecutive store commands
    /// are submitted together; a command whose operations depend on an earlier
    /// answer (`SET ... XX`) runs alone.
    fn execute(&mut self, cmds: Vec<Command>) {
        let mut group: Vec<(usize, Vec<KvOp>, Finish)> = Vec::new();
        for cmd in cmds {
            if self.quit {
                break; // nothing after QUIT is answered
            }
            match self.plan(&cmd) {
                Plan::Now(r) => self.replies.push((r, self.version)),
                Plan::Ops(ops, finish) => {
                    let slot = self.replies.len();
                    self.replies.push((Reply::Null, self.version));
                    group.push((slot, ops, finish));
                }
                Plan::SetIfExists { key, value } => {
                    self.run_group(&mut group);
                    let r = self.set_if_exists(key, value);
                    self.replies.push((r, self.version));
                }
            }
        }
        self.run_group(&mut group);
    }

    /// Submits every operation of `group` at once and fills in their replies.
    fn run_group(&mut self, group: &mut Vec<(usize, Vec<KvOp>, Finish)>) {
        if group.is_empty() {
            return;
        }
        let mut ops = Vec::new();
        let mut tag = 0u64;
        for (_, cmd_ops, _) in group.iter() {
            for op in cmd_ops {
                ops.push((self.session, tag, op.clone()));
                tag += 1;
            }
        }
        let results = self.run_ops(ops);
        let mut at = 0;
        for (slot, cmd_ops, finish) in group.drain(..) {
            let n = cmd_ops.len();
            let reply = finish(&results[at..at + n]);
            at += n;
            self.replies[slot].0 = reply;
        }
    }

    /// Runs `ops` (tagged 0..n in this session) and returns their outcomes by tag.
    fn run_ops(&mut self, ops: Vec<(u64, u64, KvOp)>) -> Vec<Result<KvResult, KvError>> {
        let n = ops.len();
        let mut results: Vec<Option<Result<KvResult, KvError>>> = vec![None; n];
        self.shared.client.tell(ClientCommand::SubmitBatch {
            ops,
            done: self.done_tx.clone(),
        });
        let mut left = n;
        // The client component fails every operation by its deadline; this only
        // guards against a component that is gone.
        let guard = self.shared.deadline * 2 + Duration::from_secs(1);
        while left > 0 {
            match self.done_rx.recv_timeout(guard) {
                Ok((_, tag, r)) => {
                    if let Some(slot) = results.get_mut(tag as usize)
                        && slot.is_none()
                    {
                        *slot = Some(r);
                        left -= 1;
                    }
                }
                Err(_) => break,
            }
        }
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(KvError::Unavailable("the gateway's client stopped".into()))
                })
            })
            .collect()
    }

    fn run_one(&mut self, op: KvOp) -> Result<KvResult, KvError> {
        self.run_ops(vec![(self.session, 0, op)])
            .pop()
            .unwrap_or_else(|| Err(KvError::Unavailable("no answer".into())))
    }

    /// `SET key value XX`: a read, then a compare-and-swap against what it read, so
    /// that the write happens only if the key still exists with that value; again
    /// if another write came in between.
    fn set_if_exists(&mut self, key: String, value: String) -> Reply {
        for _ in 0..16 {
            let current = match self.run_one(KvOp::Get { key: key.clone() }) {
                Ok(KvResult::Value(v)) => v,
                Ok(KvResult::NotFound) => return Reply::Null,
                Ok(other) => return unexpected(&other),
                Err(e) => return store_error(&e),
            };
            match self.run_one(KvOp::Cas {
                key: key.clone(),
                expected: Some(current),
                new: value.clone(),
            }) {
                Ok(KvResult::Done) => return Reply::ok(),
                Ok(KvResult::NotFound) => return Reply::Null,
                Ok(KvResult::CasMismatch { .. }) => continue,
                Ok(other) => return unexpected(&other),
                Err(e) => return store_error(&e),
            }
        }
        Reply::err("SET XX lost 16 races with other writers of the key; try again")
    }

    fn plan(&mut self, cmd: &Command) -> Plan {
        let Some(name) = cmd.first() else {
            return Plan::Now(Reply::err("empty command"));
        };
        let name = String::from_utf8_lossy(name).to_ascii_uppercase();
        let args = &cmd[1..];
        match plan_command(&name, args, self) {
            Ok(p) => p,
            Err(r) => Plan::Now(r),
        }
    }
}

/// Turns the outcomes of a command's operations into its reply.
type Finish = Box<dyn FnOnce(&[Result<KvResult, KvError>]) -> Reply + Send>;

/// What a command needs.
enum Plan {
    /// Its reply, without the store.
    Now(Reply),
    /// Operations on the store, then a reply from their outcomes.
    Ops(Vec<KvOp>, Finish),
    /// `SET key value XX`.
    SetIfExists { key: String, value: String },
}

fn wrong_args(name: &str) -> Reply {
    Reply::err(format!(
        "wrong number of arguments for '{}' command",
        name.to_ascii_lowercase()
    ))
}

fn store_error(e: &KvError) -> Reply {
    match e {
        KvError::Unavailable(s) => Reply::Error(format!(
            "TRYAGAIN the cluster did not answer in time (a write may or may not have taken effect): {s}"
        )),
        KvError::Rejected(s) => Reply::err(format!("refused by the cluster: {s}")),
    }
}

fn unexpected(r: &KvResult) -> Reply {
    Reply::err(format!("unexpected answer from the store: {r:?}"))
}

/// An argument as text: keys and values of the store are UTF-8.
fn text(arg: &[u8]) -> Result<String, Reply> {
    String::from_utf8(arg.to_vec())
        .map_err(|_| Reply::err("keys and values must be UTF-8 text in this store"))
}

fn first_error(results: &[Result<KvResult, KvError>]) -> Option<Reply> {
    results
        .iter()
        .find_map(|r| r.as_ref().err().map(store_error))
}

/// A command of one operation per key argument (at least one): the reply is an
/// error if any operation failed, else `reply` of the outcomes.
fn per_key(
    name: &str,
    args: &[Vec<u8>],
    op: fn(String) -> KvOp,
    reply: fn(&[Result<KvResult, KvError>]) -> Reply,
) -> Result<Plan, Reply> {
    if args.is_empty() {
        return Err(wrong_args(name));
    }
    let ops = args
        .iter()
        .map(|k| text(k).map(op))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Plan::Ops(
        ops,
        Box::new(move |r| first_error(r).unwrap_or_else(|| reply(r))),
    ))
}

fn plan_command(name: &str, args: &[Vec<u8>], conn: &mut Conn<'_>) -> Result<Plan, Reply> {
    let now = |r: Reply| Ok(Plan::Now(r));
    match name {
        "PING" => match args {
            [] => now(Reply::Simple("PONG".into())),
            [m] => now(Reply::Bulk(m.clone())),
            _ => Err(wrong_args(name)),
        },
        "ECHO" => match args {
            [m] => now(Reply::Bulk(m.clone())),
            _ => Err(wrong_args(name)),
        },
        "QUIT" => {
            conn.quit = true;
            now(Reply::ok())
        }
        "SELECT" => match args {
            [db] if db.as_slice() == b"0" => now(Reply::ok()),
            [_] => Err(Reply::err(
                "DB index is out of range (this store has one database, 0)",
            )),
            _ => Err(wrong_args(name)),
        },
        "HELLO" => hello(args, conn),
        "CLIENT" => client(args, conn),
        "COMMAND" => command(args),
        "CONFIG" => config(args),
        "INFO" => now(Reply::Bulk(info(conn.shared).into_bytes())),
        "GET" => {
            let [key] = args else {
                return Err(wrong_args(name));
            };
            let key = text(key)?;
            Ok(Plan::Ops(
                vec![KvOp::Get { key }],
                Box::new(|r| match &r[0] {
                    Ok(KvResult::Value(v)) => Reply::text(v.clone()),
                    Ok(KvResult::NotFound) => Reply::Null,
                    Ok(other) => unexpected(other),
                    Err(e) => store_error(e),
                }),
            ))
        }
        "SET" => {
            let [key, value, opts @ ..] = args else {
                return Err(wrong_args(name));
            };
            let (key, value) = (text(key)?, text(value)?);
            let (mut xx, mut nx) = (false, false);
            for o in opts {
                match String::from_utf8_lossy(o).to_ascii_uppercase().as_str() {
                    "XX" if !nx => xx = true,
                    "NX" if !xx => nx = true,
                    "EX" | "PX" | "EXAT" | "PXAT" | "KEEPTTL" => {
                        return Err(Reply::err("expiry is not supported by this store"));
                    }
                    "GET" => return Err(Reply::err("SET ... GET is not supported")),
                    _ => return Err(Reply::err("syntax error")),
                }
            }
            if xx {
                return Ok(Plan::SetIfExists { key, value });
            }
            if nx {
                // One operation: a create that succeeds only if the key is absent.
                return Ok(Plan::Ops(
                    vec![KvOp::Cas {
                        key,
                        expected: None,
                        new: value,
                    }],
                    Box::new(|r| match &r[0] {
                        Ok(KvResult::Done) => Reply::ok(),
                        Ok(KvResult::CasMismatch { .. }) => Reply::Null,
                        Ok(other) => unexpected(other),
                        Err(e) => store_error(e),
                    }),
                ));
            }
            Ok(Plan::Ops(
                vec![KvOp::Put { key, value }],
                Box::new(|r| match &r[0] {
                    Ok(_) => Reply::ok(),
                    Err(e) => store_error(e),
                }),
            ))
        }
        "SETNX" => {
            let [key, value] = args else {
                return Err(wrong_args(name));
            };
            Ok(Plan::Ops(
                vec![KvOp::Cas {
                    key: text(key)?,
                    expected: None,
                    new: text(value)?,
                }],
                Box::new(|r| match &r[0] {
                    Ok(KvResult::Done) => Reply::Integer(1),
                    Ok(KvResult::CasMismatch { .. }) => Reply::Integer(0),
                    Ok(other) => unexpected(other),
                    Err(e) => store_error(e),
                }),
            ))
        }
        "DEL" => per_key(
            name,
            args,
            |key| KvOp::Delete { key },
            |r| Reply::Integer(r.iter().filter(|x| matches!(x, Ok(KvResult::Done))).count() as i64),
        ),
        "EXISTS" => per_key(
            name,
            args,
            |key| KvOp::Get { key },
            |r| {
                Reply::Integer(
                    r.iter()
                        .filter(|x| matches!(x, Ok(KvResult::Value(_))))
                        .count() as i64,
                )
            },
        ),
        "MGET" => per_key(
            name,
            args,
            |key| KvOp::Get { key },
            |r| {
                Reply::Array(
                    r.iter()
                        .map(|x| match x {
                            Ok(KvResult::Value(v)) => Reply::text(v.clone()),
                            _ => Reply::Null,
                        })
                        .collect(),
                )
            },
        ),
        "MSET" => {
            if args.is_empty() || !args.len().is_multiple_of(2) {
                return Err(wrong_args(name));
            }
            let ops = args
                .chunks(2)
                .map(|kv| {
                    Ok(KvOp::Put {
                        key: text(&kv[0])?,
                        value: text(&kv[1])?,
                    })
                })
                .collect::<Result<Vec<_>, Reply>>()?;
            Ok(Plan::Ops(
                ops,
                Box::new(|r| first_error(r).unwrap_or_else(Reply::ok)),
            ))
        }
        "CAS" => {
            let [key, expected, new] = args else {
                return Err(wrong_args(name));
            };
            let op = KvOp::Cas {
                key: text(key)?,
                expected: Some(text(expected)?),
                new: text(new)?,
            };
            Ok(Plan::Ops(
                vec![op],
                Box::new(|r| match &r[0] {
                    Ok(KvResult::Done) => Reply::Integer(1),
                    Ok(KvResult::CasMismatch { .. } | KvResult::NotFound) => Reply::Integer(0),
                    Ok(other) => unexpected(other),
                    Err(e) => store_error(e),
                }),
            ))
        }
        _ => {
            let shown: Vec<String> = args
                .iter()
                .take(3)
                .map(|a| format!("'{}'", String::from_utf8_lossy(a)))
                .collect();
            Err(Reply::err(format!(
                "unknown command '{}', with args beginning with: {}",
                name.to_ascii_lowercase(),
                shown.join(" ")
            )))
        }
    }
}

fn hello(args: &[Vec<u8>], conn: &mut Conn<'_>) -> Result<Plan, Reply> {
    let mut rest = args;
    if let [v, more @ ..] = args {
        let version = match v.as_slice() {
            b"2" => 2,
            b"3" => 3,
            _ => {
                return Err(Reply::Error("NOPROTO unsupported protocol version".into()));
            }
        };
        rest = more;
        // Options: AUTH user pass (no users here), SETNAME name.
        while let [opt, tail @ ..] = rest {
            match String::from_utf8_lossy(opt).to_ascii_uppercase().as_str() {
                "AUTH" if tail.len() >= 2 => {
                    return Err(Reply::err("AUTH is not supported by this store"));
                }
                "SETNAME" if !tail.is_empty() => {
                    conn.name = Some(tail[0].clone());
                    rest = &tail[1..];
                }
                _ => return Err(Reply::err("syntax error in HELLO option")),
            }
        }
        conn.version = version;
    }
    let _ = rest;
    Ok(Plan::Now(Reply::Map(vec![
        (Reply::text("server"), Reply::text("kompact-kv")),
        (Reply::text("version"), Reply::text(REDIS_COMPAT_VERSION)),
        (
            Reply::text("proto"),
            Reply::Integer(i64::from(conn.version)),
        ),
        (
            Reply::text("id"),
            Reply::Integer((conn.session >> 1) as i64),
        ),
        (Reply::text("mode"), Reply::text("standalone")),
        (Reply::text("role"), Reply::text("master")),
        (Reply::text("modules"), Reply::Array(Vec::new())),
    ])))
}

fn client(args: &[Vec<u8>], conn: &mut Conn<'_>) -> Result<Plan, Reply> {
    let Some(sub) = args.first() else {
        return Err(wrong_args("client"));
    };
    let sub = String::from_utf8_lossy(sub).to_ascii_uppercase();
    let r = match (sub.as_str(), &args[1..]) {
        ("SETNAME", [n]) => {
            conn.name = Some(n.clone());
            Reply::ok()
        }
        ("GETNAME", []) => conn.name.clone().map_or(Reply::Null, Reply::Bulk),
        ("ID", []) => Reply::Integer((conn.session >> 1) as i64),
        ("SETINFO", [_, _]) | ("NO-EVICT", [_]) | ("NO-TOUCH", [_]) => Reply::ok(),
        ("INFO", []) | ("LIST", _) => Reply::text(format!(
            "id={} name={} resp={}\n",
            conn.session >> 1,
            String::from_utf8_lossy(conn.name.as_deref().unwrap_or_default()),
            conn.version
        )),
        _ => {
            return Err(Reply::err(format!(
                "unknown or unsupported CLIENT subcommand '{}'",
                sub.to_ascii_lowercase()
            )));
        }
    };
    Ok(Plan::Now(r))
}

/// `COMMAND`, `COMMAND COUNT`, `COMMAND DOCS`, `COMMAND INFO`: enough for tools that
/// ask at start-up; the gateway does not describe its commands in detail.
fn command(args: &[Vec<u8>]) -> Result<Plan, Reply> {
    let sub = args
        .first()
        .map(|s| String::from_utf8_lossy(s).to_ascii_uppercase());
    let r = match sub.as_deref() {
        None | Some("DOCS") => Reply::Array(Vec::new()),
        Some("COUNT") => Reply::Integer(COMMANDS.len() as i64),
        Some("INFO") => Reply::Array(args[1..].iter().map(|_| Reply::Null).collect()),
        Some("LIST") => Reply::Array(COMMANDS.iter().map(|c| Reply::text(*c)).collect()),
        Some(other) => {
            return Err(Reply::err(format!(
                "unknown COMMAND subcommand '{}'",
                other.to_ascii_lowercase()
            )));
        }
    };
    Ok(Plan::Now(r))
}

/// The commands the gateway answers.
pub const COMMANDS: &[&str] = &[
    "cas", "client", "command", "config", "echo", "exists", "get", "hello", "info", "mget", "mset",
    "ping", "quit", "select", "set",
];

/// `CONFIG GET` answers the few parameters tools ask for; `CONFIG SET` is refused.
fn config(args: &[Vec<u8>]) -> Result<Plan, Reply> {
    let Some(sub) = args.first() else {
        return Err(wrong_args("config"));
    };
    match String::from_utf8_lossy(sub).to_ascii_uppercase().as_str() {
        "GET" if args.len() >= 2 => {
            const KNOWN: &[(&str, &str)] = &[
                ("save", ""),
                ("appendonly", "no"),
                ("databases", "1"),
                ("maxmemory", "0"),
            ];
            let mut pairs = Vec::new();
            for pattern in &args[1..] {
                let p = String::from_utf8_lossy(pattern).to_ascii_lowercase();
                for (k, v) in KNOWN {
                    if (p == "*" || p == *k) && !pairs.iter().any(|(a, _)| a == k) {
                        pairs.push((*k, *v));
                    }
                }
            }
            Ok(Plan::Now(Reply::Map(
                pairs
                    .into_iter()
                    .map(|(k, v)| (Reply::text(k), Reply::text(v)))
                    .collect(),
            )))
        }
        "SET" | "RESETSTAT" | "REWRITE" => Err(Reply::err(
            "CONFIG SET is not supported: the node is configured by its HOCON file",
        )),
        _ => Err(wrong_args("config")),
    }
}

fn info(shared: &Shared) -> String {
    let c = &shared.counters;
    format!(
        "# Server\r\nredis_version:{REDIS_COMPAT_VERSION}\r\nkompact_kv_version:{}\r\n\
         redis_mode:standalone\r\ntcp_port:{}\r\n\r\n# Clients\r\nconnected_clients:{}\r\n\
         maxclients:{}\r\n\r\n# Stats\r\ntotal_connections_received:{}\r\n\
         rejected_connections:{}\r\ntotal_commands_processed:{}\r\nprotocol_errors:{}\r\n",
        env!("CARGO_PKG_VERSION"),
        shared.port,
        c.connections.load(Ordering::SeqCst),
        shared.max_connections,
        c.accepted.load(Ordering::Relaxed),
        c.refused.load(Ordering::Relaxed),
        c.commands.load(Ordering::Relaxed),
        c.protocol_errors.load(Ordering::Relaxed),
    )
}
