//! The Lambda gate, second edition: what fails at the first invoke rather than at deploy time.
//! One crafted image (built by lamina on the fixture base) per rule L009 to L019, refused (or
//! warned about) with its rule id and its fix; a realistic Python function with the right
//! wheels passing on both architectures; `lamina zip` running the same file rules; and the
//! fail-fast order of a build whose config alone is wrong.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;
use serde_json::Value;
use tempfile::TempDir;

/// The host's /bin/true: a dynamically linked x86-64 (or arm64) executable with a PT_INTERP.
fn host_true() -> Vec<u8> {
    fs::read("/bin/true").expect("/bin/true is needed")
}

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        a => panic!("no Lambda architecture for host {a}"),
    }
}

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

    fn run(&self, args: &[&str]) -> Output {
        let docker = self.path().join("docker");
        let cache = self.path().join("cache");
        let env = [
            ("DOCKER_CONFIG", path_str(&docker)),
            ("LAMINA_CACHE_DIR", path_str(&cache)),
        ];
        let out = lamina(args, self.path(), &env);
        assert_no_panic(&out);
        out
    }

    fn ok(&self, args: &[&str]) -> Output {
        let out = self.run(args);
        assert!(out.status.success(), "lamina {args:?}:\n{}", describe(&out));
        out
    }

    /// Files under `dir` (relative to the work dir): `(path, content, mode)`.
    fn files(&self, dir: &str, files: &[(&str, &[u8], u32)]) -> PathBuf {
        let root = self.path().join(dir);
        fs::create_dir_all(&root).unwrap();
        for (p, data, mode) in files {
            write_file(&root.join(p), data, *mode);
        }
        root
    }

    /// `lamina build` on the fixture base for `arch`, with `layers` (`(dir, dest)`) and extra
    /// flags; returns the oci: reference.
    fn build(&self, name: &str, arch: &str, layers: &[(&Path, &str)], extra: &[&str]) -> String {
        let to = oci_ref(&self.path().join(name), "latest");
        let base = fixture_base_ref();
        let platform = format!("linux/{arch}");
        let mut a: Vec<String> = ["build", "-q", "--base", &base, "--platform", &platform]
            .iter()
            .map(|s| s.to_string())
            .collect();
        for (dir, dest) in layers {
            a.push("--layer".into());
            a.push(format!("{}:{dest}", path_str(dir)));
        }
        a.extend(extra.iter().map(|s| s.to_string()));
        a.extend(["--to".to_owned(), to.clone()]);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        self.ok(&a);
        to
    }

    fn check(&self, reference: &str) -> (Value, Output) {
        let out = self.run(&["check", reference, "--json"]);
        let report: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("no JSON ({e}):\n{}", describe(&out)));
        (report, out)
    }
}

