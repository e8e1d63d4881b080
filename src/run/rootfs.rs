//! An image's root file system on disk, for `lamina run`: its layers applied in order with the
//! OCI whiteouts (`.wh.NAME`, `.wh..wh..opq`), into a cache directory keyed by the manifest
//! digest and reused once complete.
//!
//! Extraction is meant to be safe for an unprivileged user and a hostile layer: every path is
//! cleaned (an entry or a hard-link target that climbs above the root is refused), parent
//! directories are resolved *inside* the root (a symbolic link, absolute or relative, is followed
//! as the sandbox will see it, never out to the host), and the last component is never followed
//! (an existing link there is replaced, as container runtimes do). Modes, symbolic links, hard
//! links, fifos and modification times are kept; ownership is not (the sandbox maps the user
//! running lamina to root, so every file belongs to root inside); setuid and setgid bits are
//! dropped; device nodes are skipped (the sandbox provides `/dev`).

use std::collections::{BTreeMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, FileTimes, OpenOptions};
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt, symlink};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::digest::{Digest, HashingReader};
use crate::error::{Error, IoContext, Result};
use crate::image::Layer;
use crate::image::fs::{
    Entry, Follow, MAX_LINK_TARGET, MAX_LINKS, ResolveError, Tree, Whiteout, resolve, whiteout,
};
use crate::image::media::Compression;

/// The file written last into a cache entry: without it the entry is an interrupted unpack.
pub const MARKER: &str = "complete";

/// Directories the sandbox mounts over (`/proc`, `/dev`, `/tmp`): created when an image lacks
/// them, so that nothing has to be created in the read-only root at run time.
pub const MOUNT_POINTS: [&str; 3] = ["proc", "dev", "tmp"];

/// A root file system ready to run.
#[derive(Debug, Clone)]
pub struct Unpacked {
    /// The root directory.
    pub rootfs: PathBuf,
    /// It was in the cache already.
    pub reused: bool,
    /// What could not be reproduced (device nodes), for a note to the user.
    pub skipped: Vec<String>,
}

/// `<cache>/rootfs/<manifest hex>`: the cache entry of one image manifest.
pub fn cache_entry(cache_dir: &Path, manifest: &Digest) -> PathBuf {
    cache_dir.join("rootfs").join(manifest.hex())
}

/// The unpacked root of a complete cache entry, if there is one.
pub fn cached(cache_dir: &Path, manifest: &Digest) -> Option<PathBuf> {
    let entry = cache_entry(cache_dir, manifest);
    let rootfs = entry.join("rootfs");
    (entry.join(MARKER).is_file() && rootfs.is_dir()).then_some(rootfs)
}

