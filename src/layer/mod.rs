//! Building layers: inputs → sorted entries → deterministic tar → gzip → blob file, with the
//! uncompressed (diff_id) and compressed digests computed in the same single streaming pass.

pub mod cache;
pub mod compress;
mod deflate_scan;
pub mod entry;
pub mod fix;
pub mod key;
pub mod own;
pub mod source;
pub mod spec;
pub mod tar;
pub mod zip;

pub use spec::{LayerSpec, Mode, image_path};

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use crate::digest::{Digest, HashingWriter};
use crate::error::{Error, IoContext, Result};
use entry::Entry;
use source::Input;

/// A layer written to a blob store: its file and the digests the manifest and config need.
#[derive(Clone, Debug)]
pub struct LayerBlob {
    /// Digest of the gzip bytes (the manifest's descriptor).
    pub digest: Digest,
    /// Digest of the uncompressed tar (the config's `rootfs.diff_ids`).
    pub diff_id: Digest,
    /// Size of the gzip bytes.
    pub size: u64,
    /// The blob file (named by the digest's hex in its blob directory).
    pub path: PathBuf,
}

/// Settings that change a layer's bytes (besides its entries).
#[derive(Clone, Copy, Debug)]
pub struct LayerOptions {
    /// The mtime of every entry, seconds since the epoch.
    pub mtime: u64,
    /// Gzip level, 0 (store) to 9.
    pub compression_level: u32,
    /// Open up modes under /var/task and /opt (`--fix-permissions`).
    pub fix_permissions: bool,
}

/// Where a layer of a build came from (`--json`'s `source`, and the progress lines).
#[derive(serde::Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Provenance {
    /// Tarred and compressed by this build.
    Built,
    /// Taken from the local layer cache (by file stamps, or by content key).
    LocalCache,
    /// Found by its content key in the registry cache (`--cache`).
    RegistryCache,
}

impl Provenance {
    /// How a progress line says it.
    pub fn word(self) -> &'static str {
        match self {
            Provenance::Built => "built",
            Provenance::LocalCache => "local cache",
            Provenance::RegistryCache => "registry cache",
        }
    }
}

/// Looks a content key up in a shared cache (the registry cache): the layer, its blob made
/// available where the build needs it (in `blobs`, or in the destination registry), or `None`.
pub type Remote<'a> = &'a (dyn Fn(&str, &Path) -> Option<LayerBlob> + Sync);

/// How [`build_with`] may avoid building: the local cache, a shared cache, and whether a hit
/// is rebuilt and compared (`--cache-verify`).
pub struct How<'a> {
    /// The local layer cache.
    pub cache: Option<&'a cache::LayerCache>,
    /// The registry cache's lookup.
    pub remote: Option<Remote<'a>>,
    /// Rebuild every layer a content key found and fail if the bytes differ.
    pub verify: bool,
    /// Counts the regular files of a layer being built, each once its bytes are in the tar
    /// (progress shows it); untouched when a cache has the layer.
    pub files: Option<&'a std::sync::atomic::AtomicU64>,
}

/// A layer of a build, where it came from, and its content key (when one was computed).
pub struct Got {
    /// The layer.
    pub blob: LayerBlob,
    /// Built, local cache or registry cache.
    pub provenance: Provenance,
    /// Its content key (computed for every layer when there is a remote cache).
    pub key: Option<String>,
}