fn findings(report: &Value) -> Vec<(String, String, Option<String>)> {
    report["findings"]
        .as_array()
        .unwrap_or_else(|| panic!("no findings: {report}"))
        .iter()
        .map(|f| {
            (
                f["rule"].as_str().unwrap().to_owned(),
                f["severity"].as_str().unwrap().to_owned(),
                f["path"].as_str().map(str::to_owned),
            )
        })
        .collect()
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

/// Refused with exit status 3, `rule` an error finding at `path`.
fn assert_refused(report: &Value, out: &Output, rule: &str, path: Option<&str>) {
    assert_eq!(out.status.code(), Some(3), "{}", describe(out));
    assert_eq!(report["ok"], false, "{report}");
    let want = (rule.to_owned(), "error".to_owned(), path.map(str::to_owned));
    assert!(findings(report).contains(&want), "no {want:?}: {report}");
}

fn assert_clean(report: &Value, out: &Output) {
    assert!(out.status.success(), "{}", describe(out));
    assert_eq!(findings(report), [], "{report}");
}

/// A Python runtime in the image, as the AWS base images lay it out (`/var/lang/bin/python3.12`),
/// the AWS entrypoint, and the function's code: what `lamina check` recognizes as python3.12.
fn python_runtime(w: &Work, arch: &str) -> PathBuf {
    let m = machine_of(arch);
    w.files(
        &format!("runtime-{arch}"),
        &[("bin/python3.12", &stub_elf(m, ET_EXEC), 0o755)],
    )
}

const ENTRYPOINT: [&str; 4] = [
    "--entrypoint",
    "/lambda-entrypoint.sh",
    "--cmd",
    "app.handler",
];

// ---------------------------------------------------------------------------------------------
// L009, L010: native Python code for the wrong target
// ---------------------------------------------------------------------------------------------

/// What `pip install --target src requests` leaves on an x86_64 machine for Python 3.11:
/// charset_normalizer's `md.cpython-311-x86_64-linux-gnu.so` and its dist-info.
fn x86_py311_packages(w: &Work) -> PathBuf {
    let so = stub_elf(EM_X86_64, ET_DYN);
    w.files(
        "x86-src",
        &[
            ("app.py", b"import charset_normalizer\ndef handler(e, c): return 1\n", 0o644),
            ("charset_normalizer/__init__.py", b"", 0o644),
            ("charset_normalizer/md.cpython-311-x86_64-linux-gnu.so", &so, 0o755),
            (
                "charset_normalizer-3.3.2.dist-info/WHEEL",
                b"Wheel-Version: 1.0\nGenerator: bdist_wheel (0.42.0)\nRoot-Is-Purelib: false\nTag: cp311-cp311-manylinux_2_17_x86_64\nTag: cp311-cp311-manylinux2014_x86_64\n",
                0o644,
            ),
            ("charset_normalizer-3.3.2.dist-info/top_level.txt", b"charset_normalizer\n", 0o644),
            ("requests/__init__.py", b"", 0o644),
            (
                "requests-2.31.0.dist-info/WHEEL",
                b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
                0o644,
            ),
        ],
    )
}

#[test]
fn l009_l010_an_x86_cpython311_extension_on_arm64_python312() {
    let w = Work::new();
    let rt = python_runtime(&w, "arm64");
    let src = x86_py311_packages(&w);
    let img = w.build(
        "img",
        "arm64",
        &[(&rt, "/var/lang"), (&src, "/var/task")],
        &ENTRYPOINT,
    );
    let (report, out) = w.check(&img);
    let so = "/var/task/charset_normalizer/md.cpython-311-x86_64-linux-gnu.so";
    assert_refused(&report, &out, "L009", Some(so));
    let m = message_of(&report, "L009");
    for want in [
        "charset-normalizer",
        "x86-64",
        "linux/arm64",
        "pip install --platform manylinux2014_aarch64 --only-binary=:all: --python-version 3.12",
    ] {
        assert!(m.contains(want), "{want:?} not in {m}");
    }
    // The file name's tag and the WHEEL's tags: CPython 3.11, not the runtime's 3.12.
    assert_refused(&report, &out, "L010", Some(so));
    let m = message_of(&report, "L010");
    assert!(
        m.contains("CPython 3.11") && m.contains("python3.12"),
        "{m}"
    );
    assert!(m.contains("--python-version 3.12"), "{m}");
    // The pure-Python wheel beside it is fine.
    assert!(!report.to_string().contains("requests"), "{report}");
    // The human form: one line per finding, rule id first.
    let out = w.run(&["check", &img]);
    assert_eq!(out.status.code(), Some(3));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("error L009 {so}: ")), "{text}");
}

#[test]
fn l010_a_wheel_tag_for_another_python_on_the_right_cpu() {
    let w = Work::new();
    let rt = python_runtime(&w, "amd64");
    // The CPU is right (x86-64 on amd64): only the Python version is wrong, in the file name
    // and in the WHEEL.
    let src = x86_py311_packages(&w);
    let img = w.build(
        "img",
        "amd64",
        &[(&rt, "/var/lang"), (&src, "/var/task")],
        &ENTRYPOINT,
    );
    let (report, out) = w.check(&img);
    assert_refused(
        &report,
        &out,
        "L010",
        Some("/var/task/charset_normalizer/md.cpython-311-x86_64-linux-gnu.so"),
    );
    assert!(!findings(&report).iter().any(|f| f.0 == "L009"), "{report}");
    assert!(
        message_of(&report, "L010").contains("manylinux2014_x86_64"),
        "{report}"
    );
}

