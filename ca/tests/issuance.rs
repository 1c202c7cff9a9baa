//! The CA end to end on a real SoftHSM2 token: init, issuance checked by the real `openssl`,
//! every refusal, the inventory, revocation and the CRL, concurrency, and the CLI.

#[path = "support/pki.rs"]
mod pki;
#[path = "support/softhsm.rs"]
mod softhsm;

use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use pki::{csr, csr_with, dns, openssl, uri};
use portcullis_ca::{
    Ca, CaConfig, CaError, CertStatus, InventoryFilter, IssueRequest, IssuedCertificate, Requester,
    RequesterKind, RevocationReason, RevocationScope, Serial, TenantId,
};
use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType,
    PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_ED25519,
};
use x509_parser::prelude::*;

const CONFIG: &str = r#"
state_dir: DIR/state
backend:
  pkcs11:
    module: /usr/lib/softhsm/libsofthsm2.so
    token_label: ca
    pin_file: PIN_FILE
    sessions: 4
root_backend:
  pkcs11:
    token_label: root
    pin_env: PORTCULLIS_TEST_HSM_PIN
keys:
  root_label: issuance-root
  issuing_label: issuance-issuing
root:
  common_name: Test Root CA
intermediate:
  common_name: Test Issuing CA
  validity: 30d
max_lifetime_cap: 4h
profiles:
  - name: acme-workloads
    tenant: acme
    spiffe_ids: ["spiffe://acme.example/ns/*/sa/*"]
    dns_names: ["*.acme.internal"]
    key_types: [p256, ed25519]
    max_lifetime: 1h
    default_lifetime: 30m
    client_auth: true
    server_auth: true
  - name: globex
    tenant: globex
    spiffe_ids: ["spiffe://globex.example/worker/**"]
  - name: inventory
    tenant: inv
    spiffe_ids: ["spiffe://inv.example/*"]
    max_lifetime: 4h
"#;

struct Fixture {
    config: CaConfig,
    ca: Ca,
}

/// One CA for the binary (keys live in the shared token; labels must stay unique).
fn fixture() -> Option<&'static Fixture> {
    static FIXTURE: OnceLock<Option<Fixture>> = OnceLock::new();
    FIXTURE
        .get_or_init(|| {
            let hsm = softhsm::hsm()?;
            let dir = hsm.dir.join("issuance");
            let yaml = CONFIG
                .replace("DIR", &dir.display().to_string())
                .replace("PIN_FILE", &hsm.pin_file.display().to_string());
            let config = CaConfig::from_yaml(&yaml).expect("config");
            let ca = Ca::init(&config, SystemTime::now()).expect("init");
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

/// Now, to the second (certificates carry seconds).
fn now() -> SystemTime {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

fn request<'a>(csr: &'a [u8], tenant: &str, lifetime: Option<Duration>) -> IssueRequest<'a> {
    IssueRequest {
        csr,
        tenant: tenant.parse().unwrap(),
        profile: None,
        lifetime,
        requester: Requester {
            kind: RequesterKind::BootstrapToken,
            id: "token-1".to_owned(),
        },
    }
}

fn state(f: &Fixture, name: &str) -> String {
    f.config.state_dir.join(name).display().to_string()
}

fn write_temp(dir: &Path, name: &str, data: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, data).unwrap();
    path.display().to_string()
}

fn openssl_verify(f: &Fixture, leaf_pem: &str, crl: bool) -> (bool, String) {
    let tmp = tempfile::tempdir().unwrap();
    let leaf = write_temp(tmp.path(), "leaf.pem", leaf_pem);
    let bundle = state(f, "bundle.pem");
    let inter = state(f, "intermediate.pem");
    let crl_file = state(f, "crl.pem");
    let mut args = vec!["verify", "-CAfile", &bundle, "-untrusted", &inter];
    if crl {
        args.extend(["-crl_check", "-CRLfile", &crl_file]);
    }
    args.push(&leaf);
    openssl(&args)
}

