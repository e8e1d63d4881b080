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

    // `--image` by tag: the tag resolved to the digest it names, the function pinned to it.
    let tagged = format!("docker://{ECR_HOST}/fns/app:latest");
    let out = sb.ok(&deploy_args(
        &peers,
        &spec,
        &["--image", &tagged, "--function-name", "app-copy"],
    ));
    let report = parse_json(&out);
    assert_eq!(function_report(&report, "app-copy")["outcome"], "created");
    assert_eq!(
        peers.moto.function("app-copy")["Code"]["ImageUri"],
        uri2.as_str(),
        "{report}"
    );
}

/// A zip spec: `[function]` with the fixture function as its code on provided.al2023.
fn zip_spec(sb: &Sandbox, name: &str, deploy: &str) -> PathBuf {
    function_dir(sb);
    let spec = format!(
        "platform = \"linux/amd64\"\n[function]\nruntime = \"provided.al2023\"\n\
         handler = \"handler.handle\"\ncode = \"function\"\n\n[deploy]\npackage = \"zip\"\n{deploy}\n"
    );
    let path = sb.work().join(format!("{name}.toml"));
    fs::write(&path, spec).expect("write spec");
    path
}

/// A zip function sent directly (`ZipFile`), then through S3, then a `--zip FILE`: Lambda's
/// CodeSha256 is the base64 SHA-256 of the zip each time; the same zip again is "unchanged"
/// and not uploaded to S3 twice.
#[test]
fn zip_function_direct_and_through_s3() {
    let peers = AwsPeers::start();
    let sb = peers.sandbox();
    let role = peers.moto.create_role("zip-role");
    peers.moto.create_bucket("code-bucket");
    let spec = zip_spec(
        &sb,
        "zipfn",
        &format!("function_name = \"zipfn\"\nrole = \"{role}\""),
    );
    // The same zip, written by `lamina zip` from the same spec.
    let zip = sb.work().join("expected.zip");
    sb.ok(&strings(&[
        "zip",
        "-f",
        path_str(&spec),
        "--to",
        path_str(&zip),
    ]));
    let sha = code_sha256(&fs::read(&zip).unwrap());

    let out = sb.ok(&deploy_args(&peers, &spec, &[]));
    let report = parse_json(&out);
    assert_eq!(report["code"]["codeSha256"], sha.as_str(), "{report}");
    assert_eq!(function_report(&report, "zipfn")["outcome"], "created");
    let got = peers.moto.function("zipfn");
    assert_eq!(got["Configuration"]["CodeSha256"], sha.as_str(), "{got}");
    assert_eq!(got["Configuration"]["PackageType"], "Zip");
    assert_eq!(got["Configuration"]["Runtime"], "provided.al2023");
    assert_eq!(got["Configuration"]["Handler"], "handler.handle");
    assert_eq!(got["Configuration"]["Architectures"][0], "x86_64");

    // Same code, through S3 this time: nothing to update.
    let writes = lambda_writes(&peers, "zipfn");
    let out = sb.ok(&deploy_args(&peers, &spec, &["--s3-bucket", "code-bucket"]));
    let report = parse_json(&out);
    assert_eq!(function_report(&report, "zipfn")["outcome"], "unchanged");
    assert_eq!(lambda_writes(&peers, "zipfn"), writes);
    assert_eq!(
        peers.moto.requests("PUT /code-bucket/"),
        0,
        "code no function needs was uploaded:\n{}",
        peers.moto.log()
    );

    // A code change, through S3: the object is put once, and Lambda reads it from there.
    fs::write(function_dir(&sb).join("handler.sh"), "#!/bin/sh\necho v2\n").unwrap();
    sb.ok(&strings(&[
        "zip",
        "-f",
        path_str(&spec),
        "--to",
        path_str(&zip),
    ]));
    let sha2 = code_sha256(&fs::read(&zip).unwrap());
    assert_ne!(sha2, sha);
    let out = sb.ok(&deploy_args(&peers, &spec, &["--s3-bucket", "code-bucket"]));
    let report = parse_json(&out);
    assert_eq!(report["code"]["s3Uploaded"], true, "{report}");
    let s3 = report["code"]["s3"].as_str().expect("s3 key").to_owned();
    let key = s3.strip_prefix("s3://code-bucket/").expect("bucket");
    let size = peers.moto.py(&format!(
        "out = s3.head_object(Bucket='code-bucket', Key='{key}')['ContentLength']"
    ));
    assert_eq!(size, fs::metadata(&zip).unwrap().len());
    assert_eq!(
        peers.moto.function("zipfn")["Configuration"]["CodeSha256"],
        sha2.as_str()
    );
    assert_eq!(
        peers.moto.requests("PUT /code-bucket/"),
        1,
        "one PutObject:\n{}",
        peers.moto.log()
    );

    // A .zip given as a file, to another function: created with that file's hash.
    let out = sb.ok(&deploy_args(
        &peers,
        &spec,
        &[
            "--zip",
            path_str(&zip),
            "--function-name",
            "zipfn2",
            "--s3-bucket",
            "code-bucket",
        ],
    ));
    let report = parse_json(&out);
    assert_eq!(report["code"]["s3Uploaded"], false, "{report}");
    assert_eq!(peers.moto.requests("PUT /code-bucket/"), 1);
    assert_eq!(function_report(&report, "zipfn2")["outcome"], "created");
    assert_eq!(
        peers.moto.function("zipfn2")["Configuration"]["CodeSha256"],
        sha2.as_str()
    );
}

