//! One layer unpacked into its own directory, the way overlayfs stacks it over the layers
//! below (see `rootfs` for the cache and the safety rules): entries are placed by resolving
//! their parents through the composed layers, lower directories are copied up (mode and time
//! kept) where the layer puts something in them, a `.wh.NAME` whiteout becomes a character
//! device 0/0 and `.wh..wh..opq` the `user.overlay.opaque` mark.

use std::collections::{BTreeMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, FileTimes, OpenOptions};
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use crate::digest::HashingReader;
use crate::error::{Error, IoContext, Result};
use crate::image::Layer;
use crate::image::fs::{MAX_LINK_TARGET, Whiteout, whiteout};
use crate::image::media::Compression;

use super::rootfs::{
    MOUNT_POINTS, clean, clear, ensure_dir, find, is_opaque, mtime_of, resolve_dir,
    set_mtime_nofollow, set_opaque,
};

/// How many missing directories one entry's parent may need (bounds the create loop).
const MAX_CREATED: usize = 4096;

fn bad_layer(l: &Layer, reference: &str, msg: impl std::fmt::Display) -> Error {
    Error::image(reference, format!("layer {}: {msg}", l.digest))
}

/// `.wh..` / `.wh...`: see [`Whiteout::Invalid`].
fn invalid_whiteout() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        "a whiteout of `.` or `..`, which names no file of a lower layer (taken literally it \
         would delete the directory holding it): the layer is corrupt or hostile",
    )
}

/// Unpack the layer `l` into `root` (an empty directory), over the directories `below` (the
/// layers under it, top first), checking its digest, size and diff_id as it streams. The device
/// nodes skipped come back, for a note to the user.
pub(super) fn unpack_layer(
    root: &Path,
    below: &[PathBuf],
    l: &Layer,
    reference: &str,
) -> Result<Vec<String>> {
    let mut w = Writer::new(root, below);
    w.apply_layer(l, reference)?;
    w.finish()
        .map_err(|e| bad_layer(l, reference, format!("finishing its directories: {e}")))?;
    Ok(w.skipped)
}

/// Make the image's top layer in `root`: the sandbox's mount points where the composed layers
/// `below` (top first) have no directory there, and the image's working directory when missing,
/// as container runtimes create it (the root is read-only once running). The root directory
/// takes the mode and time of the image's own.
pub(super) fn make_top(root: &Path, below: &[PathBuf], workdir: &str) -> Result<()> {
    let mut w = Writer::new(root, below);
    let at = |e: io::Error| -> Error {
        Err::<(), _>(e)
            .at("making the top layer in", root)
            .unwrap_err()
    };
    for m in MOUNT_POINTS {
        let is_dir = find(&w.stack, Path::new(m))
            .map_err(at)?
            .is_some_and(|(_, md)| md.is_dir());
        if !is_dir {
            ensure_dir(&root.join(m), 0o755).map_err(at)?;
        }
    }
    if let Some(wd) = clean(workdir.as_bytes()) {
        w.parent_dir(&wd)
            .map_err(|e| io::Error::new(e.kind(), format!("WorkingDir {workdir}: {e}")))
            .map_err(at)?;
    }
    if let Some((_, md)) = find(below, Path::new("")).map_err(at)? {
        w.dirs.insert(
            PathBuf::new(),
            (md.mode() & 0o7777, md.mtime().max(0) as u64),
        );
    }
    w.finish().map_err(at)
}

/// Writes one layer into `stack[0]`, seeing the layers below through the rest of `stack`.
struct Writer {
    root: PathBuf,
    /// This layer's directory, then the ones below, top first.
    stack: Vec<PathBuf>,
    /// Directories declared or copied up: their mode and mtime, applied at the end (until then
    /// each is kept writable by its owner so later entries can go in).
    dirs: BTreeMap<PathBuf, (u32, u64)>,
    /// Paths (resolved, relative to the root) the layer wrote, and their ancestors: a whiteout
    /// only hides what lower layers put there.
    written: HashSet<PathBuf>,
    ancestors: HashSet<PathBuf>,
    /// Paths this layer whited out: a directory it then writes there is opaque.
    whited: HashSet<PathBuf>,
    /// The last parent directory resolved (as written, as resolved), reused by the next
    /// regular file in the same directory (a layer lists a directory's files together); any
    /// other kind of entry forgets it, as it may change what a path resolves to.
    last_parent: Option<(PathBuf, PathBuf)>,
    /// Directories this layer holds as real directories, reached from the root through real
    /// directories only (no symbolic link on the way, so each resolves to itself): a parent
    /// found here needs no resolution through the layers. Only an entry that replaces or hides
    /// something can change that, and every such entry empties the set (see [`Self::forget`]).
    plain_dirs: HashSet<PathBuf>,
    /// The buffer file bodies are copied through (one write per file up to its size).
    buf: Vec<u8>,
    skipped: Vec<String>,
}

