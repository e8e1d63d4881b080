//! Lambda `.zip` deployment packages: the other half of Lambda deployment. A function's zip holds
//! what an image would put under `/var/task`, a Lambda layer's zip what it would put under
//! `/opt`, both with paths relative to that directory. The files come from the same
//! [`collect`](crate::layer::source::collect) as image layers (or from an image's layers), so a
//! zip and an image built from one spec hold the same files; [`write`] lays them out with
//! [`crate::layer::zip::ZipWriter`], byte-for-byte reproducibly, after checking Lambda's size limits.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde::Serialize;

use super::fs::{self as imagefs, FileSystem, Item as FsItem, Node, Op};
use crate::digest::hash_reader;
use crate::error::{Error, IoContext, Result};
use crate::image::Layer;
use crate::image::blob::decompress;
use crate::image::fsindex::FsIndex;
use crate::layer::LayerSpec;
use crate::layer::entry::{Data, Kind, file_mode};
use crate::layer::source::{Input, collect, collect_skipping};
use crate::layer::zip::{Body, ZipWriter};
use crate::platform::Platform;
use crate::reference::ImageRef;
use crate::registry::Options;
use crate::transport::{self, ReadMode};

/// Largest zip Lambda takes in a direct upload (`CodeSizeZipped`: 50 MiB, 52,428,800 bytes).
pub const MAX_ZIPPED: u64 = 50 << 20;
/// Largest a function and its layers may be once extracted (`CodeSizeUnzipped`: 250 MiB,
/// 262,144,000 bytes).
pub const MAX_UNZIPPED: u64 = 250 << 20;

/// Which kind of package: where its content sits in an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Package {
    /// A function's deployment package: `/var/task`.
    Function,
    /// A Lambda layer: `/opt`.
    Layer,
}

impl Package {
    /// The directory the package's content is relative to, without its leading `/`.
    pub fn root(self) -> &'static str {
        match self {
            Package::Function => "var/task",
            Package::Layer => "opt",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Package::Function => "function .zip",
            Package::Layer => "Lambda layer .zip",
        }
    }

    /// `rel` when `path` is strictly below the root, else `None`.
    fn relative(self, path: &[u8]) -> Option<&[u8]> {
        let root = self.root().as_bytes();
        path.strip_prefix(root)
            .and_then(|rest| rest.strip_prefix(b"/"))
            .filter(|rel| !rel.is_empty())
    }
}

/// One entry of a package: its path relative to the root, its mode and what it holds (never a
/// hard link: those become copies of their target).
struct Item {
    path: Vec<u8>,
    mode: u32,
    kind: Kind,
    /// Which of [`Contents::inputs`] it comes from (and a `Data::Zip` file is read from).
    input: usize,
}

/// What goes into a package, sorted by path, and where the bytes are read from.
pub struct Contents {
    package: Package,
    items: Vec<Item>,
    /// Where the bytes are read from, and what that is for messages (a layer's source, an
    /// image reference).
    inputs: Vec<(Input, String)>,
    /// Files taken out of an image's layers live here until the zip is written.
    _tmp: Option<crate::staging::Dir>,
}

impl Contents {
    /// Number of entries (directories and symbolic links included).
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// No entries at all.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Bytes once extracted: file sizes plus symbolic link targets.
    pub fn unzipped(&self) -> u64 {
        self.items
            .iter()
            .map(|i| match &i.kind {
                Kind::File { size, .. } => *size,
                Kind::Symlink(t) => t.len() as u64,
                _ => 0,
            })
            .sum()
    }

    /// `(path, mode, kind)` of every entry, in order (paths relative to the root).
    pub fn entries(&self) -> impl Iterator<Item = (&[u8], u32, &Kind)> {
        self.items
            .iter()
            .map(|i| (i.path.as_slice(), i.mode, &i.kind))
    }
}

