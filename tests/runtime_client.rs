//! `[function] runtime_client`: AWS's runtime interface client added to a base that is not an
//! AWS Lambda image. The base is made here, from files the test controls: Debian's own
//! `/usr/bin/python3` (the python3 package of this machine), the part of its standard library
//! the client imports, and the shared libraries `ldd` lists, put on one layer by lamina itself.
//! The client is AWS's real `awslambdaric` wheel, fetched with pip by `.ci/run` into a cache
//! (`LAMINA_TEST_WHEELS`, else `~/.cache/lamina-tests/wheels`) and unpacked here (a wheel is a
//! zip). `lamina invoke` runs the result in lamina's namespace sandbox: the handler's answer, a
//! raised exception's `errorType` and a timeout come back as Lambda reports them.
//!
//! Without `/usr/bin/python3`, the wheels, `ldd` or unprivileged user namespaces these tests
//! fail, loudly, rather than skip.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const PYTHON: &str = "/usr/bin/python3";

/// Standard-library directories the client never imports: left out to keep the base small.
const STDLIB_SKIP: [&str; 14] = [
    "test",
    "idlelib",
    "tkinter",
    "turtledemo",
    "ensurepip",
    "lib2to3",
    "pydoc_data",
    "__pycache__",
    "site-packages",
    "dist-packages",
    "distutils",
    "venv",
    "sqlite3",
    "unittest",
];

fn arch() -> (&'static str, &'static str) {
    match std::env::consts::ARCH {
        "x86_64" => ("x86_64", "aarch64"),
        "aarch64" => ("aarch64", "x86_64"),
        other => panic!("these tests run on x86_64 or aarch64, not {other}"),
    }
}

/// `(minor, stdlib dir)` of Debian's python3.
fn host_python() -> (u32, PathBuf) {
    let out = Command::new(PYTHON)
        .args([
            "-c",
            "import sys, sysconfig; print(sys.version_info[1]); print(sysconfig.get_paths()['stdlib'])",
        ])
        .output()
        .unwrap_or_else(|e| {
            panic!("{PYTHON} is required ({e}): install Debian's python3 (`apt-get install python3`; .ci/run does it)")
        });
    assert!(out.status.success(), "{}", describe(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    let minor = lines.next().unwrap().trim().parse().unwrap();
    (minor, PathBuf::from(lines.next().unwrap().trim()))
}

/// A directory of wheels `.ci/run` fetched: `cp3NN-ARCH`.
fn wheels(python_minor: u32, arch: &str) -> PathBuf {
    let root = std::env::var_os("LAMINA_TEST_WHEELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache"));
            cache.join("lamina-tests/wheels")
        });
    let dir = root.join(format!("cp3{python_minor}-{arch}"));
    let has = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("awslambdaric-"))
        })
        .unwrap_or(false);
    assert!(
        has,
        "no awslambdaric wheel in {}: run .ci/run, which fetches them with `{PYTHON} -m pip download`",
        dir.display()
    );
    dir
}

/// Unpack every wheel of `wheels` into `to` (as `pip install --target` would lay them out).
fn unpack_wheels(wheels: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(wheels).unwrap().flatten() {
        if e.path().extension().is_some_and(|x| x == "whl") {
            let f = std::fs::File::open(e.path()).unwrap();
            zip::ZipArchive::new(f).unwrap().extract(to).unwrap();
        }
    }
}

/// Copy a tree, leaving out directories named in `skip`.
fn copy_tree(from: &Path, to: &Path, skip: &[&str]) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let name = e.file_name();
        let t = e.file_type().unwrap();
        let dest = to.join(&name);
        if t.is_dir() {
            if !skip.contains(&name.to_string_lossy().as_ref()) {
                copy_tree(&e.path(), &dest, skip);
            }
        } else if t.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(e.path()).unwrap(), &dest).unwrap();
        } else if t.is_file() {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

/// The libraries (and the loader) `ldd` lists for `files`, copied to the same paths under
/// `root`.
fn copy_libraries(files: &[PathBuf], root: &Path) {
    let out = Command::new("ldd")
        .args(files)
        .output()
        .expect("ldd is required (Debian's libc-bin)");
    assert!(out.status.success(), "{}", describe(&out));
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line
                .split_whitespace()
                .next()
                .filter(|p| p.starts_with('/')),
        };
        // `ldd` of several files heads each list with `FILE:`.
        let Some(p) = path.filter(|p| p.starts_with('/') && !p.ends_with(':')) else {
            continue;
        };
        let dest = root.join(p.trim_start_matches('/'));
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        if !dest.exists() {
            // The file itself, not the link (`-L`): the base has no /usr merge links.
            std::fs::copy(p, &dest).unwrap();
        }
    }
}

