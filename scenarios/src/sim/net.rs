//! The simulated network: a [`SimNetwork`] provider of the `Network` port in every
//! node and client system, and one [`SimNet`] hub that carries their messages.
//!
//! The hub models TCP between systems, not a lossy datagram network:
//! - every message between two live, connected systems arrives, once, after a delay
//!   drawn from a seeded [`DelayModel`], and messages of one connection (ordered pair
//!   of addresses) arrive in the order they were sent;
//! - messages are lost only when their connection is broken: a crash
//!   ([`SimNet::kill`]), a partition ([`SimNet::partition`]) or a connection drop
//!   ([`SimNet::drop_connection`]); then everything in flight on it is lost too;
//! - when a broken connection comes back ([`SimNet::heal`], or after a drop) both
//!   sides get `ConnectionEstablished`, as the TCP provider reports a reconnect, so the
//!   PerfectLink retransmits what the loss swallowed.
//!
//! Every message is encoded with `kv-wire` by the sender's [`SimNetwork`] and decoded
//! by the receiver's, so the simulation exercises the real codec. The hub folds every
//! delivery and fault into a 64-bit FNV-1a hash of (virtual time, addresses, message
//! bytes); two runs with the same seed give the same hash.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use kompact::prelude::*;
use kompact::timer::ManualTimer;
use kv_ports::{NetIndication, NetRequest, Network, NodeId};
use kv_protocols::rng::SplitMix64;
use kv_wire::SerId;

use super::clock::as_millis;

/// How long a message takes, drawn per message from the simulation's seeded RNG.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DelayModel {
    /// Every message takes exactly this long. `Constant(Duration::ZERO)` is the
    /// course's network: a message sent by a handler is delivered after the work
    /// already queued at the same instant, in global send order.
    Constant(Duration),
    /// Uniform over `lo..=hi`, in whole milliseconds.
    Uniform {
        /// Shortest delay.
        lo: Duration,
        /// Longest delay.
        hi: Duration,
    },
}

impl DelayModel {
    /// The course's network: no delay.
    pub fn zero() -> Self {
        DelayModel::Constant(Duration::ZERO)
    }

    /// Uniform between `lo_ms` and `hi_ms` milliseconds.
    pub fn uniform_ms(lo_ms: u64, hi_ms: u64) -> Self {
        DelayModel::Uniform {
            lo: Duration::from_millis(lo_ms),
            hi: Duration::from_millis(hi_ms.max(lo_ms)),
        }
    }

    fn draw_ms(&self, rng: &mut SplitMix64) -> u64 {
        match self {
            DelayModel::Constant(d) => as_millis(*d),
            DelayModel::Uniform { lo, hi } => rng.range_inclusive(as_millis(*lo), as_millis(*hi)),
        }
    }
}

impl std::fmt::Display for DelayModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DelayModel::Constant(d) => write!(f, "constant {} ms", d.as_millis()),
            DelayModel::Uniform { lo, hi } => {
                write!(f, "uniform {}-{} ms", lo.as_millis(), hi.as_millis())
            }
        }
    }
}

/// A message on its way: the sender's encoding.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// Sender's address.
    pub src: NodeId,
    /// Destination address.
    pub dst: NodeId,
    /// Serialisation id of the encoding.
    pub ser_id: SerId,
    /// The `kv-wire` encoding.
    pub bytes: Vec<u8>,
}

/// What the hub tells a [`SimNetwork`].
#[derive(Debug)]
pub enum EndpointMsg {
    /// A message arrived.
    Deliver {
        /// Sender's address.
        src: NodeId,
        /// Serialisation id.
        ser_id: SerId,
        /// The encoding.
        bytes: Vec<u8>,
    },
    /// A connection status change, passed on as is.
    Status(NetIndication),
}

/// Provides the `Network` port of one simulated system (a node or a client) over
/// the [`SimNet`] hub.
#[derive(ComponentDefinition)]
pub struct SimNetwork {
    ctx: ComponentContext<Self>,
    net_port: ProvidedPort<Network>,
    me: NodeId,
    hub: ActorRef<Envelope>,
    /// Frames that failed to decode (a codec bug; the run reports it).
    pub decode_errors: u64,
}

impl SimNetwork {
    /// The provider for the system at address `me`.
    pub fn new(me: NodeId, hub: ActorRef<Envelope>) -> Self {
        SimNetwork {
            ctx: ComponentContext::uninitialised(),
            net_port: ProvidedPort::uninitialised(),
            me,
            hub,
            decode_errors: 0,
        }
    }
}

ignore_lifecycle!(SimNetwork);

impl Provide<Network> for SimNetwork {
    fn handle(&mut self, req: NetRequest) -> HandlerResult {
        let NetRequest::Send { dst, msg } = req;
        let (ser_id, bytes) = kv_wire::encode_to_vec(&msg);
        self.hub.tell(Envelope {
            src: self.me,
            dst,
            ser_id,
            bytes,
        });
        Handled::OK
    }
}

