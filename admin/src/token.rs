//! Bootstrap tokens: how a workload gets its first certificate.
//!
//! A token is 256 random bits, base64url, shown once at creation. Only its SHA-256 is stored;
//! a presented token is hashed and looked up by that hash (an equality lookup on a hash of a
//! 256-bit secret: timing reveals nothing usable about the secret). A token is scoped to one
//! tenant, may be bound to one SPIFFE ID, expires, and is consumed atomically by one
//! `UPDATE … RETURNING`: of two concurrent uses exactly one gets the grant. A use whose
//! issuance did not happen (refused, CA unavailable) gives the token back ([`TokenStore::release`]).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use portcullis_ca::TenantId;
use ring::rand::{SecureRandom, SystemRandom};
use rusqlite::{params, Connection, OptionalExtension};
use zeroize::Zeroizing;

use crate::error::AdminError;

/// File name of the token store in the CA state directory.
pub const TOKEN_DB: &str = "tokens.sqlite3";
/// Longest lifetime a bootstrap token may have.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// Length of an encoded token: 32 bytes in unpadded base64url.
const TOKEN_CHARS: usize = 43;

/// A bootstrap token's secret value (what the workload sends as `Authorization: Bearer …`).
/// Never logged: `Debug` shows only its id.
pub struct BootstrapToken(Zeroizing<String>);

impl BootstrapToken {
    /// 256 bits from the system's random generator.
    pub fn generate() -> Result<Self, AdminError> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        SystemRandom::new()
            .fill(bytes.as_mut())
            .map_err(|_| AdminError::Random)?;
        Ok(Self(Zeroizing::new(
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes.as_ref()),
        )))
    }

    /// The secret, to hand to the workload once.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Its hash, the only form stored.
    pub fn hash(&self) -> TokenHash {
        TokenHash::of(&self.0)
    }
}

impl fmt::Debug for BootstrapToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BootstrapToken({})", self.hash().id())
    }
}

/// SHA-256 of a token.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TokenHash([u8; 32]);

impl TokenHash {
    /// The hash of a presented token value.
    pub fn of(token: &str) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        Self(out)
    }

    /// The hash of the value of an `Authorization: Bearer` header, or None when it cannot be a
    /// token (wrong length or alphabet): such values are not even looked up.
    pub fn of_presented(token: &str) -> Option<Self> {
        let plausible = token.len() == TOKEN_CHARS
            && token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        plausible.then(|| Self::of(token))
    }

    /// The hash as stored.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The token's public id: the first 8 bytes of the hash, hex.
    pub fn id(&self) -> TokenId {
        TokenId(hex::encode(&self.0[..8]))
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenHash({})", self.id())
    }
}

/// A token's public id (safe to log and audit).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenId(String);

