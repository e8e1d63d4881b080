//! `lamina build`: lamina.toml and flags to an image at the destination.

use std::path::{Path, PathBuf};

use clap::Args;

use lamina::{BuildSpec, Overrides, flags};

use super::flags::{EcrFlags, LayerCacheFlags, NetworkFlags, OutputFlags, PushFlags};
use super::{cwd, print_json, print_line, shown};

#[derive(Args, Debug)]
pub struct BuildArgs {
    /// The build spec (default: ./lamina.toml if it exists).
    #[arg(short = 'f', long = "file", value_name = "PATH")]
    file: Option<PathBuf>,
    /// Base image: scratch, oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE,
    /// docker://REF.
    #[arg(long, value_name = "REF")]
    base: Option<String>,
    /// linux/amd64 (x86_64) or linux/arm64 (aarch64).
    #[arg(long, value_name = "PLATFORM")]
    platform: Option<String>,
    /// Destination: oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE[:NAME:TAG],
    /// docker://REF (build and push).
    #[arg(long, value_name = "REF")]
    to: Option<String>,
    /// Add a layer with SOURCE's files at DEST (after the spec's layers). Repeatable.
    #[arg(long = "layer", value_name = "SOURCE:DEST")]
    layers: Vec<String>,
    /// Delete a path of the base with a whiteout. Repeatable.
    #[arg(long = "delete", value_name = "PATH")]
    deletes: Vec<String>,
    /// ENTRYPOINT: a JSON array, or one string.
    #[arg(long, value_name = "ARGV")]
    entrypoint: Option<String>,
    /// CMD (for Lambda: the handler): a JSON array, or one string.
    #[arg(long, value_name = "ARGV")]
    cmd: Option<String>,
    /// Set an environment variable (merged over the base's). Repeatable.
    #[arg(long, value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// WORKDIR in the image.
    #[arg(long, value_name = "DIR")]
    workdir: Option<String>,
    /// USER the image runs as.
    #[arg(long, value_name = "USER[:GROUP]")]
    user: Option<String>,
    /// Config label. Repeatable.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// Manifest annotation. Repeatable.
    #[arg(long = "annotation", value_name = "KEY=VALUE")]
    annotations: Vec<String>,
    /// Seconds since the epoch for every timestamp, or `now` (default: SOURCE_DATE_EPOCH, else 0).
    #[arg(long, value_name = "SECONDS|now")]
    timestamp: Option<String>,
    /// gzip level, 0-9.
    #[arg(long, value_name = "N")]
    compression_level: Option<u32>,
    /// Make files under /var/task and /opt readable (and executables, directories usable) by
    /// others in the layers lamina writes, as Lambda's non-root user needs.
    #[arg(long)]
    fix_permissions: bool,
    /// With a docker:// destination: push even when the Lambda checks find errors.
    #[arg(long)]
    no_lambda_check: bool,
    /// A Lambda function .zip as the code: shorthand for --layer ZIP:/var/task.
    #[arg(long, value_name = "ZIP")]
    from_zip: Option<PathBuf>,
    /// A Lambda layer .zip the function uses: shorthand for --layer ZIP:/opt. Repeatable.
    #[arg(long = "lambda-layer-zip", value_name = "ZIP")]
    lambda_layer_zips: Vec<PathBuf>,
    #[command(flatten)]
    layer_cache: LayerCacheFlags,
    /// Fail if lamina.lock would change (a base not in it, or one that moved with --update-base).
    #[arg(long)]
    locked: bool,
    /// Never reach a registry: a registry base comes from lamina.lock and the blob cache.
    #[arg(long, conflicts_with = "update_base")]
    offline: bool,
    /// Resolve the base's tag at its registry again and move lamina.lock to what it names now.
    #[arg(long)]
    update_base: bool,
    /// Share layers through a registry: docker://REPO[:TAG] (default tag lamina-cache); with
    /// no value, a lamina-cache tag in the docker:// destination's repository (the default
    /// for a docker:// destination); `none`: off.
    #[arg(long, value_name = "REF", num_args = 0..=1, default_missing_value = "")]
    cache: Option<String>,
    /// Rebuild every layer a cache finds and fail if its bytes differ from the cached ones.
    #[arg(long)]
    cache_verify: bool,
    #[command(flatten)]
    output: OutputFlags,
    #[command(flatten)]
    network: NetworkFlags,
    #[command(flatten)]
    push: PushFlags,
    #[command(flatten)]
    ecr: EcrFlags,
}

