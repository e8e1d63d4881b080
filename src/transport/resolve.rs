//! The one read surface: [`Opened::open`] reaches a source once (connects to a registry,
//! unpacks an archive), [`Opened::resolve`] says what a reference names — an index, or one
//! image manifest for a platform — and [`Opened::read`] reads the image. `check`, `pull`,
//! `build` and `run` all go through here, so a reference is resolved one way and a registry
//! is connected to once per command. Network work is awaited; unpacking archives and reading
//! (hashing) layers run on the blocking pool.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use oci_spec::image::{Descriptor, MediaType};

use super::{ReadMode, Session, Source, archive, layout};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::image::Image;
use crate::image::index::{
    IndexAt, Step, is_index, is_manifest, parse_index, step, too_deep, walk,
};
use crate::platform::Platform;
use crate::reference::{ImageRef, RegistryRef};
use crate::registry::{Client, Options};
use crate::task::blocking;

/// What a reference names.
#[derive(Debug, Clone)]
pub enum Resolved {
    /// An index (or an `index.json` listing one image per platform), resolved without a
    /// platform: [`Opened::read`] chooses from it.
    Index(IndexAt),
    /// One image manifest.
    Manifest(Box<Descriptor>),
    /// A source with no manifest or index of its own (`scratch`, a `docker save` archive):
    /// its image is rendered when read.
    Unindexed,
}

/// A source reached once: reads and resolutions share its connection or unpacked copy.
pub struct Opened {
    shown: String,
    cache: PathBuf,
    at: At,
}

enum At {
    Scratch,
    /// An OCI layout: a directory, or an unpacked `oci-archive` (kept alive by `keep`).
    Layout {
        dir: PathBuf,
        tag: Option<String>,
        keep: Option<crate::staging::Dir>,
    },
    DockerArchive {
        file: PathBuf,
        name: Option<String>,
    },
    Registry {
        r: RegistryRef,
        session: Session,
        blobs: PathBuf,
    },
}

impl Opened {
    /// Reach `r`: connect and authenticate to a registry, unpack an `oci-archive`.
    pub async fn open(r: &ImageRef, opts: &Options) -> Result<Opened> {
        let shown = r.to_string();
        let at = match r {
            ImageRef::Scratch => At::Scratch,
            ImageRef::Oci { dir, tag } => At::Layout {
                dir: dir.clone(),
                tag: tag.clone(),
                keep: None,
            },
            ImageRef::OciArchive { file, tag } => {
                let (file, name) = (file.clone(), shown.clone());
                let tmp = blocking("unpacking the archive", move || {
                    archive::unpack(&file, &name)
                })
                .await?;
                At::Layout {
                    dir: tmp.path().to_owned(),
                    tag: tag.clone(),
                    keep: Some(tmp),
                }
            }
            ImageRef::DockerArchive { file, name } => At::DockerArchive {
                file: file.clone(),
                name: name.clone(),
            },
            ImageRef::Docker(rr) => {
                let client = Client::connect(&rr.registry, rr.api_host(), opts)
                    .await
                    .map_err(|e| unreachable_image(e, &shown))?;
                At::Registry {
                    r: rr.clone(),
                    session: Session::new(Arc::new(client)),
                    blobs: crate::cache::blobs(&opts.cache_dir),
                }
            }
        };
        Ok(Opened {
            shown,
            cache: opts.cache_dir.clone(),
            at,
        })
    }

    /// What the reference names. With `platform`, always the manifest for it (indexes walked);
    /// without, an index is returned as one, for the caller to judge.
    pub async fn resolve(&self, platform: Option<Platform>) -> Result<Resolved> {
        match &self.at {
            At::Scratch | At::DockerArchive { .. } => Ok(Resolved::Unindexed),
            At::Layout { dir, tag, .. } => {
                // A few small JSON files: read in place.
                layout::resolve(dir, tag.as_deref(), platform, &self.shown)
            }
            At::Registry { r, session, blobs } => {
                resolve_registry(session, r, platform, blobs, &self.shown).await
            }
        }
    }

