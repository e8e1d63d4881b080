//! `lamina push` and `lamina pull`: copy an image as it is (same digest) to or from a
//! registry.

use clap::Args;

use lamina::ImageRef;

use super::flags::{EcrFlags, NetworkFlags, OutputFlags, PushFlags};
use super::{cwd, parse_platform, parse_ref, print_json, print_line, shown};

#[derive(Args, Debug)]
pub struct PushArgs {
    /// Source image.
    source: String,
    /// Destination image.
    destination: String,
    /// Platform to pick from a multi-platform source.
    #[arg(long)]
    platform: Option<String>,
    /// Push even when the Lambda checks find errors.
    #[arg(long)]
    no_lambda_check: bool,
    #[command(flatten)]
    output: OutputFlags,
    #[command(flatten)]
    network: NetworkFlags,
    #[command(flatten)]
    push: PushFlags,
    #[command(flatten)]
    ecr: EcrFlags,
}

#[derive(Args, Debug)]
pub struct PullArgs {
    /// Source image.
    source: String,
    /// Destination image.
    destination: String,
    /// Platform to pick from a multi-platform source.
    #[arg(long)]
    platform: Option<String>,
    #[command(flatten)]
    output: OutputFlags,
    #[command(flatten)]
    network: NetworkFlags,
}

/// Check the image against what Lambda accepts (unless told not to), then copy it to the
/// registry.
pub async fn push(a: PushArgs) -> anyhow::Result<()> {
    let cwd = cwd()?;
    let src = parse_ref(&a.source, &cwd)?;
    let dest = parse_ref(&a.destination, &cwd)?;
    if !matches!(dest, ImageRef::Docker(_)) {
        return Err(lamina::Error::usage(
            "push writes to a registry: the destination must be docker://REF",
        )
        .into());
    }
    let platform = parse_platform(a.platform.as_deref())?;
    let mut opts = a.network.options(a.output.quiet)?;
    a.push.apply(&mut opts)?;
    a.ecr.apply(&mut opts);
    let report = lamina::copy(&src, &dest, platform, &opts, !a.no_lambda_check).await?;
    print_report(&report, &dest, &cwd, &a.output)
}

/// Copy one platform of an image from a registry.
pub async fn pull(a: PullArgs) -> anyhow::Result<()> {
    let cwd = cwd()?;
    let src = parse_ref(&a.source, &cwd)?;
    let dest = parse_ref(&a.destination, &cwd)?;
    if !matches!(src, ImageRef::Docker(_)) {
        return Err(lamina::Error::usage(
            "pull reads from a registry: the source must be docker://REF (use push to send a local image)",
        )
        .into());
    }
    let platform = parse_platform(a.platform.as_deref())?;
    let opts = a.network.options(a.output.quiet)?;
    // The Lambda gate applies only when the destination is a registry, which is `push`'s
    // job; a pull to one keeps the gate on, as it always has.
    let report = lamina::copy(&src, &dest, platform, &opts, true).await?;
    print_report(&report, &dest, &cwd, &a.output)
}

fn print_report(
    report: &lamina::Report,
    dest: &ImageRef,
    cwd: &std::path::Path,
    output: &OutputFlags,
) -> anyhow::Result<()> {
    if output.json {
        return print_json(report);
    }
    if !output.quiet {
        eprintln!("wrote {} ({})", shown(dest, cwd), report.platform);
    }
    print_line(&report.digest)
}
