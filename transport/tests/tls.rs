//! Transports with TLS on 127.0.0.1: mutual certificate authentication against a
//! test CA made with rcgen, refusals (another CA, a plaintext peer, garbage) with
//! their reasons on both sides. Nothing sleeps: every wait is a channel receive
//! with a deadline.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use kv_transport::handshake::{Handshake, HandshakeConfig, Identity, Role};
use kv_transport::{
    ConnectionError, Event, TlsConfig, TlsError, Transport, TransportConfig, TransportHandle,
};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

const WAIT: Duration = Duration::from_secs(30);
const CLUSTER: &str = "tls-cluster";
const LOCALHOST: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// A test certificate authority.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Ca { issuer }
    }

    fn der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// A certificate for `ips` usable by a server and a client, and its key.
    fn issue(&self, ips: &[IpAddr]) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, "node");
        params.subject_alt_names = ips.iter().map(|ip| SanType::IpAddress(*ip)).collect();
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        (vec![cert.der().clone()], key)
    }

    /// A node's TLS settings: a certificate for 127.0.0.1 from this CA, verifying
    /// peers against `trust` (which must include this CA: a node's own certificate
    /// is checked against it).
    fn node(&self, trust: &[&Ca]) -> TlsConfig {
        let (chain, key) = self.issue(&[LOCALHOST]);
        TlsConfig::node(trust.iter().map(|c| c.der()).collect(), chain, key).unwrap()
    }
}

struct Node {
    handle: TransportHandle,
    events: Receiver<Event>,
}

impl Node {
    fn addr(&self) -> SocketAddr {
        self.handle.identity().addr
    }

    fn wait_for<T>(&self, what: &str, mut pick: impl FnMut(&Event) -> Option<T>) -> T {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(e) => {
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

    /// The first connection error on a connection this side dialed (`true`) or
    /// accepted; others (a refused peer's redials) are skipped.
    fn wait_error_on(&self, what: &str, dialed: bool) -> ConnectionError {
        self.wait_for(what, |e| match e {
            Event::ConnectionError {
                dialed: d, error, ..
            } if *d == dialed => Some(error.clone()),
            Event::Frame { .. } => panic!("a frame got through: {e:?}"),
            _ => None,
        })
    }

    /// The first connection error; panics on a frame (nothing may get through).
    fn wait_error(&self, what: &str) -> (bool, ConnectionError) {
        self.wait_for(what, |e| match e {
            Event::ConnectionError { dialed, error, .. } => Some((*dialed, error.clone())),
            Event::Frame { .. } => panic!("a frame got through: {e:?}"),
            _ => None,
        })
    }
}

fn config(tls: Option<TlsConfig>) -> TransportConfig {
    let mut c = TransportConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), CLUSTER);
    c.tls = tls;
    c.reconnect_backoff_min = Duration::from_millis(10);
    c.reconnect_backoff_max = Duration::from_millis(200);
    c.reconnect_attempts = 3;
    c.housekeeping_interval = Duration::from_millis(10);
    c
}

fn start(config: TransportConfig) -> Node {
    let (tx, events) = mpsc::channel();
    let handle = Transport::start(config, move |e| {
        let _ = tx.send(e);
    })
    .expect("transport starts");
    Node { handle, events }
}

#[test]
fn two_tls_nodes_exchange_frames_both_ways_in_order() {
    let ca = Ca::new("cluster CA");
    let a = start(config(Some(ca.node(&[&ca]))));
    let b = start(config(Some(ca.node(&[&ca]))));
    a.handle.send(b.addr(), b"hello".to_vec()).unwrap();
    assert_eq!(b.wait_frame_from(a.addr()), b"hello");
    const N: u32 = 2_000;
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
    // A frame larger than one TLS record (16 KiB) arrives whole.
    let big: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
    a.handle.send(b.addr(), big.clone()).unwrap();
    assert_eq!(b.wait_frame_from(a.addr()), big);
    let (sa, sb) = (a.handle.stats(), b.handle.stats());
    assert_eq!(sb.frames_in, u64::from(N) + 2);
    assert_eq!((sa.tls_failures, sb.tls_failures), (0, 0), "{sa:?} {sb:?}");
    // Frames queued together are encrypted and written together.
    assert!(sa.write_calls < sa.frames_out, "{sa:?}");
}

#[test]
fn a_tls_node_with_a_cluster_secret_runs_the_secret_check_inside_tls() {
    let ca = Ca::new("cluster CA");
    let mut ca_cfg = config(Some(ca.node(&[&ca])));
    ca_cfg.secret = Some(b"sesame".to_vec());
    let a = start(ca_cfg);
    let mut other = config(Some(ca.node(&[&ca])));
    other.secret = Some(b"not sesame".to_vec());
    let b = start(other);
    b.handle.send(a.addr(), b"x".to_vec()).unwrap();
    let (_, e) = a.wait_error("the wrong secret refused");
    assert!(e.to_string().contains("secret"), "{e}");
    assert_eq!(a.handle.stats().frames_in, 0);
}