impl TokenId {
    /// An id as a store kept it.
    pub(crate) fn stored(id: String) -> Self {
        Self(id)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a token allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenGrant {
    pub id: TokenId,
    /// The only tenant whose profiles it may issue under.
    pub tenant: TenantId,
    /// When set, the only SPIFFE ID the certificate may carry.
    pub spiffe_id: Option<String>,
    pub expires_at: SystemTime,
    /// Who created it through the admin API (as its audit records name callers); `None` for
    /// tokens made by `portcullis admin token create` on the CA's host. A request it makes is
    /// theirs too: they may not approve it.
    pub created_by: Option<String>,
}

/// Where bootstrap tokens are kept (hashed).
pub trait TokenStore: Send + Sync + fmt::Debug {
    /// Stores a new token's hash and grant.
    fn insert(
        &self,
        hash: &TokenHash,
        grant: &TokenGrant,
        now: SystemTime,
    ) -> Result<(), AdminError>;
    /// Atomically marks the token used and returns its grant; None when unknown, already used
    /// or expired (the caller answers all three alike).
    fn consume(&self, hash: &TokenHash, now: SystemTime) -> Result<Option<TokenGrant>, AdminError>;
    /// Makes a consumed token usable again: the issuance it was consumed for did not happen.
    fn release(&self, hash: &TokenHash) -> Result<(), AdminError>;
    /// The tenant's tokens (never their secrets), newest first.
    fn list(&self, tenant: &TenantId, now: SystemTime) -> Result<Vec<TokenInfo>, AdminError>;
    /// Deletes the tenant's token `id`, used or not; false when it has no such token.
    fn revoke(&self, tenant: &TenantId, id: &str) -> Result<bool, AdminError>;
}

/// A stored token as listed: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TokenInfo {
    pub id: String,
    pub spiffe_id: Option<String>,
    #[serde(serialize_with = "crate::serde_time::rfc3339")]
    pub created_at: SystemTime,
    #[serde(serialize_with = "crate::serde_time::rfc3339")]
    pub expires_at: SystemTime,
    /// `unused`, `used` or `expired`.
    pub status: &'static str,
}

/// Creates a token for `tenant`, optionally bound to `spiffe_id`, valid for `ttl`, stores its
/// hash and returns the secret (to show once) with its grant.
pub fn create_token(
    store: &dyn TokenStore,
    tenant: TenantId,
    spiffe_id: Option<String>,
    ttl: Duration,
    created_by: Option<String>,
    now: SystemTime,
) -> Result<(BootstrapToken, TokenGrant), AdminError> {
    if ttl.is_zero() || ttl > MAX_TOKEN_TTL {
        return Err(AdminError::Invalid(format!(
            "token lifetime {}: must be positive and at most {}",
            humantime::format_duration(ttl),
            humantime::format_duration(MAX_TOKEN_TTL)
        )));
    }
    if let Some(id) = &spiffe_id {
        if !id.starts_with("spiffe://") || id.len() > 2048 {
            return Err(AdminError::Invalid(format!(
                "{:?} is not a SPIFFE ID",
                id.chars().take(80).collect::<String>()
            )));
        }
    }
    let token = BootstrapToken::generate()?;
    let hash = token.hash();
    let grant = TokenGrant {
        id: hash.id(),
        tenant,
        spiffe_id,
        // Whole seconds: what the store keeps.
        expires_at: UNIX_EPOCH + Duration::from_secs(u64::try_from(unix(now + ttl)).unwrap_or(0)),
        created_by,
    };
    store.insert(&hash, &grant, now)?;
    Ok((token, grant))
}

/// Tokens in a SQLite file (by default `STATE/tokens.sqlite3`, beside the CA's inventory).
#[derive(Debug)]
pub struct SqliteTokenStore {
    path: PathBuf,
    conn: Mutex<Connection>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS bootstrap_tokens (
    hash BLOB PRIMARY KEY NOT NULL,
    id TEXT NOT NULL,
    tenant TEXT NOT NULL,
    spiffe_id TEXT,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at INTEGER,
    created_by TEXT
);
";

/// Expired tokens are deleted this long after expiry.
pub(crate) const KEEP_EXPIRED: Duration = Duration::from_secs(7 * 24 * 3600);

impl SqliteTokenStore {
    /// Opens (creating if needed) the store at `path`.
    pub fn open(path: &Path) -> Result<Self, AdminError> {
        let err = |e: rusqlite::Error| AdminError::TokenStore {
            path: path.display().to_string(),
            detail: e.to_string(),
        };
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        // A store made before tokens named their creator gets the column (NULL: unknown).
        let has_creator = conn
            .prepare(
                "SELECT 1 FROM pragma_table_info('bootstrap_tokens') WHERE name = 'created_by'",
            )
            .and_then(|mut q| q.exists([]))
            .map_err(err)?;
        if !has_creator {
            conn.execute_batch("ALTER TABLE bootstrap_tokens ADD COLUMN created_by TEXT")
                .map_err(err)?;
        }
        Ok(Self {
            path: path.to_owned(),
            conn: Mutex::new(conn),
        })
    }

    /// Opens the store in a CA state directory; refused when `STATE/state-in-postgres` says
    /// the tokens are in PostgreSQL (a token written here would never be honoured).
    pub fn in_state_dir(dir: &Path) -> Result<Self, AdminError> {
        let marker = dir.join(portcullis_ca::STATE_IN_POSTGRES);
        if marker.exists() {
            return Err(AdminError::TokenStore {
                path: marker.display().to_string(),
                detail: "the bootstrap tokens are kept in PostgreSQL (store.postgres): create \
                         them through the admin API (POST /v1/tenants/TENANT/tokens)"
                    .to_owned(),
            });
        }
        Self::open(&dir.join(TOKEN_DB))
    }

    fn error(&self, e: impl fmt::Display) -> AdminError {
        AdminError::TokenStore {
            path: self.path.display().to_string(),
            detail: e.to_string(),
        }
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves no half-done state: every use is one statement.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl TokenStore for SqliteTokenStore {
    fn insert(
        &self,
        hash: &TokenHash,
        grant: &TokenGrant,
        now: SystemTime,
    ) -> Result<(), AdminError> {
        let conn = self.conn();
        conn.execute(
            "DELETE FROM bootstrap_tokens WHERE expires_at < ?1",
            params![unix(now).saturating_sub(secs(KEEP_EXPIRED))],
        )
        .map_err(|e| self.error(e))?;
        conn.execute(
            "INSERT INTO bootstrap_tokens (hash, id, tenant, spiffe_id, created_at, expires_at,
             created_by) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                &hash.0[..],
                grant.id.as_str(),
                grant.tenant.as_str(),
                grant.spiffe_id,
                unix(now),
                unix(grant.expires_at),
                grant.created_by,
            ],
        )
        .map_err(|e| self.error(e))?;
        Ok(())
    }

