//! Tenants' policies as versioned objects: uploaded (checked with the gateway's own code),
//! listed, compared, analysed against recorded traffic, activated (with a second person's
//! approval when configured) and rolled back, every step in the history.
//!
//! ```yaml
//! policies:
//!   gateway_config: gateway.yaml    # the platform's gateway config: listeners, upstreams, and
//!                                   # each tenant's policy until one of its versions is active
//!   approval: { required: true, expire_after: 24h }
//!   traffic: [/var/lib/portcullis/audit]   # audit log folders impact analysis replays
//! ```
//!
//! A policy document is the gateway config's `tenants:` with the one tenant it is for.

mod check;
mod impact;
pub(crate) mod reports;
mod store;
pub(crate) mod traffic;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use portcullis_audit::{publish_public_key, Signer, SoftwareSigner};
use portcullis_ca::TenantId;
#[cfg(feature = "schema")]
use portcullis_identity::schema::HumanDuration;
use portcullis_identity::{PolicyBundle, SignedPolicyBundle, TenantPolicy, POLICY_BUNDLE_FORMAT};
use serde::{Deserialize, Serialize};

use crate::persons::Persons;
use crate::store::PgStore;

pub(crate) use check::{Platform, Problem};
pub(crate) use impact::ImpactReport;
#[cfg(test)]
pub(crate) use store::tests as store_tests;
pub use store::POLICY_DB;
pub(crate) use store::{
    Approval, ApprovalStatus, Change, HistoryEvent, PolicyStore, SqlitePolicyStore, StoreError,
    VersionInfo,
};

/// The `policies:` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct PoliciesConfig {
    /// The platform's gateway config (relative: against the admin config's folder).
    pub gateway_config: PathBuf,
    /// Whether activating a version needs a second person.
    #[serde(default)]
    pub approval: ApprovalConfig,
    /// Audit log folders whose request records impact analysis replays.
    #[serde(default)]
    pub traffic: Vec<PathBuf>,
    /// The SQLite file holding versions, activations and approvals (default
    /// `STATE/policies.sqlite3`, beside the CA's inventory).
    #[serde(default)]
    pub database: Option<PathBuf>,
    /// The Ed25519 key (PKCS#8, 0600) that signs the bundle gateways follow, created when
    /// missing (default `STATE/policy-signing.key`); its public half is written beside it with
    /// `.pub` for the gateways' `policy_source.public_key`.
    #[serde(default)]
    pub signing_key: Option<PathBuf>,
    /// Or a P-256 key in a PKCS#11 token (generated there, non-extractable, the first time);
    /// its public half is written to `STATE/policy-signing.pub`. Not with `signing_key`.
    #[serde(default)]
    pub signing_pkcs11: Option<PolicyKeyInToken>,
    /// Callers' SPIFFE IDs that may fetch the bundle (the gateways); platform roles may too.
    #[serde(default)]
    pub gateways: Vec<portcullis_identity::SpiffeIdPattern>,
}

/// The policy signing key in an HSM. The PIN comes from `pin_file` or `pin_env`, exactly one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct PolicyKeyInToken {
    /// The module (default SoftHSM2's).
    #[serde(default)]
    pub module: Option<PathBuf>,
    pub token_label: String,
    pub key_label: String,
    #[serde(default)]
    pub pin_file: Option<PathBuf>,
    #[serde(default)]
    pub pin_env: Option<String>,
}

impl PolicyKeyInToken {
    fn pin(&self) -> Result<portcullis_ca::PinSource, String> {
        portcullis_ca::PinSource::one_of(self.pin_file.as_deref(), self.pin_env.as_deref())
            .ok_or_else(|| {
                "policies.signing_pkcs11: set exactly one of pin_file and pin_env".to_owned()
            })
    }
}

