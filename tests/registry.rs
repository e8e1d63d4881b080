//! lamina against real registries (CNCF distribution, `docker-registry`): pushing builds, pulling
//! bases, authentication (htpasswd over TLS, bearer tokens), cross-repository mounts, retries
//! through injected faults, redirects to storage hosts, and credentials never printed. What
//! lamina wrote is checked with skopeo and umoci. The `harness_*` tests check the test peers
//! themselves with skopeo alone.
//!
//! Every test starts its own registry on 127.0.0.1 (one, on 10.200.0.1 inside a network
//! namespace of its own: an address that is not loopback, yet reachable only there) and runs
//! lamina with `HOME`, `DOCKER_CONFIG`, `XDG_CACHE_HOME` and `LAMINA_CACHE_DIR` inside a
//! temporary directory.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use tempfile::TempDir;

const USER: &str = "lamina-tester";
/// Distinctive enough that finding it in any output means it leaked.
const PASSWORD: &str = "pw-Kq7vZ2xR-secret";
const WRONG_PASSWORD: &str = "pw-Wr0ngJx4tB-secret";

/// 5 MiB, the smallest chunk lamina accepts.
const CHUNK: &str = "5242880";

fn with_flags(mut args: Vec<String>, reg: &Registry) -> Vec<String> {
    args.extend(reg.lamina_flags());
    args
}

/// The strings that must never appear in lamina's output (a [`Sandbox`]'s secrets).
fn secrets() -> Vec<String> {
    let mut v = vec![PASSWORD.to_owned(), WRONG_PASSWORD.to_owned()];
    for pw in [PASSWORD, WRONG_PASSWORD] {
        v.push(base64(format!("{USER}:{pw}").as_bytes()));
    }
    v
}

/// skopeo-copy `repo_tag` out of the registry into a fresh layout and check every blob.
fn read_back(reg: &Registry, repo_tag: &str, into: &Path) -> (Value, String, Value) {
    reg.skopeo_pull(repo_tag, &oci_ref(into, "latest"));
    verify_layout_blobs(into);
    read_layout(into, "latest")
}

/// Push the multi-arch fixture base with skopeo to `HOST/base:latest`.
fn seed_base(reg: &Registry) {
    reg.skopeo_push(&fixture_base_ref(), "base:latest", true);
}

fn fixture_index_digest() -> String {
    tagged_descriptor(&fixture_base(), "latest")["digest"]
        .as_str()
        .expect("digest")
        .to_owned()
}

// ---------------------------------------------------------------------------------------------
// The peers themselves (skopeo only)
// ---------------------------------------------------------------------------------------------

fn harness_round_trip(reg: &Registry) {
    let t = TempDir::new().unwrap();
    // Single arch (skopeo picks one manifest of the index) and the whole index.
    reg.skopeo_push(&fixture_base_ref(), "single:v1", false);
    let (_, amd64, _) = base_image("amd64");
    let (_, arm64, _) = base_image("arm64");
    let single = reg.manifest_digest("single:v1");
    assert!(
        single == amd64 || single == arm64,
        "skopeo pushed an unexpected manifest {single}"
    );
    seed_base(reg);
    assert_eq!(reg.manifest_digest("base:latest"), fixture_index_digest());
    let (_, d, _) = read_back(reg, "single:v1", &t.path().join("back"));
    assert_eq!(d, single);
}

#[test]
fn harness_plain_registry_works_with_skopeo() {
    let reg = Registry::plain();
    assert!(!reg.is_tls());
    assert_eq!(http_status(&reg.host, "/v2/"), Some(200));
    harness_round_trip(&reg);
}

#[test]
fn harness_tls_basic_registry_works_with_skopeo() {
    let reg = Registry::tls_basic(USER, PASSWORD);
    assert!(reg.ca.as_ref().is_some_and(|p| p.is_file()));
    harness_round_trip(&reg);
    // Wrong credentials are refused.
    let out = skopeo(&[
        "inspect",
        "--raw",
        "--cert-dir",
        path_str(reg.cert_dir.as_ref().unwrap()),
        "--creds",
        &format!("{USER}:{WRONG_PASSWORD}"),
        &reg.reference("base:latest"),
    ]);
    assert!(!out.status.success(), "{}", describe(&out));
}

#[test]
fn harness_token_registry_works_with_skopeo() {
    let reg = Registry::token(USER, PASSWORD);
    harness_round_trip(&reg);
    assert!(reg.token_count() > 0, "skopeo got no token");
    let log = reg.token_log();
    assert!(
        log.iter().any(|r| r.user.as_deref() == Some(USER)
            && r.scopes.iter().any(|s| s.contains("push"))),
        "{log:?}"
    );
    let cert_dir = path_str(reg.cert_dir.as_ref().unwrap()).to_owned();
    // Wrong credentials: the token server says 401.
    let out = skopeo(&[
        "inspect",
        "--raw",
        "--cert-dir",
        &cert_dir,
        "--creds",
        &format!("{USER}:{WRONG_PASSWORD}"),
        &reg.reference("base:latest"),
    ]);
    assert!(!out.status.success(), "{}", describe(&out));
    // Anonymous: a token without access, which the registry refuses.
    let out = skopeo(&[
        "inspect",
        "--raw",
        "--cert-dir",
        &cert_dir,
        "--no-creds",
        &reg.reference("base:latest"),
    ]);
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        reg.token_log()
            .iter()
            .any(|r| r.user.is_none() && r.status == 200),
        "no anonymous token request: {:?}",
        reg.token_log()
    );
}

/// Send a raw request through the proxy; the status, or `None` if the connection was cut.
fn raw_request(addr: &str, head: &str, body: &[u8]) -> Option<u16> {
    let mut s = TcpStream::connect(addr).expect("connect to proxy");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(head.as_bytes()).ok()?;
    // The body is written while the answer is read: a server may answer (and close) before it
    // has read the body, and an answer left unread while this side is still writing can be
    // lost to the connection's reset. Write errors are ignored: after a cut the rest of the
    // body cannot be sent.
    let mut w = s.try_clone().expect("clone the connection");
    let body = body.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = w.write_all(&body);
    });
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let _ = s.shutdown(std::net::Shutdown::Both);
    let _ = writer.join();
    let text = String::from_utf8_lossy(&resp);
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    text.starts_with("HTTP/1.").then_some(status)
}

