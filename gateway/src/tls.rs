//! Downstream TLS: the restricted crypto provider, PEM loading, the hot-swappable server
//! certificate, the client-certificate verifier (with failure reasons counted), and the
//! post-handshake hook that turns the verified leaf into the connection's [`Identity`].

use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora_core::listeners::TlsAccept;
use pingora_core::protocols::tls::TlsRef;
use portcullis_policy::{ClientAuth, TlsListenerConfig};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore};
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, UnixTime};

use crate::identity::{peer_identity, ConnectionIdentity};
use crate::metrics::Metrics;
use crate::GatewayError;

/// The process-wide crypto provider: ring, with AEAD suites only (ECDHE key exchange;
/// AES-GCM and ChaCha20-Poly1305) for TLS 1.2 and 1.3. Installed once at start-up, before any
/// rustls config is built, so that pingora's own builders use it too.
pub fn install_crypto_provider() {
    use rustls::crypto::ring::cipher_suite as cs;
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = vec![
        cs::TLS13_AES_256_GCM_SHA384,
        cs::TLS13_AES_128_GCM_SHA256,
        cs::TLS13_CHACHA20_POLY1305_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ];
    // A provider may already be installed (tests, or a second call): that one stays.
    let _ = provider.install_default();
}

pub(crate) fn provider() -> Arc<CryptoProvider> {
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
}

/// Reads every certificate of a PEM file.
pub(crate) fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, GatewayError> {
    let pem = std::fs::read(path).map_err(|e| GatewayError::file(path, e))?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| GatewayError::file(path, e))?;
    if certs.is_empty() {
        return Err(GatewayError::Tls(format!(
            "{}: no PEM certificate found",
            path.display()
        )));
    }
    for cert in &certs {
        x509_parser::parse_x509_certificate(cert.as_ref()).map_err(|e| {
            GatewayError::Tls(format!("{}: malformed certificate: {e}", path.display()))
        })?;
    }
    Ok(certs)
}

/// Reads the private key of a PEM file (PKCS#8, SEC1 or PKCS#1).
pub(crate) fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, GatewayError> {
    let pem = std::fs::read(path).map_err(|e| GatewayError::file(path, e))?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| GatewayError::file(path, e))?
        .ok_or_else(|| GatewayError::Tls(format!("{}: no PEM private key found", path.display())))
}

/// Loads a certificate chain and its key, and checks that they belong together.
pub(crate) fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, GatewayError> {
    let chain = load_certs(cert)?;
    let key_der = load_key(key)?;
    let signing_key = provider()
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| GatewayError::Tls(format!("{}: unusable private key: {e}", key.display())))?;
    let certified = CertifiedKey::new(chain, signing_key);
    certified.keys_match().map_err(|e| {
        GatewayError::Tls(format!(
            "{} and {} do not match: {e}",
            cert.display(),
            key.display()
        ))
    })?;
    Ok(certified)
}

/// The server certificate of a listener, swapped whole on reload without touching
/// established connections.
#[derive(Debug)]
pub(crate) struct ServerCertificate {
    current: ArcSwap<CertifiedKey>,
}

impl ServerCertificate {
    pub(crate) fn new(key: CertifiedKey) -> Self {
        Self {
            current: ArcSwap::from_pointee(key),
        }
    }

    pub(crate) fn replace(&self, key: CertifiedKey) {
        self.current.store(Arc::new(key));
    }
}

impl ResolvesServerCert for ServerCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// Verifies client certificates against the listener's trust bundle and revocation list
/// (both swappable: on reload, and whenever the CRL file changes), and counts every refusal by
/// reason.
pub(crate) struct ClientVerifier {
    inner: ArcSwap<Arc<dyn ClientCertVerifier>>,
    mandatory: bool,
    listener: String,
    metrics: Arc<Metrics>,
    /// The settings the current verifier was built from, and the CRL file's fingerprint then.
    source: Mutex<(TlsListenerConfig, Option<FileStamp>)>,
}

/// What tells us a file changed: modification time and length.
type FileStamp = (Option<SystemTime>, u64);

fn stamp(path: &Path) -> Option<FileStamp> {
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.modified().ok(), m.len()))
}

impl fmt::Debug for ClientVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientVerifier")
            .field("listener", &self.listener)
            .field("mandatory", &self.mandatory)
            .finish()
    }
}

