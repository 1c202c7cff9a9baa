//! The admin API's test rig: one SoftHSM2-backed CA per test binary, an admin server per test
//! (in-process on 127.0.0.1:0, on the test's runtime), workloads with rcgen keys and CSRs, and
//! a real rustls + hyper HTTP/1.1 client that can present a client certificate.

#![allow(dead_code, unreachable_pub)]

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use portcullis_admin::{
    create_token, AdminConfig, AdminServer, IssuanceStats, SqliteTokenStore, TokenStore,
};
use portcullis_audit::AuditHandle;
use portcullis_ca::{Ca, CaConfig, IssueRequest, Requester, RequesterKind};
use rcgen::{CertificateParams, KeyPair, SanType, PKCS_ECDSA_P256_SHA256};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

use crate::softhsm;

/// A loopback port free a moment ago (for what must be named before it is bound).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub const OPERATOR: &str = "spiffe://ops.example/portcullis/operator/alice";

const CA_CONFIG: &str = r#"
state_dir: DIR/state
backend:
  pkcs11:
    module: /usr/lib/softhsm/libsofthsm2.so
    token_label: ca
    pin_file: PIN_FILE
    sessions: 4
keys:
  root_label: admin-root
  issuing_label: admin-issuing
intermediate:
  validity: 30d
max_lifetime_cap: 4h
profiles:
  - name: acme
    tenant: acme
    spiffe_ids: ["spiffe://acme.example/ns/**"]
    dns_names: ["*.acme.internal"]
    max_lifetime: 1h
    default_lifetime: 30m
  - name: globex
    tenant: globex
    spiffe_ids: ["spiffe://globex.example/ns/**", "spiffe://globex.example/list/*"]
  - name: initech-workloads
    tenant: initech
    spiffe_ids: ["spiffe://initech.example/ns/**"]
    max_lifetime: 1h
    default_lifetime: 30m
  - name: initech-edge
    tenant: initech
    spiffe_ids: ["spiffe://initech.example/ns/**"]
    client_auth: true
    server_auth: true
    max_lifetime: 4h
  - name: ops
    tenant: ops
    role: operator
    spiffe_ids: ["spiffe://ops.example/portcullis/operator/*"]
  - name: admin-server
    tenant: platform
    require_spiffe_id: false
    dns_names: ["localhost"]
    client_auth: false
    server_auth: true
  - name: admin-short
    tenant: short
    require_spiffe_id: false
    dns_names: ["localhost"]
    client_auth: false
    server_auth: true
    max_lifetime: 6s
  - name: webco-web
    tenant: webco
    require_spiffe_id: false
    dns_names: ["localhost", "*.webco.test"]
    client_auth: false
    server_auth: true
  - name: hooli-web
    tenant: hooli
    require_spiffe_id: false
    dns_names: ["*.hooli.test"]
    client_auth: false
    server_auth: true
"#;

pub struct Fixture {
    pub dir: PathBuf,
    pub ca_config: CaConfig,
    pub ca: Arc<Ca>,
    pub roots: Arc<RootCertStore>,
    pub tokens: SqliteTokenStore,
    pub operator: Identity,
}

/// One CA for the test binary; None when SoftHSM2 is missing.
pub fn fixture() -> Option<&'static Fixture> {
    fixture_with_profiles("")
}

