//! DLP on the data path: blocking across chunk boundaries, redaction that keeps bodies valid,
//! compressed bodies and decompression bombs, and findings counted but never written.

use std::io::Write;
use std::time::Duration;

use crate::harness::*;

const CARD: &str = "4111 1111 1111 1111";
const CARD_DIGITS: &str = "4111111111111111";

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
  - name: shop
    dlp:
      request: { card_number: block, us_ssn: redact, aws_access_key_id: record }
      response: { card_number: redact }
    body_inspection: { max_bytes: 65536, over_limit: pass, max_decompressed_bytes: 1048576, max_ratio: 50 }
    routes:
      - name: api
        path_prefix: /
        upstream: echo
        access: [ { id: anyone } ]
      - name: mirror
        path_prefix: /mirror
        upstream: echo
        dlp:
          response: { card_number: redact }
        access: [ { id: mirror-anyone } ]
"#;

fn start() -> (Pki, Echo, Gateway) {
    let pki = Pki::new();
    let echo = Echo::start(pki.dir.path(), "dlp");
    let gw = Gateway::start(
        pki.dir.path(),
        &CONFIG.replace("{echo}", &echo.port.to_string()),
    );
    (pki, echo, gw)
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

#[test]
fn a_card_number_split_across_chunks_is_blocked() {
    let (pki, _echo, gw) = start();
    let mut conn = pki.client(Some("frontend")).connect(gw.port).unwrap();
    let body = format!(r#"{{"note":"pay with {CARD} today"}}"#);
    let split = body.find("1111 1111").unwrap();
    let (a, b) = body.as_bytes().split_at(split);
    let resp = conn
        .send_chunked(
            "POST",
            "/pay",
            &[("content-type", "application/json")],
            &[a, b],
            Duration::from_millis(150),
        )
        .unwrap();
    assert_eq!(resp.status, 403);
    assert_eq!(resp.json()["error"], "dlp_blocked");
    // A card-like number that fails Luhn passes.
    let mut conn = pki.client(Some("frontend")).connect(gw.port).unwrap();
    let ok = br#"{"order":"4111 1111 1111 1112"}"#;
    let resp = conn
        .send(
            "POST",
            "/pay",
            &[
                ("content-type", "application/json"),
                ("content-length", &ok.len().to_string()),
            ],
            ok,
        )
        .unwrap();
    assert_eq!(resp.status, 200);
    // The finding is counted; the number is written nowhere.
    let sample = r#"portcullis_dlp_findings_total{action="block",detector="card_number",direction="request",tenant="shop"}"#;
    let m = gw.wait_metric(sample, 1.0);
    let log = gw.proc.log_text();
    assert_eq!(metric_value(&m, sample), 1.0, "{m}");
    assert!(log.contains("request:card_number:block:1"), "{log}");
    assert!(
        !log.contains(CARD_DIGITS) && !log.contains("1111 1111"),
        "matched data leaked into the log"
    );
}

#[test]
fn request_redaction_reaches_the_upstream_and_stays_json() {
    let (pki, _echo, gw) = start();
    let mut conn = pki.client(Some("frontend")).connect(gw.port).unwrap();
    let body = br#"{"ssn":"123-45-6789","key":"AKIAIOSFODNN7EXAMPLE"}"#;
    let resp = conn
        .send(
            "POST",
            "/form",
            &[
                ("content-type", "application/json"),
                ("content-length", &body.len().to_string()),
            ],
            body,
        )
        .unwrap();
    assert_eq!(resp.status, 200);
    let doc = resp.json();
    let forwarded: serde_json::Value = serde_json::from_str(doc["body"].as_str().unwrap()).unwrap();
    assert_eq!(forwarded["ssn"], "[REDACTED:us_ssn]");
    // Recorded, not changed.
    assert_eq!(forwarded["key"], "AKIAIOSFODNN7EXAMPLE");
    // The length changed, so it went upstream chunked, not with the old Content-Length.
    assert!(doc["headers"]["content-length"].is_null(), "{doc}");
}

#[test]
fn response_redaction_keeps_valid_json() {
    let (pki, _echo, gw) = start();
    // /mirror scans only responses; the echo sends the request body back as its response.
    let body = format!(r#"{{"items":[{{"card":"{CARD}","qty":1}}],"total":"12.00"}}"#);
    let len = body.len().to_string();
    for encoding in [None, Some("gzip")] {
        let payload = match encoding {
            None => body.clone().into_bytes(),
            Some(_) => gzip(body.as_bytes()),
        };
        let len_header = payload.len().to_string();
        let mut headers = vec![
            ("content-type", "application/json"),
            ("x-echo-body", "1"),
            ("content-length", len_header.as_str()),
        ];
        if let Some(enc) = encoding {
            headers.push(("x-echo-content-encoding", enc));
        }
        let mut conn = pki.client(Some("frontend")).connect(gw.port).unwrap();
        let resp = conn.send("POST", "/mirror", &headers, &payload).unwrap();
        assert_eq!(resp.status, 200);
        let doc = resp.json();
        assert_eq!(
            doc["items"][0]["card"], "[REDACTED:card_number]",
            "{encoding:?}"
        );
        assert_eq!(doc["total"], "12.00");
        assert!(
            resp.header("content-encoding").is_none(),
            "forwarded decoded"
        );
        assert_ne!(resp.header("content-length"), Some(len.as_str()));
    }
}

#[test]
fn gzip_bombs_are_refused_not_expanded() {
    let (pki, _echo, gw) = start();
    let bomb = gzip(&vec![b'a'; 8 << 20]);
    assert!(bomb.len() < 64 * 1024);
    let mut conn = pki.client(Some("frontend")).connect(gw.port).unwrap();
    let resp = conn
        .send(
            "POST",
            "/upload",
            &[
                ("content-type", "text/plain"),
                ("content-encoding", "gzip"),
                ("content-length", &bomb.len().to_string()),
            ],
            &bomb,
        )
        .unwrap();
    assert_eq!(resp.status, 413);
    // A modest gzip body is decoded, scanned and forwarded decoded.
    let text = b"hello, nothing sensitive here\n".repeat(100);
    let small = gzip(&text);
    let mut conn = pki.client(Some("frontend")).connect(gw.port).unwrap();
    let resp = conn
        .send(
            "POST",
            "/upload",
            &[
                ("content-type", "text/plain"),
                ("content-encoding", "gzip"),
                ("content-length", &small.len().to_string()),
            ],
            &small,
        )
        .unwrap();
    assert_eq!(resp.status, 200);
    let doc = resp.json();
    assert_eq!(doc["body_bytes"], text.len());
    assert!(doc["headers"]["content-encoding"].is_null());
}
