//! Policy versions per tenant under `/v1/tenants/{tenant}/`: upload and list (`policies`), one
//! version (`policies/{v}`), its diff and impact, activation, approvals, rollback, history.
//! Every call is authorised by role on the tenant (a tenant the caller holds no role in does
//! not exist for it: 404) and recorded in the audit log with the role that allowed it.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use portcullis_ca::TenantId;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{blocking, finish, read_json, ApiError, AppState, CallRecord, PathParams};
use crate::identity::ConnInfo;
use crate::policies::{Policies, PolicyError, Problem, StoreError};
use crate::roles::{Permission, Role};

/// Longest window impact analysis replays.
const MAX_WINDOW: Duration = Duration::from_secs(30 * 24 * 3600);
/// Longest reason kept.
const MAX_REASON: usize = 1024;

pub(super) fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(bundle))
        .routes(routes!(list, upload))
        .routes(routes!(history))
        .routes(routes!(rollback))
        .routes(routes!(version))
        .routes(routes!(diff))
        .routes(routes!(impact))
        .routes(routes!(activate))
        .routes(routes!(approvals))
        .routes(routes!(decide))
}

/// A call's tenant, once the caller is known to hold `permission` in it.
struct Scoped {
    tenant: TenantId,
    policies: Arc<Policies>,
}

async fn scoped(
    st: &Arc<AppState>,
    conn: &ConnInfo,
    tenant: &str,
    permission: Permission,
    rec: &mut CallRecord,
) -> Result<Scoped, ApiError> {
    let tenant = super::scoped_tenant(st, conn, tenant, permission, rec).await?;
    let policies = st
        .policies
        .clone()
        .ok_or_else(|| ApiError::not_found("policies are not managed by this server"))?;
    Ok(Scoped { tenant, policies })
}

pub(super) fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::UnknownVersion => ApiError::not_found("no such version"),
        StoreError::UnknownApproval => ApiError::not_found("no such approval request"),
        StoreError::NotPending(status) => ApiError::new(
            StatusCode::CONFLICT,
            "not_pending",
            format!("the approval request is {status}"),
        ),
        StoreError::SamePerson => ApiError::new(
            StatusCode::FORBIDDEN,
            "same_person",
            "an activation is approved by someone other than who asked for it",
        ),
        StoreError::Backend { .. } => {
            tracing::error!(error = %e, "admin API: policy store failed");
            ApiError::internal()
        }
    }
}

/// `invalid` is how a document that fails the checks is answered in this call.
fn policy_error(e: PolicyError, status: StatusCode, code: &'static str) -> Response {
    match e {
        PolicyError::Invalid(problems) => problems_response(status, code, &problems),
        PolicyError::Store(e) => store_error(e).into_response(),
        PolicyError::Traffic => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "traffic_unavailable",
            "the recorded traffic could not be read; see the server log",
        )
        .into_response(),
    }
}

fn problems_response(status: StatusCode, code: &'static str, problems: &[Problem]) -> Response {
    let message = problems
        .iter()
        .map(|p| match p.line {
            Some(line) => format!("line {line}: {}", p.message),
            None => p.message.clone(),
        })
        .collect::<Vec<_>>()
        .join("; ");
    let body = serde_json::json!({ "error": code, "message": message, "problems": problems });
    (status, Json(body)).into_response()
}

/// Versions and approval requests are SQLite row ids: past `i64::MAX` there is none (and the
/// store could not even look one up).
const MAX_ID: u64 = i64::MAX as u64;

fn parse_version(v: &str) -> Result<u64, ApiError> {
    v.parse::<u64>()
        .ok()
        .filter(|v| *v <= MAX_ID)
        .ok_or_else(|| ApiError::not_found("no such version"))
}

fn reason(r: Option<String>) -> Result<String, ApiError> {
    match r {
        Some(r) if !r.trim().is_empty() && r.len() <= MAX_REASON => Ok(r),
        _ => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "reason_required",
            format!("give a reason (1 to {MAX_REASON} bytes)"),
        )),
    }
}

