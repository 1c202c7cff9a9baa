//! The inventory side: `POST /v1/certificates/{serial}/revoke` (operators and the holder; the
//! certificates renewed from it too unless `"only_this": true`),
//! `GET /v1/crl` (anyone), `GET /v1/certificates` (operators).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::header::{ACCEPT, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use portcullis_ca::{
    CaError, CertRecord, CertStatus, InventoryFilter, Requester, RequesterKind, Revocation,
    RevocationReason, RevocationScope, Serial, TenantId,
};
use serde::{Deserialize, Serialize};

use super::{blocking, caller_record, read_json, ApiError, AppState, CallRecord, PathParams};
use crate::identity::ConnInfo;
use crate::roles::{Caller, Permission, Role};

/// Most inventory records one listing returns.
const MAX_LIST: usize = 1000;

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    /// An RFC 5280 reason name such as `keyCompromise` (default `unspecified`).
    #[serde(default)]
    reason: Option<String>,
    /// Revoke this certificate only, not the certificates renewed from it.
    #[serde(default)]
    only_this: bool,
}

/// The certificate named, as it now stands, and every serial the call revoked (it, unless it
/// already was, and the certificates renewed from it).
#[derive(Debug, Serialize)]
struct RevokeResponse {
    #[serde(flatten)]
    certificate: CertRecord,
    revoked: Vec<Serial>,
}

/// Revokes a certificate (and, unless `only_this`, the certificates renewed from it): by an
/// operator, the certificate's holder, or a role with the revoke permission on its tenant.
#[utoipa::path(
    operation_id = "revokeCertificate",
    post,
    path = "/v1/certificates/{serial}/revoke",
    tag = "certificates",
    params(("serial" = String, Path, description = "The serial, hex")),
    request_body(content = Option<RevokeBody>, description = "Empty for the defaults"),
    responses(
        (status = 200, description = "Revoked", body = super::openapi::Revoked),
        (status = 404, description = "No such certificate (or one of a tenant the caller holds no role in)", body = super::openapi::ErrorBody),
        (status = 409, description = "Already revoked", body = super::openapi::ErrorBody),
        (status = 503, description = "Recorded, but the CRL could not be signed yet", body = super::openapi::ErrorBody),
        super::openapi::BodyRefusals,
        super::openapi::Refusals,
    ),
    security(("mtls" = []), ("bearer" = []))
)]
pub(super) async fn revoke(
    State(st): State<Arc<AppState>>,
    Extension(conn): Extension<ConnInfo>,
    PathParams(serial): PathParams<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut rec = CallRecord::new(&conn);
    rec.target = Some(serial.chars().take(64).collect());
    let response = match revoke_flow(&st, &conn, &serial, &headers, body, &mut rec).await {
        Ok(revocation) => (
            StatusCode::OK,
            Json(RevokeResponse {
                certificate: revocation.certificate,
                revoked: revocation.revoked.into_iter().map(|r| r.serial).collect(),
            }),
        )
            .into_response(),
        Err(e) => e.into_response(),
    };
    st.audit_call(&rec, "certificate.revoke", response.status());
    response
}

