//! `lamina init` end to end for every runtime family lamina knows: a project laid out as a user
//! would have it, `lamina init`, `lamina build` and `lamina check`, which must pass with no
//! finding at all. The handler `init` wrote must be the image's CMD and the code must be under
//! /var/task.
//!
//! There is no network here, so AWS's base images (public.ecr.aws/lambda/...) cannot be pulled:
//! every build gets `--base oci:STANDIN`, a stand-in built once by lamina from a staged
//! directory with what matters to `check` in AWS's bases — Debian's static busybox (`sh`) and an
//! ENTRYPOINT `/lambda-entrypoint.sh` that is a `#!/bin/sh` script. These tests need
//! `/bin/busybox` from `busybox-static` and fail loudly without it.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::*;
use serde_json::{Value, json};
use tempfile::TempDir;

/// The stand-in's one file-system layer: a statically linked sh and AWS's entry point.
const BUSYBOX: &str = "/bin/busybox";
const APPLETS: [&str; 4] = ["sh", "cat", "ls", "env"];
const ENTRYPOINT: &str = "/lambda-entrypoint.sh";

/// This machine's platform: busybox runs only there, so the stand-in (and every build from it)
/// is labelled with it. On amd64, as here, it is the starter spec's own `linux/amd64`.
fn host_platform() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "linux/amd64",
        "aarch64" => "linux/arm64",
        other => panic!("the stand-in base needs an amd64 or arm64 machine, not {other}"),
    }
}

/// `oci:DIR:base`, the stand-in for AWS's base images, built once per test binary. Its
/// directory lives under cargo's target/tmp, named for this process.
fn stand_in() -> &'static str {
    static REF: OnceLock<String> = OnceLock::new();
    REF.get_or_init(|| {
        let busybox = fs::read(BUSYBOX).unwrap_or_else(|e| {
            panic!(
                "{BUSYBOX} is missing ({e}): the init tests put a static busybox in a stand-in base \
                 image. Install Debian's busybox-static (`apt-get install busybox-static`)"
            )
        });
        let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join("init-tests");
        fs::create_dir_all(&base).unwrap();
        for e in fs::read_dir(&base).unwrap().flatten() {
            let pid = e.file_name().to_string_lossy().into_owned();
            if !Path::new("/proc").join(&pid).exists() {
                let _ = fs::remove_dir_all(e.path());
            }
        }
        let dir = base.join(std::process::id().to_string());
        let _ = fs::remove_dir_all(&dir);
        let stage = dir.join("stage");
        for d in ["bin", "var/runtime", "var/task", "opt", "tmp"] {
            fs::create_dir_all(stage.join(d)).unwrap();
        }
        write_file(&stage.join("bin/busybox"), &busybox, 0o755);
        for a in APPLETS {
            std::os::unix::fs::symlink("busybox", stage.join("bin").join(a)).unwrap();
        }
        write_file(
            &stage.join("lambda-entrypoint.sh"),
            b"#!/bin/sh\n# Stands in for AWS's entry point: the handler is its argument.\nexec /var/runtime/bootstrap \"$@\"\n",
            0o755,
        );
        write_file(
            &stage.join("var/runtime/bootstrap"),
            b"#!/bin/sh\n# Stands in for the managed runtime's bootstrap.\nexit 0\n",
            0o755,
        );
        let to = oci_ref(&dir.join("standin"), "base");
        let layer = format!("{}:/", stage.display());
        lamina_ok(
            &[
                "build",
                "--base",
                "scratch",
                "--platform",
                host_platform(),
                "--layer",
                &layer,
                "--entrypoint",
                &json!([ENTRYPOINT]).to_string(),
                "--workdir",
                "/var/task",
                "--env",
                "PATH=/var/lang/bin:/usr/local/bin:/usr/bin/:/bin:/opt/bin",
                "--env",
                "LAMBDA_TASK_ROOT=/var/task",
                "--env",
                "LAMBDA_RUNTIME_DIR=/var/runtime",
                "--to",
                &to,
            ],
            &dir,
            &[],
        );
        to
    })
}

