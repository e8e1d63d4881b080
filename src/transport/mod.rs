//! Transports: where images are read from and written to. Each one has the same small surface —
//! read an image for a platform, write a rendered image — so a new one touches one file.

pub mod archive;
pub mod layout;
pub mod resolve;

pub use resolve::{FromCache, Opened, Resolved, from_cache};

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::image::{Image, Rendered};
use crate::platform::Platform;
use crate::reference::ImageRef;
use crate::registry::push::PushReport;
use crate::registry::{Client, Options};

/// An image read from a transport. `_keep` holds temporary files (an unpacked archive) that the
/// layer paths point into, for as long as the image is used.
pub struct Source {
    pub image: Image,
    /// The manifest as stored in the source (rendered, for sources that have none).
    pub manifest: Vec<u8>,
    pub media_type: oci_spec::image::MediaType,
    /// The config as stored.
    pub config: Vec<u8>,
    pub manifest_digest: crate::digest::Digest,
    pub config_digest: crate::digest::Digest,
    pub config_size: u64,
    pub _keep: Option<crate::staging::Dir>,
}

impl Source {
    /// A source whose manifest lamina renders itself (scratch, docker-archive).
    pub fn rendered(image: Image, keep: Option<crate::staging::Dir>) -> Source {
        let r = image.render();
        Source {
            media_type: r.media_type,
            config_size: r.config.len() as u64,
            config: r.config,
            manifest: r.manifest,
            manifest_digest: r.manifest_digest,
            config_digest: r.config_digest,
            image,
            _keep: keep,
        }
    }
}

impl Source {
    /// The image exactly as the source holds it (manifest and config bytes untouched), for
    /// copying it elsewhere under the same digest.
    pub fn as_stored(&self) -> Rendered {
        Rendered {
            media_type: self.media_type.clone(),
            manifest: self.manifest.clone(),
            manifest_digest: self.manifest_digest.clone(),
            config: self.config.clone(),
            config_digest: self.config_digest.clone(),
            layers: self.image.layers.clone(),
            platform: self.image.platform(),
        }
    }
}

/// How much of an image `read` makes sure of.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ReadMode {
    /// Manifest and config only (enough to inspect).
    Metadata,
    /// Every layer blob present with its size (fetched, for registries). Only for a reader
    /// that verifies each layer itself as it reads it (`run` unpacking the layers).
    Blobs,
    /// Every layer checked against its digest, size and diff_id: a base for a build, so a broken
    /// one fails before anything is written.
    Verified,
}

/// Read the image `r` for `platform`, as far as `mode` says.
/// Without a platform, a single-platform image is read as it is; an index needs one.
pub async fn read(
    r: &ImageRef,
    platform: Option<Platform>,
    mode: ReadMode,
    opts: &Options,
) -> Result<Source> {
    Opened::open(r, opts).await?.read_for(platform, mode).await
}

/// Where the new image's files are assembled before they are moved to the destination: a
/// staging directory beside the destination (same file system, so the final step is a
/// rename), removed on drop whatever happens, on SIGINT/SIGTERM, and by a later lamina when
/// this one was killed (see [`crate::staging`]).
pub struct Staging {
    pub dir: crate::staging::Dir,
}

impl Staging {
    /// Staging for destination `r`, in the nearest existing ancestor of its parent directory
    /// (for a symlinked destination, of the link's target; for a registry, in the system's
    /// temporary directory).
    pub fn for_dest(r: &ImageRef) -> Result<Staging> {
        if let ImageRef::Docker(_) = r {
            let dir =
                crate::staging::dir("lamina-").ctx(|| "creating a staging directory".to_owned())?;
            let s = Staging { dir };
            fs::create_dir_all(s.blobs()).at("creating", &s.blobs())?;
            return Ok(s);
        }
        let target = r
            .local_path()
            .ok_or_else(|| Error::Usage(format!("`{r}` cannot be a destination")))?;
        let mut parent = dest_path(target)?
            .parent()
            .map(Path::to_owned)
            .unwrap_or_else(|| PathBuf::from("/"));
        while !parent.is_dir() {
            match parent.parent() {
                Some(p) => parent = p.to_owned(),
                None => break,
            }
        }
        let dir = crate::staging::dir_in(&parent, ".lamina-")
            .at("creating a staging directory in", &parent)?;
        let s = Staging { dir };
        fs::create_dir_all(s.blobs()).at("creating", &s.blobs())?;
        Ok(s)
    }

