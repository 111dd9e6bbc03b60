//! The Redis protocol (RESP), sans-IO: an incremental, bounded parser for the
//! requests a client sends, and an encoder for replies in RESP2 and RESP3.
//!
//! - [`RequestParser`] takes bytes as they arrive (any split) and yields commands,
//!   each a list of arguments. It accepts multibulk requests (`*2\r\n$3\r\nGET\r\n…`,
//!   what every client library sends) and inline commands (`GET k\r\n`, what a
//!   person types over telnet). Every length is checked against [`Limits`] before
//!   anything is allocated for it, so a hostile peer holds at most
//!   [`Limits::max_request_bytes`] of memory; a malformed request is a
//!   [`ParseError`], after which the stream cannot be trusted and the parser takes
//!   nothing more.
//! - [`Reply`] is a reply; [`Reply::encode`] writes it for the protocol version the
//!   connection speaks (2 until `HELLO 3`).
//!
//! No I/O and no Kompact inside: the gateway in `kvstore` drives it. See
//! `docs/resp.md`.
#![deny(missing_docs)]

use thiserror::Error;

/// Bounds of what one request may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest bulk string (a key or a value).
    pub max_bulk: usize,
    /// Most arguments of one command.
    pub max_args: usize,
    /// Longest inline command line.
    pub max_inline: usize,
    /// Most bytes one request may take in all (arguments and framing).
    pub max_request_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bulk: 1 << 20,
            max_args: 1 << 16,
            max_inline: 64 * 1024,
            max_request_bytes: 8 << 20,
        }
    }
}

/// Why a request stream is not valid RESP. The stream cannot be resynchronised
/// after one: the gateway answers with the error and closes the connection, as
/// Redis does.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ParseError {
    /// `*` followed by something that is not a count within the limit.
    #[error("Protocol error: invalid multibulk length")]
    MultibulkLength,
    /// `$` followed by something that is not a length within the limit.
    #[error("Protocol error: invalid bulk length")]
    BulkLength,
    /// An argument of a multibulk request that is not a bulk string (a nested
    /// array, say).
    #[error("Protocol error: expected '$', got '{0}'")]
    ExpectedBulk(char),
    /// A bulk string not followed by CRLF.
    #[error("Protocol error: bulk string not terminated by CRLF")]
    BulkTerminator,
    /// An inline command line longer than the limit, or a header line that never
    /// ends.
    #[error("Protocol error: too big inline request")]
    LineTooLong,
    /// Quotes that do not close in an inline command.
    #[error("Protocol error: unbalanced quotes in request")]
    UnbalancedQuotes,
    /// The request as a whole is larger than the limit.
    #[error("Protocol error: request larger than {max} bytes")]
    RequestTooLarge {
        /// The limit.
        max: usize,
    },
}

/// One command: its arguments, the name first.
pub type Command = Vec<Vec<u8>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between commands.
    Idle,
    /// In a multibulk request: arguments still expected, and the length of the next
    /// bulk once its header is read.
    Multibulk { left: usize, bulk: Option<usize> },
    /// A parse error was reported; nothing more is taken.
    Failed,
}

/// An incremental request parser. Feed it bytes with [`RequestParser::feed`] and
/// take commands with [`RequestParser::next_command`] until it returns `Ok(None)`.
#[derive(Debug)]
pub struct RequestParser {
    limits: Limits,
    buf: Vec<u8>,
    /// Start of the unparsed input in `buf`.
    pos: usize,
    state: State,
    args: Command,
    /// Bytes of the current request consumed so far.
    request_bytes: usize,
}

