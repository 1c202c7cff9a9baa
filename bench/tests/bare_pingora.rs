//! `portcullis-bare-pingora`, the bench's framework floor, driven as `bench/run.sh` drives it:
//! the real binary, the bench PKI from `portcullis-load certs`, curl as the client and a plain
//! HTTP/1.1 upstream. The floor is only a fair reference if it does the mTLS work the proxies
//! it is compared with do: a client without a certificate, or with one from another CA, never
//! reaches the upstream.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BARE: &str = env!("CARGO_BIN_EXE_portcullis-bare-pingora");
const LOAD: &str = env!("CARGO_BIN_EXE_portcullis-load");

/// A plain HTTP/1.1 keep-alive upstream that answers every request with its method and path
/// and counts what it saw.
struct Upstream {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
}

impl Upstream {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&requests);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let seen = Arc::clone(&seen);
                std::thread::spawn(move || serve(stream, &seen));
            }
        });
        Self { addr, requests }
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

fn serve(stream: TcpStream, seen: &AtomicUsize) {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            if header == "\r\n" {
                break;
            }
        }
        seen.fetch_add(1, Ordering::SeqCst);
        let mut parts = request_line.split_whitespace();
        let body = format!(
            "upstream saw {} {}",
            parts.next().unwrap_or("?"),
            parts.next().unwrap_or("?")
        );
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

/// The bench PKI (CA, server and client certificates) in a fresh folder.
fn bench_pki(dir: &Path) {
    let status = Command::new(LOAD)
        .arg("certs")
        .arg("--out")
        .arg(dir)
        .status()
        .unwrap();
    assert!(status.success());
}

/// The proxy as a child process, killed when dropped.
struct Bare(Child);

impl Drop for Bare {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_bare(pki: &Path, upstream: SocketAddr) -> (Bare, u16) {
    let port = free_port();
    let child = Command::new(BARE)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--upstream", &upstream.to_string()])
        .arg("--cert")
        .arg(pki.join("server.pem"))
        .arg("--key")
        .arg(pki.join("server.key"))
        .arg("--client-ca")
        .arg(pki.join("ca.pem"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let bare = Bare(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "bare pingora did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    (bare, port)
}

/// curl to the proxy, trusting the bench CA, with `extra` arguments (client certificate, HTTP
/// version); prints the HTTP version and status after the body.
fn curl(port: u16, pki: &Path, extra: &[&str]) -> Output {
    Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(pki.join("ca.pem"))
        .args(extra)
        .args(["-w", "\n%{http_version} %{http_code}"])
        .arg(format!("https://localhost:{port}/bench/item"))
        .output()
        .unwrap()
}

fn client_cert(pki: &Path) -> Vec<String> {
    let path = |f: &str| pki.join(f).display().to_string();
    vec![
        "--cert".into(),
        path("client.pem"),
        "--key".into(),
        path("client.key"),
    ]
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn proxies_mtls_clients_to_the_upstream_over_http1_and_http2() {
    let pki = tempfile::tempdir().unwrap();
    bench_pki(pki.path());
    let upstream = Upstream::start();
    let (_bare, port) = start_bare(pki.path(), upstream.addr);
    let cert = client_cert(pki.path());

    let mut h1 = args(&cert);
    h1.push("--http1.1");
    let out = curl(port, pki.path(), &h1);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text, "upstream saw GET /bench/item\n1.1 200");

    let mut h2 = args(&cert);
    h2.push("--http2");
    let out = curl(port, pki.path(), &h2);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text, "upstream saw GET /bench/item\n2 200");
    assert_eq!(upstream.requests(), 2);
}

#[test]
fn a_client_without_a_certificate_from_the_ca_never_reaches_the_upstream() {
    let pki = tempfile::tempdir().unwrap();
    bench_pki(pki.path());
    let other = tempfile::tempdir().unwrap();
    bench_pki(other.path());
    let upstream = Upstream::start();
    let (_bare, port) = start_bare(pki.path(), upstream.addr);

    // No client certificate at all.
    let out = curl(port, pki.path(), &["--http1.1"]);
    assert!(!out.status.success(), "{out:?}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("upstream saw"));

    // A well-formed client certificate issued by another CA.
    let foreign_cert = client_cert(other.path());
    let mut foreign = args(&foreign_cert);
    foreign.push("--http1.1");
    let out = curl(port, pki.path(), &foreign);
    assert!(!out.status.success(), "{out:?}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("upstream saw"));

    assert_eq!(upstream.requests(), 0);
}

fn run_bare(args: &[&str], dir: &Path) -> Output {
    Command::new(BARE)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

#[test]
fn bad_input_is_a_clear_error_not_a_panic() {
    let pki = tempfile::tempdir().unwrap();
    bench_pki(pki.path());
    let port = free_port().to_string();
    let listen = format!("127.0.0.1:{port}");
    let with = |listen: &str, cert: &str, key: &str, ca: &str| -> Vec<String> {
        [
            "--listen",
            listen,
            "--upstream",
            "127.0.0.1:9",
            "--cert",
            cert,
            "--key",
            key,
            "--client-ca",
            ca,
        ]
        .map(str::to_owned)
        .to_vec()
    };
    let cases: [(Vec<String>, &str); 5] = [
        (
            with("0.0.0.0:18443", "server.pem", "server.key", "ca.pem"),
            "only loopback addresses",
        ),
        (
            with(&listen, "missing.pem", "server.key", "ca.pem"),
            "missing.pem",
        ),
        (
            with(&listen, "server.pem", "client.key", "ca.pem"),
            "do not match",
        ),
        (
            with(&listen, "server.pem", "server.key", "server.key"),
            "server.key: no PEM certificate",
        ),
        (
            {
                let mut a = with(&listen, "server.pem", "server.key", "ca.pem");
                a.extend(["--threads".to_owned(), "0".to_owned()]);
                a
            },
            "--threads must be at least 1",
        ),
    ];
    for (argv, expected) in cases {
        let out = run_bare(&args(&argv), pki.path());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{argv:?}: {stderr}");
        assert!(stderr.contains(expected), "{argv:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{argv:?}: {stderr}");
    }
}
