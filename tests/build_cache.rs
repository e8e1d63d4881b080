//! The registry as the build cache (`--cache`) and the local cache's content keys: checkouts of
//! one function in different directories, with other modification times, built by lamina
//! processes with separate empty local caches (fresh CI runners), against the CNCF
//! distribution registry on loopback behind a proxy that records every request.
//!
//! What is checked is what the peers saw and what was written: the layers each build reports
//! as built or found (`--json`'s `source`), the upload sessions the registry was asked for, and
//! image digests equal to those of builds without any cache.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;
use tempfile::TempDir;

/// A checkout of a small function: the fixture base (an OCI layout), code and dependencies in
/// two layers, the spec. Written fresh (new inodes, this moment's mtimes) under `root/name`.
fn checkout(root: &Path, name: &str, handler: &str, dep: &str) -> PathBuf {
    let dir = root.join(name);
    fs::create_dir_all(&dir).unwrap();
    copy_tree(&fixtures_dir().join("base"), &dir.join("base"));
    write_file(&dir.join("function/handler.py"), handler.as_bytes(), 0o644);
    write_file(&dir.join("function/util/helpers.py"), b"X = 1\n", 0o644);
    write_file(&dir.join("deps/pkg/__init__.py"), dep.as_bytes(), 0o644);
    write_file(&dir.join("deps/pkg/data.bin"), &vec![7u8; 300_000], 0o644);
    fs::write(
        dir.join("lamina.toml"),
        r#"base = "oci:base:latest"
platform = "linux/amd64"

[[layer]]
source = "deps"
dest = "/opt/python"

[[layer]]
source = "function"
dest = "/var/task"

[config]
cmd = ["handler.handle"]
"#,
    )
    .unwrap();
    dir
}

const HANDLER: &str = "def handle(event, context):\n    return 1\n";
const DEP: &str = "VERSION = 1\n";

/// `lamina build -f CHECKOUT/lamina.toml --to DEST --json EXTRA...` in a fresh sandbox (an
/// empty local cache): the JSON report and stderr.
fn build(sb: &Sandbox, dir: &Path, dest: &str, extra: &[&str]) -> (Value, String) {
    let mut args = strings(&[
        "build",
        "-f",
        path_str(&dir.join("lamina.toml")),
        "--to",
        dest,
    ]);
    args.push("--json".into());
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let out = sb.ok(&args);
    (parse_json(&out), stderr_of(&out))
}

