//! The Lambda compatibility gate: what Lambda would refuse, or fail to start, found before an
//! image leaves the machine. [`check`] serves `lamina check`; [`check_source`] and
//! [`check_rendered`] serve the gate that `push` and `build --to docker://` run, and [`gate`]
//! turns a report into the error that stops them.
//!
//! The rules themselves are pure functions: L001 to L008 in [`rules`], the native code for the
//! wrong target in [`native`], programs that cannot start in [`start`], handlers in
//! [`handler`], size and shape budgets in [`budgets`]; [`runtime`] tells which Lambda runtime
//! an image runs. [`fs`] streams the layers into the merged file system they look at; [`elf`]
//! judges ELF headers (read by `goblin` in [`crate::image::elf`]). [`zipgate`] runs the file
//! rules on a .zip package, and [`check_config`] the rules a build can run before its layers
//! exist.

pub mod budgets;
pub mod client;
pub mod elf;
pub mod fs;
pub mod handler;
pub mod native;
pub mod package;
pub mod rules;
pub mod runtime;
pub mod start;
pub mod zipgate;

use std::path::Path;

use oci_spec::image::{Descriptor, ImageConfiguration};
use serde::Serialize;

pub use rules::{Finding, Rule, Severity};

use crate::error::{Error, Result};
use crate::image::index::IndexAt;
use crate::image::media::Compression;
use crate::image::{Layer, Rendered};
use crate::platform::{Platform, describe};
use crate::reference::ImageRef;
use crate::registry::Options;
use crate::transport::{Opened, ReadMode, Resolved, Source};

/// What `lamina check` reports (and `--json` prints).
#[derive(Serialize, Debug, Clone)]
pub struct Report {
    /// The image as the user wrote it.
    pub reference: String,
    /// The manifest checked (or the index, for L001).
    pub digest: Option<String>,
    /// `os/arch[/variant]` of the image checked; none for an index.
    pub platform: Option<String>,
    /// No error findings (warnings allowed).
    pub ok: bool,
    /// Every finding, errors first.
    pub findings: Vec<Finding>,
}

impl Report {
    fn new(
        reference: &str,
        digest: Option<String>,
        platform: Option<String>,
        mut findings: Vec<Finding>,
    ) -> Report {
        // Errors first, each severity in the rules' order (a stable sort).
        findings.sort_by_key(|f| f.severity);
        Report {
            reference: reference.to_owned(),
            digest,
            platform,
            ok: !findings.iter().any(|f| f.severity == Severity::Error),
            findings,
        }
    }

    /// The findings that make Lambda refuse the image.
    pub fn errors(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
    }

    /// The findings worth a look that do not stop a push.
    pub fn warnings(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Warning)
    }
}

/// One image manifest as the rules need it: the media types it declares, its config and its
/// layers.
pub struct Candidate<'a> {
    /// The manifest's own `mediaType` (else what its descriptor or the registry said).
    pub manifest_media_type: String,
    pub config_media_type: String,
    /// `(digest, mediaType)` of each layer, as the manifest names them (Docker names
    /// included).
    pub layer_media_types: Vec<(String, String)>,
    pub config: &'a ImageConfiguration,
    /// The layer blobs on disk, in order.
    pub layers: &'a [Layer],
    /// The manifest's size in bytes.
    pub manifest_size: usize,
    /// The Lambda runtime (`python3.12`) or AWS base image the image was built for, when the
    /// caller knows it; else the file system tells what it can.
    pub runtime_hint: Option<String>,
}

impl<'a> Candidate<'a> {
    /// From a manifest as stored (`media_type` as its descriptor gave it), read for the
    /// media types it declares.
    pub fn stored(
        media_type: &str,
        manifest: &[u8],
        config: &'a ImageConfiguration,
        layers: &'a [Layer],
        reference: &str,
    ) -> Result<Candidate<'a>> {
        let m: serde_json::Value = serde_json::from_slice(manifest)
            .map_err(|e| Error::image(reference, format!("the manifest is not JSON: {e}")))?;
        let str_at = |v: &serde_json::Value, key: &str| {
            v.get(key)
                .and_then(|x| x.as_str())
                .unwrap_or_default()
                .to_owned()
        };
        let manifest_media_type = m
            .get("mediaType")
            .and_then(|x| x.as_str())
            .unwrap_or(media_type)
            .to_owned();
        let config_media_type = m
            .get("config")
            .map(|d| str_at(d, "mediaType"))
            .unwrap_or_default();
        let layer_media_types = m
            .get("layers")
            .and_then(|l| l.as_array())
            .map(|ls| {
                ls.iter()
                    .map(|d| (str_at(d, "digest"), str_at(d, "mediaType")))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Candidate {
            manifest_media_type,
            config_media_type,
            layer_media_types,
            config,
            layers,
            manifest_size: manifest.len(),
            runtime_hint: None,
        })
    }