/// `--publish --alias live`: a version, and the alias created at it; after a code change a
/// new version and the alias moved.
#[test]
fn publish_and_alias() {
    let peers = AwsPeers::start();
    let sb = peers.sandbox();
    let role = peers.moto.create_role("pub-role");
    let spec = zip_spec(
        &sb,
        "pubfn",
        &format!("function_name = \"pubfn\"\nrole = \"{role}\""),
    );
    let out = sb.ok(&deploy_args(&peers, &spec, &["--alias", "live"]));
    let report = parse_json(&out);
    let f = function_report(&report, "pubfn");
    assert_eq!(f["version"], "1", "{report}");
    assert_eq!(f["alias"], "live");
    let alias = |name: &str| {
        peers.moto.py(&format!(
            "out = lam.get_alias(FunctionName='pubfn', Name='{name}')['FunctionVersion']"
        ))
    };
    assert_eq!(alias("live"), "1");

    fs::write(function_dir(&sb).join("handler.sh"), "#!/bin/sh\necho v2\n").unwrap();
    let out = sb.ok(&deploy_args(&peers, &spec, &["--alias", "live"]));
    let f = function_report(&parse_json(&out), "pubfn").clone();
    assert_eq!(f["version"], "2", "{f}");
    assert_eq!(alias("live"), "2");
}

/// Two functions in one spec (`[[deploy.functions]]`) share the one image: each blob is pushed
/// once, both run the same digest, each with its own command and memory; `--only` picks one.
#[test]
fn two_functions_share_one_build() {
    let peers = AwsPeers::start();
    let sb = peers.sandbox();
    let role = peers.moto.create_role("multi-role");
    peers.moto.create_repository("fns/multi");
    let spec = image_spec(
        &sb,
        "fns/multi",
        &format!(
            "role = \"{role}\"\nmemory = 256\n\
             [[deploy.functions]]\nfunction_name = \"one\"\nhandler = \"one.handle\"\n\
             [[deploy.functions]]\nfunction_name = \"two\"\nhandler = \"two.handle\"\nmemory = 1024\n"
        ),
    );
    let out = sb.ok(&deploy_args(&peers, &spec, &[]));
    let report = parse_json(&out);
    let blobs = report["code"]["blobs"].as_array().expect("blobs");
    let mut digests: Vec<&str> = blobs
        .iter()
        .map(|b| b["digest"].as_str().unwrap())
        .collect();
    let n = digests.len();
    digests.sort();
    digests.dedup();
    assert_eq!(digests.len(), n, "a blob was pushed twice: {report}");
    let manifest: Value =
        serde_json::from_slice(&peers.reg.raw_manifest("fns/multi:latest")).unwrap();
    assert_eq!(
        n,
        manifest["layers"].as_array().unwrap().len() + 1,
        "{report}"
    );
    let uri = report["code"]["imageUri"].as_str().unwrap();
    for (name, handler, memory) in [("one", "one.handle", 256), ("two", "two.handle", 1024)] {
        assert_eq!(function_report(&report, name)["outcome"], "created");
        let got = peers.moto.function(name);
        assert_eq!(got["Code"]["ImageUri"], uri, "{got}");
        assert_eq!(got["Configuration"]["MemorySize"], memory, "{got}");
        assert_eq!(
            got["Configuration"]["ImageConfigResponse"]["ImageConfig"]["Command"][0], handler,
            "{got}"
        );
    }

    let out = sb.ok(&deploy_args(&peers, &spec, &["--only", "two"]));
    let report = parse_json(&out);
    assert_eq!(report["functions"].as_array().unwrap().len(), 1);
    assert_eq!(function_report(&report, "two")["outcome"], "unchanged");
    let out = sb.fail(&deploy_args(&peers, &spec, &["--only", "three"]));
    assert_error_names(&out, &["--only three", "one", "two"]);
}

