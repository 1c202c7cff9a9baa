//! Where the load goes and how a connection to it is opened: the loopback-only target URL,
//! the TLS client (with the client certificate) and the HTTP/1.1 or HTTP/2 connection.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::client::Resumption;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// A parsed target: loopback only, by construction.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) uri: Uri,
    pub(crate) addr: SocketAddr,
    pub(crate) tls: bool,
    /// `host[:port]` as written, for the Host header and `:authority`.
    pub(crate) authority: String,
    /// The name the server certificate is checked against.
    host: String,
}

impl Target {
    /// Parses `http(s)://HOST:PORT/PATH`; refuses any host that is not loopback so the tool
    /// cannot be pointed at someone else's server.
    pub(crate) fn parse(url: &str) -> anyhow::Result<Self> {
        let uri: Uri = url.parse().with_context(|| format!("target URL {url:?}"))?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => bail!("target URL {url:?}: the scheme must be http or https"),
        };
        let authority = uri
            .authority()
            .with_context(|| format!("target URL {url:?} has no host"))?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let ip: IpAddr = if host.eq_ignore_ascii_case("localhost") {
            IpAddr::from([127, 0, 0, 1])
        } else {
            host.parse()
                .with_context(|| format!("target host {host:?}: give a loopback IP address"))?
        };
        if !ip.is_loopback() {
            bail!("target host {host}: only loopback targets (127.0.0.0/8, ::1) are allowed");
        }
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        Ok(Self {
            authority: authority.as_str().to_owned(),
            host: host.to_owned(),
            addr: SocketAddr::new(ip, port),
            tls,
            uri,
        })
    }

    fn path(&self) -> &str {
        self.uri.path_and_query().map_or("/", |p| p.as_str())
    }
}

/// Files and switches for the TLS client.
#[derive(Debug, Clone)]
pub(crate) struct TlsFiles {
    pub(crate) ca: PathBuf,
    pub(crate) cert: Option<PathBuf>,
    pub(crate) key: Option<PathBuf>,
    /// Allow TLS session resumption (off: every new connection is a full handshake).
    pub(crate) resume: bool,
}

/// HTTP version spoken on each connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Protocol {
    #[value(name = "1.1")]
    Http1,
    #[value(name = "2")]
    Http2,
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Http1 => "HTTP/1.1",
            Self::Http2 => "HTTP/2",
        })
    }
}

/// The ways a request can fail, counted separately in the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Failure {
    Connect,
    Tls,
    HttpHandshake,
    Request,
    Body,
    Timeout,
    Status(u16),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Connect => f.write_str("connect"),
            Self::Tls => f.write_str("tls_handshake"),
            Self::HttpHandshake => f.write_str("http_handshake"),
            Self::Request => f.write_str("request"),
            Self::Body => f.write_str("response_body"),
            Self::Timeout => f.write_str("timeout"),
            Self::Status(s) => write!(f, "status_{s}"),
        }
    }
}

/// Everything needed to open connections and build requests, shared by all workers.
pub(crate) struct Connector {
    target: Target,
    protocol: Protocol,
    tls: Option<TlsConnector>,
    server_name: Option<ServerName<'static>>,
    method: Method,
    body: Bytes,
    /// Extra headers every request carries (e.g. `Authorization: Bearer …`).
    headers: Vec<(HeaderName, HeaderValue)>,
    /// A status that counts as success besides 2xx.
    pub(crate) expect_status: Option<u16>,
}

impl Connector {
    pub(crate) fn new(
        target: Target,
        protocol: Protocol,
        tls: Option<&TlsFiles>,
        body: Option<Bytes>,
        headers: Vec<(HeaderName, HeaderValue)>,
    ) -> anyhow::Result<Self> {
        let (tls, server_name) = match (target.tls, tls) {
            (true, Some(files)) => {
                let config = client_config(files, protocol)?;
                let name = ServerName::try_from(target.host.clone())
                    .with_context(|| format!("server name {:?}", target.host))?;
                (Some(TlsConnector::from(Arc::new(config))), Some(name))
            }
            (true, None) => bail!("an https target needs --ca (and --cert/--key for mTLS)"),
            (false, _) => (None, None),
        };
        let method = if body.is_some() {
            Method::POST
        } else {
            Method::GET
        };
        Ok(Self {
            target,
            protocol,
            tls,
            server_name,
            method,
            body: body.unwrap_or_default(),
            headers,
            expect_status: None,
        })
    }

