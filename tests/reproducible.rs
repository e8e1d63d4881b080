//! Reproducibility: the same spec and inputs give the same bytes, whatever the checkout's path,
//! modes, times, umask or locale; timestamps come only from SOURCE_DATE_EPOCH / --timestamp.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use common::*;
use tempfile::TempDir;

const SDE: &str = "1700000000";
const SDE_RFC3339: &str = "2023-11-14T22:13:20Z";

#[test]
fn copies_with_different_paths_modes_times_umask_and_locale_build_identically() {
    let t = TempDir::new().unwrap();
    let reference = build_fixture(t.path(), "reference", &[], &[]);

    let a = t.path().join("a");
    let b = t
        .path()
        .join("b")
        .join("a-much-longer-directory-name-so-paths-differ-in-length")
        .join("nested");
    fs::create_dir_all(&a).unwrap();
    fs::create_dir_all(&b).unwrap();
    let fx = fixtures_dir();

    // Copy A: umask 077 and no mode preservation: files 0600/0700, dirs 0700.
    sh(
        &format!(
            "umask 077; cp -R '{}' '{}'",
            fx.display(),
            a.join("fx").display()
        ),
        t.path(),
    );
    // Copy B: umask 002, modes preserved, then group/other write bits everywhere.
    sh(
        &format!(
            "umask 002; cp -a '{}' '{}'",
            fx.display(),
            b.join("fx").display()
        ),
        t.path(),
    );
    let fa = a.join("fx");
    let fb = b.join("fx");
    for (p, n) in tree_snapshot(&fb.join("function")) {
        let abs = fb.join("function").join(&p);
        match n {
            Node::Dir { .. } => chmod(&abs, 0o775),
            Node::File { mode, .. } => chmod(&abs, if mode & 0o111 != 0 { 0o775 } else { 0o664 }),
            _ => {}
        }
    }
    chmod(&fb.join("function"), 0o775);
    assert_eq!(mode_of(&fa.join("function/bootstrap")), 0o700);
    assert_eq!(mode_of(&fa.join("function/handler.sh")), 0o600);
    assert_eq!(mode_of(&fb.join("function/bootstrap")), 0o775);
    assert_eq!(mode_of(&fb.join("function/handler.sh")), 0o664);

    set_tree_times(&fa, 1_000_000_000);
    set_tree_times(&fb, 1_650_000_000);

    let build = |fxdir: &Path, env: &[(&str, &str)]| -> (String, PathBuf) {
        let layout = fxdir.parent().unwrap().join("out");
        let spec = fxdir.join("lamina.toml");
        let out = lamina_ok(
            &[
                "build",
                "-f",
                path_str(&spec),
                "--to",
                &oci_ref(&layout, "latest"),
            ],
            fxdir.parent().unwrap(),
            env,
        );
        (parse_digest(&out), layout)
    };
    let (da, la) = build(&fa, &[("LC_ALL", "C"), ("LANG", "C"), ("TZ", "UTC")]);
    let (db, lb) = build(
        &fb,
        &[
            ("LC_ALL", "en_US.UTF-8"),
            ("LANG", "en_US.UTF-8"),
            ("TZ", "Pacific/Kiritimati"),
        ],
    );
    assert_eq!(da, db, "digests of the two copies");
    assert_eq!(
        manifest_bytes(&la, "latest"),
        manifest_bytes(&lb, "latest"),
        "manifest bytes"
    );
    assert_eq!(da, reference.digest, "copies build like the checkout");
    verify_layout_blobs(&la);
    verify_layout_blobs(&lb);
}

#[test]
fn source_date_epoch_sets_every_timestamp() {
    let t = TempDir::new().unwrap();
    let default = build_fixture(t.path(), "default", &[], &[]);
    let sde = build_fixture(t.path(), "sde", &[], &[("SOURCE_DATE_EPOCH", SDE)]);
    assert_ne!(sde.digest, default.digest);

    let (manifest, _, config) = read_layout(&sde.layout, "latest");
    let (_, _, base_config) = base_image("amd64");
    assert_eq!(config["created"].as_str(), Some(SDE_RFC3339));
    let history = config["history"].as_array().unwrap();
    let base_len = base_config["history"].as_array().unwrap().len();
    for h in &history[base_len..] {
        if let Some(created) = h["created"].as_str() {
            assert_eq!(created, SDE_RFC3339, "{h}");
        }
    }
    for i in 2..4 {
        let entries = tar_entries(&layer_tar(&sde.layout, &manifest, i));
        assert!(!entries.is_empty());
        for e in &entries {
            assert_eq!(
                e.mtime,
                1_700_000_000,
                "mtime of {} in layer {i}",
                e.path_str()
            );
        }
    }
    // The base layers are untouched.
    let (dm, _, _) = read_layout(&default.layout, "latest");
    assert_eq!(&layer_digests(&manifest)[..2], &layer_digests(&dm)[..2]);
}

