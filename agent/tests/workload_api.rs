//! The agent end to end: a SoftHSM2-backed CA behind the real admin API server (on loopback,
//! with an `agents:` grant), the agent obtaining its node certificate with a bootstrap token,
//! and real Workload API clients on its Unix socket — the PyPI `spiffe` client (py-spiffe) in
//! a Python process, and a tonic client from this test for the refusals.

#[path = "../../ca/tests/support/softhsm.rs"]
mod softhsm;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use portcullis_admin::{create_token, AdminConfig, AdminServer, SqliteTokenStore, TokenStore};
use portcullis_agent::proto::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use portcullis_agent::proto::{X509BundlesRequest, X509svidRequest};
use portcullis_agent::{AgentConfig, SECURITY_HEADER};
use portcullis_ca::{Ca, CaConfig};

const NODE: &str = "spiffe://agent.test/node/n1";
const PYTHON_ID: &str = "spiffe://acme.test/ns/web/sa/python";
const RUST_ID: &str = "spiffe://acme.test/ns/web/sa/rust";
/// Short enough to see a rotation (at half of it) within a test.
const SVID_LIFETIME_S: u64 = 8;

const CA_CONFIG: &str = r#"
state_dir: DIR/state
backend:
  pkcs11:
    module: /usr/lib/softhsm/libsofthsm2.so
    token_label: ca
    pin_file: PIN_FILE
    sessions: 4
keys:
  root_label: agent-root
  issuing_label: agent-issuing
intermediate:
  validity: 30d
profiles:
  - name: nodes
    tenant: platform
    spiffe_ids: ["spiffe://agent.test/node/*"]
  - name: web
    tenant: acme
    spiffe_ids: ["spiffe://acme.test/ns/**"]
    dns_names: ["*.acme.test"]
    max_lifetime: 1h
    default_lifetime: 30m
  - name: admin-server
    tenant: infra
    require_spiffe_id: false
    dns_names: ["localhost"]
    client_auth: false
    server_auth: true
"#;

struct Fixture {
    dir: PathBuf,
    ca: Arc<Ca>,
    tokens: SqliteTokenStore,
}

/// One CA for the test binary; None when SoftHSM2 is missing. Logs go to the test's output
/// (`PORTCULLIS_LOG` filters, default `info`).
fn fixture() -> Option<&'static Fixture> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PORTCULLIS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
    static FIXTURE: OnceLock<Option<Fixture>> = OnceLock::new();
    FIXTURE
        .get_or_init(|| {
            let hsm = softhsm::hsm()?;
            let dir = hsm.dir.join("agent");
            std::fs::create_dir_all(&dir).unwrap();
            let yaml = CA_CONFIG
                .replace("DIR", &dir.display().to_string())
                .replace("PIN_FILE", &hsm.pin_file.display().to_string());
            std::fs::write(dir.join("ca.yaml"), &yaml).unwrap();
            let config = CaConfig::from_yaml(&yaml).expect("CA config");
            let ca = Arc::new(Ca::init(&config, SystemTime::now()).expect("CA init"));
            let tokens = SqliteTokenStore::in_state_dir(ca.state_dir()).unwrap();
            Some(Fixture { dir, ca, tokens })
        })
        .as_ref()
}

/// The admin API (with the agent's grant) on loopback, stopped when dropped.
struct Admin {
    port: u16,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start_admin(fx: &Fixture) -> Admin {
    let yaml = format!(
        "listen: 127.0.0.1:0\nca: ca.yaml\ntls:\n  self_issue: {{ tenant: infra, profile: \
         admin-server, dns_names: [localhost] }}\nagents:\n  - spiffe_id: \"{NODE}\"\n    \
         tenant: platform\n    grants:\n      - tenant: acme\n        spiffe_ids: \
         [\"spiffe://acme.test/ns/web/**\"]\n"
    );
    let config = AdminConfig::from_yaml(&yaml, &fx.dir).expect("admin config");
    let server = AdminServer::bind_with(&config, Arc::clone(&fx.ca), None)
        .await
        .expect("admin server");
    let port = server.local_addr().port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    Admin { port, _stop: stop }
}

/// A folder for one agent: its node token, files and socket; readable by every user (the
/// socket's folder must be reachable by workloads of other users).
fn agent_dir(fx: &Fixture) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let store: &dyn TokenStore = &fx.tokens;
    let (token, _) = create_token(
        store,
        "platform".parse().unwrap(),
        Some(NODE.to_owned()),
        Duration::from_secs(600),
        None,
        SystemTime::now(),
    )
    .unwrap();
    std::fs::write(dir.path().join("node.token"), token.expose()).unwrap();
    dir
}

