//! The command line itself, against the real binary: documented exit statuses, a closed
//! stdout ending the run quietly, and flag groups offered only to the commands that use them.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::*;
use tempfile::TempDir;

/// `lamina build --base scratch` of one small layer at /var/task, with `extra` flags, to
/// `oci:DIR/NAME:latest`; returns the reference.
fn scratch_image(dir: &Path, name: &str, extra: &[&str]) -> String {
    let src = dir.join(format!("{name}-src"));
    write_file(&src.join("data.txt"), b"x", 0o644);
    let layer = format!("{}:/var/task", path_str(&src));
    let to = oci_ref(&dir.join(name), "latest");
    let mut args = vec![
        "build", "-q", "--base", "scratch", "--layer", &layer, "--to", &to,
    ];
    args.extend_from_slice(extra);
    lamina_ok(&args, dir, &[]);
    to
}

fn code(out: &Output) -> Option<i32> {
    out.status.code()
}

#[test]
fn check_exits_3_on_lambda_errors_0_when_clean() {
    let t = TempDir::new().unwrap();
    // No ENTRYPOINT and no CMD: L005, an error.
    let bad = scratch_image(t.path(), "bad", &[]);
    let out = lamina(&["check", &bad], t.path(), &[]);
    assert_no_panic(&out);
    assert_eq!(code(&out), Some(3), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("error L005"), "{}", describe(&out));
    assert!(
        stderr_of(&out).contains("fails the Lambda checks"),
        "{}",
        describe(&out)
    );

    let good = build_fixture(t.path(), "good", &["-q"], &[]);
    let out = lamina(&["check", &oci_ref(&good.layout, "latest")], t.path(), &[]);
    assert_no_panic(&out);
    assert_eq!(code(&out), Some(0), "{}", describe(&out));
}

#[test]
fn a_push_the_lambda_gate_refuses_exits_3() {
    let reg = Registry::plain();
    let t = TempDir::new().unwrap();
    // No ENTRYPOINT and no CMD (L005): both `build --to docker://` and `push` refuse it.
    let bad = scratch_image(t.path(), "bad", &[]);
    let out = lamina(&["push", &bad, &reg.reference("fn:bad")], t.path(), &[]);
    assert_no_panic(&out);
    assert_eq!(code(&out), Some(3), "{}", describe(&out));
    assert!(
        stderr_of(&out).contains("nothing was pushed"),
        "{}",
        describe(&out)
    );
    assert_eq!(reg.blob_count(), 0, "{}", describe(&out));

    let src = t.path().join("src");
    write_file(&src.join("data.txt"), b"x", 0o644);
    let layer = format!("{}:/var/task", path_str(&src));
    let dest = reg.reference("fn:built");
    let out = lamina(
        &[
            "build", "-q", "--base", "scratch", "--layer", &layer, "--to", &dest,
        ],
        t.path(),
        &[],
    );
    assert_no_panic(&out);
    assert_eq!(code(&out), Some(3), "{}", describe(&out));
    assert_eq!(reg.blob_count(), 0, "{}", describe(&out));
}

#[test]
fn failures_exit_1_and_usage_errors_exit_2() {
    let t = TempDir::new().unwrap();
    let missing = oci_ref(&t.path().join("missing"), "latest");
    let out = lamina(&["check", &missing], t.path(), &[]);
    assert_no_panic(&out);
    assert_eq!(code(&out), Some(1), "{}", describe(&out));

    let good = build_fixture(t.path(), "good", &["-q"], &[]);
    let good = oci_ref(&good.layout, "latest");
    for args in [
        // Refused by the parser.
        vec!["check", &good, "--jobs", "many"],
        vec!["check", &good, "--bogus"],
        vec!["invoke", &good, "--create-repo"],
        vec!["inspect", &good, "--chunk-size", "6000000"],
        // Refused by lamina before any work.
        vec!["check", &good, "--jobs", "0"],
        vec!["check", &good, "--platform", "not/a/platform/at/all"],
        vec!["push", &good, "oci:elsewhere"],
        vec![
            "push",
            &good,
            "docker://127.0.0.1:1/x:y",
            "--chunk-size",
            "1",
        ],
    ] {
        let out = lamina(&args, t.path(), &[]);
        assert_no_panic(&out);
        assert_eq!(code(&out), Some(2), "{args:?}:\n{}", describe(&out));
    }
}

