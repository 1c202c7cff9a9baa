//! Downstream TLS of the gateway, on the shared pieces of `portcullis-identity` (restricted
//! provider, PEM loading, verifier delegation): each listener's certificate and client verifier
//! as part of a generation ([`ListenerTls`]), the slot through which handshakes read them from
//! the current generation ([`ListenerSlot`]; refusals counted by reason), and the
//! post-handshake hook that turns the verified leaf into the connection's [`Identity`].
//!
//! [`Identity`]: portcullis_policy::Identity

use std::collections::HashSet;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora_core::listeners::TlsAccept;
use pingora_core::protocols::tls::TlsRef;
use portcullis_identity::{
    load_crls, root_store, webpki_client_verifier, ClientAuthMode, ClientVerifier, RefusalObserver,
    RefusalReason, Serial, TrustDomainVerifier, UnknownRevocation, VerifierSource,
};
use portcullis_policy::{ClientAuth, ListenerConfig, TlsListenerConfig};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientHello, ResolvesServerCert, ServerConfig};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

use crate::abuse::{AbusePolicy, RefusalWindow};
use crate::forwarding::IdentityHeaders;
use crate::identity::{peer_identity, ConnectionIdentity};
use crate::metrics::Metrics;
use crate::snapshot::Snapshot;
use crate::GatewayError;

/// Reads every certificate of a PEM file (each one checked to parse).
pub(crate) fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, GatewayError> {
    Ok(portcullis_identity::load_certs(path)?)
}

/// Reads the private key of a PEM file (PKCS#8, SEC1 or PKCS#1).
pub(crate) fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, GatewayError> {
    Ok(portcullis_identity::load_private_key(path)?)
}

/// Loads a certificate chain and its key, and checks that they belong together.
pub(crate) fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, GatewayError> {
    Ok(portcullis_identity::load_certified_key(cert, key)?)
}

/// Counts and logs a listener's refused client certificates.
struct ListenerRefusals {
    listener: String,
    metrics: Arc<Metrics>,
}

impl RefusalObserver for ListenerRefusals {
    fn refused(&self, reason: RefusalReason) {
        self.metrics.tls_failure(&self.listener, reason.as_str());
        tracing::info!(listener = %self.listener, tls.refusal = reason.as_str(), "client certificate refused");
    }
}

/// A listener's TLS material in one generation: its certificate and its client verifier
/// (trust bundle and CRL), read from the files its config names.
pub(crate) struct ListenerTls {
    pub name: String,
    pub client_auth: ClientAuth,
    certificate: Arc<CertifiedKey>,
    verifier: Option<Arc<dyn ClientCertVerifier>>,
    /// Serials on the listener's CRL, for the per-request check of established connections.
    /// Keyed by serial alone: with 128-bit random serials a clash between issuers is not a
    /// practical concern, and would refuse, never admit.
    revoked: HashSet<Serial>,
}

impl fmt::Debug for ListenerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListenerTls")
            .field("name", &self.name)
            .field("client_auth", &self.client_auth)
            .finish_non_exhaustive()
    }
}

impl ListenerTls {
    /// Reads the listener's certificate, key, client CA bundle and CRL; any problem is an
    /// error naming the file.
    pub(crate) fn load(listener: &ListenerConfig) -> Result<Self, GatewayError> {
        let tls = &listener.tls;
        let crls = match &tls.crl {
            Some(path) => load_crls(path)?,
            None => Vec::new(),
        };
        Ok(Self {
            name: listener.name.clone(),
            client_auth: tls.client_auth,
            certificate: Arc::new(load_certified_key(&tls.certificate, &tls.private_key)?),
            revoked: revoked_serials(&crls, tls)?,
            verifier: build_webpki_verifier(tls, crls)?,
        })
    }

    /// Whether `serial` is on the listener's revocation list: a hash lookup.
    pub(crate) fn is_revoked(&self, serial: &Serial) -> bool {
        self.revoked.contains(serial)
    }
}

