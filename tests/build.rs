//! `lamina build` of the bundled fixture, checked with skopeo, umoci and by hand.

mod common;

use std::fs;
use std::path::Path;

use common::*;
use serde_json::Value;
use tempfile::TempDir;

fn env_of(config: &Value) -> Vec<String> {
    string_array(&config["config"]["Env"])
}

/// The fixture spec parsed independently (labels and annotations are checked from it).
fn fixture_spec_toml() -> toml::Table {
    let text = fs::read_to_string(fixture_spec()).expect("read fixtures/lamina.toml");
    text.parse::<toml::Table>()
        .expect("fixtures/lamina.toml is TOML")
}

#[test]
fn fixture_build_digest_matches_layout_and_skopeo() {
    let t = TempDir::new().unwrap();
    let b = build_fixture(t.path(), "out", &[], &[]);

    // index.json: one descriptor tagged latest, pointing at the printed digest.
    let desc = tagged_descriptor(&b.layout, "latest");
    assert_eq!(desc["digest"].as_str(), Some(b.digest.as_str()));
    assert_eq!(desc["mediaType"].as_str(), Some(MT_MANIFEST));
    let manifest = read_blob(&b.layout, &b.digest);
    assert_eq!(sha256_digest(&manifest), b.digest, "printed digest");
    verify_layout_blobs(&b.layout);

    let r = oci_ref(&b.layout, "latest");
    let raw = skopeo_ok(&["inspect", "--raw", &r]);
    assert_eq!(
        raw, manifest,
        "skopeo inspect --raw gives the manifest bytes"
    );

    let info: Value = serde_json::from_slice(&skopeo_ok(&["inspect", &r])).unwrap();
    assert_eq!(info["Architecture"].as_str(), Some("amd64"), "{info}");
    assert_eq!(info["Os"].as_str(), Some("linux"), "{info}");

    let copy = t.path().join("copy");
    skopeo_ok(&["copy", &r, &oci_ref(&copy, "latest")]);
    let (_, copy_digest, _) = read_layout(&copy, "latest");
    assert_eq!(copy_digest, b.digest, "skopeo copy keeps the manifest");
    verify_layout_blobs(&copy);
}

