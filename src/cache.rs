//! The local content-addressed blob cache for pulled images: blobs are verified before they are
//! made visible under their digest, so what is there can be trusted and is never fetched again.
//!
//! Blobs are shared between the cache, staging directories and lamina-written layouts by hard
//! links: a blob file lamina wrote is never modified in place (it is replaced by a rename), so
//! the rule is that blobs in lamina's cache and in lamina-written layouts are immutable. A blob
//! from a place the user owns and may edit (an `oci:` base layout) is *cloned* instead
//! ([`clone_blob`]): reflinked where the file system can, else copied, so an edit there never
//! reaches lamina's outputs.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use crate::error::{IoContext, Result};

/// `blobs/sha256` under a cache directory.
pub fn blobs(dir: &Path) -> PathBuf {
    dir.join("blobs").join("sha256")
}

/// Put a blob into `dir` under its digest: a hard link when possible (free on one file
/// system), else a copy to a temporary name then a rename. Only for blobs lamina wrote (see the
/// module's documentation).
pub fn link_blob(from: &Path, dir: &Path, hex: &str) -> Result<()> {
    let to = dir.join(hex);
    if to.exists() {
        return Ok(());
    }
    if fs::hard_link(from, &to).is_ok() {
        return Ok(());
    }
    clone_blob(from, dir, hex)
}

/// Put a copy of a blob into `dir` under its digest, sharing no file with `from`: a reflink
/// (`FICLONE`) where the file system supports it, else a copy; through a temporary name and
/// a rename, so the blob appears whole or not at all.
pub fn clone_blob(from: &Path, dir: &Path, hex: &str) -> Result<()> {
    let to = dir.join(hex);
    if to.exists() {
        return Ok(());
    }
    let tmp = crate::staging::file_in(dir, ".copy-").at("creating a temporary file in", dir)?;
    let what = || format!("copying {} to {}", from.display(), to.display());
    let src = File::open(from).ctx(what)?;
    let mut dst = tmp.reopen().ctx(what)?;
    if !reflink(&src, &dst) {
        io::copy(&mut io::BufReader::with_capacity(1 << 20, src), &mut dst).ctx(what)?;
    }
    tmp.persist(&to).at("saving", &to)?;
    Ok(())
}

/// Record that the cache file or entry `path` was used now (its modification time, lamina's
/// own record for least-recently-used eviction: access times are unreliable). Best effort.
pub fn touch(path: &Path) {
    let _ = File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(std::time::SystemTime::now()));
}

/// Make `dst` share `src`'s extents (copy on write); false where the file system cannot.
fn reflink(src: &File, dst: &File) -> bool {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: FICLONE takes the source descriptor as its argument; both are open files.
        unsafe { libc::ioctl(dst.as_raw_fd(), libc::FICLONE, src.as_raw_fd()) == 0 }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (src, dst);
        false
    }
}

/// Remove `path` and everything below it, opening up directory modes first (an image may hold
/// directories its owner cannot write). Symbolic links are removed, never followed.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    fn open_up(p: &Path) -> io::Result<()> {
        let m = fs::symlink_metadata(p)?;
        if m.is_dir() {
            fs::set_permissions(
                p,
                <fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o700),
            )?;
            for e in fs::read_dir(p)? {
                open_up(&e?.path())?;
            }
        }
        Ok(())
    }
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
        Ok(m) if !m.is_dir() => return fs::remove_file(path),
        Ok(_) => {}
    }
    open_up(path)?;
    fs::remove_dir_all(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn a_cloned_blob_shares_no_inode_and_a_linked_one_does() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        fs::write(&src, b"blob bytes").unwrap();
        let out = d.path().join("out");
        fs::create_dir(&out).unwrap();
        clone_blob(&src, &out, "a").unwrap();
        link_blob(&src, &out, "b").unwrap();
        let ino = |p: &Path| fs::metadata(p).unwrap().ino();
        assert_ne!(ino(&src), ino(&out.join("a")));
        assert_eq!(ino(&src), ino(&out.join("b")));
        assert_eq!(fs::read(out.join("a")).unwrap(), b"blob bytes");
        fs::write(&src, b"edited!!!!").unwrap();
        assert_eq!(fs::read(out.join("a")).unwrap(), b"blob bytes");
        let names: Vec<_> = fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "no temporary file left: {names:?}");
    }
}