/// The tenant's versions and which is active.
#[utoipa::path(
    operation_id = "listPolicies",get, path = "/v1/tenants/{tenant}/policies", tag = "policies", params(("tenant" = String, Path, example = "acme")),
    responses((status = 200, description = "The versions", body = super::openapi::PolicyList), (status = 404, description = "A tenant the caller holds no role in, or policies not managed here", body = super::openapi::ErrorBody), super::openapi::Refusals))]
async fn list(
    State(st): State<Arc<AppState>>,
    Extension(conn): Extension<ConnInfo>,
    PathParams(tenant): PathParams<String>,
) -> Response {
    let mut rec = CallRecord::new(&conn);
    let result = async {
        let s = scoped(&st, &conn, &tenant, Permission::PolicyRead, &mut rec).await?;
        let (policies, t) = (s.policies, s.tenant);
        let (versions, (active, _)) =
            blocking(move || Ok::<_, StoreError>((policies.versions(&t)?, policies.active(&t)?)))
                .await?
                .map_err(store_error)?;
        Ok(Json(serde_json::json!({ "active": active, "versions": versions })).into_response())
    }
    .await;
    finish(&st, &rec, "policy.list", result)
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = PolicyUpload)]
struct UploadBody {
    /// The policy: the YAML the gateway reads for the tenant.
    #[schema(required = true)]
    document: Option<String>,
    /// At most 1024 bytes.
    #[schema(max_length = 1024)]
    comment: Option<String>,
}

/// Uploads a new version, checked with the gateway's own checks (problems with line numbers).
#[utoipa::path(
    operation_id = "uploadPolicy",post, path = "/v1/tenants/{tenant}/policies", tag = "policies", params(("tenant" = String, Path, example = "acme")),
    request_body = UploadBody,
    responses(
        (status = 201, description = "Stored", body = super::openapi::Uploaded),
        (status = 400, description = "The body is not valid, or the document fails the checks (`invalid_policy`: every problem)", body = super::openapi::PolicyProblems),
        (status = 408, description = "The body did not arrive in time", body = super::openapi::ErrorBody),
        (status = 413, description = "The body exceeds 64 KiB", body = super::openapi::ErrorBody),
        (status = 404, description = "A tenant the caller holds no role in, or policies not managed here", body = super::openapi::ErrorBody), super::openapi::Refusals))]
async fn upload(
    State(st): State<Arc<AppState>>,
    Extension(conn): Extension<ConnInfo>,
    PathParams(tenant): PathParams<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut rec = CallRecord::new(&conn);
    let result = async {
        // The body first: a caller refused later reads its answer, not a reset stream.
        let body: UploadBody = read_json(&headers, body, false).await?;
        let s = scoped(&st, &conn, &tenant, Permission::PolicyWrite, &mut rec).await?;
        let Some(document) = body.document else {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed_request",
                "give the policy as \"document\": the YAML text",
            ));
        };
        if body.comment.as_ref().is_some_and(|c| c.len() > MAX_REASON) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed_request",
                format!("the comment exceeds {MAX_REASON} bytes"),
            ));
        }
        let actor = rec.actor.clone();
        let (policies, t) = (s.policies, s.tenant);
        let stored = blocking(move || {
            policies.upload(
                &t,
                &document,
                &actor,
                body.comment.as_deref(),
                SystemTime::now(),
            )
        })
        .await?;
        Ok(match stored {
            Ok(version) => {
                rec.target = Some(format!("v{version}"));
                (
                    StatusCode::CREATED,
                    Json(serde_json::json!({ "version": version })),
                )
                    .into_response()
            }
            Err(e) => policy_error(e, StatusCode::BAD_REQUEST, "invalid_policy"),
        })
    }
    .await;
    finish(&st, &rec, "policy.upload", result)
}

