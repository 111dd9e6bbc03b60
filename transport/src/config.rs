//! The transport's settings, checked once at start.

use std::net::SocketAddr;
use std::time::Duration;

use thiserror::Error;

use crate::handshake::{MAX_CLUSTER_NAME, MAX_IDENTITY};
use crate::tls::TlsConfig;

/// Settings of one [`crate::Transport`]. Build with [`TransportConfig::new`] and
/// change the fields that differ from the defaults.
#[derive(Clone)]
pub struct TransportConfig {
    /// The address to listen on (port 0 picks a free port).
    pub listen: SocketAddr,
    /// The address peers know this node by, sent in the handshake; the bound
    /// address when `None` (then `listen` must not be a wildcard address).
    pub advertise: Option<SocketAddr>,
    /// The cluster name; peers of another cluster are refused.
    pub cluster: String,
    /// The shared cluster secret. When set, every peer must prove it knows it.
    pub secret: Option<Vec<u8>>,
    /// TLS for every connection; plaintext when `None`. See [`crate::tls`].
    pub tls: Option<TlsConfig>,
    /// This process's incarnation; a random one when `None`.
    pub incarnation: Option<u64>,
    /// Largest frame payload accepted or sent (`limits.max-frame-bytes`).
    pub max_frame_bytes: usize,
    /// Bytes that may wait for one peer (unsent and not yet connected); a frame
    /// beyond that is dropped and counted.
    pub max_queued_bytes_per_peer: usize,
    /// Bytes handed to [`crate::TransportHandle::send`] that the network thread has
    /// not taken yet; beyond that `send` fails with [`crate::SendError::Full`].
    pub max_unprocessed_send_bytes: usize,
    /// Open connections at most (handshaking ones included); more are refused.
    pub max_connections: usize,
    /// Connections in their handshake at most; more are refused at accept.
    pub max_handshaking: usize,
    /// Time a connection has to connect and finish its handshake.
    pub handshake_timeout: Duration,
    /// A connection that sent nothing for this long gets a keep-alive frame.
    pub keepalive_interval: Duration,
    /// A connection that received nothing for this long is closed.
    pub idle_timeout: Duration,
    /// First delay before dialing a peer again after a failure.
    pub reconnect_backoff_min: Duration,
    /// The delay doubles after each failed dial up to this.
    pub reconnect_backoff_max: Duration,
    /// Failed dials in a row after which a peer is given up (its queued frames are
    /// dropped) until the next send to it.
    pub reconnect_attempts: u32,
    /// Size of the one read buffer the network thread reuses for every read.
    pub read_buffer_bytes: usize,
    /// How often timers (backoff, timeouts, keep-alives) are checked.
    pub housekeeping_interval: Duration,
}

impl std::fmt::Debug for TransportConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransportConfig")
            .field("listen", &self.listen)
            .field("advertise", &self.advertise)
            .field("cluster", &self.cluster)
            .field("secret", &self.secret.as_ref().map(|_| "<set>"))
            .field("tls", &self.tls)
            .field("incarnation", &self.incarnation)
            .field("max_frame_bytes", &self.max_frame_bytes)
            .field("max_queued_bytes_per_peer", &self.max_queued_bytes_per_peer)
            .finish_non_exhaustive()
    }
}

/// A setting that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("transport setting {setting}: {reason}")]
pub struct ConfigError {
    /// The field.
    pub setting: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl TransportConfig {
    /// Defaults for a node listening on `listen` in `cluster`, without a secret.
    pub fn new(listen: SocketAddr, cluster: impl Into<String>) -> Self {
        TransportConfig {
            listen,
            advertise: None,
            cluster: cluster.into(),
            secret: None,
            tls: None,
            incarnation: None,
            max_frame_bytes: 1 << 20,
            max_queued_bytes_per_peer: 32 << 20,
            max_unprocessed_send_bytes: 64 << 20,
            max_connections: 1024,
            max_handshaking: 64,
            handshake_timeout: Duration::from_secs(5),
            keepalive_interval: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(10),
            reconnect_backoff_min: Duration::from_millis(50),
            reconnect_backoff_max: Duration::from_secs(5),
            reconnect_attempts: 10,
            read_buffer_bytes: 64 * 1024,
            housekeeping_interval: Duration::from_millis(50),
        }
    }

    /// Checks every bound; the first violation names its field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |setting, reason: String| Err(ConfigError { setting, reason });
        if self.cluster.len() > MAX_CLUSTER_NAME {
            return err("cluster", format!("longer than {MAX_CLUSTER_NAME} bytes"));
        }
        if let Some(a) = self.advertise {
            if a.to_string().len() > MAX_IDENTITY {
                return err("advertise", format!("longer than {MAX_IDENTITY} bytes"));
            }
            if a.ip().is_unspecified() || a.port() == 0 {
                return err("advertise", "must be a reachable ip:port".into());
            }
        }
        if matches!(&self.secret, Some(s) if s.is_empty()) {
            return err("secret", "empty".into());
        }
        // One byte of every frame says its kind; u32 lengths bound the rest.
        if self.max_frame_bytes < 2 || self.max_frame_bytes > u32::MAX as usize {
            return err("max_frame_bytes", "must be in 2..=4294967295".into());
        }
        if self.max_queued_bytes_per_peer < self.max_frame_bytes + 4 {
            return err(
                "max_queued_bytes_per_peer",
                "must hold at least one largest frame".into(),
            );
        }
        if self.max_unprocessed_send_bytes < self.max_frame_bytes {
            return err(
                "max_unprocessed_send_bytes",
                "must hold at least one largest frame".into(),
            );
        }
        if self.max_connections == 0 || self.max_handshaking == 0 {
            return err("max_connections", "must be positive".into());
        }
        for (setting, d) in [
            ("handshake_timeout", self.handshake_timeout),
            ("keepalive_interval", self.keepalive_interval),
            ("reconnect_backoff_min", self.reconnect_backoff_min),
            ("housekeeping_interval", self.housekeeping_interval),
        ] {
            if d.is_zero() {
                return err(setting, "must be positive".into());
            }
        }
        if self.idle_timeout <= self.keepalive_interval {
            return err("idle_timeout", "must exceed keepalive_interval".into());
        }
        if self.reconnect_backoff_max < self.reconnect_backoff_min {
            return err(
                "reconnect_backoff_max",
                "must be at least reconnect_backoff_min".into(),
            );
        }
        if self.read_buffer_bytes < 512 {
            return err("read_buffer_bytes", "must be at least 512".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_name_their_field() {
        let base = TransportConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), "c");
        base.validate().unwrap();
        let mut c = base.clone();
        c.max_frame_bytes = 1;
        assert_eq!(c.validate().unwrap_err().setting, "max_frame_bytes");
        let mut c = base.clone();
        c.idle_timeout = c.keepalive_interval;
        assert_eq!(c.validate().unwrap_err().setting, "idle_timeout");
        let mut c = base.clone();
        c.secret = Some(vec![]);
        assert_eq!(c.validate().unwrap_err().setting, "secret");
        let mut c = base.clone();
        c.advertise = Some(SocketAddr::from(([0, 0, 0, 0], 1)));
        assert_eq!(c.validate().unwrap_err().setting, "advertise");
        let mut c = base;
        c.cluster = "x".repeat(65);
        assert_eq!(c.validate().unwrap_err().setting, "cluster");
    }
}
