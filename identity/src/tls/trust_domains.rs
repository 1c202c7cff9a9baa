//! Client certificates from several SPIFFE trust domains, each verified only against its own
//! trust domain's bundle: a CA of one trust domain cannot vouch for another's IDs, which one
//! merged CA bundle would let it do.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::{CertificateDer, UnixTime};

use crate::PeerIdentity;

/// Chooses the verifier by the trust domain of the leaf's SPIFFE ID. A leaf without a SPIFFE
/// ID, or of a trust domain not listed, has no issuer here (`UnknownIssuer`).
#[derive(Debug)]
pub struct TrustDomainVerifier {
    domains: Vec<(String, Arc<dyn ClientCertVerifier>)>,
    hints: Vec<DistinguishedName>,
}

impl TrustDomainVerifier {
    /// One verifier per trust domain (each built over that domain's bundle alone). `None`
    /// when `domains` is empty.
    pub fn new(domains: Vec<(String, Arc<dyn ClientCertVerifier>)>) -> Option<Self> {
        if domains.is_empty() {
            return None;
        }
        let hints = domains
            .iter()
            .flat_map(|(_, v)| v.root_hint_subjects().iter().cloned())
            .collect();
        Some(Self { domains, hints })
    }

    fn first(&self) -> &dyn ClientCertVerifier {
        // `new` refuses an empty list.
        self.domains[0].1.as_ref()
    }
}

impl ClientCertVerifier for TrustDomainVerifier {
    fn offer_client_auth(&self) -> bool {
        self.first().offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.first().client_auth_mandatory()
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
        let id = PeerIdentity::from_der(end_entity.as_ref())
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?
            .spiffe_id;
        let verifier = id.as_ref().and_then(|id| {
            self.domains
                .iter()
                .find(|(td, _)| td == id.trust_domain())
                .map(|(_, v)| v)
        });
        match verifier {
            Some(v) => v.verify_client_cert(end_entity, intermediates, now),
            None => Err(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer,
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.first().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.first().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.first().supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::test_pki::Ca;
    use crate::{webpki_client_verifier, ClientAuthMode, UnknownRevocation};
    use rustls::RootCertStore;

    /// A client leaf named `w.example`, with the SPIFFE ID if given.
    fn leaf(ca: &Ca, uri: Option<&str>) -> CertificateDer<'static> {
        ca.leaf(&["w.example"], uri)
    }

    fn webpki(ca: &Ca) -> Arc<dyn ClientCertVerifier> {
        let mut roots = RootCertStore::empty();
        roots.add(ca.der.clone()).unwrap();
        webpki_client_verifier(
            Arc::new(roots),
            Vec::new(),
            UnknownRevocation::Allow,
            ClientAuthMode::Required,
        )
        .unwrap()
    }

    #[test]
    fn each_trust_domain_is_vouched_for_by_its_own_bundle_only() {
        let (a, b) = (Ca::new(), Ca::new());
        let verifier = TrustDomainVerifier::new(vec![
            ("a.example".to_owned(), webpki(&a)),
            ("b.example".to_owned(), webpki(&b)),
        ])
        .unwrap();
        let verify = |cert: &CertificateDer<'static>| {
            verifier.verify_client_cert(cert, &[], UnixTime::now())
        };
        assert!(verify(&leaf(&a, Some("spiffe://a.example/ns/web"))).is_ok());
        assert!(verify(&leaf(&b, Some("spiffe://b.example/ns/db"))).is_ok());
        // B's CA claiming an ID of A, and the reverse: no chain in the claimed domain (webpki
        // says bad signature or unknown issuer, as the two test CAs share a name).
        assert!(verify(&leaf(&b, Some("spiffe://a.example/ns/web"))).is_err());
        assert!(verify(&leaf(&a, Some("spiffe://b.example/ns/db"))).is_err());
        // A trust domain not listed, or no SPIFFE ID at all: nobody here vouches for it.
        for stranger in [leaf(&a, Some("spiffe://c.example/ns/web")), leaf(&a, None)] {
            assert!(matches!(
                verify(&stranger),
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::UnknownIssuer
                ))
            ));
        }
        assert_eq!(verifier.root_hint_subjects().len(), 2);
        assert!(TrustDomainVerifier::new(Vec::new()).is_none());
    }
}
