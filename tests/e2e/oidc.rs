//! People as callers: bearer tokens from a real OpenID provider (npm `oidc-provider`, started
//! on loopback by `oidc_provider`), judged by the gateway — and attacked as a caller would:
//! expired, for another audience or issuer, `alg: none`, HS256 keyed with the public key,
//! tampered, duplicated, made-up key ids; keys rotated and the provider gone.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Value};

use crate::harness::*;
use crate::oidc_provider::{OidcProvider, ProviderOptions, DEFAULT_RESOURCE};

const CONFIG: &str = r#"
listeners:
  - name: public
    address: 127.0.0.1:{port}
    tls:
      certificate: server.pem
      private_key: server.key
      client_auth: optional
      client_ca: ca.pem
metrics:
  address: 127.0.0.1:{metrics}
shutdown:
  grace_period: 1s
identity_assertion:
  signing_key: {assertion_key}
  issuer: https://gateway.test
upstreams:
  - name: echo
    targets: [127.0.0.1:{echo}]
tenants:
  - name: acme
    identity_providers:
      - name: corp
        issuer: {issuer}
        audiences: [{audience}]
        ca: {idp_ca}
        unknown_key_refetch: {refetch}
    routes:
      - name: app
        path_prefix: /app
        upstream: echo
        authentication: oidc
        access:
          - id: engineers
            groups: [eng]
      - name: admin
        path_prefix: /admin
        upstream: echo
        authentication: oidc
        mfa: { amr: [mfa] }
        access:
          - id: admins
            groups: [admins]
      - name: public
        path_prefix: /public
        upstream: echo
        access:
          - id: anyone
"#;

struct Setup {
    pki: Pki,
    provider: OidcProvider,
    _echo: Echo,
    gw: Gateway,
    /// A client without a certificate: a person's browser or script.
    person: Client,
}

/// A P-256 PKCS#8 key for the identity assertion, readable by its owner only.
fn assertion_key(dir: &std::path::Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &rng,
    )
    .unwrap();
    let pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref())
    );
    let path = dir.join("assertion.key");
    std::fs::write(&path, pem).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// The claims of an identity assertion, after checking its ES256 signature with the JWKS the
/// gateway publishes on its metrics listener (as an upstream would).
fn verified_assertion(gw: &Gateway, jwt: &str) -> Value {
    let (status, jwks) = http_get(gw.metrics_port, "/.well-known/jwks.json").unwrap();
    assert_eq!(status, 200, "{jwks}");
    let jwks: Value = serde_json::from_str(&jwks).unwrap();
    let (message, signature) = jwt.rsplit_once('.').unwrap();
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(message.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    let key = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == header["kid"])
        .expect("the assertion's kid is published");
    let coord = |c: &str| URL_SAFE_NO_PAD.decode(key[c].as_str().unwrap()).unwrap();
    let mut point = vec![4];
    point.extend(coord("x"));
    point.extend(coord("y"));
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, point)
        .verify(
            message.as_bytes(),
            &URL_SAFE_NO_PAD.decode(signature).unwrap(),
        )
        .expect("the assertion verifies with the published key");
    serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(message.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap()
}

fn setup(refetch: &str) -> Setup {
    let pki = Pki::new();
    let provider = OidcProvider::start(&pki, pki.dir.path(), ProviderOptions::default());
    let echo = Echo::start(pki.dir.path(), "e1");
    let yaml = CONFIG
        .replace("{echo}", &echo.port.to_string())
        .replace("{issuer}", provider.issuer())
        .replace("{audience}", DEFAULT_RESOURCE)
        .replace("{idp_ca}", provider.ca().to_str().unwrap())
        .replace("{refetch}", refetch)
        .replace(
            "{assertion_key}",
            assertion_key(pki.dir.path()).to_str().unwrap(),
        );
    let gw = Gateway::start(pki.dir.path(), &yaml);
    let person = Client::new(&pki.path("ca.pem"), None);
    Setup {
        pki,
        provider,
        _echo: echo,
        gw,
        person,
    }
}

