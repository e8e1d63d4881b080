//! `lamina run`: serve a function image locally as Lambda does.

use clap::Args;

use super::flags::RegistryFlags;
use super::function::FunctionArgs;

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    function: FunctionArgs,
    /// Port of the invoke API on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 9000)]
    port: u16,
    /// Build SPEC (a lamina.toml) to the image first, then rebuild and swap in the new code
    /// whenever one of its inputs changes; invocations wait for the new code.
    #[arg(long, value_name = "SPEC")]
    watch: Option<std::path::PathBuf>,
    // Last, so that the group's help heading does not take in the command's own flags.
    #[command(flatten)]
    network: RegistryFlags,
}

/// Serve the invoke API until interrupted.
pub async fn run(a: RunArgs) -> anyhow::Result<()> {
    let listen = std::net::SocketAddr::from(([127, 0, 0, 1], a.port));
    let mut on_listen = |addr| {
        eprintln!(
            "lamina: invoke with: curl -d '{{}}' http://{addr}/2015-03-31/functions/function/invocations"
        )
    };
    if let Some(spec) = &a.watch {
        let cwd = super::cwd()?;
        let watch = lamina::run::Watch {
            spec_file: cwd.join(spec),
            overrides: lamina::Overrides {
                to: Some(super::parse_ref(a.function.image(), &cwd)?),
                ..Default::default()
            },
            cwd,
        };
        let opts = a.function.options().await?;
        let network = a.network.options(false)?;
        lamina::run::serve_watching(&watch, &network, &opts, listen, &mut on_listen).await?;
        return Ok(());
    }
    let (prepared, opts) = a.function.prepare(&a.network).await?;
    lamina::run::serve(&prepared, &opts, listen, &mut on_listen).await?;
    Ok(())
}
