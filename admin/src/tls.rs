//! TLS of the admin listener: the crypto provider (ring; TLS 1.3 and 1.2, AEAD suites only),
//! the client verifier that also enforces the CA's current CRL, and the server certificate
//! (self-issued from the CA and renewed in the background, or read from files).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use portcullis_ca::{Ca, IssueRequest, IssuedCertificate, Requester, RequesterKind};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use rustls_pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime,
};

use crate::config::SelfIssueConfig;
use crate::error::{io_error, AdminError};

/// The ring provider with exactly these suites: TLS 1.3 AES-GCM and ChaCha20-Poly1305, and
/// TLS 1.2 ECDHE with AES-GCM or ChaCha20-Poly1305 (AEAD only; no CBC, no static RSA).
pub(crate) fn provider() -> Arc<CryptoProvider> {
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
    Arc::new(provider)
}

/// Certificates of a PEM text, in order.
pub(crate) fn pem_certs(
    pem: &[u8],
    what: &str,
) -> Result<Vec<CertificateDer<'static>>, AdminError> {
    let certs = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| AdminError::Tls(format!("{what}: {e}")))?;
    if certs.is_empty() {
        return Err(AdminError::Tls(format!("{what}: no certificate")));
    }
    Ok(certs)
}

/// One CRL as read from `STATE/crl.pem`, with the verifier built on it.
pub(crate) struct CrlSnapshot {
    pub(crate) pem: Vec<u8>,
    pub(crate) der: Vec<u8>,
    pub(crate) this_update: Option<SystemTime>,
    pub(crate) next_update: Option<SystemTime>,
    verifier: Arc<dyn ClientCertVerifier>,
}

/// Verifies optional client certificates against the CA's root and issuing intermediate, and
/// refuses certificates listed on the CA's current CRL. The CRL file is re-read by
/// [`ClientTrust::reload`] (called on a timer and right after a revocation through the API);
/// handshakes in progress keep the verifier they started with.
pub struct ClientTrust {
    provider: Arc<CryptoProvider>,
    roots: Arc<RootCertStore>,
    hints: Vec<DistinguishedName>,
    crl_path: PathBuf,
    current: ArcSwap<CrlSnapshot>,
}

impl std::fmt::Debug for ClientTrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTrust")
            .field("crl_path", &self.crl_path)
            .field("roots", &self.roots.len())
            .finish_non_exhaustive()
    }
}

impl ClientTrust {
    /// Trusts `bundle_pem` (the CA's roots) and `intermediate_pem` (so that clients presenting
    /// only their leaf are verified too), with the CRL at `crl_path` (which must exist).
    pub fn new(
        bundle_pem: &str,
        intermediate_pem: &str,
        crl_path: &Path,
    ) -> Result<Self, AdminError> {
        Self::with_provider(provider(), bundle_pem, intermediate_pem, crl_path)
    }

    pub(crate) fn with_provider(
        provider: Arc<CryptoProvider>,
        bundle_pem: &str,
        intermediate_pem: &str,
        crl_path: &Path,
    ) -> Result<Self, AdminError> {
        let mut roots = RootCertStore::empty();
        for cert in pem_certs(bundle_pem.as_bytes(), "trust bundle")?
            .into_iter()
            .chain(pem_certs(intermediate_pem.as_bytes(), "intermediate")?)
        {
            roots
                .add(cert)
                .map_err(|e| AdminError::Tls(format!("trust anchor: {e}")))?;
        }
        let roots = Arc::new(roots);
        let hints = roots.subjects();
        let pem = std::fs::read(crl_path).map_err(io_error(crl_path))?;
        let first = build_snapshot(&provider, &roots, pem)
            .map_err(|e| AdminError::Tls(format!("{}: {e}", crl_path.display())))?;
        Ok(Self {
            provider,
            roots,
            hints,
            crl_path: crl_path.to_owned(),
            current: ArcSwap::from_pointee(first),
        })
    }