/// The `source` of each layer the build wrote (bottom first).
fn sources(report: &Value) -> Vec<String> {
    report["layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["origin"] == "new")
        .map(|l| l["source"].as_str().unwrap_or("none").to_owned())
        .collect()
}

fn digest(report: &Value) -> String {
    report["digest"].as_str().unwrap().to_owned()
}

/// The digest a build with no cache at all gives (to a layout, in a fresh sandbox).
fn no_cache_digest(dir: &Path, t: &Path, name: &str) -> String {
    let sb = Sandbox::new(vec![]);
    let dest = oci_ref(&t.join(name), "latest");
    let (r, _) = build(&sb, dir, &dest, &["--no-cache"]);
    assert_eq!(sources(&r), ["built", "built"]);
    digest(&r)
}

/// Upload sessions opened (`POST …/blobs/uploads/`), mounts included.
fn upload_sessions(proxy: &FaultProxy) -> usize {
    proxy.count("POST", "/blobs/uploads/")
}

/// Two copies of a function in different directories, with different mtimes and inodes, and
/// one local cache: the second build is a local cache hit (by content key), same digest.
#[test]
fn a_moved_checkout_hits_the_local_cache_by_content() {
    let t = TempDir::new().unwrap();
    let a = checkout(t.path(), "a", HANDLER, DEP);
    let b = checkout(t.path(), "elsewhere/b", HANDLER, DEP);
    set_tree_times(&b.join("function"), 1_000_000);
    set_tree_times(&b.join("deps"), 2_000_000);
    let sb = Sandbox::new(vec![]);
    let (first, _) = build(&sb, &a, &oci_ref(&t.path().join("out-a"), "latest"), &[]);
    assert_eq!(sources(&first), ["built", "built"]);
    let (second, log) = build(&sb, &b, &oci_ref(&t.path().join("out-b"), "latest"), &[]);
    assert_eq!(sources(&second), ["localCache", "localCache"], "{log}");
    assert_eq!(digest(&first), digest(&second));
    assert!(log.contains("local cache"), "progress says where: {log}");
    verify_layout_blobs(&t.path().join("out-b"));

    // One byte changed in the code: that layer is built, the other still found.
    write_file(
        &b.join("function/handler.py"),
        HANDLER.replace('1', "2").as_bytes(),
        0o644,
    );
    let (third, _) = build(&sb, &b, &oci_ref(&t.path().join("out-c"), "latest"), &[]);
    assert_eq!(sources(&third), ["localCache", "built"]);
    assert_ne!(digest(&third), digest(&first));
}

/// Three checkouts (the second identical in another directory with other mtimes, the third
/// with one file changed) pushed in turn to one registry by fresh runners: the second finds
/// every layer in the registry cache and opens no upload session; the third builds only the
/// changed layer; every digest is the one of a build without any cache. A layout destination
/// then downloads the cached layers (verified) instead of building them.
#[test]
fn fresh_runners_share_layers_through_the_registry() {
    let t = TempDir::new().unwrap();
    let reg = Registry::plain();
    let proxy = FaultProxy::new(&reg.host);
    let one = checkout(t.path(), "one", HANDLER, DEP);
    let two = checkout(t.path(), "ci/runner-2/two", HANDLER, DEP);
    set_tree_times(&two, 1_500_000_000);
    let three = checkout(t.path(), "three", &HANDLER.replace('1', "3"), DEP);
    let dest = proxy.reference("team/fn:v1");

    let (r1, log1) = build(&Sandbox::new(vec![]), &one, &dest, &["--cache"]);
    assert_eq!(sources(&r1), ["built", "built"], "{log1}");
    assert!(registry_has(&reg, "team/fn:lamina-cache"), "{log1}");
    assert!(log1.contains("2 entries added"), "{log1}");

    proxy.reset_counts();
    let (r2, log2) = build(&Sandbox::new(vec![]), &two, &dest, &["--cache"]);
    assert_eq!(sources(&r2), ["registryCache", "registryCache"], "{log2}");
    assert_eq!(
        upload_sessions(&proxy),
        0,
        "no blob uploaded: {:?}",
        proxy.requests()
    );
    assert!(
        blob_fates(&r2).values().all(|(_, f)| f == "skipped"),
        "{r2}"
    );
    // Nor downloaded: the Lambda checks read the layers' indexes the cache recorded.
    for l in r2["layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["origin"] == "new")
    {
        let d = l["digest"].as_str().unwrap();
        assert_eq!(proxy.count("GET", d), 0, "layer {d} was downloaded");
    }
    assert_eq!(digest(&r2), digest(&r1));

    proxy.reset_counts();
    let (r3, log3) = build(
        &Sandbox::new(vec![]),
        &three,
        &proxy.reference("team/fn:v2"),
        &["--cache"],
    );
    assert_eq!(sources(&r3), ["registryCache", "built"], "{log3}");
    // The code layer streamed, and the cache document: never the dependencies' layer.
    let deps = r3["layers"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .nth(1)
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        proxy
            .requests()
            .iter()
            .all(|s| !s.target.contains(&deps) || s.method == "HEAD"),
        "the dependencies' layer was not sent again"
    );

    // Byte-identical to builds with no cache at all.
    assert_eq!(digest(&r1), no_cache_digest(&one, t.path(), "nc-1"));
    assert_eq!(digest(&r3), no_cache_digest(&three, t.path(), "nc-3"));
    reg.skopeo_pull("team/fn:v2", &oci_ref(&t.path().join("back"), "latest"));
    verify_layout_blobs(&t.path().join("back"));

    // A layout destination: the cached blobs are downloaded and verified, not built.
    let cache = proxy.reference("team/fn");
    let (r4, log4) = build(
        &Sandbox::new(vec![]),
        &two,
        &oci_ref(&t.path().join("oci-two"), "latest"),
        &["--cache", &cache],
    );
    assert_eq!(sources(&r4), ["registryCache", "registryCache"], "{log4}");
    assert_eq!(digest(&r4), digest(&r1));
    verify_layout_blobs(&t.path().join("oci-two"));
}

/// Two builds of different functions updating one cache at the same time lose no entry:
/// afterwards a fresh runner finds every layer of both.
#[test]
fn concurrent_builds_lose_no_cache_entry() {
    let t = TempDir::new().unwrap();
    let reg = Registry::plain();
    let dirs: Vec<PathBuf> = (0..2)
        .map(|i| {
            checkout(
                t.path(),
                &format!("f{i}"),
                &HANDLER.replace('1', &i.to_string()),
                &DEP.replace('1', &format!("{}", 10 + i)),
            )
        })
        .collect();
    let cache = format!("docker://{}/shared/cache", reg.host);
    // The writers' logs (with LAMINA_DEBUG set, each update attempt's digests) are shown if
    // an entry turns out lost.
    let writers: Vec<String> = std::thread::scope(|s| {
        let running: Vec<_> = dirs
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let (cache, dest) = (cache.clone(), format!("docker://{}/fn{i}:v1", reg.host));
                s.spawn(move || {
                    let (r, log) = build(&Sandbox::new(vec![]), d, &dest, &["--cache", &cache]);
                    assert_eq!(sources(&r), ["built", "built"], "{log}");
                    log
                })
            })
            .collect();
        running.into_iter().map(|h| h.join().unwrap()).collect()
    });
    if std::env::var_os("LAMINA_DEBUG").is_some() {
        eprintln!("the writers said:\n{}", writers.join("\n---\n"));
    }
    for (i, d) in dirs.iter().enumerate() {
        let dest = oci_ref(&t.path().join(format!("again{i}")), "latest");
        let (r, log) = build(&Sandbox::new(vec![]), d, &dest, &["--cache", &cache]);
        assert_eq!(
            sources(&r),
            ["registryCache", "registryCache"],
            "function {i}'s entries were lost: {log}\nthe writers said:\n{}",
            writers.join("\n---\n")
        );
    }
}

