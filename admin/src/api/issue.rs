//! `POST /v1/certificates`: a certificate for a CSR, to a caller renewing with its current
//! client certificate (the CA keeps the renewal to that certificate's profile and names),
//! presenting a one-time bootstrap token, or — a node agent listed in `agents:` — asking with
//! its client certificate for a workload's SPIFFE ID its grants cover (a first issuance).
//!
//! A first issuance under a profile that requires approval is checked by the CA as it would
//! be issued, then kept (`crate::pending`) and answered `202` with where to poll and a pickup
//! secret; `approvals.rs` decides it. Renewals never wait.
//!
//! Everything after the body is read — the inventory and token look-ups, the CA's decision,
//! the signature and the durable inventory record — runs in one blocking task: one hand-off
//! to the blocking pool and back per request.

use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Body;
use axum::extract::State;
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use portcullis_ca::{
    CaError, IssueRefusal, IssueRequest, IssuedCertificate, Requester, RequesterKind, Serial,
    TenantId,
};
use portcullis_identity::{IssuanceRequest, IssuanceResponse, SpiffeId};

use super::{blocking, lookup_caller, read_json, ApiError, AppState, CallRecord};
use crate::config::AgentRefusal;
use crate::identity::{requested_names, ConnInfo, PeerIdentity};
use crate::token::TokenHash;

/// The answer for an issued certificate, in the wire type clients read.
pub(super) fn issue_response(c: IssuedCertificate) -> IssuanceResponse {
    IssuanceResponse {
        serial: c.serial,
        certificate: c.cert_pem,
        chain: c.chain_pem,
        not_before: c.not_before,
        not_after: c.not_after,
        spiffe_id: c.spiffe_id,
        dns_names: c.dns_names,
        tenant: c.tenant,
        profile: c.profile,
    }
}

/// What an issuance call resulted in.
enum Outcome {
    Issued(IssuedCertificate),
    /// Kept for approval.
    Waiting {
        id: crate::pending::PendingId,
        secret: crate::pending::PickupSecret,
        expires_at: SystemTime,
    },
}

/// The `202` body of a request waiting for approval (`secret` only in the first answer).
pub(super) fn waiting_body(
    id: &crate::pending::PendingId,
    expires_at: SystemTime,
    secret: Option<&str>,
) -> serde_json::Value {
    let mut body = serde_json::json!({
        "pending": id.as_str(),
        "expires_at": humantime::format_rfc3339_seconds(expires_at).to_string(),
        "poll": format!("/v1/certificates/pending/{id}"),
    });
    if let Some(secret) = secret {
        body["pickup_secret"] = serde_json::Value::from(secret);
    }
    body
}

/// How an issuance caller authenticates.
enum Credential {
    /// Renewal: the verified client certificate.
    Cert(Arc<PeerIdentity>),
    /// First certificate: a bootstrap token (its hash).
    Token(TokenHash),
}

fn credential(conn: &ConnInfo, headers: &HeaderMap) -> Result<Credential, ApiError> {
    // Two Authorization headers: which one counts would be a parser's choice.
    let two_tokens = headers.get_all(AUTHORIZATION).iter().nth(1).is_some();
    match (&conn.peer, headers.get(AUTHORIZATION)) {
        (_, Some(_)) if two_tokens => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "ambiguous_credentials",
            "present one bootstrap token, in one Authorization header",
        )),
        (Some(_), Some(_)) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "ambiguous_credentials",
            "present either a client certificate or a bootstrap token, not both",
        )),
        (Some(peer), None) => Ok(Credential::Cert(Arc::clone(peer))),
        (None, Some(value)) => value
            .to_str()
            .ok()
            .and_then(|v| {
                let (scheme, token) = v.trim().split_once(' ')?;
                scheme
                    .eq_ignore_ascii_case("bearer")
                    .then(|| TokenHash::of_presented(token.trim()))?
            })
            .map(Credential::Token)
            .ok_or_else(ApiError::invalid_token),
        (None, None) => Err(ApiError::unauthenticated()),
    }
}

/// What an authenticated, authorised issuance may ask the CA for.
struct Authorized {
    tenant: TenantId,
    /// A renewal: the caller's current certificate.
    renews: Option<Serial>,
    requester: Requester,
    /// The consumed token, given back if no certificate results.
    token: Option<TokenHash>,
    /// Who created that token through the admin API.
    token_created_by: Option<String>,
}

