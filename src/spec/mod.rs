//! The build spec: `lamina.toml` (serde, unknown fields refused) plus command-line overrides,
//! resolved into a [`BuildSpec`] whose paths are absolute and whose values are validated.

pub mod function;
pub mod runtime;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, IoContext, Result};
use crate::image::ConfigSpec;
use crate::layer::{LayerSpec, image_path};
use crate::platform::{ParsePlatformError, Platform};
use crate::reference::{ImageRef, ParseReferenceError};

/// `lamina.toml` as written.
#[derive(Deserialize, Default, Debug)]
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
}

/// One `[[delete]]`: a path of the base to hide with a whiteout.
#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct DeleteSpec {
    /// Absolute in-image path (not `/`).
    pub path: String,
}

/// How timestamps (file mtimes, `created`, history) are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timestamp {
    /// Seconds since the Unix epoch.
    Fixed(u64),
    /// The wall clock at build time: not reproducible, only on request.
    Now,
}

impl Timestamp {
    /// `--timestamp` value: `now`, or seconds since the epoch.
    pub fn parse(s: &str, what: &str) -> Result<Timestamp> {
        if s == "now" {
            return Ok(Timestamp::Now);
        }
        s.trim().parse::<u64>().map(Timestamp::Fixed).map_err(|_| {
            Error::Usage(format!(
                "{what} `{s}` is not a number of seconds since 1970-01-01 (or `now`)"
            ))
        })
    }

    /// Resolve to seconds: the flag, else `SOURCE_DATE_EPOCH`, else 0.
    pub fn resolve(flag: Option<&str>, source_date_epoch: Option<&str>) -> Result<u64> {
        let t = match (flag, source_date_epoch) {
            (Some(f), _) => Timestamp::parse(f, "--timestamp")?,
            (None, Some(e)) if !e.is_empty() => Timestamp::parse(e, "SOURCE_DATE_EPOCH")?,
            _ => Timestamp::Fixed(0),
        };
        // Tar headers hold 11 octal digits of seconds: up to the year 2242.
        const MAX: u64 = 0o77777777777;
        if let Timestamp::Fixed(s) = t
            && s > MAX
        {
            return Err(Error::Usage(format!(
                "timestamp {s} is too far in the future (tar headers end at {MAX})"
            )));
        }
        Ok(match t {
            Timestamp::Fixed(s) => s,
            Timestamp::Now => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        })
    }
}

/// Values given as flags; each one overrides (or, for lists, extends) the spec file.
#[derive(Default, Debug, Clone)]
pub struct Overrides {
    /// `--base`: a reference.
    pub base: Option<String>,
    /// `--platform`.
    pub platform: Option<String>,
    /// `--to`: a reference.
    pub to: Option<String>,
    /// `SRC:DEST`, appended after the spec's layers.
    pub layers: Vec<String>,
    /// `--delete`: absolute in-image paths, added to the spec's.
    pub deletes: Vec<String>,
    /// `--entrypoint`: a JSON array, or one string.
    pub entrypoint: Option<String>,
    /// `--cmd`: a JSON array, or one string.
    pub cmd: Option<String>,
    /// `--env KEY=VALUE`s.
    pub env: Vec<String>,
    /// `--workdir`.
    pub workdir: Option<String>,
    /// `--user`.
    pub user: Option<String>,
    /// `--label KEY=VALUE`s.
    pub labels: Vec<String>,
    /// `--annotation KEY=VALUE`s.
    pub annotations: Vec<String>,
    /// `--timestamp`: seconds since the epoch, or `now`.
    pub timestamp: Option<String>,
    /// `--compression-level` (0 to 9).
    pub compression_level: Option<u32>,
    /// `--fix-permissions` (or-ed with the spec's `fix_permissions`).
    pub fix_permissions: bool,
    /// `--no-lambda-check`: push even when the Lambda checks find errors.
    pub no_lambda_check: bool,
    /// `--no-cache`: rebuild every layer.
    pub no_cache: bool,
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
}

pub use crate::layer::compress::DEFAULT_COMPRESSION_LEVEL;

/// Read and parse a spec file; errors name the file, line and field.
pub fn read_spec_file(path: &Path) -> Result<SpecFile> {
    let text = std::fs::read_to_string(path).at("reading build spec", path)?;
    toml::from_str(&text).map_err(|e| Error::Spec {
        file: path.to_owned(),
        message: e.to_string().trim_end().to_owned(),
    })
}

