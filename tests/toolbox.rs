//! Tracker issue 18, "fit the user's toolbox": shell completions that a real `bash` loads and
//! completes with, manual pages that `man -l` renders, `--version` naming the commit, and the
//! JSON Schema of lamina.toml — equal to what the binary generates, and accepting every spec
//! in `fixtures/` and every spec `lamina init` writes, by Python's `jsonschema`.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use tempfile::TempDir;

/// The subcommands every completion script and manual page must know.
const SUBCOMMANDS: &[&str] = &[
    "build",
    "inspect",
    "push",
    "pull",
    "login",
    "init",
    "check",
    "zip",
    "update",
    "deploy",
    "run",
    "invoke",
    "cache",
    "completions",
    "man",
    "schema",
];

fn stdout_text(out: &std::process::Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("stdout is UTF-8")
}

/// What bash's completion function offers for the words of `line` (the last one being
/// completed), once `script` is sourced.
fn bash_complete(script: &Path, words: &[&str]) -> Vec<String> {
    let bash = require_tool("bash");
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let cword = words.len() - 1;
    let program = format!(
        "source '{script}' || exit 9\n\
         COMP_WORDS=({words}); COMP_CWORD={cword}; COMP_LINE='{line}'; COMP_POINT=${{#COMP_LINE}}\n\
         _lamina lamina '{cur}' '{prev}' || exit 8\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script = script.display(),
        words = quoted.join(" "),
        line = words.join(" "),
        cur = words[cword],
        prev = words[cword.saturating_sub(1)],
    );
    let mut cmd = Command::new(bash);
    cmd.args(["--norc", "--noprofile", "-c", &program]);
    let out = run_bounded(&mut cmd, None, Duration::from_secs(30));
    assert!(out.status.success(), "bash completion:\n{}", describe(&out));
    stdout_text(&out).lines().map(str::to_owned).collect()
}

#[test]
fn the_bash_completion_script_loads_in_bash_and_completes_subcommands_and_flags() {
    let t = TempDir::new().unwrap();
    let out = lamina_ok(&["completions", "bash"], t.path(), &[]);
    let script = t.path().join("lamina.bash");
    fs::write(&script, &out.stdout).unwrap();

    let offered = bash_complete(&script, &["lamina", "bu"]);
    assert_eq!(offered, ["build"], "`lamina bu<TAB>`");
    let offered = bash_complete(&script, &["lamina", "i"]);
    for c in ["init", "inspect", "invoke"] {
        assert!(
            offered.contains(&c.to_owned()),
            "`lamina i<TAB>` {offered:?}"
        );
    }
    let offered = bash_complete(&script, &["lamina", "build", "--pla"]);
    assert_eq!(offered, ["--platform"], "`lamina build --pla<TAB>`");
    let offered = bash_complete(&script, &["lamina", "completions", "z"]);
    assert_eq!(offered, ["zsh"], "`lamina completions z<TAB>`");
}

#[test]
fn every_shell_gets_a_script_naming_every_subcommand() {
    let t = TempDir::new().unwrap();
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let out = lamina_ok(&["completions", shell], t.path(), &[]);
        let script = stdout_text(&out);
        for sub in SUBCOMMANDS {
            assert!(script.contains(sub), "{shell} script lacks `{sub}`");
        }
    }
    let bad = lamina(&["completions", "tcsh"], t.path(), &[]);
    assert_eq!(bad.status.code(), Some(2), "{}", describe(&bad));
    assert!(stderr_of(&bad).contains("tcsh"), "{}", describe(&bad));
}

/// `man -l PAGE`, formatted as plain text at a fixed width.
fn man_render(page: &Path) -> String {
    let man = require_tool("man");
    let mut cmd = Command::new(man);
    cmd.arg("-l")
        .arg(page)
        .env("MANPAGER", "cat")
        .env("PAGER", "cat")
        .env("MANWIDTH", "200")
        .env("MAN_KEEP_FORMATTING", "0");
    let out = run_bounded(&mut cmd, None, Duration::from_secs(30));
    assert!(
        out.status.success(),
        "man -l {}:\n{}",
        page.display(),
        describe(&out)
    );
    let text = stdout_text(&out);
    // Formatted text drops overstrikes (bold is `X\bX`) so plain words can be searched.
    let mut plain = String::with_capacity(text.len());
    for c in text.chars() {
        if c == '\u{8}' {
            plain.pop();
        } else {
            plain.push(c);
        }
    }
    plain
}

#[test]
fn the_manual_page_renders_with_man_and_lists_every_subcommand() {
    let t = TempDir::new().unwrap();
    let out = lamina_ok(&["man"], t.path(), &[]);
    let page = t.path().join("lamina.1");
    fs::write(&page, &out.stdout).unwrap();
    let text = man_render(&page);
    assert!(text.contains("NAME") && text.contains("SYNOPSIS"), "{text}");
    for sub in SUBCOMMANDS {
        assert!(
            text.contains(&format!("lamina-{sub}(1)")),
            "lamina(1) lacks {sub}:\n{text}"
        );
    }
    assert!(
        text.contains("Exit status") || text.contains("exit status"),
        "{text}"
    );
}