/// A certificate for a CSR: a renewal (client certificate), a first certificate (bootstrap
/// token as bearer), or a node agent's request for a workload.
#[utoipa::path(
    operation_id = "issueCertificate",
    post,
    path = "/v1/certificates",
    tag = "certificates",
    request_body = super::openapi::IssuanceRequest,
    responses(
        (status = 201, description = "Issued", body = super::openapi::Issued),
        (status = 202, description = "Checked by the CA and waiting for approval (the profile requires it): poll with the pickup secret", body = super::openapi::PendingIssuance),
        (status = 400, description = "Malformed body or CSR, or refused by the CA's profile (the code says why)", body = super::openapi::ErrorBody),
        (status = 401, description = "No credential, or a bootstrap token that is unknown, used or expired", body = super::openapi::ErrorBody),
        (status = 403, description = "The credential may not obtain this certificate", body = super::openapi::ErrorBody),
        (status = 408, description = "The body did not arrive in time", body = super::openapi::ErrorBody),
        (status = 413, description = "The body exceeds 64 KiB", body = super::openapi::ErrorBody),
        (status = 429, description = "Over a rate limit", body = super::openapi::ErrorBody),
        (status = 503, description = "The CA's key backend is unavailable", body = super::openapi::ErrorBody),
    ),
    security(("mtls" = []), ("bearer" = []))
)]
pub(super) async fn issue(
    State(st): State<Arc<AppState>>,
    Extension(conn): Extension<ConnInfo>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut rec = CallRecord::new(&conn);
    let response = match issue_flow(&st, &conn, &headers, body, &mut rec).await {
        Ok(Outcome::Issued(issued)) => {
            (StatusCode::CREATED, Json(issue_response(issued))).into_response()
        }
        Ok(Outcome::Waiting {
            id,
            secret,
            expires_at,
        }) => (
            StatusCode::ACCEPTED,
            Json(waiting_body(&id, expires_at, Some(secret.expose()))),
        )
            .into_response(),
        Err(e) => e.into_response(),
    };
    st.audit_call(&rec, "certificate.issue", response.status());
    response
}

async fn issue_flow(
    st: &Arc<AppState>,
    conn: &ConnInfo,
    headers: &HeaderMap,
    body: Body,
    rec: &mut CallRecord,
) -> Result<Outcome, ApiError> {
    let credential = match credential(conn, headers) {
        Ok(c) => c,
        Err(e) => {
            // Read what the client is still sending (bounded), so that an HTTP/2 client reads
            // the refusal rather than a reset stream.
            let _ = super::read_body(body).await;
            return Err(e);
        }
    };
    let req: IssuanceRequest = read_json(headers, body, false).await?;
    let lifetime = match &req.lifetime {
        None => None,
        Some(text) => Some(humantime::parse_duration(text).map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_lifetime",
                "lifetime must be a duration such as \"30m\" or \"1h\"",
            )
        })?),
    };
    let csr = req.csr.into_bytes();
    let profile = req.profile;
    let tenant = req.tenant;
    // The record moves into the blocking task and back (a fresh one stays if it fails).
    let mut moved = std::mem::replace(rec, CallRecord::new(conn));
    let st = Arc::clone(st);
    let (result, moved) = blocking(move || {
        let result = decide_and_issue(
            &st,
            credential,
            &csr,
            tenant.as_ref(),
            profile.as_deref(),
            lifetime,
            &mut moved,
        );
        (result, moved)
    })
    .await?;
    *rec = moved;
    result
}

/// Authenticates and authorises the caller, then asks the CA (blocking: the inventory, the
/// token store, the key backend).
fn decide_and_issue(
    st: &AppState,
    credential: Credential,
    csr: &[u8],
    tenant: Option<&TenantId>,
    profile: Option<&str>,
    lifetime: Option<std::time::Duration>,
    rec: &mut CallRecord,
) -> Result<Outcome, ApiError> {
    let auth = match credential {
        Credential::Cert(peer) => authorize_client_cert(st, &peer, csr, tenant, rec)?,
        Credential::Token(hash) => authorize_token(st, hash, csr, rec)?,
    };
    // Only an agent's request may name another tenant than its credential's.
    if tenant.is_some_and(|t| *t != auth.tenant) {
        give_back(st, auth.token);
        st.stats.refused();
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "tenant_not_allowed",
            "this credential may not ask for a certificate of that tenant",
        ));
    }

    // The CA decides a renewal against the certificate renewed (its profile and names, read
    // from the CSR by the CA's own parser), and records the issuance or its refusal in its
    // event sink (this server's audit log).
    let request = IssueRequest {
        csr,
        tenant: auth.tenant,
        profile,
        lifetime,
        requester: auth.requester,
    };
    let result = match &auth.renews {
        Some(current) => st.ca.renew(&request, current, SystemTime::now()),
        // A first issuance of a tenant with a profile requiring approval: the CA checks it,
        // then it waits if the profile it would be issued under requires approval.
        None if st
            .ca
            .profiles()
            .iter()
            .any(|p| p.tenant == request.tenant && p.approval.is_some()) =>
        {
            match wait_for_approval(st, &request, auth.token_created_by.clone(), rec) {
                Ok(Some(waiting)) => return Ok(waiting),
                Ok(None) => st.ca.issue(&request, SystemTime::now()),
                Err(e) => {
                    give_back(st, auth.token);
                    return Err(e);
                }
            }
        }
        None => st.ca.issue(&request, SystemTime::now()),
    };
    match result {
        Ok(issued) => {
            st.stats.issued();
            rec.target = Some(issued.serial.to_string());
            Ok(Outcome::Issued(issued))
        }
        Err(e) => {
            give_back(st, auth.token);
            Err(ca_error(st, e))
        }
    }
}

