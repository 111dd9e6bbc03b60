//! The follower's side of Sequence Paxos: promising, adopting the leader's log,
//! accepting batches, learning decisions, and asking to be resynchronised.

use super::{Role, SequencePaxos};
use crate::NodeId;
use crate::ballot::Ballot;
use crate::sequence_paxos::messages::{
    AcceptDecide, AcceptSync, Accepted, Decide, PaxosMsg, Prepare, Promise,
};

impl<T: super::LogEntry> SequencePaxos<T> {
    pub(super) fn handle_prepare(&mut self, from: NodeId, p: Prepare) {
        // Only the owner of a ballot leads with it; lower ballots were overtaken.
        if p.n.pid != from {
            return;
        }
        if p.n < self.promised {
            // A leader with an overtaken ballot: our announcement carries our promise,
            // so it learns to prepare again with a higher ballot (or to step down).
            self.send_compaction(from);
            return;
        }
        if matches!(&self.role, Role::Leader(l) if l.n == p.n) {
            return;
        }
        self.observe_ballot(p.n);
        self.last_leader_contact = self.ticks;
        if let Role::Follower(fs) = &mut self.role {
            fs.last_prepare_req = None;
        }
        // What the leader may lack: everything above its decided index if our log is
        // from a newer round than its own, the part beyond its log if it is from the
        // same round, nothing if ours is older.
        let len = self.log_len();
        let start = if self.accepted_round > p.n_accepted {
            p.decided_idx
        } else if self.accepted_round == p.n_accepted {
            p.accepted_idx
        } else {
            len
        }
        .min(len);
        let (snapshot, start) = if start < self.first_idx {
            // We trimmed what the leader lacks: our snapshot stands in for it.
            match &self.snapshot {
                Some(s) => (Some(s.clone()), s.idx),
                None => (None, self.first_idx),
            }
        } else {
            (None, start)
        };
        let promise = Promise {
            n: p.n,
            n_accepted: self.accepted_round,
            decided_idx: self.decided_idx,
            accepted_idx: len,
            suffix: self.suffix_from(start),
            snapshot,
        };
        self.outgoing.push((from, PaxosMsg::Promise(promise)));
    }

    pub(super) fn handle_accept_sync(&mut self, from: NodeId, a: AcceptSync<T>) {
        if a.n.pid != from || !self.accepts_from(a.n, from) {
            return;
        }
        if let Role::Follower(fs) = &mut self.role {
            fs.last_prepare_req = None;
        }
        if let Some(s) = a.snapshot {
            if s.idx != a.sync_idx {
                return; // malformed
            }
            if s.idx > self.decided_idx {
                self.install_snapshot(s);
            }
        }
        let len = self.log_len();
        if self.accepted_round == a.n {
            // Already synced in this ballot (a resent or reordered AcceptSync): the
            // leader's log only grew since, so just take what we lack. Truncating here
            // could take back entries we already reported accepted.
            if a.sync_idx > len {
                self.request_prepare(from);
                return;
            }
            let skip = (len - a.sync_idx) as usize;
            self.log.extend(a.suffix.into_iter().skip(skip));
        } else {
            // Never drop a decided entry: the leader's copy of it is the same anyway.
            let cut = a.sync_idx.max(self.decided_idx);
            if cut > len {
                self.request_prepare(from);
                return;
            }
            self.truncate_log(cut);
            let skip = (cut - a.sync_idx) as usize;
            self.log.extend(a.suffix.into_iter().skip(skip));
            self.accepted_round = a.n;
        }
        self.advance_decided(a.decided_idx);
        self.send_accepted(from, a.n);
    }

    pub(super) fn handle_accept_decide(&mut self, from: NodeId, a: AcceptDecide<T>) {
        if a.n.pid != from || !self.accepts_from(a.n, from) {
            return;
        }
        if self.accepted_round != a.n {
            return; // the AcceptSync of this ballot has not arrived (yet)
        }
        let len = self.log_len();
        if a.start_idx > len {
            // We missed a batch: ask to be prepared again.
            self.request_prepare(from);
            return;
        }
        let end = a.start_idx + a.entries.len() as u64;
        let grew = end > len;
        if grew {
            let skip = (len - a.start_idx) as usize;
            self.log.extend(a.entries.into_iter().skip(skip));
        }
        self.advance_decided(a.decided_idx);
        if grew {
            self.send_accepted(from, a.n);
        }
    }

    pub(super) fn handle_decide(&mut self, from: NodeId, d: Decide) {
        if d.n.pid != from || !self.accepts_from(d.n, from) {
            return;
        }
        // Our log is a prefix of the leader's only once we are synced in its ballot.
        if self.accepted_round == d.n {
            self.advance_decided(d.decided_idx);
        }
    }

    /// Whether a phase-2 message of ballot `n` from `from` is for us to act on. A
    /// higher ballot we never promised means we missed its `Prepare`.
    fn accepts_from(&mut self, n: Ballot, from: NodeId) -> bool {
        if n < self.promised {
            // A leader that does not know it was overtaken: without an answer it
            // would go on counting on us (it may already hold our `Accepted` for its
            // whole log, so it would never prepare us again) while we ignore its
            // decisions. Our announcement carries the higher promise, which makes it
            // step down and prepare again above it.
            if self
                .last_overtaken_notice
                .is_none_or(|t| self.ticks >= t + self.resend_ticks)
            {
                self.last_overtaken_notice = Some(self.ticks);
                self.send_compaction(from);
            }
            return false;
        }
        if n == self.promised {
            self.last_leader_contact = self.ticks;
        }
        if n > self.promised {
            if matches!(self.role, Role::Leader(_)) {
                // Someone leads with a higher ballot: stop competing with it.
                if self.leader.is_none_or(|l| l < n) {
                    self.leader = Some(n);
                }
                self.step_down();
            }
            self.request_prepare(from);
            return false;
        }
        matches!(self.role, Role::Follower(_))
    }

    fn send_accepted(&mut self, leader: NodeId, n: Ballot) {
        let acc = Accepted {
            n,
            accepted_idx: self.log_len(),
        };
        self.outgoing.push((leader, PaxosMsg::Accepted(acc)));
    }

    /// Sends `PrepareReq` to `leader`, at most once per resend period.
    fn request_prepare(&mut self, leader: NodeId) {
        let ticks = self.ticks;
        let resend = self.resend_ticks;
        let Role::Follower(fs) = &mut self.role else {
            return;
        };
        if fs.last_prepare_req.is_some_and(|t| ticks < t + resend) {
            return;
        }
        fs.last_prepare_req = Some(ticks);
        self.outgoing.push((leader, PaxosMsg::PrepareReq));
    }
}
