//! The OCI image layout transport (`oci:DIR[:TAG]`): `oci-layout`, `index.json`, `blobs/sha256`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use oci_spec::image::{
    ANNOTATION_REF_NAME, Descriptor, ImageConfiguration, ImageIndex, ImageIndexBuilder,
    ImageManifest, MediaType,
};

use super::{ReadMode, Resolved, Source, Staging, read_json_blob, replace};
use crate::cache::{clone_blob, link_blob};
use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::image::blob::read_capped;
use crate::image::fsindex;
use crate::image::index::{IndexAt, is_index, parse_doc, parse_index, walk};
use crate::image::{
    Image, Layer, Origin, Rendered, canonical_json, manifest_descriptor, oci_layer_media_type,
};
use crate::platform::{Platform, describe};

const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

fn tag_of(d: &Descriptor) -> Option<&str> {
    d.annotations()
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_REF_NAME))
        .map(String::as_str)
}

fn digest_of(d: &Descriptor, reference: &str) -> Result<Digest> {
    Digest::from_oci(d.digest()).map_err(|e| Error::image(reference, e))
}

/// A nested index of a layout, by its descriptor.
pub fn load_index(blobs: &Path, d: &Descriptor, reference: &str) -> Result<IndexAt> {
    let digest = digest_of(d, reference)?;
    let bytes = read_json_blob(blobs, &digest, d.size(), "index", reference)?;
    parse_index(&bytes, &digest, reference)
}

/// Read a manifest (by descriptor) and its config and layers from `blobs`.
pub fn read_manifest(
    blobs: &Path,
    desc: &Descriptor,
    platform: Option<Platform>,
    mode: ReadMode,
    reference: &str,
    cache: &Path,
) -> Result<Source> {
    let mdigest = digest_of(desc, reference)?;
    let mbytes = read_json_blob(blobs, &mdigest, desc.size(), "manifest", reference)?;
    let manifest: ImageManifest = parse_doc(&mbytes, &format!("manifest {mdigest}"))
        .map_err(|m| Error::image(reference, m))?;
    let cdesc = manifest.config();
    let cdigest = digest_of(cdesc, reference)?;
    let cbytes = read_json_blob(blobs, &cdigest, cdesc.size(), "config", reference)?;
    let config: ImageConfiguration =
        parse_doc(&cbytes, &format!("config {cdigest}")).map_err(|m| Error::image(reference, m))?;
    check_platform(&config, platform, reference)?;
    let layers = layers_of(&manifest, &config, |d| blobs.join(d.hex()), reference)?;
    match mode {
        ReadMode::Verified => verify_layers(&layers, reference, cache)?,
        ReadMode::Blobs => {
            for l in &layers {
                check_blob_size(l, reference)?;
            }
        }
        ReadMode::Metadata => {}
    }
    Ok(Source {
        media_type: desc.media_type().clone(),
        config: cbytes,
        image: Image {
            config,
            layers,
            annotations: Default::default(),
        },
        manifest: mbytes,
        manifest_digest: mdigest,
        config_digest: cdigest,
        config_size: cdesc.size(),
        _keep: None,
    })
}

/// A layer blob is there, a regular file, with the size its descriptor says.
fn check_blob_size(l: &Layer, reference: &str) -> Result<()> {
    let len = l
        .compressed()
        .and_then(|f| f.metadata())
        .map_err(|e| Error::image(reference, e.to_string()))?
        .len();
    if len != l.size {
        return Err(Error::image(
            reference,
            format!(
                "blob {} has {len} bytes but its descriptor says {}",
                l.digest, l.size
            ),
        ));
    }
    Ok(())
}

/// The config must describe the platform asked for (a single-platform base of the wrong
/// architecture would give an image that fails with `exec format error`).
pub fn check_platform(
    config: &ImageConfiguration,
    platform: Option<Platform>,
    reference: &str,
) -> Result<()> {
    if let Some(p) = platform {
        let (os, arch) = (config.os().to_string(), config.architecture().to_string());
        if !p.matches(&os, &arch, config.variant().as_deref()) {
            return Err(Error::image(
                reference,
                format!(
                    "has no {p} image; it has {}",
                    describe(&os, &arch, config.variant().as_deref())
                ),
            ));
        }
    }
    Ok(())
}

