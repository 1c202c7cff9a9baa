//! First issuances waiting for approval (profiles with `approval: { required: true }`): the
//! request as the CA checked it, who asked, a one-time pickup secret (only its SHA-256 is
//! kept), and what became of it. The [`PendingStore`] trait, and its SQLite implementation in
//! the CA state directory (`STATE/pending.sqlite3`); with `store.postgres` the requests are in
//! the shared database instead (`store/pending.rs`), so any admin server shows and decides
//! them.
//!
//! A decision is taken by one `UPDATE … WHERE state = 'pending' AND expires_at > now`: of two
//! concurrent approvals (on one node or on several sharing a database) exactly one claims the
//! request. The claimed request is then signed by the CA and its answer kept for the requester
//! to pick up; a pickup only reads it (the approved answer is written once and never changes).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use base64::Engine;
use portcullis_ca::{Requester, RequesterKind, TenantId};
use ring::rand::{SecureRandom, SystemRandom};
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use zeroize::Zeroizing;

use crate::error::AdminError;
use crate::token::unix;

/// File name of the pending-issuance store in the CA state directory.
pub const PENDING_DB: &str = "pending.sqlite3";
/// Decided and expired requests are deleted this long after they expire.
pub(crate) const KEEP_DONE: Duration = Duration::from_secs(7 * 24 * 3600);

/// The secret a requester polls with (`Authorization: Bearer …`): 256 random bits, shown once.
pub(crate) struct PickupSecret(Zeroizing<String>);

impl PickupSecret {
    pub(crate) fn generate() -> Result<Self, AdminError> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        SystemRandom::new()
            .fill(bytes.as_mut())
            .map_err(|_| AdminError::Random)?;
        Ok(Self(Zeroizing::new(
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes.as_ref()),
        )))
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PickupSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PickupSecret(..)")
    }
}

/// The SHA-256 of a presented pickup secret: the only form stored and compared.
pub(crate) fn secret_hash(secret: &str) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// A pending request's public id: 96 random bits, hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub(crate) struct PendingId(String);

impl PendingId {
    pub(crate) fn generate() -> Result<Self, AdminError> {
        let mut bytes = [0u8; 12];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| AdminError::Random)?;
        Ok(Self(hex::encode(bytes)))
    }

    /// An id from a path: never longer than ours, so a long one is not even looked up.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        (text.len() == 24 && text.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| Self(text.to_ascii_lowercase()))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PendingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A first issuance the CA has checked, to keep until someone decides on it.
#[derive(Debug, Clone)]
pub(crate) struct NewPending {
    pub(crate) tenant: TenantId,
    pub(crate) profile: String,
    pub(crate) csr: Vec<u8>,
    pub(crate) lifetime: Option<Duration>,
    pub(crate) requester: Requester,
    /// The caller as the audit log names it (`token:…`, a SPIFFE ID, a person).
    pub(crate) requested_by: String,
    /// Who created the bootstrap token the request came with (as the audit log names them):
    /// the request is theirs too.
    pub(crate) token_created_by: Option<String>,
    /// What the CSR asks for, to show approvers.
    pub(crate) spiffe_id: Option<String>,
    pub(crate) dns_names: Vec<String>,
}

/// How long an approval may take between its claim and the answer recorded for pickup. A
/// claim older than this was abandoned (its server stopped, or the store failed after the CA
/// signed): the request can be claimed, or rejected, again. The certificate signed by an
/// abandoned claim, if any, is never handed out; its serial is in the error log.
pub(crate) const CLAIM_TIMEOUT: Duration = Duration::from_secs(60);

/// The newest claim time (Unix seconds) at `now` that is abandoned.
pub(crate) fn abandoned_before(now: SystemTime) -> i64 {
    unix(
        now.checked_sub(CLAIM_TIMEOUT)
            .unwrap_or(SystemTime::UNIX_EPOCH),
    )
}

/// Where a request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum PendingState {
    /// Waiting for a decision.
    Pending,
    /// Claimed by an approver, being signed.
    Approving,
    Approved,
    Rejected,
    /// Not decided in time.
    Expired,
}

