//! Tenants' policy documents laid over a gateway config: what the gateway runs when it follows
//! the admin plane, and what the admin plane checks a candidate against.
//!
//! A policy document is the gateway config's `tenants:` with exactly one tenant. Laid over a
//! config, it replaces that config's entry of the same name, or is added after the others.

use serde_yaml_ng::{Mapping, Value};

/// The one tenant entry of a policy document, and its name.
pub fn tenant_entry(document: &str) -> Result<(String, Value), String> {
    let value: Value = serde_yaml_ng::from_str(document).map_err(|e| e.to_string())?;
    let Value::Mapping(mut doc) = value else {
        return Err("a policy is a mapping with `tenants:` and nothing else".to_owned());
    };
    let entries = match doc.remove("tenants") {
        Some(Value::Sequence(entries)) if doc.is_empty() => entries,
        _ => {
            return Err(
                "a policy is a mapping with `tenants:` (a list of one tenant) and nothing \
                 else; listeners, upstreams and the other sections are the platform's"
                    .to_owned(),
            )
        }
    };
    let [entry] = <[Value; 1]>::try_from(entries)
        .map_err(|_| "`tenants:` must list exactly one tenant".to_owned())?;
    let name = entry
        .get("name")
        .and_then(Value::as_str)
        .ok_or("the tenant entry needs `name:`")?
        .to_owned();
    Ok((name, entry))
}

/// `base` (a gateway config's text) with each of `documents` laid over it, as YAML text.
pub fn overlay_tenants(base: &str, documents: &[&str]) -> Result<String, String> {
    let entries = documents
        .iter()
        .map(|d| tenant_entry(d))
        .collect::<Result<Vec<_>, _>>()?;
    overlay_entries(base, entries)
}

/// As [`overlay_tenants`], with the documents already read.
pub fn overlay_entries(base: &str, entries: Vec<(String, Value)>) -> Result<String, String> {
    let Value::Mapping(mut config) =
        serde_yaml_ng::from_str::<Value>(base).map_err(|e| e.to_string())?
    else {
        return Err("the gateway config is not a mapping".to_owned());
    };
    let mut tenants = match config.remove("tenants") {
        Some(Value::Sequence(list)) => list,
        None | Some(Value::Null) => Vec::new(),
        Some(_) => return Err("the gateway config's `tenants` is not a list".to_owned()),
    };
    for (name, entry) in entries {
        let same = |t: &Value| t.get("name").and_then(Value::as_str) == Some(name.as_str());
        match tenants.iter_mut().find(|t| same(t)) {
            Some(slot) => *slot = entry,
            None => tenants.push(entry),
        }
    }
    let mut out = Mapping::new();
    for (k, v) in config {
        out.insert(k, v);
    }
    out.insert("tenants".into(), Value::Sequence(tenants));
    serde_yaml_ng::to_string(&out).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str =
        "upstreams: []\ntenants:\n  - name: a\n    routes: []\n  - name: b\n    routes: []\n";

    #[test]
    fn a_document_replaces_its_tenant_or_is_added() {
        let out = overlay_tenants(
            BASE,
            &[
                "tenants:\n  - name: b\n    limits: {}\n",
                "tenants: [{name: c}]",
            ],
        )
        .unwrap();
        let v: Value = serde_yaml_ng::from_str(&out).unwrap();
        let names: Vec<&str> = v["tenants"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert!(v["tenants"][1].get("limits").is_some());
        assert!(v.get("upstreams").is_some());
    }

    #[test]
    fn documents_with_more_than_one_tenant_or_other_sections_are_refused() {
        for doc in [
            "tenants: [{name: a}, {name: b}]",
            "tenants: [{name: a}]\nupstreams: []",
            "tenants: []",
            "tenants: [{routes: []}]",
            "[1]",
            "",
            "tenants: [{name: a",
        ] {
            assert!(overlay_tenants(BASE, &[doc]).is_err(), "{doc:?}");
        }
    }
}
