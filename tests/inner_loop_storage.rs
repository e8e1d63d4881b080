//! The storage half of the inner loop (issue 15): `lamina run`/`invoke` build the root file
//! system from layers unpacked once each (shared between images, only a changed code layer
//! unpacked again), composed by overlayfs or a hard-linked copy with the base's whiteouts
//! honoured; a `docker-archive:` base is gzipped once and remembered; the caches stay under
//! their cap, in-use entries survive eviction, and `lamina cache` shows and prunes them.
//!
//! The base is a `docker save`-style archive written here: Debian's static busybox, a Lambda
//! runtime in busybox sh that answers every invocation with what it sees, and a second layer
//! with whiteouts (a deleted file, an opaque directory, a directory deleted then recreated).
//! These tests need unprivileged user namespaces and `/bin/busybox` from `busybox-static`:
//! without them they fail, loudly.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;
use serde_json::{Value, json};

const BUSYBOX: &str = "/bin/busybox";

/// The runtime: each invocation is answered with the listing of `/data` and its
/// subdirectories, and the code layer's `/var/task/code`.
const BOOTSTRAP: &str = r#"#!/bin/sh
api="http://$AWS_LAMBDA_RUNTIME_API/2018-06-01/runtime"
while :; do
  wget -S -O /tmp/event "$api/invocation/next" 2>/tmp/headers || exit 1
  id=$(grep -i "lambda-runtime-aws-request-id:" /tmp/headers | sed 's/^[^:]*: *//' | tr -d '\r ')
  data=$(ls /data | tr '\n' ' ')
  opq=$(ls /data/opq | tr '\n' ' ')
  dir=$(ls /data/dir | tr '\n' ' ')
  code=$(cat /var/task/code)
  wget -q -O /dev/null --post-data "{\"data\":\"$data\",\"opq\":\"$opq\",\"dir\":\"$dir\",\"code\":\"$code\"}" "$api/invocation/$id/response"
done
"#;

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => panic!("lamina run supports amd64 and arm64 machines, not {other}"),
    }
}

/// One tar entry of a test layer.
enum E<'a> {
    Dir(&'a str),
    File(&'a str, &'a [u8], u32),
    Link(&'a str, &'a str),
}

fn tar_of(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(1_700_000_000);
        match e {
            E::Dir(p) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                b.append_data(&mut h, p, std::io::empty()).unwrap();
            }
            E::File(p, c, m) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*m);
                h.set_size(c.len() as u64);
                b.append_data(&mut h, p, *c).unwrap();
            }
            E::Link(p, t) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, p, t).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

/// The base's two layers: busybox, the runtime and `/data`; then whiteouts over `/data`.
fn base_layers(extra: &[u8]) -> Vec<Vec<u8>> {
    let busybox = std::fs::read(BUSYBOX).unwrap_or_else(|e| {
        panic!(
            "{BUSYBOX} is missing ({e}): these tests put a static busybox in their base image. \
             Install Debian's busybox-static (`apt-get install busybox-static`)"
        )
    });
    let mut l1 = vec![
        E::Dir("bin/"),
        E::File("bin/busybox", &busybox, 0o755),
        E::Dir("var/"),
        E::Dir("var/runtime/"),
        E::File("var/runtime/bootstrap", BOOTSTRAP.as_bytes(), 0o755),
        E::Dir("data/"),
        E::File("data/keep", b"k", 0o644),
        E::File("data/gone", b"g", 0o644),
        E::Dir("data/opq/"),
        E::File("data/opq/old", b"o", 0o644),
        E::Dir("data/dir/"),
        E::File("data/dir/x", b"x", 0o644),
        E::File("data/padding", extra, 0o644),
    ];
    for a in ["sh", "wget", "grep", "sed", "tr", "cat", "ls"] {
        l1.push(E::Link(
            Box::leak(format!("bin/{a}").into_boxed_str()),
            "busybox",
        ));
    }
    let l2 = vec![
        E::File("data/.wh.gone", b"", 0o644),
        E::File("data/opq/.wh..wh..opq", b"", 0o644),
        E::File("data/opq/new", b"n", 0o644),
        E::File("data/.wh.dir", b"", 0o644),
        E::Dir("data/dir/"),
        E::File("data/dir/y", b"y", 0o644),
    ];
    vec![tar_of(&l1), tar_of(&l2)]
}

