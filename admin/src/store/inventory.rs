//! The certificate inventory in PostgreSQL: the CA's [`InventoryStore`], shared by every
//! admin server on the database. Issuances are group-committed as in the SQLite store; a
//! renewal and a revocation of its lineage are serialised by an advisory lock (shared by
//! renewals, exclusive for revocations), so a renewal racing a revocation is refused or
//! revoked with it, whichever node each runs on.

use std::time::SystemTime;

use portcullis_ca::{
    CaError, CertRecord, CertStatus, GroupCommit, InventoryFilter, InventoryStore, IssueRefusal,
    NewCertRecord, Revocation, RevocationReason, RevocationScope, Serial, TenantId,
};
use postgres::types::ToSql;
use postgres::GenericClient;

use super::pool::{pg_error, PgConn, PgStore};

/// Taken shared by a transaction recording renewals, exclusively by a revocation ("lineage").
const LINEAGE_LOCK: i64 = 0x006c_696e_6561_6765;

const COLUMNS: &str = "serial, subject, sans::text, tenant, profile, requester, not_before, \
                       not_after, revoked_at, revocation_reason, renewed_from, region";

/// A certificate and every renewal descending from it, with each one's distance from the one
/// named (UNION visits each serial once).
const LINEAGE_ROWS: &str = "WITH RECURSIVE lineage(serial, depth) AS (
    SELECT $1::text, 0
    UNION
    SELECT c.serial, l.depth + 1 FROM certificates c JOIN lineage l ON c.renewed_from = l.serial
)";

/// The inventory in the admin plane's PostgreSQL database.
pub struct PgInventory {
    store: PgStore,
    commits: GroupCommit,
}

impl std::fmt::Debug for PgInventory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgInventory").finish_non_exhaustive()
    }
}

fn db_error(e: postgres::Error) -> CaError {
    CaError::Inventory(pg_error(&e))
}

fn seconds(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn time(s: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(s).unwrap_or(0))
}

fn record(row: &postgres::Row, now: i64) -> Result<CertRecord, CaError> {
    let serial: String = row.try_get(0).map_err(db_error)?;
    let corrupt = |what: &str| CaError::Inventory(format!("row {serial}: bad {what}"));
    let sans: String = row.try_get(2).map_err(db_error)?;
    let tenant: String = row.try_get(3).map_err(db_error)?;
    let not_after: i64 = row.try_get(7).map_err(db_error)?;
    let revoked_at: Option<i64> = row.try_get(8).map_err(db_error)?;
    let reason: Option<i16> = row.try_get(9).map_err(db_error)?;
    let renewed_from: Option<String> = row.try_get(10).map_err(db_error)?;
    let status = if revoked_at.is_some() {
        CertStatus::Revoked
    } else if not_after <= now {
        CertStatus::Expired
    } else {
        CertStatus::Valid
    };
    Ok(CertRecord {
        serial: serial.parse().map_err(|_| corrupt("serial"))?,
        subject: row.try_get(1).map_err(db_error)?,
        sans: serde_json::from_str(&sans).map_err(|_| corrupt("sans"))?,
        tenant: tenant.parse::<TenantId>().map_err(|_| corrupt("tenant"))?,
        profile: row.try_get(4).map_err(db_error)?,
        requester: row.try_get(5).map_err(db_error)?,
        not_before: time(row.try_get(6).map_err(db_error)?),
        not_after: time(not_after),
        status,
        revoked_at: revoked_at.map(time),
        revocation_reason: match reason {
            Some(code) => Some(
                u8::try_from(code)
                    .ok()
                    .and_then(RevocationReason::from_code)
                    .ok_or_else(|| corrupt("reason"))?,
            ),
            None => None,
        },
        renewed_from: renewed_from
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(|_| corrupt("renewed_from"))?,
        region: row.try_get(11).map_err(db_error)?,
    })
}

fn query(
    conn: &mut impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    now: i64,
) -> Result<Vec<CertRecord>, CaError> {
    conn.query(sql, params)
        .map_err(db_error)?
        .iter()
        .map(|row| record(row, now))
        .collect()
}

/// Writes a batch in one transaction, each record under its own savepoint (a refused renewal
/// or a duplicate serial fails alone).
fn write_batch(
    conn: &mut postgres::Client,
    batch: &[&NewCertRecord],
) -> Result<Vec<Result<(), CaError>>, CaError> {
    let mut tx = conn.transaction().map_err(db_error)?;
    if batch.iter().any(|r| r.renewed_from.is_some()) {
        tx.execute("SELECT pg_advisory_xact_lock_shared($1)", &[&LINEAGE_LOCK])
            .map_err(db_error)?;
    }
    let mut results = Vec::with_capacity(batch.len());
    for record in batch {
        let mut sp = tx.transaction().map_err(db_error)?;
        let result = insert(&mut sp, record);
        if result.is_ok() {
            sp.commit().map_err(db_error)?;
        } else {
            sp.rollback().map_err(db_error)?;
        }
        results.push(result);
    }
    tx.commit().map_err(db_error)?;
    Ok(results)
}

