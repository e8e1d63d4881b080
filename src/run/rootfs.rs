//! An image's root file system on disk, for `lamina run`, built from its layers rather than
//! per image: each layer is unpacked once into its own cache entry (`layers`), and an image's
//! layers are composed at run time (`compose`) — by overlayfs inside the sandbox's user
//! namespace where the kernel allows it, else into one directory of hard links. A code change
//! then unpacks only the code layer.
//!
//! The cache, `<cache>/rootfs/<key>/`: every entry holds `rootfs/` (the directory) and
//! [`MARKER`], written last (without it the entry is an interrupted unpack). Keys:
//!
//! - a layer: its *chain id* (OCI image spec: the diff_id of the bottom layer, then
//!   `sha256(chain-below + " " + diff_id)`), not its diff_id alone, because a layer's entries
//!   are placed by resolving their parent directories through the layers below it (a link
//!   `lib -> usr/lib` of the base decides where the next layer's `lib/x.so` goes), and its
//!   whiteouts only mean something over them. Layers shared as a prefix (a base and its
//!   dependencies) are shared by every image built on them;
//! - the image's small top layer (the sandbox's mount points and the image's working
//!   directory, created where the image lacks them): `sha256("top " chain workdir)`;
//! - a composed copy (the fallback): `sha256("copy " chain workdir)`.
//!
//! Inside a layer's `rootfs/`, a whiteout is what overlayfs reads: a character device 0/0 for a
//! hidden name (which Linux lets an unprivileged user create), and a `user.overlay.opaque=y`
//! extended attribute on an opaque directory (overlayfs' `userxattr` form, the one a user
//! namespace may use). Lower layers' directories are copied up (mode and time kept) where a
//! layer puts something in them.
//!
//! Extraction is meant to be safe for an unprivileged user and a hostile layer: every path is
//! cleaned (an entry or a hard-link target that climbs above the root is refused), parent
//! directories are resolved *inside* the root as composed so far (a symbolic link, absolute or
//! relative, is followed as the sandbox will see it, never out to the host), and the last
//! component is never followed (an existing link there is replaced, as container runtimes do).
//! Modes, symbolic links, hard links, fifos and modification times are kept; ownership is not
//! (the sandbox maps the user running lamina into the namespace, so every file has one owner
//! inside); setuid and setgid bits are dropped; device nodes are skipped (the sandbox provides
//! `/dev`).

use std::collections::HashMap;
use std::ffi::{CString, OsStr, OsString};
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::digest::Digest;
use crate::error::{IoContext, Result};
use crate::image::Layer;
use crate::image::fs::{Entry, Follow, MAX_LINKS, ResolveError, Tree, resolve};

use super::{compose, layers};

/// The file written last into a cache entry: without it the entry is an interrupted unpack.
pub const MARKER: &str = crate::gc::ROOTFS_MARKER;

/// Directories the sandbox mounts over (`/proc`, `/dev`, `/tmp`): created when an image lacks
/// them, so that nothing has to be created in the read-only root at run time.
pub const MOUNT_POINTS: [&str; 3] = ["proc", "dev", "tmp"];

/// The extended attribute marking an opaque directory for overlayfs mounted with `userxattr`.
pub const OPAQUE_XATTR: &str = "user.overlay.opaque";

/// How an image's layers are put together for the sandbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Composition {
    /// overlayfs in the sandbox's user namespace when the kernel allows it, else a copy.
    #[default]
    Auto,
    /// overlayfs, read-only, over the layers' directories.
    Overlay,
    /// One directory of hard links (copies across file systems) to the layers' files.
    Copy,
}

impl std::fmt::Display for Composition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Composition::Auto => "auto",
            Composition::Overlay => "overlay",
            Composition::Copy => "copy",
        })
    }
}

/// A root file system ready to run.
#[derive(Debug)]
pub struct Unpacked {
    /// The root directory: the composed copy, or (overlay) the empty directory the sandbox
    /// mounts the overlay on.
    pub rootfs: PathBuf,
    /// The directories the root is composed of, top first (one, the copy, for a copy): what
    /// [`lookup`] searches on the host.
    pub stack: Vec<PathBuf>,
    /// For overlay: the directory the `lowerdir` names are relative to, and the option.
    pub overlay: Option<(PathBuf, String)>,
    /// Which composition was used.
    pub composition: Composition,
    /// Layers unpacked now (the others came from the cache).
    pub unpacked: usize,
    /// Nothing had to be unpacked or composed: everything came from the cache.
    pub reused: bool,
    /// What could not be reproduced (device nodes), for a note to the user.
    pub skipped: Vec<String>,
    /// Shared locks on the entries used, which keep pruning from removing them.
    pub held: Vec<fs::File>,
}

/// `<cache>/rootfs`: where layer, top and composed entries live.
pub fn rootfs_dir(cache_dir: &Path) -> PathBuf {
    cache_dir.join("rootfs")
}

/// The chain ids of `layers`, bottom first (OCI image spec, "ChainID").
pub fn chain_ids(layers: &[Layer]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(layers.len());
    for l in layers {
        let next = match out.last() {
            None => l.diff_id.clone(),
            Some(below) => Digest::of(format!("{below} {}", l.diff_id).as_bytes()),
        };
        out.push(next);
    }
    out
}

/// The key of a derived entry (`top`, `copy`) of the image whose layer chain ends in `chain`.
fn derived_key(kind: &str, chain: Option<&Digest>, workdir: &str) -> String {
    let chain = chain.map(Digest::to_string).unwrap_or_default();
    Digest::of(format!("{kind} {chain} {workdir}").as_bytes())
        .hex()
        .to_owned()
}

/// The `rootfs/` of a complete cache entry, if there is one.
pub fn cached(entry: &Path) -> Option<PathBuf> {
    let rootfs = entry.join("rootfs");
    (entry.join(MARKER).is_file() && rootfs.is_dir()).then_some(rootfs)
}

/// The file whose modification time says when a cache entry was last used (lamina's own
/// record, for least-recently-used eviction: access times are unreliable).
pub const LAST_USED: &str = crate::gc::ROOTFS_LAST_USED;

/// Record that the entry was used now, for least-recently-used eviction.
pub fn touch(entry: &Path) {
    // Best effort: an entry that cannot be timed only looks older than it is.
    let _ = fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(entry.join(LAST_USED))
        .and_then(|f| f.set_modified(SystemTime::now()));
}