async fn revoke_flow(
    st: &Arc<AppState>,
    conn: &ConnInfo,
    serial: &str,
    headers: &HeaderMap,
    body: Body,
    rec: &mut CallRecord,
) -> Result<Revocation, ApiError> {
    // The body is read first and judged after the caller: a refused caller still sending reads
    // its answer, and the keep-alive connection stays usable.
    let body = read_json::<RevokeBody>(headers, body, true).await;
    let serial = parse_serial(serial)?;
    let kind = match (&conn.person, &conn.peer) {
        // A certificate: an operator, the certificate's own holder, or a role.
        (None, Some(peer)) => {
            let caller = caller_record(st, peer).await?;
            if st.is_operator(peer, &caller) {
                rec.role = Some(Role::PlatformAdmin.as_str());
                RequesterKind::Operator
            } else if peer.serial == serial {
                RequesterKind::ClientCert
            } else {
                revoke_by_role(st, &st.roles_of(peer, &caller), &serial, rec).await?
            }
        }
        // A person (bearer token), or no one.
        _ => revoke_by_role(st, &super::caller(st, conn).await?, &serial, rec).await?,
    };
    let requester = Requester {
        kind,
        id: rec.actor.clone(),
    };
    let body = body?;
    let reason = match body.reason.as_deref() {
        None => RevocationReason::Unspecified,
        Some(r) => r.parse().map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_reason",
                "reason must be an RFC 5280 reason name such as \"keyCompromise\"",
            )
        })?,
    };
    let scope = if body.only_this {
        RevocationScope::OnlyThis
    } else {
        RevocationScope::Lineage
    };
    let ca = Arc::clone(&st.ca);
    let trust = Arc::clone(&st.trust);
    let s = serial.clone();
    // The CA records each revocation in its event sink (this server's audit log).
    let result = blocking(move || {
        let result = ca.revoke_by(&s, reason, scope, &requester, SystemTime::now());
        if result.is_ok() {
            // Enforce at once on this listener, not at the next poll.
            if let Err(e) = trust.reload() {
                tracing::error!(error = %e, "admin API: CRL reload after revocation failed");
            }
        }
        result
    })
    .await?;
    match result {
        Ok(revocation) => {
            rec.tenant = Some(revocation.certificate.tenant.to_string());
            Ok(revocation)
        }
        Err(CaError::UnknownSerial(_)) => Err(no_such_certificate()),
        Err(CaError::AlreadyRevoked { .. }) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_revoked",
            "the certificate is already revoked",
        )),
        Err(e) if e.is_unavailable() => {
            // The inventory may hold the revocation while the CRL could not be signed.
            st.crl_dirty.store(true, Ordering::Release);
            tracing::warn!(error = %e, ca.serial = %serial, "admin API: CRL not published: key backend unavailable");
            Err(ApiError::ca_unavailable())
        }
        Err(e) => {
            tracing::error!(error = %e, ca.serial = %serial, "admin API: revocation failed");
            Err(ApiError::internal())
        }
    }
}

// GET /v1/crl

/// The current CRL, to anyone: PEM, or DER when `Accept: application/pkix-crl`.
#[utoipa::path(
    operation_id = "getCrl",
    get,
    path = "/v1/crl",
    tag = "certificates",
    responses(
        (status = 200, description = "The CRL", content(
            (String = "application/x-pem-file"),
            (Vec<u8> = "application/pkix-crl"),
        )),
        (status = 429, description = "Over a rate limit", body = super::openapi::ErrorBody),
    ),
    security(())
)]
pub(super) async fn crl(
    State(st): State<Arc<AppState>>,
    Extension(conn): Extension<ConnInfo>,
    headers: HeaderMap,
) -> Response {
    let snapshot = st.trust.crl();
    let wants_der = headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|m| {
            m.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/pkix-crl"))
        });
    let response = if wants_der {
        (
            [(CONTENT_TYPE, "application/pkix-crl")],
            snapshot.der.clone(),
        )
            .into_response()
    } else {
        (
            [(CONTENT_TYPE, "application/x-pem-file")],
            snapshot.pem.clone(),
        )
            .into_response()
    };
    st.audit_call(&CallRecord::new(&conn), "crl.get", response.status());
    response
}

fn parse_serial(serial: &str) -> Result<Serial, ApiError> {
    serial.parse().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_serial",
            "the serial must be 1 to 20 bytes of hex",
        )
    })
}

/// Also the answer for a certificate of a tenant the caller holds no role in.
fn no_such_certificate() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no certificate with this serial",
    )
}

// GET /v1/certificates/{serial}/lineage