impl Setup {
    fn get(&self, path: &str, token: Option<&str>) -> Response {
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| vec![("Authorization", a)])
            .unwrap_or_default();
        self.person
            .connect(self.gw.port)
            .unwrap()
            .request("GET", path, &headers)
            .unwrap()
    }

    /// Claims as the provider would issue them for alice, changed by `changes` (null
    /// removes).
    fn claims(&self, changes: Value) -> Value {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let mut claims = json!({
            "iss": self.provider.issuer(),
            "sub": "alice",
            "aud": DEFAULT_RESOURCE,
            "iat": now,
            "exp": now + 300,
            "groups": ["eng"],
            "amr": ["pwd"],
        });
        for (k, v) in changes.as_object().unwrap() {
            if v.is_null() {
                claims.as_object_mut().unwrap().remove(k);
            } else {
                claims[k] = v.clone();
            }
        }
        claims
    }
}

fn echoed(resp: &Response, name: &str) -> Option<String> {
    resp.json()["headers"][name]
        .as_array()
        .and_then(|v| v.first())
        .and_then(|v| v.as_str())
        .map(str::to_owned)
}

fn challenge(resp: &Response) -> String {
    resp.header("www-authenticate")
        .unwrap_or_default()
        .to_owned()
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

#[test]
fn a_person_logged_in_at_the_provider_reaches_token_routes_with_their_identity() {
    let s = setup("30s");
    let alice = s.provider.login("alice");
    let resp = s.get("/app/report", Some(&alice.access_token));
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    assert_eq!(
        echoed(&resp, "x-portcullis-user-subject").as_deref(),
        Some("alice")
    );
    assert_eq!(
        echoed(&resp, "x-portcullis-user-issuer").as_deref(),
        Some(s.provider.issuer())
    );
    assert_eq!(
        echoed(&resp, "x-portcullis-user-groups").as_deref(),
        Some("eng")
    );
    assert_eq!(
        echoed(&resp, "x-portcullis-user-amr").as_deref(),
        Some("pwd")
    );
    assert_eq!(
        echoed(&resp, "authorization"),
        None,
        "the token stays at the gateway"
    );
    // The upstream can check who called without trusting the network.
    let claims = verified_assertion(&s.gw, &echoed(&resp, "x-portcullis-assertion").unwrap());
    assert_eq!(claims["iss"], "https://gateway.test");
    assert_eq!(claims["aud"], "acme/app");
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["tenant"], "acme");
    assert_eq!(claims["person"]["iss"], s.provider.issuer());
    assert_eq!(claims["person"]["amr"], json!(["pwd"]));
    // A caller's own assertion never reaches the upstream.
    let forged = format!("Bearer {}", alice.access_token);
    let resp = s
        .person
        .connect(s.gw.port)
        .unwrap()
        .request(
            "GET",
            "/app/report",
            &[
                ("Authorization", &forged),
                ("X-Portcullis-Assertion", "eyJ.forged.x"),
            ],
        )
        .unwrap();
    assert_eq!(resp.status, 200);
    let sent = resp.json()["headers"]["x-portcullis-assertion"].clone();
    assert_eq!(sent.as_array().map(Vec::len), Some(1), "{sent}");
    assert_ne!(sent[0], "eyJ.forged.x");
    // No token: a challenge, not a redirect.
    let resp = s.get("/app/report", None);
    assert_eq!(resp.status, 401);
    assert_eq!(challenge(&resp), "Bearer realm=\"portcullis\"");
    assert_eq!(resp.json()["error"], "unauthenticated");
    // A route that reads no tokens ignores them.
    assert_eq!(s.get("/public/x", Some("not-a-token")).status, 200);
    // Rules on claims: alice is not an admin; MFA first, then the group.
    let resp = s.get("/admin/x", Some(&alice.access_token));
    assert_eq!(resp.status, 401);
    assert!(
        challenge(&resp).contains("error=\"insufficient_user_authentication\""),
        "{}",
        challenge(&resp)
    );
    let bob = s.provider.login("bob");
    assert_eq!(s.get("/admin/x", Some(&bob.access_token)).status, 200);
    // The access line names the person (lines are flushed before /metrics answers).
    let metrics = s.gw.metrics();
    let log = s.gw.proc.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("\"alice\"") && l.contains("/app/report")),
        "{log}"
    );
    assert!(!log.contains(&alice.access_token), "a token was logged");
    assert_eq!(
        metric_value(
            &metrics,
            "portcullis_oidc_tokens_total{provider=\"corp\",result=\"valid\",tenant=\"acme\"}"
        ),
        4.0,
        "{metrics}"
    );
}

