//! `lamina init`'s detection: what kind of Lambda project a directory holds, laid out the way
//! AWS's guides and the usual tools (pip, npm, cargo-lambda, go) leave it, turned into a
//! starter `[function]` with the reasons for each choice and the next commands to run.

use std::path::Path;

use super::runtime::{self, Family};
use crate::error::{Error, Result};

/// What `init` found: the `[function]` fields to write, why, and what to run next.
#[derive(Debug, Clone, Default)]
pub struct Detected {
    /// The runtime's name (`python3.13`).
    pub runtime: String,
    /// The handler (`app.handler`).
    pub handler: String,
    /// The code directory, relative to the project (`.`, `src`).
    pub code: String,
    /// A dependencies directory, relative to the project (`package`), if one was found.
    pub dependencies: Option<String>,
    /// A custom runtime's executable, relative to the project.
    pub bootstrap: Option<String>,
    /// Excluded from the code (globs, relative to `code`).
    pub exclude: Vec<String>,
    /// Why: one line per choice.
    pub reasons: Vec<String>,
    /// Commands to run before `lamina build` (dependencies to install, a binary to build).
    pub todo: Vec<String>,
    /// A base that is not an AWS Lambda image (`lamina init --base REF`), see [`use_base`].
    pub base: Option<String>,
    /// The `runtime_client` line for such a base (or a comment saying none is needed).
    pub runtime_client: Option<String>,
}

/// For `lamina init --base REF`: build on `base` (not an AWS Lambda image), with AWS's runtime
/// interface client for the project's language at `ric` (an existing directory holding it is
/// taken as it is), the command that fetches it for the platform in `todo`. Go, Rust and
/// `provided` projects are told their bootstrap links the client.
pub fn use_base(d: &mut Detected, base: &str, dir: &Path) {
    use super::client::Language;
    d.base = Some(base.to_owned());
    let family = runtime::find(&d.runtime).map(|r| r.family).ok();
    let lang = match family {
        Some(Family::Python) => Language::Python,
        Some(Family::Node) => Language::Node,
        Some(Family::Java) => Language::Java,
        Some(Family::Provided) => {
            d.runtime_client = Some(
                "# no runtime_client: the bootstrap links AWS's runtime interface client".into(),
            );
            d.reasons.push(format!(
                "base {base}: a custom runtime's bootstrap links the runtime interface client itself"
            ));
            return;
        }
        _ => {
            d.runtime_client = Some(format!(
                "# runtime_client: lamina adds AWS's client for python, node and java, not {}",
                d.runtime
            ));
            return;
        }
    };
    // The version in the base's tag (`python:3.12-slim`, `node:22`, `eclipse-temurin:21-jre`)
    // names the runtime, when lamina knows it.
    let tag = base.rsplit_once(':').map_or("", |(_, t)| t);
    let version: String = tag
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let major = version.split('.').next().unwrap_or("");
    let named = match lang {
        Language::Python => format!(
            "python{}",
            version.split('.').take(2).collect::<Vec<_>>().join(".")
        ),
        Language::Node => format!("nodejs{major}.x"),
        Language::Java => format!("java{major}"),
    };
    if !major.is_empty() && runtime::find(&named).is_ok() {
        d.runtime = named;
    }
    let path = if lang == Language::Java {
        "ric/aws-lambda-java-runtime-interface-client.jar"
    } else {
        "ric"
    };
    d.runtime_client = Some(format!(
        "runtime_client = {{ language = \"{}\", path = \"{path}\" }}   # AWS's client ({}) for a base that is not an AWS Lambda image",
        lang.name(),
        lang.package()
    ));
    // The client is not the function's code nor its dependencies.
    if d.dependencies.as_deref() == Some("ric") {
        d.dependencies = None;
        d.reasons.retain(|r| !r.starts_with("dependencies ric/"));
    }
    if d.code == "." && !d.exclude.iter().any(|e| e == "ric") {
        d.exclude.push("ric".into());
    }
    d.reasons.push(format!(
        "base {base}: not an AWS Lambda image, so AWS's runtime interface client ({}) goes on a layer of its own",
        lang.package()
    ));
    let fetched = match lang {
        Language::Python => dir.join("ric/awslambdaric/__main__.py").is_file(),
        Language::Node => dir.join("ric/node_modules/aws-lambda-ric").is_dir(),
        Language::Java => dir.join(path).is_file(),
    };
    let python = d.runtime.strip_prefix("python");
    if !fetched {
        let target = if lang == Language::Java { "ric" } else { path };
        d.todo.push(format!(
            "{}   (linux/amd64; manylinux2014_aarch64 for linux/arm64{})",
            lang.fetch_command(target, "x86_64", python),
            if lang == Language::Python {
                ", and the base's own python3 version"
            } else {
                ""
            }
        ));
    }
}

