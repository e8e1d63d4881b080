//! `[function]` (runtime, handler, code, dependencies, Lambda layers, bootstrap), the layer
//! cache, and `lamina init`.

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::*;
use tempfile::TempDir;

/// A Python function directory with pip-installed dependencies beside the handler, a Lambda
/// layer zip, and a spec using the fixture base (no network).
fn python_project(dir: &Path) {
    let code = dir.join("src");
    fs::create_dir_all(code.join("requests")).unwrap();
    fs::create_dir_all(code.join("requests-2.31.0.dist-info")).unwrap();
    fs::write(code.join("requests/__init__.py"), "VERSION = '2.31.0'\n").unwrap();
    fs::write(
        code.join("requests-2.31.0.dist-info/RECORD"),
        "requests/__init__.py,sha256=abc,19\nrequests-2.31.0.dist-info/RECORD,,\n",
    )
    .unwrap();
    fs::write(
        code.join("app.py"),
        "def handler(event, context):\n    return 'hi'\n",
    )
    .unwrap();
    let zip_path = dir.join("ext.zip");
    let mut z = zip::ZipWriter::new(fs::File::create(&zip_path).unwrap());
    let o = zip::write::SimpleFileOptions::default().unix_permissions(0o755);
    z.start_file("bin/ext-tool", o).unwrap();
    z.write_all(b"#!/bin/sh\necho ext\n").unwrap();
    z.finish().unwrap();
    fs::write(dir.join("bootstrap"), "#!/bin/sh\nexit 0\n").unwrap();
    fs::set_permissions(dir.join("bootstrap"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(
        dir.join("lamina.toml"),
        format!(
            r#"base = "{}"
platform = "linux/amd64"

[function]
runtime = "python3.12"
handler = "app.handler"
code = "src"
layers = ["ext.zip"]
bootstrap = "bootstrap"
env = {{ STAGE = "test", LOG = "info" }}

[config]
env = {{ LOG = "debug" }}
"#,
            fixture_base_ref()
        ),
    )
    .unwrap();
}

fn config_env(config: &serde_json::Value) -> Vec<String> {
    string_array(&config["config"]["Env"])
}

#[test]
fn function_section_becomes_layers_cmd_and_env() {
    let t = TempDir::new().unwrap();
    python_project(t.path());
    let out = t.path().join("out");
    lamina_ok(&["build", "--to", &oci_ref(&out, "latest")], t.path(), &[]);
    let (manifest, _, config) = read_layout(&out, "latest");
    // base (2) + Lambda layer + dependencies + code + bootstrap
    assert_eq!(layer_digests(&manifest).len(), 6, "{manifest}");
    assert_eq!(string_array(&config["config"]["Cmd"]), ["app.handler"]);
    let env = config_env(&config);
    assert!(env.contains(&"STAGE=test".to_owned()), "{env:?}");
    assert!(
        env.contains(&"LOG=debug".to_owned()),
        "[config] env wins: {env:?}"
    );
    assert!(
        env.contains(&"LAMBDA_TASK_ROOT=/var/task".to_owned()),
        "base env kept: {env:?}"
    );

    let u = umoci_unpack(&out, "latest");
    let root = &u.rootfs;
    assert_eq!(
        fs::read(root.join("var/task/requests/__init__.py")).unwrap(),
        b"VERSION = '2.31.0'\n"
    );
    assert!(root.join("var/task/app.py").is_file());
    assert!(root.join("opt/bin/ext-tool").is_file());
    let boot = fs::metadata(root.join("var/runtime/bootstrap")).unwrap();
    assert_eq!(
        boot.permissions().mode() & 0o777,
        0o755,
        "bootstrap is executable"
    );

    // The dependencies and the code are in different layers: the code layer holds app.py only.
    let digests = layer_digests(&manifest);
    let names = |d: &str| -> Vec<String> {
        let blob = read_blob(&out, d);
        let gz = flate2::read::GzDecoder::new(&blob[..]);
        let mut a = tar::Archive::new(gz);
        a.entries()
            .unwrap()
            .map(|e| String::from_utf8_lossy(&e.unwrap().path_bytes()).into_owned())
            .filter(|n| !n.ends_with('/'))
            .collect()
    };
    assert_eq!(
        names(&digests[3]),
        [
            "var/task/requests-2.31.0.dist-info/RECORD",
            "var/task/requests/__init__.py"
        ]
    );
    assert_eq!(names(&digests[4]), ["var/task/app.py"]);
}

#[test]
fn explicit_base_and_layers_win_over_the_runtime() {
    let t = TempDir::new().unwrap();
    python_project(t.path());
    fs::create_dir_all(t.path().join("extra")).unwrap();
    fs::write(t.path().join("extra/x.txt"), "x").unwrap();
    let out = t.path().join("out");
    // Without the explicit base the runtime would pull public.ecr.aws (no network here):
    // the fixture base in lamina.toml wins, and a flag layer goes on top.
    lamina_ok(
        &[
            "build",
            "--layer",
            "extra:/var/task/extra",
            "--cmd",
            "other.handler",
            "--to",
            &oci_ref(&out, "latest"),
        ],
        t.path(),
        &[],
    );
    let (manifest, _, config) = read_layout(&out, "latest");
    let layers = layer_digests(&manifest);
    assert_eq!(layers.len(), 7);
    assert_eq!(string_array(&config["config"]["Cmd"]), ["other.handler"]);
    // The base is the fixture's amd64 image (from lamina.toml), its layers first and unchanged.
    let (base_manifest, _, _) = base_image("amd64");
    let base_layers = layer_digests(&base_manifest);
    assert_eq!(layers[..base_layers.len()], base_layers[..]);
    // The --layer flag's directory is the top layer, at its destination, with its bytes.
    let top = tar_entries(&layer_tar(&out, &manifest, layers.len() - 1));
    let x = top
        .iter()
        .find(|e| e.path == b"var/task/extra/x.txt")
        .unwrap_or_else(|| panic!("no var/task/extra/x.txt in the top layer"));
    assert_eq!(x.data, b"x");
}

#[test]
fn unknown_runtime_names_the_field() {
    let t = TempDir::new().unwrap();
    fs::write(
        t.path().join("lamina.toml"),
        "[function]\nruntime = \"cobol1\"\n",
    )
    .unwrap();
    let out = lamina(&["build"], t.path(), &[]);
    assert!(!out.status.success());
    let err = stderr_of(&out);
    assert!(
        err.contains("cobol1") && err.contains("lamina.toml") && err.contains("python3.12"),
        "{err}"
    );
}

#[test]
fn unchanged_layers_come_from_the_cache_and_match_a_fresh_build() {
    let t = TempDir::new().unwrap();
    python_project(t.path());
    let cache = t.path().join("cache");
    let env = [("LAMINA_CACHE_DIR", cache.to_str().unwrap())];
    let one = t.path().join("one");
    lamina_ok(&["build", "--to", &oci_ref(&one, "latest")], t.path(), &env);
    let (m1, _, _) = read_layout(&one, "latest");

    // Touch one handler file: only the code layer changes.
    fs::write(
        t.path().join("src/app.py"),
        "def handler(event, context):\n    return 'bye'\n",
    )
    .unwrap();
    let two = t.path().join("two");
    lamina_ok(&["build", "--to", &oci_ref(&two, "latest")], t.path(), &env);
    let (m2, d2, _) = read_layout(&two, "latest");
    let (l1, l2) = (layer_digests(&m1), layer_digests(&m2));
    assert_eq!(
        l1[..4],
        l2[..4],
        "base, Lambda layer and dependencies are unchanged"
    );
    assert_ne!(l1[4], l2[4], "the code layer changed");
    assert_eq!(l1[5], l2[5]);

    // The unchanged layers were taken from the cache, not rebuilt: the same file (inode).
    let ino = |p: std::path::PathBuf| fs::metadata(p).unwrap().ino();
    let cached = cache.join("blobs/sha256").join(hex_of(&l2[3]));
    assert_eq!(
        ino(blob_path(&two, &l2[3])),
        ino(cached),
        "dependencies layer linked from the cache"
    );

    // And the cache changes nothing: a build without it gives the same image.
    let fresh = t.path().join("fresh");
    lamina_ok(
        &["build", "--no-cache", "--to", &oci_ref(&fresh, "latest")],
        t.path(),
        &env,
    );
    let (_, d3, _) = read_layout(&fresh, "latest");
    assert_eq!(d2, d3);
    verify_layout_blobs(&two);
}

#[test]
fn a_cached_layer_follows_option_changes() {
    let t = TempDir::new().unwrap();
    python_project(t.path());
    let cache = t.path().join("cache");
    let env = [("LAMINA_CACHE_DIR", cache.to_str().unwrap())];
    let a = t.path().join("a");
    lamina_ok(&["build", "--to", &oci_ref(&a, "latest")], t.path(), &env);
    let b = t.path().join("b");
    lamina_ok(
        &[
            "build",
            "--timestamp",
            "1700000000",
            "--to",
            &oci_ref(&b, "latest"),
        ],
        t.path(),
        &env,
    );
    let c = t.path().join("c");
    lamina_ok(
        &[
            "build",
            "--compression-level",
            "1",
            "--to",
            &oci_ref(&c, "latest"),
        ],
        t.path(),
        &env,
    );
    let (ma, _, ca) = read_layout(&a, "latest");
    let (mb, _, cb) = read_layout(&b, "latest");
    let (mc, _, cc) = read_layout(&c, "latest");
    assert_ne!(
        layer_digests(&ma)[4],
        layer_digests(&mb)[4],
        "mtimes are part of the key"
    );
    assert_ne!(
        layer_digests(&ma)[4],
        layer_digests(&mc)[4],
        "the level is part of the key"
    );
    // A fresh build with the same options agrees with the cached ones.
    let d = t.path().join("d");
    lamina_ok(
        &[
            "build",
            "--no-cache",
            "--timestamp",
            "1700000000",
            "--to",
            &oci_ref(&d, "latest"),
        ],
        t.path(),
        &env,
    );
    let (md, _, cd) = read_layout(&d, "latest");
    assert_eq!(layer_digests(&mb), layer_digests(&md));
    assert_eq!(diff_ids(&cb), diff_ids(&cd));
    assert_eq!(
        diff_ids(&cc),
        diff_ids(&ca),
        "level 1 changes bytes, not content"
    );
}

#[test]
fn init_writes_a_starter_spec_that_builds() {
    let t = TempDir::new().unwrap();
    fs::write(
        t.path().join("app.py"),
        "def handler(e, c):\n    return 1\n",
    )
    .unwrap();
    lamina_ok(&["init"], t.path(), &[]);
    let text = fs::read_to_string(t.path().join("lamina.toml")).unwrap();
    assert!(
        text.contains("runtime = \"python3.13\"") && text.contains("handler = \"app.handler\""),
        "{text}"
    );
    // It does not overwrite.
    let again = lamina(&["init", "--runtime", "nodejs22.x"], t.path(), &[]);
    assert!(!again.status.success());
    assert!(stderr_of(&again).contains("already exists"));
    assert_eq!(
        fs::read_to_string(t.path().join("lamina.toml")).unwrap(),
        text
    );
    lamina_ok(
        &["init", "--runtime", "provided.al2023", "--force"],
        t.path(),
        &[],
    );
    let text = fs::read_to_string(t.path().join("lamina.toml")).unwrap();
    assert!(
        text.contains("public.ecr.aws/lambda/provided:al2023"),
        "{text}"
    );
    // The starter builds once its base is reachable; here, point it at the fixture base.
    let out = t.path().join("img");
    fs::write(t.path().join("bootstrap"), "#!/bin/sh\n").unwrap();
    lamina_ok(
        &[
            "build",
            "--base",
            &fixture_base_ref(),
            "--to",
            &oci_ref(&out, "latest"),
        ],
        t.path(),
        &[],
    );
    let (_, _, config) = read_layout(&out, "latest");
    assert_eq!(string_array(&config["config"]["Cmd"]), ["function.handler"]);
    let u = umoci_unpack(&out, "latest");
    assert!(u.rootfs.join("var/task/app.py").is_file());
    assert!(
        !u.rootfs.join("var/task/lamina.toml").exists(),
        "the spec is excluded"
    );
    // The output and lamina's staging directory sit inside the code directory: never in a layer.
    let names: Vec<String> = fs::read_dir(u.rootfs.join("var/task"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n == "img" || n.starts_with(".lamina")),
        "{names:?}"
    );
}

#[test]
fn a_code_change_rebuilds_and_repushes_one_small_layer() {
    let reg = Registry::plain();
    let t = TempDir::new().unwrap();
    python_project(t.path());
    let cache = t.path().join("cache");
    let env = [("LAMINA_CACHE_DIR", cache.to_str().unwrap())];
    let dest = reg.reference("team/fn:v1");
    let fates = |out: &std::process::Output| -> Vec<(u64, String)> {
        blob_fates(&parse_json(out)).into_values().collect()
    };
    let first = lamina_ok(&["build", "--json", "--to", &dest], t.path(), &env);
    assert!(
        fates(&first).iter().all(|(_, f)| f == "pushed"),
        "{:?}",
        fates(&first)
    );

    fs::write(
        t.path().join("src/app.py"),
        "def handler(event, context):\n    return 2\n",
    )
    .unwrap();
    let second = lamina_ok(&["build", "--json", "--to", &dest], t.path(), &env);
    let f = fates(&second);
    let pushed: Vec<_> = f.iter().filter(|(_, f)| f == "pushed").collect();
    // The new code layer and the new config; everything else is already there.
    assert_eq!(pushed.len(), 2, "{f:?}");
    assert_eq!(
        f.iter().filter(|(_, f)| f == "skipped").count(),
        f.len() - 2,
        "{f:?}"
    );
    let v: serde_json::Value = serde_json::from_slice(&second.stdout).unwrap();
    assert_eq!(
        sha256_digest(&reg.raw_manifest("team/fn:v1")),
        v["digest"].as_str().unwrap(),
        "the registry serves the rebuilt image"
    );
}

#[test]
fn a_function_spec_zips_with_its_bootstrap_at_the_root() {
    let t = TempDir::new().unwrap();
    python_project(t.path());
    let zip = t.path().join("fn.zip");
    lamina_ok(&["zip", "--to", zip.to_str().unwrap()], t.path(), &[]);
    // Python's zipfile reads what lamina wrote: names and Unix modes.
    let listing = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys, zipfile\nfor i in zipfile.ZipFile(sys.argv[1]).infolist(): print(i.filename, oct(i.external_attr >> 16))",
            zip.to_str().unwrap(),
        ])
        .output()
        .expect("python3");
    assert!(listing.status.success(), "{}", describe(&listing));
    let text = String::from_utf8(listing.stdout).unwrap();
    assert!(text.contains("bootstrap 0o100755"), "{text}");
    assert!(text.contains("app.py 0o100644"), "{text}");
    assert!(text.contains("requests/__init__.py"), "{text}");
    assert!(
        !text.contains("ext-tool"),
        "Lambda layers are zips of their own: {text}"
    );
}

#[test]
fn a_cached_blob_rewritten_since_is_not_reused() {
    let t = TempDir::new().unwrap();
    python_project(t.path());
    let cache = t.path().join("cache");
    let env = [("LAMINA_CACHE_DIR", cache.to_str().unwrap())];
    let one = t.path().join("one");
    lamina_ok(&["build", "--to", &oci_ref(&one, "latest")], t.path(), &env);
    let (m1, d1, _) = read_layout(&one, "latest");
    // Damage the cached dependencies layer in place (same size, later mtime).
    let deps = &layer_digests(&m1)[3];
    let cached = cache.join("blobs/sha256").join(hex_of(deps));
    let bytes: Vec<u8> = fs::read(&cached)
        .unwrap()
        .iter()
        .map(|b| b ^ 0x55)
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(20));
    fs::remove_file(&cached).unwrap();
    fs::write(&cached, &bytes).unwrap();
    let two = t.path().join("two");
    lamina_ok(&["build", "--to", &oci_ref(&two, "latest")], t.path(), &env);
    let (_, d2, _) = read_layout(&two, "latest");
    assert_eq!(
        d1, d2,
        "the layer was rebuilt, not taken from the damaged cache"
    );
    verify_layout_blobs(&two);
}
