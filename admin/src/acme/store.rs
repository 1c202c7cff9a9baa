//! What ACME keeps across restarts, in `STATE/acme.sqlite3`: external account binding keys
//! (the HMAC key sealed with AES-256-GCM under `STATE/acme-eab.key`, 0600, since verifying a
//! MAC needs the key itself), accounts (their key, tenant and profile, fixed by the binding)
//! and the certificates issued to each account (for download and revocation).
//!
//! An EAB key binds exactly one account: the first `newAccount` that verifies with it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use portcullis_ca::{write_atomic, Serial, TenantId};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use rusqlite::{params, Connection, OptionalExtension};
use zeroize::Zeroizing;

use crate::error::AdminError;

/// File name of the ACME store in the CA state directory.
pub const ACME_DB: &str = "acme.sqlite3";
/// File name of the key that seals EAB HMAC keys.
const SEAL_KEY: &str = "acme-eab.key";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS eab_keys (
    kid TEXT PRIMARY KEY NOT NULL,
    tenant TEXT NOT NULL,
    profile TEXT NOT NULL,
    sealed BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    account INTEGER
);
CREATE TABLE IF NOT EXISTS accounts (
    id INTEGER PRIMARY KEY,
    thumbprint TEXT UNIQUE NOT NULL,
    jwk TEXT NOT NULL,
    tenant TEXT NOT NULL,
    profile TEXT NOT NULL,
    eab_kid TEXT NOT NULL,
    contact TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS certificates (
    serial TEXT PRIMARY KEY NOT NULL,
    account INTEGER NOT NULL,
    chain_pem TEXT NOT NULL
);
";

/// A new EAB key, shown once: the key id and the base64url HMAC key.
pub struct EabCredential {
    pub kid: String,
    hmac: Zeroizing<String>,
    pub expires_at: SystemTime,
}

impl EabCredential {
    /// The HMAC key (base64url), to hand to the ACME client once.
    pub fn expose_hmac(&self) -> &str {
        &self.hmac
    }
}

impl fmt::Debug for EabCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EabCredential({})", self.kid)
    }
}

/// An ACME account.
#[derive(Debug, Clone)]
pub(crate) struct Account {
    pub(crate) id: i64,
    pub(crate) jwk: String,
    pub(crate) tenant: TenantId,
    pub(crate) profile: String,
    pub(crate) eab_kid: String,
    pub(crate) contact: Vec<String>,
}

/// The SQLite store.
#[derive(Debug)]
pub struct AcmeStore {
    path: PathBuf,
    seal: SealKey,
    conn: Mutex<Connection>,
}

struct SealKey(LessSafeKey);

impl fmt::Debug for SealKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealKey(..)")
    }
}

