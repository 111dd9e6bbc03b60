//! TLS 1.3 for the transport: settings checked once at start ([`TlsConfig`]), and
//! the reasons a TLS connection is refused ([`TlsError`]).
//!
//! rustls is used sans-IO inside the event loop: ciphertext read from the socket
//! goes into the session (`read_tls`, `process_new_packets`), the plaintext it
//! yields goes to the handshake and the frame decoder, and a connection's batched
//! output goes into the session's writer before one `write_tls`. The crypto provider
//! is `ring`; only TLS 1.3 is offered.
//!
//! # What is authenticated
//! - Every certificate must chain to the configured CA (the cluster CA).
//! - A dialer checks that the acceptor's certificate names the IP address it dialed
//!   (an IP subjectAltName), and the handshake inside TLS then checks that the
//!   acceptor's identity is that address.
//! - An acceptor asks for a certificate but does not require one at the TLS level,
//!   because the same listener takes nodes and clients. A peer whose hello claims a
//!   node identity must have presented a certificate naming that identity's IP
//!   address. A peer whose hello says it is a client may come without one, and is
//!   then known only by the address it connects from: its identity's IP must be
//!   the connection's source address.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::ServerCertVerifier;
use rustls::crypto::CryptoProvider;
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{
    AlertDescription, CertificateError, ClientConfig, ClientConnection, RootCertStore,
    ServerConfig, ServerConnection,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use thiserror::Error;

/// Which part of the TLS settings a setup error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsItem {
    /// This side's certificate (chain).
    Certificate,
    /// This side's private key.
    PrivateKey,
    /// The certificate authority peers are verified against.
    Ca,
}

impl TlsItem {
    /// The setting's name in a node's configuration (`kvstore.tls.<name>`).
    pub fn setting(self) -> &'static str {
        match self {
            TlsItem::Certificate => "certificate",
            TlsItem::PrivateKey => "private-key",
            TlsItem::Ca => "ca",
        }
    }
}

impl fmt::Display for TlsItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.setting())
    }
}

/// TLS settings that cannot work: an unreadable file, no PEM item in it, a key that
/// does not match the certificate, a certificate the CA did not sign.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("tls {item}: {reason}")]
pub struct TlsSetupError {
    /// The setting at fault.
    pub item: TlsItem,
    /// Why, naming the file when one was read.
    pub reason: String,
}

fn setup_err(item: TlsItem, reason: impl Into<String>) -> TlsSetupError {
    TlsSetupError {
        item,
        reason: reason.into(),
    }
}

/// Why a TLS connection was refused or broke. Each is a reason a log line can give.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TlsError {
    /// The peer's certificate does not chain to our CA.
    #[error("peer certificate not signed by the cluster CA")]
    UnknownCa,
    /// We dialed an address the acceptor's certificate does not name.
    #[error(
        "peer certificate does not name the address dialed ({0}): no matching IP subjectAltName"
    )]
    NotValidForAddress(IpAddr),
    /// The certificate is expired, not yet valid, badly signed, or unusable.
    #[error("peer certificate rejected: {0}")]
    BadCertificate(String),
    /// A peer claiming a node identity presented no certificate.
    #[error("peer claims node identity {0} but presented no certificate")]
    NoCertificate(SocketAddr),
    /// The peer's certificate does not name the identity its hello claims.
    #[error("peer claims node identity {0}, which its certificate does not name")]
    IdentityNotCertified(SocketAddr),
    /// A client's identity is not on the address its connection comes from.
    #[error("client claims identity {claimed} but connects from {remote}")]
    ClientAddressMismatch {
        /// The identity in its hello.
        claimed: SocketAddr,
        /// The connection's source address.
        remote: SocketAddr,
    },
    /// The peer ended the TLS handshake with an alert: it refused our certificate
    /// (or lack of one), or something else about us.
    #[error("peer refused the TLS session ({0})")]
    RefusedByPeer(String),
    /// The bytes are not TLS: a peer without TLS configured, or garbage.
    #[error("peer does not speak TLS (no tls configured there?)")]
    NotTls,
    /// We have no TLS configured and the peer speaks it.
    #[error("peer speaks TLS and this side has no tls configured")]
    PeerSpeaksTls,
    /// A client without a certificate cannot accept TLS connections.
    #[error("this side has no certificate, so it accepts no TLS connections")]
    CannotAccept,
    /// Any other TLS failure.
    #[error("TLS: {0}")]
    Protocol(String),
}

