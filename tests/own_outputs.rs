//! Tracker issue 13: lamina never reads its own outputs back. Layouts, oci-archives and
//! docker-archives written by an earlier run inside `code = "."`, and `lamina.lock`, stay out
//! of the next build's layers (a tar or a layout lamina did not write stays in); a push
//! destination that cannot be reached is named with the way forward.

mod common;

use std::fs;
use std::net::TcpListener;
use std::path::Path;

use common::*;
use tempfile::TempDir;

/// Files of the single layer built from `dir/lamina.toml` into `oci:dir/NAME`.
fn layer_files(dir: &Path, to: &str) -> Vec<String> {
    let dest = oci_ref(&dir.join(to), "latest");
    lamina_ok(&["build", "--to", &dest], dir, &[]);
    let (manifest, _, _) = read_layout(&dir.join(to), "latest");
    let mut files: Vec<String> = tar_entries(&layer_tar(&dir.join(to), &manifest, 0))
        .iter()
        .filter(|e| e.is_file())
        .map(TarEntry::path_str)
        .collect();
    files.sort();
    files
}

#[test]
fn earlier_layouts_and_archives_are_not_read_back() {
    let t = TempDir::new().unwrap();
    let p = t.path();
    fs::write(p.join("app.py"), "def handler(e, c):\n    return 1\n").unwrap();
    fs::write(
        p.join("lamina.toml"),
        "base = \"scratch\"\n[[layer]]\nsource = \".\"\ndest = \"/var/task\"\n\
         exclude = [\"lamina.toml\"]\n",
    )
    .unwrap();
    // A tar and a layout of the user's own: code like any other.
    fs::write(p.join("data.tar"), vec![7u8; 2048]).unwrap();
    fs::create_dir_all(p.join("theirs/blobs")).unwrap();
    fs::write(
        p.join("theirs/oci-layout"),
        "{\"imageLayoutVersion\":\"1.0.0\"}",
    )
    .unwrap();
    fs::write(
        p.join("lamina.lock"),
        "# Written by lamina: the digest ...\nversion = 1\n",
    )
    .unwrap();

    let first = layer_files(p, "out");
    assert_eq!(
        first,
        [
            "var/task/app.py",
            "var/task/data.tar",
            "var/task/theirs/oci-layout"
        ],
        "lamina.lock is lamina's own"
    );
    for to in ["oci-archive:image.tar", "docker-archive:docker.tar"] {
        lamina_ok(&["build", "--to", to], p, &[]);
    }
    // Every earlier output is now inside `.`: none of it is read back.
    assert_eq!(layer_files(p, "out2"), first);
    assert_eq!(
        layer_files(p, "out2"),
        first,
        "and again, into an existing layout"
    );
    // The archives still read as images (skopeo ignores the marker).
    for (transport, file) in [
        ("oci-archive", "image.tar"),
        ("docker-archive", "docker.tar"),
    ] {
        skopeo_ok(&[
            "inspect",
            &format!("{transport}:{}", p.join(file).display()),
        ]);
    }
}

#[test]
fn an_unreachable_push_destination_is_named() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let t = TempDir::new().unwrap();
    let dest = format!("docker://127.0.0.1:{port}/fn:v1");
    let args = [
        "build",
        "--base",
        "scratch",
        "--layer",
        ".:/var/task",
        "--to",
        &dest,
        "--retries",
        "0",
    ];
    fs::write(t.path().join("f.txt"), "x").unwrap();
    let out = lamina(&args, t.path(), &[]);
    assert!(!out.status.success(), "{}", describe(&out));
    let err = stderr_of(&out);
    assert!(
        err.contains(&format!("destination {dest}")) && err.contains("refused"),
        "{}",
        describe(&out)
    );
    assert!(err.contains("lamina push oci:DIR"), "{}", describe(&out));
}
