//! Issuance exactness and lineage on a SoftHSM2-backed CA, written as the attacks they stop:
//! CSRs whose extensions could be read two ways are refused, a renewal keeps the profile and
//! the names of the certificate it renews, revoking a stolen certificate revokes what it was
//! renewed into (the CRL, read by the real `openssl`, lists them all), and operator profiles
//! issue only to operators.

#[path = "support/pki.rs"]
mod pki;
#[path = "support/softhsm.rs"]
mod softhsm;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use pki::openssl;
use portcullis_audit::{CaAction, CaEvent};
use portcullis_ca::cli::{run_with_audit, CaCommand};
use portcullis_ca::{
    Ca, CaConfig, CaError, CaEventSink, IssueRequest, IssuedCertificate, Requester, RequesterKind,
    RevocationReason, RevocationScope, Serial,
};
use rcgen::{Attribute, CertificateParams, CustomExtension, KeyPair, SanType};
use x509_parser::prelude::*;

const CONFIG: &str = r#"
state_dir: DIR/state
backend:
  pkcs11:
    module: /usr/lib/softhsm/libsofthsm2.so
    token_label: ca
    pin_file: PIN_FILE
keys:
  root_label: exact-root
  issuing_label: exact-issuing
max_lifetime_cap: 4h
profiles:
  - name: workloads
    tenant: acme
    spiffe_ids: ["spiffe://acme.example/ns/**"]
    dns_names: ["*.acme.internal"]
    max_lifetime: 1h
    default_lifetime: 20m
  - name: edge
    tenant: acme
    spiffe_ids: ["spiffe://acme.example/ns/**"]
    dns_names: ["*.acme.internal"]
    client_auth: true
    server_auth: true
    max_lifetime: 4h
  - name: operators
    tenant: ops
    role: operator
    spiffe_ids: ["spiffe://ops.example/portcullis/operator/*"]
"#;

const WEB: &str = "spiffe://acme.example/ns/prod/sa/web";
/// pkcs-9-at-extensionRequest
const EXTENSION_REQUEST: &[u64] = &[1, 2, 840, 113549, 1, 9, 14];

struct Fixture {
    config: PathBuf,
    ca: Ca,
}

fn fixture() -> Option<&'static Fixture> {
    static FIXTURE: OnceLock<Option<Fixture>> = OnceLock::new();
    FIXTURE
        .get_or_init(|| {
            let hsm = softhsm::hsm()?;
            let dir = hsm.dir.join("exactness");
            std::fs::create_dir_all(&dir).unwrap();
            let yaml = CONFIG
                .replace("DIR", &dir.display().to_string())
                .replace("PIN_FILE", &hsm.pin_file.display().to_string());
            let config = dir.join("ca.yaml");
            std::fs::write(&config, &yaml).unwrap();
            let ca = Ca::init(&CaConfig::from_yaml(&yaml).unwrap(), SystemTime::now()).unwrap();
            Some(Fixture { config, ca })
        })
        .as_ref()
}

macro_rules! require_fixture {
    () => {
        match fixture() {
            Some(f) => f,
            None => return,
        }
    };
}

fn request<'a>(
    csr: &'a [u8],
    tenant: &str,
    profile: Option<&'a str>,
    kind: RequesterKind,
) -> IssueRequest<'a> {
    IssueRequest {
        csr,
        tenant: tenant.parse().unwrap(),
        profile,
        lifetime: None,
        requester: Requester {
            kind,
            id: "exactness-test".to_owned(),
        },
    }
}

fn code<T>(result: Result<T, CaError>) -> String {
    match result {
        Err(CaError::Refused(r)) => r.code().to_owned(),
        Err(e) => format!("error: {e}"),
        Ok(_) => "issued".to_owned(),
    }
}

/// A DER TLV.
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

/// GeneralNames with one dNSName.
fn dns_general_names(name: &str) -> Vec<u8> {
    tlv(0x30, &tlv(0x82, name.as_bytes()))
}

