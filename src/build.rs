//! One build: read the base, write the new layers, apply the config, write the destination.

use serde::Serialize;

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::image::{Layer, Origin, Rendered, rfc3339};
use crate::layer::{self, LayerBlob, LayerOptions};
use crate::platform::Platform;
use crate::reference::ImageRef;
use crate::registry::Options;
use crate::registry::push::{BlobFate, Commit, PushReport};
use crate::spec::BuildSpec;
use crate::transport::{self, ReadMode, Staging};

/// What a build (or an inspection) reports, as printed by `--json`.
#[derive(Serialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// The destination as the user wrote it.
    pub reference: String,
    /// The manifest digest: the image's identity.
    pub digest: Digest,
    /// The manifest's media type.
    pub media_type: String,
    /// The manifest's size in bytes.
    pub size: u64,
    /// `os/arch[/variant]` of the image.
    pub platform: String,
    /// The config blob.
    pub config: BlobReport,
    /// The layers, bottom first.
    pub layers: Vec<LayerReport>,
    /// For a registry destination: what happened to each blob.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blobs: Option<Vec<BlobFate>>,
}

/// A blob by digest and size (the config in a [`Report`]).
#[derive(Serialize, Debug, Clone)]
pub struct BlobReport {
    /// The manifest digest: the image's identity.
    pub digest: Digest,
    /// The manifest's size in bytes.
    pub size: u64,
}

/// One layer of a [`Report`].
#[derive(Serialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct LayerReport {
    /// The manifest digest: the image's identity.
    pub digest: Digest,
    /// Digest of the uncompressed tar (the config's `rootfs.diff_ids`).
    pub diff_id: Digest,
    /// The manifest's size in bytes.
    pub size: u64,
    /// The manifest's media type.
    pub media_type: String,
    /// Whether the layer came from the base or was written by this build.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    /// For a layer of this build: built, or found in the local or the registry cache.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<layer::Provenance>,
}

pub fn platform_string(p: &oci_spec::image::Platform) -> String {
    crate::platform::describe(
        &p.os().to_string(),
        &p.architecture().to_string(),
        p.variant().as_deref(),
    )
}

pub fn layer_reports(layers: &[Layer], with_origin: bool) -> Vec<LayerReport> {
    layers
        .iter()
        .map(|l| LayerReport {
            digest: l.digest.clone(),
            diff_id: l.diff_id.clone(),
            size: l.size,
            media_type: l.media_type.to_string(),
            origin: with_origin.then_some(l.origin),
            source: None,
        })
        .collect()
}

fn report(
    reference: &ImageRef,
    r: &Rendered,
    pushed: Option<PushReport>,
    with_origin: bool,
) -> Report {
    Report {
        reference: reference.to_string(),
        digest: r.manifest_digest.clone(),
        media_type: r.media_type.to_string(),
        size: r.manifest.len() as u64,
        platform: platform_string(&r.platform),
        config: BlobReport {
            digest: r.config_digest.clone(),
            size: r.config.len() as u64,
        },
        layers: layer_reports(&r.layers, with_origin),
        blobs: pushed.map(|p| p.blobs),
    }
}

/// Run `jobs` on up to `available_parallelism` threads, keeping their order; the first error
/// (in job order) wins.
fn parallel<T: Send>(jobs: Vec<Box<dyn FnOnce() -> Result<T> + Send + '_>>) -> Result<Vec<T>> {
    let n = jobs.len();
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(n.max(1));
    let queue = std::sync::Mutex::new(jobs.into_iter().enumerate().collect::<Vec<_>>());
    let results = std::sync::Mutex::new((0..n).map(|_| None).collect::<Vec<Option<Result<T>>>>());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    let job = queue.lock().unwrap_or_else(|p| p.into_inner()).pop();
                    let Some((i, f)) = job else { break };
                    // A panicking job is a bug: report it as one rather than tear down the
                    // build's other threads.
                    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
                        .unwrap_or_else(|_| {
                            Err(Error::Internal(format!(
                                "building layer {} panicked",
                                i + 1
                            )))
                        });
                    results.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(r);
                }
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(Error::Internal("a build job did not run".into()))))
        .collect()
}

