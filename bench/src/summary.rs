//! Turns the harness's records (one JSON object a line, written by `bench/run.sh`) into the
//! markdown tables of `RESULTS.md`: medians over rounds, the ratio against the direct path,
//! and per-round ratios against nginx and against bare pingora (the framework floor).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde::Deserialize;

/// One line of the records file.
#[derive(Debug, Deserialize)]
struct Record {
    scenario: String,
    target: String,
    /// Which pass over the targets this run belongs to (runs of one round ran side by side).
    round: Option<u64>,
    /// A load run's report.
    report: Option<RunReport>,
    /// Why a target could not run this scenario (not started, crashed, ...).
    failure: Option<String>,
    /// The idle-connection memory probe.
    idle: Option<Idle>,
}

#[derive(Debug, Deserialize)]
struct RunReport {
    ok: u64,
    errors_total: u64,
    errors: BTreeMap<String, u64>,
    rps: f64,
    rate: Option<f64>,
    latency_us: Latency,
}

#[derive(Debug, Deserialize)]
struct Latency {
    p50: f64,
    p99: f64,
    p999: f64,
}

#[derive(Debug, Deserialize)]
struct Idle {
    held: u64,
    failed: u64,
    rss_before_kb: u64,
    rss_during_kb: u64,
    still_open: Option<u64>,
    #[serde(default)]
    errors: BTreeMap<String, u64>,
}

/// The scenarios, in table order, with their headings.
const THROUGHPUT: &[(&str, &str)] = &[
    ("ka-get", "Keep-alive GET (small response)"),
    ("ka-post", "Keep-alive POST 1 KB JSON"),
    (
        "new-conn",
        "New connection per request (full handshake each)",
    ),
    (
        "h2-get",
        "HTTP/2 keep-alive GET (streams multiplexed on few connections; HTTP/1.1 from the proxies to the echo; no direct row)",
    ),
    (
        "ka-get-2w",
        "Keep-alive GET, 2 workers per proxy on 2 CPUs (the load generator shares them)",
    ),
];

/// The targets, in table order.
const TARGETS: &[&str] = &[
    "direct",
    "portcullis",
    "portcullis-noaudit",
    // portcullis-noaudit's configuration with the benched route on `authentication: oidc`:
    // every request also carries a bearer token (verified once, then served from the cache).
    "portcullis-bearer",
    // portcullis-noaudit with the echo upstream on `protocol: http2` (h2c to the echo).
    "portcullis-h2up",
    // A sidecar's egress listener: plain HTTP/1.1 from the workload on loopback, judged as the
    // workload's SPIFFE ID, routed by host to the echo over plain HTTP.
    "portcullis-egress",
    // portcullis-noaudit with `tracing:` on and sampling ratio 0 (a trace id per request, its
    // traceparent upstream, nothing recorded or exported).
    "portcullis-traced0",
    // portcullis-noaudit with `tracing:` on, every request sampled, spans exported over
    // OTLP/HTTP to a local sink.
    "portcullis-traced",
    // An earlier build of Portcullis (`BASELINE=`), same config as portcullis-noaudit: what a
    // change costs, side by side in one run. Absent from runs without it.
    "baseline-noaudit",
    // The framework floor: pingora with a `ProxyHttp` that only picks the upstream.
    "pingora",
    "nginx",
    "haproxy",
];

/// Variants of portcullis-noaudit that run in keep-alive GET (one worker) only, each compared
/// with a base in the same run: (variant, base, what the pair shows).
const VARIANTS: &[(&str, &str, &str)] = &[
    (
        "portcullis-bearer",
        "portcullis-noaudit",
        "Bearer token (cached validation) vs mTLS only",
    ),
    (
        "portcullis-h2up",
        "portcullis-noaudit",
        "HTTP/2 (h2c) to the upstream vs HTTP/1.1",
    ),
    (
        "portcullis-egress",
        "portcullis-noaudit",
        "Egress listener (plain HTTP/1.1 in, judged as the workload) vs mTLS ingress",
    ),
    (
        "portcullis-egress",
        "direct",
        "Egress listener vs no proxy (both plain HTTP/1.1 in)",
    ),
    (
        "portcullis-traced0",
        "portcullis-noaudit",
        "Tracing on, sampled out (ratio 0) vs no tracing",
    ),
    (
        "portcullis-traced",
        "portcullis-noaudit",
        "Tracing on, every request exported over OTLP/HTTP to a local sink, vs no tracing",
    ),
];

fn is_variant(target: &str) -> bool {
    VARIANTS.iter().any(|(v, _, _)| *v == target)
}