/// A realistic Python function with the right wheels: an abi3 extension, a cp312 extension
/// for the CPU, dist-infos whose tags fit, a dotted handler module. No findings on either
/// architecture.
#[test]
fn a_python_function_with_the_right_wheels_passes_on_both_architectures() {
    let w = Work::new();
    for arch in ["amd64", "arm64"] {
        let m = machine_of(arch);
        let gnu = if arch == "amd64" { "x86_64" } else { "aarch64" };
        let so = stub_elf(m, ET_DYN);
        let rt = python_runtime(&w, arch);
        let ext = format!("pydantic_core/_pydantic_core.cpython-312-{gnu}-linux-gnu.so");
        let wheel = format!(
            "Wheel-Version: 1.0\nRoot-Is-Purelib: false\nTag: cp312-cp312-manylinux_2_17_{gnu}\nTag: cp312-cp312-manylinux2014_{gnu}\n"
        );
        let abi3 = format!("Wheel-Version: 1.0\nTag: cp37-abi3-manylinux_2_28_{gnu}\n");
        let src = w.files(
            &format!("fn-{arch}"),
            &[
                ("app/__init__.py", b"", 0o644),
                ("app/main.py", b"def handler(e, c): return 1\n", 0o644),
                ("pydantic_core/__init__.py", b"", 0o644),
                (&ext, &so, 0o755),
                (
                    "pydantic_core-2.16.3.dist-info/WHEEL",
                    wheel.as_bytes(),
                    0o644,
                ),
                ("cryptography/hazmat/bindings/_rust.abi3.so", &so, 0o755),
                (
                    "cryptography-42.0.5.dist-info/WHEEL",
                    abi3.as_bytes(),
                    0o644,
                ),
                (
                    "certifi-2024.2.2.dist-info/WHEEL",
                    b"Tag: py3-none-any\n",
                    0o644,
                ),
                ("certifi/__init__.py", b"", 0o644),
            ],
        );
        let img = w.build(
            &format!("img-{arch}"),
            arch,
            &[(&rt, "/var/lang"), (&src, "/var/task")],
            &[
                "--entrypoint",
                "/lambda-entrypoint.sh",
                "--cmd",
                "app.main.handler",
            ],
        );
        let (report, out) = w.check(&img);
        assert_clean(&report, &out);
    }
}

// ---------------------------------------------------------------------------------------------
// L011: a Node.js addon for the wrong CPU
// ---------------------------------------------------------------------------------------------

#[test]
fn l011_a_node_addon_for_the_other_cpu() {
    let w = Work::new();
    let rt = w.files(
        "node-rt",
        &[("bin/node", &stub_elf(EM_AARCH64, ET_EXEC), 0o755)],
    );
    let addon = stub_elf(EM_X86_64, ET_DYN);
    let src = w.files(
        "node-src",
        &[
            (
                "index.mjs",
                b"export const handler = async () => 1;\n",
                0o644,
            ),
            (
                "node_modules/@img/sharp/build/Release/sharp.node",
                &addon,
                0o755,
            ),
        ],
    );
    let img = w.build(
        "img",
        "arm64",
        &[(&rt, "/var/lang"), (&src, "/var/task")],
        &[
            "--entrypoint",
            "/lambda-entrypoint.sh",
            "--cmd",
            "index.handler",
        ],
    );
    let (report, out) = w.check(&img);
    assert_refused(
        &report,
        &out,
        "L011",
        Some("/var/task/node_modules/@img/sharp/build/Release/sharp.node"),
    );
    let m = message_of(&report, "L011");
    assert!(
        m.contains("@img/sharp") && m.contains("npm install --cpu=arm64 --os=linux"),
        "{m}"
    );
    assert!(
        !findings(&report).iter().any(|f| f.0 == "L009"),
        "one rule per addon: {report}"
    );
}

// ---------------------------------------------------------------------------------------------
// L012, L013: programs that cannot start
// ---------------------------------------------------------------------------------------------

