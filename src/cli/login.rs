//! `lamina login`: check credentials against a registry and store them in the docker config.

use std::io::Read;

use anyhow::Context;
use clap::Args;

use super::flags::NetworkFlags;

#[derive(Args, Debug)]
pub struct LoginArgs {
    /// The registry: HOST[:PORT].
    registry: String,
    #[arg(short, long)]
    username: String,
    /// Read the password from standard input (the only way: never on the command line).
    #[arg(long, required = true)]
    password_stdin: bool,
    #[command(flatten)]
    network: NetworkFlags,
}

/// Log in with the password read from standard input, and say where it was saved.
pub async fn run(a: LoginArgs) -> anyhow::Result<()> {
    let registry = a
        .registry
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let mut password = String::new();
    std::io::stdin()
        .read_to_string(&mut password)
        .context("reading the password from standard input")?;
    let password = password.trim_end_matches(['\n', '\r']).to_owned();
    if password.is_empty() {
        return Err(lamina::Error::usage("no password on standard input").into());
    }
    let mut opts = a.network.options(true)?;
    opts.credentials = Some(lamina::Credentials {
        username: a.username.clone(),
        password,
    });
    let path = lamina::login(&registry, &opts).await?;
    eprintln!(
        "login to {registry} as {} succeeded; saved in {}",
        a.username,
        path.display()
    );
    Ok(())
}
