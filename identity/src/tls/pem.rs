//! PEM loading: certificate chains, private keys, CRLs and trust anchors, each checked enough
//! that a bad file is refused when it is loaded, not at the first handshake.

use std::path::Path;

use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use zeroize::Zeroizing;

use crate::IdentityError;

fn pem_error(what: &str, detail: impl std::fmt::Display) -> IdentityError {
    IdentityError::Pem {
        what: what.to_owned(),
        detail: detail.to_string(),
    }
}

/// Every certificate of a PEM text, in order: at least one, each a well-formed X.509
/// certificate. `what` names the source in errors.
pub fn parse_certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, IdentityError> {
    let certs = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(what, e))?;
    if certs.is_empty() {
        return Err(pem_error(what, "no PEM certificate found"));
    }
    for cert in &certs {
        x509_parser::parse_x509_certificate(cert.as_ref())
            .map_err(|e| pem_error(what, format_args!("malformed certificate: {e}")))?;
    }
    Ok(certs)
}

/// Every certificate of a PEM file (see [`parse_certs`]).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, IdentityError> {
    let pem = std::fs::read(path).map_err(IdentityError::io(path))?;
    parse_certs(&pem, &path.display().to_string())
}

/// The first private key of a PEM text (PKCS#8, SEC1 or PKCS#1).
pub fn parse_private_key(pem: &[u8], what: &str) -> Result<PrivateKeyDer<'static>, IdentityError> {
    rustls_pemfile::private_key(&mut &pem[..])
        .map_err(|e| pem_error(what, e))?
        .ok_or_else(|| pem_error(what, "no PEM private key found"))
}

/// The private key of a PEM file (see [`parse_private_key`]); the file's bytes are wiped from
/// memory once parsed.
pub fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, IdentityError> {
    let pem = Zeroizing::new(std::fs::read(path).map_err(IdentityError::io(path))?);
    parse_private_key(&pem, &path.display().to_string())
}

/// The CRLs of a text: a single DER CRL, or PEM `X509 CRL` blocks (at least one).
pub fn parse_crls(
    bytes: &[u8],
    what: &str,
) -> Result<Vec<CertificateRevocationListDer<'static>>, IdentityError> {
    if bytes.first() == Some(&0x30) {
        return Ok(vec![CertificateRevocationListDer::from(bytes.to_vec())]);
    }
    let crls = rustls_pemfile::crls(&mut &bytes[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(what, e))?;
    if crls.is_empty() {
        return Err(pem_error(what, "no PEM X509 CRL found"));
    }
    Ok(crls)
}

/// The CRLs of a file (see [`parse_crls`]).
pub fn load_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, IdentityError> {
    let bytes = std::fs::read(path).map_err(IdentityError::io(path))?;
    parse_crls(&bytes, &path.display().to_string())
}

/// Trust anchors from certificates.
pub fn root_store(
    certs: impl IntoIterator<Item = CertificateDer<'static>>,
    what: &str,
) -> Result<RootCertStore, IdentityError> {
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| pem_error(what, format_args!("unusable CA certificate: {e}")))?;
    }
    Ok(roots)
}

/// A chain and its key as rustls serves them, with the restricted provider; refuses a key that
/// does not belong to the leaf. `what` names the source in errors.
pub fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    what: &str,
) -> Result<CertifiedKey, IdentityError> {
    let signing_key = crate::provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| pem_error(what, format_args!("unusable private key: {e}")))?;
    let certified = CertifiedKey::new(chain, signing_key);
    certified
        .keys_match()
        .map_err(|e| pem_error(what, format_args!("certificate and key do not match: {e}")))?;
    Ok(certified)
}

/// Loads a certificate chain and its key from PEM files (see [`certified_key`]).
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, IdentityError> {
    let chain = load_certs(cert)?;
    let key_der = load_private_key(key)?;
    certified_key(
        chain,
        key_der,
        &format!("{} and {}", cert.display(), key.display()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf() -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["a.example".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn loads_a_matching_chain_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = leaf();
        let (cert_path, key_path) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&cert_path, &cert).unwrap();
        std::fs::write(&key_path, &key).unwrap();
        let certified = load_certified_key(&cert_path, &key_path).unwrap();
        assert_eq!(certified.cert.len(), 1);
        assert_eq!(
            root_store(load_certs(&cert_path).unwrap(), "c")
                .unwrap()
                .len(),
            1
        );

        let (_, other_key) = leaf();
        std::fs::write(&key_path, other_key).unwrap();
        let err = load_certified_key(&cert_path, &key_path).unwrap_err();
        assert!(err.to_string().contains("do not match"), "{err}");
        let err = load_certs(&dir.path().join("missing.pem")).unwrap_err();
        assert!(matches!(err, IdentityError::Io { .. }), "{err}");
    }

    #[test]
    fn malformed_pem_is_an_error_not_a_panic() {
        let (cert, key) = leaf();
        let garbage: [&[u8]; 7] = [
            b"",
            b"hello",
            b"-----BEGIN CERTIFICATE-----\nAAAA\n",
            b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
            b"-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n",
            key.as_bytes(),
            &[0x30, 0x82, 0xff],
        ];
        for bad in garbage {
            assert!(parse_certs(bad, "x").is_err());
        }
        assert!(parse_private_key(b"", "x").is_err());
        assert!(parse_private_key(cert.as_bytes(), "x").is_err());
        assert!(parse_private_key(
            b"-----BEGIN PRIVATE KEY-----\n!!\n-----END PRIVATE KEY-----\n",
            "x"
        )
        .is_err());
        assert!(parse_crls(b"", "x").is_err());
        assert!(parse_crls(cert.as_bytes(), "x").is_err());
        assert!(parse_crls(
            b"-----BEGIN X509 CRL-----\n!!\n-----END X509 CRL-----\n",
            "x"
        )
        .is_err());
        assert_eq!(parse_crls(&[0x30, 0x00], "x").unwrap().len(), 1);
        // Every truncation of a good PEM certificate: an error or the certificate, no panic.
        for cut in 0..cert.len() {
            let _ = parse_certs(&cert.as_bytes()[..cut], "x");
        }
        let err = parse_certs(b"hello", "certs/a.pem").unwrap_err();
        assert_eq!(err.to_string(), "certs/a.pem: no PEM certificate found");
    }
}
