//! The linearizability search for one key (a register with read, write, CAS,
//! create-if-absent and delete).
//!
//! Just-in-time linearization over the history's call and return events, in the
//! manner of Wing & Gong with Lowe's memoisation: walk the events in time order;
//! at a call, try to let that operation take effect now (if the register's
//! behaviour allows its observed result) and restart from the earliest remaining
//! event; at a return whose operation has not taken effect yet, undo the most
//! recent choice and try the next candidate. A `(set of operations taken effect,
//! register value)` pair that was already explored is never explored again, since
//! what happens next depends only on that pair.

use std::collections::HashMap;

use crate::history::{HistoryOp, Op};

/// The register value: 0 is "absent", other values index the key's interned strings.
type Value = u32;
const ABSENT: Value = 0;

/// An operation of one key, with values interned.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Get {
        out: Value,
    },
    Put {
        value: Value,
    },
    /// `from` is ABSENT for a create-if-absent.
    Cas {
        from: Value,
        to: Value,
        ok: bool,
    },
    /// A CAS whose outcome is unknown: swaps if it can, else does nothing.
    CasMaybe {
        from: Value,
        to: Value,
    },
    Del {
        existed: bool,
    },
    /// A delete whose outcome is unknown: the key is absent after it, whatever
    /// it held.
    DelMaybe,
}

#[derive(Clone, Copy, Debug)]
struct KeyOp {
    /// Index into the caller's history.
    orig: usize,
    call: u64,
    ret: Option<u64>,
    kind: Kind,
}

/// The register's transition: the value after `kind` takes effect on `state`, or
/// `None` if its observed result is impossible in `state`.
fn step(state: Value, kind: Kind) -> Option<Value> {
    match kind {
        Kind::Get { out } => (state == out).then_some(state),
        Kind::Put { value } => Some(value),
        // With `from` a value, a CAS on a missing key can only fail; with `from`
        // ABSENT (create-if-absent) it succeeds exactly on a missing key.
        Kind::Cas { from, to, ok: true } => (state == from).then_some(to),
        Kind::Cas {
            from, ok: false, ..
        } => (state != from).then_some(state),
        Kind::CasMaybe { from, to } => Some(if state == from { to } else { state }),
        Kind::Del { existed } => ((state != ABSENT) == existed).then_some(ABSENT),
        Kind::DelMaybe => Some(ABSENT),
    }
}

/// Outcome of the search on one key.
#[derive(Debug)]
pub(crate) enum KeyOutcome {
    Linearizable,
    /// Not linearizable: indices (into the caller's history) of an offending window,
    /// sorted by call time, and an explanation.
    Violation {
        window: Vec<usize>,
        explanation: String,
    },
    /// The step budget ran out.
    GaveUp,
}

/// Node of the doubly linked event list. Nodes 0 and 1 are the head and tail
/// sentinels.
#[derive(Clone, Copy, Debug)]
struct Node {
    prev: usize,
    next: usize,
    op: usize,
    is_call: bool,
}

const HEAD: usize = 0;
const TAIL: usize = 1;

struct EventList {
    nodes: Vec<Node>,
    /// Per operation: its call node and return node (if its outcome is known).
    call_node: Vec<usize>,
    ret_node: Vec<Option<usize>>,
}

