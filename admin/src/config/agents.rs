//! Node agents (`portcullis agent`): callers that obtain X.509-SVIDs for the workloads on their
//! node, so for SPIFFE IDs other than their own. An agent is a caller authenticated by its client
//! certificate whose SPIFFE ID is listed here, with, per tenant, the SPIFFE ID patterns it may
//! ask for. Everything else about issuance (the tenant's profiles, lifetimes, audit) is the CA's.
//!
//! ```yaml
//! agents:
//!   - spiffe_id: spiffe://example.org/agent/node-1
//!     tenant: platform           # the tenant the agent's own certificate belongs to
//!     grants:
//!       - tenant: acme
//!         spiffe_ids: ["spiffe://example.org/ns/web/**"]
//! ```
//!
//! A grant may not reach an agent's or an operator's ID (an agent could otherwise mint itself
//! a wider role): refused at load.

use portcullis_ca::TenantId;
use portcullis_identity::{SpiffeId, SpiffeIdPattern};
use serde::{Deserialize, Serialize};

/// One node agent, as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The SPIFFE ID of the agent's own (node) certificate.
    pub spiffe_id: String,
    /// The tenant the agent's own certificate must belong to (as the CA's inventory says).
    pub tenant: TenantId,
    /// What it may ask for, per tenant.
    pub grants: Vec<AgentGrant>,
}

/// SPIFFE IDs of one tenant an agent may obtain SVIDs for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct AgentGrant {
    /// The tenant the SVIDs belong to.
    pub tenant: TenantId,
    /// `*` one path segment, a final `**` one or more.
    pub spiffe_ids: Vec<SpiffeIdPattern>,
}

/// The checked `agents:` section: who is an agent, and what each may ask for.
#[derive(Debug, Clone, Default)]
pub(crate) struct Agents {
    agents: Vec<(SpiffeId, AgentConfig)>,
}

/// Why an agent may not have what it asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AgentRefusal {
    /// The agent's certificate belongs to another tenant than its entry names.
    WrongTenant,
    /// No grant of the asked tenant has a pattern matching the asked ID.
    NotGranted,
}

impl Agents {
    /// Checks the section: IDs and patterns parse, no agent listed twice, no grant reaching an
    /// agent's or an operator's ID.
    pub(crate) fn check(configs: &[AgentConfig], operators: &[String]) -> Result<Self, String> {
        let mut agents: Vec<(SpiffeId, AgentConfig)> = Vec::new();
        for a in configs {
            let id: SpiffeId = a
                .spiffe_id
                .parse()
                .map_err(|e| format!("agents: {:?} is not a SPIFFE ID: {e}", a.spiffe_id))?;
            if agents.iter().any(|(other, _)| *other == id) {
                return Err(format!("agents: {id} is listed twice"));
            }
            if a.grants.is_empty() || a.grants.iter().any(|g| g.spiffe_ids.is_empty()) {
                return Err(format!(
                    "agents: {id}: give at least one grant, each with at least one SPIFFE ID \
                     pattern"
                ));
            }
            agents.push((id, a.clone()));
        }
        let protected = agents
            .iter()
            .map(|(id, _)| (id.clone(), "agent"))
            .chain(
                operators
                    .iter()
                    .filter_map(|op| Some((op.parse::<SpiffeId>().ok()?, "operator"))),
            )
            .collect::<Vec<_>>();
        for (id, a) in &agents {
            for g in &a.grants {
                for pattern in &g.spiffe_ids {
                    if let Some((reached, role)) =
                        protected.iter().find(|(p, _)| pattern.matches(p))
                    {
                        return Err(format!(
                            "agents: {id}: pattern {pattern} (tenant {}) matches the {role} \
                             {reached}; an agent must not obtain an agent's or an operator's \
                             identity",
                            g.tenant
                        ));
                    }
                }
            }
        }
        Ok(Self { agents })
    }

    /// Whether a caller with this SPIFFE ID is a listed agent.
    pub(crate) fn is_agent(&self, id: &SpiffeId) -> bool {
        self.agents.iter().any(|(a, _)| a == id)
    }

