//! What ACME keeps: external account binding keys (the HMAC key sealed with AES-256-GCM under
//! `STATE/acme-eab.key`, 0600, since verifying a MAC needs the key itself), accounts (their
//! key, tenant and profile, fixed by the binding), the certificates issued to each account
//! (for download and revocation), replay nonces, and orders with their authorizations.
//!
//! [`AcmeStore`] seals and opens EAB keys itself and hands the rest to a backend
//! ([`AcmeBackend`]): on one node `STATE/acme.sqlite3`, with nonces, orders and authorizations
//! in memory (bounded, expiring: a restart abandons them); with `store.postgres`, the admin
//! plane's database for all of it, so every admin server is one ACME server. There each node
//! seals under its own `STATE/acme-eab.key`: the first node to start records the key's id,
//! and a node whose key differs is refused at start (its keys would not open elsewhere).
//!
//! An EAB key binds exactly one account: the first `newAccount` that verifies with it.

mod sqlite;
#[cfg(test)]
pub(crate) mod tests;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use portcullis_ca::{write_atomic, Serial, TenantId};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::Value;
use zeroize::Zeroizing;

use super::order::{Authz, Finalized, Order, OrderRefused};
use crate::error::AdminError;
use crate::store::PgStore;
pub(crate) use sqlite::SqliteAcme;

/// File name of the ACME store in the CA state directory.
pub const ACME_DB: &str = "acme.sqlite3";
/// File name of the key that seals EAB HMAC keys.
const SEAL_KEY: &str = "acme-eab.key";

/// How long an issued nonce stays usable.
pub(crate) const NONCE_TTL: Duration = Duration::from_secs(3600);
/// Nonces outstanding at most (the oldest are forgotten first).
pub(crate) const MAX_NONCES: u64 = 100_000;
/// Orders (and their authorizations) kept at most, and per account.
pub(crate) const MAX_ORDERS: usize = 10_000;
pub(crate) const MAX_ORDERS_PER_ACCOUNT: usize = 100;

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

/// An EAB key about to be stored, its HMAC key sealed.
#[derive(Debug)]
pub(crate) struct NewEab<'a> {
    pub(crate) kid: &'a str,
    pub(crate) tenant: &'a TenantId,
    pub(crate) profile: &'a str,
    pub(crate) sealed: &'a [u8],
    pub(crate) created_at: SystemTime,
    pub(crate) expires_at: SystemTime,
}

/// Where ACME's state is kept. Every call is blocking (run it off the async threads); every
/// change that two nodes may race on is one conditional write, so exactly one wins.
pub(crate) trait AcmeBackend: Send + Sync + fmt::Debug {
    /// Checks the seal key's id against the one the backend's sealed keys were made under
    /// (recording it if there is none yet): Err((stored id)) when they differ.
    fn agree_on_seal_key(
        &self,
        key_id: &str,
        now: SystemTime,
    ) -> Result<Result<(), String>, AdminError>;

    fn insert_eab(&self, eab: &NewEab<'_>) -> Result<(), AdminError>;

    /// The sealed HMAC key of an EAB key id that is unexpired and binds no account yet.
    fn eab_sealed(&self, kid: &str, now: SystemTime) -> Result<Option<Vec<u8>>, AdminError>;

    /// Creates the account bound by EAB key `kid`, marking the key used at once: of two
    /// concurrent bindings one wins, the other gets None.
    fn create_account(
        &self,
        kid: &str,
        thumbprint: &str,
        jwk: &str,
        contact: &[String],
        now: SystemTime,
    ) -> Result<Option<Account>, AdminError>;

    fn account_by_thumbprint(&self, thumbprint: &str) -> Result<Option<Account>, AdminError>;

    fn account(&self, id: i64) -> Result<Option<Account>, AdminError>;

    fn add_certificate(
        &self,
        serial: &Serial,
        account: i64,
        chain_pem: &str,
    ) -> Result<(), AdminError>;

    /// A certificate issued to an ACME account: (account, PEM chain).
    fn certificate(&self, serial: &Serial) -> Result<Option<(i64, String)>, AdminError>;

    /// Keeps a nonce just issued, usable until `now + NONCE_TTL`.
    fn issue_nonce(&self, nonce: &str, now: SystemTime) -> Result<(), AdminError>;

    /// Consumes a nonce: true exactly once per issued, unexpired nonce.
    fn take_nonce(&self, nonce: &str, now: SystemTime) -> Result<bool, AdminError>;

    /// Keeps a new order and its authorizations, unless there are too many in progress or
    /// another live order replaces the same certificate.
    fn add_order(
        &self,
        id: &str,
        order: &Order,
        authz: &[(String, Authz)],
        now: SystemTime,
    ) -> Result<Result<(), OrderRefused>, AdminError>;

    /// An unexpired order, its status as a client sees it.
    fn order(&self, id: &str, now: SystemTime) -> Result<Option<Order>, AdminError>;

    /// An unexpired authorization.
    fn authz(&self, id: &str, now: SystemTime) -> Result<Option<Authz>, AdminError>;

    /// Starts validating the account's pending authorization `id` with challenge `kind`:
    /// true for the one caller that moved it from pending to processing.
    fn start_challenge(
        &self,
        id: &str,
        account: i64,
        kind: &'static str,
        now: SystemTime,
    ) -> Result<bool, AdminError>;

    /// Records a validation's outcome (when it was validated, or the problem) on an
    /// authorization still processing.
    fn end_challenge(&self, id: &str, outcome: Result<SystemTime, Value>)
        -> Result<(), AdminError>;

    /// Claims the account's ready order for finalization (ready → processing): the order for
    /// the one caller that claimed it, None for every other.
    fn claim_order(
        &self,
        id: &str,
        account: i64,
        now: SystemTime,
    ) -> Result<Option<Order>, AdminError>;

    /// Records what became of a claimed order's finalization.
    fn order_finalized(&self, id: &str, outcome: &Finalized) -> Result<(), AdminError>;
}

/// ACME's store: the EAB seal key and a backend.
#[derive(Debug)]
pub struct AcmeStore {
    seal: SealKey,
    backend: Box<dyn AcmeBackend>,
}

struct SealKey {
    key: LessSafeKey,
    /// Names the key (a digest of it, never the key), to compare nodes' keys.
    id: String,
    path: PathBuf,
}

impl fmt::Debug for SealKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SealKey({})", self.id)
    }
}

