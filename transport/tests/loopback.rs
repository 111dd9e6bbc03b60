//! Transports on 127.0.0.1 talking to each other and to hand-driven raw sockets.
//! Nothing sleeps: every wait is a channel receive with a deadline.

use std::cell::RefCell;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use kv_transport::frame::{FrameEncoder, FrameError};
use kv_transport::handshake::{
    Handshake, HandshakeConfig, HandshakeError, Identity, Progress, Role,
};
use kv_transport::{
    ConnectionError, Event, SendError, Transport, TransportConfig, TransportHandle,
};

/// Upper bound of any single wait; reached only when something is broken.
const WAIT: Duration = Duration::from_secs(30);
const CLUSTER: &str = "test-cluster";

struct Node {
    handle: TransportHandle,
    events: Receiver<Event>,
    /// Every event `wait_for` has received, the ones it skipped included.
    seen: RefCell<Vec<Event>>,
}

impl Node {
    fn addr(&self) -> SocketAddr {
        self.handle.identity().addr
    }

    /// Receives events until `pick` returns something; panics after [`WAIT`].
    fn wait_for<T>(&self, what: &str, mut pick: impl FnMut(&Event) -> Option<T>) -> T {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(e) => {
                    self.seen.borrow_mut().push(e.clone());
                    if let Some(t) = pick(&e) {
                        return t;
                    }
                }
                Err(_) => panic!("timed out waiting for {what}"),
            }
        }
    }

    fn wait_frame_from(&self, from: SocketAddr) -> Vec<u8> {
        self.wait_for("a frame", |e| match e {
            Event::Frame { peer, data } if *peer == from => Some(data.clone()),
            _ => None,
        })
    }

    /// Every event delivered so far, in order.
    fn events_so_far(&self) -> Vec<Event> {
        let mut seen = self.seen.borrow_mut();
        seen.extend(self.events.try_iter());
        seen.clone()
    }
}

fn config(secret: Option<&[u8]>) -> TransportConfig {
    let mut c = TransportConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), CLUSTER);
    c.secret = secret.map(<[u8]>::to_vec);
    c.reconnect_backoff_min = Duration::from_millis(10);
    c.reconnect_backoff_max = Duration::from_millis(200);
    c.housekeeping_interval = Duration::from_millis(10);
    c
}

fn start(config: TransportConfig) -> Node {
    let (tx, events) = mpsc::channel();
    let handle = Transport::start(config, move |e| {
        let _ = tx.send(e);
    })
    .expect("transport starts");
    Node {
        handle,
        events,
        seen: RefCell::new(Vec::new()),
    }
}

#[test]
fn ten_thousand_frames_each_way_arrive_in_order() {
    let a = start(config(None));
    let b = start(config(None));
    // One connection first, so the burst below does not race a duplicate dial.
    a.handle.send(b.addr(), b"hello".to_vec()).unwrap();
    assert_eq!(b.wait_frame_from(a.addr()), b"hello");

    const N: u32 = 10_000;
    for i in 0..N {
        a.handle.send(b.addr(), i.to_be_bytes().to_vec()).unwrap();
        b.handle
            .send(a.addr(), (N + i).to_be_bytes().to_vec())
            .unwrap();
    }
    for i in 0..N {
        assert_eq!(b.wait_frame_from(a.addr()), i.to_be_bytes());
    }
    for i in 0..N {
        assert_eq!(a.wait_frame_from(b.addr()), (N + i).to_be_bytes());
    }
    let (sa, sb) = (a.handle.stats(), b.handle.stats());
    assert_eq!(sb.frames_in, u64::from(N) + 1);
    assert_eq!(sa.frames_in, u64::from(N));
    assert_eq!(sa.frames_out, u64::from(N) + 1);
    // Frames queued together leave together.
    assert!(sa.write_calls < sa.frames_out, "{sa:?}");
    assert_eq!((sa.bad_frames, sb.bad_frames, sa.frames_dropped), (0, 0, 0));
}

