//! RFC 7807 problem documents with the `urn:ietf:params:acme:error:*` types: every ACME refusal.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// An ACME error answered to a client. The detail is a fixed text or names only what the
/// client itself sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    pub(crate) status: StatusCode,
    /// The part after `urn:ietf:params:acme:error:`.
    pub(crate) kind: &'static str,
    pub(crate) detail: String,
}

impl Problem {
    pub(crate) fn new(status: StatusCode, kind: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            detail: detail.into(),
        }
    }

    pub(crate) fn malformed(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "malformed", detail)
    }

    pub(crate) fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "unauthorized", detail)
    }

    pub(crate) fn bad_nonce() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "badNonce",
            "the nonce is unknown, expired or already used",
        )
    }

    pub(crate) fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "malformed", "no such resource")
    }

    pub(crate) fn server_internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "serverInternal",
            "internal error; see the server log",
        )
    }

    /// The problem as the JSON object embedded in a challenge's `error`.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "type": format!("urn:ietf:params:acme:error:{}", self.kind),
            "detail": self.detail,
            "status": self.status.as_u16(),
        })
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = self.to_json().to_string();
        let mut response = (self.status, body).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        response
    }
}
