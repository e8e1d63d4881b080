//! The image model (config + layers + manifest annotations) on `oci-spec` types, how a build
//! changes it, and how it is rendered to the exact bytes whose digests name it.

pub mod blob;
pub mod elf;
pub mod fs;
pub mod fsindex;
pub mod index;
pub mod media;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use oci_spec::image::{
    Config, Descriptor, DescriptorBuilder, History, HistoryBuilder, ImageConfiguration,
    ImageManifest, ImageManifestBuilder, MediaType,
};
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::platform::Platform;

/// Lambda's limit on an image's uncompressed size (all layers).
pub const MAX_UNCOMPRESSED: u64 = 10 << 30;

/// `entrypoint` and `cmd`: an array of strings, or a string read as the command line reads it
/// (a JSON array when it starts with `[`, else one word).
fn argv_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "oneOf": [
            {"type": "array", "items": {"type": "string"}},
            {"type": "string"}
        ]
    })
}

/// `[config]`: every field optional, unset ones inherit from the base image's config.
#[derive(Deserialize, Default, Clone, Debug, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigSpec {
    /// ENTRYPOINT, as an argv: in lamina.toml an array of strings, or a string read as the
    /// command line reads it ([`argv_from_str`]).
    #[serde(default, deserialize_with = "argv_field")]
    #[schemars(schema_with = "argv_schema")]
    pub entrypoint: Option<Vec<String>>,
    /// CMD, as an argv (for Lambda: the handler); written as `entrypoint` is.
    #[serde(default, deserialize_with = "argv_field")]
    #[schemars(schema_with = "argv_schema")]
    pub cmd: Option<Vec<String>>,
    /// Environment variables added to (or replacing those of) the base's.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The working directory.
    pub workdir: Option<String>,
    /// `USER[:GROUP]` the process runs as.
    pub user: Option<String>,
    /// Labels added to the base's.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// An argv as one string, the same way in lamina.toml and on the command line: a JSON array of
/// strings when it starts with `[` (`["python", "-m", "app"]`), else the string as one word
/// (`app.handler`).
pub fn argv_from_str(s: &str) -> std::result::Result<Vec<String>, serde_json::Error> {
    if s.trim_start().starts_with('[') {
        serde_json::from_str(s)
    } else {
        Ok(vec![s.to_owned()])
    }
}

/// `cmd`/`entrypoint` in a spec: an array of strings or a string ([`argv_from_str`]).
fn argv_field<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        List(Vec<String>),
        Str(String),
    }
    match Raw::deserialize(d).map_err(|_| {
        serde::de::Error::custom(
            "expected an array of strings ([\"python\", \"-m\", \"app\"]) or a string (\"app.handler\")",
        )
    })? {
        Raw::List(v) => Ok(Some(v)),
        Raw::Str(s) => argv_from_str(&s).map(Some).map_err(|e| {
            serde::de::Error::custom(format!("`{s}` is not a JSON array of strings: {e}"))
        }),
    }
}

/// Where a layer came from, for reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// Taken from the base image as it was.
    Base,
    /// Written by this build.
    New,
}

/// One layer: its descriptor as it will appear in the manifest, and its blob on disk.
#[derive(Clone, Debug)]
pub struct Layer {
    pub media_type: MediaType,
    pub digest: Digest,
    pub size: u64,
    pub diff_id: Digest,
    pub path: PathBuf,
    pub origin: Origin,
    /// `(registry, repository)` known to hold this blob, for cross-repository mounts.
    pub from: Option<(String, String)>,
}

/// An image being read or assembled: everything needed to render its config and manifest.
#[derive(Clone, Debug)]
pub struct Image {
    pub config: ImageConfiguration,
    pub layers: Vec<Layer>,
    pub annotations: BTreeMap<String, String>,
}

/// An image rendered to bytes: what transports write.
#[derive(Clone, Debug)]
pub struct Rendered {
    pub media_type: MediaType,
    pub manifest: Vec<u8>,
    pub manifest_digest: Digest,
    pub config: Vec<u8>,
    pub config_digest: Digest,
    pub layers: Vec<Layer>,
    pub platform: oci_spec::image::Platform,
}

/// Serialize with object keys sorted. `oci-spec` keeps maps (annotations, labels, exposed
/// ports) in `HashMap`s, whose order changes from run to run; going through `serde_json::Value`
/// (a `BTreeMap` here) makes the bytes, hence the digest, depend only on the content.
pub fn canonical_json<T: Serialize>(v: &T) -> Vec<u8> {
    let value = serde_json::to_value(v).expect("oci-spec types serialize to JSON");
    serde_json::to_vec(&value).expect("a JSON value serializes")
}

