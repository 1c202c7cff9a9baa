//! `GET /v1/tenants/{tenant}/reports/{kind}?format=json|csv`: `access` (who may reach which
//! routes, from the policy in effect), `certificates` (the inventory and what expires within
//! `within`, 30d by default), `changes` (the policy history) and `audit` (the recorded traffic
//! of the last `window`, 24h by default). Each is stamped (`computed_at`, `policy_serial`,
//! `audit_heads`); CSV answers carry the stamp in `x-portcullis-report-*` headers.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{Query, State};
use axum::http::{header::CONTENT_TYPE, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use portcullis_ca::{CertRecord, InventoryFilter};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{blocking, finish, scoped_tenant, ApiError, AppState, CallRecord, PathParams};
use crate::identity::ConnInfo;
use crate::policies::reports::{rows_csv, Stamp};
use crate::policies::PolicyError;
use crate::roles::Permission;

/// Longest period a report covers.
const MAX_PERIOD: Duration = Duration::from_secs(366 * 24 * 3600);

pub(super) fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new().routes(routes!(report))
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ReportQuery {
    /// `json` (the default) or `csv`.
    #[param(pattern = "^(json|csv)$")]
    format: Option<String>,
    /// `audit`: how far back (default 24h, at most 366d).
    window: Option<String>,
    /// `certificates`: what counts as expiring (default 30d, at most 366d).
    within: Option<String>,
}

fn period(text: Option<&str>, default: Duration, what: &str) -> Result<Duration, ApiError> {
    match text {
        None => Ok(default),
        Some(t) => humantime::parse_duration(t)
            .ok()
            .filter(|d| !d.is_zero() && *d <= MAX_PERIOD)
            .ok_or_else(|| ApiError::invalid_query(&format!("{what}: a duration up to 366d"))),
    }
}

enum Body {
    Json(serde_json::Value),
    Csv(String, Stamp),
}

/// A report of the tenant, stamped with the policy serial and audit chain heads it was
/// computed at (in CSV: the `x-portcullis-report-*` headers).
#[utoipa::path(
    operation_id = "getReport",
    get,
    path = "/v1/tenants/{tenant}/reports/{kind}",
    tag = "reports",
    params(
        ("tenant" = String, Path, example = "acme"),
        ("kind" = inline(super::openapi::ReportKind), Path),
        ReportQuery,
    ),
    responses(
        (status = 200, description = "The report", content(
            (Object = "application/json"),
            (String = "text/csv"),
        )),
        (status = 400, description = "A query parameter is not valid", body = super::openapi::ErrorBody),
        (status = 404, description = "No such report, a tenant the caller holds no role in, or policies not managed here", body = super::openapi::ErrorBody),
        (status = 409, description = "The policies in effect do not make a valid config", body = super::openapi::ErrorBody),
        (status = 503, description = "The report could not be computed", body = super::openapi::ErrorBody),
        super::openapi::Refusals,
    )
)]
async fn report(
    State(st): State<Arc<AppState>>,
    Extension(conn): Extension<ConnInfo>,
    PathParams((tenant, kind)): PathParams<(String, String)>,
    uri: Uri,
) -> Response {
    let mut rec = CallRecord::new(&conn);
    let action = format!("report.{}", kind.chars().take(16).collect::<String>());
    let result = async {
        let permission = match kind.as_str() {
            "access" | "changes" => Permission::PolicyRead,
            "certificates" => Permission::CertificateRead,
            "audit" => Permission::PolicyAnalyse,
            _ => return Err(ApiError::not_found("no such report")),
        };
        let Ok(Query(q)) = Query::<ReportQuery>::try_from_uri(&uri) else {
            return Err(ApiError::invalid_query("format, window, within"));
        };
        let csv = match q.format.as_deref() {
            None | Some("json") => false,
            Some("csv") => true,
            Some(_) => return Err(ApiError::invalid_query("format: json or csv")),
        };
        let window = period(
            q.window.as_deref(),
            Duration::from_secs(24 * 3600),
            "window",
        )?;
        let within = period(
            q.within.as_deref(),
            Duration::from_secs(30 * 24 * 3600),
            "within",
        )?;
        let tenant = scoped_tenant(&st, &conn, &tenant, permission, &mut rec).await?;
        let policies = st
            .policies
            .clone()
            .ok_or_else(|| ApiError::not_found("policies are not managed by this server"))?;
        let ca = Arc::clone(&st.ca);
        let body = blocking(move || -> Result<Body, PolicyError> {
            let now = SystemTime::now();
            let csv_error = |e: csv::Error| {
                tracing::error!(error = %e, "report: CSV failed");
                PolicyError::Traffic
            };
            Ok(match kind.as_str() {
                "access" => {
                    let r = policies.access_review(&tenant, now)?;
                    if csv {
                        Body::Csv(r.csv().map_err(csv_error)?, r.stamp)
                    } else {
                        Body::Json(serde_json::to_value(r).unwrap_or_default())
                    }
                }
                "changes" => {
                    let stamp = policies.stamp(now)?;
                    let history = policies.history(&tenant)?;
                    if csv {
                        Body::Csv(rows_csv(&history).map_err(csv_error)?, stamp)
                    } else {
                        Body::Json(serde_json::json!({ "stamp": stamp, "history": history }))
                    }
                }
                "audit" => {
                    let r = policies.audit_summary(&tenant, window, now)?;
                    if csv {
                        Body::Csv(r.csv().map_err(csv_error)?, r.stamp)
                    } else {
                        Body::Json(serde_json::to_value(r).unwrap_or_default())
                    }
                }
                _ => {
                    let stamp = policies.stamp(now)?;
                    let filter = InventoryFilter {
                        tenant: Some(tenant.clone()),
                        limit: Some(100_000),
                        ..InventoryFilter::default()
                    };
                    let list = ca.list(&filter, now).map_err(|e| {
                        tracing::error!(error = %e, "report: inventory listing failed");
                        PolicyError::Traffic
                    })?;
                    let expiring = list
                        .iter()
                        .filter(|c| {
                            c.status == portcullis_ca::CertStatus::Valid
                                && c.not_after <= now + within
                        })
                        .count();
                    if csv {
                        Body::Csv(certificates_csv(&list).map_err(csv_error)?, stamp)
                    } else {
                        Body::Json(serde_json::json!({
                            "stamp": stamp,
                            "expiring": expiring,
                            "expiring_within": humantime::format_duration(within).to_string(),
                            "certificates": list,
                        }))
                    }
                }
            })
        })
        .await?;
        Ok(match body {
            Ok(Body::Json(v)) => Json(v).into_response(),
            Ok(Body::Csv(text, stamp)) => csv_response(text, &stamp),
            Err(PolicyError::Store(e)) => super::policies::store_error(e).into_response(),
            Err(PolicyError::Invalid(_)) => ApiError::new(
                StatusCode::CONFLICT,
                "policy_conflict",
                "the policies in effect do not make a valid config; see the server log",
            )
            .into_response(),
            Err(PolicyError::Traffic) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "report_unavailable",
                "the report could not be computed; see the server log",
            )
            .into_response(),
        })
    }
    .await;
    finish(&st, &rec, &action, result)
}

