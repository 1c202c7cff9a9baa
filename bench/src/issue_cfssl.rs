//! The side-by-side target of `portcullis-issue-bench --cfssl`: `cfssl serve` (Debian
//! `golang-cfssl`) with a P-256 CA key in a plain file, signing CSRs at
//! `POST /api/v1/cfssl/sign` over HTTP/1.1 keep-alive, from as many clients as the API
//! figure has, for as long — once in plain HTTP (cfssl's default), once over mutual TLS
//! (`-tls-cert`, `-tls-key`, `-mutual-tls-ca`; P-256 server and client keys, as the API's),
//! which is the like-for-like comparison with the API's keep-alive mTLS renewals. cfssl keeps
//! no inventory here (no `-db-config`): it writes nothing per certificate.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

use crate::{csr, Figure};

/// How the cfssl clients reach `cfssl serve`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    /// Plain HTTP/1.1 (cfssl's default).
    Plain,
    /// HTTP/1.1 over TLS with a client certificate, as the API's clients.
    MutualTls,
}

/// Kills `cfssl serve` when the figure ends, however it ends.
struct Serving(Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The TLS side of the mTLS figure: a TLS CA of its own, the server's certificate for
/// `localhost`, and the clients' connector with a client certificate.
struct TlsSetup {
    connector: tokio_rustls::TlsConnector,
}

fn tls_setup(dir: &Path) -> anyhow::Result<TlsSetup> {
    let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut ca_params = rcgen::CertificateParams::default();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "cfssl bench TLS CA");
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca_params, &ca_key);
    let server_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let server = rcgen::CertificateParams::new(vec!["localhost".to_owned()])?
        .signed_by(&server_key, &issuer)?;
    let client_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut client_params = rcgen::CertificateParams::default();
    client_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "bench-client");
    client_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let client = client_params.signed_by(&client_key, &issuer)?;
    std::fs::write(dir.join("tls-ca.pem"), ca_cert.pem())?;
    std::fs::write(dir.join("tls-server.pem"), server.pem())?;
    std::fs::write(dir.join("tls-server-key.pem"), server_key.serialize_pem())?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca_cert.der().clone())?;
    let mut config = rustls::ClientConfig::builder_with_provider(portcullis_identity::provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![client.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(client_key.serialize_der())),
        )?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsSetup {
        connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
    })
}

/// Measures `cfssl serve` signing with `clients` keep-alive clients over `transport`; None
/// when `cfssl` is not installed.
pub(crate) async fn cfssl_figure(
    dir: &Path,
    clients: usize,
    warmup: Duration,
    duration: Duration,
    transport: Transport,
) -> anyhow::Result<Option<Figure>> {
    if Command::new("cfssl").arg("version").output().is_err() {
        eprintln!("  cfssl not found (apt-get install -y golang-cfssl): no cfssl figure");
        return Ok(None);
    }
    let dir = dir.join(match transport {
        Transport::Plain => "cfssl",
        Transport::MutualTls => "cfssl-mtls",
    });
    std::fs::create_dir_all(&dir)?;
    let tls = match transport {
        Transport::Plain => None,
        Transport::MutualTls => Some(tls_setup(&dir)?),
    };
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::default();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "cfssl bench CA");
    let ca = params.self_signed(&key)?;
    std::fs::write(dir.join("ca.pem"), ca.pem())?;
    std::fs::write(dir.join("ca-key.pem"), key.serialize_pem())?;
    std::fs::write(
        dir.join("config.json"),
        r#"{"signing":{"default":{"expiry":"1h","usages":["digital signature","client auth"]}}}"#,
    )?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let arg = |name: &str| dir.join(name).display().to_string();
    let mut command = Command::new("cfssl");
    command
        .args(["serve", "-address", "127.0.0.1", "-port", &port.to_string()])
        .args(["-ca", &arg("ca.pem"), "-ca-key", &arg("ca-key.pem")])
        .args(["-config", &arg("config.json"), "-loglevel", "5"]);
    if tls.is_some() {
        command
            .args(["-tls-cert", &arg("tls-server.pem")])
            .args(["-tls-key", &arg("tls-server-key.pem")])
            .args(["-mutual-tls-ca", &arg("tls-ca.pem")]);
    }
    let _serving = Serving(
        command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting cfssl serve")?,
    );
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let since = Instant::now();
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        if since.elapsed() > Duration::from_secs(10) {
            bail!("cfssl serve did not listen on {addr} within 10 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for i in 0..clients {
        let body = serde_json::json!({
            "certificate_request": csr(&format!("spiffe://bench.example/ns/bench/sa/cfssl-{i}"))?.0
        })
        .to_string();
        let (measuring, stop) = (Arc::clone(&measuring), Arc::clone(&stop));
        let connector = tls.as_ref().map(|t| t.connector.clone());
        tasks.push(tokio::spawn(async move {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            // As the API's clients (IssuanceClient) do.
            tcp.set_nodelay(true)?;
            match connector {
                None => sign_loop(tcp, body, measuring, stop).await,
                Some(connector) => {
                    let name = ServerName::try_from("localhost")?;
                    let stream = connector.connect(name, tcp).await?;
                    sign_loop(stream, body, measuring, stop).await
                }
            }
        }));
    }
    tokio::time::sleep(warmup).await;
    measuring.store(true, Ordering::Relaxed);
    let start = Instant::now();
    tokio::time::sleep(duration).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (mut ops, mut errors) = (0, 0);
    for t in tasks {
        let (ok, failed) = t.await??;
        ops += ok;
        errors += failed;
    }
    let how = match transport {
        Transport::Plain => "HTTP",
        Transport::MutualTls => "mTLS",
    };
    let figure = Figure {
        name: format!("cfssl serve sign (file key), {clients} keep-alive {how} clients"),
        ops,
        errors,
        elapsed,
        latency_us: None,
    };
    eprintln!("  {}: {:.0}/s", figure.name, figure.rate());
    Ok(Some(figure))
}

/// One client: signs back to back on one connection; counts answers while measuring.
async fn sign_loop(
    stream: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    body: String,
    measuring: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<(u64, u64)> {
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let (mut ok, mut errors) = (0, 0);
    while !stop.load(Ordering::Relaxed) {
        let request = http::Request::post("/api/v1/cfssl/sign")
            .header(http::header::HOST, "127.0.0.1")
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.clone())))?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        let answer = response.into_body().collect().await?.to_bytes();
        let signed = status.is_success()
            && serde_json::from_slice::<serde_json::Value>(&answer)
                .is_ok_and(|v| v["success"] == true);
        if measuring.load(Ordering::Relaxed) {
            if signed {
                ok += 1;
            } else {
                errors += 1;
            }
        }
    }
    Ok((ok, errors))
}
