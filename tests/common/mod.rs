//! Helpers shared by the end-to-end tests: running the built `lamina` binary and its real peers
//! (`skopeo`, `umoci`), and independent checks of what it wrote (OCI layout JSON, blob hashes,
//! layer tars, unpacked trees).
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use sha2::{Digest, Sha256};
use tempfile::TempDir;

pub mod registry;

pub const MT_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MT_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MT_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MT_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
pub const EPOCH: &str = "1970-01-01T00:00:00Z";

// ---------------------------------------------------------------------------------------------
// Running things
// ---------------------------------------------------------------------------------------------

pub fn lamina_bin() -> &'static str {
    env!("CARGO_BIN_EXE_lamina")
}

/// Run the built `lamina` with `args` in `cwd`. `SOURCE_DATE_EPOCH` is removed from the
/// environment unless `env` sets it, so the caller's environment cannot change the results.
pub fn lamina<S: AsRef<OsStr>>(args: &[S], cwd: &Path, env: &[(&str, &str)]) -> Output {
    // Caches go to a directory of this test binary's own, never the real home.
    static CACHE: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    let cache = CACHE.get_or_init(|| tempfile::TempDir::new().expect("cache tempdir"));
    let mut cmd = Command::new(lamina_bin());
    cmd.args(args)
        .current_dir(cwd)
        .env_remove("SOURCE_DATE_EPOCH")
        .env("LAMINA_CACHE_DIR", cache.path());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", lamina_bin()))
}

/// Like [`lamina`], but the run must succeed (and must not panic).
pub fn lamina_ok<S: AsRef<OsStr>>(args: &[S], cwd: &Path, env: &[(&str, &str)]) -> Output {
    let out = lamina(args, cwd, env);
    assert!(
        out.status.success(),
        "lamina {:?} failed:\n{}",
        args.iter().map(|a| a.as_ref()).collect::<Vec<_>>(),
        describe(&out)
    );
    assert_no_panic(&out);
    out
}

/// Status, stdout and stderr of a finished process, for assertion messages.
pub fn describe(out: &Output) -> String {
    format!(
        "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn assert_no_panic(out: &Output) {
    let err = stderr_of(out);
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "lamina panicked:\n{}",
        describe(out)
    );
    assert_ne!(
        out.status.code(),
        Some(101),
        "lamina panicked:\n{}",
        describe(out)
    );
}

/// The manifest digest `build` prints: stdout must be exactly one `sha256:<64 hex>` line.
pub fn parse_digest(out: &Output) -> String {
    let stdout = String::from_utf8(out.stdout.clone()).expect("stdout is UTF-8");
    let digest = stdout.trim().to_owned();
    assert!(
        is_sha256_digest(&digest),
        "stdout is not a single sha256 digest:\n{}",
        describe(out)
    );
    digest
}

pub fn is_sha256_digest(s: &str) -> bool {
    s.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

pub fn hex_of(digest: &str) -> &str {
    digest
        .strip_prefix("sha256:")
        .unwrap_or_else(|| panic!("not a sha256 digest: {digest}"))
}

/// Absolute path of a tool the tests need; panics (never skips) when it is missing.
pub fn require_tool(name: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.push(PathBuf::from("/usr/bin"));
    dirs.push(PathBuf::from("/usr/local/bin"));
    for d in dirs {
        let candidate = d.join(name);
        if let Ok(md) = fs::metadata(&candidate)
            && md.is_file()
            && md.permissions().mode() & 0o111 != 0
        {
            return candidate;
        }
    }
    panic!(
        "`{name}` is required by lamina's end-to-end tests but was not found in PATH or /usr/bin; \
         install it (Debian/Ubuntu: `apt-get install {name}`) or run `bash .ci/run`, which \
         installs the test peers"
    )
}

/// Run `skopeo --insecure-policy ARGS` (no policy.json needed: everything is local).
pub fn skopeo<S: AsRef<OsStr>>(args: &[S]) -> Output {
    let bin = require_tool("skopeo");
    Command::new(&bin)
        .arg("--insecure-policy")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()))
}

