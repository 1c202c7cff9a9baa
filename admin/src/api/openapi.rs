//! The OpenAPI 3.1 document of the admin API, `GET /v1/openapi.json`: generated from the
//! handlers' `#[utoipa::path]` attributes and the routes they are mounted on (one list, so
//! the document cannot name a route the server does not have). Bodies built from types of
//! other crates or the stores are described by the mirror schemas here; the schemathesis test
//! (`admin/tests/openapi.rs`) checks every answer of the live server against them.

use std::sync::{Arc, OnceLock};

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use super::{caller, finish, AppState, CallRecord};
use crate::identity::ConnInfo;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Portcullis admin API",
        description = "Certificates, bootstrap tokens, tenants' policy versions, approvals, \
                       reports and webhooks. Callers authenticate with a client certificate \
                       from this CA (mTLS) or a person's bearer token from a configured \
                       identity provider; what they may do is decided by their roles per tenant. \
                       A tenant the caller holds no role in answers 404. Every error body is \
                       `{\"error\": CODE, \"message\": TEXT}`."
    ),
    modifiers(&Security),
    security(("mtls" = []), ("bearer" = [])),
    tags(
        (name = "certificates", description = "Issuance, inventory, revocation, CRL"),
        (name = "tokens", description = "Bootstrap tokens of a tenant"),
        (name = "policies", description = "Policy versions, impact, activation, approvals"),
        (name = "reports", description = "Access, certificate, change and audit reports"),
        (name = "webhooks", description = "Subscriptions and deliveries"),
        (name = "meta", description = "This document"),
    )
)]
struct ApiDoc;

/// The two ways to authenticate.
struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "mtls",
            SecurityScheme::MutualTls {
                description: Some(
                    "A client certificate issued by this CA, valid in its inventory".to_owned(),
                ),
                extensions: None,
            },
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The document: the routes' paths over [`ApiDoc`]'s header, made once.
pub(crate) fn document() -> &'static [u8] {
    static DOCUMENT: OnceLock<Vec<u8>> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let (_, doc) = super::documented_routes().split_for_parts();
        // Serialising a document of plain strings and maps cannot fail.
        doc.to_json().map(String::into_bytes).unwrap_or_default()
    })
}

pub(super) fn base() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// `GET /v1/openapi.json`, to any authenticated caller.
#[utoipa::path(
    operation_id = "getOpenApi",
    get,
    path = "/v1/openapi.json",
    tag = "meta",
    responses(
        (status = 200, description = "This document (OpenAPI 3.1)", content_type = "application/json", body = Object),
        (status = 401, description = "No credential, or a bearer token that is not valid", body = ErrorBody),
        (status = 403, description = "The client certificate is unknown, revoked or expired", body = ErrorBody),
        (status = 429, description = "Over a rate limit", body = ErrorBody),
    )
)]
pub(super) async fn openapi(
    State(st): State<Arc<AppState>>,
    Extension(conn): Extension<ConnInfo>,
) -> Response {
    let rec = CallRecord::new(&conn);
    let result = async {
        caller(&st, &conn).await?;
        Ok(([(CONTENT_TYPE, "application/json")], document()).into_response())
    }
    .await;
    finish(&st, &rec, "openapi.get", result)
}

// Mirror schemas of bodies whose types live in other crates or in the stores, and of path
// segments the handlers match by hand.

/// The reports of `/v1/tenants/{tenant}/reports/{kind}`.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub(super) enum ReportKind {
    Access,
    Certificates,
    Changes,
    Audit,
}

/// What `/v1/tenants/{tenant}/approvals/{id}/{decision}` decides.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub(super) enum Decision {
    Approve,
    Reject,
}

/// Every error answer.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct ErrorBody {
    /// A stable, machine-readable code.
    error: String,
    /// For humans; never internal detail.
    message: String,
}

