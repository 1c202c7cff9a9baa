//! Tests for config parsing and checking: a full valid example, each kind of problem with its
//! line, and a never-panics property.

use super::*;
use crate::{normalize_path, Identity, NoHeaders, RequestFacts, SpiffeId};
use proptest::prelude::*;

const FULL: &str = "\
listeners:
  - name: public
    address: 127.0.0.1:8443
    tls:
      certificate: certs/server.pem
      private_key: /etc/portcullis/server.key
      client_auth: optional
      client_ca: certs/ca.pem
    trusted_proxies: [10.0.0.0/8, 192.168.1.7]
  - name: internal
    address: '[::1]:9443'
    tls:
      certificate: certs/server.pem
      private_key: certs/server.key
      client_auth: off
metrics:
  address: 127.0.0.1:9902
shutdown:
  grace_period: 30s
upstreams:
  - name: echo
    targets: [127.0.0.1:9000, 127.0.0.1:9001]
    connect_timeout: 2s
    read_timeout: 30s
    tls:
      server_name: echo.internal
      ca: certs/upstream-ca.pem
      client_certificate: certs/gw.pem
      client_key: certs/gw.key
    health_check:
      path: /healthz
      interval: 3s
  - name: plain
    targets: [127.0.0.1:9100]
tenants:
  - name: acme
    routes:
      - name: api
        host: API.example.com
        path_prefix: /api/
        upstream: echo
        access:
          - id: frontend-read
            spiffe_id: [spiffe://example.org/ns/*/sa/frontend]
            dns_san: [frontend.example.org]
            methods: [get, POST]
            path_prefix: [/api/read]
            source: [127.0.0.0/8]
          - id: admins
            subject: ['CN=admin,O=Acme']
      - name: www
        host: '*.example.com'
        upstream: plain
  - name: globex
    routes:
      - name: public
        upstream: plain
        access:
          - id: anyone
";

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_yaml(text, Path::new("/srv/gw/config.yaml"))
}