#[test]
fn both_sides_dialing_at_once_end_with_one_connection_and_lose_nothing() {
    for _ in 0..20 {
        let a = start(config(None));
        let b = start(config(None));
        // Both dial at once: each is the acceptor of the other's dial.
        a.handle.send(b.addr(), b"from a".to_vec()).unwrap();
        b.handle.send(a.addr(), b"from b".to_vec()).unwrap();
        assert_eq!(b.wait_frame_from(a.addr()), b"from a");
        assert_eq!(a.wait_frame_from(b.addr()), b"from b");
        // Ping-pong, so each side has seen both dials through.
        for i in 0u8..5 {
            a.handle.send(b.addr(), vec![i]).unwrap();
            assert_eq!(b.wait_frame_from(a.addr()), [i]);
            b.handle.send(a.addr(), vec![i]).unwrap();
            assert_eq!(a.wait_frame_from(b.addr()), [i]);
        }
        let (sa, sb) = (a.handle.stats(), b.handle.stats());
        let (ia, ib) = (
            a.handle.identity().incarnation,
            b.handle.identity().incarnation,
        );
        // Before either stops, which the other would see as a loss.
        let (ea, eb) = (a.events_so_far(), b.events_so_far());
        for (events, peer_incarnation) in [(ea, ib), (eb, ia)] {
            let connected: Vec<_> = events
                .iter()
                .filter_map(|e| match e {
                    Event::Connected { incarnation, .. } => Some(*incarnation),
                    _ => None,
                })
                .collect();
            assert_eq!(connected, [peer_incarnation], "{events:?}");
            assert!(
                !events.iter().any(|e| matches!(
                    e,
                    Event::Disconnected { .. } | Event::ConnectionError { .. }
                )),
                "{events:?}"
            );
        }
        assert_eq!(sa.handshake_failures + sb.handshake_failures, 0);
        assert_eq!(sa.frames_dropped + sb.frames_dropped, 0);
        // Usually both dialed; on a loaded machine one side may already have the
        // other's connection when its own send is handled, and then it needs no
        // dial. Either way there is one connection and nothing is lost.
        assert!(sa.dials + sb.dials >= 1);
    }
}

/// Shuts a node down and returns every event it delivered.
fn stop(node: Node) -> Vec<Event> {
    let Node {
        handle,
        events,
        seen,
    } = node;
    handle.shutdown().unwrap();
    let mut all = seen.into_inner();
    all.extend(events.try_iter());
    all
}

/// Drives the dialer side of a handshake over a blocking socket, as a node with
/// identity `127.0.0.1:id_port` would; returns the socket and the outcome.
fn raw_handshake(
    to: SocketAddr,
    cluster: &str,
    secret: Option<&[u8]>,
    id_port: u16,
) -> (TcpStream, Result<(), HandshakeError>) {
    let cfg = HandshakeConfig {
        cluster: cluster.to_string(),
        identity: Identity {
            addr: SocketAddr::from(([127, 0, 0, 1], id_port)),
            incarnation: 7,
        },
        secret: secret.map(<[u8]>::to_vec),
        client: false,
    };
    let mut hs = Handshake::new(&cfg, Role::Dialer, Some(to), [5; 32]).unwrap();
    let mut s = TcpStream::connect(to).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut out = Vec::new();
    hs.take_output(&mut out);
    s.write_all(&out).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        let n = match s.read(&mut buf) {
            Ok(0) | Err(_) => return (s, Err(hs.closed())),
            Ok(n) => n,
        };
        let mut input = &buf[..n];
        let progress = hs.receive(&mut input);
        out.clear();
        hs.take_output(&mut out);
        s.write_all(&out).unwrap();
        match progress {
            Ok(Progress::Pending) => {}
            Ok(Progress::Done(_)) => return (s, Ok(())),
            Ok(Progress::Decide(_)) => unreachable!("only an acceptor decides"),
            Err(e) => return (s, Err(e)),
        }
    }
}

