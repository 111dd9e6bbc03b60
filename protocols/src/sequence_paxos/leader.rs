//! The leader's side of Sequence Paxos: prepare phase, log adoption, batching and
//! pipelining of accepts, decisions, resends.

use std::collections::{BTreeMap, VecDeque};

use super::{PaxosEvent, Role, SequencePaxos};
use crate::NodeId;
use crate::ballot::Ballot;
use crate::sequence_paxos::messages::{
    AcceptDecide, AcceptSync, Accepted, Decide, PaxosMsg, Prepare, Promise, Snapshot,
};

/// Data only the leader needs.
#[derive(Debug)]
pub(super) struct LeaderState<T> {
    /// The ballot this replica leads with. Invariant: `n.pid == me`, `n == promised`
    /// while this state exists.
    pub(super) n: Ballot,
    /// Where the leader is in the protocol.
    phase: Phase<T>,
    /// Tick of the last resend round.
    last_resend: u64,
}

/// The two phases of a leader, each with its own data.
#[derive(Debug)]
enum Phase<T> {
    /// Waiting for a majority of promises.
    Prepare(PrepareState<T>),
    /// Replicating the log.
    Accept(AcceptState),
}

/// The prepare phase.
#[derive(Debug)]
struct PrepareState<T> {
    /// Valid promises received for `n`, by sender. Invariant: no entry for `me` (the
    /// leader's own promise is its current state).
    promises: BTreeMap<NodeId, Promise<T>>,
}

/// The accept phase.
#[derive(Debug)]
struct AcceptState {
    /// Progress of every other member. Invariant: one entry per member of `others`.
    followers: BTreeMap<NodeId, Progress>,
    /// End index of every batch appended in this ballot that is not decided yet, in
    /// order. Invariant: all `> decided_idx`; `len()` is the number of batches in
    /// flight.
    batch_ends: VecDeque<u64>,
    /// The round and length of the log adopted at the end of the prepare phase: a
    /// member whose log was accepted in `adopted_round` and is at most `adopted_len`
    /// long holds a prefix of ours.
    adopted_round: Ballot,
    adopted_len: u64,
    /// The decided index last sent to the followers.
    decided_sent: u64,
}

/// What the leader knows about one follower in its ballot.
#[derive(Debug, Default, Clone, Copy)]
struct Progress {
    /// The follower promised `n` and was sent an `AcceptSync`, so it receives every
    /// new batch.
    synced: bool,
    /// The follower has accepted `0..accepted_idx` in `n`. Invariant: never
    /// decreases within the ballot, `<= log_len()`.
    accepted_idx: u64,
    /// `accepted_idx` at the previous resend round (to detect a stuck follower).
    accepted_at_check: u64,
}

impl<T> LeaderState<T> {
    pub(super) fn is_accepting(&self) -> bool {
        matches!(self.phase, Phase::Accept(_))
    }
}

impl<T: super::LogEntry> SequencePaxos<T> {
    /// Starts leading: picks a ballot above anything promised, sends `Prepare`.
    pub(super) fn become_leader(&mut self, ble_ballot: Ballot) {
        let n = if ble_ballot > self.promised && ble_ballot.pid == self.me {
            ble_ballot
        } else {
            Ballot {
                n: self.promised.n + 1,
                pid: self.me,
            }
        };
        self.promised = n;
        self.leader = Some(n);
        self.hold_forwarding = false;
        self.role = Role::Leader(LeaderState {
            n,
            phase: Phase::Prepare(PrepareState {
                promises: BTreeMap::new(),
            }),
            last_resend: self.ticks,
        });
        for peer in self.others.clone() {
            self.send_prepare(peer, n);
        }
        // A group of one is its own majority.
        self.maybe_finish_prepare();
    }

