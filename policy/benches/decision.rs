//! Decision time per request (route lookup + access rules) with 1 and with 1,000 tenants of
//! 20 rules each, side by side in one run: the per-request cost must not grow with the number
//! of tenants.
//!
//! `cargo bench -p portcullis-policy --bench decision`

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use portcullis_policy::{normalize_path, Config, Identity, NoHeaders, RequestFacts, SpiffeId};

const RULES: usize = 20;

/// A config with `tenants` tenants, each on its own host with one route of `RULES` rules.
fn config(tenants: usize) -> Config {
    let mut yaml = String::from(
        "listeners:\n  - name: l\n    address: 127.0.0.1:8443\n    tls: { certificate: s.pem, private_key: s.key, client_ca: ca.pem }\n\
         upstreams:\n  - name: u\n    targets: [127.0.0.1:9000]\ntenants:\n",
    );
    for t in 0..tenants {
        yaml.push_str(&format!(
            "  - name: t{t}\n    routes:\n      - name: api\n        host: t{t}.example.com\n        path_prefix: /api\n        upstream: u\n        access:\n"
        ));
        for r in 0..RULES {
            yaml.push_str(&format!(
                "          - id: r{r}\n            spiffe_id: [spiffe://t{t}.example/ns/ns{r}/sa/*]\n            methods: [GET, POST]\n            path_prefix: [/api/v{r}]\n"
            ));
        }
    }
    Config::from_yaml(&yaml, Path::new("bench.yaml")).expect("bench config is valid")
}

fn decision(c: &mut Criterion) {
    let mut group = c.benchmark_group("decision");
    group.sample_size(20);
    for tenants in [1usize, 1000] {
        let config = config(tenants);
        let t = tenants / 2;
        let host = format!("t{t}.example.com");
        // Matches only the last rule: the worst case within a route.
        let last = RULES - 1;
        let id: SpiffeId = format!("spiffe://t{t}.example/ns/ns{last}/sa/frontend")
            .parse()
            .expect("valid id");
        let identity = Identity::from_x509(Some(id), vec![], None);
        let path = normalize_path(&format!("/api/v{last}/items/42")).expect("valid path");
        group.bench_function(format!("{tenants}_tenants_x_{RULES}_rules"), |b| {
            b.iter(|| {
                let route = config
                    .routes
                    .route(Some(black_box(&host)), black_box(&path))
                    .expect("routed");
                let facts = RequestFacts {
                    identity: Some(&identity),
                    token: None,
                    method: "GET",
                    path: &path,
                    source: [10, 0, 0, 1].into(),
                    headers: &NoHeaders,
                };
                black_box(route.authorize(&facts)).is_ok()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, decision);
criterion_main!(benches);
