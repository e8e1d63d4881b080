//! `lamina run` and `lamina invoke`: an image run locally the way Lambda runs it, with no
//! Docker — a Lambda runtime emulator built in.
//!
//! [`prepare`] reads the image for this machine's platform (an image for another architecture
//! is refused: there is no emulation) and unpacks its root file system into the cache
//! (`rootfs`). [`serve`] then starts the function in a sandbox (`sandbox`) and serves it
//! the Lambda Runtime API (`runtime_api`) while serving the user the invoke API of AWS's
//! Runtime Interface Emulator (`invoke_api`), with a `supervisor` between them running one
//! invocation at a time; [`invoke_once`] runs one invocation and stops.

mod cgroup;
mod compose;
mod env;
mod extensions;
mod http;
mod ids;
mod invocation;
mod invoke_api;
mod layers;
mod rootfs;
mod runtime_api;
mod sandbox;
mod supervisor;
mod watch;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::image::fs::DEFAULT_PATH;
use crate::platform::{Platform, describe};
use crate::reference::ImageRef;
use crate::registry::Options;
use crate::transport::{self, ReadMode, Source};

pub use env::execution_env;
pub use invocation::{Invoke, Outcome, Settings};
pub use invoke_api::event_payload;
pub use rootfs::Composition;
pub use sandbox::{Isolation, LAMBDA_GID, LAMBDA_UID};
pub use watch::{Watch, serve_watching};

/// The entrypoint of AWS's base images: it takes the handler as its one argument.
pub const AWS_ENTRYPOINT: &str = "/lambda-entrypoint.sh";

/// How the function runs. The library reads nothing from its own environment: what Lambda
/// would take from the function's configuration and role (region, credentials) comes in here.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// How long one invocation may run (the function's Lambda timeout).
    pub timeout: Duration,
    /// Memory size in MB, told to the function (not enforced).
    pub memory_mb: u32,
    /// Set over the image's and Lambda's variables (`--env`).
    pub env: Vec<(String, String)>,
    /// How the function is sandboxed.
    pub isolation: Isolation,
    /// `AWS_LAMBDA_FUNCTION_NAME`, and the name in the function's ARN.
    pub function_name: String,
    /// The AWS region the function believes it runs in (`AWS_REGION` and `AWS_DEFAULT_REGION`
    /// inside, and in its ARN). The binary takes its own `AWS_REGION`, else
    /// `AWS_DEFAULT_REGION`, else `us-east-1`.
    pub region: String,
    /// AWS credentials given to the function as Lambda gives it its role's (the binary passes
    /// the ones its AWS configuration resolves to with `--aws-credentials`).
    pub credentials: Credentials,
    /// Who the function runs as: `Some((uid, gid))`, Lambda's `sbx_user1051` (993:990) by
    /// default, as Lambda runs every function whatever the image's `USER`; `None` runs it as
    /// root (`--root`). See `sandbox::Identity` for how the ids are mapped.
    pub user: Option<(u32, u32)>,
    /// `AWS_EXECUTION_ENV` (`AWS_Lambda_python3.12`), for a function on a managed runtime
    /// ([`execution_env`] makes it from the runtime's name); unset for OS-only runtimes.
    pub execution_env: Option<String>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            timeout: Duration::from_secs(3),
            memory_mb: 128,
            env: Vec::new(),
            isolation: Isolation::Namespaces,
            function_name: "function".to_owned(),
            region: DEFAULT_REGION.to_owned(),
            credentials: Credentials::default(),
            user: Some((LAMBDA_UID, LAMBDA_GID)),
            execution_env: None,
        }
    }
}

/// The region a function runs in when none is given.
pub const DEFAULT_REGION: &str = "us-east-1";

/// AWS credentials handed to the function as `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and
/// `AWS_SESSION_TOKEN`; each is set only when present. `Debug` leaves the values out.
#[derive(Clone, Default)]
pub struct Credentials {
    /// `AWS_ACCESS_KEY_ID`.
    pub access_key_id: Option<String>,
    /// `AWS_SECRET_ACCESS_KEY`.
    pub secret_access_key: Option<String>,
    /// `AWS_SESSION_TOKEN`.
    pub session_token: Option<String>,
}