/// Streams layers into a registry while they are built (see [`build`]), over the build's
/// registry session. Layers are built on the blocking pool; their uploads run as tasks on the
/// session's runtime, fed through channels.
#[derive(Clone)]
struct Streamer {
    session: transport::Session,
    repo: String,
}

type Stream = (
    tokio::sync::oneshot::Sender<Commit>,
    tokio::task::JoinHandle<Option<Digest>>,
);

impl Streamer {
    /// For a registry destination (which has a session); otherwise no streaming.
    fn new(dest: &ImageRef, session: Option<&transport::Session>) -> Option<Streamer> {
        let (ImageRef::Docker(r), Some(session)) = (dest, session) else {
            return None;
        };
        Some(Streamer {
            session: session.clone(),
            repo: r.repository.clone(),
        })
    }

    /// An upload session fed by the returned tee (called from blocking code: the tee blocks
    /// while the upload is behind).
    fn start(&self) -> (layer::Tee, Stream) {
        let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(8);
        let (commit_tx, commit_rx) = tokio::sync::oneshot::channel();
        let scope = crate::registry::scope::Scopes::push(&self.repo);
        let task = self.session.rt.spawn(crate::registry::push::stream_blob(
            self.session.client.clone(),
            scope,
            self.repo.clone(),
            rx,
            commit_rx,
        ));
        let mut open = true;
        let tee: layer::Tee = Box::new(move |b: &[u8]| {
            // A failed upload must not hold the build up: stop feeding it.
            if open && tx.blocking_send(b.to_vec()).is_err() {
                open = false;
            }
        });
        (tee, (commit_tx, task))
    }

    /// Commit (or cancel) every stream and wait for them; the digests that were committed.
    async fn finish(
        &self,
        commits: Vec<Option<(Stream, Digest, u64)>>,
        commit: bool,
    ) -> std::collections::HashSet<Digest> {
        let mut tasks = Vec::new();
        for ((tx, task), digest, size) in commits.into_iter().flatten() {
            let _ = tx.send(if commit {
                Commit::Blob(digest, size)
            } else {
                Commit::Cancel
            });
            tasks.push(task);
        }
        let mut committed = std::collections::HashSet::new();
        for t in tasks {
            if let Ok(Some(d)) = t.await {
                committed.insert(d);
            }
        }
        committed
    }
}