#[test]
fn fixture_build_manifest_and_config() {
    let t = TempDir::new().unwrap();
    let b = build_fixture(t.path(), "out", &[], &[]);
    let (manifest, _, config) = read_layout(&b.layout, "latest");
    let (base_manifest, _, base_config) = base_image("amd64");

    assert_eq!(manifest["schemaVersion"].as_u64(), Some(2));
    assert_eq!(manifest["mediaType"].as_str(), Some(MT_MANIFEST));
    assert_eq!(manifest["config"]["mediaType"].as_str(), Some(MT_CONFIG));

    // Base layers first (same blobs), then the whiteout layer, then the function layer.
    let layers = layer_digests(&manifest);
    let base_layers = layer_digests(&base_manifest);
    assert_eq!(base_layers.len(), 2);
    assert_eq!(layers.len(), 4, "base x2 + whiteout + function: {manifest}");
    assert_eq!(
        &layers[..2],
        &base_layers[..],
        "base layers are reused as-is"
    );
    for l in manifest["layers"].as_array().unwrap() {
        assert_eq!(l["mediaType"].as_str(), Some(MT_LAYER_GZIP), "{l}");
    }
    let ids = diff_ids(&config);
    assert_eq!(ids.len(), 4);
    assert_eq!(&ids[..2], &diff_ids(&base_config)[..]);

    // Whiteout layer: only directories and `.wh.` entries, among them opt/.wh.old.
    let wh = tar_entries(&layer_tar(&b.layout, &manifest, 2));
    let whiteout = entry(&wh, "opt/.wh.old");
    assert!(whiteout.is_file(), "whiteout is a regular file entry");
    assert!(whiteout.data.is_empty(), "whiteout is empty");
    for e in &wh {
        let name = e.path.rsplit(|&c| c == b'/').next().unwrap();
        assert!(
            e.is_dir() || name.starts_with(b".wh."),
            "unexpected entry in the whiteout layer: {}",
            e.path_str()
        );
    }

    // Config.
    assert_eq!(config["architecture"].as_str(), Some("amd64"));
    assert_eq!(config["os"].as_str(), Some("linux"));
    assert_eq!(config["created"].as_str(), Some(EPOCH));
    let c = &config["config"];
    assert_eq!(
        string_array(&c["Entrypoint"]),
        vec!["/lambda-entrypoint.sh"],
        "inherited"
    );
    assert_eq!(string_array(&c["Cmd"]), vec!["handler.handle"]);
    assert_eq!(c["WorkingDir"].as_str(), Some("/var/task"));
    let env = env_of(&config);
    assert!(env.contains(&"FUNCTION_NAME=fixture".to_owned()), "{env:?}");
    assert!(
        env.contains(&"LAMBDA_TASK_ROOT=/var/task".to_owned()),
        "base env kept: {env:?}"
    );
    let mut keys: Vec<&str> = env.iter().map(|e| e.split('=').next().unwrap()).collect();
    let n = keys.len();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), n, "no duplicate env keys: {env:?}");

    // Labels from the spec are in the config, annotations from the spec on the manifest.
    let spec = fixture_spec_toml();
    let labels = spec
        .get("config")
        .and_then(|c| c.get("labels"))
        .and_then(|l| l.as_table())
        .expect("fixture spec has [config] labels");
    assert!(!labels.is_empty());
    for (k, v) in labels {
        assert_eq!(
            c["Labels"][k].as_str(),
            v.as_str(),
            "label {k} in {}",
            c["Labels"]
        );
    }
    let annotations = spec
        .get("annotations")
        .and_then(|a| a.as_table())
        .expect("fixture spec has [annotations]");
    assert!(!annotations.is_empty());
    for (k, v) in annotations {
        assert_eq!(
            manifest["annotations"][k].as_str(),
            v.as_str(),
            "annotation {k} in {manifest}"
        );
    }

    // History: the base's entries, then one per new layer.
    let history = config["history"].as_array().expect("history");
    let base_history = base_config["history"].as_array().unwrap();
    assert_eq!(history.len(), base_history.len() + 2, "{history:?}");
    assert_eq!(&history[..base_history.len()], &base_history[..]);
    for h in &history[base_history.len()..] {
        assert!(h.is_object(), "{h}");
        assert_ne!(h["empty_layer"].as_bool(), Some(true), "{h}");
        if let Some(created) = h["created"].as_str() {
            assert_eq!(created, EPOCH, "{h}");
        }
    }
    let non_empty = history
        .iter()
        .filter(|h| h["empty_layer"].as_bool() != Some(true))
        .count();
    assert_eq!(non_empty, layers.len());
}

