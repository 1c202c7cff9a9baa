//! The browser login through the gateway, driven as a browser would (a cookie jar, redirects
//! followed, the provider's login form posted) against the real provider: the session works on
//! a second replica sharing the key ring, a tampered cookie does not, an MFA route asks a
//! password-only person to step up, the ID token is refreshed when it expires, logout ends it.

use std::time::Duration;

use crate::harness::*;
use crate::oidc_provider::{OidcProvider, ProviderOptions, CLIENT_ID, CLIENT_SECRET};

const CONFIG: &str = r#"
listeners:
  - name: public
    address: 127.0.0.1:{port}
    tls: { certificate: server.pem, private_key: server.key, client_auth: optional, client_ca: ca.pem }
metrics:
  address: 127.0.0.1:{metrics}
shutdown:
  grace_period: 1s
sessions:
  key_ring: session-keys
  absolute_lifetime: 1h
  idle_lifetime: 10m
upstreams:
  - name: echo
    targets: [127.0.0.1:{echo}]
tenants:
  - name: acme
    identity_providers:
      - name: corp
        issuer: {issuer}
        audiences: [https://api.portcullis.test]
        ca: ca.pem
        client_id: {client_id}
        client_secret_file: client-secret
        redirect_uri: https://localhost:{port}/.portcullis/oidc/callback
        scopes: [openid, email, groups, profile, offline_access]
    routes:
      - name: app
        path_prefix: /app
        upstream: echo
        authentication: oidc
        login: corp
        access:
          - id: engineers
            groups: [eng]
      - name: admin
        path_prefix: /admin
        upstream: echo
        authentication: oidc
        login: corp
        mfa: { amr: [mfa] }
        access:
          - id: admins
            groups: [admins]
"#;

struct Setup {
    pki: Pki,
    provider: OidcProvider,
    _echo: Echo,
    gw: Gateway,
    yaml: String,
}

fn setup(id_token_ttl: Duration) -> Setup {
    let pki = Pki::new();
    let port = free_port();
    let callback = format!("https://localhost:{port}/.portcullis/oidc/callback");
    let provider = OidcProvider::start(
        &pki,
        pki.dir.path(),
        ProviderOptions {
            redirect_uris: vec![callback.clone()],
            id_token_ttl,
            ..ProviderOptions::default()
        },
    );
    std::fs::write(
        pki.dir.path().join("session-keys"),
        "k1 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n",
    )
    .unwrap();
    std::fs::write(
        pki.dir.path().join("client-secret"),
        format!("{CLIENT_SECRET}\n"),
    )
    .unwrap();
    for secret in ["session-keys", "client-secret"] {
        use std::os::unix::fs::PermissionsExt;
        let path = pki.dir.path().join(secret);
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let echo = Echo::start(pki.dir.path(), "e1");
    let yaml = CONFIG
        .replace("{echo}", &echo.port.to_string())
        .replace("{issuer}", provider.issuer())
        .replace("{client_id}", CLIENT_ID);
    let gw = Gateway::start_at(pki.dir.path(), &yaml, port);
    Setup {
        pki,
        provider,
        _echo: echo,
        gw,
        yaml,
    }
}

/// A scripted browser: one cookie jar, redirects followed by hand, the provider's login form
/// posted with `user` when it appears.
struct Browser {
    client: reqwest::blocking::Client,
    jar: std::sync::Arc<reqwest::cookie::Jar>,
}

/// What a browser ended on after following redirects.
struct Page {
    status: u16,
    url: String,
    body: String,
    /// Every Location followed on the way.
    hops: Vec<String>,
}

impl Browser {
    fn new(pki: &Pki) -> Self {
        let jar = std::sync::Arc::new(reqwest::cookie::Jar::default());
        let ca =
            reqwest::Certificate::from_pem(&std::fs::read(pki.path("ca.pem")).unwrap()).unwrap();
        let client = reqwest::blocking::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
            .resolve("localhost", ([127, 0, 0, 1], 0).into())
            .redirect(reqwest::redirect::Policy::none())
            .cookie_provider(jar.clone())
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        Self { client, jar }
    }

    /// The value of cookie `name` the browser holds for `url`.
    fn cookie(&self, url: &str, name: &str) -> Option<String> {
        use reqwest::cookie::CookieStore as _;
        let header = self.jar.cookies(&url.parse().unwrap())?;
        header
            .to_str()
            .ok()?
            .split("; ")
            .find_map(|c| c.strip_prefix(&format!("{name}=")).map(str::to_owned))
    }

    /// Opens `url` as a navigation and follows where it leads, logging in as `user` if the
    /// provider asks.
    fn open(&self, url: &str, user: &str) -> Page {
        let mut url = url.to_owned();
        let mut hops = Vec::new();
        let mut response = self.get(&url);
        for _ in 0..20 {
            let status = response.status();
            if status.is_redirection() {
                let location = response.headers()["location"].to_str().unwrap().to_owned();
                url = response.url().join(&location).unwrap().to_string();
                hops.push(url.clone());
                response = self.get(&url);
                continue;
            }
            let page_url = response.url().to_string();
            let body = response.text().unwrap();
            if status.is_success() && body.contains("name=\"username\"") {
                let action = body
                    .split("action=\"")
                    .nth(1)
                    .and_then(|s| s.split('"').next())
                    .unwrap()
                    .to_owned();
                let target = reqwest::Url::parse(&page_url)
                    .unwrap()
                    .join(&action)
                    .unwrap();
                response = self
                    .client
                    .post(target)
                    .form(&[("username", user)])
                    .send()
                    .unwrap();
                continue;
            }
            if status.is_success() && body.contains("document.forms[0].submit()") {
                let action = body
                    .split("action=\"")
                    .nth(1)
                    .and_then(|s| s.split('"').next())
                    .unwrap()
                    .to_owned();
                let fields: Vec<(String, String)> = body
                    .split("<input")
                    .skip(1)
                    .filter_map(|tag| {
                        let attr = |n: &str| {
                            tag.split(&format!("{n}=\""))
                                .nth(1)?
                                .split('"')
                                .next()
                                .map(str::to_owned)
                        };
                        Some((attr("name")?, attr("value").unwrap_or_default()))
                    })
                    .collect();
                let target = reqwest::Url::parse(&page_url)
                    .unwrap()
                    .join(&action)
                    .unwrap();
                response = self.client.post(target).form(&fields).send().unwrap();
                continue;
            }
            return Page {
                status: status.as_u16(),
                url: page_url,
                body,
                hops,
            };
        }
        panic!("too many redirects: {hops:?}");
    }

    fn get(&self, url: &str) -> reqwest::blocking::Response {
        self.client
            .get(url)
            .header("accept", "text/html,application/xhtml+xml")
            .send()
            .unwrap()
    }
}

fn upstream_saw(page: &Page, header: &str) -> Option<String> {
    let doc: serde_json::Value = serde_json::from_str(&page.body).ok()?;
    doc["headers"][header][0].as_str().map(str::to_owned)
}

#[test]
fn a_browser_logs_in_and_its_session_holds_on_another_replica_until_logout() {
    let s = setup(Duration::from_secs(3600));
    let app = format!("https://localhost:{}/app/page?x=1", s.gw.port);
    let browser = Browser::new(&s.pki);

    // The first navigation goes to the provider, with PKCE, state and nonce.
    let first = browser.get(&app);
    assert_eq!(first.status(), 302);
    let location = first.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        location.starts_with(&format!("{}/auth?", s.provider.issuer())),
        "{location}"
    );
    for part in [
        "code_challenge_method=S256",
        "state=",
        "nonce=",
        "response_type=code",
    ] {
        assert!(location.contains(part), "{part} in {location}");
    }
    let login_cookie = first.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        login_cookie.starts_with("__Host-portcullis-login="),
        "{login_cookie}"
    );
    for attribute in ["Secure", "HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(
            login_cookie.contains(attribute),
            "{attribute}: {login_cookie}"
        );
    }

    // Then all the way through the provider's login, back to the page asked for.
    let page = browser.open(&app, "alice");
    assert_eq!(
        page.status,
        200,
        "{} {:?}\n{}",
        page.url,
        page.hops,
        s.gw.proc.log_text()
    );
    assert_eq!(page.url, app);
    assert_eq!(
        upstream_saw(&page, "x-portcullis-user-subject").as_deref(),
        Some("alice")
    );
    assert_eq!(
        upstream_saw(&page, "x-portcullis-user-groups").as_deref(),
        Some("eng")
    );
    // (The provider's own cookies are the browser's for `localhost` too, and pass.)
    let cookies = upstream_saw(&page, "cookie").unwrap_or_default();
    assert!(
        !cookies.contains("__Host-portcullis"),
        "the session cookie stays at the gateway: {cookies}"
    );
    let session = browser
        .cookie(&app, "__Host-portcullis-session")
        .expect("a session cookie");

    // A script without a token gets 401, not a redirect.
    let api = Client::new(&s.pki.path("ca.pem"), None);
    let resp = api.get(s.gw.port, "/app/page").unwrap();
    assert_eq!(resp.status, 401);

    // A second replica with the same key ring reads the session: no shared store.
    let replica_yaml = s
        .yaml
        .replace("{port}/.portcullis", &format!("{}/.portcullis", s.gw.port));
    let replica = Gateway::start(s.pki.dir.path(), &replica_yaml);
    let on_replica = format!("https://localhost:{}/app/other", replica.port);
    let page = browser.open(&on_replica, "nobody");
    assert_eq!(page.status, 200, "{:?}", page.hops);
    assert!(
        page.hops.is_empty(),
        "no login on the replica: {:?}",
        page.hops
    );
    assert_eq!(
        upstream_saw(&page, "x-portcullis-user-subject").as_deref(),
        Some("alice")
    );

    // A tampered session cookie is no session.
    let mut bytes = session.into_bytes();
    let last = bytes.len() - 2;
    bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(bytes).unwrap();
    let mut conn = api.connect(s.gw.port).unwrap();
    let cookie = format!("__Host-portcullis-session={tampered}");
    let resp = conn
        .request("GET", "/app/page", &[("Cookie", &cookie)])
        .unwrap();
    assert_eq!(resp.status, 401);

    // The MFA route: alice logged in with a password only, so she is asked to step up.
    let admin = format!("https://localhost:{}/admin/x", s.gw.port);
    let step_up = browser.get(&admin);
    assert_eq!(step_up.status(), 302);
    let location = step_up.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.contains("prompt=login"), "{location}");
    // Bob, who logs in with MFA, is let in.
    let bob = Browser::new(&s.pki);
    let page = bob.open(&admin, "bob");
    assert_eq!(page.status, 200, "{:?}", page.hops);
    assert_eq!(
        upstream_saw(&page, "x-portcullis-user-amr").as_deref(),
        Some("pwd,mfa")
    );

    // Logout ends the session here and at the provider.
    let out = browser.get(&format!(
        "https://localhost:{}/.portcullis/oidc/logout",
        s.gw.port
    ));
    assert_eq!(out.status(), 302);
    let location = out.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.contains("client_id="), "{location}");
    let cleared = out.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cleared.starts_with("__Host-portcullis-session=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    assert_eq!(
        browser.get(&app).status(),
        302,
        "logged out: sent to log in again"
    );

    let metrics = s.gw.metrics();
    assert_eq!(
        metric_value(
            &metrics,
            "portcullis_oidc_tokens_total{provider=\"corp\",result=\"login\",tenant=\"acme\"}"
        ),
        2.0,
        "{metrics}"
    );
    let log = s.gw.proc.log_text();
    assert!(!log.contains(&tampered[..40]), "a cookie was logged");
}

