//! A layer's bytes, go-containerregistry style: [`Layer::compressed`] opens the blob as stored,
//! [`Layer::uncompressed`] a verified tar stream whatever the stored form (gzip or plain tar;
//! a blob in a layout, the cache or an unpacked archive). Compression is decided here, by the
//! media type or, where there is none, by [`Compression::sniff`]; no caller looks at magic
//! bytes or media-type suffixes itself.

use std::cell::Cell;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use sha2::{Digest as _, Sha256};

use super::Layer;
use super::media::Compression;
use crate::digest::Digest;

thread_local! {
    /// How many gzip streams this thread has started to decompress: lets a test prove that a
    /// path (the push gate over a remembered base) decompresses nothing. Per thread, so tests
    /// running beside it do not count.
    static GUNZIPS: Cell<u64> = const { Cell::new(0) };
}

/// The number of gzip streams this thread has started to decompress (for tests that prove a
/// path decompresses nothing).
#[cfg(test)]
pub fn gunzips() -> u64 {
    GUNZIPS.with(Cell::get)
}

fn count_gunzip() {
    GUNZIPS.with(|c| c.set(c.get() + 1));
}

const BUF: usize = 1 << 20;

/// What a file that is not a regular file is, for messages.
pub(crate) fn kind_of(t: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_fifo() {
        "a named pipe"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else {
        "not a regular file"
    }
}

/// Open `path` for reading only if it is a regular file (following symbolic links). Every
/// file lamina reads from a layout, an archive or its cache is opened here: a named pipe
/// would block the open (or the read) forever, and a device has no end. The open itself does
/// not block (`O_NONBLOCK`, which then is cleared), and the type is checked on the opened
/// descriptor, so a file swapped in between cannot slip through. The error (kind
/// `InvalidInput`) names the file and what it is.
pub fn open_regular(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let t = f.metadata()?.file_type();
    if !t.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is {}, not a regular file", path.display(), kind_of(t)),
        ));
    }
    // Reads of a regular file never block; clear the flag anyway so the file behaves as
    // `File::open` would have returned it.
    let fd = std::os::fd::AsFd::as_fd(&f);
    let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL).map_err(io::Error::from)?;
    let flags = nix::fcntl::OFlag::from_bits_truncate(flags) & !nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFL(flags)).map_err(io::Error::from)?;
    Ok(f)
}

/// Read at most `cap` bytes of the regular file at `path` (see [`open_regular`]): `Ok(None)`
/// when it holds more. For small documents (JSON) whose size is bounded or declared: a lying
/// descriptor or a huge (sparse) file costs at most `cap + 1` bytes of memory.
pub fn read_capped(path: &Path, cap: u64) -> io::Result<Option<Vec<u8>>> {
    let f = open_regular(path)?;
    let mut bytes = Vec::with_capacity(f.metadata()?.len().min(cap + 1) as usize);
    f.take(cap.saturating_add(1)).read_to_end(&mut bytes)?;
    Ok((bytes.len() as u64 <= cap).then_some(bytes))
}

/// Open `path` for reading, naming the blob in the error as the verification messages do.
fn open_blob(path: &Path, digest: &Digest) -> io::Result<File> {
    open_regular(path).map_err(|e| {
        io::Error::new(
            e.kind(),
            if e.kind() == io::ErrorKind::NotFound {
                format!("blob {digest} is missing ({})", path.display())
            } else if e.kind() == io::ErrorKind::InvalidInput {
                format!("blob {digest}: {e}")
            } else {
                format!("blob {digest}: cannot open {}: {e}", path.display())
            },
        )
    })
}

/// The compression of the blob at `path`, from its first bytes (`partial.CompressedToLayer`'s
/// peek): for stores that name no media type, such as a `docker save` archive.
pub fn sniff_file(path: &Path) -> io::Result<Compression> {
    let mut r = BufReader::with_capacity(16, open_regular(path)?);
    Ok(Compression::sniff(r.fill_buf()?))
}

/// An uncompressed tar stream over a compressed (or plain) reader `r`, unverified: for bytes
/// whose digests are checked elsewhere (a layer being written).
pub fn decompress<'a, R: BufRead + Send + 'a>(
    r: R,
    c: Compression,
) -> io::Result<Box<dyn Read + Send + 'a>> {
    match c {
        Compression::None => Ok(Box::new(r)),
        Compression::Gzip => {
            count_gunzip();
            Ok(Box::new(flate2::bufread::MultiGzDecoder::new(r)))
        }
        Compression::Zstd => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "zstd layers cannot be read by lamina",
        )),
    }
}

/// Hashes and counts what passes through it, keeping the hasher reachable (unlike
/// [`crate::digest::HashingReader`]) so the digest can be read once the stream ends.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    len: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Hashing<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }
    fn consume(&mut self, n: usize) {
        if let Ok(b) = self.inner.fill_buf() {
            self.hasher.update(&b[..n.min(b.len())]);
        }
        self.len += n as u64;
        self.inner.consume(n);
    }
}

