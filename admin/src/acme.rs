//! An ACME server (RFC 8555) on the admin listener: workloads outside Portcullis obtain DNS-name
//! certificates of a tenant with any ACME client.
//!
//! An account is bound to a tenant and one of its profiles by external account binding (an EAB
//! key made by `portcullis admin acme eab-create`, [`AcmeStore`]); it cannot be made without
//! one. Every POST is a JWS (ES256 or RS256, `jwk` or `kid` form) whose `url` must be the URL
//! requested and whose nonce is consumed once ([`jws`]). An order names only what the account's
//! profile allows; each name is proven by http-01 (the server fetches
//! `http://NAME:PORT/.well-known/acme-challenge/TOKEN`, PORT 80 unless configured),
//! tls-alpn-01 (a TLS handshake with `NAME:PORT`, PORT 443 unless configured, ALPN
//! `acme-tls/1`) or, when a resolver is configured, dns-01 (a TXT record, wildcard names
//! allowed); finalize sends the CSR through [`Ca::issue`] under the account's tenant and
//! profile, its names exactly the order's. Revocation is by the account that obtained the
//! certificate. Renewal information (RFC 9773, [`renewal`]) suggests when to renew each
//! certificate issued here, and an order may name the certificate it replaces. Every refusal is
//! a problem document ([`Problem`]).
//!
//! On one node accounts, EAB keys and issued certificates are in `STATE/acme.sqlite3`, and
//! nonces, orders and authorizations in memory (bounded, expiring: a restart abandons them).
//! With `store.postgres` all of it is in the admin plane's database ([`AcmeStore`]): behind a
//! balancer every admin server is the same ACME server, a nonce is accepted once fleet-wide,
//! and an order is finalized (signed) once even when two nodes are asked at once.
//!
//! [`Ca::issue`]: portcullis_ca::Ca::issue

mod certificates;
mod dns01;
mod flow;
mod http01;
pub(crate) mod jws;
pub(crate) mod order;
mod problem;
mod renewal;
pub(crate) mod store;
mod tlsalpn01;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use ring::rand::{SecureRandom, SystemRandom};

use crate::api::AppState;
use crate::config::AcmeConfig;
use crate::error::AdminError;
use crate::store::PgStore;
pub(crate) use problem::Problem;
pub use store::{AcmeStore, EabCredential, ACME_DB};

/// How long an order and its authorizations live.
const ORDER_TTL: Duration = Duration::from_secs(24 * 3600);

/// The ACME server's state.
pub(crate) struct AcmeService {
    store: AcmeStore,
    http01_port: u16,
    tls_alpn01_port: u16,
    /// dns-01's resolver, when offered.
    dns01: Option<hickory_resolver::TokioResolver>,
}

impl AcmeService {
    /// Opens the store: the state directory's SQLite file, or the admin plane's PostgreSQL
    /// database when there is one. Blocking.
    pub(crate) fn open(
        state_dir: &std::path::Path,
        config: &AcmeConfig,
        pg: Option<&PgStore>,
    ) -> Result<Self, AdminError> {
        Ok(Self {
            store: match pg {
                Some(pg) => AcmeStore::postgres(pg, state_dir)?,
                None => AcmeStore::in_state_dir(state_dir)?,
            },
            http01_port: config.http01_port,
            tls_alpn01_port: config.tls_alpn01_port,
            dns01: config.dns01_resolver.map(dns01::resolver),
        })
    }
}

/// A fresh nonce, kept by the store until taken once or expired; None (no `Replay-Nonce`
/// header) when the store failed, which is logged.
async fn new_nonce_value(st: &AppState) -> Option<String> {
    st.acme.as_ref()?;
    let mut bytes = [0u8; 16];
    SystemRandom::new().fill(&mut bytes).ok()?;
    let nonce = jws::b64(&bytes);
    let kept = nonce.clone();
    flow::blocking_store(st, move |s| {
        s.backend().issue_nonce(&kept, SystemTime::now())
    })
    .await
    .ok()?;
    Some(nonce)
}

/// Consumes a nonce: true exactly once per issued nonce (fleet-wide with `store.postgres`).
async fn take_nonce(st: &AppState, nonce: &str) -> Result<bool, Problem> {
    let nonce = nonce.to_owned();
    flow::blocking_store(st, move |s| {
        s.backend().take_nonce(&nonce, SystemTime::now())
    })
    .await
}

/// The ACME routes, under `/acme/`.
pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/acme/directory", get(directory))
        .route("/acme/new-nonce", get(new_nonce).head(new_nonce))
        .route("/acme/new-account", post(flow::new_account))
        .route("/acme/account/{id}", post(flow::account))
        .route("/acme/new-order", post(flow::new_order))
        .route("/acme/order/{id}", post(flow::order))
        .route("/acme/order/{id}/finalize", post(certificates::finalize))
        .route("/acme/authz/{id}", post(flow::authz))
        .route("/acme/chall/{id}/{kind}", post(flow::challenge))
        .route("/acme/cert/{id}", post(certificates::certificate))
        .route("/acme/revoke-cert", post(certificates::revoke))
        .route("/acme/key-change", post(flow::key_change))
        .route("/acme/renewal-info/{id}", get(renewal::renewal_info))
}

