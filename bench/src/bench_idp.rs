//! `portcullis-bench-idp`: a static OpenID Connect provider for the benchmark, loopback only.
//! It makes one ES256 (P-256) key, serves over TLS (the bench's localhost server certificate)
//! exactly two documents, the discovery document at `/.well-known/openid-configuration` and
//! the key set at `/jwks.json`, and writes one bearer token signed with that key to a file.
//! The issuer is `https://127.0.0.1:PORT`. `bench/run.sh` points the `portcullis-bearer`
//! target's tenant at it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use clap::Parser;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// The key's id in the key set and in the token header.
const KID: &str = "bench-1";

#[derive(Parser)]
#[command(name = "portcullis-bench-idp", version, about)]
struct Cli {
    /// Loopback address to serve on; the issuer is `https://` this address.
    #[arg(long, default_value = "127.0.0.1:18950")]
    listen: SocketAddr,
    /// Server certificate chain (PEM), valid for 127.0.0.1.
    #[arg(long)]
    cert: PathBuf,
    /// Its private key (PEM).
    #[arg(long)]
    key: PathBuf,
    /// Write the bearer token here (written once the listener is bound).
    #[arg(long)]
    token_out: PathBuf,
    /// The token's `aud`.
    #[arg(long, default_value = "https://bench.local/api")]
    audience: String,
    /// The token's `sub`.
    #[arg(long, default_value = "bench-user")]
    subject: String,
    /// The token's `groups` (repeat for more).
    #[arg(long = "group", default_value = "bench-eng")]
    groups: Vec<String>,
    /// How long the token is valid.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "24h")]
    lifetime: Duration,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the async runtime")
        .and_then(|rt| rt.block_on(serve(cli)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("portcullis-bench-idp: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The two documents, by path.
struct Documents {
    discovery: Bytes,
    jwks: Bytes,
}

async fn serve(cli: Cli) -> anyhow::Result<()> {
    if !cli.listen.ip().is_loopback() {
        bail!(
            "--listen {}: only loopback addresses are allowed",
            cli.listen
        );
    }
    let issuer = format!("https://{}", cli.listen);
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .map_err(|_| anyhow::anyhow!("generate the signing key"))?;
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
        .map_err(|_| anyhow::anyhow!("load the signing key"))?;
    // Uncompressed point: 0x04 || x (32 bytes) || y (32 bytes).
    let point = key.public_key().as_ref();
    if point.len() != 65 {
        bail!("unexpected P-256 public key length {}", point.len());
    }
    let jwks = json!({ "keys": [{
        "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": KID,
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
        "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
    }]});
    let discovery = json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}/jwks.json"),
        "authorization_endpoint": format!("{issuer}/authorize"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
    });
    let docs = Arc::new(Documents {
        discovery: Bytes::from(serde_json::to_vec(&discovery)?),
        jwks: Bytes::from(serde_json::to_vec(&jwks)?),
    });

    let tls = tls_config(&cli)?;
    let listener = TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("bind {}", cli.listen))?;

    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let claims = json!({
        "iss": issuer,
        "sub": cli.subject,
        "aud": cli.audience,
        "iat": now,
        "exp": now + cli.lifetime.as_secs(),
        "groups": cli.groups,
    });
    let token = sign(&key, &rng, &claims)?;
    // Written whole, then renamed: a reader never sees half a token.
    let tmp = cli.token_out.with_extension("tmp");
    std::fs::write(&tmp, format!("{token}\n"))
        .with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, &cli.token_out)
        .with_context(|| format!("write {}", cli.token_out.display()))?;
    eprintln!(
        "portcullis-bench-idp: issuer {issuer}, token in {}",
        cli.token_out.display()
    );

    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("portcullis-bench-idp: accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let tls = tls.clone();
        let docs = Arc::clone(&docs);
        tokio::spawn(async move {
            let Ok(Ok(stream)) =
                tokio::time::timeout(Duration::from_secs(5), tls.accept(tcp)).await
            else {
                return;
            };
            let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let docs = Arc::clone(&docs);
                async move { Ok::<_, Infallible>(answer(&docs, req.uri().path())) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn answer(docs: &Documents, path: &str) -> hyper::Response<Full<Bytes>> {
    let (status, body) = match path {
        "/.well-known/openid-configuration" => (200, docs.discovery.clone()),
        "/jwks.json" => (200, docs.jwks.clone()),
        _ => (404, Bytes::from_static(b"{\"error\":\"not found\"}")),
    };
    hyper::Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(body))
        // Invariant: a fixed status and header.
        .expect("static response parts are valid")
}

/// A compact JWS (ES256) of `claims`.
fn sign(
    key: &EcdsaKeyPair,
    rng: &SystemRandom,
    claims: &serde_json::Value,
) -> anyhow::Result<String> {
    let header = json!({ "alg": "ES256", "typ": "JWT", "kid": KID });
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header)?),
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims)?)
    );
    let signature = key
        .sign(rng, input.as_bytes())
        .map_err(|_| anyhow::anyhow!("sign the token"))?;
    Ok(format!(
        "{input}.{}",
        URL_SAFE_NO_PAD.encode(signature.as_ref())
    ))
}

fn tls_config(cli: &Cli) -> anyhow::Result<TlsAcceptor> {
    let certs = portcullis_identity::load_certs(&cli.cert)?;
    let key = portcullis_identity::load_private_key(&cli.key)?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS versions")?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .context("server certificate and key")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
