//! `lamina run`/`invoke` closer to Lambda (issue 15): the function runs as Lambda's non-root
//! user, sees Lambda's environment, gets AWS credentials only on request, and times out with
//! Lambda's error. Each test builds a scratch image with Debian's static busybox and a
//! bootstrap script of its own speaking the real Runtime API, runs it in lamina's namespace
//! sandbox, and looks at what the function saw.
//!
//! These tests need user namespaces and `/bin/busybox` from `busybox-static`: without them
//! they fail, loudly.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;

const BUSYBOX: &str = "/bin/busybox";
const APPLETS: [&str; 13] = [
    "sh", "wget", "grep", "sed", "tr", "cat", "sleep", "id", "env", "head", "echo", "nc", "ls",
];

/// The Runtime API helpers every bootstrap starts with: `next` fetches an invocation into
/// /tmp/event (its id in `$id`), `respond FILE` posts FILE as the response.
const PRELUDE: &str = r#"#!/bin/sh
api="http://$AWS_LAMBDA_RUNTIME_API/2018-06-01/runtime"
next() {
  wget -S -O /tmp/event "$api/invocation/next" 2>/tmp/headers || exit 1
  id=$(grep -i '^ *lambda-runtime-aws-request-id:' /tmp/headers | sed 's/^[^:]*: *//' | tr -d '\r')
}
respond() { wget -q -O /dev/null --post-file "$1" "$api/invocation/$id/response"; }
"#;

/// A scratch image at `dir/images:TAG`: busybox, `bootstrap` (after [`PRELUDE`]) as
/// `/var/runtime/bootstrap`, and `files` (path in the image, bytes, mode), each in a layer of
/// its own with that mode (lamina gives every file 0644 or 0755 unless a layer says `mode`).
fn image(dir: &Path, tag: &str, bootstrap: &str, files: &[(&str, &[u8], u32)]) -> String {
    let busybox = std::fs::read(BUSYBOX)
        .unwrap_or_else(|e| panic!("{BUSYBOX} is missing ({e}): install Debian's busybox-static"));
    let stage = dir.join(format!("stage-{tag}"));
    for d in ["bin", "var/runtime", "var/task", "tmp", "opt"] {
        std::fs::create_dir_all(stage.join(d)).unwrap();
    }
    write_file(&stage.join("bin/busybox"), &busybox, 0o755);
    for a in APPLETS {
        std::os::unix::fs::symlink("busybox", stage.join("bin").join(a)).unwrap();
    }
    write_file(
        &stage.join("var/runtime/bootstrap"),
        format!("{PRELUDE}{bootstrap}").as_bytes(),
        0o755,
    );
    let to = oci_ref(&dir.join("images"), tag);
    let mut spec = format!(
        "base = \"scratch\"\nto = \"{to}\"\n\n[[layer]]\nsource = \"{}\"\ndest = \"/\"\n",
        stage.display()
    );
    for (i, (path, data, mode)) in files.iter().enumerate() {
        let src = dir.join(format!("file-{tag}-{i}"));
        write_file(&src, data, *mode);
        spec.push_str(&format!(
            "\n[[layer]]\nsource = \"{}\"\ndest = \"{path}\"\nmode = \"{mode:04o}\"\n",
            src.display()
        ));
    }
    spec.push_str(
        "\n[config]\nentrypoint = [\"/var/runtime/bootstrap\"]\ncmd = [\"app.handler\"]\nworkdir = \"/var/task\"\nenv = { PATH = \"/bin\" }\n",
    );
    let spec_path = dir.join(format!("lamina-{tag}.toml"));
    std::fs::write(&spec_path, spec).unwrap();
    lamina_ok(
        &["build", "-f", spec_path.to_str().unwrap(), "-q"],
        dir,
        &[],
    );
    to
}

/// A fresh working directory under cargo's target tmp (removed on drop).
fn workdir() -> tempfile::TempDir {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("inner-loop");
    std::fs::create_dir_all(&base).unwrap();
    tempfile::TempDir::new_in(base).unwrap()
}