/// The cache entry `<rootfs dir>/<key>`: reused when complete, else built by `build` into
/// `rootfs/` of a staging directory beside it, the marker (`marker` as its text) written last,
/// then moved into place in one rename. True when it was built now.
pub fn entry_cached<T>(
    parent: &Path,
    key: &str,
    marker: &str,
    build: impl FnOnce(&Path) -> Result<T>,
) -> Result<(PathBuf, Option<T>)> {
    let entry = parent.join(key);
    if cached(&entry).is_some() {
        touch(&entry);
        return Ok((entry, None));
    }
    fs::create_dir_all(parent).at("creating", parent)?;
    spread_directories(parent);
    // Owned while it is built: removed on error, on SIGINT/SIGTERM, or by a later lamina
    // when this one was killed (see crate::staging).
    let (tmp, _owner) = crate::staging::dir_in(parent, ".unpack-")
        .at("creating a directory in", parent)?
        .keep();
    let guard = RemoveOnDrop(tmp);
    let root = guard.0.join("rootfs");
    fs::DirBuilder::new()
        .mode(0o755)
        .create(&root)
        .at("creating", &root)?;
    let out = build(&root)?;
    let m = guard.0.join(MARKER);
    fs::write(&m, format!("{marker}\n")).at("writing", &m)?;
    if entry.exists() {
        // An interrupted unpack left it (no marker), or another lamina just finished it.
        if cached(&entry).is_some() {
            return Ok((entry, Some(out)));
        }
        remove_tree(&entry).at("removing the incomplete", &entry)?;
    }
    match fs::rename(&guard.0, &entry) {
        Ok(()) => std::mem::forget(guard),
        Err(e) => {
            if cached(&entry).is_none() {
                return Err(e).at("moving the unpacked files to", &entry);
            }
        }
    }
    Ok((entry, Some(out)))
}

/// `FS_TOPDIR_FL` (`chattr +T`): ext2/3/4 place the directories made in a directory so
/// marked as they place top-level ones, spread over block groups with free inodes and few
/// directories, rather than in the group of their parent.
const TOPDIR_FL: libc::c_int = 0x0002_0000;

/// Mark `dir` (the cache's `rootfs/`) as a top of directory hierarchies for ext2/3/4, so that
/// each unpack's staging directory, and with it the files of the layer, goes to a block group
/// of its own. Without it they share the group of the cache (often that of `/tmp` or `$HOME`,
/// where other programs create and delete files all the time), and on ext4 without a journal
/// the kernel then skips every inode deleted there in the last seconds (`recently_deleted` in
/// fs/ext4/ialloc.c), one by one, for each file it creates: measured, a 16,000-file unpack
/// took 13-16 s of kernel time instead of 1-1.7 s. Best effort: other file systems refuse the
/// flag or ignore it, which changes nothing.
fn spread_directories(dir: &Path) {
    use std::os::fd::AsRawFd;
    let Ok(d) = fs::File::open(dir) else { return };
    let mut flags: libc::c_int = 0;
    // SAFETY: the descriptor is open for the call and `flags` is the int the ioctl reads or
    // writes (the kernel's FS_IOC_*FLAGS take an int, whatever their encoded size says).
    unsafe {
        if libc::ioctl(d.as_raw_fd(), libc::FS_IOC_GETFLAGS, &mut flags) != 0
            || flags & TOPDIR_FL != 0
        {
            return;
        }
        flags |= TOPDIR_FL;
        libc::ioctl(d.as_raw_fd(), libc::FS_IOC_SETFLAGS, &flags);
    }
}

/// [`entry_cached`], the entry then held in use ([`crate::gc::hold`]); built again should
/// pruning have removed it between the two.
fn entry_held<T>(
    parent: &Path,
    key: &str,
    marker: &str,
    mut build: impl FnMut(&Path) -> Result<T>,
    held: &mut Vec<fs::File>,
) -> Result<(PathBuf, Option<T>)> {
    let mut tries = 0;
    loop {
        let (entry, built) = entry_cached(parent, key, marker, &mut build)?;
        tries += 1;
        match crate::gc::hold(&entry) {
            Ok(f) if cached(&entry).is_some() => {
                held.push(f);
                return Ok((entry, built));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).at("locking", &entry),
        }
        if tries >= 3 {
            return Err(io::Error::other(
                "removed by a concurrent pruning three times",
            ))
            .at("keeping", &entry);
        }
    }
}

/// The root file system of the image whose layers are `layers` with working directory
/// `workdir`: every layer unpacked into the cache (each verified against its digest and diff_id
/// as it streams) unless there already, the top layer made, then composed as `how` says
/// (`probe` tells whether overlayfs can mount a given `lowerdir` here).
pub fn unpack_cached(
    cache_dir: &Path,
    layers: &[Layer],
    workdir: &str,
    reference: &str,
    how: Composition,
    probe: &dyn Fn(&Path, &str, &Path) -> bool,
) -> Result<Unpacked> {
    let dir = rootfs_dir(cache_dir);
    let chains = chain_ids(layers);
    let mut stack: Vec<PathBuf> = Vec::new(); // bottom first while built
    let mut unpacked = 0;
    let mut skipped = Vec::new();
    let mut held = Vec::new();
    for (l, chain) in layers.iter().zip(&chains) {
        let below: Vec<PathBuf> = stack.iter().rev().cloned().collect();
        let (entry, built) = entry_held(
            &dir,
            chain.hex(),
            &format!("layer {chain}"),
            |root| layers::unpack_layer(root, &below, l, reference),
            &mut held,
        )?;
        if let Some(s) = built {
            unpacked += 1;
            skipped.extend(s);
        }
        stack.push(entry.join("rootfs"));
    }
    let top_chain = chains.last();
    let below: Vec<PathBuf> = stack.iter().rev().cloned().collect();
    let (top, built_top) = entry_held(
        &dir,
        &derived_key("top", top_chain, workdir),
        "top",
        |root| layers::make_top(root, &below, workdir),
        &mut held,
    )?;
    stack.push(top.join("rootfs"));
    stack.reverse(); // top first from here on
    let reused = unpacked == 0 && built_top.is_none();
    if how != Composition::Copy
        && let Some(lowerdir) = compose::lowerdir(&dir, &stack)
    {
        let mnt = compose::mount_point(&dir)?;
        if how == Composition::Overlay || probe(&dir, &lowerdir, &mnt) {
            return Ok(Unpacked {
                rootfs: mnt,
                stack,
                overlay: Some((dir, lowerdir)),
                composition: Composition::Overlay,
                unpacked,
                reused,
                skipped,
                held,
            });
        }
    }
    let bottom_first: Vec<PathBuf> = stack.iter().rev().cloned().collect();
    let mut copy_held = Vec::new();
    let (copy, built) = entry_held(
        &dir,
        &derived_key("copy", top_chain, workdir),
        "copy",
        |root| compose::copy(root, &bottom_first),
        &mut copy_held,
    )?;
    let rootfs = copy.join("rootfs");
    Ok(Unpacked {
        stack: vec![rootfs.clone()],
        rootfs,
        overlay: None,
        composition: Composition::Copy,
        unpacked,
        reused: reused && built.is_none(),
        skipped,
        held: copy_held,
    })
}

/// Removes a directory tree (however restrictive its modes) when dropped.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        // Best effort while unwinding from another error: what is left is a `.unpack-*`
        // directory, never mistaken for a cache entry (it has no marker).
        let _ = remove_tree(&self.0);
    }
}

pub use crate::cache::remove_tree;

/// An archive path made relative and clean: `/`, `.` and empty components dropped, `..`
/// climbing (lexically, as Docker cleans entry names). `None` when it climbs above the root.
pub fn clean(path: &[u8]) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in Path::new(OsStr::from_bytes(path)).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Some(out)
}

