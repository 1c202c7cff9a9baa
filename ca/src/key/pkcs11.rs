//! Keys inside a PKCS#11 token (any HSM; SoftHSM2 in development and tests).
//!
//! Keys are generated in the token as sensitive, non-extractable, sign-only token objects and
//! used by label. A `Session` may move between threads but not be shared, so the backend keeps a
//! pool of logged-in sessions. When the token goes away (session handle invalid, user logged out,
//! device removed…) the call fails with [`CaError::BackendUnavailable`], the pool is dropped, and
//! the next call opens and logs in fresh sessions.

mod token;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as P11Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use cryptoki::types::AuthPin;
use ring::rand::SecureRandom;
use zeroize::Zeroizing;

use super::{check_label, ec_spki, ecdsa_raw_to_der, KeyAlgorithm, KeyBackend, SigningKey};
use crate::CaError;
use token::{find_slot, short, Pool, Token};

/// Where SoftHSM2's module lives on Debian and Ubuntu.
pub const DEFAULT_PKCS11_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// Where the token PIN comes from. Never the command line, never the config file in clear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinSource {
    /// The first line of this file.
    File(PathBuf),
    /// This environment variable.
    Env(String),
}

impl PinSource {
    /// The PIN's source from a config's `pin_file` and `pin_env`: exactly one of them set.
    pub fn one_of(file: Option<&Path>, env: Option<&str>) -> Option<Self> {
        match (file, env) {
            (Some(file), None) => Some(PinSource::File(file.to_owned())),
            (None, Some(var)) => Some(PinSource::Env(var.to_owned())),
            _ => None,
        }
    }

    fn read(&self) -> Result<AuthPin, CaError> {
        let pin = match self {
            PinSource::File(path) => {
                let text = Zeroizing::new(read_secret_file(path)?);
                Zeroizing::new(text.lines().next().unwrap_or("").trim().to_owned())
            }
            PinSource::Env(var) => {
                let value = Zeroizing::new(std::env::var(var).map_err(|_| {
                    CaError::PinSource(format!("environment variable {var} is not set"))
                })?);
                Zeroizing::new(value.trim().to_owned())
            }
        };
        if pin.is_empty() {
            return Err(CaError::PinSource(format!("{self:?}: empty PIN")));
        }
        Ok(AuthPin::from(pin.as_str()))
    }
}

/// Reads a file holding a secret, refusing one that group or others can access (as key files
/// are): a PIN readable by every local user is a PIN given away.
fn read_secret_file(path: &Path) -> Result<String, CaError> {
    use std::os::unix::fs::PermissionsExt;
    let unreadable =
        |e: std::io::Error| CaError::PinSource(format!("PIN file {}: {e}", path.display()));
    let mode = std::fs::metadata(path)
        .map_err(unreadable)?
        .permissions()
        .mode()
        & 0o7777;
    if mode & 0o077 != 0 {
        return Err(CaError::KeyFilePermissions {
            path: path.display().to_string(),
            mode,
        });
    }
    std::fs::read_to_string(path).map_err(unreadable)
}

/// One context per module per process: `C_Initialize` may run only once.
fn context(module: &Path) -> Result<Pkcs11, CaError> {
    static CONTEXTS: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let mut contexts = CONTEXTS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some(ctx) = contexts.get(module) {
        return Ok(ctx.clone());
    }
    let load_error = |detail: String| CaError::ModuleLoad {
        module: module.display().to_string(),
        detail,
    };
    let ctx = Pkcs11::new(module).map_err(|e| load_error(e.to_string()))?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(P11Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(load_error(short(&e))),
    }
    contexts.insert(module.to_owned(), ctx.clone());
    Ok(ctx)
}

/// A PKCS#11 token found by label, with a pool of logged-in sessions.
#[derive(Clone)]
pub struct Pkcs11Backend {
    token: Arc<Token>,
}

impl std::fmt::Debug for Pkcs11Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Backend")
            .field("module", &self.token.module)
            .field("token", &self.token.label)
            .field("max_sessions", &self.token.max_sessions)
            .finish_non_exhaustive()
    }
}