    /// Re-reads the CRL file; swaps the verifier when it changed. Ok(true) when it did. A file
    /// that cannot be read or parsed leaves the current CRL in force (and is an error).
    pub fn reload(&self) -> Result<bool, AdminError> {
        let pem = std::fs::read(&self.crl_path).map_err(io_error(&self.crl_path))?;
        if pem == self.current.load().pem {
            return Ok(false);
        }
        let next = build_snapshot(&self.provider, &self.roots, pem)
            .map_err(|e| AdminError::Tls(format!("{}: {e}", self.crl_path.display())))?;
        self.current.store(Arc::new(next));
        tracing::info!(crl.path = %self.crl_path.display(), "CRL reloaded");
        Ok(true)
    }

    pub(crate) fn crl(&self) -> Arc<CrlSnapshot> {
        self.current.load_full()
    }
}

fn build_snapshot(
    provider: &Arc<CryptoProvider>,
    roots: &Arc<RootCertStore>,
    pem: Vec<u8>,
) -> Result<CrlSnapshot, String> {
    let mut crls = rustls_pemfile::crls(&mut &pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("CRL PEM: {e}"))?;
    if crls.len() != 1 {
        return Err(format!("expected one CRL, found {}", crls.len()));
    }
    let der: CertificateRevocationListDer<'static> = crls.remove(0);
    let (this_update, next_update) = crl_times(der.as_ref())?;
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::clone(roots), Arc::clone(provider))
            .with_crls([der.clone()])
            .only_check_end_entity_revocation()
            .allow_unauthenticated()
            .build()
            .map_err(|e| format!("client verifier: {e}"))?;
    Ok(CrlSnapshot {
        der: der.as_ref().to_vec(),
        pem,
        this_update,
        next_update,
        verifier,
    })
}

fn crl_times(der: &[u8]) -> Result<(Option<SystemTime>, Option<SystemTime>), String> {
    use x509_parser::prelude::FromDer;
    let (_, crl) = x509_parser::revocation_list::CertificateRevocationList::from_der(der)
        .map_err(|e| format!("CRL: {e}"))?;
    let at = |t: x509_parser::time::ASN1Time| {
        u64::try_from(t.timestamp())
            .ok()
            .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s))
    };
    Ok((at(crl.last_update()), crl.next_update().and_then(at)))
}

impl ClientCertVerifier for ClientTrust {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        // Bootstrap-token callers have no certificate yet; each endpoint decides.
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.current
            .load()
            .verifier
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current
            .load()
            .verifier
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current
            .load()
            .verifier
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.current.load().verifier.supported_verify_schemes()
    }
}

/// The server certificate in use, swapped whole on renewal.
#[derive(Debug)]
pub(crate) struct ServingCert {
    current: ArcSwap<CertifiedKey>,
}

impl ServingCert {
    pub(crate) fn new(key: CertifiedKey) -> Self {
        Self {
            current: ArcSwap::from_pointee(key),
        }
    }