#[test]
fn timestamp_flag_matches_source_date_epoch() {
    let t = TempDir::new().unwrap();
    let default = build_fixture(t.path(), "default", &[], &[]);
    let sde = build_fixture(t.path(), "sde", &[], &[("SOURCE_DATE_EPOCH", SDE)]);
    let flag = build_fixture(t.path(), "flag", &["--timestamp", SDE], &[]);
    assert_eq!(
        flag.digest, sde.digest,
        "--timestamp N == SOURCE_DATE_EPOCH=N"
    );
    let zero = build_fixture(t.path(), "zero", &["--timestamp", "0"], &[]);
    assert_eq!(zero.digest, default.digest, "--timestamp 0 is the default");

    let now = build_fixture(t.path(), "now", &["--timestamp", "now"], &[]);
    let (_, _, config) = read_layout(&now.layout, "latest");
    let created = config["created"].as_str().expect("created");
    let year: u32 = created[..4].parse().expect("RFC 3339 year");
    assert!(
        year >= 2024,
        "--timestamp now uses the wall clock: {created}"
    );
    verify_layout_blobs(&now.layout);
}

#[test]
fn building_twice_gives_identical_layouts() {
    let t = TempDir::new().unwrap();
    let one = build_fixture(t.path(), "one", &[], &[]);
    let two = build_fixture(t.path(), "two", &[], &[]);
    assert_eq!(one.digest, two.digest);
    assert_eq!(
        tree_snapshot(&one.layout),
        tree_snapshot(&two.layout),
        "whole layouts"
    );
    assert_eq!(
        fs::read(one.layout.join("index.json")).unwrap(),
        fs::read(two.layout.join("index.json")).unwrap()
    );

    // Rebuilding into the same layout changes nothing.
    let again = build_fixture(t.path(), "one", &[], &[]);
    assert_eq!(again.digest, one.digest);
    assert_eq!(tree_snapshot(&one.layout), tree_snapshot(&two.layout));
}

#[test]
fn fixture_layers_are_canonical_tars() {
    let t = TempDir::new().unwrap();
    let b = build_fixture(t.path(), "out", &[], &[]);
    let (manifest, _, _) = read_layout(&b.layout, "latest");

    for i in 2..4 {
        let desc = &manifest["layers"][i];
        let blob = read_blob(&b.layout, desc["digest"].as_str().unwrap());
        assert_clean_gzip_header(&blob, &format!("layer {i}"));
        let tar = gunzip(&blob);
        assert_eq!(tar.len() % 512, 0, "tar is whole blocks");
        let entries = tar_entries(&tar);
        assert_sorted(&entries, &format!("layer {i}"));
        for e in &entries {
            let p = e.path_str();
            assert!(!p.starts_with('/') && !p.starts_with("./"), "{p}");
            assert!(e.uname.is_empty() && e.gname.is_empty(), "names on {p}");
            assert_eq!((e.uid, e.gid), (0, 0), "owner of {p}");
            assert_eq!(e.mtime, 0, "mtime of {p}");
            if e.is_dir() {
                assert_eq!(e.mode, 0o755, "{p}");
            }
        }
        // Short names: plain ustar, no PAX or GNU extension headers.
        for (ty, path) in tar_raw_headers(&tar) {
            assert!(
                matches!(
                    ty,
                    tar::EntryType::Regular
                        | tar::EntryType::Directory
                        | tar::EntryType::Symlink
                        | tar::EntryType::Link
                ),
                "layer {i}: unexpected header type {ty:?} ({})",
                String::from_utf8_lossy(&path)
            );
        }
    }

    // The function layer holds exactly var/, var/task/ and the function minus *.md.
    let entries = tar_entries(&layer_tar(&b.layout, &manifest, 3));
    let expected = expected_function_tree();
    let mut want: BTreeSet<String> = ["var".to_owned(), "var/task".to_owned()].into();
    for p in expected.keys() {
        want.insert(format!("var/task/{}", p.display()));
    }
    let got: BTreeSet<String> = entries.iter().map(TarEntry::path_str).collect();
    assert_eq!(got, want);
    assert!(entry(&entries, "var").is_dir());
    assert!(entry(&entries, "var/task").is_dir());
    for (p, n) in &expected {
        let e = entry(&entries, &format!("var/task/{}", p.display()));
        match n {
            Node::Dir { mode } => assert!(e.is_dir() && e.mode == *mode, "{p:?}"),
            Node::File { mode, sha256 } => {
                assert!(e.is_file(), "{p:?}");
                assert_eq!(e.mode, *mode, "{p:?}");
                assert_eq!(&sha256_hex(&e.data), sha256, "{p:?}");
            }
            Node::Symlink { target } => {
                assert_eq!(e.entry_type, tar::EntryType::Symlink, "{p:?}");
                assert_eq!(
                    e.link.as_deref(),
                    Some(target.as_os_str().as_encoded_bytes()),
                    "{p:?}"
                );
            }
            Node::Other { .. } => panic!("special file in fixtures/function: {p:?}"),
        }
    }

    // The whiteout layer.
    let wh = tar_entries(&layer_tar(&b.layout, &manifest, 2));
    assert!(find_entry(&wh, "opt/.wh.old").is_some());
}