impl Contents {
    /// The file system the package gives the function: its entries under its root
    /// (`/var/task`, or `/opt` for a layer zip) and, for a function, the Lambda layer zips it
    /// runs with under `/opt` (later ones over earlier ones, as Lambda extracts them). Only
    /// heads and ELF headers of the files are read.
    pub fn file_system(&mut self, with_layers: &[PathBuf]) -> Result<FileSystem> {
        let mut fs = FileSystem::new();
        let root = self.package.root();
        fs.insert(root, Node::dir(0o755));
        for it in &self.items {
            let path = format!("{root}/{}", shown(&it.path));
            let (input, origin) = &mut self.inputs[it.input];
            let node = super::zipgate::node_of(&path, it.mode, &it.kind, input)
                .ctx(|| format!("reading /{path} (from {origin})"))?;
            if let Some(n) = node {
                fs.insert(&path, n);
            }
        }
        for p in with_layers {
            let l = LayerSpec {
                source: p.to_owned(),
                dest: "/opt".into(),
                exclude: vec![],
                mode: None,
                dir_mode: None,
                uid: 0,
                gid: 0,
                wheels: false,
            };
            let mut c = collect(&l)?;
            for e in &c.entries {
                let path = shown(&e.path);
                let node = super::zipgate::node_of(&path, e.mode, &e.kind, &mut c.input)
                    .ctx(|| format!("reading /{path} (from {})", p.display()))?;
                if let Some(n) = node {
                    fs.insert(&path, n);
                }
            }
        }
        Ok(fs)
    }
}

/// The zip gate: the file rules on what `contents` (with its Lambda layers) gives the
/// function, for `to` (the zip to be written, named in the report).
pub fn check(
    contents: &mut Contents,
    with_layers: &[PathBuf],
    opts: &super::zipgate::GateOptions,
    to: &Path,
) -> Result<super::zipgate::GateReport> {
    let fs = contents.file_system(with_layers)?;
    let findings = super::zipgate::check_files(&fs, opts);
    Ok(super::zipgate::GateReport {
        reference: to.display().to_string(),
        platform: opts.platform.to_string(),
        ok: !findings
            .iter()
            .any(|f| f.severity == super::rules::Severity::Error),
        findings,
    })
}

fn shown(p: &[u8]) -> String {
    String::from_utf8_lossy(p).into_owned()
}

/// The contents of `layers` (a spec's `[[layer]]`s and `--layer` flags) as one package. Every
/// layer must go to the package's root or below it; a later layer replaces what an earlier
/// one put at the same path, as image layers do. `fix_permissions` as for builds.
/// A layer `#n+1` of a zip must go under the package's root.
fn check_dest(l: &LayerSpec, n: usize, package: Package) -> Result<()> {
    let dest =
        crate::layer::image_path(&l.dest, "dest").map_err(|m| Error::source(&l.source, m))?;
    let root = package.root();
    if dest != root && package.relative(dest.as_bytes()).is_none() {
        let hint = match package {
            Package::Function if dest == "opt" || dest.starts_with("opt/") => {
                " (build the /opt content as a Lambda layer with `lamina zip --lambda-layer`)"
            }
            Package::Layer if dest == "var/task" || dest.starts_with("var/task/") => {
                " (the function's own files go in its zip: `lamina zip` without --lambda-layer)"
            }
            _ => "",
        };
        return Err(Error::source(
            &l.source,
            format!(
                "layer #{} goes to {}, but a {} holds only what goes under /{root}{hint}",
                n + 1,
                l.dest,
                package.what()
            ),
        ));
    }
    Ok(())
}

/// The contents of a package made of layer inputs (a function's code and dependencies, or a
/// Lambda layer's directories), with permissions fixed as Lambda needs them.
pub fn from_layers(
    layers: &[LayerSpec],
    package: Package,
    fix_permissions: bool,
) -> Result<Contents> {
    from_layers_excluding(layers, package, fix_permissions, &[])
}

