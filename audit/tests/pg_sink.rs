//! The PostgreSQL sink against a real server on loopback: PostgreSQL is stopped mid-stream and
//! started again, and the table ends equal to the local log; rows forged in the store (a high
//! seq, another hash at a seq the log holds) raise the alarm instead of fooling the sink, and
//! retention keeps what the store has not confirmed.

mod common;
#[path = "common/postgres.rs"]
mod postgres;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use portcullis_audit::{
    query, verify_dir, CentralStore, PgSink, PgSinkConfig, QueryFilter, SinkError, StoreTls,
    TABLE_DDL,
};
use postgres::Postgres;

/// These tests look at what is stored, not at how it travels (see pg_tls.rs): in clear.
fn sink_config(pg: &Postgres, dir: &Path) -> PgSinkConfig {
    let store = CentralStore::new(&pg.conninfo(), StoreTls::InsecurePlaintext).unwrap();
    PgSinkConfig::new(store, dir, "node-1")
}

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
    let mut scfg = sink_config(&pg, t.path());
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
    let sink = PgSink::new(sink_config(&pg, t.path()), None);
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

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn count_rows(pg: &Postgres, condition: &str) -> u64 {
    pg.psql(&format!(
        "SELECT count(*) FROM audit_records WHERE node = 'node-1' AND {condition}"
    ))
    .parse()
    .unwrap()
}

/// The attack of issue 11: whoever can write the table inserts `(node, 2^62)`. The old sink
/// resumed from `max(seq) + 1`, shipped nothing more, reported no lag, and retention then
/// deleted segments that had never left the box.
#[test]
fn a_forged_high_seq_row_raises_the_alarm_and_unshipped_segments_are_kept() {
    let Some(pg) = Postgres::start() else {
        eprintln!("SKIP a_forged_high_seq_row: PostgreSQL is not installed and could not be");
        return;
    };
    let rt = current_thread();
    let t = TestLog::new();
    let mut cfg = t.config();
    cfg.segment_bytes = 4096;
    cfg.checkpoint_every = 10;
    let log = t.open(cfg);
    let h = log.handle();
    for i in 0..100 {
        h.append_durable(request(i)).unwrap();
    }
    pg.psql(TABLE_DDL);
    pg.psql(
        "INSERT INTO audit_records (node, seq, time, kind, record, hash, line) \
         VALUES ('node-1', 4611686018427387904, now(), 'request', '{}', 'forged', 'forged')",
    );

    let sink = PgSink::new(sink_config(&pg, t.path()), Some(h.clone()));
    let shipped = rt.block_on(sink.ship_until_caught_up()).unwrap();
    let durable = h.stats().durable_next_seq;
    assert!(durable >= 100);
    assert_eq!(
        shipped, durable,
        "every durable record shipped despite the forged row"
    );
    assert_eq!(count_rows(&pg, "seq < 4611686018427387904"), durable);
    let stats = sink.stats();
    assert!(
        stats.store_ahead,
        "the forged row raises the alarm: {stats:?}"
    );
    assert_eq!(
        stats.confirmed_next_seq, durable,
        "confirmed only what it compared"
    );
    assert_eq!(stats.lag_records, 0);
    assert!(sink.last_error().unwrap().contains("4611686018427387904"));

    // The store goes away; the log grows by unshipped segments; retention wants everything.
    pg.ctl_stop("fast");
    for i in 100..300 {
        h.append_durable(request(i)).unwrap();
    }
    let confirmed = sink.stats().confirmed_next_seq;
    let lag = h.stats().durable_next_seq - confirmed;
    assert!(lag >= 200, "the spool depth is truthful: {lag}");
    let outcome = h
        .apply_retention(Duration::ZERO, Some(confirmed), Duration::from_secs(10))
        .unwrap();
    assert!(
        !outcome.deleted_segments.is_empty(),
        "confirmed segments go"
    );
    assert!(
        outcome.held_unconfirmed >= 2,
        "unconfirmed segments are kept and counted: {outcome:?}"
    );
    let report = verify_dir(t.path(), &t.key()).unwrap();
    assert!(
        report.first_seq.unwrap() <= confirmed,
        "every record the store has not confirmed is still in the log: first {:?}, confirmed {confirmed}",
        report.first_seq
    );

    // Back again: the rest ships, and the alarm stays while the forged row is there.
    pg.ctl_start();
    rt.block_on(sink.ship_until_caught_up()).unwrap();
    let end = h.stats().durable_next_seq;
    assert_eq!(sink.stats().confirmed_next_seq, end);
    assert_eq!(count_rows(&pg, "seq < 4611686018427387904"), end);
    assert!(sink.stats().store_ahead);
    log.close();
}

