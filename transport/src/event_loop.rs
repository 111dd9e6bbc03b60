//! The network thread: one mio event loop that accepts, dials, runs handshakes,
//! reads and writes frames, and keeps one connection per peer.
//!
//! Everything here runs on that one thread. The handle talks to it through a
//! channel and a mio [`Waker`]; the loop talks back through the handler it was
//! started with.

use std::collections::BTreeMap;
use std::io::{self, ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use thiserror::Error;

use crate::config::{ConfigError, TransportConfig};
use crate::frame::{FrameDecoder, FrameEncoder, FrameError, HEADER_LEN};
use crate::handshake::{
    Handshake, HandshakeConfig, HandshakeError, Identity, NONCE_LEN, PeerInfo, Progress, Role,
};
use crate::tls::{self, TlsError};

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
const FIRST_CONNECTION: usize = 2;

/// Frame kinds after the handshake: the first payload byte.
const KIND_DATA: u8 = 0;
const KIND_KEEPALIVE: u8 = 1;

/// Reads from one connection per readiness event before the others get a turn; a
/// connection with more to read is revisited on the next loop iteration.
const READS_PER_TURN: usize = 16;
/// An output buffer larger than this is given back once it has drained.
const RETAINED_OUTPUT: usize = 1 << 20;
/// Sends taken from the channel per loop iteration, so a producer faster than the
/// network cannot keep the loop from its sockets; the rest wait for the next turn.
const SENDS_PER_TURN: usize = 4096;
/// What a send costs against `max_unprocessed_send_bytes` beyond its data, so that
/// even empty frames cannot queue without bound.
const SEND_OVERHEAD: usize = 64;
/// The first byte of a TLS record carrying a handshake message or an alert. A
/// plaintext handshake starts with a length's high byte, which is 0 (handshake
/// frames are short), so these mean a TLS peer.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;
const TLS_ALERT_RECORD: u8 = 0x15;

/// What the transport reports to its handler, on the network thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A connection to `peer` finished its handshake (or replaced one to an older
    /// incarnation, after a [`Event::Disconnected`]).
    Connected {
        /// The peer's address (its identity).
        peer: SocketAddr,
        /// The peer process's incarnation.
        incarnation: u64,
    },
    /// The connection to `peer` is gone. Frames queued on it may be lost.
    Disconnected {
        /// The peer's address.
        peer: SocketAddr,
    },
    /// A data frame from `peer`, in the order it was sent on that connection.
    Frame {
        /// The sender.
        peer: SocketAddr,
        /// The payload.
        data: Vec<u8>,
    },
    /// A connection (or a dial) failed or was closed for breaking a rule. Meant to
    /// be logged; the transport has already closed it and counted it.
    ConnectionError {
        /// The remote socket address.
        remote: SocketAddr,
        /// The peer's identity when known: the address dialed, or the one its
        /// hello claimed (proven only once a handshake succeeds).
        peer: Option<SocketAddr>,
        /// Whether this side dialed the connection (else it accepted it). A dialer
        /// that is refused, for example by a node of another cluster, can tell its
        /// user why, while the acceptor only has a stranger to log.
        dialed: bool,
        /// Why.
        error: ConnectionError,
    },
}

/// Why a connection was closed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConnectionError {
    /// The handshake failed (bad hello, other cluster, wrong secret, ...).
    #[error("handshake: {0}")]
    Handshake(#[from] HandshakeError),
    /// TLS refused the peer (certificate, identity) or broke.
    #[error("tls: {0}")]
    Tls(#[from] TlsError),
    /// The byte stream after the handshake broke the frame rules.
    #[error("bad frame: {0}")]
    Frame(#[from] FrameError),
    /// A frame of a kind this version does not know, or without a kind byte.
    #[error("bad frame: unknown kind {0:?}")]
    UnknownKind(Option<u8>),
    /// The handshake did not finish in time.
    #[error("handshake timed out")]
    HandshakeTimeout,
    /// Nothing arrived for longer than the idle timeout.
    #[error("idle for longer than the idle timeout")]
    IdleTimeout,
    /// A system call failed.
    #[error("{kind}: {message}")]
    Io {
        /// The error's kind.
        kind: ErrorKind,
        /// Its text.
        message: String,
    },
}

impl From<io::Error> for ConnectionError {
    fn from(e: io::Error) -> Self {
        ConnectionError::Io {
            kind: e.kind(),
            message: e.to_string(),
        }
    }
}

/// Why [`TransportHandle::send`] did not take a frame.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SendError {
    /// The frame is longer than `max_frame_bytes` allows.
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// The frame's length.
        len: usize,
        /// The largest data length accepted.
        max: usize,
    },
    /// The network thread is behind by more than `max_unprocessed_send_bytes`.
    #[error("transport is full ({queued} bytes not yet taken)")]
    Full {
        /// Bytes waiting for the network thread.
        queued: usize,
    },
    /// The transport has stopped.
    #[error("transport stopped")]
    Stopped,
}

/// Why [`Transport::start`] failed.
#[derive(Debug, Error)]
pub enum StartError {
    /// A setting is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: io::Error,
    },
    /// The event loop or its thread could not be set up.
    #[error("cannot start the network thread: {0}")]
    Io(#[from] io::Error),
}

/// Counters, monotonic since start (except `open_connections`).
#[derive(Debug, Default)]
struct Counters {
    frames_in: AtomicU64,
    frames_out: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    write_calls: AtomicU64,
    bad_frames: AtomicU64,
    auth_failures: AtomicU64,
    tls_failures: AtomicU64,
    handshake_failures: AtomicU64,
    connections_accepted: AtomicU64,
    connections_refused: AtomicU64,
    dials: AtomicU64,
    dial_failures: AtomicU64,
    frames_dropped: AtomicU64,
    open_connections: AtomicU64,
}