impl PendingState {
    /// The state as stored, a pending one past `expires_at` shown expired, and an approval
    /// claimed at `claimed_at` and abandoned (older than [`CLAIM_TIMEOUT`]) shown pending again.
    pub(crate) fn stored(
        text: &str,
        expires_at: SystemTime,
        claimed_at: SystemTime,
        now: SystemTime,
    ) -> Self {
        match text {
            "approving" if claimed_at + CLAIM_TIMEOUT > now => Self::Approving,
            "approved" => Self::Approved,
            "rejected" => Self::Rejected,
            _ if expires_at <= now => Self::Expired,
            _ => Self::Pending,
        }
    }
}

/// A request as stored (never its CSR's bytes or its secret in listings).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PendingRecord {
    pub(crate) id: PendingId,
    pub(crate) tenant: String,
    pub(crate) profile: String,
    pub(crate) state: PendingState,
    pub(crate) requested_by: String,
    pub(crate) spiffe_id: Option<String>,
    pub(crate) dns_names: Vec<String>,
    #[serde(serialize_with = "crate::serde_time::rfc3339")]
    pub(crate) created_at: SystemTime,
    #[serde(serialize_with = "crate::serde_time::rfc3339")]
    pub(crate) expires_at: SystemTime,
    pub(crate) decided_by: Option<String>,
    pub(crate) reason: Option<String>,
    /// The issued certificate's serial, once approved.
    pub(crate) serial: Option<String>,
    #[serde(skip)]
    pub(crate) response: Option<String>,
    #[serde(skip)]
    pub(crate) token_created_by: Option<String>,
}

/// A claimed request: what the CA is asked to sign.
#[derive(Debug, Clone)]
pub(crate) struct Claimed {
    pub(crate) tenant: TenantId,
    pub(crate) profile: String,
    pub(crate) csr: Vec<u8>,
    pub(crate) lifetime: Option<Duration>,
    pub(crate) requester: Requester,
}

/// Why a request could not be claimed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NotClaimed {
    /// No such request in that tenant.
    Unknown,
    /// It expired before a decision.
    Expired,
    /// Someone decided first.
    Decided,
}

/// A decision asked of a request: the tenant's request `id`, by `by`, at `now`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Decision<'a> {
    pub(crate) tenant: &'a TenantId,
    pub(crate) id: &'a PendingId,
    pub(crate) by: &'a str,
    pub(crate) now: SystemTime,
}

/// A claimed request's columns as the claiming `UPDATE … RETURNING` gives them: tenant,
/// profile, CSR, lifetime in seconds, requester kind and id.
pub(crate) type ClaimRow = (String, String, Vec<u8>, Option<i64>, String, String);

/// Pending first issuances, wherever they are kept: every admin server sharing a store sees
/// the same requests, and a request is decided once whichever server is asked.
pub(crate) trait PendingStore: Send + Sync + fmt::Debug {
    /// Keeps a checked request, with only the SHA-256 of its pickup secret, until
    /// `expires_at`; deletes the requests expired for longer than [`KEEP_DONE`].
    fn keep(
        &self,
        id: &PendingId,
        secret_hash: &[u8; 32],
        req: &NewPending,
        now: SystemTime,
        expires_at: SystemTime,
    ) -> Result<(), AdminError>;

    /// The request `id` if its pickup secret hashes to `secret_hash`.
    fn by_secret(
        &self,
        id: &PendingId,
        secret_hash: &[u8; 32],
        now: SystemTime,
    ) -> Result<Option<PendingRecord>, AdminError>;

    /// The tenant's requests, newest first (at most 500).
    fn list(&self, tenant: &TenantId, now: SystemTime) -> Result<Vec<PendingRecord>, AdminError>;

    /// The tenant's request `id`, whatever its state.
    fn get(
        &self,
        tenant: &TenantId,
        id: &PendingId,
        now: SystemTime,
    ) -> Result<Option<PendingRecord>, AdminError>;

