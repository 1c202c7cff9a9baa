//! Every way the gateway refuses or fails a request, and what each one means to the caller
//! (status, stable code, public message), to the audit log (decision) and to the metrics and
//! access log (label). The detail of a failure goes to the log, never to the caller.

use std::borrow::Cow;

use http::header::{HeaderName, LOCATION, RETRY_AFTER, SET_COOKIE, WWW_AUTHENTICATE};

use portcullis_audit::Decision;
use portcullis_policy::{BodyDirection, Denied, DetectorKind, PathError, TokenError};

use crate::limits::LimitExceeded;

/// Why a request did not get (or did not finish getting) what it asked for.
#[derive(Debug)]
#[non_exhaustive]
pub enum Refusal {
    /// The path cannot be normalised safely (encoded separators, traversal above the root…).
    BadPath(PathError),
    /// A request head an upstream could read differently (both Content-Length and
    /// Transfer-Encoding, a lower-case standard method, a Host that disagrees with the target).
    BadRequest(&'static str),
    /// The request head is over the configured size.
    HeadTooLarge,
    /// The caller's certificate is on its listener's current revocation list.
    CertificateRevoked,
    /// The caller's certificate has expired since the connection was made.
    CertificateExpired,
    /// No route for this host and path.
    NoRoute,
    /// The route needs a client certificate and the connection has none.
    CertificateRequired,
    /// The route needs a bearer token and the request carries none.
    TokenRequired,
    /// The bearer token was not accepted (why, in the records; the caller gets the
    /// description in `WWW-Authenticate`).
    TokenRefused(TokenError),
    /// A browser without a (strong or recent enough) session on a route with `login`: sent to
    /// the identity provider, the login's secrets in a sealed cookie.
    LoginRedirect { location: String, cookie: String },
    /// The login finished at the gateway's callback: a session cookie, and back to where the
    /// person was going.
    LoggedIn {
        location: String,
        cookies: [String; 2],
    },
    /// The callback could not finish a login (why, for the person; details in the log).
    LoginFailed(&'static str),
    /// Signed out: the session cookie removed; to the provider's end-session endpoint if it
    /// has one.
    LoggedOut {
        location: Option<String>,
        cookie: String,
    },
    /// The token is valid but the person did not authenticate strongly or recently enough
    /// for the route (RFC 9470).
    StepUpRequired {
        /// The route's `acr` values, space-separated (empty: none asked).
        acr_values: String,
        /// The route's `max_age`, in seconds.
        max_age: Option<u64>,
    },
    /// The route's access rules refused the caller.
    Denied(Denied),
    /// A rate or in-flight limit of the tenant, route, identity or source.
    RateLimited(LimitExceeded),
    /// The request body is over the tenant's cap (declared, or counted as it streamed).
    BodyTooLarge,
    /// A body the route must inspect is in an encoding the gateway cannot read.
    Uninspectable(BodyDirection),
    /// A DLP detector with action `block` matched.
    DlpBlocked(BodyDirection, DetectorKind),
    /// A body longer than the inspection limit, on a route that refuses what it cannot scan.
    OverInspectionLimit(BodyDirection),
    /// A body that does not decode as its `Content-Encoding` says (a fake label included).
    Undecodable(BodyDirection, &'static str),
    /// A compressed body that decodes beyond the size or ratio limit (a bomb).
    ExpandsTooFar(BodyDirection),
    /// A multipart body (or part) that cannot be read unambiguously.
    MalformedBody(BodyDirection, &'static str),
    /// Two `Content-Type` or `Content-Encoding` headers (or one that is not text, or a
    /// multipart part with two of its own) on a DLP route: which one the upstream reads is
    /// anyone's guess.
    AmbiguousBodyHeader(BodyDirection, &'static str),
    /// A content type the tenant does not let through (`other_content: refuse`).
    UnsupportedContentType(BodyDirection),
    /// A WebSocket upgrade (or other upgrade, or CONNECT) on a route with request DLP that
    /// does not allow them.
    UpgradeRefused,
    /// A match to redact lies in bytes the gateway reads decoded (a JSON escape, an encoded
    /// multipart part), where the original cannot be redacted exactly: refused instead.
    Unredactable(BodyDirection),
    /// Fail-closed audit: the admission record could not be made durable.
    AuditUnavailable,
    /// `fairness`: the gateway was full and no slot came free for the tenant within
    /// `queue_timeout`.
    Overloaded,
    /// Every target of the route's upstream pool is unhealthy.
    NoHealthyUpstream,
    /// The upstream could not be reached, or failed mid-exchange.
    UpstreamFailed,
    /// A gRPC call's deadline (`grpc-timeout`) passed before the upstream answered.
    DeadlineExceeded,
    /// The request could not be read (malformed HTTP, or the client misbehaved).
    Malformed,
    /// Something failed on our side.
    Internal,
}

impl Refusal {
    /// The HTTP status sent to the caller.
    pub fn status(&self) -> u16 {
        match self {
            // A response the gateway will not pass is the upstream's failure.
            Refusal::Uninspectable(BodyDirection::Response)
            | Refusal::Undecodable(BodyDirection::Response, _)
            | Refusal::ExpandsTooFar(BodyDirection::Response)
            | Refusal::MalformedBody(BodyDirection::Response, _)
            | Refusal::AmbiguousBodyHeader(BodyDirection::Response, _)
            | Refusal::UnsupportedContentType(BodyDirection::Response)
            | Refusal::UpstreamFailed => 502,
            Refusal::DeadlineExceeded => 504,
            Refusal::HeadTooLarge => 431,
            Refusal::CertificateRevoked
            | Refusal::CertificateExpired
            | Refusal::CertificateRequired => 403,
            Refusal::TokenRefused(TokenError::KeysUnavailable) => 503,
            Refusal::TokenRequired | Refusal::TokenRefused(_) | Refusal::StepUpRequired { .. } => {
                401
            }
            Refusal::LoginRedirect { .. }
            | Refusal::LoggedIn { .. }
            | Refusal::LoggedOut {
                location: Some(_), ..
            } => 302,
            Refusal::LoggedOut { location: None, .. } => 200,
            Refusal::LoginFailed(_) => 400,
            Refusal::BadPath(_)
            | Refusal::BadRequest(_)
            | Refusal::Malformed
            | Refusal::MalformedBody(..)
            | Refusal::AmbiguousBodyHeader(..) => 400,
            Refusal::NoRoute => 404,
            Refusal::Denied(_)
            | Refusal::DlpBlocked(..)
            | Refusal::Unredactable(_)
            | Refusal::UpgradeRefused => 403,
            Refusal::RateLimited(_) => 429,
            Refusal::BodyTooLarge | Refusal::OverInspectionLimit(_) | Refusal::ExpandsTooFar(_) => {
                413
            }
            Refusal::Uninspectable(_)
            | Refusal::Undecodable(..)
            | Refusal::UnsupportedContentType(_) => 415,
            Refusal::AuditUnavailable | Refusal::NoHealthyUpstream | Refusal::Overloaded => 503,
            Refusal::Internal => 500,
        }
    }

    /// Whether the refusal is the caller's doing (a 4xx other than a failed login), and so
    /// counts towards slowing and then closing its connection (`abuse`).
    pub fn counts_against_caller(&self) -> bool {
        (400..500).contains(&self.status()) && !matches!(self, Refusal::LoginFailed(_))
    }

    /// The stable code in the JSON body's `error` field.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::BadPath(_) | Refusal::BadRequest(_) | Refusal::Malformed => "bad_request",
            Refusal::HeadTooLarge => "request_header_too_large",
            Refusal::CertificateRevoked => "certificate_revoked",
            Refusal::CertificateExpired => "certificate_expired",
            Refusal::CertificateRequired => "certificate_required",
            Refusal::TokenRequired => "unauthenticated",
            Refusal::TokenRefused(TokenError::KeysUnavailable) => "identity_provider_unavailable",
            Refusal::TokenRefused(_) => "invalid_token",
            Refusal::StepUpRequired { .. } => "insufficient_user_authentication",
            Refusal::LoginRedirect { .. } => "login_required",
            Refusal::LoggedIn { .. } => "logged_in",
            Refusal::LoginFailed(_) => "login_failed",
            Refusal::LoggedOut { .. } => "logged_out",
            Refusal::NoRoute => "no_route",
            Refusal::Denied(_) => "forbidden",
            Refusal::RateLimited(_) => "rate_limited",
            Refusal::BodyTooLarge | Refusal::OverInspectionLimit(_) | Refusal::ExpandsTooFar(_) => {
                "payload_too_large"
            }
            Refusal::Uninspectable(BodyDirection::Request) => "uninspectable_body",
            Refusal::Uninspectable(BodyDirection::Response) => "uninspectable_response",
            Refusal::Undecodable(..) => "undecodable_body",
            Refusal::MalformedBody(..) => "malformed_body",
            Refusal::AmbiguousBodyHeader(..) => "ambiguous_body_header",
            Refusal::UnsupportedContentType(_) => "unsupported_content_type",
            Refusal::UpgradeRefused => "upgrade_refused",
            Refusal::DlpBlocked(..) | Refusal::Unredactable(_) => "dlp_blocked",
            Refusal::AuditUnavailable => "audit_unavailable",
            Refusal::Overloaded => "overloaded",
            Refusal::NoHealthyUpstream => "upstream_unavailable",
            Refusal::UpstreamFailed => "bad_gateway",
            Refusal::DeadlineExceeded => "deadline_exceeded",
            Refusal::Internal => "internal_error",
        }
    }

    /// The message in the JSON body. Fixed text, except that a refused path says why (it is
    /// the caller's own input).
    pub fn message(&self) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            Refusal::BadPath(e) => return Cow::Owned(format!("request path rejected: {e}")),
            Refusal::BadRequest(why) => why,
            Refusal::HeadTooLarge => "request header fields too large",
            Refusal::CertificateRevoked => "the client certificate has been revoked",
            Refusal::CertificateExpired => "the client certificate has expired",
            Refusal::CertificateRequired => "a client certificate is required on this route",
            Refusal::TokenRequired => "a bearer token is required",
            Refusal::TokenRefused(TokenError::KeysUnavailable) => {
                "the identity provider cannot be reached; try again later"
            }
            Refusal::TokenRefused(_) => "the bearer token was not accepted",
            Refusal::StepUpRequired { .. } => {
                "a stronger or more recent authentication is required"
            }
            Refusal::LoginRedirect { .. } => "log in at the identity provider",
            Refusal::LoggedIn { .. } => "logged in",
            Refusal::LoginFailed(why) => why,
            Refusal::LoggedOut { .. } => "signed out",
            Refusal::NoRoute => "no route for this host and path",
            Refusal::Denied(_) => "access denied by policy",
            Refusal::RateLimited(_) => "too many requests",
            Refusal::BodyTooLarge => "request body exceeds the limit",
            Refusal::OverInspectionLimit(_) | Refusal::ExpandsTooFar(_) => {
                "body too large to accept or inspect"
            }
            Refusal::Undecodable(..) => "the body does not decode as its content encoding says",
            Refusal::MalformedBody(..) => "the multipart body cannot be read unambiguously",
            Refusal::AmbiguousBodyHeader(..) => {
                "repeated or unreadable content-type or content-encoding header"
            }
            Refusal::UnsupportedContentType(_) => "this content type is not accepted here",
            Refusal::UpgradeRefused => "protocol upgrades are not allowed on this route",
            Refusal::Unredactable(_) => "body refused by data protection policy",
            Refusal::Uninspectable(BodyDirection::Request) => {
                "the request body's encoding cannot be inspected"
            }
            Refusal::Uninspectable(BodyDirection::Response) => {
                "the upstream response's encoding cannot be inspected"
            }
            Refusal::DlpBlocked(..) => "body refused by data protection policy",
            Refusal::AuditUnavailable => {
                "the request cannot be recorded right now; try again later"
            }
            Refusal::NoHealthyUpstream => "no healthy upstream target",
            Refusal::Overloaded => "the gateway is at capacity; try again shortly",
            Refusal::UpstreamFailed => "upstream failed",
            Refusal::DeadlineExceeded => "the call's deadline passed before the upstream answered",
            Refusal::Malformed => "malformed request",
            Refusal::Internal => "internal error",
        })
    }