impl RequestParser {
    /// A parser enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        RequestParser {
            limits,
            buf: Vec::new(),
            pos: 0,
            state: State::Idle,
            args: Vec::new(),
            request_bytes: 0,
        }
    }

    /// Appends bytes that arrived. After an error they are ignored.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.state == State::Failed {
            return;
        }
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > 64 * 1024 && self.pos * 2 > self.buf.len() {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received and not yet parsed into a command (what a slow or hostile
    /// peer holds in memory). The caller stops reading while it exceeds
    /// [`Limits::max_request_bytes`]; the parser reports the error when it gets there.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos + self.args.iter().map(Vec::len).sum::<usize>()
    }

    /// Whether an error was reported (the connection should be closed).
    pub fn failed(&self) -> bool {
        self.state == State::Failed
    }

    /// The next complete command, `Ok(None)` if more bytes are needed.
    pub fn next_command(&mut self) -> Result<Option<Command>, ParseError> {
        let r = self.parse();
        if r.is_err() {
            self.state = State::Failed;
            self.buf = Vec::new();
            self.pos = 0;
            self.args = Vec::new();
        }
        r
    }

    fn parse(&mut self) -> Result<Option<Command>, ParseError> {
        loop {
            match self.state {
                State::Failed => return Ok(None),
                State::Idle => {
                    let Some(&first) = self.buf.get(self.pos) else {
                        return Ok(None);
                    };
                    self.request_bytes = 0;
                    if first == b'*' {
                        let Some(line) = self.line(self.limits.max_inline)? else {
                            return Ok(None);
                        };
                        let n = parse_len(&line[1..]).ok_or(ParseError::MultibulkLength)?;
                        match n {
                            // `*0` and `*-1` are empty requests: skipped.
                            None | Some(0) => continue,
                            Some(n) if n > self.limits.max_args => {
                                return Err(ParseError::MultibulkLength);
                            }
                            Some(n) => {
                                self.args = Vec::with_capacity(n.min(64));
                                self.state = State::Multibulk {
                                    left: n,
                                    bulk: None,
                                };
                            }
                        }
                    } else {
                        let Some(line) = self.line(self.limits.max_inline)? else {
                            return Ok(None);
                        };
                        let args = split_inline(&line)?;
                        if args.is_empty() {
                            continue; // an empty line, as Redis allows
                        }
                        return Ok(Some(args));
                    }
                }
                State::Multibulk { left, bulk: None } => {
                    let Some(&first) = self.buf.get(self.pos) else {
                        return Ok(None);
                    };
                    if first != b'$' {
                        return Err(ParseError::ExpectedBulk(printable(first)));
                    }
                    // A bulk header is short: `$` and at most 20 digits.
                    let Some(line) = self.line(32)? else {
                        return Ok(None);
                    };
                    let len = match parse_len(&line[1..]) {
                        Some(Some(n)) if n <= self.limits.max_bulk => n,
                        _ => return Err(ParseError::BulkLength),
                    };
                    self.charge(len + 2)?;
                    self.state = State::Multibulk {
                        left,
                        bulk: Some(len),
                    };
                }
                State::Multibulk {
                    left,
                    bulk: Some(len),
                } => {
                    if self.buf.len() - self.pos < len + 2 {
                        return Ok(None);
                    }
                    let body = &self.buf[self.pos..self.pos + len];
                    if &self.buf[self.pos + len..self.pos + len + 2] != b"\r\n" {
                        return Err(ParseError::BulkTerminator);
                    }
                    self.args.push(body.to_vec());
                    self.pos += len + 2;
                    if left == 1 {
                        self.state = State::Idle;
                        return Ok(Some(std::mem::take(&mut self.args)));
                    }
                    self.state = State::Multibulk {
                        left: left - 1,
                        bulk: None,
                    };
                }
            }
        }
    }

    /// Counts `n` more bytes against the request's limit.
    fn charge(&mut self, n: usize) -> Result<(), ParseError> {
        self.request_bytes = self.request_bytes.saturating_add(n);
        if self.request_bytes > self.limits.max_request_bytes {
            return Err(ParseError::RequestTooLarge {
                max: self.limits.max_request_bytes,
            });
        }
        Ok(())
    }

    /// The next line without its terminator (CRLF, or a bare LF as Redis accepts in
    /// inline commands), consumed; `Ok(None)` if it has not ended yet. A line longer
    /// than `max` is an error, whether it ended or not.
    fn line(&mut self, max: usize) -> Result<Option<Vec<u8>>, ParseError> {
        let rest = &self.buf[self.pos..];
        let Some(end) = rest.iter().position(|b| *b == b'\n') else {
            if rest.len() > max {
                return Err(ParseError::LineTooLong);
            }
            return Ok(None);
        };
        if end > max {
            return Err(ParseError::LineTooLong);
        }
        let line_end = if end > 0 && rest[end - 1] == b'\r' {
            end - 1
        } else {
            end
        };
        let line = rest[..line_end].to_vec();
        self.pos += end + 1;
        self.charge(end + 1)?;
        Ok(Some(line))
    }
}

/// A length after `*` or `$`: `Some(None)` for -1, `Some(Some(n))` for n ≥ 0,
/// `None` if it is not a number (or is another negative one).
fn parse_len(digits: &[u8]) -> Option<Option<usize>> {
    if digits == b"-1" {
        return Some(None);
    }
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok().map(Some)
}

fn printable(b: u8) -> char {
    if b.is_ascii_graphic() { b as char } else { '?' }
}