    /// One statement: the request, if pending (or its claim abandoned) and unexpired, becomes
    /// `approving` by the decider; its columns, or None when it was not (any more).
    fn try_claim(&self, d: Decision<'_>) -> Result<Option<ClaimRow>, AdminError>;

    /// The request claimed by `d`, signed: its answer kept for pickup. False when the claim is
    /// no longer `d`'s (abandoned, and taken over by another decision).
    fn approved(&self, d: Decision<'_>, serial: &str, response: &str) -> Result<bool, AdminError>;

    /// The request claimed by `d`, not signed now (the key backend unavailable): pending
    /// again, for another try.
    fn release(&self, d: Decision<'_>) -> Result<(), AdminError>;

    /// One statement: the request becomes `rejected` by the decider if it is in state `from`
    /// (`pending` and unexpired, its claim abandoned counting as pending; or `approving`);
    /// whether it did.
    fn try_reject(&self, d: Decision<'_>, reason: &str, from: &str) -> Result<bool, AdminError>;

    /// Keeps a checked request until `now + wait`; returns its id and the pickup secret.
    fn insert(
        &self,
        req: &NewPending,
        wait: Duration,
        now: SystemTime,
    ) -> Result<(PendingId, PickupSecret, SystemTime), AdminError> {
        let id = PendingId::generate()?;
        let secret = PickupSecret::generate()?;
        let expires_at = now + wait;
        self.keep(&id, &secret_hash(secret.expose()), req, now, expires_at)?;
        Ok((id, secret, expires_at))
    }

    /// The request `id` if `secret` is its pickup secret (else None, whichever was wrong).
    fn for_pickup(
        &self,
        id: &PendingId,
        secret: &str,
        now: SystemTime,
    ) -> Result<Option<PendingRecord>, AdminError> {
        self.by_secret(id, &secret_hash(secret), now)
    }

    /// Why `id` could not be claimed, or who it is the request of when it still could be (for
    /// the self-approval check before a claim): its caller, and the creator of the token it
    /// came with.
    fn requested_by(
        &self,
        tenant: &TenantId,
        id: &PendingId,
        now: SystemTime,
    ) -> Result<Result<Vec<String>, NotClaimed>, AdminError> {
        Ok(match self.get(tenant, id, now)? {
            None => Err(NotClaimed::Unknown),
            Some(r) => match r.state {
                PendingState::Pending => Ok([Some(r.requested_by), r.token_created_by]
                    .into_iter()
                    .flatten()
                    .collect()),
                PendingState::Expired => Err(NotClaimed::Expired),
                _ => Err(NotClaimed::Decided),
            },
        })
    }

    /// Why a decision's statement changed nothing.
    fn not_claimed(
        &self,
        tenant: &TenantId,
        id: &PendingId,
        now: SystemTime,
    ) -> Result<NotClaimed, AdminError> {
        Ok(match self.requested_by(tenant, id, now)? {
            // Decided by someone else between the two statements.
            Ok(_) => NotClaimed::Decided,
            Err(why) => why,
        })
    }

    /// Claims a pending, unexpired request of `tenant` for approval by `by`: one caller wins.
    fn claim(
        &self,
        tenant: &TenantId,
        id: &PendingId,
        by: &str,
        now: SystemTime,
    ) -> Result<Result<Claimed, NotClaimed>, AdminError> {
        match self.try_claim(Decision {
            tenant,
            id,
            by,
            now,
        })? {
            Some(row) => claimed(row).map(Ok),
            None => self.not_claimed(tenant, id, now).map(Err),
        }
    }

    /// Rejects a pending, unexpired request of `tenant` (or a claimed one the CA refused).
    fn reject(
        &self,
        tenant: &TenantId,
        id: &PendingId,
        by: &str,
        reason: &str,
        now: SystemTime,
        claimed: bool,
    ) -> Result<Result<(), NotClaimed>, AdminError> {
        let from = if claimed { "approving" } else { "pending" };
        let d = Decision {
            tenant,
            id,
            by,
            now,
        };
        if self.try_reject(d, reason, from)? {
            return Ok(Ok(()));
        }
        self.not_claimed(tenant, id, now).map(Err)
    }
}

/// The columns every read of a request selects, in the order [`read_record`] takes them.
pub(crate) const COLUMNS: &str = "id, tenant, profile, state, requested_by, spiffe_id, \
                                  dns_names, created_at, expires_at, decided_by, reason, \
                                  serial, response, token_created_by, \
                                  COALESCE(decided_at, 0)";

pub(crate) fn from_unix(s: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(s).unwrap_or(0))
}

/// A request from a row of [`COLUMNS`], read by `text` (a text column, NULL as None) and
/// `int` (an integer column).
pub(crate) fn read_record<E>(
    text: impl Fn(usize) -> Result<Option<String>, E>,
    int: impl Fn(usize) -> Result<i64, E>,
    now: SystemTime,
) -> Result<PendingRecord, E> {
    let expires_at = from_unix(int(8)?);
    let required = |i| text(i).map(Option::unwrap_or_default);
    Ok(PendingRecord {
        id: PendingId(required(0)?),
        tenant: required(1)?,
        profile: required(2)?,
        state: PendingState::stored(&required(3)?, expires_at, from_unix(int(14)?), now),
        requested_by: required(4)?,
        spiffe_id: text(5)?,
        dns_names: serde_json::from_str(&required(6)?).unwrap_or_default(),
        created_at: from_unix(int(7)?),
        expires_at,
        decided_by: text(9)?,
        reason: text(10)?,
        serial: text(11)?,
        response: text(12)?,
        token_created_by: text(13)?,
    })
}

fn requester_kind(text: &str) -> RequesterKind {
    match text {
        "client-cert" => RequesterKind::ClientCert,
        "operator" => RequesterKind::Operator,
        _ => RequesterKind::BootstrapToken,
    }
}

/// What the CA is asked to sign, from a claim's row.
fn claimed(row: ClaimRow) -> Result<Claimed, AdminError> {
    let (tenant, profile, csr, lifetime, kind, requester_id) = row;
    let tenant = tenant
        .parse::<TenantId>()
        .map_err(|e| AdminError::Store(format!("pending request of tenant {tenant:?}: {e}")))?;
    Ok(Claimed {
        tenant,
        profile,
        csr,
        lifetime: lifetime.map(|s| Duration::from_secs(u64::try_from(s).unwrap_or(0))),
        requester: Requester {
            kind: requester_kind(&kind),
            id: requester_id,
        },
    })
}

/// Pending first issuances in a SQLite file.
#[derive(Debug)]
pub(crate) struct SqlitePendingStore {
    path: PathBuf,
    conn: Mutex<Connection>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS pending_issuances (
    id TEXT PRIMARY KEY NOT NULL,
    tenant TEXT NOT NULL,
    profile TEXT NOT NULL,
    csr BLOB NOT NULL,
    lifetime_secs INTEGER,
    requester_kind TEXT NOT NULL,
    requester_id TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    token_created_by TEXT,
    spiffe_id TEXT,
    dns_names TEXT NOT NULL,
    secret_hash BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    state TEXT NOT NULL,
    decided_by TEXT,
    decided_at INTEGER,
    reason TEXT,
    serial TEXT,
    response TEXT
);
CREATE INDEX IF NOT EXISTS pending_by_tenant ON pending_issuances (tenant, created_at);
";

fn sqlite_record(row: &rusqlite::Row<'_>, now: SystemTime) -> rusqlite::Result<PendingRecord> {
    read_record(|i| row.get(i), |i| row.get(i), now)
}

impl SqlitePendingStore {
    /// Opens (creating if needed) the store in a CA state directory.
    pub(crate) fn in_state_dir(dir: &Path) -> Result<Self, AdminError> {
        let path = dir.join(PENDING_DB);
        let err = |e: rusqlite::Error| AdminError::Store(format!("{}: {e}", path.display()));
        let conn = Connection::open(&path).map_err(err)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        Ok(Self {
            path,
            conn: Mutex::new(conn),
        })
    }

    fn error(&self, e: impl fmt::Display) -> AdminError {
        AdminError::Store(format!("{}: {e}", self.path.display()))
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // Every use is one statement: a panic while holding the lock leaves no half-done state.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl PendingStore for SqlitePendingStore {
    fn keep(
        &self,
        id: &PendingId,
        secret_hash: &[u8; 32],
        req: &NewPending,
        now: SystemTime,
        expires_at: SystemTime,
    ) -> Result<(), AdminError> {
        let dns = serde_json::to_string(&req.dns_names).map_err(|e| self.error(e))?;
        let conn = self.conn();
        conn.execute(
            "DELETE FROM pending_issuances WHERE expires_at < ?1",
            params![unix(now) - crate::token::secs(KEEP_DONE)],
        )
        .map_err(|e| self.error(e))?;
        conn.execute(
            "INSERT INTO pending_issuances (id, tenant, profile, csr, lifetime_secs, \
             requester_kind, requester_id, requested_by, spiffe_id, dns_names, secret_hash, \
             created_at, expires_at, token_created_by, state) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, 'pending')",
            params![
                id.as_str(),
                req.tenant.as_str(),
                req.profile,
                req.csr,
                req.lifetime.map(crate::token::secs),
                req.requester.kind.to_string(),
                req.requester.id,
                req.requested_by,
                req.spiffe_id,
                dns,
                &secret_hash[..],
                unix(now),
                unix(expires_at),
                req.token_created_by,
            ],
        )
        .map_err(|e| self.error(e))?;
        Ok(())
    }

    fn by_secret(
        &self,
        id: &PendingId,
        secret_hash: &[u8; 32],
        now: SystemTime,
    ) -> Result<Option<PendingRecord>, AdminError> {
        self.conn()
            .query_row(
                &format!(
                    "SELECT {COLUMNS} FROM pending_issuances WHERE id = ?1 AND secret_hash = ?2"
                ),
                params![id.as_str(), &secret_hash[..]],
                |row| sqlite_record(row, now),
            )
            .optional()
            .map_err(|e| self.error(e))
    }

    fn list(&self, tenant: &TenantId, now: SystemTime) -> Result<Vec<PendingRecord>, AdminError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {COLUMNS} FROM pending_issuances WHERE tenant = ?1 \
                 ORDER BY created_at DESC, id LIMIT 500"
            ))
            .map_err(|e| self.error(e))?;
        let rows = stmt
            .query_map(params![tenant.as_str()], |row| sqlite_record(row, now))
            .map_err(|e| self.error(e))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.error(e))
    }

    fn get(
        &self,
        tenant: &TenantId,
        id: &PendingId,
        now: SystemTime,
    ) -> Result<Option<PendingRecord>, AdminError> {
        self.conn()
            .query_row(
                &format!("SELECT {COLUMNS} FROM pending_issuances WHERE id = ?1 AND tenant = ?2"),
                params![id.as_str(), tenant.as_str()],
                |row| sqlite_record(row, now),
            )
            .optional()
            .map_err(|e| self.error(e))
    }

    fn try_claim(&self, d: Decision<'_>) -> Result<Option<ClaimRow>, AdminError> {
        self.conn()
            .query_row(
                "UPDATE pending_issuances SET state = 'approving', decided_by = ?3, \
                 decided_at = ?4 \
                 WHERE id = ?1 AND tenant = ?2 AND expires_at > ?4 \
                 AND (state = 'pending' OR (state = 'approving' AND decided_at <= ?5)) \
                 RETURNING tenant, profile, csr, lifetime_secs, requester_kind, requester_id",
                params![
                    d.id.as_str(),
                    d.tenant.as_str(),
                    d.by,
                    unix(d.now),
                    abandoned_before(d.now)
                ],
                |row| {
                    Ok((
                        row.get(0)?,
                        row.get(1)?,
                        row.get(2)?,
                        row.get(3)?,
                        row.get(4)?,
                        row.get(5)?,
                    ))
                },
            )
            .optional()
            .map_err(|e| self.error(e))
    }

    fn approved(&self, d: Decision<'_>, serial: &str, response: &str) -> Result<bool, AdminError> {
        let changed = self
            .conn()
            .execute(
                "UPDATE pending_issuances SET state = 'approved', serial = ?4, response = ?5, \
                 csr = x'' \
                 WHERE id = ?1 AND state = 'approving' AND decided_by = ?2 AND decided_at = ?3",
                params![d.id.as_str(), d.by, unix(d.now), serial, response],
            )
            .map_err(|e| self.error(e))?;
        Ok(changed == 1)
    }

    fn release(&self, d: Decision<'_>) -> Result<(), AdminError> {
        self.conn()
            .execute(
                "UPDATE pending_issuances SET state = 'pending', decided_by = NULL, \
                 decided_at = NULL \
                 WHERE id = ?1 AND state = 'approving' AND decided_by = ?2 AND decided_at = ?3",
                params![d.id.as_str(), d.by, unix(d.now)],
            )
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    fn try_reject(&self, d: Decision<'_>, reason: &str, from: &str) -> Result<bool, AdminError> {
        let changed = self
            .conn()
            .execute(
                "UPDATE pending_issuances SET state = 'rejected', decided_by = ?3, \
                 decided_at = ?4, reason = ?5, csr = x'' \
                 WHERE id = ?1 AND tenant = ?2 AND CASE WHEN ?6 = 'approving' \
                 THEN state = 'approving' \
                 ELSE expires_at > ?4 \
                 AND (state = 'pending' OR (state = 'approving' AND decided_at <= ?7)) END",
                params![
                    d.id.as_str(),
                    d.tenant.as_str(),
                    d.by,
                    unix(d.now),
                    reason,
                    from,
                    abandoned_before(d.now)
                ],
            )
            .map_err(|e| self.error(e))?;
        Ok(changed == 1)
    }
}

/// The tests every [`PendingStore`] passes (the PostgreSQL one in `store/tests.rs`).
#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn request() -> NewPending {
        NewPending {
            tenant: "acme".parse().unwrap(),
            profile: "acme".to_owned(),
            csr: b"csr".to_vec(),
            lifetime: Some(Duration::from_secs(600)),
            requester: Requester {
                kind: RequesterKind::BootstrapToken,
                id: "t1".to_owned(),
            },
            requested_by: "token:t1".to_owned(),
            token_created_by: Some("person:alice".to_owned()),
            spiffe_id: Some("spiffe://acme.example/ns/a".to_owned()),
            dns_names: vec!["a.acme.internal".to_owned()],
        }
    }

