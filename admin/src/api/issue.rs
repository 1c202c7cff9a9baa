//! `POST /v1/certificates`: a certificate for a CSR, to a caller renewing with its current
//! client certificate (the CA keeps the renewal to that certificate's profile and names),
//! presenting a one-time bootstrap token, or — a node agent listed in `agents:` — asking with
//! its client certificate for a workload's SPIFFE ID its grants cover (a first issuance).

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

use super::{blocking, caller_record, read_json, ApiError, AppState, CallRecord};
use crate::config::AgentRefusal;
use crate::identity::{requested_names, ConnInfo, PeerIdentity, RequestedNames};
use crate::token::TokenHash;

/// The answer for an issued certificate, in the wire type clients read.
fn issue_response(c: IssuedCertificate) -> IssuanceResponse {
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

/// How an issuance caller authenticates.
enum Credential {
    /// Renewal: the verified client certificate.
    Cert(Arc<PeerIdentity>),
    /// First certificate: a bootstrap token (its hash).
    Token(TokenHash),
}

fn credential(conn: &ConnInfo, headers: &HeaderMap) -> Result<Credential, ApiError> {
    match (&conn.peer, headers.get(AUTHORIZATION)) {
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
}

pub(super) async fn issue(
    State(st): State<Arc<AppState>>,
    Extension(conn): Extension<ConnInfo>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut rec = CallRecord::new(&conn);
    let response = match issue_flow(&st, &conn, &headers, body, &mut rec).await {
        Ok(issued) => (StatusCode::CREATED, Json(issue_response(issued))).into_response(),
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
) -> Result<IssuedCertificate, ApiError> {
    let credential = credential(conn, headers)?;
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
    let names = requested_names(&csr);
    let auth = match credential {
        Credential::Cert(peer) => {
            authorize_client_cert(st, &peer, names.as_ref(), req.tenant.as_ref(), rec).await?
        }
        Credential::Token(hash) => authorize_token(st, hash, names.as_ref(), rec).await?,
    };
    // Only an agent's request may name another tenant than its credential's.
    if req.tenant.as_ref().is_some_and(|t| *t != auth.tenant) {
        give_back(st, auth.token).await;
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
    let ca = Arc::clone(&st.ca);
    let (tenant, requester, renews) = (
        auth.tenant.clone(),
        auth.requester.clone(),
        auth.renews.clone(),
    );
    let profile = req.profile;
    let result = blocking(move || {
        let request = IssueRequest {
            csr: &csr,
            tenant,
            profile: profile.as_deref(),
            lifetime,
            requester,
        };
        match &renews {
            Some(current) => ca.renew(&request, current, SystemTime::now()),
            None => ca.issue(&request, SystemTime::now()),
        }
    })
    .await;
    let result = match result {
        Ok(r) => r,
        Err(e) => {
            give_back(st, auth.token).await;
            return Err(e);
        }
    };
    match result {
        Ok(issued) => {
            st.stats.issued();
            rec.target = Some(issued.serial.to_string());
            Ok(issued)
        }
        Err(e) => {
            give_back(st, auth.token).await;
            Err(match e {
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
            })
        }
    }
}

/// A refusal by this API's identity checks (not by the CA): counted, and recorded through the
/// CA like one of its own.
fn identity_refusal(
    st: &AppState,
    requester: &Requester,
    subject: Option<String>,
    why: &str,
    message: &'static str,
) -> ApiError {
    st.stats.refused();
    st.ca
        .record_refusal(requester, subject, "identity_mismatch", why);
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
/// asking for another SPIFFE ID, which its grants must then cover.
async fn authorize_client_cert(
    st: &AppState,
    peer: &PeerIdentity,
    names: Option<&RequestedNames>,
    tenant: Option<&TenantId>,
    rec: &mut CallRecord,
) -> Result<Authorized, ApiError> {
    let Some(agent) = peer.spiffe_id.as_ref().filter(|id| st.agents.is_agent(id)) else {
        return authorize_renewal(st, peer, rec).await;
    };
    let Some(names) = names else {
        return Err(csr_unreadable());
    };
    // An agent renewing its own certificate is a renewal like any other.
    if names.uris.as_slice() == [agent.as_str()] {
        return authorize_renewal(st, peer, rec).await;
    }
    // The agent's own certificate is checked as a renewal's would be: known, valid, and of
    // the tenant the inventory says.
    let own = authorize_renewal(st, peer, rec).await?;
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
async fn authorize_renewal(
    st: &AppState,
    peer: &PeerIdentity,
    rec: &mut CallRecord,
) -> Result<Authorized, ApiError> {
    let record = caller_record(st, peer).await?;
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
    })
}

async fn authorize_token(
    st: &AppState,
    hash: TokenHash,
    names: Option<&RequestedNames>,
    rec: &mut CallRecord,
) -> Result<Authorized, ApiError> {
    let tokens = Arc::clone(&st.tokens);
    let h = hash.clone();
    let grant = blocking(move || tokens.consume(&h, SystemTime::now()))
        .await?
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
        let refusal = match names {
            None => Some(csr_unreadable()),
            Some(n) if n.uris.as_slice() != std::slice::from_ref(bound) => Some(identity_refusal(
                st,
                &requester,
                n.uris.first().cloned(),
                "CSR SPIFFE ID differs from the token's",
                "this bootstrap token is bound to another SPIFFE ID",
            )),
            Some(_) => None,
        };
        if let Some(refusal) = refusal {
            give_back(st, Some(hash)).await;
            return Err(refusal);
        }
    }
    Ok(Authorized {
        tenant: grant.tenant,
        renews: None,
        requester,
        token: Some(hash),
    })
}

/// Gives a consumed token back when its issuance did not happen.
async fn give_back(st: &AppState, token: Option<TokenHash>) {
    let Some(hash) = token else { return };
    let tokens = Arc::clone(&st.tokens);
    let id = hash.id();
    match blocking(move || tokens.release(&hash)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::error!(token.id = %id, error = %e, "admin API: token release failed")
        }
        Err(_) => {}
    }
}