/// `Extensions` holding one subjectAltName with one dNSName.
fn san_extensions(name: &str) -> Vec<u8> {
    let oid = tlv(0x06, &[0x55, 0x1d, 0x11]);
    let value = tlv(0x04, &dns_general_names(name));
    tlv(0x30, &tlv(0x30, &[oid, value].concat()))
}

/// A CSR for `WEB` and `api.acme.internal`, signed by `key`, with `tweak` applied and extra
/// attributes (each value set DER, `SET` tag included): what an attacker hand-builds, a
/// correctly self-signed request.
fn crafted(
    key: &KeyPair,
    tweak: impl FnOnce(&mut CertificateParams),
    attrs: Vec<Attribute>,
) -> Vec<u8> {
    let mut params = CertificateParams::default();
    params.subject_alt_names = vec![
        SanType::URI(WEB.to_owned().try_into().unwrap()),
        SanType::DnsName("api.acme.internal".to_owned().try_into().unwrap()),
    ];
    tweak(&mut params);
    let pem = params
        .serialize_request_with_attributes(key, attrs)
        .unwrap()
        .pem()
        .unwrap();
    // The real openssl reads it as a well-formed request whose self-signature verifies.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("req.pem");
    std::fs::write(&path, &pem).unwrap();
    let (ok, out) = openssl(&["req", "-verify", "-noout", "-in", path.to_str().unwrap()]);
    assert!(
        ok && out.contains("verify OK"),
        "openssl req -verify: {out}"
    );
    pem.into_bytes()
}

fn csr(key: &KeyPair, uri: Option<&str>, dns: &[&str]) -> Vec<u8> {
    let mut params = CertificateParams::default();
    if let Some(uri) = uri {
        params
            .subject_alt_names
            .push(SanType::URI(uri.to_owned().try_into().unwrap()));
    }
    for d in dns {
        params
            .subject_alt_names
            .push(SanType::DnsName((*d).to_owned().try_into().unwrap()));
    }
    params
        .serialize_request(key)
        .unwrap()
        .pem()
        .unwrap()
        .into_bytes()
}

#[test]
fn csr_extensions_that_could_be_read_two_ways_are_refused() {
    let f = require_fixture!();
    let key = KeyPair::generate().unwrap();
    let issue = |csr: &[u8]| {
        f.ca.issue(
            &request(
                csr,
                "acme",
                Some("workloads"),
                RequesterKind::BootstrapToken,
            ),
            SystemTime::now(),
        )
    };
    // The same request without the extra attribute or extension is issued.
    let plain = crafted(&key, |_| {}, Vec::new());
    assert_eq!(code(issue(&plain)), "issued");

    // A second extensionRequest attribute asking for another name, which a reader that
    // merges attributes would issue and one that reads the first would not check.
    let two = crafted(
        &key,
        |_| {},
        vec![Attribute {
            oid: EXTENSION_REQUEST,
            values: tlv(0x31, &san_extensions("db.acme.internal")),
        }],
    );
    let err = issue(&two).unwrap_err();
    assert!(
        err.to_string().contains("more than one extensionRequest"),
        "{err}"
    );
    assert_eq!(code::<()>(Err(err)), "csr_ambiguous_extensions");

    // One extensionRequest attribute with two values (the parser reads the first only).
    let two_values = crafted(
        &key,
        |p| p.subject_alt_names.clear(),
        vec![Attribute {
            oid: EXTENSION_REQUEST,
            values: tlv(
                0x31,
                &[
                    san_extensions("api.acme.internal"),
                    san_extensions("db.acme.internal"),
                ]
                .concat(),
            ),
        }],
    );
    let err = issue(&two_values).unwrap_err();
    assert!(err.to_string().contains("more than one value"), "{err}");
    assert_eq!(code::<()>(Err(err)), "csr_ambiguous_extensions");

    // The subjectAltName extension twice in the one attribute.
    let repeated = crafted(
        &key,
        |p| {
            p.custom_extensions = vec![CustomExtension::from_oid_content(
                &[2, 5, 29, 17],
                dns_general_names("db.acme.internal"),
            )]
        },
        Vec::new(),
    );
    let err = issue(&repeated).unwrap_err();
    assert!(
        err.to_string().contains("2.5.29.17 requested twice"),
        "{err}"
    );
    assert_eq!(code::<()>(Err(err)), "csr_ambiguous_extensions");

    // Microsoft's extension request attribute, which OpenSSL reads and this CA's parser
    // does not.
    let microsoft = crafted(
        &key,
        |_| {},
        vec![Attribute {
            oid: &[1, 3, 6, 1, 4, 1, 311, 2, 1, 14],
            values: tlv(0x31, &san_extensions("db.acme.internal")),
        }],
    );
    assert_eq!(code(issue(&microsoft)), "csr_ambiguous_extensions");

    // None of them was issued: the inventory holds the plain request's certificate only.
    let listed =
        f.ca.list(&Default::default(), SystemTime::now())
            .unwrap()
            .into_iter()
            .filter(|r| r.sans.iter().any(|s| s.contains("db.acme.internal")))
            .count();
    assert_eq!(listed, 0);
}

