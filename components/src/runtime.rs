//! A Kompact system with the real providers: kompact-net on a TCP address and a
//! wall-clock timer thread. Nodes (`kvstore start`, `kvstore demo`) and clients both run on
//! one of these.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kompact::KompactLogger;
use kompact::prelude::*;
use kompact_net::{NetworkConfig, NetworkSystemExt};
use kv_ports::{Network, Timer};

use crate::connect::{Connector, connector};
use crate::network::{NETWORK_ALIAS, TcpNetwork};
use crate::timer::WallTimer;

/// Largest network frame (bytes) a system can receive: one kompact-net buffer chunk.
pub const MAX_FRAME: usize = 1 << 20;

/// A running Kompact system with a network and a timer provider.
pub struct Runtime {
    /// The system.
    pub system: KompactSystem,
    /// The network provider, registered as [`NETWORK_ALIAS`].
    pub network: Arc<Component<TcpNetwork>>,
    /// The timer provider.
    pub timer: Arc<Component<WallTimer>>,
    /// The address the system listens on (the bound port when 0 was asked for).
    pub address: SocketAddr,
}

impl Runtime {
    /// Start a system listening on `bind` with `threads` worker threads.
    pub fn start(
        bind: SocketAddr,
        threads: usize,
        logger: Option<KompactLogger>,
    ) -> Result<Runtime, String> {
        let mut cfg = KompactConfig::default();
        cfg.set_config_value(&kompact::config_keys::system::THREADS, threads.max(1));
        if let Some(l) = logger {
            cfg.logger(l);
        }
        // kompact-net cannot decode a frame larger than one buffer chunk (128 kB by
        // default); 1 MiB chunks leave room for large Sequence Paxos syncs and
        // snapshots. Retransmissions are packed far below that (PerfectLink).
        let mut buffers = kompact::net::buffers::BufferConfig::default();
        buffers.chunk_size(MAX_FRAME);
        cfg.system_components(
            DeadletterBox::new,
            NetworkConfig::with_buffer_config(bind, buffers).build(),
        );
        let system = cfg
            .build()
            .wait()
            .map_err(|e| format!("cannot start on {bind}: {e}"))?;
        let address = system.system_path().socket_address();
        let network = system.create(TcpNetwork::new);
        network.on_definition(|c| system.connect_network_status_port(&mut c.status_port));
        let timer = system.create(WallTimer::new);
        system
            .register_by_alias(&network, NETWORK_ALIAS)
            .wait_timeout(Duration::from_secs(10))
            .map_err(|_| "timed out registering the network component".to_string())?
            .map_err(|e| format!("cannot register the network component: {e:?}"))?;
        system
            .start_notify(&network)
            .wait_timeout(Duration::from_secs(10))
            .map_err(|_| "timed out starting the network component".to_string())?;
        system
            .start_notify(&timer)
            .wait_timeout(Duration::from_secs(10))
            .map_err(|_| "timed out starting the timer component".to_string())?;
        Ok(Runtime {
            system,
            network,
            timer,
            address,
        })
    }

    /// A connector to the network provider.
    pub fn net(&self) -> Connector<Network> {
        connector::<Network, _>(&self.network)
    }

    /// A connector to the timer provider.
    pub fn timer(&self) -> Connector<Timer> {
        connector::<Timer, _>(&self.timer)
    }
}
