//! Turning a layer's input — a directory, a single file or a .zip — into sorted tar entries.
//! Nothing here reads file contents: that happens once, while the tar is written.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use super::entry::{Data, Entry, Kind, ancestors, file_mode, join, sort_and_check};
use crate::error::{Error, IoContext, Result};
use crate::image::fs::{
    Entry as FsEntry, Follow, MAX_LINK_TARGET, ResolveError, Tree as FsTree, resolve,
};
use crate::layer::LayerSpec;

/// Where file bytes are read from while the tar is written.
pub enum Input {
    /// Each file entry names its file on disk ([`Data::Path`]).
    Files,
    /// File entries name entries of these zips by index ([`Data::Zip`]).
    Zip(Box<Zips>),
}

/// The most wheels a directory of wheels may hold.
const MAX_WHEELS: usize = 1000;

/// One zip, or several read as one (a directory of wheels): entries are numbered across them,
/// in order, so a [`Data::Zip`] index names one entry of one archive.
pub struct Zips {
    /// Each archive, its path, and the index its first entry has.
    parts: Vec<(PathBuf, usize, zip::ZipArchive<File>)>,
}

impl Zips {
    fn one(path: PathBuf, z: zip::ZipArchive<File>) -> Zips {
        Zips {
            parts: vec![(path, 0, z)],
        }
    }

    /// The entry numbered `i` (decompressed as it is read).
    pub fn by_index(&mut self, i: usize) -> zip::result::ZipResult<zip::read::ZipFile<'_, File>> {
        let part = self
            .parts
            .iter_mut()
            .rev()
            .find(|(_, first, _)| *first <= i)
            .ok_or(zip::result::ZipError::FileNotFound)?;
        part.2.by_index(i - part.1)
    }

    /// The archives, in order (their bytes are part of a layer's keys).
    pub fn paths(&self) -> Vec<&Path> {
        self.parts.iter().map(|(p, _, _)| p.as_path()).collect()
    }

    /// The archive the entry numbered `i` is in.
    fn path_of(&self, i: usize) -> &Path {
        self.parts
            .iter()
            .rev()
            .find(|(_, first, _)| *first <= i)
            .map_or(Path::new("?"), |(p, _, _)| p.as_path())
    }
}

/// The entries of one layer and what their bytes come from.
pub struct Collected {
    /// Sorted by path, parents first, no duplicates.
    pub entries: Vec<Entry>,
    /// What the file entries' bytes are read from.
    pub input: Input,
    /// The stat stamps the walk read for the files it found (by host path), so that the layer
    /// cache's key asks the file system about each file once, not twice.
    pub stamps: HashMap<PathBuf, super::cache::Stamp>,
}

/// Exclusion globs, matched against the path relative to the source root (dockerignore style:
/// `*` stays within one path segment, `**` crosses them; a matched directory drops its subtree).
fn excludes(l: &LayerSpec) -> Result<GlobSet> {
    let mut b = GlobSetBuilder::new();
    for g in &l.exclude {
        let g = g.trim_start_matches('/');
        let glob = GlobBuilder::new(g)
            .literal_separator(true)
            .build()
            .map_err(|e| Error::source(&l.source, format!("exclude glob `{g}`: {e}")))?;
        b.add(glob);
    }
    b.build()
        .map_err(|e| Error::source(&l.source, format!("exclude globs: {e}")))
}

/// Collect the entries of a `[[layer]]`.
pub fn collect(l: &LayerSpec) -> Result<Collected> {
    collect_skipping(l, &[])
}

