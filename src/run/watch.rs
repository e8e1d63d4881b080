//! `lamina run --watch`: build a spec, serve the image it writes, and when one of the spec's
//! inputs changes (the spec file, a layer's source, a base on disk), build again — the layer
//! cache makes that cost only the changed layers — and swap the new root file system in
//! between invocations, the invoke endpoint staying up. Invocations arriving while the new
//! code is built wait for it (`supervisor::Handle::hold`); a failed build leaves the previous
//! code serving.
//!
//! Changes are seen with the `notify` crate (inotify on Linux): directories are watched
//! recursively, single files through their directory (editors replace files by renaming).
//! What lamina itself writes (the image's destination, the cache) is ignored.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;

use super::{Prepared, RunOptions};
use crate::error::{Error, Result};
use crate::reference::ImageRef;
use crate::registry::Options;
use crate::spec::{BuildSpec, Overrides};

/// What `--watch` rebuilds: a spec file, with the command line's overrides (the image run is
/// the spec's destination), paths relative to `cwd`.
#[derive(Clone, Debug)]
pub struct Watch {
    /// The spec file (`lamina.toml`), read again at each rebuild.
    pub spec_file: PathBuf,
    /// Set over the spec, as `lamina build`'s flags are (`to` names the image run).
    pub overrides: Overrides,
    /// The directory relative paths are taken from.
    pub cwd: PathBuf,
}

impl Watch {
    /// Read and resolve the spec as it is now.
    fn spec(&self) -> Result<BuildSpec> {
        let sf = crate::spec::read_spec_file(&self.spec_file)?;
        BuildSpec::resolve(Some((&self.spec_file, sf)), &self.overrides, &self.cwd)
    }
}

/// How long changes are gathered before a rebuild starts (an editor's save is several
/// events; a `git checkout` many).
const SETTLE: Duration = Duration::from_millis(150);

/// The inputs of a spec, watched for changes.
pub(super) struct Watcher {
    _watcher: notify::RecommendedWatcher,
    events: mpsc::UnboundedReceiver<notify::Result<notify::Event>>,
    /// `(path, is a directory)`: a change under a directory, or to the file, counts.
    inputs: Vec<(PathBuf, bool)>,
    /// Paths lamina writes: changes under them never count.
    ignored: Vec<PathBuf>,
}

/// The file-system paths a spec reads: the spec file, each layer's source, a base on disk.
fn inputs(spec: &BuildSpec) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = spec.file.iter().cloned().collect();
    v.extend(spec.layers.iter().map(|l| l.source.clone()));
    if let Some(p) = local_path(&spec.base) {
        v.push(p);
    }
    v.sort();
    v.dedup();
    v
}

/// The file or directory an image reference names on this machine, if any.
fn local_path(r: &ImageRef) -> Option<PathBuf> {
    match r {
        ImageRef::Oci { dir, .. } => Some(dir.clone()),
        ImageRef::OciArchive { file, .. } | ImageRef::DockerArchive { file, .. } => {
            Some(file.clone())
        }
        _ => None,
    }
}

impl Watcher {
    /// Watch the inputs of `spec`, ignoring its destination and the cache under `cache_dir`.
    pub(super) fn new(spec: &BuildSpec, cache_dir: &Path) -> Result<Watcher> {
        let (tx, events) = mpsc::unbounded_channel();
        let mut watcher = notify::recommended_watcher(move |ev| {
            // The receiver is gone only when lamina stops watching.
            let _ = tx.send(ev);
        })
        .map_err(|e| Error::Sandbox(format!("cannot watch files for changes: {e}")))?;
        let mut watched = Vec::new();
        for p in inputs(spec) {
            let is_dir = p.is_dir();
            let target = if is_dir {
                p.clone()
            } else {
                p.parent().map(Path::to_owned).unwrap_or_else(|| p.clone())
            };
            let mode = if is_dir {
                RecursiveMode::Recursive
            } else {
                RecursiveMode::NonRecursive
            };
            watcher.watch(&target, mode).map_err(|e| {
                Error::Sandbox(format!(
                    "cannot watch {} for changes: {e}",
                    target.display()
                ))
            })?;
            watched.push((p, is_dir));
        }
        let mut ignored = vec![cache_dir.to_owned()];
        ignored.extend(local_path(&spec.to));
        Ok(Watcher {
            _watcher: watcher,
            events,
            inputs: watched,
            ignored,
        })
    }

