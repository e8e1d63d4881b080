//! The `[function]` section: Lambda's vocabulary (runtime, handler, code, dependencies, Lambda
//! layers, bootstrap) turned into a base image, layers and config. Dependencies get a layer of
//! their own so that a code change rebuilds (and re-pushes) one small layer.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::flags::plain_layer as layer;
use super::runtime::{self, Family, UnknownRuntime};
use crate::error::Result;
use crate::layer::{LayerSpec, Mode};

/// `runtime` in a spec: a name [`runtime::find`] knows.
fn known_runtime<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<String>, D::Error> {
    let name = String::deserialize(d)?;
    runtime::find(&name).map_err(serde::de::Error::custom)?;
    Ok(Some(name))
}

/// `[function]` as written in lamina.toml; relative paths are relative to the spec's directory.
#[derive(Deserialize, Clone, Debug, Default, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FunctionSpec {
    /// Lambda runtime name (`python3.12`, `nodejs20.x`, `provided.al2023`, ...): picks the AWS
    /// base image unless `base` is set. An unknown name is refused while the spec is read, so
    /// the error points at its line.
    #[serde(default, deserialize_with = "known_runtime")]
    #[schemars(schema_with = "super::schema::runtime_name")]
    pub runtime: Option<String>,
    /// Becomes CMD unless `[config] cmd` is set.
    pub handler: Option<String>,
    /// A directory or a .zip deployment package, placed in /var/task.
    pub code: Option<PathBuf>,
    /// A directory of dependencies placed in /var/task, in a layer below the code.
    pub dependencies: Option<PathBuf>,
    /// Lambda layers (.zip files or directories), extracted into /opt in order.
    #[serde(default)]
    pub layers: Vec<PathBuf>,
    /// A custom runtime's executable, placed at /var/runtime/bootstrap.
    pub bootstrap: Option<PathBuf>,
    /// Environment variables (under `[config] env`, which wins).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Globs left out of the code (as `[[layer]] exclude`).
    #[serde(default)]
    pub exclude: Vec<String>,
    /// AWS's runtime interface client for a `base` that is not an AWS Lambda image:
    /// `{ language = "python", path = "ric" }` (see docs/runtime-client.md).
    pub runtime_client: Option<super::client::RuntimeClientSpec>,
}

/// What `[function]` contributes to a build.
#[derive(Debug, Default)]
pub struct Expanded {
    /// `docker://public.ecr.aws/lambda/...` for the runtime.
    pub base: Option<String>,
    /// In order: Lambda layers, dependencies, code, bootstrap.
    pub layers: Vec<LayerSpec>,
    /// For a .zip deployment package: no Lambda layers (/opt), the bootstrap at the root of
    /// /var/task, where Lambda's OS-only runtimes look for it in a zip.
    pub zip_layers: Vec<LayerSpec>,
    /// `[ handler ]`, the default CMD.
    pub cmd: Option<Vec<String>>,
    /// `[function] env`, below `[config] env`.
    pub env: BTreeMap<String, String>,
    /// What each of `layers` is, for progress and history: `Lambda layer`, `dependencies`,
    /// `code`, `bootstrap`, `runtime client`.
    pub roles: Vec<&'static str>,
    /// `runtime_client`, its path absolute (its layer is in `layers`).
    pub runtime_client: Option<super::client::RuntimeClient>,
}

/// Top-level names in `dir` that pip installed (listed in a `*.dist-info/RECORD` there), with
/// the dist-info directories themselves: what `pip install -t DIR` put beside the code.
pub fn pip_installed(dir: &Path) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return names;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".dist-info") || !e.path().is_dir() {
            continue;
        }
        names.insert(name.clone());
        let Ok(record) = std::fs::read_to_string(e.path().join("RECORD")) else {
            continue;
        };
        for line in record.lines() {
            let path = line.split(',').next().unwrap_or("");
            let top = path.split('/').next().unwrap_or("");
            if !top.is_empty() && top != ".." && top != "." && dir.join(top).exists() {
                names.insert(top.to_owned());
            }
        }
    }
    names
}

/// `file`'s path inside the directory `dir` as an exclude glob (escaped, `/`-separated), or
/// `None` when it lies elsewhere (or `dir` is not a directory). Directories are compared
/// resolved when they exist, so `./bootstrap`, `src/../bootstrap` and symlinked directories
/// match too; the file itself is not followed (a `bootstrap` symlink in the code is the entry
/// to leave out, wherever it points).
fn inside(dir: &Path, file: &Path) -> Option<String> {
    if !dir.is_dir() {
        return None;
    }
    let resolved = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    let dir = resolved(dir);
    let file = match (file.parent(), file.file_name()) {
        (Some(parent), Some(name)) => resolved(parent).join(name),
        _ => file.to_path_buf(),
    };
    let rel = file.strip_prefix(&dir).ok()?;
    let parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    (!parts.is_empty()).then(|| globset::escape(&parts.join("/")))
}