type Stored = Hashing<BufReader<File>>;

/// The decoder over the stored bytes, with the stored bytes' hasher inside.
enum Decoder {
    Plain(Stored),
    Gzip(Box<flate2::bufread::MultiGzDecoder<Stored>>),
}

impl Decoder {
    fn stored(&mut self) -> &mut Stored {
        match self {
            Decoder::Plain(s) => s,
            Decoder::Gzip(g) => g.get_mut(),
        }
    }
}

/// A layer's uncompressed stream that checks, when it ends, the stored bytes against the
/// layer's digest and size and the uncompressed bytes against its diff_id: a mismatch is an
/// `InvalidData` error from the read that reaches the end (and every read after it), so a
/// reader that consumes the whole stream has consumed verified content.
pub struct Uncompressed {
    decoder: Decoder,
    hasher: Sha256,
    len: u64,
    digest: Digest,
    size: u64,
    diff_id: Digest,
    /// Set once the end was reached (or decoding failed).
    verdict: Option<Verdict>,
}

impl Uncompressed {
    fn finish(&mut self) -> Verdict {
        match self.check_end() {
            Ok(()) => Verdict::Verified,
            Err(m) => Verdict::Failed(m),
        }
    }

    /// The checks at the end of the stream; the error is the message to give.
    fn check_end(&mut self) -> Result<(), String> {
        let digest = &self.digest;
        // A gzip decoder may stop before the end of the file: hash what remains.
        let stored = self.decoder.stored();
        io::copy(stored, &mut io::sink()).map_err(|e| format!("reading blob {digest}: {e}"))?;
        let actual = Digest::of_hasher(stored.hasher.clone());
        if stored.len != self.size {
            return Err(format!(
                "blob {digest} has {} bytes but its descriptor says {}",
                stored.len, self.size
            ));
        }
        if &actual != digest {
            return Err(format!(
                "blob {digest} does not match its content (sha256 is {actual}): the image is corrupt"
            ));
        }
        let got = Digest::of_hasher(self.hasher.clone());
        if got != self.diff_id {
            return Err(format!(
                "layer {digest} uncompresses to {got}, but the config's rootfs.diff_ids says {}",
                self.diff_id
            ));
        }
        Ok(())
    }
}

/// How a stream ended.
enum Verdict {
    Verified,
    /// The message to give on every read from now on.
    Failed(String),
}

impl Verdict {
    /// What a read at the end returns.
    fn result(&self) -> io::Result<usize> {
        match self {
            Verdict::Verified => Ok(0),
            Verdict::Failed(m) => Err(invalid(m)),
        }
    }
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_owned())
}

impl Read for Uncompressed {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(v) = &self.verdict {
            return v.result();
        }
        let n = match &mut self.decoder {
            Decoder::Plain(s) => s.read(buf),
            Decoder::Gzip(g) => g.read(buf).map_err(|e| {
                let m = format!("layer {} is not a valid gzip stream: {e}", self.digest);
                self.verdict = Some(Verdict::Failed(m.clone()));
                invalid(&m)
            }),
        }?;
        if n == 0 && !buf.is_empty() {
            let v = self.finish();
            let out = v.result();
            self.verdict = Some(v);
            return out;
        }
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
}

impl Layer {
    /// How the blob is stored: from the media type, else (a type that names no compression)
    /// from its first bytes.
    pub fn compression(&self) -> io::Result<Compression> {
        match Compression::of_media_type(&self.media_type) {
            Some(c) => Ok(c),
            None => sniff_file(&self.path),
        }
    }

    /// The blob as stored (what a registry receives).
    pub fn compressed(&self) -> io::Result<File> {
        open_blob(&self.path, &self.digest)
    }