/// Build the layer for one `[[layer]]` into `blobs` (a `blobs/sha256` directory), unless a
/// cache has it: the stat-keyed local cache first (no file is read), then
/// the content key in the local cache, then in `how.remote`; built only when all miss. `tee`
/// is asked for only when the layer is actually built: it then gets the compressed bytes as
/// they are written (a registry push streams them).
pub fn build_with(
    l: &LayerSpec,
    opts: LayerOptions,
    blobs: &Path,
    skip: &[(u64, u64)],
    tee: &mut dyn FnMut() -> Option<Tee>,
    how: &How,
) -> Result<Got> {
    let mut c = source::collect_skipping(l, skip)?;
    if opts.fix_permissions {
        fix::fix_permissions(&mut c.entries);
    }
    let zip_paths: Vec<PathBuf> = match &c.input {
        Input::Zip(z) => z.paths().into_iter().map(Path::to_path_buf).collect(),
        Input::Files => Vec::new(),
    };
    let zip: Vec<&Path> = zip_paths.iter().map(PathBuf::as_path).collect();
    let stat_key = match how.cache {
        Some(_) => Some(cache::LayerCache::key(&c.entries, &zip, &c.stamps, &opts)?),
        None => None,
    };
    if let (Some(cache), Some(k)) = (how.cache, &stat_key)
        && !how.verify
        && let Some(hit) = cache.get(k, blobs)
    {
        return Ok(Got {
            blob: hit,
            provenance: Provenance::LocalCache,
            key: None,
        });
    }
    // The content key reads every file once more: worth it when it can find the layer (or,
    // with a registry cache, record it), not for a `--no-cache` build that could only record it.
    let lookup = how.cache.is_some_and(|c| !c.is_refreshing()) || how.remote.is_some();
    let content = match lookup {
        true => Some(key::content_key(&c.entries, &zip, l, &opts)?),
        false => None,
    };
    let mut found = None;
    if let Some(k) = &content {
        if let Some(hit) = how.cache.and_then(|cache| cache.get(k, blobs)) {
            found = Some((hit, Provenance::LocalCache));
        } else if let Some(hit) = how.remote.and_then(|r| r(k, blobs)) {
            found = Some((hit, Provenance::RegistryCache));
        }
    }
    let remember = |b: &LayerBlob| {
        if let Some(cache) = how.cache {
            stat_key
                .iter()
                .chain(&content)
                .for_each(|k| cache.put(k, b));
        }
    };
    if !how.verify
        && let Some((hit, provenance)) = found
    {
        remember(&hit);
        return Ok(Got {
            blob: hit,
            provenance,
            key: content,
        });
    }
    let mut input = c.input;
    let count = || {
        if let Some(n) = how.files {
            n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    };
    let built = gzip_blob(blobs, opts.compression_level, tee(), |w| {
        tar::write_tar_counting(&c.entries, &mut input, opts.mtime, w, &count).map(|_| ())
    })?;
    if let Some((hit, provenance)) = &found {
        same_bytes(l, hit, *provenance, content.as_deref(), &built)?;
    }
    remember(&built);
    Ok(Got {
        blob: built,
        provenance: Provenance::Built,
        key: content,
    })
}

/// `--cache-verify`: the layer a cache gave must be the one just built.
fn same_bytes(
    l: &LayerSpec,
    hit: &LayerBlob,
    provenance: Provenance,
    key: Option<&str>,
    built: &LayerBlob,
) -> Result<()> {
    if hit.digest == built.digest && hit.diff_id == built.diff_id {
        return Ok(());
    }
    Err(Error::image(
        format!("layer {}", l.source.display()),
        format!(
            "--cache-verify: the {} gave {} (diff_id {}) for content key {}, but building the layer gives {} (diff_id {}): the cache is wrong or was tampered with",
            provenance.word(),
            hit.digest,
            hit.diff_id,
            key.unwrap_or("?"),
            built.digest,
            built.diff_id
        ),
    ))
}

/// Build the whiteout layer that deletes `paths` (no leading `/`) from the base.
pub fn build_whiteouts(paths: &[String], opts: LayerOptions, blobs: &Path) -> Result<LayerBlob> {
    write_layer(&source::whiteouts(paths), Input::Files, opts, blobs)
}

/// Chunks handed from the tar thread to the compressing thread: the compressor's block size,
/// so that it takes them without copying.
const CHUNK: usize = compress::BLOCK;

/// A writer that ships full chunks to another thread.
struct ChunkSender {
    buf: Vec<u8>,
    tx: mpsc::SyncSender<Vec<u8>>,
}

impl Write for ChunkSender {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = CHUNK - self.buf.len();
        let n = data.len().min(room);
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.flush()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            let full = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
            self.tx
                .send(full)
                .map_err(|_| io::Error::other("the compressing thread stopped"))?;
        }
        Ok(())
    }
}

