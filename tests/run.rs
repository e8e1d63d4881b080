//! `lamina run` and `lamina invoke`: a function written against the real Lambda Runtime API
//! (`fixtures/run/bootstrap`, a busybox shell script behind a stand-in for AWS's
//! `/lambda-entrypoint.sh`), assembled by lamina from scratch with Debian's static busybox, run
//! in lamina's namespace sandbox and invoked over HTTP on 127.0.0.1. Success, function errors,
//! crashes, timeouts and init errors must come back as Lambda reports them.
//!
//! These tests need unprivileged user namespaces and `/bin/busybox` from `busybox-static`:
//! without them they fail, loudly, rather than skip.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant, SystemTime};

use common::*;
use serde_json::{Value, json};

const BUSYBOX: &str = "/bin/busybox";
const APPLETS: [&str; 10] = [
    "sh", "wget", "grep", "sed", "tr", "cat", "sleep", "id", "ls", "head",
];

/// Is `data` an ELF executable without a program interpreter (statically linked)?
fn is_static_elf(data: &[u8]) -> bool {
    if data.len() < 64 || &data[..4] != b"\x7fELF" || data[4] != 2 {
        return false;
    }
    let u16_at = |o: usize| u16::from_le_bytes([data[o], data[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(data[32..40].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(54), u16_at(56));
    (0..phnum).all(|i| {
        let at = phoff + i * phentsize;
        data.get(at..at + 4)
            .is_some_and(|t| u32::from_le_bytes(t.try_into().unwrap()) != 3) // PT_INTERP
    })
}

fn busybox() -> Vec<u8> {
    let data = std::fs::read(BUSYBOX).unwrap_or_else(|e| {
        panic!(
            "{BUSYBOX} is missing ({e}): the `lamina run` tests put a static busybox in a scratch image. \
             Install Debian's busybox-static (`apt-get install busybox-static`; .ci/run does it)"
        )
    });
    assert!(
        is_static_elf(&data),
        "{BUSYBOX} is not a statically linked ELF: install Debian's busybox-static (the busybox package is dynamic)"
    );
    data
}

/// This machine's platform, and the other one.
fn platforms() -> (&'static str, &'static str) {
    match std::env::consts::ARCH {
        "x86_64" => ("linux/amd64", "linux/arm64"),
        "aarch64" => ("linux/arm64", "linux/amd64"),
        other => panic!("lamina run supports amd64 and arm64 machines, not {other}"),
    }
}

struct Fixture {
    dir: PathBuf,
    /// The function for this machine's platform.
    image: String,
    /// The same files labelled for the other platform.
    foreign: String,
}

impl Fixture {
    fn cache(&self) -> PathBuf {
        self.dir.join("cache")
    }
}

/// Remove a tree, opening up directory modes first.
fn remove_tree(p: &Path) {
    fn open_up(p: &Path) {
        if std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir()) {
            chmod(p, 0o700);
            for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
                open_up(&e.path());
            }
        }
    }
    open_up(p);
    let _ = std::fs::remove_dir_all(p);
}

/// This test binary's own directory under cargo's target/tmp (a static is never dropped, so
/// the directories of earlier runs whose process is gone are removed here instead).
fn work_dir() -> PathBuf {
    let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join("run-tests");
    std::fs::create_dir_all(&base).unwrap();
    for e in std::fs::read_dir(&base).unwrap().flatten() {
        let pid = e.file_name().to_string_lossy().into_owned();
        if !Path::new("/proc").join(&pid).exists() {
            remove_tree(&e.path());
        }
    }
    let dir = base.join(std::process::id().to_string());
    remove_tree(&dir);
    std::fs::create_dir(&dir).unwrap();
    dir
}

/// The fixture images, built once per test binary by lamina itself.
fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = work_dir();
        let stage = dir.join("stage");
        for d in ["bin", "var/runtime", "var/task", "tmp"] {
            std::fs::create_dir_all(stage.join(d)).unwrap();
        }
        write_file(&stage.join("bin/busybox"), &busybox(), 0o755);
        for a in APPLETS {
            std::os::unix::fs::symlink("busybox", stage.join("bin").join(a)).unwrap();
        }
        let run = fixtures_dir().join("run");
        write_file(
            &stage.join("var/runtime/bootstrap"),
            &std::fs::read(run.join("bootstrap")).unwrap(),
            0o755,
        );
        write_file(
            &stage.join("lambda-entrypoint.sh"),
            &std::fs::read(run.join("lambda-entrypoint.sh")).unwrap(),
            0o755,
        );
        write_file(&stage.join("var/task/app.sh"), b"# the handler\n", 0o644);
        let (host, other) = platforms();
        let build = |platform: &str, tag: &str| {
            let to = oci_ref(&dir.join("images"), tag);
            lamina_ok(
                &[
                    "build",
                    "--base",
                    "scratch",
                    "--platform",
                    platform,
                    "--layer",
                    &format!("{}:/", stage.display()),
                    "--entrypoint",
                    r#"["/lambda-entrypoint.sh"]"#,
                    "--cmd",
                    r#"["app.handler"]"#,
                    "--workdir",
                    "/var/task",
                    "--env",
                    "PATH=/bin",
                    "--to",
                    &to,
                    "-q",
                ],
                &dir,
                &[],
            );
            to
        };
        let image = build(host, "fn");
        let foreign = build(other, "foreign");
        Fixture {
            dir,
            image,
            foreign,
        }
    })
}