/// [`fixture`], with more profiles appended to the CA's (YAML list items), for a test binary
/// whose profiles the others must not have (e.g. ones requiring approval). The first call in
/// a binary decides.
pub fn fixture_with_profiles(extra: &str) -> Option<&'static Fixture> {
    static FIXTURE: OnceLock<Option<Fixture>> = OnceLock::new();
    FIXTURE
        .get_or_init(|| {
            let hsm = softhsm::hsm()?;
            let dir = hsm.dir.join("admin");
            let yaml = format!("{CA_CONFIG}{extra}")
                .replace("DIR", &dir.display().to_string())
                .replace("PIN_FILE", &hsm.pin_file.display().to_string());
            let ca_config = CaConfig::from_yaml(&yaml).expect("CA config");
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("ca.yaml"), &yaml).unwrap();
            let ca = Arc::new(Ca::init(&ca_config, SystemTime::now()).expect("CA init"));
            let mut roots = RootCertStore::empty();
            for c in certs(ca.trust_bundle_pem()) {
                roots.add(c).unwrap();
            }
            let tokens = SqliteTokenStore::in_state_dir(ca.state_dir()).unwrap();
            let w = Workload::new(Some(OPERATOR), &[]);
            let issued = ca
                .issue(
                    &IssueRequest {
                        csr: w.csr.as_bytes(),
                        tenant: "ops".parse().unwrap(),
                        profile: None,
                        lifetime: None,
                        requester: Requester {
                            kind: RequesterKind::Operator,
                            id: "test".into(),
                        },
                    },
                    SystemTime::now(),
                )
                .expect("operator certificate");
            let operator = w.identity(&issued.chain_pem, &issued.serial.to_string());
            Some(Fixture {
                dir,
                ca_config,
                ca,
                roots: Arc::new(roots),
                tokens,
                operator,
            })
        })
        .as_ref()
}

/// Skips the calling test (returns) when SoftHSM2 is not installed.
#[macro_export]
macro_rules! require_fixture {
    () => {
        match $crate::harness::fixture() {
            Some(f) => f,
            None => return,
        }
    };
}

pub fn certs(pem: &str) -> Vec<CertificateDer<'static>> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

impl Fixture {
    /// An identity with a certificate issued straight by the CA for `tenant`.
    pub fn person(&self, tenant: &str, spiffe_id: &str) -> Identity {
        self.person_by(&self.ca, tenant, spiffe_id)
    }

    /// [`Fixture::person`], issued by `ca` (the fixture's keys over another inventory).
    pub fn person_by(&self, ca: &Ca, tenant: &str, spiffe_id: &str) -> Identity {
        let w = Workload::new(Some(spiffe_id), &[]);
        let issued = ca
            .issue(
                &IssueRequest {
                    csr: w.csr.as_bytes(),
                    tenant: tenant.parse().unwrap(),
                    profile: None,
                    lifetime: None,
                    requester: Requester {
                        kind: RequesterKind::Operator,
                        id: "test".into(),
                    },
                },
                SystemTime::now(),
            )
            .expect("certificate");
        w.identity(&issued.chain_pem, &issued.serial.to_string())
    }

    /// A bootstrap token for `tenant`, valid for an hour.
    pub fn token(&self, tenant: &str, spiffe_id: Option<&str>) -> String {
        self.token_at(
            tenant,
            spiffe_id,
            Duration::from_secs(3600),
            SystemTime::now(),
        )
    }

    pub fn token_at(
        &self,
        tenant: &str,
        spiffe_id: Option<&str>,
        ttl: Duration,
        now: SystemTime,
    ) -> String {
        let store: &dyn TokenStore = &self.tokens;
        let (token, _) = create_token(
            store,
            tenant.parse().unwrap(),
            spiffe_id.map(str::to_owned),
            ttl,
            None,
            now,
        )
        .unwrap();
        token.expose().to_owned()
    }

    pub fn admin_config(&self, self_issue_tenant: &str, profile: &str) -> AdminConfig {
        AdminConfig::from_yaml(&self.admin_yaml(self_issue_tenant, profile), &self.dir).unwrap()
    }

    /// The default test config with `extra` YAML appended (`connections:`, `rate_limits:`).
    pub fn admin_config_with(&self, extra: &str) -> AdminConfig {
        self.admin_config_try(extra).unwrap()
    }

    /// The default test config with `extra` appended, or why it is refused.
    pub fn admin_config_try(&self, extra: &str) -> Result<AdminConfig, String> {
        let yaml = self.admin_yaml("platform", "admin-server") + extra;
        AdminConfig::from_yaml(&yaml, &self.dir)
    }

    fn admin_yaml(&self, self_issue_tenant: &str, profile: &str) -> String {
        format!(
            "listen: 127.0.0.1:0\nca: ca.yaml\ntls:\n  self_issue:\n    tenant: {self_issue_tenant}\n    profile: {profile}\n    dns_names: [localhost]\noperators: [\"{OPERATOR}\"]\ncrl_poll_interval: 200ms\n"
        )
    }

