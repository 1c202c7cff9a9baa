//! Signing checkpoints: the [`Signer`] trait (implemented by the CA crate's key backends, the HSM
//! in production), a software Ed25519 signer for development, and [`PublicKey`] for verification.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use ring::rand::SystemRandom;
use ring::signature::{self, Ed25519KeyPair, KeyPair};

/// A signature algorithm the audit log can verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SignatureAlgorithm {
    /// Ed25519 (RFC 8032).
    Ed25519,
    /// ECDSA over P-256 with SHA-256, signature DER-encoded (ASN.1).
    EcdsaP256Sha256Asn1,
    /// ECDSA over P-256 with SHA-256, signature as fixed-size `r || s` (what PKCS#11 returns).
    EcdsaP256Sha256Fixed,
}

impl SignatureAlgorithm {
    /// Name written in checkpoint records.
    pub fn name(&self) -> &'static str {
        match self {
            SignatureAlgorithm::Ed25519 => "ed25519",
            SignatureAlgorithm::EcdsaP256Sha256Asn1 => "ecdsa-p256-sha256-asn1",
            SignatureAlgorithm::EcdsaP256Sha256Fixed => "ecdsa-p256-sha256-fixed",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        match name {
            "ed25519" => Some(SignatureAlgorithm::Ed25519),
            "ecdsa-p256-sha256-asn1" => Some(SignatureAlgorithm::EcdsaP256Sha256Asn1),
            "ecdsa-p256-sha256-fixed" => Some(SignatureAlgorithm::EcdsaP256Sha256Fixed),
            _ => None,
        }
    }
}

/// Signing failed (the key backend is unavailable, the key file is unsafe, ...).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignerError {
    /// Reading or writing the key file failed.
    #[error("audit key {path}: {source}")]
    Io {
        /// The key file.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The key file can be read by group or others.
    #[error("audit key {path} is readable by group or others (mode {mode:o}); chmod 600 it")]
    UnsafePermissions {
        /// The key file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// The key is not usable.
    #[error("audit key: {0}")]
    BadKey(String),
    /// The backend could not sign.
    #[error("signing failed: {0}")]
    Backend(String),
}

/// Signs audit checkpoints. Implemented here for a software key, and by the CA crate for its
/// key backends (PKCS#11). Key material never leaves the implementation.
pub trait Signer: Send + Sync {
    /// Signs `msg` (the whole message: the implementation hashes as its algorithm requires).
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, SignerError>;
    /// The algorithm `sign` uses.
    fn algorithm(&self) -> SignatureAlgorithm;
    /// The public key as DER SubjectPublicKeyInfo.
    fn public_key_der(&self) -> Vec<u8>;
}

// DER SubjectPublicKeyInfo prefixes for the two key types we verify.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];
/// The DER SubjectPublicKeyInfo of a P-256 key, up to its 65-byte uncompressed point.
pub const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// Writes the public half of `signer`'s key as PEM to `path` (unless it already holds exactly
/// that), for `portcullis audit verify --key`; returns it.
pub fn publish_public_key(signer: &dyn Signer, path: &Path) -> Result<PublicKey, SignerError> {
    let public = PublicKey::from_spki_der(&signer.public_key_der())?;
    let pem = public.to_pem();
    if fs::read(path).ok().as_deref() != Some(pem.as_bytes()) {
        fs::write(path, pem).map_err(|source| SignerError::Io {
            path: path.display().to_string(),
            source,
        })?;
    }
    Ok(public)
}

/// Key id written in signed records: the first 16 hex digits of SHA-256 over the SPKI DER.
pub fn key_id(spki_der: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, spki_der);
    hex::encode(&d.as_ref()[..8])
}

/// Software Ed25519 signer with its PKCS#8 key in a file (development and single-node use).
pub struct SoftwareSigner {
    key: Ed25519KeyPair,
    spki: Vec<u8>,
}

impl std::fmt::Debug for SoftwareSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftwareSigner")
            .field("key_id", &key_id(&self.spki))
            .finish_non_exhaustive()
    }
}

impl SoftwareSigner {
    /// Loads the PKCS#8 Ed25519 key at `path`, or creates one there (mode 0600, created
    /// exclusively) if there is none. An existing file readable by group or others is refused.
    pub fn load_or_create(path: &Path) -> Result<Self, SignerError> {
        let io = |source| SignerError::Io {
            path: path.display().to_string(),
            source,
        };
        match fs::metadata(path) {
            Ok(meta) => {
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(SignerError::UnsafePermissions {
                        path: path.display().to_string(),
                        mode,
                    });
                }
                let der = fs::read(path).map_err(io)?;
                Self::from_pkcs8(&der)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let rng = SystemRandom::new();
                let doc = Ed25519KeyPair::generate_pkcs8(&rng)
                    .map_err(|_| SignerError::Backend("key generation failed".into()))?;
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(io)?;
                f.write_all(doc.as_ref()).map_err(io)?;
                f.sync_all().map_err(io)?;
                Self::from_pkcs8(doc.as_ref())
            }
            Err(e) => Err(io(e)),
        }
    }

    /// A signer from a PKCS#8 (v1 or v2) Ed25519 key.
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, SignerError> {
        let key = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map_err(|e| SignerError::BadKey(format!("not a PKCS#8 Ed25519 key: {e}")))?;
        let mut spki = ED25519_SPKI_PREFIX.to_vec();
        spki.extend_from_slice(key.public_key().as_ref());
        Ok(SoftwareSigner { key, spki })
    }

    /// A fresh in-memory key (tests and benches).
    pub fn generate() -> Result<Self, SignerError> {
        let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|_| SignerError::Backend("key generation failed".into()))?;
        Self::from_pkcs8(doc.as_ref())
    }
}

