//! Hardening of the local readers (issue 11): layouts and archives crafted by each test to lie
//! about sizes, hold named pipes, carry tampered layers or link to host files. Each run must
//! end quickly, fail with a message naming the file (or digest, or field) at fault, stay small
//! in memory and, for a push, upload nothing.

mod common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use tempfile::TempDir;

/// How long any run here may take: a hang (an open of a named pipe) is killed and fails.
const BOUND: Duration = Duration::from_secs(20);

/// Run the built `lamina` with `args`, killed (and the test failed) after [`BOUND`]; its own
/// cache directory `cache`.
fn run(args: &[&str], cache: &Path) -> Output {
    let mut cmd = Command::new(lamina_bin());
    cmd.args(args)
        .env_remove("SOURCE_DATE_EPOCH")
        .env("LAMINA_CACHE_DIR", cache);
    run_bounded(&mut cmd, None, BOUND)
}

/// `run`, which must fail (no panic) with every one of `expect` in its stderr.
fn fails(args: &[&str], cache: &Path, expect: &[&str]) -> String {
    let out = run(args, cache);
    assert!(!out.status.success(), "should fail:\n{}", describe(&out));
    assert_no_panic(&out);
    let err = stderr_of(&out);
    for e in expect {
        assert!(
            err.contains(e),
            "stderr should name {e:?}:\n{}",
            describe(&out)
        );
    }
    err
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// A tar of `(path, content, mode)` regular files.
fn tar_of(files: &[(&str, &[u8], u32)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data, mode) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(*mode);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, *data).unwrap();
    }
    b.into_inner().unwrap()
}

/// The 64-byte header of a static x86-64 ELF executable.
fn elf_header() -> Vec<u8> {
    let mut h = vec![0u8; 64];
    h[..4].copy_from_slice(b"\x7fELF");
    h[4] = 2; // 64-bit
    h[5] = 1; // little-endian
    h[6] = 1; // version
    h[16] = 2; // ET_EXEC
    h[18] = 0x3e; // x86-64
    h[20] = 1; // version
    h
}

/// A function's layer: a runnable `bootstrap` and its interpreter (so the image passes the
/// Lambda checks).
fn function_tar() -> Vec<u8> {
    let sh = elf_header();
    tar_of(&[
        ("bin/sh", &sh, 0o755),
        ("var/task/bootstrap", b"#!/bin/sh\necho hi\n", 0o755),
        ("var/task/data.txt", &b"some data ".repeat(200), 0o644),
    ])
}

/// An image config for linux/amd64 with one layer of uncompressed digest `diff_id`.
fn config_for(diff_id: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": ["/var/task/bootstrap"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }))
    .unwrap()
}

/// A one-layer OCI layout crafted by hand, tagged `latest`.
struct Crafted {
    dir: PathBuf,
    manifest: String,
    config: String,
    layer: String,
}

impl Crafted {
    fn reference(&self) -> String {
        oci_ref(&self.dir, "latest")
    }

    fn blob(&self, digest: &str) -> PathBuf {
        blob_path(&self.dir, digest)
    }
}

fn put_blob(dir: &Path, bytes: &[u8]) -> String {
    let d = sha256_digest(bytes);
    fs::write(blob_path(dir, &d), bytes).unwrap();
    d
}

/// Write a layout at `dir` whose layer blob is `layer` (gzip) and whose config says the layer
/// uncompresses to `diff_id`.
fn craft_with(dir: &Path, layer: &[u8], diff_id: &str) -> Crafted {
    fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let layer_d = put_blob(dir, layer);
    let config = config_for(diff_id);
    let config_d = put_blob(dir, &config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "config": {"mediaType": MT_CONFIG, "digest": config_d, "size": config.len()},
        "layers": [{"mediaType": MT_LAYER_GZIP, "digest": layer_d, "size": layer.len()}],
    }))
    .unwrap();
    let manifest_d = put_blob(dir, &manifest);
    write_index(dir, &manifest_d, manifest.len() as u64);
    Crafted {
        dir: dir.to_owned(),
        manifest: manifest_d,
        config: config_d,
        layer: layer_d,
    }
}

