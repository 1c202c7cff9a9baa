//! A real OpenID provider for the end-to-end tests: node-oidc-provider (tests/oidc/provider.mjs,
//! a certified implementation) started over HTTPS on loopback with a server certificate from the
//! test PKI. Logins are real authorization-code + PKCE flows driven by a scripted browser
//! (redirects followed by hand, cookies kept, the login form posted); the test-only `/_test/`
//! endpoints rotate its signing key and sign arbitrary claims with it.
//!
//! The tests at the bottom prove the harness itself; no gateway is involved.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine as _;
use serde_json::{json, Value};

use crate::harness::{free_port, Pki, Proc};

/// The confidential client for the authorization-code flow.
pub const CLIENT_ID: &str = "portcullis";
pub const CLIENT_SECRET: &str = "portcullis-test-secret";
/// The client for the client-credentials grant (a service calling an API).
pub const SERVICE_CLIENT_ID: &str = "portcullis-service";
pub const SERVICE_CLIENT_SECRET: &str = "portcullis-service-secret";
/// The audience of every access token unless `ProviderOptions::resource` says otherwise.
pub const DEFAULT_RESOURCE: &str = "https://api.portcullis.test";
/// The scopes `login` asks for (`api:read` is the resource's own scope).
pub const LOGIN_SCOPE: &str = "openid email groups profile offline_access api:read";

pub struct ProviderOptions {
    pub redirect_uris: Vec<String>,
    pub access_token_ttl: Duration,
    pub id_token_ttl: Duration,
    pub resource: String,
}

impl Default for ProviderOptions {
    fn default() -> Self {
        Self {
            redirect_uris: vec!["https://localhost/oauth2/callback".to_owned()],
            access_token_ttl: Duration::from_secs(300),
            id_token_ttl: Duration::from_secs(3600),
            resource: DEFAULT_RESOURCE.to_owned(),
        }
    }
}

/// The tokens from the token endpoint after a login.
#[derive(Debug, Clone)]
pub struct Tokens {
    pub access_token: String,
    pub id_token: String,
    pub refresh_token: Option<String>,
}

/// A scripted browser's cookie jar, for logins that should see an earlier login's session.
pub struct Browser {
    client: reqwest::blocking::Client,
}

/// A running provider; stopped (SIGTERM, then killed) by `stop` or when dropped.
pub struct OidcProvider {
    proc: Option<Proc>,
    log: PathBuf,
    exit: Option<std::process::ExitStatus>,
    port: u16,
    issuer: String,
    ca: PathBuf,
    redirect_uri: String,
    resource: String,
}

fn oidc_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc")
}