/// Write a `docker save`-style archive of `layers` (uncompressed tars, as Docker writes them).
fn docker_archive(file: &Path, layers: &[Vec<u8>]) {
    let diff_ids: Vec<String> = layers.iter().map(|l| sha256_digest(l)).collect();
    let config = json!({
        "architecture": arch(),
        "os": "linux",
        "config": {"Env": ["PATH=/bin"], "WorkingDir": "/var/task"},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let config = serde_json::to_vec(&config).unwrap();
    let names: Vec<String> = (0..layers.len())
        .map(|i| format!("l{i}/layer.tar"))
        .collect();
    let manifest = json!([{"Config": "config.json", "RepoTags": ["base:1"], "Layers": names}]);
    let mut b = tar::Builder::new(std::fs::File::create(file).unwrap());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_mtime(1_700_000_000);
        b.append_data(&mut h, name, data).unwrap();
    };
    add("config.json", &config);
    for (n, l) in names.iter().zip(layers) {
        add(n, l);
    }
    add("manifest.json", &serde_json::to_vec(&manifest).unwrap());
    b.finish().unwrap();
}

/// A test's directory: its cache, its base archive and its images.
struct Work {
    _t: tempfile::TempDir,
    dir: PathBuf,
}

impl Work {
    fn new() -> Self {
        let t = tempfile::Builder::new()
            .prefix("inner-loop-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap();
        let dir = t.path().to_owned();
        Work { _t: t, dir }
    }
    fn cache(&self) -> PathBuf {
        self.dir.join("cache")
    }
    fn base(&self) -> PathBuf {
        let f = self.dir.join("base.tar");
        if !f.exists() {
            docker_archive(&f, &base_layers(b"pad"));
        }
        f
    }
    fn env<'a>(&'a self, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, String)> {
        let mut v = vec![("LAMINA_CACHE_DIR", self.cache().display().to_string())];
        v.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        v
    }
    fn lamina(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let env = self.env(env);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        lamina(args, &self.dir, &env)
    }
    fn lamina_ok(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let out = self.lamina(args, env);
        assert!(out.status.success(), "lamina {args:?}:\n{}", describe(&out));
        assert_no_panic(&out);
        out
    }
    /// Build the function: the archive base and a code layer whose `code` file says `code`.
    fn build(&self, tag: &str, code: &str, env: &[(&str, &str)]) -> (String, Output) {
        let src = self.dir.join(format!("code-{tag}"));
        write_file(&src.join("code"), code.as_bytes(), 0o644);
        let to = oci_ref(&self.dir.join("images"), tag);
        let base = format!("docker-archive:{}", self.base().display());
        let layer = format!("{}:/var/task", src.display());
        let out = self.lamina_ok(
            &[
                "build",
                "--base",
                &base,
                "--layer",
                &layer,
                "--entrypoint",
                r#"["/var/runtime/bootstrap"]"#,
                "--to",
                &to,
                "-q",
            ],
            env,
        );
        (to, out)
    }
    fn invoke(&self, image: &str, env: &[(&str, &str)]) -> (Value, String) {
        let out = self.lamina_ok(&["invoke", image], env);
        let v: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", describe(&out)));
        (v, stderr_of(&out))
    }
    /// The cache entries of `rootfs/` by the kind their marker names (`layer`, `top`, `copy`).
    fn entries(&self) -> BTreeMap<String, Vec<PathBuf>> {
        let mut out: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
        let dir = self.cache().join("rootfs");
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.file_name().unwrap().to_string_lossy().starts_with('.') {
                continue;
            }
            let marker = std::fs::read_to_string(p.join("complete"))
                .unwrap_or_else(|e| panic!("{}: no marker ({e})", p.display()));
            let kind = marker.split_whitespace().next().unwrap_or("").to_owned();
            out.entry(kind).or_default().push(p);
        }
        out
    }
}

fn count(m: &BTreeMap<String, Vec<PathBuf>>, kind: &str) -> usize {
    m.get(kind).map_or(0, Vec::len)
}

/// What the function must see: the base's whiteouts honoured, and its own code.
fn assert_sees(v: &Value, code: &str, stderr: &str) {
    assert_eq!(v["data"], "dir keep opq padding ", "{v}\n{stderr}");
    assert_eq!(
        v["opq"], "new ",
        "the opaque directory hides the base's files: {v}"
    );
    assert_eq!(
        v["dir"], "y ",
        "a deleted then recreated directory is new: {v}"
    );
    assert_eq!(v["code"], code, "{v}");
}

