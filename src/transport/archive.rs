//! Archive transports: `oci-archive:` (a tar of an OCI layout) and `docker-archive:` (the
//! `docker save` format: `manifest.json`, a config file and uncompressed layer tars).

use std::fs::{self, File};
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};

use oci_spec::image::{ImageConfiguration, MediaType};
use serde::Deserialize;

use super::layout::{self, check_platform, write_file};
use super::{ReadMode, Source, Staging, absolute};
use crate::digest::{Digest, HashingWriter, hash_reader};
use crate::error::{Error, IoContext, Result};
use crate::image::blob::{decompress, open_regular, read_capped, sniff_file};
use crate::image::index::parse_doc;
use crate::image::media::Compression;
use crate::image::{Image, Layer, Origin, Rendered, canonical_json, manifest_descriptor};
use crate::layer::entry::{Data, Entry, Kind};
use crate::layer::source::Input;
use crate::platform::Platform;

/// Unpack an archive into a fresh temporary directory. The `tar` crate refuses entries that
/// would land outside it (absolute paths, `..`).
pub(crate) fn unpack(file: &Path, reference: &str) -> Result<crate::staging::Dir> {
    let f = open_regular(file).map_err(|e| {
        Error::image(
            reference,
            match e.kind() {
                io::ErrorKind::NotFound => format!("{} does not exist", file.display()),
                io::ErrorKind::InvalidInput => e.to_string(),
                _ => format!("cannot open {}: {e}", file.display()),
            },
        )
    })?;
    let tmp = crate::staging::dir("lamina-unpack-")
        .ctx(|| "creating a temporary directory".to_owned())?;
    let mut a = tar::Archive::new(BufReader::with_capacity(1 << 20, f));
    a.set_preserve_permissions(false);
    a.set_overwrite(true);
    a.unpack(tmp.path()).map_err(|e| {
        Error::image(
            reference,
            format!("{} is not a readable tar archive: {e}", file.display()),
        )
    })?;
    refuse_outward_links(tmp.path(), file, reference)?;
    Ok(tmp)
}

