//! What a layer's tar holds, as the in-memory file-system view of the Lambda gate applies it:
//! a list of [`Item`]s (each entry's path, kind, mode, size, link target and, for files that may
//! be executed, first bytes; whiteouts and opaque markers), in tar order, without contents.
//!
//! The same list serves two ways: read from a tar stream and applied at once
//! (`lambda::fs::apply_layer`), or remembered per diff_id for a verified base layer so that later
//! checks apply it without decompressing the layer again ([`FsIndex`], [`load`], [`save`]).
//! Either way the view applies it with the same code. The list is a function of the
//! uncompressed content alone, so keying it by diff_id is sound, and it is only remembered from
//! a stream that verified.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::blob::decompress;
use super::elf::{ElfFacts, Scanner};
use super::fs::{MAX_LINK_TARGET, Whiteout, whiteout};
use super::{Layer, Origin};
use crate::digest::Digest;

/// How many leading bytes are kept of files the checks may execute: enough for an ELF header
/// and a `#!` line.
pub const HEAD: usize = 128;

/// Paths whose first bytes are kept whatever their mode (Lambda's custom-runtime entry points).
pub const BOOTSTRAPS: [&str; 2] = ["var/runtime/bootstrap", "var/task/bootstrap"];

/// Bumped when the format or what is recorded changes: an index of another version is not
/// remembered (it is read again from the layer and replaced).
/// (3: whiteouts of `.` and `..` and overlong link targets are refused, no longer recorded.
/// 4: ELF facts of every ELF file, heads of ELF files whatever their mode and of Python
/// package metadata.)
const VERSION: u32 = 4;

/// How many leading bytes are kept of a Python package's metadata files ([`is_metadata`]):
/// enough for a wheel's `WHEEL` tags and `top_level.txt`.
pub const META_HEAD: usize = 2048;

/// Python package metadata the gate reads: a `*.dist-info/WHEEL` or `top_level.txt`.
pub fn is_metadata(path: &str) -> bool {
    let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
    dir.ends_with(".dist-info") && (name == "WHEEL" || name == "top_level.txt")
}

/// The largest index file [`load`] reads and [`save`] writes. An entry takes about 100 bytes,
/// so this holds a layer of several hundred thousand files; a larger layer is simply read
/// from its blob each time.
pub const MAX_INDEX_BYTES: u64 = 64 << 20;

/// Called with each regular file of a layer (its path as in [`Item::path`], and its whole
/// content) as the layer is read; returns an id to remember the content by
/// ([`Op::File::kept`]), or `None` to pass. What it does not read is skipped.
pub type Keeper<'a> = dyn FnMut(&str, &mut dyn Read) -> io::Result<Option<u64>> + 'a;

/// One entry of a layer's tar, as it changes the file system below it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Item {
    /// The entry's path, normalized: no leading `/`, no `.` or empty components, `..` climbed
    /// (never above the root). For a whiteout, the path it hides; for an opaque marker, its
    /// directory.
    pub path: String,
    pub op: Op,
}

/// What an [`Item`] does. Modes are permission bits (`& 0o7777`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// A regular file of `size` bytes.
    File {
        mode: u32,
        size: u64,
        /// Its first [`HEAD`] bytes, kept when it has an execute bit, is an ELF file or sits
        /// at one of the [`BOOTSTRAPS`]; [`META_HEAD`] bytes of Python package metadata (hex on
        /// disk).
        #[serde(default, with = "hex_bytes", skip_serializing_if = "Option::is_none")]
        head: Option<Vec<u8>>,
        /// What its ELF headers say, for an ELF file.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        elf: Option<ElfFacts>,
        /// The id a [`Keeper`] gave its content; never remembered.
        #[serde(skip)]
        kept: Option<u64>,
    },
    Dir {
        mode: u32,
    },
    Symlink {
        mode: u32,
        target: String,
    },
    /// A device or fifo.
    Special {
        mode: u32,
        what: Special,
    },
    /// A hard link to `target` (as the tar spells it): it shares that file's kind, mode and
    /// content.
    HardLink {
        target: String,
    },
    /// `.wh.NAME`: hides `path` and its subtree in the layers below.
    Whiteout,
    /// `.wh..wh..opq`: hides everything the layers below put in the directory `path`.
    Opaque,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Special {
    CharDevice,
    BlockDevice,
    Fifo,
}

