//! The ACME resources: accounts, orders, authorizations and their challenges (finalization,
//! download and revocation are in `certificates`).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use portcullis_identity::DnsName;
use serde::Deserialize;
use serde_json::{json, Value};

use super::jws::{self, b64};
use super::order::{Authz, Order, OrderRefused, Status};
use super::renewal::check_replaces;
use super::store::{Account, AcmeStore};
use super::{finish, verify_post, AcmeService, Problem, Signed, ORDER_TTL};
use crate::api::{blocking, AppState, CallRecord};
use crate::error::AdminError;
use crate::identity::ConnInfo;

/// Names in one order at most.
const MAX_IDENTIFIERS: usize = 100;

pub(super) fn acme(st: &AppState) -> Result<&AcmeService, Problem> {
    st.acme.as_deref().ok_or_else(Problem::not_found)
}

/// Runs a store call off the async threads.
pub(super) async fn blocking_store<T: Send + 'static>(
    st: &AppState,
    f: impl FnOnce(&AcmeStore) -> Result<T, AdminError> + Send + 'static,
) -> Result<T, Problem> {
    let Some(service) = st.acme.clone() else {
        return Err(Problem::not_found());
    };
    blocking(move || f(&service.store))
        .await
        .map_err(|_| Problem::server_internal())?
        .map_err(|e| {
            tracing::error!(error = %e, "acme: store failed");
            Problem::server_internal()
        })
}

fn random_id() -> Result<String, Problem> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Problem::server_internal())?;
    Ok(b64(&bytes))
}

pub(super) fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Answers `result`, adding the ACME headers.
pub(super) async fn respond(
    st: &AppState,
    base: Option<&str>,
    result: Result<Response, Problem>,
) -> Response {
    let response = match result {
        Ok(r) => r,
        Err(p) => p.into_response(),
    };
    finish(st, base, response).await
}

pub(super) fn json_response(status: StatusCode, body: Value, location: Option<String>) -> Response {
    let mut r = (status, axum::Json(body)).into_response();
    if let Some(l) = location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        r.headers_mut().insert(header::LOCATION, l);
    }
    r
}

fn account_json(a: &Account) -> Value {
    json!({ "status": "valid", "contact": a.contact })
}

