//! State transfer: a new replica pulls the state a configuration ended with, in
//! chunks, from the replicas of the old configuration.
//!
//! When a group moves from configuration `C` (epoch `e`) to `C′` (epoch `e + 1`),
//! the new instance starts from the state after the stop-sign that ended `C`. Members
//! of `C′` that were in `C` have it; the others fetch it. The state can be large (an
//! in-memory partition of hundreds of megabytes), so it never travels as one
//! message:
//!
//! * [`SnapshotSource`] (on every old replica that decided the stop-sign) serves
//!   byte ranges of the encoded state, at most `max_chunk` bytes each.
//! * [`SnapshotFetch`] (on the new replica) asks for consecutive ranges, with at most
//!   `window` requests outstanding: that window is the flow control, so the receiver
//!   never has more than `window × max_chunk` bytes in flight and the sender answers
//!   only what was asked. When answers stop for `timeout_ticks`, the source is asked
//!   again (a lost message is no failure) with a doubled patience; after
//!   `SILENT_ROUNDS_BEFORE_SWITCH` such rounds it is left for the next one (crashed,
//!   cut off, or no longer holding the state), keeping what already arrived.
//! * The whole state carries a checksum. A copy that fails it is fetched again, one
//!   source per copy from then on, and a source whose own copy fails is not asked
//!   again; when every source is bad the fetch reports [`TransferError::Corrupt`].
//!
//! Both sides are sans-IO, like the protocol cores: the host feeds messages and ticks
//! and sends what the outbox holds.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::sync::Arc;

use crate::{NodeId, PartitionId};

/// Timeouts in a row a source gets (each re-asking it) before the fetch moves on.
const SILENT_ROUNDS_BEFORE_SWITCH: u32 = 2;

/// The largest chunk a node's fetches ask for.
pub const MAX_CHUNK_BYTES: u32 = 256 * 1024;
/// Requests a node's fetches keep outstanding.
pub const FETCH_WINDOW: usize = 4;
/// The largest state (or message) a node's fetches accept.
pub const MAX_FETCH_BYTES: u64 = 64 * 1024 * 1024 * 1024;

/// The chunk size of a node that sends at most `max_message` bytes in one piece:
/// [`MAX_CHUNK_BYTES`], or less so that a chunk fits in one message.
pub fn chunk_size(max_message: usize) -> u32 {
    max_message.clamp(1, MAX_CHUNK_BYTES as usize) as u32
}

/// What a fetch asks for and a source answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransferMsg {
    /// New replica → old replica: bytes `offset..offset + len` of the state that
    /// ended epoch `epoch - 1` of `group`, i.e. the starting state of `epoch`.
    Request {
        /// The group (a partition, or the directory).
        group: PartitionId,
        /// The epoch whose starting state is wanted.
        epoch: u64,
        /// First byte.
        offset: u64,
        /// Bytes wanted (the source may send fewer, never more than its `max_chunk`).
        len: u32,
    },
    /// Old replica → new replica: a range of that state.
    Chunk {
        /// The group.
        group: PartitionId,
        /// The epoch whose starting state this is.
        epoch: u64,
        /// Size of the whole state.
        total_len: u64,
        /// FNV-1a 64 of the whole state.
        checksum: u64,
        /// Position of `data` in the state.
        offset: u64,
        /// The bytes.
        data: Vec<u8>,
    },
    /// Old replica → new replica: "I do not hold that state".
    Unavailable {
        /// The group.
        group: PartitionId,
        /// The epoch asked for.
        epoch: u64,
    },
}

/// A state being served.
#[derive(Clone, Debug)]
struct Served {
    bytes: Arc<Vec<u8>>,
    checksum: u64,
}

/// Serves the starting states of new epochs, in chunks.
#[derive(Debug)]
pub struct SnapshotSource {
    /// Invariant: `>= 1`.
    max_chunk: u32,
    /// `(group, epoch)` → the state that epoch starts from.
    served: BTreeMap<(PartitionId, u64), Served>,
}

impl SnapshotSource {
    /// A source that sends at most `max_chunk` bytes per answer (0 is taken as 1).
    pub fn new(max_chunk: u32) -> Self {
        SnapshotSource {
            max_chunk: max_chunk.max(1),
            served: BTreeMap::new(),
        }
    }

