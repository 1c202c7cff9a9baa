//! The identity assertion: a short-lived ES256 JWT the gateway signs for each upstream request
//! (`x-portcullis-assertion`), naming the caller it verified — certificate, bearer token, or
//! both — and the tenant and route, with the route as audience. An upstream checks it with the
//! public key the metrics listener serves at `/.well-known/jwks.json`, and so knows who called
//! without trusting the network. A caller's own copy of the header is stripped with every
//! other `x-portcullis-*` header.
//!
//! An assertion is signed once per caller and route and reused while more than half of its
//! lifetime is left: a signature costs tens of microseconds, a cache lookup less than one.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use moka::sync::Cache;
use portcullis_policy::{AssertionSettings, Identity, TokenIdentity};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Map, Value};

use crate::GatewayError;

/// The header an upstream reads the assertion from.
pub(crate) const ASSERTION_HEADER: &str = "x-portcullis-assertion";
/// Distinct (caller, route) assertions kept.
const CACHED: u64 = 100_000;

/// Who called, as the assertion states it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AssertionFacts<'a> {
    pub tenant: &'a str,
    pub route: &'a str,
    /// The name the records use for the caller.
    pub caller: Option<&'a str>,
    pub certificate: Option<&'a Identity>,
    pub token: Option<&'a TokenIdentity>,
}

/// Signs assertions with the configured key.
pub(crate) struct AssertionSigner {
    key: EcdsaKeyPair,
    rng: SystemRandom,
    /// `base64url({"alg":"ES256","kid":…,"typ":"JWT"})`.
    header: String,
    issuer: String,
    lifetime: Duration,
    jwks: String,
    /// Claims without times -> (assertion, its `exp`).
    cache: Cache<String, (Arc<str>, u64)>,
}