/// Code built for the other instruction set moves the function with it: UpdateFunctionCode
/// carries `Architectures` (seen on the wire by a proxy in front of moto's Lambda API, since
/// moto stores code but ignores that field), the report names the change, and the registry
/// holds the arm64 image the function now names by digest.
#[test]
fn code_for_the_other_architecture_moves_the_function_with_it() {
    let peers = AwsPeers::start();
    let mut sb = peers.sandbox();
    let proxy = FaultProxy::new(&peers.moto.host);
    sb.set(
        "AWS_ENDPOINT_URL_LAMBDA",
        format!("http://{}", proxy.addr()),
    );
    let role = peers.moto.create_role("arch-role");
    peers.moto.create_repository("fns/arch");
    let spec = image_spec(
        &sb,
        "fns/arch",
        &format!("function_name = \"arch\"\nrole = \"{role}\""),
    );
    sb.ok(&deploy_args(&peers, &spec, &[]));
    let got = peers.moto.function("arch");
    assert_eq!(got["Configuration"]["Architectures"][0], "x86_64", "{got}");
    let code_puts = |arch: &str| {
        let needle = format!("\"Architectures\":[\"{arch}\"]");
        proxy
            .requests()
            .iter()
            .filter(|r| r.method == "PUT" && r.target.ends_with("/functions/arch/code"))
            .filter(|r| String::from_utf8_lossy(&r.body).contains(&needle))
            .count()
    };
    assert_eq!(code_puts("arm64"), 0);

    let out = sb.ok(&deploy_args(&peers, &spec, &["--platform", "linux/arm64"]));
    let report = parse_json(&out);
    let f = function_report(&report, "arch");
    assert_eq!(f["outcome"], "updated", "{report}");
    let changed: Vec<&str> = f["changed"]
        .as_array()
        .expect("changed")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(changed.contains(&"Architectures"), "{report}");
    assert!(
        stderr_of(&out).contains("x86_64 -> arm64"),
        "{}",
        describe(&out)
    );
    assert_eq!(
        code_puts("arm64"),
        1,
        "one UpdateFunctionCode with the new architecture"
    );
    let uri = report["code"]["imageUri"].as_str().expect("uri");
    let got = peers.moto.function("arch");
    assert_eq!(got["Code"]["ImageUri"], uri, "the arm64 image, by digest");
    // What the registry holds under that digest is an arm64 image.
    let digest = uri.rsplit_once('@').expect("pinned").1;
    assert_eq!(peers.reg.manifest_digest("fns/arch:latest"), digest);
    let manifest: Value =
        serde_json::from_slice(&peers.reg.raw_manifest("fns/arch:latest")).unwrap();
    let config = manifest["config"]["digest"].as_str().unwrap();
    let hex = hex_of(config);
    let stored = peers
        .reg
        .repo_dir("")
        .join("../blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data");
    let config: Value = serde_json::from_slice(&fs::read(stored).unwrap()).unwrap();
    assert_eq!(config["architecture"], "arm64");

    // (Deploying it again would send the architecture again here: moto keeps reporting
    // x86_64, where Lambda reports what it was given. "Unchanged sends nothing" is tested
    // above on a function whose architecture moto does report.)
}

