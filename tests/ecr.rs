//! lamina against Amazon ECR stand-ins: moto (`moto_server`) answers the ECR API
//! (GetAuthorizationToken, DescribeRepositories, CreateRepository) and a CNCF distribution
//! registry (`docker-registry`, TLS + htpasswd with moto's `AWS` password) is the registry data
//! plane, reached through `--registry-endpoint`. The image references name the real-looking ECR
//! host `123456789012.dkr.ecr.us-east-1.amazonaws.com`, so lamina takes its ECR paths.
//! Counting [`FaultProxy`]s stand in front of the registry (PATCHes per upload session) and of
//! the ECR API (`X-Amz-Target` per call); the token tests answer GetAuthorizationToken with an
//! expiry of their choosing ([`TokenApi`]), since moto's says its tokens expired in 2015.
//!
//! Every test starts its own moto and registry on 127.0.0.1 and runs lamina with `HOME`,
//! `DOCKER_CONFIG`, `XDG_CACHE_HOME`, `LAMINA_CACHE_DIR`, `AWS_CONFIG_FILE` and
//! `AWS_SHARED_CREDENTIALS_FILE` inside a temporary directory, with every inherited `AWS_*`
//! variable removed, so the real home and the real AWS account are never touched.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// moto's default account, which the ECR host below names.
const ACCOUNT: &str = "123456789012";
const REGION: &str = "us-east-1";
const ECR_HOST: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";

/// AWS credentials given to lamina. moto accepts any; these are distinctive so that finding the
/// secret in lamina's output means it leaked.
const AWS_KEY_ID: &str = "AKIALAMINATEST000001";
const AWS_SECRET: &str = "aws-Sk3tchY-lamina-secret-9QzW";

/// The password a credential helper answers in the `credHelpers` test (not moto's token).
const HELPER_PASSWORD: &str = "helper-Vb6pL0wE-secret";

// ---------------------------------------------------------------------------------------------
// Peers: moto as the ECR API
// ---------------------------------------------------------------------------------------------

/// moto as the ECR API: the harness `tests/deploy.rs` and the CI recipes use too.
type Moto = MotoServer;

/// moto and a TLS + htpasswd registry that accepts moto's ECR password.
struct Ecr {
    moto: Moto,
    reg: Registry,
    user: String,
    password: String,
}

impl Ecr {
    fn start() -> Ecr {
        let moto = Moto::start();
        let (user, password) = moto.registry_credentials();
        assert_eq!(user, "AWS", "moto's ECR token user");
        let reg = Registry::tls_basic(&user, &password);
        Ecr {
            moto,
            reg,
            user,
            password,
        }
    }

    /// A [`Sandbox`] with AWS settings for this moto: static keys, us-east-1,
    /// `AWS_ENDPOINT_URL`, no IMDS, empty shared config and credentials files in the sandbox.
    fn sandbox(&self) -> Sandbox {
        let mut sb = Sandbox::new(vec![
            AWS_SECRET.to_owned(),
            self.password.clone(),
            base64(format!("{}:{}", self.user, self.password).as_bytes()),
            HELPER_PASSWORD.to_owned(),
            base64(format!("AWS:{HELPER_PASSWORD}").as_bytes()),
        ]);
        aws_env(&mut sb, &self.moto.endpoint(), REGION);
        sb.set("AWS_DEFAULT_REGION", REGION);
        sb
    }
}

/// `docker://123456789012.dkr.ecr.us-east-1.amazonaws.com/REPO_TAG`
fn ecr_ref(repo_tag: &str) -> String {
    format!("docker://{ECR_HOST}/{repo_tag}")
}

/// `--registry-endpoint URL [--ca-cert CA]` reaching `reg` for every ECR registry.
fn endpoint_flags(reg: &Registry) -> Vec<String> {
    let scheme = if reg.is_tls() { "https" } else { "http" };
    let mut v = vec![
        "--registry-endpoint".to_owned(),
        format!("{scheme}://{}", reg.host),
    ];
    v.extend(reg.lamina_flags());
    v
}

// ---------------------------------------------------------------------------------------------
// Running lamina
// ---------------------------------------------------------------------------------------------

fn cat(a: &[String], b: &[&str]) -> Vec<String> {
    let mut v = a.to_vec();
    v.extend(b.iter().map(|s| (*s).to_owned()));
    v
}

/// stderr holds none of the lines `build` logs once it has started building (the base read,
/// the layers written).
fn assert_not_built(out: &Output) {
    let err = stderr_of(out);
    assert!(
        !err.lines()
            .any(|l| l.starts_with("base ") || l.starts_with("layer ") || l.starts_with("wrote ")),
        "lamina started building before noticing the destination cannot take the image:\n{}",
        describe(out)
    );
}