/// Two-person activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
pub struct ApprovalConfig {
    /// Activation waits for another person with the activate permission (default false).
    pub required: bool,
    /// A pending request lapses after this long (default 24h).
    #[serde(with = "humantime_serde")]
    #[cfg_attr(feature = "schema", schemars(with = "HumanDuration"))]
    pub expire_after: Duration,
}

impl Default for ApprovalConfig {
    fn default() -> Self {
        Self {
            required: false,
            expire_after: Duration::from_secs(24 * 3600),
        }
    }
}

impl PoliciesConfig {
    pub(crate) fn resolve(&mut self, base: &Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        resolve(&mut self.gateway_config);
        self.traffic.iter_mut().for_each(resolve);
        if let Some(db) = &mut self.database {
            resolve(db);
        }
        if let Some(key) = &mut self.signing_key {
            resolve(key);
        }
        if let Some(token) = &mut self.signing_pkcs11 {
            token.pin_file.iter_mut().for_each(resolve);
        }
    }

    pub(crate) fn check(&self) -> Result<(), String> {
        if self.approval.expire_after < Duration::from_secs(60)
            || self.approval.expire_after > Duration::from_secs(30 * 24 * 3600)
        {
            return Err("policies.approval.expire_after must be within 1m..30d".to_owned());
        }
        if let Some(token) = &self.signing_pkcs11 {
            if self.signing_key.is_some() {
                return Err(
                    "policies: give at most one of `signing_key` (a key file) and `signing_pkcs11`"
                        .to_owned(),
                );
            }
            token.pin()?;
        }
        Ok(())
    }
}

/// Why an upload or activation was refused.
#[derive(Debug)]
pub(crate) enum PolicyError {
    /// The document does not pass the gateway's checks (with line numbers where they apply).
    Invalid(Vec<Problem>),
    Store(StoreError),
    /// The recorded traffic could not be read (detail in the server log).
    Traffic,
}

impl From<StoreError> for PolicyError {
    fn from(e: StoreError) -> Self {
        PolicyError::Store(e)
    }
}

/// What an activation did.
#[derive(Debug, Serialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub(crate) enum Activation {
    Activated { event: HistoryEvent },
    PendingApproval { approval: Approval },
}

/// The key that signs the bundles, and where its public half goes for the gateways: a key file
/// (created when missing) or a key in a PKCS#11 token.
fn policy_signer(
    config: &PoliciesConfig,
    state_dir: &Path,
) -> Result<(Arc<dyn Signer>, PathBuf), String> {
    if let Some(token) = &config.signing_pkcs11 {
        let module = token
            .module
            .as_deref()
            .unwrap_or(Path::new(portcullis_ca::DEFAULT_PKCS11_MODULE));
        let signer = portcullis_ca::token_signer(
            module,
            &token.token_label,
            &token.pin()?,
            &token.key_label,
            "policy signing key",
        )?;
        return Ok((signer, state_dir.join("policy-signing.pub")));
    }
    let key = config
        .signing_key
        .clone()
        .unwrap_or_else(|| state_dir.join("policy-signing.key"));
    let signer = SoftwareSigner::load_or_create(&key)
        .map_err(|e| format!("policies.signing_key {}: {e}", key.display()))?;
    Ok((Arc::new(signer), key.with_extension("pub")))
}

/// The service behind the policy endpoints.
pub(crate) struct Policies {
    store: Arc<dyn PolicyStore>,
    platform: Platform,
    pub(crate) approval: ApprovalConfig,
    traffic: Vec<PathBuf>,
    signer: Arc<dyn Signer>,
    /// Who may fetch the bundle.
    pub(crate) gateways: Vec<portcullis_identity::SpiffeIdPattern>,
}