/// Collect, leaving out the files and directories `skip` names by `(device, inode)`: lamina's
/// own output and staging directory when they sit inside a source directory.
pub fn collect_skipping(l: &LayerSpec, skip: &[(u64, u64)]) -> Result<Collected> {
    let dest =
        crate::layer::image_path(&l.dest, "dest").map_err(|m| Error::source(&l.source, m))?;
    let meta = source_metadata(&l.source)?;
    let mut entries = Vec::new();
    let mut inodes = HashMap::new();
    let mut stamps = HashMap::new();
    let is_zip = meta.is_file()
        && l.source.extension().is_some_and(|e| {
            e.eq_ignore_ascii_case("zip") || (l.wheels && e.eq_ignore_ascii_case("whl"))
        });
    let input = if meta.is_dir() || is_zip {
        let ex = excludes(l)?;
        if !dest.is_empty() {
            let dir_mode = l.dir_mode.map(|m| m.0).unwrap_or(0o755);
            entries.push(Entry::dir(dest.as_bytes().to_vec(), dir_mode, l.uid, l.gid));
        }
        if is_zip {
            let z = read_zip(l, 0, dest.as_bytes(), &ex, &mut entries)?;
            Input::Zip(Box::new(Zips::one(l.source.clone(), z)))
        } else if l.wheels {
            Input::Zip(Box::new(read_wheels(
                l,
                dest.as_bytes(),
                &ex,
                &mut entries,
            )?))
        } else {
            let tree = Tree {
                l,
                dest: dest.as_bytes(),
                ex: &ex,
                skip,
            };
            walk_dir(&tree, &mut entries, &mut inodes, &mut stamps)?;
            Input::Files
        }
    } else if meta.is_file() {
        entries.push(single_file(l, &dest, &meta)?);
        Input::Files
    } else {
        return Err(Error::source(
            &l.source,
            "is neither a file nor a directory",
        ));
    };
    add_parents(&mut entries);
    refuse_whiteout_names(&l.source, &entries)?;
    sort_and_check(&mut entries).map_err(|p| {
        Error::source(
            &l.source,
            format!("two entries for `/{}`", String::from_utf8_lossy(&p)),
        )
    })?;
    link_hardlinks(&mut entries, &inodes);
    Ok(Collected {
        entries,
        input,
        stamps,
    })
}

/// Refuse an input file named like an OCI whiteout (`.wh.NAME`): in a layer it would not be a
/// file but delete `NAME` from the layers below (`.wh..` and `.wh...` even the directory
/// holding it), in the image and in every runtime that unpacks it.
fn refuse_whiteout_names(source: &Path, entries: &[Entry]) -> Result<()> {
    for e in entries {
        let name = e.path.rsplit(|b| *b == b'/').next().unwrap_or_default();
        if name.starts_with(b".wh.") {
            return Err(Error::source(
                source,
                format!(
                    "`/{}` has a whiteout name (`.wh.`): in an image layer it would delete a file \
                     rather than be one; rename or exclude it",
                    String::from_utf8_lossy(&e.path)
                ),
            ));
        }
    }
    Ok(())
}

/// The source's metadata (following a symlink), with a hint on relative paths when missing.
fn source_metadata(source: &Path) -> Result<fs::Metadata> {
    fs::metadata(source).map_err(|e| {
        Error::source(
            source,
            if e.kind() == std::io::ErrorKind::NotFound {
                "not found (relative paths are taken from the spec's directory in lamina.toml, from the current directory in flags)".to_owned()
            } else {
                e.to_string()
            },
        )
    })
}

/// The entry of a single-file source: at `dest`, or inside it when `dest` ends with `/`.
fn single_file(l: &LayerSpec, dest: &str, meta: &fs::Metadata) -> Result<Entry> {
    let name = l
        .source
        .file_name()
        .ok_or_else(|| Error::source(&l.source, "has no file name"))?;
    let path = if l.dest.ends_with('/') || dest.is_empty() {
        join(dest.as_bytes(), name.as_bytes())
    } else {
        dest.as_bytes().to_vec()
    };
    Ok(Entry {
        path,
        mode: file_mode(meta.mode(), l.mode.map(|m| m.0)),
        uid: l.uid,
        gid: l.gid,
        kind: Kind::File {
            size: meta.len(),
            data: Data::Path(l.source.clone()),
        },
    })
}

/// Add the parents of everything collected, so the layer stands on its own (0755, root-owned).
fn add_parents(entries: &mut Vec<Entry>) {
    let mut parents: Vec<Vec<u8>> = entries.iter().flat_map(|e| ancestors(&e.path)).collect();
    parents.sort();
    parents.dedup();
    entries.extend(parents.into_iter().map(|p| Entry::dir(p, 0o755, 0, 0)));
}

/// A directory source being walked: where it goes and what it leaves out.
struct Tree<'a> {
    l: &'a LayerSpec,
    dest: &'a [u8],
    ex: &'a GlobSet,
    skip: &'a [(u64, u64)],
}