/// A docker credential helper `docker-credential-NAME` in the sandbox's `bin` answering
/// `AWS`/`password`; it appends each invocation (`ACTION SERVER`) to `bin/NAME.calls`.
fn install_helper(sb: &Sandbox, name: &str, password: &str) -> PathBuf {
    let bin = sb.root().join("bin");
    let calls = bin.join(format!("{name}.calls"));
    install_credential_helper(&bin, name, None, ("AWS", password), &calls);
    calls
}

// ---------------------------------------------------------------------------------------------
// The harness itself
// ---------------------------------------------------------------------------------------------

/// The peers: moto hands out the `AWS` registry password and keeps repositories; the registry
/// takes that password and no other.
#[test]
fn harness_moto_and_registry_with_the_ecr_password() {
    let ecr = Ecr::start();
    assert!(
        ecr.password.contains(ACCOUNT),
        "moto's ECR password should name the account {ACCOUNT}: {}",
        ecr.password
    );
    assert!(ecr.moto.ecr_repositories().is_empty());
    ecr.moto.create_repository("harness/x");
    assert!(ecr.moto.ecr_repositories().contains_key("harness/x"));
    // The registry takes the ECR password, and rejects anything else.
    ecr.reg
        .skopeo_push(&fixture_base_ref(), "harness/x:latest", true);
    assert!(registry_has(&ecr.reg, "harness/x:latest"));
    let cert_dir = ecr.reg.cert_dir.as_ref().expect("TLS registry");
    let args = strings(&[
        "inspect",
        "--raw",
        "--cert-dir",
        path_str(cert_dir),
        "--creds",
        "AWS:not-the-password",
        &ecr.reg.reference("harness/x:latest"),
    ]);
    assert!(!skopeo(&args).status.success(), "wrong password accepted");
}

// ---------------------------------------------------------------------------------------------
// build and push
// ---------------------------------------------------------------------------------------------

/// `build --to docker://ECR/... --create-repo`: the repository is created (with ECR's defaults),
/// the image lands in the registry with the digest lamina printed, the same as an `oci:` build.
#[test]
fn build_to_ecr_creates_the_repository_and_pushes() {
    let ecr = Ecr::start();
    let sb = ecr.sandbox();
    assert!(!ecr.moto.ecr_repositories().contains_key("team/fn"));
    let out = sb.ok(&Sandbox::build_args(
        &ecr_ref("team/fn:v1"),
        &cat(&endpoint_flags(&ecr.reg), &["--create-repo"]),
    ));
    let digest = parse_digest(&out);
    assert_eq!(
        ecr.reg.manifest_digest("team/fn:v1"),
        digest,
        "sha256 of the manifest the registry serves"
    );
    let (local, layout) = sb.build_oci("local", &[]);
    assert_eq!(local, digest, "ECR build and oci: build differ");
    assert_eq!(
        ecr.reg.raw_manifest("team/fn:v1"),
        manifest_bytes(&layout, "latest"),
        "manifest bytes in the registry vs the layout"
    );

    // The repository was created, with ECR's defaults.
    let repos = ecr.moto.ecr_repositories();
    let repo = repos
        .get("team/fn")
        .unwrap_or_else(|| panic!("moto has no team/fn after --create-repo: {repos:?}"));
    assert_eq!(repo["registryId"].as_str(), Some(ACCOUNT), "{repo}");
    assert_eq!(
        repo["imageTagMutability"].as_str(),
        Some("MUTABLE"),
        "{repo}"
    );
    assert_eq!(
        repo["imageScanningConfiguration"]["scanOnPush"].as_bool(),
        Some(false),
        "{repo}"
    );
    assert_eq!(repos.len(), 1, "only team/fn should exist: {repos:?}");

    // What the registry holds unpacks to the function.
    let copy = sb.work().join("copy");
    ecr.reg.skopeo_pull("team/fn:v1", &oci_ref(&copy, "latest"));
    verify_layout_blobs(&copy);
    let (_, copy_digest, config) = read_layout(&copy, "latest");
    assert_eq!(copy_digest, digest);
    assert_eq!(config["architecture"].as_str(), Some("amd64"));
    let u = umoci_unpack(&copy, "latest");
    assert_eq!(
        tree_snapshot(&u.rootfs.join("var/task")),
        expected_function_tree()
    );

    // --create-repo on an existing repository is fine; the same image again, same digest.
    let out = sb.ok(&Sandbox::build_args(
        &ecr_ref("team/fn:v1"),
        &cat(&endpoint_flags(&ecr.reg), &["--create-repo"]),
    ));
    assert_eq!(parse_digest(&out), digest);
    assert_eq!(ecr.moto.ecr_repositories().len(), 1);
}

