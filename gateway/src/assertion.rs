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
use portcullis_audit::{SignatureAlgorithm, Signer, SignerError, P256_SPKI_PREFIX};
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
    key: Arc<dyn Signer>,
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

/// A P-256 key read from a PKCS#8 PEM file, signing as JWS ES256 wants (`r || s`).
struct FileKey {
    key: EcdsaKeyPair,
    rng: SystemRandom,
    spki: Vec<u8>,
}

impl Signer for FileKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, SignerError> {
        self.key
            .sign(&self.rng, msg)
            .map(|s| s.as_ref().to_vec())
            .map_err(|e| SignerError::Backend(e.to_string()))
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::EcdsaP256Sha256Fixed
    }

    fn public_key_der(&self) -> Vec<u8> {
        self.spki.clone()
    }
}

/// The P-256 key (PKCS#8 PEM) at `path`.
pub(crate) fn file_key(path: &std::path::Path) -> Result<Arc<dyn Signer>, GatewayError> {
    let fail = |detail: String| {
        GatewayError::IdentityProvider(format!(
            "identity_assertion.signing_key {}: {detail}",
            path.display()
        ))
    };
    let pem = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
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
    let mut spki = P256_SPKI_PREFIX.to_vec();
    spki.extend_from_slice(key.public_key().as_ref());
    Ok(Arc::new(FileKey { key, rng, spki }))
}

/// An ECDSA signature in DER (`SEQUENCE { r INTEGER, s INTEGER }`) as JWS wants it: `r || s`,
/// each 32 bytes.
fn der_to_fixed(der: &[u8]) -> Option<Vec<u8>> {
    let integer = |bytes: &[u8]| -> Option<(Vec<u8>, usize)> {
        let (&tag, rest) = bytes.split_first()?;
        let (&len, rest) = rest.split_first()?;
        let len = usize::from(len);
        if tag != 0x02 || len > 33 || rest.len() < len {
            return None;
        }
        let value = rest[..len]
            .iter()
            .skip_while(|b| **b == 0)
            .copied()
            .collect::<Vec<u8>>();
        if value.len() > 32 {
            return None;
        }
        let mut fixed = vec![0; 32 - value.len()];
        fixed.extend(value);
        Some((fixed, 2 + len))
    };
    let (&tag, rest) = der.split_first()?;
    let (&len, body) = rest.split_first()?;
    if tag != 0x30 || usize::from(len) != body.len() {
        return None;
    }
    let (mut r, used) = integer(body)?;
    let (s, used_s) = integer(&body[used..])?;
    if used + used_s != body.len() {
        return None;
    }
    r.extend(s);
    Some(r)
}

impl AssertionSigner {
    /// A signer with `key` (a P-256 key: from a file, or in a token) and `settings`.
    pub(crate) fn new(
        key: Arc<dyn Signer>,
        settings: &AssertionSettings,
    ) -> Result<Self, GatewayError> {
        let spki = key.public_key_der();
        let point = spki
            .strip_prefix(&P256_SPKI_PREFIX[..])
            .filter(|p| p.len() == 65 && p[0] == 4)
            .ok_or_else(|| {
                GatewayError::IdentityProvider(
                    "identity_assertion: the key is not a P-256 key".to_owned(),
                )
            })?;
        let (x, y) = (&point[1..33], &point[33..65]);
        let digest = ring::digest::digest(&ring::digest::SHA256, point);
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
        let signature = self.key.sign(message.as_bytes()).ok()?;
        let signature = match self.key.algorithm() {
            SignatureAlgorithm::EcdsaP256Sha256Fixed => signature,
            SignatureAlgorithm::EcdsaP256Sha256Asn1 => der_to_fixed(&signature)?,
            _ => return None,
        };
        let jwt: Arc<str> = format!("{message}.{}", URL_SAFE_NO_PAD.encode(&signature)).into();
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
    use portcullis_policy::AuditKey;

    /// A token's signer answers in DER: the JWS gets `r || s` all the same.
    #[test]
    fn der_signatures_become_fixed_width() {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let fixed =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
                .unwrap();
        let asn1 = EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            pkcs8.as_ref(),
            &rng,
        )
        .unwrap();
        let public = ring::signature::UnparsedPublicKey::new(
            &ring::signature::ECDSA_P256_SHA256_FIXED,
            fixed.public_key().as_ref().to_vec(),
        );
        for i in 0..64u8 {
            let msg = [i; 40];
            let der = asn1.sign(&rng, &msg).unwrap();
            let converted = der_to_fixed(der.as_ref()).unwrap();
            assert_eq!(converted.len(), 64);
            public.verify(&msg, &converted).unwrap();
        }
        for bad in [
            &[][..],
            &[0x30, 0x00],
            &[0x30, 0x02, 0x02, 0x00],
            &[0x31, 0x00],
        ] {
            assert!(der_to_fixed(bad).is_none());
        }
    }
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
        let settings = AssertionSettings {
            signing_key: AuditKey::File(path.clone()),
            issuer: "https://gw.example".into(),
            lifetime: Duration::from_secs(60),
        };
        AssertionSigner::new(file_key(&path).unwrap(), &settings).unwrap()
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
        let err = file_key(&path).err().unwrap().to_string();
        assert!(err.contains("not a PKCS#8 PEM private key"), "{err}");
    }
}
