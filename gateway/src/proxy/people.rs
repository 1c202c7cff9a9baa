//! Callers who are people: the browser login's own endpoints, and a routed request's bearer
//! token or session verified for its route's tenant between the two halves of admission.

use pingora_http::RequestHeader;
use portcullis_policy::{TokenError, CALLBACK_PATH, LOGOUT_PATH};

use super::Gateway;
use crate::admission::{Bearer, Refusal, RequestHead, Routed, Verdict};
use crate::authn::unix_now;
use crate::snapshot::Snapshot;

/// The `Authorization` header's value. Two of them, or one that is not text, are refused as
/// malformed: which one an upstream would read is anyone's guess.
fn bearer_header(req: &RequestHeader) -> Result<Option<&str>, TokenError> {
    let mut values = req.headers.get_all(http::header::AUTHORIZATION).iter();
    match (values.next(), values.next()) {
        (None, _) => Ok(None),
        (Some(value), None) => value.to_str().map(Some).map_err(|_| TokenError::Malformed),
        (Some(_), Some(_)) => Err(TokenError::Malformed),
    }
}

/// The request's `Cookie` header values (HTTP/2 may send several), those that are text.
fn cookie_values(req: &RequestHeader) -> Vec<&str> {
    req.headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect()
}

/// A browser navigating (a GET or HEAD that accepts HTML): sent to log in rather than
/// answered 401. Scripts and API clients get the 401.
fn is_browser_navigation(req: &RequestHeader) -> bool {
    (req.method == http::Method::GET || req.method == http::Method::HEAD)
        && req
            .headers
            .get_all(http::header::ACCEPT)
            .iter()
            .any(|v| v.to_str().is_ok_and(|v| v.contains("text/html")))
}

impl Gateway {
    /// The login callback and logout, answered by the gateway on any host; `None` for any
    /// other path.
    pub(super) async fn own_endpoint(
        &self,
        snapshot: &Snapshot,
        req: &RequestHeader,
    ) -> Option<Refusal> {
        match req.uri.path() {
            CALLBACK_PATH => Some(
                snapshot
                    .authenticator
                    .callback(
                        req.uri.query().unwrap_or_default(),
                        &cookie_values(req),
                        &self.metrics,
                    )
                    .await,
            ),
            LOGOUT_PATH => Some(snapshot.authenticator.logout(&cookie_values(req))),
            _ => None,
        }
    }

    /// Admission's second half for a routed request, after the route's credential (a bearer
    /// token, or a login's session cookie) is verified; a browser refused on a route with a
    /// login is sent to log in rather than told 401. A renewed session's cookie lands in
    /// `set_cookie`.
    pub(super) async fn admit_routed(
        &self,
        snapshot: &Snapshot,
        routed: Routed,
        mut head: RequestHead<'_>,
        req: &RequestHeader,
        set_cookie: &mut Option<String>,
    ) -> Verdict {
        let bearer = if routed.route.authentication.wants_token() {
            head.now = unix_now();
            // Only a route with a login reads the session cookie.
            let cookies = match routed.route.login {
                Some(_) => cookie_values(req),
                None => Vec::new(),
            };
            let authenticated = snapshot
                .authenticator
                .authenticate(&routed.route, bearer_header(req), &cookies, &self.metrics)
                .await;
            *set_cookie = authenticated.set_cookie;
            authenticated.bearer
        } else {
            Bearer::Absent
        };
        let mut verdict = snapshot.admission.admit_routed(
            routed,
            &RequestHead {
                bearer: &bearer,
                ..head
            },
        );
        if let (Some(route), Err(refusal)) = (&verdict.route, &verdict.outcome) {
            if route.login.is_some() && is_browser_navigation(req) {
                let return_to = req.uri.path_and_query().map_or("/", |p| p.as_str());
                if let Some(redirect) = snapshot
                    .authenticator
                    .login_redirect(route, refusal, return_to)
                {
                    verdict.outcome = Err(redirect);
                }
            }
        }
        verdict
    }
}
