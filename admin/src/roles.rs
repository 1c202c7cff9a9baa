//! Who may do what on the admin API: roles bound to callers' SPIFFE IDs, per tenant or
//! platform-wide, and the permission each endpoint declares.
//!
//! ```yaml
//! roles:
//!   - role: tenant_admin            # platform_admin | tenant_admin | policy_editor |
//!     tenant: acme                  #   certificate_issuer | auditor | read_only
//!     spiffe_ids: ["spiffe://acme.example/people/*"]
//!   - role: auditor                 # no tenant: every tenant (operator certificates only)
//!     spiffe_ids: ["spiffe://ops.example/portcullis/operator/*"]
//! ```
//!
//! A binding is honoured only for a certificate the CA's inventory holds as valid and whose
//! issuing profile could stand for it: a tenant binding needs a certificate of that tenant (or
//! an operator's), a platform-wide binding an operator profile's certificate (so no tenant's
//! profile can mint a platform role). The listed `operators` are platform admins.
//!
//! Scope is answered as existence: an object of a tenant the caller holds no role in is "not
//! found" (404), whatever the permission; a role in the tenant without the permission is 403.

use portcullis_ca::{CertRecord, IssuanceProfile, ProfileRole, TenantId};
use portcullis_identity::{PeerIdentity, SpiffeIdPattern};
use serde::{Deserialize, Serialize};

/// A role, as written in `roles:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything, on every tenant (platform-wide only).
    PlatformAdmin,
    /// Everything on its tenant: policies (activation and approval included), certificates.
    TenantAdmin,
    /// Upload and analyse policies; not activate them.
    PolicyEditor,
    /// List and revoke certificates, approve or reject issuances that wait for approval;
    /// create, list and revoke bootstrap tokens.
    CertificateIssuer,
    /// Read policies, their history and impact, the inventory, webhook subscriptions and
    /// deliveries.
    Auditor,
    /// Read policies and the inventory.
    ReadOnly,
}

impl Role {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Role::PlatformAdmin => "platform_admin",
            Role::TenantAdmin => "tenant_admin",
            Role::PolicyEditor => "policy_editor",
            Role::CertificateIssuer => "certificate_issuer",
            Role::Auditor => "auditor",
            Role::ReadOnly => "read_only",
        }
    }

    /// Whether the role carries the permission.
    pub(crate) fn grants(self, permission: Permission) -> bool {
        use Permission::*;
        match self {
            Role::PlatformAdmin | Role::TenantAdmin => true,
            Role::PolicyEditor => matches!(permission, PolicyRead | PolicyWrite | PolicyAnalyse),
            Role::CertificateIssuer => {
                matches!(
                    permission,
                    CertificateRead | CertificateRevoke | CertificateApprove | TokenManage
                )
            }
            Role::Auditor => matches!(
                permission,
                PolicyRead | PolicyAnalyse | CertificateRead | WebhookRead
            ),
            Role::ReadOnly => matches!(permission, PolicyRead | CertificateRead),
        }
    }
}

/// What an endpoint needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Permission {
    /// Policy versions, their text, diffs and activation history.
    PolicyRead,
    /// Upload a policy version.
    PolicyWrite,
    /// Replay recorded traffic against a version.
    PolicyAnalyse,
    /// Activate, approve, reject, roll back.
    PolicyActivate,
    /// The certificate inventory.
    CertificateRead,
    /// Revoke certificates.
    CertificateRevoke,
    /// Approve or reject an issuance that waits for approval.
    CertificateApprove,
    /// Create and revoke bootstrap tokens.
    TokenManage,
    /// Webhook subscriptions and their deliveries.
    WebhookRead,
    /// Subscribe, unsubscribe, send a dead letter again.
    WebhookManage,
}

/// One entry of `roles:`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RoleBinding {
    pub role: Role,
    /// The tenant the role is held in; absent: every tenant (callers with an operator
    /// profile's certificate only).
    #[serde(default)]
    pub tenant: Option<TenantId>,
    /// Callers' SPIFFE IDs: `*` one path segment, a final `**` one or more.
    #[serde(default)]
    pub spiffe_ids: Vec<SpiffeIdPattern>,
    /// People, by their identity provider's subjects or groups (`people.rs`).
    #[serde(default)]
    pub people: Option<crate::people::PeopleBinding>,
}