fn parse_kv(s: &str, flag: &str) -> Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(Error::Usage(format!("{flag} `{s}`: expected KEY=VALUE"))),
    }
}

/// `--entrypoint`/`--cmd`: a JSON array of strings, or one string taken as a single element.
fn parse_argv(s: &str, flag: &str) -> Result<Vec<String>> {
    if s.trim_start().starts_with('[') {
        serde_json::from_str(s)
            .map_err(|e| Error::Usage(format!("{flag} `{s}` is not a JSON array of strings: {e}")))
    } else {
        Ok(vec![s.to_owned()])
    }
}

fn parse_layer_flag(s: &str, cwd: &Path) -> Result<LayerSpec> {
    let (src, dest) = s
        .rsplit_once(':')
        .filter(|(a, b)| !a.is_empty() && !b.is_empty())
        .ok_or_else(|| {
            Error::Usage(format!(
                "--layer `{s}`: expected SOURCE:DEST, e.g. function:/var/task"
            ))
        })?;
    Ok(LayerSpec {
        source: cwd.join(src),
        dest: dest.to_owned(),
        exclude: vec![],
        mode: None,
        dir_mode: None,
        uid: 0,
        gid: 0,
    })
}

impl BuildSpec {
    /// Combine a spec file (paths relative to `spec_dir`) with flags (paths relative to `cwd`).
    /// A bad flag value is an [`Error::Usage`]; a bad spec field an [`Error::Spec`] naming the
    /// file and field.
    pub fn resolve(
        file: Option<(&Path, SpecFile)>,
        ov: &Overrides,
        cwd: &Path,
        source_date_epoch: Option<&str>,
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
            cwd,
        };

        let function = match &sf.function {
            Some(f) => function::expand(f, &spec_dir)
                .map_err(|e| r.spec_err(format!("[function]: {e}")))?,
            None => Default::default(),
        };
        let base = r.base(ov, &sf, &function)?;
        let to = r.to(ov, &sf)?;
        let platform = r.platform(ov, &sf)?;
        let (layers, zip_layers) = r.layers(ov, sf.layer, function.layers, function.zip_layers)?;
        let deletes = r.deletes(ov, &sf.delete)?;
        let config = r.config(ov, sf.config, function.cmd, function.env)?;
        let mut annotations = sf.annotations;
        for kv in &ov.annotations {
            let (k, v) = parse_kv(kv, "--annotation")?;
            annotations.insert(k, v);
        }

        let compression_level = ov.compression_level.unwrap_or(DEFAULT_COMPRESSION_LEVEL);
        if compression_level > 9 {
            return Err(Error::Usage(format!(
                "--compression-level {compression_level}: use 0 (store) to 9 (smallest)"
            )));
        }
        let timestamp = Timestamp::resolve(ov.timestamp.as_deref(), source_date_epoch)?;

        Ok(BuildSpec {
            file: path,
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
        })
    }
}

/// Where the values being resolved came from: flags are relative to `cwd` and their errors are
/// usage errors; spec fields are relative to the spec's directory and their errors name the file.
struct Resolver<'a> {
    path: Option<&'a Path>,
    spec_dir: &'a Path,
    cwd: &'a Path,
}