impl Special {
    /// Its name in messages.
    pub fn what(self) -> &'static str {
        match self {
            Special::CharDevice => "a character device",
            Special::BlockDevice => "a block device",
            Special::Fifo => "a named pipe",
        }
    }
}

/// `Option<Vec<u8>>` as an optional hex string.
mod hex_bytes {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(b: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        b.as_ref().map(hex::encode).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|h| hex::decode(h).map_err(D::Error::custom))
            .transpose()
    }
}

/// `p` without `.`, empty components or a leading `/`; `..` climbs (never above the root).
pub fn normalize(p: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for c in p.split('/').filter(|c| !c.is_empty() && *c != ".") {
        if c == ".." {
            out.pop();
        } else {
            out.push(c);
        }
    }
    out.join("/")
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The item one tar entry makes: `None` for metadata entries (global PAX headers …), aufs
/// bookkeeping names and a non-directory at the root. A regular file's content is read: its
/// head kept, the whole of it handed to `keeper`.
fn item_of<R: Read>(mut entry: tar::Entry<'_, R>, keeper: &mut Keeper) -> io::Result<Option<Item>> {
    let path = normalize(&lossy(&entry.path_bytes()));
    let (dir, name) = path.rsplit_once('/').unwrap_or(("", &path));
    // A whiteout name is a whiteout whatever the entry's type.
    match whiteout(name.as_bytes()) {
        Some(Whiteout::Opaque) => {
            let path = dir.to_owned();
            return Ok(Some(Item {
                path,
                op: Op::Opaque,
            }));
        }
        Some(Whiteout::Hides(victim)) => {
            let path = normalize(&format!("{dir}/{}", lossy(victim)));
            return Ok(Some(Item {
                path,
                op: Op::Whiteout,
            }));
        }
        Some(Whiteout::Ignored) => return Ok(None),
        Some(Whiteout::Invalid) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "entry `{}` is a whiteout of `.` or `..`, which names no file of a lower layer \
                     (taken literally it would delete the directory holding it): the layer is \
                     corrupt or hostile",
                    lossy(&entry.path_bytes())
                ),
            ));
        }
        None => {}
    }
    let header = entry.header();
    let mode = header.mode().unwrap_or(0o644) & 0o7777;
    let target = |e: &tar::Entry<'_, R>| -> io::Result<String> {
        let t = e.link_name_bytes().unwrap_or_default();
        if t.len() > MAX_LINK_TARGET {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "entry `{}` links to a target of {} bytes, longer than the {MAX_LINK_TARGET} \
                     a Linux symbolic link holds",
                    lossy(&e.path_bytes()),
                    t.len()
                ),
            ));
        }
        Ok(lossy(&t))
    };
    let special = |what| Op::Special { mode, what };
    let op = match header.entry_type() {
        tar::EntryType::Regular | tar::EntryType::Continuous => {
            file_op(&mut entry, &path, mode, keeper)?
        }
        tar::EntryType::Directory => Op::Dir { mode },
        tar::EntryType::Symlink => Op::Symlink {
            mode,
            target: target(&entry)?,
        },
        tar::EntryType::Link => Op::HardLink {
            target: target(&entry)?,
        },
        tar::EntryType::Char => special(Special::CharDevice),
        tar::EntryType::Block => special(Special::BlockDevice),
        tar::EntryType::Fifo => special(Special::Fifo),
        _ => return Ok(None),
    };
    if path.is_empty() && !matches!(op, Op::Dir { .. }) {
        return Ok(None);
    }
    Ok(Some(Item { path, op }))
}

/// A regular file's op: its first [`HEAD`] bytes kept when the checks may execute or inspect
/// it, its ELF facts read as it passes, its whole content handed to `keeper`.
fn file_op<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    path: &str,
    mode: u32,
    keeper: &mut Keeper,
) -> io::Result<Op> {
    let size = entry.size();
    let meta = is_metadata(path);
    let cap = if meta { META_HEAD } else { HEAD };
    let mut buf = Vec::with_capacity(cap.min(size as usize));
    (&mut *entry).take(cap as u64).read_to_end(&mut buf)?;
    let is_elf = buf.starts_with(b"\x7fELF");
    let keep = mode & 0o111 != 0 || BOOTSTRAPS.contains(&path) || is_elf || meta;
    let mut scanner = is_elf.then(Scanner::new);
    if let Some(s) = &mut scanner {
        s.feed(&buf);
    }
    let kept = {
        let mut tap = Tap {
            inner: &mut *entry,
            scanner: scanner.as_mut(),
        };
        keeper(path, &mut (&buf[..]).chain(&mut tap))?
    };
    if let Some(s) = &mut scanner {
        // What the keeper left unread, as far as the scanner wants it.
        let mut chunk = vec![0u8; 64 << 10];
        while s.wants_more() {
            let n = entry.read(&mut chunk)?;
            if n == 0 {
                break;
            }
            s.feed(&chunk[..n]);
        }
    }
    Ok(Op::File {
        mode,
        size,
        head: keep.then_some(buf),
        elf: scanner.and_then(Scanner::finish),
        kept,
    })
}

