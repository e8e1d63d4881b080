//! Layer sources (directories, single files, zips): modes, links, odd names, spec-fixed modes and
//! ownership, excludes — checked in the layer tar and after `umoci unpack`.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use common::*;
use tempfile::TempDir;

const NON_UTF8: &[u8] = b"latin1-\xe9t\xe9.bin";
const UNICODE: &str = "with space \u{fc}ber \u{2603}.txt";

fn deep_dir() -> PathBuf {
    let mut p = PathBuf::from("deep");
    for c in ['a', 'b', 'c'] {
        p.push(c.to_string().repeat(50));
    }
    p
}

fn long_name() -> String {
    "L".repeat(150)
}

/// A source tree with every kind of thing lamina must normalize or keep.
fn make_tree(root: &Path) {
    fs::create_dir(root).unwrap();
    write_file(&root.join("f0600.txt"), b"six hundred\n", 0o600);
    write_file(&root.join("f0664.txt"), b"six six four\n", 0o664);
    write_file(&root.join("x0700.sh"), b"#!/bin/sh\necho 700\n", 0o700);
    write_file(&root.join("x0775.sh"), b"#!/bin/sh\necho 775\n", 0o775);
    write_file(&root.join("private/inner.txt"), b"inner\n", 0o644);
    chmod(&root.join("private"), 0o700);
    fs::create_dir(root.join("empty")).unwrap();
    chmod(&root.join("empty"), 0o775);
    write_file(&root.join("sub/target.txt"), b"target\n", 0o644);
    symlink("sub", root.join("dirlink")).unwrap();
    symlink("../f0600.txt", root.join("sub/rel-link")).unwrap();
    write_file(&root.join("hl-a.txt"), b"hard linked\n", 0o644);
    fs::hard_link(root.join("hl-a.txt"), root.join("hl-b.txt")).unwrap();
    let deep = root.join(deep_dir());
    write_file(&deep.join(long_name()), b"long\n", 0o644);
    write_file(
        &root.join(OsStr::from_bytes(NON_UTF8)),
        b"\xff\xfe bytes\n",
        0o644,
    );
    write_file(&root.join(UNICODE), "unicode \u{2603}\n".as_bytes(), 0o644);
}

struct Built {
    _t: TempDir,
    src: PathBuf,
    layout: PathBuf,
}

/// Build the fixture base + one layer `SRC:/opt/app`, from flags only.
fn build_tree() -> Built {
    let t = TempDir::new().unwrap();
    let src = t.path().join("tree");
    make_tree(&src);
    let layout = t.path().join("out");
    let layer = format!("{}:/opt/app", src.display());
    let out = lamina_ok(
        &[
            "build",
            "--base",
            &fixture_base_ref(),
            "--platform",
            "linux/amd64",
            "--layer",
            &layer,
            "--to",
            &oci_ref(&layout, "latest"),
        ],
        t.path(),
        &[],
    );
    let digest = parse_digest(&out);
    let (_, d, _) = read_layout(&layout, "latest");
    assert_eq!(d, digest);
    verify_layout_blobs(&layout);
    Built { _t: t, src, layout }
}

