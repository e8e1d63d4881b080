//! The CI recipes of docs/ci/ (tracker issue 18), run as written: each page's YAML is parsed
//! (Python's `yaml`), and its shell steps run with `bash` in a copy of lamina's fixture
//! function, in the order and with the variables the CI service would give them. The AWS APIs
//! are moto (ECR, and STS for GitLab's web identity exchange) and, for CodeBuild, a container
//! credentials endpoint written here; ECR's registry is a loopback
//! `docker-registry` with TLS and moto's ECR password. The one stand-in for DNS: a `lamina`
//! wrapper first in `PATH` adds `--registry-endpoint` and `--ca-cert` to the commands that talk
//! to registries, so the recipes' real ECR host name reaches the loopback registry.
//!
//! The deploy steps run too: moto is also the IAM (the function's execution role, made here
//! under the ARN the recipes name) and Lambda API, and after each recipe the function's
//! `Code.ImageUri` must be the pushed repository pinned to the digest the build printed.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::loopback_http::{LoopServer, bind_loopback, read_head, respond};
use common::*;
use serde_json::Value;

const ECR_HOST: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";

/// The function the recipes deploy, and the execution role they name for it (`FUNCTION`,
/// `FUNCTION_ROLE` in their variables).
const FUNCTION: &str = "fn";
const FUNCTION_ROLE: &str = "arn:aws:iam::123456789012:role/fn-lambda";

/// The CI service a page's YAML is for, and how its shell steps are read out of it.
#[derive(Clone, Copy)]
enum Service {
    GitHub,
    GitLab,
    CodeBuild,
}

/// Reads the page's first `yaml` block and prints `{"env": {..}, "steps": [{"name", "script"}]}`
/// in the order the service runs them.
const EXTRACT: &str = r#"
import json, sys, yaml
kind, text = sys.argv[1], sys.stdin.read()
doc = yaml.safe_load(text)
steps = []
if kind == "github":
    env = doc.get("env", {})
    (job,) = doc["jobs"].values()
    for s in job["steps"]:
        if "run" in s:
            steps.append({"name": s.get("name", "run"), "script": s["run"]})
elif kind == "gitlab":
    env = doc.get("variables", {})
    before = "\n".join(doc["default"]["before_script"])
    for name in ("image", "deploy"):
        steps.append({"name": name, "script": before + "\n" + "\n".join(doc[name]["script"])})
else:
    env = doc["env"]["variables"]
    # All phases of a buildspec run in one shell: one script, phase by phase.
    script = ""
    for phase in ("install", "pre_build", "build"):
        script += "\n".join(doc["phases"].get(phase, {}).get("commands", [])) + "\n"
    steps.append({"name": "install+build", "script": script})
    steps.append({"name": "deploy", "script": script + "\n".join(doc["phases"]["post_build"]["commands"])})
print(json.dumps({"env": env, "steps": steps}))
"#;

struct Recipe {
    env: Vec<(String, String)>,
    steps: Vec<(String, String)>,
}

/// The recipe of `page` (under docs/ci/), as `service` would run it.
fn recipe(page: &str, service: Service) -> Recipe {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs/ci")
        .join(page);
    let yaml = blocks(&path)
        .into_iter()
        .find(|b| b.lang == "yaml")
        .unwrap_or_else(|| panic!("{page} has no yaml block"));
    let kind = match service {
        Service::GitHub => "github",
        Service::GitLab => "gitlab",
        Service::CodeBuild => "codebuild",
    };
    let mut cmd = Command::new(require_tool("python3"));
    cmd.args(["-c", EXTRACT, kind]);
    let out = run_bounded(
        &mut cmd,
        Some(yaml.text.as_bytes()),
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "reading the YAML of {} (python3's yaml comes with moto):\n{}",
        yaml.at(),
        describe(&out)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let env = v["env"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.as_str().map(str::to_owned).unwrap_or(v.to_string()),
            )
        })
        .collect();
    let steps = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_owned(),
                s["script"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    Recipe { env, steps }
}

/// moto, the registry, and the sandboxed project the recipes run in.
struct Stage {
    moto: MotoServer,
    reg: Registry,
    sandbox: DocSandbox,
}

