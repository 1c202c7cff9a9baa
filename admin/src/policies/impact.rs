//! Impact analysis: the requests the gateways recorded in their audit logs, replayed through
//! routing and access rules under the fleet's active policies and under a candidate, and the
//! ones whose decision would change.
//!
//! What is replayed is what the audit record holds: the caller's SPIFFE ID (or certificate
//! subject), method, host, normalised path and source address. Rate limits, DLP and token
//! checks are not replayed. Requests made with a bearer token (their record names the person,
//! not the certificate) and requests whose path was cut are counted as not replayable; a
//! request on a route whose rules read headers, DNS SANs, the subject or token claims is
//! replayed without them and counted as approximate.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use portcullis_audit::{QueryFilter, RequestEvent};
use portcullis_ca::TenantId;
use portcullis_policy::{
    normalize_host, normalize_path, Config, Identity, NoHeaders, RequestFacts, Route, SpiffeId,
};
use serde::Serialize;

/// At most this many records are read per analysis.
const MAX_RECORDS: u64 = 2_000_000;
/// Examples kept per kind of change.
const EXAMPLES: usize = 5;

/// What replaying a window of recorded traffic found.
#[derive(Debug, Serialize)]
pub(crate) struct ImpactReport {
    #[serde(serialize_with = "crate::serde_time::rfc3339")]
    pub(crate) since: SystemTime,
    #[serde(serialize_with = "crate::serde_time::rfc3339")]
    pub(crate) until: SystemTime,
    /// The tenant's requests in the window (routed to it by either policy).
    pub(crate) requests: u64,
    pub(crate) unchanged: u64,
    /// Allowed before, refused (denied or no longer routed) with the candidate.
    pub(crate) allowed_to_denied: u64,
    /// Refused (denied or not routed) before, allowed with the candidate. A request that moves
    /// between this tenant's and another tenant's route counts as refused on the other side
    /// (this tenant would not, or no longer, serve it).
    pub(crate) denied_to_allowed: u64,
    /// Same verdict, another rule or route.
    pub(crate) rule_changed: u64,
    /// Replayed without facts the record does not hold (see the module docs).
    pub(crate) approximate: u64,
    /// Not replayed, by reason.
    pub(crate) not_replayable: BTreeMap<&'static str, u64>,
    /// The read stopped at its bound before the window's end.
    pub(crate) truncated: bool,
    /// Configured audit log folders that do not exist (yet): read as empty.
    pub(crate) logs_missing: u64,
    /// Each change, most frequent first.
    pub(crate) changes: Vec<ChangeGroup>,
}

/// Requests whose outcome changed the same way.
#[derive(Debug, Serialize)]
pub(crate) struct ChangeGroup {
    pub(crate) from: String,
    pub(crate) to: String,
    pub(crate) count: u64,
    pub(crate) examples: Vec<Example>,
}

/// One recorded request, as the report shows it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Example {
    pub(crate) time: String,
    pub(crate) identity: Option<String>,
    pub(crate) method: String,
    pub(crate) host: String,
    pub(crate) path: String,
}

/// What routing and the access rules make of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    NoRoute,
    /// Another tenant's route (whose names are not this tenant's to see).
    OtherTenant,
    Allowed {
        route: String,
        rule: String,
    },
    Denied {
        route: String,
        rule: String,
    },
}

impl Outcome {
    fn allowed(&self) -> bool {
        matches!(self, Outcome::Allowed { .. })
    }

    fn label(&self) -> String {
        match self {
            Outcome::NoRoute => "no route".to_owned(),
            Outcome::OtherTenant => "another tenant's route".to_owned(),
            Outcome::Allowed { route, rule } => format!("allowed by {rule} on {route}"),
            Outcome::Denied { route, rule } => format!("denied by {rule} on {route}"),
        }
    }
}

/// Replays the requests recorded in `logs` over the last `window` for `tenant` under
/// `current` and `candidate`.
pub(crate) fn analyse(
    logs: &[PathBuf],
    tenant: &TenantId,
    current: &Config,
    candidate: &Config,
    window: Duration,
    now: SystemTime,
) -> Result<ImpactReport, String> {
    let since = now.checked_sub(window).unwrap_or(SystemTime::UNIX_EPOCH);
    let mut report = ImpactReport {
        since,
        until: now,
        requests: 0,
        unchanged: 0,
        allowed_to_denied: 0,
        denied_to_allowed: 0,
        rule_changed: 0,
        approximate: 0,
        not_replayable: BTreeMap::new(),
        truncated: false,
        logs_missing: 0,
        changes: Vec::new(),
    };
    let mut groups: BTreeMap<(String, String), ChangeGroup> = BTreeMap::new();
    let filter = QueryFilter {
        since: Some(since),
        until: Some(now),
        ..QueryFilter::default()
    };
    let read = super::traffic::each_request(logs, &filter, MAX_RECORDS, |time, event| {
        replay(
            &event,
            time,
            tenant,
            current,
            candidate,
            &mut report,
            &mut groups,
        );
    })?;
    report.logs_missing = read.missing;
    report.truncated = read.truncated;
    let mut changes: Vec<ChangeGroup> = groups.into_values().collect();
    changes.sort_by_key(|g| std::cmp::Reverse(g.count));
    report.changes = changes;
    Ok(report)
}

