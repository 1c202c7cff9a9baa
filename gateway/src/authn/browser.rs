//! The browser login's steps on the gateway: a session read from its cookie (renewed, or
//! refreshed with its refresh token), the redirect to the provider, the callback that
//! finishes the login, and logout.

use std::sync::Arc;

use portcullis_identity::oidc::{end_session_url, finish_login, start_login, StepUp};
use portcullis_policy::{Route, TokenIdentity};

use super::login::{
    self, clear_cookie, open, safe_return, same_secret, seal, set_cookie, PendingLogin, Session,
    LOGIN_COOKIE, SESSION_COOKIE,
};
use super::{unix_now, Authenticated, Authenticator, Provider, SessionKeys};
use crate::admission::{Bearer, Refusal};
use crate::metrics::Metrics;

impl Authenticator {
    fn provider(&self, tenant: &str, name: &str) -> Option<&Provider> {
        self.tenants
            .iter()
            .find(|(t, _)| t.as_str() == tenant)
            .and_then(|(_, providers)| providers.iter().find(|p| p.settings.name == name))
    }

    /// The browser's session on `route`, if it has a live one of the route's tenant: ended
    /// past its absolute or idle lifetime; its ID token refreshed when expired (with the
    /// refresh token it holds), else ended.
    pub(super) async fn session(
        &self,
        route: &Route,
        keys: &SessionKeys,
        cookies: &[&str],
        metrics: &Metrics,
    ) -> Authenticated {
        let absent = |set_cookie| Authenticated {
            bearer: Bearer::Absent,
            set_cookie,
        };
        let Some(mut session) = open::<Session>(&keys.ring, SESSION_COOKIE, cookies) else {
            return absent(None);
        };
        let tenant = route.tenant.as_str();
        let Some(provider) = (session.t == tenant)
            .then(|| self.provider(tenant, &session.p))
            .flatten()
        else {
            return absent(None);
        };
        let now = unix_now();
        let ended = Some(clear_cookie(SESSION_COOKIE));
        if now >= session.iat.saturating_add(keys.absolute)
            || now >= session.seen.saturating_add(keys.idle)
        {
            return absent(ended);
        }
        let mut renewed = false;
        if session.token_expiry() <= now {
            let (Some(login), Some(refresh)) = (&provider.login, session.r.as_deref()) else {
                return absent(ended);
            };
            match portcullis_identity::oidc::refresh_login(
                &provider.keys,
                login,
                &provider.settings,
                refresh,
            )
            .await
            {
                Ok(fresh) => {
                    metrics.oidc_token(tenant, &provider.settings.name, "session_refreshed");
                    tracing::info!(tenant, provider = %provider.settings.name, subject = %fresh.identity.subject, "session refreshed with its refresh token");
                    session.c = Session::new(
                        tenant,
                        &provider.settings.name,
                        fresh.identity.claims,
                        None,
                        now,
                    )
                    .c;
                    session.r = fresh.refresh_token;
                    renewed = true;
                }
                Err(e) => {
                    tracing::info!(tenant, provider = %provider.settings.name, error = %e, "session refresh failed; the person logs in again");
                    metrics.oidc_token(tenant, &provider.settings.name, "session_refresh_failed");
                    return absent(ended);
                }
            }
        }
        if renewed || now >= session.seen + login::SEEN_RESOLUTION {
            session.seen = now;
            renewed = true;
        }
        let Some(identity) = TokenIdentity::from_claims(
            session.c.clone(),
            &provider.settings.name,
            &provider.settings.claims,
        ) else {
            return absent(ended);
        };
        let set_cookie = renewed
            .then(|| seal(&keys.ring, SESSION_COOKIE, &session))
            .flatten()
            .map(|v| {
                set_cookie(
                    SESSION_COOKIE,
                    &v,
                    session
                        .iat
                        .saturating_add(keys.absolute)
                        .saturating_sub(now),
                )
            });
        Authenticated {
            bearer: Bearer::Valid(Arc::new(identity)),
            set_cookie,
        }
    }