impl ClientVerifier {
    pub(crate) fn new(
        listener: &str,
        config: &TlsListenerConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Option<Self>, GatewayError> {
        let crl_stamp = config.crl.as_deref().and_then(stamp);
        let Some(inner) = build_webpki_verifier(config)? else {
            return Ok(None);
        };
        Ok(Some(Self {
            inner: ArcSwap::from_pointee(inner),
            mandatory: config.client_auth == ClientAuth::Required,
            listener: listener.to_owned(),
            metrics,
            source: Mutex::new((config.clone(), crl_stamp)),
        }))
    }

    /// Swaps in a new trust bundle and CRL. The mode (required/optional) is fixed at start-up.
    pub(crate) fn reload(&self, config: &TlsListenerConfig) -> Result<(), GatewayError> {
        let crl_stamp = config.crl.as_deref().and_then(stamp);
        if let Some(inner) = build_webpki_verifier(config)? {
            self.inner.store(Arc::new(inner));
            *self.source.lock().unwrap_or_else(PoisonError::into_inner) =
                (config.clone(), crl_stamp);
        }
        Ok(())
    }

    /// Re-reads the CRL if its file changed since it was last read. A CRL that cannot be used
    /// is refused, and the previous one stays in force.
    pub(crate) fn refresh_crl(&self) {
        let mut source = self.source.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(path) = source.0.crl.clone() else {
            return;
        };
        let now = stamp(&path);
        if now.is_none() || now == source.1 {
            return;
        }
        source.1 = now;
        match build_webpki_verifier(&source.0) {
            Ok(Some(inner)) => {
                self.inner.store(Arc::new(inner));
                self.metrics.crl_load(&self.listener, true);
                tracing::info!(listener = %self.listener, crl = %path.display(), "revocation list reloaded");
            }
            Ok(None) => {}
            Err(e) => {
                self.metrics.crl_load(&self.listener, false);
                tracing::error!(listener = %self.listener, error = %e, "revocation list refused; the previous one stays in force");
            }
        }
    }
}

/// Reads the CRLs of a file: PEM (`X509 CRL` blocks) or a single DER CRL.
fn load_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, GatewayError> {
    let bytes = std::fs::read(path).map_err(|e| GatewayError::file(path, e))?;
    if bytes.first() == Some(&0x30) {
        return Ok(vec![CertificateRevocationListDer::from(bytes)]);
    }
    let crls = rustls_pemfile::crls(&mut bytes.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| GatewayError::file(path, e))?;
    if crls.is_empty() {
        return Err(GatewayError::Tls(format!(
            "{}: no PEM X509 CRL found",
            path.display()
        )));
    }
    Ok(crls)
}

fn build_webpki_verifier(
    config: &TlsListenerConfig,
) -> Result<Option<Arc<dyn ClientCertVerifier>>, GatewayError> {
    let Some(ca_path) = config.client_ca.as_deref() else {
        return Ok(None);
    };
    if config.client_auth == ClientAuth::Off {
        return Ok(None);
    }
    let mut roots = RootCertStore::empty();
    for cert in load_certs(ca_path)? {
        roots.add(cert).map_err(|e| {
            GatewayError::Tls(format!(
                "{}: unusable CA certificate: {e}",
                ca_path.display()
            ))
        })?;
    }
    let mut builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
    if config.client_auth == ClientAuth::Optional {
        builder = builder.allow_unauthenticated();
    }
    if let Some(crl_path) = &config.crl {
        // The CA's CRL covers the leaves it issued. A leaf from an issuer without a CRL here
        // has unknown status and is accepted; a stale CRL still applies (the CA republishes
        // it well before nextUpdate, and refusing everyone because of it would be an outage).
        builder = builder
            .with_crls(load_crls(crl_path)?)
            .only_check_end_entity_revocation()
            .allow_unknown_revocation_status();
    }
    let verifier = builder.build().map_err(|e| {
        let what = config.crl.as_deref().unwrap_or(ca_path);
        GatewayError::Tls(format!("{}: client verifier: {e}", what.display()))
    })?;
    Ok(Some(verifier))
}

/// A short, stable label for a refused client certificate, used in metrics and logs.
fn refusal_reason(error: &rustls::Error) -> &'static str {
    match error {
        rustls::Error::InvalidCertificate(e) => match e {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => "expired",
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "not_yet_valid"
            }
            CertificateError::UnknownIssuer => "unknown_ca",
            CertificateError::Revoked => "revoked",
            CertificateError::BadSignature => "bad_signature",
            CertificateError::BadEncoding => "bad_encoding",
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                "invalid_purpose"
            }
            _ => "invalid_certificate",
        },
        _ => "other",
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // The hints are only advisory; sending none keeps the bundle swappable.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let result = self
            .inner
            .load()
            .verify_client_cert(end_entity, intermediates, now);
        if let Err(e) = &result {
            let reason = refusal_reason(e);
            self.metrics.tls_failure(&self.listener, reason);
            tracing::info!(listener = %self.listener, tls.refusal = reason, "client certificate refused");
        }
        result
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.load().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.load().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.load().supported_verify_schemes()
    }
}

/// Runs after a completed handshake: parses the verified leaf once into the connection's
/// identity, which pingora then carries in the session digest for every request.
#[derive(Debug)]
pub(crate) struct IdentityHook;

#[async_trait]
impl TlsAccept for IdentityHook {
    async fn handshake_complete_callback(
        &self,
        tls: &TlsRef,
    ) -> Option<Arc<dyn std::any::Any + Send + Sync>> {
        let connection = ConnectionIdentity {
            identity: tls
                .peer_certificate_der()
                .and_then(peer_identity)
                .map(Arc::new),
            tls_version: tls.version().unwrap_or("unknown"),
        };
        Some(Arc::new(connection))
    }
}
