//! The HTTP API: routes, authentication and authorisation, the issuance, revocation, CRL and
//! inventory endpoints, fixed public error bodies, and the audit record of every call.

mod approvals;
mod errors;
mod inventory;
mod issue;
mod openapi;
mod policies;
mod reports;
mod tokens;
mod webhooks;

use std::collections::HashSet;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::CONTENT_LENGTH;
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use portcullis_audit::{AdminAction, AuditEvent, AuditHandle};
use portcullis_ca::{Ca, CertRecord, CertStatus};
use serde::de::DeserializeOwned;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::identity::{ConnInfo, PeerIdentity};
use crate::limits::RequestLimits;
use crate::roles::{Caller, Permission, Role, RoleBinding};
use crate::stats::IssuanceStats;
use crate::tls::ClientTrust;
use crate::token::TokenStore;
pub(crate) use errors::ApiError;

/// Largest request body accepted.
pub(crate) const MAX_BODY: usize = 64 * 1024;
/// Bodies up to this size are read (and discarded) before answering 413.
const MAX_DRAIN: usize = 1024 * 1024;
/// A request body must arrive within this.
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What every handler shares.
pub(crate) struct AppState {
    /// The CA, recording its issuances, refusals and revocations in the audit log itself.
    pub(crate) ca: Arc<Ca>,
    pub(crate) tokens: Arc<dyn TokenStore>,
    pub(crate) operators: HashSet<String>,
    /// Node agents and the SPIFFE IDs they may obtain SVIDs for.
    pub(crate) agents: crate::config::Agents,
    /// Where the record of every call goes.
    pub(crate) audit: Option<AuditHandle>,
    pub(crate) stats: Arc<IssuanceStats>,
    /// Request rates per source, identity and bootstrap token, charged before routing.
    pub(crate) limits: RequestLimits,
    pub(crate) trust: Arc<ClientTrust>,
    /// A revocation was recorded but its CRL could not be published: publish again.
    pub(crate) crl_dirty: AtomicBool,
    /// The ACME server, when enabled.
    pub(crate) acme: Option<Arc<crate::acme::AcmeService>>,
    /// Who holds which role (`roles:`).
    pub(crate) roles: Vec<RoleBinding>,
    /// Tenants' policy versions, when `policies:` is configured.
    pub(crate) policies: Option<Arc<crate::policies::Policies>>,
    /// Identity providers whose tokens identify people (`identity_providers:`).
    pub(crate) people: Option<Arc<crate::people::Providers>>,
    /// Writes by people need a second factor in their token.
    pub(crate) mfa_for_writes: bool,
    /// Which identities are one person (`persons:`), for separation of duties.
    pub(crate) persons: crate::persons::Persons,
    /// Tenants' webhooks, when `webhooks:` is configured.
    pub(crate) webhooks: Option<Arc<crate::webhooks::Webhooks>>,
    /// First issuances waiting for approval, when a profile requires it.
    pub(crate) pending: Option<Arc<dyn crate::pending::PendingStore>>,
}

/// The routes the OpenAPI document describes, each mounted on the path its handler's
/// `#[utoipa::path]` names.
fn documented_routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::with_openapi(openapi::base())
        .merge(policies::routes())
        .merge(tokens::routes())
        .merge(webhooks::routes())
        .merge(reports::routes())
        .merge(approvals::routes())
        .routes(routes!(issue::issue, inventory::list))
        .routes(routes!(inventory::revoke))
        .routes(routes!(inventory::lineage))
        .routes(routes!(inventory::crl))
        .routes(routes!(openapi::openapi))
}

pub(crate) fn router(state: Arc<AppState>) -> Router {
    let acme = if state.acme.is_some() {
        crate::acme::routes()
    } else {
        Router::new()
    };
    let (documented, _) = documented_routes().split_for_parts();
    Router::new()
        .merge(acme)
        .merge(documented)
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this endpoint",
            )
        })
        // Inner layers run last: rates are charged before a token is verified.
        .layer(from_fn_with_state(
            Arc::clone(&state),
            crate::people::authenticate,
        ))
        .layer(from_fn_with_state(Arc::clone(&state), rate_limit))
        .with_state(state)
}

/// Charges each request to its rate limits before it is routed: over one, 429.
async fn rate_limit(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if let Some(conn) = req.extensions().get::<ConnInfo>() {
        // The listed ID picks the operator's (higher) bucket without an inventory lookup: no
        // tenant profile can issue a listed ID (`AdminConfig::check_operators`), and what an
        // operator may do is still decided by `is_operator` in the handlers.
        let operator = conn
            .peer
            .as_ref()
            .and_then(|p| p.spiffe_id.as_ref())
            .is_some_and(|id| st.operators.contains(id.as_str()));
        let people = crate::people::reads_people(&req);
        if let Err(limited) = st.limits.check(conn, req.headers(), operator, people) {
            return limited.into_response();
        }
    }
    next.run(req).await
}