fn certificates_csv(list: &[CertRecord]) -> Result<String, csv::Error> {
    let rows: Vec<[String; 8]> = list
        .iter()
        .map(|c| {
            let time = |t: SystemTime| humantime::format_rfc3339_seconds(t).to_string();
            [
                c.serial.to_string(),
                c.subject.clone(),
                c.sans.join(" "),
                c.profile.clone(),
                time(c.not_before),
                time(c.not_after),
                format!("{:?}", c.status).to_lowercase(),
                c.revoked_at.map(time).unwrap_or_default(),
            ]
        })
        .collect();
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "serial",
        "subject",
        "sans",
        "profile",
        "not_before",
        "not_after",
        "status",
        "revoked_at",
    ])?;
    for row in rows {
        w.write_record(&row)?;
    }
    let bytes = w.into_inner().map_err(|e| e.into_error())?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn csv_response(text: String, stamp: &Stamp) -> Response {
    let mut response = (StatusCode::OK, text).into_response();
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    let head = stamp
        .audit_heads
        .iter()
        .map(|h| format!("{}:{}:{}", h.node, h.seq, h.hash))
        .collect::<Vec<_>>()
        .join(", ");
    for (name, value) in [
        ("x-portcullis-report-computed-at", stamp.computed_at.clone()),
        (
            "x-portcullis-report-policy-serial",
            stamp.policy_serial.to_string(),
        ),
        ("x-portcullis-report-audit-heads", head),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    }
    response
}