    /// Decides whether agent `agent`, whose certificate belongs to `own_tenant`, may obtain
    /// `requested` for `tenant`.
    pub(crate) fn authorize(
        &self,
        agent: &SpiffeId,
        own_tenant: &TenantId,
        tenant: &TenantId,
        requested: &SpiffeId,
    ) -> Result<(), AgentRefusal> {
        let Some((_, config)) = self.agents.iter().find(|(a, _)| a == agent) else {
            return Err(AgentRefusal::NotGranted);
        };
        if config.tenant != *own_tenant {
            return Err(AgentRefusal::WrongTenant);
        }
        let granted = config
            .grants
            .iter()
            .filter(|g| g.tenant == *tenant)
            .flat_map(|g| &g.spiffe_ids)
            .any(|p| p.matches(requested));
        if granted {
            Ok(())
        } else {
            Err(AgentRefusal::NotGranted)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Vec<AgentConfig> {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    const AGENTS: &str = r#"
- spiffe_id: spiffe://example.org/agent/node-1
  tenant: platform
  grants:
    - tenant: acme
      spiffe_ids: ["spiffe://example.org/ns/web/**"]
    - tenant: globex
      spiffe_ids: ["spiffe://globex.org/ns/*/db"]
"#;

    fn id(s: &str) -> SpiffeId {
        s.parse().unwrap()
    }

    #[test]
    fn grants_are_per_tenant_and_pattern() {
        let agents = Agents::check(&parse(AGENTS), &[]).unwrap();
        let node = id("spiffe://example.org/agent/node-1");
        let (platform, acme, globex) = (
            "platform".parse().unwrap(),
            "acme".parse().unwrap(),
            "globex".parse().unwrap(),
        );
        assert!(agents.is_agent(&node));
        assert!(!agents.is_agent(&id("spiffe://example.org/agent/node-2")));
        let web = id("spiffe://example.org/ns/web/sa/api");
        assert_eq!(agents.authorize(&node, &platform, &acme, &web), Ok(()));
        // The right pattern under another tenant's grant is not granted.
        assert_eq!(
            agents.authorize(&node, &platform, &globex, &web),
            Err(AgentRefusal::NotGranted)
        );
        assert_eq!(
            agents.authorize(
                &node,
                &platform,
                &acme,
                &id("spiffe://example.org/ns/db/sa/x")
            ),
            Err(AgentRefusal::NotGranted)
        );
        assert_eq!(
            agents.authorize(
                &node,
                &platform,
                &globex,
                &id("spiffe://globex.org/ns/a/db")
            ),
            Ok(())
        );
        // The agent's certificate must belong to the tenant its entry names.
        assert_eq!(
            agents.authorize(&node, &acme, &acme, &web),
            Err(AgentRefusal::WrongTenant)
        );
        let other = id("spiffe://example.org/agent/node-2");
        assert_eq!(
            agents.authorize(&other, &platform, &acme, &web),
            Err(AgentRefusal::NotGranted)
        );
    }

    #[test]
    fn refuses_grants_reaching_agents_or_operators_and_bad_entries() {
        let wide = AGENTS.replace("ns/web/**", "**");
        let err = Agents::check(&parse(&wide), &[]).unwrap_err();
        assert!(
            err.contains("matches the agent spiffe://example.org/agent/node-1"),
            "{err}"
        );
        let op = "spiffe://example.org/ns/web/portcullis/operator/alice".to_owned();
        let err = Agents::check(&parse(AGENTS), &[op]).unwrap_err();
        assert!(err.contains("matches the operator"), "{err}");
        let twice = format!("{AGENTS}{}", AGENTS.trim_start_matches('\n'));
        assert!(Agents::check(&parse(&twice), &[])
            .unwrap_err()
            .contains("listed twice"));
        let bad = AGENTS.replace("spiffe://example.org/agent/node-1", "node-1");
        assert!(Agents::check(&parse(&bad), &[])
            .unwrap_err()
            .contains("not a SPIFFE ID"));
        let empty = "- spiffe_id: spiffe://example.org/agent/n\n  tenant: platform\n  grants: []\n";
        assert!(Agents::check(&parse(empty), &[])
            .unwrap_err()
            .contains("at least one grant"));
        let typo = AGENTS.replace("spiffe_ids:", "spiffe_id:");
        assert!(serde_yaml_ng::from_str::<Vec<AgentConfig>>(&typo).is_err());
    }
}
