//! The key-value state machine that every replica of a partition runs over the
//! decided log, and the command and result types of the client protocol.
//!
//! [`KvState`] is a pure function of the decided commands: it reads no clock and no
//! randomness, iterates in key order, and so every replica that applies the same log
//! (or restores the same snapshot and applies the rest) ends in the same state and
//! returns the same results.
//!
//! # Exactly-once sessions
//!
//! A client retries an operation with the same `(client, seq)` until it gets an
//! answer, so a command can be decided more than once. Per client the state machine
//! remembers the last sequence number it executed and that command's result:
//!
//! * `seq` greater than the remembered one: a new operation, executed
//!   ([`Applied::Executed`]).
//! * `seq` equal to the remembered one: a retry of the last operation. It is *not*
//!   executed again; the remembered result is returned ([`Applied::Duplicate`]).
//!   Answering a retried GET with the old result is linearizable: the original
//!   execution happened inside the interval of the (retried) operation.
//! * `seq` lower than the remembered one: a late duplicate of an operation the
//!   client has already moved past (clients have one operation outstanding at a
//!   time, so it already has its answer). Its result is no longer known, and
//!   executing it would apply a PUT twice, so it is neither executed nor answered
//!   ([`Applied::Stale`]); the replica simply does not reply.
//!
//! Reads go through sessions too: it costs one entry and makes a retried GET cheap.
//!
//! # Session expiry
//!
//! Sessions cannot be kept forever. Expiry must be identical on all replicas, so it
//! uses no local clock: the state machine's clock is the largest `stamp_ms` among the
//! commands applied so far. After each command, sessions idle for more than
//! `session_idle_ms` of that clock are dropped, and if more than `max_sessions`
//! remain, the least recently active ones are dropped. A client whose session was
//! dropped is treated as new, so a retry arriving after that would execute again;
//! `session_idle_ms` must therefore be much longer than any client's retry window
//! (a client gives up with `Timeout` long before), and `max_sessions` larger than the
//! number of concurrently active clients. `max_sessions == 0` disables sessions.
//!
//! # Snapshot format (version 1)
//!
//! All integers are little-endian; `str` is a `u64` byte length followed by UTF-8.
//!
//! ```text
//! magic        4 bytes  "KVSS"
//! version      u16      1
//! clock_ms     u64      the state machine's clock
//! next_touch   u64      the next activity counter (orders sessions by recency)
//! n_entries    u64      then n_entries × (key: str, value: str), keys strictly increasing
//! n_sessions   u64      then n_sessions × session, clients strictly increasing:
//!                         client u64, seq u64, last_active_ms u64, touch u64,
//!                         result: tag u8 (0 Value str | 1 Done | 2 NotFound
//!                                         | 3 CasMismatch str)
//! checksum     u64      FNV-1a 64 of every byte before it
//! ```
//!
//! Decoding checks every length against the bytes left, the checksum, UTF-8, the
//! orderings and the session invariants, and returns a [`SnapshotError`] rather than
//! panicking on any input.

use std::collections::BTreeMap;
use std::fmt;

use crate::NodeId;
use crate::partition::fnv1a;

/// A client's identity, chosen by the client (random 64 bits) and kept for its life.
pub type ClientId = u64;

/// One operation on the store.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KvOp {
    /// Read `key`.
    Get {
        /// The key.
        key: String,
    },
    /// Write `value` under `key`.
    Put {
        /// The key.
        key: String,
        /// The new value.
        value: String,
    },
    /// If `key` currently holds `expected`, replace it with `new`; with `expected`
    /// `None`, store `new` only if `key` does not exist (create-if-absent, what a
    /// Redis `SET NX` needs in one step).
    Cas {
        /// The key.
        key: String,
        /// The value the key must hold for the swap to happen, or `None` for "the
        /// key must not exist".
        expected: Option<String>,
        /// The value to store.
        new: String,
    },
    /// Remove `key`. The result says whether it existed: [`KvResult::Done`] if it
    /// did, [`KvResult::NotFound`] if not (the count a Redis `DEL` answers).
    Delete {
        /// The key.
        key: String,
    },
}

