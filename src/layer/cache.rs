//! The local layer cache: a layer whose inputs have not changed is not tarred or compressed
//! again. The key covers every input and option that changes the layer's bytes: each entry's
//! path, kind, mode, ownership and link target; for file contents the source's size,
//! modification and change times (nanoseconds), inode and device; the timestamp, compression
//! level, and the layer format version. A hit links the cached blob into the build.
//!
//! That stat key is the fast first step: it reads no file. When it misses (a moved project, a
//! fresh clone, another checkout directory), the layer's content key ([`super::key`]: the same
//! entries with each file's bytes hashed instead of stamped) is looked up in the same records,
//! so an unchanged layer still hits. Every layer built or found is recorded under both keys.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::entry::{Data, Entry, Kind};
use super::{LayerBlob, LayerOptions};
use crate::digest::Digest;
use crate::error::{IoContext, Result};

/// Bump when the bytes lamina writes for the same entries change (tar or compression format).
pub const FORMAT: &str = "lamina-layer-v2";

/// A directory of cache records, each mapping a layer key to a blob built before; the blob is
/// reused only while its file is untouched.
pub struct LayerCache {
    dir: PathBuf,
    /// `--no-cache`: never reuse a record, but still write one for every layer built, so the
    /// next unchanged build is fast again.
    refresh: bool,
}

/// A file's stamp: size, modification and change times, inode, device.
pub type Stamp = [u64; 7];

fn stamp(p: &Path) -> Result<Stamp> {
    let m = fs::metadata(p).at("reading metadata of", p)?;
    Ok(stamp_of(&m))
}

/// The stamp of a regular file's metadata.
pub fn stamp_of(m: &fs::Metadata) -> Stamp {
    [
        m.len(),
        m.mtime() as u64,
        m.mtime_nsec() as u64,
        m.ctime() as u64,
        m.ctime_nsec() as u64,
        m.ino(),
        m.dev(),
    ]
}

/// The stamps of the zips, then of the entries' files, in the order the key takes them: those
/// `known` (read by the source walk) as they are, the others with `stat` calls on all cores.
fn stamps(
    entries: &[Entry],
    zips: &[&Path],
    known: &std::collections::HashMap<std::path::PathBuf, Stamp>,
) -> Result<Vec<Stamp>> {
    let paths: Vec<&Path> = zips
        .iter()
        .copied()
        .chain(entries.iter().filter_map(|e| match &e.kind {
            Kind::File {
                data: Data::Path(p),
                ..
            } => Some(p.as_path()),
            _ => None,
        }))
        .collect();
    super::key::in_parallel(
        &paths,
        || (),
        |_, p| known.get(*p).map_or_else(|| stamp(p), |s| Ok(*s)),
    )
}

fn put_stamp(h: &mut Sha256, s: &Stamp) {
    for v in s {
        h.update(v.to_le_bytes());
    }
}

/// A cached blob file's identity: device, inode and modification time in nanoseconds.
fn file_stamp(m: &fs::Metadata) -> String {
    format!("{}:{}:{}.{}", m.dev(), m.ino(), m.mtime(), m.mtime_nsec())
}

impl LayerCache {
    /// The cache under `dir` (the same directory as the pull cache).
    pub fn new(dir: &Path) -> LayerCache {
        LayerCache {
            dir: dir.to_owned(),
            refresh: false,
        }
    }

    /// The cache under `dir` for a build that reuses nothing (`--no-cache`) but refreshes every
    /// record it builds: `get` always misses, `put` writes.
    pub fn refreshing(dir: &Path) -> LayerCache {
        LayerCache {
            dir: dir.to_owned(),
            refresh: true,
        }
    }

    /// Whether this cache reuses nothing (`--no-cache`).
    pub fn is_refreshing(&self) -> bool {
        self.refresh
    }

