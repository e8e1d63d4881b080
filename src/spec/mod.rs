//! The build spec: `lamina.toml` (serde, unknown fields refused) plus command-line overrides,
//! resolved into a [`BuildSpec`] whose paths are absolute and whose values are validated.

pub mod client;
pub mod deploy;
pub mod flags;
pub mod function;
pub mod init;
mod modes;
pub mod runtime;
pub mod schema;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, IoContext, Result};
use crate::image::ConfigSpec;
use crate::layer::{LayerSpec, image_path};
use crate::platform::{ParsePlatformError, Platform};
use crate::reference::{ImageRef, ParseReferenceError};

/// `lamina.toml` as written.
#[derive(Deserialize, Default, Debug, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SpecFile {
    /// The image to build on (a reference; `scratch` for none).
    pub base: Option<String>,
    /// The platform to build for (and to pick from a multi-platform base).
    pub platform: Option<String>,
    /// Where the image goes (a reference).
    pub to: Option<String>,
    /// Open up modes under /var/task and /opt for Lambda's non-root user (see `lambda::fix`).
    pub fix_permissions: Option<bool>,
    /// `[[layer]]`s, stacked in order on the base (and on `[function]`'s layers).
    #[serde(default)]
    pub layer: Vec<LayerSpec>,
    /// `[[delete]]`s: base paths hidden by one whiteout layer.
    #[serde(default)]
    pub delete: Vec<DeleteSpec>,
    /// `[config]`: what is set in the image config over the base's.
    #[serde(default)]
    pub config: ConfigSpec,
    /// `[annotations]` of the manifest.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// Lambda's vocabulary: runtime, handler, code, dependencies, layers, bootstrap.
    pub function: Option<function::FunctionSpec>,
    /// `[deploy]`: the Lambda function(s) `lamina deploy` creates or updates.
    pub deploy: Option<deploy::DeploySpec>,
    /// The registry build cache: `true` (a `lamina-cache` tag in the destination's
    /// repository), `false` (none), or a `docker://REPO[:TAG]` reference. Unset: the
    /// `lamina-cache` tag when the destination is a registry (`docker://`, ECR included), none
    /// for a layout or archive destination.
    pub cache: Option<CacheField>,
}

/// `cache` in `lamina.toml`: on, off, or where.
#[derive(Deserialize, schemars::JsonSchema, Debug, Clone)]
#[serde(untagged)]
pub enum CacheField {
    /// `true`: the default place; `false`: no registry cache.
    On(bool),
    /// `docker://REPO[:TAG]`.
    At(String),
}

/// Where the registry build cache is (`--cache`, the spec's `cache`).
#[derive(Debug, Clone, PartialEq)]
pub enum CacheTo {
    /// A `lamina-cache` tag in the destination's repository (a registry destination only).
    Destination,
    /// This repository and tag.
    At(crate::reference::RegistryRef),
    /// No registry cache.
    Off,
}

impl CacheTo {
    /// Parse `docker://REPO[:TAG]`: a registry reference whose tag defaults to `lamina-cache`
    /// (not `latest`: the function's tag must never be the cache's). `what` names the flag or
    /// field in the message.
    pub fn parse(s: &str, what: &str) -> std::result::Result<CacheTo, String> {
        let r: ImageRef = s
            .parse()
            .map_err(|e: ParseReferenceError| format!("{what}: {e}"))?;
        let ImageRef::Docker(mut r) = r else {
            return Err(format!(
                "{what} `{s}`: the build cache lives in a registry: write docker://REPO[:TAG]"
            ));
        };
        if r.digest.is_some() {
            return Err(format!(
                "{what} `{s}`: the cache is a tag that moves; a digest cannot name it"
            ));
        }
        let last = s.rsplit('/').next().unwrap_or(s);
        if !last.contains(':') {
            r.tag = Some(crate::reference::BUILD_CACHE_TAG.to_owned());
        }
        Ok(CacheTo::At(r))
    }
}

/// One `[[delete]]`: a path of the base to hide with a whiteout.
#[derive(Deserialize, Clone, Debug, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteSpec {
    /// Absolute in-image path (not `/`).
    pub path: String,
}

/// How timestamps (file mtimes, `created`, history) are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timestamp {
    /// Seconds since the Unix epoch (at most [`Timestamp::MAX`]).
    Fixed(u64),
    /// The wall clock at build time: not reproducible, only on request.
    Now,
}