/// Add the entries under the source directory, depth first; files sharing an inode are noted
/// in `inodes` for [`link_hardlinks`].
fn walk_dir(
    t: &Tree,
    out: &mut Vec<Entry>,
    inodes: &mut HashMap<Vec<u8>, (u64, u64)>,
    stamps: &mut HashMap<PathBuf, super::cache::Stamp>,
) -> Result<()> {
    let (l, root, dest, ex, skip) = (t.l, &t.l.source, t.dest, t.ex, t.skip);
    let file_fixed = l.mode.map(|m| m.0);
    let dir_mode = l.dir_mode.map(|m| m.0).unwrap_or(0o755);
    // An explicit stack: deep trees must not overflow ours.
    let mut stack: Vec<PathBuf> = vec![PathBuf::new()];
    while let Some(rel_dir) = stack.pop() {
        let abs_dir = root.join(&rel_dir);
        let rd = fs::read_dir(&abs_dir).at("reading directory", &abs_dir)?;
        for item in rd {
            let item = item.at("reading directory", &abs_dir)?;
            let rel = rel_dir.join(item.file_name());
            if ex.is_match(&rel) {
                continue;
            }
            let abs = root.join(&rel);
            let meta = fs::symlink_metadata(&abs).at("reading metadata of", &abs)?;
            // lamina never reads its own output: this command's, and any zip, layout, archive
            // or lamina.lock it wrote before (a `function.zip` beside the code it was made
            // from, an `out` layout inside `code = "."`).
            if skip.contains(&(meta.dev(), meta.ino()))
                || super::own::written_by_lamina(&abs, &meta)
            {
                continue;
            }
            let path = join(dest, rel.as_os_str().as_bytes());
            let ft = meta.file_type();
            let kind = if ft.is_dir() {
                stack.push(rel);
                out.push(Entry::dir(path, dir_mode, l.uid, l.gid));
                continue;
            } else if ft.is_file() {
                stamps.insert(abs.clone(), super::cache::stamp_of(&meta));
                Kind::File {
                    size: meta.len(),
                    data: Data::Path(abs.clone()),
                }
            } else if ft.is_symlink() {
                let t = fs::read_link(&abs).at("reading symlink", &abs)?;
                Kind::Symlink(t.as_os_str().as_bytes().to_vec())
            } else {
                let what = if ft.is_fifo() {
                    "a named pipe"
                } else if ft.is_socket() {
                    "a socket"
                } else {
                    "a device file"
                };
                return Err(Error::source(
                    &abs,
                    format!(
                        "is {what}; only files, directories and symlinks can go into a layer (exclude it)"
                    ),
                ));
            };
            let mode = match &kind {
                Kind::Symlink(_) => 0o777,
                _ => file_mode(meta.mode(), file_fixed),
            };
            if meta.is_file() && meta.nlink() > 1 {
                // Remember the inode; `link_hardlinks` turns later copies into links.
                inodes.insert(path.clone(), (meta.dev(), meta.ino()));
            }
            out.push(Entry {
                path,
                mode,
                uid: l.uid,
                gid: l.gid,
                kind,
            });
        }
    }
    Ok(())
}

/// Files that share an inode are stored once: the first in path order as a file, the others as
/// hard-link entries pointing at it.
fn link_hardlinks(entries: &mut [Entry], inodes: &HashMap<Vec<u8>, (u64, u64)>) {
    if inodes.is_empty() {
        return;
    }
    let mut first: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
    for e in entries.iter_mut() {
        if let Some(k) = inodes.get(&e.path) {
            match first.get(k) {
                Some(target) => e.kind = Kind::HardLink(target.clone()),
                None => {
                    first.insert(*k, e.path.clone());
                }
            }
        }
    }
}

/// Reject names that would escape the layer's root, and return the name's clean segments.
/// `src` is the zip, for the message.
fn zip_name(src: &Path, name: &[u8]) -> Result<Vec<u8>> {
    let shown = String::from_utf8_lossy(name);
    let bad = |why: &str| Err(Error::source(src, format!("entry `{shown}` {why}")));
    if name.first() == Some(&b'/') || name.first() == Some(&b'\\') {
        return bad("has an absolute path (zip slip)");
    }
    if name.len() >= 2 && name[1] == b':' && name[0].is_ascii_alphabetic() {
        return bad("has a drive-letter path (zip slip)");
    }
    let mut parts: Vec<&[u8]> = Vec::new();
    for seg in name.split(|&b| b == b'/' || b == b'\\') {
        match seg {
            b"" | b"." => {}
            b".." => return bad("escapes the archive with `..` (zip slip)"),
            s => parts.push(s),
        }
    }
    if parts.is_empty() {
        return bad("has an empty name");
    }
    Ok(parts.join(&b'/'))
}