impl Credentials {
    /// The variables to set, by name.
    fn vars(&self) -> [(&'static str, Option<&String>); 3] {
        [
            ("AWS_ACCESS_KEY_ID", self.access_key_id.as_ref()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_access_key.as_ref()),
            ("AWS_SESSION_TOKEN", self.session_token.as_ref()),
        ]
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = |v: Option<&String>| v.map(|_| "<set>");
        f.debug_struct("Credentials")
            .field("access_key_id", &shown(self.access_key_id.as_ref()))
            .field("secret_access_key", &shown(self.secret_access_key.as_ref()))
            .field("session_token", &shown(self.session_token.as_ref()))
            .finish()
    }
}

/// An image ready to run: its root file system unpacked, its process taken from its config.
#[derive(Clone, Debug)]
pub struct Prepared {
    /// The image as the user wrote it.
    pub reference: String,
    /// The manifest run.
    pub manifest_digest: Digest,
    /// The image's platform (the host's: lamina does not emulate).
    pub platform: Platform,
    /// The root file system: the composed copy (in the cache), or the empty directory the
    /// sandbox mounts the overlay on.
    pub rootfs: PathBuf,
    /// The directories the root file system is composed of, top first (the copy alone for a
    /// copy).
    pub stack: Vec<PathBuf>,
    /// For overlayfs: the directory its `lowerdir` names are relative to, and the option.
    pub overlay: Option<(PathBuf, String)>,
    /// How the layers were put together.
    pub composition: Composition,
    /// How many layers were unpacked now (the others came from the cache).
    pub unpacked_layers: usize,
    /// Shared locks on the cache entries the root file system is made of: while any clone of
    /// this lives, pruning the cache leaves them alone.
    pub held: std::sync::Arc<Vec<std::fs::File>>,
    /// The root file system came from the cache.
    pub reused: bool,
    /// Device nodes of the image not reproduced.
    pub skipped: Vec<String>,
    /// ENTRYPOINT of the image config.
    pub entrypoint: Vec<String>,
    /// CMD of the image config (the handler).
    pub cmd: Vec<String>,
    /// `KEY=VALUE` entries of the image config.
    pub env: Vec<String>,
    /// The working directory (`/` when the config names none).
    pub workdir: String,
    /// The image config's `User`, which is not used (Lambda runs every function as its own
    /// user, `sbx_user1051`, whatever the image says; lamina does the same, see
    /// [`RunOptions::user`]).
    pub user: Option<String>,
}

/// The platform of this machine, the only one `run` can run.
pub fn host_platform() -> Result<Platform> {
    match std::env::consts::ARCH {
        "x86_64" => Ok(Platform::LinuxAmd64),
        "aarch64" => Ok(Platform::LinuxArm64),
        other => Err(Error::Sandbox(format!(
            "lamina run runs images on linux/amd64 and linux/arm64 machines (the architectures Lambda runs); this one is {other}"
        ))),
    }
}

fn foreign(reference: &str, os: &str, arch: &str, variant: Option<&str>, host: Platform) -> Error {
    let image = Platform::ALL
        .into_iter()
        .find(|p| p.matches(os, arch, variant))
        .map(|p| p.to_string())
        .unwrap_or_else(|| describe(os, arch, variant));
    Error::image(
        reference,
        format!(
            "is a {image} image, but this machine is {host}: lamina run starts the image's programs directly and does not emulate another architecture. \
             Run it on a {image} machine, or build it for {host} (--platform {host})"
        ),
    )
}

/// Read `r` for this machine's platform, every layer blob at hand (one read, whether or not
/// its root file system is cached: a registry's cached blobs are not fetched again), refusing
/// another architecture with a message that says so.
async fn read_for_host(
    r: &ImageRef,
    platform: Option<Platform>,
    host: Platform,
    opts: &Options,
) -> Result<Source> {
    if let Some(p) = platform
        && p != host
    {
        return Err(foreign(&r.to_string(), p.os(), p.arch(), None, host));
    }
    match transport::read(r, Some(host), ReadMode::Blobs, opts).await {
        Ok(src) => Ok(src),
        Err(e @ Error::Image { .. }) => Err(not_for_host(r, host, opts, e).await),
        Err(e) => Err(e),
    }
}

/// `e`, the image error reading `r` for `host` gave, said in `run`'s terms when the image is
/// there for another platform only: a single image for another architecture is refused as
/// such, and an index without `host` says that `run` does not emulate. Only on this failure
/// path is the image's metadata read again, to find out which case it is.
async fn not_for_host(r: &ImageRef, host: Platform, opts: &Options, e: Error) -> Error {
    let metadata = |p: Option<Platform>| transport::read(r, p, ReadMode::Metadata, opts);
    // A single image (or an index of one) is read without naming a platform.
    if let Ok(s) = metadata(None).await {
        let c = &s.image.config;
        let (os, arch) = (c.os().to_string(), c.architecture().to_string());
        if !host.matches(&os, &arch, c.variant().as_deref()) {
            return foreign(&r.to_string(), &os, &arch, c.variant().as_deref(), host);
        }
        return e;
    }
    let mut lacks_host = metadata(Some(host)).await.is_err();
    if lacks_host {
        let mut elsewhere = false;
        for p in Platform::ALL.into_iter().filter(|p| *p != host) {
            if metadata(Some(p)).await.is_ok() {
                elsewhere = true;
                break;
            }
        }
        lacks_host = elsewhere;
    }
    match e {
        Error::Image { reference, message } if lacks_host => Error::Image {
            reference,
            message: format!(
                "{message}; lamina run only runs {host} images on this machine (no emulation)"
            ),
        },
        e => e,
    }
}

/// The image's `WorkingDir` (`/` when unset).
fn workdir_of(src: &Source) -> String {
    src.image
        .config
        .config()
        .as_ref()
        .and_then(|c| c.working_dir().clone())
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".to_owned())
}

/// Read the image `r` for this machine and unpack its root file system into the cache
/// (`opts.cache_dir`, unpacked on the blocking pool), or find it there, composed as
/// [`Composition::Auto`] chooses. `log` hears what is done.
pub async fn prepare(
    r: &ImageRef,
    platform: Option<Platform>,
    opts: &Options,
    log: &mut (dyn FnMut(String) + Send),
) -> Result<Prepared> {
    prepare_with(r, platform, opts, Composition::Auto, log).await
}

/// [`prepare`], composing the layers as `how` says (an OCI runtime takes one directory:
/// [`Composition::Copy`]). Only the layers missing from the cache are unpacked (each once, shared
/// by every image built on it); `log` hears how many, and which composition is used.
pub async fn prepare_with(
    r: &ImageRef,
    platform: Option<Platform>,
    opts: &Options,
    how: Composition,
    log: &mut (dyn FnMut(String) + Send),
) -> Result<Prepared> {
    let shown = r.to_string();
    let host = host_platform()?;
    let src = read_for_host(r, platform, host, opts).await?;
    let workdir = workdir_of(&src);
    let started = Instant::now();
    let (cache, layers, wd, name) = (
        opts.cache_dir.clone(),
        src.image.layers.clone(),
        workdir.clone(),
        shown.clone(),
    );
    let unpacked = crate::task::blocking("unpacking the image", move || {
        rootfs::unpack_cached(&cache, &layers, &wd, &name, how, &sandbox::overlay_mounts)
    })
    .await?;
    let n = src.image.layers.len();
    let how_shown = match &unpacked.composition {
        Composition::Overlay => format!("overlayfs of {} directories", unpacked.stack.len()),
        _ => format!("a composed copy in {}", unpacked.rootfs.display()),
    };
    if unpacked.reused {
        log(format!(
            "reusing the root file system of {} ({n} cached layers; {how_shown})",
            src.manifest_digest
        ));
    } else {
        log(format!(
            "unpacked {} of the {n} layers of {} in {:.2}s ({} from the cache); root file system: {how_shown}",
            unpacked.unpacked,
            src.manifest_digest,
            started.elapsed().as_secs_f64(),
            n - unpacked.unpacked
        ));
    }
    if !unpacked.skipped.is_empty() {
        log(format!(
            "skipped {} device files of the image (the sandbox provides /dev): {}",
            unpacked.skipped.len(),
            unpacked.skipped.join(", ")
        ));
    }
    let c = src.image.config.config().clone().unwrap_or_default();
    Ok(Prepared {
        reference: shown,
        manifest_digest: src.manifest_digest.clone(),
        platform: host,
        rootfs: unpacked.rootfs,
        stack: unpacked.stack,
        overlay: unpacked.overlay,
        composition: unpacked.composition,
        unpacked_layers: unpacked.unpacked,
        held: std::sync::Arc::new(unpacked.held),
        reused: unpacked.reused,
        skipped: unpacked.skipped,
        entrypoint: c.entrypoint().clone().unwrap_or_default(),
        cmd: c.cmd().clone().unwrap_or_default(),
        env: c.env().clone().unwrap_or_default(),
        workdir,
        user: c.user().clone().filter(|u| !u.is_empty()),
    })
}

fn set(env: &mut Vec<(String, String)>, k: &str, v: String) {
    match env.iter_mut().find(|(key, _)| key == k) {
        Some(e) => e.1 = v,
        None => env.push((k.to_owned(), v)),
    }
}

/// The process to start for `p`: ENTRYPOINT + CMD (its program found in the image's `PATH`),
/// and the environment — the image's, then Lambda's (`AWS_LAMBDA_RUNTIME_API` pointing at
/// `runtime_api`, the function's name, memory size and version, `_HANDLER` when the entrypoint
/// is AWS's, region, `TZ`...), the credentials of `o` when set, then `o.env`.
pub fn process(p: &Prepared, o: &RunOptions, runtime_api: &str) -> Result<sandbox::Spec> {
    let args: Vec<String> = p.entrypoint.iter().chain(&p.cmd).cloned().collect();
    if args.is_empty() {
        return Err(Error::image(
            &p.reference,
            "has no ENTRYPOINT and no CMD: there is nothing to run (L005)",
        ));
    }
    let mut env: Vec<(String, String)> = Vec::new();
    for e in &p.env {
        let (k, v) = e.split_once('=').unwrap_or((e.as_str(), ""));
        set(&mut env, k, v.to_owned());
    }
    if !env.iter().any(|(k, _)| k == "PATH") {
        set(&mut env, "PATH", DEFAULT_PATH.to_owned());
    }
    for (k, v) in env::lambda_vars(o, runtime_api) {
        set(&mut env, k, v);
    }
    if !env.iter().any(|(k, _)| k == "LANG") {
        set(&mut env, "LANG", "en_US.UTF-8".to_owned());
    }
    if let Some(handler) = handler_of(p) {
        set(&mut env, "_HANDLER", handler);
    }
    for (k, v) in o.credentials.vars() {
        if let Some(v) = v {
            set(&mut env, k, v.clone());
        }
    }
    for (k, v) in &o.env {
        set(&mut env, k, v.clone());
    }
    let program = resolve_program(&p.stack, &args[0], &p.workdir, &env);
    Ok(sandbox::Spec {
        rootfs: p.rootfs.clone(),
        overlay: p.overlay.clone(),
        program,
        args,
        env,
        cwd: p.workdir.clone(),
        hostname: "lamina".to_owned(),
        user: o.user,
        cgroup_procs: None,
        extensions: external_extensions(&p.stack),
    })
}

/// The external extensions of the image: executable files in `/opt/extensions`, by name. The
/// directory may be spread over several layers of the stack: names are gathered from each, and
/// each is then looked up through the whole stack (whiteouts and links applied).
fn external_extensions(stack: &[PathBuf]) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let Ok(Some((rel, _))) = rootfs::lookup(stack, Path::new("/opt/extensions")) else {
        return Vec::new();
    };
    let mut names = std::collections::BTreeSet::new();
    for layer in stack {
        if let Ok(entries) = std::fs::read_dir(layer.join(&rel)) {
            names.extend(
                entries
                    .flatten()
                    .filter_map(|e| e.file_name().to_str().map(str::to_owned)),
            );
        }
    }
    names
        .into_iter()
        .map(|n| format!("/opt/extensions/{n}"))
        .filter(|p| {
            rootfs::lookup(stack, Path::new(p))
                .ok()
                .flatten()
                .and_then(|(_, host)| std::fs::metadata(host).ok())
                .is_some_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .collect()
}

/// The absolute path (inside the image) of the program `name`: looked up in `PATH` when it has
/// no `/`, taken from `workdir` when relative. Left as given when not found (the exec then
/// fails as Lambda's would, with `Runtime.InvalidEntrypoint`).
fn resolve_program(
    stack: &[PathBuf],
    name: &str,
    workdir: &str,
    env: &[(String, String)],
) -> String {
    let found = |p: &Path| {
        rootfs::lookup(stack, p)
            .ok()
            .flatten()
            .filter(|(_, host)| host.is_file())
            .is_some()
    };
    if name.starts_with('/') {
        return name.to_owned();
    }
    if name.contains('/') {
        return Path::new(workdir).join(name).to_string_lossy().into_owned();
    }
    let path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str())
        .unwrap_or(DEFAULT_PATH);
    for dir in path.split(':').filter(|d| d.starts_with('/')) {
        let candidate = Path::new(dir).join(name);
        if found(&candidate) {
            return candidate.to_string_lossy().into_owned();
        }
    }
    name.to_owned()
}

fn launcher(
    p: &Prepared,
    o: &RunOptions,
    limit: Option<std::sync::Arc<cgroup::Limit>>,
) -> supervisor::Launcher {
    let (p, o) = (p.clone(), o.clone());
    Box::new(move |addr: &str| {
        let mut spec = process(&p, &o, addr).map_err(sandbox::LaunchError::Sandbox)?;
        spec.cgroup_procs = limit.as_ref().map(|l| l.procs_file());
        sandbox::launch(&o.isolation, &spec)
    })
}

/// The memory limit of `o.memory_mb`, where this host lets lamina make one; otherwise said on
/// stderr (the size is then only told to the function).
fn memory_limit(o: &RunOptions) -> Option<std::sync::Arc<cgroup::Limit>> {
    let made = match &o.isolation {
        Isolation::Namespaces => cgroup::Limit::create(o.memory_mb),
        Isolation::Oci(rt) => Err(format!("lamina does not set cgroups through {rt}")),
    };
    match made {
        Ok(l) => {
            eprintln!(
                "lamina: memory: limited to {} MB ({})",
                o.memory_mb,
                l.describe()
            );
            Some(std::sync::Arc::new(l))
        }
        Err(why) => {
            eprintln!(
                "lamina: memory: --memory {} is told to the function but not enforced: {why}",
                o.memory_mb
            );
            None
        }
    }
}

fn settings(o: &RunOptions, p: &Prepared) -> Settings {
    Settings {
        timeout: o.timeout,
        function_name: o.function_name.clone(),
        memory_mb: o.memory_mb,
        region: o.region.clone(),
        handler: handler_of(p).unwrap_or_default(),
    }
}

/// The handler Lambda would name (`_HANDLER`): CMD[0] when the entrypoint is AWS's.
fn handler_of(p: &Prepared) -> Option<String> {
    (p.entrypoint.first().map(String::as_str) == Some(AWS_ENTRYPOINT))
        .then(|| p.cmd.first().cloned())
        .flatten()
}

/// Check what can be checked before starting: something to run.
fn precheck(p: &Prepared, o: &RunOptions) -> Result<()> {
    process(p, o, "127.0.0.1:0").map(drop)
}

/// `lamina invoke`: start the function, run one invocation, stop it. The function's process
/// is started from a task of the caller's runtime; a multi-thread runtime keeps its worker
/// threads (which the sandbox's processes are tied to, see `run::sandbox`) until it shuts down.
pub async fn invoke_once(p: &Prepared, o: &RunOptions, invoke: Invoke) -> Result<Outcome> {
    precheck(p, o)?;
    let limit = memory_limit(o);
    let (handle, mut running) =
        supervisor::start(settings(o, p), launcher(p, o, limit.clone()), false, limit);
    let outcome = tokio::select! {
        outcome = handle.invoke(invoke) => Some(outcome),
        r = running.finished() => {
            r?;
            None
        }
    };
    let stopped = Error::Sandbox("the function's environment stopped before answering".into());
    match outcome {
        Some(outcome) => {
            running.stop().await?;
            outcome.ok_or(stopped)
        }
        None => Err(stopped),
    }
}

/// `lamina run`: start the function and serve the invoke API on `listen` (port 0 picks one)
/// until interrupted (SIGINT, SIGTERM). `on_listen` hears the address once it is bound.
pub async fn serve(
    p: &Prepared,
    o: &RunOptions,
    listen: SocketAddr,
    on_listen: &mut (dyn FnMut(SocketAddr) + Send),
) -> Result<()> {
    serve_loop(p, o, listen, on_listen, None).await
}

/// [`serve`], following changes when `rebuild` is given (`--watch`): new code is built while
/// invocations wait, then swapped in.
async fn serve_loop(
    p: &Prepared,
    o: &RunOptions,
    listen: SocketAddr,
    on_listen: &mut (dyn FnMut(SocketAddr) + Send),
    mut rebuild: Option<watch::Rebuild>,
) -> Result<()> {
    precheck(p, o)?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .ctx(|| format!("listening on {listen}"))?;
    let addr = listener
        .local_addr()
        .ctx(|| format!("listening on {listen}"))?;
    let limit = memory_limit(o);
    let (handle, mut running) = supervisor::start(
        settings(o, p),
        launcher(p, o, limit.clone()),
        true,
        limit.clone(),
    );
    let server = tokio::spawn(invoke_api::serve_invoke(listener, handle.clone()));
    on_listen(addr);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .ctx(|| "handling SIGTERM".to_owned())?;
    let result = loop {
        let change = async {
            match rebuild.as_mut() {
                Some(r) => r.watcher.changed().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = running.finished() => {
                server.abort();
                return r;
            }
            _ = tokio::signal::ctrl_c() => break Ok(()),
            _ = term.recv() => break Ok(()),
            Some(what) = change => {
                let r = rebuild.as_mut().expect("watching");
                handle.hold();
                match r.rebuild(&what).await {
                    Some(new) if precheck(&new, o).is_ok() => {
                        handle.swap(launcher(&new, o, limit.clone()));
                    }
                    Some(new) => {
                        if let Err(e) = precheck(&new, o) {
                            eprintln!("lamina: watch: {e}; still serving the previous code");
                        }
                        handle.release();
                    }
                    None => handle.release(),
                }
            }
        }
    };
    server.abort();
    running.stop().await?;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prepared(root: &Path, entrypoint: &[&str], cmd: &[&str]) -> Prepared {
        Prepared {
            reference: "oci:test".into(),
            manifest_digest: Digest::of(b"m"),
            platform: Platform::LinuxAmd64,
            rootfs: root.to_owned(),
            stack: vec![root.to_owned()],
            overlay: None,
            composition: Composition::Copy,
            unpacked_layers: 0,
            held: Default::default(),
            reused: false,
            skipped: Vec::new(),
            entrypoint: entrypoint.iter().map(|s| s.to_string()).collect(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            env: vec![
                "PATH=/usr/local/bin:/usr/bin".into(),
                "TZ=Europe/Paris".into(),
                "STAGE=image".into(),
            ],
            workdir: "/var/task".into(),
            user: None,
        }
    }

    fn get<'a>(env: &'a [(String, String)], k: &str) -> Option<&'a str> {
        env.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn the_process_gets_the_images_env_then_lambdas_then_the_users() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        std::fs::create_dir_all(root.join("usr/bin")).unwrap();
        std::fs::write(root.join("usr/bin/python3.12"), b"").unwrap();
        std::os::unix::fs::symlink("python3.12", root.join("usr/bin/python3")).unwrap();
        let o = RunOptions {
            env: vec![
                ("STAGE".into(), "flag".into()),
                ("EXTRA".into(), "1".into()),
            ],
            memory_mb: 512,
            ..RunOptions::default()
        };
        let p = prepared(root, &[AWS_ENTRYPOINT], &["app.handler"]);
        let s = process(&p, &o, "127.0.0.1:1234").unwrap();
        assert_eq!(s.program, AWS_ENTRYPOINT);
        assert_eq!(s.args, [AWS_ENTRYPOINT, "app.handler"]);
        assert_eq!(s.cwd, "/var/task");
        let env = &s.env;
        assert_eq!(get(env, "AWS_LAMBDA_RUNTIME_API"), Some("127.0.0.1:1234"));
        assert_eq!(get(env, "_HANDLER"), Some("app.handler"));
        assert_eq!(get(env, "AWS_LAMBDA_FUNCTION_MEMORY_SIZE"), Some("512"));
        assert_eq!(get(env, "AWS_LAMBDA_FUNCTION_NAME"), Some("function"));
        assert_eq!(get(env, "AWS_LAMBDA_FUNCTION_VERSION"), Some("$LATEST"));
        assert_eq!(get(env, "LAMBDA_TASK_ROOT"), Some("/var/task"));
        assert_eq!(
            get(env, "TZ"),
            Some(":UTC"),
            "Lambda's TZ wins over the image's"
        );
        assert_eq!(get(env, "PATH"), Some("/usr/local/bin:/usr/bin"));
        assert_eq!(get(env, "STAGE"), Some("flag"), "--env wins");
        assert_eq!(get(env, "EXTRA"), Some("1"));

        // Another entrypoint: no _HANDLER; a bare program is found in the image's PATH.
        let p = prepared(root, &["python3", "-m", "app"], &[]);
        let s = process(&p, &RunOptions::default(), "127.0.0.1:1").unwrap();
        assert_eq!(s.program, "/usr/bin/python3");
        assert_eq!(s.args[0], "python3");
        assert_eq!(get(&s.env, "_HANDLER"), None);

        let p = prepared(root, &[], &[]);
        let e = process(&p, &RunOptions::default(), "x").unwrap_err();
        assert!(e.to_string().contains("no ENTRYPOINT and no CMD"), "{e}");
    }

    #[test]
    fn region_and_credentials_come_from_the_options() {
        let t = tempfile::tempdir().unwrap();
        let o = RunOptions {
            region: "eu-west-3".into(),
            credentials: Credentials {
                access_key_id: Some("AKID".into()),
                secret_access_key: Some("s3cr3t".into()),
                session_token: None,
            },
            ..RunOptions::default()
        };
        let s = process(&prepared(t.path(), &["/bootstrap"], &[]), &o, "x").unwrap();
        assert_eq!(get(&s.env, "AWS_REGION"), Some("eu-west-3"));
        assert_eq!(get(&s.env, "AWS_DEFAULT_REGION"), Some("eu-west-3"));
        assert_eq!(get(&s.env, "AWS_ACCESS_KEY_ID"), Some("AKID"));
        assert_eq!(get(&s.env, "AWS_SESSION_TOKEN"), None);
        assert_eq!(
            settings(&o, &prepared(t.path(), &["/bootstrap"], &[])).region,
            "eu-west-3"
        );
        assert!(!format!("{o:?}").contains("s3cr3t"));
    }
}