    fn send_prepare(&mut self, peer: NodeId, n: Ballot) {
        let prep = Prepare {
            n,
            decided_idx: self.decided_idx,
            n_accepted: self.accepted_round,
            accepted_idx: self.log_len(),
        };
        self.outgoing.push((peer, PaxosMsg::Prepare(prep)));
    }

    /// Whether a promise's suffix (if it is the one we would adopt) fits our log.
    fn promise_is_valid(&self, p: &Promise<T>) -> bool {
        let Some(start) = p.accepted_idx.checked_sub(p.suffix.len() as u64) else {
            return false;
        };
        if (p.n_accepted, p.accepted_idx) <= (self.accepted_round, self.log_len()) {
            return true; // never adopted; only its indexes are used
        }
        match &p.snapshot {
            Some(s) => s.idx == start && s.idx >= self.decided_idx,
            None => start >= self.decided_idx && start <= self.log_len(),
        }
    }

    pub(super) fn handle_promise(&mut self, from: NodeId, p: Promise<T>) {
        let Role::Leader(ls) = &self.role else { return };
        if p.n != ls.n || !self.promise_is_valid(&p) {
            return; // a late promise for an older ballot of ours, or malformed
        }
        let Role::Leader(ls) = &mut self.role else {
            return;
        };
        match &mut ls.phase {
            Phase::Prepare(ps) => {
                ps.promises.insert(from, p);
                self.maybe_finish_prepare();
            }
            Phase::Accept(_) => self.sync_follower(from, &p),
        }
    }

    /// With a majority of promises, adopts the most up-to-date log and syncs everyone
    /// who promised.
    fn maybe_finish_prepare(&mut self) {
        let Role::Leader(ls) = &mut self.role else {
            return;
        };
        let n = ls.n;
        let Phase::Prepare(ps) = &mut ls.phase else {
            return;
        };
        if ps.promises.len() + 1 < self.majority {
            return;
        }
        let mut promises = std::mem::take(&mut ps.promises);
        // The most up-to-date log: accepted in the highest round, and the longest of
        // those. Chosen entries are all in it (the Paxos argument, per index).
        let own_key = (self.accepted_round, self.log_len());
        let best = promises
            .iter()
            .max_by_key(|(_, p)| (p.n_accepted, p.accepted_idx))
            .map(|(id, p)| (*id, (p.n_accepted, p.accepted_idx)));
        let mut adopted_round = self.accepted_round;
        if let Some((best_id, key)) = best
            && key > own_key
            && !super::planted::leader_ignores_promised_suffix()
            && let Some(p) = promises.get_mut(&best_id)
        {
            adopted_round = p.n_accepted;
            let suffix = std::mem::take(&mut p.suffix);
            let snapshot = p.snapshot.take();
            let start = p.accepted_idx - suffix.len() as u64;
            self.adopt(start, snapshot, suffix);
        }
        self.accepted_round = n;
        let mut followers = BTreeMap::new();
        for peer in &self.others {
            followers.insert(*peer, Progress::default());
        }
        let adopted_len = self.log_len();
        if let Role::Leader(ls) = &mut self.role {
            ls.phase = Phase::Accept(AcceptState {
                followers,
                batch_ends: VecDeque::new(),
                adopted_round,
                adopted_len,
                decided_sent: self.decided_idx,
            });
        }
        for (peer, p) in &promises {
            self.sync_follower(*peer, p);
        }
        self.leader_pump();
    }

    /// Replaces our log from `start` on by `suffix`, installing `snapshot` first.
    /// The caller has validated the indexes (`promise_is_valid`).
    fn adopt(&mut self, start: u64, snapshot: Option<Snapshot>, suffix: Vec<T>) {
        if let Some(s) = snapshot
            && s.idx > self.decided_idx
        {
            self.install_snapshot(s);
        }
        let cut = start.max(self.decided_idx);
        if cut > self.log_len() {
            return; // cannot happen after validation; never leave a gap
        }
        self.truncate_log(cut);
        let skip = (cut - start) as usize;
        self.log.extend(suffix.into_iter().skip(skip));
    }