    pub(crate) fn target(&self) -> &Target {
        &self.target
    }

    pub(crate) fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Opens TCP, TLS (if https) and the HTTP connection; the connection's driver runs as a task
    /// that ends when the last `Sender` is dropped.
    pub(crate) async fn connect(&self) -> Result<Sender, Failure> {
        let tcp = TcpStream::connect(self.target.addr)
            .await
            .map_err(|_| Failure::Connect)?;
        // Latency matters more than packet count on loopback.
        let _ = tcp.set_nodelay(true);
        match (&self.tls, &self.server_name) {
            (Some(tls), Some(name)) => {
                let stream = tls
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|_| Failure::Tls)?;
                self.handshake(TokioIo::new(stream)).await
            }
            _ => self.handshake(TokioIo::new(tcp)).await,
        }
    }

    async fn handshake<T>(&self, io: TokioIo<T>) -> Result<Sender, Failure>
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        match self.protocol {
            Protocol::Http1 => {
                let (send, conn) = http1::handshake(io)
                    .await
                    .map_err(|_| Failure::HttpHandshake)?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                Ok(Sender::H1(send))
            }
            Protocol::Http2 => {
                let (send, conn) = http2::handshake(TokioExecutor::new(), io)
                    .await
                    .map_err(|_| Failure::HttpHandshake)?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                Ok(Sender::H2(send))
            }
        }
    }

    /// The request every worker sends. HTTP/1.1 takes the origin form plus Host (the URL's
    /// authority, unless an extra header names another: a name-routed target reached at a
    /// loopback address, as a sidecar's egress listener is); HTTP/2 the absolute form (hyper
    /// derives `:scheme` and `:authority` from it).
    pub(crate) fn request(&self) -> Request<Full<Bytes>> {
        let builder = Request::builder()
            .method(self.method.clone())
            .header(http::header::USER_AGENT, "portcullis-load");
        let own_host = self
            .headers
            .iter()
            .any(|(name, _)| name == http::header::HOST);
        let builder = match self.protocol {
            Protocol::Http1 if own_host => builder.uri(self.target.path()),
            Protocol::Http1 => builder
                .uri(self.target.path())
                .header(http::header::HOST, self.target.authority.as_str()),
            Protocol::Http2 => builder.uri(self.target.uri.clone()),
        };
        let mut builder = if self.method == Method::POST {
            builder.header(http::header::CONTENT_TYPE, "application/json")
        } else {
            builder
        };
        for (name, value) in &self.headers {
            builder = builder.header(name, value);
        }
        builder
            .body(Full::new(self.body.clone()))
            // Invariant: method, URI and headers above come from values already validated.
            .expect("request parts were validated when the target was parsed")
    }
}

/// The sending half of one HTTP connection.
pub(crate) enum Sender {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

impl Sender {
    pub(crate) async fn send(
        &mut self,
        req: Request<Full<Bytes>>,
    ) -> Result<http::Response<Incoming>, Failure> {
        match self {
            Self::H1(s) => {
                s.ready().await.map_err(|_| Failure::Request)?;
                s.send_request(req).await.map_err(|_| Failure::Request)
            }
            Self::H2(s) => {
                s.ready().await.map_err(|_| Failure::Request)?;
                s.send_request(req).await.map_err(|_| Failure::Request)
            }
        }
    }

