//! kompact-kv's own TCP transport: length-prefixed frames, a versioned handshake
//! that can authenticate peers with a cluster secret, and one connection per peer on
//! a single-threaded mio event loop. No Kompact inside: the `Network` provider
//! adapts it to ports.
//!
//! - [`frame`]: the sans-IO frame codec (encoder and incremental decoder);
//! - [`handshake`]: the sans-IO handshake (hellos, HMAC challenge–response);
//! - [`tls`]: TLS 1.3 (rustls, sans-IO in the loop) with mutual certificate
//!   authentication against a cluster CA;
//! - [`Transport`]: the network thread, started with a [`TransportConfig`] and a
//!   handler for [`Event`]s, driven through a [`TransportHandle`].
//!
//! See `docs/transport.md` for the format, the limits and what bad input does.
//!
//! ```
//! use std::sync::mpsc;
//! use std::time::Duration;
//! use kv_transport::{Event, Transport, TransportConfig};
//!
//! let local = "127.0.0.1:0".parse().unwrap();
//! let mut config = TransportConfig::new(local, "example");
//! config.secret = Some(b"shared by every node".to_vec());
//!
//! let (tx, events) = mpsc::channel();
//! let b = Transport::start(config.clone(), move |e| {
//!     let _ = tx.send(e);
//! })
//! .unwrap();
//! let a = Transport::start(config, |_| {}).unwrap();
//!
//! a.send(b.local_addr(), b"hello".to_vec()).unwrap();
//! loop {
//!     match events.recv_timeout(Duration::from_secs(10)).unwrap() {
//!         Event::Frame { peer, data } => {
//!             assert_eq!(peer, a.local_addr());
//!             assert_eq!(data, b"hello");
//!             break;
//!         }
//!         _ => {} // Connected { .. } comes first
//!     }
//! }
//! assert_eq!(b.stats().frames_in, 1);
//! a.shutdown().unwrap();
//! b.shutdown().unwrap();
//! ```
#![deny(missing_docs)]

pub mod config;
mod event_loop;
pub mod frame;
pub mod handshake;
pub mod tls;

pub use config::{ConfigError, TransportConfig};
pub use event_loop::{
    ConnectionError, Event, SendError, StartError, Stats, Transport, TransportHandle,
    TransportSender,
};
pub use handshake::Identity;
pub use tls::{TlsConfig, TlsError, TlsSetupError};
