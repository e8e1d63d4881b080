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

impl Progress {
    /// Start showing one layer being written, named by its role and source (`code src ->
    /// /var/task`): on a terminal a bar of the files and compressed bytes written and their
    /// rate; as plain lines, one line when it is done (with the files and bytes of a layer
    /// built).
    pub fn layer(&self, name: &str) -> LayerBar {
        let bar = match self {
            Progress::Bars(m) => {
                let b = m.add(ProgressBar::new_spinner());
                b.set_style(
                    ProgressStyle::with_template(
                        "{spinner} layer {prefix} {msg} {bytes} {bytes_per_sec} {elapsed}",
                    )
                    .expect("the template is valid"),
                );
                b.set_prefix(name.to_owned());
                b.set_message("compressing");
                b.enable_steady_tick(std::time::Duration::from_millis(120));
                Some(b)
            }
            _ => None,
        };
        LayerBar {
            progress: self.clone(),
            bar,
            name: name.to_owned(),
            written: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            files: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            started: std::time::Instant::now(),
        }
    }
}

/// Receives bytes as they are written (the layer builder's tee).
pub type ByteSink = Box<dyn FnMut(&[u8]) + Send>;

/// One layer being written (see [`Progress::layer`]).
pub struct LayerBar {
    progress: Progress,
    bar: Option<ProgressBar>,
    name: String,
    written: Arc<std::sync::atomic::AtomicU64>,
    files: Arc<std::sync::atomic::AtomicU64>,
    started: std::time::Instant,
}

/// `1 file`, `2 files`.
fn files_word(n: u64) -> String {
    format!("{n} file{}", if n == 1 { "" } else { "s" })
}

impl LayerBar {
    /// Where the layer builder counts the files it has written (`layer::How::files`).
    pub fn files(&self) -> &std::sync::atomic::AtomicU64 {
        &self.files
    }

    /// A tee counting the compressed bytes into the bar (and showing the files written so
    /// far), then handing them to `next`.
    pub fn counting(&self, mut next: Option<ByteSink>) -> ByteSink {
        let (bar, written, files) = (self.bar.clone(), self.written.clone(), self.files.clone());
        let mut shown = 0;
        Box::new(move |b: &[u8]| {
            written.fetch_add(b.len() as u64, std::sync::atomic::Ordering::Relaxed);
            if let Some(bar) = &bar {
                bar.inc(b.len() as u64);
                let n = files.load(std::sync::atomic::Ordering::Relaxed);
                if n != shown {
                    shown = n;
                    bar.set_message(format!("compressing, {}", files_word(n)));
                }
            }
            if let Some(n) = &mut next {
                n(b);
            }
        })
    }

    /// The layer is written (`size` compressed bytes); `from` says where it came from
    /// (`built`, or the cache that held it: shown as "cached (…)").
    pub fn finish(&self, size: u64, from: &str) {
        let how = if from == "built" {
            format!(
                "built, {}, {size} bytes in {:.2}s",
                files_word(self.files.load(std::sync::atomic::Ordering::Relaxed)),
                self.started.elapsed().as_secs_f64()
            )
        } else {
            format!("cached ({from})")
        };
        match (&self.progress, &self.bar) {
            (_, Some(b)) => {
                if let Ok(style) = ProgressStyle::with_template("  layer {prefix}: {msg}") {
                    b.set_style(style);
                }
                b.finish_with_message(how)
            }
            (Progress::Lines, None) => eprintln!("layer {}: {how}", self.name),
            _ => {}
        }
    }

    /// The layer failed: its bar is taken away.
    pub fn abandon(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
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