impl KvOp {
    /// About how many bytes a command holding this operation takes in a message or
    /// a log: the key and values, plus an allowance for the command's header (its
    /// client, sequence number, stamp and two addresses), generous enough to be an
    /// upper bound of its wire encoding.
    pub fn size_hint(&self) -> usize {
        128 + match self {
            KvOp::Get { key } | KvOp::Delete { key } => key.len(),
            KvOp::Put { key, value } => key.len() + value.len(),
            KvOp::Cas { key, expected, new } => {
                key.len() + expected.as_ref().map_or(0, String::len) + new.len()
            }
        }
    }

    /// The key the operation touches.
    pub fn key(&self) -> &str {
        match self {
            KvOp::Get { key }
            | KvOp::Put { key, .. }
            | KvOp::Cas { key, .. }
            | KvOp::Delete { key } => key,
        }
    }
}

/// The outcome of an operation, as decided by the replicated state machine.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KvResult {
    /// GET found the key: its value.
    Value(String),
    /// PUT stored its value, CAS swapped (or created the key), or DELETE removed a
    /// key that existed.
    Done,
    /// GET, CAS (with an expected value) or DELETE on a key that does not exist.
    NotFound,
    /// CAS whose expected value is not the current one; for a create-if-absent
    /// CAS, the key exists and holds `current`.
    CasMismatch {
        /// The value the key holds.
        current: String,
    },
}

/// A command in the replicated log of one partition.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KvCommand {
    /// The client that issued the operation.
    pub client: ClientId,
    /// The client's sequence number of the operation (1, 2, ...); a retry reuses it.
    pub seq: u64,
    /// Where the client listens for the answer.
    pub reply_to: NodeId,
    /// The replica that proposed the command; it is the one that answers the client.
    pub origin: NodeId,
    /// Milliseconds of the proposer's clock when proposed; only used to expire idle
    /// client sessions deterministically (every replica sees the same stamps).
    pub stamp_ms: u64,
    /// The operation.
    pub op: KvOp,
}

/// A client command never ends a configuration: stop-signs travel as their own
/// kind of log entry.
impl crate::sequence_paxos::LogEntry for KvCommand {
    fn is_stop_sign(&self) -> bool {
        false
    }
    fn size_hint(&self) -> usize {
        self.op.size_hint()
    }
}

/// The end of one configuration (epoch) of a partition's group: decided like any
/// entry, it is the last entry that epoch ever decides. The group goes on in
/// `epoch + 1` with the replicas the directory names for it, from the state after
/// every entry before the stop-sign.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StopSign {
    /// The epoch that ends here.
    pub epoch: u64,
}

/// An entry of a partition's replicated log: a client command, or the stop-sign
/// that ends the log's epoch.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KvEntry {
    /// A client command.
    Cmd(KvCommand),
    /// The end of the epoch.
    Stop(StopSign),
}

impl crate::sequence_paxos::LogEntry for KvEntry {
    fn is_stop_sign(&self) -> bool {
        matches!(self, KvEntry::Stop(_))
    }
    fn size_hint(&self) -> usize {
        match self {
            KvEntry::Cmd(c) => c.op.size_hint(),
            KvEntry::Stop(_) => 16,
        }
    }
}

/// What applying one command did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The command was new and was executed; its result.
    Executed(KvResult),
    /// The command repeats the client's last sequence number; it was not executed
    /// again and this is the result remembered from its first execution.
    Duplicate(KvResult),
    /// The command is older than the client's last sequence number (a late
    /// duplicate): not executed, and there is nothing to answer.
    Stale {
        /// The sequence number the session remembers.
        remembered_seq: u64,
    },
}

impl Applied {
    /// The result to send to the client, if any (`None` for [`Applied::Stale`]).
    pub fn result(&self) -> Option<&KvResult> {
        match self {
            Applied::Executed(r) | Applied::Duplicate(r) => Some(r),
            Applied::Stale { .. } => None,
        }
    }

    /// Like [`Applied::result`], by value.
    pub fn into_result(self) -> Option<KvResult> {
        match self {
            Applied::Executed(r) | Applied::Duplicate(r) => Some(r),
            Applied::Stale { .. } => None,
        }
    }
}

