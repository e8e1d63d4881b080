//! A build's base image: pinned in `lamina.lock`, read from the verified blob cache when it is
//! all there (no network), fetched otherwise, and when it cannot be fetched, an error that
//! names the image, what chose it, the cause, and the commands that fix it.
//! (`docs/offline-and-lock.md` describes the behaviour for users.)

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::lock::{Entry, Lock};
use crate::reference::{ImageRef, RegistryRef};
use crate::registry::Options;
use crate::spec::BuildSpec;
use crate::transport::resolve::{FromCache, from_cache};
use crate::transport::{self, Opened, ReadMode, Resolved, Source};

/// The manifest annotation with the digest of the base image's manifest for the platform.
pub use oci_spec::image::ANNOTATION_BASE_IMAGE_DIGEST as BASE_DIGEST;
/// The manifest annotation naming the base image (OCI image spec, annotations.md): a
/// reference in distribution's format, as ko and BuildKit write it.
pub use oci_spec::image::ANNOTATION_BASE_IMAGE_NAME as BASE_NAME;

/// The base read for a build, and for a registry base, what the image records of it.
pub struct Base {
    /// The image.
    pub source: Source,
    /// `(name, manifest digest)` of a registry base, for the annotations.
    pub pinned: Option<(String, Digest)>,
    /// How it was found (`locked, from the cache`, `resolved`, ...), for the log line.
    pub how: &'static str,
    /// The lock entry this build wrote, and the digest it had before (if any): what
    /// `lamina update` reports.
    pub locked: Option<(Entry, Option<Digest>)>,
}

/// Read `spec`'s base for its platform. A registry base: its digest from the reference, else
/// from the lock (unless updating); the cache alone when it holds everything; the registry
/// otherwise (never with `offline`); the lock written when it changed (refused with `locked`).
pub async fn read(spec: &BuildSpec, opts: &Options) -> Result<Base> {
    let ImageRef::Docker(rr) = &spec.base else {
        let source = transport::read(&spec.base, Some(spec.platform), ReadMode::Verified, opts)
            .await
            .map_err(|e| explain(e, spec, None))?;
        return Ok(Base {
            source,
            pinned: None,
            how: "local",
            locked: None,
        });
    };
    let name = rr.to_string();
    let platform = spec.platform.to_string();
    let mut lock = match &spec.lock_file {
        Some(p) => Lock::read(p)?,
        None => Lock::default(),
    };
    let locked = lock
        .get(&name, &platform)
        .filter(|_| !spec.base_lock.update)
        .cloned();
    let want = locked
        .as_ref()
        .map(|e| e.digest.clone())
        .or(rr.digest.clone());
    let (source, index, how) = match want {
        Some(d) => {
            let (s, i, cached) = by_digest(spec, rr, &d, opts).await?;
            let how = match (locked.is_some(), cached) {
                (true, true) => "locked, from the cache",
                (true, false) => "locked, fetched by digest",
                (false, true) => "pinned, from the cache",
                (false, false) => "pinned, fetched",
            };
            (s, i.or(locked.as_ref().and_then(|e| e.index.clone())), how)
        }
        None if spec.base_lock.offline => return Err(not_locked(spec)),
        None => {
            let (s, i) = resolve(spec, opts).await?;
            (s, i, "resolved")
        }
    };
    let entry = Entry {
        name: name.clone(),
        platform,
        digest: source.manifest_digest.clone(),
        index,
    };
    let mut wrote = None;
    if let Some(path) = &spec.lock_file {
        let before = lock.get(&name, &entry.platform).cloned();
        if lock.set(entry.clone()) {
            if spec.base_lock.locked {
                return Err(would_change(spec, path, before.as_ref(), &entry));
            }
            // Like Cargo.lock: only what the spec uses now (other platforms of this base).
            lock.base.retain(|e| e.name == name);
            lock.write(path)?;
        }
        wrote = Some((entry, before.map(|b| b.digest)));
    }
    Ok(Base {
        locked: wrote,
        // Recorded for the base the spec names (an ad-hoc `--base` builds the same image as
        // the same base read from a layout).
        pinned: spec
            .lock_file
            .is_some()
            .then(|| (name, source.manifest_digest.clone())),
        source,
        how,
    })
}