/// One version's document.
#[utoipa::path(
    operation_id = "getPolicy",get, path = "/v1/tenants/{tenant}/policies/{version}", tag = "policies", params(("tenant" = String, Path, example = "acme"), ("version" = u64, Path, maximum = 9223372036854775807_i64, example = 1, description = "A version number")),
    responses((status = 200, description = "The document", body = super::openapi::PolicyDocument), (status = 404, description = "No such version, a tenant the caller holds no role in, or policies not managed here", body = super::openapi::ErrorBody), super::openapi::Refusals))]
async fn version(
    State(st): State<Arc<AppState>>,
    Extension(conn): Extension<ConnInfo>,
    PathParams((tenant, v)): PathParams<(String, String)>,
) -> Response {
    let mut rec = CallRecord::new(&conn);
    let result = async {
        let s = scoped(&st, &conn, &tenant, Permission::PolicyRead, &mut rec).await?;
        let v = parse_version(&v)?;
        rec.target = Some(format!("v{v}"));
        let (policies, t) = (s.policies, s.tenant);
        let text = blocking(move || policies.text(&t, v))
            .await?
            .map_err(store_error)?
            .ok_or_else(|| ApiError::not_found("no such version"))?;
        Ok(Json(serde_json::json!({ "version": v, "document": text })).into_response())
    }
    .await;
    finish(&st, &rec, "policy.get", result)
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct DiffQuery {
    /// A version number, or `active` (the default).
    against: Option<String>,
}

/// A unified diff of a version against another (the active one by default).
#[utoipa::path(
    operation_id = "diffPolicy",get, path = "/v1/tenants/{tenant}/policies/{version}/diff", tag = "policies", params(("tenant" = String, Path, example = "acme"), ("version" = u64, Path, maximum = 9223372036854775807_i64, example = 1, description = "A version number"), DiffQuery),
    responses((status = 200, description = "The diff", body = super::openapi::PolicyDiff),
        (status = 400, description = "`against` is not a version number or `active`", body = super::openapi::ErrorBody),
        (status = 404, description = "No such version, a tenant the caller holds no role in, or policies not managed here", body = super::openapi::ErrorBody), super::openapi::Refusals))]
async fn diff(
    State(st): State<Arc<AppState>>,
    Extension(conn): Extension<ConnInfo>,
    PathParams((tenant, v)): PathParams<(String, String)>,
    uri: Uri,
) -> Response {
    let mut rec = CallRecord::new(&conn);
    let result = async {
        let s = scoped(&st, &conn, &tenant, Permission::PolicyRead, &mut rec).await?;
        let v = parse_version(&v)?;
        let Ok(Query(query)) = Query::<DiffQuery>::try_from_uri(&uri) else {
            return Err(ApiError::invalid_query(
                "against: a version number or \"active\"",
            ));
        };
        let against =
            match query.against.as_deref() {
                None | Some("active") => None,
                Some(n) => Some(n.parse::<u64>().ok().filter(|n| *n <= MAX_ID).ok_or_else(
                    || ApiError::invalid_query("against: a version number or \"active\""),
                )?),
            };
        rec.target = Some(format!("v{v}"));
        let (policies, t) = (s.policies, s.tenant);
        let (from, old, new) = blocking(move || -> Result<_, StoreError> {
            let (from, old) = match against {
                None => policies.active(&t)?,
                Some(n) => (n, policies.text(&t, n)?.ok_or(StoreError::UnknownVersion)?),
            };
            let new = policies.text(&t, v)?.ok_or(StoreError::UnknownVersion)?;
            Ok((from, old, new))
        })
        .await?
        .map_err(store_error)?;
        // Compared as parsed: comments and layout aside, each side as the YAML it means.
        let (old, new) = (canonical(&old), canonical(&new));
        let diff = similar::TextDiff::from_lines(&old, &new)
            .unified_diff()
            .context_radius(3)
            .header(&format!("v{from}"), &format!("v{v}"))
            .to_string();
        Ok(Json(serde_json::json!({ "from": from, "to": v, "diff": diff })).into_response())
    }
    .await;
    finish(&st, &rec, "policy.diff", result)
}

