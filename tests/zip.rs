//! Lambda .zip deployment packages (`lamina zip`, `lamina build --from-zip`): layout, modes,
//! links, timestamps and bytes as Python's `zipfile` and Info-ZIP's `zipinfo` read them;
//! reproducibility; image ⇄ zip round trips; Lambda's size limits; bad zips given as sources.

mod common;

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::Value;
use tempfile::TempDir;

/// `lamina zip ARGS` in `cwd` must succeed; returns its output.
fn zip_ok(args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> std::process::Output {
    let mut all = vec!["zip"];
    all.extend_from_slice(args);
    lamina_ok(&all, cwd, env)
}

/// `lamina zip ARGS` must fail, without panicking, naming every one of `expect`.
fn zip_fails(args: &[&str], cwd: &Path, expect: &[&str]) -> String {
    let mut all = vec!["zip"];
    all.extend_from_slice(args);
    let out = lamina(&all, cwd, &[]);
    assert!(
        !out.status.success(),
        "lamina {all:?} should fail:\n{}",
        describe(&out)
    );
    assert_no_panic(&out);
    let err = stderr_of(&out);
    for e in expect {
        assert!(err.contains(e), "stderr should mention {e:?}:\n{err}");
    }
    err
}

/// Every entry of a zip as Python's `zipfile` sees it, with its local header's extra-field
/// length and flags read straight from the bytes.
fn python_entries(zip: &Path) -> Vec<Value> {
    let script = r#"
import hashlib, json, struct, sys, zipfile
path = sys.argv[1]
out = []
with zipfile.ZipFile(path) as z, open(path, "rb") as raw:
    for i in z.infolist():
        raw.seek(i.header_offset)
        h = struct.unpack("<IHHHHHIIIHH", raw.read(30))
        data = z.read(i)
        out.append({
            "name": i.filename,
            "mode": i.external_attr >> 16,
            "dos": i.external_attr & 0xffff,
            "date_time": list(i.date_time),
            "extra": i.extra.hex(),
            "local_extra_len": h[10],
            "local_flags": h[2],
            "flags": i.flag_bits,
            "create_system": i.create_system,
            "compress_type": i.compress_type,
            "sha256": hashlib.sha256(data).hexdigest(),
            "text": data.decode("utf-8", "replace") if len(data) < 64 else None,
        })
print(json.dumps(out))
"#;
    let out = Command::new(require_tool("python3"))
        .arg("-c")
        .arg(script)
        .arg(zip)
        .output()
        .expect("run python3");
    assert!(out.status.success(), "python zipfile:\n{}", describe(&out));
    let v: Value = serde_json::from_slice(&out.stdout).expect("python printed JSON");
    v.as_array().expect("a list").clone()
}

fn names(entries: &[Value]) -> Vec<String> {
    entries
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_owned())
        .collect()
}

fn entry_named<'a>(entries: &'a [Value], name: &str) -> &'a Value {
    entries
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("no entry {name} in {:?}", names(entries)))
}

