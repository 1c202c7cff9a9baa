//! What the end-to-end tests stand on: a development PKI in a temp folder, the real
//! `portcullis` binary started as child processes (echo upstreams and gateways), a small
//! HTTP/1.1 client over real rustls with client certificates, and metrics scraping.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use portcullis_ca::dev::{DevCa, LeafSpec};

pub const TD: &str = "spiffe://test.portcullis.local";
const DAY: Duration = Duration::from_secs(86400);

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_portcullis")
}

/// A loopback port nobody listens on now and this test run has not handed out before: the
/// kernel may give the same ephemeral port to two `bind(0)` calls in a row once the first
/// socket is closed, which once made a gateway's metrics address equal its listener's.
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if !handed_out.contains(&port) {
            handed_out.push(port);
            return port;
        }
    }
}

/// A temp folder with a CA, a server certificate and a set of client certificates.
pub struct Pki {
    pub dir: tempfile::TempDir,
    /// The test CA, to issue more certificates than the standard set.
    pub ca: DevCa,
}

impl Pki {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let ca = DevCa::new("Test CA").unwrap();
        ca.write(d, "ca").unwrap();
        ca.issue(&LeafSpec::localhost_server(&["api.test"], DAY))
            .unwrap()
            .write(d, "server")
            .unwrap();
        let frontend = format!("{TD}/ns/app/sa/frontend");
        let other = format!("{TD}/ns/app/sa/other");
        let mut spec = LeafSpec::client("frontend", Some(&frontend), DAY);
        spec.dns_names = vec!["frontend.test".into()];
        ca.issue(&spec).unwrap().write(d, "frontend").unwrap();
        ca.issue(&LeafSpec::client("other", Some(&other), DAY))
            .unwrap()
            .write(d, "other")
            .unwrap();
        // The gateway's own client certificate for upstream mTLS.
        ca.issue(&LeafSpec::client(
            "gateway",
            Some(&format!("{TD}/ns/edge/sa/gateway")),
            DAY,
        ))
        .unwrap()
        .write(d, "gateway")
        .unwrap();
        let now = SystemTime::now();
        let mut expired = LeafSpec::client("frontend", Some(&frontend), DAY);
        expired.not_before = now - 3 * DAY;
        expired.not_after = now - DAY;
        ca.issue(&expired).unwrap().write(d, "expired").unwrap();
        let mut future = LeafSpec::client("frontend", Some(&frontend), DAY);
        future.not_before = now + DAY;
        future.not_after = now + 2 * DAY;
        ca.issue(&future).unwrap().write(d, "future").unwrap();
        DevCa::new("Rogue CA")
            .unwrap()
            .issue(&LeafSpec::client("frontend", Some(&frontend), DAY))
            .unwrap()
            .write(d, "rogue")
            .unwrap();
        Self { dir, ca }
    }

    /// Writes another localhost server certificate (`NAME.pem`, `NAME.key`) from the test CA.
    pub fn server(&self, name: &str) {
        self.ca
            .issue(&LeafSpec::localhost_server(&["api.test"], DAY))
            .unwrap()
            .write(self.dir.path(), name)
            .unwrap();
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn client(&self, name: Option<&str>) -> Client {
        Client::new(
            &self.path("ca.pem"),
            name.map(|n| {
                (
                    self.path(&format!("{n}.pem")),
                    self.path(&format!("{n}.key")),
                )
            }),
        )
    }
}

/// A child process killed when dropped; its stderr goes to a file for post-mortems.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([format!("-{sig}"), self.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits up to `limit` for the process to exit and returns its exit status.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(args: &[&str], log: PathBuf) -> Proc {
    spawn_env(args, log, &[])
}

/// Starts the binary with `args` and extra environment, its stderr in `log`.
pub fn spawn_env(args: &[&str], log: PathBuf, env: &[(&str, &Path)]) -> Proc {
    let err = std::fs::File::create(&log).unwrap();
    spawn_stderr(args, log, env, err.into())
}

fn spawn_stderr(args: &[&str], log: PathBuf, env: &[(&str, &Path)], stderr: Stdio) -> Proc {
    let child = Command::new(bin())
        .args(args)
        .envs(env.iter().copied())
        .env("PORTCULLIS_LOG", "info")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    Proc { child, log }
}

pub fn wait_for_port(port: u16) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "port {port} never opened"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub struct Echo {
    pub port: u16,
    _proc: Proc,
}

impl Echo {
    pub fn start(dir: &Path, name: &str) -> Self {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let proc = spawn(
            &[
                "echo",
                "--exit-with-stdin",
                "--name",
                name,
                "--listen",
                &addr,
            ],
            dir.join(format!("echo-{name}-{port}.log")),
        );
        wait_for_port(port);
        Self { port, _proc: proc }
    }
}

