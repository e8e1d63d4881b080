//! `oci-archive:` and `docker-archive:` as destinations and as bases, checked with skopeo/umoci,
//! and `docker-archive:` loaded into a second consumer, podman.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use common::*;
use serde_json::Value;
use tempfile::TempDir;

/// Regular files of a tar by path (symlinks to files inside the tar are followed).
fn tar_files(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let entries = tar_entries(&bytes);
    let mut files = BTreeMap::new();
    let mut links = Vec::new();
    for e in entries {
        let p = e.path_str().trim_start_matches("./").to_owned();
        match e.entry_type {
            tar::EntryType::Regular => {
                files.insert(p, e.data);
            }
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = String::from_utf8(e.link.clone().unwrap()).unwrap();
                links.push((p, e.entry_type, target));
            }
            _ => {}
        }
    }
    for (p, ty, target) in links {
        let resolved = if ty == tar::EntryType::Link {
            target.trim_start_matches("./").to_owned()
        } else {
            let mut parts: Vec<&str> = p.split('/').collect();
            parts.pop();
            for c in target.split('/') {
                match c {
                    ".." => {
                        parts.pop();
                    }
                    "." | "" => {}
                    c => parts.push(c),
                }
            }
            parts.join("/")
        };
        if let Some(data) = files.get(&resolved).cloned() {
            files.insert(p, data);
        }
    }
    files
}

fn build_to(work: &Path, to: &str, extra: &[&str]) -> String {
    let spec = fixture_spec();
    let mut args = vec!["build", "-f", path_str(&spec), "--to", to];
    args.extend_from_slice(extra);
    parse_digest(&lamina_ok(&args, work, &[]))
}

#[test]
fn oci_archive_holds_the_same_image_as_the_oci_build() {
    let t = TempDir::new().unwrap();
    let oci = build_fixture(t.path(), "oci", &[], &[]);
    let manifest = manifest_bytes(&oci.layout, "latest");

    let archive = t.path().join("fn.tar");
    let archive_ref = format!("oci-archive:{}", archive.display());
    let digest = build_to(t.path(), &archive_ref, &[]);
    assert_eq!(digest, oci.digest);
    assert!(archive.is_file());

    let raw = skopeo_ok(&["inspect", "--raw", &archive_ref]);
    assert_eq!(
        raw, manifest,
        "skopeo reads the same manifest from the archive"
    );
    let info: Value = serde_json::from_slice(&skopeo_ok(&["inspect", &archive_ref])).unwrap();
    assert_eq!(info["Architecture"].as_str(), Some("amd64"));

    // The archive is a tar of a valid OCI layout.
    let x = t.path().join("extracted");
    tar::Archive::new(fs::File::open(&archive).unwrap())
        .unpack(&x)
        .expect("oci-archive unpacks with the tar crate");
    verify_layout_blobs(&x);
    let index = read_index(&x);
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 1, "{index}");
    assert_eq!(manifests[0]["digest"].as_str(), Some(oci.digest.as_str()));

    // skopeo can copy out of it without changing the manifest.
    let copy = t.path().join("copy");
    skopeo_ok(&["copy", &archive_ref, &oci_ref(&copy, "latest")]);
    let (_, d, _) = read_layout(&copy, "latest");
    assert_eq!(d, oci.digest);

    // With a tag.
    let tagged = t.path().join("tagged.tar");
    let tagged_ref = format!("oci-archive:{}:v1", tagged.display());
    assert_eq!(build_to(t.path(), &tagged_ref, &[]), oci.digest);
    let raw = skopeo_ok(&["inspect", "--raw", &tagged_ref]);
    assert_eq!(raw, manifest);
}

