//! A tenant's webhooks under `/v1/tenants/{tenant}/webhooks`: subscriptions created (their
//! secret shown once), listed and removed; deliveries listed (the dead letters among them) and
//! sent again.

use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use portcullis_ca::TenantId;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{
    blocking, finish, read_json, scoped_tenant, ApiError, AppState, CallRecord, PathParams,
};
use crate::identity::ConnInfo;
use crate::roles::Permission;
use crate::webhooks::{
    new_id, new_secret, DeliveryStatus, StoreError, Subscription, Webhooks, EVENT_TYPES,
};

/// Subscriptions a tenant may hold.
const MAX_SUBSCRIPTIONS: usize = 50;

pub(super) fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(remove))
        .routes(routes!(deliveries))
        .routes(routes!(retry))
}

/// The tenant, once the caller holds `permission` in it, and the webhook service.
async fn scoped(
    st: &Arc<AppState>,
    conn: &ConnInfo,
    tenant: &str,
    permission: Permission,
    rec: &mut CallRecord,
) -> Result<(TenantId, Arc<Webhooks>), ApiError> {
    let tenant = scoped_tenant(st, conn, tenant, permission, rec).await?;
    let webhooks = st
        .webhooks
        .clone()
        .ok_or_else(|| ApiError::not_found("webhooks are not enabled on this server"))?;
    Ok((tenant, webhooks))
}

fn store_error(e: StoreError) -> ApiError {
    tracing::error!(error = %e, "admin API: webhook store failed");
    ApiError::internal()
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "malformed_request", message)
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = WebhookRequest)]
struct CreateBody {
    /// Where deliveries go (`https://`).
    url: String,
    /// One or more of `certificate.revoked`, `certificate.issuance_refused`,
    /// `certificate.expiring`, `policy.activated`, `dlp.block_spike`.
    events: Vec<String>,
    /// At most 200 characters.
    description: Option<String>,
}

/// Subscribes a URL to events of the tenant; the signing secret is shown in this answer only.
#[utoipa::path(
    operation_id = "createWebhook",
    post,
    path = "/v1/tenants/{tenant}/webhooks",
    tag = "webhooks",
    params(("tenant" = String, Path, example = "acme")),
    request_body = CreateBody,
    responses(
        (status = 201, description = "Subscribed", body = super::openapi::WebhookCreated),
        (status = 404, description = "A tenant the caller holds no role in, or webhooks not enabled", body = super::openapi::ErrorBody),
        (status = 409, description = "The tenant holds the most subscriptions it may", body = super::openapi::ErrorBody),
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
        let body: CreateBody = read_json(&headers, body, false).await?;
        let (tenant, webhooks) =
            scoped(&st, &conn, &tenant, Permission::WebhookManage, &mut rec).await?;
        webhooks.check_url(&body.url).map_err(invalid)?;
        let mut events = Vec::new();
        for e in &body.events {
            if !EVENT_TYPES.contains(&e.as_str()) {
                return Err(invalid(format!(
                    "events: unknown event {:?}; known: {}",
                    e.chars().take(64).collect::<String>(),
                    EVENT_TYPES.join(", ")
                )));
            }
            if !events.contains(e) {
                events.push(e.clone());
            }
        }
        if events.is_empty() {
            return Err(invalid(format!(
                "events: at least one of {}",
                EVENT_TYPES.join(", ")
            )));
        }
        if body.description.as_ref().is_some_and(|d| d.len() > 200) {
            return Err(invalid("description: at most 200 characters"));
        }
        let (Some(id), Some(secret)) = (new_id("wh_"), new_secret()) else {
            tracing::error!("admin API: no random bytes for a webhook");
            return Err(ApiError::internal());
        };
        rec.target = Some(id.clone());
        let sub = Subscription {
            id,
            url: body.url,
            events,
            description: body.description,
            created_by: rec.actor.clone(),
            created_at: SystemTime::now(),
        };
        let (store, stored, shown) = (Arc::clone(webhooks.store()), sub.clone(), secret.clone());
        let t = tenant.clone();
        let count = blocking(move || {
            let existing = store.subscriptions(&t)?.len();
            if existing >= MAX_SUBSCRIPTIONS {
                return Ok(existing);
            }
            store.subscribe(&t, &stored, &secret).map(|()| existing)
        })
        .await?
        .map_err(store_error)?;
        if count >= MAX_SUBSCRIPTIONS {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "too_many_webhooks",
                format!("a tenant holds at most {MAX_SUBSCRIPTIONS} webhook subscriptions"),
            ));
        }
        let mut answer = serde_json::to_value(&sub).unwrap_or_default();
        answer["secret"] = serde_json::Value::String(shown);
        Ok((StatusCode::CREATED, Json(answer)).into_response())
    }
    .await;
    finish(&st, &rec, "webhook.create", result)
}

/// The tenant's subscriptions (never their secrets).
#[utoipa::path(
    operation_id = "listWebhooks",
    get,
    path = "/v1/tenants/{tenant}/webhooks",
    tag = "webhooks",
    params(("tenant" = String, Path, example = "acme")),
    responses(
        (status = 200, description = "The subscriptions", body = super::openapi::WebhookList),
        (status = 404, description = "A tenant the caller holds no role in, or webhooks not enabled", body = super::openapi::ErrorBody),
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
        let (tenant, webhooks) =
            scoped(&st, &conn, &tenant, Permission::WebhookRead, &mut rec).await?;
        let store = Arc::clone(webhooks.store());
        let list = blocking(move || store.subscriptions(&tenant))
            .await?
            .map_err(store_error)?;
        Ok(Json(serde_json::json!({ "webhooks": list })).into_response())
    }
    .await;
    finish(&st, &rec, "webhook.list", result)
}

