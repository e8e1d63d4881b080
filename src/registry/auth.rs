//! Registry credentials (docker config: `auths`, `credsStore`, `credHelpers`; `lamina login`)
//! and `WWW-Authenticate` challenges.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use crate::error::{Error, IoContext, Result};

/// A user name and secret. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name (`AWS` for ECR).
    pub username: String,
    /// The password or token; never printed.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, <redacted>)", self.username)
    }
}

impl Credentials {
    /// The `Authorization: Basic` header value.
    pub fn basic_header(&self) -> String {
        format!(
            "Basic {}",
            B64.encode(format!("{}:{}", self.username, self.password))
        )
    }
}

/// The keys a registry may be stored under in `auths` (docker writes Docker Hub's oddly).
fn keys_for(registry: &str) -> Vec<String> {
    if registry == crate::reference::DOCKER_HUB {
        vec![
            "https://index.docker.io/v1/".into(),
            "index.docker.io".into(),
            crate::reference::DOCKER_HUB.into(),
            crate::reference::DOCKER_HUB_API.into(),
        ]
    } else {
        vec![
            registry.to_owned(),
            format!("https://{registry}"),
            format!("http://{registry}"),
            format!("https://{registry}/v1/"),
            format!("https://{registry}/v2/"),
        ]
    }
}

/// The server name credential helpers are asked about.
fn helper_server(registry: &str) -> String {
    if registry == "docker.io" {
        "https://index.docker.io/v1/".into()
    } else {
        registry.to_owned()
    }
}

fn read_config(dir: &Path) -> Result<Option<serde_json::Value>> {
    let path = dir.join("config.json");
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| Error::Usage(format!("{} is not valid JSON: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).at("reading", &path),
    }
}

/// The most lamina reads of a credential helper's stdout (its JSON answer is a few hundred
/// bytes) and of its stderr.
const HELPER_CAP: u64 = 64 << 10;

/// What a credential helper printed, each stream read up to [`HELPER_CAP`].
struct HelperOutput {
    status: std::process::ExitStatus,
    stdout: Vec<u8>,
    /// The helper wrote more than the cap on stdout: it was killed.
    stdout_over: bool,
    stderr: Vec<u8>,
}

/// Read `child`'s stdout and stderr, neither past [`HELPER_CAP`], and wait for it. More on
/// stdout kills the helper; more on stderr is read and dropped, so the helper is not blocked.
fn helper_output(child: &mut std::process::Child) -> std::io::Result<HelperOutput> {
    use std::io::Read;
    let stderr = child.stderr.take().map(|mut e| {
        std::thread::spawn(move || {
            let mut kept = Vec::new();
            let _ = (&mut e).take(HELPER_CAP).read_to_end(&mut kept);
            let _ = std::io::copy(&mut e, &mut std::io::sink());
            kept
        })
    });
    let mut stdout = Vec::new();
    if let Some(o) = child.stdout.take() {
        o.take(HELPER_CAP + 1).read_to_end(&mut stdout)?;
    }
    let stdout_over = stdout.len() as u64 > HELPER_CAP;
    if stdout_over {
        stdout.truncate(HELPER_CAP as usize);
        let _ = child.kill();
    }
    let status = child.wait()?;
    let stderr = stderr
        .map(|t| t.join().unwrap_or_default())
        .unwrap_or_default();
    Ok(HelperOutput {
        status,
        stdout,
        stdout_over,
        stderr,
    })
}

/// Ask `docker-credential-NAME get` for the registry's credentials.
fn from_helper(name: &str, registry: &str) -> Result<Option<Credentials>> {
    let prog = format!("docker-credential-{name}");
    let mut child = match Command::new(&prog)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            return Err(Error::Auth(format!(
                "the docker config names the credential helper `{name}`, but `{prog}` cannot be run: {e}"
            )));
        }
    };
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that stops reading early fails below with its own message.
        let _ = stdin.write_all(helper_server(registry).as_bytes());
    }
    let out = helper_output(&mut child).ctx(|| format!("running {prog}"))?;
    if out.stdout_over {
        return Err(Error::Auth(format!(
            "credential helper {prog} wrote more than {} for {registry}, the most lamina reads of a helper's answer: stopped",
            crate::registry::show_cap(HELPER_CAP as usize)
        )));
    }
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        if msg.to_lowercase().contains("not found") {
            return Ok(None);
        }
        return Err(Error::Auth(format!(
            "credential helper {prog} failed for {registry}: {}",
            msg.trim()
        )));
    }
    #[derive(serde::Deserialize)]
    struct HelperOut {
        #[serde(rename = "Username")]
        username: String,
        #[serde(rename = "Secret")]
        secret: String,
    }
    let h: HelperOut = serde_json::from_slice(&out.stdout).map_err(|e| {
        Error::Auth(format!(
            "credential helper {prog} gave an unreadable answer: {e}"
        ))
    })?;
    Ok(Some(Credentials {
        username: h.username,
        password: h.secret,
    }))
}

/// The credential helper the docker config names for `registry` (`credHelpers`), if any.
pub fn helper_for(dir: &Path, registry: &str) -> Result<Option<String>> {
    Ok(read_config(dir)?.and_then(|cfg| {
        cfg.get("credHelpers")?
            .get(registry)?
            .as_str()
            .map(str::to_owned)
    }))
}

