//! The Lambda compatibility gate: `lamina check` on one crafted image per rule (built by lamina
//! itself, or a built layout rewritten by hand), the fixture passing on both platforms,
//! `--fix-permissions`, and `push` / `build --to docker://` refusing a bad image before
//! anything is uploaded.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;
use serde_json::Value;
use tempfile::TempDir;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A sandboxed working directory: lamina's docker config points inside it.
struct Work {
    tmp: TempDir,
}

impl Work {
    fn new() -> Work {
        let tmp = TempDir::new().expect("tempdir");
        fs::create_dir_all(tmp.path().join("docker")).unwrap();
        Work { tmp }
    }

    fn path(&self) -> &Path {
        self.tmp.path()
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            (
                "DOCKER_CONFIG",
                path_str(&self.path().join("docker")).into(),
            ),
            (
                "LAMINA_CACHE_DIR",
                path_str(&self.path().join("cache")).into(),
            ),
        ]
    }

    fn run(&self, args: &[&str]) -> Output {
        let env = self.env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let out = lamina(args, self.path(), &env);
        assert_no_panic(&out);
        out
    }

    fn ok(&self, args: &[&str]) -> Output {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "lamina {args:?} failed:\n{}",
            describe(&out)
        );
        out
    }

    /// Write files under `dir` (relative to the work dir): `(path, content, mode)`.
    fn files(&self, dir: &str, files: &[(&str, &[u8], u32)]) -> PathBuf {
        let root = self.path().join(dir);
        fs::create_dir_all(&root).unwrap();
        for (p, data, mode) in files {
            write_file(&root.join(p), data, *mode);
        }
        root
    }

    /// `lamina build ARGS --to oci:WORK/NAME:latest`; returns the reference.
    fn build(&self, name: &str, args: &[&str]) -> String {
        let to = oci_ref(&self.path().join(name), "latest");
        let mut a = vec!["build", "-q"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["--to", &to]);
        self.ok(&a);
        to
    }

    /// `lamina check REF [EXTRA] --json`: the report and the run.
    fn check(&self, reference: &str, extra: &[&str]) -> (Value, Output) {
        let mut a = vec!["check", reference];
        a.extend_from_slice(extra);
        a.push("--json");
        let out = self.run(&a);
        let report: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("check --json printed no JSON ({e}):\n{}", describe(&out)));
        (report, out)
    }
}

