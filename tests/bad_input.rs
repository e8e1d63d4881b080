//! Bad input: every failure exits non-zero, names what is at fault, does not panic, and leaves the
//! destination exactly as it was (an existing layout unchanged, a new one not created, no
//! leftovers next to it).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;
use serde_json::Value;
use tempfile::TempDir;

fn assert_failed(out: &Output, expect: &[&str]) {
    assert!(
        !out.status.success(),
        "lamina should have failed:\n{}",
        describe(out)
    );
    assert_no_panic(out);
    let err = stderr_of(out);
    assert!(
        !err.trim().is_empty(),
        "no error message:\n{}",
        describe(out)
    );
    for e in expect {
        assert!(
            err.contains(e),
            "stderr should mention {e:?}:\n{}",
            describe(out)
        );
    }
}

/// Run `lamina build ARGS --to oci:DEST:latest` twice: into a layout that already holds a good
/// image (it must stay byte-identical) and into a fresh path (it must not be created). Neither
/// run may leave anything next to the destination.
fn assert_build_fails_cleanly(args: &[&str], cwd: &Path, expect: &[&str]) {
    let t = TempDir::new().unwrap();
    let dest = build_fixture(t.path(), "dest", &[], &[]).layout;
    let before = tree_snapshot(&dest);
    let listing = list_dir(t.path());

    let run = |dest: &Path| -> Output {
        let to = oci_ref(dest, "latest");
        let mut full: Vec<&str> = vec!["build"];
        full.extend_from_slice(args);
        full.extend_from_slice(&["--to", &to]);
        lamina(&full, cwd, &[])
    };

    let out = run(&dest);
    assert_failed(&out, expect);
    assert_eq!(tree_snapshot(&dest), before, "existing destination changed");
    assert_eq!(
        list_dir(t.path()),
        listing,
        "leftovers next to the destination"
    );

    let fresh = t.path().join("fresh");
    let out = run(&fresh);
    assert_failed(&out, expect);
    assert!(
        fs::symlink_metadata(&fresh).is_err(),
        "a failed build created {}",
        fresh.display()
    );
    assert_eq!(
        list_dir(t.path()),
        listing,
        "leftovers next to the destination"
    );
}

fn spec_arg() -> String {
    path_str(&fixture_spec()).to_owned()
}

#[test]
fn missing_source_directory() {
    let inputs = TempDir::new().unwrap();
    let missing = inputs.path().join("no-such-function-dir");
    let layer = format!("{}:/var/task", missing.display());
    assert_build_fails_cleanly(
        &["-f", &spec_arg(), "--layer", &layer],
        inputs.path(),
        &[path_str(&missing)],
    );
}

#[test]
fn missing_source_in_spec_names_the_path() {
    let inputs = TempDir::new().unwrap();
    let spec = inputs.path().join("lamina.toml");
    fs::write(
        &spec,
        format!(
            "base = \"{}\"\n\n[[layer]]\nsource = \"not-here\"\ndest = \"/var/task\"\n",
            fixture_base_ref()
        ),
    )
    .unwrap();
    assert_build_fails_cleanly(&["-f", path_str(&spec)], inputs.path(), &["not-here"]);
}

fn zip_layer(inputs: &Path, name: &str, items: &[ZipItem]) -> String {
    let p = inputs.join(name);
    write_zip(&p, items);
    format!("{}:/opt/z", p.display())
}

#[test]
fn zip_entry_escaping_with_dotdot() {
    let inputs = TempDir::new().unwrap();
    let layer = zip_layer(
        inputs.path(),
        "evil.zip",
        &[
            ZipItem::File("ok.txt", 0o644, b"ok\n"),
            ZipItem::File("../evil", 0o644, b"evil\n"),
        ],
    );
    assert_build_fails_cleanly(
        &["-f", &spec_arg(), "--layer", &layer],
        inputs.path(),
        &["../evil"],
    );
}

#[test]
fn zip_entry_with_absolute_path() {
    let inputs = TempDir::new().unwrap();
    let layer = zip_layer(
        inputs.path(),
        "abs.zip",
        &[
            ZipItem::File("ok.txt", 0o644, b"ok\n"),
            ZipItem::File("/etc/evil", 0o644, b"evil\n"),
        ],
    );
    assert_build_fails_cleanly(
        &["-f", &spec_arg(), "--layer", &layer],
        inputs.path(),
        &["etc/evil"],
    );
}