fn leaf(issued: &IssuedCertificate) -> X509Certificate<'_> {
    X509Certificate::from_der(&issued.cert_der).unwrap().1
}

#[test]
fn a_renewal_keeps_the_profile_and_the_names_of_the_certificate_it_renews() {
    let f = require_fixture!();
    let now = SystemTime::now();
    let key = KeyPair::generate().unwrap();
    let first = csr(&key, Some(WEB), &["a.acme.internal", "b.acme.internal"]);
    let current =
        f.ca.issue(
            &request(
                &first,
                "acme",
                Some("workloads"),
                RequesterKind::BootstrapToken,
            ),
            now,
        )
        .unwrap();
    let renew = |csr: &[u8], tenant: &str, profile: Option<&str>| {
        f.ca.renew(
            &request(csr, tenant, profile, RequesterKind::ClientCert),
            &current.serial,
            now,
        )
    };

    // Moving to the tenant's other profile (serverAuth, a 4 h lifetime) on renewal: refused.
    let err = renew(&first, "acme", Some("edge")).unwrap_err();
    assert!(err.to_string().contains("\"workloads\""), "{err}");
    assert_eq!(code::<()>(Err(err)), "renewal_profile_changed");
    // Naming its own profile, or none, renews under it: its EKU and its default lifetime.
    assert_eq!(code(renew(&first, "acme", Some("workloads"))), "issued");
    let renewed = renew(&first, "acme", None).unwrap();
    assert_eq!(renewed.profile, "workloads");
    assert_eq!(renewed.renewed_from.as_ref(), Some(&current.serial));
    let cert = leaf(&renewed);
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && !eku.server_auth, "{eku:?}");
    let lifetime = renewed.not_after.duration_since(now).unwrap();
    assert_eq!(lifetime, Duration::from_secs(20 * 60));
    // The profile's cap still holds (the other profile's would have allowed it).
    let mut long = request(&first, "acme", None, RequesterKind::ClientCert);
    long.lifetime = Some(Duration::from_secs(2 * 3600));
    assert_eq!(
        code(f.ca.renew(&long, &current.serial, now)),
        "lifetime_over_cap"
    );
    let record = f.ca.inventory().get(&renewed.serial, now).unwrap().unwrap();
    assert_eq!(record.renewed_from.as_ref(), Some(&current.serial));

    // Names: compared on what the CA would issue (lower-cased), a subset only.
    let subset = csr(&key, Some(WEB), &["B.ACME.internal"]);
    assert_eq!(
        renew(&subset, "acme", None).unwrap().dns_names,
        vec!["b.acme.internal"]
    );
    for wider in [
        csr(&key, Some(WEB), &["a.acme.internal", "c.acme.internal"]),
        csr(&key, Some("spiffe://acme.example/ns/prod/sa/admin"), &[]),
    ] {
        assert_eq!(code(renew(&wider, "acme", None)), "identity_mismatch");
    }
    // Another tenant's name for it, or a revoked certificate: not renewable.
    assert_eq!(code(renew(&first, "ops", None)), "not_renewable");
    f.ca.revoke(
        &current.serial,
        RevocationReason::KeyCompromise,
        RevocationScope::OnlyThis,
        now,
    )
    .unwrap();
    assert_eq!(code(renew(&first, "acme", None)), "not_renewable");
}

