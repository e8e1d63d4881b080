//! Issue 11, crash and concurrency hardening of outputs: concurrent writers of one layout,
//! symlinked destinations, blobs shared with a user's base, staging left by killed runs, and a
//! full disk.

mod common;

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use tempfile::TempDir;

/// `lamina build` of the fixture to `dest` with `extra` flags, as a command (cache in `cache`).
fn build_cmd(work: &Path, cache: &Path, dest: &str, extra: &[&str]) -> Command {
    let mut cmd = Command::new(lamina_bin());
    cmd.args(["build", "-f", path_str(&fixture_spec()), "--to", dest])
        .args(extra)
        .current_dir(work)
        .env_remove("SOURCE_DATE_EPOCH")
        .env("LAMINA_CACHE_DIR", cache)
        .env("TMPDIR", cache)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Entries of `dir` whose name starts with `prefix`.
fn entries(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Wait (bounded) until `child` has a staging directory in `dir` (not one of `others`)
/// holding a layer being written with at least `min` bytes; returns the staging directory.
fn wait_for_staging(child: &mut Child, dir: &Path, others: &[&Path], min: u64) -> PathBuf {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        for s in entries(dir, ".lamina-") {
            if others.contains(&s.as_path()) {
                continue;
            }
            let blobs = s.join("blobs/sha256");
            let big = entries(&blobs, ".layer-")
                .iter()
                .any(|f| fs::metadata(f).is_ok_and(|m| m.len() >= min));
            if big {
                return s;
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("lamina ended ({status}) before its staging directory was seen");
        }
        assert!(Instant::now() < deadline, "no staging directory in time");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(child: &Child, sig: &str) {
    let st = Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(st.success(), "kill -{sig} failed");
}

/// Wait (bounded) for `child` to end; its output.
fn finish(child: Child) -> std::process::Output {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(out) => out.expect("wait for lamina"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("lamina {pid} did not end in time");
        }
    }
}

#[test]
fn concurrent_builds_into_one_layout_keep_every_tag_and_blob() {
    let t = TempDir::new().unwrap();
    let cache = t.path().join("cache");
    fs::create_dir_all(&cache).unwrap();
    let layout = t.path().join("shared");
    lamina_ok(
        &[
            "build",
            "-f",
            path_str(&fixture_spec()),
            "--to",
            &oci_ref(&layout, "seed"),
        ],
        t.path(),
        &[("LAMINA_CACHE_DIR", path_str(&cache))],
    );
    // Many blobs make each writer's read-modify-swap long: the window where tags got lost.
    let blobs = layout.join("blobs/sha256");
    for i in 0..3000u32 {
        let data = format!("filler {i}");
        fs::write(blobs.join(sha256_hex(data.as_bytes())), data).unwrap();
    }
    let mut expected = vec!["seed".to_owned()];
    for round in 0..3 {
        let children: Vec<(String, Child)> = (0..4)
            .map(|i| {
                let tag = format!("r{round}-p{i}");
                let label = format!("tag={tag}");
                let child = build_cmd(
                    t.path(),
                    &cache,
                    &oci_ref(&layout, &tag),
                    &["--label", &label],
                )
                .spawn()
                .expect("spawn lamina");
                (tag, child)
            })
            .collect();
        for (tag, child) in children {
            let out = finish(child);
            assert!(out.status.success(), "build of {tag}:\n{}", describe(&out));
            expected.push(tag);
        }
        let tags = layout_tags(&layout);
        for tag in &expected {
            assert!(
                tags.contains_key(tag),
                "round {round}: tag {tag} lost; tags: {:?}",
                tags.keys()
            );
        }
    }
    verify_layout_blobs(&layout);
    assert!(entries(t.path(), ".lamina-").is_empty(), "staging left");
}

#[test]
fn a_symlinked_layout_is_written_through_to_its_target() {
    let t = TempDir::new().unwrap();
    let real = t.path().join("real");
    let first = build_fixture(t.path(), "real", &[], &[]);
    let link = t.path().join("linkdest");
    symlink(&real, &link).unwrap();
    lamina_ok(
        &[
            "build",
            "-f",
            path_str(&fixture_spec()),
            "--to",
            "oci:linkdest:second",
            "--label",
            "x=y",
        ],
        t.path(),
        &[],
    );
    assert!(
        fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink(),
        "the link was replaced"
    );
    assert_eq!(fs::read_link(&link).unwrap(), real);
    let tags = layout_tags(&real);
    assert_eq!(
        tags.get("latest"),
        Some(&first.digest),
        "old tag kept: {tags:?}"
    );
    assert!(
        tags.contains_key("second"),
        "new tag in the link's target: {tags:?}"
    );
    verify_layout_blobs(&real);
    assert!(entries(t.path(), ".lamina-").is_empty());

    // An archive through a link: the link stays, its target gets the archive.
    let tar = t.path().join("real.tar");
    fs::write(&tar, b"old").unwrap();
    symlink(&tar, t.path().join("link.tar")).unwrap();
    lamina_ok(
        &[
            "build",
            "-f",
            path_str(&fixture_spec()),
            "--to",
            "oci-archive:link.tar:latest",
        ],
        t.path(),
        &[],
    );
    assert!(
        fs::symlink_metadata(t.path().join("link.tar"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(
        fs::metadata(&tar).unwrap().len() > 1000,
        "the target holds the archive"
    );

    // A link to nothing is refused, and nothing is created.
    let dangling = t.path().join("dangling");
    symlink(t.path().join("nowhere"), &dangling).unwrap();
    let out = lamina(
        &[
            "build",
            "-f",
            path_str(&fixture_spec()),
            "--to",
            "oci:dangling:latest",
        ],
        t.path(),
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let err = stderr_of(&out);
    assert!(
        err.contains("dangling") && err.contains("symbolic link"),
        "{err}"
    );
    assert!(!t.path().join("nowhere").exists());
    assert!(
        fs::symlink_metadata(&dangling)
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

#[test]
fn editing_a_base_blob_in_place_leaves_earlier_outputs_intact() {
    let t = TempDir::new().unwrap();
    let base = t.path().join("mybase");
    copy_tree(&fixture_base(), &base);
    let base_ref = oci_ref(&base, "latest");
    let b = build_fixture(t.path(), "out", &["--base", &base_ref], &[]);
    verify_layout_blobs(&b.layout);
    // The user edits a base layer blob in place, same size, and puts its mtime back.
    let (manifest, _, _) = resolve_platform(&base, "latest", "amd64");
    for digest in layer_digests(&manifest) {
        let p = blob_path(&base, &digest);
        let mtime = fs::metadata(&p).unwrap().modified().unwrap();
        let mut f = fs::OpenOptions::new().write(true).open(&p).unwrap();
        let len = f.metadata().unwrap().len();
        f.seek(SeekFrom::Start(len / 2)).unwrap();
        f.write_all(b"EDITED").unwrap();
        f.set_modified(mtime).unwrap();
    }
    // The earlier output shares nothing with the edited files.
    verify_layout_blobs(&b.layout);
}

#[test]
fn sigterm_removes_staging_and_later_runs_sweep_a_killed_runs_staging() {
    let t = TempDir::new().unwrap();
    let cache = t.path().join("cache");
    fs::create_dir_all(&cache).unwrap();
    let noise = t.path().join("noise.bin");
    write_noise(&noise, 120 << 20, 0x5eed);
    let layer = format!("{}:/data/noise.bin", noise.display());
    let out_dir = t.path().join("outs");
    fs::create_dir_all(&out_dir).unwrap();
    let dest = oci_ref(&out_dir.join("img"), "latest");
    let big = |cache: &Path| build_cmd(t.path(), cache, &dest, &["--layer", &layer]);

    // SIGTERM mid-way: the staging directory goes, nothing reaches the destination.
    let mut child = big(&cache).spawn().unwrap();
    let staging = wait_for_staging(&mut child, &out_dir, &[], 1 << 20);
    signal(&child, "TERM");
    let out = finish(child);
    assert_eq!(out.status.code(), Some(143), "{}", describe(&out));
    assert!(
        !staging.exists(),
        "staging {} left after SIGTERM",
        staging.display()
    );
    assert!(
        entries(&out_dir, ".").is_empty(),
        "{:?}",
        entries(&out_dir, "")
    );
    assert!(!out_dir.join("img").exists());

    // kill -9 leaves it; a stopped (live) owner's staging is left alone by another build;
    // once its owner is gone, the next build removes it.
    let mut killed = big(&cache).spawn().unwrap();
    let stale = wait_for_staging(&mut killed, &out_dir, &[], 1 << 20);
    signal(&killed, "KILL");
    let _ = finish(killed);
    assert!(stale.exists(), "kill -9 cannot clean up");
    let mut stopped = big(&cache).spawn().unwrap();
    let live = wait_for_staging(&mut stopped, &out_dir, &[&stale], 1 << 20);
    signal(&stopped, "STOP");
    // Debris from a pid that cannot exist, and from an older lamina (no pid in the name,
    // young: kept).
    let ghost = out_dir.join(".lamina-999999999-abcdef");
    fs::create_dir_all(ghost.join("blobs/sha256")).unwrap();
    fs::write(ghost.join("blobs/sha256/.layer-x"), vec![0u8; 4096]).unwrap();
    let small = build_cmd(
        t.path(),
        &cache,
        &oci_ref(&out_dir.join("small"), "latest"),
        &[],
    )
    .output()
    .unwrap();
    assert!(small.status.success(), "{}", describe(&small));
    assert!(
        !stale.exists(),
        "the killed run's staging {} was not removed",
        stale.display()
    );
    assert!(!ghost.exists(), "a dead owner's staging was not removed");
    assert!(
        live.exists(),
        "a live owner's staging {} was removed",
        live.display()
    );
    signal(&stopped, "CONT");
    signal(&stopped, "TERM");
    let out = finish(stopped);
    assert_eq!(out.status.code(), Some(143), "{}", describe(&out));
    assert!(!live.exists());
    // The cache holds no temporary files either.
    let leftovers: Vec<_> = walk(&cache)
        .into_iter()
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy().to_string();
            n.starts_with(".layer-") || n.starts_with(".copy-") || n.starts_with("lamina-")
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Every path under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                v.extend(walk(&p));
            }
            v.push(p);
        }
    }
    v
}

/// A full disk without root: a 1 MiB tmpfs mounted in a user and mount namespace
/// (`unshare -rm`), the destination on it, a 32 MiB incompressible layer (much more than fits,
/// so the disk fills while the layer is still being tarred).
#[test]
fn a_full_disk_is_reported_as_such_naming_the_destination() {
    let t = TempDir::new().unwrap();
    let cache = t.path().join("cache");
    fs::create_dir_all(&cache).unwrap();
    let noise = t.path().join("noise.bin");
    write_noise(&noise, 32 << 20, 0xf00d);
    let small = t.path().join("small");
    fs::create_dir_all(&small).unwrap();
    let dest = oci_ref(&small.join("out"), "latest");
    let layer = format!("{}:/data/noise.bin", noise.display());
    let script = format!(
        "mount -t tmpfs -o size=1m tmpfs '{}' && exec \"$@\"",
        small.display()
    );
    let out = Command::new("unshare")
        .args([
            "-rm",
            "sh",
            "-c",
            &script,
            "sh",
            lamina_bin(),
            "build",
            "-f",
        ])
        .arg(fixture_spec())
        .args(["--to", &dest, "--layer", &layer, "--no-cache"])
        .current_dir(t.path())
        .env("LAMINA_CACHE_DIR", &cache)
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .expect("run unshare (util-linux) to mount a small tmpfs");
    let err = stderr_of(&out);
    assert!(
        !err.contains("mount:") && !err.contains("unshare:"),
        "this test needs user namespaces and tmpfs mounts (unshare -rm):\n{err}"
    );
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(err.contains("No space left on device"), "{err}");
    assert!(
        err.contains(path_str(&small)),
        "the destination is named: {err}"
    );
    assert!(!err.contains("compressing thread stopped"), "{err}");
}

/// The layout lock is never put into a directory lamina refuses to write.
#[test]
fn a_directory_that_is_not_a_layout_gets_no_lock_file() {
    let t = TempDir::new().unwrap();
    let mine = t.path().join("mine");
    fs::create_dir(&mine).unwrap();
    fs::write(mine.join("notes.txt"), b"mine").unwrap();
    let out = lamina(
        &[
            "build",
            "-f",
            path_str(&fixture_spec()),
            "--to",
            "oci:mine:latest",
        ],
        t.path(),
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        stderr_of(&out).contains("is not an OCI image layout"),
        "{}",
        describe(&out)
    );
    let names: Vec<_> = fs::read_dir(&mine)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("notes.txt")]);
    assert!(entries(t.path(), ".lamina-").is_empty());
}
