//! `policy explain` and the gateway run the same admission step: a table of requests, each
//! explained and then sent, must get the same decision, rule, status and error code.

use std::process::Command;

use crate::harness::*;

const CONFIG: &str = r#"
listeners:
  - name: public
    address: 127.0.0.1:{port}
    tls: { certificate: server.pem, private_key: server.key, client_auth: required, client_ca: ca.pem }
metrics:
  address: 127.0.0.1:{metrics}
upstreams:
  - name: echo
    targets: [127.0.0.1:{echo}]
tenants:
  - name: acme
    limits:
      max_request_body: 100
    dlp: { request: { us_ssn: block } }
    body_inspection: { over_limit: refuse }
    routes:
      - name: api
        path_prefix: /api
        upstream: echo
        access:
          - id: no-secrets
            effect: deny
            path_prefix: [/api/secrets]
          - id: frontend
            spiffe_id: [spiffe://test.portcullis.local/ns/app/sa/frontend]
          - id: prod-only
            headers: { x-env: [prod] }
  - name: open
    routes:
      - name: public
        path_prefix: /public
        upstream: echo
        access: [ { id: anyone } ]
"#;

/// One row: who sends what, with which headers and body.
struct Row {
    client: &'static str,
    method: &'static str,
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
    body: &'static [u8],
}

const ROWS: &[Row] = &[
    Row {
        client: "frontend",
        method: "GET",
        path: "/api/orders",
        headers: &[],
        body: b"",
    },
    Row {
        client: "other",
        method: "GET",
        path: "/api/orders",
        headers: &[],
        body: b"",
    },
    Row {
        client: "other",
        method: "GET",
        path: "/api/orders",
        headers: &[("x-env", "prod")],
        body: b"",
    },
    Row {
        client: "frontend",
        method: "GET",
        path: "/api/secrets/key",
        headers: &[],
        body: b"",
    },
    Row {
        client: "frontend",
        method: "GET",
        path: "/api/x/../secrets/key",
        headers: &[],
        body: b"",
    },
    Row {
        client: "frontend",
        method: "GET",
        path: "/api/../public/x",
        headers: &[],
        body: b"",
    },
    Row {
        client: "frontend",
        method: "GET",
        path: "/nowhere",
        headers: &[],
        body: b"",
    },
    Row {
        client: "frontend",
        method: "GET",
        path: "/api/a%2Fb",
        headers: &[],
        body: b"",
    },
    Row {
        client: "frontend",
        method: "POST",
        path: "/api/upload",
        headers: &[("content-length", "150")],
        body: &[b'a'; 150],
    },
    Row {
        client: "frontend",
        method: "POST",
        path: "/api/upload",
        // br is decoded now; `compress` is a coding the gateway cannot read: 415 either way.
        headers: &[("content-length", "5"), ("content-encoding", "compress")],
        body: b"abcde",
    },
    Row {
        client: "frontend",
        method: "POST",
        path: "/api/upload",
        headers: &[("content-length", "5"), ("content-type", "text/plain")],
        body: b"hello",
    },
];

fn spiffe_id(client: &str) -> String {
    format!("spiffe://test.portcullis.local/ns/app/sa/{client}")
}

fn explain(config: &std::path::Path, row: &Row) -> serde_json::Value {
    let mut cmd = Command::new(bin());
    cmd.args(["policy", "explain", "--json", "--config"])
        .arg(config)
        .args(["--identity", &spiffe_id(row.client)])
        .args([
            "--method",
            row.method,
            "--host",
            "localhost",
            "--path",
            row.path,
        ]);
    if row.client == "frontend" {
        cmd.args(["--dns-san", "frontend.test"]);
    }
    for (name, value) in row.headers {
        cmd.args(["--header", &format!("{name}={value}")]);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn explain_and_the_gateway_agree_on_a_table_of_requests() {
    let pki = Pki::new();
    let echo = Echo::start(pki.dir.path(), "x");
    let gw = Gateway::start(
        pki.dir.path(),
        &CONFIG.replace("{echo}", &echo.port.to_string()),
    );
    let mut seen = std::collections::BTreeSet::new();
    for row in ROWS {
        let what = format!(
            "{} {} {} {:?}",
            row.client, row.method, row.path, row.headers
        );
        let explained = explain(&gw.config, row);
        let mut conn = pki.client(Some(row.client)).connect(gw.port).unwrap();
        let resp = conn
            .send(row.method, row.path, row.headers, row.body)
            .unwrap();
        let decision = explained["decision"].as_str().unwrap().to_owned();
        if decision == "allow" {
            assert_eq!(resp.status, 200, "{what}: explained {explained}");
        } else {
            assert_eq!(
                resp.status, explained["status"],
                "{what}: explained {explained}"
            );
            assert_eq!(resp.json()["error"], explained["error"], "{what}");
        }
        // The gateway's access line states the same decision and rule.
        let id = resp.header("x-request-id").unwrap().to_owned();
        let line = wait_for_access_line(&gw, &id);
        assert_eq!(line["authz.decision"], decision, "{what}: {line}");
        let rule = explained["rule"].as_str().unwrap_or("-");
        assert_eq!(line["authz.rule"], rule, "{what}: {line}");
        seen.insert(decision);
    }
    // The table covers every kind of admission outcome.
    for kind in [
        "allow",
        "deny",
        "no_route",
        "invalid",
        "too_large",
        "dlp_refused",
    ] {
        assert!(seen.contains(kind), "no row for {kind}: {seen:?}");
    }
}

fn wait_for_access_line(gw: &Gateway, request_id: &str) -> serde_json::Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let found = gw
            .proc
            .log_text()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|l| l["request.id"] == request_id);
        if let Some(line) = found {
            return line;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no access line for {request_id}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
