//! `lamina.lock`: the resolved digest of every registry base, per platform, written beside
//! `lamina.toml` on first use (like `Cargo.lock`), so later builds use the same base bytes and
//! can build from the blob cache without a network. The file is TOML, its entries sorted by
//! name and platform, so the same bases give the same bytes.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};

/// The lock file's name, beside the spec file.
pub const LOCK_FILE: &str = "lamina.lock";

/// The largest lock file read: a few thousand bases.
const MAX_LOCK: u64 = 1 << 20;

const HEADER: &str = "# Written by lamina: the digest each base image resolved to, per platform.\n\
# Commit it. `lamina update` (or `lamina build --update-base`) moves it.\n";

/// One pinned base.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// The base reference as resolved (`public.ecr.aws/lambda/python:3.12`).
    pub name: String,
    /// `os/arch[/variant]`.
    pub platform: String,
    /// The image manifest for the platform.
    pub digest: Digest,
    /// The index the manifest was chosen from, if the reference named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<Digest>,
}

/// The lock file's contents.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Lock {
    /// The format's version.
    pub version: u32,
    /// The bases, sorted by name and platform.
    #[serde(default)]
    pub base: Vec<Entry>,
}

impl Lock {
    /// Read `path`; a missing file is an empty lock, a malformed one a spec error naming it.
    pub fn read(path: &Path) -> Result<Lock> {
        let bytes = match crate::image::blob::read_capped(path, MAX_LOCK) {
            Ok(Some(b)) => b,
            Ok(None) => {
                return Err(Error::Spec {
                    file: path.to_owned(),
                    message: format!("larger than {MAX_LOCK} bytes: not a lamina.lock"),
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Lock::default()),
            Err(e) => return Err(e).at("reading", path),
        };
        let text = String::from_utf8(bytes).map_err(|_| Error::Spec {
            file: path.to_owned(),
            message: "not UTF-8 text".into(),
        })?;
        let lock: Lock = toml::from_str(&text).map_err(|e| Error::Spec {
            file: path.to_owned(),
            message: format!(
                "{} (delete it and build again to write a new one)",
                e.to_string().trim_end()
            ),
        })?;
        if lock.version > 1 {
            return Err(Error::Spec {
                file: path.to_owned(),
                message: format!(
                    "version {} was written by a newer lamina (this one reads version 1)",
                    lock.version
                ),
            });
        }
        Ok(lock)
    }

    /// The entry for `name` on `platform`.
    pub fn get(&self, name: &str, platform: &str) -> Option<&Entry> {
        self.base
            .iter()
            .find(|e| e.name == name && e.platform == platform)
    }

    /// Add or replace the entry for its name and platform; true if the lock changed.
    pub fn set(&mut self, entry: Entry) -> bool {
        if self.get(&entry.name, &entry.platform) == Some(&entry) {
            return false;
        }
        self.base
            .retain(|e| !(e.name == entry.name && e.platform == entry.platform));
        self.base.push(entry);
        self.base.sort_by(|a, b| {
            (a.name.as_str(), a.platform.as_str()).cmp(&(b.name.as_str(), b.platform.as_str()))
        });
        true
    }

    /// The file's bytes: a header, then the entries in order.
    pub fn to_bytes(&self) -> Vec<u8> {
        let lock = Lock {
            version: 1,
            base: self.base.clone(),
        };
        let body = toml::to_string(&lock).expect("a lock serializes");
        format!("{HEADER}{body}").into_bytes()
    }

    /// Write to `path` through a temporary file renamed into place.
    pub fn write(&self, path: &Path) -> Result<()> {
        let dir = path
            .parent()
            .map(Path::to_owned)
            .unwrap_or_else(|| PathBuf::from("."));
        let tmp = crate::staging::file_in(&dir, ".lamina.lock-")
            .at("creating a temporary file in", &dir)?;
        std::fs::write(tmp.path(), self.to_bytes()).at("writing", tmp.path())?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o644))
                .at("writing", tmp.path())?;
        }
        tmp.persist(path).at("saving", path)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, platform: &str, seed: &[u8]) -> Entry {
        Entry {
            name: name.into(),
            platform: platform.into(),
            digest: Digest::of(seed),
            index: Some(Digest::of(b"index")),
        }
    }

    #[test]
    fn entries_are_sorted_and_bytes_round_trip() {
        let mut a = Lock::default();
        assert!(a.set(entry("r/b:1", "linux/arm64", b"1")));
        assert!(a.set(entry("r/a:1", "linux/amd64", b"2")));
        let mut b = Lock::default();
        b.set(entry("r/a:1", "linux/amd64", b"2"));
        b.set(entry("r/b:1", "linux/arm64", b"1"));
        assert_eq!(a.to_bytes(), b.to_bytes(), "order of use does not matter");
        assert!(!a.set(entry("r/a:1", "linux/amd64", b"2")), "unchanged");
        assert!(a.set(entry("r/a:1", "linux/amd64", b"3")), "moved");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(LOCK_FILE);
        a.write(&p).unwrap();
        let back = Lock::read(&p).unwrap();
        assert_eq!(back.base, a.base);
        assert_eq!(back.to_bytes(), std::fs::read(&p).unwrap());
    }

    #[test]
    fn a_broken_lock_names_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(LOCK_FILE);
        std::fs::write(&p, "version = 1\n[[base]]\nname = 3\n").unwrap();
        let e = Lock::read(&p).unwrap_err().to_string();
        assert!(e.contains("lamina.lock") && e.contains("name"), "{e}");
        assert!(
            Lock::read(&dir.path().join("none"))
                .unwrap()
                .base
                .is_empty()
        );
    }
}
