//! Issuances waiting for approval: the requester polls `GET /v1/certificates/pending/{id}`
//! with its pickup secret; people and operators with `CertificateApprove` on the tenant list
//! them and approve or reject them under `/v1/tenants/{tenant}/certificates/pending`. An
//! approval signs the certificate then (its lifetime starts at approval); the requester may
//! not approve or reject its own request; an expired request can no longer be decided.

use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Body;
use axum::extract::State;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use portcullis_ca::{CaError, IssueRequest, TenantId};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::issue::{ca_error, waiting_body};
use super::{
    blocking, finish, read_json, scoped_tenant, ApiError, AppState, CallRecord, PathParams,
};
use crate::identity::ConnInfo;
use crate::pending::{
    Decision, NotClaimed, PendingId, PendingRecord, PendingState, PendingStore, CLAIM_TIMEOUT,
};
use crate::roles::Permission;

pub(super) fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(poll))
        .routes(routes!(list))
        .routes(routes!(approve))
        .routes(routes!(reject))
}

/// The same answer for an unknown request and a wrong secret.
fn no_such_request() -> ApiError {
    ApiError::not_found("no such pending request")
}

fn store_failed(e: crate::AdminError) -> ApiError {
    tracing::error!(error = %e, "admin API: pending store failed");
    ApiError::internal()
}

fn not_claimed(why: NotClaimed) -> ApiError {
    match why {
        NotClaimed::Unknown => no_such_request(),
        NotClaimed::Expired => ApiError::new(
            StatusCode::CONFLICT,
            "expired",
            "the request expired before it was decided",
        ),
        NotClaimed::Decided => ApiError::new(
            StatusCode::CONFLICT,
            "already_decided",
            "the request has already been approved or rejected",
        ),
    }
}

/// The pickup secret of an `Authorization: Bearer` header; two such headers are refused (which
/// one counts would be a parser's choice).
fn pickup_secret(headers: &HeaderMap) -> Result<&str, ApiError> {
    if headers.get_all(AUTHORIZATION).iter().nth(1).is_some() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "ambiguous_credentials",
            "present the pickup secret in one Authorization header",
        ));
    }
    headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, secret) = v.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then_some(secret.trim())
        })
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "present the request's pickup secret as a bearer token",
            )
        })
}

/// Where a request for a certificate stands, for its requester (the pickup secret as bearer):
/// waiting, the certificate, rejected or expired.
#[utoipa::path(
    operation_id = "pollPendingCertificate",
    get,
    path = "/v1/certificates/pending/{id}",
    tag = "certificates",
    params(("id" = String, Path, description = "The request's id, from the 202 of POST /v1/certificates")),
    responses(
        (status = 200, description = "Approved: the certificate", body = super::openapi::Issued),
        (status = 202, description = "Still waiting", body = super::openapi::PendingIssuance),
        (status = 400, description = "A path parameter that does not decode, or two Authorization headers", body = super::openapi::ErrorBody),
        (status = 401, description = "No bearer pickup secret", body = super::openapi::ErrorBody),
        (status = 403, description = "Rejected (`issuance_rejected`, with the approver's reason)", body = super::openapi::ErrorBody),
        (status = 404, description = "No such request, or not its pickup secret", body = super::openapi::ErrorBody),
        (status = 410, description = "Expired before anyone decided", body = super::openapi::ErrorBody),
        (status = 429, description = "Over a rate limit", body = super::openapi::ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn poll(
    State(st): State<Arc<AppState>>,
    Extension(conn): Extension<ConnInfo>,
    PathParams(id): PathParams<String>,
    headers: HeaderMap,
) -> Response {
    let mut rec = CallRecord::new(&conn);
    let result = async {
        let secret = pickup_secret(&headers)?.to_owned();
        let (Some(store), Some(id)) = (st.pending.clone(), PendingId::parse(&id)) else {
            return Err(no_such_request());
        };
        rec.actor = format!("pickup:{id}");
        rec.target = Some(format!("pending:{id}"));
        let found = blocking(move || store.for_pickup(&id, &secret, SystemTime::now()))
            .await?
            .map_err(store_failed)?;
        let record = found.ok_or_else(no_such_request)?;
        rec.tenant = Some(record.tenant.clone());
        poll_answer(record)
    }
    .await;
    finish(&st, &rec, "certificate.pending.poll", result)
}

fn poll_answer(record: PendingRecord) -> Result<Response, ApiError> {
    match record.state {
        PendingState::Pending | PendingState::Approving => Ok((
            StatusCode::ACCEPTED,
            Json(waiting_body(&record.id, record.expires_at, None)),
        )
            .into_response()),
        PendingState::Approved => {
            let body = record.response.ok_or_else(|| {
                tracing::error!(pending.id = %record.id, "admin API: approved request without its certificate");
                ApiError::internal()
            })?;
            let mut response = (StatusCode::OK, body).into_response();
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            Ok(response)
        }
        PendingState::Rejected => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "issuance_rejected",
            format!(
                "the request was rejected: {}",
                record.reason.as_deref().unwrap_or("(no reason)")
            ),
        )),
        PendingState::Expired => Err(ApiError::new(
            StatusCode::GONE,
            "expired",
            "the request expired before it was approved",
        )),
    }
}