impl Stage {
    fn new() -> Stage {
        let moto = MotoServer::start();
        let (user, password) = moto.registry_credentials();
        let reg = Registry::tls_basic(&user, &password);
        let sandbox = DocSandbox::new();
        // The wrapper: ECR's host name routed to the loopback registry, nothing else changed.
        let shim = sandbox.dir.path().join("shim");
        fs::create_dir(&shim).unwrap();
        let script = format!(
            "#!/bin/bash\n\
             case \"$1\" in build|push|pull|inspect|check|deploy)\n  \
             exec '{bin}' \"$@\" --registry-endpoint 'https://{host}' {flags} ;;\nesac\n\
             exec '{bin}' \"$@\"\n",
            bin = lamina_bin(),
            host = reg.host,
            flags = reg.lamina_flags().join(" "),
        );
        fs::write(shim.join("lamina"), script).unwrap();
        fs::set_permissions(shim.join("lamina"), fs::Permissions::from_mode(0o755)).unwrap();
        let aws = sandbox.dir.path().join("aws");
        fs::create_dir(&aws).unwrap();
        fs::write(aws.join("config"), "").unwrap();
        fs::write(aws.join("credentials"), "").unwrap();
        // The function's execution role, where the recipes say it is (moto's account is the
        // recipes' 123456789012).
        assert_eq!(moto.create_role("fn-lambda"), FUNCTION_ROLE);
        Stage { moto, reg, sandbox }
    }

