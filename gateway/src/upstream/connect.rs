//! TLS to an upstream, made here rather than by pingora: pingora 0.9's rustls connector checks a
//! server by DNS name only and builds a new rustls config for every connection. Each TLS pool
//! keeps one config (the restricted provider, its trust anchors, its client certificate and a
//! [`ServerIdentityVerifier`] that checks the name, the SPIFFE ID or both) and hands pingora a
//! finished TLS stream as a "virtual" socket, over which pingora then speaks plain HTTP.
//!
//! An upstream that chains to the anchors but shows another identity fails with
//! [`IDENTITY_MISMATCH`], counted apart from other handshake failures.

use std::net::SocketAddr as InetSocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::connectors::L4Connect;
use pingora_core::protocols::l4::socket::SocketAddr;
use pingora_core::protocols::l4::stream::Stream;
use pingora_core::protocols::l4::virt::{VirtualSockOpt, VirtualSocket, VirtualSocketStream};
use pingora_core::{Error, ErrorType, Result};
use portcullis_identity::{is_identity_mismatch, ServerIdentity, ServerIdentityVerifier};
use portcullis_policy::{UpstreamProtocol, UpstreamTls as TlsConfig};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::tls::{load_certs, load_key};
use crate::GatewayError;

/// The error type of a handshake whose server was not the one the upstream names.
pub(crate) const IDENTITY_MISMATCH: ErrorType = ErrorType::Custom("UpstreamIdentityMismatch");

/// Makes TLS connections to one pool's targets.
#[derive(Debug)]
pub(crate) struct TlsConnect {
    config: Arc<ClientConfig>,
    /// SNI and name to verify; `None`: no SNI, the target's address stands in for rustls.
    server_name: Option<ServerName<'static>>,
    timeout: Duration,
    /// Keeps this pool's idle connections apart from any other's in pingora's connection
    /// pool (which knows these peers only as plain HTTP to an address).
    pub(crate) group: u64,
}

impl TlsConnect {
    pub(crate) fn new(
        upstream: &str,
        tls: &TlsConfig,
        protocol: UpstreamProtocol,
        timeout: Duration,
    ) -> Result<Self, GatewayError> {
        let bad =
            |e: &dyn std::fmt::Display| GatewayError::Upstream(format!("upstream {upstream}: {e}"));
        let roots = match &tls.ca {
            Some(path) => {
                portcullis_identity::root_store(load_certs(path)?, &path.display().to_string())?
            }
            None => RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            },
        };
        let verifier = ServerIdentityVerifier::new(
            Arc::new(roots),
            ServerIdentity {
                check_name: tls.server_name.is_some(),
                spiffe_ids: tls.spiffe_id.clone(),
            },
        )?;
        let builder = ClientConfig::builder_with_provider(portcullis_identity::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| bad(&e))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier));
        let mut config = match &tls.client_cert {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => builder
                .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
                .map_err(|e| bad(&e))?,
        };
        // One protocol offered: pingora cannot see what a virtual socket negotiated, so it
        // speaks what the config says.
        config.alpn_protocols = vec![match protocol {
            UpstreamProtocol::Http1 => b"http/1.1".to_vec(),
            UpstreamProtocol::Http2 => b"h2".to_vec(),
        }];
        let server_name = match &tls.server_name {
            None => None,
            Some(name) => Some(ServerName::try_from(name.clone()).map_err(|e| bad(&e))?),
        };
        static GROUPS: AtomicU64 = AtomicU64::new(1);
        Ok(Self {
            config: Arc::new(config),
            server_name,
            timeout,
            group: GROUPS.fetch_add(1, Ordering::Relaxed),
        })
    }

    async fn handshake(&self, addr: InetSocketAddr) -> Result<TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(addr).await.map_err(|e| {
            let kind = match e.kind() {
                std::io::ErrorKind::ConnectionRefused => ErrorType::ConnectRefused,
                _ => ErrorType::ConnectError,
            };
            Error::because(kind, format!("connecting to {addr}"), e)
        })?;
        let _ = tcp.set_nodelay(true);
        let name = self
            .server_name
            .clone()
            .unwrap_or_else(|| ServerName::IpAddress(addr.ip().into()));
        TlsConnector::from(Arc::clone(&self.config))
            .connect(name, tcp)
            .await
            .map_err(|e| {
                let rustls_error = e
                    .get_ref()
                    .and_then(|inner| inner.downcast_ref::<rustls::Error>());
                let kind = match rustls_error {
                    Some(r) if is_identity_mismatch(r) => IDENTITY_MISMATCH,
                    Some(rustls::Error::InvalidCertificate(_)) => ErrorType::InvalidCert,
                    _ => ErrorType::TLSHandshakeFailure,
                };
                Error::because(kind, format!("TLS handshake with {addr}"), e)
            })
    }
}

#[async_trait]
impl L4Connect for TlsConnect {
    async fn connect(&self, addr: &SocketAddr) -> Result<Stream> {
        let Some(inet) = addr.as_inet() else {
            return Error::e_explain(ErrorType::ConnectError, "upstream TLS needs an IP address");
        };
        let tls = tokio::time::timeout(self.timeout, self.handshake(*inet))
            .await
            .map_err(|_| {
                Error::explain(
                    ErrorType::ConnectTimedout,
                    format!("connecting to {inet} with TLS: over {:?}", self.timeout),
                )
            })??;
        Ok(VirtualSocketStream::new(Box::new(TlsSocket(tls))).into())
    }
}

/// A finished TLS connection, which pingora reads and writes as if it were a socket.
struct TlsSocket(TlsStream<TcpStream>);

impl std::fmt::Debug for TlsSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsSocket")
    }
}

impl VirtualSocket for TlsSocket {
    fn set_socket_option(&self, opt: VirtualSockOpt) -> std::io::Result<()> {
        match opt {
            VirtualSockOpt::NoDelay => self.0.get_ref().0.set_nodelay(true),
            _ => Ok(()),
        }
    }
}

impl AsyncRead for TlsSocket {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsSocket {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}