/// A stored document re-written from its parsed form (every stored version parsed when it
/// was uploaded; the text itself if not).
fn canonical(text: &str) -> String {
    serde_yaml_ng::from_str::<serde_yaml_ng::Value>(text)
        .ok()
        .and_then(|v| serde_yaml_ng::to_string(&v).ok())
        .unwrap_or_else(|| text.to_owned())
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ImpactQuery {
    /// How far back to replay (`24h` by default, at most `30d`).
    window: Option<String>,
}

/// Replays the tenant's recorded traffic of a window against a version: which requests would
/// change decision.
#[utoipa::path(
    operation_id = "policyImpact",get, path = "/v1/tenants/{tenant}/policies/{version}/impact", tag = "policies", params(("tenant" = String, Path, example = "acme"), ("version" = u64, Path, maximum = 9223372036854775807_i64, example = 1, description = "A version number"), ImpactQuery),
    responses((status = 200, description = "The report", body = super::openapi::ImpactReport),
        (status = 400, description = "`window` is not a duration up to 30d", body = super::openapi::ErrorBody),
        (status = 409, description = "The version does not make a valid config with the others", body = super::openapi::PolicyProblems),
        (status = 503, description = "The recorded traffic could not be read", body = super::openapi::ErrorBody),
        (status = 404, description = "No such version, a tenant the caller holds no role in, or policies not managed here", body = super::openapi::ErrorBody), super::openapi::Refusals))]
async fn impact(
    State(st): State<Arc<AppState>>,
    Extension(conn): Extension<ConnInfo>,
    PathParams((tenant, v)): PathParams<(String, String)>,
    uri: Uri,
) -> Response {
    let mut rec = CallRecord::new(&conn);
    let result = async {
        let s = scoped(&st, &conn, &tenant, Permission::PolicyAnalyse, &mut rec).await?;
        let v = parse_version(&v)?;
        let Ok(Query(query)) = Query::<ImpactQuery>::try_from_uri(&uri) else {
            return Err(ApiError::invalid_query("window: a duration such as 24h"));
        };
        let window = match query.window.as_deref() {
            None => Duration::from_secs(24 * 3600),
            Some(w) => humantime::parse_duration(w)
                .ok()
                .filter(|w| *w <= MAX_WINDOW && !w.is_zero())
                .ok_or_else(|| ApiError::invalid_query("window: a duration up to 30d"))?,
        };
        rec.target = Some(format!("v{v}"));
        let (policies, t) = (s.policies, s.tenant);
        let report = blocking(move || policies.impact(&t, v, window, SystemTime::now())).await?;
        Ok(match report {
            Ok(report) => Json(report).into_response(),
            Err(e) => policy_error(e, StatusCode::CONFLICT, "policy_conflict"),
        })
    }
    .await;
    finish(&st, &rec, "policy.impact", result)
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ActivationRequest)]
struct ReasonBody {
    /// Why (1 to 1024 bytes): required.
    #[schema(required = true, min_length = 1, max_length = 1024)]
    reason: Option<String>,
}

/// Activates a version, or asks for a second person's approval when activation needs one.
#[utoipa::path(
    operation_id = "activatePolicy",post, path = "/v1/tenants/{tenant}/policies/{version}/activate", tag = "policies", params(("tenant" = String, Path, example = "acme"), ("version" = u64, Path, maximum = 9223372036854775807_i64, example = 1, description = "A version number")),
    request_body = ReasonBody,
    responses((status = 200, description = "Activated", body = super::openapi::Activation),
        (status = 202, description = "Waiting for approval", body = super::openapi::Activation),
        (status = 409, description = "The version does not make a valid config with the others", body = super::openapi::PolicyProblems),
        (status = 404, description = "No such version, a tenant the caller holds no role in, or policies not managed here", body = super::openapi::ErrorBody), super::openapi::BodyRefusals, super::openapi::Refusals))]