/// Refuse an unpacked archive holding a symbolic link that resolves outside it (an absolute
/// target, a path that climbs above the root, or a chain of links doing so) or to nothing:
/// reading through it would read a host file into the image. Links that stay inside (`docker
/// save` links a repeated layer to its first copy) are kept. The tar reader has already kept
/// every entry (and hard link) from being written outside.
fn refuse_outward_links(root: &Path, file: &Path, reference: &str) -> Result<()> {
    let canon = fs::canonicalize(root).at("resolving", root)?;
    let mut dirs = vec![root.to_owned()];
    while let Some(dir) = dirs.pop() {
        for e in fs::read_dir(&dir).at("reading", &dir)? {
            let e = e.at("reading", &dir)?;
            let t = e.file_type().at("reading", &e.path())?;
            if t.is_dir() {
                dirs.push(e.path());
            } else if t.is_symlink() {
                let out = !fs::canonicalize(e.path()).is_ok_and(|p| p.starts_with(&canon));
                if out {
                    let rel = e.path();
                    let rel = rel.strip_prefix(root).unwrap_or(&rel);
                    let target = fs::read_link(e.path()).unwrap_or_default();
                    return Err(Error::image(
                        reference,
                        format!(
                            "{}: the entry `{}` is a symbolic link to `{}`, outside the archive (or to nothing); lamina reads only the archive's own files",
                            file.display(),
                            rel.display(),
                            target.display()
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Tar `root` (an OCI layout: `oci-layout`, `index.json`, `blobs/sha256/*`) deterministically.
fn layout_entries(root: &Path) -> Result<Vec<Entry>> {
    let file = |rel: &str, p: PathBuf| -> Result<Entry> {
        let size = fs::metadata(&p).at("reading metadata of", &p)?.len();
        Ok(Entry {
            path: rel.as_bytes().to_vec(),
            mode: 0o644,
            uid: 0,
            gid: 0,
            kind: Kind::File {
                size,
                data: Data::Path(p),
            },
        })
    };
    let mut v = vec![
        Entry::dir(b"blobs".to_vec(), 0o755, 0, 0),
        Entry::dir(b"blobs/sha256".to_vec(), 0o755, 0, 0),
        file("index.json", root.join("index.json"))?,
        file("oci-layout", root.join("oci-layout"))?,
    ];
    let blobs = root.join("blobs").join("sha256");
    for e in fs::read_dir(&blobs).at("reading", &blobs)? {
        let e = e.at("reading", &blobs)?;
        let Some(name) = e.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        v.push(file(&format!("blobs/sha256/{name}"), e.path())?);
    }
    v.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(v)
}

/// Write a tar of `entries` next to `dest` under a temporary name, then rename it into place.
fn write_tar_file(dest: &Path, entries: &[Entry], mtime: u64) -> Result<()> {
    let dest = absolute(dest)?;
    let parent = dest.parent().unwrap_or(Path::new("/")).to_owned();
    fs::create_dir_all(&parent).at("creating", &parent)?;
    let tmp =
        crate::staging::file_in(&parent, ".lamina-").at("creating a temporary file in", &parent)?;
    let f = tmp.reopen().at("opening", tmp.path())?;
    let w = crate::layer::tar::write_tar(
        entries,
        &mut Input::Files,
        mtime,
        io::BufWriter::with_capacity(1 << 20, f),
    )?;
    let f = w
        .into_inner()
        .map_err(|e| e.into_error())
        .at("writing", tmp.path())?;
    f.sync_all().at("writing", tmp.path())?;
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o644))
        .at("setting permissions of", tmp.path())?;
    tmp.persist(&dest).at("saving", &dest)?;
    Ok(())
}

pub fn write_oci_archive(
    file: &Path,
    tag: Option<&str>,
    img: &Rendered,
    staging: Staging,
    mtime: u64,
) -> Result<()> {
    let root = staging.dir.path().to_owned();
    // An archive is written whole: earlier content of the file is replaced, as skopeo does.
    // Everything is tarred into the archive: links in the staging share nothing with it.
    layout::fill(
        &root.join("does-not-exist"),
        &root,
        img,
        &[Path::new("/")],
        None,
    )?;
    let index = oci_spec::image::ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![manifest_descriptor(img, tag)])
        .build()
        .expect("all required index fields are set");
    write_file(&root.join("index.json"), &canonical_json(&index))?;
    let mut entries = layout_entries(&root)?;
    entries.insert(0, marker_entry(&root)?);
    write_tar_file(file, &entries, mtime)
}

/// The marker that makes the archive recognisably lamina's output (its first entry; see
/// [`crate::layer::own`]), written into `dir`.
fn marker_entry(dir: &Path) -> Result<Entry> {
    use crate::layer::own::{MARKER, MARKER_TEXT};
    let path = dir.join(MARKER);
    write_file(&path, MARKER_TEXT)?;
    Ok(Entry {
        path: MARKER.as_bytes().to_vec(),
        mode: 0o644,
        uid: 0,
        gid: 0,
        kind: Kind::File {
            size: MARKER_TEXT.len() as u64,
            data: Data::Path(path),
        },
    })
}

/// One image of a `docker save` archive's `manifest.json`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

pub fn write_docker_archive(
    file: &Path,
    name: Option<&str>,
    img: &Rendered,
    staging: Staging,
    mtime: u64,
) -> Result<()> {
    let dir = staging.dir.path().join("docker");
    fs::create_dir_all(&dir).at("creating", &dir)?;
    let mut entries = Vec::new();
    let mut layer_names = Vec::new();
    let file_entry = |name: String, p: PathBuf, size: u64| Entry {
        path: name.into_bytes(),
        mode: 0o644,
        uid: 0,
        gid: 0,
        kind: Kind::File {
            size,
            data: Data::Path(p),
        },
    };
    for l in &img.layers {
        let name = format!("{}.tar", l.diff_id.hex());
        layer_names.push(name.clone());
        if entries.iter().any(|e: &Entry| e.path == name.as_bytes()) {
            continue;
        }
        // docker-archive layers are uncompressed tars named by their diff_id.
        let out = dir.join(&name);
        let src = l.compressed().map_err(|e| {
            Error::image(format!("docker-archive:{}", file.display()), e.to_string())
        })?;
        let mut w =
            HashingWriter::new(io::BufWriter::new(File::create(&out).at("creating", &out)?));
        let readable = l
            .compression()
            .ok()
            .filter(|c| *c != Compression::Zstd)
            .and_then(|c| decompress(BufReader::new(src), c).ok());
        let Some(mut tar) = readable else {
            return Err(Error::Usage(format!(
                "layer {} has media type {}; docker-archive takes only tar and gzip layers",
                l.digest, l.media_type
            )));
        };
        io::copy(&mut tar, &mut w).ctx(|| format!("uncompressing layer {}", l.digest))?;
        let (_, diff, size) = w.finish();
        if diff != l.diff_id {
            // The layer changed on disk since it was verified: the image is at fault.
            return Err(Error::image(
                format!("docker-archive:{}", file.display()),
                format!(
                    "layer {} uncompresses to {diff}, not its diff_id {}",
                    l.digest, l.diff_id
                ),
            ));
        }
        entries.push(file_entry(name, out, size));
    }
    let config_name = format!("{}.json", img.config_digest.hex());
    let config_path = dir.join(&config_name);
    write_file(&config_path, &img.config)?;
    entries.push(file_entry(
        config_name.clone(),
        config_path,
        img.config.len() as u64,
    ));
    let manifest = serde_json::json!([{
        "Config": config_name,
        "RepoTags": name.map(|n| vec![n.to_owned()]).unwrap_or_default(),
        "Layers": layer_names,
    }]);
    let mpath = dir.join("manifest.json");
    let mbytes = serde_json::to_vec(&manifest).expect("JSON value serializes");
    write_file(&mpath, &mbytes)?;
    entries.push(file_entry(
        "manifest.json".into(),
        mpath,
        mbytes.len() as u64,
    ));
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    entries.insert(0, marker_entry(&dir)?);
    write_tar_file(file, &entries, mtime)
}

/// One layer of a `docker save` archive as a gzip layer: a gzip file as it is (verified when
/// `mode` asks), a plain tar checked against its diff_id and compressed like lamina's own
/// layers. Its compression is sniffed: the archive names no media types.
fn archive_layer(
    path: PathBuf,
    rel: &str,
    diff_id: Digest,
    blobs: &Path,
    mode: ReadMode,
    reference: &str,
    cache: &Path,
) -> Result<Layer> {
    let compression = sniff_file(&path).at("reading", &path)?;
    if compression == Compression::Gzip {
        let (digest, size) = hash_reader(BufReader::new(open_regular(&path).at("reading", &path)?))
            .at("reading", &path)?;
        let layer = Layer {
            media_type: MediaType::ImageLayerGzip,
            digest,
            size,
            diff_id,
            path,
            origin: Origin::Base,
            from: None,
        };
        if mode == ReadMode::Verified {
            let index = layer
                .verify_and_index()
                .map_err(|e| Error::image(reference, format!("{rel}: {e}")))?;
            if let Some(i) = index {
                crate::image::fsindex::save(cache, &layer.diff_id, &i);
            }
        }
        return Ok(layer);
    }
    // Uncompressed: check it against its diff_id, then gzip it like lamina's own layers.
    let (d, _) = hash_reader(BufReader::new(open_regular(&path).at("reading", &path)?))
        .at("reading", &path)?;
    if d != diff_id {
        return Err(Error::image(
            reference,
            format!(
                "layer {rel} has digest {d}, but the config's rootfs.diff_ids says {diff_id}: the archive is corrupt"
            ),
        ));
    }
    let b = crate::layer::gzip_file(
        &path,
        blobs,
        crate::layer::compress::DEFAULT_COMPRESSION_LEVEL,
    )?;
    Ok(Layer {
        media_type: MediaType::ImageLayerGzip,
        digest: b.digest,
        size: b.size,
        diff_id,
        path: b.path,
        origin: Origin::Base,
        from: None,
    })
}

/// Inside an unpacked archive, a path named by its manifest must stay inside, and name one of
/// the archive's regular files. A symbolic link of the archive (`docker save` links repeated
/// layers to their first copy) is followed only to a file the archive holds: one that leads
/// out of it (to a host file such as `/etc/shadow`) is refused, never read. The path returned
/// is the resolved one, free of links.
fn inside(root: &Path, rel: &str, reference: &str) -> Result<PathBuf> {
    let p = Path::new(rel);
    if p.is_absolute()
        || p.components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(Error::image(
            reference,
            format!("manifest.json names `{rel}`, outside the archive"),
        ));
    }
    let missing = || {
        Error::image(
            reference,
            format!("manifest.json names `{rel}`, which the archive does not hold"),
        )
    };
    let root = fs::canonicalize(root).at("resolving", root)?;
    let full = match fs::canonicalize(root.join(p)) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(missing()),
        Err(e) => return Err(Error::image(reference, format!("`{rel}`: {e}"))),
    };
    if !full.starts_with(&root) {
        return Err(Error::image(
            reference,
            format!(
                "`{rel}` is a symbolic link that leads out of the archive; lamina reads only the archive's own files"
            ),
        ));
    }
    let t = fs::symlink_metadata(&full)
        .at("reading", &full)?
        .file_type();
    if !t.is_file() {
        return Err(Error::image(
            reference,
            format!("`{rel}` in the archive is not a regular file"),
        ));
    }
    Ok(full)
}

/// The largest `manifest.json` or config of a `docker save` archive read.
const MAX_DOCKER_JSON: u64 = 8 << 20;

/// A JSON document of an unpacked archive (at most [`MAX_DOCKER_JSON`] bytes), by its
/// resolved path ([`inside`]).
fn read_archive_json(path: &Path, rel: &str, reference: &str) -> Result<Vec<u8>> {
    read_capped(path, MAX_DOCKER_JSON)
        .map_err(|e| Error::image(reference, format!("reading `{rel}`: {e}")))?
        .ok_or_else(|| {
            Error::image(
                reference,
                format!("`{rel}` is larger than {MAX_DOCKER_JSON} bytes: not a plausible {rel}"),
            )
        })
}

/// The image of a `docker save` archive's `manifest.json` that `name` (a `NAME:TAG` among
/// its `RepoTags`) names, or its only one.
fn select_entry<'a>(
    list: &'a [DockerManifestEntry],
    name: Option<&str>,
    reference: &str,
) -> Result<&'a DockerManifestEntry> {
    let tags = |e: &DockerManifestEntry| e.repo_tags.clone().unwrap_or_default();
    let found = match name {
        Some(n) => list
            .iter()
            .find(|e| tags(e).iter().any(|t| t == n))
            .ok_or_else(|| {
                let all: Vec<String> = list.iter().flat_map(tags).collect();
                Error::image(
                    reference,
                    format!("holds no image named `{n}`; it has: {}", all.join(", ")),
                )
            })?,
        None => match list {
            [one] => one,
            [] => return Err(Error::image(reference, "manifest.json lists no images")),
            many => {
                let all: Vec<String> = many.iter().flat_map(tags).collect();
                return Err(Error::image(
                    reference,
                    format!(
                        "holds {} images; name one as docker-archive:FILE:NAME:TAG ({})",
                        many.len(),
                        all.join(", ")
                    ),
                ));
            }
        },
    };
    Ok(found)
}

pub fn read_docker_archive(
    file: &Path,
    name: Option<&str>,
    platform: Option<Platform>,
    mode: ReadMode,
    reference: &str,
    cache: &Path,
) -> Result<Source> {
    let memo = memo_path(file, name, cache);
    if let Some(m) = &memo
        && let Some(src) = from_memo(m, platform, mode, reference, cache)
    {
        return src;
    }
    let tmp = unpack(file, reference)?;
    let root = tmp.path();
    let mpath = match inside(root, "manifest.json", reference) {
        Ok(p) => p,
        Err(_) if fs::symlink_metadata(root.join("manifest.json")).is_err() => {
            return Err(Error::image(
                reference,
                "has no manifest.json: not a docker-archive",
            ));
        }
        Err(e) => return Err(e),
    };
    let mbytes = read_archive_json(&mpath, "manifest.json", reference)?;
    let list: Vec<DockerManifestEntry> = serde_json::from_slice(&mbytes)
        .map_err(|e| Error::image(reference, format!("manifest.json is not valid: {e}")))?;
    let entry = select_entry(&list, name, reference)?;
    let cpath = inside(root, &entry.config, reference)?;
    let cbytes = read_archive_json(&cpath, &entry.config, reference)?;
    let config: ImageConfiguration = parse_doc(&cbytes, &format!("config {}", entry.config))
        .map_err(|m| Error::image(reference, m))?;
    check_platform(&config, platform, reference)?;
    let diff_ids = config.rootfs().diff_ids();
    if diff_ids.len() != entry.layers.len() {
        return Err(Error::image(
            reference,
            format!(
                "manifest.json lists {} layers but the config's rootfs.diff_ids has {}",
                entry.layers.len(),
                diff_ids.len()
            ),
        ));
    }
    let blobs = root.join(".lamina-blobs");
    fs::create_dir_all(&blobs).at("creating", &blobs)?;
    let mut layers = Vec::new();
    for (rel, diff) in entry.layers.iter().zip(diff_ids) {
        let path = inside(root, rel, reference)?;
        let diff_id: Digest = diff
            .parse()
            .map_err(|e| Error::image(reference, format!("config rootfs.diff_ids: {e}")))?;
        layers.push(archive_layer(
            path, rel, diff_id, &blobs, mode, reference, cache,
        )?);
    }
    if let Some(m) = &memo {
        remember(m, &cbytes, &layers, cache);
    }
    Ok(source_of(config, layers, cbytes, Some(tmp)))
}

/// The image of a docker archive: the manifest is lamina's own rendering (a docker archive has
/// none) of the config as stored.
fn source_of(
    config: ImageConfiguration,
    layers: Vec<Layer>,
    cbytes: Vec<u8>,
    keep: Option<crate::staging::Dir>,
) -> Source {
    let image = Image {
        config,
        layers,
        annotations: Default::default(),
    };
    let mut src = Source::rendered(image, keep);
    if src.config != cbytes {
        src.config_digest = Digest::of(&cbytes);
        src.config_size = cbytes.len() as u64;
        src.config = cbytes;
        let m = crate::image::manifest_with_config(&src.image, &src.config);
        src.manifest_digest = Digest::of(&m);
        src.manifest = m;
    }
    src
}

/// The largest memo read back (a config and a few hundred layers fit many times over).
const MAX_MEMO: u64 = 4 << 20;

/// What reading a docker archive gave, remembered: its config as stored and its layers as
/// gzip blobs of the cache.
#[derive(serde::Serialize, Deserialize)]
struct Memo {
    config: String,
    layers: Vec<MemoLayer>,
}

#[derive(serde::Serialize, Deserialize)]
struct MemoLayer {
    digest: String,
    size: u64,
    diff_id: String,
}

/// `<cache>/archives/<key>.json`: the memo of the archive `file` (the image `name` in it), keyed
/// by the file's device, inode, size and modification time in nanoseconds — the rule verified
/// blobs are remembered by (see `layout::verified_marker`): every write changes one of them.
fn memo_path(file: &Path, name: Option<&str>, cache: &Path) -> Option<PathBuf> {
    use sha2::{Digest as _, Sha256};
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(file).ok()?;
    let mut h = Sha256::new();
    h.update(b"docker-archive memo 1\0");
    h.update(name.unwrap_or("").as_bytes());
    h.update(b"\0");
    for v in [
        m.dev(),
        m.ino(),
        m.len(),
        m.mtime() as u64,
        m.mtime_nsec() as u64,
    ] {
        h.update(v.to_le_bytes());
    }
    Some(
        cache
            .join("archives")
            .join(format!("{}.json", hex::encode(h.finalize()))),
    )
}

/// The image as remembered in the memo `m`, its gzip blobs in the cache, without unpacking or
/// compressing anything; `None` when there is no usable memo (missing, unreadable, a blob gone
/// from the cache), and the archive is then read in full.
fn from_memo(
    m: &Path,
    platform: Option<Platform>,
    mode: ReadMode,
    reference: &str,
    cache: &Path,
) -> Option<Result<Source>> {
    let f = File::open(m).ok()?;
    let mut bytes = Vec::new();
    io::Read::read_to_end(&mut io::Read::take(f, MAX_MEMO), &mut bytes).ok()?;
    let memo: Memo = serde_json::from_slice(&bytes).ok()?;
    let cbytes = memo.config.into_bytes();
    let config: ImageConfiguration = parse_doc(&cbytes, "the remembered config").ok()?;
    let blobs = crate::cache::blobs(cache);
    let mut layers = Vec::with_capacity(memo.layers.len());
    for l in memo.layers {
        let digest: Digest = l.digest.parse().ok()?;
        let path = blobs.join(digest.hex());
        if fs::metadata(&path).ok()?.len() != l.size {
            return None;
        }
        layers.push(Layer {
            media_type: MediaType::ImageLayerGzip,
            digest,
            size: l.size,
            diff_id: l.diff_id.parse().ok()?,
            path,
            origin: Origin::Base,
            from: None,
        });
    }
    if let Err(e) = check_platform(&config, platform, reference) {
        return Some(Err(e));
    }
    if mode == ReadMode::Verified
        && let Err(e) = layout::verify_layers(&layers, reference, cache)
    {
        return Some(Err(e));
    }
    crate::cache::touch(m);
    Some(Ok(source_of(config, layers, cbytes, None)))
}

/// Remember what reading an archive gave (best effort: without a memo the archive is only read
/// in full again): its layers' gzip blobs linked into the cache (and marked verified: lamina
/// computed their digests from the bytes it wrote or checked), then the memo, written whole.
fn remember(m: &Path, cbytes: &[u8], layers: &[Layer], cache: &Path) {
    let Ok(config) = String::from_utf8(cbytes.to_vec()) else {
        return;
    };
    let blobs = crate::cache::blobs(cache);
    if fs::create_dir_all(&blobs).is_err() {
        return;
    }
    let mut remembered = Vec::with_capacity(layers.len());
    for l in layers {
        if crate::cache::link_blob(&l.path, &blobs, l.digest.hex()).is_err() {
            return;
        }
        let cached = Layer {
            path: blobs.join(l.digest.hex()),
            ..l.clone()
        };
        layout::remember_written(&cached, cache);
        remembered.push(MemoLayer {
            digest: l.digest.to_string(),
            size: l.size,
            diff_id: l.diff_id.to_string(),
        });
    }
    let memo = Memo {
        config,
        layers: remembered,
    };
    let Some(dir) = m.parent() else { return };
    if fs::create_dir_all(dir).is_err() {
        return;
    }
    let Ok(json) = serde_json::to_vec(&memo) else {
        return;
    };
    if let Ok(tmp) = crate::staging::file_in(dir, ".memo-")
        && let Ok(mut f) = tmp.reopen()
        && io::Write::write_all(&mut f, &json).is_ok()
    {
        let _ = tmp.persist(m);
    }
}
