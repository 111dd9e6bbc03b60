//! A Kompact system with the real providers: our TCP transport on an address and a
//! wall-clock timer thread. Nodes (`kvstore start`, `kvstore demo`) and clients both
//! run on one of these.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kompact::KompactLogger;
use kompact::prelude::*;
use kv_ports::{Network, Timer};
use kv_transport::Transport;

use crate::connect::{Connector, connector};
use crate::network::{TcpNetwork, TransportConfig, TransportEvent, TransportStats};
use crate::timer::WallTimer;

/// A running Kompact system with a network and a timer provider.
pub struct Runtime {
    /// The system.
    pub system: KompactSystem,
    /// The network provider.
    pub network: Arc<Component<TcpNetwork>>,
    /// The timer provider.
    pub timer: Arc<Component<WallTimer>>,
    /// The address the system listens on and is known by (the bound port when 0 was
    /// asked for).
    pub address: SocketAddr,
}

impl Runtime {
    /// Start a system with `threads` worker threads whose network listens on
    /// `net.listen`, in cluster `net.cluster` (with `net.secret`, if any, and the
    /// frame limit `net.max_frame_bytes`).
    pub fn start(
        net: TransportConfig,
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
        let system = cfg
            .build()
            .wait()
            .map_err(|e| format!("cannot start a Kompact system: {e}"))?;
        let network = system.create(TcpNetwork::new);
        // Events reach the component as actor messages; any that arrive before it
        // has started wait in its mailbox.
        let events = network.actor_ref();
        let listen = net.listen;
        let transport = match Transport::start(net, move |e| events.tell(TransportEvent(e))) {
            Ok(t) => t,
            Err(e) => {
                let _ = system.shutdown().wait();
                return Err(format!("cannot listen on {listen}: {e}"));
            }
        };
        let address = transport.identity().addr;
        network.on_definition(|n| n.attach(transport));
        let timer = system.create(WallTimer::new);
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

    /// The transport's counters now (zero once the network component was killed).
    pub fn transport_stats(&self) -> TransportStats {
        self.network
            .on_definition(|n| n.transport_stats())
            .unwrap_or_default()
    }
}