async fn activate(
    State(st): State<Arc<AppState>>,
    Extension(conn): Extension<ConnInfo>,
    PathParams((tenant, v)): PathParams<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut rec = CallRecord::new(&conn);
    let result = async {
        let body: ReasonBody = read_json(&headers, body, false).await?;
        let s = scoped(&st, &conn, &tenant, Permission::PolicyActivate, &mut rec).await?;
        let v = parse_version(&v)?;
        rec.target = Some(format!("v{v}"));
        let reason = reason(body.reason)?;
        let actor = rec.actor.clone();
        let (policies, t) = (s.policies, s.tenant.clone());
        let done =
            blocking(move || policies.activate(&t, v, &actor, &reason, SystemTime::now())).await?;
        Ok(match done {
            Ok(activation @ crate::policies::Activation::Activated { .. }) => {
                if let crate::policies::Activation::Activated { event } = &activation {
                    activated(
                        &st,
                        &s.tenant,
                        event.version,
                        &event.action,
                        &event.actor,
                        None,
                    );
                }
                (StatusCode::OK, Json(activation)).into_response()
            }
            Ok(pending) => (StatusCode::ACCEPTED, Json(pending)).into_response(),
            Err(e) => policy_error(e, StatusCode::CONFLICT, "policy_conflict"),
        })
    }
    .await;
    finish(&st, &rec, "policy.activate", result)
}

/// The tenant's approval requests.
#[utoipa::path(
    operation_id = "listApprovals",get, path = "/v1/tenants/{tenant}/approvals", tag = "policies", params(("tenant" = String, Path, example = "acme")),
    responses((status = 200, description = "The requests", body = super::openapi::ApprovalList), (status = 404, description = "A tenant the caller holds no role in, or policies not managed here", body = super::openapi::ErrorBody), super::openapi::Refusals))]
async fn approvals(
    State(st): State<Arc<AppState>>,
    Extension(conn): Extension<ConnInfo>,
    PathParams(tenant): PathParams<String>,
) -> Response {
    let mut rec = CallRecord::new(&conn);
    let result = async {
        let s = scoped(&st, &conn, &tenant, Permission::PolicyRead, &mut rec).await?;
        let (policies, t) = (s.policies, s.tenant);
        let list = blocking(move || policies.approvals(&t, SystemTime::now()))
            .await?
            .map_err(store_error)?;
        Ok(Json(serde_json::json!({ "approvals": list })).into_response())
    }
    .await;
    finish(&st, &rec, "policy.approvals", result)
}

/// Approves (activating the version) or rejects an approval request; never by who asked.
#[utoipa::path(
    operation_id = "decideApproval",post, path = "/v1/tenants/{tenant}/approvals/{id}/{decision}", tag = "policies",
    params(("tenant" = String, Path, example = "acme"), ("id" = u64, Path, maximum = 9223372036854775807_i64, description = "The approval request"),
        ("decision" = inline(super::openapi::Decision), Path)),
    responses((status = 200, description = "Decided", body = super::openapi::Approval),
        (status = 404, description = "No such request or decision, a tenant the caller holds no role in, or policies not managed here", body = super::openapi::ErrorBody),
        (status = 409, description = "The request is no longer pending, or the version no longer makes a valid config", body = super::openapi::PolicyProblems),
        super::openapi::Refusals))]