impl Writer {
    fn new(root: &Path, below: &[PathBuf]) -> Self {
        let mut stack = vec![root.to_owned()];
        stack.extend_from_slice(below);
        Writer {
            root: root.to_owned(),
            stack,
            dirs: BTreeMap::new(),
            written: HashSet::new(),
            ancestors: HashSet::new(),
            whited: HashSet::new(),
            last_parent: None,
            plain_dirs: HashSet::new(),
            buf: Vec::new(),
            skipped: Vec::new(),
        }
    }

    /// Stream one layer blob (gzip or plain tar) into the root, checking its digest and size,
    /// and the digest of the tar stream against the diff_id.
    fn apply_layer(&mut self, l: &Layer, reference: &str) -> Result<()> {
        let f = File::open(&l.path).map_err(|e| {
            bad_layer(
                l,
                reference,
                format!("cannot open {}: {e}", l.path.display()),
            )
        })?;
        // Decompressing and hashing run on a thread of their own, overlapped with creating
        // the files here: a first invoke's unpack costs as much CPU as file-system calls.
        let (tx, rx) = mpsc::sync_channel(8);
        let decoder = std::thread::spawn(move || decode(f, &tx));
        let mut stream = ReadAhead {
            rx,
            chunk: Vec::new(),
            at: 0,
        };
        let unreadable =
            |e: io::Error| bad_layer(l, reference, format!("is not a readable tar: {e}"));
        let applied = (|| -> Result<()> {
            for entry in tar::Archive::new(&mut stream)
                .entries()
                .map_err(unreadable)?
            {
                let entry = entry.map_err(unreadable)?;
                let shown = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
                self.apply_entry(entry)
                    .map_err(|e| bad_layer(l, reference, format!("entry `{shown}`: {e}")))?;
            }
            io::copy(&mut stream, &mut io::sink()).map_err(unreadable)?;
            Ok(())
        })();
        // Stops the decoder if this side stopped early.
        drop(stream);
        let decoded = decoder
            .join()
            .map_err(|_| Error::Internal("the thread decompressing a layer panicked".into()))?;
        // A decoding failure explains a tar error that follows from it: it comes first.
        let (diff_id, digest, size) = match decoded {
            Decoded::Done(d, digest, size) => (d, digest, size),
            Decoded::Stopped => {
                return applied.and(Err(Error::Internal(
                    "the layer's decoder stopped early".into(),
                )));
            }
            Decoded::Zstd => {
                return Err(bad_layer(
                    l,
                    reference,
                    "is zstd-compressed; lamina run reads gzip and uncompressed layers",
                ));
            }
            Decoded::Failed(e) => return Err(bad_layer(l, reference, e)),
        };
        applied?;
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

    /// Make the directory `rel` (a directory of the composed view, or to be created) exist in
    /// this layer: each ancestor missing here copied up from below (its mode and time kept), or
    /// created (mode 0755) where no layer has it.
    fn copy_up(&mut self, rel: &Path) -> io::Result<()> {
        let mut prefix = PathBuf::new();
        for c in rel.components() {
            prefix.push(c);
            let host = self.root.join(&prefix);
            match fs::symlink_metadata(&host) {
                Ok(m) if m.is_dir() => continue,
                Ok(_) => clear(&host)?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            match find(&self.stack[1..], &prefix)? {
                Some((_, m)) if m.is_dir() => {
                    fs::DirBuilder::new().mode(0o700).create(&host)?;
                    let mode = m.mode() & 0o7777;
                    fs::set_permissions(&host, fs::Permissions::from_mode(0o700 | mode))?;
                    self.dirs
                        .entry(prefix.clone())
                        .or_insert((mode, m.mtime().max(0) as u64));
                }
                _ => fs::DirBuilder::new().mode(0o755).create(&host)?,
            }
        }
        Ok(())
    }

    /// Resolve the directory `rel` through the composed layers, creating what is missing (mode
    /// 0755, as runtimes do for a layer's implied parents), and make it exist in this layer.
    fn parent_dir(&mut self, rel: &Path) -> io::Result<PathBuf> {
        for _ in 0..MAX_CREATED {
            match resolve_dir(&self.stack, rel)? {
                Ok(dir) => {
                    self.copy_up(&dir)?;
                    return Ok(dir);
                }
                Err(missing) => {
                    if let Some(p) = missing.parent() {
                        self.copy_up(p)?;
                    }
                    let host = self.root.join(&missing);
                    clear(&host)?;
                    fs::DirBuilder::new().mode(0o755).create(&host)?;
                    // Whited out by this layer, then written in: nothing below shows through.
                    if self.whited.contains(&missing) {
                        self.make_opaque(&missing)?;
                    }
                }
            }
        }
        Err(io::Error::other(format!(
            "/{}: more than {MAX_CREATED} directories to create",
            rel.display()
        )))
    }

    /// Make this layer's directory `rel` hide everything lower layers have in it: the opaque
    /// mark, or where the file system keeps no user extended attributes, one whiteout per name
    /// the layers below show there (a directory this layer then writes at one of those names
    /// is made opaque in turn).
    fn make_opaque(&mut self, rel: &Path) -> io::Result<()> {
        let host = self.root.join(rel);
        match set_opaque(&host) {
            // ENOTSUP: Linux gives the same number for EOPNOTSUPP.
            Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => {}
            r => return r,
        }
        let lower = &self.stack[1..];
        let mut names = std::collections::BTreeSet::new();
        for layer in lower {
            if let Ok(rd) = fs::read_dir(layer.join(rel)) {
                for e in rd {
                    names.insert(e?.file_name());
                }
            }
        }
        for name in names {
            let target = rel.join(&name);
            if fs::symlink_metadata(host.join(&name)).is_ok() || find(lower, &target)?.is_none() {
                continue;
            }
            nix::sys::stat::mknod(
                &host.join(&name),
                nix::sys::stat::SFlag::S_IFCHR,
                nix::sys::stat::Mode::empty(),
                0,
            )
            .map_err(io::Error::from)?;
            self.whited.insert(target);
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

    /// Remove what this layer has at `rel` and forget the declared modes below it.
    fn remove(&mut self, rel: &Path) -> io::Result<()> {
        let gone: Vec<PathBuf> = self
            .dirs
            .range(rel.to_owned()..)
            .take_while(|(k, _)| k.starts_with(rel))
            .map(|(k, _)| k.clone())
            .collect();
        for k in gone {
            self.dirs.remove(&k);
        }
        clear(&self.root.join(rel))
    }

    /// A whiteout entry in `parent_rel`: hide what lower layers put there.
    fn apply_whiteout(&mut self, parent_rel: &Path, w: Whiteout) -> io::Result<()> {
        if matches!(w, Whiteout::Invalid) {
            return Err(invalid_whiteout());
        }
        let Ok(parent) = resolve_dir(&self.stack, parent_rel)? else {
            return Ok(()); // nothing below a missing directory to hide
        };
        match w {
            Whiteout::Opaque => {
                self.copy_up(&parent)?;
                self.make_opaque(&parent)
            }
            Whiteout::Hides(hidden) => {
                let target = parent.join(OsStr::from_bytes(hidden));
                if self.written.contains(&target) {
                    return Ok(());
                }
                self.remove(&target)?;
                if find(&self.stack[1..], &target)?.is_some() {
                    self.copy_up(&parent)?;
                    nix::sys::stat::mknod(
                        &self.root.join(&target),
                        nix::sys::stat::SFlag::S_IFCHR,
                        nix::sys::stat::Mode::empty(),
                        0,
                    )
                    .map_err(io::Error::from)?;
                    self.whited.insert(target);
                }
                Ok(())
            }
            Whiteout::Ignored | Whiteout::Invalid => Ok(()),
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
            self.forget();
            return self.apply_whiteout(parent_rel, w);
        }
        if matches!(kind, T::Char | T::Block) {
            let shown = parent_rel.join(&name);
            self.skipped.push(format!("/{}", shown.display()));
            return Ok(());
        }
        if !matches!(
            kind,
            T::Directory
                | T::Regular
                | T::Continuous
                | T::GNUSparse
                | T::Symlink
                | T::Link
                | T::Fifo
        ) {
            return Ok(());
        }
        let regular = matches!(kind, T::Regular | T::Continuous | T::GNUSparse);
        if !regular && kind != T::Directory {
            // A link or a fifo may stand where a directory was.
            self.forget();
        }
        let parent = match self.last_parent.take() {
            Some((asked, resolved)) if regular && asked == parent_rel => resolved,
            _ if self.plain_dirs.contains(parent_rel) => parent_rel.to_owned(),
            _ => {
                let resolved = self.parent_dir(parent_rel)?;
                if resolved == parent_rel {
                    self.plain_dirs.insert(resolved.clone());
                }
                resolved
            }
        };
        if regular {
            self.last_parent = Some((parent_rel.to_owned(), parent.clone()));
        }
        let dest = parent.join(&name);
        self.place(kind, &mut entry, &dest, mode, mtime)?;
        if kind == T::Directory && parent == parent_rel && self.plain_dirs.contains(&parent) {
            self.plain_dirs.insert(dest.clone());
        }
        self.note_written(&dest);
        Ok(())
    }

    /// Forget every parent directory resolved so far: the entry at hand may replace or hide
    /// one of them (or a directory above one).
    fn forget(&mut self) {
        self.last_parent = None;
        self.plain_dirs.clear();
    }

    /// Put the entry `entry` (of `kind`, not a whiteout, parent resolved) at `dest`.
    fn place<R: Read>(
        &mut self,
        kind: tar::EntryType,
        entry: &mut tar::Entry<'_, R>,
        dest: &Path,
        mode: u32,
        mtime: u64,
    ) -> io::Result<()> {
        use tar::EntryType as T;
        let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
        let host = self.root.join(dest);
        match kind {
            T::Directory => {
                // Kept writable by its owner until `finish` gives it its mode.
                let created = fs::DirBuilder::new().mode(0o700 | mode).create(&host);
                if created.is_err() || umask() & 0o700 != 0 {
                    ensure_dir(&host, 0o700)?;
                    fs::set_permissions(&host, fs::Permissions::from_mode(0o700 | mode))?;
                }
                if self.whited.contains(dest) && !is_opaque(&host) {
                    self.make_opaque(dest)?;
                }
                self.dirs.insert(dest.to_owned(), (mode, mtime));
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
                self.remove(dest)?;
                symlink(OsStr::from_bytes(&target), &host)?;
                // Some file systems cannot time a link: its time matters to nothing that runs.
                let _ = set_mtime_nofollow(&host, mtime);
            }
            T::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| invalid("a hard link without a target"))?
                    .into_owned();
                self.hard_link(&target, dest)?;
            }
            T::Fifo => {
                self.remove(dest)?;
                nix::unistd::mkfifo(
                    &host,
                    nix::sys::stat::Mode::from_bits_truncate(mode & 0o777),
                )
                .map_err(io::Error::from)?;
            }
            _ => {
                // Created with its mode (setuid and setgid dropped): a new file opened for
                // writing is writable whatever its mode says. Something already there (this
                // layer wrote the path before, or a whiteout or directory of it stands there)
                // is replaced: `create_new` never follows or reuses it.
                let mode = mode & !0o6000;
                let mut f = match create_file(&host, mode) {
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        self.forget();
                        self.remove(dest)?;
                        create_file(&host, mode)?
                    }
                    r => r?,
                };
                copy_body(entry, &mut f, &mut self.buf)?;
                if mode & (0o1000 | umask()) != 0 {
                    f.set_permissions(fs::Permissions::from_mode(mode))?;
                }
                f.set_times(FileTimes::new().set_modified(mtime_of(mtime)))?;
            }
        }
        Ok(())
    }

    /// A hard link at `dest` (resolved, relative to the root) to the archive path `target`,
    /// which must already be in the composed root (and not be a directory): in this layer or
    /// one below (the same file, linked again: layer files are never modified).
    fn hard_link(&mut self, target: &[u8], dest: &Path) -> io::Result<()> {
        let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
        let host = self.root.join(dest);
        let target_rel = clean(target)
            .ok_or_else(|| invalid("a hard link whose target climbs above the root"))?;
        let tname: OsString = target_rel
            .file_name()
            .ok_or_else(|| invalid("a hard link to the root"))?
            .to_owned();
        let missing = || {
            invalid(&format!(
                "a hard link to /{}, which does not exist",
                target_rel.display()
            ))
        };
        let tparent = resolve_dir(&self.stack, target_rel.parent().unwrap_or(Path::new("")))?
            .map_err(|_| missing())?;
        let (thost, m) = find(&self.stack, &tparent.join(&tname))?.ok_or_else(missing)?;
        if m.is_dir() {
            return Err(invalid("a hard link to a directory"));
        }
        if thost != host {
            self.remove(dest)?;
            fs::hard_link(&thost, &host)?;
        }
        self.note_written(dest);
        Ok(())
    }

    /// Give directories their modes and times, deepest first (so that setting them does not
    /// disturb what follows).
    fn finish(&mut self) -> io::Result<()> {
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

/// Create the regular file `host` (never following a link there), open for writing, with the
/// permission bits of `mode` as far as the umask lets them through.
fn create_file(host: &Path, mode: u32) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode & 0o777)
        .custom_flags(libc::O_NOFOLLOW)
        .open(host)
}

/// The process's umask, read once (`/proc/self/status`; every bit set when unreadable, so
/// that modes are always set explicitly). Reading it with `umask(2)` would change it for a
/// moment under other threads.
fn umask() -> u32 {
    static UMASK: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *UMASK.get_or_init(|| {
        fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Umask:"))
                    .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
            })
            .unwrap_or(0o777)
    })
}