/// Checks `roles:`: every binding names a caller, `platform_admin` is platform-wide, people
/// come from a listed provider.
pub(crate) fn check_bindings(bindings: &[RoleBinding], providers: &[&str]) -> Result<(), String> {
    for (i, b) in bindings.iter().enumerate() {
        let people = b.people.as_ref();
        if b.spiffe_ids.is_empty()
            && people.is_none_or(|p| p.subjects.is_empty() && p.groups.is_empty())
        {
            return Err(format!(
                "roles[{i}] ({}): give at least one SPIFFE ID pattern, or people's subjects or \
                 groups",
                b.role.as_str()
            ));
        }
        if let Some(p) = people {
            if !providers.contains(&p.provider.as_str()) {
                return Err(format!(
                    "roles[{i}]: people.provider {:?} is not in identity_providers",
                    p.provider
                ));
            }
        }
        if b.role == Role::PlatformAdmin && b.tenant.is_some() {
            return Err(format!(
                "roles[{i}]: platform_admin is platform-wide; for one tenant use tenant_admin"
            ));
        }
    }
    Ok(())
}

/// Where a grant holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Scope {
    Platform,
    Tenant(TenantId),
}

/// A caller's roles, resolved once per request from its verified certificate.
#[derive(Debug, Clone, Default)]
pub(crate) struct Caller {
    grants: Vec<(Scope, Role)>,
    /// A person whose token shows no second factor, where writes need one.
    lacks_mfa: bool,
}

impl Caller {
    /// The roles of the caller whose certificate the inventory holds as `record` (valid).
    pub(crate) fn resolve(
        bindings: &[RoleBinding],
        is_operator: bool,
        profiles: &[IssuanceProfile],
        peer: &PeerIdentity,
        record: &CertRecord,
    ) -> Caller {
        let mut grants = Vec::new();
        if is_operator {
            grants.push((Scope::Platform, Role::PlatformAdmin));
        }
        let operator_profile = record.serial == peer.serial
            && profiles
                .iter()
                .any(|p| p.name == record.profile && p.role == ProfileRole::Operator);
        if let Some(id) = &peer.spiffe_id {
            for b in bindings {
                if !b.spiffe_ids.iter().any(|p| p.matches(id)) {
                    continue;
                }
                let scope = match &b.tenant {
                    None if operator_profile => Scope::Platform,
                    Some(t) if operator_profile || record.tenant == *t => Scope::Tenant(t.clone()),
                    _ => continue,
                };
                grants.push((scope, b.role));
            }
        }
        Caller {
            grants,
            lacks_mfa: false,
        }
    }

    /// The roles bound to a person (by provider, subject or group). The identity provider
    /// vouches for the person: tenant and platform bindings alike are honoured.
    pub(crate) fn for_person(
        bindings: &[RoleBinding],
        person: &crate::people::Person,
        mfa_for_writes: bool,
    ) -> Caller {
        let grants = bindings
            .iter()
            .filter(|b| b.people.as_ref().is_some_and(|p| p.matches(person)))
            .map(|b| {
                let scope = match &b.tenant {
                    Some(t) => Scope::Tenant(t.clone()),
                    None => Scope::Platform,
                };
                (scope, b.role)
            })
            .collect();
        Caller {
            grants,
            lacks_mfa: mfa_for_writes && !person.has_mfa(),
        }
    }

    /// Whether writes must be refused for want of a second factor.
    pub(crate) fn lacks_mfa(&self) -> bool {
        self.lacks_mfa
    }

    /// Whether the caller holds any role in `tenant` (else its objects do not exist for it).
    pub(crate) fn sees(&self, tenant: &TenantId) -> bool {
        self.grants.iter().any(|(s, _)| covers(s, tenant))
    }

