//! One person's several identities, for separation of duties. A person may call the admin API
//! with a client certificate (a SPIFFE ID) and with an OpenID Connect token; the audit log
//! names each identity as it is, but a request and its decision (a policy activation, a
//! certificate waiting for approval) must come from two different persons, whichever way each
//! signed in. Identities not listed here are each a person of their own.
//!
//! ```yaml
//! persons:
//!   - name: alice
//!     spiffe_ids: ["spiffe://acme.example/ns/people/alice"]
//!     oidc: [{ provider: corp, subject: "00u1abcd" }]
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use portcullis_identity::SpiffeId;
use serde::{Deserialize, Serialize};

/// One person and the identities they call the admin API with, as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct PersonConfig {
    /// For the operator (errors); not shown to callers.
    pub name: String,
    /// SPIFFE IDs of the person's client certificates (exact).
    #[serde(default)]
    pub spiffe_ids: Vec<String>,
    /// The person's subjects at the identity providers.
    #[serde(default)]
    pub oidc: Vec<OidcSubject>,
}

/// A subject (`sub`) at one of `identity_providers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct OidcSubject {
    pub provider: String,
    pub subject: String,
}

impl PersonConfig {
    /// The person's identities as callers are named (`CallRecord::actor`).
    fn actors(&self) -> impl Iterator<Item = String> + '_ {
        let oidc = self
            .oidc
            .iter()
            .map(|s| crate::people::oidc_actor(&s.provider, &s.subject));
        self.spiffe_ids.iter().cloned().chain(oidc)
    }
}

/// Checks `persons:`: names given and unique, at least two identities each (one is already a
/// person of its own), SPIFFE IDs that parse, known providers, and no identity in two persons.
pub(crate) fn check(persons: &[PersonConfig], providers: &[&str]) -> Result<(), String> {
    let mut owner: HashMap<String, &str> = HashMap::new();
    for (i, p) in persons.iter().enumerate() {
        let at = format!("persons[{i}]");
        if p.name.trim().is_empty() {
            return Err(format!("{at}.name: required"));
        }
        if persons[..i].iter().any(|q| q.name == p.name) {
            return Err(format!("{at}.name: {:?} is listed twice", p.name));
        }
        if p.spiffe_ids.len() + p.oidc.len() < 2 {
            return Err(format!(
                "{at} ({}): lists fewer than two identities; a single identity is a person \
                 of its own without being listed",
                p.name
            ));
        }
        for id in &p.spiffe_ids {
            id.parse::<SpiffeId>()
                .map_err(|e| format!("{at}.spiffe_ids: {id:?} is not a SPIFFE ID: {e}"))?;
        }
        for s in &p.oidc {
            if !providers.contains(&s.provider.as_str()) {
                return Err(format!(
                    "{at}.oidc: provider {:?} is not in identity_providers",
                    s.provider
                ));
            }
            if s.subject.is_empty() {
                return Err(format!("{at}.oidc: an empty subject"));
            }
        }
        for actor in p.actors() {
            if let Some(other) = owner.insert(actor.clone(), &p.name) {
                return Err(format!(
                    "{at}: {actor} is listed for {other:?} and for {:?}; an identity belongs \
                     to one person",
                    p.name
                ));
            }
        }
    }
    Ok(())
}

/// Who is who, from `persons:`.
#[derive(Debug, Default)]
pub(crate) struct Persons {
    /// Each listed identity, to all the identities of its person.
    identities: HashMap<String, Arc<[String]>>,
}

impl Persons {
    pub(crate) fn new(persons: &[PersonConfig]) -> Self {
        let mut identities = HashMap::new();
        for p in persons {
            let all: Arc<[String]> = p.actors().collect();
            for actor in all.iter() {
                identities.insert(actor.clone(), Arc::clone(&all));
            }
        }
        Self { identities }
    }

    /// Whether identities `a` and `b` are the same person.
    pub(crate) fn same(&self, a: &str, b: &str) -> bool {
        a == b
            || self
                .identities
                .get(a)
                .is_some_and(|all| all.iter().any(|i| i == b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Vec<PersonConfig> {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn identities_of_one_person_are_the_same_and_no_one_else_is() {
        let cfg = parse(
            r#"
- name: alice
  spiffe_ids: ["spiffe://acme.example/ns/people/alice", "spiffe://acme.example/ns/laptop/alice"]
  oidc: [{ provider: corp, subject: "00u1" }]
- name: bob
  spiffe_ids: ["spiffe://acme.example/ns/people/bob"]
  oidc: [{ provider: corp, subject: "00u2" }]
"#,
        );
        check(&cfg, &["corp"]).unwrap();
        let p = Persons::new(&cfg);
        let alice = "spiffe://acme.example/ns/people/alice";
        assert!(p.same(alice, "oidc:corp:00u1"));
        assert!(p.same("oidc:corp:00u1", "spiffe://acme.example/ns/laptop/alice"));
        assert!(!p.same(alice, "oidc:corp:00u2"));
        assert!(!p.same(alice, "spiffe://acme.example/ns/people/bob"));
        // Unlisted identities are persons of their own; a subject is per provider.
        assert!(p.same("spiffe://x.example/a", "spiffe://x.example/a"));
        assert!(!p.same("spiffe://x.example/a", alice));
        assert!(!p.same("oidc:other:00u1", alice));
    }

    #[test]
    fn a_config_that_would_blur_who_is_who_is_refused() {
        for (yaml, expected) in [
            (
                "- { name: a, spiffe_ids: [\"spiffe://e/a\"], oidc: [{ provider: corp, subject: s }] }\n\
                 - { name: b, spiffe_ids: [\"spiffe://e/b\"], oidc: [{ provider: corp, subject: s }] }",
                "oidc:corp:s is listed for \"a\" and for \"b\"",
            ),
            (
                "- { name: a, spiffe_ids: [\"spiffe://e/a\"], oidc: [{ provider: nope, subject: s }] }",
                "provider \"nope\" is not in identity_providers",
            ),
            (
                "- { name: a, spiffe_ids: [\"spiffe://e/a\"] }",
                "fewer than two identities",
            ),
            (
                "- { name: a, spiffe_ids: [\"https://e/a\", \"spiffe://e/b\"] }",
                "\"https://e/a\" is not a SPIFFE ID",
            ),
            (
                "- { name: a, spiffe_ids: [\"spiffe://e/a\", \"spiffe://e/b\"] }\n\
                 - { name: a, spiffe_ids: [\"spiffe://e/c\", \"spiffe://e/d\"] }",
                "persons[1].name: \"a\" is listed twice",
            ),
            (
                "- { name: \" \", spiffe_ids: [\"spiffe://e/a\", \"spiffe://e/b\"] }",
                "persons[0].name: required",
            ),
        ] {
            let err = check(&parse(yaml), &["corp"]).unwrap_err();
            assert!(err.contains(expected), "{yaml}: {err}");
        }
    }
}
