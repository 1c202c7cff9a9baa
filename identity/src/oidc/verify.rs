//! Checking one bearer token: a compact JWS whose algorithm is on the provider's allow-list,
//! signed by a key of the provider's key set (fetched again, at a bounded rate, for a key not
//! yet known), from the configured issuer, for one of the configured audiences, within its
//! validity (with the configured clock skew), with a subject.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

use super::keys::{KeySet, Keys};
use super::{
    strings, ProviderSettings, SigningAlgorithm, TokenError, TokenIdentity, MAX_TOKEN_BYTES,
};

/// Verifies `token` for `settings` with the keys of `keys`, at `now`. A token signed with a
/// key the set does not hold makes the set fetch again (at most once per its interval) before
/// it is refused; `fetched` hears the outcome of such a fetch.
pub async fn verify(
    token: &str,
    keys: &KeySet,
    settings: &ProviderSettings,
    now: SystemTime,
    fetched: impl FnOnce(&Result<usize, String>),
) -> Result<TokenIdentity, TokenError> {
    let now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    match check(token, &keys.current(), settings, now) {
        Err(TokenError::UnknownKey | TokenError::KeysUnavailable) => {
            let kid = header(token).ok().and_then(|(_, kid)| kid);
            if let Some(outcome) = keys.refresh_for_unknown_key(kid.as_deref()).await {
                fetched(&outcome);
            }
            check(token, &keys.current(), settings, now)
        }
        outcome => outcome,
    }
}

/// [`check`] with the keys of a JSON Web Key Set given as text, for the fuzz targets (which
/// cannot fetch one). Not for production use.
#[doc(hidden)]
pub fn check_token_for_fuzzing(
    token: &str,
    jwks: &str,
    settings: &ProviderSettings,
    now: u64,
) -> Result<TokenIdentity, TokenError> {
    let set: openidconnect::core::CoreJsonWebKeySet =
        serde_json::from_str(jwks).map_err(|_| TokenError::KeysUnavailable)?;
    let keys = Keys {
        list: super::keys::usable_keys(&set),
        ..Keys::default()
    };
    check(token, &keys, settings, now)
}

/// The token's algorithm (if on the allow-list) and key id, from its header.
fn header(token: &str) -> Result<(SigningAlgorithm, Option<String>), TokenError> {
    if token.len() > MAX_TOKEN_BYTES || token.split('.').count() != 3 {
        return Err(TokenError::Malformed);
    }
    let encoded = token.split('.').next().unwrap_or_default();
    let bytes = URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|_| TokenError::Malformed)?;
    let header: Map<String, Value> =
        serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)?;
    // Extensions the sender says must be understood: none are.
    if header.contains_key("crit") {
        return Err(TokenError::Malformed);
    }
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or(TokenError::Malformed)?
        .parse::<SigningAlgorithm>()
        .map_err(|_| TokenError::Algorithm)?;
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(TokenError::Malformed),
    };
    Ok((alg, kid))
}

fn jwt_algorithm(alg: SigningAlgorithm) -> Algorithm {
    match alg {
        SigningAlgorithm::RS256 => Algorithm::RS256,
        SigningAlgorithm::RS384 => Algorithm::RS384,
        SigningAlgorithm::RS512 => Algorithm::RS512,
        SigningAlgorithm::PS256 => Algorithm::PS256,
        SigningAlgorithm::PS384 => Algorithm::PS384,
        SigningAlgorithm::PS512 => Algorithm::PS512,
        SigningAlgorithm::ES256 => Algorithm::ES256,
        SigningAlgorithm::ES384 => Algorithm::ES384,
        SigningAlgorithm::EdDSA => Algorithm::EdDSA,
    }
}

/// The checks, against the keys in hand, at `now` (seconds since the epoch).
pub(crate) fn check(
    token: &str,
    keys: &Keys,
    settings: &ProviderSettings,
    now: u64,
) -> Result<TokenIdentity, TokenError> {
    let (alg, kid) = header(token)?;
    if !settings.algorithms.contains(&alg) {
        return Err(TokenError::Algorithm);
    }
    if keys.list.is_empty() {
        return Err(TokenError::KeysUnavailable);
    }
    let alg = jwt_algorithm(alg);
    let mut validation = Validation::new(alg);
    // Times, issuer and audience are checked below, against `now` and with our own reasons.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let mut candidates = keys
        .list
        .iter()
        .filter(|k| kid.is_none() || k.kid == kid)
        .filter(|k| k.alg.is_none_or(|a| a == alg))
        .peekable();
    if candidates.peek().is_none() {
        return Err(TokenError::UnknownKey);
    }
    let mut claims = None;
    for key in candidates {
        match jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation) {
            Ok(data) => {
                claims = Some(data.claims);
                break;
            }
            // A key of another type, or another key of the same type: try the next one.
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm
                ) => {}
            Err(_) => return Err(TokenError::Malformed),
        }
    }
    let claims = claims.ok_or(TokenError::Signature)?;
    judge(claims, settings, now)
}

/// A numeric date claim (`exp`, `nbf`, `iat`, `auth_time`): absent, or whole seconds.
fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<u64>, TokenError> {
    match claims.get(name) {
        None => Ok(None),
        Some(v) => v
            .as_f64()
            .filter(|n| n.is_finite() && *n >= 0.0)
            .map(|n| Some(n as u64))
            .ok_or(TokenError::Malformed),
    }
}

/// The claims of a token whose signature held.
fn judge(
    claims: Map<String, Value>,
    settings: &ProviderSettings,
    now: u64,
) -> Result<TokenIdentity, TokenError> {
    let skew = settings.clock_skew.as_secs();
    if claims.get("iss").and_then(Value::as_str) != Some(settings.issuer.as_str()) {
        return Err(TokenError::Issuer);
    }
    let expires_at = numeric_date(&claims, "exp")?.ok_or(TokenError::MissingClaim)?;
    if now > expires_at.saturating_add(skew) {
        return Err(TokenError::Expired);
    }
    if numeric_date(&claims, "nbf")?.is_some_and(|nbf| nbf > now.saturating_add(skew)) {
        return Err(TokenError::NotYetValid);
    }
    if numeric_date(&claims, "iat")?.is_some_and(|iat| iat > now.saturating_add(skew)) {
        return Err(TokenError::IssuedInFuture);
    }
    let audiences = strings(&claims, "aud");
    if !audiences.iter().any(|a| settings.audiences.contains(a)) {
        return Err(TokenError::Audience);
    }
    if let Some(claim) = &settings.claims.tenant {
        if claims.get(claim).and_then(Value::as_str) != Some(settings.tenant.as_str()) {
            return Err(TokenError::Tenant);
        }
    }
    numeric_date(&claims, "auth_time")?;
    TokenIdentity::from_claims(claims, &settings.name, &settings.claims)
        .ok_or(TokenError::MissingClaim)
}

#[cfg(test)]
mod tests;