/// What the state machine remembers about one client.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Session {
    /// The last sequence number executed for the client.
    seq: u64,
    /// The result of that command.
    result: KvResult,
    /// The state machine clock when the client was last seen.
    last_active_ms: u64,
    /// Activity counter value of the last touch; the key in `KvState::by_recency`.
    touch: u64,
}

/// The replicated key-value state machine of one partition.
///
/// Invariant: `by_recency` holds exactly one `(touch, client)` entry per session,
/// `touch < next_touch` for every session, and `last_active_ms` is non-decreasing in
/// `touch` and `<= clock_ms`; so the first entry of `by_recency` is both the least
/// recently and the longest idle session. After every `apply`, no session is idle
/// for more than `session_idle_ms` and there are at most `max_sessions` of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvState {
    /// Configuration: idle time after which a session is dropped.
    session_idle_ms: u64,
    /// Configuration: the most sessions kept.
    max_sessions: usize,
    /// The data.
    data: BTreeMap<String, String>,
    /// What `data` takes in a snapshot: the sum over entries of
    /// [`ENTRY_OVERHEAD`] + key length + value length.
    data_bytes: u64,
    /// The largest `stamp_ms` applied so far; the clock for session expiry.
    clock_ms: u64,
    /// Source of `Session::touch` values; strictly increasing.
    next_touch: u64,
    /// Per-client sessions.
    sessions: BTreeMap<ClientId, Session>,
    /// Sessions ordered by their last activity (oldest first).
    by_recency: BTreeMap<u64, ClientId>,
}

impl KvState {
    /// An empty store whose sessions expire after `session_idle_ms` milliseconds of
    /// (command-stamp) time, keeping at most `max_sessions` of them.
    pub fn new(session_idle_ms: u64, max_sessions: usize) -> Self {
        KvState {
            session_idle_ms,
            max_sessions,
            data: BTreeMap::new(),
            data_bytes: 0,
            clock_ms: 0,
            next_touch: 0,
            sessions: BTreeMap::new(),
            by_recency: BTreeMap::new(),
        }
    }

    /// Applies one decided command (see the module docs for the session rules).
    ///
    /// # Examples
    /// ```
    /// use kv_protocols::kv::{Applied, KvCommand, KvOp, KvResult, KvState};
    /// let mut kv = KvState::new(60_000, 1000);
    /// let addr = "127.0.0.1:4000".parse().unwrap();
    /// let put = KvCommand { client: 7, seq: 1, reply_to: addr, origin: addr, stamp_ms: 0,
    ///     op: KvOp::Put { key: "k".into(), value: "v".into() } };
    /// assert_eq!(kv.apply(&put), Applied::Executed(KvResult::Done));
    /// assert_eq!(kv.apply(&put), Applied::Duplicate(KvResult::Done)); // a retry
    /// assert_eq!(kv.get("k"), Some("v"));
    /// ```
    pub fn apply(&mut self, cmd: &KvCommand) -> Applied {
        self.clock_ms = self.clock_ms.max(cmd.stamp_ms);
        let outcome = match self.sessions.get(&cmd.client) {
            Some(s) if cmd.seq < s.seq => Applied::Stale {
                remembered_seq: s.seq,
            },
            Some(s) if cmd.seq == s.seq => {
                let result = s.result.clone();
                self.touch(cmd.client, cmd.seq, result.clone());
                Applied::Duplicate(result)
            }
            _ => {
                let result = self.execute(&cmd.op);
                self.touch(cmd.client, cmd.seq, result.clone());
                Applied::Executed(result)
            }
        };
        self.expire_sessions();
        outcome
    }

