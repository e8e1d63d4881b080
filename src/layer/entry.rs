//! What goes into a layer, independent of where it came from: a sorted list of entries.

use std::io::{self, Read};
use std::path::PathBuf;

/// Reads exactly `remaining` bytes, failing if the source ends early; [`Exact::grew`] then
/// tells whether it had more. A file that changes size while it is archived is an error, never
/// an archive whose header disagrees with its data.
pub(crate) struct Exact<'a> {
    inner: &'a mut dyn Read,
    remaining: u64,
}

impl<'a> Exact<'a> {
    pub(crate) fn new(inner: &'a mut dyn Read, size: u64) -> Self {
        Exact {
            inner,
            remaining: size,
        }
    }

    /// After the promised bytes: is there more?
    pub(crate) fn grew(&mut self) -> io::Result<bool> {
        let mut probe = [0u8; 1];
        Ok(self.inner.read(&mut probe)? != 0)
    }
}

impl Read for Exact<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let max = buf
            .len()
            .min(self.remaining.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..max])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "ended {} bytes early: it shrank while being read",
                    self.remaining
                ),
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// Where a regular file's bytes come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Data {
    /// No bytes (whiteouts, empty files).
    Empty,
    /// A file on the local file system.
    Path(PathBuf),
    /// Entry number `n` of the zip archive the layer is built from.
    Zip(usize),
}

/// What an entry is, with what its kind needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A directory.
    Dir,
    /// A regular file.
    File {
        /// Its size when collected: the tar writer refuses a file that changed since.
        size: u64,
        /// Where its bytes are read from.
        data: Data,
    },
    /// Target as raw bytes (may be non-UTF-8).
    Symlink(Vec<u8>),
    /// Another entry of the same layer, by its path.
    HardLink(Vec<u8>),
}

/// One tar entry. `path` has no leading `/` and no trailing `/`, as raw bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// In-image path, relative to the root.
    pub path: Vec<u8>,
    /// Permission bits (no file-type bits).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// What it is.
    pub kind: Kind,
}

impl Entry {
    /// A directory entry.
    pub fn dir(path: Vec<u8>, mode: u32, uid: u32, gid: u32) -> Entry {
        Entry {
            path,
            mode,
            uid,
            gid,
            kind: Kind::Dir,
        }
    }
}

/// Join an in-image directory (no leading `/`, may be empty) and a relative path.
pub fn join(dir: &[u8], rel: &[u8]) -> Vec<u8> {
    if dir.is_empty() {
        rel.to_vec()
    } else if rel.is_empty() {
        dir.to_vec()
    } else {
        let mut v = Vec::with_capacity(dir.len() + 1 + rel.len());
        v.extend_from_slice(dir);
        v.push(b'/');
        v.extend_from_slice(rel);
        v
    }
}

/// Directory entries for every ancestor of `path` (not `path` itself), root first.
pub fn ancestors(path: &[u8]) -> Vec<Vec<u8>> {
    path.iter()
        .enumerate()
        .filter(|&(_, &b)| b == b'/')
        .map(|(i, _)| path[..i].to_vec())
        .collect()
}

/// Normalize a source mode so the umask and the builder's habits do not leak into the image:
/// 0755 when any execute bit is set, else 0644 — unless the spec fixes a mode.
pub fn file_mode(source_mode: u32, fixed: Option<u32>) -> u32 {
    fixed.unwrap_or(if source_mode & 0o111 != 0 {
        0o755
    } else {
        0o644
    })
}

/// Sort by path bytes (parents before children) and refuse two entries at the same path.
pub fn sort_and_check(entries: &mut Vec<Entry>) -> Result<(), Vec<u8>> {
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    // Implicit parent dirs may be listed twice (e.g. a zip's own dir entry): keep the first dir.
    let mut out: Vec<Entry> = Vec::with_capacity(entries.len());
    for e in entries.drain(..) {
        if let Some(prev) = out.last()
            && prev.path == e.path
        {
            if prev.kind == Kind::Dir && e.kind == Kind::Dir {
                continue;
            }
            return Err(e.path);
        }
        out.push(e);
    }
    *entries = out;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ancestors_of_a_path() {
        assert_eq!(
            ancestors(b"var/task/a"),
            vec![b"var".to_vec(), b"var/task".to_vec()]
        );
        assert!(ancestors(b"a").is_empty());
    }

    #[test]
    fn modes_normalize_on_the_exec_bit() {
        assert_eq!(file_mode(0o600, None), 0o644);
        assert_eq!(file_mode(0o664, None), 0o644);
        assert_eq!(file_mode(0o700, None), 0o755);
        assert_eq!(file_mode(0o775, None), 0o755);
        assert_eq!(file_mode(0o775, Some(0o600)), 0o600);
    }

    #[test]
    fn duplicates_are_refused_but_repeated_dirs_merge() {
        let f = |p: &str| Entry {
            path: p.into(),
            mode: 0o644,
            uid: 0,
            gid: 0,
            kind: Kind::File {
                size: 0,
                data: Data::Empty,
            },
        };
        let mut v = vec![
            f("b"),
            Entry::dir(b"a".to_vec(), 0o755, 0, 0),
            Entry::dir(b"a".to_vec(), 0o700, 0, 0),
        ];
        sort_and_check(&mut v).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].mode, 0o755);
        let mut v = vec![f("x"), f("x")];
        assert_eq!(sort_and_check(&mut v).unwrap_err(), b"x".to_vec());
    }
}
