//! What a layer's tar holds, remembered per diff_id: each entry's path, kind, mode, size, link
//! target and (for files that may be executed) first bytes, in tar order — everything the
//! Lambda file-system checks read from a layer, without its contents. A base layer is read (and
//! decompressed) once per machine; later checks replay the index. The index is a function of
//! the uncompressed content alone, so keying it by diff_id is sound, and it is only written
//! from a stream that verified.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::blob::decompress;
use super::{Layer, Origin};
use crate::digest::Digest;

/// How many leading bytes of a file are kept (enough for an ELF header and a `#!` line).
pub const HEAD: usize = 128;

/// Bumped when the format or what is recorded changes: older indexes are then ignored.
const VERSION: u32 = 1;

/// One tar entry as recorded.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    /// A regular file of `size` bytes; `head` is kept when an execute bit is set or the file is
    /// named `bootstrap` (hex).
    File {
        size: u64,
        head: Option<String>,
    },
    Dir,
    Symlink {
        target: String,
    },
    HardLink {
        target: String,
    },
    /// A device or fifo: `what` names it ("a character device", …).
    Other {
        what: String,
    },
    /// A metadata entry (global PAX header …) that adds no file, kept for its name: a whiteout
    /// name is a whiteout whatever the entry's type.
    Ignored,
}

/// One entry: its path as the tar spells it (not normalized), its permission bits and kind.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    pub mode: u32,
    pub kind: EntryKind,
}

/// A layer's index: its entries in order and its uncompressed size.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct FsIndex {
    pub version: u32,
    pub uncompressed: u64,
    pub entries: Vec<Entry>,
}

impl EntryKind {
    /// The first bytes of a file, when they were kept.
    pub fn head_bytes(&self) -> Option<Vec<u8>> {
        match self {
            EntryKind::File { head: Some(h), .. } => hex::decode(h).ok(),
            _ => None,
        }
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Record one tar entry, reading at most [`HEAD`] bytes of its content.
fn record<R: Read>(entry: &mut tar::Entry<R>) -> io::Result<Entry> {
    let path = lossy(&entry.path_bytes());
    let header = entry.header();
    let mode = header.mode().unwrap_or(0o644) & 0o7777;
    let link = || {
        entry
            .link_name_bytes()
            .map(|t| lossy(&t))
            .unwrap_or_default()
    };
    let kind = match header.entry_type() {
        tar::EntryType::Regular | tar::EntryType::Continuous => {
            let size = entry.size();
            let keep = mode & 0o111 != 0 || path.ends_with("bootstrap");
            let head = if keep {
                let mut buf = Vec::with_capacity(HEAD);
                entry.take(HEAD as u64).read_to_end(&mut buf)?;
                Some(hex::encode(buf))
            } else {
                None
            };
            EntryKind::File { size, head }
        }
        tar::EntryType::Directory => EntryKind::Dir,
        tar::EntryType::Symlink => EntryKind::Symlink { target: link() },
        tar::EntryType::Link => EntryKind::HardLink { target: link() },
        tar::EntryType::Char => EntryKind::Other {
            what: "a character device".into(),
        },
        tar::EntryType::Block => EntryKind::Other {
            what: "a block device".into(),
        },
        tar::EntryType::Fifo => EntryKind::Other {
            what: "a named pipe".into(),
        },
        _ => EntryKind::Ignored,
    };
    Ok(Entry { path, mode, kind })
}

impl FsIndex {
    /// Index an uncompressed tar stream, reading it to its end (past the end-of-archive
    /// blocks, so `uncompressed` is the layer's size and a verifying reader gets to check).
    pub fn read<R: Read>(r: R) -> io::Result<FsIndex> {
        let mut counted = Counted { inner: r, n: 0 };
        let mut entries = Vec::new();
        {
            let mut archive = tar::Archive::new(&mut counted);
            for e in archive.entries()? {
                entries.push(record(&mut e?)?);
            }
        }
        io::copy(&mut counted, &mut io::sink())?;
        Ok(FsIndex {
            version: VERSION,
            uncompressed: counted.n,
            entries,
        })
    }
}

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

/// The remembered index of the layer whose uncompressed digest is `diff_id`, if any (an
/// unreadable or outdated one counts as none).
pub fn load(cache: &Path, diff_id: &Digest) -> Option<FsIndex> {
    let bytes = fs::read(path_for(cache, diff_id)).ok()?;
    serde_json::from_slice::<FsIndex>(&bytes)
        .ok()
        .filter(|i| i.version == VERSION)
}

/// Remember `index` for `diff_id`: written to a temporary name and renamed, so a reader never
/// sees half of one. Best effort: without it the layer is simply read again next time.
pub fn save(cache: &Path, diff_id: &Digest, index: &FsIndex) {
    let d = dir(cache);
    if fs::create_dir_all(&d).is_err() {
        return;
    }
    let Ok(mut tmp) = tempfile::Builder::new().prefix(".fs-").tempfile_in(&d) else {
        return;
    };
    let mut w = io::BufWriter::new(&mut tmp);
    let written = serde_json::to_writer(&mut w, index).is_ok() && w.flush().is_ok();
    drop(w);
    if written {
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
            let f = self.compressed()?;
            let c = self.compression()?;
            return FsIndex::read(decompress(io::BufReader::with_capacity(1 << 20, f), c)?);
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

    #[test]
    fn an_index_round_trips_through_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(4);
        h.set_mode(0o755);
        b.append_data(&mut h, "bin/tool", &b"\x7fELF"[..]).unwrap();
        let tar = b.into_inner().unwrap();
        let index = FsIndex::read(&tar[..]).unwrap();
        assert_eq!(index.uncompressed, tar.len() as u64);
        assert_eq!(
            index.entries[0].kind.head_bytes().as_deref(),
            Some(&b"\x7fELF"[..])
        );
        let diff = Digest::of(&tar);
        assert!(load(dir.path(), &diff).is_none());
        save(dir.path(), &diff, &index);
        assert_eq!(load(dir.path(), &diff), Some(index));
    }
}
