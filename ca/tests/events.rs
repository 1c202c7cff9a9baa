//! The CA records its own events: one per issuance, refusal and revocation, in the sink it
//! was handed, with the fields the audit log has always carried. On a software-key CA.

#[path = "support/pki.rs"]
mod pki;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use pki::{csr, dns, uri};
use portcullis_audit::{CaAction, CaEvent};
use portcullis_ca::cli::{run_with_audit, CaCommand};
use portcullis_ca::{
    Ca, CaConfig, CaError, CaEventSink, IssueRequest, Requester, RequesterKind, RevocationReason,
    RevocationScope,
};

/// Keeps what it is handed.
#[derive(Default)]
struct Recorded(Mutex<Vec<CaEvent>>);

impl CaEventSink for Recorded {
    fn record(&self, event: CaEvent) {
        self.0.lock().unwrap().push(event);
    }
}

impl Recorded {
    fn take(&self) -> Vec<CaEvent> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

const SPIFFE: &str = "spiffe://web.example/frontend";

fn write_config(dir: &Path) -> PathBuf {
    let path = dir.join("ca.yaml");
    std::fs::write(
        &path,
        format!(
            r#"
state_dir: {state}
backend:
  software:
    key_dir: {keys}
keys:
  root_label: root
  issuing_label: issuing
profiles:
  - name: web
    tenant: web
    spiffe_ids: ["spiffe://web.example/*"]
    dns_names: ["*.web.internal"]
    max_lifetime: 1h
    server_auth: true
  - name: db
    tenant: db
    require_spiffe_id: false
    dns_names: ["*.db.internal"]
    server_auth: true
"#,
            state = dir.join("state").display(),
            keys = dir.join("keys").display()
        ),
    )
    .unwrap();
    path
}

fn software_ca(dir: &Path) -> Ca {
    let config = CaConfig::load(&write_config(dir)).unwrap();
    Ca::init(&config, SystemTime::now()).unwrap()
}

fn token_requester() -> Requester {
    Requester {
        kind: RequesterKind::BootstrapToken,
        id: "token-1".to_owned(),
    }
}

fn request<'a>(csr: &'a [u8], profile: Option<&'a str>) -> IssueRequest<'a> {
    IssueRequest {
        csr,
        tenant: "web".parse().unwrap(),
        profile,
        lifetime: None,
        requester: token_requester(),
    }
}

fn refusal_reason(err: &CaError) -> String {
    match err {
        CaError::Refused(r) => format!("{}: {r}", r.code()),
        e => panic!("expected a refusal, got {e}"),
    }
}

#[test]
fn issue_refuse_and_revoke_each_record_one_event() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Arc::new(Recorded::default());
    let ca = software_ca(dir.path()).with_event_sink(Arc::clone(&sink) as Arc<dyn CaEventSink>);
    let now = SystemTime::now();

    // Issued: who asked, the SPIFFE ID, the serial, the profile.
    let good = csr(&[uri(SPIFFE), dns("app.web.internal")]);
    let issued = ca.issue(&request(&good, None), now).unwrap();
    assert_eq!(
        sink.take(),
        [CaEvent {
            action: CaAction::Issue,
            requester: "bootstrap-token:token-1".to_owned(),
            subject: Some(SPIFFE.to_owned()),
            serial: Some(issued.serial.to_string()),
            profile: Some("web".to_owned()),
            reason: None,
            tenant: Some("web".to_owned()),
        }]
    );