/// `lamina invoke IMAGE ARGS...` with the event `{}`, lamina's environment without AWS_*
/// plus `env`, bounded to a minute.
fn invoke(dir: &Path, image: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(lamina_bin());
    cmd.args(["invoke", image])
        .args(args)
        .env("LAMINA_CACHE_DIR", dir.join("cache"))
        .current_dir(dir);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    // No shared config file of the host's: only what the test sets.
    cmd.env("AWS_CONFIG_FILE", dir.join("no-aws-config"))
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            dir.join("no-aws-credentials"),
        )
        .env("AWS_EC2_METADATA_DISABLED", "true");
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_bounded(&mut cmd, None, Duration::from_secs(60))
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `KEY=VALUE` lines as pairs.
fn vars(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn var<'a>(vars: &'a [(String, String)], k: &str) -> Option<&'a str> {
    vars.iter()
        .find(|(key, _)| key == k)
        .map(|(_, v)| v.as_str())
}

/// Reports its ids and whether it can read /etc/secret (root's, mode 0600) and write
/// /var/task and /opt.
const WHOAMI: &str = r#"
next
{
  echo "uid=$(id -u)"
  echo "gid=$(id -g)"
  if cat /etc/secret >/dev/null 2>/tmp/err; then echo "secret=read"; else echo "secret=$(cat /tmp/err)"; fi
  if echo x 2>/dev/null >/var/task/new; then echo "task=writable"; else echo "task=read-only"; fi
  if echo x 2>/dev/null >/opt/new; then echo "opt=writable"; else echo "opt=read-only"; fi
  if echo x 2>/dev/null >/tmp/new; then echo "tmp=writable"; else echo "tmp=read-only"; fi
} >/tmp/out
respond /tmp/out
"#;

#[test]
fn the_function_runs_as_lambdas_user_and_a_root_only_file_fails_as_on_lambda() {
    let dir = workdir();
    let files: &[(&str, &[u8], u32)] = &[
        // Outside /var/task and /opt, which lamina build opens up (--fix-permissions).
        ("/etc/secret", b"root only\n", 0o600),
        ("/opt/layer.txt", b"a layer\n", 0o644),
    ];
    let img = image(dir.path(), "whoami", WHOAMI, files);

    let out = invoke(dir.path(), &img, &[], &[]);
    assert!(out.status.success(), "{}", describe(&out));
    let v = vars(&stdout(&out));
    assert_eq!(
        var(&v, "uid"),
        Some("993"),
        "Lambda's sbx_user1051:\n{}",
        describe(&out)
    );
    assert_eq!(var(&v, "gid"), Some("990"), "{}", describe(&out));
    let secret = var(&v, "secret").unwrap();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        // Unprivileged: the documented trade-off, said on stderr (see the test below).
        assert!(
            stderr_of(&out).contains("readable here but not on Lambda"),
            "{}",
            describe(&out)
        );
        return;
    }
    assert!(
        secret.contains("Permission denied"),
        "a file only root may read must fail as it does on Lambda: {secret}\n{}",
        describe(&out)
    );
    assert_eq!(var(&v, "task"), Some("read-only"));
    assert_eq!(var(&v, "opt"), Some("read-only"));
    assert_eq!(var(&v, "tmp"), Some("writable"));
    assert!(
        stderr_of(&out).contains("running as uid 993 gid 990"),
        "the isolation line says who the function runs as:\n{}",
        describe(&out)
    );

    // --user changes it, --root opts out.
    let out = invoke(dir.path(), &img, &["--user", "1234:5678"], &[]);
    assert!(out.status.success(), "{}", describe(&out));
    let v = vars(&stdout(&out));
    assert_eq!(
        (var(&v, "uid"), var(&v, "gid")),
        (Some("1234"), Some("5678"))
    );
    let out = invoke(dir.path(), &img, &["--root"], &[]);
    assert!(out.status.success(), "{}", describe(&out));
    let v = vars(&stdout(&out));
    assert_eq!(var(&v, "uid"), Some("0"));
    assert_eq!(var(&v, "secret"), Some("read"));
    assert_eq!(
        var(&v, "task"),
        Some("read-only"),
        "read-only even for root"
    );

    let out = invoke(dir.path(), &img, &["--user", "nobody"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        stderr_of(&out).contains("--user `nobody`"),
        "{}",
        describe(&out)
    );
}