    /// Another handle on the same connection: HTTP/2 multiplexes, HTTP/1.1 cannot.
    pub(crate) fn share(&self) -> Option<Sender> {
        match self {
            Self::H1(_) => None,
            Self::H2(s) => Some(Self::H2(s.clone())),
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        match self {
            Self::H1(s) => s.is_closed(),
            Self::H2(s) => s.is_closed(),
        }
    }
}

fn client_config(files: &TlsFiles, protocol: Protocol) -> anyhow::Result<ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in read_certs(&files.ca)? {
        roots
            .add(cert)
            .with_context(|| format!("CA file {}", files.ca.display()))?;
    }
    let builder = ClientConfig::builder().with_root_certificates(roots);
    let mut config = match (&files.cert, &files.key) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(read_certs(cert)?, read_key(key)?)
            .context("client certificate and key")?,
        (None, None) => builder.with_no_client_auth(),
        _ => bail!("give both --cert and --key, or neither"),
    };
    config.alpn_protocols = vec![match protocol {
        Protocol::Http1 => b"http/1.1".to_vec(),
        Protocol::Http2 => b"h2".to_vec(),
    }];
    if !files.resume {
        config.resumption = Resumption::disabled();
    }
    Ok(config)
}

fn read_certs(path: &Path) -> anyhow::Result<Vec<rustls_pki_types::CertificateDer<'static>>> {
    Ok(portcullis_identity::load_certs(path)?)
}

fn read_key(path: &Path) -> anyhow::Result<rustls_pki_types::PrivateKeyDer<'static>> {
    Ok(portcullis_identity::load_private_key(path)?)
}

/// Parses `Name: value` (as curl's `-H`).
pub(crate) fn parse_header(text: &str) -> anyhow::Result<(HeaderName, HeaderValue)> {
    let (name, value) = text
        .split_once(':')
        .with_context(|| format!("header {text:?}: give it as `Name: value`"))?;
    let name = HeaderName::from_bytes(name.trim().as_bytes())
        .with_context(|| format!("header name {:?}", name.trim()))?;
    let value =
        HeaderValue::from_str(value.trim()).with_context(|| format!("value of header {name}"))?;
    Ok((name, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_parse() {
        let (n, v) = parse_header("Authorization: Bearer a.b.c").unwrap();
        assert_eq!(n, http::header::AUTHORIZATION);
        assert_eq!(v, "Bearer a.b.c");
        assert!(parse_header("no colon").is_err());
        assert!(parse_header("X-Bad: a\nb").is_err());
        assert!(parse_header("Bad Name: x").is_err());
    }

    #[test]
    fn extra_headers_on_every_request() {
        let target = Target::parse("http://127.0.0.1:8080/x").unwrap();
        let header = parse_header("Authorization: Bearer t").unwrap();
        for protocol in [Protocol::Http1, Protocol::Http2] {
            let c =
                Connector::new(target.clone(), protocol, None, None, vec![header.clone()]).unwrap();
            let req = c.request();
            assert_eq!(req.headers()[http::header::AUTHORIZATION], "Bearer t");
        }
    }

    #[test]
    fn a_host_header_replaces_the_urls() {
        let target = Target::parse("http://127.0.0.1:8080/x").unwrap();
        let plain = Connector::new(target.clone(), Protocol::Http1, None, None, vec![]).unwrap();
        assert_eq!(
            plain.request().headers()[http::header::HOST],
            "127.0.0.1:8080"
        );
        let host = parse_header("Host: echo.bench").unwrap();
        let named = Connector::new(target, Protocol::Http1, None, None, vec![host]).unwrap();
        let req = named.request();
        let hosts: Vec<_> = req.headers().get_all(http::header::HOST).iter().collect();
        assert_eq!(hosts, ["echo.bench"]);
        assert_eq!(req.uri(), "/x");
    }

    #[test]
    fn loopback_targets_only() {
        assert!(Target::parse("https://127.0.0.1:8443/").is_ok());
        assert!(Target::parse("http://[::1]:80/x").is_ok());
        assert!(Target::parse("https://localhost:8443/").is_ok());
        assert!(Target::parse("https://10.0.0.1:8443/").is_err());
        assert!(Target::parse("https://example.com/").is_err());
        assert!(Target::parse("ftp://127.0.0.1/").is_err());
    }

    #[test]
    fn default_ports() {
        assert_eq!(
            Target::parse("https://127.0.0.1/").unwrap().addr.port(),
            443
        );
        assert_eq!(Target::parse("http://127.0.0.1/").unwrap().addr.port(), 80);
    }
}