/// `(rule, path)` of every finding.
fn findings(report: &Value) -> Vec<(String, Option<String>)> {
    report["findings"]
        .as_array()
        .unwrap_or_else(|| panic!("no findings array: {report}"))
        .iter()
        .map(|f| {
            (
                f["rule"].as_str().expect("rule").to_owned(),
                f["path"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

fn rules(report: &Value) -> Vec<String> {
    findings(report).into_iter().map(|(r, _)| r).collect()
}

fn message_of(report: &Value, rule: &str) -> String {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["rule"] == rule)
        .and_then(|f| f["message"].as_str())
        .unwrap_or_else(|| panic!("no {rule} finding: {report}"))
        .to_owned()
}

/// The check found errors: non-zero exit, `ok: false`, and `rule` among the findings.
fn assert_refused(report: &Value, out: &Output, rule: &str) {
    assert!(
        !out.status.success(),
        "check should fail:\n{}",
        describe(out)
    );
    assert_eq!(report["ok"], false, "{report}");
    assert!(
        rules(report).iter().any(|r| r == rule),
        "no {rule}: {report}"
    );
    let f = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["rule"] == rule)
        .unwrap();
    assert_eq!(f["severity"], "error", "{f}");
    assert!(
        stderr_of(out).contains("fails the Lambda checks"),
        "{}",
        describe(out)
    );
}

/// The check passed: exit 0, `ok: true`.
fn assert_passes(report: &Value, out: &Output) {
    assert!(
        out.status.success(),
        "check should pass:\n{}",
        describe(out)
    );
    assert_eq!(report["ok"], true, "{report}");
}

/// A small sound function on the fixture base: what the crafted images start from.
fn sound_function(w: &Work, name: &str, platform: &str) -> String {
    let src = w.files(
        &format!("{name}-src"),
        &[
            ("bootstrap", b"#!/bin/sh\nexec true\n", 0o755),
            ("handler.sh", b"handle() { echo ok; }\n", 0o644),
        ],
    );
    let base = fixture_base_ref();
    let layer = format!("{}:/var/task", path_str(&src));
    w.build(
        name,
        &[
            "--base",
            &base,
            "--platform",
            platform,
            "--layer",
            &layer,
            "--cmd",
            "handler.handle",
        ],
    )
}

// ---------------------------------------------------------------------------------------------
// The fixture passes
// ---------------------------------------------------------------------------------------------

#[test]
fn the_fixture_passes_on_both_platforms() {
    let w = Work::new();
    for (platform, arch) in [("linux/amd64", "amd64"), ("linux/arm64", "arm64")] {
        let b = build_fixture(w.path(), arch, &["--platform", platform, "-q"], &[]);
        let reference = oci_ref(&b.layout, "latest");
        let (report, out) = w.check(&reference, &[]);
        assert_passes(&report, &out);
        assert_eq!(findings(&report), [], "{report}");
        assert_eq!(report["digest"], b.digest.as_str());
        assert!(
            report["platform"]
                .as_str()
                .unwrap()
                .starts_with(&format!("linux/{arch}")),
            "{report}"
        );
        assert_eq!(report["reference"], reference.as_str());

        // The human form: nothing to say but that it passes.
        let out = w.ok(&["check", &reference]);
        assert!(out.stdout.is_empty(), "{}", describe(&out));
        assert!(
            stderr_of(&out).contains("passes the Lambda checks"),
            "{}",
            describe(&out)
        );

        // The base alone, for that platform.
        let (report, out) = w.check(&fixture_base_ref(), &["--platform", platform]);
        assert_passes(&report, &out);
        assert_eq!(findings(&report), [], "{report}");
    }
}

#[test]
fn every_transport_can_be_checked() {
    let w = Work::new();
    let archive = w.path().join("fn.tar");
    let docker = w.path().join("fn-docker.tar");
    let spec = fixture_spec();
    for to in [
        format!("oci-archive:{}:latest", archive.display()),
        format!("docker-archive:{}", docker.display()),
    ] {
        w.ok(&["build", "-q", "-f", path_str(&spec), "--to", &to]);
        let (report, out) = w.check(&to, &[]);
        assert_passes(&report, &out);
        assert_eq!(findings(&report), [], "{to}: {report}");
    }
}

// ---------------------------------------------------------------------------------------------
// One crafted image per rule
// ---------------------------------------------------------------------------------------------

#[test]
fn l001_an_index_without_platform() {
    let w = Work::new();
    let (report, out) = w.check(&fixture_base_ref(), &[]);
    assert_refused(&report, &out, "L001");
    assert_eq!(rules(&report), ["L001"]);
    let index_digest = tagged_descriptor(&fixture_base(), "latest")["digest"].clone();
    assert_eq!(report["digest"], index_digest);
    assert_eq!(report["platform"], Value::Null);
    let m = message_of(&report, "L001");
    assert!(
        m.contains("linux/amd64") && m.contains("linux/arm64") && m.contains("--platform"),
        "{m}"
    );
    // The human form: one line per finding.
    let out = w.run(&["check", &fixture_base_ref()]);
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("error L001: "), "{}", describe(&out));
    assert_eq!(stdout.lines().count(), 1, "{}", describe(&out));
}

#[test]
fn l001_an_index_with_an_attestation_manifest() {
    // buildx's default: the image plus an unknown/unknown attestation manifest in one index.
    let w = Work::new();
    let reference = sound_function(&w, "fn", "linux/amd64");
    let layout = w.path().join("fn");
    let image = tagged_descriptor(&layout, "latest");
    let attestation = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json",
                   "digest": sha256_digest(b"{}"), "size": 2},
        "layers": [],
    }))
    .unwrap();
    fs::write(blob_path(&layout, &sha256_digest(b"{}")), b"{}").unwrap();
    fs::write(
        blob_path(&layout, &sha256_digest(&attestation)),
        &attestation,
    )
    .unwrap();
    let mut img = image.clone();
    img.as_object_mut().unwrap().remove("annotations");
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MT_INDEX,
        "manifests": [img, {
            "mediaType": MT_MANIFEST,
            "digest": sha256_digest(&attestation),
            "size": attestation.len(),
            "platform": {"os": "unknown", "architecture": "unknown"},
            "annotations": {"vnd.docker.reference.type": "attestation-manifest",
                            "vnd.docker.reference.digest": image["digest"]},
        }],
    }))
    .unwrap();
    fs::write(blob_path(&layout, &sha256_digest(&index)), &index).unwrap();
    let top = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MT_INDEX,
        "manifests": [{
            "mediaType": MT_INDEX,
            "digest": sha256_digest(&index),
            "size": index.len(),
            "annotations": {REF_NAME: "latest"},
        }],
    });
    fs::write(layout.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();

    let (report, out) = w.check(&reference, &[]);
    assert_refused(&report, &out, "L001");
    // The one image in it is checked too, and is fine.
    assert_eq!(rules(&report), ["L001"], "{report}");
    assert_eq!(report["platform"], "linux/amd64");
    let m = message_of(&report, "L001");
    assert!(
        m.contains("attestation") && m.contains("--platform linux/amd64"),
        "{m}"
    );

    let (report, out) = w.check(&reference, &["--platform", "linux/amd64"]);
    assert_passes(&report, &out);
}

