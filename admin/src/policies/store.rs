//! Where policy versions, activations and approvals are kept: the [`PolicyStore`] trait and its
//! SQLite implementation (`STATE/policies.sqlite3`, beside the CA's inventory).
//!
//! Versions are immutable once stored. Every change of what is active (activation, rollback,
//! approval) is one transaction that appends a history event and moves the tenant's active
//! pointer, so the history and the active version never disagree.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use portcullis_ca::TenantId;
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde::Serialize;

/// The store's file name in the CA's state directory.
pub const POLICY_DB: &str = "policies.sqlite3";

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    #[error("policy store {path}: {detail}")]
    Backend { path: String, detail: String },
    #[error("no such version")]
    UnknownVersion,
    #[error("no such approval request")]
    UnknownApproval,
    #[error("the approval request is {0}")]
    NotPending(ApprovalStatus),
    #[error("the requester may not approve their own request")]
    SamePerson,
}

/// One stored version, without its text.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct VersionInfo {
    pub(crate) version: u64,
    pub(crate) sha256: String,
    pub(crate) author: String,
    #[serde(serialize_with = "crate::serde_time::rfc3339")]
    pub(crate) created_at: SystemTime,
    pub(crate) comment: Option<String>,
    pub(crate) active: bool,
}

/// What happened to a tenant's policy.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct HistoryEvent {
    pub(crate) id: u64,
    /// `uploaded`, `activated`, `rolled_back`, `approval_requested`, `approved`, `rejected`.
    pub(crate) action: String,
    pub(crate) version: u64,
    pub(crate) actor: String,
    #[serde(serialize_with = "crate::serde_time::rfc3339")]
    pub(crate) at: SystemTime,
    pub(crate) reason: Option<String>,
    /// The approval request the event belongs to.
    pub(crate) approval: Option<u64>,
}

/// Where an approval request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ApprovalStatus {
    Pending,
    Approved,
    Rejected,
    Expired,
}

impl ApprovalStatus {
    fn as_str(self) -> &'static str {
        match self {
            ApprovalStatus::Pending => "pending",
            ApprovalStatus::Approved => "approved",
            ApprovalStatus::Rejected => "rejected",
            ApprovalStatus::Expired => "expired",
        }
    }

    pub(crate) fn parse(s: &str) -> ApprovalStatus {
        match s {
            "approved" => ApprovalStatus::Approved,
            "rejected" => ApprovalStatus::Rejected,
            "expired" => ApprovalStatus::Expired,
            _ => ApprovalStatus::Pending,
        }
    }
}

impl fmt::Display for ApprovalStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request to activate a version, waiting for a second person.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Approval {
    pub(crate) id: u64,
    pub(crate) version: u64,
    pub(crate) requester: String,
    pub(crate) reason: String,
    #[serde(serialize_with = "crate::serde_time::rfc3339")]
    pub(crate) requested_at: SystemTime,
    #[serde(serialize_with = "crate::serde_time::rfc3339")]
    pub(crate) expires_at: SystemTime,
    pub(crate) status: ApprovalStatus,
    pub(crate) decided_by: Option<String>,
}

/// A change of the active version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    Activate,
    Rollback,
}