    /// Sends `AcceptSync` to a follower that promised `n`, from the first index where
    /// its log may differ from ours.
    fn sync_follower(&mut self, peer: NodeId, p: &Promise<T>) {
        let Role::Leader(ls) = &mut self.role else {
            return;
        };
        let n = ls.n;
        let Phase::Accept(acc) = &mut ls.phase else {
            return;
        };
        let len = self.first_idx + self.log.len() as u64;
        // Its log is a prefix of ours if it was accepted in our ballot, or in the
        // round we adopted from and no longer than what we adopted; otherwise only its
        // decided prefix is known to match.
        let prefix_of_ours = p.n_accepted == n
            || (p.n_accepted == acc.adopted_round && p.accepted_idx <= acc.adopted_len);
        let mut sync_idx = if prefix_of_ours {
            p.accepted_idx
        } else {
            p.decided_idx
        };
        sync_idx = sync_idx.min(len);
        let Some(prog) = acc.followers.get_mut(&peer) else {
            return;
        };
        prog.synced = true;
        let snapshot = if sync_idx < self.first_idx {
            // Behind our trimmed prefix: send the snapshot that covers it.
            let s = self.snapshot.clone();
            sync_idx = s.as_ref().map_or(self.first_idx, |s| s.idx);
            s
        } else {
            None
        };
        let msg = AcceptSync {
            n,
            sync_idx,
            suffix: self.suffix_from(sync_idx),
            decided_idx: self.decided_idx,
            snapshot,
        };
        self.outgoing.push((peer, PaxosMsg::AcceptSync(msg)));
    }

    pub(super) fn handle_accepted(&mut self, from: NodeId, a: Accepted) {
        let len = self.log_len();
        let Role::Leader(ls) = &mut self.role else {
            return;
        };
        if a.n != ls.n {
            return; // late, from an older ballot
        }
        let Phase::Accept(acc) = &mut ls.phase else {
            return;
        };
        let Some(prog) = acc.followers.get_mut(&from) else {
            return;
        };
        prog.accepted_idx = prog.accepted_idx.max(a.accepted_idx.min(len));
        self.leader_pump();
    }

    pub(super) fn handle_prepare_req(&mut self, from: NodeId) {
        if matches!(self.role, Role::Leader(_)) {
            self.leader_reprepare(from);
        }
    }

    /// Prepares one follower again (it lost track, or its link came back).
    pub(super) fn leader_reprepare(&mut self, peer: NodeId) {
        let Role::Leader(ls) = &mut self.role else {
            return;
        };
        let n = ls.n;
        if let Phase::Accept(acc) = &mut ls.phase
            && let Some(prog) = acc.followers.get_mut(&peer)
        {
            prog.synced = false;
        }
        self.send_prepare(peer, n);
    }

    /// Decides what a majority accepted, sends held proposals as batches while fewer
    /// than `max_inflight` are undecided, and tells the followers about new decisions.
    pub(super) fn leader_pump(&mut self) {
        loop {
            self.leader_try_decide();
            let flushed = self.leader_flush();
            // Only in a group of one can a flush decide anything by itself.
            if !flushed || self.majority > 1 {
                break;
            }
        }
        let decided = self.decided_idx;
        let Role::Leader(ls) = &mut self.role else {
            return;
        };
        let n = ls.n;
        let Phase::Accept(acc) = &mut ls.phase else {
            return;
        };
        if decided > acc.decided_sent {
            acc.decided_sent = decided;
            for (peer, prog) in &acc.followers {
                if prog.synced {
                    let d = Decide {
                        n,
                        decided_idx: decided,
                    };
                    self.outgoing.push((*peer, PaxosMsg::Decide(d)));
                }
            }
        }
    }