#[test]
fn harness_fault_proxy_forwards_fails_and_cuts() {
    let reg = Registry::plain();
    let proxy = FaultProxy::new(&reg.host);
    // Plain forwarding: skopeo pushes and reads back through the proxy.
    let t = TempDir::new().unwrap();
    let dest = proxy.reference("base:latest");
    skopeo_ok(&[
        "copy",
        "--all",
        "--dest-tls-verify=false",
        &fixture_base_ref(),
        &dest,
    ]);
    skopeo_ok(&[
        "copy",
        "--src-tls-verify=false",
        &dest,
        &oci_ref(&t.path().join("back"), "latest"),
    ]);
    verify_layout_blobs(&t.path().join("back"));
    assert_eq!(reg.manifest_digest("base:latest"), fixture_index_digest());
    let counts = proxy.counts_by_method();
    assert!(counts.get("PUT").copied().unwrap_or(0) >= 3, "{counts:?}");
    assert!(proxy.count("GET", "/blobs/sha256:") >= 2, "{counts:?}");

    // 503 with Retry-After, then normal service.
    proxy.fail_503(1, Match::new(&["GET"], "/v2/"), true);
    assert_eq!(http_status(&proxy.addr(), "/v2/"), Some(503));
    assert_eq!(http_status(&proxy.addr(), "/v2/"), Some(200));

    // A cut mid-body (Content-Length), then the same request goes through.
    proxy.cut_after(1, 1000, Match::new(&["PUT"], "/cut-test/"));
    let body = vec![b'x'; 200_000];
    let head = format!(
        "PUT /v2/cut-test/blobs/uploads/nope HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n\r\n",
        proxy.addr(),
        body.len()
    );
    assert_eq!(raw_request(&proxy.addr(), &head, &body), None);
    assert!(raw_request(&proxy.addr(), &head, &body).is_some());
    // Chunked bodies are forwarded whole.
    let chunked_head = format!(
        "PUT /v2/cut-test/blobs/uploads/nope HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\n\r\n",
        proxy.addr()
    );
    assert!(raw_request(&proxy.addr(), &chunked_head, b"5\r\nhello\r\n0\r\n\r\n").is_some());
    assert_eq!(proxy.faults_injected(), 2);
    let outcomes: Vec<&str> = proxy.requests().iter().map(|s| s.outcome).collect();
    assert!(
        outcomes.contains(&"503") && outcomes.contains(&"cut"),
        "{outcomes:?}"
    );
}

#[test]
fn harness_redirect_registry_serves_blobs_from_another_host() {
    let rr = redirect_registry(USER, PASSWORD);
    rr.registry
        .skopeo_push(&fixture_base_ref(), "fn:latest", true);
    let t = TempDir::new().unwrap();
    let back = t.path().join("back");
    rr.registry
        .skopeo_pull("fn:latest", &oci_ref(&back, "latest"));
    verify_layout_blobs(&back);
    assert!(
        rr.redirected_gets() >= 2,
        "docker-registry redirected no blob GETs:\n{}",
        rr.registry.log()
    );
    assert!(rr.storage_requests() >= 2);
    assert_eq!(rr.storage_with_auth(), 0, "Go strips Authorization too");
    // Without credentials the registry refuses.
    let out = skopeo(&[
        "inspect",
        "--raw",
        "--cert-dir",
        path_str(rr.registry.cert_dir.as_ref().expect("TLS")),
        "--no-creds",
        &rr.reference("fn:latest"),
    ]);
    assert!(!out.status.success(), "{}", describe(&out));
}

#[test]
fn harness_base64_and_dates() {
    assert_eq!(base64(b""), "");
    assert_eq!(base64(b"f"), "Zg==");
    assert_eq!(base64(b"fo"), "Zm8=");
    assert_eq!(base64(b"foo"), "Zm9v");
    assert_eq!(base64(b"user:pass"), "dXNlcjpwYXNz");
    assert_eq!(base64(&[0xfb, 0xff]), "+/8=");
    assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    assert_eq!(
        percent_decode("repository%3Aa%2Fb%3Apull%2Cpush"),
        "repository:a/b:pull,push"
    );
}

// ---------------------------------------------------------------------------------------------
// build --to docker://
// ---------------------------------------------------------------------------------------------

/// Build the fixture straight into `reg`; the pushed manifest is the one an `oci:` build gives
/// and unpacks to the function.
fn check_build_to_registry(reg: &Registry) {
    let sb = Sandbox::new(secrets());
    if reg.user.is_some() {
        reg.write_docker_config(&sb.docker_dir());
    }
    let dest = reg.reference("fn:v1");
    let out = sb.ok(&with_flags(
        strings(&["build", "-f", path_str(&fixture_spec()), "--to", &dest]),
        reg,
    ));
    let digest = parse_digest(&out);
    assert_eq!(
        reg.manifest_digest("fn:v1"),
        digest,
        "sha256 of the manifest the registry serves"
    );
    let (local, _) = sb.build_oci("local", &[]);
    assert_eq!(local, digest, "registry build and oci: build differ");

    let copy = sb.work().join("copy");
    let (_, copy_digest, config) = read_back(reg, "fn:v1", &copy);
    assert_eq!(copy_digest, digest);
    assert_eq!(config["architecture"].as_str(), Some("amd64"));
    let u = umoci_unpack(&copy, "latest");
    assert_eq!(
        tree_snapshot(&u.rootfs.join("var/task")),
        expected_function_tree()
    );
}

#[test]
fn build_to_plain_registry() {
    check_build_to_registry(&Registry::plain());
}

#[test]
fn build_to_tls_basic_auth_registry() {
    check_build_to_registry(&Registry::tls_basic(USER, PASSWORD));
}

#[test]
fn build_to_token_auth_registry() {
    check_build_to_registry(&Registry::token(USER, PASSWORD));
}

#[test]
fn build_json_to_registry_reports_blobs() {
    let reg = Registry::plain();
    let sb = Sandbox::new(secrets());
    let dest = reg.reference("fn:v1");
    let out = sb.ok(&strings(&[
        "build",
        "-f",
        path_str(&fixture_spec()),
        "--to",
        &dest,
        "--json",
    ]));
    let v = parse_json(&out);
    let digest = v["digest"].as_str().expect("digest").to_owned();
    assert_eq!(v["reference"].as_str(), Some(dest.as_str()), "{v}");
    assert_eq!(reg.manifest_digest("fn:v1"), digest);
    let copy = sb.work().join("copy");
    let (manifest, _, _) = read_back(&reg, "fn:v1", &copy);
    let fates = blob_fates(&v);
    let expected = manifest_blobs(&manifest);
    assert_eq!(
        fates.keys().collect::<BTreeSet<_>>(),
        expected.keys().collect::<BTreeSet<_>>(),
        "blobs of the report vs the manifest: {v}"
    );
    for (d, (size, fate)) in &fates {
        assert_eq!(Some(size), expected.get(d), "size of {d}");
        assert_eq!(fate, "pushed", "{d} on a fresh registry: {v}");
    }
}

