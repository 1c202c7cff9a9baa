//! `portcullis audit …`: verify, tail and query a local audit log directory. Output is JSON
//! lines (one record per line, exactly as stored), so it pipes into `jq` and log tooling.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context};
use clap::Subcommand;
use portcullis_audit::{
    default_node, publish_public_key, query, tail, verify_dir, verify_dir_expecting, AuditConfig,
    AuditHandle, AuditHead, AuditLog, Decision, DurabilityMode, PublicKey, QueryFilter,
    VerifyError,
};

#[derive(Subcommand)]
pub(crate) enum AuditCommand {
    /// Check every hash and signature of a log; name the first bad record if there is one.
    Verify {
        /// The log directory (the config's `audit.directory`).
        dir: PathBuf,
        /// The checkpoint public key (PEM), written beside the signing key as `<key>.pub`.
        #[arg(long)]
        key: PathBuf,
        /// The log's head as published outside it: a head file (the config's
        /// `audit.head_file`), or `pg` for the central store of `--config`. A log that ends
        /// before it was cut.
        #[arg(long, value_name = "FILE|pg")]
        expect_head: Option<String>,
        /// The gateway config whose `audit.postgres` (and `audit.node`) `--expect-head pg` uses.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Print the last records of a log.
    Tail {
        dir: PathBuf,
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: usize,
    },
    /// Print the records that match every given filter, oldest first.
    Query {
        dir: PathBuf,
        #[arg(long)]
        tenant: Option<String>,
        /// The caller's identity (SPIFFE ID or subject), exactly.
        #[arg(long)]
        identity: Option<String>,
        /// RFC 3339 time (`2026-11-30T10:00:00Z`) or an age (`15m`, `2h`, `7d`) before now.
        #[arg(long)]
        since: Option<String>,
        /// RFC 3339 time or an age before now.
        #[arg(long)]
        until: Option<String>,
        /// `allow`, `deny` or `error`.
        #[arg(long)]
        decision: Option<Decision>,
    },
}

pub(crate) fn run(command: AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::Verify {
            dir,
            key,
            expect_head,
            config,
        } => {
            let head = match expect_head.as_deref() {
                None => None,
                Some("pg") => Some(head_from_store(&dir, config.as_deref())?),
                Some(file) => Some(head_from_file(Path::new(file))?),
            };
            verify(&dir, &key, head.as_ref())
        }
        AuditCommand::Tail { dir, lines } => {
            let records = tail(&dir, lines).with_context(|| format!("{}", dir.display()))?;
            print_json_lines(records.into_iter().map(Ok::<_, VerifyError>))
        }
        AuditCommand::Query {
            dir,
            tenant,
            identity,
            since,
            until,
            decision,
        } => {
            let filter = QueryFilter {
                tenant,
                identity,
                since: since.as_deref().map(parse_time).transpose()?,
                until: until.as_deref().map(parse_time).transpose()?,
                decision,
            };
            let records = query(&dir, filter).with_context(|| format!("{}", dir.display()))?;
            print_json_lines(records)
        }
    }
}

/// How many segment files (`segment-*.log`) the folder holds, and their bytes; an unreadable
/// folder counts as empty here (the verifier reports it).
fn segment_files(dir: &Path) -> (usize, u64) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (0, 0);
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with("segment-") && name.ends_with(".log")
        })
        .fold((0, 0), |(n, bytes), e| {
            (n + 1, bytes + e.metadata().map_or(0, |m| m.len()))
        })
}

