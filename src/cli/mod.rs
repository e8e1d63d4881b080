//! The commands of the `lamina` binary, one module each, over the library. Flag groups live
//! in [`flags`] and are flattened only into the commands that read them; exit statuses are
//! decided in [`exit`].

pub mod build;
pub mod cache;
pub mod check;
pub mod copy;
pub mod deploy;
mod env;
pub mod exit;
pub mod flags;
mod function;
pub mod init;
pub mod inspect;
pub mod invoke;
pub mod login;
pub mod run;
pub mod toolbox;
pub mod update;
pub mod zip;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use lamina::ImageRef;
use lamina::Platform;

/// When the process started: `--timeout` counts from here.
static STARTED: OnceLock<Instant> = OnceLock::new();
/// The command's `--timeout`, once its flags are read.
static DEADLINE: OnceLock<lamina::Deadline> = OnceLock::new();

/// Note the start of the process (call first thing in `main`).
pub fn mark_start() {
    STARTED.get_or_init(Instant::now);
}

/// Wakes [`within_deadline`] when a deadline is set (a permit is kept if it is not waiting).
static DEADLINE_SET: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// The deadline `limit` after the start of the process, remembered for [`within_deadline`].
fn set_deadline(limit: Duration) -> lamina::Deadline {
    let start = *STARTED.get_or_init(Instant::now);
    let d = *DEADLINE.get_or_init(|| lamina::Deadline::after(start, limit));
    DEADLINE_SET.notify_one();
    d
}

/// Run `command`, ending it at its `--timeout` if it set one. The library fails its own
/// registry waits at the deadline with a message naming the registry; this is the backstop
/// for the rest (ECR's API, local work), a moment later so the library's error comes first.
pub async fn within_deadline(
    command: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let backstop = async {
        let d = loop {
            match DEADLINE.get() {
                Some(d) => break *d,
                None => DEADLINE_SET.notified().await,
            }
        };
        tokio::time::sleep_until((d.at + Duration::from_millis(500)).into()).await;
        d
    };
    tokio::select! {
        biased;
        r = command => r,
        d = backstop => Err(DeadlinePassed(d.limit).into()),
    }
}

/// The command was ended by its `--timeout` (a failure, exit status 1).
#[derive(Debug, thiserror::Error)]
#[error("gave up: the command's time limit of {} s (--timeout) ran out", .0.as_secs_f64())]
pub struct DeadlinePassed(pub Duration);

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