/// Is `m` an overlay whiteout (a character device 0/0)?
pub fn is_whiteout(m: &Metadata) -> bool {
    m.file_type().is_char_device() && m.rdev() == 0
}

/// Does the directory `p` carry overlayfs' opaque mark (`user.overlay.opaque=y`)?
pub fn is_opaque(p: &Path) -> bool {
    let (Ok(path), Ok(name)) = (
        CString::new(p.as_os_str().as_bytes()),
        CString::new(OPAQUE_XATTR),
    ) else {
        return false;
    };
    let mut buf = [0u8; 4];
    // SAFETY: both strings are NUL-terminated and `buf` is writable for its length.
    let n = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    n == 1 && buf[0] == b'y'
}

#[cfg(test)]
thread_local! {
    /// Tests: act as a file system without user extended attributes.
    pub(super) static NO_XATTRS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Mark the directory `p` opaque for overlayfs (`ENOTSUP` where the file system keeps no user
/// extended attributes).
pub fn set_opaque(p: &Path) -> io::Result<()> {
    #[cfg(test)]
    if NO_XATTRS.with(|n| n.get()) {
        return Err(io::Error::from_raw_os_error(libc::ENOTSUP));
    }
    let path = CString::new(p.as_os_str().as_bytes())?;
    let name = CString::new(OPAQUE_XATTR)?;
    // SAFETY: both strings are NUL-terminated and the value is one readable byte.
    let r = unsafe { libc::lsetxattr(path.as_ptr(), name.as_ptr(), b"y".as_ptr().cast(), 1, 0) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Directories composed top first, as overlayfs composes them: a path is what the topmost
/// directory holding it has there, unless a whiteout hides it, a non-directory stands at one of
/// its ancestors, or an opaque directory above cuts the lower ones off.
pub fn find(stack: &[PathBuf], rel: &Path) -> io::Result<Option<(PathBuf, Metadata)>> {
    let comps: Vec<&OsStr> = rel
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect();
    if comps.is_empty() {
        return match stack.first() {
            Some(top) => Ok(Some((top.clone(), fs::symlink_metadata(top)?))),
            None => Ok(None),
        };
    }
    for dir in stack {
        let mut p = dir.clone();
        let mut cut = false;
        for (k, c) in comps.iter().enumerate() {
            p.push(c);
            let m = match fs::symlink_metadata(&p) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => return Ok(None),
                Err(e) => return Err(e),
            };
            if is_whiteout(&m) {
                return Ok(None);
            }
            if k + 1 == comps.len() {
                return Ok(Some((p, m)));
            }
            if !m.is_dir() {
                return Ok(None);
            }
            cut |= is_opaque(&p);
        }
        if cut {
            return Ok(None);
        }
    }
    Ok(None)
}

/// A stack of directories on disk as a [`Tree`], for one resolution: it remembers, for each
/// directory it has met, which layers' directories are merged there, so that each look-up costs
/// one `lstat` per layer rather than one per layer and component.
struct OnDisk<'a> {
    stack: &'a [PathBuf],
    /// Directory (relative path) -> the layers (indexes into `stack`, top first) holding a
    /// directory there that shows through.
    merged: HashMap<Vec<u8>, Vec<usize>>,
}

impl<'a> OnDisk<'a> {
    fn new(stack: &'a [PathBuf]) -> Self {
        OnDisk {
            stack,
            merged: HashMap::new(),
        }
    }

    /// The layers merged at the directory `dir` (`""` for the root).
    fn merged_at(&mut self, dir: &[u8]) -> io::Result<Vec<usize>> {
        if dir.is_empty() {
            return Ok((0..self.stack.len()).collect());
        }
        if let Some(l) = self.merged.get(dir) {
            return Ok(l.clone());
        }
        // Not met in this resolution (the contract says it was): work it out from the root.
        let mut at: Vec<u8> = Vec::new();
        for c in dir.split(|b| *b == b'/') {
            if !at.is_empty() {
                at.push(b'/');
            }
            at.extend_from_slice(c);
            if !self.merged.contains_key(&at) {
                let probe = at.clone();
                self.look(&probe)?;
            }
        }
        Ok(self.merged.get(dir).cloned().unwrap_or_default())
    }

    /// What is at `path`, and the host file showing there; directories remembered.
    fn look(&mut self, path: &[u8]) -> io::Result<Option<(PathBuf, Metadata)>> {
        let parent = match path.iter().rposition(|b| *b == b'/') {
            Some(i) => &path[..i],
            None => b"",
        };
        let layers = self.merged_at(parent)?;
        let rel = Path::new(OsStr::from_bytes(path));
        let mut found: Option<(PathBuf, Metadata)> = None;
        let mut dirs = Vec::new();
        for i in layers {
            let host = self.stack[i].join(rel);
            let m = match fs::symlink_metadata(&host) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => continue,
                Err(e) => return Err(e),
            };
            if is_whiteout(&m) || !m.is_dir() {
                // Hides what is below; shows itself if nothing above did.
                if found.is_none() && !is_whiteout(&m) {
                    found = Some((host, m));
                }
                break;
            }
            let last = i + 1 == self.stack.len();
            let opaque = !last && is_opaque(&host);
            if found.is_none() {
                found = Some((host, m));
            }
            dirs.push(i);
            if opaque {
                break;
            }
        }
        if found.as_ref().is_some_and(|(_, m)| m.is_dir()) {
            self.merged.insert(path.to_vec(), dirs);
        }
        Ok(found)
    }
}

impl Tree for OnDisk<'_> {
    type Error = io::Error;
    fn entry(&mut self, path: &[u8]) -> io::Result<Entry> {
        match self.look(path)? {
            None => Ok(Entry::Missing),
            Some((_, m)) if m.is_dir() => Ok(Entry::Dir),
            Some((host, m)) if m.file_type().is_symlink() => Ok(Entry::Symlink(
                fs::read_link(&host)?.into_os_string().into_vec(),
            )),
            Some(_) => Ok(Entry::Other),
        }
    }
}

fn not_a_dir(p: &[u8]) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotADirectory,
        format!("/{} is not a directory", String::from_utf8_lossy(p)),
    )
}

fn too_many_links(p: &Path) -> io::Error {
    io::Error::other(format!(
        "/{}: more than {MAX_LINKS} symbolic links",
        p.display()
    ))
}

/// Resolve the directory `dir` in the composed `stack` as the sandbox will see it: symbolic
/// links followed inside it, `..` never above it. `Ok(Err(missing))` names the first missing
/// component (relative to the root, links resolved) when there is one. The result is relative to
/// the root and names a real directory reached without leaving it.
pub fn resolve_dir(
    stack: &[PathBuf],
    dir: &Path,
) -> io::Result<std::result::Result<PathBuf, PathBuf>> {
    let follow = Follow {
        last: true,
        lenient: false,
        confined: false,
    };
    match resolve(&mut OnDisk::new(stack), dir.as_os_str().as_bytes(), follow) {
        Ok(r) if r.entry == Entry::Dir => Ok(Ok(PathBuf::from(OsString::from_vec(r.path)))),
        Ok(r) => Err(not_a_dir(&r.path)),
        Err(ResolveError::Missing(p)) => Ok(Err(PathBuf::from(OsString::from_vec(p)))),
        Err(ResolveError::NotADirectory(p)) => Err(not_a_dir(&p)),
        Err(ResolveError::TooManyLinks) => Err(too_many_links(dir)),
        // Not confined: `..` stays at the root.
        Err(ResolveError::Escapes) => Ok(Err(PathBuf::new())),
        Err(ResolveError::Tree(e)) => Err(e),
    }
}