#[test]
fn docker_archive_loads_and_matches_the_oci_build() {
    let t = TempDir::new().unwrap();
    let oci = build_fixture(t.path(), "oci", &[], &[]);
    let (manifest, _, config) = read_layout(&oci.layout, "latest");
    let config_digest = manifest["config"]["digest"].as_str().unwrap().to_owned();

    let archive = t.path().join("fn.tar");
    let archive_ref = format!("docker-archive:{}", archive.display());
    let printed = build_to(t.path(), &archive_ref, &[]);
    // The same image as the OCI build: its manifest (which names the config below) has the
    // digest printed.
    assert_eq!(
        printed, oci.digest,
        "printed digest vs the OCI build of the same spec"
    );

    let info: Value = serde_json::from_slice(&skopeo_ok(&["inspect", &archive_ref])).unwrap();
    assert_eq!(info["Architecture"].as_str(), Some("amd64"), "{info}");
    assert_eq!(info["Os"].as_str(), Some("linux"), "{info}");
    let raw: Value =
        serde_json::from_slice(&skopeo_ok(&["inspect", "--raw", &archive_ref])).unwrap();
    assert_eq!(
        raw["config"]["digest"].as_str(),
        Some(config_digest.as_str()),
        "the docker archive carries the identical config"
    );

    // By hand: manifest.json -> config file and uncompressed layers.
    let files = tar_files(&archive);
    let dm: Value = serde_json::from_slice(files.get("manifest.json").expect("manifest.json"))
        .expect("manifest.json is JSON");
    let dm = dm.as_array().expect("manifest.json is an array");
    assert_eq!(dm.len(), 1);
    let config_file = dm[0]["Config"].as_str().expect("Config");
    let config_bytes = files.get(config_file).expect("config file in the archive");
    assert_eq!(sha256_digest(config_bytes), config_digest);
    let layer_files = string_array(&dm[0]["Layers"]);
    let ids = diff_ids(&config);
    assert_eq!(layer_files.len(), ids.len());
    for (f, id) in layer_files.iter().zip(&ids) {
        let data = files
            .get(f)
            .unwrap_or_else(|| panic!("layer {f} in the archive"));
        assert_eq!(
            &sha256_digest(data),
            id,
            "docker layers are the uncompressed tars"
        );
    }

    // skopeo copy to an OCI layout, then umoci: same root filesystem as the OCI build.
    let d = t.path().join("d");
    skopeo_ok(&["copy", &archive_ref, &oci_ref(&d, "latest")]);
    verify_layout_blobs(&d);
    let from_docker = umoci_unpack(&d, "latest");
    let from_oci = umoci_unpack(&oci.layout, "latest");
    assert_eq!(
        tree_snapshot(&from_docker.rootfs.join("var/task")),
        expected_function_tree()
    );
    assert_eq!(
        tree_snapshot(&from_docker.rootfs),
        tree_snapshot(&from_oci.rootfs)
    );
}

#[test]
fn docker_archive_with_name_and_tag() {
    let t = TempDir::new().unwrap();
    let archive = t.path().join("named.tar");
    let r = format!("docker-archive:{}:lamina-test/fn:v1", archive.display());
    build_to(t.path(), &r, &[]);
    let files = tar_files(&archive);
    let dm: Value = serde_json::from_slice(files.get("manifest.json").unwrap()).unwrap();
    let tags = string_array(&dm[0]["RepoTags"]);
    assert!(
        tags.iter().any(|t| t.ends_with("lamina-test/fn:v1")),
        "RepoTags {tags:?}"
    );
    let info: Value = serde_json::from_slice(&skopeo_ok(&["inspect", &r])).unwrap();
    assert_eq!(info["Architecture"].as_str(), Some("amd64"));
}