/// [`from_layers`], leaving out the files at `exclude` wherever a source directory holds them:
/// the zip being written (`--to`), which may sit inside the code it is made from. (Zips lamina
/// wrote earlier are always left out: they carry its mark.)
pub fn from_layers_excluding(
    layers: &[LayerSpec],
    package: Package,
    fix_permissions: bool,
    exclude: &[&Path],
) -> Result<Contents> {
    use std::os::unix::fs::MetadataExt;
    let skip: Vec<(u64, u64)> = exclude
        .iter()
        .filter_map(|p| fs::symlink_metadata(p).ok())
        .map(|m| (m.dev(), m.ino()))
        .collect();
    if layers.is_empty() {
        return Err(Error::Usage(format!(
            "nothing to zip: give a spec whose [[layer]]s go to /{} (-f lamina.toml) or --layer SOURCE:/{}",
            package.root(),
            package.root()
        )));
    }
    let mut merged: BTreeMap<Vec<u8>, Item> = BTreeMap::new();
    let mut inputs = Vec::with_capacity(layers.len());
    for (n, l) in layers.iter().enumerate() {
        check_dest(l, n, package)?;
        let root = package.root();
        let mut c = collect_skipping(l, &skip)?;
        if fix_permissions {
            crate::layer::fix::fix_permissions(&mut c.entries);
        }
        let files: HashMap<Vec<u8>, Kind> = c
            .entries
            .iter()
            .filter(|e| matches!(e.kind, Kind::File { .. }))
            .map(|e| (e.path.clone(), e.kind.clone()))
            .collect();
        for e in c.entries {
            if e.path == root.as_bytes() && e.kind != Kind::Dir {
                return Err(Error::source(
                    &l.source,
                    format!(
                        "layer #{} puts a file at /{root} itself; a dest ending in `/` (\"/{root}/\") puts it inside",
                        n + 1
                    ),
                ));
            }
            let Some(rel) = package.relative(&e.path) else {
                continue;
            };
            let kind = match e.kind {
                Kind::HardLink(t) => files.get(&t).cloned().ok_or_else(|| {
                    Error::source(
                        &l.source,
                        format!(
                            "hard link /{} points at a missing /{}",
                            shown(&e.path),
                            shown(&t)
                        ),
                    )
                })?,
                k => k,
            };
            let item = Item {
                path: rel.to_vec(),
                mode: e.mode,
                kind,
                input: inputs.len(),
            };
            // A file (or link) over a directory of an earlier layer replaces its subtree.
            if item.kind != Kind::Dir
                && merged
                    .get(&item.path)
                    .is_some_and(|old| old.kind == Kind::Dir)
            {
                let mut prefix = item.path.clone();
                prefix.push(b'/');
                merged.retain(|p, _| !p.starts_with(&prefix));
            }
            merged.insert(item.path.clone(), item);
        }
        inputs.push((c.input, l.source.display().to_string()));
    }
    finish(package, merged.into_values().collect(), inputs, None)
}

fn finish(
    package: Package,
    items: Vec<Item>,
    inputs: Vec<(Input, String)>,
    tmp: Option<crate::staging::Dir>,
) -> Result<Contents> {
    if items.is_empty() {
        return Err(Error::Usage(format!(
            "nothing to zip: no file goes under /{}",
            package.root()
        )));
    }
    Ok(Contents {
        package,
        items,
        inputs,
        _tmp: tmp,
    })
}

/// The zip items of the file system `fs` under the package's root; files' contents are the
/// ones kept in `kept` as the layers were read.
fn items_under(fs: &FileSystem, r: &ImageRef, package: Package, kept: &Path) -> Result<Vec<Item>> {
    let root = package.root();
    match fs.get(root).map(|n| &n.kind) {
        Some(imagefs::Kind::Dir) => {}
        None => return Err(Error::image(r, format!("has no /{root}: nothing to zip"))),
        Some(_) => {
            return Err(Error::image(
                r,
                format!(
                    "/{root} is not a directory: lamina cannot take a {} from it",
                    package.what()
                ),
            ));
        }
    }
    let mut items = Vec::new();
    for (path, node) in fs.subtree(root) {
        let Some(rel) = package.relative(path.as_bytes()) else {
            continue;
        };
        let kind = match (&node.kind, node.kept) {
            (imagefs::Kind::Dir, _) => Kind::Dir,
            (imagefs::Kind::File, Some(id)) => Kind::File {
                size: node.size,
                data: Data::Path(kept.join(id.to_string())),
            },
            (imagefs::Kind::File, None) => {
                return Err(Error::image(
                    r,
                    format!(
                        "/{path} could not be read from the layers (a hard link to a file no layer holds)"
                    ),
                ));
            }
            (imagefs::Kind::Symlink(t), _) => Kind::Symlink(t.clone().into_bytes()),
            (imagefs::Kind::Other(what), _) => {
                return Err(Error::image(
                    r,
                    format!(
                        "/{path} is {what}: a zip can hold only files, directories and symbolic links"
                    ),
                ));
            }
        };
        // A zip holds 0644 and 0755 files and 0755 directories, whatever the image's modes
        // (setuid bits, world-writable files): as `lamina zip` makes them from a spec.
        let mode = match kind {
            Kind::Dir => 0o755,
            Kind::Symlink(_) => 0o777,
            _ => file_mode(node.mode, None),
        };
        items.push(Item {
            path: rel.to_vec(),
            mode,
            kind,
            input: 0,
        });
    }
    Ok(items)
}

