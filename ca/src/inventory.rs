//! The inventory of every certificate issued: what, to whom, under which profile, by whose
//! request, which certificate it renewed (its lineage), and whether it was revoked. Behind
//! [`InventoryStore`] so that a shared store (the admin plane's PostgreSQL one) can replace the
//! embedded SQLite one.

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
mod group_commit;
mod sqlite;

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Serialize, Serializer};

use crate::crl::RevocationReason;
use crate::ids::{Serial, TenantId};
use crate::CaError;

pub use group_commit::GroupCommit;
pub use sqlite::SqliteInventory;

/// A certificate's status at some instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CertStatus {
    /// Not revoked and not yet expired.
    Valid,
    /// Revoked (whether or not also expired).
    Revoked,
    /// Not revoked, past `not_after`.
    Expired,
}

impl fmt::Display for CertStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CertStatus::Valid => "valid",
            CertStatus::Revoked => "revoked",
            CertStatus::Expired => "expired",
        })
    }
}

impl FromStr for CertStatus {
    type Err = CaError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "valid" => Ok(CertStatus::Valid),
            "revoked" => Ok(CertStatus::Revoked),
            "expired" => Ok(CertStatus::Expired),
            other => Err(CaError::Config(format!(
                "status {other:?}: expected valid, revoked or expired"
            ))),
        }
    }
}

/// What is recorded when a certificate is issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCertRecord {
    pub serial: Serial,
    pub subject: String,
    /// `URI:spiffe://…`, `DNS:…`.
    pub sans: Vec<String>,
    pub tenant: TenantId,
    pub profile: String,
    /// Who asked, as `kind:id`.
    pub requester: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    pub cert_der: Vec<u8>,
    /// The certificate this one renews: it must be in the inventory and not revoked when this
    /// one is recorded.
    pub renewed_from: Option<Serial>,
    /// The region whose CA issued it (`ca init --region`), if the CA has one.
    pub region: Option<String>,
}

/// A certificate in the inventory, with its status computed at the query's `now`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertRecord {
    pub serial: Serial,
    pub subject: String,
    pub sans: Vec<String>,
    pub tenant: TenantId,
    pub profile: String,
    pub requester: String,
    #[serde(serialize_with = "rfc3339")]
    pub not_before: SystemTime,
    #[serde(serialize_with = "rfc3339")]
    pub not_after: SystemTime,
    pub status: CertStatus,
    #[serde(serialize_with = "rfc3339_opt")]
    pub revoked_at: Option<SystemTime>,
    pub revocation_reason: Option<RevocationReason>,
    /// The certificate this one renewed, if it was a renewal.
    pub renewed_from: Option<Serial>,
    /// The region whose CA issued it, if the CA has one.
    pub region: Option<String>,
}

/// What a revocation covers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RevocationScope {
    /// The certificate and every renewal descending from it (the default: a stolen
    /// certificate's renewals are the thief's too).
    #[default]
    Lineage,
    /// The certificate only.
    OnlyThis,
}

/// What one revocation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// The certificate named, as it now stands.
    pub certificate: CertRecord,
    /// Every certificate revoked now: the one named (unless it already was), then its renewals,
    /// each after the certificate it renewed.
    pub revoked: Vec<CertRecord>,
}

/// Which certificates to list. Empty: all, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InventoryFilter {
    pub tenant: Option<TenantId>,
    pub status: Option<CertStatus>,
    /// Not yet expired, and expiring within this long from `now`.
    pub expires_within: Option<Duration>,
    /// Naming this identity: a SPIFFE ID (URI SAN), a DNS name (DNS SAN) or an IP address (IP
    /// SAN), matched exactly.
    pub identity: Option<String>,
    /// At most this many (default 1000).
    pub limit: Option<usize>,
}

/// Where issued certificates are recorded.
pub trait InventoryStore: Send + Sync + fmt::Debug {
    /// Records an issued certificate. Issuance fails if this fails, and a renewal fails with
    /// [`IssueRefusal::NotRenewable`] when the certificate it renews is absent or revoked, in
    /// the same transaction (so a renewal racing a revocation is refused or revoked with it).
    ///
    /// [`IssueRefusal::NotRenewable`]: crate::IssueRefusal::NotRenewable
    fn record_issued(&self, record: &NewCertRecord) -> Result<(), CaError>;
    /// One certificate by serial.
    fn get(&self, serial: &Serial, now: SystemTime) -> Result<Option<CertRecord>, CaError>;
    /// Certificates matching `filter`, newest first.
    fn list(&self, filter: &InventoryFilter, now: SystemTime) -> Result<Vec<CertRecord>, CaError>;
    /// Marks a certificate revoked, with its renewals unless `scope` is
    /// [`RevocationScope::OnlyThis`], in one transaction. [`CaError::UnknownSerial`] when
    /// absent, [`CaError::AlreadyRevoked`] when nothing in scope was left to revoke.
    fn revoke(
        &self,
        serial: &Serial,
        reason: RevocationReason,
        scope: RevocationScope,
        at: SystemTime,
    ) -> Result<Revocation, CaError>;
    /// The certificate's family: the certificates it renewed, oldest first, then it, then every
    /// renewal descending from it, each after the one it renewed. Empty when unknown.
    fn lineage(&self, serial: &Serial, now: SystemTime) -> Result<Vec<CertRecord>, CaError>;
    /// Revoked certificates not yet expired at `now` (what a CRL must list).
    fn list_revoked(&self, now: SystemTime) -> Result<Vec<CertRecord>, CaError>;
    /// The next CRL number: strictly greater than every one returned before.
    fn next_crl_number(&self) -> Result<u64, CaError>;
}

pub(crate) fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(_) => 0,
    }
}

pub(crate) fn from_unix_seconds(s: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::try_from(s).unwrap_or(0))
}

pub(crate) fn format_time(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn rfc3339<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_seconds(*t))
}

fn rfc3339_opt<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => rfc3339(t, s),
        None => s.serialize_none(),
    }
}