/// lamina's own outputs and files that are not code, excluded from every starter's code.
const OWN: [&str; 6] = [
    "lamina.toml",
    "lamina.lock",
    "lamina.schema.json",
    "out",
    "function.zip",
    ".git",
];

/// Python modules a handler usually lives in, in the order they are looked for.
const PY_MODULES: [&str; 5] = ["lambda_function", "app", "handler", "main", "index"];

/// Detect the project in `dir` (with `runtime`, only its layout: the runtime is given).
/// An empty or unrecognised directory is a usage error listing the runtimes.
pub fn detect(runtime: Option<&str>, dir: &Path) -> Result<Detected> {
    let given = runtime
        .map(|r| runtime::find(r).map_err(|e| Error::Usage(e.to_string())))
        .transpose()?;
    let family = match given {
        Some(rt) => Some(rt.family),
        None => guess_family(dir),
    };
    let mut d = match family {
        Some(Family::Python) => python(dir),
        Some(Family::Node) => node(dir),
        Some(Family::Provided) if dir.join("Cargo.toml").is_file() => cargo_lambda(dir),
        Some(Family::Provided) if dir.join("go.mod").is_file() => go(dir),
        Some(Family::Provided) => provided(dir),
        Some(f) => simple(f, dir),
        None => return Err(unknown(dir)),
    };
    if let Some(rt) = given {
        d.runtime = rt.name.to_owned();
        d.reasons
            .insert(0, format!("runtime {} (--runtime)", rt.name));
    }
    let mut exclude: Vec<String> = OWN.iter().map(|s| s.to_string()).collect();
    exclude.append(&mut d.exclude);
    d.exclude = exclude;
    Ok(d)
}

/// An empty or unrecognised directory: what lamina looks for, and `--runtime`.
fn unknown(dir: &Path) -> Error {
    let names: Vec<&str> = runtime::RUNTIMES.iter().map(|r| r.name).collect();
    Error::Usage(format!(
        "{}: no Lambda function recognised (looked for *.py, requirements.txt, package.json, \
         Cargo.toml, go.mod, pom.xml, build.gradle, *.jar, Gemfile, *.csproj and a bootstrap); \
         name the runtime with `lamina init --runtime NAME`, one of: {}",
        dir.display(),
        names.join(", ")
    ))
}

fn has_ext(dir: &Path, ext: &str) -> bool {
    std::fs::read_dir(dir).is_ok_and(|rd| {
        rd.flatten()
            .any(|e| e.path().extension().is_some_and(|x| x == ext))
    })
}

fn name_ends(dir: &Path, suffix: &str) -> bool {
    std::fs::read_dir(dir).is_ok_and(|rd| {
        rd.flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(suffix))
    })
}

/// The family the files in `dir` suggest, or none.
fn guess_family(dir: &Path) -> Option<Family> {
    let has = |n: &str| dir.join(n).exists();
    if has("Cargo.toml") || has("go.mod") {
        Some(Family::Provided)
    } else if has("requirements.txt")
        || has("pyproject.toml")
        || has_ext(dir, "py")
        || has_ext(&dir.join("src"), "py")
    {
        Some(Family::Python)
    } else if has("package.json") || has_ext(dir, "js") || has_ext(dir, "mjs") {
        Some(Family::Node)
    } else if has("pom.xml")
        || has("build.gradle")
        || has("build.gradle.kts")
        || has_ext(dir, "jar")
    {
        Some(Family::Java)
    } else if has("Gemfile") || has_ext(dir, "rb") {
        Some(Family::Ruby)
    } else if has_ext(dir, "csproj") || name_ends(dir, ".runtimeconfig.json") {
        Some(Family::DotNet)
    } else if has("bootstrap") {
        Some(Family::Provided)
    } else {
        None
    }
}