    /// Run one step's script in the project (`fixtures/` of the sandbox) with the recipe's
    /// variables (exported in order, so one may name another, as the services expand them)
    /// and the service's own `ci`.
    fn run(&self, recipe: &Recipe, step: &str, ci: &[(&str, String)]) -> std::process::Output {
        let (_, script) = recipe
            .steps
            .iter()
            .find(|(n, _)| n == step)
            .unwrap_or_else(|| panic!("no step `{step}` in {:?}", recipe.steps));
        let project = self.sandbox.dir.path().join("fixtures");
        let aws = self.sandbox.dir.path().join("aws");
        // A CI machine's defaults: lamina's cache under ~/.cache unless the recipe moves it.
        let mut prelude = String::from("unset LAMINA_CACHE_DIR XDG_CACHE_HOME\n");
        for (k, v) in ci
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .chain(recipe.env.iter().cloned())
        {
            prelude.push_str(&format!("export {k}=\"{v}\"\n"));
        }
        let path = format!(
            "{}:{}",
            self.sandbox.dir.path().join("shim").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let env: Vec<(String, String)> = vec![
            ("PATH".into(), path),
            ("AWS_ENDPOINT_URL".into(), self.moto.endpoint()),
            ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
            (
                "AWS_CONFIG_FILE".into(),
                aws.join("config").display().to_string(),
            ),
            (
                "AWS_SHARED_CREDENTIALS_FILE".into(),
                aws.join("credentials").display().to_string(),
            ),
        ];
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let out = self.sandbox.bash(
            &format!("{prelude}{script}"),
            project.to_str().unwrap(),
            &env,
            Duration::from_secs(300),
        );
        assert_no_panic(&out);
        out
    }

    /// The image the recipe pushed is in the registry, its repository was created in ECR (by
    /// `--create-repo`), and `image.json` (the build's report) names the registry's digest.
    fn assert_pushed(&self, tag: &str) {
        let repos = self.moto.ecr_repositories();
        assert!(
            repos.contains_key("fn"),
            "ECR has no repository fn: {repos:?}"
        );
        assert!(
            registry_has(&self.reg, &format!("fn:{tag}")),
            "fn:{tag} was not pushed"
        );
        let report: Value = serde_json::from_slice(
            &fs::read(self.sandbox.dir.path().join("fixtures/image.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(
            report["digest"].as_str(),
            Some(self.reg.manifest_digest(&format!("fn:{tag}")).as_str()),
            "{report}"
        );
        assert_eq!(
            report["reference"].as_str(),
            Some(format!("docker://{ECR_HOST}/fn:{tag}").as_str())
        );
    }
}

impl Stage {
    /// The recipe's variables name the function and role this stage serves.
    fn assert_names(&self, recipe: &Recipe) {
        let var = |k: &str| {
            recipe
                .env
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(var("FUNCTION"), Some(FUNCTION), "{:?}", recipe.env);
        assert_eq!(
            var("FUNCTION_ROLE"),
            Some(FUNCTION_ROLE),
            "{:?}",
            recipe.env
        );
    }

    /// After the deploy step: the function exists in moto's Lambda, an image function whose
    /// `ImageUri` is the pushed repository pinned to the digest of the build's report
    /// (`image.json`), with the execution role the recipe names.
    fn assert_deployed(&self) {
        let report: Value = serde_json::from_slice(
            &fs::read(self.sandbox.dir.path().join("fixtures/image.json")).unwrap(),
        )
        .unwrap();
        let digest = report["digest"]
            .as_str()
            .expect("image.json names a digest");
        let f = self.moto.function(FUNCTION);
        assert!(
            !f.is_null(),
            "the recipe did not create function {FUNCTION}"
        );
        assert_eq!(f["Configuration"]["PackageType"], "Image", "{f}");
        assert_eq!(f["Configuration"]["Role"], FUNCTION_ROLE, "{f}");
        let uri = f["Code"]["ImageUri"].as_str().unwrap_or_default();
        assert!(
            uri.starts_with(&format!("{ECR_HOST}/fn")) && uri.ends_with(&format!("@{digest}")),
            "ImageUri {uri} is not {ECR_HOST}/fn pinned to the built {digest}"
        );
    }
}

/// The static keys the stand-ins take in place of a role's temporary credentials.
fn role_keys() -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ACCESS_KEY_ID", "ASIALAMINACI00000001".into()),
        ("AWS_SECRET_ACCESS_KEY", "ci-role-secret".into()),
        ("AWS_SESSION_TOKEN", "ci-role-session".into()),
    ]
}

#[test]
fn the_github_actions_recipe_builds_checks_and_pushes_to_ecr() {
    let recipe = recipe("github-actions.md", Service::GitHub);
    let stage = Stage::new();
    let sha = "0123456789abcdef0123456789abcdef01234567";
    // What the runner sets, and what configure-aws-credentials exports for the role.
    let mut ci = vec![("GITHUB_SHA", sha.to_owned()), ("CI", "true".to_owned())];
    ci.extend(role_keys());
    stage.assert_names(&recipe);
    let mut ran = Vec::new();
    for (name, _) in &recipe.steps {
        let out = stage.run(&recipe, name, &ci);
        assert!(out.status.success(), "step `{name}`:\n{}", describe(&out));
        ran.push(name.clone());
    }
    assert_eq!(ran, ["Install lamina", "Build and push", "Deploy"]);
    stage.assert_pushed(sha);
    let pushed: Value = serde_json::from_slice(
        &fs::read(stage.sandbox.dir.path().join("fixtures/pushed.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        pushed["digest"].as_str(),
        Some(stage.reg.manifest_digest(&format!("fn:{sha}")).as_str())
    );
    let cache = stage.sandbox.dir.path().join("home/.cache/lamina");
    assert!(
        fs::read_dir(&cache).is_ok_and(|mut rd| rd.next().is_some()),
        "~/.cache/lamina, the path the recipe caches, holds lamina's cache"
    );
    stage.assert_deployed();
}

#[test]
fn the_gitlab_recipe_gets_credentials_by_web_identity_and_pushes_to_ecr() {
    let recipe = recipe("gitlab-ci.md", Service::GitLab);
    let stage = Stage::new();
    let project = stage.sandbox.dir.path().join("fixtures");
    // What GitLab sets: the project directory, the commit, and the ID token (a JWT moto's STS
    // takes without checking its signature). No AWS keys: the web identity exchange gets them.
    let ci = vec![
        ("CI_PROJECT_DIR", project.display().to_string()),
        ("CI_COMMIT_SHORT_SHA", "0123abcd".to_owned()),
        ("CI_COMMIT_BRANCH", "main".to_owned()),
        ("CI_DEFAULT_BRANCH", "main".to_owned()),
        (
            "AWS_ID_TOKEN",
            "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJwcm9qZWN0X3BhdGg6Z3JvdXAvZm4ifQ.c2ln".to_owned(),
        ),
    ];
    stage.assert_names(&recipe);
    let out = stage.run(&recipe, "image", &ci);
    assert!(out.status.success(), "job `image`:\n{}", describe(&out));
    stage.assert_pushed("0123abcd");
    let token = fs::read_to_string(project.join(".aws-web-identity-token")).unwrap();
    assert!(
        token.starts_with("eyJ"),
        "the ID token was written for the SDK: {token}"
    );
    assert!(
        project.join(".lamina-cache").is_dir(),
        "LAMINA_CACHE_DIR (the cached path) holds lamina's cache"
    );
    let out = stage.run(&recipe, "deploy", &ci);
    assert!(out.status.success(), "job `deploy`:\n{}", describe(&out));
    stage.assert_deployed();
}

/// CodeBuild's container credentials endpoint: the service role's temporary keys, as JSON,
/// to a GET carrying the `Authorization` token CodeBuild gives the build. Counts its answers.
struct ContainerCredentials {
    server: LoopServer,
    answered: Arc<AtomicUsize>,
}

impl ContainerCredentials {
    const TOKEN: &str = "codebuild-credentials-token";

    fn start() -> ContainerCredentials {
        let answered = Arc::new(AtomicUsize::new(0));
        let count = answered.clone();
        let server = LoopServer::start(bind_loopback(), move |mut stream| {
            let Ok(Some((head, _))) = read_head(&mut stream) else {
                return;
            };
            if head.header("authorization") != Some(Self::TOKEN) {
                let _ = respond(&mut stream, 401, &[], b"{}", false);
                return;
            }
            count.fetch_add(1, Ordering::SeqCst);
            let body = serde_json::json!({
                "AccessKeyId": "ASIALAMINACODEBUILD1",
                "SecretAccessKey": "codebuild-role-secret",
                "Token": "codebuild-role-session",
                "Expiration": "2099-01-01T00:00:00Z",
            });
            let _ = respond(
                &mut stream,
                200,
                &[("Content-Type", "application/json".to_owned())],
                body.to_string().as_bytes(),
                head.method == "HEAD",
            );
        });
        ContainerCredentials { server, answered }
    }
}

#[test]
fn the_codebuild_recipe_builds_checks_and_pushes_to_ecr() {
    let recipe = recipe("codebuild.md", Service::CodeBuild);
    let stage = Stage::new();
    let creds = ContainerCredentials::start();
    // What CodeBuild sets, its credentials endpoint included (CodeBuild names it with
    // AWS_CONTAINER_CREDENTIALS_RELATIVE_URI on 169.254.170.2; the full URI form reaches the
    // loopback stand-in). No AWS keys: the SDK's container provider fetches the role's.
    let ci = vec![
        (
            "CODEBUILD_RESOLVED_SOURCE_VERSION",
            "89abcdef0123456789abcdef0123456789abcdef".to_owned(),
        ),
        ("AWS_REGION", "us-east-1".to_owned()),
        ("AWS_DEFAULT_REGION", "us-east-1".to_owned()),
        (
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            format!("http://{}/v2/credentials/build", creds.server.host()),
        ),
        (
            "AWS_CONTAINER_AUTHORIZATION_TOKEN",
            ContainerCredentials::TOKEN.to_owned(),
        ),
    ];
    stage.assert_names(&recipe);
    let out = stage.run(&recipe, "install+build", &ci);
    assert!(
        out.status.success(),
        "install and build:\n{}",
        describe(&out)
    );
    assert!(
        creds.answered.load(Ordering::SeqCst) >= 1,
        "the service role's credentials came from the container endpoint"
    );
    stage.assert_pushed("89abcdef0123");
    let cache = stage.sandbox.dir.path().join("home/.cache/lamina");
    assert!(
        fs::read_dir(&cache).is_ok_and(|mut rd| rd.next().is_some()),
        "~/.cache/lamina, the path the recipe caches, holds lamina's cache"
    );
    // CodeBuild's one shell: the phases again (the build finds its layers cached), then
    // post_build.
    let out = stage.run(&recipe, "deploy", &ci);
    assert!(out.status.success(), "post_build:\n{}", describe(&out));
    stage.assert_pushed("89abcdef0123");
    stage.assert_deployed();
}