    /// Read the image `resolved` names (choosing `platform` from an index), as far as `mode`
    /// says. Consumes the source: the image's files may live in it.
    pub async fn read(
        self,
        resolved: &Resolved,
        platform: Option<Platform>,
        mode: ReadMode,
    ) -> Result<Source> {
        let (shown, cache) = (self.shown, self.cache);
        match self.at {
            At::Scratch => Ok(Source::rendered(
                Image::scratch(platform.unwrap_or_default()),
                None,
            )),
            At::DockerArchive { file, name } => {
                blocking("reading the archive", move || {
                    archive::read_docker_archive(
                        &file,
                        name.as_deref(),
                        platform,
                        mode,
                        &shown,
                        &cache,
                    )
                })
                .await
            }
            At::Layout { dir, keep, .. } => {
                let resolved = resolved.clone();
                blocking("reading the image", move || {
                    let blobs = dir.join("blobs").join("sha256");
                    let desc = manifest_of(&resolved, platform, &shown, &mut |d| {
                        layout::load_index(&blobs, d, &shown)
                    })?;
                    let mut src =
                        layout::read_manifest(&blobs, &desc, platform, mode, &shown, &cache)?;
                    src._keep = keep;
                    Ok(src)
                })
                .await
            }
            At::Registry { r, session, blobs } => {
                let desc = match resolved {
                    Resolved::Index(idx) => {
                        walk_registry(&session, &r, &idx.manifests, platform, &blobs, &shown)
                            .await?
                    }
                    other => manifest_of(other, platform, &shown, &mut |_| Err(unindexed(&shown)))?,
                };
                let at = RegistryAt {
                    session: &session,
                    r: &r,
                    blobs,
                    shown,
                    cache,
                };
                read_registry(at, desc, platform, mode).await
            }
        }
    }

    /// Resolve for `platform` and read: what [`super::read`] does.
    pub async fn read_for(self, platform: Option<Platform>, mode: ReadMode) -> Result<Source> {
        let resolved = self.resolve(platform).await?;
        self.read(&resolved, platform, mode).await
    }
}

/// A registry that could not be reached (no HTTP status): the message also names the image
/// and the way to work without the registry — a copy pulled where it is reachable.
fn unreachable_image(e: Error, shown: &str) -> Error {
    e.when_unreachable(|message| {
        format!(
            "{shown}: {message}. To use it without reaching the registry, copy it once where \
             the registry is reachable: `lamina pull {shown} oci:DIR`, then name `oci:DIR` \
             instead (`base = \"oci:DIR\"` in lamina.toml)"
        )
    })
}

/// The manifest descriptor `resolved` leads to for `platform`.
fn manifest_of(
    resolved: &Resolved,
    platform: Option<Platform>,
    shown: &str,
    load: &mut dyn FnMut(&Descriptor) -> Result<IndexAt>,
) -> Result<Descriptor> {
    match resolved {
        Resolved::Manifest(d) => Ok(d.as_ref().clone()),
        Resolved::Index(idx) => walk(&idx.manifests, platform, shown, load),
        Resolved::Unindexed => Err(unindexed(shown)),
    }
}

fn unindexed(shown: &str) -> Error {
    Error::Internal(format!(
        "{shown}: an unindexed source resolved for a layout or registry"
    ))
}

fn digest_of(d: &Descriptor, shown: &str) -> Result<Digest> {
    Digest::from_oci(d.digest()).map_err(|e| Error::image(shown, e))
}

/// GET the manifest or index `reference` (tag or digest) into the cache.
async fn get_stored(
    session: &Session,
    r: &RegistryRef,
    reference: &str,
    blobs: &Path,
) -> Result<(Vec<u8>, oci_spec::image::MediaType, Digest)> {
    let got = crate::registry::pull::get_manifest(&session.client, r, reference).await?;
    // One small file, written in place.
    crate::registry::pull::store(blobs, &got.2, &got.0)?;
    Ok(got)
}

