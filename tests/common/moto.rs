//! moto (`moto_server`) on loopback as the AWS APIs lamina calls (ECR, Lambda, IAM, S3), with a
//! CNCF distribution registry behind moto's ECR password as the registry data plane: the peers
//! of `tests/deploy.rs`. boto3 (installed with moto) reads and seeds moto's state.
//!
//! moto's server logs every request it answers (`"PUT /2015-03-31/functions/NAME/code
//! HTTP/1.1" 200`), so a test can count the API calls lamina made.

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use super::{
    Registry, STARTUP_DEADLINE, Sandbox, base64, clear_aws_env, describe, find_tool, free_port,
    http_status, run_bounded,
};

/// moto's default account.
pub const AWS_ACCOUNT: &str = "123456789012";
/// The region every test uses.
pub const AWS_REGION: &str = "us-east-1";
/// The ECR registry host of that account and region.
pub const ECR_HOST: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";
/// Distinctive AWS credentials: finding the secret in lamina's output means it leaked.
pub const AWS_KEY_ID: &str = "AKIALAMINADEPLOY0001";
pub const AWS_SECRET: &str = "aws-Dq7pLm-lamina-deploy-secret-3XzV";

const MOTO_HINT: &str = "install it with `python3 -m pip install 'moto[server]'` (boto3 comes \
                         with it) or run `bash .ci/run`, which installs the test peers";

/// A `moto_server` on 127.0.0.1 with its own in-memory state; killed on drop.
pub struct MotoServer {
    /// `127.0.0.1:PORT`
    pub host: String,
    child: Child,
    log: PathBuf,
    _tmp: TempDir,
}

impl MotoServer {
    /// Start one on a free port (another tried if the port was taken meanwhile).
    pub fn start() -> MotoServer {
        let bin = find_tool("moto_server").unwrap_or_else(|| {
            panic!(
                "`moto_server` is required by lamina's deploy tests but was not found; {MOTO_HINT}"
            )
        });
        let tmp = TempDir::new().expect("tempdir");
        let log = tmp.path().join("moto.log");
        let mut last = String::new();
        for _attempt in 0..5 {
            let port = free_port();
            let host = format!("127.0.0.1:{port}");
            let log_file = fs::File::create(&log).expect("create moto.log");
            let mut cmd = Command::new(&bin);
            clear_aws_env(&mut cmd);
            let mut child = cmd
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .current_dir(tmp.path())
                .stdin(Stdio::null())
                .stdout(log_file.try_clone().expect("dup log"))
                .stderr(log_file)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
            let deadline = Instant::now() + STARTUP_DEADLINE;
            let failure = loop {
                if let Ok(Some(status)) = child.try_wait() {
                    break format!(
                        "moto_server exited with {status}:\n{}",
                        fs::read_to_string(&log).unwrap_or_default()
                    );
                }
                if http_status(&host, "/moto-api/") == Some(200) {
                    return MotoServer {
                        host,
                        child,
                        log,
                        _tmp: tmp,
                    };
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break format!(
                        "moto_server did not answer on {host} within {STARTUP_DEADLINE:?}:\n{}",
                        fs::read_to_string(&log).unwrap_or_default()
                    );
                }
                thread::sleep(Duration::from_millis(100));
            };
            if !failure.contains("in use") {
                panic!("{failure}");
            }
            last = failure;
        }
        panic!("moto_server could not bind a port after 5 tries:\n{last}")
    }

    /// Everything moto logged (one line per request answered).
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How many requests moto answered whose log line contains `method path-prefix`
    /// (e.g. `"PUT /2015-03-31/functions/app/code"`).
    pub fn requests(&self, what: &str) -> usize {
        let needle = format!("\"{what}");
        self.log().lines().filter(|l| l.contains(&needle)).count()
    }