    // Without a SPIFFE ID, the subject is the first DNS name.
    let dns_only = csr(&[dns("one.db.internal"), dns("two.db.internal")]);
    let db = IssueRequest {
        tenant: "db".parse().unwrap(),
        ..request(&dns_only, Some("db"))
    };
    let by_name = ca.issue(&db, now).unwrap();
    let events = sink.take();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].subject.as_deref(), Some("one.db.internal"));
    assert_eq!(events[0].serial, Some(by_name.serial.to_string()));

    // Refused by the profile (another trust domain): the name asked for, the profile asked
    // for, and "<code>: <why>"; no serial.
    let foreign = "spiffe://globex.example/x";
    let bad = csr(&[uri(foreign)]);
    let err = ca.issue(&request(&bad, Some("web")), now).unwrap_err();
    assert!(
        refusal_reason(&err).starts_with("trust_domain_not_allowed: "),
        "{err}"
    );
    assert_eq!(
        sink.take(),
        [CaEvent {
            action: CaAction::Refuse,
            requester: "bootstrap-token:token-1".to_owned(),
            subject: Some(foreign.to_owned()),
            serial: None,
            profile: Some("web".to_owned()),
            reason: Some(refusal_reason(&err)),
            tenant: Some("web".to_owned()),
        }]
    );

    // A lifetime over the profile's maximum, no profile named: a refusal with no profile.
    let long = IssueRequest {
        lifetime: Some(Duration::from_secs(2 * 3600)),
        ..request(&good, None)
    };
    let err = ca.issue(&long, now).unwrap_err();
    let events = sink.take();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].action, CaAction::Refuse);
    assert_eq!(events[0].profile, None);
    assert_eq!(events[0].subject.as_deref(), Some(SPIFFE));
    assert_eq!(events[0].reason, Some(refusal_reason(&err)));
    assert!(err.to_string().contains("lifetime"), "{err}");

    // A profile the tenant does not have, and a CSR that is not one: refusals too.
    let err = ca.issue(&request(&good, Some("nope")), now).unwrap_err();
    let events = sink.take();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].profile.as_deref(), Some("nope"));
    assert_eq!(events[0].reason, Some(refusal_reason(&err)));
    assert!(refusal_reason(&err).starts_with("profile_not_found: "));
    let err = ca.issue(&request(b"not a CSR", None), now).unwrap_err();
    let events = sink.take();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].subject, None);
    assert!(refusal_reason(&err).starts_with("csr_malformed: "));

    // Revoked: who asked, the SPIFFE ID, serial, profile and the reason's name.
    let operator = Requester {
        kind: RequesterKind::Operator,
        id: "alice".to_owned(),
    };
    ca.revoke_by(
        &issued.serial,
        RevocationReason::KeyCompromise,
        RevocationScope::Lineage,
        &operator,
        now,
    )
    .unwrap();
    assert_eq!(
        sink.take(),
        [CaEvent {
            action: CaAction::Revoke,
            requester: "operator:alice".to_owned(),
            subject: Some(SPIFFE.to_owned()),
            serial: Some(issued.serial.to_string()),
            profile: Some("web".to_owned()),
            reason: Some("keyCompromise".to_owned()),
            tenant: Some("web".to_owned()),
        }]
    );
    // Without a SPIFFE ID, the revocation names the certificate's subject.
    ca.revoke_by(
        &by_name.serial,
        RevocationReason::Superseded,
        RevocationScope::Lineage,
        &operator,
        now,
    )
    .unwrap();
    let events = sink.take();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        events[0].subject.as_deref(),
        Some("O=db, CN=one.db.internal")
    );

    // What was not done is not recorded: revoking twice, or an unknown serial.
    let again = ca.revoke_by(
        &issued.serial,
        RevocationReason::Superseded,
        RevocationScope::Lineage,
        &operator,
        now,
    );
    assert!(matches!(again, Err(CaError::AlreadyRevoked { .. })));
    let unknown = ca.revoke_by(
        &"0badc0ffee".parse().unwrap(),
        RevocationReason::Unspecified,
        RevocationScope::Lineage,
        &operator,
        now,
    );
    assert!(matches!(unknown, Err(CaError::UnknownSerial(_))));
    assert_eq!(sink.take(), []);

    // A refusal decided before the CA (the issuance API's identity checks) reads the same.
    ca.record_refusal(
        &token_requester(),
        Some(&"web".parse().unwrap()),
        Some(SPIFFE.to_owned()),
        "identity_mismatch",
        "CSR SPIFFE ID differs from the token's",
    );
    assert_eq!(
        sink.take(),
        [CaEvent {
            action: CaAction::Refuse,
            requester: "bootstrap-token:token-1".to_owned(),
            subject: Some(SPIFFE.to_owned()),
            serial: None,
            profile: None,
            reason: Some("identity_mismatch: CSR SPIFFE ID differs from the token's".to_owned()),
            tenant: Some("web".to_owned()),
        }]
    );
}

#[test]
fn a_clone_records_in_its_own_sink_only() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (Arc::new(Recorded::default()), Arc::new(Recorded::default()));
    let ca = software_ca(dir.path()).with_event_sink(Arc::clone(&first) as Arc<dyn CaEventSink>);
    let other = ca
        .clone()
        .with_event_sink(Arc::clone(&second) as Arc<dyn CaEventSink>);
    let good = csr(&[uri(SPIFFE)]);
    let issued = other
        .issue(&request(&good, None), SystemTime::now())
        .unwrap();
    assert!(first.take().is_empty());
    assert_eq!(second.take().len(), 1);
    // The same CA: the clone's certificate is in the shared inventory.
    let found = ca
        .inventory()
        .get(&issued.serial, SystemTime::now())
        .unwrap();
    assert!(found.is_some());
}

#[test]
fn the_cli_records_through_the_ca() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let sink = Arc::new(Recorded::default());
    let run = |cmd: CaCommand| -> Result<String, CaError> {
        let mut out = Vec::new();
        let events = Some(Arc::clone(&sink) as Arc<dyn CaEventSink>);
        run_with_audit(cmd, &mut out, SystemTime::now(), events)?;
        Ok(String::from_utf8(out).unwrap())
    };
    let issue = |csr_bytes: Vec<u8>| {
        let path = dir.path().join("req.csr");
        std::fs::write(&path, csr_bytes).unwrap();
        run(CaCommand::Issue {
            config: config.clone(),
            csr: path,
            tenant: "web".parse().unwrap(),
            profile: None,
            lifetime: None,
            out: None,
        })
    };
    run(CaCommand::Init {
        config: config.clone(),
        region: None,
        root: None,
    })
    .unwrap();
    assert_eq!(sink.take(), [], "init issues no leaf");

    let operator = format!(
        "operator:{}",
        std::env::var("USER").unwrap_or_else(|_| "cli".to_owned())
    );
    issue(csr(&[uri(SPIFFE)])).unwrap();
    let issued = sink.take();
    assert_eq!(issued.len(), 1, "{issued:?}");
    assert_eq!(
        (issued[0].action, issued[0].requester.as_str()),
        (CaAction::Issue, operator.as_str())
    );
    let serial = issued[0].serial.clone().unwrap();

    let err = issue(csr(&[uri("spiffe://globex.example/x")])).unwrap_err();
    let refused = sink.take();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].action, CaAction::Refuse);
    assert_eq!(refused[0].reason, Some(refusal_reason(&err)));

    run(CaCommand::Revoke {
        config: config.clone(),
        serial: serial.clone(),
        reason: RevocationReason::Superseded,
        only_this: false,
    })
    .unwrap();
    assert_eq!(
        sink.take(),
        [CaEvent {
            action: CaAction::Revoke,
            requester: operator,
            subject: Some(SPIFFE.to_owned()),
            serial: Some(serial),
            profile: Some("web".to_owned()),
            reason: Some("superseded".to_owned()),
            tenant: Some("web".to_owned()),
        }]
    );
}