impl Actor for SimNetwork {
    type Message = EndpointMsg;

    fn receive_local(&mut self, msg: EndpointMsg) -> HandlerResult {
        match msg {
            EndpointMsg::Deliver { src, ser_id, bytes } => {
                match kv_wire::decode_slice(ser_id, &bytes) {
                    Ok(m) => self
                        .net_port
                        .trigger(NetIndication::Deliver { src, msg: m }),
                    Err(e) => {
                        self.decode_errors += 1;
                        error!(self.ctx.log(), "simulated frame failed to decode";
                            "from" => %src, "ser_id" => ser_id, "error" => %e);
                    }
                }
            }
            EndpointMsg::Status(ind) => self.net_port.trigger(ind),
        }
        Handled::OK
    }

    fn receive_network(&mut self, _msg: NetMessage) -> HandlerResult {
        Handled::OK
    }
}

/// An unordered pair of addresses: one connection.
fn pair(a: NodeId, b: NodeId) -> (NodeId, NodeId) {
    if a <= b { (a, b) } else { (b, a) }
}

#[derive(Debug)]
struct InFlight {
    env: Envelope,
    /// The connection's epoch when sent; a break bumps it, so the message is lost.
    epoch: u64,
}

/// Counters of one run's network.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Messages handed to the hub.
    pub sent: u64,
    /// Messages delivered.
    pub delivered: u64,
    /// Messages lost to crashes, partitions and connection drops.
    pub dropped: u64,
    /// Messages to an address nobody listens on.
    pub unroutable: u64,
}

/// The hub of the simulated network. One per simulation, in its own system.
#[derive(ComponentDefinition)]
pub struct SimNet {
    ctx: ComponentContext<Self>,
    clock: ManualTimer,
    delay: DelayModel,
    rng: SplitMix64,
    endpoints: BTreeMap<NodeId, ActorRef<EndpointMsg>>,
    dead: BTreeSet<NodeId>,
    /// Active cuts; each is a list of sides, and two addresses on different sides
    /// of any cut cannot talk. Addresses on no side (clients) reach everyone.
    cuts: Vec<Vec<BTreeSet<NodeId>>>,
    /// Connections that have carried a message (so have a status to report).
    connections: BTreeSet<(NodeId, NodeId)>,
    /// Invariant: a connection's epoch only grows; it grows on every break.
    epochs: BTreeMap<(NodeId, NodeId), u64>,
    /// Latest delivery time scheduled per directed connection (FIFO).
    last_delivery: BTreeMap<(NodeId, NodeId), u64>,
    /// Messages in flight by (delivery time, send order).
    in_flight: BTreeMap<(u64, u64), InFlight>,
    /// Delivery times with a timer already set.
    wakeups: BTreeSet<u64>,
    /// Pending reconnections after connection drops: time → pairs.
    reconnects: BTreeMap<u64, Vec<(NodeId, NodeId)>>,
    next_seq: u64,
    hash: u64,
    trace: bool,
    stats: NetStats,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

impl SimNet {
    /// A hub drawing delays from `delay` with a generator seeded by `seed`.
    /// `trace` prints every delivery and fault to stdout.
    pub fn new(clock: ManualTimer, delay: DelayModel, seed: u64, trace: bool) -> Self {
        SimNet {
            ctx: ComponentContext::uninitialised(),
            clock,
            delay,
            rng: SplitMix64::new(seed),
            endpoints: BTreeMap::new(),
            dead: BTreeSet::new(),
            cuts: Vec::new(),
            connections: BTreeSet::new(),
            epochs: BTreeMap::new(),
            last_delivery: BTreeMap::new(),
            in_flight: BTreeMap::new(),
            wakeups: BTreeSet::new(),
            reconnects: BTreeMap::new(),
            next_seq: 0,
            hash: FNV_OFFSET,
            trace,
            stats: NetStats::default(),
        }
    }

    fn now_ms(&self) -> u64 {
        as_millis(self.clock.elapsed())
    }

    fn mix_bytes(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.hash ^= u64::from(*b);
            self.hash = self.hash.wrapping_mul(FNV_PRIME);
        }
    }

    fn mix_addr(&mut self, a: NodeId) {
        match a {
            SocketAddr::V4(v4) => self.mix_bytes(&v4.ip().octets()),
            SocketAddr::V6(v6) => self.mix_bytes(&v6.ip().octets()),
        }
        self.mix_bytes(&a.port().to_le_bytes());
    }