/// A foreign artifact under the cache's tag, and a cached blob whose bytes do not match its
/// digest: both are ignored with a warning, the layers built, the image the same as without
/// a cache. `--cache-verify` rebuilds what it finds and agrees with an honest cache.
#[test]
fn a_foreign_or_corrupt_cache_is_ignored_with_a_warning() {
    let t = TempDir::new().unwrap();
    let reg = Registry::plain();
    let dir = checkout(t.path(), "fn", HANDLER, DEP);
    let expected = no_cache_digest(&dir, t.path(), "nc");
    // An ordinary image pushed under the cache's tag.
    let foreign = format!("docker://{}/fn:lamina-cache", reg.host);
    build(&Sandbox::new(vec![]), &dir, &foreign, &[]);
    let dest = format!("docker://{}/fn:v1", reg.host);
    let (r, log) = build(&Sandbox::new(vec![]), &dir, &dest, &["--cache"]);
    assert!(
        log.contains("registry cache") && log.contains("ignored") && log.contains("artifactType"),
        "{log}"
    );
    assert_eq!(sources(&r), ["built", "built"]);
    assert_eq!(digest(&r), expected);
    // The foreign artifact was replaced by lamina's cache: a fresh runner now finds it.
    let (r, log) = build(
        &Sandbox::new(vec![]),
        &dir,
        &dest,
        &["--cache", "--cache-verify"],
    );
    assert_eq!(
        sources(&r),
        ["built", "built"],
        "--cache-verify builds: {log}"
    );
    assert_eq!(digest(&r), expected);

    // Corrupt the cached code layer in the registry's storage: a layout build downloads it,
    // finds the digest wrong, warns and builds.
    let code = r["layers"].as_array().unwrap().last().unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let hex = hex_of(&code);
    let stored = reg
        .repo_dir("fn")
        .join("../../blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data");
    let len = fs::metadata(&stored).unwrap().len() as usize;
    fs::write(&stored, vec![0u8; len]).unwrap();
    let cache = format!("docker://{}/fn", reg.host);
    let dest = oci_ref(&t.path().join("out"), "latest");
    let (r, log) = build(&Sandbox::new(vec![]), &dir, &dest, &["--cache", &cache]);
    assert_eq!(sources(&r), ["registryCache", "built"], "{log}");
    assert!(
        log.contains("warning: registry cache") && log.contains(&code),
        "{log}"
    );
    assert_eq!(digest(&r), expected);
    verify_layout_blobs(&t.path().join("out"));
}