/// Reads until the other side closes; panics if it has not within [`WAIT`].
fn expect_closed(s: &mut TcpStream) {
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut sink = Vec::new();
    match s.read_to_end(&mut sink) {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) => panic!("connection not closed: {e}"),
    }
}

fn data_frame(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    FrameEncoder::new(1 << 20)
        .encode_parts(&[&[kind], body], &mut f)
        .unwrap();
    f
}

#[test]
fn garbage_and_bad_frames_close_only_that_connection() {
    let b = start(config(None));
    let a = start(config(None));

    // Not our protocol at all.
    let mut raw = TcpStream::connect(b.addr()).unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let raw_addr = raw.local_addr().unwrap();
    expect_closed(&mut raw);
    let error = b.wait_for("the garbage to be reported", |e| match e {
        Event::ConnectionError { remote, error, .. } if *remote == raw_addr => Some(error.clone()),
        _ => None,
    });
    assert!(
        matches!(
            error,
            ConnectionError::Handshake(HandshakeError::Frame(FrameError::TooLarge { .. }))
        ),
        "{error}"
    );

    // A good handshake, a good frame, then a length over the limit.
    let (mut raw, r) = raw_handshake(b.addr(), CLUSTER, None, 1);
    r.unwrap();
    let fake = SocketAddr::from(([127, 0, 0, 1], 1));
    raw.write_all(&data_frame(0, b"ok")).unwrap();
    raw.write_all(&[0xff, 0xff, 0xff, 0xf0, 1, 2, 3]).unwrap();
    expect_closed(&mut raw);
    assert_eq!(b.wait_frame_from(fake), b"ok");
    let error = b.wait_for("the oversized frame to be reported", |e| match e {
        Event::ConnectionError { peer, error, .. } if *peer == Some(fake) => Some(error.clone()),
        _ => None,
    });
    assert!(
        matches!(error, ConnectionError::Frame(FrameError::TooLarge { .. })),
        "{error}"
    );

    // A frame of a kind nobody defined.
    let (mut raw, r) = raw_handshake(b.addr(), CLUSTER, None, 2);
    r.unwrap();
    raw.write_all(&data_frame(0x7f, b"?")).unwrap();
    expect_closed(&mut raw);
    let error = b.wait_for("the unknown kind to be reported", |e| match e {
        Event::ConnectionError { error, .. } => Some(error.clone()),
        _ => None,
    });
    assert_eq!(error, ConnectionError::UnknownKind(Some(0x7f)));

    // A handshake from another cluster.
    let (mut raw, r) = raw_handshake(b.addr(), "other", None, 3);
    assert!(matches!(r, Err(HandshakeError::ClusterMismatch { .. })));
    expect_closed(&mut raw);

    // The listener still serves a real peer.
    a.handle.send(b.addr(), b"still here".to_vec()).unwrap();
    assert_eq!(b.wait_frame_from(a.addr()), b"still here");
    let s = b.handle.stats();
    assert_eq!(s.bad_frames, 2, "{s:?}");
    assert!(s.handshake_failures >= 2, "{s:?}");
    assert_eq!(s.frames_in, 2);
}