/// A nested index of a registry image, by its descriptor.
async fn registry_index(
    session: &Session,
    r: &RegistryRef,
    d: &Descriptor,
    blobs: &Path,
    shown: &str,
) -> Result<IndexAt> {
    let digest = digest_of(d, shown)?;
    let (bytes, _, digest) = get_stored(session, r, &digest.to_string(), blobs).await?;
    parse_index(&bytes, &digest, shown)
}

/// [`walk`] for a registry index: the same steps, nested indexes fetched.
async fn walk_registry(
    session: &Session,
    r: &RegistryRef,
    descs: &[Descriptor],
    platform: Option<Platform>,
    blobs: &Path,
    shown: &str,
) -> Result<Descriptor> {
    let mut descs = descs.to_vec();
    for _ in 0..=crate::image::index::MAX_DEPTH {
        match step(&descs, platform, shown)? {
            Step::Index(d) => {
                descs = registry_index(session, r, &d, blobs, shown)
                    .await?
                    .manifests
            }
            Step::Manifest(d) => return Ok(d),
        }
    }
    Err(too_deep(shown))
}

async fn resolve_registry(
    session: &Session,
    r: &RegistryRef,
    platform: Option<Platform>,
    blobs: &Path,
    shown: &str,
) -> Result<Resolved> {
    let (bytes, mt, digest) = get_stored(session, r, &r.manifest_reference(), blobs).await?;
    if is_index(&mt) {
        let idx = parse_index(&bytes, &digest, shown)?;
        if platform.is_none() {
            return Ok(Resolved::Index(idx));
        }
        let desc = walk_registry(session, r, &idx.manifests, platform, blobs, shown).await?;
        return Ok(Resolved::Manifest(Box::new(desc)));
    }
    if !is_manifest(&mt) {
        return Err(Error::image(
            shown,
            format!("is a {mt}, not a container image"),
        ));
    }
    Ok(Resolved::Manifest(Box::new(Descriptor::new(
        mt,
        bytes.len() as u64,
        digest.to_oci(),
    ))))
}

/// A registry source being read: its connection, where its blobs are cached, how it is shown.
struct RegistryAt<'a> {
    session: &'a Session,
    r: &'a RegistryRef,
    blobs: PathBuf,
    shown: String,
    cache: PathBuf,
}

/// Read a registry image by its manifest descriptor: the manifest (if an index named it) and
/// the blobs `mode` needs fetched into the cache, then read from there like a layout (on the
/// blocking pool: a verified read hashes every layer).
async fn read_registry(
    at: RegistryAt<'_>,
    desc: Descriptor,
    platform: Option<Platform>,
    mode: ReadMode,
) -> Result<Source> {
    let RegistryAt {
        session,
        r,
        blobs,
        shown,
        cache,
    } = at;
    let digest = digest_of(&desc, &shown)?;
    if !blobs.join(digest.hex()).is_file() {
        get_stored(session, r, &digest.to_string(), &blobs).await?;
    }
    let layers = mode != ReadMode::Metadata;
    // The config first: a single-platform image of another platform is refused before a
    // layer is downloaded (an index lacking the platform was refused when walked).
    crate::registry::pull::fetch_blobs(session.client.clone(), r, &desc, &blobs, false).await?;
    if platform.is_some() {
        check_cached_platform(&blobs, &desc, platform, &shown)?;
    }
    if layers {
        crate::registry::pull::fetch_blobs(session.client.clone(), r, &desc, &blobs, true).await?;
    }
    let from = (r.registry.clone(), r.repository.clone());
    blocking("reading the image", move || {
        let mut src = layout::read_manifest(&blobs, &desc, platform, mode, &shown, &cache)?;
        for l in &mut src.image.layers {
            l.from = Some(from.clone());
        }
        Ok(src)
    })
    .await
}