/// The rendered error, which must exist.
fn error(text: &str) -> String {
    match parse(text) {
        Ok(_) => panic!("config unexpectedly accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

fn assert_problem(text: &str, location: &str, needle: &str) {
    let err = error(text);
    let want = format!("/srv/gw/config.yaml:{location}");
    assert!(
        err.lines()
            .any(|l| l.starts_with(&want) && l.contains(needle)),
        "wanted `{want}` with `{needle}` in:\n{err}"
    );
}

#[test]
fn full_example_parses() {
    let c = parse(FULL).unwrap();
    assert_eq!(c.listeners.len(), 2);
    let public = &c.listeners[0];
    assert_eq!(public.name, "public");
    assert_eq!(public.address, "127.0.0.1:8443".parse().unwrap());
    assert_eq!(
        public.tls.certificate,
        Path::new("/srv/gw/certs/server.pem")
    );
    assert_eq!(
        public.tls.private_key,
        Path::new("/etc/portcullis/server.key")
    );
    assert_eq!(public.tls.client_auth, ClientAuth::Optional);
    assert_eq!(
        public.tls.client_ca.as_deref(),
        Some(Path::new("/srv/gw/certs/ca.pem"))
    );
    assert_eq!(
        public.trusted_proxies,
        [
            "10.0.0.0/8".parse::<IpNet>().unwrap(),
            "192.168.1.7/32".parse().unwrap()
        ]
    );
    let internal = &c.listeners[1];
    assert_eq!(internal.address, "[::1]:9443".parse().unwrap());
    assert_eq!(internal.tls.client_auth, ClientAuth::Off);
    assert_eq!(internal.tls.client_ca, None);
    assert!(internal.trusted_proxies.is_empty());

    assert_eq!(c.metrics.address, "127.0.0.1:9902".parse().unwrap());
    assert_eq!(c.shutdown_grace, Duration::from_secs(30));

    let echo = &c.upstreams[0];
    assert_eq!(echo.name.as_str(), "echo");
    assert_eq!(echo.targets.len(), 2);
    assert_eq!(echo.connect_timeout, Duration::from_secs(2));
    assert_eq!(echo.read_timeout, Duration::from_secs(30));
    let tls = echo.tls.as_ref().unwrap();
    assert_eq!(tls.server_name.as_deref(), Some("echo.internal"));
    assert!(tls.spiffe_id.is_empty());
    assert_eq!(
        tls.ca.as_deref(),
        Some(Path::new("/srv/gw/certs/upstream-ca.pem"))
    );
    assert_eq!(
        tls.client_cert,
        Some(("/srv/gw/certs/gw.pem".into(), "/srv/gw/certs/gw.key".into()))
    );
    assert_eq!(
        echo.health_check,
        Some(HealthCheckConfig {
            path: "/healthz".into(),
            interval: Duration::from_secs(3)
        })
    );
    let plain = &c.upstreams[1];
    assert_eq!(plain.connect_timeout, Duration::from_secs(5));
    assert_eq!(plain.read_timeout, Duration::from_secs(60));
    assert_eq!(plain.tls, None);
    assert_eq!(plain.health_check, None);

    assert_eq!(c.routes.len(), 3);
    let ids: Vec<&str> = c.routes.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["acme/api", "acme/www", "globex/public"]);
    let api = c.routes.iter().next().unwrap();
    assert_eq!(api.host.as_deref(), Some("api.example.com"));
    assert_eq!(api.path_prefix, "/api");
    assert_eq!(api.upstream.as_str(), "echo");
    assert_eq!(api.tenant.as_str(), "acme");
    assert_eq!(api.access.len(), 2);
    assert_eq!(
        api.access[0].methods,
        Some(vec!["GET".to_owned(), "POST".to_owned()])
    );

    let path = normalize_path("/api/read/x").unwrap();
    let found = c.routes.route(Some("api.example.com"), &path).unwrap();
    assert_eq!(found.id.as_str(), "acme/api");
    let found = c.routes.route(Some("www.example.com"), &path).unwrap();
    assert_eq!(found.id.as_str(), "acme/www");
    let found = c.routes.route(Some("other.org"), &path).unwrap();
    assert_eq!(found.id.as_str(), "globex/public");
}

#[test]
fn full_example_authorizes() {
    let c = parse(FULL).unwrap();
    let api = c.routes.iter().next().unwrap();
    let path = normalize_path("/api/read/1").unwrap();
    let who = Identity::from_x509(
        Some(SpiffeId::try_from("spiffe://example.org/ns/prod/sa/frontend").unwrap()),
        vec!["frontend.example.org".into()],
        None,
    );
    let facts = RequestFacts {
        identity: Some(&who),
        token: None,
        method: "GET",
        path: &path,
        source: "::ffff:127.0.0.1".parse().unwrap(),
        headers: &NoHeaders,
    };
    assert_eq!(
        api.authorize(&facts).unwrap().rule.as_str(),
        "frontend-read"
    );
    let anon = RequestFacts {
        identity: None,
        ..facts
    };
    assert_eq!(
        api.authorize(&anon).unwrap_err().rule_label(),
        "default-deny"
    );
    let admin = Identity::from_x509(None, vec![], Some("CN=admin,O=Acme".into()));
    let facts = RequestFacts {
        identity: Some(&admin),
        method: "DELETE",
        ..facts
    };
    assert_eq!(api.authorize(&facts).unwrap().rule.as_str(), "admins");
}

#[test]
fn minimal_config_uses_defaults() {
    let c = parse(
        "listeners:\n  - name: l\n    address: 0.0.0.0:443\n    tls: {certificate: c, private_key: k, client_ca: ca}\n",
    )
    .unwrap();
    assert_eq!(c.metrics.address, "127.0.0.1:9901".parse().unwrap());
    assert_eq!(c.shutdown_grace, Duration::from_secs(10));
    assert_eq!(c.listeners[0].tls.client_auth, ClientAuth::Required);
    assert!(c.routes.is_empty());
    assert!(c.upstreams.is_empty());
}

/// `FULL` with `from` replaced by `to` (which must occur).
fn edit(from: &str, to: &str) -> String {
    assert!(FULL.contains(from), "{from}");
    FULL.replacen(from, to, 1)
}

#[test]
fn unknown_keys_are_rejected_with_their_line() {
    let text = edit("    connect_timeout: 2s\n", "    upstreem: echo\n");
    assert_problem(&text, "23:5:", "unknown field `upstreem`");
    let text = edit(
        "      - name: www\n",
        "      - name: www\n        hots: x\n",
    );
    assert_problem(&text, "52:9:", "unknown field `hots`");
    let text = edit(
        "  address: 127.0.0.1:9902\n",
        "  address: 127.0.0.1:9902\n  port: 1\n",
    );
    assert_problem(&text, "18:3:", "unknown field `port`");
}

#[test]
fn wrong_types_and_syntax_errors_have_lines() {
    assert_problem(&edit("interval: 3s", "interval: soon"), "32:17:", "");
    assert_problem(
        &edit("client_auth: optional", "client_auth: maybe"),
        "7:20:",
        "maybe",
    );
    assert_problem(
        &edit("    targets: [127.0.0.1:9100]\n", "    targets: 5\n"),
        "34:14:",
        "",
    );
    assert_problem(
        &edit("  - name: plain\n", "  - name: plain\n   bad: [\n"),
        "34:",
        "",
    );
    assert_problem("a: [1, 2\n", "2:1:", "");
}

#[test]
fn empty_or_non_mapping_files() {
    for text in ["", "\n", "# only a comment\n", "---\n"] {
        let err = error(text);
        assert_eq!(err, "/srv/gw/config.yaml: the file is empty; expected a mapping with `listeners`, `upstreams` and `tenants`");
    }
    assert!(error("- a\n- b\n").contains("config.yaml:1:1: the top level must be a mapping"));
    assert!(error("hello\n").contains("found a string"));
    assert!(error("{}\n").contains("at least one listener is required"));
    assert_problem(
        "listeners: []\n",
        "1:1:",
        "at least one listener is required",
    );
}

#[test]
fn semantic_problems_have_lines() {
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "upstream: echo\n",
            "upstream: nope\n",
            "41:19:",
            "route acme/api: upstream `nope` is not defined",
        ),
        (
            "  - name: internal",
            "  - name: public",
            "10:11:",
            "listener name `public` is already used (line 2)",
        ),
        (
            "'[::1]:9443'",
            "127.0.0.1:8443",
            "11:14:",
            "already used by another listener",
        ),
        (
            "'[::1]:9443'",
            "localhost:9443",
            "11:14:",
            "is not an IP:port address",
        ),
        (
            "  - name: plain",
            "  - name: echo",
            "33:11:",
            "upstream name `echo` is already used (line 21)",
        ),
        (
            "[127.0.0.1:9100]",
            "[]",
            "34:5:",
            "upstream `plain`: `targets` is empty",
        ),
        (
            "[127.0.0.1:9100]",
            "[127.0.0.1]",
            "34:15:",
            "`127.0.0.1` is not an IP:port",
        ),
        (
            "      client_key: certs/gw.key\n",
            "",
            "28:7:",
            "`client_certificate` needs `client_key` too",
        ),
        (
            "      client_ca: certs/ca.pem\n",
            "",
            "4:5:",
            "`client_ca` (or `trust_domains`) is required unless `client_auth` is `off`",
        ),
        (
            "[10.0.0.0/8,",
            "[10.0.0.0/33,",
            "9:23:",
            "`10.0.0.0/33` is not a CIDR",
        ),
        (
            "source: [127.0.0.0/8]",
            "source: [localhost]",
            "48:22:",
            "source `localhost` is not a CIDR",
        ),
        (
            "ns/*/sa",
            "ns/fo*/sa",
            "44:25:",
            "a wildcard must be a whole segment",
        ),
        (
            "ns/*/sa",
            "ns/**/sa",
            "44:25:",
            "only allowed as the last segment",
        ),
        (
            "spiffe://example.org/",
            "spiffe://*.example.org/",
            "44:25:",
            "trust domain must be literal",
        ),
        (
            "[frontend.example.org]",
            "[front end.example.org]",
            "45:23:",
            "not a valid DNS name",
        ),
        (
            "path_prefix: [/api/read]",
            "path_prefix: [/api/./read]",
            "47:27:",
            "is not a normalised path (write `/api/read`)",
        ),
        (
            "path_prefix: [/api/read]",
            "path_prefix: [/admin]",
            "47:27:",
            "can never match",
        ),
        (
            "path_prefix: /api/",
            "path_prefix: /api//x",
            "40:22:",
            "not a normalised path",
        ),
        (
            "methods: [get, POST]",
            "methods: [get, 'P T']",
            "46:28:",
            "`P T` is not an HTTP method",
        ),
        (
            "methods: [get, POST]",
            "methods: []",
            "46:13:",
            "`methods` is empty",
        ),
        (
            "- id: admins",
            "- id: frontend-read",
            "49:17:",
            "rule id `frontend-read` is already used in tenant `acme` (line 43)",
        ),
        ("- id: admins", "- id: 'bad id'", "49:17:", "invalid id"),
        (
            "  - name: globex",
            "  - name: Globex",
            "54:11:",
            "tenant `Globex`: invalid name",
        ),
        (
            "  - name: globex",
            "  - name: acme",
            "54:11:",
            "tenant name `acme` is already used (line 36)",
        ),
        (
            "      - name: www",
            "      - name: api",
            "51:15:",
            "route `acme/api`: the name is already used",
        ),
        (
            "host: API.example.com",
            "host: api.example.com:443",
            "39:15:",
            "is not a host name",
        ),
        (
            "grace_period: 30s",
            "grace_period: 2h",
            "19:17:",
            "at most 1h",
        ),
        (
            "connect_timeout: 2s",
            "connect_timeout: 0s",
            "23:22:",
            "connect_timeout must be greater than zero",
        ),
        (
            "path: /healthz",
            "path: healthz",
            "31:13:",
            "must start with '/'",
        ),
        (
            "127.0.0.1:9902",
            "127.0.0.1:8443",
            "17:12:",
            "also used by listener `public`",
        ),
        (
            "certificate: certs/server.pem\n      private_key: /etc",
            "certificate: ''\n      private_key: /etc",
            "5:20:",
            "the path is empty",
        ),
    ];
    for (from, to, location, needle) in cases {
        assert_problem(&edit(from, to), location, needle);
    }
}