/// Pair the manifest's layer descriptors with the config's diff_ids.
pub fn layers_of(
    manifest: &ImageManifest,
    config: &ImageConfiguration,
    path_of: impl Fn(&Digest) -> std::path::PathBuf,
    reference: &str,
) -> Result<Vec<Layer>> {
    let diff_ids = config.rootfs().diff_ids();
    if diff_ids.len() != manifest.layers().len() {
        return Err(Error::image(
            reference,
            format!(
                "the manifest has {} layers but the config's rootfs.diff_ids has {}",
                manifest.layers().len(),
                diff_ids.len()
            ),
        ));
    }
    manifest
        .layers()
        .iter()
        .zip(diff_ids)
        .map(|(d, diff)| {
            let digest = digest_of(d, reference)?;
            let diff_id: Digest = diff
                .parse()
                .map_err(|e| Error::image(reference, format!("config rootfs.diff_ids: {e}")))?;
            let media_type = oci_layer_media_type(d.media_type());
            let mts = media_type.to_string();
            if !mts.starts_with("application/vnd.oci.image.layer.") {
                return Err(Error::image(
                    reference,
                    format!(
                        "layer {digest} has media type {mts}, which is not a container image layer"
                    ),
                ));
            }
            Ok(Layer {
                media_type,
                path: path_of(&digest),
                digest,
                size: d.size(),
                diff_id,
                origin: Origin::Base,
                from: None,
            })
        })
        .collect()
}

/// The marker that a blob file, as it is now, was fully verified against its digest and
/// diff_id: its path under the cache's `verified/`, keyed by both digests and the file's
/// device, inode, size and modification time in nanoseconds, which every write changes. (Not
/// the change time: lamina hard-links base blobs into its outputs, which changes it.) This
/// guards against corruption and partial writes; it does not re-verify a file someone rewrote
/// and then set back to its old mtime.
fn verified_marker(l: &Layer, cache: &Path) -> Option<std::path::PathBuf> {
    use sha2::{Digest as _, Sha256};
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(&l.path).ok()?;
    let mut h = Sha256::new();
    h.update(l.digest.to_string());
    h.update(l.diff_id.to_string());
    for v in [
        m.dev(),
        m.ino(),
        m.len(),
        m.mtime() as u64,
        m.mtime_nsec() as u64,
    ] {
        h.update(v.to_le_bytes());
    }
    Some(cache.join("verified").join(hex::encode(h.finalize())))
}

/// Remember as verified a layer blob lamina itself just wrote, whose digest and diff_id it
/// computed from the very bytes it wrote: a later `push` or `check` of an output holding that
/// file (a hard link of it) does not decompress it again to verify it. Best effort.
pub(crate) fn remember_written(l: &Layer, cache: &Path) {
    write_marker(verified_marker(l, cache));
}

/// Leave a verified marker (best effort: without it the blob is only verified again later).
fn write_marker(marker: Option<std::path::PathBuf>) {
    if let Some(m) = marker
        && let Some(dir) = m.parent()
        && fs::create_dir_all(dir).is_ok()
    {
        // Ignored for the same reason: nothing is lost but a later re-check.
        let _ = fs::write(&m, b"");
    }
}

/// Verify one layer unless its marker says it was, remembering (best effort) that it was and
/// what its tar holds (the Lambda gate replays that instead of decompressing it again).
fn verify_layer(l: &Layer, cache: &Path) -> std::io::Result<()> {
    let marker = verified_marker(l, cache);
    if marker.as_ref().is_some_and(|m| m.exists()) {
        return Ok(());
    }
    let index = match l.verify_and_index() {
        Ok(i) => i,
        Err(e) => {
            // A damaged blob of lamina's own cache (addressed by content, never edited in
            // place) is removed, so that the next read fetches it again instead of failing on
            // it forever. A blob elsewhere (a user's layout) is left as it is.
            if e.kind() == std::io::ErrorKind::InvalidData
                && l.path.parent() == Some(crate::cache::blobs(cache).as_path())
            {
                let _ = fs::remove_file(&l.path);
            }
            return Err(e);
        }
    };
    if let Some(i) = index {
        fsindex::save(cache, &l.diff_id, &i);
    }
    // The marker names the file as it was before it was read, so a file changed meanwhile
    // gets none.
    write_marker(marker);
    Ok(())
}