fn work_dir() -> PathBuf {
    let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join("runtime-client-tests");
    std::fs::create_dir_all(&base).unwrap();
    for e in std::fs::read_dir(&base).unwrap().flatten() {
        let pid = e.file_name().to_string_lossy().into_owned();
        if !Path::new("/proc").join(&pid).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
    let dir = base.join(std::process::id().to_string());
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).unwrap();
    dir
}

struct Fixture {
    dir: PathBuf,
    /// `oci:…:python`: Debian's python3 and the libraries it needs, nothing else.
    base: String,
    /// `oci:…:bare`: one file, no interpreter.
    bare: String,
    /// Debian's Python minor version.
    minor: u32,
    /// The real client (and its dependencies) for this machine, unpacked.
    ric: PathBuf,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = work_dir();
        let (minor, stdlib) = host_python();
        let (host_arch, _) = arch();
        let ric = dir.join("ric");
        unpack_wheels(&wheels(minor, host_arch), &ric);

        let stage = dir.join("stage");
        let real = std::fs::canonicalize(PYTHON).unwrap();
        let exe = stage.join(real.strip_prefix("/").unwrap());
        std::fs::create_dir_all(exe.parent().unwrap()).unwrap();
        std::fs::copy(&real, &exe).unwrap();
        if real != Path::new(PYTHON) {
            std::os::unix::fs::symlink(real.file_name().unwrap(), stage.join("usr/bin/python3"))
                .unwrap();
        }
        copy_tree(
            &stdlib,
            &stage.join(stdlib.strip_prefix("/").unwrap()),
            &STDLIB_SKIP,
        );
        let mut elves = vec![real];
        for e in std::fs::read_dir(&ric).unwrap().flatten() {
            if e.file_name().to_string_lossy().ends_with(".so") {
                elves.push(e.path());
            }
        }
        copy_libraries(&elves, &stage);
        for d in ["tmp", "var/task"] {
            std::fs::create_dir_all(stage.join(d)).unwrap();
        }
        let bare_stage = dir.join("bare");
        std::fs::create_dir_all(bare_stage.join("etc")).unwrap();
        std::fs::write(bare_stage.join("etc/os-release"), "ID=bare\n").unwrap();

        let layout = dir.join("bases");
        let build = |stage: &Path, tag: &str| {
            let to = oci_ref(&layout, tag);
            lamina_ok(
                &[
                    "build",
                    "--base",
                    "scratch",
                    "--layer",
                    &format!("{}:/", stage.display()),
                    "--to",
                    &to,
                    "-q",
                ],
                &dir,
                &[("LAMINA_CACHE_DIR", path_str(&dir.join("cache")))],
            );
            to
        };
        let base = build(&stage, "python");
        let bare = build(&bare_stage, "bare");
        std::fs::remove_dir_all(&stage).unwrap();
        Fixture {
            dir,
            base,
            bare,
            minor,
            ric,
        }
    })
}

const APP: &str = r#"import time

class MyError(Exception):
    pass

def handler(event, context):
    if event.get("mode") == "error":
        raise MyError("failed on purpose")
    if event.get("mode") == "sleep":
        time.sleep(30)
    return {"echo": event, "function": context.function_name}
"#;

/// A project in `name/`: `fn/app.py` and a lamina.toml on `base` with the client at `ric`;
/// `extra` is appended to `[function]`.
fn project(name: &str, base: &str, ric: &Path, extra: &str) -> PathBuf {
    let f = fixture();
    let p = f.dir.join(name);
    std::fs::create_dir_all(p.join("fn")).unwrap();
    std::fs::write(p.join("fn/app.py"), APP).unwrap();
    std::fs::write(
        p.join("lamina.toml"),
        format!(
            "base = \"{base}\"\nto = \"oci:out:latest\"\n\n[function]\nhandler = \"app.handler\"\ncode = \"fn\"\nruntime_client = {{ language = \"python\", path = \"{}\" }}\n{extra}",
            ric.display()
        ),
    )
    .unwrap();
    p
}

fn lamina_in(project: &Path, args: &[&str]) -> Output {
    let cache = fixture().dir.join("cache");
    lamina(args, project, &[("LAMINA_CACHE_DIR", path_str(&cache))])
}