    /// Starts an admin server on the current runtime.
    pub async fn start(&self, audit: Option<AuditHandle>) -> Server {
        self.start_with(self.admin_config("platform", "admin-server"), audit)
            .await
    }

    pub async fn start_with(&self, config: AdminConfig, audit: Option<AuditHandle>) -> Server {
        let server = AdminServer::bind_with(&config, Arc::clone(&self.ca), audit)
            .await
            .expect("bind admin server");
        self.serve(server)
    }

    /// [`Fixture::start_with`] on the fixture's CA with a given token store (e.g. one in
    /// PostgreSQL, with `store.postgres` in `config` for the rest of the admin state).
    pub async fn start_with_tokens(
        &self,
        config: AdminConfig,
        tokens: Arc<dyn TokenStore>,
        audit: Option<AuditHandle>,
    ) -> Server {
        let server = AdminServer::bind_with_tokens(&config, Arc::clone(&self.ca), tokens, audit)
            .await
            .expect("bind admin server");
        self.serve(server)
    }

    /// Starts an admin server as `portcullis admin serve` does: the CA (and, with
    /// `store.postgres`, the store) opened from the config.
    pub async fn start_from_config(&self, config: &AdminConfig) -> Server {
        let server = AdminServer::bind(config, None)
            .await
            .expect("bind admin server");
        self.serve(server)
    }

    fn serve(&self, server: AdminServer) -> Server {
        let addr = server.local_addr();
        let metrics = server.metrics_addr();
        let stats = server.stats_handle();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        Server {
            addr,
            metrics,
            stats,
            stop: Some(stop),
            task: Some(task),
            roots: Arc::clone(&self.roots),
        }
    }

    pub fn bundle_path(&self) -> PathBuf {
        self.ca.state_dir().join("bundle.pem")
    }

    pub fn intermediate_path(&self) -> PathBuf {
        self.ca.state_dir().join("intermediate.pem")
    }
}

pub struct Server {
    pub addr: SocketAddr,
    /// The Prometheus listener, when the config has `metrics:`.
    pub metrics: Option<SocketAddr>,
    pub stats: Arc<IssuanceStats>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), portcullis_admin::AdminError>>>,
    roots: Arc<RootCertStore>,
}

impl Server {
    pub async fn client(&self, identity: Option<&Identity>) -> Client {
        Client::connect(self.addr, &self.roots, identity)
            .await
            .expect("connect")
    }

    /// A client connecting from another loopback address (127.0.0.0/8 is all local).
    pub async fn client_from(&self, source: IpAddr, identity: Option<&Identity>) -> Client {
        Client::connect_from(
            self.addr,
            Some(source),
            client_config(&self.roots, identity),
        )
        .await
        .expect("connect")
    }

    /// The CA's roots, for clients made by hand.
    pub fn roots(&self) -> &RootCertStore {
        &self.roots
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

/// One DER TLV at the start of `der`: (whole TLV, rest).
fn split_tlv(der: &[u8]) -> (&[u8], &[u8]) {
    let (len, head) = match der[1] {
        n if n < 0x80 => (n as usize, 2),
        n => {
            let k = (n & 0x7f) as usize;
            let len = der[2..2 + k]
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | *b as usize);
            (len, 2 + k)
        }
    };
    der.split_at(head + len)
}

/// The content of a TLV.
fn content(tlv: &[u8]) -> &[u8] {
    let head = if tlv[1] < 0x80 {
        2
    } else {
        2 + (tlv[1] & 0x7f) as usize
    };
    &tlv[head..]
}

/// The TLVs inside a constructed TLV.
fn children(tlv: &[u8]) -> Vec<&[u8]> {
    let mut rest = content(tlv);
    let mut out = Vec::new();
    while !rest.is_empty() {
        let (one, more) = split_tlv(rest);
        out.push(one);
        rest = more;
    }
    out
}

/// A DER TLV with `tag` around `body`.
fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    match body.len() {
        n if n < 0x80 => out.push(n as u8),
        n if n < 0x100 => out.extend([0x81, n as u8]),
        n => out.extend([0x82, (n >> 8) as u8, n as u8]),
    }
    out.extend_from_slice(body);
    out
}

