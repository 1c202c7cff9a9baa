//! The typed client of `POST /v1/certificates`: HTTPS with the restricted provider, the CA's
//! trust bundle, and either the caller's current certificate (renewal) or a bootstrap token.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::RootCertStore;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use super::{IssuanceRequest, IssuanceResponse, ISSUANCE_PATH};
use crate::IdentityError;

/// Largest answer accepted from the CA.
const MAX_ANSWER: usize = 256 << 10;
/// Time allowed for connecting plus one exchange, unless set otherwise.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The client certificate a renewal presents: the current chain and its key.
pub struct ClientCredentials {
    /// The certificate chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The chain's private key.
    pub key: PrivateKeyDer<'static>,
}

impl std::fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("chain", &self.chain.len())
            .finish_non_exhaustive()
    }
}

/// A client of one issuance API endpoint.
#[derive(Debug, Clone)]
pub struct IssuanceClient {
    tls: Arc<rustls::ClientConfig>,
    host: String,
    port: u16,
    timeout: Duration,
    max_answer: usize,
}

impl IssuanceClient {
    /// A client of `https://host:port` that trusts `roots` and, with `credentials`, presents a
    /// client certificate.
    pub fn new(
        host: &str,
        port: u16,
        roots: RootCertStore,
        credentials: Option<ClientCredentials>,
    ) -> Result<Self, IdentityError> {
        let builder = rustls::ClientConfig::builder_with_provider(crate::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| IdentityError::Tls(e.to_string()))?
            .with_root_certificates(roots);
        let tls = match credentials {
            Some(c) => builder
                .with_client_auth_cert(c.chain, c.key)
                .map_err(|e| IdentityError::Tls(format!("client certificate: {e}")))?,
            None => builder.with_no_client_auth(),
        };
        // Refuse a host name rustls could not check before any connection is tried.
        ServerName::try_from(host.to_owned()).map_err(|e| IdentityError::IssuerUnreachable {
            issuer: format!("{host}:{port}"),
            detail: format!("not a server name: {e}"),
        })?;
        Ok(Self {
            tls: Arc::new(tls),
            host: host.to_owned(),
            port,
            timeout: DEFAULT_TIMEOUT,
            max_answer: MAX_ANSWER,
        })
    }

    /// The longest answer read (default 256 KiB); a longer one is an error.
    pub fn with_max_answer(mut self, bytes: usize) -> Self {
        self.max_answer = bytes;
        self
    }

    /// Time allowed for connecting plus one exchange (default 10 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn issuer(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// Opens a keep-alive connection for several requests.
    pub async fn connect(&self) -> Result<IssuanceConnection, IdentityError> {
        let issuer = self.issuer();
        tokio::time::timeout(self.timeout, self.open())
            .await
            .map_err(|_| IdentityError::IssuerTimeout {
                issuer,
                timeout: self.timeout,
            })?
    }

    async fn open(&self) -> Result<IssuanceConnection, IdentityError> {
        let unreachable = |detail: String| IdentityError::IssuerUnreachable {
            issuer: self.issuer(),
            detail,
        };
        let name = ServerName::try_from(self.host.clone())
            .map_err(|e| unreachable(format!("not a server name: {e}")))?;
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| unreachable(format!("connect: {e}")))?;
        // Requests are small and answered at once: do not wait to coalesce.
        let _ = tcp.set_nodelay(true);
        let tls = tokio_rustls::TlsConnector::from(Arc::clone(&self.tls))
            .connect(name, tcp)
            .await
            .map_err(|e| unreachable(format!("TLS: {e}")))?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| unreachable(format!("HTTP: {e}")))?;
        tokio::spawn(async move {
            // Ends when the sender is dropped or the server closes; nothing to report then.
            let _ = connection.await;
        });
        Ok(IssuanceConnection {
            sender,
            max_answer: self.max_answer,
            issuer: self.issuer(),
        })
    }

    /// One request on a fresh connection, within the client's timeout. `token` is a bootstrap
    /// token (sent as `Authorization: Bearer`), for a first certificate.
    pub async fn issue(
        &self,
        request: &IssuanceRequest,
        token: Option<&str>,
    ) -> Result<IssuanceResponse, IdentityError> {
        let exchange = async {
            let mut connection = self.open().await?;
            connection.issue(request, token).await
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| IdentityError::IssuerTimeout {
                issuer: self.issuer(),
                timeout: self.timeout,
            })?
    }
}

