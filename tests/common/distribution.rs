//! The CNCF distribution registry (`docker-registry serve`) as a test peer, in three flavours:
//! plain HTTP, TLS + htpasswd basic auth, TLS + bearer tokens from a [`TokenServer`].

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use super::{
    Node, STARTUP_DEADLINE, TOKEN_ISSUER, TOKEN_SERVICE, TokenRequest, TokenServer, base64,
    free_port, http_status, https_status, make_tls, require_tool, run_tool_ok, sha256_digest,
    skopeo, skopeo_ok, strings, tree_snapshot, write_docker_auths,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flavour {
    Plain,
    TlsBasic,
    TlsToken,
}

/// Where and how a registry runs, beyond its flavour.
#[derive(Default)]
struct Setup {
    /// The address it listens on; `127.0.0.1` when `None`.
    ip: Option<String>,
    /// The address clients are told to reach it at (its `host`), when not the one it listens
    /// on: `0.0.0.0` reaches a registry listening on 127.0.0.1, through an address that is
    /// not a loopback one.
    reached_as: Option<String>,
    /// Blob reads answered with a 307 to this base URL plus the blob's storage path
    /// (distribution's `redirect` storage middleware).
    redirect_to: Option<String>,
}

/// A `docker-registry serve` on 127.0.0.1 (unless told otherwise) with all its state in a
/// temporary directory; killed on drop.
pub struct Registry {
    /// `IP:PORT`, `127.0.0.1:PORT` unless told otherwise
    pub host: String,
    /// The CA certificate (PEM) when the registry speaks TLS.
    pub ca: Option<PathBuf>,
    /// A directory holding `ca.crt` (skopeo's `--cert-dir`) when the registry speaks TLS.
    pub cert_dir: Option<PathBuf>,
    pub user: Option<String>,
    pub password: Option<String>,
    /// Requests the token server answered (token flavour only; stays 0 otherwise).
    pub token_requests: Arc<AtomicUsize>,
    /// Root of the temporary directory (config, data, log, certificates).
    pub dir: PathBuf,
    log: PathBuf,
    child: Child,
    token_server: Option<TokenServer>,
    _tmp: Option<TempDir>,
}

impl Registry {
    /// Plain HTTP, no authentication.
    pub fn plain() -> Registry {
        Registry::start(Flavour::Plain, None, Setup::default())
    }

    /// Plain HTTP, no authentication, listening on `ip` (which the caller has put on an
    /// interface, e.g. in a network namespace of its own: see `netns`).
    /// Plain HTTP on 127.0.0.1, reached at `ip:PORT` (e.g. `0.0.0.0`, which Linux delivers to
    /// the local host but which is not a loopback address).
    pub fn plain_reached_as(ip: &str) -> Registry {
        let setup = Setup {
            reached_as: Some(ip.to_owned()),
            ..Setup::default()
        };
        Registry::start(Flavour::Plain, None, setup)
    }

    pub fn plain_on(ip: &str) -> Registry {
        let setup = Setup {
            ip: Some(ip.to_owned()),
            ..Setup::default()
        };
        Registry::start(Flavour::Plain, None, setup)
    }

    /// TLS and htpasswd basic authentication, with every blob read (GET or HEAD) answered by a
    /// `307` to `base_url` + the blob's path in the registry's storage
    /// (`/docker/registry/v2/blobs/sha256/XX/HEX/data`): distribution's own `redirect` storage
    /// middleware, as a registry backed by S3 or a CDN does.
    pub fn tls_basic_redirecting(user: &str, password: &str, base_url: &str) -> Registry {
        let setup = Setup {
            redirect_to: Some(base_url.to_owned()),
            ..Setup::default()
        };
        Registry::start(Flavour::TlsBasic, Some((user, password)), setup)
    }

    /// TLS (a CA generated for the test) and htpasswd basic authentication.
    pub fn tls_basic(user: &str, password: &str) -> Registry {
        Registry::start(Flavour::TlsBasic, Some((user, password)), Setup::default())
    }

    /// TLS and bearer tokens from a [`TokenServer`] that knows `user`/`password`.
    pub fn token(user: &str, password: &str) -> Registry {
        Registry::start(Flavour::TlsToken, Some((user, password)), Setup::default())
    }

    fn start(flavour: Flavour, creds: Option<(&str, &str)>, setup: Setup) -> Registry {
        let bin = require_tool("docker-registry");
        let tmp = TempDir::new().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let data = dir.join("data");
        fs::create_dir_all(&data).expect("mkdir data");

        let tls = (flavour != Flavour::Plain).then(|| make_tls(&dir.join("tls")));
        let token_requests = Arc::new(AtomicUsize::new(0));
        let (auth, token_server) = auth_config(flavour, creds, &dir, &token_requests);
        let tls_cfg = match &tls {
            Some(t) => format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                yaml_path(&t.server_cert),
                yaml_path(&t.server_key)
            ),
            None => String::new(),
        };
        let middleware = match &setup.redirect_to {
            Some(url) => format!(
                "middleware:\n  storage:\n    - name: redirect\n      options:\n        \
                 baseurl: {}\n",
                serde_json::to_string(url).expect("JSON string")
            ),
            None => String::new(),
        };
        let ip = setup.ip.as_deref().unwrap_or("127.0.0.1");
        let log = dir.join("registry.log");
        let mut last_log = String::new();
        for _attempt in 0..5 {
            let port = free_port();
            let host = format!("{}:{port}", setup.reached_as.as_deref().unwrap_or(ip));
            let bind = format!("{ip}:{port}");
            let config = format!(
                "version: 0.1\n\
                 log:\n  level: warn\n  formatter: text\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  \
                 maintenance:\n    uploadpurging:\n      enabled: false\n\
                 {middleware}\
                 http:\n  addr: \"{bind}\"\n  secret: \"lamina-test-http-secret\"\n{tls_cfg}\
                 {auth}",
                yaml_path(&data)
            );
            let config_path = dir.join("config.yml");
            fs::write(&config_path, &config).expect("write config.yml");
            let log_file = fs::File::create(&log).expect("create registry.log");
            let child = Command::new(&bin)
                .arg("serve")
                .arg(&config_path)
                .current_dir(&dir)
                .stdin(Stdio::null())
                .stdout(log_file.try_clone().expect("dup log"))
                .stderr(log_file)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
            let mut reg = Registry {
                host,
                ca: tls.as_ref().map(|t| t.ca_cert.clone()),
                cert_dir: tls.as_ref().map(|t| t.cert_dir.clone()),
                user: creds.map(|c| c.0.to_owned()),
                password: creds.map(|c| c.1.to_owned()),
                token_requests: token_requests.clone(),
                dir: dir.clone(),
                log: log.clone(),
                child,
                token_server: None,
                _tmp: None,
            };
            match reg.wait_ready() {
                Ok(()) => {
                    reg.token_server = token_server;
                    reg._tmp = Some(tmp);
                    return reg;
                }
                Err(Some(text)) if text.contains("address already in use") => {
                    last_log = text;
                    continue;
                }
                Err(text) => panic!(
                    "docker-registry ({flavour:?}) did not come up on {}:\n--- config.yml ---\n\
                     {config}\n--- registry.log ---\n{}",
                    reg.host,
                    text.unwrap_or_else(|| reg.log())
                ),
            }
        }
        panic!("docker-registry could not bind a port after 5 tries:\n{last_log}")
    }

    /// Poll `GET /v2/` until it answers 200 or 401. `Err(Some(log))` if the process died,
    /// `Err(None)` on timeout.
    fn wait_ready(&mut self) -> Result<(), Option<String>> {
        let deadline = Instant::now() + STARTUP_DEADLINE;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(Some(format!("exited with {status}\n{}", self.log())));
            }
            if Instant::now() > deadline {
                return Err(None);
            }
            let status = match &self.ca {
                None => http_status(&self.host, "/v2/"),
                Some(ca) => https_status(&self.host, "/v2/", ca),
            };
            if matches!(status, Some(200) | Some(401)) {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// The registry's log so far (stdout and stderr of `docker-registry`).
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn is_tls(&self) -> bool {
        self.ca.is_some()
    }

    /// `docker://HOST/REPO_TAG`
    pub fn reference(&self, repo_tag: &str) -> String {
        format!("docker://{}/{repo_tag}", self.host)
    }

    /// Flags lamina needs for this registry: `--ca-cert CA` for the TLS flavours.
    pub fn lamina_flags(&self) -> Vec<String> {
        match &self.ca {
            Some(ca) => vec!["--ca-cert".into(), ca.display().to_string()],
            None => Vec::new(),
        }
    }

    /// Token requests answered so far.
    pub fn token_count(&self) -> usize {
        self.token_requests.load(Ordering::SeqCst)
    }

    /// Every token request answered so far (token flavour only).
    pub fn token_log(&self) -> Vec<TokenRequest> {
        self.token_server
            .as_ref()
            .map(TokenServer::requests)
            .unwrap_or_default()
    }

    /// `base64(user:password)`, the `auth` of a docker config.json entry.
    pub fn auth_b64(&self) -> Option<String> {
        match (&self.user, &self.password) {
            (Some(u), Some(p)) => Some(base64(format!("{u}:{p}").as_bytes())),
            _ => None,
        }
    }

    /// Write `DIR/config.json` holding this registry's credentials (docker's `auths` format).
    pub fn write_docker_config(&self, dir: &Path) {
        let auth = self.auth_b64().expect("registry without credentials");
        write_docker_auths(dir, &[(&self.host, &auth)]);
    }

    /// skopeo flags to use this registry as a source (`prefix` "src") or destination ("dest");
    /// with an empty prefix, the flags of `skopeo inspect`.
    pub fn skopeo_flags(&self, prefix: &str) -> Vec<String> {
        let p = if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}-")
        };
        let mut v = Vec::new();
        match &self.cert_dir {
            Some(d) => {
                v.push(format!("--{p}cert-dir"));
                v.push(d.display().to_string());
            }
            None => v.push(format!("--{p}tls-verify=false")),
        }
        if let (Some(u), Some(pw)) = (&self.user, &self.password) {
            v.push(format!("--{p}creds"));
            v.push(format!("{u}:{pw}"));
        }
        v
    }

    /// `skopeo copy [--all] SRC docker://HOST/REPO_TAG`, which must succeed.
    pub fn skopeo_push(&self, src: &str, repo_tag: &str, all: bool) {
        let mut args: Vec<String> = vec!["copy".into()];
        if all {
            args.push("--all".into());
        }
        args.extend(self.skopeo_flags("dest"));
        args.push(src.into());
        args.push(self.reference(repo_tag));
        skopeo_ok(&args);
    }

    /// `skopeo copy docker://HOST/REPO_TAG DEST`, which must succeed.
    pub fn skopeo_pull(&self, repo_tag: &str, dest: &str) {
        let mut args: Vec<String> = vec!["copy".into()];
        args.extend(self.skopeo_flags("src"));
        args.push(self.reference(repo_tag));
        args.push(dest.into());
        skopeo_ok(&args);
    }

    /// The manifest bytes as the registry serves them (`skopeo inspect --raw`).
    pub fn raw_manifest(&self, repo_tag: &str) -> Vec<u8> {
        let mut args: Vec<String> = vec!["inspect".into(), "--raw".into()];
        args.extend(self.skopeo_flags(""));
        args.push(self.reference(repo_tag));
        skopeo_ok(&args)
    }

    /// sha256 of [`Registry::raw_manifest`].
    pub fn manifest_digest(&self, repo_tag: &str) -> String {
        sha256_digest(&self.raw_manifest(repo_tag))
    }

    /// The registry's storage for `repo` (the filesystem driver's layout).
    pub fn repo_dir(&self, repo: &str) -> PathBuf {
        self.dir
            .join("data/docker/registry/v2/repositories")
            .join(repo)
    }

    /// Blobs the registry stores (`.../v2/blobs/sha256/xx/<hex>/data`).
    pub fn blob_count(&self) -> usize {
        tree_snapshot(&self.dir.join("data"))
            .iter()
            .filter(|(p, n)| {
                matches!(n, Node::File { .. })
                    && p.starts_with("docker/registry/v2/blobs")
                    && p.file_name().is_some_and(|f| f == "data")
            })
            .count()
    }
}

