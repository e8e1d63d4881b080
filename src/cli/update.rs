//! `lamina update`: resolve the base lamina.toml names again and move lamina.lock to it.

use std::path::PathBuf;

use clap::Args;

use lamina::{BaseLock, BuildSpec, Overrides, flags};

use super::cwd;
use super::flags::{NetworkFlags, OutputFlags};

#[derive(Args, Debug)]
pub struct UpdateArgs {
    /// The build spec (default: ./lamina.toml).
    #[arg(
        short = 'f',
        long = "file",
        value_name = "PATH",
        default_value = "lamina.toml"
    )]
    file: PathBuf,
    /// The platform whose entry to move (default: the spec's).
    #[arg(long, value_name = "PLATFORM")]
    platform: Option<String>,
    #[command(flatten)]
    output: OutputFlags,
    #[command(flatten)]
    network: NetworkFlags,
}

/// Move the lock; print the entry's digest (and, unless quiet, what changed).
pub async fn run(a: UpdateArgs) -> anyhow::Result<()> {
    let cwd = cwd()?;
    let sf = lamina::read_spec_file(&a.file)?;
    let ov = Overrides {
        platform: a
            .platform
            .as_deref()
            .map(|p| flags::platform(p, "--platform"))
            .transpose()?,
        base_lock: BaseLock {
            update: true,
            ..Default::default()
        },
        ..Default::default()
    };
    let spec = BuildSpec::resolve(Some((&a.file, sf)), &ov, &cwd)?;
    let opts = a.network.options(a.output.quiet)?;
    let u = lamina::update_base(&spec, &opts).await?;
    if !a.output.quiet {
        let change = match &u.before {
            Some(b) if *b == u.after => "unchanged".to_owned(),
            Some(b) => format!("{b} -> {}", u.after),
            None => format!("added at {}", u.after),
        };
        eprintln!(
            "{}: {} ({}) {change}",
            u.lock_file.display(),
            u.name,
            u.platform
        );
    }
    println!("{}", u.after);
    Ok(())
}