/// `lamina invoke IMAGE --event - ARGS…`, bounded to a minute.
fn invoke(image: &str, event: &Value, args: &[&str]) -> Output {
    let mut all = vec!["invoke", image, "--event", "-"];
    all.extend_from_slice(args);
    let mut cmd = Command::new(lamina_bin());
    cmd.args(&all)
        .env("LAMINA_CACHE_DIR", fixture().dir.join("cache"))
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN");
    let event = event.to_string();
    run_bounded(&mut cmd, Some(event.as_bytes()), Duration::from_secs(60))
}

fn stdout_json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", describe(out)))
}

#[test]
fn the_real_client_on_a_debian_python_answers_raises_and_times_out() {
    let f = fixture();
    let p = project("ok", &f.base, &f.ric, "");
    let out = lamina_in(&p, &["build"]);
    assert!(out.status.success(), "{}", describe(&out));
    let err = stderr_of(&out);
    assert!(
        err.contains("runtime client: python awslambdaric with /usr/bin/python3"),
        "{err}"
    );
    let image = oci_ref(&p.join("out"), "latest");
    let (_, _, config) = read_layout(&p.join("out"), "latest");
    let c = &config["config"];
    assert_eq!(
        c["Entrypoint"],
        json!(["/usr/bin/python3", "-m", "awslambdaric"])
    );
    assert_eq!(c["Cmd"], json!(["app.handler"]));
    assert_eq!(c["WorkingDir"], "/var/task");
    let env: Vec<&str> = c["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(env.contains(&"LAMBDA_TASK_ROOT=/var/task"), "{env:?}");
    assert!(
        env.iter()
            .any(|e| e.starts_with("PYTHONPATH=") && e.contains("/var/runtime")),
        "{env:?}"
    );

    let event = json!({"n": 42, "s": "héllo"});
    let out = invoke(&image, &event, &[]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        stdout_json(&out),
        json!({"echo": event, "function": "function"})
    );

    let out = invoke(&image, &json!({"mode": "error"}), &[]);
    assert!(!out.status.success(), "{}", describe(&out));
    let body = stdout_json(&out);
    assert_eq!(body["errorType"], "MyError", "{body}");
    assert_eq!(body["errorMessage"], "failed on purpose", "{body}");

    let out = invoke(&image, &json!({"mode": "sleep"}), &["--timeout", "1"]);
    assert!(!out.status.success(), "{}", describe(&out));
    assert_eq!(stdout_json(&out)["errorType"], "Sandbox.Timedout");
    assert!(
        stderr_of(&out).contains("Task timed out"),
        "{}",
        describe(&out)
    );
}

#[test]
fn config_set_in_the_spec_wins_over_the_clients() {
    let f = fixture();
    let p = project(
        "config-wins",
        &f.base,
        &f.ric,
        "\n[config]\nworkdir = \"/srv\"\nenv = { PYTHONPATH = \"/mine\" }\n",
    );
    // `[config]` after `[function]`: the table above it ends there.
    let out = lamina_in(&p, &["build"]);
    assert!(out.status.success(), "{}", describe(&out));
    let (_, _, config) = read_layout(&p.join("out"), "latest");
    let c = &config["config"];
    assert_eq!(c["WorkingDir"], "/srv");
    let env = c["Env"].as_array().unwrap();
    assert!(env.contains(&json!("PYTHONPATH=/mine")), "{env:?}");
    assert!(
        env.contains(&json!("LAMBDA_TASK_ROOT=/var/task")),
        "{env:?}"
    );
    assert_eq!(
        c["Entrypoint"],
        json!(["/usr/bin/python3", "-m", "awslambdaric"])
    );
}

/// A failed build: exit status 3 (the Lambda checks), the rule and the fix named, and no
/// image written.
fn refused(p: &Path, rule: &str, needles: &[&str]) {
    let out = lamina_in(p, &["build"]);
    assert_no_panic(&out);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    let err = stderr_of(&out);
    assert!(err.contains(rule), "no {rule}:\n{err}");
    for n in needles {
        assert!(err.contains(n), "no `{n}`:\n{err}");
    }
    assert!(!p.join("out").exists(), "an image was written");
}

#[test]
fn a_base_without_python_is_l020_with_the_fix() {
    let f = fixture();
    let p = project("bare", &f.bare, &f.ric, "");
    refused(
        &p,
        "L020",
        &["no python3 or python on its PATH", "use a base that has it"],
    );
}

#[test]
fn a_client_for_another_cpu_is_l009_with_the_pip_command() {
    let f = fixture();
    let (host, other) = arch();
    let ric = f.dir.join("ric-other-cpu");
    unpack_wheels(&wheels(f.minor, other), &ric);
    let p = project("other-cpu", &f.base, &ric, "");
    refused(
        &p,
        "L009",
        &[
            "/var/runtime/runtime_client",
            &format!("--platform manylinux2014_{host}"),
            &format!("--python-version 3.{}", f.minor),
        ],
    );
}

#[test]
fn a_client_for_another_python_is_l010_with_the_pip_command() {
    let f = fixture();
    let (host, _) = arch();
    let ric = f.dir.join("ric-other-python");
    unpack_wheels(&wheels(f.minor + 1, host), &ric);
    let p = project("other-python", &f.base, &ric, "");
    refused(
        &p,
        "L010",
        &[
            &format!("cp3{}", f.minor + 1),
            &format!("the base's Python 3.{}", f.minor),
            &format!("--python-version 3.{} awslambdaric", f.minor),
        ],
    );
    // `--no-lambda-check` builds anyway, the finding kept as a line of the build's output.
    let out = lamina_in(&p, &["build", "--no-lambda-check"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        stderr_of(&out).contains("runtime client: error L010"),
        "{}",
        describe(&out)
    );
    assert!(p.join("out/index.json").is_file());
}

#[test]
fn a_missing_client_and_a_handler_that_does_not_resolve_are_named() {
    let f = fixture();
    let empty = f.dir.join("empty-ric");
    std::fs::create_dir_all(&empty).unwrap();
    let p = project("no-client", &f.base, &empty, "");
    refused(
        &p,
        "L021",
        &["does not hold awslambdaric", "pip install --target"],
    );

    let p = project("bad-handler", &f.base, &f.ric, "");
    let spec = std::fs::read_to_string(p.join("lamina.toml")).unwrap();
    std::fs::write(
        p.join("lamina.toml"),
        spec.replace("app.handler", "nowhere.handler"),
    )
    .unwrap();
    refused(&p, "L014", &["nowhere", "PYTHONPATH"]);
}

/// `lamina check` on a finished client-started image judges its handler as the build does:
/// on the client's module path, with the base's Python; a good one passes with no finding
/// about the handler, a broken one (built with --no-lambda-check) is L014.
#[test]
fn check_judges_the_handler_of_a_client_started_image() {
    let f = fixture();
    let p = project("check-good", &f.base, &f.ric, "");
    let out = lamina_in(&p, &["build", "-q"]);
    assert!(out.status.success(), "{}", describe(&out));
    let out = lamina_in(&p, &["check", "oci:out:latest"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr_of(&out)
    );
    assert!(!said.contains("L014") && !said.contains("L015"), "{said}");

    let p = project("check-bad", &f.base, &f.ric, "");
    let spec = std::fs::read_to_string(p.join("lamina.toml")).unwrap();
    std::fs::write(
        p.join("lamina.toml"),
        spec.replace("app.handler", "nowhere.handler"),
    )
    .unwrap();
    let out = lamina_in(&p, &["build", "-q", "--no-lambda-check"]);
    assert!(out.status.success(), "{}", describe(&out));
    let out = lamina_in(&p, &["check", "oci:out:latest"]);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("error L014")
            && stdout.contains("nowhere")
            && stdout.contains("PYTHONPATH"),
        "{}",
        describe(&out)
    );
}

#[test]
fn go_needs_no_client_and_an_aws_base_is_not_given_one() {
    let f = fixture();
    let p = project("go", &f.base, &f.ric, "");
    let spec = std::fs::read_to_string(p.join("lamina.toml")).unwrap();
    std::fs::write(
        p.join("lamina.toml"),
        spec.replace("language = \"python\"", "language = \"go\""),
    )
    .unwrap();
    let out = lamina_in(&p, &["build"]);
    // A spec error: exit status 2, naming the file and line.
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let err = stderr_of(&out);
    assert!(
        err.contains("lamina.toml")
            && err.contains("line 7")
            && err.contains("needs no runtime_client"),
        "{err}"
    );

    let spec = spec.replace(&format!("base = \"{}\"\n", f.base), "");
    std::fs::write(p.join("lamina.toml"), spec).unwrap();
    let out = lamina_in(&p, &["build"]);
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        stderr_of(&out).contains("runtime_client is for a base that is not an AWS Lambda image"),
        "{}",
        describe(&out)
    );
}

#[test]
fn init_with_a_base_writes_the_client_and_the_command_that_fetches_it() {
    let f = fixture();
    let p = f.dir.join("init");
    std::fs::create_dir_all(&p).unwrap();
    std::fs::write(p.join("app.py"), APP).unwrap();
    let out = lamina_in(&p, &["init", "--base", &f.base]);
    assert!(out.status.success(), "{}", describe(&out));
    let spec = std::fs::read_to_string(p.join("lamina.toml")).unwrap();
    assert!(spec.contains(&format!("base = \"{}\"", f.base)), "{spec}");
    assert!(
        spec.contains("runtime_client = { language = \"python\", path = \"ric\" }"),
        "{spec}"
    );
    let (host, _) = arch();
    assert!(
        stderr_of(&out).contains(&format!(
            "pip install --target ric --platform manylinux2014_{host} --only-binary=:all:"
        )),
        "{}",
        describe(&out)
    );

    // With the client fetched into ric/, the written spec builds and the function answers.
    copy_tree(&f.ric, &p.join("ric"), &[]);
    let out = lamina_in(&p, &["init", "--base", &f.base, "--force"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        !stderr_of(&out).contains("pip install"),
        "{}",
        describe(&out)
    );
    let out = lamina_in(&p, &["build"]);
    assert!(out.status.success(), "{}", describe(&out));
    let out = invoke(&oci_ref(&p.join("out"), "latest"), &json!({"k": "v"}), &[]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(stdout_json(&out)["echo"], json!({"k": "v"}));
}

/// To a registry: a client for the wrong Python is refused before a layer is built or a blob
/// uploaded; the real client passes the push gate (its entrypoint, loader and libraries
/// checked by L006, L012, L013) and is pushed.
#[test]
fn a_registry_gets_nothing_from_a_refused_client_and_the_image_of_a_good_one() {
    let f = fixture();
    let (host, _) = arch();
    let reg = Registry::plain();
    let ric = f.dir.join("ric-push-other-python");
    unpack_wheels(&wheels(f.minor + 1, host), &ric);
    let p = project("push-bad", &f.base, &ric, "");
    let out = lamina_in(&p, &["build", "--to", &reg.reference("fn:bad")]);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    let err = stderr_of(&out);
    assert!(err.contains("L010"), "{err}");
    assert!(
        !err.lines().any(|l| l.contains("layer sha256:")),
        "a layer was built before the refusal:\n{err}"
    );
    assert_eq!(reg.blob_count(), 0, "{err}");

    let p = project("push-good", &f.base, &f.ric, "");
    let out = lamina_in(&p, &["build", "--to", &reg.reference("fn:good")]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        !stderr_of(&out).contains("lambda check"),
        "{}",
        describe(&out)
    );
    let manifest: Value = serde_json::from_slice(&reg.raw_manifest("fn:good")).unwrap();
    assert_eq!(manifest["layers"].as_array().unwrap().len(), 3);
}

/// `lamina invoke` of `image`: the handler's answer, a raised exception's `errorType`, and a
/// timeout, as Lambda reports them.
fn serves(image: &str) {
    let event = json!({"n": 7, "s": "wheel"});
    let out = invoke(image, &event, &[]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        stdout_json(&out),
        json!({"echo": event, "function": "function"})
    );
    let out = invoke(image, &json!({"mode": "error"}), &[]);
    assert!(!out.status.success(), "{}", describe(&out));
    assert_eq!(
        stdout_json(&out)["errorType"],
        "MyError",
        "{}",
        describe(&out)
    );
    let out = invoke(image, &json!({"mode": "sleep"}), &["--timeout", "1"]);
    assert!(!out.status.success(), "{}", describe(&out));
    assert_eq!(stdout_json(&out)["errorType"], "Sandbox.Timedout");
}

/// The wheel in `dir` whose name starts with `prefix`.
fn wheel_named(dir: &Path, prefix: &str) -> PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
                && p.extension().is_some_and(|x| x == "whl")
        })
        .unwrap_or_else(|| panic!("no {prefix}*.whl in {}: run .ci/run", dir.display()))
}

