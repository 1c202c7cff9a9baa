//! The revocation listener: plain HTTP, as RFC 5280 distribution points and OCSP URLs normally
//! are (what it serves is signed, and fetching revocation status over TLS would itself need
//! revocation status). Optional: `revocation_http:` in the config.
//!
//! - `GET /crl.der` (`application/pkix-crl`) and `GET /crl.pem` (`application/x-pem-file`): the
//!   CRL in force, cacheable until its `nextUpdate`.
//! - `POST /ocsp` (`application/ocsp-request` body) and `GET /ocsp/{base64 request}` (RFC 6960
//!   appendix A.1): the OCSP responder, `application/ocsp-response`, a signed answer cacheable
//!   until its `nextUpdate`.
//!
//! Every OCSP answer takes a signature from the key backend: at most [`MAX_SIGNING`] are made at
//! once, the rest are answered `tryLater` at once. Connections are capped
//! ([`MAX_CONNECTIONS`]), a request head must arrive within [`HEAD_TIMEOUT`], and no connection
//! lives longer than [`CONNECTION_LIFETIME`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, EXPIRES, LAST_MODIFIED};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use portcullis_ca::{Ca, OcspAnswer, OcspOutcome, OcspResponder};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower_service::Service;

use crate::tls::ClientTrust;
use crate::AdminError;

/// Largest OCSP request accepted (16 certificates take well under 2 KiB).
const MAX_OCSP_REQUEST: usize = 8 * 1024;
/// Most OCSP answers being signed at once.
const MAX_SIGNING: usize = 64;
/// Most connections open at once; more are closed at accept.
const MAX_CONNECTIONS: usize = 1024;
/// A request head must arrive within this.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// No connection stays open longer (a CRL or an OCSP answer takes milliseconds).
const CONNECTION_LIFETIME: Duration = Duration::from_secs(15);
/// How often the OCSP signing certificate is checked for renewal.
const SIGNER_CHECK: Duration = Duration::from_secs(3600);

/// What the listener serves from.
pub(crate) struct Revocation {
    ca: Arc<Ca>,
    trust: Arc<ClientTrust>,
    responder: ArcSwap<OcspResponder>,
    signing: Semaphore,
}

impl Revocation {
    /// Builds the OCSP responder (its signing key and certificate obtained from the CA) and
    /// binds the listener.
    pub(crate) async fn bind(
        addr: SocketAddr,
        ca: Arc<Ca>,
        trust: Arc<ClientTrust>,
    ) -> Result<(TcpListener, Arc<Self>), AdminError> {
        let responder = signing_responder(Arc::clone(&ca)).await?;
        let listener = crate::metrics::bind(addr).await?;
        Ok((
            listener,
            Arc::new(Self {
                ca,
                trust,
                responder: ArcSwap::from_pointee(responder),
                signing: Semaphore::new(MAX_SIGNING),
            }),
        ))
    }
}

async fn signing_responder(ca: Arc<Ca>) -> Result<OcspResponder, AdminError> {
    tokio::task::spawn_blocking(move || ca.ocsp_responder(SystemTime::now()))
        .await
        .map_err(|e| AdminError::Invalid(format!("OCSP responder: {e}")))?
        .map_err(AdminError::from)
}