fn verify(dir: &Path, key: &Path, head: Option<&AuditHead>) -> anyhow::Result<()> {
    let bytes = std::fs::read(key).with_context(|| format!("{}", key.display()))?;
    let key = PublicKey::from_pem_or_der(&bytes).with_context(|| format!("{}", key.display()))?;
    let log_node = tail(dir, 1)
        .ok()
        .and_then(|records| records.into_iter().next())
        .map(|r| r.node);
    if let (Some(head), Some(node)) = (head, &log_node) {
        if head.node != *node {
            bail!(
                "{}: the expected head is node {}'s, the log is node {node}'s",
                dir.display(),
                head.node
            );
        }
    }
    // A large log takes a while: what is being read, then the elapsed time and rate, go to
    // stderr (stdout is the result).
    let (segments, bytes) = segment_files(dir);
    eprintln!(
        "audit verify: reading {segments} segment file(s), {:.1} MiB, in {}",
        bytes as f64 / (1024.0 * 1024.0),
        dir.display()
    );
    let started = std::time::Instant::now();
    let result = match head {
        Some(head) => verify_dir_expecting(dir, &key, head),
        None => verify_dir(dir, &key),
    };
    let elapsed = started.elapsed();
    if let Ok(report) = &result {
        eprintln!(
            "audit verify: {} records in {elapsed:.2?} ({:.0} records/s)",
            report.records,
            report.records as f64 / elapsed.as_secs_f64().max(1e-6)
        );
    }
    match result {
        Ok(report) => {
            let expected = match (head, report.matched_head) {
                (None, _) => String::new(),
                (Some(h), Some(_)) => format!("; reaches the expected head {h}"),
                (Some(h), None) => {
                    format!("; the expected head {h} precedes the log's first record (retention)")
                }
            };
            println!(
                "{}: ok: {} records in {} segment(s), seq {}..{}, {} signed checkpoint(s), {} record(s) after the last checkpoint, {} truncation(s); chain head {}{expected}",
                dir.display(),
                report.records,
                report.segments,
                report.first_seq.map_or("-".into(), |s| s.to_string()),
                report.last_seq.map_or("-".into(), |s| s.to_string()),
                report.checkpoints,
                report.unsigned_tail,
                report.truncations,
                report.last_hash,
            );
            Ok(())
        }
        Err(VerifyError::Bad(bad)) => bail!("{}: FAILED at {bad}", dir.display()),
        Err(VerifyError::Io { path, source }) => {
            bail!(
                "{}: cannot read {}: {source}",
                dir.display(),
                path.display()
            )
        }
        Err(e) => bail!("{}: FAILED: {e}", dir.display()),
    }
}

fn head_from_file(path: &Path) -> anyhow::Result<AuditHead> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    AuditHead::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// The head the central store of the config's `audit.postgres` holds for this log's node (the
/// config's `audit.node`, else the node named in the log, else the host name).
fn head_from_store(dir: &Path, config: Option<&Path>) -> anyhow::Result<AuditHead> {
    let Some(config) = config else {
        bail!("--expect-head pg needs --config (the gateway config naming audit.postgres)");
    };
    let config = portcullis_gateway::load_config(config)?;
    let Some(audit) = config.audit else {
        bail!("the config has no audit section");
    };
    let Some(pg) = &audit.postgres else {
        bail!("the config's audit section has no postgres store");
    };
    let store = portcullis_gateway::central_store(pg)?;
    let node = match audit.node {
        Some(node) => node,
        None => tail(dir, 1)
            .ok()
            .and_then(|records| records.into_iter().next())
            .map_or_else(default_node, |r| r.node),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime
        .block_on(store.head(&node))
        .with_context(|| format!("reading node {node}'s head from the central store"))?
        .with_context(|| format!("the central store holds no head for node {node}"))
}

/// One JSON document a line on stdout, streaming; stops at the first unreadable record.
fn print_json_lines<T: serde::Serialize, E: Into<anyhow::Error>>(
    items: impl Iterator<Item = Result<T, E>>,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    for item in items {
        serde_json::to_writer(&mut out, &item.map_err(Into::into)?)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// An RFC 3339 time, or an age (`humantime` syntax) counted back from now.
fn parse_time(text: &str) -> anyhow::Result<SystemTime> {
    if let Ok(t) = humantime::parse_rfc3339_weak(text) {
        return Ok(t);
    }
    let age: Duration = humantime::parse_duration(text).with_context(|| {
        format!("`{text}` is neither an RFC 3339 time nor an age such as 15m or 2h")
    })?;
    SystemTime::now()
        .checked_sub(age)
        .with_context(|| format!("`{text}` reaches before the epoch"))
}

/// Runs `work` with an audit log open in `dir` (node `<host>-<role>`) when `dir` is given, and
/// closes the log afterwards (queue drained, final signed checkpoint). For the control-plane
/// commands (`admin`, `ca`), whose events are recorded best-effort: they are never refused for
/// want of a record.
pub(crate) fn with_audit_log<T>(
    dir: Option<PathBuf>,
    key: &Path,
    role: &str,
    work: impl FnOnce(Option<AuditHandle>) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let Some(dir) = dir else {
        return work(None);
    };
    let signer = crate::keys::audit_signer(&portcullis_policy::AuditKey::File(key.to_owned()))
        .map_err(anyhow::Error::msg)?;
    // The public half beside the key, for `portcullis audit verify --key KEY.pub`.
    let mut public_path = key.as_os_str().to_owned();
    public_path.push(".pub");
    publish_public_key(signer.as_ref(), Path::new(&public_path))?;
    let mut config = AuditConfig::new(&dir, format!("{}-{role}", default_node()));
    config.mode = DurabilityMode::BestEffort;
    let log = AuditLog::open(config, signer).with_context(|| format!("{}", dir.display()))?;
    let result = work(Some(log.handle()));
    log.close();
    result
}
