//! Every wire decoder: the first byte picks a serialisation id from
//! `kv_wire::ids::ALL` (or, past the end of that list, an id that is not ours), the
//! rest is the message body. Decoding must never panic; a message that decodes must
//! re-encode to bytes that decode to the same message (encode ∘ decode is stable).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let ids = kv_wire::ids::ALL;
    let id = match ids.get(pick as usize % (ids.len() + 1)) {
        Some((id, _)) => *id,
        None => 100 + kv_wire::SerId::from(pick), // mostly unknown ids, a few known ones
    };
    check(id, body);
});

fn check(id: kv_wire::SerId, body: &[u8]) {
    let Ok(msg) = kv_wire::decode_slice(id, body) else {
        return;
    };
    let (id2, bytes) = kv_wire::encode_to_vec(&msg);
    assert_eq!(id2, id, "re-encoded under another id: {msg:?}");
    let again = kv_wire::decode_slice(id2, &bytes)
        .unwrap_or_else(|e| panic!("re-encoding of {msg:?} does not decode: {e}"));
    let (_, bytes2) = kv_wire::encode_to_vec(&again);
    assert_eq!(bytes, bytes2, "encode ∘ decode is not stable for {msg:?}");
}
