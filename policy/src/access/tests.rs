//! Tests for access decisions.

use super::*;
use crate::identity::SpiffeId;
use crate::path::normalize_path;

fn rule(id: &str) -> AccessRule {
    AccessRule {
        id: id.parse().unwrap(),
        effect: Effect::Allow,
        spiffe_id: None,
        dns_san: None,
        subject: None,
        methods: None,
        path_prefix: None,
        path: None,
        source: None,
        headers: Vec::new(),
        token_subject: None,
        email: None,
        email_domain: None,
        groups: None,
        claims: Vec::new(),
    }
}

fn spiffe_identity(id: &str) -> Identity {
    Identity::from_x509(Some(SpiffeId::try_from(id).unwrap()), vec![], None)
}

struct Req {
    identity: Option<Identity>,
    method: &'static str,
    path: NormalizedPath,
    source: IpAddr,
}

impl Req {
    fn new(identity: Option<Identity>, method: &'static str, path: &str, source: &str) -> Req {
        Req {
            identity,
            method,
            path: normalize_path(path).unwrap(),
            source: source.parse().unwrap(),
        }
    }

    fn facts(&self) -> RequestFacts<'_> {
        RequestFacts {
            identity: self.identity.as_ref(),
            token: None,
            method: self.method,
            path: &self.path,
            source: self.source,
            headers: &NoHeaders,
        }
    }
}

#[test]
fn no_rules_is_default_deny() {
    let req = Req::new(None, "GET", "/", "127.0.0.1");
    let denied = decide(&[], &req.facts()).unwrap_err();
    assert_eq!(denied.rule, None);
    assert_eq!(denied.reason, DenyReason::NoMatchingRule);
    assert_eq!(denied.rule_label(), "default-deny");
}

#[test]
fn first_matching_rule_permits() {
    let mut get_only = rule("get-only");
    get_only.methods = Some(vec!["GET".into()]);
    let mut read = rule("read");
    read.methods = Some(vec!["GET".into(), "HEAD".into()]);
    let anything = rule("anything");
    let rules = [get_only, read, anything];

    let get = Req::new(None, "GET", "/x", "10.0.0.1");
    assert_eq!(
        decide(&rules, &get.facts()).unwrap().rule.as_str(),
        "get-only"
    );
    let head = Req::new(None, "HEAD", "/x", "10.0.0.1");
    assert_eq!(decide(&rules, &head.facts()).unwrap().rule.as_str(), "read");
    let post = Req::new(None, "POST", "/x", "10.0.0.1");
    assert_eq!(
        decide(&rules, &post.facts()).unwrap().rule.as_str(),
        "anything"
    );
    // Methods match without regard to case (the gateway refuses `get` before policy; a rule
    // must not be skipped by a spelling some frameworks upper-case).
    let lower = Req::new(None, "get", "/x", "10.0.0.1");
    assert_eq!(
        decide(&rules, &lower.facts()).unwrap().rule.as_str(),
        "get-only"
    );
}

#[test]
fn all_conditions_must_match() {
    let mut r = rule("frontend-read");
    r.spiffe_id = Some(vec!["spiffe://example.org/ns/*/sa/frontend"
        .parse()
        .unwrap()]);
    r.methods = Some(vec!["GET".into()]);
    r.path_prefix = Some(vec!["/api/read".into()]);
    r.source = Some(vec!["127.0.0.0/8".parse().unwrap()]);
    let rules = [r];
    let who = Some(spiffe_identity("spiffe://example.org/ns/prod/sa/frontend"));

    let ok = Req::new(who.clone(), "GET", "/api/read/1", "127.0.0.1");
    assert!(decide(&rules, &ok.facts()).is_ok());
    for bad in [
        Req::new(who.clone(), "POST", "/api/read/1", "127.0.0.1"),
        Req::new(who.clone(), "GET", "/api/readx", "127.0.0.1"),
        Req::new(who.clone(), "GET", "/api/read/1", "10.0.0.1"),
        Req::new(
            Some(spiffe_identity("spiffe://example.org/ns/prod/sa/backend")),
            "GET",
            "/api/read/1",
            "127.0.0.1",
        ),
        Req::new(None, "GET", "/api/read/1", "127.0.0.1"),
        Req::new(Some(Identity::default()), "GET", "/api/read/1", "127.0.0.1"),
    ] {
        let denied = decide(&rules, &bad.facts()).unwrap_err();
        assert_eq!(denied.rule_label(), "default-deny");
    }
}