#[test]
fn fixture_build_unpacks_with_umoci() {
    let t = TempDir::new().unwrap();
    let b = build_fixture(t.path(), "out", &[], &[]);
    let u = umoci_unpack(&b.layout, "latest");
    let root = &u.rootfs;
    let task = root.join("var/task");

    // var/task is exactly the function minus README.md, modes normalized.
    assert_eq!(tree_snapshot(&task), expected_function_tree());

    let bootstrap = task.join("bootstrap");
    assert_eq!(
        fs::read(&bootstrap).unwrap(),
        fs::read(fixture_function().join("bootstrap")).unwrap()
    );
    assert_eq!(mode_of(&bootstrap), 0o755);
    assert_eq!(mode_of(&task.join("handler.sh")), 0o644);
    assert_eq!(
        fs::read_link(task.join("lib/latest.sh")).unwrap(),
        Path::new("util.sh")
    );
    assert!(task.join("data/config.json").is_file());
    assert!(!task.join("README.md").exists(), "*.md excluded");

    // [[delete]] /opt/old, base whiteout, base content, arch.
    assert!(
        fs::symlink_metadata(root.join("opt/old")).is_err(),
        "/opt/old deleted"
    );
    assert!(root.join("opt").is_dir());
    assert!(!root.join("usr/lib/obsolete.txt").exists(), "base whiteout");
    assert!(root.join("usr/lib/keep.txt").is_file());
    assert_eq!(
        fs::read_to_string(root.join("etc/arch")).unwrap(),
        "x86_64\n"
    );
    assert_eq!(
        fs::read_link(root.join("bin")).unwrap(),
        Path::new("usr/bin")
    );
    assert_eq!(mode_of(&root.join("lambda-entrypoint.sh")), 0o755);
    assert_eq!(mode_of(&root.join("tmp")), 0o1777);

    // The runtime config umoci derived from the image config.
    let rt = read_json(&u.bundle.join("config.json"));
    let args = string_array(&rt["process"]["args"]);
    assert_eq!(args, vec!["/lambda-entrypoint.sh", "handler.handle"]);
    assert_eq!(rt["process"]["cwd"].as_str(), Some("/var/task"));
}

#[test]
fn platform_selection_and_lambda_aliases() {
    let t = TempDir::new().unwrap();
    let arm = build_fixture(t.path(), "arm", &["--platform", "linux/arm64"], &[]);
    let aarch64 = build_fixture(t.path(), "aarch64", &["--platform", "aarch64"], &[]);
    let amd = build_fixture(t.path(), "amd", &["--platform", "linux/amd64"], &[]);
    let x86 = build_fixture(t.path(), "x86", &["--platform", "x86_64"], &[]);

    assert_eq!(arm.digest, aarch64.digest, "aarch64 is linux/arm64");
    assert_eq!(amd.digest, x86.digest, "x86_64 is linux/amd64");
    assert_ne!(arm.digest, amd.digest);

    let (manifest, _, config) = read_layout(&arm.layout, "latest");
    assert_eq!(config["architecture"].as_str(), Some("arm64"));
    assert_eq!(config["os"].as_str(), Some("linux"));
    let (base_manifest, _, _) = base_image("arm64");
    assert_eq!(
        &layer_digests(&manifest)[..2],
        &layer_digests(&base_manifest)[..]
    );
    verify_layout_blobs(&arm.layout);

    let info: Value =
        serde_json::from_slice(&skopeo_ok(&["inspect", &oci_ref(&arm.layout, "latest")])).unwrap();
    assert_eq!(info["Architecture"].as_str(), Some("arm64"), "{info}");

    for b in [&arm, &aarch64] {
        let u = umoci_unpack(&b.layout, "latest");
        assert_eq!(
            fs::read_to_string(u.rootfs.join("etc/arch")).unwrap(),
            "aarch64\n"
        );
        assert_eq!(
            tree_snapshot(&u.rootfs.join("var/task")),
            expected_function_tree()
        );
    }
}

