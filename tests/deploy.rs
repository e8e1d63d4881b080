//! `lamina deploy` against moto on loopback as the Lambda, IAM, S3 and ECR APIs, with a CNCF
//! distribution registry behind moto's ECR password as the registry (reached through
//! `--registry-endpoint`, the image references naming the ECR host
//! `123456789012.dkr.ecr.us-east-1.amazonaws.com`). moto's request log counts the Lambda
//! calls lamina made; boto3 reads what moto holds.
//!
//! What moto does differently from Lambda: a function is `Active` at once and its
//! `LastUpdateStatus` is `Successful` as soon as GetFunction answers (no `Pending` /
//! `InProgress` window), so the tests see one poll per wait; `CodeSha256` of an image
//! function is the SHA-256 of the ImageUri string (moto does not read the image), so image
//! identity is checked through `Code.ImageUri`; `LastModified` does not move on updates, so
//! "nothing was sent" is checked on moto's request log as well.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use base64::Engine;
use common::moto::*;
use common::*;
use serde_json::Value;
use sha2::Digest as _;

/// The fixture function copied into the sandbox (so a test can change it).
fn function_dir(sb: &Sandbox) -> PathBuf {
    let dir = sb.work().join("function");
    if !dir.exists() {
        sh(
            &format!("cp -r {} {}", path_str(&fixture_function()), path_str(&dir)),
            &sb.work(),
        );
    }
    dir
}

/// An image spec on the fixture base, pushed to `ECR_HOST/REPO:latest`, with `deploy` as its
/// `[deploy]` section (TOML lines).
fn image_spec(sb: &Sandbox, repo: &str, deploy: &str) -> PathBuf {
    function_dir(sb);
    let spec = format!(
        "base = \"{}\"\nplatform = \"linux/amd64\"\nto = \"docker://{ECR_HOST}/{repo}:latest\"\n\
         [[layer]]\nsource = \"function\"\ndest = \"/var/task\"\n\
         [config]\ncmd = [\"handler.handle\"]\n\n[deploy]\n{deploy}\n",
        fixture_base_ref()
    );
    let path = sb.work().join(format!("{}.toml", repo.replace('/', "-")));
    fs::write(&path, spec).expect("write spec");
    path
}

/// `lamina deploy -f SPEC --json` plus the registry flags and `extra`.
fn deploy_args(peers: &AwsPeers, spec: &Path, extra: &[&str]) -> Vec<String> {
    let mut a = strings(&["deploy", "-f", path_str(spec), "--json"]);
    a.extend(peers.registry_flags());
    a.extend(extra.iter().map(|s| (*s).to_owned()));
    a
}

/// The JSON report of one function.
fn function_report<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["functions"]
        .as_array()
        .expect("functions")
        .iter()
        .find(|f| f["functionName"] == name)
        .unwrap_or_else(|| panic!("no report for {name}: {report}"))
}

/// base64 of the SHA-256 of `bytes`: Lambda's CodeSha256.
fn code_sha256(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(bytes))
}

/// Lambda writes (PUT/POST) moto answered for `name`.
fn lambda_writes(peers: &AwsPeers, name: &str) -> usize {
    ["PUT", "POST"]
        .iter()
        .map(|m| {
            peers
                .moto
                .requests(&format!("{m} /2015-03-31/functions/{name}"))
        })
        .sum::<usize>()
        + peers.moto.requests("POST /2015-03-31/functions HTTP")
}

/// A failed run: its stderr names every one of `words`.
fn assert_error_names(out: &Output, words: &[&str]) {
    let err = stderr_of(out);
    for w in words {
        assert!(
            err.contains(w),
            "the error should name `{w}`:\n{}",
            describe(out)
        );
    }
}

