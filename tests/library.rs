//! lamina as a Rust library: a build, a check, a push and an inspection driven through the
//! public API (no binary), on the caller's own tokio runtime, checked against what the
//! binary, the layout on disk, the registry and skopeo say.

mod common;

use std::path::Path;

use common::*;
use tempfile::TempDir;

fn options(t: &Path) -> lamina::Options {
    // Caches and credentials are passed in: nothing comes from the environment.
    lamina::Options::new(t.join("cache"), t.join("docker"))
}

fn oci(dir: &Path, tag: &str) -> lamina::ImageRef {
    oci_ref(dir, tag).parse().expect("an oci: reference")
}

fn fixture_build_spec(to: lamina::ImageRef) -> lamina::BuildSpec {
    let file = fixture_spec();
    let overrides = lamina::Overrides {
        to: Some(to),
        ..Default::default()
    };
    lamina::BuildSpec::resolve(
        Some((
            &file,
            lamina::read_spec_file(&file).expect("the fixture spec reads"),
        )),
        &overrides,
        &fixtures_dir(),
    )
    .expect("the fixture spec resolves")
}

#[tokio::test(flavor = "multi_thread")]
async fn build_check_push_and_inspect_through_the_library() {
    let t = TempDir::new().unwrap();
    let opts = options(t.path());

    // Build into a layout: the digest is the one the layout's index names, and the one the
    // binary writes for the same spec.
    let layout = t.path().join("lib-build");
    let mut lines = Vec::new();
    let report = lamina::build(
        &fixture_build_spec(oci(&layout, "latest")),
        &opts,
        &mut |l| lines.push(l),
    )
    .await
    .expect("the library builds the fixture");
    let (manifest, digest, config) = read_layout(&layout, "latest");
    assert_eq!(report.digest.to_string(), digest);
    assert_eq!(report.platform, "linux/amd64");
    assert_eq!(config["architecture"], "amd64");
    assert_eq!(report.layers.len(), layer_digests(&manifest).len());
    verify_layout_blobs(&layout);
    let cli = build_fixture(t.path(), "cli-build", &["-q"], &[]);
    assert_eq!(digest, cli.digest, "library and binary give the same image");

    // The Lambda gate passes it.
    let checked = lamina::check(&oci(&layout, "latest"), None, &opts)
        .await
        .expect("check runs");
    assert!(checked.ok, "{:?}", checked.findings);
    assert_eq!(checked.errors().count(), 0);

    // Push it as it is to a registry: same digest there, and skopeo reads it back whole.
    let reg = Registry::plain();
    let dest: lamina::ImageRef = reg.reference("lib/fn:v1").parse().unwrap();
    let pushed = lamina::copy(&oci(&layout, "latest"), &dest, None, &opts, true)
        .await
        .expect("the library pushes");
    assert_eq!(pushed.digest.to_string(), digest);
    assert_eq!(reg.manifest_digest("lib/fn:v1"), digest);
    let back = t.path().join("back");
    reg.skopeo_pull("lib/fn:v1", &oci_ref(&back, "latest"));
    verify_layout_blobs(&back);
    assert_eq!(read_layout(&back, "latest").1, digest);
    let fates = pushed.blobs.expect("a registry push reports its blobs");
    assert!(
        fates.iter().all(|b| b.fate == lamina::Fate::Pushed),
        "{fates:?}"
    );

    // Inspect reads the registry's copy.
    let seen = lamina::inspect(&dest, None, &opts).await.expect("inspect");
    assert_eq!(seen.report.digest.to_string(), digest);
    assert_eq!(seen.manifest, manifest);
}

#[tokio::test(flavor = "current_thread")]
async fn failures_come_back_typed_on_a_current_thread_runtime() {
    let t = TempDir::new().unwrap();
    let opts = options(t.path());
    let missing = oci(&t.path().join("missing"), "latest");
    let err = lamina::inspect(&missing, None, &opts)
        .await
        .expect_err("no such layout");
    assert_eq!(err.kind(), lamina::ErrorKind::Image, "{err}");
    assert!(err.to_string().contains("missing"), "{err}");

    let bad = "oci:".parse::<lamina::ImageRef>();
    assert!(bad.is_err());
    let err = lamina::flags::layer("no-colon", t.path()).expect_err("SOURCE:DEST");
    assert_eq!(err.kind(), lamina::ErrorKind::Usage, "{err}");
}