impl Timestamp {
    /// The last second a tar header can hold (11 octal digits: the year 2242).
    pub const MAX: u64 = 0o77777777777;

    /// Seconds since the epoch; past [`Timestamp::MAX`] is a usage error.
    pub fn seconds(self) -> Result<u64> {
        match self {
            Timestamp::Fixed(s) if s > Self::MAX => Err(Error::Usage(format!(
                "timestamp {s} is too far in the future (tar headers end at {})",
                Self::MAX
            ))),
            Timestamp::Fixed(s) => Ok(s),
            Timestamp::Now => Ok(std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)),
        }
    }
}

/// Values that override (or, for lists and maps, extend) the spec file, already parsed: a
/// program fills them in directly; the `lamina` binary parses its flags with [`flags`].
///
/// Paths are taken as given: relative ones (a layer's source, a local reference's directory)
/// are relative to the process's working directory, so a front end anchors them where its user
/// meant (the binary: at the directory it runs in). A value the spec then refuses (an in-image
/// path that is not absolute, `scratch` as destination, a compression level over 9, ...) is an
/// [`Error::Usage`] named after the flag that would set it.
#[derive(Default, Debug, Clone)]
pub struct Overrides {
    /// The image to build on (`--base`), over the spec's `base` and `[function]`'s runtime.
    pub base: Option<ImageRef>,
    /// The platform to build for (`--platform`).
    pub platform: Option<Platform>,
    /// Where the image goes (`--to`); never [`ImageRef::Scratch`].
    pub to: Option<ImageRef>,
    /// Layers stacked after the spec's (`--layer`, `--from-zip`, `--lambda-layer-zip`); each
    /// `dest` must be an absolute in-image path.
    pub layers: Vec<LayerSpec>,
    /// Absolute in-image paths to hide, added to the spec's `[[delete]]`s (`--delete`).
    pub deletes: Vec<String>,
    /// ENTRYPOINT, replacing the spec's (`--entrypoint`).
    pub entrypoint: Option<Vec<String>>,
    /// CMD, replacing the spec's and `[function]`'s handler (`--cmd`).
    pub cmd: Option<Vec<String>>,
    /// Environment variables set over the spec's (`--env`); names must be non-empty and free
    /// of `=`.
    pub env: BTreeMap<String, String>,
    /// WORKDIR (`--workdir`).
    pub workdir: Option<String>,
    /// USER (`--user`).
    pub user: Option<String>,
    /// Config labels set over the spec's (`--label`).
    pub labels: BTreeMap<String, String>,
    /// Manifest annotations set over the spec's (`--annotation`).
    pub annotations: BTreeMap<String, String>,
    /// Every timestamp lamina writes (`--timestamp`, else `SOURCE_DATE_EPOCH` as the caller
    /// read it); `None` is 0, for reproducible output.
    pub timestamp: Option<Timestamp>,
    /// Gzip level for new layers, 0 to 9 (`--compression-level`).
    pub compression_level: Option<u32>,
    /// Or-ed with the spec's `fix_permissions` (`--fix-permissions`).
    pub fix_permissions: bool,
    /// Push even when the Lambda checks find errors (`--no-lambda-check`).
    pub no_lambda_check: bool,
    /// Rebuild every layer (`--no-cache`).
    pub no_cache: bool,
    /// How the base is pinned and fetched (`--locked`, `--offline`, `--update-base`).
    pub base_lock: BaseLock,
    /// The registry build cache (`--cache`), over the spec's `cache`.
    pub cache: Option<CacheTo>,
    /// Rebuild every layer a cache finds and fail if its bytes differ (`--cache-verify`).
    pub cache_verify: bool,
}

/// How a registry base is pinned in `lamina.lock` and fetched: see `docs/offline-and-lock.md`.
#[derive(Default, Debug, Clone, PartialEq, Eq)]
pub struct BaseLock {
    /// Fail rather than change the lock (`--locked`).
    pub locked: bool,
    /// Never reach a registry: the base comes from the lock and the blob cache (`--offline`).
    pub offline: bool,
    /// Resolve the base's tag again and move the lock (`--update-base`, `lamina update`).
    pub update: bool,
}

