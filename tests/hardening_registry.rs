//! Registries that misbehave on purpose (issue 11): endless bodies read under a memory limit,
//! stalls and trickles against `--stall-timeout` and `--timeout`, and token realms that must
//! not get credentials. Every peer is a [`FakeRegistry`] on loopback made by the test.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

const MT: &str = "application/vnd.oci.image.manifest.v1+json";
/// Virtual memory lamina may use in the endless-body tests (KiB for `ulimit -v`): far less
/// than an endless body would take, far more than lamina needs.
const ULIMIT_V_KIB: u64 = 2_000_000;

/// A home, docker config and cache for one lamina run, in a temporary directory.
struct Home {
    tmp: tempfile::TempDir,
}

impl Home {
    fn new() -> Home {
        let tmp = tempfile::TempDir::new().expect("tempdir");
        for d in ["home", "docker", "cache", "bin"] {
            std::fs::create_dir_all(tmp.path().join(d)).expect("mkdir");
        }
        Home { tmp }
    }

    fn path(&self, d: &str) -> PathBuf {
        self.tmp.path().join(d)
    }

    /// Run `lamina ARGS` (under `ulimit -v` with `ulimit`), bounded to two minutes.
    fn run(&self, args: &[String], ulimit: bool) -> Output {
        self.run_env(args, ulimit, &[])
    }

    /// [`Home::run`] with `env` added.
    fn run_env(&self, args: &[String], ulimit: bool, env: &[(&str, &str)]) -> Output {
        let mut cmd = if ulimit {
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg(format!("ulimit -v {ULIMIT_V_KIB} && exec \"$0\" \"$@\""))
                .arg(lamina_bin());
            c
        } else {
            Command::new(lamina_bin())
        };
        let mut path = self.path("bin").into_os_string();
        path.push(":");
        path.push(std::env::var_os("PATH").unwrap_or_default());
        cmd.args(args)
            .current_dir(self.tmp.path())
            .env("PATH", path)
            .env("HOME", self.path("home"))
            .env("DOCKER_CONFIG", self.path("docker"))
            .env("LAMINA_CACHE_DIR", self.path("cache"))
            .env_remove("SSL_CERT_FILE");
        clear_aws_env(&mut cmd);
        cmd.envs(env.iter().copied());
        let out = run_bounded(&mut cmd, None, Duration::from_secs(120));
        assert_no_panic(&out);
        out
    }
}

/// `lamina pull REF oci:DEST:latest EXTRA...`
fn pull(reference: &str, dest: &Path, extra: &[&str]) -> Vec<String> {
    let mut a = strings(&["pull", reference, &oci_ref(dest, "latest")]);
    a.extend(extra.iter().map(|s| (*s).to_owned()));
    a
}

/// A failed run: exit status 1 with every one of `needles` in its message.
fn assert_fails_with(out: &Output, needles: &[&str]) {
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected a clean failure (exit 1):\n{}",
        describe(out)
    );
    let err = stderr_of(out);
    for n in needles {
        assert!(
            err.contains(n),
            "the message lacks `{n}`:\n{}",
            describe(out)
        );
    }
}