/// Write entries as a gzip tar blob into `blobs`.
pub fn write_layer(
    entries: &[Entry],
    mut input: Input,
    opts: LayerOptions,
    blobs: &Path,
) -> Result<LayerBlob> {
    gzip_blob(blobs, opts.compression_level, None, |w| {
        tar::write_tar(entries, &mut input, opts.mtime, w).map(|_| ())
    })
}

/// Gzip an existing uncompressed file (a docker-archive layer) into `blobs`.
pub fn gzip_file(src: &Path, blobs: &Path, level: u32) -> Result<LayerBlob> {
    gzip_blob(blobs, level, None, |w| {
        let f = File::open(src).at("opening", src)?;
        io::copy(&mut io::BufReader::with_capacity(1 << 20, f), w)
            .map(|_| ())
            .at("reading", src)
    })
}

/// Run `produce` (which writes the uncompressed stream) on this thread, while another thread
/// hands it to the parallel compressor (`compress`) and hashes its output into a blob file: the
/// stages overlap, and memory stays bounded by a few blocks whatever the layer size.
/// Receives a layer's compressed bytes as they are written (see [`build`]).
pub type Tee = Box<dyn FnMut(&[u8]) + Send>;

/// The blob file, with every byte written also handed to a tee.
struct TeeWriter<W> {
    inner: W,
    tee: Option<Tee>,
}

impl<W: Write> Write for TeeWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        if let Some(t) = &mut self.tee {
            t(&buf[..n]);
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The error of writing a layer blob into `blobs`, keeping the operating system's error (a
/// full disk reads "No space left on device") and naming the directory written to.
fn write_error(e: io::Error, blobs: &Path) -> Error {
    // The blob directory is inside the staging directory beside the destination.
    let dest = blobs
        .ancestors()
        .nth(3)
        .filter(|_| blobs.ends_with("blobs/sha256"))
        .unwrap_or(blobs);
    Error::Io {
        context: format!("writing a layer blob in {}", dest.display()),
        cause: e,
    }
}

fn gzip_blob(
    blobs: &Path,
    level: u32,
    tee: Option<Tee>,
    produce: impl FnOnce(&mut dyn Write) -> Result<()>,
) -> Result<LayerBlob> {
    let tmp =
        crate::staging::file_in(blobs, ".layer-").at("creating a temporary file in", blobs)?;
    let file = tmp.reopen().at("opening", tmp.path())?;
    let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(4);

    let compressor = std::thread::spawn(move || -> io::Result<(Digest, u64)> {
        let out = HashingWriter::new(TeeWriter {
            inner: BufWriter::with_capacity(1 << 20, file),
            tee,
        });
        let gz = compress::gzip(rx, level, compress::default_workers(), out)?;
        let (mut w, digest, size) = gz.finish();
        w.flush()?;
        Ok((digest, size))
    });

    let mut hw = HashingWriter::new(ChunkSender {
        buf: Vec::with_capacity(CHUNK),
        tx,
    });
    let produced = match produce(&mut hw) {
        Ok(()) => {
            let (mut sender, diff_id, _) = hw.finish();
            sender
                .flush()
                .ctx(|| "compressing layer".to_owned())
                .map(|()| diff_id)
        }
        Err(e) => {
            drop(hw);
            Err(e)
        }
    };
    // Whatever happened, the sender is dropped by now, so the compressor ends.
    let compressed = compressor
        .join()
        .map_err(|_| Error::Internal("the compressing thread panicked".into()))?
        .map_err(|e| write_error(e, blobs));
    // When the compressor failed (a full disk), the producer only saw it stop: its error is
    // the cause, and the one to report.
    let (digest, size) = compressed?;
    let diff_id = produced?;

    let path = blobs.join(digest.hex());
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o644))
        .at("setting permissions of", tmp.path())?;
    tmp.persist(&path).at("saving layer blob", &path)?;
    Ok(LayerBlob {
        digest,
        diff_id,
        size,
        path,
    })
}
