//! Finalization (the CSR through the CA under the account's tenant and profile, its names
//! exactly the order's), certificate download and revocation by the account.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use portcullis_ca::{
    requested_names, CaError, IssueRequest, Requester, RequesterKind, RevocationReason,
    RevocationScope, Serial,
};
use serde::Deserialize;

use super::flow::{
    acme, blocking_store, json_response, order_json, owner, respond, signed_by_account,
};
use super::order::{Finalized, Status};
use super::{jws, verify_post, Problem};
use crate::api::{blocking, AppState, CallRecord};
use crate::identity::ConnInfo;

#[derive(Debug, Deserialize)]
struct Finalize {
    csr: String,
}

pub(super) async fn finalize(
    State(st): State<Arc<AppState>>,
    axum::Extension(conn): axum::Extension<ConnInfo>,
    Path(id): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    body: Body,
) -> Response {
    let mut rec = CallRecord::new(&conn);
    let base = super::base_url(&headers, &uri).ok();
    let result = finalize_flow(&st, &id, &headers, &uri, body, &mut rec).await;
    let response = respond(&st, base.as_deref(), result).await;
    st.audit_call(&rec, "acme.order.finalize", response.status());
    response
}

async fn finalize_flow(
    st: &Arc<AppState>,
    id: &str,
    headers: &HeaderMap,
    uri: &Uri,
    body: Body,
    rec: &mut CallRecord,
) -> Result<Response, Problem> {
    let signed = signed_by_account(st, headers, uri, body).await?;
    let account = owner(&signed)?.clone();
    rec.actor = format!("acme:account:{}", account.id);
    rec.tenant = Some(account.tenant.to_string());
    acme(st)?;
    let req: Finalize = serde_json::from_slice(&signed.payload)
        .map_err(|_| Problem::malformed("the finalize payload is not the expected JSON"))?;
    let csr = jws::unb64(&req.csr, "csr")?;
    let bad_csr = |detail: &str| Problem::new(StatusCode::BAD_REQUEST, "badCSR", detail.to_owned());
    let names = requested_names(&csr).ok_or_else(|| bad_csr("the CSR is not a PKCS#10 request"))?;
    // ACME cannot wait for a person: a profile requiring approval (set after the account was
    // bound) issues nothing through it.
    if st
        .ca
        .profiles()
        .iter()
        .any(|p| p.name == account.profile && p.approval.is_some())
    {
        st.stats.refused();
        return Err(Problem::unauthorized(
            "the account's profile requires approval, which ACME issuance cannot wait for",
        ));
    }
    // Checked first, then claimed: of two concurrent finalizations (on any nodes) one
    // proceeds to sign.
    let (key, owner_id) = (id.to_owned(), account.id);
    let order = blocking_store(st, move |s| s.backend().order(&key, SystemTime::now()))
        .await?
        .filter(|o| o.account == owner_id)
        .ok_or_else(Problem::not_found)?;
    if order.status != Status::Ready {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "orderNotReady",
            "the order's authorizations are not all valid",
        ));
    }
    let asked: BTreeSet<String> = names
        .dns_names
        .iter()
        .map(|n| n.to_ascii_lowercase())
        .collect();
    let ordered: BTreeSet<String> = order.names.iter().cloned().collect();
    if !names.uris.is_empty() || asked != ordered {
        return Err(bad_csr(
            "the CSR's names are not exactly the order's identifiers",
        ));
    }
    let key = id.to_owned();
    let order_names = blocking_store(st, move |s| {
        s.backend().claim_order(&key, owner_id, SystemTime::now())
    })
    .await?
    .ok_or_else(|| {
        Problem::new(
            StatusCode::FORBIDDEN,
            "orderNotReady",
            "the order is being finalized or is no longer ready",
        )
    })?
    .names;
    rec.target = Some(order_names.join(","));
    let ca = Arc::clone(&st.ca);
    let (tenant, profile) = (account.tenant.clone(), account.profile.clone());
    let requester = Requester {
        kind: RequesterKind::BootstrapToken,
        id: format!("acme:{}", account.eab_kid),
    };
    let issued = blocking(move || {
        ca.issue(
            &IssueRequest {
                csr: &csr,
                tenant,
                profile: Some(&profile),
                lifetime: None,
                requester,
            },
            SystemTime::now(),
        )
    })
    .await
    .map_err(|_| Problem::server_internal())?;
    let outcome = match issued {
        Ok(issued) => {
            st.stats.issued();
            let (serial, chain) = (issued.serial.clone(), issued.chain_pem.clone());
            blocking_store(st, move |s| {
                s.backend().add_certificate(&serial, account.id, &chain)
            })
            .await
            .inspect_err(|_| {
                // Signed (it is in the inventory) but not downloadable: the order stays
                // processing until it expires, and the client orders again.
                tracing::error!(ca.serial = %issued.serial, "acme: issued certificate not recorded");
            })?;
            rec.target = Some(issued.serial.to_string());
            Ok(issued.serial)
        }
        Err(CaError::Refused(refusal)) => {
            st.stats.refused();
            Err(Problem::new(
                StatusCode::BAD_REQUEST,
                "badCSR",
                refusal.to_string(),
            ))
        }
        Err(e) => {
            if e.is_unavailable() {
                st.stats.unavailable();
            }
            tracing::warn!(error = %e, "acme: issuance failed");
            Err(Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "serverInternal",
                "the CA could not issue now; retry later",
            ))
        }
    };
    let finalized = match &outcome {
        Ok(serial) => Finalized::Issued(serial.clone()),
        // A refused CSR ends the order; an unavailable CA leaves it ready for a retry.
        Err(problem) if problem.kind == "badCSR" => Finalized::Refused(problem.to_json()),
        Err(_) => Finalized::Retry,
    };
    let key = id.to_owned();
    blocking_store(st, move |s| s.backend().order_finalized(&key, &finalized)).await?;
    outcome?;
    let key = id.to_owned();
    let order = blocking_store(st, move |s| s.backend().order(&key, SystemTime::now()))
        .await?
        .ok_or_else(Problem::not_found)?;
    Ok(json_response(
        StatusCode::OK,
        order_json(&signed.base, id, &order),
        Some(format!("{}/acme/order/{id}", signed.base)),
    ))
}