    pub(crate) fn replace(&self, key: CertifiedKey) {
        self.current.store(Arc::new(key));
    }
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// Issues the server certificate: a fresh P-256 key in memory, a CSR, and `Ca::issue` as the
/// operator `admin-server` under the configured profile with its default lifetime.
pub(crate) fn issue_serving(
    ca: &Ca,
    cfg: &SelfIssueConfig,
    provider: &CryptoProvider,
    now: SystemTime,
) -> Result<(CertifiedKey, IssuedCertificate), AdminError> {
    let key =
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(tls("server key"))?;
    let mut params =
        rcgen::CertificateParams::new(cfg.dns_names.clone()).map_err(tls("server names"))?;
    if let Some(id) = &cfg.spiffe_id {
        params.subject_alt_names.push(rcgen::SanType::URI(
            id.clone().try_into().map_err(tls("server SPIFFE ID"))?,
        ));
    }
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let csr = params.serialize_request(&key).map_err(tls("server CSR"))?;
    let issued = ca.issue(
        &IssueRequest {
            csr: csr.der(),
            tenant: cfg.tenant.clone(),
            profile: Some(&cfg.profile),
            lifetime: None,
            requester: Requester {
                kind: RequesterKind::Operator,
                id: "admin-server".to_owned(),
            },
        },
        now,
    )?;
    let mut chain = vec![CertificateDer::from(issued.cert_der.clone())];
    chain.extend(pem_certs(ca.intermediate_pem().as_bytes(), "intermediate")?);
    let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let certified = CertifiedKey::from_der(chain, private, provider)
        .map_err(|e| AdminError::Tls(format!("server certificate: {e}")))?;
    Ok((certified, issued))
}

fn tls(what: &'static str) -> impl Fn(rcgen::Error) -> AdminError {
    move |e| AdminError::Tls(format!("{what}: {e}"))
}

/// Reads a certificate chain and its private key from PEM files.
pub(crate) fn load_serving_files(
    certificate: &Path,
    private_key: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, AdminError> {
    let chain = pem_certs(
        &std::fs::read(certificate).map_err(io_error(certificate))?,
        &certificate.display().to_string(),
    )?;
    let key_pem =
        zeroize::Zeroizing::new(std::fs::read(private_key).map_err(io_error(private_key))?);
    let key = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|e| AdminError::Tls(format!("{}: {e}", private_key.display())))?
        .ok_or_else(|| AdminError::Tls(format!("{}: no private key", private_key.display())))?;
    CertifiedKey::from_der(chain, key, provider)
        .map_err(|e| AdminError::Tls(format!("{}: {e}", certificate.display())))
}

/// When to renew a certificate issued at `issued_at`: at 2/3 of its lifetime.
pub(crate) fn renewal_time(issued_at: SystemTime, not_after: SystemTime) -> SystemTime {
    let life = not_after.duration_since(issued_at).unwrap_or_default();
    issued_at + life * 2 / 3
}

/// Renews the self-issued server certificate at 2/3 of its lifetime, forever; on failure
/// retries with backoff (1 s doubling to 30 s) and keeps serving the current one.
pub(crate) async fn renew_serving(
    ca: Arc<Ca>,
    cfg: SelfIssueConfig,
    provider: Arc<CryptoProvider>,
    serving: Arc<ServingCert>,
    mut issued_at: SystemTime,
    mut not_after: SystemTime,
) {
    loop {
        let wait = renewal_time(issued_at, not_after)
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        tokio::time::sleep(wait).await;
        let mut backoff = Duration::from_secs(1);
        loop {
            let (ca, cfg, provider) = (Arc::clone(&ca), cfg.clone(), Arc::clone(&provider));
            let now = SystemTime::now();
            let result =
                tokio::task::spawn_blocking(move || issue_serving(&ca, &cfg, &provider, now)).await;
            match result {
                Ok(Ok((key, issued))) => {
                    serving.replace(key);
                    tracing::info!(
                        ca.serial = %issued.serial,
                        cert.not_after = %humantime::format_rfc3339_seconds(issued.not_after),
                        "admin server certificate renewed"
                    );
                    issued_at = now;
                    not_after = issued.not_after;
                    break;
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "admin server certificate renewal failed");
                }
                Err(e) => {
                    tracing::error!(error = %e, "admin server certificate renewal task failed");
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renews_at_two_thirds() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        assert_eq!(
            renewal_time(t0, t0 + Duration::from_secs(3600)),
            t0 + Duration::from_secs(2400)
        );
        assert_eq!(renewal_time(t0, t0 - Duration::from_secs(1)), t0);
    }

    #[test]
    fn only_aead_suites() {
        for suite in &provider().cipher_suites {
            let name = format!("{:?}", suite.suite());
            assert!(
                name.contains("_GCM_") || name.contains("CHACHA20_POLY1305"),
                "{name}"
            );
        }
    }
}
