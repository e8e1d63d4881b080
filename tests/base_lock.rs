//! Tracker issue 13, bases offline and pinned: `lamina.lock` pins a registry base per platform
//! on first use; later builds read it from the verified blob cache with no registry at all;
//! `--locked` refuses a lock that would move, `--update-base` moves it, `--offline` never
//! reaches a registry; the image records `org.opencontainers.image.base.{name,digest}`; a base
//! that cannot be fetched is named with the spec line that chose it.

mod common;

use std::ffi::OsString;
use std::fs;
use std::path::Path;

use common::*;

const BASE_NAME: &str = "org.opencontainers.image.base.name";
const BASE_DIGEST: &str = "org.opencontainers.image.base.digest";

/// A project in `dir`: lamina.toml on `base`, one code layer.
fn project(dir: &Path, base: &str) {
    fs::create_dir_all(dir.join("app")).unwrap();
    fs::write(
        dir.join("app/handler.py"),
        "def handler(e, c):\n    return 1\n",
    )
    .unwrap();
    fs::write(
        dir.join("lamina.toml"),
        format!(
            "base = \"{base}\"\nplatform = \"linux/amd64\"\n\n[[layer]]\nsource = \"app\"\n\
             dest = \"/var/task\"\n\n[config]\ncmd = \"handler.handler\"\n"
        ),
    )
    .unwrap();
}

fn build_to(sb: &Sandbox, out: &str, extra: &[&str]) -> std::process::Output {
    let mut args = strings(&["build", "-f", "proj/lamina.toml", "--to"]);
    args.push(oci_ref(&sb.work().join(out), "latest"));
    args.extend(strings(extra));
    sb.run(&args, None)
}

fn ok(out: std::process::Output) -> std::process::Output {
    assert!(out.status.success(), "{}", describe(&out));
    out
}

/// The base annotations of the image built into `work/out`.
fn base_annotations(sb: &Sandbox, out: &str) -> (String, String) {
    let (manifest, _, _) = read_layout(&sb.work().join(out), "latest");
    let a = &manifest["annotations"];
    (
        a[BASE_NAME].as_str().unwrap_or_default().to_owned(),
        a[BASE_DIGEST].as_str().unwrap_or_default().to_owned(),
    )
}

/// The fixture base pushed to a loopback registry as `base:latest` (with --all, so digests
/// are kept) and a project in `work/proj` built on it.
struct Pinned {
    reg: Registry,
    sb: Sandbox,
    proj: std::path::PathBuf,
    /// `docker://HOST/base:latest`.
    base: String,
    /// The digest of the index's amd64 manifest.
    amd64: String,
}

impl Pinned {
    fn new() -> Pinned {
        let reg = Registry::plain();
        reg.skopeo_push(&fixture_base_ref(), "base:latest", true);
        let sb = Sandbox::new(Vec::new());
        let proj = sb.work().join("proj");
        let base = reg.reference("base:latest");
        project(&proj, &base);
        let (_, amd64, _) = resolve_platform(&fixture_base(), "latest", "amd64");
        Pinned {
            reg,
            sb,
            proj,
            base,
            amd64,
        }
    }
}