/// A missing repository without `--create-repo`: `build` and `push` fail naming the repository
/// and the flag, before any build work, and nothing reaches the registry or ECR.
#[test]
fn missing_repository_without_create_repo_fails_before_building() {
    let ecr = Ecr::start();
    let sb = ecr.sandbox();
    let check = |out: &Output| {
        let err = stderr_of(out);
        assert!(
            err.contains("team/missing") && err.contains("--create-repo"),
            "the error should name the repository and --create-repo:\n{}",
            describe(out)
        );
    };
    let out = sb.fail(&Sandbox::build_args(
        &ecr_ref("team/missing:v1"),
        &endpoint_flags(&ecr.reg),
    ));
    check(&out);
    assert_not_built(&out);
    assert!(
        out.stdout.is_empty(),
        "a failed build printed a result:\n{}",
        describe(&out)
    );
    // --json too.
    let out = sb.fail(&Sandbox::build_args(
        &ecr_ref("team/missing:v1"),
        &cat(&endpoint_flags(&ecr.reg), &["--json"]),
    ));
    check(&out);
    assert_not_built(&out);

    // push of an existing image, likewise.
    let (_, layout) = sb.build_oci("out", &[]);
    let out = sb.fail(&cat(
        &strings(&[
            "push",
            &oci_ref(&layout, "latest"),
            &ecr_ref("team/missing:v1"),
        ]),
        &endpoint_flags(&ecr.reg)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    ));
    check(&out);

    // Nothing reached the registry or ECR.
    assert!(!registry_has(&ecr.reg, "team/missing:v1"));
    assert!(
        !ecr.reg.repo_dir("team/missing").exists(),
        "the registry has storage for team/missing"
    );
    assert_eq!(ecr.reg.blob_count(), 0, "blobs were uploaded");
    assert!(
        ecr.moto.ecr_repositories().is_empty(),
        "a repository was created without --create-repo"
    );
}

/// Pushing the same image twice: every blob `pushed`, then every blob `skipped`.
#[test]
fn second_push_skips_every_blob() {
    let ecr = Ecr::start();
    let sb = ecr.sandbox();
    let (digest, layout) = sb.build_oci("out", &[]);
    let (manifest, _, _) = read_layout(&layout, "latest");
    let expected = manifest_blobs(&manifest);
    let src = oci_ref(&layout, "latest");
    let dest = ecr_ref("team/fn:v1");
    // The REGISTRY=URL form of --registry-endpoint.
    let mut flags = vec![
        "--registry-endpoint".to_owned(),
        format!("{ECR_HOST}=https://{}", ecr.reg.host),
    ];
    flags.extend(ecr.reg.lamina_flags());

    let push = |round: &str, extra: &[&str]| -> Value {
        let mut a = cat(&strings(&["push", &src, &dest, "--json"]), extra);
        a.extend(flags.iter().cloned());
        let v = parse_json(&sb.ok(&a));
        assert_eq!(v["reference"].as_str(), Some(dest.as_str()), "{round}: {v}");
        assert_eq!(v["digest"].as_str(), Some(digest.as_str()), "{round}: {v}");
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

    let first = push("first push", &["--create-repo"]);
    for (d, (_, fate)) in blob_fates(&first) {
        assert_eq!(fate, "pushed", "first push of {d}: {first}");
    }
    assert_eq!(ecr.reg.manifest_digest("team/fn:v1"), digest);
    // The repository exists now: no --create-repo needed.
    let second = push("second push", &[]);
    for (d, (_, fate)) in blob_fates(&second) {
        assert_eq!(fate, "skipped", "second push of {d}: {second}");
    }
    assert_eq!(ecr.reg.manifest_digest("team/fn:v1"), digest);
    assert_eq!(
        ecr.moto.ecr_repositories().keys().collect::<Vec<_>>(),
        vec!["team/fn"]
    );
}

/// `--tag-mutability IMMUTABLE --scan-on-push` reach CreateRepository.
#[test]
fn created_repository_gets_tag_mutability_and_scan_on_push() {
    let ecr = Ecr::start();
    let sb = ecr.sandbox();
    let out = sb.ok(&Sandbox::build_args(
        &ecr_ref("team/locked:v1"),
        &cat(
            &endpoint_flags(&ecr.reg),
            &[
                "--create-repo",
                "--tag-mutability",
                "IMMUTABLE",
                "--scan-on-push",
            ],
        ),
    ));
    let digest = parse_digest(&out);
    assert_eq!(ecr.reg.manifest_digest("team/locked:v1"), digest);
    let repos = ecr.moto.ecr_repositories();
    let repo = repos
        .get("team/locked")
        .unwrap_or_else(|| panic!("moto has no team/locked: {repos:?}"));
    assert_eq!(
        repo["imageTagMutability"].as_str(),
        Some("IMMUTABLE"),
        "{repo}"
    );
    assert_eq!(
        repo["imageScanningConfiguration"]["scanOnPush"].as_bool(),
        Some(true),
        "{repo}"
    );

    // An invalid mutability is refused before anything happens.
    let out = sb.fail(&Sandbox::build_args(
        &ecr_ref("team/other:v1"),
        &cat(
            &endpoint_flags(&ecr.reg),
            &["--create-repo", "--tag-mutability", "SOMETIMES"],
        ),
    ));
    assert!(stderr_of(&out).contains("SOMETIMES"), "{}", describe(&out));
    assert!(!ecr.moto.ecr_repositories().contains_key("team/other"));
}

// ---------------------------------------------------------------------------------------------
// Credentials
// ---------------------------------------------------------------------------------------------

/// The ECR API does not answer: a clear GetAuthorizationToken error, no panic, no secret.
#[test]
fn unreachable_ecr_api_fails_clearly() {
    let ecr = Ecr::start();
    let mut sb = ecr.sandbox();
    let dead = free_port();
    sb.set("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{dead}"));
    let start = Instant::now();
    let out = sb.fail(&Sandbox::build_args(
        &ecr_ref("team/fn:v1"),
        &cat(&endpoint_flags(&ecr.reg), &["--create-repo"]),
    ));
    let err = stderr_of(&out);
    assert!(
        err.contains("ECR") && err.contains("GetAuthorizationToken"),
        "the error should say the ECR GetAuthorizationToken call failed:\n{}",
        describe(&out)
    );
    assert_not_built(&out);
    assert!(
        start.elapsed() < Duration::from_secs(120),
        "giving up on a refused connection took {:?}",
        start.elapsed()
    );
    assert_eq!(ecr.reg.blob_count(), 0);
    assert!(!registry_has(&ecr.reg, "team/fn:v1"));
}