fn account_url(base: &str, id: i64) -> String {
    format!("{base}/acme/account/{id}")
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewAccount {
    #[serde(default)]
    contact: Vec<String>,
    #[serde(default)]
    only_return_existing: bool,
    #[serde(default)]
    external_account_binding: Option<Value>,
    #[serde(default, rename = "termsOfServiceAgreed")]
    _tos: Option<bool>,
}

pub(super) async fn new_account(
    State(st): State<Arc<AppState>>,
    axum::Extension(conn): axum::Extension<ConnInfo>,
    headers: HeaderMap,
    uri: Uri,
    body: Body,
) -> Response {
    let mut rec = CallRecord::new(&conn);
    let result = new_account_flow(&st, &headers, &uri, body, &mut rec).await;
    let base = super::base_url(&headers, &uri).ok();
    let response = respond(&st, base.as_deref(), result).await;
    st.audit_call(&rec, "acme.account.create", response.status());
    response
}

async fn new_account_flow(
    st: &Arc<AppState>,
    headers: &HeaderMap,
    uri: &Uri,
    body: Body,
    rec: &mut CallRecord,
) -> Result<Response, Problem> {
    acme(st)?;
    let Signed {
        payload, jwk, base, ..
    } = verify_post(st, headers, uri, body, true).await?;
    let Some(jwk) = jwk else {
        return Err(Problem::malformed("newAccount is signed with the jwk form"));
    };
    let req: NewAccount = serde_json::from_slice(&payload)
        .map_err(|_| Problem::malformed("the newAccount payload is not the expected JSON"))?;
    let thumbprint = jwk.thumbprint();
    let t = thumbprint.clone();
    if let Some(existing) =
        blocking_store(st, move |s| s.backend().account_by_thumbprint(&t)).await?
    {
        rec.tenant = Some(existing.tenant.to_string());
        rec.target = Some(format!("account:{}", existing.id));
        return Ok(json_response(
            StatusCode::OK,
            account_json(&existing),
            Some(account_url(&base, existing.id)),
        ));
    }
    if req.only_return_existing {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "accountDoesNotExist",
            "no account has this key",
        ));
    }
    if req.contact.len() > 4 || req.contact.iter().any(|c| c.len() > 256) {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "invalidContact",
            "at most 4 contacts of at most 256 characters",
        ));
    }
    let Some(eab) = req.external_account_binding else {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "externalAccountRequired",
            "this server requires an external account binding",
        ));
    };
    let url = format!("{base}{}", uri.path());
    // The MAC key is read from the store before the (CPU-only) check.
    let kid_in = eab
        .get("protected")
        .and_then(Value::as_str)
        .and_then(|p| jws::unb64(p, "protected").ok())
        .and_then(|p| serde_json::from_slice::<Value>(&p).ok())
        .and_then(|h| h.get("kid").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_default();
    let k = kid_in.clone();
    let mac_key = blocking_store(st, move |s| s.eab_mac_key(&k, SystemTime::now())).await?;
    let kid = jws::verify_eab(&eab, &jwk, &url, |kid| {
        Ok((kid == kid_in)
            .then_some(mac_key)
            .flatten()
            .map(|k| k.to_vec()))
    })
    .inspect_err(
        |_| tracing::info!(acme.eab_kid = %kid_in, "acme: external account binding refused"),
    )?;
    let canonical = jwk.canonical();
    let contact = req.contact.clone();
    let account = blocking_store(st, move |s| {
        s.backend()
            .create_account(&kid, &thumbprint, &canonical, &contact, SystemTime::now())
    })
    .await?
    .ok_or_else(|| Problem::unauthorized("the external account binding does not verify"))?;
    rec.tenant = Some(account.tenant.to_string());
    rec.target = Some(format!("account:{}", account.id));
    tracing::info!(acme.account = account.id, tenant.id = %account.tenant, acme.eab_kid = %account.eab_kid, "acme: account created");
    Ok(json_response(
        StatusCode::CREATED,
        account_json(&account),
        Some(account_url(&base, account.id)),
    ))
}

/// The account, by its owner: POST-as-GET or an update (only reading is supported; a
/// deactivation is refused).
pub(super) async fn account(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    body: Body,
) -> Response {
    let base = super::base_url(&headers, &uri).ok();
    let result = async {
        let signed = signed_by_account(&st, &headers, &uri, body).await?;
        let account = owner(&signed)?;
        if id != account.id.to_string() {
            return Err(Problem::unauthorized("not this account's resource"));
        }
        if let Ok(v) = serde_json::from_slice::<Value>(&signed.payload) {
            if v.get("status").is_some_and(|s| s != "valid") {
                return Err(Problem::malformed("account deactivation is not supported"));
            }
        }
        Ok(json_response(
            StatusCode::OK,
            account_json(account),
            Some(account_url(&signed.base, account.id)),
        ))
    }
    .await;
    respond(&st, base.as_deref(), result).await
}

pub(super) async fn signed_by_account(
    st: &AppState,
    headers: &HeaderMap,
    uri: &Uri,
    body: Body,
) -> Result<Signed, Problem> {
    verify_post(st, headers, uri, body, false).await
}

pub(super) fn owner(signed: &Signed) -> Result<&Account, Problem> {
    signed
        .account
        .as_ref()
        .ok_or_else(|| Problem::unauthorized("sign with an account"))
}