#[test]
fn a_locked_base_builds_offline_from_the_cache_with_the_registry_stopped() {
    let Pinned {
        reg,
        sb,
        proj,
        base,
        amd64,
    } = Pinned::new();

    let first = parse_digest(&ok(build_to(&sb, "one", &[])));
    let lock_path = proj.join("lamina.lock");
    let lock = fs::read_to_string(&lock_path).expect("the first build writes lamina.lock");
    let name = base.trim_start_matches("docker://");
    assert!(
        lock.contains(&format!("name = \"{name}\""))
            && lock.contains("platform = \"linux/amd64\"")
            && lock.contains(&format!("digest = \"{amd64}\"")),
        "{lock}"
    );
    assert_eq!(
        base_annotations(&sb, "one"),
        (name.to_owned(), amd64.clone()),
        "the image records its base"
    );

    // Deterministic bytes: rewritten from scratch, the lock is the same file.
    fs::remove_file(&lock_path).unwrap();
    ok(build_to(&sb, "two", &[]));
    assert_eq!(fs::read_to_string(&lock_path).unwrap(), lock);

    drop(reg);
    // No registry: the lock and the verified cache are enough, with and without --offline.
    let offline = parse_digest(&ok(build_to(&sb, "three", &["--offline"])));
    assert_eq!(offline, first, "the same image, built offline");
    let plain = parse_digest(&ok(build_to(&sb, "four", &[])));
    assert_eq!(plain, first, "a locked, cached base needs no registry");
    assert_eq!(fs::read_to_string(&lock_path).unwrap(), lock);

    // A reference pinned by digest (the index the tag named), no lock entry for it: the
    // index, manifest, config and layers all come from the cache, with no registry.
    let index = tagged_descriptor(&fixture_base(), "latest")["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let pinned = format!("{base}@{index}");
    let text = fs::read_to_string(proj.join("lamina.toml")).unwrap();
    fs::write(proj.join("lamina.toml"), text.replace(&base, &pinned)).unwrap();
    let by_digest = build_to(&sb, "pinned", &["--offline"]);
    assert!(by_digest.status.success(), "{}", describe(&by_digest));
    assert_eq!(
        base_annotations(&sb, "pinned"),
        (
            pinned.trim_start_matches("docker://").to_owned(),
            amd64.clone()
        ),
        "the same base manifest, named as written"
    );
    let layers = |out: &str| layer_digests(&read_layout(&sb.work().join(out), "latest").0);
    assert_eq!(layers("pinned"), layers("one"), "the same layers");
    fs::write(proj.join("lamina.toml"), text).unwrap();
    fs::write(&lock_path, &lock).unwrap();

    // A cold cache offline: the image and what is missing are named.
    let cold = sb.root().join("cold-cache");
    let mut args = strings(&["build", "-f", "proj/lamina.toml", "--offline", "--to"]);
    args.push(oci_ref(&sb.work().join("five"), "latest"));
    let out = sb.run_env(
        &args,
        None,
        &[("LAMINA_CACHE_DIR", OsString::from(cold.as_os_str()))],
    );
    let err = stderr_of(&out);
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        err.contains(&base) && err.contains("--offline") && err.contains("missing"),
        "{}",
        describe(&out)
    );
    assert!(
        err.contains(&amd64),
        "the pinned digest: {}",
        describe(&out)
    );

    // No lock offline: the tag cannot be resolved; the message says how to get one.
    fs::remove_file(&lock_path).unwrap();
    let out = build_to(&sb, "six", &["--offline"]);
    assert!(!out.status.success(), "{}", describe(&out));
    let err = stderr_of(&out);
    assert!(
        err.contains(&base) && err.contains("lamina.lock") && err.contains("line 1"),
        "{}",
        describe(&out)
    );
    assert!(!lock_path.exists(), "a failed build writes no lock");
}