fn check_arm64_build_from(base_ref: &str, t: &TempDir) {
    let layout = t.path().join("out");
    let spec = fixture_spec();
    let out = lamina_ok(
        &[
            "build",
            "-f",
            path_str(&spec),
            "--base",
            base_ref,
            "--platform",
            "linux/arm64",
            "--to",
            &oci_ref(&layout, "latest"),
        ],
        t.path(),
        &[],
    );
    let digest = parse_digest(&out);
    let (manifest, d, config) = read_layout(&layout, "latest");
    assert_eq!(d, digest);
    assert_eq!(config["architecture"].as_str(), Some("arm64"));
    assert_eq!(layer_digests(&manifest).len(), 4);
    let (_, _, base_config) = base_image("arm64");
    assert_eq!(
        &diff_ids(&config)[..2],
        &diff_ids(&base_config)[..],
        "same base content"
    );
    verify_layout_blobs(&layout);
    let u = umoci_unpack(&layout, "latest");
    assert_eq!(
        fs::read_to_string(u.rootfs.join("etc/arch")).unwrap(),
        "aarch64\n"
    );
    assert_eq!(
        tree_snapshot(&u.rootfs.join("var/task")),
        expected_function_tree()
    );
    assert!(fs::symlink_metadata(u.rootfs.join("opt/old")).is_err());
    assert!(!u.rootfs.join("usr/lib/obsolete.txt").exists());
}

#[test]
fn docker_archive_as_base() {
    let t = TempDir::new().unwrap();
    let base = t.path().join("base.tar");
    skopeo_ok(&[
        "copy",
        "--override-arch",
        "arm64",
        &fixture_base_ref(),
        &format!("docker-archive:{}", base.display()),
    ]);
    check_arm64_build_from(&format!("docker-archive:{}", base.display()), &t);
}

#[test]
fn oci_archive_as_base() {
    let t = TempDir::new().unwrap();
    let base = t.path().join("base-oci.tar");
    let r = format!("oci-archive:{}:latest", base.display());
    skopeo_ok(&["copy", "--override-arch", "arm64", &fixture_base_ref(), &r]);
    check_arm64_build_from(&r, &t);
}

/// `push` takes a `docker-archive:` source (its layers gzipped on the way) and one platform
/// of an index (`--platform`); the registry then serves exactly what lamina printed.
#[test]
fn push_from_a_docker_archive_and_from_one_platform_of_an_index() {
    let t = TempDir::new().unwrap();
    let reg = Registry::plain();

    let archive = t.path().join("fn.tar");
    let archive_ref = format!("docker-archive:{}", archive.display());
    build_to(t.path(), &archive_ref, &[]);
    let dest = reg.reference("fn:from-archive");
    let printed = parse_digest(&lamina_ok(
        &["push", "-q", &archive_ref, &dest],
        t.path(),
        &[],
    ));
    assert_eq!(reg.manifest_digest("fn:from-archive"), printed);
    // skopeo reads it back whole, and its layers are the archive's tars (by diff_id).
    let back = t.path().join("back");
    reg.skopeo_pull("fn:from-archive", &oci_ref(&back, "latest"));
    verify_layout_blobs(&back);
    let (manifest, digest, config) = read_layout(&back, "latest");
    assert_eq!(digest, printed);
    let files = tar_files(&archive);
    for (i, id) in diff_ids(&config).iter().enumerate() {
        assert_eq!(&sha256_digest(&layer_tar(&back, &manifest, i)), id);
        assert!(
            files.contains_key(&format!("{}.tar", hex_of(id))),
            "layer {id} is not in the archive"
        );
    }

    // One platform of the fixture's index: the registry gets that image's manifest, as is.
    let (_, arm64, _) = base_image("arm64");
    let dest = reg.reference("base:arm64");
    let printed = parse_digest(&lamina_ok(
        &[
            "push",
            "-q",
            &fixture_base_ref(),
            &dest,
            "--platform",
            "linux/arm64",
        ],
        t.path(),
        &[],
    ));
    assert_eq!(printed, arm64);
    assert_eq!(reg.manifest_digest("base:arm64"), arm64);
}

/// podman (Debian's, 4.x) with a private store: vfs storage, its graph root, run root, libpod
/// tmp dir and events log all inside one temporary directory, and the host's
/// `containers.conf`/`storage.conf` replaced by the test's own, so no daemon, no privileges
/// beyond the test's and no shared state (podman, as root, still updates containers/image's
/// blob-info cache in /var/lib/containers/cache, as skopeo does).
struct Podman {
    bin: std::path::PathBuf,
    dir: TempDir,
}

