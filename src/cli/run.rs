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
    // Last, so that the group's help heading does not take in the command's own flags.
    #[command(flatten)]
    network: RegistryFlags,
}

/// Serve the invoke API until interrupted.
pub async fn run(a: RunArgs) -> anyhow::Result<()> {
    let (prepared, opts) = a.function.prepare(&a.network).await?;
    let listen = std::net::SocketAddr::from(([127, 0, 0, 1], a.port));
    lamina::run::serve(&prepared, &opts, listen, &mut |addr| {
        eprintln!(
            "lamina: invoke with: curl -d '{{}}' http://{addr}/2015-03-31/functions/function/invocations"
        )
    })
    .await?;
    Ok(())
}