/// Removes a subscription.
#[utoipa::path(
    operation_id = "deleteWebhook",
    delete,
    path = "/v1/tenants/{tenant}/webhooks/{id}",
    tag = "webhooks",
    params(("tenant" = String, Path, example = "acme"), ("id" = String, Path, description = "The subscription's id")),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "No such webhook, or a tenant the caller holds no role in", body = super::openapi::ErrorBody),
        super::openapi::Refusals,
    )
)]
async fn remove(
    State(st): State<Arc<AppState>>,
    Extension(conn): Extension<ConnInfo>,
    PathParams((tenant, id)): PathParams<(String, String)>,
) -> Response {
    let mut rec = CallRecord::new(&conn);
    let result = async {
        let (tenant, webhooks) =
            scoped(&st, &conn, &tenant, Permission::WebhookManage, &mut rec).await?;
        rec.target = Some(id.chars().take(64).collect());
        let store = Arc::clone(webhooks.store());
        let found = blocking(move || store.unsubscribe(&tenant, &id))
            .await?
            .map_err(store_error)?;
        if !found {
            return Err(ApiError::not_found("no such webhook"));
        }
        Ok(StatusCode::NO_CONTENT.into_response())
    }
    .await;
    finish(&st, &rec, "webhook.delete", result)
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct DeliveriesQuery {
    /// `pending`, `delivered` or `dead`.
    #[param(pattern = "^(pending|delivered|dead)$")]
    status: Option<String>,
    /// At most this many, newest first (default 100, at most 1000).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// The tenant's deliveries, the dead letters among them.
#[utoipa::path(
    operation_id = "listDeliveries",
    get,
    path = "/v1/tenants/{tenant}/webhooks/deliveries",
    tag = "webhooks",
    params(("tenant" = String, Path, example = "acme"), DeliveriesQuery),
    responses(
        (status = 200, description = "Newest first", body = super::openapi::DeliveryList),
        (status = 400, description = "A query parameter is not valid", body = super::openapi::ErrorBody),
        (status = 404, description = "A tenant the caller holds no role in, or webhooks not enabled", body = super::openapi::ErrorBody),
        super::openapi::Refusals,
    )
)]
async fn deliveries(
    State(st): State<Arc<AppState>>,
    Extension(conn): Extension<ConnInfo>,
    PathParams(tenant): PathParams<String>,
    uri: Uri,
) -> Response {
    let mut rec = CallRecord::new(&conn);
    let result = async {
        let (tenant, webhooks) =
            scoped(&st, &conn, &tenant, Permission::WebhookRead, &mut rec).await?;
        let Query(q) = Query::<DeliveriesQuery>::try_from_uri(&uri).map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                "invalid query: expected status (pending, delivered, dead) and limit",
            )
        })?;
        let status = match q.status.as_deref() {
            None => None,
            Some(s) => Some(DeliveryStatus::parse(s).ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_query",
                    "invalid query: status is pending, delivered or dead",
                )
            })?),
        };
        let limit = match q.limit {
            None => 100,
            Some(n @ 1..=1000) => n,
            Some(_) => {
                return Err(ApiError::invalid_query("limit: 1 to 1000"));
            }
        };
        let store = Arc::clone(webhooks.store());
        let list = blocking(move || store.deliveries(&tenant, status, limit))
            .await?
            .map_err(store_error)?;
        let list: Vec<serde_json::Value> = list
            .into_iter()
            .map(|d| {
                let mut v = serde_json::to_value(&d).unwrap_or_default();
                v["payload"] = serde_json::from_str(&d.payload).unwrap_or_default();
                v
            })
            .collect();
        Ok(Json(serde_json::json!({ "deliveries": list })).into_response())
    }
    .await;
    finish(&st, &rec, "webhook.deliveries", result)
}

/// Sends a dead letter again.
#[utoipa::path(
    operation_id = "retryDelivery",
    post,
    path = "/v1/tenants/{tenant}/webhooks/deliveries/{id}/retry",
    tag = "webhooks",
    params(("tenant" = String, Path, example = "acme"), ("id" = String, Path, description = "The delivery's id")),
    responses(
        (status = 202, description = "Queued again"),
        (status = 404, description = "No such dead letter, or a tenant the caller holds no role in", body = super::openapi::ErrorBody),
        super::openapi::Refusals,
    )
)]
async fn retry(
    State(st): State<Arc<AppState>>,
    Extension(conn): Extension<ConnInfo>,
    PathParams((tenant, id)): PathParams<(String, String)>,
) -> Response {
    let mut rec = CallRecord::new(&conn);
    let result = async {
        let (tenant, webhooks) =
            scoped(&st, &conn, &tenant, Permission::WebhookManage, &mut rec).await?;
        rec.target = Some(id.chars().take(64).collect());
        let store = Arc::clone(webhooks.store());
        let found = blocking(move || store.requeue(&tenant, &id, SystemTime::now()))
            .await?
            .map_err(store_error)?;
        if !found {
            return Err(ApiError::not_found("no such dead letter"));
        }
        webhooks.wake();
        Ok(StatusCode::ACCEPTED.into_response())
    }
    .await;
    finish(&st, &rec, "webhook.retry", result)
}
