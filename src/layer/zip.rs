//! A deterministic zip writer, written by hand so every byte is chosen: entries in the order
//! given, one DOS timestamp for all, no extra fields (no extended timestamps, no uid/gid), no
//! data descriptors, "version made by" Unix so the external attributes carry Unix modes.
//! File data is streamed (deflated or stored) and the local header patched afterwards, so
//! the output must be seekable; nothing but the central directory is kept in memory.
//!
//! Also here: [`duplicate_name`], which reads a zip's central directory for the name that
//! appears twice (the `zip` crate keeps one of them silently).

use std::collections::HashSet;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

use flate2::Compression;
use flate2::write::DeflateEncoder;

const LOCAL_SIG: u32 = 0x0403_4b50;
const CENTRAL_SIG: u32 = 0x0201_4b50;
const END_SIG: u32 = 0x0605_4b50;
const ZIP64_END_SIG: u32 = 0x0606_4b50;
const ZIP64_LOCATOR_SIG: u32 = 0x0706_4b50;

/// "Version made by": high byte 3 (Unix: external attributes hold `st_mode << 16`), low byte
/// 2.0 of the specification (deflate, directories).
const MADE_BY: u16 = (3 << 8) | 20;
/// Version needed to extract: 2.0 (deflate and directories).
const NEEDED: u16 = 20;
/// Version needed for the zip64 end records (4.5).
const NEEDED_ZIP64: u16 = 45;
/// General purpose flag bit 11: the name is UTF-8.
const FLAG_UTF8: u16 = 1 << 11;
const STORED: u16 = 0;
const DEFLATED: u16 = 8;
/// MS-DOS directory attribute, set beside the Unix mode as Info-ZIP does.
const DOS_DIR: u32 = 0x10;

const S_IFREG: u32 = 0o100000;
const S_IFDIR: u32 = 0o040000;
const S_IFLNK: u32 = 0o120000;

/// The earliest instant a DOS date holds: 1980-01-01T00:00:00Z.
pub const DOS_EPOCH: u64 = 315_532_800;
/// The latest: 2107-12-31T23:59:58Z.
pub const DOS_END: u64 = 4_354_819_198;