    /// `blobs/sha256` inside the staging directory: where new layers are written.
    pub fn blobs(&self) -> PathBuf {
        self.dir.path().join("blobs").join("sha256")
    }
}

/// `path` made absolute against the current directory (without resolving symlinks).
pub fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).at("resolving", path)
}

/// Where a local destination is really written: `path` made absolute, and when it is a
/// symbolic link, the link's target (followed to the end), so that the image is written
/// through the link and the link itself stays. A link to nothing is refused: writing there
/// would either replace the link or create a path the user did not name.
pub fn dest_path(path: &Path) -> Result<PathBuf> {
    let abs = absolute(path)?;
    match fs::symlink_metadata(&abs) {
        Ok(m) if m.file_type().is_symlink() => fs::canonicalize(&abs).map_err(|e| {
            Error::Usage(format!(
                "{} is a symbolic link to {}, which cannot be written through: {e}",
                abs.display(),
                fs::read_link(&abs)
                    .map(|t| t.display().to_string())
                    .unwrap_or_else(|_| "an unreadable target".into()),
            ))
        }),
        _ => Ok(abs),
    }
}

/// Write `img` to `r`, using (and consuming) the staging directory its new layers are in.
/// A registry destination reports what happened to each blob.
/// With a `session` (from [`preflight`]), a registry destination reuses its connection;
/// `streamed` are the blobs already uploaded over it during the build (see
/// [`crate::registry::push::push`]).
/// Local destinations are written on the blocking pool (copying and archiving blobs).
pub async fn write(
    r: &ImageRef,
    img: &Rendered,
    staging: Staging,
    mtime: u64,
    opts: &Options,
    session: Option<&Session>,
    streamed: &HashSet<Digest>,
) -> Result<Option<PushReport>> {
    match r {
        ImageRef::Oci { .. } | ImageRef::OciArchive { .. } | ImageRef::DockerArchive { .. } => {
            let (r, img, cache) = (r.clone(), img.clone(), opts.cache_dir.clone());
            crate::task::blocking("writing the image", move || {
                write_local(&r, &img, staging, mtime, &cache)
            })
            .await
            .map(|()| None)
        }
        ImageRef::Docker(rr) => {
            let client = match session {
                Some(s) => s.client.clone(),
                None => Arc::new(
                    Client::connect(&rr.registry, rr.api_host(), opts)
                        .await
                        .map_err(|e| unreachable_destination(e, r))?,
                ),
            };
            let report = crate::registry::push::push(client, rr, img, streamed).await?;
            drop(staging);
            Ok(Some(report))
        }
        ImageRef::Scratch => Err(Error::Usage("`scratch` cannot be a destination".into())),
    }
}

/// Write `img` to a local destination `r` (blocking). Blobs from lamina's `cache` may be
/// hard-linked into an `oci:` destination; others (a user's base layout) are cloned.
fn write_local(
    r: &ImageRef,
    img: &Rendered,
    staging: Staging,
    mtime: u64,
    cache: &Path,
) -> Result<()> {
    match r {
        ImageRef::Oci { dir, tag } => {
            layout::write(&dest_path(dir)?, tag.as_deref(), img, staging, cache)
        }
        ImageRef::OciArchive { file, tag } => {
            archive::write_oci_archive(&dest_path(file)?, tag.as_deref(), img, staging, mtime)
        }
        ImageRef::DockerArchive { file, name } => {
            archive::write_docker_archive(&dest_path(file)?, name.as_deref(), img, staging, mtime)
        }
        ImageRef::Docker(_) | ImageRef::Scratch => {
            Err(Error::Internal(format!("`{r}` is not a local destination")))
        }
    }
}

/// Fail early, before any build work, when a registry destination cannot take the image:
/// unreachable, credentials refused, or (ECR) a missing repository without `--create-repo`.
/// Returns the connection, to be used for the rest of the build (streaming and the push).
pub async fn preflight(dest: &ImageRef, opts: &Options) -> Result<Option<Session>> {
    let ImageRef::Docker(r) = dest else {
        return Ok(None);
    };
    let client = Client::connect(&r.registry, r.api_host(), opts)
        .await
        .map_err(|e| unreachable_destination(e, dest))?;
    client.check_push_access(&r.repository).await?;
    client.ensure_repository(&r.repository).await?;
    Ok(Some(Session::new(Arc::new(client))))
}