/// A policy document refused by the checks: every problem, with its line when known.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct PolicyProblems {
    error: String,
    /// The problems, joined.
    message: String,
    /// Every problem, when the document fails the checks (`invalid_policy`,
    /// `policy_conflict`).
    problems: Option<Vec<PolicyProblem>>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct PolicyProblem {
    line: Option<u64>,
    column: Option<u64>,
    message: String,
}

/// `POST /v1/certificates`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct IssuanceRequest {
    /// A PKCS#10 request, PEM.
    csr: String,
    /// The profile to issue under (the tenant's only one by default).
    profile: Option<String>,
    /// A duration such as `30m`, at most the profile's maximum.
    lifetime: Option<String>,
    /// Node agents only: the tenant the workload's certificate belongs to.
    tenant: Option<String>,
}

/// An issued certificate.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct Issued {
    serial: String,
    /// PEM.
    certificate: String,
    /// The certificate followed by the issuing intermediate, PEM.
    chain: String,
    not_before: String,
    not_after: String,
    spiffe_id: Option<String>,
    dns_names: Vec<String>,
    tenant: String,
    profile: String,
}

/// A first issuance that waits for approval (`202`): poll `poll` with the pickup secret.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct PendingIssuance {
    /// The request's id.
    pending: String,
    /// When it expires unapproved (RFC 3339).
    expires_at: String,
    /// Where to poll: `GET` with `Authorization: Bearer <pickup_secret>`.
    poll: String,
    /// Shown in the `202` of `POST /v1/certificates` only.
    pickup_secret: Option<String>,
}

/// A request waiting for (or past) approval, as approvers see it.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct PendingRequest {
    id: String,
    tenant: String,
    profile: String,
    /// `pending`, `approving`, `approved`, `rejected` or `expired`.
    state: String,
    /// Who asked (`token:ID`, an agent's SPIFFE ID).
    requested_by: String,
    spiffe_id: Option<String>,
    dns_names: Vec<String>,
    created_at: String,
    expires_at: String,
    decided_by: Option<String>,
    reason: Option<String>,
    serial: Option<String>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct PendingList {
    pending: Vec<PendingRequest>,
}