    /// From an image lamina rendered: its media types are the ones it wrote, its config the
    /// one in memory (nothing is parsed back).
    pub fn rendered(r: &'a Rendered, config: &'a ImageConfiguration) -> Candidate<'a> {
        Candidate {
            manifest_media_type: r.media_type.to_string(),
            config_media_type: oci_spec::image::MediaType::ImageConfig.to_string(),
            layer_media_types: r
                .layers
                .iter()
                .map(|l| (l.digest.to_string(), l.media_type.to_string()))
                .collect(),
            config,
            layers: &r.layers,
            manifest_size: r.manifest.len(),
            runtime_hint: None,
        }
    }
}

/// Run every rule but L001 on one image manifest. Each layer's file system comes from its
/// remembered index in `cache` (see [`crate::image::fsindex`]), else from one pass over its
/// verified uncompressed stream, which is then remembered.
pub fn check_image(c: &Candidate, reference: &str, cache: &Path) -> Result<Vec<Finding>> {
    let mut findings = rules::media_types(
        &c.manifest_media_type,
        &c.config_media_type,
        &c.layer_media_types,
    );
    let (os, arch) = (
        c.config.os().to_string(),
        c.config.architecture().to_string(),
    );
    findings.extend(rules::platform(&os, &arch, c.config.variant().as_deref()));
    findings.extend(budgets::manifest(c.manifest_size, c.layers.len()));

    // The file system, from the layers lamina can read (gzip or plain tar).
    let readable = |l: &Layer| matches!(l.compression(), Ok(Compression::Gzip | Compression::None));
    if let Some(l) = c.layers.iter().find(|l| !readable(l)) {
        findings.push(Finding::new(
            Rule::L002,
            format!(
                "the file-system checks (L004 to L008) were skipped: layer {} ({}) cannot be read",
                l.digest, l.media_type
            ),
        ));
        return Ok(findings);
    }
    let mut fs = fs::FileSystem::new();
    let mut uncompressed = 0u64;
    for l in c.layers {
        let index = l.fs_index(cache).map_err(|e| {
            let gzip = l.compression().is_ok_and(|c| c == Compression::Gzip);
            Error::image(
                reference,
                if e.kind() == std::io::ErrorKind::NotFound {
                    format!("layer {}: cannot open {}: {e}", l.digest, l.path.display())
                } else {
                    format!(
                        "layer {} is not a readable {}tar: {e}",
                        l.digest,
                        if gzip { "gzip " } else { "" }
                    )
                },
            )
        })?;
        uncompressed += index.uncompressed;
        fs.apply_items(index.items);
    }
    let process = rules::Process::of(c.config);
    let rt = runtime::detect(&fs, c.runtime_hint.as_deref());
    findings.extend(rules::file_system_for(
        &fs,
        uncompressed,
        &process,
        &arch,
        &rt,
    ));
    Ok(findings)
}

fn platform_of(config: &ImageConfiguration) -> String {
    describe(
        &config.os().to_string(),
        &config.architecture().to_string(),
        config.variant().as_deref(),
    )
}

/// Check an image read from a transport (what `push` is about to copy).
pub fn check_source(reference: &str, src: &Source, cache: &Path) -> Result<Report> {
    let c = Candidate::stored(
        src.media_type.as_ref(),
        &src.manifest,
        &src.image.config,
        &src.image.layers,
        reference,
    )?;
    let findings = check_image(&c, reference, cache)?;
    Ok(Report::new(
        reference,
        Some(src.manifest_digest.to_string()),
        Some(platform_of(&src.image.config)),
        findings,
    ))
}

