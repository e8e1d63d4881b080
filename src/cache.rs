//! The local content-addressed blob cache for pulled images: blobs are verified before they are
//! made visible under their digest, so what is there can be trusted and is never fetched again.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{IoContext, Result};

/// `blobs/sha256` under a cache directory.
pub fn blobs(dir: &Path) -> PathBuf {
    dir.join("blobs").join("sha256")
}

/// Put a blob into `dir` under its digest: a hard link when possible (free on one file
/// system), else a copy to a temporary name then a rename.
pub fn link_blob(from: &Path, dir: &Path, hex: &str) -> Result<()> {
    let to = dir.join(hex);
    if to.exists() {
        return Ok(());
    }
    if fs::hard_link(from, &to).is_ok() {
        return Ok(());
    }
    let tmp = tempfile::Builder::new()
        .prefix(".copy-")
        .tempfile_in(dir)
        .at("creating a temporary file in", dir)?;
    fs::copy(from, tmp.path()).ctx(|| format!("copying {} to {}", from.display(), to.display()))?;
    tmp.persist(&to).map_err(|e| e.error).at("saving", &to)?;
    Ok(())
}
