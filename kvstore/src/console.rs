//! The console's line parser and the text of its answers. Kept free of I/O so it can
//! be tested (and fuzzed) on its own.

use kv_client::Error;
use kv_ports::{KvOp, KvResult};

/// One console command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// An operation on the store.
    Op(KvOp),
    /// Print the help text.
    Help,
    /// Leave the console.
    Quit,
    /// An empty line or a comment.
    Nothing,
}

/// The console's help text.
pub const HELP: &str = "\
commands:
  get KEY                  print the value of KEY
  put KEY VALUE            store VALUE under KEY
  cas KEY EXPECTED NEW     replace EXPECTED with NEW under KEY
  cas KEY --absent NEW     store NEW under KEY only if KEY does not exist
  del KEY                  remove KEY (\"not found\" if it did not exist)
  help                     this text
  quit                     leave (end of input works too)
Quote keys or values that contain spaces: put greeting \"hello world\"
(a quoted \"--absent\" is an ordinary value)";

/// The flag of `cas KEY --absent NEW`, when it is not quoted.
const ABSENT_FLAG: &str = "--absent";

/// One word of a line, and whether any of it was quoted.
struct Word {
    text: String,
    quoted: bool,
}

/// Split a line into words; double quotes group words, `\\` and `\"` escape inside
/// quotes.
pub fn split_words(line: &str) -> Result<Vec<String>, String> {
    Ok(split_marked(line)?.into_iter().map(|w| w.text).collect())
}

/// [`split_words`], remembering which words had quotes.
fn split_marked(line: &str) -> Result<Vec<Word>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                in_word = true;
                quoted = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(e @ ('"' | '\\')) => cur.push(e),
                            Some(other) => {
                                cur.push('\\');
                                cur.push(other);
                            }
                            None => return Err("unterminated quote".to_string()),
                        },
                        Some(ch) => cur.push(ch),
                        None => return Err("unterminated quote".to_string()),
                    }
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(Word {
                        text: std::mem::take(&mut cur),
                        quoted,
                    });
                    in_word = false;
                    quoted = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(Word { text: cur, quoted });
    }
    Ok(words)
}

/// Parse one console line.
pub fn parse_line(line: &str) -> Result<Command, String> {
    let trimmed = line.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return Ok(Command::Nothing);
    }
    let words = split_marked(trimmed)?;
    let Some((cmd, rest)) = words.split_first() else {
        return Ok(Command::Nothing);
    };
    let cmd = &cmd.text;
    // `cas KEY --absent NEW`: the unquoted flag, wherever it stands, is not a value.
    let absent = rest.iter().any(|w| !w.quoted && w.text == ABSENT_FLAG);
    let args: Vec<String> = rest
        .iter()
        .filter(|w| w.quoted || w.text != ABSENT_FLAG)
        .map(|w| w.text.clone())
        .collect();
    let cmd_lower = cmd.to_ascii_lowercase();
    if absent && cmd_lower != "cas" {
        return Err(format!("{ABSENT_FLAG} only goes with cas (try help)"));
    }
    let want = |n: usize, usage: &str| -> Result<(), String> {
        if args.len() == n {
            Ok(())
        } else {
            Err(format!("usage: {usage}"))
        }
    };
    match cmd_lower.as_str() {
        "get" => {
            want(1, "get KEY")?;
            Ok(Command::Op(KvOp::Get {
                key: args[0].clone(),
            }))
        }
        "put" => {
            want(2, "put KEY VALUE")?;
            Ok(Command::Op(KvOp::Put {
                key: args[0].clone(),
                value: args[1].clone(),
            }))
        }
        "cas" if absent => {
            want(2, "cas KEY --absent NEW")?;
            Ok(Command::Op(KvOp::Cas {
                key: args[0].clone(),
                expected: None,
                new: args[1].clone(),
            }))
        }
        "cas" => {
            want(3, "cas KEY EXPECTED NEW (or cas KEY --absent NEW)")?;
            Ok(Command::Op(KvOp::Cas {
                key: args[0].clone(),
                expected: Some(args[1].clone()),
                new: args[2].clone(),
            }))
        }
        "del" | "delete" => {
            want(1, "del KEY")?;
            Ok(Command::Op(KvOp::Delete {
                key: args[0].clone(),
            }))
        }
        "help" | "?" => Ok(Command::Help),
        "quit" | "exit" => Ok(Command::Quit),
        other => Err(format!("unknown command {other:?} (try help)")),
    }
}

/// How an operation's outcome reads on the console and on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Success; `Some(value)` for a GET.
    Ok(Option<String>),
    /// A negative answer (not found, CAS mismatch): exit code 1.
    Negative(String),
    /// Unavailable: exit code 3.
    Unavailable(String),
    /// Refused request: exit code 2 would be wrong (not a usage error), so 1.
    Rejected(String),
}

impl Outcome {
    /// The process exit code for this outcome.
    pub fn exit_code(&self) -> i32 {
        match self {
            Outcome::Ok(_) => 0,
            Outcome::Negative(_) | Outcome::Rejected(_) => 1,
            Outcome::Unavailable(_) => 3,
        }
    }

    /// The console line for this outcome.
    pub fn line(&self) -> String {
        match self {
            Outcome::Ok(Some(v)) => v.clone(),
            Outcome::Ok(None) => "OK".to_string(),
            Outcome::Negative(s) | Outcome::Unavailable(s) | Outcome::Rejected(s) => s.clone(),
        }
    }
}

