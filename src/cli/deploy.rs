//! `lamina deploy`: lamina.toml's `[deploy]` section and flags to a [`lamina::deploy::Plan`];
//! the work is in the library's `deploy` module.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;

use lamina::deploy::{Code, FunctionConfig, LayerSource, Plan, Target};
use lamina::{BuildSpec, DeploySpec, Overrides, PackageKind, SpecFile, flags};

use super::flags::{EcrFlags, LayerCacheFlags, NetworkFlags, OutputFlags, PushFlags};
use super::{cwd, parse_platform, parse_ref, print_json, print_lines};

#[derive(Args, Debug)]
pub struct DeployArgs {
    /// The build spec (default: ./lamina.toml if it exists), with its [deploy] section.
    #[arg(short = 'f', long = "file", value_name = "PATH")]
    file: Option<PathBuf>,
    /// Where the image is pushed: an ECR repository (docker://ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPO[:TAG]).
    #[arg(long, value_name = "REF")]
    to: Option<String>,
    /// linux/amd64 (x86_64) or linux/arm64 (aarch64).
    #[arg(long, value_name = "PLATFORM")]
    platform: Option<String>,
    /// Deploy this image, already in ECR, instead of building (its digest is looked up).
    #[arg(long, value_name = "REF", conflicts_with_all = ["zip", "to"])]
    image: Option<String>,
    /// Deploy this .zip deployment package instead of building.
    #[arg(long, value_name = "FILE")]
    zip: Option<PathBuf>,
    /// image or zip (default: [deploy] package, else image).
    #[arg(long, value_name = "KIND", value_parser = ["image", "zip"])]
    package: Option<String>,
    /// The function to deploy (over [deploy] function_name; with several functions in the
    /// spec, use --only).
    #[arg(long, value_name = "NAME")]
    function_name: Option<String>,
    /// Deploy only these functions of the spec. Repeatable.
    #[arg(long, value_name = "NAME")]
    only: Vec<String>,
    /// Execution role ARN (needed to create a function).
    #[arg(long, value_name = "ARN")]
    role: Option<String>,
    /// Memory in MB.
    #[arg(long, value_name = "MB")]
    memory: Option<i32>,
    /// The function's timeout in seconds.
    #[arg(long, value_name = "SECONDS")]
    function_timeout: Option<i32>,
    /// Description.
    #[arg(long, value_name = "TEXT")]
    description: Option<String>,
    /// Ephemeral storage (/tmp) in MB.
    #[arg(long, value_name = "MB")]
    ephemeral_storage: Option<i32>,
    /// A Lambda environment variable (over [deploy] environment). Repeatable.
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// A Lambda layer version ARN for a .zip function (replaces [deploy] layers). Repeatable.
    #[arg(long = "layer-arn", value_name = "ARN")]
    layer_arns: Vec<String>,
    /// The handler (.zip functions), or the image's command (image functions).
    #[arg(long, value_name = "HANDLER")]
    handler: Option<String>,
    /// S3 bucket to upload a .zip through (needed over 50 MB).
    #[arg(long, value_name = "BUCKET")]
    s3_bucket: Option<String>,
    /// Publish [function] layers as Lambda layers (when their zip changed) and attach them
    /// (.zip functions).
    #[arg(long)]
    publish_layers: bool,
    /// Publish a version after the update.
    #[arg(long)]
    publish: bool,
    /// Create or move this alias to the version published (implies --publish).
    #[arg(long, value_name = "NAME")]
    alias: Option<String>,
    /// Give up waiting for a function to settle after SECONDS.
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    wait_timeout: u64,
    /// Functions deployed at once.
    #[arg(long, value_name = "N", default_value_t = 4)]
    functions_jobs: usize,
    /// Deploy even when the Lambda checks find errors.
    #[arg(long)]
    no_lambda_check: bool,
    #[command(flatten)]
    layer_cache: LayerCacheFlags,
    #[command(flatten)]
    output: OutputFlags,
    #[command(flatten)]
    network: NetworkFlags,
    #[command(flatten)]
    push: PushFlags,
    #[command(flatten)]
    ecr: EcrFlags,
}