/// Build the image `spec` describes and write it to `spec.to`. `log` gets progress lines.
/// Must run inside a tokio runtime: the layers are built on its blocking pool (each
/// compressed in parallel on its own thread, streaming into its upload when the destination
/// is a registry).
pub async fn build(
    spec: &BuildSpec,
    opts: &Options,
    log: &mut (dyn FnMut(String) + Send),
) -> Result<Report> {
    if spec.base_lock.offline && matches!(spec.to, ImageRef::Docker(_)) {
        return Err(Error::Usage(format!(
            "--offline cannot push to {}: build to oci:DIR and `lamina push` it later",
            spec.to
        )));
    }
    let session = transport::preflight(&spec.to, opts).await?;
    let staging = Staging::for_dest(&spec.to)?;
    let crate::base::Base {
        source: base,
        pinned,
        how,
        ..
    } = crate::base::read(spec, opts).await?;
    log(format!(
        "base {} ({}, {} layers, {how})",
        spec.base,
        base.manifest_digest,
        base.image.layers.len()
    ));
    // `[function] runtime_client`: the base's interpreter found and the config completed.
    let client = match &spec.runtime_client {
        Some(_) => {
            let (s, b, c) = (spec.clone(), base.image.clone(), opts.cache_dir.clone());
            let (prepared, lines) =
                crate::task::blocking("finding the runtime client's interpreter", move || {
                    let mut lines = Vec::new();
                    let p = crate::lambda::client::prepare(&s, &b, &c, &mut |l| lines.push(l))?;
                    Ok((p, lines))
                })
                .await?;
            lines.into_iter().for_each(&mut *log);
            Some(prepared)
        }
        None => None,
    };
    let spec = client.as_ref().map_or(spec, |c| &c.spec);
    // Fail fast: what the config alone tells, before any layer is read or compressed.
    crate::lambda::gate_early(spec, &base.image, log)?;
    let mut image = base.image.clone();
    let created = rfc3339(spec.timestamp);
    // A registry destination: each layer streams into an upload session while it is being
    // compressed, committed once the image is built (and has passed the Lambda checks).
    let streamer = Streamer::new(&spec.to, session.as_ref());
    let shared = crate::registry::buildcache::Shared::for_build(
        spec.cache.clone(),
        &spec.to,
        session.as_ref().map(|s| s.client.clone()),
        spec.lambda_check,
        opts,
        log,
    )
    .await;
    let (spec2, opts2, streamer2, shared2) =
        (spec.clone(), opts.clone(), streamer.clone(), shared.clone());
    let ((built, what, streams, got), staging) =
        crate::task::blocking("building the layers", move || {
            let built = build_layers(&spec2, &opts2, &staging, streamer2.as_ref(), shared2)?;
            Ok((built, staging))
        })
        .await?;
    let to_record = crate::registry::buildcache::built_by_key(&got, &built, shared.as_deref(), log);
    let commits: Vec<_> = streams
        .into_iter()
        .zip(&built)
        .map(|(s, b)| s.map(|s| (s, b.digest.clone(), b.size)))
        .collect();
    let sources: Vec<layer::Provenance> = got.iter().map(|(p, _)| *p).collect();
    add_layers(&mut image, built, what, &sources, &created, log);
    for l in image.layers.iter().filter(|l| l.origin == Origin::New) {
        crate::transport::layout::remember_written(l, &opts.cache_dir);
    }
    image.apply_config(&spec.config, &created);
    crate::image::set_platform(&mut image.config, spec.platform);
    image.annotations = spec.annotations.clone();
    if let Some((name, digest)) = pinned {
        // What ko and BuildKit record: which base, and exactly which bytes of it.
        let a = &mut image.annotations;
        a.entry(crate::base::BASE_NAME.into()).or_insert(name);
        a.entry(crate::base::BASE_DIGEST.into())
            .or_insert_with(|| digest.to_string());
    }
    let rendered = image.render();
    if rendered
        .layers
        .iter()
        .any(|l| l.origin == Origin::Base && !l.path.exists())
    {
        return Err(Error::image(
            &spec.base,
            "a base layer disappeared during the build",
        ));
    }
    let client_gate = match &client {
        Some(c) => {
            let (p, r, cfg, cache) = (
                c.clone(),
                rendered.clone(),
                image.config.clone(),
                opts.cache_dir.clone(),
            );
            crate::task::blocking("checking the runtime client", move || {
                let mut lines = Vec::new();
                let checked = crate::lambda::client::check_built(&p, &r, &cfg, &cache, &mut |l| {
                    lines.push(l)
                });
                Ok((checked, lines))
            })
            .await
            .and_then(|(checked, lines)| {
                lines.into_iter().for_each(&mut *log);
                checked
            })
        }
        None => Ok(()),
    };
    let gated = match client_gate {
        Ok(()) => lambda_gate(spec, &rendered, &image, opts, log).await,
        Err(e) => Err(e),
    };
    if let Err(e) = gated {
        if let Some(s) = &streamer {
            s.finish(commits, false).await;
        }
        return Err(e);
    }
    let streamed = match &streamer {
        Some(s) => s.finish(commits, true).await,
        None => Default::default(),
    };
    let write = transport::write(
        &spec.to,
        &rendered,
        staging,
        spec.timestamp,
        opts,
        session.as_ref(),
        &streamed,
    );
    // A cache in the destination's repository (the default) is recorded while the image is
    // pushed: its read-back waits overlap the uploads. An entry seen before its blob is
    // committed is only a miss for a reader (lookups check the blob).
    let pushed = match &shared {
        Some(c) if c.in_destination() => {
            let mut lines = Vec::new();
            let mut keep = |l| lines.push(l);
            let (pushed, ()) = tokio::join!(write, c.record_logged(&to_record, &mut keep));
            let pushed = pushed?;
            lines.into_iter().for_each(&mut *log);
            pushed
        }
        Some(c) => {
            let pushed = write.await?;
            c.record_logged(&to_record, log).await;
            pushed
        }
        None => write.await?,
    };
    drop(base);
    Ok(with_sources(
        report(&spec.to, &rendered, pushed, true),
        &sources,
    ))
}

/// The report with each new layer's source (built, local or registry cache).
fn with_sources(mut report: Report, sources: &[layer::Provenance]) -> Report {
    let new = report
        .layers
        .iter_mut()
        .filter(|l| l.origin == Some(Origin::New));
    new.zip(sources).for_each(|(l, p)| l.source = Some(*p));
    report
}