/// Hands the bytes read through it to an ELF scanner.
struct Tap<'a, R> {
    inner: R,
    scanner: Option<&'a mut Scanner>,
}

impl<R: Read> Read for Tap<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(s) = &mut self.scanner {
            s.feed(&buf[..n]);
        }
        Ok(n)
    }
}

/// A layer's items in order, and its uncompressed size.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct FsIndex {
    pub version: u32,
    pub uncompressed: u64,
    pub items: Vec<Item>,
}

impl FsIndex {
    /// Read an uncompressed tar stream to its end (past the end-of-archive blocks, so
    /// `uncompressed` is the layer's size and a verifying reader gets to check).
    pub fn read<R: Read>(r: R) -> io::Result<FsIndex> {
        Self::read_keeping(r, &mut |_, _| Ok(None))
    }

    /// [`read`](Self::read), handing every regular file's content to `keeper`.
    pub fn read_keeping<R: Read>(r: R, keeper: &mut Keeper) -> io::Result<FsIndex> {
        let mut counted = Counted { inner: r, n: 0 };
        let mut items = Vec::new();
        {
            let mut archive = tar::Archive::new(&mut counted);
            for e in archive.entries()? {
                if let Some(item) = item_of(e?, keeper)? {
                    items.push(item);
                }
            }
        }
        io::copy(&mut counted, &mut io::sink())?;
        Ok(FsIndex {
            version: VERSION,
            uncompressed: counted.n,
            items,
        })
    }
}

/// Counts the bytes read through it: a layer's uncompressed size, as it is read.
struct Counted<R> {
    inner: R,
    n: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}

/// Where indexes live in a cache directory: beside the verified-blob markers.
pub fn dir(cache: &Path) -> PathBuf {
    cache.join("verified").join("fs")
}

fn path_for(cache: &Path, diff_id: &Digest) -> PathBuf {
    dir(cache).join(format!("{}.json", diff_id.hex()))
}

/// The remembered index of the layer whose uncompressed digest is `diff_id`, if any. An
/// index that is missing, unreadable, larger than [`MAX_INDEX_BYTES`], not this version's
/// format or of another version counts as none: the layer is then read again.
pub fn load(cache: &Path, diff_id: &Digest) -> Option<FsIndex> {
    load_at_most(&path_for(cache, diff_id), MAX_INDEX_BYTES)
}

/// [`load`] from `path`, refusing a file over `cap` bytes.
fn load_at_most(path: &Path, cap: u64) -> Option<FsIndex> {
    // Only a regular file: a named pipe planted in the cache would block the open forever.
    let f = super::blob::open_regular(path).ok()?;
    let mut bytes = Vec::new();
    f.take(cap + 1).read_to_end(&mut bytes).ok()?;
    if bytes.len() as u64 > cap {
        return None;
    }
    serde_json::from_slice::<FsIndex>(&bytes)
        .ok()
        .filter(|i| i.version == VERSION)
}

/// Remember `index` for `diff_id`: written to a temporary name and renamed, so a reader never
/// sees half of one. Best effort: without it (or for an index over [`MAX_INDEX_BYTES`]) the
/// layer is simply read again next time.
pub fn save(cache: &Path, diff_id: &Digest, index: &FsIndex) {
    let Ok(bytes) = serde_json::to_vec(index) else {
        return;
    };
    if bytes.len() as u64 > MAX_INDEX_BYTES {
        return;
    }
    let d = dir(cache);
    if fs::create_dir_all(&d).is_err() {
        return;
    }
    let Ok(mut tmp) = tempfile::Builder::new().prefix(".fs-").tempfile_in(&d) else {
        return;
    };
    if tmp.write_all(&bytes).is_ok() {
        // A failed rename leaves no index, which only costs a re-read.
        let _ = tmp.persist(path_for(cache, diff_id));
    }
}