    fn consume(&self, hash: &TokenHash, now: SystemTime) -> Result<Option<TokenGrant>, AdminError> {
        let row = self
            .conn()
            .query_row(
                "UPDATE bootstrap_tokens SET used_at = ?2
                 WHERE hash = ?1 AND used_at IS NULL AND expires_at > ?2
                 RETURNING id, tenant, spiffe_id, expires_at, created_by",
                params![&hash.0[..], unix(now)],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Option<String>>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, Option<String>>(4)?,
                    ))
                },
            )
            .optional()
            .map_err(|e| self.error(e))?;
        let Some((id, tenant, spiffe_id, expires_at, created_by)) = row else {
            return Ok(None);
        };
        let tenant = tenant
            .parse()
            .map_err(|e| self.error(format!("token {id}: stored tenant: {e}")))?;
        Ok(Some(TokenGrant {
            id: TokenId(id),
            tenant,
            spiffe_id,
            expires_at: UNIX_EPOCH + Duration::from_secs(u64::try_from(expires_at).unwrap_or(0)),
            created_by,
        }))
    }

    fn release(&self, hash: &TokenHash) -> Result<(), AdminError> {
        self.conn()
            .execute(
                "UPDATE bootstrap_tokens SET used_at = NULL WHERE hash = ?1",
                params![&hash.0[..]],
            )
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    fn list(&self, tenant: &TenantId, now: SystemTime) -> Result<Vec<TokenInfo>, AdminError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT id, spiffe_id, created_at, expires_at, used_at FROM bootstrap_tokens
                 WHERE tenant = ?1 ORDER BY created_at DESC LIMIT 1000",
            )
            .map_err(|e| self.error(e))?;
        let time = |s: i64| UNIX_EPOCH + Duration::from_secs(u64::try_from(s).unwrap_or(0));
        let rows = stmt
            .query_map(params![tenant.as_str()], |r| {
                let expires_at: i64 = r.get(3)?;
                let used: Option<i64> = r.get(4)?;
                Ok(TokenInfo {
                    id: r.get(0)?,
                    spiffe_id: r.get(1)?,
                    created_at: time(r.get(2)?),
                    expires_at: time(expires_at),
                    status: match used {
                        Some(_) => "used",
                        None if expires_at <= unix(now) => "expired",
                        None => "unused",
                    },
                })
            })
            .map_err(|e| self.error(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.error(e))
    }

    fn revoke(&self, tenant: &TenantId, id: &str) -> Result<bool, AdminError> {
        let deleted = self
            .conn()
            .execute(
                "DELETE FROM bootstrap_tokens WHERE tenant = ?1 AND id = ?2",
                params![tenant.as_str(), id],
            )
            .map_err(|e| self.error(e))?;
        Ok(deleted > 0)
    }
}

pub(crate) fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

pub(crate) fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

#[cfg(test)]
pub(crate) mod tests {
    //! The token store's behaviour, written once: run here on SQLite and in `store`'s tests on
    //! PostgreSQL.
    use super::*;
    use std::sync::Arc;

    fn store() -> (tempfile::TempDir, SqliteTokenStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteTokenStore::in_state_dir(dir.path()).unwrap();
        (dir, s)
    }

    /// One use, expiry, release; the token itself is never what is stored.
    pub(crate) fn one_time_expiring(s: &dyn TokenStore) -> BootstrapToken {
        let now = SystemTime::now();
        let tenant: TenantId = "acme".parse().unwrap();
        let creator = Some("person:https://idp.example/alice".to_owned());
        let (token, grant) = create_token(
            s,
            tenant.clone(),
            None,
            Duration::from_secs(60),
            creator.clone(),
            now,
        )
        .unwrap();
        assert_eq!(grant.created_by, creator);
        assert_eq!(token.expose().len(), TOKEN_CHARS);
        assert!(!format!("{token:?}").contains(token.expose()));
        let hash = TokenHash::of_presented(token.expose()).unwrap();

        assert_eq!(s.consume(&hash, now).unwrap(), Some(grant.clone()));
        assert_eq!(s.consume(&hash, now).unwrap(), None, "used");
        s.release(&hash).unwrap();
        assert_eq!(s.consume(&hash, now).unwrap(), Some(grant));

        let (late, _) =
            create_token(s, tenant.clone(), None, Duration::from_secs(60), None, now).unwrap();
        assert_eq!(
            s.consume(&late.hash(), now + Duration::from_secs(61))
                .unwrap(),
            None,
            "expired"
        );
        assert_eq!(s.consume(&TokenHash::of("unknown"), now).unwrap(), None);
        let listed = s.list(&tenant, now).unwrap();
        assert_eq!(listed.len(), 2);
        assert!(s.revoke(&tenant, late.hash().id().as_str()).unwrap());
        assert!(!s
            .revoke(&"other".parse().unwrap(), hash.id().as_str())
            .unwrap());
        assert_eq!(s.list(&tenant, now).unwrap().len(), 1);
        token
    }

