//! Tracker issue 13, progress that tells the truth: each layer named by its role and source
//! (code, dependencies, Lambda layer, bootstrap), "cached" for a layer reused from the cache;
//! plain lines through a pipe, bars on a terminal, nothing with `--quiet`.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::*;
use tempfile::TempDir;

/// A `[function]` with every role: a Lambda layer, packages pip installed beside the code, the
/// code, and a bootstrap.
fn function_project(dir: &Path) {
    write_file(&dir.join("ext/bin/tool"), b"#!/bin/sh\n", 0o755);
    write_file(
        &dir.join("src/app.py"),
        b"def handler(e, c):\n    return 1\n",
        0o644,
    );
    write_file(&dir.join("src/six.py"), b"# six\n", 0o644);
    write_file(
        &dir.join("src/six-1.16.0.dist-info/RECORD"),
        b"six.py,,\n",
        0o644,
    );
    write_file(&dir.join("bootstrap"), b"#!/bin/sh\nexit 0\n", 0o755);
    fs::write(
        dir.join("lamina.toml"),
        "[function]\nruntime = \"python3.12\"\nhandler = \"app.handler\"\ncode = \"src\"\n\
         layers = [\"ext\"]\nbootstrap = \"bootstrap\"\n",
    )
    .unwrap();
}

fn build_args(dir: &Path, out: &str) -> Vec<String> {
    let to = oci_ref(&dir.join(out), "latest");
    strings(&["build", "--base", "scratch", "--to", &to])
}

const ROLES: [&str; 4] = [
    "layer Lambda layer ext -> /opt",
    "layer dependencies src -> /var/task",
    "layer code src -> /var/task",
    "layer bootstrap bootstrap -> /var/runtime/bootstrap",
];

#[test]
fn plain_lines_name_each_layer_and_say_cached() {
    let t = TempDir::new().unwrap();
    function_project(t.path());
    let cache = t.path().join("cache");
    let env = [("LAMINA_CACHE_DIR", path_str(&cache))];
    let first = stderr_of(&lamina_ok(&build_args(t.path(), "one"), t.path(), &env));
    for r in ROLES {
        assert!(first.contains(&format!("{r}: built")), "{r}:\n{first}");
    }
    // Issue 13: the files of each layer built are counted (bin/tool; six.py and its RECORD;
    // app.py; bootstrap).
    for (r, files) in ROLES
        .iter()
        .zip(["1 file,", "2 files,", "1 file,", "1 file,"])
    {
        let line = format!("{r}: built, {files} ");
        assert!(first.contains(&line), "{line}:\n{first}");
    }
    let second = stderr_of(&lamina_ok(&build_args(t.path(), "two"), t.path(), &env));
    for r in ROLES {
        assert!(second.contains(&format!("{r}: cached")), "{r}:\n{second}");
    }
    // The image history names the roles too.
    let (_, _, config) = read_layout(&t.path().join("two"), "latest");
    let history = config["history"].to_string();
    assert!(
        history.contains("lamina: dependencies src -> /var/task")
            && history.contains("lamina: code src -> /var/task"),
        "{history}"
    );
    let mut quiet = build_args(t.path(), "three");
    quiet.push("--quiet".into());
    let said = stderr_of(&lamina_ok(&quiet, t.path(), &env));
    assert!(
        !said.contains("layer "),
        "--quiet prints no progress:\n{said}"
    );
}

/// On a terminal (a pty from util-linux `script`): bars, ending in the same words.
#[test]
fn a_terminal_gets_bars() {
    let t = TempDir::new().unwrap();
    function_project(t.path());
    let cache = t.path().join("cache");
    let cmd = format!(
        "LAMINA_CACHE_DIR='{}' '{}' {}",
        cache.display(),
        lamina_bin(),
        build_args(t.path(), "one")
            .iter()
            .map(|a| format!("'{a}'"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let out = Command::new(require_tool("script"))
        .args(["-qec", &cmd, "/dev/null"])
        .current_dir(t.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("\x1b["),
        "a terminal gets bars (escape codes):\n{shown}"
    );
    for r in ROLES {
        assert!(shown.contains(&format!("{r}: built")), "{r}:\n{shown}");
    }
    assert!(
        shown.contains("dependencies src -> /var/task: built, 2 files, "),
        "the bar's last line counts the files:\n{shown}"
    );
}
