//! Length-prefixed frames, sans-IO.
//!
//! # Format
//! ```text
//! +----------------------+------------------------+
//! | length: u32, BE      | payload: length bytes  |
//! +----------------------+------------------------+
//! ```
//! A length above the decoder's maximum is an error as soon as the four length bytes
//! are in: nothing is allocated for it, and the decoder refuses all further input.
//! The body buffer grows only as payload bytes arrive, so a peer that announces a
//! large (allowed) frame and then stalls holds no more memory than it has sent.

use thiserror::Error;

/// Bytes in a frame header (the length).
pub const HEADER_LEN: usize = 4;

/// A body buffer larger than this is given back once its frame has been delivered, so
/// one large frame does not pin its size for the life of the connection.
const RETAINED_CAPACITY: usize = 64 * 1024;

/// Why a byte stream is not a valid sequence of frames.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    /// A header announced a payload longer than the configured maximum.
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// The announced payload length.
        len: u64,
        /// The maximum payload length.
        max: usize,
    },
    /// The stream ended in the middle of a frame.
    #[error("stream ended inside a frame: {have} of {need} bytes received")]
    Truncated {
        /// Bytes of the unfinished frame (header included) that arrived.
        have: usize,
        /// Bytes the frame needed (header included; the header's size while the
        /// length itself was incomplete).
        need: usize,
    },
}

/// Appends frames to an output buffer, so that several frames leave in one write.
#[derive(Debug, Clone, Copy)]
pub struct FrameEncoder {
    max_frame: usize,
}

impl FrameEncoder {
    /// An encoder refusing payloads longer than `max_frame` bytes (at most `u32::MAX`).
    pub fn new(max_frame: usize) -> Self {
        FrameEncoder {
            max_frame: max_frame.min(u32::MAX as usize),
        }
    }

    /// The largest payload this encoder accepts.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Appends one frame carrying `payload` to `out`.
    pub fn encode(&self, payload: &[u8], out: &mut Vec<u8>) -> Result<(), FrameError> {
        self.encode_parts(&[payload], out)
    }

    /// Appends one frame whose payload is the concatenation of `parts` (a kind byte
    /// and a body, say) to `out`, without first joining them.
    pub fn encode_parts(&self, parts: &[&[u8]], out: &mut Vec<u8>) -> Result<(), FrameError> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if len > self.max_frame {
            return Err(FrameError::TooLarge {
                len: len as u64,
                max: self.max_frame,
            });
        }
        out.reserve(HEADER_LEN + len);
        // Cannot truncate: `len <= max_frame <= u32::MAX`.
        out.extend_from_slice(&(len as u32).to_be_bytes());
        for p in parts {
            out.extend_from_slice(p);
        }
        Ok(())
    }
}

/// Where the decoder is inside the current frame.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Reading the length. Invariant: `have < HEADER_LEN`.
    Header {
        bytes: [u8; HEADER_LEN],
        have: usize,
    },
    /// Reading the payload. Invariant: `body.len() < len <= max_frame` (a complete
    /// body is returned at once and the state goes back to `Header`).
    Body { len: usize },
    /// A complete frame sits in `body` and was handed out by the last call; the next
    /// call clears it.
    Delivered,
    /// The stream broke a rule; every further call returns this error.
    Failed(FrameError),
}

/// An incremental frame decoder: feed it byte chunks as they arrive, split or merged
/// at any point, and take complete frames out.
///
/// ```
/// use kv_transport::frame::{FrameDecoder, FrameEncoder};
///
/// let mut wire = Vec::new();
/// let enc = FrameEncoder::new(1024);
/// enc.encode(b"hello", &mut wire).unwrap();
/// enc.encode(b"world", &mut wire).unwrap();
///
/// let mut dec = FrameDecoder::new(1024);
/// let mut frames = Vec::new();
/// for chunk in wire.chunks(3) {
///     let mut input = chunk;
///     while let Some(frame) = dec.decode(&mut input).unwrap() {
///         frames.push(frame.to_vec());
///     }
/// }
/// assert_eq!(frames, [b"hello".to_vec(), b"world".to_vec()]);
/// ```
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    max_frame: usize,
    state: State,
    /// The current frame's payload bytes, reused from frame to frame.
    body: Vec<u8>,
}