#[test]
fn forged_and_misdirected_tokens_are_refused_with_their_reason() {
    let s = setup("30s");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let good = s.provider.sign(Value::Null, s.claims(json!({})));
    assert_eq!(s.get("/app/x", Some(&good)).status, 200);
    let payload = good.split('.').nth(1).unwrap().to_owned();
    let kid = crate::oidc_provider::jwt_header(&good)["kid"].clone();

    let mut cases: Vec<(&str, String, &str)> = vec![
        (
            "expired",
            s.provider.sign(
                Value::Null,
                s.claims(json!({"exp": now - 600, "iat": now - 900})),
            ),
            "the token has expired",
        ),
        (
            "another audience",
            s.provider.sign(
                Value::Null,
                s.claims(json!({"aud": "https://other.example"})),
            ),
            "the token is not meant for this service",
        ),
        (
            "no audience",
            s.provider.sign(Value::Null, s.claims(json!({"aud": null}))),
            "the token is not meant for this service",
        ),
        (
            "not yet valid",
            s.provider
                .sign(Value::Null, s.claims(json!({"nbf": now + 3600}))),
            "the token is not valid yet",
        ),
        (
            "another issuer",
            s.provider.sign(
                Value::Null,
                s.claims(json!({"iss": "https://evil.example"})),
            ),
            "the token is from another issuer",
        ),
        (
            "no subject",
            s.provider.sign(Value::Null, s.claims(json!({"sub": null}))),
            "the token lacks a required claim",
        ),
    ];
    // alg none, with the provider's kid and the good payload.
    let none = format!(
        "{}.{payload}.",
        b64(json!({"alg": "none", "kid": kid}).to_string().as_bytes())
    );
    cases.push((
        "alg none",
        none,
        "the token's signing algorithm is not accepted",
    ));
    // HS256 keyed with the provider's published key: the classic confusion.
    let jwks = s.provider.keys().to_string();
    let head = b64(json!({"alg": "HS256", "kid": kid, "typ": "JWT"})
        .to_string()
        .as_bytes());
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, jwks.as_bytes());
    let mac = ring::hmac::sign(&key, format!("{head}.{payload}").as_bytes());
    cases.push((
        "HS256 with the public key",
        format!("{head}.{payload}.{}", b64(mac.as_ref())),
        "the token's signing algorithm is not accepted",
    ));
    // The good token with its payload changed (groups: admins).
    let parts: Vec<&str> = good.split('.').collect();
    let forged_claims = s.claims(json!({"groups": ["eng", "admins"], "amr": ["mfa"]}));
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64(forged_claims.to_string().as_bytes()),
        parts[2]
    );
    cases.push((
        "tampered",
        tampered,
        "the token's signature does not verify",
    ));
    cases.push((
        "garbage",
        "a.b.c".to_owned(),
        "the token is not a well-formed signed JWT",
    ));

    for (what, token, description) in &cases {
        for path in ["/app/x", "/admin/x"] {
            let resp = s.get(path, Some(token));
            assert_eq!(resp.status, 401, "{what} on {path}");
            assert_eq!(
                challenge(&resp),
                format!(
                    "Bearer realm=\"portcullis\", error=\"invalid_token\", error_description=\"{description}\""
                ),
                "{what}"
            );
            assert_eq!(resp.json()["error"], "invalid_token", "{what}");
        }
    }
    // Two Authorization headers: which one an upstream reads is anyone's guess.
    let auth = format!("Bearer {good}");
    let resp = s
        .person
        .connect(s.gw.port)
        .unwrap()
        .request(
            "GET",
            "/app/x",
            &[("Authorization", &auth), ("Authorization", &auth)],
        )
        .unwrap();
    assert_eq!(resp.status, 401);
    let metrics = s.gw.metrics();
    for (result, count) in [
        ("token_expired", 2.0),
        ("token_audience", 4.0),
        ("token_algorithm", 4.0),
        ("token_signature", 2.0),
        ("token_issuer", 2.0),
        ("token_malformed", 3.0),
    ] {
        let sample = format!(
            "portcullis_oidc_tokens_total{{provider=\"-\",result=\"{result}\",tenant=\"acme\"}}"
        );
        assert_eq!(
            metric_value(&metrics, &sample),
            count,
            "{result}:\n{metrics}"
        );
    }
    let log = s.gw.proc.log_text();
    for (_, token, _) in &cases {
        assert!(!log.contains(token.as_str()), "a token was logged");
    }
}