    /// The value stored under `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.data.get(key).map(String::as_str)
    }

    /// The number of keys stored.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// About how many bytes the keys and values take in a snapshot (exact for the
    /// data section of the encoding; sessions are not counted). Kept up to date
    /// on every write, so it costs nothing to ask.
    pub fn data_bytes(&self) -> u64 {
        self.data_bytes
    }

    /// Whether no key is stored.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// All `(key, value)` pairs in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.data.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The state machine's clock: the largest command stamp applied so far.
    pub fn clock_ms(&self) -> u64 {
        self.clock_ms
    }

    /// The number of client sessions currently remembered.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// The last sequence number remembered for `client`, if it has a session.
    pub fn session_seq(&self, client: ClientId) -> Option<u64> {
        self.sessions.get(&client).map(|s| s.seq)
    }

    /// Executes `op` on the data.
    fn execute(&mut self, op: &KvOp) -> KvResult {
        match op {
            KvOp::Get { key } => match self.data.get(key) {
                Some(v) => KvResult::Value(v.clone()),
                None => KvResult::NotFound,
            },
            KvOp::Put { key, value } => {
                match self.data.insert(key.clone(), value.clone()) {
                    Some(old) => self.data_bytes -= old.len() as u64,
                    None => self.data_bytes += ENTRY_OVERHEAD + key.len() as u64,
                }
                self.data_bytes += value.len() as u64;
                KvResult::Done
            }
            KvOp::Cas {
                key,
                expected: Some(expected),
                new,
            } => match self.data.get_mut(key) {
                None => KvResult::NotFound,
                Some(current) if current != expected => KvResult::CasMismatch {
                    current: current.clone(),
                },
                Some(current) => {
                    self.data_bytes = self.data_bytes - current.len() as u64 + new.len() as u64;
                    current.clone_from(new);
                    KvResult::Done
                }
            },
            KvOp::Cas {
                key,
                expected: None,
                new,
            } => match self.data.get(key) {
                Some(current) => KvResult::CasMismatch {
                    current: current.clone(),
                },
                None => {
                    self.data_bytes += ENTRY_OVERHEAD + (key.len() + new.len()) as u64;
                    self.data.insert(key.clone(), new.clone());
                    KvResult::Done
                }
            },
            // A deleted key leaves nothing behind (no tombstone): the snapshot holds
            // only the keys that exist, and its size shrinks by the whole entry.
            KvOp::Delete { key } => match self.data.remove(key) {
                Some(old) => {
                    self.data_bytes -= ENTRY_OVERHEAD + (key.len() + old.len()) as u64;
                    KvResult::Done
                }
                None => KvResult::NotFound,
            },
        }
    }

    /// Records that `client` was active now, with `seq` and its `result`.
    fn touch(&mut self, client: ClientId, seq: u64, result: KvResult) {
        let touch = self.next_touch;
        self.next_touch += 1;
        let fresh = Session {
            seq,
            result,
            last_active_ms: self.clock_ms,
            touch,
        };
        if let Some(old) = self.sessions.insert(client, fresh) {
            self.by_recency.remove(&old.touch);
        }
        self.by_recency.insert(touch, client);
    }

    /// Drops idle sessions, then the least recently active ones above the limit.
    fn expire_sessions(&mut self) {
        while let Some((&touch, &client)) = self.by_recency.first_key_value() {
            let idle_too_long = self.sessions.get(&client).is_none_or(|s| {
                self.clock_ms.saturating_sub(s.last_active_ms) > self.session_idle_ms
            });
            if !(idle_too_long || self.sessions.len() > self.max_sessions) {
                break;
            }
            self.by_recency.remove(&touch);
            self.sessions.remove(&client);
        }
    }

    /// Encodes the whole state (data and sessions, not the configuration) in the
    /// versioned format described in the module docs.
    pub fn encode_snapshot(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(64 + self.data_bytes as usize + self.sessions.len() * 48);
        w.extend_from_slice(&SNAPSHOT_MAGIC);
        w.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
        put_u64(&mut w, self.clock_ms);
        put_u64(&mut w, self.next_touch);
        put_u64(&mut w, self.data.len() as u64);
        for (k, v) in &self.data {
            put_str(&mut w, k);
            put_str(&mut w, v);
        }
        put_u64(&mut w, self.sessions.len() as u64);
        for (client, s) in &self.sessions {
            put_u64(&mut w, *client);
            put_u64(&mut w, s.seq);
            put_u64(&mut w, s.last_active_ms);
            put_u64(&mut w, s.touch);
            match &s.result {
                KvResult::Value(v) => {
                    w.push(TAG_VALUE);
                    put_str(&mut w, v);
                }
                KvResult::Done => w.push(TAG_DONE),
                KvResult::NotFound => w.push(TAG_NOT_FOUND),
                KvResult::CasMismatch { current } => {
                    w.push(TAG_CAS_MISMATCH);
                    put_str(&mut w, current);
                }
            }
        }
        let sum = fnv1a(&w);
        put_u64(&mut w, sum);
        w
    }

    /// Decodes a snapshot made by [`KvState::encode_snapshot`], with the given
    /// session configuration (which is not part of the snapshot).
    ///
    /// Never panics: any malformed input gives an error. If the snapshot holds more
    /// sessions than `max_sessions` (or sessions idle for longer than
    /// `session_idle_ms`), the excess is dropped exactly as `apply` would.
    pub fn decode_snapshot(
        bytes: &[u8],
        session_idle_ms: u64,
        max_sessions: usize,
    ) -> Result<KvState, SnapshotError> {
        let header = SNAPSHOT_MAGIC.len() + 2;
        if bytes.len() < header + 8 {
            return Err(SnapshotError::Truncated { what: "header" });
        }
        if bytes[..4] != SNAPSHOT_MAGIC {
            return Err(SnapshotError::BadMagic);
        }
        let version = u16::from_le_bytes([bytes[4], bytes[5]]);
        if version != SNAPSHOT_VERSION {
            return Err(SnapshotError::UnsupportedVersion(version));
        }
        let (body, sum) = bytes.split_at(bytes.len() - 8);
        let mut sum_bytes = [0u8; 8];
        sum_bytes.copy_from_slice(sum);
        if u64::from_le_bytes(sum_bytes) != fnv1a(body) {
            return Err(SnapshotError::ChecksumMismatch);
        }

        let mut r = Reader {
            buf: body,
            pos: header,
        };
        let mut state = KvState::new(session_idle_ms, max_sessions);
        state.clock_ms = r.u64("clock")?;
        state.next_touch = r.u64("activity counter")?;

        let n_entries = r.u64("entry count")?;
        let mut last_key: Option<String> = None;
        for _ in 0..n_entries {
            let key = r.string("key")?;
            let value = r.string("value")?;
            if last_key.as_ref().is_some_and(|last| *last >= key) {
                return Err(SnapshotError::KeysNotSorted);
            }
            last_key = Some(key.clone());
            state.data_bytes += ENTRY_OVERHEAD + (key.len() + value.len()) as u64;
            state.data.insert(key, value);
        }

        let n_sessions = r.u64("session count")?;
        let mut last_client = None;
        for _ in 0..n_sessions {
            let client = r.u64("session client")?;
            let seq = r.u64("session seq")?;
            let last_active_ms = r.u64("session activity")?;
            let touch = r.u64("session activity counter")?;
            let result = match r.u8("result tag")? {
                TAG_VALUE => KvResult::Value(r.string("result value")?),
                TAG_DONE => KvResult::Done,
                TAG_NOT_FOUND => KvResult::NotFound,
                TAG_CAS_MISMATCH => KvResult::CasMismatch {
                    current: r.string("result value")?,
                },
                tag => return Err(SnapshotError::BadResultTag(tag)),
            };
            if last_client.is_some_and(|last| last >= client) {
                return Err(SnapshotError::SessionsNotSorted);
            }
            last_client = Some(client);
            if last_active_ms > state.clock_ms || touch >= state.next_touch {
                return Err(SnapshotError::BadSession { client });
            }
            if state.by_recency.insert(touch, client).is_some() {
                return Err(SnapshotError::BadSession { client });
            }
            state.sessions.insert(
                client,
                Session {
                    seq,
                    result,
                    last_active_ms,
                    touch,
                },
            );
        }
        if r.pos != body.len() {
            return Err(SnapshotError::TrailingBytes(body.len() - r.pos));
        }
        // Recency order must agree with activity time (see the invariant).
        let mut last_active = 0;
        for client in state.by_recency.values() {
            let t = state.sessions.get(client).map_or(0, |s| s.last_active_ms);
            if t < last_active {
                return Err(SnapshotError::BadSession { client: *client });
            }
            last_active = t;
        }
        state.expire_sessions();
        Ok(state)
    }
}