/// Splits an inline command as Redis does: arguments separated by spaces, with
/// double quotes (and their escapes `\n`, `\r`, `\t`, `\\`, `\"`, `\xHH`) and single
/// quotes.
fn split_inline(line: &[u8]) -> Result<Command, ParseError> {
    let mut args = Vec::new();
    let mut i = 0;
    while i < line.len() {
        while i < line.len() && line[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= line.len() {
            break;
        }
        let mut arg = Vec::new();
        match line[i] {
            b'"' => {
                i += 1;
                loop {
                    let Some(&c) = line.get(i) else {
                        return Err(ParseError::UnbalancedQuotes);
                    };
                    i += 1;
                    match c {
                        b'"' => break,
                        b'\\' => {
                            let Some(&e) = line.get(i) else {
                                return Err(ParseError::UnbalancedQuotes);
                            };
                            i += 1;
                            match e {
                                b'n' => arg.push(b'\n'),
                                b'r' => arg.push(b'\r'),
                                b't' => arg.push(b'\t'),
                                b'b' => arg.push(8),
                                b'a' => arg.push(7),
                                b'x' if i + 1 < line.len()
                                    && line[i].is_ascii_hexdigit()
                                    && line[i + 1].is_ascii_hexdigit() =>
                                {
                                    let hex = std::str::from_utf8(&line[i..i + 2])
                                        .expect("hex digits are ASCII");
                                    arg.push(u8::from_str_radix(hex, 16).expect("hex digits"));
                                    i += 2;
                                }
                                other => arg.push(other),
                            }
                        }
                        other => arg.push(other),
                    }
                }
                // A closing quote must end the argument.
                if line.get(i).is_some_and(|c| !c.is_ascii_whitespace()) {
                    return Err(ParseError::UnbalancedQuotes);
                }
            }
            b'\'' => {
                i += 1;
                loop {
                    let Some(&c) = line.get(i) else {
                        return Err(ParseError::UnbalancedQuotes);
                    };
                    i += 1;
                    match c {
                        b'\'' => break,
                        b'\\' if line.get(i) == Some(&b'\'') => {
                            arg.push(b'\'');
                            i += 1;
                        }
                        other => arg.push(other),
                    }
                }
                if line.get(i).is_some_and(|c| !c.is_ascii_whitespace()) {
                    return Err(ParseError::UnbalancedQuotes);
                }
            }
            _ => {
                while i < line.len() && !line[i].is_ascii_whitespace() {
                    arg.push(line[i]);
                    i += 1;
                }
            }
        }
        args.push(arg);
    }
    Ok(args)
}

/// A reply. Types that RESP2 lacks are written as their RESP2 equivalents.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// `+OK`.
    Simple(String),
    /// `-ERR ...`: the whole message, its code first (`ERR`, `WRONGTYPE`, ...).
    Error(String),
    /// `:42`.
    Integer(i64),
    /// `$3\r\nfoo`.
    Bulk(Vec<u8>),
    /// The null value: `$-1` in RESP2, `_` in RESP3.
    Null,
    /// `*N` followed by the elements.
    Array(Vec<Reply>),
    /// A map: `%N` in RESP3, a flat array of keys and values in RESP2.
    Map(Vec<(Reply, Reply)>),
}

impl Reply {
    /// `+OK`.
    pub fn ok() -> Reply {
        Reply::Simple("OK".into())
    }

    /// `-ERR message`.
    pub fn err(message: impl std::fmt::Display) -> Reply {
        Reply::Error(format!("ERR {message}"))
    }

    /// A bulk string from text.
    pub fn text(s: impl Into<String>) -> Reply {
        Reply::Bulk(s.into().into_bytes())
    }

    /// Appends the reply to `out` in RESP `version` (2 or 3).
    pub fn encode(&self, version: u8, out: &mut Vec<u8>) {
        match self {
            Reply::Simple(s) => line(out, b'+', &one_line(s)),
            Reply::Error(s) => line(out, b'-', &one_line(s)),
            Reply::Integer(n) => line(out, b':', &n.to_string()),
            Reply::Bulk(b) => {
                line(out, b'$', &b.len().to_string());
                out.extend_from_slice(b);
                out.extend_from_slice(b"\r\n");
            }
            Reply::Null if version >= 3 => out.extend_from_slice(b"_\r\n"),
            Reply::Null => out.extend_from_slice(b"$-1\r\n"),
            Reply::Array(items) => {
                line(out, b'*', &items.len().to_string());
                for r in items {
                    r.encode(version, out);
                }
            }
            Reply::Map(pairs) => {
                if version >= 3 {
                    line(out, b'%', &pairs.len().to_string());
                } else {
                    line(out, b'*', &(2 * pairs.len()).to_string());
                }
                for (k, v) in pairs {
                    k.encode(version, out);
                    v.encode(version, out);
                }
            }
        }
    }
}

/// A simple string or error may not hold CR or LF.
fn one_line(s: &str) -> String {
    s.replace(['\r', '\n'], " ")
}