/// Both compositions: two images on one base share its layers (unpacked once), and the
/// second, whose code layer differs, unpacks only that layer.
fn shared_layers_are_unpacked_once(how: &str, said: &str) {
    let w = Work::new();
    let env = [("LAMINA_ROOTFS", how)];
    let (one, _) = w.build("one", "v1", &[]);
    let (two, _) = w.build("two", "v2", &[]);
    let (v, err) = w.invoke(&one, &env);
    assert_sees(&v, "v1", &err);
    assert!(
        err.contains("unpacked 3 of the 3 layers") && err.contains(said),
        "{err}"
    );
    let layers_after_one = count(&w.entries(), "layer");
    assert_eq!(layers_after_one, 3, "{:?}", w.entries());
    let (v, err) = w.invoke(&two, &env);
    assert_sees(&v, "v2", &err);
    assert!(
        err.contains("unpacked 1 of the 3 layers") && err.contains("(2 from the cache)"),
        "only the code layer is unpacked again: {err}"
    );
    assert_eq!(count(&w.entries(), "layer"), 4, "{:?}", w.entries());
    // Reused as it is the next time.
    let (v, err) = w.invoke(&one, &env);
    assert_sees(&v, "v1", &err);
    assert!(err.contains("reusing the root file system"), "{err}");
    let copies = count(&w.entries(), "copy");
    assert_eq!(copies, if how == "copy" { 2 } else { 0 });
}

#[test]
fn overlay_shares_layers_and_honours_whiteouts() {
    shared_layers_are_unpacked_once("overlay", "overlayfs of");
}

#[test]
fn the_copy_shares_layers_and_honours_whiteouts() {
    shared_layers_are_unpacked_once("copy", "a composed copy in");
}

#[test]
fn a_bad_lamina_rootfs_value_is_a_usage_error() {
    let w = Work::new();
    let (one, _) = w.build("one", "v1", &[]);
    let out = w.lamina(&["invoke", &one], &[("LAMINA_ROOTFS", "zfs")]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        stderr_of(&out).contains("LAMINA_ROOTFS"),
        "{}",
        describe(&out)
    );
}

/// The files of `dir` with their (inode, mtime in ns).
fn identities(dir: &Path) -> BTreeMap<PathBuf, (u64, i64)> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let m = e.metadata().unwrap();
        out.insert(
            e.path(),
            (m.ino(), m.mtime() * 1_000_000_000 + m.mtime_nsec()),
        );
    }
    out
}