/// Wait (up to 10 s) for a server thread to report what it wrote.
fn wait_for(written: &Mutex<Option<u64>>) -> u64 {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(n) = *written.lock().unwrap() {
            return n;
        }
        assert!(Instant::now() < until, "the fake registry never finished");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A registry answering every manifest GET with `status` and an endless body; the second
/// value is how much it wrote before lamina hung up.
fn endless_manifest_registry(status: u16) -> (FakeRegistry, Arc<Mutex<Option<u64>>>) {
    let written = Arc::new(Mutex::new(None));
    let w = written.clone();
    let reg = FakeRegistry::start(move |head, s| {
        if answer_ping(head, s)? {
            return Ok(());
        }
        open_head(s, status, MT)?;
        *w.lock().unwrap() = Some(endless_body(s, 64 << 30));
        Ok(())
    });
    (reg, written)
}

#[test]
fn pull_of_an_endless_manifest_stops_at_the_4_mib_cap_under_a_memory_limit() {
    let (reg, written) = endless_manifest_registry(200);
    let home = Home::new();
    let dest = home.path("out");
    let reference = reg.reference("fn:latest");
    let out = home.run(&pull(&reference, &dest, &["--retries", "0"]), true);
    assert_fails_with(&out, &[&reference, "4 MiB", &reg.host]);
    // lamina hung up after its cap: the registry got to send little more than 4 MiB.
    let sent = wait_for(&written);
    assert!(
        sent < 64 << 20,
        "lamina read {sent} bytes of an endless manifest"
    );
    assert!(!dest.exists(), "a failed pull left {}", dest.display());
}

#[test]
fn inspect_of_an_endless_manifest_stops_at_the_cap() {
    let (reg, written) = endless_manifest_registry(200);
    let home = Home::new();
    let reference = reg.reference("fn:latest");
    let out = home.run(&strings(&["inspect", &reference, "--retries", "0"]), true);
    assert_fails_with(&out, &[&reference, "4 MiB"]);
    assert!(wait_for(&written) < 64 << 20);
}

#[test]
fn an_endless_error_body_is_not_read_past_its_cap() {
    let (reg, written) = endless_manifest_registry(400);
    let home = Home::new();
    let dest = home.path("out");
    let out = home.run(
        &pull(&reg.reference("fn:latest"), &dest, &["--retries", "0"]),
        true,
    );
    assert_fails_with(&out, &[&reg.host, "400", "64 KiB"]);
    assert!(wait_for(&written) < 64 << 20);
}

#[test]
fn an_endless_token_answer_is_not_read_past_its_cap() {
    let written = Arc::new(Mutex::new(None));
    let w = written.clone();
    let port = Arc::new(AtomicU64::new(0));
    let p = port.clone();
    let reg = FakeRegistry::start(move |head, s| {
        if head.path() == "/token" {
            open_head(s, 200, "application/json")?;
            *w.lock().unwrap() = Some(endless_body(s, 64 << 30));
            return Ok(());
        }
        let realm = format!(
            "Bearer realm=\"http://127.0.0.1:{}/token\",service=\"fake\"",
            p.load(Ordering::SeqCst)
        );
        respond(s, 401, &[("WWW-Authenticate", realm)], b"{}", false)
    });
    port.store(
        u64::from(reg.host.rsplit(':').next().unwrap().parse::<u16>().unwrap()),
        Ordering::SeqCst,
    );
    let home = Home::new();
    let out = home.run(
        &pull(
            &reg.reference("fn:latest"),
            &home.path("out"),
            &["--retries", "0"],
        ),
        true,
    );
    assert_fails_with(&out, &[&reg.host, "/token", "256 KiB"]);
    assert!(wait_for(&written) < 64 << 20);
}

#[test]
fn an_endless_credential_helper_is_stopped_at_its_cap() {
    let reg = FakeRegistry::start(|head, s| {
        answer_ping(head, s)?;
        Ok(())
    });
    let home = Home::new();
    write_file(
        &home.path("bin").join("docker-credential-endless"),
        b"#!/bin/sh\nexec yes '{\"Username\":\"u\",\"Secret\":\"s\"}'\n",
        0o755,
    );
    std::fs::write(
        home.path("docker").join("config.json"),
        format!("{{\"credHelpers\":{{\"{}\":\"endless\"}}}}", reg.host),
    )
    .unwrap();
    let out = home.run(
        &pull(
            &reg.reference("fn:latest"),
            &home.path("out"),
            &["--retries", "0"],
        ),
        true,
    );
    assert_fails_with(&out, &["docker-credential-endless", "64 KiB", &reg.host]);
}

/// A registry that answers `GET /v2/` and then calls `manifest` for every other request.
fn registry_with_manifest<F>(manifest: F) -> FakeRegistry
where
    F: Fn(&mut Conn) + Send + Sync + 'static,
{
    FakeRegistry::start(move |head, s| {
        if !answer_ping(head, s)? {
            manifest(s);
        }
        Ok(())
    })
}

fn manifest_requests(reg: &FakeRegistry) -> usize {
    reg.requests()
        .iter()
        .filter(|h| h.path().contains("/manifests/"))
        .count()
}

#[test]
fn a_registry_that_never_answers_fails_at_the_stall_limit_and_is_retried() {
    let reg = registry_with_manifest(|s| hold_silent(s, Duration::from_secs(60)));
    let home = Home::new();
    let started = Instant::now();
    let out = home.run(
        &pull(
            &reg.reference("fn:latest"),
            &home.path("out"),
            &["--stall-timeout", "1", "--retries", "1"],
        ),
        false,
    );
    let took = started.elapsed();
    assert_fails_with(
        &out,
        &[
            &reg.host,
            "GET /v2/fn/manifests/latest",
            "--stall-timeout",
            "1 s",
        ],
    );
    assert_eq!(
        manifest_requests(&reg),
        2,
        "a stall is retried like a dropped connection"
    );
    assert!(took < Duration::from_secs(15), "took {took:?}");
}

#[test]
fn a_body_that_stops_midway_fails_at_the_stall_limit() {
    let reg = registry_with_manifest(|s| {
        let _ = std::io::Write::write_all(
            &mut **s,
            format!("HTTP/1.1 200 OK\r\nContent-Type: {MT}\r\nContent-Length: 5000\r\n\r\n{{\"schemaVersion\"")
                .as_bytes(),
        );
        hold_silent(s, Duration::from_secs(60));
    });
    let home = Home::new();
    let started = Instant::now();
    let out = home.run(
        &pull(
            &reg.reference("fn:latest"),
            &home.path("out"),
            &["--stall-timeout", "1", "--retries", "0"],
        ),
        false,
    );
    assert_fails_with(
        &out,
        &[&reg.host, "reading manifest latest", "--stall-timeout"],
    );
    assert!(started.elapsed() < Duration::from_secs(15));
}

#[test]
fn a_trickling_registry_is_cut_off_at_the_timeout() {
    // One byte every 200 ms never stalls, and would take 20000 s to send the body.
    let reg = registry_with_manifest(|s| {
        let _ = std::io::Write::write_all(
            &mut **s,
            format!("HTTP/1.1 200 OK\r\nContent-Type: {MT}\r\nContent-Length: 100000\r\n\r\n")
                .as_bytes(),
        );
        trickle(
            s,
            &[b' '; 100_000],
            Duration::from_millis(200),
            Duration::from_secs(60),
        );
    });
    let home = Home::new();
    let started = Instant::now();
    let out = home.run(
        &pull(
            &reg.reference("fn:latest"),
            &home.path("out"),
            &["--timeout", "2"],
        ),
        false,
    );
    let took = started.elapsed();
    assert_fails_with(&out, &[&reg.host, "--timeout", "2 s"]);
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(10),
        "took {took:?}"
    );
}

