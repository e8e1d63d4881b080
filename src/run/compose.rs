//! Putting an image's unpacked layers together for the sandbox: overlayfs, read-only, mounted
//! by the sandbox inside its user namespace over the layers' directories (nothing to write on
//! the host), or — where overlayfs cannot be mounted there, or for an OCI runtime, which takes
//! one directory — a copy: one directory of hard links to the layers' files (copies where a
//! link is refused), the layers applied bottom up with their whiteouts, cached per image.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use crate::error::{IoContext, Result};

use super::rootfs::{clear, is_opaque, is_whiteout, set_mtime_nofollow};

/// The longest `lowerdir` option passed to the kernel (mount options fit in one page).
const MAX_OPTION: usize = 4000;

/// The overlayfs options for `stack` (top first, each under `dir`): `lowerdir=` with names
/// relative to `dir` (the sandbox mounts from there, which keeps the option short), read with
/// `userxattr` (the whiteout marks a user namespace may use). `None` when overlayfs cannot
/// take them: fewer than two directories (a read-only overlay needs two), a name it would
/// misread (`:` or `,`), or too long an option.
pub(super) fn lowerdir(dir: &Path, stack: &[PathBuf]) -> Option<String> {
    if stack.len() < 2 {
        return None;
    }
    let mut names = Vec::with_capacity(stack.len());
    for s in stack {
        let rel = s.strip_prefix(dir).ok()?.to_str()?;
        if rel.contains([':', ',', '\\']) || rel.is_empty() {
            return None;
        }
        names.push(rel);
    }
    let opt = format!("lowerdir={},userxattr", names.join(":"));
    (opt.len() <= MAX_OPTION).then_some(opt)
}

/// `<dir>/.mnt`: the empty directory each sandbox mounts its overlay on (in its own mount
/// namespace, so one serves every sandbox).
pub(super) fn mount_point(dir: &Path) -> Result<PathBuf> {
    let mnt = dir.join(".mnt");
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(&mnt)
        .at("creating", &mnt)?;
    Ok(mnt)
}

/// Compose `layers` (directories, bottom first) into `root`: each layer's whiteouts remove
/// what is below, its opaque directories drop what lower layers put in them, its directories
/// merge, and everything else replaces what was there, as a hard link to the layer's file.
pub(super) fn copy(root: &Path, layers: &[PathBuf]) -> Result<()> {
    let mut dirs = BTreeMap::new();
    for l in layers {
        merge(l, root, Path::new(""), &mut dirs)
            .ctx(|| format!("composing {} into {}", l.display(), root.display()))?;
    }
    let mut ordered: Vec<(&PathBuf, &(u32, i64))> = dirs.iter().collect();
    ordered.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
    for (rel, &(mode, mtime)) in ordered {
        let host = root.join(rel);
        fs::set_permissions(&host, fs::Permissions::from_mode(mode))
            .at("setting the mode of", &host)?;
        set_mtime_nofollow(&host, mtime.max(0) as u64).at("timing", &host)?;
    }
    Ok(())
}

/// Apply the directory `src/rel` of a layer to `root/rel`, recording directory modes in `dirs`.
fn merge(
    src: &Path,
    root: &Path,
    rel: &Path,
    dirs: &mut BTreeMap<PathBuf, (u32, i64)>,
) -> io::Result<()> {
    let from = src.join(rel);
    let md = fs::symlink_metadata(&from)?;
    dirs.insert(rel.to_owned(), (md.mode() & 0o7777, md.mtime()));
    for e in fs::read_dir(&from)? {
        let e = e?;
        let r = rel.join(e.file_name());
        let s = src.join(&r);
        let d = root.join(&r);
        let m = fs::symlink_metadata(&s)?;
        if is_whiteout(&m) {
            dirs.retain(|k, _| !k.starts_with(&r));
            clear(&d)?;
            continue;
        }
        let ft = m.file_type();
        if ft.is_dir() {
            match fs::symlink_metadata(&d) {
                Ok(dm) if dm.is_dir() && is_opaque(&s) => {
                    dirs.retain(|k, _| !k.starts_with(&r));
                    clear(&d)?;
                    fs::DirBuilder::new().mode(0o700).create(&d)?;
                }
                Ok(dm) if dm.is_dir() => {}
                Ok(_) => {
                    clear(&d)?;
                    fs::DirBuilder::new().mode(0o700).create(&d)?;
                }
                Err(_) => fs::DirBuilder::new().mode(0o700).create(&d)?,
            }
            fs::set_permissions(&d, fs::Permissions::from_mode(0o700))?;
            merge(src, root, &r, dirs)?;
            continue;
        }
        dirs.retain(|k, _| !k.starts_with(&r));
        clear(&d)?;
        if ft.is_symlink() {
            symlink(fs::read_link(&s)?, &d)?;
            let _ = set_mtime_nofollow(&d, m.mtime().max(0) as u64);
        } else if ft.is_fifo() {
            nix::unistd::mkfifo(
                &d,
                nix::sys::stat::Mode::from_bits_truncate(m.mode() & 0o777),
            )
            .map_err(io::Error::from)?;
        } else if fs::hard_link(&s, &d).is_err() {
            fs::copy(&s, &d)?;
            fs::set_permissions(&d, fs::Permissions::from_mode(m.mode() & 0o777))?;
            set_mtime_nofollow(&d, m.mtime().max(0) as u64)?;
        }
    }
    Ok(())
}
