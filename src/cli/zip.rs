//! `lamina zip`: a Lambda .zip deployment package (or Lambda layer zip) from lamina.toml,
//! flags or an image.

use std::path::{Path, PathBuf};

use clap::Args;

use lamina::zip::{self as package, Package};
use lamina::{BuildSpec, Overrides, flags};

use super::exit::LambdaErrors;
use super::flags::{NetworkFlags, OutputFlags};
use super::{cwd, parse_platform, parse_ref, print_json, print_line, print_lines};

#[derive(Args, Debug)]
pub struct ZipArgs {
    /// The build spec (default: ./lamina.toml if it exists): its layers under /var/task make the zip.
    #[arg(short = 'f', long = "file", value_name = "PATH")]
    file: Option<PathBuf>,
    /// Add SOURCE's files at DEST (after the spec's layers). Repeatable.
    #[arg(long = "layer", value_name = "SOURCE:DEST")]
    layers: Vec<String>,
    /// Take the files from an image's /var/task (/opt with --lambda-layer) instead.
    #[arg(long, value_name = "IMAGE", conflicts_with_all = ["file", "layers", "fix_permissions"])]
    from: Option<String>,
    /// Platform to pick from a multi-platform --from image.
    #[arg(long, requires = "from")]
    platform: Option<String>,
    /// The zip to write (default: function.zip, or layer.zip, beside the spec).
    #[arg(long, value_name = "FILE")]
    to: Option<PathBuf>,
    /// Write a Lambda layer zip from what goes under /opt (paths relative to /opt).
    #[arg(long)]
    lambda_layer: bool,
    /// A Lambda layer zip the function runs with, counted in the 250 MiB limit. Repeatable.
    #[arg(long = "with-layer", value_name = "ZIP")]
    with_layers: Vec<PathBuf>,
    /// Seconds since the epoch for every entry, or `now` (default: SOURCE_DATE_EPOCH, else 0;
    /// zips cannot go below 1980-01-01).
    #[arg(long, value_name = "SECONDS|now")]
    timestamp: Option<String>,
    /// deflate level, 0 (store) to 9.
    #[arg(long, value_name = "N")]
    compression_level: Option<u32>,
    /// Make files and directories readable (executables runnable) by others, as for builds.
    #[arg(long)]
    fix_permissions: bool,
    /// Write the zip even if the Lambda checks find errors (native code for another
    /// platform, a bootstrap that cannot start, a handler that does not resolve).
    #[arg(long)]
    no_lambda_check: bool,
    #[command(flatten)]
    output: OutputFlags,
    // Read only for a --from image in a registry.
    #[command(flatten)]
    network: NetworkFlags,
}

/// Write the zip, print warnings on stderr and the zip's digest (or the JSON report).
pub async fn run(a: ZipArgs) -> anyhow::Result<()> {
    let cwd = cwd()?;
    let started = std::time::Instant::now();
    let pkg = if a.lambda_layer {
        Package::Layer
    } else {
        Package::Function
    };
    let file = match (&a.file, &a.from) {
        (Some(f), _) => Some(f.clone()),
        (None, None) => Some(PathBuf::from("lamina.toml")).filter(|p| p.is_file()),
        (None, Some(_)) => None,
    };
    let spec_file = match &file {
        Some(f) => Some((f.as_path(), lamina::read_spec_file(f)?)),
        None => None,
    };
    let sde = std::env::var("SOURCE_DATE_EPOCH").ok();
    let ov = Overrides {
        layers: a
            .layers
            .iter()
            .map(|l| flags::layer(l, &cwd))
            .collect::<lamina::Result<_>>()?,
        timestamp: flags::timestamp_or_epoch(a.timestamp.as_deref(), sde.as_deref())?,
        compression_level: a.compression_level,
        fix_permissions: a.fix_permissions,
        ..Overrides::default()
    };
    let spec = BuildSpec::resolve(spec_file, &ov, &cwd)?;
    let name = match pkg {
        Package::Function => "function.zip",
        Package::Layer => "layer.zip",
    };
    let spec_dir = file
        .as_deref()
        .and_then(Path::parent)
        .unwrap_or(Path::new(""));
    let to = cwd.join(a.to.clone().unwrap_or_else(|| spec_dir.join(name)));
    let mut contents = contents(&a, &spec, pkg, &cwd, &to).await?;
    let opts = package::ZipOptions {
        mtime: spec.timestamp,
        compression_level: spec.compression_level,
        with_layers: a.with_layers.iter().map(|p| cwd.join(p)).collect(),
    };
    let findings = gate(&a, &spec, &mut contents, &opts, &to)?;
    let mut report = package::write(contents, &to, &opts)?;
    report.findings = findings;
    for f in &report.findings {
        eprintln!("{f}");
    }
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    if a.output.json {
        return print_json(&report);
    }
    if !a.output.quiet {
        let shown = to.strip_prefix(&cwd).unwrap_or(&to);
        eprintln!(
            "wrote {} ({} entries, {} bytes, {} bytes unzipped) in {:.2}s",
            shown.display(),
            report.entries,
            report.size,
            report.unzipped,
            started.elapsed().as_secs_f64()
        );
    }
    print_line(&report.digest)
}