impl std::fmt::Debug for Policies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policies")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl Policies {
    /// Opens the store (SQLite in the state directory, or the shared PostgreSQL database with
    /// `store.postgres`) and reads the platform's gateway config. With PostgreSQL, every node
    /// must sign with one key: the first to start stores its public half, and a node whose key
    /// differs is refused.
    pub(crate) fn open(
        config: &PoliciesConfig,
        state_dir: &Path,
        postgres: Option<&PgStore>,
    ) -> Result<Self, String> {
        let platform = Platform::load(&config.gateway_config)?;
        let (signer, public) = policy_signer(config, state_dir)?;
        let store: Arc<dyn PolicyStore> = match postgres {
            Some(pg) => {
                pg.agree_on_policy_key(&signer.public_key_der(), SystemTime::now())?;
                Arc::new(pg.policies())
            }
            None => {
                let db = config
                    .database
                    .clone()
                    .unwrap_or_else(|| state_dir.join(POLICY_DB));
                Arc::new(SqlitePolicyStore::open(&db).map_err(|e| e.to_string())?)
            }
        };
        publish_public_key(&*signer, &public)
            .map_err(|e| format!("policy signing key {}: {e}", public.display()))?;
        Ok(Self {
            store,
            platform,
            approval: config.approval,
            traffic: config.traffic.clone(),
            signer,
            gateways: config.gateways.clone(),
        })
    }

    /// The serial the next bundle would carry: it grows with every activation or rollback.
    pub(crate) fn serial(&self) -> Result<u64, StoreError> {
        self.store.serial()
    }

    /// Every tenant's active version, signed for the gateways.
    pub(crate) fn bundle(&self, now: SystemTime) -> Result<SignedPolicyBundle, String> {
        let serial = self.store.serial().map_err(|e| e.to_string())?;
        let tenants = self
            .store
            .active()
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|(tenant, version, document)| TenantPolicy {
                tenant: tenant.to_string(),
                version,
                document,
            })
            .collect();
        let payload = serde_json::to_string(&PolicyBundle {
            serial,
            issued_at: humantime::format_rfc3339_seconds(now).to_string(),
            tenants,
        })
        .map_err(|e| e.to_string())?;
        let signature = self
            .signer
            .sign(payload.as_bytes())
            .map_err(|e| e.to_string())?;
        Ok(SignedPolicyBundle {
            format: POLICY_BUNDLE_FORMAT.to_owned(),
            payload,
            algorithm: self.signer.algorithm().name().to_owned(),
            key_id: portcullis_audit::key_id(&self.signer.public_key_der()),
            signature: base64::engine::general_purpose::STANDARD.encode(signature),
        })
    }

    /// Every tenant's active document.
    fn active_documents(&self) -> Result<Vec<(TenantId, String)>, StoreError> {
        Ok(self
            .store
            .active()?
            .into_iter()
            .map(|(t, _, text)| (t, text))
            .collect())
    }

    /// The tenant's active version number (0: the platform's own entry) and document (empty
    /// when the platform has no entry for it either).
    pub(crate) fn active(&self, tenant: &TenantId) -> Result<(u64, String), StoreError> {
        let found = self
            .store
            .active()?
            .into_iter()
            .find(|(t, _, _)| t == tenant);
        Ok(match found {
            Some((_, v, text)) => (v, text),
            None => (
                0,
                self.platform.initial_document(tenant).unwrap_or_default(),
            ),
        })
    }

    pub(crate) fn versions(&self, tenant: &TenantId) -> Result<Vec<VersionInfo>, StoreError> {
        self.store.versions(tenant)
    }

    /// Version `version`'s text; 0 is the platform's own entry.
    pub(crate) fn text(
        &self,
        tenant: &TenantId,
        version: u64,
    ) -> Result<Option<String>, StoreError> {
        if version == 0 {
            return Ok(self.platform.initial_document(tenant));
        }
        self.store.text(tenant, version)
    }

    /// Checks and stores a new version.
    pub(crate) fn upload(
        &self,
        tenant: &TenantId,
        text: &str,
        author: &str,
        comment: Option<&str>,
        now: SystemTime,
    ) -> Result<u64, PolicyError> {
        self.platform
            .check(tenant, text, &self.active_documents()?)
            .map_err(PolicyError::Invalid)?;
        let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
        Ok(self
            .store
            .add_version(tenant, text, &hex::encode(digest), author, comment, now)?)
    }

    /// Activates `version` (checked again beside the other tenants' current policies), or opens
    /// an approval request when approval is required.
    pub(crate) fn activate(
        &self,
        tenant: &TenantId,
        version: u64,
        actor: &str,
        reason: &str,
        now: SystemTime,
    ) -> Result<Activation, PolicyError> {
        self.recheck(tenant, version)?;
        if self.approval.required {
            let approval = self.store.request_approval(
                tenant,
                version,
                actor,
                reason,
                now,
                self.approval.expire_after,
            )?;
            return Ok(Activation::PendingApproval { approval });
        }
        let event = self
            .store
            .set_active(tenant, version, Change::Activate, actor, reason, now)?;
        Ok(Activation::Activated { event })
    }

    /// Approves (activating its version, checked again first) or rejects a pending request.
    pub(crate) fn decide(
        &self,
        tenant: &TenantId,
        id: u64,
        approver: &str,
        persons: &Persons,
        approve: bool,
        now: SystemTime,
    ) -> Result<Approval, PolicyError> {
        let pending = self.store.approvals(tenant, now)?;
        let request = pending
            .iter()
            .find(|a| a.id == id)
            .ok_or(StoreError::UnknownApproval)?;
        // The store refuses the requester's own identity; this, their other ones.
        if request.status == ApprovalStatus::Pending && persons.same(&request.requester, approver) {
            return Err(StoreError::SamePerson.into());
        }
        if approve {
            self.recheck(tenant, request.version)?;
        }
        Ok(self.store.decide(tenant, id, approver, approve, now)?)
    }

    /// Makes the version active before the current one (or `to`; 0 is the platform's own
    /// entry, what ran before any activation) active again, without approval: it was in
    /// service before.
    pub(crate) fn rollback(
        &self,
        tenant: &TenantId,
        to: Option<u64>,
        actor: &str,
        reason: &str,
        now: SystemTime,
    ) -> Result<HistoryEvent, PolicyError> {
        let (current, _) = self.active(tenant)?;
        let mut earlier: Vec<u64> = vec![0];
        earlier.extend(
            self.store
                .history(tenant)?
                .iter()
                .filter(|e| e.action == "activated" || e.action == "rolled_back")
                .map(|e| e.version),
        );
        let target = match to {
            Some(v) if earlier.contains(&v) => v,
            Some(_) => {
                return Err(PolicyError::Invalid(vec![Problem::message(
                    "a rollback goes to a version that was active before",
                )]))
            }
            None => match earlier.iter().rev().find(|v| **v != current) {
                Some(v) => *v,
                None => {
                    return Err(PolicyError::Invalid(vec![Problem::message(
                        "no earlier active version to roll back to",
                    )]))
                }
            },
        };
        self.recheck(tenant, target)?;
        Ok(self
            .store
            .set_active(tenant, target, Change::Rollback, actor, reason, now)?)
    }

    pub(crate) fn approvals(
        &self,
        tenant: &TenantId,
        now: SystemTime,
    ) -> Result<Vec<Approval>, StoreError> {
        self.store.approvals(tenant, now)
    }

    pub(crate) fn history(&self, tenant: &TenantId) -> Result<Vec<HistoryEvent>, StoreError> {
        self.store.history(tenant)
    }

    /// Replays recorded traffic of the last `window` against `version`.
    pub(crate) fn impact(
        &self,
        tenant: &TenantId,
        version: u64,
        window: Duration,
        now: SystemTime,
    ) -> Result<ImpactReport, PolicyError> {
        let text = self
            .text(tenant, version)?
            .ok_or(StoreError::UnknownVersion)?;
        let active = self.active_documents()?;
        let current = self.platform.fleet(&active).map_err(PolicyError::Invalid)?;
        let candidate = self
            .platform
            .check(tenant, &text, &active)
            .map_err(PolicyError::Invalid)?;
        impact::analyse(&self.traffic, tenant, &current, &candidate, window, now).map_err(|e| {
            tracing::error!(error = %e, "policy impact: reading recorded traffic failed");
            PolicyError::Traffic
        })
    }

    /// When and on what a report is computed.
    pub(crate) fn stamp(&self, now: SystemTime) -> Result<reports::Stamp, StoreError> {
        Ok(reports::Stamp {
            computed_at: humantime::format_rfc3339_seconds(now).to_string(),
            policy_serial: self.store.serial()?,
            audit_heads: reports::heads(&self.traffic),
        })
    }

    /// Who may reach which of the tenant's routes under the policy in effect.
    pub(crate) fn access_review(
        &self,
        tenant: &TenantId,
        now: SystemTime,
    ) -> Result<reports::AccessReview, PolicyError> {
        let fleet = self
            .platform
            .fleet(&self.active_documents()?)
            .map_err(PolicyError::Invalid)?;
        let (version, _) = self.active(tenant)?;
        Ok(reports::access_review(
            &fleet,
            tenant,
            version,
            self.stamp(now)?,
        ))
    }

    /// The tenant's recorded traffic over the last `window`, summed.
    pub(crate) fn audit_summary(
        &self,
        tenant: &TenantId,
        window: Duration,
        now: SystemTime,
    ) -> Result<reports::AuditSummary, PolicyError> {
        let stamp = self.stamp(now)?;
        reports::audit_summary(&self.traffic, tenant, window, now, stamp).map_err(|e| {
            tracing::error!(error = %e, "audit summary: reading recorded traffic failed");
            PolicyError::Traffic
        })
    }

    /// Checks a version again beside the other tenants' current policies.
    fn recheck(&self, tenant: &TenantId, version: u64) -> Result<(), PolicyError> {
        let active = self.active_documents()?;
        let checked = match self.text(tenant, version)? {
            Some(text) => self.platform.check(tenant, &text, &active),
            // Version 0 of a tenant the platform's config does not name: no routes at all.
            None if version == 0 => {
                let others: Vec<_> = active.into_iter().filter(|(t, _)| t != tenant).collect();
                self.platform.fleet(&others)
            }
            None => return Err(StoreError::UnknownVersion.into()),
        };
        checked.map(drop).map_err(PolicyError::Invalid)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::AdminConfig;

    const BASE: &str = "listen: 127.0.0.1:8443\nca: ca.yaml\ntls:\n  certificate: a.pem\n  private_key: a.key\npolicies:\n  gateway_config: gw.yaml\n";

    #[test]
    fn the_policy_key_is_a_file_or_in_a_token_never_both() {
        let load =
            |extra: &str| AdminConfig::from_yaml(&format!("{BASE}{extra}"), Path::new("/etc/p"));
        let token =
            "  signing_pkcs11: { token_label: admin, key_label: policy, pin_file: hsm.pin }\n";
        let c = load(token).unwrap();
        let key = c.policies.unwrap().signing_pkcs11.unwrap();
        assert_eq!(key.pin_file.as_deref(), Some(Path::new("/etc/p/hsm.pin")));

        let both = load(&format!("{token}  signing_key: policy.key\n")).unwrap_err();
        assert!(both.contains("at most one of `signing_key`"), "{both}");
        for pin in ["", ", pin_file: a, pin_env: B"] {
            let bad =
                format!("  signing_pkcs11: {{ token_label: admin, key_label: policy{pin} }}\n");
            let e = load(&bad).unwrap_err();
            assert!(e.contains("exactly one of pin_file and pin_env"), "{e}");
        }
        let inline =
            load("  signing_pkcs11: { token_label: admin, key_label: policy, pin: \"1234\" }\n")
                .unwrap_err();
        assert!(inline.contains("unknown field `pin`"), "{inline}");
    }
}
