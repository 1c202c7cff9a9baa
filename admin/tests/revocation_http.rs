//! Revocation that relying parties other than Portcullis can see: a SoftHSM2-backed CA whose
//! certificates name a CRL distribution point and an OCSP responder on the admin server's
//! plain-HTTP `revocation_http` listener, checked with the real `openssl` and `curl`.

#[path = "support/harness.rs"]
mod harness;
#[path = "../../ca/tests/support/pki.rs"]
mod pki;
#[path = "../../ca/tests/support/softhsm.rs"]
mod softhsm;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use harness::{free_port, write, Workload};
use pki::openssl;
use portcullis_admin::{AdminConfig, AdminServer};
use portcullis_ca::cli::CaCommand;
use portcullis_ca::{
    Ca, CaConfig, IssueRequest, IssuedCertificate, Requester, RequesterKind, RevocationReason,
};

const CA_CONFIG: &str = r#"
state_dir: DIR/state
backend:
  pkcs11:
    module: /usr/lib/softhsm/libsofthsm2.so
    token_label: ca
    pin_file: PIN_FILE
    sessions: 4
keys:
  root_label: rev-root
  issuing_label: rev-issuing
intermediate:
  validity: 30d
crl_distribution_points: ["http://127.0.0.1:PORT/crl.der"]
ocsp_url: http://127.0.0.1:PORT/ocsp
profiles:
  - name: acme
    tenant: acme
    spiffe_ids: ["spiffe://acme.example/ns/**"]
  - name: admin-server
    tenant: platform
    require_spiffe_id: false
    dns_names: ["localhost"]
    client_auth: false
    server_auth: true
"#;