/// What the audit record of one call says.
pub(crate) struct CallRecord {
    pub(crate) actor: String,
    remote: std::net::SocketAddr,
    pub(crate) tenant: Option<String>,
    pub(crate) target: Option<String>,
    /// The role that allowed the call, when one did.
    pub(crate) role: Option<&'static str>,
}

impl CallRecord {
    pub(crate) fn new(conn: &ConnInfo) -> Self {
        let actor = match (&conn.person, &conn.peer) {
            (Some(person), _) => person.actor(),
            (None, Some(peer)) => peer.actor(),
            (None, None) => "anonymous".to_owned(),
        };
        Self {
            actor,
            remote: conn.remote,
            tenant: None,
            target: None,
            role: None,
        }
    }
}

impl AppState {
    fn record(&self, event: impl Into<AuditEvent>) {
        if let Some(audit) = &self.audit {
            if let Err(e) = audit.try_append(event) {
                tracing::warn!(error = %e, "admin API: audit record dropped");
            }
        }
    }

    pub(crate) fn audit_call(&self, rec: &CallRecord, action: &str, status: StatusCode) {
        let outcome = match status.as_u16() {
            200..=299 => "ok",
            401 | 403 => "denied",
            400..=499 => "refused",
            _ => "error",
        };
        tracing::info!(
            client.id = %rec.actor,
            client.addr = %rec.remote,
            admin.action = action,
            tenant.id = rec.tenant.as_deref().unwrap_or(""),
            admin.target = rec.target.as_deref().unwrap_or(""),
            admin.role = rec.role.unwrap_or(""),
            http.status = status.as_u16(),
            "admin call"
        );
        self.record(AdminAction {
            actor: rec.actor.clone(),
            action: action.to_owned(),
            target: rec.target.clone(),
            tenant: rec.tenant.clone(),
            outcome: outcome.to_owned(),
            role: rec.role.map(str::to_owned),
        });
    }

    /// The roles of the caller whose certificate the inventory holds as `record`.
    pub(crate) fn roles_of(&self, peer: &PeerIdentity, record: &CertRecord) -> Caller {
        Caller::resolve(
            &self.roles,
            self.is_operator(peer, record),
            self.ca.profiles(),
            peer,
            record,
        )
    }

    /// Whether the caller, whose certificate the inventory holds as `record`, is an operator.
    fn is_operator(&self, peer: &PeerIdentity, record: &CertRecord) -> bool {
        crate::identity::is_operator(&self.operators, self.ca.profiles(), peer, record)
    }
}

/// Runs blocking work (PKCS#11, SQLite) off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        tracing::error!(error = %e, "admin API: blocking task failed");
        ApiError::internal()
    })
}

/// Reads a JSON object of at most [`MAX_BODY`] bytes. An empty body (or `null`) reads as
/// `T::default()` when `empty_ok`.
async fn read_json<T: DeserializeOwned + Default>(
    headers: &HeaderMap,
    body: Body,
    empty_ok: bool,
) -> Result<T, ApiError> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_DRAIN as u64) {
        return Err(ApiError::too_large());
    }
    let bytes = read_body(body).await?;
    let text = bytes.trim_ascii();
    if empty_ok && (text.is_empty() || text == b"null") {
        return Ok(T::default());
    }
    let malformed = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_request",
            "the body is not the expected JSON document",
        )
    };
    // Every body is an object: serde would also read a struct from an array of its fields.
    if !text.starts_with(b"{") {
        return Err(malformed());
    }
    serde_json::from_slice(text).map_err(|e| {
        tracing::debug!(error = %e, "admin API: malformed JSON body");
        malformed()
    })
}

/// Reads a body of at most [`MAX_BODY`] bytes within [`BODY_TIMEOUT`].
pub(crate) async fn read_body(body: Body) -> Result<bytes::Bytes, ApiError> {
    tokio::time::timeout(BODY_TIMEOUT, read_limited(body))
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "the request body did not arrive in time",
            )
        })?
}

