//! `[function] runtime_client`: AWS's open-source runtime interface client (RIC) added to a base
//! that is not one of AWS's Lambda images (Debian, Alpine, distroless, a company base), so that
//! the base's own interpreter can serve Lambda's Runtime API.
//!
//! The client's files come from a directory (or jar) the user fetched with the language's own
//! tool; lamina puts them on a layer of their own at [`CLIENT_DIR`] (AWS's `LAMBDA_RUNTIME_DIR`),
//! and the build sets ENTRYPOINT, the module path, `LAMBDA_TASK_ROOT` and WORKDIR the way the
//! clients' READMEs and AWS's base images do (the Lambda gate's client module checks them). Go, Rust and the
//! `provided` runtimes link their client into the bootstrap: they need none, and saying one is
//! refused with that explanation.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::layer::LayerSpec;

/// Where the client goes in the image: AWS's base images keep their runtime (client included)
/// in `/var/runtime` and export it as `LAMBDA_RUNTIME_DIR`.
pub const CLIENT_DIR: &str = "/var/runtime";

/// Where Lambda puts the function's code: `LAMBDA_TASK_ROOT`, the working directory.
pub const TASK_ROOT: &str = "/var/task";

/// The Java client's main class (its README's ENTRYPOINT).
pub const JAVA_MAIN: &str = "com.amazonaws.services.lambda.runtime.api.client.AWSLambda";

/// The language of a runtime interface client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    /// `awslambdaric` from PyPI, started as `python3 -m awslambdaric HANDLER`.
    Python,
    /// `aws-lambda-ric` from npm, started as `node …/aws-lambda-ric/bin/index.mjs HANDLER`.
    Node,
    /// `aws-lambda-java-runtime-interface-client` from Maven Central, started as `java -cp …
    /// com.amazonaws.services.lambda.runtime.api.client.AWSLambda HANDLER`.
    Java,
}

impl Language {
    /// The name the spec spells it with.
    pub fn name(self) -> &'static str {
        match self {
            Language::Python => "python",
            Language::Node => "node",
            Language::Java => "java",
        }
    }

    /// The client's package name in its language's registry.
    pub fn package(self) -> &'static str {
        match self {
            Language::Python => "awslambdaric",
            Language::Node => "aws-lambda-ric",
            Language::Java => "aws-lambda-java-runtime-interface-client",
        }
    }

    /// The interpreter names looked for on the base's PATH, in order.
    pub fn interpreters(self) -> &'static [&'static str] {
        match self {
            Language::Python => &["python3", "python"],
            Language::Node => &["node", "nodejs"],
            Language::Java => &["java"],
        }
    }

    /// The Lambda runtime family the client serves (for the gate's handler rules).
    pub fn family(self) -> super::runtime::Family {
        match self {
            Language::Python => super::runtime::Family::Python,
            Language::Node => super::runtime::Family::Node,
            Language::Java => super::runtime::Family::Java,
        }
    }

    /// The one-line command that fetches the client into `path` for `arch` (`x86_64`,
    /// `aarch64`) and, for Python, the base's `python` version (`3.11`).
    pub fn fetch_command(self, path: &str, arch: &str, python: Option<&str>) -> String {
        match self {
            Language::Python => format!(
                "pip install --target {path} --platform manylinux2014_{arch} --only-binary=:all: --python-version {} awslambdaric",
                python.unwrap_or("3.12")
            ),
            Language::Node => format!("npm install --prefix {path} aws-lambda-ric"),
            Language::Java => format!(
                "mvn dependency:copy -Dartifact=com.amazonaws:aws-lambda-java-runtime-interface-client:2.6.0 -DoutputDirectory={path}"
            ),
        }
    }
}

/// `language` in a spec: python, node or java; a Go, Rust or `provided` function is told it
/// needs no client, at the spec line.
fn language<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Language, D::Error> {
    let name = String::deserialize(d)?;
    match name.as_str() {
        "python" => Ok(Language::Python),
        "node" | "nodejs" => Ok(Language::Node),
        "java" => Ok(Language::Java),
        "go" | "rust" | "provided" | "custom" => Err(serde::de::Error::custom(format!(
            "`{name}` needs no runtime_client: Go, Rust and other `provided` runtimes link AWS's runtime interface client into their own executable; remove runtime_client and set `bootstrap` (or [config] entrypoint) to it"
        ))),
        _ => Err(serde::de::Error::custom(format!(
            "unknown runtime_client language `{name}`: use \"python\", \"node\" or \"java\""
        ))),
    }
}

/// `[function] runtime_client = { language = "python", path = "ric" }` as written.
#[derive(Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuntimeClientSpec {
    /// `python` (awslambdaric), `node` (aws-lambda-ric) or `java`
    /// (aws-lambda-java-runtime-interface-client).
    #[serde(deserialize_with = "language")]
    #[schemars(with = "Language")]
    pub language: Language,
    /// The client's files, fetched with the language's own tool: for Python a `pip install
    /// --target DIR awslambdaric` directory, a wheel (`.whl`), or a directory of wheels (`pip
    /// download -d DIR awslambdaric`: the client's and its dependencies'), for Node the
    /// directory `npm install aws-lambda-ric` ran in (it holds `node_modules`), for Java the
    /// client's jar or a directory of jars. Relative to the spec's directory.
    pub path: PathBuf,
}