    /// Offer `bytes` as the starting state of `epoch` of `group`.
    pub fn offer(&mut self, group: PartitionId, epoch: u64, bytes: Arc<Vec<u8>>) {
        let checksum = checksum(&bytes);
        self.served
            .insert((group, epoch), Served { bytes, checksum });
    }

    /// Stop serving every state of `group` before `epoch` (the new configuration is
    /// running, or a later one).
    pub fn retire_before(&mut self, group: PartitionId, epoch: u64) {
        self.served.retain(|(g, e), _| *g != group || *e >= epoch);
    }

    /// Whether the starting state of `epoch` of `group` is served here.
    pub fn serves(&self, group: PartitionId, epoch: u64) -> bool {
        self.served.contains_key(&(group, epoch))
    }

    /// The answer to a request (`None` for anything that is not a request).
    pub fn handle(&self, msg: &TransferMsg) -> Option<TransferMsg> {
        let TransferMsg::Request {
            group,
            epoch,
            offset,
            len,
        } = *msg
        else {
            return None;
        };
        let Some(s) = self.served.get(&(group, epoch)) else {
            return Some(TransferMsg::Unavailable { group, epoch });
        };
        let total = s.bytes.len() as u64;
        let start = offset.min(total) as usize;
        let n = len.min(self.max_chunk) as usize;
        let end = start.saturating_add(n).min(s.bytes.len());
        Some(TransferMsg::Chunk {
            group,
            epoch,
            total_len: total,
            checksum: s.checksum,
            offset: start as u64,
            data: s.bytes[start..end].to_vec(),
        })
    }
}

/// Settings of a fetch.
#[derive(Clone, Debug)]
pub struct FetchConfig {
    /// Bytes asked for per request (0 is taken as 1).
    pub chunk: u32,
    /// Requests outstanding at most (0 is taken as 1).
    pub window: usize,
    /// Ticks without an answer from the current source before moving to the next.
    pub timeout_ticks: u64,
    /// The largest state accepted; a source announcing more is refused.
    pub max_bytes: u64,
}

/// Why a fetch failed for good.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransferError {
    /// A source announced a state larger than `max_bytes`.
    TooLarge {
        /// The announced size.
        total_len: u64,
        /// The limit.
        max_bytes: u64,
    },
    /// Every source sent a copy that does not match its own checksum.
    Corrupt,
}

impl fmt::Display for TransferError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransferError::TooLarge {
                total_len,
                max_bytes,
            } => write!(
                f,
                "the state is {total_len} bytes, over the limit of {max_bytes}"
            ),
            TransferError::Corrupt => f.write_str("the state received does not match its checksum"),
        }
    }
}

impl std::error::Error for TransferError {}

/// Fetches the starting state of `epoch` of `group` from the old replicas.
#[derive(Debug)]
pub struct SnapshotFetch {
    group: PartitionId,
    epoch: u64,
    cfg: FetchConfig,
    /// Where to ask, in turn. Invariant: non-empty.
    sources: Vec<NodeId>,
    /// Index into `sources` of the one asked now.
    current: usize,
    /// Size and checksum announced by the first chunk (of the current attempt).
    announced: Option<(u64, u64)>,
    /// Bytes `0..received.len()` of the state, in order.
    received: Vec<u8>,
    /// Chunks that arrived ahead of `received`, by offset. Invariant: every key
    /// `> received.len()` and below `next_offset`, at most `window` of them.
    ahead: BTreeMap<u64, Vec<u8>>,
    /// Offsets asked for and not answered yet, oldest first.
    outstanding: VecDeque<u64>,
    /// The next offset to ask for.
    next_offset: u64,
    ticks: u64,
    /// Tick of the last useful answer (or of the switch to the current source).
    last_progress: u64,
    /// Ticks of silence before leaving the current source: `timeout_ticks`, doubled
    /// at every switch that made no progress (up to 64 times), so a slow network whose
    /// answers take longer than the timeout still gets through.
    patience: u64,
    /// Sources (indexes into `sources`) whose bytes are in `received`.
    contributors: BTreeSet<usize>,
    /// Sources that alone delivered a state that failed its checksum: never asked
    /// again.
    bad: BTreeSet<usize>,
    /// Timeouts in a row without progress from the current source.
    silent_rounds: u32,
    /// Set after a copy assembled from several sources failed its checksum: from
    /// then on a copy comes from one source only (leaving a source discards what it
    /// sent), so the next failure names the culprit.
    strict: bool,
    outgoing: Vec<(NodeId, TransferMsg)>,
    result: Option<Result<Vec<u8>, TransferError>>,
}

