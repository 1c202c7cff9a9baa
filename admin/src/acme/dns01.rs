//! dns-01 validation (RFC 8555 §8.4): a TXT record at `_acme-challenge.NAME` holding the
//! base64url SHA-256 of the key authorization, asked of the configured resolver (no cache, so
//! a record just published is seen).

use std::net::SocketAddr;
use std::time::Duration;

use axum::http::StatusCode;
use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::TokioResolver;

use super::jws::b64;
use super::Problem;

/// A resolver asking only `server`.
pub(super) fn resolver(server: SocketAddr) -> TokioResolver {
    let servers = NameServerConfigGroup::from_ips_clear(&[server.ip()], server.port(), true);
    let mut builder = TokioResolver::builder_with_config(
        ResolverConfig::from_parts(None, vec![], servers),
        TokioConnectionProvider::default(),
    );
    let opts = builder.options_mut();
    opts.cache_size = 0;
    opts.timeout = Duration::from_secs(5);
    opts.attempts = 2;
    builder.build()
}

/// Looks up `_acme-challenge.NAME` and compares its TXT records with the digest.
pub(super) async fn validate(
    resolver: &TokioResolver,
    name: &str,
    key_authorization: &str,
) -> Result<(), Problem> {
    let expected =
        b64(ring::digest::digest(&ring::digest::SHA256, key_authorization.as_bytes()).as_ref());
    let query = format!("_acme-challenge.{name}.");
    let lookup = tokio::time::timeout(Duration::from_secs(15), resolver.txt_lookup(query.as_str()))
        .await
        .map_err(|_| {
            Problem::new(
                StatusCode::FORBIDDEN,
                "dns",
                format!("looking up {query} timed out"),
            )
        })?
        .map_err(|_| {
            Problem::new(
                StatusCode::FORBIDDEN,
                "dns",
                format!("no TXT record at {query}"),
            )
        })?;
    let found = lookup
        .iter()
        .take(32)
        .any(|txt| txt.txt_data().concat() == expected.as_bytes());
    if found {
        Ok(())
    } else {
        Err(Problem::new(
            StatusCode::FORBIDDEN,
            "incorrectResponse",
            format!("no TXT record at {query} holds the key authorization's digest"),
        ))
    }
}