/// A project: files relative to its directory, with content and mode.
type Files<'a> = &'a [(&'a str, &'a [u8], u32)];

fn project(files: Files) -> TempDir {
    let t = TempDir::new().unwrap();
    for (path, data, mode) in files {
        write_file(&t.path().join(path), data, *mode);
    }
    t
}

/// `[function] runtime` and `handler` of the lamina.toml `init` wrote in `dir`.
fn written_function(dir: &Path) -> (String, String) {
    let path = dir.join("lamina.toml");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let doc: toml::Table = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let f = doc["function"].as_table().expect("[function]");
    let s = |k: &str| {
        f[k].as_str()
            .unwrap_or_else(|| panic!("{k}: {text}"))
            .to_owned()
    };
    assert_eq!(f["code"].as_str(), Some("."), "{text}");
    (s("runtime"), s("handler"))
}

/// The built image, read back.
struct Built {
    _out: TempDir,
    config: Value,
    /// Entries of the layers this build added on top of the stand-in, bottom first.
    added: Vec<Vec<TarEntry>>,
}

impl Built {
    /// The last added entry at `path` (a later layer wins).
    fn file(&self, path: &str) -> Option<&TarEntry> {
        self.added.iter().rev().find_map(|l| find_entry(l, path))
    }
}

/// `lamina init INIT_ARGS` in the project, the runtime and handler it wrote asserted; then
/// `lamina build --base STANDIN` and `lamina check`, which must report nothing.
fn init_build_check(dir: &Path, init_args: &[&str], runtime: &str, handler: &str) -> Built {
    let mut args = vec!["init"];
    args.extend_from_slice(init_args);
    lamina_ok(&args, dir, &[]);
    assert_eq!(
        written_function(dir),
        (runtime.to_owned(), handler.to_owned()),
        "runtime and handler in lamina.toml"
    );

    let out = TempDir::new().unwrap();
    let image = oci_ref(out.path(), "latest");
    let built = lamina_ok(
        &[
            "build",
            "--base",
            stand_in(),
            "--platform",
            host_platform(),
            "--to",
            &image,
        ],
        dir,
        &[],
    );
    parse_digest(&built);

    let check = lamina(&["check", "--json", &image], dir, &[]);
    assert_no_panic(&check);
    assert_eq!(check.status.code(), Some(0), "{}", describe(&check));
    let report = parse_json(&check);
    assert_eq!(report["findings"], json!([]), "{report}");
    assert!(
        stderr_of(&check).contains("passes the Lambda checks (0 warnings)"),
        "{}",
        describe(&check)
    );

    verify_layout_blobs(out.path());
    let (manifest, _, config) = read_layout(out.path(), "latest");
    let standin_dir = stand_in()
        .strip_prefix("oci:")
        .and_then(|r| r.strip_suffix(":base"))
        .map(PathBuf::from)
        .unwrap();
    let (base_manifest, _, _) = read_layout(&standin_dir, "base");
    let base_layers = layer_digests(&base_manifest);
    let layers = layer_digests(&manifest);
    assert_eq!(
        layers[..base_layers.len()],
        base_layers[..],
        "the stand-in's layers come first, unchanged"
    );
    let added = (base_layers.len()..layers.len())
        .map(|i| tar_entries(&layer_tar(out.path(), &manifest, i)))
        .collect::<Vec<_>>();
    assert!(!added.is_empty(), "the build added no layer");
    let c = &config["config"];
    assert_eq!(c["Cmd"], json!([handler]), "the handler is CMD: {config}");
    assert_eq!(c["Entrypoint"], json!([ENTRYPOINT]), "{config}");
    assert_eq!(c["WorkingDir"], json!("/var/task"), "{config}");
    Built {
        _out: out,
        config,
        added,
    }
}

