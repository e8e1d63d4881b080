//! An OCI distribution API client: ping and scheme choice, Basic and Bearer auth with tokens
//! cached per scope, bounded retries with backoff, and the pull and push flows built on it.

pub mod auth;
pub mod buildcache;
pub mod ecr;
pub mod pull;
pub mod push;
pub mod scope;
pub mod timing;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::{RequestBuilder, Response, StatusCode};

use crate::error::{Error, IoContext, Result};
use crate::progress::Progress;
use auth::{Challenge, Credentials};
use scope::Scopes;
use timing::{Activity, Deadline, Expired};

/// Settings for talking to registries, and the caches and credentials the library uses: it
/// reads no environment variables itself, so the caller (the CLI) says where things are.
/// Clones share the ECR token cache.
#[derive(Clone)]
pub struct Options {
    /// Registries (`host[:port]`) that may use plain HTTP or unverified TLS.
    pub insecure: Vec<String>,
    /// Extra PEM files of trusted certificates (the CLI adds `SSL_CERT_FILE` here).
    pub ca_certs: Vec<PathBuf>,
    /// Blobs transferred at once.
    pub jobs: usize,
    /// Attempts after the first on retriable failures.
    pub retries: u32,
    /// Upload chunk size in bytes (>= 5 MiB).
    pub chunk_size: u64,
    /// Directory of the docker `config.json` (credentials are read from and saved there).
    pub docker_config: PathBuf,
    /// Blob cache directory.
    pub cache_dir: PathBuf,
    /// How transfers are shown.
    pub progress: Progress,
    /// Credentials to use instead of the docker config (e.g. `login`).
    pub credentials: Option<Credentials>,
    /// ECR: profile, repository creation.
    pub ecr: ecr::EcrOptions,
    /// `(registry or None for every ECR registry, URL)`: reach a registry's API at another
    /// address (`--registry-endpoint`), e.g. a local stand-in for ECR.
    pub endpoints: Vec<(Option<String>, String)>,
    /// ECR registry passwords, reused until five minutes before they expire: one cache for
    /// every client made from these options (and their clones).
    pub ecr_tokens: std::sync::Arc<ecr::TokenCache>,
    /// A transfer that sends and receives nothing for this long fails (and is retried like a
    /// dropped connection): a registry that stopped answering.
    pub stall_timeout: Duration,
    /// When every registry request of the command must be done (`--timeout`); `None`, no
    /// limit. A registry trickling bytes never stalls, but still meets this.
    pub deadline: Option<Deadline>,
    /// Debug traces (the CLI sets it from `LAMINA_DEBUG`): the registry cache's update
    /// attempts, digest by digest, go to the command's log as `debug:` lines.
    pub debug: bool,
}

/// The smallest upload chunk ECR (and S3 behind it) accepts: 5 MiB.
pub const MIN_CHUNK: u64 = 5 << 20;
/// The upload chunk size unless one is given: 32 MiB.
pub const DEFAULT_CHUNK: u64 = 32 << 20;
/// The stall limit unless one is given: 30 s without a byte.
pub const DEFAULT_STALL: Duration = Duration::from_secs(30);

/// The most lamina reads of a manifest or index: 4 MiB, as the distribution spec suggests
/// registries accept.
pub(crate) const MANIFEST_CAP: usize = 4 << 20;
/// The most lamina reads of a token server's answer (tokens are a few KiB).
pub(crate) const TOKEN_CAP: usize = 256 << 10;
/// The most lamina reads of an error answer's body (only its first errors are shown).
pub(crate) const ERROR_CAP: usize = 64 << 10;

/// A response body read into memory up to a cap.
pub(crate) struct Capped {
    /// The bytes read: all of the body, or its first `cap` bytes.
    pub bytes: Vec<u8>,
    /// The body was longer than the cap (the rest was not read).
    pub over: bool,
}

/// Show a byte count as lamina's caps are written: `4 MiB`, `64 KiB`.
pub(crate) fn show_cap(cap: usize) -> String {
    if cap >= 1 << 20 && cap.is_multiple_of(1 << 20) {
        format!("{} MiB", cap >> 20)
    } else if cap >= 1 << 10 && cap.is_multiple_of(1 << 10) {
        format!("{} KiB", cap >> 10)
    } else {
        format!("{cap} bytes")
    }
}