/// A running gateway with its config file in `dir`.
pub struct Gateway {
    pub port: u16,
    pub metrics_port: u16,
    pub config: PathBuf,
    pub proc: Proc,
}

impl Gateway {
    /// `yaml` may use `{port}`, `{metrics}` and `{dir}` placeholders.
    pub fn start(dir: &Path, yaml: &str) -> Self {
        Self::start_with(dir, yaml, &[])
    }

    /// Like `start`, with extra `serve` arguments.
    pub fn start_with(dir: &Path, yaml: &str, extra: &[&str]) -> Self {
        Self::start_env(dir, yaml, extra, &[])
    }

    /// Like `start_with`, with extra environment variables for the gateway process.
    pub fn start_env(dir: &Path, yaml: &str, extra: &[&str], env: &[(&str, &Path)]) -> Self {
        Self::launch(dir, yaml, extra, env, false)
    }

    /// Like `start`, with the gateway's stderr a pipe that nobody reads: once the pipe is full,
    /// every write to it blocks (a log shipper that has stopped reading).
    pub fn start_with_stderr_unread(dir: &Path, yaml: &str) -> Self {
        Self::launch(dir, yaml, &[], &[], true)
    }

    /// Like `start`, on a port chosen beforehand (for configs that must name it elsewhere,
    /// such as a login callback registered at an identity provider).
    pub fn start_at(dir: &Path, yaml: &str, port: u16) -> Self {
        Self::launch_at(dir, yaml, &[], &[], false, port)
    }

    fn launch(
        dir: &Path,
        yaml: &str,
        extra: &[&str],
        env: &[(&str, &Path)],
        stderr_unread: bool,
    ) -> Self {
        Self::launch_at(dir, yaml, extra, env, stderr_unread, free_port())
    }