/// Every `(path, content)` is a regular file at `/var/task/PATH` in the added layers, readable
/// by anyone; the spec and the layers that are not code stay out.
fn assert_code(b: &Built, files: Files) {
    for (path, data, mode) in files {
        let at = format!("var/task/{path}");
        let e = b.file(&at).unwrap_or_else(|| {
            panic!(
                "{at} is not in the added layers: {:?}",
                b.added
                    .iter()
                    .flatten()
                    .map(TarEntry::path_str)
                    .collect::<Vec<_>>()
            )
        });
        assert!(e.is_file(), "{at} is not a regular file");
        assert_eq!(&e.data, data, "{at}");
        assert_eq!(e.mode & 0o444, 0o444, "{at} mode {:o}", e.mode);
        assert_eq!(e.mode & 0o111, mode & 0o111, "{at} mode {:o}", e.mode);
    }
    assert!(
        b.file("var/task/lamina.toml").is_none(),
        "lamina.toml is excluded from the code"
    );
}

#[test]
fn python_control() {
    let files: Files = &[
        ("requirements.txt", b"requests==2.32.3\n", 0o644),
        (
            "app.py",
            b"def handler(event, context):\n    return {'ok': True}\n",
            0o644,
        ),
    ];
    let p = project(files);
    let b = init_build_check(p.path(), &[], "python3.13", "app.handler");
    assert_code(&b, files);
}

#[test]
fn nodejs_commonjs_with_node_modules() {
    let files: Files = &[
        (
            "package.json",
            br#"{"name": "fn", "version": "1.0.0", "main": "index.js"}"#,
            0o644,
        ),
        (
            "index.js",
            b"const pad = require('left-pad');\nexports.handler = async (event) => ({ ok: pad('x', 3) });\n",
            0o644,
        ),
        (
            "node_modules/left-pad/package.json",
            br#"{"name": "left-pad", "version": "1.3.0", "main": "index.js"}"#,
            0o644,
        ),
        (
            "node_modules/left-pad/index.js",
            b"module.exports = (s, n) => s.padStart(n);\n",
            0o644,
        ),
    ];
    let p = project(files);
    let b = init_build_check(p.path(), &[], "nodejs22.x", "index.handler");
    assert_code(&b, files);
    // node_modules has a layer of its own, below the code's, which leaves it out.
    let files_in = |l: &[TarEntry]| -> Vec<String> {
        l.iter()
            .filter(|e| e.is_file())
            .map(TarEntry::path_str)
            .collect()
    };
    let deps = b
        .added
        .iter()
        .position(|l| {
            let f = files_in(l);
            !f.is_empty() && f.iter().all(|p| p.starts_with("var/task/node_modules/"))
        })
        .unwrap_or_else(|| panic!("no node_modules layer: {:?}", b.config["rootfs"]));
    let code = b
        .added
        .iter()
        .position(|l| find_entry(l, "var/task/index.js").is_some())
        .unwrap();
    assert!(deps < code, "node_modules lies below the code");
    assert!(
        files_in(&b.added[code])
            .iter()
            .all(|p| !p.contains("node_modules")),
        "the code layer leaves node_modules out"
    );
}

#[test]
fn nodejs_es_module() {
    let files: Files = &[
        (
            "package.json",
            br#"{"name": "fn", "version": "1.0.0", "type": "module"}"#,
            0o644,
        ),
        (
            "index.mjs",
            b"export const handler = async (event) => ({ ok: true });\n",
            0o644,
        ),
    ];
    let p = project(files);
    let b = init_build_check(p.path(), &[], "nodejs22.x", "index.handler");
    assert_code(&b, files);
}

/// A jar as a zip archive: a manifest and the handler's (stand-in) class.
fn jar() -> Vec<u8> {
    let t = TempDir::new().unwrap();
    let path = t.path().join("function.jar");
    write_zip(
        &path,
        &[
            ZipItem::File(
                "META-INF/MANIFEST.MF",
                0o644,
                b"Manifest-Version: 1.0\r\nCreated-By: test\r\n\r\n",
            ),
            ZipItem::File(
                "example/Handler.class",
                0o644,
                b"\xca\xfe\xba\xbe\x00\x00\x00\x41",
            ),
        ],
    );
    fs::read(&path).unwrap()
}