/// Serves until the task is aborted; renews the OCSP signing certificate on the way.
pub(crate) async fn serve(listener: TcpListener, state: Arc<Revocation>) {
    let renewing = Arc::clone(&state);
    // Aborted when this task is (its guard dropped with the task's state).
    let _renewal = AbortOnDrop(tokio::spawn(async move {
        loop {
            tokio::time::sleep(SIGNER_CHECK).await;
            match signing_responder(Arc::clone(&renewing.ca)).await {
                Ok(r) => renewing.responder.store(Arc::new(r)),
                Err(e) => tracing::warn!(error = %e, "OCSP signing certificate renewal failed"),
            }
        }
    }));
    let app = Router::new()
        .route("/crl.der", get(crl_der))
        .route("/crl.pem", get(crl_pem))
        .route("/ocsp", post(ocsp_post))
        .route("/ocsp/{*request}", get(ocsp_get))
        .layer(DefaultBodyLimit::max(MAX_OCSP_REQUEST))
        .with_state(state);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "revocation listener: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Over the cap: the socket is closed here.
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            continue;
        };
        let router = app.clone();
        let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let mut router = router.clone();
            async move { router.call(req).await }
        });
        tokio::spawn(async move {
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT);
            let conn = builder.serve_connection(TokioIo::new(tcp), service);
            // Whatever the client does, the connection ends within its lifetime.
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, conn).await;
            drop(slot);
        });
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Headers saying a response may be cached until `next_update`.
fn cache_until(
    this_update: Option<SystemTime>,
    next_update: Option<SystemTime>,
) -> Vec<(HeaderName, HeaderValue)> {
    let now = SystemTime::now();
    let date = |t: SystemTime| HeaderValue::from_str(&httpdate::fmt_http_date(t)).ok();
    let mut headers = Vec::new();
    match next_update {
        Some(next) if next > now => {
            let age = next.duration_since(now).unwrap_or_default().as_secs();
            if let Ok(v) = HeaderValue::from_str(&format!("public, max-age={age}, no-transform")) {
                headers.push((CACHE_CONTROL, v));
            }
            headers.extend(date(next).map(|v| (EXPIRES, v)));
        }
        _ => headers.push((CACHE_CONTROL, HeaderValue::from_static("no-cache"))),
    }
    headers.extend(this_update.and_then(date).map(|v| (LAST_MODIFIED, v)));
    headers
}

async fn crl_der(State(st): State<Arc<Revocation>>) -> Response {
    let crl = st.trust.crl();
    let mut response = ([(CONTENT_TYPE, "application/pkix-crl")], crl.der.clone()).into_response();
    response
        .headers_mut()
        .extend(cache_until(crl.this_update, crl.next_update));
    response
}

async fn crl_pem(State(st): State<Arc<Revocation>>) -> Response {
    let crl = st.trust.crl();
    let mut response =
        ([(CONTENT_TYPE, "application/x-pem-file")], crl.pem.clone()).into_response();
    response
        .headers_mut()
        .extend(cache_until(crl.this_update, crl.next_update));
    response
}

async fn ocsp_post(State(st): State<Arc<Revocation>>, body: Bytes) -> Response {
    answer(&st, body.to_vec()).await
}

async fn ocsp_get(State(st): State<Arc<Revocation>>, Path(request): Path<String>) -> Response {
    // The path is percent-decoded already; a request that is not base64 is answered as one
    // that is not DER.
    let der = base64::engine::general_purpose::STANDARD
        .decode(request.trim_start_matches('/'))
        .unwrap_or_default();
    answer(&st, der).await
}

async fn answer(st: &Arc<Revocation>, request: Vec<u8>) -> Response {
    let answer = match st.signing.try_acquire() {
        Ok(_permit) => {
            let responder = st.responder.load_full();
            tokio::task::spawn_blocking(move || responder.respond(&request, SystemTime::now()))
                .await
                .unwrap_or_else(|e| {
                    tracing::error!(error = %e, "OCSP responder task failed");
                    OcspResponder::internal_error()
                })
        }
        Err(_) => OcspResponder::try_later(),
    };
    let OcspAnswer {
        der,
        outcome,
        next_update,
    } = answer;
    let mut response = (
        StatusCode::OK,
        [(CONTENT_TYPE, "application/ocsp-response")],
        der,
    )
        .into_response();
    let cache = match outcome {
        OcspOutcome::Signed => cache_until(Some(SystemTime::now()), next_update),
        _ => vec![(CACHE_CONTROL, HeaderValue::from_static("no-store"))],
    };
    response.headers_mut().extend(cache);
    response
}