/// A `docker-archive:` base is gzipped once: the second build takes the remembered gzip
/// blobs (its memo and the blobs are the same files, untouched), and builds the same image;
/// an archive written again (a new modification time) is read again.
#[test]
fn a_docker_archive_base_is_gzipped_once() {
    let w = Work::new();
    let (_, first) = w.build("one", "v1", &[]);
    let memos = w.cache().join("archives");
    let blobs = w.cache().join("blobs/sha256");
    let memo_files = identities(&memos);
    assert_eq!(memo_files.len(), 1, "one memo: {memo_files:?}");
    let memo: Value =
        serde_json::from_slice(&std::fs::read(memo_files.keys().next().unwrap()).unwrap()).unwrap();
    let layers = memo["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2, "{memo}");
    // The remembered blobs are the base's layers gzipped: they decompress to the diff_ids.
    let base = base_layers(b"pad");
    let mut gz_identity = BTreeMap::new();
    for (l, tar) in layers.iter().zip(&base) {
        assert_eq!(l["diff_id"], sha256_digest(tar));
        let path = blobs.join(hex_of(l["digest"].as_str().unwrap()));
        let gz = std::fs::read(&path).unwrap();
        assert_eq!(sha256_digest(&gz), l["digest"].as_str().unwrap());
        assert_eq!(gunzip(&gz), *tar);
        let m = std::fs::metadata(&path).unwrap();
        gz_identity.insert(path, (m.ino(), m.mtime_nsec()));
    }
    let (_, second) = w.build("two", "v1", &[]);
    // The memo was read, not written again (a rename would give it a new inode), and the blobs
    // were not made again.
    let after: BTreeMap<PathBuf, u64> = identities(&memos)
        .into_iter()
        .map(|(p, (ino, _))| (p, ino))
        .collect();
    let before: BTreeMap<PathBuf, u64> = memo_files
        .iter()
        .map(|(p, (ino, _))| (p.clone(), *ino))
        .collect();
    assert_eq!(after, before);
    for (path, id) in &gz_identity {
        let m = std::fs::metadata(path).unwrap();
        assert_eq!((m.ino(), m.mtime_nsec()), *id, "{}", path.display());
    }
    // The same base layers both times.
    let base_of = |tag: &str| {
        let (m, _, _) = read_layout(&w.dir.join("images"), tag);
        layer_digests(&m)[..2].to_vec()
    };
    assert_eq!(
        base_of("one"),
        base_of("two"),
        "{}\n{}",
        describe(&first),
        describe(&second)
    );
    // Written again: read again, under a new memo.
    let base = w.base();
    let data = std::fs::read(&base).unwrap();
    std::fs::remove_file(&base).unwrap();
    std::fs::write(&base, &data).unwrap();
    w.build("three", "v1", &[]);
    assert_eq!(identities(&memos).len(), 2);
    assert_eq!(base_of("one"), base_of("three"));
}

/// Bytes on disk under `dir` as `du` counts them: each file's blocks once.
fn du(dir: &Path) -> u64 {
    fn walk(p: &Path, seen: &mut std::collections::HashSet<(u64, u64)>, total: &mut u64) {
        let Ok(m) = std::fs::symlink_metadata(p) else {
            return;
        };
        if seen.insert((m.dev(), m.ino())) {
            *total += m.blocks() * 512;
        }
        if m.is_dir() {
            for e in std::fs::read_dir(p).unwrap().flatten() {
                walk(&e.path(), seen, total);
            }
        }
    }
    let mut total = 0;
    walk(dir, &mut Default::default(), &mut total);
    total
}

/// Incompressible bytes (a code layer that gzip cannot shrink), different for each `seed`.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The directories the cache's own accounting leaves out (the cache's, `blobs/sha256`'s,
/// `rootfs/`'s...): a few blocks each.
const DIR_SLACK: u64 = 16 * 4096;

/// Ten edits, each built and invoked, under a 6 MiB cap: the cache never holds more (as `du`
/// counts it), what went was the least recently used, and the last image still runs.
#[test]
fn the_cache_stays_under_its_cap_after_many_builds() {
    let w = Work::new();
    let cap: u64 = 6 << 20;
    let cap_s = cap.to_string();
    let env = [("LAMINA_CACHE_MAX", cap_s.as_str())];
    let mut evicted = false;
    let mut last = String::new();
    for i in 0..10 {
        let src = w.dir.join(format!("code-e{i}"));
        write_file(&src.join("blob"), &noise(i, 512 << 10), 0o644);
        let (image, out) = w.build(&format!("e{i}"), &format!("v{i}"), &env);
        evicted |= stderr_of(&out).contains("over its cap");
        let used = du(&w.cache());
        assert!(
            used <= cap + DIR_SLACK,
            "after build {i}: {used} bytes in the cache, over its cap of {cap}"
        );
        let (v, err) = w.invoke(&image, &env);
        assert_sees(&v, &format!("v{i}"), &err);
        evicted |= err.contains("over its cap");
        let used = du(&w.cache());
        assert!(
            used <= cap + DIR_SLACK,
            "after invoke {i}: {used} bytes in the cache, over its cap of {cap}\n{err}"
        );
        last = image;
    }
    assert!(
        evicted,
        "ten edits of 512 KiB each must have gone over 6 MiB"
    );
    // `lamina cache` agrees with du, and the last image runs from what is left.
    let out = w.lamina_ok(&["cache", "du", "--json"], &env);
    let u: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(u["max"], cap);
    let total = u["total"].as_u64().unwrap();
    assert!(total <= cap && total + DIR_SLACK >= du(&w.cache()), "{u}");
    let (v, err) = w.invoke(&last, &env);
    assert_sees(&v, "v9", &err);
    assert!(err.contains("reusing the root file system"), "{err}");
}

/// A bare HTTP/1.1 POST on loopback: the status line and the body.
fn post(addr: &str, path: &str, body: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    (
        head.lines().next().unwrap_or("").to_owned(),
        body.to_owned(),
    )
}

/// A `lamina run` in the background, killed when dropped.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start `lamina run IMAGE --port 0` and wait (up to a minute) for its invoke address.
fn serve(w: &Work, image: &str) -> (Running, String) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(lamina_bin())
        .args(["run", image, "--port", "0"])
        .env("LAMINA_CACHE_DIR", w.cache())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let running = Running(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(|l| l.ok())
        {
            if let Some(rest) = line.split("http://").nth(1) {
                let addr = rest.split('/').next().unwrap_or("").to_owned();
                let _ = tx.send(addr);
            }
        }
    });
    let addr = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("lamina run prints its invoke address within a minute");
    (running, addr)
}