impl TlsError {
    /// Whether the failure is about who the peer is (or who we are to it), rather
    /// than about a peer that does not speak TLS at all.
    pub fn is_auth_failure(&self) -> bool {
        !matches!(
            self,
            TlsError::NotTls
                | TlsError::PeerSpeaksTls
                | TlsError::CannotAccept
                | TlsError::Protocol(_)
        )
    }

    /// The error for what `process_new_packets` reported. `handshaking`: no TLS
    /// handshake had completed on this connection yet.
    pub(crate) fn from_rustls(
        e: &rustls::Error,
        dialed: Option<SocketAddr>,
        handshaking: bool,
    ) -> TlsError {
        use rustls::Error as E;
        match e {
            // A CA of the same name whose key did not sign it: not ours either.
            E::InvalidCertificate(
                CertificateError::UnknownIssuer | CertificateError::BadSignature,
            ) => TlsError::UnknownCa,
            E::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            ) => match dialed {
                Some(a) => TlsError::NotValidForAddress(a.ip()),
                None => TlsError::BadCertificate(e.to_string()),
            },
            E::InvalidCertificate(c) => TlsError::BadCertificate(format!("{c:?}")),
            E::NoCertificatesPresented => {
                TlsError::BadCertificate("no certificate presented".into())
            }
            E::AlertReceived(a) => TlsError::RefusedByPeer(alert_text(*a)),
            E::InvalidMessage(_)
            | E::InappropriateMessage { .. }
            | E::InappropriateHandshakeMessage { .. }
                if handshaking =>
            {
                TlsError::NotTls
            }
            other => TlsError::Protocol(other.to_string()),
        }
    }
}

fn alert_text(a: AlertDescription) -> String {
    match a {
        AlertDescription::UnknownCA => {
            "unknown CA: our certificate is not signed by its cluster CA".into()
        }
        AlertDescription::BadCertificate | AlertDescription::DecryptError => {
            format!("{a:?}: it does not accept our certificate; is it signed by its cluster CA?")
        }
        AlertDescription::CertificateRequired => "it requires a certificate".into(),
        AlertDescription::CertificateExpired => "our certificate has expired".into(),
        AlertDescription::ProtocolVersion => "no common protocol version (TLS 1.3 only)".into(),
        other => format!("alert {other:?}"),
    }
}

/// The TLS side of a transport. Build it with [`TlsConfig::node`] or
/// [`TlsConfig::client`] (or their `_files` forms, which read PEM files). Cheap to
/// clone.
#[derive(Clone)]
pub struct TlsConfig {
    inner: Arc<Inner>,
}

struct Inner {
    /// `None` for a client without a certificate: it cannot accept connections.
    server: Option<Arc<ServerConfig>>,
    client: Arc<ClientConfig>,
    /// The end-entity certificate this side presents, if any.
    certificate: Option<CertificateDer<'static>>,
    /// A client (else a node): sent in the hello, so acceptors do not require a
    /// certificate from it.
    is_client: bool,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("client", &self.inner.is_client)
            .field("certificate", &self.inner.certificate.is_some())
            .finish()
    }
}

/// The `ring` provider. rustls 0.23.48 deprecates it in favour of aws-lc-rs (for
/// post-quantum key exchange), but aws-lc-rs needs cmake and a C toolchain setup
/// that the static build does not have; see `docs/dependencies.md`.
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a PEM file into bytes, naming the file in the error.
fn read(item: TlsItem, path: &Path) -> Result<Vec<u8>, TlsSetupError> {
    std::fs::read(path).map_err(|e| setup_err(item, format!("cannot read {}: {e}", path.display())))
}

/// Every certificate in PEM text; at least one.
pub fn parse_certificates(
    item: TlsItem,
    pem: &[u8],
    origin: &str,
) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let mut certs = Vec::new();
    for c in CertificateDer::pem_slice_iter(pem) {
        certs.push(c.map_err(|e| setup_err(item, format!("{origin}: not valid PEM: {e}")))?);
    }
    if certs.is_empty() {
        return Err(setup_err(
            item,
            format!("{origin}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it"),
        ));
    }
    Ok(certs)
}

