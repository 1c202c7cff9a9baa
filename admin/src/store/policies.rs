//! Policy versions, activations and approvals in PostgreSQL: the [`PolicyStore`] every admin
//! server on the database shares, with the SQLite store's semantics.
//!
//! Every write for a tenant runs in a transaction holding that tenant's advisory lock
//! (`pg_advisory_xact_lock`), so version numbers, activations and approval decisions are
//! serialised fleet-wide; a change of an active version also bumps the `policy_serial` counter
//! (its row locked until commit), so bundle serials follow commit order across tenants.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use portcullis_ca::TenantId;
use postgres::types::ToSql;
use postgres::Transaction;

use super::pool::{has_nul, pg_error, PgConn, PgStore};
use crate::policies::{
    Approval, ApprovalStatus, Change, HistoryEvent, PolicyStore, StoreError, VersionInfo,
};

/// Policy versions, activations and approvals in the admin plane's PostgreSQL database.
#[derive(Debug)]
pub(crate) struct PgPolicyStore {
    store: PgStore,
}

fn error(detail: impl std::fmt::Display) -> StoreError {
    StoreError::Backend {
        path: "postgres".to_owned(),
        detail: detail.to_string(),
    }
}

fn db_error(e: postgres::Error) -> StoreError {
    error(pg_error(&e))
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn time(secs: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0))
}

/// Versions and ids are BIGINT: a u64 beyond i64 names nothing stored.
fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn uint(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// Takes the tenant's advisory lock for the rest of the transaction.
fn lock_tenant(tx: &mut Transaction<'_>, tenant: &TenantId) -> Result<(), StoreError> {
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('portcullis.policy/' || $1, 0))",
        &[&tenant.as_str()],
    )
    .map_err(db_error)?;
    Ok(())
}

fn version_exists(
    tx: &mut Transaction<'_>,
    tenant: &TenantId,
    version: u64,
) -> Result<bool, StoreError> {
    Ok(tx
        .query_opt(
            "SELECT 1 FROM policy_versions WHERE tenant = $1 AND version = $2",
            &[&tenant.as_str(), &int(version)],
        )
        .map_err(db_error)?
        .is_some())
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
    tx: &mut Transaction<'_>,
    tenant: &TenantId,
    e: NewEvent<'_>,
) -> Result<HistoryEvent, StoreError> {
    let approval = e.approval.map(int);
    let row = tx
        .query_one(
            "INSERT INTO policy_history (tenant, action, version, actor, at, reason, approval)
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
            &[
                &tenant.as_str(),
                &e.action,
                &int(e.version),
                &e.actor,
                &unix(e.at),
                &e.reason,
                &approval,
            ],
        )
        .map_err(db_error)?;
    Ok(HistoryEvent {
        id: uint(row.try_get(0).map_err(db_error)?),
        action: e.action.to_owned(),
        version: e.version,
        actor: e.actor.to_owned(),
        at: time(unix(e.at)),
        reason: e.reason.map(str::to_owned),
        approval: e.approval,
    })
}

/// Moves the tenant's active pointer (0: none) and bumps the bundle serial.
fn activate_in(
    tx: &mut Transaction<'_>,
    tenant: &TenantId,
    version: u64,
) -> Result<(), StoreError> {
    if version == 0 {
        tx.execute(
            "DELETE FROM policy_active WHERE tenant = $1",
            &[&tenant.as_str()],
        )
    } else {
        tx.execute(
            "INSERT INTO policy_active (tenant, version) VALUES ($1, $2)
             ON CONFLICT (tenant) DO UPDATE SET version = excluded.version",
            &[&tenant.as_str(), &int(version)],
        )
    }
    .map_err(db_error)?;
    tx.execute(
        "UPDATE counters SET value = value + 1 WHERE name = 'policy_serial'",
        &[],
    )
    .map_err(db_error)?;
    Ok(())
}

const APPROVAL_COLUMNS: &str =
    "id, version, requester, reason, requested_at, expires_at, status, decided_by";