async fn decide(
    State(st): State<Arc<AppState>>,
    Extension(conn): Extension<ConnInfo>,
    PathParams((tenant, id, decision)): PathParams<(String, String, String)>,
) -> Response {
    let mut rec = CallRecord::new(&conn);
    let action = match decision.as_str() {
        "approve" => "policy.approve",
        "reject" => "policy.reject",
        _ => "policy.decide",
    };
    let result = async {
        let s = scoped(&st, &conn, &tenant, Permission::PolicyActivate, &mut rec).await?;
        let approve = match decision.as_str() {
            "approve" => true,
            "reject" => false,
            _ => return Err(ApiError::not_found("no such endpoint")),
        };
        let id = id
            .parse::<u64>()
            .ok()
            .filter(|id| *id <= MAX_ID)
            .ok_or_else(|| ApiError::not_found("no such approval request"))?;
        rec.target = Some(format!("approval {id}"));
        let (actor, st2) = (rec.actor.clone(), Arc::clone(&st));
        let (policies, t) = (s.policies, s.tenant.clone());
        let done = blocking(move || {
            policies.decide(&t, id, &actor, &st2.persons, approve, SystemTime::now())
        })
        .await?;
        Ok(match done {
            Ok(approval) => {
                if approval.status == crate::policies::ApprovalStatus::Approved {
                    let approver = approval.decided_by.as_deref().unwrap_or_default();
                    let id = Some(approval.id);
                    activated(&st, &s.tenant, approval.version, "approved", approver, id);
                }
                Json(approval).into_response()
            }
            Err(e) => policy_error(e, StatusCode::CONFLICT, "policy_conflict"),
        })
    }
    .await;
    finish(&st, &rec, action, result)
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = RollbackRequest)]
struct RollbackBody {
    /// Why (1 to 1024 bytes): required.
    #[schema(required = true, min_length = 1, max_length = 1024)]
    reason: Option<String>,
    /// The version to go back to (default: the one active before).
    to_version: Option<u64>,
}

/// Activates an earlier version again.
#[utoipa::path(
    operation_id = "rollbackPolicy",post, path = "/v1/tenants/{tenant}/policies/rollback", tag = "policies", params(("tenant" = String, Path, example = "acme")),
    request_body = RollbackBody,
    responses((status = 200, description = "Rolled back", body = super::openapi::HistoryEvent),
        (status = 404, description = "No version to go back to, a tenant the caller holds no role in, or policies not managed here", body = super::openapi::ErrorBody),
        (status = 409, description = "That version does not make a valid config with the others", body = super::openapi::PolicyProblems),
        super::openapi::BodyRefusals, super::openapi::Refusals))]
async fn rollback(
    State(st): State<Arc<AppState>>,
    Extension(conn): Extension<ConnInfo>,
    PathParams(tenant): PathParams<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut rec = CallRecord::new(&conn);
    let result = async {
        let body: RollbackBody = read_json(&headers, body, false).await?;
        let s = scoped(&st, &conn, &tenant, Permission::PolicyActivate, &mut rec).await?;
        let reason = reason(body.reason)?;
        if body.to_version.is_some_and(|v| v > MAX_ID) {
            return Err(ApiError::not_found("no such version"));
        }
        let actor = rec.actor.clone();
        let (policies, t) = (s.policies, s.tenant.clone());
        let done = blocking(move || {
            policies.rollback(&t, body.to_version, &actor, &reason, SystemTime::now())
        })
        .await?;
        Ok(match done {
            Ok(event) => {
                activated(
                    &st,
                    &s.tenant,
                    event.version,
                    &event.action,
                    &event.actor,
                    None,
                );
                rec.target = Some(format!("v{}", event.version));
                Json(event).into_response()
            }
            Err(e) => policy_error(e, StatusCode::CONFLICT, "policy_conflict"),
        })
    }
    .await;
    finish(&st, &rec, "policy.rollback", result)
}

/// Who changed the tenant's policy, when and why.
#[utoipa::path(
    operation_id = "policyHistory",get, path = "/v1/tenants/{tenant}/policies/history", tag = "policies", params(("tenant" = String, Path, example = "acme")),
    responses((status = 200, description = "Oldest first", body = super::openapi::History), (status = 404, description = "A tenant the caller holds no role in, or policies not managed here", body = super::openapi::ErrorBody), super::openapi::Refusals))]
