use super::*;

static UPSTREAM: SocketAddr = SocketAddr::Inet(std::net::SocketAddr::V4(
    std::net::SocketAddrV4::new(std::net::Ipv4Addr::new(127, 0, 0, 1), 9000),
));

fn summary(outcome: Outcome<'static>) -> Summary<'static> {
    Summary {
        request_id: "rid",
        tenant: Some("acme"),
        route: Some("acme/api"),
        caller: Some("CN=batch"),
        token: None,
        client_ip: Some("10.0.0.1".parse().unwrap()),
        tls_version: Some("TLSv1.3"),
        method: "POST",
        host: Some("gw.example"),
        path: "/api/x",
        query: Some("token=secret"),
        http_version: http::Version::HTTP_2,
        trace_id: crate::traces::incoming_trace_id(
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        ),
        admitted: outcome.label == "allow",
        outcome,
        upstream: Some(&UPSTREAM),
        failover: None,
        egress: false,
    }
}

const ALLOWED: Outcome<'static> = Outcome {
    label: "allow",
    decision: Decision::Allow,
    rule: Some("anyone"),
    rate_limit: RateLimitOutcome::Passed,
};

#[test]
fn access_line_audit_record_and_metrics_name_the_same_caller_and_decision() {
    let s = summary(ALLOWED);
    let exchange = Exchange {
        status: 201,
        bytes_in: 10,
        bytes_out: 20,
        duration: Duration::from_millis(7),
        grpc_status: None,
    };
    let line = serde_json::to_value(s.access_line(&exchange, "-")).unwrap();
    let event = s.audit_event(RequestStage::Completed, Some(&exchange), false, Vec::new());
    let metrics = s.metrics_outcome(&exchange);
    assert_eq!(line["client.id"], "CN=batch");
    assert_eq!(event.identity.as_deref(), Some("CN=batch"));
    assert_eq!(line["authz.decision"], "allow");
    assert_eq!(metrics.decision, "allow");
    assert_eq!(event.decision, Decision::Allow);
    assert_eq!(event.reason, None);
    assert_eq!(line["authz.rule"], "anyone");
    assert_eq!(event.rule.as_deref(), Some("anyone"));
    assert_eq!(line["http.version"], "HTTP/2.0");
    assert_eq!(
        (
            event.status,
            event.bytes_in,
            event.bytes_out,
            event.duration_ms
        ),
        (201, 10, 20, 7)
    );
    assert_eq!(
        event.trace_id.as_deref(),
        Some("4bf92f3577b34da6a3ce929d0e0e4736")
    );
    // The query (which may carry secrets) is left out unless configured.
    assert_eq!(event.path, "/api/x");
    let with_query = s.audit_event(RequestStage::Completed, Some(&exchange), true, Vec::new());
    assert_eq!(with_query.path, "/api/x?token=secret");
}

#[test]
fn an_admission_record_has_nothing_exchanged_yet_and_a_refusal_has_its_reason() {
    let refused = summary(Outcome {
        label: "rate_limited",
        decision: Decision::Deny,
        rule: Some("anyone"),
        rate_limit: RateLimitOutcome::Limited,
    });
    let event = refused.audit_event(RequestStage::Admitted, None, false, Vec::new());
    assert_eq!((event.status, event.bytes_in, event.duration_ms), (0, 0, 0));
    assert_eq!(event.reason.as_deref(), Some("rate_limited"));
    assert_eq!(event.decision, Decision::Deny);
}

#[test]
fn audit_sources_are_written_as_the_address_displays() {
    for ip in [
        "0.0.0.0",
        "255.255.255.255",
        "10.0.0.1",
        "192.168.100.9",
        "100.64.10.200",
        "::1",
        "2001:db8::8a2e:370:7334",
        "::ffff:10.0.0.1",
    ] {
        let ip: IpAddr = ip.parse().unwrap();
        assert_eq!(source_text(ip), ip.to_string());
    }
}

#[test]
fn only_well_formed_nonzero_trace_ids_are_kept() {
    use crate::traces::incoming_trace_id as trace_id;
    assert_eq!(
        trace_id("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
        None
    );
    assert_eq!(trace_id("00-xyz-00f067aa0ba902b7-01"), None);
    assert_eq!(trace_id("garbage"), None);
    assert_eq!(trace_id(""), None);
    assert_eq!(
        trace_id("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01")
            .map(|t| t.as_str().to_owned())
            .as_deref(),
        Some("4bf92f3577b34da6a3ce929d0e0e4736")
    );
}