#[test]
fn json_output_describes_the_build() {
    let t = TempDir::new().unwrap();
    let plain = build_fixture(t.path(), "plain", &[], &[]);
    let layout = t.path().join("json");
    let to = oci_ref(&layout, "latest");
    let spec = fixture_spec();
    let out = lamina_ok(
        &["build", "-f", path_str(&spec), "--to", &to, "--json"],
        t.path(),
        &[],
    );
    let j: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "--json output is not one JSON object ({e}):\n{}",
            describe(&out)
        )
    });
    assert!(j.is_object(), "{j}");

    let (manifest, digest, config) = read_layout(&layout, "latest");
    assert_eq!(j["digest"].as_str(), Some(plain.digest.as_str()), "{j}");
    assert_eq!(digest, plain.digest);
    let reference = j["reference"].as_str().expect("reference");
    assert!(
        reference.starts_with("oci:") && reference.ends_with(":latest"),
        "{reference}"
    );
    assert_eq!(j["mediaType"].as_str(), Some(MT_MANIFEST));
    assert_eq!(
        j["size"].as_u64(),
        Some(read_blob(&layout, &digest).len() as u64)
    );
    assert_eq!(j["platform"].as_str(), Some("linux/amd64"));
    assert_eq!(j["config"]["digest"], manifest["config"]["digest"]);
    assert_eq!(j["config"]["size"], manifest["config"]["size"]);

    let layers = j["layers"].as_array().expect("layers");
    let ids = diff_ids(&config);
    assert_eq!(layers.len(), 4);
    let origins: Vec<&str> = layers
        .iter()
        .map(|l| l["origin"].as_str().expect("origin"))
        .collect();
    assert_eq!(origins, vec!["base", "base", "new", "new"]);
    for (i, l) in layers.iter().enumerate() {
        let m = &manifest["layers"][i];
        assert_eq!(l["digest"], m["digest"], "layer {i}");
        assert_eq!(l["size"], m["size"], "layer {i}");
        assert_eq!(l["mediaType"], m["mediaType"], "layer {i}");
        assert_eq!(l["diffId"].as_str(), Some(ids[i].as_str()), "layer {i}");
    }
}