fn unzip_z(args: &[&str], zip: &Path) -> String {
    let out = Command::new(require_tool("unzip"))
        .arg("-Z")
        .args(args)
        .arg(zip)
        .output()
        .expect("run unzip -Z");
    assert!(out.status.success(), "unzip -Z:\n{}", describe(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sha256_file(p: &Path) -> String {
    sha256_hex(&fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display())))
}

const EPOCH_2023: &str = "1700000001"; // 2023-11-14T22:13:21Z: odd, so it rounds down

#[test]
fn the_fixture_function_zips_with_modes_links_and_no_extras() {
    let work = TempDir::new().unwrap();
    let spec = fixture_spec();
    let out = zip_ok(
        &[
            "-f",
            path_str(&spec),
            "--to",
            "out/fn.zip",
            "--timestamp",
            EPOCH_2023,
        ],
        work.path(),
        &[],
    );
    let zip = work.path().join("out/fn.zip");
    let digest = parse_digest(&out);
    assert_eq!(digest, format!("sha256:{}", sha256_file(&zip)));

    let entries = python_entries(&zip);
    assert_eq!(
        names(&entries),
        [
            "bootstrap",
            "data/",
            "data/config.json",
            "handler.sh",
            "lib/",
            "lib/latest.sh",
            "lib/util.sh"
        ],
        "sorted by path, directories with a trailing /, README.md excluded as in the spec"
    );
    let function = fixture_function();
    for e in &entries {
        let name = e["name"].as_str().unwrap();
        assert_eq!(e["create_system"], 3, "{name}: made by Unix");
        assert_eq!(e["extra"], "", "{name}: central extra field");
        assert_eq!(e["local_extra_len"], 0, "{name}: local extra field");
        assert_eq!(
            e["flags"].as_u64().unwrap() & 0x8,
            0,
            "{name}: data descriptor"
        );
        assert_eq!(
            e["local_flags"].as_u64().unwrap() & 0x8,
            0,
            "{name}: data descriptor"
        );
        assert_eq!(
            e["date_time"],
            serde_json::json!([2023, 11, 14, 22, 13, 20]),
            "{name}: the timestamp given"
        );
        let mode = e["mode"].as_u64().unwrap() as u32;
        match name {
            "bootstrap" => assert_eq!(mode, 0o100755, "bootstrap stays executable"),
            "data/" | "lib/" => {
                assert_eq!(mode, 0o40755, "{name}");
                assert_eq!(e["dos"], 0x10, "{name}: MS-DOS directory bit");
            }
            "lib/latest.sh" => {
                assert_eq!(mode, 0o120777, "symlink");
                assert_eq!(e["text"], "util.sh", "symlink target stored as content");
            }
            _ => assert_eq!(mode, 0o100644, "{name}"),
        }
        if mode & 0o170000 == 0o100000 {
            assert_eq!(
                e["sha256"].as_str().unwrap(),
                sha256_file(&function.join(name)),
                "{name}: bytes equal the source"
            );
            assert_eq!(e["compress_type"], 8, "{name}: deflated");
        }
    }

    let listing = unzip_z(&[], &zip);
    let lines: Vec<&str> = listing.lines().filter(|l| l.contains(" unx ")).collect();
    assert_eq!(lines.len(), 7, "{listing}");
    assert!(
        lines[0].starts_with("-rwxr-xr-x") && lines[0].ends_with(" bootstrap"),
        "{listing}"
    );
    assert!(
        lines[1].starts_with("drwxr-xr-x") && lines[1].ends_with(" data/"),
        "{listing}"
    );
    assert!(
        lines[5].starts_with("lrwxrwxrwx") && lines[5].ends_with(" lib/latest.sh"),
        "{listing}"
    );
    assert!(
        lines[6].starts_with("-rw-r--r--") && lines[6].ends_with(" lib/util.sh"),
        "{listing}"
    );
    let times = unzip_z(&["-T"], &zip);
    assert!(times.contains("20231114.221320 bootstrap"), "{times}");

    let test = Command::new(require_tool("unzip"))
        .args(["-tq"])
        .arg(&zip)
        .output()
        .unwrap();
    assert!(test.status.success(), "unzip -t:\n{}", describe(&test));
}

#[test]
fn timestamps_default_to_1980_the_earliest_a_zip_holds() {
    let work = TempDir::new().unwrap();
    let layer = format!("{}:/var/task", fixture_function().display());
    zip_ok(&["--layer", &layer, "--to", "a.zip"], work.path(), &[]);
    // SOURCE_DATE_EPOCH is used as for builds, and clamped the same way.
    zip_ok(
        &["--layer", &layer, "--to", "b.zip"],
        work.path(),
        &[("SOURCE_DATE_EPOCH", "86400")],
    );
    zip_ok(
        &["--layer", &layer, "--to", "c.zip"],
        work.path(),
        &[("SOURCE_DATE_EPOCH", EPOCH_2023)],
    );
    for name in ["a.zip", "b.zip"] {
        for e in python_entries(&work.path().join(name)) {
            assert_eq!(
                e["date_time"],
                serde_json::json!([1980, 1, 1, 0, 0, 0]),
                "{name}"
            );
        }
    }
    assert_eq!(
        sha256_file(&work.path().join("a.zip")),
        sha256_file(&work.path().join("b.zip"))
    );
    for e in python_entries(&work.path().join("c.zip")) {
        assert_eq!(
            e["date_time"],
            serde_json::json!([2023, 11, 14, 22, 13, 20])
        );
    }
}

#[test]
fn two_copies_with_other_mtimes_modes_and_paths_give_the_same_bytes() {
    let t = TempDir::new().unwrap();
    let a = t.path().join("one/function");
    let b = t.path().join("somewhere/else/entirely");
    fs::create_dir_all(a.parent().unwrap()).unwrap();
    fs::create_dir_all(b.parent().unwrap()).unwrap();
    copy_tree(&fixture_function(), &a);
    copy_tree(&fixture_function(), &b);
    // As if checked out under umask 077 and built a day later.
    for (p, mode) in [
        ("handler.sh", 0o600),
        ("data/config.json", 0o600),
        ("bootstrap", 0o700),
        ("data", 0o700),
        ("lib", 0o700),
    ] {
        chmod(&b.join(p), mode);
    }
    set_tree_times(&a, 1_000_000_000);
    set_tree_times(&b, 1_600_000_000);

    let env = [("SOURCE_DATE_EPOCH", EPOCH_2023)];
    let la = format!("{}:/var/task", a.display());
    let out_a = zip_ok(&["--layer", &la, "--to", "a.zip"], t.path(), &env);
    let out_b = zip_ok(
        &["--layer", "entirely:/var/task", "--to", "../../b.zip"],
        b.parent().unwrap(),
        &env,
    );
    assert_eq!(parse_digest(&out_a), parse_digest(&out_b));
    assert_eq!(
        fs::read(t.path().join("a.zip")).unwrap(),
        fs::read(t.path().join("b.zip")).unwrap(),
        "same inputs, same bytes"
    );
}

#[test]
fn an_image_converts_to_the_zip_its_spec_gives() {
    let work = TempDir::new().unwrap();
    let ts = ["--timestamp", EPOCH_2023];
    let spec = fixture_spec();
    zip_ok(
        &["-f", path_str(&spec), "--to", "spec.zip", ts[0], ts[1]],
        work.path(),
        &[],
    );
    let built = build_fixture(work.path(), "img", &[], &[]);
    let oci = oci_ref(&built.layout, "latest");
    zip_ok(
        &["--from", &oci, "--to", "oci.zip", ts[0], ts[1]],
        work.path(),
        &[],
    );
    let archive = work.path().join("img.tar");
    lamina_ok(
        &[
            "build",
            "-f",
            path_str(&spec),
            "--to",
            &format!("docker-archive:{}", archive.display()),
        ],
        work.path(),
        &[],
    );
    zip_ok(
        &[
            "--from",
            &format!("docker-archive:{}", archive.display()),
            "--to",
            "archive.zip",
            "--platform",
            "linux/amd64",
            ts[0],
            ts[1],
        ],
        work.path(),
        &[],
    );
    let want = fs::read(work.path().join("spec.zip")).unwrap();
    assert_eq!(fs::read(work.path().join("oci.zip")).unwrap(), want);
    assert_eq!(fs::read(work.path().join("archive.zip")).unwrap(), want);

    // The base's /opt holds nothing once /opt/old is deleted: there is no layer zip to take.
    zip_fails(
        &["--from", &oci, "--lambda-layer", "--to", "opt.zip"],
        work.path(),
        &["/opt"],
    );
    assert!(!work.path().join("opt.zip").exists());
}

#[test]
fn a_zip_and_its_layer_zips_become_the_image_the_direct_build_gives() {
    let work = TempDir::new().unwrap();
    let spec = fixture_spec();
    zip_ok(&["-f", path_str(&spec), "--to", "fn.zip"], work.path(), &[]);
    write_zip(
        &work.path().join("tools.zip"),
        &[
            ZipItem::Dir("bin", 0o755),
            ZipItem::File("bin/tool", 0o755, b"#!/bin/sh\necho tool\n"),
        ],
    );
    let layout = work.path().join("from-zip");
    lamina_ok(
        &[
            "build",
            "--from-zip",
            "fn.zip",
            "--lambda-layer-zip",
            "tools.zip",
            "--base",
            &fixture_base_ref(),
            "--cmd",
            "handler.handle",
            "--to",
            &oci_ref(&layout, "latest"),
        ],
        work.path(),
        &[],
    );
    let direct = build_fixture(work.path(), "direct", &[], &[]);

    let (m_zip, _, c_zip) = read_layout(&layout, "latest");
    let (m_dir, _, _) = read_layout(&direct.layout, "latest");
    assert_eq!(string_array(&c_zip["config"]["Cmd"]), ["handler.handle"]);
    let n_zip = layer_digests(&m_zip).len();
    let n_dir = layer_digests(&m_dir).len();
    let key = |e: &TarEntry| {
        (
            e.path_str(),
            e.entry_type,
            e.mode,
            e.link.clone(),
            e.data.clone(),
        )
    };
    let task_zip: Vec<_> = tar_entries(&layer_tar(&layout, &m_zip, n_zip - 1))
        .iter()
        .map(key)
        .collect();
    let task_dir: Vec<_> = tar_entries(&layer_tar(&direct.layout, &m_dir, n_dir - 1))
        .iter()
        .map(key)
        .collect();
    assert_eq!(
        task_zip, task_dir,
        "same /var/task files from the zip as from the directory"
    );

    let opt = tar_entries(&layer_tar(&layout, &m_zip, n_zip - 2));
    let tool = entry(&opt, "opt/bin/tool");
    assert_eq!(tool.mode, 0o755);
    assert_eq!(tool.data, b"#!/bin/sh\necho tool\n");

    let out = lamina(
        &["build", "--from-zip", "handler.sh", "--to", "oci:x"],
        work.path(),
        &[],
    );
    assert!(!out.status.success());
    assert!(stderr_of(&out).contains(".zip"), "{}", describe(&out));
}

#[test]
fn lambda_layer_zips_and_content_outside_the_package_root() {
    let work = TempDir::new().unwrap();
    let layer_dir = work.path().join("deps");
    write_file(&layer_dir.join("python/lib/mod.py"), b"X = 1\n", 0o644);
    write_file(&layer_dir.join("bin/run"), b"#!/bin/sh\n", 0o755);
    zip_ok(
        &[
            "--lambda-layer",
            "--layer",
            "deps:/opt",
            "--to",
            "layer.zip",
        ],
        work.path(),
        &[],
    );
    let entries = python_entries(&work.path().join("layer.zip"));
    assert_eq!(
        names(&entries),
        [
            "bin/",
            "bin/run",
            "python/",
            "python/lib/",
            "python/lib/mod.py"
        ],
        "paths relative to /opt"
    );
    assert_eq!(entry_named(&entries, "bin/run")["mode"], 0o100755);

    // A layer below the root keeps its place under it.
    zip_ok(
        &["--layer", "deps/python:/var/task/vendor", "--to", "fn.zip"],
        work.path(),
        &[],
    );
    assert_eq!(
        names(&python_entries(&work.path().join("fn.zip"))),
        ["vendor/", "vendor/lib/", "vendor/lib/mod.py"]
    );

    // /opt content cannot go into a function zip, nor /var/task into a layer zip.
    let err = zip_fails(
        &[
            "--layer",
            "deps/python:/var/task",
            "--layer",
            "deps:/opt",
            "--to",
            "bad.zip",
        ],
        work.path(),
        &["deps", "layer #2", "/opt", "--lambda-layer"],
    );
    assert!(!err.contains("layer #1"), "{err}");
    zip_fails(
        &[
            "--lambda-layer",
            "--layer",
            "deps:/var/task",
            "--to",
            "bad.zip",
        ],
        work.path(),
        &["layer #1", "/var/task"],
    );
    // A single file at the root itself (dest without a trailing /) is a mistake worth naming.
    zip_fails(
        &["--layer", "deps/bin/run:/var/task", "--to", "bad.zip"],
        work.path(),
        &["run", "/var/task/"],
    );
    zip_fails(&["--to", "bad.zip"], work.path(), &["nothing to zip"]);
    assert!(!work.path().join("bad.zip").exists());
}

const MIB: u64 = 1 << 20;

#[test]
fn lambda_size_limits_error_at_250_mib_unzipped_and_warn_at_50_mib_zipped() {
    let work = TempDir::new().unwrap();
    let w = work.path();

    // Over 250 MiB once extracted: sparse files, so nothing big is written or read.
    fs::create_dir(w.join("big")).unwrap();
    fs::File::create(w.join("big/blob"))
        .unwrap()
        .set_len(251 * MIB)
        .unwrap();
    zip_fails(
        &["--layer", "big:/var/task", "--to", "fn.zip"],
        w,
        &["262144000", "250", "lamina build --to docker://"],
    );
    assert!(!w.join("fn.zip").exists());

    // 200 MiB of function is fine alone, not with 61 MiB of Lambda layers.
    fs::create_dir(w.join("mid")).unwrap();
    fs::File::create(w.join("mid/blob"))
        .unwrap()
        .set_len(200 * MIB)
        .unwrap();
    // Entries of 1 MiB of zeros, deflated once (the limit counts what they declare).
    let zeros = Raw::deflated(b"", &vec![0u8; MIB as usize]);
    let entries: Vec<Raw> = (0..61)
        .map(|i| Raw {
            name: format!("lib/part{i:02}").into_bytes(),
            data: zeros.data.clone(),
            ..zeros
        })
        .collect();
    raw_zip(&w.join("layer.zip"), &entries);
    zip_fails(
        &[
            "--layer",
            "mid:/var/task",
            "--with-layer",
            "layer.zip",
            "--to",
            "fn.zip",
        ],
        w,
        &["Lambda layer zip", "lamina build --to docker://"],
    );
    assert!(!w.join("fn.zip").exists());

    // Over 50 MiB zipped: a warning (upload through S3), and the zip is written. Stored, as
    // random bytes do not deflate anyway and an unoptimized deflate is slow.
    fs::create_dir(w.join("noisy")).unwrap();
    write_noise(
        &w.join("noisy/data.bin"),
        51 * MIB as usize,
        0x9e37_79b9_7f4a_7c15,
    );
    let out = zip_ok(
        &[
            "--layer",
            "noisy:/var/task",
            "--to",
            "fn.zip",
            "--compression-level",
            "0",
            "--json",
        ],
        w,
        &[],
    );
    let err = stderr_of(&out);
    assert!(
        err.contains("warning") && err.contains("S3") && err.contains("52428800"),
        "{err}"
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("--json prints JSON");
    let size = fs::metadata(w.join("fn.zip")).unwrap().len();
    assert!(size > 50 * MIB);
    assert_eq!(report["size"], size);
    assert_eq!(report["unzipped"], 51 * MIB);
    assert_eq!(report["warnings"].as_array().unwrap().len(), 1);
    assert_eq!(
        report["digest"].as_str().unwrap(),
        format!("sha256:{}", sha256_file(&w.join("fn.zip")))
    );
}

// ---------------------------------------------------------------------------------------------
// Bad zips, written by hand so every header field can lie
// ---------------------------------------------------------------------------------------------

struct Raw {
    name: Vec<u8>,
    /// The bytes as stored in the archive.
    data: Vec<u8>,
    method: u16,
    flags: u16,
    crc: u32,
    /// Declared uncompressed size.
    size: u32,
}

fn crc(data: &[u8]) -> u32 {
    let mut c = flate2::Crc::new();
    c.update(data);
    c.sum()
}

fn deflate(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::new(6));
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

impl Raw {
    fn stored(name: &[u8], data: &[u8]) -> Raw {
        Raw {
            name: name.to_vec(),
            data: data.to_vec(),
            method: 0,
            flags: 0,
            crc: crc(data),
            size: data.len() as u32,
        }
    }
    fn deflated(name: &[u8], data: &[u8]) -> Raw {
        Raw {
            data: deflate(data),
            method: 8,
            ..Raw::stored(name, data)
        }
    }
}

fn raw_zip(path: &Path, entries: &[Raw]) {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for e in entries {
        let offset = out.len() as u32;
        let common = |v: &mut Vec<u8>| {
            v.extend_from_slice(&20u16.to_le_bytes());
            v.extend_from_slice(&e.flags.to_le_bytes());
            v.extend_from_slice(&e.method.to_le_bytes());
            v.extend_from_slice(&0u16.to_le_bytes());
            v.extend_from_slice(&0x21u16.to_le_bytes());
            v.extend_from_slice(&e.crc.to_le_bytes());
            v.extend_from_slice(&(e.data.len() as u32).to_le_bytes());
            v.extend_from_slice(&e.size.to_le_bytes());
            v.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
            v.extend_from_slice(&0u16.to_le_bytes());
        };
        out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        common(&mut out);
        out.extend_from_slice(&e.name);
        out.extend_from_slice(&e.data);
        central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        central.extend_from_slice(&0x0314u16.to_le_bytes());
        common(&mut central);
        central.extend_from_slice(&[0; 6]); // comment length, disk, internal attributes
        central.extend_from_slice(&(0o100644u32 << 16).to_le_bytes());
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(&e.name);
    }
    let cd_start = out.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    let n = entries.len() as u16;
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&cd_start.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    fs::write(path, out).unwrap();
}

#[test]
fn bad_zip_sources_fail_naming_the_entry() {
    let work = TempDir::new().unwrap();
    let ok = || Raw::stored(b"ok.txt", b"ok\n");
    let cases: Vec<(&str, Vec<Raw>, Vec<&str>)> = vec![
        (
            "slip",
            vec![ok(), Raw::stored(b"../x", b"evil\n")],
            vec!["`../x`", "zip slip"],
        ),
        (
            "absolute",
            vec![ok(), Raw::stored(b"/x", b"evil\n")],
            vec!["`/x`", "absolute"],
        ),
        (
            "duplicate",
            vec![
                Raw::stored(b"dup.txt", b"one\n"),
                ok(),
                Raw::stored(b"dup.txt", b"two\n"),
            ],
            vec!["`dup.txt`", "twice"],
        ),
        (
            "bomb",
            vec![
                ok(),
                Raw {
                    size: 3 << 30,
                    ..Raw::deflated(b"bomb.bin", &[0; 4096])
                },
            ],
            vec!["`bomb.bin`", "zip bomb"],
        ),
        (
            "encrypted",
            vec![
                ok(),
                Raw {
                    flags: 1,
                    ..Raw::stored(b"secret.txt", b"secret\n")
                },
            ],
            vec!["`secret.txt`", "encrypted"],
        ),
        (
            "stored-liar",
            vec![
                ok(),
                Raw {
                    size: 1 << 20,
                    ..Raw::stored(b"short.txt", b"tiny\n")
                },
            ],
            vec!["`short.txt`"],
        ),
        (
            // A plausible ratio, but the data inflates past the declared size: the copy stops.
            "inflating-liar",
            vec![
                ok(),
                Raw {
                    size: 10,
                    ..Raw::deflated(b"liar.txt", &[b'a'; 1000])
                },
            ],
            vec!["liar.txt"],
        ),
    ];
    for (what, entries, expect) in cases {
        let zip = work.path().join(format!("{what}.zip"));
        raw_zip(&zip, &entries);
        let layer = format!("{}:/var/task", zip.display());
        let dest = format!("{what}-fn.zip");
        zip_fails(&["--layer", &layer, "--to", &dest], work.path(), &expect);
        assert!(!work.path().join(&dest).exists(), "{what}: no zip written");
        // Image builds read zip sources the same way.
        let layout = work.path().join(format!("{what}-img"));
        let out = lamina(
            &[
                "build",
                "--layer",
                &layer,
                "--to",
                &oci_ref(&layout, "latest"),
            ],
            work.path(),
            &[],
        );
        assert!(!out.status.success(), "{what}: build should fail");
        assert_no_panic(&out);
        for e in &expect {
            assert!(
                stderr_of(&out).contains(e),
                "{what}: build names {e}:\n{}",
                describe(&out)
            );
        }
    }
}

/// `lamina zip --json`: every field against an oracle outside lamina (Python's `zipfile`,
/// `hashlib` and `base64`), `codeSha256` in the form Lambda reports as `CodeSha256`.
#[test]
fn zip_json_fields_match_what_python_reads_from_the_files() {
    let t = TempDir::new().unwrap();
    let w = t.path();
    fs::create_dir_all(w.join("code/pkg")).unwrap();
    fs::write(w.join("code/app.py"), "def handler(e, c):\n    return e\n").unwrap();
    fs::write(w.join("code/pkg/__init__.py"), "X = 1\n").unwrap();
    // A Lambda layer zip shipped beside the function: its extracted size counts too.
    write_zip(
        &w.join("layer.zip"),
        &[
            ZipItem::File("python/lib.py", 0o644, b"Y = 2\n"),
            ZipItem::File("bin/tool", 0o755, &[7u8; 3000]),
        ],
    );
    let out = zip_ok(
        &[
            "--layer",
            "code:/var/task",
            "--with-layer",
            "layer.zip",
            "--to",
            "fn.zip",
            "--json",
        ],
        w,
        &[],
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("--json prints JSON");
    let script = r#"
import base64, hashlib, json, sys, zipfile
fn, layer = sys.argv[1], sys.argv[2]
data = open(fn, "rb").read()
with zipfile.ZipFile(fn) as z:
    infos = z.infolist()
with zipfile.ZipFile(layer) as z:
    layer_unzipped = sum(i.file_size for i in z.infolist())
print(json.dumps({
    "codeSha256": base64.b64encode(hashlib.sha256(data).digest()).decode(),
    "digest": "sha256:" + hashlib.sha256(data).hexdigest(),
    "size": len(data),
    "entries": len(infos),
    "unzipped": sum(i.file_size for i in infos),
    "layersUnzipped": layer_unzipped,
}))
"#;
    let py = Command::new(require_tool("python3"))
        .arg("-c")
        .arg(script)
        .arg(w.join("fn.zip"))
        .arg(w.join("layer.zip"))
        .output()
        .expect("run python3");
    assert!(py.status.success(), "{}", describe(&py));
    let want: Value = serde_json::from_slice(&py.stdout).unwrap();
    for field in [
        "codeSha256",
        "digest",
        "size",
        "entries",
        "unzipped",
        "layersUnzipped",
    ] {
        assert_eq!(report[field], want[field], "{field}: {report} vs {want}");
    }
    assert_eq!(
        report["path"].as_str().map(Path::new),
        Some(w.join("fn.zip").as_path()),
        "{report}"
    );
    assert_eq!(report["layersUnzipped"], 3006, "{report}");
}

/// `zip --from docker://…` reads the image from a registry and gives the same bytes as the same
/// image read from its layout.
#[test]
fn zip_from_a_registry_image_equals_zip_from_its_layout() {
    let t = TempDir::new().unwrap();
    let w = t.path();
    let built = build_fixture(w, "fn", &["-q"], &[]);
    let reg = Registry::plain();
    let dest = reg.reference("fn:v1");
    lamina_ok(
        &["push", "-q", &oci_ref(&built.layout, "latest"), &dest],
        w,
        &[],
    );
    zip_ok(
        &[
            "--from",
            &oci_ref(&built.layout, "latest"),
            "--to",
            "local.zip",
        ],
        w,
        &[],
    );
    zip_ok(&["--from", &dest, "--to", "remote.zip"], w, &[]);
    let local = fs::read(w.join("local.zip")).unwrap();
    assert!(!python_entries(&w.join("local.zip")).is_empty());
    assert_eq!(fs::read(w.join("remote.zip")).unwrap(), local);
}