/// Run skopeo, require success, return stdout.
pub fn skopeo_ok<S: AsRef<OsStr>>(args: &[S]) -> Vec<u8> {
    let out = skopeo(args);
    assert!(
        out.status.success(),
        "skopeo {:?} failed:\n{}",
        args.iter().map(|a| a.as_ref()).collect::<Vec<_>>(),
        describe(&out)
    );
    out.stdout
}

/// Run `sh -c SCRIPT` in `cwd`, require success.
pub fn sh(script: &str, cwd: &Path) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(cwd)
        .output()
        .expect("cannot run sh");
    assert!(
        out.status.success(),
        "sh -c {script:?} failed:\n{}",
        describe(&out)
    );
}

/// A bundle unpacked by umoci; the temporary directory lives as long as this value.
pub struct Unpacked {
    _tmp: TempDir,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
}

/// `umoci unpack --rootless --image LAYOUT:TAG BUNDLE` into a fresh temporary directory.
pub fn umoci_unpack(layout: &Path, tag: &str) -> Unpacked {
    let bin = require_tool("umoci");
    let tmp = TempDir::new().expect("tempdir");
    let bundle = tmp.path().join("bundle");
    let mut image = layout.as_os_str().to_owned();
    image.push(":");
    image.push(tag);
    let out = Command::new(&bin)
        .args(["unpack", "--rootless", "--image"])
        .arg(&image)
        .arg(&bundle)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
    assert!(
        out.status.success(),
        "umoci unpack {} failed:\n{}",
        image.to_string_lossy(),
        describe(&out)
    );
    let rootfs = bundle.join("rootfs");
    assert!(
        rootfs.is_dir(),
        "umoci wrote no rootfs in {}",
        bundle.display()
    );
    Unpacked {
        _tmp: tmp,
        bundle,
        rootfs,
    }
}

// ---------------------------------------------------------------------------------------------
// Fixtures and builds
// ---------------------------------------------------------------------------------------------

pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// `fixtures/lamina.toml`, which must exist.
pub fn fixture_spec() -> PathBuf {
    let p = fixtures_dir().join("lamina.toml");
    assert!(p.is_file(), "missing fixture spec {}", p.display());
    p
}

pub fn fixture_base() -> PathBuf {
    let p = fixtures_dir().join("base");
    assert!(
        p.join("index.json").is_file(),
        "missing fixture base layout {}",
        p.display()
    );
    p
}

/// `oci:<abs fixtures/base>:latest`
pub fn fixture_base_ref() -> String {
    format!("oci:{}:latest", fixture_base().display())
}

pub fn fixture_function() -> PathBuf {
    let p = fixtures_dir().join("function");
    assert!(p.is_dir(), "missing fixture function {}", p.display());
    p
}

pub fn path_str(p: &Path) -> &str {
    p.to_str()
        .unwrap_or_else(|| panic!("test path is not UTF-8: {}", p.display()))
}

/// `oci:DIR:TAG`
pub fn oci_ref(dir: &Path, tag: &str) -> String {
    format!("oci:{}:{tag}", dir.display())
}

/// Result of a successful build into an OCI layout.
pub struct Build {
    pub digest: String,
    pub layout: PathBuf,
    pub output: Output,
}

/// `lamina build -f fixtures/lamina.toml --to oci:WORK/NAME:latest EXTRA...` run in `work`.
pub fn build_fixture(work: &Path, name: &str, extra: &[&str], env: &[(&str, &str)]) -> Build {
    let layout = work.join(name);
    let spec = fixture_spec();
    let to = oci_ref(&layout, "latest");
    let mut args: Vec<&str> = vec!["build", "-f", path_str(&spec), "--to", &to];
    args.extend_from_slice(extra);
    let output = lamina_ok(&args, work, env);
    let digest = parse_digest(&output);
    Build {
        digest,
        layout,
        output,
    }
}