    /// Does a change of `path` count?
    fn counts(&self, path: &Path) -> bool {
        !self.ignored.iter().any(|i| path.starts_with(i))
            && self
                .inputs
                .iter()
                .any(|(p, dir)| if *dir { path.starts_with(p) } else { path == p })
    }

    /// The first relevant change, once changes have settled; `None` if watching stopped.
    pub(super) async fn changed(&mut self) -> Option<PathBuf> {
        let first = loop {
            let ev = self.events.recv().await?;
            if let Some(p) = self.relevant(ev) {
                break p;
            }
        };
        // Gather what follows; bounded by the channel's contents.
        tokio::time::sleep(SETTLE).await;
        while self.events.try_recv().is_ok() {}
        Some(first)
    }

    fn relevant(&self, ev: notify::Result<notify::Event>) -> Option<PathBuf> {
        let ev = ev.ok()?;
        if !matches!(
            ev.kind,
            EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_)
        ) {
            return None;
        }
        ev.paths.into_iter().find(|p| self.counts(p))
    }
}

/// Build the spec of `w` and unpack the image it wrote: the new code to run, and the spec it
/// was built from (whose inputs are then watched).
pub(super) async fn build_and_prepare(
    w: &Watch,
    opts: &Options,
    log: &mut (dyn FnMut(String) + Send),
) -> Result<(Prepared, BuildSpec)> {
    let spec = w.spec()?;
    let started = std::time::Instant::now();
    let report = crate::build::build(&spec, opts, log).await?;
    log(format!(
        "built {} ({}) in {:.2}s",
        spec.to,
        report.digest,
        started.elapsed().as_secs_f64()
    ));
    let prepared = super::prepare(&spec.to, Some(spec.platform), opts, log).await?;
    Ok((prepared, spec))
}

/// `lamina run --watch`: build `w`'s spec, serve the image on `listen` as
/// [`super::serve`] does, and rebuild and swap in new code when an input changes, until
/// interrupted.
pub async fn serve_watching(
    w: &Watch,
    opts: &Options,
    o: &RunOptions,
    listen: std::net::SocketAddr,
    on_listen: &mut (dyn FnMut(std::net::SocketAddr) + Send),
) -> Result<()> {
    let mut log = |s: String| eprintln!("lamina: {s}");
    let (prepared, spec) = build_and_prepare(w, opts, &mut log).await?;
    let watcher = Watcher::new(&spec, &opts.cache_dir)?;
    eprintln!(
        "lamina: watching {} for changes",
        inputs(&spec)
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let rebuild = Rebuild {
        watch: w.clone(),
        opts: opts.clone(),
        watcher,
    };
    super::serve_loop(&prepared, o, listen, on_listen, Some(rebuild)).await
}

/// What the serving loop needs to follow changes.
pub(super) struct Rebuild {
    watch: Watch,
    opts: Options,
    pub(super) watcher: Watcher,
}

impl Rebuild {
    /// Build again after `what` changed: the new code, or `None` (said on stderr) when the
    /// build failed and the previous code keeps serving.
    pub(super) async fn rebuild(&mut self, what: &Path) -> Option<Prepared> {
        eprintln!("lamina: watch: {} changed: rebuilding", what.display());
        let mut log = |s: String| eprintln!("lamina: {s}");
        match build_and_prepare(&self.watch, &self.opts, &mut log).await {
            Ok((prepared, spec)) => {
                // The spec may name other inputs now.
                match Watcher::new(&spec, &self.opts.cache_dir) {
                    Ok(w) => self.watcher = w,
                    Err(e) => eprintln!("lamina: watch: {e}; still watching the previous inputs"),
                }
                eprintln!(
                    "lamina: watch: serving the new code ({})",
                    prepared.manifest_digest
                );
                Some(prepared)
            }
            Err(e) => {
                eprintln!("lamina: watch: the build failed: {e}; still serving the previous code");
                None
            }
        }
    }
}