/// Policy versions, activations and approvals, per tenant.
pub(crate) trait PolicyStore: Send + Sync + fmt::Debug {
    /// Stores a new version (numbered from 1 per tenant) and its `uploaded` event.
    fn add_version(
        &self,
        tenant: &TenantId,
        text: &str,
        sha256: &str,
        author: &str,
        comment: Option<&str>,
        now: SystemTime,
    ) -> Result<u64, StoreError>;
    /// The tenant's versions, newest first.
    fn versions(&self, tenant: &TenantId) -> Result<Vec<VersionInfo>, StoreError>;
    /// One version's text.
    fn text(&self, tenant: &TenantId, version: u64) -> Result<Option<String>, StoreError>;
    /// Every tenant's active version and its text.
    fn active(&self) -> Result<Vec<(TenantId, u64, String)>, StoreError>;
    /// Makes `version` the tenant's active one (0: none, the platform's own entry again),
    /// recording `change` in the history.
    fn set_active(
        &self,
        tenant: &TenantId,
        version: u64,
        change: Change,
        actor: &str,
        reason: &str,
        now: SystemTime,
    ) -> Result<HistoryEvent, StoreError>;
    /// Opens an approval request.
    fn request_approval(
        &self,
        tenant: &TenantId,
        version: u64,
        requester: &str,
        reason: &str,
        now: SystemTime,
        expires_after: Duration,
    ) -> Result<Approval, StoreError>;
    /// Decides a pending request: approved (and the version made active, in the same
    /// transaction) or rejected. The requester may not decide their own request; an expired
    /// request is marked expired and refused.
    fn decide(
        &self,
        tenant: &TenantId,
        id: u64,
        approver: &str,
        approve: bool,
        now: SystemTime,
    ) -> Result<Approval, StoreError>;
    /// The tenant's approval requests, newest first (pending ones past their expiry shown
    /// as expired).
    fn approvals(&self, tenant: &TenantId, now: SystemTime) -> Result<Vec<Approval>, StoreError>;
    /// The tenant's history, oldest first.
    fn history(&self, tenant: &TenantId) -> Result<Vec<HistoryEvent>, StoreError>;
    /// Grows with every change of any tenant's active version (0: none yet).
    fn serial(&self) -> Result<u64, StoreError>;
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS policy_versions (
    tenant TEXT NOT NULL,
    version INTEGER NOT NULL,
    text TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    author TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    comment TEXT,
    PRIMARY KEY (tenant, version)
);
CREATE TABLE IF NOT EXISTS policy_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant TEXT NOT NULL,
    action TEXT NOT NULL,
    version INTEGER NOT NULL,
    actor TEXT NOT NULL,
    at INTEGER NOT NULL,
    reason TEXT,
    approval INTEGER
);
CREATE TABLE IF NOT EXISTS policy_active (
    tenant TEXT PRIMARY KEY NOT NULL,
    version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS policy_approvals (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant TEXT NOT NULL,
    version INTEGER NOT NULL,
    requester TEXT NOT NULL,
    reason TEXT NOT NULL,
    requested_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    status TEXT NOT NULL,
    decided_by TEXT,
    decided_at INTEGER
);
";

/// The SQLite store.
#[derive(Debug)]
pub(crate) struct SqlitePolicyStore {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl SqlitePolicyStore {
    /// Opens (creating if needed) the store at `path`.
    pub(crate) fn open(path: &Path) -> Result<Self, StoreError> {
        let err = |e: rusqlite::Error| StoreError::Backend {
            path: path.display().to_string(),
            detail: e.to_string(),
        };
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        Ok(Self {
            path: path.to_owned(),
            conn: Mutex::new(conn),
        })
    }

    fn error(&self, e: impl fmt::Display) -> StoreError {
        StoreError::Backend {
            path: self.path.display().to_string(),
            detail: e.to_string(),
        }
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // Every use is one statement or one transaction: a panic leaves nothing half done.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn time(secs: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0))
}

fn version_exists(tx: &Transaction<'_>, tenant: &TenantId, version: u64) -> rusqlite::Result<bool> {
    tx.query_row(
        "SELECT 1 FROM policy_versions WHERE tenant = ?1 AND version = ?2",
        params![tenant.as_str(), version],
        |_| Ok(()),
    )
    .optional()
    .map(|found| found.is_some())
}

/// A history event about to be written.
struct NewEvent<'a> {
    action: &'a str,
    version: u64,
    actor: &'a str,
    at: SystemTime,
    reason: Option<&'a str>,
    approval: Option<u64>,
}

fn append_event(
    tx: &Transaction<'_>,
    tenant: &TenantId,
    e: NewEvent<'_>,
) -> rusqlite::Result<HistoryEvent> {
    tx.execute(
        "INSERT INTO policy_history (tenant, action, version, actor, at, reason, approval)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            tenant.as_str(),
            e.action,
            e.version,
            e.actor,
            unix(e.at),
            e.reason,
            e.approval
        ],
    )?;
    Ok(HistoryEvent {
        id: u64::try_from(tx.last_insert_rowid()).unwrap_or(0),
        action: e.action.to_owned(),
        version: e.version,
        actor: e.actor.to_owned(),
        at: time(unix(e.at)),
        reason: e.reason.map(str::to_owned),
        approval: e.approval,
    })
}

fn activate_in(tx: &Transaction<'_>, tenant: &TenantId, version: u64) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO policy_active (tenant, version) VALUES (?1, ?2)
         ON CONFLICT (tenant) DO UPDATE SET version = excluded.version",
        params![tenant.as_str(), version],
    )?;
    Ok(())
}