fn load(path: &Path) -> anyhow::Result<Vec<Record>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).with_context(|| format!("{} line {}", path.display(), i + 1))
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Medians of one target in one scenario, over its rounds.
struct Cell {
    rounds: usize,
    rps: Option<f64>,
    /// Lowest and highest req/s over the rounds: how noisy the machine was.
    rps_range: Option<(f64, f64)>,
    p50: Option<f64>,
    p99: Option<f64>,
    p999: Option<f64>,
    rate: Option<f64>,
    errors: u64,
    ok: u64,
    why: Vec<String>,
}

fn cell(records: &[Record], scenario: &str, target: &str) -> Cell {
    let runs: Vec<&RunReport> = records
        .iter()
        .filter(|r| r.scenario == scenario && r.target == target)
        .filter_map(|r| r.report.as_ref())
        .filter(|r| r.ok > 0)
        .collect();
    let mut why: Vec<String> = records
        .iter()
        .filter(|r| r.scenario == scenario && r.target == target)
        .filter_map(|r| r.failure.clone())
        .collect();
    why.dedup();
    let mut kinds: BTreeMap<String, u64> = BTreeMap::new();
    let mut errors = 0;
    let mut ok = 0;
    for r in records
        .iter()
        .filter(|r| r.scenario == scenario && r.target == target)
        .filter_map(|r| r.report.as_ref())
    {
        errors += r.errors_total;
        ok += r.ok;
        for (k, n) in &r.errors {
            *kinds.entry(k.clone()).or_default() += n;
        }
    }
    if !kinds.is_empty() {
        let list: Vec<String> = kinds.iter().map(|(k, n)| format!("{k} ×{n}")).collect();
        why.push(format!("errors: {}", list.join(", ")));
    }
    let pick = |f: fn(&RunReport) -> f64| median(runs.iter().map(|r| f(r)).collect());
    Cell {
        rounds: runs.len(),
        rps: pick(|r| r.rps),
        rps_range: runs
            .iter()
            .map(|r| r.rps)
            .fold(None, |acc: Option<(f64, f64)>, v| {
                Some(acc.map_or((v, v), |(lo, hi)| (lo.min(v), hi.max(v))))
            }),
        p50: pick(|r| r.latency_us.p50),
        p99: pick(|r| r.latency_us.p99),
        p999: pick(|r| r.latency_us.p999),
        rate: runs.iter().find_map(|r| r.rate),
        errors,
        ok,
        why,
    }
}

fn ms(us: Option<f64>) -> String {
    us.map_or_else(|| "—".to_owned(), |v| format!("{:.3}", v / 1000.0))
}

fn num(v: Option<f64>) -> String {
    v.map_or_else(|| "—".to_owned(), |v| format!("{v:.0}"))
}

fn ratio(v: Option<f64>, base: Option<f64>) -> String {
    match (v, base) {
        (Some(v), Some(b)) if b > 0.0 => format!("{:.2}×", v / b),
        _ => "—".to_owned(),
    }
}

/// The median over rounds of `target`'s throughput divided by `base`'s in the same round.
/// Targets alternate within a round, so a round's pair ran seconds apart and drift of the
/// shared machine largely cancels in the ratio, where it would not between medians.
fn round_ratio(records: &[Record], scenario: &str, target: &str, base: &str) -> Option<f64> {
    let by_round = |t: &str| -> BTreeMap<u64, f64> {
        records
            .iter()
            .filter(|r| r.scenario == scenario && r.target == t)
            .filter_map(|r| {
                let report = r.report.as_ref().filter(|rep| rep.ok > 0)?;
                Some((r.round?, report.rps))
            })
            .collect()
    };
    let base = by_round(base);
    median(
        by_round(target)
            .iter()
            .filter_map(|(round, v)| base.get(round).filter(|b| **b > 0.0).map(|b| v / b))
            .collect(),
    )
}

/// Whether the records hold anything of `target` in `scenario` (a run or a failure); targets
/// the harness did not start for a scenario (no `BASELINE`, no direct path for HTTP/2) get no
/// row.
fn ran(records: &[Record], scenario: &str, target: &str) -> bool {
    records
        .iter()
        .any(|r| r.scenario == scenario && r.target == target)
}

fn times(v: Option<f64>) -> String {
    v.map_or_else(|| "—".to_owned(), |v| format!("{v:.2}×"))
}