/// Refuse a cached manifest whose config describes another platform than `platform`: read
/// from the cache (two small files, capped), before any layer is fetched.
fn check_cached_platform(
    blobs: &Path,
    desc: &Descriptor,
    platform: Option<Platform>,
    shown: &str,
) -> Result<()> {
    use crate::error::IoContext;
    let read = |d: &Digest| {
        let path = blobs.join(d.hex());
        std::fs::read(&path).at("reading", &path)
    };
    let bytes = read(&digest_of(desc, shown)?)?;
    let m = oci_spec::image::ImageManifest::from_reader(&bytes[..])
        .map_err(|e| Error::image(shown, format!("its manifest is not valid: {e}")))?;
    let config = read(&digest_of(m.config(), shown)?)?;
    let config = oci_spec::image::ImageConfiguration::from_reader(&config[..])
        .map_err(|e| Error::image(shown, format!("its config is not valid: {e}")))?;
    layout::check_platform(&config, platform, shown)
}

/// A registry image pinned by digest, as far as the blob cache holds it.
pub enum Cached {
    /// Everything is there: the manifest for the platform, and the index it came from.
    Ready(Box<Descriptor>, Option<Digest>),
    /// What is missing, each named (`manifest sha256:…`, `layer sha256:… (31457280 bytes)`).
    Missing(Vec<String>),
}

/// Whether the image `digest` names (a manifest, or an index to walk for `platform`) is in
/// the blob cache under `cache` whole: the documents, the config and every layer with its
/// size. Reads only the cache (a few small files, capped and verified): no network. A cached
/// document whose bytes do not match its digest is removed (the cache is lamina's own, addressed
/// by content: such a file is damage, never data) and reported missing, so the caller fetches it
/// again, or, offline, names it.
pub fn cached(
    cache: &Path,
    digest: &Digest,
    platform: Option<Platform>,
    shown: &str,
) -> Result<Cached> {
    let blobs = crate::cache::blobs(cache);
    let present = |d: &Digest| blobs.join(d.hex()).is_file();
    if !present(digest) {
        return Ok(Cached::Missing(vec![format!("manifest {digest}")]));
    }
    let size = |d: &Digest| std::fs::metadata(blobs.join(d.hex())).map_or(0, |m| m.len());
    let Some(bytes) = read_or_evict(&blobs, digest, size(digest), shown)? else {
        return Ok(Cached::Missing(vec![format!(
            "manifest {digest} (the cached copy was damaged and is removed)"
        )]));
    };
    let declared = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| {
            let mt = v
                .get("mediaType")
                .and_then(|m| m.as_str())
                .map(str::to_owned);
            mt.or_else(|| {
                v.get("manifests")
                    .map(|_| MediaType::ImageIndex.to_string())
            })
        })
        .unwrap_or_else(|| MediaType::ImageManifest.to_string());
    let mt = MediaType::from(declared.as_str());
    let (desc, index) = if is_index(&mt) {
        let idx = parse_index(&bytes, digest, shown)?;
        let mut missing = Vec::new();
        let walked = walk(&idx.manifests, platform, shown, &mut |d| {
            let nested = digest_of(d, shown)?;
            if !present(&nested) {
                missing.push(format!("index {nested}"));
                return Err(Error::image(shown, "a nested index is not cached"));
            }
            layout::load_index(&blobs, d, shown)
        });
        if !missing.is_empty() {
            return Ok(Cached::Missing(missing));
        }
        (walked?, Some(digest.clone()))
    } else {
        let d = Descriptor::new(mt, bytes.len() as u64, digest.to_oci());
        (d, None)
    };
    let mdigest = digest_of(&desc, shown)?;
    if !present(&mdigest) {
        return Ok(Cached::Missing(vec![format!("manifest {mdigest}")]));
    }
    let Some(mbytes) = read_or_evict(&blobs, &mdigest, desc.size(), shown)? else {
        return Ok(Cached::Missing(vec![format!(
            "manifest {mdigest} (the cached copy was damaged and is removed)"
        )]));
    };
    let m = oci_spec::image::ImageManifest::from_reader(&mbytes[..])
        .map_err(|e| Error::image(shown, format!("manifest {mdigest} is not valid: {e}")))?;
    let mut missing = Vec::new();
    for (what, d) in
        std::iter::once(("config", m.config())).chain(m.layers().iter().map(|l| ("layer", l)))
    {
        let dg = digest_of(d, shown)?;
        if size(&dg) != d.size() || !present(&dg) {
            missing.push(format!("{what} {dg} ({} bytes)", d.size()));
        }
    }
    if !missing.is_empty() {
        return Ok(Cached::Missing(missing));
    }
    Ok(Cached::Ready(Box::new(desc), index))
}