/// The first private key in PEM text (PKCS#8, PKCS#1 or SEC1).
pub fn parse_private_key(
    pem: &[u8],
    origin: &str,
) -> Result<PrivateKeyDer<'static>, TlsSetupError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| {
        let why = match e {
            rustls_pki_types::pem::Error::NoItemsFound => "no PEM private key in it".to_string(),
            e => format!("not a valid PEM private key: {e}"),
        };
        setup_err(TlsItem::PrivateKey, format!("{origin}: {why}"))
    })
}

fn roots(ca: &[CertificateDer<'static>]) -> Result<Arc<RootCertStore>, TlsSetupError> {
    let mut store = RootCertStore::empty();
    for c in ca {
        store
            .add(c.clone())
            .map_err(|e| setup_err(TlsItem::Ca, format!("not a usable CA certificate: {e}")))?;
    }
    Ok(Arc::new(store))
}

impl TlsConfig {
    /// A node: presents `chain` (its certificate first) with `key` on every
    /// connection, verifies every peer against `ca`, and requires a certificate from
    /// every peer that claims to be a node. Checks that the key matches the
    /// certificate and that `ca` signed it (for use both as a server and as a client).
    pub fn node(
        ca: Vec<CertificateDer<'static>>,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<TlsConfig, TlsSetupError> {
        Self::build(ca, Some((chain, key)), false)
    }

    /// A client: verifies nodes against `ca`, and presents `identity` (certificate
    /// chain and key) when given. Without one it cannot accept connections.
    pub fn client(
        ca: Vec<CertificateDer<'static>>,
        identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    ) -> Result<TlsConfig, TlsSetupError> {
        Self::build(ca, identity, true)
    }

    /// [`TlsConfig::node`] from PEM files; errors name the file.
    pub fn node_files(
        certificate: &Path,
        private_key: &Path,
        ca: &Path,
    ) -> Result<TlsConfig, TlsSetupError> {
        let (ca, identity) = Self::read_files(ca, Some((certificate, private_key)))?;
        let Some((chain, key)) = identity else {
            return Err(setup_err(TlsItem::Certificate, "missing"));
        };
        Self::node(ca, chain, key)
    }

    /// [`TlsConfig::client`] from PEM files; errors name the file.
    pub fn client_files(
        ca: &Path,
        identity: Option<(&Path, &Path)>,
    ) -> Result<TlsConfig, TlsSetupError> {
        let (ca, identity) = Self::read_files(ca, identity)?;
        Self::client(ca, identity)
    }

    #[allow(clippy::type_complexity)]
    fn read_files(
        ca: &Path,
        identity: Option<(&Path, &Path)>,
    ) -> Result<
        (
            Vec<CertificateDer<'static>>,
            Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
        ),
        TlsSetupError,
    > {
        let ca_certs = parse_certificates(
            TlsItem::Ca,
            &read(TlsItem::Ca, ca)?,
            &ca.display().to_string(),
        )?;
        let identity = match identity {
            None => None,
            Some((cert, key)) => {
                let chain = parse_certificates(
                    TlsItem::Certificate,
                    &read(TlsItem::Certificate, cert)?,
                    &cert.display().to_string(),
                )?;
                let key = parse_private_key(
                    &read(TlsItem::PrivateKey, key)?,
                    &key.display().to_string(),
                )?;
                Some((chain, key))
            }
        };
        Ok((ca_certs, identity))
    }

    fn build(
        ca: Vec<CertificateDer<'static>>,
        identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
        is_client: bool,
    ) -> Result<TlsConfig, TlsSetupError> {
        if ca.is_empty() {
            return Err(setup_err(TlsItem::Ca, "no CA certificate"));
        }
        let provider = provider();
        let roots = roots(&ca)?;
        let versions = [&rustls::version::TLS13];
        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                .allow_unauthenticated()
                .build()
                .map_err(|e| setup_err(TlsItem::Ca, format!("cannot verify peers with it: {e}")))?;
        let client_builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&versions)
            .map_err(|e| setup_err(TlsItem::Ca, format!("TLS 1.3 unavailable: {e}")))?
            .with_root_certificates(roots.clone());
        let Some((chain, key)) = identity else {
            return Ok(TlsConfig {
                inner: Arc::new(Inner {
                    server: None,
                    client: Arc::new(client_builder.with_no_client_auth()),
                    certificate: None,
                    is_client,
                }),
            });
        };
        let Some(end_entity) = chain.first().cloned() else {
            return Err(setup_err(TlsItem::Certificate, "no certificate"));
        };
        // Loads the key and compares its public half with the certificate's.
        rustls::sign::CertifiedKey::from_der(chain.clone(), key.clone_key(), &provider).map_err(
            |e| match e {
                rustls::Error::InconsistentKeys(_) => setup_err(
                    TlsItem::PrivateKey,
                    "the private key does not match the certificate",
                ),
                e => setup_err(TlsItem::PrivateKey, format!("unusable private key: {e}")),
            },
        )?;
        check_signed_by_ca(&roots, &provider, &chain, is_client)?;
        let client = client_builder
            .with_client_auth_cert(chain.clone(), key.clone_key())
            .map_err(|e| {
                setup_err(
                    TlsItem::Certificate,
                    format!("unusable as a client certificate: {e}"),
                )
            })?;
        let server = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&versions)
            .map_err(|e| setup_err(TlsItem::Certificate, format!("TLS 1.3 unavailable: {e}")))?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(chain, key)
            .map_err(|e| {
                setup_err(
                    TlsItem::Certificate,
                    format!("unusable as a server certificate: {e}"),
                )
            })?;
        Ok(TlsConfig {
            inner: Arc::new(Inner {
                server: Some(Arc::new(server)),
                client: Arc::new(client),
                certificate: Some(end_entity),
                is_client,
            }),
        })
    }

    /// Whether this side is a client (it says so in its hello).
    pub fn is_client(&self) -> bool {
        self.inner.is_client
    }

    /// Whether this side presents a certificate.
    pub fn has_certificate(&self) -> bool {
        self.inner.certificate.is_some()
    }

    /// Checks that this side's certificate names `ip` (an IP subjectAltName), as
    /// peers that dial that address require. A node calls it for its advertised
    /// address at start.
    pub fn check_names(&self, ip: IpAddr) -> Result<(), TlsSetupError> {
        let Some(cert) = &self.inner.certificate else {
            return Ok(());
        };
        if certificate_names(cert, ip) {
            Ok(())
        } else {
            Err(setup_err(
                TlsItem::Certificate,
                format!(
                    "the certificate does not name this node's address {ip} \
                     (it needs an IP subjectAltName {ip})"
                ),
            ))
        }
    }

    /// A session for a connection we dialed to `addr`: the acceptor's certificate
    /// must name `addr`'s IP.
    pub(crate) fn dial(&self, addr: SocketAddr) -> Result<rustls::Connection, TlsError> {
        ClientConnection::new(
            self.inner.client.clone(),
            ServerName::IpAddress(addr.ip().into()),
        )
        .map(rustls::Connection::Client)
        .map_err(|e| TlsError::Protocol(e.to_string()))
    }

    /// A session for a connection we accepted.
    pub(crate) fn accept(&self) -> Result<rustls::Connection, TlsError> {
        let Some(server) = &self.inner.server else {
            return Err(TlsError::CannotAccept);
        };
        ServerConnection::new(server.clone())
            .map(rustls::Connection::Server)
            .map_err(|e| TlsError::Protocol(e.to_string()))
    }
}