/// The newest runtime of a family, as `init` suggests it.
fn newest(f: Family) -> &'static str {
    match f {
        Family::Python => "python3.13",
        Family::Node => "nodejs22.x",
        Family::Java => "java21",
        Family::Ruby => "ruby3.4",
        Family::DotNet => "dotnet8",
        Family::Provided => "provided.al2023",
    }
}

/// Java, Ruby, .NET: the code directory as it is, the family's default handler.
fn simple(f: Family, _dir: &Path) -> Detected {
    Detected {
        runtime: newest(f).into(),
        handler: runtime::default_handler(f).into(),
        code: ".".into(),
        reasons: vec![format!("{} project files", newest(f))],
        ..Default::default()
    }
}

/// A `bootstrap` at the root: an OS-only runtime.
fn provided(dir: &Path) -> Detected {
    let mut d = Detected {
        runtime: "provided.al2023".into(),
        handler: runtime::default_handler(Family::Provided).into(),
        code: ".".into(),
        bootstrap: Some("bootstrap".into()),
        reasons: vec!["a `bootstrap` executable: an OS-only runtime (provided.al2023)".into()],
        ..Default::default()
    };
    if !dir.join("bootstrap").is_file() {
        d.todo
            .push("put the custom runtime's executable at ./bootstrap".into());
    }
    d
}

/// Python: the handler's module at the root or in `src/`; dependencies in a directory holding
/// `*.dist-info` (what `pip install --target DIR` leaves); `requirements.txt` noticed.
fn python(dir: &Path) -> Detected {
    let mut d = Detected {
        runtime: newest(Family::Python).into(),
        code: ".".into(),
        ..Default::default()
    };
    let (code, module, func) = python_handler(dir);
    d.code = code.clone();
    d.handler = format!("{module}.{func}");
    let at = if code == "." {
        String::new()
    } else {
        format!("{code}/")
    };
    d.reasons.push(format!(
        "Python: handler {} (`def {func}` in {at}{module}.py)",
        d.handler
    ));
    // A directory of installed packages beside (or instead of) the code's own.
    let deps = subdirs(dir)
        .into_iter()
        .find(|s| *s != code && !super::function::pip_installed(&dir.join(s)).is_empty());
    if let Some(s) = &deps {
        d.reasons.push(format!(
            "dependencies {s}/ (it holds *.dist-info: packages pip installed): a layer of their \
             own in /var/task"
        ));
        if code == "." {
            d.exclude.push(s.clone());
        }
    } else if !super::function::pip_installed(&dir.join(&code)).is_empty() {
        d.reasons.push(format!(
            "packages pip installed into {code}/ (*.dist-info) go into a layer of their own"
        ));
    }
    d.dependencies = deps;
    if dir.join("requirements.txt").is_file() && d.dependencies.is_none() {
        d.reasons
            .push("requirements.txt, but no installed packages found".into());
        d.todo.push(format!(
            "pip install -r requirements.txt --target package --platform manylinux2014_x86_64 \
             --only-binary=:all: --python-version {} (manylinux2014_aarch64 for linux/arm64), \
             then set `dependencies = \"package\"`",
            &d.runtime["python".len()..]
        ));
    }
    d.exclude
        .extend(["**/__pycache__".into(), "**/*.pyc".into()]);
    d
}

/// Where the handler is: `(code dir, module, function)`, looked for at the root, then in `src/`.
fn python_handler(dir: &Path) -> (String, String, String) {
    for code in [".", "src"] {
        let base = dir.join(code);
        for m in PY_MODULES {
            let Ok(text) = std::fs::read_to_string(base.join(format!("{m}.py"))) else {
                continue;
            };
            let func = ["lambda_handler", "handler"]
                .into_iter()
                .find(|f| text.contains(&format!("def {f}(")))
                .unwrap_or("handler");
            return (code.into(), m.into(), func.into());
        }
    }
    let code = if !has_ext(dir, "py") && has_ext(&dir.join("src"), "py") {
        "src"
    } else {
        "."
    };
    (code.into(), "app".into(), "handler".into())
}

