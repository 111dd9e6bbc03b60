//! `limits.max-inflight-per-node` bounds the node, not each partition: two `KvReplica`s
//! that share the node's counter admit `max_inflight` operations between them, answer
//! the next one `Busy`, and admit again once a decision frees a slot.
//!
//! The replicas run in a real Kompact system against stand-ins for their ports: a
//! consensus provider that records proposals and decides only when told, a routing
//! provider that records the replicas' answers, and a timer that never fires.

mod common;

use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Signal;
use kompact::prelude::*;
use kv_components::kv_replica::{KvReplica, KvReplicaSettings};
use kv_ports::{
    ClientMessage, ClientRequest, KvCommand, KvOp, NodeId, Refusal, Routed, Routing,
    RoutingRequest, ScIndication, ScRequest, SequenceConsensus, Timer, TimerRequest,
};

const ME: &str = "127.0.0.1:7000";
const CLIENT: &str = "127.0.0.1:9000";
const MAX_INFLIGHT: usize = 3;
const WAIT: Duration = Duration::from_secs(10);

/// Provides `SequenceConsensus`: records proposals; `Decide` decides the oldest.
#[derive(ComponentDefinition)]
struct Consensus {
    ctx: ComponentContext<Self>,
    sc: ProvidedPort<SequenceConsensus>,
    proposed: Arc<Mutex<Vec<KvCommand>>>,
    signal: Arc<Signal>,
    next_idx: u64,
}

impl Consensus {
    fn new(proposed: Arc<Mutex<Vec<KvCommand>>>, signal: Arc<Signal>) -> Self {
        Consensus {
            ctx: ComponentContext::uninitialised(),
            sc: ProvidedPort::uninitialised(),
            proposed,
            signal,
            next_idx: 0,
        }
    }
}

ignore_lifecycle!(Consensus);

impl Provide<SequenceConsensus> for Consensus {
    fn handle(&mut self, req: ScRequest) -> HandlerResult {
        if let ScRequest::Propose(cmds) = req {
            self.proposed.lock().unwrap().extend(cmds);
            self.signal.notify();
        }
        Handled::OK
    }
}

#[derive(Debug)]
struct Decide;

impl Actor for Consensus {
    type Message = Decide;

    fn receive_local(&mut self, _: Decide) -> HandlerResult {
        let cmd = self.proposed.lock().unwrap().remove(0);
        let idx = self.next_idx;
        self.next_idx += 1;
        self.sc.trigger(ScIndication::Decided {
            idx,
            cmds: vec![cmd],
        });
        Handled::OK
    }

    fn receive_network(&mut self, _: NetMessage) -> HandlerResult {
        Handled::OK
    }
}

/// Provides `Routing` to both replicas: forwards `Routed` batches, records answers.
#[derive(ComponentDefinition)]
struct Router {
    ctx: ComponentContext<Self>,
    routing: ProvidedPort<Routing>,
    answers: Arc<Mutex<Vec<ClientMessage>>>,
    signal: Arc<Signal>,
}

ignore_lifecycle!(Router);

impl Provide<Routing> for Router {
    fn handle(&mut self, req: RoutingRequest) -> HandlerResult {
        if let RoutingRequest::Reply { msg, .. } = req {
            self.answers.lock().unwrap().push(msg);
            self.signal.notify();
        }
        Handled::OK
    }
}

impl Actor for Router {
    type Message = Routed;

    fn receive_local(&mut self, r: Routed) -> HandlerResult {
        self.routing.trigger(r);
        Handled::OK
    }

    fn receive_network(&mut self, _: NetMessage) -> HandlerResult {
        Handled::OK
    }
}

/// Provides `Timer` and never fires.
#[derive(ComponentDefinition)]
struct Silent {
    ctx: ComponentContext<Self>,
    timer: ProvidedPort<Timer>,
}

ignore_lifecycle!(Silent);

impl Provide<Timer> for Silent {
    fn handle(&mut self, _: TimerRequest) -> HandlerResult {
        Handled::OK
    }
}

impl Actor for Silent {
    type Message = Never;

    fn receive_local(&mut self, msg: Never) -> HandlerResult {
        match msg {}
    }

    fn receive_network(&mut self, _: NetMessage) -> HandlerResult {
        Handled::OK
    }
}