#[test]
fn l012_a_dynamic_bootstrap_without_its_interpreter() {
    let w = Work::new();
    let arch = host_arch();
    let src = w.files("bs", &[("bootstrap", &host_true(), 0o755)]);
    let img = w.build(
        "img",
        arch,
        &[(&src, "/var/runtime")],
        &["--entrypoint", "/var/runtime/bootstrap"],
    );
    let (report, out) = w.check(&img);
    assert_refused(&report, &out, "L012", Some("/var/runtime/bootstrap"));
    let m = message_of(&report, "L012");
    assert!(
        m.contains("/lib") && m.contains("ld-linux"),
        "names the loader: {m}"
    );
    assert!(
        m.contains("no such file or directory") && m.contains("statically"),
        "{m}"
    );
    // Only the loader's finding: the libraries are not judged without a loader.
    assert!(!findings(&report).iter().any(|f| f.0 == "L013"), "{report}");
}

#[test]
fn l012_the_loader_for_the_other_architecture_and_l013_a_missing_library() {
    let w = Work::new();
    let arch = host_arch();
    let other = if arch == "amd64" {
        EM_AARCH64
    } else {
        EM_X86_64
    };
    let ours = machine_of(arch);
    let bytes = host_true();
    let interp = {
        // The loader /bin/true names, as the image will hold it: under a lib64 -> usr/lib64
        // style link when it sits in /lib64.
        let s = String::from_utf8_lossy(&bytes);
        let at = s.find("/lib").expect("an interpreter path");
        s[at..].split('\0').next().unwrap().to_owned()
    };
    let rel = interp.trim_start_matches('/');
    let bs = w.files("bs", &[("var/runtime/bootstrap", &bytes, 0o755)]);
    // The loader for the other architecture: refused, naming it.
    let wrong = w.files("wrong", &[(rel, &stub_elf(other, ET_DYN), 0o755)]);
    let img = w.build(
        "wrong-img",
        arch,
        &[(&wrong, "/"), (&bs, "/")],
        &["--entrypoint", "/var/runtime/bootstrap"],
    );
    let (report, out) = w.check(&img);
    assert_refused(&report, &out, "L012", Some("/var/runtime/bootstrap"));
    assert!(message_of(&report, "L012").contains(&interp), "{report}");
    // The right loader: it starts, but libc is missing: a warning naming it.
    let right = w.files("right", &[(rel, &stub_elf(ours, ET_DYN), 0o755)]);
    let img = w.build(
        "right-img",
        arch,
        &[(&right, "/"), (&bs, "/")],
        &["--entrypoint", "/var/runtime/bootstrap"],
    );
    let (report, out) = w.check(&img);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        findings(&report),
        [(
            "L013".to_owned(),
            "warning".to_owned(),
            Some("/var/runtime/bootstrap".to_owned())
        )],
        "{report}"
    );
    assert!(
        message_of(&report, "L013").contains("libc.so.6"),
        "{report}"
    );
    // With libc in /var/task/lib, nothing to say.
    let libc = w.files("libc", &[("lib/libc.so.6", &stub_elf(ours, ET_DYN), 0o755)]);
    let img = w.build(
        "full-img",
        arch,
        &[(&right, "/"), (&bs, "/"), (&libc, "/var/task")],
        &["--entrypoint", "/var/runtime/bootstrap"],
    );
    let (report, out) = w.check(&img);
    assert_clean(&report, &out);
}

/// busybox-static (no PT_INTERP) starts anywhere: no finding.
#[test]
fn a_static_bootstrap_needs_no_loader() {
    let w = Work::new();
    let busybox = fs::read("/bin/busybox").expect("busybox-static at /bin/busybox");
    let src = w.files("bs", &[("bootstrap", &busybox, 0o755)]);
    let img = w.build(
        "img",
        host_arch(),
        &[(&src, "/var/runtime")],
        &["--entrypoint", "/var/runtime/bootstrap"],
    );
    let (report, out) = w.check(&img);
    assert_clean(&report, &out);
}

// ---------------------------------------------------------------------------------------------
// L014, L015: handlers
// ---------------------------------------------------------------------------------------------