fn write_index(dir: &Path, manifest: &str, size: u64) {
    let index = json!({
        "schemaVersion": 2,
        "mediaType": MT_INDEX,
        "manifests": [{
            "mediaType": MT_MANIFEST, "digest": manifest, "size": size,
            "annotations": {REF_NAME: "latest"},
        }],
    });
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

/// A good one-layer function image at `dir`.
fn craft(dir: &Path) -> Crafted {
    let tar = function_tar();
    craft_with(dir, &gzip(&tar), &sha256_digest(&tar))
}

/// The largest resident set, in KiB, of the command `args` of `lamina` (GNU time's `%M`),
/// with its output.
fn max_rss_kib(args: &[&str], cache: &Path) -> (u64, Output) {
    let time = require_tool("time");
    let report = cache.join("time.out");
    let mut cmd = Command::new(time);
    cmd.arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&report)
        .arg(lamina_bin())
        .args(args)
        .env("LAMINA_CACHE_DIR", cache);
    let out = run_bounded(&mut cmd, None, BOUND);
    let text = fs::read_to_string(&report).unwrap();
    let kib = text
        .lines()
        .filter_map(|l| l.trim().parse::<u64>().ok())
        .next_back()
        .unwrap_or_else(|| panic!("no max RSS in {text:?}"));
    (kib, out)
}

/// Item 2: a manifest whose descriptor says its size but whose blob is a 3 GB (sparse) file,
/// and a layer lying the same way, are refused without being read whole: `inspect` and
/// `check` stay under 200 MB and name the blob and the size its descriptor gives.
#[test]
fn a_blob_larger_than_its_descriptor_is_not_read_whole() {
    let t = TempDir::new().unwrap();
    let cache = t.path().join("cache");
    fs::create_dir_all(&cache).unwrap();
    let img = craft(&t.path().join("img"));
    let huge = 3u64 << 30;
    fs::OpenOptions::new()
        .write(true)
        .open(img.blob(&img.manifest))
        .unwrap()
        .set_len(huge)
        .unwrap();
    let r = img.reference();
    let (kib, out) = max_rss_kib(&["inspect", &r], &cache);
    assert!(!out.status.success(), "{}", describe(&out));
    let err = stderr_of(&out);
    assert!(err.contains(&img.manifest), "{}", describe(&out));
    assert!(err.contains("its descriptor says"), "{}", describe(&out));
    assert!(kib < 200_000, "inspect used {kib} KiB:\n{}", describe(&out));

    // A layer whose blob is huge: refused by its size, before it is read.
    let img = craft(&t.path().join("img2"));
    let layer = img.blob(&img.layer);
    fs::OpenOptions::new()
        .write(true)
        .open(&layer)
        .unwrap()
        .set_len(huge)
        .unwrap();
    let (kib, out) = max_rss_kib(&["check", &img.reference()], &cache);
    assert!(!out.status.success(), "{}", describe(&out));
    let err = stderr_of(&out);
    assert!(err.contains(&img.layer), "{}", describe(&out));
    assert!(err.contains("its descriptor says"), "{}", describe(&out));
    assert!(kib < 200_000, "check used {kib} KiB:\n{}", describe(&out));
}

/// Item 2: a 100 MB `index.json` is refused unread, naming the file.
#[test]
fn a_huge_index_json_is_refused_unread() {
    let t = TempDir::new().unwrap();
    let cache = t.path().join("cache");
    fs::create_dir_all(&cache).unwrap();
    let img = craft(&t.path().join("img"));
    let index = img.dir.join("index.json");
    // Valid JSON, padded with 100 MB of white space.
    let mut bytes = fs::read(&index).unwrap();
    bytes.extend(std::iter::repeat_n(b' ', 100 << 20));
    fs::write(&index, &bytes).unwrap();
    let (kib, out) = max_rss_kib(&["inspect", &img.reference()], &cache);
    assert!(!out.status.success(), "{}", describe(&out));
    let err = stderr_of(&out);
    assert!(err.contains(path_str(&index)), "{}", describe(&out));
    assert!(err.contains("larger than"), "{}", describe(&out));
    assert!(kib < 60_000, "inspect used {kib} KiB:\n{}", describe(&out));
}

/// Replace `path` by a named pipe (nobody ever writes to it).
fn make_fifo(path: &Path) {
    let _ = fs::remove_file(path);
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
}

/// Item 4: a named pipe in place of a layer blob or of `index.json` makes `build --base` and
/// `zip --from` fail at once (not hang), naming the file that is not a regular file.
#[test]
fn a_named_pipe_in_a_layout_is_refused_not_waited_on() {
    let t = TempDir::new().unwrap();
    let cache = t.path().join("cache");
    let out = t.path().join("out");
    let zip = t.path().join("f.zip");
    for what in ["layer", "index"] {
        let img = craft(&t.path().join(what));
        let fifo = match what {
            "layer" => img.blob(&img.layer),
            _ => img.dir.join("index.json"),
        };
        make_fifo(&fifo);
        let r = img.reference();
        let to = oci_ref(&out, "latest");
        let shown = fifo.display().to_string();
        let expect = [shown.as_str(), "named pipe", "not a regular file"];
        let build = [
            "build",
            "--base",
            &r,
            "--platform",
            "linux/amd64",
            "--to",
            &to,
        ];
        fails(&build, &cache, &expect);
        assert!(!out.exists(), "{what}: a destination was written");
        let zip_args = ["zip", "--from", &r, "--to", path_str(&zip)];
        fails(&zip_args, &cache, &expect);
        assert!(!zip.exists(), "{what}: a zip was written");
    }
}

