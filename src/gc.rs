//! Keeping lamina's cache bounded: a size cap over what it holds (blobs, unpacked layers and
//! root file systems, the indexes and records beside them), least-recently-used eviction, and
//! the usage `lamina cache` shows.
//!
//! What is counted is what `du` counts: each file's allocated blocks once, however many names
//! it has inside the cache (an unpacked layer and a composed copy share files by hard links).
//! When an entry goes, the bytes it frees are those of the files no other cache entry still
//! links. Units of eviction:
//!
//! - `blobs`: one blob file of `blobs/sha256`, last used at the latest of its access, change and
//!   modification times (lamina hard-links a blob into every output that uses it, which changes
//!   the change time; its modification time never changes, being part of the blob's identity
//!   for the verified and layer-cache records);
//! - `rootfs`: one entry of `rootfs/` (a layer, a top layer, a composed copy), last used when its
//!   `last-used` file was touched (on every use) or it was completed. An entry a running sandbox
//!   uses is held by a shared `flock` on its directory and is never evicted. Entries of the old
//!   layout (one per image manifest) are removed by every pruning;
//! - `index`: one file of `verified/fs` (the Lambda gate's listings of layers), by its times.
//!
//! Records that point at blobs (`layers/`, the build's layer cache, and `archives/`, the
//! docker-archive memos) go with their blobs; records of any kind unused for a month go too
//! (for verification markers, `verified/`, a month after they were made: the blob is then
//! verified once more).
//!
//! Concurrent lamina processes: a build, or a run while it prepares its root file system, holds
//! a shared lock on `<cache>/.lock` ([`CacheLock::shared`]); pruning takes it exclusively, so
//! it never removes a blob from under a build. Automatic eviction after a command
//! ([`evict_over`]) gives up at once when the cache is busy; `lamina cache prune` waits.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::error::{Error, IoContext, Result};

/// The default cap: 10 GiB (an AWS base image unpacked is about 0.5 GB; a handful of bases
/// and many code layers fit).
pub const DEFAULT_MAX: u64 = 10 << 30;

/// The file written last into a root file system cache entry: without it the entry is an
/// interrupted unpack (the run module writes it; pruning reads it).
pub const ROOTFS_MARKER: &str = "complete";
/// The file whose modification time says when a root file system entry was last used.
pub const ROOTFS_LAST_USED: &str = "last-used";

/// Records (verification markers, layer-cache records, docker-archive memos) unused for this
/// long are removed by pruning.
const MARKER_AGE: Duration = Duration::from_secs(30 * 24 * 3600);

/// How long `lamina cache prune` waits for the other lamina processes using the cache.
const WAIT: Duration = Duration::from_secs(60);

/// A lock on the whole cache (`<cache>/.lock`), released when dropped.
#[derive(Debug)]
pub struct CacheLock(#[allow(dead_code)] File);

fn lock_file(cache: &Path) -> Result<File> {
    fs::create_dir_all(cache).at("creating", cache)?;
    let p = cache.join(".lock");
    File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&p)
        .at("opening", &p)
}