/// Credentials for `registry` from the docker config in `dir`: `credHelpers` for that registry,
/// then an `auths` entry, then the `credsStore`.
pub fn lookup(dir: &Path, registry: &str) -> Result<Option<Credentials>> {
    let Some(cfg) = read_config(dir)? else {
        return Ok(None);
    };
    if let Some(h) = cfg
        .get("credHelpers")
        .and_then(|h| h.get(registry))
        .and_then(|h| h.as_str())
    {
        return from_helper(h, registry);
    }
    if let Some(auths) = cfg.get("auths").and_then(|a| a.as_object()) {
        for key in keys_for(registry) {
            let Some(entry) = auths.get(&key) else {
                continue;
            };
            if let Some(a) = entry
                .get("auth")
                .and_then(|a| a.as_str())
                .filter(|a| !a.is_empty())
            {
                let decoded = B64.decode(a.trim()).map_err(|_| {
                    Error::Usage(format!(
                        "{}: auths.\"{key}\".auth is not base64",
                        dir.join("config.json").display()
                    ))
                })?;
                let s = String::from_utf8_lossy(&decoded);
                let (u, p) = s.split_once(':').ok_or_else(|| {
                    Error::Usage(format!(
                        "{}: auths.\"{key}\".auth is not USER:PASSWORD",
                        dir.join("config.json").display()
                    ))
                })?;
                return Ok(Some(Credentials {
                    username: u.to_owned(),
                    password: p.to_owned(),
                }));
            }
            if let (Some(u), Some(p)) = (
                entry.get("username").and_then(|u| u.as_str()),
                entry.get("password").and_then(|p| p.as_str()),
            ) {
                return Ok(Some(Credentials {
                    username: u.to_owned(),
                    password: p.to_owned(),
                }));
            }
        }
    }
    if let Some(store) = cfg
        .get("credsStore")
        .and_then(|s| s.as_str())
        .filter(|s| !s.is_empty())
    {
        return from_helper(store, registry);
    }
    Ok(None)
}

/// Record credentials in the docker config (`auths`), keeping everything else in it; the file
/// is replaced atomically and readable only by its owner.
pub fn save(dir: &Path, registry: &str, creds: &Credentials) -> Result<PathBuf> {
    let path = dir.join("config.json");
    let mut cfg = read_config(dir)?.unwrap_or_else(|| serde_json::json!({}));
    let obj = cfg
        .as_object_mut()
        .ok_or_else(|| Error::Usage(format!("{} is not a JSON object", path.display())))?;
    let key = keys_for(registry).remove(0);
    let auths = obj.entry("auths").or_insert_with(|| serde_json::json!({}));
    let auths = auths
        .as_object_mut()
        .ok_or_else(|| Error::Usage(format!("{}: `auths` is not an object", path.display())))?;
    auths.insert(
        key,
        serde_json::json!({ "auth": B64.encode(format!("{}:{}", creds.username, creds.password)) }),
    );
    std::fs::create_dir_all(dir).at("creating", dir)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".config.json.")
        .tempfile_in(dir)
        .at("creating a temporary file in", dir)?;
    serde_json::to_writer_pretty(&mut tmp, &cfg)
        .map_err(|e| Error::Internal(format!("serializing the docker config: {e}")))?;
    tmp.write_all(b"\n").at("writing", tmp.path())?;
    // tempfile creates it 0600: only the owner may read a file holding passwords.
    tmp.persist(&path)
        .map_err(|e| e.error)
        .at("saving", &path)?;
    Ok(path)
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

/// Parse `Bearer realm="...",service="...",scope="..."` or `Basic realm="..."`.
pub fn parse_challenge(h: &str) -> Option<Challenge> {
    let h = h.trim();
    let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
    let mut params: BTreeMap<String, String> = BTreeMap::new();
    let mut s = rest.trim();
    while !s.is_empty() {
        let Some((k, after)) = s.split_once('=') else {
            break;
        };
        let k = k.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (v, next) = if let Some(q) = after.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = q.char_indices();
            let mut end = q.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            out.push(n);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => out.push(c),
                }
            }
            (out, &q[end.min(q.len())..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_owned(), &after[end..])
        };
        params.insert(k, v);
        s = next.trim_start().trim_start_matches(',').trim_start();
    }
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge::Basic),
        "bearer" => Some(Challenge::Bearer {
            realm: params.get("realm")?.clone(),
            service: params.get("service").cloned(),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.example.com/token".into(),
                service: Some("registry.example.com".into())
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Negotiate"), None);
    }

    #[test]
    fn login_round_trips_and_keeps_other_settings() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("config.json"),
            r#"{"auths":{"other.io":{"auth":"eDp5"}},"psFormat":"x"}"#,
        )
        .unwrap();
        let c = Credentials {
            username: "u".into(),
            password: "p:w".into(),
        };
        save(d.path(), "127.0.0.1:5000", &c).unwrap();
        assert_eq!(lookup(d.path(), "127.0.0.1:5000").unwrap(), Some(c));
        assert_eq!(lookup(d.path(), "other.io").unwrap().unwrap().username, "x");
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(d.path().join("config.json")).unwrap()).unwrap();
        assert_eq!(v["psFormat"], "x");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.path().join("config.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o077,
            0,
            "config.json must not be readable by others"
        );
        assert!(!format!("{:?}", lookup(d.path(), "127.0.0.1:5000").unwrap()).contains("p:w"));
    }
}