/// `init` guesses only Python and Node.js from the files; a Java project needs `--runtime`.
/// The built jar goes where Lambda's Java runtime puts jars on the class path: /var/task/lib.
#[test]
fn java_built_jar() {
    let jar = jar();
    let files: Files = &[("lib/function.jar", &jar, 0o644)];
    let p = project(files);
    let b = init_build_check(
        p.path(),
        &["--runtime", "java21"],
        "java21",
        "example.Handler::handleRequest",
    );
    assert_code(&b, files);
}

#[test]
fn ruby_gemfile_project() {
    let files: Files = &[
        ("Gemfile", b"source 'https://rubygems.org'\n", 0o644),
        (
            "Gemfile.lock",
            b"GEM\n  remote: https://rubygems.org/\n  specs:\n\nPLATFORMS\n  ruby\n",
            0o644,
        ),
        (
            "app.rb",
            b"def handler(event:, context:)\n  { ok: true }\nend\n",
            0o644,
        ),
    ];
    let p = project(files);
    let b = init_build_check(
        p.path(),
        &["--runtime", "ruby3.4"],
        "ruby3.4",
        "app.handler",
    );
    assert_code(&b, files);
}

/// `dotnet publish` output: the assembly the default handler names (`Function`), its deps and
/// runtime config.
#[test]
fn dotnet_publish_dir() {
    let files: Files = &[
        (
            "Function.dll",
            b"MZ\x90\x00\x03\x00\x00\x00stand-in assembly",
            0o644,
        ),
        (
            "Function.deps.json",
            br#"{"runtimeTarget": {"name": ".NETCoreApp,Version=v8.0"}}"#,
            0o644,
        ),
        (
            "Function.runtimeconfig.json",
            br#"{"runtimeOptions": {"tfm": "net8.0"}}"#,
            0o644,
        ),
        (
            "Amazon.Lambda.Core.dll",
            b"MZ\x90\x00\x03\x00\x00\x00stand-in library",
            0o644,
        ),
    ];
    let p = project(files);
    let b = init_build_check(
        p.path(),
        &["--runtime", "dotnet8"],
        "dotnet8",
        "Function::Function.Function::FunctionHandler",
    );
    assert_code(&b, files);
}

/// An OS-only runtime: nothing `init` recognises, so `provided.al2023` with a `bootstrap`, which
/// lands executable at /var/runtime/bootstrap (where `check` runs its L007), and only there.
#[test]
fn provided_bootstrap() {
    let files: Files = &[
        (
            "bootstrap",
            b"#!/bin/sh\n# a custom runtime\nexec cat\n",
            0o755,
        ),
        ("function.sh", b"handler() { echo ok; }\n", 0o644),
    ];
    let p = project(files);
    let b = init_build_check(p.path(), &[], "provided.al2023", "function.handler");
    // Issue 13: the bootstrap is placed once, at /var/runtime/bootstrap, not also as code.
    assert_code(&b, &files[1..]);
    let e = b
        .file("var/runtime/bootstrap")
        .expect("the bootstrap at /var/runtime/bootstrap");
    assert_eq!(e.data, files[0].1);
    assert_eq!(e.mode, 0o755);
    assert!(
        b.file("var/task/bootstrap").is_none(),
        "the bootstrap is shipped twice: {:?}",
        added_files(&b)
    );
}

