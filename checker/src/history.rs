//! The history format: one JSON object per line, parsed and written here.

use std::fmt;
use std::io::{self, Write};

use serde_json::{Map, Value};

/// One operation of a history.
///
/// Invariant (checked by the parser): `ret`, when known, is `>= call`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryOp {
    /// The client that issued the operation (informational; the checker does not
    /// assume clients are sequential).
    pub client: u64,
    /// When the operation was invoked, in nanoseconds of the history's clock.
    pub call: u64,
    /// When the answer arrived; `None` if the outcome is unknown (the client gave
    /// up), in which case the operation may take effect at any time after `call`,
    /// or never.
    pub ret: Option<u64>,
    /// The operation and its observed result.
    pub op: Op,
}

/// An operation on one key, with its observed result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// A read; `out` is the value read, `None` for "not found". Meaningless (and
    /// ignored) when the outcome is unknown.
    Get {
        /// The key.
        key: String,
        /// The value read.
        out: Option<String>,
    },
    /// A write.
    Put {
        /// The key.
        key: String,
        /// The value written.
        value: String,
    },
    /// Compare-and-swap: if the key holds `from`, store `to`; with `from` `None`,
    /// store `to` if the key does not exist (create-if-absent). `ok` says whether
    /// it swapped; a CAS with an expected value never swaps on a missing key. `ok`
    /// is ignored when the outcome is unknown.
    Cas {
        /// The key.
        key: String,
        /// The expected value, `None` for "the key does not exist".
        from: Option<String>,
        /// The new value.
        to: String,
        /// Whether the swap happened.
        ok: bool,
    },
    /// A delete; `existed` says whether the key existed (and so was removed).
    /// Ignored when the outcome is unknown: the key is absent after it either way.
    Del {
        /// The key.
        key: String,
        /// Whether the key existed.
        existed: bool,
    },
}

impl Op {
    /// The key the operation touches.
    pub fn key(&self) -> &str {
        match self {
            Op::Get { key, .. }
            | Op::Put { key, .. }
            | Op::Cas { key, .. }
            | Op::Del { key, .. } => key,
        }
    }
}

impl HistoryOp {
    /// Whether the outcome is unknown (`ret` is `None`).
    pub fn is_unknown(&self) -> bool {
        self.ret.is_none()
    }

    /// The operation as one line of the history format, without the newline.
    ///
    /// Fields come in a fixed order (`client`, `call`, `ret` or `unknown`, `body`),
    /// so equal operations give equal lines. Unknown operations omit `ret`, and
    /// their `out` / `ok` / `existed`, which carry no information.
    ///
    /// # Examples
    /// ```
    /// use kv_checker::{HistoryOp, Op};
    /// let op = HistoryOp { client: 1, call: 10, ret: Some(20),
    ///     op: Op::Put { key: "k".into(), value: "v".into() } };
    /// assert_eq!(op.to_json_line(),
    ///     r#"{"client":1,"call":10,"ret":20,"body":{"op":"put","key":"k","value":"v"}}"#);
    /// ```
    pub fn to_json_line(&self) -> String {
        let mut s = format!("{{\"client\":{},\"call\":{},", self.client, self.call);
        match self.ret {
            Some(ret) => s.push_str(&format!("\"ret\":{ret},")),
            None => s.push_str("\"unknown\":true,"),
        }
        s.push_str("\"body\":{");
        let known = self.ret.is_some();
        match &self.op {
            Op::Get { key, out } => {
                s.push_str(&format!("\"op\":\"get\",\"key\":{}", quote(key)));
                if known {
                    s.push_str(&format!(",\"out\":{}", quote_or_null(out.as_deref())));
                }
            }
            Op::Put { key, value } => s.push_str(&format!(
                "\"op\":\"put\",\"key\":{},\"value\":{}",
                quote(key),
                quote(value)
            )),
            Op::Cas { key, from, to, ok } => {
                s.push_str(&format!(
                    "\"op\":\"cas\",\"key\":{},\"from\":{},\"to\":{}",
                    quote(key),
                    quote_or_null(from.as_deref()),
                    quote(to)
                ));
                if known {
                    s.push_str(&format!(",\"ok\":{ok}"));
                }
            }
            Op::Del { key, existed } => {
                s.push_str(&format!("\"op\":\"del\",\"key\":{}", quote(key)));
                if known {
                    s.push_str(&format!(",\"existed\":{existed}"));
                }
            }
        }
        s.push_str("}}");
        s
    }
}

