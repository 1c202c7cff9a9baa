//! Identity providers, route authentication, MFA and token conditions in the config.

use super::*;
use crate::{Authentication, SigningAlgorithm, TokenIdentity};

const OIDC: &str = "\
listeners:
  - name: l
    address: 127.0.0.1:8443
    tls: { certificate: s.pem, private_key: s.key, client_ca: ca.pem, client_auth: optional }
upstreams:
  - name: u
    targets: [127.0.0.1:9000]
tenants:
  - name: acme
    identity_providers:
      - name: corp
        issuer: https://login.acme.example
        audiences: [https://api.acme.example]
        ca: idp-ca.pem
        algorithms: [RS256, ES256]
        clock_skew: 10s
        claims: { groups: roles, tenant: org }
    routes:
      - name: app
        path_prefix: /app
        upstream: u
        authentication: oidc
        mfa: { amr: [mfa, hwk], max_age: 15m }
        access:
          - id: eng
            groups: [eng]
            email_domain: [ACME.example]
          - id: lead
            claims: { org_info.level: ['3', '4'] }
      - name: device
        path_prefix: /device
        upstream: u
        authentication: mtls_and_oidc
        access:
          - id: alice
            token_subject: [alice]
      - name: api
        path_prefix: /api
        upstream: u
        access:
          - id: anyone
";

fn token(claims: serde_json::Value) -> TokenIdentity {
    let names = crate::ClaimNames {
        groups: "roles".into(),
        ..Default::default()
    };
    TokenIdentity::from_claims(claims.as_object().unwrap().clone(), "corp", &names).unwrap()
}

#[test]
fn providers_routes_and_token_rules_parse() {
    let c = parse(OIDC).unwrap();
    let p = &c.tenants[0].identity_providers[0];
    assert_eq!(p.settings.name, "corp");
    assert_eq!(p.settings.tenant, "acme");
    assert_eq!(p.settings.issuer, "https://login.acme.example");
    assert_eq!(p.settings.audiences, ["https://api.acme.example"]);
    assert_eq!(
        p.settings.algorithms,
        [SigningAlgorithm::RS256, SigningAlgorithm::ES256]
    );
    assert_eq!(p.settings.clock_skew, Duration::from_secs(10));
    assert_eq!(p.settings.claims.groups, "roles");
    assert_eq!(p.settings.claims.email, "email");
    assert_eq!(p.settings.claims.tenant.as_deref(), Some("org"));
    assert_eq!(p.ca.as_deref(), Some(Path::new("/srv/gw/idp-ca.pem")));
    assert_eq!(p.keys_refresh, Duration::from_secs(300));
    assert_eq!(p.unknown_key_refetch, Duration::from_secs(30));
    let routes: Vec<_> = c.routes.iter().collect();
    assert_eq!(routes[0].authentication, Authentication::Oidc);
    let mfa = routes[0].mfa.as_ref().unwrap();
    assert_eq!(mfa.amr, ["mfa", "hwk"]);
    assert_eq!(mfa.max_age, Some(Duration::from_secs(900)));
    assert_eq!(routes[1].authentication, Authentication::MtlsAndOidc);
    assert_eq!(
        routes[2].authentication,
        Authentication::Mtls,
        "the default"
    );

    let path = normalize_path("/app/x").unwrap();
    let facts = |t: &TokenIdentity| {
        routes[0]
            .authorize(&RequestFacts {
                identity: None,
                token: Some(t),
                method: "GET",
                path: &path,
                source: "10.0.0.1".parse().unwrap(),
                headers: &NoHeaders,
            })
            .map(|p| p.rule.to_string())
    };
    let eng = token(serde_json::json!({"sub": "a", "roles": ["eng"], "email": "A@Acme.Example"}));
    assert_eq!(facts(&eng).as_deref(), Ok("eng"));
    let other_domain =
        token(serde_json::json!({"sub": "a", "roles": ["eng"], "email": "a@evil.example"}));
    assert!(facts(&other_domain).is_err());
    let lead = token(serde_json::json!({"sub": "b", "org_info": {"level": 4}}));
    assert_eq!(facts(&lead).as_deref(), Ok("lead"));
    let junior = token(serde_json::json!({"sub": "c", "org_info": {"level": 2}}));
    assert!(facts(&junior).is_err());
    // Without a token, token rules never match.
    let anonymous = routes[0].authorize(&RequestFacts {
        identity: None,
        token: None,
        method: "GET",
        path: &path,
        source: "10.0.0.1".parse().unwrap(),
        headers: &NoHeaders,
    });
    assert!(anonymous.is_err());
}

#[test]
fn provider_problems_have_lines() {
    assert_problem(
        &OIDC.replace("https://login.acme.example", "http://login.acme.example"),
        "12:",
        "must be an https URL",
    );
    assert_problem(
        &OIDC.replace("        audiences: [https://api.acme.example]\n", ""),
        "11:",
        "`audiences` must name at least one audience",
    );
    assert_problem(
        &OIDC.replace("[RS256, ES256]", "[RS256, HS256]"),
        "15:",
        "shared-secret algorithm",
    );
    assert_problem(
        &OIDC.replace("[RS256, ES256]", "[none]"),
        "15:",
        "not a signature",
    );
    assert_problem(
        &OIDC.replace("clock_skew: 10s", "clock_skew: 1h"),
        "16:",
        "`clock_skew` must be between",
    );
    assert_problem(
        &OIDC.replace("- name: corp", "- name: Corp!"),
        "11:",
        "the name must be",
    );
    assert_problem(
        &OIDC.replace(
            "        claims: { groups: roles, tenant: org }\n",
            "        client_secret: hunter2\n",
        ),
        "17:",
        "unknown field",
    );
}

#[test]
fn routes_that_cannot_authenticate_are_refused() {
    // A token route in a tenant without providers.
    let no_providers = OIDC.replace("identity_providers:", "x_identity_providers:");
    assert!(error(&no_providers).contains("unknown field"));
    let text = format!(
        "{}  - name: other\n    routes:\n      - name: r\n        upstream: u\n        authentication: oidc\n        access: [ {{ id: a }} ]\n",
        OIDC
    );
    assert_problem(&text, "46:", "needs an identity provider in tenant `other`");
    // Token conditions or MFA on a route that reads no tokens.
    assert_problem(
        &OIDC.replace("        authentication: mtls_and_oidc\n", ""),
        "34:",
        "token conditions can never match",
    );
    assert_problem(
        &OIDC.replace("        authentication: oidc\n", ""),
        "22:",
        "`mfa` needs a route that reads bearer tokens",
    );
    assert_problem(
        &OIDC.replace("{ amr: [mfa, hwk], max_age: 15m }", "{}"),
        "23:",
        "`mfa` asks for nothing",
    );
    assert_problem(
        &OIDC.replace("authentication: oidc", "authentication: saml"),
        "22:",
        "unknown variant",
    );
    assert_problem(
        &OIDC.replace(
            "email_domain: [ACME.example]",
            "email_domain: ['@acme.example']",
        ),
        "27:",
        "is not a domain",
    );
}

/// The configuration example in the README is a config the gateway accepts.
#[test]
fn the_readme_example_parses() {
    let readme = include_str!("../../../../README.md");
    let start = readme
        .find("```yaml\nlisteners:")
        .expect("the README's config example")
        + 8;
    let end = start + readme[start..].find("```").unwrap();
    let config = parse(&readme[start..end]).unwrap_or_else(|e| panic!("{e}"));
    assert!(config.identity_assertion.is_some());
    assert_eq!(config.tenants[0].identity_providers.len(), 1);
}
