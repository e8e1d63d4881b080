//! The one read surface: [`Opened::open`] reaches a source once (connects to a registry,
//! unpacks an archive), [`Opened::resolve`] says what a reference names — an index, or one
//! image manifest for a platform — and [`Opened::read`] reads the image. `check`, `pull`,
//! `build` and `run` all go through here, so a reference is resolved one way and a registry
//! is connected to once per command.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use oci_spec::image::Descriptor;
use tempfile::TempDir;

use super::{ReadMode, Session, Source, archive, layout};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::image::Image;
use crate::image::index::{IndexAt, is_index, is_manifest, parse_index, walk};
use crate::platform::Platform;
use crate::reference::{ImageRef, RegistryRef};
use crate::registry::{Client, Options};

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
        keep: Option<TempDir>,
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
    pub fn open(r: &ImageRef, opts: &Options) -> Result<Opened> {
        let shown = r.to_string();
        let at = match r {
            ImageRef::Scratch => At::Scratch,
            ImageRef::Oci { dir, tag } => At::Layout {
                dir: dir.clone(),
                tag: tag.clone(),
                keep: None,
            },
            ImageRef::OciArchive { file, tag } => {
                let tmp = archive::unpack(file, &shown)?;
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
                let rt = crate::registry::runtime()?;
                let client = rt.block_on(Client::connect(&rr.registry, rr.api_host(), opts))?;
                At::Registry {
                    r: rr.clone(),
                    session: Session {
                        rt,
                        client: Arc::new(client),
                    },
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
    pub fn resolve(&self, platform: Option<Platform>) -> Result<Resolved> {
        match &self.at {
            At::Scratch | At::DockerArchive { .. } => Ok(Resolved::Unindexed),
            At::Layout { dir, tag, .. } => {
                layout::resolve(dir, tag.as_deref(), platform, &self.shown)
            }
            At::Registry { r, session, blobs } => {
                resolve_registry(session, r, platform, blobs, &self.shown)
            }
        }
    }

    /// Read the image `resolved` names (choosing `platform` from an index), as far as `mode`
    /// says. Consumes the source: the image's files may live in it.
    pub fn read(
        self,
        resolved: &Resolved,
        platform: Option<Platform>,
        mode: ReadMode,
    ) -> Result<Source> {
        let shown = self.shown;
        match self.at {
            At::Scratch => Ok(Source::rendered(
                Image::scratch(platform.unwrap_or_default()),
                None,
            )),
            At::DockerArchive { file, name } => archive::read_docker_archive(
                &file,
                name.as_deref(),
                platform,
                mode,
                &shown,
                &self.cache,
            ),
            At::Layout { dir, keep, .. } => {
                let blobs = dir.join("blobs").join("sha256");
                let desc = manifest_of(resolved, platform, &shown, &mut |d| {
                    layout::load_index(&blobs, d, &shown)
                })?;
                let mut src =
                    layout::read_manifest(&blobs, &desc, platform, mode, &shown, &self.cache)?;
                src._keep = keep;
                Ok(src)
            }
            At::Registry { r, session, blobs } => {
                let desc = manifest_of(resolved, platform, &shown, &mut |d| {
                    registry_index(&session, &r, d, &blobs, &shown)
                })?;
                read_registry(
                    &session,
                    &r,
                    &desc,
                    platform,
                    mode,
                    &blobs,
                    &shown,
                    &self.cache,
                )
            }
        }
    }

    /// Resolve for `platform` and read: what [`super::read`] does.
    pub fn read_for(self, platform: Option<Platform>, mode: ReadMode) -> Result<Source> {
        let resolved = self.resolve(platform)?;
        self.read(&resolved, platform, mode)
    }
}

/// Resolve `r` for `platform` (see [`Opened::resolve`]), reaching it once.
pub fn resolve(r: &ImageRef, platform: Option<Platform>, opts: &Options) -> Result<Resolved> {
    Opened::open(r, opts)?.resolve(platform)
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
        Resolved::Unindexed => Err(Error::Internal(format!(
            "{shown}: an unindexed source resolved for a layout or registry"
        ))),
    }
}

fn digest_of(d: &Descriptor, shown: &str) -> Result<Digest> {
    Digest::from_oci(d.digest()).map_err(|e| Error::image(shown, e))
}

/// GET the manifest or index `reference` (tag or digest) into the cache.
fn get_stored(
    session: &Session,
    r: &RegistryRef,
    reference: &str,
    blobs: &Path,
) -> Result<(Vec<u8>, oci_spec::image::MediaType, Digest)> {
    let got = session.rt.block_on(crate::registry::pull::get_manifest(
        &session.client,
        r,
        reference,
    ))?;
    crate::registry::pull::store(blobs, &got.2, &got.0)?;
    Ok(got)
}

/// A nested index of a registry image, by its descriptor.
fn registry_index(
    session: &Session,
    r: &RegistryRef,
    d: &Descriptor,
    blobs: &Path,
    shown: &str,
) -> Result<IndexAt> {
    let digest = digest_of(d, shown)?;
    let (bytes, _, digest) = get_stored(session, r, &digest.to_string(), blobs)?;
    parse_index(&bytes, &digest, shown)
}

fn resolve_registry(
    session: &Session,
    r: &RegistryRef,
    platform: Option<Platform>,
    blobs: &Path,
    shown: &str,
) -> Result<Resolved> {
    let (bytes, mt, digest) = get_stored(session, r, &r.manifest_reference(), blobs)?;
    if is_index(&mt) {
        let idx = parse_index(&bytes, &digest, shown)?;
        if platform.is_none() {
            return Ok(Resolved::Index(idx));
        }
        let desc = walk(&idx.manifests, platform, shown, &mut |d| {
            registry_index(session, r, d, blobs, shown)
        })?;
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

/// Read a registry image by its manifest descriptor: the manifest (if an index named it) and
/// the blobs `mode` needs fetched into the cache, then read from there like a layout.
#[allow(clippy::too_many_arguments)] // one private step of `Opened::read`, taking its parts
fn read_registry(
    session: &Session,
    r: &RegistryRef,
    desc: &Descriptor,
    platform: Option<Platform>,
    mode: ReadMode,
    blobs: &Path,
    shown: &str,
    cache: &Path,
) -> Result<Source> {
    let digest = digest_of(desc, shown)?;
    if !blobs.join(digest.hex()).is_file() {
        get_stored(session, r, &digest.to_string(), blobs)?;
    }
    session.rt.block_on(crate::registry::pull::fetch_blobs(
        session.client.clone(),
        r,
        desc,
        blobs,
        mode != ReadMode::Metadata,
    ))?;
    let mut src = layout::read_manifest(blobs, desc, platform, mode, shown, cache)?;
    for l in &mut src.image.layers {
        l.from = Some((r.registry.clone(), r.repository.clone()));
    }
    Ok(src)
}
