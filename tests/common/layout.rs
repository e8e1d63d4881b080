//! Independent reading and checking of OCI layouts: index, manifests, configs, blob hashes,
//! layer compression.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{MT_INDEX, MT_MANIFEST, REF_NAME, fixture_base};

pub fn is_sha256_digest(s: &str) -> bool {
    s.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

pub fn hex_of(digest: &str) -> &str {
    digest
        .strip_prefix("sha256:")
        .unwrap_or_else(|| panic!("not a sha256 digest: {digest}"))
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(data))
}

pub fn blob_path(layout: &Path, digest: &str) -> PathBuf {
    layout.join("blobs").join("sha256").join(hex_of(digest))
}

pub fn read_blob(layout: &Path, digest: &str) -> Vec<u8> {
    let p = blob_path(layout, digest);
    fs::read(&p).unwrap_or_else(|e| panic!("cannot read blob {}: {e}", p.display()))
}

pub fn read_json(path: &Path) -> Value {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

pub fn read_index(layout: &Path) -> Value {
    read_json(&layout.join("index.json"))
}

/// The descriptor of `index.json` annotated `org.opencontainers.image.ref.name: TAG`
/// (there must be exactly one).
pub fn tagged_descriptor(layout: &Path, tag: &str) -> Value {
    let index = read_index(layout);
    let found: Vec<&Value> = index["manifests"]
        .as_array()
        .expect("index.json has a manifests array")
        .iter()
        .filter(|d| d["annotations"][REF_NAME].as_str() == Some(tag))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "index.json of {} should have exactly one descriptor tagged {tag}: {index}",
        layout.display()
    );
    found[0].clone()
}

/// Tags of all descriptors in index.json.
pub fn layout_tags(layout: &Path) -> BTreeMap<String, String> {
    let index = read_index(layout);
    index["manifests"]
        .as_array()
        .expect("manifests array")
        .iter()
        .filter_map(|d| {
            d["annotations"][REF_NAME].as_str().map(|t| {
                (
                    t.to_owned(),
                    d["digest"].as_str().expect("descriptor digest").to_owned(),
                )
            })
        })
        .collect()
}

/// (manifest, manifest digest, config) of the single-platform image tagged `tag`.
pub fn read_layout(layout: &Path, tag: &str) -> (Value, String, Value) {
    let desc = tagged_descriptor(layout, tag);
    assert_eq!(
        desc["mediaType"].as_str(),
        Some(MT_MANIFEST),
        "descriptor for {tag} should point at an image manifest: {desc}"
    );
    let digest = desc["digest"].as_str().expect("digest").to_owned();
    let bytes = read_blob(layout, &digest);
    assert_eq!(sha256_digest(&bytes), digest, "manifest blob hash");
    assert_eq!(
        desc["size"].as_u64(),
        Some(bytes.len() as u64),
        "manifest size"
    );
    let manifest: Value = serde_json::from_slice(&bytes).expect("manifest is JSON");
    let config_digest = manifest["config"]["digest"]
        .as_str()
        .expect("config digest");
    let config: Value =
        serde_json::from_slice(&read_blob(layout, config_digest)).expect("config is JSON");
    (manifest, digest, config)
}

pub fn manifest_bytes(layout: &Path, tag: &str) -> Vec<u8> {
    let (_, digest, _) = read_layout(layout, tag);
    read_blob(layout, &digest)
}

/// (manifest, digest, config) for `arch` in a layout whose `tag` may point at a (nested) index.
pub fn resolve_platform(layout: &Path, tag: &str, arch: &str) -> (Value, String, Value) {
    let mut desc = tagged_descriptor(layout, tag);
    loop {
        let digest = desc["digest"].as_str().expect("digest").to_owned();
        let doc: Value = serde_json::from_slice(&read_blob(layout, &digest)).expect("JSON blob");
        let is_index = desc["mediaType"].as_str() == Some(MT_INDEX)
            || doc["mediaType"].as_str() == Some(MT_INDEX);
        if !is_index {
            let config_digest = doc["config"]["digest"].as_str().expect("config digest");
            let config: Value =
                serde_json::from_slice(&read_blob(layout, config_digest)).expect("config JSON");
            assert_eq!(config["architecture"].as_str(), Some(arch));
            return (doc, digest, config);
        }
        let manifests = doc["manifests"].as_array().expect("manifests");
        let next = manifests
            .iter()
            .find(|d| {
                d["platform"]["architecture"].as_str() == Some(arch)
                    || d["mediaType"].as_str() == Some(MT_INDEX)
            })
            .unwrap_or_else(|| panic!("no {arch} manifest in {doc}"));
        desc = next.clone();
    }
}

/// The fixture base's (manifest, digest, config) for `arch` ("amd64" or "arm64").
pub fn base_image(arch: &str) -> (Value, String, Value) {
    resolve_platform(&fixture_base(), "latest", arch)
}

pub fn layer_digests(manifest: &Value) -> Vec<String> {
    manifest["layers"]
        .as_array()
        .expect("layers array")
        .iter()
        .map(|l| l["digest"].as_str().expect("layer digest").to_owned())
        .collect()
}

pub fn diff_ids(config: &Value) -> Vec<String> {
    config["rootfs"]["diff_ids"]
        .as_array()
        .expect("rootfs.diff_ids")
        .iter()
        .map(|d| d.as_str().expect("diff id").to_owned())
        .collect()
}

pub fn string_array(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| {
            s.as_str()
                .unwrap_or_else(|| panic!("not a string: {s}"))
                .to_owned()
        })
        .collect()
}