impl Options {
    /// Options with lamina's defaults (4 jobs, 5 retries, 32 MiB chunks, no progress, a new
    /// ECR token cache), the blob cache in `cache_dir` and the docker config in
    /// `docker_config`. There is no `Default`: these two paths are the caller's to choose (the
    /// CLI takes them from `LAMINA_CACHE_DIR`/`XDG_CACHE_HOME`/`HOME` and `DOCKER_CONFIG`).
    pub fn new(cache_dir: PathBuf, docker_config: PathBuf) -> Options {
        Options {
            insecure: Vec::new(),
            ca_certs: Vec::new(),
            jobs: 4,
            retries: 5,
            chunk_size: DEFAULT_CHUNK,
            docker_config,
            cache_dir,
            progress: Progress::Quiet,
            credentials: None,
            ecr: Default::default(),
            endpoints: Vec::new(),
            ecr_tokens: Default::default(),
            stall_timeout: DEFAULT_STALL,
            deadline: None,
            debug: false,
        }
    }
}

/// Is `host[:port]` on loopback (where plain HTTP is always allowed)?
pub fn is_loopback(host: &str) -> bool {
    let h = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        host.rsplit_once(':')
            .filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
            .map_or(host, |(h, _)| h)
    };
    h == "localhost" || h.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `host[:port]` of a URL, the port always shown (for comparisons with `--insecure-registry`).
fn authority(u: &reqwest::Url) -> String {
    let host = u.host_str().unwrap_or("");
    match u.port_or_known_default() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    }
}

/// May Basic credentials for the registry at `registry` go to the token server at `realm`?
/// Over TLS, yes. Over plain HTTP only where nobody else can read them: a loopback realm of a
/// loopback registry, or a realm the user allowed plain HTTP for (`insecure`) when the
/// registry is plain HTTP too. Never from an HTTPS registry to a plain-HTTP realm elsewhere.
pub(crate) fn realm_may_get_credentials(
    registry: &reqwest::Url,
    realm: &reqwest::Url,
    insecure: &[String],
) -> bool {
    match realm.scheme() {
        "https" => true,
        "http" => {
            let at = authority(realm);
            if is_loopback(&at) && is_loopback(&authority(registry)) {
                return true;
            }
            let named = insecure
                .iter()
                .any(|h| h == &at || realm.port().is_none() && h == realm.host_str().unwrap_or(""));
            registry.scheme() == "http" && named
        }
        _ => false,
    }
}

/// The manifest media types lamina reads, in the order it prefers them.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// A client for one registry.
pub struct Client {
    http: reqwest::Client,
    /// `https://host` or `http://host`.
    base: reqwest::Url,
    registry: String,
    creds: Option<Credentials>,
    challenge: Mutex<Option<Challenge>>,
    tokens: Mutex<HashMap<Scopes, String>>,
    refresh: tokio::sync::Mutex<()>,
    /// ECR repositories this client has made sure exist.
    ensured: Mutex<std::collections::HashSet<String>>,
    pub opts: Options,
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((200u64 << attempt.min(5)).min(5_000))
}

fn retriable_status(s: StatusCode) -> bool {
    s == StatusCode::REQUEST_TIMEOUT || s == StatusCode::TOO_MANY_REQUESTS || s.is_server_error()
}

/// How long a `Retry-After` header asks to wait: delay-seconds or an HTTP date (RFC 9110
/// 10.2.3), at most a minute; a date in the past means now.
pub(crate) fn retry_after(resp: &Response) -> Option<Duration> {
    let v = resp.headers().get(RETRY_AFTER)?.to_str().ok()?;
    retry_after_value(v.trim(), std::time::SystemTime::now())
}

fn retry_after_value(v: &str, now: std::time::SystemTime) -> Option<Duration> {
    let wait = match v.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => httpdate::parse_http_date(v)
            .ok()?
            .duration_since(now)
            .unwrap_or(Duration::ZERO),
    };
    Some(wait.min(Duration::from_secs(60)))
}

/// Only the cause chain of a transport error, with no credentials (none are ever in URLs).
fn net_message(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// Why a registry could not be reached, judged from the error chain of the connection, so
/// the message says the real cause and retries suit it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    /// The host name did not resolve (offline, or a misspelt name).
    Dns,
    /// Nothing listens on the port.
    Refused,
    /// The TLS handshake failed because the server answered in plain HTTP.
    PlainHttp,
    /// The TLS handshake failed otherwise (an untrusted or wrong certificate).
    Tls,
    /// A timeout, a reset, anything else.
    Other,
}

impl Cause {
    fn of(e: &reqwest::Error) -> Cause {
        let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
        let mut text = String::new();
        while let Some(c) = src {
            if let Some(io) = c.downcast_ref::<std::io::Error>()
                && io.kind() == std::io::ErrorKind::ConnectionRefused
            {
                return Cause::Refused;
            }
            text.push_str(&c.to_string().to_ascii_lowercase());
            text.push('\n');
            src = c.source();
        }
        if text.contains("dns error") || text.contains("failed to lookup address") {
            Cause::Dns
        } else if text.contains("connection refused") {
            Cause::Refused
        } else if text.contains("invalidcontenttype") || text.contains("corrupt message") {
            Cause::PlainHttp
        } else if text.contains("certificate") || text.contains("tls") || text.contains("handshake")
        {
            Cause::Tls
        } else {
            Cause::Other
        }
    }

