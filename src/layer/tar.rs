//! A deterministic tar writer: ustar headers where they fit, PAX records only where needed,
//! no user or group names, one mtime for everything.

use std::io::{self, Read, Write};

use tar::{EntryType, Header};

use super::entry::{Data, Entry, Exact, Kind};
use super::source::Input;
use crate::error::{Error, IoContext, Result};

/// Largest value an ustar size field (11 octal digits) holds.
const USTAR_MAX_SIZE: u64 = 0o77777777777;
/// Largest uid/gid an ustar id field (7 octal digits) holds.
const USTAR_MAX_ID: u32 = 0o7777777;

/// Split a path into ustar `prefix` and `name`, if it fits.
fn ustar_split(path: &[u8]) -> Option<(&[u8], &[u8])> {
    if path.len() <= 100 {
        return Some((&[], path));
    }
    // The name part must be non-empty and at most 100 bytes, the prefix at most 155.
    let min = path.len().saturating_sub(101);
    (min..path.len().min(156))
        .find(|&i| path[i] == b'/' && path.len() - i - 1 <= 100 && i > 0)
        .map(|i| (&path[..i], &path[i + 1..]))
}

fn octal_into(field: &mut [u8], v: u64) {
    // Zero-padded octal, NUL terminated, as GNU tar and Go write it.
    let n = field.len() - 1;
    let s = format!("{v:0n$o}");
    field[..n].copy_from_slice(s.as_bytes());
    field[n] = 0;
}