/// No AWS credentials anywhere in the chain: a clear error that says so.
#[test]
fn missing_aws_credentials_fail_clearly() {
    let ecr = Ecr::start();
    let mut sb = ecr.sandbox();
    sb.unset("AWS_ACCESS_KEY_ID");
    sb.unset("AWS_SECRET_ACCESS_KEY");
    let out = sb.fail(&Sandbox::build_args(
        &ecr_ref("team/fn:v1"),
        &cat(&endpoint_flags(&ecr.reg), &["--create-repo"]),
    ));
    let err = stderr_of(&out);
    assert!(
        err.contains("ECR") && err.contains("GetAuthorizationToken"),
        "the error should say the ECR GetAuthorizationToken call failed:\n{}",
        describe(&out)
    );
    assert!(
        err.to_lowercase().contains("credentials"),
        "the error should mention the missing credentials:\n{}",
        describe(&out)
    );
    assert_not_built(&out);
    assert!(ecr.moto.ecr_repositories().is_empty());
    assert_eq!(ecr.reg.blob_count(), 0);
}

/// `credHelpers` naming a helper for the ECR host wins over GetAuthorizationToken for the
/// registry password; the repository still comes from the ECR API.
#[test]
fn cred_helper_for_the_ecr_host_takes_precedence() {
    let moto = Moto::start();
    let (user, moto_password) = moto.registry_credentials();
    // The registry takes only the helper's password: a push that used GetAuthorizationToken
    // (moto's password) would be refused.
    assert_ne!(moto_password, HELPER_PASSWORD);
    let ecr = Ecr {
        reg: Registry::tls_basic(&user, HELPER_PASSWORD),
        moto,
        user,
        password: moto_password,
    };
    let sb = ecr.sandbox();
    let calls = install_helper(&sb, "fake", HELPER_PASSWORD);
    fs::write(
        sb.docker_dir().join("config.json"),
        serde_json::to_vec_pretty(&serde_json::json!({
            "credHelpers": { ECR_HOST: "fake" }
        }))
        .unwrap(),
    )
    .expect("write config.json");

    let out = sb.ok(&Sandbox::build_args(
        &ecr_ref("team/fn:v1"),
        &cat(&endpoint_flags(&ecr.reg), &["--create-repo"]),
    ));
    let digest = parse_digest(&out);
    assert_eq!(ecr.reg.manifest_digest("team/fn:v1"), digest);
    let log = fs::read_to_string(&calls).unwrap_or_default();
    assert!(
        !log.trim().is_empty(),
        "docker-credential-fake was never called:\n{}",
        describe(&out)
    );
    for line in log.lines() {
        assert_eq!(
            line,
            format!("get {ECR_HOST}"),
            "the helper should be asked `get` for the ECR host: {log}"
        );
    }
    // The repository still comes from the ECR API (moto).
    assert!(ecr.moto.ecr_repositories().contains_key("team/fn"));

    // Control: without the helper, lamina uses GetAuthorizationToken, whose password this
    // registry refuses.
    fs::remove_file(sb.docker_dir().join("config.json")).expect("rm config.json");
    let out = sb.fail(&Sandbox::build_args(
        &ecr_ref("team/fn:v2"),
        &endpoint_flags(&ecr.reg),
    ));
    assert!(!registry_has(&ecr.reg, "team/fn:v2"), "{}", describe(&out));
}

