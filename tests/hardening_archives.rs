//! Hostile and unusual archives, crafted here byte by byte: zips given as sources (`zip
//! --layer`, `build --from-zip`, `[function] code`) and images whose layers `zip --from` and
//! `check` read. Every refusal names the entry and the archive at fault.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use sha2::{Digest, Sha256};
use tempfile::TempDir;

// ---------------------------------------------------------------------------------------------
// Crafted images: an OCI layout written by hand from raw tar layers
// ---------------------------------------------------------------------------------------------

/// One tar entry of a crafted layer.
enum T<'a> {
    Dir(&'a str),
    File(&'a str, &'a [u8], u32),
    Link(&'a str, &'a str),
    Hard(&'a str, &'a str),
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(0);
    h
}

/// A tar of `entries` (GNU long names and links where needed), with its end blocks.
fn tar_of(entries: &[T]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        match e {
            T::Dir(p) => {
                let mut h = header(tar::EntryType::Directory, 0o755, 0);
                b.append_data(&mut h, p, std::io::empty()).unwrap();
            }
            T::File(p, data, mode) => {
                let mut h = header(tar::EntryType::Regular, *mode, data.len() as u64);
                b.append_data(&mut h, p, *data).unwrap();
            }
            T::Link(p, t) => {
                let mut h = header(tar::EntryType::Symlink, 0o777, 0);
                b.append_link(&mut h, p, t).unwrap();
            }
            T::Hard(p, t) => {
                let mut h = header(tar::EntryType::Link, 0o644, 0);
                b.append_link(&mut h, p, t).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// A layer: its gzip blob and its diff_id.
struct Layer {
    blob: Vec<u8>,
    diff_id: String,
}

fn layer(entries: &[T]) -> Layer {
    let tar = tar_of(entries);
    Layer {
        blob: gzip(&tar),
        diff_id: sha256_digest(&tar),
    }
}

fn put_blob(dir: &Path, bytes: &[u8]) -> String {
    let d = sha256_digest(bytes);
    fs::write(blob_path(dir, &d), bytes).unwrap();
    d
}

/// Write the OCI layout `dir` holding one linux/amd64 image of `layers`, tagged `latest`;
/// its reference.
fn image(dir: &Path, layers: &[Layer]) -> String {
    fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": ["/var/task/bootstrap"]},
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| &l.diff_id).collect::<Vec<_>>()},
    });
    let config = serde_json::to_vec(&config).unwrap();
    let descs: Vec<_> = layers
        .iter()
        .map(|l| json!({"mediaType": MT_LAYER_GZIP, "digest": put_blob(dir, &l.blob), "size": l.blob.len()}))
        .collect();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "config": {"mediaType": MT_CONFIG, "digest": put_blob(dir, &config), "size": config.len()},
        "layers": descs,
    }))
    .unwrap();
    let index = json!({
        "schemaVersion": 2,
        "mediaType": MT_INDEX,
        "manifests": [{
            "mediaType": MT_MANIFEST,
            "digest": put_blob(dir, &manifest),
            "size": manifest.len(),
            "annotations": {REF_NAME: "latest"},
        }],
    });
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    oci_ref(dir, "latest")
}

/// `lamina ARGS` must fail, without panicking, with every one of `expect` in its stderr.
fn fails(args: &[&str], cwd: &Path, expect: &[&str]) -> String {
    let out = lamina(args, cwd, &[]);
    assert!(
        !out.status.success(),
        "lamina {args:?} should fail:\n{}",
        describe(&out)
    );
    assert_no_panic(&out);
    let err = stderr_of(&out);
    for e in expect {
        assert!(
            err.contains(e),
            "lamina {args:?}: stderr should name {e:?}:\n{err}"
        );
    }
    err
}