/// A CSR's CertificationRequestInfo and signature algorithm TLVs.
fn csr_parts(csr: &[u8]) -> (&[u8], &[u8]) {
    let parts = children(csr);
    (parts[0], parts[1])
}

/// A workload's key and CSR.
pub struct Workload {
    pub key: KeyPair,
    pub csr: String,
}

impl Workload {
    pub fn new(spiffe_id: Option<&str>, dns: &[&str]) -> Self {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::default();
        if let Some(id) = spiffe_id {
            params
                .subject_alt_names
                .push(SanType::URI(id.to_owned().try_into().unwrap()));
        }
        for d in dns {
            params
                .subject_alt_names
                .push(SanType::DnsName((*d).to_owned().try_into().unwrap()));
        }
        let csr = params.serialize_request(&key).unwrap().pem().unwrap();
        Self { key, csr }
    }

    /// A CSR for other names, with the same key.
    pub fn csr_for(&self, spiffe_id: Option<&str>, dns: &[&str]) -> String {
        let mut params = CertificateParams::default();
        if let Some(id) = spiffe_id {
            params
                .subject_alt_names
                .push(SanType::URI(id.to_owned().try_into().unwrap()));
        }
        for d in dns {
            params
                .subject_alt_names
                .push(SanType::DnsName((*d).to_owned().try_into().unwrap()));
        }
        params.serialize_request(&self.key).unwrap().pem().unwrap()
    }

    /// A CSR, signed with this key, whose first extensionRequest attribute asks for `first`'s
    /// names and a second one for `second`'s: what an attacker sends when a check reads only
    /// the first attribute while the CA merges them all.
    pub fn csr_with_two_extension_requests(
        &self,
        first: (Option<&str>, &[&str]),
        second: (Option<&str>, &[&str]),
    ) -> String {
        use base64::Engine;
        let der = |pem: String| {
            let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
            base64::engine::general_purpose::STANDARD
                .decode(body)
                .unwrap()
        };
        let a = der(self.csr_for(first.0, first.1));
        let b = der(self.csr_for(second.0, second.1));
        let (a_cri, a_alg) = csr_parts(&a);
        let (b_cri, _) = csr_parts(&b);
        let mut a_fields = children(a_cri);
        let b_attrs = children(b_cri).pop().unwrap();
        let a_attrs = a_fields.pop().unwrap();
        let attrs = tlv(0xa0, &[content(a_attrs), content(b_attrs)].concat());
        a_fields.push(&attrs);
        let cri = tlv(0x30, &a_fields.concat());
        let rng = ring::rand::SystemRandom::new();
        let key = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            &self.key.serialize_der(),
            &rng,
        )
        .unwrap();
        let sig = key.sign(&rng, &cri).unwrap();
        let bits = tlv(0x03, &[&[0u8][..], sig.as_ref()].concat());
        let csr = tlv(0x30, &[&cri[..], a_alg, &bits].concat());
        let b64 = base64::engine::general_purpose::STANDARD.encode(csr);
        format!("-----BEGIN CERTIFICATE REQUEST-----\n{b64}\n-----END CERTIFICATE REQUEST-----\n")
    }

    pub fn identity(&self, chain_pem: &str, serial: &str) -> Identity {
        Identity {
            chain: certs(chain_pem),
            key: PrivatePkcs8KeyDer::from(self.key.serialize_der()).into(),
            serial: serial.to_owned(),
        }
    }

    /// The identity from a 201 answer.
    pub fn identity_from(&self, reply: &serde_json::Value) -> Identity {
        self.identity(
            reply["chain"].as_str().expect("chain"),
            reply["serial"].as_str().expect("serial"),
        )
    }
}

pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub serial: String,
}

