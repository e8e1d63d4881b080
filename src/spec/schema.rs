//! The JSON Schema of `lamina.toml`, generated from the spec's own types (`schemars`), so it
//! says what the parser accepts and cannot drift from it. Fields read by custom deserializers
//! (modes, argv fields, runtime names) get their schemas here, written to match those
//! deserializers. The repository ships the result as `schema/lamina.schema.json` (a test keeps
//! the two equal); `lamina init` points editors at it with a `#:schema` comment.

use schemars::{JsonSchema, Schema, SchemaGenerator, generate::SchemaSettings, json_schema};

use super::SpecFile;
use super::runtime::RUNTIMES;
use crate::layer::Mode;

/// The file name `lamina init` gives the schema beside lamina.toml, and its `#:schema` comment
/// names (taplo resolves a relative path against the TOML file's directory).
pub const SCHEMA_FILE: &str = "lamina.schema.json";

/// The JSON Schema (draft 07, which taplo / Even Better TOML and most validators read) of
/// `lamina.toml`, pretty-printed with a final newline: the bytes of
/// `schema/lamina.schema.json`.
pub fn spec_schema() -> String {
    let generator = SchemaSettings::draft07()
        .with(|s| s.meta_schema = Some("http://json-schema.org/draft-07/schema#".into()))
        .into_generator();
    let mut schema = generator.into_root_schema_for::<SpecFile>();
    schema.insert("title".into(), "lamina.toml".into());
    schema.insert(
        "description".into(),
        "The build spec of lamina, the daemonless OCI image assembler for AWS Lambda: \
         a base image, layers, image config and Lambda's [function] vocabulary. Relative \
         paths are relative to the directory holding the spec."
            .into(),
    );
    let mut value = schema.to_value();
    strip_null(&mut value);
    let mut text = serde_json::to_string_pretty(&value).unwrap_or_default();
    text.push('\n');
    text
}

/// TOML has no null: an optional field is one left out, so `"null"` is taken out of every
/// `type` list and `anyOf` that schemars adds for `Option<T>`, and a `null` default dropped.
/// Descriptions are made plain text for editors.
fn strip_null(v: &mut serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            if map.get("default") == Some(&Value::Null) {
                map.remove("default");
            }
            // Doc comments become the hover text of editors: one flowing paragraph, without
            // rustdoc's link brackets.
            if let Some(Value::String(d)) = map.get_mut("description") {
                *d = d.replace('\n', " ").replace("[`", "`").replace("`]", "`");
            }
            if let Some(Value::Array(types)) = map.get_mut("type") {
                types.retain(|t| t != "null");
                if types.len() == 1 {
                    let only = types.remove(0);
                    map.insert("type".into(), only);
                }
            }
            if let Some(Value::Array(any)) = map.get_mut("anyOf") {
                any.retain(|s| s.get("type").is_none_or(|t| t != "null"));
                if any.len() == 1 {
                    let only = any.remove(0);
                    map.remove("anyOf");
                    if let Value::Object(o) = only {
                        map.extend(o);
                    }
                }
            }
            map.values_mut().for_each(strip_null);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_null),
        _ => {}
    }
}

/// `[function] runtime`: one of the names lamina knows ([`RUNTIMES`]).
pub(crate) fn runtime_name(_: &mut SchemaGenerator) -> Schema {
    let names: Vec<&str> = RUNTIMES.iter().map(|r| r.name).collect();
    json_schema!({
        "type": "string",
        "enum": names,
        "description": "Lambda runtime identifier: picks the AWS base image \
                        (public.ecr.aws/lambda/...) unless `base` is set."
    })
}

/// A permission mode: an integer (write it octal, `0o644`) or an octal string (`"0644"`), at
/// most `0o7777`. (A decimal `644` is refused by lamina, but is only an integer to a schema.)
impl JsonSchema for Mode {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Mode".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "Unix permission bits: an octal integer (0o644) or an octal \
                            string (\"0644\"), at most 0o7777. A decimal 644 is refused.",
            "oneOf": [
                {"type": "integer", "minimum": 0, "maximum": 4095},
                {"type": "string", "pattern": "^(0o)?[0-7]{1,4}$"}
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_lists_every_runtime_and_no_null() {
        let text = spec_schema();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let names = &v["definitions"]["FunctionSpec"]["properties"]["runtime"]["enum"];
        for r in RUNTIMES {
            assert!(
                names.as_array().unwrap().iter().any(|n| n == r.name),
                "{}",
                r.name
            );
        }
        assert!(!text.contains("null"), "TOML has no null:\n{text}");
        assert_eq!(
            v["additionalProperties"], false,
            "unknown fields are refused"
        );
        assert!(text.ends_with("}\n"));
    }
}