/// The fixture function's expected tree under the destination: every entry of
/// `fixtures/function` except the top-level `*.md`, with modes normalized.
pub fn expected_function_tree() -> Snapshot {
    let snap = tree_snapshot(&fixture_function());
    normalized(&snap)
        .into_iter()
        .filter(|(p, _)| !(p.components().count() == 1 && p.extension().is_some_and(|e| e == "md")))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// OCI layouts
// ---------------------------------------------------------------------------------------------

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(data))
}

pub fn blob_path(layout: &Path, digest: &str) -> PathBuf {
    layout.join("blobs").join("sha256").join(hex_of(digest))
}

pub fn read_blob(layout: &Path, digest: &str) -> Vec<u8> {
    let p = blob_path(layout, digest);
    fs::read(&p).unwrap_or_else(|e| panic!("cannot read blob {}: {e}", p.display()))
}

pub fn read_json(path: &Path) -> Value {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

pub fn read_index(layout: &Path) -> Value {
    read_json(&layout.join("index.json"))
}

/// The descriptor of `index.json` annotated `org.opencontainers.image.ref.name: TAG`
/// (there must be exactly one).
pub fn tagged_descriptor(layout: &Path, tag: &str) -> Value {
    let index = read_index(layout);
    let found: Vec<&Value> = index["manifests"]
        .as_array()
        .expect("index.json has a manifests array")
        .iter()
        .filter(|d| d["annotations"][REF_NAME].as_str() == Some(tag))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "index.json of {} should have exactly one descriptor tagged {tag}: {index}",
        layout.display()
    );
    found[0].clone()
}

/// Tags of all descriptors in index.json.
pub fn layout_tags(layout: &Path) -> BTreeMap<String, String> {
    let index = read_index(layout);
    index["manifests"]
        .as_array()
        .expect("manifests array")
        .iter()
        .filter_map(|d| {
            d["annotations"][REF_NAME].as_str().map(|t| {
                (
                    t.to_owned(),
                    d["digest"].as_str().expect("descriptor digest").to_owned(),
                )
            })
        })
        .collect()
}

/// (manifest, manifest digest, config) of the single-platform image tagged `tag`.
pub fn read_layout(layout: &Path, tag: &str) -> (Value, String, Value) {
    let desc = tagged_descriptor(layout, tag);
    assert_eq!(
        desc["mediaType"].as_str(),
        Some(MT_MANIFEST),
        "descriptor for {tag} should point at an image manifest: {desc}"
    );
    let digest = desc["digest"].as_str().expect("digest").to_owned();
    let bytes = read_blob(layout, &digest);
    assert_eq!(sha256_digest(&bytes), digest, "manifest blob hash");
    assert_eq!(
        desc["size"].as_u64(),
        Some(bytes.len() as u64),
        "manifest size"
    );
    let manifest: Value = serde_json::from_slice(&bytes).expect("manifest is JSON");
    let config_digest = manifest["config"]["digest"]
        .as_str()
        .expect("config digest");
    let config: Value =
        serde_json::from_slice(&read_blob(layout, config_digest)).expect("config is JSON");
    (manifest, digest, config)
}

pub fn manifest_bytes(layout: &Path, tag: &str) -> Vec<u8> {
    let (_, digest, _) = read_layout(layout, tag);
    read_blob(layout, &digest)
}