fn refusal(f: &Fixture, req: &IssueRequest<'_>) -> &'static str {
    match f.ca.issue(req, now()) {
        Err(CaError::Refused(r)) => r.code(),
        Err(e) => panic!("expected a refusal, got error {e}"),
        Ok(c) => panic!("expected a refusal, got certificate {}", c.serial),
    }
}

#[test]
fn init_writes_the_hierarchy_and_open_finds_it() {
    let f = require_fixture!();
    for name in [
        "root.pem",
        "intermediate.pem",
        "bundle.pem",
        "chain.pem",
        "crl.pem",
        "inventory.sqlite3",
    ] {
        assert!(f.config.state_dir.join(name).exists(), "{name}");
    }
    let (ok, out) = openssl(&[
        "verify",
        "-CAfile",
        &state(f, "bundle.pem"),
        &state(f, "intermediate.pem"),
    ]);
    assert!(ok, "{out}");

    let read = |name: &str| std::fs::read(f.config.state_dir.join(name)).unwrap();
    let root_pem = read("root.pem");
    let (_, root_pem) = parse_x509_pem(&root_pem).unwrap();
    let root = root_pem.parse_x509().unwrap();
    let bc = root.basic_constraints().unwrap().unwrap().value;
    assert!(bc.ca);
    assert_eq!(bc.path_len_constraint, Some(1));
    assert_eq!(root.subject(), root.issuer());
    let inter_pem = read("intermediate.pem");
    let (_, inter_pem) = parse_x509_pem(&inter_pem).unwrap();
    let inter = inter_pem.parse_x509().unwrap();
    let bc = inter.basic_constraints().unwrap().unwrap().value;
    assert!(bc.ca);
    assert_eq!(bc.path_len_constraint, Some(0));
    assert_eq!(inter.issuer(), root.subject());

    // A second process would open it: keys by label, certificates from the state dir.
    let reopened = Ca::open(&f.config).expect("open");
    let pem = csr(&[uri("spiffe://acme.example/ns/prod/sa/reopened")]);
    let leaf = reopened.issue(&request(&pem, "acme", None), now()).unwrap();
    assert!(openssl_verify(f, &leaf.cert_pem, false).0);

    let err = Ca::init(&f.config, now()).unwrap_err();
    assert!(matches!(err, CaError::State { .. }), "{err}");
}

fn parse_leaf(issued: &IssuedCertificate) -> X509Certificate<'_> {
    X509Certificate::from_der(&issued.cert_der).unwrap().1
}

#[test]
fn issued_leaf_is_an_svid_that_openssl_verifies() {
    let f = require_fixture!();
    let now = now();
    let pem = csr(&[
        uri("spiffe://acme.example/ns/prod/sa/web"),
        dns("web.acme.internal"),
    ]);
    let issued =
        f.ca.issue(&request(&pem, "acme", Some(Duration::from_secs(1200))), now)
            .unwrap();
    let (ok, out) = openssl_verify(f, &issued.cert_pem, false);
    assert!(ok && out.contains("OK"), "{out}");
    let (ok, out) = openssl_verify(f, &issued.cert_pem, true);
    assert!(ok, "verifies against the current CRL too: {out}");

    let cert = parse_leaf(&issued);
    let bc = cert.basic_constraints().unwrap().map(|e| e.value.ca);
    assert_ne!(bc, Some(true), "no CA flag on a leaf");
    let ku = cert.key_usage().unwrap().unwrap().value;
    assert!(ku.digital_signature() && !ku.key_cert_sign() && !ku.crl_sign());
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && eku.server_auth);
    let sans: Vec<String> = cert
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(
        sans,
        vec![
            "URI(spiffe://acme.example/ns/prod/sa/web)",
            "DNSName(web.acme.internal)"
        ]
    );

    let serial = Serial::from_be_bytes(cert.raw_serial());
    assert_eq!(serial, issued.serial);
    assert!(
        serial.bits() <= 128 && serial.bits() > 64,
        "{} bits",
        serial.bits()
    );

    assert_eq!(cert.validity().not_before.timestamp(), unix(now) - 60);
    assert_eq!(cert.validity().not_after.timestamp(), unix(now) + 1200);

    // AKI names the intermediate's SKI; the leaf has its own SKI.
    let inter_pem = std::fs::read(f.config.state_dir.join("intermediate.pem")).unwrap();
    let (_, inter_pem) = parse_x509_pem(&inter_pem).unwrap();
    let inter = inter_pem.parse_x509().unwrap();
    let ski = |c: &X509Certificate<'_>| {
        c.extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
                _ => None,
            })
    };
    let aki = cert
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(a) => {
                a.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            _ => None,
        });
    assert_eq!(aki, ski(&inter));
    assert!(ski(&cert).is_some());

    // Recorded in the inventory.
    let record = f.ca.inventory().get(&issued.serial, now).unwrap().unwrap();
    assert_eq!(record.status, CertStatus::Valid);
    assert_eq!(record.requester, "bootstrap-token:token-1");
    assert_eq!(record.profile, "acme-workloads");
    assert!(issued.chain_pem.starts_with(&issued.cert_pem));
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64
}

