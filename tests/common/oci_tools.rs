//! The independent OCI tools the tests check lamina against: `skopeo` and `umoci`.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

use super::{describe, require_tool};

/// Run `skopeo --insecure-policy ARGS` (no policy.json needed: everything is local).
pub fn skopeo<S: AsRef<OsStr>>(args: &[S]) -> Output {
    let bin = require_tool("skopeo");
    Command::new(&bin)
        .arg("--insecure-policy")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()))
}

/// Run skopeo, require success, return stdout.
pub fn skopeo_ok<S: AsRef<OsStr>>(args: &[S]) -> Vec<u8> {
    let out = skopeo(args);
    assert!(
        out.status.success(),
        "skopeo {:?} failed:\n{}",
        args.iter().map(|a| a.as_ref()).collect::<Vec<_>>(),
        describe(&out)
    );
    out.stdout
}

/// A bundle unpacked by umoci; the temporary directory lives as long as this value.
pub struct Unpacked {
    _tmp: TempDir,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
}

/// `umoci unpack --rootless --image LAYOUT:TAG BUNDLE` into a fresh temporary directory.
pub fn umoci_unpack(layout: &Path, tag: &str) -> Unpacked {
    let bin = require_tool("umoci");
    let tmp = TempDir::new().expect("tempdir");
    let bundle = tmp.path().join("bundle");
    let mut image = layout.as_os_str().to_owned();
    image.push(":");
    image.push(tag);
    let out = Command::new(&bin)
        .args(["unpack", "--rootless", "--image"])
        .arg(&image)
        .arg(&bundle)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
    assert!(
        out.status.success(),
        "umoci unpack {} failed:\n{}",
        image.to_string_lossy(),
        describe(&out)
    );
    let rootfs = bundle.join("rootfs");
    assert!(
        rootfs.is_dir(),
        "umoci wrote no rootfs in {}",
        bundle.display()
    );
    Unpacked {
        _tmp: tmp,
        bundle,
        rootfs,
    }
}