/// A first issuance under a profile requiring approval: checked by the CA now (a refusal is
/// answered at once, never kept), then kept. `None`: the profile the CA would issue under does
/// not require approval.
fn wait_for_approval(
    st: &AppState,
    request: &IssueRequest<'_>,
    token_created_by: Option<String>,
    rec: &mut CallRecord,
) -> Result<Option<Outcome>, ApiError> {
    let now = SystemTime::now();
    let profile = st
        .ca
        .check_issue(request, now)
        .map_err(|e| ca_error(st, e))?;
    let Some(rule) = profile.approval else {
        return Ok(None);
    };
    // Fail closed: the store is opened whenever a profile requires approval.
    let Some(store) = st.pending.as_ref() else {
        tracing::error!(ca.profile = %profile.name, "admin API: approval required but no pending store");
        return Err(ApiError::internal());
    };
    let names = requested_names(request.csr);
    let new = crate::pending::NewPending {
        tenant: request.tenant.clone(),
        profile: profile.name.clone(),
        csr: request.csr.to_vec(),
        lifetime: request.lifetime,
        requester: request.requester.clone(),
        requested_by: rec.actor.clone(),
        token_created_by,
        spiffe_id: names.as_ref().and_then(|n| n.uris.first().cloned()),
        dns_names: names.map(|n| n.dns_names).unwrap_or_default(),
    };
    let (id, secret, expires_at) = store.insert(&new, rule.expires_after, now).map_err(|e| {
        tracing::error!(error = %e, "admin API: pending store failed");
        ApiError::internal()
    })?;
    tracing::info!(
        tenant.id = %request.tenant,
        ca.profile = %profile.name,
        ca.requester = %request.requester,
        pending.id = %id,
        "issuance waits for approval"
    );
    rec.target = Some(format!("pending:{id}"));
    Ok(Some(Outcome::Waiting {
        id,
        secret,
        expires_at,
    }))
}

/// The public answer for a CA error (counted).
pub(super) fn ca_error(st: &AppState, e: CaError) -> ApiError {
    match e {
        CaError::Refused(refusal) => {
            st.stats.refused();
            // A renewal asking for another identity is forbidden, as a token's is.
            let status = match refusal {
                IssueRefusal::RenewalIdentityMismatch(_) => StatusCode::FORBIDDEN,
                _ => StatusCode::BAD_REQUEST,
            };
            ApiError::new(status, refusal.code(), refusal.to_string())
        }
        e if e.is_unavailable() => {
            st.stats.unavailable();
            tracing::warn!(error = %e, "admin API: CA key backend unavailable");
            ApiError::ca_unavailable()
        }
        e => {
            tracing::error!(error = %e, "admin API: issuance failed");
            ApiError::internal()
        }
    }
}

/// A refusal by this API's identity checks (not by the CA): counted, and recorded through the
/// CA like one of its own.
fn identity_refusal(
    st: &AppState,
    requester: &Requester,
    tenant: &TenantId,
    subject: Option<String>,
    why: &str,
    message: &'static str,
) -> ApiError {
    st.stats.refused();
    st.ca
        .record_refusal(requester, Some(tenant), subject, "identity_mismatch", why);
    ApiError::new(StatusCode::FORBIDDEN, "identity_mismatch", message)
}

fn csr_unreadable() -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "csr_malformed",
        "CSR malformed: not a PKCS#10 request (PEM or DER)",
    )
}