#[test]
fn zip_symlink_pointing_outside() {
    let inputs = TempDir::new().unwrap();
    let layer = zip_layer(
        inputs.path(),
        "link.zip",
        &[
            ZipItem::File("ok.txt", 0o644, b"ok\n"),
            ZipItem::Symlink("escape-link", "../../outside"),
        ],
    );
    assert_build_fails_cleanly(
        &["-f", &spec_arg(), "--layer", &layer],
        inputs.path(),
        &["escape-link"],
    );
}

#[test]
fn unknown_platform() {
    let inputs = TempDir::new().unwrap();
    assert_build_fails_cleanly(
        &["-f", &spec_arg(), "--platform", "linux/s390x"],
        inputs.path(),
        &["s390x"],
    );
}

#[test]
fn platform_missing_from_a_single_arch_base() {
    let inputs = TempDir::new().unwrap();
    let single = inputs.path().join("single");
    skopeo_ok(&["copy", &fixture_base_ref(), &oci_ref(&single, "latest")]);
    let base = oci_ref(&single, "latest");
    assert_build_fails_cleanly(
        &[
            "-f",
            &spec_arg(),
            "--base",
            &base,
            "--platform",
            "linux/arm64",
        ],
        inputs.path(),
        &["linux/amd64"],
    );
}

/// A copy of fixtures/base to break, and the amd64 (manifest, config).
fn base_copy(inputs: &Path) -> (PathBuf, Value) {
    let dir = inputs.join("base");
    copy_tree(&fixture_base(), &dir);
    let (manifest, _, _) = base_image("amd64");
    (dir, manifest)
}

#[test]
fn base_with_a_missing_layer_blob() {
    let inputs = TempDir::new().unwrap();
    let (dir, manifest) = base_copy(inputs.path());
    let layer = layer_digests(&manifest)[1].clone();
    fs::remove_file(blob_path(&dir, &layer)).unwrap();
    let base = oci_ref(&dir, "latest");
    assert_build_fails_cleanly(
        &["-f", &spec_arg(), "--base", &base],
        inputs.path(),
        &[hex_of(&layer)],
    );
}

#[test]
fn base_with_a_corrupted_layer_blob() {
    let inputs = TempDir::new().unwrap();
    let (dir, manifest) = base_copy(inputs.path());
    let layer = layer_digests(&manifest)[0].clone();
    let p = blob_path(&dir, &layer);
    let bytes: Vec<u8> = fs::read(&p).unwrap().iter().map(|b| b ^ 0xff).collect();
    chmod(&p, 0o644);
    fs::write(&p, &bytes).unwrap();
    let base = oci_ref(&dir, "latest");
    assert_build_fails_cleanly(
        &["-f", &spec_arg(), "--base", &base],
        inputs.path(),
        &[hex_of(&layer)],
    );
}

#[test]
fn base_with_a_truncated_layer_behind_consistent_descriptors() {
    let inputs = TempDir::new().unwrap();
    let dir = inputs.path().join("single");
    skopeo_ok(&["copy", &fixture_base_ref(), &oci_ref(&dir, "latest")]);
    let (mut manifest, manifest_digest, _) = read_layout(&dir, "latest");

    // Truncate the last layer, store it under its new digest, re-point the manifest and index.
    let old = layer_digests(&manifest).last().unwrap().clone();
    let bytes = fs::read(blob_path(&dir, &old)).unwrap();
    let truncated = bytes[..bytes.len() / 2].to_vec();
    let new = sha256_digest(&truncated);
    fs::write(blob_path(&dir, &new), &truncated).unwrap();
    fs::remove_file(blob_path(&dir, &old)).unwrap();
    let last = manifest["layers"]
        .as_array_mut()
        .unwrap()
        .last_mut()
        .unwrap();
    last["digest"] = Value::from(new.clone());
    last["size"] = Value::from(truncated.len() as u64);
    let manifest_bytes = serde_json::to_vec(&manifest).unwrap();
    let manifest_new = sha256_digest(&manifest_bytes);
    fs::write(blob_path(&dir, &manifest_new), &manifest_bytes).unwrap();
    fs::remove_file(blob_path(&dir, &manifest_digest)).unwrap();
    let mut index = read_index(&dir);
    for d in index["manifests"].as_array_mut().unwrap() {
        if d["digest"].as_str() == Some(manifest_digest.as_str()) {
            d["digest"] = Value::from(manifest_new.clone());
            d["size"] = Value::from(manifest_bytes.len() as u64);
        }
    }
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    // The descriptors are consistent; only the layer's content is broken.
    let (_, d, _) = read_layout(&dir, "latest");
    assert_eq!(d, manifest_new);

    let base = oci_ref(&dir, "latest");
    assert_build_fails_cleanly(
        &["-f", &spec_arg(), "--base", &base],
        inputs.path(),
        &[hex_of(&new)],
    );
}