/// Stack the new layers on `image`, each with its history line, telling `log`.
fn add_layers(
    image: &mut crate::image::Image,
    built: Vec<LayerBlob>,
    what: Vec<String>,
    sources: &[layer::Provenance],
    created: &str,
    log: &mut (dyn FnMut(String) + Send),
) {
    for (i, (b, created_by)) in built.into_iter().zip(what).enumerate() {
        let from = sources.get(i).map_or("built", |p| p.word());
        log(format!(
            "layer {} ({} bytes, {from}) {created_by}",
            b.digest, b.size
        ));
        image.push_layer(
            Layer {
                media_type: oci_spec::image::MediaType::ImageLayerGzip,
                digest: b.digest,
                size: b.size,
                diff_id: b.diff_id,
                path: b.path,
                origin: Origin::New,
                from: None,
            },
            created,
            created_by,
        );
    }
}

/// For a registry destination (unless disabled), the Lambda checks on the image as rendered,
/// from its in-memory config (its layers read on the blocking pool): an error if it fails them.
async fn lambda_gate(
    spec: &BuildSpec,
    rendered: &Rendered,
    image: &crate::image::Image,
    opts: &Options,
    log: &mut (dyn FnMut(String) + Send),
) -> Result<()> {
    if !spec.lambda_check || !matches!(spec.to, ImageRef::Docker(_)) {
        return Ok(());
    }
    let (shown, rendered, config, cache) = (
        spec.to.to_string(),
        rendered.clone(),
        image.config.clone(),
        opts.cache_dir.clone(),
    );
    let checked = crate::task::blocking("checking the image", move || {
        crate::lambda::check_rendered(&shown, &rendered, &config, &cache)
    })
    .await?;
    crate::lambda::gate(&checked, &spec.to, log)
}

/// `(device, inode)` of the staging directory and a local destination: lamina's own output,
/// which may sit inside a source directory (an `out` next to the code) and must never be put
/// into a layer.
fn own_output(staging: &Staging, spec: &BuildSpec) -> Vec<(u64, u64)> {
    [Some(staging.dir.path()), spec.to.local_path()]
        .into_iter()
        .flatten()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| {
            use std::os::unix::fs::MetadataExt;
            (m.dev(), m.ino())
        })
        .collect()
}

type Built = (
    Vec<LayerBlob>,
    Vec<String>,
    Vec<Option<Stream>>,
    Vec<(layer::Provenance, Option<String>)>,
);

