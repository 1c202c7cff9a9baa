//! The `tracing` section: defaults, every value checked with its line, trust rules.

use super::*;

const MIN: &str =
    "listeners:\n  - name: l\n    address: 0.0.0.0:443\n    tls: {certificate: c, private_key: k, client_ca: ca}\n";

#[test]
fn tracing_is_off_unless_configured_and_defaults_are_safe() {
    assert!(parse(MIN).unwrap().tracing.is_none());
    let c = parse(&format!(
        "{MIN}tracing:\n  otlp:\n    endpoint: http://127.0.0.1:4318/v1/traces\n"
    ))
    .unwrap();
    let t = c.tracing.unwrap();
    assert_eq!(t.protocol, OtlpProtocol::Http);
    assert_eq!(t.timeout, Duration::from_secs(10));
    assert_eq!(t.ratio, 1.0);
    assert!(t.parent_based);
    assert_eq!(t.service_name, "portcullis");
    assert!(
        t.trust.is_empty(),
        "nobody's traceparent is continued by default"
    );
    assert_eq!(t.max_queued_spans, 4096);
}

#[test]
fn a_full_tracing_section_parses() {
    let c = parse(&format!(
        "{MIN}tracing:\n  service_name: edge-eu\n  otlp: {{endpoint: 'http://[::1]:4317', protocol: grpc, timeout: 2s}}\n  sampling: {{ratio: 0.25, parent_based: false}}\n  trust_traceparent:\n    from: [10.0.0.0/8, 127.0.0.1]\n    spiffe_ids: ['spiffe://example.org/ns/*/sa/frontend']\n  max_queued_spans: 100\n"
    ))
    .unwrap();
    let t = c.tracing.unwrap();
    assert_eq!(t.protocol, OtlpProtocol::Grpc);
    assert_eq!(t.timeout, Duration::from_secs(2));
    assert_eq!((t.ratio, t.parent_based), (0.25, false));
    assert_eq!(t.service_name, "edge-eu");
    assert_eq!(t.max_queued_spans, 100);
    let frontend: SpiffeId = "spiffe://example.org/ns/a/sa/frontend".parse().unwrap();
    let other: SpiffeId = "spiffe://example.org/ns/a/sa/other".parse().unwrap();
    assert!(t.trust.trusts(Some("10.1.2.3".parse().unwrap()), None));
    assert!(t
        .trust
        .trusts(Some("127.0.0.1".parse().unwrap()), Some(&other)));
    assert!(t
        .trust
        .trusts(Some("192.0.2.1".parse().unwrap()), Some(&frontend)));
    assert!(!t
        .trust
        .trusts(Some("192.0.2.1".parse().unwrap()), Some(&other)));
    assert!(!t.trust.trusts(None, None));
}

#[test]
fn tracing_problems_have_lines() {
    let with = |body: &str| format!("{MIN}tracing:\n{body}");
    assert_problem(
        &with("  otlp: {endpoint: 'ftp://collector:4318/v1/traces'}\n"),
        "6:",
        "not an http(s)://host:port",
    );
    assert_problem(
        &with("  otlp: {endpoint: 'http://collector/v1/traces'}\n"),
        "6:",
        "not an http(s)://host:port",
    );
    assert_problem(
        &with("  otlp:\n    endpoint: http://collector:4318\n    tls: {ca: ca.pem}\n"),
        "8:",
        "otlp.tls needs an https:// endpoint",
    );
    assert_problem(
        &with(
            "  otlp:\n    endpoint: https://collector:4318\n    tls: {client_certificate: c.pem}\n",
        ),
        "8:",
        "client_certificate and client_key go together",
    );
    assert_problem(
        &with(
            "  otlp:\n    endpoint: https://collector:4318\n    tls: {ca: ca.pem, verify: false}\n",
        ),
        "8:",
        "unknown field `verify`",
    );
    assert_problem(
        &with("  otlp:\n    endpoint: http://127.0.0.1:4318\n    protocol: thrift\n"),
        "8:",
        "is not `http` or `grpc`",
    );
    assert_problem(
        &with("  otlp: {endpoint: 'http://127.0.0.1:4318', timeout: 0s}\n"),
        "6:",
        "otlp.timeout must be between",
    );
    assert_problem(
        &with("  otlp: {endpoint: 'http://127.0.0.1:4318'}\n  sampling: {ratio: 1.5}\n"),
        "7:",
        "sampling.ratio must be between 0.0 and 1.0",
    );
    assert_problem(
        &with("  otlp: {endpoint: 'http://127.0.0.1:4318'}\n  trust_traceparent:\n    from: [10.0.0.0/8, nowhere]\n"),
        "8:",
        "`nowhere` is not a CIDR",
    );
    assert_problem(
        &with("  otlp: {endpoint: 'http://127.0.0.1:4318'}\n  trust_traceparent:\n    spiffe_ids: ['http://x']\n"),
        "8:",
        "trust_traceparent.spiffe_ids",
    );
    assert_problem(
        &with("  otlp: {endpoint: 'http://127.0.0.1:4318'}\n  max_queued_spans: 0\n"),
        "7:",
        "max_queued_spans must be between",
    );
    assert_problem(
        &with("  otlp: {endpoint: 'http://127.0.0.1:4318'}\n  sampler: always\n"),
        "7:",
        "unknown field `sampler`",
    );
}

#[test]
fn an_https_collector_is_verified_with_the_public_roots_or_the_configured_ca() {
    let t = parse(&format!(
        "{MIN}tracing:\n  otlp: {{endpoint: 'https://collector.example:4318/v1/traces'}}\n"
    ))
    .unwrap()
    .tracing
    .unwrap();
    assert_eq!(
        t.tls,
        Some(OtlpTls::default()),
        "webpki roots, no client certificate"
    );
    let t = parse(&format!(
        "{MIN}tracing:\n  otlp:\n    endpoint: https://collector:4317\n    protocol: grpc\n    tls: {{ca: otlp-ca.pem, client_certificate: gw.pem, client_key: gw.key}}\n"
    ))
    .unwrap()
    .tracing
    .unwrap();
    let tls = t.tls.unwrap();
    assert!(tls.ca.unwrap().ends_with("otlp-ca.pem"));
    let (cert, key) = tls.client.unwrap();
    assert!(cert.ends_with("gw.pem") && key.ends_with("gw.key"));
    let plain = parse(&format!(
        "{MIN}tracing:\n  otlp: {{endpoint: 'http://127.0.0.1:4318'}}\n"
    ))
    .unwrap();
    assert_eq!(plain.tracing.unwrap().tls, None);
}
