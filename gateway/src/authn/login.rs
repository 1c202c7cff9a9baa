//! The browser login on routes with `login: PROVIDER`: a browser without a session is sent
//! to the provider (code flow, PKCE, `state`, `nonce`), comes back to the gateway's callback,
//! and leaves with a session in a sealed cookie that any replica holding the key ring can
//! read — no shared session store. Sessions end at their absolute and idle lifetimes; when the
//! ID token they hold expires, the refresh token (sealed in the cookie too) gets a new one.
//!
//! Cookies: `__Host-portcullis-session` (the session) and `__Host-portcullis-login` (a login
//! in progress, 10 minutes), both `Secure; HttpOnly; SameSite=Lax; Path=/`, sealed for their
//! own purpose (one cannot be replayed as the other).

use portcullis_identity::oidc::{KeyRing, LoginStart};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub(crate) const SESSION_COOKIE: &str = "__Host-portcullis-session";
pub(crate) const LOGIN_COOKIE: &str = "__Host-portcullis-login";
/// How long a login may take between the redirect and the callback.
pub(crate) const LOGIN_TTL: u64 = 600;
/// Browsers keep cookies of about 4 KiB; a session that would not fit is refused at login.
const MAX_COOKIE: usize = 3_800;
/// A session's last-seen time is rewritten at most this often (each rewrite is a Set-Cookie).
pub(crate) const SEEN_RESOLUTION: u64 = 60;
/// ID token claims a session need not keep.
const DROPPED_CLAIMS: &[&str] = &["nonce", "at_hash", "c_hash", "s_hash", "jti", "sid", "azp"];

/// What a session cookie holds.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub(crate) struct Session {
    /// Tenant and provider that logged the person in.
    pub t: String,
    pub p: String,
    /// The ID token's claims.
    pub c: Map<String, Value>,
    /// The refresh token, if the provider gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r: Option<String>,
    /// When the person logged in, and when the session was last used (Unix time).
    pub iat: u64,
    pub seen: u64,
}

impl Session {
    pub(crate) fn new(
        tenant: &str,
        provider: &str,
        mut claims: Map<String, Value>,
        refresh: Option<String>,
        now: u64,
    ) -> Self {
        for name in DROPPED_CLAIMS {
            claims.remove(*name);
        }
        Self {
            t: tenant.to_owned(),
            p: provider.to_owned(),
            c: claims,
            r: refresh,
            iat: now,
            seen: now,
        }
    }

    /// The ID token's `exp`.
    pub(crate) fn token_expiry(&self) -> u64 {
        self.c.get("exp").and_then(Value::as_u64).unwrap_or(0)
    }
}

/// What a login cookie holds: enough to finish the login at the callback.
#[derive(Serialize, Deserialize, Debug)]
pub(crate) struct PendingLogin {
    pub t: String,
    pub p: String,
    pub state: String,
    pub nonce: String,
    pub verifier: String,
    /// Where the person was going (a path and query on this gateway).
    pub ret: String,
    pub iat: u64,
}

impl PendingLogin {
    pub(crate) fn new(
        tenant: &str,
        provider: &str,
        start: &LoginStart,
        ret: &str,
        now: u64,
    ) -> Self {
        Self {
            t: tenant.to_owned(),
            p: provider.to_owned(),
            state: start.state.clone(),
            nonce: start.nonce.clone(),
            verifier: start.pkce_verifier.clone(),
            ret: ret.to_owned(),
            iat: now,
        }
    }

    pub(crate) fn as_start(&self) -> LoginStart {
        LoginStart {
            url: String::new(),
            state: self.state.clone(),
            nonce: self.nonce.clone(),
            pkce_verifier: self.verifier.clone(),
        }
    }
}

/// The `Set-Cookie` value of `name` holding `value` for `max_age` seconds.
pub(crate) fn set_cookie(name: &str, value: &str, max_age: u64) -> String {
    format!("{name}={value}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={max_age}")
}

/// The `Set-Cookie` value that removes `name`.
pub(crate) fn clear_cookie(name: &str) -> String {
    set_cookie(name, "", 0)
}

