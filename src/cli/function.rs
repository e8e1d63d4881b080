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
    /// Run the function as this user instead of Lambda's sbx_user1051 (993:990).
    #[arg(long, value_name = "UID[:GID]", conflicts_with = "root")]
    user: Option<String>,
    /// Run the function as root inside the sandbox (Lambda never does).
    #[arg(long)]
    root: bool,
    /// Give the function the AWS credentials lamina's AWS configuration resolves to
    /// (environment, profile, SSO...), as Lambda gives it its role's.
    #[arg(long)]
    aws_credentials: bool,
    /// The Lambda runtime the function is deployed with (python3.12, nodejs20.x...): sets
    /// AWS_EXECUTION_ENV as Lambda does for managed runtimes.
    #[arg(long, value_name = "RUNTIME")]
    managed_runtime: Option<String>,
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

    /// `--user`/`--root`: who the function runs as (`None`: root).
    fn user(&self) -> anyhow::Result<Option<(u32, u32)>> {
        if self.root {
            return Ok(None);
        }
        let Some(u) = &self.user else {
            return Ok(Some((lamina::run::LAMBDA_UID, lamina::run::LAMBDA_GID)));
        };
        let bad =
            || lamina::Error::usage(format!("--user `{u}`: expected UID or UID:GID (numbers)"));
        let (uid, gid) = match u.split_once(':') {
            Some((a, b)) => (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?),
            None => {
                let uid: u32 = u.parse().map_err(|_| bad())?;
                (uid, uid)
            }
        };
        Ok(Some((uid, gid)))
    }

    /// The image argument.
    pub fn image(&self) -> &str {
        &self.image
    }

    /// The options every invocation runs under (AWS credentials resolved when asked for).
    pub async fn options(&self) -> anyhow::Result<lamina::run::RunOptions> {
        let mut opts = lamina::run::RunOptions {
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
            credentials: lamina::run::Credentials::default(),
            user: self.user()?,
            execution_env: match &self.managed_runtime {
                Some(r) => lamina::run::execution_env(r)?,
                None => None,
            },
        };
        if self.aws_credentials {
            opts.credentials = aws_credentials(&opts.region).await?;
        }
        Ok(opts)
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
        let opts = self.options().await?;
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
                "lamina: the image's USER {u} is not used: Lambda runs every function as its own user ({})",
                match opts.user {
                    Some((uid, gid)) => format!("here uid {uid}, gid {gid}"),
                    None => "here root, as --root asks".to_owned(),
                }
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

/// The credentials lamina's AWS configuration resolves to (the SDK's standard chain:
/// environment, shared files and profiles, SSO, web identity, container and instance
/// metadata), as `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN` would give
/// them to the function. Never printed: an error says only that none were found, and why.
async fn aws_credentials(region: &str) -> anyhow::Result<lamina::run::Credentials> {
    use aws_sdk_ecr::config::ProvideCredentials;
    let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(region.to_owned()))
        .load()
        .await;
    let none = |why: String| {
        lamina::Error::Auth(format!(
            "--aws-credentials: no AWS credentials could be resolved ({why}): set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or log in with aws sso login"
        ))
    };
    let provider = conf
        .credentials_provider()
        .ok_or_else(|| none("no credentials provider is configured".to_owned()))?;
    let c = provider
        .provide_credentials()
        .await
        .map_err(|e| none(e.to_string()))?;
    Ok(lamina::run::Credentials {
        access_key_id: Some(c.access_key_id().to_owned()),
        secret_access_key: Some(c.secret_access_key().to_owned()),
        session_token: c.session_token().map(str::to_owned),
    })
}