    /// How many retries this cause deserves, of the `configured` number.
    fn retries(self, configured: u32) -> u32 {
        match self {
            Cause::Dns | Cause::PlainHttp | Cause::Tls => configured.min(1),
            Cause::Refused | Cause::Other => configured,
        }
    }

    fn what(self) -> &'static str {
        match self {
            Cause::Dns => "its name does not resolve (DNS; offline, or a misspelt host?)",
            Cause::Refused => "connection refused (nothing listens there)",
            Cause::PlainHttp => "the TLS handshake failed: the server speaks plain HTTP",
            Cause::Tls => "the TLS handshake failed",
            Cause::Other => "no answer",
        }
    }

    /// A hint that applies to this cause only.
    fn hint(self, allow_http: bool) -> &'static str {
        match self {
            Cause::PlainHttp if !allow_http => {
                " (a registry serving plain HTTP needs --insecure-registry HOST)"
            }
            Cause::Tls if !allow_http => {
                " (a registry with a private CA needs --ca-cert FILE; one serving plain HTTP, --insecure-registry HOST)"
            }
            Cause::Tls => " (a registry with a private CA needs --ca-cert FILE)",
            _ => "",
        }
    }
}

/// The HTTP client for `registry`: timeouts, redirects, extra trusted certificates.
fn http_client(registry: &str, insecure: bool, opts: &Options) -> Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .user_agent(concat!("lamina/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(15).min(opts.stall_timeout))
        // No read timeout: `timing` watches for stalls, counting upload progress too. Sent
        // bytes the peer stops acknowledging fail the connection at the stall limit.
        .tcp_user_timeout(opts.stall_timeout)
        // Redirects to storage (S3 for ECR): reqwest drops Authorization across hosts.
        .redirect(reqwest::redirect::Policy::limited(10));
    let mut certs = Vec::new();
    for f in &opts.ca_certs {
        let pem = std::fs::read(f).at("reading CA certificates from", f)?;
        let found = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
            Error::Usage(format!(
                "{}: not a PEM certificate bundle: {e}",
                f.display()
            ))
        })?;
        if found.is_empty() {
            return Err(Error::Usage(format!(
                "{}: holds no PEM certificates",
                f.display()
            )));
        }
        certs.extend(found);
    }
    if !certs.is_empty() {
        b = b.tls_certs_merge(certs);
    }
    if insecure {
        b = b.danger_accept_invalid_certs(true);
    }
    b.build().map_err(|e| {
        Error::registry(
            registry,
            format!("setting up HTTP for {registry}: {}", net_message(&e)),
        )
    })
}

/// The credentials for `registry`: given ones, else (ECR) a password from the AWS credential
/// chain unless the docker config names a credential helper (such as ecr-login) for it, else
/// the docker config's.
async fn credentials(
    registry: &str,
    ecr: Option<&ecr::EcrRegistry>,
    opts: &Options,
) -> Result<Option<Credentials>> {
    if let Some(c) = &opts.credentials {
        return Ok(Some(c.clone()));
    }
    match ecr {
        Some(e) if auth::helper_for(&opts.docker_config, registry)?.is_none() => {
            match ecr::credentials(e, &opts.ecr, &opts.ecr_tokens).await {
                Ok(c) => Ok(Some(c)),
                // No usable AWS identity: a `docker login` (e.g. from
                // `aws ecr get-login-password`) saved in the docker config still works.
                Err(err) => match docker_credentials(registry, opts).await? {
                    Some(c) => Ok(Some(c)),
                    None => Err(err),
                },
            }
        }
        _ => docker_credentials(registry, opts).await,
    }
}

/// [`auth::lookup`] on the blocking pool: it may run a credential helper and wait for it.
async fn docker_credentials(registry: &str, opts: &Options) -> Result<Option<Credentials>> {
    let (dir, registry) = (opts.docker_config.clone(), registry.to_owned());
    crate::task::blocking("running a credential helper", move || {
        auth::lookup(&dir, &registry)
    })
    .await
}

