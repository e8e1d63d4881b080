//! [`Sandbox`]: lamina run against network peers with its home, docker config, caches and
//! working directory inside one temporary directory, so the real home (and, for ECR, the real
//! AWS account) is never touched.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use tempfile::TempDir;

use super::{
    Node, assert_no_panic, describe, fixture_spec, lamina_bin, oci_ref, parse_digest, path_str,
    read_layout, run_bounded, stderr_of, strings, tree_snapshot, write_noise,
};

/// Upper bound for one lamina run (retries with backoff included).
pub const LAMINA_TIMEOUT: Duration = Duration::from_secs(300);

/// Remove every inherited `AWS_*` variable from `cmd`'s environment.
pub fn clear_aws_env(cmd: &mut Command) {
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
}

/// A temporary directory holding lamina's home (`home`), docker config (`docker`), caches
/// (`xdg-cache`, `cache`), a `bin` directory put first in `PATH` (for credential helpers) and
/// the test's files (`work`, lamina's working directory), and the environment lamina runs
/// with: the inherited one minus every `AWS_*`, `SOURCE_DATE_EPOCH`, `SSL_CERT_FILE` and
/// `SSL_CERT_DIR`, plus what [`Sandbox::set`] adds. Every run must not panic and must not
/// print any of the sandbox's secrets.
pub struct Sandbox {
    tmp: TempDir,
    /// Set (`Some`) or removed (`None`) on top of the inherited environment minus `AWS_*`.
    env: BTreeMap<String, Option<OsString>>,
    /// Strings that must never appear in lamina's output.
    secrets: Vec<String>,
}

impl Sandbox {
    /// A fresh sandbox whose runs must never print any of `secrets`.
    pub fn new(secrets: Vec<String>) -> Sandbox {
        let tmp = TempDir::new().expect("tempdir");
        for d in ["home", "docker", "xdg-cache", "cache", "work", "bin"] {
            fs::create_dir_all(tmp.path().join(d)).expect("mkdir sandbox");
        }
        let root = tmp.path().to_path_buf();
        let mut sb = Sandbox {
            tmp,
            env: BTreeMap::new(),
            secrets,
        };
        let mut path = root.join("bin").into_os_string();
        path.push(":");
        path.push(std::env::var_os("PATH").unwrap_or_default());
        sb.set("PATH", path);
        sb.set("HOME", root.join("home"));
        sb.set("DOCKER_CONFIG", sb.docker_dir());
        sb.set("XDG_CACHE_HOME", root.join("xdg-cache"));
        sb.set("LAMINA_CACHE_DIR", root.join("cache"));
        sb.unset("SOURCE_DATE_EPOCH");
        sb.unset("SSL_CERT_FILE");
        sb.unset("SSL_CERT_DIR");
        sb
    }

    /// Set `k` in lamina's environment.
    pub fn set(&mut self, k: &str, v: impl Into<OsString>) {
        self.env.insert(k.to_owned(), Some(v.into()));
    }

    /// Remove `k` from lamina's environment.
    pub fn unset(&mut self, k: &str) {
        self.env.insert(k.to_owned(), None);
    }

    pub fn root(&self) -> &Path {
        self.tmp.path()
    }

    /// Where the test's own files go (lamina's working directory).
    pub fn work(&self) -> PathBuf {
        self.root().join("work")
    }

    /// `$DOCKER_CONFIG`
    pub fn docker_dir(&self) -> PathBuf {
        self.root().join("docker")
    }

    pub fn docker_config(&self) -> PathBuf {
        self.docker_dir().join("config.json")
    }

    /// Files under the cache directories (`XDG_CACHE_HOME` and `LAMINA_CACHE_DIR`).
    pub fn cache_files(&self) -> usize {
        ["xdg-cache", "cache"]
            .iter()
            .map(|d| {
                tree_snapshot(&self.root().join(d))
                    .values()
                    .filter(|n| matches!(n, Node::File { .. }))
                    .count()
            })
            .sum()
    }

    /// Run lamina; it must not panic and its output must not contain any secret.
    pub fn run(&self, args: &[String], stdin: Option<&[u8]>) -> Output {
        self.run_env(args, stdin, &[])
    }

    /// [`Sandbox::run`] with extra environment variables on top of the sandbox's.
    pub fn run_env(
        &self,
        args: &[String],
        stdin: Option<&[u8]>,
        env: &[(&str, OsString)],
    ) -> Output {
        let mut cmd = Command::new(lamina_bin());
        cmd.args(args).current_dir(self.work());
        clear_aws_env(&mut cmd);
        for (k, v) in &self.env {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = run_bounded(&mut cmd, stdin, LAMINA_TIMEOUT);
        assert_no_panic(&out);
        self.assert_no_secrets(&out, args);
        out
    }

    fn assert_no_secrets(&self, out: &Output, args: &[String]) {
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        for s in &self.secrets {
            assert!(
                !stdout.contains(s.as_str()) && !stderr.contains(s.as_str()),
                "lamina {args:?} printed a secret ({s}):\n{}",
                describe(out)
            );
        }
    }

    /// Run lamina; it must succeed.
    pub fn ok(&self, args: &[String]) -> Output {
        let out = self.run(args, None);
        assert!(
            out.status.success(),
            "lamina {args:?} failed:\n{}",
            describe(&out)
        );
        out
    }

    /// Run lamina; it must fail with a message.
    pub fn fail(&self, args: &[String]) -> Output {
        let out = self.run(args, None);
        assert!(
            !out.status.success(),
            "lamina {args:?} should have failed:\n{}",
            describe(&out)
        );
        assert!(
            !stderr_of(&out).trim().is_empty(),
            "lamina {args:?} failed without a message:\n{}",
            describe(&out)
        );
        out
    }

    /// `lamina build -f fixtures/lamina.toml --to DEST EXTRA...`
    pub fn build_args(dest: &str, extra: &[String]) -> Vec<String> {
        let mut a = strings(&["build", "-f", path_str(&fixture_spec()), "--to", dest]);
        a.extend_from_slice(extra);
        a
    }

    /// `lamina build -f fixtures/lamina.toml --to oci:WORK/NAME:latest EXTRA...`; returns the
    /// printed digest and the layout.
    pub fn build_oci(&self, name: &str, extra: &[String]) -> (String, PathBuf) {
        let layout = self.work().join(name);
        let digest =
            parse_digest(&self.ok(&Sandbox::build_args(&oci_ref(&layout, "latest"), extra)));
        let (_, in_layout, _) = read_layout(&layout, "latest");
        assert_eq!(in_layout, digest, "printed digest vs layout");
        (digest, layout)
    }

    /// The fixture plus a layer of `len` bytes of noise at /data/blob.bin, into an OCI layout.
    pub fn build_big(&self, name: &str, len: usize) -> (String, PathBuf) {
        let noise = self.work().join(format!("{name}-noise.bin"));
        write_noise(&noise, len, 0x1a2b_3c4d);
        let layer = format!("{}:/data/blob.bin", noise.display());
        self.build_oci(name, &strings(&["--layer", &layer]))
    }
}
