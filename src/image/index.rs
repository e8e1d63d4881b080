//! Indexes and manifests: which media types are which, and choosing an index's entry for a
//! platform. Every reader (layout, archive, registry) resolves through here.

use oci_spec::image::{Descriptor, ImageIndex, MediaType};

use crate::digest::Digest;
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

/// How deep indexes may nest before lamina gives up (an index of indexes of …).
pub const MAX_DEPTH: u32 = 4;

/// An index a reference resolves to, before a platform is chosen from it.
#[derive(Debug, Clone)]
pub struct IndexAt {
    /// The index's digest (none for a layout whose `index.json` lists the platforms itself).
    pub digest: Option<Digest>,
    pub manifests: Vec<Descriptor>,
}

/// Parse an OCI document (index, manifest, config) named `what` in messages. The error says
/// what serde found and where (`oci_spec`'s own readers say only "serde failed") and, for a
/// descriptor whose digest does not parse, names the field (`manifests[1].digest`).
pub fn parse_doc<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, String> {
    serde_json::from_slice(bytes).map_err(|e| {
        let field = serde_json::from_slice::<serde_json::Value>(bytes)
            .ok()
            .and_then(|v| bad_digest(&v, String::new()));
        match field {
            Some((field, value, why)) => {
                format!("{what} is not valid: field {field} is `{value}`, not a digest ({why})")
            }
            None => format!("{what} is not valid: {e}"),
        }
    })
}

/// The first `digest` field under `v` (its JSON path, value and the parser's complaint) that
/// is not a valid OCI digest.
fn bad_digest(v: &serde_json::Value, at: String) -> Option<(String, String, String)> {
    use serde_json::Value;
    const SHOWN: usize = 100;
    match v {
        Value::Object(m) => m.iter().find_map(|(k, x)| {
            let here = if at.is_empty() {
                k.clone()
            } else {
                format!("{at}.{k}")
            };
            if k == "digest"
                && let Some(d) = x.as_str()
                && let Err(e) = d.parse::<oci_spec::image::Digest>()
            {
                let shown: String = d.chars().take(SHOWN).collect();
                return Some((here, shown, e.to_string()));
            }
            bad_digest(x, here)
        }),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .find_map(|(i, x)| bad_digest(x, format!("{at}[{i}]"))),
        _ => None,
    }
}

/// Parse index bytes (digest `digest`, for messages).
pub fn parse_index(bytes: &[u8], digest: &Digest, reference: &str) -> Result<IndexAt> {
    let idx: ImageIndex =
        parse_doc(bytes, &format!("index {digest}")).map_err(|m| Error::image(reference, m))?;
    Ok(IndexAt {
        digest: Some(digest.clone()),
        manifests: idx.manifests().clone(),
    })
}

/// Where one level of an index leads for a platform.
pub enum Step {
    /// The image manifest chosen.
    Manifest(Descriptor),
    /// A nested index, to load and choose from in turn.
    Index(Descriptor),
}

/// Choose from one level of an index ([`pick`]): an image manifest, or a nested index to follow.
pub fn step(descs: &[Descriptor], platform: Option<Platform>, reference: &str) -> Result<Step> {
    let chosen = pick(descs, platform, reference)?;
    if is_index(chosen.media_type()) {
        return Ok(Step::Index(chosen));
    }
    if !is_manifest(chosen.media_type()) {
        return Err(Error::image(
            reference,
            format!(
                "{} is a {}, not an image manifest",
                chosen.digest(),
                chosen.media_type()
            ),
        ));
    }
    Ok(Step::Manifest(chosen))
}

/// The error for indexes nested more than [`MAX_DEPTH`] deep.
pub fn too_deep(reference: &str) -> Error {
    Error::image(
        reference,
        format!("indexes nest more than {MAX_DEPTH} deep"),
    )
}

/// Follow an index's entries to one image manifest for `platform` ([`step`] at each level),
/// loading a nested index with `load`. Every local reader (layout, archive) walks here; the
/// registry reader walks the same steps with an async `load`.
pub fn walk(
    descs: &[Descriptor],
    platform: Option<Platform>,
    reference: &str,
    load: &mut dyn FnMut(&Descriptor) -> Result<IndexAt>,
) -> Result<Descriptor> {
    let mut descs = descs.to_vec();
    for _ in 0..=MAX_DEPTH {
        match step(&descs, platform, reference)? {
            Step::Index(d) => descs = load(&d)?.manifests,
            Step::Manifest(d) => return Ok(d),
        }
    }
    Err(too_deep(reference))
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::image::{Arch, Os, PlatformBuilder};

    fn desc(mt: MediaType, n: u8, arch: Option<Arch>) -> Descriptor {
        let mut d = Descriptor::new(mt, 1, Digest::of(&[n]).to_oci());
        if let Some(a) = arch {
            d.set_platform(Some(
                PlatformBuilder::default()
                    .os(Os::Linux)
                    .architecture(a)
                    .build()
                    .unwrap(),
            ));
        }
        d
    }

    #[test]
    fn walk_follows_nested_indexes_to_the_platform() {
        let top = [desc(MediaType::ImageIndex, 1, None)];
        let inner = vec![
            desc(MediaType::ImageManifest, 2, Some(Arch::Amd64)),
            desc(MediaType::ImageManifest, 3, Some(Arch::ARM64)),
        ];
        let mut loads = 0;
        let got = walk(&top, Some(Platform::LinuxArm64), "r", &mut |_| {
            loads += 1;
            Ok(IndexAt {
                digest: None,
                manifests: inner.clone(),
            })
        })
        .unwrap();
        assert_eq!(got.digest(), inner[1].digest());
        assert_eq!(loads, 1);
    }

    #[test]
    fn a_malformed_digest_is_named_by_its_field() {
        let ok = Digest::of(b"x").to_oci().to_string();
        let doc = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{mt}","size":1,"digest":"{ok}"}},{{"mediaType":"{mt}","size":1,"digest":"sha256:nothex"}}]}}"#,
            mt = "application/vnd.oci.image.manifest.v1+json"
        );
        let e = parse_doc::<ImageIndex>(doc.as_bytes(), "index.json").unwrap_err();
        assert!(e.contains("index.json"), "{e}");
        assert!(e.contains("manifests[1].digest"), "{e}");
        assert!(e.contains("sha256:nothex"), "{e}");
        let e = parse_doc::<ImageIndex>(b"{", "index.json").unwrap_err();
        assert!(e.contains("EOF"), "{e}");
    }

    #[test]
    fn walk_gives_up_on_endless_nesting() {
        let top = [desc(MediaType::ImageIndex, 1, None)];
        let e = walk(&top, None, "r", &mut |_| {
            Ok(IndexAt {
                digest: None,
                manifests: top.to_vec(),
            })
        })
        .unwrap_err();
        assert!(e.to_string().contains("nest more than"), "{e}");
    }
}