/// What one entry holds.
pub enum Body<'a> {
    /// A directory (no data).
    Dir,
    /// A regular file: its content and the size it must have (a source that ends early or
    /// goes on is an error, never a corrupt archive).
    File(&'a mut dyn Read, u64),
    /// A symbolic link: its target, stored as the content (mode `0o120777`).
    Symlink(&'a [u8]),
}

/// Seconds since the Unix epoch (UTC) as DOS `(time, date)`, clamped to what DOS dates hold
/// (1980 to 2107); odd seconds round down (DOS keeps two-second steps).
pub fn dos_datetime(secs: u64) -> (u16, u16) {
    let secs = secs.clamp(DOS_EPOCH, DOS_END);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = crate::image::civil_from_days(days);
    let time = ((rem / 3600) << 11) | (((rem % 3600) / 60) << 5) | ((rem % 60) / 2);
    let date = ((y as u64 - 1980) << 9) | (u64::from(m) << 5) | u64::from(d);
    (time as u16, date as u16)
}

/// Counts what goes through it.
struct Tally<W> {
    inner: W,
    count: u64,
}

impl<W: Write> Write for Tally<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes a zip archive entry by entry; [`finish`](ZipWriter::finish) writes the central
/// directory.
pub struct ZipWriter<W: Write + Seek> {
    out: W,
    /// Where the next local header goes (the bytes written so far).
    pos: u64,
    central: Vec<u8>,
    entries: u64,
    time: u16,
    date: u16,
    level: u32,
    /// Sum of the entries' uncompressed sizes.
    uncompressed: u64,
}

fn too_big(what: &str) -> io::Error {
    io::Error::other(format!(
        "{what} does not fit a zip without zip64 extensions (4 GiB); Lambda packages never need them"
    ))
}

fn u32_of(v: u64, what: &str) -> io::Result<u32> {
    u32::try_from(v)
        .ok()
        .filter(|&v| v != u32::MAX)
        .ok_or_else(|| too_big(what))
}

impl<W: Write + Seek> ZipWriter<W> {
    /// `out` must be positioned at its start (offsets are counted from there). Every entry
    /// gets the timestamp `mtime` (seconds since the Unix epoch, see [`dos_datetime`]);
    /// `level` 0 stores files, 1 to 9 deflates them.
    pub fn new(out: W, mtime: u64, level: u32) -> ZipWriter<W> {
        let (time, date) = dos_datetime(mtime);
        ZipWriter {
            out,
            pos: 0,
            central: Vec::new(),
            entries: 0,
            time,
            date,
            level: level.min(9),
            uncompressed: 0,
        }
    }

    /// Add one entry. `name` is the path inside the archive without a trailing `/` (added for
    /// directories); `mode` its permission bits (the file type bits are added here).
    pub fn add(&mut self, name: &[u8], mode: u32, body: Body) -> io::Result<()> {
        let mut name = name.to_vec();
        let (kind, method) = match &body {
            Body::Dir => {
                name.push(b'/');
                (S_IFDIR, STORED)
            }
            Body::File(_, 0) => (S_IFREG, STORED),
            Body::File(..) if self.level == 0 => (S_IFREG, STORED),
            Body::File(..) => (S_IFREG, DEFLATED),
            Body::Symlink(_) => (S_IFLNK, STORED),
        };
        let mode = match body {
            Body::Symlink(_) => 0o777,
            _ => mode & 0o7777,
        };
        if name.len() > usize::from(u16::MAX) {
            return Err(io::Error::other(format!(
                "the name `{}` is longer than a zip entry name can be",
                String::from_utf8_lossy(&name)
            )));
        }
        let flags = if !name.is_ascii() && std::str::from_utf8(&name).is_ok() {
            FLAG_UTF8
        } else {
            0
        };
        let offset = self.pos;
        // Local header; CRC and sizes are patched once the data is written.
        let h = self.local_header(&name, flags, method);
        self.out.write_all(&h)?;
        let data_start = offset + h.len() as u64;

        let (crc, size, compressed) = self.write_body(body, method)?;
        let csize = u32_of(compressed, "an entry")?;
        let usize_ = u32_of(size, "an entry")?;
        let end = data_start + compressed;
        u32_of(end, "the archive")?;
        let mut sizes = [0u8; 12];
        sizes[..4].copy_from_slice(&crc.to_le_bytes());
        sizes[4..8].copy_from_slice(&csize.to_le_bytes());
        sizes[8..].copy_from_slice(&usize_.to_le_bytes());
        if compressed != 0 || crc != 0 {
            self.out.seek(SeekFrom::Start(offset + 14))?;
            self.out.write_all(&sizes)?;
            self.out.seek(SeekFrom::Start(end))?;
        }
        self.pos = end;
        self.uncompressed += size;

        let external = ((kind | mode) << 16) | if kind == S_IFDIR { DOS_DIR } else { 0 };
        self.central_record(&name, flags, method, &sizes, external, offset);
        self.entries += 1;
        Ok(())
    }

    /// A local file header with zeros for the CRC and sizes (patched after the data).
    fn local_header(&self, name: &[u8], flags: u16, method: u16) -> Vec<u8> {
        let mut h = Vec::with_capacity(30 + name.len());
        h.extend_from_slice(&LOCAL_SIG.to_le_bytes());
        h.extend_from_slice(&NEEDED.to_le_bytes());
        h.extend_from_slice(&flags.to_le_bytes());
        h.extend_from_slice(&method.to_le_bytes());
        h.extend_from_slice(&self.time.to_le_bytes());
        h.extend_from_slice(&self.date.to_le_bytes());
        h.extend_from_slice(&[0; 12]); // crc, compressed size, uncompressed size
        h.extend_from_slice(&(name.len() as u16).to_le_bytes());
        h.extend_from_slice(&0u16.to_le_bytes()); // no extra field
        h.extend_from_slice(name);
        h
    }

    /// Write an entry's data; returns its CRC-32, size and compressed size.
    fn write_body(&mut self, body: Body, method: u16) -> io::Result<(u32, u64, u64)> {
        Ok(match body {
            Body::Dir => (0, 0, 0),
            Body::Symlink(target) => {
                self.out.write_all(target)?;
                let mut c = flate2::Crc::new();
                c.update(target);
                (c.sum(), target.len() as u64, target.len() as u64)
            }
            Body::File(r, size) => {
                let mut exact = crate::layer::entry::Exact::new(r, size);
                let mut data = flate2::CrcReader::new(&mut exact);
                let compressed = if method == DEFLATED {
                    let mut enc = DeflateEncoder::new(
                        Tally {
                            inner: &mut self.out,
                            count: 0,
                        },
                        Compression::new(self.level),
                    );
                    io::copy(&mut data, &mut enc)?;
                    enc.finish()?.count
                } else {
                    io::copy(&mut data, &mut self.out)?
                };
                let crc = data.crc().sum();
                if exact.grew()? {
                    return Err(io::Error::other(format!(
                        "it has more than the {size} bytes it had when the build started: it \
                         grew while being read"
                    )));
                }
                (crc, size, compressed)
            }
        })
    }

    /// Append the entry's central directory record (`sizes`: CRC, compressed, uncompressed).
    fn central_record(
        &mut self,
        name: &[u8],
        flags: u16,
        method: u16,
        sizes: &[u8; 12],
        external: u32,
        offset: u64,
    ) {
        let c = &mut self.central;
        c.extend_from_slice(&CENTRAL_SIG.to_le_bytes());
        c.extend_from_slice(&MADE_BY.to_le_bytes());
        c.extend_from_slice(&NEEDED.to_le_bytes());
        c.extend_from_slice(&flags.to_le_bytes());
        c.extend_from_slice(&method.to_le_bytes());
        c.extend_from_slice(&self.time.to_le_bytes());
        c.extend_from_slice(&self.date.to_le_bytes());
        c.extend_from_slice(sizes);
        c.extend_from_slice(&(name.len() as u16).to_le_bytes());
        c.extend_from_slice(&0u16.to_le_bytes()); // extra field length
        c.extend_from_slice(&0u16.to_le_bytes()); // comment length
        c.extend_from_slice(&0u16.to_le_bytes()); // disk number
        c.extend_from_slice(&0u16.to_le_bytes()); // internal attributes
        c.extend_from_slice(&external.to_le_bytes());
        // Checked to fit by `add`: the archive's end is below 4 GiB.
        c.extend_from_slice(&(offset as u32).to_le_bytes());
        c.extend_from_slice(name);
    }

    /// Write the central directory and the end records; returns the output and the archive's
    /// size. More than 65535 entries get the zip64 end records (and only them).
    pub fn finish(mut self) -> io::Result<(W, u64)> {
        let cd_start = self.pos;
        let cd_size = self.central.len() as u64;
        self.out.write_all(&self.central)?;
        let cd_end = cd_start + cd_size;
        u32_of(cd_end, "the archive")?;
        let mut e = Vec::with_capacity(22 + 76);
        if self.entries > 0xfffe {
            e.extend_from_slice(&ZIP64_END_SIG.to_le_bytes());
            e.extend_from_slice(&44u64.to_le_bytes()); // size of the rest of this record
            e.extend_from_slice(&MADE_BY_ZIP64.to_le_bytes());
            e.extend_from_slice(&NEEDED_ZIP64.to_le_bytes());
            e.extend_from_slice(&0u32.to_le_bytes()); // this disk
            e.extend_from_slice(&0u32.to_le_bytes()); // disk of the central directory
            e.extend_from_slice(&self.entries.to_le_bytes());
            e.extend_from_slice(&self.entries.to_le_bytes());
            e.extend_from_slice(&cd_size.to_le_bytes());
            e.extend_from_slice(&cd_start.to_le_bytes());
            e.extend_from_slice(&ZIP64_LOCATOR_SIG.to_le_bytes());
            e.extend_from_slice(&0u32.to_le_bytes());
            e.extend_from_slice(&cd_end.to_le_bytes());
            e.extend_from_slice(&1u32.to_le_bytes()); // total disks
        }
        let count = u16::try_from(self.entries)
            .ok()
            .filter(|&c| c != u16::MAX)
            .unwrap_or(u16::MAX);
        e.extend_from_slice(&END_SIG.to_le_bytes());
        e.extend_from_slice(&0u16.to_le_bytes());
        e.extend_from_slice(&0u16.to_le_bytes());
        e.extend_from_slice(&count.to_le_bytes());
        e.extend_from_slice(&count.to_le_bytes());
        e.extend_from_slice(&(cd_size as u32).to_le_bytes());
        e.extend_from_slice(&(cd_start as u32).to_le_bytes());
        e.extend_from_slice(&(MARK.len() as u16).to_le_bytes()); // comment length
        e.extend_from_slice(MARK);
        self.out.write_all(&e)?;
        self.out.flush()?;
        Ok((self.out, cd_end + e.len() as u64))
    }
}

/// The archive comment of every zip lamina writes: how a later run recognizes its own output
/// inside a source directory and leaves it out ([`written_by_lamina`]).
pub const MARK: &[u8] = b"written by lamina";

/// Is the file at `path` a zip lamina wrote (its end record carries [`MARK`] as the archive
/// comment)? Only a regular file whose name ends in `.zip` is opened, and only its last bytes
/// read; anything unreadable is not lamina's.
pub fn written_by_lamina(path: &Path, meta: &std::fs::Metadata) -> bool {
    let tail = 22 + MARK.len() as u64;
    let named_zip = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("zip"));
    if !named_zip || !meta.is_file() || meta.len() < tail {
        return false;
    }
    let mut buf = vec![0u8; tail as usize];
    let read = crate::image::blob::open_regular(path).and_then(|mut f| {
        f.seek(SeekFrom::End(-(tail as i64)))?;
        f.read_exact(&mut buf)
    });
    read.is_ok()
        && buf[..4] == END_SIG.to_le_bytes()
        && buf[20..22] == (MARK.len() as u16).to_le_bytes()
        && &buf[22..] == MARK
}

