//! The connection handshake, sans-IO: versioned hellos, then (with a cluster secret)
//! an HMAC-SHA256 challenge–response.
//!
//! # Messages
//! Each message travels in one frame (see [`crate::frame`]) of at most
//! [`MAX_HANDSHAKE_FRAME`] bytes; its first byte says what it is.
//! ```text
//! Hello (1): kind u8 = 1 | magic "KVTP" | version u16 BE
//!            | flags u8 (bit 0: secret set, bit 1: a client, with TLS only)
//!            | cluster: len u8, UTF-8 | identity: len u8, UTF-8 "ip:port"
//!            | incarnation u64 BE | nonce [u8; 32]
//! Proof (2): kind u8 = 2 | mac [u8; 32]
//! Welcome (3): kind u8 = 3               acceptor to dialer: use this connection
//! Duplicate (4): kind u8 = 4             acceptor to dialer: I keep another one
//! ```
//! Both sides send their hello at once. Without a secret, a side has verified the
//! peer when the other's hello passed its checks. With one, each side then sends
//! `HMAC-SHA256(secret, transcript(role))` and has verified the peer when the other's
//! proof verifies (compared in constant time). The acceptor then decides whether
//! the connection is wanted ([`Progress::Decide`]): it answers `Welcome` and is
//! done, or `Duplicate` when it keeps another connection to that peer. The dialer
//! is done only on `Welcome`, so neither side uses a connection the other one is
//! about to drop. The transcript holds both hellos' fields
//! (dialer's first) and the prover's role, so a proof is bound to this connection's
//! two fresh nonces (a recorded one cannot be replayed) and to one direction (a proof
//! cannot be reflected back at its sender).

use std::net::SocketAddr;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use thiserror::Error;

use crate::frame::{FrameDecoder, FrameEncoder, FrameError};

/// The four bytes every hello starts with.
pub const MAGIC: [u8; 4] = *b"KVTP";
/// The protocol version this crate speaks; a peer with another one is refused.
pub const PROTOCOL_VERSION: u16 = 1;
/// Longest cluster name, in bytes.
pub const MAX_CLUSTER_NAME: usize = 64;
/// Longest identity (the `ip:port` text), in bytes.
pub const MAX_IDENTITY: usize = 64;
/// Bytes of a nonce.
pub const NONCE_LEN: usize = 32;
/// Bytes of a proof's MAC.
pub const MAC_LEN: usize = 32;
/// Largest frame the handshake reads; anything longer is refused at its header.
pub const MAX_HANDSHAKE_FRAME: usize = 256;

const KIND_HELLO: u8 = 1;
const KIND_PROOF: u8 = 2;
const KIND_WELCOME: u8 = 3;
const KIND_DUPLICATE: u8 = 4;
const FLAG_SECRET: u8 = 1;
/// Set by a client over TLS: it may come without a certificate, and is then known
/// by the address it connects from (see [`crate::tls`]).
const FLAG_CLIENT: u8 = 2;
/// Domain separation: these MACs mean nothing anywhere else.
const MAC_LABEL: &[u8] = b"kv-transport handshake v1";

type HmacSha256 = Hmac<Sha256>;

/// Which end of the connection this side is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// This side opened the connection.
    Dialer,
    /// This side accepted it.
    Acceptor,
}

impl Role {
    fn other(self) -> Role {
        match self {
            Role::Dialer => Role::Acceptor,
            Role::Acceptor => Role::Dialer,
        }
    }

    fn byte(self) -> u8 {
        match self {
            Role::Dialer => b'D',
            Role::Acceptor => b'A',
        }
    }
}

/// Who a node is: the address it listens on (as its peers know it) and the
/// incarnation of the process there (a restarted process has a new one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Identity {
    /// The address peers reach this node at.
    pub addr: SocketAddr,
    /// Distinguishes successive processes at the same address.
    pub incarnation: u64,
}

/// What a side needs to know to run a handshake.
#[derive(Clone)]
pub struct HandshakeConfig {
    /// The cluster this node belongs to; peers of another cluster are refused.
    pub cluster: String,
    /// This node's identity.
    pub identity: Identity,
    /// The shared cluster secret; when set, peers must prove they know it.
    pub secret: Option<Vec<u8>>,
    /// Whether this side is a client (a hello flag). Only a transport with TLS sets
    /// it, so peers without TLS never see the flag.
    pub client: bool,
}

impl std::fmt::Debug for HandshakeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandshakeConfig")
            .field("cluster", &self.cluster)
            .field("identity", &self.identity)
            .field("secret", &self.secret.as_ref().map(|_| "<set>"))
            .field("client", &self.client)
            .finish()
    }
}

