//! The `lamina` command line: parsing and printing over the library. Each command lives in
//! its own module under `cli/`; this file only declares them and turns the outcome into an
//! exit status.

mod cli;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use cli::{
    build, check, copy, deploy, exit, init, inspect, invoke, login, run, toolbox, update, zip,
};

#[derive(Parser)]
#[command(
    name = "lamina",
    // The version and the commit it was built from (build.rs).
    version = env!("LAMINA_VERSION"),
    about = "Daemonless, reproducible OCI images for AWS Lambda",
    after_help = exit::TABLE
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build an image from lamina.toml and flags, and write it to the destination.
    Build(Box<build::BuildArgs>),
    /// Show an image's manifest, config, layers, platform and sizes.
    Inspect(inspect::InspectArgs),
    /// Copy an image (same digest) to a registry: lamina push oci:out/fn:latest docker://REF
    Push(Box<copy::PushArgs>),
    /// Copy one platform of an image from a registry: lamina pull docker://REF oci:DIR
    Pull(copy::PullArgs),
    /// Check credentials against a registry and store them in the docker config.
    Login(login::LoginArgs),
    /// Write a commented starter lamina.toml for the function in a directory.
    Init(init::InitArgs),
    /// Resolve the base lamina.toml names again and move lamina.lock to it (fetching what the
    /// cache lacks, for later --offline builds).
    Update(Box<update::UpdateArgs>),
    /// Check an image against what Lambda accepts (rules L001-L021); exit status 3 on errors.
    Check(check::CheckArgs),
    /// Write a Lambda .zip deployment package (or Lambda layer zip) from lamina.toml, flags or
    /// an image.
    Zip(Box<zip::ZipArgs>),
    /// Run a function image locally as Lambda does (Runtime API inside, invoke API on
    /// 127.0.0.1:PORT), isolated with namespaces, no Docker.
    Run(Box<run::RunArgs>),
    /// Run a function image for one invocation and print its response; non-zero exit when
    /// the invocation fails.
    Invoke(Box<invoke::InvokeArgs>),
    /// Show the disk lamina's cache uses (`lamina cache`, `lamina cache du`), or prune it to its
    /// cap (`lamina cache prune [--max SIZE] [--all]`).
    Cache(cli::cache::CacheArgs),
    /// Print the shell completion script for bash, zsh, fish, powershell or elvish.
    Completions(toolbox::CompletionsArgs),
    /// Print the manual page lamina(1), or write one page per command with --dir.
    Man(toolbox::ManArgs),
    /// Print the JSON Schema of lamina.toml (for editors: see `#:schema` in lamina init's file).
    Schema(toolbox::SchemaArgs),
    /// Build (or take) the code and create or update Lambda functions with it, by digest,
    /// idempotently, waiting until Lambda has settled.
    Deploy(Box<deploy::DeployArgs>),
}

/// Run one command, on `main`'s runtime.
async fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Build(a) => build::run(*a).await,
        Command::Inspect(a) => inspect::run(a).await,
        Command::Push(a) => copy::push(*a).await,
        Command::Pull(a) => copy::pull(a).await,
        Command::Login(a) => login::run(a).await,
        Command::Init(a) => init::run(a),
        Command::Update(a) => update::run(*a).await,
        Command::Check(a) => check::run(a).await,
        Command::Zip(a) => zip::run(*a).await,
        Command::Run(a) => run::run(*a).await,
        Command::Invoke(a) => invoke::run(*a).await,
        Command::Cache(a) => cli::cache::run(a).await,
        Command::Completions(a) => toolbox::completions(a, Cli::command()),
        Command::Man(a) => toolbox::man(a, Cli::command()),
        Command::Schema(a) => toolbox::schema(a),
        Command::Deploy(a) => deploy::run(*a).await,
    }
}

fn main() -> ExitCode {
    cli::mark_start();
    // Usage errors from clap exit with status 2 (exit::USAGE) here, before any work.
    let cli = Cli::parse();
    // The one tokio runtime of the process: the library's async entry points run on it, its
    // blocking pool takes their CPU- and disk-bound work, and `lamina run`'s servers and
    // supervisor are tasks on its workers.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::Error::new(e).context("starting the async runtime"));
    exit::finish(runtime.and_then(|rt| {
        let result = rt.block_on(cli::within_deadline(until_signal(cli.command)));
        // A command ended by its deadline may leave blocking work running: do not wait for
        // it, and remove what it was staging.
        if let Err(e) = &result
            && e.is::<cli::DeadlinePassed>()
        {
            lamina::remove_staging();
            rt.shutdown_timeout(std::time::Duration::from_secs(1));
        }
        result
    }))
}

/// Run `command` unless SIGINT or SIGTERM comes first: then remove what this process is
/// staging (half-written layouts, archives, unpacked root file systems, temporary files) and
/// exit with 128 + the signal's number, as a shell reports a process killed by it.
/// `lamina run` stops its function itself on those signals, and is left to do so.
async fn until_signal(command: Command) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    if matches!(command, Command::Run(_)) {
        return dispatch(command).await;
    }
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return dispatch(command).await;
    };
    let (number, name) = tokio::select! {
        r = dispatch(command) => return r,
        _ = int.recv() => (libc::SIGINT, "SIGINT"),
        _ = term.recv() => (libc::SIGTERM, "SIGTERM"),
    };
    lamina::remove_staging();
    eprintln!("lamina: stopped by {name}; its staging files were removed");
    std::process::exit(128 + number)
}
