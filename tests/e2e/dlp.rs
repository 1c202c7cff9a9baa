//! DLP on the data path: blocking across chunk boundaries, redaction that keeps bodies valid,
//! compressed bodies and decompression bombs, and findings counted but never written; the same
//! PII refused whatever its framing, label or encoding; responses scanned whatever the client
//! asks for; upgrades, over-limit bodies and ambiguous headers refused.

use std::io::Write;
use std::process::{Command, Stdio};
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
  - name: vault
    dlp:
      request: { us_ssn: block, card_number: block }
      response: { us_ssn: block, card_number: block }
    body_inspection: { max_bytes: 4096 }
    routes:
      - name: store
        path_prefix: /vault
        upstream: echo
        access: [ { id: vault-anyone } ]
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
    let body = format!(r#"{{"note":"pay with {CARD} today"}}"#);
    let split = body.find("1111 1111").unwrap();
    let (a, b) = body.as_bytes().split_at(split);
    // A refusal made while the client is still writing can be lost to a reset on a loaded
    // machine (a known issue, in the README): the client then tries again; what it must
    // never get is anything but the refusal.
    let resp = (0..3)
        .find_map(|_| {
            let mut conn = pki.client(Some("frontend")).connect(gw.port).ok()?;
            conn.send_chunked(
                "POST",
                "/pay",
                &[("content-type", "application/json")],
                &[a, b],
                Duration::from_millis(150),
            )
            .ok()
        })
        .expect("no answer in three tries");
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
    // At least once: a try whose answer was lost was blocked and counted too.
    assert!(metric_value(&m, sample) >= 1.0, "{m}");
    let log = gw.wait_for_line(|l| l.contains("request:card_number:block:1"));
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

/// The PII every shape below carries: an SSN and a Luhn-valid card number.
const PII: &str = r#"{"customer":{"ssn":"123-45-6789","card":"4111 1111 1111 1111"}}"#;

fn brotli(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
        w.write_all(data).unwrap();
    }
    out
}

fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).unwrap()
}