fn note(target: &str, scenario: &str, c: &Cell) -> String {
    let mut parts = Vec::new();
    if target == "direct" {
        parts.push(if scenario == "new-conn" {
            "plain HTTP: TCP connect only, no TLS".to_owned()
        } else {
            "plain HTTP to the echo upstream, no proxy, no TLS".to_owned()
        });
    }
    if c.rounds == 0 && c.why.is_empty() {
        parts.push("no request completed".to_owned());
    }
    parts.extend(c.why.iter().cloned());
    if c.errors > 0 && c.ok > 0 {
        parts.push(format!(
            "{:.2}% of requests failed",
            100.0 * c.errors as f64 / (c.errors + c.ok) as f64
        ));
    }
    parts.join("; ")
}

/// The open-loop rate for the harness: half the slowest proxy's median keep-alive maximum,
/// so every proxy runs at no more than half its capacity.
pub(crate) fn open_loop_rate(path: &Path, scenario: &str) -> anyhow::Result<f64> {
    let records = load(path)?;
    TARGETS
        .iter()
        // The variants run in keep-alive GET only; the open loop's rate stays what the proxies
        // that run it can carry.
        .filter(|t| **t != "direct" && !is_variant(t))
        .filter_map(|t| cell(&records, scenario, t).rps)
        .min_by(f64::total_cmp)
        .map(|rps| (rps / 2.0).max(1.0).floor())
        .with_context(|| format!("no proxy completed {scenario}: no rate to derive"))
}