/// Find `path` (absolute in the image, or relative to its root) in the composed `stack`,
/// following every symbolic link inside it: the resolved path relative to the root, and the
/// host file holding it, if it exists.
pub fn lookup(stack: &[PathBuf], path: &Path) -> io::Result<Option<(PathBuf, PathBuf)>> {
    let follow = Follow {
        last: true,
        lenient: false,
        confined: false,
    };
    match resolve(&mut OnDisk::new(stack), path.as_os_str().as_bytes(), follow) {
        Ok(r) => {
            let rel = PathBuf::from(OsString::from_vec(r.path));
            Ok(find(stack, &rel)?.map(|(host, _)| (rel, host)))
        }
        Err(ResolveError::Missing(_) | ResolveError::NotADirectory(_)) => Ok(None),
        Err(ResolveError::TooManyLinks) => Err(too_many_links(path)),
        // Not confined: `..` stays at the root.
        Err(ResolveError::Escapes) => Ok(None),
        Err(ResolveError::Tree(e)) => Err(e),
    }
}

/// Remove whatever is at `host` (a directory with its contents; a link itself).
pub fn clear(host: &Path) -> io::Result<()> {
    match fs::symlink_metadata(host) {
        Ok(m) if m.is_dir() => remove_tree(host),
        Ok(_) => fs::remove_file(host),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

pub(super) fn mtime_of(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

/// Set a path's modification (and access) time without following a symbolic link.
pub(super) fn set_mtime_nofollow(host: &Path, secs: u64) -> io::Result<()> {
    use nix::sys::stat::{UtimensatFlags, utimensat};
    use nix::sys::time::TimeSpec;
    let t = TimeSpec::new(secs as i64, 0);
    utimensat(
        nix::fcntl::AT_FDCWD,
        host,
        &t,
        &t,
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(io::Error::from)
}

/// Make `host` a directory (created with `mode`), replacing whatever non-directory is there.
pub(super) fn ensure_dir(host: &Path, mode: u32) -> io::Result<()> {
    match fs::symlink_metadata(host) {
        Ok(md) if md.is_dir() => Ok(()),
        Ok(_) => {
            fs::remove_file(host)?;
            fs::DirBuilder::new().mode(mode).create(host)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::DirBuilder::new().mode(mode).create(host)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;

    /// One tar entry for a test layer.
    enum E<'a> {
        Dir(&'a str, u32),
        File(&'a str, &'a str, u32),
        Link(&'a str, &'a str),
        Hard(&'a str, &'a str),
        Fifo(&'a str),
        Dev(&'a str),
    }

    fn tar_of(entries: &[E]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for e in entries {
            let mut h = tar::Header::new_gnu();
            h.set_mtime(1_000_000);
            match e {
                E::Dir(p, m) => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(*m);
                    h.set_size(0);
                    b.append_data(&mut h, p, io::empty()).unwrap();
                }
                E::File(p, c, m) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(*m);
                    h.set_size(c.len() as u64);
                    b.append_data(&mut h, p, c.as_bytes()).unwrap();
                }
                E::Link(p, t) => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_size(0);
                    h.set_mode(0o777);
                    b.append_link(&mut h, p, t).unwrap();
                }
                E::Hard(p, t) => {
                    h.set_entry_type(tar::EntryType::Link);
                    h.set_size(0);
                    h.set_mode(0o644);
                    b.append_link(&mut h, p, t).unwrap();
                }
                E::Fifo(p) => {
                    h.set_entry_type(tar::EntryType::Fifo);
                    h.set_size(0);
                    h.set_mode(0o600);
                    b.append_data(&mut h, p, io::empty()).unwrap();
                }
                E::Dev(p) => {
                    h.set_entry_type(tar::EntryType::Char);
                    h.set_size(0);
                    h.set_mode(0o666);
                    b.append_data(&mut h, p, io::empty()).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    /// Raw tar bytes with one entry whose name is written as is (the builder refuses `..`).
    fn raw_tar(name: &str, kind: tar::EntryType, link: &str, content: &[u8]) -> Vec<u8> {
        let mut h = tar::Header::new_old();
        {
            let bytes = h.as_mut_bytes();
            bytes[..name.len()].copy_from_slice(name.as_bytes());
            bytes[157..157 + link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_entry_type(kind);
        h.set_mode(0o644);
        h.set_size(content.len() as u64);
        h.set_mtime(0);
        h.set_cksum();
        let mut out = h.as_bytes().to_vec();
        out.extend_from_slice(content);
        out.resize(out.len().div_ceil(512) * 512, 0);
        out.extend_from_slice(&[0; 1024]);
        out
    }

    /// The names in directory `dir`, sorted.
    fn names_in(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// Layer `i` of a test image in `dir`: `tar_bytes`, gzipped or not.
    pub(super) fn layer(dir: &Path, i: usize, tar_bytes: &[u8], gzip: bool) -> Layer {
        let blob = if gzip {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(tar_bytes).unwrap();
            e.finish().unwrap()
        } else {
            tar_bytes.to_vec()
        };
        let path = dir.join(format!("layer{i}"));
        fs::write(&path, &blob).unwrap();
        Layer {
            media_type: oci_spec::image::MediaType::ImageLayerGzip,
            digest: Digest::of(&blob),
            size: blob.len() as u64,
            diff_id: Digest::of(tar_bytes),
            path,
            origin: crate::image::Origin::Base,
            from: None,
        }
    }

    fn unpack(tars: &[Vec<u8>]) -> (tempfile::TempDir, Result<Unpacked>) {
        let t = tempfile::tempdir().unwrap();
        let blobs = t.path().join("blobs");
        fs::create_dir(&blobs).unwrap();
        let layers: Vec<Layer> = tars
            .iter()
            .enumerate()
            .map(|(i, b)| layer(&blobs, i, b, i % 2 == 0))
            .collect();
        let cache = t.path().join("cache");
        let r = copy_of(&cache, &layers, "/work/dir", "oci:test");
        (t, r)
    }

    /// The layers unpacked and composed as a copy (overlayfs needs a mount namespace: the
    /// sandbox's tests cover it).
    fn copy_of(cache: &Path, layers: &[Layer], workdir: &str, reference: &str) -> Result<Unpacked> {
        unpack_cached(
            cache,
            layers,
            workdir,
            reference,
            Composition::Copy,
            &|_, _, _| false,
        )
    }

    /// The layer and top entries of a cache holding one image, top first (by marker kind and
    /// chain: the top, then layers newest first).
    fn u_stack(dir: &Path, copy_root: &Path) -> Vec<PathBuf> {
        let mut layers: Vec<(PathBuf, std::time::SystemTime)> = Vec::new();
        let mut top = None;
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let marker = fs::read_to_string(p.join(MARKER)).unwrap();
            let at = fs::metadata(p.join(MARKER)).unwrap().modified().unwrap();
            if marker.starts_with("layer") {
                layers.push((p.join("rootfs"), at));
            } else if marker.starts_with("top") {
                top = Some(p.join("rootfs"));
            } else {
                assert_eq!(p.join("rootfs"), copy_root);
            }
        }
        layers.sort_by_key(|(_, at)| std::cmp::Reverse(*at));
        let mut out = vec![top.unwrap()];
        out.extend(layers.into_iter().map(|(p, _)| p));
        out
    }

    #[test]
    fn layers_apply_in_order_with_whiteouts() {
        let l1 = tar_of(&[
            E::Dir("etc/", 0o755),
            E::File("etc/keep", "k", 0o644),
            E::File("etc/gone", "g", 0o644),
            E::Dir("opt/", 0o755),
            E::File("opt/old/a", "a", 0o644),
            E::File("opt/old/sub/b", "b", 0o644),
            E::File("bin/tool", "#!/bin/sh\n", 0o4755),
            E::Dir("locked/", 0o555),
            E::File("locked/inside", "x", 0o400),
            E::Dev("dev/console"),
        ]);
        let l2 = tar_of(&[
            E::File("etc/.wh.gone", "", 0o644),
            E::File("opt/new", "n", 0o600),
            E::File("opt/.wh..wh..opq", "", 0o644),
            E::Dir("opt/old/", 0o700),
            E::File("opt/old/c", "c", 0o644),
            E::File("etc/.wh.never-there", "", 0o644),
            E::File("missing/.wh.x", "", 0o644),
            E::Fifo("run/fifo"),
        ]);
        let (_t, r) = unpack(&[l1, l2]);
        let u = r.unwrap();
        let root = &u.rootfs;
        assert!(!u.reused);
        assert_eq!(u.skipped, vec!["/dev/console".to_owned()]);
        assert_eq!(fs::read_to_string(root.join("etc/keep")).unwrap(), "k");
        assert!(!root.join("etc/gone").exists());
        // The opaque directory keeps only what its own layer wrote, before or after the marker.
        assert_eq!(fs::read_to_string(root.join("opt/new")).unwrap(), "n");
        assert_eq!(fs::read_to_string(root.join("opt/old/c")).unwrap(), "c");
        assert!(!root.join("opt/old/a").exists());
        assert!(!root.join("opt/old/sub").exists());
        // Modes kept (setuid dropped), directories get theirs at the end, times kept.
        let mode = |p: &str| fs::symlink_metadata(root.join(p)).unwrap().mode() & 0o7777;
        assert_eq!(mode("bin/tool"), 0o755);
        assert_eq!(mode("opt/new"), 0o600);
        assert_eq!(mode("opt/old"), 0o700);
        assert_eq!(mode("locked"), 0o555);
        assert_eq!(mode("locked/inside"), 0o400);
        let mtime = |p: &str| fs::symlink_metadata(root.join(p)).unwrap().mtime();
        assert_eq!(mtime("etc/keep"), 1_000_000);
        assert_eq!(mtime("locked"), 1_000_000);
        use std::os::unix::fs::FileTypeExt;
        assert!(
            fs::symlink_metadata(root.join("run/fifo"))
                .unwrap()
                .file_type()
                .is_fifo()
        );
        for m in MOUNT_POINTS.iter().chain(&["work/dir"]) {
            assert!(root.join(m).is_dir(), "{m}");
        }
        let entry = root.parent().unwrap();
        assert!(entry.join(MARKER).is_file());
        // Beside the entry: the two layers and the top layer, each complete; no debris.
        let siblings: Vec<_> = fs::read_dir(entry.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(siblings.len(), 4, "{siblings:?}");
        assert!(siblings.iter().all(|s| s.join(MARKER).is_file()));
        // The layers as overlayfs reads them: the same answers as the copy.
        let stack = &u_stack(entry.parent().unwrap(), root);
        assert!(find(stack, Path::new("etc/gone")).unwrap().is_none());
        assert!(find(stack, Path::new("opt/old/a")).unwrap().is_none());
        assert!(find(stack, Path::new("opt/old/sub")).unwrap().is_none());
        assert!(find(stack, Path::new("opt/old/c")).unwrap().is_some());
        assert!(find(stack, Path::new("etc/keep")).unwrap().is_some());
    }

    #[test]
    fn without_user_xattrs_opaque_directories_become_whiteouts() {
        NO_XATTRS.with(|n| n.set(true));
        let l1 = tar_of(&[
            E::File("opt/old/a", "a", 0o644),
            E::File("opt/keep", "k", 0o644),
            E::File("d/old", "o", 0o644),
        ]);
        let l2 = tar_of(&[
            E::File("opt/new", "n", 0o644),
            E::File("opt/.wh..wh..opq", "", 0o644),
            E::Dir("opt/old/", 0o755),
            E::File("opt/old/c", "c", 0o644),
            E::File(".wh.d", "", 0o644),
            E::File("d/new", "n", 0o644),
        ]);
        let (_t, r) = unpack(&[l1, l2]);
        NO_XATTRS.with(|n| n.set(false));
        let u = r.unwrap();
        let names = |p: &str| names_in(&u.rootfs.join(p));
        assert_eq!(names("opt"), ["new", "old"]);
        assert_eq!(names("opt/old"), ["c"]);
        assert_eq!(names("d"), ["new"]);
        let stack = &u_stack(u.rootfs.parent().unwrap().parent().unwrap(), &u.rootfs);
        assert!(find(stack, Path::new("opt/keep")).unwrap().is_none());
        assert!(find(stack, Path::new("opt/old/a")).unwrap().is_none());
        assert!(find(stack, Path::new("d/old")).unwrap().is_none());
        assert!(!is_opaque(&stack[1].join("opt")), "no attribute was used");
    }

    #[test]
    fn a_directory_whited_out_then_written_into_shows_nothing_from_below() {
        let l1 = tar_of(&[E::File("d/old", "o", 0o644), E::File("e/old", "o", 0o644)]);
        // `d` hidden then written into without a directory entry; `e`'s file hidden alone.
        let l2 = tar_of(&[
            E::File(".wh.d", "", 0o644),
            E::File("d/new", "n", 0o644),
            E::File("e/.wh.old", "", 0o644),
            E::File("e/new", "n", 0o644),
        ]);
        let (_t, r) = unpack(&[l1, l2]);
        let u = r.unwrap();
        let names = |p: &str| names_in(&u.rootfs.join(p));
        assert_eq!(names("d"), ["new"]);
        assert_eq!(names("e"), ["new"]);
        let stack = &u_stack(u.rootfs.parent().unwrap().parent().unwrap(), &u.rootfs);
        assert!(find(stack, Path::new("d/old")).unwrap().is_none());
        assert!(find(stack, Path::new("e/old")).unwrap().is_none());
        assert!(find(stack, Path::new("d/new")).unwrap().is_some());
    }

    #[test]
    fn links_are_kept_and_resolved_inside_the_root() {
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        fs::create_dir(&victim).unwrap();
        let abs = victim.to_str().unwrap().to_owned();
        let l1 = tar_of(&[
            E::Dir("usr/lib/", 0o755),
            E::Link("lib", "usr/lib"),
            E::Link("escape", &abs),
            E::Link("up", "../../../../.."),
            E::File("usr/lib/libc.so", "elf", 0o755),
            E::Hard("usr/lib/libc.so.6", "usr/lib/libc.so"),
        ]);
        let l2 = tar_of(&[
            // Through a relative link: lands in usr/lib.
            E::File("lib/libm.so", "m", 0o644),
            // Through an absolute link to a host directory: lands in the root's copy of it.
            E::File("escape/owned", "x", 0o644),
            // Through a link climbing past the root: lands at the root.
            E::File("up/top", "t", 0o644),
        ]);
        let (_t, r) = unpack(&[l1, l2]);
        let root = r.unwrap().rootfs;
        assert_eq!(
            fs::read_link(root.join("lib")).unwrap(),
            Path::new("usr/lib")
        );
        assert_eq!(
            fs::read_to_string(root.join("usr/lib/libm.so")).unwrap(),
            "m"
        );
        assert!(
            fs::read_dir(&victim).unwrap().next().is_none(),
            "wrote outside the root"
        );
        assert_eq!(
            fs::read_to_string(root.join(abs.trim_start_matches('/')).join("owned")).unwrap(),
            "x"
        );
        assert_eq!(fs::read_to_string(root.join("top")).unwrap(), "t");
        let a = fs::metadata(root.join("usr/lib/libc.so")).unwrap();
        let b = fs::metadata(root.join("usr/lib/libc.so.6")).unwrap();
        // One file (the copy links the layer's files, so it has more than two names).
        assert_eq!(a.ino(), b.ino());
        assert_eq!(
            lookup(std::slice::from_ref(&root), Path::new("/lib/libc.so.6"))
                .unwrap()
                .map(|(rel, _)| rel),
            Some(PathBuf::from("usr/lib/libc.so.6"))
        );
        assert_eq!(
            lookup(std::slice::from_ref(&root), Path::new("/lib/nothing")).unwrap(),
            None
        );
    }

    #[test]
    fn a_directory_entry_replaces_a_link_and_a_file_replaces_a_directory() {
        let l1 = tar_of(&[
            E::Dir("real/", 0o755),
            E::File("real/f", "f", 0o644),
            E::Link("lnk", "real"),
            E::Dir("d/", 0o755),
            E::File("d/inner", "i", 0o644),
        ]);
        let l2 = tar_of(&[E::Dir("lnk/", 0o750), E::File("d", "now a file", 0o644)]);
        let (_t, r) = unpack(&[l1, l2]);
        let root = r.unwrap().rootfs;
        let m = fs::symlink_metadata(root.join("lnk")).unwrap();
        assert!(m.is_dir());
        assert!(root.join("real/f").is_file());
        assert_eq!(fs::read_to_string(root.join("d")).unwrap(), "now a file");
    }

    #[test]
    fn escaping_entries_and_hard_links_are_refused() {
        let t1 = raw_tar("../evil", tar::EntryType::Regular, "", b"x");
        let (_t, r) = unpack(&[t1]);
        let e = r.unwrap_err().to_string();
        assert!(e.contains("climbs above the root"), "{e}");

        let t2 = raw_tar("etc/passwd", tar::EntryType::Link, "../../etc/passwd", b"");
        let (_t, r) = unpack(&[t2]);
        let e = r.unwrap_err().to_string();
        assert!(e.contains("climbs above the root"), "{e}");
    }

    #[test]
    fn whiteouts_of_dot_and_dotdot_and_overlong_links_are_refused() {
        let base = tar_of(&[E::File("var/keep", "k", 0o644), E::Dir("var/task/", 0o755)]);
        for name in ["var/task/.wh..", "var/task/.wh...", ".wh..."] {
            let hostile = tar_of(&[E::File(name, "", 0o644)]);
            let (t, r) = unpack(&[base.clone(), hostile]);
            let e = r.unwrap_err().to_string();
            assert!(
                e.contains(&format!("`{name}`")) && e.contains("whiteout"),
                "{e}"
            );
            // Nothing above the root was touched: the cache holds the base layer only, and no
            // debris.
            let rootfs = t.path().join("cache/rootfs");
            assert_eq!(fs::read_dir(&rootfs).unwrap().count(), 1, "{name}");
        }
        let long = "d/".repeat(2100);
        let (_t, r) = unpack(&[tar_of(&[E::Link("far", &long)])]);
        let e = r.unwrap_err().to_string();
        assert!(e.contains("`far`") && e.contains("4200 bytes"), "{e}");
    }

    #[test]
    fn the_cache_directory_spreads_its_unpacks_where_the_file_system_can() {
        let t = tempfile::tempdir().unwrap();
        let cache = t.path().join("cache");
        let tar_bytes = tar_of(&[E::File("a", "a", 0o644)]);
        let l = layer(t.path(), 0, &tar_bytes, true);
        copy_of(&cache, &[l], "/", "oci:x").unwrap();
        let dir = rootfs_dir(&cache);
        let fs_type = nix::sys::statfs::statfs(&dir).unwrap().filesystem_type();
        // ext2, ext3 and ext4 share the magic number; elsewhere the flag means nothing.
        if fs_type != nix::sys::statfs::EXT4_SUPER_MAGIC {
            return;
        }
        let out = std::process::Command::new("lsattr")
            .arg("-d")
            .arg(&dir)
            .output()
            .expect("lsattr (e2fsprogs) is needed");
        let shown = String::from_utf8_lossy(&out.stdout);
        let attrs = shown.split_whitespace().next().unwrap_or("");
        assert!(out.status.success() && attrs.contains('T'), "{shown}");
    }

    #[test]
    fn a_corrupt_layer_is_refused_and_leaves_nothing() {
        let t = tempfile::tempdir().unwrap();
        let tar_bytes = tar_of(&[E::File("a", "a", 0o644)]);
        let mut l = layer(t.path(), 0, &tar_bytes, true);
        l.diff_id = Digest::of(b"something else");
        let cache = t.path().join("cache");
        let e = copy_of(&cache, &[l], "/", "oci:x").unwrap_err().to_string();
        assert!(e.contains("diff_id"), "{e}");
        assert_eq!(fs::read_dir(cache.join("rootfs")).unwrap().count(), 0);
    }

    #[test]
    fn a_complete_entry_is_reused_and_an_incomplete_one_redone() {
        let t = tempfile::tempdir().unwrap();
        let tar_bytes = tar_of(&[E::Dir("ro/", 0o500), E::File("ro/a", "a", 0o444)]);
        let l = layer(t.path(), 0, &tar_bytes, false);
        let cache = t.path().join("cache");
        let first = copy_of(&cache, std::slice::from_ref(&l), "/", "oci:x").unwrap();
        assert!(!first.reused);
        assert_eq!(first.unpacked, 1);
        let again = copy_of(&cache, std::slice::from_ref(&l), "/", "oci:x").unwrap();
        assert!(again.reused);
        assert_eq!(again.unpacked, 0);
        assert_eq!(again.rootfs, first.rootfs);
        // Interrupted: no marker. The entry is unpacked again (read-only directories included).
        let layer_entry = rootfs_dir(&cache).join(l.diff_id.hex());
        fs::remove_file(layer_entry.join(MARKER)).unwrap();
        let redone = copy_of(&cache, std::slice::from_ref(&l), "/", "oci:x").unwrap();
        assert_eq!(redone.unpacked, 1);
        assert_eq!(fs::read_to_string(redone.rootfs.join("ro/a")).unwrap(), "a");
        remove_tree(&cache).unwrap();
        assert!(!cache.exists());
    }

    #[test]
    fn a_killed_unpacks_staging_is_removed_and_a_failed_one_leaves_none() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let cache = t.path().join("cache");
        let parent = cache.join("rootfs");
        // What a `kill -9` during an unpack leaves: a read-only tree whose owner is gone.
        let stale = parent.join(".unpack-999999999-AbCdEf");
        fs::create_dir_all(stale.join("rootfs/ro")).unwrap();
        fs::write(stale.join("rootfs/ro/f"), b"x").unwrap();
        fs::set_permissions(stale.join("rootfs/ro"), fs::Permissions::from_mode(0o500)).unwrap();
        let u = copy_of(&cache, &[], "/", "oci:test").unwrap();
        assert!(!stale.exists(), "the dead owner's staging is removed");
        assert!(u.rootfs.is_dir());
        // A layer that fails to verify leaves no staging behind.
        let bad = Layer {
            size: 1,
            ..layer(t.path(), 0, b"not a tar", true)
        };
        assert!(copy_of(&cache, &[bad], "/", "oci:test").is_err());
        let left: Vec<_> = fs::read_dir(&parent)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .filter(|n| n.to_string_lossy().starts_with(".unpack-"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
}

#[cfg(test)]
mod model_tests {
    //! A generated image's layers unpacked and composed, checked file by file against a model
    //! of what the layers say: bytes, modes, owners, times, symbolic and hard links, fifos,
    //! whiteouts and opaque directories, and nothing else on disk.
    use super::*;
    use std::collections::BTreeMap;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};

    #[derive(Clone, Debug)]
    enum Node {
        /// Mode and mtime; `None` for a directory the layers only imply (0755, time unchecked).
        Dir(Option<(u32, u64)>),
        File(Vec<u8>, u32, u64),
        Link(String),
        /// A hard link to the (model) path.
        Hard(String),
        Fifo,
    }

    /// One layer's tar and the model it leaves, built side by side.
    struct Gen {
        tar: tar::Builder<Vec<u8>>,
    }

    impl Gen {
        fn new() -> Self {
            Gen {
                tar: tar::Builder::new(Vec::new()),
            }
        }

        fn header(kind: tar::EntryType, mode: u32, mtime: u64, size: usize) -> tar::Header {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_mode(mode);
            h.set_mtime(mtime);
            h.set_size(size as u64);
            h
        }

        fn dir(&mut self, p: &str, mode: u32, mtime: u64) {
            let mut h = Self::header(tar::EntryType::Directory, mode, mtime, 0);
            self.tar.append_data(&mut h, p, io::empty()).unwrap();
        }

        fn file(&mut self, p: &str, body: &[u8], mode: u32, mtime: u64) {
            let mut h = Self::header(tar::EntryType::Regular, mode, mtime, body.len());
            self.tar.append_data(&mut h, p, body).unwrap();
        }

        fn link(&mut self, kind: tar::EntryType, p: &str, target: &str) {
            let mut h = Self::header(kind, 0o777, 7, 0);
            self.tar.append_link(&mut h, p, target).unwrap();
        }

        fn fifo(&mut self, p: &str) {
            let mut h = Self::header(tar::EntryType::Fifo, 0o640, 9, 0);
            self.tar.append_data(&mut h, p, io::empty()).unwrap();
        }

        fn done(self) -> Vec<u8> {
            self.tar.into_inner().unwrap()
        }
    }

    /// Remove `p` and everything under it from the model.
    fn drop_tree(m: &mut BTreeMap<String, Node>, p: &str) {
        let under = format!("{p}/");
        m.retain(|k, _| k != p && !k.starts_with(&under));
    }

    /// A file body of `n` bytes that differs from file to file.
    fn body(seed: usize, n: usize) -> Vec<u8> {
        (0..n)
            .map(|i| (i * 31 + seed * 7 + i / 251) as u8)
            .collect()
    }

    /// The bottom layer: many directories of files of assorted sizes and modes, links, a fifo,
    /// and paths written twice in the layer (a file again, a directory then a file, a file
    /// then a directory).
    fn bottom(m: &mut BTreeMap<String, Node>) -> Vec<u8> {
        let mut g = Gen::new();
        let modes = [0o644, 0o755, 0o400, 0o600, 0o4755, 0o1644, 0o2711];
        for d in 0..12usize {
            let dmode = if d == 10 { 0o555 } else { 0o755 };
            let dir = format!("pkg{d}");
            g.dir(&format!("{dir}/"), dmode, 2_000 + d as u64);
            m.insert(dir.clone(), Node::Dir(Some((dmode, 2_000 + d as u64))));
            for i in 0..9usize {
                let size = [0, 1, 511, 512, 4097, 70_000, 300_000, 600_001, 13][i];
                let (p, mode, mtime) =
                    (format!("{dir}/f{i}"), modes[(d + i) % 7], 3_000 + i as u64);
                let b = body(d * 10 + i, size);
                g.file(&p, &b, mode, mtime);
                m.insert(p, Node::File(b, mode & !0o6000, mtime));
            }
        }
        for (p, b) in [
            ("deep/a/b/c/file", b"deep".to_vec()),
            ("usr/lib/libc.so", body(1, 9)),
        ] {
            g.file(p, &b, 0o644, 5);
            m.insert(p.into(), Node::File(b, 0o644, 5));
        }
        for d in [
            "deep",
            "deep/a",
            "deep/a/b",
            "deep/a/b/c",
            "usr",
            "usr/lib",
            "run",
        ] {
            m.insert(d.into(), Node::Dir(None));
        }
        g.link(tar::EntryType::Symlink, "lib", "usr/lib");
        g.link(tar::EntryType::Symlink, "pkg0/link", "f1");
        g.link(tar::EntryType::Link, "pkg1/hard", "pkg1/f2");
        g.fifo("run/fifo");
        m.insert("lib".into(), Node::Link("usr/lib".into()));
        m.insert("pkg0/link".into(), Node::Link("f1".into()));
        m.insert("pkg1/hard".into(), Node::Hard("pkg1/f2".into()));
        m.insert("run/fifo".into(), Node::Fifo);
        // Written again in the same layer: the last entry wins.
        g.file("pkg2/f3", b"again", 0o640, 11);
        m.insert("pkg2/f3".into(), Node::File(b"again".to_vec(), 0o640, 11));
        g.dir("swap/", 0o755, 12);
        g.file("swap/in", b"in", 0o644, 12);
        g.file("swap", b"now a file", 0o644, 13);
        m.insert("swap".into(), Node::File(b"now a file".to_vec(), 0o644, 13));
        g.dir("pkg3/f0/", 0o711, 14);
        g.file("pkg3/f0/x", b"x", 0o644, 14);
        m.insert("pkg3/f0".into(), Node::Dir(Some((0o711, 14))));
        m.insert("pkg3/f0/x".into(), Node::File(b"x".to_vec(), 0o644, 14));
        g.done()
    }

    /// The layer above: whiteouts of a file and a directory, an opaque directory, a file over
    /// a lower directory, a directory's mode changed, files added into lower directories and
    /// through the lower layer's link, a new tree.
    fn upper(m: &mut BTreeMap<String, Node>) -> Vec<u8> {
        let mut g = Gen::new();
        g.file("pkg4/.wh.f1", b"", 0o644, 0);
        drop_tree(m, "pkg4/f1");
        g.file(".wh.pkg5", b"", 0o644, 0);
        drop_tree(m, "pkg5");
        g.file("pkg6/.wh..wh..opq", b"", 0o644, 0);
        g.file("pkg6/new", b"new", 0o644, 20);
        m.retain(|k, _| !k.starts_with("pkg6/"));
        m.insert("pkg6/new".into(), Node::File(b"new".to_vec(), 0o644, 20));
        g.file("pkg7", b"file over a directory", 0o600, 21);
        drop_tree(m, "pkg7");
        m.insert(
            "pkg7".into(),
            Node::File(b"file over a directory".to_vec(), 0o600, 21),
        );
        g.dir("pkg8/", 0o700, 22);
        m.insert("pkg8".into(), Node::Dir(Some((0o700, 22))));
        g.file("pkg9/added", b"added", 0o644, 23);
        m.insert(
            "pkg9/added".into(),
            Node::File(b"added".to_vec(), 0o644, 23),
        );
        g.file("lib/libx.so", b"x.so", 0o755, 24);
        m.insert(
            "usr/lib/libx.so".into(),
            Node::File(b"x.so".to_vec(), 0o755, 24),
        );
        for d in 0..6usize {
            g.dir(&format!("new/d{d}/"), 0o750, 25);
            m.insert(format!("new/d{d}"), Node::Dir(Some((0o750, 25))));
            for i in 0..5usize {
                let (p, b) = (format!("new/d{d}/g{i}"), body(d + 100 * i, i * 3000));
                g.file(&p, &b, 0o644, 26);
                m.insert(p, Node::File(b, 0o644, 26));
            }
        }
        m.insert("new".into(), Node::Dir(None));
        g.done()
    }

    /// Every path under `root`, relative.
    fn tree(root: &Path, rel: &str, out: &mut Vec<String>) {
        for e in fs::read_dir(root.join(rel)).unwrap() {
            let name = e.unwrap().file_name().into_string().unwrap();
            let p = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            if fs::symlink_metadata(root.join(&p)).unwrap().is_dir() {
                tree(root, &p, out);
            }
            out.push(p);
        }
    }

    /// `path` on disk is what the model says.
    fn check(root: &Path, path: &str, want: &Node) {
        let md = fs::symlink_metadata(root.join(path)).unwrap();
        let (uid, gid) = (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        );
        assert_eq!((md.uid(), md.gid()), (uid, gid), "{path}: owner");
        let mode_time = |mode: u32, mtime: u64| {
            assert_eq!(md.mode() & 0o7777, mode, "{path}: mode");
            assert_eq!(md.mtime(), mtime as i64, "{path}: mtime");
        };
        match want {
            Node::Dir(decl) => {
                assert!(md.is_dir(), "{path}: a directory");
                match decl {
                    Some((mode, mtime)) => mode_time(*mode, *mtime),
                    None => assert_eq!(md.mode() & 0o7777, 0o755, "{path}: implied"),
                }
            }
            Node::File(b, mode, mtime) => {
                assert!(md.is_file(), "{path}: a file");
                assert!(fs::read(root.join(path)).unwrap() == *b, "{path}: bytes");
                mode_time(*mode, *mtime);
            }
            Node::Link(t) => assert_eq!(fs::read_link(root.join(path)).unwrap(), Path::new(t)),
            Node::Hard(t) => {
                assert_eq!(
                    md.ino(),
                    fs::metadata(root.join(t)).unwrap().ino(),
                    "{path}"
                );
            }
            Node::Fifo => assert!(md.file_type().is_fifo(), "{path}: a fifo"),
        }
    }

    #[test]
    fn an_unpacked_tree_is_exactly_what_its_layers_hold() {
        let mut model = BTreeMap::new();
        let tars = [bottom(&mut model), upper(&mut model)];
        let t = tempfile::tempdir().unwrap();
        let layers: Vec<Layer> = tars
            .iter()
            .enumerate()
            .map(|(i, tar_bytes)| super::tests::layer(t.path(), i, tar_bytes, true))
            .collect();
        let cache = t.path().join("cache");
        let u = unpack_cached(
            &cache,
            &layers,
            "/var/task",
            "oci:m",
            Composition::Copy,
            &|_, _, _| false,
        )
        .unwrap();
        for (p, node) in [("proc", None), ("dev", None), ("tmp", None), ("var", None)] {
            model.insert(p.into(), Node::Dir(node));
        }
        model.insert("var/task".into(), Node::Dir(None));
        let mut on_disk = Vec::new();
        tree(&u.rootfs, "", &mut on_disk);
        on_disk.sort();
        let wanted: Vec<String> = model.keys().cloned().collect();
        assert_eq!(on_disk, wanted, "the paths of the composed tree");
        for (p, node) in &model {
            check(&u.rootfs, p, node);
        }
        // The layers as overlayfs stacks them show the same paths, and hide the same ones.
        let stack: Vec<PathBuf> = chain_ids(&layers)
            .iter()
            .rev()
            .map(|c| rootfs_dir(&cache).join(c.hex()).join("rootfs"))
            .collect();
        for p in model
            .keys()
            .filter(|p| !p.starts_with("proc") && !p.starts_with("var"))
        {
            if ["dev", "tmp"].contains(&p.as_str()) {
                continue;
            }
            let (host, _) = find(&stack, Path::new(p))
                .unwrap()
                .unwrap_or_else(|| panic!("{p}"));
            if let Some(Node::File(b, ..)) = model.get(p) {
                assert!(fs::read(host).unwrap() == *b, "{p}: bytes in the layers");
            }
        }
        for hidden in [
            "pkg4/f1", "pkg5", "pkg5/f0", "pkg6/f0", "pkg7/f0", "swap/in",
        ] {
            assert!(
                find(&stack, Path::new(hidden)).unwrap().is_none(),
                "{hidden}"
            );
        }
    }
}