/// An image whose `inspect` output is far larger than a pipe's buffer (2000 env lines), so a
/// reader that stops early closes the pipe while lamina is still writing.
fn long_image(dir: &Path) -> String {
    let env: Vec<String> = (0..2000)
        .map(|i| format!("VARIABLE_{i:04}={}", "v".repeat(60)))
        .collect();
    let mut extra = vec!["--cmd", "handler.handle"];
    for e in &env {
        extra.extend_from_slice(&["--env", e]);
    }
    scratch_image(dir, "long", &extra)
}

#[test]
fn a_closed_stdout_ends_the_run_quietly() {
    let t = TempDir::new().unwrap();
    let image = long_image(t.path());
    for json in [false, true] {
        let script = format!(
            "set -o pipefail; \"$0\" inspect \"$1\" {} | head -1",
            if json { "--json" } else { "" }
        );
        let out = Command::new("bash")
            .args(["-c", &script, lamina_bin(), &image])
            .current_dir(t.path())
            .output()
            .expect("run bash");
        assert_no_panic(&out);
        assert_eq!(code(&out), Some(0), "{}", describe(&out));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).lines().count(),
            1,
            "{}",
            describe(&out)
        );
        assert!(out.stderr.is_empty(), "{}", describe(&out));
    }
}

/// stdout closed before lamina writes anything (the read end dropped at once): every command
/// that prints ends with status 0 and nothing on stderr but what it says anyway.
#[test]
fn stdout_closed_before_the_first_write() {
    let t = TempDir::new().unwrap();
    let image = long_image(t.path());
    let zip = path_str(&t.path().join("f.zip")).to_owned();
    let src = path_str(&t.path().join("long-src")).to_owned();
    let layer = format!("{src}:/var/task");
    let runs: Vec<Vec<&str>> = vec![
        vec!["inspect", &image],
        vec!["inspect", &image, "--raw"],
        vec!["check", &image, "--json"],
        vec!["zip", "--layer", &layer, "--to", &zip, "-q"],
    ];
    for args in runs {
        let mut child = Command::new(lamina_bin())
            .args(&args)
            .current_dir(t.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn lamina");
        drop(child.stdout.take());
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        let status = child.wait().unwrap();
        assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
        assert_eq!(status.code(), Some(0), "{args:?}: {status}\n{stderr}");
        assert!(!stderr.contains("error"), "{args:?}: {stderr}");
    }
}

#[test]
fn flag_groups_belong_to_the_commands_that_use_them() {
    let t = TempDir::new().unwrap();
    let help = |cmd: &str| {
        let out = lamina_ok(&[cmd, "--help"], t.path(), &[]);
        String::from_utf8(out.stdout).unwrap()
    };
    let push_only = [
        "--create-repo",
        "--tag-mutability",
        "--scan-on-push",
        "--chunk-size",
    ];
    for cmd in ["push", "build"] {
        let h = help(cmd);
        for f in push_only {
            assert!(h.contains(f), "`{cmd} --help` lacks {f}:\n{h}");
        }
    }
    for cmd in ["invoke", "run", "inspect", "check", "pull", "zip", "login"] {
        let h = help(cmd);
        for f in push_only {
            assert!(!h.contains(f), "`{cmd} --help` lists {f}:\n{h}");
        }
        assert!(h.contains("--insecure-registry"), "{cmd}:\n{h}");
    }
    let h = help("init");
    assert!(!h.contains("--insecure-registry"), "{h}");
    assert!(!help("invoke").contains("--json"));

    let out = lamina_ok(&["--help"], t.path(), &[]);
    let h = String::from_utf8(out.stdout).unwrap();
    for line in [
        "Exit status:",
        "  2  usage error",
        "  3  the Lambda gate found errors",
    ] {
        assert!(h.contains(line), "`lamina --help` lacks {line:?}:\n{h}");
    }
}
