//! A layer's content key: what the layer's bytes depend on, and nothing else. Two checkouts of
//! the same project in different directories, with other modification times and inodes, get the
//! same key; any change to what goes into the tar (a path, kind, mode, owner, link target, a
//! file's bytes) or to an option that changes the layer's bytes gives another.
//!
//! The key is computed from the normalized entry list exactly as the tar writer gets it, plus a
//! BLAKE3 hash of every file's bytes (hashed in parallel: BLAKE3 reads faster than the disk on
//! a warm page cache, and the key stays much cheaper than tarring and compressing). BLAKE3 is
//! only the cache's lookup key: the blob a key leads to is still addressed and verified by its
//! sha256 digest.

use std::fs::File;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::entry::{Data, Entry, Kind};
use super::{LayerOptions, LayerSpec};
use crate::error::{Error, IoContext, Result};

/// Bump when the meaning of a key changes (what is hashed, or how).
const KEY_VERSION: &str = "lamina-content-key-v1";

/// The media type of every layer lamina builds: part of the key, so that a future change of
/// compression never reuses a gzip layer.
const MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// The content key of a layer: `b3:` and 64 hex digits.
///
/// `entries` are the layer's entries after normalization (and `--fix-permissions`), `zips` the
/// archives the entries' bytes come from when the source is a .zip or wheels (hashed whole), `l` the
/// layer's spec (its destination and excludes are hashed too, although the entries already
/// reflect them) and `opts` the options of the build.
pub fn content_key(
    entries: &[Entry],
    zips: &[&Path],
    l: &LayerSpec,
    opts: &LayerOptions,
) -> Result<String> {
    // Each file with the bytes the tar takes from it (its size when collected); a zip whole.
    let files: Vec<(&Path, Option<u64>)> = entries
        .iter()
        .filter_map(|e| match &e.kind {
            Kind::File {
                data: Data::Path(p),
                size,
            } => Some((p.as_path(), Some(*size))),
            _ => None,
        })
        .chain(zips.iter().map(|z| (*z, None)))
        .collect();
    let hashes = hash_files(&files)?;
    let mut hashes = hashes.into_iter();

    let mut h = blake3::Hasher::new();
    let mut field = |b: &[u8]| {
        h.update(&(b.len() as u64).to_le_bytes());
        h.update(b);
    };
    field(KEY_VERSION.as_bytes());
    field(super::cache::FORMAT.as_bytes());
    field(MEDIA_TYPE.as_bytes());
    field(&opts.mtime.to_le_bytes());
    field(&opts.compression_level.to_le_bytes());
    field(&[opts.fix_permissions as u8]);
    field(l.dest.as_bytes());
    for x in &l.exclude {
        field(x.as_bytes());
    }
    field(b"entries");
    for e in entries {
        field(&e.path);
        field(&e.mode.to_le_bytes());
        field(&e.uid.to_le_bytes());
        field(&e.gid.to_le_bytes());
        match &e.kind {
            Kind::Dir => field(b"d"),
            Kind::Symlink(t) => {
                field(b"s");
                field(t);
            }
            Kind::HardLink(t) => {
                field(b"h");
                field(t);
            }
            Kind::File { size, data } => {
                field(b"f");
                field(&size.to_le_bytes());
                match data {
                    Data::Empty => field(b"e"),
                    Data::Zip(i) => {
                        field(b"z");
                        field(&(*i as u64).to_le_bytes());
                    }
                    Data::Path(_) => {
                        field(b"p");
                        let fh = hashes.next().expect("one hash per file");
                        field(fh.as_bytes());
                    }
                }
            }
        }
    }
    for _ in zips {
        field(b"zip");
        let zh = hashes.next().expect("the zip's hash");
        field(zh.as_bytes());
    }
    Ok(format!("b3:{}", h.finalize().to_hex()))
}

/// The read buffer of each hashing thread: most source files (and every file of the bench
/// function) fit, so a file costs one `read`.
const BUF: usize = 256 << 10;