#[test]
fn locked_refuses_a_moved_tag_and_update_base_moves_it() {
    let reg = Registry::plain();
    reg.skopeo_push(&fixture_base_ref(), "base:latest", true);
    let sb = Sandbox::new(Vec::new());
    let proj = sb.work().join("proj");
    let base = reg.reference("base:latest");
    project(&proj, &base);
    let lock_path = proj.join("lamina.lock");

    // --locked with no lock: refused, nothing written.
    let out = build_to(&sb, "zero", &["--locked"]);
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(stderr_of(&out).contains("--locked"), "{}", describe(&out));
    assert!(!lock_path.exists());

    ok(build_to(&sb, "one", &[]));
    let (_, old) = base_annotations(&sb, "one");
    let lock = fs::read_to_string(&lock_path).unwrap();

    // Move the tag: another image (the fixture base plus a file) pushed as base:latest.
    fs::create_dir_all(sb.work().join("extra")).unwrap();
    fs::write(sb.work().join("extra/moved.txt"), "moved").unwrap();
    let mut args = strings(&[
        "build",
        "--base",
        &fixture_base_ref(),
        "--layer",
        "extra:/moved",
    ]);
    args.extend(strings(&[
        "--no-lambda-check",
        "--platform",
        "linux/amd64",
        "--to",
        &base,
    ]));
    sb.ok(&args);
    let new = reg.manifest_digest("base:latest");
    assert_ne!(new, old);

    // The lock pins: a plain build and a --locked one keep the old base.
    ok(build_to(&sb, "two", &["--locked"]));
    assert_eq!(base_annotations(&sb, "two").1, old);

    // Moving the lock under --locked is refused, naming the base and both digests.
    let out = build_to(&sb, "three", &["--locked", "--update-base"]);
    assert!(!out.status.success(), "{}", describe(&out));
    let err = stderr_of(&out);
    assert!(
        err.contains("lamina.lock") && err.contains(base.trim_start_matches("docker://")),
        "{}",
        describe(&out)
    );
    assert!(
        err.contains(&old) && err.contains(&new),
        "{}",
        describe(&out)
    );
    assert_eq!(fs::read_to_string(&lock_path).unwrap(), lock, "unchanged");

    ok(build_to(&sb, "four", &["--update-base"]));
    assert_eq!(base_annotations(&sb, "four").1, new);
    let moved = fs::read_to_string(&lock_path).unwrap();
    assert!(moved.contains(&new) && !moved.contains(&old), "{moved}");

    // `lamina update` moves it too, without building: the tag moved once more.
    fs::write(sb.work().join("extra/moved.txt"), "moved again").unwrap();
    sb.ok(&args);
    let newer = reg.manifest_digest("base:latest");
    assert_ne!(newer, new);
    let out = sb.ok(&strings(&["update", "-f", "proj/lamina.toml"]));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), newer);
    let err = stderr_of(&out);
    assert!(
        err.contains(&format!("{new} -> {newer}")),
        "{}",
        describe(&out)
    );
    let updated = fs::read_to_string(&lock_path).unwrap();
    assert!(
        updated.contains(&newer) && !updated.contains(&new),
        "{updated}"
    );
    // And the cache now holds it all: an offline build uses it.
    drop(reg);
    ok(build_to(&sb, "five", &["--offline"]));
    assert_eq!(base_annotations(&sb, "five").1, newer);
}

/// `lamina update` where nothing is locked: a usage error naming the base.
#[test]
fn update_without_a_registry_base_is_a_usage_error() {
    let sb = Sandbox::new(Vec::new());
    let proj = sb.work().join("proj");
    project(&proj, &fixture_base_ref());
    let out = sb.run(&strings(&["update", "-f", "proj/lamina.toml"]), None);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        stderr_of(&out).contains("nothing to update") && stderr_of(&out).contains("line 1"),
        "{}",
        describe(&out)
    );
    assert!(!proj.join("lamina.lock").exists());
}

/// A base that cannot be fetched: the image, the spec line that chose it, the cause and the
/// way forward.
#[test]
fn an_unfetchable_base_names_the_spec_line_and_the_fix() {
    let reg = Registry::plain();
    let sb = Sandbox::new(Vec::new());
    let proj = sb.work().join("proj");
    let missing = reg.reference("nope:latest");
    project(&proj, &missing);
    let out = build_to(&sb, "out", &["--retries", "0"]);
    assert!(!out.status.success(), "{}", describe(&out));
    let err = stderr_of(&out);
    assert!(
        err.contains(&format!("`base = \"{missing}\"` in lamina.toml line 1"))
            && err.contains("not found"),
        "{}",
        describe(&out)
    );
    drop(reg);
    let out = build_to(&sb, "out", &["--retries", "0"]);
    let err = stderr_of(&out);
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        err.contains("line 1") && err.contains("refused") && err.contains("lamina pull"),
        "{}",
        describe(&out)
    );
}