#[test]
fn shadowed_routes_name_both_and_point_at_the_second() {
    let text = FULL.to_owned()
        + "      - name: api-copy\n        host: api.example.com\n        path_prefix: /api\n        upstream: echo\n";
    assert_problem(
        &text,
        "62:22:",
        "route globex/api-copy: same host api.example.com and path_prefix `/api` as route acme/api (line 40)",
    );
    // Two host-less routes with the default prefix: pointed at the second route itself.
    let text = FULL.to_owned() + "      - name: other\n        upstream: plain\n";
    assert_problem(
        &text,
        "60:9:",
        "same host (any) and path_prefix `/` as route globex/public (line 56)",
    );
}

#[test]
fn all_semantic_problems_are_collected_in_file_order() {
    let text = edit("upstream: echo\n", "upstream: nope\n")
        .replacen("[127.0.0.1:9100]", "[]", 1)
        .replacen("127.0.0.1:8443", "nowhere", 1);
    let err = parse(&text).unwrap_err();
    let lines: Vec<Option<usize>> = err.problems.iter().map(|p| p.line).collect();
    assert_eq!(lines, [Some(3), Some(34), Some(41)], "{err}");
    assert_eq!(err.file, Path::new("/srv/gw/config.yaml"));
}

/// YAML-ish fragments, to reach deeper than random bytes do.
fn yamlish() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("listeners:".to_owned()),
        Just("tenants:".to_owned()),
        Just("upstreams:".to_owned()),
        Just("  - name: a".to_owned()),
        Just("    routes:".to_owned()),
        Just("      - upstream: x".to_owned()),
        Just("    tls: {certificate: c, private_key: k}".to_owned()),
        Just("    address: 127.0.0.1:1".to_owned()),
        Just("        access: [{id: a, source: [1.2.3.4/40]}]".to_owned()),
        Just("&a [1, *a]".to_owned()),
        Just("? [x]".to_owned()),
        Just(": y".to_owned()),
        Just("---".to_owned()),
        Just("<<: {}".to_owned()),
        "[ -~]{0,20}",
    ];
    proptest::collection::vec(piece, 0..16).prop_map(|v| v.join("\n"))
}

proptest! {
    #[test]
    fn never_panics_on_arbitrary_text(text in any::<String>()) {
        let _ = parse(&text);
    }

    #[test]
    fn never_panics_on_yamlish_text(text in yamlish()) {
        if let Err(e) = parse(&text) {
            prop_assert!(!e.problems.is_empty());
        }
    }
}

const LIMITED: &str = "\
listeners:
  - name: public
    address: 127.0.0.1:8443
    tls: { certificate: s.pem, private_key: s.key, client_ca: ca.pem }
upstreams:
  - name: echo
    targets: [127.0.0.1:9000]
tenants:
  - name: acme
    limits:
      rate: { requests: 100, per: 1s, burst: 200 }
      per_identity: { requests: 10 }
      per_source: { requests: 6, per: 1m, burst: 2 }
      max_in_flight: 32
      max_request_body: 1048576
    routes:
      - name: api
        upstream: echo
        rate_limit: { requests: 5, per: 100ms }
";

#[test]
fn fairness_and_weights_parse_and_nonsense_is_refused_with_lines() {
    let config = parse(LIMITED).unwrap();
    assert_eq!(config.fairness, None);
    assert_eq!(config.tenants[0].limits.weight, None);
    let text = format!(
        "fairness: {{ max_in_flight: 64, queue_timeout: 250ms }}\n{}",
        LIMITED.replace(
            "      max_in_flight: 32\n",
            "      max_in_flight: 32\n      weight: 3\n"
        )
    );
    let config = parse(&text).unwrap();
    let fairness = config.fairness.unwrap();
    assert_eq!(
        (fairness.max_in_flight, fairness.queue_timeout),
        (64, Duration::from_millis(250))
    );
    assert_eq!(config.tenants[0].limits.weight.map(|w| w.get()), Some(3));
    let defaulted = parse(&format!("fairness: {{ max_in_flight: 8 }}\n{LIMITED}")).unwrap();
    assert_eq!(
        defaulted.fairness.unwrap().queue_timeout,
        Duration::from_secs(1)
    );

    assert_problem(
        &format!("fairness: {{ max_in_flight: 0 }}\n{LIMITED}"),
        "1:",
        "max_in_flight must be between 1 and 1000000",
    );
    assert_problem(
        &format!("fairness: {{ max_in_flight: 8, queue_timeout: 2m }}\n{LIMITED}"),
        "1:",
        "queue_timeout must be between 1ms and 60s",
    );
    assert_problem(
        &format!("fairness: {{ max_in_flight: 8, queue: 1s }}\n{LIMITED}"),
        "1:",
        "unknown field `queue`",
    );
    assert_problem(
        &LIMITED.replace(
            "      max_in_flight: 32\n",
            "      max_in_flight: 32\n      weight: 0\n",
        ),
        "15:",
        "weight must be between 1 and 1000",
    );
}