impl AcmeStore {
    /// Opens (creating if needed) the store and its sealing key in a CA state directory.
    pub fn in_state_dir(dir: &Path) -> Result<Self, AdminError> {
        let path = dir.join(ACME_DB);
        let err = |e: rusqlite::Error| AdminError::TokenStore {
            path: path.display().to_string(),
            detail: e.to_string(),
        };
        let conn = Connection::open(&path).map_err(err)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(err)?;
        // Two servers opening the same new file at once can get SQLITE_BUSY from the switch to
        // WAL without the busy handler being asked (seen in the tests, which share a state
        // folder): try the set-up again a few times before giving up.
        let mut tries = 0;
        loop {
            let setup = conn
                .pragma_update(None, "journal_mode", "WAL")
                .and_then(|()| conn.execute_batch(SCHEMA));
            match setup {
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::DatabaseBusy && tries < 10 =>
                {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(50 * tries));
                }
                other => {
                    other.map_err(err)?;
                    break;
                }
            }
        }
        Ok(Self {
            seal: SealKey::load_or_create(&dir.join(SEAL_KEY))?,
            path,
            conn: Mutex::new(conn),
        })
    }

    fn error(&self, e: impl fmt::Display) -> AdminError {
        AdminError::TokenStore {
            path: self.path.display().to_string(),
            detail: e.to_string(),
        }
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // Every use is one statement or one transaction: a panic leaves nothing half done.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Creates an EAB key for `tenant` and `profile`, usable to bind one account for `ttl`.
    pub fn create_eab(
        &self,
        tenant: &TenantId,
        profile: &str,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<EabCredential, AdminError> {
        let rng = SystemRandom::new();
        let mut id = [0u8; 12];
        let mut key = Zeroizing::new([0u8; 32]);
        // Neither the key id nor the key may begin with '-': pasted after `--eab-kid` or
        // `--eab-hmac-key`, certbot's argument parser would take it for a flag.
        // (base64url's first character is the first byte's top six bits; '-' is 62.)
        let starts_with_dash = |bytes: &[u8]| bytes[0] >> 2 == 62;
        loop {
            rng.fill(&mut id).map_err(|_| AdminError::Random)?;
            rng.fill(key.as_mut()).map_err(|_| AdminError::Random)?;
            if !starts_with_dash(&id) && !starts_with_dash(key.as_ref()) {
                break;
            }
        }
        let kid = super::jws::b64(&id);
        let sealed = self.seal.seal(&kid, key.as_ref())?;
        let expires_at = UNIX_EPOCH + Duration::from_secs(secs(now + ttl));
        self.conn()
            .execute(
                "INSERT INTO eab_keys (kid, tenant, profile, sealed, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    kid,
                    tenant.as_str(),
                    profile,
                    sealed,
                    unix(now),
                    unix(expires_at)
                ],
            )
            .map_err(|e| self.error(e))?;
        Ok(EabCredential {
            kid,
            hmac: Zeroizing::new(super::jws::b64(key.as_ref())),
            expires_at,
        })
    }

    /// The HMAC key of an EAB key id that is unexpired and binds no account yet.
    pub(crate) fn eab_mac_key(
        &self,
        kid: &str,
        now: SystemTime,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, AdminError> {
        let sealed: Option<Vec<u8>> = self
            .conn()
            .query_row(
                "SELECT sealed FROM eab_keys WHERE kid = ?1 AND account IS NULL AND expires_at > ?2",
                params![kid, unix(now)],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.error(e))?;
        sealed.map(|s| self.seal.open(kid, s)).transpose()
    }

    /// Creates the account bound by EAB key `kid`, marking the key used in the same
    /// transaction: of two concurrent bindings one wins, the other gets None.
    pub(crate) fn create_account(
        &self,
        kid: &str,
        thumbprint: &str,
        jwk: &str,
        contact: &[String],
        now: SystemTime,
    ) -> Result<Option<Account>, AdminError> {
        let mut conn = self.conn();
        // Immediate: the write lock is taken (waiting out other writers) before the read, so
        // the transaction never has to upgrade a read lock that another writer made stale.
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| self.error(e))?;
        let grant: Option<(String, String)> = tx
            .query_row(
                "SELECT tenant, profile FROM eab_keys WHERE kid = ?1 AND account IS NULL",
                params![kid],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| self.error(e))?;
        let Some((tenant, profile)) = grant else {
            return Ok(None);
        };
        let contact_json = serde_json::to_string(contact).map_err(|e| self.error(e))?;
        tx.execute(
            "INSERT INTO accounts (thumbprint, jwk, tenant, profile, eab_kid, contact, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                thumbprint,
                jwk,
                tenant,
                profile,
                kid,
                contact_json,
                unix(now)
            ],
        )
        .map_err(|e| self.error(e))?;
        let id = tx.last_insert_rowid();
        tx.execute(
            "UPDATE eab_keys SET account = ?2 WHERE kid = ?1",
            params![kid, id],
        )
        .map_err(|e| self.error(e))?;
        tx.commit().map_err(|e| self.error(e))?;
        Ok(Some(Account {
            id,
            jwk: jwk.to_owned(),
            tenant: tenant.parse().map_err(|e| self.error(e))?,
            profile,
            eab_kid: kid.to_owned(),
            contact: contact.to_vec(),
        }))
    }

    pub(crate) fn account_by_thumbprint(&self, t: &str) -> Result<Option<Account>, AdminError> {
        self.account_where("thumbprint = ?1", t.to_owned())
    }

    pub(crate) fn account(&self, id: i64) -> Result<Option<Account>, AdminError> {
        self.account_where("id = ?1", id)
    }

    fn account_where(
        &self,
        clause: &str,
        value: impl rusqlite::ToSql,
    ) -> Result<Option<Account>, AdminError> {
        let row = self
            .conn()
            .query_row(
                &format!(
                    "SELECT id, jwk, tenant, profile, eab_kid, contact FROM accounts WHERE {clause}"
                ),
                params![value],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, String>(5)?,
                    ))
                },
            )
            .optional()
            .map_err(|e| self.error(e))?;
        let Some((id, jwk, tenant, profile, eab_kid, contact)) = row else {
            return Ok(None);
        };
        Ok(Some(Account {
            id,
            jwk,
            tenant: tenant.parse().map_err(|e| self.error(e))?,
            profile,
            eab_kid,
            contact: serde_json::from_str(&contact).map_err(|e| self.error(e))?,
        }))
    }

    pub(crate) fn add_certificate(
        &self,
        serial: &Serial,
        account: i64,
        chain_pem: &str,
    ) -> Result<(), AdminError> {
        self.conn()
            .execute(
                "INSERT INTO certificates (serial, account, chain_pem) VALUES (?1, ?2, ?3)",
                params![serial.to_string(), account, chain_pem],
            )
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    /// A certificate issued to an ACME account: (account, PEM chain).
    pub(crate) fn certificate(&self, serial: &Serial) -> Result<Option<(i64, String)>, AdminError> {
        self.conn()
            .query_row(
                "SELECT account, chain_pem FROM certificates WHERE serial = ?1",
                params![serial.to_string()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| self.error(e))
    }
}

impl SealKey {
    /// Reads the sealing key, creating it first if there is none. Creation is exclusive (a
    /// complete file linked into place, never replaced): of two processes creating it at once,
    /// both end up with the one that was linked first.
    fn load_or_create(path: &Path) -> Result<Self, AdminError> {
        let io = |e: std::io::Error| AdminError::Invalid(format!("{}: {e}", path.display()));
        if !path.exists() {
            let mut key = Zeroizing::new(vec![0u8; 32]);
            SystemRandom::new()
                .fill(&mut key)
                .map_err(|_| AdminError::Random)?;
            let mut tag = [0u8; 8];
            SystemRandom::new()
                .fill(&mut tag)
                .map_err(|_| AdminError::Random)?;
            let mut name = path.as_os_str().to_owned();
            name.push(format!(".{}.tmp", super::jws::b64(&tag)));
            let tmp = PathBuf::from(name);
            let _ = std::fs::remove_file(&tmp);
            write_atomic(&tmp, &key, 0o600)
                .map_err(|e| AdminError::Invalid(format!("writing {}: {e}", tmp.display())))?;
            let linked = std::fs::hard_link(&tmp, path);
            let _ = std::fs::remove_file(&tmp);
            match linked {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io(e)),
            }
        }
        let bytes = Zeroizing::new(std::fs::read(path).map_err(io)?);
        let key = UnboundKey::new(&AES_256_GCM, &bytes)
            .map_err(|_| AdminError::Invalid(format!("{}: not a 32-byte key", path.display())))?;
        Ok(Self(LessSafeKey::new(key)))
    }

    /// nonce ‖ ciphertext ‖ tag, the key id as associated data (a sealed key cannot be moved
    /// to another id).
    fn seal(&self, kid: &str, plain: &[u8]) -> Result<Vec<u8>, AdminError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| AdminError::Random)?;
        let mut out = plain.to_vec();
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(kid.as_bytes()),
                &mut out,
            )
            .map_err(|_| AdminError::Random)?;
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&out);
        Ok(sealed)
    }

    fn open(&self, kid: &str, sealed: Vec<u8>) -> Result<Zeroizing<Vec<u8>>, AdminError> {
        let broken = || AdminError::Invalid(format!("EAB key {kid}: sealed key does not open"));
        if sealed.len() < NONCE_LEN {
            return Err(broken());
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| broken())?;
        let mut body = Zeroizing::new(body.to_vec());
        let plain = self
            .0
            .open_in_place(nonce, Aad::from(kid.as_bytes()), &mut body)
            .map_err(|_| broken())?;
        Ok(Zeroizing::new(plain.to_vec()))
    }
}