/// A runtime client of a resolved build: its language and its files (an absolute path).
#[derive(Clone, Debug, PartialEq)]
pub struct RuntimeClient {
    /// The client's language.
    pub language: Language,
    /// The client's files on this machine, absolute.
    pub source: PathBuf,
    /// `path` as the spec wrote it, for messages and the command that fetches the client.
    pub shown: String,
}

impl RuntimeClient {
    /// From the spec, paths anchored at the spec's directory `dir`.
    pub fn from_spec(s: &RuntimeClientSpec, dir: &Path) -> RuntimeClient {
        RuntimeClient {
            language: s.language,
            source: dir.join(&s.path),
            shown: s.path.display().to_string(),
        }
    }

    /// The client's layer: Python's and Node's directories go to [`CLIENT_DIR`] as they are
    /// (`/var/runtime/awslambdaric`, `/var/runtime/node_modules/aws-lambda-ric`), Java's jars
    /// to `/var/runtime/lib`.
    pub fn layer(&self) -> LayerSpec {
        let dest = match self.language {
            Language::Java if self.source.is_file() => {
                let name = self
                    .source
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "client.jar".into());
                format!("{CLIENT_DIR}/lib/{name}")
            }
            Language::Java => format!("{CLIENT_DIR}/lib"),
            _ => CLIENT_DIR.to_owned(),
        };
        let mut l = super::flags::plain_layer(self.source.clone(), &dest);
        // What pip and npm leave behind that the function never loads.
        l.exclude = vec!["**/__pycache__".into(), "bin".into()];
        if self.language != Language::Python {
            l.exclude.clear();
        }
        l.wheels = self.is_wheels();
        l
    }

    /// Python's client given as wheels, unpacked into its layer: a `.whl` file, or a directory
    /// of them (what `pip download` or `pip wheel` writes) that is not a `pip install --target`
    /// directory (it has no `awslambdaric/`).
    pub fn is_wheels(&self) -> bool {
        if self.language != Language::Python {
            return false;
        }
        let whl = |p: &Path| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("whl"));
        if self.source.is_file() {
            return whl(&self.source);
        }
        self.source.is_dir()
            && !self.source.join("awslambdaric").exists()
            && std::fs::read_dir(&self.source).is_ok_and(|rd| {
                rd.flatten()
                    .any(|e| whl(&e.path()) && e.file_type().is_ok_and(|t| t.is_file()))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, Debug)]
    struct F {
        runtime_client: RuntimeClientSpec,
    }

    #[test]
    fn languages_parse_and_go_is_told_it_needs_none() {
        let f: F =
            toml::from_str("runtime_client = { language = \"python\", path = \"ric\" }").unwrap();
        assert_eq!(f.runtime_client.language, Language::Python);
        let e = toml::from_str::<F>("runtime_client = { language = \"go\", path = \"x\" }")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("needs no runtime_client") && e.contains("bootstrap"),
            "{e}"
        );
        let e = toml::from_str::<F>("runtime_client = { language = \"cobol\", path = \"x\" }")
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"python\", \"node\" or \"java\""), "{e}");
        let e = toml::from_str::<F>("runtime_client = { language = \"node\" }")
            .unwrap_err()
            .to_string();
        assert!(e.contains("path"), "{e}");
    }

    #[test]
    fn the_client_needs_a_base_and_the_runtimes_language() {
        let resolve = |text: &str| {
            let sf: crate::spec::SpecFile = toml::from_str(text).unwrap();
            crate::spec::BuildSpec::resolve(
                Some((Path::new("lamina.toml"), sf)),
                &Default::default(),
                Path::new("/p"),
            )
        };
        let client = "runtime_client = { language = \"python\", path = \"ric\" }\n";
        let e = resolve(&format!("[function]\n{client}"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("lamina.toml") && e.contains("set `base`"), "{e}");
        let e = resolve(&format!(
            "base = \"oci:b\"\n[function]\nruntime = \"nodejs22.x\"\n{client}"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("another language"), "{e}");
        let b = resolve(&format!(
            "base = \"oci:b\"\n[function]\nruntime = \"python3.12\"\ncode = \"src\"\n{client}"
        ))
        .unwrap();
        let c = b.runtime_client.unwrap();
        assert_eq!(c.source, Path::new("/p/ric"));
        assert_eq!(b.layers[0].dest, "/var/runtime");
        assert_eq!(b.layer_roles[0], "runtime client");
        assert_eq!(b.layers[1].dest, "/var/task");
    }

    #[test]
    fn layers_go_to_the_runtime_dir() {
        let d = tempfile::tempdir().unwrap();
        let jar = d.path().join("ric.jar");
        std::fs::write(&jar, b"PK").unwrap();
        let c = |language, source: &Path| RuntimeClient {
            language,
            source: source.to_owned(),
            shown: "ric".into(),
        };
        assert_eq!(c(Language::Python, d.path()).layer().dest, "/var/runtime");
        assert_eq!(c(Language::Node, d.path()).layer().dest, "/var/runtime");
        assert_eq!(
            c(Language::Java, &jar).layer().dest,
            "/var/runtime/lib/ric.jar"
        );
        assert_eq!(c(Language::Java, d.path()).layer().dest, "/var/runtime/lib");
        assert!(
            Language::Python
                .fetch_command("ric", "aarch64", Some("3.12"))
                .contains(
                    "--platform manylinux2014_aarch64 --only-binary=:all: --python-version 3.12"
                )
        );
    }
}