impl Identity {
    /// The chain and key as PEM files `NAME.pem` and `NAME.key` in `dir`, for clients outside
    /// this process (the CLI, schemathesis).
    pub fn write_pem(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let pem = |label: &str, der: &[u8]| {
            use base64::Engine;
            let b64 = base64::engine::general_purpose::STANDARD.encode(der);
            let lines: Vec<&str> = b64
                .as_bytes()
                .chunks(64)
                .map(|c| std::str::from_utf8(c).unwrap())
                .collect();
            format!(
                "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
                lines.join("\n")
            )
        };
        let chain: String = self.chain.iter().map(|c| pem("CERTIFICATE", c)).collect();
        (
            write(dir, &format!("{name}.pem"), &chain),
            write(
                dir,
                &format!("{name}.key"),
                &pem("PRIVATE KEY", self.key.secret_der()),
            ),
        )
    }
}

pub struct Reply {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    pub fn code(&self) -> String {
        self.json()["error"].as_str().unwrap_or("").to_owned()
    }
}

/// One keep-alive HTTPS connection (HTTP/1.1).
pub struct Client {
    send: SendRequest<BoxBody<Bytes, std::convert::Infallible>>,
    /// The server's certificate chain, leaf first.
    pub server_chain: Vec<CertificateDer<'static>>,
}

pub fn client_config(roots: &RootCertStore, identity: Option<&Identity>) -> ClientConfig {
    client_config_versions(roots, identity, rustls::DEFAULT_VERSIONS)
}

pub fn client_config_versions(
    roots: &RootCertStore,
    identity: Option<&Identity>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> ClientConfig {
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots.clone());
    match identity {
        Some(id) => builder
            .with_client_auth_cert(id.chain.clone(), id.key.clone_key())
            .unwrap(),
        None => builder.with_no_client_auth(),
    }
}

impl Client {
    pub async fn connect(
        addr: SocketAddr,
        roots: &RootCertStore,
        identity: Option<&Identity>,
    ) -> std::io::Result<Self> {
        Self::connect_with(addr, client_config(roots, identity)).await
    }

    pub async fn connect_with(addr: SocketAddr, config: ClientConfig) -> std::io::Result<Self> {
        Self::connect_from(addr, None, config).await
    }

    pub async fn connect_from(
        addr: SocketAddr,
        source: Option<IpAddr>,
        config: ClientConfig,
    ) -> std::io::Result<Self> {
        let connector = TlsConnector::from(Arc::new(config));
        let tcp = tcp_from(addr, source).await?;
        let tls = connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await?;
        let server_chain = tls
            .get_ref()
            .1
            .peer_certificates()
            .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
            .unwrap_or_default();
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Self { send, server_chain })
    }

    pub async fn call(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<Reply, hyper::Error> {
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.send_request(req.body(Full::new(body.into()).boxed()).unwrap())
            .await
    }

    async fn send_request(
        &mut self,
        req: hyper::Request<BoxBody<Bytes, std::convert::Infallible>>,
    ) -> Result<Reply, hyper::Error> {
        self.send.ready().await?;
        let resp = self.send.send_request(req).await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok(Reply {
            status,
            headers,
            body,
        })
    }

    /// A call with a JSON body (none for `null`): the status and the JSON answer (`null` when
    /// empty).
    pub async fn json(
        &mut self,
        method: &str,
        path: &str,
        body: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let body = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        let r = self
            .call(method, path, &[("content-type", "application/json")], body)
            .await
            .unwrap();
        let json = if r.body.is_empty() {
            serde_json::Value::Null
        } else {
            r.json()
        };
        (r.status, json)
    }

    /// POST /v1/certificates with a JSON body, optionally with a bearer token.
    /// Polls a request waiting for approval (`pending`: the 202's body) with its pickup secret.
    pub async fn poll_pending(&mut self, pending: &serde_json::Value, secret: &str) -> Reply {
        let auth = format!("Bearer {secret}");
        self.call(
            "GET",
            pending["poll"].as_str().unwrap(),
            &[("authorization", auth.as_str())],
            "",
        )
        .await
        .unwrap()
    }

    pub async fn issue(&mut self, token: Option<&str>, body: serde_json::Value) -> Reply {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("content-type", "application/json")];
        if let Some(a) = &auth {
            headers.push(("authorization", a.as_str()));
        }
        self.call("POST", "/v1/certificates", &headers, body.to_string())
            .await
            .expect("issue call")
    }
}