/// Expand `[function]` (paths relative to `dir`). The only failure is a runtime lamina does not
/// know; the caller names the spec file.
pub fn expand(f: &FunctionSpec, dir: &Path) -> Result<Expanded, UnknownRuntime> {
    let rt = f.runtime.as_deref().map(runtime::find).transpose()?;
    let mut out = Expanded {
        base: rt.map(|r| format!("docker://{}", r.image)),
        cmd: f.handler.clone().map(|h| vec![h]),
        env: f.env.clone(),
        ..Default::default()
    };
    for l in &f.layers {
        out.layers.push(layer(dir.join(l), "/opt"));
    }
    if let Some(d) = &f.dependencies {
        out.layers.push(layer(dir.join(d), "/var/task"));
    }
    if let Some(c) = &f.code {
        let code = dir.join(c);
        let mut code_layer = layer(code.clone(), "/var/task");
        code_layer.exclude = f.exclude.clone();
        // The bootstrap is placed once, by its own layer: not also as code.
        if let Some(rel) = f
            .bootstrap
            .as_ref()
            .and_then(|b| inside(&code, &dir.join(b)))
        {
            code_layer.exclude.push(rel);
        }
        if code.is_dir() {
            let family = rt.map(|r| r.family);
            // Node: node_modules beside the handler.
            if family.is_none_or(|f| f == Family::Node) && code.join("node_modules").is_dir() {
                let mut deps = layer(code.join("node_modules"), "/var/task/node_modules");
                deps.exclude = f.exclude.clone();
                out.layers.push(deps);
                code_layer.exclude.push("node_modules".into());
            }
            // Python: packages pip installed into the code directory.
            if family.is_none_or(|f| f == Family::Python) {
                let installed = pip_installed(&code);
                if !installed.is_empty() {
                    let mut deps = layer(code.clone(), "/var/task");
                    deps.exclude = f.exclude.clone();
                    if let Ok(rd) = std::fs::read_dir(&code) {
                        let mut others: Vec<String> = rd
                            .flatten()
                            .map(|e| e.file_name().to_string_lossy().into_owned())
                            .filter(|n| !installed.contains(n))
                            .collect();
                        others.sort();
                        deps.exclude
                            .extend(others.iter().map(|n| globset::escape(n)));
                    }
                    out.layers.push(deps);
                    code_layer
                        .exclude
                        .extend(installed.iter().map(|n| globset::escape(n)));
                }
            }
        }
        out.layers.push(code_layer);
    }
    out.zip_layers = out.layers[f.layers.len()..].to_vec();
    let n = out.layers.len();
    out.roles = (0..n)
        .map(|i| match i {
            i if i < f.layers.len() => "Lambda layer",
            i if i + 1 == n && f.code.is_some() => "code",
            _ => "dependencies",
        })
        .collect();
    if f.bootstrap.is_some() {
        out.roles.push("bootstrap");
    }
    if let Some(rc) = &f.runtime_client {
        // Below the dependencies and the code, which change more often; not in a .zip (a
        // managed runtime brings its own client).
        let client = super::client::RuntimeClient::from_spec(rc, dir);
        out.layers.insert(f.layers.len(), client.layer());
        out.roles.insert(f.layers.len(), "runtime client");
        out.runtime_client = Some(client);
    }
    if let Some(b) = &f.bootstrap {
        let mut l = layer(dir.join(b), "/var/runtime/bootstrap");
        l.mode = Some(Mode(0o755));
        out.layers.push(l.clone());
        l.dest = "/var/task/bootstrap".into();
        out.zip_layers.push(l);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_dependencies_get_their_own_layer() {
        let d = tempfile::tempdir().unwrap();
        let code = d.path().join("src");
        std::fs::create_dir_all(code.join("requests")).unwrap();
        std::fs::create_dir_all(code.join("requests-2.0.dist-info")).unwrap();
        std::fs::write(
            code.join("requests-2.0.dist-info/RECORD"),
            "requests/__init__.py,sha256=x,1\nrequests-2.0.dist-info/RECORD,,\n../../bin/x,,\n",
        )
        .unwrap();
        std::fs::write(code.join("requests/__init__.py"), "").unwrap();
        std::fs::write(code.join("app.py"), "").unwrap();
        let f = FunctionSpec {
            runtime: Some("python3.12".into()),
            handler: Some("app.handler".into()),
            code: Some("src".into()),
            bootstrap: None,
            ..Default::default()
        };
        let e = expand(&f, d.path()).unwrap();
        assert_eq!(
            e.base.as_deref(),
            Some("docker://public.ecr.aws/lambda/python:3.12")
        );
        assert_eq!(e.cmd, Some(vec!["app.handler".to_owned()]));
        assert_eq!(e.layers.len(), 2);
        assert_eq!(e.layers[0].exclude, ["app.py"]);
        assert_eq!(e.layers[1].exclude, ["requests", "requests-2.0.dist-info"]);
    }

    #[test]
    fn a_bootstrap_inside_the_code_is_not_code_too() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("target/lambda/x")).unwrap();
        std::fs::write(d.path().join("target/lambda/x/bootstrap"), "").unwrap();
        std::fs::write(d.path().join("bootstrap"), "").unwrap();
        let with = |code: &str, bootstrap: &str| FunctionSpec {
            runtime: Some("provided.al2023".into()),
            code: Some(code.into()),
            bootstrap: Some(bootstrap.into()),
            exclude: vec!["out".into()],
            ..Default::default()
        };
        for (code, bootstrap, excluded) in [
            (".", "bootstrap", Some("bootstrap")),
            (".", "./bootstrap", Some("bootstrap")),
            (
                "./",
                "target/lambda/x/bootstrap",
                Some("target/lambda/x/bootstrap"),
            ),
            (
                "target",
                "target/lambda/x/bootstrap",
                Some("lambda/x/bootstrap"),
            ),
            ("target/lambda/x", "bootstrap", None),
        ] {
            let e = expand(&with(code, bootstrap), d.path()).unwrap();
            let code_layer = e.layers.iter().find(|l| l.dest == "/var/task").unwrap();
            let mut want = vec!["out".to_owned()];
            want.extend(excluded.map(str::to_owned));
            assert_eq!(code_layer.exclude, want, "{code} {bootstrap}");
            assert_eq!(e.zip_layers[0].exclude, want, "{code} {bootstrap}");
            assert_eq!(e.zip_layers[1].dest, "/var/task/bootstrap");
        }
    }

    #[test]
    fn node_modules_and_layers_and_bootstrap() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("fn/node_modules/x")).unwrap();
        let f = FunctionSpec {
            runtime: Some("nodejs20.x".into()),
            code: Some("fn".into()),
            layers: vec!["l1.zip".into(), "l2".into()],
            bootstrap: Some("bootstrap".into()),
            ..Default::default()
        };
        let e = expand(&f, d.path()).unwrap();
        let dests: Vec<&str> = e.layers.iter().map(|l| l.dest.as_str()).collect();
        assert_eq!(
            dests,
            [
                "/opt",
                "/opt",
                "/var/task/node_modules",
                "/var/task",
                "/var/runtime/bootstrap"
            ]
        );
        assert_eq!(e.layers[3].exclude, ["node_modules"]);
        assert_eq!(e.layers[4].mode, Some(Mode(0o755)));
        let zip_dests: Vec<&str> = e.zip_layers.iter().map(|l| l.dest.as_str()).collect();
        assert_eq!(
            zip_dests,
            ["/var/task/node_modules", "/var/task", "/var/task/bootstrap"]
        );
        assert!(
            expand(
                &FunctionSpec {
                    runtime: Some("cobol".into()),
                    ..Default::default()
                },
                d.path()
            )
            .is_err()
        );
    }
}