/// Create, update, leave alone, reconfigure: an image function by digest, with only what
/// changed sent each time.
#[test]
fn image_function_is_created_updated_and_left_alone_when_unchanged() {
    let peers = AwsPeers::start();
    let sb = peers.sandbox();
    let role = peers.moto.create_role("fn-role");
    peers.moto.create_repository("fns/app");
    let spec = image_spec(
        &sb,
        "fns/app",
        &format!("function_name = \"app\"\nrole = \"{role}\"\nmemory = 256"),
    );

    // Create.
    let out = sb.ok(&deploy_args(&peers, &spec, &[]));
    let report = parse_json(&out);
    let f = function_report(&report, "app");
    assert_eq!(f["outcome"], "created", "{report}");
    let digest = report["code"]["digest"]
        .as_str()
        .expect("digest")
        .to_owned();
    let uri = report["code"]["imageUri"].as_str().expect("uri").to_owned();
    assert_eq!(uri, format!("{ECR_HOST}/fns/app@{digest}"));
    assert_eq!(
        peers.reg.manifest_digest("fns/app:latest"),
        digest,
        "the digest lamina printed is the one the registry serves"
    );
    let got = peers.moto.function("app");
    assert_eq!(got["Code"]["ImageUri"], uri.as_str(), "{got}");
    assert_eq!(got["Configuration"]["PackageType"], "Image");
    assert_eq!(got["Configuration"]["Architectures"][0], "x86_64");
    assert_eq!(got["Configuration"]["MemorySize"], 256);
    assert_eq!(got["Configuration"]["Role"], role.as_str());

    // A code change: a new digest, UpdateFunctionCode only.
    fs::write(function_dir(&sb).join("handler.sh"), "#!/bin/sh\necho v2\n").unwrap();
    let writes = lambda_writes(&peers, "app");
    let out = sb.ok(&deploy_args(&peers, &spec, &[]));
    let report = parse_json(&out);
    let f = function_report(&report, "app");
    assert_eq!(f["outcome"], "updated", "{report}");
    assert_eq!(f["changed"], serde_json::json!(["Code"]), "{report}");
    let uri2 = report["code"]["imageUri"].as_str().unwrap().to_owned();
    assert_ne!(uri2, uri);
    assert_eq!(
        peers.moto.function("app")["Code"]["ImageUri"],
        uri2.as_str()
    );
    assert_eq!(peers.moto.requests("PUT /2015-03-31/functions/app/code"), 1);
    assert_eq!(lambda_writes(&peers, "app"), writes + 1);

    // Nothing changed: no write at all, "unchanged", LastModified as it was.
    let before = peers.moto.function("app");
    let writes = lambda_writes(&peers, "app");
    let mut args = deploy_args(&peers, &spec, &[]);
    args.retain(|a| a != "--json");
    let out = sb.ok(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("app unchanged") && stdout.contains(&uri2),
        "{}",
        describe(&out)
    );
    assert_eq!(lambda_writes(&peers, "app"), writes, "{}", peers.moto.log());
    let after = peers.moto.function("app");
    assert_eq!(
        before["Configuration"]["LastModified"],
        after["Configuration"]["LastModified"]
    );

    // A configuration-only change: UpdateFunctionConfiguration with the field, no code update.
    let spec = image_spec(
        &sb,
        "fns/app",
        &format!("function_name = \"app\"\nrole = \"{role}\"\nmemory = 512\ndescription = \"d\""),
    );
    let out = sb.ok(&deploy_args(&peers, &spec, &[]));
    let report = parse_json(&out);
    let f = function_report(&report, "app");
    assert_eq!(
        f["changed"],
        serde_json::json!(["MemorySize", "Description"]),
        "{report}"
    );
    assert_eq!(
        peers.moto.requests("PUT /2015-03-31/functions/app/code"),
        1,
        "a configuration change sent code"
    );
    assert_eq!(
        peers
            .moto
            .requests("PUT /2015-03-31/functions/app/configuration"),
        1
    );
    let got = peers.moto.function("app");
    assert_eq!(got["Configuration"]["MemorySize"], 512);
    assert_eq!(got["Configuration"]["Description"], "d");
    assert_eq!(got["Code"]["ImageUri"], uri2.as_str());
}