#[test]
fn unprivileged_lamina_maps_its_own_uid_to_993_and_says_what_that_changes() {
    use std::os::unix::fs::PermissionsExt;
    let dir = workdir();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let files: &[(&str, &[u8], u32)] = &[("/etc/secret", b"root only\n", 0o600)];
    let img = image(dir.path(), "whoami-unprivileged", WHOAMI, files);
    let cache = dir.path().join("unprivileged-cache");
    std::fs::create_dir(&cache).unwrap();
    // As root, lamina is run as nobody (setpriv, from util-linux); otherwise as the user.
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let mut cmd = if root {
        std::os::unix::fs::chown(&cache, Some(65534), Some(65534)).unwrap();
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            lamina_bin(),
        ]);
        c
    } else {
        Command::new(lamina_bin())
    };
    let out = cmd
        .args(["invoke", &img])
        .env("LAMINA_CACHE_DIR", &cache)
        .env("HOME", &cache)
        .current_dir(&cache)
        .output()
        .expect("setpriv (util-linux) runs lamina");
    assert!(out.status.success(), "{}", describe(&out));
    let v = vars(&stdout(&out));
    assert_eq!(
        (var(&v, "uid"), var(&v, "gid")),
        (Some("993"), Some("990")),
        "{}",
        describe(&out)
    );
    let err = stderr_of(&out);
    assert!(err.contains("mapped to uid 993 gid 990 inside"), "{err}");
    // The trade-off, said: the image's files appear owned by 993, so root's file is readable.
    assert!(
        err.contains("lamina: note: ") && err.contains("readable here but not on Lambda"),
        "{err}"
    );
    assert_eq!(var(&v, "secret"), Some("read"), "{err}");
    assert_eq!(var(&v, "task"), Some("read-only"));
    assert_eq!(var(&v, "tmp"), Some("writable"));
}

/// Answers with its whole environment (busybox `env`).
const ENV: &str = r#"
next
env >/tmp/out
respond /tmp/out
"#;