    /// Advances the decided index to what a majority (the leader included) accepted.
    fn leader_try_decide(&mut self) {
        let len = self.log_len();
        let Role::Leader(ls) = &mut self.role else {
            return;
        };
        let Phase::Accept(acc) = &mut ls.phase else {
            return;
        };
        let mut idxs: Vec<u64> = acc.followers.values().map(|p| p.accepted_idx).collect();
        idxs.push(len);
        idxs.sort_unstable_by(|a, b| b.cmp(a));
        let Some(&chosen) = idxs.get(self.majority - 1) else {
            return;
        };
        if chosen <= self.decided_idx {
            return;
        }
        while acc.batch_ends.front().is_some_and(|&e| e <= chosen) {
            acc.batch_ends.pop_front();
        }
        self.advance_decided(chosen);
    }

    /// Moves held proposals into the log in batches and sends them; returns whether
    /// anything was sent.
    fn leader_flush(&mut self) -> bool {
        let mut flushed = false;
        loop {
            let batch_len = self.next_batch_len();
            let Role::Leader(ls) = &mut self.role else {
                break;
            };
            let n = ls.n;
            let Phase::Accept(acc) = &mut ls.phase else {
                break;
            };
            if self.log.back().is_some_and(|e| e.is_stop_sign()) {
                // The configuration ends with the stop-sign: nothing may follow it.
                for e in self.pending.drain(..) {
                    self.events.push(PaxosEvent::Dropped(e));
                }
                break;
            }
            if self.pending.is_empty() || acc.batch_ends.len() >= self.max_inflight {
                break;
            }
            let mut k = batch_len;
            if let Some(pos) = self.pending.iter().take(k).position(|e| e.is_stop_sign()) {
                k = pos + 1;
            }
            let start_idx = self.first_idx + self.log.len() as u64;
            let entries: Vec<T> = self.pending.drain(..k).collect();
            self.log.extend(entries.iter().cloned());
            acc.batch_ends.push_back(start_idx + k as u64);
            acc.decided_sent = self.decided_idx;
            for (peer, prog) in &acc.followers {
                if prog.synced {
                    let ad = AcceptDecide {
                        n,
                        start_idx,
                        entries: entries.clone(),
                        decided_idx: self.decided_idx,
                    };
                    self.outgoing.push((*peer, PaxosMsg::AcceptDecide(ad)));
                }
            }
            flushed = true;
        }
        flushed
    }

    /// The leader's periodic work: resend `Prepare` to silent members, re-prepare
    /// followers that stopped making progress, repeat the decided index.
    pub(super) fn leader_tick(&mut self) {
        self.leader_pump();
        let ticks = self.ticks;
        let len = self.log_len();
        let decided = self.decided_idx;
        let Role::Leader(ls) = &mut self.role else {
            return;
        };
        if ticks < ls.last_resend + self.resend_ticks {
            return;
        }
        ls.last_resend = ticks;
        let n = ls.n;
        let mut prepare = Vec::new();
        match &mut ls.phase {
            Phase::Prepare(ps) => {
                for peer in &self.others {
                    if !ps.promises.contains_key(peer) {
                        prepare.push(*peer);
                    }
                }
            }
            Phase::Accept(acc) => {
                for (peer, prog) in acc.followers.iter_mut() {
                    let stuck =
                        prog.accepted_idx < len && prog.accepted_idx == prog.accepted_at_check;
                    prog.accepted_at_check = prog.accepted_idx;
                    if !prog.synced || stuck {
                        // Either it never promised, or a message to it (or its answer)
                        // was lost: a new Prepare resynchronises it cheaply.
                        prog.synced = false;
                        prepare.push(*peer);
                    } else {
                        // Doubles as a heartbeat and repairs a lost Decide.
                        let d = Decide {
                            n,
                            decided_idx: decided,
                        };
                        self.outgoing.push((*peer, PaxosMsg::Decide(d)));
                    }
                }
            }
        }
        for peer in prepare {
            self.send_prepare(peer, n);
        }
    }
}