/// A manifest or index from the blob cache, `None` (and the file removed, with a warning on
/// stderr) when its bytes do not match `digest`; an error only when it cannot be read at all.
fn read_or_evict(blobs: &Path, digest: &Digest, size: u64, shown: &str) -> Result<Option<Vec<u8>>> {
    let path = blobs.join(digest.hex());
    match crate::image::blob::read_capped(&path, size.min(8 << 20)) {
        Err(e) => {
            return Err(Error::image(
                shown,
                format!("cached manifest {digest}: {e}"),
            ));
        }
        Ok(Some(b)) if Digest::of(&b) == *digest => return Ok(Some(b)),
        Ok(_) => {}
    }
    eprintln!(
        "warning: {shown}: the cached manifest {digest} ({}) does not match its digest; removed",
        path.display()
    );
    let _ = std::fs::remove_file(&path);
    Ok(None)
}

/// What the blob cache holds of a registry image named by digest ([`from_cache`]).
pub enum FromCache {
    /// All there and verified: the image, and the index its digest named, if any.
    Read(Box<Source>, Option<Digest>),
    /// Not all there: what is missing, each named.
    Missing(Vec<String>),
    /// All there but unusable (a damaged blob, now removed from the cache: see [`cached`]).
    Unusable(Error),
}

/// The image `r`'s `digest` names, for `platform`, from the blob cache under `cache` with no
/// network ([`cached`], then [`read_cached`]); an error only when the cache cannot be read.
pub async fn from_cache(
    cache: &Path,
    r: &RegistryRef,
    digest: &Digest,
    platform: Option<Platform>,
    shown: &str,
) -> Result<FromCache> {
    let (c, d, s) = (cache.to_owned(), digest.clone(), shown.to_owned());
    let found = blocking("reading the cache", move || cached(&c, &d, platform, &s)).await?;
    Ok(match found {
        Cached::Missing(missing) => FromCache::Missing(missing),
        Cached::Ready(desc, index) => match read_cached(cache, r, *desc, platform, shown).await {
            Ok(src) => FromCache::Read(Box::new(src), index),
            Err(e) => FromCache::Unusable(e),
        },
    })
}

/// Read a registry image whose blobs [`cached`] found all in the cache, verified like any
/// base (on the blocking pool), with no network.
pub async fn read_cached(
    cache: &Path,
    r: &RegistryRef,
    desc: Descriptor,
    platform: Option<Platform>,
    shown: &str,
) -> Result<Source> {
    let (blobs, cache, shown) = (
        crate::cache::blobs(cache),
        cache.to_owned(),
        shown.to_owned(),
    );
    let from = (r.registry.clone(), r.repository.clone());
    blocking("reading the image", move || {
        let mode = ReadMode::Verified;
        let mut src = layout::read_manifest(&blobs, &desc, platform, mode, &shown, &cache)?;
        for l in &mut src.image.layers {
            l.from = Some(from.clone());
        }
        Ok(src)
    })
    .await
}
