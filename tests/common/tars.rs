//! Reading layer tars entry by entry, extension headers applied or kept.

use std::io::Read;

/// One tar entry, after PAX/GNU extensions were applied.
#[derive(Clone, Debug)]
pub struct TarEntry {
    /// Path as stored, with any trailing `/` removed.
    pub path: Vec<u8>,
    pub entry_type: tar::EntryType,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub uname: Vec<u8>,
    pub gname: Vec<u8>,
    pub mtime: u64,
    pub link: Option<Vec<u8>>,
    pub data: Vec<u8>,
}

impl TarEntry {
    pub fn path_str(&self) -> String {
        String::from_utf8_lossy(&self.path).into_owned()
    }
    pub fn is_dir(&self) -> bool {
        self.entry_type == tar::EntryType::Directory
    }
    pub fn is_file(&self) -> bool {
        self.entry_type == tar::EntryType::Regular
    }
}

pub fn tar_entries(tar_bytes: &[u8]) -> Vec<TarEntry> {
    let mut archive = tar::Archive::new(tar_bytes);
    let mut out = Vec::new();
    for e in archive.entries().expect("readable tar") {
        let mut e = e.expect("readable tar entry");
        let h = e.header().clone();
        let mut path = e.path_bytes().into_owned();
        while path.len() > 1 && path.ends_with(b"/") {
            path.pop();
        }
        let link = e.link_name_bytes().map(|l| l.into_owned());
        let mut data = Vec::new();
        e.read_to_end(&mut data).expect("tar entry data");
        out.push(TarEntry {
            path,
            entry_type: h.entry_type(),
            mode: h.mode().expect("tar mode") & 0o7777,
            uid: h.uid().expect("tar uid"),
            gid: h.gid().expect("tar gid"),
            uname: h.username_bytes().map(|b| b.to_vec()).unwrap_or_default(),
            gname: h.groupname_bytes().map(|b| b.to_vec()).unwrap_or_default(),
            mtime: h.mtime().expect("tar mtime"),
            link,
            data,
        });
    }
    out
}

/// Every header of the tar as written, extension headers (PAX `x`/`g`, GNU `L`/`K`) included.
pub fn tar_raw_headers(tar_bytes: &[u8]) -> Vec<(tar::EntryType, Vec<u8>)> {
    let mut archive = tar::Archive::new(tar_bytes);
    archive
        .entries()
        .expect("readable tar")
        .raw(true)
        .map(|e| {
            let e = e.expect("readable raw tar entry");
            (
                e.header().entry_type(),
                e.header().path_bytes().into_owned(),
            )
        })
        .collect()
}

pub fn find_entry<'a>(entries: &'a [TarEntry], path: &str) -> Option<&'a TarEntry> {
    entries.iter().find(|e| e.path == path.as_bytes())
}

pub fn entry<'a>(entries: &'a [TarEntry], path: &str) -> &'a TarEntry {
    find_entry(entries, path).unwrap_or_else(|| {
        panic!(
            "no tar entry {path}; entries: {:?}",
            entries.iter().map(TarEntry::path_str).collect::<Vec<_>>()
        )
    })
}

/// Entries must be strictly increasing by path bytes (sorted, no duplicates).
pub fn assert_sorted(entries: &[TarEntry], what: &str) {
    for w in entries.windows(2) {
        assert!(
            w[0].path < w[1].path,
            "{what}: tar entries not sorted by path: {:?} then {:?}",
            w[0].path_str(),
            w[1].path_str()
        );
    }
}
