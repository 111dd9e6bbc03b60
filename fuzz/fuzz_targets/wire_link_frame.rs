//! The node-to-node decoder alone (`LINK_FRAME`: link frames carrying Paxos, BLE,
//! EPFD, bootstrap and forwarded client payloads), the largest one: the whole input
//! is the message body. Same checks as `wire_decode`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let id = kv_wire::ids::LINK_FRAME;
    let Ok(msg) = kv_wire::decode_slice(id, data) else {
        return;
    };
    let (id2, bytes) = kv_wire::encode_to_vec(&msg);
    assert_eq!(id2, id);
    let again = kv_wire::decode_slice(id2, &bytes)
        .unwrap_or_else(|e| panic!("re-encoding of {msg:?} does not decode: {e}"));
    let (_, bytes2) = kv_wire::encode_to_vec(&again);
    assert_eq!(bytes, bytes2, "encode ∘ decode is not stable for {msg:?}");
});