#[test]
fn l014_handlers_that_do_and_do_not_resolve() {
    let w = Work::new();
    let node = w.files(
        "node-rt",
        &[("bin/node", &stub_elf(EM_X86_64, ET_EXEC), 0o755)],
    );
    let code = w.files(
        "node-src",
        &[(
            "index.mjs",
            b"export const handler = async () => 1;\n",
            0o644,
        )],
    );
    let layers: [(&Path, &str); 2] = [(&node, "/var/lang"), (&code, "/var/task")];
    let cases = [("index.handler", None), ("nope.handler", Some("nope.js"))];
    for (h, missing) in cases {
        let img = w.build(
            &format!("node-{}", h.replace('.', "-")),
            "amd64",
            &layers,
            &["--entrypoint", "/lambda-entrypoint.sh", "--cmd", h],
        );
        let (report, out) = w.check(&img);
        match missing {
            None => assert_clean(&report, &out),
            Some(file) => {
                assert_refused(&report, &out, "L014", None);
                let m = message_of(&report, "L014");
                assert!(
                    m.contains(h) && m.contains(file) && m.contains("ImportModuleError"),
                    "{m}"
                );
            }
        }
    }
    // Python: a dotted module resolves; a missing one does not.
    let rt = python_runtime(&w, "amd64");
    let code = w.files(
        "py-src",
        &[("pkg/mod.py", b"def handler(e, c): pass\n", 0o644)],
    );
    for (h, ok) in [
        ("pkg.mod.handler", true),
        ("pkg/mod.handler", true),
        ("app.handler", false),
    ] {
        let img = w.build(
            &format!("py-{}", h.replace(['.', '/'], "-")),
            "amd64",
            &[(&rt, "/var/lang"), (&code, "/var/task")],
            &["--entrypoint", "/lambda-entrypoint.sh", "--cmd", h],
        );
        let (report, out) = w.check(&img);
        if ok {
            assert_clean(&report, &out);
        } else {
            assert_refused(&report, &out, "L014", None);
            assert!(message_of(&report, "L014").contains("app.py"), "{report}");
        }
    }
}

#[test]
fn l015_a_handler_for_an_unknown_runtime_is_a_warning() {
    let w = Work::new();
    let code = w.files("src", &[("app.py", b"def handler(e, c): pass\n", 0o644)]);
    let img = w.build(
        "img",
        "amd64",
        &[(&code, "/var/task")],
        &[
            "--entrypoint",
            "/lambda-entrypoint.sh",
            "--cmd",
            "app.handler",
        ],
    );
    let (report, out) = w.check(&img);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        findings(&report),
        [("L015".to_owned(), "warning".to_owned(), None)],
        "{report}"
    );
    assert!(message_of(&report, "L015").contains("runtime"), "{report}");
}

// ---------------------------------------------------------------------------------------------
// L016 to L019: budgets and shapes
// ---------------------------------------------------------------------------------------------

/// A gzip layer of `tar` appended to the image.
fn append_layer(layout: &Path, manifest: &mut Value, config: &mut Value, tar: &[u8]) {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(tar).unwrap();
    let blob = gz.finish().unwrap();
    let d = sha256_digest(&blob);
    fs::write(blob_path(layout, &d), &blob).unwrap();
    manifest["layers"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": d,
            "size": blob.len(),
        }));
    config["rootfs"]["diff_ids"]
        .as_array_mut()
        .unwrap()
        .push(sha256_digest(tar).into());
}