/// The same project as a .zip: `bootstrap` once, at the zip's root, executable (where Lambda's
/// OS-only runtimes look for it), beside the code.
#[test]
fn provided_bootstrap_zip_holds_it_once() {
    let script: &[u8] = b"#!/bin/sh\n# a custom runtime\nexec cat\n";
    let p = project(&[
        ("bootstrap", script, 0o755),
        ("function.sh", b"handler() { echo ok; }\n", 0o644),
    ]);
    lamina_ok(&["init"], p.path(), &[]);
    lamina_ok(&["zip"], p.path(), &[]);
    let file = fs::File::open(p.path().join("function.zip")).unwrap();
    let mut z = zip::ZipArchive::new(file).unwrap();
    // By index, as the central directory lists them: a second `bootstrap` would show.
    let mut names: Vec<String> = (0..z.len())
        .map(|i| z.by_index(i).unwrap().name().unwrap().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["bootstrap", "function.sh"]);
    let mut e = z.by_name("bootstrap").unwrap();
    assert_eq!(e.unix_mode().map(|m| m & 0o7777), Some(0o755));
    let mut data = Vec::new();
    std::io::Read::read_to_end(&mut e, &mut data).unwrap();
    assert_eq!(data, script);
}

// ---- Real layouts (issue 13): what `init` detects, and what lands where after `lamina build`.

/// `lamina init` in `dir`, then `lamina build --base STANDIN` into a fresh layout: init's
/// stderr and the layers this build added. (No `check` here: some layouts are not done yet.)
fn init_then_build(dir: &Path, init_args: &[&str]) -> (String, Built) {
    let mut args = vec!["init"];
    args.extend_from_slice(init_args);
    let said = stderr_of(&lamina_ok(&args, dir, &[]));
    (said, build_standin(dir))
}

/// `lamina build --base STANDIN` of the lamina.toml in `dir`, read back.
fn build_standin(dir: &Path) -> Built {
    let out = TempDir::new().unwrap();
    let image = oci_ref(out.path(), "latest");
    let args = ["build", "--base", stand_in(), "--platform", host_platform()];
    let mut args: Vec<&str> = args.to_vec();
    args.extend(["--to", &image]);
    parse_digest(&lamina_ok(&args, dir, &[]));
    verify_layout_blobs(out.path());
    let (manifest, _, config) = read_layout(out.path(), "latest");
    let standin_dir = stand_in()
        .strip_prefix("oci:")
        .and_then(|r| r.strip_suffix(":base"))
        .map(PathBuf::from)
        .unwrap();
    let base_layers = layer_digests(&read_layout(&standin_dir, "base").0).len();
    let added = (base_layers..layer_digests(&manifest).len())
        .map(|i| tar_entries(&layer_tar(out.path(), &manifest, i)))
        .collect::<Vec<_>>();
    Built {
        _out: out,
        config,
        added,
    }
}

/// Every file path in the added layers.
fn added_files(b: &Built) -> Vec<String> {
    b.added
        .iter()
        .flatten()
        .filter(|e| e.is_file())
        .map(TarEntry::path_str)
        .collect()
}

/// The printed digest of `lamina build --base STANDIN --to oci:DIR` in `dir`.
fn digest_of_build(dir: &Path, out: &Path) -> String {
    let image = oci_ref(out, "latest");
    let args = [
        "build",
        "--base",
        stand_in(),
        "--platform",
        host_platform(),
        "--to",
        &image,
    ];
    parse_digest(&lamina_ok(&args, dir, &[]))
}