/// One key generation at a time in the process: SoftHSM2's file store fails concurrent
/// token-object creation with CKR_GENERAL_ERROR, and "label free?" then "create" must not
/// interleave anyway. Generation is rare (CA init), so one lock for all tokens is enough.
static GENERATING: Mutex<()> = Mutex::new(());

impl Pkcs11Backend {
    /// Loads `module`, finds the token labelled `token_label`, and logs in with the PIN from
    /// `pin`. `max_sessions` bounds the session pool (0: the number of CPUs).
    pub fn open(
        module: &Path,
        token_label: &str,
        pin: &PinSource,
        max_sessions: usize,
    ) -> Result<Self, CaError> {
        let ctx = context(module)?;
        let slot = find_slot(&ctx, token_label)?;
        let pin = pin.read()?;
        let max_sessions = if max_sessions == 0 {
            std::thread::available_parallelism().map_or(2, usize::from)
        } else {
            max_sessions
        };
        let token = Arc::new(Token {
            ctx,
            module: module.to_owned(),
            label: token_label.to_owned(),
            slot: Mutex::new(slot),
            pin,
            max_sessions,
            pool: Mutex::new(Pool::default()),
            returned: Condvar::new(),
            handles: Mutex::new(HashMap::new()),
        });
        // Log in now, so a wrong PIN or a broken token shows at startup.
        token.with_session(|_| Ok(()))?;
        Ok(Self { token })
    }

    /// The token's label.
    pub fn token_label(&self) -> &str {
        &self.token.label
    }
}

impl KeyBackend for Pkcs11Backend {
    fn generate_key(
        &self,
        label: &str,
        algorithm: KeyAlgorithm,
    ) -> Result<Arc<dyn SigningKey>, CaError> {
        check_label(label)?;
        let mut id = [0u8; 16];
        ring::rand::SystemRandom::new()
            .fill(&mut id)
            .map_err(|_| CaError::Random)?;
        let token = &self.token;
        let _one_at_a_time = GENERATING.lock().unwrap_or_else(PoisonError::into_inner);
        // SoftHSM2's file store also fails a creation now and then with CKR_GENERAL_ERROR
        // while other sessions (another process's too) read the token; nothing is created
        // then, so the whole step (label check included) is tried again, a few times.
        let mut attempt = 0;
        let point = loop {
            attempt += 1;
            let mut general_error = false;
            let outcome = token.with_session(|session| {
                for class in [ObjectClass::PRIVATE_KEY, ObjectClass::PUBLIC_KEY] {
                    match token.find_one(session, class, label) {
                        Err(CaError::KeyNotFound { .. }) => {}
                        Ok(_) | Err(CaError::Pkcs11 { .. }) => {
                            return Err(CaError::KeyExists {
                                backend: format!("PKCS#11 token {:?}", token.label),
                                label: label.to_owned(),
                            })
                        }
                        Err(e) => return Err(e),
                    }
                }
                let label_bytes = label.as_bytes().to_vec();
                let public = [
                    Attribute::Token(true),
                    Attribute::Private(false),
                    Attribute::Verify(true),
                    Attribute::Encrypt(false),
                    Attribute::Wrap(false),
                    Attribute::EcParams(algorithm.ec_params_der().to_vec()),
                    Attribute::Label(label_bytes.clone()),
                    Attribute::Id(id.to_vec()),
                ];
                let private = [
                    Attribute::Token(true),
                    Attribute::Private(true),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(false),
                    Attribute::Sign(true),
                    Attribute::Decrypt(false),
                    Attribute::Unwrap(false),
                    Attribute::Derive(false),
                    Attribute::Label(label_bytes),
                    Attribute::Id(id.to_vec()),
                ];
                session
                    .generate_key_pair(&Mechanism::EccKeyPairGen, &public, &private)
                    .map_err(|e| {
                        general_error = matches!(e, P11Error::Pkcs11(RvError::GeneralError, _));
                        token.error("generate key pair", e)
                    })?;
                token.public_key(session, label).map(|(_, point)| point)
            });
            match outcome {
                Err(e) if general_error && attempt < 4 => {
                    tracing::warn!(pkcs11.token = %token.label, key.label = %label, error = %e, attempt, "key generation failed; trying again");
                    std::thread::sleep(std::time::Duration::from_millis(50 * attempt));
                }
                other => break other?,
            }
        };
        tracing::info!(pkcs11.token = %token.label, key.label = %label, key.algorithm = %algorithm, "generated key in token");
        Ok(Arc::new(Pkcs11Key {
            token: Arc::clone(token),
            label: label.to_owned(),
            algorithm,
            spki: ec_spki(algorithm, &point),
        }))
    }

