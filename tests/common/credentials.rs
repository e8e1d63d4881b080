//! Registry credentials as clients present them: HTTP Basic and docker's `config.json`.

use std::fs;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

/// Standard base64 with padding (RFC 4648 §4), as in HTTP Basic and docker's config.json.
pub fn base64(data: &[u8]) -> String {
    STANDARD.encode(data)
}

/// `Basic base64(user:password)`
pub fn basic_auth_header(user: &str, password: &str) -> String {
    format!("Basic {}", base64(format!("{user}:{password}").as_bytes()))
}

/// Write `DIR/config.json` with `{"auths": {HOST: {"auth": AUTH}}}`.
pub fn write_docker_auths(dir: &Path, entries: &[(&str, &str)]) {
    let auths: serde_json::Map<String, Value> = entries
        .iter()
        .map(|(h, a)| ((*h).to_owned(), json!({ "auth": a })))
        .collect();
    fs::create_dir_all(dir).expect("mkdir docker config dir");
    fs::write(
        dir.join("config.json"),
        serde_json::to_vec_pretty(&json!({ "auths": auths })).unwrap(),
    )
    .expect("write config.json");
}
