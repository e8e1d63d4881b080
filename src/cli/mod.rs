//! The commands of the `lamina` binary, one module each, over the library. Flag groups live
//! in [`flags`] and are flattened only into the commands that read them; exit statuses are
//! decided in [`exit`].

pub mod build;
pub mod check;
pub mod copy;
mod env;
pub mod exit;
pub mod flags;
mod function;
pub mod init;
pub mod inspect;
pub mod invoke;
pub mod login;
pub mod run;
pub mod zip;

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;

use lamina::ImageRef;
use lamina::Platform;

/// The directory relative references and paths are resolved against.
fn cwd() -> anyhow::Result<PathBuf> {
    std::env::current_dir().context("reading the current directory")
}

/// A reference as the user wrote it, resolved against `cwd`; bad syntax is a usage error.
fn parse_ref(s: &str, cwd: &Path) -> anyhow::Result<ImageRef> {
    let r = s
        .parse::<ImageRef>()
        .map_err(|e| lamina::Error::usage(e.to_string()))?;
    Ok(r.relative_to(cwd))
}

/// `--platform`, when given; bad syntax is a usage error.
fn parse_platform(p: Option<&str>) -> anyhow::Result<Option<Platform>> {
    Ok(p.map(|p| lamina::flags::platform(p, "--platform"))
        .transpose()?)
}

/// A reference with its path shown relative to the current directory when it is below it.
fn shown(r: &ImageRef, cwd: &Path) -> String {
    let s = r.to_string();
    let prefix = format!("{}/", cwd.display());
    s.replacen(&prefix, "", 1)
}

/// Print `lines` on stdout. A write error (a closed pipe included) is returned, never a
/// panic, so the caller can end quietly ([`exit::is_broken_pipe`]).
fn print_lines<I: IntoIterator<Item = String>>(lines: I) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    for l in lines {
        writeln!(out, "{l}")?;
    }
    out.flush()?;
    Ok(())
}

/// Print one line on stdout (see [`print_lines`]).
fn print_line(line: impl std::fmt::Display) -> anyhow::Result<()> {
    print_lines([line.to_string()])
}

/// Print `value` as pretty JSON on stdout (see [`print_lines`]).
fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    print_line(serde_json::to_string_pretty(value)?)
}