/// `npm ci` in tests/oidc when node_modules is missing or older than package-lock.json: once
/// per test process, and under a file lock so that concurrent test processes install once.
fn npm_ci() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let lock = std::env::temp_dir().join("portcullis-oidc-npm-ci.lock");
        let script = "[ node_modules/.package-lock.json -nt package-lock.json ] \
                      || npm ci --no-audit --no-fund --loglevel=error";
        let out = Command::new("flock")
            .arg(&lock)
            .args(["sh", "-c", script])
            .current_dir(oidc_dir())
            .stdin(Stdio::null())
            .output()
            .expect("flock/sh (to run npm ci in tests/oidc)");
        assert!(
            out.status.success(),
            "npm ci in tests/oidc failed (deploy/setup-debian.sh --test installs node and npm):\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// A scripted browser (or back-channel client): trusts only the provider's CA, resolves
/// `localhost` to 127.0.0.1 (where the provider listens), follows no redirect by itself.
fn http_client(ca: &Path, port: u16, cookies: bool) -> reqwest::blocking::Client {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap();
    reqwest::blocking::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .resolve("localhost", ([127, 0, 0, 1], port).into())
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(cookies)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn random_b64(bytes: usize) -> String {
    use ring::rand::SecureRandom as _;
    let mut buf = vec![0; bytes];
    ring::rand::SystemRandom::new().fill(&mut buf).unwrap();
    B64URL.encode(buf)
}

/// The decoded payload (middle part) of a compact JWS; no verification.
pub fn jwt_payload(token: &str) -> Value {
    jwt_part(token, 1)
}

/// The decoded protected header of a compact JWS.
pub fn jwt_header(token: &str) -> Value {
    jwt_part(token, 0)
}

fn jwt_part(token: &str, n: usize) -> Value {
    let part = token
        .split('.')
        .nth(n)
        .unwrap_or_else(|| panic!("not a JWT: {token}"));
    serde_json::from_slice(&B64URL.decode(part).unwrap()).unwrap()
}

/// The first form of an HTML page: its action and its hidden fields (the provider's pages are
/// simple and regular: `action="..."`, `<input type="hidden" name="..." value="..."/>`).
fn html_form(body: &str) -> Option<(String, Vec<(String, String)>)> {
    let attr = |tag: &str, name: &str| {
        tag.split(&format!("{name}=\""))
            .nth(1)
            .and_then(|s| s.split('"').next())
            .map(|v| v.replace("&amp;", "&"))
    };
    let form = body.split("<form").nth(1)?;
    let action = attr(form.split('>').next()?, "action")?;
    let fields = form
        .split("<input")
        .skip(1)
        .filter_map(|tag| {
            let tag = tag.split('>').next()?;
            if attr(tag, "type")? != "hidden" {
                return None;
            }
            Some((attr(tag, "name")?, attr(tag, "value").unwrap_or_default()))
        })
        .collect();
    Some((action, fields))
}

impl OidcProvider {
    /// Starts the provider (issuer `https://localhost:<port>`, a fresh server certificate from
    /// `pki`, its config and log in `dir`) and waits until discovery answers.
    pub fn start(pki: &Pki, dir: &Path, options: ProviderOptions) -> Self {
        npm_ci();
        let port = free_port();
        let issuer = format!("https://localhost:{port}");
        let name = format!("oidc-{port}");
        pki.server(&name);
        let config = dir.join(format!("{name}.json"));
        let conf = json!({
            "port": port,
            "host": "127.0.0.1",
            "issuer": issuer,
            "resource": options.resource,
            "access_token_ttl": options.access_token_ttl.as_secs().max(1),
            "id_token_ttl": options.id_token_ttl.as_secs().max(1),
            "code_client": {
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "redirect_uris": options.redirect_uris,
            },
            "service_client": {
                "client_id": SERVICE_CLIENT_ID,
                "client_secret": SERVICE_CLIENT_SECRET,
            },
        });
        std::fs::write(&config, serde_json::to_vec_pretty(&conf).unwrap()).unwrap();
        let log = dir.join(format!("{name}.log"));
        let child = Command::new("node")
            .arg(oidc_dir().join("provider.mjs"))
            .arg(pki.path(&format!("{name}.pem")))
            .arg(pki.path(&format!("{name}.key")))
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("node (deploy/setup-debian.sh --test installs it)");
        let mut provider = Self {
            proc: Some(Proc {
                child,
                log: log.clone(),
            }),
            log,
            exit: None,
            port,
            issuer,
            ca: pki.path("ca.pem"),
            redirect_uri: options.redirect_uris.first().cloned().unwrap_or_default(),
            resource: options.resource,
        };
        let http = provider.http();
        let start = Instant::now();
        loop {
            if let Ok(r) = http.get(provider.discovery_url()).send() {
                if r.status().is_success() {
                    break;
                }
            }
            let proc = provider.proc.as_mut().unwrap();
            if let Ok(Some(status)) = proc.child.try_wait() {
                panic!("oidc provider exited ({status}):\n{}", proc.log_text());
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "oidc provider never answered discovery:\n{}",
                proc.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        provider
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The CA that verifies the provider's certificate (the test PKI's).
    pub fn ca(&self) -> PathBuf {
        self.ca.clone()
    }

    pub fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.issuer)
    }

    pub fn jwks_url(&self) -> String {
        format!("{}/jwks", self.issuer)
    }

    pub fn client_id(&self) -> &'static str {
        CLIENT_ID
    }

    pub fn client_secret(&self) -> &'static str {
        CLIENT_SECRET
    }

    /// The access tokens' audience.
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// The provider's stderr so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How the process ended, once `stop` has run (None if it had to be killed).
    pub fn exit_status(&self) -> Option<std::process::ExitStatus> {
        self.exit
    }

    /// A client for the provider's own endpoints (no cookies).
    fn http(&self) -> reqwest::blocking::Client {
        http_client(&self.ca, self.port, false)
    }

    fn url(&self, path_or_url: &str) -> String {
        if path_or_url.starts_with('/') {
            format!("{}{path_or_url}", self.issuer)
        } else {
            path_or_url.to_owned()
        }
    }

    /// The discovery document.
    pub fn discovery(&self) -> Value {
        self.http()
            .get(self.discovery_url())
            .send()
            .unwrap()
            .error_for_status()
            .unwrap()
            .json()
            .unwrap()
    }

    /// A full authorization-code + PKCE login of `user` (alice, bob, carol) in a fresh browser,
    /// with a random nonce; see `login_with`.
    pub fn login(&self, user: &str) -> Tokens {
        self.login_with(user, &random_b64(16), &[])
    }

    /// A login of `user` in a fresh browser with `nonce` and extra authorization parameters;
    /// see `login_in`.
    pub fn login_with(&self, user: &str, nonce: &str, extra: &[(&str, &str)]) -> Tokens {
        self.login_in(&self.browser(), user, nonce, extra).0
    }

    /// A browser with an empty cookie jar (one user agent: its provider session outlives a
    /// login).
    pub fn browser(&self) -> Browser {
        Browser {
            client: http_client(&self.ca, self.port, true),
        }
    }

    /// A login in `browser` with `nonce` and extra authorization parameters (`prompt`,
    /// `max_age`, `acr_values`, ...; one given here replaces the default of the same name):
    /// GET /auth, follow the redirects; post `user` to the login form if the provider shows it
    /// (it does not when the browser's session satisfies the request); follow the redirects
    /// (consent is automatic) until the one to the client's redirect_uri, which is caught;
    /// check `state` and `iss`, then exchange the code at the token endpoint with the PKCE
    /// verifier. Returns the tokens and whether the login form was shown.
    pub fn login_in(
        &self,
        browser: &Browser,
        user: &str,
        nonce: &str,
        extra: &[(&str, &str)],
    ) -> (Tokens, bool) {
        let browser = &browser.client;
        let verifier = random_b64(32);
        let challenge = B64URL.encode(ring::digest::digest(
            &ring::digest::SHA256,
            verifier.as_bytes(),
        ));
        let state = random_b64(12);
        let mut query = vec![
            ("response_type", "code"),
            ("client_id", CLIENT_ID),
            ("redirect_uri", self.redirect_uri.as_str()),
            ("scope", LOGIN_SCOPE),
            ("state", state.as_str()),
            ("nonce", nonce),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ];
        query.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
        query.extend_from_slice(extra);
        let mut response = browser
            .get(format!("{}/auth", self.issuer))
            .query(&query)
            .send()
            .unwrap();
        let mut posted = false;
        let callback = loop {
            let status = response.status();
            if status.is_redirection() {
                let location = response.headers()["location"].to_str().unwrap().to_owned();
                if location.starts_with(&self.redirect_uri) {
                    break reqwest::Url::parse(&location).unwrap();
                }
                response = browser.get(self.url(&location)).send().unwrap();
                continue;
            }
            let url = response.url().clone();
            let body = response.text().unwrap();
            let form = status.is_success().then(|| html_form(&body)).flatten();
            response = match form {
                // The provider's auto-submitting forms (a browser's script posts them), e.g.
                // ending the previous user's session when another one signs in.
                Some((action, fields)) if body.contains("document.forms[0].submit()") => browser
                    .post(self.url(&action))
                    .form(&fields)
                    .send()
                    .unwrap(),
                Some((action, _)) if body.contains("name=\"username\"") && !posted => {
                    posted = true;
                    browser
                        .post(self.url(&action))
                        .form(&[("username", user)])
                        .send()
                        .unwrap()
                }
                _ => panic!(
                    "login of {user}: unexpected {status} at {url}:\n{body}\n{}",
                    self.log_text()
                ),
            };
        };
        let param = |name: &str| {
            callback
                .query_pairs()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
        };
        assert_eq!(
            param("error"),
            None,
            "login of {user} ended in an error: {callback}"
        );
        assert_eq!(param("state").as_deref(), Some(state.as_str()));
        assert_eq!(param("iss").as_deref(), Some(self.issuer.as_str()));
        let code = param("code").expect("code in the callback");
        let body = self.token_request(
            (self.client_id(), self.client_secret()),
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", &self.redirect_uri),
                ("code_verifier", &verifier),
            ],
        );
        let tokens = Tokens {
            access_token: body["access_token"].as_str().unwrap().to_owned(),
            id_token: body["id_token"].as_str().unwrap().to_owned(),
            refresh_token: body["refresh_token"].as_str().map(str::to_owned),
        };
        (tokens, posted)
    }

    /// New tokens for a refresh token (the ID token too).
    pub fn refresh(&self, refresh_token: &str) -> Tokens {
        let body = self.token_request(
            (self.client_id(), self.client_secret()),
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
            ],
        );
        Tokens {
            access_token: body["access_token"].as_str().unwrap().to_owned(),
            id_token: body["id_token"].as_str().unwrap_or_default().to_owned(),
            refresh_token: body["refresh_token"].as_str().map(str::to_owned),
        }
    }

    /// A service's access token (client_credentials grant, scope `api:read`).
    pub fn client_credentials(&self) -> String {
        let body = self.token_request(
            (SERVICE_CLIENT_ID, SERVICE_CLIENT_SECRET),
            &[("grant_type", "client_credentials"), ("scope", "api:read")],
        );
        body["access_token"].as_str().unwrap().to_owned()
    }

    fn token_request(&self, (id, secret): (&str, &str), form: &[(&str, &str)]) -> Value {
        let response = self
            .http()
            .post(format!("{}/token", self.issuer))
            .basic_auth(id, Some(secret))
            .form(form)
            .send()
            .unwrap();
        let status = response.status();
        let body: Value = response.json().unwrap();
        assert!(
            status.is_success(),
            "token endpoint: {status} {body}\n{}",
            self.log_text()
        );
        body
    }

    /// A compact JWS of exactly `claims`, signed with the provider's current key; `header`
    /// (an object, or null) overrides the default `{"alg": "RS256", "kid": <current>, "typ":
    /// "JWT"}` field by field.
    pub fn sign(&self, header: Value, claims: Value) -> String {
        let response = self
            .http()
            .post(format!("{}/_test/sign", self.issuer))
            .json(&json!({ "header": header, "claims": claims }))
            .send()
            .unwrap();
        let status = response.status();
        let body: Value = response.json().unwrap();
        assert!(status.is_success(), "/_test/sign: {status} {body}");
        body["token"].as_str().unwrap().to_owned()
    }

    /// A new signing key (new kid), used from now on; the previous keys stay in the JWKS
    /// unless `drop_old`. Returns the new kid.
    pub fn rotate(&self, drop_old: bool) -> String {
        let response = self
            .http()
            .post(format!(
                "{}/_test/rotate{}",
                self.issuer,
                if drop_old { "?drop_old=1" } else { "" }
            ))
            .send()
            .unwrap()
            .error_for_status()
            .unwrap();
        let body: Value = response.json().unwrap();
        body["kid"].as_str().unwrap().to_owned()
    }

    /// The public JWKS (what jwks_uri serves).
    pub fn keys(&self) -> Value {
        self.http()
            .get(format!("{}/_test/keys", self.issuer))
            .send()
            .unwrap()
            .error_for_status()
            .unwrap()
            .json()
            .unwrap()
    }

    /// SIGTERM, then waits for the exit (killed after 5 s).
    pub fn stop(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.signal("TERM");
            self.exit = proc.wait_exit(Duration::from_secs(5));
        }
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        self.stop();
    }
}

