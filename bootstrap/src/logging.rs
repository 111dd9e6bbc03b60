//! Logging setup: compact, structured lines on stderr, filtered at run time.
//!
//! Kompact compiles its log statements in at trace level in debug builds, so the
//! level chosen here (a runtime [`slog::LevelFilter`]) is what keeps a node quiet.
//! The command line defaults to `warn`; `info` shows significant events (boot,
//! leader changes, suspicions), `debug` and `trace` show protocol detail.

use std::io::IsTerminal;

use slog::{Drain, Level, Logger, o};

/// Records queued for the logging thread before new ones are dropped (and the number
/// dropped reported).
const CHANNEL_SIZE: usize = 4096;

/// A logger writing to stderr through a background thread, showing records at `level`
/// and above. Colours are used when stderr is a terminal.
///
/// Records still queued when the process exits without dropping the logger (e.g. via
/// `std::process::exit`) are lost; drop every clone of the logger first to flush.
pub fn logger(level: Level) -> Logger {
    if std::io::stderr().is_terminal() {
        let decorator = slog_term::TermDecorator::new().stderr().build();
        build(slog_term::CompactFormat::new(decorator).build(), level)
    } else {
        let decorator = slog_term::PlainDecorator::new(std::io::stderr());
        build(slog_term::CompactFormat::new(decorator).build(), level)
    }
}

fn build<D>(format: D, level: Level) -> Logger
where
    D: Drain<Ok = (), Err = std::io::Error> + Send + 'static,
{
    let drain = slog_async::Async::new(format.fuse())
        .chan_size(CHANNEL_SIZE)
        .thread_name("kv-log".into())
        .build()
        .fuse();
    // Filtering before the queue: a suppressed record costs no formatting and no
    // channel slot.
    let drain = slog::LevelFilter::new(drain, level).fuse();
    Logger::root(drain, o!())
}

/// The same logger in the shape a Kompact system takes (`KompactConfig::logger`),
/// with the node's address on every line. The level filter runs on the logging
/// thread here, because Kompact fixes the drain type.
pub fn kompact_logger(level: Level, node: &str) -> kompact::KompactLogger {
    let drain = if std::io::stderr().is_terminal() {
        let decorator = slog_term::TermDecorator::new().stderr().build();
        filtered_async(slog_term::CompactFormat::new(decorator).build(), level)
    } else {
        let decorator = slog_term::PlainDecorator::new(std::io::stderr());
        filtered_async(slog_term::CompactFormat::new(decorator).build(), level)
    };
    Logger::root_typed(
        std::sync::Arc::new(drain.fuse()),
        o!("node" => node.to_string()),
    )
}

fn filtered_async<D>(format: D, level: Level) -> slog_async::Async
where
    D: Drain<Ok = (), Err = std::io::Error> + Send + 'static,
{
    slog_async::Async::new(slog::LevelFilter::new(format.fuse(), level).fuse())
        .chan_size(CHANNEL_SIZE)
        .thread_name("kv-log".into())
        .build()
}

/// Parses a log level name as given on the command line: `error`, `warn`, `info`,
/// `debug` or `trace` (any case; `warning` is accepted for `warn`).
pub fn parse_level(s: &str) -> Result<Level, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "error" => Ok(Level::Error),
        "warn" | "warning" => Ok(Level::Warning),
        "info" => Ok(Level::Info),
        "debug" => Ok(Level::Debug),
        "trace" => Ok(Level::Trace),
        _ => Err(format!(
            "unknown log level {s:?} (expected one of: error, warn, info, debug, trace)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_level() {
        assert_eq!(parse_level("error"), Ok(Level::Error));
        assert_eq!(parse_level("warn"), Ok(Level::Warning));
        assert_eq!(parse_level("INFO"), Ok(Level::Info));
        assert_eq!(parse_level("debug"), Ok(Level::Debug));
        assert_eq!(parse_level(" trace "), Ok(Level::Trace));
    }

    #[test]
    fn rejects_unknown_levels() {
        assert_eq!(
            parse_level("loud"),
            Err(
                "unknown log level \"loud\" (expected one of: error, warn, info, debug, trace)"
                    .to_string()
            )
        );
    }

    #[test]
    fn logger_builds_and_filters() {
        let log = logger(Level::Warning);
        assert!(!log.is_enabled(Level::Info));
        assert!(log.is_enabled(Level::Warning));
        slog::info!(log, "hidden"; "key" => 1);
        slog::warn!(log, "shown by the logging test"; "key" => 2);
    }
}
