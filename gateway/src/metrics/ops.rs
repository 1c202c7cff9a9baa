//! The operations endpoint on the metrics listener: `/metrics`, `/healthz`, `/readyz`.

use std::sync::Arc;

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;

use super::Metrics;
use crate::audit::AuditTrail;

/// The operations endpoint served on the metrics listener.
#[derive(Debug)]
pub(crate) struct OpsEndpoint {
    pub metrics: Arc<Metrics>,
    pub audit: Option<Arc<AuditTrail>>,
    /// The current generation, for the identity assertion's public key.
    pub snapshot: Arc<arc_swap::ArcSwap<crate::snapshot::Snapshot>>,
}

#[async_trait]
impl ServeHttp for OpsEndpoint {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_owned();
        if let Some(audit) = &self.audit {
            self.metrics.observe_audit(&audit.figures());
        }
        let audit_healthy = self.audit.as_ref().is_none_or(|a| a.healthy());
        let (status, content_type, body) = match path.as_str() {
            "/metrics" => (
                StatusCode::OK,
                "text/plain; version=0.0.4",
                self.metrics.render(),
            ),
            "/healthz" => (StatusCode::OK, "text/plain", b"ok\n".to_vec()),
            // The key upstreams verify `x-portcullis-assertion` with.
            "/.well-known/jwks.json" => match &self.snapshot.load().assertion {
                Some(signer) => (
                    StatusCode::OK,
                    "application/jwk-set+json",
                    signer.jwks().as_bytes().to_vec(),
                ),
                None => (
                    StatusCode::NOT_FOUND,
                    "text/plain",
                    b"no identity assertion is configured\n".to_vec(),
                ),
            },
            "/readyz" => {
                let ready = self.metrics.is_ready() && audit_healthy;
                let mut body = if ready { "ready\n" } else { "not ready\n" }.to_owned();
                // Cut off from the admin plane is degraded, not down: still ready.
                if let Some(line) = self.metrics.policy.readiness() {
                    body.push_str(&line);
                }
                // Cut off from etcd is degraded too: the last revocation set stays in force.
                if let Some(line) = self.metrics.fleet.readiness() {
                    body.push_str(&line);
                }
                let status = if ready {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                (status, "text/plain", body.into_bytes())
            }
            _ => (StatusCode::NOT_FOUND, "text/plain", b"not found\n".to_vec()),
        };
        plain_response(status, content_type, body)
    }
}

pub(crate) fn plain_response(
    status: StatusCode,
    content_type: &str,
    body: Vec<u8>,
) -> Response<Vec<u8>> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    if let Ok(value) = http::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(http::header::CONTENT_TYPE, value);
    }
    let len = response.body().len();
    response
        .headers_mut()
        .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
    response
}