/// A certificate as the inventory holds it.
#[derive(ToSchema, serde::Serialize)]
#[allow(dead_code)]
pub(super) struct Certificate {
    serial: String,
    subject: String,
    /// `URI:…`, `DNS:…`, `IP:…`.
    sans: Vec<String>,
    tenant: String,
    profile: String,
    requester: String,
    not_before: String,
    not_after: String,
    #[schema(pattern = "^(valid|revoked|expired)$")]
    status: String,
    revoked_at: Option<String>,
    revocation_reason: Option<String>,
    renewed_from: Option<String>,
    /// The region whose CA issued it (`ca init --region`).
    region: Option<String>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct CertificateList {
    certificates: Vec<Certificate>,
}

/// The certificate named, as it now stands, and every serial the call revoked.
#[derive(ToSchema, serde::Serialize)]
#[allow(dead_code)]
pub(super) struct Revoked {
    #[schema(inline)]
    #[serde(flatten)]
    certificate: Certificate,
    revoked: Vec<String>,
}

/// A bootstrap token, its secret shown this once.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct TokenCreated {
    token: String,
    id: String,
    spiffe_id: Option<String>,
    expires_at: String,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct TokenInfo {
    id: String,
    spiffe_id: Option<String>,
    created_at: String,
    expires_at: String,
    #[schema(pattern = "^(unused|used|expired)$")]
    status: String,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct TokenList {
    tokens: Vec<TokenInfo>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct VersionInfo {
    version: u64,
    sha256: String,
    author: String,
    created_at: String,
    comment: Option<String>,
    active: bool,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct PolicyList {
    /// The active version (0: none yet).
    active: u64,
    versions: Vec<VersionInfo>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct Uploaded {
    version: u64,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct PolicyDocument {
    version: u64,
    /// The YAML text as uploaded.
    document: String,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct PolicyDiff {
    from: u64,
    to: u64,
    /// A unified diff of the two documents as parsed.
    diff: String,
}

/// What replaying a window of recorded traffic against a version found.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct ImpactReport {
    since: String,
    until: String,
    requests: u64,
    unchanged: u64,
    allowed_to_denied: u64,
    denied_to_allowed: u64,
    rule_changed: u64,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct HistoryEvent {
    id: u64,
    /// `uploaded`, `activated`, `rolled_back`, `approval_requested`, `approved`, `rejected`.
    action: String,
    version: u64,
    actor: String,
    at: String,
    reason: Option<String>,
    approval: Option<u64>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct History {
    history: Vec<HistoryEvent>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct Approval {
    id: u64,
    version: u64,
    requester: String,
    reason: String,
    requested_at: String,
    expires_at: String,
    #[schema(pattern = "^(pending|approved|rejected|expired)$")]
    status: String,
    decided_by: Option<String>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct ApprovalList {
    approvals: Vec<Approval>,
}

/// `activated` with the event, or `pending_approval` with the request waiting for a second
/// person.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct Activation {
    #[schema(pattern = "^(activated|pending_approval)$")]
    status: String,
    event: Option<HistoryEvent>,
    approval: Option<Approval>,
}

#[derive(ToSchema, serde::Serialize)]
#[allow(dead_code)]
pub(super) struct Webhook {
    id: String,
    url: String,
    events: Vec<String>,
    description: Option<String>,
    created_by: String,
    created_at: String,
}

/// A new subscription, its signing secret shown this once.
#[derive(ToSchema, serde::Serialize)]
#[allow(dead_code)]
pub(super) struct WebhookCreated {
    #[schema(inline)]
    #[serde(flatten)]
    webhook: Webhook,
    /// `whsec_…`, for the Standard Webhooks signature.
    secret: String,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct WebhookList {
    webhooks: Vec<Webhook>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct Delivery {
    id: String,
    subscription: String,
    event_type: String,
    #[schema(pattern = "^(pending|delivered|dead)$")]
    status: String,
    attempts: u32,
    last_error: Option<String>,
    created_at: String,
    /// The event as sent.
    #[schema(value_type = Object)]
    payload: (),
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct DeliveryList {
    deliveries: Vec<Delivery>,
}

/// The refusals any authenticated call may meet before its handler decides.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub(super) enum Refusals {
    /// No credential, or a bearer token that is not valid.
    #[response(status = 401)]
    Unauthenticated(ErrorBody),
    /// The client certificate is unknown, revoked or expired, or the caller's role does not
    /// allow this.
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// Over a rate limit (`Retry-After` says when to come back).
    #[response(status = 429)]
    RateLimited(ErrorBody),
}

/// The refusals of a call with a JSON body.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub(super) enum BodyRefusals {
    /// The body is not the JSON document described, or a field is not valid.
    #[response(status = 400)]
    Malformed(ErrorBody),
    /// The body did not arrive in time.
    #[response(status = 408)]
    Timeout(ErrorBody),
    /// The body exceeds 64 KiB.
    #[response(status = 413)]
    TooLarge(ErrorBody),
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_document_is_openapi_3_1_and_names_the_bundle_path_gateways_fetch() {
        let doc: serde_json::Value = serde_json::from_slice(super::document()).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        // Routes are mounted on the paths the attributes name: this one must stay the
        // identity crate's, which gateways fetch.
        let bundle = &doc["paths"][portcullis_identity::POLICY_BUNDLE_PATH]["get"];
        assert!(bundle.is_object(), "{doc}");
        assert_eq!(
            doc["paths"]["/v1/crl"]["get"]["security"],
            serde_json::json!([{}])
        );
        let mut ids: Vec<&str> = doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|p| p.as_object().unwrap().values())
            .map(|op| op["operationId"].as_str().unwrap())
            .collect();
        let all = ids.len();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), all, "operation ids must be unique");
    }
}
