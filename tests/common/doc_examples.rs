//! The examples of lamina's documentation, as tests run them: fenced blocks read from the
//! Markdown with the `<!-- docs-test: ... -->` marker on the line before each (see
//! docs/README.md), and the sandbox they run in: a copy of `fixtures/` with `lamina` on the
//! PATH, a cache and a home of their own.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use super::{clear_aws_env, copy_tree, fixtures_dir, lamina_bin, require_tool, run_bounded};

/// One fenced block of a Markdown file.
#[derive(Debug, Clone)]
pub struct Block {
    /// The file and the line of the opening fence, for messages.
    pub file: PathBuf,
    pub line: usize,
    /// The fence's language (`sh`, `toml`, `yaml`, ...).
    pub lang: String,
    /// What the marker comment says (`run`, `spec`, `skip: why`), when there is one.
    pub marker: Option<String>,
    pub text: String,
}

impl Block {
    /// `file:line`, for messages.
    pub fn at(&self) -> String {
        format!("{}:{}", self.file.display(), self.line)
    }
}

/// The fenced blocks of the Markdown file `path`.
pub fn blocks(path: &Path) -> Vec<Block> {
    let text =
        fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut out = Vec::new();
    let mut open: Option<Block> = None;
    let mut previous = "";
    for (i, line) in text.lines().enumerate() {
        if let Some(b) = open.as_mut() {
            if line.trim_start() == "```" {
                out.push(open.take().unwrap());
            } else {
                b.text.push_str(line);
                b.text.push('\n');
            }
        } else if let Some(lang) = line.trim_start().strip_prefix("```") {
            let marker = previous
                .trim()
                .strip_prefix("<!-- docs-test:")
                .and_then(|m| m.strip_suffix("-->"))
                .map(|m| m.trim().to_owned());
            open = Some(Block {
                file: path.to_owned(),
                line: i + 1,
                lang: lang.trim().to_owned(),
                marker,
                text: String::new(),
            });
        }
        if !line.trim().is_empty() {
            previous = line;
        }
    }
    assert!(
        open.is_none(),
        "{}: a fence is never closed",
        path.display()
    );
    out
}

/// A sandbox for examples: `fixtures/` copied into a temporary directory (with a `deps/`
/// directory holding one file, for the examples that package dependencies), and the
/// environment the examples run with.
pub struct DocSandbox {
    pub dir: tempfile::TempDir,
    pub env: Vec<(String, String)>,
}

impl DocSandbox {
    pub fn new() -> DocSandbox {
        let dir = tempfile::TempDir::new().unwrap();
        let fixtures = dir.path().join("fixtures");
        copy_tree(&fixtures_dir(), &fixtures);
        fs::create_dir_all(fixtures.join("deps/python")).unwrap();
        fs::write(fixtures.join("deps/python/helper.py"), "X = 1\n").unwrap();
        let bin_dir = Path::new(lamina_bin()).parent().unwrap().to_owned();
        let path = format!(
            "{}:{}",
            bin_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let home = dir.path().join("home");
        fs::create_dir(&home).unwrap();
        let env = vec![
            ("PATH".to_owned(), path),
            ("HOME".to_owned(), home.display().to_string()),
            (
                "LAMINA_CACHE_DIR".to_owned(),
                dir.path().join("cache").display().to_string(),
            ),
            (
                "DOCKER_CONFIG".to_owned(),
                home.join(".docker").display().to_string(),
            ),
        ];
        DocSandbox { dir, env }
    }

    /// Run `script` with `bash -euo pipefail` in `cwd` (relative to the sandbox), with the
    /// sandbox's environment (no inherited `AWS_*`) and `extra`; at most `limit`.
    pub fn bash(&self, script: &str, cwd: &str, extra: &[(&str, &str)], limit: Duration) -> Output {
        let mut cmd = Command::new(require_tool("bash"));
        cmd.args(["--norc", "--noprofile", "-euo", "pipefail", "-c", script])
            .current_dir(self.dir.path().join(cwd))
            .env_remove("SOURCE_DATE_EPOCH");
        clear_aws_env(&mut cmd);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        for (k, v) in extra {
            cmd.env(k, v);
        }
        run_bounded(&mut cmd, None, limit)
    }
}
