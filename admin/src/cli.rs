//! `portcullis admin …`: serve the admin API, check its configuration, create bootstrap tokens.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use clap::Subcommand;
use portcullis_audit::{AdminAction, AuditHandle};
use portcullis_ca::{CaConfig, TenantId};

use crate::config::AdminConfig;
use crate::error::AdminError;
use crate::server::AdminServer;
use crate::token::{create_token, SqliteTokenStore};

/// The `admin` subcommands.
#[derive(Debug, Subcommand)]
#[non_exhaustive]
pub enum AdminCommand {
    /// Serve the admin API (HTTPS) until SIGINT or SIGTERM.
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
    match cmd {
        AdminCommand::Serve { config } => serve(&config, audit),
        AdminCommand::Check { config } => check(&config),
        AdminCommand::Token(TokenCommand::Create {
            ca_config,
            tenant,
            spiffe_id,
            ttl,
        }) => token_create(&ca_config, tenant, spiffe_id, ttl, audit.as_ref()),
    }
}

fn serve(path: &std::path::Path, audit: Option<AuditHandle>) -> Result<(), AdminError> {
    let config = AdminConfig::load(path)?;
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
    println!(
        "{}: ok ({} operator(s); CA configuration {})",
        path.display(),
        config.operators.len(),
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
    let (token, grant) = create_token(&store, tenant, spiffe_id, ttl, SystemTime::now())?;
    if let Some(audit) = audit {
        if let Err(e) = audit.try_append(AdminAction {
            actor: "cli".to_owned(),
            action: "token.create".to_owned(),
            target: Some(grant.id.to_string()),
            tenant: Some(grant.tenant.to_string()),
            outcome: "ok".to_owned(),
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