#[test]
fn anonymous_callers_only_match_rules_without_identity_conditions() {
    let mut by_dns = rule("by-dns");
    by_dns.dns_san = Some(vec!["*.example.org".parse().unwrap()]);
    let mut by_subject = rule("by-subject");
    by_subject.subject = Some(vec!["CN=frontend,O=Acme".into()]);
    let mut public = rule("public");
    public.path_prefix = Some(vec!["/public".into()]);
    let rules = [by_dns, by_subject, public];

    let anon = Req::new(None, "GET", "/public/x", "192.0.2.1");
    assert_eq!(
        decide(&rules, &anon.facts()).unwrap().rule.as_str(),
        "public"
    );
    let anon_private = Req::new(None, "GET", "/private", "192.0.2.1");
    assert!(decide(&rules, &anon_private.facts()).is_err());

    let dns = Identity::from_x509(None, vec!["web.example.org".into()], None);
    let req = Req::new(Some(dns), "GET", "/private", "192.0.2.1");
    assert_eq!(
        decide(&rules, &req.facts()).unwrap().rule.as_str(),
        "by-dns"
    );

    let subject = Identity::from_x509(None, vec![], Some("CN=frontend,O=Acme".into()));
    let req = Req::new(Some(subject), "GET", "/private", "192.0.2.1");
    assert_eq!(
        decide(&rules, &req.facts()).unwrap().rule.as_str(),
        "by-subject"
    );
}

#[test]
fn ipv4_mapped_sources_match_ipv4_cidrs() {
    let mut r = rule("local");
    r.source = Some(vec!["10.1.0.0/16".parse().unwrap()]);
    let rules = [r];
    let mapped = Req::new(None, "GET", "/", "::ffff:10.1.2.3");
    assert!(decide(&rules, &mapped.facts()).is_ok());
    let v4 = Req::new(None, "GET", "/", "10.1.2.3");
    assert!(decide(&rules, &v4.facts()).is_ok());
    let other = Req::new(None, "GET", "/", "::ffff:10.2.2.3");
    assert!(decide(&rules, &other.facts()).is_err());
    let v6 = Req::new(None, "GET", "/", "2001:db8::1");
    assert!(decide(&rules, &v6.facts()).is_err());

    let mut r6 = rule("v6");
    r6.source = Some(vec!["2001:db8::/32".parse().unwrap()]);
    assert!(decide(&[r6], &v6.facts()).is_ok());
}

#[test]
fn deny_rules_win_over_allow_rules_written_before_them() {
    let allow_all = rule("allow-all");
    let mut deny_delete = rule("no-delete");
    deny_delete.effect = Effect::Deny;
    deny_delete.methods = Some(vec!["DELETE".into()]);
    let mut rules = vec![allow_all, deny_delete];
    deny_rules_first(&mut rules);
    let get = Req::new(None, "GET", "/x", "10.0.0.1");
    assert_eq!(
        decide(&rules, &get.facts()).unwrap().rule.as_str(),
        "allow-all"
    );
    let delete = Req::new(None, "DELETE", "/x", "10.0.0.1");
    let denied = decide(&rules, &delete.facts()).unwrap_err();
    assert_eq!(denied.rule_label(), "no-delete");
    assert_eq!(denied.reason, DenyReason::ExplicitDeny);
}