/// The root file system of the image whose manifest is `manifest` and whose layers are
/// `layers`: from the cache when complete, else unpacked (each layer verified against its digest
/// and diff_id as it streams) into a temporary directory beside the entry, the marker written
/// last, then moved into place in one rename. The image's `workdir` is created when missing, as
/// container runtimes create it (the root is read-only once running).
pub fn unpack_cached(
    cache_dir: &Path,
    manifest: &Digest,
    layers: &[Layer],
    workdir: &str,
    reference: &str,
) -> Result<Unpacked> {
    if let Some(rootfs) = cached(cache_dir, manifest) {
        return Ok(Unpacked {
            rootfs,
            reused: true,
            skipped: Vec::new(),
        });
    }
    let entry = cache_entry(cache_dir, manifest);
    let parent = entry.parent().expect("a cache entry has a parent");
    fs::create_dir_all(parent).at("creating", parent)?;
    // Owned while it is unpacked: removed on error, on SIGINT/SIGTERM, or by a later lamina
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
    let mut u = Unpacker::new(&root);
    for l in layers {
        u.apply_layer(l, reference)?;
    }
    u.finish(workdir)
        .at("finishing the root file system in", &root)?;
    let marker = guard.0.join(MARKER);
    fs::write(&marker, format!("{manifest}\n")).at("writing", &marker)?;
    if entry.exists() {
        // An interrupted unpack left it (no marker), or another lamina just finished it.
        if let Some(rootfs) = cached(cache_dir, manifest) {
            return Ok(Unpacked {
                rootfs,
                reused: true,
                skipped: u.skipped,
            });
        }
        remove_tree(&entry).at("removing the incomplete", &entry)?;
    }
    match fs::rename(&guard.0, &entry) {
        Ok(()) => {
            std::mem::forget(guard);
        }
        Err(e) => {
            if cached(cache_dir, manifest).is_none() {
                return Err(e).at("moving the unpacked image to", &entry);
            }
        }
    }
    Ok(Unpacked {
        rootfs: entry.join("rootfs"),
        reused: false,
        skipped: u.skipped,
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

/// Remove `path` and everything below it, opening up directory modes first (an image may hold
/// directories its owner cannot write). Symbolic links are removed, never followed.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    fn open_up(p: &Path) -> io::Result<()> {
        let m = fs::symlink_metadata(p)?;
        if m.is_dir() {
            fs::set_permissions(p, fs::Permissions::from_mode(0o700))?;
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

fn not_a_dir(p: &[u8]) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotADirectory,
        format!("/{} is not a directory", String::from_utf8_lossy(p)),
    )
}

/// `.wh..` / `.wh...`: see [`Whiteout::Invalid`].
fn invalid_whiteout() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        "a whiteout of `.` or `..`, which names no file of a lower layer (taken literally it \
         would delete the directory holding it): the layer is corrupt or hostile",
    )
}

fn too_many_links(p: &Path) -> io::Error {
    io::Error::other(format!(
        "/{}: more than {MAX_LINKS} symbolic links",
        p.display()
    ))
}

/// The unpacked root on disk as a [`Tree`]. With `create`, a missing directory is made
/// (mode 0755, as runtimes do for a layer's implied parents) when resolution reaches it.
struct OnDisk<'a> {
    root: &'a Path,
    create: bool,
}

impl Tree for OnDisk<'_> {
    type Error = io::Error;
    fn entry(&mut self, path: &[u8]) -> io::Result<Entry> {
        let host = self.root.join(OsStr::from_bytes(path));
        match fs::symlink_metadata(&host) {
            Ok(m) if m.is_dir() => Ok(Entry::Dir),
            Ok(m) if m.file_type().is_symlink() => Ok(Entry::Symlink(
                fs::read_link(&host)?.into_os_string().into_vec(),
            )),
            Ok(_) => Ok(Entry::Other),
            Err(e) if e.kind() == io::ErrorKind::NotFound && self.create => {
                fs::DirBuilder::new().mode(0o755).create(&host)?;
                Ok(Entry::Dir)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Entry::Missing),
            Err(e) => Err(e),
        }
    }
}

/// Resolve the directory `dir` (relative to `root`) as the sandbox will see it: symbolic links
/// followed inside `root`, `..` never above it. Missing directories are created (mode 0755, as
/// runtimes do for a layer's implied parents) when `create`, else give `None`. The result is
/// relative to `root` and names a real directory reached without leaving it.
pub fn resolve_dir(root: &Path, dir: &Path, create: bool) -> io::Result<Option<PathBuf>> {
    let follow = Follow {
        last: true,
        lenient: false,
        confined: false,
    };
    let tree = &mut OnDisk { root, create };
    match resolve(tree, dir.as_os_str().as_bytes(), follow) {
        Ok(r) if r.entry == Entry::Dir => Ok(Some(PathBuf::from(OsString::from_vec(r.path)))),
        Ok(r) => Err(not_a_dir(&r.path)),
        Err(ResolveError::Missing(_)) => Ok(None),
        Err(ResolveError::NotADirectory(p)) => Err(not_a_dir(&p)),
        Err(ResolveError::TooManyLinks) => Err(too_many_links(dir)),
        // Not confined: `..` stays at the root.
        Err(ResolveError::Escapes) => Ok(None),
        Err(ResolveError::Tree(e)) => Err(e),
    }
}