impl HandshakeConfig {
    /// Checks the bounds the wire format imposes.
    pub fn validate(&self) -> Result<(), HandshakeError> {
        if self.cluster.len() > MAX_CLUSTER_NAME {
            return Err(HandshakeError::FieldTooLong {
                field: "cluster",
                len: self.cluster.len(),
                max: MAX_CLUSTER_NAME,
            });
        }
        let id = self.identity.addr.to_string();
        if id.len() > MAX_IDENTITY {
            return Err(HandshakeError::FieldTooLong {
                field: "identity",
                len: id.len(),
                max: MAX_IDENTITY,
            });
        }
        if matches!(&self.secret, Some(s) if s.is_empty()) {
            return Err(HandshakeError::EmptySecret);
        }
        Ok(())
    }
}

/// Why a handshake failed. The connection is closed on any of these.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HandshakeError {
    /// The bytes were not a frame within the handshake's limit.
    #[error("bad handshake frame: {0}")]
    Frame(#[from] FrameError),
    /// The first message did not start with the magic number.
    #[error("not a kv-transport peer (bad magic number)")]
    BadMagic,
    /// The peer speaks another protocol version.
    #[error("protocol version {theirs} is not ours ({ours})")]
    VersionMismatch {
        /// The peer's version.
        theirs: u16,
        /// Ours.
        ours: u16,
    },
    /// The peer belongs to another cluster.
    #[error("peer is in cluster {theirs:?}, not {ours:?}")]
    ClusterMismatch {
        /// The peer's cluster name.
        theirs: String,
        /// Ours.
        ours: String,
    },
    /// Exactly one side has a cluster secret configured.
    #[error("cluster secret configured on {} side only", if *.ours { "our" } else { "the peer's" })]
    SecretMismatch {
        /// Whether the secret is ours (else the peer's).
        ours: bool,
    },
    /// The peer's proof did not verify: it does not know the cluster secret.
    #[error("peer failed to prove it knows the cluster secret")]
    AuthenticationFailed,
    /// A message was malformed (wrong kind, bad length, bad text).
    #[error("malformed handshake message: {0}")]
    Malformed(&'static str),
    /// A field exceeded its bound.
    #[error("{field} is {len} bytes, more than {max}")]
    FieldTooLong {
        /// Which field.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// The peer claims to be this very node.
    #[error("peer claims our own identity {0}")]
    SelfConnection(SocketAddr),
    /// We dialed one address and another node answered.
    #[error("dialed {expected} but {actual} answered")]
    UnexpectedPeer {
        /// The address dialed.
        expected: SocketAddr,
        /// The identity in the answer.
        actual: SocketAddr,
    },
    /// A secret was configured but is empty.
    #[error("the cluster secret is empty")]
    EmptySecret,
    /// The stream ended before the handshake did.
    #[error("connection closed during the handshake")]
    Closed,
    /// The acceptor keeps another connection with this dialer (both dialed at
    /// once); not a failure, the other connection carries the traffic.
    #[error("peer keeps another connection to us")]
    Duplicate,
    /// A method was called in a state where it means nothing.
    #[error("handshake used out of order")]
    OutOfOrder,
}

impl HandshakeError {
    /// Whether this failure is about authentication (secret) rather than about
    /// compatibility or malformed input.
    pub fn is_auth_failure(&self) -> bool {
        matches!(
            self,
            HandshakeError::AuthenticationFailed | HandshakeError::SecretMismatch { .. }
        )
    }
}

/// A parsed hello.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Hello {
    version: u16,
    secret: bool,
    client: bool,
    cluster: String,
    identity: Identity,
    nonce: [u8; NONCE_LEN],
}

impl Hello {
    fn encode(&self) -> Vec<u8> {
        let id = self.identity.addr.to_string();
        let mut v = Vec::with_capacity(64 + self.cluster.len() + id.len());
        v.push(KIND_HELLO);
        v.extend_from_slice(&MAGIC);
        v.extend_from_slice(&self.version.to_be_bytes());
        let mut flags = 0;
        if self.secret {
            flags |= FLAG_SECRET;
        }
        if self.client {
            flags |= FLAG_CLIENT;
        }
        v.push(flags);
        // Lengths fit in a byte: `HandshakeConfig::validate` bounds them.
        v.push(self.cluster.len() as u8);
        v.extend_from_slice(self.cluster.as_bytes());
        v.push(id.len() as u8);
        v.extend_from_slice(id.as_bytes());
        v.extend_from_slice(&self.identity.incarnation.to_be_bytes());
        v.extend_from_slice(&self.nonce);
        v
    }

    /// Parses a hello frame's payload. The magic is checked first, so a stranger
    /// speaking another protocol gets `BadMagic`, and the version before the rest,
    /// so a later version may change everything after it.
    fn decode(payload: &[u8]) -> Result<Hello, HandshakeError> {
        let mut r = Reader(payload);
        if r.u8()? != KIND_HELLO {
            return Err(HandshakeError::Malformed("expected a hello"));
        }
        if r.take(MAGIC.len())? != MAGIC {
            return Err(HandshakeError::BadMagic);
        }
        let version = u16::from_be_bytes(r.array()?);
        if version != PROTOCOL_VERSION {
            return Err(HandshakeError::VersionMismatch {
                theirs: version,
                ours: PROTOCOL_VERSION,
            });
        }
        let flags = r.u8()?;
        if flags & !(FLAG_SECRET | FLAG_CLIENT) != 0 {
            return Err(HandshakeError::Malformed("unknown flags"));
        }
        let cluster = r.text(MAX_CLUSTER_NAME, "cluster")?;
        let id = r.text(MAX_IDENTITY, "identity")?;
        let addr: SocketAddr = id
            .parse()
            .map_err(|_| HandshakeError::Malformed("identity is not ip:port"))?;
        let incarnation = u64::from_be_bytes(r.array()?);
        let nonce = r.array()?;
        if !r.0.is_empty() {
            return Err(HandshakeError::Malformed("trailing bytes after hello"));
        }
        Ok(Hello {
            version,
            secret: flags & FLAG_SECRET != 0,
            client: flags & FLAG_CLIENT != 0,
            cluster,
            identity: Identity { addr, incarnation },
            nonce,
        })
    }

    /// The fields a proof covers, in a self-delimiting encoding.
    fn transcript_into(&self, mac: &mut HmacSha256) {
        let enc = self.encode();
        mac.update(&(enc.len() as u32).to_be_bytes());
        mac.update(&enc);
    }
}

/// A cursor over a message that fails instead of panicking when it runs short.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], HandshakeError> {
        if self.0.len() < n {
            return Err(HandshakeError::Malformed("message too short"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, HandshakeError> {
        Ok(self.take(1)?[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], HandshakeError> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn text(&mut self, max: usize, field: &'static str) -> Result<String, HandshakeError> {
        let len = self.u8()? as usize;
        if len > max {
            return Err(HandshakeError::FieldTooLong { field, len, max });
        }
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| HandshakeError::Malformed("text is not UTF-8"))
    }
}

/// What the handshake knows about the peer once it is done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer's identity as its hello gave it (authenticated when a secret is set).
    pub identity: Identity,
    /// Whether the peer proved it knows the cluster secret.
    pub authenticated: bool,
    /// Whether the peer's hello says it is a client.
    pub client: bool,
}

/// Where a handshake stands after some input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// More bytes are needed from the peer.
    Pending,
    /// Acceptor only: the peer passed every check. Call [`Handshake::welcome`] to
    /// take the connection or [`Handshake::refuse_duplicate`] to turn it down.
    Decide(PeerInfo),
    /// Dialer only: the acceptor welcomed us. Bytes after its last handshake
    /// message were left in the input: they are the connection's first frames.
    Done(PeerInfo),
}

#[derive(Debug, Clone)]
enum Step {
    AwaitHello,
    AwaitProof {
        peer: Hello,
    },
    /// Dialer: the acceptor is verified; its verdict is next.
    AwaitVerdict(PeerInfo),
    /// Acceptor: the dialer is verified; the caller decides.
    Verified(PeerInfo),
    Done,
    Failed(HandshakeError),
}

/// One side of one connection's handshake.
///
/// Drive it with the bytes that arrive ([`Handshake::receive`]) and send what
/// [`Handshake::take_output`] gives. The nonce is an argument so that tests are
/// deterministic; a real connection passes a fresh random one.
#[derive(Debug)]
pub struct Handshake {
    role: Role,
    secret: Option<Vec<u8>>,
    local: Hello,
    expected_peer: Option<SocketAddr>,
    decoder: FrameDecoder,
    encoder: FrameEncoder,
    step: Step,
    /// The identity the peer's hello claimed, once one parsed (proven only when
    /// the handshake succeeds).
    claimed: Option<Identity>,
    /// Bytes to send, in order. Invariant: holds whole frames only.
    output: Vec<u8>,
}

impl Handshake {
    /// Starts a handshake; its hello is ready in [`Handshake::take_output`] at once.
    /// A dialer passes the address it dialed as `expected_peer`; the answer must
    /// carry that identity.
    pub fn new(
        config: &HandshakeConfig,
        role: Role,
        expected_peer: Option<SocketAddr>,
        nonce: [u8; NONCE_LEN],
    ) -> Result<Handshake, HandshakeError> {
        config.validate()?;
        let local = Hello {
            version: PROTOCOL_VERSION,
            secret: config.secret.is_some(),
            client: config.client,
            cluster: config.cluster.clone(),
            identity: config.identity,
            nonce,
        };
        let encoder = FrameEncoder::new(MAX_HANDSHAKE_FRAME);
        let mut output = Vec::new();
        encoder.encode(&local.encode(), &mut output)?;
        Ok(Handshake {
            role,
            secret: config.secret.clone(),
            local,
            expected_peer,
            decoder: FrameDecoder::new(MAX_HANDSHAKE_FRAME),
            encoder,
            step: Step::AwaitHello,
            claimed: None,
            output,
        })
    }

    /// This side's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The identity the peer's hello claimed, if a hello parsed; for naming the
    /// peer in a log line when the handshake fails after it. Not proven.
    pub fn claimed_peer(&self) -> Option<Identity> {
        self.claimed
    }

    /// Moves the bytes to send to the peer onto the end of `out`.
    pub fn take_output(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.output);
    }

    /// Consumes handshake bytes from the front of `input`. On `Done`, whatever is
    /// left in `input` belongs to the connection after the handshake. After an error
    /// the handshake is spent and returns the same error again.
    pub fn receive(&mut self, input: &mut &[u8]) -> Result<Progress, HandshakeError> {
        match &self.step {
            Step::Failed(e) => return Err(e.clone()),
            Step::Done | Step::Verified(_) => return Err(HandshakeError::OutOfOrder),
            _ => {}
        }
        match self.advance(input) {
            Ok(p) => Ok(p),
            Err(e) => {
                self.step = Step::Failed(e.clone());
                Err(e)
            }
        }
    }

    /// Acceptor: takes the connection the last [`Progress::Decide`] was about; the
    /// welcome is in the output, and the handshake is done.
    pub fn welcome(&mut self) -> Result<PeerInfo, HandshakeError> {
        let Step::Verified(info) = std::mem::replace(&mut self.step, Step::Done) else {
            self.step = Step::Failed(HandshakeError::OutOfOrder);
            return Err(HandshakeError::OutOfOrder);
        };
        self.encoder.encode(&[KIND_WELCOME], &mut self.output)?;
        Ok(info)
    }

    /// Acceptor: turns the connection down because another one with the same peer
    /// is kept; the answer is in the output, and the connection should be closed
    /// once it is sent.
    pub fn refuse_duplicate(&mut self) -> Result<(), HandshakeError> {
        if !matches!(self.step, Step::Verified(_)) {
            self.step = Step::Failed(HandshakeError::OutOfOrder);
            return Err(HandshakeError::OutOfOrder);
        }
        self.step = Step::Failed(HandshakeError::Duplicate);
        self.encoder.encode(&[KIND_DUPLICATE], &mut self.output)?;
        Ok(())
    }

    /// The stream ended: an error unless the handshake had finished.
    pub fn closed(&mut self) -> HandshakeError {
        let e = match self.decoder.finish() {
            Err(e) => HandshakeError::Frame(e),
            Ok(()) => HandshakeError::Closed,
        };
        self.step = Step::Failed(e.clone());
        e
    }

    fn advance(&mut self, input: &mut &[u8]) -> Result<Progress, HandshakeError> {
        loop {
            let Some(payload) = self.decoder.decode(input)? else {
                return Ok(Progress::Pending);
            };
            match std::mem::replace(&mut self.step, Step::Done) {
                Step::AwaitHello => {
                    let peer = Hello::decode(payload)?;
                    self.claimed = Some(peer.identity);
                    self.check_hello(&peer)?;
                    if self.secret.is_none() {
                        let info = PeerInfo {
                            identity: peer.identity,
                            authenticated: false,
                            client: peer.client,
                        };
                        if let Some(p) = self.verified(info) {
                            return Ok(p);
                        }
                        continue;
                    }
                    let mac = proof_mac(&self.secret, self.role, self.role, &self.local, &peer)
                        .finalize()
                        .into_bytes();
                    let mut proof = [0u8; 1 + MAC_LEN];
                    proof[0] = KIND_PROOF;
                    proof[1..].copy_from_slice(&mac);
                    self.encoder.encode(&proof, &mut self.output)?;
                    self.step = Step::AwaitProof { peer };
                }
                Step::AwaitProof { peer } => {
                    let [kind, mac @ ..] = payload else {
                        return Err(HandshakeError::Malformed("empty message"));
                    };
                    if *kind != KIND_PROOF || mac.len() != MAC_LEN {
                        return Err(HandshakeError::Malformed("expected a proof"));
                    }
                    // `verify_slice` compares in constant time.
                    proof_mac(
                        &self.secret,
                        self.role,
                        self.role.other(),
                        &self.local,
                        &peer,
                    )
                    .verify_slice(mac)
                    .map_err(|_| HandshakeError::AuthenticationFailed)?;
                    let info = PeerInfo {
                        identity: peer.identity,
                        authenticated: true,
                        client: peer.client,
                    };
                    if let Some(p) = self.verified(info) {
                        return Ok(p);
                    }
                }
                Step::AwaitVerdict(info) => {
                    return match payload {
                        [KIND_WELCOME] => Ok(Progress::Done(info)),
                        [KIND_DUPLICATE] => Err(HandshakeError::Duplicate),
                        _ => Err(HandshakeError::Malformed("expected a verdict")),
                    };
                }
                Step::Verified(_) | Step::Done | Step::Failed(_) => {
                    return Err(HandshakeError::OutOfOrder);
                }
            }
        }
    }

    /// The peer passed every check: an acceptor hands the decision to its caller
    /// (returned), a dialer waits for the verdict (`None`: read on).
    fn verified(&mut self, info: PeerInfo) -> Option<Progress> {
        match self.role {
            Role::Acceptor => {
                self.step = Step::Verified(info.clone());
                Some(Progress::Decide(info))
            }
            Role::Dialer => {
                self.step = Step::AwaitVerdict(info);
                None
            }
        }
    }

    fn check_hello(&self, peer: &Hello) -> Result<(), HandshakeError> {
        if peer.cluster != self.local.cluster {
            return Err(HandshakeError::ClusterMismatch {
                theirs: peer.cluster.clone(),
                ours: self.local.cluster.clone(),
            });
        }
        if peer.secret != self.local.secret {
            return Err(HandshakeError::SecretMismatch {
                ours: self.local.secret,
            });
        }
        if peer.identity.addr == self.local.identity.addr {
            return Err(HandshakeError::SelfConnection(peer.identity.addr));
        }
        if let Some(expected) = self.expected_peer
            && peer.identity.addr != expected
        {
            return Err(HandshakeError::UnexpectedPeer {
                expected,
                actual: peer.identity.addr,
            });
        }
        Ok(())
    }
}

/// The MAC the side playing `prover` sends: over the label, the prover's role and
/// both hellos, the dialer's first. `role` is this side's role, `local` its hello.
fn proof_mac(
    secret: &Option<Vec<u8>>,
    role: Role,
    prover: Role,
    local: &Hello,
    peer: &Hello,
) -> HmacSha256 {
    // The key was checked non-empty; HMAC takes a key of any length.
    let key = secret.as_deref().unwrap_or_default();
    let mut mac = match HmacSha256::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    };
    mac.update(MAC_LABEL);
    mac.update(&[prover.byte()]);
    let (dialer, acceptor) = match role {
        Role::Dialer => (local, peer),
        Role::Acceptor => (peer, local),
    };
    dialer.transcript_into(&mut mac);
    acceptor.transcript_into(&mut mac);
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(port: u16, cluster: &str, secret: Option<&[u8]>) -> HandshakeConfig {
        HandshakeConfig {
            cluster: cluster.to_string(),
            identity: Identity {
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                incarnation: u64::from(port) * 1000,
            },
            secret: secret.map(<[u8]>::to_vec),
            client: false,
        }
    }

    /// Runs both sides against each other, with the bytes in flight split into
    /// `chunk`-sized pieces, until both are done or one fails.
    fn run(
        dialer: &HandshakeConfig,
        acceptor: &HandshakeConfig,
        chunk: usize,
    ) -> (
        Result<PeerInfo, HandshakeError>,
        Result<PeerInfo, HandshakeError>,
    ) {
        run_deciding(dialer, acceptor, chunk, false)
    }

    /// As `run`, the acceptor refusing the connection as a duplicate if `refuse`.
    fn run_deciding(
        dialer: &HandshakeConfig,
        acceptor: &HandshakeConfig,
        chunk: usize,
        refuse: bool,
    ) -> (
        Result<PeerInfo, HandshakeError>,
        Result<PeerInfo, HandshakeError>,
    ) {
        let mut d =
            Handshake::new(dialer, Role::Dialer, Some(acceptor.identity.addr), [1; 32]).unwrap();
        let mut a = Handshake::new(acceptor, Role::Acceptor, None, [2; 32]).unwrap();
        let mut d_res = None;
        let mut a_res = None;
        for _ in 0..10 {
            let (mut to_a, mut to_d) = (Vec::new(), Vec::new());
            d.take_output(&mut to_a);
            a.take_output(&mut to_d);
            for (hs, bytes, res) in [(&mut a, to_a, &mut a_res), (&mut d, to_d, &mut d_res)] {
                for c in bytes.chunks(chunk) {
                    if res.is_some() {
                        break;
                    }
                    let mut input = c;
                    match hs.receive(&mut input) {
                        Ok(Progress::Pending) => {}
                        Ok(Progress::Done(p)) => *res = Some(Ok(p)),
                        Ok(Progress::Decide(_)) if refuse => {
                            hs.refuse_duplicate().unwrap();
                            *res = Some(Err(HandshakeError::Duplicate));
                        }
                        Ok(Progress::Decide(_)) => *res = Some(hs.welcome()),
                        Err(e) => *res = Some(Err(e)),
                    }
                }
            }
            if d_res.is_some() && a_res.is_some() {
                break;
            }
        }
        (
            d_res.unwrap_or(Err(HandshakeError::Closed)),
            a_res.unwrap_or(Err(HandshakeError::Closed)),
        )
    }

    #[test]
    fn good_handshake_without_secret() {
        let (d, a) = (config(1, "c", None), config(2, "c", None));
        for chunk in [1, 3, 1000] {
            let (rd, ra) = run(&d, &a, chunk);
            assert_eq!(rd.unwrap().identity, a.identity);
            let ra = ra.unwrap();
            assert_eq!(ra.identity, d.identity);
            assert!(!ra.authenticated);
        }
    }

    #[test]
    fn the_client_flag_reaches_the_acceptor() {
        let mut d = config(1, "c", Some(b"sesame"));
        d.client = true;
        let a = config(2, "c", Some(b"sesame"));
        let (rd, ra) = run(&d, &a, 7);
        assert!(!rd.unwrap().client);
        let ra = ra.unwrap();
        assert!(ra.client && ra.authenticated);
    }

    #[test]
    fn good_handshake_with_secret() {
        let (d, a) = (
            config(1, "c", Some(b"sesame")),
            config(2, "c", Some(b"sesame")),
        );
        for chunk in [1, 7, 1000] {
            let (rd, ra) = run(&d, &a, chunk);
            assert!(rd.unwrap().authenticated);
            assert!(ra.unwrap().authenticated);
        }
    }

    #[test]
    fn a_duplicate_is_refused_and_the_dialer_is_told() {
        for secret in [None, Some(&b"k"[..])] {
            let (d, a) = (config(1, "c", secret), config(2, "c", secret));
            let (rd, ra) = run_deciding(&d, &a, 1000, true);
            assert_eq!(rd, Err(HandshakeError::Duplicate));
            assert_eq!(ra, Err(HandshakeError::Duplicate));
        }
    }

    #[test]
    fn verdicts_only_when_asked() {
        let mut hs = acceptor();
        assert_eq!(hs.welcome(), Err(HandshakeError::OutOfOrder));
        let mut hs = acceptor();
        assert_eq!(hs.refuse_duplicate(), Err(HandshakeError::OutOfOrder));
        // A dialer is sent a verdict before any hello.
        let mut hs = Handshake::new(&config(1, "c", None), Role::Dialer, None, [0; 32]).unwrap();
        assert!(matches!(
            feed(&mut hs, &[0, 0, 0, 1, KIND_WELCOME]),
            Err(HandshakeError::Malformed(_))
        ));
    }

    #[test]
    fn wrong_cluster_is_refused_by_both() {
        let (rd, ra) = run(&config(1, "a", None), &config(2, "b", None), 1000);
        assert!(matches!(rd, Err(HandshakeError::ClusterMismatch { .. })));
        assert!(matches!(ra, Err(HandshakeError::ClusterMismatch { .. })));
    }

    #[test]
    fn wrong_secret_is_refused_by_both() {
        let (rd, ra) = run(
            &config(1, "c", Some(b"one")),
            &config(2, "c", Some(b"two")),
            5,
        );
        assert_eq!(rd, Err(HandshakeError::AuthenticationFailed));
        assert_eq!(ra, Err(HandshakeError::AuthenticationFailed));
        assert!(HandshakeError::AuthenticationFailed.is_auth_failure());
    }

    #[test]
    fn a_secret_on_one_side_only_is_refused() {
        let (rd, ra) = run(&config(1, "c", Some(b"s")), &config(2, "c", None), 1000);
        assert_eq!(rd, Err(HandshakeError::SecretMismatch { ours: true }));
        assert_eq!(ra, Err(HandshakeError::SecretMismatch { ours: false }));
    }

    fn acceptor() -> Handshake {
        Handshake::new(&config(2, "c", None), Role::Acceptor, None, [2; 32]).unwrap()
    }

    fn hello_frame(mutate: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let cfg = config(1, "c", None);
        let mut payload = Hello {
            version: PROTOCOL_VERSION,
            secret: false,
            client: false,
            cluster: cfg.cluster.clone(),
            identity: cfg.identity,
            nonce: [9; 32],
        }
        .encode();
        mutate(&mut payload);
        let mut frame = Vec::new();
        FrameEncoder::new(1 << 20)
            .encode(&payload, &mut frame)
            .unwrap();
        frame
    }

    fn feed(hs: &mut Handshake, bytes: &[u8]) -> Result<Progress, HandshakeError> {
        let mut input = bytes;
        hs.receive(&mut input)
    }

    #[test]
    fn wrong_version_is_refused() {
        let f = hello_frame(|p| p[5..7].copy_from_slice(&2u16.to_be_bytes()));
        assert_eq!(
            feed(&mut acceptor(), &f),
            Err(HandshakeError::VersionMismatch { theirs: 2, ours: 1 })
        );
    }

    #[test]
    fn wrong_magic_is_refused() {
        let f = hello_frame(|p| p[1] = b'X');
        assert_eq!(feed(&mut acceptor(), &f), Err(HandshakeError::BadMagic));
    }

    #[test]
    fn garbage_is_refused() {
        // An HTTP request: its first four bytes read as a length far over the limit.
        let e = feed(&mut acceptor(), b"GET / HTTP/1.1\r\n\r\n").unwrap_err();
        assert!(matches!(
            e,
            HandshakeError::Frame(FrameError::TooLarge { .. })
        ));
        // A small frame of noise.
        let e = feed(&mut acceptor(), &[0, 0, 0, 3, 1, 2, 3]).unwrap_err();
        assert!(matches!(e, HandshakeError::Malformed(_)), "{e}");
        // Spent after an error.
        let mut hs = acceptor();
        let _ = feed(&mut hs, &[0, 0, 0, 1, 0]);
        assert!(feed(&mut hs, &hello_frame(|_| {})).is_err());
    }

    #[test]
    fn oversized_fields_and_bad_text_are_refused() {
        // Cluster name length byte over the limit (claims 100 bytes).
        let f = hello_frame(|p| {
            p[8] = 100;
            p.resize(p.len() + 100, b'x');
        });
        assert!(matches!(
            feed(&mut acceptor(), &f),
            Err(HandshakeError::FieldTooLong {
                field: "cluster",
                ..
            })
        ));
        // Identity that is not an address.
        let f = hello_frame(|p| {
            let at = 10; // kind, magic, version, flags, cluster len, "c"
            let len = p[at] as usize;
            p[at + 1..at + 1 + len].fill(b'z');
        });
        assert_eq!(
            feed(&mut acceptor(), &f),
            Err(HandshakeError::Malformed("identity is not ip:port"))
        );
        // Unknown flags, trailing bytes, truncation.
        let f = hello_frame(|p| p[7] = 0x80);
        assert_eq!(
            feed(&mut acceptor(), &f),
            Err(HandshakeError::Malformed("unknown flags"))
        );
        let f = hello_frame(|p| p.push(0));
        assert!(matches!(
            feed(&mut acceptor(), &f),
            Err(HandshakeError::Malformed(_))
        ));
        let f = hello_frame(|p| p.truncate(p.len() - 1));
        assert!(matches!(
            feed(&mut acceptor(), &f),
            Err(HandshakeError::Malformed(_))
        ));
    }

    #[test]
    fn self_connection_and_unexpected_peer_are_refused() {
        let cfg = config(1, "c", None);
        let mut hs = Handshake::new(&cfg, Role::Acceptor, None, [0; 32]).unwrap();
        assert!(matches!(
            feed(&mut hs, &hello_frame(|_| {})),
            Err(HandshakeError::SelfConnection(_))
        ));
        let mut hs = Handshake::new(
            &config(2, "c", None),
            Role::Dialer,
            Some(SocketAddr::from(([127, 0, 0, 1], 3))),
            [0; 32],
        )
        .unwrap();
        assert!(matches!(
            feed(&mut hs, &hello_frame(|_| {})),
            Err(HandshakeError::UnexpectedPeer { .. })
        ));
    }

    #[test]
    fn a_recorded_proof_does_not_verify_against_a_new_nonce() {
        let d = config(1, "c", Some(b"k"));
        let a = config(2, "c", Some(b"k"));
        // Record the dialer's messages of one handshake...
        let mut rec_d = Handshake::new(&d, Role::Dialer, None, [1; 32]).unwrap();
        let mut rec_a = Handshake::new(&a, Role::Acceptor, None, [2; 32]).unwrap();
        let (mut dialer_bytes, mut acc_bytes) = (Vec::new(), Vec::new());
        rec_d.take_output(&mut dialer_bytes);
        rec_a.take_output(&mut acc_bytes);
        feed(&mut rec_d, &acc_bytes).unwrap();
        rec_d.take_output(&mut dialer_bytes);
        // ...and replay them to an acceptor that chose another nonce.
        let mut victim = Handshake::new(&a, Role::Acceptor, None, [3; 32]).unwrap();
        assert_eq!(
            feed(&mut victim, &dialer_bytes),
            Err(HandshakeError::AuthenticationFailed)
        );
    }

    #[test]
    fn a_proof_cannot_be_reflected() {
        // An attacker without the secret dials, copies the acceptor's hello fields
        // into its own and sends back the acceptor's own proof.
        let a = config(2, "c", Some(b"k"));
        let mut victim = Handshake::new(&a, Role::Acceptor, None, [2; 32]).unwrap();
        let attacker_cfg = config(1, "c", Some(b"unknown"));
        let mut attacker = Handshake::new(&attacker_cfg, Role::Dialer, None, [2; 32]).unwrap();
        let mut hello = Vec::new();
        attacker.take_output(&mut hello);
        assert_eq!(feed(&mut victim, &hello), Ok(Progress::Pending));
        let mut out = Vec::new();
        victim.take_output(&mut out);
        // Skip the victim's hello frame; what follows is its proof.
        let mut rest: &[u8] = &out;
        let mut dec = FrameDecoder::new(MAX_HANDSHAKE_FRAME);
        dec.decode(&mut rest).unwrap();
        assert_eq!(
            feed(&mut victim, rest),
            Err(HandshakeError::AuthenticationFailed)
        );
    }

    #[test]
    fn bytes_after_the_handshake_are_left_in_the_input() {
        let (d, a) = (config(1, "c", None), config(2, "c", None));
        let mut dh = Handshake::new(&d, Role::Dialer, None, [1; 32]).unwrap();
        let mut ah = Handshake::new(&a, Role::Acceptor, None, [2; 32]).unwrap();
        let mut bytes = Vec::new();
        dh.take_output(&mut bytes);
        bytes.extend_from_slice(&[0, 0, 0, 1, 42]);
        let mut input: &[u8] = &bytes;
        assert!(matches!(ah.receive(&mut input), Ok(Progress::Decide(_))));
        assert_eq!(input, &[0, 0, 0, 1, 42]);
        ah.welcome().unwrap();
        // The dialer: the acceptor's hello and welcome, then a frame.
        let mut bytes = Vec::new();
        ah.take_output(&mut bytes);
        bytes.extend_from_slice(&[0, 0, 0, 1, 43]);
        let mut input: &[u8] = &bytes;
        assert!(matches!(dh.receive(&mut input), Ok(Progress::Done(_))));
        assert_eq!(input, &[0, 0, 0, 1, 43]);
        assert_eq!(dh.receive(&mut input), Err(HandshakeError::OutOfOrder));
    }

    #[test]
    fn eof_during_the_handshake_is_an_error() {
        let mut hs = acceptor();
        assert_eq!(hs.closed(), HandshakeError::Closed);
        let mut hs = acceptor();
        assert_eq!(feed(&mut hs, &[0, 0]), Ok(Progress::Pending));
        assert!(matches!(
            hs.closed(),
            HandshakeError::Frame(FrameError::Truncated { .. })
        ));
    }

    #[test]
    fn config_bounds_are_checked() {
        let mut c = config(1, &"x".repeat(65), None);
        assert!(matches!(
            c.validate(),
            Err(HandshakeError::FieldTooLong {
                field: "cluster",
                ..
            })
        ));
        c.cluster = "ok".into();
        c.secret = Some(vec![]);
        assert_eq!(c.validate(), Err(HandshakeError::EmptySecret));
        assert!(Handshake::new(&c, Role::Dialer, None, [0; 32]).is_err());
    }
}
