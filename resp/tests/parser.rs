//! The request parser under arbitrary input: whatever the bytes and however they
//! are split, it never panics, holds no more than the limits allow, and parses
//! well-formed pipelines exactly as they were written.

use kv_resp::{Command, Limits, RequestParser};
use proptest::prelude::*;

fn multibulk(cmd: &Command) -> Vec<u8> {
    let mut out = format!("*{}\r\n", cmd.len()).into_bytes();
    for a in cmd {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Feeds `input` in pieces cut at `cuts`; returns the commands and whether an
/// error ended the stream, checking the memory bound after every piece.
fn run(input: &[u8], cuts: &[usize], limits: Limits) -> (Vec<Command>, bool) {
    let mut p = RequestParser::new(limits);
    let mut got = Vec::new();
    let mut at = 0;
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    points.sort_unstable();
    points.push(input.len());
    for end in points {
        if end < at {
            continue;
        }
        p.feed(&input[at..end]);
        at = end;
        loop {
            match p.next_command() {
                Ok(Some(c)) => got.push(c),
                Ok(None) => break,
                Err(_) => return (got, true),
            }
        }
        // Everything complete was taken: what is left is one unfinished request.
        assert!(p.buffered() <= limits.max_request_bytes.max(limits.max_inline) + 32);
    }
    (got, false)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_and_stay_bounded(
        input in proptest::collection::vec(any::<u8>(), 0..4096),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
    ) {
        let limits = Limits { max_bulk: 64, max_args: 8, max_inline: 128, max_request_bytes: 512 };
        run(&input, &cuts, limits);
    }

    #[test]
    fn resp_shaped_noise_never_panics(
        parts in proptest::collection::vec(
            prop_oneof![
                Just(b"*".to_vec()), Just(b"$".to_vec()), Just(b"\r\n".to_vec()),
                Just(b"-1".to_vec()), Just(b"3".to_vec()), Just(b"99999999999999999999".to_vec()),
                Just(b"\"".to_vec()), Just(b"'".to_vec()), Just(b"\\x4".to_vec()), Just(b" ".to_vec()),
                proptest::collection::vec(any::<u8>(), 0..6),
            ],
            0..64,
        ),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
    ) {
        let input: Vec<u8> = parts.concat();
        run(&input, &cuts, Limits::default());
    }

    #[test]
    fn pipelines_parse_as_written_however_split(
        cmds in proptest::collection::vec(
            proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..6),
            1..12,
        ),
        cuts in proptest::collection::vec(any::<usize>(), 0..10),
    ) {
        let input: Vec<u8> = cmds.iter().flat_map(multibulk).collect();
        let (got, failed) = run(&input, &cuts, Limits::default());
        prop_assert!(!failed);
        prop_assert_eq!(got, cmds);
    }
}