/// Reads up to [`MAX_BODY`] bytes. A longer body is read on and discarded up to
/// [`MAX_DRAIN`] bytes before the 413, so that the client, still sending, reads the answer
/// instead of a reset connection; past that the connection is dropped.
async fn read_limited(mut body: Body) -> Result<bytes::Bytes, ApiError> {
    use http_body_util::BodyExt;
    let mut kept = bytes::BytesMut::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            tracing::debug!(error = %e, "admin API: body unreadable");
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "unreadable_body",
                "the request body could not be read",
            )
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        seen = seen.saturating_add(data.len());
        if seen > MAX_DRAIN {
            break;
        }
        if seen <= MAX_BODY {
            kept.extend_from_slice(&data);
        }
    }
    if seen > MAX_BODY {
        return Err(ApiError::too_large());
    }
    Ok(kept.freeze())
}

/// The caller's certificate as the inventory knows it: it must be there and valid.
async fn caller_record(st: &Arc<AppState>, peer: &PeerIdentity) -> Result<CertRecord, ApiError> {
    let (st, peer) = (Arc::clone(st), peer.clone());
    blocking(move || lookup_caller(&st, &peer)).await?
}

/// [`caller_record`] on this thread (blocking: a SQLite read).
fn lookup_caller(st: &AppState, peer: &PeerIdentity) -> Result<CertRecord, ApiError> {
    let found = st
        .ca
        .inventory()
        .get(&peer.serial, SystemTime::now())
        .map_err(|e| {
            tracing::error!(error = %e, "admin API: inventory lookup failed");
            ApiError::internal()
        })?;
    let Some(record) = found else {
        tracing::warn!(ca.serial = %peer.serial, "admin API: verified client certificate not in the inventory");
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the client certificate is not known to this CA",
        ));
    };
    if record.status != CertStatus::Valid {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the client certificate is revoked or expired",
        ));
    }
    Ok(record)
}

/// The caller's roles, from its certificate (which the inventory must hold as valid).
pub(crate) async fn caller(st: &Arc<AppState>, conn: &ConnInfo) -> Result<Caller, ApiError> {
    // A bearer token says who: the person, whatever certificate the connection has.
    if let Some(person) = &conn.person {
        return Ok(Caller::for_person(&st.roles, person, st.mfa_for_writes));
    }
    let peer = conn.peer.as_ref().ok_or_else(ApiError::unauthenticated)?;
    let record = caller_record(st, peer).await?;
    Ok(st.roles_of(peer, &record))
}

/// The role that lets `caller` do what needs `permission` on `tenant`: a tenant it holds no
/// role in is not found (its objects do not exist for the caller); a role without the
/// permission is forbidden.
pub(crate) fn authorize(
    caller: &Caller,
    permission: Permission,
    tenant: &portcullis_ca::TenantId,
) -> Result<Role, ApiError> {
    if !caller.sees(tenant) {
        return Err(ApiError::not_found("no such tenant"));
    }
    let role = caller
        .role_for(permission, tenant)
        .ok_or_else(|| ApiError::forbidden("your role on this tenant does not allow this"))?;
    if permission.writes() && caller.lacks_mfa() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "mfa_required",
            "changes need a token from a sign-in with a second factor",
        ));
    }
    Ok(role)
}

/// The tenant named in a call's path, once the caller is known to hold `permission` in it
/// (its role then in `rec`).
pub(crate) async fn scoped_tenant(
    st: &Arc<AppState>,
    conn: &ConnInfo,
    tenant: &str,
    permission: Permission,
    rec: &mut CallRecord,
) -> Result<portcullis_ca::TenantId, ApiError> {
    let caller = caller(st, conn).await?;
    let Ok(tenant) = tenant.parse::<portcullis_ca::TenantId>() else {
        return Err(ApiError::not_found("no such tenant"));
    };
    let role = authorize(&caller, permission, &tenant)?;
    rec.tenant = Some(tenant.to_string());
    rec.role = Some(role.as_str());
    Ok(tenant)
}

/// Answers a call and records it.
pub(crate) fn finish(
    st: &AppState,
    rec: &CallRecord,
    action: &str,
    result: Result<Response, ApiError>,
) -> Response {
    let response = result.unwrap_or_else(IntoResponse::into_response);
    st.audit_call(rec, action, response.status());
    response
}

/// axum's `Path`, with a parameter that does not decode (percent-encoded bytes that are not
/// UTF-8, a number out of range) answered in the API's JSON error shape rather than axum's
/// plain-text one.
pub(crate) struct PathParams<T>(pub(crate) T);

impl<S, T> axum::extract::FromRequestParts<S> for PathParams<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Self(value)),
            Err(_) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_path",
                "a path parameter does not decode as text of the expected form",
            )),
        }
    }
}
