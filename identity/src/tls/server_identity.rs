//! Verifying a server by who it is: its chain against the trust anchors (webpki), then its DNS
//! name, its SPIFFE ID, or both. Mesh workloads carry a SPIFFE ID and often no DNS name; a
//! certificate that chains to the anchors but names another workload is refused with its own
//! error ([`is_identity_mismatch`]), so that callers can count it apart from broken chains.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::{CertificateError, DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::{IdentityError, PeerIdentity, SpiffeIdPattern};

/// What a server's certificate must show beyond a chain to the trust anchors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerIdentity {
    /// Checked against the name the handshake was made for (the SNI), as webpki does.
    pub check_name: bool,
    /// The certificate's one SPIFFE ID must match one of these (none: not checked).
    pub spiffe_ids: Vec<SpiffeIdPattern>,
}

/// The certificate chained to the anchors but is not the server that was asked for.
#[derive(Debug)]
pub struct IdentityMismatch {
    /// The SPIFFE ID the certificate carried, if any.
    pub presented: Option<String>,
}

impl fmt::Display for IdentityMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.presented {
            Some(id) => write!(
                f,
                "the server's SPIFFE ID {id} is not one the upstream allows"
            ),
            None => f.write_str("the server's certificate carries no SPIFFE ID"),
        }
    }
}

impl std::error::Error for IdentityMismatch {}

/// Whether a handshake failed because the server was not the one asked for (a certificate that
/// chained to the anchors but carried another identity).
pub fn is_identity_mismatch(error: &rustls::Error) -> bool {
    matches!(
        error,
        rustls::Error::InvalidCertificate(CertificateError::Other(other))
            if other.0.downcast_ref::<IdentityMismatch>().is_some()
    )
}

/// A server verifier: webpki's chain check, then [`ServerIdentity`].
#[derive(Debug)]
pub struct ServerIdentityVerifier {
    webpki: Arc<WebPkiServerVerifier>,
    identity: ServerIdentity,
}

impl ServerIdentityVerifier {
    /// Verifies chains against `roots` with the restricted provider.
    pub fn new(roots: Arc<RootCertStore>, identity: ServerIdentity) -> Result<Self, IdentityError> {
        let webpki = WebPkiServerVerifier::builder_with_provider(roots, crate::provider())
            .build()
            .map_err(|e| IdentityError::Tls(format!("server verifier: {e}")))?;
        Ok(Self { webpki, identity })
    }
}

impl ServerCertVerifier for ServerIdentityVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Ok(_) => {}
            // webpki checks the name only once the chain is good: with the name not asked
            // for, this error means the chain passed.
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.identity.check_name => {}
            Err(e) => return Err(e),
        }
        if self.identity.spiffe_ids.is_empty() {
            return Ok(ServerCertVerified::assertion());
        }
        let presented = PeerIdentity::from_der(end_entity.as_ref())
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?
            .spiffe_id;
        match &presented {
            Some(id) if self.identity.spiffe_ids.iter().any(|p| p.matches(id)) => {
                Ok(ServerCertVerified::assertion())
            }
            _ => Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(IdentityMismatch {
                    presented: presented.map(|id| id.as_str().to_owned()),
                })),
            ))),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::test_pki::Ca;

    fn verify(
        anchor: &Ca,
        cert: &CertificateDer<'static>,
        check_name: bool,
        spiffe: &[&str],
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut roots = RootCertStore::empty();
        roots.add(anchor.der.clone()).unwrap();
        let verifier = ServerIdentityVerifier::new(
            Arc::new(roots),
            ServerIdentity {
                check_name,
                spiffe_ids: spiffe.iter().map(|p| p.parse().unwrap()).collect(),
            },
        )
        .unwrap();
        verifier.verify_server_cert(
            cert,
            &[],
            &ServerName::try_from("api.example").unwrap(),
            &[],
            UnixTime::now(),
        )
    }

    const WEB: &str = "spiffe://example.org/ns/prod/sa/web";

    #[test]
    fn a_spiffe_id_alone_is_enough_and_must_match() {
        let anchor = Ca::new();
        let cert = anchor.leaf(&[], Some(WEB));
        assert!(verify(&anchor, &cert, false, &[WEB]).is_ok());
        assert!(verify(&anchor, &cert, false, &["spiffe://example.org/ns/prod/**"]).is_ok());
        let e = verify(
            &anchor,
            &cert,
            false,
            &["spiffe://example.org/ns/prod/sa/db"],
        )
        .unwrap_err();
        assert!(is_identity_mismatch(&e), "{e}");
        // Another trust domain with the same path is another workload.
        let e = verify(
            &anchor,
            &cert,
            false,
            &["spiffe://other.org/ns/prod/sa/web"],
        )
        .unwrap_err();
        assert!(is_identity_mismatch(&e));
        // A DNS-only certificate names no workload.
        let dns_only = anchor.leaf(&["api.example"], None);
        let e = verify(&anchor, &dns_only, false, &[WEB]).unwrap_err();
        assert!(is_identity_mismatch(&e));
    }

    #[test]
    fn the_chain_is_checked_first_and_is_no_identity_mismatch() {
        let anchor = Ca::new();
        let rogue = Ca::new();
        let forged = rogue.leaf(&["api.example"], Some(WEB));
        let e = verify(&anchor, &forged, false, &[WEB]).unwrap_err();
        assert!(!is_identity_mismatch(&e), "{e}");
        let e = verify(&anchor, &forged, true, &[]).unwrap_err();
        assert!(!is_identity_mismatch(&e));
    }

    #[test]
    fn the_name_is_checked_when_asked_and_besides_the_spiffe_id() {
        let anchor = Ca::new();
        let right = anchor.leaf(&["api.example"], Some(WEB));
        let wrong_name = anchor.leaf(&["other.example"], Some(WEB));
        assert!(verify(&anchor, &right, true, &[WEB]).is_ok());
        assert!(verify(&anchor, &right, true, &[]).is_ok());
        let e = verify(&anchor, &wrong_name, true, &[WEB]).unwrap_err();
        assert!(!is_identity_mismatch(&e));
        // Without the name check, the same certificate passes on its SPIFFE ID.
        assert!(verify(&anchor, &wrong_name, false, &[WEB]).is_ok());
    }
}
