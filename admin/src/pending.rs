//! First issuances waiting for approval (profiles with `approval: { required: true }`): the
//! request as the CA checked it, who asked, a one-time pickup secret (only its SHA-256 is
//! kept), and what became of it. A SQLite file in the CA state directory
//! (`STATE/pending.sqlite3`); not yet in PostgreSQL (a profile requiring approval is refused
//! with `store.postgres`).
//!
//! A decision is taken by one `UPDATE … WHERE state = 'pending' AND expires_at > now`: of two
//! concurrent approvals exactly one claims the request. The claimed request is then signed by
//! the CA and its answer kept for the requester to pick up.

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
const KEEP_DONE: Duration = Duration::from_secs(7 * 24 * 3600);

/// The secret a requester polls with (`Authorization: Bearer …`): 256 random bits, shown once.
pub(crate) struct PickupSecret(Zeroizing<String>);

impl PickupSecret {
    fn generate() -> Result<Self, AdminError> {
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
fn secret_hash(secret: &str) -> [u8; 32] {
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
    fn generate() -> Result<Self, AdminError> {
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
    fn stored(text: &str) -> Self {
        match text {
            "approving" => Self::Approving,
            "approved" => Self::Approved,
            "rejected" => Self::Rejected,
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

/// Pending first issuances in a SQLite file.
#[derive(Debug)]
pub(crate) struct PendingStore {
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

const COLUMNS: &str = "id, tenant, profile, state, requested_by, spiffe_id, dns_names, \
                       created_at, expires_at, decided_by, reason, serial, response, \
                       token_created_by";

fn from_unix(s: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(s).unwrap_or(0))
}

fn read_record(row: &rusqlite::Row<'_>, now: SystemTime) -> rusqlite::Result<PendingRecord> {
    let expires_at = from_unix(row.get(8)?);
    let mut state = PendingState::stored(&row.get::<_, String>(3)?);
    if state == PendingState::Pending && expires_at <= now {
        state = PendingState::Expired;
    }
    let dns: String = row.get(6)?;
    Ok(PendingRecord {
        id: PendingId(row.get(0)?),
        tenant: row.get(1)?,
        profile: row.get(2)?,
        state,
        requested_by: row.get(4)?,
        spiffe_id: row.get(5)?,
        dns_names: serde_json::from_str(&dns).unwrap_or_default(),
        created_at: from_unix(row.get(7)?),
        expires_at,
        decided_by: row.get(9)?,
        reason: row.get(10)?,
        serial: row.get(11)?,
        response: row.get(12)?,
        token_created_by: row.get(13)?,
    })
}

fn requester_kind(text: &str) -> RequesterKind {
    match text {
        "client-cert" => RequesterKind::ClientCert,
        "operator" => RequesterKind::Operator,
        _ => RequesterKind::BootstrapToken,
    }
}

impl PendingStore {
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

    /// Keeps a checked request until `now + wait`; returns its id and the pickup secret.
    pub(crate) fn insert(
        &self,
        req: &NewPending,
        wait: Duration,
        now: SystemTime,
    ) -> Result<(PendingId, PickupSecret, SystemTime), AdminError> {
        let id = PendingId::generate()?;
        let secret = PickupSecret::generate()?;
        let expires_at = now + wait;
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
                &secret_hash(secret.expose())[..],
                unix(now),
                unix(expires_at),
                req.token_created_by,
            ],
        )
        .map_err(|e| self.error(e))?;
        Ok((id, secret, expires_at))
    }

    /// The request `id` if `secret` is its pickup secret (else None, whichever was wrong).
    pub(crate) fn for_pickup(
        &self,
        id: &PendingId,
        secret: &str,
        now: SystemTime,
    ) -> Result<Option<PendingRecord>, AdminError> {
        self.conn()
            .query_row(
                &format!(
                    "SELECT {COLUMNS} FROM pending_issuances WHERE id = ?1 AND secret_hash = ?2"
                ),
                params![id.as_str(), &secret_hash(secret)[..]],
                |row| read_record(row, now),
            )
            .optional()
            .map_err(|e| self.error(e))
    }

    /// The tenant's requests, newest first (at most 500).
    pub(crate) fn list(
        &self,
        tenant: &TenantId,
        now: SystemTime,
    ) -> Result<Vec<PendingRecord>, AdminError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {COLUMNS} FROM pending_issuances WHERE tenant = ?1 \
                 ORDER BY created_at DESC, id LIMIT 500"
            ))
            .map_err(|e| self.error(e))?;
        let rows = stmt
            .query_map(params![tenant.as_str()], |row| read_record(row, now))
            .map_err(|e| self.error(e))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.error(e))
    }

    /// The tenant's request `id`, whatever its state.
    pub(crate) fn get(
        &self,
        tenant: &TenantId,
        id: &PendingId,
        now: SystemTime,
    ) -> Result<Option<PendingRecord>, AdminError> {
        self.conn()
            .query_row(
                &format!("SELECT {COLUMNS} FROM pending_issuances WHERE id = ?1 AND tenant = ?2"),
                params![id.as_str(), tenant.as_str()],
                |row| read_record(row, now),
            )
            .optional()
            .map_err(|e| self.error(e))
    }