#[test]
fn a_callback_that_was_not_started_here_is_refused() {
    let s = setup(Duration::from_secs(3600));
    let browser = Browser::new(&s.pki);
    let callback = format!(
        "https://localhost:{}/.portcullis/oidc/callback?code=abc&state=xyz",
        s.gw.port
    );
    // No login cookie: a forged or replayed callback.
    let resp = browser.get(&callback);
    assert_eq!(resp.status(), 400);
    assert_eq!(
        resp.json::<serde_json::Value>().unwrap()["error"],
        "login_failed"
    );
    // A real login in progress, then a callback with another state.
    let first = browser.get(&format!("https://localhost:{}/app/x", s.gw.port));
    assert_eq!(first.status(), 302);
    let resp = browser.get(&callback);
    assert_eq!(resp.status(), 400);
    let body: serde_json::Value = resp.json().unwrap();
    assert_eq!(body["message"], "the login's state does not match");
}

#[test]
fn an_expired_id_token_is_refreshed_with_the_sealed_refresh_token() {
    let s = setup(Duration::from_secs(2));
    let browser = Browser::new(&s.pki);
    let app = format!("https://localhost:{}/app/page", s.gw.port);
    let page = browser.open(&app, "alice");
    assert_eq!(page.status, 200, "{:?}", page.hops);
    let before = browser.cookie(&app, "__Host-portcullis-session").unwrap();
    std::thread::sleep(Duration::from_millis(3_200));
    let page = browser.open(&app, "nobody");
    assert_eq!(
        page.status,
        200,
        "{:?}\n{}",
        page.hops,
        s.gw.proc.log_text()
    );
    assert!(
        page.hops.is_empty(),
        "refreshed, not logged in again: {:?}",
        page.hops
    );
    let after = browser.cookie(&app, "__Host-portcullis-session").unwrap();
    assert_ne!(before, after, "the refreshed session was sent back");
    assert_eq!(
        metric_value(
            &s.gw.metrics(),
            "portcullis_oidc_tokens_total{provider=\"corp\",result=\"session_refreshed\",tenant=\"acme\"}"
        ),
        1.0
    );
}