/// Interpret an operation's result.
pub fn outcome(op: &KvOp, r: Result<KvResult, Error>) -> Outcome {
    match r {
        Ok(KvResult::Value(v)) => Outcome::Ok(Some(v)),
        Ok(KvResult::Done) => Outcome::Ok(None),
        Ok(KvResult::NotFound) => {
            Outcome::Negative(Error::NotFound(op.key().to_string()).to_string())
        }
        Ok(KvResult::CasMismatch { current }) => Outcome::Negative(
            Error::CasMismatch {
                key: op.key().to_string(),
                current,
            }
            .to_string(),
        ),
        Err(Error::Unavailable(s)) => Outcome::Unavailable(s),
        Err(e @ (Error::NotFound(_) | Error::CasMismatch { .. })) => {
            Outcome::Negative(e.to_string())
        }
        Err(Error::Rejected(s)) => Outcome::Rejected(format!("refused: {s}")),
        Err(Error::Setup(s)) => Outcome::Unavailable(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_commands() {
        assert_eq!(
            parse_line("put a 1"),
            Ok(Command::Op(KvOp::Put {
                key: "a".into(),
                value: "1".into()
            }))
        );
        assert_eq!(
            parse_line("  cas k \"hello world\" x "),
            Ok(Command::Op(KvOp::Cas {
                key: "k".into(),
                expected: Some("hello world".into()),
                new: "x".into()
            }))
        );
        assert_eq!(
            parse_line("cas k --absent x"),
            Ok(Command::Op(KvOp::Cas {
                key: "k".into(),
                expected: None,
                new: "x".into()
            }))
        );
        // Quoted, the flag is a value like any other.
        assert_eq!(
            parse_line("cas k \"--absent\" x"),
            Ok(Command::Op(KvOp::Cas {
                key: "k".into(),
                expected: Some("--absent".into()),
                new: "x".into()
            }))
        );
        assert_eq!(
            parse_line("del k"),
            Ok(Command::Op(KvOp::Delete { key: "k".into() }))
        );
        assert_eq!(
            parse_line("DELETE \"a b\""),
            Ok(Command::Op(KvOp::Delete { key: "a b".into() }))
        );
        assert_eq!(
            parse_line("GET a"),
            Ok(Command::Op(KvOp::Get { key: "a".into() }))
        );
        assert_eq!(parse_line(""), Ok(Command::Nothing));
        assert_eq!(parse_line("# comment"), Ok(Command::Nothing));
        assert_eq!(parse_line("quit"), Ok(Command::Quit));
        assert_eq!(
            parse_line("put \"\" x"),
            Ok(Command::Op(KvOp::Put {
                key: "".into(),
                value: "x".into()
            }))
        );
    }

    #[test]
    fn explains_bad_lines() {
        assert_eq!(parse_line("put a"), Err("usage: put KEY VALUE".to_string()));
        assert_eq!(parse_line("get"), Err("usage: get KEY".to_string()));
        assert_eq!(parse_line("del"), Err("usage: del KEY".to_string()));
        assert_eq!(
            parse_line("cas k --absent a b"),
            Err("usage: cas KEY --absent NEW".to_string())
        );
        assert_eq!(
            parse_line("cas k a"),
            Err("usage: cas KEY EXPECTED NEW (or cas KEY --absent NEW)".to_string())
        );
        assert_eq!(
            parse_line("put k --absent"),
            Err("--absent only goes with cas (try help)".to_string())
        );
        assert_eq!(
            parse_line("frob a"),
            Err("unknown command \"frob\" (try help)".to_string())
        );
        assert_eq!(
            parse_line("put \"a b"),
            Err("unterminated quote".to_string())
        );
    }

    #[test]
    fn outcomes_read_as_documented() {
        let cas = KvOp::Cas {
            key: "k".into(),
            expected: Some("a".into()),
            new: "b".into(),
        };
        assert_eq!(
            outcome(
                &cas,
                Ok(KvResult::CasMismatch {
                    current: "x".into()
                })
            )
            .line(),
            "cas failed: current value of \"k\" is \"x\""
        );
        let create = KvOp::Cas {
            key: "k".into(),
            expected: None,
            new: "b".into(),
        };
        let o = outcome(
            &create,
            Ok(KvResult::CasMismatch {
                current: "x".into(),
            }),
        );
        assert_eq!(o.line(), "cas failed: current value of \"k\" is \"x\"");
        assert_eq!(o.exit_code(), 1);
        let del = KvOp::Delete { key: "k".into() };
        assert_eq!(outcome(&del, Ok(KvResult::Done)), Outcome::Ok(None));
        let o = outcome(&del, Ok(KvResult::NotFound));
        assert_eq!(
            (o.line().as_str(), o.exit_code()),
            ("key \"k\" not found", 1)
        );
        let get = KvOp::Get { key: "k".into() };
        let o = outcome(&get, Ok(KvResult::NotFound));
        assert_eq!(o.line(), "key \"k\" not found");
        assert_eq!(o.exit_code(), 1);
        let o = outcome(
            &get,
            Err(Error::Unavailable(
                "no answer from 127.0.0.1:45678 within 2s (is the cluster up?)".into(),
            )),
        );
        assert_eq!(o.exit_code(), 3);
    }
}