    /// Why `id` could not be claimed, or who it is the request of when it still could be (for
    /// the self-approval check before a claim): its caller, and the creator of the token it
    /// came with.
    pub(crate) fn requested_by(
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

    /// Claims a pending, unexpired request of `tenant` for approval by `by`: one caller wins.
    pub(crate) fn claim(
        &self,
        tenant: &TenantId,
        id: &PendingId,
        by: &str,
        now: SystemTime,
    ) -> Result<Result<Claimed, NotClaimed>, AdminError> {
        let claimed = self
            .conn()
            .query_row(
                "UPDATE pending_issuances SET state = 'approving', decided_by = ?3, \
                 decided_at = ?4 \
                 WHERE id = ?1 AND tenant = ?2 AND state = 'pending' AND expires_at > ?4 \
                 RETURNING tenant, profile, csr, lifetime_secs, requester_kind, requester_id",
                params![id.as_str(), tenant.as_str(), by, unix(now)],
                |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, Vec<u8>>(2)?,
                        row.get::<_, Option<i64>>(3)?,
                        row.get::<_, String>(4)?,
                        row.get::<_, String>(5)?,
                    ))
                },
            )
            .optional()
            .map_err(|e| self.error(e))?;
        let Some((t, profile, csr, lifetime, kind, requester_id)) = claimed else {
            return self.requested_by(tenant, id, now).map(|r| match r {
                // Claimed by someone else between the two statements.
                Ok(_) => Err(NotClaimed::Decided),
                Err(why) => Err(why),
            });
        };
        let tenant = t.parse::<TenantId>().map_err(|e| self.error(e))?;
        Ok(Ok(Claimed {
            tenant,
            profile,
            csr,
            lifetime: lifetime.map(|s| Duration::from_secs(u64::try_from(s).unwrap_or(0))),
            requester: Requester {
                kind: requester_kind(&kind),
                id: requester_id,
            },
        }))
    }

    /// A claimed request, signed: its answer kept for pickup.
    pub(crate) fn approved(
        &self,
        id: &PendingId,
        serial: &str,
        response: &str,
    ) -> Result<(), AdminError> {
        self.conn()
            .execute(
                "UPDATE pending_issuances SET state = 'approved', serial = ?2, response = ?3, \
                 csr = x'' WHERE id = ?1 AND state = 'approving'",
                params![id.as_str(), serial, response],
            )
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    /// A claimed request that could not be signed now (the key backend unavailable): pending
    /// again, for another try.
    pub(crate) fn release(&self, id: &PendingId) -> Result<(), AdminError> {
        self.conn()
            .execute(
                "UPDATE pending_issuances SET state = 'pending', decided_by = NULL, \
                 decided_at = NULL WHERE id = ?1 AND state = 'approving'",
                params![id.as_str()],
            )
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    /// Rejects a pending, unexpired request of `tenant` (or a claimed one the CA refused).
    pub(crate) fn reject(
        &self,
        tenant: &TenantId,
        id: &PendingId,
        by: &str,
        reason: &str,
        now: SystemTime,
        claimed: bool,
    ) -> Result<Result<(), NotClaimed>, AdminError> {
        let from = if claimed { "approving" } else { "pending" };
        let changed = self
            .conn()
            .execute(
                "UPDATE pending_issuances SET state = 'rejected', decided_by = ?3, \
                 decided_at = ?4, reason = ?5, csr = x'' \
                 WHERE id = ?1 AND tenant = ?2 AND state = ?6 AND (?6 = 'approving' OR expires_at > ?4)",
                params![id.as_str(), tenant.as_str(), by, unix(now), reason, from],
            )
            .map_err(|e| self.error(e))?;
        if changed == 1 {
            return Ok(Ok(()));
        }
        self.requested_by(tenant, id, now).map(|r| match r {
            Ok(_) => Err(NotClaimed::Decided),
            Err(why) => Err(why),
        })
    }
}

#[cfg(test)]
mod tests {
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
            dns_names: vec![],
        }
    }

    #[test]
    fn a_request_is_claimed_once_and_picked_up_with_its_secret_only() {
        let dir = tempfile::tempdir().unwrap();
        let s = PendingStore::in_state_dir(dir.path()).unwrap();
        let now = SystemTime::now();
        let acme: TenantId = "acme".parse().unwrap();
        let (id, secret, _) = s.insert(&request(), Duration::from_secs(60), now).unwrap();
        assert!(s.for_pickup(&id, "wrong", now).unwrap().is_none());
        let r = s.for_pickup(&id, secret.expose(), now).unwrap().unwrap();
        assert_eq!(r.state, PendingState::Pending);
        let other: TenantId = "globex".parse().unwrap();
        assert_eq!(
            s.claim(&other, &id, "bob", now).unwrap().unwrap_err(),
            NotClaimed::Unknown
        );
        let c = s.claim(&acme, &id, "bob", now).unwrap().unwrap();
        assert_eq!(c.csr, b"csr");
        assert_eq!(c.lifetime, Some(Duration::from_secs(600)));
        assert_eq!(
            s.claim(&acme, &id, "carol", now).unwrap().unwrap_err(),
            NotClaimed::Decided
        );
        s.approved(&id, "ab", "{}").unwrap();
        let r = s.for_pickup(&id, secret.expose(), now).unwrap().unwrap();
        assert_eq!(
            (r.state, r.response.as_deref()),
            (PendingState::Approved, Some("{}"))
        );
    }

    #[test]
    fn an_expired_request_is_neither_claimed_nor_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let s = PendingStore::in_state_dir(dir.path()).unwrap();
        let now = SystemTime::now();
        let acme: TenantId = "acme".parse().unwrap();
        let (id, _, _) = s.insert(&request(), Duration::from_secs(5), now).unwrap();
        let later = now + Duration::from_secs(6);
        assert_eq!(
            s.claim(&acme, &id, "bob", later).unwrap().unwrap_err(),
            NotClaimed::Expired
        );
        assert_eq!(
            s.reject(&acme, &id, "bob", "no", later, false)
                .unwrap()
                .unwrap_err(),
            NotClaimed::Expired
        );
        assert_eq!(
            s.list(&acme, later).unwrap()[0].state,
            PendingState::Expired
        );
    }
}