/// The tenant's requests waiting for approval, and those decided or expired lately.
#[utoipa::path(
    operation_id = "listPendingCertificates",
    get,
    path = "/v1/tenants/{tenant}/certificates/pending",
    tag = "certificates",
    params(("tenant" = String, Path, example = "acme")),
    responses(
        (status = 200, description = "The requests, newest first", body = super::openapi::PendingList),
        (status = 400, description = "A path parameter that does not decode", body = super::openapi::ErrorBody),
        (status = 404, description = "A tenant the caller holds no role in", body = super::openapi::ErrorBody),
        super::openapi::Refusals,
    )
)]
async fn list(
    State(st): State<Arc<AppState>>,
    Extension(conn): Extension<ConnInfo>,
    PathParams(tenant): PathParams<String>,
) -> Response {
    let mut rec = CallRecord::new(&conn);
    let result = async {
        let tenant =
            scoped_tenant(&st, &conn, &tenant, Permission::CertificateRead, &mut rec).await?;
        let list = match st.pending.clone() {
            None => Vec::new(),
            Some(store) => blocking(move || store.list(&tenant, SystemTime::now()))
                .await?
                .map_err(store_failed)?,
        };
        Ok(Json(serde_json::json!({ "pending": list })).into_response())
    }
    .await;
    finish(&st, &rec, "certificate.pending.list", result)
}

/// The store and request a decision is about, once the caller may decide in the tenant.
async fn decision_target(
    st: &Arc<AppState>,
    conn: &ConnInfo,
    tenant: &str,
    id: &str,
    rec: &mut CallRecord,
) -> Result<(TenantId, Arc<dyn PendingStore>, PendingId), ApiError> {
    let tenant = scoped_tenant(st, conn, tenant, Permission::CertificateApprove, rec).await?;
    let (Some(store), Some(id)) = (st.pending.clone(), PendingId::parse(id)) else {
        return Err(no_such_request());
    };
    rec.target = Some(format!("pending:{id}"));
    Ok((tenant, store, id))
}

/// Refuses a decision by the requester itself (under any of its identities in `persons:`),
/// and one on a request no longer pending.
fn check_decider(
    st: &AppState,
    store: &dyn PendingStore,
    tenant: &TenantId,
    id: &PendingId,
    actor: &str,
) -> Result<(), ApiError> {
    let requested_by = store
        .requested_by(tenant, id, SystemTime::now())
        .map_err(store_failed)?
        .map_err(not_claimed)?;
    if requested_by.iter().any(|r| st.persons.same(r, actor)) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "self_approval",
            "a request is decided by someone else than its requester (and than the creator of \
             the bootstrap token it came with), under any of their identities",
        ));
    }
    Ok(())
}

/// Approves a request: the CA signs the certificate now (its lifetime starts now), and the
/// requester picks it up with its secret. Of concurrent approvals one signs; the others are
/// 409.
#[utoipa::path(
    operation_id = "approvePendingCertificate",
    post,
    path = "/v1/tenants/{tenant}/certificates/pending/{id}/approve",
    tag = "certificates",
    params(("tenant" = String, Path, example = "acme"), ("id" = String, Path, description = "The request's id")),
    responses(
        (status = 200, description = "Approved and issued: the certificate", body = super::openapi::Issued),
        (status = 400, description = "A path parameter that does not decode, or the CA now refuses the request (the request is then rejected)", body = super::openapi::ErrorBody),
        (status = 404, description = "No such request, or a tenant the caller holds no role in", body = super::openapi::ErrorBody),
        (status = 409, description = "Expired, or already decided", body = super::openapi::ErrorBody),
        (status = 503, description = "The CA's key backend is unavailable (the request stays pending), or the certificate was signed but the answer could not be recorded (the request can be approved again once the claim is abandoned, after 60 s)", body = super::openapi::ErrorBody),
        super::openapi::Refusals,
    )
)]
async fn approve(
    State(st): State<Arc<AppState>>,
    Extension(conn): Extension<ConnInfo>,
    PathParams((tenant, id)): PathParams<(String, String)>,
) -> Response {
    let mut rec = CallRecord::new(&conn);
    let result = async {
        let (tenant, store, id) = decision_target(&st, &conn, &tenant, &id, &mut rec).await?;
        let (st2, actor) = (Arc::clone(&st), rec.actor.clone());
        blocking(move || approve_blocking(&st2, &*store, &tenant, &id, &actor)).await?
    }
    .await;
    finish(&st, &rec, "certificate.approve", result)
}

