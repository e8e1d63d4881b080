//! The Lambda compatibility gate: what Lambda would refuse, or fail to start, found before an
//! image leaves the machine. [`check`] serves `lamina check`; [`check_source`] and
//! [`check_rendered`] serve the gate that `push` and `build --to docker://` run, and [`gate`]
//! turns a report into the error that stops them.
//!
//! The rules themselves are pure functions in [`check`](mod@check); [`fs`] streams the layers
//! into the merged file system they look at; [`elf`] reads executables' headers.

pub mod check;
pub mod elf;
pub mod fs;
pub mod package;

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex};
use serde::Serialize;

pub use check::{Finding, Rule, Severity};

use crate::error::{Error, Result};
use crate::image::{Layer, Rendered};
use crate::platform::{Platform, describe};
use crate::reference::{ImageRef, RegistryRef};
use crate::registry::Options;
use crate::transport::{self, ReadMode, Source, layout};

/// What `lamina check` reports (and `--json` prints).
#[derive(Serialize, Debug, Clone)]
pub struct Report {
    pub reference: String,
    /// The manifest checked (or the index, for L001).
    pub digest: Option<String>,
    /// `os/arch[/variant]` of the image checked; none for an index.
    pub platform: Option<String>,
    /// No error findings (warnings allowed).
    pub ok: bool,
    pub findings: Vec<Finding>,
}

impl Report {
    fn new(
        reference: &str,
        digest: Option<String>,
        platform: Option<String>,
        findings: Vec<Finding>,
    ) -> Report {
        Report {
            reference: reference.to_owned(),
            digest,
            platform,
            ok: !findings.iter().any(|f| f.severity == Severity::Error),
            findings,
        }
    }

    pub fn errors(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Warning)
    }
}

/// One image manifest as the rules need it.
pub struct Candidate<'a> {
    /// The manifest's media type as its descriptor (or the registry) gave it.
    pub media_type: &'a str,
    /// The manifest as stored (its own `mediaType`, config and layer media types are read
    /// from it, Docker names included).
    pub manifest: &'a [u8],
    pub config: &'a ImageConfiguration,
    /// The layer blobs on disk, in order.
    pub layers: &'a [Layer],
}