/// POSTs `body` over HTTP/2 from curl's standard input (`-T -`): DATA frames, no length.
/// Returns the HTTP version (followed by curl's error, if any, so a failure shows it) and status.
fn curl_h2_stream(
    pki: &Pki,
    port: u16,
    path: &str,
    headers: &[&str],
    body: &[u8],
) -> (String, u16) {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "--http2",
        "--max-time",
        "10",
        "-X",
        "POST",
        "-T",
        "-",
        "-o",
        "/dev/null",
    ])
    .arg("--cacert")
    .arg(pki.path("ca.pem"))
    .arg("--cert")
    .arg(pki.path("frontend.pem"))
    .arg("--key")
    .arg(pki.path("frontend.key"))
    .args(["-w", "%{http_version} %{http_code}"]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    let mut child = cmd
        .arg(format!("https://localhost:{port}{path}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // curl may stop reading its input once the gateway has answered.
    let _ = child.stdin.take().unwrap().write_all(body);
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut parts = text.split_whitespace();
    let version = format!(
        "{}{}",
        parts.next().unwrap_or(""),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    (
        version,
        parts.next().and_then(|s| s.parse().ok()).unwrap_or(0),
    )
}

/// One way of sending the PII: (what, content type, content encoding, body, expected status,
/// expected error code).
type Shape = (
    &'static str,
    &'static str,
    Option<&'static str>,
    Vec<u8>,
    u16,
    &'static str,
);

#[test]
fn the_same_pii_is_refused_whatever_its_framing_label_or_encoding() {
    let (pki, _echo, gw) = start();
    let json = PII.as_bytes();
    let escaped = r#"{"customer":{"ssn":"\u0031\u0032\u0033-45-6789","card":"4111\u00201111\/"}}"#
        .replace("\\/", " 1111 1111");
    let multipart = format!(
        "--XyZ\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n\
         --XyZ\r\nContent-Disposition: form-data; name=\"doc\"; filename=\"c.json\"\r\n\
         Content-Type: application/json\r\n\r\n{PII}\r\n--XyZ--\r\n"
    );
    // (what, content type, content encoding, body, expected status, expected code)
    let cases: Vec<Shape> = vec![
        (
            "content-length",
            "application/json",
            None,
            json.to_vec(),
            403,
            "dlp_blocked",
        ),
        (
            "octet-stream",
            "application/octet-stream",
            None,
            json.to_vec(),
            403,
            "dlp_blocked",
        ),
        (
            "no content type",
            "",
            None,
            json.to_vec(),
            403,
            "dlp_blocked",
        ),
        (
            "multipart",
            "multipart/form-data; boundary=XyZ",
            None,
            multipart.into_bytes(),
            403,
            "dlp_blocked",
        ),
        (
            "gzip",
            "application/json",
            Some("gzip"),
            gzip(json),
            403,
            "dlp_blocked",
        ),
        (
            "br",
            "application/json",
            Some("br"),
            brotli(json),
            403,
            "dlp_blocked",
        ),
        (
            "zstd",
            "application/json",
            Some("zstd"),
            zstd(json),
            403,
            "dlp_blocked",
        ),
        (
            "gzip, br",
            "application/json",
            Some("gzip, br"),
            brotli(&gzip(json)),
            403,
            "dlp_blocked",
        ),
        (
            "fake br label",
            "text/plain",
            Some("br"),
            json.to_vec(),
            415,
            "undecodable_body",
        ),
        (
            "unknown coding",
            "text/plain",
            Some("compress"),
            json.to_vec(),
            415,
            "uninspectable_body",
        ),
        (
            "json escapes",
            "application/json",
            None,
            escaped.clone().into_bytes(),
            403,
            "dlp_blocked",
        ),
    ];
    for (what, content_type, encoding, body, status, code) in &cases {
        let len = body.len().to_string();
        let mut headers = vec![("content-length", len.as_str())];
        if !content_type.is_empty() {
            headers.push(("content-type", *content_type));
        }
        if let Some(enc) = encoding {
            headers.push(("content-encoding", *enc));
        }
        let mut conn = pki.client(Some("frontend")).connect(gw.port).unwrap();
        let resp = conn.send("POST", "/vault/in", &headers, body).unwrap();
        assert_eq!(
            (resp.status, resp.json()["error"].as_str()),
            (*status, Some(*code)),
            "{what}"
        );
        // Chunked, in 16-byte chunks, written at once: the gateway reads all of it before it
        // answers, so its refusal is not lost to a reset.
        headers[0] = ("transfer-encoding", "chunked");
        let mut chunked = Vec::new();
        for piece in body.chunks(16) {
            chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            chunked.extend_from_slice(piece);
            chunked.extend_from_slice(b"\r\n");
        }
        chunked.extend_from_slice(b"0\r\n\r\n");
        let mut conn = pki.client(Some("frontend")).connect(gw.port).unwrap();
        let resp = conn.send("POST", "/vault/in", &headers, &chunked).unwrap();
        assert_eq!(resp.status, *status, "{what}, chunked");
    }
    // HTTP/2 DATA frames without a Content-Length.
    for (what, content_type, encoding, body, status, _) in &cases {
        let mut headers = vec![format!("content-type: {content_type}")];
        if let Some(enc) = encoding {
            headers.push(format!("content-encoding: {enc}"));
        }
        let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
        let (version, got) = curl_h2_stream(&pki, gw.port, "/vault/in", &headers, body);
        // Refused while curl is still sending: the answer is the refusal, except that on a
        // loaded machine the stream is now and then reset before curl reads it (a known
        // issue, in the README). Never anything that passed.
        // (curl then prints no status, only its error: an empty reply or a reset stream.)
        let reset = got == 0 && version.contains("curl:");
        assert!(
            (version.as_str(), got) == ("2", *status) || reset,
            "{what}, HTTP/2 without length: {version} {got}"
        );
    }
    // The same route forwards what is clean, over HTTP/2 without a length too.
    let (_, ok) = curl_h2_stream(
        &pki,
        gw.port,
        "/vault/in",
        &["content-type: application/json"],
        b"{\"ok\":1}",
    );
    assert_eq!(ok, 200);
    let log = gw.proc.log_text();
    assert!(
        !log.contains("123-45-6789") && !log.contains("4111 1111"),
        "matched data leaked"
    );
}

#[test]
fn a_response_asked_for_in_br_is_still_scanned() {
    let (pki, _echo, gw) = start();
    let body = format!(r#"{{"items":[{{"card":"{CARD}"}}]}}"#);
    for (encoding, payload) in [
        ("br", brotli(body.as_bytes())),
        ("zstd", zstd(body.as_bytes())),
    ] {
        let len = payload.len().to_string();
        let headers = [
            ("content-type", "application/json"),
            ("accept-encoding", encoding),
            ("x-echo-body", "1"),
            ("x-echo-content-encoding", encoding),
            ("content-length", len.as_str()),
        ];
        let mut conn = pki.client(Some("frontend")).connect(gw.port).unwrap();
        let resp = conn.send("POST", "/mirror", &headers, &payload).unwrap();
        assert_eq!(resp.status, 200, "{encoding}");
        assert_eq!(
            resp.json()["items"][0]["card"],
            "[REDACTED:card_number]",
            "{encoding}"
        );
        assert!(resp.header("content-encoding").is_none());
    }
    // The upstream is asked only for what the gateway can decode.
    let mut conn = pki.client(Some("frontend")).connect(gw.port).unwrap();
    let resp = conn
        .request(
            "GET",
            "/mirror",
            &[("accept-encoding", "br;q=1, compress, sdch, zstd, gzip;q=0")],
        )
        .unwrap();
    assert_eq!(resp.json()["headers"]["accept-encoding"][0], "br, zstd");
    // An upstream that answers in a coding the gateway cannot read is refused.
    let mut conn = pki.client(Some("frontend")).connect(gw.port).unwrap();
    let headers = [
        ("content-type", "text/plain"),
        ("x-echo-body", "1"),
        ("x-echo-content-encoding", "compress"),
        ("content-length", "5"),
    ];
    let resp = conn.send("POST", "/mirror", &headers, b"hello").unwrap();
    assert_eq!(resp.status, 502);
    assert_eq!(resp.json()["error"], "uninspectable_response");
}

#[test]
fn upgrades_over_limit_bodies_and_ambiguous_headers_are_refused() {
    let (pki, _echo, gw) = start();
    let mut conn = pki.client(Some("frontend")).connect(gw.port).unwrap();
    let resp = conn
        .request(
            "GET",
            "/vault/ws",
            &[
                ("connection", "Upgrade"),
                ("upgrade", "websocket"),
                ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
                ("sec-websocket-version", "13"),
            ],
        )
        .unwrap();
    assert_eq!(
        (resp.status, resp.json()["error"].as_str()),
        (403, Some("upgrade_refused"))
    );
    // Over `max_bytes` (4096 on this tenant) with no `over_limit` said: refused.
    let big = "clean text ".repeat(1000);
    let len = big.len().to_string();
    let mut conn = pki.client(Some("frontend")).connect(gw.port).unwrap();
    let resp = conn
        .send(
            "POST",
            "/vault/in",
            &[("content-type", "text/plain"), ("content-length", &len)],
            big.as_bytes(),
        )
        .unwrap();
    assert_eq!(resp.status, 413);
    // Two Content-Encoding headers: which one the upstream reads is anyone's guess.
    let gz = gzip(b"fine");
    let len = gz.len().to_string();
    let mut conn = pki.client(Some("frontend")).connect(gw.port).unwrap();
    let resp = conn
        .send(
            "POST",
            "/vault/in",
            &[
                ("content-encoding", "gzip"),
                ("content-encoding", "br"),
                ("content-length", &len),
            ],
            &gz,
        )
        .unwrap();
    assert_eq!(
        (resp.status, resp.json()["error"].as_str()),
        (400, Some("ambiguous_body_header"))
    );
    // Where the tenant says `over_limit: pass`, the rest passes, counted and recorded.
    let big = "clean text ".repeat(7000);
    let len = big.len().to_string();
    let mut conn = pki.client(Some("frontend")).connect(gw.port).unwrap();
    let resp = conn
        .send(
            "POST",
            "/upload",
            &[("content-type", "text/plain"), ("content-length", &len)],
            big.as_bytes(),
        )
        .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["body_bytes"], big.len());
    let sample =
        r#"portcullis_dlp_unscanned_total{direction="request",reason="over_limit",tenant="shop"}"#;
    gw.wait_metric(sample, 1.0);
    gw.wait_for_line(|l| l.contains("request:unscanned:over_limit"));
}