#[test]
fn ed25519_keys_are_issued_when_the_profile_allows_them() {
    let f = require_fixture!();
    let pem = csr_with(
        &PKCS_ED25519,
        &[uri("spiffe://acme.example/ns/prod/sa/ed")],
        |_| {},
    );
    let issued = f.ca.issue(&request(&pem, "acme", None), now()).unwrap();
    let (ok, out) = openssl_verify(f, &issued.cert_pem, false);
    assert!(ok, "{out}");
    let cert = parse_leaf(&issued);
    assert_eq!(
        cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp(),
        30 * 60 + 60,
        "the profile's default lifetime (30m) plus the backdating"
    );
}

#[test]
fn each_refusal_has_its_code() {
    let f = require_fixture!();
    let acme_id = uri("spiffe://acme.example/ns/prod/sa/web");

    // Bad signature: flip the last byte (inside the signature value) of the DER.
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    params.subject_alt_names = vec![acme_id.clone()];
    let mut der = params.serialize_request(&key).unwrap().der().to_vec();
    let last = der.len() - 1;
    der[last] ^= 0x01;
    assert_eq!(
        refusal(f, &request(&der, "acme", None)),
        "csr_signature_invalid"
    );

    let big = vec![b'A'; 17 * 1024];
    assert_eq!(refusal(f, &request(&big, "acme", None)), "csr_too_large");
    assert_eq!(
        refusal(f, &request(b"\x30\x82garbage", "acme", None)),
        "csr_malformed"
    );
    assert_eq!(refusal(f, &request(b"", "acme", None)), "csr_malformed");
    let cert_pem = std::fs::read(f.config.state_dir.join("root.pem")).unwrap();
    assert_eq!(
        refusal(f, &request(&cert_pem, "acme", None)),
        "csr_malformed"
    );

    let ca_true = csr_with(
        &PKCS_ECDSA_P256_SHA256,
        std::slice::from_ref(&acme_id),
        |p| {
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        },
    );
    assert_eq!(refusal(f, &request(&ca_true, "acme", None)), "ca_requested");

    let other_domain = csr(&[uri("spiffe://evil.example/ns/prod/sa/web")]);
    assert_eq!(
        refusal(f, &request(&other_domain, "acme", None)),
        "trust_domain_not_allowed"
    );
    let other_tenant = csr(&[uri("spiffe://globex.example/billing")]);
    assert_eq!(
        refusal(f, &request(&other_tenant, "acme", None)),
        "trust_domain_not_allowed"
    );
    let acme_for_globex = csr(std::slice::from_ref(&acme_id));
    assert_eq!(
        refusal(f, &request(&acme_for_globex, "globex", None)),
        "trust_domain_not_allowed"
    );
    let wrong_path = csr(&[uri("spiffe://acme.example/admin")]);
    assert_eq!(
        refusal(f, &request(&wrong_path, "acme", None)),
        "spiffe_id_not_allowed"
    );

    for wild in ["*", "*.com", "*.*.acme.internal", "*.acme.internal"] {
        let w = csr(&[acme_id.clone(), dns(wild)]);
        assert_eq!(
            refusal(f, &request(&w, "acme", None)),
            "wildcard_not_allowed",
            "{wild}"
        );
    }
    let outside = csr(&[acme_id.clone(), dns("www.example.com")]);
    assert_eq!(
        refusal(f, &request(&outside, "acme", None)),
        "dns_name_not_allowed"
    );
    let ip = csr(&[acme_id.clone(), SanType::IpAddress([10, 0, 0, 1].into())]);
    assert_eq!(refusal(f, &request(&ip, "acme", None)), "san_not_allowed");

    let ok = csr(std::slice::from_ref(&acme_id));
    assert_eq!(
        refusal(
            f,
            &request(&ok, "acme", Some(Duration::from_secs(2 * 3600)))
        ),
        "lifetime_over_cap"
    );

    let p384 = csr_with(
        &PKCS_ECDSA_P384_SHA384,
        std::slice::from_ref(&acme_id),
        |_| {},
    );
    assert_eq!(
        refusal(f, &request(&p384, "acme", None)),
        "key_type_not_allowed"
    );

    let code_signing = csr_with(
        &PKCS_ECDSA_P256_SHA256,
        std::slice::from_ref(&acme_id),
        |p| {
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::CodeSigning];
        },
    );
    assert_eq!(
        refusal(f, &request(&code_signing, "acme", None)),
        "eku_not_allowed"
    );

    assert_eq!(
        refusal(f, &request(&ok, "nobody", None)),
        "profile_not_found"
    );

    // Nothing refused was recorded.
    let acme: TenantId = "nobody".parse().unwrap();
    let listed =
        f.ca.list(
            &InventoryFilter {
                tenant: Some(acme),
                ..Default::default()
            },
            now(),
        )
        .unwrap();
    assert!(listed.is_empty());
}

