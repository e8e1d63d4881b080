//! The checked-in fixtures (`fixtures/`) and builds of them.

use std::path::{Path, PathBuf};
use std::process::Output;

use super::{Snapshot, lamina_ok, normalized, parse_digest, tree_snapshot, write_file};

pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// `fixtures/lamina.toml`, which must exist.
pub fn fixture_spec() -> PathBuf {
    let p = fixtures_dir().join("lamina.toml");
    assert!(p.is_file(), "missing fixture spec {}", p.display());
    p
}

pub fn fixture_base() -> PathBuf {
    let p = fixtures_dir().join("base");
    assert!(
        p.join("index.json").is_file(),
        "missing fixture base layout {}",
        p.display()
    );
    p
}

/// `oci:<abs fixtures/base>:latest`
pub fn fixture_base_ref() -> String {
    format!("oci:{}:latest", fixture_base().display())
}

pub fn fixture_function() -> PathBuf {
    let p = fixtures_dir().join("function");
    assert!(p.is_dir(), "missing fixture function {}", p.display());
    p
}

pub fn path_str(p: &Path) -> &str {
    p.to_str()
        .unwrap_or_else(|| panic!("test path is not UTF-8: {}", p.display()))
}

/// `oci:DIR:TAG`
pub fn oci_ref(dir: &Path, tag: &str) -> String {
    format!("oci:{}:{tag}", dir.display())
}

/// Result of a successful build into an OCI layout.
pub struct Build {
    pub digest: String,
    pub layout: PathBuf,
    pub output: Output,
}

/// `lamina build -f fixtures/lamina.toml --to oci:WORK/NAME:latest EXTRA...` run in `work`.
pub fn build_fixture(work: &Path, name: &str, extra: &[&str], env: &[(&str, &str)]) -> Build {
    let layout = work.join(name);
    let spec = fixture_spec();
    let to = oci_ref(&layout, "latest");
    let mut args: Vec<&str> = vec!["build", "-f", path_str(&spec), "--to", &to];
    args.extend_from_slice(extra);
    let output = lamina_ok(&args, work, env);
    let digest = parse_digest(&output);
    Build {
        digest,
        layout,
        output,
    }
}

/// The fixture function's expected tree under the destination: every entry of
/// `fixtures/function` except the top-level `*.md`, with modes normalized.
pub fn expected_function_tree() -> Snapshot {
    let snap = tree_snapshot(&fixture_function());
    normalized(&snap)
        .into_iter()
        .filter(|(p, _)| !(p.components().count() == 1 && p.extension().is_some_and(|e| e == "md")))
        .collect()
}

/// Write `len` deterministic, incompressible bytes (xorshift64* from `seed`) to `path`, mode
/// 0644.
pub fn write_noise(path: &Path, len: usize, seed: u64) {
    let mut x = seed | 1;
    let mut data = Vec::with_capacity(len + 8);
    while data.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        data.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    data.truncate(len);
    write_file(path, &data, 0o644);
}
