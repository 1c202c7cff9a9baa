//! `portcullis config schema`: the JSON Schema of each config file, derived from the types
//! serde reads the files into (so it follows the parser, never a copy of it). Editors use it
//! to complete and validate the YAML; `portcullis check` stays the authority on what runs.

use clap::{Subcommand, ValueEnum};
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema};

#[derive(Subcommand)]
pub(crate) enum ConfigCommand {
    /// Print the JSON Schema (draft 2020-12) of a config file, for editors and
    /// `check-jsonschema`. `portcullis check` still decides what runs.
    Schema {
        /// Which file: the gateway's (`serve`, `check`), the CA's (`ca … --config`) or the
        /// admin API's (`admin serve --config`).
        #[arg(long, value_enum, default_value_t = ConfigKind::Gateway)]
        kind: ConfigKind,
    },
}

/// The three config files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum ConfigKind {
    Gateway,
    Ca,
    Admin,
}

pub(crate) fn run(command: ConfigCommand) -> anyhow::Result<()> {
    match command {
        ConfigCommand::Schema { kind } => {
            let schema = schema(kind);
            println!("{}", serde_json::to_string_pretty(&schema)?);
            Ok(())
        }
    }
}

/// The schema of one kind of config file.
pub(crate) fn schema(kind: ConfigKind) -> Schema {
    match kind {
        ConfigKind::Gateway => portcullis_policy::config_schema(),
        ConfigKind::Ca => titled::<portcullis_ca::CaConfig>(
            "Portcullis CA configuration",
            "The file `portcullis ca … --config` reads. `portcullis ca init` and every CA \
             command check it in full (labels, lifetimes against the cap, profile names).",
        ),
        ConfigKind::Admin => titled::<portcullis_admin::AdminConfig>(
            "Portcullis admin API configuration",
            "The file `portcullis admin serve --config` reads; it checks the rest at start \
             (the CA config it names, operators against the profiles).",
        ),
    }
}

/// `T`'s schema with the same generator settings as the gateway's (draft 2020-12).
fn titled<T: JsonSchema>(title: &str, description: &str) -> Schema {
    let mut schema = SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<T>();
    schema.insert("title".into(), title.into());
    schema.insert("description".into(), description.into());
    schema
}

#[cfg(test)]
mod tests {
    use super::{schema, ConfigKind};
    use serde_json::Value;

    /// Every config struct refuses unknown keys (`deny_unknown_fields`), so every object in
    /// every schema must too: an editor must flag a typo the parser would refuse.
    #[test]
    fn every_object_with_properties_refuses_unknown_keys() {
        fn walk(path: &str, v: &Value, open: &mut Vec<String>) {
            match v {
                Value::Object(map) => {
                    if map.contains_key("properties")
                        && map.get("additionalProperties") != Some(&Value::Bool(false))
                    {
                        open.push(path.to_owned());
                    }
                    for (k, child) in map {
                        walk(&format!("{path}/{k}"), child, open);
                    }
                }
                Value::Array(items) => {
                    for (i, child) in items.iter().enumerate() {
                        walk(&format!("{path}/{i}"), child, open);
                    }
                }
                _ => {}
            }
        }
        for kind in [ConfigKind::Gateway, ConfigKind::Ca, ConfigKind::Admin] {
            let value = serde_json::to_value(schema(kind)).unwrap();
            assert_eq!(
                value["$schema"], "https://json-schema.org/draft/2020-12/schema",
                "{kind:?}"
            );
            let mut open = Vec::new();
            walk("#", &value, &mut open);
            assert!(
                open.is_empty(),
                "{kind:?}: objects open to unknown keys: {open:?}"
            );
        }
    }

    /// Durations are strings humantime reads, never serde's `{secs, nanos}` for `Duration`.
    #[test]
    fn durations_are_humantime_strings() {
        let value = serde_json::to_value(schema(ConfigKind::Gateway)).unwrap();
        let text = value.to_string();
        assert!(
            !text.contains("\"secs\""),
            "a Duration leaked as {{secs, nanos}}"
        );
        let timeout = &value["$defs"]["Connections"]["properties"]["idle_timeout"];
        assert_eq!(timeout["anyOf"][0]["$ref"], "#/$defs/Duration", "{timeout}");
        assert_eq!(value["$defs"]["Duration"]["type"], "string");
        let admin = serde_json::to_value(schema(ConfigKind::Admin)).unwrap();
        assert!(!admin.to_string().contains("\"secs\""));
    }
}