fn kids(jwks: &Value) -> Vec<String> {
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

fn start() -> (Pki, OidcProvider) {
    let pki = Pki::new();
    let provider = OidcProvider::start(&pki, pki.dir.path(), ProviderOptions::default());
    (pki, provider)
}

#[test]
fn discovery_over_the_test_ca() {
    let (_pki, provider) = start();
    let doc = provider.discovery();
    assert_eq!(doc["issuer"], provider.issuer());
    assert_eq!(doc["jwks_uri"], provider.jwks_url());
    assert_eq!(doc["code_challenge_methods_supported"], json!(["S256"]));
    let jwks: Value = http_client(&provider.ca(), provider.port(), false)
        .get(provider.jwks_url())
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(kids(&jwks), kids(&provider.keys()));
    // Only the test CA is trusted: a client without it refuses the provider.
    let other = Pki::new();
    let stranger = http_client(&other.path("ca.pem"), provider.port(), false);
    assert!(stranger.get(provider.discovery_url()).send().is_err());
}

#[test]
fn login_alice_password_only() {
    let (_pki, provider) = start();
    let tokens = provider.login_with("alice", "nonce-alice-1", &[]);
    let header = jwt_header(&tokens.access_token);
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(header["alg"], "RS256");
    let at = jwt_payload(&tokens.access_token);
    assert_eq!(at["aud"], DEFAULT_RESOURCE);
    assert_eq!(at["iss"], provider.issuer());
    assert_eq!(at["sub"], "alice");
    assert_eq!(at["client_id"], CLIENT_ID);
    assert_eq!(at["amr"], json!(["pwd"]));
    assert_eq!(at["groups"], json!(["eng"]));
    assert_eq!(at["email"], "alice@example.com");
    assert!(at["scope"].as_str().unwrap().contains("api:read"));
    let exp = at["exp"].as_u64().unwrap();
    assert_eq!(exp - at["iat"].as_u64().unwrap(), 300);
    assert!(at["auth_time"].as_u64().is_some());
    let id = jwt_payload(&tokens.id_token);
    assert_eq!(id["nonce"], "nonce-alice-1");
    assert_eq!(id["aud"], CLIENT_ID);
    assert_eq!(id["sub"], "alice");
    assert_eq!(id["amr"], json!(["pwd"]));
    assert_eq!(id["email"], "alice@example.com");
    assert_eq!(id["auth_time"], at["auth_time"]);
    // The refresh token works and keeps the login's facts.
    let refreshed = provider.refresh(tokens.refresh_token.as_deref().unwrap());
    let at2 = jwt_payload(&refreshed.access_token);
    assert_eq!(at2["sub"], "alice");
    assert_eq!(at2["amr"], json!(["pwd"]));
}

#[test]
fn login_bob_with_mfa() {
    let pki = Pki::new();
    let provider = OidcProvider::start(
        &pki,
        pki.dir.path(),
        ProviderOptions {
            redirect_uris: vec!["https://localhost:9/cb".to_owned()],
            access_token_ttl: Duration::from_secs(60),
            resource: "https://other.portcullis.test".to_owned(),
            ..ProviderOptions::default()
        },
    );
    let tokens = provider.login("bob");
    let at = jwt_payload(&tokens.access_token);
    assert_eq!(at["aud"], provider.resource());
    assert_eq!(provider.resource(), "https://other.portcullis.test");
    assert_eq!(at["amr"], json!(["pwd", "mfa"]));
    assert_eq!(at["acr"], "urn:portcullis:mfa");
    assert_eq!(at["groups"], json!(["eng", "admins"]));
    assert_eq!(
        at["exp"].as_u64().unwrap() - at["iat"].as_u64().unwrap(),
        60
    );
    let id = jwt_payload(&tokens.id_token);
    assert_eq!(id["acr"], "urn:portcullis:mfa");
    assert_eq!(id["amr"], json!(["pwd", "mfa"]));
    assert_eq!(id["groups"], json!(["eng", "admins"]));
}

#[test]
fn client_credentials() {
    let (_pki, provider) = start();
    let token = provider.client_credentials();
    let at = jwt_payload(&token);
    assert_eq!(at["aud"], DEFAULT_RESOURCE);
    assert_eq!(at["client_id"], SERVICE_CLIENT_ID);
    assert_eq!(at["sub"], SERVICE_CLIENT_ID);
    assert_eq!(at["scope"], "api:read");
    assert!(at.get("email").is_none());
}

#[test]
fn rotate_and_sign() {
    let (_pki, provider) = start();
    let first = kids(&provider.keys());
    assert_eq!(first.len(), 1);
    let signed = provider.sign(json!({}), json!({"sub": "x", "exp": 1}));
    assert_eq!(jwt_header(&signed)["kid"], first[0].as_str());
    assert_eq!(jwt_payload(&signed), json!({"sub": "x", "exp": 1}));

    let before = provider.login("alice");
    let second = provider.rotate(false);
    let now = kids(&provider.keys());
    assert_eq!(now, vec![second.clone(), first[0].clone()]);
    let signed = provider.sign(Value::Null, json!({"aud": "nobody"}));
    assert_eq!(jwt_header(&signed)["kid"], second.as_str());
    // The provider's own tokens use the new key too.
    let token = provider.client_credentials();
    assert_eq!(jwt_header(&token)["kid"], second.as_str());
    // Sessions, grants and refresh tokens outlive a rotation.
    let refreshed = provider.refresh(before.refresh_token.as_deref().unwrap());
    assert_eq!(jwt_header(&refreshed.access_token)["kid"], second.as_str());
    assert_eq!(jwt_payload(&refreshed.access_token)["sub"], "alice");

    let third = provider.rotate(true);
    assert_eq!(kids(&provider.keys()), vec![third.clone()]);
    let signed = provider.sign(json!({"typ": "at+jwt"}), json!({}));
    assert_eq!(jwt_header(&signed)["kid"], third.as_str());
    assert_eq!(jwt_header(&signed)["typ"], "at+jwt");
}

#[test]
fn stop_closes_the_port() {
    let (_pki, mut provider) = start();
    let port = provider.port();
    provider.stop();
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    assert!(provider.exit_status().unwrap().success());
    assert!(provider.log_text().contains("SIGTERM"));
}

#[test]
fn session_prompt_login_and_max_age() {
    let (_pki, provider) = start();
    let browser = provider.browser();
    let (first, shown) = provider.login_in(&browser, "alice", "n1", &[]);
    assert!(shown);
    let auth_time = jwt_payload(&first.id_token)["auth_time"].clone();
    // The session answers the next request: no form, the same authentication.
    let (again, shown) = provider.login_in(&browser, "alice", "n2", &[]);
    assert!(!shown);
    let id = jwt_payload(&again.id_token);
    assert_eq!(
        (id["nonce"].as_str(), &id["auth_time"]),
        (Some("n2"), &auth_time)
    );
    // prompt=login asks again; another user may sign in.
    let (bob, shown) = provider.login_in(&browser, "bob", "n3", &[("prompt", "login")]);
    assert!(shown);
    assert_eq!(jwt_payload(&bob.access_token)["sub"], "bob");
    // max_age=0 once a second has passed since the login: asked again.
    std::thread::sleep(Duration::from_millis(1100));
    let (_, shown) = provider.login_in(&browser, "bob", "n4", &[("max_age", "0")]);
    assert!(shown);
    let (_, shown) = provider.login_in(&browser, "bob", "n5", &[("max_age", "3600")]);
    assert!(!shown);
}
