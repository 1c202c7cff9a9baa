//! The central store's connection: PostgreSQL over TLS with `verify-full` semantics (the
//! server's certificate must chain to the configured CA and name the host the connection string
//! names), or in clear only when the operator said so explicitly.
//!
//! The TLS client configuration (trust anchors, optional client certificate, the restricted
//! provider) is built by the caller and handed in: this crate loads no TLS material.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::head::AuditHead;
use crate::sink::{with_causes, SinkError};

/// Connection attempts give up after this long unless the connection string says otherwise.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How the connection to the central store is protected.
#[derive(Clone)]
#[non_exhaustive]
pub enum StoreTls {
    /// TLS is required (never a fallback to clear text) and the server is verified by this
    /// client configuration: its roots are the CA that signed the server's certificate, and
    /// the host name of the connection string is checked against the certificate. A client
    /// certificate, if the configuration has one, is presented.
    Verified(Arc<rustls::ClientConfig>),
    /// No TLS: the connection string (password included) and every record cross the network in
    /// clear. Only when configured explicitly (`insecure_plaintext: true`).
    InsecurePlaintext,
}

impl std::fmt::Debug for StoreTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StoreTls::Verified(_) => "Verified",
            StoreTls::InsecurePlaintext => "InsecurePlaintext",
        })
    }
}

/// Where the central store is and how to reach it. The connection string is a secret: it is
/// never shown by `Debug` or in errors.
#[derive(Clone)]
pub struct CentralStore {
    config: tokio_postgres::Config,
    tls: Option<MakeRustlsConnect>,
}

impl std::fmt::Debug for CentralStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CentralStore")
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl CentralStore {
    /// Checks a libpq-style connection string (`host=… user=… dbname=…` or a
    /// `postgresql://` URL) against the TLS setting: a string asking for `sslmode=disable`
    /// needs [`StoreTls::InsecurePlaintext`], one asking for `sslmode=require` needs a
    /// verifying configuration. With TLS the mode is always `require` (no clear-text fallback).
    pub fn new(conninfo: &str, tls: StoreTls) -> Result<Self, SinkError> {
        let mut config = tokio_postgres::Config::from_str(conninfo).map_err(|e| {
            SinkError::Config(format!(
                "connection string: {} (sslmode may be disable, prefer or require; TLS is \
                 always verified in full)",
                with_causes(&e)
            ))
        })?;
        match (&tls, config.get_ssl_mode()) {
            (StoreTls::Verified(_), SslMode::Disable) => {
                return Err(SinkError::Config(
                    "the connection string says sslmode=disable but TLS is configured; \
                     set insecure_plaintext to ship in clear"
                        .into(),
                ))
            }
            (StoreTls::InsecurePlaintext, SslMode::Require) => {
                return Err(SinkError::Config(
                    "the connection string asks for TLS (sslmode=require) but no CA is \
                     configured to verify the server with"
                        .into(),
                ))
            }
            (StoreTls::Verified(_), _) => config.ssl_mode(SslMode::Require),
            (StoreTls::InsecurePlaintext, _) => config.ssl_mode(SslMode::Disable),
        };
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
        }
        let tls = match tls {
            StoreTls::Verified(tls) => Some(MakeRustlsConnect::new(Arc::unwrap_or_clone(tls))),
            StoreTls::InsecurePlaintext => None,
        };
        Ok(CentralStore { config, tls })
    }

    /// Opens a connection; the connection's task ends when the returned session is dropped.
    pub(crate) async fn connect(&self) -> Result<StoreSession, SinkError> {
        let (client, task) = match &self.tls {
            Some(tls) => {
                let (client, conn) = self.config.connect(tls.clone()).await?;
                (client, tokio::spawn(drive(conn)))
            }
            None => {
                let (client, conn) = self.config.connect(NoTls).await?;
                (client, tokio::spawn(drive(conn)))
            }
        };
        Ok(StoreSession { client, task })
    }

    /// The head (latest signed checkpoint) the sink last published for `node`, if any. Its
    /// signature is not checked here: see [`AuditHead::verify`].
    pub async fn head(&self, node: &str) -> Result<Option<AuditHead>, SinkError> {
        let session = self.connect().await?;
        let row = session
            .client
            .query_opt("SELECT record FROM audit_heads WHERE node = $1", &[&node])
            .await?;
        let Some(row) = row else { return Ok(None) };
        let line: String = row.get(0);
        AuditHead::parse(&line)
            .map(Some)
            .map_err(|e| SinkError::Config(format!("the store's head for node {node}: {e}")))
    }
}

async fn drive<C: std::future::Future<Output = Result<(), tokio_postgres::Error>>>(conn: C) {
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "audit store: connection closed");
    }
}

/// An open connection to the store.
pub(crate) struct StoreSession {
    pub(crate) client: Client,
    task: JoinHandle<()>,
}

impl Drop for StoreSession {
    fn drop(&mut self) {
        self.task.abort();
    }
}