/// Immediate subdirectories of `dir`, sorted, hidden ones left out.
fn subdirs(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.path().is_dir())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Node.js: `package.json`'s `main` (default `index.js`) names the handler's file, `type`
/// says CommonJS or ES module; `node_modules` gets a layer of its own.
fn node(dir: &Path) -> Detected {
    let pkg: serde_json::Value =
        crate::image::blob::read_capped(&dir.join("package.json"), 1 << 20)
            .ok()
            .flatten()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
    let main = pkg["main"].as_str().map(str::to_owned).unwrap_or_else(|| {
        if dir.join("index.mjs").is_file() {
            "index.mjs".into()
        } else {
            "index.js".into()
        }
    });
    let stem = main
        .trim_start_matches("./")
        .rsplit_once('.')
        .map_or(main.as_str(), |(s, _)| s)
        .to_owned();
    let kind = if pkg["type"] == "module" || main.ends_with(".mjs") {
        "an ES module"
    } else {
        "CommonJS"
    };
    let mut d = Detected {
        runtime: newest(Family::Node).into(),
        handler: format!("{stem}.handler"),
        code: ".".into(),
        exclude: vec!["**/*.ts".into(), "**/*.map".into()],
        ..Default::default()
    };
    let from = if pkg["main"].is_string() {
        "package.json `main`"
    } else {
        "the default file"
    };
    d.reasons.push(format!(
        "Node.js: handler {} ({main}, {from}, {kind})",
        d.handler
    ));
    if dir.join("node_modules").is_dir() {
        d.reasons
            .push("node_modules/: a layer of its own in /var/task/node_modules".into());
    } else if dir.join("package.json").is_file() {
        d.todo
            .push("npm install --omit=dev (node_modules is not there yet)".into());
    }
    d
}

/// The binary a cargo-lambda project builds: the first `[[bin]]`'s name, else the package's.
fn cargo_bin(dir: &Path) -> String {
    let doc: toml::Table = std::fs::read_to_string(dir.join("Cargo.toml"))
        .ok()
        .and_then(|t| toml::from_str(&t).ok())
        .unwrap_or_default();
    let bin = doc
        .get("bin")
        .and_then(|b| b.as_array())
        .and_then(|a| a.first())
        .and_then(|b| b.get("name"))
        .and_then(|n| n.as_str());
    let package = doc
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str());
    bin.or(package).unwrap_or("bootstrap").to_owned()
}

/// cargo-lambda: `cargo lambda build --release` leaves `target/lambda/<bin>/bootstrap`.
fn cargo_lambda(dir: &Path) -> Detected {
    let bin = cargo_bin(dir);
    let bootstrap = format!("target/lambda/{bin}/bootstrap");
    let mut d = Detected {
        runtime: "provided.al2023".into(),
        handler: runtime::default_handler(Family::Provided).into(),
        code: ".".into(),
        exclude: ["target", "src", "Cargo.toml", "Cargo.lock"]
            .map(String::from)
            .to_vec(),
        reasons: vec![format!(
            "Cargo.toml: a Rust function (cargo-lambda), binary `{bin}`, on provided.al2023 with \
             its bootstrap {bootstrap}; target/, src/ and Cargo.* are not shipped"
        )],
        ..Default::default()
    };
    if !dir.join(&bootstrap).is_file() {
        d.todo
            .push("cargo lambda build --release (add --arm64 for linux/arm64)".into());
    }
    d.bootstrap = Some(bootstrap);
    d
}

/// Go: `go build -tags lambda.norpc -o bootstrap` for Linux.
fn go(dir: &Path) -> Detected {
    let mut d = Detected {
        runtime: "provided.al2023".into(),
        handler: runtime::default_handler(Family::Provided).into(),
        code: ".".into(),
        bootstrap: Some("bootstrap".into()),
        exclude: ["bootstrap", "*.go", "go.mod", "go.sum"]
            .map(String::from)
            .to_vec(),
        reasons: vec![
            "go.mod: a Go function on provided.al2023; its binary `bootstrap` goes to \
             /var/runtime/bootstrap (and the Go sources are not shipped)"
                .into(),
        ],
        ..Default::default()
    };
    if !dir.join("bootstrap").is_file() {
        d.todo.push(
            "GOOS=linux GOARCH=amd64 CGO_ENABLED=0 go build -tags lambda.norpc -o bootstrap . \
             (GOARCH=arm64 for linux/arm64)"
                .into(),
        );
    }
    d
}