impl Signer for SoftwareSigner {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, SignerError> {
        Ok(self.key.sign(msg).as_ref().to_vec())
    }
    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::Ed25519
    }
    fn public_key_der(&self) -> Vec<u8> {
        self.spki.clone()
    }
}

/// A public key that verifies checkpoint and retention signatures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    spki: Vec<u8>,
    raw: Vec<u8>,
    kind: KeyKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyKind {
    Ed25519,
    P256,
}

impl PublicKey {
    /// Parses a DER SubjectPublicKeyInfo holding an Ed25519 or P-256 key.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, SignerError> {
        let (kind, raw) = if der.len() == 44 && der.starts_with(&ED25519_SPKI_PREFIX) {
            (KeyKind::Ed25519, &der[12..])
        } else if der.len() == 91 && der.starts_with(&P256_SPKI_PREFIX) {
            (KeyKind::P256, &der[26..])
        } else {
            return Err(SignerError::BadKey(
                "public key is not an Ed25519 or P-256 SubjectPublicKeyInfo".into(),
            ));
        };
        Ok(PublicKey {
            spki: der.to_vec(),
            raw: raw.to_vec(),
            kind,
        })
    }

    /// The key as PEM (`-----BEGIN PUBLIC KEY-----`), for `portcullis audit verify --key`.
    pub fn to_pem(&self) -> String {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(&self.spki);
        let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
        for line in b64.as_bytes().chunks(64) {
            pem.push_str(&String::from_utf8_lossy(line));
            pem.push('\n');
        }
        pem.push_str("-----END PUBLIC KEY-----\n");
        pem
    }

    /// Parses a PEM `PUBLIC KEY` block (as written by [`PublicKey::to_pem`]) or raw DER.
    pub fn from_pem_or_der(bytes: &[u8]) -> Result<Self, SignerError> {
        use base64::Engine as _;
        let Ok(text) = std::str::from_utf8(bytes) else {
            return Self::from_spki_der(bytes);
        };
        let body = text
            .split_once("-----BEGIN PUBLIC KEY-----")
            .and_then(|(_, rest)| rest.split_once("-----END PUBLIC KEY-----"))
            .map(|(body, _)| body)
            .ok_or_else(|| SignerError::BadKey("no PEM PUBLIC KEY block".into()))?;
        let b64: String = body.split_whitespace().collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| SignerError::BadKey(format!("PEM body is not base64: {e}")))?;
        Self::from_spki_der(&der)
    }

    /// The key id signed records name.
    pub fn key_id(&self) -> String {
        key_id(&self.spki)
    }

    /// Verifies `sig` over `msg` made with the algorithm named `algorithm`.
    pub fn verify(&self, algorithm: &str, msg: &[u8], sig: &[u8]) -> Result<(), String> {
        let alg = SignatureAlgorithm::from_name(algorithm)
            .ok_or_else(|| format!("unknown signature algorithm {algorithm:?}"))?;
        let verifier: &dyn signature::VerificationAlgorithm = match (self.kind, alg) {
            (KeyKind::Ed25519, SignatureAlgorithm::Ed25519) => &signature::ED25519,
            (KeyKind::P256, SignatureAlgorithm::EcdsaP256Sha256Asn1) => {
                &signature::ECDSA_P256_SHA256_ASN1
            }
            (KeyKind::P256, SignatureAlgorithm::EcdsaP256Sha256Fixed) => {
                &signature::ECDSA_P256_SHA256_FIXED
            }
            _ => return Err(format!("algorithm {algorithm} does not match the key")),
        };
        signature::UnparsedPublicKey::new(verifier, &self.raw)
            .verify(msg, sig)
            .map_err(|_| "signature does not verify".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn software_signer_signs_and_key_verifies() {
        let s = SoftwareSigner::generate().unwrap();
        let pk = PublicKey::from_spki_der(&s.public_key_der()).unwrap();
        let sig = s.sign(b"hello").unwrap();
        pk.verify("ed25519", b"hello", &sig).unwrap();
        assert!(pk.verify("ed25519", b"hellO", &sig).is_err());
        assert!(pk.verify("ecdsa-p256-sha256-asn1", b"hello", &sig).is_err());
    }

    #[test]
    fn public_key_round_trips_through_pem_and_garbage_is_refused() {
        let s = SoftwareSigner::generate().unwrap();
        let pk = PublicKey::from_spki_der(&s.public_key_der()).unwrap();
        let pem = pk.to_pem();
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        assert_eq!(PublicKey::from_pem_or_der(pem.as_bytes()).unwrap(), pk);
        assert_eq!(PublicKey::from_pem_or_der(&s.public_key_der()).unwrap(), pk);
        assert!(PublicKey::from_pem_or_der(b"not a key").is_err());
        let bad = pem.replace('A', "!");
        assert!(PublicKey::from_pem_or_der(bad.as_bytes()).is_err());
    }

    #[test]
    fn key_file_is_created_private_and_unsafe_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.key");
        let a = SoftwareSigner::load_or_create(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let b = SoftwareSigner::load_or_create(&path).unwrap();
        assert_eq!(a.public_key_der(), b.public_key_der());
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(
            SoftwareSigner::load_or_create(&path),
            Err(SignerError::UnsafePermissions { .. })
        ));
    }
}
