//! One delivery attempt: the destination checked (only public addresses, unless the operator
//! allowed more), a POST signed the Standard Webhooks way, the answer's status.
//!
//! The address checked is the address connected to (the name is resolved once, here), so a
//! name that resolves to a public address for the check and to an internal one for the
//! connection cannot steer the admin plane inside the network. Redirects are not followed.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use ipnet::IpNet;
use rustls::pki_types::ServerName;

/// Each step (resolution, connection, the exchange) is bounded by this.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// Resolved addresses tried at most.
const MAX_ADDRS: usize = 4;

/// A URL a subscription may name: `https://HOST[:PORT]/PATH` (or `http://` when allowed), no
/// user information.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    pub(crate) https: bool,
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) path: String,
}

impl Endpoint {
    pub(crate) fn parse(url: &str, plain_http: bool) -> Result<Self, String> {
        if url.len() > 2048 {
            return Err("url: at most 2048 characters".to_owned());
        }
        let uri: http::Uri = url
            .parse()
            .map_err(|_| "url: not an absolute URL".to_owned())?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") if plain_http => false,
            Some("http") => {
                return Err("url: https only (this admin plane does not allow plain http)".into())
            }
            _ => return Err("url: an https:// URL".to_owned()),
        };
        let authority = uri.authority().ok_or_else(|| "url: no host".to_owned())?;
        if authority.as_str().contains('@') {
            return Err("url: no user information".to_owned());
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        if host.is_empty() {
            return Err("url: no host".to_owned());
        }
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        Ok(Self {
            https,
            port: uri.port_u16().unwrap_or(if https { 443 } else { 80 }),
            host,
            path,
        })
    }
}

/// Which addresses deliveries may go to: public ones, and those the operator listed.
#[derive(Debug, Clone, Default)]
pub(crate) struct Destinations {
    pub(crate) allow: Vec<IpNet>,
}

impl Destinations {
    pub(crate) fn permits(&self, ip: IpAddr) -> bool {
        let ip = portcullis_identity::canonical_ip(ip);
        self.allow.iter().any(|net| net.contains(&ip)) || is_public(ip)
    }
}

/// Not loopback, private, link-local, shared (CGNAT), unspecified, multicast, broadcast,
/// documentation or unique-local.
fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0)
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || first == 0x2001 && v6.segments()[1] == 0x0db8)
        }
    }
}

/// What one delivery needs besides the payload.
pub(crate) struct Sender {
    pub(crate) destinations: Destinations,
    pub(crate) plain_http: bool,
    pub(crate) tls: Arc<rustls::ClientConfig>,
}

/// The Standard Webhooks signature of one message: `v1,` and the base64 HMAC-SHA256 of
/// `ID.TIMESTAMP.BODY` under the secret's key (`whsec_` and its base64).
pub(crate) fn signature(secret: &str, id: &str, timestamp: u64, body: &str) -> Option<String> {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_")?)
        .ok()?;
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key);
    let tag = ring::hmac::sign(&key, format!("{id}.{timestamp}.{body}").as_bytes());
    Some(format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
    ))
}

/// A new secret: `whsec_` and 32 random bytes in base64; None when the system's random source
/// fails.
pub(crate) fn new_secret() -> Option<String> {
    let mut key = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key).ok()?;
    Some(format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    ))
}

/// `prefix` and 16 random bytes in hex (subscription, event and message ids).
pub(crate) fn new_id(prefix: &str) -> Option<String> {
    let mut bytes = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).ok()?;
    Some(format!("{prefix}{}", hex::encode(bytes)))
}

impl Sender {
    /// POSTs `body` to `url` as message `id`; Ok for a 2xx answer, else why not (safe to show
    /// the tenant: it names the address and the status, nothing of ours).
    pub(crate) async fn send(
        &self,
        url: &str,
        secret: &str,
        id: &str,
        body: &str,
    ) -> Result<(), String> {
        let endpoint = Endpoint::parse(url, self.plain_http)?;
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let signature = signature(secret, id, timestamp, body)
            .ok_or_else(|| "the subscription's secret is unreadable".to_owned())?;
        let addrs = self.resolve(&endpoint).await?;
        let mut last = String::new();
        for addr in addrs {
            let attempt = tokio::time::timeout(
                STEP_TIMEOUT,
                self.post(&endpoint, addr, id, timestamp, &signature, body),
            )
            .await
            .unwrap_or_else(|_| Err(format!("{addr}: no answer within {STEP_TIMEOUT:?}")));
            match attempt {
                Ok(status) if (200..300).contains(&status) => return Ok(()),
                Ok(status) => return Err(format!("{addr} answered {status}")),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// The endpoint's permitted addresses; an error when none is (or when it does not resolve).
    async fn resolve(&self, endpoint: &Endpoint) -> Result<Vec<SocketAddr>, String> {
        let found: Vec<SocketAddr> = match endpoint.host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, endpoint.port)],
            Err(_) => tokio::time::timeout(
                STEP_TIMEOUT,
                tokio::net::lookup_host((endpoint.host.as_str(), endpoint.port)),
            )
            .await
            .map_err(|_| format!("resolving {} timed out", endpoint.host))?
            .map_err(|_| format!("{} does not resolve", endpoint.host))?
            .collect(),
        };
        let permitted: Vec<SocketAddr> = found
            .iter()
            .copied()
            .filter(|a| self.destinations.permits(a.ip()))
            .take(MAX_ADDRS)
            .collect();
        if permitted.is_empty() {
            return Err(match found.first() {
                Some(a) => format!("destination {} not allowed (not a public address)", a.ip()),
                None => format!("{} has no address", endpoint.host),
            });
        }
        Ok(permitted)
    }