fn flock(f: &File, op: libc::c_int) -> io::Result<()> {
    // SAFETY: flock on a descriptor this function borrows for the call.
    if unsafe { libc::flock(f.as_raw_fd(), op) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl CacheLock {
    /// Shared: the cache is being read and added to (a build, a run preparing its root);
    /// pruning waits for it. Waits while a pruning runs.
    pub fn shared(cache: &Path) -> Result<CacheLock> {
        let f = lock_file(cache)?;
        flock(&f, libc::LOCK_SH).at("locking", &cache.join(".lock"))?;
        Ok(CacheLock(f))
    }

    /// Exclusive, for pruning: `None` when another lamina holds it and `wait` is zero or ran
    /// out.
    fn exclusive(cache: &Path, wait: Duration) -> Result<Option<CacheLock>> {
        let f = lock_file(cache)?;
        let until = std::time::Instant::now() + wait;
        loop {
            match flock(&f, libc::LOCK_EX | libc::LOCK_NB) {
                Ok(()) => return Ok(Some(CacheLock(f))),
                Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => {
                    if std::time::Instant::now() >= until {
                        return Ok(None);
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(e).at("locking", &cache.join(".lock")),
            }
        }
    }
}

/// Hold a cache entry (a directory) in use: a shared `flock` on it, kept while the returned
/// file is open. Pruning skips an entry it cannot lock exclusively.
pub fn hold(entry: &Path) -> io::Result<File> {
    let f = File::open(entry)?;
    flock(&f, libc::LOCK_SH)?;
    Ok(f)
}

/// One kind's usage.
#[derive(Debug, Clone, Serialize)]
pub struct KindUsage {
    /// `blobs`, `rootfs`, `index` or `records`.
    pub kind: &'static str,
    /// Entries (files or directories) of that kind.
    pub entries: u64,
    /// Bytes on disk of the files first found in that kind.
    pub bytes: u64,
}

/// The cache's usage, by kind.
#[derive(Debug, Clone, Serialize)]
pub struct Usage {
    /// The cache directory.
    pub dir: PathBuf,
    /// Per kind.
    pub kinds: Vec<KindUsage>,
    /// Bytes on disk in all (each file once).
    pub total: u64,
}

/// One entry removed by pruning.
#[derive(Debug, Clone, Serialize)]
pub struct Removed {
    /// Its kind.
    pub kind: &'static str,
    /// Its path.
    pub path: PathBuf,
    /// The bytes its removal freed (files no other entry links).
    pub bytes: u64,
}

/// What pruning did.
#[derive(Debug, Clone, Serialize)]
pub struct Pruned {
    /// The cap pruned to.
    pub max: u64,
    /// Bytes before and after.
    pub before: u64,
    /// Bytes after.
    pub after: u64,
    /// What went, oldest use first.
    pub removed: Vec<Removed>,
    /// Entries in use by a running lamina, left in place.
    pub in_use: usize,
}

/// One unit of eviction.
struct Unit {
    kind: &'static str,
    path: PathBuf,
    last: SystemTime,
    /// `(device, inode)` of its files (with multiplicity) and each file's bytes.
    files: Vec<((u64, u64), u64)>,
    /// Removed by any pruning (an entry of the old layout, or debris).
    stale: bool,
}

fn latest(m: &fs::Metadata) -> SystemTime {
    let t = |s: i64, ns: i64| {
        SystemTime::UNIX_EPOCH + Duration::new(s.max(0) as u64, ns.clamp(0, 999_999_999) as u32)
    };
    t(m.atime(), m.atime_nsec())
        .max(t(m.mtime(), m.mtime_nsec()))
        .max(t(m.ctime(), m.ctime_nsec()))
}

fn file_of(m: &fs::Metadata) -> ((u64, u64), u64) {
    ((m.dev(), m.ino()), m.blocks() * 512)
}

/// Every file under `dir` (itself included), not following links.
fn walk(dir: &Path, out: &mut Vec<((u64, u64), u64)>) -> io::Result<()> {
    let m = fs::symlink_metadata(dir)?;
    out.push(file_of(&m));
    if m.is_dir() {
        for e in fs::read_dir(dir)? {
            walk(&e?.path(), out)?;
        }
    }
    Ok(())
}

/// The entries of `dir` but dot files (others' staging); none when `dir` does not exist.
fn listed(dir: &Path) -> io::Result<Vec<fs::DirEntry>> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for e in rd {
        let e = e?;
        if !e.file_name().to_string_lossy().starts_with('.') {
            out.push(e);
        }
    }
    Ok(out)
}

/// The files of a directory of flat files, one unit each (dot files are others' staging).
fn flat(dir: &Path, kind: &'static str, out: &mut Vec<Unit>) -> io::Result<()> {
    for e in listed(dir)? {
        let m = e.metadata()?;
        if !m.is_file() {
            continue;
        }
        out.push(Unit {
            kind,
            path: e.path(),
            last: latest(&m),
            files: vec![file_of(&m)],
            stale: false,
        });
    }
    Ok(())
}

/// The entries of `rootfs/`.
fn rootfs_units(dir: &Path, out: &mut Vec<Unit>) -> io::Result<()> {
    for e in listed(dir)? {
        let path = e.path();
        let current = current_entry(&path);
        let time = |name: &str| fs::metadata(path.join(name)).ok().map(|m| latest_mtime(&m));
        let last = time(ROOTFS_LAST_USED)
            .into_iter()
            .chain(time(ROOTFS_MARKER))
            .max()
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let mut files = Vec::new();
        walk(&path, &mut files)?;
        out.push(Unit {
            kind: "rootfs",
            path,
            last,
            files,
            stale: !current,
        });
    }
    Ok(())
}

fn latest_mtime(m: &fs::Metadata) -> SystemTime {
    m.modified().unwrap_or(SystemTime::UNIX_EPOCH)
}

/// `<entry>/size` of a rootfs entry: the bytes of its files, each counted once within the
/// entry (shared ones too), recorded the first time pruning looks (an entry never changes).
const SIZE_FILE: &str = "size";

/// The recorded size of the rootfs entry `entry`, computed and recorded when missing.
fn entry_size(entry: &Path) -> io::Result<u64> {
    let p = entry.join(SIZE_FILE);
    if let Ok(text) = fs::read_to_string(&p)
        && let Ok(n) = text.trim().parse()
    {
        return Ok(n);
    }
    let mut files = Vec::new();
    walk(entry, &mut files)?;
    let mut seen = std::collections::HashSet::new();
    let n: u64 = files
        .into_iter()
        .filter(|(id, _)| seen.insert(*id))
        .map(|(_, b)| b)
        .sum();
    // Best effort, through a temporary name: without the record the entry is walked again.
    if let Ok(tmp) = crate::staging::file_in(entry, ".size-")
        && fs::write(tmp.path(), format!("{n}\n")).is_ok()
    {
        let _ = tmp.persist(&p);
    }
    Ok(n)
}

/// An upper bound of the cache's size, without walking the unpacked trees: the blob, index and
/// record files, and each rootfs entry's recorded size (files shared between entries counted
/// in each); and whether something must go whatever the size (an entry of the old layout,
/// debris, a record unused for a month).
fn estimate(cache: &Path) -> io::Result<(u64, bool)> {
    let mut flat_units = Vec::new();
    flat(&crate::cache::blobs(cache), "blobs", &mut flat_units)?;
    flat(&cache.join("verified").join("fs"), "index", &mut flat_units)?;
    for d in ["layers", "archives", "verified"] {
        flat(&cache.join(d), "records", &mut flat_units)?;
    }
    let mut total: u64 = flat_units
        .iter()
        .flat_map(|u| u.files.iter().map(|(_, b)| *b))
        .sum();
    let now = SystemTime::now();
    let mut stale = flat_units.iter().any(|u| {
        u.kind == "records" && now.duration_since(u.last).unwrap_or_default() > MARKER_AGE
    });
    let dir = cache.join("rootfs");
    let rd = match fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((total, false)),
        Err(e) => return Err(e),
    };
    for e in rd {
        let e = e?;
        if e.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = e.path();
        if !current_entry(&path) {
            stale = true;
            continue;
        }
        total += entry_size(&path)?;
    }
    Ok((total, stale))
}

/// Is `entry` a complete rootfs entry of the current layout?
fn current_entry(entry: &Path) -> bool {
    fs::read_to_string(entry.join(ROOTFS_MARKER))
        .is_ok_and(|m| m.starts_with("layer ") || m.starts_with("top") || m.starts_with("copy"))
}

/// Every unit of the cache.
fn units(cache: &Path) -> io::Result<Vec<Unit>> {
    let mut out = Vec::new();
    flat(&crate::cache::blobs(cache), "blobs", &mut out)?;
    rootfs_units(&cache.join("rootfs"), &mut out)?;
    flat(&cache.join("verified").join("fs"), "index", &mut out)?;
    for (d, kind) in [
        (cache.join("layers"), "records"),
        (cache.join("archives"), "records"),
        (cache.join("verified"), "records"),
    ] {
        flat(&d, kind, &mut out)?;
    }
    Ok(out)
}

/// Per file (`(device, inode)`): how many names it has inside the cache, and its bytes.
type Links = HashMap<(u64, u64), (u32, u64)>;

/// How many names each file has inside the cache, and the bytes of each file once.
fn census(units: &[Unit]) -> (Links, u64) {
    let mut links: Links = HashMap::new();
    for u in units {
        for (id, bytes) in &u.files {
            links.entry(*id).or_insert((0, *bytes)).0 += 1;
        }
    }
    let total = links.values().map(|(_, b)| b).sum();
    (links, total)
}

/// The cache's usage, by kind (each file counted once, in the first kind that holds it).
pub fn usage(cache: &Path) -> Result<Usage> {
    let units = units(cache).at("reading the cache", cache)?;
    let mut seen = std::collections::HashSet::new();
    let mut kinds: Vec<KindUsage> = ["blobs", "rootfs", "index", "records"]
        .into_iter()
        .map(|kind| KindUsage {
            kind,
            entries: 0,
            bytes: 0,
        })
        .collect();
    for u in &units {
        let k = kinds
            .iter_mut()
            .find(|k| k.kind == u.kind)
            .expect("every kind is listed");
        k.entries += 1;
        for (id, bytes) in &u.files {
            if seen.insert(*id) {
                k.bytes += bytes;
            }
        }
    }
    let total = kinds.iter().map(|k| k.bytes).sum();
    Ok(Usage {
        dir: cache.to_owned(),
        kinds,
        total,
    })
}

/// Remove a unit: a rootfs entry only when no sandbox holds it (an exclusive lock, taken at
/// once), moved aside first so that no reader ever sees it half removed. False when in use.
fn remove(u: &Unit) -> io::Result<bool> {
    if u.kind != "rootfs" {
        return match fs::remove_file(&u.path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
            r => r.map(|_| true),
        };
    }
    let f = File::open(&u.path)?;
    match flock(&f, libc::LOCK_EX | libc::LOCK_NB) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => return Ok(false),
        Err(e) => return Err(e),
    }
    let parent = u.path.parent().unwrap_or(Path::new("."));
    // Named as staging of this process: a later lamina removes it if this one dies midway.
    let aside = parent.join(format!(
        ".unpack-{}-evict{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
    ));
    fs::rename(&u.path, &aside)?;
    drop(f);
    crate::cache::remove_tree(&aside)?;
    Ok(true)
}

/// Prune the cache to `max` bytes, least recently used first, skipping entries in use; the
/// old layout's entries, records whose blob is gone and month-old verification markers go
/// whatever the size. Waits up to a minute for other lamina processes (`wait`), else gives
/// `None` when the cache is busy.
pub fn prune(cache: &Path, max: u64, wait: bool) -> Result<Option<Pruned>> {
    if !cache.exists() {
        return Ok(Some(Pruned {
            max,
            before: 0,
            after: 0,
            removed: Vec::new(),
            in_use: 0,
        }));
    }
    let Some(_lock) = CacheLock::exclusive(cache, if wait { WAIT } else { Duration::ZERO })? else {
        return Ok(None);
    };
    let mut all = units(cache).at("reading the cache", cache)?;
    let (mut links, before) = census(&all);
    let mut total = before;
    all.sort_by_key(|u| (!u.stale, u.last));
    let mut removed = Vec::new();
    let mut in_use = 0;
    let now = SystemTime::now();
    for u in &all {
        let old_marker =
            u.kind == "records" && now.duration_since(u.last).unwrap_or_default() > MARKER_AGE;
        let evictable = u.kind != "records";
        if !(u.stale || old_marker || (evictable && total > max)) {
            continue;
        }
        if !remove(u).at("removing", &u.path)? {
            in_use += 1;
            continue;
        }
        let mut freed = 0;
        for (id, _) in &u.files {
            if let Some(l) = links.get_mut(id) {
                l.0 -= 1;
                if l.0 == 0 {
                    freed += l.1;
                }
            }
        }
        total -= freed;
        removed.push(Removed {
            kind: u.kind,
            path: u.path.clone(),
            bytes: freed,
        });
    }
    total -= drop_dangling(cache, &mut removed);
    Ok(Some(Pruned {
        max,
        before,
        after: total,
        removed,
        in_use,
    }))
}

/// Remove the build's layer records and the docker-archive memos whose blobs are gone: the
/// bytes freed.
fn drop_dangling(cache: &Path, removed: &mut Vec<Removed>) -> u64 {
    let blobs = crate::cache::blobs(cache);
    let mut freed = 0;
    for dir in [cache.join("layers"), cache.join("archives")] {
        let Ok(rd) = fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let Ok(Some(bytes)) = crate::image::blob::read_capped(&p, 4 << 20) else {
                continue;
            };
            let text = String::from_utf8_lossy(&bytes);
            let gone = referenced_digests(&text)
                .iter()
                .any(|hex| !blobs.join(hex).exists());
            if gone {
                let size = e.metadata().map(|m| m.blocks() * 512).unwrap_or(0);
                if fs::remove_file(&p).is_ok() {
                    freed += size;
                    removed.push(Removed {
                        kind: "records",
                        path: p,
                        bytes: size,
                    });
                }
            }
        }
    }
    freed
}

