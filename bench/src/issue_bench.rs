//! `portcullis-issue-bench`: what certificate issuance costs, side by side in one run on one
//! SoftHSM2 token (loopback only, nothing outside the process but the token's files):
//!
//! 1. raw HSM signatures (P-256, `SigningKey::sign`) from 1 and from `--threads` threads;
//! 2. certificates issued through `Ca::issue` directly, 1 and `--threads` threads;
//! 3. certificates issued through the admin HTTPS API: `--clients` keep-alive mTLS connections,
//!    each renewing with its client certificate back to back;
//! 4. with `--silent N`: the API figure again, keep-alive and with a new connection per
//!    renewal, each without and with N connections held open that send nothing (a third each:
//!    TCP only, TLS without a certificate, half a request head; from one loopback address per
//!    200, under the default per-source cap; each re-opened as the server closes it at its
//!    deadline) — the attack of issue 11, side by side.
//!
//! 5. with `--cfssl`: `cfssl serve` with a file key signing CSRs from as many keep-alive
//!    clients (`issue_cfssl.rs`), the reference the issuance figure is held against: in plain
//!    HTTP (cfssl's default) and over mutual TLS (the like-for-like one: the API's clients
//!    keep mTLS connections alive).
//!
//! Then the ratios API / raw sign, API / direct issue and API / cfssl. Each measurement runs for
//! `--duration` after a short warm-up. The admin server runs with its default connection
//! bounds and with rate limits raised out of the way (the figure is the issuance path).
//!
//! Run (2 cores; the figures in the issue note came from exactly this):
//!
//! ```sh
//! cargo run --release -p portcullis-bench --bin portcullis-issue-bench -- \
//!     --duration 5s --threads 2 --clients 4 [--silent 2000] \
//!     [--postgres "host=127.0.0.1 port=5432 user=postgres dbname=bench"]
//! ```
//!
//! With `--postgres`, the inventory and bootstrap tokens are in that database (the admin
//! plane's `store.postgres`) instead of SQLite files.
//!
//! Needs `softhsm2-util` and the SoftHSM2 module (`apt-get install -y softhsm2`).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context};
use clap::Parser;
use portcullis_admin::{AdminConfig, AdminServer, PgStore, PostgresStoreConfig};
use portcullis_ca::{
    Ca, CaConfig, IssueRequest, KeyBackend, PinSource, Pkcs11Backend, Requester, RequesterKind,
};
use portcullis_identity::{
    parse_certs, root_store, ClientCredentials, IdentityError, IssuanceClient, IssuanceRequest,
};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::RootCertStore;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

mod issue_cfssl;

// The allocator of the `portcullis` binary, which serves the admin API in production: the
// in-process server measured here should not pay glibc malloc's cost where it does not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const TOKEN: &str = "issue-bench";
const PIN: &str = "1234";
const ISSUING_LABEL: &str = "bench-issuing";

#[derive(Parser)]
#[command(name = "portcullis-issue-bench", version, about)]
struct Args {
    /// Measure each figure for this long (after a warm-up of a tenth of it, at most 1 s).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    duration: Duration,
    /// Threads for the parallel raw-sign and direct-issue figures.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Concurrent keep-alive API clients.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// PKCS#11 session pool of the CA (0: one per CPU).
    #[arg(long, default_value_t = 4)]
    sessions: usize,
    /// Runtime worker threads of the in-process admin server (and the clients).
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Also measure the API while this many connections that send nothing are held open.
    #[arg(long, default_value_t = 0)]
    silent: usize,
    /// Also measure `cfssl serve` (file key) with as many clients, and print API / cfssl.
    #[arg(long)]
    cfssl: bool,
    /// Only the API figure (for profilers: callgrind, perf, strace -c).
    #[arg(long)]
    api_only: bool,
    /// Keep the inventory and bootstrap tokens in this PostgreSQL database (`store.postgres`;
    /// a URL on loopback, in clear) instead of SQLite files.
    #[arg(long)]
    postgres: Option<String>,
}