/// The contents an image has under the package's root, after its whiteouts, for `platform`.
/// Every layer is streamed once (the files under the root are copied to a temporary
/// directory as they pass, counted against [`MAX_UNZIPPED`]: the copy stops at the limit),
/// on the blocking pool; a layer is read again only for files that land under the root from
/// elsewhere (hard links, files written through a symbolic link). Files get the zip's modes
/// (0644, or 0755 with an execute bit; directories 0755).
pub async fn from_image(
    r: &ImageRef,
    platform: Option<Platform>,
    package: Package,
    opts: &Options,
) -> Result<Contents> {
    let src = transport::read(r, platform, ReadMode::Verified, opts).await?;
    let r = r.clone();
    crate::task::blocking("reading the image", move || contents_of(&r, &src, package)).await
}

/// Files kept from an image's layers in a temporary directory, counted against Lambda's
/// extracted-size limit as they are written: a file that would take what the package may
/// hold past [`MAX_UNZIPPED`] stops being copied there.
struct Store<'a> {
    dir: &'a Path,
    next: u64,
    /// Bytes of each kept file.
    sizes: HashMap<u64, u64>,
    /// Bytes kept that the file system may still hold.
    live: u64,
    /// Bytes of `live` the layer being read replaces (counted once, cleared between layers).
    freed: u64,
    /// How many nodes hold each kept file, as of the last layer applied.
    refs: HashMap<u64, usize>,
    replaced: HashSet<u64>,
    /// What crossed the limit, for the error.
    over: Option<String>,
}

impl Store<'_> {
    /// Keep the content of `path` read from `data`; `lower` is what the layers below hold at
    /// that path (replaced by it).
    fn keep(&mut self, path: &str, data: &mut dyn Read, lower: Option<&Node>) -> io::Result<u64> {
        if let Some(k) = lower.and_then(|n| n.kept)
            && self.refs.get(&k) == Some(&1)
            && self.replaced.insert(k)
        {
            self.freed += self.sizes.get(&k).copied().unwrap_or(0);
        }
        let budget = MAX_UNZIPPED.saturating_sub(self.live.saturating_sub(self.freed));
        self.next += 1;
        let id = self.next;
        let at = self.dir.join(id.to_string());
        let mut out = File::create(&at)?;
        let n = io::copy(&mut data.take(budget + 1), &mut out)?;
        if n > budget {
            drop(out);
            let _ = fs::remove_file(&at);
            let msg = format!(
                "/{path} takes what lies under its package root past the {} ({MAX_UNZIPPED} bytes) Lambda \
                 allows a function and its layers once extracted",
                mib(MAX_UNZIPPED)
            );
            self.over = Some(msg.clone());
            return Err(io::Error::other(msg));
        }
        self.sizes.insert(id, n);
        self.live += n;
        Ok(id)
    }

    /// After a layer is applied: delete the kept files no node of `fs` under `root` holds.
    fn collect_garbage(&mut self, fs: &FileSystem, root: &str) {
        self.refs.clear();
        for (_, n) in fs.subtree(root) {
            if let Some(k) = n.kept {
                *self.refs.entry(k).or_default() += 1;
            }
        }
        let gone: Vec<u64> = self
            .sizes
            .keys()
            .filter(|k| !self.refs.contains_key(k))
            .copied()
            .collect();
        for k in gone {
            let size = self.sizes.remove(&k).unwrap_or(0);
            self.live -= size;
            let _ = fs::remove_file(self.dir.join(k.to_string()));
        }
        self.freed = 0;
        self.replaced.clear();
    }

    /// The error for a layer that failed to apply.
    fn error(&self, r: &ImageRef, l: &Layer, e: io::Error) -> Error {
        match &self.over {
            Some(msg) => Error::Usage(format!(
                "{r}: layer {}: {msg}; ship it as a container image instead, up to 10 GiB: \
                 `lamina build --to docker://...`",
                l.digest
            )),
            None => Error::image(r, format!("reading layer {}: {e}", l.digest)),
        }
    }
}

