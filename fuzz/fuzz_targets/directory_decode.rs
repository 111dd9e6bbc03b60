//! The directory decoder (`Directory::decode`), which reads states that other nodes
//! send (the first layout, and every change): any input gives a directory or a
//! `DirDecodeError`, never a panic. A directory it accepts encodes to bytes that
//! decode to the same directory.
//!
//! The encoding ends with a checksum of everything before it, which random bytes
//! almost never match. So when the first input byte is odd the rest is framed as a
//! version-1 body (magic, version, body, correct FNV-1a checksum) to reach the
//! decoder past the checksum; when it is even the rest is decoded as is.
#![no_main]

use kv_protocols::directory::Directory;
use kv_protocols::partition::fnv1a;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let framed;
    let input = if mode & 1 == 1 {
        let mut v = b"KVDR".to_vec();
        v.extend_from_slice(&1u16.to_le_bytes());
        v.extend_from_slice(rest);
        let sum = fnv1a(&v);
        v.extend_from_slice(&sum.to_le_bytes());
        framed = v;
        &framed[..]
    } else {
        rest
    };
    let Ok(dir) = Directory::decode(input) else {
        return;
    };
    let again = Directory::decode(&dir.encode())
        .unwrap_or_else(|e| panic!("a re-encoded directory does not decode: {e}"));
    assert_eq!(dir, again);
});
