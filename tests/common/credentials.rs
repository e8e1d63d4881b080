//! Registry credentials as clients present them: HTTP Basic and docker's `config.json`.

use std::fs;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use super::write_file;

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

/// Install `docker-credential-NAME` in `bin`. Its `get` answers `user`/`secret` for any server
/// containing `host` (every server when `None`) and otherwise fails the way docker's helpers
/// do; every call is appended (`ACTION SERVER`) to `log`.
pub fn install_credential_helper(
    bin: &Path,
    name: &str,
    host: Option<&str>,
    (user, secret): (&str, &str),
    log: &Path,
) {
    let pattern = host.map_or_else(|| "*".to_owned(), |h| format!("*{h}*"));
    let script = format!(
        "#!/bin/sh\n\
         server=$(cat)\n\
         echo \"$1 $server\" >> '{log}'\n\
         if [ \"$1\" = get ]; then\n\
         \x20 case \"$server\" in\n\
         \x20   {pattern}) printf '{{\"ServerURL\":\"%s\",\"Username\":\"{user}\",\"Secret\":\"{secret}\"}}\\n' \"$server\"; exit 0 ;;\n\
         \x20 esac\n\
         fi\n\
         echo 'credentials not found in native keychain'\n\
         exit 1\n",
        log = log.display()
    );
    write_file(
        &bin.join(format!("docker-credential-{name}")),
        script.as_bytes(),
        0o755,
    );
}
