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
use crate::receive_buffers::DeferredFreeAllocator;
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
    /// The network thread's chunk allocator.
    pub receive_buffers: Arc<DeferredFreeAllocator>,
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
        // Workers that block on a channel when idle. Kompact's default work-stealing
        // pool spins and yields before parking, which on a small machine shared by
        // several nodes burns the cycles the other nodes need: measured on 2 cores,
        // 3 nodes, 64 clients, 78-87k -> 93-109k ops/s and one client's p50
        // 263-270 -> 232-240 µs (docs/performance.md).
        cfg.executor(kompact::executors::crossbeam_channel_pool::ThreadPool::new);
        if let Some(l) = logger {
            cfg.logger(l);
        }
        // kompact-net cannot decode a frame larger than one buffer chunk (128 kB by
        // default); 1 MiB chunks leave room for large Sequence Paxos syncs and
        // snapshots. Retransmissions are packed far below that (PerfectLink).
        let mut buffers = kompact::net::buffers::BufferConfig::default();
        buffers.chunk_size(MAX_FRAME);
        // Chunks are freed only after the network component has decoded every frame
        // leased from them (kompact 0.12 frees them early when a channel is replaced).
        let receive_buffers = Arc::new(DeferredFreeAllocator::new(MAX_FRAME));
        cfg.system_components(
            DeadletterBox::new,
            NetworkConfig::with_custom_allocator(bind, buffers, receive_buffers.clone()).build(),
        );
        let system = cfg
            .build()
            .wait()
            .map_err(|e| format!("cannot start on {bind}: {e}"))?;
        let address = system.system_path().socket_address();
        let network = {
            let receive_buffers = receive_buffers.clone();
            system.create(move || TcpNetwork::with_receive_buffers(receive_buffers))
        };
        network.on_definition(|c| system.connect_network_status_port(&mut c.status_port));
        let timer = system.create(WallTimer::new);
        system
            .register_by_alias(&network, NETWORK_ALIAS)
            .wait_timeout(Duration::from_secs(10))
            .map_err(|_| "timed out registering the network component".to_string())?
            .map_err(|e| format!("cannot register the network component: {e:?}"))?;
        receive_buffers.set_reaper(network.actor_ref());
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
            receive_buffers,
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
