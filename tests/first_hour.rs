//! Tracker issue 13, "the first hour": what a new user runs first. lamina never reads its own
//! outputs (repeated `lamina zip` in a project whose code is `.`), a build with nothing to
//! build is a usage error, and `--no-cache` refreshes the layer cache.

mod common;

use std::fs;
use std::path::Path;

use common::*;
use tempfile::TempDir;

/// A project holding `files` (name, contents), after `lamina init`.
fn project(files: &[(&str, &str)]) -> TempDir {
    let p = TempDir::new().unwrap();
    for (name, body) in files {
        fs::write(p.path().join(name), body).unwrap();
    }
    lamina_ok(&["init"], p.path(), &[]);
    p
}

const PYTHON: &[(&str, &str)] = &[("app.py", "def handler(event, context):\n    return 1\n")];
const NODE: &[(&str, &str)] = &[
    ("index.js", "exports.handler = async () => 1;\n"),
    (
        "package.json",
        "{\"name\": \"f\", \"version\": \"1.0.0\"}\n",
    ),
];

/// The entry names of a zip, as Python's `zipfile` reads them.
fn zip_names(zip: &Path) -> Vec<String> {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys, zipfile; print('\\n'.join(zipfile.ZipFile(sys.argv[1]).namelist()))",
        ])
        .arg(zip)
        .output()
        .expect("python3 is needed to read zips");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// `lamina zip` three times in a row: the same bytes and digest each time, and the zip never
/// holds itself (before, each run added the previous `function.zip`).
fn zip_three_times(files: &[(&str, &str)], code: &str) {
    let p = project(files);
    let zip = p.path().join("function.zip");
    let mut runs = Vec::new();
    for _ in 0..3 {
        let out = lamina_ok(&["zip"], p.path(), &[]);
        runs.push((parse_digest(&out), fs::read(&zip).unwrap()));
    }
    assert!(
        runs.windows(2).all(|w| w[0] == w[1]),
        "repeated zips differ: {:?}",
        runs.iter().map(|r| (&r.0, r.1.len())).collect::<Vec<_>>()
    );
    assert_eq!(runs[0].0, sha256_digest(&runs[0].1), "printed digest");
    let names = zip_names(&zip);
    assert!(names.contains(&code.to_owned()), "{names:?}");
    assert!(
        !names.iter().any(|n| n.ends_with(".zip")),
        "the zip holds a zip: {names:?}"
    );
}

#[test]
fn repeated_zip_in_a_python_project_is_identical_and_never_holds_itself() {
    zip_three_times(PYTHON, "app.py");
}

#[test]
fn repeated_zip_in_a_node_project_is_identical_and_never_holds_itself() {
    zip_three_times(NODE, "index.js");
}

#[test]
fn zip_to_a_custom_destination_inside_the_code_leaves_it_out() {
    let p = project(PYTHON);
    // Not lamina's yet: a user's file at the destination is still this command's output.
    fs::create_dir(p.path().join("dist")).unwrap();
    fs::write(p.path().join("dist/pkg.zip"), "old").unwrap();
    let a = parse_digest(&lamina_ok(&["zip", "--to", "dist/pkg.zip"], p.path(), &[]));
    let b = parse_digest(&lamina_ok(&["zip", "--to", "dist/pkg.zip"], p.path(), &[]));
    assert_eq!(a, b);
    assert_eq!(
        zip_names(&p.path().join("dist/pkg.zip")),
        ["app.py", "dist/"]
    );
}

#[test]
fn build_after_zip_ships_no_function_zip() {
    let p = project(PYTHON);
    lamina_ok(&["zip"], p.path(), &[]);
    lamina_ok(&["zip"], p.path(), &[]);
    let out = TempDir::new().unwrap();
    let image = oci_ref(out.path(), "latest");
    lamina_ok(
        &["build", "--base", "scratch", "--to", &image],
        p.path(),
        &[],
    );
    let (manifest, _, _) = read_layout(out.path(), "latest");
    let layers = layer_digests(&manifest);
    let paths: Vec<String> = (0..layers.len())
        .flat_map(|i| tar_entries(&layer_tar(out.path(), &manifest, i)))
        .map(|e| e.path_str())
        .collect();
    assert!(
        paths.iter().any(|p| p.ends_with("var/task/app.py")),
        "{paths:?}"
    );
    assert!(
        !paths.iter().any(|p| p.ends_with(".zip")),
        "a zip lamina wrote went into the image: {paths:?}"
    );
}

#[test]
fn build_with_no_spec_and_no_flags_is_a_usage_error_naming_what_is_missing() {
    let empty = TempDir::new().unwrap();
    let out = lamina(&["build"], empty.path(), &[]);
    assert_no_panic(&out);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let err = stderr_of(&out);
    for want in [
        "nothing to build",
        "lamina.toml",
        "--layer",
        "--base",
        "lamina init",
    ] {
        assert!(err.contains(want), "stderr should mention {want:?}:\n{err}");
    }
    assert!(
        fs::read_dir(empty.path()).unwrap().next().is_none(),
        "nothing is written"
    );
}

/// Every file under `dir`, with its size.
fn files_under(dir: &Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            } else {
                out.push((e.path().display().to_string(), m.len()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn no_cache_rebuilds_and_refreshes_the_layer_cache() {
    let p = project(PYTHON);
    let cache = TempDir::new().unwrap();
    let env = [("LAMINA_CACHE_DIR", cache.path().to_str().unwrap())];
    let build = |extra: &[&str]| {
        let out = TempDir::new().unwrap();
        let image = oci_ref(out.path(), "latest");
        let mut args = vec!["build", "--base", "scratch", "--to", &image];
        args.extend_from_slice(extra);
        let digest = parse_digest(&lamina_ok(&args, p.path(), &env));
        (digest, out)
    };
    let (first, _o1) = build(&["--no-cache"]);
    let after_no_cache = files_under(cache.path());
    assert!(
        !after_no_cache.is_empty(),
        "--no-cache left the layer cache empty"
    );
    let (second, o2) = build(&[]);
    assert_eq!(first, second, "an unchanged rebuild gives the same image");
    assert_eq!(
        files_under(cache.path()),
        after_no_cache,
        "the unchanged rebuild took its layer from the cache (wrote no new record)"
    );
    // A cache hit links the cached blob: the image's layer is the cache's file.
    let (manifest, _, _) = read_layout(o2.path(), "latest");
    use std::os::unix::fs::MetadataExt;
    let layer = blob_path(o2.path(), &layer_digests(&manifest)[0]);
    assert!(
        fs::metadata(&layer).unwrap().nlink() > 1,
        "the layer was built again, not linked from the cache"
    );
}