/// Why a snapshot could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SnapshotError {
    /// The input ended in the middle of the named field.
    Truncated {
        /// The field being read.
        what: &'static str,
    },
    /// The input does not start with the snapshot magic bytes.
    BadMagic,
    /// The format version is not one this build understands.
    UnsupportedVersion(u16),
    /// The trailing checksum does not match the content.
    ChecksumMismatch,
    /// A string is not valid UTF-8.
    InvalidUtf8 {
        /// The field being read.
        what: &'static str,
    },
    /// Keys are not in strictly increasing order.
    KeysNotSorted,
    /// Sessions are not in strictly increasing client order.
    SessionsNotSorted,
    /// A session result has an unknown tag.
    BadResultTag(u8),
    /// A session contradicts the state's clock or activity order.
    BadSession {
        /// The session's client.
        client: ClientId,
    },
    /// Bytes left over after the last session.
    TrailingBytes(usize),
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapshotError::Truncated { what } => write!(f, "snapshot truncated in {what}"),
            SnapshotError::BadMagic => write!(f, "not a KV snapshot (bad magic bytes)"),
            SnapshotError::UnsupportedVersion(v) => {
                write!(
                    f,
                    "unsupported snapshot version {v} (expected {SNAPSHOT_VERSION})"
                )
            }
            SnapshotError::ChecksumMismatch => write!(f, "snapshot checksum mismatch"),
            SnapshotError::InvalidUtf8 { what } => write!(f, "snapshot {what} is not UTF-8"),
            SnapshotError::KeysNotSorted => write!(f, "snapshot keys are not strictly sorted"),
            SnapshotError::SessionsNotSorted => {
                write!(f, "snapshot sessions are not strictly sorted by client")
            }
            SnapshotError::BadResultTag(t) => write!(f, "snapshot has unknown result tag {t}"),
            SnapshotError::BadSession { client } => {
                write!(f, "snapshot session of client {client} is inconsistent")
            }
            SnapshotError::TrailingBytes(n) => write!(f, "{n} unexpected bytes after the snapshot"),
        }
    }
}

