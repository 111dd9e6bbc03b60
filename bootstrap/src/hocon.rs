//! The HOCON reader behind node configuration files.
//!
//! It reads the part of HOCON (Lightbend config's `HOCON.md`) that configuration
//! files use, gives every syntax error with its file and line, and returns an error,
//! never a panic, for any input:
//!
//! - a file is an object, with or without the outer braces; fields are separated by
//!   commas or new lines (a trailing comma is fine);
//! - `key = value`, `key : value`, and `key { ... }` without a separator; `key +=
//!   value` appends to a list;
//! - path keys (`a.b.c = 1` is `a { b { c = 1 } }`), quoted key parts (`"a.b" = 1` is
//!   one key);
//! - a key set twice: two objects are merged, anything else is replaced;
//! - values: quoted strings with JSON escapes, `"""` strings (no escapes; extra
//!   quotes before the closing `"""` belong to the string), unquoted strings, numbers,
//!   `true`, `false`, `null`, lists `[ ... ]` and objects `{ ... }`;
//! - value concatenation: `2 seconds` is the string `"2 seconds"` (the whitespace
//!   between the parts is kept), lists next to each other are joined, objects next to
//!   each other are merged;
//! - comments from `#` or `//` to the end of the line;
//! - substitutions `${a.b}` and `${?a.b}`, resolved over the whole document (all
//!   layers merged) once it is read; a path that names nothing is looked up as an
//!   environment variable; `${?x}` that names nothing leaves the field as it was (or
//!   unset); `a = ${a} ...` refers to the value `a` had before;
//! - `include "file"`, `include file("file")` and `include required("file")`,
//!   relative to the including file and merged where the include stands.
//!
//! Where this differs from the specification: a missing included file is an error
//! (the specification ignores it silently, which would leave a node on defaults its
//! operator meant to replace); `url(...)` and `classpath(...)` includes are refused;
//! a key that is later set through a path (`a = ${x}` then `a.b = 1`) replaces a
//! substitution rather than merging with what it resolves to. Nesting, include depth
//! and the work substitutions may do are bounded, so that no input can exhaust the
//! stack or the memory.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// Deepest nesting of objects, lists and path keys.
const MAX_DEPTH: usize = 32;
/// Most times one key may be set again over a substitution (`a = ${?x}` after `a =
/// ...`, `a = ${a} ...`, `a += ...`).
const MAX_CHAIN: u32 = 32;
/// Deepest nesting of substitutions being resolved (a substitution whose value holds
/// a substitution, ...).
const MAX_RESOLVE_DEPTH: usize = 256;
/// Work allowed for resolving substitutions: values produced plus bytes of text
/// joined. Far above any real file, it stops inputs whose substitutions double in
/// size at each step.
const RESOLVE_BUDGET: usize = 4 << 20;
/// Deepest nesting of includes.
const MAX_INCLUDE_DEPTH: usize = 8;

/// A resolved value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number without fraction or exponent that fits in 64 bits.
    Int(i64),
    /// Any other number (`1.5`, `1e6`, `99999999999999999999`).
    Real(f64),
    /// A quoted or unquoted string, or a concatenation.
    String(String),
    /// A list.
    List(Vec<Value>),
    /// An object.
    Object(Object),
}

/// An object: its keys in the order they were first set.
pub type Object = Map<Value>;

/// An ordered map from keys to values (insertion order).
#[derive(Debug, Clone, PartialEq)]
pub struct Map<V> {
    entries: Vec<(String, V)>,
    index: HashMap<String, usize>,
}

impl<V> Default for Map<V> {
    fn default() -> Self {
        Map {
            entries: Vec::new(),
            index: HashMap::new(),
        }
    }
}

impl<V> Map<V> {
    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&V> {
        self.index.get(key).map(|&i| &self.entries[i].1)
    }

    fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        match self.index.get(key) {
            Some(&i) => Some(&mut self.entries[i].1),
            None => None,
        }
    }

    /// Sets `key`, keeping its place if it was set before.
    fn insert(&mut self, key: String, value: V) {
        match self.index.get(&key) {
            Some(&i) => self.entries[i].1 = value,
            None => {
                self.index.insert(key.clone(), self.entries.len());
                self.entries.push((key, value));
            }
        }
    }

    /// The value of `key`, taking the map apart.
    fn into_value(mut self, key: &str) -> Option<V> {
        let i = *self.index.get(key)?;
        Some(self.entries.swap_remove(i).1)
    }

    /// The entries in order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &V)> {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Why a document was rejected. Every variant names the file (`origin`) and line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The text is not valid HOCON, or its substitutions cannot be resolved into a
    /// value (a cycle, a list joined with a string, too much work).
    Syntax {
        /// The file the problem is in.
        origin: String,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// An included file is missing or unreadable.
    Include {
        /// The including file.
        origin: String,
        /// Line of the `include`.
        line: usize,
        /// The included path as written.
        path: String,
    },
    /// An `include` in text that was not read from a file (nothing to resolve it
    /// against).
    IncludeFromText {
        /// The text's name.
        origin: String,
        /// Line of the `include`.
        line: usize,
    },
    /// A `${...}` that refers to nothing (no key, no environment variable).
    Unresolved {
        /// The file the substitution is in.
        origin: String,
        /// Its line.
        line: usize,
        /// Full path of the key whose value holds it.
        key: String,
        /// The path it names.
        name: String,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Syntax {
                origin,
                line,
                message,
            } => write!(f, "{origin}: line {line}: {message}"),
            Error::Include { origin, line, path } => {
                write!(f, "{origin}: line {line}: cannot include {path:?}")
            }
            Error::IncludeFromText { origin, line } => write!(
                f,
                "{origin}: line {line}: `include` needs a file to be relative to"
            ),
            Error::Unresolved {
                origin,
                line,
                key,
                name,
            } => write!(
                f,
                "{origin}: line {line}: {key}: substitution ${{{name}}} is not defined"
            ),
        }
    }
}

