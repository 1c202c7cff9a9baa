//! The side-by-side target of `portcullis-issue-bench --cfssl`: `cfssl serve` (Debian
//! `golang-cfssl`) with a P-256 CA key in a plain file, signing CSRs at
//! `POST /api/v1/cfssl/sign` over plain HTTP/1.1 keep-alive, from as many clients as the API
//! figure has, for as long.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use crate::{csr, Figure};

/// Kills `cfssl serve` when the figure ends, however it ends.
struct Serving(Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Measures `cfssl serve` signing with `clients` keep-alive clients; None when `cfssl` is not
/// installed.
pub(crate) async fn cfssl_figure(
    dir: &Path,
    clients: usize,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<Option<Figure>> {
    if Command::new("cfssl").arg("version").output().is_err() {
        eprintln!("  cfssl not found (apt-get install -y golang-cfssl): no cfssl figure");
        return Ok(None);
    }
    let dir = dir.join("cfssl");
    std::fs::create_dir_all(&dir)?;
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
    let _serving = Serving(
        Command::new("cfssl")
            .args(["serve", "-address", "127.0.0.1", "-port", &port.to_string()])
            .args(["-ca", &arg("ca.pem"), "-ca-key", &arg("ca-key.pem")])
            .args(["-config", &arg("config.json"), "-loglevel", "5"])
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
        tasks.push(tokio::spawn(sign_loop(addr, body, measuring, stop)));
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
    let figure = Figure {
        name: format!("cfssl serve sign (file key), {clients} keep-alive clients"),
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
    addr: std::net::SocketAddr,
    body: String,
    measuring: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<(u64, u64)> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
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
