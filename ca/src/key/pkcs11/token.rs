//! The session pool of one PKCS#11 token, and the mapping of cryptoki errors: "token gone"
//! becomes [`CaError::BackendUnavailable`] and drops the pool, so the next call starts afresh.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use cryptoki::context::Pkcs11;
use cryptoki::error::{Error as P11Error, RvError};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;

use crate::key::KeyAlgorithm;
use crate::CaError;

/// A cryptoki error in a few words (the return value's name, not its paragraph of prose).
pub(super) fn short(e: &P11Error) -> String {
    match e {
        P11Error::Pkcs11(rv, function) => format!("{function}: {rv:?}"),
        other => other.to_string(),
    }
}

/// A token found by label: its slot, PIN, and a pool of logged-in sessions.
pub(super) struct Token {
    pub(super) ctx: Pkcs11,
    pub(super) module: PathBuf,
    pub(super) label: String,
    pub(super) slot: Mutex<Slot>,
    pub(super) pin: AuthPin,
    pub(super) max_sessions: usize,
    pub(super) pool: Mutex<Pool>,
    pub(super) returned: Condvar,
    /// Private-key handles by label, valid for the current pool generation.
    pub(super) handles: Mutex<HashMap<String, ObjectHandle>>,
}

#[derive(Default)]
pub(super) struct Pool {
    idle: Vec<Session>,
    /// Sessions of the current generation, idle or checked out.
    open: usize,
    /// Bumped when the token is found unavailable: older sessions are dropped on return.
    generation: u64,
}

/// A session checked out of the pool; dropped without `release`, it is discarded.
struct Lease<'a> {
    token: &'a Token,
    session: Option<Session>,
    generation: u64,
}

impl Lease<'_> {
    // Invariant, not input: `checkout` hands out only leases holding a session, and only
    // `release` (which consumes the lease) and `drop` take it out, so no caller can see None.
    #[allow(clippy::expect_used)]
    fn session(&self) -> &Session {
        self.session.as_ref().expect("lease holds a session")
    }

    fn release(mut self) {
        if let Some(session) = self.session.take() {
            let mut pool = self.token.lock_pool();
            if pool.generation == self.generation {
                pool.idle.push(session);
            }
            self.token.returned.notify_one();
        }
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if self.session.take().is_some() {
            let mut pool = self.token.lock_pool();
            if pool.generation == self.generation {
                pool.open = pool.open.saturating_sub(1);
            }
            self.token.returned.notify_one();
        }
    }
}

impl Token {
    fn lock_pool(&self) -> MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn lock_handles(&self) -> MutexGuard<'_, HashMap<String, ObjectHandle>> {
        self.handles.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Maps a cryptoki error, classifying "token gone" as [`CaError::BackendUnavailable`].
    pub(super) fn error(&self, op: &'static str, e: P11Error) -> CaError {
        match &e {
            P11Error::Pkcs11(rv, _) => match rv {
                RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::UserNotLoggedIn
                | RvError::DeviceRemoved
                | RvError::DeviceError
                | RvError::TokenNotPresent
                | RvError::TokenNotRecognized
                | RvError::SlotIdInvalid
                | RvError::CryptokiNotInitialized => CaError::BackendUnavailable(format!(
                    "token {:?}: {op}: {}",
                    self.label,
                    short(&e)
                )),
                RvError::PinIncorrect | RvError::PinLenRange => CaError::PinIncorrect {
                    token: self.label.clone(),
                },
                RvError::PinLocked => CaError::PinLocked {
                    token: self.label.clone(),
                },
                _ => CaError::Pkcs11 {
                    op,
                    detail: format!("token {:?}: {}", self.label, short(&e)),
                },
            },
            _ => CaError::Pkcs11 {
                op,
                detail: format!("token {:?}: {}", self.label, short(&e)),
            },
        }
    }