/// The blob digests a record names (`"digest":"sha256:…"`).
fn referenced_digests(text: &str) -> Vec<String> {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(text) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut push = |d: &serde_json::Value| {
        if let Some(hex) = d.as_str().and_then(|s| s.strip_prefix("sha256:")) {
            out.push(hex.to_owned());
        }
    };
    push(&v["digest"]);
    if let Some(layers) = v["layers"].as_array() {
        for l in layers {
            push(&l["digest"]);
        }
    }
    out
}

/// After a command that added to the cache: prune to `max` when over it, unless another lamina
/// is using the cache (it will prune after itself). Never fails the command: a failure comes
/// back as a message to show.
pub fn evict_over(cache: &Path, max: u64) -> Option<String> {
    // Under the cap by an upper bound, with nothing stale: no lock, no walk of the trees.
    if let Ok((bound, false)) = estimate(cache)
        && bound <= max
    {
        return None;
    }
    match prune(cache, max, false) {
        Ok(Some(p)) if !p.removed.is_empty() => Some(format!(
            "the cache was over its cap of {}: removed {} least recently used entries ({} freed; now {})",
            human(max),
            p.removed.len(),
            human(p.before.saturating_sub(p.after)),
            human(p.after)
        )),
        Ok(_) => None,
        Err(e) => Some(format!("could not prune the cache: {e}")),
    }
}