/// A validated build: absolute paths, parsed references, resolved timestamp.
#[derive(Debug, Clone)]
pub struct BuildSpec {
    /// The spec file, if any (for messages).
    pub file: Option<PathBuf>,
    /// The image to build on, paths absolute.
    pub base: ImageRef,
    /// The platform built for.
    pub platform: Platform,
    /// Where the image goes, paths absolute.
    pub to: ImageRef,
    /// The layers to add, in order, sources absolute and dests checked.
    pub layers: Vec<LayerSpec>,
    /// The layers as a .zip deployment package holds them: `[function]`'s Lambda layers left
    /// out (they are zips of their own) and its bootstrap at the package's root.
    pub zip_layers: Vec<LayerSpec>,
    /// In-image paths to hide (no leading `/`), sorted, without duplicates.
    pub deletes: Vec<String>,
    /// The config to apply over the base's.
    pub config: ConfigSpec,
    /// Manifest annotations.
    pub annotations: BTreeMap<String, String>,
    /// Seconds since the epoch for every timestamp lamina writes.
    pub timestamp: u64,
    /// Gzip level for new layers, 0 (store) to 9.
    pub compression_level: u32,
    /// Give what lamina writes under /var/task and /opt modes Lambda's non-root user can use.
    pub fix_permissions: bool,
    /// Run the Lambda checks before pushing to a registry (off with `--no-lambda-check`).
    pub lambda_check: bool,
    /// Reuse layers whose inputs did not change (the layer cache).
    pub layer_cache: bool,
    /// What chose the base, for messages: `` `--base` ``, `` `base = "…"` in lamina.toml line
    /// 2 ``, `` `runtime = "python3.12"` in lamina.toml line 5 ``.
    pub base_from: String,
    /// `lamina.lock` beside the spec file, where a registry base's digest is pinned: none
    /// without a spec file or with `--base` (the lock and the base annotations are for the
    /// base the spec names).
    pub lock_file: Option<PathBuf>,
    /// How the base is pinned and fetched.
    pub base_lock: BaseLock,
    /// What each of `layers` is (`code`, `dependencies`, `Lambda layer`, `bootstrap`, or
    /// `layer` for a `[[layer]]` or `--layer`): named in progress and in the image history.
    pub layer_roles: Vec<String>,
    /// The registry build cache (repository and tag), if any.
    pub cache: Option<crate::reference::RegistryRef>,
    /// Rebuild every layer a cache finds, and fail if its bytes differ.
    pub cache_verify: bool,
    /// `[function] runtime_client`: AWS's runtime interface client, whose layer is among
    /// `layers`; the build finds the base's interpreter and sets the config from it.
    pub runtime_client: Option<client::RuntimeClient>,
}

pub use crate::layer::compress::DEFAULT_COMPRESSION_LEVEL;

/// Read and parse a spec file; errors name the file, line and field.
pub fn read_spec_file(path: &Path) -> Result<SpecFile> {
    let text = std::fs::read_to_string(path).at("reading build spec", path)?;
    let sf = toml::from_str(&text).map_err(|e| Error::Spec {
        file: path.to_owned(),
        message: e.to_string().trim_end().to_owned(),
    })?;
    modes::refuse_decimal_modes(&text, path)?;
    Ok(sf)
}