/// (manifest, digest, config) for `arch` in a layout whose `tag` may point at a (nested) index.
pub fn resolve_platform(layout: &Path, tag: &str, arch: &str) -> (Value, String, Value) {
    let mut desc = tagged_descriptor(layout, tag);
    loop {
        let digest = desc["digest"].as_str().expect("digest").to_owned();
        let doc: Value = serde_json::from_slice(&read_blob(layout, &digest)).expect("JSON blob");
        let is_index = desc["mediaType"].as_str() == Some(MT_INDEX)
            || doc["mediaType"].as_str() == Some(MT_INDEX);
        if !is_index {
            let config_digest = doc["config"]["digest"].as_str().expect("config digest");
            let config: Value =
                serde_json::from_slice(&read_blob(layout, config_digest)).expect("config JSON");
            assert_eq!(config["architecture"].as_str(), Some(arch));
            return (doc, digest, config);
        }
        let manifests = doc["manifests"].as_array().expect("manifests");
        let next = manifests
            .iter()
            .find(|d| {
                d["platform"]["architecture"].as_str() == Some(arch)
                    || d["mediaType"].as_str() == Some(MT_INDEX)
            })
            .unwrap_or_else(|| panic!("no {arch} manifest in {doc}"));
        desc = next.clone();
    }
}

/// The fixture base's (manifest, digest, config) for `arch` ("amd64" or "arm64").
pub fn base_image(arch: &str) -> (Value, String, Value) {
    resolve_platform(&fixture_base(), "latest", arch)
}

pub fn layer_digests(manifest: &Value) -> Vec<String> {
    manifest["layers"]
        .as_array()
        .expect("layers array")
        .iter()
        .map(|l| l["digest"].as_str().expect("layer digest").to_owned())
        .collect()
}

pub fn diff_ids(config: &Value) -> Vec<String> {
    config["rootfs"]["diff_ids"]
        .as_array()
        .expect("rootfs.diff_ids")
        .iter()
        .map(|d| d.as_str().expect("diff id").to_owned())
        .collect()
}

pub fn string_array(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| {
            s.as_str()
                .unwrap_or_else(|| panic!("not a string: {s}"))
                .to_owned()
        })
        .collect()
}

/// Check one descriptor's blob: present, same size, same sha256.
pub fn verify_descriptor(layout: &Path, desc: &Value) -> Vec<u8> {
    let digest = desc["digest"]
        .as_str()
        .unwrap_or_else(|| panic!("descriptor without digest: {desc}"));
    assert!(is_sha256_digest(digest), "bad digest in {desc}");
    let p = blob_path(layout, digest);
    let bytes = fs::read(&p).unwrap_or_else(|e| panic!("blob {} missing: {e}", p.display()));
    assert_eq!(
        desc["size"].as_u64(),
        Some(bytes.len() as u64),
        "size of {} does not match its descriptor {desc}",
        p.display()
    );
    assert_eq!(
        sha256_digest(&bytes),
        digest,
        "sha256 of {} does not match its name",
        p.display()
    );
    bytes
}

/// Check a whole layout: `oci-layout`, and every descriptor reachable from index.json (indexes,
/// manifests, configs, layers) has a blob of the right size and sha256; every config's
/// `rootfs.diff_ids` are the sha256 of the uncompressed layers.
pub fn verify_layout_blobs(layout: &Path) {
    let marker = read_json(&layout.join("oci-layout"));
    assert_eq!(
        marker["imageLayoutVersion"].as_str(),
        Some("1.0.0"),
        "oci-layout of {}",
        layout.display()
    );
    let index = read_index(layout);
    assert_eq!(
        index["schemaVersion"].as_u64(),
        Some(2),
        "index.json schemaVersion"
    );
    for desc in index["manifests"].as_array().expect("manifests array") {
        verify_tree(layout, desc);
    }
}