/// The uncompressed tar stream of the verified layer `l` of `r`.
fn open_tar(r: &ImageRef, l: &Layer) -> Result<Box<dyn Read + Send>> {
    // Verified as it was read: its bytes are streamed without hashing them again (and only
    // from a regular file).
    let f = l.compressed().map_err(|e| Error::image(r, e.to_string()))?;
    l.compression()
        .and_then(|c| decompress(BufReader::with_capacity(1 << 20, f), c))
        .map_err(|_| {
            Error::image(
                r,
                format!(
                    "layer {} ({}) is neither a tar nor a gzip tar: lamina cannot read it",
                    l.digest, l.media_type
                ),
            )
        })
}

/// Files the first pass could not keep: regular files that landed under the package root
/// without their tar path being there (written through a symbolic link, or hard links to a
/// file elsewhere in the image). `(layer, tar path)` of each content, and the landings that
/// take it.
#[derive(Default)]
struct Missing {
    wanted: BTreeMap<usize, HashSet<String>>,
    landings: Vec<(String, usize, String)>,
}

impl Missing {
    /// Note what layer `n`'s `items`, just applied to `fs`, put under the root without content.
    /// `files` maps each regular file's tar path to the layer that last wrote it.
    fn note(
        &mut self,
        fs: &FileSystem,
        prefix: &str,
        n: usize,
        items: &[FsItem],
        files: &mut HashMap<String, usize>,
    ) {
        for it in items {
            let source = match &it.op {
                Op::File { .. } => {
                    files.insert(it.path.clone(), n);
                    Some((n, it.path.clone()))
                }
                Op::HardLink { target } => {
                    let t = imagefs::normalize(target);
                    files.get(&t).map(|&m| (m, t))
                }
                _ => None,
            };
            let Some((m, path)) = source else { continue };
            let landing = fs.landing(&it.path);
            let lacking = fs
                .get(&landing)
                .is_some_and(|node| node.kind == imagefs::Kind::File && node.kept.is_none());
            if landing.starts_with(prefix) && lacking {
                self.wanted.entry(m).or_default().insert(path.clone());
                self.landings.push((landing, m, path));
            }
        }
    }

    /// Read again the layers holding what is wanted, keeping exactly that, and give it to
    /// the nodes that lack it.
    fn fetch(
        self,
        r: &ImageRef,
        layers: &[Layer],
        fs: &mut FileSystem,
        store: &mut Store,
    ) -> Result<()> {
        let mut ids: HashMap<(usize, String), u64> = HashMap::new();
        for (m, paths) in &self.wanted {
            let l = &layers[*m];
            let tar = open_tar(r, l)?;
            let mut keeper = |path: &str, data: &mut dyn Read| -> io::Result<Option<u64>> {
                if !paths.contains(path) {
                    return Ok(None);
                }
                let id = store.keep(path, data, None)?;
                ids.insert((*m, path.to_owned()), id);
                Ok(Some(id))
            };
            let res = FsIndex::read_keeping(tar, &mut keeper);
            res.map_err(|e| store.error(r, l, e))?;
        }
        for (landing, m, path) in self.landings {
            if let Some(&id) = ids.get(&(m, path)) {
                fs.set_kept(&landing, id);
            }
        }
        Ok(())
    }
}

