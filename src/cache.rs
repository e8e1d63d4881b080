//! The local content-addressed blob cache for pulled images: blobs are verified before they are
//! made visible under their digest, so what is there can be trusted and is never fetched again.

use std::path::{Path, PathBuf};

/// `LAMINA_CACHE_DIR`, else `$XDG_CACHE_HOME/lamina`, else `~/.cache/lamina`.
pub fn default_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("LAMINA_CACHE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("lamina");
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(h) => PathBuf::from(h).join(".cache").join("lamina"),
        None => std::env::temp_dir().join("lamina-cache"),
    }
}

/// `blobs/sha256` under a cache directory.
pub fn blobs(dir: &Path) -> PathBuf {
    dir.join("blobs").join("sha256")
}
