//! `lamina init`: a commented starter lamina.toml for the function in a directory.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;

#[derive(Args, Debug)]
pub struct InitArgs {
    /// Lambda runtime (python3.13, nodejs22.x, provided.al2023, ...); guessed from the files if unset.
    #[arg(long)]
    runtime: Option<String>,
    /// The function's directory.
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// Replace an existing lamina.toml.
    #[arg(long)]
    force: bool,
    /// Build on this image, not an AWS Lambda base: the spec adds AWS's runtime interface
    /// client (`runtime_client`) for the function's language.
    #[arg(long, value_name = "REF")]
    base: Option<String>,
}

/// Write the starter spec atomically (a temporary file renamed into place), mode 0644.
pub fn run(a: InitArgs) -> anyhow::Result<()> {
    let path = a.dir.join("lamina.toml");
    if path.exists() && !a.force {
        return Err(lamina::Error::usage(format!(
            "{} already exists (use --force to replace it)",
            path.display()
        ))
        .into());
    }
    let mut found = lamina::detect_project(a.runtime.as_deref(), &a.dir)?;
    if let Some(base) = &a.base {
        base.parse::<lamina::ImageRef>()
            .map_err(|e| lamina::Error::usage(format!("--base {base}: {e}")))?;
        lamina::starter_on_base(&mut found, base, &a.dir);
    }
    let text = lamina::render_starter(&found)?;
    let dir = if a.dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        a.dir.as_path()
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a file in {}", dir.display()))?;
    std::io::Write::write_all(&mut tmp, text.as_bytes())
        .with_context(|| format!("writing {}", tmp.path().display()))?;
    // A temporary file is created 0600; lamina.toml is a source file like any other: 0644.
    tmp.as_file()
        .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .with_context(|| format!("setting the mode of {}", tmp.path().display()))?;
    tmp.persist(&path)
        .map_err(|e| e.error)
        .with_context(|| format!("writing {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    // The schema its `#:schema` comment names, for TOML-aware editors (taplo, Even Better TOML).
    let schema = a.dir.join(lamina::SCHEMA_FILE);
    super::toolbox::write_atomically(&schema, lamina::spec_schema().as_bytes())?;
    eprintln!("wrote {}", schema.display());
    for r in &found.reasons {
        eprintln!("  {r}");
    }
    let mut next: Vec<String> = found.todo.clone();
    next.push("lamina build   (an image in oci:out; `lamina zip` for a .zip package)".into());
    eprintln!("next:");
    for (i, n) in next.iter().enumerate() {
        eprintln!("  {}. {n}", i + 1);
    }
    Ok(())
}