/// A registry password the registry refuses (ECR answers with a Basic challenge) is noticed by
/// the preflight, before any build work.
#[test]
fn wrong_registry_password_fails_before_building() {
    let ecr = Ecr::start();
    let sb = ecr.sandbox();
    ecr.moto.create_repository("team/fn");
    install_helper(&sb, "wrong", HELPER_PASSWORD);
    fs::write(
        sb.docker_dir().join("config.json"),
        serde_json::to_vec_pretty(&serde_json::json!({
            "credHelpers": { ECR_HOST: "wrong" }
        }))
        .unwrap(),
    )
    .expect("write config.json");
    let out = sb.fail(&Sandbox::build_args(
        &ecr_ref("team/fn:v1"),
        &endpoint_flags(&ecr.reg),
    ));
    let err = stderr_of(&out);
    assert!(
        err.contains(ECR_HOST) && err.contains("401"),
        "the error should name the registry and its refusal:\n{}",
        describe(&out)
    );
    assert_eq!(ecr.reg.blob_count(), 0, "blobs were uploaded");
    assert!(!registry_has(&ecr.reg, "team/fn:v1"));
    // The credentials are checked with the other preflight checks, before any build work.
    assert_not_built(&out);
}

/// `AWS_ENDPOINT_URL_ECR` without `AWS_ENDPOINT_URL` points the ECR API at moto.
#[test]
fn ecr_endpoint_variable_alone_is_enough() {
    let ecr = Ecr::start();
    let mut sb = ecr.sandbox();
    sb.unset("AWS_ENDPOINT_URL");
    sb.set("AWS_ENDPOINT_URL_ECR", ecr.moto.endpoint());
    let out = sb.ok(&Sandbox::build_args(
        &ecr_ref("team/fn:v1"),
        &cat(&endpoint_flags(&ecr.reg), &["--create-repo"]),
    ));
    let digest = parse_digest(&out);
    assert_eq!(ecr.reg.manifest_digest("team/fn:v1"), digest);
    assert!(ecr.moto.ecr_repositories().contains_key("team/fn"));
}

/// Credentials from a shared-config profile: `--profile ci`, and `AWS_PROFILE=ci`.
#[test]
fn shared_config_profile_is_used() {
    let ecr = Ecr::start();
    let mut sb = ecr.sandbox();
    sb.unset("AWS_ACCESS_KEY_ID");
    sb.unset("AWS_SECRET_ACCESS_KEY");
    sb.unset("AWS_REGION");
    sb.unset("AWS_DEFAULT_REGION");
    fs::write(
        sb.root().join("aws/config"),
        "[profile ci]\nregion = us-east-1\n",
    )
    .expect("write aws/config");
    fs::write(
        sb.root().join("aws/credentials"),
        format!("[ci]\naws_access_key_id = {AWS_KEY_ID}\naws_secret_access_key = {AWS_SECRET}\n"),
    )
    .expect("write aws/credentials");
    let args = Sandbox::build_args(
        &ecr_ref("team/fn:v1"),
        &cat(&endpoint_flags(&ecr.reg), &["--create-repo"]),
    );

    // Control: the default profile has no credentials.
    let out = sb.fail(&args);
    assert_not_built(&out);
    assert!(ecr.moto.ecr_repositories().is_empty());

    let out = sb.ok(&cat(&args, &["--profile", "ci"]));
    let digest = parse_digest(&out);
    assert_eq!(ecr.reg.manifest_digest("team/fn:v1"), digest);
    assert!(ecr.moto.ecr_repositories().contains_key("team/fn"));

    // AWS_PROFILE picks it too.
    sb.set("AWS_PROFILE", "ci");
    let out = sb.ok(&args);
    assert_eq!(parse_digest(&out), digest);
}

