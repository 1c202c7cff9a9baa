//! The PostgreSQL sink against a real server on loopback: PostgreSQL is stopped mid-stream and
//! started again, and the table ends equal to the local log.

mod common;
#[path = "common/postgres.rs"]
mod postgres;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use portcullis_audit::{query, verify_dir, PgSink, PgSinkConfig, QueryFilter};
use postgres::Postgres;

fn table(
    rt: &tokio::runtime::Runtime,
    conninfo: &str,
) -> (i64, i64, i64, String, Vec<(i64, String)>) {
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(conninfo, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        let row = client
            .query_one(
                "SELECT count(*), count(DISTINCT seq), max(seq) FROM audit_records WHERE node = 'node-1'",
                &[],
            )
            .await
            .unwrap();
        let (count, distinct, max): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
        let hash: String = client
            .query_one("SELECT hash FROM audit_records WHERE node = 'node-1' AND seq = $1", &[&max])
            .await
            .unwrap()
            .get(0);
        let lines = client
            .query("SELECT seq, line FROM audit_records WHERE node = 'node-1' ORDER BY seq", &[])
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        (count, distinct, max, hash, lines)
    })
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn local_lines(dir: &Path) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    for seg in segments(dir) {
        for l in read_lines(&seg) {
            out.push((seq_of(&l) as i64, l));
        }
    }
    out
}

#[test]
fn postgres_stopped_mid_stream_ends_equal_to_the_log() {
    let Some(pg) = Postgres::start() else {
        eprintln!("SKIP postgres_stopped_mid_stream: PostgreSQL is not installed and could not be");
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let t = TestLog::new();
    let mut cfg = t.config();
    cfg.segment_bytes = 64 << 10;
    cfg.checkpoint_every = 100;
    let log = t.open(cfg);
    let mut scfg = PgSinkConfig::new(pg.conninfo(), t.path(), "node-1");
    scfg.batch = 100;
    scfg.poll_interval = Duration::from_millis(20);
    scfg.retry_interval = Duration::from_millis(100);
    let sink = PgSink::new(scfg.clone(), Some(log.handle()));
    let stop = Arc::new(tokio::sync::Notify::new());
    let task = {
        let (sink, stop) = (sink.clone(), stop.clone());
        rt.spawn(async move { sink.run(stop.notified()).await })
    };

    let done = Arc::new(AtomicBool::new(false));
    let producer = {
        let h = log.handle();
        let done = done.clone();
        std::thread::spawn(move || {
            for i in 0..3000 {
                h.append_durable(request(i)).unwrap();
                if i % 100 == 0 {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            done.store(true, Ordering::Release);
        })
    };

    wait_for("first records shipped", Duration::from_secs(30), || {
        sink.stats().confirmed_next_seq > 300
    });
    pg.ctl_stop("immediate");
    wait_for("the sink to notice", Duration::from_secs(30), || {
        !sink.stats().connected
    });
    // The log keeps accepting records while the store is away: the spool grows.
    let confirmed_while_down = sink.stats().confirmed_next_seq;
    wait_for("the spool to grow", Duration::from_secs(30), || {
        sink.stats().lag_records > 200 || done.load(Ordering::Acquire)
    });
    assert_eq!(sink.stats().confirmed_next_seq, confirmed_while_down);
    assert!(sink.last_error().is_some());
    pg.ctl_start();
    producer.join().unwrap();
    wait_for("the sink to catch up", Duration::from_secs(60), || {
        let s = sink.stats();
        s.connected && s.lag_records == 0 && s.local_next_seq >= 3000
    });
    stop.notify_one();
    rt.block_on(task).unwrap();
    log.close();
    // Ship whatever close wrote (a final checkpoint, if records followed the last one).
    let offline = PgSink::new(scfg.clone(), None);
    rt.block_on(offline.ship_until_caught_up()).unwrap();
    // Shipping again inserts nothing.
    assert_eq!(rt.block_on(offline.ship_until_caught_up()).unwrap(), 0);

    let report = verify_dir(t.path(), &t.key()).unwrap();
    let (count, distinct, max, hash, lines) = table(&rt, &pg.conninfo());
    assert_eq!(count as u64, report.records, "same count");
    assert_eq!(distinct, count, "no duplicates");
    assert_eq!(max as u64, report.last_seq.unwrap());
    assert_eq!(hash, report.last_hash, "same chain hash");
    assert_eq!(
        lines,
        local_lines(t.path()),
        "every row is the line written locally"
    );
    let requests = query(t.path(), QueryFilter::default()).unwrap().count();
    assert_eq!(requests as i64, count);
}

#[test]
fn resumes_after_rows_were_lost_and_never_duplicates() {
    let Some(pg) = Postgres::start() else {
        eprintln!(
            "SKIP resumes_after_rows_were_lost: PostgreSQL is not installed and could not be"
        );
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let t = TestLog::new();
    fill(&t, t.config(), 250);
    let sink = PgSink::new(PgSinkConfig::new(pg.conninfo(), t.path(), "node-1"), None);
    let first = rt.block_on(sink.ship_until_caught_up()).unwrap();
    // A store restored from an older backup has lost its newest rows: shipping resumes there.
    rt.block_on(async {
        let (c, conn) = tokio_postgres::connect(&pg.conninfo(), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        c.execute("DELETE FROM audit_records WHERE seq >= 200", &[])
            .await
            .unwrap();
    });
    let again = rt.block_on(sink.ship_until_caught_up()).unwrap();
    assert_eq!(again, first - 200);
    let (count, distinct, _, hash, _) = table(&rt, &pg.conninfo());
    assert_eq!(count as u64, first);
    assert_eq!(distinct, count);
    assert_eq!(hash, verify_dir(t.path(), &t.key()).unwrap().last_hash);
    assert_eq!(sink.stats().lag_records, 0);
}