/// The Lambda gate on the package before it is written: its findings when it passes; when it
/// finds errors, they are printed (as `lamina check` prints them, or its JSON) and the run
/// ends with exit status 3, nothing written. A `--from` image without `--platform` is not
/// judged for a platform it may not have.
fn gate(
    a: &ZipArgs,
    spec: &BuildSpec,
    contents: &mut package::Contents,
    opts: &package::ZipOptions,
    to: &Path,
) -> anyhow::Result<Vec<lamina::Finding>> {
    if a.no_lambda_check {
        return Ok(Vec::new());
    }
    let platform = match (&a.from, parse_platform(a.platform.as_deref())?) {
        (_, Some(p)) => p,
        (None, None) => spec.platform,
        (Some(_), None) => return Ok(Vec::new()),
    };
    let handler = match (&spec.config.entrypoint, &spec.config.cmd) {
        (None, Some(cmd)) => cmd.first().cloned(),
        _ => None,
    };
    let g = package::GateOptions {
        platform,
        runtime: Some(spec.base.to_string()),
        handler,
        layer: a.lambda_layer,
    };
    let with_layers = match a.lambda_layer {
        true => Vec::new(),
        false => opts.with_layers.clone(),
    };
    let report = package::check(contents, &with_layers, &g, to)?;
    if report.ok {
        return Ok(report.findings);
    }
    if a.output.json {
        print_json(&report)?;
    } else {
        print_lines(report.findings.iter().map(ToString::to_string))?;
    }
    let errors = report
        .findings
        .iter()
        .filter(|f| f.severity == lamina::Severity::Error)
        .count();
    Err(LambdaErrors(format!(
        "{} fails the Lambda checks ({errors} error{}, for {}): nothing was written (--no-lambda-check writes it anyway)",
        to.display(),
        if errors == 1 { "" } else { "s" },
        report.platform
    ))
    .into())
}

/// What goes into the zip: an image's files with `--from`, else the spec's layers, never the
/// zip being written (`to`), wherever it sits.
async fn contents(
    a: &ZipArgs,
    spec: &BuildSpec,
    pkg: Package,
    cwd: &Path,
    to: &Path,
) -> anyhow::Result<package::Contents> {
    Ok(match &a.from {
        Some(image) => {
            let r = parse_ref(image, cwd)?;
            let platform = parse_platform(a.platform.as_deref())?;
            package::from_image(&r, platform, pkg, &a.network.options(a.output.quiet)?).await?
        }
        None => {
            let layers = match pkg {
                Package::Function => &spec.zip_layers,
                Package::Layer => &spec.layers,
            };
            package::from_layers_excluding(layers, pkg, spec.fix_permissions, &[to])?
        }
    })
}