impl DeployArgs {
    /// The configuration flags, over `d` (a resolved [`DeploySpec`] entry) and `[function]`.
    fn config(&self, d: &DeploySpec, sf: Option<&SpecFile>) -> anyhow::Result<FunctionConfig> {
        let function = sf.and_then(|s| s.function.as_ref());
        let zip = self.kind(sf) == PackageKind::Zip;
        // An image holds `[function] env` in its config; a .zip has no place for it but
        // Lambda's environment.
        let mut environment = match function {
            Some(f) if zip => f.env.clone(),
            _ => Default::default(),
        };
        environment.extend(d.environment.clone());
        environment.extend(flags::key_values(&self.env, "--env")?);
        let handler = self.handler.clone().or_else(|| d.handler.clone());
        Ok(FunctionConfig {
            role: self.role.clone().or_else(|| d.role.clone()),
            memory: self.memory.or(d.memory),
            timeout: self.function_timeout.or(d.timeout),
            description: self.description.clone().or_else(|| d.description.clone()),
            ephemeral_storage: self.ephemeral_storage.or(d.ephemeral_storage),
            environment,
            layers: Some(self.layer_arns.clone())
                .filter(|l| !l.is_empty())
                .or_else(|| d.layers.clone()),
            handler: if zip {
                handler.or_else(|| function.and_then(|f| f.handler.clone()))
            } else {
                handler
            },
            runtime: zip
                .then(|| function.and_then(|f| f.runtime.clone()))
                .flatten(),
            entrypoint: d.entrypoint.clone(),
            workdir: d.workdir.clone(),
        })
    }

    /// Image or zip: the flags, then the spec, else image.
    fn kind(&self, sf: Option<&SpecFile>) -> PackageKind {
        if self.zip.is_some() || self.package.as_deref() == Some("zip") {
            return PackageKind::Zip;
        }
        if self.image.is_some() || self.package.as_deref() == Some("image") {
            return PackageKind::Image;
        }
        sf.and_then(|s| s.deploy.as_ref())
            .and_then(|d| d.package)
            .unwrap_or(PackageKind::Image)
    }

    /// The functions: `--function-name`, or the spec's entries (picked with `--only`).
    fn targets(&self, file: Option<&Path>, sf: Option<&SpecFile>) -> anyhow::Result<Vec<Target>> {
        let section = sf.and_then(|s| s.deploy.clone()).unwrap_or_default();
        let spec_err = |message: String| lamina::Error::Spec {
            file: file.map(Path::to_owned).unwrap_or_default(),
            message,
        };
        let entries = if let Some(name) = &self.function_name {
            vec![DeploySpec {
                function_name: Some(name.clone()),
                functions: Vec::new(),
                ..section
            }]
        } else {
            section.entries().map_err(spec_err)?
        };
        let mut targets = Vec::new();
        for d in &entries {
            let Some(name) = d.function_name.clone() else {
                continue;
            };
            if !self.only.is_empty() && !self.only.contains(&name) {
                continue;
            }
            targets.push(Target {
                config: self.config(d, sf)?,
                name,
            });
        }
        if let Some(unknown) = self
            .only
            .iter()
            .find(|o| !entries.iter().any(|d| d.function_name.as_ref() == Some(o)))
        {
            let names: Vec<&str> = entries
                .iter()
                .filter_map(|d| d.function_name.as_deref())
                .collect();
            return Err(lamina::Error::usage(format!(
                "--only {unknown}: no such function in the spec (it has: {})",
                names.join(", ")
            ))
            .into());
        }
        Ok(targets)
    }

    /// The build spec, for the code lamina builds.
    fn build_spec(
        &self,
        file: Option<&Path>,
        sf: Option<SpecFile>,
        cwd: &Path,
    ) -> anyhow::Result<BuildSpec> {
        let sde = std::env::var("SOURCE_DATE_EPOCH").ok();
        let ov = Overrides {
            to: self
                .to
                .as_deref()
                .map(|t| flags::reference(t, "--to", cwd))
                .transpose()?,
            platform: parse_platform(self.platform.as_deref())?,
            timestamp: flags::timestamp_or_epoch(None, sde.as_deref())?,
            no_lambda_check: self.no_lambda_check,
            no_cache: self.layer_cache.no_cache,
            ..Overrides::default()
        };
        Ok(BuildSpec::resolve(file.zip(sf), &ov, cwd)?)
    }
}