fn approval_row(r: &postgres::Row) -> Result<Approval, StoreError> {
    let status: String = r.try_get(6).map_err(db_error)?;
    Ok(Approval {
        id: uint(r.try_get(0).map_err(db_error)?),
        version: uint(r.try_get(1).map_err(db_error)?),
        requester: r.try_get(2).map_err(db_error)?,
        reason: r.try_get(3).map_err(db_error)?,
        requested_at: time(r.try_get(4).map_err(db_error)?),
        expires_at: time(r.try_get(5).map_err(db_error)?),
        status: ApprovalStatus::parse(&status),
        decided_by: r.try_get(7).map_err(db_error)?,
    })
}

impl PgPolicyStore {
    pub(crate) fn new(store: PgStore) -> Self {
        Self { store }
    }

    fn conn(&self) -> Result<PgConn, StoreError> {
        self.store.conn().map_err(error)
    }

    /// Runs `f` in a transaction holding the tenant's lock, committed when it returns Ok.
    fn locked<T>(
        &self,
        tenant: &TenantId,
        f: impl FnOnce(&mut Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(db_error)?;
        lock_tenant(&mut tx, tenant)?;
        let out = f(&mut tx)?;
        tx.commit().map_err(db_error)?;
        Ok(out)
    }
}

impl PolicyStore for PgPolicyStore {
    fn add_version(
        &self,
        tenant: &TenantId,
        text: &str,
        sha256: &str,
        author: &str,
        comment: Option<&str>,
        now: SystemTime,
    ) -> Result<u64, StoreError> {
        if has_nul(&[text, sha256, author, comment.unwrap_or_default()]) {
            return Err(error("a value holds a NUL character"));
        }
        self.locked(tenant, |tx| {
            let next: i64 = tx
                .query_one(
                    "SELECT COALESCE(MAX(version), 0) + 1 FROM policy_versions WHERE tenant = $1",
                    &[&tenant.as_str()],
                )
                .map_err(db_error)?
                .try_get(0)
                .map_err(db_error)?;
            tx.execute(
                "INSERT INTO policy_versions
                   (tenant, version, text, sha256, author, created_at, comment)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    &tenant.as_str(),
                    &next,
                    &text,
                    &sha256,
                    &author,
                    &unix(now),
                    &comment,
                ],
            )
            .map_err(db_error)?;
            let next = uint(next);
            append_event(
                tx,
                tenant,
                NewEvent {
                    action: "uploaded",
                    version: next,
                    actor: author,
                    at: now,
                    reason: comment,
                    approval: None,
                },
            )?;
            Ok(next)
        })
    }

    fn versions(&self, tenant: &TenantId) -> Result<Vec<VersionInfo>, StoreError> {
        let rows = self
            .conn()?
            .query(
                "SELECT v.version, v.sha256, v.author, v.created_at, v.comment,
                        a.version IS NOT NULL
                 FROM policy_versions v
                 LEFT JOIN policy_active a ON a.tenant = v.tenant AND a.version = v.version
                 WHERE v.tenant = $1 ORDER BY v.version DESC",
                &[&tenant.as_str()],
            )
            .map_err(db_error)?;
        rows.iter()
            .map(|r| {
                Ok(VersionInfo {
                    version: uint(r.try_get(0).map_err(db_error)?),
                    sha256: r.try_get(1).map_err(db_error)?,
                    author: r.try_get(2).map_err(db_error)?,
                    created_at: time(r.try_get(3).map_err(db_error)?),
                    comment: r.try_get(4).map_err(db_error)?,
                    active: r.try_get(5).map_err(db_error)?,
                })
            })
            .collect()
    }

    fn text(&self, tenant: &TenantId, version: u64) -> Result<Option<String>, StoreError> {
        let row = self
            .conn()?
            .query_opt(
                "SELECT text FROM policy_versions WHERE tenant = $1 AND version = $2",
                &[&tenant.as_str(), &int(version)],
            )
            .map_err(db_error)?;
        row.map(|r| r.try_get(0).map_err(db_error)).transpose()
    }

