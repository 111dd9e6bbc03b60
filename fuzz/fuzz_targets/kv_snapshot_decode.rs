//! The key-value snapshot decoder (`KvState::decode_snapshot`), which reads bytes a
//! leader sent: any input gives a state or a `SnapshotError`, never a panic. A state
//! it accepts encodes to a snapshot that decodes to the same state.
#![no_main]

use kv_protocols::kv::KvState;
use libfuzzer_sys::fuzz_target;

const IDLE_MS: u64 = 600_000;
const MAX_SESSIONS: usize = 1000;

fuzz_target!(|data: &[u8]| {
    let Ok(state) = KvState::decode_snapshot(data, IDLE_MS, MAX_SESSIONS) else {
        return;
    };
    let bytes = state.encode_snapshot();
    let again = KvState::decode_snapshot(&bytes, IDLE_MS, MAX_SESSIONS)
        .unwrap_or_else(|e| panic!("re-encoded snapshot does not decode: {e}"));
    assert_eq!(state, again);
});