/// The PAX records (only those ustar cannot hold) and the ustar header for an entry, and the
/// size of its data.
fn headers(e: &Entry, mtime: u64) -> (Vec<(&'static str, Vec<u8>)>, Header, u64) {
    let mut name = e.path.clone();
    if e.kind == Kind::Dir {
        name.push(b'/');
    }
    let (ty, size, link): (EntryType, u64, Option<&[u8]>) = match &e.kind {
        Kind::Dir => (EntryType::Directory, 0, None),
        Kind::File { size, .. } => (EntryType::Regular, *size, None),
        Kind::Symlink(t) => (EntryType::Symlink, 0, Some(t)),
        Kind::HardLink(t) => (EntryType::Link, 0, Some(t)),
    };
    let mut pax: Vec<(&'static str, Vec<u8>)> = Vec::new();
    let split = ustar_split(&name);
    if split.is_none() {
        pax.push(("path", name.clone()));
    }
    if let Some(l) = link
        && l.len() > 100
    {
        pax.push(("linkpath", l.to_vec()));
    }
    if size > USTAR_MAX_SIZE {
        pax.push(("size", size.to_string().into_bytes()));
    }
    if e.uid > USTAR_MAX_ID {
        pax.push(("uid", e.uid.to_string().into_bytes()));
    }
    if e.gid > USTAR_MAX_ID {
        pax.push(("gid", e.gid.to_string().into_bytes()));
    }
    let mut h = Header::new_ustar();
    {
        let u = h.as_ustar_mut().expect("new_ustar gives a ustar header");
        match split {
            Some((prefix, n)) => {
                u.prefix[..prefix.len()].copy_from_slice(prefix);
                u.name[..n.len()].copy_from_slice(n);
            }
            // The PAX record carries the real name; keep a truncated one for old readers.
            None => {
                let tail = &name[name.len() - 100..];
                u.name.copy_from_slice(tail);
            }
        }
        if let Some(l) = link {
            let n = l.len().min(100);
            u.linkname[..n].copy_from_slice(&l[..n]);
        }
        octal_into(&mut u.mode, u64::from(e.mode & 0o7777));
        octal_into(&mut u.uid, u64::from(e.uid.min(USTAR_MAX_ID)));
        octal_into(&mut u.gid, u64::from(e.gid.min(USTAR_MAX_ID)));
        octal_into(
            &mut u.size,
            size.min(if size > USTAR_MAX_SIZE { 0 } else { size }),
        );
        octal_into(&mut u.mtime, mtime);
        octal_into(&mut u.dev_major, 0);
        octal_into(&mut u.dev_minor, 0);
    }
    h.set_entry_type(ty);
    h.set_cksum();
    (pax, h, size)
}

/// Write one entry's header (and PAX record if needed) then its data.
fn append(
    out: &mut tar::Builder<impl Write>,
    e: &Entry,
    mtime: u64,
    data: &mut dyn Read,
    source_name: &dyn Fn() -> String,
) -> Result<()> {
    let (pax, h, size) = headers(e, mtime);
    let io = |r: io::Result<()>| r.ctx(|| format!("writing tar entry for {}", source_name()));
    if !pax.is_empty() {
        io(out.append_pax_extensions(pax.iter().map(|(k, v)| (*k, v.as_slice()))))?;
    }

    // `append` pads to 512 bytes after copying; `Exact` makes sure it copies exactly `size`.
    let mut exact = Exact::new(data, size);
    io(out.append(&h, &mut exact))?;
    if exact.grew().ctx(|| format!("reading {}", source_name()))? {
        return Err(Error::source(
            source_name(),
            "grew while it was being read; build again once it is stable",
        ));
    }
    Ok(())
}

/// Write all entries, in order, as one tar stream ending with the two zero blocks.
pub fn write_tar<W: Write>(entries: &[Entry], input: &mut Input, mtime: u64, out: W) -> Result<W> {
    write_tar_counting(entries, input, mtime, out, &|| {})
}

/// [`write_tar`], calling `file_written` after each regular file's bytes are in the stream
/// (progress counts them).
pub fn write_tar_counting<W: Write>(
    entries: &[Entry],
    input: &mut Input,
    mtime: u64,
    out: W,
    file_written: &dyn Fn(),
) -> Result<W> {
    let mut b = tar::Builder::new(out);
    for e in entries {
        let shown = || format!("/{}", String::from_utf8_lossy(&e.path));
        match (&e.kind, &mut *input) {
            (
                Kind::File {
                    data: Data::Path(p),
                    ..
                },
                _,
            ) => {
                let f = std::fs::File::open(p).at("opening", p)?;
                let mut r = io::BufReader::with_capacity(256 * 1024, f);
                append(&mut b, e, mtime, &mut r, &|| p.display().to_string())?;
            }
            (
                Kind::File {
                    data: Data::Zip(i), ..
                },
                Input::Zip(z),
            ) => {
                let mut f = z.by_index(*i).map_err(|err| {
                    Error::source(format!("zip entry for {}", shown()), err.to_string())
                })?;
                append(&mut b, e, mtime, &mut f, &|| {
                    format!("zip entry for {}", shown())
                })?;
            }
            _ => append(&mut b, e, mtime, &mut io::empty(), &shown)?,
        }
        if matches!(e.kind, Kind::File { .. }) {
            file_written();
        }
    }
    b.into_inner().ctx(|| "finishing tar stream".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, size: u64) -> Entry {
        Entry {
            path: path.as_bytes().to_vec(),
            mode: 0o644,
            uid: 0,
            gid: 0,
            kind: Kind::File {
                size,
                data: Data::Empty,
            },
        }
    }

    #[test]
    fn short_names_use_plain_ustar() {
        let e = vec![Entry::dir(b"var".to_vec(), 0o755, 0, 0), file("var/x", 0)];
        let out = write_tar(&e, &mut Input::Files, 7, Vec::new()).unwrap();
        assert_eq!(out.len(), 512 * 4);
        let mut a = tar::Archive::new(&out[..]);
        let names: Vec<_> = a
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                assert_eq!(e.header().mtime().unwrap(), 7);
                assert_eq!(e.header().username_bytes(), Some(&b""[..]));
                e.path_bytes().to_vec()
            })
            .collect();
        assert_eq!(names, [b"var/".to_vec(), b"var/x".to_vec()]);
    }

    #[test]
    fn long_names_split_or_use_pax() {
        let mid = format!("{}/{}", "d".repeat(120), "f".repeat(90));
        assert!(ustar_split(mid.as_bytes()).is_some());
        let long = format!("{}/{}", "d".repeat(200), "f".repeat(90));
        assert!(ustar_split(long.as_bytes()).is_none());
        let e = vec![file(&mid, 0), file(&long, 0)];
        let out = write_tar(&e, &mut Input::Files, 0, Vec::new()).unwrap();
        let mut a = tar::Archive::new(&out[..]);
        let names: Vec<_> = a
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path_bytes().to_vec())
            .collect();
        assert_eq!(names, [mid.into_bytes(), long.into_bytes()]);
    }

    #[test]
    fn huge_files_and_ids_go_to_pax_records() {
        let size = 9 << 30; // over ustar's 8 GiB
        let e = Entry {
            path: b"data/huge.bin".to_vec(),
            mode: 0o644,
            uid: 3_000_000,
            gid: 0,
            kind: Kind::File {
                size,
                data: Data::Empty,
            },
        };
        let (pax, h, got) = headers(&e, 0);
        assert_eq!(got, size);
        let keys: Vec<&str> = pax.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, ["size", "uid"]);
        // Written without data, a reader still sees the PAX size and uid on the entry.
        let mut b = tar::Builder::new(Vec::new());
        b.append_pax_extensions(pax.iter().map(|(k, v)| (*k, v.as_slice())))
            .unwrap();
        b.append(&h, io::empty()).unwrap();
        let bytes = b.into_inner().unwrap();
        let mut a = tar::Archive::new(&bytes[..]);
        let mut entry = a.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(entry.size(), size);
        let uid = entry
            .pax_extensions()
            .unwrap()
            .unwrap()
            .map(|x| x.unwrap())
            .find(|x| x.key() == Ok("uid"))
            .map(|x| x.value().unwrap().to_owned());
        assert_eq!(uid.as_deref(), Some("3000000"));
        assert_eq!(entry.path_bytes().as_ref(), b"data/huge.bin");
    }

    #[test]
    fn a_short_source_is_an_error_not_a_corrupt_tar() {
        let mut e = file("x", 10);
        e.kind = Kind::File {
            size: 10,
            data: Data::Empty,
        };
        // Data::Empty reads nothing: 10 bytes promised, 0 delivered.
        assert!(write_tar(&[e], &mut Input::Files, 0, Vec::new()).is_err());
    }
}