/// While `lamina run` serves an image, `lamina cache prune --all` leaves the entries it uses
/// (and says so) and removes the rest; once it stops, they go too. Entries of the old layout
/// (one directory per image manifest) go at the first pruning, whatever the cap.
#[test]
fn an_entry_in_use_is_not_evicted_and_prune_reports_what_it_removed() {
    let w = Work::new();
    let (one, _) = w.build("one", "v1", &[]);
    let (two, _) = w.build("two", "v2", &[]);
    w.invoke(&two, &[]);
    let old = w.cache().join("rootfs").join("ab".repeat(32));
    write_file(&old.join("rootfs/bin/tool"), b"old layout", 0o755);
    std::fs::write(
        old.join("complete"),
        format!("sha256:{}\n", "ab".repeat(32)),
    )
    .unwrap();
    let out = w.lamina_ok(&["cache", "prune", "--json"], &[]);
    let p: Value = serde_json::from_slice(&out.stdout).unwrap();
    let removed = p["removed"].as_array().unwrap();
    assert_eq!(removed.len(), 1, "only the old layout's entry: {p}");
    assert_eq!(removed[0]["path"], old.display().to_string());
    assert!(!old.exists());

    let (_run, addr) = serve(&w, &one);
    let (status, body) = post(&addr, "/2015-03-31/functions/function/invocations", "{}");
    assert!(status.contains("200"), "{status}\n{body}");
    let in_use: Vec<PathBuf> = w.entries().into_values().flatten().collect();
    let out = w.lamina_ok(&["cache", "prune", "--all"], &[]);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        said.contains("entries in use by a running lamina were kept"),
        "{said}"
    );
    assert!(said.contains("removed blobs "), "{said}");
    assert!(said.contains("removed rootfs "), "{said}");
    let left: Vec<PathBuf> = w.entries().into_values().flatten().collect();
    // Image one's two base layers, code layer and top layer stay; two's code layer and top go.
    assert_eq!(left.len(), 4, "{left:?}");
    assert!(left.iter().all(|e| in_use.contains(e)));
    for e in in_use.iter().filter(|e| !left.contains(e)) {
        assert!(
            said.contains(&e.display().to_string()),
            "{} not reported:\n{said}",
            e.display()
        );
    }
    // Still served from the same root.
    let (status, body) = post(&addr, "/2015-03-31/functions/function/invocations", "{}");
    assert!(
        status.contains("200") && body.contains("\"code\":\"v1\""),
        "{status}\n{body}"
    );
    drop(_run);
    let out = w.lamina_ok(&["cache", "prune", "--all", "--json"], &[]);
    let p: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(p["removed"].as_array().unwrap().len(), 4, "{p}");
    assert_eq!(p["in_use"], 0);
    assert!(w.entries().is_empty());
}

/// Two prunings at once both succeed, and between them remove each entry once.
#[test]
fn two_concurrent_prunes_do_not_fail() {
    let w = Work::new();
    let (one, _) = w.build("one", "v1", &[]);
    let (two, _) = w.build("two", "v2", &[]);
    w.invoke(&one, &[("LAMINA_ROOTFS", "copy")]);
    w.invoke(&two, &[]);
    let entries: usize = w.entries().values().map(Vec::len).sum();
    let spawn = || {
        std::process::Command::new(lamina_bin())
            .args(["cache", "prune", "--all", "--json"])
            .env("LAMINA_CACHE_DIR", w.cache())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let mut rootfs_removed = 0;
    for out in [&a, &b] {
        assert!(out.status.success(), "{}", describe(out));
        let p: Value = serde_json::from_slice(&out.stdout).unwrap();
        rootfs_removed += p["removed"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["kind"] == "rootfs")
            .count();
    }
    assert_eq!(rootfs_removed, entries);
    assert!(w.entries().is_empty());
    assert!(
        std::fs::read_dir(w.cache().join("blobs/sha256"))
            .unwrap()
            .next()
            .is_none()
    );
}
