//! `portcullis-load`: an HTTP/1.1 and HTTP/2 load generator that presents a client
//! certificate (which wrk and h2load cannot), for benchmarking mTLS proxies on loopback.
//! `run` drives load, `hold` keeps idle connections open for memory figures, `certs` writes
//! the benchmark's PKI. `bench/run.sh` uses all three.

mod certs;
mod load;
mod report;
mod summary;
mod target;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::{Args, Parser, Subcommand};

use crate::load::{Mode, Plan};
use crate::report::{Report, RunShape};
use crate::target::{Connector, Protocol, Target, TlsFiles};

#[derive(Parser)]
#[command(name = "portcullis-load", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Send load to a loopback target and report throughput, errors and latency.
    Run(RunArgs),
    /// Open idle connections (each after one request), report how many, hold them, and report
    /// how many are still open at the end.
    Hold(HoldArgs),
    /// Write a CA, a localhost server certificate and a client certificate into a folder.
    Certs {
        #[arg(long)]
        out: PathBuf,
        /// URI SAN of the client certificate.
        #[arg(long, default_value = "spiffe://bench.local/ns/bench/sa/client")]
        spiffe_id: String,
    },
    /// Summarise the harness's records (JSON lines) as markdown tables, or print the
    /// open-loop rate derived from one scenario.
    Summarize {
        #[arg(long)]
        records: PathBuf,
        /// Print half the slowest proxy's median req/s in this scenario, and nothing else.
        #[arg(long)]
        half_rate_of: Option<String>,
    },
}