    /// Folds an event into the trace hash: a tag, the virtual time and addresses.
    fn mix_event(&mut self, tag: u8, addrs: &[NodeId]) {
        let now = self.now_ms();
        self.mix_bytes(&[tag]);
        self.mix_bytes(&now.to_le_bytes());
        for a in addrs {
            self.mix_addr(*a);
        }
    }

    fn trace_line(&self, line: std::fmt::Arguments<'_>) {
        if self.trace {
            let now = self.now_ms();
            println!("[{:>6}.{:03}s] {line}", now / 1000, now % 1000);
        }
    }

    /// The hash of every delivery and fault so far.
    pub fn trace_hash(&self) -> u64 {
        self.hash
    }

    /// The network's counters.
    pub fn stats(&self) -> NetStats {
        self.stats.clone()
    }

    /// Attach the system at `addr`; messages to it go to `endpoint`.
    pub fn register(&mut self, addr: NodeId, endpoint: ActorRef<EndpointMsg>) {
        self.dead.remove(&addr);
        self.endpoints.insert(addr, endpoint);
    }

    /// Whether `addr` has crashed.
    pub fn is_dead(&self, addr: NodeId) -> bool {
        self.dead.contains(&addr)
    }

    fn separated(&self, a: NodeId, b: NodeId) -> bool {
        self.cuts.iter().any(|sides| {
            let sa = sides.iter().position(|s| s.contains(&a));
            let sb = sides.iter().position(|s| s.contains(&b));
            matches!((sa, sb), (Some(x), Some(y)) if x != y)
        })
    }

    fn epoch(&self, a: NodeId, b: NodeId) -> u64 {
        self.epochs.get(&pair(a, b)).copied().unwrap_or(0)
    }

    fn break_connection(&mut self, a: NodeId, b: NodeId) {
        *self.epochs.entry(pair(a, b)).or_insert(0) += 1;
    }

    fn status(&mut self, to: NodeId, ind: NetIndication) {
        if self.dead.contains(&to) {
            return;
        }
        if let Some(ep) = self.endpoints.get(&to) {
            ep.tell(EndpointMsg::Status(ind));
        }
    }

    /// Crash-stop `addr`: everything to or from it, in flight included, is lost from
    /// now on, and its peers see the connection go.
    pub fn kill(&mut self, addr: NodeId) {
        self.mix_event(b'K', &[addr]);
        self.trace_line(format_args!("KILL {addr}"));
        self.dead.insert(addr);
        let peers: Vec<(NodeId, NodeId)> = self
            .connections
            .iter()
            .copied()
            .filter(|(a, b)| *a == addr || *b == addr)
            .collect();
        for (a, b) in peers {
            self.break_connection(a, b);
            let other = if a == addr { b } else { a };
            self.status(other, NetIndication::ConnectionLost(addr));
        }
    }

    /// Cut the network: addresses in different `sides` cannot talk until
    /// [`SimNet::heal`]. Connections across the cut break (in-flight messages lost).
    pub fn partition(&mut self, sides: Vec<Vec<NodeId>>) {
        let sides: Vec<BTreeSet<NodeId>> =
            sides.into_iter().map(|s| s.into_iter().collect()).collect();
        let flat: Vec<NodeId> = sides.iter().flatten().copied().collect();
        self.mix_event(b'P', &flat);
        self.trace_line(format_args!("PARTITION {sides:?}"));
        let before: BTreeSet<(NodeId, NodeId)> = self.cut_pairs();
        self.cuts.push(sides);
        let after = self.cut_pairs();
        for (a, b) in after.difference(&before) {
            self.break_connection(*a, *b);
            if self.connections.contains(&(*a, *b)) {
                self.status(*a, NetIndication::ConnectionLost(*b));
                self.status(*b, NetIndication::ConnectionLost(*a));
            }
        }
    }

    /// Pairs of known addresses separated by some cut.
    fn cut_pairs(&self) -> BTreeSet<(NodeId, NodeId)> {
        let addrs: Vec<NodeId> = self.endpoints.keys().copied().collect();
        let mut out = BTreeSet::new();
        for (i, a) in addrs.iter().enumerate() {
            for b in &addrs[i + 1..] {
                if self.separated(*a, *b) {
                    out.insert(pair(*a, *b));
                }
            }
        }
        out
    }

    /// Remove every cut. Both sides of each restored connection get
    /// `ConnectionEstablished`, as after a TCP reconnect.
    pub fn heal(&mut self) {
        self.mix_event(b'H', &[]);
        self.trace_line(format_args!("HEAL"));
        let before = self.cut_pairs();
        self.cuts.clear();
        for (a, b) in before {
            self.reconnected(a, b);
        }
    }

    fn reconnected(&mut self, a: NodeId, b: NodeId) {
        if self.dead.contains(&a) || self.dead.contains(&b) || self.separated(a, b) {
            return;
        }
        if self.connections.contains(&pair(a, b)) {
            self.status(a, NetIndication::ConnectionEstablished(b));
            self.status(b, NetIndication::ConnectionEstablished(a));
        }
    }