impl EventList {
    fn new(ops: &[KeyOp]) -> Self {
        // Calls sort before returns at the same instant: operations that touch in
        // time are treated as concurrent (the lenient reading of equal stamps).
        let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * ops.len());
        for (i, op) in ops.iter().enumerate() {
            events.push((op.call, false, i));
            if let Some(ret) = op.ret {
                events.push((ret, true, i));
            }
        }
        events.sort_unstable();
        let sentinel = Node {
            prev: HEAD,
            next: TAIL,
            op: usize::MAX,
            is_call: false,
        };
        let mut nodes = vec![sentinel, sentinel];
        let mut call_node = vec![0; ops.len()];
        let mut ret_node = vec![None; ops.len()];
        for &(_, is_ret, op) in &events {
            let id = nodes.len();
            let prev = nodes[TAIL].prev;
            nodes.push(Node {
                prev,
                next: TAIL,
                op,
                is_call: !is_ret,
            });
            nodes[prev].next = id;
            nodes[TAIL].prev = id;
            if is_ret {
                ret_node[op] = Some(id);
            } else {
                call_node[op] = id;
            }
        }
        EventList {
            nodes,
            call_node,
            ret_node,
        }
    }

    fn unlink(&mut self, x: usize) {
        let Node { prev, next, .. } = self.nodes[x];
        self.nodes[prev].next = next;
        self.nodes[next].prev = prev;
    }

    fn relink(&mut self, x: usize) {
        let Node { prev, next, .. } = self.nodes[x];
        self.nodes[prev].next = x;
        self.nodes[next].prev = x;
    }

    /// Removes both events of `op`.
    fn lift(&mut self, op: usize) {
        self.unlink(self.call_node[op]);
        if let Some(r) = self.ret_node[op] {
            self.unlink(r);
        }
    }

    /// Undoes `lift(op)`; lifts must be undone in reverse order.
    fn unlift(&mut self, op: usize) {
        if let Some(r) = self.ret_node[op] {
            self.relink(r);
        }
        self.relink(self.call_node[op]);
    }
}

/// The set of operations that have taken effect, with an incrementally maintained
/// hash (XOR of a fixed random word per member).
struct OpSet {
    bits: Vec<u64>,
    hash: u64,
}

impl OpSet {
    fn token(op: usize) -> u64 {
        mix64((op as u64).wrapping_add(0x5851_F42D_4C95_7F2D))
    }

    fn toggle(&mut self, op: usize) {
        self.bits[op / 64] ^= 1 << (op % 64);
        self.hash ^= Self::token(op);
    }
}

fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// An explored configuration: the set's bits and the register value.
type Config = (Box<[u64]>, Value);

/// The memo of explored `(set, value)` configurations, bucketed by hash.
#[derive(Default)]
struct Memo {
    buckets: HashMap<u64, Vec<Config>>,
}

impl Memo {
    /// Records the configuration; `false` if it was already there.
    fn insert(&mut self, set: &OpSet, state: Value) -> bool {
        let bucket = self
            .buckets
            .entry(set.hash ^ mix64(u64::from(state)))
            .or_default();
        if bucket
            .iter()
            .any(|(bits, s)| *s == state && **bits == *set.bits)
        {
            return false;
        }
        bucket.push((set.bits.clone().into_boxed_slice(), state));
        true
    }
}

/// The deepest point the search reached before a return blocked it.
#[derive(Clone, Copy, Debug)]
struct Frontier {
    depth: usize,
    /// The operation whose return could not be passed.
    blocked: usize,
    /// The register value there.
    state: Value,
    /// The last operation that took effect there, if any.
    last: Option<usize>,
}

/// Interned values of one key; `names[v - 1]` is the string of value `v`.
#[derive(Default)]
struct Interner<'a> {
    ids: HashMap<&'a str, Value>,
    names: Vec<&'a str>,
}

impl<'a> Interner<'a> {
    fn id(&mut self, s: &'a str) -> Value {
        if let Some(&v) = self.ids.get(s) {
            return v;
        }
        self.names.push(s);
        let v = self.names.len() as Value;
        self.ids.insert(s, v);
        v
    }

    fn describe(&self, v: Value) -> String {
        match v.checked_sub(1).and_then(|i| self.names.get(i as usize)) {
            Some(s) => format!("{s:?}"),
            None => "nothing (the key is absent)".to_owned(),
        }
    }
}