#[test]
fn inspect_reports_the_built_image() {
    let t = TempDir::new().unwrap();
    let b = build_fixture(t.path(), "out", &[], &[]);
    let r = oci_ref(&b.layout, "latest");
    let (manifest, _, config) = read_layout(&b.layout, "latest");

    let out = lamina_ok(&["inspect", &r, "--json"], t.path(), &[]);
    let j: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("inspect --json is not JSON ({e}):\n{}", describe(&out)));
    assert_eq!(j["digest"].as_str(), Some(b.digest.as_str()), "{j}");
    assert_eq!(j["platform"].as_str(), Some("linux/amd64"), "{j}");
    assert_eq!(j["mediaType"].as_str(), Some(MT_MANIFEST), "{j}");
    assert_eq!(j["manifest"], manifest, "inspect's manifest document");
    // `config` is either the parsed config document or its descriptor (the README lists both).
    if j["config"]["digest"].is_string() {
        assert_eq!(j["config"]["digest"], manifest["config"]["digest"]);
    } else {
        assert_eq!(j["config"], config, "inspect's config document");
    }
    let layers = j["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 4);
    let ids = diff_ids(&config);
    for (i, l) in layers.iter().enumerate() {
        assert_eq!(l["digest"], manifest["layers"][i]["digest"], "layer {i}");
        assert_eq!(l["size"], manifest["layers"][i]["size"], "layer {i}");
        assert_eq!(l["diffId"].as_str(), Some(ids[i].as_str()), "layer {i}");
    }

    // Without --json: a human summary that at least names the digest.
    let out = lamina_ok(&["inspect", &r], t.path(), &[]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &stderr_of(&out);
    assert!(text.contains(&b.digest), "{}", describe(&out));
}

#[test]
fn inspect_picks_a_platform_from_the_base_index() {
    let t = TempDir::new().unwrap();
    let (_, arm_digest, arm_config) = base_image("arm64");
    let out = lamina_ok(
        &[
            "inspect",
            &fixture_base_ref(),
            "--platform",
            "linux/arm64",
            "--json",
        ],
        t.path(),
        &[],
    );
    let j: Value = serde_json::from_slice(&out.stdout).expect("inspect --json is JSON");
    let platform = j["platform"].as_str().expect("platform");
    assert!(platform.starts_with("linux/arm64"), "{platform}");
    assert_eq!(j["digest"].as_str(), Some(arm_digest.as_str()), "{j}");
    let layers = j["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 2);
    assert_eq!(
        layers[1]["diffId"].as_str(),
        Some(diff_ids(&arm_config)[1].as_str())
    );

    let (_, amd_digest, _) = base_image("amd64");
    let out = lamina_ok(
        &[
            "inspect",
            &fixture_base_ref(),
            "--platform",
            "x86_64",
            "--json",
        ],
        t.path(),
        &[],
    );
    let j: Value = serde_json::from_slice(&out.stdout).expect("inspect --json is JSON");
    assert_eq!(j["digest"].as_str(), Some(amd_digest.as_str()), "{j}");
    assert_eq!(j["platform"].as_str(), Some("linux/amd64"));
}

#[test]
fn delete_flag_adds_whiteouts() {
    let t = TempDir::new().unwrap();
    let b = build_fixture(
        t.path(),
        "out",
        &[
            "--delete",
            "/usr/lib/keep.txt",
            "--delete",
            "/etc/os-release",
        ],
        &[],
    );
    let (manifest, _, _) = read_layout(&b.layout, "latest");
    assert_eq!(
        layer_digests(&manifest).len(),
        4,
        "deletions share one layer"
    );
    let wh = tar_entries(&layer_tar(&b.layout, &manifest, 2));
    assert_sorted(&wh, "whiteout layer");
    for p in ["opt/.wh.old", "usr/lib/.wh.keep.txt", "etc/.wh.os-release"] {
        let e = entry(&wh, p);
        assert!(e.is_file() && e.data.is_empty(), "{p}");
    }
    verify_layout_blobs(&b.layout);

    let u = umoci_unpack(&b.layout, "latest");
    assert!(!u.rootfs.join("usr/lib/keep.txt").exists());
    assert!(!u.rootfs.join("etc/os-release").exists());
    assert!(u.rootfs.join("etc/arch").is_file());
    assert!(fs::symlink_metadata(u.rootfs.join("opt/old")).is_err());
}

#[test]
fn deleted_path_can_be_refilled_by_a_later_layer() {
    let t = TempDir::new().unwrap();
    let src = t.path().join("new-old");
    write_file(&src.join("fresh.txt"), b"fresh\n", 0o644);
    let layer = format!("{}:/opt/old", src.display());
    let b = build_fixture(t.path(), "out", &["--layer", &layer], &[]);
    let (manifest, _, _) = read_layout(&b.layout, "latest");
    assert_eq!(layer_digests(&manifest).len(), 5);
    let u = umoci_unpack(&b.layout, "latest");
    let old = u.rootfs.join("opt/old");
    let names: Vec<String> = list_dir(&old)
        .into_iter()
        .map(|n| n.to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["fresh.txt"], "only the new content at /opt/old");
}

#[test]
fn flags_override_spec_fields() {
    let t = TempDir::new().unwrap();
    let extra = t.path().join("extra.txt");
    write_file(&extra, b"extra\n", 0o600);
    let layer = format!("{}:/opt/extra/", extra.display());
    let b = build_fixture(
        t.path(),
        "out",
        &[
            "--cmd",
            r#"["a","b c"]"#,
            "--entrypoint",
            "/bin/true",
            "--env",
            "FUNCTION_NAME=override",
            "--env",
            "LAMBDA_TASK_ROOT=/srv/task",
            "--env",
            "NEW_VAR=1",
            "--label",
            "org.example.flag=yes",
            "--annotation",
            "org.example.note=hi",
            "--workdir",
            "/srv",
            "--user",
            "1000:1000",
            "--layer",
            &layer,
        ],
        &[],
    );
    let (manifest, _, config) = read_layout(&b.layout, "latest");
    let c = &config["config"];
    assert_eq!(string_array(&c["Cmd"]), vec!["a", "b c"]);
    assert_eq!(string_array(&c["Entrypoint"]), vec!["/bin/true"]);
    assert_eq!(c["WorkingDir"].as_str(), Some("/srv"));
    assert_eq!(c["User"].as_str(), Some("1000:1000"));
    assert_eq!(c["Labels"]["org.example.flag"].as_str(), Some("yes"));
    assert_eq!(
        manifest["annotations"]["org.example.note"].as_str(),
        Some("hi")
    );
    let env = env_of(&config);
    let with = |k: &str| -> Vec<&String> {
        env.iter()
            .filter(|e| e.starts_with(&format!("{k}=")))
            .collect()
    };
    assert_eq!(
        with("FUNCTION_NAME"),
        vec!["FUNCTION_NAME=override"],
        "{env:?}"
    );
    assert_eq!(
        with("LAMBDA_TASK_ROOT"),
        vec!["LAMBDA_TASK_ROOT=/srv/task"],
        "{env:?}"
    );
    assert_eq!(with("NEW_VAR"), vec!["NEW_VAR=1"]);
    assert_eq!(with("LANG"), vec!["LANG=en_US.UTF-8"], "base env kept");

    // --layer is appended after the spec's layers; a file into "dir/" keeps its name.
    let layers = layer_digests(&manifest);
    assert_eq!(layers.len(), 5);
    let last = tar_entries(&layer_tar(&b.layout, &manifest, 4));
    let e = entry(&last, "opt/extra/extra.txt");
    assert_eq!(e.data, b"extra\n");
    assert_eq!(e.mode, 0o644);

    let u = umoci_unpack(&b.layout, "latest");
    assert_eq!(
        fs::read(u.rootfs.join("opt/extra/extra.txt")).unwrap(),
        b"extra\n"
    );
    let rt = read_json(&u.bundle.join("config.json"));
    assert_eq!(
        string_array(&rt["process"]["args"]),
        vec!["/bin/true", "a", "b c"]
    );
}

#[test]
fn single_string_cmd_is_one_element() {
    let t = TempDir::new().unwrap();
    let b = build_fixture(t.path(), "out", &["--cmd", "handler.other"], &[]);
    let (_, _, config) = read_layout(&b.layout, "latest");
    assert_eq!(
        string_array(&config["config"]["Cmd"]),
        vec!["handler.other"]
    );
}

#[test]
fn existing_layout_gets_a_tag_added_or_replaced() {
    let t = TempDir::new().unwrap();
    let layout = t.path().join("shared");
    let spec = fixture_spec();
    let build = |tag: &str, cmd: &str| -> String {
        let to = oci_ref(&layout, tag);
        let out = lamina_ok(
            &["build", "-f", path_str(&spec), "--to", &to, "--cmd", cmd],
            t.path(),
            &[],
        );
        parse_digest(&out)
    };
    let first = build("latest", "one");
    let v2 = build("v2", "two");
    assert_ne!(first, v2);
    let tags = layout_tags(&layout);
    assert_eq!(tags.len(), 2, "{tags:?}");
    assert_eq!(tags["latest"], first);
    assert_eq!(tags["v2"], v2);
    verify_layout_blobs(&layout);

    let replaced = build("latest", "three");
    assert_ne!(replaced, first);
    let tags = layout_tags(&layout);
    assert_eq!(
        tags.len(),
        2,
        "the tag is replaced, not duplicated: {tags:?}"
    );
    assert_eq!(tags["latest"], replaced);
    assert_eq!(tags["v2"], v2);
    verify_layout_blobs(&layout);
    assert_eq!(
        read_index(&layout)["manifests"].as_array().unwrap().len(),
        2
    );

    for (tag, digest) in [("latest", &replaced), ("v2", &v2)] {
        let raw = skopeo_ok(&["inspect", "--raw", &oci_ref(&layout, tag)]);
        assert_eq!(&sha256_digest(&raw), digest, "{tag}");
    }
}

#[test]
fn scratch_base_with_flags_only() {
    let t = TempDir::new().unwrap();
    let src = t.path().join("app");
    write_file(&src.join("run"), b"#!/bin/sh\necho hi\n", 0o700);
    write_file(&src.join("conf/app.ini"), b"[app]\n", 0o600);
    let layout = t.path().join("out");
    let layer = format!("{}:/app", src.display());
    let out = lamina_ok(
        &[
            "build",
            "--base",
            "scratch",
            "--platform",
            "linux/arm64",
            "--layer",
            &layer,
            "--entrypoint",
            "/app/run",
            "--to",
            &oci_ref(&layout, "latest"),
        ],
        t.path(),
        &[],
    );
    let digest = parse_digest(&out);
    let (manifest, d, config) = read_layout(&layout, "latest");
    assert_eq!(d, digest);
    assert_eq!(layer_digests(&manifest).len(), 1);
    assert_eq!(config["architecture"].as_str(), Some("arm64"));
    assert_eq!(config["os"].as_str(), Some("linux"));
    assert_eq!(config["created"].as_str(), Some(EPOCH));
    assert_eq!(
        string_array(&config["config"]["Entrypoint"]),
        vec!["/app/run"]
    );
    verify_layout_blobs(&layout);
    skopeo_ok(&["inspect", &oci_ref(&layout, "latest")]);

    let u = umoci_unpack(&layout, "latest");
    assert_eq!(
        tree_snapshot(&u.rootfs.join("app")),
        normalized(&tree_snapshot(&src))
    );
    // Only /app in the image.
    let names: Vec<String> = list_dir(&u.rootfs)
        .into_iter()
        .map(|n| n.to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["app"]);
}

#[test]
fn default_spec_is_lamina_toml_in_cwd_and_flag_paths_are_cwd_relative() {
    let t = TempDir::new().unwrap();
    let reference = build_fixture(t.path(), "reference", &[], &[]);

    let fx = t.path().join("fx");
    copy_tree(&fixtures_dir(), &fx);

    // No -f: ./lamina.toml; its relative paths resolve against its directory.
    let out = lamina_ok(&["build", "--to", "oci:../from-cwd:latest"], &fx, &[]);
    assert_eq!(parse_digest(&out), reference.digest);
    let (_, d, _) = read_layout(&t.path().join("from-cwd"), "latest");
    assert_eq!(d, reference.digest);

    // -f relative to the current directory, --to relative to the current directory.
    let out = lamina_ok(
        &[
            "build",
            "-f",
            "fx/lamina.toml",
            "--to",
            "oci:rel-out:latest",
        ],
        t.path(),
        &[],
    );
    assert_eq!(parse_digest(&out), reference.digest);
    let (_, d, _) = read_layout(&t.path().join("rel-out"), "latest");
    assert_eq!(d, reference.digest);
    assert!(!fx.join("rel-out").exists(), "--to is not spec-relative");
}

#[test]
fn compression_level_changes_blobs_not_diff_ids() {
    let t = TempDir::new().unwrap();
    let default = build_fixture(t.path(), "default", &[], &[]);
    let stored = build_fixture(t.path(), "stored", &["--compression-level", "0"], &[]);
    let best = build_fixture(t.path(), "best", &["--compression-level", "9"], &[]);
    assert_ne!(stored.digest, default.digest);

    let (dm, _, dc) = read_layout(&default.layout, "latest");
    for b in [&stored, &best] {
        verify_layout_blobs(&b.layout);
        let (m, _, c) = read_layout(&b.layout, "latest");
        assert_eq!(diff_ids(&c), diff_ids(&dc), "same uncompressed layers");
        assert_eq!(
            &layer_digests(&m)[..2],
            &layer_digests(&dm)[..2],
            "base blobs reused"
        );
        for i in 2..4 {
            let desc = &m["layers"][i];
            let blob = read_blob(&b.layout, desc["digest"].as_str().unwrap());
            assert_clean_gzip_header(&blob, &format!("layer {i}"));
        }
    }
    let (sm, _, _) = read_layout(&stored.layout, "latest");
    assert_ne!(layer_digests(&sm)[3], layer_digests(&dm)[3]);
}
