//! Flag groups, each flattened only into the commands that use it, so `--help` of a command
//! lists what that command reads and nothing else. Names and meanings are shared by every
//! command that takes a group (the README and the tests rely on them).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use lamina::EcrOptions;
use lamina::Options;
use lamina::Progress;

/// Reusing layers built before: one flag, one meaning, for every command that builds
/// (`build`, `deploy`).
#[derive(Args, Clone, Debug)]
pub struct LayerCacheFlags {
    /// Rebuild every layer instead of reusing those whose inputs did not change (the registry
    /// cache is not looked up either, but still gets the layers built).
    #[arg(long)]
    pub no_cache: bool,
}

/// Reaching registries, with a time limit on the whole command (`--timeout`): for every
/// command that may read from or write to one, except `run` and `invoke`, whose `--timeout`
/// is the function's (they take [`RegistryFlags`]).
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "Registry options")]
pub struct NetworkFlags {
    #[command(flatten)]
    pub registry: RegistryFlags,
    /// Give up when the whole command has taken SECONDS (default: no limit).
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<u64>,
}

impl NetworkFlags {
    /// The registry options these flags describe, the deadline included (see
    /// [`RegistryFlags::options`]).
    pub fn options(&self, quiet: bool) -> lamina::Result<Options> {
        if self.timeout == Some(0) {
            return Err(lamina::Error::usage("--timeout must be at least 1 second"));
        }
        let mut opts = self.registry.options(quiet)?;
        opts.deadline = self
            .timeout
            .map(|t| super::set_deadline(Duration::from_secs(t)));
        Ok(opts)
    }
}

/// Reaching registries: the flags of [`NetworkFlags`] but `--timeout`.
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "Registry options")]
pub struct RegistryFlags {
    /// Allow plain HTTP and unverified TLS for this registry (HOST[:PORT]). Repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST")]
    pub insecure_registry: Vec<String>,
    /// Trust the PEM certificates in FILE too. Repeatable.
    #[arg(long = "ca-cert", value_name = "FILE")]
    pub ca_cert: Vec<PathBuf>,
    /// Blobs transferred in parallel.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub jobs: usize,
    /// Attempts after the first on connection errors, stalls, 408, 429 and 5xx.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub retries: u32,
    /// Reach a registry's API at URL instead ([REGISTRY=]URL; without REGISTRY, every ECR registry).
    #[arg(long = "registry-endpoint", value_name = "[REGISTRY=]URL")]
    pub registry_endpoint: Vec<String>,
    /// AWS profile for ECR (default: AWS_PROFILE, then the default chain).
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,
    /// Fail a transfer after SECONDS without a byte sent or received (it is retried like a
    /// dropped connection).
    #[arg(long = "stall-timeout", value_name = "SECONDS", default_value_t = lamina::DEFAULT_STALL.as_secs())]
    pub stall_timeout: u64,
}

impl RegistryFlags {
    /// The registry options these flags describe; progress goes to stderr unless `quiet`.
    /// A flag value the library would reject later is refused here as a usage error.
    pub fn options(&self, quiet: bool) -> lamina::Result<Options> {
        if self.jobs == 0 {
            return Err(lamina::Error::usage("--jobs must be at least 1"));
        }
        if self.stall_timeout == 0 {
            return Err(lamina::Error::usage(
                "--stall-timeout must be at least 1 second",
            ));
        }
        let endpoints = self
            .registry_endpoint
            .iter()
            .map(|e| match e.split_once('=') {
                Some((r, url)) => (Some(r.to_owned()), url.to_owned()),
                None => (None, e.clone()),
            })
            .collect();
        let mut ca_certs = self.ca_cert.clone();
        ca_certs.extend(super::env::ssl_cert_file());
        Ok(Options {
            endpoints,
            ecr: EcrOptions {
                profile: self.profile.clone(),
                ..EcrOptions::default()
            },
            insecure: self.insecure_registry.clone(),
            ca_certs,
            jobs: self.jobs,
            retries: self.retries,
            progress: Progress::for_stderr(quiet),
            stall_timeout: Duration::from_secs(self.stall_timeout),
            debug: super::env::debug(),
            ..Options::new(super::env::cache_dir(), super::env::docker_config_dir())
        })
    }
}

/// Uploading blobs: for the commands that push (`build --to docker://`, `push`).
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "Push options")]
pub struct PushFlags {
    /// Upload chunk size in bytes (at least 5 MiB).
    #[arg(long, value_name = "BYTES", default_value_t = lamina::DEFAULT_CHUNK)]
    pub chunk_size: u64,
}

impl PushFlags {
    /// Set the upload options in `opts`; a chunk ECR would refuse is a usage error.
    pub fn apply(&self, opts: &mut Options) -> lamina::Result<()> {
        if self.chunk_size < lamina::MIN_CHUNK {
            return Err(lamina::Error::usage(format!(
                "--chunk-size {}: chunks must be at least {} bytes (5 MiB), as ECR requires",
                self.chunk_size,
                lamina::MIN_CHUNK
            )));
        }
        opts.chunk_size = self.chunk_size;
        Ok(())
    }
}

/// Creating a missing ECR repository: for the commands that push (to ECR).
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "ECR repository options")]
pub struct EcrFlags {
    /// Create a missing ECR repository instead of failing.
    #[arg(long)]
    pub create_repo: bool,
    /// Tag mutability of a repository lamina creates: MUTABLE or IMMUTABLE.
    #[arg(long, value_name = "MUTABILITY", value_parser = ["MUTABLE", "IMMUTABLE"])]
    pub tag_mutability: Option<String>,
    /// Enable scan on push for a repository lamina creates.
    #[arg(long)]
    pub scan_on_push: bool,
}

impl EcrFlags {
    /// Set the repository-creation options in `opts` (the profile stays as the network flags
    /// set it).
    pub fn apply(&self, opts: &mut Options) {
        opts.ecr.create_repo = self.create_repo;
        opts.ecr.tag_mutability = self.tag_mutability.clone();
        opts.ecr.scan_on_push = self.scan_on_push.then_some(true);
    }
}

/// What a command that writes an image or a zip prints: a digest on stdout and progress on
/// stderr by default.
#[derive(Args, Clone, Debug)]
pub struct OutputFlags {
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress or summary lines on stderr.
    #[arg(short, long)]
    pub quiet: bool,
}