fn lamina_cmd(args: &[&str]) -> Command {
    let mut cmd = Command::new(lamina_bin());
    cmd.args(args)
        .env("LAMINA_CACHE_DIR", fixture().cache())
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN");
    cmd
}

/// `lamina invoke IMAGE --event - ARGS...` with `event` on stdin, bounded to a minute.
fn invoke(image: &str, event: &str, args: &[&str]) -> Output {
    invoke_env(image, event, args, &[])
}

/// [`invoke`] with lamina's environment changed: `(KEY, Some(VALUE))` sets, `(KEY, None)`
/// removes.
fn invoke_env(image: &str, event: &str, args: &[&str], env: &[(&str, Option<&str>)]) -> Output {
    let mut all = vec!["invoke", image, "--event", "-"];
    all.extend_from_slice(args);
    let mut cmd = lamina_cmd(&all);
    for (k, v) in env {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    run_bounded(&mut cmd, Some(event.as_bytes()), Duration::from_secs(60))
}

fn stdout_json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", describe(out)))
}

/// A `lamina run` in the background, killed (and its function with it) on drop.
struct Server {
    child: Child,
    addr: String,
    stderr: Arc<Mutex<String>>,
}

impl Server {
    fn start(args: &[&str]) -> Server {
        let mut all = vec!["run", &fixture().image, "--port", "0"];
        all.extend_from_slice(args);
        let mut child = lamina_cmd(&all)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("lamina starts");
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let lines = BufReader::new(child.stderr.take().unwrap());
        let log = stderr.clone();
        std::thread::spawn(move || {
            for line in lines.lines() {
                let Ok(line) = line else { break };
                if let Some(at) = line.find("http://") {
                    let rest = &line[at + 7..];
                    let _ = tx.send(rest[..rest.find('/').unwrap_or(rest.len())].to_owned());
                }
                let mut l = log.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let mut server = Server {
            child,
            addr: String::new(),
            stderr,
        };
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(addr) => server.addr = addr,
            Err(_) => panic!(
                "lamina run did not start listening within a minute:\n{}",
                server.log()
            ),
        }
        server
    }

    fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn invoke(&self, event: &Value) -> Response {
        http(
            &self.addr,
            "POST",
            "/2015-03-31/functions/function/invocations",
            event.to_string().as_bytes(),
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: signalling the child we started.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("the body is not JSON ({e}): {self:?}"))
    }
}

/// One HTTP/1.1 request on a fresh connection, read to its end (bounded).
fn http(addr: &str, method: &str, path: &str, body: &[u8]) -> Response {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("reading the answer to {method} {path}: {e}"));
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Response {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// Processes whose environment holds `needle` (`KEY=VALUE`).
fn processes_with(needle: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(env) = std::fs::read(e.path().join("environ"))
            && env.split(|&b| b == 0).any(|v| v == needle.as_bytes())
        {
            found.push(pid);
        }
    }
    found
}

/// Wait (up to 20 s, generous for a loaded machine) until no process carries `needle` in its
/// environment.
fn assert_all_gone(needle: &str, context: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = processes_with(needle);
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{context}: processes {left:?} of the function are still running"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

#[test]
fn invoke_prints_the_response_and_fails_on_a_function_error() {
    let f = fixture();
    let event = json!({"mode": "ok", "n": 42, "s": "héllo"});
    let out = invoke(&f.image, &event.to_string(), &[]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_no_panic(&out);
    assert_eq!(stdout_json(&out), event);
    let err = stderr_of(&out);
    assert!(
        err.contains("isolation: user+mount+pid namespaces"),
        "the isolation in use is not said:\n{err}"
    );
    for line in ["START RequestId: ", "END RequestId: ", "REPORT RequestId: "] {
        assert!(err.contains(line), "no `{line}` line:\n{err}");
    }

    let out = invoke(&f.image, r#"{"mode":"error"}"#, &[]);
    assert!(
        !out.status.success(),
        "a function error must fail:\n{}",
        describe(&out)
    );
    assert_no_panic(&out);
    assert_eq!(
        stdout_json(&out),
        json!({"errorMessage": "failed on purpose", "errorType": "Fixture.Error"})
    );
    assert!(stderr_of(&out).contains("Unhandled"), "{}", describe(&out));

    // An event that is not JSON is refused before anything runs.
    let out = invoke(&f.image, "{not json", &[]);
    assert!(!out.status.success());
    assert!(
        stderr_of(&out).contains("Could not parse"),
        "{}",
        describe(&out)
    );
}

#[test]
fn the_function_sees_a_read_only_root_a_writable_tmp_and_lambdas_environment() {
    let f = fixture();
    // A file only the host has: the function must not see it.
    let host = tempfile::TempDir::new().unwrap();
    let marker = host.path().join("host-only-marker");
    std::fs::write(&marker, b"host").unwrap();
    let marker_env = format!("HOST_MARKER={}", marker.display());
    let before = now_ms();
    let out = invoke(
        &f.image,
        r#"{"mode":"probe"}"#,
        &[
            "--env",
            &marker_env,
            "--env",
            "GREETING=hi",
            "--memory",
            "512",
            "--function-name",
            "probe-fn",
            "--timeout",
            "7",
            // This test is about the sandbox's mounts and Lambda's environment: as root, as it
            // was written (the default user, 993, is tested in tests/inner_loop_runtime.rs).
            "--root",
        ],
    );
    assert!(out.status.success(), "{}", describe(&out));
    let p = stdout_json(&out);
    assert_eq!(
        p["task"], "read-only",
        "/var/task must not be writable: {p}"
    );
    assert_eq!(p["tmp"], "writable", "/tmp must be writable: {p}");
    assert_eq!(p["host"], "hidden", "the host's files are visible: {p}");
    assert_eq!(
        p["pid"], "1",
        "the runtime is pid 1 of its own pid namespace: {p}"
    );
    assert_eq!(p["uid"], "0");
    assert_eq!(p["cwd"], "/var/task");
    assert_eq!(p["handler"], "app.handler", "_HANDLER is CMD[0]: {p}");
    assert_eq!(p["name"], "probe-fn");
    assert_eq!(p["memory"], "512");
    assert_eq!(p["greeting"], "hi");
    assert!(
        p["arn"].as_str().unwrap().ends_with(":function:probe-fn"),
        "{p}"
    );
    assert!(p["trace"].as_str().unwrap().starts_with("Root=1-"), "{p}");
    let deadline: u128 = p["deadline"].as_str().unwrap().parse().unwrap();
    assert!(
        deadline >= before + 7000 && deadline <= now_ms() + 7000,
        "the deadline is not 7 s after the invocation started: {deadline} ({before})"
    );
}

#[test]
fn run_serves_invocations_and_reports_errors_crashes_and_timeouts_as_lambda_does() {
    let name = format!("fn-{}", std::process::id());
    let marker = format!("AWS_LAMBDA_FUNCTION_NAME={name}");
    let server = Server::start(&["--timeout", "1", "--function-name", &name]);

    let ok = server.invoke(&json!({"mode": "ok", "n": 1}));
    assert_eq!(ok.status, 200, "{ok:?}\n{}", server.log());
    assert_eq!(ok.json(), json!({"mode": "ok", "n": 1}));
    assert_eq!(ok.header("X-Amz-Function-Error"), None);
    assert!(
        !processes_with(&marker).is_empty(),
        "the function's processes cannot be found by their environment"
    );

    let err = server.invoke(&json!({"mode": "error"}));
    assert_eq!(err.status, 200, "{err:?}");
    assert_eq!(err.header("X-Amz-Function-Error"), Some("Unhandled"));
    assert_eq!(
        err.json(),
        json!({"errorMessage": "failed on purpose", "errorType": "Fixture.Error"})
    );

    // The runtime exits during an invocation: Runtime.ExitError; the next invocation gets a
    // new process.
    let crash = server.invoke(&json!({"mode": "crash"}));
    assert_eq!(crash.status, 200);
    assert_eq!(crash.header("X-Amz-Function-Error"), Some("Unhandled"));
    let c = crash.json();
    assert_eq!(c["errorType"], "Runtime.ExitError", "{c}");
    let msg = c["errorMessage"].as_str().unwrap();
    assert!(
        msg.starts_with("RequestId: ")
            && msg.ends_with("Error: Runtime exited with error: exit status 3"),
        "{msg}"
    );
    let again = server.invoke(&json!({"mode": "ok", "n": 2}));
    assert_eq!(again.json(), json!({"mode": "ok", "n": 2}), "{again:?}");

    // Past the timeout: Sandbox.Timedout, the process (and what it started) killed.
    let started = Instant::now();
    let slow = server.invoke(&json!({"mode": "sleep"}));
    let took = started.elapsed();
    assert_eq!(slow.status, 200);
    assert_eq!(slow.header("X-Amz-Function-Error"), Some("Unhandled"));
    let t = slow.json();
    assert_eq!(t["errorType"], "Sandbox.Timedout", "{t}");
    assert!(
        t["errorMessage"]
            .as_str()
            .unwrap()
            .ends_with("Error: Task timed out after 1.00 seconds"),
        "{t}"
    );
    assert!(
        // The function sleeps 30 s: anything well under that proves the timeout cut it short
        // (the bound is wide so a loaded machine does not make it flake).
        took >= Duration::from_millis(950) && took < Duration::from_secs(25),
        "the timeout took {took:?}"
    );
    assert_all_gone(&marker, "after a timeout");
    let after = server.invoke(&json!({"mode": "ok", "n": 3}));
    assert_eq!(after.json(), json!({"mode": "ok", "n": 3}), "{after:?}");

    // Invocations sent together run one after the other, each answered.
    let addr = server.addr.clone();
    let threads: Vec<_> = (0..3)
        .map(|i| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let body = json!({"mode": "ok", "i": i}).to_string();
                let r = http(
                    &addr,
                    "POST",
                    "/2015-03-31/functions/function/invocations",
                    body.as_bytes(),
                );
                (i, r)
            })
        })
        .collect();
    for t in threads {
        let (i, r) = t.join().unwrap();
        assert_eq!(r.json(), json!({"mode": "ok", "i": i}), "{r:?}");
    }

    // What the invoke API refuses.
    let bad = http(
        &server.addr,
        "POST",
        "/2015-03-31/functions/function/invocations",
        b"{not json",
    );
    assert_eq!(bad.status, 400, "{bad:?}");
    assert_eq!(
        bad.header("X-Amzn-ErrorType"),
        Some("InvalidRequestContentException")
    );
    let get = http(
        &server.addr,
        "GET",
        "/2015-03-31/functions/function/invocations",
        b"",
    );
    assert_eq!(get.status, 405, "{get:?}");
    let nowhere = http(&server.addr, "POST", "/nowhere", b"{}");
    assert_eq!(nowhere.status, 404, "{nowhere:?}");

    let log = server.log();
    assert!(log.contains("Task timed out after 1.00 seconds"), "{log}");
    assert!(
        log.contains("Error: Runtime exited with error: exit status 3"),
        "{log}"
    );
    assert!(log.contains("Runtime.ExitError"), "{log}");
    drop(server);
    assert_all_gone(&marker, "after lamina run stopped");
}

#[test]
fn init_errors_are_reported_as_lambda_reports_them() {
    let f = fixture();
    // The runtime posts /runtime/init/error (then exits): its error is the invocation's.
    let out = invoke(&f.image, r#"{"mode":"ok"}"#, &["--env", "INIT=error"]);
    assert!(!out.status.success(), "{}", describe(&out));
    assert_eq!(
        stdout_json(&out),
        json!({"errorMessage": "init failed on purpose", "errorType": "Fixture.InitError"})
    );
    assert!(
        stderr_of(&out).contains("Phase: init\tStatus: error\tError Type: Fixture.InitError"),
        "{}",
        describe(&out)
    );

    // The runtime exits before asking for an invocation.
    let out = invoke(&f.image, r#"{"mode":"ok"}"#, &["--env", "INIT=exit"]);
    assert!(!out.status.success(), "{}", describe(&out));
    let e = stdout_json(&out);
    assert_eq!(e["errorType"], "Runtime.ExitError", "{e}");
    assert!(
        e["errorMessage"]
            .as_str()
            .unwrap()
            .ends_with("Error: Runtime exited with error: exit status 2"),
        "{e}"
    );

    // Served: every invocation tries init again, and fails the same way.
    let server = Server::start(&["--env", "INIT=error"]);
    for _ in 0..2 {
        let r = server.invoke(&json!({"mode": "ok"}));
        assert_eq!(r.status, 200, "{r:?}\n{}", server.log());
        assert_eq!(r.header("X-Amz-Function-Error"), Some("Unhandled"));
        assert_eq!(r.json()["errorType"], "Fixture.InitError", "{r:?}");
    }
}

#[test]
fn an_image_for_another_architecture_is_refused() {
    let f = fixture();
    let (host, other) = platforms();
    let out = invoke(&f.foreign, "{}", &[]);
    assert!(!out.status.success(), "{}", describe(&out));
    assert_no_panic(&out);
    let err = stderr_of(&out);
    assert!(
        err.contains(&format!("is a {other} image"))
            && err.contains(&format!("this machine is {host}"))
            && err.contains("does not emulate"),
        "{err}"
    );
    assert!(out.stdout.is_empty());

    // Asking for the other platform of a multi-platform image.
    let base = fixture_base_ref();
    let out = lamina_cmd(&["run", &base, "--platform", other, "--port", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        stderr_of(&out).contains("does not emulate"),
        "{}",
        describe(&out)
    );
}

#[test]
fn the_root_file_system_is_unpacked_once_and_reused() {
    use std::os::unix::fs::MetadataExt;
    let f = fixture();
    let unpacked = || -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(f.cache().join("rootfs"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
            .collect();
        v.sort();
        v
    };
    // (path, inode, mtime in ns) of every unpacked root and of a file inside it.
    let identity = |entries: &[PathBuf]| -> Vec<(PathBuf, u64, i64)> {
        entries
            .iter()
            .flat_map(|e| [e.join("complete"), e.join("rootfs/bin/busybox")])
            .filter(|p| p.exists())
            .map(|p| {
                let m = std::fs::metadata(&p).unwrap();
                (p, m.ino(), m.mtime() * 1_000_000_000 + m.mtime_nsec())
            })
            .collect()
    };
    let first = invoke(&f.image, "{}", &[]);
    assert!(first.status.success(), "{}", describe(&first));
    let entries = unpacked();
    assert!(!entries.is_empty());
    let before = identity(&entries);
    let out = invoke(&f.image, r#"{"mode":"ok"}"#, &[]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        stderr_of(&out).contains("reusing the root file system"),
        "{}",
        describe(&out)
    );
    // Reused, not unpacked again: the same roots, the same files (inode and mtime unchanged).
    assert_eq!(unpacked(), entries);
    assert_eq!(identity(&entries), before);
    for e in &entries {
        assert!(
            e.join("complete").is_file(),
            "{} has no marker",
            e.display()
        );
        let busybox = e.join("rootfs/bin/busybox");
        if busybox.exists() {
            assert_eq!(
                std::fs::read_link(e.join("rootfs/bin/sh")).unwrap(),
                Path::new("busybox")
            );
        }
    }
}

#[test]
fn without_user_namespaces_run_fails_with_a_message_naming_what_is_missing() {
    let f = fixture();
    // Inside a user namespace of our own, forbid nested ones (the limit is per namespace).
    let script = r#"echo 0 > /proc/sys/user/max_user_namespaces && exec "$@""#;
    let out = Command::new("unshare")
        .args([
            "-r",
            "sh",
            "-c",
            script,
            "sh",
            lamina_bin(),
            "invoke",
            &f.image,
        ])
        .env("LAMINA_CACHE_DIR", f.cache())
        .output()
        .expect("util-linux unshare runs");
    assert!(!out.status.success(), "{}", describe(&out));
    assert_no_panic(&out);
    let err = stderr_of(&out);
    assert!(
        err.contains("cannot start the sandbox")
            && err.contains("user namespaces")
            && err.contains("max_user_namespaces"),
        "{err}"
    );
}

#[test]
fn payload_limits_are_lambdas_six_megabytes_both_ways() {
    let f = fixture();
    // A response over 6 MB: the function's error, in Lambda's words.
    let out = invoke(&f.image, r#"{"mode":"big"}"#, &[]);
    assert!(!out.status.success(), "{}", describe(&out));
    assert_no_panic(&out);
    let body = stdout_json(&out);
    assert_eq!(body["errorType"], "Function.ResponseSizeTooLarge", "{body}");
    assert!(
        body["errorMessage"]
            .as_str()
            .unwrap()
            .contains("6291456 bytes"),
        "{body}"
    );
    // An event over 6 MB is refused before anything runs.
    let big = format!("{{\"pad\":\"{}\"}}", "a".repeat(7_000_000));
    let out = invoke(&f.image, &big, &[]);
    assert!(!out.status.success(), "{}", describe(&out));
    assert_no_panic(&out);
    let err = stderr_of(&out);
    assert!(
        err.contains("too large") && err.contains("6291456"),
        "{err}"
    );
    assert!(!err.contains("START RequestId"), "the function ran:\n{err}");
}

#[test]
fn event_file_env_pass_through_and_the_default_region() {
    let f = fixture();
    // --event FILE, and --env KEY passing lamina's own value through.
    let dir = tempfile::TempDir::new().unwrap();
    let event = dir.path().join("event.json");
    std::fs::write(&event, br#"{"mode":"probe"}"#).unwrap();
    let mut cmd = lamina_cmd(&[
        "invoke",
        &f.image,
        "--event",
        event.to_str().unwrap(),
        "--env",
        "GREETING",
        "--env",
        "HOST_MARKER=/nonexistent-on-purpose",
    ]);
    let out = cmd.env("GREETING", "from-the-host").output().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(stdout_json(&out)["greeting"], "from-the-host");

    // No AWS_REGION nor AWS_DEFAULT_REGION on the host: us-east-1, as the README says.
    let none = [("AWS_REGION", None), ("AWS_DEFAULT_REGION", None)];
    let out = invoke_env(&f.image, r#"{"mode":"region"}"#, &[], &none);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        stdout_json(&out),
        json!({"region": "us-east-1", "default": "us-east-1"})
    );
    let set = [
        ("AWS_REGION", Some("eu-west-3")),
        ("AWS_DEFAULT_REGION", None),
    ];
    let out = invoke_env(&f.image, r#"{"mode":"region"}"#, &[], &set);
    assert_eq!(
        stdout_json(&out),
        json!({"region": "eu-west-3", "default": "eu-west-3"})
    );
}

#[test]
fn a_missing_entrypoint_is_runtime_invalid_entrypoint() {
    let f = fixture();
    let to = oci_ref(&f.dir.join("images"), "no-entrypoint");
    lamina_ok(
        &[
            "build",
            "--base",
            &f.image,
            "--entrypoint",
            r#"["/nope"]"#,
            "--to",
            &to,
            "-q",
        ],
        &f.dir,
        &[],
    );
    let out = invoke(&to, "{}", &[]);
    assert!(!out.status.success(), "{}", describe(&out));
    assert_no_panic(&out);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr_of(&out)
    );
    assert!(
        all.contains("Runtime.InvalidEntrypoint"),
        "{}",
        describe(&out)
    );
}

#[test]
fn a_slow_init_times_out_after_ten_seconds_and_is_retried_within_the_invocation() {
    let f = fixture();
    let started = Instant::now();
    let out = invoke(&f.image, "{}", &["--env", "INIT=slow", "--timeout", "2"]);
    let took = started.elapsed();
    assert!(!out.status.success(), "{}", describe(&out));
    assert_no_panic(&out);
    let err = stderr_of(&out);
    assert!(
        err.contains("Phase: init") && err.contains("Status: timeout"),
        "no init timeout reported:\n{err}"
    );
    assert_eq!(
        stdout_json(&out)["errorType"],
        "Sandbox.Timedout",
        "{}",
        describe(&out)
    );
    // Ten seconds of init, then the retry within the 2 s timeout (generous upper bound).
    assert!(took >= Duration::from_secs(10), "gave up after {took:?}");
    assert!(took < Duration::from_secs(45), "took {took:?}");
}

/// The invoke API refuses an event over Lambda's 6 MB as Lambda does (413,
/// `RequestEntityTooLargeException`, the size in the message), without holding the body, and
/// keeps serving.
#[test]
fn the_invoke_api_refuses_an_event_over_six_megabytes() {
    let server = Server::start(&[]);
    let big = format!("{{\"pad\":\"{}\"}}", "a".repeat(7_000_000));
    let r = http(
        &server.addr,
        "POST",
        "/2015-03-31/functions/function/invocations",
        big.as_bytes(),
    );
    assert_eq!(r.status, 413, "{r:?}");
    assert_eq!(
        r.header("X-Amzn-ErrorType"),
        Some("RequestEntityTooLargeException"),
        "{r:?}"
    );
    let j = r.json();
    assert_eq!(j["Type"], "User", "{j}");
    let m = j["message"].as_str().unwrap();
    assert!(
        m.contains(&format!("{} byte payload", big.len())) && m.contains("6291456"),
        "{m}"
    );
    let ok = server.invoke(&json!({"mode": "ok", "n": 1}));
    assert_eq!(ok.json(), json!({"mode": "ok", "n": 1}), "{ok:?}");
}