#[test]
fn l016_to_l019_budgets_and_shapes_warn() {
    let w = Work::new();
    let src = w.files("src", &[("bootstrap", b"#!/bin/sh\nexec true\n", 0o755)]);
    let img = w.build(
        "img",
        "amd64",
        &[(&src, "/var/task")],
        &["--cmd", "/var/task/bootstrap"],
    );
    let layout = w.path().join("img");
    // A layer with a hard link and an entry whose parent directory is nowhere.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_size(3);
    h.set_mode(0o644);
    b.append_data(&mut h, "var/task/data.txt", &b"abc"[..])
        .unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Link);
    h.set_size(0);
    h.set_mode(0o644);
    b.append_link(&mut h, "var/task/same.txt", "var/task/data.txt")
        .unwrap();
    // A hard link to a lower layer's file: what Lambda is reported to refuse (the one above,
    // within its layer, is plain tar).
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Link);
    h.set_size(0);
    h.set_mode(0o755);
    b.append_link(&mut h, "var/task/again", "var/task/bootstrap")
        .unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_size(2);
    h.set_mode(0o644);
    b.append_data(&mut h, "srv/orphan/file.txt", &b"hi"[..])
        .unwrap();
    let tar = b.into_inner().unwrap();
    rewrite_image(&layout, |dir, m, c| {
        append_layer(dir, m, c, &tar);
        // Annotations that push the manifest over 25,400 bytes.
        m["annotations"] = serde_json::json!({ "example.padding": "x".repeat(26_000) });
    });
    let (report, out) = w.check(&img);
    assert!(out.status.success(), "warnings only:\n{}", describe(&out));
    let got = findings(&report);
    for (rule, path) in [
        ("L016", None),
        ("L018", Some("/var/task/again")),
        ("L019", Some("/srv/orphan/file.txt")),
    ] {
        let want = (
            rule.to_owned(),
            "warning".to_owned(),
            path.map(str::to_owned),
        );
        assert!(got.contains(&want), "no {want:?}: {report}");
    }
    assert!(message_of(&report, "L016").contains("25400"), "{report}");
    assert!(
        message_of(&report, "L019").contains("MissingParentDirectory"),
        "{report}"
    );
    let m = message_of(&report, "L018");
    assert!(m.contains("UnsupportedImageLayerDetected"), "{m}");
    assert!(
        m.starts_with("1 hard link") && !m.contains("same.txt"),
        "{m}"
    );
}

// ---------------------------------------------------------------------------------------------
// Fail fast
// ---------------------------------------------------------------------------------------------

/// Every path under `dir` whose name is `name` (a registry's `_uploads` directories).
fn find_named(dir: &Path, name: &str, out: &mut Vec<PathBuf>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        if e.file_name() == name {
            out.push(p.clone());
        }
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            find_named(&p, name, out);
        }
    }
}