#[derive(Debug, Deserialize)]
struct Identifier {
    #[serde(rename = "type")]
    kind: String,
    value: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewOrder {
    identifiers: Vec<Identifier>,
    #[serde(default)]
    not_before: Option<String>,
    #[serde(default)]
    not_after: Option<String>,
    /// The certID of the certificate this order replaces (RFC 9773 §5).
    #[serde(default)]
    replaces: Option<String>,
}

/// The names of an order, checked against the account's profile before any validation.
fn order_names(
    st: &AppState,
    account: &Account,
    req: &NewOrder,
    dns01: bool,
) -> Result<Vec<String>, Problem> {
    if req.not_before.is_some() || req.not_after.is_some() {
        return Err(Problem::malformed(
            "notBefore and notAfter are not supported: the profile sets the lifetime",
        ));
    }
    if req.identifiers.is_empty() || req.identifiers.len() > MAX_IDENTIFIERS {
        return Err(Problem::malformed(format!(
            "an order names 1 to {MAX_IDENTIFIERS} identifiers"
        )));
    }
    let profile = st
        .ca
        .profiles()
        .iter()
        .find(|p| p.tenant == account.tenant && p.name == account.profile)
        .ok_or_else(|| {
            tracing::warn!(tenant.id = %account.tenant, ca.profile = %account.profile, "acme: the account's profile is gone");
            Problem::unauthorized("the account's profile no longer exists")
        })?;
    let mut names = BTreeSet::new();
    for id in &req.identifiers {
        let shown: String = id.value.chars().take(80).collect();
        if id.kind != "dns" {
            return Err(Problem::new(
                StatusCode::BAD_REQUEST,
                "unsupportedIdentifier",
                "this server issues DNS names only",
            ));
        }
        let name: DnsName = id.value.parse().map_err(|_| {
            Problem::new(
                StatusCode::BAD_REQUEST,
                "rejectedIdentifier",
                format!("{shown:?} is not a DNS name"),
            )
        })?;
        if name.is_wildcard() && !dns01 {
            return Err(Problem::new(
                StatusCode::BAD_REQUEST,
                "rejectedIdentifier",
                "wildcard names need dns-01, which this server does not offer",
            ));
        }
        if !profile.dns_names.iter().any(|p| p.covers(&name)) {
            return Err(Problem::new(
                StatusCode::BAD_REQUEST,
                "rejectedIdentifier",
                format!("{shown:?} is not allowed by this account's profile"),
            ));
        }
        names.insert(name.as_str().to_owned());
    }
    Ok(names.into_iter().collect())
}

pub(super) async fn new_order(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    uri: Uri,
    body: Body,
) -> Response {
    let base = super::base_url(&headers, &uri).ok();
    let result = async {
        let signed = signed_by_account(&st, &headers, &uri, body).await?;
        let account = owner(&signed)?;
        let req: NewOrder = serde_json::from_slice(&signed.payload)
            .map_err(|_| Problem::malformed("the newOrder payload is not the expected JSON"))?;
        let acme = acme(&st)?;
        let names = order_names(&st, account, &req, acme.dns01.is_some())?;
        let replaces = match &req.replaces {
            Some(text) => Some(check_replaces(&st, account.id, text, &names).await?),
            None => None,
        };
        let expires = SystemTime::now() + ORDER_TTL;
        let mut authz_ids = Vec::with_capacity(names.len());
        let mut new_authz = Vec::with_capacity(names.len());
        for name in &names {
            let id = random_id()?;
            authz_ids.push(id.clone());
            new_authz.push((
                id,
                Authz {
                    account: account.id,
                    name: name.clone(),
                    expires,
                    token: random_id()?,
                    status: Status::Pending,
                    chosen: None,
                    validated: None,
                    error: None,
                },
            ));
        }
        let order_id = random_id()?;
        let order = Order {
            account: account.id,
            status: Status::Pending,
            expires,
            names,
            authz: authz_ids,
            certificate: None,
            error: None,
            replaces,
        };
        let body = order_json(&signed.base, &order_id, &order);
        let id = order_id.clone();
        let added = blocking_store(&st, move |s| {
            s.backend()
                .add_order(&id, &order, &new_authz, SystemTime::now())
        })
        .await?;
        match added {
            Ok(()) => {}
            Err(OrderRefused::TooMany) => {
                return Err(Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "rateLimited",
                    "too many orders in progress; retry later",
                ))
            }
            Err(OrderRefused::AlreadyReplaced) => {
                return Err(Problem::new(
                    StatusCode::CONFLICT,
                    "alreadyReplaced",
                    "another order already replaces this certificate",
                ))
            }
        }
        Ok(json_response(
            StatusCode::CREATED,
            body,
            Some(format!("{}/acme/order/{order_id}", signed.base)),
        ))
    }
    .await;
    respond(&st, base.as_deref(), result).await
}