    /// The answer to a browser refused for want of a login (`TokenRequired`) or of a strong
    /// or recent enough one (`StepUpRequired`) on `route`: a redirect to the provider, with
    /// the login's secrets in a sealed cookie. `None` for any other refusal, a route without a
    /// login, or a provider not discovered yet.
    pub(crate) fn login_redirect(
        &self,
        route: &Route,
        refusal: &Refusal,
        return_to: &str,
    ) -> Option<Refusal> {
        let step_up = match refusal {
            Refusal::TokenRequired => None,
            Refusal::StepUpRequired { .. } => route.mfa.as_ref().map(|m| StepUp {
                acr_values: m.acr.clone(),
                max_age: m.max_age,
            }),
            _ => return None,
        };
        let keys = self.sessions.as_ref()?;
        let provider = self.provider(route.tenant.as_str(), route.login.as_deref()?)?;
        let login = provider.login.as_ref()?;
        let start = match start_login(&provider.keys, login, step_up.as_ref()) {
            Ok(start) => start,
            Err(e) => {
                tracing::warn!(provider = %provider.settings.name, error = %e, "cannot start a login");
                return None;
            }
        };
        let pending = PendingLogin::new(
            route.tenant.as_str(),
            &provider.settings.name,
            &start,
            safe_return(return_to),
            unix_now(),
        );
        let sealed = seal(&keys.ring, LOGIN_COOKIE, &pending)?;
        Some(Refusal::LoginRedirect {
            location: start.url,
            cookie: set_cookie(LOGIN_COOKIE, &sealed, login::LOGIN_TTL),
        })
    }

    /// The provider's redirect back to the gateway: the code exchanged, the ID token checked,
    /// a session made, and the browser sent where it was going.
    pub(crate) async fn callback(
        &self,
        query: &str,
        cookies: &[&str],
        metrics: &Metrics,
    ) -> Refusal {
        let Some(keys) = &self.sessions else {
            return Refusal::LoginFailed("no login is configured");
        };
        let Some(pending) = open::<PendingLogin>(&keys.ring, LOGIN_COOKIE, cookies) else {
            return Refusal::LoginFailed("no login in progress (or it was started elsewhere)");
        };
        let now = unix_now();
        if now >= pending.iat + login::LOGIN_TTL {
            return Refusal::LoginFailed("the login took too long");
        }
        let param = |name: &str| {
            url::form_urlencoded::parse(query.as_bytes())
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
        };
        if !param("state").is_some_and(|s| same_secret(&s, &pending.state)) {
            return Refusal::LoginFailed("the login's state does not match");
        }
        if param("error").is_some() {
            return Refusal::LoginFailed("the identity provider refused the login");
        }
        let Some(code) = param("code") else {
            return Refusal::LoginFailed("the callback carries no code");
        };
        let Some(provider) = self.provider(&pending.t, &pending.p) else {
            return Refusal::LoginFailed("the identity provider is no longer configured");
        };
        let Some(login) = &provider.login else {
            return Refusal::LoginFailed("the identity provider is no longer configured");
        };
        let logged_in = match finish_login(
            &provider.keys,
            login,
            &provider.settings,
            code,
            &pending.as_start(),
        )
        .await
        {
            Ok(logged_in) => logged_in,
            Err(e) => {
                tracing::info!(tenant = %pending.t, provider = %pending.p, error = %e, "login failed");
                metrics.oidc_token(&pending.t, &pending.p, "login_failed");
                return Refusal::LoginFailed("the login could not be completed");
            }
        };
        let session = Session::new(
            &pending.t,
            &pending.p,
            logged_in.identity.claims,
            logged_in.refresh_token,
            now,
        );
        let Some(sealed) = seal(&keys.ring, SESSION_COOKIE, &session) else {
            return Refusal::LoginFailed("the identity is too large for a session cookie");
        };
        metrics.oidc_token(&pending.t, &pending.p, "login");
        Refusal::LoggedIn {
            location: pending.ret,
            cookies: [
                set_cookie(SESSION_COOKIE, &sealed, keys.absolute),
                clear_cookie(LOGIN_COOKIE),
            ],
        }
    }

    /// Signing out: the session cookie removed, and the browser sent to the provider's
    /// end-session endpoint when it has one.
    pub(crate) fn logout(&self, cookies: &[&str]) -> Refusal {
        let location = self.sessions.as_ref().and_then(|keys| {
            let session = open::<Session>(&keys.ring, SESSION_COOKIE, cookies)?;
            let provider = self.provider(&session.t, &session.p)?;
            end_session_url(&provider.keys, provider.login.as_ref()?)
        });
        Refusal::LoggedOut {
            location,
            cookie: clear_cookie(SESSION_COOKIE),
        }
    }
}