#[test]
fn l002_zstd_and_uncompressed_layers() {
    let w = Work::new();
    // zstd: lamina goes by the media type (it cannot read zstd, so it need not be real zstd).
    let reference = sound_function(&w, "zstd", "linux/amd64");
    rewrite_image(&w.path().join("zstd"), |_, m, _| {
        m["layers"][2]["mediaType"] = "application/vnd.oci.image.layer.v1.tar+zstd".into();
    });
    let (report, out) = w.check(&reference, &[]);
    assert_refused(&report, &out, "L002");
    assert!(rules(&report).iter().all(|r| r == "L002"), "{report}");
    let m = message_of(&report, "L002");
    assert!(m.contains("zstd"), "{m}");

    // Uncompressed: the layer stored as its tar, under the OCI media type for plain tars.
    let reference = sound_function(&w, "plain", "linux/amd64");
    rewrite_image(&w.path().join("plain"), |layout, m, _| {
        let d = m["layers"][2]["digest"].as_str().unwrap().to_owned();
        let tar = gunzip(&read_blob(layout, &d));
        let td = sha256_digest(&tar);
        fs::write(blob_path(layout, &td), &tar).unwrap();
        m["layers"][2] = serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": td,
            "size": tar.len(),
        });
    });
    let (report, out) = w.check(&reference, &[]);
    assert_refused(&report, &out, "L002");
    // The file system was still read: nothing else is wrong.
    assert_eq!(rules(&report), ["L002"], "{report}");
    assert!(message_of(&report, "L002").contains("uncompressed"));
}

#[test]
fn l003_an_architecture_lambda_does_not_run() {
    let w = Work::new();
    let reference = sound_function(&w, "s390x", "linux/amd64");
    rewrite_image(&w.path().join("s390x"), |_, _, c| {
        c["architecture"] = "s390x".into();
    });
    let (report, out) = w.check(&reference, &[]);
    assert_refused(&report, &out, "L003");
    assert_eq!(rules(&report), ["L003"], "{report}");
    assert!(message_of(&report, "L003").contains("linux/s390x"));
}

#[test]
fn l005_no_entrypoint_and_no_cmd() {
    let w = Work::new();
    let src = w.files("src", &[("data.txt", b"x", 0o644)]);
    let layer = format!("{}:/var/task", path_str(&src));
    let reference = w.build("empty", &["--base", "scratch", "--layer", &layer]);
    let (report, out) = w.check(&reference, &[]);
    assert_refused(&report, &out, "L005");
    assert_eq!(rules(&report), ["L005"], "{report}");
}

