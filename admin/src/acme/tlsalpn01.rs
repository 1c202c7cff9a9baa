//! tls-alpn-01 validation (RFC 8737): a TLS handshake with `NAME:PORT` offering only the ALPN
//! protocol `acme-tls/1`, SNI the name, must present a self-signed certificate whose only SAN
//! is the name and which carries the critical id-pe-acmeIdentifier extension holding the
//! SHA-256 of the key authorization. The handshake uses the restricted provider; the
//! certificate is not chain-verified (it is self-signed by design) but recorded and checked
//! here, and the handshake signature must verify with its key. Same bounds as http-01.

use std::sync::{Arc, Mutex, PoisonError};

use axum::http::StatusCode;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use x509_parser::extensions::GeneralName;

use super::http01::{failed, resolve, STEP_TIMEOUT};
use super::Problem;

/// The ALPN protocol of the challenge.
const ACME_TLS_1: &[u8] = b"acme-tls/1";
/// id-pe-acmeIdentifier.
const ACME_IDENTIFIER_OID: &str = "1.3.6.1.5.5.7.1.31";

fn incorrect(detail: impl Into<String>) -> Problem {
    Problem::new(StatusCode::FORBIDDEN, "incorrectResponse", detail)
}

fn tls_failed(detail: impl Into<String>) -> Problem {
    Problem::new(StatusCode::FORBIDDEN, "tls", detail)
}

/// Connects to `name` on `port` and checks the certificate it presents for `acme-tls/1`.
pub(super) async fn validate(
    name: &str,
    port: u16,
    key_authorization: &str,
) -> Result<(), Problem> {
    let addrs = resolve(name, port).await?;
    let mut last = failed(format!("{name} has no address"));
    for addr in addrs {
        match presented_certificate(addr, name).await {
            Ok(der) => return check_certificate(&der, name, key_authorization),
            Err(p) => last = p,
        }
    }
    Err(last)
}

/// The leaf certificate `addr` presents in a handshake for `name` with ALPN `acme-tls/1`.
async fn presented_certificate(addr: std::net::SocketAddr, name: &str) -> Result<Vec<u8>, Problem> {
    let server_name = ServerName::try_from(name.to_owned())
        .map_err(|_| tls_failed(format!("{name} cannot be sent as SNI")))?;
    let provider = portcullis_identity::provider();
    let recorder = Arc::new(LeafRecorder {
        leaf: Mutex::default(),
        algorithms: provider.signature_verification_algorithms,
    });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|_| Problem::server_internal())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::clone(&recorder) as Arc<dyn ServerCertVerifier>)
        .with_no_client_auth();
    config.alpn_protocols = vec![ACME_TLS_1.to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let stream = tokio::time::timeout(STEP_TIMEOUT, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| failed(format!("connecting to {addr} timed out")))?
        .map_err(|_| failed(format!("connecting to {addr} failed")))?;
    let tls = tokio::time::timeout(STEP_TIMEOUT, connector.connect(server_name, stream))
        .await
        .map_err(|_| tls_failed(format!("the TLS handshake with {addr} timed out")))?
        .map_err(|e| tls_failed(format!("the TLS handshake with {addr} failed: {e}")))?;
    if tls.get_ref().1.alpn_protocol() != Some(ACME_TLS_1) {
        return Err(tls_failed(format!("{addr} did not negotiate acme-tls/1")));
    }
    let leaf = recorder
        .leaf
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    leaf.ok_or_else(|| tls_failed(format!("{addr} presented no certificate")))
}

/// Whether `der` is the challenge certificate for `name` and `key_authorization`.
pub(super) fn check_certificate(
    der: &[u8],
    name: &str,
    key_authorization: &str,
) -> Result<(), Problem> {
    let (rest, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|_| incorrect("the presented certificate is not a DER certificate"))?;
    if !rest.is_empty() {
        return Err(incorrect("the presented certificate has trailing bytes"));
    }
    if cert.issuer() != cert.subject() || cert.verify_signature(None).is_err() {
        return Err(incorrect("the presented certificate is not self-signed"));
    }
    let san = cert
        .subject_alternative_name()
        .map_err(|_| incorrect("the presented certificate's subjectAltName is malformed"))?
        .ok_or_else(|| incorrect("the presented certificate has no subjectAltName"))?;
    match san.value.general_names.as_slice() {
        [GeneralName::DNSName(dns)] if dns.eq_ignore_ascii_case(name) => {}
        _ => {
            return Err(incorrect(format!(
                "the presented certificate's subjectAltName is not exactly {name}"
            )))
        }
    }
    let mut found = cert
        .extensions()
        .iter()
        .filter(|e| e.oid.to_id_string() == ACME_IDENTIFIER_OID);
    let (Some(ext), None) = (found.next(), found.next()) else {
        return Err(incorrect(
            "the presented certificate has not exactly one acmeIdentifier extension",
        ));
    };
    if !ext.critical {
        return Err(incorrect(
            "the presented certificate's acmeIdentifier extension is not critical",
        ));
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, key_authorization.as_bytes());
    // The extension's value is a DER OCTET STRING of the 32-byte digest.
    let mut expected = vec![0x04, 0x20];
    expected.extend_from_slice(digest.as_ref());
    if ext.value != expected.as_slice() {
        return Err(incorrect(
            "the presented certificate's acmeIdentifier is not the key authorization's digest",
        ));
    }
    Ok(())
}

