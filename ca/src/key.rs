//! Signing keys held by a backend. The CA signs certificates and CRLs through
//! `Arc<dyn SigningKey>`; the private key stays inside its backend (an HSM token through PKCS#11,
//! or a software PKCS#8 file as the embedded fallback) and never crosses this crate's boundary.

mod pkcs11;
mod software;

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::CaError;

pub use pkcs11::{PinSource, Pkcs11Backend, DEFAULT_PKCS11_MODULE};
pub use software::SoftwareBackend;

/// The signature algorithm of an issuing key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[non_exhaustive]
pub enum KeyAlgorithm {
    /// ECDSA on P-256 with SHA-256.
    #[serde(rename = "p256")]
    EcdsaP256Sha256,
    /// ECDSA on P-384 with SHA-384.
    #[serde(rename = "p384")]
    EcdsaP384Sha384,
}

impl KeyAlgorithm {
    pub(crate) fn rcgen(self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            KeyAlgorithm::EcdsaP256Sha256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyAlgorithm::EcdsaP384Sha384 => &rcgen::PKCS_ECDSA_P384_SHA384,
        }
    }

    fn digest(self) -> &'static ring::digest::Algorithm {
        match self {
            KeyAlgorithm::EcdsaP256Sha256 => &ring::digest::SHA256,
            KeyAlgorithm::EcdsaP384Sha384 => &ring::digest::SHA384,
        }
    }

    /// Length in bytes of one ECDSA scalar (r or s).
    fn scalar_len(self) -> usize {
        match self {
            KeyAlgorithm::EcdsaP256Sha256 => 32,
            KeyAlgorithm::EcdsaP384Sha384 => 48,
        }
    }

    /// DER of the named-curve OID, as PKCS#11 `CKA_EC_PARAMS` wants it.
    fn ec_params_der(self) -> &'static [u8] {
        match self {
            // 1.2.840.10045.3.1.7 (prime256v1)
            KeyAlgorithm::EcdsaP256Sha256 => {
                &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07]
            }
            // 1.3.132.0.34 (secp384r1)
            KeyAlgorithm::EcdsaP384Sha384 => &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22],
        }
    }

    fn from_ec_params_der(der: &[u8]) -> Option<Self> {
        [KeyAlgorithm::EcdsaP256Sha256, KeyAlgorithm::EcdsaP384Sha384]
            .into_iter()
            .find(|alg| alg.ec_params_der() == der)
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyAlgorithm::EcdsaP256Sha256 => "ECDSA P-256 SHA-256",
            KeyAlgorithm::EcdsaP384Sha384 => "ECDSA P-384 SHA-384",
        })
    }
}

/// A private key the CA can sign with, without ever seeing it.
pub trait SigningKey: Send + Sync + fmt::Debug {
    /// The key's signature algorithm.
    fn algorithm(&self) -> KeyAlgorithm;
    /// The public key as DER SubjectPublicKeyInfo.
    fn public_key_der(&self) -> &[u8];
    /// Signs `msg` (hashing it with the algorithm's digest) and returns a DER ECDSA signature.
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, CaError>;
}

/// A place that holds named keys: a PKCS#11 token or a software key directory.
pub trait KeyBackend: Send + Sync + fmt::Debug {
    /// Generates a new key named `label` inside the backend.
    fn generate_key(
        &self,
        label: &str,
        algorithm: KeyAlgorithm,
    ) -> Result<Arc<dyn SigningKey>, CaError>;
    /// Finds the existing key named `label`.
    fn find_key(&self, label: &str) -> Result<Arc<dyn SigningKey>, CaError>;
}

/// Encodes a raw `r ‖ s` ECDSA signature (as PKCS#11 `C_Sign` returns it) as the DER
/// `SEQUENCE { INTEGER r, INTEGER s }` that X.509 carries.
pub(crate) fn ecdsa_raw_to_der(raw: &[u8], scalar_len: usize) -> Option<Vec<u8>> {
    if raw.len() != 2 * scalar_len {
        return None;
    }
    let (r, s) = raw.split_at(scalar_len);
    let mut body = Vec::with_capacity(raw.len() + 6);
    der_unsigned_integer(&mut body, r);
    der_unsigned_integer(&mut body, s);
    let mut out = Vec::with_capacity(body.len() + 3);
    out.push(0x30);
    der_length(&mut out, body.len());
    out.extend_from_slice(&body);
    Some(out)
}

fn der_unsigned_integer(out: &mut Vec<u8>, bytes: &[u8]) {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    let trimmed = &bytes[first..];
    let pad = trimmed.first().is_none_or(|b| b & 0x80 != 0);
    out.push(0x02);
    der_length(out, trimmed.len() + usize::from(pad));
    if pad {
        out.push(0);
    }
    out.extend_from_slice(trimmed);
}