#[test]
fn l006_an_entrypoint_for_the_other_architecture() {
    let w = Work::new();
    for (platform, wrong, name) in [
        ("linux/amd64", EM_AARCH64, "AArch64"),
        ("linux/arm64", EM_X86_64, "x86-64"),
    ] {
        let dir = format!("src-{}", platform.replace('/', "-"));
        let src = w.files(&dir, &[("app", &exit0_elf(wrong), 0o755)]);
        let layer = format!("{}:/var/task", path_str(&src));
        let base = fixture_base_ref();
        let reference = w.build(
            &format!("img-{}", platform.replace('/', "-")),
            &[
                "--base",
                &base,
                "--platform",
                platform,
                "--layer",
                &layer,
                "--entrypoint",
                "/var/task/app",
            ],
        );
        let (report, out) = w.check(&reference, &[]);
        assert_refused(&report, &out, "L006");
        assert_eq!(
            findings(&report),
            [("L006".to_owned(), Some("/var/task/app".to_owned()))],
            "{report}"
        );
        let m = message_of(&report, "L006");
        assert!(m.contains(name) && m.contains("exec format error"), "{m}");
    }
    // Control: the right architecture passes.
    let src = w.files("right", &[("app", &exit0_elf(EM_X86_64), 0o755)]);
    let layer = format!("{}:/var/task", path_str(&src));
    let base = fixture_base_ref();
    let reference = w.build(
        "right-img",
        &[
            "--base",
            &base,
            "--layer",
            &layer,
            "--entrypoint",
            "/var/task/app",
        ],
    );
    let (report, out) = w.check(&reference, &[]);
    assert_passes(&report, &out);
}

#[test]
fn l006_a_script_whose_interpreter_is_missing() {
    let w = Work::new();
    let src = w.files(
        "src",
        &[("main.py", b"#!/usr/bin/python3\nprint(1)\n", 0o755)],
    );
    let layer = format!("{}:/var/task", path_str(&src));
    let base = fixture_base_ref();
    let reference = w.build(
        "py",
        &[
            "--base",
            &base,
            "--layer",
            &layer,
            "--entrypoint",
            "/var/task/main.py",
        ],
    );
    let (report, out) = w.check(&reference, &[]);
    assert_refused(&report, &out, "L006");
    assert_eq!(
        findings(&report),
        [("L006".to_owned(), Some("/var/task/main.py".to_owned()))]
    );
    assert!(message_of(&report, "L006").contains("/usr/bin/python3"));
}

#[test]
fn l006_an_entrypoint_without_execute_bit_or_missing() {
    let w = Work::new();
    w.files("src", &[("run.sh", b"#!/bin/sh\necho hi\n", 0o755)]);
    fs::write(
        w.path().join("lamina.toml"),
        format!(
            "base = \"{}\"\n\n[[layer]]\nsource = \"src\"\ndest = \"/var/task\"\nmode = 0o644\n\n\
             [config]\nentrypoint = [\"/var/task/run.sh\"]\n",
            fixture_base_ref()
        ),
    )
    .unwrap();
    let to = oci_ref(&w.path().join("noexec"), "latest");
    w.ok(&["build", "-q", "--to", &to]);
    let (report, out) = w.check(&to, &[]);
    assert_refused(&report, &out, "L006");
    assert_eq!(rules(&report), ["L006"], "{report}");
    assert!(message_of(&report, "L006").contains("not executable"));

    // A name looked up in PATH, and not found there.
    let to2 = oci_ref(&w.path().join("nopath"), "latest");
    w.ok(&["build", "-q", "--to", &to2, "--entrypoint", "node"]);
    let (report, out) = w.check(&to2, &[]);
    assert_refused(&report, &out, "L006");
    assert!(message_of(&report, "L006").contains("PATH"), "{report}");
}

#[test]
fn l007_a_broken_bootstrap() {
    let w = Work::new();
    let base = fixture_base_ref();
    // A bootstrap whose interpreter is missing, under the fixture's sound entrypoint.
    let src = w.files("py", &[("bootstrap", b"#!/usr/bin/python3\n", 0o755)]);
    let layer = format!("{}:/var/task", path_str(&src));
    let reference = w.build("py-img", &["--base", &base, "--layer", &layer]);
    let (report, out) = w.check(&reference, &[]);
    assert_refused(&report, &out, "L007");
    assert_eq!(
        findings(&report),
        [("L007".to_owned(), Some("/var/task/bootstrap".to_owned()))],
        "{report}"
    );
    assert!(message_of(&report, "L007").contains("/usr/bin/python3"));

    // A runtime bootstrap for the other architecture.
    let src = w.files("arm", &[("bootstrap", &exit0_elf(EM_AARCH64), 0o755)]);
    let layer = format!("{}:/var/runtime", path_str(&src));
    let reference = w.build("arm-img", &["--base", &base, "--layer", &layer]);
    let (report, out) = w.check(&reference, &[]);
    assert_refused(&report, &out, "L007");
    assert_eq!(
        findings(&report),
        [("L007".to_owned(), Some("/var/runtime/bootstrap".to_owned()))],
        "{report}"
    );
}

