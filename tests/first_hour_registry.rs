//! Tracker issue 13, "the first hour", registry side: a base that cannot be reached is named
//! with its real cause (DNS, refused) and the way forward, fast; a platform the image lacks is
//! refused before any layer is downloaded.

mod common;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use tempfile::TempDir;

/// An unresolvable name (`.invalid` never resolves, RFC 6761): the error names the image and
/// DNS, offers the offline way (`lamina pull … oci:DIR`), does not suggest
/// `--insecure-registry`, and comes within seconds (no five retries with backoff).
#[test]
fn dns_failure_is_fast_and_names_the_image_and_cause() {
    let sb = Sandbox::new(Vec::new());
    let image = "docker://no-such-host.invalid/x:y";
    let dest = oci_ref(&sb.work().join("out"), "latest");
    let started = Instant::now();
    let out = sb.fail(&strings(&["pull", image, &dest]));
    let took = started.elapsed();
    let err = stderr_of(&out);
    assert!(
        err.contains(image),
        "the image is not named:\n{}",
        describe(&out)
    );
    assert!(
        err.contains("DNS"),
        "the cause is not named:\n{}",
        describe(&out)
    );
    assert!(
        err.contains("lamina pull") && err.contains("oci:DIR"),
        "the way forward is not named:\n{}",
        describe(&out)
    );
    assert!(
        !err.contains("--insecure-registry"),
        "plain HTTP has nothing to do with DNS:\n{}",
        describe(&out)
    );
    assert!(
        took < Duration::from_secs(4),
        "took {took:?}:\n{}",
        describe(&out)
    );
}

/// A loopback port nobody listens on: "refused", and the image named.
#[test]
fn refused_connection_is_named() {
    // Bound then dropped: nothing listens there afterwards.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let sb = Sandbox::new(Vec::new());
    let image = format!("docker://127.0.0.1:{port}/x:y");
    let dest = oci_ref(&sb.work().join("out"), "latest");
    let out = sb.fail(&strings(&["pull", &image, &dest, "--retries", "1"]));
    let err = stderr_of(&out);
    assert!(
        err.contains(&image),
        "the image is not named:\n{}",
        describe(&out)
    );
    assert!(
        err.contains("refused"),
        "the cause is not named:\n{}",
        describe(&out)
    );
    assert!(!err.contains("--insecure-registry"), "{}", describe(&out));
}

/// `fixtures/base` copied into `dir`, its index cut down to the amd64 entry: `oci:DIR:latest`.
fn amd64_index_layout(dir: &std::path::Path) -> String {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    for e in std::fs::read_dir(fixture_base().join("blobs/sha256")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), blobs.join(e.file_name())).unwrap();
    }
    std::fs::copy(fixture_base().join("oci-layout"), dir.join("oci-layout")).unwrap();
    let top: Value =
        serde_json::from_slice(&std::fs::read(fixture_base().join("index.json")).unwrap()).unwrap();
    let nested = top["manifests"][0]["digest"].as_str().unwrap();
    let nested = std::fs::read(blobs.join(nested.trim_start_matches("sha256:"))).unwrap();
    let mut idx: Value = serde_json::from_slice(&nested).unwrap();
    idx["manifests"]
        .as_array_mut()
        .unwrap()
        .retain(|m| m["platform"]["architecture"] == "amd64");
    assert_eq!(idx["manifests"].as_array().unwrap().len(), 1);
    let bytes = serde_json::to_vec(&idx).unwrap();
    std::fs::write(blobs.join(sha256_hex(&bytes)), &bytes).unwrap();
    let top = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": sha256_digest(&bytes),
            "size": bytes.len(),
            "annotations": {"org.opencontainers.image.ref.name": "latest"}
        }]
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();
    oci_ref(dir, "latest")
}

/// A registry behind a counting proxy, holding `fixtures/base` as a single amd64 manifest
/// (`base:amd64`) and as an index listing amd64 only (`base:amd64-index`).
fn seeded() -> (Registry, FaultProxy) {
    let reg = Registry::plain();
    let proxy = FaultProxy::new(&reg.host);
    skopeo_ok(&[
        "copy",
        "--override-os",
        "linux",
        "--override-arch",
        "amd64",
        "--dest-tls-verify=false",
        &fixture_base_ref(),
        &proxy.reference("base:amd64"),
    ]);
    let amd64_only = TempDir::new().unwrap();
    skopeo_ok(&[
        "copy",
        "--all",
        "--dest-tls-verify=false",
        &amd64_index_layout(amd64_only.path()),
        &proxy.reference("base:amd64-index"),
    ]);
    proxy.reset_counts();
    (reg, proxy)
}

/// Pull `image` for `platform`: it must fail naming the platform, with no layer blob fetched
/// (the config, one small blob, may be).
fn refused_before_layers(proxy: &FaultProxy, image: &str, platform: &str, allowed_blobs: usize) {
    let sb = Sandbox::new(Vec::new());
    let dest = sb.work().join("out");
    let out = sb.fail(&strings(&[
        "pull",
        image,
        &oci_ref(&dest, "latest"),
        "--platform",
        platform,
    ]));
    let err = stderr_of(&out);
    assert!(
        err.contains(platform) && err.contains(image),
        "the platform and image are not named:\n{}",
        describe(&out)
    );
    let blobs = proxy.count("GET", "/blobs/");
    assert!(
        blobs <= allowed_blobs,
        "{blobs} blob GETs (at most {allowed_blobs} allowed) before refusing: {:?}\n{}",
        proxy
            .requests()
            .iter()
            .map(|s| format!("{} {}", s.method, s.target))
            .collect::<Vec<_>>(),
        describe(&out)
    );
    assert!(!dest.exists(), "a refused pull created {}", dest.display());
    proxy.reset_counts();
}

#[test]
fn pull_of_a_missing_platform_downloads_no_layer() {
    let (_reg, proxy) = seeded();
    // A single amd64 manifest asked for arm64: only its config may be read.
    refused_before_layers(&proxy, &proxy.reference("base:amd64"), "linux/arm64", 1);
    // An index lacking the platform (its one entry taken, then judged by its config): no layer.
    refused_before_layers(
        &proxy,
        &proxy.reference("base:amd64-index"),
        "linux/arm64",
        1,
    );
}

/// The sibling for token realms: a registry whose Bearer realm does not resolve fails within
/// seconds (one retry, not five with backoff), naming DNS and the realm.
#[test]
fn unresolvable_token_realm_is_fast_and_named() {
    let realm = "http://no-such-realm.invalid/token";
    let reg = FakeRegistry::start(move |_, s| {
        let challenge = format!("Bearer realm=\"{realm}\",service=\"fake\"");
        respond(s, 401, &[("WWW-Authenticate", challenge)], b"{}", false)
    });
    let sb = Sandbox::new(Vec::new());
    let dest = oci_ref(&sb.work().join("out"), "latest");
    let started = Instant::now();
    let out = sb.fail(&strings(&["pull", &reg.reference("x:y"), &dest]));
    let took = started.elapsed();
    let err = stderr_of(&out);
    assert!(
        err.contains(realm) && err.contains("DNS"),
        "the realm and cause are not named:\n{}",
        describe(&out)
    );
    assert!(
        took < Duration::from_secs(4),
        "took {took:?}:\n{}",
        describe(&out)
    );
}