/// Keeps the CA's events.
#[derive(Default)]
struct Sink(Mutex<Vec<CaEvent>>);

impl CaEventSink for Sink {
    fn record(&self, event: CaEvent) {
        self.0.lock().unwrap().push(event);
    }
}

/// The serials `openssl crl -text` lists in the CA's current CRL (lower-case hex).
fn crl_serials(f: &Fixture) -> String {
    let crl = f.ca.crl_path();
    let (ok, text) = openssl(&["crl", "-in", crl.to_str().unwrap(), "-noout", "-text"]);
    assert!(ok, "{text}");
    text.to_ascii_lowercase().replace([':', ' '], "")
}

fn verify_with_crl(f: &Fixture, cert: &IssuedCertificate) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let leaf = dir.path().join("leaf.pem");
    std::fs::write(&leaf, &cert.cert_pem).unwrap();
    let state = f.ca.state_dir();
    openssl(&[
        "verify",
        "-crl_check",
        "-CAfile",
        state.join("bundle.pem").to_str().unwrap(),
        "-untrusted",
        state.join("intermediate.pem").to_str().unwrap(),
        "-CRLfile",
        f.ca.crl_path().to_str().unwrap(),
        leaf.to_str().unwrap(),
    ])
}

#[test]
fn revoking_a_stolen_certificate_revokes_its_renewals_and_the_crl_lists_them() {
    let f = require_fixture!();
    let now = SystemTime::now();
    let key = KeyPair::generate().unwrap();
    let id = "spiffe://acme.example/ns/prod/sa/stolen";
    let pem = csr(&key, Some(id), &[]);
    let token = request(
        &pem,
        "acme",
        Some("workloads"),
        RequesterKind::BootstrapToken,
    );
    let renewal = request(&pem, "acme", None, RequesterKind::ClientCert);
    // The thief renews the stolen certificate twice over, and once more from the original.
    let stolen = f.ca.issue(&token, now).unwrap();
    let b = f.ca.renew(&renewal, &stolen.serial, now).unwrap();
    let c = f.ca.renew(&renewal, &b.serial, now).unwrap();
    let d = f.ca.renew(&renewal, &stolen.serial, now).unwrap();
    let bystander = f.ca.issue(&token, now).unwrap();

    let sink = Arc::new(Sink::default());
    let run = |serial: &Serial, only_this: bool| {
        let mut out = Vec::new();
        run_with_audit(
            CaCommand::Revoke {
                config: f.config.clone(),
                serial: serial.to_string(),
                reason: RevocationReason::KeyCompromise,
                only_this,
            },
            &mut out,
            now,
            Some(Arc::clone(&sink) as Arc<dyn CaEventSink>),
        )
        .unwrap();
        String::from_utf8(out).unwrap()
    };
    let out = run(&stolen.serial, false);
    for cert in [&stolen, &b, &c, &d] {
        assert!(out.contains(&format!("revoked {}", cert.serial)), "{out}");
    }
    assert!(out.contains(&format!("renewal of {}", b.serial)), "{out}");
    assert!(out.contains("4 certificate(s) revoked"), "{out}");
    assert!(!out.contains(&bystander.serial.to_string()), "{out}");

    // One audit event per certificate revoked, the renewals saying why.
    let events = std::mem::take(&mut *sink.0.lock().unwrap());
    assert_eq!(events.len(), 4, "{events:?}");
    assert!(events.iter().all(|e| e.action == CaAction::Revoke));
    let for_c = events
        .iter()
        .find(|e| e.serial.as_deref() == Some(c.serial.to_string().as_str()))
        .unwrap();
    assert_eq!(
        for_c.reason.as_deref(),
        Some(
            format!(
                "keyCompromise (a renewal of {}, revoked with it)",
                stolen.serial
            )
            .as_str()
        )
    );

    // The CRL in the state folder, read by openssl, lists all four; openssl then refuses the
    // thief's latest certificate and still accepts the bystander's.
    let listed = crl_serials(f);
    for cert in [&stolen, &b, &c, &d] {
        assert!(
            listed.contains(&cert.serial.to_string()),
            "{} in\n{listed}",
            cert.serial
        );
    }
    assert!(!listed.contains(&bystander.serial.to_string()));
    let (ok, out) = verify_with_crl(f, &c);
    assert!(!ok && out.contains("certificate revoked"), "{out}");
    let (ok, out) = verify_with_crl(f, &bystander);
    assert!(ok, "{out}");

    // --only-this: the holder's own renewal stays valid.
    let e = f.ca.issue(&token, now).unwrap();
    let e2 = f.ca.renew(&renewal, &e.serial, now).unwrap();
    let out = run(&e.serial, true);
    assert!(out.contains(&format!("revoked {}", e.serial)), "{out}");
    assert!(out.contains("1 certificate(s) revoked"), "{out}");
    assert!(!out.contains(&e2.serial.to_string()), "{out}");
    let listed = crl_serials(f);
    assert!(listed.contains(&e.serial.to_string()));
    assert!(!listed.contains(&e2.serial.to_string()));
    let (ok, out) = verify_with_crl(f, &e2);
    assert!(ok, "{out}");
}

