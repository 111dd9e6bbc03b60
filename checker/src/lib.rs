//! A linearizability checker for kompact-kv histories.
//!
//! A history is a list of GET, PUT and CAS operations, each with the interval
//! between its call and its return (or no return, if the client never learnt the
//! outcome). It is *linearizable* if every operation can be given a single instant
//! inside its interval such that, taken in the order of those instants, the results
//! are those of a plain key-value map. Keys are independent registers, and
//! linearizability is compositional, so each key is checked on its own.
//!
//! The history format (JSON lines, shared by `kvstore bench --history` and the
//! simulator) is described in `docs/checker.md`; [`HistoryOp::to_json_line`] writes
//! it and [`parse_history`] reads it.
//!
//! # Examples
//! ```
//! use kv_checker::{check_history, parse_history, CheckResult};
//! let history = parse_history(r#"
//! {"client":1,"call":0,"ret":10,"body":{"op":"put","key":"k","value":"a"}}
//! {"client":2,"call":20,"ret":30,"body":{"op":"get","key":"k","out":null}}
//! "#).unwrap();
//! // The read started after the write had returned, yet did not see it.
//! assert!(matches!(check_history(&history), CheckResult::NotLinearizable { .. }));
//! ```
#![deny(missing_docs)]

mod history;
mod search;
mod window;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

pub use history::{HistoryOp, Op, ParseError, parse_history, parse_line, write_history};
pub use window::{MAX_CONTEXT, ViolationWindow, violation_window};

/// The verdict on a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckResult {
    /// Every key's operations can be ordered consistently with real time and the
    /// register semantics.
    Linearizable,
    /// The operations on `key` cannot be.
    NotLinearizable {
        /// The first offending key (in key order).
        key: String,
        /// A small window of the key's operations around the point where every
        /// ordering fails, sorted by call time. It illustrates the problem; it is
        /// not guaranteed to be non-linearizable on its own.
        ops: Vec<HistoryOp>,
        /// What went wrong, in words.
        explanation: String,
    },
    /// The search on `key` exceeded its budget (and no other key was found
    /// non-linearizable): the history may or may not be linearizable.
    Unknown {
        /// The first such key.
        key: String,
    },
}

/// Limits of the search.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckOptions {
    /// The most search steps spent on one key before giving up with
    /// [`CheckResult::Unknown`]. A step is one event visited; a history from a
    /// correct store typically needs about two per operation.
    pub max_steps_per_key: u64,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            max_steps_per_key: 20_000_000,
        }
    }
}

/// The verdict with some statistics, as printed by `kvstore check-history`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// The verdict.
    pub result: CheckResult,
    /// Number of operations in the history.
    pub ops: usize,
    /// Number of distinct keys.
    pub keys: usize,
    /// Number of operations with unknown outcome.
    pub unknown_outcome: usize,
    /// Search steps spent, over all keys.
    pub steps: u64,
}

impl Report {
    /// Whether the history was found linearizable.
    pub fn is_linearizable(&self) -> bool {
        self.result == CheckResult::Linearizable
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stats = format!(
            "{} operations on {} keys, {} with unknown outcome",
            self.ops, self.keys, self.unknown_outcome
        );
        match &self.result {
            CheckResult::Linearizable => write!(f, "linearizable ({stats})"),
            CheckResult::NotLinearizable {
                key,
                ops,
                explanation,
            } => {
                writeln!(f, "NOT linearizable on key {key:?} ({stats})")?;
                writeln!(f, "{explanation}")?;
                write!(f, "operations involved:")?;
                for op in ops {
                    write!(f, "\n  {op}")?;
                }
                Ok(())
            }
            CheckResult::Unknown { key } => write!(
                f,
                "unknown: the search on key {key:?} exceeded its step budget ({stats})"
            ),
        }
    }
}

/// Why a history file could not be checked.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A line is malformed.
    #[error("{path}:{line}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
}

/// Checks `ops` with the default limits.
pub fn check_history(ops: &[HistoryOp]) -> CheckResult {
    check_history_with(ops, &CheckOptions::default()).result
}

/// Checks `ops`, key by key in key order.
pub fn check_history_with(ops: &[HistoryOp], opts: &CheckOptions) -> Report {
    let mut by_key: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, op) in ops.iter().enumerate() {
        by_key.entry(op.op.key()).or_default().push(i);
    }
    let mut steps = 0;
    let mut first_unknown = None;
    let mut result = CheckResult::Linearizable;
    for (key, idx) in &by_key {
        match search::check_key(key, ops, idx, opts.max_steps_per_key, &mut steps) {
            search::KeyOutcome::Linearizable => {}
            search::KeyOutcome::GaveUp => {
                first_unknown.get_or_insert_with(|| key.to_string());
            }
            search::KeyOutcome::Violation {
                window,
                explanation,
            } => {
                result = CheckResult::NotLinearizable {
                    key: key.to_string(),
                    ops: window.iter().filter_map(|&i| ops.get(i).cloned()).collect(),
                    explanation,
                };
                break;
            }
        }
    }
    if let (CheckResult::Linearizable, Some(key)) = (&result, first_unknown) {
        result = CheckResult::Unknown { key };
    }
    Report {
        result,
        ops: ops.len(),
        keys: by_key.len(),
        unknown_outcome: ops.iter().filter(|o| o.is_unknown()).count(),
        steps,
    }
}

/// Reads the history in `path` and checks it with the default limits.
pub fn check_file(path: impl AsRef<Path>) -> Result<Report, Error> {
    check_file_with(path, &CheckOptions::default())
}

/// Reads the history in `path` and checks it.
pub fn check_file_with(path: impl AsRef<Path>, opts: &CheckOptions) -> Result<Report, Error> {
    let path = path.as_ref();
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: name.clone(),
        source,
    })?;
    let ops = parse_history(&text).map_err(|e| Error::Parse {
        path: name,
        line: e.line,
        message: e.message,
    })?;
    Ok(check_history_with(&ops, opts))
}