/// A symlink target must be one Linux can store, and relative (an archive's root is wherever it
/// is extracted). Whether it climbs out is decided with every link of the archive at hand
/// ([`check_zip_links`]).
fn check_zip_link(src: &Path, entry: &[u8], target: &[u8]) -> Result<()> {
    let bad = |why: &str| {
        Err(Error::source(
            src,
            format!(
                "symlink `{}` -> `{}` {why}",
                String::from_utf8_lossy(entry),
                String::from_utf8_lossy(target)
            ),
        ))
    };
    if target.is_empty() {
        return bad("has an empty target");
    }
    if target[0] == b'/' {
        return bad("points outside the archive (absolute target)");
    }
    if target.len() > MAX_LINK_TARGET {
        return Err(Error::source(
            src,
            format!(
                "symlink `{}` has a target longer than the {MAX_LINK_TARGET} bytes a Linux symbolic link holds",
                String::from_utf8_lossy(entry)
            ),
        ));
    }
    Ok(())
}

/// A zip's entries (paths relative to its root) as a [`Tree`], ancestors as directories.
#[derive(Default)]
struct ZipTree(BTreeMap<Vec<u8>, FsEntry>);

impl ZipTree {
    fn add(&mut self, rel: &[u8], e: FsEntry) {
        for a in ancestors(rel) {
            self.0.entry(a).or_insert(FsEntry::Dir);
        }
        self.0.insert(rel.to_vec(), e);
    }
}

impl FsTree for ZipTree {
    type Error = std::convert::Infallible;
    fn entry(&mut self, path: &[u8]) -> std::result::Result<FsEntry, Self::Error> {
        Ok(self.0.get(path).cloned().unwrap_or(FsEntry::Missing))
    }
}

/// Every symbolic link of the archive must lead somewhere inside it once extracted, following
/// the archive's other links as `unzip` leaves them on disk (`sub/up -> ..` then `esc ->
/// sub/up/..` climbs out though neither does lexically): the rule of the rootfs unpacker
/// ([`resolve`]), with the archive's root as a wall instead of `/`.
fn check_zip_links(src: &Path, tree: &mut ZipTree) -> Result<()> {
    let links: Vec<(Vec<u8>, Vec<u8>)> = tree
        .0
        .iter()
        .filter_map(|(p, e)| match e {
            FsEntry::Symlink(t) => Some((p.clone(), t.clone())),
            _ => None,
        })
        .collect();
    let follow = Follow {
        last: true,
        lenient: true,
        confined: true,
    };
    for (path, target) in links {
        if let Err(ResolveError::Escapes) = resolve(tree, &path, follow) {
            return Err(Error::source(
                src,
                format!(
                    "symlink `{}` -> `{}` points outside the archive once the archive's other links are followed",
                    String::from_utf8_lossy(&path),
                    String::from_utf8_lossy(&target)
                ),
            ));
        }
    }
    Ok(())
}

const S_IFMT: u32 = 0o170000;
const S_IFLNK: u32 = 0o120000;

/// Deflate cannot expand data more than about 1032:1, so an entry over [`BOMB_MIN`] bytes
/// declaring more is forged or uses a method lamina cannot read: refused as a zip bomb.
const BOMB_RATIO: u64 = 1032;
const BOMB_MIN: u64 = 1 << 20;
/// The most a zip source may declare in all (Lambda's limit for a whole image).
const MAX_ZIP_TOTAL: u64 = crate::image::MAX_UNCOMPRESSED;

/// What the central directory says about one entry (read without decompressing it).
struct ZipMeta {
    name: Vec<u8>,
    is_dir: bool,
    unix: Option<u32>,
    size: u64,
    encrypted: bool,
    compressed: u64,
    stored: bool,
}

impl ZipMeta {
    fn read(zip: &mut zip::ZipArchive<File>, i: usize, src: &Path) -> Result<ZipMeta> {
        let f = zip
            .by_index_raw(i)
            .map_err(|e| Error::source(src, format!("entry #{i}: {e}")))?;
        Ok(ZipMeta {
            name: f.name_raw().to_vec(),
            is_dir: f.is_dir(),
            unix: f.unix_mode(),
            size: f.size(),
            encrypted: f.encrypted(),
            compressed: f.compressed_size(),
            stored: f.compression() == zip::CompressionMethod::Stored,
        })
    }

    fn shown(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.name)
    }
}