impl FrameDecoder {
    /// A decoder refusing frames whose payload is longer than `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        FrameDecoder {
            max_frame,
            state: State::Header {
                bytes: [0; HEADER_LEN],
                have: 0,
            },
            body: Vec::new(),
        }
    }

    /// The largest payload this decoder accepts.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Consumes bytes from the front of `input` until one frame is complete, and
    /// returns its payload (valid until the next call); returns `None` once `input`
    /// is empty with no frame complete. Bytes after a complete frame stay in `input`,
    /// so a caller can hand the rest of a read to someone else (the handshake does).
    ///
    /// After an error the decoder is spent: every later call returns the same error.
    pub fn decode<'a>(&'a mut self, input: &mut &[u8]) -> Result<Option<&'a [u8]>, FrameError> {
        if let State::Failed(e) = &self.state {
            return Err(e.clone());
        }
        if self.state == State::Delivered {
            self.start_header();
        }
        loop {
            match &mut self.state {
                State::Header { bytes, have } => {
                    if input.is_empty() {
                        return Ok(None);
                    }
                    let take = (HEADER_LEN - *have).min(input.len());
                    bytes[*have..*have + take].copy_from_slice(&input[..take]);
                    *have += take;
                    *input = &input[take..];
                    if *have < HEADER_LEN {
                        return Ok(None);
                    }
                    let len = u32::from_be_bytes(*bytes) as u64;
                    if len > self.max_frame as u64 {
                        let e = FrameError::TooLarge {
                            len,
                            max: self.max_frame,
                        };
                        self.state = State::Failed(e.clone());
                        return Err(e);
                    }
                    // Fits in usize: it is at most `max_frame`.
                    let len = len as usize;
                    if len == 0 {
                        self.state = State::Delivered;
                        return Ok(Some(&self.body[..0]));
                    }
                    self.state = State::Body { len };
                }
                State::Body { len } => {
                    if input.is_empty() {
                        return Ok(None);
                    }
                    let take = (*len - self.body.len()).min(input.len());
                    self.body.extend_from_slice(&input[..take]);
                    *input = &input[take..];
                    if self.body.len() < *len {
                        return Ok(None);
                    }
                    self.state = State::Delivered;
                    return Ok(Some(&self.body));
                }
                State::Delivered | State::Failed(_) => {
                    unreachable!("handled before the loop")
                }
            }
        }
    }

    /// Checks that the stream may end here: no frame is half received.
    pub fn finish(&self) -> Result<(), FrameError> {
        match &self.state {
            State::Header { have: 0, .. } | State::Delivered => Ok(()),
            State::Header { have, .. } => Err(FrameError::Truncated {
                have: *have,
                need: HEADER_LEN,
            }),
            State::Body { len } => Err(FrameError::Truncated {
                have: HEADER_LEN + self.body.len(),
                need: HEADER_LEN + len,
            }),
            State::Failed(e) => Err(e.clone()),
        }
    }

    /// Bytes of a partly received frame the decoder holds (header included).
    pub fn buffered(&self) -> usize {
        match &self.state {
            State::Header { have, .. } => *have,
            State::Body { .. } => HEADER_LEN + self.body.len(),
            State::Delivered | State::Failed(_) => 0,
        }
    }

    fn start_header(&mut self) {
        self.body.clear();
        if self.body.capacity() > RETAINED_CAPACITY {
            self.body.shrink_to(RETAINED_CAPACITY);
        }
        self.state = State::Header {
            bytes: [0; HEADER_LEN],
            have: 0,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(dec: &mut FrameDecoder, mut input: &[u8]) -> Result<Vec<Vec<u8>>, FrameError> {
        let mut out = Vec::new();
        while let Some(f) = dec.decode(&mut input)? {
            out.push(f.to_vec());
        }
        assert!(input.is_empty(), "decode returned None with input left");
        Ok(out)
    }

    #[test]
    fn frames_round_trip_in_one_buffer() {
        let enc = FrameEncoder::new(100);
        let mut wire = Vec::new();
        enc.encode(b"a", &mut wire).unwrap();
        enc.encode(b"", &mut wire).unwrap();
        enc.encode_parts(&[b"b", b"cd"], &mut wire).unwrap();
        assert_eq!(&wire[..5], &[0, 0, 0, 1, b'a']);
        let mut dec = FrameDecoder::new(100);
        let frames = decode_all(&mut dec, &wire).unwrap();
        assert_eq!(frames, [b"a".to_vec(), vec![], b"bcd".to_vec()]);
        dec.finish().unwrap();
    }

    #[test]
    fn a_frame_exactly_at_the_limit_is_accepted() {
        let enc = FrameEncoder::new(8);
        let mut wire = Vec::new();
        enc.encode(&[7; 8], &mut wire).unwrap();
        let mut dec = FrameDecoder::new(8);
        assert_eq!(decode_all(&mut dec, &wire).unwrap(), [vec![7; 8]]);
    }

    #[test]
    fn encoder_refuses_a_payload_over_the_limit_and_writes_nothing() {
        let enc = FrameEncoder::new(4);
        let mut wire = vec![1];
        let e = enc.encode_parts(&[b"abc", b"de"], &mut wire).unwrap_err();
        assert_eq!(e, FrameError::TooLarge { len: 5, max: 4 });
        assert_eq!(wire, [1]);
    }

    #[test]
    fn decoder_refuses_a_length_over_the_limit_without_allocating() {
        let mut dec = FrameDecoder::new(1024);
        let mut input: &[u8] = &[0xff, 0xff, 0xff, 0xff, 1, 2, 3];
        let e = dec.decode(&mut input).unwrap_err();
        assert_eq!(
            e,
            FrameError::TooLarge {
                len: u32::MAX as u64,
                max: 1024
            }
        );
        assert_eq!(dec.body.capacity(), 0);
        // Spent: the same error again, whatever comes next.
        let mut more: &[u8] = &[0, 0, 0, 1, 9];
        assert_eq!(dec.decode(&mut more).unwrap_err(), e);
        assert_eq!(dec.finish().unwrap_err(), e);
    }

    #[test]
    fn the_body_buffer_grows_only_with_the_bytes_that_arrived() {
        let mut dec = FrameDecoder::new(1 << 20);
        let mut input: &[u8] = &[0, 0x10, 0, 0, 1, 2];
        assert_eq!(dec.decode(&mut input).unwrap(), None);
        assert!(dec.body.capacity() < 1024, "{}", dec.body.capacity());
        assert_eq!(dec.buffered(), 6);
    }

    #[test]
    fn truncated_in_the_header() {
        let mut dec = FrameDecoder::new(10);
        let mut input: &[u8] = &[0, 0];
        assert_eq!(dec.decode(&mut input).unwrap(), None);
        assert_eq!(
            dec.finish().unwrap_err(),
            FrameError::Truncated { have: 2, need: 4 }
        );
    }

    #[test]
    fn truncated_in_the_body() {
        let mut dec = FrameDecoder::new(10);
        let mut input: &[u8] = &[0, 0, 0, 5, 1, 2];
        assert_eq!(dec.decode(&mut input).unwrap(), None);
        assert_eq!(
            dec.finish().unwrap_err(),
            FrameError::Truncated { have: 6, need: 9 }
        );
    }

    #[test]
    fn finish_is_fine_between_frames() {
        let mut dec = FrameDecoder::new(10);
        dec.finish().unwrap();
        let mut input: &[u8] = &[0, 0, 0, 1, 1];
        assert!(dec.decode(&mut input).unwrap().is_some());
        dec.finish().unwrap();
    }

    #[test]
    fn decode_stops_after_one_frame_and_leaves_the_rest() {
        let mut dec = FrameDecoder::new(10);
        let mut input: &[u8] = &[0, 0, 0, 1, 7, 0xde, 0xad];
        assert_eq!(dec.decode(&mut input).unwrap(), Some(&[7u8][..]));
        assert_eq!(input, &[0xde, 0xad]);
    }

    #[test]
    fn a_large_body_buffer_is_given_back() {
        let enc = FrameEncoder::new(1 << 20);
        let mut wire = Vec::new();
        enc.encode(&vec![1; 200_000], &mut wire).unwrap();
        enc.encode(b"x", &mut wire).unwrap();
        let mut dec = FrameDecoder::new(1 << 20);
        decode_all(&mut dec, &wire).unwrap();
        assert!(dec.body.capacity() <= RETAINED_CAPACITY);
    }

    fn frames() -> impl Strategy<Value = Vec<Vec<u8>>> {
        prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..20)
    }

    proptest! {
        /// Splitting and merging the stream at arbitrary points decodes to the same
        /// frames as decoding it whole.
        #[test]
        fn any_split_decodes_identically(
            frames in frames(),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..40),
        ) {
            let enc = FrameEncoder::new(300);
            let mut wire = Vec::new();
            for f in &frames {
                enc.encode(f, &mut wire).unwrap();
            }
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
            points.push(0);
            points.push(wire.len());
            points.sort_unstable();
            let mut dec = FrameDecoder::new(300);
            let mut got = Vec::new();
            for w in points.windows(2) {
                got.extend(decode_all(&mut dec, &wire[w[0]..w[1]]).unwrap());
            }
            dec.finish().unwrap();
            prop_assert_eq!(got, frames);
        }

        /// Arbitrary bytes never panic, and what is decoded before an error is a
        /// prefix of frames within the limit.
        #[test]
        fn arbitrary_bytes_give_frames_or_an_error(
            bytes in prop::collection::vec(any::<u8>(), 0..2000),
            chunk in 1usize..64,
        ) {
            let mut dec = FrameDecoder::new(256);
            for c in bytes.chunks(chunk) {
                match decode_all(&mut dec, c) {
                    Ok(fs) => for f in fs { prop_assert!(f.len() <= 256) },
                    Err(FrameError::TooLarge { len, .. }) => { prop_assert!(len > 256); break }
                    Err(e) => prop_assert!(false, "unexpected {e}"),
                }
            }
        }
    }
}