/// RFC 3339 UTC time for seconds since the epoch (a date crate would be a dependency for one
/// function).
pub fn rfc3339(secs: u64) -> String {
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`); also used for the DOS dates of zips.
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

pub use media::oci_layer_media_type;

impl Image {
    /// The empty base: no layers, an empty config for `platform`.
    pub fn scratch(platform: Platform) -> Image {
        let mut config = ImageConfiguration::default();
        set_platform(&mut config, platform);
        config.set_config(Some(Config::default()));
        Image {
            config,
            layers: Vec::new(),
            annotations: BTreeMap::new(),
        }
    }

    /// The platform the config declares.
    pub fn platform(&self) -> oci_spec::image::Platform {
        let mut b = oci_spec::image::PlatformBuilder::default()
            .os(self.config.os().clone())
            .architecture(self.config.architecture().clone());
        if let Some(v) = self.config.variant() {
            b = b.variant(v.clone());
        }
        b.build().expect("os and architecture are set")
    }

    /// Add a layer lamina built, with its history entry.
    pub fn push_layer(&mut self, layer: Layer, created: &str, created_by: String) {
        self.config
            .rootfs_mut()
            .diff_ids_mut()
            .push(layer.diff_id.to_string());
        let h: History = HistoryBuilder::default()
            .created(created.to_owned())
            .created_by(created_by)
            .comment("lamina".to_owned())
            .build()
            .expect("history fields are optional");
        let mut hist = self.config.history().clone().unwrap_or_default();
        hist.push(h);
        self.config.set_history(Some(hist));
        self.layers.push(layer);
    }

    /// Apply `[config]`: set fields override, env and labels merge over the base's.
    pub fn apply_config(&mut self, spec: &ConfigSpec, created: &str) {
        self.config.set_created(Some(created.to_owned()));
        let mut c = self.config.config().clone().unwrap_or_default();
        if let Some(ep) = &spec.entrypoint {
            c.set_entrypoint(Some(ep.clone()));
            // As docker does: a new ENTRYPOINT drops the CMD inherited from the base.
            if spec.cmd.is_none() {
                c.set_cmd(None);
            }
        }
        if let Some(cmd) = &spec.cmd {
            c.set_cmd(Some(cmd.clone()));
        }
        if !spec.env.is_empty() {
            let mut env = c.env().clone().unwrap_or_default();
            for (k, v) in &spec.env {
                let prefix = format!("{k}=");
                let kv = format!("{k}={v}");
                match env.iter_mut().find(|e| e.starts_with(&prefix) || *e == k) {
                    Some(slot) => *slot = kv,
                    None => env.push(kv),
                }
            }
            c.set_env(Some(env));
        }
        if let Some(w) = &spec.workdir {
            c.set_working_dir(Some(w.clone()));
        }
        if let Some(u) = &spec.user {
            c.set_user(Some(u.clone()));
        }
        if !spec.labels.is_empty() {
            let mut labels = c.labels().clone().unwrap_or_default();
            labels.extend(spec.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
            c.set_labels(Some(labels));
        }
        self.config.set_config(Some(c));
    }

    /// Render config and manifest bytes and their digests.
    pub fn render(&self) -> Rendered {
        let config = canonical_json(&self.config);
        let manifest = manifest_with_config(self, &config);
        Rendered {
            media_type: MediaType::ImageManifest,
            manifest_digest: Digest::of(&manifest),
            manifest,
            config_digest: Digest::of(&config),
            config,
            layers: self.layers.clone(),
            platform: self.platform(),
        }
    }
}

/// The OCI manifest bytes for `img`'s layers and annotations with `config` as its config blob.
pub fn manifest_with_config(img: &Image, config: &[u8]) -> Vec<u8> {
    let config_desc = Descriptor::new(
        MediaType::ImageConfig,
        config.len() as u64,
        Digest::of(config).to_oci(),
    );
    let layers: Vec<Descriptor> = img
        .layers
        .iter()
        .map(|l| Descriptor::new(l.media_type.clone(), l.size, l.digest.to_oci()))
        .collect();
    let mut b = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config_desc)
        .layers(layers);
    if !img.annotations.is_empty() {
        b = b.annotations(
            img.annotations
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<HashMap<_, _>>(),
        );
    }
    let manifest: ImageManifest = b.build().expect("all required manifest fields are set");
    canonical_json(&manifest)
}

/// Set os/architecture (and arm64's `v8` variant unless the config names another).
pub fn set_platform(config: &mut ImageConfiguration, platform: Platform) {
    let p = platform.to_oci();
    config.set_os(p.os().clone());
    config.set_architecture(p.architecture().clone());
    if config.variant().is_none() {
        config.set_variant(p.variant().clone());
    }
}

/// The descriptor of a rendered manifest, as an index lists it.
pub fn manifest_descriptor(r: &Rendered, tag: Option<&str>) -> Descriptor {
    let mut b = DescriptorBuilder::default()
        .media_type(r.media_type.clone())
        .size(r.manifest.len() as u64)
        .digest(r.manifest_digest.to_oci())
        .platform(r.platform.clone());
    if let Some(t) = tag {
        b = b.annotations(HashMap::from([(
            oci_spec::image::ANNOTATION_REF_NAME.to_owned(),
            t.to_owned(),
        )]));
    }
    b.build().expect("all required descriptor fields are set")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_of_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(4_102_444_799), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn canonical_json_sorts_map_keys() {
        let m: HashMap<String, u8> = (0..50).map(|i| (format!("k{i:02}"), i)).collect();
        let s = String::from_utf8(canonical_json(&m)).unwrap();
        let keys: Vec<_> = s
            .match_indices("\"k")
            .map(|(i, _)| &s[i + 1..i + 4])
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
    }

    #[test]
    fn config_merges_env_and_drops_inherited_cmd_on_new_entrypoint() {
        let mut img = Image::scratch(Platform::LinuxArm64);
        let mut c = Config::default();
        c.set_env(Some(vec!["A=1".into(), "B=2".into()]));
        c.set_cmd(Some(vec!["old".into()]));
        img.config.set_config(Some(c));
        let spec = ConfigSpec {
            entrypoint: Some(vec!["/ep".into()]),
            env: [
                ("B".to_owned(), "3".to_owned()),
                ("C".to_owned(), "4".to_owned()),
            ]
            .into(),
            ..Default::default()
        };
        img.apply_config(&spec, "1970-01-01T00:00:00Z");
        let c = img.config.config().clone().unwrap();
        assert_eq!(c.env().clone().unwrap(), ["A=1", "B=3", "C=4"]);
        assert_eq!(c.cmd(), &None);
        assert_eq!(img.config.variant().as_deref(), Some("v8"));
    }
}