/// Run every rule but L001 on one image manifest, streaming its layers once.
pub fn check_image(c: &Candidate, reference: &str) -> Result<Vec<Finding>> {
    let m: serde_json::Value = serde_json::from_slice(c.manifest)
        .map_err(|e| Error::image(reference, format!("the manifest is not JSON: {e}")))?;
    let str_at = |v: &serde_json::Value, key: &str| {
        v.get(key)
            .and_then(|x| x.as_str())
            .unwrap_or_default()
            .to_owned()
    };
    let manifest_mt = m
        .get("mediaType")
        .and_then(|x| x.as_str())
        .unwrap_or(c.media_type)
        .to_owned();
    let config_mt = m.get("config").map(|d| str_at(d, "mediaType"));
    let layer_mts: Vec<(String, String)> = m
        .get("layers")
        .and_then(|l| l.as_array())
        .map(|ls| {
            ls.iter()
                .map(|d| (str_at(d, "digest"), str_at(d, "mediaType")))
                .collect()
        })
        .unwrap_or_default();
    let mut findings = check::media_types(
        &manifest_mt,
        config_mt.as_deref().unwrap_or_default(),
        &layer_mts,
    );
    let (os, arch) = (
        c.config.os().to_string(),
        c.config.architecture().to_string(),
    );
    findings.extend(check::platform(&os, &arch, c.config.variant().as_deref()));

    // The file system, from the layers lamina can read (gzip or plain tar).
    let readable = |l: &Layer| {
        let mt = l.media_type.to_string();
        if mt.ends_with("+gzip") || mt.ends_with(".tar.gzip") {
            Some(true)
        } else if mt.ends_with(".tar") {
            Some(false)
        } else {
            None
        }
    };
    if let Some(l) = c.layers.iter().find(|l| readable(l).is_none()) {
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
        let gzip = readable(l) == Some(true);
        let f = File::open(&l.path).map_err(|e| {
            Error::image(
                reference,
                format!("layer {}: cannot open {}: {e}", l.digest, l.path.display()),
            )
        })?;
        let n =
            fs::apply_layer(&mut fs, BufReader::with_capacity(1 << 20, f), gzip).map_err(|e| {
                Error::image(
                    reference,
                    format!(
                        "layer {} is not a readable {}tar: {e}",
                        l.digest,
                        if gzip { "gzip " } else { "" }
                    ),
                )
            })?;
        uncompressed += n;
    }
    let process = check::Process::of(c.config);
    findings.extend(check::file_system(&fs, uncompressed, &process, &arch));
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
pub fn check_source(reference: &str, src: &Source) -> Result<Report> {
    let findings = check_image(
        &Candidate {
            media_type: src.media_type.as_ref(),
            manifest: &src.manifest,
            config: &src.image.config,
            layers: &src.image.layers,
        },
        reference,
    )?;
    Ok(Report::new(
        reference,
        Some(src.manifest_digest.to_string()),
        Some(platform_of(&src.image.config)),
        findings,
    ))
}

/// Check an image lamina has just assembled (what `build --to docker://` is about to push).
pub fn check_rendered(reference: &str, r: &Rendered) -> Result<Report> {
    let config = ImageConfiguration::from_reader(&r.config[..])
        .map_err(|e| Error::image(reference, format!("the config is not valid: {e}")))?;
    let findings = check_image(
        &Candidate {
            media_type: r.media_type.as_ref(),
            manifest: &r.manifest,
            config: &config,
            layers: &r.layers,
        },
        reference,
    )?;
    Ok(Report::new(
        reference,
        Some(r.manifest_digest.to_string()),
        Some(platform_of(&config)),
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
    Err(Error::image(
        &report.reference,
        format!(
            "fails the Lambda checks, so nothing was pushed to {dest}:\n{}\n(`lamina check` lists every finding; --no-lambda-check pushes anyway)",
            lines.join("\n")
        ),
    ))
}

/// An index a reference resolves to.
#[derive(Debug, Clone)]
pub struct IndexAt {
    /// The index's digest (none for a layout whose `index.json` lists the platforms itself).
    pub digest: Option<String>,
    pub manifests: Vec<Descriptor>,
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

fn entries(idx: &IndexAt) -> Vec<check::IndexEntry> {
    idx.manifests
        .iter()
        .map(|d| check::IndexEntry {
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

fn ref_name(d: &Descriptor) -> Option<&str> {
    d.annotations()
        .as_ref()
        .and_then(|a| a.get(oci_spec::image::ANNOTATION_REF_NAME))
        .map(String::as_str)
}

/// The index an OCI layout's reference (`dir`, `tag`) resolves to, if it is one.
fn layout_index(dir: &Path, tag: Option<&str>, reference: &str) -> Result<Option<IndexAt>> {
    let Ok(bytes) = std::fs::read(dir.join("index.json")) else {
        return Ok(None); // reading the image says what is wrong
    };
    let Ok(index) = ImageIndex::from_reader(&bytes[..]) else {
        return Ok(None);
    };
    let candidates: Vec<Descriptor> = index
        .manifests()
        .iter()
        .filter(|d| tag.is_none() || ref_name(d) == tag)
        .cloned()
        .collect();
    match candidates.as_slice() {
        [one] if crate::image::index::is_index(one.media_type()) => {
            let digest = crate::digest::Digest::from_oci(one.digest())
                .map_err(|e| Error::image(reference, e))?;
            let blobs = dir.join("blobs").join("sha256");
            let bytes = transport::read_json_blob(&blobs, &digest, one.size(), "index", reference)?;
            let idx = ImageIndex::from_reader(&bytes[..]).map_err(|e| {
                Error::image(reference, format!("index {digest} is not valid: {e}"))
            })?;
            Ok(Some(IndexAt {
                digest: Some(digest.to_string()),
                manifests: idx.manifests().clone(),
            }))
        }
        // index.json itself listing one image per platform (under one tag, or none).
        many if many.len() > 1
            && many.iter().all(|d| d.platform().is_some())
            && many.iter().all(|d| ref_name(d) == ref_name(&many[0])) =>
        {
            Ok(Some(IndexAt {
                digest: None,
                manifests: many.to_vec(),
            }))
        }
        _ => Ok(None),
    }
}

/// The index a registry reference resolves to, if it is one.
fn registry_index(r: &RegistryRef, opts: &Options) -> Result<Option<IndexAt>> {
    let shown = format!("docker://{r}");
    crate::registry::block_on(async {
        let client = crate::registry::Client::connect(&r.registry, r.api_host(), opts).await?;
        let (bytes, mt, digest) =
            crate::registry::pull::get_manifest(&client, r, &r.manifest_reference()).await?;
        if !crate::image::index::is_index(&mt) {
            return Ok(None);
        }
        let idx = ImageIndex::from_reader(&bytes[..])
            .map_err(|e| Error::image(&shown, format!("index {digest} is not valid: {e}")))?;
        Ok(Some(IndexAt {
            digest: Some(digest.to_string()),
            manifests: idx.manifests().clone(),
        }))
    })
}

/// The index `r` resolves to, if it is one (for an archive, `unpacked` is its layout).
pub fn index_at(r: &ImageRef, unpacked: Option<&Path>, opts: &Options) -> Result<Option<IndexAt>> {
    let shown = r.to_string();
    match (r, unpacked) {
        (ImageRef::Oci { tag, .. } | ImageRef::OciArchive { tag, .. }, Some(dir)) => {
            layout_index(dir, tag.as_deref(), &shown)
        }
        (ImageRef::Oci { dir, tag }, None) => layout_index(dir, tag.as_deref(), &shown),
        (ImageRef::OciArchive { file, tag }, None) => {
            let tmp = transport::archive::unpack(file, &shown)?;
            layout_index(tmp.path(), tag.as_deref(), &shown)
        }
        (ImageRef::Docker(rr), _) => registry_index(rr, opts),
        _ => Ok(None),
    }
}

/// Read `r` for the checks (every layer blob present), from `unpacked` for an archive.
fn read(
    r: &ImageRef,
    unpacked: Option<&Path>,
    platform: Option<Platform>,
    opts: &Options,
) -> Result<Source> {
    match (r, unpacked) {
        (ImageRef::OciArchive { tag, .. }, Some(dir)) => layout::read(
            dir,
            tag.as_deref(),
            platform,
            ReadMode::Blobs,
            &r.to_string(),
        ),
        _ => transport::read(r, platform, ReadMode::Blobs, opts),
    }
}

/// `lamina check`: run every rule on the image `r` refers to. An index without `platform` is
/// an L001 finding; when it holds a single image (beside attestations) that image is checked
/// too. With `platform`, the index's image for it is checked.
pub fn check(r: &ImageRef, platform: Option<Platform>, opts: &Options) -> Result<Report> {
    let shown = r.to_string();
    let tmp = match r {
        ImageRef::OciArchive { file, .. } => Some(transport::archive::unpack(file, &shown)?),
        _ => None,
    };
    let unpacked = tmp.as_ref().map(|t| t.path());
    if platform.is_none()
        && let Some(idx) = index_at(r, unpacked, opts)?
    {
        let mut findings = vec![check::index(&entries(&idx))];
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
            let src = read(r, unpacked, Some(p), opts)?;
            let inner = check_source(&shown, &src)?;
            plat = inner.platform;
            findings.extend(inner.findings);
        }
        return Ok(Report::new(&shown, idx.digest, plat, findings));
    }
    let src = read(r, unpacked, platform, opts)?;
    check_source(&shown, &src)
}

/// For `push` without `--platform`, when reading the source failed: if it is an index, the
/// L001 finding (so the refusal names the rule); else the read's own error.
pub fn explain_read_error(r: &ImageRef, opts: &Options, err: Error) -> Error {
    match index_at(r, None, opts) {
        Ok(Some(idx)) => {
            let f = check::index(&entries(&idx));
            Error::image(
                r,
                format!("fails the Lambda checks, so nothing was pushed:\n  {f}"),
            )
        }
        _ => err,
    }
}