    fn acme() -> TenantId {
        "acme".parse().unwrap()
    }

    pub(crate) fn a_request_is_claimed_once_and_picked_up_with_its_secret_only(
        s: &dyn PendingStore,
    ) {
        let now = SystemTime::now();
        let (id, secret, expires_at) = s.insert(&request(), Duration::from_secs(60), now).unwrap();
        assert_eq!(expires_at, now + Duration::from_secs(60));
        assert!(s.for_pickup(&id, "wrong", now).unwrap().is_none());
        let r = s.for_pickup(&id, secret.expose(), now).unwrap().unwrap();
        assert_eq!(r.state, PendingState::Pending);
        assert_eq!(
            (r.requested_by.as_str(), r.token_created_by.as_deref()),
            ("token:t1", Some("person:alice"))
        );
        assert_eq!(r.dns_names, ["a.acme.internal"]);
        assert_eq!(
            s.requested_by(&acme(), &id, now).unwrap().unwrap(),
            ["token:t1", "person:alice"]
        );
        let other: TenantId = "globex".parse().unwrap();
        assert_eq!(
            s.claim(&other, &id, "bob", now).unwrap().unwrap_err(),
            NotClaimed::Unknown
        );
        assert!(s.list(&other, now).unwrap().is_empty());
        let c = s.claim(&acme(), &id, "bob", now).unwrap().unwrap();
        assert_eq!(c.csr, b"csr");
        assert_eq!(c.tenant, acme());
        assert_eq!(c.lifetime, Some(Duration::from_secs(600)));
        assert_eq!(c.requester.kind, RequesterKind::BootstrapToken);
        assert_eq!(
            s.claim(&acme(), &id, "carol", now).unwrap().unwrap_err(),
            NotClaimed::Decided
        );
        assert_eq!(
            s.reject(&acme(), &id, "carol", "no", now, false)
                .unwrap()
                .unwrap_err(),
            NotClaimed::Decided
        );
        // Not signed now: pending again, and claimable again.
        let bob = decision(&id, "bob", now);
        s.release(bob).unwrap();
        assert_eq!(
            s.get(&acme(), &id, now).unwrap().unwrap().state,
            PendingState::Pending
        );
        s.claim(&acme(), &id, "bob", now).unwrap().unwrap();
        assert!(s.approved(bob, "ab", "{}").unwrap());
        // Approved once: a late release or approval changes nothing.
        s.release(bob).unwrap();
        assert!(!s.approved(bob, "cd", "{\"other\":1}").unwrap());
        let r = s.for_pickup(&id, secret.expose(), now).unwrap().unwrap();
        assert_eq!(
            (r.state, r.response.as_deref(), r.serial.as_deref()),
            (PendingState::Approved, Some("{}"), Some("ab"))
        );
        assert_eq!(r.decided_by.as_deref(), Some("bob"));
        // Picked up as often as asked: the answer does not change.
        let again = s.for_pickup(&id, secret.expose(), now).unwrap().unwrap();
        assert_eq!(again.response.as_deref(), Some("{}"));
        let listed = s.list(&acme(), now).unwrap();
        assert!(listed
            .iter()
            .any(|r| r.id == id && r.state == PendingState::Approved));
    }