/// Checks the operations `idx` (indices into `history`, all on `key`), spending
/// at most `max_steps` search steps; `steps` is increased by the steps spent.
pub(crate) fn check_key(
    key: &str,
    history: &[HistoryOp],
    idx: &[usize],
    max_steps: u64,
    steps: &mut u64,
) -> KeyOutcome {
    let mut names = Interner::default();
    let mut ops: Vec<KeyOp> = Vec::with_capacity(idx.len());
    for &i in idx {
        let Some(h) = history.get(i) else { continue };
        let known = h.ret.is_some();
        let kind = match &h.op {
            // A read whose answer never arrived constrains nothing.
            Op::Get { .. } if !known => continue,
            Op::Get { out, .. } => Kind::Get {
                out: out.as_deref().map_or(ABSENT, |v| names.id(v)),
            },
            Op::Put { value, .. } => Kind::Put {
                value: names.id(value),
            },
            Op::Cas { from, to, ok, .. } => {
                let from = from.as_deref().map_or(ABSENT, |v| names.id(v));
                let to = names.id(to);
                if known {
                    Kind::Cas { from, to, ok: *ok }
                } else {
                    Kind::CasMaybe { from, to }
                }
            }
            Op::Del { existed, .. } if known => Kind::Del { existed: *existed },
            Op::Del { .. } => Kind::DelMaybe,
        };
        ops.push(KeyOp {
            orig: i,
            call: h.call,
            ret: h.ret,
            kind,
        });
    }

    if let Some(v) = impossible_observation(key, history, &ops, &names) {
        return v;
    }

    let mut list = EventList::new(&ops);
    let mut set = OpSet {
        bits: vec![0; ops.len().div_ceil(64)],
        hash: 0,
    };
    let mut memo = Memo::default();
    let mut state = ABSENT;
    let mut pending_known = ops.iter().filter(|o| o.ret.is_some()).count();
    // The operations that have taken effect, in order, with the value before each.
    let mut stack: Vec<(usize, Value)> = Vec::new();
    let mut frontier: Option<Frontier> = None;
    let mut entry = list.nodes[HEAD].next;
    let mut spent = 0u64;

    let outcome = loop {
        if pending_known == 0 {
            // Every completed operation took effect; operations with unknown
            // outcome that are left over simply never did.
            break KeyOutcome::Linearizable;
        }
        spent += 1;
        if spent > max_steps {
            break KeyOutcome::GaveUp;
        }
        let node = list.nodes[entry];
        if entry != TAIL && node.is_call {
            let op = node.op;
            if let Some(next_state) = step(state, ops[op].kind) {
                set.toggle(op);
                if memo.insert(&set, next_state) {
                    stack.push((op, state));
                    state = next_state;
                    list.lift(op);
                    if ops[op].ret.is_some() {
                        pending_known -= 1;
                    }
                    entry = list.nodes[HEAD].next;
                    continue;
                }
                set.toggle(op);
            }
            entry = node.next;
        } else {
            // A return of an operation that has not taken effect (or, defensively,
            // the end of the list): this branch is dead, undo the last choice.
            if entry != TAIL && frontier.is_none_or(|f| stack.len() > f.depth) {
                frontier = Some(Frontier {
                    depth: stack.len(),
                    blocked: node.op,
                    state,
                    last: stack.last().map(|&(op, _)| op),
                });
            }
            let Some((op, before)) = stack.pop() else {
                break violation(key, history, &ops, &names, frontier);
            };
            set.toggle(op);
            state = before;
            list.unlift(op);
            if ops[op].ret.is_some() {
                pending_known += 1;
            }
            entry = list.nodes[list.call_node[op]].next;
        }
    };
    *steps += spent;
    outcome
}

