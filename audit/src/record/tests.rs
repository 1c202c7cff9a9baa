use super::*;

fn sample() -> RecordKind {
    RecordKind::Request(RequestEvent {
        request_id: "r1".into(),
        tenant: Some("acme".into()),
        identity: Some("spiffe://acme/web".into()),
        source: "127.0.0.1:5000".into(),
        method: "GET".into(),
        host: "api.acme".into(),
        path: "/v1/x".into(),
        status: 200,
        dlp: vec![DlpFinding {
            detector: "credit_card".into(),
            count: 2,
            action: "redact".into(),
        }],
        ..Default::default()
    })
}

#[test]
fn encode_then_check_round_trips() {
    let (line, hash) = encode(7, "2025-01-01T00:00:00Z", "n1", &sample(), GENESIS_HASH).unwrap();
    assert_eq!(*line.last().unwrap(), b'\n');
    let body = &line[..line.len() - 1];
    let h = check_line(body).unwrap();
    assert_eq!(h.seq, 7);
    assert_eq!(h.kind, "request");
    assert_eq!(h.hash, hash);
    let rec = parse_record(body).unwrap();
    assert_eq!(rec.kind, sample());
    assert_eq!(rec.prev_hash, GENESIS_HASH);
    // Re-serialising the parsed record gives the same bytes: the schema is stable.
    assert_eq!(serde_json::to_vec(&rec).unwrap(), body);
}

#[test]
fn any_changed_byte_is_seen() {
    let (line, _) = encode(1, "t", "n1", &sample(), GENESIS_HASH).unwrap();
    let body = &line[..line.len() - 1];
    let text = String::from_utf8(body.to_vec()).unwrap();
    let edited = text.replace("\"status\":200", "\"status\":201");
    assert_eq!(
        check_line(edited.as_bytes()).unwrap_err(),
        LineFault::HashMismatch
    );
    let spaced = text.replacen("{\"v\":1", "{ \"v\":1", 1);
    assert_eq!(
        check_line(spaced.as_bytes()).unwrap_err(),
        LineFault::HashMismatch
    );
    assert!(matches!(
        check_line(&body[..body.len() - 5]),
        Err(LineFault::Malformed(_))
    ));
    assert!(matches!(
        check_line(b"garbage"),
        Err(LineFault::Malformed(_))
    ));
}

#[test]
fn a_long_path_is_cut_with_its_length_and_digest_kept() {
    let whole = format!("/{}%2F", "é".repeat(30_000));
    let mut event = RequestEvent {
        path: whole.clone(),
        ..Default::default()
    };
    event.bound_path(1024);
    // Cut on a character boundary: 'é' is two bytes, after the one-byte '/'.
    assert_eq!(event.path.len(), 1023);
    assert!(whole.starts_with(&event.path));
    let kept = event.path_truncated.clone().unwrap();
    assert_eq!(kept.bytes, whole.len() as u64);
    assert_eq!(
        kept.sha256,
        hex::encode(ring::digest::digest(&SHA256, whole.as_bytes()))
    );
    let (line, _) = encode(0, "t", "n1", &RecordKind::Request(event), GENESIS_HASH).unwrap();
    assert!(line.len() < 2048);
    let rec = parse_record(&line[..line.len() - 1]).unwrap();
    let RecordKind::Request(back) = rec.kind else {
        panic!("not a request")
    };
    assert_eq!(back.path_truncated, Some(kept));

    let mut short = RequestEvent {
        path: "/a".into(),
        ..Default::default()
    };
    short.bound_path(1024);
    assert_eq!((short.path.as_str(), short.path_truncated), ("/a", None));
}

