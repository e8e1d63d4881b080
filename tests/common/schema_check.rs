//! Validating TOML files against lamina's JSON Schema with a real validator: Python's
//! `jsonschema` (Draft 7), the TOML read by Python's own `tomllib` — no code of lamina's in the
//! loop.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::{describe, require_tool, run_bounded};

/// The schema the repository ships.
pub fn shipped_schema() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/lamina.schema.json")
}

const VALIDATE: &str = r#"
import json, sys, tomllib
try:
    import jsonschema
except ImportError:
    sys.exit("python3's jsonschema is missing: pip install jsonschema (moto[server] brings it)")
schema = json.load(open(sys.argv[1]))
jsonschema.Draft7Validator.check_schema(schema)
v = jsonschema.Draft7Validator(schema)
out = {}
for path in sys.argv[2:]:
    with open(path, "rb") as f:
        doc = tomllib.load(f)
    out[path] = sorted("/".join(map(str, e.absolute_path)) + ": " + e.message for e in v.iter_errors(doc))
print(json.dumps(out))
"#;

/// The schema's complaints about each TOML file (an empty list: valid). Panics when python3
/// or its `jsonschema` is missing, when the schema is not a valid Draft 7 schema, or when a
/// file is not TOML.
pub fn schema_errors(schema: &Path, tomls: &[PathBuf]) -> BTreeMap<PathBuf, Vec<String>> {
    let python = require_tool("python3");
    let mut cmd = Command::new(python);
    cmd.arg("-c").arg(VALIDATE).arg(schema).args(tomls);
    let out = run_bounded(&mut cmd, None, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "validator failed:\n{}",
        describe(&out)
    );
    let map: BTreeMap<String, Vec<String>> =
        serde_json::from_slice(&out.stdout).expect("validator output is JSON");
    map.into_iter()
        .map(|(k, v)| (PathBuf::from(k), v))
        .collect()
}