/// Check every layer's bytes, a few at a time (reading and hashing are the cost). A blob file
/// verified before and untouched since is not read again (base images are checked on every
/// build: an AWS base would cost about half a second each time).
pub fn verify_layers(layers: &[Layer], reference: &str, cache: &Path) -> Result<()> {
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(4);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let errors = std::sync::Mutex::new(Vec::<(usize, std::io::Error)>::new());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(l) = layers.get(i) else { break };
                    if let Err(e) = verify_layer(l, cache) {
                        errors
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push((i, e));
                    }
                }
            });
        }
    });
    let mut errs = errors.into_inner().unwrap_or_else(|p| p.into_inner());
    errs.sort_by_key(|(i, _)| *i);
    match errs.into_iter().next() {
        Some((_, e)) => Err(Error::image(reference, e.to_string())),
        None => Ok(()),
    }
}

/// The largest `index.json` read: about 25,000 descriptors. A larger one is refused unread.
pub const MAX_INDEX_JSON: u64 = 8 << 20;

/// A layout's `index.json`, read (a regular file, at most [`MAX_INDEX_JSON`] bytes) and parsed;
/// errors name the file (and the field at fault).
pub fn read_index_json(path: &Path, reference: &str) -> Result<ImageIndex> {
    let shown = path.display();
    let bytes = read_capped(path, MAX_INDEX_JSON)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidInput => Error::image(reference, e.to_string()),
            _ => Error::image(reference, format!("cannot read {shown}: {e}")),
        })?
        .ok_or_else(|| {
            Error::image(
                reference,
                format!("{shown} is larger than {MAX_INDEX_JSON} bytes: not a plausible index"),
            )
        })?;
    parse_doc(&bytes, &shown.to_string()).map_err(|m| Error::image(reference, m))
}

/// The descriptors of `index.json` that `tag` names (all of them without a tag).
fn candidates(dir: &Path, tag: Option<&str>, reference: &str) -> Result<Vec<Descriptor>> {
    if !dir.join("oci-layout").is_file() {
        return Err(Error::image(
            reference,
            format!(
                "{} is not an OCI image layout (no oci-layout file)",
                dir.display()
            ),
        ));
    }
    let index_path = dir.join("index.json");
    let index = read_index_json(&index_path, reference)?;
    let found: Vec<Descriptor> = index
        .manifests()
        .iter()
        .filter(|d| tag.is_none() || tag_of(d) == tag)
        .cloned()
        .collect();
    if found.is_empty() {
        let tags: Vec<&str> = index.manifests().iter().filter_map(tag_of).collect();
        return Err(Error::image(
            reference,
            match tag {
                Some(t) => format!(
                    "has no image tagged `{t}`; tags present: {}",
                    if tags.is_empty() {
                        "none".to_owned()
                    } else {
                        tags.join(", ")
                    }
                ),
                None => "the layout holds no images".to_owned(),
            },
        ));
    }
    if tag.is_none() && found.len() > 1 && found.iter().any(|d| d.platform().is_none()) {
        let tags: Vec<&str> = found.iter().filter_map(tag_of).collect();
        return Err(Error::image(
            reference,
            format!(
                "holds {} images; name one with :TAG (tags: {})",
                found.len(),
                tags.join(", ")
            ),
        ));
    }
    Ok(found)
}