#[test]
fn operator_identities_come_only_from_operator_profiles_at_an_operators_request() {
    let f = require_fixture!();
    let now = SystemTime::now();
    let key = KeyPair::generate().unwrap();
    let alice = csr(
        &key,
        Some("spiffe://ops.example/portcullis/operator/alice"),
        &[],
    );
    // A bootstrap token for tenant ops cannot obtain an operator certificate.
    for profile in [Some("operators"), None] {
        let req = request(&alice, "ops", profile, RequesterKind::BootstrapToken);
        assert_eq!(code(f.ca.issue(&req, now)), "operator_profile");
    }
    let op = request(&alice, "ops", None, RequesterKind::Operator);
    let issued = f.ca.issue(&op, now).unwrap();
    assert_eq!(issued.profile, "operators");
    // Its holder renews it (same identity, same profile).
    let renewal = request(&alice, "ops", None, RequesterKind::ClientCert);
    assert_eq!(code(f.ca.renew(&renewal, &issued.serial, now)), "issued");
    // A tenant's workload asking for an operator's ID under its own trust domain: refused as
    // reserved (and a tenant pattern that could match it is refused when the config is read).
    let sneaky = csr(
        &key,
        Some("spiffe://acme.example/portcullis/operator/alice"),
        &[],
    );
    let req = request(
        &sneaky,
        "acme",
        Some("workloads"),
        RequesterKind::BootstrapToken,
    );
    assert_eq!(code(f.ca.issue(&req, now)), "spiffe_id_reserved");
    let broad = CONFIG.replace(
        "ns/**\"]\n    dns_names: [\"*.acme.internal\"]\n    max_lifetime: 1h",
        "**\"]\n    dns_names: [\"*.acme.internal\"]\n    max_lifetime: 1h",
    );
    assert_ne!(broad, CONFIG);
    let err = CaConfig::from_yaml(&broad.replace("PIN_FILE", "/pin"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("\"workloads\"")
            && err.contains("spiffe://acme.example/**")
            && err.contains("reserved for operators"),
        "{err}"
    );
}