#[test]
fn a_node_with_a_certificate_from_another_ca_is_refused_on_both_sides() {
    let ca = Ca::new("cluster CA");
    let foreign = Ca::new("foreign CA");
    let a = start(config(Some(ca.node(&[&ca]))));

    // The stranger trusts the cluster CA (besides its own), but its certificate is
    // foreign: the acceptor refuses the certificate, the stranger hears why.
    let m = start(config(Some(foreign.node(&[&foreign, &ca]))));
    m.handle.send(a.addr(), b"let me in".to_vec()).unwrap();
    let (dialed, e) = a.wait_error("the foreign certificate refused");
    println!("acceptor: {e}");
    assert!(!dialed);
    assert_eq!(e, ConnectionError::Tls(TlsError::UnknownCa));
    assert_eq!(
        e.to_string(),
        "tls: peer certificate not signed by the cluster CA"
    );
    let (dialed, e) = m.wait_error("the stranger told");
    println!("dialer: {e}");
    assert!(dialed);
    assert!(
        matches!(&e, ConnectionError::Tls(TlsError::RefusedByPeer(r)) if r.contains("unknown CA")),
        "{e}"
    );

    // A whole other PKI: the stranger refuses the node's certificate as a dialer,
    // the node hears the refusal.
    let n = start(config(Some(foreign.node(&[&foreign]))));
    n.handle.send(a.addr(), b"let me in".to_vec()).unwrap();
    let (dialed, e) = n.wait_error("the node's certificate refused");
    assert!(dialed);
    assert_eq!(e, ConnectionError::Tls(TlsError::UnknownCa));
    // (The first stranger's redials may be refused in between.)
    a.wait_for("the node told", |e| match e {
        Event::ConnectionError {
            error: ConnectionError::Tls(TlsError::RefusedByPeer(_)),
            ..
        } => Some(()),
        Event::Frame { .. } => panic!("a frame got through: {e:?}"),
        _ => None,
    });

    let s = a.handle.stats();
    assert_eq!(s.frames_in, 0);
    assert!(s.tls_failures >= 2 && s.auth_failures >= 2, "{s:?}");
}

#[test]
fn plaintext_and_tls_peers_refuse_each_other_with_a_reason() {
    let ca = Ca::new("cluster CA");
    let a = start(config(Some(ca.node(&[&ca]))));
    let p = start(config(None));

    p.handle.send(a.addr(), b"plaintext".to_vec()).unwrap();
    let (_, e) = a.wait_error("the plaintext dialer refused");
    assert_eq!(e, ConnectionError::Tls(TlsError::NotTls), "{e}");
    let (_, e) = p.wait_error("the plaintext dialer told");
    assert_eq!(e, ConnectionError::Tls(TlsError::PeerSpeaksTls), "{e}");

    a.handle.send(p.addr(), b"tls".to_vec()).unwrap();
    let e = a.wait_error_on("the TLS dialer refused", true);
    assert_eq!(e, ConnectionError::Tls(TlsError::NotTls), "{e}");
    let e = p.wait_error_on("the plaintext acceptor", false);
    assert_eq!(e, ConnectionError::Tls(TlsError::PeerSpeaksTls), "{e}");
    assert_eq!(
        (a.handle.stats().frames_in, p.handle.stats().frames_in),
        (0, 0)
    );
}

#[test]
fn garbage_into_a_tls_listener_closes_that_connection_only() {
    let ca = Ca::new("cluster CA");
    let mut cfg = config(Some(ca.node(&[&ca])));
    // Incomplete records wait for the rest until the handshake times out.
    cfg.handshake_timeout = Duration::from_millis(300);
    let a = start(cfg);
    let inputs: [&[u8]; 4] = [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        &[0x16, 0x03, 0x01, 0xff, 0xff, 1, 2, 3, 4, 5, 6, 7],
        &[0x16, 0x03, 0x03, 0x00, 0x05, 0x01, 0x00, 0x00, 0x01, 0x00],
        &[0x17, 0x03, 0x03, 0x00, 0x10, 0xaa, 0xbb],
    ];
    for bytes in inputs {
        let mut s = TcpStream::connect(a.addr()).unwrap();
        s.write_all(bytes).unwrap();
        let (_, e) = a.wait_error("garbage refused");
        println!("{bytes:?}: {e}");
        assert!(
            matches!(
                e,
                ConnectionError::Tls(_) | ConnectionError::HandshakeTimeout
            ),
            "{e}"
        );
        drop(s);
    }
    // Random bytes of many lengths, as one write each.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for len in [1usize, 5, 6, 100, 1000, 20_000] {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let mut s = TcpStream::connect(a.addr()).unwrap();
        let _ = s.write_all(&bytes);
        drop(s);
    }
    // Still serving.
    let b = start(config(Some(ca.node(&[&ca]))));
    b.handle.send(a.addr(), b"still there".to_vec()).unwrap();
    assert_eq!(a.wait_frame_from(b.addr()), b"still there");
}