/// How the API figure's clients renew, and what else the server is put through meanwhile.
#[derive(Clone, Copy)]
struct ApiLoad {
    /// A new TLS connection for every renewal (else one keep-alive connection per client).
    connect_each: bool,
    /// Silent connections held open during the measurement.
    silent: usize,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("portcullis-issue-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// One figure.
struct Figure {
    name: String,
    ops: u64,
    errors: u64,
    elapsed: Duration,
    /// Latency quantiles (p50, p99) in microseconds, where measured.
    latency_us: Option<(u64, u64)>,
}

impl Figure {
    fn rate(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    if args.threads == 0 || args.clients == 0 || args.workers == 0 {
        bail!("--threads, --clients and --workers must be at least 1");
    }
    let work = tempfile::Builder::new()
        .prefix("portcullis-issue-bench-")
        .tempdir()
        .context("temp dir")?;
    let pin_file = softhsm(work.path())?;
    let ca_config = ca_config(work.path(), &pin_file, args.sessions)?;
    let ca = Arc::new(Ca::init(&ca_config, SystemTime::now()).context("CA init on SoftHSM2")?);
    let store = match &args.postgres {
        Some(url) => Some(PgStore::open(&PostgresStoreConfig {
            url: Some(url.clone()),
            host: None,
            port: None,
            user: None,
            dbname: None,
            password_file: None,
            password: None,
            tls: None,
            insecure_plaintext: true,
            max_connections: 8,
        })?),
        None => None,
    };
    let ca = match &store {
        Some(store) => Arc::new(Ca::open_with_inventory(
            &ca_config,
            Arc::new(store.inventory()),
        )?),
        None => ca,
    };
    let warmup = (args.duration / 10).min(Duration::from_secs(1));
    let load_before = loadavg();
    let mut figures = Vec::new();

    // (a) Raw signatures through a backend of its own (the CA's pool stays untouched).
    let backend = Pkcs11Backend::open(
        Path::new(MODULE),
        TOKEN,
        &PinSource::File(pin_file.clone()),
        args.threads.max(1),
    )?;
    let key = backend.find_key(ISSUING_LABEL)?;
    let msg = [0x5au8; 256];
    let only = |threads: [usize; 2]| {
        if args.api_only {
            Vec::new()
        } else {
            dedup(threads)
        }
    };
    for threads in only([1, args.threads]) {
        let key = Arc::clone(&key);
        figures.push(measure_threads(
            format!("HSM P-256 sign, {threads} thread(s)"),
            threads,
            warmup,
            args.duration,
            move || key.sign(&msg).map(drop).map_err(anyhow::Error::from),
        ));
    }
    let raw_parallel = figures.last().map(Figure::rate).unwrap_or_default();

    // (b) Ca::issue directly: parse + verify the CSR, profile, sign, inventory insert.
    let csr = Arc::new(csr("spiffe://bench.example/ns/bench/sa/direct")?);
    for threads in only([1, args.threads]) {
        let (ca, csr) = (Arc::clone(&ca), Arc::clone(&csr));
        figures.push(measure_threads(
            format!("Ca::issue direct, {threads} thread(s)"),
            threads,
            warmup,
            args.duration,
            move || {
                ca.issue(
                    &request(csr.0.as_bytes(), RequesterKind::Operator),
                    SystemTime::now(),
                )
                .map(drop)
                .map_err(anyhow::Error::from)
            },
        ));
    }
    let direct_parallel = figures.last().map(Figure::rate).unwrap_or_default();

    // (c) The HTTPS API: renewals over keep-alive mTLS connections; (d) under silent ones.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.workers)
        .enable_all()
        .build()
        .context("runtime")?;
    let mut loads = vec![ApiLoad {
        connect_each: false,
        silent: 0,
    }];
    if args.silent > 0 {
        loads = [false, true]
            .into_iter()
            .flat_map(|connect_each| {
                [0, args.silent].map(|silent| ApiLoad {
                    connect_each,
                    silent,
                })
            })
            .collect();
    }
    let first_api = figures.len();
    for load in loads {
        figures.push(runtime.block_on(api_figure(
            work.path(),
            &ca,
            store.as_ref(),
            args,
            warmup,
            load,
        ))?);
    }
    let api_rate = figures.get(first_api).map(Figure::rate).unwrap_or_default();
    // cfssl in plain HTTP (its default) and over mutual TLS (like for like with the API).
    let mut cfssl_rates = Vec::new();
    if args.cfssl {
        for (transport, how) in [
            (issue_cfssl::Transport::Plain, "HTTP"),
            (issue_cfssl::Transport::MutualTls, "mTLS"),
        ] {
            let figure = runtime.block_on(issue_cfssl::cfssl_figure(
                work.path(),
                args.clients,
                warmup,
                args.duration,
                transport,
            ))?;
            if let Some(figure) = figure {
                cfssl_rates.push((how, figure.rate()));
                figures.push(figure);
            }
        }
    }

    print_table(&figures, args);
    println!();
    println!(
        "load average (1/5/15 min) before: {load_before}; after: {}",
        loadavg()
    );
    if !args.api_only {
        println!(
            "ratio API / raw sign ({} threads):      {:.2}",
            args.threads,
            api_rate / raw_parallel
        );
        println!(
            "ratio API / Ca::issue ({} threads):     {:.2}",
            args.threads,
            api_rate / direct_parallel
        );
    }
    for (how, cfssl) in cfssl_rates {
        println!(
            "ratio API / cfssl serve {how} ({} clients): {:.2}",
            args.clients,
            api_rate / cfssl
        );
    }
    if args.silent > 0 {
        // The API figures come in pairs: without, then with the silent connections.
        let ms = |us: u64| us as f64 / 1000.0;
        for pair in figures[first_api..].chunks(2) {
            if let [without, with] = pair {
                if let (Some((p50, p99)), Some((s50, s99))) = (without.latency_us, with.latency_us)
                {
                    println!(
                        "{}: p50 {:.2} -> {:.2} ms, p99 {:.2} -> {:.2} ms with {} silent",
                        without.name,
                        ms(p50),
                        ms(s50),
                        ms(p99),
                        ms(s99),
                        args.silent
                    );
                }
            }
        }
    }
    Ok(())
}

/// The machine's load average (shared machines make absolute figures move; ratios less so).
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

fn dedup(threads: [usize; 2]) -> Vec<usize> {
    if threads[0] == threads[1] {
        vec![threads[0]]
    } else {
        threads.to_vec()
    }
}

/// A private SoftHSM2 with one token; returns the PIN file.
fn softhsm(dir: &Path) -> anyhow::Result<PathBuf> {
    if !Path::new(MODULE).exists() {
        bail!("{MODULE} is missing: apt-get install -y softhsm2");
    }
    let tokens = dir.join("tokens");
    std::fs::create_dir(&tokens)?;
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )?;
    // Before any PKCS#11 module is loaded in this process (single-threaded here).
    std::env::set_var("SOFTHSM2_CONF", &conf);
    let out = Command::new("softhsm2-util")
        .args([
            "--init-token",
            "--free",
            "--label",
            TOKEN,
            "--pin",
            PIN,
            "--so-pin",
            "5678",
        ])
        .output()
        .context("run softhsm2-util")?;
    if !out.status.success() {
        bail!(
            "softhsm2-util --init-token: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let pin_file = dir.join("pin");
    std::fs::write(&pin_file, format!("{PIN}\n"))?;
    let mut perms = std::fs::metadata(&pin_file)?.permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o600);
    std::fs::set_permissions(&pin_file, perms)?;
    Ok(pin_file)
}

fn ca_config(dir: &Path, pin_file: &Path, sessions: usize) -> anyhow::Result<CaConfig> {
    let yaml = format!(
        r#"
state_dir: {dir}/state
backend:
  pkcs11:
    module: {MODULE}
    token_label: {TOKEN}
    pin_file: {pin}
    sessions: {sessions}
keys:
  root_label: bench-root
  issuing_label: {ISSUING_LABEL}
profiles:
  - name: bench
    tenant: bench
    spiffe_ids: ["spiffe://bench.example/ns/**"]
  - name: admin-server
    tenant: platform
    require_spiffe_id: false
    dns_names: ["localhost"]
    client_auth: false
    server_auth: true
"#,
        dir = dir.display(),
        pin = pin_file.display(),
    );
    std::fs::write(dir.join("ca.yaml"), &yaml)?;
    Ok(CaConfig::from_yaml(&yaml)?)
}

/// A CSR (PEM) and its key (PKCS#8 DER).
struct Csr(String, Vec<u8>);

fn csr(spiffe_id: &str) -> anyhow::Result<Csr> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::default();
    params
        .subject_alt_names
        .push(rcgen::SanType::URI(spiffe_id.to_owned().try_into()?));
    Ok(Csr(
        params.serialize_request(&key)?.pem()?,
        key.serialize_der(),
    ))
}

fn request(csr: &[u8], kind: RequesterKind) -> IssueRequest<'_> {
    IssueRequest {
        csr,
        tenant: "bench".parse().expect("a valid tenant id literal"),
        profile: None,
        lifetime: None,
        requester: Requester {
            kind,
            id: "issue-bench".to_owned(),
        },
    }
}

/// Runs `op` in `threads` threads back to back: warm-up, then counts for `duration`.
fn measure_threads(
    name: String,
    threads: usize,
    warmup: Duration,
    duration: Duration,
    op: impl Fn() -> anyhow::Result<()> + Send + Sync + 'static,
) -> Figure {
    let op = Arc::new(op);
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (op, measuring, stop, ops, errors) = (
                Arc::clone(&op),
                Arc::clone(&measuring),
                Arc::clone(&stop),
                Arc::clone(&ops),
                Arc::clone(&errors),
            );
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let ok = op().is_ok();
                    if measuring.load(Ordering::Relaxed) {
                        if ok { &ops } else { &errors }.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(warmup);
    measuring.store(true, Ordering::Relaxed);
    let start = Instant::now();
    std::thread::sleep(duration);
    measuring.store(false, Ordering::Relaxed);
    let elapsed = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        let _ = h.join();
    }
    let figure = Figure {
        name,
        ops: ops.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        elapsed,
        latency_us: None,
    };
    eprintln!("  {}: {:.0}/s", figure.name, figure.rate());
    figure
}

async fn api_figure(
    dir: &Path,
    ca: &Arc<Ca>,
    store: Option<&PgStore>,
    args: &Args,
    warmup: Duration,
    load: ApiLoad,
) -> anyhow::Result<Figure> {
    let config = AdminConfig::from_yaml(
        "listen: 127.0.0.1:0\nca: ca.yaml\ntls:\n  self_issue:\n    tenant: platform\n    profile: admin-server\n    dns_names: [localhost]\n\
         rate_limits:\n  per_identity: { requests: 1000000 }\n  per_source: { requests: 1000000 }\n",
        dir,
    )
    .map_err(|e| anyhow::anyhow!("admin config: {e}"))?;
    let server = match store {
        Some(store) => {
            AdminServer::bind_with_tokens(&config, Arc::clone(ca), Arc::new(store.tokens()), None)
                .await?
        }
        None => AdminServer::bind_with(&config, Arc::clone(ca), None).await?,
    };
    let addr = server.local_addr();
    let stats = server.stats_handle();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.run(async {
        let _ = stop_rx.await;
    }));

