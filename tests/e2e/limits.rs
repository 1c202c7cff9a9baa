//! Per-tenant limits: rate limits with 429 and their headers, isolation between tenants,
//! in-flight and body-size limits.

use std::time::Duration;

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
  - name: noisy
    limits:
      rate: { requests: 5, per: 1s, burst: 5 }
    routes:
      - name: api
        path_prefix: /noisy
        upstream: echo
        access: [ { id: anyone } ]
  - name: quiet
    routes:
      - name: api
        path_prefix: /quiet
        upstream: echo
        access: [ { id: anyone } ]
  - name: careful
    limits:
      per_identity: { requests: 2, per: 1m }
    routes:
      - name: api
        path_prefix: /careful
        upstream: echo
        access: [ { id: anyone } ]
  - name: bounded
    limits:
      max_in_flight: 1
      max_request_body: 100
    routes:
      - name: api
        path_prefix: /bounded
        upstream: echo
        access: [ { id: anyone } ]
"#;

fn start() -> (Pki, Echo, Gateway) {
    let pki = Pki::new();
    let echo = Echo::start(pki.dir.path(), "lim");
    let gw = Gateway::start(
        pki.dir.path(),
        &CONFIG.replace("{echo}", &echo.port.to_string()),
    );
    (pki, echo, gw)
}

#[test]
fn a_flooding_tenant_gets_429s_while_another_keeps_being_served() {
    let (pki, _echo, gw) = start();
    let client = pki.client(Some("frontend"));
    let mut noisy = client.connect(gw.port).unwrap();
    let mut quiet = client.connect(gw.port).unwrap();
    let (mut ok, mut refused) = (0, 0);
    for _ in 0..30 {
        let resp = noisy.request("GET", "/noisy/x", &[]).unwrap();
        match resp.status {
            200 => ok += 1,
            429 => {
                refused += 1;
                let retry: u64 = resp.header("retry-after").unwrap().parse().unwrap();
                assert!((1..=1).contains(&retry), "{retry}");
                assert_eq!(resp.header("ratelimit-policy"), Some(r#""tenant";q=5;w=1"#));
                assert!(resp
                    .header("ratelimit")
                    .unwrap()
                    .starts_with(r#""tenant";r=0;t="#));
                assert_eq!(resp.json()["error"], "rate_limited");
            }
            other => panic!("unexpected {other}"),
        }
        // The other tenant is untouched by the flood.
        assert_eq!(quiet.request("GET", "/quiet/x", &[]).unwrap().status, 200);
    }
    assert!(
        (5..=8).contains(&ok),
        "burst of 5 plus what refilled meanwhile: {ok}"
    );
    assert!(refused >= 22, "{refused}");
    let sample = r#"portcullis_rate_limited_total{limit="tenant",tenant="noisy"}"#;
    let metrics = gw.wait_metric(sample, refused as f64);
    assert_eq!(metric_value(&metrics, sample), refused as f64, "{metrics}");
}

#[test]
fn per_identity_limits_count_each_caller_separately() {
    let (pki, _echo, gw) = start();
    let frontend = pki.client(Some("frontend"));
    let other = pki.client(Some("other"));
    assert_eq!(frontend.get(gw.port, "/careful/a").unwrap().status, 200);
    assert_eq!(frontend.get(gw.port, "/careful/a").unwrap().status, 200);
    let third = frontend.get(gw.port, "/careful/a").unwrap();
    assert_eq!(third.status, 429);
    assert_eq!(
        third.header("ratelimit-policy"),
        Some(r#""identity";q=2;w=60"#)
    );
    assert!(third.header("retry-after").unwrap().parse::<u64>().unwrap() >= 20);
    assert_eq!(other.get(gw.port, "/careful/a").unwrap().status, 200);
}

#[test]
fn in_flight_and_body_size_limits() {
    let (pki, _echo, gw) = start();
    let port = gw.port;
    let client = pki.client(Some("other"));
    let mut slow = client.connect(port).unwrap();
    let held = std::thread::spawn(move || {
        slow.request("GET", "/bounded/slow", &[("x-echo-delay-ms", "800")])
            .unwrap()
            .status
    });
    std::thread::sleep(Duration::from_millis(250));
    let busy = pki
        .client(Some("frontend"))
        .get(port, "/bounded/b")
        .unwrap();
    assert_eq!(busy.status, 429);
    assert_eq!(busy.header("retry-after"), Some("1"));
    assert_eq!(held.join().unwrap(), 200);

    // Declared too large: refused before anything is read or forwarded.
    let big = vec![b'a'; 200];
    let mut conn = pki.client(Some("frontend")).connect(port).unwrap();
    let resp = conn
        .send("POST", "/bounded/up", &[("content-length", "200")], &big)
        .unwrap();
    assert_eq!(resp.status, 413);
    // Chunked, so only counting while streaming can catch it.
    let mut chunked = format!("{:x}\r\n", big.len()).into_bytes();
    chunked.extend_from_slice(&big);
    chunked.extend_from_slice(b"\r\n0\r\n\r\n");
    let mut conn = pki.client(Some("frontend")).connect(port).unwrap();
    let resp = conn
        .send(
            "POST",
            "/bounded/up",
            &[("transfer-encoding", "chunked")],
            &chunked,
        )
        .unwrap();
    assert_eq!(resp.status, 413);
}

/// Multiplexing does not stretch a limit: streams on one HTTP/2 connection are charged like
/// separate requests, and a body over the cap sent without Content-Length is cut as it
/// streams.
#[test]
fn over_http2_streams_are_charged_and_streamed_bodies_capped() {
    let (pki, _echo, gw) = start();
    let url = format!("https://localhost:{}/careful/a", gw.port);
    let curl = |args: &[&str]| {
        let out = curl_as(&pki, "frontend")
            .args(["-sS", "--http2", "-w", "%{http_version} %{http_code}\n"])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let out = curl(&[
        "-o",
        "/dev/null",
        &url,
        "-o",
        "/dev/null",
        &url,
        "-o",
        "/dev/null",
        &url,
    ]);
    assert_eq!(out, "2 200\n2 200\n2 429\n", "{out}");

    // The 429's rate-limit fields over HTTP/2: lower-case names (HTTP/2 refuses others),
    // each field once, the same values as over HTTP/1.1.
    let head = curl(&["-o", "/dev/null", "-D", "-", &url]);
    let fields: Vec<(&str, &str)> = head
        .lines()
        .filter_map(|l| l.trim_end().split_once(": "))
        .collect();
    let field = |name: &str| -> Vec<&str> {
        fields
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| *v)
            .collect()
    };
    assert!(head.starts_with("HTTP/2 429"), "{head}");
    let retry = field("retry-after");
    assert_eq!(retry.len(), 1, "{head}");
    assert!(
        (1..=60).contains(&retry[0].parse::<u64>().unwrap()),
        "{head}"
    );
    assert_eq!(
        field("ratelimit-policy"),
        [r#""identity";q=2;w=60"#],
        "{head}"
    );
    assert_eq!(
        field("ratelimit"),
        [format!(r#""identity";r=0;t={}"#, retry[0]).as_str()],
        "{head}"
    );

    // 200 bytes streamed (no Content-Length) to a tenant capped at 100.
    let mut child = curl_as(&pki, "frontend")
        .args([
            "-sS",
            "--http2",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code}",
        ])
        .args(["-X", "POST", "-T", "-"])
        .arg(format!("https://localhost:{}/bounded/up", gw.port))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(&[b'a'; 200]).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text, "2 413", "{text}");
}