#[test]
fn a_client_without_a_certificate_is_served_and_verifies_the_node() {
    let ca = Ca::new("cluster CA");
    let foreign = Ca::new("foreign CA");
    let a = start(config(Some(ca.node(&[&ca]))));
    let c = start(config(Some(
        TlsConfig::client(vec![ca.der()], None).unwrap(),
    )));
    c.handle.send(a.addr(), b"request".to_vec()).unwrap();
    assert_eq!(a.wait_frame_from(c.addr()), b"request");
    a.handle.send(c.addr(), b"answer".to_vec()).unwrap();
    assert_eq!(c.wait_frame_from(a.addr()), b"answer");

    // A client with a certificate is served too.
    let (chain, key) = ca.issue(&[LOCALHOST]);
    let d = start(config(Some(
        TlsConfig::client(vec![ca.der()], Some((chain, key))).unwrap(),
    )));
    d.handle
        .send(a.addr(), b"with a certificate".to_vec())
        .unwrap();
    assert_eq!(a.wait_frame_from(d.addr()), b"with a certificate");

    // A client that trusts another CA refuses the node.
    let w = start(config(Some(
        TlsConfig::client(vec![foreign.der()], None).unwrap(),
    )));
    w.handle.send(a.addr(), b"request".to_vec()).unwrap();
    let (dialed, e) = w.wait_error("the node refused by the client");
    assert!(dialed);
    assert_eq!(e, ConnectionError::Tls(TlsError::UnknownCa));
}

#[test]
fn a_client_is_known_by_the_address_it_connects_from() {
    let ca = Ca::new("cluster CA");
    let a = start(config(Some(ca.node(&[&ca]))));
    // It claims 127.0.0.2 but connects from 127.0.0.1.
    let mut cfg = config(Some(TlsConfig::client(vec![ca.der()], None).unwrap()));
    cfg.advertise = Some(SocketAddr::from(([127, 0, 0, 2], 40_000)));
    let c = start(cfg);
    c.handle.send(a.addr(), b"request".to_vec()).unwrap();
    let (_, e) = a.wait_error("the spoofing client refused");
    assert!(
        matches!(
            e,
            ConnectionError::Tls(TlsError::ClientAddressMismatch { .. })
        ),
        "{e}"
    );
    assert_eq!(a.handle.stats().frames_in, 0);
}

#[test]
fn a_node_whose_certificate_does_not_name_its_address_does_not_start() {
    let ca = Ca::new("cluster CA");
    let (chain, key) = ca.issue(&["10.9.8.7".parse().unwrap()]);
    let tls = TlsConfig::node(vec![ca.der()], chain, key).unwrap();
    let err = Transport::start(config(Some(tls)), |_| {})
        .err()
        .expect("refused");
    assert!(
        err.to_string()
            .contains("does not name this node's address 127.0.0.1"),
        "{err}"
    );
}

/// A hand-driven TLS session without a client certificate whose hello claims a node
/// identity (no client flag), as a transport never sends: the acceptor refuses it
/// after the TLS handshake, and nothing it sent reaches the handler.
#[test]
fn a_node_identity_without_a_certificate_is_refused() {
    let ca = Ca::new("cluster CA");
    let a = start(config(Some(ca.node(&[&ca]))));
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der()).unwrap();
    #[allow(deprecated)] // the ring provider, as the transport uses
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls_pki_types::ServerName::IpAddress(LOCALHOST.into());
    let session = rustls::ClientConnection::new(Arc::new(client), name).unwrap();
    let socket = TcpStream::connect(a.addr()).unwrap();
    socket.set_read_timeout(Some(WAIT)).unwrap();
    let mut tls = rustls::StreamOwned::new(session, socket);

    let claimed = SocketAddr::from(([127, 0, 0, 1], 1));
    let hs_config = HandshakeConfig {
        cluster: CLUSTER.to_string(),
        identity: Identity {
            addr: claimed,
            incarnation: 1,
        },
        secret: None,
        client: false,
    };
    let mut hs = Handshake::new(&hs_config, Role::Dialer, Some(a.addr()), [3; 32]).unwrap();
    let mut out = Vec::new();
    hs.take_output(&mut out);
    tls.write_all(&out).unwrap();
    // Then a data frame, which must not arrive.
    tls.write_all(&[0, 0, 0, 2, 0, 42]).unwrap();
    tls.flush().unwrap();
    let (dialed, e) = a.wait_error("the certificate-less node refused");
    assert!(!dialed);
    assert_eq!(e, ConnectionError::Tls(TlsError::NoCertificate(claimed)));
    assert_eq!(
        e.to_string(),
        "tls: peer claims node identity 127.0.0.1:1 but presented no certificate"
    );
    // The acceptor closed the connection.
    let mut rest = Vec::new();
    let _ = tls.read_to_end(&mut rest);
    let s = a.handle.stats();
    assert_eq!(s.frames_in, 0);
    assert!(s.auth_failures >= 1 && s.tls_failures >= 1, "{s:?}");
}
