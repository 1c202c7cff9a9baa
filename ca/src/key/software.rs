//! Software keys: PKCS#8 files in a directory, for when no HSM is configured. Files are created
//! with mode 0600 and refused when group or others can access them. Every load logs a warning:
//! a software issuing key is a weaker setup than an HSM.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{KeyPair, PublicKeyData};
use zeroize::Zeroizing;

use super::{check_label, KeyAlgorithm, KeyBackend, SigningKey};
use crate::CaError;

/// A directory of PKCS#8 key files named `LABEL.key`.
#[derive(Debug, Clone)]
pub struct SoftwareBackend {
    dir: PathBuf,
}

impl SoftwareBackend {
    /// A backend over `dir` (created with mode 0700 on first key generation).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    fn path(&self, label: &str) -> Result<PathBuf, CaError> {
        check_label(label)?;
        Ok(self.dir.join(format!("{label}.key")))
    }

    /// Loads the key at `path`, refusing files that group or others can access.
    pub fn load_file(path: &Path) -> Result<Arc<dyn SigningKey>, CaError> {
        let shown = path.display().to_string();
        let io = |source| CaError::Io {
            path: shown.clone(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(io)?;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(CaError::KeyFilePermissions { path: shown, mode });
        }
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(io)?);
        let key = KeyPair::from_pem(&text).map_err(|e| CaError::KeyFile {
            path: shown.clone(),
            detail: format!("not a PKCS#8 PEM private key: {e}"),
        })?;
        let algorithm = algorithm_of(&key).ok_or_else(|| CaError::KeyFile {
            path: shown.clone(),
            detail: "unsupported key type (expected ECDSA P-256 or P-384)".to_owned(),
        })?;
        tracing::warn!(
            key.path = %shown,
            key.algorithm = %algorithm,
            "a SOFTWARE signing key is in use: the private key is in a file, not in an HSM"
        );
        Ok(Arc::new(SoftwareKey {
            spki: key.subject_public_key_info(),
            key,
            algorithm,
        }))
    }
}

impl KeyBackend for SoftwareBackend {
    fn generate_key(
        &self,
        label: &str,
        algorithm: KeyAlgorithm,
    ) -> Result<Arc<dyn SigningKey>, CaError> {
        let path = self.path(label)?;
        let shown = path.display().to_string();
        let io = |source| CaError::Io {
            path: shown.clone(),
            source,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|source| CaError::Io {
                path: self.dir.display().to_string(),
                source,
            })?;
        let key = KeyPair::generate_for(algorithm.rcgen())?;
        let pem = Zeroizing::new(key.serialize_pem());
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|source| {
                if source.kind() == std::io::ErrorKind::AlreadyExists {
                    CaError::KeyExists {
                        backend: format!("software key directory {}", self.dir.display()),
                        label: label.to_owned(),
                    }
                } else {
                    io(source)
                }
            })?;
        file.write_all(pem.as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
        drop(file);
        Self::load_file(&path)
    }

    fn find_key(&self, label: &str) -> Result<Arc<dyn SigningKey>, CaError> {
        let path = self.path(label)?;
        if !path.exists() {
            return Err(CaError::KeyNotFound {
                backend: format!("software key directory {}", self.dir.display()),
                label: label.to_owned(),
            });
        }
        Self::load_file(&path)
    }
}

fn algorithm_of(key: &KeyPair) -> Option<KeyAlgorithm> {
    let alg = key.algorithm();
    [KeyAlgorithm::EcdsaP256Sha256, KeyAlgorithm::EcdsaP384Sha384]
        .into_iter()
        .find(|a| a.rcgen() == alg)
}

/// A key held in process memory (loaded from a 0600 file).
struct SoftwareKey {
    key: KeyPair,
    spki: Vec<u8>,
    algorithm: KeyAlgorithm,
}

impl std::fmt::Debug for SoftwareKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftwareKey")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl SigningKey for SoftwareKey {
    fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    fn public_key_der(&self) -> &[u8] {
        &self.spki
    }

    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, CaError> {
        rcgen::SigningKey::sign(&self.key, msg).map_err(CaError::Generate)
    }
}
