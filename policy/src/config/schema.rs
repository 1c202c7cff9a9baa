//! The JSON Schema of the gateway config file (feature `schema`), derived from the `raw` types
//! serde reads the file into, so it cannot drift from the parser: a key the schema lists is a
//! key serde accepts, with the same shape. What only the checking pass knows (addresses, CIDRs,
//! names that must refer to each other, file modes) stays with `portcullis check`.

use schemars::generate::SchemaSettings;
use schemars::Schema;

use super::raw::RawConfig;

/// The schema (JSON Schema draft 2020-12) of a gateway config file.
pub fn config_schema() -> Schema {
    let mut schema = SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<RawConfig>();
    schema.insert("title".into(), "Portcullis gateway configuration".into());
    schema.insert(
        "description".into(),
        "The file `portcullis serve --config` reads. `portcullis check --config FILE` is the \
         authority: it also checks addresses, references between sections and the files named."
            .into(),
    );
    schema
}
