//! `lamina check`: an image against what Lambda accepts or can start (rules L001-L021).

use clap::Args;

use super::exit::LambdaErrors;
use super::flags::NetworkFlags;
use super::{cwd, parse_platform, parse_ref, print_json, print_lines, shown};

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// The image: oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE, docker://REF.
    image: String,
    /// Platform to pick from a multi-platform image (without it, an index is an L001 error).
    #[arg(long)]
    platform: Option<String>,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    network: NetworkFlags,
}

/// Print the findings (or the JSON report) on stdout and the verdict on stderr; error
/// findings end the run with [`LambdaErrors`] (exit status 3).
pub async fn run(a: CheckArgs) -> anyhow::Result<()> {
    let cwd = cwd()?;
    let r = parse_ref(&a.image, &cwd)?;
    let platform = parse_platform(a.platform.as_deref())?;
    let report = lamina::check(&r, platform, &a.network.options(true)?).await?;
    if a.json {
        print_json(&report)?;
    } else {
        print_lines(report.findings.iter().map(ToString::to_string))?;
    }
    let count = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
    let errors = report.errors().count();
    let warnings = count(report.warnings().count(), "warning");
    let what = format!(
        "{} ({}{})",
        shown(&r, &cwd),
        report.digest.as_deref().unwrap_or("index"),
        report
            .platform
            .as_deref()
            .map(|p| format!(", {p}"))
            .unwrap_or_default()
    );
    if errors > 0 {
        let errors = count(errors, "error");
        return Err(LambdaErrors(format!(
            "{what} fails the Lambda checks: {errors}, {warnings}"
        ))
        .into());
    }
    eprintln!("{what} passes the Lambda checks ({warnings})");
    Ok(())
}