#[test]
fn limits_parse_with_defaults() {
    let config = parse(LIMITED).unwrap();
    let limits = &config.tenants[0].limits;
    let rate = limits.rate.unwrap();
    assert_eq!((rate.requests.get(), rate.burst.get()), (100, 200));
    assert_eq!(rate.replenish_interval(), Duration::from_millis(10));
    let per_identity = limits.per_identity.unwrap();
    assert_eq!(
        (per_identity.per, per_identity.burst.get()),
        (Duration::from_secs(1), 10)
    );
    assert_eq!(limits.per_source.unwrap().per, Duration::from_secs(60));
    assert_eq!(limits.max_in_flight.map(|n| n.get()), Some(32));
    assert_eq!(limits.max_request_body, Some(1 << 20));
    let route = config.routes.iter().next().unwrap();
    assert_eq!(route.rate_limit.unwrap().per, Duration::from_millis(100));
}

#[test]
fn bad_limits_are_refused_with_their_line() {
    assert_problem(
        &LIMITED.replace("requests: 100,", "requests: 0,"),
        "11:",
        "`requests` must be at least 1",
    );
    assert_problem(
        &LIMITED.replace("max_in_flight: 32", "max_in_flight: 0"),
        "14:",
        "max_in_flight must be at least 1",
    );
    assert_problem(
        &LIMITED.replace("per: 100ms", "per: 0s"),
        "19:",
        "`per` must be between",
    );
    assert_problem(
        &LIMITED.replace("per_source:", "per_client:"),
        "13:",
        "unknown field",
    );
}

#[test]
fn deny_rules_paths_and_headers_from_yaml() {
    let text = LIMITED.replace(
        "        rate_limit: { requests: 5, per: 100ms }\n",
        "        access:\n          - id: everyone\n          - id: no-admin\n            effect: deny\n            path: [/admin]\n          - id: bad-header\n            headers: { X-Env: [] }\n",
    );
    assert_problem(&text, "25:", "lists no values");
    let text = text.replace("X-Env: []", "X-Env: [\"*\"]");
    let config = parse(&text).unwrap();
    let route = config.routes.iter().next().unwrap();
    let admin = normalize_path("/admin").unwrap();
    let facts = RequestFacts {
        identity: None,
        token: None,
        method: "GET",
        path: &admin,
        source: "10.0.0.1".parse().unwrap(),
        headers: &NoHeaders,
    };
    assert_eq!(
        route.authorize(&facts).unwrap_err().rule_label(),
        "no-admin"
    );
    let other = normalize_path("/admin/x").unwrap();
    let facts = RequestFacts {
        path: &other,
        ..facts
    };
    assert_eq!(route.authorize(&facts).unwrap().rule.as_str(), "everyone");
}

const MINIMAL: &str =
    "listeners:\n  - name: l\n    address: 0.0.0.0:443\n    tls: {certificate: c, private_key: k, client_ca: ca}\n";

#[test]
fn audit_section_defaults_and_paths() {
    assert_eq!(parse(MINIMAL).unwrap().audit, None);
    let c = parse(&format!(
        "{MINIMAL}audit:\n  directory: audit\n  signing_key: /keys/audit.key\n  head_file: /off-box/gw.head\n  public_key: audit.pub\n  postgres:\n    conninfo_env: AUDIT_PG\n    tls: {{ca: pg-ca.pem, client_certificate: gw.pem, client_key: gw.key}}\n"
    ))
    .unwrap();
    let a = c.audit.unwrap();
    assert_eq!(a.directory, Path::new("/srv/gw/audit"));
    assert_eq!(a.signing_key, AuditKey::File("/keys/audit.key".into()));
    assert_eq!(a.mode, AuditMode::FailClosed, "fail-closed unless asked");
    assert_eq!(a.durable_timeout, Duration::from_millis(250));
    assert!(!a.include_query);
    assert_eq!(
        a.postgres,
        Some(AuditPostgres {
            conninfo: SecretSource::Env("AUDIT_PG".into()),
            tls: PostgresTls::VerifyFull {
                ca: "/srv/gw/pg-ca.pem".into(),
                client: Some(("/srv/gw/gw.pem".into(), "/srv/gw/gw.key".into())),
            },
        })
    );
    assert_eq!(a.head_file, Some("/off-box/gw.head".into()));
    // Relative to the config file, like every path: the key itself may sit in a read-only
    // credential folder.
    assert_eq!(a.public_key, Some("/srv/gw/audit.pub".into()));
    assert_eq!(a.max_bytes, 10 << 30);
    assert_eq!(
        a.refusals,
        RefusalRecords {
            path_bytes: 1024,
            per_source: 100,
            interval: Duration::from_secs(60),
        }
    );
    let c = parse(&format!(
        "{MINIMAL}audit:\n  directory: a\n  signing_key: k\n  segment_bytes: 65536\n  max_bytes: 1048576\n  refusals: {{ path_bytes: 256, per_source: 5, interval: 2s }}\n"
    ))
    .unwrap();
    let a = c.audit.unwrap();
    assert_eq!(a.max_bytes, 1 << 20);
    assert_eq!(
        a.refusals,
        RefusalRecords {
            path_bytes: 256,
            per_source: 5,
            interval: Duration::from_secs(2),
        }
    );
}

#[test]
fn audit_postgres_is_tls_unless_plaintext_is_said() {
    let audit = |body: &str| format!("{MINIMAL}audit:\n  directory: a\n  signing_key: k\n{body}");
    assert_problem(
        &audit("  postgres:\n    conninfo_env: PG\n"),
        "8:3:",
        "give `tls.ca`",
    );
    assert_problem(
        &audit(
            "  postgres:\n    conninfo: host=db sslmode=require\n    insecure_plaintext: true\n",
        ),
        "9:15:",
        "no CA is configured",
    );
    assert_problem(
        &audit("  postgres:\n    conninfo: host=db sslmode=disable\n    tls: {ca: ca.pem}\n"),
        "9:15:",
        "insecure_plaintext",
    );
    assert_problem(
        &audit("  postgres:\n    conninfo_env: PG\n    tls: {ca: ca.pem, client_key: k.pem}\n"),
        "10:5:",
        "both `client_certificate` and `client_key`",
    );
    assert_problem(
        &audit("  postgres:\n    conninfo_env: PG\n    tls: {ca: ca.pem}\n    insecure_plaintext: true\n"),
        "11:5:",
        "exclude each other",
    );
    let c = parse(&audit(
        "  postgres:\n    conninfo: host=127.0.0.1\n    insecure_plaintext: true\n",
    ))
    .unwrap();
    assert_eq!(
        c.audit.unwrap().postgres.unwrap().tls,
        PostgresTls::InsecurePlaintext
    );
}