/// `app.py` at the root and `requests` from `pip install --target src -r requirements.txt`
/// (an installed package by hand: the module and its `*.dist-info` with a RECORD), as AWS's
/// guide lays it out. `init` makes `src` the dependencies, so `requests` lands at
/// /var/task/requests beside app.py (not /var/task/src/requests, where `import` would miss
/// it); repeated zips and builds give the same bytes, and the zip is never read back.
#[test]
fn python_dependencies_installed_into_src() {
    let files: Files = &[
        ("requirements.txt", b"requests==2.32.3\n", 0o644),
        (
            "app.py",
            b"import requests\n\ndef lambda_handler(event, context):\n    return {'ok': True}\n",
            0o644,
        ),
        (
            "src/requests/__init__.py",
            b"__version__ = '2.32.3'\n",
            0o644,
        ),
        (
            "src/requests-2.32.3.dist-info/RECORD",
            b"requests/__init__.py,,\nrequests-2.32.3.dist-info/RECORD,,\n",
            0o644,
        ),
        (
            "src/requests-2.32.3.dist-info/METADATA",
            b"Name: requests\nVersion: 2.32.3\n",
            0o644,
        ),
    ];
    let p = project(files);
    let (said, b) = init_then_build(p.path(), &[]);
    assert!(
        said.contains("app.lambda_handler") && said.contains("dist-info"),
        "init says what it found and why:\n{said}"
    );
    assert!(
        said.contains("lamina build"),
        "and what to run next:\n{said}"
    );
    assert_eq!(b.config["config"]["Cmd"], json!(["app.lambda_handler"]));
    let files_in = added_files(&b);
    for want in [
        "var/task/app.py",
        "var/task/requests/__init__.py",
        "var/task/requests-2.32.3.dist-info/RECORD",
    ] {
        assert!(files_in.contains(&want.to_owned()), "{want}: {files_in:?}");
    }
    assert!(
        files_in.iter().all(|f| !f.starts_with("var/task/src/")),
        "the dependencies are not shipped under src/: {files_in:?}"
    );
    assert!(!files_in.contains(&"var/task/lamina.toml".to_owned()));

    // Repeated zips: the same bytes, and the first zip is not in the second.
    lamina_ok(&["zip"], p.path(), &[]);
    let first = fs::read(p.path().join("function.zip")).unwrap();
    lamina_ok(&["zip"], p.path(), &[]);
    assert_eq!(fs::read(p.path().join("function.zip")).unwrap(), first);
    // Repeated builds (the zip and the earlier layout lying in the project): one digest.
    let one = digest_of_build(p.path(), &p.path().join("out"));
    let two = digest_of_build(p.path(), &p.path().join("out"));
    assert_eq!(one, two);
    let b2 = build_standin(p.path());
    assert!(
        added_files(&b2)
            .iter()
            .all(|f| !f.contains("function.zip") && !f.starts_with("var/task/out/")),
        "lamina's own outputs stay out: {:?}",
        added_files(&b2)
    );
}

/// The handler in `src/` (`code = "src"`) and packages pip installed into a `package/`
/// directory beside it: both land at /var/task's root.
#[test]
fn python_handler_in_src_with_a_package_dir() {
    let files: Files = &[
        (
            "src/app.py",
            b"def handler(event, context):\n    return 1\n",
            0o644,
        ),
        ("package/six.py", b"# six\n", 0o644),
        ("package/six-1.16.0.dist-info/RECORD", b"six.py,,\n", 0o644),
    ];
    let p = project(files);
    let (said, b) = init_then_build(p.path(), &[]);
    let text = fs::read_to_string(p.path().join("lamina.toml")).unwrap();
    assert!(
        text.contains("code = \"src\"") && text.contains("dependencies = \"package\""),
        "{text}\n{said}"
    );
    assert_eq!(b.config["config"]["Cmd"], json!(["app.handler"]));
    let files_in = added_files(&b);
    for want in ["var/task/app.py", "var/task/six.py"] {
        assert!(files_in.contains(&want.to_owned()), "{want}: {files_in:?}");
    }
}

/// requirements.txt and nothing installed: init prints the pip command for Lambda's platform.
#[test]
fn python_requirements_without_packages_prints_the_pip_command() {
    let p = project(&[
        ("requirements.txt", b"requests\n", 0o644),
        ("app.py", b"def handler(e, c):\n    return 1\n", 0o644),
    ]);
    let said = stderr_of(&lamina_ok(&["init"], p.path(), &[]));
    for want in [
        "pip install -r requirements.txt --target package",
        "--platform manylinux2014_x86_64",
        "--only-binary=:all:",
        "--python-version 3.13",
    ] {
        assert!(said.contains(want), "{want}:\n{said}");
    }
}

