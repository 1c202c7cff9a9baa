//! The subcommands of `portcullis admin` that call one operation of a running admin API each
//! (`calls.rs` makes the request and shows the answer).

use std::path::PathBuf;

use clap::{Args, Subcommand};
use portcullis_ca::TenantId;

use super::client::ApiConnection;

/// Where the API is, who calls it, and how answers print.
#[derive(Debug, Clone, Args)]
pub struct ApiCall {
    #[command(flatten)]
    pub api: ApiConnection,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `admin policies …`: a tenant's policy versions.
#[derive(Debug, Subcommand)]
#[non_exhaustive]
pub enum PolicyCommand {
    /// Upload a new version (the YAML the gateway reads for the tenant).
    Upload {
        #[command(flatten)]
        call: ApiCall,
        /// The tenant.
        #[arg(long)]
        tenant: TenantId,
        /// The policy file.
        file: PathBuf,
        /// What the change is for.
        #[arg(long)]
        comment: Option<String>,
    },
    /// List the versions, the active one marked.
    List {
        #[command(flatten)]
        call: ApiCall,
        /// The tenant.
        #[arg(long)]
        tenant: TenantId,
    },
    /// Show a version against another (the active one by default).
    Diff {
        #[command(flatten)]
        call: ApiCall,
        /// The tenant.
        #[arg(long)]
        tenant: TenantId,
        /// The version number.
        version: u64,
        /// A version number (default: the active one).
        #[arg(long)]
        against: Option<u64>,
    },
    /// Replay recorded traffic against a version: which requests would change decision.
    Impact {
        #[command(flatten)]
        call: ApiCall,
        /// The tenant.
        #[arg(long)]
        tenant: TenantId,
        /// The version number.
        version: u64,
        /// How far back (default 24h, at most 30d).
        #[arg(long)]
        window: Option<String>,
    },
    /// Activate a version (or ask for approval, when activation needs a second person).
    Activate {
        #[command(flatten)]
        call: ApiCall,
        /// The tenant.
        #[arg(long)]
        tenant: TenantId,
        /// The version number.
        version: u64,
        /// Why (recorded in the history).
        #[arg(long)]
        reason: String,
    },
    /// List approval requests.
    Approvals {
        #[command(flatten)]
        call: ApiCall,
        /// The tenant.
        #[arg(long)]
        tenant: TenantId,
    },
    /// Approve a request (activating its version); never by who asked.
    Approve {
        #[command(flatten)]
        call: ApiCall,
        /// The tenant.
        #[arg(long)]
        tenant: TenantId,
        /// The approval request's id.
        id: u64,
    },
    /// Reject a request.
    Reject {
        #[command(flatten)]
        call: ApiCall,
        /// The tenant.
        #[arg(long)]
        tenant: TenantId,
        /// The approval request's id.
        id: u64,
    },
    /// Activate an earlier version again (the one active before by default).
    Rollback {
        #[command(flatten)]
        call: ApiCall,
        /// The tenant.
        #[arg(long)]
        tenant: TenantId,
        /// Why (recorded in the history).
        #[arg(long)]
        reason: String,
        /// The version to go back to.
        #[arg(long)]
        to_version: Option<u64>,
    },
    /// Who changed the policy, when and why.
    History {
        #[command(flatten)]
        call: ApiCall,
        /// The tenant.
        #[arg(long)]
        tenant: TenantId,
    },
}

/// `admin tokens …`: a tenant's bootstrap tokens through the API.
#[derive(Debug, Subcommand)]
#[non_exhaustive]
pub enum TokensCommand {
    /// Create a token (its secret printed once).
    Create {
        #[command(flatten)]
        call: ApiCall,
        /// The tenant.
        #[arg(long)]
        tenant: TenantId,
        /// Bind the token to this SPIFFE ID.
        #[arg(long)]
        spiffe_id: Option<String>,
        /// How long it stays usable (default 1h).
        #[arg(long)]
        ttl: Option<String>,
    },
    /// List tokens (never their secrets).
    List {
        #[command(flatten)]
        call: ApiCall,
        /// The tenant.
        #[arg(long)]
        tenant: TenantId,
    },
    /// Revoke a token.
    Revoke {
        #[command(flatten)]
        call: ApiCall,
        /// The tenant.
        #[arg(long)]
        tenant: TenantId,
        /// Its id.
        id: String,
    },
}

/// `admin pending …`: a tenant's issuances waiting for approval.
#[derive(Debug, Subcommand)]
#[non_exhaustive]
pub enum PendingCommand {
    /// List requests, newest first (waiting, and lately decided or expired).
    List {
        #[command(flatten)]
        call: ApiCall,
        /// The tenant.
        #[arg(long)]
        tenant: TenantId,
    },
    /// Approve a request: the CA signs its certificate now; never by who asked.
    Approve {
        #[command(flatten)]
        call: ApiCall,
        /// The tenant.
        #[arg(long)]
        tenant: TenantId,
        /// The request's id.
        id: String,
    },
    /// Reject a request (the requester's poll shows the reason).
    Reject {
        #[command(flatten)]
        call: ApiCall,
        /// The tenant.
        #[arg(long)]
        tenant: TenantId,
        /// The request's id.
        id: String,
        /// Why.
        #[arg(long)]
        reason: String,
    },
}

/// `admin webhooks …`: a tenant's webhook subscriptions and deliveries.
#[derive(Debug, Subcommand)]
#[non_exhaustive]
pub enum WebhookCommand {
    /// Subscribe a URL to events (the signing secret printed once).
    Create {
        #[command(flatten)]
        call: ApiCall,
        /// The tenant.
        #[arg(long)]
        tenant: TenantId,
        /// Where deliveries go.
        #[arg(long)]
        url: String,
        /// An event to deliver (repeat for more).
        #[arg(long = "event", required = true)]
        events: Vec<String>,
        /// For people reading the list (at most 200 characters).
        #[arg(long)]
        description: Option<String>,
    },
    /// List subscriptions.
    List {
        #[command(flatten)]
        call: ApiCall,
        /// The tenant.
        #[arg(long)]
        tenant: TenantId,
    },
    /// Remove a subscription.
    Delete {
        #[command(flatten)]
        call: ApiCall,
        /// The tenant.
        #[arg(long)]
        tenant: TenantId,
        /// Its id.
        id: String,
    },
    /// List deliveries, newest first.
    Deliveries {
        #[command(flatten)]
        call: ApiCall,
        /// The tenant.
        #[arg(long)]
        tenant: TenantId,
        /// `pending`, `delivered` or `dead`.
        #[arg(long)]
        status: Option<String>,
        /// At most this many (default 100, at most 1000).
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Send a dead letter again.
    Retry {
        #[command(flatten)]
        call: ApiCall,
        /// The tenant.
        #[arg(long)]
        tenant: TenantId,
        /// Its id.
        id: String,
    },
}