/// A caller with a client certificate: a renewal, unless the caller is a listed node agent
/// asking for another SPIFFE ID, which its grants must then cover. Only an agent's CSR is read
/// here (for the names it asks for); a renewal's is read by the CA alone.
fn authorize_client_cert(
    st: &AppState,
    peer: &PeerIdentity,
    csr: &[u8],
    tenant: Option<&TenantId>,
    rec: &mut CallRecord,
) -> Result<Authorized, ApiError> {
    let Some(agent) = peer.spiffe_id.as_ref().filter(|id| st.agents.is_agent(id)) else {
        return authorize_renewal(st, peer, rec);
    };
    let Some(names) = requested_names(csr) else {
        return Err(csr_unreadable());
    };
    // An agent renewing its own certificate is a renewal like any other.
    if names.uris.as_slice() == [agent.as_str()] {
        return authorize_renewal(st, peer, rec);
    }
    // The agent's own certificate is checked as a renewal's would be: known, valid, and of
    // the tenant the inventory says.
    let own = authorize_renewal(st, peer, rec)?;
    let tenant = tenant.cloned().unwrap_or_else(|| own.tenant.clone());
    rec.tenant = Some(tenant.to_string());
    let requested = match names.uris.as_slice() {
        [one] => one.parse::<SpiffeId>().ok(),
        _ => None,
    };
    let decision = match &requested {
        Some(id) => st.agents.authorize(agent, &own.tenant, &tenant, id),
        None => Err(AgentRefusal::NotGranted),
    };
    match decision {
        Ok(()) => {
            tracing::info!(client.id = %agent, tenant.id = %tenant, cert.spiffe_id = names.uris.first().map_or("", String::as_str), "admin API: agent issuance granted");
            Ok(Authorized {
                tenant,
                renews: None,
                requester: own.requester,
                token: None,
                token_created_by: None,
            })
        }
        Err(refusal) => {
            let (why, message) = match refusal {
                AgentRefusal::WrongTenant => (
                    "agent certificate of another tenant than its entry".to_owned(),
                    "this agent's certificate belongs to another tenant than its entry names",
                ),
                AgentRefusal::NotGranted => (
                    format!("no grant of agent {agent} for tenant {tenant} covers the CSR"),
                    "this agent may not obtain that SPIFFE ID for that tenant",
                ),
            };
            st.stats.refused();
            st.ca.record_refusal(
                &own.requester,
                Some(&tenant),
                names.uris.first().cloned(),
                "agent_not_allowed",
                &why,
            );
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "agent_not_allowed",
                message,
            ))
        }
    }
}

/// A renewal: the caller's certificate must be in the inventory, valid, and say the tenant the
/// inventory says. What the new certificate may carry is the CA's decision ([`Ca::renew`]).
///
/// [`Ca::renew`]: portcullis_ca::Ca::renew
fn authorize_renewal(
    st: &AppState,
    peer: &PeerIdentity,
    rec: &mut CallRecord,
) -> Result<Authorized, ApiError> {
    let record = lookup_caller(st, peer)?;
    rec.tenant = Some(record.tenant.to_string());
    let requester = Requester {
        kind: RequesterKind::ClientCert,
        id: peer.actor(),
    };
    if peer.organization.as_deref() != Some(record.tenant.as_str()) {
        tracing::warn!(ca.serial = %peer.serial, tenant.id = %record.tenant, "admin API: certificate O= disagrees with the inventory's tenant");
        return Err(identity_refusal(
            st,
            &requester,
            &record.tenant,
            None,
            "certificate tenant disagrees with the inventory",
            "the client certificate's tenant is inconsistent",
        ));
    }
    Ok(Authorized {
        tenant: record.tenant,
        renews: Some(record.serial),
        requester,
        token: None,
        token_created_by: None,
    })
}

fn authorize_token(
    st: &AppState,
    hash: TokenHash,
    csr: &[u8],
    rec: &mut CallRecord,
) -> Result<Authorized, ApiError> {
    let grant = st
        .tokens
        .consume(&hash, SystemTime::now())
        .map_err(|e| {
            tracing::error!(error = %e, "admin API: token store failed");
            ApiError::internal()
        })?
        .ok_or_else(|| {
            tracing::info!(token.id = %hash.id(), "admin API: unknown, used or expired bootstrap token");
            ApiError::invalid_token()
        })?;
    rec.actor = format!("token:{}", grant.id);
    rec.tenant = Some(grant.tenant.to_string());
    let requester = Requester {
        kind: RequesterKind::BootstrapToken,
        id: grant.id.to_string(),
    };
    if let Some(bound) = &grant.spiffe_id {
        let refusal = match requested_names(csr) {
            None => Some(csr_unreadable()),
            Some(n) if n.uris.as_slice() != std::slice::from_ref(bound) => Some(identity_refusal(
                st,
                &requester,
                &grant.tenant,
                n.uris.first().cloned(),
                "CSR SPIFFE ID differs from the token's",
                "this bootstrap token is bound to another SPIFFE ID",
            )),
            Some(_) => None,
        };
        if let Some(refusal) = refusal {
            give_back(st, Some(hash));
            return Err(refusal);
        }
    }
    Ok(Authorized {
        tenant: grant.tenant,
        renews: None,
        requester,
        token: Some(hash),
        token_created_by: grant.created_by,
    })
}

/// Gives a consumed token back when its issuance did not happen.
fn give_back(st: &AppState, token: Option<TokenHash>) {
    let Some(hash) = token else { return };
    if let Err(e) = st.tokens.release(&hash) {
        tracing::error!(token.id = %hash.id(), error = %e, "admin API: token release failed");
    }
}
