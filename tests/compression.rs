//! Layer compression end to end: the parallel gzip is one valid gzip member that `gzip -t`
//! accepts and `gzip -d` expands to the layer's diff_id, at every kind of level, over mixed
//! compressible and incompressible data spanning several blocks; and its bytes do not depend
//! on the number of cores lamina runs on.

mod common;

use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::Value;
use tempfile::TempDir;

/// About 4 MiB: source-like text, random bytes (like .so or .zip files), zeros, tiny files.
fn write_tree(dir: &Path) {
    let mut x = 0x853c49e6748fea9bu64;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let words = [
        "def ", "return ", "event", "context", "(self)", ": ", "\n    ", "None",
    ];
    for pkg in 0..6 {
        let d = dir.join(format!("python/pkg{pkg}"));
        fs::create_dir_all(&d).unwrap();
        for f in 0..20 {
            let mut text = String::new();
            while text.len() < 20_000 {
                text.push_str(words[(rnd() % words.len() as u64) as usize]);
            }
            fs::write(d.join(format!("mod{f}.py")), text).unwrap();
        }
        let random: Vec<u8> = (0..300_000).map(|_| (rnd() >> 24) as u8).collect();
        fs::write(d.join("lib.so"), random).unwrap();
        fs::write(d.join("zeros.bin"), vec![0u8; 50_000]).unwrap();
        fs::write(d.join("tiny.txt"), b"x").unwrap();
    }
}

/// Build the tree into a layout; the layer's blob path and its diff_id.
fn build(work: &Path, src: &Path, name: &str, level: &str, one_core: bool) -> (String, String) {
    let layout = work.join(name);
    let args = [
        "build",
        "--layer",
        &format!("{}:/var/task", path_str(src)),
        "--base",
        "scratch",
        "--to",
        &oci_ref(&layout, "latest"),
        "--compression-level",
        level,
        "--no-cache",
        "--json",
    ];
    let out = if one_core {
        // Pinned to one CPU, lamina sees one core and compresses with a single worker.
        let taskset = require_tool("taskset");
        let out = Command::new(taskset)
            .args(["-c", "0", lamina_bin()])
            .args(args)
            .env("LAMINA_CACHE_DIR", work.join("cache"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", describe(&out));
        out
    } else {
        lamina_ok(&args, work, &[])
    };
    let j: Value = serde_json::from_slice(&out.stdout).unwrap();
    let layer = &j["layers"][0];
    let digest = layer["digest"].as_str().unwrap();
    (
        blob_path(&layout, digest).display().to_string(),
        layer["diffId"].as_str().unwrap().to_owned(),
    )
}

#[test]
fn layers_are_single_gzip_members_that_gzip_accepts() {
    let gzip = require_tool("gzip");
    let t = TempDir::new().unwrap();
    let src = t.path().join("src");
    write_tree(&src);
    for level in ["0", "1", "4", "6", "9"] {
        let (blob, diff_id) = build(t.path(), &src, &format!("l{level}"), level, false);
        let test = Command::new(&gzip).args(["-t", &blob]).output().unwrap();
        assert!(
            test.status.success(),
            "gzip -t, level {level}: {}",
            describe(&test)
        );
        let out = Command::new(&gzip).args(["-dc", &blob]).output().unwrap();
        assert!(
            out.status.success(),
            "gzip -dc, level {level}: {}",
            describe(&out)
        );
        assert!(
            out.stdout.len() > 4 << 20,
            "level {level}: a multi-block layer"
        );
        assert_eq!(sha256_digest(&out.stdout), diff_id, "level {level}");

        // One member, nothing after it (gzip would accept concatenated members too).
        let bytes = fs::read(&blob).unwrap();
        let mut d = flate2::read::GzDecoder::new(&bytes[..]);
        let mut tar = Vec::new();
        d.read_to_end(&mut tar).unwrap();
        assert_eq!(tar, out.stdout, "level {level}");
        assert!(
            d.into_inner().is_empty(),
            "level {level}: bytes after the gzip member"
        );
    }
}

#[test]
fn the_layer_does_not_depend_on_the_number_of_cores() {
    // The claim needs a machine where lamina can use several workers: say so rather than pass
    // without comparing anything.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert!(
        cpus >= 2,
        "this test compares a one-worker build with a several-worker one: it needs 2 CPUs, the machine has {cpus}"
    );
    let t = TempDir::new().unwrap();
    let src = t.path().join("src");
    write_tree(&src);
    let (all, _) = build(t.path(), &src, "all-cores", "4", false);
    let (one, _) = build(t.path(), &src, "one-core", "4", true);
    assert_eq!(fs::read(&all).unwrap(), fs::read(&one).unwrap());
}