fn der_length(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else if len <= 0xff {
        out.extend_from_slice(&[0x81, len as u8]);
    } else {
        out.extend_from_slice(&[0x82, (len >> 8) as u8, len as u8]);
    }
}

/// DER SubjectPublicKeyInfo for an uncompressed EC point.
pub(crate) fn ec_spki(algorithm: KeyAlgorithm, point: &[u8]) -> Vec<u8> {
    use rcgen::PublicKeyData;
    RawPublicKey {
        point,
        algorithm: algorithm.rcgen(),
    }
    .subject_public_key_info()
}

struct RawPublicKey<'a> {
    point: &'a [u8],
    algorithm: &'static rcgen::SignatureAlgorithm,
}

impl rcgen::PublicKeyData for RawPublicKey<'_> {
    fn der_bytes(&self) -> &[u8] {
        self.point
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.algorithm
    }
}

/// A [`SigningKey`] seen through rcgen's signer traits. rcgen's errors cannot carry ours, so a
/// backend failure is kept aside on the signing thread (rcgen signs synchronously on the caller's
/// thread) and recovered with [`RcgenSigner::error`].
pub(crate) struct RcgenSigner {
    key: Arc<dyn SigningKey>,
    point: Vec<u8>,
}

thread_local! {
    static SIGN_FAILURE: std::cell::RefCell<Option<CaError>> = const { std::cell::RefCell::new(None) };
}

impl RcgenSigner {
    pub(crate) fn new(key: Arc<dyn SigningKey>) -> Result<Self, CaError> {
        let point = spki_point(key.public_key_der()).ok_or_else(|| {
            CaError::Config("signing key has an unparsable public key".to_owned())
        })?;
        Ok(Self { key, point })
    }

    /// Turns an rcgen error into the backend's error when the backend caused it.
    pub(crate) fn error(err: rcgen::Error) -> CaError {
        let kept = SIGN_FAILURE.with(|slot| slot.borrow_mut().take());
        kept.unwrap_or(CaError::Generate(err))
    }
}

impl rcgen::PublicKeyData for RcgenSigner {
    fn der_bytes(&self) -> &[u8] {
        &self.point
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.key.algorithm().rcgen()
    }
}

impl rcgen::SigningKey for RcgenSigner {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        SIGN_FAILURE.with(|slot| slot.borrow_mut().take());
        self.key.sign(msg).map_err(|e| {
            SIGN_FAILURE.with(|slot| *slot.borrow_mut() = Some(e));
            rcgen::Error::RemoteKeyError
        })
    }
}

/// The subject public key bits (the EC point) of a DER SubjectPublicKeyInfo.
pub(crate) fn spki_point(spki: &[u8]) -> Option<Vec<u8>> {
    use x509_parser::prelude::FromDer;
    let (rest, info) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki).ok()?;
    rest.is_empty()
        .then(|| info.subject_public_key.data.to_vec())
}

/// Key labels name files and token objects: keep them to a safe alphabet.
pub(crate) fn check_label(label: &str) -> Result<(), CaError> {
    let ok = !label.is_empty()
        && label.len() <= 64
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !label.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(CaError::Config(format!(
            "key label {label:?}: use 1-64 characters of A-Z a-z 0-9 - _ . (not starting with '.')"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_signature_pads_high_bit_and_trims_zeros() {
        let mut raw = vec![0u8; 64];
        raw[0] = 0x80; // r has its high bit set: needs a 0x00 pad
        raw[32] = 0x00; // s starts with zeros: trimmed
        raw[33] = 0x01;
        let der = ecdsa_raw_to_der(&raw, 32).unwrap();
        assert_eq!(&der[..4], &[0x30, 33 + 2 + 31 + 2, 0x02, 33]);
        assert_eq!(der[4], 0);
        assert_eq!(der[5], 0x80);
        let s_at = 4 + 33;
        assert_eq!(&der[s_at..s_at + 3], &[0x02, 31, 0x01]);
        assert!(ecdsa_raw_to_der(&raw[..63], 32).is_none());
    }

    #[test]
    fn zero_scalar_encodes_as_single_zero() {
        let raw = vec![0u8; 64];
        let der = ecdsa_raw_to_der(&raw, 32).unwrap();
        assert_eq!(der, vec![0x30, 6, 0x02, 1, 0, 0x02, 1, 0]);
    }

    #[test]
    fn labels() {
        assert!(check_label("portcullis-issuing.eu1_a").is_ok());
        for bad in ["", "../x", "a/b", ".hidden", "a b", &"x".repeat(65)] {
            assert!(check_label(bad).is_err(), "{bad}");
        }
    }
}