/// The serials of the revoked certificates in `crls`.
fn revoked_serials(
    crls: &[CertificateRevocationListDer<'static>],
    tls: &TlsListenerConfig,
) -> Result<HashSet<Serial>, GatewayError> {
    let mut serials = HashSet::new();
    for crl in crls {
        let (_, parsed) = x509_parser::parse_x509_crl(crl.as_ref()).map_err(|e| {
            let path = tls.crl.as_deref().map(Path::display);
            GatewayError::Tls(format!(
                "{}: unreadable CRL: {e}",
                path.map(|p| p.to_string()).unwrap_or_default()
            ))
        })?;
        serials.extend(
            parsed
                .iter_revoked_certificates()
                .map(|r| Serial::from_be_bytes(r.raw_serial())),
        );
    }
    Ok(serials)
}

/// What tells us a file changed: modification time and length.
pub(crate) type FileStamp = (Option<SystemTime>, u64);

pub(crate) fn stamp(path: &Path) -> Option<FileStamp> {
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.modified().ok(), m.len()))
}

/// How the handshakes of the listener bound at `index` (start-up order) find their
/// certificate and verifier: in the current generation, loaded at each handshake.
#[derive(Debug)]
pub(crate) struct ListenerSlot {
    generation: Arc<ArcSwap<Snapshot>>,
    index: usize,
}

impl ListenerSlot {
    pub(crate) fn new(generation: Arc<ArcSwap<Snapshot>>, index: usize) -> Self {
        Self { generation, index }
    }

    /// The verifier rustls calls for this listener, counting refusals by reason; `None` when
    /// the listener does not ask for client certificates. On a `required` listener it does not
    /// make a certificate mandatory to rustls: a handshake without one completes so that the
    /// accept loop can count it, and closes it before any HTTP (`connections`). A certificate
    /// that is presented is verified in full either way.
    pub(crate) fn verifier(
        self,
        listener: &str,
        client_auth: ClientAuth,
        metrics: Arc<Metrics>,
    ) -> Option<Arc<dyn ClientCertVerifier>> {
        client_auth_mode(client_auth)?;
        let mode = ClientAuthMode::Optional;
        let generation = Arc::clone(&self.generation);
        let observer = ListenerRefusals {
            listener: listener.to_owned(),
            metrics: Arc::clone(&metrics),
        };
        let verifier = ClientVerifier::from_source(self, mode).with_observer(Arc::new(observer));
        Some(Arc::new(FleetChecked {
            inner: Arc::new(verifier),
            generation,
            listener: listener.to_owned(),
            metrics,
        }))
    }
}

impl ResolvesServerCert for ListenerSlot {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let generation = self.generation.load();
        generation
            .tls
            .get(self.index)
            .map(|l| Arc::clone(&l.certificate))
    }
}

impl VerifierSource for ListenerSlot {
    fn with_verifier<R>(&self, check: impl FnOnce(&dyn ClientCertVerifier) -> R) -> Option<R> {
        let generation = self.generation.load();
        let verifier = generation.tls.get(self.index)?.verifier.as_deref()?;
        Some(check(verifier))
    }
}

/// A listener's client verifier with the fleet's revocation set (etcd) checked after it: a
/// certificate the verifier accepts (trust bundle, CRL, validity) whose serial is in the
/// current generation's fleet set is refused as revoked.
struct FleetChecked {
    inner: Arc<dyn ClientCertVerifier>,
    generation: Arc<ArcSwap<Snapshot>>,
    listener: String,
    metrics: Arc<Metrics>,
}

impl fmt::Debug for FleetChecked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FleetChecked")
            .field("listener", &self.listener)
            .finish_non_exhaustive()
    }
}

impl ClientCertVerifier for FleetChecked {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let generation = self.generation.load();
        let Some(fleet) = generation.fleet.as_ref() else {
            return Ok(verified);
        };
        // The verifier above has parsed it already; unreadable here would be refused anyway.
        let serial = x509_parser::parse_x509_certificate(end_entity.as_ref())
            .map(|(_, cert)| Serial::from_be_bytes(cert.raw_serial()))
            .map_err(|_| {
                rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
            })?;
        if fleet.contains(&serial) {
            self.metrics
                .tls_failure(&self.listener, RefusalReason::Revoked.as_str());
            tracing::info!(listener = %self.listener, tls.refusal = "revoked", tls.serial = %serial, revocation.source = "fleet", "client certificate refused");
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Revoked,
            ));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn requires_raw_public_keys(&self) -> bool {
        self.inner.requires_raw_public_keys()
    }
}