fn replay(
    event: &RequestEvent,
    time: &str,
    tenant: &TenantId,
    current: &Config,
    candidate: &Config,
    report: &mut ImpactReport,
    groups: &mut BTreeMap<(String, String), ChangeGroup>,
) {
    let recorded_tenant = event.tenant.as_deref() == Some(tenant.as_str());
    let not_replayable = |report: &mut ImpactReport, why: &'static str| {
        if recorded_tenant {
            report.requests += 1;
            *report.not_replayable.entry(why).or_default() += 1;
        }
    };
    if event.person.is_some() {
        return not_replayable(report, "bearer_token");
    }
    if event.path_truncated.is_some() {
        return not_replayable(report, "path_truncated");
    }
    let Ok(path) = normalize_path(&event.path) else {
        return not_replayable(report, "malformed_path");
    };
    let host = if event.host.is_empty() {
        None
    } else {
        match normalize_host(&event.host) {
            Some(h) => Some(h),
            None => return not_replayable(report, "malformed_host"),
        }
    };
    let identity = match event.identity.as_deref() {
        None => None,
        Some(id) if id.starts_with("spiffe://") => match id.parse::<SpiffeId>() {
            Ok(id) => Some(Identity::from_x509(Some(id), Vec::new(), None)),
            Err(_) => return not_replayable(report, "malformed_identity"),
        },
        Some(subject) => Some(Identity::from_x509(
            None,
            Vec::new(),
            Some(subject.to_owned()),
        )),
    };
    let source = event
        .source
        .parse::<SocketAddr>()
        .map(|a| a.ip())
        .or_else(|_| event.source.parse::<IpAddr>())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let facts = RequestFacts {
        identity: identity.as_ref(),
        token: None,
        method: &event.method,
        path: &path,
        source,
        headers: &NoHeaders,
    };
    // The outcome, and for the tenant's own routes whether they read unrecorded facts.
    let decide = |config: &Config| -> (Outcome, Option<bool>) {
        match config.routes.route(host.as_deref(), &path) {
            None => (Outcome::NoRoute, None),
            Some(route) if route.tenant.as_str() != tenant.as_str() => (Outcome::OtherTenant, None),
            Some(route) => (outcome(route, &facts), Some(route.reads_unrecorded_facts())),
        }
    };
    let (before, before_ours) = decide(current);
    let (after, after_ours) = decide(candidate);
    if before_ours.is_none() && after_ours.is_none() {
        // Neither policy gives this request to the tenant: not its traffic.
        return;
    }
    report.requests += 1;
    if before_ours == Some(true) || after_ours == Some(true) {
        report.approximate += 1;
    }
    if before == after {
        report.unchanged += 1;
        return;
    }
    match (before.allowed(), after.allowed()) {
        (true, false) => report.allowed_to_denied += 1,
        (false, true) => report.denied_to_allowed += 1,
        _ => report.rule_changed += 1,
    }
    let group = groups
        .entry((before.label(), after.label()))
        .or_insert_with(|| ChangeGroup {
            from: before.label(),
            to: after.label(),
            count: 0,
            examples: Vec::new(),
        });
    group.count += 1;
    if group.examples.len() < EXAMPLES {
        group.examples.push(Example {
            time: time.to_owned(),
            identity: event.identity.clone(),
            method: event.method.clone(),
            host: event.host.clone(),
            path: event.path.clone(),
        });
    }
}

fn outcome(route: &Route, facts: &RequestFacts<'_>) -> Outcome {
    let name = route.id.as_str().to_owned();
    match route.authorize(facts) {
        Ok(permit) => Outcome::Allowed {
            route: name,
            rule: permit.rule.as_str().to_owned(),
        },
        Err(denied) => Outcome::Denied {
            route: name,
            rule: denied.rule_label().to_owned(),
        },
    }
}