impl Podman {
    fn private() -> Self {
        let bin = require_tool("podman");
        let dir = TempDir::new().unwrap();
        let root = dir.path();
        fs::write(root.join("containers.conf"), "").unwrap();
        fs::write(
            root.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"vfs\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
                root.join("graph").display(),
                root.join("run").display()
            ),
        )
        .unwrap();
        Podman { bin, dir }
    }

    /// `podman ARGS` against the private store; panics with podman's output on failure.
    fn ok(&self, args: &[&str]) -> Vec<u8> {
        let root = self.dir.path();
        let tmp = root.join("tmp");
        let mut cmd = std::process::Command::new(&self.bin);
        cmd.env("CONTAINERS_CONF", root.join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", root.join("storage.conf"))
            .args(["--tmpdir", path_str(&tmp), "--events-backend", "file"])
            .args(args)
            .current_dir(root);
        let out = run_bounded(&mut cmd, None, std::time::Duration::from_secs(120));
        assert!(
            out.status.success(),
            "podman {args:?} failed:\n{}",
            describe(&out)
        );
        out.stdout
    }
}

/// A second consumer of `docker-archive:` besides skopeo: `podman load` takes lamina's archive
/// into its own storage, keeps the config lamina wrote (its image ID is lamina's config digest),
/// the diff_ids and the Cmd, and `podman save` of the loaded image gives back the same config
/// bytes and layer tars byte for byte (so the stored file systems are exactly lamina's layers).
#[test]
fn docker_archive_loads_into_podman() {
    let t = TempDir::new().unwrap();
    let archive = t.path().join("fn.tar");
    build_to(
        t.path(),
        &format!("docker-archive:{}", archive.display()),
        &[],
    );
    let files = tar_files(&archive);
    let dm: Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
    let config_bytes = &files[dm[0]["Config"].as_str().expect("Config")];
    let config_digest = sha256_digest(config_bytes);
    let config: Value = serde_json::from_slice(config_bytes).unwrap();
    let ids = diff_ids(&config);
    assert_eq!(ids.len(), 4, "{config}");

    let podman = Podman::private();
    let loaded = String::from_utf8(podman.ok(&["load", "-q", "-i", path_str(&archive)])).unwrap();
    assert!(
        loaded.contains(&config_digest),
        "podman load reports the image {loaded:?}, not lamina's config {config_digest}"
    );
    let id = hex_of(&config_digest);

    let inspected: Value = serde_json::from_slice(&podman.ok(&["image", "inspect", id])).unwrap();
    let image = &inspected[0];
    assert_eq!(image["Id"].as_str(), Some(id), "{image}");
    assert_eq!(string_array(&image["RootFS"]["Layers"]), ids, "{image}");
    assert_eq!(
        string_array(&image["Config"]["Cmd"]),
        ["handler.handle"],
        "{image}"
    );
    assert!(
        string_array(&image["Config"]["Env"]).contains(&"FUNCTION_NAME=fixture".to_owned()),
        "{image}"
    );
    assert_eq!(image["Architecture"].as_str(), Some("amd64"), "{image}");
    assert_eq!(image["Os"].as_str(), Some("linux"), "{image}");

    let again = t.path().join("again.tar");
    podman.ok(&[
        "save",
        "-q",
        "--format",
        "docker-archive",
        "-o",
        path_str(&again),
        id,
    ]);
    let saved = tar_files(&again);
    let sm: Value = serde_json::from_slice(&saved["manifest.json"]).unwrap();
    assert_eq!(
        &saved[sm[0]["Config"].as_str().expect("Config")],
        config_bytes,
        "podman keeps lamina's config bytes"
    );
    let saved_layers: Vec<String> = string_array(&sm[0]["Layers"])
        .iter()
        .map(|f| sha256_digest(&saved[f.as_str()]))
        .collect();
    assert_eq!(
        saved_layers, ids,
        "the layers podman stored re-export as lamina's tars"
    );
}