/// Deploys that cannot succeed fail before anything is pushed or changed, with an error
/// naming the function and what is wrong.
#[test]
fn bad_deploys_fail_clearly_before_pushing_or_changing_anything() {
    let peers = AwsPeers::start();
    let sb = peers.sandbox();
    let role = peers.moto.create_role("bad-role");
    peers.moto.create_repository("fns/bad");
    let spec = image_spec(
        &sb,
        "fns/bad",
        &format!("function_name = \"good\"\nrole = \"{role}\""),
    );
    sb.ok(&deploy_args(&peers, &spec, &[]));
    let good = peers.moto.function("good");
    let blobs = peers.reg.blob_count();
    let unchanged = |out: &Output| {
        assert_eq!(
            peers.reg.blob_count(),
            blobs,
            "blobs were pushed:\n{}",
            describe(out)
        );
        assert_eq!(
            peers.moto.function("good")["Configuration"],
            good["Configuration"],
            "the function changed:\n{}",
            describe(out)
        );
    };

    // Image -> Zip: Lambda cannot switch a function's package type.
    let zspec = zip_spec(&sb, "switch", "function_name = \"good\"");
    let out = sb.fail(&deploy_args(&peers, &zspec, &[]));
    assert_error_names(&out, &["good", "package type", "Image", "Zip"]);
    unchanged(&out);

    // A new function without a role.
    let nspec = image_spec(&sb, "fns/new", "function_name = \"newfn\"");
    let out = sb.fail(&deploy_args(&peers, &nspec, &[]));
    assert_error_names(&out, &["newfn", "role"]);
    assert!(peers.moto.function("newfn").is_null());
    unchanged(&out);

    // ECR in another region, or another account, than the function.
    let other_region = "docker://123456789012.dkr.ecr.eu-west-1.amazonaws.com/fns/bad:latest";
    let out = sb.fail(&deploy_args(&peers, &spec, &["--to", other_region]));
    assert_error_names(&out, &["good", "eu-west-1", "us-east-1"]);
    unchanged(&out);
    let other_account = "docker://210987654321.dkr.ecr.us-east-1.amazonaws.com/fns/bad:latest";
    let out = sb.fail(&deploy_args(&peers, &spec, &["--to", other_account]));
    assert_error_names(&out, &["good", "210987654321", "123456789012"]);
    unchanged(&out);

    // Not an ECR registry at all.
    let out = sb.fail(&deploy_args(
        &peers,
        &spec,
        &["--image", "docker://127.0.0.1:1/x/y:latest"],
    ));
    assert_error_names(&out, &["--image", "ECR"]);
    unchanged(&out);

    // The Lambda gate refuses the image (no ENTRYPOINT or CMD: L005): exit 3, nothing pushed,
    // no function created.
    let gspec = sb.work().join("gate.toml");
    fs::write(
        &gspec,
        format!(
            "base = \"scratch\"\nto = \"docker://{ECR_HOST}/fns/bad:gate\"\n\
             [[layer]]\nsource = \"function\"\ndest = \"/var/task\"\n\
             [deploy]\nfunction_name = \"gated\"\nrole = \"{role}\"\n"
        ),
    )
    .unwrap();
    let out = sb.fail(&deploy_args(&peers, &gspec, &[]));
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    assert_error_names(&out, &["L005", "nothing was pushed"]);
    assert!(peers.moto.function("gated").is_null());
    unchanged(&out);

    // The Lambda API cannot be reached.
    let closed = format!("http://127.0.0.1:{}", free_port());
    let out = sb.run_env(
        &deploy_args(&peers, &spec, &[]),
        None,
        &[("AWS_ENDPOINT_URL", closed.clone().into())],
    );
    assert!(!out.status.success(), "{}", describe(&out));
    assert_error_names(&out, &["GetFunction", "good", "cannot be reached"]);
    unchanged(&out);
}

/// `publish_layers`: `[function] layers` published as Lambda layers and attached; a version is
/// published again only when the layer's files change, and then the function moves to it.
#[test]
fn lambda_layers_are_published_only_when_they_change() {
    let peers = AwsPeers::start();
    let sb = peers.sandbox();
    let role = peers.moto.create_role("layer-role");
    let deps = sb.work().join("deps");
    fs::create_dir_all(deps.join("python")).unwrap();
    fs::write(deps.join("python/lib.py"), "X = 1\n").unwrap();
    function_dir(&sb);
    let spec = sb.work().join("layers.toml");
    fs::write(
        &spec,
        format!(
            "[function]\nruntime = \"python3.12\"\nhandler = \"handler.handle\"\ncode = \"function\"\n\
             layers = [\"deps\"]\n[deploy]\npackage = \"zip\"\npublish_layers = true\n\
             function_name = \"withlayer\"\nrole = \"{role}\"\n"
        ),
    )
    .unwrap();
    let layer_of = || {
        peers.moto.function("withlayer")["Configuration"]["Layers"][0]["Arn"]
            .as_str()
            .map(str::to_owned)
    };

    let report = parse_json(&sb.ok(&deploy_args(&peers, &spec, &[])));
    let l = &report["layers"][0];
    assert_eq!(l["name"], "deps", "{report}");
    assert_eq!(l["published"], true);
    let arn1 = l["arn"].as_str().unwrap().to_owned();
    assert!(arn1.ends_with(":layer:deps:1"), "{arn1}");
    assert_eq!(layer_of().as_deref(), Some(arn1.as_str()));

    // Nothing changed: no new layer version, the function unchanged.
    let report = parse_json(&sb.ok(&deploy_args(&peers, &spec, &[])));
    assert_eq!(report["layers"][0]["published"], false, "{report}");
    assert_eq!(
        function_report(&report, "withlayer")["outcome"],
        "unchanged"
    );
    assert_eq!(
        peers.moto.requests("POST /2018-10-31/layers/deps/versions"),
        1
    );

    // The layer's files change: version 2, and only the function's Layers updated.
    fs::write(deps.join("python/lib.py"), "X = 2\n").unwrap();
    let report = parse_json(&sb.ok(&deploy_args(&peers, &spec, &[])));
    let arn2 = report["layers"][0]["arn"].as_str().unwrap().to_owned();
    assert!(arn2.ends_with(":layer:deps:2"), "{report}");
    assert_eq!(
        function_report(&report, "withlayer")["changed"],
        serde_json::json!(["Layers"])
    );
    assert_eq!(layer_of().as_deref(), Some(arn2.as_str()));
}