#[test]
fn man_dir_writes_one_rendering_page_per_subcommand() {
    let t = TempDir::new().unwrap();
    let dir = t.path().join("share/man/man1");
    lamina_ok(&["man", "--dir", dir.to_str().unwrap()], t.path(), &[]);
    let mut names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut expected: Vec<String> = SUBCOMMANDS
        .iter()
        .map(|s| format!("lamina-{s}.1"))
        .chain(["lamina.1".to_owned()])
        .collect();
    expected.sort();
    assert_eq!(
        names, expected,
        "one page per command, nothing else left behind"
    );
    let build = man_render(&dir.join("lamina-build.1"));
    assert!(build.contains("lamina-build"), "{build}");
    for flag in ["--platform", "--to", "--base", "--layer"] {
        assert!(
            build.contains(flag),
            "lamina-build(1) lacks {flag}:\n{build}"
        );
    }
    // A directory that cannot be created is an error naming it.
    let blocker = t.path().join("file");
    fs::write(&blocker, "").unwrap();
    let bad = lamina(&["man", "--dir", "file/man1"], t.path(), &[]);
    assert_eq!(bad.status.code(), Some(1), "{}", describe(&bad));
    assert!(stderr_of(&bad).contains("file/man1"), "{}", describe(&bad));
}

#[test]
fn version_names_the_crate_version_and_the_commit() {
    let t = TempDir::new().unwrap();
    let out = lamina_ok(&["--version"], t.path(), &[]);
    let line = stdout_text(&out);
    assert!(
        line.starts_with(&format!("lamina {}", env!("CARGO_PKG_VERSION"))),
        "{line}"
    );
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let git = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["rev-parse", "--short", "HEAD"])
        .output();
    match git {
        Ok(g) if g.status.success() => {
            let commit = String::from_utf8_lossy(&g.stdout).trim().to_owned();
            assert!(
                line.contains(&format!("({commit})")),
                "{line} lacks {commit}"
            );
        }
        // Not a git checkout (a source tarball): the version alone.
        _ => assert_eq!(line.trim(), format!("lamina {}", env!("CARGO_PKG_VERSION"))),
    }
}

#[test]
fn the_shipped_schema_is_the_generated_one() {
    let t = TempDir::new().unwrap();
    let out = lamina_ok(&["schema"], t.path(), &[]);
    let shipped = fs::read_to_string(shipped_schema()).unwrap_or_default();
    assert!(
        stdout_text(&out) == shipped,
        "schema/lamina.schema.json differs from what the spec types generate; regenerate it \
         with `cargo run -- schema > schema/lamina.schema.json` and commit it"
    );
}

/// Every `*.toml` under `dir`.
fn tomls_under(dir: &Path, found: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            tomls_under(&p, found);
        } else if p.extension().is_some_and(|x| x == "toml") {
            found.push(p);
        }
    }
}

#[test]
fn every_fixture_spec_and_every_starter_spec_is_valid_against_the_schema() {
    let mut specs = Vec::new();
    tomls_under(&fixtures_dir(), &mut specs);
    assert!(!specs.is_empty(), "no fixture spec found");
    let t = TempDir::new().unwrap();
    for runtime in [
        "python3.13",
        "nodejs22.x",
        "java21",
        "provided.al2023",
        "ruby3.4",
    ] {
        let d = t.path().join(runtime);
        fs::create_dir(&d).unwrap();
        lamina_ok(&["init", "--runtime", runtime], &d, &[]);
        let spec = d.join("lamina.toml");
        let text = fs::read_to_string(&spec).unwrap();
        assert_eq!(
            text.lines().next(),
            Some("#:schema ./lamina.schema.json"),
            "the first line points editors at the schema"
        );
        let beside = fs::read_to_string(d.join("lamina.schema.json")).unwrap();
        assert_eq!(
            beside,
            fs::read_to_string(shipped_schema()).unwrap(),
            "init writes the shipped schema beside lamina.toml"
        );
        specs.push(spec);
    }
    for (file, errors) in schema_errors(&shipped_schema(), &specs) {
        assert!(errors.is_empty(), "{}: {errors:?}", file.display());
    }
}

#[test]
fn the_schema_refuses_what_lamina_refuses() {
    let t = TempDir::new().unwrap();
    fs::create_dir(t.path().join("f")).unwrap();
    let cases = [
        ("unknown", "bogus = 1\n", "bogus"),
        (
            "runtime",
            "[function]\nruntime = \"python3.1\"\n",
            "python3.1",
        ),
        (
            "mode",
            "[[layer]]\nsource = \"f\"\ndest = \"/x\"\nmode = \"0999\"\n",
            "0999",
        ),
        ("dest", "[[layer]]\nsource = \"f\"\n", "dest"),
        ("cmd", "[config]\ncmd = 3\n", "cmd"),
    ];
    let mut files = Vec::new();
    for (name, text, _) in &cases {
        let d = t.path().join(name);
        fs::create_dir(&d).unwrap();
        fs::create_dir(d.join("f")).unwrap();
        fs::write(d.join("lamina.toml"), text).unwrap();
        files.push(d.join("lamina.toml"));
    }
    let errors = schema_errors(&shipped_schema(), &files);
    for ((name, _, word), file) in cases.iter().zip(&files) {
        let e = &errors[file];
        assert!(!e.is_empty(), "the schema accepts the bad {name} spec");
        let refused = lamina(&["build", "-f", file.to_str().unwrap()], t.path(), &[]);
        assert_eq!(
            refused.status.code(),
            Some(2),
            "{name}: {}",
            describe(&refused)
        );
        assert!(
            stderr_of(&refused).contains(word),
            "{name}: {}",
            describe(&refused)
        );
    }
}
