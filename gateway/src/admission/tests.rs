use std::path::Path;

use portcullis_audit::Decision;
use portcullis_policy::{Config, Identity, SpiffeId};

use super::*;

const CONFIG: &str = r#"
listeners:
  - name: l
    address: 127.0.0.1:8443
    tls: { certificate: s.pem, private_key: s.key, client_ca: ca.pem }
upstreams:
  - name: u
    targets: [127.0.0.1:9000]
tenants:
  - name: acme
    limits:
      per_identity: { requests: 2, per: 1m }
      max_in_flight: 1
      max_request_body: 100
    dlp: { request: { us_ssn: block } }
    routes:
      - name: api
        path_prefix: /api
        upstream: u
        access:
          - id: no-admin
            effect: deny
            path_prefix: [/api/admin]
          - id: frontend
            spiffe_id: [spiffe://acme.example/ns/web/sa/frontend]
  - name: open
    routes:
      - name: public
        path_prefix: /public
        upstream: u
        access: [ { id: anyone } ]
"#;

fn admission() -> Admission {
    let config = Config::from_yaml(CONFIG, Path::new("t.yaml")).unwrap();
    Admission::from_config(&config)
}

fn frontend() -> Identity {
    let id: SpiffeId = "spiffe://acme.example/ns/web/sa/frontend".parse().unwrap();
    Identity::from_x509(Some(id), Vec::new(), None)
}

fn decide(
    admission: &Admission,
    identity: Option<&Identity>,
    path: &str,
    headers: &[(&str, &str)],
) -> Verdict {
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect();
    admission.decide(&RequestHead {
        identity,
        method: "POST",
        authority: None,
        host: Some("Gateway.Example:8443"),
        host_required: true,
        size: HeadSize::default(),
        both_lengths: false,
        path,
        source: IpAddr::from([10, 0, 0, 1]),
        headers: &headers,
        bearer: &Bearer::Absent,
        now: 0,
    })
}

#[test]
fn an_admitted_request_carries_its_route_permit_slot_and_body_plan() {
    let admission = admission();
    let caller = frontend();
    let verdict = decide(
        &admission,
        Some(&caller),
        "/api/./orders//1",
        &[
            ("content-length", "12"),
            ("content-type", "application/json"),
        ],
    );
    let target = verdict.target.unwrap();
    assert_eq!(target.path.as_str(), "/api/orders/1");
    assert_eq!(target.host.as_deref(), Some("gateway.example"));
    let admitted = verdict.outcome.unwrap();
    assert_eq!(admitted.route.id.as_str(), "acme/api");
    assert_eq!(admitted.permit.rule.as_str(), "frontend");
    assert!(admitted.rate_limited);
    assert!(admitted.holds_in_flight_slot());
    assert_eq!(admitted.max_request_body, Some(100));
    assert_eq!(
        admitted.request_body,
        BodyPlan::Scan(BodyFormat {
            codings: Codings::default(),
            content: Content::Text
        })
    );
}

#[test]
fn each_refusal_names_its_status_code_and_label() {
    let admission = admission();
    let caller = frontend();
    let refusal = |identity, path, headers: &[(&str, &str)]| {
        decide(&admission, identity, path, headers)
            .outcome
            .unwrap_err()
    };

    let bad = refusal(Some(&caller), "/api/a%2Fb", &[]);
    assert_eq!(
        (bad.status(), bad.code(), bad.label()),
        (400, "bad_request", "invalid")
    );
    assert_eq!(bad.decision(), Decision::Error);

    let none = refusal(Some(&caller), "/nowhere", &[]);
    assert_eq!(
        (none.status(), none.code(), none.label()),
        (404, "no_route", "no_route")
    );

    let default_deny = refusal(None, "/api/orders", &[]);
    assert_eq!((default_deny.status(), default_deny.label()), (403, "deny"));
    assert_eq!(default_deny.rule(), Some("default-deny"));

    let explicit = refusal(Some(&caller), "/api/admin/users", &[]);
    assert_eq!(explicit.rule(), Some("no-admin"));
    assert_eq!(explicit.decision(), Decision::Deny);

    let large = refusal(Some(&caller), "/api/x", &[("content-length", "101")]);
    assert_eq!((large.status(), large.label()), (413, "too_large"));
}

#[test]
fn limits_are_charged_only_for_allowed_requests_and_refuse_with_retry_headers() {
    let admission = admission();
    let caller = frontend();
    // Denied requests do not spend the caller's per-identity budget.
    for _ in 0..5 {
        assert!(decide(&admission, Some(&caller), "/api/admin", &[])
            .outcome
            .is_err());
    }
    let first = decide(&admission, Some(&caller), "/api/a", &[])
        .outcome
        .unwrap();
    // The in-flight slot is held by `first`: the next one is refused for it.
    let busy = decide(&admission, Some(&caller), "/api/b", &[])
        .outcome
        .unwrap_err();
    assert!(matches!(&busy, Refusal::RateLimited(l) if l.limit == "in_flight"));
    drop(first);
    // Two per minute per identity: the third is over.
    let over = decide(&admission, Some(&caller), "/api/c", &[])
        .outcome
        .unwrap_err();
    assert_eq!(
        (over.status(), over.code(), over.label()),
        (429, "rate_limited", "rate_limited")
    );
    let headers = over.headers();
    assert!(headers.iter().any(|(n, _)| *n == "retry-after"));
    assert!(headers
        .iter()
        .any(|(n, v)| *n == "ratelimit-policy" && v == "\"identity\";q=2;w=60"));
}

#[test]
fn body_plans_follow_content_type_and_encoding_whatever_the_framing() {
    let caller = frontend();
    // A fresh admission each time, so the tenant's limits do not interfere.
    let plan =
        |headers: &[(&str, &str)]| decide(&admission(), Some(&caller), "/api/x", headers).outcome;
    let scan = |codings: &str, content: Content| {
        BodyPlan::Scan(BodyFormat {
            codings: Codings::parse(Some(codings)).unwrap(),
            content,
        })
    };
    // No length, no transfer coding (an HTTP/2 body): scanned all the same.
    assert_eq!(plan(&[]).unwrap().request_body, scan("", Content::Text));
    assert_eq!(
        plan(&[("content-type", "image/png")]).unwrap().request_body,
        scan("", Content::Bytes)
    );
    assert_eq!(
        plan(&[("content-encoding", "gzip, br")])
            .unwrap()
            .request_body,
        scan("gzip, br", Content::Text)
    );
    assert_eq!(
        plan(&[("content-type", "multipart/form-data; boundary=x")])
            .unwrap()
            .request_body,
        scan(
            "",
            Content::Multipart {
                boundary: "x".into()
            }
        )
    );
    let refused = |headers: &[(&str, &str)]| {
        let r = plan(headers).unwrap_err();
        (r.status(), r.code(), r.label())
    };
    assert_eq!(
        refused(&[("content-encoding", "compress")]),
        (415, "uninspectable_body", "dlp_refused")
    );
    assert_eq!(
        refused(&[("content-encoding", "gzip"), ("content-encoding", "br")]),
        (400, "ambiguous_body_header", "dlp_refused")
    );
    // gRPC messages compressed one by one are not decoded: refused like any other encoding.
    let grpc = ("content-type", "application/grpc");
    assert_eq!(
        refused(&[grpc, ("grpc-encoding", "gzip")]),
        (415, "uninspectable_body", "dlp_refused")
    );
    assert_eq!(
        refused(&[
            grpc,
            ("grpc-encoding", "identity"),
            ("grpc-encoding", "gzip")
        ]),
        (400, "ambiguous_body_header", "dlp_refused")
    );
    assert_eq!(
        plan(&[grpc, ("grpc-encoding", "identity")])
            .unwrap()
            .request_body,
        scan("", Content::Grpc)
    );
    assert_eq!(
        refused(&[
            ("content-type", "text/plain"),
            ("content-type", "image/png")
        ]),
        (400, "ambiguous_body_header", "dlp_refused")
    );
    assert_eq!(
        refused(&[("upgrade", "websocket"), ("connection", "upgrade")]),
        (403, "upgrade_refused", "dlp_refused")
    );
}

#[test]
fn the_tenant_decides_what_passes_unscanned_and_what_is_refused() {
    let yaml = CONFIG.replace(
        "    dlp: { request: { us_ssn: block } }\n",
        "    dlp: { request: { us_ssn: block } }\n    body_inspection: { unknown_encoding: pass, other_content: refuse }\n",
    );
    let yaml = yaml.replace(
        "        path_prefix: /api\n",
        "        path_prefix: /api\n        websocket: allow\n",
    );
    let config = Config::from_yaml(&yaml, Path::new("t.yaml")).unwrap();
    let caller = frontend();
    let plan = |headers: &[(&str, &str)]| {
        decide(
            &Admission::from_config(&config),
            Some(&caller),
            "/api/x",
            headers,
        )
        .outcome
    };
    assert_eq!(
        plan(&[("content-encoding", "compress")])
            .unwrap()
            .request_body,
        BodyPlan::Unscanned(Unscanned::UnknownEncoding)
    );
    assert_eq!(
        plan(&[("upgrade", "websocket")]).unwrap().request_body,
        BodyPlan::Unscanned(Unscanned::Websocket)
    );
    // Allowed, but not with a body of its own.
    let refusal = plan(&[("upgrade", "websocket"), ("content-length", "9")]).unwrap_err();
    assert_eq!(refusal.code(), "upgrade_refused");
    let refusal = plan(&[("content-type", "application/octet-stream")]).unwrap_err();
    assert_eq!(
        (refusal.status(), refusal.code()),
        (415, "unsupported_content_type")
    );
}

/// The hand-written JSON escaping agrees with serde_json on every kind of character a
/// message could hold.
#[test]
fn refusal_json_escaping_matches_serde_json() {
    let tricky =
        "plain \"quoted\" back\\slash new\nline \r\t tab \u{1} \u{1f} \u{7f} é ✓ 🦀 </script>";
    for text in ["", "nothing to escape", tricky] {
        let mut ours = String::new();
        super::refusal::push_json_escaped(&mut ours, text);
        let parsed: String = serde_json::from_str(&format!("\"{ours}\"")).unwrap();
        assert_eq!(parsed, text);
    }
    // Every refusal's body parses, whatever its message (a path error quotes the path).
    let bad = Refusal::BadRequest("a \"quoted\" reason\n");
    let body: serde_json::Value = serde_json::from_str(&bad.body("id")).unwrap();
    assert_eq!(body["message"], "a \"quoted\" reason\n");
}

#[test]
fn refusal_bodies_are_json_with_the_request_id_and_never_details() {
    let body: serde_json::Value =
        serde_json::from_str(&Refusal::UpstreamFailed.body("abc123")).unwrap();
    assert_eq!(body["error"], "bad_gateway");
    assert_eq!(body["message"], "upstream failed");
    assert_eq!(body["request_id"], "abc123");
    // Failures after an allow stay allowed in the audit log; the status tells the rest.
    assert_eq!(Refusal::NoHealthyUpstream.decision(), Decision::Allow);
    assert_eq!(Refusal::NoHealthyUpstream.status(), 503);
    assert_eq!(Refusal::AuditUnavailable.status(), 503);
    assert_eq!(Refusal::AuditUnavailable.decision(), Decision::Deny);
}

#[test]
fn one_name_for_the_caller_everywhere() {
    let spiffe = frontend();
    assert_eq!(
        caller_name(Some(&spiffe), None),
        Some("spiffe://acme.example/ns/web/sa/frontend")
    );
    let subject_only = Identity::from_x509(None, vec!["a.svc".into()], Some("CN=batch".into()));
    assert_eq!(caller_name(Some(&subject_only), None), Some("CN=batch"));
    assert_eq!(caller_name(None, None), None);
    assert_eq!(caller_key(None, None), "anonymous");
}

fn head<'a>(headers: &'a Vec<(String, String)>, method: &'a str) -> RequestHead<'a> {
    RequestHead {
        identity: None,
        method,
        authority: None,
        host: Some("gw.example"),
        host_required: true,
        size: HeadSize::default(),
        both_lengths: false,
        path: "/public/x",
        source: IpAddr::from([10, 0, 0, 1]),
        headers,
        bearer: &Bearer::Absent,
        now: 0,
    }
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn heads_an_upstream_could_read_differently_are_refused_and_close_the_connection() {
    let admission = admission();
    let refused = |head: RequestHead<'_>| admission.decide(&head).outcome.unwrap_err();

    let smuggle = pairs(&[("content-length", "5"), ("transfer-encoding", "chunked")]);
    let r = refused(head(&smuggle, "POST"));
    assert_eq!((r.status(), r.label()), (400, "invalid"));
    assert!(r.closes_connection());

    let none = pairs(&[]);
    let r = refused(head(&none, "delete"));
    assert_eq!(r.message(), "standard methods must be sent in upper case");
    assert!(
        admission.decide(&head(&none, "PURGE")).outcome.is_ok(),
        "extension methods pass"
    );

    let mut absolute = head(&none, "GET");
    absolute.authority = Some("other.example");
    assert_eq!(refused(absolute).status(), 400);
    absolute.authority = Some("GW.example:443");
    assert!(
        admission.decide(&absolute).outcome.is_ok(),
        "same host, any case or port"
    );

    let mut hostless = head(&none, "GET");
    hostless.host = None;
    assert_eq!(refused(hostless).status(), 400);
    hostless.host_required = false;
    hostless.authority = Some("gw.example");
    assert!(
        admission.decide(&hostless).outcome.is_ok(),
        "HTTP/2 :authority alone"
    );

    let mut large = head(&none, "GET");
    large.size = HeadSize {
        total: 32 * 1024 + 1,
        longest_line: 100,
    };
    let r = refused(large);
    assert_eq!((r.status(), r.code()), (431, "request_header_too_large"));
    large.size = HeadSize {
        total: 9000,
        longest_line: 8 * 1024 + 1,
    };
    assert_eq!(refused(large).status(), 431);
}

mod oidc;