#[test]
fn a_layer_streamed_during_the_build_is_reported_pushed_with_no_second_head() {
    let reg = Registry::plain();
    let proxy = FaultProxy::new(&reg.host);
    let sb = Sandbox::new(secrets());
    let dest = proxy.reference("fn:streamed");
    // Not quiet and not a terminal: one progress line per blob on stderr.
    let out = sb.ok(&strings(&[
        "build",
        "-f",
        path_str(&fixture_spec()),
        "--to",
        &dest,
        "--json",
    ]));
    let v = parse_json(&out);
    let digest = v["digest"].as_str().expect("digest").to_owned();
    assert_eq!(reg.manifest_digest("fn:streamed"), digest);
    let fates = blob_fates(&v);
    let new_layers: Vec<String> = v["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .filter(|l| l["origin"] == "new")
        .map(|l| l["digest"].as_str().expect("layer digest").to_owned())
        .collect();
    assert!(!new_layers.is_empty(), "{v}");
    let stderr = stderr_of(&out);
    for d in &new_layers {
        assert_eq!(fates[d].1, "pushed", "{d} in --json: {v}");
        let short = &hex_of(d)[..12];
        assert!(
            stderr.contains(&format!("{short} pushed"))
                && !stderr.contains(&format!("{short} skipped")),
            "progress for {d} must say pushed, as --json does:\n{stderr}"
        );
    }
    // A blob is never asked about again once its upload is committed; and the layer lamina
    // streamed while compressing it is not asked about at all.
    let seen = proxy.requests();
    let committed = |hex: &str| {
        seen.iter()
            .position(|r| r.method == "PUT" && r.target.contains(&format!("digest=sha256%3A{hex}")))
    };
    let mut streamed = 0;
    for d in &new_layers {
        let put = committed(hex_of(d)).unwrap_or_else(|| panic!("no upload of {d}: {seen:?}"));
        let heads: Vec<usize> = (0..seen.len())
            .filter(|&i| seen[i].method == "HEAD" && seen[i].target.ends_with(d.as_str()))
            .collect();
        assert!(
            heads.iter().all(|&i| i < put),
            "HEAD of {d} after its upload: {seen:?}"
        );
        streamed += usize::from(heads.is_empty());
    }
    assert!(streamed >= 1, "no layer was streamed: {seen:?}");
}

// ---------------------------------------------------------------------------------------------
// push
// ---------------------------------------------------------------------------------------------

#[test]
fn push_reports_pushed_then_skipped() {
    let reg = Registry::plain();
    let sb = Sandbox::new(secrets());
    let (digest, layout) = sb.build_oci("out", &[]);
    let (manifest, _, _) = read_layout(&layout, "latest");
    let expected = manifest_blobs(&manifest);
    let src = oci_ref(&layout, "latest");
    let dest = reg.reference("fn:v2");

    let push = |round: &str| -> Value {
        let v = parse_json(&sb.ok(&strings(&["push", &src, &dest, "--json"])));
        assert_eq!(v["reference"].as_str(), Some(dest.as_str()), "{round}: {v}");
        assert_eq!(v["digest"].as_str(), Some(digest.as_str()), "{round}: {v}");
        assert_eq!(
            v["size"].as_u64(),
            Some(manifest_bytes(&layout, "latest").len() as u64),
            "{round}: {v}"
        );
        assert_eq!(v["mediaType"].as_str(), Some(MT_MANIFEST), "{round}: {v}");
        let fates = blob_fates(&v);
        assert_eq!(
            fates.keys().collect::<BTreeSet<_>>(),
            expected.keys().collect::<BTreeSet<_>>(),
            "{round}: blobs of the report vs the manifest: {v}"
        );
        for (d, (size, _)) in &fates {
            assert_eq!(Some(size), expected.get(d), "{round}: size of {d}");
        }
        v
    };

    let first = push("first push");
    for (d, (_, fate)) in blob_fates(&first) {
        assert_eq!(fate, "pushed", "first push of {d}: {first}");
    }
    let second = push("second push");
    for (d, (_, fate)) in blob_fates(&second) {
        assert_eq!(fate, "skipped", "second push of {d}: {second}");
    }
    // Without --json: just the digest.
    assert_eq!(
        parse_digest(&sb.ok(&strings(&["push", &src, &dest]))),
        digest
    );
    assert_eq!(reg.manifest_digest("fn:v2"), digest);
    let (_, back, _) = read_back(&reg, "fn:v2", &sb.work().join("back"));
    assert_eq!(back, digest);
}

// ---------------------------------------------------------------------------------------------
// pull, inspect, registry bases
// ---------------------------------------------------------------------------------------------

#[test]
fn check_of_a_remote_index_without_platform_connects_once() {
    let reg = Registry::plain();
    seed_base(&reg);
    let proxy = FaultProxy::new(&reg.host);
    let sb = Sandbox::new(secrets());
    let out = sb.run(
        &strings(&["check", "--json", &proxy.reference("base:latest")]),
        None,
    );
    // The index names two platforms and no --platform was given: an L001 error, exit 3.
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    let report: Value = serde_json::from_slice(&out.stdout).expect("check --json");
    assert_eq!(
        report["digest"].as_str(),
        Some(fixture_index_digest().as_str())
    );
    let seen = proxy.requests();
    let pings = seen
        .iter()
        .filter(|r| r.method == "GET" && r.target == "/v2/")
        .count();
    let manifests = seen
        .iter()
        .filter(|r| r.target.contains("/manifests/"))
        .count();
    assert_eq!(pings, 1, "one connection, one ping: {seen:?}");
    assert_eq!(manifests, 1, "the index is fetched once: {seen:?}");
}

/// A pull survives, in one run, a 503 on a manifest, a 429 whose `Retry-After` is an HTTP
/// date (and waits until then), a 408, and an answer cut mid-way.
#[test]
fn pull_retries_statuses_and_cuts_honouring_an_http_date_retry_after() {
    let reg = Registry::plain();
    seed_base(&reg);
    let proxy = FaultProxy::new(&reg.host);
    let blobs = Match::new(&["GET"], "/blobs/sha256:");
    proxy.fail_status(
        1,
        503,
        Match::new(&["GET"], "/manifests/"),
        Some("1".into()),
    );
    let until = std::time::SystemTime::now() + Duration::from_secs(6);
    proxy.fail_status(1, 429, blobs.clone(), Some(httpdate::fmt_http_date(until)));
    proxy.fail_status(1, 408, blobs.clone(), None);
    proxy.cut_response_after(1, 100, blobs);
    let sb = Sandbox::new(secrets());
    let p = sb.work().join("p");
    let started = Instant::now();
    sb.ok(&strings(&[
        "pull",
        &proxy.reference("base:latest"),
        &oci_ref(&p, "latest"),
        "--platform",
        "linux/arm64",
    ]));
    let took = started.elapsed();
    assert_eq!(proxy.faults_injected(), 4, "{:?}", proxy.requests());
    let (_, want, _) = base_image("arm64");
    assert_eq!(read_layout(&p, "latest").1, want);
    verify_layout_blobs(&p);
    // The HTTP date was 2-3 s ahead (second granularity): lamina waited for it.
    assert!(
        took >= Duration::from_millis(1500),
        "did not wait for Retry-After: {took:?}"
    );
}

#[test]
fn pull_one_platform_of_a_multi_arch_image() {
    let reg = Registry::plain();
    seed_base(&reg);
    let sb = Sandbox::new(secrets());
    for arch in ["arm64", "amd64"] {
        let p = sb.work().join(format!("p-{arch}"));
        sb.ok(&strings(&[
            "pull",
            &reg.reference("base:latest"),
            &oci_ref(&p, "latest"),
            "--platform",
            &format!("linux/{arch}"),
        ]));
        let (want_manifest, want, _) = base_image(arch);
        let (manifest, digest, config) = read_layout(&p, "latest");
        assert_eq!(digest, want, "{arch} manifest digest");
        assert_eq!(config["architecture"].as_str(), Some(arch));
        verify_layout_blobs(&p);
        for d in layer_digests(&want_manifest) {
            assert_eq!(read_blob(&p, &d), read_blob(&fixture_base(), &d), "{d}");
        }
        assert_eq!(manifest, want_manifest);
    }
    // By digest: the manifest itself, no platform needed.
    let (_, arm64, _) = base_image("arm64");
    let d = sb.work().join("by-digest");
    sb.ok(&strings(&[
        "pull",
        &reg.reference(&format!("base@{arm64}")),
        &oci_ref(&d, "latest"),
    ]));
    assert_eq!(read_layout(&d, "latest").1, arm64);
    verify_layout_blobs(&d);
}

#[test]
fn pull_with_token_auth() {
    let reg = Registry::token(USER, PASSWORD);
    seed_base(&reg);
    let sb = Sandbox::new(secrets());
    reg.write_docker_config(&sb.docker_dir());
    let p = sb.work().join("p");
    sb.ok(&with_flags(
        strings(&[
            "pull",
            &reg.reference("base:latest"),
            &oci_ref(&p, "latest"),
            "--platform",
            "linux/arm64",
        ]),
        &reg,
    ));
    assert_eq!(read_layout(&p, "latest").1, base_image("arm64").1);
    verify_layout_blobs(&p);
}

#[test]
fn second_pull_comes_from_the_cache() {
    let reg = Registry::plain();
    seed_base(&reg);
    let proxy = FaultProxy::new(&reg.host);
    let sb = Sandbox::new(secrets());
    let pull = |name: &str| -> PathBuf {
        let p = sb.work().join(name);
        sb.ok(&strings(&[
            "pull",
            &proxy.reference("base:latest"),
            &oci_ref(&p, "latest"),
            "--platform",
            "linux/arm64",
        ]));
        assert_eq!(read_layout(&p, "latest").1, base_image("arm64").1);
        verify_layout_blobs(&p);
        p
    };
    pull("first");
    let first_gets = proxy.count("GET", "/blobs/sha256:");
    assert!(
        first_gets >= 3,
        "the first pull should fetch the config and both layers: {:?}",
        proxy.requests()
    );
    assert!(
        sb.cache_files() >= 3,
        "nothing cached under XDG_CACHE_HOME or LAMINA_CACHE_DIR"
    );
    proxy.reset_counts();
    pull("second");
    assert_eq!(
        proxy.count("GET", "/blobs/"),
        0,
        "the second pull fetched blobs again: {:?}",
        proxy.requests()
    );
}

#[test]
fn inspect_registry_image_for_a_platform() {
    let reg = Registry::plain();
    seed_base(&reg);
    let sb = Sandbox::new(secrets());
    let v = parse_json(&sb.ok(&strings(&[
        "inspect",
        &reg.reference("base:latest"),
        "--platform",
        "linux/arm64",
        "--json",
    ])));
    let (manifest, digest, _) = base_image("arm64");
    assert_eq!(v["digest"].as_str(), Some(digest.as_str()), "{v}");
    assert_eq!(v["config"]["digest"], manifest["config"]["digest"], "{v}");
    let layers: Vec<&str> = v["layers"]
        .as_array()
        .unwrap_or_else(|| panic!("no layers in {v}"))
        .iter()
        .map(|l| l["digest"].as_str().expect("layer digest"))
        .collect();
    assert_eq!(layers, layer_digests(&manifest), "{v}");
    assert_eq!(v["imageConfig"]["architecture"].as_str(), Some("arm64"));
}

#[test]
fn registry_base_builds_the_same_image_as_the_local_base() {
    let reg = Registry::plain();
    seed_base(&reg);
    let sb = Sandbox::new(secrets());
    for arch in ["amd64", "arm64"] {
        let platform = format!("linux/{arch}");
        let (local, _) = sb.build_oci(
            &format!("local-{arch}"),
            &strings(&["--platform", &platform]),
        );
        let (remote, layout) = sb.build_oci(
            &format!("remote-{arch}"),
            &strings(&[
                "--platform",
                &platform,
                "--base",
                &reg.reference("base:latest"),
            ]),
        );
        assert_eq!(remote, local, "{platform}: registry base vs oci: base");
        verify_layout_blobs(&layout);
    }
}

// ---------------------------------------------------------------------------------------------
// Authentication
// ---------------------------------------------------------------------------------------------

#[test]
fn token_auth_push_caches_tokens() {
    let reg = Registry::token(USER, PASSWORD);
    let sb = Sandbox::new(secrets());
    reg.write_docker_config(&sb.docker_dir());
    let (digest, layout) = sb.build_oci("out", &[]);
    let out = sb.ok(&with_flags(
        strings(&[
            "push",
            &oci_ref(&layout, "latest"),
            &reg.reference("team/fn:v1"),
        ]),
        &reg,
    ));
    assert_eq!(parse_digest(&out), digest);
    let n = reg.token_count();
    let log = reg.token_log();
    assert!(
        (1..=4).contains(&n),
        "{n} token requests for one push (tokens should be cached per scope): {log:?}"
    );
    assert!(
        log.iter().all(|r| r.status == 200),
        "a token request failed: {log:?}"
    );
    assert!(
        log.iter().any(|r| r.user.as_deref() == Some(USER)
            && r.scopes
                .iter()
                .any(|s| s.starts_with("repository:team/fn:") && s.contains("push"))),
        "no authenticated push scope for team/fn: {log:?}"
    );
    assert_eq!(reg.manifest_digest("team/fn:v1"), digest);
    let (_, back, _) = read_back(&reg, "team/fn:v1", &sb.work().join("back"));
    assert_eq!(back, digest);
}

#[test]
fn token_auth_wrong_password_fails_without_printing_it() {
    let reg = Registry::token(USER, PASSWORD);
    let sb = Sandbox::new(secrets());
    write_docker_auths(
        &sb.docker_dir(),
        &[(
            &reg.host,
            &base64(format!("{USER}:{WRONG_PASSWORD}").as_bytes()),
        )],
    );
    let (_, layout) = sb.build_oci("out", &[]);
    for json in [false, true] {
        let mut a = with_flags(
            strings(&["push", &oci_ref(&layout, "latest"), &reg.reference("fn:v1")]),
            &reg,
        );
        if json {
            a.push("--json".into());
        }
        sb.fail(&a); // fail() also checks that no password is printed
    }
    assert!(!registry_has(&reg, "fn:v1"), "something was pushed");
    assert!(
        reg.token_log().iter().any(|r| r.status == 401),
        "lamina never presented the (wrong) credentials: {:?}",
        reg.token_log()
    );
}

#[test]
fn token_auth_anonymous_push_fails_clearly() {
    let reg = Registry::token(USER, PASSWORD);
    let sb = Sandbox::new(secrets());
    let (_, layout) = sb.build_oci("out", &[]);
    let out = sb.fail(&with_flags(
        strings(&["push", &oci_ref(&layout, "latest"), &reg.reference("fn:v1")]),
        &reg,
    ));
    let err = stderr_of(&out).to_lowercase();
    assert!(
        [
            "auth",
            "denied",
            "401",
            "credential",
            "login",
            "unauthorized"
        ]
        .iter()
        .any(|w| err.contains(w)),
        "the error should say access was refused:\n{}",
        describe(&out)
    );
    assert!(!registry_has(&reg, "fn:v1"), "something was pushed");
}

#[test]
fn login_writes_docker_config_that_push_then_uses() {
    let reg = Registry::tls_basic(USER, PASSWORD);
    let sb = Sandbox::new(secrets());
    // An existing config with another registry: login keeps it.
    write_docker_auths(
        &sb.docker_dir(),
        &[("other.example.invalid", "b3RoZXI6eA==")],
    );
    let out = sb.run(
        &with_flags(
            strings(&["login", &reg.host, "-u", USER, "--password-stdin"]),
            &reg,
        ),
        Some(format!("{PASSWORD}\n").as_bytes()),
    );
    assert!(out.status.success(), "login failed:\n{}", describe(&out));
    let config = read_json(&sb.docker_config());
    assert_eq!(
        config["auths"][&reg.host]["auth"].as_str(),
        reg.auth_b64().as_deref(),
        "config.json after login: {config}"
    );
    assert_eq!(
        config["auths"]["other.example.invalid"]["auth"].as_str(),
        Some("b3RoZXI6eA=="),
        "login dropped another registry's entry: {config}"
    );
    // The stored credentials work.
    let out = sb.ok(&with_flags(
        strings(&[
            "build",
            "-f",
            path_str(&fixture_spec()),
            "--to",
            &reg.reference("fn:v1"),
        ]),
        &reg,
    ));
    assert_eq!(reg.manifest_digest("fn:v1"), parse_digest(&out));
}

#[test]
fn login_with_a_wrong_password_fails_and_writes_nothing() {
    let reg = Registry::tls_basic(USER, PASSWORD);
    let sb = Sandbox::new(secrets());
    let login = |stdin: &str| {
        let out = sb.run(
            &with_flags(
                strings(&["login", &reg.host, "-u", USER, "--password-stdin"]),
                &reg,
            ),
            Some(stdin.as_bytes()),
        );
        assert!(
            !out.status.success(),
            "login with a wrong password succeeded:\n{}",
            describe(&out)
        );
        assert!(!stderr_of(&out).trim().is_empty(), "{}", describe(&out));
    };
    login(&format!("{WRONG_PASSWORD}\n"));
    assert!(
        !sb.docker_config().exists(),
        "a failed login wrote {}",
        sb.docker_config().display()
    );
    // With a config already there, it stays byte for byte.
    write_docker_auths(
        &sb.docker_dir(),
        &[("other.example.invalid", "b3RoZXI6eA==")],
    );
    let before = fs::read(sb.docker_config()).unwrap();
    login(&format!("{WRONG_PASSWORD}\n"));
    assert_eq!(fs::read(sb.docker_config()).unwrap(), before);
}

#[test]
fn login_to_a_token_registry() {
    let reg = Registry::token(USER, PASSWORD);
    let sb = Sandbox::new(secrets());
    let args = with_flags(
        strings(&["login", &reg.host, "-u", USER, "--password-stdin"]),
        &reg,
    );
    let bad = sb.run(&args, Some(format!("{WRONG_PASSWORD}\n").as_bytes()));
    assert!(!bad.status.success(), "{}", describe(&bad));
    assert!(!sb.docker_config().exists());
    let good = sb.run(&args, Some(format!("{PASSWORD}\n").as_bytes()));
    assert!(good.status.success(), "{}", describe(&good));
    let config = read_json(&sb.docker_config());
    assert_eq!(
        config["auths"][&reg.host]["auth"].as_str(),
        reg.auth_b64().as_deref(),
        "{config}"
    );
}

#[test]
fn credentials_are_never_printed() {
    let reg = Registry::tls_basic(USER, PASSWORD);
    let sb = Sandbox::new(secrets());
    let (_, layout) = sb.build_oci("out", &[]);
    let src = oci_ref(&layout, "latest");
    reg.write_docker_config(&sb.docker_dir());
    for (i, json) in [false, true].into_iter().enumerate() {
        let mut a = with_flags(
            strings(&["push", &src, &reg.reference(&format!("fn:v{i}"))]),
            &reg,
        );
        if json {
            a.push("--json".into());
        }
        sb.ok(&a);
        let mut inspect = with_flags(strings(&["inspect", &reg.reference("fn:v0")]), &reg);
        if json {
            inspect.push("--json".into());
        }
        sb.ok(&inspect);
    }
    // Failures (bad credentials) do not print them either.
    write_docker_auths(
        &sb.docker_dir(),
        &[(
            &reg.host,
            &base64(format!("{USER}:{WRONG_PASSWORD}").as_bytes()),
        )],
    );
    for json in [false, true] {
        let mut a = with_flags(strings(&["push", &src, &reg.reference("fn:bad")]), &reg);
        if json {
            a.push("--json".into());
        }
        sb.fail(&a);
    }
    let out = sb.run(
        &with_flags(
            strings(&["login", &reg.host, "-u", USER, "--password-stdin"]),
            &reg,
        ),
        Some(WRONG_PASSWORD.as_bytes()),
    );
    assert!(!out.status.success(), "{}", describe(&out));
}

// ---------------------------------------------------------------------------------------------
// Cross-repository mounts
// ---------------------------------------------------------------------------------------------

fn check_mount(reg: &Registry) {
    seed_base(reg);
    let sb = Sandbox::new(secrets());
    if reg.user.is_some() {
        reg.write_docker_config(&sb.docker_dir());
    }
    let dest = reg.reference("other/fn:v1");
    let v = parse_json(&sb.ok(&with_flags(
        strings(&[
            "build",
            "-f",
            path_str(&fixture_spec()),
            "--base",
            &reg.reference("base:latest"),
            "--to",
            &dest,
            "--json",
        ]),
        reg,
    )));
    let digest = v["digest"].as_str().expect("digest").to_owned();
    let (local, _) = sb.build_oci("local", &[]);
    assert_eq!(digest, local, "registry base vs local base");
    let (base_manifest, _, _) = base_image("amd64");
    let base_layers: BTreeSet<String> = layer_digests(&base_manifest).into_iter().collect();
    let fates = blob_fates(&v);
    for d in &base_layers {
        let fate = fates.get(d).map(|f| f.1.as_str());
        assert_eq!(fate, Some("mounted"), "base layer {d}: {v}");
    }
    for (d, (_, fate)) in &fates {
        if !base_layers.contains(d) {
            assert_eq!(fate, "pushed", "new blob {d}: {v}");
        }
    }
    assert_eq!(reg.manifest_digest("other/fn:v1"), digest);
    let (_, back, _) = read_back(reg, "other/fn:v1", &sb.work().join("back"));
    assert_eq!(back, digest);
}

#[test]
fn cross_repository_mount_on_a_plain_registry() {
    check_mount(&Registry::plain());
}

#[test]
fn cross_repository_mount_with_token_auth() {
    check_mount(&Registry::token(USER, PASSWORD));
}

// ---------------------------------------------------------------------------------------------
// Faults
// ---------------------------------------------------------------------------------------------

/// Size of the noise layer: with 5 MiB chunks, three chunks.
const BIG: usize = 12 * 1024 * 1024;

/// `--jobs N` bounds the blob uploads in flight at once, counted at a proxy.
#[test]
fn jobs_bounds_the_uploads_in_flight() {
    let sb = Sandbox::new(secrets());
    // Four layers of incompressible noise, so that their uploads take long enough to overlap.
    let mut extra = Vec::new();
    for i in 0..4u64 {
        let noise = sb.work().join(format!("noise-{i}.bin"));
        write_noise(&noise, 6 * 1024 * 1024, 0x5eed + i);
        extra.push("--layer".to_owned());
        extra.push(format!("{}:/data/{i}.bin", noise.display()));
    }
    let (digest, layout) = sb.build_oci("many", &extra);
    let src = oci_ref(&layout, "latest");
    let mut most = Vec::new();
    for jobs in ["1", "4"] {
        let reg = Registry::plain();
        let proxy = FaultProxy::new(&reg.host);
        let dest = proxy.reference("fn:jobs");
        let out = sb.ok(&strings(&["push", &src, &dest, "--jobs", jobs, "-q"]));
        assert_eq!(parse_digest(&out), digest);
        assert_eq!(reg.manifest_digest("fn:jobs"), digest);
        most.push(proxy.max_concurrent_uploads());
    }
    assert_eq!(
        most[0], 1,
        "--jobs 1 uploaded several blobs at once: {most:?}"
    );
    // The measure can see concurrency: with 4 jobs, uploads overlap.
    assert!(most[1] >= 2 && most[1] <= 4, "--jobs 4: {most:?}");
}

#[test]
fn push_retries_503_and_honours_retry_after() {
    let reg = Registry::plain();
    let proxy = FaultProxy::new(&reg.host);
    let sb = Sandbox::new(secrets());
    let (digest, layout) = sb.build_big("big", BIG);
    proxy.fail_503(
        2,
        Match::new(&["POST", "PATCH", "PUT"], "/blobs/uploads"),
        true,
    );
    let out = sb.ok(&strings(&[
        "push",
        &oci_ref(&layout, "latest"),
        &proxy.reference("big:v1"),
        "--chunk-size",
        CHUNK,
    ]));
    assert_eq!(parse_digest(&out), digest);
    assert_eq!(proxy.faults_injected(), 2, "{:?}", proxy.requests());
    // Retry-After: 1 was honoured: nothing was committed less than a second after the last 503.
    let seen = proxy.requests();
    let last_503 = seen
        .iter()
        .filter(|s| s.outcome == "503")
        .map(|s| s.at)
        .max()
        .expect("a 503");
    let manifest_put = seen
        .iter()
        .find(|s| s.method == "PUT" && s.target.contains("/manifests/"))
        .unwrap_or_else(|| panic!("no manifest PUT through the proxy: {seen:?}"));
    assert!(
        manifest_put.at.duration_since(last_503) >= Duration::from_millis(900),
        "the manifest was put {:?} after the last 503 (Retry-After: 1)",
        manifest_put.at.duration_since(last_503)
    );
    assert_eq!(reg.manifest_digest("big:v1"), digest);
    let (_, back, _) = read_back(&reg, "big:v1", &sb.work().join("back"));
    assert_eq!(back, digest);
}

#[test]
fn push_recovers_from_a_connection_cut_mid_blob() {
    let reg = Registry::plain();
    let proxy = FaultProxy::new(&reg.host);
    let sb = Sandbox::new(secrets());
    let (digest, layout) = sb.build_big("big", BIG);
    proxy.cut_after(
        1,
        1024 * 1024,
        Match::new(&["POST", "PATCH", "PUT"], "/blobs/uploads"),
    );
    let args = strings(&[
        "push",
        &oci_ref(&layout, "latest"),
        &proxy.reference("big:v1"),
        "--chunk-size",
        CHUNK,
    ]);
    // One run survives the cut: the upload is retried within the same push.
    let out = sb.ok(&args);
    assert_eq!(
        proxy.faults_injected(),
        1,
        "the cut never happened (no upload body over 1 MiB?): {:?}",
        proxy.requests()
    );
    assert_eq!(parse_digest(&out), digest);
    assert_eq!(reg.manifest_digest("big:v1"), digest);
    // Nothing corrupt in the registry: every blob reads back with its digest and diff_id.
    let (manifest, back, _) = read_back(&reg, "big:v1", &sb.work().join("back"));
    assert_eq!(back, digest);
    let (want, _, _) = read_layout(&layout, "latest");
    assert_eq!(manifest, want);
}

// ---------------------------------------------------------------------------------------------
// Redirects
// ---------------------------------------------------------------------------------------------

#[test]
fn credentials_are_not_sent_to_a_redirected_storage_host() {
    let rr = redirect_registry(USER, PASSWORD);
    rr.registry
        .skopeo_push(&fixture_base_ref(), "fn:latest", true);
    let (storage_before, redirected_before) = (rr.storage_requests(), rr.redirected_gets());
    let sb = Sandbox::new(secrets());
    rr.registry.write_docker_config(&sb.docker_dir());
    let p = sb.work().join("p");
    sb.ok(&with_flags(
        strings(&[
            "pull",
            &rr.reference("fn:latest"),
            &oci_ref(&p, "latest"),
            "--platform",
            "linux/arm64",
        ]),
        &rr.registry,
    ));
    assert_eq!(read_layout(&p, "latest").1, base_image("arm64").1);
    verify_layout_blobs(&p);
    // The registry needs credentials (htpasswd) for every read: the pull proves lamina sent
    // them there.
    assert!(
        rr.redirected_gets() - redirected_before >= 3,
        "blob GETs redirected: {}\n{}",
        rr.redirected_gets() - redirected_before,
        rr.registry.log()
    );
    assert!(rr.storage_requests() - storage_before >= 3);
    assert_eq!(
        rr.storage_with_auth(),
        0,
        "lamina sent an Authorization header to the storage host {}",
        rr.storage_host
    );
}

// ---------------------------------------------------------------------------------------------
// Bad references
// ---------------------------------------------------------------------------------------------

#[test]
fn bad_registry_references_are_rejected() {
    let reg = Registry::plain();
    let sb = Sandbox::new(secrets());
    let (_, layout) = sb.build_oci("out", &[]);
    let src = oci_ref(&layout, "latest");
    for (bad, quoted) in [
        (
            format!("docker://{}/UPPER/case:tag", reg.host),
            "UPPER/case",
        ),
        (format!("docker://{}/fn:bad tag!", reg.host), "bad tag!"),
    ] {
        let out = sb.fail(&strings(&["push", &src, &bad]));
        assert!(
            stderr_of(&out).contains(quoted),
            "the error should quote {quoted:?}:\n{}",
            describe(&out)
        );
        let dest = sb.work().join("never");
        let out = sb.fail(&strings(&["pull", &bad, &oci_ref(&dest, "latest")]));
        assert!(
            stderr_of(&out).contains(quoted),
            "the error should quote {quoted:?}:\n{}",
            describe(&out)
        );
        assert!(!dest.exists(), "a failed pull created {}", dest.display());
    }
    // Nothing reached the registry: it holds no repository at all.
    let repos = reg.dir.join("data/docker/registry/v2/repositories");
    assert!(
        !repos.exists() || list_dir(&repos).is_empty(),
        "repositories appeared in the registry: {:?}",
        list_dir(&repos)
    );
}

#[test]
fn pulling_a_missing_image_fails_naming_it() {
    let reg = Registry::plain();
    seed_base(&reg);
    let sb = Sandbox::new(secrets());
    let dest = sb.work().join("n");
    let out = sb.fail(&strings(&[
        "pull",
        &reg.reference("nope:latest"),
        &oci_ref(&dest, "latest"),
    ]));
    assert!(
        stderr_of(&out).contains("nope"),
        "the error should name the image:\n{}",
        describe(&out)
    );
    assert!(!dest.exists(), "a failed pull created {}", dest.display());
    // A missing tag of an existing repository, too.
    let out = sb.fail(&strings(&[
        "pull",
        &reg.reference("base:nope"),
        &oci_ref(&dest, "latest"),
    ]));
    assert!(stderr_of(&out).contains("nope"), "{}", describe(&out));
    assert!(!dest.exists());
    // Into an existing layout: it stays exactly as it was.
    let (_, existing) = sb.build_oci("existing", &[]);
    let before = tree_snapshot(&existing);
    sb.fail(&strings(&[
        "pull",
        &reg.reference("nope:latest"),
        &oci_ref(&existing, "other"),
    ]));
    assert_eq!(
        tree_snapshot(&existing),
        before,
        "a failed pull changed the layout"
    );
}

// ---------------------------------------------------------------------------------------------
// Trust, retries, credential helpers
// ---------------------------------------------------------------------------------------------

/// An address outside 127.0.0.0/8, on the loopback interface of a test's own network namespace.
const PRIVATE_IP: &str = "10.200.0.1";

/// Run `body` with a plain-HTTP registry whose address is not a loopback one, with traffic
/// that never leaves the machine: as root, in a network namespace of its own at
/// [`PRIVATE_IP`]; otherwise reached at `0.0.0.0`, which Linux delivers to 127.0.0.1.
fn off_loopback(body: impl FnOnce(Registry) + Send) {
    if nix::unistd::geteuid().is_root() {
        in_private_network(PRIVATE_IP, || body(Registry::plain_on(PRIVATE_IP)));
    } else {
        body(Registry::plain_reached_as("0.0.0.0"));
    }
}

/// The README: "Registries on loopback (localhost, 127.0.0.0/8, [::1]) may always use plain
/// HTTP"; any other needs `--insecure-registry`. The registry listens on 10.200.0.1 in a network
/// namespace of the test's own (the traffic never leaves it), which lamina must treat as any
/// network address.
#[test]
fn plain_http_off_loopback_needs_insecure_registry() {
    off_loopback(|reg| {
        let sb = Sandbox::new(secrets());
        let (digest, layout) = sb.build_oci("out", &[]);
        let src = oci_ref(&layout, "latest");
        let dest = reg.reference("fn:latest");
        let retries = ["--retries", "0"];
        let mut push = strings(&["push", &src, &dest]);
        push.extend(strings(&retries));
        let out = sb.fail(&push);
        let err = stderr_of(&out);
        assert!(
            err.contains(&reg.host) && err.contains("--insecure-registry"),
            "the refusal should name {} and --insecure-registry:\n{}",
            reg.host,
            describe(&out)
        );
        let repos = reg.dir.join("data/docker/registry/v2/repositories");
        assert!(
            !repos.exists(),
            "a refused push reached the registry: {:?}",
            list_dir(&repos)
        );
        // So is the same address given as an endpoint (no scheme) for another registry name.
        let mut via = strings(&["push", &src, "docker://registry.example/fn:latest"]);
        via.extend(strings(&retries));
        via.extend(strings(&[
            "--registry-endpoint",
            &format!("registry.example={}", reg.host),
        ]));
        let err = stderr_of(&sb.fail(&via));
        assert!(
            err.contains("registry.example") && err.contains("--insecure-registry"),
            "{err}"
        );
        assert!(!repos.exists(), "a refused push reached the registry");
        // A pull is refused the same way.
        let back = sb.work().join("back");
        let mut pull = strings(&["pull", &dest, &oci_ref(&back, "latest")]);
        pull.extend(strings(&retries));
        assert!(stderr_of(&sb.fail(&pull)).contains("--insecure-registry"));
        assert!(!back.exists(), "a refused pull created {}", back.display());
        // Declared insecure: pushed, and the registry serves the printed digest.
        push.extend(strings(&["--insecure-registry", &reg.host]));
        let out = sb.ok(&push);
        assert_eq!(parse_digest(&out), digest);
        assert_eq!(reg.manifest_digest("fn:latest"), digest);
    });
}

#[test]
fn tls_registry_needs_its_ca_unless_declared_insecure() {
    let reg = Registry::tls_basic(USER, PASSWORD);
    let sb = Sandbox::new(secrets());
    reg.write_docker_config(&sb.docker_dir());
    let (digest, layout) = sb.build_oci("out", &[]);
    let src = oci_ref(&layout, "latest");
    // Untrusted certificate: refused (loopback allows plain HTTP, not unverified TLS).
    sb.fail(&strings(&["push", &src, &reg.reference("fn:untrusted")]));
    assert!(!registry_has(&reg, "fn:untrusted"));
    // --insecure-registry HOST:PORT allows unverified TLS.
    let out = sb.ok(&strings(&[
        "push",
        &src,
        &reg.reference("fn:insecure"),
        "--insecure-registry",
        &reg.host,
    ]));
    assert_eq!(parse_digest(&out), digest);
    assert_eq!(reg.manifest_digest("fn:insecure"), digest);
    // SSL_CERT_FILE is trusted like --ca-cert.
    let ca = reg.ca.clone().expect("CA").into_os_string();
    let out = sb.run_env(
        &strings(&["push", &src, &reg.reference("fn:ssl-cert-file")]),
        None,
        &[("SSL_CERT_FILE", ca)],
    );
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(parse_digest(&out), digest);
    assert_eq!(reg.manifest_digest("fn:ssl-cert-file"), digest);
}

#[test]
fn push_gives_up_after_its_retries() {
    let reg = Registry::plain();
    let proxy = FaultProxy::new(&reg.host);
    let sb = Sandbox::new(secrets());
    let (_, layout) = sb.build_oci("out", &[]);
    let (manifest, _, _) = read_layout(&layout, "latest");
    let blobs = manifest_blobs(&manifest).len();
    proxy.fail_503(usize::MAX, Match::new(&["POST"], "/blobs/uploads"), true);
    let start = Instant::now();
    let out = sb.fail(&strings(&[
        "push",
        &oci_ref(&layout, "latest"),
        &proxy.reference("fn:v1"),
        "--retries",
        "2",
    ]));
    let posts = proxy.count("POST", "/blobs/uploads");
    assert!(
        posts >= 2,
        "lamina did not retry a 503: {:?}",
        proxy.requests()
    );
    assert!(
        posts <= 3 * blobs,
        "{posts} upload starts for {blobs} blobs with --retries 2: {:?}",
        proxy.requests()
    );
    assert!(
        start.elapsed() < Duration::from_secs(120),
        "giving up took {:?}",
        start.elapsed()
    );
    let err = stderr_of(&out).to_lowercase();
    assert!(
        err.contains("503") || err.contains("unavailable"),
        "the error should say what the registry answered:\n{}",
        describe(&out)
    );
    assert!(!registry_has(&reg, "fn:v1"), "a manifest was pushed");
}

#[test]
fn credentials_from_docker_credential_helpers() {
    let reg = Registry::tls_basic(USER, PASSWORD);
    for (i, store) in ["credHelpers", "credsStore"].into_iter().enumerate() {
        let sb = Sandbox::new(secrets());
        let bin = sb.work().join("bin");
        let log = sb.work().join("helper.log");
        install_credential_helper(&bin, "labtest", Some(&reg.host), (USER, PASSWORD), &log);
        let config = if store == "credsStore" {
            serde_json::json!({"auths": {}, "credsStore": "labtest"})
        } else {
            serde_json::json!({"auths": {}, "credHelpers": {reg.host.clone(): "labtest"}})
        };
        write_file(
            &sb.docker_config(),
            serde_json::to_string(&config).unwrap().as_bytes(),
            0o600,
        );
        let mut path = bin.into_os_string();
        path.push(":");
        path.push(std::env::var_os("PATH").unwrap_or_default());
        let (digest, layout) = sb.build_oci("out", &[]);
        let tag = format!("fn:helper{i}");
        let out = sb.run_env(
            &with_flags(
                strings(&["push", &oci_ref(&layout, "latest"), &reg.reference(&tag)]),
                &reg,
            ),
            None,
            &[("PATH", path)],
        );
        assert!(out.status.success(), "{store}: {}", describe(&out));
        assert_eq!(parse_digest(&out), digest);
        assert_eq!(reg.manifest_digest(&tag), digest);
        let calls = fs::read_to_string(&log).unwrap_or_default();
        assert!(
            calls
                .lines()
                .any(|l| l.starts_with("get ") && l.contains(&reg.host)),
            "{store}: the helper was not asked for {}: {calls:?}",
            reg.host
        );
    }
}

/// A manifest `PUT` answered `400 MANIFEST_BLOB_UNKNOWN` although its blobs were uploaded (the
/// distribution registry's race when two pushes upload one blob at once: it rewrites the blob's
/// link in place) is put again, and the image lands; one that keeps being refused is reported
/// after a bounded number of attempts, naming the registry's code, and nothing is tagged.
#[test]
fn a_manifest_refused_for_a_blob_race_is_put_again() {
    let reg = Registry::plain();
    let proxy = FaultProxy::new(&reg.host);
    let sb = Sandbox::new(secrets());
    let (digest, layout) = sb.build_oci("out", &[]);
    let src = oci_ref(&layout, "latest");

    proxy.fail_with_error(
        1,
        400,
        "MANIFEST_BLOB_UNKNOWN",
        Match::new(&["PUT"], "/manifests/race"),
    );
    let out = sb.ok(&strings(&["push", &src, &proxy.reference("fn:race")]));
    assert_eq!(parse_digest(&out), digest);
    assert_eq!(reg.manifest_digest("fn:race"), digest, "the image landed");
    assert_eq!(
        proxy.count("PUT", "/manifests/race"),
        2,
        "refused once, put again"
    );

    proxy.fail_with_error(
        10,
        400,
        "MANIFEST_BLOB_UNKNOWN",
        Match::new(&["PUT"], "/manifests/never"),
    );
    let out = sb.fail(&strings(&["push", &src, &proxy.reference("fn:never")]));
    assert_no_panic(&out);
    let err = stderr_of(&out);
    assert!(err.contains("MANIFEST_BLOB_UNKNOWN"), "{}", describe(&out));
    assert_eq!(
        proxy.count("PUT", "/manifests/never"),
        3,
        "a bounded number of attempts"
    );
    assert!(!registry_has(&reg, "fn:never"));
}