fn put(seq: u64, key: &str) -> ClientRequest {
    ClientRequest {
        client: 42,
        seq,
        op: KvOp::Put {
            key: key.to_string(),
            value: "v".to_string(),
        },
    }
}

#[test]
fn the_inflight_limit_is_shared_by_the_partitions_of_a_node() {
    let system = KompactConfig::default().build().wait().expect("system");
    let me: NodeId = ME.parse().unwrap();
    let client: NodeId = CLIENT.parse().unwrap();
    let node_inflight = Arc::new(AtomicUsize::new(0));
    let answers = Arc::new(Mutex::new(Vec::new()));
    let signal = Arc::new(Signal::default());
    let router = system.create(|| Router {
        ctx: ComponentContext::uninitialised(),
        routing: ProvidedPort::uninitialised(),
        answers: answers.clone(),
        signal: signal.clone(),
    });
    let timer = system.create(|| Silent {
        ctx: ComponentContext::uninitialised(),
        timer: ProvidedPort::uninitialised(),
    });
    let mut consensus = Vec::new();
    let mut replicas = Vec::new();
    let mut proposed = Vec::new();
    for partition in 0..2u32 {
        let p = Arc::new(Mutex::new(Vec::new()));
        let sc = system.create({
            let (p, signal) = (p.clone(), signal.clone());
            move || Consensus::new(p, signal)
        });
        let replica = system.create(|| {
            KvReplica::new(KvReplicaSettings {
                me,
                partition,
                epoch: 0,
                max_key_bytes: 64,
                max_value_bytes: 64,
                max_inflight: MAX_INFLIGHT,
                snapshot_interval: 1_000,
                session_idle: Duration::from_secs(600),
                max_sessions: 1_000,
                tick_period: Duration::from_millis(100),
            })
            .with_node_inflight(node_inflight.clone())
        });
        biconnect_components::<SequenceConsensus, _, _>(&sc, &replica).expect("sc");
        biconnect_components::<Routing, _, _>(&router, &replica).expect("routing");
        biconnect_components::<Timer, _, _>(&timer, &replica).expect("timer");
        consensus.push(sc);
        replicas.push(replica);
        proposed.push(p);
    }
    // Everything is connected before anything starts: a running component may be
    // busy, and connecting to it would fail.
    let mut started = vec![system.start_notify(&router), system.start_notify(&timer)];
    for (sc, replica) in consensus.iter().zip(&replicas) {
        started.push(system.start_notify(sc));
        started.push(system.start_notify(replica));
    }
    for s in started {
        s.wait_timeout(WAIT).expect("started");
    }
    let route = |partition: u32, requests: Vec<ClientRequest>| {
        router.actor_ref().tell(Routed {
            partition,
            requests,
            reply_to: client,
        });
    };
    let proposals = |p: usize| proposed[p].lock().unwrap().len();

    // Two operations on partition 0 and one on partition 1 fill the node's three slots.
    route(0, vec![put(1, "a"), put(2, "b")]);
    signal.wait_until("two proposals on partition 0", WAIT, || proposals(0) == 2);
    route(1, vec![put(3, "c")]);
    signal.wait_until("one proposal on partition 1", WAIT, || proposals(1) == 1);

    // A fourth, on either partition, is refused.
    route(1, vec![put(4, "d")]);
    signal.wait_until("an answer", WAIT, || !answers.lock().unwrap().is_empty());
    assert!(
        matches!(
            answers.lock().unwrap()[0],
            ClientMessage::Refused {
                seq: 4,
                reason: Refusal::Busy,
                ..
            }
        ),
        "{:?}",
        answers.lock().unwrap()
    );
    assert_eq!(proposals(1), 1, "the refused operation was not proposed");

    // A decision on partition 0 frees a slot, which partition 1 can use.
    consensus[0].actor_ref().tell(Decide);
    signal.wait_until("the decided operation is answered", WAIT, || {
        answers.lock().unwrap().len() == 2
    });
    assert!(matches!(
        answers.lock().unwrap()[1],
        ClientMessage::Response { seq: 1, .. }
    ));
    route(1, vec![put(4, "d")]);
    signal.wait_until("the retried operation is proposed", WAIT, || {
        proposals(1) == 2
    });
    assert_eq!(
        node_inflight.load(std::sync::atomic::Ordering::Relaxed),
        MAX_INFLIGHT
    );
    let _ = system.shutdown().wait_timeout(WAIT);
}