#[test]
fn inventory_revocation_and_crl() {
    let f = require_fixture!();
    let now = now();
    let issue = |name: &str, lifetime: u64| {
        let pem = csr(&[uri(&format!("spiffe://inv.example/{name}"))]);
        f.ca.issue(
            &request(&pem, "inv", Some(Duration::from_secs(lifetime))),
            now,
        )
        .unwrap()
    };
    let short = issue("short", 600);
    let long = issue("long", 3 * 3600);
    let doomed = issue("doomed", 3600);

    let tenant: TenantId = "inv".parse().unwrap();
    let list = |filter: InventoryFilter, at: SystemTime| -> Vec<Serial> {
        f.ca.list(&filter, at)
            .unwrap()
            .into_iter()
            .map(|r| r.serial)
            .collect()
    };
    let by_tenant = InventoryFilter {
        tenant: Some(tenant.clone()),
        ..Default::default()
    };
    assert_eq!(list(by_tenant.clone(), now).len(), 3);
    let soon = InventoryFilter {
        tenant: Some(tenant.clone()),
        expires_within: Some(Duration::from_secs(900)),
        ..Default::default()
    };
    assert_eq!(list(soon, now), vec![short.serial.clone()]);
    let expired_later = InventoryFilter {
        tenant: Some(tenant.clone()),
        status: Some(CertStatus::Expired),
        ..Default::default()
    };
    assert_eq!(
        list(expired_later, now + Duration::from_secs(2 * 3600)).len(),
        2
    );

    let before = f.ca.crl(now).unwrap().number;
    let record =
        f.ca.revoke(
            &doomed.serial,
            RevocationReason::KeyCompromise,
            RevocationScope::Lineage,
            now,
        )
        .unwrap()
        .certificate;
    assert_eq!(record.status, CertStatus::Revoked);
    assert_eq!(
        record.revocation_reason,
        Some(RevocationReason::KeyCompromise)
    );
    let revoked = InventoryFilter {
        tenant: Some(tenant.clone()),
        status: Some(CertStatus::Revoked),
        ..Default::default()
    };
    assert_eq!(list(revoked, now), vec![doomed.serial.clone()]);
    let valid = InventoryFilter {
        tenant: Some(tenant),
        status: Some(CertStatus::Valid),
        ..Default::default()
    };
    assert_eq!(list(valid, now).len(), 2);

    let err =
        f.ca.revoke(
            &doomed.serial,
            RevocationReason::Superseded,
            RevocationScope::Lineage,
            now,
        )
        .unwrap_err();
    assert!(matches!(err, CaError::AlreadyRevoked { .. }), "{err}");
    let err =
        f.ca.revoke(
            &"0123456789abcdef".parse().unwrap(),
            RevocationReason::Superseded,
            RevocationScope::Lineage,
            now,
        )
        .unwrap_err();
    assert!(matches!(err, CaError::UnknownSerial(_)), "{err}");

    // The CRL written on revocation verifies under the intermediate and lists the serial.
    let (ok, out) = openssl(&[
        "crl",
        "-in",
        &state(f, "crl.pem"),
        "-CAfile",
        &state(f, "chain.pem"),
        "-noout",
    ]);
    assert!(ok && out.contains("verify OK"), "{out}");
    let crl_pem = std::fs::read(f.config.state_dir.join("crl.pem")).unwrap();
    let (_, crl_pem) = parse_x509_pem(&crl_pem).unwrap();
    let (_, crl) = parse_x509_crl(&crl_pem.contents).unwrap();
    let number = crl.crl_number().unwrap().clone();
    assert!(
        number > before.into(),
        "CRL number grows: {number} > {before}"
    );
    let next = crl.next_update().unwrap().timestamp();
    assert_eq!(
        next - crl.last_update().timestamp(),
        300,
        "nextUpdate is 5 minutes ahead"
    );
    assert!(crl
        .iter_revoked_certificates()
        .any(|r| Serial::from_be_bytes(r.raw_serial()) == doomed.serial));

    // openssl refuses the revoked leaf with the CRL, and still accepts the others.
    let (ok, out) = openssl_verify(f, &doomed.cert_pem, true);
    assert!(!ok && out.contains("certificate revoked"), "{out}");
    let (ok, out) = openssl_verify(f, &long.cert_pem, true);
    assert!(ok, "{out}");
}