/// A destination registry that could not be reached (no HTTP status): the message also names
/// the image and the way to finish without the registry — write a layout, push it later.
fn unreachable_destination(e: Error, dest: &ImageRef) -> Error {
    e.when_unreachable(|message| {
        format!(
            "destination {dest}: {message}. To finish without the registry, keep the image \
             in a layout (`--to oci:DIR`) and `lamina push oci:DIR {dest}` once it is \
             reachable"
        )
    })
}

/// A connection to a registry and the runtime it lives on (the caller's): one build connects,
/// authenticates and checks the repository once. Blocking code given a session (a layer
/// compressed on the blocking pool while it streams into an upload) reaches the network
/// through `rt`, with `rt.block_on` or `rt.spawn`; async code just awaits. Clones share the
/// connection.
#[derive(Clone)]
pub struct Session {
    pub rt: tokio::runtime::Handle,
    pub client: Arc<Client>,
}

impl Session {
    /// A session for `client` on the current runtime. Must be called from async code (inside
    /// a tokio runtime).
    pub fn new(client: Arc<Client>) -> Session {
        Session {
            rt: tokio::runtime::Handle::current(),
            client,
        }
    }
}

/// Replace `dest` by `new` (a directory or file in the same file system) in one step where the
/// system allows it, so a reader never sees a half-written destination.
pub fn replace(new: &Path, dest: &Path) -> Result<()> {
    if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).at("creating", parent)?;
    }
    if fs::symlink_metadata(dest).is_err() {
        return fs::rename(new, dest).ctx(|| format!("moving the new image to {}", dest.display()));
    }
    if dest.is_dir() {
        // Swap atomically; the old content ends up at `new` and is removed with the staging.
        exchange(new, dest).ctx(|| format!("replacing {}", dest.display()))
    } else {
        fs::rename(new, dest).ctx(|| format!("replacing {}", dest.display()))
    }
}

/// Swap `a` and `b` in one step (`renameat2(RENAME_EXCHANGE)`), falling back to two renames
/// where the file system or C library lacks it.
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use nix::errno::Errno;
        use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
        match renameat2(AT_FDCWD, a, AT_FDCWD, b, RenameFlags::RENAME_EXCHANGE) {
            Ok(()) => return Ok(()),
            Err(Errno::EINVAL | Errno::ENOSYS) => {}
            Err(e) => return Err(e.into()),
        }
    }
    // File systems without RENAME_EXCHANGE: move the old one aside, then the new one in.
    let aside = a.with_extension("old");
    fs::rename(b, &aside)?;
    if let Err(e) = fs::rename(a, b) {
        // Best effort to put the old destination back; the first error is the one to report.
        let _ = fs::rename(&aside, b);
        return Err(e);
    }
    fs::rename(&aside, a)
}

/// Read a small JSON blob (manifest, config, index), checking its size and digest. At most
/// `size + 1` bytes are read, so a blob larger than its descriptor says (a huge or sparse file)
/// is refused without being read whole; only a regular file is opened.
pub fn read_json_blob(
    blobs: &Path,
    digest: &crate::digest::Digest,
    size: u64,
    what: &str,
    reference: &str,
) -> Result<Vec<u8>> {
    const MAX: u64 = 8 << 20;
    if size > MAX {
        return Err(Error::image(
            reference,
            format!("{what} {digest} is {size} bytes; more than {MAX} is not a plausible {what}"),
        ));
    }
    let path = blobs.join(digest.hex());
    let read = crate::image::blob::read_capped(&path, size).map_err(|e| {
        Error::image(
            reference,
            match e.kind() {
                std::io::ErrorKind::NotFound => {
                    format!("{what} blob {digest} is missing ({})", path.display())
                }
                _ => format!("{what} blob {digest}: {e}"),
            },
        )
    })?;
    let Some(bytes) = read else {
        return Err(Error::image(
            reference,
            format!(
                "{what} blob {digest} ({}) is larger than the {size} bytes its descriptor says: the image is corrupt",
                path.display()
            ),
        ));
    };
    if bytes.len() as u64 != size {
        return Err(Error::image(
            reference,
            format!(
                "{what} blob {digest} has {} bytes but its descriptor says {size}: the image is corrupt",
                bytes.len()
            ),
        ));
    }
    let actual = crate::digest::Digest::of(&bytes);
    if &actual != digest {
        return Err(Error::image(
            reference,
            format!(
                "{what} blob {digest} does not match its content ({actual}, {} bytes; expected {size}): the image is corrupt",
                bytes.len()
            ),
        ));
    }
    Ok(bytes)
}
