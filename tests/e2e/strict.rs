//! The edge reads requests strictly: heads an upstream could read differently from the gateway
//! are refused (and the connection closed), and headers a caller could forge never reach the
//! upstream. Every case is sent as an attacker would, over a real mTLS connection.

use crate::harness::*;
use crate::proxy::base_config;

fn start() -> (Pki, Echo, Gateway) {
    let pki = Pki::new();
    let echo = Echo::start(pki.dir.path(), "strict");
    let gw = Gateway::start(pki.dir.path(), &base_config(echo.port));
    (pki, echo, gw)
}

#[test]
fn ambiguous_request_heads_get_400_or_431_and_the_connection_closes() {
    let (pki, _echo, gw) = start();
    let big = format!("X-Big: {}\r\n", "a".repeat(20_000));
    let many: String = (0..40)
        .map(|i| format!("X-Pad-{i}: {}\r\n", "b".repeat(1000)))
        .collect();
    let cases: Vec<(&str, String, u16)> = vec![
        (
            "Content-Length with Transfer-Encoding",
            "POST /public/x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".into(),
            400,
        ),
        ("one header line over 8 KiB", format!("GET /public/x HTTP/1.1\r\nHost: localhost\r\n{big}\r\n"), 431),
        ("a head over 32 KiB", format!("GET /public/x HTTP/1.1\r\nHost: localhost\r\n{many}\r\n"), 431),
        ("path parameters to traverse", "GET /public/..;/admin HTTP/1.1\r\nHost: localhost\r\n\r\n".into(), 400),
        ("double-encoded dots", "GET /public/%252e%252e/admin HTTP/1.1\r\nHost: localhost\r\n\r\n".into(), 400),
        ("overlong UTF-8 dots", "GET /public/%c0%ae%c0%ae/admin HTTP/1.1\r\nHost: localhost\r\n\r\n".into(), 400),
        ("a lower-case standard method", "delete /admin/x HTTP/1.1\r\nHost: localhost\r\n\r\n".into(), 400),
        (
            "an absolute-form target naming another host",
            "GET https://admin.internal/public/x HTTP/1.1\r\nHost: localhost\r\n\r\n".into(),
            400,
        ),
        ("HTTP/1.1 without Host", "GET /public/x HTTP/1.1\r\n\r\n".into(), 400),
    ];
    for (what, head, status) in cases {
        let mut conn = pki.client(Some("other")).connect(gw.port).unwrap();
        let resp = conn.send_raw(head.as_bytes()).unwrap();
        assert_eq!(
            resp.status,
            status,
            "{what}: {}",
            String::from_utf8_lossy(&resp.body)
        );
        assert!(conn.closed_by_server(), "{what}: the connection stays open");
    }
    // The same connection still works for a well-formed request, and an absolute-form target
    // that agrees with Host is fine.
    let mut conn = pki.client(Some("other")).connect(gw.port).unwrap();
    let ok = conn
        .send_raw(b"GET https://localhost/public/x HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    assert_eq!(ok.status, 200);
    assert_eq!(conn.request("GET", "/public/y", &[]).unwrap().status, 200);
}

#[test]
fn forgeable_headers_never_reach_the_upstream() {
    let (pki, _echo, gw) = start();
    let forged = [
        ("X-Forwarded-Host", "admin.internal"),
        ("X-Forwarded-Port", "8080"),
        ("X-Forwarded-Prefix", "/admin"),
        ("X-Original-URL", "/admin/x"),
        ("X-Rewrite-URL", "/admin/x"),
        ("X-HTTP-Method-Override", "DELETE"),
        ("True-Client-IP", "10.0.0.1"),
        ("X-Client-IP", "10.0.0.1"),
        ("Client-Cert", ":MIIBforged:"),
        ("Client-Cert-Chain", ":MIIBforged:"),
        ("X-SSL-Client-S-DN", "CN=admin"),
        ("X-SSL-Client-Verify", "SUCCESS"),
    ];
    let resp = pki
        .client(Some("other"))
        .connect(gw.port)
        .unwrap()
        .request("GET", "/public/x", &forged)
        .unwrap();
    assert_eq!(resp.status, 200);
    let doc = resp.json();
    for (name, _) in forged {
        let name = name.to_ascii_lowercase();
        assert!(
            doc["headers"][&name].is_null(),
            "{name} reached the upstream"
        );
    }
}

/// curl over HTTP/2 with extra arguments: (status, body).
fn h2(pki: &Pki, port: u16, args: &[&str], path: &str) -> (u16, String) {
    let out = curl_as(pki, "other")
        .args(["-sS", "--http2", "--path-as-is", "--max-time", "10"])
        .args(args)
        .args(["-w", "\n%{http_version} %{http_code}"])
        .arg(format!("https://localhost:{port}{path}"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, tail) = text.rsplit_once('\n').unwrap_or(("", &text));
    let mut parts = tail.split_whitespace();
    assert_eq!(parts.next(), Some("2"), "not HTTP/2: {text}");
    let status = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, body.to_owned())
}

/// The same attacks over HTTP/2, where the head arrives as HPACK fields rather than text.
#[test]
fn over_http2_the_same_paths_methods_and_forged_headers_are_refused_or_stripped() {
    let (pki, _echo, gw) = start();
    for path in [
        "/public/..;/admin",
        "/public/%252e%252e/admin",
        "/public/%c0%ae%c0%ae/admin",
        "/admin;x",
    ] {
        let (status, body) = h2(&pki, gw.port, &[], path);
        assert_eq!(status, 400, "{path}: {body}");
    }
    let (status, _) = h2(&pki, gw.port, &["-X", "delete"], "/admin/x");
    assert_eq!(status, 400, "lower-case method over HTTP/2");
    let forged = [
        "X-Original-URL: /admin/x",
        "X-Forwarded-Host: admin.internal",
        "X-HTTP-Method-Override: DELETE",
        "Client-Cert: :MIIBforged:",
        "X-SSL-Client-S-DN: CN=admin",
        "X-Portcullis-SPIFFE-ID: spiffe://test.portcullis.local/ns/app/sa/frontend",
    ];
    let mut args = Vec::new();
    for h in forged {
        args.extend(["-H", h]);
    }
    let (status, body) = h2(&pki, gw.port, &args, "/public/x");
    assert_eq!(status, 200, "{body}");
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    for h in forged {
        let name = h.split(':').next().unwrap().to_ascii_lowercase();
        let sent = &doc["headers"][&name];
        if name == "x-portcullis-spiffe-id" {
            // Replaced by the caller's real identity, never the forged one.
            assert_eq!(
                sent,
                &serde_json::json!(["spiffe://test.portcullis.local/ns/app/sa/other"]),
                "{body}"
            );
        } else {
            assert!(
                sent.is_null(),
                "{name} reached the upstream over HTTP/2: {body}"
            );
        }
    }
}

/// Header conditions judged as an attacker sends headers: a duplicate value or an obs-text
/// value never gets a caller past a deny rule or into an allow rule, over HTTP/1.1 or HTTP/2.
#[test]
fn duplicate_and_unreadable_header_values_never_help_a_caller() {
    let pki = Pki::new();
    let echo = Echo::start(pki.dir.path(), "hdr");
    let yaml = base_config(echo.port).replacen(
        "          - id: anyone\n",
        "          - id: no-debug\n            effect: deny\n            headers: { x-debug: [\"*\"] }\n          - id: prod-only\n            headers: { x-env: [prod] }\n",
        1,
    );
    let gw = Gateway::start(pki.dir.path(), &yaml);
    let send = |head: &[u8]| {
        let mut conn = pki.client(Some("other")).connect(gw.port).unwrap();
        conn.send_raw(head).unwrap().status
    };
    let base = "GET /public/x HTTP/1.1\r\nHost: localhost\r\n";
    assert_eq!(send(format!("{base}X-Env: prod\r\n\r\n").as_bytes()), 200);
    assert_eq!(
        send(format!("{base}X-Env: prod\r\nX-Env: dev\r\n\r\n").as_bytes()),
        403
    );
    assert_eq!(
        send(format!("{base}X-Env: prod\r\nX-Debug: 1\r\n\r\n").as_bytes()),
        403
    );
    let mut obs = format!("{base}X-Env: prod\r\nX-Debug: ").into_bytes();
    obs.extend_from_slice(b"\xff\xfe\r\n\r\n");
    assert_eq!(
        send(&obs),
        403,
        "an unreadable value still matches the deny rule"
    );
    let mut obs_allow = format!("{base}X-Env: prod\r\nX-Env: ").into_bytes();
    obs_allow.extend_from_slice(b"\xff\r\n\r\n");
    assert_eq!(
        send(&obs_allow),
        403,
        "an unreadable value never satisfies an allow rule"
    );

    let (status, _) = h2(
        &pki,
        gw.port,
        &["-H", "x-env: prod", "-H", "x-env: dev"],
        "/public/x",
    );
    assert_eq!(status, 403, "duplicate over HTTP/2");
    let (status, _) = h2(
        &pki,
        gw.port,
        &["-H", "x-env: prod", "-H", "x-debug: 0"],
        "/public/x",
    );
    assert_eq!(status, 403, "deny header over HTTP/2");
    let (status, _) = h2(&pki, gw.port, &["-H", "x-env: prod"], "/public/x");
    assert_eq!(status, 200);
}