/// A snapshot of the transport's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Data frames delivered to the handler.
    pub frames_in: u64,
    /// Data frames put on a connection's output.
    pub frames_out: u64,
    /// Bytes read from sockets.
    pub bytes_in: u64,
    /// Bytes written to sockets.
    pub bytes_out: u64,
    /// Successful `write` system calls (several frames share one).
    pub write_calls: u64,
    /// Connections closed for a bad frame after the handshake.
    pub bad_frames: u64,
    /// Connections refused for a wrong or missing cluster secret, or for a
    /// certificate (or its absence) that does not authenticate the peer.
    pub auth_failures: u64,
    /// Connections closed by TLS: a certificate refused (by either side), a peer
    /// that does not speak TLS, a broken session.
    pub tls_failures: u64,
    /// Handshakes that failed for any reason (auth failures included).
    pub handshake_failures: u64,
    /// Incoming connections accepted.
    pub connections_accepted: u64,
    /// Incoming connections refused at once (over a connection limit).
    pub connections_refused: u64,
    /// Outgoing connections attempted.
    pub dials: u64,
    /// Outgoing connections that failed before their handshake finished.
    pub dial_failures: u64,
    /// Data frames dropped: over a peer's queue limit, or queued for a peer that
    /// was given up.
    pub frames_dropped: u64,
    /// Connections open now (handshaking ones included).
    pub open_connections: u64,
}

impl Counters {
    fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    fn snapshot(&self) -> Stats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            frames_in: g(&self.frames_in),
            frames_out: g(&self.frames_out),
            bytes_in: g(&self.bytes_in),
            bytes_out: g(&self.bytes_out),
            write_calls: g(&self.write_calls),
            bad_frames: g(&self.bad_frames),
            auth_failures: g(&self.auth_failures),
            tls_failures: g(&self.tls_failures),
            handshake_failures: g(&self.handshake_failures),
            connections_accepted: g(&self.connections_accepted),
            connections_refused: g(&self.connections_refused),
            dials: g(&self.dials),
            dial_failures: g(&self.dial_failures),
            frames_dropped: g(&self.frames_dropped),
            open_connections: g(&self.open_connections),
        }
    }
}

enum Command {
    Send { peer: SocketAddr, data: Vec<u8> },
    Disconnect { peer: SocketAddr },
    Shutdown,
}

/// What the handles share with the network thread.
struct Shared {
    commands: Mutex<Sender<Command>>,
    waker: Waker,
    /// Set when the loop has been woken and has not drained the commands yet, so a
    /// burst of sends costs one wake-up.
    wake_pending: AtomicBool,
    /// Data bytes sent through the channel and not yet taken by the loop.
    unprocessed: AtomicUsize,
    counters: Counters,
    max_data: usize,
    max_unprocessed: usize,
}

/// Sends frames to peers from any thread; cheap to clone.
#[derive(Clone)]
pub struct TransportSender {
    shared: Arc<Shared>,
}

impl TransportSender {
    /// Queues `data` as one frame to the node whose identity is `peer`, dialing it
    /// if there is no connection. Delivery is at most once: frames queued on a
    /// connection that breaks are lost (the link above retransmits).
    pub fn send(&self, peer: SocketAddr, data: Vec<u8>) -> Result<(), SendError> {
        let s = &self.shared;
        if data.len() > s.max_data {
            return Err(SendError::TooLarge {
                len: data.len(),
                max: s.max_data,
            });
        }
        let len = data.len() + SEND_OVERHEAD;
        let queued = s.unprocessed.fetch_add(len, Ordering::AcqRel);
        if queued > s.max_unprocessed {
            s.unprocessed.fetch_sub(len, Ordering::AcqRel);
            return Err(SendError::Full { queued });
        }
        let sent = match s.commands.lock() {
            Ok(tx) => tx.send(Command::Send { peer, data }).is_ok(),
            Err(_) => false,
        };
        if !sent {
            s.unprocessed.fetch_sub(len, Ordering::AcqRel);
            return Err(SendError::Stopped);
        }
        if !s.wake_pending.swap(true, Ordering::AcqRel) {
            // A failed wake leaves the frame for the next loop iteration.
            let _ = s.waker.wake();
        }
        Ok(())
    }

    /// Closes the open connection to `peer`, if there is one, as a broken one
    /// would be (reported as [`Event::Disconnected`]; what was queued on it is
    /// lost). The next frame to it dials again. Meant for fault injection.
    pub fn disconnect(&self, peer: SocketAddr) -> Result<(), SendError> {
        let s = &self.shared;
        let sent = match s.commands.lock() {
            Ok(tx) => tx.send(Command::Disconnect { peer }).is_ok(),
            Err(_) => false,
        };
        if !sent {
            return Err(SendError::Stopped);
        }
        if !s.wake_pending.swap(true, Ordering::AcqRel) {
            let _ = s.waker.wake();
        }
        Ok(())
    }

    /// The counters now.
    pub fn stats(&self) -> Stats {
        self.shared.counters.snapshot()
    }
}

/// A running transport. Dropping it shuts it down.
pub struct TransportHandle {
    sender: TransportSender,
    thread: Option<JoinHandle<io::Result<()>>>,
    local_addr: SocketAddr,
    identity: Identity,
}

impl TransportHandle {
    /// See [`TransportSender::send`].
    pub fn send(&self, peer: SocketAddr, data: Vec<u8>) -> Result<(), SendError> {
        self.sender.send(peer, data)
    }