/// Accepts any certificate but keeps it, for [`check_certificate`] after the handshake; the
/// handshake signature is still verified with the certificate's key.
#[derive(Debug)]
struct LeafRecorder {
    leaf: Mutex<Option<Vec<u8>>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl LeafRecorder {
    /// The handshake signature, checked with the certificate's key. Not through webpki (as
    /// `rustls::crypto::verify_tls13_signature` would): it refuses the critical
    /// acmeIdentifier extension the challenge certificate must carry.
    fn verify_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let bad = || rustls::Error::InvalidCertificate(rustls::CertificateError::BadSignature);
        let (_, parsed) = x509_parser::parse_x509_certificate(cert).map_err(|_| bad())?;
        let key = &parsed.public_key().subject_public_key.data;
        let candidates = self
            .algorithms
            .mapping
            .iter()
            .filter(|(scheme, _)| *scheme == dss.scheme)
            .flat_map(|(_, algs)| algs.iter());
        for alg in candidates {
            if alg.verify_signature(key, message, dss.signature()).is_ok() {
                return Ok(HandshakeSignatureValid::assertion());
            }
        }
        Err(bad())
    }
}

impl ServerCertVerifier for LeafRecorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.leaf.lock().unwrap_or_else(PoisonError::into_inner) = Some(end_entity.to_vec());
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verify_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verify_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, CustomExtension, KeyPair, SanType};

    const KEY_AUTHORIZATION: &str = "token.thumbprint";

    fn digest() -> Vec<u8> {
        ring::digest::digest(&ring::digest::SHA256, KEY_AUTHORIZATION.as_bytes())
            .as_ref()
            .to_vec()
    }

    /// A challenge certificate for `names`, changed by `edit` before it is signed.
    fn challenge_cert(names: &[&str], edit: impl FnOnce(&mut CertificateParams)) -> Vec<u8> {
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .unwrap();
        params
            .custom_extensions
            .push(CustomExtension::new_acme_identifier(&digest()));
        edit(&mut params);
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    fn kind(r: Result<(), Problem>) -> &'static str {
        r.map_or_else(|p| p.kind, |()| "ok")
    }

    #[test]
    fn the_right_certificate_passes() {
        let der = challenge_cert(&["a.webco.test"], |_| {});
        assert_eq!(
            kind(check_certificate(&der, "a.webco.test", KEY_AUTHORIZATION)),
            "ok"
        );
        assert_eq!(
            kind(check_certificate(&der, "A.Webco.Test", KEY_AUTHORIZATION)),
            "ok"
        );
    }

    #[test]
    fn wrong_digest_extra_san_non_critical_or_missing_extension_fail() {
        let wrong = challenge_cert(&["a.webco.test"], |_| {});
        assert_eq!(
            kind(check_certificate(&wrong, "a.webco.test", "other.key")),
            "incorrectResponse"
        );
        let extra = challenge_cert(&["a.webco.test", "b.webco.test"], |_| {});
        assert_eq!(
            kind(check_certificate(&extra, "a.webco.test", KEY_AUTHORIZATION)),
            "incorrectResponse"
        );
        let other = challenge_cert(&["b.webco.test"], |_| {});
        assert_eq!(
            kind(check_certificate(&other, "a.webco.test", KEY_AUTHORIZATION)),
            "incorrectResponse"
        );
        let lax = challenge_cert(&["a.webco.test"], |p| {
            p.custom_extensions[0].set_criticality(false);
        });
        assert_eq!(
            kind(check_certificate(&lax, "a.webco.test", KEY_AUTHORIZATION)),
            "incorrectResponse"
        );
        let none = challenge_cert(&["a.webco.test"], |p| p.custom_extensions.clear());
        assert_eq!(
            kind(check_certificate(&none, "a.webco.test", KEY_AUTHORIZATION)),
            "incorrectResponse"
        );
        let ip = challenge_cert(&["a.webco.test"], |p| {
            p.subject_alt_names = vec![SanType::IpAddress([127, 0, 0, 1].into())];
        });
        assert_eq!(
            kind(check_certificate(&ip, "a.webco.test", KEY_AUTHORIZATION)),
            "incorrectResponse"
        );
        assert_eq!(
            kind(check_certificate(
                b"junk",
                "a.webco.test",
                KEY_AUTHORIZATION
            )),
            "incorrectResponse"
        );
    }

    #[test]
    fn a_certificate_signed_by_another_key_fails() {
        let mut params = CertificateParams::new(vec!["a.webco.test".to_owned()]).unwrap();
        params
            .custom_extensions
            .push(CustomExtension::new_acme_identifier(&digest()));
        // Same subject as the leaf (rcgen's default name): only the signature tells.
        let mut issuer_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        issuer_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let issuer = rcgen::Issuer::new(issuer_params, KeyPair::generate().unwrap());
        let leaf_key = KeyPair::generate().unwrap();
        let der = params.signed_by(&leaf_key, &issuer).unwrap().der().to_vec();
        assert_eq!(
            kind(check_certificate(&der, "a.webco.test", KEY_AUTHORIZATION)),
            "incorrectResponse"
        );
    }
}