impl fmt::Display for HistoryOp {
    /// A short human-readable form, e.g. `client 3 [10, 20] get("k") -> "v"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ret {
            Some(ret) => write!(f, "client {} [{}, {}] ", self.client, self.call, ret)?,
            None => write!(f, "client {} [{}, ?] ", self.client, self.call)?,
        }
        let unknown = self.ret.is_none();
        match &self.op {
            Op::Get { key, .. } if unknown => write!(f, "get({key:?}) -> ?"),
            Op::Get { key, out: Some(v) } => write!(f, "get({key:?}) -> {v:?}"),
            Op::Get { key, out: None } => write!(f, "get({key:?}) -> not found"),
            Op::Put { key, value } => write!(f, "put({key:?}, {value:?})"),
            Op::Cas { key, from, to, ok } => {
                match from {
                    Some(from) => write!(f, "cas({key:?}, {from:?} -> {to:?}) -> ")?,
                    None => write!(f, "cas({key:?}, absent -> {to:?}) -> ")?,
                }
                if unknown {
                    write!(f, "?")
                } else {
                    write!(f, "{ok}")
                }
            }
            Op::Del { key, .. } if unknown => write!(f, "del({key:?}) -> ?"),
            Op::Del { key, existed: true } => write!(f, "del({key:?}) -> existed"),
            Op::Del {
                key,
                existed: false,
            } => write!(f, "del({key:?}) -> not found"),
        }
    }
}

/// JSON string literal for `s`.
fn quote(s: &str) -> String {
    // Serialising a &str cannot fail; the fallback only keeps this total.
    serde_json::to_string(s).unwrap_or_else(|_| String::from("\"\""))
}

/// `quote(s)`, or `null` for `None`.
fn quote_or_null(s: Option<&str>) -> String {
    s.map_or_else(|| "null".to_owned(), quote)
}

/// Writes `ops` as a history, one line each.
pub fn write_history<'a, W: Write>(
    mut out: W,
    ops: impl IntoIterator<Item = &'a HistoryOp>,
) -> io::Result<()> {
    for op in ops {
        writeln!(out, "{}", op.to_json_line())?;
    }
    Ok(())
}

/// A problem in one line of a history.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong, e.g. `missing field "call"`.
    pub message: String,
}

/// Parses a whole history (blank lines are skipped).
pub fn parse_history(text: &str) -> Result<Vec<HistoryOp>, ParseError> {
    let mut ops = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let op = parse_line(line).map_err(|message| ParseError {
            line: i + 1,
            message,
        })?;
        ops.push(op);
    }
    Ok(ops)
}

/// Parses one line; the error is the message without the line number.
pub fn parse_line(line: &str) -> Result<HistoryOp, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("invalid JSON: {e}"))?;
    let Value::Object(top) = value else {
        return Err(format!("expected a JSON object, found {}", kind(&value)));
    };
    only_fields(&top, &["client", "call", "ret", "unknown", "body"], "")?;
    let client = uint(&top, "client", "")?;
    let call = uint(&top, "call", "")?;
    let unknown = match top.get("unknown") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(v) => {
            return Err(format!(
                "field \"unknown\" must be a boolean, found {}",
                kind(v)
            ));
        }
    };
    let ret = if unknown {
        // A `ret` on an unknown operation (the time the client gave up) is allowed
        // but carries no information about when the operation took effect.
        match top.get("ret") {
            None | Some(Value::Null) => {}
            Some(_) => {
                uint(&top, "ret", "")?;
            }
        }
        None
    } else {
        let ret = uint(&top, "ret", "")?;
        if ret < call {
            return Err(format!("\"ret\" ({ret}) is before \"call\" ({call})"));
        }
        Some(ret)
    };
    let body = match top.get("body") {
        Some(Value::Object(b)) => b,
        Some(v) => {
            return Err(format!(
                "field \"body\" must be an object, found {}",
                kind(v)
            ));
        }
        None => return Err("missing field \"body\"".to_owned()),
    };
    let op = parse_body(body, unknown)?;
    Ok(HistoryOp {
        client,
        call,
        ret,
        op,
    })
}