    fn launch_at(
        dir: &Path,
        yaml: &str,
        extra: &[&str],
        env: &[(&str, &Path)],
        stderr_unread: bool,
        port: u16,
    ) -> Self {
        let metrics_port = free_port();
        let config = dir.join(format!("gateway-{port}.yaml"));
        std::fs::write(&config, fill(yaml, port, metrics_port)).unwrap();
        let mut args = vec!["serve", "--config", config.to_str().unwrap()];
        args.extend_from_slice(extra);
        let log = dir.join(format!("gateway-{port}.log"));
        let proc = if stderr_unread {
            // The child keeps the read end (in `Child::stderr`), unread, for its whole life.
            spawn_stderr(&args, log, env, Stdio::piped())
        } else {
            spawn_env(&args, log, env)
        };
        let gw = Self {
            port,
            metrics_port,
            config,
            proc,
        };
        let start = Instant::now();
        let mut gw = gw;
        loop {
            if let Some((200, _)) = http_get(metrics_port, "/readyz") {
                break;
            }
            if let Ok(Some(status)) = gw.proc.child.try_wait() {
                panic!("gateway exited ({status}):\n{}", gw.proc.log_text());
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "gateway never became ready:\n{}",
                gw.proc.log_text()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
        gw
    }

    /// Rewrites the config (same placeholders) and sends SIGHUP; waits until the reload
    /// counter for `expect` ("success" or "failure") goes up.
    pub fn reload(&self, yaml: &str, expect: &str) {
        self.rewrite(yaml, expect, true);
    }

    /// Rewrites the config and, with `hup`, sends SIGHUP; waits for the reload counter.
    pub fn rewrite(&self, yaml: &str, expect: &str, hup: bool) {
        let before = self.metric(&format!(
            "portcullis_config_reloads_total{{result=\"{expect}\"}}"
        ));
        std::fs::write(&self.config, fill(yaml, self.port, self.metrics_port)).unwrap();
        if hup {
            self.proc.signal("HUP");
        }
        let start = Instant::now();
        while self.metric(&format!(
            "portcullis_config_reloads_total{{result=\"{expect}\"}}"
        )) <= before
        {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "no reload {expect}:\n{}",
                self.proc.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn metrics(&self) -> String {
        http_get(self.metrics_port, "/metrics").unwrap().1
    }

    /// Waits (up to 5 s) for a sample to reach `value`: a request is counted just after its
    /// response is sent, so a client can be a moment ahead of the metrics.
    pub fn wait_metric(&self, sample: &str, value: f64) -> String {
        let start = Instant::now();
        loop {
            let text = self.metrics();
            if metric_value(&text, sample) >= value || start.elapsed() > Duration::from_secs(5) {
                return text;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (up to 5 s) until a sample falls to `value` or below; the last scrape.
    pub fn wait_metric_at_most(&self, sample: &str, value: f64) -> String {
        let start = Instant::now();
        loop {
            let text = self.metrics();
            if metric_value(&text, sample) <= value || start.elapsed() > Duration::from_secs(5) {
                return text;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (up to 5 s: access lines are written by their own thread, after the metrics
    /// count them) for a log line that `found` accepts; the whole log then.
    pub fn wait_for_line(&self, found: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let log = self.proc.log_text();
            if log.lines().any(&found) {
                return log;
            }
            assert!(Instant::now() < deadline, "line not found in:\n{log}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The value of one sample, by its exact name and labels as printed; 0 when absent.
    pub fn metric(&self, sample: &str) -> f64 {
        metric_value(&self.metrics(), sample)
    }
}

pub fn metric_value(text: &str, sample: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(sample)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

fn fill(yaml: &str, port: u16, metrics: u16) -> String {
    yaml.replace("{port}", &port.to_string())
        .replace("{metrics}", &metrics.to_string())
}

/// Plain HTTP/1.1 GET (one request, then close) on loopback: (status, body).
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.split_whitespace().nth(1)?.parse().ok()?;
    let body = out
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

/// An HTTP/1.1 client over rustls presenting an optional client certificate.
pub struct Client {
    config: Arc<rustls::ClientConfig>,
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Client {
    pub fn new(ca: &Path, identity: Option<(PathBuf, PathBuf)>) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut std::fs::read(ca).unwrap().as_slice()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
        let config = match identity {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let certs = rustls_pemfile::certs(&mut std::fs::read(cert).unwrap().as_slice())
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap();
                let key = rustls_pemfile::private_key(&mut std::fs::read(key).unwrap().as_slice())
                    .unwrap()
                    .unwrap();
                builder.with_client_auth_cert(certs, key).unwrap()
            }
        };
        Self {
            config: Arc::new(config),
        }
    }

    /// Opens a TLS connection and completes the handshake (including the server's verdict on
    /// our certificate, which TLS 1.3 delivers after the client thinks it is done).
    pub fn connect(&self, port: u16) -> std::io::Result<Conn> {
        self.handshake(TcpStream::connect(("127.0.0.1", port))?)
    }

    fn handshake(&self, tcp: TcpStream) -> std::io::Result<Conn> {
        tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tls = rustls::ClientConnection::new(self.config.clone(), name)
            .map_err(std::io::Error::other)?;
        let mut stream = rustls::StreamOwned::new(tls, tcp);
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock)?;
        }
        Ok(Conn {
            reader: BufReader::new(stream),
        })
    }

    /// Like `connect`, with the socket's receive buffer set to `bytes` before connecting, so
    /// that a client that stops reading stalls the server's writes after a few KiB.
    pub fn connect_small_window(&self, port: u16, bytes: usize) -> std::io::Result<Conn> {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        socket.set_recv_buffer_size(bytes)?;
        socket.connect(&std::net::SocketAddr::from(([127, 0, 0, 1], port)).into())?;
        self.handshake(socket.into())
    }

    /// Like `connect`, from the loopback address `source` (the whole 127.0.0.0/8 is local),
    /// after writing `prefix` on the bare socket (a PROXY protocol header, or nothing).
    pub fn connect_from(&self, source: [u8; 4], port: u16, prefix: &[u8]) -> std::io::Result<Conn> {
        let mut tcp = tcp_from(source, port)?;
        tcp.write_all(prefix)?;
        self.handshake(tcp)
    }

    /// A TLS connection over a TCP stream the caller has opened (and perhaps written to).
    pub fn over(&self, tcp: TcpStream) -> std::io::Result<Conn> {
        self.handshake(tcp)
    }

    /// One request on a fresh connection.
    pub fn get(&self, port: u16, path: &str) -> std::io::Result<Response> {
        self.connect(port)?.request("GET", path, &[])
    }
}

/// A TCP connection to the loopback `port` from the local address `source`.
pub fn tcp_from(source: [u8; 4], port: u16) -> std::io::Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.bind(&std::net::SocketAddr::from((source, 0)).into())?;
    socket.connect(&std::net::SocketAddr::from(([127, 0, 0, 1], port)).into())?;
    socket.set_tcp_nodelay(true)?;
    Ok(socket.into())
}

pub struct Conn {
    reader: BufReader<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>,
}

impl Conn {
    /// Whether the handshake resumed an earlier TLS session.
    pub fn resumed(&self) -> bool {
        self.reader.get_ref().conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed)
    }

    /// Writes `head` exactly as given (request line, headers, blank line, any body) and reads
    /// one response.
    pub fn send_raw(&mut self, head: &[u8]) -> std::io::Result<Response> {
        let stream = self.reader.get_mut();
        stream.write_all(head)?;
        stream.flush()?;
        read_response(&mut self.reader)
    }

    /// Whether the server closes the connection within a few seconds.
    pub fn closed_by_server(&mut self) -> bool {
        self.read_until_closed(Duration::from_secs(3)).1
    }

    /// The TLS stream itself, to write raw bytes (slow or malformed requests).
    pub fn raw(&mut self) -> &mut rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
        self.reader.get_mut()
    }

    /// Reads until the server closes the connection (or `limit` passes); the bytes read and
    /// whether it was closed.
    pub fn read_until_closed(&mut self, limit: Duration) -> (Vec<u8>, bool) {
        self.reader
            .get_ref()
            .sock
            .set_read_timeout(Some(limit))
            .unwrap();
        let mut out = Vec::new();
        let closed = match self.reader.read_to_end(&mut out) {
            Ok(_) => true,
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        };
        (out, closed)
    }

    /// Reads until the bytes read so far contain `needle` (or `limit` passes, or the server
    /// closes); all the bytes read.
    pub fn read_until(&mut self, needle: &[u8], limit: Duration) -> Vec<u8> {
        let deadline = std::time::Instant::now() + limit;
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while !out.windows(needle.len()).any(|w| w == needle) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            self.reader
                .get_ref()
                .sock
                .set_read_timeout(Some(left))
                .unwrap();
            match self.reader.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
        out
    }

    /// The DER of the certificate the server presented on this connection.
    pub fn server_certificate(&self) -> Vec<u8> {
        self.reader.get_ref().conn.peer_certificates().unwrap()[0].to_vec()
    }

    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> std::io::Result<Response> {
        self.send(method, path, headers, b"")
    }

    /// A chunked request whose chunks are written (and flushed) separately, `pause` apart, so
    /// the gateway receives them as separate reads.
    pub fn send_chunked(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        chunks: &[&[u8]],
        pause: Duration,
    ) -> std::io::Result<Response> {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n"
        );
        for (n, v) in headers {
            head.push_str(&format!("{n}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let stream = self.reader.get_mut();
        stream.write_all(head.as_bytes())?;
        stream.flush()?;
        for chunk in chunks {
            stream.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())?;
            stream.write_all(chunk)?;
            stream.write_all(b"\r\n")?;
            stream.flush()?;
            std::thread::sleep(pause);
        }
        stream.write_all(b"0\r\n\r\n")?;
        stream.flush()?;
        read_response(&mut self.reader)
    }

    /// A request with `body` written as is after the head (frame it with the headers).
    pub fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<Response> {
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n");
        for (n, v) in headers {
            head.push_str(&format!("{n}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let stream = self.reader.get_mut();
        stream.write_all(head.as_bytes())?;
        stream.write_all(body)?;
        stream.flush()?;
        read_response(&mut self.reader)
    }
}

fn read_response<R: BufRead>(r: &mut R) -> std::io::Result<Response> {
    let eof = || std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed");
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(eof());
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(eof());
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((n, v)) = l.split_once(':') {
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let mut body = Vec::new();
    if let Some(len) = get("content-length") {
        let len: usize = len.parse().map_err(std::io::Error::other)?;
        body.resize(len, 0);
        r.read_exact(&mut body)?;
    } else if get("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        loop {
            line.clear();
            r.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(std::io::Error::other)?;
            let mut chunk = vec![0; size + 2];
            r.read_exact(&mut chunk)?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// A curl command that trusts the test CA and presents `client`'s certificate.
pub fn curl_as(pki: &Pki, client: &str) -> Command {
    let mut cmd = Command::new("curl");
    cmd.arg("--cacert")
        .arg(pki.path("ca.pem"))
        .arg("--cert")
        .arg(pki.path(&format!("{client}.pem")))
        .arg("--key")
        .arg(pki.path(&format!("{client}.key")));
    cmd
}

/// Runs curl (for HTTP/2) and returns (http_version, status, body).
pub fn curl_h2(pki: &Pki, client: &str, port: u16, path: &str) -> (String, u16, String) {
    let out = curl_as(pki, client)
        .args(["-sS", "--http2", "--max-time", "10"])
        .args(["-w", "\n%{http_version} %{http_code}"])
        .arg(format!("https://localhost:{port}{path}"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, tail) = text.rsplit_once('\n').unwrap_or(("", &text));
    let mut parts = tail.split_whitespace();
    let version = parts.next().unwrap_or("").to_owned();
    let status = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    (version, status, body.to_owned())
}