/// `(name, unix mode, kind, content)` of every entry, as Python's `zipfile` reads them.
fn zip_listing(zip: &Path) -> Vec<(String, u32, String)> {
    let mut z = zip::ZipArchive::new(fs::File::open(zip).unwrap()).unwrap();
    (0..z.len())
        .map(|i| {
            let mut f = z.by_index(i).unwrap();
            let mode = f.unix_mode().unwrap();
            let mut s = String::new();
            f.read_to_string(&mut s).unwrap();
            (f.name().unwrap().to_string(), mode, s)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// 5: `zip --from` stops copying an image's files at Lambda's 250 MiB
// ---------------------------------------------------------------------------------------------

/// The bytes of every file below `dir`.
fn bytes_under(dir: &Path) -> u64 {
    let Ok(rd) = fs::read_dir(dir) else { return 0 };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => bytes_under(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// A gzip layer holding `var/task/big`, `size` bytes of zeros, built as gzip members (the
/// header, the same deflated MiB of zeros repeated, the padding and end blocks) so the test
/// never holds the file in memory.
fn big_zero_layer(size: u64) -> Layer {
    const MIB: u64 = 1 << 20;
    assert_eq!(size % MIB, 0);
    let mut h = header(tar::EntryType::Regular, 0o644, size);
    h.set_path("var/task/big").unwrap();
    h.set_cksum();
    let mut dir = header(tar::EntryType::Directory, 0o755, 0);
    dir.set_path("var/task/").unwrap();
    dir.set_cksum();
    let mut head = dir.as_bytes().to_vec();
    head.extend_from_slice(h.as_bytes());
    let tail = [0u8; 1024];
    let zeros = vec![0u8; MIB as usize];
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(&zeros).unwrap();
    let zeros_gz = e.finish().unwrap();
    let mut blob = gzip(&head);
    let mut sha = Sha256::new();
    sha.update(&head);
    for _ in 0..size / MIB {
        blob.extend_from_slice(&zeros_gz);
        sha.update(&zeros);
    }
    blob.extend_from_slice(&gzip(&tail));
    sha.update(tail);
    Layer {
        blob,
        diff_id: format!("sha256:{}", hex::encode(sha.finalize())),
    }
}

#[test]
fn item5_zip_from_a_1_gib_file_stops_writing_at_the_limit() {
    let work = TempDir::new().unwrap();
    let w = work.path();
    let big = big_zero_layer(1 << 30);
    assert!(
        big.blob.len() < 2 << 20,
        "the layer is about 1 MB: {}",
        big.blob.len()
    );
    let digest = sha256_digest(&big.blob);
    let r = image(&w.join("img"), &[big]);
    let tmp = w.join("tmp");
    fs::create_dir(&tmp).unwrap();
    let mut child = Command::new(lamina_bin())
        .args(["zip", "--from", &r, "--to", "fn.zip"])
        .current_dir(w)
        .env("TMPDIR", &tmp)
        .env("LAMINA_CACHE_DIR", w.join("cache"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Watch the temporary directory while it runs (bounded: two minutes).
    let started = Instant::now();
    let mut peak = 0;
    while child.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "lamina zip hangs"
        );
        peak = peak.max(bytes_under(&tmp));
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = child.wait_with_output().unwrap();
    let limit = 250 << 20;
    assert!(peak <= limit + (1 << 20), "{peak} bytes written to TMPDIR");
    let err = stderr_of(&out);
    assert!(!out.status.success(), "{}", describe(&out));
    assert_no_panic(&out);
    for e in [
        "/var/task/big",
        "262144000",
        &digest,
        "lamina build --to docker://",
    ] {
        assert!(err.contains(e), "stderr should name {e:?}:\n{err}");
    }
    assert_eq!(bytes_under(&tmp), 0, "nothing left in TMPDIR");
    assert!(!w.join("fn.zip").exists());
}

/// What a layer replaces is not counted twice: two layers of 150 MiB each, the second
/// replacing the first, give a 150 MiB zip.
#[test]
fn item5_a_replaced_file_does_not_count_against_the_limit() {
    let work = TempDir::new().unwrap();
    let w = work.path();
    let r = image(
        &w.join("img"),
        &[big_zero_layer(150 << 20), big_zero_layer(150 << 20)],
    );
    let out = lamina_ok(
        &[
            "zip",
            "--from",
            &r,
            "--to",
            "fn.zip",
            "--compression-level",
            "1",
            "--json",
        ],
        w,
        &[("TMPDIR", path_str(w))],
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["unzipped"], 150u64 << 20);
}

// ---------------------------------------------------------------------------------------------
// 11: chained zip symlinks that climb out of the archive
// ---------------------------------------------------------------------------------------------

#[test]
fn item11_chained_zip_symlinks_are_refused_by_every_zip_reader() {
    let work = TempDir::new().unwrap();
    let w = work.path();
    for (name, link, target) in [
        ("esc", "esc", "sub/up/.."),
        ("pw", "pw", "sub/up/../../etc/passwd"),
    ] {
        let zip = w.join(format!("{name}.zip"));
        // The escaping link first: links seen later count as well.
        write_zip(
            &zip,
            &[
                ZipItem::File("handler.sh", 0o644, b"echo\n"),
                ZipItem::Symlink(link, target),
                ZipItem::Dir("sub", 0o755),
                ZipItem::Symlink("sub/up", ".."),
            ],
        );
        let z = path_str(&zip);
        let expect = [&format!("`{link}`"), target, z, "outside the archive"];
        let layer = format!("{z}:/var/task");
        fails(&["zip", "--layer", &layer, "--to", "fn.zip"], w, &expect);
        assert!(!w.join("fn.zip").exists());
        let to = oci_ref(&w.join(format!("{name}-img")), "latest");
        fails(&["build", "--from-zip", z, "--to", &to], w, &expect);
        fs::write(
            w.join(format!("{name}.toml")),
            format!(
                "base = \"{}\"\nplatform = \"linux/amd64\"\n[function]\ncode = \"{name}.zip\"\nhandler = \"handler.handle\"\n",
                fixture_base_ref()
            ),
        )
        .unwrap();
        fails(
            &["zip", "-f", &format!("{name}.toml"), "--to", "spec.zip"],
            w,
            &expect,
        );
        assert!(!w.join("spec.zip").exists());
    }
    // A link through the chain that stays inside is fine.
    let zip = w.join("ok.zip");
    write_zip(
        &zip,
        &[
            ZipItem::File("handler.sh", 0o644, b"echo\n"),
            ZipItem::Dir("sub", 0o755),
            ZipItem::Symlink("sub/up", ".."),
            ZipItem::Symlink("same", "sub/up/handler.sh"),
        ],
    );
    let layer = format!("{}:/var/task", zip.display());
    lamina_ok(&["zip", "--layer", &layer, "--to", "ok-fn.zip"], w, &[]);
}

// ---------------------------------------------------------------------------------------------
// 12: whiteouts of `.` and `..`
// ---------------------------------------------------------------------------------------------

#[test]
fn item12_whiteouts_of_dot_and_dotdot_are_refused() {
    let work = TempDir::new().unwrap();
    let w = work.path();
    let base = layer(&[
        T::Dir("var/"),
        T::Dir("var/task/"),
        T::File("var/task/bootstrap", b"#!/bin/sh\n", 0o755),
        T::File("var/keep", b"k", 0o644),
    ]);
    for name in ["var/task/.wh..", "var/task/.wh...", ".wh..."] {
        let hostile = layer(&[T::File(name, b"", 0o644)]);
        let digest = sha256_digest(&hostile.blob);
        let dir = w.join(name.replace('/', "_"));
        let r = image(&dir, &[layer_copy(&base), hostile]);
        let expect = [&format!("`{name}`") as &str, &digest, "whiteout"];
        let err = fails(&["check", &r], w, &expect);
        assert!(!err.contains("panicked"), "{err}");
        fails(&["zip", "--from", &r, "--to", "fn.zip"], w, &expect);
        assert!(!w.join("fn.zip").exists());
    }
    // A source file with a whiteout name would become one in the layer: refused too.
    let src = w.join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join(".wh.."), b"").unwrap();
    let src_layer = format!("{}:/var/task", src.display());
    fails(
        &["zip", "--layer", &src_layer, "--to", "src.zip"],
        w,
        &["/var/task/.wh..", "whiteout name", path_str(&src)],
    );
    let zip = w.join("wh.zip");
    write_zip(&zip, &[ZipItem::File("lib/.wh...", 0o644, b"")]);
    let to = oci_ref(&w.join("wh-img"), "latest");
    fails(
        &["build", "--from-zip", path_str(&zip), "--to", &to],
        w,
        &["/var/task/lib/.wh...", "whiteout name", path_str(&zip)],
    );
}

fn layer_copy(l: &Layer) -> Layer {
    Layer {
        blob: l.blob.clone(),
        diff_id: l.diff_id.clone(),
    }
}

// ---------------------------------------------------------------------------------------------
// 13: symbolic link targets longer than Linux stores
// ---------------------------------------------------------------------------------------------

#[test]
fn item13_overlong_link_targets_are_refused_not_cut() {
    let work = TempDir::new().unwrap();
    let w = work.path();
    let long = format!("{}x", "d/".repeat(2100));
    assert!(long.len() > 4096);
    let zip = w.join("long.zip");
    write_zip(
        &zip,
        &[
            ZipItem::File("handler.sh", 0o644, b"echo\n"),
            ZipItem::Symlink("far", &long),
        ],
    );
    let shown_len = long.len().to_string();
    let expect = ["`far`", path_str(&zip), &shown_len, "4095"];
    let zip_layer = format!("{}:/var/task", zip.display());
    fails(
        &["zip", "--layer", &zip_layer, "--to", "fn.zip"],
        w,
        &expect,
    );
    let to = oci_ref(&w.join("img-from-zip"), "latest");
    fails(
        &["build", "--from-zip", path_str(&zip), "--to", &to],
        w,
        &expect,
    );

    // An image layer with such a link: `check` and `zip --from` refuse it, naming it.
    let l = layer(&[
        T::File("var/task/bootstrap", b"#!/bin/sh\n", 0o755),
        T::Link("var/task/far", &long),
    ]);
    let digest = sha256_digest(&l.blob);
    let r = image(&w.join("img"), &[l]);
    let expect = ["`var/task/far`", &digest as &str, &shown_len];
    fails(&["check", &r], w, &expect);
    fails(&["zip", "--from", &r, "--to", "fn.zip"], w, &expect);
    assert!(!w.join("fn.zip").exists());
}

// ---------------------------------------------------------------------------------------------
// 14: `zip --from` takes hard links to files elsewhere, and gives zip modes
// ---------------------------------------------------------------------------------------------

#[test]
fn item14_zip_from_copies_hard_links_and_normalizes_modes() {
    let work = TempDir::new().unwrap();
    let w = work.path();
    let r = image(
        &w.join("img"),
        &[
            layer(&[
                T::File("usr/bin/tool", b"#!/bin/sh\necho tool\n", 0o755),
                T::File("etc/conf", b"conf\n", 0o600),
            ]),
            layer(&[
                T::Dir("var/task/"),
                T::File("var/task/suid", b"#!/bin/sh\n", 0o6755),
                T::File("var/task/open", b"data\n", 0o777),
                T::File("var/task/private", b"secret\n", 0o600),
                T::Dir("var/task/lib/"),
                // To a file of a lower layer, and to one of the same layer outside /var/task.
                T::Hard("var/task/lib/tool", "usr/bin/tool"),
                T::File("opt/x", b"x\n", 0o644),
                T::Hard("var/task/x", "opt/x"),
            ]),
        ],
    );
    lamina_ok(&["zip", "--from", &r, "--to", "fn.zip"], w, &[]);
    let got = zip_listing(&w.join("fn.zip"));
    let want: Vec<(String, u32, String)> = [
        ("lib/", 0o40755, ""),
        ("lib/tool", 0o100755, "#!/bin/sh\necho tool\n"),
        ("open", 0o100755, "data\n"),
        ("private", 0o100644, "secret\n"),
        ("suid", 0o100755, "#!/bin/sh\n"),
        ("x", 0o100644, "x\n"),
    ]
    .iter()
    .map(|(n, m, c)| (n.to_string(), *m, c.to_string()))
    .collect();
    assert_eq!(got, want);
    // The zip's own mode is an ordinary file's.
    let m = fs::metadata(w.join("fn.zip")).unwrap().permissions().mode();
    assert_eq!(m & 0o777, 0o644);
}

/// A file written into /var/task through a symbolic link is taken as well.
#[test]
fn item14_zip_from_takes_files_written_through_a_link() {
    let work = TempDir::new().unwrap();
    let w = work.path();
    let r = image(
        &w.join("img"),
        &[
            layer(&[T::Dir("var/task/"), T::Link("app", "var/task")]),
            layer(&[T::File("app/handler.sh", b"handle\n", 0o644)]),
        ],
    );
    lamina_ok(&["zip", "--from", &r, "--to", "fn.zip"], w, &[]);
    let got = zip_listing(&w.join("fn.zip"));
    assert_eq!(
        got,
        [("handler.sh".to_owned(), 0o100644, "handle\n".to_owned())]
    );
}