/// The commented starter `lamina.toml` for `d`.
pub fn render(d: &Detected) -> Result<String> {
    let rt = runtime::find(&d.runtime).map_err(|e| Error::Usage(e.to_string()))?;
    let q = |s: &str| toml::Value::String(s.to_owned()).to_string();
    let exclude: Vec<String> = d.exclude.iter().map(|e| q(e)).collect();
    let deps = match &d.dependencies {
        Some(s) => format!("dependencies = {}{}# its own layer, below the code", q(s), pad(s, 14)),
        None => "# dependencies = \"package\"   # a directory of dependencies: its own layer, below the code".into(),
    };
    let bootstrap = match &d.bootstrap {
        Some(b) => format!("bootstrap = {}   # the custom runtime's executable, into /var/runtime/bootstrap", q(b)),
        None => "# bootstrap = \"bootstrap\"   # a custom runtime's executable, into /var/runtime/bootstrap".into(),
    };
    Ok(format!(
        r#"#:schema ./lamina.schema.json

# lamina.toml: build this function as a Lambda container image with `lamina build`.
# Paths are relative to this file. Every field can also be set by a flag (`lamina build --help`).

{base}platform = "linux/amd64"       # or "linux/arm64" (Lambda's arm64); x86_64 and aarch64 work too
to = "oci:out:latest"          # or docker://<account>.dkr.ecr.<region>.amazonaws.com/<repo>:<tag>

[function]
runtime = "{name}"{rpad}# {runtime_note}
handler = "{handler}"{hpad}# becomes CMD
code = {code}{cpad}# into /var/task
exclude = [{exclude}]
{deps}
# layers = ["layer.zip"]       # Lambda layers (.zip or directories), into /opt in order
{bootstrap}
{client}# env = {{ LOG_LEVEL = "info" }}

# [config]                     # wins over [function]: entrypoint, cmd, env, workdir, user, labels
# [annotations]                # manifest annotations
"#,
        name = rt.name,
        rpad = pad(rt.name, 19),
        runtime_note = match d.base {
            Some(_) => "the language and its version; the image is `base`".to_owned(),
            None => format!("base image {}", rt.image),
        },
        handler = d.handler,
        hpad = pad(&d.handler, 19),
        code = q(&d.code),
        cpad = pad(&d.code, 22),
        exclude = exclude.join(", "),
        base = d
            .base
            .as_ref()
            .map(|b| format!(
                "base = {}{}# not an AWS Lambda image: see runtime_client\n",
                q(b),
                pad(&q(b), 23)
            ))
            .unwrap_or_default(),
        client = d
            .runtime_client
            .as_ref()
            .map(|c| format!("{c}\n"))
            .unwrap_or_default(),
    ))
}

fn pad(s: &str, width: usize) -> String {
    " ".repeat(width.saturating_sub(s.len()).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_directory_is_an_error_naming_runtimes_and_the_flag() {
        let d = tempfile::tempdir().unwrap();
        let e = detect(None, d.path()).unwrap_err().to_string();
        assert!(e.contains("--runtime") && e.contains("python3.13"), "{e}");
    }

    #[test]
    fn cargo_bin_from_bin_or_package() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("Cargo.toml"), "[package]\nname = \"hello\"\n").unwrap();
        assert_eq!(cargo_bin(d.path()), "hello");
        std::fs::write(
            d.path().join("Cargo.toml"),
            "[package]\nname = \"hello\"\n[[bin]]\nname = \"api\"\npath = \"src/main.rs\"\n",
        )
        .unwrap();
        let got = detect(None, d.path()).unwrap();
        assert_eq!(
            got.bootstrap.as_deref(),
            Some("target/lambda/api/bootstrap")
        );
        assert!(got.exclude.contains(&"target".to_owned()));
    }
}