#[test]
fn a_peer_with_the_wrong_secret_never_gets_a_frame_delivered() {
    let b = start(config(Some(b"right secret")));

    // A raw dialer with the wrong secret pipelines a data frame after its proof.
    let (mut raw, r) = raw_handshake(b.addr(), CLUSTER, Some(b"wrong secret"), 1);
    assert_eq!(r, Err(HandshakeError::AuthenticationFailed));
    let _ = raw.write_all(&data_frame(0, b"let me in"));
    expect_closed(&mut raw);
    b.wait_for("the auth failure", |e| match e {
        Event::ConnectionError {
            error: ConnectionError::Handshake(h),
            peer,
            dialed: false,
            ..
        } if h.is_auth_failure() => {
            // Named by the identity its hello claimed.
            assert_eq!(*peer, Some(SocketAddr::from(([127, 0, 0, 1], 1))));
            Some(())
        }
        _ => None,
    });

    // A transport with the wrong secret, and one with none.
    let a = start(config(Some(b"wrong secret")));
    a.handle.send(b.addr(), b"let me in".to_vec()).unwrap();
    a.wait_for("a's auth failure", |e| match e {
        Event::ConnectionError {
            error: ConnectionError::Handshake(HandshakeError::AuthenticationFailed),
            peer,
            dialed: true,
            ..
        } if *peer == Some(b.addr()) => Some(()),
        _ => None,
    });
    let c = start(config(None));
    c.handle.send(b.addr(), b"let me in".to_vec()).unwrap();
    c.wait_for("c's refusal", |e| match e {
        Event::ConnectionError {
            error: ConnectionError::Handshake(HandshakeError::SecretMismatch { ours: false }),
            ..
        } => Some(()),
        _ => None,
    });
    drop(a);
    drop(c);

    // A peer with the right secret gets through; nothing of the others did.
    let d = start(config(Some(b"right secret")));
    d.handle.send(b.addr(), b"friend".to_vec()).unwrap();
    let d_addr = d.addr();
    assert_eq!(b.wait_frame_from(d_addr), b"friend");
    let sender = b.handle.sender();
    let events = stop(b);
    let stats = sender.stats();
    assert_eq!(stats.frames_in, 1, "{stats:?}");
    // Whichever side checks the other's proof first closes; the other may then see
    // the connection close instead of a bad proof.
    assert!(stats.auth_failures >= 1, "{stats:?}");
    assert!(stats.handshake_failures >= 3, "{stats:?}");
    assert!(
        events.iter().all(|e| !matches!(e,
            Event::Frame { peer, .. } | Event::Connected { peer, .. } if *peer != d_addr)),
        "{events:?}"
    );
}

#[test]
fn reconnects_after_the_other_side_restarts() {
    let a = start(config(None));
    let b = start(config(None));
    let b_addr = b.addr();
    let first_incarnation = b.handle.identity().incarnation;
    a.handle.send(b_addr, b"one".to_vec()).unwrap();
    assert_eq!(b.wait_frame_from(a.addr()), b"one");

    b.handle.shutdown().unwrap();
    a.wait_for("the loss of b", |e| match e {
        Event::Disconnected { peer } if *peer == b_addr => Some(()),
        _ => None,
    });

    let mut again = config(None);
    again.listen = b_addr;
    let b2 = start(again);
    let incarnation = b2.handle.identity().incarnation;
    assert_ne!(incarnation, first_incarnation);
    a.handle.send(b_addr, b"two".to_vec()).unwrap();
    assert_eq!(b2.wait_frame_from(a.addr()), b"two");
    a.wait_for("the new connection", |e| match e {
        Event::Connected {
            peer,
            incarnation: i,
        } if *peer == b_addr => {
            assert_eq!(*i, incarnation);
            Some(())
        }
        _ => None,
    });
}

#[test]
fn limits_refuse_or_drop_instead_of_growing() {
    let mut cfg = config(None);
    cfg.max_frame_bytes = 1000;
    cfg.max_queued_bytes_per_peer = 1004;
    let a = start(cfg);
    assert_eq!(
        a.handle.send(a.addr(), vec![0; 1000]),
        Err(SendError::TooLarge {
            len: 1000,
            max: 999
        })
    );
    // A peer that accepts TCP but never answers: frames wait for it, up to the cap.
    let silent = TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let to = silent.local_addr().unwrap();
    for _ in 0..3 {
        a.handle.send(to, vec![1; 999]).unwrap();
    }
    let sender = a.handle.sender();
    a.handle.shutdown().unwrap();
    let s = sender.stats();
    assert_eq!(s.frames_dropped, 2, "{s:?}");
    assert_eq!(s.frames_out, 0, "{s:?}");
    assert_eq!(sender.send(to, vec![1]), Err(SendError::Stopped));
}

