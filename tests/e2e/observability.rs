//! The dashboard and alert rules of `deploy/observability/` against the real thing: promtool
//! checks the rules and runs their unit tests; then Debian's `prometheus` scrapes a running
//! gateway (audit log, several routes, traffic with denials, a rate limit, DLP findings, refused
//! handshakes, a dead upstream, a CRL re-read, an unreachable identity provider) with the rules
//! loaded, and every dashboard query and alert expression is evaluated by it. Each metric and
//! label they name must be one the gateway exports: seen in its `/metrics` output, or, for the
//! few this setup cannot produce (listed in `NOT_EXERCISED`), declared in its source.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::*;

/// Metrics this test cannot make the gateway produce a series of, and why. Their names and
/// labels are checked against the declarations in `gateway/src/metrics.rs` instead.
const NOT_EXERCISED: &[(&str, &str)] = &[
    (
        "portcullis_certificate_renewals_total",
        "needs the CA's issuance API (tests/e2e/ca.rs, SoftHSM)",
    ),
    (
        "portcullis_certificate_not_after_seconds",
        "needs the CA's issuance API (tests/e2e/ca.rs, SoftHSM)",
    ),
    (
        "portcullis_audit_refused_requests_total",
        "needs an audit log that fails to write (tests/e2e/audit.rs)",
    ),
];

/// Series Prometheus makes itself, and the labels it adds to every scraped series.
const SYNTHETIC_METRICS: &[&str] = &["up"];
const TARGET_LABELS: &[&str] = &["job", "instance"];

const CONFIG: &str = r#"
listeners:
  - name: public
    address: 127.0.0.1:{port}
    tls: { certificate: server.pem, private_key: server.key, client_auth: required, client_ca: ca.pem, crl: crl.pem }
    connections:
      handshake_timeout: 1s
      max_connections_per_source: 8
metrics:
  address: 127.0.0.1:{metrics}
audit:
  directory: audit
  signing_key: audit.key
  node: gw-observability
  mode: fail-closed
upstreams:
  - name: echo
    targets: [127.0.0.1:{echo}]
  - name: gone
    targets: [127.0.0.1:{dead}]
tenants:
  - name: acme
    dlp:
      request: { card_number: block }
    body_inspection: { max_bytes: 4096, over_limit: pass }
    identity_providers:
      - name: corp
        issuer: https://localhost:{dead}
        audiences: [https://api.test]
        ca: ca.pem
    routes:
      - name: api
        path_prefix: /api
        upstream: echo
        access:
          - id: frontend
            spiffe_id: ["spiffe://test.portcullis.local/ns/app/sa/frontend"]
      - name: gone
        path_prefix: /gone
        upstream: gone
        access: [ { id: gone-anyone } ]
      - name: token
        path_prefix: /token
        upstream: echo
        authentication: oidc
        access: [ { id: token-anyone } ]
  - name: noisy
    limits:
      rate: { requests: 2, per: 1m, burst: 2 }
    routes:
      - name: api
        path_prefix: /noisy
        upstream: echo
        access: [ { id: anyone } ]
"#;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/observability")
}

fn tool(name: &str) -> Command {
    let mut cmd = Command::new(name);
    cmd.stdin(Stdio::null());
    cmd
}

fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e} (deploy/setup-debian.sh --test installs it)"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{what} failed:\n{text}");
    text
}

#[test]
fn promtool_checks_the_alert_rules_and_runs_their_unit_tests() {
    let dir = deploy();
    let out = run(
        tool("promtool")
            .args(["check", "rules", "alerts.yml"])
            .current_dir(&dir),
        "promtool check rules",
    );
    assert!(out.contains("SUCCESS"), "{out}");
    let out = run(
        tool("promtool")
            .args(["test", "rules", "alerts_test.yml"])
            .current_dir(&dir),
        "promtool test rules",
    );
    assert!(out.contains("SUCCESS"), "{out}");
    // Every alert has a unit test, and every alert tells the operator what to do.
    let rules = std::fs::read_to_string(dir.join("alerts.yml")).unwrap();
    let tests = std::fs::read_to_string(dir.join("alerts_test.yml")).unwrap();
    for alert in alert_names(&rules) {
        assert!(
            tests.contains(&format!("alertname: {alert}\n")),
            "no unit test for {alert}"
        );
    }
}