    /// See [`TransportSender::disconnect`].
    pub fn disconnect(&self, peer: SocketAddr) -> Result<(), SendError> {
        self.sender.disconnect(peer)
    }

    /// A sender for other threads.
    pub fn sender(&self) -> TransportSender {
        self.sender.clone()
    }

    /// The counters now.
    pub fn stats(&self) -> Stats {
        self.sender.stats()
    }

    /// The address the listener is bound to (the chosen port when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// This node's identity as sent in handshakes.
    pub fn identity(&self) -> Identity {
        self.identity
    }

    /// Stops the network thread after one last attempt to write what is queued,
    /// closes every connection and the listener, and waits for the thread. Returns
    /// the error that stopped the loop early, if one did.
    pub fn shutdown(mut self) -> io::Result<()> {
        self.stop()
    }

    fn stop(&mut self) -> io::Result<()> {
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        if let Ok(tx) = self.sender.shared.commands.lock() {
            let _ = tx.send(Command::Shutdown);
        }
        let _ = self.sender.shared.waker.wake();
        match thread.join() {
            Ok(r) => r,
            Err(_) => Err(io::Error::other("the network thread panicked")),
        }
    }
}

impl Drop for TransportHandle {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// The transport's entry point.
pub struct Transport;

impl Transport {
    /// Binds `config.listen` and starts the network thread. `handler` runs on that
    /// thread for every [`Event`]; it should hand events on (to a channel, a
    /// component) rather than block, since the loop waits for it.
    pub fn start<H>(config: TransportConfig, handler: H) -> Result<TransportHandle, StartError>
    where
        H: FnMut(Event) + Send + 'static,
    {
        config.validate()?;
        let mut listener = TcpListener::bind(config.listen).map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
        let local_addr = listener.local_addr()?;
        let addr = config.advertise.unwrap_or(local_addr);
        if addr.ip().is_unspecified() {
            return Err(ConfigError {
                setting: "advertise",
                reason: format!("needed when listening on the wildcard address {local_addr}"),
            }
            .into());
        }
        let incarnation = match config.incarnation {
            Some(i) => i,
            None => random_u64()?,
        };
        let identity = Identity { addr, incarnation };
        if let Some(tls) = &config.tls
            && !tls.is_client()
        {
            tls.check_names(addr.ip()).map_err(|e| ConfigError {
                setting: "tls",
                reason: e.to_string(),
            })?;
        }
        let hs_config = HandshakeConfig {
            cluster: config.cluster.clone(),
            identity,
            secret: config.secret.clone(),
            client: config.tls.as_ref().is_some_and(|t| t.is_client()),
        };
        hs_config.validate().map_err(|e| ConfigError {
            setting: "cluster",
            reason: e.to_string(),
        })?;
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        let (tx, rx) = mpsc::channel();
        let shared = Arc::new(Shared {
            commands: Mutex::new(tx),
            waker,
            wake_pending: AtomicBool::new(false),
            unprocessed: AtomicUsize::new(0),
            counters: Counters::default(),
            max_data: config.max_frame_bytes - 1,
            max_unprocessed: config.max_unprocessed_send_bytes,
        });
        let mut event_loop = EventLoop {
            poll,
            listener,
            encoder: FrameEncoder::new(config.max_frame_bytes),
            read_buf: vec![0; config.read_buffer_bytes],
            plain_buf: Vec::new(),
            next_housekeeping: Instant::now() + config.housekeeping_interval,
            config,
            hs_config,
            identity,
            handler,
            commands: rx,
            shared: shared.clone(),
            conns: BTreeMap::new(),
            peers: BTreeMap::new(),
            next_token: FIRST_CONNECTION,
            dirty: Vec::new(),
            read_again: Vec::new(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("kv-transport {addr}"))
            .spawn(move || event_loop.run())?;
        Ok(TransportHandle {
            sender: TransportSender { shared },
            thread: Some(thread),
            local_addr,
            identity,
        })
    }
}

fn random_u64() -> io::Result<u64> {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).map_err(|e| io::Error::other(format!("no randomness: {e}")))?;
    Ok(u64::from_le_bytes(b))
}

/// Where a connection is in its life.
enum Phase {
    Handshake(Box<Handshake>),
    /// Handshake done; this is the peer's one connection.
    Open {
        peer: Identity,
        decoder: FrameDecoder,
    },
}

struct Conn {
    stream: TcpStream,
    /// The TLS session when TLS is configured: every byte read goes through it, and
    /// `out` (plaintext) goes into it before the socket.
    tls: Option<Box<rustls::Connection>>,
    /// Nothing has been read yet (a plaintext side recognises a TLS peer by its
    /// first byte).
    first_read: bool,
    remote: SocketAddr,
    /// The peer address this side dialed; `None` for an accepted connection.
    dialed: Option<SocketAddr>,
    /// A dial whose TCP connect has not completed yet.
    connecting: bool,
    phase: Phase,
    /// Bytes to write, from `out_pos` on. Invariant: `out_pos <= out.len()`.
    out: Vec<u8>,
    out_pos: usize,
    created: Instant,
    last_rx: Instant,
    last_tx: Instant,
}

impl Conn {
    fn unsent(&self) -> usize {
        self.out.len() - self.out_pos
    }

    /// Whether there is anything to write: plaintext not yet handed to TLS, or
    /// ciphertext the session holds.
    fn has_output(&self) -> bool {
        self.unsent() > 0 || self.tls.as_ref().is_some_and(|s| s.wants_write())
    }

