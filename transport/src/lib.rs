//! kompact-kv's own TCP transport: length-prefixed frames, a versioned handshake
//! that can authenticate peers with a cluster secret, and one connection per peer on
//! a single-threaded mio event loop. No Kompact inside: the `Network` provider
//! adapts it to ports.
//!
//! - [`frame`]: the sans-IO frame codec (encoder and incremental decoder);
//! - [`handshake`]: the sans-IO handshake (hellos, HMAC challenge–response);
//! - [`Transport`]: the network thread, started with a [`TransportConfig`] and a
//!   handler for [`Event`]s, driven through a [`TransportHandle`].
//!
//! See `docs/transport.md` for the format, the limits and what bad input does.
#![deny(missing_docs)]

pub mod config;
mod event_loop;
pub mod frame;
pub mod handshake;

pub use config::{ConfigError, TransportConfig};
pub use event_loop::{
    ConnectionError, Event, SendError, StartError, Stats, Transport, TransportHandle,
    TransportSender,
};
pub use handshake::Identity;