/// What [`from_image`] returns, from the image `src` read from `r`. Every layer is read once
/// (files whose tar path is under the root kept as they pass); a layer is read again only for
/// files that land under the root from elsewhere (hard links to files outside it).
fn contents_of(r: &ImageRef, src: &transport::Source, package: Package) -> Result<Contents> {
    let tmp =
        crate::staging::dir("lamina-zip-").ctx(|| "creating a temporary directory".to_owned())?;
    let root = package.root();
    let prefix = format!("{root}/");
    let mut fs = FileSystem::new();
    let mut store = Store {
        dir: tmp.path(),
        next: 0,
        sizes: HashMap::new(),
        live: 0,
        freed: 0,
        refs: HashMap::new(),
        replaced: HashSet::new(),
        over: None,
    };
    let mut missing = Missing::default();
    let mut files = HashMap::new();
    let layers = &src.image.layers;
    for (n, l) in layers.iter().enumerate() {
        let tar = open_tar(r, l)?;
        let lower = &fs;
        let mut keeper = |path: &str, data: &mut dyn Read| -> io::Result<Option<u64>> {
            if !path.starts_with(&prefix) {
                return Ok(None);
            }
            store.keep(path, data, lower.get(path)).map(Some)
        };
        let res = FsIndex::read_keeping(tar, &mut keeper);
        let index = res.map_err(|e| store.error(r, l, e))?;
        fs.apply_items(index.items.clone());
        missing.note(&fs, &prefix, n, &index.items, &mut files);
        store.collect_garbage(&fs, root);
    }
    missing.fetch(r, layers, &mut fs, &mut store)?;
    let items = items_under(&fs, r, package, tmp.path())?;
    if items.is_empty() {
        return Err(Error::image(r, format!("has nothing under /{root} to zip")));
    }
    finish(
        package,
        items,
        vec![(Input::Files, r.to_string())],
        Some(tmp),
    )
}

/// How [`write()`] lays the package out.
#[derive(Clone, Debug)]
pub struct ZipOptions {
    /// Seconds since the Unix epoch for every entry (clamped to 1980..2107, as DOS dates are).
    pub mtime: u64,
    /// 0 stores, 1 to 9 deflates (6 by default).
    pub compression_level: u32,
    /// Lambda layer zips the function will run with: their extracted size counts against
    /// Lambda's 250 MiB limit.
    pub with_layers: Vec<PathBuf>,
}

/// What `lamina zip` reports (and `--json` prints).
#[derive(Serialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// The zip file written.
    pub path: PathBuf,
    /// `sha256:<hex>` of the zip.
    pub digest: String,
    /// The same hash base64-encoded: what Lambda reports as the function's `CodeSha256`.
    pub code_sha256: String,
    /// Bytes of the zip.
    pub size: u64,
    /// Bytes of the package's files once extracted.
    pub unzipped: u64,
    /// Bytes of the `with_layers` zips once extracted.
    pub layers_unzipped: u64,
    /// How many entries it holds.
    pub entries: usize,
    /// Limits crossed that do not stop Lambda from taking the package (the 50 MiB direct
    /// upload limit).
    pub warnings: Vec<String>,
    /// The Lambda gate's findings on the package (warnings only: errors stop the write).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<super::rules::Finding>,
}

fn mib(n: u64) -> String {
    format!("{:.1} MiB", n as f64 / f64::from(1u32 << 20))
}

/// The extracted size of a Lambda layer zip (its files, checked as any zip source is).
fn layer_zip_size(p: &Path) -> Result<u64> {
    let l = LayerSpec {
        source: p.to_owned(),
        dest: "/opt".into(),
        exclude: vec![],
        mode: None,
        dir_mode: None,
        uid: 0,
        gid: 0,
        wheels: false,
    };
    if !p.extension().is_some_and(|e| e.eq_ignore_ascii_case("zip")) {
        return Err(Error::source(p, "--with-layer takes a Lambda layer .zip"));
    }
    let c = collect(&l)?;
    Ok(c.entries
        .iter()
        .map(|e| match &e.kind {
            Kind::File { size, .. } => *size,
            Kind::Symlink(t) => t.len() as u64,
            _ => 0,
        })
        .sum())
}

/// Check Lambda's limits and write `contents` as a zip at `to` (through a temporary file
/// beside it, renamed into place: on error `to` is left as it was).
/// The uncompressed size of the Lambda layer zips `opts` names; an error if, with the
/// function's `unzipped` bytes, it is over what Lambda allows.
fn check_unzipped(unzipped: u64, to: &Path, opts: &ZipOptions) -> Result<u64> {
    let mut layers_unzipped = 0;
    for p in &opts.with_layers {
        layers_unzipped += layer_zip_size(p)?;
    }
    let total = unzipped + layers_unzipped;
    if total > MAX_UNZIPPED {
        let with = if opts.with_layers.is_empty() {
            String::new()
        } else {
            format!(
                " ({} of it in the {} Lambda layer zip{})",
                mib(layers_unzipped),
                opts.with_layers.len(),
                if opts.with_layers.len() == 1 { "" } else { "s" }
            )
        };
        return Err(Error::Usage(format!(
            "{}: {total} bytes ({}) once extracted{with}, over the {} ({MAX_UNZIPPED} bytes) Lambda allows a \
             function and its layers; ship it as a container image instead, up to 10 GiB: \
             `lamina build --to docker://...`",
            to.display(),
            mib(total),
            mib(MAX_UNZIPPED),
        )));
    }
    Ok(layers_unzipped)
}