/// Item 4: a named pipe given as an archive is refused, not waited on.
#[test]
fn a_named_pipe_as_an_archive_is_refused() {
    let t = TempDir::new().unwrap();
    let cache = t.path().join("cache");
    let fifo = t.path().join("image.tar");
    make_fifo(&fifo);
    let zip = t.path().join("f.zip");
    for transport in ["oci-archive", "docker-archive"] {
        let r = format!("{transport}:{}", fifo.display());
        let shown = fifo.display().to_string();
        fails(
            &["zip", "--from", &r, "--to", path_str(&zip)],
            &cache,
            &[shown.as_str(), "not a regular file"],
        );
    }
}

/// Flip bytes in the middle of a blob (same size, different content).
fn tamper(path: &Path) {
    let mut b = fs::read(path).unwrap();
    let mid = b.len() / 2;
    for x in &mut b[mid..mid + 8] {
        *x = !*x;
    }
    fs::write(path, b).unwrap();
}

/// Item 6: `check` verifies every layer. A layer checked (and its file system remembered)
/// before it was tampered with no longer passes: `check` fails naming its digest.
#[test]
fn check_refuses_a_tampered_layer() {
    let t = TempDir::new().unwrap();
    let cache = t.path().join("cache");
    let img = craft(&t.path().join("img"));
    let r = img.reference();
    let out = run(&["check", &r], &cache);
    assert!(out.status.success(), "the good image: {}", describe(&out));
    tamper(&img.blob(&img.layer));
    let err = fails(&["check", &r], &cache, &[&img.layer]);
    assert!(!err.contains("passes"), "{err}");

    // A layer whose blob matches its (rewritten) descriptor but not the config's diff_id.
    let other = tar_of(&[("var/task/bootstrap", b"#!/bin/sh\nevil\n", 0o755)]);
    let img = craft_with(
        &t.path().join("img2"),
        &gzip(&other),
        &sha256_digest(&function_tar()),
    );
    fails(
        &["check", &img.reference()],
        &cache,
        &[&img.layer, "diff_ids"],
    );
}

/// Item 6: `push --no-lambda-check` of a layout whose layer does not uncompress to its
/// diff_id (every digest consistent, so a registry would take it) uploads nothing.
#[test]
fn push_uploads_nothing_of_a_tampered_layout() {
    let reg = Registry::plain();
    let t = TempDir::new().unwrap();
    let cache = t.path().join("cache");
    let other = tar_of(&[("var/task/bootstrap", b"#!/bin/sh\nevil\n", 0o755)]);
    let img = craft_with(
        &t.path().join("img"),
        &gzip(&other),
        &sha256_digest(&function_tar()),
    );
    let dest = reg.reference("fn:latest");
    let mut args = vec!["push", "--no-lambda-check"];
    let flags = reg.lamina_flags();
    args.extend(flags.iter().map(String::as_str));
    let r = img.reference();
    args.extend([r.as_str(), dest.as_str()]);
    fails(&args, &cache, &[&img.layer, "diff_ids"]);
    assert_eq!(reg.blob_count(), 0, "blobs were uploaded");

    // The same with bytes flipped in a layer checked before.
    let img = craft(&t.path().join("img2"));
    let r = img.reference();
    let out = run(&["check", &r], &cache);
    assert!(out.status.success(), "{}", describe(&out));
    tamper(&img.blob(&img.layer));
    let mut args = vec!["push", "--no-lambda-check"];
    args.extend(flags.iter().map(String::as_str));
    args.extend([r.as_str(), dest.as_str()]);
    fails(&args, &cache, &[&img.layer]);
    assert_eq!(reg.blob_count(), 0, "blobs were uploaded");
}

/// A crafted archive: the entry linked out, its files and its links.
type Case<'a> = (&'a str, Vec<(&'a str, &'a [u8])>, Vec<(&'a str, &'a Path)>);

/// A `docker save` archive at `file` of the files `entries` (name, content) and the symbolic
/// links `links` (name, target).
fn docker_archive(file: &Path, entries: &[(&str, &[u8])], links: &[(&str, &Path)]) {
    let mut b = tar::Builder::new(fs::File::create(file).unwrap());
    for (name, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, *data).unwrap();
    }
    for (name, target) in links {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        b.append_link(&mut h, name, target).unwrap();
    }
    b.finish().unwrap();
}