    fn peer(&self) -> Option<SocketAddr> {
        match &self.phase {
            Phase::Open { peer, .. } => Some(peer.addr),
            Phase::Handshake(hs) => hs.claimed_peer().map(|id| id.addr).or(self.dialed),
        }
    }
}

/// What the loop knows about one peer address.
struct Peer {
    /// Its open connection. Invariant: when set, `conns[t]` is `Phase::Open` for
    /// this peer.
    conn: Option<Token>,
    /// Our dial to it, while in progress.
    dialing: Option<Token>,
    /// The open connection's incarnation.
    incarnation: Option<u64>,
    /// Encoded frames waiting for a connection.
    pending: Vec<u8>,
    pending_frames: u64,
    /// When to dial next (backoff), if a dial is due.
    next_dial: Option<Instant>,
    backoff: Duration,
    /// Failed dials in a row.
    failures: u32,
}

struct EventLoop<H> {
    poll: Poll,
    listener: TcpListener,
    config: TransportConfig,
    hs_config: HandshakeConfig,
    identity: Identity,
    handler: H,
    commands: Receiver<Command>,
    shared: Arc<Shared>,
    encoder: FrameEncoder,
    /// The one read buffer, reused for every read.
    read_buf: Vec<u8>,
    /// The buffer TLS plaintext is read into, reused likewise.
    plain_buf: Vec<u8>,
    conns: BTreeMap<Token, Conn>,
    peers: BTreeMap<SocketAddr, Peer>,
    next_token: usize,
    /// Connections with output to write at the end of this iteration.
    dirty: Vec<Token>,
    /// Connections that may have more to read (their read turn ran out).
    read_again: Vec<Token>,
    next_housekeeping: Instant,
}

enum Flow {
    /// Every command was taken.
    Idle,
    /// The turn's budget ran out with commands left.
    More,
    Stop,
}

impl<H: FnMut(Event)> EventLoop<H> {
    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(256);
        let mut commands_left = false;
        loop {
            let now = Instant::now();
            let timeout = if self.read_again.is_empty() && !commands_left {
                self.next_housekeeping.saturating_duration_since(now)
            } else {
                Duration::ZERO
            };
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                // A signal (SIGSTOP/SIGCONT, a profiler) interrupted the wait.
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.close_all();
                    return Err(e);
                }
            }
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept(),
                    WAKER => {}
                    t => {
                        let readable = ev.is_readable() || ev.is_read_closed() || ev.is_error();
                        self.on_ready(t, readable, ev.is_writable() || ev.is_error());
                    }
                }
            }
            for t in std::mem::take(&mut self.read_again) {
                self.read(t);
            }
            match self.drain_commands() {
                Flow::Idle => commands_left = false,
                Flow::More => commands_left = true,
                Flow::Stop => {
                    self.flush_dirty();
                    self.close_all();
                    return Ok(());
                }
            }
            let now = Instant::now();
            if now >= self.next_housekeeping {
                self.housekeeping(now);
                self.next_housekeeping = now + self.config.housekeeping_interval;
            }
            self.flush_dirty();
        }
    }

    fn emit(&mut self, event: Event) {
        (self.handler)(event);
    }

    fn counters(&self) -> &Counters {
        &self.shared.counters
    }

    fn drain_commands(&mut self) -> Flow {
        // Cleared before draining: a send after this point wakes the loop again.
        self.shared.wake_pending.store(false, Ordering::Release);
        for _ in 0..SENDS_PER_TURN {
            match self.commands.try_recv() {
                Ok(Command::Send { peer, data }) => {
                    self.shared
                        .unprocessed
                        .fetch_sub(data.len() + SEND_OVERHEAD, Ordering::AcqRel);
                    self.send(peer, &data);
                }
                Ok(Command::Disconnect { peer }) => {
                    if let Some(t) = self.peers.get(&peer).and_then(|p| p.conn) {
                        self.close(t, None);
                    }
                }
                Ok(Command::Shutdown) => return Flow::Stop,
                Err(TryRecvError::Empty) => return Flow::Idle,
                // Unreachable while `Shared` holds the sender; stop rather than spin.
                Err(TryRecvError::Disconnected) => return Flow::Stop,
            }
        }
        Flow::More
    }

    fn send(&mut self, addr: SocketAddr, data: &[u8]) {
        if addr == self.identity.addr {
            // To ourselves: no socket needed.
            Counters::add(&self.counters().frames_out, 1);
            Counters::add(&self.counters().frames_in, 1);
            self.emit(Event::Frame {
                peer: addr,
                data: data.to_vec(),
            });
            return;
        }
        let max_queued = self.config.max_queued_bytes_per_peer;
        let peer = self.peers.entry(addr).or_insert_with(|| Peer {
            conn: None,
            dialing: None,
            incarnation: None,
            pending: Vec::new(),
            pending_frames: 0,
            next_dial: None,
            backoff: self.config.reconnect_backoff_min,
            failures: 0,
        });
        let conn = peer
            .conn
            .and_then(|t| self.conns.get_mut(&t).map(|c| (t, c)));
        let queued = peer.pending.len() + conn.as_ref().map_or(0, |(_, c)| c.unsent());
        if queued + HEADER_LEN + 1 + data.len() > max_queued {
            Counters::add(&self.shared.counters.frames_dropped, 1);
            return;
        }
        let parts: [&[u8]; 2] = [&[KIND_DATA], data];
        match conn {
            Some((t, c)) => {
                // A connection with output already is in `dirty` or waiting to be
                // writable: one entry per connection, not per frame.
                let idle = c.unsent() == 0;
                if self.encoder.encode_parts(&parts, &mut c.out).is_ok() {
                    Counters::add(&self.shared.counters.frames_out, 1);
                    if idle {
                        self.dirty.push(t);
                    }
                }
            }
            None => {
                if self.encoder.encode_parts(&parts, &mut peer.pending).is_ok() {
                    peer.pending_frames += 1;
                }
                if peer.dialing.is_none() && peer.next_dial.is_none() {
                    self.dial(addr);
                }
            }
        }
    }

    fn new_token(&mut self) -> Token {
        let t = Token(self.next_token);
        self.next_token = self.next_token.wrapping_add(1).max(FIRST_CONNECTION);
        t
    }

    fn nonce() -> io::Result<[u8; NONCE_LEN]> {
        let mut n = [0u8; NONCE_LEN];
        getrandom::fill(&mut n).map_err(|e| io::Error::other(format!("no randomness: {e}")))?;
        Ok(n)
    }

    fn add_conn(
        &mut self,
        mut stream: TcpStream,
        remote: SocketAddr,
        dialed: Option<SocketAddr>,
    ) -> Result<Token, ConnectionError> {
        let role = if dialed.is_some() {
            Role::Dialer
        } else {
            Role::Acceptor
        };
        let mut hs = Handshake::new(&self.hs_config, role, dialed, Self::nonce()?)?;
        let tls = match (&self.config.tls, dialed) {
            (None, _) => None,
            (Some(c), Some(addr)) => Some(Box::new(c.dial(addr)?)),
            (Some(c), None) => Some(Box::new(c.accept()?)),
        };
        let t = self.new_token();
        self.poll
            .registry()
            .register(&mut stream, t, Interest::READABLE | Interest::WRITABLE)?;
        // Frames are small and latency matters: no Nagle delay.
        let _ = stream.set_nodelay(true);
        let mut out = Vec::new();
        hs.take_output(&mut out);
        let now = Instant::now();
        self.conns.insert(
            t,
            Conn {
                stream,
                tls,
                first_read: true,
                remote,
                dialed,
                connecting: dialed.is_some(),
                phase: Phase::Handshake(Box::new(hs)),
                out,
                out_pos: 0,
                created: now,
                last_rx: now,
                last_tx: now,
            },
        );
        Counters::add(&self.counters().open_connections, 1);
        if dialed.is_none() {
            self.dirty.push(t);
        }
        Ok(t)
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, remote)) => {
                    let handshaking = self
                        .conns
                        .values()
                        .filter(|c| matches!(c.phase, Phase::Handshake(_)))
                        .count();
                    if self.conns.len() >= self.config.max_connections
                        || handshaking >= self.config.max_handshaking
                    {
                        Counters::add(&self.counters().connections_refused, 1);
                        continue; // dropping the stream closes it
                    }
                    Counters::add(&self.counters().connections_accepted, 1);
                    if let Err(error) = self.add_conn(stream, remote, None) {
                        self.emit(Event::ConnectionError {
                            remote,
                            peer: None,
                            dialed: false,
                            error,
                        });
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                // Out of descriptors, or the connection died in the queue: try
                // again at the next readiness event.
                Err(_) => return,
            }
        }
    }

    fn dial(&mut self, addr: SocketAddr) {
        Counters::add(&self.counters().dials, 1);
        let result = TcpStream::connect(addr)
            .map_err(ConnectionError::from)
            .and_then(|s| self.add_conn(s, addr, Some(addr)));
        match result {
            Ok(t) => {
                if let Some(p) = self.peers.get_mut(&addr) {
                    p.dialing = Some(t);
                }
            }
            Err(error) => {
                self.emit(Event::ConnectionError {
                    remote: addr,
                    peer: Some(addr),
                    dialed: true,
                    error,
                });
                self.dial_failed(addr);
            }
        }
    }

    fn dial_failed(&mut self, addr: SocketAddr) {
        Counters::add(&self.counters().dial_failures, 1);
        let Some(p) = self.peers.get_mut(&addr) else {
            return;
        };
        p.dialing = None;
        p.failures += 1;
        if p.conn.is_some() {
            return;
        }
        if p.failures >= self.config.reconnect_attempts {
            Counters::add(&self.shared.counters.frames_dropped, p.pending_frames);
            self.peers.remove(&addr);
            return;
        }
        p.next_dial = Some(Instant::now() + p.backoff);
        p.backoff = (p.backoff * 2).min(self.config.reconnect_backoff_max);
    }

    fn on_ready(&mut self, t: Token, readable: bool, writable: bool) {
        let Some(c) = self.conns.get_mut(&t) else {
            return;
        };
        if c.connecting {
            // A dial's socket became ready: either connected or failed.
            match c.stream.take_error() {
                Ok(None) => {}
                Ok(Some(e)) | Err(e) => return self.close(t, Some(e.into())),
            }
            match c.stream.peer_addr() {
                Ok(_) => c.connecting = false,
                Err(e) if e.kind() == ErrorKind::NotConnected => return,
                Err(e) => return self.close(t, Some(e.into())),
            }
        }
        if writable && c.has_output() {
            self.flush(t);
        }
        if readable {
            self.read(t);
        }
    }

    fn read(&mut self, t: Token) {
        let mut buf = std::mem::take(&mut self.read_buf);
        let mut reads = 0;
        while let Some(c) = self.conns.get_mut(&t) {
            if reads == READS_PER_TURN {
                // It may have more: revisit it on the next iteration, without
                // waiting for another edge, after the others had their turn.
                if !self.read_again.contains(&t) {
                    self.read_again.push(t);
                }
                break;
            }
            match c.stream.read(&mut buf) {
                Ok(0) => {
                    self.on_eof(t);
                    break;
                }
                Ok(n) => {
                    reads += 1;
                    c.last_rx = Instant::now();
                    let first = std::mem::replace(&mut c.first_read, false);
                    let result = if c.tls.is_some() {
                        self.on_ciphertext(t, &buf[..n])
                    } else if first
                        && matches!(buf[0], TLS_HANDSHAKE_RECORD | TLS_ALERT_RECORD)
                        && matches!(c.phase, Phase::Handshake(_))
                    {
                        Err(TlsError::PeerSpeaksTls.into())
                    } else {
                        self.on_bytes(t, &buf[..n])
                    };
                    Counters::add(&self.shared.counters.bytes_in, n as u64);
                    if let Err(e) = result {
                        if let ConnectionError::Handshake(_) | ConnectionError::Tls(_) = e {
                            // Send what the handshake still had to say (our hello or
                            // proof, or the TLS alert that says why), so the peer
                            // learns why rather than from a bare close.
                            let _ = self.write_out(t);
                        }
                        self.close(t, Some(e));
                        break;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.close(t, Some(e.into()));
                    break;
                }
            }
        }
        self.read_buf = buf;
    }

    fn on_eof(&mut self, t: Token) {
        let Some(c) = self.conns.get_mut(&t) else {
            return;
        };
        let error = match &mut c.phase {
            Phase::Handshake(hs) => Some(ConnectionError::Handshake(hs.closed())),
            Phase::Open { decoder, .. } => decoder.finish().err().map(ConnectionError::Frame),
        };
        self.close(t, error);
    }

    /// Feeds one read's ciphertext to `t`'s TLS session and the plaintext it
    /// yields to [`Self::on_bytes`]; an error closes the connection. Nothing reaches
    /// the handshake before the TLS handshake (peer certificate included) passed.
    fn on_ciphertext(&mut self, t: Token, bytes: &[u8]) -> Result<(), ConnectionError> {
        let mut plain = std::mem::take(&mut self.plain_buf);
        if plain.len() < self.config.read_buffer_bytes {
            plain.resize(self.config.read_buffer_bytes, 0);
        }
        let result = self.decrypt(t, bytes, &mut plain);
        self.plain_buf = plain;
        result
    }

    fn decrypt(&mut self, t: Token, bytes: &[u8], plain: &mut [u8]) -> Result<(), ConnectionError> {
        let mut input = bytes;
        while !input.is_empty() {
            let Some(c) = self.conns.get_mut(&t) else {
                return Ok(());
            };
            let Some(session) = c.tls.as_mut() else {
                return Ok(());
            };
            match session.read_tls(&mut input) {
                Ok(0) => return Err(TlsError::Protocol("the session took no bytes".into()).into()),
                Ok(_) => {}
                Err(e) => return Err(TlsError::Protocol(e.to_string()).into()),
            }
            let handshaking = session.is_handshaking();
            if let Err(e) = session.process_new_packets() {
                return Err(TlsError::from_rustls(&e, c.dialed, handshaking).into());
            }
            if c.has_output() {
                self.dirty.push(t);
            }
            loop {
                let Some(session) = self.conns.get_mut(&t).and_then(|c| c.tls.as_mut()) else {
                    return Ok(());
                };
                match session.reader().read(plain) {
                    // The peer closed the session (close_notify).
                    Ok(0) => {
                        self.on_eof(t);
                        return Ok(());
                    }
                    Ok(n) => self.on_bytes(t, &plain[..n])?,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => return Err(TlsError::Protocol(e.to_string()).into()),
                }
            }
        }
        Ok(())
    }

    /// Feeds one read's bytes to the connection `t`; an error closes it.
    fn on_bytes(&mut self, t: Token, bytes: &[u8]) -> Result<(), ConnectionError> {
        let mut input = bytes;
        loop {
            let Some(c) = self.conns.get_mut(&t) else {
                return Ok(());
            };
            match &mut c.phase {
                Phase::Handshake(hs) => {
                    let progress = hs.receive(&mut input);
                    hs.take_output(&mut c.out);
                    if c.has_output() {
                        self.dirty.push(t);
                    }
                    let open = match progress? {
                        Progress::Pending => return Ok(()),
                        Progress::Decide(info) => self.decide(t, info)?,
                        Progress::Done(info) => {
                            self.adopt(t, info);
                            true
                        }
                    };
                    if !open {
                        return Ok(());
                    }
                }
                Phase::Open { peer, decoder } => {
                    let peer = peer.addr;
                    let counters = &self.shared.counters;
                    while let Some(payload) = decoder.decode(&mut input)? {
                        match payload.split_first() {
                            Some((&KIND_DATA, data)) => {
                                Counters::add(&counters.frames_in, 1);
                                (self.handler)(Event::Frame {
                                    peer,
                                    data: data.to_vec(),
                                });
                            }
                            Some((&KIND_KEEPALIVE, [])) => {}
                            Some((&k, _)) => return Err(ConnectionError::UnknownKind(Some(k))),
                            None => return Err(ConnectionError::UnknownKind(None)),
                        }
                    }
                    return Ok(());
                }
            }
        }
    }

    /// As the acceptor of `t`, whose dialer passed every check: welcomes it, or
    /// turns it down when the connection to keep is another one. Returns whether
    /// `t` is still open.
    ///
    /// When both nodes dial each other at once, each is the acceptor of the
    /// other's dial, and both keep the connection dialed by the lower identity: the
    /// lower one refuses the higher one's dial while its own dial is in progress or
    /// open; the higher one welcomes the lower one's dial. A dialer uses a
    /// connection only once welcomed, so no side ever sends on a connection the
    /// other side is dropping.
    fn decide(&mut self, t: Token, info: PeerInfo) -> Result<bool, ConnectionError> {
        let id = info.identity;
        if let Some(c) = self.conns.get(&t)
            && let Some(session) = &c.tls
        {
            // TLS verified the certificate, if any, against the CA; whether it may
            // claim this identity is the handshake's question (see `tls`).
            let cert = session.peer_certificates().and_then(|chain| chain.first());
            tls::check_peer_identity(id.addr, info.client, c.remote, cert)?;
        }
        let ours_wins = self.identity.addr < id.addr
            && self.peers.get(&id.addr).is_some_and(|p| match p.conn {
                Some(e) => {
                    p.incarnation == Some(id.incarnation)
                        && self.conns.get(&e).is_some_and(|c| c.dialed.is_some())
                }
                None => p.dialing.is_some(),
            });
        let Some(c) = self.conns.get_mut(&t) else {
            return Ok(false);
        };
        let Phase::Handshake(hs) = &mut c.phase else {
            return Ok(true);
        };
        if ours_wins {
            hs.refuse_duplicate()?;
            hs.take_output(&mut c.out);
            self.flush(t);
            self.close(t, None);
            return Ok(false);
        }
        let info = hs.welcome()?;
        hs.take_output(&mut c.out);
        self.adopt(t, info);
        Ok(true)
    }

    /// Makes `t` the peer's one connection, replacing any other (a connection to
    /// an older incarnation, one the peer redialed, or one that lost a
    /// simultaneous dial), and hands it the frames that waited for it.
    fn adopt(&mut self, t: Token, info: PeerInfo) {
        let id = info.identity;
        let backoff_min = self.config.reconnect_backoff_min;
        let peer = self.peers.entry(id.addr).or_insert_with(|| Peer {
            conn: None,
            dialing: None,
            incarnation: None,
            pending: Vec::new(),
            pending_frames: 0,
            next_dial: None,
            backoff: backoff_min,
            failures: 0,
        });
        if peer.dialing == Some(t) {
            peer.dialing = None;
        }
        let replaced = peer.conn.filter(|&e| e != t);
        let announce_loss = replaced.is_some() && peer.incarnation != Some(id.incarnation);
        let announce_new = replaced.is_none() || announce_loss;
        peer.conn = Some(t);
        peer.incarnation = Some(id.incarnation);
        peer.failures = 0;
        peer.backoff = backoff_min;
        peer.next_dial = None;
        let pending = std::mem::take(&mut peer.pending);
        let pending_frames = std::mem::take(&mut peer.pending_frames);
        if let Some(old) = replaced {
            // Dropped without `close`, so the peer is not reported lost (unless it
            // is a new incarnation, announced below).
            self.drop_conn(old);
        }
        if let Some(c) = self.conns.get_mut(&t) {
            c.phase = Phase::Open {
                peer: id,
                decoder: FrameDecoder::new(self.config.max_frame_bytes),
            };
            c.out.extend_from_slice(&pending);
            if c.has_output() {
                self.dirty.push(t);
            }
        }
        Counters::add(&self.shared.counters.frames_out, pending_frames);
        if announce_loss {
            self.emit(Event::Disconnected { peer: id.addr });
        }
        if announce_new {
            self.emit(Event::Connected {
                peer: id.addr,
                incarnation: id.incarnation,
            });
        }
    }

    /// Deregisters and drops a connection without touching its peer's state.
    fn drop_conn(&mut self, t: Token) -> Option<Conn> {
        let mut c = self.conns.remove(&t)?;
        let _ = self.poll.registry().deregister(&mut c.stream);
        self.shared
            .counters
            .open_connections
            .fetch_sub(1, Ordering::Relaxed);
        Some(c)
    }

    /// Closes `t`. An `error` is counted and reported; `None` is an orderly close.
    fn close(&mut self, t: Token, mut error: Option<ConnectionError>) {
        let Some(c) = self.drop_conn(t) else {
            return;
        };
        // Refused as a duplicate: the peer keeps (or is making) another connection.
        let duplicate = matches!(
            error,
            Some(ConnectionError::Handshake(HandshakeError::Duplicate))
        );
        if duplicate {
            error = None;
        }
        let peer_addr = c.peer();
        if let Some(e) = &error {
            let counters = &self.shared.counters;
            match e {
                ConnectionError::Handshake(h) => {
                    Counters::add(&counters.handshake_failures, 1);
                    if h.is_auth_failure() {
                        Counters::add(&counters.auth_failures, 1);
                    }
                }
                ConnectionError::Tls(e) => {
                    Counters::add(&counters.tls_failures, 1);
                    Counters::add(&counters.handshake_failures, 1);
                    if e.is_auth_failure() {
                        Counters::add(&counters.auth_failures, 1);
                    }
                }
                ConnectionError::Frame(_) | ConnectionError::UnknownKind(_) => {
                    Counters::add(&counters.bad_frames, 1)
                }
                _ => {}
            }
            self.emit(Event::ConnectionError {
                remote: c.remote,
                peer: peer_addr,
                dialed: c.dialed.is_some(),
                error: e.clone(),
            });
        }
        match c.phase {
            Phase::Open { peer, .. } => {
                let Some(p) = self.peers.get_mut(&peer.addr) else {
                    return;
                };
                if p.conn != Some(t) {
                    return;
                }
                p.conn = None;
                p.incarnation = None;
                // Reconnect to peers we dialed, and to any with frames waiting.
                let redial = c.dialed.is_some() || !p.pending.is_empty();
                if redial && p.dialing.is_none() {
                    p.failures = 0;
                    p.backoff = self.config.reconnect_backoff_min;
                    p.next_dial = Some(Instant::now() + p.backoff);
                } else if p.dialing.is_none() && p.pending.is_empty() {
                    self.peers.remove(&peer.addr);
                }
                self.emit(Event::Disconnected { peer: peer.addr });
            }
            Phase::Handshake(_) => {
                let Some(addr) = c.dialed else {
                    return;
                };
                let Some(p) = self.peers.get_mut(&addr) else {
                    return;
                };
                if p.dialing != Some(t) {
                    return;
                }
                if duplicate {
                    // The peer's own dial will arrive; dial again only if it has
                    // not after a backoff.
                    p.dialing = None;
                    if p.conn.is_none() {
                        p.next_dial = Some(Instant::now() + p.backoff);
                        p.backoff = (p.backoff * 2).min(self.config.reconnect_backoff_max);
                    }
                } else {
                    self.dial_failed(addr);
                }
            }
        }
    }

    /// Writes as much of `t`'s output as the socket takes: one system call for every
    /// frame queued since the last write. A write error closes the connection.
    fn flush(&mut self, t: Token) {
        if let Err(e) = self.write_out(t) {
            self.close(t, Some(e.into()));
        }
    }

    fn write_out(&mut self, t: Token) -> io::Result<()> {
        let Some(c) = self.conns.get_mut(&t) else {
            return Ok(());
        };
        if c.connecting {
            return Ok(());
        }
        let counters = &self.shared.counters;
        if let Some(session) = c.tls.as_mut() {
            return write_tls(
                &mut c.stream,
                session,
                &mut c.out,
                &mut c.out_pos,
                &mut c.last_tx,
                counters,
            );
        }
        loop {
            if c.out_pos == c.out.len() {
                c.out.clear();
                c.out_pos = 0;
                if c.out.capacity() > RETAINED_OUTPUT {
                    c.out.shrink_to(RETAINED_OUTPUT);
                }
                break Ok(());
            }
            match c.stream.write(&c.out[c.out_pos..]) {
                Ok(0) => break Err(io::Error::from(ErrorKind::WriteZero)),
                Ok(n) => {
                    c.out_pos += n;
                    c.last_tx = Instant::now();
                    Counters::add(&counters.write_calls, 1);
                    Counters::add(&counters.bytes_out, n as u64);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    // The rest goes when the socket is writable again; drop what
                    // was sent so a slow peer does not keep its prefix around.
                    if c.out_pos > c.out.len() / 2 {
                        c.out.drain(..c.out_pos);
                        c.out_pos = 0;
                    }
                    break Ok(());
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => break Err(e),
            }
        }
    }

    fn flush_dirty(&mut self) {
        let mut dirty = std::mem::take(&mut self.dirty);
        dirty.sort_unstable();
        dirty.dedup();
        for &t in &dirty {
            self.flush(t);
        }
        dirty.clear();
        self.dirty = dirty;
    }

    fn housekeeping(&mut self, now: Instant) {
        let cfg = &self.config;
        let mut expired = Vec::new();
        for (&t, c) in &mut self.conns {
            match c.phase {
                Phase::Handshake(_) => {
                    if now.duration_since(c.created) > cfg.handshake_timeout {
                        expired.push((t, ConnectionError::HandshakeTimeout));
                    }
                }
                Phase::Open { .. } => {
                    if now.duration_since(c.last_rx) > cfg.idle_timeout {
                        expired.push((t, ConnectionError::IdleTimeout));
                    } else if c.unsent() == 0
                        && now.duration_since(c.last_tx) >= cfg.keepalive_interval
                        && self.encoder.encode(&[KIND_KEEPALIVE], &mut c.out).is_ok()
                    {
                        self.dirty.push(t);
                    }
                }
            }
        }
        for (t, e) in expired {
            self.close(t, Some(e));
        }
        let due: Vec<SocketAddr> = self
            .peers
            .iter()
            .filter(|(_, p)| {
                p.conn.is_none() && p.dialing.is_none() && p.next_dial.is_some_and(|d| d <= now)
            })
            .map(|(a, _)| *a)
            .collect();
        for addr in due {
            if let Some(p) = self.peers.get_mut(&addr) {
                p.next_dial = None;
            }
            self.dial(addr);
        }
    }

    fn close_all(&mut self) {
        let tokens: Vec<Token> = self.conns.keys().copied().collect();
        for t in tokens {
            self.drop_conn(t);
        }
        self.peers.clear();
    }
}

/// [`EventLoop::write_out`] through TLS: the plaintext batch goes into the session,
/// which encrypts it into records, and `write_tls` writes them (vectored) while the
/// socket takes them. What the socket does not take stays in the session, and what
/// the session does not take (its buffer limit) stays in `out`.
fn write_tls(
    stream: &mut TcpStream,
    session: &mut rustls::Connection,
    out: &mut Vec<u8>,
    out_pos: &mut usize,
    last_tx: &mut Instant,
    counters: &Counters,
) -> io::Result<()> {
    loop {
        let mut moved = 0;
        if *out_pos < out.len() {
            moved = session.writer().write(&out[*out_pos..])?;
            *out_pos += moved;
            if *out_pos == out.len() {
                out.clear();
                *out_pos = 0;
                if out.capacity() > RETAINED_OUTPUT {
                    out.shrink_to(RETAINED_OUTPUT);
                }
            }
        }
        if !session.wants_write() {
            if moved == 0 {
                // Everything is written, or the session holds plaintext until its
                // handshake completes; reading will make it want to write again.
                return Ok(());
            }
            continue;
        }
        match session.write_tls(stream) {
            Ok(0) => return Err(io::Error::from(ErrorKind::WriteZero)),
            Ok(n) => {
                *last_tx = Instant::now();
                Counters::add(&counters.write_calls, 1);
                Counters::add(&counters.bytes_out, n as u64);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}
