//! `lamina inspect`: an image's manifest, config, layers, platform and sizes.

use std::io::Write;

use clap::Args;

use super::flags::NetworkFlags;
use super::{cwd, parse_platform, parse_ref, print_json, print_lines, shown};

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// The image: oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE[:NAME:TAG].
    image: String,
    /// Platform to pick from a multi-platform image.
    #[arg(long)]
    platform: Option<String>,
    /// Print JSON (report, manifest and config documents).
    #[arg(long)]
    json: bool,
    /// Print only the manifest bytes, exactly as stored.
    #[arg(long, conflicts_with = "json")]
    raw: bool,
    #[command(flatten)]
    network: NetworkFlags,
}

/// Read the image and print it: raw manifest bytes, JSON, or a human summary.
pub async fn run(a: InspectArgs) -> anyhow::Result<()> {
    let cwd = cwd()?;
    let r = parse_ref(&a.image, &cwd)?;
    let platform = parse_platform(a.platform.as_deref())?;
    let i = lamina::inspect(&r, platform, &a.network.options(true)?).await?;
    if a.raw {
        let mut out = std::io::stdout().lock();
        out.write_all(&i.manifest_bytes())?;
        out.flush()?;
        return Ok(());
    }
    if a.json {
        return print_json(&i);
    }
    print_lines(summary(&i, &shown(&r, &cwd)))
}

/// The human form of `inspect`, one line per item.
fn summary(i: &lamina::Inspection, shown: &str) -> Vec<String> {
    let rep = &i.report;
    let mut lines = vec![
        format!("image     {shown}"),
        format!("digest    {}", rep.digest),
        format!("type      {}", rep.media_type),
        format!("platform  {}", rep.platform),
        format!(
            "config    {} ({} bytes)",
            rep.config.digest, rep.config.size
        ),
    ];
    let c = i.image_config.get("config");
    for (label, key) in [
        ("entrypoint", "Entrypoint"),
        ("cmd", "Cmd"),
        ("workdir", "WorkingDir"),
        ("user", "User"),
    ] {
        if let Some(v) = c.and_then(|c| c.get(key)) {
            lines.push(format!("{label:<9} {v}"));
        }
    }
    if let Some(env) = c.and_then(|c| c.get("Env")).and_then(|e| e.as_array()) {
        for e in env {
            lines.push(format!("env       {}", e.as_str().unwrap_or_default()));
        }
    }
    let total: u64 = rep.layers.iter().map(|l| l.size).sum();
    lines.push(format!(
        "layers    {} ({total} bytes compressed)",
        rep.layers.len()
    ));
    for l in &rep.layers {
        lines.push(format!("  {} {:>12}  {}", l.digest, l.size, l.media_type));
    }
    lines
}
