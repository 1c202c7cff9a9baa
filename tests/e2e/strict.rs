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