/// Find `path` (absolute in the image, or relative to its root) inside `root`, following every
/// symbolic link inside it: the resolved path relative to `root`, if it exists.
pub fn lookup(root: &Path, path: &Path) -> io::Result<Option<PathBuf>> {
    let follow = Follow {
        last: true,
        lenient: false,
        confined: false,
    };
    let tree = &mut OnDisk {
        root,
        create: false,
    };
    match resolve(tree, path.as_os_str().as_bytes(), follow) {
        Ok(r) => Ok(Some(PathBuf::from(OsString::from_vec(r.path)))),
        Err(ResolveError::Missing(_) | ResolveError::NotADirectory(_)) => Ok(None),
        Err(ResolveError::TooManyLinks) => Err(too_many_links(path)),
        // Not confined: `..` stays at the root.
        Err(ResolveError::Escapes) => Ok(None),
        Err(ResolveError::Tree(e)) => Err(e),
    }
}

/// Remove whatever is at `host` (a directory with its contents; a link itself).
fn clear(host: &Path) -> io::Result<()> {
    match fs::symlink_metadata(host) {
        Ok(m) if m.is_dir() => remove_tree(host),
        Ok(_) => fs::remove_file(host),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn mtime_of(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

/// Set a path's modification (and access) time without following a symbolic link.
fn set_mtime_nofollow(host: &Path, secs: u64) -> io::Result<()> {
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

/// Applies layers, in order, to one directory.
struct Unpacker<'a> {
    root: &'a Path,
    /// Directories an entry declared: their mode and mtime, applied at the end (until then each
    /// is kept writable by its owner so later entries can go in).
    dirs: BTreeMap<PathBuf, (u32, u64)>,
    /// Paths (resolved, relative to the root) the current layer wrote, and their ancestors:
    /// a whiteout only hides what lower layers put there.
    written: HashSet<PathBuf>,
    ancestors: HashSet<PathBuf>,
    skipped: Vec<String>,
}

fn bad_layer(l: &Layer, reference: &str, msg: impl std::fmt::Display) -> Error {
    Error::image(reference, format!("layer {}: {msg}", l.digest))
}

impl<'a> Unpacker<'a> {
    fn new(root: &'a Path) -> Self {
        Unpacker {
            root,
            dirs: BTreeMap::new(),
            written: HashSet::new(),
            ancestors: HashSet::new(),
            skipped: Vec::new(),
        }
    }

    /// Stream one layer blob (gzip or plain tar) into the root, checking its digest and size,
    /// and the digest of the tar stream against the diff_id.
    fn apply_layer(&mut self, l: &Layer, reference: &str) -> Result<()> {
        self.written.clear();
        self.ancestors.clear();
        let f = File::open(&l.path).map_err(|e| {
            bad_layer(
                l,
                reference,
                format!("cannot open {}: {e}", l.path.display()),
            )
        })?;
        let mut blob = HashingReader::new(f);
        let diff_id = {
            let mut buf = BufReader::with_capacity(1 << 20, &mut blob);
            let compression =
                Compression::sniff(buf.fill_buf().map_err(|e| bad_layer(l, reference, e))?);
            let decoded: Box<dyn Read + '_> = match compression {
                Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(buf)),
                Compression::Zstd => {
                    return Err(bad_layer(
                        l,
                        reference,
                        "is zstd-compressed; lamina run reads gzip and uncompressed layers",
                    ));
                }
                Compression::None => Box::new(buf),
            };
            let mut tar_stream = HashingReader::new(decoded);
            let unreadable =
                |e: io::Error| bad_layer(l, reference, format!("is not a readable tar: {e}"));
            for entry in tar::Archive::new(&mut tar_stream)
                .entries()
                .map_err(unreadable)?
            {
                let entry = entry.map_err(unreadable)?;
                let shown = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
                self.apply_entry(entry)
                    .map_err(|e| bad_layer(l, reference, format!("entry `{shown}`: {e}")))?;
            }
            io::copy(&mut tar_stream, &mut io::sink()).map_err(unreadable)?;
            tar_stream.finish().1
        };
        io::copy(&mut blob, &mut io::sink()).map_err(|e| bad_layer(l, reference, e))?;
        let (_, digest, size) = blob.finish();
        if digest != l.digest || size != l.size {
            return Err(bad_layer(
                l,
                reference,
                format!(
                    "the blob does not match its descriptor ({digest}, {size} bytes; expected {} bytes): the image is corrupt",
                    l.size
                ),
            ));
        }
        if diff_id != l.diff_id {
            return Err(bad_layer(
                l,
                reference,
                format!(
                    "its tar stream is {diff_id}, but the config's diff_id is {}: the image is corrupt",
                    l.diff_id
                ),
            ));
        }
        Ok(())
    }

    fn note_written(&mut self, rel: &Path) {
        self.written.insert(rel.to_owned());
        let mut p = rel.parent();
        while let Some(a) = p {
            if !self.ancestors.insert(a.to_owned()) {
                break;
            }
            p = a.parent();
        }
    }

    /// Forget the declared modes of `rel` and everything below it (it was removed).
    fn forget(&mut self, rel: &Path) {
        let gone: Vec<PathBuf> = self
            .dirs
            .range(rel.to_owned()..)
            .take_while(|(k, _)| k.starts_with(rel))
            .map(|(k, _)| k.clone())
            .collect();
        for k in gone {
            self.dirs.remove(&k);
        }
    }

    fn remove(&mut self, rel: &Path) -> io::Result<()> {
        self.forget(rel);
        clear(&self.root.join(rel))
    }

    /// An opaque whiteout on `dir`: remove everything below it that lower layers put there.
    fn prune(&mut self, dir: &Path) -> io::Result<()> {
        let host = self.root.join(dir);
        let mut names: Vec<OsString> = Vec::new();
        for e in fs::read_dir(&host)? {
            names.push(e?.file_name());
        }
        for n in names {
            let child = dir.join(&n);
            let is_dir = fs::symlink_metadata(self.root.join(&child))?.is_dir();
            if self.written.contains(&child) || self.ancestors.contains(&child) {
                if is_dir {
                    self.prune(&child)?;
                }
            } else {
                self.remove(&child)?;
            }
        }
        Ok(())
    }

    /// A whiteout entry in `parent_rel`: hide what lower layers put there.
    fn apply_whiteout(&mut self, parent_rel: &Path, w: Whiteout) -> io::Result<()> {
        let Some(parent) = resolve_dir(self.root, parent_rel, false)? else {
            return Ok(()); // nothing below a missing directory to hide
        };
        match w {
            Whiteout::Opaque => self.prune(&parent),
            Whiteout::Hides(hidden) => {
                let target = parent.join(OsStr::from_bytes(hidden));
                if !self.written.contains(&target) {
                    self.remove(&target)?;
                }
                Ok(())
            }
            Whiteout::Ignored => Ok(()),
            Whiteout::Invalid => Err(invalid_whiteout()),
        }
    }

    fn apply_entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> io::Result<()> {
        use tar::EntryType as T;
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink
        ) {
            return Ok(());
        }
        let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
        let rel = clean(&entry.path_bytes()).ok_or_else(|| invalid("climbs above the root"))?;
        let mode = entry.header().mode().unwrap_or(0o644) & 0o7777;
        let mtime = entry.header().mtime().unwrap_or(0);
        let Some(name) = rel.file_name().map(OsStr::to_owned) else {
            // The root itself.
            if kind == T::Directory {
                self.dirs.insert(PathBuf::new(), (mode, mtime));
            }
            return Ok(());
        };
        let parent_rel = rel.parent().unwrap_or(Path::new(""));
        if let Some(w) = whiteout(name.as_bytes()) {
            return self.apply_whiteout(parent_rel, w);
        }
        // Missing directories are created, so `None` cannot come back; refuse it all the same.
        let parent = resolve_dir(self.root, parent_rel, true)?
            .ok_or_else(|| invalid("a parent directory that cannot be made"))?;
        let dest = parent.join(&name);
        let host = self.root.join(&dest);
        match kind {
            T::Directory => {
                ensure_dir(&host, 0o700)?;
                fs::set_permissions(&host, fs::Permissions::from_mode(0o700 | mode))?;
                self.dirs.insert(dest.clone(), (mode, mtime));
            }
            T::Regular | T::Continuous | T::GNUSparse => {
                self.remove(&dest)?;
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&host)?;
                io::copy(&mut entry, &mut f)?;
                f.set_permissions(fs::Permissions::from_mode(mode & !0o6000))?;
                f.set_times(FileTimes::new().set_modified(mtime_of(mtime)))?;
            }
            T::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| invalid("a symbolic link without a target"))?
                    .into_owned();
                if target.len() > MAX_LINK_TARGET {
                    return Err(invalid(&format!(
                        "a symbolic link target of {} bytes, longer than the {MAX_LINK_TARGET} Linux stores",
                        target.len()
                    )));
                }
                self.remove(&dest)?;
                symlink(OsStr::from_bytes(&target), &host)?;
                // Some file systems cannot time a link: its time matters to nothing that runs.
                let _ = set_mtime_nofollow(&host, mtime);
            }
            T::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| invalid("a hard link without a target"))?
                    .into_owned();
                self.hard_link(&target, &dest)?;
            }
            T::Fifo => {
                self.remove(&dest)?;
                nix::unistd::mkfifo(
                    &host,
                    nix::sys::stat::Mode::from_bits_truncate(mode & 0o777),
                )
                .map_err(io::Error::from)?;
            }
            T::Char | T::Block => {
                self.skipped.push(format!("/{}", dest.display()));
                return Ok(());
            }
            _ => return Ok(()),
        }
        self.note_written(&dest);
        Ok(())
    }

    /// A hard link at `dest` (resolved, relative to the root) to the archive path `target`,
    /// which must already be in the root (and not be a directory).
    fn hard_link(&mut self, target: &[u8], dest: &Path) -> io::Result<()> {
        let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
        let host = self.root.join(dest);
        let target_rel = clean(target)
            .ok_or_else(|| invalid("a hard link whose target climbs above the root"))?;
        let tname = target_rel
            .file_name()
            .ok_or_else(|| invalid("a hard link to the root"))?;
        let tparent = resolve_dir(
            self.root,
            target_rel.parent().unwrap_or(Path::new("")),
            false,
        )?
        .ok_or_else(|| {
            invalid(&format!(
                "a hard link to /{}, which does not exist",
                target_rel.display()
            ))
        })?;
        let thost = self.root.join(tparent.join(tname));
        let m = fs::symlink_metadata(&thost).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("hard link target /{}: {e}", target_rel.display()),
            )
        })?;
        if m.is_dir() {
            return Err(invalid("a hard link to a directory"));
        }
        if thost != host {
            self.remove(dest)?;
            fs::hard_link(&thost, &host)?;
        }
        Ok(())
    }

    /// Create the sandbox's mount points where the image has none, and its working directory,
    /// then give directories their modes and times, deepest first (so that setting them does not
    /// disturb what follows).
    fn finish(&mut self, workdir: &str) -> io::Result<()> {
        for m in MOUNT_POINTS {
            let host = self.root.join(m);
            ensure_dir(&host, 0o755)?;
        }
        if let Some(w) = clean(workdir.as_bytes()) {
            resolve_dir(self.root, &w, true)
                .map_err(|e| io::Error::new(e.kind(), format!("WorkingDir {workdir}: {e}")))?;
        }
        let mut dirs: Vec<(&PathBuf, &(u32, u64))> = self.dirs.iter().collect();
        dirs.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
        for (rel, &(mode, mtime)) in dirs {
            let host = self.root.join(rel);
            if !fs::symlink_metadata(&host).is_ok_and(|m| m.is_dir()) {
                continue;
            }
            fs::set_permissions(&host, fs::Permissions::from_mode(mode))?;
            set_mtime_nofollow(&host, mtime)?;
        }
        Ok(())
    }
}