#[test]
fn base_reference_that_does_not_exist() {
    let inputs = TempDir::new().unwrap();
    let missing = inputs.path().join("no-such-layout");
    let base = oci_ref(&missing, "latest");
    assert_build_fails_cleanly(
        &["-f", &spec_arg(), "--base", &base],
        inputs.path(),
        &["no-such-layout"],
    );
}

#[test]
fn base_tag_that_does_not_exist() {
    let inputs = TempDir::new().unwrap();
    let base = oci_ref(&fixture_base(), "no-such-tag");
    assert_build_fails_cleanly(
        &["-f", &spec_arg(), "--base", &base],
        inputs.path(),
        &["no-such-tag"],
    );
}

fn write_spec(inputs: &Path, name: &str, body: &str) -> PathBuf {
    let p = inputs.join(name);
    let text = format!("base = \"{}\"\n{body}", fixture_base_ref(),);
    fs::write(&p, text).unwrap();
    p
}

#[test]
fn spec_with_an_unknown_field() {
    let inputs = TempDir::new().unwrap();
    let spec = write_spec(
        inputs.path(),
        "broken-spec.toml",
        &format!(
            "\n[[layer]]\nsource = \"{}\"\ndest = \"/var/task\"\nsauce = \"x\"\n",
            fixture_function().display()
        ),
    );
    assert_build_fails_cleanly(
        &["-f", path_str(&spec)],
        inputs.path(),
        &["broken-spec.toml", "line", "sauce"],
    );
}

#[test]
fn spec_with_a_wrong_type() {
    let inputs = TempDir::new().unwrap();
    let spec = write_spec(inputs.path(), "typed-spec.toml", "platform = 5\n");
    assert_build_fails_cleanly(
        &["-f", path_str(&spec)],
        inputs.path(),
        &["typed-spec.toml", "platform"],
    );
}

#[test]
fn spec_with_a_bad_mode_string() {
    let inputs = TempDir::new().unwrap();
    let spec = write_spec(
        inputs.path(),
        "mode-spec.toml",
        &format!(
            "\n[[layer]]\nsource = \"{}\"\ndest = \"/var/task\"\nmode = \"rwx\"\n",
            fixture_function().display()
        ),
    );
    assert_build_fails_cleanly(
        &["-f", path_str(&spec)],
        inputs.path(),
        &["mode-spec.toml", "mode"],
    );
}

#[test]
fn spec_with_a_relative_dest() {
    let inputs = TempDir::new().unwrap();
    let spec = write_spec(
        inputs.path(),
        "dest-spec.toml",
        &format!(
            "\n[[layer]]\nsource = \"{}\"\ndest = \"var/task\"\n",
            fixture_function().display()
        ),
    );
    // README: dest is an absolute path in the image.
    assert_build_fails_cleanly(
        &["-f", path_str(&spec)],
        inputs.path(),
        &["dest-spec.toml", "dest", "var/task"],
    );
}

#[test]
fn missing_spec_file() {
    let inputs = TempDir::new().unwrap();
    let spec = inputs.path().join("nope.toml");
    assert_build_fails_cleanly(&["-f", path_str(&spec)], inputs.path(), &["nope.toml"]);
}

#[test]
fn compression_level_out_of_range() {
    let inputs = TempDir::new().unwrap();
    assert_build_fails_cleanly(
        &["-f", &spec_arg(), "--compression-level", "10"],
        inputs.path(),
        &["compression"],
    );
}