/// `https://HOST` as the client addressed this server: every URL handed out is built on it, and
/// each JWS's `url` must equal the URL requested on it.
pub(crate) fn base_url(headers: &HeaderMap, uri: &axum::http::Uri) -> Result<String, Problem> {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
        .filter(|h| {
            !h.is_empty()
                && h.len() <= 255
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
        })
        .ok_or_else(|| Problem::malformed("the request has no usable Host"))?;
    Ok(format!("https://{host}"))
}

/// Adds what every ACME response carries: a fresh nonce, the directory link, no caching.
async fn finish(st: &AppState, base: Option<&str>, mut response: Response) -> Response {
    let nonce = new_nonce_value(st).await;
    let headers = response.headers_mut();
    if let Some(nonce) = nonce.and_then(|n| HeaderValue::from_str(&n).ok()) {
        headers.insert("replay-nonce", nonce);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(link) = base
        .and_then(|b| HeaderValue::from_str(&format!("<{b}/acme/directory>;rel=\"index\"")).ok())
    {
        headers.append(header::LINK, link);
    }
    response
}

async fn directory(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    let base = match base_url(&headers, &uri) {
        Ok(b) => b,
        Err(p) => return finish(&st, None, p.into_response()).await,
    };
    let body = serde_json::json!({
        "newNonce": format!("{base}/acme/new-nonce"),
        "newAccount": format!("{base}/acme/new-account"),
        "newOrder": format!("{base}/acme/new-order"),
        "revokeCert": format!("{base}/acme/revoke-cert"),
        "keyChange": format!("{base}/acme/key-change"),
        "renewalInfo": format!("{base}/acme/renewal-info"),
        "meta": { "externalAccountRequired": true },
    });
    finish(&st, None, axum::Json(body).into_response()).await
}

async fn new_nonce(
    State(st): State<Arc<AppState>>,
    method: axum::http::Method,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    let status = if method == axum::http::Method::GET {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::OK
    };
    let base = base_url(&headers, &uri).ok();
    let response = finish(&st, base.as_deref(), status.into_response()).await;
    if response.headers().contains_key("replay-nonce") {
        return response;
    }
    // The store could not keep one (logged): an answer without a nonce would be useless.
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "serverInternal",
        "no nonce could be issued now; retry later",
    )
    .into_response()
}

/// An authenticated ACME request: the verified payload, and the account when signed by `kid`.
pub(crate) struct Signed {
    pub(crate) payload: Vec<u8>,
    pub(crate) account: Option<store::Account>,
    /// The key, when signed in the `jwk` form.
    pub(crate) jwk: Option<jws::Jwk>,
    pub(crate) base: String,
}

/// Reads and verifies a POST: JOSE content type, a JWS whose `url` is this request's URL, a
/// nonce issued here and not yet used, and a signature by the account's key (`kid`) or, where
/// `jwk_ok`, by the key in the header.
pub(crate) async fn verify_post(
    st: &AppState,
    headers: &HeaderMap,
    uri: &axum::http::Uri,
    body: Body,
    jwk_ok: bool,
) -> Result<Signed, Problem> {
    let base = base_url(headers, uri)?;
    if headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim())
        != Some("application/jose+json")
    {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "malformed",
            "the content type must be application/jose+json",
        ));
    }
    let bytes = crate::api::read_body(body)
        .await
        .map_err(|e| Problem::new(e.status, "malformed", e.message))?;
    let parsed = jws::parse(&bytes)?;
    if parsed.url != format!("{base}{}", uri.path()) {
        return Err(Problem::unauthorized(
            "the JWS url is not the URL of this request",
        ));
    }
    if !take_nonce(st, &parsed.nonce).await? {
        return Err(Problem::bad_nonce());
    }
    match parsed.signer.clone() {
        jws::Signer::Jwk(key) => {
            if !jwk_ok {
                return Err(Problem::malformed(
                    "this request must be signed by an account (kid)",
                ));
            }
            let payload = parsed.verify(&key)?;
            Ok(Signed {
                payload,
                account: None,
                jwk: Some(key),
                base,
            })
        }
        jws::Signer::Kid(kid) => {
            let id = kid
                .strip_prefix(&format!("{base}/acme/account/"))
                .and_then(|id| id.parse::<i64>().ok())
                .ok_or_else(|| {
                    Problem::new(
                        StatusCode::BAD_REQUEST,
                        "accountDoesNotExist",
                        "no such account",
                    )
                })?;
            let account = flow::blocking_store(st, move |s| s.backend().account(id))
                .await?
                .ok_or_else(|| {
                    Problem::new(
                        StatusCode::BAD_REQUEST,
                        "accountDoesNotExist",
                        "no such account",
                    )
                })?;
            let stored: serde_json::Value = serde_json::from_str(&account.jwk).map_err(|e| {
                tracing::error!(error = %e, "acme: stored account key unreadable");
                Problem::server_internal()
            })?;
            let key = jws::Jwk::from_json(&stored)?;
            let payload = parsed.verify(&key)?;
            Ok(Signed {
                payload,
                account: Some(account),
                jwk: None,
                base,
            })
        }
    }
}