impl SnapshotFetch {
    /// Starts fetching from `sources` (tried in this order; empty is allowed and
    /// waits for [`SnapshotFetch::set_sources`]).
    pub fn new(group: PartitionId, epoch: u64, sources: Vec<NodeId>, cfg: FetchConfig) -> Self {
        let cfg = FetchConfig {
            chunk: cfg.chunk.max(1),
            window: cfg.window.max(1),
            timeout_ticks: cfg.timeout_ticks.max(1),
            ..cfg
        };
        let timeout_ticks = cfg.timeout_ticks;
        let mut f = SnapshotFetch {
            group,
            epoch,
            cfg,
            sources,
            current: 0,
            announced: None,
            received: Vec::new(),
            ahead: BTreeMap::new(),
            outstanding: VecDeque::new(),
            next_offset: 0,
            ticks: 0,
            last_progress: 0,
            patience: timeout_ticks,
            contributors: BTreeSet::new(),
            bad: BTreeSet::new(),
            strict: false,
            silent_rounds: 0,
            outgoing: Vec::new(),
            result: None,
        };
        f.fill_window();
        f
    }

    /// Replaces the list of sources (the directory learnt of others); the transfer
    /// continues with the first.
    pub fn set_sources(&mut self, sources: Vec<NodeId>) {
        self.sources = sources;
        self.current = 0;
        self.bad.clear();
        self.reset_data();
        self.restart_requests();
    }

    /// The epoch whose starting state is fetched.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Bytes received so far, and the size of the whole state once announced.
    pub fn progress(&self) -> (u64, Option<u64>) {
        (self.received.len() as u64, self.announced.map(|a| a.0))
    }

    /// Requests sent to the current source and not answered yet (at most `window`).
    pub fn in_flight(&self) -> usize {
        self.outstanding.len()
    }

    /// The outcome, once there is one: the whole state, or why not.
    pub fn take_result(&mut self) -> Option<Result<Vec<u8>, TransferError>> {
        self.result.take()
    }

    /// Moves the requests to send into `buf`.
    pub fn take_outgoing(&mut self, buf: &mut Vec<(NodeId, TransferMsg)>) {
        buf.append(&mut self.outgoing);
    }

    /// Advances the clock: a source silent for `timeout_ticks` is left for the next.
    pub fn tick(&mut self) {
        self.ticks += 1;
        if self.result.is_some() || self.sources.is_empty() {
            return;
        }
        if self.ticks >= self.last_progress + self.patience {
            self.patience = (self.patience * 2).min(self.cfg.timeout_ticks * 64);
            // A lost request or answer is no reason to leave a source: ask it again
            // first, and move on only when it stays silent.
            if self.silent_rounds < SILENT_ROUNDS_BEFORE_SWITCH {
                self.silent_rounds += 1;
                self.restart_requests();
            } else {
                self.next_source();
            }
        }
    }

    /// Handles a message from `from` (only answers of the current source count).
    pub fn handle(&mut self, from: NodeId, msg: TransferMsg) {
        if self.result.is_some() || self.sources.get(self.current) != Some(&from) {
            return;
        }
        match msg {
            TransferMsg::Unavailable { group, epoch }
                if group == self.group && epoch == self.epoch =>
            {
                self.next_source();
            }
            TransferMsg::Chunk {
                group,
                epoch,
                total_len,
                checksum,
                offset,
                data,
            } if group == self.group && epoch == self.epoch => {
                self.handle_chunk(total_len, checksum, offset, data);
            }
            _ => {}
        }
    }

