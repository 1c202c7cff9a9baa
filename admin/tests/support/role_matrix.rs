//! The role matrix of the admin API, shared by the test calling it with client certificates
//! (`admin/tests/policies.rs`) and the one calling it as people with OpenID Connect tokens
//! (`tests/e2e/admin_plane.rs`): every role endpoint, and the answer each caller expects.

use serde_json::{json, Value};

pub(crate) const GATEWAY: &str = "\
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
          - id: batch
            spiffe_id: [spiffe://acme.example/ns/batch/sa/job]
            methods: [GET, POST]
  - name: globex
    routes:
      - name: www
        host: www.globex.test
        path_prefix: /
        upstream: app
        access:
          - id: anyone
            spiffe_id: [spiffe://globex.example/ns/**]
";

/// acme's next policy: batch jobs may only read, and a new /admin route for its admins.
pub(crate) const ACME_V1: &str = "\
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
          - id: batch
            spiffe_id: [spiffe://acme.example/ns/batch/sa/job]
            methods: [GET]
      - name: admin
        host: api.acme.test
        path_prefix: /admin
        upstream: app
        access:
          - id: admins
            spiffe_id: [spiffe://acme.example/ns/admin/sa/*]
";

/// The callers, as the columns of [`EXPECTED`].
pub(crate) const CALLERS: [&str; 11] = [
    "admin",
    "editor",
    "issuer",
    "auditor",
    "reader",
    "globex",
    "sneaky",
    "everywhere",
    "workload",
    "operator",
    "anonymous",
];

/// The endpoints, as the rows of [`EXPECTED`]: method, path and body, for policy version `v`
/// of tenant acme and a certificate `acme_serial` of acme's.
pub(crate) fn endpoints(v: u64, acme_serial: &str) -> Vec<(&'static str, String, Value)> {
    let upload = json!({ "document": ACME_V1, "comment": "matrix" });
    let reason = json!({ "reason": "matrix" });
    vec![
        ("GET", "/v1/tenants/acme/policies".into(), json!(null)),
        ("POST", "/v1/tenants/acme/policies".into(), upload),
        ("GET", format!("/v1/tenants/acme/policies/{v}"), json!(null)),
        (
            "GET",
            format!("/v1/tenants/acme/policies/{v}/diff"),
            json!(null),
        ),
        (
            "GET",
            format!("/v1/tenants/acme/policies/{v}/impact?window=1h"),
            json!(null),
        ),
        (
            "POST",
            format!("/v1/tenants/acme/policies/{v}/activate"),
            reason.clone(),
        ),
        ("GET", "/v1/tenants/acme/approvals".into(), json!(null)),
        (
            "GET",
            "/v1/tenants/acme/policies/history".into(),
            json!(null),
        ),
        ("GET", "/v1/certificates?tenant=acme".into(), json!(null)),
        (
            "GET",
            format!("/v1/certificates/{acme_serial}/lineage"),
            json!(null),
        ),
        (
            "POST",
            "/v1/tenants/acme/tokens".into(),
            json!({ "ttl": "10m" }),
        ),
        ("GET", "/v1/tenants/acme/tokens".into(), json!(null)),
        ("GET", "/v1/policies/bundle".into(), json!(null)),
        ("GET", "/v1/tenants/acme/reports/access".into(), json!(null)),
        ("GET", "/v1/tenants/acme/reports/audit".into(), json!(null)),
        (
            "GET",
            "/v1/tenants/acme/reports/certificates".into(),
            json!(null),
        ),
        ("GET", "/v1/tenants/acme/webhooks".into(), json!(null)),
        (
            "POST",
            "/v1/tenants/acme/webhooks".into(),
            json!({ "url": "https://hooks.example.com/in", "events": ["policy.activated"] }),
        ),
        (
            "GET",
            "/v1/tenants/acme/webhooks/deliveries".into(),
            json!(null),
        ),
    ]
}

/// The status `who` (one of [`CALLERS`]) expects from endpoint `row`.
pub(crate) fn expected(row: usize, who: &str) -> u16 {
    let col = CALLERS
        .iter()
        .position(|c| *c == who)
        .unwrap_or_else(|| panic!("no caller {who:?} in the matrix"));
    EXPECTED[row][col]
}

/// Expected status per endpoint (rows as [`endpoints`]) for each caller (columns as
/// [`CALLERS`]).
#[rustfmt::skip]
const EXPECTED: [[u16; 11]; 19] = [
    //  admin editor issuer auditor reader globex sneaky everyw. workload operator anon
    [   200,  200,   403,   200,    200,   404,   404,   404,    404,     200,     401], // list
    [   201,  201,   403,   403,    403,   404,   404,   404,    404,     201,     401], // upload
    [   200,  200,   403,   200,    200,   404,   404,   404,    404,     200,     401], // get
    [   200,  200,   403,   200,    200,   404,   404,   404,    404,     200,     401], // diff
    [   200,  200,   403,   200,    403,   404,   404,   404,    404,     200,     401], // impact
    [   202,  403,   403,   403,    403,   404,   404,   404,    404,     202,     401], // activate
    [   200,  200,   403,   200,    200,   404,   404,   404,    404,     200,     401], // approvals
    [   200,  200,   403,   200,    200,   404,   404,   404,    404,     200,     401], // history
    [   200,  403,   200,   200,    200,   404,   403,   403,    403,     200,     401], // certificates
    [   200,  403,   200,   200,    200,   404,   404,   404,    404,     200,     401], // lineage
    [   201,  403,   201,   403,    403,   404,   404,   404,    404,     201,     401], // token create
    [   200,  403,   200,   200,    200,   404,   404,   404,    404,     200,     401], // token list
    [   403,  403,   403,   403,    403,   403,   403,   403,    403,     200,     401], // bundle
    [   200,  200,   403,   200,    200,   404,   404,   404,    404,     200,     401], // access report
    [   200,  200,   403,   200,    403,   404,   404,   404,    404,     200,     401], // audit report
    [   200,  403,   200,   200,    200,   404,   404,   404,    404,     200,     401], // certificates report
    [   200,  403,   403,   200,    403,   404,   404,   404,    404,     200,     401], // webhook list
    [   201,  403,   403,   403,    403,   404,   404,   404,    404,     201,     401], // webhook create
    [   200,  403,   403,   200,    403,   404,   404,   404,    404,     200,     401], // deliveries
];
