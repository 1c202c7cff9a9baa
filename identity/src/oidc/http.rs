//! The HTTPS client `openidconnect` talks to a provider with: one request per connection,
//! `https` only, the restricted rustls provider with the provider's own trust anchors, no
//! redirects (the library's SSRF advice), a deadline and a cap on the answer's size.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use openidconnect::{AsyncHttpClient, HttpRequest, HttpResponse};
use rustls::RootCertStore;
use rustls_pki_types::ServerName;

/// Largest answer read from a provider (discovery documents and key sets are a few KiB).
const MAX_ANSWER: usize = 1 << 20;

/// What a provider exchange failed with.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct FetchError(String);

/// An HTTPS client for one provider.
#[derive(Clone, Debug)]
pub(crate) struct ProviderHttp {
    tls: Arc<rustls::ClientConfig>,
    timeout: Duration,
}

impl ProviderHttp {
    pub(crate) fn new(roots: RootCertStore, timeout: Duration) -> Result<Self, String> {
        let tls = rustls::ClientConfig::builder_with_provider(crate::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self {
            tls: Arc::new(tls),
            timeout,
        })
    }

    /// GETs `url`: the answer's status and body (at most 1 MiB).
    pub(crate) async fn get(&self, url: &str) -> Result<(u16, Vec<u8>), FetchError> {
        let request = http::Request::get(url)
            .body(Vec::new())
            .map_err(|e| FetchError(format!("{url}: {e}")))?;
        let response = self.exchange(request).await?;
        Ok((response.status().as_u16(), response.into_body()))
    }

    async fn exchange(&self, request: HttpRequest) -> Result<HttpResponse, FetchError> {
        tokio::time::timeout(self.timeout, self.exchange_inner(request))
            .await
            .map_err(|_| FetchError(format!("no answer within {:?}", self.timeout)))?
    }

    async fn exchange_inner(&self, request: HttpRequest) -> Result<HttpResponse, FetchError> {
        let uri = request.uri().clone();
        if uri.scheme_str() != Some("https") {
            return Err(FetchError(format!("{uri}: only https is fetched")));
        }
        let host = uri
            .host()
            .ok_or_else(|| FetchError(format!("{uri}: no host")))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(443);
        let name =
            ServerName::try_from(host.clone()).map_err(|e| FetchError(format!("{uri}: {e}")))?;
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| FetchError(format!("{uri}: connect: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let tls = tokio_rustls::TlsConnector::from(Arc::clone(&self.tls))
            .connect(name, tcp)
            .await
            .map_err(|e| FetchError(format!("{uri}: TLS: {e}")))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| FetchError(format!("{uri}: HTTP: {e}")))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let (mut parts, body) = request.into_parts();
        let authority = uri.authority().map(|a| a.as_str().to_owned());
        if let Some(authority) = authority {
            if let Ok(value) = http::HeaderValue::from_str(&authority) {
                parts.headers.insert(http::header::HOST, value);
            }
        }
        // HTTP/1 origin form: the path and query only.
        parts.uri = uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse()
            .map_err(|e| FetchError(format!("{uri}: {e}")))?;
        let request = http::Request::from_parts(parts, Full::new(Bytes::from(body)));
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| FetchError(format!("{uri}: HTTP: {e}")))?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| FetchError(format!("{uri}: reading the answer: {e}")))?
            .to_bytes();
        Ok(http::Response::from_parts(parts, body.to_vec()))
    }
}

impl<'c> AsyncHttpClient<'c> for ProviderHttp {
    type Error = FetchError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, FetchError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(self.exchange(request))
    }
}