    fn active(&self) -> Result<Vec<(TenantId, u64, String)>, StoreError> {
        let rows = self
            .conn()?
            .query(
                "SELECT a.tenant, a.version, v.text FROM policy_active a
                 JOIN policy_versions v ON v.tenant = a.tenant AND v.version = a.version
                 ORDER BY a.tenant",
                &[],
            )
            .map_err(db_error)?;
        rows.iter()
            .map(|r| {
                let tenant: String = r.try_get(0).map_err(db_error)?;
                let tenant = tenant
                    .parse()
                    .map_err(|e| error(format!("stored tenant {tenant:?}: {e}")))?;
                Ok((
                    tenant,
                    uint(r.try_get(1).map_err(db_error)?),
                    r.try_get(2).map_err(db_error)?,
                ))
            })
            .collect()
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
        if has_nul(&[actor, reason]) {
            return Err(error("a value holds a NUL character"));
        }
        self.locked(tenant, |tx| {
            // Version 0 is the platform's own entry: no stored version active.
            if version != 0 && !version_exists(tx, tenant, version)? {
                return Err(StoreError::UnknownVersion);
            }
            let action = match change {
                Change::Activate => "activated",
                Change::Rollback => "rolled_back",
            };
            let event = append_event(
                tx,
                tenant,
                NewEvent {
                    action,
                    version,
                    actor,
                    at: now,
                    reason: Some(reason),
                    approval: None,
                },
            )?;
            activate_in(tx, tenant, version)?;
            Ok(event)
        })
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
        if has_nul(&[requester, reason]) {
            return Err(error("a value holds a NUL character"));
        }
        self.locked(tenant, |tx| {
            if !version_exists(tx, tenant, version)? {
                return Err(StoreError::UnknownVersion);
            }
            let expires_at = now + expires_after;
            let id: i64 = tx
                .query_one(
                    "INSERT INTO policy_approvals
                       (tenant, version, requester, reason, requested_at, expires_at, status)
                     VALUES ($1, $2, $3, $4, $5, $6, 'pending') RETURNING id",
                    &[
                        &tenant.as_str(),
                        &int(version),
                        &requester,
                        &reason,
                        &unix(now),
                        &unix(expires_at),
                    ],
                )
                .map_err(db_error)?
                .try_get(0)
                .map_err(db_error)?;
            let id = uint(id);
            append_event(
                tx,
                tenant,
                NewEvent {
                    action: "approval_requested",
                    version,
                    actor: requester,
                    at: now,
                    reason: Some(reason),
                    approval: Some(id),
                },
            )?;
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
        if has_nul(&[approver]) {
            return Err(error("a value holds a NUL character"));
        }
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(db_error)?;
        lock_tenant(&mut tx, tenant)?;
        let found = tx
            .query_opt(
                &format!(
                    "SELECT {APPROVAL_COLUMNS} FROM policy_approvals WHERE tenant = $1 AND id = $2"
                ),
                &[&tenant.as_str(), &int(id)],
            )
            .map_err(db_error)?;
        let mut approval = approval_row(&found.ok_or(StoreError::UnknownApproval)?)?;
        if approval.status != ApprovalStatus::Pending {
            return Err(StoreError::NotPending(approval.status));
        }
        if unix(now) >= unix(approval.expires_at) {
            tx.execute(
                "UPDATE policy_approvals SET status = 'expired' WHERE id = $1",
                &[&int(id)],
            )
            .map_err(db_error)?;
            tx.commit().map_err(db_error)?;
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
        let status_text = status.to_string();
        tx.execute(
            "UPDATE policy_approvals SET status = $1, decided_by = $2, decided_at = $3
             WHERE id = $4",
            &[
                &status_text as &(dyn ToSql + Sync),
                &approver,
                &unix(now),
                &int(id),
            ],
        )
        .map_err(db_error)?;
        let action = if approve { "approved" } else { "rejected" };
        append_event(
            &mut tx,
            tenant,
            NewEvent {
                action,
                version: approval.version,
                actor: approver,
                at: now,
                reason: Some(&approval.reason),
                approval: Some(id),
            },
        )?;
        if approve {
            append_event(
                &mut tx,
                tenant,
                NewEvent {
                    action: "activated",
                    version: approval.version,
                    actor: &approval.requester,
                    at: now,
                    reason: Some(&approval.reason),
                    approval: Some(id),
                },
            )?;
            activate_in(&mut tx, tenant, approval.version)?;
        }
        tx.commit().map_err(db_error)?;
        approval.status = status;
        approval.decided_by = Some(approver.to_owned());
        Ok(approval)
    }

    fn approvals(&self, tenant: &TenantId, now: SystemTime) -> Result<Vec<Approval>, StoreError> {
        let rows = self
            .conn()?
            .query(
                &format!(
                    "SELECT {APPROVAL_COLUMNS} FROM policy_approvals WHERE tenant = $1
                     ORDER BY id DESC LIMIT 1000"
                ),
                &[&tenant.as_str()],
            )
            .map_err(db_error)?;
        let mut out = rows
            .iter()
            .map(approval_row)
            .collect::<Result<Vec<_>, _>>()?;
        for a in &mut out {
            if a.status == ApprovalStatus::Pending && unix(now) >= unix(a.expires_at) {
                a.status = ApprovalStatus::Expired;
            }
        }
        Ok(out)
    }

    fn history(&self, tenant: &TenantId) -> Result<Vec<HistoryEvent>, StoreError> {
        let rows = self
            .conn()?
            .query(
                "SELECT id, action, version, actor, at, reason, approval FROM policy_history
                 WHERE tenant = $1 ORDER BY id LIMIT 10000",
                &[&tenant.as_str()],
            )
            .map_err(db_error)?;
        rows.iter()
            .map(|r| {
                let approval: Option<i64> = r.try_get(6).map_err(db_error)?;
                Ok(HistoryEvent {
                    id: uint(r.try_get(0).map_err(db_error)?),
                    action: r.try_get(1).map_err(db_error)?,
                    version: uint(r.try_get(2).map_err(db_error)?),
                    actor: r.try_get(3).map_err(db_error)?,
                    at: time(r.try_get(4).map_err(db_error)?),
                    reason: r.try_get(5).map_err(db_error)?,
                    approval: approval.map(uint),
                })
            })
            .collect()
    }

    fn serial(&self) -> Result<u64, StoreError> {
        let row = self
            .conn()?
            .query_one(
                "SELECT value FROM counters WHERE name = 'policy_serial'",
                &[],
            )
            .map_err(db_error)?;
        Ok(uint(row.try_get(0).map_err(db_error)?))
    }
}

impl PgStore {
    /// Policy versions, activations and approvals in this database.
    pub(crate) fn policies(&self) -> PgPolicyStore {
        PgPolicyStore::new(self.clone())
    }

    /// Checks that this node signs policy bundles with the fleet's key: the first node to start
    /// stores its key's public half; a node whose key differs is refused, naming both.
    pub(crate) fn agree_on_policy_key(
        &self,
        public_key_der: &[u8],
        now: SystemTime,
    ) -> Result<(), String> {
        let mine = portcullis_audit::key_id(public_key_der);
        let err = |e: postgres::Error| format!("policy signing key: {}", pg_error(&e));
        let mut conn = self.conn()?;
        conn.execute(
            "INSERT INTO policy_signing_key (public_key_der, key_id, stored_at)
             VALUES ($1, $2, $3) ON CONFLICT (singleton) DO NOTHING",
            &[&public_key_der, &mine, &unix(now)],
        )
        .map_err(err)?;
        let row = conn
            .query_one("SELECT public_key_der, key_id FROM policy_signing_key", &[])
            .map_err(err)?;
        let stored: Vec<u8> = row.try_get(0).map_err(err)?;
        if stored == public_key_der {
            return Ok(());
        }
        let theirs = portcullis_audit::key_id(&stored);
        Err(format!(
            "policies: this node's policy signing key (key id {mine}) differs from the one the \
             admin plane's PostgreSQL database holds (key id {theirs}, stored by the first node \
             to start): every admin server must sign bundles with the same key, or gateways \
             would refuse some of them; copy STATE/policy-signing.key from the first node or use \
             the same HSM key (policies.signing_pkcs11)"
        ))
    }
}