/// Seals `value` as cookie `name`; `None` if it would be too large for a browser to keep.
pub(crate) fn seal<T: Serialize>(ring: &KeyRing, name: &str, value: &T) -> Option<String> {
    let json = serde_json::to_vec(value).ok()?;
    ring.seal(name, &json).filter(|s| s.len() <= MAX_COOKIE)
}

/// Opens cookie `name` from the request's `Cookie` header values. A cookie sent twice is
/// read as absent: which one an upstream would see is anyone's guess.
pub(crate) fn open<T: for<'de> Deserialize<'de>>(
    ring: &KeyRing,
    name: &str,
    cookie_headers: &[&str],
) -> Option<T> {
    let mut found = cookie_headers
        .iter()
        .flat_map(|h| h.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(n, _)| *n == name)
        .map(|(_, v)| v);
    let value = found.next()?;
    if found.next().is_some() {
        return None;
    }
    serde_json::from_slice(&ring.open(name, value)?).ok()
}

/// Equality of two secrets in time that does not depend on where they differ.
pub(crate) fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |diff, (x, y)| diff | (x ^ y))
            == 0
}

/// A return path the callback may redirect to: a path on this gateway (not `//host`, not a
/// URL), else `/`.
pub(crate) fn safe_return(path_and_query: &str) -> &str {
    let ok = path_and_query.starts_with('/')
        && !path_and_query.starts_with("//")
        && !path_and_query.starts_with("/\\")
        && !path_and_query.bytes().any(|b| b.is_ascii_control());
    if ok {
        path_and_query
    } else {
        "/"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> KeyRing {
        KeyRing::parse("k1 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").unwrap()
    }

    #[test]
    fn cookies_round_trip_and_refuse_tampering_duplicates_and_swaps() {
        let ring = ring();
        let claims = serde_json::json!({"sub": "alice", "nonce": "n", "exp": 5})
            .as_object()
            .cloned()
            .unwrap();
        let session = Session::new("acme", "corp", claims, Some("rt".into()), 100);
        assert!(!session.c.contains_key("nonce"));
        let sealed = seal(&ring, SESSION_COOKIE, &session).unwrap();
        let header = format!("theme=dark; {SESSION_COOKIE}={sealed}; other=1");
        let back: Session = open(&ring, SESSION_COOKIE, &[&header]).unwrap();
        assert_eq!(
            (back.t.as_str(), back.r.as_deref(), back.token_expiry()),
            ("acme", Some("rt"), 5)
        );
        // Sent twice (two headers, or twice in one): ambiguous, so absent.
        let twice = format!("{SESSION_COOKIE}={sealed}");
        assert!(open::<Session>(&ring, SESSION_COOKIE, &[&twice, &twice]).is_none());
        // Tampered, or a login cookie presented as a session.
        // One character in the middle changed to another: always a different value.
        let mut bytes = sealed.clone().into_bytes();
        let middle = bytes.len() / 2;
        bytes[middle] = if bytes[middle] == b'A' { b'B' } else { b'A' };
        let tampered = format!("{SESSION_COOKIE}={}", String::from_utf8(bytes).unwrap());
        assert!(open::<Session>(&ring, SESSION_COOKIE, &[&tampered]).is_none());
        let as_login = format!("{LOGIN_COOKIE}={sealed}");
        assert!(open::<Session>(&ring, LOGIN_COOKIE, &[&as_login]).is_none());
        // Too large for a browser: refused at sealing.
        let mut big = session.clone();
        big.c.insert("blob".into(), "x".repeat(4_000).into());
        assert!(seal(&ring, SESSION_COOKIE, &big).is_none());
    }

    #[test]
    fn return_paths_stay_on_the_gateway() {
        assert_eq!(safe_return("/app/x?y=1"), "/app/x?y=1");
        for bad in [
            "//evil.example/",
            "https://evil.example/",
            "/\\evil",
            "app",
            "",
            "/a\r\nb",
        ] {
            assert_eq!(safe_return(bad), "/", "{bad:?}");
        }
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "abcd"));
    }
}
