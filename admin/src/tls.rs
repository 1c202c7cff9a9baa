//! TLS of the admin listener, on the shared pieces of `portcullis-identity` (the restricted
//! provider, PEM loading, the swappable server certificate and client verifier): the client
//! verifier that also enforces the CA's current CRL, and the server certificate (self-issued
//! from the CA and renewed in the background, or read from files).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use portcullis_ca::{Ca, IssueRequest, IssuedCertificate, Requester, RequesterKind};
pub(crate) use portcullis_identity::provider;
use portcullis_identity::{
    certified_key, load_certified_key, parse_certs, parse_crls, root_store, webpki_client_verifier,
    ClientAuthMode, ServerCertificate, SwappableVerifier, UnknownRevocation, VerifierState,
};
use rustls::server::danger::ClientCertVerifier;
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::config::SelfIssueConfig;
use crate::error::{io_error, AdminError};

impl From<portcullis_identity::IdentityError> for AdminError {
    fn from(e: portcullis_identity::IdentityError) -> Self {
        AdminError::Tls(e.to_string())
    }
}

/// One CRL as read from `STATE/crl.pem`, with the verifier built on it: swapped together, so
/// `GET /v1/crl` serves the CRL that handshakes enforce.
pub(crate) struct CrlSnapshot {
    pub(crate) pem: Vec<u8>,
    pub(crate) der: Vec<u8>,
    pub(crate) this_update: Option<SystemTime>,
    pub(crate) next_update: Option<SystemTime>,
    verifier: Arc<dyn ClientCertVerifier>,
}

impl VerifierState for CrlSnapshot {
    fn verifier(&self) -> &dyn ClientCertVerifier {
        self.verifier.as_ref()
    }
}

/// Verifies optional client certificates against the CA's root and issuing intermediate, and
/// refuses certificates listed on the CA's current CRL. The CRL file is re-read by
/// [`ClientTrust::reload`] (called on a timer and right after a revocation through the API).
pub struct ClientTrust {
    roots: Arc<RootCertStore>,
    crl_path: PathBuf,
    verifier: Arc<SwappableVerifier<CrlSnapshot>>,
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
        let anchors = parse_certs(bundle_pem.as_bytes(), "trust bundle")?
            .into_iter()
            .chain(parse_certs(intermediate_pem.as_bytes(), "intermediate")?);
        let roots = Arc::new(root_store(anchors, "trust anchor")?);
        let pem = std::fs::read(crl_path).map_err(io_error(crl_path))?;
        let first = build_snapshot(&roots, pem)
            .map_err(|e| AdminError::Tls(format!("{}: {e}", crl_path.display())))?;
        // Bootstrap-token callers have no certificate yet: each endpoint decides.
        let verifier = SwappableVerifier::new(first, ClientAuthMode::Optional)
            .with_root_hints(roots.subjects());
        Ok(Self {
            roots,
            crl_path: crl_path.to_owned(),
            verifier: Arc::new(verifier),
        })
    }

    /// Re-reads the CRL file; swaps the verifier when it changed. Ok(true) when it did. A file
    /// that cannot be read or parsed leaves the current CRL in force (and is an error).
    pub fn reload(&self) -> Result<bool, AdminError> {
        let pem = std::fs::read(&self.crl_path).map_err(io_error(&self.crl_path))?;
        if pem == self.verifier.current().pem {
            return Ok(false);
        }
        let next = build_snapshot(&self.roots, pem)
            .map_err(|e| AdminError::Tls(format!("{}: {e}", self.crl_path.display())))?;
        self.verifier.replace(next);
        tracing::info!(crl.path = %self.crl_path.display(), "CRL reloaded");
        Ok(true)
    }

    /// The CRL in force (and the verifier built on it).
    pub(crate) fn crl(&self) -> Arc<CrlSnapshot> {
        self.verifier.current()
    }

    /// The verifier rustls calls.
    pub(crate) fn verifier(&self) -> Arc<dyn ClientCertVerifier> {
        Arc::clone(&self.verifier) as Arc<dyn ClientCertVerifier>
    }
}

fn build_snapshot(roots: &Arc<RootCertStore>, pem: Vec<u8>) -> Result<CrlSnapshot, String> {
    // Served again as PEM by `GET /v1/crl`: the CA writes PEM, and DER is refused.
    if pem.first() == Some(&0x30) {
        return Err("expected one PEM CRL, found DER".to_owned());
    }
    let mut crls = parse_crls(&pem, "CRL PEM").map_err(|e| e.to_string())?;
    if crls.len() != 1 {
        return Err(format!("expected one CRL, found {}", crls.len()));
    }
    let der = crls.remove(0);
    let (this_update, next_update) = crl_times(der.as_ref())?;
    // The CRL is the issuing CA's own, covering every leaf it issued: a leaf it does not cover
    // is refused, not waved through as of unknown status.
    let verifier = webpki_client_verifier(
        Arc::clone(roots),
        vec![der.clone()],
        UnknownRevocation::Refuse,
        ClientAuthMode::Optional,
    )
    .map_err(|e| e.to_string())?;
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

/// Issues the server certificate: a fresh P-256 key in memory, a CSR, and `Ca::issue` as the
/// operator `admin-server` under the configured profile with its default lifetime.
pub(crate) fn issue_serving(
    ca: &Ca,
    cfg: &SelfIssueConfig,
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
    chain.extend(parse_certs(
        ca.intermediate_pem().as_bytes(),
        "intermediate",
    )?);
    let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let certified = certified_key(chain, private, "server certificate")?;
    Ok((certified, issued))
}

fn tls(what: &'static str) -> impl Fn(rcgen::Error) -> AdminError {
    move |e| AdminError::Tls(format!("{what}: {e}"))
}

/// Reads a certificate chain and its private key from PEM files.
pub(crate) fn load_serving_files(
    certificate: &Path,
    private_key: &Path,
) -> Result<CertifiedKey, AdminError> {
    Ok(load_certified_key(certificate, private_key)?)
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
    serving: Arc<ServerCertificate>,
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
            let (ca, cfg) = (Arc::clone(&ca), cfg.clone());
            let now = SystemTime::now();
            let result = tokio::task::spawn_blocking(move || issue_serving(&ca, &cfg, now)).await;
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
}