#[test]
fn rotated_keys_are_picked_up_and_known_keys_outlive_the_provider() {
    let mut s = setup("1s");
    let before = s.provider.login("alice");
    assert_eq!(s.get("/app/x", Some(&before.access_token)).status, 200);
    // New key, new kid: the gateway fetches the key set again for it.
    let kid = s.provider.rotate(false);
    let after = s.provider.login("alice");
    assert_eq!(
        crate::oidc_provider::jwt_header(&after.access_token)["kid"],
        kid.as_str()
    );
    let resp = s.get("/app/x", Some(&after.access_token));
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    let sample = format!(
        "portcullis_oidc_key_fetches_total{{issuer=\"{}\",reason=\"unknown_key\",result=\"success\"}}",
        s.provider.issuer()
    );
    assert_eq!(metric_value(&s.gw.metrics(), &sample), 1.0);
    // A token signed now but first shown once the provider is gone is checked with the
    // keys already fetched.
    let unseen = s
        .provider
        .sign(Value::Null, s.claims(json!({"sub": "carol"})));
    s.provider.stop();
    assert_eq!(s.get("/app/x", Some(&unseen)).status, 200);
    assert_eq!(s.get("/app/x", Some(&before.access_token)).status, 200);
    // A key the gateway never saw cannot be fetched now: refused, not hung.
    let started = std::time::Instant::now();
    let resp = s.get(
        "/app/x",
        Some(&format!(
            "{}x",
            &after.access_token[..after.access_token.len() - 1]
        )),
    );
    assert_eq!(resp.status, 401);
    assert!(started.elapsed() < Duration::from_secs(8));
    let _ = &s.pki;
}

#[test]
fn a_flood_of_made_up_key_ids_makes_at_most_one_fetch_per_interval() {
    let s = setup("30s");
    let fetches = |s: &Setup| {
        metric_value(
            &s.gw.metrics(),
            &format!(
                "portcullis_oidc_key_fetches_total{{issuer=\"{}\",reason=\"unknown_key\",result=\"success\"}}",
                s.provider.issuer()
            ),
        )
    };
    let good = s.provider.sign(Value::Null, s.claims(json!({})));
    assert_eq!(s.get("/app/x", Some(&good)).status, 200);
    let mut conn = s.person.connect(s.gw.port).unwrap();
    for i in 0..40 {
        let token = s
            .provider
            .sign(json!({"kid": format!("made-up-{i}")}), s.claims(json!({})));
        let auth = format!("Bearer {token}");
        let resp = conn
            .request("GET", "/app/x", &[("Authorization", &auth)])
            .unwrap();
        assert_eq!(resp.status, 401);
        assert!(
            challenge(&resp).contains("does not publish"),
            "{}",
            challenge(&resp)
        );
    }
    // At most the one fetch the first made-up kid was allowed (made within the interval of
    // the gateway's first fetch, it may be none); the provider saw no flood either way.
    assert!(fetches(&s) <= 1.0, "{}", s.gw.metrics());
    let metrics = s.gw.metrics();
    let all: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("portcullis_oidc_key_fetches_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(all <= 3.0, "{all} fetches:\n{metrics}");
}

#[test]
fn tokens_work_over_http2_too() {
    let s = setup("30s");
    let alice = s.provider.login("alice");
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "--http2",
            "--max-time",
            "10",
            "-w",
            "\n%{http_version} %{http_code}",
        ])
        .arg("--cacert")
        .arg(s.pki.path("ca.pem"))
        .arg("-H")
        .arg(format!("Authorization: Bearer {}", alice.access_token))
        .arg(format!("https://localhost:{}/app/h2", s.gw.port))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.ends_with("\n2 200"), "{text}");
    assert!(text.contains("\"alice\""), "{text}");
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "--http2",
            "--max-time",
            "10",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .arg("--cacert")
        .arg(s.pki.path("ca.pem"))
        .arg(format!("https://localhost:{}/app/h2", s.gw.port))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "401");
    // Two Authorization fields on one HTTP/2 request: refused, not one of them picked.
    let auth = format!("Authorization: Bearer {}", alice.access_token);
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "--http2",
            "--max-time",
            "10",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code}",
        ])
        .arg("--cacert")
        .arg(s.pki.path("ca.pem"))
        .args(["-H", &auth, "-H", &auth])
        .arg(format!("https://localhost:{}/app/h2", s.gw.port))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2 401");
}

