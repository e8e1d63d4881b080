//! lamina's own outputs, recognised wherever they lie so that no later run reads them back as
//! a layer's input: zips (their archive comment, see [`super::zip::MARK`]), OCI layouts and
//! tar archives (a small marker file lamina writes into them), and `lamina.lock`.

use std::io::Read;
use std::path::Path;

/// The marker's name: a file at the root of every OCI layout lamina writes, and the first
/// entry of every oci-archive and docker-archive it writes. Readers of either ignore it.
pub const MARKER: &str = ".lamina-output";

/// The marker's content.
pub const MARKER_TEXT: &[u8] = b"written by lamina\n";

/// The lock file's first bytes (as the lock module writes them).
const LOCK_HEAD: &[u8] = b"# Written by lamina";

/// Did lamina write what is at `path` (with `meta` from `symlink_metadata`)? Reads at most
/// the first kilobyte of a file named `*.tar`/`lamina.lock`, a marker, or a zip's last bytes;
/// anything unreadable is not lamina's.
pub fn written_by_lamina(path: &Path, meta: &std::fs::Metadata) -> bool {
    if meta.is_dir() {
        return path.join("oci-layout").is_file() && has_marker_file(&path.join(MARKER));
    }
    if !meta.is_file() {
        return false;
    }
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    match name.as_deref() {
        Some("lamina.lock") => starts_with(path, LOCK_HEAD),
        Some(n) if n.to_ascii_lowercase().ends_with(".tar") => marked_tar(path),
        _ => super::zip::written_by_lamina(path, meta),
    }
}

fn has_marker_file(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.is_file() && m.len() == MARKER_TEXT.len() as u64)
        && starts_with(p, MARKER_TEXT)
}

fn head(path: &Path, n: usize) -> Option<Vec<u8>> {
    let f = crate::image::blob::open_regular(path).ok()?;
    let mut buf = Vec::with_capacity(n);
    f.take(n as u64).read_to_end(&mut buf).ok()?;
    Some(buf)
}

fn starts_with(path: &Path, prefix: &[u8]) -> bool {
    head(path, prefix.len()).is_some_and(|b| b == prefix)
}

/// A tar whose first entry is the marker: its name in the first header, its text in the
/// block after it.
fn marked_tar(path: &Path) -> bool {
    let Some(b) = head(path, 1024) else {
        return false;
    };
    b.len() == 1024
        && b[..MARKER.len()] == *MARKER.as_bytes()
        && b[MARKER.len()] == 0
        && b[512..512 + MARKER_TEXT.len()] == *MARKER_TEXT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_recognised_and_lookalikes_are_not() {
        let d = tempfile::tempdir().unwrap();
        let layout = d.path().join("out");
        std::fs::create_dir_all(&layout).unwrap();
        std::fs::write(layout.join("oci-layout"), "{}").unwrap();
        let meta = |p: &Path| std::fs::symlink_metadata(p).unwrap();
        assert!(!written_by_lamina(&layout, &meta(&layout)), "no marker");
        std::fs::write(layout.join(MARKER), MARKER_TEXT).unwrap();
        assert!(written_by_lamina(&layout, &meta(&layout)));
        let lock = d.path().join("lamina.lock");
        std::fs::write(&lock, "# Written by lamina: ...\nversion = 1\n").unwrap();
        assert!(written_by_lamina(&lock, &meta(&lock)));
        std::fs::write(&lock, "mine\n").unwrap();
        assert!(!written_by_lamina(&lock, &meta(&lock)));
        let tar = d.path().join("x.tar");
        std::fs::write(&tar, vec![0u8; 2048]).unwrap();
        assert!(!written_by_lamina(&tar, &meta(&tar)));
    }
}