/// "Version made by" in the zip64 end record: Unix, 4.5.
const MADE_BY_ZIP64: u16 = (3 << 8) | 45;

/// Reads exactly `remaining` bytes, checksumming them; ending early is an error.
/// The first entry name a zip's central directory lists twice, if any. `None` also when the
/// directory cannot be walked (the zip reader reports that).
pub fn duplicate_name<R: Read + Seek>(r: &mut R) -> io::Result<Option<Vec<u8>>> {
    let len = r.seek(SeekFrom::End(0))?;
    let tail = len.min(22 + 0xffff);
    r.seek(SeekFrom::Start(len - tail))?;
    let mut buf = vec![0u8; tail as usize];
    r.read_exact(&mut buf)?;
    let Some(at) = (0..buf.len().saturating_sub(21))
        .rev()
        .find(|&i| buf[i..i + 4] == END_SIG.to_le_bytes())
    else {
        return Ok(None);
    };
    let le16 = |b: &[u8], i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
    let le32 = |b: &[u8], i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let count = le16(&buf, at + 10);
    let cd_start = le32(&buf, at + 16);
    if count == u16::MAX || cd_start == u32::MAX {
        return Ok(None); // zip64: rare enough, and the generic message still stands
    }
    r.seek(SeekFrom::Start(u64::from(cd_start)))?;
    let mut seen = HashSet::new();
    let mut fixed = [0u8; 46];
    for _ in 0..count {
        if r.read_exact(&mut fixed).is_err() || le32(&fixed, 0) != CENTRAL_SIG {
            return Ok(None);
        }
        let mut name = vec![0u8; usize::from(le16(&fixed, 28))];
        r.read_exact(&mut name)?;
        let skip = i64::from(le16(&fixed, 30)) + i64::from(le16(&fixed, 32));
        r.seek(SeekFrom::Current(skip))?;
        if !seen.insert(name.clone()) {
            return Ok(Some(name));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn dos_dates_clamp_to_1980_and_2107() {
        // 1980-01-01 00:00:00
        assert_eq!(dos_datetime(0), (0, (1 << 5) | 1));
        assert_eq!(dos_datetime(DOS_EPOCH), dos_datetime(0));
        // 2023-11-14T22:13:20Z
        let (t, d) = dos_datetime(1_700_000_000);
        assert_eq!(d, ((2023 - 1980) << 9) | (11 << 5) | 14);
        assert_eq!(t, (22 << 11) | (13 << 5) | 10);
        // odd seconds round down
        assert_eq!(dos_datetime(1_700_000_001), (t, d));
        let (_, d) = dos_datetime(u64::MAX);
        assert_eq!(d, (127 << 9) | (12 << 5) | 31);
    }

    fn build(level: u32) -> Vec<u8> {
        let mut z = ZipWriter::new(Cursor::new(Vec::new()), 1_700_000_000, level);
        z.add(b"bin", 0o755, Body::Dir).unwrap();
        let data = b"#!/bin/sh\necho hi\n".repeat(50);
        z.add(
            b"bin/run",
            0o755,
            Body::File(&mut &data[..], data.len() as u64),
        )
        .unwrap();
        z.add(b"empty", 0o644, Body::File(&mut io::empty(), 0))
            .unwrap();
        z.add(b"link", 0o644, Body::Symlink(b"bin/run")).unwrap();
        z.finish().unwrap().0.into_inner()
    }

    #[test]
    fn the_zip_crate_reads_what_we_write() {
        for level in [0, 6] {
            let bytes = build(level);
            let mut a = ::zip::ZipArchive::new(Cursor::new(&bytes)).unwrap();
            let names: Vec<_> = (0..a.len())
                .map(|i| String::from_utf8(a.by_index(i).unwrap().name_raw().to_vec()).unwrap())
                .collect();
            assert_eq!(names, ["bin/", "bin/run", "empty", "link"]);
            let mut f = a.by_index(1).unwrap();
            assert_eq!(f.unix_mode(), Some(0o100755));
            let mut s = String::new();
            f.read_to_string(&mut s).unwrap();
            assert_eq!(s, "#!/bin/sh\necho hi\n".repeat(50));
            drop(f);
            assert_eq!(a.by_index(0).unwrap().unix_mode(), Some(0o40755));
            assert_eq!(a.by_index(3).unwrap().unix_mode(), Some(0o120777));
            assert!(
                a.by_index(1)
                    .unwrap()
                    .extra_data()
                    .unwrap_or_default()
                    .is_empty()
            );
        }
        assert_eq!(build(6), build(6));
    }

    #[test]
    fn sources_that_change_size_are_errors() {
        let mut z = ZipWriter::new(Cursor::new(Vec::new()), 0, 6);
        let e = z
            .add(b"short", 0o644, Body::File(&mut &b"abc"[..], 5))
            .unwrap_err();
        assert!(e.to_string().contains("shrank"), "{e}");
        let mut z = ZipWriter::new(Cursor::new(Vec::new()), 0, 6);
        let e = z
            .add(b"long", 0o644, Body::File(&mut &b"abcdef"[..], 5))
            .unwrap_err();
        assert!(e.to_string().contains("grew"), "{e}");
    }

    #[test]
    fn more_than_65535_entries_get_zip64_end_records() {
        let mut z = ZipWriter::new(Cursor::new(Vec::new()), 0, 6);
        for i in 0..70_000 {
            z.add(
                format!("f{i:05}").as_bytes(),
                0o644,
                Body::File(&mut io::empty(), 0),
            )
            .unwrap();
        }
        let bytes = z.finish().unwrap().0.into_inner();
        let a = ::zip::ZipArchive::new(Cursor::new(&bytes)).unwrap();
        assert_eq!(a.len(), 70_000);
    }

    #[test]
    fn duplicate_names_are_found() {
        let bytes = build(6);
        assert_eq!(duplicate_name(&mut Cursor::new(&bytes)).unwrap(), None);
        let mut z = ZipWriter::new(Cursor::new(Vec::new()), 0, 6);
        z.add(b"a", 0o644, Body::Symlink(b"x")).unwrap();
        z.add(b"a", 0o644, Body::Symlink(b"y")).unwrap();
        let bytes = z.finish().unwrap().0.into_inner();
        assert_eq!(
            duplicate_name(&mut Cursor::new(&bytes)).unwrap(),
            Some(b"a".to_vec())
        );
    }
}
