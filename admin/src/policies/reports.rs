//! Reports on one tenant, as JSON or CSV: access review (from the policy in effect), policy
//! change history, and the audit summary of a period (from the recorded traffic). Each is
//! stamped with when it was computed, the policy serial, and the head (last record) of every
//! audit log read, so that a report can be tied to the log it describes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use portcullis_audit::{Decision, QueryFilter};
use portcullis_ca::TenantId;
use portcullis_policy::{Config, RuleSummary};
use serde::Serialize;

/// Where a report stands: when, on which policy, at which audit log heads.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Stamp {
    pub(crate) computed_at: String,
    pub(crate) policy_serial: u64,
    pub(crate) audit_heads: Vec<LogHead>,
}

/// The last record of an audit log.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct LogHead {
    pub(crate) node: String,
    pub(crate) seq: u64,
    pub(crate) hash: String,
}

/// The heads of `logs` now (a log that does not exist yet has none).
pub(crate) fn heads(logs: &[PathBuf]) -> Vec<LogHead> {
    logs.iter()
        .filter_map(|dir| portcullis_audit::tail(dir, 1).ok()?.pop())
        .map(|r| LogHead {
            node: r.node,
            seq: r.seq,
            hash: r.hash,
        })
        .collect()
}

/// Access review: who may reach which of the tenant's routes, and how.
#[derive(Debug, Serialize)]
pub(crate) struct AccessReview {
    #[serde(flatten)]
    pub(crate) stamp: Stamp,
    pub(crate) tenant: String,
    pub(crate) policy_version: u64,
    pub(crate) routes: Vec<RouteAccess>,
}

#[derive(Debug, Serialize)]
pub(crate) struct RouteAccess {
    pub(crate) route: String,
    pub(crate) host: Option<String>,
    pub(crate) path_prefix: String,
    pub(crate) upstream: String,
    /// Rules in the order they are judged (deny rules first); nothing matching: denied.
    pub(crate) rules: Vec<RuleSummary>,
}

pub(crate) fn access_review(
    fleet: &Config,
    tenant: &TenantId,
    policy_version: u64,
    stamp: Stamp,
) -> AccessReview {
    let routes = fleet
        .routes
        .iter()
        .filter(|r| r.tenant.as_str() == tenant.as_str())
        .map(|r| RouteAccess {
            route: r.id.as_str().to_owned(),
            host: r.host.clone(),
            path_prefix: r.path_prefix.clone(),
            upstream: r.upstream.to_string(),
            rules: r.rule_summaries(),
        })
        .collect();
    AccessReview {
        stamp,
        tenant: tenant.to_string(),
        policy_version,
        routes,
    }
}

impl AccessReview {
    /// One row per rule.
    pub(crate) fn csv(&self) -> Result<String, csv::Error> {
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record([
            "route",
            "host",
            "path_prefix",
            "rule",
            "effect",
            "spiffe_ids",
            "groups",
            "subjects",
            "methods",
            "paths",
        ])?;
        let list = |v: &Option<Vec<String>>| v.as_ref().map_or("*".to_owned(), |v| v.join(" "));
        for route in &self.routes {
            for rule in &route.rules {
                let subjects = [&rule.subjects, &rule.token_subjects, &rule.emails]
                    .iter()
                    .filter_map(|v| v.as_ref())
                    .flatten()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(" ");
                let paths = [&rule.path_prefixes, &rule.paths]
                    .iter()
                    .filter_map(|v| v.as_ref())
                    .flatten()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(" ");
                w.write_record([
                    route.route.as_str(),
                    route.host.as_deref().unwrap_or("*"),
                    route.path_prefix.as_str(),
                    rule.id.as_str(),
                    rule.effect,
                    &list(&rule.spiffe_ids),
                    &list(&rule.groups),
                    &subjects,
                    &list(&rule.methods),
                    &paths,
                ])?;
            }
        }
        finish(w)
    }
}

/// What the recorded traffic of a period says about a tenant.
#[derive(Debug, Serialize)]
pub(crate) struct AuditSummary {
    #[serde(flatten)]
    pub(crate) stamp: Stamp,
    pub(crate) tenant: String,
    pub(crate) since: String,
    pub(crate) until: String,
    pub(crate) requests: u64,
    pub(crate) allowed: u64,
    pub(crate) denied: u64,
    /// Requests decided by each rule (`default-deny` for no rule), allowed or denied.
    pub(crate) by_rule: BTreeMap<String, u64>,
    /// DLP matches by detector (counts only).
    pub(crate) dlp: BTreeMap<String, u64>,
    /// Requests not served as allowed, by reason.
    pub(crate) refusals: BTreeMap<String, u64>,
    /// The read stopped at its bound (`MAX_RECORDS`) before the period's end.
    pub(crate) truncated: bool,
}

/// At most this many records are read per summary.
const MAX_RECORDS: u64 = 20_000_000;

pub(crate) fn audit_summary(
    logs: &[PathBuf],
    tenant: &TenantId,
    window: Duration,
    now: SystemTime,
    stamp: Stamp,
) -> Result<AuditSummary, String> {
    let since = now.checked_sub(window).unwrap_or(SystemTime::UNIX_EPOCH);
    let mut s = AuditSummary {
        stamp,
        tenant: tenant.to_string(),
        since: humantime::format_rfc3339_seconds(since).to_string(),
        until: humantime::format_rfc3339_seconds(now).to_string(),
        requests: 0,
        allowed: 0,
        denied: 0,
        by_rule: BTreeMap::new(),
        dlp: BTreeMap::new(),
        refusals: BTreeMap::new(),
        truncated: false,
    };
    let filter = QueryFilter {
        tenant: Some(tenant.to_string()),
        since: Some(since),
        until: Some(now),
        ..QueryFilter::default()
    };
    let read = super::traffic::each_request(logs, &filter, MAX_RECORDS, |_, e| {
        s.requests += 1;
        match e.decision {
            Decision::Allow => s.allowed += 1,
            _ => s.denied += 1,
        }
        if e.route.is_some() {
            let rule = e.rule.unwrap_or_else(|| "default-deny".to_owned());
            *s.by_rule.entry(rule).or_default() += 1;
        }
        for finding in e.dlp {
            *s.dlp.entry(finding.detector).or_default() += finding.count;
        }
        if let Some(reason) = e.reason {
            *s.refusals.entry(reason).or_default() += 1;
        }
    })?;
    s.truncated = read.truncated;
    Ok(s)
}

impl AuditSummary {
    /// `metric,key,count` rows.
    pub(crate) fn csv(&self) -> Result<String, csv::Error> {
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(["metric", "key", "count"])?;
        for (metric, value) in [
            ("requests", self.requests),
            ("allowed", self.allowed),
            ("denied", self.denied),
        ] {
            w.write_record([metric, "", &value.to_string()])?;
        }
        for (metric, map) in [
            ("rule", &self.by_rule),
            ("dlp", &self.dlp),
            ("refusal", &self.refusals),
        ] {
            for (key, count) in map {
                w.write_record([metric, key.as_str(), &count.to_string()])?;
            }
        }
        finish(w)
    }
}

/// Rows of any serializable records, as CSV with a header line.
pub(crate) fn rows_csv<T: Serialize>(rows: &[T]) -> Result<String, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for row in rows {
        w.serialize(row)?;
    }
    finish(w)
}

fn finish(w: csv::Writer<Vec<u8>>) -> Result<String, csv::Error> {
    let bytes = w.into_inner().map_err(|e| e.into_error())?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}
