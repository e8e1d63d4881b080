//! Progress for blob transfers: bars on a terminal, plain lines otherwise, nothing when quiet.

use std::io::IsTerminal;
use std::sync::Arc;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

/// How transfers are shown.
#[derive(Clone)]
pub enum Progress {
    /// Nothing.
    Quiet,
    /// One plain line per event (for logs and pipes).
    Lines,
    /// Progress bars on a terminal.
    Bars(Arc<MultiProgress>),
}

impl Progress {
    /// Bars when stderr is a terminal, else plain lines; nothing at all when `quiet`.
    pub fn for_stderr(quiet: bool) -> Progress {
        if quiet {
            Progress::Quiet
        } else if std::io::stderr().is_terminal() {
            Progress::Bars(Arc::new(MultiProgress::new()))
        } else {
            Progress::Lines
        }
    }

    /// A line of text (kept above the bars).
    pub fn line(&self, s: &str) {
        match self {
            Progress::Quiet => {}
            Progress::Lines => eprintln!("{s}"),
            Progress::Bars(m) => {
                // A progress line that cannot be drawn (stderr gone) is no reason to fail.
                let _ = m.println(s);
            }
        }
    }

    /// Start tracking one blob transfer.
    pub fn blob(&self, verb: &'static str, digest: &str, size: u64) -> Blob {
        let short =
            digest.strip_prefix("sha256:").unwrap_or(digest)[..12.min(digest.len())].to_owned();
        let bar = match self {
            Progress::Bars(m) => {
                let b = m.add(ProgressBar::new(size));
                b.set_style(
                    ProgressStyle::with_template(
                        "{prefix} {msg:8} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
                    )
                    .expect("the template is valid")
                    .progress_chars("=> "),
                );
                b.set_prefix(short.clone());
                b.set_message(verb);
                Some(b)
            }
            _ => None,
        };
        Blob {
            progress: self.clone(),
            bar,
            short,
            size,
        }
    }
}

pub struct Blob {
    progress: Progress,
    bar: Option<ProgressBar>,
    short: String,
    size: u64,
}

impl Blob {
    pub fn inc(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }

    /// A cheap handle that advances this bar from another task.
    pub fn incrementer(&self) -> impl Fn(u64) + Send + Sync + 'static {
        let bar = self.bar.clone();
        move |n| {
            if let Some(b) = &bar {
                b.inc(n);
            }
        }
    }

    pub fn reset(&self) {
        if let Some(b) = &self.bar {
            b.set_position(0);
        }
    }

    /// The transfer ended with `fate` (pushed, skipped, mounted, pulled, cached).
    pub fn finish(&self, fate: &str) {
        match (&self.progress, &self.bar) {
            (_, Some(b)) => b.finish_with_message(fate.to_owned()),
            (Progress::Lines, None) => eprintln!("{} {fate} ({} bytes)", self.short, self.size),
            _ => {}
        }
    }
}
