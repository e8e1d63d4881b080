//! Indexes and manifests: which media types are which, and choosing an index's entry for a
//! platform. Every reader (layout, archive, registry) resolves through here.

use oci_spec::image::{Descriptor, MediaType};

use crate::error::{Error, Result};
use crate::platform::{Platform, describe};

/// Is this an image index (OCI) or manifest list (Docker)?
pub fn is_index(mt: &MediaType) -> bool {
    matches!(mt, MediaType::ImageIndex)
        || mt.to_string() == "application/vnd.docker.distribution.manifest.list.v2+json"
}

/// Is this a single-platform image manifest (OCI or Docker schema 2)?
pub fn is_manifest(mt: &MediaType) -> bool {
    matches!(mt, MediaType::ImageManifest)
        || mt.to_string() == "application/vnd.docker.distribution.manifest.v2+json"
}

fn platforms_listed(descs: &[Descriptor]) -> String {
    let v: Vec<String> = descs
        .iter()
        .filter_map(|d| d.platform().as_ref())
        .map(|p| {
            describe(
                &p.os().to_string(),
                &p.architecture().to_string(),
                p.variant().as_deref(),
            )
        })
        .collect();
    if v.is_empty() {
        "no platform information".to_owned()
    } else {
        v.join(", ")
    }
}

/// Choose among an index's entries: the only one, or the one for `platform`. Attestation
/// manifests (platform unknown/unknown) never match a real platform.
pub fn pick(
    descs: &[Descriptor],
    platform: Option<Platform>,
    reference: &str,
) -> Result<Descriptor> {
    match (descs, platform) {
        ([], _) => Err(Error::image(reference, "the index lists no manifests")),
        ([one], _) => Ok(one.clone()),
        (many, Some(p)) => many
            .iter()
            .find(|d| {
                d.platform().as_ref().is_some_and(|dp| {
                    p.matches(
                        &dp.os().to_string(),
                        &dp.architecture().to_string(),
                        dp.variant().as_deref(),
                    )
                })
            })
            .cloned()
            .ok_or_else(|| {
                Error::image(
                    reference,
                    format!("has no {p} image; it has {}", platforms_listed(many)),
                )
            }),
        (many, None) => Err(Error::image(
            reference,
            format!(
                "is a multi-platform index ({}); choose one with --platform",
                platforms_listed(many)
            ),
        )),
    }
}
