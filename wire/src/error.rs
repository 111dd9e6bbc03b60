//! Why a message could not be decoded.

use kompact::prelude::SerId;
use kv_protocols::partition::TableError;

/// A message that cannot be decoded into a kompact-kv type. Decoding never panics:
/// every problem with the input ends up here.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The serialisation id is not one of [`crate::ids`].
    #[error("unknown serialisation id {0}")]
    UnknownId(SerId),
    /// The bytes are not a valid protobuf encoding of the expected message.
    #[error("malformed protobuf: {0}")]
    Protobuf(#[from] prost::DecodeError),
    /// A sub-message the Rust type requires is absent.
    #[error("{message}.{field} is missing")]
    MissingField {
        /// The protobuf message that lacks the field.
        message: &'static str,
        /// The field.
        field: &'static str,
    },
    /// A `oneof` is not set, or is set to a variant this version does not know
    /// (protobuf skips unknown fields, which leaves the `oneof` empty).
    #[error("{message}.{field}: no variant, or one this version does not know")]
    UnknownVariant {
        /// The protobuf message that holds the `oneof`.
        message: &'static str,
        /// The `oneof`.
        field: &'static str,
    },
    /// An IP address that is neither 4 (IPv4) nor 16 (IPv6) bytes long.
    #[error("IP address of {0} bytes, expected 4 or 16")]
    BadIpLength(usize),
    /// A port above 65535.
    #[error("port {0} is out of range")]
    BadPort(u32),
    /// A number that does not fit the Rust type it decodes into.
    #[error("{field} = {value} does not fit in this platform's usize")]
    Overflow {
        /// The field.
        field: &'static str,
        /// The value on the wire.
        value: u64,
    },
    /// A lookup table that breaks its invariant.
    #[error("invalid lookup table: {0}")]
    InvalidTable(#[source] TableError),
    /// A directory state that fails its own checks.
    #[error("invalid directory state: {0}")]
    InvalidDirectory(#[source] kv_protocols::directory::DirDecodeError),
    /// A field whose value breaks the message's rule (for example an empty list of
    /// replica moves).
    #[error("{message}.{field}: {rule}")]
    Invalid {
        /// The protobuf message.
        message: &'static str,
        /// The field.
        field: &'static str,
        /// The rule it breaks.
        rule: &'static str,
    },
    /// Kompact handed over a local (unserialised) message that is not a
    /// `kv_ports::NetMessage`, or failed in a way that is not one of ours.
    #[error("cannot unpack message: {0}")]
    Unpack(String),
}