/// What `oci:DIR[:TAG]` names (see [`super::Opened::resolve`]): an index is an image index
/// blob named alone, or `index.json` itself listing one image per platform under one tag.
pub fn resolve(
    dir: &Path,
    tag: Option<&str>,
    platform: Option<Platform>,
    reference: &str,
) -> Result<Resolved> {
    let found = candidates(dir, tag, reference)?;
    let blobs = dir.join("blobs").join("sha256");
    let mut load = |d: &Descriptor| load_index(&blobs, d, reference);
    if platform.is_some() {
        return Ok(Resolved::Manifest(Box::new(walk(
            &found, platform, reference, &mut load,
        )?)));
    }
    match found.as_slice() {
        [one] if is_index(one.media_type()) => Ok(Resolved::Index(load(one)?)),
        many if many.len() > 1
            && many.iter().all(|d| d.platform().is_some())
            && many.iter().all(|d| tag_of(d) == tag_of(&many[0])) =>
        {
            Ok(Resolved::Index(IndexAt {
                digest: None,
                manifests: many.to_vec(),
            }))
        }
        // One manifest; or several to choose from, which `walk` refuses without a platform.
        _ => Ok(Resolved::Manifest(Box::new(walk(
            &found, None, reference, &mut load,
        )?))),
    }
}

/// The advisory lock file inside a layout: held for the whole read-modify-swap of
/// `index.json`, so concurrent writers of one layout (different tags) serialize instead of
/// losing each other's tags.
const LOCK: &str = ".lamina.lock";

/// Take the exclusive lock of the layout at `dir` (created empty when missing), waiting for
/// another lamina that holds it. The swap at the end of [`write`] replaces the directory the
/// lock file is in, so a lock taken on a file that is no longer the layout's is dropped and
/// taken again on the current one. Returns the lock, and whether `dir` was created.
fn lock_layout(dir: &Path) -> Result<(fs::File, bool)> {
    use std::os::unix::fs::MetadataExt;
    // Refuse what `fill` would refuse before putting a lock file into someone's directory.
    check_destination(dir)?;
    let created = !dir.exists();
    if created {
        fs::create_dir_all(dir).at("creating", dir)?;
    }
    let path = dir.join(LOCK);
    for _ in 0..1000 {
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .at("opening the lock file", &path)?;
        // SAFETY: flock on a descriptor we own; no memory is passed.
        if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&f), libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error()).at("locking", &path);
        }
        let held = f.metadata().at("reading metadata of", &path)?;
        match fs::metadata(&path) {
            Ok(now) if now.dev() == held.dev() && now.ino() == held.ino() => {
                return Ok((f, created));
            }
            // Another writer swapped the layout while we waited: lock the new one.
            _ => continue,
        }
    }
    Err(Error::Io {
        context: format!("locking {}", path.display()),
        cause: std::io::Error::other("the layout kept being replaced while waiting for it"),
    })
}

/// Lay out `img` in the staging directory, taking over the blobs and other images of an
/// existing layout at `dir`, then swap it into place; all under the layout's lock. Blobs in
/// lamina's `cache` are hard-linked; any other (a blob of the user's base layout) is cloned
/// into the cache's blob store once, then hard-linked from there (see [`crate::cache`]).
pub fn write(
    dir: &Path,
    tag: Option<&str>,
    img: &Rendered,
    staging: Staging,
    cache: &Path,
) -> Result<()> {
    let (lock, created) = lock_layout(dir)?;
    let r = write_locked(dir, tag, img, &staging, cache);
    if r.is_err() && created {
        // Leave no empty directory where there was nothing (best effort: another writer may
        // be waiting on the lock, or have written there meanwhile).
        let _ = fs::remove_file(dir.join(LOCK));
        let _ = fs::remove_dir(dir);
    }
    drop(lock);
    r
}

fn write_locked(
    dir: &Path,
    tag: Option<&str>,
    img: &Rendered,
    staging: &Staging,
    cache: &Path,
) -> Result<()> {
    let root = staging.dir.path().to_owned();
    let blobs = staging.blobs();
    let store = crate::cache::blobs(cache);
    let existing = fill(dir, &root, img, &[cache, &root], Some(&store))?;
    let mut manifests: Vec<Descriptor> = existing
        .map(|i| i.manifests().clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|d| match tag {
            Some(t) => tag_of(d) != Some(t),
            None => {
                !(tag_of(d).is_none()
                    && digest_of(d, "").ok().as_ref() == Some(&img.manifest_digest))
            }
        })
        .collect();
    manifests.push(manifest_descriptor(img, tag));
    let index: ImageIndex = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(manifests)
        .build()
        .expect("all required index fields are set");
    write_file(&root.join("index.json"), &canonical_json(&index))?;
    // How a later run knows this layout is lamina's output, never a layer's input.
    let marker = crate::layer::own::MARKER;
    write_file(&root.join(marker), crate::layer::own::MARKER_TEXT)?;
    debug_assert!(blobs.join(img.manifest_digest.hex()).is_file());
    fs::set_permissions(&root, fs::Permissions::from_mode(0o755))
        .at("setting permissions of", &root)?;
    replace(&root, dir)
}