/// `--cache-verify` rebuilds what a cache finds: a content key mapped to another layer (here
/// in the local cache, whose records are files) makes the build fail, naming both digests.
#[test]
fn cache_verify_fails_loudly_on_a_wrong_entry() {
    let t = TempDir::new().unwrap();
    let a = checkout(t.path(), "a", HANDLER, DEP);
    let b = checkout(t.path(), "b", &HANDLER.replace('1', "2"), DEP);
    let sb = Sandbox::new(vec![]);
    let (ra, _) = build(&sb, &a, &oci_ref(&t.path().join("oa"), "latest"), &[]);
    let (rb, _) = build(&sb, &b, &oci_ref(&t.path().join("ob"), "latest"), &[]);
    let code = |r: &Value| {
        r["layers"].as_array().unwrap().last().unwrap()["digest"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (code_a, code_b) = (code(&ra), code(&rb));
    assert_ne!(code_a, code_b);
    // The content-key record of a's code layer now names b's.
    let records = sb.root().join("cache/layers");
    let by_content = |digest: &str| {
        fs::read_dir(&records)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                p.file_name().unwrap().to_string_lossy().starts_with("b3-")
                    && fs::read_to_string(p).unwrap().contains(digest)
            })
            .unwrap_or_else(|| panic!("no content-key record for {digest}"))
    };
    fs::copy(by_content(&code_b), by_content(&code_a)).unwrap();

    let moved = checkout(t.path(), "moved/a", HANDLER, DEP);
    let mut args = strings(&["build", "-f", path_str(&moved.join("lamina.toml"))]);
    args.extend(strings(&["--to", &oci_ref(&t.path().join("oc"), "latest")]));
    args.push("--cache-verify".into());
    let out = sb.fail(&args);
    let err = stderr_of(&out);
    assert!(
        err.contains("--cache-verify") && err.contains(&code_a) && err.contains(&code_b),
        "{err}"
    );
    assert!(
        !t.path().join("oc").exists(),
        "nothing written on a mismatch"
    );
}

