//! `portcullis admin …`: serve the admin API, check its configuration, create bootstrap tokens;
//! and, as a client of a running admin API, print reports and certificates (`cli/client.rs`)
//! and call its operations (`cli/commands.rs`, `cli/calls.rs`).

mod calls;
mod client;
mod commands;

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use clap::Subcommand;
use portcullis_audit::{AdminAction, AuditHandle};
use portcullis_ca::{CaConfig, TenantId};

use crate::acme::AcmeStore;
use crate::config::AdminConfig;
use crate::error::AdminError;
use crate::server::AdminServer;
use crate::store::PgStore;
use crate::token::{create_token, SqliteTokenStore, MAX_TOKEN_TTL};
pub use client::{ApiConnection, Format, ReportKind};
pub use commands::{ApiCall, PendingCommand, PolicyCommand, TokensCommand, WebhookCommand};

/// The `admin` subcommands.
#[derive(Debug, Subcommand)]
#[non_exhaustive]
pub enum AdminCommand {
    /// Serve the admin API (HTTPS) until SIGINT or SIGTERM.
    ///
    /// Under systemd socket activation (portcullis-admin.socket, LISTEN_FDS) it serves the
    /// socket systemd passes, which must be one TCP socket on the config's `listen` address;
    /// otherwise it binds that address itself.
    Serve {
        /// The admin configuration file (YAML).
        #[arg(long)]
        config: PathBuf,
    },
    /// Check the admin configuration and the CA configuration it names (no tenant profile may
    /// issue an operator's ID), without starting anything.
    Check {
        /// The admin configuration file (YAML).
        #[arg(long)]
        config: PathBuf,
    },
    /// Bootstrap tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// The ACME server's external account binding keys.
    #[command(subcommand)]
    Acme(AcmeCommand),
    /// Print a tenant's report from a running admin API (as a caller with a role there).
    Report {
        #[command(flatten)]
        api: ApiConnection,
        /// Which report.
        #[arg(value_enum)]
        kind: ReportKind,
        /// The tenant.
        #[arg(long)]
        tenant: TenantId,
        /// `audit`: the period summed (default 24h).
        #[arg(long)]
        window: Option<String>,
        /// `certificates`: count those expiring within this (default 30d).
        #[arg(long)]
        within: Option<String>,
        /// How to print it.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// List certificates of the inventory from a running admin API, or one's lineage.
    Certificates {
        #[command(flatten)]
        api: ApiConnection,
        /// Only this tenant's.
        #[arg(long)]
        tenant: Option<TenantId>,
        /// Only those naming this SPIFFE ID, DNS name or IP address.
        #[arg(long)]
        identity: Option<String>,
        /// Only `valid`, `revoked` or `expired` ones.
        #[arg(long)]
        status: Option<String>,
        /// Only valid ones expiring within this long (`7d`).
        #[arg(long)]
        expires_within: Option<String>,
        /// Instead: what this serial renewed, it, and the renewals descending from it.
        #[arg(long, conflicts_with_all = ["tenant", "identity", "status", "expires_within"])]
        lineage: Option<String>,
        /// Print the API's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a certificate through a running admin API (and the certificates renewed from it,
    /// unless `--only-this`).
    Revoke {
        #[command(flatten)]
        call: ApiCall,
        /// The certificate's serial (hex).
        serial: String,
        /// An RFC 5280 reason name such as `keyCompromise`.
        #[arg(long)]
        reason: Option<String>,
        /// This certificate only, not its renewals.
        #[arg(long)]
        only_this: bool,
    },
    /// A tenant's policy versions, impact analysis, activation and approvals, through a running
    /// admin API.
    #[command(subcommand)]
    Policies(PolicyCommand),
    /// A tenant's bootstrap tokens through a running admin API (`token create` makes one
    /// offline, from the CA's configuration).
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// A tenant's webhook subscriptions and deliveries through a running admin API.
    #[command(subcommand)]
    Webhooks(WebhookCommand),
    /// A tenant's issuances waiting for approval, through a running admin API.
    #[command(subcommand)]
    Pending(PendingCommand),
}

/// The `admin acme` subcommands.
#[derive(Debug, Subcommand)]
#[non_exhaustive]
pub enum AcmeCommand {
    /// Create an EAB key (key id and HMAC key, printed once on standard output) that binds one
    /// ACME account to a tenant's profile.
    EabCreate {
        /// The CA's configuration file: the key is stored (sealed) in its state directory.
        #[arg(long)]
        ca_config: PathBuf,
        /// The tenant whose certificates the account obtains.
        #[arg(long)]
        tenant: TenantId,
        /// The tenant's profile the account's certificates are issued under.
        #[arg(long)]
        profile: String,
        /// How long the key may bind an account.
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// The admin server's configuration file: with `store.postgres`, the key is stored in
        /// its database (sealed under this node's `STATE/acme-eab.key`, the fleet's).
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

/// The `admin token` subcommands.
#[derive(Debug, Subcommand)]
#[non_exhaustive]
pub enum TokenCommand {
    /// Create a one-time bootstrap token and print it (once) on standard output.
    Create {
        /// The CA's configuration file: the token is stored (hashed) in its state directory.
        #[arg(long)]
        ca_config: PathBuf,
        /// The tenant the token may obtain a certificate for.
        #[arg(long)]
        tenant: TenantId,
        /// Bind the token to this SPIFFE ID: the certificate must carry exactly it.
        #[arg(long)]
        spiffe_id: Option<String>,
        /// How long the token stays usable.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
}

/// Runs an `admin` subcommand. `audit` receives the calls' audit records.
pub fn run(cmd: AdminCommand, audit: Option<AuditHandle>) -> Result<(), AdminError> {
    run_to(cmd, audit, &mut std::io::stdout())
}

/// [`run`], the API client's answers printed on `out`.
pub fn run_to(
    cmd: AdminCommand,
    audit: Option<AuditHandle>,
    out: &mut dyn std::io::Write,
) -> Result<(), AdminError> {
    match cmd {
        AdminCommand::Serve { config } => serve(&config, audit),
        AdminCommand::Check { config } => check(&config),
        AdminCommand::Token(TokenCommand::Create {
            ca_config,
            tenant,
            spiffe_id,
            ttl,
        }) => token_create(&ca_config, tenant, spiffe_id, ttl, audit.as_ref()),
        AdminCommand::Acme(AcmeCommand::EabCreate {
            ca_config,
            tenant,
            profile,
            ttl,
            config,
        }) => eab_create(
            &ca_config,
            config.as_deref(),
            &tenant,
            &profile,
            ttl,
            audit.as_ref(),
        ),
        AdminCommand::Report {
            api,
            kind,
            tenant,
            window,
            within,
            format,
        } => client::report(
            &api,
            kind,
            &tenant,
            window.as_deref(),
            within.as_deref(),
            format,
            out,
        ),
        AdminCommand::Certificates {
            api,
            tenant,
            identity,
            status,
            expires_within,
            lineage,
            json,
        } => client::certificates(
            &api,
            &client::CertificateQuery {
                tenant,
                identity,
                status,
                expires_within,
                lineage,
            },
            json,
            out,
        ),
        AdminCommand::Revoke {
            call,
            serial,
            reason,
            only_this,
        } => calls::revoke(&call, &serial, reason.as_deref(), only_this, out),
        AdminCommand::Policies(cmd) => calls::policies(&cmd, out),
        AdminCommand::Tokens(cmd) => calls::tokens(&cmd, out),
        AdminCommand::Webhooks(cmd) => calls::webhooks(&cmd, out),
        AdminCommand::Pending(cmd) => calls::pending(&cmd, out),
    }
}

fn serve(path: &std::path::Path, audit: Option<AuditHandle>) -> Result<(), AdminError> {
    let config = AdminConfig::load(path)?;
    // Before the runtime's threads: it reads and clears LISTEN_FDS.
    crate::activation::from_systemd(config.listen, path)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| AdminError::Invalid(format!("starting the async runtime: {e}")))?;
    runtime.block_on(async {
        let server = AdminServer::bind(&config, audit).await?;
        eprintln!(
            "portcullis admin: listening on https://{}",
            server.local_addr()
        );
        server.run(shutdown_signal()).await
    })
}

fn check(path: &std::path::Path) -> Result<(), AdminError> {
    let config = AdminConfig::load(path)?;
    let ca = CaConfig::load(&config.ca)?;
    config
        .check_operators(&ca.profiles()?)
        .map_err(|detail| AdminError::Config {
            path: path.display().to_string(),
            detail,
        })?;
    if let Some(policies) = &config.policies {
        // The platform's gateway config must pass the gateway's own check as it stands.
        crate::policies::Platform::load(&policies.gateway_config).map_err(|detail| {
            AdminError::Config {
                path: path.display().to_string(),
                detail: format!("policies.gateway_config: {detail}"),
            }
        })?;
    }
    println!(
        "{}: ok ({} operator(s), {} role binding(s); CA configuration {})",
        path.display(),
        config.operators.len(),
        config.roles.len(),
        config.ca.display()
    );
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; SIGINT only");
            let _ = ctrl_c.await;
            return;
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term.recv() => {},
    }
    tracing::info!("admin API: shutting down");
}

fn token_create(
    ca_config: &std::path::Path,
    tenant: TenantId,
    spiffe_id: Option<String>,
    ttl: Duration,
    audit: Option<&AuditHandle>,
) -> Result<(), AdminError> {
    let config = CaConfig::load(ca_config)?;
    if !config.profiles.iter().any(|p| p.tenant == tenant) {
        return Err(AdminError::Invalid(format!(
            "tenant {tenant}: no issuance profile in {}; a token for it could obtain nothing",
            ca_config.display()
        )));
    }
    let store = SqliteTokenStore::in_state_dir(&config.state_dir)?;
    let (token, grant) = create_token(&store, tenant, spiffe_id, ttl, None, SystemTime::now())?;
    if let Some(audit) = audit {
        if let Err(e) = audit.try_append(AdminAction {
            actor: "cli".to_owned(),
            action: "token.create".to_owned(),
            target: Some(grant.id.to_string()),
            tenant: Some(grant.tenant.to_string()),
            outcome: "ok".to_owned(),
            role: None,
        }) {
            tracing::warn!(error = %e, "audit record dropped");
        }
    }
    eprintln!(
        "bootstrap token {} for tenant {}{}, valid until {} (shown once; store it now):",
        grant.id,
        grant.tenant,
        grant
            .spiffe_id
            .as_deref()
            .map(|s| format!(", bound to {s}"))
            .unwrap_or_default(),
        humantime::format_rfc3339_seconds(grant.expires_at)
    );
    println!("{}", token.expose());
    Ok(())
}

fn eab_create(
    ca_config: &std::path::Path,
    admin_config: Option<&std::path::Path>,
    tenant: &TenantId,
    profile: &str,
    ttl: Duration,
    audit: Option<&AuditHandle>,
) -> Result<(), AdminError> {
    let config = CaConfig::load(ca_config)?;
    let profiles = config.profiles()?;
    let Some(found) = profiles
        .iter()
        .find(|p| p.tenant == *tenant && p.name == profile)
    else {
        return Err(AdminError::Invalid(format!(
            "tenant {tenant} has no profile {profile:?} in {}",
            ca_config.display()
        )));
    };
    if found.dns_names.is_empty() || found.require_spiffe_id {
        return Err(AdminError::Invalid(format!(
            "profile {profile:?} issues no DNS-only certificate (it needs dns_names and \
             require_spiffe_id: false); an ACME account under it could obtain nothing"
        )));
    }
    if found.approval.is_some() {
        return Err(AdminError::Invalid(format!(
            "profile {profile:?} requires approval (approval.required), which ACME issuance \
             cannot wait for"
        )));
    }
    if ttl.is_zero() || ttl > MAX_TOKEN_TTL {
        return Err(AdminError::Invalid(format!(
            "EAB key lifetime {}: must be positive and at most {}",
            humantime::format_duration(ttl),
            humantime::format_duration(MAX_TOKEN_TTL)
        )));
    }
    let postgres = match admin_config {
        Some(path) => AdminConfig::load(path)?.store.postgres,
        None => None,
    };
    let store = match postgres {
        Some(pg) => AcmeStore::postgres(&PgStore::open(&pg)?, &config.state_dir)?,
        None => AcmeStore::in_state_dir(&config.state_dir)?,
    };
    let cred = store.create_eab(tenant, profile, ttl, SystemTime::now())?;
    if let Some(audit) = audit {
        if let Err(e) = audit.try_append(AdminAction {
            actor: "cli".to_owned(),
            action: "acme.eab.create".to_owned(),
            target: Some(cred.kid.clone()),
            tenant: Some(tenant.to_string()),
            outcome: "ok".to_owned(),
            role: None,
        }) {
            tracing::warn!(error = %e, "audit record dropped");
        }
    }
    eprintln!(
        "ACME EAB key for tenant {tenant}, profile {profile}, binds one account until {} \
         (HMAC key shown once; store it now):",
        humantime::format_rfc3339_seconds(cred.expires_at)
    );
    println!("kid: {}", cred.kid);
    println!("hmac: {}", cred.expose_hmac());
    Ok(())
}