impl IssuanceClient {
    /// `GET path` on a fresh connection with `headers`, within the client's timeout: the
    /// status, headers and body (at most 256 KiB), whatever the status.
    pub async fn get(
        &self,
        path: &str,
        headers: &[(http::HeaderName, String)],
    ) -> Result<(http::StatusCode, http::HeaderMap, Bytes), IdentityError> {
        self.request(http::Method::GET, path, headers, Bytes::new())
            .await
    }

    /// `method path` with `body` on a fresh connection with `headers`, within the client's
    /// timeout: the status, headers and body of the answer, whatever the status.
    pub async fn request(
        &self,
        method: http::Method,
        path: &str,
        headers: &[(http::HeaderName, String)],
        body: Bytes,
    ) -> Result<(http::StatusCode, http::HeaderMap, Bytes), IdentityError> {
        let exchange = async {
            let mut connection = self.open().await?;
            let broken = |detail: String| IdentityError::IssuerUnreachable {
                issuer: self.issuer(),
                detail,
            };
            let mut request = http::Request::builder()
                .method(method)
                .uri(path)
                .header(http::header::HOST, self.issuer());
            for (name, value) in headers {
                request = request.header(name, value);
            }
            let request = request
                .body(Full::new(body))
                .map_err(|e| broken(format!("request: {e}")))?;
            connection.exchange(request).await
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| IdentityError::IssuerTimeout {
                issuer: self.issuer(),
                timeout: self.timeout,
            })?
    }
}

/// An open connection to the issuance API (HTTP/1.1 keep-alive).
pub struct IssuanceConnection {
    sender: SendRequest<Full<Bytes>>,
    max_answer: usize,
    issuer: String,
}

impl std::fmt::Debug for IssuanceConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuanceConnection")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl IssuanceConnection {
    /// Sends `request` and reads the whole answer (at most the client's `max_answer` bytes).
    async fn exchange(
        &mut self,
        request: http::Request<Full<Bytes>>,
    ) -> Result<(http::StatusCode, http::HeaderMap, Bytes), IdentityError> {
        let broken = |detail: String| IdentityError::IssuerUnreachable {
            issuer: self.issuer.clone(),
            detail,
        };
        self.sender
            .ready()
            .await
            .map_err(|e| broken(format!("HTTP: {e}")))?;
        let response = self
            .sender
            .send_request(request)
            .await
            .map_err(|e| broken(format!("HTTP: {e}")))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = Limited::new(response.into_body(), self.max_answer)
            .collect()
            .await
            .map_err(|e| broken(format!("reading the answer: {e}")))?
            .to_bytes();
        Ok((status, headers, body))
    }

    /// Sends one request and reads its answer. A refusal is [`IdentityError::IssuerRefused`]
    /// with the CA's stable code and message.
    pub async fn issue(
        &mut self,
        request: &IssuanceRequest,
        token: Option<&str>,
    ) -> Result<IssuanceResponse, IdentityError> {
        let issuer = self.issuer.clone();
        let answer = |detail: String| IdentityError::IssuerAnswer {
            issuer: issuer.clone(),
            detail,
        };
        let body = serde_json::to_vec(request).map_err(|e| answer(format!("request: {e}")))?;
        let mut http = http::Request::post(ISSUANCE_PATH)
            .header(http::header::HOST, &self.issuer)
            .header(http::header::CONTENT_TYPE, "application/json");
        if let Some(token) = token {
            http = http.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let http = http
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| answer(format!("request: {e}")))?;
        let (status, _, bytes) = self.exchange(http).await?;
        let json: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|_| answer(format!("answered {status} without JSON")))?;
        if status.is_success() {
            return serde_json::from_value(json)
                .map_err(|e| answer(format!("answered {status} with an unreadable body: {e}")));
        }
        let field = |name: &str| json[name].as_str().unwrap_or("-").to_owned();
        Err(IdentityError::IssuerRefused {
            status: status.as_u16(),
            code: field("error"),
            message: field("message"),
        })
    }
}