fn alert_names(rules: &str) -> Vec<String> {
    rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .map(str::to_owned)
        .collect()
}

/// The `expr` of every rule in alerts.yml (single-line, or a `>-` block).
fn alert_exprs(rules: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = rules.lines().collect();
    let mut out = Vec::new();
    let mut alert = String::new();
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i].trim();
        if let Some(a) = l.strip_prefix("- alert: ") {
            alert = a.to_owned();
        }
        if let Some(e) = l.strip_prefix("expr: ") {
            if e == ">-" || e == "|" {
                let indent = lines[i + 1].len() - lines[i + 1].trim_start().len();
                let mut block = Vec::new();
                i += 1;
                while i < lines.len()
                    && (lines[i].trim().is_empty()
                        || lines[i].len() - lines[i].trim_start().len() >= indent)
                {
                    block.push(lines[i].trim());
                    i += 1;
                }
                out.push((alert.clone(), block.join(" ")));
                continue;
            }
            out.push((alert.clone(), e.to_owned()));
        }
        i += 1;
    }
    out
}

/// Every query of the dashboard: panel targets, and the selectors of `label_values(...)`
/// template variables (with the label they list).
fn dashboard_queries(dash: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    fn panels(list: &Value, out: &mut Vec<(String, String)>) {
        for p in list.as_array().into_iter().flatten() {
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(e) = t["expr"].as_str() {
                    let title = p["title"].as_str().unwrap_or("?");
                    out.push((format!("panel {title:?}"), e.to_owned()));
                }
            }
            panels(&p["panels"], out);
        }
    }
    panels(&dash["panels"], &mut out);
    for v in dash["templating"]["list"].as_array().into_iter().flatten() {
        if v["type"] != "query" {
            continue;
        }
        let q = v["query"]["query"]
            .as_str()
            .or(v["query"].as_str())
            .unwrap_or_default();
        let inner = q
            .strip_prefix("label_values(")
            .and_then(|r| r.strip_suffix(')'))
            .unwrap_or_else(|| panic!("variable {}: not label_values(...): {q}", v["name"]));
        let (selector, label) = inner.rsplit_once(',').unwrap();
        // As a query, the selector grouped by the label: both are checked.
        out.push((
            format!("variable ${}", v["name"].as_str().unwrap_or("?")),
            format!("count by ({}) ({})", label.trim(), selector.trim()),
        ));
    }
    out
}

/// Grafana's variables replaced as a dashboard with every variable on "All" sends them.
fn substitute(expr: &str) -> String {
    let mut e = expr
        .replace("$__rate_interval", "15s")
        .replace("${__rate_interval}", "15s")
        .replace("$__interval", "15s")
        .replace("$__range", "1h");
    for v in ["job", "instance", "tenant"] {
        e = e
            .replace(&format!("${{{v}}}"), ".*")
            .replace(&format!("${v}"), ".*");
    }
    assert!(!e.contains('$'), "unsubstituted variable in {expr}");
    e
}

#[derive(Debug, PartialEq)]
enum Token {
    Ident(String),
    Str,
    Punct(char),
    Op(String),
}