impl Resolver<'_> {
    /// An error in the spec file (a usage error when there is no file: the value was a flag).
    fn spec_err(&self, message: String) -> Error {
        match self.path {
            Some(f) => Error::Spec {
                file: f.to_owned(),
                message,
            },
            None => Error::Usage(message),
        }
    }

    /// Parse a reference from a flag (`--field`) or a spec field, and anchor its path.
    fn image_ref(&self, s: &str, flag: bool, field: &str) -> Result<ImageRef> {
        let r: ImageRef = s.parse().map_err(|e: ParseReferenceError| {
            if flag {
                Error::Usage(format!("--{field}: {e}"))
            } else {
                self.spec_err(format!("field `{field}`: {e}"))
            }
        })?;
        Ok(r.relative_to(if flag { self.cwd } else { self.spec_dir }))
    }

    /// `--base`, else `base`, else the `[function]` runtime's image, else scratch.
    fn base(&self, ov: &Overrides, sf: &SpecFile, f: &function::Expanded) -> Result<ImageRef> {
        Ok(match (&ov.base, &sf.base, &f.base) {
            (Some(b), _, _) => self.image_ref(b, true, "base")?,
            (None, Some(b), _) => self.image_ref(b, false, "base")?,
            (None, None, Some(b)) => self.image_ref(b, false, "function.runtime")?,
            (None, None, None) => ImageRef::Scratch,
        })
    }

    /// `--to`, else `to`, else `oci:out:latest` beside the spec; never scratch.
    fn to(&self, ov: &Overrides, sf: &SpecFile) -> Result<ImageRef> {
        let (to, flag) = match (&ov.to, &sf.to) {
            (Some(t), _) => (self.image_ref(t, true, "to")?, true),
            (None, Some(t)) => (self.image_ref(t, false, "to")?, false),
            (None, None) => (self.image_ref("oci:out:latest", false, "to")?, false),
        };
        if to == ImageRef::Scratch {
            let message = "`scratch` cannot be a destination".to_owned();
            return Err(if flag {
                Error::Usage(message)
            } else {
                self.spec_err(message)
            });
        }
        Ok(to)
    }

    /// `--platform`, else `platform`, else linux/amd64.
    fn platform(&self, ov: &Overrides, sf: &SpecFile) -> Result<Platform> {
        Ok(match (&ov.platform, &sf.platform) {
            (Some(p), _) => p
                .parse()
                .map_err(|e: ParsePlatformError| Error::Usage(format!("--platform: {e}")))?,
            (None, Some(p)) => p
                .parse()
                .map_err(|e: ParsePlatformError| self.spec_err(format!("field `platform`: {e}")))?,
            (None, None) => Platform::default(),
        })
    }

    /// The image's layers and the zip package's: `[function]`'s first, then `[[layer]]`s, then
    /// `--layer`s (the last two in both).
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
        for s in &ov.layers {
            let l = parse_layer_flag(s, self.cwd)?;
            image_path(&l.dest, "--layer dest").map_err(|e| Error::Usage(e.into()))?;
            layers.push(l);
        }
        zip_layers.extend_from_slice(&layers[first_own..]);
        Ok((layers, zip_layers))
    }

    /// The in-image paths to delete (`[[delete]]`s and `--delete`s), without their leading
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

    /// `[config]`, under `[function]`'s handler and env, over the config flags.
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
        if let Some(e) = &ov.entrypoint {
            config.entrypoint = Some(parse_argv(e, "--entrypoint")?);
        }
        if let Some(c) = &ov.cmd {
            config.cmd = Some(parse_argv(c, "--cmd")?);
        }
        for kv in &ov.env {
            let (k, v) = parse_kv(kv, "--env")?;
            config.env.insert(k, v);
        }
        // `--env` names are never empty and never hold `=`: a bad name is the file's.
        for k in config.env.keys() {
            if k.is_empty() || k.contains('=') {
                return Err(self.spec_err(format!("[config] env: invalid variable name `{k}`")));
            }
        }
        for kv in &ov.labels {
            let (k, v) = parse_kv(kv, "--label")?;
            config.labels.insert(k, v);
        }
        if ov.workdir.is_some() {
            config.workdir.clone_from(&ov.workdir);
        }
        if ov.user.is_some() {
            config.user.clone_from(&ov.user);
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::Mode;

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
            None,
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
        let ov = Overrides {
            platform: Some("x86_64".into()),
            layers: vec!["dir:/opt".into()],
            cmd: Some(r#"["a","b"]"#.into()),
            entrypoint: Some("/bootstrap".into()),
            env: vec!["K=V=W".into()],
            timestamp: Some("1700000000".into()),
            ..Default::default()
        };
        let b = BuildSpec::resolve(None, &ov, Path::new("/c"), Some("5")).unwrap();
        assert_eq!(b.layers[0].source, Path::new("/c/dir"));
        assert_eq!(b.layers[0].dest, "/opt");
        assert_eq!(b.config.cmd, Some(vec!["a".into(), "b".into()]));
        assert_eq!(b.config.entrypoint, Some(vec!["/bootstrap".into()]));
        assert_eq!(b.config.env["K"], "V=W");
        assert_eq!(b.timestamp, 1_700_000_000);
        assert_eq!(b.base, ImageRef::Scratch);
    }

    #[test]
    fn source_date_epoch_is_used_and_checked() {
        assert_eq!(Timestamp::resolve(None, Some("42")).unwrap(), 42);
        assert_eq!(Timestamp::resolve(None, None).unwrap(), 0);
        assert!(
            Timestamp::resolve(None, Some("yesterday"))
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