impl std::error::Error for SnapshotError {}

/// Snapshot bytes of one key-value entry besides the key and the value: the two
/// length prefixes.
pub const ENTRY_OVERHEAD: u64 = 16;

/// First bytes of every snapshot.
const SNAPSHOT_MAGIC: [u8; 4] = *b"KVSS";
/// The snapshot format version written by this build.
const SNAPSHOT_VERSION: u16 = 1;
const TAG_VALUE: u8 = 0;
const TAG_DONE: u8 = 1;
const TAG_NOT_FOUND: u8 = 2;
const TAG_CAS_MISMATCH: u8 = 3;

fn put_u64(w: &mut Vec<u8>, v: u64) {
    w.extend_from_slice(&v.to_le_bytes());
}

fn put_str(w: &mut Vec<u8>, s: &str) {
    put_u64(w, s.len() as u64);
    w.extend_from_slice(s.as_bytes());
}

/// A bounds-checked cursor over snapshot bytes.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: u64, what: &'static str) -> Result<&[u8], SnapshotError> {
        let left = self.buf.len() - self.pos;
        // Compare in u64 so that a huge length cannot overflow a usize addition.
        if n > left as u64 {
            return Err(SnapshotError::Truncated { what });
        }
        let start = self.pos;
        self.pos += n as usize;
        Ok(&self.buf[start..self.pos])
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, SnapshotError> {
        Ok(self.take(1, what)?[0])
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, SnapshotError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8, what)?);
        Ok(u64::from_le_bytes(b))
    }

    fn string(&mut self, what: &'static str) -> Result<String, SnapshotError> {
        let len = self.u64(what)?;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| SnapshotError::InvalidUtf8 { what })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Re-seals `body` (everything but the checksum) with a valid checksum, so the
    /// structural checks behind the checksum can be exercised.
    fn seal(mut body: Vec<u8>) -> Vec<u8> {
        let sum = fnv1a(&body);
        put_u64(&mut body, sum);
        body
    }

    fn header(clock: u64, next_touch: u64) -> Vec<u8> {
        let mut w = SNAPSHOT_MAGIC.to_vec();
        w.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
        put_u64(&mut w, clock);
        put_u64(&mut w, next_touch);
        w
    }

    fn decode(bytes: &[u8]) -> Result<KvState, SnapshotError> {
        KvState::decode_snapshot(bytes, 1000, 10)
    }

    #[test]
    fn empty_state_roundtrips() {
        let kv = KvState::new(1000, 10);
        assert_eq!(decode(&kv.encode_snapshot()), Ok(kv));
    }

    #[test]
    fn structural_errors_behind_a_valid_checksum_are_reported() {
        // Unsorted keys.
        let mut b = header(0, 0);
        put_u64(&mut b, 2);
        for k in ["b", "a"] {
            put_str(&mut b, k);
            put_str(&mut b, "v");
        }
        put_u64(&mut b, 0);
        assert_eq!(decode(&seal(b)), Err(SnapshotError::KeysNotSorted));

        // Invalid UTF-8 in a value.
        let mut b = header(0, 0);
        put_u64(&mut b, 1);
        put_str(&mut b, "k");
        put_u64(&mut b, 1);
        b.push(0xFF);
        put_u64(&mut b, 0);
        assert_eq!(
            decode(&seal(b)),
            Err(SnapshotError::InvalidUtf8 { what: "value" })
        );

        // A length far beyond the input.
        let mut b = header(0, 0);
        put_u64(&mut b, 1);
        put_u64(&mut b, u64::MAX);
        assert_eq!(
            decode(&seal(b)),
            Err(SnapshotError::Truncated { what: "key" })
        );

        // Unknown result tag.
        let mut b = header(5, 1);
        put_u64(&mut b, 0);
        put_u64(&mut b, 1);
        for v in [9, 1, 5, 0] {
            put_u64(&mut b, v);
        }
        b.push(7);
        assert_eq!(decode(&seal(b)), Err(SnapshotError::BadResultTag(7)));

        // A session active after the clock.
        let mut b = header(5, 1);
        put_u64(&mut b, 0);
        put_u64(&mut b, 1);
        for v in [9, 1, 6, 0] {
            put_u64(&mut b, v);
        }
        b.push(TAG_DONE);
        assert_eq!(
            decode(&seal(b)),
            Err(SnapshotError::BadSession { client: 9 })
        );

        // Two sessions with the same activity counter.
        let mut b = header(5, 2);
        put_u64(&mut b, 0);
        put_u64(&mut b, 2);
        for client in [1, 2] {
            for v in [client, 1, 5, 0] {
                put_u64(&mut b, v);
            }
            b.push(TAG_NOT_FOUND);
        }
        assert_eq!(
            decode(&seal(b)),
            Err(SnapshotError::BadSession { client: 2 })
        );

        // Trailing bytes.
        let mut b = header(0, 0);
        put_u64(&mut b, 0);
        put_u64(&mut b, 0);
        b.push(0);
        assert_eq!(decode(&seal(b)), Err(SnapshotError::TrailingBytes(1)));
    }

    #[test]
    fn header_errors_are_reported() {
        let good = KvState::new(1000, 10).encode_snapshot();
        assert_eq!(
            decode(&good[..10]),
            Err(SnapshotError::Truncated { what: "header" })
        );
        let mut bad = good.clone();
        bad[0] = b'X';
        assert_eq!(decode(&bad), Err(SnapshotError::BadMagic));
        let mut bad = good.clone();
        bad[4] = 9;
        assert_eq!(decode(&bad), Err(SnapshotError::UnsupportedVersion(9)));
        let mut bad = good;
        bad[8] ^= 1;
        assert_eq!(decode(&bad), Err(SnapshotError::ChecksumMismatch));
    }
}