#[test]
fn four_threads_issue_at_once() {
    let f = require_fixture!();
    let serials = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for t in 0..4 {
            let serials = &serials;
            s.spawn(move || {
                for i in 0..10 {
                    let pem = csr(&[uri(&format!("spiffe://globex.example/worker/{t}/{i}"))]);
                    let issued = f.ca.issue(&request(&pem, "globex", None), now()).unwrap();
                    serials.lock().unwrap().push(issued.serial);
                }
            });
        }
    });
    let mut serials = serials.into_inner().unwrap();
    serials.sort();
    serials.dedup();
    assert_eq!(serials.len(), 40);
    for serial in &serials {
        assert!(f.ca.inventory().get(serial, now()).unwrap().is_some());
    }
}

#[test]
fn config_typos_are_errors() {
    let err =
        CaConfig::from_yaml(&CONFIG.replace("token_label: ca", "token_lable: ca")).unwrap_err();
    assert!(err.to_string().contains("unknown field"), "{err}");
    let err =
        CaConfig::from_yaml(&CONFIG.replace("max_lifetime: 4h", "max_lifetime: 5h")).unwrap_err();
    assert!(err.to_string().contains("max_lifetime_cap"), "{err}");
}

#[test]
fn a_region_gets_its_own_intermediate_under_the_shared_root() {
    let f = require_fixture!();
    let hsm = softhsm::hsm().unwrap();
    let dir = hsm.dir.join("region-eu");
    let yaml = CONFIG
        .replace("DIR/state", &dir.join("state").display().to_string())
        .replace("DIR", &dir.display().to_string())
        .replace("PIN_FILE", &hsm.pin_file.display().to_string())
        .replace("token_label: ca", "token_label: region")
        .replace(
            "issuing_label: issuance-issuing",
            "issuing_label: eu-issuing",
        )
        .replace("  common_name: Test Issuing CA\n", "");
    let config = CaConfig::from_yaml(&yaml).expect("region config");
    let home_root = f.config.state_dir.join("root.pem");

    // Refused, with what to do: a name that cannot be a region, a certificate that is not a
    // root, a root that the root token's key did not make.
    let err = Ca::init_region(&config, "EU west", &home_root, now()).unwrap_err();
    assert!(err.to_string().contains("a-z, 0-9"), "{err}");
    let not_root = f.config.state_dir.join("intermediate.pem");
    let err = Ca::init_region(&config, "eu", &not_root, now()).unwrap_err();
    assert!(err.to_string().contains("not a root CA"), "{err}");
    let mut other = CertificateParams::new(Vec::<String>::new()).unwrap();
    other.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let other = other
        .self_signed(&KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap())
        .unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    let foreign = write_temp(&dir, "foreign-root.pem", &other.pem());
    let err = Ca::init_region(&config, "eu", Path::new(&foreign), now()).unwrap_err();
    assert!(err.to_string().contains("not the key labelled"), "{err}");
    let two = write_temp(
        &dir,
        "two.pem",
        &format!(
            "{}{}",
            other.pem(),
            std::fs::read_to_string(&home_root).unwrap()
        ),
    );
    let err = Ca::init_region(&config, "eu", Path::new(&two), now()).unwrap_err();
    assert!(err.to_string().contains("exactly one certificate"), "{err}");

    let eu = Ca::init_region(&config, "eu", &home_root, now()).expect("region init");
    assert_eq!(eu.region(), Some("eu"));
    assert_eq!(f.ca.region(), None);
    let eu_state = |name: &str| config.state_dir.join(name).display().to_string();
    // The same root; a new intermediate, named for the region, signed by it.
    assert_eq!(
        std::fs::read(eu_state("root.pem")).unwrap(),
        std::fs::read(&home_root).unwrap()
    );
    let inter_pem = std::fs::read(eu_state("intermediate.pem")).unwrap();
    let (_, inter_pem) = parse_x509_pem(&inter_pem).unwrap();
    let inter = inter_pem.parse_x509().unwrap();
    assert!(
        inter
            .subject()
            .to_string()
            .contains("Portcullis Issuing CA eu"),
        "{}",
        inter.subject()
    );
    let (ok, out) = openssl(&[
        "verify",
        "-CAfile",
        &state(f, "bundle.pem"),
        &eu_state("intermediate.pem"),
    ]);
    assert!(ok, "{out}");
    // Its key is in the region's token, not the home region's.
    let in_token = |token: &str| {
        softhsm::raw_session(token)
            .find_objects(&[
                cryptoki::object::Attribute::Class(cryptoki::object::ObjectClass::PRIVATE_KEY),
                cryptoki::object::Attribute::Label(b"eu-issuing".to_vec()),
            ])
            .unwrap()
            .len()
    };
    assert_eq!((in_token("region"), in_token("ca")), (1, 0));

    // A leaf from each region verifies under the one root, each through its own intermediate.
    let eu_leaf = eu
        .issue(
            &request(
                &csr(&[uri("spiffe://acme.example/ns/eu/sa/api")]),
                "acme",
                None,
            ),
            now(),
        )
        .unwrap();
    let home_leaf =
        f.ca.issue(
            &request(
                &csr(&[uri("spiffe://acme.example/ns/home/sa/api")]),
                "acme",
                None,
            ),
            now(),
        )
        .unwrap();
    // Each region's inventory rows say where they were issued.
    let region_of =
        |ca: &Ca, serial: &Serial| ca.inventory().get(serial, now()).unwrap().unwrap().region;
    assert_eq!(region_of(&eu, &eu_leaf.serial).as_deref(), Some("eu"));
    assert_eq!(region_of(&f.ca, &home_leaf.serial), None);
    let tmp = tempfile::tempdir().unwrap();
    let eu_leaf_file = write_temp(tmp.path(), "eu-leaf.pem", &eu_leaf.cert_pem);
    let home_leaf_file = write_temp(tmp.path(), "home-leaf.pem", &home_leaf.cert_pem);
    let verify = |leaf: &str, inter: &str, crl: Option<&str>| {
        let bundle = state(f, "bundle.pem");
        let mut args = vec!["verify", "-CAfile", &bundle, "-untrusted", inter];
        if let Some(crl) = crl {
            args.extend(["-crl_check", "-CRLfile", crl]);
        }
        args.push(leaf);
        openssl(&args)
    };
    let home_inter = state(f, "intermediate.pem");
    let eu_inter = eu_state("intermediate.pem");
    assert!(verify(&eu_leaf_file, &eu_inter, None).0);
    assert!(!verify(&eu_leaf_file, &home_inter, None).0);

    // Revoked in its region: refused under the union of the regions' CRLs, which every
    // gateway trusting the root can hold in one `crl:` file; the other region's leaf passes.
    eu.revoke(
        &eu_leaf.serial,
        RevocationReason::KeyCompromise,
        RevocationScope::Lineage,
        now(),
    )
    .unwrap();
    let union = write_temp(
        tmp.path(),
        "crls.pem",
        &format!(
            "{}{}",
            std::fs::read_to_string(state(f, "crl.pem")).unwrap(),
            std::fs::read_to_string(eu_state("crl.pem")).unwrap()
        ),
    );
    let (ok, out) = verify(&eu_leaf_file, &eu_inter, Some(&union));
    assert!(!ok && out.contains("revoked"), "{out}");
    let (ok, out) = verify(&home_leaf_file, &home_inter, Some(&union));
    assert!(ok, "{out}");

    let err = Ca::init_region(&config, "eu", &home_root, now()).unwrap_err();
    assert!(matches!(err, CaError::State { .. }), "{err}");
}