/// A row stored at a seq the log holds, with another hash: written into the table before the
/// sink got there, or rewritten after it shipped. Either way the sink stops with the alarm.
#[test]
fn a_stored_row_with_another_hash_stops_the_sink_with_the_alarm() {
    let Some(pg) = Postgres::start() else {
        eprintln!(
            "SKIP a_stored_row_with_another_hash: PostgreSQL is not installed and could not be"
        );
        return;
    };
    let rt = current_thread();
    let t = TestLog::new();
    fill(&t, t.config(), 100);
    let lines = local_lines(t.path());
    // The attacker's version of seq 30: a deny turned into an allow, hashed again so that the
    // row looks intact on its own.
    let (_, genuine) = &lines[30];
    let forged = rehash(&genuine.replace("\"decision\":\"deny\"", "\"decision\":\"allow\""));
    assert_ne!(hash_of(&forged), hash_of(genuine));
    pg.psql(TABLE_DDL);
    pg.psql(&format!(
        "INSERT INTO audit_records (node, seq, time, kind, record, hash, line) \
         VALUES ('node-1', 30, now(), 'request', '{{}}', '{}', '{}')",
        hash_of(&forged),
        forged.replace('\'', "''")
    ));

    let sink = PgSink::new(sink_config(&pg, t.path()), None);
    let err = rt.block_on(sink.ship_until_caught_up()).unwrap_err();
    assert!(
        matches!(err, SinkError::Mismatch { seq: 30, .. }),
        "the sink names the row: {err}"
    );
    let stats = sink.stats();
    assert!(stats.mismatch, "{stats:?}");
    assert_eq!(
        stats.confirmed_next_seq, 30,
        "only what precedes it is confirmed"
    );
    assert_eq!(count_rows(&pg, "seq > 30"), 0, "nothing shipped past it");
    // The sink's run loop does not go back to shipping after the alarm.
    let stop = Arc::new(tokio::sync::Notify::new());
    let running = {
        let (sink, stop) = (sink.clone(), stop.clone());
        rt.spawn(async move { sink.run(stop.notified()).await })
    };
    rt.block_on(async { tokio::time::sleep(Duration::from_millis(300)).await });
    assert_eq!(count_rows(&pg, "seq > 30"), 0);
    stop.notify_one();
    rt.block_on(running).unwrap();

    // Repaired, shipped in full; then the attacker rewrites a shipped row. The next sink to
    // start (a restarted gateway) compares what is stored and stops.
    pg.psql("DELETE FROM audit_records WHERE seq = 30");
    let again = PgSink::new(sink_config(&pg, t.path()), None);
    rt.block_on(again.ship_until_caught_up()).unwrap();
    assert_eq!(count_rows(&pg, "true"), lines.len() as u64);
    pg.psql(&format!(
        "UPDATE audit_records SET hash = '{}', line = '{}' WHERE node = 'node-1' AND seq = 30",
        hash_of(&forged),
        forged.replace('\'', "''")
    ));
    let restarted = PgSink::new(sink_config(&pg, t.path()), None);
    let err = rt.block_on(restarted.ship_until_caught_up()).unwrap_err();
    assert!(matches!(err, SinkError::Mismatch { seq: 30, .. }), "{err}");
    assert!(restarted.stats().mismatch);
}
