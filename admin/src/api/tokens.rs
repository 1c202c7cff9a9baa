//! Bootstrap tokens of a tenant under `/v1/tenants/{tenant}/tokens`: created (the secret shown
//! once), listed (never their secrets) and revoked, by role on the tenant.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{
    blocking, finish, read_json, scoped_tenant, ApiError, AppState, CallRecord, PathParams,
};
use crate::identity::ConnInfo;
use crate::roles::Permission;
use crate::token::create_token;

pub(super) fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(revoke))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = TokenRequest)]
struct CreateBody {
    /// The one SPIFFE ID the token may obtain, if bound.
    spiffe_id: Option<String>,
    /// How long it stays usable (`1h` by default).
    ttl: Option<String>,
}

/// Creates a bootstrap token of the tenant; its secret is shown in this answer only.
#[utoipa::path(
    operation_id = "createToken",
    post,
    path = "/v1/tenants/{tenant}/tokens",
    tag = "tokens",
    params(("tenant" = String, Path, example = "acme")),
    request_body(content = Option<CreateBody>, description = "Empty for an unbound token valid 1h"),
    responses(
        (status = 201, description = "Created", body = super::openapi::TokenCreated),
        (status = 404, description = "A tenant the caller holds no role in", body = super::openapi::ErrorBody),
        super::openapi::BodyRefusals,
        super::openapi::Refusals,
    )
)]
async fn create(
    State(st): State<Arc<AppState>>,
    Extension(conn): Extension<ConnInfo>,
    PathParams(tenant): PathParams<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut rec = CallRecord::new(&conn);
    let result = async {
        let body: CreateBody = read_json(&headers, body, true).await?;
        let tenant = scoped_tenant(&st, &conn, &tenant, Permission::TokenManage, &mut rec).await?;
        let ttl = match body.ttl.as_deref() {
            None => Duration::from_secs(3600),
            Some(t) => humantime::parse_duration(t).map_err(|_| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "malformed_request",
                    "ttl: a duration such as 1h",
                )
            })?,
        };
        let tokens = Arc::clone(&st.tokens);
        let actor = rec.actor.clone();
        let created = blocking(move || {
            create_token(
                &*tokens,
                tenant,
                body.spiffe_id,
                ttl,
                Some(actor),
                SystemTime::now(),
            )
        })
        .await?;
        let (token, grant) = created.map_err(|e| match e {
            crate::AdminError::Invalid(message) => {
                ApiError::new(StatusCode::BAD_REQUEST, "malformed_request", message)
            }
            other => {
                tracing::error!(error = %other, "admin API: token creation failed");
                ApiError::internal()
            }
        })?;
        rec.target = Some(grant.id.to_string());
        let body = serde_json::json!({
            "token": token.expose(),
            "id": grant.id.as_str(),
            "spiffe_id": grant.spiffe_id,
            "expires_at": humantime::format_rfc3339_seconds(grant.expires_at).to_string(),
        });
        Ok((StatusCode::CREATED, Json(body)).into_response())
    }
    .await;
    finish(&st, &rec, "token.create", result)
}

/// The tenant's bootstrap tokens (never their secrets).
#[utoipa::path(
    operation_id = "listTokens",
    get,
    path = "/v1/tenants/{tenant}/tokens",
    tag = "tokens",
    params(("tenant" = String, Path, example = "acme")),
    responses(
        (status = 200, description = "The tokens", body = super::openapi::TokenList),
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
        let tokens = Arc::clone(&st.tokens);
        let list = blocking(move || tokens.list(&tenant, SystemTime::now()))
            .await?
            .map_err(|e| {
                tracing::error!(error = %e, "admin API: token listing failed");
                ApiError::internal()
            })?;
        Ok(Json(serde_json::json!({ "tokens": list })).into_response())
    }
    .await;
    finish(&st, &rec, "token.list", result)
}

/// Revokes a bootstrap token.
#[utoipa::path(
    operation_id = "revokeToken",
    delete,
    path = "/v1/tenants/{tenant}/tokens/{id}",
    tag = "tokens",
    params(("tenant" = String, Path, example = "acme"), ("id" = String, Path, description = "The token's id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, description = "No such token, or a tenant the caller holds no role in", body = super::openapi::ErrorBody),
        super::openapi::Refusals,
    )
)]
async fn revoke(
    State(st): State<Arc<AppState>>,
    Extension(conn): Extension<ConnInfo>,
    PathParams((tenant, id)): PathParams<(String, String)>,
) -> Response {
    let mut rec = CallRecord::new(&conn);
    let result = async {
        let tenant = scoped_tenant(&st, &conn, &tenant, Permission::TokenManage, &mut rec).await?;
        rec.target = Some(id.chars().take(64).collect());
        let tokens = Arc::clone(&st.tokens);
        let found = blocking(move || tokens.revoke(&tenant, &id))
            .await?
            .map_err(|e| {
                tracing::error!(error = %e, "admin API: token revocation failed");
                ApiError::internal()
            })?;
        if !found {
            return Err(ApiError::not_found("no such token"));
        }
        Ok(StatusCode::NO_CONTENT.into_response())
    }
    .await;
    finish(&st, &rec, "token.revoke", result)
}