pub(super) fn order_json(base: &str, id: &str, o: &Order) -> Value {
    let mut v = json!({
        "status": o.status.as_str(),
        "expires": rfc3339(o.expires),
        "identifiers": o.names.iter().map(|n| json!({"type": "dns", "value": n})).collect::<Vec<_>>(),
        "authorizations": o.authz.iter().map(|a| format!("{base}/acme/authz/{a}")).collect::<Vec<_>>(),
        "finalize": format!("{base}/acme/order/{id}/finalize"),
    });
    if let Some(serial) = &o.certificate {
        v["certificate"] = json!(format!("{base}/acme/cert/{serial}"));
    }
    if let Some(e) = &o.error {
        v["error"] = e.clone();
    }
    if let Some(r) = &o.replaces {
        v["replaces"] = json!(r.text());
    }
    v
}

/// The challenges offered for an authorization: http-01 and tls-alpn-01 (not for a wildcard
/// name) and dns-01 when a resolver is configured.
fn offered(a: &Authz, dns01: bool) -> Vec<&'static str> {
    let mut kinds = Vec::with_capacity(3);
    if !a.name.starts_with("*.") {
        kinds.push("http-01");
        kinds.push("tls-alpn-01");
    }
    if dns01 {
        kinds.push("dns-01");
    }
    kinds
}

fn challenge_json(base: &str, id: &str, kind: &str, a: &Authz) -> Value {
    let mine = a.chosen.is_none_or(|c| c == kind);
    let mut v = json!({
        "type": kind,
        "url": format!("{base}/acme/chall/{id}/{kind}"),
        "token": a.token,
        "status": if mine { a.status.as_str() } else { "pending" },
    });
    if mine {
        if let Some(t) = a.validated {
            v["validated"] = json!(rfc3339(t));
        }
        if let Some(e) = &a.error {
            v["error"] = e.clone();
        }
    }
    v
}

fn authz_json(base: &str, id: &str, a: &Authz, dns01: bool) -> Value {
    let status = match a.status {
        Status::Processing => Status::Pending,
        s => s,
    };
    let mut v = json!({
        "status": status.as_str(),
        "expires": rfc3339(a.expires),
        "identifier": {"type": "dns", "value": a.name.trim_start_matches("*.")},
        "challenges": offered(a, dns01)
            .into_iter()
            .map(|k| challenge_json(base, id, k, a))
            .collect::<Vec<_>>(),
    });
    if a.name.starts_with("*.") {
        v["wildcard"] = json!(true);
    }
    v
}

pub(super) async fn order(
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
        let key = id.clone();
        let order = blocking_store(&st, move |s| s.backend().order(&key, SystemTime::now()))
            .await?
            .filter(|o| o.account == account)
            .ok_or_else(Problem::not_found)?;
        Ok(json_response(
            StatusCode::OK,
            order_json(&signed.base, &id, &order),
            None,
        ))
    }
    .await;
    respond(&st, base.as_deref(), result).await
}

pub(super) async fn authz(
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
        let dns01 = acme(&st)?.dns01.is_some();
        let a = authz_of(&st, &id, account).await?;
        Ok(json_response(
            StatusCode::OK,
            authz_json(&signed.base, &id, &a, dns01),
            None,
        ))
    }
    .await;
    respond(&st, base.as_deref(), result).await
}