/// Refuse what a zip bomb declares: an entry whose declared size is beyond what its compressed
/// bytes can hold, or entries adding up to more than [`MAX_ZIP_TOTAL`]. (The copy itself stops
/// at the declared size, so lying about it gains nothing past these checks.)
fn check_zip_sizes(src: &Path, m: &ZipMeta, total: &mut u64) -> Result<()> {
    let (shown, size, compressed) = (m.shown(), m.size, m.compressed);
    let bad = |message: String| Err(Error::source(src, message));
    if m.stored && size != compressed {
        return bad(format!(
            "entry `{shown}` is stored uncompressed but declares {size} bytes in {compressed}: the archive is corrupt"
        ));
    }
    if size > BOMB_MIN && size / compressed.max(1) > BOMB_RATIO {
        return bad(format!(
            "entry `{shown}` declares {size} bytes from {compressed} compressed bytes, more than \
             deflate can expand ({BOMB_RATIO}:1): refusing a likely zip bomb"
        ));
    }
    *total = total.saturating_add(size);
    if *total > MAX_ZIP_TOTAL {
        return bad(format!(
            "entries up to `{shown}` declare {total} bytes uncompressed, over {MAX_ZIP_TOTAL} (10 GiB, \
             the most a Lambda image holds): refusing a likely zip bomb"
        ));
    }
    Ok(())
}

/// Refuse a zip with two entries of the same name: the reader keeps one of the copies, and
/// which one other tools extract varies.
fn refuse_duplicates(l: &LayerSpec, zip: &zip::ZipArchive<File>) -> Result<()> {
    if !zip.has_duplicate_names() {
        return Ok(());
    }
    let name = File::open(&l.source)
        .and_then(|mut f| crate::layer::zip::duplicate_name(&mut f))
        .ok()
        .flatten()
        .map(|n| format!("entry `{}`", String::from_utf8_lossy(&n)))
        .unwrap_or_else(|| "an entry name".to_owned());
    Err(Error::source(
        &l.source,
        format!(
            "{name} appears twice in the archive; tools disagree on which copy wins, so lamina refuses it"
        ),
    ))
}

/// Is `rel` (or a directory above it) excluded?
fn zip_excluded(ex: &GlobSet, rel: &[u8]) -> bool {
    let m = |p: &[u8]| ex.is_match(Path::new(std::ffi::OsStr::from_bytes(p)));
    m(rel) || ancestors(rel).iter().any(|a| m(a))
}

/// The target of the symlink entry `i` (read up to one byte past [`MAX_LINK_TARGET`], so a
/// longer one is refused, never cut short), checked as [`check_zip_link`] does.
fn read_zip_link(
    l: &LayerSpec,
    zip: &mut zip::ZipArchive<File>,
    i: usize,
    m: &ZipMeta,
    rel: &[u8],
) -> Result<Vec<u8>> {
    if m.size > MAX_LINK_TARGET as u64 {
        return Err(Error::source(
            &l.source,
            format!(
                "symlink `{}` has a target of {} bytes, longer than the {MAX_LINK_TARGET} a Linux symbolic link holds",
                m.shown(),
                m.size
            ),
        ));
    }
    let mut target = Vec::new();
    zip.by_index(i)
        .map_err(|e| Error::source(&l.source, format!("entry `{}`: {e}", m.shown())))?
        .take(MAX_LINK_TARGET as u64 + 1)
        .read_to_end(&mut target)
        .ctx(|| format!("reading entry `{}` of {}", m.shown(), l.source.display()))?;
    check_zip_link(&l.source, rel, &target)?;
    Ok(target)
}

/// The `*.whl` files directly in `dir`, sorted by name.
pub fn wheels_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v = Vec::new();
    for e in fs::read_dir(dir).at("reading", dir)? {
        let e = e.at("reading", dir)?;
        let p = e.path();
        if p.extension().is_some_and(|x| x.eq_ignore_ascii_case("whl"))
            && e.file_type().at("reading", &p)?.is_file()
        {
            if v.len() == MAX_WHEELS {
                return Err(Error::source(
                    dir,
                    format!("holds more than {MAX_WHEELS} wheels"),
                ));
            }
            v.push(p);
        }
    }
    v.sort();
    Ok(v)
}