#[test]
fn the_function_sees_lambdas_environment() {
    let dir = workdir();
    let img = image(dir.path(), "env", ENV, &[]);
    let out = invoke(
        dir.path(),
        &img,
        &[
            "--function-name",
            "env-fn",
            "--memory",
            "256",
            "--managed-runtime",
            "python3.12",
        ],
        &[("AWS_REGION", "eu-west-3")],
    );
    assert!(out.status.success(), "{}", describe(&out));
    let v = vars(&stdout(&out));
    let expected = [
        ("AWS_LAMBDA_FUNCTION_NAME", "env-fn"),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256"),
        ("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/env-fn"),
        ("AWS_REGION", "eu-west-3"),
        ("AWS_DEFAULT_REGION", "eu-west-3"),
        ("LAMBDA_TASK_ROOT", "/var/task"),
        ("LAMBDA_RUNTIME_DIR", "/var/runtime"),
        ("TZ", ":UTC"),
        ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand"),
        ("AWS_EXECUTION_ENV", "AWS_Lambda_python3.12"),
        ("PATH", "/bin"),
    ];
    for (k, want) in expected {
        assert_eq!(var(&v, k), Some(want), "{k}:\n{}", describe(&out));
    }
    // YYYY/MM/DD/[$LATEST] and 32 hex digits.
    let stream = var(&v, "AWS_LAMBDA_LOG_STREAM_NAME").unwrap();
    let (date, id) = stream
        .split_once("/[$LATEST]")
        .unwrap_or_else(|| panic!("{stream}"));
    let parts: Vec<&str> = date.split('/').collect();
    assert!(
        parts.len() == 3 && parts.iter().zip([4, 2, 2]).all(|(p, n)| p.len() == n),
        "{stream}"
    );
    assert!(
        id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit()),
        "{stream}"
    );
    // No credentials unless asked for, even when lamina has some.
    assert_eq!(var(&v, "AWS_ACCESS_KEY_ID"), None);

    // An OS-only runtime has no AWS_EXECUTION_ENV; an unknown one is refused.
    let out = invoke(
        dir.path(),
        &img,
        &["--managed-runtime", "provided.al2023"],
        &[],
    );
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(var(&vars(&stdout(&out)), "AWS_EXECUTION_ENV"), None);
    let out = invoke(dir.path(), &img, &["--managed-runtime", "python3.21"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(stderr_of(&out).contains("python3.12"), "{}", describe(&out));
}

#[test]
fn aws_credentials_are_given_only_on_request_and_never_printed() {
    let dir = workdir();
    let img = image(dir.path(), "creds", ENV, &[]);
    let secret = "wJalrXUtnFEMI-inner-loop-secret";
    let creds = [
        ("AWS_ACCESS_KEY_ID", "AKIAINNERLOOPTEST"),
        ("AWS_SECRET_ACCESS_KEY", secret),
        ("AWS_SESSION_TOKEN", "token-inner-loop"),
    ];
    let out = invoke(dir.path(), &img, &[], &creds);
    assert!(out.status.success(), "{}", describe(&out));
    let v = vars(&stdout(&out));
    assert_eq!(
        var(&v, "AWS_SECRET_ACCESS_KEY"),
        None,
        "given without --aws-credentials"
    );

    let out = invoke(dir.path(), &img, &["--aws-credentials"], &creds);
    assert!(out.status.success(), "{}", describe(&out));
    let v = vars(&stdout(&out));
    assert_eq!(var(&v, "AWS_ACCESS_KEY_ID"), Some("AKIAINNERLOOPTEST"));
    assert_eq!(var(&v, "AWS_SECRET_ACCESS_KEY"), Some(secret));
    assert_eq!(var(&v, "AWS_SESSION_TOKEN"), Some("token-inner-loop"));
    assert!(!stderr_of(&out).contains(secret), "{}", describe(&out));

    // From a profile of the shared credentials file: the aws-config chain, not just the
    // environment.
    let file = dir.path().join("credentials");
    std::fs::write(
        &file,
        "[dev]\naws_access_key_id = AKIAFROMPROFILE\naws_secret_access_key = from-profile\n",
    )
    .unwrap();
    let out = invoke(
        dir.path(),
        &img,
        &["--aws-credentials"],
        &[
            ("AWS_SHARED_CREDENTIALS_FILE", file.to_str().unwrap()),
            ("AWS_PROFILE", "dev"),
        ],
    );
    assert!(out.status.success(), "{}", describe(&out));
    let v = vars(&stdout(&out));
    assert_eq!(var(&v, "AWS_ACCESS_KEY_ID"), Some("AKIAFROMPROFILE"));
    assert_eq!(var(&v, "AWS_SESSION_TOKEN"), None);

    // None to be found: a clear error, nothing run.
    let out = invoke(dir.path(), &img, &["--aws-credentials"], &[]);
    assert!(!out.status.success(), "{}", describe(&out));
    let err = stderr_of(&out);
    assert!(
        err.contains("--aws-credentials: no AWS credentials"),
        "{err}"
    );
    assert!(!err.contains("START RequestId"), "{err}");
}

/// Sleeps through any invocation.
const SLEEPY: &str = r#"
next
sleep 30
"#;

#[test]
fn a_timeout_answers_sandbox_timedout_as_the_runtime_interface_emulator_names_it() {
    let dir = workdir();
    let img = image(dir.path(), "sleepy", SLEEPY, &[]);
    let out = invoke(dir.path(), &img, &["--timeout", "1"], &[]);
    assert!(!out.status.success(), "{}", describe(&out));
    let body: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", describe(&out)));
    assert_eq!(body["errorType"], "Sandbox.Timedout", "{body}");
    let msg = body["errorMessage"].as_str().unwrap();
    assert!(
        msg.starts_with("RequestId: ")
            && msg.ends_with(" Error: Task timed out after 1.00 seconds"),
        "{msg}"
    );
}

/// Holds `$MB` megabytes in a shell variable, then answers.
const HOG: &str = r#"
next
x=$(head -c $((MB * 1024 * 1024)) /dev/zero | tr '\0' a)
echo "held ${#x}" >/tmp/out
respond /tmp/out
"#;

#[test]
fn memory_over_the_limit_is_runtime_out_of_memory_or_said_not_enforced() {
    let dir = workdir();
    let img = image(dir.path(), "hog", HOG, &[]);
    let out = invoke(
        dir.path(),
        &img,
        &["--memory", "128", "--env", "MB=400"],
        &[],
    );
    let err = stderr_of(&out);
    if err.contains("lamina: memory: limited to 128 MB") {
        // The cgroup is removed when lamina ends; one a killed lamina left (a dead pid) is
        // swept by the next run.
        let cgroup = err
            .lines()
            .find_map(|l| l.split("(cgroup v").nth(1))
            .and_then(|r| r.split_once(' '))
            .map(|(_, path)| PathBuf::from(path.trim_end_matches(')')))
            .unwrap_or_else(|| panic!("no cgroup path in:\n{err}"));
        assert!(!cgroup.exists(), "{} was left behind", cgroup.display());
        let stale = cgroup.parent().unwrap().join("lamina-99999999-0"); // past any pid_max
        std::fs::create_dir(&stale).unwrap();
        assert!(!out.status.success(), "{}", describe(&out));
        let body: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", describe(&out)));
        assert_eq!(body["errorType"], "Runtime.OutOfMemory", "{body}\n{err}");
        assert!(
            body["errorMessage"]
                .as_str()
                .unwrap()
                .ends_with("Error: Runtime exited with error: signal: killed"),
            "{body}"
        );
        // Under the limit it answers, and REPORT says how much it used.
        let out = invoke(dir.path(), &img, &["--memory", "128", "--env", "MB=8"], &[]);
        assert!(out.status.success(), "{}", describe(&out));
        assert_eq!(stdout(&out).trim(), format!("held {}", 8 * 1024 * 1024));
        assert!(
            stderr_of(&out).contains("Max Memory Used: "),
            "{}",
            describe(&out)
        );
        assert!(
            !stale.exists(),
            "the stale cgroup {} was not swept",
            stale.display()
        );
    } else {
        // A host that delegates no cgroup: said, and the function still runs.
        assert!(
            err.contains("lamina: memory: --memory 128 is told to the function but not enforced: "),
            "{}",
            describe(&out)
        );
    }
}

/// A `lamina run` in the background, its stderr collected; stopped (SIGTERM) by [`Server::stop`]
/// or on drop.
struct Server {
    child: std::process::Child,
    addr: String,
    log: std::sync::Arc<std::sync::Mutex<String>>,
    lines: std::thread::JoinHandle<()>,
}

impl Server {
    fn start(dir: &Path, image: &str, args: &[&str]) -> Server {
        use std::io::BufRead;
        let mut child = Command::new(lamina_bin())
            .args(["run", image, "--port", "0"])
            .args(args)
            .env("LAMINA_CACHE_DIR", dir.join("cache"))
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("lamina starts");
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let reader = std::io::BufReader::new(child.stderr.take().unwrap());
        let l = log.clone();
        let lines = std::thread::spawn(move || {
            for line in reader.lines() {
                let Ok(line) = line else { break };
                if let Some(at) = line.find("http://") {
                    let rest = &line[at + 7..];
                    let _ = tx.send(rest[..rest.find('/').unwrap_or(rest.len())].to_owned());
                }
                let mut l = l.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| {
                panic!(
                    "lamina run did not listen within a minute:\n{}",
                    log.lock().unwrap()
                )
            });
        Server {
            child,
            addr,
            log,
            lines,
        }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// SIGTERM, then wait (bounded) for lamina to end; its whole stderr.
    fn stop(mut self) -> String {
        // SAFETY: signalling the child we started.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let lines = std::mem::replace(&mut self.lines, std::thread::spawn(|| {}));
        let _ = lines.join();
        self.log()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request on a fresh connection: status, headers and body, read to the end (bounded).
fn http_post(addr: &str, path: &str, body: &[u8]) -> (u16, String, Vec<u8>) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("not HTTP: {}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head, raw[split + 4..].to_vec())
}

const INVOKE_PATH: &str = "/2015-03-31/functions/function/invocations";

/// An external extension in busybox sh: registers for INVOKE and SHUTDOWN, and says on stderr
/// what it receives; after an INVOKE it works a little, says so, then asks again.
const RECORDER: &str = r#"#!/bin/sh
api="http://$AWS_LAMBDA_RUNTIME_API/2020-01-01/extension"
wget -S -q -O /tmp/ext-reg --header "Lambda-Extension-Name: recorder" \
  --post-data '{"events":["INVOKE","SHUTDOWN"]}' "$api/register" 2>/tmp/ext-headers || exit 1
id=$(grep -i '^ *lambda-extension-identifier:' /tmp/ext-headers | sed 's/^[^:]*: *//' | tr -d '\r')
echo "EXT registered as $(id -u) $(cat /tmp/ext-reg)" >&2
while :; do
  wget -q -O /tmp/ext-event --header "Lambda-Extension-Identifier: $id" "$api/event/next" || exit 1
  event=$(cat /tmp/ext-event)
  echo "EXT event $event" >&2
  case "$event" in
    *SHUTDOWN*) echo "EXT shutting down" >&2; exit 0 ;;
    *INVOKE*) sleep 1; echo "EXT finished $(echo "$event" | sed 's/.*"requestId":"\([^"]*\)".*/\1/')" >&2 ;;
  esac
done
"#;

/// Answers `ok` to every invocation.
const ECHO: &str = r#"
while :; do
  next
  cat /tmp/event >/tmp/out
  respond /tmp/out
done
"#;

/// The request id of each `START RequestId:` line, in order.
fn started(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| l.strip_prefix("START RequestId: "))
        .map(|r| r.split(' ').next().unwrap().to_owned())
        .collect()
}

fn line_of(log: &str, needle: &str) -> usize {
    log.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{log}"))
}

#[test]
fn an_extension_registers_and_receives_invoke_and_shutdown() {
    let dir = workdir();
    let files: &[(&str, &[u8], u32)] = &[("/opt/extensions/recorder", RECORDER.as_bytes(), 0o755)];
    let img = image(dir.path(), "ext", ECHO, files);
    let server = Server::start(dir.path(), &img, &["--function-name", "ext-fn"]);
    for n in 1..=2 {
        let body = format!("{{\"n\":{n}}}");
        let (status, _, answer) = http_post(&server.addr, INVOKE_PATH, body.as_bytes());
        assert_eq!(status, 200, "{}", server.log());
        assert_eq!(String::from_utf8_lossy(&answer), body, "{}", server.log());
    }
    let log = server.stop();
    let ids = started(&log);
    assert_eq!(ids.len(), 2, "{log}");
    // Registered (as Lambda's user, told the function's name) before the first invocation.
    let reg = line_of(&log, "EXT registered as 993 ");
    assert!(log.contains(r#""functionName":"ext-fn""#), "{log}");
    assert!(
        reg < line_of(&log, &format!("START RequestId: {}", ids[0])),
        "{log}"
    );
    // Each invocation reaches it as an INVOKE event with its request id, and the second one
    // starts only after the extension has finished the first and asked again.
    for id in &ids {
        assert!(
            log.lines().any(|l| l.starts_with("EXT event ")
                && l.contains(r#""eventType":"INVOKE""#)
                && l.contains(&format!(r#""requestId":"{id}""#))),
            "no INVOKE for {id}:\n{log}"
        );
    }
    assert!(
        line_of(&log, &format!("EXT finished {}", ids[0]))
            < line_of(&log, &format!("START RequestId: {}", ids[1])),
        "the next invocation did not wait for the extension:\n{log}"
    );
    // Stopping lamina sends SHUTDOWN, and waits for the extension to handle it.
    let shutdown = line_of(&log, r#""eventType":"SHUTDOWN""#);
    assert!(
        log.lines()
            .nth(shutdown)
            .unwrap()
            .contains(r#""shutdownReason":"spindown""#),
        "{log}"
    );
    assert!(line_of(&log, "EXT shutting down") > shutdown, "{log}");
}

/// Streams its response with raw HTTP over busybox `nc`: a first chunk, then — only once the
/// test has fetched `http://127.0.0.1:$GO_PORT/` (answered after the test has read the first
/// chunk) — a second one; with `"mode":"fail"`, error trailers end it.
const STREAMER: &str = r#"
while :; do
  next
  trailers=''
  case "$(cat /tmp/event)" in
    *fail*) trailers="Lambda-Runtime-Function-Error-Type: Fixture.StreamError\r\nLambda-Runtime-Function-Error-Body: eyJlcnJvck1lc3NhZ2UiOiJib29tIn0=\r\n" ;;
  esac
  {
    printf 'POST /2018-06-01/runtime/invocation/%s/response HTTP/1.1\r\nHost: runtime\r\nLambda-Runtime-Function-Response-Mode: streaming\r\nTransfer-Encoding: chunked\r\nTrailer: Lambda-Runtime-Function-Error-Type, Lambda-Runtime-Function-Error-Body\r\nConnection: close\r\n\r\n' "$id"
    printf '6\r\nfirst\n\r\n'
    wget -q -O /dev/null "http://127.0.0.1:$GO_PORT/" || exit 1
    printf '7\r\nsecond\n\r\n'
    printf "0\r\n${trailers}\r\n"
    # nc ends when its input does: kept open until lamina has answered (and closed), so
    # that nothing is cut short.
    sleep 1
  } | nc "${AWS_LAMBDA_RUNTIME_API%:*}" "${AWS_LAMBDA_RUNTIME_API#*:}" >/tmp/posted
done
"#;

/// Reads one HTTP/1.1 chunked answer as it arrives.
struct Chunked {
    r: std::io::BufReader<std::net::TcpStream>,
}

impl Chunked {
    /// Send `body` to the invoke API asking for trailers; the answer's head.
    fn invoke(addr: &str, body: &str) -> (Chunked, String) {
        use std::io::{BufRead, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        write!(
            s,
            "POST {INVOKE_PATH} HTTP/1.1\r\nHost: {addr}\r\nTE: trailers\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut r = std::io::BufReader::new(s);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            assert!(r.read_line(&mut line).unwrap() > 0, "no answer: {head}");
            if line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        (Chunked { r }, head.to_ascii_lowercase())
    }

    fn line(&mut self) -> String {
        use std::io::BufRead;
        let mut line = String::new();
        self.r.read_line(&mut line).unwrap();
        line.trim_end_matches("\r\n").to_owned()
    }

    /// The next chunk's data; `None` at the last chunk (the trailers are then [`Chunked::line`]s).
    fn chunk(&mut self) -> Option<Vec<u8>> {
        use std::io::Read;
        let size =
            usize::from_str_radix(self.line().split(';').next().unwrap().trim(), 16).unwrap();
        if size == 0 {
            return None;
        }
        let mut data = vec![0; size];
        self.r.read_exact(&mut data).unwrap();
        assert_eq!(self.line(), "", "chunk not followed by CRLF");
        Some(data)
    }

    /// Every chunk's data to the end, and the trailers.
    fn rest(mut self) -> (Vec<u8>, Vec<String>) {
        let mut data = Vec::new();
        while let Some(c) = self.chunk() {
            data.extend(c);
        }
        let mut trailers = Vec::new();
        loop {
            let l = self.line();
            if l.is_empty() {
                break;
            }
            trailers.push(l.to_ascii_lowercase());
        }
        (data, trailers)
    }
}

/// Answer one request on `go` (bounded to 30 s): lets the streaming runtime go on.
fn let_it_go(go: &std::net::TcpListener) {
    use std::io::{Read, Write};
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match go.accept() {
            Ok((mut s, _)) => {
                s.set_nonblocking(false).unwrap();
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf);
                s.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\ngo\n")
                    .unwrap();
                return;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the runtime never asked to go on"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("accepting: {e}"),
        }
    }
}

#[test]
fn a_streamed_response_arrives_in_chunks_with_its_error_trailers() {
    let dir = workdir();
    let img = image(dir.path(), "stream", STREAMER, &[]);
    let go = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    go.set_nonblocking(true).unwrap();
    let port = go.local_addr().unwrap().port().to_string();
    let server = Server::start(dir.path(), &img, &["--env", &format!("GO_PORT={port}")]);

    let (mut answer, head) = Chunked::invoke(&server.addr, r#"{"mode":"ok"}"#);
    assert!(head.starts_with("http/1.1 200"), "{head}\n{}", server.log());
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    // The first chunk arrives while the runtime still waits (for this test) to send the rest.
    assert_eq!(
        answer.chunk().as_deref(),
        Some(&b"first\n"[..]),
        "{}",
        server.log()
    );
    let_it_go(&go);
    let (rest, trailers) = answer.rest();
    assert_eq!(rest, b"second\n", "{}", server.log());
    assert!(
        !trailers
            .iter()
            .any(|t| t.starts_with("lambda-runtime-function-error-type")),
        "{trailers:?}"
    );

    // A stream that ends in error trailers: passed on to the client as trailers.
    let (mut answer, _) = Chunked::invoke(&server.addr, r#"{"mode":"fail"}"#);
    assert_eq!(
        answer.chunk().as_deref(),
        Some(&b"first\n"[..]),
        "{}",
        server.log()
    );
    let_it_go(&go);
    let (rest, trailers) = answer.rest();
    assert_eq!(rest, b"second\n");
    assert!(
        trailers.contains(&"lambda-runtime-function-error-type: fixture.streamerror".to_owned()),
        "{trailers:?}\n{}",
        server.log()
    );
    assert!(
        trailers
            .iter()
            .any(|t| t.starts_with("lambda-runtime-function-error-body: ")),
        "{trailers:?}"
    );
    let log = server.stop();
    assert_eq!(started(&log).len(), 2, "{log}");
    assert_eq!(log.matches("END RequestId: ").count(), 2, "{log}");
}

/// Answers every invocation with /var/task/message.txt.
const MESSENGER: &str = r#"
while :; do
  next
  respond /var/task/message.txt
done
"#;

/// Wait (bounded) until the server's log has a line containing `needle`.
fn wait_for_log(server: &Server, needle: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !server.log().contains(needle) {
        assert!(
            std::time::Instant::now() < deadline,
            "no {needle:?} within a minute:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn watch_rebuilds_and_serves_the_new_code_after_a_file_changes() {
    let dir = workdir();
    // The runtime's layer (busybox and the bootstrap) and a code layer from `code/`.
    let img = image(dir.path(), "messenger", MESSENGER, &[]);
    let code = dir.path().join("code");
    std::fs::create_dir_all(&code).unwrap();
    std::fs::write(code.join("message.txt"), "one\n").unwrap();
    let spec = dir.path().join("lamina.toml");
    std::fs::write(
        &spec,
        format!("base = \"{img}\"\n\n[[layer]]\nsource = \"code\"\ndest = \"/var/task\"\n"),
    )
    .unwrap();
    let to = oci_ref(&dir.path().join("watched"), "dev");
    let server = Server::start(dir.path(), &to, &["--watch", spec.to_str().unwrap()]);
    assert!(server.log().contains("watching "), "{}", server.log());
    let (status, _, body) = http_post(&server.addr, INVOKE_PATH, b"{}");
    assert_eq!(
        (status, body.as_slice()),
        (200, &b"one\n"[..]),
        "{}",
        server.log()
    );

    // Change the code: the first invocation sent once lamina has seen the change gets the
    // new code (it waits for the rebuild), through the same endpoint.
    std::fs::write(code.join("message.txt"), "two\n").unwrap();
    wait_for_log(&server, "message.txt changed: rebuilding");
    let (status, _, body) = http_post(&server.addr, INVOKE_PATH, b"{}");
    assert_eq!(
        (status, body.as_slice()),
        (200, &b"two\n"[..]),
        "{}",
        server.log()
    );
    assert!(
        server.log().contains("serving the new code"),
        "{}",
        server.log()
    );

    // A build that fails leaves the previous code serving.
    std::fs::write(&spec, "base = \"oci:/nonexistent-layout\"\n").unwrap();
    wait_for_log(&server, "the build failed");
    let (status, _, body) = http_post(&server.addr, INVOKE_PATH, b"{}");
    assert_eq!(
        (status, body.as_slice()),
        (200, &b"two\n"[..]),
        "{}",
        server.log()
    );
    let log = server.stop();
    assert_eq!(
        log.matches("lamina: watch: serving the new code").count(),
        1,
        "{log}"
    );
}
