//! `POST /v1/certificates`: a certificate for a CSR, to a caller renewing with its current
//! client certificate (same identity only) or presenting a one-time bootstrap token.

use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Body;
use axum::extract::State;
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use portcullis_ca::{CaError, IssueRequest, IssuedCertificate, Requester, RequesterKind, TenantId};
use portcullis_identity::{IssuanceRequest, IssuanceResponse};

use super::{blocking, caller_record, read_json, ApiError, AppState, CallRecord};
use crate::identity::{requested_names, same_identity, ConnInfo, PeerIdentity, RequestedNames};
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
    default_profile: Option<String>,
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
        Credential::Cert(peer) => authorize_renewal(st, &peer, names.as_ref(), rec).await?,
        Credential::Token(hash) => authorize_token(st, hash, names.as_ref(), rec).await?,
    };
    let profile = req.profile.or(auth.default_profile);

    // The CA records the issuance or its refusal in its event sink (this server's audit log).
    let ca = Arc::clone(&st.ca);
    let (tenant, requester) = (auth.tenant.clone(), auth.requester.clone());
    let result = blocking(move || {
        ca.issue(
            &IssueRequest {
                csr: &csr,
                tenant,
                profile: profile.as_deref(),
                lifetime,
                requester,
            },
            SystemTime::now(),
        )
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
                    ApiError::new(StatusCode::BAD_REQUEST, refusal.code(), refusal.to_string())
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

async fn authorize_renewal(
    st: &AppState,
    peer: &PeerIdentity,
    names: Option<&RequestedNames>,
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
    let names = names.ok_or_else(csr_unreadable)?;
    let current_spiffe = record.sans.iter().find_map(|s| s.strip_prefix("URI:"));
    let current_dns: Vec<String> = record
        .sans
        .iter()
        .filter_map(|s| s.strip_prefix("DNS:").map(str::to_owned))
        .collect();
    if !same_identity(current_spiffe, &current_dns, names) {
        return Err(identity_refusal(
            st,
            &requester,
            names.uris.first().cloned(),
            "renewal asks for names the current certificate does not carry",
            "a renewal may carry only the SPIFFE ID and DNS names of the current certificate",
        ));
    }
    Ok(Authorized {
        tenant: record.tenant,
        default_profile: Some(record.profile),
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
        default_profile: None,
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