    let roots = root_store(
        parse_certs(ca.trust_bundle_pem().as_bytes(), "trust bundle")?,
        "trust bundle",
    )?;
    // Each client: a certificate issued directly, then renewals with a CSR of the same ID,
    // through the typed issuance client the gateway renews with.
    let mut clients = Vec::new();
    for i in 0..args.clients {
        let id = format!("spiffe://bench.example/ns/bench/sa/client-{i}");
        let first = csr(&id)?;
        // Off the runtime's threads, as the server does: the inventory may be a blocking
        // PostgreSQL client.
        let (ca2, der) = (Arc::clone(ca), first.0.clone());
        let issued = tokio::task::spawn_blocking(move || {
            ca2.issue(
                &request(der.as_bytes(), RequesterKind::Operator),
                SystemTime::now(),
            )
        })
        .await??;
        let credentials = ClientCredentials {
            chain: parse_certs(issued.chain_pem.as_bytes(), "issued chain")?,
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(first.1.clone())),
        };
        let client =
            IssuanceClient::new("localhost", addr.port(), roots.clone(), Some(credentials))?;
        clients.push((client, IssuanceRequest::new(csr(&id)?.0)));
    }

    let (stop_silent, silent_stopped) = tokio::sync::watch::channel(());
    let held = Arc::new(AtomicUsize::new(0));
    let mut silent = tokio::task::JoinSet::new();
    if load.silent > 0 {
        for i in 0..load.silent {
            let (roots, stop, held) = (roots.clone(), silent_stopped.clone(), Arc::clone(&held));
            silent.spawn(hold_silent(addr, i, roots, stop, held));
        }
        // Until (nearly) all are open, at most 60 s.
        let since = Instant::now();
        while held.load(Ordering::Relaxed) < load.silent * 95 / 100
            && since.elapsed() < Duration::from_secs(60)
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!(
            "  {} of {} silent connections open after {:.1?}",
            held.load(Ordering::Relaxed),
            load.silent,
            since.elapsed()
        );
    }

    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (client, request) in clients {
        let (measuring, stop) = (Arc::clone(&measuring), Arc::clone(&stop));
        tasks.push(tokio::spawn(async move {
            client_loop(client, request, load.connect_each, measuring, stop).await
        }));
    }
    tokio::time::sleep(warmup).await;
    measuring.store(true, Ordering::Relaxed);
    let start = Instant::now();
    tokio::time::sleep(args.duration).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut hist = hdrhistogram::Histogram::<u64>::new(3)?;
    let (mut ops, mut errors) = (0, 0);
    for t in tasks {
        let tally = t.await??;
        ops += tally.ok;
        errors += tally.errors;
        hist.add(&tally.latency)?;
    }
    let held_at_end = held.load(Ordering::Relaxed);
    drop(stop_silent);
    while silent.join_next().await.is_some() {}
    let _ = stop_tx.send(());
    serving.await??;
    let snapshot = stats.snapshot();
    eprintln!(
        "  admin server counters: issued {} refused {} unavailable {}; closed {:?}",
        snapshot.issued, snapshot.refused, snapshot.unavailable, snapshot.closed
    );
    if load.silent > 0 {
        eprintln!("  silent connections open at the end: {held_at_end}");
    }
    let how = if load.connect_each {
        "new connection each"
    } else {
        "keep-alive"
    };
    let under = match load.silent {
        0 => String::new(),
        n => format!(", {n} silent held"),
    };
    let figure = Figure {
        name: format!("HTTPS API renewal, {} {how} clients{under}", args.clients),
        ops,
        errors,
        elapsed,
        latency_us: Some((hist.value_at_quantile(0.5), hist.value_at_quantile(0.99))),
    };
    eprintln!("  {}: {:.0}/s", figure.name, figure.rate());
    Ok(figure)
}