impl Client {
    /// Connect to `registry` (as named in references): choose the scheme, learn how it
    /// authenticates, and find credentials.
    pub async fn connect(registry: &str, api_host: &str, opts: &Options) -> Result<Client> {
        let insecure = opts.insecure.iter().any(|h| h == registry || h == api_host);
        let http = http_client(registry, insecure, opts)?;
        let ecr = ecr::parse_host(registry);
        let creds = credentials(registry, ecr.as_ref(), opts).await?;
        let endpoint = opts
            .endpoints
            .iter()
            .find(|(r, _)| r.as_deref() == Some(registry))
            .or_else(|| {
                opts.endpoints
                    .iter()
                    .find(|(r, _)| r.is_none() && ecr.is_some())
            })
            .map(|(_, url)| url.clone());
        // (base, plain HTTP allowed, plain HTTP tried first: on loopback, where local
        // registries mostly speak it, and a TLS one answers a plain request with a 400 at once)
        let (base, allow_http, http_first) = match endpoint {
            // An explicit scheme is the user's choice: no fallback.
            Some(url) if url.contains("://") => (url, false, false),
            Some(hostport) => {
                let lo = is_loopback(&hostport);
                (format!("https://{hostport}"), insecure || lo, lo)
            }
            None => {
                let lo = is_loopback(api_host);
                (format!("https://{api_host}"), insecure || lo, lo)
            }
        };
        let base: reqwest::Url = base
            .parse()
            .map_err(|e| Error::Usage(format!("registry address `{base}` for {registry}: {e}")))?;
        let mut client = Client {
            http,
            base: base.clone(),
            registry: registry.to_owned(),
            creds,
            challenge: Mutex::new(None),
            tokens: Mutex::new(HashMap::new()),
            refresh: tokio::sync::Mutex::new(()),
            ensured: Mutex::new(Default::default()),
            opts: opts.clone(),
        };
        let mut candidates = vec![base.clone()];
        if allow_http {
            let mut plain = base.clone();
            plain.set_scheme("http").expect("http is a valid scheme");
            if http_first {
                candidates.insert(0, plain);
            } else {
                candidates.push(plain);
            }
        }
        client.ping(&candidates, allow_http).await?;
        Ok(client)
    }

    /// Try `candidates` (the same address by scheme) once: the first that answers like a
    /// server (becoming the base), else every failure and the cause of the first (the
    /// scheme lamina would use). Only the deadline is an error here.
    async fn ping_once(
        &mut self,
        candidates: &[reqwest::Url],
    ) -> Result<std::result::Result<Response, (String, Cause)>> {
        let mut errors = Vec::new();
        let mut cause = None;
        for c in candidates {
            let url = c.join("/v2/").expect("valid path");
            let sent = self
                .timed(self.http.get(url).send(), &Activity::new())
                .await;
            let (message, why) = match sent {
                // A TLS server's answer to plain HTTP: try the next scheme.
                Ok(Ok(r))
                    if c.scheme() == "http"
                        && r.status() == StatusCode::BAD_REQUEST
                        && candidates.len() > 1 =>
                {
                    (format!("{c} speaks TLS"), Cause::Other)
                }
                Ok(Ok(r)) => {
                    self.base = c.clone();
                    return Ok(Ok(r));
                }
                Ok(Err(e)) => (format!("{c}: {}", net_message(&e)), Cause::of(&e)),
                Err(e @ Expired::Deadline(_)) => return Err(self.expired(e, "GET /v2/")),
                Err(e) => (format!("{c}: {}", e.describe()), Cause::Other),
            };
            errors.push(message);
            cause.get_or_insert(why);
        }
        Ok(Err((errors.join("; "), cause.unwrap_or(Cause::Other))))
    }

