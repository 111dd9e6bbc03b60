//! The console's line parser (`kvstore::console::parse_line`): any line gives a
//! command or an error message, never a panic. An operation it parses names a key
//! that the line contains.
#![no_main]

use kvstore::console::{Command, parse_line};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    match parse_line(line) {
        Ok(Command::Op(op)) => {
            // Quotes and escapes only ever remove characters from a word.
            assert!(op.key().len() <= line.len(), "{line:?} → {op:?}");
        }
        Ok(_) => {}
        Err(e) => assert!(!e.is_empty(), "empty error for {line:?}"),
    }
});
