//! moto (`moto_server`) as the AWS API stand-in (ECR, STS) on 127.0.0.1, for tests that need
//! it outside tests/ecr.rs (which keeps its own richer harness): started with its own state,
//! every wait bounded, killed on drop.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{
    STARTUP_DEADLINE, clear_aws_env, describe, find_tool, free_port, http_status, run_bounded,
};

pub const MOTO_HINT: &str = "install it with `python3 -m pip install 'moto[server]'` (boto3 \
                             comes with it) or run `bash .ci/run`, which installs the test peers";

/// A running `moto_server`.
pub struct MotoServer {
    /// `127.0.0.1:PORT`
    pub host: String,
    child: Child,
    log: PathBuf,
    _tmp: tempfile::TempDir,
}

impl MotoServer {
    /// Start one; panics (never skips) when `moto_server` is missing or does not come up.
    pub fn start() -> MotoServer {
        let bin = find_tool("moto_server")
            .unwrap_or_else(|| panic!("`moto_server` is required but was not found; {MOTO_HINT}"));
        let tmp = tempfile::TempDir::new().expect("tempdir");
        let log = tmp.path().join("moto.log");
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
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
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
                    panic!(
                        "moto_server did not answer on {host} within {STARTUP_DEADLINE:?}:\n{}",
                        fs::read_to_string(&log).unwrap_or_default()
                    );
                }
                thread::sleep(Duration::from_millis(100));
            }
        }
        panic!(
            "moto_server could not start after 5 tries:\n{}",
            fs::read_to_string(&log).unwrap_or_default()
        )
    }

    /// `http://127.0.0.1:PORT`: the value of `AWS_ENDPOINT_URL`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.host)
    }

    /// Run `body` with boto3's ECR client `c`, returning the JSON it assigned to `out`.
    pub fn ecr_py(&self, body: &str) -> Value {
        let script = format!(
            "import base64, json, sys, boto3\n\
             c = boto3.client('ecr', region_name='us-east-1', endpoint_url=sys.argv[1], \
             aws_access_key_id='AKIAMOTO', aws_secret_access_key='moto')\n\
             out = None\n{body}\nprint(json.dumps(out, default=str))\n"
        );
        let python = find_tool("python3").expect("python3");
        let mut cmd = Command::new(python);
        clear_aws_env(&mut cmd);
        cmd.arg("-c").arg(&script).arg(self.endpoint());
        let out = run_bounded(&mut cmd, None, Duration::from_secs(60));
        assert!(
            out.status.success(),
            "boto3 against moto failed ({MOTO_HINT}):\n{}\n--- moto.log ---\n{}",
            describe(&out),
            fs::read_to_string(&self.log).unwrap_or_default()
        );
        serde_json::from_slice(&out.stdout).expect("boto3 printed JSON")
    }

    /// (user, password) of moto's ECR GetAuthorizationToken.
    pub fn ecr_credentials(&self) -> (String, String) {
        let v = self.ecr_py(
            "d = c.get_authorization_token()['authorizationData'][0]\n\
             out = base64.b64decode(d['authorizationToken']).decode()",
        );
        let token = v.as_str().expect("token string");
        let (u, p) = token.split_once(':').expect("USER:PASSWORD");
        (u.to_owned(), p.to_owned())
    }

    /// The ECR repositories moto knows, by name.
    pub fn ecr_repositories(&self) -> BTreeMap<String, Value> {
        let v = self.ecr_py("out = c.describe_repositories()['repositories']");
        v.as_array()
            .expect("repositories")
            .iter()
            .map(|r| (r["repositoryName"].as_str().unwrap().to_owned(), r.clone()))
            .collect()
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