/// `--registry-endpoint http://...`: build, inspect and pull through a plain-HTTP data plane.
#[test]
fn registry_endpoint_over_plain_http() {
    let moto = Moto::start();
    let (user, password) = moto.registry_credentials();
    let ecr = Ecr {
        reg: Registry::plain(),
        moto,
        user,
        password,
    };
    let sb = ecr.sandbox();
    let out = sb.ok(&Sandbox::build_args(
        &ecr_ref("team/fn:v1"),
        &cat(&endpoint_flags(&ecr.reg), &["--create-repo", "--json"]),
    ));
    let v = parse_json(&out);
    let digest = v["digest"].as_str().expect("digest").to_owned();
    assert_eq!(
        v["reference"].as_str(),
        Some(ecr_ref("team/fn:v1").as_str()),
        "{v}"
    );
    assert_eq!(ecr.reg.manifest_digest("team/fn:v1"), digest);
    for (d, (_, fate)) in blob_fates(&v) {
        assert_eq!(fate, "pushed", "{d}: {v}");
    }
    // inspect and pull through the same endpoint.
    let out = sb.ok(&cat(
        &strings(&["inspect", &ecr_ref("team/fn:v1"), "--json"]),
        &endpoint_flags(&ecr.reg)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    ));
    assert_eq!(parse_json(&out)["digest"].as_str(), Some(digest.as_str()));
    let back = sb.work().join("back");
    let out = sb.ok(&cat(
        &strings(&["pull", &ecr_ref("team/fn:v1"), &oci_ref(&back, "latest")]),
        &endpoint_flags(&ecr.reg)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    ));
    assert_eq!(parse_digest(&out), digest);
    verify_layout_blobs(&back);
}

// ---------------------------------------------------------------------------------------------
// What the README promises about ECR: one PATCH per blob, one token per command
// ---------------------------------------------------------------------------------------------

/// 5 MiB, the smallest `--chunk-size`.
const CHUNK: u64 = 5 << 20;

/// The noise layer of the big image: more than two chunks once compressed (noise does not
/// shrink).
const BIG: usize = 12 << 20;

/// PATCH requests per committed blob, from what `proxy` saw: each upload session (the id in
/// `/blobs/uploads/ID`) is tied to the digest its `PUT ?digest=` committed. Panics if a
/// session got PATCHes but was never committed (this helper is for clean pushes).
fn patches_per_blob(proxy: &FaultProxy) -> BTreeMap<String, usize> {
    let seen = proxy.requests();
    let session = |target: &str| -> Option<String> {
        let (_, rest) = target.split_once("/blobs/uploads/")?;
        let id = rest.split('?').next().unwrap_or("");
        (!id.is_empty()).then(|| id.to_owned())
    };
    let mut patches: BTreeMap<String, usize> = BTreeMap::new();
    let mut committed: BTreeMap<String, String> = BTreeMap::new();
    for s in &seen {
        let Some(id) = session(&s.target) else {
            continue;
        };
        match s.method.as_str() {
            "PATCH" => *patches.entry(id).or_default() += 1,
            "PUT" => {
                let query = s.target.split_once('?').map(|(_, q)| q).unwrap_or("");
                let digest = query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("digest="))
                    .unwrap_or_else(|| panic!("a PUT without ?digest=: {}", s.target))
                    .replace("%3A", ":")
                    .replace("%3a", ":");
                committed.insert(id, digest);
            }
            _ => {}
        }
    }
    for id in patches.keys() {
        assert!(
            committed.contains_key(id),
            "upload session {id} got PATCHes but was never committed: {seen:?}"
        );
    }
    committed
        .into_iter()
        .map(|(id, digest)| (digest, patches.get(&id).copied().unwrap_or(0)))
        .collect()
}