impl DeployArgs {
    /// The Lambda layers to publish: `[function] layers` (paths relative to the spec's
    /// directory) with `--publish-layers` or `[deploy] publish_layers`, else none.
    fn layers(&self, file: Option<&Path>, sf: Option<&SpecFile>, cwd: &Path) -> Vec<LayerSource> {
        let wanted = self.publish_layers
            || sf
                .and_then(|s| s.deploy.as_ref())
                .and_then(|d| d.publish_layers)
                .unwrap_or(false);
        let Some(f) = sf.and_then(|s| s.function.as_ref()).filter(|_| wanted) else {
            return Vec::new();
        };
        let spec_dir = cwd.join(file.and_then(Path::parent).unwrap_or(Path::new("")));
        f.layers
            .iter()
            .map(|l| LayerSource::named_after(spec_dir.join(l)))
            .collect()
    }

    /// The code: `--image`, `--zip`, or the spec built as an image or a zip.
    fn code(&self, file: Option<&Path>, sf: Option<SpecFile>, cwd: &Path) -> anyhow::Result<Code> {
        let zip = self.kind(sf.as_ref()) == PackageKind::Zip;
        if let Some(image) = &self.image {
            return Ok(Code::Image {
                reference: parse_ref(image, cwd)?,
                platform: parse_platform(self.platform.as_deref())?,
            });
        }
        if let Some(z) = &self.zip {
            let platform = match parse_platform(self.platform.as_deref())? {
                Some(p) => p,
                None => self.build_spec(file, sf, cwd)?.platform,
            };
            return Ok(Code::Zip {
                path: cwd.join(z),
                platform,
            });
        }
        if file.is_none() {
            return Err(lamina::Error::usage(format!(
                "nothing to deploy: no lamina.toml in {} and no -f FILE, --image REF or --zip FILE given",
                cwd.display()
            ))
            .into());
        }
        let spec = Box::new(self.build_spec(file, sf, cwd)?);
        Ok(if zip {
            Code::BuildZip(spec)
        } else {
            Code::BuildImage(spec)
        })
    }

    /// The whole deploy these flags and the spec describe.
    fn plan(&self, cwd: &Path) -> anyhow::Result<Plan> {
        if self.wait_timeout == 0 || self.functions_jobs == 0 {
            return Err(lamina::Error::usage(
                "--wait-timeout and --functions-jobs must be at least 1",
            )
            .into());
        }
        let file = match &self.file {
            Some(f) => Some(f.clone()),
            None => Some(PathBuf::from("lamina.toml")).filter(|p| p.is_file()),
        };
        let sf = file.as_deref().map(lamina::read_spec_file).transpose()?;
        let s3_bucket = self.s3_bucket.clone().or_else(|| {
            sf.as_ref()
                .and_then(|s| s.deploy.as_ref())
                .and_then(|d| d.s3_bucket.clone())
        });
        Ok(Plan {
            functions: self.targets(file.as_deref(), sf.as_ref())?,
            layers: self.layers(file.as_deref(), sf.as_ref(), cwd),
            s3_bucket,
            code: self.code(file.as_deref(), sf, cwd)?,
            s3_path_style: super::env::custom_s3_endpoint(),
            publish: self.publish || self.alias.is_some(),
            alias: self.alias.clone(),
            wait_timeout: Duration::from_secs(self.wait_timeout),
            jobs: self.functions_jobs,
            lambda_check: !self.no_lambda_check,
        })
    }
}

/// Deploy, and print one line per function (or the JSON report).
pub async fn run(a: DeployArgs) -> anyhow::Result<()> {
    let plan = a.plan(&cwd()?)?;
    let quiet = a.output.quiet;
    let mut opts = a.network.options(quiet)?;
    a.push.apply(&mut opts)?;
    a.ecr.apply(&mut opts);
    let log = |s: String| {
        if !quiet {
            eprintln!("{s}");
        }
    };
    let report = lamina::deploy::deploy(&plan, &opts, &log).await?;
    if a.output.json {
        return print_json(&report);
    }
    log(format!("deployed in {:.2}s", report.seconds));
    print_lines(report.functions.iter().map(|f| {
        let mut line = format!("{} {} {}", f.function_name, f.outcome, f.code);
        if let Some(v) = &f.version {
            line.push_str(&format!(" version {v}"));
        }
        if let Some(al) = &f.alias {
            line.push_str(&format!(" alias {al}"));
        }
        line
    }))
}
