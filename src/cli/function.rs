//! What `run` and `invoke` share: the function's flags, and reading and unpacking its image.
//! The region and AWS credentials the function gets are read here, from lamina's environment.

use clap::Args;

use super::flags::RegistryFlags;
use super::{cwd, parse_platform, parse_ref};

#[derive(Args, Debug)]
pub struct FunctionArgs {
    /// The image: oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE, docker://REF.
    image: String,
    /// This machine's platform, picked from a multi-platform image (another one is refused:
    /// there is no emulation).
    #[arg(long)]
    platform: Option<String>,
    /// Seconds an invocation may run, as the function's Lambda timeout (1-900).
    #[arg(long, value_name = "SECS", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..=900))]
    timeout: u32,
    /// Memory size in MB, given to the function as Lambda gives it (not enforced).
    #[arg(long, value_name = "MB", default_value_t = 128,
          value_parser = clap::value_parser!(u32).range(128..=10240))]
    memory: u32,
    /// Set an environment variable of the function (KEY alone passes lamina's own). Repeatable.
    #[arg(long, value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Isolate with this OCI runtime (crun, runc) instead of lamina's own namespaces.
    #[arg(long, value_name = "RUNTIME")]
    runtime: Option<String>,
    /// The function's name (AWS_LAMBDA_FUNCTION_NAME, and in its ARN).
    #[arg(long, value_name = "NAME", default_value = "function")]
    function_name: String,
}

impl FunctionArgs {
    /// `--env` as pairs; `KEY` alone takes lamina's own value, which must be set.
    fn env(&self) -> anyhow::Result<Vec<(String, String)>> {
        let mut env = Vec::new();
        for e in &self.env {
            match e.split_once('=') {
                Some((k, v)) if !k.is_empty() => env.push((k.to_owned(), v.to_owned())),
                None if !e.is_empty() => match std::env::var(e) {
                    Ok(v) => env.push((e.clone(), v)),
                    Err(_) => {
                        return Err(lamina::Error::usage(format!(
                            "--env {e}: not set in lamina's environment"
                        ))
                        .into());
                    }
                },
                _ => {
                    return Err(
                        lamina::Error::usage(format!("--env `{e}`: expected KEY=VALUE")).into(),
                    );
                }
            }
        }
        Ok(env)
    }

    /// Read the image (reaching registries as `network` says) and unpack it, with the options
    /// every invocation runs under.
    pub async fn prepare(
        &self,
        network: &RegistryFlags,
    ) -> anyhow::Result<(lamina::run::Prepared, lamina::run::RunOptions)> {
        let cwd = cwd()?;
        let r = parse_ref(&self.image, &cwd)?;
        let platform = parse_platform(self.platform.as_deref())?;
        let opts = lamina::run::RunOptions {
            timeout: std::time::Duration::from_secs(self.timeout.into()),
            memory_mb: self.memory,
            env: self.env()?,
            isolation: match &self.runtime {
                Some(rt) => lamina::run::Isolation::Oci(rt.clone()),
                None => lamina::run::Isolation::Namespaces,
            },
            function_name: self.function_name.clone(),
            region: host_env("AWS_REGION")
                .or_else(|| host_env("AWS_DEFAULT_REGION"))
                .unwrap_or_else(|| lamina::run::DEFAULT_REGION.to_owned()),
            credentials: lamina::run::Credentials {
                access_key_id: host_env("AWS_ACCESS_KEY_ID"),
                secret_access_key: host_env("AWS_SECRET_ACCESS_KEY"),
                session_token: host_env("AWS_SESSION_TOKEN"),
            },
        };
        // An OCI runtime takes one directory: the composed copy.
        let how = match &self.runtime {
            Some(_) => lamina::run::Composition::Copy,
            None => super::env::composition()?,
        };
        let cap = super::env::cache_max()?;
        let network_opts = network.options(false)?;
        let prepared = {
            // Pruning waits while the root file system is prepared; then the entries it uses
            // are held by the sandbox (`Prepared::held`).
            let _cache = lamina::gc::CacheLock::shared(&network_opts.cache_dir)?;
            lamina::run::prepare_with(&r, platform, &network_opts, how, &mut |s| {
                eprintln!("lamina: {s}")
            })
            .await?
        };
        if !prepared.reused {
            super::cache::after(&network_opts.cache_dir, cap, false);
        }
        if let Some(u) = &prepared.user {
            eprintln!(
                "lamina: the image's USER {u} is not used: the function runs as root inside the sandbox (you, outside)"
            );
        }
        Ok((prepared, opts))
    }
}

/// A variable of lamina's own environment, when set and not empty: the function runs in
/// lamina's region, with lamina's AWS credentials.
fn host_env(k: &str) -> Option<String> {
    std::env::var(k).ok().filter(|v| !v.is_empty())
}