#[test]
fn a_registry_silent_from_the_start_is_cut_off_at_the_timeout() {
    let reg = FakeRegistry::start(|_, s| {
        hold_silent(s, Duration::from_secs(60));
        Ok(())
    });
    let home = Home::new();
    let started = Instant::now();
    let out = home.run(
        &strings(&["inspect", &reg.reference("fn:latest"), "--timeout", "2"]),
        false,
    );
    assert_fails_with(&out, &[&reg.host, "--timeout"]);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn the_timeout_also_ends_what_is_not_a_registry_request() {
    // ECR's API (through the AWS SDK, which lamina's registry client does not time) never
    // answers: the command still ends at its --timeout.
    let api = FakeRegistry::start(|_, s| {
        hold_silent(s, Duration::from_secs(60));
        Ok(())
    });
    let endpoint = format!("http://{}", api.host);
    let home = Home::new();
    let started = Instant::now();
    let out = home.run_env(
        &strings(&[
            "inspect",
            "docker://123456789012.dkr.ecr.us-east-1.amazonaws.com/fn:latest",
            "--timeout",
            "2",
        ]),
        false,
        &[
            ("AWS_ENDPOINT_URL", &endpoint),
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", "not-a-secret"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ],
    );
    let took = started.elapsed();
    assert_fails_with(&out, &["--timeout", "2 s"]);
    assert!(!api.requests().is_empty(), "the ECR API was never asked");
    assert!(took < Duration::from_secs(8), "took {took:?}");
}

#[test]
fn run_and_invoke_keep_their_own_timeout_and_take_the_stall_limit() {
    let home = Home::new();
    for cmd in ["run", "invoke"] {
        let out = home.run(&strings(&[cmd, "--help"]), false);
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(help.contains("--stall-timeout"), "{cmd}:\n{help}");
        assert!(help.contains("Lambda timeout"), "{cmd}:\n{help}");
    }
    for cmd in ["build", "pull", "push", "inspect", "check", "zip", "login"] {
        let out = home.run(&strings(&[cmd, "--help"]), false);
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(help.contains("--timeout <SECONDS>"), "{cmd}:\n{help}");
        assert!(help.contains("--stall-timeout"), "{cmd}:\n{help}");
    }
}

#[test]
fn timeouts_of_zero_are_usage_errors() {
    let home = Home::new();
    for flag in ["--timeout", "--stall-timeout"] {
        let out = home.run(
            &strings(&["inspect", "docker://127.0.0.1:9/x:y", flag, "0"]),
            false,
        );
        assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
        assert!(stderr_of(&out).contains(flag), "{}", describe(&out));
    }
}

/// A registry on loopback asking for Bearer tokens at `realm(token_port)`, a token server
/// recording what it got, and a docker config holding credentials for the registry.
fn bearer_setup(realm: fn(u16) -> String) -> (FakeRegistry, FakeRegistry, Home) {
    let tokens = FakeRegistry::start(|_, s| {
        respond(
            s,
            200,
            &[("Content-Type", "application/json".into())],
            b"{\"token\":\"t0k\"}",
            false,
        )
    });
    let port: u16 = tokens.host.rsplit(':').next().unwrap().parse().unwrap();
    let challenge = format!("Bearer realm=\"{}\",service=\"fake\"", realm(port));
    let reg = FakeRegistry::start(move |head, s| {
        if head.header("authorization") == Some("Bearer t0k") {
            return respond(
                s,
                404,
                &[],
                b"{\"errors\":[{\"code\":\"MANIFEST_UNKNOWN\"}]}",
                false,
            );
        }
        respond(
            s,
            401,
            &[("WWW-Authenticate", challenge.clone())],
            b"{}",
            false,
        )
    });
    let home = Home::new();
    write_docker_auths(
        &home.path("docker"),
        &[(&reg.host, &basic_b64("user", "s3cret"))],
    );
    (reg, tokens, home)
}

fn basic_b64(user: &str, password: &str) -> String {
    base64(format!("{user}:{password}").as_bytes())
}

#[test]
fn credentials_are_not_sent_to_a_plain_http_realm_on_another_host() {
    // 0.0.0.0 reaches this machine's loopback on Linux, but is not a loopback address:
    // for lamina it is another host, over plain HTTP.
    let (reg, tokens, home) = bearer_setup(|port| format!("http://0.0.0.0:{port}/token"));
    let out = home.run(
        &pull(
            &reg.reference("fn:latest"),
            &home.path("out"),
            &["--retries", "0"],
        ),
        false,
    );
    assert_fails_with(&out, &[&reg.host, "0.0.0.0", "HTTPS"]);
    let leaked: Vec<_> = tokens
        .requests()
        .into_iter()
        .filter(|h| h.header("authorization").is_some())
        .collect();
    assert!(
        leaked.is_empty(),
        "credentials reached the realm: {leaked:?}"
    );
    assert!(!stderr_of(&out).contains("s3cret"));
}

#[test]
fn credentials_still_reach_a_loopback_realm_of_a_loopback_registry() {
    let (reg, tokens, home) = bearer_setup(|port| format!("http://127.0.0.1:{port}/token"));
    let out = home.run(
        &pull(
            &reg.reference("fn:latest"),
            &home.path("out"),
            &["--retries", "0"],
        ),
        false,
    );
    // The registry accepted the token and said the image is not there.
    assert_fails_with(&out, &["not found"]);
    let sent: Vec<_> = tokens
        .requests()
        .iter()
        .filter_map(|h| h.header("authorization").map(str::to_owned))
        .collect();
    assert_eq!(sent, vec![format!("Basic {}", basic_b64("user", "s3cret"))]);
}

// ---------------------------------------------------------------------------------------------
// ECR's uploads: every chunk kept, `Range` stuck at the first (aws/containers-roadmap#2831)
// ---------------------------------------------------------------------------------------------

/// 5 MiB, the smallest chunk.
const CHUNK: &str = "5242880";

/// Push a layout with a 12 MiB noise layer to an [`EcrLikeRegistry`] in 5 MiB chunks: the
/// layout's digest, the registry, and the push's output.
fn push_to_ecr_like(cut_over: Option<u64>) -> (String, PathBuf, EcrLikeRegistry, Output) {
    push_to(EcrLikeRegistry::start(cut_over), &[])
}

/// Push the 12 MiB layout to `ecr` with `extra` flags.
fn push_to(ecr: EcrLikeRegistry, extra: &[&str]) -> (String, PathBuf, EcrLikeRegistry, Output) {
    let sb = Sandbox::new(Vec::new());
    let (digest, layout) = sb.build_big("big", 12 << 20);
    let mut args = strings(&[
        "push",
        &oci_ref(&layout, "latest"),
        &ecr.reg.reference("big:v1"),
        "--chunk-size",
        CHUNK,
    ]);
    if !extra.contains(&"--retries") {
        args.extend(strings(&["--retries", "2"]));
    }
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let out = sb.run(&args, None);
    let keep = sb.work();
    // The sandbox goes away with this function: keep the layout for the caller.
    let copy = tempfile::TempDir::new().unwrap().keep();
    copy_tree(&keep.join("big"), &copy.join("big"));
    (digest, copy.join("big"), ecr, out)
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// Every blob of the layout's manifest is in the registry with exactly its bytes.
fn assert_blobs_intact(layout: &Path, ecr: &EcrLikeRegistry) {
    let (manifest, _, _) = read_layout(layout, "latest");
    for (digest, _) in manifest_blobs(&manifest) {
        let want = std::fs::read(layout.join("blobs/sha256").join(hex_of(&digest))).unwrap();
        let got = ecr
            .blob(&digest)
            .unwrap_or_else(|| panic!("blob {digest} was never committed"));
        assert!(got == want, "blob {digest} differs in the registry");
    }
}

#[test]
fn a_stuck_range_is_not_taken_for_the_upload_offset() {
    let (digest, layout, ecr, out) = push_to_ecr_like(None);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(parse_digest(&out), digest);
    assert!(ecr.manifest("v1").is_some());
    assert_blobs_intact(&layout, &ecr);
    // Every PATCH starts where the bytes sent in its session end, never where `Range` says.
    for p in ecr.patches() {
        if let Some(cr) = &p.content_range {
            let start: u64 = cr.split('-').next().unwrap().parse().unwrap();
            assert_eq!(start, p.held_before, "a PATCH resumed from Range: {p:?}");
        }
    }
}

#[test]
fn a_failed_upload_to_a_registry_with_a_stuck_range_starts_over() {
    // The first PATCH longer than a chunk (the whole blob, sent once `Range` stopped
    // advancing) is cut after 1 MiB.
    let (digest, layout, ecr, out) = push_to_ecr_like(Some(5 << 20));
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(parse_digest(&out), digest);
    let patches = ecr.patches();
    assert!(
        patches.iter().any(|p| p.cut),
        "no PATCH was cut: {patches:?}"
    );
    assert_eq!(
        ecr.status_gets(),
        0,
        "lamina asked a registry whose Range is stuck where to resume: {patches:?}"
    );
    for p in &patches {
        if let Some(cr) = &p.content_range {
            let start: u64 = cr.split('-').next().unwrap().parse().unwrap();
            assert_eq!(start, p.held_before, "a PATCH resumed from Range: {p:?}");
        }
    }
    assert_blobs_intact(&layout, &ecr);
}

#[test]
fn an_upload_slower_than_the_stall_limit_is_not_a_stall_while_it_makes_progress() {
    // 1 MiB every 600 ms: a 5 MiB chunk takes 3 s to go, the stall limit is 2 s (on loopback
    // most of a chunk sits in socket buffers: the answer's allowance after the body covers
    // it). Retries off, so one stall would fail the push.
    let ecr = EcrLikeRegistry::with(None, Some(Duration::from_millis(600)));
    let started = Instant::now();
    let (digest, layout, ecr, out) = push_to(ecr, &["--stall-timeout", "2", "--retries", "0"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(parse_digest(&out), digest);
    assert!(
        started.elapsed() > Duration::from_secs(3),
        "the upload was not slow: {:?}",
        started.elapsed()
    );
    assert_blobs_intact(&layout, &ecr);
}

#[test]
fn a_manifest_naming_a_huge_config_is_refused_before_any_download() {
    let manifest = format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"{MT}\",\"config\":{{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"sha256:{}\",\"size\":1099511627776}},\"layers\":[]}}",
        "a".repeat(64)
    );
    let reg = FakeRegistry::start(move |head, s| {
        if answer_ping(head, s)? {
            return Ok(());
        }
        if head.path().contains("/manifests/") {
            let ct = ("Content-Type", MT.to_owned());
            return respond(s, 200, &[ct], manifest.as_bytes(), head.method == "HEAD");
        }
        open_head(s, 200, "application/octet-stream")?;
        endless_body(s, 64 << 30);
        Ok(())
    });
    let home = Home::new();
    let out = home.run(
        &pull(
            &reg.reference("fn:latest"),
            &home.path("out"),
            &["--retries", "0"],
        ),
        false,
    );
    assert_fails_with(
        &out,
        &[&reg.reference("fn:latest"), "1099511627776", "8 MiB"],
    );
    let blob_gets = reg
        .requests()
        .iter()
        .filter(|h| h.path().contains("/blobs/"))
        .count();
    assert_eq!(blob_gets, 0, "a config of 1 TiB was downloaded");
}