impl std::fmt::Debug for AssertionSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AssertionSigner")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl AssertionSigner {
    /// Reads the P-256 key (PKCS#8 PEM) the settings name.
    pub(crate) fn load(settings: &AssertionSettings) -> Result<Self, GatewayError> {
        let fail = |detail: String| {
            GatewayError::IdentityProvider(format!(
                "identity_assertion.signing_key {}: {detail}",
                settings.signing_key.display()
            ))
        };
        let pem = std::fs::read(&settings.signing_key).map_err(|e| fail(e.to_string()))?;
        let der = match rustls_pemfile::private_key(&mut pem.as_slice()) {
            Ok(Some(rustls_pki_types::PrivateKeyDer::Pkcs8(der))) => der,
            _ => return Err(fail("not a PKCS#8 PEM private key".to_owned())),
        };
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            der.secret_pkcs8_der(),
            &rng,
        )
        .map_err(|e| fail(format!("not a P-256 key: {e}")))?;
        let public = key.public_key().as_ref();
        // Uncompressed point: 0x04 || x || y.
        let (x, y) = (&public[1..33], &public[33..65]);
        let digest = ring::digest::digest(&ring::digest::SHA256, public);
        let kid = URL_SAFE_NO_PAD.encode(&digest.as_ref()[..12]);
        let jwks = json!({"keys": [{
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y),
        }]})
        .to_string();
        let header = URL_SAFE_NO_PAD.encode(
            json!({"alg": "ES256", "kid": kid, "typ": "JWT"})
                .to_string()
                .as_bytes(),
        );
        Ok(Self {
            key,
            rng,
            header,
            issuer: settings.issuer.clone(),
            lifetime: settings.lifetime,
            jwks,
            cache: Cache::builder()
                .max_capacity(CACHED)
                .time_to_live(settings.lifetime / 2)
                .build(),
        })
    }

    /// The public key as a JSON Web Key Set.
    pub(crate) fn jwks(&self) -> &str {
        &self.jwks
    }

    /// The assertion for `facts`, signed now or reused. `None` only if signing failed.
    pub(crate) fn assertion(&self, facts: &AssertionFacts<'_>) -> Option<Arc<str>> {
        let claims = self.claims(facts);
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if let Some((jwt, exp)) = self.cache.get(&claims) {
            if exp > now + self.lifetime.as_secs() / 2 {
                return Some(jwt);
            }
        }
        let exp = now + self.lifetime.as_secs();
        // The claims object with its times added before the closing brace.
        let body = format!(
            "{},\"iat\":{now},\"exp\":{exp}}}",
            claims.strip_suffix('}').unwrap_or(&claims)
        );
        let message = format!(
            "{}.{}",
            self.header,
            URL_SAFE_NO_PAD.encode(body.as_bytes())
        );
        let signature = self.key.sign(&self.rng, message.as_bytes()).ok()?;
        let jwt: Arc<str> =
            format!("{message}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref())).into();
        self.cache.insert(claims, (Arc::clone(&jwt), exp));
        Some(jwt)
    }

    /// The claims of an assertion, without its times, as JSON text.
    fn claims(&self, facts: &AssertionFacts<'_>) -> String {
        let mut claims = Map::new();
        claims.insert("iss".into(), self.issuer.as_str().into());
        claims.insert("aud".into(), facts.route.into());
        claims.insert("sub".into(), facts.caller.unwrap_or("anonymous").into());
        claims.insert("tenant".into(), facts.tenant.into());
        if let Some(cert) = facts.certificate {
            let mut c = Map::new();
            if let Some(id) = &cert.spiffe_id {
                c.insert("spiffe_id".into(), id.as_str().into());
            }
            if !cert.dns_sans.is_empty() {
                c.insert("dns_sans".into(), cert.dns_sans.clone().into());
            }
            if let Some(subject) = &cert.subject {
                c.insert("subject".into(), subject.as_str().into());
            }
            claims.insert("certificate".into(), Value::Object(c));
        }
        if let Some(token) = facts.token {
            let mut p = Map::new();
            p.insert("iss".into(), token.issuer.as_str().into());
            p.insert("sub".into(), token.subject.as_str().into());
            if let Some(email) = &token.email {
                p.insert("email".into(), email.as_str().into());
            }
            p.insert("groups".into(), token.groups.clone().into());
            p.insert("amr".into(), token.amr.clone().into());
            if let Some(acr) = &token.acr {
                p.insert("acr".into(), acr.as_str().into());
            }
            if let Some(at) = token.auth_time {
                p.insert("auth_time".into(), at.into());
            }
            claims.insert("person".into(), Value::Object(p));
        }
        Value::Object(claims).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED};

    fn signer(dir: &std::path::Path) -> AssertionSigner {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref())
        );
        let path = dir.join("assertion.key");
        std::fs::write(&path, pem).unwrap();
        AssertionSigner::load(&AssertionSettings {
            signing_key: path,
            issuer: "https://gw.example".into(),
            lifetime: Duration::from_secs(60),
        })
        .unwrap()
    }

    /// Verifies `jwt` with the JWKS the signer publishes and returns its claims.
    fn verified(signer: &AssertionSigner, jwt: &str) -> Value {
        let jwks: Value = serde_json::from_str(signer.jwks()).unwrap();
        let key = &jwks["keys"][0];
        let coord = |c: &str| URL_SAFE_NO_PAD.decode(key[c].as_str().unwrap()).unwrap();
        let mut point = vec![4];
        point.extend(coord("x"));
        point.extend(coord("y"));
        let (message, signature) = jwt.rsplit_once('.').unwrap();
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point)
            .verify(
                message.as_bytes(),
                &URL_SAFE_NO_PAD.decode(signature).unwrap(),
            )
            .unwrap();
        let header: Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(message.split('.').next().unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(header["kid"], key["kid"]);
        assert_eq!(header["alg"], "ES256");
        serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(message.split('.').nth(1).unwrap())
                .unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn assertions_verify_with_the_published_key_and_are_reused() {
        let dir = tempfile::tempdir().unwrap();
        let signer = signer(dir.path());
        let token = TokenIdentity::from_claims(
            json!({"iss": "https://idp", "sub": "alice", "groups": ["eng"], "amr": ["mfa"]})
                .as_object()
                .cloned()
                .unwrap(),
            "corp",
            &Default::default(),
        )
        .unwrap();
        let facts = AssertionFacts {
            tenant: "acme",
            route: "acme/app",
            caller: Some("alice"),
            certificate: None,
            token: Some(&token),
        };
        let jwt = signer.assertion(&facts).unwrap();
        let claims = verified(&signer, &jwt);
        assert_eq!(claims["iss"], "https://gw.example");
        assert_eq!(claims["aud"], "acme/app");
        assert_eq!(claims["sub"], "alice");
        assert_eq!(claims["person"]["amr"], json!(["mfa"]));
        assert_eq!(
            claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
            60
        );
        assert_eq!(signer.assertion(&facts).unwrap(), jwt, "reused");
        // Another route, another caller: another assertion.
        let other = AssertionFacts {
            route: "acme/other",
            ..facts
        };
        assert_ne!(signer.assertion(&other).unwrap(), jwt);
        let anonymous = AssertionFacts {
            caller: None,
            token: None,
            ..facts
        };
        assert_eq!(
            verified(&signer, &signer.assertion(&anonymous).unwrap())["sub"],
            "anonymous"
        );
    }

    #[test]
    fn a_key_that_is_not_p256_pkcs8_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        std::fs::write(&path, "not a key").unwrap();
        let settings = AssertionSettings {
            signing_key: path,
            issuer: "i".into(),
            lifetime: Duration::from_secs(60),
        };
        let err = AssertionSigner::load(&settings).unwrap_err().to_string();
        assert!(err.contains("not a PKCS#8 PEM private key"), "{err}");
    }
}