fn verify_tree(layout: &Path, desc: &Value) {
    let bytes = verify_descriptor(layout, desc);
    let media_type = desc["mediaType"].as_str().unwrap_or("");
    let doc: Value = serde_json::from_slice(&bytes).expect("index/manifest is JSON");
    if media_type == MT_INDEX || doc["mediaType"].as_str() == Some(MT_INDEX) {
        for d in doc["manifests"].as_array().expect("manifests array") {
            verify_tree(layout, d);
        }
        return;
    }
    assert_eq!(
        doc["schemaVersion"].as_u64(),
        Some(2),
        "manifest schemaVersion"
    );
    let config_bytes = verify_descriptor(layout, &doc["config"]);
    let config: Value = serde_json::from_slice(&config_bytes).expect("config is JSON");
    let layers = doc["layers"].as_array().expect("layers array");
    let ids = diff_ids(&config);
    assert_eq!(
        ids.len(),
        layers.len(),
        "diff_ids and layers differ in number"
    );
    for (layer, id) in layers.iter().zip(&ids) {
        let blob = verify_descriptor(layout, layer);
        let tar = decode_layer(layer["mediaType"].as_str().unwrap_or(""), &blob);
        assert_eq!(
            &sha256_digest(&tar),
            id,
            "diff_id of layer {} is not the sha256 of its uncompressed tar",
            layer["digest"]
        );
    }
}

/// Uncompressed tar of a layer blob, by media type.
pub fn decode_layer(media_type: &str, blob: &[u8]) -> Vec<u8> {
    if media_type.ends_with("+gzip") || media_type.ends_with(".gzip") {
        gunzip(blob)
    } else if media_type.ends_with(".tar") || media_type.ends_with("tar") {
        blob.to_vec()
    } else {
        panic!("unexpected layer media type {media_type}")
    }
}

pub fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(data)
        .read_to_end(&mut out)
        .expect("valid gzip");
    out
}

/// The uncompressed tar of layer number `i` of `manifest` in `layout`.
pub fn layer_tar(layout: &Path, manifest: &Value, i: usize) -> Vec<u8> {
    let desc = &manifest["layers"][i];
    let blob = read_blob(layout, desc["digest"].as_str().expect("layer digest"));
    decode_layer(desc["mediaType"].as_str().unwrap_or(""), &blob)
}

/// gzip header: magic, deflate, no FNAME/FCOMMENT, MTIME zero.
pub fn assert_clean_gzip_header(blob: &[u8], what: &str) {
    assert!(blob.len() > 10, "{what}: too short for gzip");
    assert_eq!(&blob[0..2], &[0x1f, 0x8b], "{what}: gzip magic");
    assert_eq!(blob[2], 8, "{what}: gzip method deflate");
    assert_eq!(blob[3] & 0x08, 0, "{what}: gzip FLG has FNAME set");
    assert_eq!(blob[3] & 0x10, 0, "{what}: gzip FLG has FCOMMENT set");
    assert_eq!(&blob[4..8], &[0, 0, 0, 0], "{what}: gzip MTIME is not zero");
}

// ---------------------------------------------------------------------------------------------
// Tars
// ---------------------------------------------------------------------------------------------

/// One tar entry, after PAX/GNU extensions were applied.
#[derive(Clone, Debug)]
pub struct TarEntry {
    /// Path as stored, with any trailing `/` removed.
    pub path: Vec<u8>,
    pub entry_type: tar::EntryType,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub uname: Vec<u8>,
    pub gname: Vec<u8>,
    pub mtime: u64,
    pub link: Option<Vec<u8>>,
    pub data: Vec<u8>,
}

impl TarEntry {
    pub fn path_str(&self) -> String {
        String::from_utf8_lossy(&self.path).into_owned()
    }
    pub fn is_dir(&self) -> bool {
        self.entry_type == tar::EntryType::Directory
    }
    pub fn is_file(&self) -> bool {
        self.entry_type == tar::EntryType::Regular
    }
}

pub fn tar_entries(tar_bytes: &[u8]) -> Vec<TarEntry> {
    let mut archive = tar::Archive::new(tar_bytes);
    let mut out = Vec::new();
    for e in archive.entries().expect("readable tar") {
        let mut e = e.expect("readable tar entry");
        let h = e.header().clone();
        let mut path = e.path_bytes().into_owned();
        while path.len() > 1 && path.ends_with(b"/") {
            path.pop();
        }
        let link = e.link_name_bytes().map(|l| l.into_owned());
        let mut data = Vec::new();
        e.read_to_end(&mut data).expect("tar entry data");
        out.push(TarEntry {
            path,
            entry_type: h.entry_type(),
            mode: h.mode().expect("tar mode") & 0o7777,
            uid: h.uid().expect("tar uid"),
            gid: h.gid().expect("tar gid"),
            uname: h.username_bytes().map(|b| b.to_vec()).unwrap_or_default(),
            gname: h.groupname_bytes().map(|b| b.to_vec()).unwrap_or_default(),
            mtime: h.mtime().expect("tar mtime"),
            link,
            data,
        });
    }
    out
}

