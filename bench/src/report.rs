//! What a run measured: per-worker tallies (no sharing on the hot path), merged at the end into
//! a report printed as a table or as JSON for the harness.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::target::Failure;

/// Highest latency the histogram tracks (larger values are clamped): 5 minutes, in ns.
const MAX_NS: u64 = 300_000_000_000;

/// One worker's tally.
pub(crate) struct Tally {
    latency_ns: Histogram<u64>,
    ok: u64,
    bytes: u64,
    errors: BTreeMap<Failure, u64>,
}

impl Tally {
    pub(crate) fn new() -> Self {
        Self {
            // Invariant: constant, valid bounds (low 1 >= 1, high > 2*low, 3 significant digits).
            latency_ns: Histogram::new_with_bounds(1, MAX_NS, 3).expect("valid histogram bounds"),
            ok: 0,
            bytes: 0,
            errors: BTreeMap::new(),
        }
    }

    pub(crate) fn success(&mut self, latency: Duration, bytes: u64) {
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(MAX_NS).max(1);
        self.latency_ns.saturating_record(ns);
        self.ok += 1;
        self.bytes += bytes;
    }

    pub(crate) fn failure(&mut self, kind: Failure) {
        *self.errors.entry(kind).or_default() += 1;
    }

    pub(crate) fn merge(&mut self, other: &Tally) {
        // Same bounds on both sides, so `add` cannot fail; saturate rather than panic anyway.
        if self.latency_ns.add(&other.latency_ns).is_err() {
            for v in other.latency_ns.iter_recorded() {
                self.latency_ns
                    .saturating_record_n(v.value_iterated_to(), v.count_at_value());
            }
        }
        self.ok += other.ok;
        self.bytes += other.bytes;
        for (k, n) in &other.errors {
            *self.errors.entry(*k).or_default() += n;
        }
    }
}

/// Latency figures in microseconds.
#[derive(Debug, Serialize)]
pub(crate) struct Latency {
    pub(crate) p50: f64,
    pub(crate) p90: f64,
    pub(crate) p99: f64,
    pub(crate) p999: f64,
    pub(crate) max: f64,
    pub(crate) mean: f64,
}

/// The result of one run, as printed.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub(crate) target: String,
    pub(crate) protocol: String,
    pub(crate) tls: bool,
    pub(crate) mode: String,
    pub(crate) method: String,
    pub(crate) concurrency: usize,
    /// The requested rate for open-loop runs.
    pub(crate) rate: Option<f64>,
    pub(crate) warmup_s: f64,
    pub(crate) measured_s: f64,
    pub(crate) ok: u64,
    pub(crate) errors_total: u64,
    pub(crate) errors: BTreeMap<String, u64>,
    pub(crate) rps: f64,
    pub(crate) bytes_received: u64,
    /// Microseconds; from the scheduled send time in open-loop mode.
    pub(crate) latency_us: Latency,
}

/// How the run was driven, for the report's header.
pub(crate) struct RunShape {
    pub(crate) target: String,
    pub(crate) protocol: String,
    pub(crate) tls: bool,
    pub(crate) mode: String,
    pub(crate) method: String,
    pub(crate) concurrency: usize,
    pub(crate) rate: Option<f64>,
    pub(crate) warmup: Duration,
}

impl Report {
    pub(crate) fn new(shape: RunShape, tally: &Tally, measured: Duration) -> Self {
        let h = &tally.latency_ns;
        let us = |ns: u64| ns as f64 / 1000.0;
        let q = |quantile: f64| {
            if h.is_empty() {
                0.0
            } else {
                us(h.value_at_quantile(quantile))
            }
        };
        let secs = measured.as_secs_f64();
        Self {
            target: shape.target,
            protocol: shape.protocol,
            tls: shape.tls,
            mode: shape.mode,
            method: shape.method,
            concurrency: shape.concurrency,
            rate: shape.rate,
            warmup_s: shape.warmup.as_secs_f64(),
            measured_s: secs,
            ok: tally.ok,
            errors_total: tally.errors.values().sum(),
            errors: tally
                .errors
                .iter()
                .map(|(k, n)| (k.to_string(), *n))
                .collect(),
            rps: if secs > 0.0 {
                tally.ok as f64 / secs
            } else {
                0.0
            },
            bytes_received: tally.bytes,
            latency_us: Latency {
                p50: q(0.5),
                p90: q(0.9),
                p99: q(0.99),
                p999: q(0.999),
                max: if h.is_empty() { 0.0 } else { us(h.max()) },
                mean: if h.is_empty() { 0.0 } else { h.mean() / 1000.0 },
            },
        }
    }

    pub(crate) fn human(&self) -> String {
        let ms = |us: f64| format!("{:.3} ms", us / 1000.0);
        let mut out = String::new();
        let tls = if self.tls { "TLS" } else { "plain" };
        out += &format!(
            "target      {} ({} {tls}, {} {}, concurrency {})\n",
            self.target, self.protocol, self.method, self.mode, self.concurrency
        );
        if let Some(rate) = self.rate {
            out +=
                &format!("rate        {rate:.0} req/s scheduled (latency from scheduled time)\n");
        }
        out += &format!(
            "measured    {:.2} s (after {:.2} s warm-up)\n",
            self.measured_s, self.warmup_s
        );
        out += &format!(
            "requests    {} ok, {} errors, {} bytes received\n",
            self.ok, self.errors_total, self.bytes_received
        );
        out += &format!("throughput  {:.0} req/s\n", self.rps);
        let l = &self.latency_us;
        out += &format!(
            "latency     p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (mean {})\n",
            ms(l.p50),
            ms(l.p90),
            ms(l.p99),
            ms(l.p999),
            ms(l.max),
            ms(l.mean)
        );
        if !self.errors.is_empty() {
            let list: Vec<String> = self
                .errors
                .iter()
                .map(|(k, n)| format!("{k}: {n}"))
                .collect();
            out += &format!("errors      {}\n", list.join(", "));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_and_quantiles() {
        let mut a = Tally::new();
        let mut b = Tally::new();
        for i in 1..=100u64 {
            a.success(Duration::from_micros(i), 10);
        }
        b.success(Duration::from_millis(50), 10);
        b.failure(Failure::Status(503));
        b.failure(Failure::Status(503));
        b.failure(Failure::Connect);
        a.merge(&b);
        let shape = RunShape {
            target: "t".into(),
            protocol: "HTTP/1.1".into(),
            tls: true,
            mode: "keep-alive".into(),
            method: "GET".into(),
            concurrency: 1,
            rate: None,
            warmup: Duration::ZERO,
        };
        let r = Report::new(shape, &a, Duration::from_secs(2));
        assert_eq!(r.ok, 101);
        assert_eq!(r.errors_total, 3);
        assert_eq!(r.errors["status_503"], 2);
        assert!((r.rps - 50.5).abs() < 1e-9);
        assert!(
            (r.latency_us.p50 - 51.0).abs() < 0.1,
            "{}",
            r.latency_us.p50
        );
        assert!((r.latency_us.max - 50_000.0).abs() < 50.0);
    }
}
