//! Build script: the version `lamina --version` prints, with the commit it was built from.
//!
//! In a git checkout of lamina (the crate's own directory is the top of the work tree) and with
//! `git` on the PATH, `LAMINA_VERSION` is `0.1.0 (abc1234)`, from `git rev-parse --short HEAD`;
//! anywhere else (a crates.io package, an unpacked tarball, no git) it is the version alone.
//! It never fails the build. Cargo runs it again when HEAD moves (a commit, a checkout): it
//! watches HEAD and the branch's ref file, which git's worktrees keep apart (`--git-path`).

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let shown = match commit(&dir) {
        Some(c) => format!("{version} ({c})"),
        None => version,
    };
    println!("cargo:rustc-env=LAMINA_VERSION={shown}");
}

/// `git -C dir ARGS`, its trimmed stdout when it succeeds.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (!s.is_empty()).then_some(s)
}

/// The short commit of `dir`'s checkout, when `dir` is the top of a git work tree; asks cargo
/// to watch the files that change when HEAD moves.
fn commit(dir: &Path) -> Option<String> {
    let top = git(dir, &["rev-parse", "--show-toplevel"])?;
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if !same(Path::new(&top), dir) {
        // A crate unpacked inside some other repository: that repository's commit is not ours.
        return None;
    }
    let mut watch = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
    if let Some(r) = git(dir, &["symbolic-ref", "-q", "HEAD"]) {
        watch.push(r);
    }
    for name in watch {
        if let Some(p) = git(dir, &["rev-parse", "--git-path", &name]) {
            let p = dir.join(p);
            // Watching a file that does not exist would rerun this script on every build.
            if p.exists() {
                println!("cargo:rerun-if-changed={}", p.display());
            }
        }
    }
    git(dir, &["rev-parse", "--short", "HEAD"])
}