/// On an ECR registry (named like one, reached through `--registry-endpoint`) every blob goes
/// up in one streamed PATCH, whatever `--chunk-size` says: ECR's `Range` cannot be trusted
/// after the first chunk (aws/containers-roadmap#2831). Control: the same image pushed with the
/// same `--chunk-size` to a registry not named like ECR is sent in 5 MiB chunks, several
/// PATCHes for its big layer.
#[test]
fn ecr_push_sends_each_blob_in_one_patch_whatever_the_chunk_size() {
    let moto = Moto::start();
    let (user, password) = moto.registry_credentials();
    let ecr = Ecr {
        reg: Registry::plain(),
        moto,
        user,
        password,
    };
    let proxy = FaultProxy::new(&ecr.reg.host);
    let sb = ecr.sandbox();
    let (digest, layout) = sb.build_big("big", BIG);
    let (manifest, _, _) = read_layout(&layout, "latest");
    let blobs = manifest_blobs(&manifest);
    let (big, big_size) = blobs
        .iter()
        .max_by_key(|(_, size)| **size)
        .map(|(d, s)| (d.clone(), *s))
        .expect("a blob");
    assert!(
        big_size > 2 * CHUNK,
        "the big layer ({big_size} bytes) should span three chunks"
    );
    let chunk = CHUNK.to_string();

    let out = sb.ok(&strings(&[
        "push",
        &oci_ref(&layout, "latest"),
        &ecr_ref("big:v1"),
        "--registry-endpoint",
        &format!("http://{}", proxy.addr()),
        "--chunk-size",
        &chunk,
        "--create-repo",
    ]));
    assert_eq!(parse_digest(&out), digest);
    assert_eq!(ecr.reg.manifest_digest("big:v1"), digest);
    let one_each: BTreeMap<String, usize> = blobs
        .iter()
        .map(|(d, size)| (d.clone(), usize::from(*size > 0)))
        .collect();
    assert_eq!(
        patches_per_blob(&proxy),
        one_each,
        "PATCHes per blob on ECR (one each expected): {:?}",
        proxy.requests()
    );

    // Control: a registry not named like ECR, the same image and --chunk-size.
    let plain = Registry::plain();
    let plain_proxy = FaultProxy::new(&plain.host);
    let out = sb.ok(&strings(&[
        "push",
        &oci_ref(&layout, "latest"),
        &plain_proxy.reference("big:v1"),
        "--chunk-size",
        &chunk,
    ]));
    assert_eq!(parse_digest(&out), digest);
    let chunked: BTreeMap<String, usize> = blobs
        .iter()
        .map(|(d, size)| (d.clone(), size.div_ceil(CHUNK) as usize))
        .collect();
    let seen = patches_per_blob(&plain_proxy);
    assert_eq!(
        seen, chunked,
        "PATCHes per blob on a plain registry ({CHUNK}-byte chunks expected)"
    );
    assert!(seen[&big] >= 3, "{seen:?}");
}

/// GetAuthorizationToken calls seen by `api` (a counting proxy on the ECR API's path): the AWS
/// SDK names the operation in `X-Amz-Target`.
fn token_calls(api: &FaultProxy) -> usize {
    api.count_header("x-amz-target", ".GetAuthorizationToken")
}

/// The ECR API for the token tests: GetAuthorizationToken answered here, with moto's registry
/// password and an expiry `ttl` after the call (moto's own answer says the token expired in
/// 2015, so lamina rightly never reuses it); every other operation relayed to moto. Stopped on
/// drop.
struct TokenApi {
    server: LoopServer,
}

impl TokenApi {
    fn new(moto: &Moto, password: &str, ttl: Duration) -> TokenApi {
        let upstream = moto.host.clone();
        let token = base64(format!("AWS:{password}").as_bytes());
        let server = LoopServer::start(bind_loopback(), move |mut client| {
            let _ = token_api_conn(&mut client, &upstream, &token, ttl);
        });
        TokenApi { server }
    }

    /// `127.0.0.1:PORT`
    fn addr(&self) -> String {
        self.server.host()
    }
}