async fn history(
    State(st): State<Arc<AppState>>,
    Extension(conn): Extension<ConnInfo>,
    PathParams(tenant): PathParams<String>,
) -> Response {
    let mut rec = CallRecord::new(&conn);
    let result = async {
        let s = scoped(&st, &conn, &tenant, Permission::PolicyRead, &mut rec).await?;
        let (policies, t) = (s.policies, s.tenant);
        let events = blocking(move || policies.history(&t))
            .await?
            .map_err(store_error)?;
        Ok(Json(serde_json::json!({ "history": events })).into_response())
    }
    .await;
    finish(&st, &rec, "policy.history", result)
}

/// `GET /v1/policies/bundle`: every tenant's active version, signed, for the gateways listed in
/// `policies.gateways` (and platform roles). With `If-None-Match: "SERIAL"` naming the current
/// serial the answer is 304, unrecorded: gateways poll, and only a change is worth a record.
#[utoipa::path(
    operation_id = "getPolicyBundle",get, path = "/v1/policies/bundle", tag = "policies",
    params(("If-None-Match" = Option<String>, Header, description = "The serial held, quoted")),
    responses((status = 200, description = "The signed bundle", body = Object),
        (status = 304, description = "The serial held is current"),
        (status = 404, description = "Policies not managed here", body = super::openapi::ErrorBody),
        super::openapi::Refusals),
    security(("mtls" = []))
)]
async fn bundle(
    State(st): State<Arc<AppState>>,
    Extension(conn): Extension<ConnInfo>,
    headers: HeaderMap,
) -> Response {
    let mut rec = CallRecord::new(&conn);
    let result = async {
        if conn.person.is_some() {
            return Err(ApiError::forbidden(
                "the policy bundle is served to gateways, by their client certificate",
            ));
        }
        let peer = conn.peer.as_ref().ok_or_else(ApiError::unauthenticated)?;
        let record = super::caller_record(&st, peer).await?;
        let policies = st
            .policies
            .clone()
            .ok_or_else(|| ApiError::not_found("policies are not managed by this server"))?;
        let listed = peer
            .spiffe_id
            .as_ref()
            .is_some_and(|id| policies.gateways.iter().any(|p| p.matches(id)));
        let role = st
            .roles_of(peer, &record)
            .platform_role_for(Permission::PolicyRead);
        if !listed && role.is_none() {
            return Err(ApiError::forbidden(
                "only the gateways listed in policies.gateways and platform roles may fetch the bundle",
            ));
        }
        rec.role = role.map(Role::as_str);
        let known = headers
            .get(axum::http::header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim_matches('"').to_owned());
        let signed = blocking(move || -> Result<Option<_>, String> {
            let serial = policies.serial().map_err(|e| e.to_string())?;
            if known.as_deref() == Some(serial.to_string().as_str()) {
                return Ok(None);
            }
            policies.bundle(SystemTime::now()).map(Some)
        })
        .await?
        .map_err(|e| {
            tracing::error!(error = %e, "admin API: policy bundle failed");
            ApiError::internal()
        })?;
        Ok(match signed {
            None => StatusCode::NOT_MODIFIED.into_response(),
            Some(bundle) => Json(bundle).into_response(),
        })
    }
    .await;
    match result {
        Ok(r) if r.status() == StatusCode::NOT_MODIFIED => r,
        other => finish(&st, &rec, "policy.bundle", other),
    }
}

/// Tells the tenant's `policy.activated` subscribers that `version` became active: `change` is
/// `activated`, `approved` (the approval request `approval`) or `rolled_back`.
fn activated(
    st: &AppState,
    tenant: &TenantId,
    version: u64,
    change: &str,
    actor: &str,
    approval: Option<u64>,
) {
    if let Some(webhooks) = &st.webhooks {
        let data = serde_json::json!({
            "version": version,
            "change": change,
            "actor": actor,
            "approval": approval,
        });
        webhooks.emit(tenant, "policy.activated", None, data);
    }
}