impl BuildSpec {
    /// Combine a spec file (its path relative to `cwd`, the paths in it relative to its
    /// directory) with `ov`. A bad override is an [`Error::Usage`]; a bad spec field an
    /// [`Error::Spec`] naming the file and field.
    pub fn resolve(
        file: Option<(&Path, SpecFile)>,
        ov: &Overrides,
        cwd: &Path,
    ) -> Result<BuildSpec> {
        let (path, sf) = match file {
            Some((p, sf)) => (Some(p.to_owned()), sf),
            None => (None, SpecFile::default()),
        };
        let spec_dir = path
            .as_deref()
            .and_then(Path::parent)
            .map(|d| cwd.join(d))
            .unwrap_or_else(|| cwd.to_owned());
        let r = Resolver {
            path: path.as_deref(),
            spec_dir: &spec_dir,
        };

        let function = match &sf.function {
            Some(f) => function::expand(f, &spec_dir)
                .map_err(|e| r.spec_err(format!("[function]: {e}")))?,
            None => Default::default(),
        };
        if function.runtime_client.is_some() && sf.base.is_none() && ov.base.is_none() {
            return Err(r.spec_err(
                "[function] runtime_client is for a base that is not an AWS Lambda image (those have the client): set `base`".into(),
            ));
        }
        if let (Some(c), Some(rt)) = (
            &function.runtime_client,
            sf.function.as_ref().and_then(|f| f.runtime.as_deref()),
        ) && runtime::find(rt).is_ok_and(|r| r.family != c.language.family())
        {
            return Err(r.spec_err(format!(
                "[function] runtime_client is the {} client, but runtime = \"{rt}\" is another language",
                c.language.name()
            )));
        }
        let base = r.base(ov, &sf, &function)?;
        let base_from = r.base_from(ov, &sf, &spec_dir);
        let to = r.to(ov, &sf)?;
        let platform = r.platform(ov, &sf)?;
        let mut layer_roles: Vec<String> = function.roles.iter().map(|r| r.to_string()).collect();
        let (layers, zip_layers) = r.layers(ov, sf.layer, function.layers, function.zip_layers)?;
        layer_roles.resize(layers.len(), "layer".into());
        let deletes = r.deletes(ov, &sf.delete)?;
        let runtime_client = function.runtime_client.clone();
        let config = r.config(ov, sf.config, function.cmd, function.env)?;
        let mut annotations = sf.annotations;
        annotations.extend(ov.annotations.clone());

        let compression_level = ov.compression_level.unwrap_or(DEFAULT_COMPRESSION_LEVEL);
        if compression_level > 9 {
            return Err(Error::Usage(format!(
                "--compression-level {compression_level}: use 0 (store) to 9 (smallest)"
            )));
        }
        let timestamp = ov.timestamp.unwrap_or(Timestamp::Fixed(0)).seconds()?;
        let cache = r.cache(ov, sf.cache.as_ref(), &to)?;

        Ok(BuildSpec {
            base,
            platform,
            to,
            layers,
            zip_layers,
            deletes,
            config,
            annotations,
            timestamp,
            compression_level,
            fix_permissions: ov.fix_permissions || sf.fix_permissions.unwrap_or(false),
            lambda_check: !ov.no_lambda_check,
            layer_cache: !ov.no_cache,
            base_from,
            layer_roles,
            runtime_client,
            // The lock pins the base lamina.toml names; an ad-hoc `--base` is not pinned.
            lock_file: path
                .as_ref()
                .filter(|_| ov.base.is_none())
                .map(|_| spec_dir.join(crate::lock::LOCK_FILE)),
            base_lock: ov.base_lock.clone(),
            file: path,
            cache,
            cache_verify: ov.cache_verify,
        })
    }
}

/// The 1-based line where `key = …` is first set in a spec's text.
fn key_line(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            l.trim_start()
                .strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map(|i| i + 1)
}

/// Where the spec's values came from: its fields are relative to its directory and their
/// errors name the file. (Overrides come parsed and anchored; their errors are usage errors.)
struct Resolver<'a> {
    path: Option<&'a Path>,
    spec_dir: &'a Path,
}