/// Every header of the tar as written, extension headers (PAX `x`/`g`, GNU `L`/`K`) included.
pub fn tar_raw_headers(tar_bytes: &[u8]) -> Vec<(tar::EntryType, Vec<u8>)> {
    let mut archive = tar::Archive::new(tar_bytes);
    archive
        .entries()
        .expect("readable tar")
        .raw(true)
        .map(|e| {
            let e = e.expect("readable raw tar entry");
            (
                e.header().entry_type(),
                e.header().path_bytes().into_owned(),
            )
        })
        .collect()
}

pub fn find_entry<'a>(entries: &'a [TarEntry], path: &str) -> Option<&'a TarEntry> {
    entries.iter().find(|e| e.path == path.as_bytes())
}

pub fn entry<'a>(entries: &'a [TarEntry], path: &str) -> &'a TarEntry {
    find_entry(entries, path).unwrap_or_else(|| {
        panic!(
            "no tar entry {path}; entries: {:?}",
            entries.iter().map(TarEntry::path_str).collect::<Vec<_>>()
        )
    })
}

/// Entries must be strictly increasing by path bytes (sorted, no duplicates).
pub fn assert_sorted(entries: &[TarEntry], what: &str) {
    for w in entries.windows(2) {
        assert!(
            w[0].path < w[1].path,
            "{what}: tar entries not sorted by path: {:?} then {:?}",
            w[0].path_str(),
            w[1].path_str()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// File trees
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    Dir { mode: u32 },
    File { mode: u32, sha256: String },
    Symlink { target: PathBuf },
    Other { mode: u32 },
}

pub type Snapshot = BTreeMap<PathBuf, Node>;

/// Every entry under `root` (not `root` itself), by relative path, without following symlinks.
pub fn tree_snapshot(root: &Path) -> Snapshot {
    let mut map = BTreeMap::new();
    snapshot_into(root, Path::new(""), &mut map);
    map
}

fn snapshot_into(root: &Path, rel: &Path, map: &mut Snapshot) {
    let dir = root.join(rel);
    let mut names: Vec<OsString> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").file_name())
        .collect();
    names.sort();
    for name in names {
        let rel_child = rel.join(&name);
        let abs = root.join(&rel_child);
        let md = fs::symlink_metadata(&abs)
            .unwrap_or_else(|e| panic!("cannot stat {}: {e}", abs.display()));
        let ft = md.file_type();
        let mode = md.permissions().mode() & 0o7777;
        if ft.is_symlink() {
            let target = fs::read_link(&abs).expect("readlink");
            map.insert(rel_child, Node::Symlink { target });
        } else if ft.is_dir() {
            map.insert(rel_child.clone(), Node::Dir { mode });
            snapshot_into(root, &rel_child, map);
        } else if ft.is_file() {
            let data = fs::read(&abs).unwrap_or_else(|e| panic!("read {}: {e}", abs.display()));
            map.insert(
                rel_child,
                Node::File {
                    mode,
                    sha256: sha256_hex(&data),
                },
            );
        } else {
            map.insert(rel_child, Node::Other { mode });
        }
    }
}

/// What lamina's default mode normalization should turn a source snapshot into.
pub fn normalized(snap: &Snapshot) -> Snapshot {
    snap.iter()
        .map(|(p, n)| {
            let n = match n {
                Node::Dir { .. } => Node::Dir { mode: 0o755 },
                Node::File { mode, sha256 } => Node::File {
                    mode: if mode & 0o111 != 0 { 0o755 } else { 0o644 },
                    sha256: sha256.clone(),
                },
                other => other.clone(),
            };
            (p.clone(), n)
        })
        .collect()
}

/// Names directly inside `dir`.
pub fn list_dir(dir: &Path) -> BTreeSet<OsString> {
    fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").file_name())
        .collect()
}

/// Copy a tree, keeping symlinks as symlinks and the permission bits of files and directories.
pub fn copy_tree(src: &Path, dst: &Path) {
    let md =
        fs::symlink_metadata(src).unwrap_or_else(|e| panic!("cannot stat {}: {e}", src.display()));
    let ft = md.file_type();
    if ft.is_symlink() {
        symlink(fs::read_link(src).expect("readlink"), dst)
            .unwrap_or_else(|e| panic!("symlink {}: {e}", dst.display()));
    } else if ft.is_dir() {
        fs::create_dir(dst).unwrap_or_else(|e| panic!("mkdir {}: {e}", dst.display()));
        let mut names: Vec<OsString> = fs::read_dir(src)
            .expect("read_dir")
            .map(|e| e.expect("dir entry").file_name())
            .collect();
        names.sort();
        for name in names {
            copy_tree(&src.join(&name), &dst.join(&name));
        }
        fs::set_permissions(dst, md.permissions()).expect("chmod dir");
    } else if ft.is_file() {
        fs::copy(src, dst).unwrap_or_else(|e| panic!("copy {}: {e}", src.display()));
        fs::set_permissions(dst, md.permissions()).expect("chmod file");
    } else {
        panic!("cannot copy special file {}", src.display());
    }
}

pub fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {:o} {}: {e}", mode, path.display()));
}

pub fn write_file(path: &Path, data: &[u8], mode: u32) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).expect("mkdir -p");
    }
    fs::write(path, data).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    chmod(path, mode);
}