#[test]
fn audit_section_problems_have_lines() {
    let audit = |body: &str| format!("{MINIMAL}audit:\n  directory: a\n  signing_key: k\n{body}");
    assert_problem(&audit("  mode: sometimes\n"), "8:9:", "fail-closed");
    assert_problem(&audit("  durable_timeout: 1m\n"), "8:20:", "at most 10s");
    assert_problem(&audit("  node: 'gw 1'\n"), "8:9:", "letters");
    assert_problem(&audit("  retention: 5m\n"), "8:14:", "at least 1h");
    assert_problem(&audit("  segment_bytes: 10\n"), "8:18:", "at least 4096");
    assert_problem(&audit("  max_bytes: 1000\n"), "8:14:", "at least 65536");
    assert_problem(
        &audit("  max_bytes: 100000000\n"),
        "8:14:",
        "twice segment_bytes",
    );
    assert_problem(
        &audit("  refusals: { path_bytes: 10 }\n"),
        "8:27:",
        "between 64 and 65536",
    );
    assert_problem(
        &audit("  refusals:\n    per_source: 0\n"),
        "9:17:",
        "at least 1",
    );
    assert_problem(
        &audit("  refusals:\n    interval: 2h\n"),
        "9:15:",
        "between 1s and 1h",
    );
    assert_problem(
        &audit("  refusals: { burst: 3 }\n"),
        "8:",
        "unknown field `burst`",
    );
    assert_problem(
        &audit(
            "  postgres:\n    conninfo: host=db password=hunter2\n    insecure_plaintext: true\n",
        ),
        "9:15:",
        "must not carry a password",
    );
    assert_problem(
        &audit("  postgres:\n    conninfo: postgresql://audit:hunter2@db/audit\n    tls: {ca: ca.pem}\n"),
        "9:15:",
        "must not carry a password",
    );
    assert_problem(
        &audit("  postgres:\n    conninfo: host=db\n    conninfo_env: PG\n    insecure_plaintext: true\n"),
        "8:3:",
        "exactly one",
    );
    assert_problem(&audit("  sink: pg\n"), "8:3:", "unknown field `sink`");
    assert_problem(
        &audit("  signing_pkcs11: {token_label: t, key_label: k, pin_env: P}\n"),
        "5:1:",
        "exactly one of `signing_key`",
    );
    // The password itself never appears in the error.
    assert!(!error(&audit(
        "  postgres:\n    conninfo: host=db password=hunter2\n    insecure_plaintext: true\n"
    ))
    .contains("hunter2"));
}

#[test]
fn crl_is_resolved_and_needs_client_certificates() {
    let c = parse(
        "listeners:\n  - name: l\n    address: 0.0.0.0:443\n    tls: {certificate: c, private_key: k, client_ca: ca, crl: ca/crl.pem}\n",
    )
    .unwrap();
    assert_eq!(
        c.listeners[0].tls.crl.as_deref(),
        Some(Path::new("/srv/gw/ca/crl.pem"))
    );
    assert_problem(
        "listeners:\n  - name: l\n    address: 0.0.0.0:443\n    tls: {certificate: c, private_key: k, client_auth: off, crl: crl.pem}\n",
        "4:",
        "`crl` needs client certificates",
    );
}

#[test]
fn audit_key_in_a_pkcs11_token() {
    let c = parse(&format!(
        "{MINIMAL}audit:\n  directory: a\n  signing_pkcs11: {{token_label: audit, key_label: checkpoints, pin_file: hsm.pin}}\n"
    ))
    .unwrap();
    assert_eq!(
        c.audit.unwrap().signing_key,
        AuditKey::Pkcs11 {
            module: None,
            token_label: "audit".into(),
            pin: SecretSource::File("/srv/gw/hsm.pin".into()),
            key_label: "checkpoints".into(),
        }
    );
    assert_problem(
        &format!("{MINIMAL}audit:\n  directory: a\n  signing_pkcs11: {{token_label: audit, key_label: k}}\n"),
        "7:3:",
        "exactly one of `pin_file` and `pin_env`",
    );
}

#[test]
fn rules_on_gateway_owned_or_forgeable_headers_are_refused() {
    let rule = |header: &str| {
        LIMITED.replace(
            "        rate_limit: { requests: 5, per: 100ms }\n",
            &format!("        access:\n          - id: spoofable\n            headers: {{ {header}: [\"*\"] }}\n"),
        )
    };
    assert_problem(
        &rule("X-Portcullis-SPIFFE-ID"),
        "21:",
        "set or removed by the gateway",
    );
    assert_problem(
        &rule("X-Forwarded-For"),
        "21:",
        "set or removed by the gateway",
    );
    assert_problem(
        &rule("x-ssl-client-s-dn"),
        "21:",
        "set or removed by the gateway",
    );
    assert!(parse(&rule("x-env")).is_ok());
    // A configured extra is stripped and refused in rules too.
    let extra = format!(
        "http:\n  strip_headers: [x-user, x-internal-*]\n{}",
        rule("X-Internal-Token")
    );
    assert_problem(&extra, "23:", "set or removed by the gateway");
}

#[test]
fn the_http_section_sets_head_limits_and_extra_stripped_headers() {
    let config = parse(MINIMAL).unwrap();
    assert_eq!(config.http.max_request_head, 32 * 1024);
    assert_eq!(config.http.max_header_line, 8 * 1024);
    assert!(config.http.strip.strips("x-forwarded-host"));
    let text = format!("http:\n  strip_headers: [x-user]\n  max_request_head: 16384\n{MINIMAL}");
    let config = parse(&text).unwrap();
    assert_eq!(config.http.max_request_head, 16384);
    assert!(config.http.strip.strips("x-user"));
    assert_problem(
        &format!("http:\n  strip_headers: [\"bad name\"]\n{MINIMAL}"),
        "2:",
        "is not a header name",
    );
    assert_problem(
        &format!("http:\n  max_request_head: 10\n{MINIMAL}"),
        "2:",
        "max_request_head must be between",
    );
    assert_problem(
        &format!("http:\n  max_head: 10\n{MINIMAL}"),
        "2:",
        "unknown field",
    );
}