    /// Ping /v2/ to choose the scheme and learn the challenge, retrying while it is down.
    async fn ping(&mut self, candidates: &[reqwest::Url], allow_http: bool) -> Result<()> {
        let registry = self.registry.clone();
        let mut attempt = 0;
        loop {
            match self.ping_once(candidates).await? {
                Ok(r) if r.status() == StatusCode::UNAUTHORIZED => {
                    let ch = r
                        .headers()
                        .get(WWW_AUTHENTICATE)
                        .and_then(|h| h.to_str().ok())
                        .and_then(auth::parse_challenge);
                    *self.challenge.lock().expect("lock") = ch;
                    return Ok(());
                }
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) if retriable_status(r.status()) && attempt < self.opts.retries => {}
                Ok(r) => {
                    return Err(self.fail(
                        Some(r.status()),
                        format!(
                            "registry {registry} answered {} to GET /v2/: it does not look like an OCI registry",
                            r.status()
                        ),
                    ));
                }
                // A name that does not resolve will not within seconds: one retry, not five.
                Err((_, cause)) if attempt < cause.retries(self.opts.retries) => {}
                Err((e, cause)) => {
                    let hint = cause.hint(allow_http);
                    return Err(self.fail(
                        None,
                        format!(
                            "cannot reach registry {registry}: {}: {e}{hint}",
                            cause.what()
                        ),
                    ));
                }
            }
            self.pause(backoff(attempt), "GET /v2/").await?;
            attempt += 1;
        }
    }

    /// Make sure the credentials get push access to `repository` (for Bearer auth, a token
    /// with the push scope), so a build fails before its work rather than at upload time.
    pub async fn check_push_access(&self, repository: &str) -> Result<()> {
        let scope = Scopes::push(repository);
        // A Bearer token is only granted to good credentials; Basic credentials are only
        // judged when sent, so send them once (`send` turns a 401 into an Auth error).
        let url = self.url("/v2/");
        let resp = self
            .send(&scope, true, &|http| Ok(http.get(url.clone())))
            .await?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(self.unexpected("checking access", resp).await)
        }
    }

    /// On ECR, make sure `repository` exists (creating it with `--create-repo`), once per
    /// client; elsewhere nothing to do.
    pub async fn ensure_repository(&self, repository: &str) -> Result<()> {
        let Some(ecr) = ecr::parse_host(&self.registry) else {
            return Ok(());
        };
        if self.ensured.lock().expect("lock").contains(repository) {
            return Ok(());
        }
        ecr::ensure_repository(&ecr, repository, &self.opts.ecr).await?;
        self.ensured
            .lock()
            .expect("lock")
            .insert(repository.to_owned());
        Ok(())
    }

    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// An absolute URL for a path, or a `Location` (absolute or relative) resolved against the registry.
    pub fn url(&self, path_or_location: &str) -> reqwest::Url {
        self.base
            .join(path_or_location)
            .unwrap_or_else(|_| self.base.clone())
    }

    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &Scopes,
    ) -> Result<String> {
        let mut url: reqwest::Url = realm.parse().map_err(|e| {
            self.fail(
                None,
                format!(
                    "registry {} sent a bad token realm `{realm}`: {e}",
                    self.registry
                ),
            )
        })?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            for sc in &scope.0 {
                q.append_pair("scope", &sc.to_string());
            }
        }
        let creds = self.creds_for_realm(&url)?;
        let mut attempt = 0;
        let what = format!("getting a token from {realm}");
        let resp = loop {
            let mut rb = self.http.get(url.clone());
            if let Some(c) = creds {
                rb = rb.header(AUTHORIZATION, c.basic_header());
            }
            let failure = match self.timed(rb.send(), &Activity::new()).await {
                Ok(Ok(r)) if retriable_status(r.status()) && attempt < self.opts.retries => {
                    self.pause(retry_after(&r).unwrap_or(backoff(attempt)), &what)
                        .await?;
                    attempt += 1;
                    continue;
                }
                Ok(Ok(r)) => break r,
                Ok(Err(e)) => (net_message(&e), Cause::of(&e)),
                Err(e @ Expired::Deadline(_)) => return Err(self.expired(e, &what)),
                Err(e) => (e.describe(), Cause::Other),
            };
            let (failure, cause) = failure;
            // As for the registry itself: a name that does not resolve is retried once.
            if attempt >= cause.retries(self.opts.retries) {
                return Err(self.fail(
                    None,
                    format!(
                        "getting a token for {} from {realm}: {}: {failure}",
                        self.registry,
                        cause.what()
                    ),
                ));
            }
            self.pause(backoff(attempt), &what).await?;
            attempt += 1;
        };
        self.read_token(realm, resp).await
    }

    /// The credentials to send to the token realm `realm`, if any: see
    /// [`realm_may_get_credentials`]. A realm that may not have them is an error rather than
    /// an anonymous request, which would only fail later and less clearly.
    fn creds_for_realm(&self, realm: &reqwest::Url) -> Result<Option<&Credentials>> {
        let Some(c) = &self.creds else {
            return Ok(None);
        };
        if realm_may_get_credentials(&self.base, realm, &self.opts.insecure) {
            return Ok(Some(c));
        }
        let mut shown = realm.clone();
        shown.set_query(None);
        Err(Error::Auth(format!(
            "registry {} (at {}) names the token server {shown}: lamina sends credentials to a token server only over HTTPS (plain HTTP only within loopback), so it does not send them there",
            self.registry, self.base
        )))
    }

    /// The token in a token server's answer.
    async fn read_token(&self, realm: &str, resp: Response) -> Result<String> {
        if resp.status() == StatusCode::UNAUTHORIZED || resp.status() == StatusCode::FORBIDDEN {
            return Err(self.denied(resp.status()));
        }
        if !resp.status().is_success() {
            return Err(self.fail(
                Some(resp.status()),
                format!(
                    "token server {realm} for {} answered {}",
                    self.registry,
                    resp.status()
                ),
            ));
        }
        #[derive(serde::Deserialize)]
        struct Tok {
            token: Option<String>,
            access_token: Option<String>,
        }
        let body = self
            .read_capped(resp, TOKEN_CAP, &format!("reading the token from {realm}"))
            .await?;
        if body.over {
            return Err(self.fail(
                None,
                format!(
                    "token server {realm} for {} sent an answer larger than {}, the most lamina reads of a token",
                    self.registry,
                    show_cap(TOKEN_CAP)
                ),
            ));
        }
        let body = body.bytes;
        let t: Tok = serde_json::from_slice(&body).map_err(|e| {
            self.fail(
                None,
                format!("token server {realm} sent an unreadable answer: {e}"),
            )
        })?;
        t.token
            .or(t.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| self.fail(None, format!("token server {realm} sent no token")))
    }

    fn denied(&self, status: StatusCode) -> Error {
        let who = match &self.creds {
            Some(c) => format!("as `{}`", c.username),
            None => "anonymously (no credentials found: use `lamina login` or the docker config)"
                .to_owned(),
        };
        Error::Auth(format!(
            "registry {} refused access {who} ({status}): check the credentials and the repository permissions",
            self.registry
        ))
    }

    /// The Authorization header for `scope`, fetching a token if needed (or if `refresh`).
    async fn auth_header(&self, scope: &Scopes, refresh: bool) -> Result<Option<HeaderValue>> {
        let ch = self.challenge.lock().expect("lock").clone();
        let v = match ch {
            None => None,
            Some(Challenge::Basic) => self.creds.as_ref().map(Credentials::basic_header),
            Some(Challenge::Bearer { realm, service }) => {
                if !refresh && let Some(t) = self.tokens.lock().expect("lock").get(scope) {
                    return Ok(HeaderValue::from_str(&format!("Bearer {t}")).ok());
                }
                // One fetch per scope at a time: parallel blob pushes share the token.
                let _g = self.refresh.lock().await;
                if !refresh && let Some(t) = self.tokens.lock().expect("lock").get(scope) {
                    return Ok(HeaderValue::from_str(&format!("Bearer {t}")).ok());
                }
                let t = self.fetch_token(&realm, service.as_deref(), scope).await?;
                self.tokens
                    .lock()
                    .expect("lock")
                    .insert(scope.clone(), t.clone());
                Some(format!("Bearer {t}"))
            }
        };
        Ok(v.and_then(|v| {
            let mut h = HeaderValue::from_str(&v).ok()?;
            h.set_sensitive(true);
            Some(h)
        }))
    }

    /// Send a request built by `build` (called again for each attempt) with auth for `scope`;
    /// with `retry`, retry connection errors, stalls, 408, 429 and 5xx with backoff (honouring
    /// `Retry-After`). A 401 refreshes the credentials once.
    pub async fn send(
        &self,
        scope: &Scopes,
        retry: bool,
        build: &(dyn Fn(&reqwest::Client) -> Result<RequestBuilder> + Sync),
    ) -> Result<Response> {
        self.send_tracked(scope, retry, &|http, _| build(http))
            .await
    }

    /// [`Client::send`] for requests whose body streams: `build` gets the attempt's
    /// [`Activity`] to touch as the body is sent, so a long upload is not taken for a stall.
    pub(crate) async fn send_tracked(
        &self,
        scope: &Scopes,
        retry: bool,
        build: &(dyn Fn(&reqwest::Client, &Activity) -> Result<RequestBuilder> + Sync),
    ) -> Result<Response> {
        let mut attempt = 0;
        let mut reauthed = false;
        let max = if retry { self.opts.retries } else { 0 };
        loop {
            let activity = Activity::new();
            let mut rb = build(&self.http, &activity)?;
            if let Some(h) = self.auth_header(scope, false).await? {
                rb = rb.header(AUTHORIZATION, h);
            }
            let (http, req) = rb.build_split();
            let req = req.map_err(|e| {
                Error::Internal(format!(
                    "a request to {}: {}",
                    self.registry,
                    net_message(&e)
                ))
            })?;
            let what = format!("{} {}", req.method(), req.url().path());
            // (retriable, message) when no answer came.
            let sent = match self.timed(http.execute(req), &activity).await {
                Ok(Ok(r)) => Ok(r),
                Ok(Err(e)) => Err(format!("registry {}: {}", self.registry, net_message(&e))),
                Err(e @ Expired::Deadline(_)) => return Err(self.expired(e, &what)),
                Err(e) => Err(self.expired_message(e, &what)),
            };
            match sent {
                Ok(resp) if resp.status() == StatusCode::UNAUTHORIZED && !reauthed => {
                    reauthed = true;
                    self.reauthenticate(scope, &resp).await?;
                }
                Ok(resp) if resp.status() == StatusCode::UNAUTHORIZED => {
                    return Err(self.denied(resp.status()));
                }
                Ok(resp) if retriable_status(resp.status()) && attempt < max => {
                    let wait = retry_after(&resp).unwrap_or(backoff(attempt));
                    self.pause(wait, &what).await?;
                    attempt += 1;
                }
                Ok(resp) => return Ok(resp),
                Err(_) if attempt < max => {
                    self.pause(backoff(attempt), &what).await?;
                    attempt += 1;
                }
                Err(message) => return Err(self.fail(None, message)),
            }
        }
    }

    /// After a 401: take the challenge it carries and fetch new credentials for `scope`; the
    /// same Basic challenge again (or none) means the credentials were refused.
    async fn reauthenticate(&self, scope: &Scopes, resp: &Response) -> Result<()> {
        let ch = resp
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|h| h.to_str().ok())
            .and_then(auth::parse_challenge);
        let known = self.challenge.lock().expect("lock").clone();
        if ch.is_none() || (ch == known && matches!(ch, Some(Challenge::Basic))) {
            return Err(self.denied(resp.status()));
        }
        *self.challenge.lock().expect("lock") = ch;
        self.auth_header(scope, true).await?;
        Ok(())
    }

    /// Await `fut` (a request to this registry, or a read of its answer) within the stall
    /// limit (counted from `activity`'s last progress) and the command's deadline.
    pub(crate) async fn timed<F: std::future::Future>(
        &self,
        fut: F,
        activity: &Activity,
    ) -> std::result::Result<F::Output, Expired> {
        timing::watch(fut, activity, self.opts.stall_timeout, self.opts.deadline).await
    }

    /// What a wait that expired during `what` means, naming this registry.
    fn expired_message(&self, e: Expired, what: &str) -> String {
        format!("registry {}: {what}: {}", self.registry, e.describe())
    }

    /// The error for a wait that expired during `what`.
    pub(crate) fn expired(&self, e: Expired, what: &str) -> Error {
        self.fail(None, self.expired_message(e, what))
    }

    /// Sleep `d` before another attempt at `what`, unless the deadline comes first.
    pub(crate) async fn pause(&self, d: Duration, what: &str) -> Result<()> {
        timing::pause(d, self.opts.deadline)
            .await
            .map_err(|e| self.expired(e, what))
    }

    /// Read `resp`'s body into memory, at most `cap` bytes of it (a longer body is cut off
    /// there, unread, and flagged), each chunk within the stall limit and the deadline.
    /// `what` names the read in errors.
    pub(crate) async fn read_capped(
        &self,
        mut resp: Response,
        cap: usize,
        what: &str,
    ) -> Result<Capped> {
        let activity = Activity::new();
        let mut bytes = Vec::new();
        loop {
            let chunk = match self.timed(resp.chunk(), &activity).await {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    let message =
                        format!("registry {}: {what}: {}", self.registry, net_message(&e));
                    return Err(self.fail(None, message));
                }
                Err(e) => return Err(self.expired(e, what)),
            };
            let Some(c) = chunk else {
                return Ok(Capped { bytes, over: false });
            };
            activity.touch();
            if bytes.len() + c.len() > cap {
                let room = cap - bytes.len();
                bytes.extend_from_slice(&c[..room]);
                return Ok(Capped { bytes, over: true });
            }
            bytes.extend_from_slice(&c);
        }
    }

    /// An [`Error::Registry`] from this registry (`status`, when it answered).
    pub fn fail(&self, status: Option<StatusCode>, message: String) -> Error {
        Error::Registry {
            registry: self.registry.clone(),
            status: status.map(|s| s.as_u16()),
            code: None,
            message,
        }
    }

    /// An error for an unexpected answer, with the registry's own error message if it sent one
    /// (its first error code becomes the error's `code`).
    pub async fn unexpected(&self, what: &str, resp: Response) -> Error {
        let status = resp.status();
        // The body only explains the status: what cannot be read is left out.
        let (body, over) = match self.read_capped(resp, ERROR_CAP, what).await {
            Ok(c) => (String::from_utf8_lossy(&c.bytes).into_owned(), c.over),
            Err(_) => (String::new(), false),
        };
        let errors: Vec<(String, String)> = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| {
                let errs = v.get("errors")?.as_array()?.clone();
                Some(
                    errs.iter()
                        .map(|e| {
                            let field =
                                |k: &str| e.get(k).and_then(|c| c.as_str()).map(str::to_owned);
                            (
                                field("code").unwrap_or_else(|| "ERROR".to_owned()),
                                field("message").unwrap_or_default(),
                            )
                        })
                        .collect(),
                )
            })
            .unwrap_or_default();
        let detail = if over {
            format!(
                "(an error body larger than {}, the most lamina reads of one: not shown)",
                show_cap(ERROR_CAP)
            )
        } else if errors.is_empty() {
            body.chars().take(200).collect()
        } else {
            let parts: Vec<String> = errors.iter().map(|(c, m)| format!("{c}: {m}")).collect();
            parts.join("; ")
        };
        Error::Registry {
            registry: self.registry.clone(),
            status: Some(status.as_u16()),
            code: errors.first().map(|(c, _)| c.clone()),
            message: format!("registry {}: {what}: {status} {detail}", self.registry),
        }
    }
}