/// A CA whose certificates point at `127.0.0.1:port`, and an admin server serving revocation
/// there.
struct Rig {
    dir: PathBuf,
    ca: Arc<Ca>,
    port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Rig {
    async fn start(hsm: &softhsm::Hsm, name: &str) -> Rig {
        let dir = hsm.dir.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        let yaml = CA_CONFIG
            .replace("DIR", &dir.display().to_string())
            .replace("PIN_FILE", &hsm.pin_file.display().to_string())
            .replace("PORT", &port.to_string())
            .replace("rev-", &format!("{name}-"));
        std::fs::write(dir.join("ca.yaml"), &yaml).unwrap();
        let config = CaConfig::from_yaml(&yaml).unwrap();
        let ca = Arc::new(Ca::init(&config, SystemTime::now()).expect("CA init"));
        let admin = AdminConfig::from_yaml(
            &format!(
                "listen: 127.0.0.1:0\nca: ca.yaml\ntls:\n  self_issue:\n    tenant: platform\n    profile: admin-server\n    dns_names: [localhost]\ncrl_poll_interval: 100ms\nrevocation_http: 127.0.0.1:{port}\n"
            ),
            &dir,
        )
        .unwrap();
        let server = AdminServer::bind_with(&admin, Arc::clone(&ca), None)
            .await
            .expect("bind admin server");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        write(
            &dir,
            "chain.pem",
            &std::fs::read_to_string(dir.join("state/chain.pem")).unwrap(),
        );
        Rig {
            dir,
            ca,
            port,
            stop: Some(stop),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    fn issue(&self, w: &Workload, renews: Option<&IssuedCertificate>) -> IssuedCertificate {
        let req = IssueRequest {
            csr: w.csr.as_bytes(),
            tenant: "acme".parse().unwrap(),
            profile: None,
            lifetime: None,
            requester: Requester {
                kind: RequesterKind::Operator,
                id: "test".into(),
            },
        };
        let now = SystemTime::now();
        match renews {
            Some(current) => self.ca.renew(&req, &current.serial, now).unwrap(),
            None => self.ca.issue(&req, now).unwrap(),
        }
    }

    /// `openssl ocsp` about `cert_file`: its status line and whether the response verified.
    fn ocsp(&self, cert_file: &str) -> String {
        let (ok, out) = openssl(&[
            "ocsp",
            "-issuer",
            &self.path("state/intermediate.pem"),
            "-cert",
            cert_file,
            "-url",
            &self.url("/ocsp"),
            "-CAfile",
            &self.path("chain.pem"),
            "-timeout",
            "10",
        ]);
        assert!(ok, "openssl ocsp failed: {out}");
        assert!(out.contains("Response verify OK"), "{out}");
        assert!(
            !out.to_lowercase().contains("nonce"),
            "nonce not echoed: {out}"
        );
        out
    }

    /// `openssl verify -crl_check -crl_download`: the CRL fetched from the certificate's CDP.
    fn verify_with_crl(&self, cert_file: &str) -> (bool, String) {
        openssl(&[
            "verify",
            "-crl_check",
            "-crl_download",
            "-CAfile",
            &self.path("state/root.pem"),
            "-untrusted",
            &self.path("state/intermediate.pem"),
            cert_file,
        ])
    }

    /// Waits (at most 10 s) until the served CRL lists `n` certificates.
    async fn await_crl_listing(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let der = curl(&["-s", &self.url("/crl.der")]);
            let crl_file = write(&self.dir, "served.crl", "");
            std::fs::write(&crl_file, der).unwrap();
            let (_, text) = openssl(&[
                "crl",
                "-inform",
                "DER",
                "-noout",
                "-text",
                "-in",
                &crl_file.display().to_string(),
            ]);
            if text.matches("Serial Number:").count() == n {
                return;
            }
            assert!(Instant::now() < deadline, "CRL never listed {n}: {text}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn curl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("curl")
        .args(["--max-time", "10"])
        .args(args)
        .output()
        .expect("run curl");
    assert!(out.status.success(), "curl {args:?}: {out:?}");
    out.stdout
}

fn save(dir: &Path, name: &str, cert: &IssuedCertificate) -> String {
    write(dir, name, &cert.cert_pem).display().to_string()
}

const API: &str = "spiffe://acme.example/ns/web/sa/api";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_sees_revocations_through_ocsp_and_the_crl_distribution_point() {
    let Some(hsm) = softhsm::hsm() else { return };
    let rig = Rig::start(hsm, "seen").await;
    let w = Workload::new(Some(API), &[]);
    let first = rig.issue(&w, None);
    let first_file = save(&rig.dir, "first.pem", &first);

    // The certificate says where its status is published.
    let (ok, text) = openssl(&["x509", "-noout", "-text", "-in", &first_file]);
    assert!(ok, "{text}");
    assert!(text.contains("X509v3 CRL Distribution Points"), "{text}");
    assert!(
        text.contains(&format!("URI:{}", rig.url("/crl.der"))),
        "{text}"
    );
    assert!(text.contains("Authority Information Access"), "{text}");
    assert!(
        text.contains(&format!("OCSP - URI:{}", rig.url("/ocsp"))),
        "{text}"
    );

    // Good, by OCSP and by the CRL downloaded from the CDP.
    let out = rig.ocsp(&first_file);
    assert!(out.contains(&format!("{first_file}: good")), "{out}");
    assert!(out.contains("Next Update:"), "{out}");
    let (ok, out) = rig.verify_with_crl(&first_file);
    assert!(ok, "{out}");

    // A serial the CA never issued is unknown.
    let (ok, out) = openssl(&[
        "ocsp",
        "-issuer",
        &rig.path("state/intermediate.pem"),
        "-serial",
        "0x0badc0ffee",
        "-url",
        &rig.url("/ocsp"),
        "-CAfile",
        &rig.path("chain.pem"),
    ]);
    assert!(ok, "{out}");
    assert!(out.contains("0x0badc0ffee: unknown"), "{out}");
    assert!(out.contains("Response verify OK"), "{out}");

    // A renewal, then the original revoked with its lineage: both read revoked.
    let renewed = rig.issue(&w, Some(&first));
    let renewed_file = save(&rig.dir, "renewed.pem", &renewed);
    assert!(rig
        .ocsp(&renewed_file)
        .contains(&format!("{renewed_file}: good")));
    // `portcullis ca revoke SERIAL` (the CLI's own entry point, another CA handle on the
    // same token and inventory, as an operator's shell would be).
    let mut out = Vec::new();
    portcullis_ca::cli::run_with(
        CaCommand::Revoke {
            config: rig.dir.join("ca.yaml"),
            serial: first.serial.to_string(),
            reason: RevocationReason::KeyCompromise,
            only_this: false,
        },
        &mut out,
        SystemTime::now(),
    )
    .unwrap();
    let out = String::from_utf8(out).unwrap();
    assert!(out.contains(&renewed.serial.to_string()), "{out}");
    for file in [&first_file, &renewed_file] {
        let out = rig.ocsp(file);
        assert!(out.contains(&format!("{file}: revoked")), "{out}");
        assert!(out.contains("Reason: keyCompromise"), "{out}");
    }
    rig.await_crl_listing(2).await;
    let (ok, out) = rig.verify_with_crl(&renewed_file);
    assert!(!ok, "{out}");
    assert!(out.contains("certificate revoked"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crl_and_ocsp_get_are_served_with_their_types_and_cache_headers() {
    let Some(hsm) = softhsm::hsm() else { return };
    let rig = Rig::start(hsm, "http").await;
    let head = String::from_utf8(curl(&[
        "-s",
        "-D",
        "-",
        "-o",
        "/dev/null",
        &rig.url("/crl.der"),
    ]))
    .unwrap()
    .to_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(
        head.contains("content-type: application/pkix-crl"),
        "{head}"
    );
    assert!(head.contains("cache-control: public, max-age="), "{head}");
    assert!(
        head.contains("expires: ") && head.contains("last-modified: "),
        "{head}"
    );
    let pem = String::from_utf8(curl(&["-s", &rig.url("/crl.pem")])).unwrap();
    assert!(pem.starts_with("-----BEGIN X509 CRL-----"), "{pem}");

    // The GET form (RFC 6960 A.1): the base64 request in the path, percent-encoded.
    let w = Workload::new(Some(API), &[]);
    let cert = rig.issue(&w, None);
    let cert_file = save(&rig.dir, "get.pem", &cert);
    let req_file = rig.path("req.der");
    let (ok, out) = openssl(&[
        "ocsp",
        "-issuer",
        &rig.path("state/intermediate.pem"),
        "-cert",
        &cert_file,
        "-reqout",
        &req_file,
    ]);
    assert!(ok, "{out}");
    let b64 = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        std::fs::read(&req_file).unwrap(),
    );
    let encoded = b64
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D");
    let resp_file = rig.path("resp.der");
    let head = String::from_utf8(curl(&[
        "-s",
        "-D",
        "-",
        "-o",
        &resp_file,
        &rig.url(&format!("/ocsp/{encoded}")),
    ]))
    .unwrap()
    .to_lowercase();
    assert!(
        head.contains("content-type: application/ocsp-response"),
        "{head}"
    );
    assert!(head.contains("cache-control: public, max-age="), "{head}");
    let (ok, out) = openssl(&[
        "ocsp",
        "-respin",
        &resp_file,
        "-issuer",
        &rig.path("state/intermediate.pem"),
        "-cert",
        &cert_file,
        "-CAfile",
        &rig.path("chain.pem"),
        "-no_nonce",
    ]);
    assert!(ok, "{out}");
    assert!(out.contains(&format!("{cert_file}: good")), "{out}");

    // The responder's certificate: delegated by the intermediate, OCSP signing, no-check.
    let (_, text) = openssl(&["ocsp", "-respin", &resp_file, "-resp_text", "-noverify"]);
    assert!(text.contains("OCSP Signing"), "{text}");
    assert!(text.contains("OCSP No Check"), "{text}");
    assert!(
        text.contains("Issuer: O=Portcullis, CN=Portcullis Issuing CA"),
        "{text}"
    );
    // Its key was generated in the token beside the issuing key, sensitive and not extractable.
    let session = softhsm::raw_session("ca");
    let found = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(b"http-issuing-ocsp".to_vec()),
        ])
        .unwrap();
    assert_eq!(found.len(), 1);
    let attrs = session
        .get_attributes(
            found[0],
            &[AttributeType::Extractable, AttributeType::Sensitive],
        )
        .unwrap();
    assert!(attrs.contains(&Attribute::Extractable(false)), "{attrs:?}");
    assert!(attrs.contains(&Attribute::Sensitive(true)), "{attrs:?}");
}

/// The DER of an `OCSPResponse` whose status is malformedRequest, without response bytes.
const MALFORMED: [u8; 5] = [0x30, 0x03, 0x0a, 0x01, 0x01];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_ocsp_requests_are_answered_malformed_request() {
    let Some(hsm) = softhsm::hsm() else { return };
    let rig = Rig::start(hsm, "fuzz").await;
    // A real request, then every truncation and some bit flips of it, and other junk.
    let w = Workload::new(Some(API), &[]);
    let cert_file = save(&rig.dir, "fuzz.pem", &rig.issue(&w, None));
    let req_file = rig.path("req.der");
    let (ok, out) = openssl(&[
        "ocsp",
        "-issuer",
        &rig.path("state/intermediate.pem"),
        "-cert",
        &cert_file,
        "-reqout",
        &req_file,
    ]);
    assert!(ok, "{out}");
    let real = std::fs::read(&req_file).unwrap();
    let mut inputs: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"hello".to_vec(),
        [0x30, 0x80].repeat(1000),
        vec![0x30, 0x84, 0x7f, 0xff, 0xff, 0xff],
        [real.clone(), vec![0]].concat(),
    ];
    for cut in (1..real.len()).step_by(7) {
        inputs.push(real[..cut].to_vec());
    }
    for at in (0..real.len()).step_by(11) {
        let mut flipped = real.clone();
        flipped[at] ^= 0x80;
        inputs.push(flipped);
    }
    let body = rig.path("body.bin");
    let mut malformed = 0;
    for input in &inputs {
        std::fs::write(&body, input).unwrap();
        let answer = curl(&[
            "-s",
            "-H",
            "Content-Type: application/ocsp-request",
            "--data-binary",
            &format!("@{body}"),
            &rig.url("/ocsp"),
        ]);
        // A flip inside a hash or the serial still parses: then it is a signed "unknown".
        if answer == MALFORMED {
            malformed += 1;
        } else {
            std::fs::write(rig.path("answer.der"), &answer).unwrap();
            let (ok, text) = openssl(&[
                "ocsp",
                "-respin",
                &rig.path("answer.der"),
                "-resp_text",
                "-noverify",
            ]);
            assert!(
                ok && text.contains("OCSP Response Status: successful"),
                "{input:02x?}: {text}"
            );
        }
    }
    assert!(
        malformed >= inputs.len() / 2,
        "{malformed} of {}",
        inputs.len()
    );
    // What openssl reads in it, and the GET form's junk.
    let answer = curl(&["-s", &rig.url("/ocsp/not*base64")]);
    assert_eq!(answer, MALFORMED);
    std::fs::write(rig.path("answer.der"), &answer).unwrap();
    let (_, text) = openssl(&["ocsp", "-respin", &rig.path("answer.der"), "-resp_text"]);
    assert!(text.to_lowercase().contains("malformedrequest"), "{text}");
    // Still answering.
    assert!(rig.ocsp(&cert_file).contains(&format!("{cert_file}: good")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_sends_nothing_is_closed() {
    use tokio::io::AsyncReadExt;
    let Some(hsm) = softhsm::hsm() else { return };
    let rig = Rig::start(hsm, "silent").await;
    let mut silent = tokio::net::TcpStream::connect(("127.0.0.1", rig.port))
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(30), silent.read(&mut buf)).await;
    // Closed (EOF or reset), not left open: by the head deadline (10 s), else the 30 s lifetime.
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
    assert!(
        started.elapsed() < Duration::from_secs(32),
        "{:?}",
        started.elapsed()
    );
    eprintln!("silent connection closed after {:?}", started.elapsed());
    // The listener still answers.
    let head = String::from_utf8(curl(&[
        "-s",
        "-D",
        "-",
        "-o",
        "/dev/null",
        &rig.url("/crl.der"),
    ]))
    .unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}
