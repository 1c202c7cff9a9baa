//! `portcullis-bench-idp`, driven as `bench/run.sh` drives it (the real binary, the bench PKI
//! from `portcullis-load certs`), checked with the gateway's own OIDC code: discovery and the
//! key set fetched over TLS against the bench CA, the token it wrote verified for the issuer,
//! audience and groups the bench configures.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use portcullis_identity::oidc::{
    verify, ClaimNames, KeySet, ProviderSettings, SigningAlgorithm, TokenError,
};

const IDP: &str = env!("CARGO_BIN_EXE_portcullis-bench-idp");
const LOAD: &str = env!("CARGO_BIN_EXE_portcullis-load");

/// Stops the child when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn roots(ca: &Path) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    for cert in portcullis_identity::load_certs(ca).unwrap() {
        roots.add(cert).unwrap();
    }
    roots
}

fn settings(issuer: &str, audience: &str) -> ProviderSettings {
    ProviderSettings {
        name: "bench-idp".into(),
        tenant: "bench".into(),
        issuer: issuer.into(),
        audiences: vec![audience.into()],
        algorithms: vec![SigningAlgorithm::ES256],
        clock_skew: Duration::from_secs(60),
        claims: ClaimNames::default(),
    }
}

#[tokio::test]
async fn discovery_keys_and_token_verify_with_the_gateway_code() {
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new(LOAD)
        .args(["certs", "--out"])
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    // A free loopback port (released just before the provider binds it).
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let token_path = dir.path().join("token");
    let _idp = Running(
        Command::new(IDP)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--cert")
            .arg(dir.path().join("server.pem"))
            .arg("--key")
            .arg(dir.path().join("server.key"))
            .arg("--token-out")
            .arg(&token_path)
            .args([
                "--audience",
                "https://bench.local/api",
                "--group",
                "bench-eng",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !token_path.exists() {
        assert!(Instant::now() < deadline, "no token written");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let token = std::fs::read_to_string(&token_path).unwrap();
    let token = token.trim();

    let issuer = format!("https://127.0.0.1:{port}");
    let keys = KeySet::new(
        &issuer,
        roots(&dir.path().join("ca.pem")),
        Duration::from_secs(1),
    )
    .unwrap();
    assert_eq!(keys.refresh().await, Ok(1), "discovery and one key");

    let ok = verify(
        token,
        &keys,
        &settings(&issuer, "https://bench.local/api"),
        SystemTime::now(),
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!(ok.subject, "bench-user");
    assert_eq!(ok.groups, ["bench-eng"]);
    assert!(ok.expires_at > ok.claims["iat"].as_u64().unwrap() + 3600);

    let other_audience = verify(
        token,
        &keys,
        &settings(&issuer, "https://elsewhere.example"),
        SystemTime::now(),
        |_| {},
    )
    .await;
    assert_eq!(other_audience, Err(TokenError::Audience));
}