    fn decision<'a>(id: &'a PendingId, by: &'a str, now: SystemTime) -> Decision<'a> {
        static ACME: std::sync::LazyLock<TenantId> = std::sync::LazyLock::new(acme);
        Decision {
            tenant: &ACME,
            id,
            by,
            now,
        }
    }

    /// A claim whose answer was never recorded (the server stopped, or the store failed after
    /// signing) holds the request for [`CLAIM_TIMEOUT`] only: then it shows pending and another
    /// approver can claim or reject it, and the abandoned claim can no longer record an answer.
    pub(crate) fn an_abandoned_claim_is_taken_over_after_the_claim_timeout(s: &dyn PendingStore) {
        let now = SystemTime::now();
        let (id, secret, _) = s.insert(&request(), Duration::from_secs(600), now).unwrap();
        s.claim(&acme(), &id, "bob", now).unwrap().unwrap();
        let within = now + CLAIM_TIMEOUT - Duration::from_secs(1);
        assert_eq!(
            s.get(&acme(), &id, within).unwrap().unwrap().state,
            PendingState::Approving
        );
        assert_eq!(
            s.claim(&acme(), &id, "carol", within).unwrap().unwrap_err(),
            NotClaimed::Decided
        );
        let after = now + CLAIM_TIMEOUT + Duration::from_secs(1);
        assert_eq!(
            s.get(&acme(), &id, after).unwrap().unwrap().state,
            PendingState::Pending
        );
        assert_eq!(
            s.requested_by(&acme(), &id, after).unwrap().unwrap(),
            ["token:t1", "person:alice"]
        );
        s.claim(&acme(), &id, "carol", after).unwrap().unwrap();
        // Bob's late answer is refused, and so is his late release: Carol's claim stands.
        assert!(!s.approved(decision(&id, "bob", now), "b0b", "{}").unwrap());
        s.release(decision(&id, "bob", now)).unwrap();
        assert!(s
            .approved(decision(&id, "carol", after), "ca", "{\"carol\":1}")
            .unwrap());
        let r = s.for_pickup(&id, secret.expose(), after).unwrap().unwrap();
        assert_eq!(
            (r.state, r.serial.as_deref(), r.decided_by.as_deref()),
            (PendingState::Approved, Some("ca"), Some("carol"))
        );

        // An abandoned claim may be rejected too, but not once the request expired.
        let (id, _, _) = s.insert(&request(), Duration::from_secs(600), now).unwrap();
        s.claim(&acme(), &id, "bob", now).unwrap().unwrap();
        assert_eq!(
            s.reject(&acme(), &id, "carol", "no", within, false)
                .unwrap()
                .unwrap_err(),
            NotClaimed::Decided
        );
        s.reject(&acme(), &id, "carol", "no", after, false)
            .unwrap()
            .unwrap();
        let (id, _, _) = s.insert(&request(), CLAIM_TIMEOUT, now).unwrap();
        s.claim(&acme(), &id, "bob", now).unwrap().unwrap();
        assert_eq!(
            s.claim(&acme(), &id, "carol", after).unwrap().unwrap_err(),
            NotClaimed::Expired
        );
    }