fn approve_blocking(
    st: &AppState,
    store: &dyn PendingStore,
    tenant: &TenantId,
    id: &PendingId,
    actor: &str,
) -> Result<Response, ApiError> {
    check_decider(st, store, tenant, id, actor)?;
    let now = SystemTime::now();
    let claimed = store
        .claim(tenant, id, actor, now)
        .map_err(store_failed)?
        .map_err(not_claimed)?;
    let claim = Decision {
        tenant,
        id,
        by: actor,
        now,
    };
    let request = IssueRequest {
        csr: &claimed.csr,
        tenant: claimed.tenant.clone(),
        profile: Some(&claimed.profile),
        lifetime: claimed.lifetime,
        requester: claimed.requester.clone(),
    };
    match st.ca.issue(&request, now) {
        Ok(issued) => {
            st.stats.issued();
            let body = super::issue::issue_response(issued);
            let text = serde_json::to_string(&body).map_err(|e| {
                tracing::error!(error = %e, "admin API: issued certificate not serialisable");
                ApiError::internal()
            })?;
            let serial = body.serial.to_string();
            // Signed, but when the answer is not recorded as the requester's, the request is
            // pending again once the claim is abandoned, and this certificate is never handed out.
            let detail = match store.approved(claim, &serial, &text) {
                Ok(true) => {
                    tracing::info!(pending.id = %id, ca.serial = %serial, admin.approver = actor, "pending issuance approved");
                    return Ok((StatusCode::OK, Json(body)).into_response());
                }
                Ok(false) => "the claim was abandoned and taken over meanwhile".to_owned(),
                Err(e) => e.to_string(),
            };
            tracing::error!(
                pending.id = %id, ca.serial = %serial, error = %detail,
                "pending issuance signed but its answer not recorded: the certificate is never \
                 handed out (revoke it if wanted); the request can be approved again after the \
                 claim timeout"
            );
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                format!(
                    "the certificate was signed but the answer could not be recorded; the \
                     request can be approved again in {} s",
                    CLAIM_TIMEOUT.as_secs()
                ),
            ))
        }
        Err(CaError::Refused(refusal)) => {
            // The profile changed since the request was checked: it will never be issued.
            let reason = format!("refused by the CA: {refusal}");
            if let Err(e) = store.reject(tenant, id, actor, &reason, now, true) {
                tracing::error!(error = %e, "admin API: pending store failed");
            }
            Err(ca_error(st, CaError::Refused(refusal)))
        }
        Err(e) => {
            if let Err(e) = store.release(claim) {
                tracing::error!(error = %e, "admin API: pending store failed");
            }
            Err(ca_error(st, e))
        }
    }
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = RejectRequest)]
struct RejectBody {
    /// Why, for the requester (shown when it polls). Required, at most 500 characters, no NUL.
    reason: String,
}

/// Rejects a request; the requester's poll then answers 403 with the reason.
#[utoipa::path(
    operation_id = "rejectPendingCertificate",
    post,
    path = "/v1/tenants/{tenant}/certificates/pending/{id}/reject",
    tag = "certificates",
    params(("tenant" = String, Path, example = "acme"), ("id" = String, Path, description = "The request's id")),
    request_body = RejectBody,
    responses(
        (status = 200, description = "Rejected", body = super::openapi::PendingRequest),
        (status = 404, description = "No such request, or a tenant the caller holds no role in", body = super::openapi::ErrorBody),
        (status = 409, description = "Expired, or already decided", body = super::openapi::ErrorBody),
        super::openapi::BodyRefusals,
        super::openapi::Refusals,
    )
)]
async fn reject(
    State(st): State<Arc<AppState>>,
    Extension(conn): Extension<ConnInfo>,
    PathParams((tenant, id)): PathParams<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut rec = CallRecord::new(&conn);
    let result = async {
        let body: RejectBody = read_json(&headers, body, false).await?;
        let reason = body.reason.trim().to_owned();
        // No NUL: PostgreSQL text holds none, and the reason is the same on every store.
        if reason.is_empty() || reason.chars().count() > 500 || reason.contains('\0') {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed_request",
                "reason: required, at most 500 characters, without NUL",
            ));
        }
        let (tenant, store, id) = decision_target(&st, &conn, &tenant, &id, &mut rec).await?;
        let (st2, actor) = (Arc::clone(&st), rec.actor.clone());
        let record = blocking(move || -> Result<PendingRecord, ApiError> {
            check_decider(&st2, &*store, &tenant, &id, &actor)?;
            let now = SystemTime::now();
            store
                .reject(&tenant, &id, &actor, &reason, now, false)
                .map_err(store_failed)?
                .map_err(not_claimed)?;
            store
                .get(&tenant, &id, now)
                .map_err(store_failed)?
                .ok_or_else(no_such_request)
        })
        .await??;
        Ok(Json(record).into_response())
    }
    .await;
    finish(&st, &rec, "certificate.reject", result)
}