/// A challenge: POST `{}` starts its validation (once); POST-as-GET reads it.
pub(super) async fn challenge(
    State(st): State<Arc<AppState>>,
    Path((id, kind)): Path<(String, String)>,
    headers: HeaderMap,
    uri: Uri,
    body: Body,
) -> Response {
    let base = super::base_url(&headers, &uri).ok();
    let result = async {
        let signed = signed_by_account(&st, &headers, &uri, body).await?;
        let account = owner(&signed)?;
        let acme = acme(&st)?;
        let thumbprint = {
            let stored: Value =
                serde_json::from_str(&account.jwk).map_err(|_| Problem::server_internal())?;
            jws::Jwk::from_json(&stored)?.thumbprint()
        };
        let respond_now = signed.payload.is_empty();
        let mut a = authz_of(&st, &id, account.id).await?;
        let kind = offered(&a, acme.dns01.is_some())
            .into_iter()
            .find(|k| *k == kind)
            .ok_or_else(Problem::not_found)?;
        if !respond_now && a.status == Status::Pending {
            let (key, account) = (id.clone(), account.id);
            let started = blocking_store(&st, move |s| {
                s.backend()
                    .start_challenge(&key, account, kind, SystemTime::now())
            })
            .await?;
            if started {
                spawn_validation(&st, &id, kind, &a, thumbprint);
            }
            // Started here or by a concurrent request (maybe on another node): as stored now.
            a = authz_of(&st, &id, account).await?;
        }
        let body = challenge_json(&signed.base, &id, kind, &a);
        let mut r = json_response(StatusCode::OK, body, None);
        if let Ok(up) =
            HeaderValue::from_str(&format!("<{}/acme/authz/{id}>;rel=\"up\"", signed.base))
        {
            r.headers_mut().append(header::LINK, up);
        }
        Ok(r)
    }
    .await;
    respond(&st, base.as_deref(), result).await
}

/// The account's unexpired authorization `id`.
async fn authz_of(st: &AppState, id: &str, account: i64) -> Result<Authz, Problem> {
    let key = id.to_owned();
    blocking_store(st, move |s| s.backend().authz(&key, SystemTime::now()))
        .await?
        .filter(|a| a.account == account)
        .ok_or_else(Problem::not_found)
}

/// Validates a challenge this node started, in the background; its outcome goes to the store,
/// where any node reads it.
fn spawn_validation(
    st: &Arc<AppState>,
    id: &str,
    kind: &'static str,
    a: &Authz,
    thumbprint: String,
) {
    let st = Arc::clone(st);
    let (id, name, token) = (id.to_owned(), a.name.clone(), a.token.clone());
    tokio::spawn(async move {
        let key_authorization = format!("{token}.{thumbprint}");
        let Some(acme) = st.acme.as_deref() else {
            return;
        };
        let (port, tls_port) = (acme.http01_port, acme.tls_alpn01_port);
        let outcome = match (kind, &acme.dns01) {
            ("dns-01", Some(resolver)) => {
                let base = name.trim_start_matches("*.");
                super::dns01::validate(resolver, base, &key_authorization).await
            }
            ("tls-alpn-01", _) => {
                super::tlsalpn01::validate(&name, tls_port, &key_authorization).await
            }
            _ => super::http01::validate(&name, port, &token, &key_authorization).await,
        };
        let outcome = match outcome {
            Ok(()) => {
                tracing::info!(acme.name = %name, acme.challenge = kind, "acme: validated");
                Ok(SystemTime::now())
            }
            Err(problem) => {
                tracing::info!(acme.name = %name, acme.challenge = kind, acme.problem = %problem.detail, "acme: validation failed");
                Err(problem.to_json())
            }
        };
        // A failure is logged by blocking_store; the authorization stays processing until it
        // expires.
        let _ = blocking_store(&st, move |s| s.backend().end_challenge(&id, outcome)).await;
    });
}

pub(super) async fn key_change(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let base = super::base_url(&headers, &uri).ok();
    respond(
        &st,
        base.as_deref(),
        Err(Problem::new(
            StatusCode::NOT_IMPLEMENTED,
            "malformed",
            "account key rollover is not supported",
        )),
    )
    .await
}