/// An agent config: `workloads` is the YAML list of entries.
fn agent_config(fx: &Fixture, admin: &Admin, dir: &Path, workloads: &str) -> AgentConfig {
    let yaml = format!(
        "socket: run/workload.sock\nadmin:\n  url: https://localhost:{port}\n  ca: {bundle}\n\
         node:\n  spiffe_id: \"{NODE}\"\n  certificate: node.pem\n  private_key: node.key\n  \
         bootstrap_token_file: node.token\nsvid_lifetime: {SVID_LIFETIME_S}s\nworkloads:\n{workloads}",
        port = admin.port,
        bundle = fx.ca.state_dir().join("bundle.pem").display(),
    );
    AgentConfig::from_yaml(&yaml, dir).expect("agent config")
}

/// Starts the agent on this runtime and waits for its socket.
async fn start_agent(config: AgentConfig) -> tokio::sync::oneshot::Sender<()> {
    let socket = config.socket.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(portcullis_agent::serve(config, async {
        let _ = stopped.await;
    }));
    let start = Instant::now();
    while !socket.exists() {
        assert!(!task.is_finished(), "agent stopped: {:?}", task.await);
        assert!(start.elapsed() < Duration::from_secs(20), "no agent socket");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop
}

/// This process's uid (the owner of a file it just made).
fn my_uid(dir: &Path) -> u32 {
    use std::os::unix::fs::MetadataExt;
    let probe = dir.join("uid-probe");
    std::fs::write(&probe, b"").unwrap();
    std::fs::metadata(&probe).unwrap().uid()
}

/// The executable `/proc/PID/exe` names for `python3` (not a shim or symlink in front of it).
fn python_exe() -> PathBuf {
    let out = std::process::Command::new("python3")
        .args(["-c", "import os; print(os.readlink('/proc/self/exe'))"])
        .output()
        .expect("python3");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

async fn run_python(socket: &Path, args: &[&str]) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/workload_client.py");
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("python3")
            .arg(&script)
            .args(args)
            .env(
                "SPIFFE_ENDPOINT_SOCKET",
                format!("unix://{}", socket.display()),
            )
            .output(),
    )
    .await
    .expect("python client within 60 s")
    .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python client failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn spiffe_client_installed() -> bool {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import spiffe"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!(
            "SKIPPING: the Python `spiffe` package is missing (deploy/setup-debian.sh --test)"
        );
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_spiffe_client_fetches_and_sees_its_svid_rotate() {
    let Some(fx) = fixture() else { return };
    if !spiffe_client_installed() {
        return;
    }
    let admin = start_admin(fx).await;
    let dir = agent_dir(fx);
    let uid = my_uid(dir.path());
    let workloads = format!(
        "  - selectors: {{ uid: {uid}, path: \"{}\" }}\n    spiffe_id: \"{PYTHON_ID}\"\n    \
         tenant: acme\n",
        python_exe().display()
    );
    let config = agent_config(fx, &admin, dir.path(), &workloads);
    let socket = config.socket.clone();
    let _agent = start_agent(config).await;
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o666, "workloads of any user may connect");
    // The node certificate was obtained with the token and kept; SVID keys never touch disk.
    assert!(dir.path().join("node.pem").exists());
    let files = std::fs::read_dir(dir.path()).unwrap().count();

    let wait = (SVID_LIFETIME_S * 2).to_string();
    let got = run_python(&socket, &["fetch", PYTHON_ID, &wait]).await;
    eprintln!("python client: {got}");
    assert_eq!(got["spiffe_id"], PYTHON_ID);
    assert_eq!(got["chains_to_bundle"], true, "{got}");
    assert_eq!(got["key_matches_leaf"], true);
    assert_eq!(got["key_is_p256"], true);
    assert_eq!(got["chain_length"], 2, "leaf and issuing intermediate");
    assert!(got["expires_in_s"].as_f64().unwrap() <= SVID_LIFETIME_S as f64 + 1.0);
    assert_eq!(got["rotated"], true, "no rotation on the stream: {got}");
    assert_eq!(got["rotated_id"], PYTHON_ID);
    assert_eq!(got["stream_errors"], serde_json::json!([]));
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        files,
        "no file written for SVIDs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_matching_no_entry_or_without_the_header_are_refused() {
    let Some(fx) = fixture() else { return };
    let admin = start_admin(fx).await;
    let dir = agent_dir(fx);
    let uid = my_uid(dir.path());
    let me = std::env::current_exe().unwrap();
    // The only entries: another uid, and this test binary under another uid.
    let other = uid.wrapping_add(4242);
    let workloads = format!(
        "  - selectors: {{ uid: {other} }}\n    spiffe_id: \"{RUST_ID}\"\n    tenant: acme\n\
         \x20 - selectors: {{ uid: {other}, path: \"{}\" }}\n    spiffe_id: \"{PYTHON_ID}\"\n    \
         tenant: acme\n",
        me.display()
    );
    let config = agent_config(fx, &admin, dir.path(), &workloads);
    let socket = config.socket.clone();
    let _agent = start_agent(config).await;

    let mut client = uds_client(&socket).await;
    // No security header: INVALID_ARGUMENT, before any attestation.
    let err = client
        .fetch_x509svid(X509svidRequest {})
        .await
        .expect_err("refused");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    // With it, but this process's uid matches no selector: PERMISSION_DENIED, saying nothing
    // about what is registered.
    for result in [
        client
            .fetch_x509svid(with_header(X509svidRequest {}))
            .await
            .map(|_| ()),
        client
            .fetch_x509_bundles(with_header(X509BundlesRequest {}))
            .await
            .map(|_| ()),
    ] {
        let err = result.expect_err("refused");
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
        assert_eq!(err.message(), "no identity issued");
    }

    // The Python client (uid matching no selector either) is refused the same way.
    if spiffe_client_installed() {
        let got = run_python(&socket, &["refused"]).await;
        assert_eq!(got["refused"], true, "{got}");
        let error = got["error"].as_str().unwrap();
        assert!(error.contains("PERMISSION_DENIED"), "{error}");
        assert!(!error.contains("acme"), "{error}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tonic_client_gets_its_svid_stream_and_a_rotation() {
    let Some(fx) = fixture() else { return };
    let admin = start_admin(fx).await;
    let dir = agent_dir(fx);
    let uid = my_uid(dir.path());
    let me = std::env::current_exe().unwrap();
    let workloads = format!(
        "  - selectors: {{ uid: {uid}, path: \"{}\" }}\n    spiffe_id: \"{RUST_ID}\"\n    \
         tenant: acme\n    dns_names: [rust.acme.test]\n",
        me.display()
    );
    let config = agent_config(fx, &admin, dir.path(), &workloads);
    let socket = config.socket.clone();
    let _agent = start_agent(config).await;
    let mut client = uds_client(&socket).await;
    let mut stream = client
        .fetch_x509svid(with_header(X509svidRequest {}))
        .await
        .expect("attested")
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(20), stream.message())
        .await
        .expect("first message")
        .unwrap()
        .unwrap();
    assert_eq!(first.svids.len(), 1);
    assert_eq!(first.svids[0].spiffe_id, RUST_ID);
    assert!(!first.svids[0].bundle.is_empty());
    let started = Instant::now();
    let next = tokio::time::timeout(Duration::from_secs(SVID_LIFETIME_S * 2), stream.message())
        .await
        .expect("a rotated SVID within the lifetime")
        .unwrap()
        .unwrap();
    eprintln!("rotation after {:?}", started.elapsed());
    assert_ne!(next.svids[0].x509_svid, first.svids[0].x509_svid);
    assert_ne!(next.svids[0].x509_svid_key, first.svids[0].x509_svid_key);
}

fn with_header<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert(SECURITY_HEADER, "true".parse().unwrap());
    request
}

async fn uds_client(socket: &Path) -> SpiffeWorkloadApiClient<tonic::transport::Channel> {
    let socket = socket.to_owned();
    // The URI is required by the builder but unused: every connection goes to the socket.
    let channel = tonic::transport::Endpoint::try_from("http://[::1]:1")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .expect("connect to the agent socket");
    SpiffeWorkloadApiClient::new(channel)
}