/// What to tell about a zip of `size` bytes that Lambda takes only from S3.
fn zipped_warnings(size: u64, to: &Path) -> Vec<String> {
    let mut warnings = Vec::new();
    if size > MAX_ZIPPED {
        warnings.push(format!(
            "{} is {size} bytes ({}), over the {} ({MAX_ZIPPED} bytes) Lambda takes in a direct upload: \
             upload it to S3 and create or update the function from there \
             (`aws lambda update-function-code --s3-bucket ... --s3-key ...`), or ship a container image \
             (`lamina build --to docker://...`)",
            to.display(),
            mib(size),
            mib(MAX_ZIPPED)
        ));
    }
    warnings
}

/// Write `contents` as a zip at `to` (through a temporary file renamed into place), after
/// checking Lambda's size limits.
pub fn write(contents: Contents, to: &Path, opts: &ZipOptions) -> Result<Report> {
    // Through a symbolic link to its target: the link stays.
    let to = &crate::transport::dest_path(to)?;
    let unzipped = contents.unzipped();
    let layers_unzipped = check_unzipped(unzipped, to, opts)?;

    let parent = match to.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).at("creating", &parent)?;
    let tmp = crate::staging::file_in(&parent, ".lamina-zip-")
        .at("creating a temporary file in", &parent)?;
    let Contents {
        package,
        items,
        mut inputs,
        _tmp,
    } = contents;
    let root = package.root();
    let mut zw = ZipWriter::new(
        BufWriter::with_capacity(1 << 20, tmp.as_file()),
        opts.mtime,
        opts.compression_level,
    );
    for it in &items {
        let (input, origin) = &mut inputs[it.input];
        let at = || format!("/{root}/{} (from {origin})", shown(&it.path));
        let res = match &it.kind {
            Kind::Dir => zw.add(&it.path, it.mode, Body::Dir),
            Kind::Symlink(t) => zw.add(&it.path, it.mode, Body::Symlink(t)),
            Kind::File { size, data } => match data {
                Data::Path(p) => {
                    let f = File::open(p).at("opening", p)?;
                    let mut r = BufReader::with_capacity(256 * 1024, f);
                    zw.add(&it.path, it.mode, Body::File(&mut r, *size))
                }
                Data::Zip(i) => match input {
                    Input::Zip(z) => {
                        let mut f = z.by_index(*i).map_err(|e| Error::Io {
                            context: format!("zip entry for {}", at()),
                            cause: io::Error::other(e),
                        })?;
                        zw.add(&it.path, it.mode, Body::File(&mut f, *size))
                    }
                    Input::Files => Err(io::Error::other("its zip archive is not open")),
                },
                Data::Empty => zw.add(&it.path, it.mode, Body::File(&mut io::empty(), *size)),
            },
            Kind::HardLink(_) => Err(io::Error::other("hard links are stored as copies")),
        };
        res.ctx(|| format!("writing {} into {}", at(), to.display()))?;
    }
    let (_, size) = zw
        .finish()
        .ctx(|| format!("writing {}", tmp.path().display()))?;
    drop(inputs);
    let f = File::open(tmp.path()).at("reading", tmp.path())?;
    let (digest, _) =
        hash_reader(&mut BufReader::with_capacity(1 << 20, f)).at("reading", tmp.path())?;
    let raw = hex::decode(digest.hex()).expect("a digest is hex");
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o644))
        .at("setting permissions of", tmp.path())?;
    tmp.persist(to).at("writing", to)?;

    let warnings = zipped_warnings(size, to);
    Ok(Report {
        path: to.to_owned(),
        digest: digest.to_string(),
        code_sha256: base64::engine::general_purpose::STANDARD.encode(raw),
        size,
        unzipped,
        layers_unzipped,
        entries: items.len(),
        warnings,
        findings: Vec::new(),
    })
}