    /// The decision in the audit record. A request the policy allowed and the upstream then
    /// failed stays allowed: the status tells the rest.
    pub fn decision(&self) -> Decision {
        match self {
            Refusal::BadPath(_)
            | Refusal::BadRequest(_)
            | Refusal::HeadTooLarge
            | Refusal::Malformed
            | Refusal::Internal => Decision::Error,
            Refusal::NoHealthyUpstream
            | Refusal::UpstreamFailed
            | Refusal::DeadlineExceeded
            | Refusal::LoggedIn { .. }
            | Refusal::LoggedOut { .. } => Decision::Allow,
            _ => Decision::Deny,
        }
    }

    /// The label of the `decision` in the access log and metrics, and the audit record's
    /// `reason`.
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::BadPath(_)
            | Refusal::BadRequest(_)
            | Refusal::HeadTooLarge
            | Refusal::Malformed => "invalid",
            Refusal::CertificateRevoked => "revoked",
            Refusal::CertificateExpired => "expired",
            Refusal::CertificateRequired => "certificate_required",
            Refusal::TokenRequired => "unauthenticated",
            Refusal::TokenRefused(e) => e.label(),
            Refusal::StepUpRequired { .. } => "step_up",
            Refusal::LoginRedirect { .. } => "login_redirect",
            Refusal::LoggedIn { .. } => "login",
            Refusal::LoginFailed(_) => "login_failed",
            Refusal::LoggedOut { .. } => "logout",
            Refusal::NoRoute => "no_route",
            Refusal::Denied(_) => "deny",
            Refusal::RateLimited(_) => "rate_limited",
            Refusal::BodyTooLarge => "too_large",
            Refusal::Uninspectable(_)
            | Refusal::DlpBlocked(..)
            | Refusal::OverInspectionLimit(_)
            | Refusal::Undecodable(..)
            | Refusal::ExpandsTooFar(_)
            | Refusal::MalformedBody(..)
            | Refusal::AmbiguousBodyHeader(..)
            | Refusal::UnsupportedContentType(_)
            | Refusal::UpgradeRefused
            | Refusal::Unredactable(_) => "dlp_refused",
            Refusal::AuditUnavailable => "audit_unavailable",
            Refusal::Overloaded => "overloaded",
            Refusal::NoHealthyUpstream => "no_upstream",
            Refusal::UpstreamFailed => "upstream_failed",
            Refusal::DeadlineExceeded => "deadline_exceeded",
            Refusal::Internal => "error",
        }
    }

    /// Whether the connection is closed after the answer: a client that sends what an
    /// upstream could read differently gets no second try on the same connection, and one whose
    /// credential no longer holds gets no more requests.
    pub fn closes_connection(&self) -> bool {
        matches!(
            self,
            Refusal::BadPath(_)
                | Refusal::BadRequest(_)
                | Refusal::HeadTooLarge
                | Refusal::Malformed
                | Refusal::CertificateRevoked
                | Refusal::CertificateExpired
        )
    }

    /// The rule that refused, for the records: the deny rule, or `default-deny`.
    pub fn rule(&self) -> Option<&str> {
        match self {
            Refusal::Denied(d) => Some(d.rule_label()),
            _ => None,
        }
    }

    /// Extra response headers: `WWW-Authenticate` on a 401 (RFC 6750, RFC 9470), and
    /// `Retry-After` and the IETF `RateLimit-Policy` / `RateLimit` fields on a 429.
    pub fn headers(&self) -> Vec<(HeaderName, String)> {
        const REALM: &str = "Bearer realm=\"portcullis\"";
        const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
        const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
        let limit = match self {
            Refusal::RateLimited(limit) => limit,
            Refusal::LoginRedirect { location, cookie } => {
                return vec![(LOCATION, location.clone()), (SET_COOKIE, cookie.clone())]
            }
            Refusal::LoggedIn { location, cookies } => {
                let mut headers = vec![(LOCATION, location.clone())];
                headers.extend(cookies.iter().map(|c| (SET_COOKIE, c.clone())));
                return headers;
            }
            Refusal::LoginFailed(_) => {
                return vec![(SET_COOKIE, crate::authn::clear_login_cookie())]
            }
            Refusal::LoggedOut { location, cookie } => {
                let mut headers = vec![(SET_COOKIE, cookie.clone())];
                headers.extend(location.iter().map(|l| (LOCATION, l.clone())));
                return headers;
            }
            Refusal::TokenRequired => return vec![(WWW_AUTHENTICATE, REALM.to_owned())],
            Refusal::Overloaded => return vec![(RETRY_AFTER, "1".to_owned())],
            Refusal::TokenRefused(e) if *e != TokenError::KeysUnavailable => {
                return vec![(
                    WWW_AUTHENTICATE,
                    format!("{REALM}, error=\"invalid_token\", error_description=\"{e}\""),
                )]
            }
            Refusal::StepUpRequired {
                acr_values,
                max_age,
            } => {
                let mut value = format!(
                    "{REALM}, error=\"insufficient_user_authentication\", \
                     error_description=\"{}\"",
                    self.message()
                );
                if !acr_values.is_empty() {
                    value.push_str(&format!(", acr_values=\"{acr_values}\""));
                }
                if let Some(age) = max_age {
                    value.push_str(&format!(", max_age={age}"));
                }
                return vec![(WWW_AUTHENTICATE, value)];
            }
            _ => return Vec::new(),
        };
        // Built without `format!`: a flood of 429s is an attack, each should cost little.
        let retry = limit.retry_after.as_secs() + u64::from(limit.retry_after.subsec_nanos() > 0);
        let mut digits = itoa::Buffer::new();
        let retry = digits.format(retry.max(1)).to_owned();
        let Some(policy) = limit.policy else {
            return vec![(RETRY_AFTER, retry)];
        };
        let name = limit.limit;
        let mut stated = String::with_capacity(name.len() + 32);
        for part in ["\"", name, "\";q=", digits.format(policy.requests.get())] {
            stated.push_str(part);
        }
        stated.push_str(";w=");
        stated.push_str(digits.format(policy.per.as_secs().max(1)));
        let mut left = String::with_capacity(name.len() + 16 + retry.len());
        for part in ["\"", name, "\";r=0;t=", &retry] {
            left.push_str(part);
        }
        vec![
            (RETRY_AFTER, retry),
            (RATELIMIT_POLICY, stated),
            (RATELIMIT, left),
        ]
    }

    /// The JSON body sent with the refusal: `{"error":…,"message":…,"request_id":…}`.
    /// Written by hand (a refusal should cost little; a flood of them is an attack): the code
    /// is a fixed identifier and the request id hex, only the message needs escaping.
    pub fn body(&self, request_id: &str) -> String {
        let code = self.code();
        let message = self.message();
        let mut out = String::with_capacity(48 + code.len() + message.len() + request_id.len());
        out.push_str("{\"error\":\"");
        out.push_str(code);
        out.push_str("\",\"message\":\"");
        push_json_escaped(&mut out, &message);
        out.push_str("\",\"request_id\":\"");
        push_json_escaped(&mut out, request_id);
        out.push_str("\"}");
        out
    }
}

/// Appends `s` as the inside of a JSON string.
pub(crate) fn push_json_escaped(out: &mut String, s: &str) {
    use std::fmt::Write as _;
    if !s.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        out.push_str(s);
        return;
    }
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c < ' ' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Denied(d) => write!(f, "deny (rule {}: {})", d.rule_label(), d.reason),
            Refusal::RateLimited(l) => write!(f, "rate limited ({} limit)", l.limit),
            Refusal::DlpBlocked(direction, detector) => {
                write!(f, "{direction:?} body blocked by DLP detector {detector}")
            }
            Refusal::Undecodable(direction, why) | Refusal::MalformedBody(direction, why) => {
                write!(f, "{direction:?} body: {why}")
            }
            Refusal::AmbiguousBodyHeader(direction, what) => {
                write!(f, "{direction:?} body: repeated or unreadable {what}")
            }
            Refusal::Unredactable(direction) => {
                write!(f, "{direction:?} body: a redaction inside decoded bytes")
            }
            Refusal::OverInspectionLimit(direction) => {
                write!(f, "{direction:?} body over the inspection limit")
            }
            other => f.write_str(&other.message()),
        }
    }
}
