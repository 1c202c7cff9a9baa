//! Admission on routes that read bearer tokens: what a caller without one, with a refused one,
//! or without the MFA a route asks for gets back, and whose name the records carry.

use portcullis_policy::{ClaimNames, TokenIdentity};

use super::*;

const CONFIG: &str = r#"
listeners:
  - name: l
    address: 127.0.0.1:8443
    tls: { certificate: s.pem, private_key: s.key, client_ca: ca.pem, client_auth: optional }
upstreams:
  - name: u
    targets: [127.0.0.1:9000]
tenants:
  - name: acme
    limits:
      per_identity: { requests: 1, per: 1m }
    identity_providers:
      - name: corp
        issuer: https://idp.example
        audiences: [api]
    routes:
      - name: app
        path_prefix: /app
        upstream: u
        authentication: oidc
        access:
          - id: eng
            groups: [eng]
      - name: admin
        path_prefix: /admin
        upstream: u
        authentication: oidc
        mfa: { amr: [mfa], acr: [urn:mfa], max_age: 10m }
        access: [ { id: anyone } ]
      - name: device
        path_prefix: /device
        upstream: u
        authentication: mtls_and_oidc
        access: [ { id: anyone-with-device } ]
"#;

const NOW: u64 = 1_800_000_000;

fn token(sub: &str, groups: &[&str], amr: &[&str], acr: Option<&str>, auth_age: u64) -> Bearer {
    let claims = serde_json::json!({
        "iss": "https://idp.example",
        "sub": sub,
        "groups": groups,
        "amr": amr,
        "acr": acr,
        "auth_time": NOW - auth_age,
        "exp": NOW + 600,
    });
    let token = TokenIdentity::from_claims(
        claims.as_object().cloned().unwrap_or_default(),
        "corp",
        &ClaimNames::default(),
    )
    .unwrap();
    Bearer::Valid(Arc::new(token))
}

fn decide(identity: Option<&Identity>, path: &str, bearer: &Bearer) -> Verdict {
    let config = Config::from_yaml(CONFIG, Path::new("t.yaml")).unwrap();
    let admission = Admission::from_config(&config);
    decide_with(&admission, identity, path, bearer)
}

fn decide_with(
    admission: &Admission,
    identity: Option<&Identity>,
    path: &str,
    bearer: &Bearer,
) -> Verdict {
    let headers = Vec::new();
    admission.decide(&RequestHead {
        identity,
        bearer,
        now: NOW,
        path,
        ..head(&headers, "GET")
    })
}

fn refusal(verdict: Verdict) -> Refusal {
    match verdict.outcome {
        Err(r) => r,
        Ok(a) => panic!("admitted by {}", a.permit.rule),
    }
}

#[test]
fn no_token_or_a_refused_one_is_401_with_a_challenge() {
    let r = refusal(decide(None, "/app/x", &Bearer::Absent));
    assert_eq!(
        (r.status(), r.code(), r.label()),
        (401, "unauthenticated", "unauthenticated")
    );
    assert_eq!(
        r.headers(),
        [(
            http::header::WWW_AUTHENTICATE,
            "Bearer realm=\"portcullis\"".to_owned()
        )]
    );
    let r = refusal(decide(
        None,
        "/app/x",
        &Bearer::Invalid(TokenError::Expired),
    ));
    assert_eq!(
        (r.status(), r.code(), r.label()),
        (401, "invalid_token", "token_expired")
    );
    assert_eq!(r.decision(), Decision::Deny);
    assert_eq!(
        r.headers()[0].1,
        "Bearer realm=\"portcullis\", error=\"invalid_token\", error_description=\"the token has expired\""
    );
    // The provider has been out of reach since start-up: not the caller's fault.
    let r = refusal(decide(
        None,
        "/app/x",
        &Bearer::Invalid(TokenError::KeysUnavailable),
    ));
    assert_eq!(
        (r.status(), r.code()),
        (503, "identity_provider_unavailable")
    );
    assert!(r.headers().is_empty());
    // A certificate alone does not open a token route.
    let r = refusal(decide(Some(&frontend()), "/app/x", &Bearer::Absent));
    assert_eq!(r.status(), 401);
}

#[test]
fn a_valid_token_is_judged_by_the_rules_and_names_the_caller() {
    let verdict = decide(
        None,
        "/app/x",
        &token("alice", &["eng"], &["pwd"], None, 60),
    );
    let admitted = verdict.outcome.unwrap();
    assert_eq!(admitted.permit.rule.as_str(), "eng");
    let token = admitted.token.as_deref().unwrap();
    assert_eq!(caller_name(None, Some(token)), Some("alice"));
    assert_eq!(
        caller_name(Some(&frontend()), Some(token)),
        Some("alice"),
        "the person, not the device"
    );
    let r = refusal(decide(None, "/app/x", &token_for("bob", &["sales"])));
    assert_eq!((r.status(), r.label()), (403, "deny"));
}

fn token_for(sub: &str, groups: &[&str]) -> Bearer {
    token(sub, groups, &["pwd"], None, 60)
}

#[test]
fn per_identity_limits_count_people_by_subject() {
    let config = Config::from_yaml(CONFIG, Path::new("t.yaml")).unwrap();
    let admission = Admission::from_config(&config);
    let alice = token_for("alice", &["eng"]);
    assert!(decide_with(&admission, None, "/app/x", &alice)
        .outcome
        .is_ok());
    let r = refusal(decide_with(&admission, None, "/app/x", &alice));
    assert_eq!(r.status(), 429);
    // Another person behind the same device certificate has a bucket of their own.
    let carol = token_for("carol", &["eng"]);
    assert!(decide_with(&admission, Some(&frontend()), "/app/x", &carol)
        .outcome
        .is_ok());
}

#[test]
fn mfa_routes_ask_for_a_step_up() {
    // Password only.
    let r = refusal(decide(
        None,
        "/admin/x",
        &token("a", &[], &["pwd"], None, 60),
    ));
    assert_eq!(
        (r.status(), r.code(), r.label()),
        (401, "insufficient_user_authentication", "step_up")
    );
    assert_eq!(
        r.headers()[0].1,
        "Bearer realm=\"portcullis\", error=\"insufficient_user_authentication\", \
         error_description=\"a stronger or more recent authentication is required\", \
         acr_values=\"urn:mfa\", max_age=600"
    );
    // MFA, but too long ago; MFA without the acr; then all of it.
    let r = refusal(decide(
        None,
        "/admin/x",
        &token("a", &[], &["mfa"], Some("urn:mfa"), 601),
    ));
    assert_eq!(r.label(), "step_up");
    let r = refusal(decide(
        None,
        "/admin/x",
        &token("a", &[], &["mfa"], None, 60),
    ));
    assert_eq!(r.label(), "step_up");
    let ok = decide(
        None,
        "/admin/x",
        &token("a", &[], &["pwd", "mfa"], Some("urn:mfa"), 60),
    );
    assert!(ok.outcome.is_ok());
}

#[test]
fn certificate_and_token_routes_need_both() {
    let alice = token_for("alice", &[]);
    let r = refusal(decide(None, "/device/x", &alice));
    assert_eq!((r.status(), r.code()), (403, "certificate_required"));
    let r = refusal(decide(Some(&frontend()), "/device/x", &Bearer::Absent));
    assert_eq!(r.status(), 401);
    assert!(decide(Some(&frontend()), "/device/x", &alice)
        .outcome
        .is_ok());
}