/// Add the entries of every wheel in the directory `l.source` under `dest`, as one tree: a
/// path two wheels both write is kept once when they agree (same kind, same bytes or target)
/// and refused, naming both wheels, when they do not.
fn read_wheels(l: &LayerSpec, dest: &[u8], ex: &GlobSet, out: &mut Vec<Entry>) -> Result<Zips> {
    let wheels = wheels_in(&l.source)?;
    if wheels.is_empty() {
        return Err(Error::source(
            &l.source,
            "holds no wheel (*.whl): give the directory `pip download` or `pip wheel` wrote, or a `pip install --target` directory",
        ));
    }
    let mut zips = Zips { parts: Vec::new() };
    let mut merged: Vec<Entry> = Vec::new();
    let mut first = 0;
    for w in wheels {
        let one = LayerSpec {
            source: w.clone(),
            ..l.clone()
        };
        let z = read_zip(&one, first, dest, ex, &mut merged)?;
        let n = z.len();
        zips.parts.push((w, first, z));
        first += n;
    }
    // Stable: for one path, the wheels' entries stay in the wheels' order.
    merged.sort_by(|a, b| a.path.cmp(&b.path));
    let mut kept: Vec<Entry> = Vec::with_capacity(merged.len());
    for e in merged {
        match kept.last() {
            Some(k) if k.path == e.path => same_entry(&mut zips, k, &e)?,
            _ => kept.push(e),
        }
    }
    out.extend(kept);
    Ok(zips)
}

/// Two wheels' entries for one path must agree: both directories, the same link target, or
/// files with the same bytes.
fn same_entry(zips: &mut Zips, a: &Entry, b: &Entry) -> Result<()> {
    // Read no further than the declared size (checked against zip bombs when listed).
    let bytes = |zips: &mut Zips, i: usize, size: u64| -> Result<crate::digest::Digest> {
        let shown = zips.path_of(i).to_owned();
        let f = zips
            .by_index(i)
            .map_err(|e| Error::source(&shown, format!("entry #{i}: {e}")))?;
        let (d, _) = crate::digest::hash_reader(f.take(size)).at("reading", &shown)?;
        Ok(d)
    };
    let agree = match (&a.kind, &b.kind) {
        (Kind::Dir, Kind::Dir) => true,
        (Kind::Symlink(x), Kind::Symlink(y)) => x == y,
        (
            Kind::File {
                size: sa,
                data: Data::Zip(ia),
            },
            Kind::File {
                size: sb,
                data: Data::Zip(ib),
            },
        ) => sa == sb && a.mode == b.mode && bytes(zips, *ia, *sa)? == bytes(zips, *ib, *sb)?,
        _ => false,
    };
    if agree {
        return Ok(());
    }
    let from = |e: &Entry| match &e.kind {
        Kind::File {
            data: Data::Zip(i), ..
        } => zips.path_of(*i).display().to_string(),
        _ => "a wheel".to_owned(),
    };
    Err(Error::source(
        zips.path_of(0).parent().unwrap_or(Path::new(".")),
        format!(
            "two wheels write `/{}` with different contents ({} and {}): keep one of them",
            String::from_utf8_lossy(&a.path),
            from(a),
            from(b)
        ),
    ))
}

/// Add the entries of a zip source under `dest`, numbered from `first`; file bytes are read
/// later, by index, while the tar is written.
fn read_zip(
    l: &LayerSpec,
    first: usize,
    dest: &[u8],
    ex: &GlobSet,
    out: &mut Vec<Entry>,
) -> Result<zip::ZipArchive<File>> {
    let file = File::open(&l.source).at("opening", &l.source)?;
    let mut zip = zip::ZipArchive::new(file)
        .map_err(|e| Error::source(&l.source, format!("is not a readable zip archive: {e}")))?;
    let dir_mode = l.dir_mode.map(|m| m.0).unwrap_or(0o755);
    refuse_duplicates(l, &zip)?;
    let mut total = 0u64;
    let mut tree = ZipTree::default();
    for i in 0..zip.len() {
        let m = ZipMeta::read(&mut zip, i, &l.source)?;
        let rel = zip_name(&l.source, &m.name)?;
        if m.encrypted {
            return Err(Error::source(
                &l.source,
                format!(
                    "entry `{}` is encrypted; lamina cannot read encrypted zips",
                    m.shown()
                ),
            ));
        }
        check_zip_sizes(&l.source, &m, &mut total)?;
        if zip_excluded(ex, &rel) {
            continue;
        }
        let path = join(dest, &rel);
        let mode = m.unix.unwrap_or(0);
        let (mode, kind) = if m.is_dir {
            tree.add(&rel, FsEntry::Dir);
            out.push(Entry::dir(path, dir_mode, l.uid, l.gid));
            continue;
        } else if mode & S_IFMT == S_IFLNK {
            let target = read_zip_link(l, &mut zip, i, &m, &rel)?;
            tree.add(&rel, FsEntry::Symlink(target.clone()));
            (0o777, Kind::Symlink(target))
        } else {
            tree.add(&rel, FsEntry::Other);
            // A zip made without Unix modes (e.g. on Windows) gives plain readable files.
            let data = Data::Zip(first + i);
            let size = m.size;
            (
                file_mode(mode, l.mode.map(|m| m.0)),
                Kind::File { size, data },
            )
        };
        out.push(Entry {
            path,
            mode,
            uid: l.uid,
            gid: l.gid,
            kind,
        });
    }
    check_zip_links(&l.source, &mut tree)?;
    Ok(zip)
}