    /// The layer as a tar stream, verified against digest, size and diff_id as it ends (see
    /// [`Uncompressed`]). A zstd layer is an `Unsupported` error.
    pub fn uncompressed(&self) -> io::Result<Uncompressed> {
        let c = self.compression()?;
        let f = self.compressed()?;
        let actual = f.metadata()?.len();
        if actual != self.size {
            return Err(invalid(&format!(
                "blob {} has {actual} bytes but its descriptor says {}",
                self.digest, self.size
            )));
        }
        let stored = Hashing {
            inner: BufReader::with_capacity(BUF, f),
            hasher: Sha256::new(),
            len: 0,
        };
        let decoder = match c {
            Compression::None => Decoder::Plain(stored),
            Compression::Gzip => {
                count_gunzip();
                Decoder::Gzip(Box::new(flate2::bufread::MultiGzDecoder::new(stored)))
            }
            Compression::Zstd => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!(
                        "layer {} is zstd-compressed: lamina cannot read it",
                        self.digest
                    ),
                ));
            }
        };
        Ok(Uncompressed {
            decoder,
            hasher: Sha256::new(),
            len: 0,
            digest: self.digest.clone(),
            size: self.size,
            diff_id: self.diff_id.clone(),

            verdict: None,
        })
    }

    /// Check the blob: digest and size, and (for a tar layer lamina can read) its diff_id.
    /// A zstd layer has only its stored digest checked. The error's text is the message to
    /// show.
    pub fn verify(&self) -> io::Result<()> {
        match self.uncompressed() {
            Ok(mut u) => io::copy(&mut u, &mut io::sink()).map(|_| ()),
            Err(e) if e.kind() == io::ErrorKind::Unsupported => self.verify_stored(),
            Err(e) => Err(e),
        }
    }

    /// Check only the stored bytes against digest and size.
    fn verify_stored(&self) -> io::Result<()> {
        let f = self.compressed()?;
        let actual = f.metadata()?.len();
        if actual != self.size {
            return Err(invalid(&format!(
                "blob {} has {actual} bytes but its descriptor says {}",
                self.digest, self.size
            )));
        }
        let (d, n) = crate::digest::hash_reader(BufReader::with_capacity(BUF, f))
            .map_err(|e| invalid(&format!("reading blob {}: {e}", self.digest)))?;
        if n != self.size {
            return Err(invalid(&format!(
                "blob {} has {n} bytes but its descriptor says {}",
                self.digest, self.size
            )));
        }
        if d != self.digest {
            return Err(invalid(&format!(
                "blob {} does not match its content (sha256 is {d}): the image is corrupt",
                self.digest
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::Origin;
    use oci_spec::image::MediaType;
    use std::io::Write;

    fn layer(dir: &Path, bytes: &[u8], gzip: bool, tar: &[u8]) -> Layer {
        let path = dir.join("blob");
        std::fs::write(&path, bytes).unwrap();
        Layer {
            media_type: if gzip {
                MediaType::ImageLayerGzip
            } else {
                MediaType::ImageLayer
            },
            digest: Digest::of(bytes),
            size: bytes.len() as u64,
            diff_id: Digest::of(tar),
            path,
            origin: Origin::Base,
            from: None,
        }
    }

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn verified_stream_of_gzip_and_plain() {
        let dir = tempfile::tempdir().unwrap();
        let tar = b"not really a tar, but bytes".repeat(100);
        for gzip in [true, false] {
            let stored = if gzip { gz(&tar) } else { tar.clone() };
            let l = layer(dir.path(), &stored, gzip, &tar);
            let mut out = Vec::new();
            l.uncompressed().unwrap().read_to_end(&mut out).unwrap();
            assert_eq!(out, tar);
            l.verify().unwrap();
        }
    }

    #[test]
    fn a_wrong_diff_id_or_digest_fails_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let tar = b"abc".repeat(1000);
        let mut l = layer(dir.path(), &gz(&tar), true, b"other");
        let e = l.verify().unwrap_err().to_string();
        assert!(e.contains("uncompresses to"), "{e}");
        l.diff_id = Digest::of(&tar);
        l.digest = Digest::of(b"x");
        let e = l.verify().unwrap_err().to_string();
        assert!(e.contains("does not match its content"), "{e}");
    }

    /// A named pipe (in a layout, an archive or the cache) is refused at once, never waited
    /// on; so is a directory. Capped reads stop at the cap.
    #[test]
    fn only_regular_files_are_opened() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        let e = open_regular(&fifo).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        let m = e.to_string();
        assert!(
            m.contains("named pipe") && m.contains(&fifo.display().to_string()),
            "{m}"
        );
        let e = open_regular(dir.path()).unwrap_err().to_string();
        assert!(e.contains("a directory"), "{e}");
        // The file-system index cache refuses it too (as no index).
        assert!(read_capped(&fifo, 10).is_err());
        let f = dir.path().join("f");
        std::fs::write(&f, b"0123456789").unwrap();
        assert_eq!(
            read_capped(&f, 10).unwrap().as_deref(),
            Some(&b"0123456789"[..])
        );
        assert_eq!(read_capped(&f, 9).unwrap(), None);
        let mut s = String::new();
        open_regular(&f).unwrap().read_to_string(&mut s).unwrap();
        assert_eq!(s, "0123456789");
    }

    #[test]
    fn compression_without_a_media_type_is_sniffed() {
        let dir = tempfile::tempdir().unwrap();
        let tar = b"plain".repeat(10);
        let mut l = layer(dir.path(), &gz(&tar), true, &tar);
        l.media_type = MediaType::Other("application/octet-stream".into());
        assert_eq!(l.compression().unwrap(), Compression::Gzip);
        l.verify().unwrap();
    }
}