impl std::error::Error for Error {}

/// One document to read: later sources override earlier ones.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    /// The HOCON text.
    pub text: &'a str,
    /// Its name in errors (normally the file name as given).
    pub origin: &'a str,
    /// The directory includes are relative to; `None` refuses includes.
    pub dir: Option<&'a Path>,
}

/// Reads `sources` in order, each over the ones before it, and resolves the
/// substitutions of the merged document. `env` looks up environment variables for
/// substitutions that name no key.
pub fn load(sources: &[Source<'_>], env: &dyn Fn(&str) -> Option<String>) -> Result<Object, Error> {
    let mut files = Vec::new();
    let mut root = Map::default();
    for source in sources {
        let file = files.len();
        files.push(source.origin.to_string());
        let dir = source.dir.map(Path::to_path_buf);
        let mut parser = Parser::new(source.text, file, dir, 0, &mut files);
        parser.document(&mut root, &[], 0)?;
    }
    let mut resolver = Resolver {
        root: &root,
        files: &files,
        env,
        stack: Vec::new(),
        depth: 0,
        lookups: 0,
        budget: RESOLVE_BUDGET,
        at: Pos { file: 0, line: 1 },
    };
    resolver.object(&root, &mut Vec::new())
}

/// Reads one text (no includes) with the process environment for substitutions.
pub fn parse(text: &str, origin: &str) -> Result<Object, Error> {
    load(
        &[Source {
            text,
            origin,
            dir: None,
        }],
        &|name| std::env::var(name).ok(),
    )
}

// ---------------------------------------------------------------------------------
// The document before substitutions are resolved

#[derive(Debug, Clone, Copy)]
struct Pos {
    file: usize,
    line: usize,
}

#[derive(Debug)]
enum Raw {
    /// A scalar, already final.
    Value(Value),
    Object(Map<Raw>),
    List(Vec<Raw>),
    Subst(Subst),
    /// Parts of which at least one is a substitution.
    Concat {
        parts: Vec<Part>,
        at: Pos,
    },
    /// A value set over an earlier one that still matters: the earlier one is kept
    /// when `new` is an undefined `${?x}`, and merged under `new` when both are
    /// objects.
    Over {
        old: Rc<Raw>,
        new: Box<Raw>,
        chain: u32,
    },
}

#[derive(Debug)]
enum Part {
    Ws(String),
    Scalar { value: Value, text: String },
    Object(Map<Raw>),
    List(Vec<Raw>),
    Subst(Subst),
}

#[derive(Debug)]
struct Subst {
    path: Vec<String>,
    optional: bool,
    at: Pos,
    /// For `a = ${a} ...`: the value `a` had before.
    prev: Option<Rc<Raw>>,
    chain: u32,
}

/// How many times a value was set over an earlier one it still refers to.
fn chain(raw: &Raw) -> u32 {
    match raw {
        Raw::Over { chain, .. } => *chain,
        Raw::Subst(s) => s.chain,
        Raw::Concat { parts, .. } => parts
            .iter()
            .map(|p| match p {
                Part::Subst(s) => s.chain,
                _ => 0,
            })
            .max()
            .unwrap_or(0),
        _ => 0,
    }
}

fn is_substitution(raw: &Raw) -> bool {
    matches!(raw, Raw::Subst(_) | Raw::Concat { .. } | Raw::Over { .. })
}

// ---------------------------------------------------------------------------------
// Parser

struct Parser<'t, 'f> {
    text: &'t str,
    pos: usize,
    line: usize,
    file: usize,
    dir: Option<PathBuf>,
    include_depth: usize,
    files: &'f mut Vec<String>,
}

type Res<T> = Result<T, Error>;

fn is_space(c: char) -> bool {
    c != '\n' && (c.is_whitespace() || c == '\u{feff}')
}

fn is_forbidden(c: char) -> bool {
    matches!(
        c,
        '$' | '"'
            | '{'
            | '}'
            | '['
            | ']'
            | ':'
            | '='
            | ','
            | '+'
            | '#'
            | '`'
            | '^'
            | '?'
            | '!'
            | '@'
            | '*'
            | '&'
            | '\\'
    )
}

/// Text for a message: control characters escaped.
fn shown(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out
}

fn path_text(path: &[String]) -> String {
    path.iter()
        .map(|p| {
            if p.is_empty() || p.contains(|c: char| c == '.' || is_forbidden(c) || is_space(c)) {
                format!("{p:?}")
            } else {
                p.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// A number as HOCON writes it: `-?digits(.digits)?([eE][+-]?digits)?`.
fn number(text: &str) -> Option<Value> {
    let b = text.as_bytes();
    let mut i = 0;
    if b.first() == Some(&b'-') {
        i += 1;
    }
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i > start
    };
    if !digits(&mut i) {
        return None;
    }
    let mut integral = true;
    if i < b.len() && b[i] == b'.' {
        i += 1;
        integral = false;
        if !digits(&mut i) {
            return None;
        }
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        integral = false;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        if !digits(&mut i) {
            return None;
        }
    }
    if i != b.len() {
        return None;
    }
    if integral && let Ok(n) = text.parse::<i64>() {
        return Some(Value::Int(n));
    }
    text.parse::<f64>().ok().map(Value::Real)
}

impl<'t, 'f> Parser<'t, 'f> {
    fn new(
        text: &'t str,
        file: usize,
        dir: Option<PathBuf>,
        include_depth: usize,
        files: &'f mut Vec<String>,
    ) -> Self {
        Parser {
            text,
            pos: 0,
            line: 1,
            file,
            dir,
            include_depth,
            files,
        }
    }

    fn at(&self) -> Pos {
        Pos {
            file: self.file,
            line: self.line,
        }
    }

    fn error(&self, line: usize, message: impl Into<String>) -> Error {
        Error::Syntax {
            origin: self.files[self.file].clone(),
            line,
            message: message.into(),
        }
    }

    fn rest(&self) -> &'t str {
        &self.text[self.pos..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn starts_with(&self, s: &str) -> bool {
        self.rest().starts_with(s)
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        if c == '\n' {
            self.line += 1;
        }
        Some(c)
    }

    fn at_comment(&self) -> bool {
        self.starts_with("#") || self.starts_with("//")
    }

    /// Skips spaces and a comment, up to (not over) the end of the line.
    fn skip_spaces(&mut self) {
        loop {
            match self.peek() {
                Some(c) if is_space(c) => {
                    self.bump();
                }
                Some(_) if self.at_comment() => {
                    // To the end of the line (no line feed is passed, so the line
                    // count stays).
                    self.pos = self
                        .rest()
                        .find('\n')
                        .map_or(self.text.len(), |i| self.pos + i);
                }
                _ => return,
            }
        }
    }

    /// Skips spaces, comments and new lines.
    fn skip_blank(&mut self) {
        loop {
            self.skip_spaces();
            if self.peek() == Some('\n') {
                self.bump();
            } else {
                return;
            }
        }
    }

    /// A whole file: an object with or without its braces.
    fn document(&mut self, obj: &mut Map<Raw>, base: &[String], depth: usize) -> Res<()> {
        self.skip_blank();
        if self.peek() == Some('{') {
            let open = self.line;
            self.bump();
            self.body(obj, base, depth, Some(open))?;
            self.skip_blank();
            match self.peek() {
                None => Ok(()),
                Some('}') => Err(self.error(self.line, "'}' closes nothing")),
                Some(c) => Err(self.error(
                    self.line,
                    format!(
                        "{:?} after the '}}' that closes the file's object",
                        shown(&c.to_string())
                    ),
                )),
            }
        } else {
            self.body(obj, base, depth, None)
        }
    }

    /// The fields of an object up to its `}` (`open` is the line of its `{`), or to
    /// the end of the text for a file without braces.
    fn body(
        &mut self,
        obj: &mut Map<Raw>,
        base: &[String],
        depth: usize,
        open: Option<usize>,
    ) -> Res<()> {
        loop {
            self.skip_blank();
            match self.peek() {
                None => {
                    return match open {
                        Some(l) => Err(self.error(l, "the '{' opened here is never closed")),
                        None => Ok(()),
                    };
                }
                Some('}') => {
                    return match open {
                        Some(_) => {
                            self.bump();
                            Ok(())
                        }
                        None => Err(self.error(self.line, "'}' closes nothing")),
                    };
                }
                Some(']') => {
                    return Err(match open {
                        Some(l) => self.error(
                            self.line,
                            format!("']' does not close the '{{' opened on line {l}"),
                        ),
                        None => self.error(self.line, "']' closes nothing"),
                    });
                }
                Some(',') => return Err(self.error(self.line, "',' where a key belongs")),
                Some(_) => {}
            }
            let key = self.field(obj, base, depth)?;
            self.skip_spaces();
            match self.peek() {
                Some(',') | Some('\n') => {
                    self.bump();
                }
                None | Some('}') | Some(']') => {}
                Some(c) => {
                    return Err(self.error(
                        self.line,
                        format!(
                            "{:?} after the value of {key}; put fields on their own \
                             lines or separate them with ','",
                            shown(&c.to_string())
                        ),
                    ));
                }
            }
        }
    }

    /// One field or include; returns the key as written, for messages.
    fn field(&mut self, obj: &mut Map<Raw>, base: &[String], depth: usize) -> Res<String> {
        let line = self.line;
        if self.starts_with("include") {
            let after = &self.rest()["include".len()..];
            if after.starts_with(|c: char| is_space(c) || c == '"') {
                let next = after.trim_start_matches(is_space);
                if next.starts_with('"')
                    || ["required(", "file(", "url(", "classpath("]
                        .iter()
                        .any(|p| next.starts_with(p))
                {
                    self.include(obj, base, depth)?;
                    return Ok("include".into());
                }
            }
        }
        let (key, written) = self.key(&['=', ':', '{', '+'])?;
        if key.is_empty() {
            let found = self
                .peek()
                .map_or("the end".into(), |c| format!("{:?}", shown(&c.to_string())));
            return Err(self.error(line, format!("expected a key, found {found}")));
        }
        if depth + key.len() > MAX_DEPTH {
            return Err(self.error(
                line,
                format!("{written}: nested more than {MAX_DEPTH} levels deep"),
            ));
        }
        self.skip_spaces();
        let append = self.starts_with("+=");
        let no_value = || format!("{written} has no value");
        match self.peek() {
            Some('=') | Some(':') => {
                self.bump();
            }
            Some('+') if append => {
                self.pos += 2;
            }
            Some('{') => {}
            None | Some('\n') | Some(',') | Some('}') | Some(']') => {
                return Err(self.error(line, no_value()));
            }
            Some(c) => {
                return Err(self.error(
                    self.line,
                    format!(
                        "expected '=', ':' or '{{' after {written}, found {:?}",
                        shown(&c.to_string())
                    ),
                ));
            }
        }
        self.skip_spaces();
        if matches!(self.peek(), None | Some('\n' | ',' | '}' | ']')) {
            return Err(self.error(line, no_value()));
        }
        let mut path: Vec<String> = base.to_vec();
        path.extend(key.iter().cloned());
        let mut value = self.value(&path, depth + key.len(), &written)?;
        if append {
            // `a += x` is `a = ${?a} [x]`.
            let at = Pos {
                file: self.file,
                line,
            };
            value = Raw::Concat {
                parts: vec![
                    Part::Subst(Subst {
                        path: path.clone(),
                        optional: true,
                        at,
                        prev: None,
                        chain: 0,
                    }),
                    Part::List(vec![value]),
                ],
                at,
            };
        }
        self.assign(obj, base, &key, value, line)?;
        Ok(written)
    }

    /// A key (or substitution path): unquoted parts split at '.', quoted parts kept
    /// whole, spaces between parts kept. Stops before any of `stop`, a new line or a
    /// comment. Returns the path and the key as written.
    fn key(&mut self, stop: &[char]) -> Res<(Vec<String>, String)> {
        let start = self.pos;
        let line = self.line;
        let mut path = Vec::new();
        let mut current = String::new();
        let mut part_started = false;
        loop {
            match self.peek() {
                Some('"') => {
                    if self.starts_with("\"\"\"") {
                        return Err(self.error(self.line, "a key cannot be a \"\"\" string"));
                    }
                    current.push_str(&self.quoted()?);
                    part_started = true;
                }
                Some(c) if is_space(c) => {
                    let ws_start = self.pos;
                    while self.peek().is_some_and(is_space) {
                        self.bump();
                    }
                    let more = match self.peek() {
                        Some('"') => true,
                        Some(c) => !is_forbidden(c) && c != '\n' && !self.at_comment(),
                        None => false,
                    };
                    if more && (part_started || !path.is_empty()) {
                        current.push_str(&self.text[ws_start..self.pos]);
                    } else {
                        break;
                    }
                }
                Some('.') => {
                    if !part_started {
                        return Err(self.error(
                            line,
                            format!(
                                "{}: empty key part (two dots, or a dot at the start)",
                                shown(self.text[start..self.pos + 1].trim())
                            ),
                        ));
                    }
                    self.bump();
                    path.push(std::mem::take(&mut current));
                    part_started = false;
                }
                Some(c)
                    if !is_forbidden(c)
                        && c != '\n'
                        && !self.at_comment()
                        && !stop.contains(&c) =>
                {
                    current.push(c);
                    self.bump();
                    part_started = true;
                }
                _ => break,
            }
        }
        let written = shown(self.text[start..self.pos].trim_end_matches(is_space));
        if part_started {
            path.push(current);
        } else if !path.is_empty() {
            return Err(self.error(line, format!("{written}: a key cannot end with '.'")));
        }
        Ok((path, written))
    }

    /// A `"..."` string with JSON escapes.
    fn quoted(&mut self) -> Res<String> {
        let line = self.line;
        self.bump();
        let mut out = String::new();
        loop {
            match self.bump() {
                None | Some('\n') => return Err(self.error(line, "the string is never closed")),
                Some('"') => return Ok(out),
                Some('\\') => {
                    let esc_line = self.line;
                    let c = match self.bump() {
                        Some('"') => '"',
                        Some('\\') => '\\',
                        Some('/') => '/',
                        Some('b') => '\u{8}',
                        Some('f') => '\u{c}',
                        Some('n') => '\n',
                        Some('r') => '\r',
                        Some('t') => '\t',
                        Some('u') => self.unicode_escape(esc_line)?,
                        None | Some('\n') => {
                            return Err(self.error(line, "the string is never closed"));
                        }
                        Some(c) => {
                            return Err(self.error(
                                esc_line,
                                format!(
                                    "\\{} is not an escape (use \\\\ for a backslash)",
                                    shown(&c.to_string())
                                ),
                            ));
                        }
                    };
                    out.push(c);
                }
                Some(c) => out.push(c),
            }
        }
    }

    fn hex4(&mut self, line: usize) -> Res<u32> {
        let digits = self
            .rest()
            .get(..4)
            .filter(|d| d.chars().all(|c| c.is_ascii_hexdigit()));
        match digits.and_then(|d| u32::from_str_radix(d, 16).ok()) {
            Some(n) => {
                self.pos += 4;
                Ok(n)
            }
            None => Err(self.error(line, "\\u must be followed by four hex digits")),
        }
    }

    fn unicode_escape(&mut self, line: usize) -> Res<char> {
        let hi = self.hex4(line)?;
        let code = if (0xD800..0xDC00).contains(&hi) && self.starts_with("\\u") {
            self.pos += 2;
            let lo = self.hex4(line)?;
            if (0xDC00..0xE000).contains(&lo) {
                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
            } else {
                return Err(self.error(line, "\\u escape: unpaired surrogate"));
            }
        } else {
            hi
        };
        char::from_u32(code).ok_or_else(|| self.error(line, "\\u escape: unpaired surrogate"))
    }

    /// A `"""..."""` string.
    fn triple(&mut self) -> Res<String> {
        let line = self.line;
        self.pos += 3;
        let mut out = String::new();
        loop {
            if self.starts_with("\"\"\"") {
                let quotes = self.rest().len() - self.rest().trim_start_matches('"').len();
                out.extend(std::iter::repeat_n('"', quotes - 3));
                self.pos += quotes;
                return Ok(out);
            }
            match self.bump() {
                Some(c) => out.push(c),
                None => return Err(self.error(line, "the \"\"\" string is never closed")),
            }
        }
    }

    /// A value: one or more parts on the same line (a concatenation).
    fn value(&mut self, path: &[String], depth: usize, key: &str) -> Res<Raw> {
        let at = self.at();
        let value_start = self.pos;
        let mut parts: Vec<Part> = Vec::new();
        loop {
            let ws_start = self.pos;
            while self.peek().is_some_and(is_space) {
                self.bump();
            }
            let ws = &self.text[ws_start..self.pos];
            let Some(c) = self.peek() else { break };
            if matches!(c, '\n' | ',' | '}' | ']') || self.at_comment() {
                break;
            }
            if !parts.is_empty() && !ws.is_empty() {
                parts.push(Part::Ws(ws.to_string()));
            }
            let part = match c {
                '"' if self.starts_with("\"\"\"") => {
                    let s = self.triple()?;
                    Part::Scalar {
                        text: s.clone(),
                        value: Value::String(s),
                    }
                }
                '"' => {
                    let s = self.quoted()?;
                    Part::Scalar {
                        text: s.clone(),
                        value: Value::String(s),
                    }
                }
                '{' => {
                    if depth >= MAX_DEPTH {
                        return Err(self.error(
                            self.line,
                            format!("{key}: nested more than {MAX_DEPTH} levels deep"),
                        ));
                    }
                    let open = self.line;
                    self.bump();
                    let mut obj = Map::default();
                    self.body(&mut obj, path, depth + 1, Some(open))?;
                    Part::Object(obj)
                }
                '[' => Part::List(self.list(path, depth, key)?),
                '$' if self.starts_with("${") => Part::Subst(self.substitution()?),
                c if is_forbidden(c) => {
                    let line_end = self
                        .rest()
                        .find('\n')
                        .map_or(self.text.len(), |i| self.pos + i);
                    let mut written = &self.text[value_start..line_end];
                    if let Some(i) = written.find(" #").or_else(|| written.find(" //")) {
                        written = &written[..i];
                    }
                    let written = shown(
                        written
                            .trim()
                            .trim_end_matches(',')
                            .trim_end()
                            .trim_end_matches('}')
                            .trim(),
                    );
                    return Err(self.error(
                        self.line,
                        format!(
                            "unquoted value {written} contains {:?} (write it in quotes: \"{written}\")",
                            c
                        ),
                    ));
                }
                _ => {
                    let start = self.pos;
                    while self
                        .peek()
                        .is_some_and(|c| !is_forbidden(c) && !is_space(c) && c != '\n')
                        && !self.starts_with("//")
                    {
                        self.bump();
                    }
                    let text = &self.text[start..self.pos];
                    let value = match text {
                        "true" => Value::Bool(true),
                        "false" => Value::Bool(false),
                        "null" => Value::Null,
                        _ => number(text).unwrap_or_else(|| Value::String(text.to_string())),
                    };
                    Part::Scalar {
                        value,
                        text: text.to_string(),
                    }
                }
            };
            parts.push(part);
        }
        self.fold(parts, at, path, key)
    }

    /// A value from its parts: concatenations without substitutions are done here.
    fn fold(&mut self, mut parts: Vec<Part>, at: Pos, path: &[String], key: &str) -> Res<Raw> {
        if parts.iter().any(|p| matches!(p, Part::Subst(_))) {
            if parts.len() == 1
                && let Some(Part::Subst(s)) = parts.pop()
            {
                return Ok(Raw::Subst(s));
            }
            return Ok(Raw::Concat { parts, at });
        }
        if parts.len() == 1 {
            return Ok(match parts.pop() {
                Some(Part::Scalar { value, .. }) => Raw::Value(value),
                Some(Part::Object(o)) => Raw::Object(o),
                Some(Part::List(l)) => Raw::List(l),
                _ => Raw::Value(Value::String(String::new())),
            });
        }
        let solid = parts.iter().filter(|p| !matches!(p, Part::Ws(_)));
        let (mut lists, mut objects, mut scalars) = (0, 0, 0);
        for p in solid {
            match p {
                Part::List(_) => lists += 1,
                Part::Object(_) => objects += 1,
                _ => scalars += 1,
            }
        }
        if lists > 0 && objects == 0 && scalars == 0 {
            let mut out = Vec::new();
            for p in parts {
                if let Part::List(l) = p {
                    out.extend(l);
                }
            }
            Ok(Raw::List(out))
        } else if objects > 0 && lists == 0 && scalars == 0 {
            let mut out = Map::default();
            for p in parts {
                if let Part::Object(o) = p {
                    for (k, v) in o.entries {
                        self.set(&mut out, path, k, v, at.line)?;
                    }
                }
            }
            Ok(Raw::Object(out))
        } else if lists == 0 && objects == 0 {
            let mut s = String::new();
            for p in parts {
                match p {
                    Part::Ws(w) => s.push_str(&w),
                    Part::Scalar { text, .. } => s.push_str(&text),
                    _ => {}
                }
            }
            Ok(Raw::Value(Value::String(s)))
        } else {
            Err(self.error(
                at.line,
                format!("{key}: {}", mixed_message(lists > 0, objects > 0)),
            ))
        }
    }

    fn list(&mut self, path: &[String], depth: usize, key: &str) -> Res<Vec<Raw>> {
        if depth >= MAX_DEPTH {
            return Err(self.error(
                self.line,
                format!("{key}: nested more than {MAX_DEPTH} levels deep"),
            ));
        }
        let open = self.line;
        self.bump();
        let mut items = Vec::new();
        loop {
            self.skip_blank();
            match self.peek() {
                None => return Err(self.error(open, "the '[' opened here is never closed")),
                Some(']') => {
                    self.bump();
                    return Ok(items);
                }
                Some('}') => {
                    return Err(self.error(
                        self.line,
                        format!("'}}' does not close the '[' opened on line {open}"),
                    ));
                }
                Some(',') => {
                    return Err(self.error(self.line, format!("{key}: ',' where a value belongs")));
                }
                Some(_) => {}
            }
            items.push(self.value(path, depth + 1, key)?);
            self.skip_spaces();
            match self.peek() {
                Some(',') | Some('\n') => {
                    self.bump();
                }
                _ => {}
            }
        }
    }

    /// `${path}` or `${?path}`.
    fn substitution(&mut self) -> Res<Subst> {
        let at = self.at();
        self.pos += 2;
        let optional = self.peek() == Some('?');
        if optional {
            self.bump();
        }
        while self.peek().is_some_and(is_space) {
            self.bump();
        }
        let (path, written) = self.key(&['}'])?;
        while self.peek().is_some_and(is_space) {
            self.bump();
        }
        if self.peek() != Some('}') {
            return Err(self.error(at.line, "a substitution ${...} is not closed by '}'"));
        }
        self.bump();
        if path.is_empty() {
            return Err(self.error(at.line, "an empty substitution ${}"));
        }
        let _ = written;
        Ok(Subst {
            path,
            optional,
            at,
            prev: None,
            chain: 0,
        })
    }

    /// `include "file"`, `include file("file")`, `include required(...)`.
    fn include(&mut self, obj: &mut Map<Raw>, base: &[String], depth: usize) -> Res<()> {
        let line = self.line;
        self.pos += "include".len();
        while self.peek().is_some_and(is_space) {
            self.bump();
        }
        let mut closing = 0;
        for wrapper in ["required(", "file("] {
            if self.starts_with(wrapper) {
                self.pos += wrapper.len();
                closing += 1;
            }
        }
        if self.starts_with("url(") || self.starts_with("classpath(") {
            return Err(self.error(line, "only files can be included (not url or classpath)"));
        }
        if self.peek() != Some('"') || self.starts_with("\"\"\"") {
            return Err(self.error(line, "include takes a file name in quotes"));
        }
        let name = self.quoted()?;
        for _ in 0..closing {
            if self.peek() != Some(')') {
                return Err(self.error(line, "include: ')' missing"));
            }
            self.bump();
        }
        let origin = self.files[self.file].clone();
        let Some(dir) = self.dir.clone() else {
            return Err(Error::IncludeFromText { origin, line });
        };
        if self.include_depth >= MAX_INCLUDE_DEPTH {
            return Err(self.error(
                line,
                format!("includes nested more than {MAX_INCLUDE_DEPTH} deep (does a file include itself?)"),
            ));
        }
        let path = dir.join(&name);
        let text = std::fs::read_to_string(&path).map_err(|_| Error::Include {
            origin,
            line,
            path: name.clone(),
        })?;
        let file = self.files.len();
        self.files.push(path.display().to_string());
        let sub_dir = path.parent().map(Path::to_path_buf);
        let mut sub = Parser::new(&text, file, sub_dir, self.include_depth + 1, self.files);
        sub.document(obj, base, depth)
    }

    /// Sets `key` (a path below `base`) in `obj`.
    fn assign(
        &mut self,
        obj: &mut Map<Raw>,
        base: &[String],
        key: &[String],
        value: Raw,
        line: usize,
    ) -> Res<()> {
        let Some((first, rest)) = key.split_first() else {
            return Ok(());
        };
        if rest.is_empty() {
            return self.set(obj, base, first.clone(), value, line);
        }
        if !matches!(obj.get(first), Some(Raw::Object(_))) {
            obj.insert(first.clone(), Raw::Object(Map::default()));
        }
        let mut path = base.to_vec();
        path.push(first.clone());
        match obj.get_mut(first) {
            Some(Raw::Object(inner)) => self.assign(inner, &path, rest, value, line),
            _ => Ok(()),
        }
    }

    /// Sets `key` of `obj` (whose path is `base`) to `new`: objects merge into
    /// objects, anything else replaces, keeping the old value where `new` refers to it.
    fn set(
        &mut self,
        obj: &mut Map<Raw>,
        base: &[String],
        key: String,
        mut new: Raw,
        line: usize,
    ) -> Res<()> {
        let mut path = base.to_vec();
        path.push(key.clone());
        let Some(slot) = obj.get_mut(&key) else {
            obj.insert(key, new);
            return Ok(());
        };
        if let (Raw::Object(old), Raw::Object(_)) = (&mut *slot, &new) {
            let Raw::Object(fields) = new else {
                return Ok(());
            };
            for (k, v) in fields.entries {
                self.set(old, &path, k, v, line)?;
            }
            return Ok(());
        }
        let old = Rc::new(std::mem::replace(slot, Raw::Value(Value::Null)));
        let depth = chain(&old) + 1;
        if depth > MAX_CHAIN {
            return Err(self.error(
                line,
                format!(
                    "{}: set over a substitution more than {MAX_CHAIN} times",
                    path_text(&path)
                ),
            ));
        }
        let referred = refer_back(&mut new, &path, &old, depth);
        let keep_old = !referred
            && (matches!(&new, Raw::Subst(s) if s.optional)
                || (matches!(*old, Raw::Object(_)) && is_substitution(&new)));
        *slot = if keep_old {
            Raw::Over {
                old,
                new: Box::new(new),
                chain: depth,
            }
        } else {
            new
        };
        Ok(())
    }
}

fn mixed_message(lists: bool, objects: bool) -> &'static str {
    match (lists, objects) {
        (true, true) => "a list and a section cannot be joined into one value",
        (true, false) => "a list and text cannot be joined into one value (quote the text)",
        _ => "a section and text cannot be joined into one value (quote the text)",
    }
}

/// Points the substitutions of `new` that name `path` itself (`a = ${a} ...`) at the
/// value `path` had before. Returns whether there was one.
fn refer_back(new: &mut Raw, path: &[String], old: &Rc<Raw>, depth: u32) -> bool {
    let mut found = false;
    let mut visit = |s: &mut Subst| {
        if s.prev.is_none() && s.path == path {
            s.prev = Some(old.clone());
            s.chain = depth;
            found = true;
        }
    };
    match new {
        Raw::Subst(s) => visit(s),
        Raw::Concat { parts, .. } => {
            for p in parts {
                if let Part::Subst(s) = p {
                    visit(s);
                }
            }
        }
        _ => {}
    }
    found
}

// ---------------------------------------------------------------------------------
// Resolver

struct Resolver<'a> {
    root: &'a Map<Raw>,
    files: &'a [String],
    env: &'a dyn Fn(&str) -> Option<String>,
    /// Paths being resolved, to find cycles.
    stack: Vec<Vec<String>>,
    /// Nesting of `resolve` calls.
    depth: usize,
    /// Nesting of substitution lookups; work is counted against the budget only
    /// inside one (the document itself is resolved in time linear in its size).
    lookups: usize,
    budget: usize,
    /// The substitution or concatenation being resolved, for messages.
    at: Pos,
}

impl Resolver<'_> {
    fn error(&self, at: Pos, message: String) -> Error {
        Error::Syntax {
            origin: self.files.get(at.file).cloned().unwrap_or_default(),
            line: at.line,
            message,
        }
    }

    fn charge(&mut self, units: usize, path: &[String]) -> Res<()> {
        if self.lookups == 0 {
            return Ok(());
        }
        match self.budget.checked_sub(units) {
            Some(left) => {
                self.budget = left;
                Ok(())
            }
            None => Err(self.error(
                self.at,
                format!(
                    "{}: substitutions expand too far (more than {RESOLVE_BUDGET} values \
                     and bytes)",
                    path_text(path)
                ),
            )),
        }
    }

    fn object(&mut self, obj: &Map<Raw>, path: &mut Vec<String>) -> Res<Object> {
        let mut out = Map::default();
        for (k, raw) in &obj.entries {
            path.push(k.clone());
            self.stack.push(path.clone());
            let v = self.resolve(raw, path);
            self.stack.pop();
            path.pop();
            if let Some(v) = v? {
                out.insert(k.clone(), v);
            }
        }
        Ok(out)
    }

    /// The value of `raw`, found at `path`; `None` for an undefined `${?x}`.
    fn resolve(&mut self, raw: &Raw, path: &[String]) -> Res<Option<Value>> {
        if self.depth >= MAX_RESOLVE_DEPTH {
            return Err(self.error(
                self.at,
                format!(
                    "{}: substitutions nested more than {MAX_RESOLVE_DEPTH} deep",
                    path_text(path)
                ),
            ));
        }
        self.charge(1, path)?;
        self.depth += 1;
        let out = self.resolve_inner(raw, path);
        self.depth -= 1;
        out
    }

    fn resolve_inner(&mut self, raw: &Raw, path: &[String]) -> Res<Option<Value>> {
        Ok(match raw {
            Raw::Value(v) => {
                if let Value::String(s) = v {
                    self.charge(s.len(), path)?;
                }
                Some(v.clone())
            }
            Raw::Object(o) => Some(Value::Object(self.object(o, &mut path.to_vec())?)),
            Raw::List(items) => Some(Value::List(self.list(items, path)?)),
            Raw::Subst(s) => self.substitution(s, path)?,
            Raw::Concat { parts, at } => self.concat(parts, *at, path)?,
            Raw::Over { old, new, .. } => match self.resolve(new, path)? {
                None => self.resolve(old, path)?,
                Some(Value::Object(top)) => match self.resolve(old, path)? {
                    Some(Value::Object(mut below)) => {
                        merge(&mut below, top);
                        Some(Value::Object(below))
                    }
                    _ => Some(Value::Object(top)),
                },
                Some(v) => Some(v),
            },
        })
    }

    fn list(&mut self, items: &[Raw], path: &[String]) -> Res<Vec<Value>> {
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            if let Some(v) = self.resolve(item, path)? {
                out.push(v);
            }
        }
        Ok(out)
    }

    /// The value of `${...}` in the value of the key at `path`.
    fn substitution(&mut self, s: &Subst, path: &[String]) -> Res<Option<Value>> {
        self.at = s.at;
        let found = match &s.prev {
            Some(old) => {
                // Shared by every `${a}` in the new value: counted like a lookup.
                self.lookups += 1;
                let v = self.resolve(old, path);
                self.lookups -= 1;
                v?
            }
            // `a = ${a}` with nothing before: no value of its own to refer to.
            None if s.path == path => None,
            None => self.lookup(s)?,
        };
        if found.is_some() {
            return Ok(found);
        }
        if let Some(v) = (self.env)(&s.path.join(".")) {
            return Ok(Some(Value::String(v)));
        }
        if s.optional {
            return Ok(None);
        }
        Err(Error::Unresolved {
            origin: self.files.get(s.at.file).cloned().unwrap_or_default(),
            line: s.at.line,
            key: path_text(path),
            name: path_text(&s.path),
        })
    }

    /// The value at `s.path` in the merged document.
    fn lookup(&mut self, s: &Subst) -> Res<Option<Value>> {
        let Some((first, rest)) = s.path.split_first() else {
            return Ok(None);
        };
        let Some(mut raw) = self.root.get(first) else {
            return Ok(None);
        };
        for (i, seg) in rest.iter().enumerate() {
            match raw {
                Raw::Object(o) => match o.get(seg) {
                    Some(child) => raw = child,
                    None => return Ok(None),
                },
                Raw::Subst(_) | Raw::Concat { .. } | Raw::Over { .. } => {
                    // The path goes through a value that is itself a substitution:
                    // resolve that, then look in the result.
                    let mut v = self.resolve_at(raw, &s.path[..=i], s)?;
                    for seg in &rest[i..] {
                        v = match v {
                            Some(Value::Object(o)) => o.into_value(seg),
                            _ => return Ok(None),
                        };
                    }
                    return Ok(v);
                }
                Raw::Value(_) | Raw::List(_) => return Ok(None),
            }
        }
        self.resolve_at(raw, &s.path, s)
    }

    /// Resolves `raw`, the value at `path`, for substitution `s`, unless that is a
    /// cycle.
    fn resolve_at(&mut self, raw: &Raw, path: &[String], s: &Subst) -> Res<Option<Value>> {
        if self.stack.iter().any(|p| p.as_slice() == path) {
            return Err(self.error(
                s.at,
                format!(
                    "substitution ${{{}}} refers back to itself (a cycle)",
                    path_text(&s.path)
                ),
            ));
        }
        self.stack.push(path.to_vec());
        self.lookups += 1;
        let v = self.resolve(raw, path);
        self.lookups -= 1;
        self.stack.pop();
        self.at = s.at;
        v
    }

    fn concat(&mut self, parts: &[Part], at: Pos, path: &[String]) -> Res<Option<Value>> {
        enum Got {
            Ws(String),
            Text(String),
            Val(Value),
        }
        self.at = at;
        let mut got = Vec::with_capacity(parts.len());
        for p in parts {
            got.push(match p {
                Part::Ws(w) => Got::Ws(w.clone()),
                Part::Scalar { text, .. } => Got::Text(text.clone()),
                Part::Object(o) => Got::Val(Value::Object(self.object(o, &mut path.to_vec())?)),
                Part::List(items) => Got::Val(Value::List(self.list(items, path)?)),
                Part::Subst(s) => match self.substitution(s, path)? {
                    Some(v) => Got::Val(v),
                    None => continue,
                },
            });
        }
        let (mut lists, mut objects, mut texts) = (0, 0, 0);
        for g in &got {
            match g {
                Got::Val(Value::List(_)) => lists += 1,
                Got::Val(Value::Object(_)) => objects += 1,
                Got::Val(_) | Got::Text(_) => texts += 1,
                Got::Ws(_) => {}
            }
        }
        if lists + objects + texts == 0 {
            return Ok(None);
        }
        if texts == 0 && objects == 0 {
            let mut out = Vec::new();
            for g in got {
                if let Got::Val(Value::List(l)) = g {
                    out.extend(l);
                }
            }
            self.charge(out.len(), path)?;
            return Ok(Some(Value::List(out)));
        }
        if texts == 0 && lists == 0 {
            let mut out = Map::default();
            for g in got {
                if let Got::Val(Value::Object(o)) = g {
                    merge(&mut out, o);
                }
            }
            return Ok(Some(Value::Object(out)));
        }
        if lists > 0 || objects > 0 {
            return Err(self.error(
                at,
                format!(
                    "{}: {}",
                    path_text(path),
                    mixed_message(lists > 0, objects > 0)
                ),
            ));
        }
        let mut s = String::new();
        for g in got {
            match g {
                Got::Ws(w) | Got::Text(w) => s.push_str(&w),
                Got::Val(v) => s.push_str(&text_of(&v)),
            }
        }
        self.charge(s.len(), path)?;
        Ok(Some(Value::String(s)))
    }
}

/// The text of a scalar in a string concatenation.
fn text_of(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Real(f) => f.to_string(),
        Value::String(s) => s.clone(),
        Value::List(_) | Value::Object(_) => String::new(),
    }
}

/// Merges `top` over `below`: objects merge key by key, anything else replaces.
fn merge(below: &mut Object, top: Object) {
    for (k, v) in top.entries {
        match (below.get_mut(&k), v) {
            (Some(Value::Object(b)), Value::Object(t)) => merge(b, t),
            (_, v) => below.insert(k, v),
        }
    }
}