/// A TCP connection to `addr` from `source` (any port), or from the default address.
pub async fn tcp_from(
    addr: SocketAddr,
    source: Option<IpAddr>,
) -> std::io::Result<tokio::net::TcpStream> {
    let Some(source) = source else {
        return tokio::net::TcpStream::connect(addr).await;
    };
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    socket.connect(addr).await
}

/// A platform gateway config with one tenant, `acme`, for the admin plane to check policies
/// against.
pub const GATEWAY: &str = "\
listeners:
  - name: public
    address: 127.0.0.1:8443
    tls:
      certificate: server.pem
      private_key: server.key
      client_auth: required
      client_ca: bundle.pem
upstreams:
  - name: app
    targets: [127.0.0.1:9000]
tenants:
  - name: acme
    routes:
      - name: api
        host: api.acme.test
        path_prefix: /api
        upstream: app
        access:
          - id: frontend
            spiffe_id: [spiffe://acme.example/ns/web/sa/frontend]
            methods: [GET]
";

/// The `policies:` (with `policies_extra` inside it) and `webhooks:` sections of an admin
/// config whose stores and platform gateway config are in `dir`.
pub fn managed(dir: &Path, policies_extra: &str) -> String {
    let gateway = write(dir, "gateway.yaml", GATEWAY);
    format!(
        "policies:\n  gateway_config: {}\n{policies_extra}  traffic: [{}]\n  database: {}\n  signing_key: {}\nwebhooks:\n  database: {}\n",
        gateway.display(),
        dir.join("traffic").display(),
        dir.join("policies.sqlite3").display(),
        dir.join("policy-signing.key").display(),
        dir.join("webhooks.sqlite3").display()
    )
}

pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

impl Client {
    /// An issuance call that reports transport failure instead of panicking.
    pub async fn issue_result(&mut self, body: serde_json::Value) -> Result<Reply, hyper::Error> {
        self.call(
            "POST",
            "/v1/certificates",
            &[("content-type", "application/json")],
            body.to_string(),
        )
        .await
    }

    /// A request whose body is sent chunked (no Content-Length).
    pub async fn call_streaming(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        chunks: Vec<Vec<u8>>,
    ) -> Result<Reply, hyper::Error> {
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let body = Chunks(chunks.into_iter().map(Bytes::from).collect()).boxed();
        self.send_request(req.body(body).unwrap()).await
    }
}

/// A body sent in chunks, of unknown length.
struct Chunks(std::collections::VecDeque<Bytes>);

impl hyper::body::Body for Chunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.0.pop_front().map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

/// `portcullis admin`'s arguments, as the binary defines them.
#[derive(clap::Parser)]
pub struct Cli {
    #[command(subcommand)]
    command: portcullis_admin::cli::AdminCommand,
}

/// The `portcullis admin` connection arguments of a caller with `who`'s certificate.
pub fn cli_caller(
    dir: &Path,
    name: &str,
    who: &Identity,
    server: &Server,
    fx: &Fixture,
) -> Vec<String> {
    let (cert, key) = who.write_pem(dir, name);
    let path = |p: PathBuf| p.display().to_string();
    vec![
        "--server".into(),
        format!("https://localhost:{}", server.addr.port()),
        "--ca".into(),
        path(fx.bundle_path()),
        "--cert".into(),
        path(cert),
        "--key".into(),
        path(key),
    ]
}

/// `portcullis admin ARGS… CONN…`, parsed by the binary's own clap definition: Ok(what it
/// printed) or Err(its error).
pub async fn admin_cli(args: &[&str], conn: &[String]) -> Result<String, String> {
    use clap::Parser;
    let argv: Vec<String> = std::iter::once("admin".to_owned())
        .chain(args.iter().map(|a| (*a).to_owned()))
        .chain(conn.iter().cloned())
        .collect();
    let cli = Cli::try_parse_from(&argv).map_err(|e| e.to_string())?;
    tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        portcullis_admin::cli::run_to(cli.command, None, &mut out)
            .map(|()| String::from_utf8(out).unwrap())
            .map_err(|e| e.to_string())
    })
    .await
    .unwrap()
}