/// A commented starter `lamina.toml` for the function in `dir`: the project detected as
/// [`super::init::detect`] does (an empty or unrecognised directory is a usage error listing
/// the runtimes), or laid out for `runtime`. An unknown `runtime` is a usage error (it is the
/// caller's `--runtime`).
pub fn starter_spec(runtime: Option<&str>, dir: &Path) -> Result<String> {
    super::init::render(&super::init::detect(runtime, dir)?)
}

#[cfg(test)]
mod starter_tests {
    use super::*;

    #[test]
    fn starter_specs_parse_and_resolve() {
        for (rt, file) in [
            (None, "app.py"),
            (None, "package.json"),
            (Some("provided.al2023"), "x"),
            (Some("java21"), "x"),
        ] {
            let d = tempfile::tempdir().unwrap();
            std::fs::write(d.path().join(file), "").unwrap();
            let text = starter_spec(rt, d.path()).unwrap();
            let sf: crate::spec::SpecFile =
                toml::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
            let path = d.path().join("lamina.toml");
            let b =
                crate::spec::BuildSpec::resolve(Some((&path, sf)), &Default::default(), d.path())
                    .unwrap();
            assert!(matches!(b.base, crate::reference::ImageRef::Docker(_)));
            assert!(b.config.cmd.is_some());
        }
        assert!(starter_spec(Some("cobol"), Path::new("/")).is_err());
        for (file, rt) in [
            ("pom.xml", "java21"),
            ("build.gradle.kts", "java21"),
            ("app.jar", "java21"),
            ("Gemfile", "ruby3.4"),
            ("app.rb", "ruby3.4"),
            ("Fn.csproj", "dotnet8"),
            ("Fn.runtimeconfig.json", "dotnet8"),
            ("bootstrap", "provided.al2023"),
        ] {
            let d = tempfile::tempdir().unwrap();
            std::fs::write(d.path().join(file), "").unwrap();
            let text = starter_spec(None, d.path()).unwrap();
            assert!(
                text.contains(&format!("runtime = \"{rt}\"")),
                "{file}: {text}"
            );
        }
    }
}
