//! The admin API of Portcullis: the CA's issuance endpoint over HTTPS, on its own listener.
//!
//! - [`AdminServer`]: axum over tokio-rustls, client certificates optional at the TLS layer and,
//!   when presented, verified against the CA's root and intermediate and refused when on the
//!   CA's current CRL ([`ClientTrust`], which re-reads `STATE/crl.pem` when it changes). The
//!   server's own certificate is issued by the CA at start and renewed at 2/3 of its lifetime.
//!   Connections are capped (in all, per source, and without a certificate, so that certified
//!   clients keep a share) and closed at their deadlines (handshake, first request, idle);
//!   requests are rate limited per source, identity and bootstrap token (429).
//! - Issuance (`POST /v1/certificates`): renewal with the current client certificate (same
//!   identity only), or a first certificate with a one-time, tenant-scoped, expiring bootstrap
//!   token ([`TokenStore`], stored hashed). Revocation, the CRL and the inventory listing.
//! - ACME (RFC 8555) under `/acme/` when `acme.enabled`: accounts bound to a tenant's profile
//!   by external account binding ([`AcmeStore`]), http-01, finalize through the CA, revocation.
//! - [`cli`]: `portcullis admin serve`, `portcullis admin token create` and
//!   `portcullis admin acme eab-create`.
//!
//! Errors a caller sees are `{"error": "<stable code>", "message": "<for humans>"}`; details go
//! to the log only.

// No unwrap/expect on anything a peer or an operator can influence; an expect that guards a
// true invariant is allowed where it stands, with the reason. Tests are exempt.
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

mod acme;
mod activation;
mod api;
pub mod cli;
mod config;
mod connections;
mod error;
mod fleet;
pub use fleet::cli_revocation_sink;
mod identity;
mod limits;
mod metrics;
mod pending;
pub use pending::PENDING_DB;
mod people;
mod persons;
mod policies;
mod revocation_http;
mod roles;
mod serde_time;
mod server;
mod stats;
mod store;
mod tls;
mod token;
mod webhooks;

pub use acme::{AcmeStore, EabCredential, ACME_DB};
pub use config::{
    AcmeConfig, AdminConfig, AgentConfig, AgentGrant, ConnectionsConfig, FleetConfig,
    FleetTlsConfig, RateLimit, RateLimitsConfig, SelfIssueConfig, ServingCertSource,
    ServingTlsConfig,
};
pub use error::AdminError;
pub use identity::PeerIdentity;
pub use people::{IdentityProviderConfig, PeopleBinding};
pub use policies::{ApprovalConfig, PoliciesConfig, POLICY_DB};
pub use roles::{Role, RoleBinding};
pub use server::AdminServer;
pub use stats::{
    ClosedConnections, IssuanceStats, OpenConnections, RateLimited, StatsSnapshot, WebhookOutcomes,
};
pub use store::{
    InlineSecret, PgInventory, PgStore, PgTokenStore, PostgresStoreConfig, PostgresTlsConfig,
    StoreConfig,
};
pub use tls::ClientTrust;
pub use token::{
    create_token, BootstrapToken, SqliteTokenStore, TokenGrant, TokenHash, TokenId, TokenInfo,
    TokenStore, MAX_TOKEN_TTL, TOKEN_DB,
};
pub use webhooks::{DlpSpikeConfig, WebhooksConfig, WEBHOOK_DB};