/// The image `digest` names: from the cache when it is all there (then `true`), else fetched
/// by digest.
async fn by_digest(
    spec: &BuildSpec,
    rr: &RegistryRef,
    digest: &Digest,
    opts: &Options,
) -> Result<(Source, Option<Digest>, bool)> {
    let shown = spec.base.to_string();
    let cache = &opts.cache_dir;
    match from_cache(cache, rr, digest, Some(spec.platform), &shown).await? {
        FromCache::Read(src, index) => Ok((*src, index, true)),
        // A damaged blob (now removed from the cache): offline, say so; else fetch the image
        // again by its digest, as if it had never been cached.
        FromCache::Unusable(e) if spec.base_lock.offline => Err(Error::image(
            &shown,
            format!(
                "--offline: the cached copy of {digest} cannot be used: {e}. A damaged blob is \
                 removed from the cache: build once without --offline to fetch it again"
            ),
        )),
        FromCache::Unusable(e) => {
            eprintln!("warning: {e}; fetching {digest} again");
            fetch_pinned(spec, rr, digest, opts).await
        }
        FromCache::Missing(missing) if spec.base_lock.offline => Err(Error::image(
            &shown,
            format!(
                "--offline: {digest} ({}, chosen by {}) is not all in the cache {}; missing: {}. \
                 Build once without --offline to fetch it, or `lamina pull {shown} oci:DIR` \
                 where the registry is reachable and use `base = \"oci:DIR\"`",
                spec.platform,
                spec.base_from,
                cache.display(),
                missing.join(", ")
            ),
        )),
        FromCache::Missing(_) => fetch_pinned(spec, rr, digest, opts).await,
    }
}

/// The image `digest` names, read from its registry.
async fn fetch_pinned(
    spec: &BuildSpec,
    rr: &RegistryRef,
    digest: &Digest,
    opts: &Options,
) -> Result<(Source, Option<Digest>, bool)> {
    let pinned = ImageRef::Docker(rr.with_digest(digest.clone()));
    let src = transport::read(&pinned, Some(spec.platform), ReadMode::Verified, opts)
        .await
        .map_err(|e| explain(e, spec, Some(digest)))?;
    let index = (&src.manifest_digest != digest).then(|| digest.clone());
    Ok((src, index, false))
}

/// Resolve the reference's tag at the registry, then read the image for the platform.
async fn resolve(spec: &BuildSpec, opts: &Options) -> Result<(Source, Option<Digest>)> {
    let explain = |e| explain(e, spec, None);
    let opened = Opened::open(&spec.base, opts).await.map_err(explain)?;
    let resolved = opened.resolve(None).await.map_err(explain)?;
    let index = match &resolved {
        Resolved::Index(i) => i.digest.clone(),
        _ => None,
    };
    let src = opened
        .read(&resolved, Some(spec.platform), ReadMode::Verified)
        .await
        .map_err(explain)?;
    Ok((src, index))
}

/// `--offline` with a registry base the lock does not pin.
fn not_locked(spec: &BuildSpec) -> Error {
    let lock = spec
        .lock_file
        .as_ref()
        .map_or("no lamina.lock (there is no lamina.toml)".to_owned(), |p| {
            format!("{} has no entry for it", p.display())
        });
    Error::image(
        &spec.base,
        format!(
            "--offline: the base (chosen by {}) names a tag, and {lock} on {}: its digest is \
             unknown without the registry. Build once without --offline (that writes the lock \
             and fills the cache), or pin it by digest",
            spec.base_from, spec.platform
        ),
    )
}