    /// Of 4 concurrent uses through two connections, exactly one gets the grant.
    pub(crate) fn concurrent_consumers_exactly_one_wins(a: &dyn TokenStore, b: &dyn TokenStore) {
        let now = SystemTime::now();
        for _ in 0..20 {
            let (token, _) = create_token(
                a,
                "acme".parse().unwrap(),
                None,
                Duration::from_secs(60),
                None,
                now,
            )
            .unwrap();
            let hash = token.hash();
            let wins: usize = std::thread::scope(|sc| {
                let handles: Vec<_> = [a, b, a, b]
                    .into_iter()
                    .map(|st| {
                        let hash = hash.clone();
                        sc.spawn(move || st.consume(&hash, now).unwrap().is_some())
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| usize::from(h.join().unwrap()))
                    .sum()
            });
            assert_eq!(wins, 1);
        }
    }

    /// Hostile SPIFFE IDs and ids are kept intact or refused with an error, never a panic.
    pub(crate) fn hostile_values_kept_intact_or_refused(s: &dyn TokenStore) {
        let now = SystemTime::now();
        let tenant: TenantId = "acme".parse().unwrap();
        for (i, spiffe_id) in [
            "spiffe://acme/'; DROP TABLE bootstrap_tokens; --".to_owned(),
            "spiffe://acme/\"q\"\\%_*".to_owned(),
            "spiffe://acme/nul\0byte".to_owned(),
            format!("spiffe://acme/{}", "x".repeat(2030)),
        ]
        .into_iter()
        .enumerate()
        {
            let hash = TokenHash::of(&format!("hostile-{i}"));
            let grant = TokenGrant {
                id: hash.id(),
                tenant: tenant.clone(),
                spiffe_id: Some(spiffe_id.clone()),
                expires_at: UNIX_EPOCH
                    + Duration::from_secs(u64::try_from(unix(now)).unwrap() + 60),
                created_by: Some(spiffe_id.clone()),
            };
            match s.insert(&hash, &grant, now) {
                Ok(()) => assert_eq!(s.consume(&hash, now).unwrap(), Some(grant), "value {i}"),
                Err(e) => assert!(spiffe_id.contains('\0'), "value {i} refused: {e}"),
            }
        }
        for id in ["'", "%", "*", "\0", &"f".repeat(10_000)] {
            assert!(!s.revoke(&tenant, id).unwrap(), "{id:?}");
        }
        assert!(s.list(&tenant, now).is_ok());
    }

    #[test]
    fn one_time_expiring_hashed() {
        let (dir, s) = store();
        let token = one_time_expiring(&s);
        // The file holds the hash, not the token.
        let bytes = std::fs::read(dir.path().join(TOKEN_DB)).unwrap();
        assert!(!bytes
            .windows(TOKEN_CHARS)
            .any(|w| w == token.expose().as_bytes()));
        assert!(TokenHash::of_presented("short").is_none());
        assert!(TokenHash::of_presented(&"a".repeat(42).to_owned().replace('a', "+")).is_none());
    }

    #[test]
    fn refuses_bad_ttl_and_spiffe_id() {
        let (_dir, s) = store();
        let t: TenantId = "acme".parse().unwrap();
        let now = SystemTime::now();
        assert!(create_token(&s, t.clone(), None, Duration::ZERO, None, now).is_err());
        assert!(create_token(&s, t.clone(), None, MAX_TOKEN_TTL * 2, None, now).is_err());
        assert!(create_token(
            &s,
            t,
            Some("https://x".into()),
            Duration::from_secs(1),
            None,
            now
        )
        .is_err());
    }

    #[test]
    fn concurrent_consumers_exactly_one_wins_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let a = Arc::new(SqliteTokenStore::in_state_dir(dir.path()).unwrap());
        // A second connection, as a second process would have.
        let b = Arc::new(SqliteTokenStore::in_state_dir(dir.path()).unwrap());
        concurrent_consumers_exactly_one_wins(a.as_ref(), b.as_ref());
    }

    #[test]
    fn hostile_values_on_sqlite() {
        hostile_values_kept_intact_or_refused(&store().1);
    }
}