    /// The role that gives `permission` on `tenant`, if any.
    pub(crate) fn role_for(&self, permission: Permission, tenant: &TenantId) -> Option<Role> {
        self.grants
            .iter()
            .find(|(s, r)| covers(s, tenant) && r.grants(permission))
            .map(|(_, r)| *r)
    }

    /// Whether the caller holds `permission` platform-wide.
    pub(crate) fn platform_role_for(&self, permission: Permission) -> Option<Role> {
        self.grants
            .iter()
            .find(|(s, r)| *s == Scope::Platform && r.grants(permission))
            .map(|(_, r)| *r)
    }

    /// The tenants in which the caller holds `permission` (for listings), or `None` for all.
    pub(crate) fn tenants_for(&self, permission: Permission) -> Option<Vec<TenantId>> {
        if self.platform_role_for(permission).is_some() {
            return None;
        }
        let mut tenants: Vec<TenantId> = self
            .grants
            .iter()
            .filter(|(_, r)| r.grants(permission))
            .filter_map(|(s, _)| match s {
                Scope::Tenant(t) => Some(t.clone()),
                Scope::Platform => None,
            })
            .collect();
        tenants.sort();
        tenants.dedup();
        Some(tenants)
    }

    /// Whether the caller has any role at all.
    pub(crate) fn has_any_role(&self) -> bool {
        !self.grants.is_empty()
    }
}

impl Permission {
    /// Whether the permission changes something (people need a second factor for it when
    /// `mfa_for_writes` is set).
    pub(crate) fn writes(self) -> bool {
        use Permission::*;
        matches!(
            self,
            PolicyWrite
                | PolicyActivate
                | CertificateRevoke
                | CertificateApprove
                | TokenManage
                | WebhookManage
        )
    }
}

fn covers(scope: &Scope, tenant: &TenantId) -> bool {
    match scope {
        Scope::Platform => true,
        Scope::Tenant(t) => t == tenant,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_role_grants_what_the_table_says() {
        use Permission::*;
        let all = [
            PolicyRead,
            PolicyWrite,
            PolicyAnalyse,
            PolicyActivate,
            CertificateRead,
            CertificateRevoke,
            CertificateApprove,
            TokenManage,
        ];
        let table: [(Role, &[Permission]); 6] = [
            (Role::PlatformAdmin, &all),
            (Role::TenantAdmin, &all),
            (
                Role::PolicyEditor,
                &[PolicyRead, PolicyWrite, PolicyAnalyse],
            ),
            (
                Role::CertificateIssuer,
                &[
                    CertificateRead,
                    CertificateRevoke,
                    CertificateApprove,
                    TokenManage,
                ],
            ),
            (Role::Auditor, &[PolicyRead, PolicyAnalyse, CertificateRead]),
            (Role::ReadOnly, &[PolicyRead, CertificateRead]),
        ];
        for (role, granted) in table {
            for p in all {
                assert_eq!(role.grants(p), granted.contains(&p), "{role:?} {p:?}");
            }
        }
    }

    #[test]
    fn bindings_are_checked() {
        let yaml =
            "- role: platform_admin\n  tenant: acme\n  spiffe_ids: [\"spiffe://a.example/x\"]\n";
        let b: Vec<RoleBinding> = serde_yaml_ng::from_str(yaml).unwrap();
        assert!(check_bindings(&b, &[])
            .unwrap_err()
            .contains("platform-wide"));
        let b: Vec<RoleBinding> =
            serde_yaml_ng::from_str("- role: auditor\n  spiffe_ids: []\n").unwrap();
        assert!(check_bindings(&b, &[])
            .unwrap_err()
            .contains("at least one"));
        let b: Vec<RoleBinding> =
            serde_yaml_ng::from_str("- role: auditor\n  people: { provider: corp, groups: [g] }\n")
                .unwrap();
        assert!(check_bindings(&b, &[])
            .unwrap_err()
            .contains("identity_providers"));
        assert!(check_bindings(&b, &["corp"]).is_ok());
        assert!(serde_yaml_ng::from_str::<Vec<RoleBinding>>(
            "- role: superuser\n  spiffe_ids: [\"spiffe://a.example/x\"]\n"
        )
        .is_err());
    }
}