impl Resolver<'_> {
    /// An error in the spec file (a usage error when there is no file).
    fn spec_err(&self, message: String) -> Error {
        match self.path {
            Some(f) => Error::Spec {
                file: f.to_owned(),
                message,
            },
            None => Error::Usage(message),
        }
    }

    /// Parse a reference from a spec field, and anchor its path at the spec's directory.
    fn image_ref(&self, s: &str, field: &str) -> Result<ImageRef> {
        let r: ImageRef = s
            .parse()
            .map_err(|e: ParseReferenceError| self.spec_err(format!("field `{field}`: {e}")))?;
        Ok(r.relative_to(self.spec_dir))
    }

    /// The override, else `base`, else the `[function]` runtime's image, else scratch.
    fn base(&self, ov: &Overrides, sf: &SpecFile, f: &function::Expanded) -> Result<ImageRef> {
        Ok(match (&ov.base, &sf.base, &f.base) {
            (Some(b), _, _) => b.clone(),
            (None, Some(b), _) => self.image_ref(b, "base")?,
            (None, None, Some(b)) => self.image_ref(b, "function.runtime")?,
            (None, None, None) => ImageRef::Scratch,
        })
    }

    /// What chose the base (the same order as [`Resolver::base`]), with the spec line.
    fn base_from(&self, ov: &Overrides, sf: &SpecFile, spec_dir: &Path) -> String {
        let file = self.path.and_then(Path::file_name).map_or_else(
            || "lamina.toml".to_owned(),
            |n| n.to_string_lossy().into_owned(),
        );
        let text = self
            .path
            .and_then(|p| p.file_name().map(|n| spec_dir.join(n)))
            .and_then(|p| crate::image::blob::read_capped(&p, 1 << 20).ok().flatten())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let at = |key: &str, value: &str| match key_line(&text, key) {
            Some(n) => format!("`{key} = \"{value}\"` in {file} line {n}"),
            None => format!("`{key} = \"{value}\"` in {file}"),
        };
        let runtime = sf.function.as_ref().and_then(|f| f.runtime.as_deref());
        match (&ov.base, &sf.base, runtime) {
            (Some(_), _, _) => "`--base`".to_owned(),
            (None, Some(b), _) => at("base", b),
            (None, None, Some(r)) => at("runtime", r),
            (None, None, None) => "no base given (scratch)".to_owned(),
        }
    }

    /// The override, else `to`, else `oci:out:latest` beside the spec; never scratch.
    fn to(&self, ov: &Overrides, sf: &SpecFile) -> Result<ImageRef> {
        let message = || "`scratch` cannot be a destination".to_owned();
        let to = match (&ov.to, &sf.to) {
            (Some(ImageRef::Scratch), _) => return Err(Error::Usage(message())),
            (Some(t), _) => return Ok(t.clone()),
            (None, Some(t)) => self.image_ref(t, "to")?,
            (None, None) => self.image_ref("oci:out:latest", "to")?,
        };
        if to == ImageRef::Scratch {
            return Err(self.spec_err(message()));
        }
        Ok(to)
    }

    /// The registry cache: the override, else the spec's `cache`, else the default: a
    /// `lamina-cache` tag in the destination's repository when the destination is a registry
    /// (`docker://`, ECR included), none otherwise. `--cache none` and `cache = false` turn it
    /// off. The cache never takes the destination's own tag: asked for, that is an error; by
    /// default (a destination tagged `lamina-cache`), the cache is off.
    fn cache(
        &self,
        ov: &Overrides,
        sf: Option<&CacheField>,
        to: &ImageRef,
    ) -> Result<Option<crate::reference::RegistryRef>> {
        let (choice, what) = match (&ov.cache, sf) {
            (Some(c), _) => (c.clone(), Some("--cache")),
            (None, Some(CacheField::On(true))) => (CacheTo::Destination, Some("field `cache`")),
            (None, Some(CacheField::On(false))) => (CacheTo::Off, None),
            (None, None) if matches!(to, ImageRef::Docker(_)) => (CacheTo::Destination, None),
            (None, None) => (CacheTo::Off, None),
            (None, Some(CacheField::At(s))) => (
                CacheTo::parse(s, "field `cache`").map_err(|e| self.spec_err(e))?,
                Some("field `cache`"),
            ),
        };
        let fail = |what: &str, m: String| {
            if what == "--cache" {
                Error::Usage(m)
            } else {
                self.spec_err(m)
            }
        };
        let at = match choice {
            CacheTo::Off => return Ok(None),
            CacheTo::At(r) => r,
            CacheTo::Destination => match to {
                ImageRef::Docker(d) => crate::reference::RegistryRef {
                    tag: Some(crate::reference::BUILD_CACHE_TAG.to_owned()),
                    digest: None,
                    ..d.clone()
                },
                _ => {
                    let what = what.unwrap_or("field `cache`");
                    let m = format!(
                        "{what}: the default build cache is a tag in the destination's repository, but {to} is not a registry; name one: docker://REPO[:TAG]"
                    );
                    return Err(fail(what, m));
                }
            },
        };
        let taken = matches!(to, ImageRef::Docker(d)
            if d.registry == at.registry && d.repository == at.repository && d.tag == at.tag);
        match (taken, what) {
            (false, _) => Ok(Some(at)),
            // The default never takes the function's tag: no cache for this destination.
            (true, None) => Ok(None),
            (true, Some(what)) => Err(fail(
                what,
                format!(
                    "{what}: the build cache docker://{at} is the destination's own tag; the cache needs a tag of its own"
                ),
            )),
        }
    }

    /// The override, else `platform`, else linux/amd64.
    fn platform(&self, ov: &Overrides, sf: &SpecFile) -> Result<Platform> {
        Ok(match (ov.platform, &sf.platform) {
            (Some(p), _) => p,
            (None, Some(p)) => p
                .parse()
                .map_err(|e: ParsePlatformError| self.spec_err(format!("field `platform`: {e}")))?,
            (None, None) => Platform::default(),
        })
    }

    /// The image's layers and the zip package's: `[function]`'s first, then `[[layer]]`s, then
    /// the overrides' (the last two in both).
    fn layers(
        &self,
        ov: &Overrides,
        own: Vec<LayerSpec>,
        mut layers: Vec<LayerSpec>,
        mut zip_layers: Vec<LayerSpec>,
    ) -> Result<(Vec<LayerSpec>, Vec<LayerSpec>)> {
        let first_own = layers.len();
        for (i, mut l) in own.into_iter().enumerate() {
            l.source = self.spec_dir.join(&l.source);
            image_path(&l.dest, "dest")
                .map_err(|e| self.spec_err(format!("[[layer]] #{}: {e}", i + 1)))?;
            for g in &l.exclude {
                globset::Glob::new(g).map_err(|e| {
                    self.spec_err(format!("[[layer]] #{}: exclude glob `{g}`: {e}", i + 1))
                })?;
            }
            layers.push(l);
        }
        for l in &ov.layers {
            image_path(&l.dest, "--layer dest").map_err(|e| Error::Usage(e.into()))?;
            for g in &l.exclude {
                globset::Glob::new(g).map_err(|e| {
                    Error::Usage(format!("--layer {}: exclude glob `{g}`: {e}", l.dest))
                })?;
            }
            layers.push(l.clone());
        }
        zip_layers.extend_from_slice(&layers[first_own..]);
        Ok((layers, zip_layers))
    }

    /// The in-image paths to delete (`[[delete]]`s and the overrides'), without their leading
    /// `/`, sorted and without duplicates.
    fn deletes(&self, ov: &Overrides, own: &[DeleteSpec]) -> Result<Vec<String>> {
        let mut deletes = Vec::new();
        for (i, d) in own.iter().enumerate() {
            let p = image_path(&d.path, "path")
                .map_err(|e| self.spec_err(format!("[[delete]] #{}: {e}", i + 1)))?;
            if p.is_empty() {
                return Err(self.spec_err(format!("[[delete]] #{}: cannot delete `/`", i + 1)));
            }
            deletes.push(p);
        }
        for d in &ov.deletes {
            let p = image_path(d, "--delete").map_err(|e| Error::Usage(e.into()))?;
            if p.is_empty() {
                return Err(Error::Usage("--delete: cannot delete `/`".into()));
            }
            deletes.push(p);
        }
        deletes.sort();
        deletes.dedup();
        Ok(deletes)
    }

    /// `[config]`, under `[function]`'s handler and env, under the overrides.
    fn config(
        &self,
        ov: &Overrides,
        mut config: ConfigSpec,
        cmd: Option<Vec<String>>,
        env: BTreeMap<String, String>,
    ) -> Result<ConfigSpec> {
        if config.cmd.is_none() {
            config.cmd = cmd;
        }
        for (k, v) in env {
            config.env.entry(k).or_insert(v);
        }
        for k in config.env.keys() {
            if !valid_env_name(k) {
                return Err(self.spec_err(format!("[config] env: invalid variable name `{k}`")));
            }
        }
        if let Some(k) = ov.env.keys().find(|k| !valid_env_name(k)) {
            return Err(Error::Usage(format!("--env: invalid variable name `{k}`")));
        }
        if ov.entrypoint.is_some() {
            config.entrypoint.clone_from(&ov.entrypoint);
        }
        if ov.cmd.is_some() {
            config.cmd.clone_from(&ov.cmd);
        }
        config.env.extend(ov.env.clone());
        config.labels.extend(ov.labels.clone());
        if ov.workdir.is_some() {
            config.workdir.clone_from(&ov.workdir);
        }
        if ov.user.is_some() {
            config.user.clone_from(&ov.user);
        }
        Ok(config)
    }
}