/// The default: a docker:// destination with no `--cache` and no `cache` field gets a
/// registry cache under `lamina-cache` in its repository. A second fresh runner, from another
/// checkout, finds every layer there with no flag at all; an unchanged rebuild on a runner
/// that already has the layers writes nothing to the cache (nothing to add); `--cache none`
/// does not touch it; `--no-cache` finds nothing in it (builds) but records what it built.
#[test]
fn registry_destinations_get_the_cache_by_default() {
    let t = TempDir::new().unwrap();
    let reg = Registry::plain();
    let proxy = FaultProxy::new(&reg.host);
    let one = checkout(t.path(), "one", HANDLER, DEP);
    let two = checkout(t.path(), "runner-2/two", HANDLER, DEP);
    set_tree_times(&two, 1_600_000_000);
    let dest = proxy.reference("team/fn:v1");
    let runner = Sandbox::new(vec![]);
    let (r1, log1) = build(&runner, &one, &dest, &[]);
    assert_eq!(sources(&r1), ["built", "built"], "{log1}");
    assert!(registry_has(&reg, "team/fn:lamina-cache"), "{log1}");
    assert!(log1.contains("2 entries added"), "{log1}");

    let (r2, log2) = build(&Sandbox::new(vec![]), &two, &dest, &[]);
    assert_eq!(sources(&r2), ["registryCache", "registryCache"], "{log2}");
    assert_eq!(digest(&r2), digest(&r1));

    // Unchanged, on the first runner again: its local cache has both layers; the registry
    // cache gets no write.
    proxy.reset_counts();
    let (r3, log3) = build(&runner, &one, &dest, &[]);
    assert_eq!(sources(&r3), ["localCache", "localCache"], "{log3}");
    let writes: Vec<_> = proxy
        .requests()
        .into_iter()
        .filter(|s| s.method == "PUT" || s.method == "POST" || s.method == "PATCH")
        .map(|s| format!("{} {}", s.method, s.target))
        .collect();
    assert!(
        writes
            .iter()
            .all(|w| !w.contains("lamina-cache") && !w.contains("/blobs/uploads")),
        "no upload, no write of the cache: {writes:?}\n{log3}"
    );
    assert_eq!(proxy.count("GET", "/blobs/"), 0, "{:?}", proxy.requests());

    proxy.reset_counts();
    let (r4, log4) = build(&Sandbox::new(vec![]), &two, &dest, &["--cache", "none"]);
    assert_eq!(sources(&r4), ["built", "built"], "{log4}");
    assert_eq!(proxy.count("", "lamina-cache"), 0, "{:?}", proxy.requests());
    assert_eq!(digest(&r4), digest(&r1));

    let three = checkout(t.path(), "three", &HANDLER.replace('1', "3"), DEP);
    let (r5, log5) = build(&Sandbox::new(vec![]), &three, &dest, &["--no-cache"]);
    assert_eq!(sources(&r5), ["built", "built"], "{log5}");
    assert!(
        log5.contains("1 entries added"),
        "the new layer is recorded: {log5}"
    );
    let (r6, log6) = build(&Sandbox::new(vec![]), &three, &dest, &[]);
    assert_eq!(sources(&r6), ["registryCache", "registryCache"], "{log6}");
    assert_eq!(digest(&r6), digest(&r5));
}

/// A cache that cannot be written (the registry refuses the PUT of its tag, as ECR does for a
/// tag that exists in a repository with immutable tags) or read (403 on another cache
/// repository) costs a one-line warning naming it: the build succeeds and pushes the same
/// image as a build without any cache.
#[test]
fn a_refused_cache_is_a_warning_and_the_push_succeeds() {
    let t = TempDir::new().unwrap();
    let reg = Registry::plain();
    let proxy = FaultProxy::new(&reg.host);
    let dir = checkout(t.path(), "fn", HANDLER, DEP);
    let expected = no_cache_digest(&dir, t.path(), "nc");
    proxy.fail_status(
        100,
        400,
        Match::new(&["PUT"], "/manifests/lamina-cache"),
        None,
    );
    let dest = proxy.reference("team/fn:v1");
    let (r, log) = build(&Sandbox::new(vec![]), &dir, &dest, &[]);
    assert_eq!(sources(&r), ["built", "built"], "{log}");
    assert_eq!(digest(&r), expected);
    assert_eq!(
        reg.manifest_digest("team/fn:v1"),
        expected,
        "the image is pushed"
    );
    let cache_ref = format!("{}/team/fn:lamina-cache", proxy.addr());
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("warning:")).collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(
        warnings[0].contains(&cache_ref) && warnings[0].contains("not updated"),
        "{log}"
    );
    assert!(!registry_has(&reg, "team/fn:lamina-cache"));

    // Another repository as the cache, refused altogether.
    proxy.fail_status(1000, 403, Match::new(&[], "/locked/cache/"), None);
    let cache = proxy.reference("locked/cache");
    let dest = proxy.reference("team/fn:v2");
    let (r, log) = build(&Sandbox::new(vec![]), &dir, &dest, &["--cache", &cache]);
    assert_eq!(sources(&r), ["built", "built"], "{log}");
    assert_eq!(reg.manifest_digest("team/fn:v2"), expected);
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("warning:")).collect();
    assert!(
        !warnings.is_empty()
            && warnings
                .iter()
                .all(|w| w.contains(&format!("{}/locked/cache:lamina-cache", proxy.addr()))),
        "{log}"
    );
}