    fn checkout(&self) -> Result<Lease<'_>, CaError> {
        let mut pool = self.lock_pool();
        loop {
            if let Some(session) = pool.idle.pop() {
                return Ok(Lease {
                    token: self,
                    session: Some(session),
                    generation: pool.generation,
                });
            }
            if pool.open < self.max_sessions {
                pool.open += 1;
                let generation = pool.generation;
                drop(pool);
                // The lease counts as open from here; dropping it on failure gives the place back.
                let mut lease = Lease {
                    token: self,
                    session: None,
                    generation,
                };
                let session = self.open_session();
                return match session {
                    Ok(session) => {
                        lease.session = Some(session);
                        Ok(lease)
                    }
                    Err(e) => {
                        let mut pool = self.lock_pool();
                        if pool.generation == generation {
                            pool.open = pool.open.saturating_sub(1);
                        }
                        self.returned.notify_one();
                        Err(e)
                    }
                };
            }
            pool = self
                .returned
                .wait(pool)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn open_session(&self) -> Result<Session, CaError> {
        let slot = *self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        let session = match self.ctx.open_rw_session(slot) {
            Ok(session) => session,
            Err(e) => {
                // Slot ids may change when a token comes back: look the label up again.
                let slot =
                    find_slot(&self.ctx, &self.label).map_err(|_| self.error("open session", e))?;
                *self.slot.lock().unwrap_or_else(PoisonError::into_inner) = slot;
                self.ctx
                    .open_rw_session(slot)
                    .map_err(|e| self.error("open session", e))?
            }
        };
        match session.login(UserType::User, Some(&self.pin)) {
            Ok(()) | Err(P11Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
            Err(e) => Err(self.error("login", e)),
        }
    }

    /// Runs `f` on a pooled session. A "token gone" error discards every pooled session so that
    /// the next call starts afresh.
    pub(super) fn with_session<T>(
        &self,
        f: impl FnOnce(&Session) -> Result<T, CaError>,
    ) -> Result<T, CaError> {
        let lease = self.checkout()?;
        match f(lease.session()) {
            Ok(value) => {
                lease.release();
                Ok(value)
            }
            Err(e) if e.is_unavailable() => {
                tracing::warn!(pkcs11.token = %self.label, error = %e, "PKCS#11 token unavailable; dropping its sessions");
                let stale = {
                    let mut pool = self.lock_pool();
                    pool.generation += 1;
                    pool.open = 0;
                    std::mem::take(&mut pool.idle)
                };
                drop(stale);
                self.lock_handles().clear();
                drop(lease);
                Err(e)
            }
            Err(e) => {
                lease.release();
                Err(e)
            }
        }
    }

    pub(super) fn key_handle(
        &self,
        session: &Session,
        label: &str,
    ) -> Result<ObjectHandle, CaError> {
        if let Some(handle) = self.lock_handles().get(label) {
            return Ok(*handle);
        }
        let handle = self.find_one(session, ObjectClass::PRIVATE_KEY, label)?;
        self.lock_handles().insert(label.to_owned(), handle);
        Ok(handle)
    }

    pub(super) fn find_one(
        &self,
        session: &Session,
        class: ObjectClass,
        label: &str,
    ) -> Result<ObjectHandle, CaError> {
        let found = session
            .find_objects(&[
                Attribute::Class(class),
                Attribute::KeyType(KeyType::EC),
                Attribute::Label(label.as_bytes().to_vec()),
            ])
            .map_err(|e| self.error("find key", e))?;
        match found.as_slice() {
            [one] => Ok(*one),
            [] => {
                // Private objects vanish from a session that lost its login.
                self.ensure_logged_in(session)?;
                Err(CaError::KeyNotFound {
                    backend: format!("PKCS#11 token {:?}", self.label),
                    label: label.to_owned(),
                })
            }
            many => Err(CaError::Pkcs11 {
                op: "find key",
                detail: format!(
                    "token {:?}: {} {class} objects are labelled {label:?}; labels must be unique",
                    self.label,
                    many.len()
                ),
            }),
        }
    }

    /// [`CaError::BackendUnavailable`] when the session is no longer logged in (the token was
    /// logged out by someone else, or reset).
    pub(super) fn ensure_logged_in(&self, session: &Session) -> Result<(), CaError> {
        let info = session
            .get_session_info()
            .map_err(|e| self.error("session info", e))?;
        match info.session_state() {
            SessionState::RoUser | SessionState::RwUser => Ok(()),
            other => Err(CaError::BackendUnavailable(format!(
                "token {:?}: session no longer logged in ({other:?})",
                self.label
            ))),
        }
    }

    pub(super) fn public_key(
        &self,
        session: &Session,
        label: &str,
    ) -> Result<(KeyAlgorithm, Vec<u8>), CaError> {
        let handle = self.find_one(session, ObjectClass::PUBLIC_KEY, label)?;
        let attrs = session
            .get_attributes(handle, &[AttributeType::EcParams, AttributeType::EcPoint])
            .map_err(|e| self.error("read public key", e))?;
        let mut params = None;
        let mut point = None;
        for attr in attrs {
            match attr {
                Attribute::EcParams(p) => params = Some(p),
                Attribute::EcPoint(p) => point = Some(p),
                _ => {}
            }
        }
        let bad = |detail: &str| CaError::Pkcs11 {
            op: "read public key",
            detail: format!("token {:?}, key {label:?}: {detail}", self.label),
        };
        let algorithm = params
            .as_deref()
            .and_then(KeyAlgorithm::from_ec_params_der)
            .ok_or_else(|| bad("not a P-256 or P-384 key"))?;
        let point = point
            .as_deref()
            .and_then(|p| unwrap_ec_point(p, algorithm))
            .ok_or_else(|| bad("unreadable CKA_EC_POINT"))?;
        Ok((algorithm, point))
    }
}

/// `CKA_EC_POINT` is a DER OCTET STRING around the uncompressed point; some modules return the
/// bare point. Accept both, by length.
fn unwrap_ec_point(value: &[u8], algorithm: KeyAlgorithm) -> Option<Vec<u8>> {
    let point_len = 1 + 2 * algorithm.scalar_len();
    if value.len() == point_len && value[0] == 0x04 {
        return Some(value.to_vec());
    }
    let content = match value {
        [0x04, len, rest @ ..] if usize::from(*len) < 0x80 => (usize::from(*len), rest),
        [0x04, 0x81, len, rest @ ..] => (usize::from(*len), rest),
        _ => return None,
    };
    let (len, rest) = content;
    (len == rest.len() && len == point_len && rest[0] == 0x04).then(|| rest.to_vec())
}

pub(super) fn find_slot(ctx: &Pkcs11, label: &str) -> Result<Slot, CaError> {
    let slots = ctx.get_slots_with_token().map_err(|e| CaError::Pkcs11 {
        op: "list slots",
        detail: short(&e),
    })?;
    let mut present = Vec::new();
    for slot in slots {
        let Ok(info) = ctx.get_token_info(slot) else {
            continue;
        };
        let found = info.label().trim_end();
        if found == label {
            return Ok(slot);
        }
        present.push(format!("{found:?}"));
    }
    Err(CaError::TokenNotFound {
        label: label.to_owned(),
        present: if present.is_empty() {
            "none".to_owned()
        } else {
            present.join(", ")
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ec_point_wrapped_or_bare() {
        let mut bare = vec![0x04];
        bare.extend([7u8; 64]);
        let mut wrapped = vec![0x04, 65];
        wrapped.extend(&bare);
        let alg = KeyAlgorithm::EcdsaP256Sha256;
        assert_eq!(unwrap_ec_point(&bare, alg).unwrap(), bare);
        assert_eq!(unwrap_ec_point(&wrapped, alg).unwrap(), bare);
        assert!(unwrap_ec_point(&wrapped[..60], alg).is_none());
        let mut p384 = vec![0x04];
        p384.extend([9u8; 96]);
        let mut wrapped384 = vec![0x04, 0x81, 97];
        wrapped384.extend(&p384);
        assert_eq!(
            unwrap_ec_point(&wrapped384, KeyAlgorithm::EcdsaP384Sha384).unwrap(),
            p384
        );
    }
}
