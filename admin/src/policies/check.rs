//! A tenant's policy checked with the gateway's own code: the document is the gateway config's
//! `tenants:` with that one tenant, checked inside the platform's gateway config (its listeners
//! and upstreams), then once more beside every other tenant's active policy.
//!
//! The first check runs on the uploaded text itself followed by the platform's other sections,
//! so its problems carry the uploaded document's own line numbers.

use std::path::Path;

use portcullis_ca::TenantId;
use portcullis_policy::{Config, ConfigProblem};
use serde::Serialize;
use serde_yaml_ng::{Mapping, Value};

/// One thing wrong with an uploaded policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Problem {
    /// Line of the uploaded document, when the problem is in it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) column: Option<usize>,
    pub(crate) message: String,
}

impl Problem {
    pub(crate) fn message(message: impl Into<String>) -> Problem {
        Problem {
            line: None,
            column: None,
            message: message.into(),
        }
    }
}

/// Largest policy document accepted, in bytes.
pub(crate) const MAX_POLICY: usize = 256 * 1024;

/// The platform's gateway config: every section but the tenants', and the tenants it starts
/// with (each tenant's policy until a version is activated).
#[derive(Debug, Clone)]
pub(crate) struct Platform {
    /// The config as written.
    text: String,
    /// The config's sections other than `tenants`.
    sections: Mapping,
    /// Its `tenants:` entries, in order.
    tenants: Vec<Value>,
    /// Where its relative paths are resolved from.
    file: std::path::PathBuf,
}

impl Platform {
    /// Reads and checks the gateway config (it must pass `portcullis check` as it stands).
    pub(crate) fn load(file: &Path) -> Result<Platform, String> {
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("policies.gateway_config {}: {e}", file.display()))?;
        Config::from_yaml(&text, file).map_err(|e| e.to_string())?;
        let Ok(Value::Mapping(mut sections)) = serde_yaml_ng::from_str::<Value>(&text) else {
            return Err(format!("{}: not a mapping", file.display()));
        };
        let tenants = match sections.remove("tenants") {
            Some(Value::Sequence(entries)) => entries,
            _ => Vec::new(),
        };
        Ok(Platform {
            text,
            sections,
            tenants,
            file: file.to_owned(),
        })
    }

    /// The platform's own entry for `tenant`, as YAML text in the policy document's form.
    pub(crate) fn initial_document(&self, tenant: &TenantId) -> Option<String> {
        let entry = self
            .tenants
            .iter()
            .find(|e| e.get("name").and_then(Value::as_str) == Some(tenant.as_str()))?;
        let mut doc = Mapping::new();
        doc.insert("tenants".into(), Value::Sequence(vec![entry.clone()]));
        serde_yaml_ng::to_string(&doc).ok()
    }

    /// Checks `text` as `tenant`'s policy beside `active` (every tenant's active document,
    /// whose `tenant` entry, if any, `text` replaces). Returns the fleet's config with it.
    pub(crate) fn check(
        &self,
        tenant: &TenantId,
        text: &str,
        active: &[(TenantId, String)],
    ) -> Result<Config, Vec<Problem>> {
        let entry = tenant_entry(tenant, text)?;
        // Alone, with the uploaded text first so that line numbers are its own.
        let mut alone = String::with_capacity(text.len() + 1024);
        alone.push_str(text);
        if !alone.ends_with('\n') {
            alone.push('\n');
        }
        let lines = alone.lines().count();
        alone.push_str(
            &serde_yaml_ng::to_string(&self.sections)
                .map_err(|e| vec![Problem::message(format!("the gateway config: {e}"))])?,
        );
        if let Err(e) = Config::from_yaml(&alone, &self.file) {
            return Err(e
                .problems
                .into_iter()
                .map(|p| in_document(p, lines))
                .collect());
        }
        let fleet = self
            .fleet_with(active, Some((tenant, entry)))
            .map_err(|problems| {
                problems
                    .into_iter()
                    .map(|p| {
                        Problem::message(format!(
                            "beside the other tenants' policies: {}",
                            p.message
                        ))
                    })
                    .collect::<Vec<_>>()
            })?;
        let claimed = hosts_of_others(&fleet, tenant);
        if !claimed.is_empty() {
            return Err(claimed);
        }
        Ok(fleet)
    }

    /// The gateway config every replica runs: the platform's sections, and each tenant's
    /// active document (else the platform's own entry).
    pub(crate) fn fleet(&self, active: &[(TenantId, String)]) -> Result<Config, Vec<Problem>> {
        self.fleet_with(active, None)
    }

    fn fleet_with(
        &self,
        active: &[(TenantId, String)],
        candidate: Option<(&TenantId, Value)>,
    ) -> Result<Config, Vec<Problem>> {
        let mut entries = Vec::with_capacity(active.len() + 1);
        for (tenant, text) in active {
            if candidate.as_ref().is_some_and(|(t, _)| *t == tenant) {
                continue;
            }
            entries.push((tenant.as_str().to_owned(), tenant_entry(tenant, text)?));
        }
        if let Some((tenant, entry)) = candidate {
            entries.push((tenant.as_str().to_owned(), entry));
        }
        let text = portcullis_policy::overlay_entries(&self.text, entries)
            .map_err(|e| vec![Problem::message(format!("the fleet's config: {e}"))])?;
        Config::from_yaml(&text, &self.file).map_err(|e| {
            e.problems
                .into_iter()
                .map(|p| Problem::message(p.message))
                .collect()
        })
    }
}