/// The PEM chain (leaf first), to the account that obtained it.
pub(super) async fn certificate(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    body: Body,
) -> Response {
    let base = super::base_url(&headers, &uri).ok();
    let result = async {
        let signed = signed_by_account(&st, &headers, &uri, body).await?;
        let account = owner(&signed)?.id;
        let serial: Serial = id.parse().map_err(|_| Problem::not_found())?;
        let (holder, chain) = blocking_store(&st, move |s| s.backend().certificate(&serial))
            .await?
            .ok_or_else(Problem::not_found)?;
        if holder != account {
            return Err(Problem::not_found());
        }
        let mut r = (StatusCode::OK, chain).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/pem-certificate-chain"),
        );
        Ok(r)
    }
    .await;
    respond(&st, base.as_deref(), result).await
}

#[derive(Debug, Deserialize)]
struct Revoke {
    certificate: String,
    #[serde(default)]
    reason: Option<u8>,
}

const REASONS: [RevocationReason; 9] = [
    RevocationReason::Unspecified,
    RevocationReason::KeyCompromise,
    RevocationReason::CaCompromise,
    RevocationReason::AffiliationChanged,
    RevocationReason::Superseded,
    RevocationReason::CessationOfOperation,
    RevocationReason::CertificateHold,
    RevocationReason::PrivilegeWithdrawn,
    RevocationReason::AaCompromise,
];

/// Revocation by the account that obtained the certificate (the certificate-key form is not
/// offered).
pub(super) async fn revoke(
    State(st): State<Arc<AppState>>,
    axum::Extension(conn): axum::Extension<ConnInfo>,
    headers: HeaderMap,
    uri: Uri,
    body: Body,
) -> Response {
    let mut rec = CallRecord::new(&conn);
    let base = super::base_url(&headers, &uri).ok();
    let result = revoke_flow(&st, &headers, &uri, body, &mut rec).await;
    let response = respond(&st, base.as_deref(), result).await;
    st.audit_call(&rec, "acme.certificate.revoke", response.status());
    response
}

async fn revoke_flow(
    st: &Arc<AppState>,
    headers: &HeaderMap,
    uri: &Uri,
    body: Body,
    rec: &mut CallRecord,
) -> Result<Response, Problem> {
    acme(st)?;
    let signed = verify_post(st, headers, uri, body, true).await?;
    let account = signed.account.clone().ok_or_else(|| {
        Problem::unauthorized("revoke with the account that obtained the certificate")
    })?;
    rec.actor = format!("acme:account:{}", account.id);
    rec.tenant = Some(account.tenant.to_string());
    let req: Revoke = serde_json::from_slice(&signed.payload)
        .map_err(|_| Problem::malformed("the revokeCert payload is not the expected JSON"))?;
    let reason = match req.reason {
        None => RevocationReason::Unspecified,
        Some(code) => REASONS
            .into_iter()
            .find(|r| r.code() == code && *r != RevocationReason::CertificateHold)
            .ok_or_else(|| {
                Problem::new(
                    StatusCode::BAD_REQUEST,
                    "badRevocationReason",
                    "no such reason",
                )
            })?,
    };
    let der = jws::unb64(&req.certificate, "certificate")?;
    let serial = x509_parser::parse_x509_certificate(&der)
        .map(|(_, c)| Serial::from_be_bytes(c.raw_serial()))
        .map_err(|_| Problem::malformed("certificate is not a DER certificate"))?;
    rec.target = Some(serial.to_string());
    let s = serial.clone();
    let holder = blocking_store(st, move |store| store.backend().certificate(&s)).await?;
    if holder.map(|(a, _)| a) != Some(account.id) {
        return Err(Problem::unauthorized(
            "this account did not obtain this certificate",
        ));
    }
    let (ca, trust) = (Arc::clone(&st.ca), Arc::clone(&st.trust));
    let requester = Requester {
        kind: RequesterKind::BootstrapToken,
        id: format!("acme:{}", account.eab_kid),
    };
    let result = blocking(move || {
        let r = ca.revoke_by(
            &serial,
            reason,
            RevocationScope::OnlyThis,
            &requester,
            SystemTime::now(),
        );
        if r.is_ok() {
            if let Err(e) = trust.reload() {
                tracing::error!(error = %e, "acme: CRL reload after revocation failed");
            }
        }
        r
    })
    .await
    .map_err(|_| Problem::server_internal())?;
    match result {
        Ok(_) => Ok(StatusCode::OK.into_response()),
        Err(CaError::AlreadyRevoked { .. }) => Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "alreadyRevoked",
            "the certificate is already revoked",
        )),
        Err(e) => {
            if e.is_unavailable() {
                st.crl_dirty
                    .store(true, std::sync::atomic::Ordering::Release);
            }
            tracing::warn!(error = %e, "acme: revocation failed");
            Err(Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "serverInternal",
                "the revocation could not be completed now; retry later",
            ))
        }
    }
}