/// A path as a YAML (JSON) string.
fn yaml_path(p: &Path) -> String {
    serde_json::to_string(p.to_str().expect("utf-8 path")).expect("JSON string")
}

/// The `auth:` section of the registry's config for `flavour`, and the token server it names.
fn auth_config(
    flavour: Flavour,
    creds: Option<(&str, &str)>,
    dir: &Path,
    token_requests: &Arc<AtomicUsize>,
) -> (String, Option<TokenServer>) {
    let mut token_server = None;
    let auth = match flavour {
        Flavour::Plain => String::new(),
        Flavour::TlsBasic => {
            let (user, password) = creds.expect("credentials");
            let line = run_tool_ok("htpasswd", &["-Bbn", user, password], None, dir);
            let path = dir.join("htpasswd");
            fs::write(
                &path,
                String::from_utf8_lossy(&line).trim().to_owned() + "\n",
            )
            .expect("write htpasswd");
            format!(
                "auth:\n  htpasswd:\n    realm: \"lamina-test\"\n    path: {}\n",
                yaml_path(&path)
            )
        }
        Flavour::TlsToken => {
            let (user, password) = creds.expect("credentials");
            let ts = TokenServer::start(&dir.join("token"), user, password, token_requests.clone());
            let auth = format!(
                "auth:\n  token:\n    realm: \"{}\"\n    service: \"{TOKEN_SERVICE}\"\n    \
                 issuer: \"{TOKEN_ISSUER}\"\n    rootcertbundle: {}\n",
                ts.realm(),
                yaml_path(&ts.cert)
            );
            token_server = Some(ts);
            auth
        }
    };
    (auth, token_server)
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `skopeo inspect --raw` finds `repo_tag`.
pub fn registry_has(reg: &Registry, repo_tag: &str) -> bool {
    let mut args = strings(&["inspect", "--raw"]);
    args.extend(reg.skopeo_flags(""));
    args.push(reg.reference(repo_tag));
    skopeo(&args).status.success()
}

/// `blobs` of a push report, by digest: (size, fate).
pub fn blob_fates(report: &Value) -> BTreeMap<String, (u64, String)> {
    report["blobs"]
        .as_array()
        .unwrap_or_else(|| panic!("no blobs array in {report}"))
        .iter()
        .map(|b| {
            (
                b["digest"].as_str().expect("blob digest").to_owned(),
                (
                    b["size"].as_u64().expect("blob size"),
                    b["fate"].as_str().expect("blob fate").to_owned(),
                ),
            )
        })
        .collect()
}

/// Config and layers of an image manifest, by digest: size.
pub fn manifest_blobs(manifest: &Value) -> BTreeMap<String, u64> {
    std::iter::once(&manifest["config"])
        .chain(manifest["layers"].as_array().expect("layers"))
        .map(|d| {
            (
                d["digest"].as_str().expect("digest").to_owned(),
                d["size"].as_u64().expect("size"),
            )
        })
        .collect()
}