#[test]
fn listener_connections_default_and_parse() {
    let c = parse(FULL).unwrap();
    assert_eq!(c.listeners[0].connections, ConnectionLimits::DEFAULT);
    let text = edit(
        "    trusted_proxies: [10.0.0.0/8, 192.168.1.7]\n",
        "    trusted_proxies: [10.0.0.0/8, 192.168.1.7]\n    connections:\n      handshake_timeout: 2s\n      request_head_timeout: 1500ms\n      idle_timeout: 5s\n      h2_idle_timeout: 7s\n      write_timeout: 3s\n      body_idle_timeout: 4s\n      max_connections: 50\n      max_connections_per_source: 5\n      max_requests_per_connection: 10\n      h2_max_concurrent_streams: 20\n      h2_max_header_list_size: 8192\n",
    );
    let l = &parse(&text).unwrap().listeners[0].connections;
    assert_eq!(l.handshake_timeout, Duration::from_secs(2));
    assert_eq!(l.request_head_timeout, Duration::from_millis(1500));
    assert_eq!(l.idle_timeout, Duration::from_secs(5));
    assert_eq!(l.h2_idle_timeout, Duration::from_secs(7));
    assert_eq!(l.write_timeout, Duration::from_secs(3));
    assert_eq!(l.body_idle_timeout, Duration::from_secs(4));
    assert_eq!((l.max_connections, l.max_connections_per_source), (50, 5));
    assert_eq!(l.max_requests_per_connection, 10);
    assert_eq!(l.h2_max_concurrent_streams, 20);
    assert_eq!(l.h2_max_header_list_size, 8192);
}

#[test]
fn listener_connections_out_of_range_have_lines() {
    let with = |section: &str| {
        edit(
            "    trusted_proxies: [10.0.0.0/8, 192.168.1.7]\n",
            &format!("    trusted_proxies: [10.0.0.0/8, 192.168.1.7]\n    connections:\n{section}"),
        )
    };
    assert_problem(
        &with("      handhsake_timeout: 2s\n"),
        "11:7:",
        "unknown field `handhsake_timeout`",
    );
    assert_problem(
        &with("      handshake_timeout: 0s\n"),
        "11:26:",
        "connections.handshake_timeout must be between 100ms and 1h",
    );
    assert_problem(
        &with("      write_timeout: 2h\n"),
        "11:22:",
        "connections.write_timeout must be between 100ms and 1h",
    );
    assert_problem(
        &with("      idle_timeout: 1500ms\n"),
        "11:21:",
        "connections.idle_timeout must be whole seconds",
    );
    assert_problem(
        &with("      max_connections: 0\n"),
        "11:24:",
        "connections.max_connections must be between 1 and 1000000",
    );
    assert_problem(
        &with("      max_connections: 10\n      max_connections_per_source: 11\n"),
        "12:35:",
        "max_connections_per_source (11) exceeds max_connections (10)",
    );
    assert_problem(
        &with("      h2_max_concurrent_streams: 0\n"),
        "11:34:",
        "connections.h2_max_concurrent_streams must be between 1 and 1000",
    );
    assert_problem(
        &with("      h2_max_header_list_size: 100\n"),
        "11:32:",
        "connections.h2_max_header_list_size must be between 1024 and 1048576",
    );
    assert_problem(
        &with("      max_requests_per_connection: -1\n"),
        "11:36:",
        "",
    );
}

#[test]
fn listener_abuse_limits_default_parse_and_refuse_nonsense_with_lines() {
    use crate::{AbuseLimits, RateLimit};
    let with = |section: &str| {
        edit(
            "    trusted_proxies: [10.0.0.0/8, 192.168.1.7]\n",
            &format!("    trusted_proxies: [10.0.0.0/8, 192.168.1.7]\n    connections:\n      abuse:\n{section}"),
        )
    };
    let c = parse(FULL).unwrap();
    assert_eq!(c.listeners[0].connections.abuse, AbuseLimits::DEFAULT);
    let text = with("        connection_rate_per_source: { connections: 30, per: 1m }\n        connection_rate_per_identity: off\n        refusals: { window: 30s, slow_after: 5, delay: 1s, close_after: 9 }\n        exempt: [10.1.2.3, 192.168.0.0/16]\n");
    let a = &parse(&text).unwrap().listeners[0].connections.abuse;
    let rate = a.connection_rate_per_source.unwrap();
    assert_eq!(
        (rate.requests.get(), rate.per),
        (30, Duration::from_secs(60))
    );
    assert_eq!(a.connection_rate_per_identity, None);
    assert_eq!(
        (a.window, a.slow_after, a.delay, a.close_after),
        (Duration::from_secs(30), 5, Duration::from_secs(1), 9)
    );
    assert!(
        a.exempts("10.1.2.3".parse().unwrap()) && a.exempts("::ffff:192.168.4.5".parse().unwrap())
    );
    assert!(!a.exempts("10.1.2.4".parse().unwrap()));
    // Omitted keys keep their defaults.
    let a = &parse(&with("        exempt: [127.0.0.1]\n"))
        .unwrap()
        .listeners[0]
        .connections
        .abuse;
    assert_eq!(
        a.connection_rate_per_identity,
        Some(RateLimit::per_second(100))
    );
    assert_eq!(a.close_after, AbuseLimits::DEFAULT.close_after);

    assert_problem(
        &with("        refusals: { slow_after: 10, close_after: 5 }\n"),
        "12:",
        "slow_after (10) exceeds close_after (5)",
    );
    assert_problem(
        &with("        refusals: { delay: 1m }\n"),
        "12:",
        "delay must be at most 10s",
    );
    assert_problem(
        &with("        refusals: { window: 0s }\n"),
        "12:",
        "window must be between 1s and 1h",
    );
    assert_problem(
        &with("        refusals: { close_after: 0 }\n"),
        "12:",
        "slow_after and close_after must be at least 1",
    );
    assert_problem(
        &with("        exempt: [not-an-address]\n"),
        "12:",
        "connections.abuse.exempt",
    );
    assert_problem(
        &with("        connection_rate_per_source: { connections: 0 }\n"),
        "12:",
        "must be at least 1",
    );
    assert_problem(
        &with("        connection_rate_per_source: sometimes\n"),
        "12:",
        "",
    );
    assert_problem(
        &with("        slow_after: 3\n"),
        "12:",
        "unknown field `slow_after`",
    );
}