/// The files of the image's runtime client layer (the first layer above the base's one).
fn client_layer_files(p: &Path) -> Vec<String> {
    let (manifest, _, _) = read_layout(&p.join("out"), "latest");
    tar_entries(&layer_tar(&p.join("out"), &manifest, 1))
        .iter()
        .filter(|e| !e.is_dir())
        .map(TarEntry::path_str)
        .collect()
}

/// Issue 17: `path` may be the client's wheel itself (its dependencies, unpacked, beside the
/// code), or the directory of wheels `pip download` writes (the client's and its
/// dependencies'): unpacked into the client's layer, the function answers as with a `pip
/// install --target` directory.
#[test]
fn the_client_as_a_wheel_or_a_directory_of_wheels_serves() {
    let f = fixture();
    let (host, _) = arch();
    let wheels_dir = wheels(f.minor, host);
    let ric = wheel_named(&wheels_dir, "awslambdaric-");

    let deps_from = f.dir.join("dep-wheels");
    std::fs::create_dir_all(&deps_from).unwrap();
    for dep in ["simplejson-", "snapshot_restore_py-"] {
        let w = wheel_named(&wheels_dir, dep);
        std::fs::copy(&w, deps_from.join(w.file_name().unwrap())).unwrap();
    }
    let p = project("wheel-file", &f.base, &ric, "dependencies = \"deps\"\n");
    unpack_wheels(&deps_from, &p.join("deps"));
    let out = lamina_in(&p, &["build"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        stderr_of(&out).contains("runtime client: python awslambdaric with /usr/bin/python3"),
        "{}",
        describe(&out)
    );
    let files = client_layer_files(&p);
    assert!(
        files.contains(&"var/runtime/awslambdaric/__main__.py".to_owned())
            && !files.iter().any(|f| f.ends_with(".whl")),
        "{files:?}"
    );
    serves(&oci_ref(&p.join("out"), "latest"));

    let p = project("wheel-dir", &f.base, &wheels_dir, "");
    let out = lamina_in(&p, &["build"]);
    assert!(out.status.success(), "{}", describe(&out));
    let files = client_layer_files(&p);
    for want in [
        "var/runtime/awslambdaric/__main__.py",
        "var/runtime/simplejson/__init__.py",
        "var/runtime/snapshot_restore_py.py",
    ] {
        assert!(files.contains(&want.to_owned()), "{want}: {files:?}");
    }
    assert!(!files.iter().any(|f| f.ends_with(".whl")), "{files:?}");
    serves(&oci_ref(&p.join("out"), "latest"));
}

/// A wheel given as a file is checked as an unpacked one: for another Python, L010; for
/// another CPU, L009; each with the pip command that fetches the right one.
#[test]
fn a_wrong_wheel_file_is_l010_or_l009() {
    let f = fixture();
    let (host, other) = arch();
    let p = project(
        "wheel-other-python",
        &f.base,
        &wheel_named(&wheels(f.minor + 1, host), "awslambdaric-"),
        "",
    );
    refused(
        &p,
        "L010",
        &[
            &format!("cp3{}", f.minor + 1),
            &format!("the base's Python 3.{}", f.minor),
            &format!("--python-version 3.{} awslambdaric", f.minor),
        ],
    );
    let p = project(
        "wheel-other-cpu",
        &f.base,
        &wheel_named(&wheels(f.minor, other), "awslambdaric-"),
        "",
    );
    refused(
        &p,
        "L009",
        &[
            "/var/runtime/runtime_client",
            &format!("--platform manylinux2014_{host}"),
        ],
    );
}

/// Two wheels of a directory that write one path with different bytes: refused, naming the
/// path and both wheels; no image written.
#[test]
fn wheels_that_disagree_on_a_file_are_refused() {
    let f = fixture();
    let (host, _) = arch();
    let dir = f.dir.join("clashing-wheels");
    std::fs::create_dir_all(&dir).unwrap();
    let ric = wheel_named(&wheels(f.minor, host), "awslambdaric-");
    std::fs::copy(&ric, dir.join(ric.file_name().unwrap())).unwrap();
    write_zip(
        &dir.join("one-1.0-py3-none-any.whl"),
        &[ZipItem::File("shared.py", 0o644, b"one = 1\n")],
    );
    write_zip(
        &dir.join("two-1.0-py3-none-any.whl"),
        &[ZipItem::File("shared.py", 0o644, b"two = 2\n")],
    );
    let p = project("clash", &f.base, &dir, "");
    let out = lamina_in(&p, &["build"]);
    assert_no_panic(&out);
    assert!(!out.status.success(), "{}", describe(&out));
    let err = stderr_of(&out);
    for n in [
        "/var/runtime/shared.py",
        "one-1.0-py3-none-any.whl",
        "two-1.0-py3-none-any.whl",
    ] {
        assert!(err.contains(n), "no `{n}`:\n{err}");
    }
    assert!(!p.join("out").exists(), "an image was written");
}