    /// The key of a layer: its entries and where their bytes come from (the stamps `known`
    /// from the source walk, the others read now), and the options.
    pub fn key(
        entries: &[Entry],
        zips: &[&Path],
        known: &std::collections::HashMap<std::path::PathBuf, Stamp>,
        opts: &LayerOptions,
    ) -> Result<String> {
        let stamped = stamps(entries, zips, known)?;
        let mut stamped = stamped.iter();
        let mut h = Sha256::new();
        h.update(FORMAT.as_bytes());
        h.update(env!("CARGO_PKG_VERSION").as_bytes());
        h.update(opts.mtime.to_le_bytes());
        h.update(opts.compression_level.to_le_bytes());
        for _ in zips {
            h.update(b"zip");
            put_stamp(&mut h, stamped.next().expect("a stamp per zip"));
        }
        for e in entries {
            h.update((e.path.len() as u64).to_le_bytes());
            h.update(&e.path);
            h.update(e.mode.to_le_bytes());
            h.update(e.uid.to_le_bytes());
            h.update(e.gid.to_le_bytes());
            match &e.kind {
                Kind::Dir => h.update(b"d"),
                Kind::Symlink(t) => {
                    h.update(b"s");
                    h.update((t.len() as u64).to_le_bytes());
                    h.update(t);
                }
                Kind::HardLink(t) => {
                    h.update(b"h");
                    h.update((t.len() as u64).to_le_bytes());
                    h.update(t);
                }
                Kind::File { size, data } => {
                    h.update(b"f");
                    h.update(size.to_le_bytes());
                    match data {
                        Data::Empty => h.update(b"e"),
                        Data::Zip(i) => {
                            h.update(b"z");
                            h.update((*i as u64).to_le_bytes());
                        }
                        Data::Path(_) => {
                            h.update(b"p");
                            put_stamp(&mut h, stamped.next().expect("a stamp per file"));
                        }
                    }
                }
            }
        }
        Ok(hex::encode(h.finalize()))
    }

    fn entry_path(&self, key: &str) -> PathBuf {
        // A content key reads `b3:hex`: one file name either way.
        self.dir.join("layers").join(key.replace(':', "-"))
    }

    fn blobs(&self) -> PathBuf {
        crate::cache::blobs(&self.dir)
    }

    /// The cached layer for `key`, linked into `blobs`, if it is there and whole.
    pub fn get(&self, key: &str, blobs: &Path) -> Option<LayerBlob> {
        if self.refresh {
            return None;
        }
        // A record is a few hundred bytes; only a regular file is opened (a named pipe in the
        // cache would block forever), and at most 64 KiB read.
        let bytes = crate::image::blob::read_capped(&self.entry_path(key), 64 << 10).ok()??;
        let rec: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        let digest: Digest = rec.get("digest")?.as_str()?.parse().ok()?;
        let diff_id: Digest = rec.get("diffId")?.as_str()?.parse().ok()?;
        let size = rec.get("size")?.as_u64()?;
        let cached = self.blobs().join(digest.hex());
        // The cached blob must be the file lamina wrote: same size, inode and mtime (a file
        // rewritten since, say by a disk problem or a stray tool, is rebuilt instead).
        let m = fs::metadata(&cached).ok()?;
        if m.len() != size || rec.get("stamp")?.as_str()? != file_stamp(&m) {
            return None;
        }
        crate::cache::link_blob(&cached, blobs, digest.hex()).ok()?;
        Some(LayerBlob {
            path: blobs.join(digest.hex()),
            digest,
            diff_id,
            size,
        })
    }

    /// Remember a freshly built layer. Failing to cache never fails the build.
    pub fn put(&self, key: &str, b: &LayerBlob) {
        let _ = self.try_put(key, b);
    }

    fn try_put(&self, key: &str, b: &LayerBlob) -> Result<()> {
        let blobs = self.blobs();
        fs::create_dir_all(&blobs).at("creating", &blobs)?;
        crate::cache::link_blob(&b.path, &blobs, b.digest.hex())?;
        let dir = self.dir.join("layers");
        fs::create_dir_all(&dir).at("creating", &dir)?;
        let tmp =
            crate::staging::file_in(&dir, ".layer-").at("creating a temporary file in", &dir)?;
        let m = fs::metadata(blobs.join(b.digest.hex())).at("reading metadata of", &blobs)?;
        let rec = serde_json::json!({
            "digest": b.digest.to_string(),
            "diffId": b.diff_id.to_string(),
            "size": b.size,
            "stamp": file_stamp(&m),
        });
        fs::write(
            tmp.path(),
            serde_json::to_vec(&rec).expect("JSON serializes"),
        )
        .at("writing", tmp.path())?;
        tmp.persist(&self.entry_path(key))
            .at("saving", &self.entry_path(key))?;
        Ok(())
    }
}