#[test]
fn frames_to_ourselves_are_delivered_without_a_socket() {
    let a = start(config(None));
    a.handle.send(a.addr(), b"me".to_vec()).unwrap();
    assert_eq!(a.wait_frame_from(a.addr()), b"me");
    assert_eq!(a.handle.stats().dials, 0);
    assert_eq!(
        a.events_so_far(),
        [Event::Frame {
            peer: a.addr(),
            data: b"me".to_vec()
        }]
    );
}

#[test]
fn silent_connections_time_out_and_handshakes_are_capped() {
    let mut cfg = config(None);
    cfg.handshake_timeout = Duration::from_millis(200);
    cfg.keepalive_interval = Duration::from_millis(20);
    cfg.idle_timeout = Duration::from_millis(300);
    cfg.max_handshaking = 1;
    let b = start(cfg);

    // Connects and says nothing: holds the one handshake slot until it times out.
    let mut mute = TcpStream::connect(b.addr()).unwrap();
    let mute_addr = mute.local_addr().unwrap();
    // Wait until b has accepted it (its hello arrives) before the next connect.
    mute.set_read_timeout(Some(WAIT)).unwrap();
    let mut first = [0u8; 1];
    mute.read_exact(&mut first).unwrap();
    let mut refused = TcpStream::connect(b.addr()).unwrap();
    expect_closed(&mut refused);
    expect_closed(&mut mute);
    let error = b.wait_for("the handshake timeout", |e| match e {
        Event::ConnectionError { remote, error, .. } if *remote == mute_addr => Some(error.clone()),
        _ => None,
    });
    assert_eq!(error, ConnectionError::HandshakeTimeout);
    assert_eq!(b.handle.stats().connections_refused, 1);

    // Completes the handshake, then never sends: keep-alives come, then the close.
    let (mut idle, r) = raw_handshake(b.addr(), CLUSTER, None, 4);
    r.unwrap();
    let mut header = [0u8; 5];
    idle.read_exact(&mut header).unwrap();
    assert_eq!(header, [0, 0, 0, 1, 1], "a keep-alive frame");
    expect_closed(&mut idle);
    let error = b.wait_for("the idle timeout", |e| match e {
        Event::ConnectionError { peer, error, .. }
            if *peer == Some(SocketAddr::from(([127, 0, 0, 1], 4))) =>
        {
            Some(error.clone())
        }
        _ => None,
    });
    assert_eq!(error, ConnectionError::IdleTimeout);
}

#[test]
fn a_disconnected_peer_sees_the_connection_close_and_the_next_frame_redials() {
    let a = start(config(None));
    let b = start(config(None));
    a.handle.send(b.addr(), b"first".to_vec()).unwrap();
    assert_eq!(b.wait_frame_from(a.addr()), b"first");

    a.handle.disconnect(b.addr()).unwrap();
    for (node, other) in [(&a, b.addr()), (&b, a.addr())] {
        node.wait_for("the connection to close", |e| match e {
            Event::Disconnected { peer } if *peer == other => Some(()),
            _ => None,
        });
    }
    // Closed without an error: nothing for the log.
    assert!(
        !a.events_so_far()
            .iter()
            .any(|e| matches!(e, Event::ConnectionError { .. })),
        "{:?}",
        a.events_so_far()
    );
    b.handle.send(a.addr(), b"again".to_vec()).unwrap();
    assert_eq!(a.wait_frame_from(b.addr()), b"again");
    // Disconnecting a peer without a connection does nothing.
    a.handle
        .disconnect(SocketAddr::from(([127, 0, 0, 1], 1)))
        .unwrap();
    a.handle.send(b.addr(), b"still".to_vec()).unwrap();
    assert_eq!(b.wait_frame_from(a.addr()), b"still");
}