/// A certificate's family, for a caller who may read its tenant's inventory: what it renewed,
/// it, and what renewed it.
#[utoipa::path(
    operation_id = "getLineage",
    get,
    path = "/v1/certificates/{serial}/lineage",
    tag = "certificates",
    params(("serial" = String, Path, description = "The serial, hex")),
    responses(
        (status = 200, description = "Oldest first", body = super::openapi::CertificateList),
        (status = 400, description = "Not a serial", body = super::openapi::ErrorBody),
        (status = 404, description = "No such certificate (or one of a tenant the caller holds no role in)", body = super::openapi::ErrorBody),
        super::openapi::Refusals,
    ),
    security(("mtls" = []), ("bearer" = []))
)]
pub(super) async fn lineage(
    State(st): State<Arc<AppState>>,
    Extension(conn): Extension<ConnInfo>,
    PathParams(serial): PathParams<String>,
) -> Response {
    let mut rec = CallRecord::new(&conn);
    rec.target = Some(serial.chars().take(64).collect());
    let response = match lineage_flow(&st, &conn, &serial, &mut rec).await {
        Ok(certificates) => Json(ListResponse { certificates }).into_response(),
        Err(e) => e.into_response(),
    };
    st.audit_call(&rec, "certificate.lineage", response.status());
    response
}

/// A revocation by a caller acting by role.
async fn revoke_by_role(
    st: &Arc<AppState>,
    roles: &Caller,
    serial: &Serial,
    rec: &mut CallRecord,
) -> Result<RequesterKind, ApiError> {
    if !roles.has_any_role() {
        return Err(ApiError::forbidden(
            "only operators, the certificate's holder and callers with a role may revoke it",
        ));
    }
    by_role(st, roles, serial, Permission::CertificateRevoke, rec).await?;
    Ok(RequesterKind::Operator)
}

/// Checks that `roles` allow `permission` on certificate `serial` (its tenant and the role
/// then in `rec`). A certificate of a tenant the caller holds no role in does not exist for it.
async fn by_role(
    st: &Arc<AppState>,
    roles: &Caller,
    serial: &Serial,
    permission: Permission,
    rec: &mut CallRecord,
) -> Result<(), ApiError> {
    let target = inventory_get(st, serial)
        .await?
        .filter(|t| roles.sees(&t.tenant))
        .ok_or_else(no_such_certificate)?;
    rec.tenant = Some(target.tenant.to_string());
    let role = super::authorize(roles, permission, &target.tenant)?;
    rec.role = Some(role.as_str());
    Ok(())
}

async fn lineage_flow(
    st: &Arc<AppState>,
    conn: &ConnInfo,
    serial: &str,
    rec: &mut CallRecord,
) -> Result<Vec<CertRecord>, ApiError> {
    let serial = parse_serial(serial)?;
    let roles = super::caller(st, conn).await?;
    by_role(st, &roles, &serial, Permission::CertificateRead, rec).await?;
    let ca = Arc::clone(&st.ca);
    let family = blocking(move || ca.inventory().lineage(&serial, SystemTime::now()))
        .await?
        .map_err(|e| {
            tracing::error!(error = %e, "admin API: inventory lineage failed");
            ApiError::internal()
        })?;
    if family.is_empty() {
        return Err(no_such_certificate());
    }
    Ok(family)
}

// GET /v1/certificates

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    #[serde(default)]
    tenant: Option<String>,
    /// `valid`, `revoked` or `expired`.
    #[serde(default)]
    #[param(pattern = "^(valid|revoked|expired)$")]
    status: Option<String>,
    /// Valid certificates expiring within this long (`7d`).
    #[serde(default)]
    expires_within: Option<String>,
    /// A SPIFFE ID, DNS name or IP address the certificates name.
    #[serde(default)]
    #[param(min_length = 1, max_length = 1024)]
    identity: Option<String>,
    /// At most this many, newest first (default and most 1000).
    #[serde(default)]
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

#[derive(Debug, Serialize)]
struct ListResponse {
    certificates: Vec<CertRecord>,
}

/// The inventory, as far as the caller's roles reach (operators: every tenant).
#[utoipa::path(
    operation_id = "listCertificates",
    get,
    path = "/v1/certificates",
    tag = "certificates",
    params(ListQuery),
    responses(
        (status = 200, description = "Newest first", body = super::openapi::CertificateList),
        (status = 400, description = "A query parameter is not valid", body = super::openapi::ErrorBody),
        (status = 404, description = "A tenant the caller holds no role in", body = super::openapi::ErrorBody),
        super::openapi::Refusals,
    ),
    security(("mtls" = []), ("bearer" = []))
)]
pub(super) async fn list(
    State(st): State<Arc<AppState>>,
    Extension(conn): Extension<ConnInfo>,
    uri: Uri,
) -> Response {
    let mut rec = CallRecord::new(&conn);
    let response = match list_flow(&st, &conn, &uri, &mut rec).await {
        Ok(certificates) => Json(ListResponse { certificates }).into_response(),
        Err(e) => e.into_response(),
    };
    st.audit_call(&rec, "certificate.list", response.status());
    response
}