/// BLAKE3 of each file, in order, on up to `available_parallelism` threads: large files are
/// hashed by one thread each (reading is the bottleneck), small ones spread over the threads.
fn hash_files(files: &[(&Path, Option<u64>)]) -> Result<Vec<blake3::Hash>> {
    in_parallel(
        files,
        || vec![0u8; BUF],
        |buf, (p, size)| hash_file(p, *size, buf),
    )
}

/// `f` over every item, in order, on up to `available_parallelism` threads (each with its own
/// scratch from `scratch`), items handed out one at a time; the first error wins. For work
/// per file (hashing, stat calls) where the file system, not the CPU, sets the pace.
pub(super) fn in_parallel<I: Sync, T: Send, S>(
    items: &[I],
    scratch: impl Fn() -> S + Sync,
    f: impl Fn(&mut S, &I) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(items.len().max(1));
    let next = AtomicUsize::new(0);
    let out: Mutex<Vec<Option<Result<T>>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                let mut mine = scratch();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    let r = f(&mut mine, item);
                    out.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
                }
            });
        }
    });
    out.into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(Error::Internal("an item was not processed".into()))))
        .collect()
}

/// BLAKE3 of the first `size` bytes of `p` (all of it when `None`): what the tar writer takes
/// from it. Four system calls for a file that fits the buffer (open, fstat, read, close): the
/// number of files, not their bytes, is what a source tree's key costs on a warm page cache.
fn hash_file(p: &Path, size: Option<u64>, buf: &mut [u8]) -> Result<blake3::Hash> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    // Only a regular file: a named pipe put in place of a source file must not block the key
    // (opened non-blocking, then checked; reads of a regular file never block, so the flag
    // can stay).
    let mut f: File = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(p)
        .at("opening", p)?;
    let meta = f.metadata().at("reading", p)?;
    if !meta.is_file() {
        let kind = crate::image::blob::kind_of(meta.file_type());
        let why = format!("{} is {kind}, not a regular file", p.display());
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, why)).at("opening", p);
    }
    let mut left = size.unwrap_or(meta.len());
    let mut h = blake3::Hasher::new();
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = f.read(&mut buf[..want]).at("reading", p)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        left -= n as u64;
    }
    if size.is_none() {
        // A zip is hashed whole, even one that grew since it was looked at.
        loop {
            let n = f.read(buf).at("reading", p)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
    }
    Ok(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::source;

    fn spec(dir: &Path) -> LayerSpec {
        LayerSpec {
            source: dir.to_owned(),
            dest: "/var/task".into(),
            exclude: vec![],
            mode: None,
            dir_mode: None,
            uid: 0,
            gid: 0,
            wheels: false,
        }
    }

    fn key_of(dir: &Path, opts: &LayerOptions) -> String {
        let l = spec(dir);
        let c = source::collect(&l).unwrap();
        content_key(&c.entries, &[], &l, opts).unwrap()
    }

    const OPTS: LayerOptions = LayerOptions {
        mtime: 0,
        compression_level: 6,
        fix_permissions: false,
    };

    /// Same content in another directory with another mtime: the same key. One byte changed,
    /// or another option: another key.
    #[test]
    fn the_key_follows_content_not_place_or_time() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        for d in [a.path(), b.path()] {
            std::fs::create_dir(d.join("lib")).unwrap();
            std::fs::write(d.join("lib/x.py"), b"print(1)\n").unwrap();
            std::fs::write(d.join("app.py"), b"import x\n").unwrap();
        }
        let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        File::options()
            .write(true)
            .open(b.path().join("app.py"))
            .unwrap()
            .set_modified(old)
            .unwrap();
        assert_eq!(key_of(a.path(), &OPTS), key_of(b.path(), &OPTS));
        let other_level = LayerOptions {
            compression_level: 9,
            ..OPTS
        };
        assert_ne!(key_of(a.path(), &OPTS), key_of(a.path(), &other_level));
        std::fs::write(b.path().join("lib/x.py"), b"print(2)\n").unwrap();
        assert_ne!(key_of(a.path(), &OPTS), key_of(b.path(), &OPTS));
    }
}