#[test]
fn body_inspection_refuses_by_default_and_passes_only_when_said() {
    use crate::inspection::{OtherContent, OverLimit, UnknownEncoding, Upgrades};
    let with_dlp = LIMITED.replace(
        "    routes:\n",
        "    dlp: { request: { us_ssn: block } }\n    routes:\n",
    );
    let config = parse(&with_dlp).unwrap();
    let route = config.routes.iter().next().unwrap();
    let inspection = route.inspection.as_ref().unwrap();
    assert_eq!(inspection.limits.over_limit, OverLimit::Refuse);
    assert_eq!(inspection.limits.unknown_encoding, UnknownEncoding::Refuse);
    assert_eq!(inspection.limits.other_content, OtherContent::Scan);
    assert_eq!(inspection.upgrades, Upgrades::Refuse);

    let said = with_dlp
        .replace(
            "    routes:\n",
            "    body_inspection: { over_limit: pass, unknown_encoding: pass, other_content: refuse }\n    routes:\n",
        )
        .replace("        upstream: echo\n", "        upstream: echo\n        websocket: allow\n");
    let config = parse(&said).unwrap();
    let inspection = config
        .routes
        .iter()
        .next()
        .unwrap()
        .inspection
        .clone()
        .unwrap();
    assert_eq!(inspection.limits.over_limit, OverLimit::Pass);
    assert_eq!(inspection.limits.unknown_encoding, UnknownEncoding::Pass);
    assert_eq!(inspection.limits.other_content, OtherContent::Refuse);
    assert_eq!(inspection.upgrades, Upgrades::Allow);

    assert_problem(
        &with_dlp.replace(
            "    routes:\n",
            "    body_inspection: { unknown_encoding: maybe }\n    routes:\n",
        ),
        "17:",
        "unknown variant `maybe`",
    );
    assert_problem(
        &with_dlp.replace(
            "    routes:\n",
            "    body_inspection: { other_contents: scan }\n    routes:\n",
        ),
        "17:",
        "unknown field `other_contents`",
    );
    assert_problem(
        &LIMITED.replace(
            "        upstream: echo\n",
            "        upstream: echo\n        websocket: allow\n",
        ),
        "19:",
        "`websocket` applies only to a route with DLP",
    );
}

mod oidc;

#[test]
fn listener_proxy_protocol_parses_with_its_default_timeout() {
    let with = |section: &str| {
        edit(
            "    trusted_proxies: [10.0.0.0/8, 192.168.1.7]\n",
            &format!("    trusted_proxies: [10.0.0.0/8, 192.168.1.7]\n    connections:\n      proxy_protocol:\n{section}"),
        )
    };
    let c = parse(&with("        from: [10.1.0.0/16, 127.0.0.1]\n")).unwrap();
    let pp = c.listeners[0].connections.proxy_protocol.as_ref().unwrap();
    let from: Vec<String> = pp.from.iter().map(ToString::to_string).collect();
    assert_eq!(from, ["10.1.0.0/16", "127.0.0.1/32"]);
    assert_eq!(pp.timeout, crate::ProxyProtocol::DEFAULT_TIMEOUT);
    let c = parse(&with("        from: [127.0.0.1]\n        timeout: 2s\n")).unwrap();
    let pp = c.listeners[0].connections.proxy_protocol.as_ref().unwrap();
    assert_eq!(pp.timeout, Duration::from_secs(2));
    assert_problem(
        &with("        from: []\n"),
        "12:9:",
        "connections.proxy_protocol.from must name at least one balancer address",
    );
    assert_problem(
        &with("        from: [127.0.0.1, 10.0.0.0/33]\n"),
        "12:27:",
        "connections.proxy_protocol.from: `10.0.0.0/33` is not a CIDR",
    );
    assert_problem(
        &with("        from: [127.0.0.1]\n        timeout: 5m\n"),
        "13:18:",
        "connections.proxy_protocol.timeout must be between 100ms and 60s",
    );
    assert_problem(
        &with("        timeout: 5s\n"),
        "12:",
        "missing field `from`",
    );
    assert_problem(
        &with("        from: [127.0.0.1]\n        versions: [2]\n"),
        "13:9:",
        "unknown field `versions`",
    );
}

/// The README's PROXY protocol example is a config the gateway accepts.
#[test]
fn the_readme_proxy_protocol_example_parses() {
    let readme = include_str!("../../../README.md");
    let start = readme
        .find("```yaml\n# A listener behind the balancers")
        .expect("the README's PROXY protocol example")
        + 8;
    let end = start + readme[start..].find("```").unwrap();
    let config = parse(&readme[start..end]).unwrap_or_else(|e| panic!("{e}"));
    let pp = config.listeners[0].connections.proxy_protocol.as_ref();
    assert_eq!(pp.map(|pp| pp.from.len()), Some(1));
}

#[test]
fn upstream_tls_names_its_server_by_spiffe_id_name_or_both() {
    let by_id = parse(&edit(
        "      server_name: echo.internal\n",
        "      spiffe_id: [spiffe://example.org/ns/prod/sa/echo, spiffe://example.org/ns/canary/**]\n",
    ))
    .unwrap();
    let tls = by_id.upstreams[0].tls.as_ref().unwrap();
    assert_eq!(tls.server_name, None);
    assert_eq!(tls.spiffe_id.len(), 2);
    let both = parse(&edit(
        "      server_name: echo.internal\n",
        "      server_name: echo.internal\n      spiffe_id: [spiffe://example.org/ns/prod/sa/echo]\n",
    ))
    .unwrap();
    let tls = both.upstreams[0].tls.as_ref().unwrap();
    assert_eq!(tls.server_name.as_deref(), Some("echo.internal"));
    assert_eq!(tls.spiffe_id.len(), 1);

    assert_problem(
        &edit("      server_name: echo.internal\n", ""),
        "25:5",
        "tls needs `server_name`, `spiffe_id` or both",
    );
    assert_problem(
        &edit(
            "      server_name: echo.internal\n",
            "      spiffe_id: [spiffe://example.org/ns/*x/sa/echo]\n",
        ),
        "26:",
        "spiffe_id `spiffe://example.org/ns/*x/sa/echo`",
    );
    assert_problem(
        &edit(
            "      server_name: echo.internal\n",
            "      spiffe_id: []\n",
        ),
        "26:",
        "`spiffe_id` is empty",
    );
    assert_problem(
        &edit(
            "      server_name: echo.internal\n      ca: certs/upstream-ca.pem\n",
            "      spiffe_id: [spiffe://example.org/ns/prod/sa/echo]\n",
        ),
        "26:",
        "`spiffe_id` needs `ca`",
    );
}