    fn handle_chunk(&mut self, total_len: u64, sum: u64, offset: u64, data: Vec<u8>) {
        if total_len > self.cfg.max_bytes {
            self.result = Some(Err(TransferError::TooLarge {
                total_len,
                max_bytes: self.cfg.max_bytes,
            }));
            return;
        }
        match self.announced {
            None => self.announced = Some((total_len, sum)),
            Some(a) if a != (total_len, sum) => {
                // Another state than the one we started on: start over with it.
                self.reset_data();
                self.announced = Some((total_len, sum));
                self.restart_requests();
                return;
            }
            Some(_) => {}
        }
        // Only answers to what we asked count, and only as much as we asked.
        let Some(pos) = self.outstanding.iter().position(|o| *o == offset) else {
            return;
        };
        self.outstanding.remove(pos);
        let expected = (total_len.saturating_sub(offset)).min(u64::from(self.cfg.chunk));
        if data.len() as u64 != expected {
            // A short or long chunk: ask for the same range again.
            self.outstanding.push_back(offset);
            self.outgoing
                .push((self.sources[self.current], self.request(offset)));
            return;
        }
        self.last_progress = self.ticks;
        self.patience = self.cfg.timeout_ticks;
        self.silent_rounds = 0;
        self.contributors.insert(self.current);
        if offset == self.received.len() as u64 {
            self.received.extend_from_slice(&data);
            while let Some(next) = self.ahead.remove(&(self.received.len() as u64)) {
                self.received.extend_from_slice(&next);
            }
        } else if offset > self.received.len() as u64 {
            self.ahead.insert(offset, data);
        }
        if self.received.len() as u64 >= total_len {
            if checksum(&self.received) == sum {
                self.result = Some(Ok(std::mem::take(&mut self.received)));
                return;
            }
            // A source that sent every byte of a copy that fails its checksum is
            // not asked again; with several, nobody can be blamed: start over, one
            // source per copy.
            if self.contributors.len() == 1 {
                self.bad.extend(self.contributors.iter().copied());
            }
            self.strict = true;
            self.reset_data();
            self.next_source();
            return;
        }
        self.fill_window();
    }

    fn request(&self, offset: u64) -> TransferMsg {
        TransferMsg::Request {
            group: self.group,
            epoch: self.epoch,
            offset,
            len: self.cfg.chunk,
        }
    }

    /// Asks for more while fewer than `window` requests are outstanding.
    fn fill_window(&mut self) {
        let Some(&src) = self.sources.get(self.current) else {
            return;
        };
        let total = self.announced.map(|a| a.0);
        while self.outstanding.len() < self.cfg.window {
            // Before the size is known, ask for one chunk only.
            if total.is_none() && !self.outstanding.is_empty() {
                break;
            }
            if total.is_some_and(|t| self.next_offset >= t) {
                break;
            }
            let off = self.next_offset;
            self.outstanding.push_back(off);
            self.next_offset += u64::from(self.cfg.chunk);
            self.outgoing.push((src, self.request(off)));
        }
    }

    fn reset_data(&mut self) {
        self.received.clear();
        self.ahead.clear();
        self.announced = None;
        self.contributors.clear();
    }

    /// Forgets requests in flight and asks again from what was received, from the
    /// current source.
    fn restart_requests(&mut self) {
        self.outstanding.clear();
        self.ahead.clear();
        self.next_offset = self.received.len() as u64;
        self.last_progress = self.ticks;
        self.fill_window();
    }

    /// Moves on to the next source that is not known to be bad; fails the fetch
    /// when every source is.
    fn next_source(&mut self) {
        let n = self.sources.len();
        if n == 0 {
            return;
        }
        if self.bad.len() >= n {
            self.result = Some(Err(TransferError::Corrupt));
            return;
        }
        loop {
            self.current = (self.current + 1) % n;
            if !self.bad.contains(&self.current) {
                break;
            }
        }
        if self.strict {
            self.reset_data();
        }
        self.silent_rounds = 0;
        self.restart_requests();
    }
}

/// FNV-1a 64 of a state (the checksum chunks carry).
pub fn checksum(bytes: &[u8]) -> u64 {
    crate::partition::fnv1a(bytes)
}