impl BuildArgs {
    /// The flags that describe the build (the rest say how to reach registries and print),
    /// parsed, with paths anchored at `cwd`; `source_date_epoch` is the environment's
    /// `SOURCE_DATE_EPOCH`, used when `--timestamp` is not given.
    fn overrides(&self, cwd: &Path, source_date_epoch: Option<&str>) -> anyhow::Result<Overrides> {
        let mut layers = self
            .layers
            .iter()
            .map(|l| flags::layer(l, cwd))
            .collect::<lamina::Result<Vec<_>>>()?;
        for (z, dest) in self
            .lambda_layer_zips
            .iter()
            .map(|z| (z, "/opt"))
            .chain(self.from_zip.iter().map(|z| (z, "/var/task")))
        {
            if !z.extension().is_some_and(|e| e.eq_ignore_ascii_case("zip")) {
                return Err(lamina::Error::usage(format!(
                    "{}: --from-zip and --lambda-layer-zip take .zip files",
                    z.display()
                ))
                .into());
            }
            layers.push(flags::plain_layer(cwd.join(z), dest));
        }
        let argv =
            |a: &Option<String>, flag| a.as_deref().map(|a| flags::argv(a, flag)).transpose();
        Ok(Overrides {
            base: self
                .base
                .as_deref()
                .map(|b| flags::reference(b, "--base", cwd))
                .transpose()?,
            platform: self
                .platform
                .as_deref()
                .map(|p| flags::platform(p, "--platform"))
                .transpose()?,
            to: self
                .to
                .as_deref()
                .map(|t| flags::reference(t, "--to", cwd))
                .transpose()?,
            layers,
            deletes: self.deletes.clone(),
            entrypoint: argv(&self.entrypoint, "--entrypoint")?,
            cmd: argv(&self.cmd, "--cmd")?,
            env: flags::key_values(&self.env, "--env")?,
            workdir: self.workdir.clone(),
            user: self.user.clone(),
            labels: flags::key_values(&self.labels, "--label")?,
            annotations: flags::key_values(&self.annotations, "--annotation")?,
            timestamp: flags::timestamp_or_epoch(self.timestamp.as_deref(), source_date_epoch)?,
            compression_level: self.compression_level,
            fix_permissions: self.fix_permissions,
            no_lambda_check: self.no_lambda_check,
            no_cache: self.layer_cache.no_cache,
            base_lock: lamina::BaseLock {
                locked: self.locked,
                offline: self.offline,
                update: self.update_base,
            },
            cache: self
                .cache
                .as_deref()
                .map(|c| match c {
                    "" => Ok(lamina::CacheTo::Destination),
                    "none" => Ok(lamina::CacheTo::Off),
                    c => lamina::CacheTo::parse(c, "--cache").map_err(lamina::Error::usage),
                })
                .transpose()?,
            cache_verify: self.cache_verify,
        })
    }
}

/// A build with no spec, no layer, no deletion and no base would write an empty image: that is
/// never what was meant (usually `lamina build` in the wrong directory), so it is a usage error
/// that says what is missing.
fn nothing_to_build(has_spec: bool, ov: &Overrides, cwd: &Path) -> anyhow::Result<()> {
    if has_spec || ov.base.is_some() || !ov.layers.is_empty() || !ov.deletes.is_empty() {
        return Ok(());
    }
    Err(lamina::Error::usage(format!(
        "nothing to build: no lamina.toml in {} and no -f FILE, --layer SOURCE:DEST, --from-zip, \
         --lambda-layer-zip or --base given (`lamina init` writes a lamina.toml)",
        cwd.display()
    ))
    .into())
}

/// Build, write to the destination, and print the digest (or the JSON report).
pub async fn run(mut a: BuildArgs) -> anyhow::Result<()> {
    let cwd = cwd()?;
    let file = match a.file.take() {
        Some(f) => Some(f),
        None => Some(PathBuf::from("lamina.toml")).filter(|p| p.is_file()),
    };
    let spec_file = match &file {
        Some(f) => Some((f.as_path(), lamina::read_spec_file(f)?)),
        None => None,
    };
    let sde = std::env::var("SOURCE_DATE_EPOCH").ok();
    let ov = a.overrides(&cwd, sde.as_deref())?;
    nothing_to_build(file.is_some(), &ov, &cwd)?;
    let spec = BuildSpec::resolve(spec_file, &ov, &cwd)?;
    let quiet = a.output.quiet;
    let mut log = |s: String| {
        if !quiet {
            eprintln!("{s}");
        }
    };
    let started = std::time::Instant::now();
    let mut opts = a.network.options(quiet)?;
    a.push.apply(&mut opts)?;
    a.ecr.apply(&mut opts);
    let cap = super::env::cache_max()?;
    let report = {
        // Pruning waits for the build (it must not remove a blob from under it).
        let _cache = lamina::gc::CacheLock::shared(&opts.cache_dir)?;
        lamina::build(&spec, &opts, &mut log).await?
    };
    super::cache::after(&opts.cache_dir, cap, quiet);
    if a.output.json {
        return print_json(&report);
    }
    log(format!(
        "wrote {} ({}, {} layers) in {:.2}s",
        shown(&spec.to, &cwd),
        report.platform,
        report.layers.len(),
        started.elapsed().as_secs_f64()
    ));
    print_line(&report.digest)
}