async fn list_flow(
    st: &Arc<AppState>,
    conn: &ConnInfo,
    uri: &Uri,
    rec: &mut CallRecord,
) -> Result<Vec<CertRecord>, ApiError> {
    let roles = super::caller(st, conn).await?;
    if roles
        .tenants_for(Permission::CertificateRead)
        .is_some_and(|t| t.is_empty())
    {
        return Err(ApiError::forbidden(
            "only operators and callers with a role may list certificates",
        ));
    }
    let invalid = |what: &str| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            format!("invalid query: {what}"),
        )
    };
    let Query(q) = Query::<ListQuery>::try_from_uri(uri)
        .map_err(|_| invalid("expected tenant, status, expires_within, identity, limit"))?;
    let tenant = q
        .tenant
        .map(|t| t.parse::<TenantId>())
        .transpose()
        .map_err(|_| invalid("tenant"))?;
    rec.tenant = tenant.as_ref().map(ToString::to_string);
    // The tenants to list: the one asked for, if the caller may; else every tenant it may.
    let tenants: Vec<Option<TenantId>> =
        match (tenant, roles.tenants_for(Permission::CertificateRead)) {
            (asked, None) => {
                rec.role = roles
                    .platform_role_for(Permission::CertificateRead)
                    .map(Role::as_str);
                vec![asked]
            }
            (Some(asked), Some(_)) => {
                let role = super::authorize(&roles, Permission::CertificateRead, &asked)?;
                rec.role = Some(role.as_str());
                vec![Some(asked)]
            }
            (None, Some(mine)) => {
                rec.role = mine
                    .first()
                    .and_then(|t| roles.role_for(Permission::CertificateRead, t))
                    .map(Role::as_str);
                mine.into_iter().map(Some).collect()
            }
        };
    let limit = match q.limit {
        None => MAX_LIST,
        Some(n @ 1..=MAX_LIST) => n,
        Some(_) => return Err(invalid("limit (1 to 1000)")),
    };
    let filter = InventoryFilter {
        tenant: None,
        status: q
            .status
            .map(|s| s.parse::<CertStatus>())
            .transpose()
            .map_err(|_| invalid("status (valid, revoked or expired)"))?,
        expires_within: q
            .expires_within
            .map(|d| humantime::parse_duration(&d))
            .transpose()
            .map_err(|_| invalid("expires_within (a duration such as 1h)"))?
            .map(|d: Duration| d.min(Duration::from_secs(100 * 365 * 24 * 3600))),
        identity: match q.identity {
            Some(i) if i.is_empty() || i.len() > 1024 => {
                return Err(invalid("identity (1 to 1024 characters)"))
            }
            other => other,
        },
        limit: Some(limit),
    };
    let ca = Arc::clone(&st.ca);
    blocking(move || {
        let now = SystemTime::now();
        let mut all = Vec::new();
        for tenant in tenants {
            let filter = InventoryFilter {
                tenant,
                ..filter.clone()
            };
            all.extend(ca.list(&filter, now)?);
        }
        // Newest first across tenants, as the inventory lists one.
        all.sort_by_key(|c| std::cmp::Reverse(c.not_before));
        all.truncate(limit);
        Ok::<_, CaError>(all)
    })
    .await?
    .map_err(|e| {
        tracing::error!(error = %e, "admin API: inventory listing failed");
        ApiError::internal()
    })
}

/// One certificate as the inventory holds it.
async fn inventory_get(st: &AppState, serial: &Serial) -> Result<Option<CertRecord>, ApiError> {
    let ca = Arc::clone(&st.ca);
    let serial = serial.clone();
    blocking(move || ca.inventory().get(&serial, SystemTime::now()))
        .await?
        .map_err(|e| {
            tracing::error!(error = %e, "admin API: inventory lookup failed");
            ApiError::internal()
        })
}