#[test]
fn listener_trust_domains_replace_client_ca() {
    let with_domains = edit(
        "      client_auth: off\n",
        "      trust_domains:\n        - { name: example.org, bundle: certs/example-org.pem }\n        - { name: partner.test, bundle: certs/partner.pem }\n",
    );
    let config = parse(&with_domains).unwrap();
    let tls = &config.listeners[1].tls;
    assert_eq!(tls.client_ca, None);
    assert_eq!(tls.trust_domains.len(), 2);
    assert_eq!(tls.trust_domains[1].name, "partner.test");
    assert_eq!(
        tls.trust_domains[1].bundle,
        Path::new("/srv/gw/certs/partner.pem")
    );
    let twice = with_domains.replace("name: partner.test", "name: example.org");
    assert_problem(&twice, "17:", "trust domain `example.org` is listed twice");
    let bad = with_domains.replace("name: partner.test", "name: Partner.Test");
    assert_problem(&bad, "17:", "is not a SPIFFE trust domain");
    let off = edit(
        "      client_auth: off\n",
        "      client_auth: off\n      trust_domains: [ { name: example.org, bundle: b.pem } ]\n",
    );
    assert_problem(&off, "16:", "`client_auth: off` does not ask for");
}

#[test]
fn egress_listeners_are_loopback_and_name_their_workload() {
    let with = |egress: &str| format!("{FULL}egress:\n{egress}");
    let config = parse(&with(
        "  - { name: out, address: '127.0.0.1:15001', workload: 'spiffe://example.org/ns/a/sa/app' }\n",
    ))
    .unwrap();
    assert_eq!(config.egress.len(), 1);
    assert_eq!(
        config.egress[0].workload.as_str(),
        "spiffe://example.org/ns/a/sa/app"
    );
    assert!(parse(&with(
        "  - { name: out, address: '0.0.0.0:15001', workload: 'spiffe://example.org/a', allow_non_loopback: true }\n",
    ))
    .is_ok());
    let err = error(&with(
        "  - { name: out, address: '0.0.0.0:15001', workload: 'spiffe://example.org/a' }\n",
    ));
    assert!(err.contains("is not a loopback address"), "{err}");
    let err = error(&with(
        "  - { name: out, address: '127.0.0.1:15001', workload: 'example.org/a' }\n",
    ));
    assert!(
        err.contains("egress `out`: workload `example.org/a`"),
        "{err}"
    );
    let err = error(&with(
        "  - { name: public, address: '127.0.0.1:15001', workload: 'spiffe://example.org/a' }\n",
    ));
    assert!(
        err.contains("listener name `public` is already used"),
        "{err}"
    );
    let err = error(&with(
        "  - { name: out, address: '127.0.0.1:15001', workload: 'spiffe://example.org/a', connections: { proxy_protocol: { from: [127.0.0.1/32] } } }\n",
    ));
    assert!(err.contains("takes no PROXY protocol"), "{err}");
}

#[test]
fn the_readme_sidecar_example_parses() {
    let readme = include_str!("../../../README.md");
    let start = readme
        .find("```yaml\n# Sidecar of service A")
        .expect("the README's sidecar example")
        + 8;
    let end = start + readme[start..].find("```").unwrap();
    let config = parse(&readme[start..end]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.egress.len(), 1);
    let b = config
        .upstreams
        .iter()
        .find(|u| u.name.as_str() == "b")
        .unwrap();
    assert_eq!(b.tls.as_ref().unwrap().spiffe_id.len(), 1);
}

#[test]
fn trust_domain_endpoints_parse_with_defaults_and_refuse_nonsense() {
    let yaml = edit(
        "      client_auth: off\n",
        "      trust_domains:\n        - name: example.org\n          bundle: certs/example-org.pem\n          endpoint: { url: 'https://bundles.example.org/b.json' }\n",
    );
    let config = parse(&yaml).unwrap();
    let endpoint = config.listeners[1].tls.trust_domains[0]
        .endpoint
        .clone()
        .unwrap();
    assert_eq!(endpoint.refresh, Duration::from_secs(300));
    assert_eq!(endpoint.ca, None);
    let err = error(&yaml.replace("https://bundles", "http://bundles"));
    assert!(err.contains("is not an https URL"), "{err}");
    let err = error(&yaml.replace("b.json' }", "b.json', refresh: 1s }"));
    assert!(err.contains("between 30s and 24h"), "{err}");
}

mod traces;

mod upstreams;

const FLEET: &str = "\
listeners:
  - name: l
    address: 0.0.0.0:443
    tls: {certificate: c, private_key: k, client_ca: ca}
fleet:
  endpoints: [http://127.0.0.1:2379, 'http://etcd-2:2379']
  cache: state/fleet.json
";

#[test]
fn the_fleet_section_parses_and_mistakes_are_refused_with_lines() {
    let c = parse(FLEET).unwrap();
    let fleet = c.fleet.expect("fleet");
    assert_eq!(fleet.settings.endpoints.len(), 2);
    assert_eq!(fleet.settings.prefix, "/portcullis");
    assert_eq!(fleet.cache, Path::new("/srv/gw/state/fleet.json"));
    assert!(fleet.settings.tls.is_none());
    assert_problem(
        &FLEET.replace("  cache:", "  cahce: x\n  cache:"),
        "7:3:",
        "unknown field `cahce`",
    );
    assert_problem(
        &FLEET.replace("'http://etcd-2:2379'", "'etcd-2:2379'"),
        "6:",
        "must start with http:// or https://",
    );
    assert_problem(
        &FLEET.replace("  cache:", "  prefix: portcullis/\n  cache:"),
        "7:11:",
        "prefix",
    );
    assert_problem(
        &FLEET.replace("  cache:", "  tls: {ca: etcd-ca.pem}\n  cache:"),
        "5:1:",
        "not every endpoint is https://",
    );
    assert_problem(
        &FLEET.replace(
            "  cache:",
            "  tls: {ca: a.pem, client_certificate: c.pem}\n  cache:",
        ),
        "7:",
        "go together",
    );
    let tls = FLEET.replace("http://", "https://").replace(
        "  cache:",
        "  tls: {ca: a.pem, client_certificate: c.pem, client_key: k.pem}\n  cache:",
    );
    let fleet = parse(&tls).unwrap().fleet.expect("fleet");
    let tls = fleet.settings.tls.expect("tls");
    assert_eq!(tls.ca, Path::new("/srv/gw/a.pem"));
    assert!(tls.client.is_some());
}
