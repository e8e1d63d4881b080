//! File trees on disk: snapshots to compare, copies, modes and times.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{describe, sha256_hex};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    Dir { mode: u32 },
    File { mode: u32, sha256: String },
    Symlink { target: PathBuf },
    Other { mode: u32 },
}

pub type Snapshot = BTreeMap<PathBuf, Node>;

/// Every entry under `root` (not `root` itself), by relative path, without following symlinks.
pub fn tree_snapshot(root: &Path) -> Snapshot {
    let mut map = BTreeMap::new();
    snapshot_into(root, Path::new(""), &mut map);
    map
}

fn snapshot_into(root: &Path, rel: &Path, map: &mut Snapshot) {
    let dir = root.join(rel);
    let mut names: Vec<OsString> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").file_name())
        .collect();
    names.sort();
    for name in names {
        let rel_child = rel.join(&name);
        let abs = root.join(&rel_child);
        let md = fs::symlink_metadata(&abs)
            .unwrap_or_else(|e| panic!("cannot stat {}: {e}", abs.display()));
        let ft = md.file_type();
        let mode = md.permissions().mode() & 0o7777;
        if ft.is_symlink() {
            let target = fs::read_link(&abs).expect("readlink");
            map.insert(rel_child, Node::Symlink { target });
        } else if ft.is_dir() {
            map.insert(rel_child.clone(), Node::Dir { mode });
            snapshot_into(root, &rel_child, map);
        } else if ft.is_file() {
            let data = fs::read(&abs).unwrap_or_else(|e| panic!("read {}: {e}", abs.display()));
            map.insert(
                rel_child,
                Node::File {
                    mode,
                    sha256: sha256_hex(&data),
                },
            );
        } else {
            map.insert(rel_child, Node::Other { mode });
        }
    }
}

/// What lamina's default mode normalization should turn a source snapshot into.
pub fn normalized(snap: &Snapshot) -> Snapshot {
    snap.iter()
        .map(|(p, n)| {
            let n = match n {
                Node::Dir { .. } => Node::Dir { mode: 0o755 },
                Node::File { mode, sha256 } => Node::File {
                    mode: if mode & 0o111 != 0 { 0o755 } else { 0o644 },
                    sha256: sha256.clone(),
                },
                other => other.clone(),
            };
            (p.clone(), n)
        })
        .collect()
}

/// Names directly inside `dir`.
pub fn list_dir(dir: &Path) -> BTreeSet<OsString> {
    fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").file_name())
        .collect()
}

/// Copy a tree, keeping symlinks as symlinks and the permission bits of files and directories.
pub fn copy_tree(src: &Path, dst: &Path) {
    let md =
        fs::symlink_metadata(src).unwrap_or_else(|e| panic!("cannot stat {}: {e}", src.display()));
    let ft = md.file_type();
    if ft.is_symlink() {
        symlink(fs::read_link(src).expect("readlink"), dst)
            .unwrap_or_else(|e| panic!("symlink {}: {e}", dst.display()));
    } else if ft.is_dir() {
        fs::create_dir(dst).unwrap_or_else(|e| panic!("mkdir {}: {e}", dst.display()));
        let mut names: Vec<OsString> = fs::read_dir(src)
            .expect("read_dir")
            .map(|e| e.expect("dir entry").file_name())
            .collect();
        names.sort();
        for name in names {
            copy_tree(&src.join(&name), &dst.join(&name));
        }
        fs::set_permissions(dst, md.permissions()).expect("chmod dir");
    } else if ft.is_file() {
        fs::copy(src, dst).unwrap_or_else(|e| panic!("copy {}: {e}", src.display()));
        fs::set_permissions(dst, md.permissions()).expect("chmod file");
    } else {
        panic!("cannot copy special file {}", src.display());
    }
}

pub fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {:o} {}: {e}", mode, path.display()));
}

pub fn write_file(path: &Path, data: &[u8], mode: u32) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).expect("mkdir -p");
    }
    fs::write(path, data).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    chmod(path, mode);
}

/// Set mtime and atime of `root` and everything below it (symlinks themselves included).
pub fn set_tree_times(root: &Path, secs: i64) {
    let mut paths: Vec<PathBuf> = vec![root.to_path_buf()];
    paths.extend(tree_snapshot(root).keys().map(|p| root.join(p)));
    let out = Command::new("touch")
        .arg("-h")
        .arg("-d")
        .arg(format!("@{secs}"))
        .args(&paths)
        .output()
        .expect("cannot run touch");
    assert!(out.status.success(), "touch failed:\n{}", describe(&out));
}

/// Permission bits (`0o7777`) of `p` itself, not following a symlink.
pub fn mode_of(p: &Path) -> u32 {
    fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("stat {}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}