/// `SIZE` as the user writes it: bytes, or with a suffix `K`, `M`, `G`, `T` (powers of 1024;
/// `KB`/`KiB`… too), a decimal point allowed (`1.5G`).
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || {
        Error::Usage(format!(
            "`{s}` is not a size: write bytes, or a number with K, M, G or T (1024-based), e.g. 10G"
        ))
    };
    let n: f64 = num.parse().map_err(|_| bad())?;
    let mult: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        "T" | "TB" | "TIB" => 1 << 40,
        _ => return Err(bad()),
    };
    let v = n * mult as f64;
    if !v.is_finite() || v < 0.0 || v > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(v as u64)
}

/// Bytes for people: `1.5 GiB`.
pub fn human(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", units[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_as_people_write_them() {
        assert_eq!(parse_size("10G").unwrap(), 10 << 30);
        assert_eq!(parse_size("1.5 GiB").unwrap(), 3 << 29);
        assert_eq!(parse_size("512k").unwrap(), 512 << 10);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        let e = parse_size("lots").unwrap_err().to_string();
        assert!(e.contains("`lots`"), "{e}");
        assert!(parse_size("5X").is_err());
        assert_eq!(human(3 << 29), "1.5 GiB");
    }

    #[test]
    fn pruning_removes_the_least_recently_used_and_spares_held_entries() {
        let t = tempfile::tempdir().unwrap();
        let cache = t.path();
        let blobs = crate::cache::blobs(cache);
        fs::create_dir_all(&blobs).unwrap();
        let old = SystemTime::now() - Duration::from_secs(3600);
        for (name, when) in [("a", old), ("b", SystemTime::now())] {
            let p = blobs.join(name);
            fs::write(&p, vec![7u8; 64 << 10]).unwrap();
            let f = File::options().write(true).open(&p).unwrap();
            f.set_times(fs::FileTimes::new().set_accessed(when).set_modified(when))
                .unwrap();
            if name == "a" {
                // A blob's use is also its change time, which set_times moves to now: b's must
                // be later, on file systems that keep whole seconds (ext3) too.
                std::thread::sleep(Duration::from_millis(1100));
            }
        }
        let entry = cache.join("rootfs").join("e");
        fs::create_dir_all(entry.join("rootfs")).unwrap();
        fs::write(entry.join("rootfs/f"), vec![1u8; 64 << 10]).unwrap();
        fs::write(entry.join("complete"), "layer sha256:x\n").unwrap();
        let held = hold(&entry).unwrap();
        let before = usage(cache).unwrap();
        assert!(before.total >= 3 * (64 << 10), "{before:?}");
        // The cheap estimate is an upper bound, and records the entry's size once.
        let (bound, stale) = estimate(cache).unwrap();
        assert!(!stale && bound >= before.total, "{bound} < {before:?}");
        assert_eq!(estimate(cache).unwrap().0, bound);
        assert!(entry.join(SIZE_FILE).is_file());
        let p = prune(cache, 0, true).unwrap().unwrap();
        assert_eq!(p.in_use, 1, "{p:?}");
        assert!(entry.join("rootfs/f").is_file(), "the held entry stays");
        assert_eq!(p.removed.len(), 2, "{p:?}");
        assert!(p.removed[0].path.ends_with("a"), "oldest first: {p:?}");
        drop(held);
        let p = prune(cache, 0, true).unwrap().unwrap();
        assert_eq!(p.removed.len(), 1);
        assert!(!entry.exists());
        // Nothing but the lock is left.
        let left: Vec<_> = fs::read_dir(cache.join("rootfs")).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