#[test]
fn bad_destination_reference() {
    let inputs = TempDir::new().unwrap();
    let spec = spec_arg();
    let out = lamina(
        &["build", "-f", &spec, "--to", "nosuchtransport:whatever"],
        inputs.path(),
        &[],
    );
    assert_failed(&out, &["nosuchtransport"]);
    assert!(list_dir(inputs.path()).is_empty(), "nothing written");
}

#[test]
fn existing_oci_archive_is_left_alone_on_failure() {
    let t = TempDir::new().unwrap();
    let archive = t.path().join("x.tar");
    let precious = b"not an image, but precious to someone\n".repeat(100);
    fs::write(&archive, &precious).unwrap();
    let listing = list_dir(t.path());
    let missing = t.path().join("missing-src");
    let layer = format!("{}:/var/task", missing.display());
    let spec = spec_arg();
    for to in [
        format!("oci-archive:{}", archive.display()),
        format!("docker-archive:{}", archive.display()),
    ] {
        let out = lamina(
            &["build", "-f", &spec, "--layer", &layer, "--to", &to],
            t.path(),
            &[],
        );
        assert_failed(&out, &["missing-src"]);
        assert_eq!(fs::read(&archive).unwrap(), precious, "{to} changed");
        assert_eq!(list_dir(t.path()), listing, "leftovers after {to}");
    }
}

#[test]
fn existing_good_oci_archive_is_left_alone_on_late_failure() {
    // The failure (a corrupted base layer) is only found while reading the base.
    let t = TempDir::new().unwrap();
    let archive = t.path().join("fn.tar");
    let to = format!("oci-archive:{}", archive.display());
    let spec = spec_arg();
    lamina_ok(&["build", "-f", &spec, "--to", &to], t.path(), &[]);
    let before = fs::read(&archive).unwrap();

    let inputs = TempDir::new().unwrap();
    let (dir, manifest) = base_copy(inputs.path());
    let layer = layer_digests(&manifest)[1].clone();
    let p = blob_path(&dir, &layer);
    let mut bytes = fs::read(&p).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    chmod(&p, 0o644);
    fs::write(&p, &bytes).unwrap();
    let listing = list_dir(t.path());
    let base = oci_ref(&dir, "latest");
    let out = lamina(
        &["build", "-f", &spec, "--base", &base, "--to", &to],
        t.path(),
        &[],
    );
    assert_failed(&out, &[hex_of(&layer)]);
    assert_eq!(fs::read(&archive).unwrap(), before, "archive changed");
    assert_eq!(list_dir(t.path()), listing, "leftovers next to the archive");
}

#[test]
fn inspect_of_a_missing_image() {
    let t = TempDir::new().unwrap();
    let missing = t.path().join("nothing-here");
    let out = lamina(&["inspect", &oci_ref(&missing, "latest")], t.path(), &[]);
    assert_failed(&out, &["nothing-here"]);
    let out = lamina(
        &["inspect", &fixture_base_ref(), "--platform", "linux/s390x"],
        t.path(),
        &[],
    );
    assert_failed(&out, &["s390x"]);
}

/// A base verified by an earlier build is not read again while its blobs are untouched, but a
/// blob rewritten since is checked again and refused.
#[test]
fn base_corrupted_after_a_good_build_is_still_refused() {
    let inputs = TempDir::new().unwrap();
    let (dir, manifest) = base_copy(inputs.path());
    let base = oci_ref(&dir, "latest");
    let good = inputs.path().join("good");
    lamina_ok(
        &[
            "build",
            "-f",
            &spec_arg(),
            "--base",
            &base,
            "--to",
            &oci_ref(&good, "latest"),
        ],
        inputs.path(),
        &[],
    );
    let layer = layer_digests(&manifest)[0].clone();
    let p = blob_path(&dir, &layer);
    let bytes: Vec<u8> = fs::read(&p).unwrap().iter().map(|b| b ^ 0xff).collect();
    chmod(&p, 0o644);
    // A later mtime, as any rewrite gives (the clock may not have ticked since the build).
    std::thread::sleep(std::time::Duration::from_millis(20));
    fs::write(&p, &bytes).unwrap();
    assert_build_fails_cleanly(
        &["-f", &spec_arg(), "--base", &base],
        inputs.path(),
        &[hex_of(&layer)],
    );
}