/// Write the blobs and `oci-layout` of `img` under `root`; bring over an existing layout's
/// blobs (hard links: lamina wrote them, and the old layout goes away) and return its index.
/// A layer blob under one of `linkable` is hard-linked; any other is cloned — into `store`
/// once, then hard-linked from there, or straight into the output without a store — so that
/// a blob the user may edit in place (in a base layout) is never shared with the output.
pub fn fill(
    dir: &Path,
    root: &Path,
    img: &Rendered,
    linkable: &[&Path],
    store: Option<&Path>,
) -> Result<Option<ImageIndex>> {
    let blobs = root.join("blobs").join("sha256");
    fs::create_dir_all(&blobs).at("creating", &blobs)?;
    let existing = match check_destination(dir)? {
        true => Some(take_over(dir, &blobs)?),
        false => None,
    };
    for l in &img.layers {
        let hex = l.digest.hex();
        if linkable.iter().any(|d| l.path.starts_with(d)) {
            link_blob(&l.path, &blobs, hex)?;
        } else if let Some(store) = store {
            // A blob the user may edit in place: copied (reflinked where the file system can)
            // into lamina's store once per machine — it was verified by this build's read —
            // and shared from there, so the next output costs a hard link.
            fs::create_dir_all(store).at("creating", store)?;
            clone_blob(&l.path, store, hex)?;
            link_blob(&store.join(hex), &blobs, hex)?;
        } else {
            clone_blob(&l.path, &blobs, hex)?;
        }
    }
    write_file(&blobs.join(img.config_digest.hex()), &img.config)?;
    write_file(&blobs.join(img.manifest_digest.hex()), &img.manifest)?;
    write_file(&root.join("oci-layout"), OCI_LAYOUT)?;
    Ok(existing)
}

/// Whether `dir` holds a layout to add to (`false`: missing or empty); a usage error when it
/// is something lamina will not overwrite (a file, a directory that is not a layout).
fn check_destination(dir: &Path) -> Result<bool> {
    if !dir.exists() {
        return Ok(false);
    }
    if !dir.is_dir() {
        return Err(Error::Usage(format!(
            "{} exists and is not a directory; an oci: destination is a directory",
            dir.display()
        )));
    }
    let empty = fs::read_dir(dir)
        .at("reading", dir)?
        .flatten()
        .all(|e| e.file_name() == LOCK);
    if !empty && !dir.join("oci-layout").is_file() {
        return Err(Error::Usage(format!(
            "{} exists and is not an OCI image layout; lamina will not overwrite it (choose another path or remove it)",
            dir.display()
        )));
    }
    Ok(!empty)
}

/// Link the blobs of the existing layout `dir` into `blobs`, and return its index.
fn take_over(dir: &Path, blobs: &Path) -> Result<ImageIndex> {
    let ip = dir.join("index.json");
    let bytes = fs::read(&ip).at("reading", &ip)?;
    let index = ImageIndex::from_reader(&bytes[..])
        .map_err(|e| Error::Usage(format!("{} is not valid: {e}", ip.display())))?;
    let old = dir.join("blobs").join("sha256");
    if old.is_dir() {
        for e in fs::read_dir(&old).at("reading", &old)? {
            let e = e.at("reading", &old)?;
            let name = e.file_name();
            let Some(hex) = name.to_str().filter(|n| !n.starts_with('.')) else {
                continue;
            };
            link_blob(&e.path(), blobs, hex)?;
        }
    }
    Ok(index)
}

pub fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    fs::write(path, bytes).at("writing", path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o644)).at("setting permissions of", path)
}