#[test]
fn records_written_before_path_truncated_existed_still_parse() {
    // A request line as version 1 wrote it before the optional member was added.
    let old = r#"{"v":1,"seq":0,"time":"t","node":"n1","kind":"request","event":{"request_id":"r1","stage":"completed","trace_id":null,"tenant":null,"route":null,"identity":null,"source":"127.0.0.1","method":"GET","host":"h","path":"/x","status":404,"bytes_in":0,"bytes_out":0,"duration_ms":0,"decision":"deny","rule":null,"rate_limit":"none","dlp":[],"tls_version":null,"upstream":null,"reason":"no_route"},"prev_hash":"0000000000000000000000000000000000000000000000000000000000000000"}"#;
    let hash = hex::encode(ring::digest::digest(&SHA256, old.as_bytes()));
    let line = format!("{},\"hash\":\"{hash}\"}}", &old[..old.len() - 1]);
    check_line(line.as_bytes()).unwrap();
    let rec = parse_record(line.as_bytes()).unwrap();
    let RecordKind::Request(e) = &rec.kind else {
        panic!("not a request")
    };
    assert_eq!(e.path_truncated, None);
    assert_eq!(
        (e.tenant.as_deref(), e.reason.as_deref()),
        (None, Some("no_route"))
    );
    // Re-encoded, the bytes are the same but for the null members, left out since: nothing is
    // added to a record that has no cut.
    let (again, _) = encode(0, "t", "n1", &rec.kind, GENESIS_HASH).unwrap();
    let without_nulls = old
        .replace(
            r#","trace_id":null,"tenant":null,"route":null,"identity":null"#,
            "",
        )
        .replace(r#","rule":null"#, "")
        .replace(r#","tls_version":null,"upstream":null"#, "");
    let body = &again[..again.len() - 1 - (HASH_MEMBER.len() + 64 + 2)];
    assert_eq!(
        String::from_utf8_lossy(body),
        &without_nulls[..without_nulls.len() - 1]
    );
}

#[test]
fn request_events_leave_out_null_members_and_parse_back() {
    let event = RequestEvent {
        request_id: "r1".into(),
        stage: RequestStage::Admitted,
        source: "10.0.0.1".into(),
        method: "GET".into(),
        host: "h".into(),
        path: "/x".into(),
        ..Default::default()
    };
    let (line, _) = encode(
        3,
        "t",
        "n1",
        &RecordKind::Request(event.clone()),
        GENESIS_HASH,
    )
    .unwrap();
    let text = String::from_utf8(line).unwrap();
    assert!(!text.contains("null"), "{text}");
    let rec = parse_record(text.trim_end().as_bytes()).unwrap();
    assert_eq!(rec.kind, RecordKind::Request(event));
}

/// The encoder writes each member itself; serde's form of the same record (what readers parse
/// and `audit query` prints) must be byte for byte the line that was hashed.
#[test]
fn the_encoder_writes_what_serde_writes_for_every_kind() {
    let kinds = [
        sample(),
        RecordKind::Request(RequestEvent {
            trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
            route: Some("acme/api".into()),
            rule: Some("r\"1\u{7}".into()),
            tls_version: Some("TLSv1_3".into()),
            upstream: Some("127.0.0.1:1".into()),
            reason: Some("no_route".into()),
            direction: Some("egress".into()),
            failover: Some("us-east".into()),
            path: "/caf\u{e9}/\\x".into(),
            path_truncated: Some(TruncatedPath {
                bytes: 4096,
                sha256: "ab".repeat(32),
            }),
            person: Some(PersonFacts {
                provider: "corp".into(),
                issuer: "https://idp.example".into(),
                subject: "alice\"".into(),
                amr: vec!["pwd".into(), "mfa".into()],
                acr: Some("urn:mfa".into()),
                auth_time: Some(1_700_000_000),
            }),
            stage: RequestStage::Admitted,
            decision: Decision::Error,
            rate_limit: RateLimitOutcome::Passed,
            status: 503,
            bytes_in: u64::MAX,
            ..Default::default()
        }),
        RecordKind::Request(RequestEvent {
            person: Some(PersonFacts {
                subject: "bob".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        RecordKind::Ca(CaEvent {
            action: CaAction::Issue,
            requester: "op".into(),
            subject: None,
            serial: Some("0a".into()),
            profile: None,
            reason: None,
            tenant: Some("acme".into()),
        }),
        RecordKind::Admin(AdminAction {
            actor: "a".into(),
            action: "route.update".into(),
            target: None,
            tenant: Some("acme".into()),
            outcome: "ok".into(),
            role: Some("auditor".into()),
        }),
        RecordKind::ConfigReload(ConfigReload {
            digest: ConfigReload::digest_of(b"x"),
            trigger: None,
            refused: true,
        }),
        RecordKind::RefusalsSuppressed(SuppressedRefusals {
            since: "t".into(),
            sources: vec![SuppressedSource {
                source: "10.0.0.9".into(),
                suppressed: 7,
            }],
            unlisted: 1,
            suppressed: 8,
        }),
        RecordKind::AbuseSummary(AbuseSummary {
            since: "t".into(),
            listeners: vec![
                ListenerAbuse {
                    listener: "public\"".into(),
                    slowed: 2,
                    delayed: 9,
                    closed: 1,
                    source_rate: u64::MAX,
                    identity_rate: 3,
                    sources: vec![AbuseCaller {
                        caller: "10.0.0.9".into(),
                        slowed: 2,
                        closed: 1,
                        refused: 7,
                    }],
                    identities: vec![AbuseCaller {
                        caller: "spiffe://td/ns/x/sa/caf\u{e9}".into(),
                        refused: 3,
                        ..Default::default()
                    }],
                },
                ListenerAbuse {
                    listener: "internal".into(),
                    ..Default::default()
                },
            ],
        }),
        RecordKind::Truncation(Truncation {
            segment: "s".into(),
            from_seq: 4,
            bytes: 10,
            saved_as: None,
        }),
        RecordKind::Retention(Retention {
            deleted_segments: vec!["a".into(), "b".into()],
            through_seq: 9,
            through_hash: GENESIS_HASH.into(),
            algorithm: "ed25519".into(),
            key_id: "k".into(),
            signature: "00".into(),
        }),
        RecordKind::Checkpoint(Checkpoint {
            segment: "s".into(),
            through_seq: 9,
            chain_hash: GENESIS_HASH.into(),
            algorithm: "ed25519".into(),
            key_id: "k".into(),
            signature: "00".into(),
        }),
    ];
    for (seq, kind) in (u64::MAX - 20..).zip(kinds) {
        let node = "n\"\u{1}é";
        let (line, hash) = encode(
            seq,
            "2025-01-01T00:00:00.000001Z",
            node,
            &kind,
            GENESIS_HASH,
        )
        .unwrap();
        let rec = AuditRecord {
            v: SCHEMA_VERSION,
            seq,
            time: "2025-01-01T00:00:00.000001Z".into(),
            node: node.into(),
            kind,
            prev_hash: GENESIS_HASH.into(),
            hash,
        };
        let mut expected = serde_json::to_vec(&rec).unwrap();
        expected.push(b'\n');
        assert_eq!(
            String::from_utf8(line).unwrap(),
            String::from_utf8(expected).unwrap()
        );
    }
}

#[test]
fn path_drops_query_by_default() {
    assert_eq!(audit_path("/a/b?token=x", false), "/a/b");
    assert_eq!(audit_path("/a/b?token=x", true), "/a/b?token=x");
    assert_eq!(audit_path("/a", false), "/a");
}

#[test]
fn enum_names_are_their_serialised_names() {
    for stage in [RequestStage::Admitted, RequestStage::Completed] {
        assert_eq!(serde_json::to_value(stage).unwrap(), stage.as_str());
    }
    for outcome in [
        RateLimitOutcome::None,
        RateLimitOutcome::Passed,
        RateLimitOutcome::Limited,
    ] {
        assert_eq!(serde_json::to_value(outcome).unwrap(), outcome.as_str());
    }
    for decision in [Decision::Allow, Decision::Deny, Decision::Error] {
        assert_eq!(serde_json::to_value(decision).unwrap(), decision.as_str());
    }
}