impl AcmeStore {
    /// Opens (creating if needed) the SQLite store and its sealing key in a CA state
    /// directory; refused when `STATE/state-in-postgres` says the admin state is in PostgreSQL
    /// (an EAB key written here would never be honoured).
    pub fn in_state_dir(dir: &Path) -> Result<Self, AdminError> {
        let marker = dir.join(portcullis_ca::STATE_IN_POSTGRES);
        if marker.exists() {
            return Err(AdminError::TokenStore {
                path: marker.display().to_string(),
                detail: "the ACME state is kept in PostgreSQL (store.postgres): create EAB keys \
                         with `admin acme eab-create --config ADMIN.yaml`"
                    .to_owned(),
            });
        }
        Ok(Self {
            backend: Box::new(SqliteAcme::in_state_dir(dir)?),
            seal: SealKey::load_or_create(&dir.join(SEAL_KEY))?,
        })
    }

    /// Opens the ACME state in the admin plane's PostgreSQL database, sealing under the state
    /// directory's `acme-eab.key` (created if missing), which must be the one the database's
    /// keys are sealed under: the first node to start records its id, and a node whose key
    /// differs is refused, naming both. Blocking.
    pub fn postgres(store: &PgStore, state_dir: &Path) -> Result<Self, AdminError> {
        let seal = SealKey::load_or_create(&state_dir.join(SEAL_KEY))?;
        let backend = store.acme();
        if let Err(theirs) = backend.agree_on_seal_key(&seal.id, SystemTime::now())? {
            return Err(AdminError::Store(format!(
                "acme: this node's EAB seal key {} (key id {}) differs from the one the EAB \
                 keys in the admin plane's PostgreSQL database are sealed under (key id \
                 {theirs}, recorded by the first node to start): every admin server must hold \
                 the same key; copy STATE/{SEAL_KEY} from the first node",
                seal.path.display(),
                seal.id
            )));
        }
        Ok(Self {
            seal,
            backend: Box::new(backend),
        })
    }

    /// The id of the key EAB keys are sealed under (a digest, not the key).
    pub fn seal_key_id(&self) -> &str {
        &self.seal.id
    }

    pub(crate) fn backend(&self) -> &dyn AcmeBackend {
        self.backend.as_ref()
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
        self.backend.insert_eab(&NewEab {
            kid: &kid,
            tenant,
            profile,
            sealed: &sealed,
            created_at: now,
            expires_at,
        })?;
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
        self.backend
            .eab_sealed(kid, now)?
            .map(|s| self.seal.open(kid, s))
            .transpose()
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
        Ok(Self {
            key: LessSafeKey::new(key),
            id: seal_key_id(&bytes),
            path: path.to_owned(),
        })
    }

    /// nonce ‖ ciphertext ‖ tag, the key id as associated data (a sealed key cannot be moved
    /// to another id).
    fn seal(&self, kid: &str, plain: &[u8]) -> Result<Vec<u8>, AdminError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| AdminError::Random)?;
        let mut out = plain.to_vec();
        self.key
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
            .key
            .open_in_place(nonce, Aad::from(kid.as_bytes()), &mut body)
            .map_err(|_| broken())?;
        Ok(Zeroizing::new(plain.to_vec()))
    }
}

/// A seal key's id: the first 8 bytes of a domain-separated SHA-256 of it, in hex. It names
/// the key in errors and in the database; it cannot be turned back into the key.
fn seal_key_id(key: &[u8]) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(b"portcullis acme eab seal key id\0");
    ctx.update(key);
    ctx.finish().as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub(crate) fn unix(t: SystemTime) -> i64 {
    i64::try_from(secs(t)).unwrap_or(i64::MAX)
}

pub(crate) fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

pub(crate) fn from_unix(s: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::try_from(s).unwrap_or(0))
}
