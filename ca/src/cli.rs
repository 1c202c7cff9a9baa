//! `portcullis ca …`: initialise the CA, issue from a CSR, list the inventory, revoke (with
//! the certificate's renewals), publish a CRL. Each subcommand reads the CA configuration (YAML) given with `--config`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::authority::{Ca, IssueRequest, Requester, RequesterKind};
use crate::config::CaConfig;
use crate::crl::{write_atomic, RevocationReason};
use crate::events::{CaEventSink, RevocationSink};
use crate::ids::{Serial, TenantId};
use crate::inventory::{format_time, CertStatus, InventoryFilter, RevocationScope};
use crate::CaError;

/// The `ca` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum CaCommand {
    /// Create the root and the issuing intermediate (keys in the configured backend) and write
    /// the trust bundle, chain, CRL and inventory into the state directory.
    Init {
        /// The CA configuration file (YAML).
        #[arg(long)]
        config: PathBuf,
        /// Initialise a region's CA under an existing root instead: its issuing key is
        /// generated in `backend`, its intermediate signed by the root key (`root_backend`,
        /// `keys.root_label`). Needs --root.
        #[arg(long, requires = "root")]
        region: Option<String>,
        /// The fleet's root certificate (`root.pem` of the first CA), with --region.
        #[arg(long, requires = "region")]
        root: Option<PathBuf>,
    },
    /// Issue a certificate from a CSR under a tenant's profile.
    Issue {
        #[arg(long)]
        config: PathBuf,
        /// The CSR file (PEM or DER).
        #[arg(long)]
        csr: PathBuf,
        #[arg(long)]
        tenant: TenantId,
        /// The profile (default: the tenant's only profile).
        #[arg(long)]
        profile: Option<String>,
        /// Lifetime, e.g. 30m (default: the profile's).
        #[arg(long, value_parser = humantime::parse_duration)]
        lifetime: Option<Duration>,
        /// Write the certificate chain (leaf, intermediate) here instead of to stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// List issued certificates.
    List {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        tenant: Option<TenantId>,
        /// valid, revoked or expired.
        #[arg(long)]
        status: Option<CertStatus>,
        /// Only certificates expiring within this long, e.g. 10m.
        #[arg(long, value_parser = humantime::parse_duration)]
        expires_within: Option<Duration>,
        /// At most this many (default 1000).
        #[arg(long)]
        limit: Option<usize>,
        /// JSON (one array) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a certificate by serial (hex), with every renewal descending from it, and
    /// publish a new CRL.
    Revoke {
        #[arg(long)]
        config: PathBuf,
        /// The serial, hex (colons allowed).
        serial: String,
        /// RFC 5280 reason: unspecified, keyCompromise, superseded, cessationOfOperation, …
        #[arg(long, default_value = "unspecified")]
        reason: RevocationReason,
        /// Revoke this certificate only, not the certificates renewed from it.
        #[arg(long)]
        only_this: bool,
    },
    /// Sign and publish a fresh CRL to STATE/crl.pem (run before nextUpdate).
    Crl {
        #[arg(long)]
        config: PathBuf,
        /// Also write the CRL (PEM) here.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// Runs a subcommand, printing to stdout.
pub fn run(cmd: CaCommand) -> Result<(), CaError> {
    run_audited(cmd, None)
}

/// Runs a subcommand, printing to stdout; the CA records its issuances, refusals and
/// revocations in `events` when given.
pub fn run_audited(cmd: CaCommand, events: Option<Arc<dyn CaEventSink>>) -> Result<(), CaError> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    run_with_audit(cmd, &mut out, SystemTime::now(), events)
}

fn operator() -> Requester {
    Requester {
        kind: RequesterKind::Operator,
        id: std::env::var("USER").unwrap_or_else(|_| "cli".to_owned()),
    }
}

/// Runs a subcommand, printing to `out`, at `now`.
pub fn run_with(cmd: CaCommand, out: &mut dyn Write, now: SystemTime) -> Result<(), CaError> {
    run_with_audit(cmd, out, now, None)
}

/// Gives the CA opened from a state folder a [`RevocationSink`] (the binary's: the fleet's
/// spool in that folder, when there is one), or none.
pub type RevocationSinks = dyn Fn(&Path) -> Option<Arc<dyn RevocationSink>>;

/// [`run_audited`], the CA's revocations also handed to the sink `revocations` gives.
pub fn run_audited_with(
    cmd: CaCommand,
    events: Option<Arc<dyn CaEventSink>>,
    revocations: &RevocationSinks,
) -> Result<(), CaError> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    run_inner(cmd, &mut out, SystemTime::now(), events, Some(revocations))
}

/// [`run_with`], the CA recording its events in `events`.
pub fn run_with_audit(
    cmd: CaCommand,
    out: &mut dyn Write,
    now: SystemTime,
    events: Option<Arc<dyn CaEventSink>>,
) -> Result<(), CaError> {
    run_inner(cmd, out, now, events, None)
}

fn run_inner(
    cmd: CaCommand,
    out: &mut dyn Write,
    now: SystemTime,
    events: Option<Arc<dyn CaEventSink>>,
    revocations: Option<&RevocationSinks>,
) -> Result<(), CaError> {
    let open = |config: &Path| -> Result<Ca, CaError> {
        let ca = Ca::open(&CaConfig::load(config)?)?;
        let ca = match revocations.and_then(|sinks| sinks(ca.state_dir())) {
            Some(sink) => ca.with_revocation_sink(sink),
            None => ca,
        };
        Ok(match &events {
            Some(sink) => ca.with_event_sink(Arc::clone(sink)),
            None => ca,
        })
    };
    let print = |out: &mut dyn Write, text: &str| -> Result<(), CaError> {
        out.write_all(text.as_bytes())
            .map_err(|source| CaError::Io {
                path: "stdout".to_owned(),
                source,
            })
    };
    match cmd {
        CaCommand::Init {
            config,
            region,
            root,
        } => {
            let config = CaConfig::load(&config)?;
            // Key generation in an HSM can take seconds: say what is happening, and how long
            // it took, on stderr (stdout stays the result).
            let started = std::time::Instant::now();
            let ca = match (&region, &root) {
                (Some(region), Some(root)) => {
                    eprintln!(
                        "ca init: generating region {region}'s issuing key ({}) and signing its \
                         intermediate with the root key...",
                        config.backend.describe()
                    );
                    Ca::init_region(&config, region, root, now)?
                }
                _ => {
                    eprintln!(
                        "ca init: generating the root and issuing keys ({}) and certificates...",
                        config.backend.describe()
                    );
                    Ca::init(&config, now)?
                }
            };
            eprintln!("ca init: done in {:.1?}", started.elapsed());
            print(
                out,
                &format!(
                    "CA initialised in {}\n  trust bundle: {}\n  chain:        {}\n  CRL:          {}\n",
                    ca.state_dir().display(),
                    ca.state_dir().join("bundle.pem").display(),
                    ca.state_dir().join("chain.pem").display(),
                    ca.crl_path().display()
                ),
            )
        }
        CaCommand::Issue {
            config,
            csr,
            tenant,
            profile,
            lifetime,
            out: out_file,
        } => {
            let ca = open(&config)?;
            let csr_bytes = read_capped(&csr)?;
            let issued = ca.issue(
                &IssueRequest {
                    csr: &csr_bytes,
                    tenant,
                    profile: profile.as_deref(),
                    lifetime,
                    requester: operator(),
                },
                now,
            )?;
            match out_file {
                Some(path) => {
                    write_atomic(&path, issued.chain_pem.as_bytes(), 0o644)?;
                    print(
                        out,
                        &format!(
                            "issued serial {} (profile {}), valid until {}, written to {}\n",
                            issued.serial,
                            issued.profile,
                            format_time(issued.not_after),
                            path.display()
                        ),
                    )
                }
                None => print(out, &issued.chain_pem),
            }
        }
        CaCommand::List {
            config,
            tenant,
            status,
            expires_within,
            limit,
            json,
        } => {
            let ca = open(&config)?;
            let records = ca.list(
                &InventoryFilter {
                    tenant,
                    status,
                    expires_within,
                    identity: None,
                    limit,
                },
                now,
            )?;
            if json {
                let text = serde_json::to_string_pretty(&records)
                    .map_err(|e| CaError::Inventory(format!("encode JSON: {e}")))?;
                return print(out, &format!("{text}\n"));
            }
            let mut text = format!(
                "{:<34} {:<16} {:<20} {:<8} {:<20} {}\n",
                "SERIAL", "TENANT", "PROFILE", "STATUS", "NOT AFTER", "SANS"
            );
            for r in &records {
                text.push_str(&format!(
                    "{:<34} {:<16} {:<20} {:<8} {:<20} {}\n",
                    r.serial.to_string(),
                    r.tenant.as_str(),
                    r.profile,
                    r.status.to_string(),
                    format_time(r.not_after),
                    r.sans.join(",")
                ));
            }
            print(out, &text)
        }
        CaCommand::Revoke {
            config,
            serial,
            reason,
            only_this,
        } => {
            let serial: Serial = serial.parse()?;
            let ca = open(&config)?;
            let scope = if only_this {
                RevocationScope::OnlyThis
            } else {
                RevocationScope::Lineage
            };
            let revocation = ca.revoke_by(&serial, reason, scope, &operator(), now)?;
            let mut text = String::new();
            for r in &revocation.revoked {
                text.push_str(&format!(
                    "revoked {} (tenant {}, {reason}",
                    r.serial, r.tenant
                ));
                if let Some(from) = r.renewed_from.as_ref().filter(|_| r.serial != serial) {
                    text.push_str(&format!("; renewal of {from}"));
                }
                text.push_str(")\n");
            }
            text.push_str(&format!(
                "{} certificate(s) revoked; CRL written to {}\n",
                revocation.revoked.len(),
                ca.crl_path().display()
            ));
            print(out, &text)
        }
        CaCommand::Crl {
            config,
            out: out_file,
        } => {
            let ca = open(&config)?;
            let crl = ca.publish_crl(now)?;
            if let Some(path) = out_file {
                write_atomic(&path, crl.pem.as_bytes(), 0o644)?;
            }
            print(
                out,
                &format!(
                    "CRL number {} with {} revoked, next update {}, written to {}\n",
                    crl.number,
                    crl.revoked,
                    format_time(crl.next_update),
                    ca.crl_path().display()
                ),
            )
        }
    }
}

/// Reads a CSR file, refusing to read past the size cap (the refusal then names the size).
fn read_capped(path: &Path) -> Result<Vec<u8>, CaError> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|source| CaError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let mut buf = Vec::new();
    let cap = crate::csr::MAX_CSR_BYTES as u64 + 1;
    file.take(cap)
        .read_to_end(&mut buf)
        .map_err(|source| CaError::Io {
            path: path.display().to_string(),
            source,
        })?;
    Ok(buf)
}