/// Inserts one issued certificate; a renewal only while the certificate it renews is there and
/// not revoked.
fn insert(tx: &mut impl GenericClient, r: &NewCertRecord) -> Result<(), CaError> {
    let sans = serde_json::to_string(&r.sans)
        .map_err(|e| CaError::Inventory(format!("encode SANs: {e}")))?;
    if let Some(parent) = &r.renewed_from {
        let found = tx
            .query_opt(
                "SELECT revoked_at FROM certificates WHERE serial = $1",
                &[&parent.to_string()],
            )
            .map_err(db_error)?;
        let why = match found
            .map(|row| row.try_get::<_, Option<i64>>(0))
            .transpose()
        {
            Err(e) => return Err(db_error(e)),
            Ok(None) => Some("it is not in the inventory"),
            Ok(Some(Some(_))) => Some("it has been revoked"),
            Ok(Some(None)) => None,
        };
        if let Some(why) = why {
            return Err(CaError::Refused(IssueRefusal::NotRenewable {
                serial: parent.to_string(),
                why: why.to_owned(),
            }));
        }
    }
    tx.execute(
        "INSERT INTO certificates (serial, subject, sans, tenant, profile, requester, \
         not_before, not_after, cert_der, renewed_from, region) \
         VALUES ($1, $2, $3::text::jsonb, $4, $5, $6, $7, $8, $9, $10, $11)",
        &[
            &r.serial.to_string(),
            &r.subject,
            &sans,
            &r.tenant.as_str(),
            &r.profile,
            &r.requester,
            &seconds(r.not_before),
            &seconds(r.not_after),
            &r.cert_der,
            &r.renewed_from.as_ref().map(ToString::to_string),
            &r.region,
        ],
    )
    .map_err(db_error)
    .map(|_| ())
}

impl PgInventory {
    pub(crate) fn new(store: PgStore) -> Self {
        Self {
            store,
            commits: GroupCommit::default(),
        }
    }

    fn conn(&self) -> Result<PgConn, CaError> {
        self.store.conn().map_err(CaError::Inventory)
    }
}

impl InventoryStore for PgInventory {
    fn record_issued(&self, r: &NewCertRecord) -> Result<(), CaError> {
        self.commits
            .record(r, |batch| write_batch(&mut **self.conn()?, batch))
    }

    fn get(&self, serial: &Serial, now: SystemTime) -> Result<Option<CertRecord>, CaError> {
        let sql = format!("SELECT {COLUMNS} FROM certificates WHERE serial = $1");
        Ok(query(
            &mut **self.conn()?,
            &sql,
            &[&serial.to_string()],
            seconds(now),
        )?
        .into_iter()
        .next())
    }

    fn lineage(&self, serial: &Serial, now: SystemTime) -> Result<Vec<CertRecord>, CaError> {
        let Some(named) = self.get(serial, now)? else {
            return Ok(Vec::new());
        };
        // Up through `renewed_from` (bounded: a loop in corrupt data ends it), then down.
        let mut ancestors = Vec::new();
        let mut from = named.renewed_from.clone();
        while let Some(parent) = from {
            if ancestors.len() >= 10_000 {
                break;
            }
            match self.get(&parent, now)? {
                Some(record) => {
                    from = record.renewed_from.clone();
                    ancestors.push(record);
                }
                None => break,
            }
        }
        ancestors.reverse();
        let sql = format!(
            "{LINEAGE_ROWS} SELECT {COLUMNS} FROM certificates JOIN lineage USING (serial) \
             ORDER BY lineage.depth, not_before"
        );
        ancestors.extend(query(
            &mut **self.conn()?,
            &sql,
            &[&serial.to_string()],
            seconds(now),
        )?);
        Ok(ancestors)
    }