/// Check `opts.credentials` against `registry` and, if it accepts them, save them in the docker
/// config. Returns the config file written.
pub async fn login(registry: &str, opts: &Options) -> Result<PathBuf> {
    let creds = opts
        .credentials
        .clone()
        .ok_or_else(|| Error::Usage("login needs a user name and password".into()))?;
    let api_host = crate::reference::api_host(registry);
    let client = Client::connect(registry, api_host, opts).await?;
    let url = client.url("/v2/");
    let resp = client
        .send(&Scopes::none(), true, &|http| Ok(http.get(url.clone())))
        .await?;
    if !resp.status().is_success() {
        return Err(client.unexpected("checking the credentials", resp).await);
    }
    auth::save(&opts.docker_config, registry, &creds)
}

/// Run `tasks` on the runtime with at most `jobs` at a time. Results come back in task order;
/// if any failed, the first failure in task order is the error.
pub async fn bounded<T, F>(jobs: usize, tasks: Vec<F>) -> Result<Vec<T>>
where
    T: Send + 'static,
    F: std::future::Future<Output = Result<T>> + Send + 'static,
{
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(jobs.max(1)));
    let mut set = tokio::task::JoinSet::new();
    let n = tasks.len();
    for (i, t) in tasks.into_iter().enumerate() {
        let sem = sem.clone();
        set.spawn(async move {
            let _permit = sem
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            (i, t.await)
        });
    }
    let mut results: Vec<Option<Result<T>>> = (0..n).map(|_| None).collect();
    while let Some(j) = set.join_next().await {
        let (i, r) = j.map_err(|e| Error::Internal(format!("a transfer task failed: {e}")))?;
        results[i] = Some(r);
    }
    results
        .into_iter()
        .map(|r| r.expect("every task ran"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_and_http_dates() {
        use std::time::{Duration, SystemTime};
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(retry_after_value("7", now), Some(Duration::from_secs(7)));
        assert_eq!(retry_after_value("600", now), Some(Duration::from_secs(60)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(5));
        assert_eq!(retry_after_value(&later, now), Some(Duration::from_secs(5)));
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(5));
        assert_eq!(retry_after_value(&earlier, now), Some(Duration::ZERO));
        assert_eq!(retry_after_value("soon", now), None);
    }

    #[test]
    fn loopback_hosts() {
        for h in [
            "localhost:5000",
            "127.0.0.1:5000",
            "127.1.2.3",
            "[::1]:5000",
            "localhost",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in [
            "registry.example.com",
            "10.0.0.1:5000",
            "localhost.example.com",
        ] {
            assert!(!is_loopback(h), "{h}");
        }
    }

    #[test]
    fn credentials_go_to_realms_over_tls_or_within_loopback_only() {
        let u = |s: &str| s.parse::<reqwest::Url>().unwrap();
        let none: &[String] = &[];
        let may = |reg: &str, realm: &str| realm_may_get_credentials(&u(reg), &u(realm), none);
        // TLS anywhere: another port, another host.
        assert!(may(
            "https://reg.example.com",
            "https://auth.example.com/token"
        ));
        assert!(may(
            "https://reg.example.com",
            "https://reg.example.com:8443/token"
        ));
        // Plain HTTP: never from an HTTPS registry, never to another host.
        assert!(!may(
            "https://reg.example.com",
            "http://reg.example.com/token"
        ));
        assert!(!may(
            "https://reg.example.com",
            "http://127.0.0.1:5001/token"
        ));
        assert!(!may(
            "http://reg.example.com",
            "http://auth.example.com/token"
        ));
        assert!(!may(
            "http://127.0.0.1:5000",
            "http://auth.example.com/token"
        ));
        assert!(!may("https://127.0.0.1:5000", "http://0.0.0.0:5001/token"));
        assert!(!may(
            "https://reg.example.com",
            "ftp://reg.example.com/token"
        ));
        // Within loopback, the bytes never leave the machine.
        assert!(may("http://127.0.0.1:5000", "http://127.0.0.1:5001/token"));
        assert!(may("https://localhost:5000", "http://[::1]:5001/token"));
        // A plain-HTTP realm the user allowed, for a plain-HTTP registry.
        let insecure = vec!["auth.lan:8080".to_owned()];
        let lan = |reg: &str, realm: &str| realm_may_get_credentials(&u(reg), &u(realm), &insecure);
        assert!(lan("http://reg.lan:5000", "http://auth.lan:8080/token"));
        assert!(!lan("https://reg.lan:5000", "http://auth.lan:8080/token"));
        assert!(!lan("http://reg.lan:5000", "http://auth.lan:8081/token"));
    }
}