fn unix(t: SystemTime) -> i64 {
    i64::try_from(secs(t)).unwrap_or(i64::MAX)
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eab_key_is_sealed_and_binds_one_account() {
        let dir = tempfile::tempdir().unwrap();
        let s = AcmeStore::in_state_dir(dir.path()).unwrap();
        let now = SystemTime::now();
        let cred = s
            .create_eab(
                &"webco".parse().unwrap(),
                "webco-web",
                Duration::from_secs(60),
                now,
            )
            .unwrap();
        let key = s.eab_mac_key(&cred.kid, now).unwrap().unwrap();
        assert_eq!(super::super::jws::b64(&key), cred.expose_hmac());
        let file = std::fs::read(dir.path().join(ACME_DB)).unwrap();
        assert!(
            !file.windows(32).any(|w| w == key.as_slice()),
            "stored sealed"
        );
        assert!(s
            .eab_mac_key(&cred.kid, now + Duration::from_secs(61))
            .unwrap()
            .is_none());
        let a = s.create_account(&cred.kid, "t1", "{}", &[], now).unwrap();
        assert!(a.is_some());
        assert!(s
            .create_account(&cred.kid, "t2", "{}", &[], now)
            .unwrap()
            .is_none());
        assert!(s.eab_mac_key(&cred.kid, now).unwrap().is_none(), "used");
    }

    #[test]
    fn eab_credentials_never_begin_with_a_dash() {
        // One draw in 64 would without the rule; 400 draws make a miss unlikely (~2e-3).
        let dir = tempfile::tempdir().unwrap();
        let s = AcmeStore::in_state_dir(dir.path()).unwrap();
        for _ in 0..200 {
            let cred = s
                .create_eab(
                    &"webco".parse().unwrap(),
                    "webco-web",
                    Duration::from_secs(60),
                    SystemTime::now(),
                )
                .unwrap();
            assert!(!cred.kid.starts_with('-'), "{}", cred.kid);
            assert!(!cred.expose_hmac().starts_with('-'));
        }
    }
}
