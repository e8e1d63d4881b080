//! What fits lamina into the user's toolbox: shell completion scripts (`lamina completions`),
//! manual pages (`lamina man`) and the JSON Schema of lamina.toml (`lamina schema`). All three
//! are generated from what the binary already knows (its clap definition, the spec's types), so
//! they cannot drift from it.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use clap_complete::Shell;

/// `lamina completions SHELL`.
#[derive(Args, Debug)]
#[command(after_help = "Load it for this shell with, e.g.:\n  \
    bash: source <(lamina completions bash)   (or save it as \
    ~/.local/share/bash-completion/completions/lamina)\n  \
    zsh:  lamina completions zsh > \"${fpath[1]}/_lamina\"\n  \
    fish: lamina completions fish > ~/.config/fish/completions/lamina.fish\n  \
    PowerShell: lamina completions powershell | Out-String | Invoke-Expression")]
pub struct CompletionsArgs {
    /// The shell to write the completion script for.
    #[arg(value_enum)]
    shell: Shell,
}

/// `lamina man [--dir DIR]`.
#[derive(Args, Debug)]
pub struct ManArgs {
    /// Write one page per command into DIR (lamina.1, lamina-build.1, ...) instead of printing
    /// lamina(1) on stdout. DIR is created when missing.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// `lamina schema`.
#[derive(Args, Debug)]
pub struct SchemaArgs {}

/// Print the completion script for `a.shell`, for the command line `cmd` describes.
pub fn completions(a: CompletionsArgs, mut cmd: clap::Command) -> anyhow::Result<()> {
    let mut script = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, "lamina", &mut script);
    write_stdout(&script)
}

/// Print lamina(1), or write a page per command (hidden ones left out) into `--dir`.
pub fn man(a: ManArgs, cmd: clap::Command) -> anyhow::Result<()> {
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let Some(dir) = a.dir else {
        return write_stdout(&render(cmd)?);
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut pages = vec![cmd.clone()];
    pages.extend(cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
    for page in pages {
        let name = clap_mangen::Man::new(page.clone()).get_filename();
        write_atomically(&dir.join(&name), &render(page)?)?;
        eprintln!("wrote {}", dir.join(name).display());
    }
    Ok(())
}

/// Print the JSON Schema of lamina.toml (the one shipped as schema/lamina.schema.json).
pub fn schema(_: SchemaArgs) -> anyhow::Result<()> {
    write_stdout(lamina::spec_schema().as_bytes())
}

/// One manual page, as roff.
fn render(cmd: clap::Command) -> anyhow::Result<Vec<u8>> {
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd)
        .render(&mut page)
        .context("rendering a manual page")?;
    Ok(page)
}

/// Write `bytes` on stdout; a closed pipe is returned as an error (see `exit::is_broken_pipe`).
fn write_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)?;
    out.flush()?;
    Ok(())
}

/// Write `path` through a temporary file beside it, renamed into place: never half a page.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a file in {}", dir.display()))?;
    tmp.write_all(bytes)
        .with_context(|| format!("writing {}", tmp.path().display()))?;
    tmp.as_file()
        .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .with_context(|| format!("setting the mode of {}", tmp.path().display()))?;
    tmp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