/// Write the new layers (the deletions' whiteouts first, then each `[[layer]]`) in parallel
/// into the staging directory, each streamed by `streamer` if there is one: the blobs, their
/// history lines, and the streams to commit.
fn build_layers(
    spec: &BuildSpec,
    opts: &Options,
    staging: &Staging,
    streamer: Option<&Streamer>,
    shared: Option<std::sync::Arc<crate::registry::buildcache::Shared>>,
) -> Result<Built> {
    let lopts = LayerOptions {
        mtime: spec.timestamp,
        compression_level: spec.compression_level,
        fix_permissions: spec.fix_permissions,
    };
    let blobs = staging.blobs();
    // `--no-cache` rebuilds every layer but still records them: the next build is fast again.
    let cache = Some(if spec.layer_cache {
        layer::cache::LayerCache::new(&opts.cache_dir)
    } else {
        layer::cache::LayerCache::refreshing(&opts.cache_dir)
    });
    let skip = own_output(staging, spec);
    type Job<'a> = Box<dyn FnOnce() -> Result<(LayerBlob, Option<Stream>, Got)> + Send + 'a>;
    type Got = (layer::Provenance, Option<String>);
    let mut jobs: Vec<Job> = Vec::new();
    let mut what = Vec::new();
    if !spec.deletes.is_empty() {
        let blobs = &blobs;
        jobs.push(Box::new(move || {
            let b = layer::build_whiteouts(&spec.deletes, lopts, blobs)?;
            Ok((b, None, (layer::Provenance::Built, None)))
        }));
        let shown: Vec<String> = spec.deletes.iter().map(|d| format!("/{d}")).collect();
        what.push(format!("lamina: delete {}", shown.join(" ")));
    }
    // `--no-cache` finds nothing in the registry cache either, but still records there.
    let reuse = spec.layer_cache;
    let remote = shared
        .as_ref()
        .map(|c| move |k: &str, b: &std::path::Path| if reuse { c.lookup(k, b) } else { None });
    for (i, l) in spec.layers.iter().enumerate() {
        let (blobs, cache, skip) = (&blobs, cache.as_ref(), &skip);
        let remote = remote.as_ref().map(|r| r as layer::Remote);
        let verify = spec.cache_verify;
        // Only the source's own name: the path the project sits in must not reach the image.
        let name = l
            .source
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let role = spec.layer_roles.get(i).map_or("layer", String::as_str);
        let shown = format!("{role} {name} -> {}", l.dest);
        let bar = opts.progress.layer(&shown);
        jobs.push(Box::new(move || {
            // The upload session opens only for a layer that is actually built; the bar counts
            // the compressed bytes of a layer being built.
            let mut stream = None;
            let mut tee = || {
                let inner = streamer.map(|st| {
                    let (tee, s) = st.start();
                    stream = Some(s);
                    tee
                });
                Some(bar.counting(inner))
            };
            let how = layer::How {
                cache,
                remote,
                verify,
                files: Some(bar.files()),
            };
            match layer::build_with(l, lopts, blobs, skip, &mut tee, &how) {
                Ok(got) => {
                    bar.finish(got.blob.size, got.provenance.word());
                    Ok((got.blob, stream, (got.provenance, got.key)))
                }
                Err(e) => {
                    bar.abandon();
                    Err(e)
                }
            }
        }));
        what.push(format!("lamina: {shown}"));
    }
    let mut built = Vec::new();
    let mut streams = Vec::new();
    let mut got = Vec::new();
    for (b, s, g) in parallel(jobs)? {
        built.push(b);
        streams.push(s);
        got.push(g);
    }
    Ok((built, what, streams, got))
}

/// Copy an image as it is (same manifest digest) from `src` to `dest`: `push` and `pull`.
/// Every blob is verified (digest, size, diff_id) before anything is written, so a tampered
/// image is refused whether or not it is checked. With `lambda_check`, an image going to a
/// registry must pass the Lambda checks first.
pub async fn copy(
    src: &ImageRef,
    dest: &ImageRef,
    platform: Option<Platform>,
    opts: &Options,
    lambda_check: bool,
) -> Result<Report> {
    if let ImageRef::Scratch = dest {
        return Err(Error::Usage("`scratch` cannot be a destination".into()));
    }
    let staging = Staging::for_dest(dest)?;
    let gated = lambda_check && matches!(dest, ImageRef::Docker(_));
    let source = match pinned_from_cache(src, platform, opts).await {
        Some(s) => s,
        None => {
            let opened = transport::Opened::open(src, opts).await?;
            let resolved = opened.resolve(platform).await?;
            match opened.read(&resolved, platform, ReadMode::Verified).await {
                Ok(s) => s,
                // An index the push cannot choose from: refused under its rule's name.
                Err(_) if gated && let transport::Resolved::Index(idx) = &resolved => {
                    return Err(crate::lambda::index_refusal(src, idx));
                }
                Err(e) => return Err(e),
            }
        }
    };
    let source = if gated {
        let (shown, cache) = (src.to_string(), opts.cache_dir.clone());
        let (checked, source) = crate::task::blocking("checking the image", move || {
            let checked = crate::lambda::check_source(&shown, &source, &cache)?;
            Ok((checked, source))
        })
        .await?;
        crate::lambda::gate(&checked, dest, &mut |s| opts.progress.line(&s))?;
        source
    } else {
        source
    };
    let img = source.as_stored();
    let mtime = 0;
    let pushed =
        transport::write(dest, &img, staging, mtime, opts, None, &Default::default()).await?;
    Ok(report(dest, &img, pushed, false))
}

/// A registry image named by digest whose documents and blobs are all in the blob cache, read
/// from there with no network (as a pinned base is); `None` when anything is missing, damaged
/// or not a plain choice for `platform`: the registry is then asked as usual.
async fn pinned_from_cache(
    src: &ImageRef,
    platform: Option<Platform>,
    opts: &Options,
) -> Option<transport::Source> {
    let ImageRef::Docker(rr) = src else {
        return None;
    };
    let digest = rr.digest.as_ref()?;
    match transport::from_cache(&opts.cache_dir, rr, digest, platform, &src.to_string()).await {
        Ok(transport::FromCache::Read(source, _)) => Some(*source),
        _ => None,
    }
}