    pub(crate) fn an_expired_request_is_neither_claimed_nor_rejected(s: &dyn PendingStore) {
        let now = SystemTime::now();
        let (id, _, _) = s.insert(&request(), Duration::from_secs(5), now).unwrap();
        let later = now + Duration::from_secs(6);
        assert_eq!(
            s.claim(&acme(), &id, "bob", later).unwrap().unwrap_err(),
            NotClaimed::Expired
        );
        assert_eq!(
            s.reject(&acme(), &id, "bob", "no", later, false)
                .unwrap()
                .unwrap_err(),
            NotClaimed::Expired
        );
        let listed = s.list(&acme(), later).unwrap();
        assert_eq!(
            listed.iter().find(|r| r.id == id).unwrap().state,
            PendingState::Expired
        );
        // A rejection before expiry stands, with its reason.
        let (id, secret, _) = s.insert(&request(), Duration::from_secs(5), now).unwrap();
        s.reject(&acme(), &id, "bob", "not ours", now, false)
            .unwrap()
            .unwrap();
        let r = s.for_pickup(&id, secret.expose(), later).unwrap().unwrap();
        assert_eq!(
            (r.state, r.reason.as_deref()),
            (PendingState::Rejected, Some("not ours"))
        );
    }

    /// `a` and `b` are two handles on one store (two nodes): of concurrent approvals and
    /// rejections of a request through both, exactly one decides it, and both then show it
    /// decided by the winner.
    pub(crate) fn concurrent_decisions_through_two_handles_exactly_one_wins(
        a: &dyn PendingStore,
        b: &dyn PendingStore,
    ) {
        for round in 0..5 {
            let now = SystemTime::now();
            let (id, secret, _) = a.insert(&request(), Duration::from_secs(60), now).unwrap();
            let outcomes: Vec<(String, bool)> = std::thread::scope(|scope| {
                let handles: Vec<_> = (0..8)
                    .map(|i| {
                        let (store, id) = (if i % 2 == 0 { a } else { b }, &id);
                        scope.spawn(move || {
                            let by = format!("approver-{i}");
                            let won = if (i + round) % 3 == 0 {
                                store
                                    .reject(&acme(), id, &by, "no", now, false)
                                    .unwrap()
                                    .is_ok()
                            } else {
                                store.claim(&acme(), id, &by, now).unwrap().is_ok()
                            };
                            (by, won)
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let winners: Vec<_> = outcomes.iter().filter(|(_, won)| *won).collect();
            assert_eq!(winners.len(), 1, "round {round}: {outcomes:?}");
            for store in [a, b] {
                let r = store
                    .for_pickup(&id, secret.expose(), now)
                    .unwrap()
                    .unwrap();
                assert_ne!(r.state, PendingState::Pending);
                assert_eq!(r.decided_by.as_deref(), Some(winners[0].0.as_str()));
            }
        }
        // Approved through one, picked up through the other.
        let now = SystemTime::now();
        let (id, secret, _) = a.insert(&request(), Duration::from_secs(60), now).unwrap();
        a.claim(&acme(), &id, "bob", now).unwrap().unwrap();
        assert!(a
            .approved(decision(&id, "bob", now), "ab", "{\"serial\":\"ab\"}")
            .unwrap());
        let r = b.for_pickup(&id, secret.expose(), now).unwrap().unwrap();
        assert_eq!(
            (r.state, r.response.as_deref()),
            (PendingState::Approved, Some("{\"serial\":\"ab\"}"))
        );
    }

    #[test]
    fn sqlite_passes_the_pending_store_tests() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqlitePendingStore::in_state_dir(dir.path()).unwrap();
        a_request_is_claimed_once_and_picked_up_with_its_secret_only(&s);
        an_expired_request_is_neither_claimed_nor_rejected(&s);
        an_abandoned_claim_is_taken_over_after_the_claim_timeout(&s);
        // Two connections to one file, as two processes would have.
        let other = SqlitePendingStore::in_state_dir(dir.path()).unwrap();
        concurrent_decisions_through_two_handles_exactly_one_wins(&s, &other);
    }
}