/// `[[layer]]` of `src` at /var/task with `mode = 0o600` and `dir_mode = 0o700`.
fn tight_spec(w: &Work, fix: bool) -> PathBuf {
    w.files(
        "src",
        &[
            ("data/config.json", b"{}", 0o644),
            ("notes.txt", b"n", 0o644),
        ],
    );
    let spec = w.path().join(if fix { "fixed.toml" } else { "tight.toml" });
    fs::write(
        &spec,
        format!(
            "base = \"{}\"\n{}\n[[layer]]\nsource = \"src\"\ndest = \"/var/task\"\n\
             mode = 0o600\ndir_mode = 0o700\n",
            fixture_base_ref(),
            if fix { "fix_permissions = true\n" } else { "" }
        ),
    )
    .unwrap();
    spec
}

/// The modes of the entries under var/task in the image's last layer.
fn task_modes(layout: &Path) -> Vec<(String, u32)> {
    let (manifest, _, _) = read_layout(layout, "latest");
    let n = manifest["layers"].as_array().unwrap().len();
    tar_entries(&layer_tar(layout, &manifest, n - 1))
        .into_iter()
        .filter(|e| e.path.starts_with(b"var/task"))
        .map(|e| (e.path_str(), e.mode))
        .collect()
}

#[test]
fn l008_unreadable_files_warn_and_fix_permissions_opens_them() {
    let w = Work::new();
    let spec = tight_spec(&w, false);
    let tight = oci_ref(&w.path().join("tight"), "latest");
    w.ok(&["build", "-q", "-f", path_str(&spec), "--to", &tight]);
    let (report, out) = w.check(&tight, &[]);
    assert_passes(&report, &out); // warnings only
    let found = findings(&report);
    assert!(found.iter().all(|(r, _)| r == "L008"), "{report}");
    let paths: Vec<&str> = found.iter().filter_map(|(_, p)| p.as_deref()).collect();
    assert_eq!(
        paths,
        [
            "/var/task",
            "/var/task/data",
            "/var/task/data/config.json",
            "/var/task/notes.txt"
        ],
        "{report}"
    );
    assert!(
        report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["severity"] == "warning")
    );
    let out = w.ok(&["check", &tight]);
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .all(|l| l.starts_with("warning L008 /var/task")),
        "{}",
        describe(&out)
    );

    // --fix-permissions, as a flag and as `fix_permissions = true`: no warning, 0644 / 0755.
    let flagged = oci_ref(&w.path().join("flagged"), "latest");
    w.ok(&[
        "build",
        "-q",
        "-f",
        path_str(&spec),
        "--fix-permissions",
        "--to",
        &flagged,
    ]);
    let fixed_spec = tight_spec(&w, true);
    let fixed = oci_ref(&w.path().join("fixed"), "latest");
    w.ok(&["build", "-q", "-f", path_str(&fixed_spec), "--to", &fixed]);
    for (reference, layout) in [(&flagged, "flagged"), (&fixed, "fixed")] {
        let (report, out) = w.check(reference, &[]);
        assert_passes(&report, &out);
        assert_eq!(findings(&report), [], "{report}");
        assert_eq!(
            task_modes(&w.path().join(layout)),
            [
                ("var/task".to_owned(), 0o755),
                ("var/task/data".to_owned(), 0o755),
                ("var/task/data/config.json".to_owned(), 0o644),
                ("var/task/notes.txt".to_owned(), 0o644),
            ]
        );
    }
    // Without the fix, the tar holds the tight modes.
    assert_eq!(
        task_modes(&w.path().join("tight"))[..2],
        [
            ("var/task".to_owned(), 0o700),
            ("var/task/data".to_owned(), 0o700)
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// The gate before pushes
// ---------------------------------------------------------------------------------------------

/// An amd64 image whose entrypoint is an arm64 ELF.
fn bad_image(w: &Work) -> String {
    let src = w.files("bad-src", &[("app", &exit0_elf(EM_AARCH64), 0o755)]);
    let layer = format!("{}:/var/task", path_str(&src));
    let base = fixture_base_ref();
    w.build(
        "bad",
        &[
            "--base",
            &base,
            "--layer",
            &layer,
            "--entrypoint",
            "/var/task/app",
        ],
    )
}

fn is_connection_error(s: &str) -> bool {
    s.contains("127.0.0.1:1") && (s.contains("reach") || s.contains("onnect"))
}

#[test]
fn push_refuses_a_bad_image_before_connecting() {
    let w = Work::new();
    let bad = bad_image(&w);
    // Nothing listens on port 1: the check must fail first.
    let out = w.run(&["push", &bad, "docker://127.0.0.1:1/x:y", "--retries", "0"]);
    assert!(!out.status.success());
    let err = stderr_of(&out);
    assert!(
        err.contains("L006") && err.contains("/var/task/app"),
        "{err}"
    );
    assert!(err.contains("--no-lambda-check"), "{err}");
    assert!(!is_connection_error(&err), "{err}");

    // --no-lambda-check gets past the gate, to the expected connection error.
    let out = w.run(&[
        "push",
        &bad,
        "docker://127.0.0.1:1/x:y",
        "--retries",
        "0",
        "--no-lambda-check",
    ]);
    assert!(!out.status.success());
    let err = stderr_of(&out);
    assert!(!err.contains("L006"), "{err}");
    assert!(is_connection_error(&err), "{err}");

    // An index is L001, also before connecting; with --platform the image passes the gate.
    let base = fixture_base_ref();
    let out = w.run(&["push", &base, "docker://127.0.0.1:1/x:y", "--retries", "0"]);
    let err = stderr_of(&out);
    assert!(!out.status.success());
    assert!(err.contains("L001") && !is_connection_error(&err), "{err}");
    let out = w.run(&[
        "push",
        &base,
        "docker://127.0.0.1:1/x:y",
        "--platform",
        "linux/arm64",
        "--retries",
        "0",
    ]);
    let err = stderr_of(&out);
    assert!(!out.status.success());
    assert!(!err.contains("L00") && is_connection_error(&err), "{err}");
}

#[test]
fn build_to_a_registry_refuses_a_bad_image_before_uploading() {
    let reg = Registry::plain();
    let w = Work::new();
    let src = w.files("bad-src", &[("app", &exit0_elf(EM_AARCH64), 0o755)]);
    let layer = format!("{}:/var/task", path_str(&src));
    let base = fixture_base_ref();
    let dest = reg.reference("fn:bad");
    let args = [
        "build",
        "--base",
        &base,
        "--layer",
        &layer,
        "--entrypoint",
        "/var/task/app",
        "--to",
        &dest,
    ];
    let out = w.run(&args);
    assert!(!out.status.success());
    let err = stderr_of(&out);
    assert!(
        err.contains("L006") && err.contains("nothing was pushed"),
        "{err}"
    );
    assert_eq!(reg.blob_count(), 0, "blobs were uploaded:\n{err}");
    assert_eq!(http_status(&reg.host, "/v2/fn/manifests/bad"), Some(404));

    // --no-lambda-check pushes it anyway.
    let mut forced = args.to_vec();
    forced.push("--no-lambda-check");
    let out = w.ok(&forced);
    let printed = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(is_sha256_digest(&printed), "{printed}");
    assert_eq!(
        reg.manifest_digest("fn:bad"),
        printed,
        "what the registry serves"
    );
    assert!(reg.blob_count() > 0);

    // The fixture passes the gate and is pushed; the check reads it back from the registry.
    let good = reg.reference("fn:good");
    let spec = fixture_spec();
    w.ok(&["build", "-q", "-f", path_str(&spec), "--to", &good]);
    let (report, out) = w.check(&good, &[]);
    assert_passes(&report, &out);
    assert_eq!(findings(&report), [], "{report}");
    let (report, out) = w.check(&dest, &[]);
    assert_refused(&report, &out, "L006");
}
