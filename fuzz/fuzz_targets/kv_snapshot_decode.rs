//! The key-value snapshot decoder (`KvState::decode_snapshot`), which reads bytes a
//! leader sent: any input gives a state or a `SnapshotError`, never a panic. A state
//! it accepts encodes to a snapshot that decodes to the same state.
//!
//! A snapshot ends with a checksum of everything before it, which random bytes
//! almost never match. So when the first input byte is odd the rest is framed as a
//! version-1 snapshot body (magic, version, body, correct FNV-1a checksum) to reach
//! the decoder past the checksum; when it is even the rest is decoded as is.
#![no_main]

use kv_protocols::kv::KvState;
use kv_protocols::partition::fnv1a;
use libfuzzer_sys::fuzz_target;

const IDLE_MS: u64 = 600_000;
const MAX_SESSIONS: usize = 1000;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let framed;
    let input = if mode & 1 == 1 {
        let mut v = b"KVSS".to_vec();
        v.extend_from_slice(&1u16.to_le_bytes());
        v.extend_from_slice(rest);
        let sum = fnv1a(&v);
        v.extend_from_slice(&sum.to_le_bytes());
        framed = v;
        &framed[..]
    } else {
        rest
    };
    let Ok(state) = KvState::decode_snapshot(input, IDLE_MS, MAX_SESSIONS) else {
        return;
    };
    let bytes = state.encode_snapshot();
    let again = KvState::decode_snapshot(&bytes, IDLE_MS, MAX_SESSIONS)
        .unwrap_or_else(|e| panic!("re-encoded snapshot does not decode: {e}"));
    assert_eq!(state, again);
});