/// Node.js: `main` in a subdirectory and `"type": "module"`; node_modules made by hand.
#[test]
fn nodejs_main_in_a_subdirectory() {
    let files: Files = &[
        (
            "package.json",
            br#"{"name": "fn", "type": "module", "main": "lib/handler.mjs"}"#,
            0o644,
        ),
        (
            "lib/handler.mjs",
            b"export const handler = async () => 1;\n",
            0o644,
        ),
        (
            "node_modules/tiny/index.js",
            b"module.exports = 1;\n",
            0o644,
        ),
    ];
    let p = project(files);
    let (said, b) = init_then_build(p.path(), &[]);
    assert!(said.contains("ES module"), "{said}");
    assert_eq!(b.config["config"]["Cmd"], json!(["lib/handler.handler"]));
    let files_in = added_files(&b);
    for want in [
        "var/task/lib/handler.mjs",
        "var/task/node_modules/tiny/index.js",
    ] {
        assert!(files_in.contains(&want.to_owned()), "{want}: {files_in:?}");
    }
}

/// cargo-lambda: `Cargo.toml` → provided.al2023 with `target/lambda/<bin>/bootstrap`, placed
/// once, at /var/runtime/bootstrap; Cargo.*, src/ and target/ are not code.
#[test]
fn cargo_lambda_bootstrap_placed_once() {
    let script: &[u8] = b"#!/bin/sh\n# stands in for the Rust binary\nexec cat\n";
    let files: Files = &[
        (
            "Cargo.toml",
            b"[package]\nname = \"hello-fn\"\nversion = \"0.1.0\"\n",
            0o644,
        ),
        ("Cargo.lock", b"version = 4\n", 0o644),
        ("src/main.rs", b"fn main() {}\n", 0o644),
        ("target/lambda/hello-fn/bootstrap", script, 0o755),
        ("target/release/hello-fn", b"\x7fELF", 0o755),
        ("config.json", b"{}\n", 0o644),
    ];
    let p = project(files);
    let (said, b) = init_then_build(p.path(), &[]);
    assert!(
        said.contains("cargo-lambda") && said.contains("hello-fn"),
        "{said}"
    );
    let e = b
        .file("var/runtime/bootstrap")
        .expect("the bootstrap at /var/runtime/bootstrap");
    assert_eq!(e.data, script);
    assert_eq!(e.mode, 0o755);
    let files_in = added_files(&b);
    assert!(
        files_in.contains(&"var/task/config.json".to_owned()),
        "{files_in:?}"
    );
    for f in &files_in {
        assert!(
            !f.starts_with("var/task/target")
                && !f.starts_with("var/task/src")
                && !f.starts_with("var/task/Cargo")
                && f != "var/task/bootstrap",
            "{f} should not be shipped: {files_in:?}"
        );
    }
}

/// Go: `go.mod` → provided.al2023 with `bootstrap`, the command to build it printed.
#[test]
fn go_module_gets_the_build_command() {
    let p = project(&[("go.mod", b"module example.com/fn\n", 0o644)]);
    let said = stderr_of(&lamina_ok(&["init"], p.path(), &[]));
    assert!(
        said.contains("go build -tags lambda.norpc -o bootstrap") && said.contains("GOOS=linux"),
        "{said}"
    );
    let text = fs::read_to_string(p.path().join("lamina.toml")).unwrap();
    assert!(
        text.contains("runtime = \"provided.al2023\"")
            && text.contains("bootstrap = \"bootstrap\""),
        "{text}"
    );
}

/// An empty directory: an error naming the runtimes and `--runtime`; nothing written.
#[test]
fn empty_directory_is_an_error() {
    let p = TempDir::new().unwrap();
    let out = lamina(&["init"], p.path(), &[]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let err = stderr_of(&out);
    assert!(
        err.contains("--runtime") && err.contains("nodejs22.x"),
        "{err}"
    );
    assert!(!p.path().join("lamina.toml").exists());
}