/// The entries of the whiteout layer that deletes `paths` (no leading `/`) from the layers below.
pub fn whiteouts(paths: &[String]) -> Vec<Entry> {
    let mut v: Vec<Entry> = paths
        .iter()
        .map(|p| {
            let (dir, name) = p.rsplit_once('/').unwrap_or(("", p));
            Entry {
                path: join(dir.as_bytes(), format!(".wh.{name}").as_bytes()),
                mode: 0o644,
                uid: 0,
                gid: 0,
                kind: Kind::File {
                    size: 0,
                    data: Data::Empty,
                },
            }
        })
        .collect();
    v.sort_by(|a, b| a.path.cmp(&b.path));
    v.dedup_by(|a, b| a.path == b.path);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(name: &[u8], size: u64, compressed: u64, stored: bool) -> ZipMeta {
        ZipMeta {
            name: name.to_vec(),
            is_dir: false,
            unix: None,
            size,
            encrypted: false,
            compressed,
            stored,
        }
    }

    #[test]
    fn zip_names_cannot_escape() {
        let z = Path::new("l.zip");
        let err = |name: &[u8]| zip_name(z, name).unwrap_err().to_string();
        assert_eq!(zip_name(z, b"a/./b").unwrap(), b"a/b");
        assert!(err(b"../evil").contains("../evil"));
        assert!(zip_name(z, b"a/../../evil").is_err());
        assert!(err(b"/etc/evil").contains("absolute"));
        assert!(zip_name(z, b"C:/x").is_err());
        assert!(zip_name(z, b"..\\x").is_err());
    }

    /// Links checked as [`read_zip`] does: each alone, then all together.
    fn links_ok(links: &[(&str, &str)]) -> Result<()> {
        let z = Path::new("l.zip");
        let mut tree = ZipTree::default();
        tree.add(b"lib/util.sh", FsEntry::Other);
        for (p, t) in links {
            check_zip_link(z, p.as_bytes(), t.as_bytes())?;
            tree.add(p.as_bytes(), FsEntry::Symlink(t.as_bytes().to_vec()));
        }
        check_zip_links(z, &mut tree)
    }

    #[test]
    fn zip_symlinks_must_stay_inside() {
        assert!(links_ok(&[("lib/latest", "util.sh")]).is_ok());
        assert!(links_ok(&[("lib/latest", "../bin/x")]).is_ok());
        assert!(links_ok(&[("lib/latest", "../../x")]).is_err());
        assert!(links_ok(&[("top", "../x")]).is_err());
        assert!(links_ok(&[("top", "/etc/passwd")]).is_err());
        // Chained: neither climbs out lexically, both do through `sub/up`, in either order.
        for esc in [("esc", "sub/up/.."), ("pw", "sub/up/../../etc/passwd")] {
            let e = links_ok(&[("sub/up", ".."), esc]).unwrap_err().to_string();
            assert!(
                e.contains(&format!("`{}`", esc.0)) && e.contains("l.zip"),
                "{e}"
            );
            assert!(links_ok(&[esc, ("sub/up", "..")]).is_err());
        }
        assert!(links_ok(&[("sub/up", ".."), ("ok", "sub/up/lib/util.sh")]).is_ok());
        let long = "a/".repeat(2048);
        let e = links_ok(&[("long", &long)]).unwrap_err().to_string();
        assert!(e.contains("`long`") && e.contains("4095 bytes"), "{e}");
    }

    #[test]
    fn zip_bombs_are_refused_by_their_declared_sizes() {
        let z = Path::new("l.zip");
        let mut total = 0;
        // A file of zeros deflates about 1030:1 and stays acceptable.
        assert!(check_zip_sizes(z, &meta(b"zeros", 100 << 20, 102_000, false), &mut total).is_ok());
        let e = check_zip_sizes(z, &meta(b"bomb", 4 << 30, 4096, false), &mut total)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`bomb`") && e.contains("zip bomb"), "{e}");
        // Small entries may compress as they like (a few bytes of header dominate).
        assert!(check_zip_sizes(z, &meta(b"tiny", 1 << 20, 10, false), &mut total).is_ok());
        let e = check_zip_sizes(z, &meta(b"stored", 10, 5, true), &mut total)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`stored`"), "{e}");
        let mut total = MAX_ZIP_TOTAL - 10;
        let e = check_zip_sizes(z, &meta(b"last", 11, 11, true), &mut total)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`last`") && e.contains("10 GiB"), "{e}");
    }

    fn wheel(path: &Path, files: &[(&str, &[u8])]) {
        use std::io::Write;
        let mut z = zip::ZipWriter::new(File::create(path).unwrap());
        for (name, data) in files {
            let o = zip::write::SimpleFileOptions::default().unix_permissions(0o644);
            z.start_file(*name, o).unwrap();
            z.write_all(data).unwrap();
        }
        z.finish().unwrap();
    }

    fn file_paths(c: &Collected) -> Vec<String> {
        c.entries
            .iter()
            .filter(|e| matches!(e.kind, Kind::File { .. }))
            .map(|e| String::from_utf8_lossy(&e.path).into_owned())
            .collect()
    }

    /// A directory of wheels is the merge of their entries; a `.whl` file, its entries; both
    /// only when the layer says it is wheels (a `[[layer]]` copies a `.whl` as a file).
    #[test]
    fn wheels_merge_and_refuse_a_path_written_twice_differently() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("wheels");
        fs::create_dir(&dir).unwrap();
        wheel(
            &dir.join("a-1-py3-none-any.whl"),
            &[("a/__init__.py", b"a"), ("shared/LICENSE", b"same")],
        );
        wheel(
            &dir.join("b-1-py3-none-any.whl"),
            &[("b.py", b"b"), ("shared/LICENSE", b"same")],
        );
        let mut l = crate::spec::flags::plain_layer(dir.clone(), "/var/runtime");
        l.wheels = true;
        let mut c = collect(&l).unwrap();
        assert_eq!(
            file_paths(&c),
            [
                "var/runtime/a/__init__.py",
                "var/runtime/b.py",
                "var/runtime/shared/LICENSE"
            ]
        );
        // Each entry reads from its own wheel.
        let Input::Zip(z) = &mut c.input else {
            panic!("read as zips")
        };
        assert_eq!(z.paths().len(), 2);
        for e in &c.entries {
            if let Kind::File {
                data: Data::Zip(i), ..
            } = e.kind
            {
                let mut s = String::new();
                z.by_index(i).unwrap().read_to_string(&mut s).unwrap();
                let want = match e.path.as_slice() {
                    b"var/runtime/a/__init__.py" => "a",
                    b"var/runtime/b.py" => "b",
                    _ => "same",
                };
                assert_eq!(s, want);
            }
        }

        let one = dir.join("a-1-py3-none-any.whl");
        let mut l1 = crate::spec::flags::plain_layer(one.clone(), "/var/runtime");
        l1.wheels = true;
        assert_eq!(
            file_paths(&collect(&l1).unwrap()),
            ["var/runtime/a/__init__.py", "var/runtime/shared/LICENSE"]
        );
        let plain = crate::spec::flags::plain_layer(one, "/x/");
        assert_eq!(
            file_paths(&collect(&plain).unwrap()),
            ["x/a-1-py3-none-any.whl"]
        );

        wheel(
            &dir.join("c-1-py3-none-any.whl"),
            &[("shared/LICENSE", b"other")],
        );
        let e = collect(&l).err().unwrap().to_string();
        assert!(
            e.contains("/var/runtime/shared/LICENSE")
                && e.contains("c-1-py3-none-any.whl")
                && e.contains("different contents"),
            "{e}"
        );
    }

    #[test]
    fn whiteouts_name_the_deleted_path() {
        let w = whiteouts(&["opt/old".into(), "a".into()]);
        let names: Vec<_> = w
            .iter()
            .map(|e| String::from_utf8(e.path.clone()).unwrap())
            .collect();
        assert_eq!(names, [".wh.a", "opt/.wh.old"]);
    }
}