/// Check an image lamina has just assembled (what `build --to docker://` is about to push):
/// `config` is the in-memory config `r` was rendered from.
pub fn check_rendered(
    reference: &str,
    r: &Rendered,
    config: &ImageConfiguration,
    cache: &Path,
) -> Result<Report> {
    let findings = check_image(&Candidate::rendered(r, config), reference, cache)?;
    Ok(Report::new(
        reference,
        Some(r.manifest_digest.to_string()),
        Some(platform_of(config)),
        findings,
    ))
}

/// Stop a push whose image has error findings (before anything is uploaded); hand the
/// warnings to `log`.
pub fn gate(report: &Report, dest: &ImageRef, log: &mut dyn FnMut(String)) -> Result<()> {
    for w in report.warnings() {
        log(format!("lambda check: {w}"));
    }
    if report.ok {
        return Ok(());
    }
    let lines: Vec<String> = report.errors().map(|f| format!("  {f}")).collect();
    Err(Error::Lambda {
        reference: report.reference.clone(),
        message: format!(
            "fails the Lambda checks, so nothing was pushed to {dest}:\n{}\n(`lamina check` lists every finding; --no-lambda-check pushes anyway)",
            lines.join("\n")
        ),
    })
}

/// The rules that need only the config and the layers' descriptors (L002 for the base's
/// layers, L003, L005, L017): what a build can know before it reads or compresses a single
/// new layer. `image` is the base image with the build's config applied; `new_layers` how
/// many layers the build adds.
pub fn check_config(image: &crate::image::Image, new_layers: usize) -> Vec<Finding> {
    let layers: Vec<(String, String)> = image
        .layers
        .iter()
        .map(|l| (l.digest.to_string(), l.media_type.to_string()))
        .collect();
    let mut v = rules::media_types(rules::MANIFEST_TYPES[0], rules::CONFIG_TYPES[0], &layers);
    let c = &image.config;
    v.extend(rules::platform(
        &c.os().to_string(),
        &c.architecture().to_string(),
        c.variant().as_deref(),
    ));
    let p = rules::Process::of(c);
    if p.argv0().is_none() {
        v.extend(rules::command(&fs::FileSystem::new(), &p, ""));
    }
    v.extend(budgets::manifest(0, image.layers.len() + new_layers));
    v
}

/// The fail-fast half of a build's gate: for a registry destination (unless the checks are
/// off), refuse a build whose config alone fails the Lambda checks before any layer is read,
/// compressed or uploaded. `base` is the base image as read; the build's config and platform
/// are applied to a copy. The file-system rules still run once the layers are built.
pub fn gate_early(
    spec: &crate::spec::BuildSpec,
    base: &crate::image::Image,
    log: &mut dyn FnMut(String),
) -> Result<()> {
    if !spec.lambda_check || !matches!(spec.to, ImageRef::Docker(_)) {
        return Ok(());
    }
    let mut image = base.clone();
    image.apply_config(&spec.config, "1970-01-01T00:00:00Z");
    crate::image::set_platform(&mut image.config, spec.platform);
    let new_layers = spec.layers.len() + usize::from(!spec.deletes.is_empty());
    let findings = check_config(&image, new_layers);
    let report = Report::new(
        &spec.to.to_string(),
        None,
        Some(platform_of(&image.config)),
        findings,
    );
    gate(&report, &spec.to, log)
}

fn is_attestation(d: &Descriptor) -> bool {
    let annotated = d
        .annotations()
        .as_ref()
        .and_then(|a| a.get("vnd.docker.reference.type"))
        .is_some_and(|t| t == "attestation-manifest");
    let unknown = d.platform().as_ref().is_some_and(|p| {
        p.os().to_string() == "unknown" || p.architecture().to_string() == "unknown"
    });
    annotated || unknown
}

fn entries(idx: &IndexAt) -> Vec<rules::IndexEntry> {
    idx.manifests
        .iter()
        .map(|d| rules::IndexEntry {
            platform: d
                .platform()
                .as_ref()
                .map(|p| {
                    describe(
                        &p.os().to_string(),
                        &p.architecture().to_string(),
                        p.variant().as_deref(),
                    )
                })
                .unwrap_or_else(|| "no platform".to_owned()),
            attestation: is_attestation(d),
        })
        .collect()
}