/// How to reach the target.
#[derive(Args)]
struct Connection {
    /// Target URL: http:// or https://, loopback hosts only (127.0.0.0/8, ::1, localhost).
    url: String,
    /// CA certificate(s) that sign the server certificate (https).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Client certificate chain (PEM) to present.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// Private key of the client certificate (PEM).
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// HTTP version.
    #[arg(long = "http", value_enum, default_value = "1.1")]
    protocol: Protocol,
    /// Allow TLS session resumption (by default every new connection is a full handshake).
    #[arg(long)]
    tls_resume: bool,
    /// POST this file's contents (as application/json) instead of GET.
    #[arg(long)]
    body: Option<PathBuf>,
    /// Add this header to every request, as `Name: value` (repeat for more). A `Host` header
    /// replaces the URL's authority in HTTP/1.1 requests.
    #[arg(long = "header", short = 'H')]
    headers: Vec<String>,
    /// Add `Authorization: Bearer <token>` to every request, the token read from this file
    /// (surrounding whitespace trimmed).
    #[arg(long)]
    bearer_file: Option<PathBuf>,
    /// Count answers with this status as successes (e.g. 429, to load a refused route);
    /// otherwise only 2xx are.
    #[arg(long)]
    expect_status: Option<u16>,
    /// Give up on one request (connect included) after this long.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    timeout: Duration,
    /// Runtime worker threads (1: a single-threaded runtime, the least overhead per core).
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    conn: Connection,
    /// Keep-alive connections (keep-alive and open-loop modes), or concurrent connection
    /// loops (with --new-conn).
    #[arg(long, short = 'c', default_value_t = 32)]
    connections: usize,
    /// HTTP/2: concurrent streams per keep-alive connection.
    #[arg(long, default_value_t = 1)]
    streams: usize,
    /// Open a new connection (full handshake) for every request.
    #[arg(long, conflicts_with = "rate")]
    new_conn: bool,
    /// Open loop: schedule this many requests per second; latency counts from the scheduled
    /// time, so queueing is not hidden (no coordinated omission).
    #[arg(long)]
    rate: Option<f64>,
    /// Measure for this long (after the warm-up).
    #[arg(long, short = 'd', value_parser = humantime::parse_duration, default_value = "10s")]
    duration: Duration,
    /// Run this long before measuring.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    warmup: Duration,
    /// Stop after this many requests in all (warm-up included), if sooner than --duration.
    #[arg(long, short = 'n')]
    requests: Option<u64>,
    /// Print the report as one JSON document.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct HoldArgs {
    #[command(flatten)]
    conn: Connection,
    /// Idle connections to open.
    #[arg(long, short = 'c', default_value_t = 2000)]
    connections: usize,
    /// Handshakes in flight at once while opening.
    #[arg(long, default_value_t = 32)]
    parallel: usize,
    /// Hold the connections this long after the first report.
    #[arg(long = "for", value_parser = humantime::parse_duration, default_value = "10s")]
    hold_for: Duration,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if rustls::crypto::ring::default_provider()
        .install_default()
        .is_err()
    {
        eprintln!("portcullis-load: a TLS crypto provider was already installed");
    }
    let result = match cli.command {
        Command::Run(args) => runtime(args.conn.threads).and_then(|rt| rt.block_on(run(args))),
        Command::Hold(args) => runtime(args.conn.threads).and_then(|rt| rt.block_on(hold(args))),
        Command::Certs { out, spiffe_id } => certs::write_bench_pki(&out, &spiffe_id),
        Command::Summarize {
            records,
            half_rate_of: Some(scenario),
        } => summary::open_loop_rate(&records, &scenario).map(|rate| println!("{rate}")),
        Command::Summarize {
            records,
            half_rate_of: None,
        } => summary::markdown(&records).map(|md| print!("{md}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("portcullis-load: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime(threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    builder
        .enable_all()
        .build()
        .context("start the async runtime")
}

fn connector(conn: &Connection) -> anyhow::Result<Arc<Connector>> {
    let target = Target::parse(&conn.url)?;
    let tls = conn.ca.as_ref().map(|ca| TlsFiles {
        ca: ca.clone(),
        cert: conn.cert.clone(),
        key: conn.key.clone(),
        resume: conn.tls_resume,
    });
    let body = match &conn.body {
        Some(path) => Some(Bytes::from(
            std::fs::read(path).with_context(|| format!("read body {}", path.display()))?,
        )),
        None => None,
    };
    let mut headers = conn
        .headers
        .iter()
        .map(|h| target::parse_header(h))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if let Some(path) = &conn.bearer_file {
        let token = std::fs::read_to_string(path)
            .with_context(|| format!("read token {}", path.display()))?;
        let token = token.trim();
        if token.is_empty() {
            bail!("token file {} is empty", path.display());
        }
        headers.push(target::parse_header(&format!(
            "Authorization: Bearer {token}"
        ))?);
    }
    let mut connector = Connector::new(target, conn.protocol, tls.as_ref(), body, headers)?;
    connector.expect_status = conn.expect_status;
    Ok(Arc::new(connector))
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let mode = match (args.new_conn, args.rate) {
        (true, _) => Mode::NewConnection,
        (false, Some(r)) if r > 0.0 && r.is_finite() => Mode::Rate(r),
        (false, Some(r)) => bail!("--rate {r}: give a positive number of requests per second"),
        (false, None) => Mode::KeepAlive,
    };
    if args.connections == 0 || args.streams == 0 {
        bail!("--connections and --streams must be at least 1");
    }
    let streams = match args.conn.protocol {
        Protocol::Http1 if args.streams > 1 => bail!("--streams needs --http 2"),
        _ => args.streams,
    };
    let connector = connector(&args.conn)?;
    let plan = Plan {
        mode,
        connections: args.connections,
        streams,
        warmup: args.warmup,
        duration: args.duration,
        requests: args.requests,
        timeout: args.conn.timeout,
    };
    let (tally, measured) = load::run(Arc::clone(&connector), &plan).await;
    let concurrency = match mode {
        Mode::NewConnection => args.connections,
        _ => args.connections * streams,
    };
    let report = Report::new(
        RunShape {
            target: connector.target().uri.to_string(),
            protocol: connector.protocol().to_string(),
            tls: connector.target().tls,
            mode: mode.name().to_owned(),
            method: if args.conn.body.is_some() {
                "POST"
            } else {
                "GET"
            }
            .to_owned(),
            concurrency,
            rate: match mode {
                Mode::Rate(r) => Some(r),
                _ => None,
            },
            warmup: args.warmup,
        },
        &tally,
        measured,
    );
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.human());
    }
    Ok(())
}

async fn hold(args: HoldArgs) -> anyhow::Result<()> {
    let connector = connector(&args.conn)?;
    let (senders, held) = load::open_idle(
        connector,
        args.connections,
        args.parallel,
        args.conn.timeout,
    )
    .await;
    let mut out = std::io::stdout();
    writeln!(out, "{}", serde_json::to_string(&held)?)?;
    out.flush()?;
    tokio::time::sleep(args.hold_for).await;
    let still_open = senders.iter().filter(|s| !s.is_closed()).count();
    writeln!(out, "{}", serde_json::json!({ "still_open": still_open }))?;
    Ok(())
}