    /// Break the connection between `a` and `b` (what is in flight on it is lost)
    /// and let it come back after `reconnect_after`.
    pub fn drop_connection(&mut self, a: NodeId, b: NodeId, reconnect_after: Duration) {
        self.mix_event(b'D', &[a, b]);
        self.trace_line(format_args!("DROP CONNECTION {a} <-> {b}"));
        self.break_connection(a, b);
        if self.connections.contains(&pair(a, b)) {
            self.status(a, NetIndication::ConnectionLost(b));
            self.status(b, NetIndication::ConnectionLost(a));
        }
        let at = self.now_ms() + as_millis(reconnect_after).max(1);
        self.reconnects.entry(at).or_default().push(pair(a, b));
        self.wake_at(at);
    }

    fn wake_at(&mut self, at: u64) {
        if self.wakeups.insert(at) {
            let delay = Duration::from_millis(at.saturating_sub(self.now_ms()).max(1));
            self.schedule_once(delay, move |c, _| c.on_wakeup());
        }
    }

    fn on_send(&mut self, env: Envelope) {
        self.stats.sent += 1;
        let (src, dst) = (env.src, env.dst);
        if self.dead.contains(&src) {
            self.stats.dropped += 1;
            return;
        }
        if !self.endpoints.contains_key(&dst) {
            self.stats.unroutable += 1;
            return;
        }
        if self.dead.contains(&dst) || self.separated(src, dst) {
            self.stats.dropped += 1;
            return;
        }
        self.connections.insert(pair(src, dst));
        let now = self.now_ms();
        let drawn = now + self.delay.draw_ms(&mut self.rng);
        let last = self.last_delivery.get(&(src, dst)).copied().unwrap_or(0);
        let at = drawn.max(last);
        self.last_delivery.insert((src, dst), at);
        let seq = self.next_seq;
        self.next_seq += 1;
        let epoch = self.epoch(src, dst);
        if at <= now {
            // Zero delay: queue it behind the work of this instant, in send order,
            // after anything already due.
            self.deliver_due(now);
            self.deliver(InFlight { env, epoch });
        } else {
            self.in_flight.insert((at, seq), InFlight { env, epoch });
            self.wake_at(at);
        }
    }

    fn on_wakeup(&mut self) -> HandlerResult {
        let now = self.now_ms();
        self.deliver_due(now);
        let due: Vec<u64> = self.reconnects.range(..=now).map(|(t, _)| *t).collect();
        for t in due {
            for (a, b) in self.reconnects.remove(&t).unwrap_or_default() {
                self.mix_event(b'R', &[a, b]);
                self.trace_line(format_args!("RECONNECT {a} <-> {b}"));
                self.reconnected(a, b);
            }
        }
        self.wakeups.retain(|t| *t > now);
        Handled::OK
    }

    fn deliver_due(&mut self, now: u64) {
        while let Some(entry) = self.in_flight.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let m = entry.remove();
            self.deliver(m);
        }
    }

    fn deliver(&mut self, m: InFlight) {
        let InFlight { env, epoch } = m;
        if self.dead.contains(&env.src)
            || self.dead.contains(&env.dst)
            || epoch != self.epoch(env.src, env.dst)
        {
            self.stats.dropped += 1;
            return;
        }
        let Some(ep) = self.endpoints.get(&env.dst).cloned() else {
            self.stats.unroutable += 1;
            return;
        };
        self.stats.delivered += 1;
        self.mix_event(b'M', &[env.src, env.dst]);
        self.mix_bytes(&env.ser_id.to_le_bytes());
        self.mix_bytes(&env.bytes);
        if self.trace {
            let what = match kv_wire::decode_slice(env.ser_id, &env.bytes) {
                Ok(m) => {
                    let mut s = format!("{m:?}");
                    if s.len() > 240 {
                        let mut cut = 240;
                        while !s.is_char_boundary(cut) {
                            cut -= 1;
                        }
                        s.truncate(cut);
                        s.push_str("...");
                    }
                    s
                }
                Err(e) => format!("<undecodable: {e}>"),
            };
            self.trace_line(format_args!("{} -> {}: {what}", env.src, env.dst));
        }
        ep.tell(EndpointMsg::Deliver {
            src: env.src,
            ser_id: env.ser_id,
            bytes: env.bytes,
        });
    }
}

ignore_lifecycle!(SimNet);

impl Actor for SimNet {
    type Message = Envelope;

    fn receive_local(&mut self, env: Envelope) -> HandlerResult {
        self.on_send(env);
        Handled::OK
    }

    fn receive_network(&mut self, _msg: NetMessage) -> HandlerResult {
        Handled::OK
    }
}