/// What `lamina inspect` shows.
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Inspection {
    /// The same fields a build reports.
    #[serde(flatten)]
    pub report: Report,
    /// The manifest document, parsed.
    pub manifest: serde_json::Value,
    /// The image config document, parsed.
    pub image_config: serde_json::Value,
    #[serde(skip)]
    raw: Vec<u8>,
}

impl Inspection {
    /// The manifest exactly as stored.
    pub fn manifest_bytes(&self) -> Vec<u8> {
        self.raw.clone()
    }
}

/// Read an image (choosing `platform` from an index) without writing anything.
pub async fn inspect(
    r: &ImageRef,
    platform: Option<Platform>,
    opts: &Options,
) -> Result<Inspection> {
    let src = transport::read(r, platform, ReadMode::Metadata, opts).await?;
    let manifest: serde_json::Value = serde_json::from_slice(&src.manifest)
        .map_err(|e| Error::image(r, format!("manifest is not JSON: {e}")))?;
    let media_type = manifest
        .get("mediaType")
        .and_then(|m| m.as_str())
        .unwrap_or("application/vnd.oci.image.manifest.v1+json")
        .to_owned();
    Ok(Inspection {
        report: Report {
            reference: r.to_string(),
            digest: src.manifest_digest.clone(),
            media_type,
            size: src.manifest.len() as u64,
            platform: platform_string(&src.image.platform()),
            config: BlobReport {
                digest: src.config_digest.clone(),
                size: src.config_size,
            },
            layers: layer_reports(&src.image.layers, false),
            blobs: None,
        },
        manifest,
        raw: src.manifest.clone(),
        image_config: serde_json::to_value(&src.image.config).expect("config serializes"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Overrides;

    /// The library runs on its caller's runtime, a current-thread one included (layers are
    /// built on its blocking pool): build to a layout from scratch, then inspect the result.
    #[tokio::test(flavor = "current_thread")]
    async fn builds_and_inspects_from_async_code() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("src")).unwrap();
        std::fs::write(dir.path().join("src/f.txt"), b"hello").unwrap();
        let ov = Overrides {
            base: Some(ImageRef::Scratch),
            to: Some(ImageRef::Oci {
                dir: dir.path().join("out"),
                tag: Some("t".into()),
            }),
            layers: vec![crate::spec::flags::layer("src:/opt", dir.path()).unwrap()],
            ..Overrides::default()
        };
        let spec = BuildSpec::resolve(None, &ov, dir.path()).unwrap();
        let opts = Options::new(dir.path().join("cache"), dir.path().join("docker"));
        let mut lines = Vec::new();
        let built = build(&spec, &opts, &mut |l| lines.push(l)).await.unwrap();
        assert_eq!(built.layers.len(), 1, "{lines:?}");
        let seen = inspect(&spec.to, None, &opts).await.unwrap();
        assert_eq!(seen.report.digest, built.digest);
    }

    /// The library's futures are `Send`: a caller can `tokio::spawn` them on a multi-thread
    /// runtime. (Checked at compile time; never run.)
    #[allow(dead_code)]
    fn entry_points_are_send(
        spec: &BuildSpec,
        opts: &Options,
        r: &ImageRef,
        p: &crate::run::Prepared,
        o: &crate::run::RunOptions,
    ) {
        fn send<T: Send>(_: T) {}
        send(build(spec, opts, &mut |_| {}));
        send(copy(r, r, None, opts, true));
        send(inspect(r, None, opts));
        send(crate::lambda::check(r, None, opts));
        send(crate::registry::login("r", opts));
        send(transport::read(r, None, ReadMode::Verified, opts));
        send(transport::Opened::open(r, opts));
        send(transport::preflight(r, opts));
        let pkg = crate::lambda::package::Package::Function;
        send(crate::lambda::package::from_image(r, None, pkg, opts));
        send(crate::run::prepare(r, None, opts, &mut |_| {}));
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        send(crate::run::serve(p, o, addr, &mut |_| {}));
        send(crate::run::invoke_once(p, o, Default::default()));
    }
}
