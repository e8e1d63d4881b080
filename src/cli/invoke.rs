//! `lamina invoke`: run a function image for one invocation and print its response.

use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use super::flags::RegistryFlags;
use super::function::FunctionArgs;

#[derive(Args, Debug)]
pub struct InvokeArgs {
    #[command(flatten)]
    function: FunctionArgs,
    /// The event: a JSON file, or - for standard input (default: {}).
    #[arg(long, value_name = "FILE")]
    event: Option<PathBuf>,
    // Last, so that the group's help heading does not take in the command's own flags.
    #[command(flatten)]
    network: RegistryFlags,
}

/// Invoke once and print the response body on stdout; a function error fails the run after
/// the body is printed.
pub async fn run(a: InvokeArgs) -> anyhow::Result<()> {
    let (prepared, opts) = a.function.prepare(&a.network).await?;
    let (raw, what) = event(&a)?;
    // An event that is not JSON is the caller's input to fix: a usage error.
    let payload = lamina::run::event_payload(&raw)
        .map_err(|m| lamina::Error::usage(format!("{what}: {m}")))?;
    let outcome = lamina::run::invoke_once(
        &prepared,
        &opts,
        lamina::run::Invoke {
            payload,
            ..Default::default()
        },
    )
    .await?;
    let mut out = std::io::stdout().lock();
    out.write_all(&outcome.body)?;
    out.write_all(b"\n")?;
    out.flush()?;
    if let Some(t) = outcome.error_type {
        anyhow::bail!("the invocation failed: {t} (X-Amz-Function-Error: Unhandled)");
    }
    Ok(())
}

/// The event's bytes, and how to name it in an error.
fn event(a: &InvokeArgs) -> anyhow::Result<(Vec<u8>, String)> {
    Ok(match &a.event {
        None => (b"{}".to_vec(), "the event".to_owned()),
        Some(p) if p.as_os_str() == "-" => {
            let mut b = Vec::new();
            std::io::stdin()
                .read_to_end(&mut b)
                .context("reading the event from standard input")?;
            (b, "the event on standard input".to_owned())
        }
        Some(p) => (
            std::fs::read(p).with_context(|| format!("reading the event {}", p.display()))?,
            p.display().to_string(),
        ),
    })
}