/// A listener's rustls config: its certificate and verifier from the current generation, the
/// restricted provider, HTTP/2 and HTTP/1.1 by ALPN, and the server's cipher suite order
/// (strongest first) over the client's.
pub(crate) fn server_config(
    slot: impl Fn() -> ListenerSlot,
    listener: &str,
    client_auth: ClientAuth,
    metrics: Arc<Metrics>,
) -> Result<Arc<ServerConfig>, GatewayError> {
    let builder = ServerConfig::builder_with_provider(portcullis_identity::provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| GatewayError::Tls(format!("listener {listener}: {e}")))?;
    let builder = match slot().verifier(listener, client_auth, metrics) {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(slot()));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.ignore_client_order = true;
    Ok(Arc::new(config))
}

/// Whether a listener asks for client certificates, and how; `None` when they are off.
fn client_auth_mode(client_auth: ClientAuth) -> Option<ClientAuthMode> {
    match client_auth {
        ClientAuth::Off => None,
        ClientAuth::Optional => Some(ClientAuthMode::Optional),
        ClientAuth::Required => Some(ClientAuthMode::Required),
    }
}

/// The client-certificate verifier of a listener's settings (webpki over `client_ca`, or one
/// webpki verifier per trust domain); `None` when client certificates are off.
pub(crate) fn build_webpki_verifier(
    config: &TlsListenerConfig,
    crls: Vec<CertificateRevocationListDer<'static>>,
) -> Result<Option<Arc<dyn ClientCertVerifier>>, GatewayError> {
    let Some(mode) = client_auth_mode(config.client_auth) else {
        return Ok(None);
    };
    // The CA's CRL covers the leaves it issued. A leaf from an issuer without a CRL here has
    // unknown status and is accepted; a stale CRL still applies (the CA republishes it well
    // before nextUpdate, and refusing everyone because of it would be an outage).
    let webpki = |bundle: &Path, crls: Vec<CertificateRevocationListDer<'static>>| {
        let roots = root_store(load_certs(bundle)?, &bundle.display().to_string())?;
        webpki_client_verifier(Arc::new(roots), crls, UnknownRevocation::Allow, mode).map_err(|e| {
            let what = config.crl.as_deref().unwrap_or(bundle);
            GatewayError::Tls(format!("{}: {e}", what.display()))
        })
    };
    if let Some(ca_path) = config.client_ca.as_deref() {
        return webpki(ca_path, crls).map(Some);
    }
    let domains = config
        .trust_domains
        .iter()
        .map(|td| Ok((td.name.clone(), webpki(&td.bundle, crls.clone())?)))
        .collect::<Result<Vec<_>, GatewayError>>()?;
    Ok(TrustDomainVerifier::new(domains).map(|v| Arc::new(v) as Arc<dyn ClientCertVerifier>))
}

/// Runs after a completed handshake (full or resumed): parses the verified leaf once into the
/// connection's identity, which pingora then carries in the session digest for every request.
#[derive(Debug)]
pub(crate) struct IdentityHook {
    /// The listener's position in start-up order.
    pub listener: usize,
    pub abuse: Arc<AbusePolicy>,
}

#[async_trait]
impl TlsAccept for IdentityHook {
    async fn handshake_complete_callback(
        &self,
        tls: &TlsRef,
    ) -> Option<Arc<dyn std::any::Any + Send + Sync>> {
        let peer = tls.peer_certificate_der().and_then(peer_identity);
        let (identity, credential) = match peer {
            Some((identity, credential)) => (Some(Arc::new(identity)), Some(credential)),
            None => (None, None),
        };
        let connection = ConnectionIdentity {
            headers: identity
                .as_deref()
                .map(|i| Arc::new(IdentityHeaders::of(i))),
            identity,
            credential,
            tls_version: tls.version().unwrap_or("unknown"),
            listener: self.listener,
            established: Instant::now(),
            close: Arc::new(tokio::sync::watch::channel(false).0),
            requests: std::sync::atomic::AtomicU32::new(0),
            abort: Arc::new(tokio::sync::Notify::new()),
            abuse: Arc::clone(&self.abuse),
            refusals: RefusalWindow::new(),
            handshake: std::sync::OnceLock::new(),
            handshake_traced: std::sync::atomic::AtomicBool::new(false),
        };
        Some(Arc::new(connection))
    }
}