fn tokens(expr: &str) -> Vec<Token> {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '"' || c == '\'' || c == '`' {
            i += 1;
            while i < chars.len() && chars[i] != c {
                if chars[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push(Token::Str);
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            out.push(Token::Ident(chars[start..i].iter().collect()));
        } else if c.is_ascii_digit() || c == '.' {
            // Numbers and durations (5m, 1h, 0.99): nothing to check.
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if "=!".contains(c) {
            let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
            if ["!=", "=~", "!~", "=="].contains(&two.as_str()) {
                out.push(Token::Op(two));
                i += 2;
            } else {
                out.push(Token::Op(c.to_string()));
                i += 1;
            }
        } else {
            out.push(Token::Punct(c));
            i += 1;
        }
    }
    out
}

/// What an expression names: metrics with the labels matched on each, and the labels of its
/// `by`/`without`/`on`/`ignoring`/`group_*` clauses.
#[derive(Debug, Default)]
struct Names {
    metrics: BTreeMap<String, BTreeSet<String>>,
    grouping: BTreeSet<String>,
}

fn names(expr: &str) -> Names {
    let t = tokens(expr);
    let mut n = Names::default();
    let mut i = 0;
    while i < t.len() {
        if let Token::Ident(id) = &t[i] {
            let next = t.get(i + 1);
            if [
                "by",
                "without",
                "on",
                "ignoring",
                "group_left",
                "group_right",
            ]
            .contains(&id.as_str())
                && next == Some(&Token::Punct('('))
            {
                i += 2;
                while i < t.len() && t[i] != Token::Punct(')') {
                    if let Token::Ident(l) = &t[i] {
                        n.grouping.insert(l.clone());
                    }
                    i += 1;
                }
            } else if id.starts_with("portcullis_") || SYNTHETIC_METRICS.contains(&id.as_str()) {
                let labels = n.metrics.entry(id.clone()).or_default();
                if next == Some(&Token::Punct('{')) {
                    i += 2;
                    while i < t.len() && t[i] != Token::Punct('}') {
                        if let (Token::Ident(l), Some(Token::Op(_))) = (&t[i], t.get(i + 1)) {
                            labels.insert(l.clone());
                        }
                        i += 1;
                    }
                }
            } else {
                let aggregation =
                    matches!(next, Some(Token::Ident(k)) if k == "by" || k == "without");
                assert!(
                    next == Some(&Token::Punct('('))
                        || aggregation
                        || [
                            "and",
                            "or",
                            "unless",
                            "bool",
                            "offset",
                            "group_left",
                            "group_right"
                        ]
                        .contains(&id.as_str()),
                    "{id:?} in {expr}: neither a function, an operator nor a portcullis_ metric"
                );
            }
        }
        i += 1;
    }
    n
}

/// Label names per metric name, from the exposition text (histograms under their `_bucket`,
/// `_sum` and `_count` names, as exported).
fn exported(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels = out.entry(line[..end].to_owned()).or_default();
        if line[end..].starts_with('{') {
            for t in tokens_until_brace(&line[end + 1..]) {
                labels.insert(t);
            }
        }
    }
    out
}

fn tokens_until_brace(rest: &str) -> Vec<String> {
    let mut out = Vec::new();
    let t = tokens(rest);
    for (i, tok) in t.iter().enumerate() {
        if *tok == Token::Punct('}') {
            break;
        }
        if let (Token::Ident(l), Some(Token::Op(op))) = (tok, t.get(i + 1)) {
            if op == "=" {
                out.push(l.clone());
            }
        }
    }
    out
}

/// Metric names and label names as declared in the gateway's source (for `NOT_EXERCISED`).
fn declared() -> BTreeMap<String, BTreeSet<String>> {
    let src = [
        include_str!("../../gateway/src/metrics.rs"),
        include_str!("../../gateway/src/metrics/connections.rs"),
        include_str!("../../gateway/src/metrics/audit.rs"),
        include_str!("../../gateway/src/metrics/fairness.rs"),
    ]
    .concat();
    let src = src.as_str();
    let mut out = BTreeMap::new();
    let starts: Vec<usize> = src.match_indices("\"portcullis_").map(|(i, _)| i).collect();
    for (k, &start) in starts.iter().enumerate() {
        let name_end = src[start + 1..].find('"').unwrap() + start + 1;
        let name = &src[start + 1..name_end];
        let until = starts.get(k + 1).copied().unwrap_or(src.len());
        let mut labels = BTreeSet::new();
        if let Some(at) = src[name_end..until].find("&[\"") {
            let list = &src[name_end + at + 2..];
            let list = &list[..list.find(']').unwrap()];
            labels.extend(
                list.split(',')
                    .map(|l| l.trim().trim_matches('"').to_owned()),
            );
        }
        out.insert(name.to_owned(), labels);
    }
    assert!(out.len() > 20, "metrics.rs declarations not found: {out:?}");
    out
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// GET over HTTP/1.0 (so that the answer is never chunked): (status, body).
fn get10(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.split_whitespace().nth(1)?.parse().ok()?;
    let (_, body) = out.split_once("\r\n\r\n")?;
    Some((status, body.to_owned()))
}

fn prom_get(port: u16, path: &str) -> Value {
    let (status, body) =
        get10(port, path).unwrap_or_else(|| panic!("prometheus did not answer {path}"));
    serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("{path}: HTTP {status}, not JSON ({e}): {body}"))
}

/// Prometheus on loopback with its own data folder, killed when dropped.
struct Prometheus {
    port: u16,
    proc: Proc,
}

impl Prometheus {
    fn start(dir: &Path, target: u16) -> Self {
        let port = free_port();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - {}\n\
                 scrape_configs:\n  - job_name: portcullis\n    static_configs:\n      \
                 - targets: ['127.0.0.1:{target}']\n",
                deploy().join("alerts.yml").display()
            ),
        )
        .unwrap();
        let log = dir.join("prometheus.log");
        let child = tool("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("prometheus-data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("prometheus (deploy/setup-debian.sh --test installs it)");
        let mut p = Self {
            port,
            proc: Proc { child, log },
        };
        // Up, and scraped the gateway a few times (rates need two samples).
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = p.proc.child.try_wait() {
                panic!("prometheus exited ({status}):\n{}", p.proc.log_text());
            }
            let value = |expr: &str| {
                get10(port, &format!("/api/v1/query?query={}", urlencode(expr)))
                    .and_then(|(_, body)| serde_json::from_str::<Value>(&body).ok())
                    .and_then(|v| {
                        v["data"]["result"][0]["value"][1]
                            .as_str()
                            .map(str::to_owned)
                    })
                    .and_then(|n| n.parse::<f64>().ok())
            };
            // Up, and four scrapes in.
            let scrapes = value("count_over_time(up[1m])").unwrap_or(0.0);
            if scrapes >= 4.0 && value("up") == Some(1.0) {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "prometheus never scraped the gateway:\n{}\n{}",
                p.proc.log_text(),
                serde_json::to_string_pretty(&prom_get(port, "/api/v1/targets")).unwrap()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        p
    }

    fn query(&self, expr: &str) -> Value {
        prom_get(
            self.port,
            &format!("/api/v1/query?query={}", urlencode(expr)),
        )
    }
}

/// A CRL of the test CA (revoking nothing), written with `openssl ca -gencrl`; each call
/// makes a new one (the next CRL number).
fn write_crl(d: &Path) {
    let state = d.join("crl-state");
    if !state.exists() {
        std::fs::create_dir(&state).unwrap();
        std::fs::write(state.join("index.txt"), "").unwrap();
        std::fs::write(state.join("crlnumber"), "01\n").unwrap();
        std::fs::write(
            state.join("openssl.cnf"),
            format!(
                "[ca]\ndefault_ca = test\n[test]\ndatabase = {0}/index.txt\n\
                 crlnumber = {0}/crlnumber\ndefault_md = sha256\ndefault_crl_days = 1\n",
                state.display()
            ),
        )
        .unwrap();
    }
    let next = d.join("crl.pem.next");
    run(
        tool("openssl")
            .args(["ca", "-batch", "-gencrl", "-config"])
            .arg(state.join("openssl.cnf"))
            .arg("-keyfile")
            .arg(d.join("ca.key"))
            .arg("-cert")
            .arg(d.join("ca.pem"))
            .arg("-out")
            .arg(&next),
        "openssl ca -gencrl",
    );
    std::fs::rename(next, d.join("crl.pem")).unwrap();
}

/// Requests of every kind the dashboard shows: allowed, denied, no route, rate limited, DLP
/// blocked and unscanned, a dead upstream, bearer tokens, refused handshakes, connections
/// over the per-source cap and cut by the handshake timeout; a reload and a CRL re-read.
fn traffic(pki: &Pki, gw: &Gateway) {
    let port = gw.port;
    let frontend = pki.client(Some("frontend"));
    let other = pki.client(Some("other"));
    for _ in 0..3 {
        assert_eq!(frontend.get(port, "/api/x").unwrap().status, 200);
    }
    assert_eq!(other.get(port, "/api/x").unwrap().status, 403);
    assert_eq!(frontend.get(port, "/nowhere").unwrap().status, 404);
    let statuses: Vec<u16> = (0..4)
        .map(|_| frontend.get(port, "/noisy/x").unwrap().status)
        .collect();
    assert!(statuses.contains(&429), "{statuses:?}");
    let card = br#"{"note":"pay with 4111 1111 1111 1111 today"}"#;
    let blocked = frontend
        .connect(port)
        .unwrap()
        .send(
            "POST",
            "/api/pay",
            &[
                ("content-type", "application/json"),
                ("content-length", &card.len().to_string()),
            ],
            card,
        )
        .unwrap();
    assert_eq!(blocked.status, 403);
    let big = vec![b'a'; 5000];
    let unscanned = frontend
        .connect(port)
        .unwrap()
        .send(
            "POST",
            "/api/big",
            &[
                ("content-type", "text/plain"),
                ("content-length", &big.len().to_string()),
            ],
            &big,
        )
        .unwrap();
    assert_eq!(unscanned.status, 200);
    let gone = frontend.get(port, "/gone/x").unwrap().status;
    assert!(gone >= 500, "{gone}");
    let token = frontend
        .connect(port)
        .unwrap()
        .request(
            "GET",
            "/token/x",
            &[("authorization", "Bearer not.a.token")],
        )
        .unwrap();
    assert!(token.status >= 400, "{}", token.status);
    for refused in ["rogue", "expired"] {
        assert!(pki.client(Some(refused)).get(port, "/api/x").is_err());
    }
    // Over the per-source cap (8) from an address of its own; all cut by the handshake
    // timeout (1 s).
    let idle: Vec<_> = (0..10)
        .filter_map(|_| tcp_from([127, 0, 0, 9], port).ok())
        .collect();
    gw.reload(&std::fs::read_to_string(&gw.config).unwrap(), "success");
    write_crl(pki.dir.path());
    for (sample, what) in [
        (
            r#"portcullis_crl_loads_total{listener="public",result="success"}"#,
            "CRL re-read",
        ),
        (
            r#"portcullis_connection_timeouts_total{listener="public",timeout="handshake"}"#,
            "handshake timeout",
        ),
        (
            r#"portcullis_connections_refused_total{listener="public",reason="source_full"}"#,
            "connection over the per-source cap",
        ),
        (r#"portcullis_oidc_key_fetches_total{issuer=""#, "key fetch"),
    ] {
        let start = Instant::now();
        while !gw.metrics().contains(sample) {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "no {what}:\n{}\n{}",
                gw.metrics(),
                gw.proc.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    drop(idle);
}

#[test]
fn every_dashboard_query_and_alert_expression_names_what_a_running_gateway_exports() {
    let started = Instant::now();
    let pki = Pki::new();
    let d = pki.dir.path();
    write_crl(d);
    let echo = Echo::start(d, "observability");
    let dead = free_port();
    let gw = Gateway::start(
        d,
        &CONFIG
            .replace("{echo}", &echo.port.to_string())
            .replace("{dead}", &dead.to_string()),
    );
    traffic(&pki, &gw);
    let prometheus = Prometheus::start(d, gw.metrics_port);

    let text = gw.metrics();
    let exported = exported(&text);
    let declared = declared();
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(deploy().join("portcullis-dashboard.json")).unwrap(),
    )
    .unwrap();
    let rules = std::fs::read_to_string(deploy().join("alerts.yml")).unwrap();
    let mut all = dashboard_queries(&dash);
    let on_dashboard = all.len();
    let alerts = alert_exprs(&rules);
    assert_eq!(
        alerts.len(),
        alert_names(&rules).len(),
        "an expr per alert: {alerts:?}"
    );
    all.extend(alerts.into_iter().map(|(a, e)| (format!("alert {a}"), e)));
    assert!(all.len() > 60, "{} expressions", all.len());

    let mut problems = Vec::new();
    let mut with_data = 0;
    let mut source_only = BTreeSet::new();
    for (k, (what, expr)) in all.iter().enumerate() {
        let expr = substitute(expr);
        let answer = prometheus.query(&expr);
        if answer["status"] != "success" {
            problems.push(format!("{what}: {expr}\n  prometheus: {}", answer["error"]));
            continue;
        }
        if k < on_dashboard
            && answer["data"]["result"]
                .as_array()
                .is_some_and(|r| !r.is_empty())
        {
            with_data += 1;
        }
        let n = names(&expr);
        assert!(!n.metrics.is_empty(), "{what} names no metric: {expr}");
        let mut carried: BTreeSet<String> = TARGET_LABELS.iter().map(|l| l.to_string()).collect();
        for (metric, matched) in &n.metrics {
            if SYNTHETIC_METRICS.contains(&metric.as_str()) {
                continue;
            }
            let labels = if let Some(labels) = exported.get(metric) {
                labels.clone()
            } else {
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| metric.strip_suffix(s))
                    .unwrap_or(metric);
                match (
                    declared.get(base),
                    NOT_EXERCISED.iter().any(|(m, _)| *m == base),
                ) {
                    (Some(labels), true) => {
                        source_only.insert(base.to_owned());
                        let mut labels = labels.clone();
                        if metric.ends_with("_bucket") {
                            labels.insert("le".to_owned());
                        }
                        labels
                    }
                    (Some(_), false) => {
                        problems.push(format!(
                            "{what}: {metric} is declared but has no series in this test's \
                             scrape (exercise it, or list it in NOT_EXERCISED)"
                        ));
                        continue;
                    }
                    (None, _) => {
                        problems.push(format!(
                            "{what}: the gateway does not export {metric}: {expr}"
                        ));
                        continue;
                    }
                }
            };
            for l in matched {
                if !labels.contains(l) && !TARGET_LABELS.contains(&l.as_str()) {
                    problems.push(format!(
                        "{what}: {metric} has no label {l:?} (it has {labels:?}): {expr}"
                    ));
                }
            }
            carried.extend(labels);
        }
        for l in &n.grouping {
            if !carried.contains(l) {
                problems.push(format!(
                    "{what}: no metric of the expression has the label {l:?} it groups by: {expr}"
                ));
            }
        }
    }

    // The rules loaded, and each evaluates without error in Prometheus itself.
    let loaded = prom_get(prometheus.port, "/api/v1/rules");
    let mut evaluated = 0;
    for group in loaded["data"]["groups"].as_array().into_iter().flatten() {
        for rule in group["rules"].as_array().into_iter().flatten() {
            evaluated += 1;
            if rule["health"] == "err" {
                problems.push(format!("rule {}: {}", rule["name"], rule["lastError"]));
            }
        }
    }
    assert_eq!(evaluated, alert_names(&rules).len(), "{loaded}");

    assert!(
        problems.is_empty(),
        "{} problems:\n{}\n\nexported:\n{text}",
        problems.len(),
        problems.join("\n")
    );
    // The traffic above gives most of the dashboard something to show.
    assert!(
        with_data * 3 > on_dashboard * 2,
        "only {with_data} of {on_dashboard} dashboard queries returned data"
    );
    eprintln!(
        "{} expressions evaluated ({with_data} of {on_dashboard} dashboard queries with data), \
         {evaluated} rules healthy; \
         checked against the source only: {source_only:?}; {:?}",
        all.len(),
        started.elapsed()
    );
    drop(prometheus);
}

#[test]
fn the_expression_scanner_finds_metrics_matchers_and_grouping_labels() {
    let n = names(
        r#"sum by (tenant, le) (rate(portcullis_request_duration_seconds_bucket{job=~"a|b",le!="+Inf"}[5m])) / on() group_left sum(portcullis_requests_total{decision="x{y}"}) unless up == 0"#,
    );
    assert_eq!(
        n.metrics.keys().collect::<Vec<_>>(),
        [
            "portcullis_request_duration_seconds_bucket",
            "portcullis_requests_total",
            "up"
        ]
    );
    assert_eq!(
        n.metrics["portcullis_request_duration_seconds_bucket"],
        BTreeSet::from(["job".to_owned(), "le".to_owned()])
    );
    assert_eq!(
        n.metrics["portcullis_requests_total"],
        BTreeSet::from(["decision".to_owned()])
    );
    assert_eq!(
        n.grouping,
        BTreeSet::from(["tenant".to_owned(), "le".to_owned()])
    );
    let e = exported("# HELP x\nportcullis_a{b=\"c,d=\\\"e\",f=\"g\"} 1\nportcullis_h 2\n");
    assert_eq!(
        e["portcullis_a"],
        BTreeSet::from(["b".to_owned(), "f".to_owned()])
    );
    assert!(e["portcullis_h"].is_empty());
    let declared = declared();
    assert_eq!(
        declared["portcullis_requests_total"],
        BTreeSet::from(["tenant", "route", "status_class", "decision"].map(str::to_owned))
    );
    assert!(declared["portcullis_audit_healthy"].is_empty());
    assert_eq!(
        substitute(r#"rate(x{tenant=~"$tenant",job=~"${job}"}[$__rate_interval])"#),
        r#"rate(x{tenant=~".*",job=~".*"}[15s])"#
    );
}