/// Set mtime and atime of `root` and everything below it (symlinks themselves included).
pub fn set_tree_times(root: &Path, secs: i64) {
    let mut paths: Vec<PathBuf> = vec![root.to_path_buf()];
    paths.extend(tree_snapshot(root).keys().map(|p| root.join(p)));
    let out = Command::new("touch")
        .arg("-h")
        .arg("-d")
        .arg(format!("@{secs}"))
        .args(&paths)
        .output()
        .expect("cannot run touch");
    assert!(out.status.success(), "touch failed:\n{}", describe(&out));
}

// ---------------------------------------------------------------------------------------------
// Zips
// ---------------------------------------------------------------------------------------------

pub enum ZipItem<'a> {
    /// name, unix permissions, content
    File(&'a str, u32, &'a [u8]),
    /// name (a trailing `/` is added), unix permissions
    Dir(&'a str, u32),
    /// name, target (stored as the content, mode 0o120777)
    Symlink(&'a str, &'a str),
}

pub fn write_zip(path: &Path, items: &[ZipItem]) {
    use zip::CompressionMethod;
    use zip::write::SimpleFileOptions;
    let file = fs::File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    let mut z = zip::ZipWriter::new(file);
    for item in items {
        match item {
            ZipItem::File(name, mode, data) => {
                let opts = SimpleFileOptions::default()
                    .compression_method(CompressionMethod::Deflated)
                    .unix_permissions(*mode);
                z.start_file(*name, opts).expect("zip start_file");
                z.write_all(data).expect("zip write");
            }
            ZipItem::Dir(name, mode) => {
                let opts = SimpleFileOptions::default().unix_permissions(*mode);
                z.add_directory(*name, opts).expect("zip add_directory");
            }
            ZipItem::Symlink(name, target) => {
                let opts = SimpleFileOptions::default().unix_permissions(0o777);
                z.add_symlink(*name, *target, opts)
                    .expect("zip add_symlink");
            }
        }
    }
    z.finish().expect("zip finish");
}