/// A registry that wants credentials the build does not have: the base, the spec line and
/// `lamina login` are named.
#[test]
fn a_base_behind_credentials_names_login() {
    let reg = Registry::tls_basic("alice", "s3cret-pw");
    let sb = Sandbox::new(vec!["s3cret-pw".into()]);
    let proj = sb.work().join("proj");
    let base = reg.reference("base:latest");
    project(&proj, &base);
    let mut extra: Vec<String> = reg.lamina_flags();
    extra.extend(strings(&["--retries", "0"]));
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let out = build_to(&sb, "out", &extra);
    assert!(!out.status.success(), "{}", describe(&out));
    let err = stderr_of(&out);
    assert!(
        err.contains(&base) && err.contains("line 1") && err.contains("lamina login"),
        "{}",
        describe(&out)
    );
}

/// The blob cache heals: a cached manifest or layer of a pinned base whose bytes no longer
/// match its digest is removed and fetched again (a warning names it), the image unchanged;
/// offline, the damage is named instead. And `lamina pull` of an image pinned by digest and
/// all cached reads it from the cache with no registry.
#[test]
fn a_damaged_cache_blob_is_fetched_again_and_a_cached_pinned_pull_needs_no_registry() {
    let Pinned {
        reg,
        sb,
        base,
        amd64,
        ..
    } = Pinned::new();
    let first = parse_digest(&ok(build_to(&sb, "one", &[])));
    let blobs = sb.root().join("cache/blobs/sha256");
    let damage = |hex: &str| {
        let p = blobs.join(hex);
        let len = fs::metadata(&p).expect("the blob is cached").len() as usize;
        // A new file (not a write through the inode the output layouts share).
        fs::remove_file(&p).unwrap();
        fs::write(&p, vec![b'x'; len]).unwrap();
    };
    let intact = |hex: &str| sha256_hex(&fs::read(blobs.join(hex)).unwrap()) == hex;
    // Damage `digest`'s blob, build into `out`: the same image, a warning naming the blob
    // and saying `word`, the blob whole again in the cache.
    let heals = |digest: &str, out: &str, word: &str| {
        damage(hex_of(digest));
        let out = ok(build_to(&sb, out, &[]));
        assert_eq!(parse_digest(&out), first, "{}", describe(&out));
        let err = stderr_of(&out);
        assert!(
            err.contains("warning") && err.contains(digest) && err.contains(word),
            "{err}"
        );
        assert!(intact(hex_of(digest)), "fetched again into the cache");
    };
    // The manifest, then a base layer (same size, other bytes).
    heals(&amd64, "two", "does not match");
    let layer = layer_digests(&read_layout(&sb.work().join("one"), "latest").0)[0].clone();
    heals(&layer, "three", "again");

    // Offline, the same damage is named, with the way out.
    damage(hex_of(&layer));
    let out = build_to(&sb, "four", &["--offline"]);
    assert!(!out.status.success(), "{}", describe(&out));
    let err = stderr_of(&out);
    assert!(
        err.contains(&layer) && err.contains("without --offline"),
        "{err}"
    );
    assert!(!sb.work().join("four").exists(), "nothing written");
    ok(build_to(&sb, "five", &[]));

    // A pull pinned by digest: the first reaches the registry, the second, all cached, not.
    let pinned = format!("{}@{amd64}", base.trim_end_matches(":latest"));
    let pull = |out: &str| {
        let mut args = strings(&["pull", &pinned]);
        args.push(oci_ref(&sb.work().join(out), "latest"));
        args.extend(strings(&["--platform", "linux/amd64"]));
        sb.run(&args, None)
    };
    let online = parse_digest(&ok(pull("p1")));
    assert_eq!(online, amd64);
    drop(reg);
    let offline = ok(pull("p2"));
    assert_eq!(parse_digest(&offline), amd64, "{}", describe(&offline));
    let layers = |out: &str| layer_digests(&read_layout(&sb.work().join(out), "latest").0);
    assert_eq!(layers("p2"), layers("p1"));
}