impl Layer {
    /// Verify the layer and index its tar in one pass over the uncompressed stream. The index
    /// is `None` (the verification still done) when the content is not a readable tar.
    pub fn verify_and_index(&self) -> io::Result<Option<FsIndex>> {
        let mut u = match self.uncompressed() {
            Ok(u) => u,
            Err(e) if e.kind() == io::ErrorKind::Unsupported => {
                return self.verify().map(|()| None);
            }
            Err(e) => return Err(e),
        };
        let index = FsIndex::read(&mut u);
        // Whatever the tar reader made of it, the whole stream must verify.
        io::copy(&mut u, &mut io::sink())?;
        Ok(index.ok())
    }

    /// This layer's index. A base layer's is remembered in `cache`, else read from its
    /// verified stream and remembered. A layer lamina has just built (its digests computed as
    /// it was written) is read as it is and not remembered: the cache keeps what is reused.
    /// The error is the reading error (the stream failed to verify, or is not a tar).
    pub fn fs_index(&self, cache: &Path) -> io::Result<FsIndex> {
        if self.origin == Origin::New {
            // A layer the registry build cache found in the destination is not downloaded:
            // its index came (verified) with the cache entry.
            if !self.path.exists()
                && let Some(i) = load(cache, &self.diff_id)
            {
                return Ok(i);
            }
            let f = self.compressed()?;
            let c = self.compression()?;
            let index = FsIndex::read(decompress(io::BufReader::with_capacity(1 << 20, f), c)?)?;
            // Remembered for the registry build cache, which shares it with other runners.
            save(cache, &self.diff_id, &index);
            return Ok(index);
        }
        if let Some(i) = load(cache, &self.diff_id) {
            return Ok(i);
        }
        let index = FsIndex::read(self.uncompressed()?)?;
        save(cache, &self.diff_id, &index);
        Ok(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool_tar() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(4);
        h.set_mode(0o755);
        b.append_data(&mut h, "./bin/tool", &b"\x7fELF"[..])
            .unwrap();
        b.into_inner().unwrap()
    }

    /// A named pipe planted where an index would be counts as no index (it is not waited on).
    #[test]
    fn a_named_pipe_in_the_cache_is_no_index() {
        let dir = tempfile::tempdir().unwrap();
        let diff_id = Digest::of(b"layer");
        std::fs::create_dir_all(super::dir(dir.path())).unwrap();
        let p = path_for(dir.path(), &diff_id);
        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        assert!(load(dir.path(), &diff_id).is_none());
    }

    #[test]
    fn an_index_round_trips_through_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let tar = tool_tar();
        let index = FsIndex::read(&tar[..]).unwrap();
        assert_eq!(index.uncompressed, tar.len() as u64);
        assert_eq!(
            index.items,
            [Item {
                path: "bin/tool".into(),
                op: Op::File {
                    mode: 0o755,
                    size: 4,
                    head: Some(b"\x7fELF".to_vec()),
                    elf: None,
                    kept: None
                }
            }]
        );
        let diff = Digest::of(&tar);
        assert!(load(dir.path(), &diff).is_none());
        save(dir.path(), &diff, &index);
        assert_eq!(load(dir.path(), &diff), Some(index));
    }

    /// Another version's index, a damaged one or an oversized one is not remembered (and is
    /// no error).
    #[test]
    fn an_index_of_another_version_or_size_is_not_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let tar = tool_tar();
        let diff = Digest::of(&tar);
        let mut index = FsIndex::read(&tar[..]).unwrap();
        index.version = VERSION + 1;
        save(dir.path(), &diff, &index);
        assert!(path_for(dir.path(), &diff).exists());
        assert!(load(dir.path(), &diff).is_none());
        std::fs::write(path_for(dir.path(), &diff), b"{\"version\":1,\"entries\":[").unwrap();
        assert!(load(dir.path(), &diff).is_none());
        index.version = VERSION;
        save(dir.path(), &diff, &index);
        let path = path_for(dir.path(), &diff);
        let len = std::fs::metadata(&path).unwrap().len();
        assert_eq!(load_at_most(&path, len), Some(index));
        assert!(load_at_most(&path, len - 1).is_none());
    }
}