/// Item 8: a `docker-archive:` whose `layer.tar` or config is a symbolic link to a host file
/// is refused; the host file never reaches the image. A link inside the archive (how `docker
/// save` shares a repeated layer) still works.
#[test]
fn an_archive_link_to_a_host_file_is_never_read() {
    let t = TempDir::new().unwrap();
    let cache = t.path().join("cache");
    // The "host file": a tar holding a secret, and a config naming it.
    let secret = tar_of(&[("etc/hostsecret", b"TOP SECRET", 0o600)]);
    let host_tar = t.path().join("host.tar");
    fs::write(&host_tar, &secret).unwrap();
    let config = config_for(&sha256_digest(&secret));
    let host_config = t.path().join("host.json");
    fs::write(&host_config, &config).unwrap();
    let manifest = serde_json::to_vec(&json!([{
        "Config": "config.json", "RepoTags": ["fn:latest"], "Layers": ["abc/layer.tar"],
    }]))
    .unwrap();
    let out = t.path().join("out");
    let to = oci_ref(&out, "latest");
    let cases: [Case; 2] = [
        (
            "abc/layer.tar",
            vec![
                ("manifest.json", &manifest[..]),
                ("config.json", &config[..]),
            ],
            vec![("abc/layer.tar", host_tar.as_path())],
        ),
        (
            "config.json",
            vec![
                ("manifest.json", &manifest[..]),
                ("abc/layer.tar", &secret[..]),
            ],
            vec![("config.json", host_config.as_path())],
        ),
    ];
    for (linked, files, links) in cases {
        let file = t.path().join("image.tar");
        docker_archive(&file, &files, &links);
        let r = format!("docker-archive:{}", file.display());
        let args = [
            "build",
            "--base",
            &r,
            "--platform",
            "linux/amd64",
            "--to",
            &to,
        ];
        fails(&args, &cache, &[linked, "outside the archive"]);
        assert!(!out.exists(), "{linked}: an image was written");
    }

    // A link that stays inside the archive is followed.
    let file = t.path().join("shared.tar");
    let manifest = serde_json::to_vec(&json!([{
        "Config": "config.json", "Layers": ["abc/layer.tar"],
    }]))
    .unwrap();
    docker_archive(
        &file,
        &[
            ("manifest.json", &manifest[..]),
            ("config.json", &config[..]),
            ("def/layer.tar", &secret[..]),
        ],
        &[("abc/layer.tar", Path::new("../def/layer.tar"))],
    );
    let r = format!("docker-archive:{}", file.display());
    let args = [
        "build",
        "--base",
        &r,
        "--platform",
        "linux/amd64",
        "--to",
        &to,
    ];
    let ok = run(&args, &cache);
    assert!(ok.status.success(), "{}", describe(&ok));
}

/// Item 8's sibling: an `oci-archive:` whose blob is a symbolic link out of the archive is
/// refused when unpacked, naming the entry.
#[test]
fn an_oci_archive_link_out_is_refused() {
    let t = TempDir::new().unwrap();
    let cache = t.path().join("cache");
    let img = craft(&t.path().join("img"));
    let host = t.path().join("host-layer");
    fs::copy(img.blob(&img.layer), &host).unwrap();
    let file = t.path().join("image.tar");
    let mut b = tar::Builder::new(fs::File::create(&file).unwrap());
    b.follow_symlinks(false);
    for name in ["oci-layout", "index.json"] {
        b.append_path_with_name(img.dir.join(name), name).unwrap();
    }
    for d in [&img.manifest, &img.config] {
        let name = format!("blobs/sha256/{}", hex_of(d));
        b.append_path_with_name(img.blob(d), &name).unwrap();
    }
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    h.set_mode(0o777);
    let name = format!("blobs/sha256/{}", hex_of(&img.layer));
    b.append_link(&mut h, &name, &host).unwrap();
    b.finish().unwrap();
    drop(b);
    let r = format!("oci-archive:{}:latest", file.display());
    let zip = t.path().join("f.zip");
    fails(
        &["zip", "--from", &r, "--to", path_str(&zip)],
        &cache,
        &[&name, "outside the archive"],
    );
}

/// A malformed digest in `index.json` is named by file and field (not "serde failed").
#[test]
fn a_malformed_digest_in_index_json_names_the_field() {
    let t = TempDir::new().unwrap();
    let cache = t.path().join("cache");
    let img = craft(&t.path().join("img"));
    let index = img.dir.join("index.json");
    let mut v: Value = read_json(&index);
    v["manifests"][0]["digest"] = json!("sha256:not-a-digest");
    fs::write(&index, serde_json::to_vec(&v).unwrap()).unwrap();
    let err = fails(
        &["inspect", &img.reference()],
        &cache,
        &[
            path_str(&index),
            "manifests[0].digest",
            "sha256:not-a-digest",
        ],
    );
    assert!(!err.contains("serde failed"), "{err}");
}