/// A quick necessary condition, checked before the search: every value a completed
/// GET returns, or a successful CAS expects, must be written by an operation called
/// before that GET or CAS returned. Catches reads of never-written values without
/// an exponential search over the writes around them.
fn impossible_observation(
    key: &str,
    history: &[HistoryOp],
    ops: &[KeyOp],
    names: &Interner<'_>,
) -> Option<KeyOutcome> {
    let mut first_write: HashMap<Value, u64> = HashMap::new();
    for op in ops {
        let written = match op.kind {
            Kind::Put { value } => value,
            Kind::Cas { to, ok: true, .. } | Kind::CasMaybe { to, .. } => to,
            _ => continue,
        };
        let t = first_write.entry(written).or_insert(op.call);
        *t = (*t).min(op.call);
    }
    for op in ops {
        let (Some(ret), Some(needed)) = (op.ret, needed_value(op.kind)) else {
            continue;
        };
        if first_write.get(&needed).is_some_and(|&t| t <= ret) {
            continue;
        }
        let what = history
            .get(op.orig)
            .map_or_else(|| "an operation".to_owned(), |h| h.to_string());
        return Some(KeyOutcome::Violation {
            window: vec![op.orig],
            explanation: format!(
                "{what} observed {} on key {key:?}, but no operation called before it \
                 returned writes that value",
                names.describe(needed)
            ),
        });
    }
    None
}

/// The value `kind` needs to find in the register to succeed, if any.
fn needed_value(kind: Kind) -> Option<Value> {
    match kind {
        Kind::Get { out } if out != ABSENT => Some(out),
        Kind::Cas { from, ok: true, .. } if from != ABSENT => Some(from),
        _ => None,
    }
}

/// Builds the report of a violation from the deepest point the search reached.
fn violation(
    key: &str,
    history: &[HistoryOp],
    ops: &[KeyOp],
    names: &Interner<'_>,
    frontier: Option<Frontier>,
) -> KeyOutcome {
    let Some(f) = frontier else {
        // Unreachable with at least one completed operation; keep it total.
        return KeyOutcome::Violation {
            window: ops.iter().map(|o| o.orig).collect(),
            explanation: format!("no consistent order of the operations on key {key:?}"),
        };
    };
    let x = ops[f.blocked];
    let x_ret = x.ret.unwrap_or(u64::MAX);

    // The blocked operation, the last one that took effect before it, the
    // operations overlapping it in time (the candidates that could have come
    // first), and the writers of the value it observed or expected.
    let mut window = vec![f.blocked];
    window.extend(f.last);
    let mut overlapping: Vec<usize> = (0..ops.len())
        .filter(|&j| {
            j != f.blocked && ops[j].call <= x_ret && ops[j].ret.is_none_or(|r| r >= x.call)
        })
        .collect();
    overlapping.sort_by_key(|&j| ops[j].call.abs_diff(x.call));
    overlapping.truncate(16);
    window.extend(overlapping);
    if let Some(v) = needed_value(x.kind) {
        let mut writers: Vec<usize> = (0..ops.len())
            .filter(|&j| match ops[j].kind {
                Kind::Put { value } => value == v,
                Kind::Cas { to, ok: true, .. } | Kind::CasMaybe { to, .. } => to == v,
                _ => false,
            })
            .filter(|&j| ops[j].call <= x_ret)
            .collect();
        writers.sort_by_key(|&j| std::cmp::Reverse(ops[j].call));
        writers.truncate(2);
        window.extend(writers);
    }
    window.sort_by_key(|&j| (ops[j].call, j));
    window.dedup();

    let blocked = history
        .get(x.orig)
        .map_or_else(|| "an operation".to_owned(), |h| h.to_string());
    let last = f
        .last
        .and_then(|j| history.get(ops[j].orig))
        .map_or_else(String::new, |h| format!(" (the last being {h})"));
    let explanation = format!(
        "no order of the {} operations on key {key:?} agrees with their results. \
         The longest agreeing order found has {} operations{last} and leaves the key \
         holding {}; from there, {blocked} cannot take effect before it returns.",
        ops.len(),
        f.depth,
        names.describe(f.state),
    );
    KeyOutcome::Violation {
        window: window.into_iter().map(|j| ops[j].orig).collect(),
        explanation,
    }
}