#[test]
fn check_refuses_login_secrets_others_can_read() {
    use std::os::unix::fs::PermissionsExt;
    let s = setup(Duration::from_secs(3600));
    let check = |expect: Option<&str>| {
        let out = std::process::Command::new(bin())
            .args(["check", "--config"])
            .arg(&s.gw.config)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        match expect {
            None => assert!(out.status.success(), "{stderr}"),
            Some(needle) => {
                assert!(!out.status.success());
                assert!(stderr.contains(needle), "{stderr}");
                assert!(
                    !stderr.contains(CLIENT_SECRET),
                    "the secret was shown: {stderr}"
                );
            }
        }
    };
    check(None);
    for (file, needle) in [
        ("session-keys", "sessions.key_ring"),
        ("client-secret", "identity provider corp: client secret"),
    ] {
        let path = s.pki.dir.path().join(file);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        check(Some(needle));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    std::fs::write(s.pki.dir.path().join("session-keys"), "k1 short\n").unwrap();
    check(Some("not base64"));
}

/// Headless Chromium (Debian's, driven by playwright-core) logs in through the gateway; the
/// landing page is kept as a screenshot in `target/test-artifacts/oidc-login.png`.
#[test]
fn a_real_browser_logs_in_and_lands_on_the_page_it_asked_for() {
    let s = setup(Duration::from_secs(3600));
    let app = format!("https://localhost:{}/app/welcome", s.gw.port);
    let artifacts = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let screenshot = artifacts.join("oidc-login.png");
    let _ = std::fs::remove_file(&screenshot);
    let certs = format!(
        "{},{}",
        s.pki.path("server.pem").display(),
        s.pki
            .path(&format!("oidc-{}.pem", s.provider.port()))
            .display()
    );
    let out = std::process::Command::new("node")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/oidc/browser-login.mjs"
        ))
        .args([&app, "alice", &certs])
        .arg(&screenshot)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        s.gw.proc.log_text()
    );
    let result: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(result["url"], app.as_str(), "{result}");
    let body = result["body"].as_str().unwrap();
    assert!(body.contains("\"x-portcullis-user-subject\""), "{body}");
    assert!(body.contains("alice"), "{body}");
    let cookies = result["cookies"].to_string();
    assert!(cookies.contains("__Host-portcullis-session"), "{cookies}");
    assert!(std::fs::metadata(&screenshot).unwrap().len() > 1_000);
}
