//! The browser login, as a relying party: the authorization request (code flow with PKCE,
//! `state` and `nonce`; `prompt=login`, `max_age` and `acr_values` for a step-up), the code
//! exchanged at the token endpoint (client secret, PKCE verifier), the ID token verified like
//! a bearer token — the provider's keys, the client id as audience — and its nonce compared;
//! refresh-token use; the provider's end-session URL for RP-initiated logout.

use std::time::{Duration, SystemTime};

use openidconnect::core::{CoreAuthPrompt, CoreAuthenticationFlow, CoreClient, CoreTokenResponse};
use openidconnect::{
    AuthenticationContextClass, AuthorizationCode, ClientId, ClientSecret, CsrfToken,
    EndpointMaybeSet, EndpointNotSet, EndpointSet, Nonce, OAuth2TokenResponse, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, RefreshToken, Scope, TokenResponse,
};
use serde_json::Value;

use super::keys::KeySet;
use super::{verify, ProviderSettings, TokenIdentity};

/// What the gateway needs to log people in with a provider.
#[derive(Clone, PartialEq, Eq)]
pub struct LoginSettings {
    pub client_id: String,
    pub client_secret: String,
    /// Where the provider sends the browser back (the gateway's callback).
    pub redirect_uri: String,
    pub scopes: Vec<String>,
}

impl std::fmt::Debug for LoginSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginSettings")
            .field("client_id", &self.client_id)
            .field("redirect_uri", &self.redirect_uri)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

/// A step-up: what the route asks of the person's next authentication.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StepUp {
    pub acr_values: Vec<String>,
    pub max_age: Option<Duration>,
}

/// A login started: where to send the browser, and what the callback must be given back.
#[derive(Clone, Debug)]
pub struct LoginStart {
    pub url: String,
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
}

/// A person logged in (or refreshed): who the ID token says they are, and the refresh token.
#[derive(Clone, Debug)]
pub struct LoggedIn {
    pub identity: TokenIdentity,
    pub refresh_token: Option<String>,
}

/// A client of the discovered provider (authorization endpoint set, token endpoint as
/// discovered).
type Discovered = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

fn client(keys: &KeySet, login: &LoginSettings) -> Result<Discovered, String> {
    let metadata = keys
        .metadata()
        .ok_or_else(|| format!("{}: not discovered yet", keys.issuer()))?;
    let redirect =
        RedirectUrl::new(login.redirect_uri.clone()).map_err(|e| format!("redirect_uri: {e}"))?;
    Ok(CoreClient::from_provider_metadata(
        (*metadata).clone(),
        ClientId::new(login.client_id.clone()),
        Some(ClientSecret::new(login.client_secret.clone())),
    )
    .set_redirect_uri(redirect))
}

/// Starts a login: the authorization URL with fresh `state`, `nonce` and PKCE verifier (S256),
/// and for a step-up `prompt=login` with the route's `max_age` and `acr_values`.
pub fn start_login(
    keys: &KeySet,
    login: &LoginSettings,
    step_up: Option<&StepUp>,
) -> Result<LoginStart, String> {
    let client = client(keys, login)?;
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut request = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .set_pkce_challenge(challenge);
    for scope in login.scopes.iter().filter(|s| *s != "openid") {
        request = request.add_scope(Scope::new(scope.clone()));
    }
    if let Some(step_up) = step_up {
        request = request.add_prompt(CoreAuthPrompt::Login);
        if let Some(age) = step_up.max_age {
            request = request.set_max_age(age);
        }
        for acr in &step_up.acr_values {
            request = request.add_auth_context_value(AuthenticationContextClass::new(acr.clone()));
        }
    }
    let (url, state, nonce) = request.url();
    Ok(LoginStart {
        url: url.to_string(),
        state: state.secret().clone(),
        nonce: nonce.secret().clone(),
        pkce_verifier: verifier.secret().clone(),
    })
}

/// Finishes a login: exchanges `code` with the verifier, verifies the ID token for the client
/// (signature, issuer, audience, times) and its `nonce`.
pub async fn finish_login(
    keys: &KeySet,
    login: &LoginSettings,
    settings: &ProviderSettings,
    code: String,
    start: &LoginStart,
) -> Result<LoggedIn, String> {
    let client = client(keys, login)?;
    let response = client
        .exchange_code(AuthorizationCode::new(code))
        .map_err(|e| e.to_string())?
        .set_pkce_verifier(PkceCodeVerifier::new(start.pkce_verifier.clone()))
        .request_async(keys.http())
        .await
        .map_err(|e| format!("token endpoint: {}", super::keys::error_chain(&e)))?;
    logged_in(keys, login, settings, &response, Some(&start.nonce)).await
}

/// Uses a refresh token; the answer must carry a fresh ID token.
pub async fn refresh_login(
    keys: &KeySet,
    login: &LoginSettings,
    settings: &ProviderSettings,
    refresh_token: &str,
) -> Result<LoggedIn, String> {
    let client = client(keys, login)?;
    let token = RefreshToken::new(refresh_token.to_owned());
    let response = client
        .exchange_refresh_token(&token)
        .map_err(|e| e.to_string())?
        .request_async(keys.http())
        .await
        .map_err(|e| format!("token endpoint: {}", super::keys::error_chain(&e)))?;
    let mut outcome = logged_in(keys, login, settings, &response, None).await?;
    // A provider that does not rotate refresh tokens keeps the one in use.
    if outcome.refresh_token.is_none() {
        outcome.refresh_token = Some(refresh_token.to_owned());
    }
    Ok(outcome)
}

async fn logged_in(
    keys: &KeySet,
    login: &LoginSettings,
    settings: &ProviderSettings,
    response: &CoreTokenResponse,
    nonce: Option<&str>,
) -> Result<LoggedIn, String> {
    let id_token = response
        .id_token()
        .ok_or("the token endpoint sent no ID token")?
        .to_string();
    let id_settings = ProviderSettings {
        audiences: vec![login.client_id.clone()],
        ..settings.clone()
    };
    let identity = verify(&id_token, keys, &id_settings, SystemTime::now(), |_| {})
        .await
        .map_err(|e| format!("ID token: {e}"))?;
    if let Some(nonce) = nonce {
        if identity.claims.get("nonce").and_then(Value::as_str) != Some(nonce) {
            return Err("ID token: the nonce is not the one sent".to_owned());
        }
    }
    Ok(LoggedIn {
        identity,
        refresh_token: response.refresh_token().map(|t| t.secret().clone()),
    })
}

/// The provider's end-session endpoint (RP-initiated logout), with the client id.
pub fn end_session_url(keys: &KeySet, login: &LoginSettings) -> Option<String> {
    let metadata = keys.metadata()?;
    let endpoint = metadata
        .additional_metadata()
        .end_session_endpoint
        .as_ref()?;
    let mut url = endpoint.url().clone();
    url.query_pairs_mut()
        .append_pair("client_id", &login.client_id);
    Some(url.to_string())
}