/// An environment variable name an image config can hold: not empty, no `=`.
fn valid_env_name(k: &str) -> bool {
    !k.is_empty() && !k.contains('=')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::Mode;

    /// `--cache docker://REPO` gets the tag lamina-cache, never latest; a tag written is kept;
    /// a local reference is refused, naming the flag.
    #[test]
    fn a_cache_reference_defaults_to_the_lamina_cache_tag() {
        let CacheTo::At(r) = CacheTo::parse("docker://127.0.0.1:5000/team/fn", "--cache").unwrap()
        else {
            panic!("not a registry reference");
        };
        assert_eq!(r.tag.as_deref(), Some("lamina-cache"));
        assert_eq!(r.repository, "team/fn");
        let CacheTo::At(r) = CacheTo::parse("docker://127.0.0.1:5000/c:ci", "--cache").unwrap()
        else {
            panic!("not a registry reference");
        };
        assert_eq!(r.tag.as_deref(), Some("ci"));
        let e = CacheTo::parse("oci:dir", "--cache").unwrap_err();
        assert!(e.contains("--cache") && e.contains("docker://"), "{e}");
    }

    /// The spec's `cache = true` is the lamina-cache tag in a registry destination's
    /// repository; with a layout destination it is an error naming the field; `--cache none`
    /// turns it off.
    #[test]
    fn the_spec_cache_field_follows_the_destination() {
        let sf = |to: &str| SpecFile {
            to: Some(to.into()),
            cache: Some(CacheField::On(true)),
            ..Default::default()
        };
        let file = Path::new("/p/lamina.toml");
        let ov = Overrides::default();
        let b = BuildSpec::resolve(
            Some((file, sf("docker://r.example/team/fn:v1"))),
            &ov,
            Path::new("/"),
        )
        .unwrap();
        let c = b.cache.unwrap();
        assert_eq!(
            (c.repository.as_str(), c.tag.as_deref()),
            ("team/fn", Some("lamina-cache"))
        );
        let e = BuildSpec::resolve(Some((file, sf("oci:out"))), &ov, Path::new("/")).unwrap_err();
        assert!(
            matches!(e, Error::Spec { .. }) && e.to_string().contains("field `cache`"),
            "{e}"
        );
        let off = Overrides {
            cache: Some(CacheTo::Off),
            ..Default::default()
        };
        let b = BuildSpec::resolve(Some((file, sf("oci:out"))), &off, Path::new("/")).unwrap();
        assert_eq!(b.cache, None);
    }

    /// With no `--cache` and no `cache` field, a registry destination gets the lamina-cache
    /// tag in its repository and any other destination none (no error); `cache = false`
    /// turns it off; a destination tagged lamina-cache gets no default cache, and asking for
    /// the cache on the destination's own tag is an error naming the flag.
    #[test]
    fn the_registry_cache_is_on_by_default_for_registry_destinations() {
        let file = Path::new("/p/lamina.toml");
        let sf = |to: &str, cache: Option<CacheField>| SpecFile {
            to: Some(to.into()),
            cache,
            ..Default::default()
        };
        let resolve =
            |sf: SpecFile, ov: &Overrides| BuildSpec::resolve(Some((file, sf)), ov, Path::new("/"));
        let ov = Overrides::default();
        let c = resolve(sf("docker://r.example/team/fn:v1", None), &ov)
            .unwrap()
            .cache
            .unwrap();
        assert_eq!(
            (c.registry.as_str(), c.repository.as_str(), c.tag.as_deref()),
            ("r.example", "team/fn", Some("lamina-cache"))
        );
        let ecr = "docker://123456789012.dkr.ecr.us-east-1.amazonaws.com/fn:v1";
        assert!(resolve(sf(ecr, None), &ov).unwrap().cache.is_some());
        for to in ["oci:out", "oci-archive:out.tar"] {
            assert_eq!(resolve(sf(to, None), &ov).unwrap().cache, None, "{to}");
        }
        let off = Some(CacheField::On(false));
        assert_eq!(
            resolve(sf("docker://r.example/fn:v1", off), &ov)
                .unwrap()
                .cache,
            None
        );
        let own = "docker://r.example/fn:lamina-cache";
        assert_eq!(resolve(sf(own, None), &ov).unwrap().cache, None);
        let asked = Overrides {
            cache: Some(CacheTo::Destination),
            ..Default::default()
        };
        let e = resolve(sf(own, None), &asked).unwrap_err();
        assert!(
            matches!(e, Error::Usage(_)) && e.to_string().contains("--cache"),
            "{e}"
        );
    }

    fn parse(text: &str) -> Result<SpecFile> {
        toml::from_str(text).map_err(|e| Error::Spec {
            file: "lamina.toml".into(),
            message: e.to_string(),
        })
    }

    #[test]
    fn full_spec_parses() {
        let sf = parse(
            r#"
base = "oci:base:latest"
platform = "aarch64"
[[layer]]
source = "fn"
dest = "/var/task"
exclude = ["*.md"]
mode = 0o600
dir_mode = "0700"
uid = 1000
[config]
cmd = ["h.handle"]
env = { A = "1" }
[annotations]
k = "v"
"#,
        )
        .unwrap();
        assert_eq!(sf.layer[0].mode, Some(Mode(0o600)));
        assert_eq!(sf.layer[0].dir_mode, Some(Mode(0o700)));
        let b = BuildSpec::resolve(
            Some((Path::new("p/lamina.toml"), sf)),
            &Overrides::default(),
            Path::new("/w"),
        )
        .unwrap();
        assert_eq!(b.platform, Platform::LinuxArm64);
        assert_eq!(b.layers[0].source, Path::new("/w/p/fn"));
        assert_eq!(b.base.local_path(), Some(Path::new("/w/p/base")));
        assert_eq!(b.to.local_path(), Some(Path::new("/w/p/out")));
        assert_eq!(b.timestamp, 0);
    }

    #[test]
    fn unknown_field_and_wrong_type_name_line_and_field() {
        let e = parse("[[layer]]\nsource = \"a\"\ndest = \"/x\"\nsauce = 1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("sauce") && e.contains("line 4"), "{e}");
        let e = parse("platform = 5\n").unwrap_err().to_string();
        assert!(e.contains("platform") && e.contains("line 1"), "{e}");
        let e = parse("[[layer]]\nsource = \"a\"\ndest = \"/x\"\nmode = \"rwx\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("rwx"), "{e}");
    }

    #[test]
    fn flags_override_and_extend() {
        let cwd = Path::new("/c");
        let ov = Overrides {
            platform: Some(flags::platform("x86_64", "--platform").unwrap()),
            layers: vec![flags::layer("dir:/opt", cwd).unwrap()],
            cmd: Some(flags::argv(r#"["a","b"]"#, "--cmd").unwrap()),
            entrypoint: Some(flags::argv("/bootstrap", "--entrypoint").unwrap()),
            env: flags::key_values(&["K=V=W"], "--env").unwrap(),
            timestamp: flags::timestamp_or_epoch(Some("1700000000"), Some("5")).unwrap(),
            ..Default::default()
        };
        let b = BuildSpec::resolve(None, &ov, cwd).unwrap();
        assert_eq!(b.layers[0].source, Path::new("/c/dir"));
        assert_eq!(b.layers[0].dest, "/opt");
        assert_eq!(b.config.cmd, Some(vec!["a".into(), "b".into()]));
        assert_eq!(b.config.entrypoint, Some(vec!["/bootstrap".into()]));
        assert_eq!(b.config.env["K"], "V=W");
        assert_eq!(b.timestamp, 1_700_000_000);
        assert_eq!(b.base, ImageRef::Scratch);
    }

    #[test]
    fn bad_overrides_are_usage_errors() {
        let resolve = |ov: Overrides| BuildSpec::resolve(None, &ov, Path::new("/c")).unwrap_err();
        let e = resolve(Overrides {
            to: Some(ImageRef::Scratch),
            ..Default::default()
        });
        assert!(matches!(&e, Error::Usage(m) if m == "`scratch` cannot be a destination"));
        let e = resolve(Overrides {
            timestamp: Some(Timestamp::Fixed(Timestamp::MAX + 1)),
            ..Default::default()
        });
        assert!(matches!(&e, Error::Usage(m) if m.contains("too far in the future")));
        let e = resolve(Overrides {
            env: BTreeMap::from([(String::new(), "v".to_owned())]),
            ..Default::default()
        });
        assert!(matches!(&e, Error::Usage(m) if m.contains("--env")));
        let e = resolve(Overrides {
            layers: vec![flags::plain_layer("/x", "opt")],
            ..Default::default()
        });
        assert!(matches!(&e, Error::Usage(m) if m.contains("--layer dest")));
    }

    #[test]
    fn source_date_epoch_is_used_and_checked() {
        let seconds = |sde| {
            flags::timestamp_or_epoch(None, sde)
                .and_then(|t| t.unwrap_or(Timestamp::Fixed(0)).seconds())
        };
        assert_eq!(seconds(Some("42")).unwrap(), 42);
        assert_eq!(seconds(None).unwrap(), 0);
        assert!(
            seconds(Some("yesterday"))
                .unwrap_err()
                .to_string()
                .contains("SOURCE_DATE_EPOCH")
        );
    }

    #[test]
    fn image_paths_are_checked() {
        assert_eq!(image_path("/var/task/", "dest").unwrap(), "var/task");
        assert_eq!(image_path("/", "dest").unwrap(), "");
        assert!(image_path("var", "dest").is_err());
        assert!(image_path("/a/../b", "dest").is_err());
    }
}