    fn list(&self, filter: &InventoryFilter, now: SystemTime) -> Result<Vec<CertRecord>, CaError> {
        let now_s = seconds(now);
        let mut sql = format!("SELECT {COLUMNS} FROM certificates WHERE true");
        let mut args: Vec<Box<dyn ToSql + Sync>> = Vec::new();
        let mut arg = |sql: &mut String, clause: &str, value: Box<dyn ToSql + Sync>| {
            args.push(value);
            sql.push_str(&clause.replace("{}", &format!("${}", args.len())));
        };
        if let Some(tenant) = &filter.tenant {
            arg(
                &mut sql,
                " AND tenant = {}",
                Box::new(tenant.as_str().to_owned()),
            );
        }
        match filter.status {
            None => {}
            Some(CertStatus::Revoked) => sql.push_str(" AND revoked_at IS NOT NULL"),
            Some(CertStatus::Valid) => arg(
                &mut sql,
                " AND revoked_at IS NULL AND not_after > {}",
                Box::new(now_s),
            ),
            Some(CertStatus::Expired) => arg(
                &mut sql,
                " AND revoked_at IS NULL AND not_after <= {}",
                Box::new(now_s),
            ),
        }
        if let Some(identity) = &filter.identity {
            if identity.contains('\0') {
                // PostgreSQL text holds no NUL, so no SAN stored here has one: nothing matches
                // (asked, the server would fail the query instead).
                return Ok(Vec::new());
            }
            // SANs are a JSON array of `URI:…`, `DNS:…`, `IP:…` strings: `?|` is true when one
            // of them equals one of the three (exact, no pattern).
            let named: Vec<String> = ["URI:", "DNS:", "IP:"]
                .iter()
                .map(|prefix| format!("{prefix}{identity}"))
                .collect();
            arg(&mut sql, " AND sans ?| {}::text[]", Box::new(named));
        }
        if let Some(within) = filter.expires_within {
            let until = now_s.saturating_add(i64::try_from(within.as_secs()).unwrap_or(i64::MAX));
            arg(&mut sql, " AND not_after > {}", Box::new(now_s));
            arg(&mut sql, " AND not_after <= {}", Box::new(until));
        }
        let limit = i64::try_from(filter.limit.unwrap_or(1000)).unwrap_or(i64::MAX);
        arg(
            &mut sql,
            " ORDER BY not_before DESC, serial LIMIT {}",
            Box::new(limit),
        );
        let refs: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| a.as_ref()).collect();
        query(&mut **self.conn()?, &sql, &refs, now_s)
    }

    fn revoke(
        &self,
        serial: &Serial,
        reason: RevocationReason,
        scope: RevocationScope,
        at: SystemTime,
    ) -> Result<Revocation, CaError> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(db_error)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LINEAGE_LOCK])
            .map_err(db_error)?;
        let key = serial.to_string();
        let named = tx
            .query_opt(
                "SELECT revoked_at, revocation_reason FROM certificates WHERE serial = $1",
                &[&key],
            )
            .map_err(db_error)?;
        let Some(named) = named else {
            return Err(CaError::UnknownSerial(serial.clone()));
        };
        let revoked_at: Option<i64> = named.try_get(0).map_err(db_error)?;
        let code: Option<i16> = named.try_get(1).map_err(db_error)?;
        let in_scope: Vec<String> = match scope {
            RevocationScope::OnlyThis => vec![key.clone()],
            // The lineage, and so for any scope added later: the wider revocation.
            _ => tx
                .query(
                    &format!(
                        "{LINEAGE_ROWS} SELECT serial FROM lineage JOIN certificates \
                         USING (serial) ORDER BY lineage.depth, not_before, serial"
                    ),
                    &[&key],
                )
                .map_err(db_error)?
                .iter()
                .map(|row| row.try_get(0))
                .collect::<Result<_, _>>()
                .map_err(db_error)?,
        };
        let at_s = seconds(at);
        let code_now = i16::from(reason.code());
        let mut now_revoked = Vec::new();
        for s in in_scope {
            let changed = tx
                .execute(
                    "UPDATE certificates SET revoked_at = $1, revocation_reason = $2 \
                     WHERE serial = $3 AND revoked_at IS NULL",
                    &[&at_s, &code_now, &s],
                )
                .map_err(db_error)?;
            if changed == 1 {
                now_revoked.push(s);
            }
        }
        if now_revoked.is_empty() {
            return Err(CaError::AlreadyRevoked {
                serial: serial.clone(),
                at: humantime::format_rfc3339_seconds(time(revoked_at.unwrap_or(0))).to_string(),
                reason: code
                    .and_then(|c| u8::try_from(c).ok())
                    .and_then(RevocationReason::from_code)
                    .unwrap_or(RevocationReason::Unspecified),
            });
        }
        let sql = format!("SELECT {COLUMNS} FROM certificates WHERE serial = $1");
        let mut one = |s: &String| -> Result<CertRecord, CaError> {
            query(&mut tx, &sql, &[s], at_s)?
                .into_iter()
                .next()
                .ok_or_else(|| CaError::Inventory(format!("serial {s} vanished")))
        };
        let certificate = one(&key)?;
        let revoked = now_revoked
            .iter()
            .map(&mut one)
            .collect::<Result<Vec<_>, _>>()?;
        tx.commit().map_err(db_error)?;
        Ok(Revocation {
            certificate,
            revoked,
        })
    }

    fn list_revoked(&self, now: SystemTime) -> Result<Vec<CertRecord>, CaError> {
        let now_s = seconds(now);
        let sql = format!(
            "SELECT {COLUMNS} FROM certificates WHERE revoked_at IS NOT NULL AND not_after > $1 \
             ORDER BY revoked_at, serial"
        );
        query(&mut **self.conn()?, &sql, &[&now_s], now_s)
    }

    fn next_crl_number(&self) -> Result<u64, CaError> {
        let n: i64 = self
            .conn()?
            .query_one(
                "UPDATE counters SET value = value + 1 WHERE name = 'crl_number' RETURNING value",
                &[],
            )
            .map_err(db_error)?
            .try_get(0)
            .map_err(db_error)?;
        u64::try_from(n).map_err(|_| CaError::Inventory("negative CRL number".to_owned()))
    }
}