    /// `http://127.0.0.1:PORT`, the value of `AWS_ENDPOINT_URL`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.host)
    }

    /// Run `body` with boto3 clients `ecr`, `lam` (Lambda), `iam` and `s3` talking to this
    /// moto, and return the JSON it assigned to `out`.
    pub fn py(&self, body: &str) -> Value {
        let script = format!(
            "import base64, json, sys, boto3\n\
             from botocore.config import Config\n\
             def client(name):\n    return boto3.client(name, region_name='{AWS_REGION}', endpoint_url=sys.argv[1], \
             aws_access_key_id='{AWS_KEY_ID}', aws_secret_access_key='{AWS_SECRET}', \
             config=Config(s3={{'addressing_style': 'path'}}))\n\
             ecr, lam, iam, s3 = client('ecr'), client('lambda'), client('iam'), client('s3')\n\
             out = None\n\
             {body}\n\
             print(json.dumps(out, default=str))\n"
        );
        let bin = find_tool("python3").unwrap_or_else(|| {
            panic!("`python3` is required by lamina's deploy tests; {MOTO_HINT}")
        });
        let mut cmd = Command::new(bin);
        clear_aws_env(&mut cmd);
        let out = run_bounded(
            cmd.arg("-c").arg(&script).arg(self.endpoint()),
            None,
            Duration::from_secs(60),
        );
        assert!(
            out.status.success(),
            "python3/boto3 against moto failed ({MOTO_HINT}):\n{script}\n{}",
            describe(&out),
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("python3 printed no JSON ({e}):\n{}", describe(&out)))
    }

    /// An IAM role Lambda can assume; returns its ARN.
    pub fn create_role(&self, name: &str) -> String {
        let v = self.py(&format!(
            "doc = json.dumps({{'Version': '2012-10-17', 'Statement': [{{'Effect': 'Allow', \
             'Principal': {{'Service': 'lambda.amazonaws.com'}}, 'Action': 'sts:AssumeRole'}}]}})\n\
             out = iam.create_role(RoleName='{name}', AssumeRolePolicyDocument=doc)['Role']['Arn']"
        ));
        v.as_str().expect("role ARN").to_owned()
    }

    /// An S3 bucket.
    pub fn create_bucket(&self, name: &str) {
        self.py(&format!("s3.create_bucket(Bucket='{name}')\nout = True"));
    }

    /// An ECR repository.
    pub fn create_repository(&self, name: &str) {
        self.py(&format!(
            "ecr.create_repository(repositoryName='{name}')\nout = True"
        ));
    }

    /// GetFunction's answer, or `null` when the function does not exist.
    pub fn function(&self, name: &str) -> Value {
        self.py(&format!(
            "try:\n    out = lam.get_function(FunctionName='{name}')\n    out.pop('ResponseMetadata', None)\n\
             except lam.exceptions.ResourceNotFoundException:\n    out = None"
        ))
    }

    /// The ECR repositories moto knows, by name.
    pub fn ecr_repositories(&self) -> std::collections::BTreeMap<String, Value> {
        let v = self.py("out = ecr.describe_repositories()['repositories']");
        v.as_array()
            .expect("repositories")
            .iter()
            .map(|r| (r["repositoryName"].as_str().unwrap().to_owned(), r.clone()))
            .collect()
    }

    /// (user, password) decoded from moto's GetAuthorizationToken.
    pub fn registry_credentials(&self) -> (String, String) {
        let v = self.py(
            "d = ecr.get_authorization_token()['authorizationData'][0]\n\
             out = base64.b64decode(d['authorizationToken']).decode()",
        );
        let token = v.as_str().expect("token string");
        let (u, p) = token
            .split_once(':')
            .unwrap_or_else(|| panic!("moto's token is not USER:PASSWORD: {token}"));
        (u.to_owned(), p.to_owned())
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// moto and a TLS + htpasswd registry that accepts moto's ECR password.
pub struct AwsPeers {
    pub moto: MotoServer,
    pub reg: Registry,
    pub password: String,
}

impl AwsPeers {
    pub fn start() -> AwsPeers {
        let moto = MotoServer::start();
        let (user, password) = moto.registry_credentials();
        let reg = Registry::tls_basic(&user, &password);
        AwsPeers {
            moto,
            reg,
            password,
        }
    }

    /// A [`Sandbox`] with AWS settings for this moto: static keys, us-east-1,
    /// `AWS_ENDPOINT_URL`, no IMDS, empty shared config and credentials files.
    pub fn sandbox(&self) -> Sandbox {
        let mut sb = Sandbox::new(vec![
            AWS_SECRET.to_owned(),
            self.password.clone(),
            base64(format!("AWS:{}", self.password).as_bytes()),
        ]);
        aws_env(&mut sb, &self.moto.endpoint(), AWS_REGION);
        sb
    }

    /// `--registry-endpoint https://HOST --ca-cert CA`: every ECR registry reached at the
    /// distribution registry.
    pub fn registry_flags(&self) -> Vec<String> {
        let mut v = vec![
            "--registry-endpoint".to_owned(),
            format!("https://{}", self.reg.host),
        ];
        v.extend(self.reg.lamina_flags());
        v
    }
}

/// The AWS environment of a sandbox talking to moto at `endpoint`: the test's static keys, the
/// region, empty shared config and credentials files inside the sandbox (nothing of the
/// host's), no instance metadata.
pub fn aws_env(sb: &mut Sandbox, endpoint: &str, region: &str) {
    let aws = sb.root().join("aws");
    fs::create_dir_all(&aws).expect("mkdir sandbox aws");
    fs::write(aws.join("config"), "").expect("write aws/config");
    fs::write(aws.join("credentials"), "").expect("write aws/credentials");
    sb.set("AWS_ACCESS_KEY_ID", AWS_KEY_ID);
    sb.set("AWS_SECRET_ACCESS_KEY", AWS_SECRET);
    sb.set("AWS_REGION", region);
    sb.set("AWS_ENDPOINT_URL", endpoint);
    sb.set("AWS_EC2_METADATA_DISABLED", "true");
    sb.set("AWS_CONFIG_FILE", aws.join("config"));
    sb.set("AWS_SHARED_CREDENTIALS_FILE", aws.join("credentials"));
}