#[test]
fn directory_tree_modes_links_and_names_roundtrip() {
    let b = build_tree();
    let u = umoci_unpack(&b.layout, "latest");
    let app = u.rootfs.join("opt/app");

    // Whole tree: normalized modes, same bytes, same symlink targets, same names.
    let expected = normalized(&tree_snapshot(&b.src));
    let got = tree_snapshot(&app);
    assert_eq!(got, expected);

    let mode = |p: &str| {
        fs::symlink_metadata(app.join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode("f0600.txt"), 0o644);
    assert_eq!(mode("f0664.txt"), 0o644);
    assert_eq!(mode("x0700.sh"), 0o755);
    assert_eq!(mode("x0775.sh"), 0o755);
    assert_eq!(mode("private"), 0o755);
    assert_eq!(mode("empty"), 0o755);
    assert!(list_dir(&app.join("empty")).is_empty());
    assert_eq!(
        fs::read_link(app.join("dirlink")).unwrap(),
        Path::new("sub")
    );
    assert_eq!(
        fs::read_link(app.join("sub/rel-link")).unwrap(),
        Path::new("../f0600.txt")
    );
    assert_eq!(
        fs::read(app.join("sub/rel-link")).unwrap(),
        b"six hundred\n",
        "relative link resolves inside the image"
    );

    // Hard links: one inode after unpack.
    let a = fs::metadata(app.join("hl-a.txt")).unwrap();
    let bb = fs::metadata(app.join("hl-b.txt")).unwrap();
    assert_eq!(a.ino(), bb.ino(), "hard link pair shares an inode");

    // Long path (> 255 bytes in the image) and odd names.
    let long = app.join(deep_dir()).join(long_name());
    assert!(
        long.as_os_str().len() > 255,
        "the deep path is long enough to need PAX"
    );
    assert_eq!(fs::read(&long).unwrap(), b"long\n");
    assert_eq!(
        fs::read(app.join(OsStr::from_bytes(NON_UTF8))).unwrap(),
        b"\xff\xfe bytes\n"
    );
    assert_eq!(
        fs::read_to_string(app.join(UNICODE)).unwrap(),
        "unicode \u{2603}\n"
    );
}

#[test]
fn layer_tar_of_a_tree_is_canonical() {
    let b = build_tree();
    let (manifest, _, _) = read_layout(&b.layout, "latest");
    assert_eq!(layer_digests(&manifest).len(), 3, "base x2 + one layer");
    let tar = layer_tar(&b.layout, &manifest, 2);
    let entries = tar_entries(&tar);
    assert_sorted(&entries, "tree layer");

    // Parents of dest are directory entries.
    for p in ["opt", "opt/app"] {
        let e = entry(&entries, p);
        assert!(e.is_dir(), "{p} is a directory entry");
        assert_eq!(e.mode, 0o755, "{p}");
    }
    for e in &entries {
        assert!(
            e.path.starts_with(b"opt/app/") || e.path == b"opt/app" || e.path == b"opt",
            "entry outside dest: {}",
            e.path_str()
        );
        assert!(e.uname.is_empty(), "uname of {}", e.path_str());
        assert!(e.gname.is_empty(), "gname of {}", e.path_str());
        assert_eq!(e.mtime, 0, "mtime of {}", e.path_str());
        assert_eq!((e.uid, e.gid), (0, 0), "owner of {}", e.path_str());
    }

    // Hard links: the second one is a hard-link entry to the first.
    let a = entry(&entries, "opt/app/hl-a.txt");
    let hb = entry(&entries, "opt/app/hl-b.txt");
    assert!(a.is_file(), "first of the pair is a regular file");
    assert_eq!(a.data, b"hard linked\n");
    assert_eq!(
        hb.entry_type,
        tar::EntryType::Link,
        "second of the pair is a hard link"
    );
    assert_eq!(hb.link.as_deref(), Some(&b"opt/app/hl-a.txt"[..]));
    assert!(hb.data.is_empty(), "hard link stores no data");

    // Symlinks keep their targets.
    let l = entry(&entries, "opt/app/dirlink");
    assert_eq!(l.entry_type, tar::EntryType::Symlink);
    assert_eq!(l.link.as_deref(), Some(&b"sub"[..]));
    let l = entry(&entries, "opt/app/sub/rel-link");
    assert_eq!(l.link.as_deref(), Some(&b"../f0600.txt"[..]));
    assert!(
        find_entry(&entries, "opt/app/dirlink/target.txt").is_none(),
        "symlinked dirs are not followed"
    );

    // Names: long (PAX), non-UTF-8, unicode.
    let mut long = b"opt/app/".to_vec();
    long.extend_from_slice(deep_dir().join(long_name()).as_os_str().as_bytes());
    assert!(
        entries
            .iter()
            .any(|e| e.path == long && e.data == b"long\n"),
        "long path round-trips in the tar"
    );
    let mut odd = b"opt/app/".to_vec();
    odd.extend_from_slice(NON_UTF8);
    assert!(entries.iter().any(|e| e.path == odd), "non-UTF-8 name kept");
    assert!(find_entry(&entries, &format!("opt/app/{UNICODE}")).is_some());

    // PAX only: no GNU long-name headers; some PAX header for the long name.
    let raw = tar_raw_headers(&tar);
    assert!(
        !raw.iter()
            .any(|(t, _)| matches!(t, tar::EntryType::GNULongName | tar::EntryType::GNULongLink)),
        "GNU long-name headers used: {raw:?}"
    );
    assert!(
        raw.iter().any(|(t, _)| *t == tar::EntryType::XHeader),
        "a PAX header is needed for the long name"
    );
    assert!(
        !raw.iter().any(|(t, _)| *t == tar::EntryType::XGlobalHeader),
        "no global PAX headers"
    );
}

#[test]
fn spec_fixes_modes_and_ownership() {
    let t = TempDir::new().unwrap();
    let dir = t.path().join("spec");
    fs::create_dir(&dir).unwrap();
    make_tree(&dir.join("tree"));
    let spec = dir.join("lamina.toml");
    fs::write(
        &spec,
        format!(
            r#"base = "{base}"
platform = "linux/amd64"

[[layer]]
source = "tree"
dest = "/opt/app"
mode = 0o600
dir_mode = 0o700
uid = 1000
gid = 1000

[[layer]]
source = "tree"
dest = "/opt/app2"
mode = "0640"
dir_mode = "0750"
"#,
            base = fixture_base_ref()
        ),
    )
    .unwrap();
    let layout = t.path().join("out");
    let out = lamina_ok(
        &[
            "build",
            "-f",
            path_str(&spec),
            "--to",
            &oci_ref(&layout, "latest"),
        ],
        t.path(),
        &[],
    );
    parse_digest(&out);
    verify_layout_blobs(&layout);
    let (manifest, _, _) = read_layout(&layout, "latest");
    assert_eq!(layer_digests(&manifest).len(), 4);

    let check = |i: usize, prefix: &str, file_mode: u32, dir_mode: u32, owner: u64| {
        let entries = tar_entries(&layer_tar(&layout, &manifest, i));
        assert_sorted(&entries, prefix);
        let under = format!("{prefix}/");
        let mut files = 0;
        let mut dirs = 0;
        for e in &entries {
            assert!(e.uname.is_empty() && e.gname.is_empty(), "{}", e.path_str());
            assert_eq!(e.mtime, 0, "{}", e.path_str());
            if !e.path.starts_with(under.as_bytes()) {
                continue;
            }
            assert_eq!((e.uid, e.gid), (owner, owner), "owner of {}", e.path_str());
            match e.entry_type {
                tar::EntryType::Regular => {
                    files += 1;
                    assert_eq!(e.mode, file_mode, "mode of {}", e.path_str());
                }
                tar::EntryType::Directory => {
                    dirs += 1;
                    assert_eq!(e.mode, dir_mode, "mode of {}", e.path_str());
                }
                _ => {}
            }
        }
        assert!(
            files >= 8 && dirs >= 6,
            "{prefix}: {files} files, {dirs} dirs"
        );
        // A hard link stays a hard link whatever the mode.
        let hb = entry(&entries, &format!("{prefix}/hl-b.txt"));
        assert_eq!(hb.entry_type, tar::EntryType::Link);
        // The executable bit of the source no longer matters.
        assert_eq!(
            entry(&entries, &format!("{prefix}/x0775.sh")).mode,
            file_mode
        );
    };
    check(2, "opt/app", 0o600, 0o700, 1000);
    check(3, "opt/app2", 0o640, 0o750, 0);
}

#[test]
fn single_file_source_lands_at_dest_or_inside_dest_dir() {
    let t = TempDir::new().unwrap();
    let file = t.path().join("tool.sh");
    write_file(&file, b"#!/bin/sh\n", 0o700);
    let layout = t.path().join("out");
    let at = format!("{}:/opt/bin/renamed", file.display());
    let inside = format!("{}:/opt/lib/", file.display());
    lamina_ok(
        &[
            "build",
            "--base",
            &fixture_base_ref(),
            "--layer",
            &at,
            "--layer",
            &inside,
            "--to",
            &oci_ref(&layout, "latest"),
        ],
        t.path(),
        &[],
    );
    let (manifest, _, _) = read_layout(&layout, "latest");
    assert_eq!(layer_digests(&manifest).len(), 4);
    let e = tar_entries(&layer_tar(&layout, &manifest, 2));
    assert_sorted(&e, "file layer");
    assert!(entry(&e, "opt").is_dir() && entry(&e, "opt/bin").is_dir());
    assert_eq!(entry(&e, "opt/bin/renamed").mode, 0o755);
    let e = tar_entries(&layer_tar(&layout, &manifest, 3));
    assert_eq!(entry(&e, "opt/lib/tool.sh").data, b"#!/bin/sh\n");

    let u = umoci_unpack(&layout, "latest");
    assert_eq!(
        fs::read(u.rootfs.join("opt/bin/renamed")).unwrap(),
        b"#!/bin/sh\n"
    );
    assert!(u.rootfs.join("opt/lib/tool.sh").is_file());
}

#[test]
fn exclude_globs_drop_files_and_subtrees() {
    let t = TempDir::new().unwrap();
    let dir = t.path().join("proj");
    let src = dir.join("src");
    write_file(&src.join("main.py"), b"print(1)\n", 0o644);
    write_file(&src.join("NOTES.md"), b"notes\n", 0o644);
    write_file(&src.join("__pycache__/main.pyc"), b"pyc", 0o644);
    write_file(&src.join("pkg/mod.py"), b"x = 1\n", 0o644);
    write_file(&src.join("pkg/__pycache__/mod.pyc"), b"pyc", 0o644);
    write_file(&src.join("pkg/__pycache__/deeper/x.pyc"), b"pyc", 0o644);
    let spec = dir.join("lamina.toml");
    fs::write(
        &spec,
        format!(
            r#"base = "{}"

[[layer]]
source = "src"
dest = "/var/task"
exclude = ["*.md", "**/__pycache__"]
"#,
            fixture_base_ref()
        ),
    )
    .unwrap();
    let layout = t.path().join("out");
    lamina_ok(
        &[
            "build",
            "-f",
            path_str(&spec),
            "--to",
            &oci_ref(&layout, "latest"),
        ],
        t.path(),
        &[],
    );
    let (manifest, _, _) = read_layout(&layout, "latest");
    let entries = tar_entries(&layer_tar(&layout, &manifest, 2));
    let paths: Vec<String> = entries.iter().map(TarEntry::path_str).collect();
    assert_eq!(
        paths,
        vec![
            "var",
            "var/task",
            "var/task/main.py",
            "var/task/pkg",
            "var/task/pkg/mod.py"
        ]
    );
}

#[test]
fn zip_source_files_modes_and_symlinks() {
    let t = TempDir::new().unwrap();
    let zip_path = t.path().join("function.zip");
    write_zip(
        &zip_path,
        &[
            ZipItem::File("bootstrap", 0o755, b"#!/bin/sh\nexec ./app\n"),
            ZipItem::File("app.py", 0o644, b"def handler(e, c):\n    return 1\n"),
            ZipItem::File("secret.txt", 0o600, b"not so secret\n"),
            ZipItem::Dir("pkg", 0o700),
            ZipItem::File("pkg/mod.py", 0o664, b"X = 1\n"),
            ZipItem::Symlink("pkg/alias.py", "mod.py"),
            ZipItem::File("bin/tool", 0o775, b"tool\n"),
        ],
    );
    let layout = t.path().join("out");
    let layer = format!("{}:/var/task", zip_path.display());
    lamina_ok(
        &[
            "build",
            "--base",
            &fixture_base_ref(),
            "--layer",
            &layer,
            "--to",
            &oci_ref(&layout, "latest"),
        ],
        t.path(),
        &[],
    );
    verify_layout_blobs(&layout);
    let (manifest, _, _) = read_layout(&layout, "latest");
    let entries = tar_entries(&layer_tar(&layout, &manifest, 2));
    assert_sorted(&entries, "zip layer");
    assert!(entry(&entries, "var/task/bin").is_dir(), "implicit dir");
    assert_eq!(
        entry(&entries, "var/task/pkg/alias.py").entry_type,
        tar::EntryType::Symlink
    );

    let u = umoci_unpack(&layout, "latest");
    let task = u.rootfs.join("var/task");
    let snap = tree_snapshot(&task);
    let file = |data: &[u8], mode: u32| Node::File {
        mode,
        sha256: sha256_hex(data),
    };
    let expected: Snapshot = [
        ("app.py", file(b"def handler(e, c):\n    return 1\n", 0o644)),
        ("bin", Node::Dir { mode: 0o755 }),
        ("bin/tool", file(b"tool\n", 0o755)),
        ("bootstrap", file(b"#!/bin/sh\nexec ./app\n", 0o755)),
        ("pkg", Node::Dir { mode: 0o755 }),
        (
            "pkg/alias.py",
            Node::Symlink {
                target: PathBuf::from("mod.py"),
            },
        ),
        ("pkg/mod.py", file(b"X = 1\n", 0o644)),
        ("secret.txt", file(b"not so secret\n", 0o644)),
    ]
    .into_iter()
    .map(|(p, n)| (PathBuf::from(p), n))
    .collect();
    assert_eq!(snap, expected);
}

#[test]
fn zip_and_directory_with_the_same_content_give_the_same_layer() {
    let t = TempDir::new().unwrap();
    let dir = t.path().join("d");
    write_file(&dir.join("run"), b"#!/bin/sh\n", 0o755);
    write_file(&dir.join("lib/a.txt"), b"a\n", 0o644);
    symlink("a.txt", dir.join("lib/b.txt")).unwrap();
    let zip_path = t.path().join("d.zip");
    write_zip(
        &zip_path,
        &[
            ZipItem::File("run", 0o755, b"#!/bin/sh\n"),
            ZipItem::Dir("lib", 0o755),
            ZipItem::File("lib/a.txt", 0o644, b"a\n"),
            ZipItem::Symlink("lib/b.txt", "a.txt"),
        ],
    );
    // Compare the layers (the config's history may name the source differently).
    let build = |src: &Path, name: &str| -> (Vec<String>, Vec<String>) {
        let layout = t.path().join(name);
        let layer = format!("{}:/var/task", src.display());
        lamina_ok(
            &[
                "build",
                "--base",
                "scratch",
                "--layer",
                &layer,
                "--to",
                &oci_ref(&layout, "latest"),
            ],
            t.path(),
            &[],
        );
        let (manifest, _, config) = read_layout(&layout, "latest");
        (layer_digests(&manifest), diff_ids(&config))
    };
    assert_eq!(
        build(&dir, "from-dir"),
        build(&zip_path, "from-zip"),
        "a zip and a directory with the same files give the same layer"
    );
}

/// A directory with more than 100,000 entries (node_modules-like trees get there) becomes one
/// layer holding every file, in order.
#[test]
fn a_directory_with_over_100k_entries() {
    let t = tempfile::TempDir::new().unwrap();
    let dir = t.path().join("many");
    std::fs::create_dir(&dir).unwrap();
    const N: usize = 100_001;
    for i in 0..N {
        std::fs::File::create(dir.join(format!("f{i:06}"))).unwrap();
    }
    let out = t.path().join("out");
    lamina_ok(
        &[
            "build",
            "--layer",
            "many:/var/task",
            "--to",
            &oci_ref(&out, "latest"),
        ],
        t.path(),
        &[],
    );
    let (manifest, _, _) = read_layout(&out, "latest");
    let digest = &layer_digests(&manifest)[0];
    let blob = read_blob(&out, digest);
    let mut a = tar::Archive::new(flate2::read::GzDecoder::new(&blob[..]));
    let mut files = 0usize;
    let mut last = String::new();
    for e in a.entries().unwrap() {
        let e = e.unwrap();
        let p = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        if !p.ends_with('/') {
            assert!(p > last, "sorted: {p} after {last}");
            last = p;
            files += 1;
        }
    }
    assert_eq!(files, N);
    verify_layout_blobs(&out);
}