#[test]
fn exact_paths_and_header_conditions() {
    let mut r = rule("exact");
    r.path = Some(vec!["/health".into()]);
    r.headers = vec![
        HeaderCondition {
            name: "x-env".into(),
            values: Some(vec!["prod".into(), "stage".into()]),
        },
        HeaderCondition {
            name: "x-trace".into(),
            values: None,
        },
    ];
    let rules = [r];
    let req = Req::new(None, "GET", "/health", "10.0.0.1");
    let headers = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    };
    let both = headers(&[("x-env", "stage"), ("x-trace", "abc")]);
    let facts = RequestFacts {
        headers: &both,
        ..req.facts()
    };
    assert!(decide(&rules, &facts).is_ok());
    let wrong_env = headers(&[("x-env", "dev"), ("x-trace", "abc")]);
    let facts = RequestFacts {
        headers: &wrong_env,
        ..req.facts()
    };
    assert!(decide(&rules, &facts).is_err());
    let no_trace = headers(&[("x-env", "prod")]);
    let facts = RequestFacts {
        headers: &no_trace,
        ..req.facts()
    };
    assert!(decide(&rules, &facts).is_err());
    let sub = Req::new(None, "GET", "/health/deep", "10.0.0.1");
    let facts = RequestFacts {
        headers: &both,
        ..sub.facts()
    };
    assert!(decide(&rules, &facts).is_err(), "exact, not a prefix");
}

/// Headers whose values can be unreadable (obs-text), as the gateway sees them.
#[derive(Debug)]
struct RawHeaders(Vec<(&'static str, Option<&'static str>)>);

impl HeaderSource for RawHeaders {
    fn header(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| *v)
    }

    fn header_values(&self, name: &str) -> Vec<Option<&str>> {
        self.0
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| *v)
            .collect()
    }
}

#[test]
fn duplicate_or_unreadable_header_values_never_help_a_caller() {
    let mut deny = rule("no-debug");
    deny.effect = Effect::Deny;
    deny.headers = vec![HeaderCondition {
        name: "x-debug".into(),
        values: Some(vec!["1".into()]),
    }];
    let mut allow = rule("prod-only");
    allow.headers = vec![HeaderCondition {
        name: "x-env".into(),
        values: Some(vec!["prod".into()]),
    }];
    let rules = [deny, allow];
    let req = Req::new(None, "GET", "/x", "10.0.0.1");
    let decide_with = |headers: Vec<(&'static str, Option<&'static str>)>| {
        let headers = RawHeaders(headers);
        decide(
            &rules,
            &RequestFacts {
                headers: &headers,
                ..req.facts()
            },
        )
        .map(|p| p.rule.to_string())
        .map_err(|d| d.rule_label().to_owned())
    };
    assert_eq!(
        decide_with(vec![("x-env", Some("prod"))]),
        Ok("prod-only".into())
    );
    // A deny condition matches on any of the values, not only the first.
    assert_eq!(
        decide_with(vec![
            ("x-env", Some("prod")),
            ("x-debug", Some("0")),
            ("x-debug", Some("1"))
        ]),
        Err("no-debug".into())
    );
    // An unreadable value of a header a deny rule looks at counts as a match.
    assert_eq!(
        decide_with(vec![("x-env", Some("prod")), ("x-debug", None)]),
        Err("no-debug".into())
    );
    // An allow condition needs every value to match, and all to be readable.
    assert_eq!(
        decide_with(vec![("x-env", Some("prod")), ("x-env", Some("dev"))]),
        Err("default-deny".into())
    );
    assert_eq!(
        decide_with(vec![("x-env", Some("prod")), ("x-env", None)]),
        Err("default-deny".into())
    );
}

#[test]
fn extension_methods_match_without_regard_to_case() {
    let mut r = rule("purge");
    r.methods = Some(vec!["PURGE".into()]);
    let rules = [r];
    for method in ["PURGE", "purge", "Purge"] {
        let req = Req::new(None, method, "/x", "10.0.0.1");
        assert!(decide(&rules, &req.facts()).is_ok(), "{method}");
    }
}