/// Check one descriptor's blob: present, same size, same sha256.
pub fn verify_descriptor(layout: &Path, desc: &Value) -> Vec<u8> {
    let digest = desc["digest"]
        .as_str()
        .unwrap_or_else(|| panic!("descriptor without digest: {desc}"));
    assert!(is_sha256_digest(digest), "bad digest in {desc}");
    let p = blob_path(layout, digest);
    let bytes = fs::read(&p).unwrap_or_else(|e| panic!("blob {} missing: {e}", p.display()));
    assert_eq!(
        desc["size"].as_u64(),
        Some(bytes.len() as u64),
        "size of {} does not match its descriptor {desc}",
        p.display()
    );
    assert_eq!(
        sha256_digest(&bytes),
        digest,
        "sha256 of {} does not match its name",
        p.display()
    );
    bytes
}

/// Check a whole layout: `oci-layout`, and every descriptor reachable from index.json (indexes,
/// manifests, configs, layers) has a blob of the right size and sha256; every config's
/// `rootfs.diff_ids` are the sha256 of the uncompressed layers.
pub fn verify_layout_blobs(layout: &Path) {
    let marker = read_json(&layout.join("oci-layout"));
    assert_eq!(
        marker["imageLayoutVersion"].as_str(),
        Some("1.0.0"),
        "oci-layout of {}",
        layout.display()
    );
    let index = read_index(layout);
    assert_eq!(
        index["schemaVersion"].as_u64(),
        Some(2),
        "index.json schemaVersion"
    );
    for desc in index["manifests"].as_array().expect("manifests array") {
        verify_tree(layout, desc);
    }
}

fn verify_tree(layout: &Path, desc: &Value) {
    let bytes = verify_descriptor(layout, desc);
    let media_type = desc["mediaType"].as_str().unwrap_or("");
    let doc: Value = serde_json::from_slice(&bytes).expect("index/manifest is JSON");
    if media_type == MT_INDEX || doc["mediaType"].as_str() == Some(MT_INDEX) {
        for d in doc["manifests"].as_array().expect("manifests array") {
            verify_tree(layout, d);
        }
        return;
    }
    assert_eq!(
        doc["schemaVersion"].as_u64(),
        Some(2),
        "manifest schemaVersion"
    );
    let config_bytes = verify_descriptor(layout, &doc["config"]);
    let config: Value = serde_json::from_slice(&config_bytes).expect("config is JSON");
    let layers = doc["layers"].as_array().expect("layers array");
    let ids = diff_ids(&config);
    assert_eq!(
        ids.len(),
        layers.len(),
        "diff_ids and layers differ in number"
    );
    for (layer, id) in layers.iter().zip(&ids) {
        let blob = verify_descriptor(layout, layer);
        let tar = decode_layer(layer["mediaType"].as_str().unwrap_or(""), &blob);
        assert_eq!(
            &sha256_digest(&tar),
            id,
            "diff_id of layer {} is not the sha256 of its uncompressed tar",
            layer["digest"]
        );
    }
}

/// Uncompressed tar of a layer blob, by media type.
pub fn decode_layer(media_type: &str, blob: &[u8]) -> Vec<u8> {
    if media_type.ends_with("+gzip") || media_type.ends_with(".gzip") {
        gunzip(blob)
    } else if media_type.ends_with(".tar") || media_type.ends_with("tar") {
        blob.to_vec()
    } else {
        panic!("unexpected layer media type {media_type}")
    }
}

pub fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(data)
        .read_to_end(&mut out)
        .expect("valid gzip");
    out
}

/// The uncompressed tar of layer number `i` of `manifest` in `layout`.
pub fn layer_tar(layout: &Path, manifest: &Value, i: usize) -> Vec<u8> {
    let desc = &manifest["layers"][i];
    let blob = read_blob(layout, desc["digest"].as_str().expect("layer digest"));
    decode_layer(desc["mediaType"].as_str().unwrap_or(""), &blob)
}

/// gzip header: magic, deflate, no FNAME/FCOMMENT, MTIME zero.
pub fn assert_clean_gzip_header(blob: &[u8], what: &str) {
    assert!(blob.len() > 10, "{what}: too short for gzip");
    assert_eq!(&blob[0..2], &[0x1f, 0x8b], "{what}: gzip magic");
    assert_eq!(blob[2], 8, "{what}: gzip method deflate");
    assert_eq!(blob[3] & 0x08, 0, "{what}: gzip FLG has FNAME set");
    assert_eq!(blob[3] & 0x10, 0, "{what}: gzip FLG has FCOMMENT set");
    assert_eq!(&blob[4..8], &[0, 0, 0, 0], "{what}: gzip MTIME is not zero");
}

/// Rewrite the single image of `layout` (tag `latest`): `edit` changes the manifest and config
/// documents (and may write blobs); the config, manifest and index.json are re-hashed.
pub fn rewrite_image(layout: &Path, edit: impl FnOnce(&Path, &mut Value, &mut Value)) {
    let (mut manifest, _, mut config) = read_layout(layout, "latest");
    edit(layout, &mut manifest, &mut config);
    let put = |bytes: &[u8]| -> (String, usize) {
        let d = sha256_digest(bytes);
        fs::write(blob_path(layout, &d), bytes).unwrap();
        (d, bytes.len())
    };
    let (cd, cs) = put(&serde_json::to_vec(&config).unwrap());
    manifest["config"]["digest"] = cd.into();
    manifest["config"]["size"] = cs.into();
    let (md, ms) = put(&serde_json::to_vec(&manifest).unwrap());
    let mut index = read_index(layout);
    for d in index["manifests"].as_array_mut().unwrap() {
        if d["annotations"][REF_NAME] == "latest" {
            d["digest"] = md.clone().into();
            d["size"] = ms.into();
            if d.get("platform").is_some() {
                d["platform"]["architecture"] = config["architecture"].clone();
            }
        }
    }
    fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
}
