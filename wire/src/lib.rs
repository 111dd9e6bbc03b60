//! The protobuf wire format of kompact-kv: every message that crosses the network,
//! between two nodes or between a client and a node.
//!
//! A message travels as a *serialisation id* (which top-level message it is, see
//! [`ids`]) and the protobuf encoding of that message (package `kvstore.wire.v1`,
//! sources in `wire/proto/`, description and compatibility rules in
//! `docs/wire.md`).
//!
//! * Sending through Kompact: wrap the message in [`Wire`], which implements
//!   Kompact's `Serialisable` (a local receiver gets the message without encoding).
//! * Receiving through Kompact: [`unpack`] the `data` of the delivered message.
//! * Anything else (simulator, tests, fuzzing): [`encode`] / [`decode`], or
//!   [`encode_to_vec`] / [`decode_slice`], with [`ser_id_of`].
//!
//! Decoding checks everything the Rust types rely on and reports problems as a
//! [`WireError`]; it never panics on bad input.
//!
//! ```
//! use kv_ports::{ClientMessage, NetMessage};
//!
//! let msg = NetMessage::Client(ClientMessage::Connect { cluster: "demo".into() });
//! let (id, bytes) = kv_wire::encode_to_vec(&msg);
//! assert_eq!(kv_wire::ids::name_of(id), Some("CONNECT"));
//! let back = kv_wire::decode_slice(id, &bytes).unwrap();
//! assert_eq!(format!("{back:?}"), format!("{msg:?}"));
//! ```
#![deny(missing_docs)]

mod codec;
mod convert;
mod error;
pub mod ids;

/// The generated protobuf types (package `kvstore.wire.v1`), for tools and tests
/// that need to build raw messages. Applications use the `kv-ports` types.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/kvstore.wire.v1.rs"));
}

pub use codec::{
    Deser, Wire, decode, decode_paxos, decode_slice, encode, encode_paxos, encode_to_vec,
    paxos_size_hint, payload_size_hint, ser_id_of, size_hint, unpack,
};
pub use error::WireError;
pub use kompact::prelude::SerId;