/// Make `host` a directory (created with `mode`), replacing whatever non-directory is there.
fn ensure_dir(host: &Path, mode: u32) -> io::Result<()> {
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

    fn layer(dir: &Path, i: usize, tar_bytes: &[u8], gzip: bool) -> Layer {
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
        let r = unpack_cached(
            &cache,
            &Digest::of(b"manifest"),
            &layers,
            "/work/dir",
            "oci:test",
        );
        (t, r)
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
        // Nothing left beside the entry.
        let siblings: Vec<_> = fs::read_dir(entry.parent().unwrap()).unwrap().collect();
        assert_eq!(siblings.len(), 1);
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
        assert_eq!((a.ino(), a.nlink()), (b.ino(), 2));
        assert_eq!(
            lookup(&root, Path::new("/lib/libc.so.6")).unwrap(),
            Some(PathBuf::from("usr/lib/libc.so.6"))
        );
        assert_eq!(lookup(&root, Path::new("/lib/nothing")).unwrap(), None);
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
            // Nothing above the root was touched: the cache holds no entry, and no debris.
            let rootfs = t.path().join("cache/rootfs");
            assert_eq!(fs::read_dir(&rootfs).unwrap().count(), 0, "{name}");
        }
        let long = "d/".repeat(2100);
        let (_t, r) = unpack(&[tar_of(&[E::Link("far", &long)])]);
        let e = r.unwrap_err().to_string();
        assert!(e.contains("`far`") && e.contains("4200 bytes"), "{e}");
    }

    #[test]
    fn a_corrupt_layer_is_refused_and_leaves_nothing() {
        let t = tempfile::tempdir().unwrap();
        let tar_bytes = tar_of(&[E::File("a", "a", 0o644)]);
        let mut l = layer(t.path(), 0, &tar_bytes, true);
        l.diff_id = Digest::of(b"something else");
        let cache = t.path().join("cache");
        let e = unpack_cached(&cache, &Digest::of(b"m"), &[l], "/", "oci:x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("diff_id"), "{e}");
        assert_eq!(fs::read_dir(cache.join("rootfs")).unwrap().count(), 0);
    }

    #[test]
    fn a_complete_entry_is_reused_and_an_incomplete_one_redone() {
        let t = tempfile::tempdir().unwrap();
        let tar_bytes = tar_of(&[E::Dir("ro/", 0o500), E::File("ro/a", "a", 0o444)]);
        let l = layer(t.path(), 0, &tar_bytes, false);
        let cache = t.path().join("cache");
        let m = Digest::of(b"m");
        let first = unpack_cached(&cache, &m, std::slice::from_ref(&l), "/", "oci:x").unwrap();
        assert!(!first.reused);
        let again = unpack_cached(&cache, &m, std::slice::from_ref(&l), "/", "oci:x").unwrap();
        assert!(again.reused);
        assert_eq!(again.rootfs, first.rootfs);
        // Interrupted: no marker. The entry is unpacked again (read-only directories included).
        fs::remove_file(cache_entry(&cache, &m).join(MARKER)).unwrap();
        let redone = unpack_cached(&cache, &m, std::slice::from_ref(&l), "/", "oci:x").unwrap();
        assert!(!redone.reused);
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
        let u = unpack_cached(&cache, &Digest::of(b"m"), &[], "/", "oci:test").unwrap();
        assert!(!stale.exists(), "the dead owner's staging is removed");
        assert!(u.rootfs.is_dir());
        // A layer that fails to verify leaves no staging behind.
        let bad = Layer {
            size: 1,
            ..layer(t.path(), 0, b"not a tar", true)
        };
        assert!(unpack_cached(&cache, &Digest::of(b"n"), &[bad], "/", "oci:test").is_err());
        let left: Vec<_> = fs::read_dir(&parent)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .filter(|n| n.to_string_lossy().starts_with(".unpack-"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
