//! Running the built `lamina` binary and reading what it printed.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use super::is_sha256_digest;

pub fn lamina_bin() -> &'static str {
    env!("CARGO_BIN_EXE_lamina")
}

/// Run the built `lamina` with `args` in `cwd`. `SOURCE_DATE_EPOCH` is removed from the
/// environment unless `env` sets it, so the caller's environment cannot change the results.
pub fn lamina<S: AsRef<OsStr>>(args: &[S], cwd: &Path, env: &[(&str, &str)]) -> Output {
    // Caches go to a directory of this test binary's own, never the real home.
    static CACHE: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    let cache = CACHE.get_or_init(|| tempfile::TempDir::new().expect("cache tempdir"));
    let mut cmd = Command::new(lamina_bin());
    cmd.args(args)
        .current_dir(cwd)
        .env_remove("SOURCE_DATE_EPOCH")
        .env("LAMINA_CACHE_DIR", cache.path());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", lamina_bin()))
}

/// Like [`lamina`], but the run must succeed (and must not panic).
pub fn lamina_ok<S: AsRef<OsStr>>(args: &[S], cwd: &Path, env: &[(&str, &str)]) -> Output {
    let out = lamina(args, cwd, env);
    assert!(
        out.status.success(),
        "lamina {:?} failed:\n{}",
        args.iter().map(|a| a.as_ref()).collect::<Vec<_>>(),
        describe(&out)
    );
    assert_no_panic(&out);
    out
}

/// Status, stdout and stderr of a finished process, for assertion messages.
pub fn describe(out: &Output) -> String {
    format!(
        "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn assert_no_panic(out: &Output) {
    let err = stderr_of(out);
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "lamina panicked:\n{}",
        describe(out)
    );
    assert_ne!(
        out.status.code(),
        Some(101),
        "lamina panicked:\n{}",
        describe(out)
    );
}

/// The manifest digest `build` prints: stdout must be exactly one `sha256:<64 hex>` line.
pub fn parse_digest(out: &Output) -> String {
    let stdout = String::from_utf8(out.stdout.clone()).expect("stdout is UTF-8");
    let digest = stdout.trim().to_owned();
    assert!(
        is_sha256_digest(&digest),
        "stdout is not a single sha256 digest:\n{}",
        describe(out)
    );
    digest
}

/// stdout must be one JSON object.
pub fn parse_json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}):\n{}", describe(out)))
}

pub fn strings(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| (*s).to_owned()).collect()
}