    async fn post(
        &self,
        endpoint: &Endpoint,
        addr: SocketAddr,
        id: &str,
        timestamp: u64,
        signature: &str,
        body: &str,
    ) -> Result<u16, String> {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|_| format!("connecting to {addr} failed"))?;
        let _ = tcp.set_nodelay(true);
        let request = hyper::Request::post(endpoint.path.as_str())
            .header(hyper::header::HOST, host_header(endpoint))
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(hyper::header::USER_AGENT, "portcullis-webhooks")
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(Full::new(bytes::Bytes::copy_from_slice(body.as_bytes())))
            .map_err(|_| "building the request failed".to_owned())?;
        if endpoint.https {
            let name = ServerName::try_from(endpoint.host.clone())
                .map_err(|_| format!("{}: not a valid TLS server name", endpoint.host))?;
            let tls = tokio_rustls::TlsConnector::from(Arc::clone(&self.tls))
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS with {addr} failed: {e}"))?;
            exchange(tls, request, addr).await
        } else {
            exchange(tcp, request, addr).await
        }
    }
}

fn host_header(endpoint: &Endpoint) -> String {
    let host = if endpoint.host.contains(':') {
        format!("[{}]", endpoint.host)
    } else {
        endpoint.host.clone()
    };
    match (endpoint.https, endpoint.port) {
        (true, 443) | (false, 80) => host,
        (_, port) => format!("{host}:{port}"),
    }
}

async fn exchange<S>(
    stream: S,
    request: hyper::Request<Full<bytes::Bytes>>,
    addr: SocketAddr,
) -> Result<u16, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|_| format!("no HTTP/1.1 at {addr}"))?;
    let driver = tokio::spawn(conn);
    let result = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|_| format!("{addr} did not answer"))?;
        let status = response.status().as_u16();
        // The answer's body is not ours to keep; a little of it is read so the receiver sees
        // its response taken, the rest dropped with the connection.
        let _ = http_body_util::Limited::new(response.into_body(), 4096)
            .collect()
            .await;
        Ok(status)
    }
    .await;
    driver.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_standard_webhooks_one() {
        // The example of the Standard Webhooks specification's reference libraries.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = r#"{"test": 2432232314}"#;
        assert_eq!(
            signature(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body).as_deref(),
            Some("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
        );
        assert_eq!(signature("not-a-secret", "m", 1, "{}"), None);
    }

    #[test]
    fn urls_are_https_without_user_information() {
        let e = Endpoint::parse("https://hooks.example.com/in?x=1", false).unwrap();
        assert_eq!(
            (e.https, e.host.as_str(), e.port, e.path.as_str()),
            (true, "hooks.example.com", 443, "/in?x=1")
        );
        assert!(Endpoint::parse("http://hooks.example.com/", false).is_err());
        assert!(Endpoint::parse("http://hooks.example.com/", true).is_ok());
        for bad in [
            "ftp://x/",
            "https://user:pw@x/",
            "/relative",
            "https://",
            "",
            "https://[::1/",
        ] {
            assert!(Endpoint::parse(bad, true).is_err(), "{bad}");
        }
        let v6 = Endpoint::parse("https://[::1]:8443/h", false).unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 8443));
        assert_eq!(host_header(&v6), "[::1]:8443");
    }

    /// A name is checked against what it resolves to at delivery: `localhost` is loopback, so
    /// nothing is sent (a listener there would see no connection).
    #[tokio::test]
    async fn a_name_resolving_inside_is_refused_at_delivery() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let tls = rustls::ClientConfig::builder_with_provider(portcullis_identity::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let sender = Sender {
            destinations: Destinations::default(),
            plain_http: true,
            tls: Arc::new(tls),
        };
        let secret = new_secret().unwrap();
        let url = format!("http://localhost:{port}/hook");
        let err = sender.send(&url, &secret, "msg_1", "{}").await.unwrap_err();
        assert!(err.contains("not allowed"), "{err}");
        let accepted = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
        assert!(accepted.is_err(), "a connection reached the listener");
    }

    #[test]
    fn only_public_addresses_unless_allowed() {
        let none = Destinations::default();
        for internal in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            assert!(!none.permits(internal.parse().unwrap()), "{internal}");
        }
        for public in ["93.184.216.34", "2606:2800:220:1::1"] {
            assert!(none.permits(public.parse().unwrap()), "{public}");
        }
        let lab = Destinations {
            allow: vec!["127.0.0.1/32".parse().unwrap()],
        };
        assert!(lab.permits("127.0.0.1".parse().unwrap()));
        assert!(!lab.permits("127.0.0.2".parse().unwrap()));
    }
}