/// `lamina check`: run every rule on the image `r` refers to. An index without `platform` is
/// an L001 finding; when it holds a single image (beside attestations) that image is checked
/// too. With `platform`, the index's image for it is checked. Every layer is verified
/// against its digest and diff_id first (a tampered layer is an image error naming it, never a
/// pass). The source is reached once; its layers are read on the blocking pool.
pub async fn check(r: &ImageRef, platform: Option<Platform>, opts: &Options) -> Result<Report> {
    let shown = r.to_string();
    let opened = Opened::open(r, opts).await?;
    let resolved = opened.resolve(platform).await?;
    let Resolved::Index(idx) = &resolved else {
        let src = opened.read(&resolved, platform, ReadMode::Verified).await?;
        return check_read(shown, src, opts).await;
    };
    let mut findings = vec![rules::index(&entries(idx))];
    let images: Vec<&Descriptor> = idx
        .manifests
        .iter()
        .filter(|d| !is_attestation(d))
        .collect();
    let only = match images.as_slice() {
        [one] => one.platform().as_ref().and_then(|p| {
            Platform::ALL.into_iter().find(|ours| {
                ours.matches(
                    &p.os().to_string(),
                    &p.architecture().to_string(),
                    p.variant().as_deref(),
                )
            })
        }),
        _ => None,
    };
    let mut plat = None;
    if let Some(p) = only {
        let src = opened.read(&resolved, Some(p), ReadMode::Verified).await?;
        let inner = check_read(shown.clone(), src, opts).await?;
        plat = inner.platform;
        findings.extend(inner.findings);
    }
    let digest = idx.digest.as_ref().map(ToString::to_string);
    Ok(Report::new(&shown, digest, plat, findings))
}

/// [`check_source`] on the blocking pool (every layer is read).
async fn check_read(shown: String, src: Source, opts: &Options) -> Result<Report> {
    let cache = opts.cache_dir.clone();
    crate::task::blocking("checking the image", move || {
        check_source(&shown, &src, &cache)
    })
    .await
}

/// For `push` without `--platform` of a source that resolved to index `idx` it could not
/// read: the L001 finding as the refusal, so it names the rule.
pub fn index_refusal(r: &ImageRef, idx: &IndexAt) -> Error {
    let f = rules::index(&entries(idx));
    Error::image(
        r,
        format!("fails the Lambda checks, so nothing was pushed:\n  {f}"),
    )
}

#[cfg(test)]
mod tests {
    use super::fs::{FileSystem, apply_layer};
    use crate::digest::Digest;
    use crate::image::fsindex::FsIndex;
    use crate::image::{Image, Layer, Origin};
    use crate::platform::Platform;
    use std::io::Write;