fn line(out: &mut Vec<u8>, tag: u8, body: &str) {
    out.push(tag);
    out.extend_from_slice(body.as_bytes());
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(input: &[u8], limits: Limits) -> (Vec<Command>, Option<ParseError>) {
        let mut p = RequestParser::new(limits);
        p.feed(input);
        let mut out = Vec::new();
        loop {
            match p.next_command() {
                Ok(Some(c)) => out.push(c),
                Ok(None) => return (out, None),
                Err(e) => return (out, Some(e)),
            }
        }
    }

    fn args(v: &[&str]) -> Command {
        v.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    #[test]
    fn multibulk_and_inline_commands() {
        let (cmds, err) = parse_all(
            b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\nSET  a \"b c\\n\" 'd'\r\nPING\n\r\n*0\r\n",
            Limits::default(),
        );
        assert_eq!(err, None);
        assert_eq!(
            cmds,
            vec![
                args(&["GET", "k"]),
                args(&["SET", "a", "b c\n", "d"]),
                args(&["PING"])
            ]
        );
    }

    #[test]
    fn binary_safe_bulks() {
        let (cmds, err) = parse_all(
            b"*2\r\n$3\r\nSET\r\n$4\r\n\r\n\0\xff\r\n",
            Limits::default(),
        );
        assert_eq!(err, None);
        assert_eq!(cmds, vec![vec![b"SET".to_vec(), b"\r\n\0\xff".to_vec()]]);
    }

    #[test]
    fn every_split_of_the_input_gives_the_same_commands() {
        let input = b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\nGET key\r\n";
        let (whole, _) = parse_all(input, Limits::default());
        for cut in 0..input.len() {
            let mut p = RequestParser::new(Limits::default());
            let mut got = Vec::new();
            for part in [&input[..cut], &input[cut..]] {
                p.feed(part);
                while let Some(c) = p.next_command().unwrap() {
                    got.push(c);
                }
            }
            assert_eq!(got, whole, "cut at {cut}");
        }
    }

    #[test]
    fn bad_input_is_an_error_before_anything_is_allocated_for_it() {
        let small = Limits {
            max_bulk: 10,
            max_args: 3,
            max_inline: 16,
            max_request_bytes: 40,
        };
        let cases: Vec<(&[u8], ParseError)> = vec![
            (b"*x\r\n", ParseError::MultibulkLength),
            (b"*4\r\n", ParseError::MultibulkLength),
            (b"*-2\r\n", ParseError::MultibulkLength),
            (b"*1\r\n$11\r\n", ParseError::BulkLength),
            (b"*1\r\n$99999999999999999999\r\n", ParseError::BulkLength),
            (b"*1\r\n$-1\r\n", ParseError::BulkLength),
            (b"*1\r\n*1\r\n", ParseError::ExpectedBulk('*')),
            (b"*1\r\n$1\r\nab\r\n", ParseError::BulkTerminator),
            (
                b"GET aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                ParseError::LineTooLong,
            ),
            (b"GET \"abc\r\n", ParseError::UnbalancedQuotes),
            (b"GET \"abc\"d\r\n", ParseError::UnbalancedQuotes),
            (
                b"*3\r\n$10\r\n0123456789\r\n$10\r\n0123456789\r\n$10\r\n",
                ParseError::RequestTooLarge { max: 40 },
            ),
        ];
        for (input, want) in cases {
            let (_, err) = parse_all(input, small);
            assert_eq!(err, Some(want), "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn after_an_error_nothing_more_is_taken() {
        let mut p = RequestParser::new(Limits::default());
        p.feed(b"*1\r\n*1\r\n");
        assert!(p.next_command().is_err());
        assert!(p.failed());
        p.feed(b"PING\r\n");
        assert_eq!(p.next_command(), Ok(None));
        assert_eq!(p.buffered(), 0);
    }

    #[test]
    fn replies_in_both_versions() {
        let r = Reply::Array(vec![
            Reply::ok(),
            Reply::err("unknown command 'x'"),
            Reply::Integer(-3),
            Reply::text("v"),
            Reply::Null,
            Reply::Map(vec![(Reply::text("proto"), Reply::Integer(3))]),
        ]);
        let mut two = Vec::new();
        r.encode(2, &mut two);
        assert_eq!(
            two,
            b"*6\r\n+OK\r\n-ERR unknown command 'x'\r\n:-3\r\n$1\r\nv\r\n$-1\r\n*2\r\n$5\r\nproto\r\n:3\r\n"
        );
        let mut three = Vec::new();
        r.encode(3, &mut three);
        assert_eq!(
            three,
            b"*6\r\n+OK\r\n-ERR unknown command 'x'\r\n:-3\r\n$1\r\nv\r\n_\r\n%1\r\n$5\r\nproto\r\n:3\r\n"
        );
        let mut e = Vec::new();
        Reply::err("two\r\nlines").encode(2, &mut e);
        assert_eq!(e, b"-ERR two  lines\r\n");
    }
}