/// One request to [`TokenApi`]: answer GetAuthorizationToken, relay the rest to `upstream`.
fn token_api_conn(
    client: &mut std::net::TcpStream,
    upstream: &str,
    token: &str,
    ttl: Duration,
) -> std::io::Result<()> {
    use std::io::{Read, Write};
    let Some((head, leftover)) = read_head(client)? else {
        return Ok(());
    };
    let body = read_simple_body(client, &head, leftover)?;
    let op = head.header("x-amz-target").unwrap_or("");
    if op.ends_with(".GetAuthorizationToken") {
        let expires = std::time::SystemTime::now() + ttl;
        let secs = expires
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs();
        let answer = serde_json::json!({ "authorizationData": [{
            "authorizationToken": token,
            "expiresAt": secs,
            "proxyEndpoint": format!("https://{ECR_HOST}"),
        }]});
        let ct = ("Content-Type", "application/x-amz-json-1.1".to_owned());
        return respond(client, 200, &[ct], answer.to_string().as_bytes(), false);
    }
    let mut up = std::net::TcpStream::connect(upstream)?;
    up.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut out = format!("{} {} HTTP/1.1\r\n", head.method, head.target);
    for (k, v) in &head.headers {
        if !k.eq_ignore_ascii_case("connection") && !k.eq_ignore_ascii_case("keep-alive") {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    out.push_str("Connection: close\r\n\r\n");
    up.write_all(out.as_bytes())?;
    up.write_all(&body)?;
    let mut answer = Vec::new();
    up.read_to_end(&mut answer)?;
    client.write_all(&answer)?;
    client.flush()?;
    let _ = client.shutdown(std::net::Shutdown::Write);
    Ok(())
}

/// moto and a TLS registry taking its password, with the ECR API reached through a counting
/// [`FaultProxy`] in front of a [`TokenApi`] whose tokens live `ttl`, and the fixture base on
/// the registry as `base/al2023:latest`. Returns the sandbox pointed at the proxy.
fn token_setup(ttl: Duration) -> (Ecr, TokenApi, FaultProxy, Sandbox) {
    let ecr = Ecr::start();
    let tokens = TokenApi::new(&ecr.moto, &ecr.password, ttl);
    let api = FaultProxy::new(&tokens.addr());
    let mut sb = ecr.sandbox();
    sb.set("AWS_ENDPOINT_URL", format!("http://{}", api.addr()));
    ecr.reg
        .skopeo_push(&fixture_base_ref(), "base/al2023:latest", true);
    (ecr, tokens, api, sb)
}

/// `build --base docker://ECR/base/al2023:latest --to docker://ECR/REPO_TAG --create-repo
/// --json`: a build that connects to the ECR registry twice (reading the base, pushing).
fn build_on_ecr(ecr: &Ecr, sb: &Sandbox, repo_tag: &str) -> Value {
    let base = ecr_ref("base/al2023:latest");
    let out = sb.ok(&Sandbox::build_args(
        &ecr_ref(repo_tag),
        &cat(
            &endpoint_flags(&ecr.reg),
            &["--base", &base, "--create-repo", "--json"],
        ),
    ));
    let v = parse_json(&out);
    let digest = v["digest"].as_str().expect("digest");
    assert_eq!(ecr.reg.manifest_digest(repo_tag), digest);
    v
}

/// One command asks ECR for a registry password once and reuses it for every connection it
/// makes: a build whose base and destination are both on the ECR registry connects twice
/// (reading the base, pushing) and pushes several blobs, with one GetAuthorizationToken. The
/// cache lives in the process: a second command asks again, exactly once.
#[test]
fn one_authorization_token_per_command() {
    let (ecr, _tokens, api, sb) = token_setup(Duration::from_secs(12 * 3600));
    let v = build_on_ecr(&ecr, &sb, "team/fn:v1");
    let digest = v["digest"].as_str().expect("digest").to_owned();
    let pushed = blob_fates(&v)
        .values()
        .filter(|(_, fate)| fate != "skipped")
        .count();
    assert!(pushed >= 2, "the build should push several blobs: {v}");
    // The proxy is on the ECR API's path: it saw the repository calls too.
    assert!(
        api.count_header("x-amz-target", ".DescribeRepositories") >= 1,
        "the ECR API calls did not go through the counting proxy: {:?}",
        api.requests()
    );
    assert_eq!(
        token_calls(&api),
        1,
        "GetAuthorizationToken calls during one build: {:?}",
        api.requests()
    );

    // A second command (a registry-to-registry push: two connections again) is its own
    // process with its own cache: one more call, not zero, not two.
    let flags = endpoint_flags(&ecr.reg);
    sb.ok(&cat(
        &strings(&["push", &ecr_ref("team/fn:v1"), &ecr_ref("team/fn:v2")]),
        &flags.iter().map(String::as_str).collect::<Vec<_>>(),
    ));
    assert_eq!(ecr.reg.manifest_digest("team/fn:v2"), digest);
    assert_eq!(
        token_calls(&api),
        2,
        "GetAuthorizationToken calls after a second command: {:?}",
        api.requests()
    );
}

/// A token is reused until five minutes before it expires: one that expires in six minutes
/// serves both connections of a build; one that expires in four is asked for again by the
/// build's second connection.
#[test]
fn a_token_is_not_reused_within_five_minutes_of_its_expiry() {
    let (ecr, _tokens, api, sb) = token_setup(Duration::from_secs(6 * 60));
    build_on_ecr(&ecr, &sb, "team/fn:v1");
    assert_eq!(
        token_calls(&api),
        1,
        "a token valid for six more minutes should be reused: {:?}",
        api.requests()
    );

    let (ecr, _tokens, api, sb) = token_setup(Duration::from_secs(4 * 60));
    build_on_ecr(&ecr, &sb, "team/fn:v1");
    assert_eq!(
        token_calls(&api),
        2,
        "a token valid for four more minutes should be asked for again by each connection: {:?}",
        api.requests()
    );
}