    /// The push gate over a base verified before reads no base blob: once verification has
    /// indexed the layer, the check gives the same findings with the blob's bytes destroyed
    /// and without starting a single gunzip, while verification (the push's own step) still
    /// refuses the corrupted blob.
    #[test]
    fn the_gate_replays_a_verified_base_without_decompressing_it() {
        let dir = tempfile::tempdir().unwrap();
        let (cache, fresh) = (dir.path().join("cache"), dir.path().join("fresh"));
        let tar = tar_of(&[
            ("var/task/", "d", 0o755),
            ("var/task/bootstrap", "f:#!/bin/sh\nexec app", 0o755),
            ("var/task/app", "f:\x7fELF", 0o644),
        ]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let blob = gz.finish().unwrap();
        let path = dir.path().join("base-layer");
        std::fs::write(&path, &blob).unwrap();
        let layer = Layer {
            media_type: oci_spec::image::MediaType::ImageLayerGzip,
            digest: Digest::of(&blob),
            size: blob.len() as u64,
            diff_id: Digest::of(&tar),
            path: path.clone(),
            origin: Origin::Base,
            from: None,
        };
        let mut image = Image::scratch(Platform::LinuxArm64);
        image.push_layer(layer.clone(), "1970-01-01T00:00:00Z", "base".into());
        let rendered = image.render();
        let check = |cache: &std::path::Path| {
            super::check_rendered("r", &rendered, &image.config, cache)
                .unwrap()
                .findings
        };
        // Reading the base for a build verifies it and remembers its index.
        crate::transport::layout::verify_layers(std::slice::from_ref(&layer), "r", &cache).unwrap();
        let expected = check(&fresh);

        let mut garbage = blob.clone();
        garbage.iter_mut().for_each(|b| *b = !*b);
        std::fs::write(&path, &garbage).unwrap();
        let before = crate::image::blob::gunzips();
        let got = check(&cache);
        assert_eq!(
            crate::image::blob::gunzips(),
            before,
            "the gate decompressed"
        );
        assert_eq!(format!("{got:?}"), format!("{expected:?}"));
        let digest = layer.digest.to_string();
        let e = crate::transport::layout::verify_layers(&[layer], "r", &cache).unwrap_err();
        assert!(e.to_string().contains(&digest), "{e}");
    }

    /// A tar of `(path, entry, mode)`: `d` dir, `f:CONTENT` file, `l:T` symlink, `h:T` hard
    /// link, `c` character device, `w` empty file (whiteout names).
    fn tar_of(entries: &[(&str, &str, u32)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, what, mode) in entries {
            let mut h = tar::Header::new_gnu();
            let (ty, data, link): (tar::EntryType, Vec<u8>, Option<&str>) =
                match what.split_once(':') {
                    Some(("f", c)) => (tar::EntryType::Regular, c.as_bytes().to_vec(), None),
                    Some(("l", t)) => (tar::EntryType::Symlink, vec![], Some(t)),
                    Some(("h", t)) => (tar::EntryType::Link, vec![], Some(t)),
                    _ if *what == "d" => (tar::EntryType::Directory, vec![], None),
                    _ if *what == "c" => (tar::EntryType::Char, vec![], None),
                    _ => (tar::EntryType::Regular, vec![], None),
                };
            h.set_entry_type(ty);
            h.set_mode(*mode);
            h.set_size(data.len() as u64);
            if let Some(t) = link {
                h.set_link_name(t).unwrap();
            }
            b.append_data(&mut h, path, &data[..]).unwrap();
        }
        b.into_inner().unwrap()
    }

    /// The index replayed gives the file system `apply_layer` builds from the same layers:
    /// whiteouts (through links), opaque directories, hard links, heads, devices, sizes.
    #[test]
    fn replaying_an_index_matches_applying_the_tar() {
        let big = "x".repeat(300);
        let layers = [
            tar_of(&[
                ("var/", "d", 0o755),
                ("var/task/", "d", 0o755),
                ("var/task/bootstrap", "f:#!/bin/sh\necho hi", 0o644),
                ("var/task/app.py", "f:print(1)", 0o644),
                ("usr/bin/tool", &format!("f:\x7fELF{big}"), 0o755),
                ("usr/lib/", "d", 0o700),
                ("usr/lib/a.so", "f:aaa", 0o644),
                ("lib", "l:usr/lib", 0o777),
                ("opt/x/y", "f:y", 0o600),
                ("dev/null", "c", 0o666),
                ("etc/hard", "h:usr/bin/tool", 0o644),
                ("etc/hard3", "h:lib/a.so", 0o644),
                ("etc/hard4", "h:nowhere/x", 0o644),
            ]),
            tar_of(&[
                ("lib/.wh.a.so", "w", 0o644),
                ("opt/x/.wh..wh..opq", "w", 0o644),
                ("opt/x/z", "f:z", 0o644),
                ("./var/task/.wh.app.py", "w", 0o644),
                ("var/task/new", "f:#!/x", 0o711),
                ("etc/hard2", "h:/lib/../usr/bin/tool", 0o644),
                ("usr/bin/tool", "l:/bin/other", 0o777),
            ]),
        ];
        let mut applied = FileSystem::new();
        let mut replayed = FileSystem::new();
        for tar in &layers {
            let n = apply_layer(&mut applied, &tar[..], false).unwrap();
            let index = FsIndex::read(&tar[..]).unwrap();
            assert_eq!(index.uncompressed, n);
            // As remembered on disk and read back.
            let json = serde_json::to_vec(&index).unwrap();
            let index: FsIndex = serde_json::from_slice(&json).unwrap();
            replayed.apply_items(index.items);
        }
        let a: Vec<_> = applied.iter().collect();
        let r: Vec<_> = replayed.iter().collect();
        assert_eq!(a, r);
        assert!(
            applied
                .get("var/task/new")
                .is_some_and(|n| n.head.is_some())
        );
    }
}