/// A tenant's routes may not name a host another tenant's routes name: a longer prefix there
/// would take that tenant's traffic.
fn hosts_of_others(fleet: &Config, tenant: &TenantId) -> Vec<Problem> {
    let mut problems = Vec::new();
    for route in fleet
        .routes
        .iter()
        .filter(|r| r.tenant.as_str() == tenant.as_str())
    {
        let Some(host) = &route.host else { continue };
        let owner = fleet
            .routes
            .iter()
            .find(|r| r.tenant.as_str() != tenant.as_str() && r.host.as_ref() == Some(host));
        if let Some(owner) = owner {
            let message = format!(
                "route {}: host {host} is tenant {}'s",
                route.id.name(),
                owner.tenant
            );
            if !problems.iter().any(|p: &Problem| p.message == message) {
                problems.push(Problem::message(message));
            }
        }
    }
    problems
}

/// A problem of the "alone" check: in the uploaded document when its line is within it.
fn in_document(p: ConfigProblem, lines: usize) -> Problem {
    match p.line {
        Some(line) if line <= lines => Problem {
            line: Some(line),
            column: p.column,
            message: p.message,
        },
        _ => Problem::message(format!("in the platform's gateway config: {}", p.message)),
    }
}

/// The one `tenants:` entry of a policy document, which must name `tenant`.
fn tenant_entry(tenant: &TenantId, text: &str) -> Result<Value, Vec<Problem>> {
    let refuse = |m: String| Err(vec![Problem::message(m)]);
    if text.len() > MAX_POLICY {
        return refuse(format!("the document exceeds {MAX_POLICY} bytes"));
    }
    // The document is checked with the platform's sections appended: a document marker
    // would end it early.
    if let Some((i, _)) = text
        .lines()
        .enumerate()
        .find(|(_, l)| l.starts_with("---") || l.starts_with("..."))
    {
        return Err(vec![Problem {
            line: Some(i + 1),
            column: Some(1),
            message: "one document without `---` or `...` markers is expected".to_owned(),
        }]);
    }
    // Where the YAML itself does not read, say where.
    if let Err(e) = serde_yaml_ng::from_str::<Value>(text) {
        return Err(vec![Problem {
            line: e.location().map(|l| l.line()),
            column: e.location().map(|l| l.column()),
            message: e.to_string(),
        }]);
    }
    let (name, entry) =
        portcullis_policy::tenant_entry(text).map_err(|m| vec![Problem::message(m)])?;
    if name != tenant.as_str() {
        return refuse(format!(
            "the document is tenant {name:?}'s, not {:?}'s",
            tenant.as_str()
        ));
    }
    Ok(entry)
}