#[test]
fn policy_explain_with_claims_agrees_with_the_gateway() {
    let s = setup("30s");
    for (user, path) in [
        ("alice", "/app/x"),
        ("alice", "/admin/x"),
        ("bob", "/admin/x"),
        ("carol", "/app/x"),
    ] {
        let token = s.provider.login(user).access_token;
        let claims = s.pki.dir.path().join(format!("{user}-claims.json"));
        std::fs::write(
            &claims,
            crate::oidc_provider::jwt_payload(&token).to_string(),
        )
        .unwrap();
        let out = std::process::Command::new(bin())
            .args(["policy", "explain", "--json", "--config"])
            .arg(&s.gw.config)
            .args(["--host", "localhost", "--path", path, "--claims"])
            .arg(&claims)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let explained: Value = serde_json::from_slice(&out.stdout).unwrap();
        let status = s.get(path, Some(&token)).status;
        let expected = explained["status"].as_u64().unwrap_or(200);
        assert_eq!(u64::from(status), expected, "{user} {path}: {explained}");
    }
    // No `sub`: a clear error.
    let claims = s.pki.dir.path().join("nosub.json");
    std::fs::write(&claims, r#"{"iss": "x"}"#).unwrap();
    let out = std::process::Command::new(bin())
        .args(["policy", "explain", "--config"])
        .arg(&s.gw.config)
        .args(["--path", "/app/x", "--claims"])
        .arg(&claims)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no `sub` claim"));
}

/// The assertion's key generated in a SoftHSM2 token (no key file): the upstream verifies it
/// with the JWKS as before.
#[test]
fn the_assertion_key_can_live_in_a_token() {
    let pki = Pki::new();
    let d = pki.dir.path();
    let Some(softhsm_conf) = crate::ca::softhsm_token(d, "assertion") else {
        return;
    };
    let provider = OidcProvider::start(&pki, d, ProviderOptions::default());
    let echo = Echo::start(d, "hsm");
    let yaml = CONFIG
        .replace("{echo}", &echo.port.to_string())
        .replace("{issuer}", provider.issuer())
        .replace("{audience}", DEFAULT_RESOURCE)
        .replace("{idp_ca}", provider.ca().to_str().unwrap())
        .replace("{refetch}", "30s")
        .replace(
            "  signing_key: {assertion_key}\n",
            "  signing_pkcs11: { token_label: assertion, key_label: upstream-assertions, pin_file: hsm.pin }\n",
        );
    let env = [("SOFTHSM2_CONF", softhsm_conf.as_path())];
    let gw = Gateway::start_env(d, &yaml, &[], &env);
    let alice = provider.login("alice");
    let auth = format!("Bearer {}", alice.access_token);
    let resp = Client::new(&pki.path("ca.pem"), None)
        .connect(gw.port)
        .unwrap()
        .request("GET", "/app/hsm", &[("Authorization", &auth)])
        .unwrap();
    assert_eq!(resp.status, 200);
    let claims = verified_assertion(&gw, &echoed(&resp, "x-portcullis-assertion").unwrap());
    assert_eq!(claims["sub"], "alice");
    assert!(!d.join("assertion.key").exists());
}

/// A token that expires while its connection stays open is refused on that connection from
/// then on (the cache keeps a verdict no longer than the token lives), over HTTP/1.1
/// keep-alive; and a refused token stays refused however often it is sent again.
#[test]
fn a_token_that_expires_on_an_open_connection_stops_working_there() {
    // No clock skew, so the expiry is exact.
    let s = setup("30s\n        clock_skew: 0s");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let short = s
        .provider
        .sign(Value::Null, s.claims(json!({"exp": now + 2})));
    let auth = format!("Bearer {short}");
    let mut conn = s.person.connect(s.gw.port).unwrap();
    let first = conn
        .request("GET", "/app/a", &[("Authorization", &auth)])
        .unwrap();
    assert_eq!(first.status, 200);
    // The same token again is served from the cache while it lives.
    let again = conn
        .request("GET", "/app/b", &[("Authorization", &auth)])
        .unwrap();
    assert_eq!(again.status, 200);
    std::thread::sleep(Duration::from_millis(3_200));
    for path in ["/app/c", "/app/d", "/app/e"] {
        let late = conn
            .request("GET", path, &[("Authorization", &auth)])
            .unwrap();
        assert_eq!(late.status, 401, "{path}");
        assert!(
            challenge(&late).contains("the token has expired"),
            "{}",
            challenge(&late)
        );
    }
    let metrics = s.gw.metrics();
    let expired =
        r#"portcullis_oidc_tokens_total{provider="-",result="token_expired",tenant="acme"}"#;
    assert_eq!(metric_value(&metrics, expired), 3.0, "{metrics}");
}