fn approval_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Approval> {
    Ok(Approval {
        id: row.get(0)?,
        version: row.get(1)?,
        requester: row.get(2)?,
        reason: row.get(3)?,
        requested_at: time(row.get(4)?),
        expires_at: time(row.get(5)?),
        status: ApprovalStatus::parse(&row.get::<_, String>(6)?),
        decided_by: row.get(7)?,
    })
}

const APPROVAL_COLUMNS: &str =
    "id, version, requester, reason, requested_at, expires_at, status, decided_by";

impl PolicyStore for SqlitePolicyStore {
    fn add_version(
        &self,
        tenant: &TenantId,
        text: &str,
        sha256: &str,
        author: &str,
        comment: Option<&str>,
        now: SystemTime,
    ) -> Result<u64, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.error(e))?;
        let next: u64 = tx
            .query_row(
                "SELECT COALESCE(MAX(version), 0) + 1 FROM policy_versions WHERE tenant = ?1",
                params![tenant.as_str()],
                |r| r.get(0),
            )
            .map_err(|e| self.error(e))?;
        tx.execute(
            "INSERT INTO policy_versions (tenant, version, text, sha256, author, created_at, comment)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![tenant.as_str(), next, text, sha256, author, unix(now), comment],
        )
        .map_err(|e| self.error(e))?;
        append_event(
            &tx,
            tenant,
            NewEvent {
                action: "uploaded",
                version: next,
                actor: author,
                at: now,
                reason: comment,
                approval: None,
            },
        )
        .map_err(|e| self.error(e))?;
        tx.commit().map_err(|e| self.error(e))?;
        Ok(next)
    }

    fn versions(&self, tenant: &TenantId) -> Result<Vec<VersionInfo>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT v.version, v.sha256, v.author, v.created_at, v.comment,
                        a.version IS NOT NULL
                 FROM policy_versions v
                 LEFT JOIN policy_active a ON a.tenant = v.tenant AND a.version = v.version
                 WHERE v.tenant = ?1 ORDER BY v.version DESC",
            )
            .map_err(|e| self.error(e))?;
        let rows = stmt
            .query_map(params![tenant.as_str()], |r| {
                Ok(VersionInfo {
                    version: r.get(0)?,
                    sha256: r.get(1)?,
                    author: r.get(2)?,
                    created_at: time(r.get(3)?),
                    comment: r.get(4)?,
                    active: r.get(5)?,
                })
            })
            .map_err(|e| self.error(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.error(e))
    }

    fn text(&self, tenant: &TenantId, version: u64) -> Result<Option<String>, StoreError> {
        self.conn()
            .query_row(
                "SELECT text FROM policy_versions WHERE tenant = ?1 AND version = ?2",
                params![tenant.as_str(), version],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.error(e))
    }

    fn active(&self) -> Result<Vec<(TenantId, u64, String)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT a.tenant, a.version, v.text FROM policy_active a
                 JOIN policy_versions v ON v.tenant = a.tenant AND v.version = a.version
                 ORDER BY a.tenant",
            )
            .map_err(|e| self.error(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, u64>(1)?, r.get(2)?))
            })
            .map_err(|e| self.error(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (tenant, version, text) = row.map_err(|e| self.error(e))?;
            let tenant = tenant
                .parse()
                .map_err(|e| self.error(format!("stored tenant {tenant:?}: {e}")))?;
            out.push((tenant, version, text));
        }
        Ok(out)
    }

    fn set_active(
        &self,
        tenant: &TenantId,
        version: u64,
        change: Change,
        actor: &str,
        reason: &str,
        now: SystemTime,
    ) -> Result<HistoryEvent, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.error(e))?;
        // Version 0 is the platform's own entry: no stored version active.
        if version != 0 && !version_exists(&tx, tenant, version).map_err(|e| self.error(e))? {
            return Err(StoreError::UnknownVersion);
        }
        let action = match change {
            Change::Activate => "activated",
            Change::Rollback => "rolled_back",
        };
        let event = append_event(
            &tx,
            tenant,
            NewEvent {
                action,
                version,
                actor,
                at: now,
                reason: Some(reason),
                approval: None,
            },
        )
        .map_err(|e| self.error(e))?;
        if version == 0 {
            tx.execute(
                "DELETE FROM policy_active WHERE tenant = ?1",
                params![tenant.as_str()],
            )
            .map_err(|e| self.error(e))?;
        } else {
            activate_in(&tx, tenant, version).map_err(|e| self.error(e))?;
        }
        tx.commit().map_err(|e| self.error(e))?;
        Ok(event)
    }

    fn request_approval(
        &self,
        tenant: &TenantId,
        version: u64,
        requester: &str,
        reason: &str,
        now: SystemTime,
        expires_after: Duration,
    ) -> Result<Approval, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.error(e))?;
        if !version_exists(&tx, tenant, version).map_err(|e| self.error(e))? {
            return Err(StoreError::UnknownVersion);
        }
        let expires_at = now + expires_after;
        tx.execute(
            "INSERT INTO policy_approvals
               (tenant, version, requester, reason, requested_at, expires_at, status)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending')",
            params![
                tenant.as_str(),
                version,
                requester,
                reason,
                unix(now),
                unix(expires_at)
            ],
        )
        .map_err(|e| self.error(e))?;
        let id = u64::try_from(tx.last_insert_rowid()).unwrap_or(0);
        append_event(
            &tx,
            tenant,
            NewEvent {
                action: "approval_requested",
                version,
                actor: requester,
                at: now,
                reason: Some(reason),
                approval: Some(id),
            },
        )
        .map_err(|e| self.error(e))?;
        tx.commit().map_err(|e| self.error(e))?;
        Ok(Approval {
            id,
            version,
            requester: requester.to_owned(),
            reason: reason.to_owned(),
            requested_at: time(unix(now)),
            expires_at: time(unix(expires_at)),
            status: ApprovalStatus::Pending,
            decided_by: None,
        })
    }

    fn decide(
        &self,
        tenant: &TenantId,
        id: u64,
        approver: &str,
        approve: bool,
        now: SystemTime,
    ) -> Result<Approval, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.error(e))?;
        let found = tx
            .query_row(
                &format!(
                    "SELECT {APPROVAL_COLUMNS} FROM policy_approvals WHERE tenant = ?1 AND id = ?2"
                ),
                params![tenant.as_str(), id],
                approval_row,
            )
            .optional()
            .map_err(|e| self.error(e))?;
        let mut approval = found.ok_or(StoreError::UnknownApproval)?;
        if approval.status != ApprovalStatus::Pending {
            return Err(StoreError::NotPending(approval.status));
        }
        if unix(now) >= unix(approval.expires_at) {
            tx.execute(
                "UPDATE policy_approvals SET status = 'expired' WHERE id = ?1",
                params![id],
            )
            .map_err(|e| self.error(e))?;
            tx.commit().map_err(|e| self.error(e))?;
            return Err(StoreError::NotPending(ApprovalStatus::Expired));
        }
        if approval.requester == approver {
            return Err(StoreError::SamePerson);
        }
        let status = if approve {
            ApprovalStatus::Approved
        } else {
            ApprovalStatus::Rejected
        };
        tx.execute(
            "UPDATE policy_approvals SET status = ?1, decided_by = ?2, decided_at = ?3
             WHERE id = ?4",
            params![status.as_str(), approver, unix(now), id],
        )
        .map_err(|e| self.error(e))?;
        let action = if approve { "approved" } else { "rejected" };
        append_event(
            &tx,
            tenant,
            NewEvent {
                action,
                version: approval.version,
                actor: approver,
                at: now,
                reason: Some(&approval.reason),
                approval: Some(id),
            },
        )
        .map_err(|e| self.error(e))?;
        if approve {
            append_event(
                &tx,
                tenant,
                NewEvent {
                    action: "activated",
                    version: approval.version,
                    actor: &approval.requester,
                    at: now,
                    reason: Some(&approval.reason),
                    approval: Some(id),
                },
            )
            .map_err(|e| self.error(e))?;
            activate_in(&tx, tenant, approval.version).map_err(|e| self.error(e))?;
        }
        tx.commit().map_err(|e| self.error(e))?;
        approval.status = status;
        approval.decided_by = Some(approver.to_owned());
        Ok(approval)
    }

    fn approvals(&self, tenant: &TenantId, now: SystemTime) -> Result<Vec<Approval>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {APPROVAL_COLUMNS} FROM policy_approvals WHERE tenant = ?1
                 ORDER BY id DESC LIMIT 1000"
            ))
            .map_err(|e| self.error(e))?;
        let rows = stmt
            .query_map(params![tenant.as_str()], approval_row)
            .map_err(|e| self.error(e))?;
        let mut out: Vec<Approval> = rows.collect::<Result<_, _>>().map_err(|e| self.error(e))?;
        for a in &mut out {
            if a.status == ApprovalStatus::Pending && unix(now) >= unix(a.expires_at) {
                a.status = ApprovalStatus::Expired;
            }
        }
        Ok(out)
    }

    fn serial(&self) -> Result<u64, StoreError> {
        self.conn()
            .query_row(
                "SELECT COALESCE(MAX(id), 0) FROM policy_history
                 WHERE action IN ('activated', 'rolled_back')",
                [],
                |r| r.get(0),
            )
            .map_err(|e| self.error(e))
    }

    fn history(&self, tenant: &TenantId) -> Result<Vec<HistoryEvent>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT id, action, version, actor, at, reason, approval FROM policy_history
                 WHERE tenant = ?1 ORDER BY id LIMIT 10000",
            )
            .map_err(|e| self.error(e))?;
        let rows = stmt
            .query_map(params![tenant.as_str()], |r| {
                Ok(HistoryEvent {
                    id: r.get(0)?,
                    action: r.get(1)?,
                    version: r.get(2)?,
                    actor: r.get(3)?,
                    at: time(r.get(4)?),
                    reason: r.get(5)?,
                    approval: r.get(6)?,
                })
            })
            .map_err(|e| self.error(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.error(e))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    //! The policy store's behaviour, written once: run here on SQLite and in `store`'s tests on
    //! PostgreSQL.
    use super::*;

    fn store() -> (tempfile::TempDir, SqlitePolicyStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqlitePolicyStore::open(&dir.path().join(POLICY_DB)).unwrap();
        (dir, store)
    }

    #[test]
    fn sqlite_versions_number_per_tenant_and_activation_moves_the_pointer() {
        versions_number_per_tenant_and_activation_moves_the_pointer(&store().1);
    }

    #[test]
    fn sqlite_an_approval_needs_another_person_and_expires() {
        an_approval_needs_another_person_and_expires(&store().1);
    }

    #[test]
    fn sqlite_concurrent_activations_leave_one_active_and_a_consistent_history() {
        // One handle: SQLite serves one node, its callers serialised on its connection.
        let (_dir, a) = store();
        concurrent_activations_leave_one_active_and_a_consistent_history(&a, &a);
    }

    /// Versions per tenant, activation, rollback to none, the serial growing with each change.
    pub(crate) fn versions_number_per_tenant_and_activation_moves_the_pointer(s: &dyn PolicyStore) {
        let acme: TenantId = "acme".parse().unwrap();
        let globex: TenantId = "globex".parse().unwrap();
        let now = SystemTime::now();
        assert_eq!(s.serial().unwrap(), 0);
        assert_eq!(
            s.add_version(&acme, "a1", "h1", "alice", None, now)
                .unwrap(),
            1
        );
        assert_eq!(
            s.add_version(&acme, "a2", "h2", "alice", Some("c"), now)
                .unwrap(),
            2
        );
        assert_eq!(
            s.add_version(&globex, "g1", "h3", "gina", None, now)
                .unwrap(),
            1
        );
        assert!(s.active().unwrap().is_empty());
        assert_eq!(s.text(&acme, 2).unwrap().as_deref(), Some("a2"));
        assert_eq!(s.text(&acme, 3).unwrap(), None);
        s.set_active(&acme, 2, Change::Activate, "alice", "go", now)
            .unwrap();
        let after_one = s.serial().unwrap();
        assert!(after_one > 0);
        assert!(matches!(
            s.set_active(&acme, 9, Change::Activate, "alice", "go", now),
            Err(StoreError::UnknownVersion)
        ));
        let active = s.active().unwrap();
        assert_eq!(active, vec![(acme.clone(), 2, "a2".to_owned())]);
        let v = s.versions(&acme).unwrap();
        assert_eq!(
            v.iter().map(|v| (v.version, v.active)).collect::<Vec<_>>(),
            [(2, true), (1, false)]
        );
        assert_eq!(v[0].comment.as_deref(), Some("c"));
        let h = s.history(&acme).unwrap();
        assert_eq!(
            h.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(),
            ["uploaded", "uploaded", "activated"]
        );
        assert_eq!(h[2].reason.as_deref(), Some("go"));
        // Back to the platform's own entry: nothing active, the serial moves on.
        s.set_active(&acme, 0, Change::Rollback, "alice", "undo", now)
            .unwrap();
        assert!(s.active().unwrap().is_empty());
        assert!(s.serial().unwrap() > after_one);
        assert_eq!(
            s.history(&acme).unwrap().last().unwrap().action,
            "rolled_back"
        );
        assert_eq!(s.history(&globex).unwrap().len(), 1);
    }

    /// Two-person approval, rejection of one's own request, expiry, tenants kept apart.
    pub(crate) fn an_approval_needs_another_person_and_expires(s: &dyn PolicyStore) {
        let t: TenantId = "acme".parse().unwrap();
        let now = SystemTime::now();
        s.add_version(&t, "a1", "h", "alice", None, now).unwrap();
        assert!(matches!(
            s.request_approval(&t, 7, "alice", "why", now, Duration::from_secs(60)),
            Err(StoreError::UnknownVersion)
        ));
        let a = s
            .request_approval(&t, 1, "alice", "why", now, Duration::from_secs(60))
            .unwrap();
        assert!(matches!(
            s.decide(&t, a.id, "alice", true, now),
            Err(StoreError::SamePerson)
        ));
        let other: TenantId = "globex".parse().unwrap();
        assert!(matches!(
            s.decide(&other, a.id, "bob", true, now),
            Err(StoreError::UnknownApproval)
        ));
        let done = s.decide(&t, a.id, "bob", true, now).unwrap();
        assert_eq!(done.status, ApprovalStatus::Approved);
        assert_eq!(done.decided_by.as_deref(), Some("bob"));
        assert_eq!(s.active().unwrap()[0].1, 1);
        assert!(matches!(
            s.decide(&t, a.id, "carol", false, now),
            Err(StoreError::NotPending(ApprovalStatus::Approved))
        ));
        let late = s
            .request_approval(&t, 1, "alice", "again", now, Duration::from_secs(60))
            .unwrap();
        let later = now + Duration::from_secs(61);
        assert_eq!(
            s.approvals(&t, later).unwrap()[0].status,
            ApprovalStatus::Expired
        );
        assert!(matches!(
            s.decide(&t, late.id, "bob", true, later),
            Err(StoreError::NotPending(ApprovalStatus::Expired))
        ));
        // Marked expired in the store, not only shown so.
        assert_eq!(
            s.approvals(&t, now).unwrap()[0].status,
            ApprovalStatus::Expired
        );
        let rejected = s
            .request_approval(&t, 1, "alice", "third", now, Duration::from_secs(60))
            .unwrap();
        let serial = s.serial().unwrap();
        let r = s.decide(&t, rejected.id, "bob", false, now).unwrap();
        assert_eq!(r.status, ApprovalStatus::Rejected);
        assert_eq!(
            s.serial().unwrap(),
            serial,
            "a rejection changes nothing active"
        );
        let actions: Vec<_> = s
            .history(&t)
            .unwrap()
            .into_iter()
            .map(|e| (e.action, e.approval.is_some()))
            .collect();
        assert_eq!(
            actions,
            [
                ("uploaded".to_owned(), false),
                ("approval_requested".to_owned(), true),
                ("approved".to_owned(), true),
                ("activated".to_owned(), true),
                ("approval_requested".to_owned(), true),
                ("approval_requested".to_owned(), true),
                ("rejected".to_owned(), true),
            ]
        );
    }

    /// Two handles on one store (two nodes) activating different versions at once, many
    /// times: every activation is recorded, the active version is the last one recorded, and
    /// uploads racing each other get distinct numbers.
    pub(crate) fn concurrent_activations_leave_one_active_and_a_consistent_history(
        a: &dyn PolicyStore,
        b: &dyn PolicyStore,
    ) {
        let t: TenantId = "acme".parse().unwrap();
        let now = SystemTime::now();
        let uploaded: Vec<u64> = std::thread::scope(|s| {
            let ha = s.spawn(|| {
                (0..5)
                    .map(|i| {
                        a.add_version(&t, &format!("a{i}"), "h", "alice", None, now)
                            .unwrap()
                    })
                    .collect::<Vec<_>>()
            });
            let hb = s.spawn(|| {
                (0..5)
                    .map(|i| {
                        b.add_version(&t, &format!("b{i}"), "h", "bob", None, now)
                            .unwrap()
                    })
                    .collect::<Vec<_>>()
            });
            let mut all = ha.join().unwrap();
            all.extend(hb.join().unwrap());
            all
        });
        let mut sorted = uploaded.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (1..=10).collect::<Vec<u64>>());
        let serial = a.serial().unwrap();
        std::thread::scope(|s| {
            s.spawn(|| {
                for _ in 0..10 {
                    a.set_active(&t, 1, Change::Activate, "alice", "one", now)
                        .unwrap();
                }
            });
            s.spawn(|| {
                for _ in 0..10 {
                    b.set_active(&t, 2, Change::Activate, "bob", "two", now)
                        .unwrap();
                }
            });
        });
        let active = a.active().unwrap();
        assert_eq!(active.len(), 1, "{active:?}");
        let history = b.history(&t).unwrap();
        let activations: Vec<_> = history.iter().filter(|e| e.action == "activated").collect();
        assert_eq!(activations.len(), 20);
        assert_eq!(active[0].1, activations.last().unwrap().version);
        let flags: Vec<_> = b
            .versions(&t)
            .unwrap()
            .into_iter()
            .filter(|v| v.active)
            .collect();
        assert_eq!(flags.len(), 1);
        assert_eq!(flags[0].version, active[0].1);
        assert!(history.windows(2).all(|w| w[0].id < w[1].id));
        assert!(b.serial().unwrap() >= serial + 20);
    }
}
