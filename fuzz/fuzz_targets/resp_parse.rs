//! The RESP request parser (`kv_resp`), fed an arbitrary byte stream split into
//! arbitrary chunks, as reads from a socket would split and merge it. Never a
//! panic, never more buffered than the limits allow, and the outcome does not
//! depend on the split: the same commands, then the same error or none, as one
//! whole read.
//!
//! Input: byte 0 seeds the chunk sizes, the rest is the stream.
#![no_main]

use kv_resp::{Command, Limits, ParseError, RequestParser};
use libfuzzer_sys::fuzz_target;

const LIMITS: Limits = Limits {
    max_bulk: 256,
    max_args: 16,
    max_inline: 512,
    max_request_bytes: 2048,
};

fn drain(p: &mut RequestParser, out: &mut Vec<Command>) -> Option<ParseError> {
    loop {
        match p.next_command() {
            Ok(Some(c)) => out.push(c),
            Ok(None) => return None,
            Err(e) => return Some(e),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let mut whole = RequestParser::new(LIMITS);
    whole.feed(stream);
    let mut expected = Vec::new();
    let expected_err = drain(&mut whole, &mut expected);

    let mut split = RequestParser::new(LIMITS);
    let mut got = Vec::new();
    let mut got_err = None;
    let mut rest = stream;
    let mut k = u32::from(seed) | 1;
    while !rest.is_empty() && got_err.is_none() {
        k = k.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let n = 1 + (k as usize >> 8) % 64;
        let (chunk, tail) = rest.split_at(n.min(rest.len()));
        split.feed(chunk);
        got_err = drain(&mut split, &mut got);
        assert!(split.buffered() <= LIMITS.max_request_bytes + LIMITS.max_inline + 64);
        rest = tail;
    }
    assert_eq!(got, expected);
    assert_eq!(got_err.is_some(), expected_err.is_some());
});
