//! The transport's receive path (`kv_transport`): the handshake state machine, then
//! the frame decoder, fed an arbitrary byte stream split into arbitrary chunks, as
//! reads from a socket would split and merge it. Never a panic; and the outcome does
//! not depend on the split: the same frames, or the same error, as one whole read.
//!
//! Input: byte 0 picks the options (bit 0: this side dials, else accepts; bit 1: a
//! cluster secret is set; bit 2: a valid hello from a peer goes first, so the proof,
//! the verdict and the frames behind them are reached too), byte 1 seeds the chunk
//! sizes, the rest is the stream.
#![no_main]

use std::net::SocketAddr;

use kv_transport::frame::{FrameDecoder, FrameError};
use kv_transport::handshake::{
    Handshake, HandshakeConfig, HandshakeError, Identity, Progress, Role,
};
use libfuzzer_sys::fuzz_target;

const MAX_FRAME: usize = 4096;

fn config(port: u16, secret: bool) -> HandshakeConfig {
    HandshakeConfig {
        cluster: "fuzz".to_string(),
        identity: Identity {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            incarnation: u64::from(port),
        },
        secret: secret.then(|| b"fuzz secret".to_vec()),
        client: false,
    }
}

/// What one run observed: the handshake's outcome, the frames after it, and how
/// the frame stream ended.
#[derive(Debug, PartialEq)]
struct Outcome {
    handshake: Option<Result<(), HandshakeError>>,
    frames: Vec<Vec<u8>>,
    end: Result<(), FrameError>,
}

/// Feeds `stream` in chunks whose sizes come from `seed` (0: one chunk).
fn run(role: Role, secret: bool, stream: &[u8], seed: u8) -> Outcome {
    let expected = (role == Role::Dialer).then(|| SocketAddr::from(([127, 0, 0, 1], 2)));
    let mut hs = match Handshake::new(&config(1, secret), role, expected, [1; 32]) {
        Ok(h) => h,
        Err(e) => panic!("valid configuration refused: {e}"),
    };
    let mut out = Vec::new();
    let mut handshake = None;
    let mut decoder = FrameDecoder::new(MAX_FRAME);
    let mut frames = Vec::new();
    let mut end = Ok(());
    let mut state = u32::from(seed) | 1;
    let mut rest = stream;
    while !rest.is_empty() {
        let n = if seed == 0 {
            rest.len()
        } else {
            // xorshift: chunk sizes from 1 to 64.
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            1 + (state % 64) as usize
        };
        let (chunk, tail) = rest.split_at(n.min(rest.len()));
        rest = tail;
        let mut input = chunk;
        if handshake.is_none() {
            match hs.receive(&mut input) {
                Ok(Progress::Pending) => {}
                Ok(Progress::Decide(_)) => {
                    handshake = Some(hs.welcome().map(|_| ()));
                }
                Ok(Progress::Done(_)) => handshake = Some(Ok(())),
                Err(e) => {
                    handshake = Some(Err(e));
                    break;
                }
            }
            hs.take_output(&mut out);
            assert!(out.len() < 1024, "handshake output grows: {}", out.len());
        }
        if let Some(Ok(())) = handshake {
            loop {
                match decoder.decode(&mut input) {
                    Ok(Some(f)) => {
                        assert!(f.len() <= MAX_FRAME);
                        frames.push(f.to_vec());
                    }
                    Ok(None) => break,
                    Err(e) => {
                        end = Err(e);
                        break;
                    }
                }
            }
            if end.is_err() {
                break;
            }
            assert!(decoder.buffered() <= MAX_FRAME + 4);
        }
    }
    if end.is_ok() && matches!(handshake, Some(Ok(()))) {
        end = decoder.finish();
    }
    Outcome {
        handshake,
        frames,
        end,
    }
}

fuzz_target!(|data: &[u8]| {
    let [options, seed, body @ ..] = data else {
        return;
    };
    let role = if options & 1 == 1 {
        Role::Dialer
    } else {
        Role::Acceptor
    };
    let secret = options & 2 != 0;
    let mut stream = Vec::new();
    if options & 4 != 0 {
        // A real hello from the peer (identity 127.0.0.1:2, the one a dialer expects).
        let peer_role = if role == Role::Dialer {
            Role::Acceptor
        } else {
            Role::Dialer
        };
        if let Ok(mut peer) = Handshake::new(&config(2, secret), peer_role, None, [2; 32]) {
            peer.take_output(&mut stream);
        }
    }
    stream.extend_from_slice(body);
    let whole = run(role, secret, &stream, 0);
    let split = run(role, secret, &stream, *seed);
    assert_eq!(whole, split, "the outcome depends on how the stream was split");
});