/// Copy a file's body from the tar stream through `buf` (grown to 256 KiB on first use), in
/// as few writes as its size allows.
fn copy_body(from: &mut impl Read, to: &mut File, buf: &mut Vec<u8>) -> io::Result<()> {
    use std::io::Write;
    if buf.is_empty() {
        buf.resize(256 << 10, 0);
    }
    loop {
        // Fill the buffer (the stream comes in chunks a file may straddle), then write it.
        let mut filled = 0;
        while filled < buf.len() {
            match from.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        to.write_all(&buf[..filled])?;
        if filled < buf.len() {
            return Ok(());
        }
    }
}

/// What the decoding thread of [`Writer::apply_layer`] ends with.
enum Decoded {
    /// The diff_id, the blob's digest and its size: the whole blob was read.
    Done(crate::digest::Digest, crate::digest::Digest, u64),
    /// The reader went away first (an error on its side).
    Stopped,
    /// A zstd layer, which `lamina run` does not read.
    Zstd,
    /// Reading or decompressing failed.
    Failed(io::Error),
}

/// Read the layer file `f`, decompress it and hash both forms, sending the tar stream in
/// chunks to `tx` (an error is sent too, so that the tar reader stops on it).
fn decode(f: File, tx: &mpsc::SyncSender<io::Result<Vec<u8>>>) -> Decoded {
    const CHUNK: usize = 256 << 10;
    let mut blob = HashingReader::new(f);
    let diff_id = {
        let mut buf = BufReader::with_capacity(1 << 20, &mut blob);
        let compression = match buf.fill_buf() {
            Ok(head) => Compression::sniff(head),
            Err(e) => return Decoded::Failed(e),
        };
        let decoded: Box<dyn Read + '_> = match compression {
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(buf)),
            Compression::Zstd => return Decoded::Zstd,
            Compression::None => Box::new(buf),
        };
        let mut tar_stream = HashingReader::new(decoded);
        loop {
            let mut chunk = vec![0; CHUNK];
            match tar_stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => {
                    chunk.truncate(n);
                    if tx.send(Ok(chunk)).is_err() {
                        return Decoded::Stopped;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = tx.send(Err(io::Error::new(e.kind(), e.to_string())));
                    return Decoded::Failed(e);
                }
            }
        }
        tar_stream.finish().1
    };
    if let Err(e) = io::copy(&mut blob, &mut io::sink()) {
        return Decoded::Failed(e);
    }
    let (_, digest, size) = blob.finish();
    Decoded::Done(diff_id, digest, size)
}

/// The tar stream as the decoding thread sends it; its end (the sender gone) is the end.
struct ReadAhead {
    rx: mpsc::Receiver<io::Result<Vec<u8>>>,
    chunk: Vec<u8>,
    at: usize,
}

impl Read for ReadAhead {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.at == self.chunk.len() {
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    self.chunk = chunk;
                    self.at = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(mpsc::RecvError) => return Ok(0),
            }
        }
        let n = (self.chunk.len() - self.at).min(out.len());
        out[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}