/// The markdown tables for every scenario present in the records.
pub(crate) fn markdown(path: &Path) -> anyhow::Result<String> {
    let records = load(path)?;
    let mut out = String::new();
    for (scenario, heading) in THROUGHPUT {
        if !records.iter().any(|r| r.scenario == *scenario) {
            continue;
        }
        let base = cell(&records, scenario, "direct");
        let unit = if *scenario == "new-conn" {
            "conn/s"
        } else {
            "req/s"
        };
        let _ = writeln!(out, "### {heading}\n");
        let _ = writeln!(
            out,
            "| target | median {unit} | vs direct | vs nginx | vs pingora | rounds min–max | p50 ms | p99 ms | p99.9 ms | rounds | notes |"
        );
        let _ = writeln!(
            out,
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
        );
        for t in TARGETS.iter().filter(|t| ran(&records, scenario, t)) {
            let c = cell(&records, scenario, t);
            let _ = writeln!(
                out,
                "| {t} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                num(c.rps),
                ratio(c.rps, base.rps),
                times(round_ratio(&records, scenario, t, "nginx")),
                times(round_ratio(&records, scenario, t, "pingora")),
                c.rps_range
                    .map_or_else(|| "—".to_owned(), |(lo, hi)| format!("{lo:.0}–{hi:.0}")),
                ms(c.p50),
                ms(c.p99),
                ms(c.p999),
                c.rounds,
                note(t, scenario, &c)
            );
        }
        let on = cell(&records, scenario, "portcullis");
        let off = cell(&records, scenario, "portcullis-noaudit");
        if on.rps.is_some() && off.rps.is_some() {
            let _ = writeln!(
                out,
                "\nAudit log (fail-closed) on vs off, same run: {} of the throughput.",
                ratio(on.rps, off.rps)
            );
        }
        for (variant, base, what) in VARIANTS {
            let v = cell(&records, scenario, variant);
            let b = cell(&records, scenario, base);
            if v.rps.is_some() && b.rps.is_some() {
                let _ = writeln!(
                    out,
                    "\n{what}, {variant} / {base}, same run: {} of the throughput (median of \
                     per-round ratios; ratio of medians {}).",
                    times(round_ratio(&records, scenario, variant, base)),
                    ratio(v.rps, b.rps)
                );
            }
        }
        out.push('\n');
    }
    if records.iter().any(|r| r.scenario == "open-loop") {
        let base = cell(&records, "open-loop", "direct");
        let rate = base.rate.or_else(|| {
            TARGETS
                .iter()
                .find_map(|t| cell(&records, "open-loop", t).rate)
        });
        let _ = writeln!(
            out,
            "### Open loop at {} req/s (half the slowest proxy's keep-alive GET maximum); latency from the scheduled send time\n",
            num(rate)
        );
        let _ = writeln!(
            out,
            "| target | achieved req/s | p50 ms | p99 ms | p99.9 ms | added p50 vs direct ms | added p99 vs direct ms | rounds | notes |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---|");
        for t in TARGETS.iter().filter(|t| ran(&records, "open-loop", t)) {
            let c = cell(&records, "open-loop", t);
            let added = |v: Option<f64>, b: Option<f64>| match (v, b) {
                (Some(v), Some(b)) if *t != "direct" => format!("{:+.3}", (v - b) / 1000.0),
                _ => "—".to_owned(),
            };
            let _ = writeln!(
                out,
                "| {t} | {} | {} | {} | {} | {} | {} | {} | {} |",
                num(c.rps),
                ms(c.p50),
                ms(c.p99),
                ms(c.p999),
                added(c.p50, base.p50),
                added(c.p99, base.p99),
                c.rounds,
                note(t, "open-loop", &c)
            );
        }
        out.push('\n');
    }
    if records.iter().any(|r| r.scenario == "idle-memory") {
        let _ = writeln!(
            out,
            "### Memory per idle mTLS connection (each after one request)\n"
        );
        let _ = writeln!(
            out,
            "| target | connections held | RSS before MiB | RSS holding MiB | KiB per connection | still open after hold | notes |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---|");
        for t in TARGETS.iter().filter(|t| ran(&records, "idle-memory", t)) {
            let mine: Vec<&Record> = records
                .iter()
                .filter(|r| r.scenario == "idle-memory" && r.target == *t)
                .collect();
            let failure: Vec<String> = mine.iter().filter_map(|r| r.failure.clone()).collect();
            match mine.iter().find_map(|r| r.idle.as_ref()) {
                Some(i) => {
                    let per = if i.held > 0 {
                        format!(
                            "{:.1}",
                            (i.rss_during_kb as f64 - i.rss_before_kb as f64) / i.held as f64
                        )
                    } else {
                        "—".to_owned()
                    };
                    let mut notes = failure;
                    if i.failed > 0 {
                        let list: Vec<String> =
                            i.errors.iter().map(|(k, n)| format!("{k} ×{n}")).collect();
                        notes.push(format!("{} failed to open: {}", i.failed, list.join(", ")));
                    }
                    let _ = writeln!(
                        out,
                        "| {t} | {} | {:.1} | {:.1} | {per} | {} | {} |",
                        i.held,
                        i.rss_before_kb as f64 / 1024.0,
                        i.rss_during_kb as f64 / 1024.0,
                        i.still_open
                            .map_or_else(|| "—".to_owned(), |n| n.to_string()),
                        notes.join("; ")
                    );
                }
                None => {
                    let why = if failure.is_empty() {
                        "no figures recorded".to_owned()
                    } else {
                        failure.join("; ")
                    };
                    let _ = writeln!(out, "| {t} | — | — | — | — | — | {why} |");
                }
            }
        }
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(scenario: &str, target: &str, round: u64, rps: f64, p50: f64) -> String {
        format!(
            r#"{{"scenario":"{scenario}","target":"{target}","round":{round},"report":{{"ok":10,"errors_total":0,"errors":{{}},"rps":{rps},"rate":null,"latency_us":{{"p50":{p50},"p99":{p50},"p999":{p50}}}}}}}"#
        )
    }

    fn markdown_of(name: &str, lines: &[String]) -> (String, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("pcl-summary-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("records.jsonl");
        std::fs::write(&path, lines.join("\n")).unwrap();
        (markdown(&path).unwrap(), dir)
    }

    #[test]
    fn medians_ratios_and_failures() {
        let lines = [
            run("ka-get", "direct", 1, 1000.0, 100.0),
            run("ka-get", "direct", 2, 3000.0, 100.0),
            run("ka-get", "direct", 3, 2000.0, 100.0),
            run("ka-get", "portcullis", 1, 500.0, 400.0),
            run("ka-get", "nginx", 1, 1000.0, 200.0),
            r#"{"scenario":"ka-get","target":"haproxy","round":1,"failure":"haproxy not installed"}"#
                .to_owned(),
            r#"{"scenario":"idle-memory","target":"nginx","idle":{"held":2000,"failed":0,"rss_before_kb":1000,"rss_during_kb":5000,"still_open":2000}}"#
                .to_owned(),
        ];
        let (md, dir) = markdown_of("basic", &lines);
        // vs direct: ratio of medians; vs nginx: rounds both ran (round 1 only here); no
        // pingora in this run.
        assert!(
            md.contains("| direct | 2000 | 1.00× | 1.00× | — | 1000–3000 |"),
            "{md}"
        );
        assert!(
            md.contains("| portcullis | 500 | 0.25× | 0.50× | — | 500–500 | 0.400 |"),
            "{md}"
        );
        assert!(md.contains("haproxy not installed"), "{md}");
        assert!(
            md.contains("| nginx | 2000 | 1.0 | 4.9 | 2.0 | 2000 |"),
            "{md}"
        );
        assert_eq!(
            open_loop_rate(&dir.join("records.jsonl"), "ka-get").unwrap(),
            250.0
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn ratios_to_nginx_and_pingora_are_medians_of_per_round_ratios() {
        // The machine slows down in round 2: every target halves. Per round, portcullis is
        // 0.5× nginx and 0.6× pingora; the ratio of medians would drift with the rounds'
        // spread, the per-round ratio does not.
        let lines = [
            run("h2-get", "portcullis", 1, 500.0, 1.0),
            run("h2-get", "pingora", 1, 833.0, 1.0),
            run("h2-get", "nginx", 1, 1000.0, 1.0),
            run("h2-get", "portcullis", 2, 250.0, 1.0),
            run("h2-get", "pingora", 2, 417.0, 1.0),
            run("h2-get", "nginx", 2, 500.0, 1.0),
            run("h2-get", "portcullis", 3, 240.0, 1.0),
            run("h2-get", "pingora", 3, 400.0, 1.0),
            run("h2-get", "nginx", 3, 480.0, 1.0),
            // A round a base did not complete is left out of that base's ratio.
            run("h2-get", "portcullis", 4, 10.0, 1.0),
            r#"{"scenario":"h2-get","target":"nginx","round":4,"failure":"nginx exited"}"#
                .to_owned(),
        ];
        let (md, dir) = markdown_of("rounds", &lines);
        assert!(md.contains("### HTTP/2 keep-alive GET"), "{md}");
        assert!(
            md.contains("| portcullis | 245 | — | 0.50× | 0.60× | 10–500 |"),
            "{md}"
        );
        assert!(md.contains("| pingora | 417 | — | 0.83× | 1.00× |"), "{md}");
        assert!(md.contains("| nginx | 500 | — | 1.00× | 1.20× |"), "{md}");
        // Targets without records in a scenario get no row.
        assert!(!md.contains("| direct |"), "{md}");
        assert!(!md.contains("| haproxy |"), "{md}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bearer_vs_noaudit() {
        let lines = [
            run("ka-get", "portcullis-noaudit", 1, 1000.0, 1.0),
            run("ka-get", "portcullis-bearer", 1, 900.0, 1.0),
            run("ka-get", "portcullis-noaudit", 2, 500.0, 1.0),
            run("ka-get", "portcullis-bearer", 2, 400.0, 1.0),
        ];
        let (md, dir) = markdown_of("bearer", &lines);
        assert!(md.contains("| portcullis-bearer | 650 |"), "{md}");
        // Per round 0.90 and 0.80: median 0.85; medians 650 / 750.
        assert!(
            md.contains("portcullis-noaudit, same run: 0.85× of the throughput"),
            "{md}"
        );
        assert!(md.contains("ratio of medians 0.87×"), "{md}");
        // The open-loop rate ignores the bearer variant.
        assert_eq!(
            open_loop_rate(&dir.join("records.jsonl"), "ka-get").unwrap(),
            375.0
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn h2up_and_egress_against_their_bases() {
        let lines = [
            run("ka-get", "direct", 1, 4000.0, 1.0),
            run("ka-get", "portcullis-noaudit", 1, 1000.0, 1.0),
            run("ka-get", "portcullis-h2up", 1, 900.0, 1.0),
            run("ka-get", "portcullis-egress", 1, 1200.0, 1.0),
            run("ka-get", "pingora", 1, 1500.0, 1.0),
        ];
        let (md, dir) = markdown_of("variants", &lines);
        assert!(md.contains("| portcullis-h2up | 900 | 0.23× |"), "{md}");
        assert!(md.contains("| portcullis-egress | 1200 | 0.30× |"), "{md}");
        assert!(
            md.contains(
                "HTTP/2 (h2c) to the upstream vs HTTP/1.1, portcullis-h2up / portcullis-noaudit, \
                 same run: 0.90× of the throughput"
            ),
            "{md}"
        );
        assert!(
            md.contains("portcullis-egress / portcullis-noaudit, same run: 1.20×"),
            "{md}"
        );
        assert!(
            md.contains("portcullis-egress / direct, same run: 0.30×"),
            "{md}"
        );
        // No bearer run, no bearer line.
        assert!(!md.contains("portcullis-bearer"), "{md}");
        // The open-loop rate ignores the variants: half of noaudit's, not of h2up's.
        assert_eq!(
            open_loop_rate(&dir.join("records.jsonl"), "ka-get").unwrap(),
            500.0
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn median_even_and_odd() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
    }
}