fn parse_body(body: &Map<String, Value>, unknown: bool) -> Result<Op, String> {
    let ctx = " in \"body\"";
    let op = string(body, "op", ctx)?;
    match op.as_str() {
        "get" => {
            only_fields(body, &["op", "key", "out"], ctx)?;
            let key = string(body, "key", ctx)?;
            let out = match body.get("out") {
                None if unknown => None,
                None => return Err(format!("missing field \"out\"{ctx}")),
                Some(_) => string_or_null(body, "out", ctx)?,
            };
            Ok(Op::Get { key, out })
        }
        "put" => {
            only_fields(body, &["op", "key", "value"], ctx)?;
            Ok(Op::Put {
                key: string(body, "key", ctx)?,
                value: string(body, "value", ctx)?,
            })
        }
        "cas" => {
            only_fields(body, &["op", "key", "from", "to", "ok"], ctx)?;
            let ok = outcome_flag(body, "ok", unknown, ctx)?;
            let key = string(body, "key", ctx)?;
            if !body.contains_key("from") {
                // `"from": null` is a create-if-absent; a missing `from` is a mistake.
                return Err(format!("missing field \"from\"{ctx}"));
            }
            Ok(Op::Cas {
                key,
                from: string_or_null(body, "from", ctx)?,
                to: string(body, "to", ctx)?,
                ok,
            })
        }
        "del" => {
            only_fields(body, &["op", "key", "existed"], ctx)?;
            let existed = outcome_flag(body, "existed", unknown, ctx)?;
            Ok(Op::Del {
                key: string(body, "key", ctx)?,
                existed,
            })
        }
        other => Err(format!(
            "unknown operation {other:?}{ctx} (expected \"get\", \"put\", \"cas\" or \"del\")"
        )),
    }
}

/// A boolean outcome (`ok`, `existed`): required unless the outcome is unknown,
/// when it may be omitted or `null` (and is then meaningless).
fn outcome_flag(
    body: &Map<String, Value>,
    field: &str,
    unknown: bool,
    ctx: &str,
) -> Result<bool, String> {
    match body.get(field) {
        Some(Value::Bool(b)) => Ok(*b),
        None | Some(Value::Null) if unknown => Ok(false),
        None => Err(format!("missing field {field:?}{ctx}")),
        Some(v) => Err(format!(
            "field {field:?}{ctx} must be a boolean, found {}",
            kind(v)
        )),
    }
}

fn only_fields(obj: &Map<String, Value>, allowed: &[&str], ctx: &str) -> Result<(), String> {
    match obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(format!("unknown field {k:?}{ctx}")),
        None => Ok(()),
    }
}

fn uint(obj: &Map<String, Value>, field: &str, ctx: &str) -> Result<u64, String> {
    match obj.get(field) {
        None => Err(format!("missing field {field:?}{ctx}")),
        Some(v) => v.as_u64().ok_or_else(|| {
            format!(
                "field {field:?}{ctx} must be a non-negative integer, found {}",
                kind(v)
            )
        }),
    }
}

/// A string field that may be `null`; an absent field reads as `null`.
fn string_or_null(
    obj: &Map<String, Value>,
    field: &str,
    ctx: &str,
) -> Result<Option<String>, String> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(v) => Err(format!(
            "field {field:?}{ctx} must be a string or null, found {}",
            kind(v)
        )),
    }
}

fn string(obj: &Map<String, Value>, field: &str, ctx: &str) -> Result<String, String> {
    match obj.get(field) {
        None => Err(format!("missing field {field:?}{ctx}")),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(v) => Err(format!(
            "field {field:?}{ctx} must be a string, found {}",
            kind(v)
        )),
    }
}

/// A short description of a JSON value for error messages.
fn kind(v: &Value) -> String {
    match v {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {s:?}"),
        Value::Array(_) => "an array".to_owned(),
        Value::Object(_) => "an object".to_owned(),
    }
}