/// A build to a registry whose config alone fails the gate (no ENTRYPOINT and no CMD on
/// scratch) is refused before its 200 MB layer is read: the refusal comes with no layer
/// progress line, no upload session was opened, no blob reached the registry and no layer
/// was cached. (The order of events is asserted, not a time.)
#[test]
fn a_config_error_is_reported_before_any_layer_is_built() {
    let reg = Registry::plain();
    let w = Work::new();
    let big = w.path().join("big");
    fs::create_dir_all(&big).unwrap();
    let f = fs::File::create(big.join("model.bin")).unwrap();
    f.set_len(200 << 20).unwrap();
    drop(f);
    let layer = format!("{}:/var/task", path_str(&big));
    let dest = reg.reference("fn:early");
    let out = w.run(&[
        "build",
        "--base",
        "scratch",
        "--platform",
        "linux/amd64",
        "--layer",
        &layer,
        "--to",
        &dest,
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    let err = stderr_of(&out);
    assert!(
        err.contains("L005") && err.contains("nothing was pushed"),
        "{err}"
    );
    assert!(
        !err.lines()
            .any(|l| l.contains("layer sha256:") || l.contains("model.bin")),
        "a layer was built before the refusal:\n{err}"
    );
    assert_eq!(reg.blob_count(), 0, "{err}");
    let mut uploads = Vec::new();
    find_named(&reg.repo_dir("fn"), "_uploads", &mut uploads);
    for u in &uploads {
        let n = fs::read_dir(u).map(|d| d.count()).unwrap_or(0);
        assert_eq!(n, 0, "an upload session was opened: {}", u.display());
    }
    let mut cached = Vec::new();
    find_named(&w.path().join("cache"), "layers", &mut cached);
    find_named(&w.path().join("cache"), "sha256", &mut cached);
    for c in &cached {
        let n = fs::read_dir(c).map(|d| d.count()).unwrap_or(0);
        assert_eq!(n, 0, "a layer was cached: {}", c.display());
    }
    // With a CMD the same build gets past the early gate and pushes.
    let out = w.run(&[
        "build",
        "-q",
        "--base",
        "scratch",
        "--platform",
        "linux/amd64",
        "--layer",
        &layer,
        "--cmd",
        "/var/task/model.bin",
        "--to",
        &dest,
        "--no-lambda-check",
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(reg.blob_count() > 0);
}

// ---------------------------------------------------------------------------------------------
// One gate for zips
// ---------------------------------------------------------------------------------------------

/// `lamina zip -f SPEC ARGS`: the run (and the zip's path).
fn zip(w: &Work, spec: &str, extra: &[&str]) -> (Output, PathBuf) {
    let spec_path = w.path().join("lamina.toml");
    fs::write(&spec_path, spec).unwrap();
    let to = w.path().join("function.zip");
    let mut a = vec!["zip", "-f", path_str(&spec_path), "--to", path_str(&to)];
    a.extend_from_slice(extra);
    (w.run(&a), to)
}

#[test]
fn zip_an_x86_bootstrap_for_arm64_is_refused_and_nothing_written() {
    let w = Work::new();
    w.files(
        "src",
        &[("bootstrap", &stub_elf(EM_X86_64, ET_EXEC), 0o755)],
    );
    let spec = "platform = \"linux/arm64\"\n[[layer]]\nsource = \"src\"\ndest = \"/var/task\"\n";
    let (out, to) = zip(&w, spec, &[]);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("error L007 /var/task/bootstrap: ") && text.contains("x86-64"),
        "the same lines as `lamina check`: {text}"
    );
    let err = stderr_of(&out);
    assert!(
        err.contains("nothing was written") && err.contains("linux/arm64"),
        "{err}"
    );
    assert!(!to.exists(), "a refused zip is not written");
    // --json: the report, with the rule id and the path.
    let (out, _) = zip(&w, spec, &["--json"]);
    assert_eq!(out.status.code(), Some(3));
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(report["ok"], false);
    assert_eq!(report["findings"][0]["rule"], "L007");
    assert_eq!(report["findings"][0]["path"], "/var/task/bootstrap");
    // For linux/amd64 it passes; --no-lambda-check writes the arm64 one anyway.
    let ok = "platform = \"linux/amd64\"\n[[layer]]\nsource = \"src\"\ndest = \"/var/task\"\n";
    let (out, to) = zip(&w, ok, &[]);
    assert!(out.status.success() && to.exists(), "{}", describe(&out));
    fs::remove_file(&to).unwrap();
    let (out, to) = zip(&w, spec, &["--no-lambda-check"]);
    assert!(out.status.success() && to.exists(), "{}", describe(&out));
}

#[test]
fn zip_a_python_function_runs_the_native_code_and_handler_rules() {
    let w = Work::new();
    x86_py311_packages(&w);
    let spec = |platform: &str, handler: &str| {
        format!(
            "platform = \"{platform}\"\n[function]\nruntime = \"python3.12\"\nhandler = \"{handler}\"\ncode = \"x86-src\"\n"
        )
    };
    // arm64, python3.12: the x86 cpython-311 extension is refused, with pip's command.
    let (out, to) = zip(&w, &spec("linux/arm64", "app.handler"), &["--json"]);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    assert!(!to.exists());
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let so = "/var/task/charset_normalizer/md.cpython-311-x86_64-linux-gnu.so";
    assert!(
        findings(&report).contains(&("L009".into(), "error".into(), Some(so.into()))),
        "{report}"
    );
    assert!(
        findings(&report).contains(&("L010".into(), "error".into(), Some(so.into()))),
        "{report}"
    );
    assert!(
        message_of(&report, "L009").contains(
            "pip install --platform manylinux2014_aarch64 --only-binary=:all: --python-version 3.12"
        ),
        "{report}"
    );
    // A handler whose module is not in the package.
    let (out, _) = zip(&w, &spec("linux/arm64", "nope.handler"), &["--json"]);
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert!(message_of(&report, "L014").contains("nope.py"), "{report}");
}

#[test]
fn zip_checks_its_lambda_layers_too() {
    let w = Work::new();
    w.files(
        "src",
        &[(
            "index.mjs",
            b"export const handler = async () => 1;\n",
            0o644,
        )],
    );
    let addon = stub_elf(EM_X86_64, ET_DYN);
    let layer = w.path().join("sharp-layer.zip");
    write_zip(
        &layer,
        &[ZipItem::File(
            "nodejs/node_modules/sharp/build/Release/sharp.node",
            0o755,
            &addon,
        )],
    );
    let spec = "platform = \"linux/arm64\"\n[function]\nruntime = \"nodejs20.x\"\nhandler = \"index.handler\"\ncode = \"src\"\n";
    let (out, to) = zip(&w, spec, &["--with-layer", path_str(&layer), "--json"]);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    assert!(!to.exists());
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(
        findings(&report),
        [(
            "L011".to_owned(),
            "error".to_owned(),
            Some("/opt/nodejs/node_modules/sharp/build/Release/sharp.node".to_owned())
        )],
        "{report}"
    );
    assert!(message_of(&report, "L011").contains("npm install --cpu=arm64 --os=linux"));
    // Without the layer, the function alone passes (and its handler resolves).
    let (out, to) = zip(&w, spec, &[]);
    assert!(out.status.success() && to.exists(), "{}", describe(&out));
}

/// A Lambda layer zip (`--lambda-layer`): its files under /opt are judged (here an x86
/// extension in `python/lib/python3.12/site-packages` for an arm64 layer); it needs no
/// handler and no bootstrap.
#[test]
fn zip_a_lambda_layer_is_judged_under_opt() {
    let w = Work::new();
    let so = stub_elf(EM_X86_64, ET_DYN);
    let site = "layer/python/lib/python3.12/site-packages";
    w.files(
        site,
        &[
            ("yaml/_yaml.cpython-312-x86_64-linux-gnu.so", &so, 0o755),
            ("yaml/__init__.py", b"", 0o644),
            (
                "PyYAML-6.0.1.dist-info/top_level.txt",
                b"_yaml\nyaml\n",
                0o644,
            ),
            (
                "PyYAML-6.0.1.dist-info/WHEEL",
                b"Tag: cp312-cp312-manylinux_2_17_x86_64\n",
                0o644,
            ),
        ],
    );
    let spec = "platform = \"linux/arm64\"\n[[layer]]\nsource = \"layer\"\ndest = \"/opt\"\n";
    let (out, to) = zip(&w, spec, &["--lambda-layer", "--json"]);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    assert!(!to.exists());
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let so_path =
        "/opt/python/lib/python3.12/site-packages/yaml/_yaml.cpython-312-x86_64-linux-gnu.so";
    assert!(
        findings(&report).contains(&("L009".into(), "error".into(), Some(so_path.into()))),
        "{report}"
    );
    // Named by its distribution (top_level.txt maps yaml to PyYAML), installed where it was.
    let m = message_of(&report, "L009");
    assert!(
        m.contains("PyYAML") && m.contains("/opt/python/lib/python3.12/site-packages"),
        "{m}"
    );
    assert!(
        !findings(&report)
            .iter()
            .any(|f| f.0 == "L007" || f.0 == "L014"),
        "{report}"
    );
}

/// A zip's dynamically linked bootstrap: the host's /bin/true names Amazon Linux's glibc
/// loader and passes; the same file naming Alpine's musl loader cannot start (L012).
#[test]
fn zip_a_bootstrap_must_name_the_system_loader() {
    let w = Work::new();
    let arch = host_arch();
    let bytes = host_true();
    w.files("src", &[("bootstrap", &bytes, 0o755)]);
    let spec =
        format!("platform = \"linux/{arch}\"\n[[layer]]\nsource = \"src\"\ndest = \"/var/task\"\n");
    let (out, to) = zip(&w, &spec, &[]);
    assert!(out.status.success() && to.exists(), "{}", describe(&out));
    fs::remove_file(&to).unwrap();
    // Rewrite the interpreter path in place (same length, NUL-padded).
    let at = bytes
        .windows(4)
        .position(|w| w == b"/lib")
        .expect("an interpreter path");
    let old_len = bytes[at..].iter().position(|&b| b == 0).unwrap();
    let musl = b"/lib/ld-musl.so.1";
    assert!(musl.len() <= old_len);
    let mut patched = bytes.clone();
    patched[at..at + old_len].fill(0);
    patched[at..at + musl.len()].copy_from_slice(musl);
    w.files("src", &[("bootstrap", &patched, 0o755)]);
    let (out, to) = zip(&w, &spec, &[]);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    assert!(!to.exists());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("error L012 /var/task/bootstrap: ") && text.contains("/lib/ld-musl.so.1"),
        "{text}"
    );
}