    fn find_key(&self, label: &str) -> Result<Arc<dyn SigningKey>, CaError> {
        check_label(label)?;
        let token = &self.token;
        let (algorithm, point) = token.with_session(|session| {
            let private = token.find_one(session, ObjectClass::PRIVATE_KEY, label)?;
            let flags = session
                .get_attributes(
                    private,
                    &[AttributeType::Sign, AttributeType::Extractable, AttributeType::Sensitive],
                )
                .map_err(|e| token.error("read key attributes", e))?;
            for attr in flags {
                match attr {
                    Attribute::Sign(false) => {
                        return Err(CaError::Pkcs11 {
                            op: "find key",
                            detail: format!("token {:?}, key {label:?}: CKA_SIGN is false", token.label),
                        })
                    }
                    Attribute::Extractable(true) | Attribute::Sensitive(false) => {
                        tracing::warn!(pkcs11.token = %token.label, key.label = %label, "key is extractable or not sensitive");
                    }
                    _ => {}
                }
            }
            token.public_key(session, label)
        })?;
        Ok(Arc::new(Pkcs11Key {
            token: Arc::clone(token),
            label: label.to_owned(),
            algorithm,
            spki: ec_spki(algorithm, &point),
        }))
    }
}

/// A private key inside a token, used by label.
struct Pkcs11Key {
    token: Arc<Token>,
    label: String,
    algorithm: KeyAlgorithm,
    spki: Vec<u8>,
}

impl std::fmt::Debug for Pkcs11Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Key")
            .field("token", &self.token.label)
            .field("label", &self.label)
            .field("algorithm", &self.algorithm)
            .finish()
    }
}

impl SigningKey for Pkcs11Key {
    fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    fn public_key_der(&self) -> &[u8] {
        &self.spki
    }

    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, CaError> {
        // SoftHSM2 has no CKM_ECDSA_SHA256: hash here, sign the digest with CKM_ECDSA.
        let digest = ring::digest::digest(self.algorithm.digest(), msg);
        let token = &self.token;
        let raw = token.with_session(|session| {
            let handle = token.key_handle(session, &self.label)?;
            session
                .sign(&Mechanism::Ecdsa, handle, digest.as_ref())
                .or_else(|e| {
                    if matches!(
                        e,
                        P11Error::Pkcs11(
                            RvError::KeyHandleInvalid | RvError::ObjectHandleInvalid,
                            _
                        )
                    ) {
                        // A lost login hides private keys; otherwise the key itself is gone.
                        // Never retry under the label: another key may hold it now.
                        token.lock_handles().remove(&self.label);
                        token.ensure_logged_in(session)?;
                    }
                    Err(token.error("sign", e))
                })
        })?;
        ecdsa_raw_to_der(&raw, self.algorithm.scalar_len()).ok_or_else(|| CaError::Pkcs11 {
            op: "sign",
            detail: format!(
                "token {:?}: signature of {} bytes for {}",
                token.label,
                raw.len(),
                self.algorithm
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_from_env_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pin");
        std::fs::write(&path, "1234\n").unwrap();
        let chmod = |mode| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        chmod(0o644);
        assert!(matches!(
            PinSource::File(path.clone()).read(),
            Err(CaError::KeyFilePermissions { mode: 0o644, .. })
        ));
        chmod(0o600);
        assert!(PinSource::File(path.clone()).read().is_ok());
        assert!(matches!(
            PinSource::File(dir.path().join("missing")).read(),
            Err(CaError::PinSource(_))
        ));
        assert!(matches!(
            PinSource::Env("PORTCULLIS_TEST_PIN_SURELY_UNSET".into()).read(),
            Err(CaError::PinSource(_))
        ));
    }
}