struct Tally {
    ok: u64,
    errors: u64,
    latency: hdrhistogram::Histogram<u64>,
}

async fn client_loop(
    client: IssuanceClient,
    request: IssuanceRequest,
    connect_each: bool,
    measuring: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Tally> {
    let mut connection = match connect_each {
        true => None,
        false => Some(client.connect().await?),
    };
    let mut tally = Tally {
        ok: 0,
        errors: 0,
        latency: hdrhistogram::Histogram::new(3)?,
    };
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let answer = match &mut connection {
            Some(connection) => connection.issue(&request, None).await,
            None => client.issue(&request, None).await,
        };
        let issued = match answer {
            Ok(_) => true,
            // A refusal is a figure; a broken connection ends the run.
            Err(IdentityError::IssuerRefused { .. }) => false,
            Err(e) => return Err(e.into()),
        };
        if measuring.load(Ordering::Relaxed) {
            if issued {
                tally.ok += 1;
                tally
                    .latency
                    .record(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX))?;
            } else {
                tally.errors += 1;
            }
        }
    }
    Ok(tally)
}

/// Silent connection `i`: from 127.0.0.(2 + i / 200), TCP only, TLS without a certificate or
/// TLS with half a request head (by `i % 3`), held until the server closes it, then opened
/// again; until `stop` changes. `held` counts the open ones.
async fn hold_silent(
    addr: SocketAddr,
    i: usize,
    roots: RootCertStore,
    mut stop: tokio::sync::watch::Receiver<()>,
    held: Arc<AtomicUsize>,
) {
    let source = IpAddr::from([127, 0, 0, u8::try_from(2 + i / 200).unwrap_or(255)]);
    let mut tls = rustls::ClientConfig::builder_with_provider(portcullis_identity::provider())
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(roots).with_no_client_auth());
    if let Ok(config) = &mut tls {
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
    }
    let Ok(tls) = tls.map(|c| tokio_rustls::TlsConnector::from(Arc::new(c))) else {
        return;
    };
    loop {
        let opened = Instant::now();
        let wait = async {
            let Some(conn) = open_silent(addr, source, i % 3, &tls).await else {
                return;
            };
            held.fetch_add(1, Ordering::Relaxed);
            match conn {
                Silent::Tcp(s) => drain(s).await,
                Silent::Tls(s) => drain(s).await,
            }
            held.fetch_sub(1, Ordering::Relaxed);
        };
        tokio::select! {
            () = wait => {}
            _ = stop.changed() => return,
        }
        // Refused at once (a cap): do not spin.
        if opened.elapsed() < Duration::from_secs(1) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

enum Silent {
    Tcp(tokio::net::TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>),
}

async fn open_silent(
    addr: SocketAddr,
    source: IpAddr,
    kind: usize,
    tls: &tokio_rustls::TlsConnector,
) -> Option<Silent> {
    let socket = tokio::net::TcpSocket::new_v4().ok()?;
    socket.bind(SocketAddr::new(source, 0)).ok()?;
    let tcp = socket.connect(addr).await.ok()?;
    if kind == 0 {
        return Some(Silent::Tcp(tcp));
    }
    let name = ServerName::try_from("localhost").ok()?;
    let mut stream = tls.connect(name, tcp).await.ok()?;
    if kind == 2 {
        stream
            .write_all(b"POST /v1/certificates HTTP/1.1\r\nHost: localhost\r\n")
            .await
            .ok()?;
    }
    Some(Silent::Tls(Box::new(stream)))
}

/// Reads until the peer closes (or an error).
async fn drain(mut stream: impl AsyncRead + Unpin) {
    let mut buf = [0u8; 1024];
    while let Ok(n) = stream.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}

fn print_table(figures: &[Figure], args: &Args) {
    println!();
    println!(
        "Issuance on one SoftHSM2 token; {} per figure; {} CPUs; CA session pool {}",
        humantime::format_duration(args.duration),
        std::thread::available_parallelism().map_or(0, usize::from),
        args.sessions
    );
    println!();
    println!(
        "| {:<66} | {:>10} | {:>8} | {:>6} | {:>9} | {:>9} |",
        "measurement", "per second", "count", "errors", "p50 ms", "p99 ms"
    );
    println!(
        "|{:-<68}|{:->12}|{:->10}|{:->8}|{:->11}|{:->11}|",
        "", "", "", "", "", ""
    );
    for f in figures {
        let (p50, p99) = match f.latency_us {
            Some((a, b)) => (
                format!("{:.2}", a as f64 / 1000.0),
                format!("{:.2}", b as f64 / 1000.0),
            ),
            None => ("-".to_owned(), "-".to_owned()),
        };
        println!(
            "| {:<66} | {:>10.0} | {:>8} | {:>6} | {:>9} | {:>9} |",
            f.name,
            f.rate(),
            f.ops,
            f.errors,
            p50,
            p99
        );
    }
}