/// Whether `cert` has a subjectAltName for `ip`. Unparseable means no.
pub(crate) fn certificate_names(cert: &CertificateDer<'_>, ip: IpAddr) -> bool {
    ParsedCertificate::try_from(cert)
        .and_then(|p| rustls::client::verify_server_name(&p, &ServerName::IpAddress(ip.into())))
        .is_ok()
}

/// Checks, as an acceptor, that a peer whose hello passed may have the identity it
/// claims (see the module's documentation): `certificate` is the end-entity
/// certificate it presented (already verified against the CA by rustls).
pub(crate) fn check_peer_identity(
    claimed: SocketAddr,
    claims_client: bool,
    remote: SocketAddr,
    certificate: Option<&CertificateDer<'_>>,
) -> Result<(), TlsError> {
    if claims_client {
        if claimed.ip() != remote.ip() {
            return Err(TlsError::ClientAddressMismatch { claimed, remote });
        }
        return Ok(());
    }
    match certificate {
        None => Err(TlsError::NoCertificate(claimed)),
        Some(c) if certificate_names(c, claimed.ip()) => Ok(()),
        Some(_) => Err(TlsError::IdentityNotCertified(claimed)),
    }
}

/// Checks that `ca` signed `chain`'s first certificate, for the uses this side makes
/// of it: as a client certificate always, as a server certificate for a node.
fn check_signed_by_ca(
    roots: &Arc<RootCertStore>,
    provider: &Arc<CryptoProvider>,
    chain: &[CertificateDer<'static>],
    is_client: bool,
) -> Result<(), TlsSetupError> {
    let Some((end_entity, intermediates)) = chain.split_first() else {
        return Err(setup_err(TlsItem::Certificate, "no certificate"));
    };
    let now = UnixTime::now();
    let explain = |use_: &str, e: rustls::Error| {
        let why = match e {
            rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer | CertificateError::BadSignature,
            ) => "the certificate is not signed by the CA in tls.ca".to_string(),
            rustls::Error::InvalidCertificate(c) => {
                format!("the certificate is not usable {use_}: {c:?}")
            }
            e => format!("the certificate is not usable {use_}: {e}"),
        };
        setup_err(TlsItem::Certificate, why)
    };
    let as_client = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .map_err(|e| setup_err(TlsItem::Ca, format!("cannot verify with it: {e}")))?;
    as_client
        .verify_client_cert(end_entity, intermediates, now)
        .map_err(|e| explain("as a client certificate (extendedKeyUsage clientAuth)", e))?;
    if !is_client {
        // The chain and the key usage, for any name: a name mismatch is reported only
        // after both passed, and the node's own address is checked by `check_names`.
        let as_server = rustls::client::WebPkiServerVerifier::builder_with_provider(
            roots.clone(),
            provider.clone(),
        )
        .build()
        .map_err(|e| setup_err(TlsItem::Ca, format!("cannot verify with it: {e}")))?;
        let any = ServerName::IpAddress(IpAddr::from([0, 0, 0, 0]).into());
        match as_server.verify_server_cert(end_entity, intermediates, &any, &[], now) {
            Ok(_)
            | Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => {}
            Err(e) => {
                return Err(explain(
                    "as a server certificate (extendedKeyUsage serverAuth)",
                    e,
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa,
        KeyPair, KeyUsagePurpose, SanType,
    };

    fn ca() -> CertifiedIssuer<'static, KeyPair> {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
    }

    /// PEM certificate and key for `ip` signed by `ca`, with the given usages.
    fn leaf(
        ca: &CertifiedIssuer<'static, KeyPair>,
        ip: &str,
        usages: Vec<ExtendedKeyUsagePurpose>,
    ) -> (String, String) {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.subject_alt_names = vec![SanType::IpAddress(ip.parse().unwrap())];
        p.extended_key_usages = usages;
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, ca).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn both() -> Vec<ExtendedKeyUsagePurpose> {
        vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ]
    }

    fn node(ca_pem: &str, cert: &str, key: &str) -> Result<TlsConfig, TlsSetupError> {
        let ca = parse_certificates(TlsItem::Ca, ca_pem.as_bytes(), "ca.pem")?;
        let chain = parse_certificates(TlsItem::Certificate, cert.as_bytes(), "node.pem")?;
        let key = parse_private_key(key.as_bytes(), "node.key")?;
        TlsConfig::node(ca, chain, key)
    }

    #[test]
    fn a_good_node_certificate_is_accepted_and_names_its_address() {
        let ca = ca();
        let (cert, key) = leaf(&ca, "10.0.0.1", both());
        let tls = node(&ca.pem(), &cert, &key).unwrap();
        tls.check_names("10.0.0.1".parse().unwrap()).unwrap();
        let e = tls.check_names("10.0.0.2".parse().unwrap()).unwrap_err();
        assert_eq!(e.item, TlsItem::Certificate);
        assert!(e.reason.contains("10.0.0.2"), "{e}");
    }

    #[test]
    fn bad_settings_name_the_item_and_the_reason() {
        let ca = ca();
        let (cert, key) = leaf(&ca, "10.0.0.1", both());
        let (_, other_key) = leaf(&ca, "10.0.0.1", both());
        let e = node(&ca.pem(), &cert, &other_key).unwrap_err();
        assert_eq!(e.item, TlsItem::PrivateKey);
        assert!(e.reason.contains("does not match the certificate"), "{e}");

        let foreign = self::ca();
        let (fcert, fkey) = leaf(&foreign, "10.0.0.1", both());
        let e = node(&ca.pem(), &fcert, &fkey).unwrap_err();
        assert_eq!(e.item, TlsItem::Certificate);
        assert!(e.reason.contains("not signed by the CA"), "{e}");

        // A node's certificate serves both ends of a connection.
        let (scert, skey) = leaf(&ca, "10.0.0.1", vec![ExtendedKeyUsagePurpose::ServerAuth]);
        let e = node(&ca.pem(), &scert, &skey).unwrap_err();
        assert!(e.reason.contains("clientAuth"), "{e}");
        let (ccert, ckey) = leaf(&ca, "10.0.0.1", vec![ExtendedKeyUsagePurpose::ClientAuth]);
        let e = node(&ca.pem(), &ccert, &ckey).unwrap_err();
        assert!(e.reason.contains("serverAuth"), "{e}");
        // ... while a client's needs only clientAuth.
        let chain = parse_certificates(TlsItem::Certificate, ccert.as_bytes(), "c").unwrap();
        let k = parse_private_key(ckey.as_bytes(), "k").unwrap();
        TlsConfig::client(vec![ca.der().clone()], Some((chain, k))).unwrap();

        let e = node(&ca.pem(), "not pem", &key).unwrap_err();
        assert_eq!(e.item, TlsItem::Certificate);
        assert!(e.reason.contains("node.pem: no PEM certificate"), "{e}");
        let e = node(&ca.pem(), &cert, &cert).unwrap_err();
        assert_eq!(e.item, TlsItem::PrivateKey);
        assert!(e.reason.contains("node.key: no PEM private key"), "{e}");
        let e = node("", &cert, &key).unwrap_err();
        assert_eq!(e.item, TlsItem::Ca);
        let broken = cert.replace("-----END CERTIFICATE-----", "");
        let e = node(&ca.pem(), &broken, &key).unwrap_err();
        assert!(e.reason.contains("node.pem"), "{e}");

        let e = TlsConfig::client_files(Path::new("/nonexistent/ca.pem"), None).unwrap_err();
        assert_eq!(e.item, TlsItem::Ca);
        assert!(
            e.reason.starts_with("cannot read /nonexistent/ca.pem"),
            "{e}"
        );
    }

    #[test]
    fn a_claimed_identity_is_checked_against_the_certificate_or_the_source() {
        let ca = ca();
        let (cert, _) = leaf(&ca, "10.0.0.1", both());
        let der = parse_certificates(TlsItem::Certificate, cert.as_bytes(), "c")
            .unwrap()
            .remove(0);
        let at = |s: &str| -> SocketAddr { s.parse().unwrap() };
        let remote = at("10.0.0.1:5555");
        check_peer_identity(at("10.0.0.1:7000"), false, remote, Some(&der)).unwrap();
        assert_eq!(
            check_peer_identity(at("10.0.0.2:7000"), false, remote, Some(&der)),
            Err(TlsError::IdentityNotCertified(at("10.0.0.2:7000")))
        );
        assert_eq!(
            check_peer_identity(at("10.0.0.1:7000"), false, remote, None),
            Err(TlsError::NoCertificate(at("10.0.0.1:7000")))
        );
        check_peer_identity(at("10.0.0.1:9000"), true, remote, None).unwrap();
        assert!(matches!(
            check_peer_identity(at("10.0.0.3:9000"), true, remote, Some(&der)),
            Err(TlsError::ClientAddressMismatch { .. })
        ));
    }
}