/// `--locked` and the lock would change.
fn would_change(
    spec: &BuildSpec,
    path: &std::path::Path,
    before: Option<&Entry>,
    now: &Entry,
) -> Error {
    let message = match before {
        Some(b) => format!(
            "--locked: base {} ({}, chosen by {}) is locked at {} but resolves to {} now; \
             run `lamina build --update-base` to move the lock",
            now.name, now.platform, spec.base_from, b.digest, now.digest
        ),
        None => format!(
            "--locked: base {} ({}, chosen by {}) is not in the lock (it resolves to {}); \
             run `lamina build` without --locked to add it",
            now.name, now.platform, spec.base_from, now.digest
        ),
    };
    Error::Spec {
        file: path.to_owned(),
        message,
    }
}

/// A base that could not be fetched: the same error kind, its message naming the image, the
/// spec field (or flag) that chose it, and what to run.
fn explain(e: Error, spec: &BuildSpec, digest: Option<&Digest>) -> Error {
    let shown = spec.base.to_string();
    let chosen = format!("the base, chosen by {}", spec.base_from);
    let pinned = digest
        .map(|d| format!(" (pinned to {d})"))
        .unwrap_or_default();
    let pull = format!(
        "`lamina pull {shown} oci:DIR` where the registry is reachable, then `base = \"oci:DIR\"`"
    );
    match e {
        Error::Registry {
            registry,
            status,
            code,
            message,
        } if matches!(status, None | Some(401 | 403 | 404)) => {
            let fix = match status {
                Some(401 | 403) => format!(
                    "; run `lamina login {registry}` (or docker login) with credentials that may \
                     pull it, or {pull}"
                ),
                Some(_) => "; check the repository and tag".to_owned(),
                None if message.contains("lamina pull") => String::new(),
                None => format!("; or {pull}"),
            };
            Error::Registry {
                registry,
                status,
                code,
                message: format!("{chosen}{pinned}: {message}{fix}"),
            }
        }
        Error::Auth(message) => {
            Error::Auth(format!("{shown} ({chosen}{pinned}): {message}; or {pull}"))
        }
        Error::Image { reference, message } if message.contains("not found") => Error::Image {
            reference,
            message: format!(
                "{message} ({chosen}{pinned}); check its name and tag (`skopeo list-tags \
                 docker://REPOSITORY` lists the tags)"
            ),
        },
        other => other,
    }
}

/// What `lamina update` did to `lamina.lock`.
#[derive(Debug, Clone)]
pub struct BaseUpdate {
    /// The lock file.
    pub lock_file: std::path::PathBuf,
    /// The base reference as locked.
    pub name: String,
    /// The platform.
    pub platform: String,
    /// The manifest digest the lock had, if any.
    pub before: Option<Digest>,
    /// The manifest digest the tag names now (and the lock has now).
    pub after: Digest,
}

/// Resolve the registry base `spec` names again and move `lamina.lock` to it, fetching what
/// the cache lacks (so a later `--offline` build has it all). A spec without a file, with an
/// ad-hoc `--base`, or whose base is not in a registry has nothing to lock: a usage error.
pub async fn update(spec: &BuildSpec, opts: &Options) -> Result<BaseUpdate> {
    let (Some(lock_file), ImageRef::Docker(_)) = (&spec.lock_file, &spec.base) else {
        return Err(Error::Usage(format!(
            "nothing to update: lamina.lock pins a registry base named in lamina.toml (`base = \
             \"docker://…\"` or `[function] runtime`); the base here is {} ({})",
            spec.base, spec.base_from
        )));
    };
    let mut spec = spec.clone();
    spec.base_lock.update = true;
    let base = read(&spec, opts).await?;
    let (entry, before) = base
        .locked
        .ok_or_else(|| Error::Internal("a registry base was read without its lock".into()))?;
    Ok(BaseUpdate {
        lock_file: lock_file.clone(),
        name: entry.name,
        platform: entry.platform,
        before,
        after: entry.digest,
    })
}
