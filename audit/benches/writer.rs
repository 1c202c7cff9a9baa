//! Durable records per second for the writer alone (group commit), with 1 and 8 producers each
//! waiting for durability, and one producer pipelining (queue everything, wait for the last).
//!
//! `CARGO_BUILD_JOBS=1 cargo bench -p portcullis-audit --bench writer`

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use portcullis_audit::{AuditConfig, AuditLog, Decision, RequestEvent, SoftwareSigner};

fn event(i: u64) -> RequestEvent {
    RequestEvent {
        request_id: format!("req-{i}"),
        trace_id: Some(format!("{i:032x}")),
        tenant: Some("acme".into()),
        route: Some("api".into()),
        identity: Some("spiffe://acme.test/svc/web".into()),
        source: "127.0.0.1:40000".into(),
        method: "GET".into(),
        host: "api.acme.test".into(),
        path: "/v1/items".into(),
        status: 200,
        bytes_in: 10,
        bytes_out: 200,
        duration_ms: 3,
        decision: Decision::Allow,
        rule: Some("r1".into()),
        tls_version: Some("TLSv1.3".into()),
        upstream: Some("127.0.0.1:9000".into()),
        ..Default::default()
    }
}

fn writer(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let signer = Arc::new(SoftwareSigner::generate().expect("key"));
    let mut cfg = AuditConfig::new(dir.path(), "bench");
    cfg.durable_timeout = Duration::from_secs(30);
    let log = AuditLog::open(cfg, signer).expect("open");

    let mut g = c.benchmark_group("audit_writer_durable");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(1));
    for producers in [1u64, 8] {
        g.bench_function(format!("{producers}_producers_wait_each"), |b| {
            b.iter_custom(|iters| {
                let per = iters.div_ceil(producers);
                let start = Instant::now();
                let threads: Vec<_> = (0..producers)
                    .map(|p| {
                        let h = log.handle();
                        std::thread::spawn(move || {
                            for i in 0..per {
                                h.append_durable(event(p * per + i)).expect("durable");
                            }
                        })
                    })
                    .collect();
                for t in threads {
                    t.join().expect("producer");
                }
                start.elapsed()
            });
        });
    }
    g.bench_function("1_producer_pipelined", |b| {
        let h = log.handle();
        b.iter_custom(|iters| {
            let start = Instant::now();
            let mut last = None;
            for i in 0..iters {
                last = Some(h.append(event(i)).expect("queued"));
            }
            if let Some(a) = last {
                a.wait(Duration::from_secs(30)).expect("durable");
            }
            start.elapsed()
        });
    });
    g.finish();
    log.close();
}

criterion_group!(benches, writer);
criterion_main!(benches);
