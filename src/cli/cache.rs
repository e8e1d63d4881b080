//! `lamina cache`: what the cache holds, by kind, and pruning it to its cap.

use clap::{Args, Subcommand};

use super::{print_json, print_lines};
use lamina::gc::{self, human};

#[derive(Args, Debug)]
pub struct CacheArgs {
    #[command(subcommand)]
    action: Option<Action>,
    /// Print the usage as JSON on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum Action {
    /// Show the disk the cache uses, per kind (blobs, rootfs, index, records): the default.
    Du {
        /// Print the usage as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Remove the least recently used entries until the cache is under its cap (entries a
    /// running lamina uses stay).
    Prune {
        /// The cap to prune to, e.g. 2G (default: LAMINA_CACHE_MAX, else 10G).
        #[arg(long, value_name = "SIZE")]
        max: Option<String>,
        /// Remove everything not in use.
        #[arg(long, conflicts_with = "max")]
        all: bool,
        /// Print what was removed as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
}

/// Show usage, or prune.
pub async fn run(a: CacheArgs) -> anyhow::Result<()> {
    let dir = super::env::cache_dir();
    let cap = super::env::cache_max()?;
    match a.action {
        None => du(&dir, cap, a.json).await,
        Some(Action::Du { json }) => du(&dir, cap, json || a.json).await,
        Some(Action::Prune { max, all, json }) => {
            let max = match (all, max) {
                (true, _) => 0,
                (false, Some(m)) => gc::parse_size(&m)?,
                (false, None) => cap,
            };
            let d = dir.clone();
            let pruned = tokio::task::spawn_blocking(move || gc::prune(&d, max, true)).await??;
            let Some(p) = pruned else {
                return Err(lamina::Error::Usage(format!(
                    "the cache {} stayed busy for a minute (other lamina commands are using it): try again",
                    dir.display()
                ))
                .into());
            };
            if json || a.json {
                return print_json(&p);
            }
            let mut lines: Vec<String> = p
                .removed
                .iter()
                .map(|r| {
                    format!(
                        "removed {} {} ({})",
                        r.kind,
                        r.path.display(),
                        human(r.bytes)
                    )
                })
                .collect();
            let in_use = match p.in_use {
                0 => String::new(),
                n => format!("; {n} entries in use by a running lamina were kept"),
            };
            lines.push(format!(
                "removed {} entries, {} freed: the cache holds {} (cap {}){in_use}",
                p.removed.len(),
                human(p.before.saturating_sub(p.after)),
                human(p.after),
                human(p.max)
            ));
            print_lines(lines)
        }
    }
}

async fn du(dir: &std::path::Path, cap: u64, json: bool) -> anyhow::Result<()> {
    let d = dir.to_owned();
    let u = tokio::task::spawn_blocking(move || gc::usage(&d)).await??;
    if json {
        let mut v = serde_json::to_value(&u)?;
        v["max"] = cap.into();
        return print_json(&v);
    }
    let mut lines: Vec<String> = u
        .kinds
        .iter()
        .map(|k| {
            format!(
                "{:<8} {:>7} entries {:>12}",
                k.kind,
                k.entries,
                human(k.bytes)
            )
        })
        .collect();
    lines.push(format!(
        "total {} of a {} cap, in {}",
        human(u.total),
        human(cap),
        u.dir.display()
    ));
    print_lines(lines)
}

/// After a command that added to the cache: prune it to its cap when over (quietly giving up
/// when another lamina is using it). Says what it removed on stderr unless `quiet`.
pub fn after(dir: &std::path::Path, cap: u64, quiet: bool) {
    if let Some(msg) = gc::evict_over(dir, cap)
        && !quiet
    {
        eprintln!("lamina: {msg}");
    }
}
