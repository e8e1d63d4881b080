//! Time limits on talking to a registry: a transfer fails when it makes no progress for the
//! stall limit (a registry that stops answering), and every wait of a command ends at its
//! [`Deadline`] (a registry that trickles one byte at a time). reqwest's own read timeout is
//! not used: it counts from the start of a request, upload included, so a large upload would
//! look stalled.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// When a command must be done with registries: a point in time and the limit it came from
/// (shown in the error when it passes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadline {
    /// The instant every registry request must have finished by.
    pub at: Instant,
    /// The limit as given (`--timeout`), for messages.
    pub limit: Duration,
}

impl Deadline {
    /// A deadline `limit` after `start` (the CLI passes the time the process started).
    pub fn after(start: Instant, limit: Duration) -> Deadline {
        Deadline {
            at: start + limit,
            limit,
        }
    }
}

/// The last time a transfer made progress (a byte sent or received, an answer begun); cloned
/// into the body streams of a request so an upload in progress is not taken for a stall.
#[derive(Clone, Debug)]
pub(crate) struct Activity {
    base: Instant,
    /// Milliseconds after `base` of the last progress.
    last: Arc<AtomicU64>,
    /// The request's body has all been handed to the connection.
    sent: Arc<std::sync::atomic::AtomicBool>,
}

/// How many stall limits a registry has to answer once a request's whole body has gone out:
/// its last bytes may still sit in socket buffers (where lamina cannot see them move; the
/// kernel's `TCP_USER_TIMEOUT` catches a peer that stopped acknowledging them), and the
/// registry may be checking them.
pub(crate) const ANSWER_AFTER_UPLOAD: u32 = 4;

impl Activity {
    /// Progress "now": a new wait starts its stall clock here.
    pub(crate) fn new() -> Activity {
        Activity {
            base: Instant::now(),
            last: Arc::new(AtomicU64::new(0)),
            sent: Default::default(),
        }
    }

    /// Record that the request's body has all been handed over (and progress now).
    pub(crate) fn body_sent(&self) {
        self.touch();
        self.sent.store(true, Ordering::Relaxed);
    }

    /// The stall limit in force: `stall`, or [`ANSWER_AFTER_UPLOAD`] times it once a body
    /// has gone out.
    fn limit(&self, stall: Duration) -> Duration {
        if self.sent.load(Ordering::Relaxed) {
            stall * ANSWER_AFTER_UPLOAD
        } else {
            stall
        }
    }

    /// Record progress.
    pub(crate) fn touch(&self) {
        let ms = self.base.elapsed().as_millis() as u64;
        self.last.fetch_max(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.base + Duration::from_millis(self.last.load(Ordering::Relaxed))
    }
}

/// Why a wait ended without its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expired {
    /// No progress for the stall limit: worth another attempt, like a dropped connection.
    Stall(Duration),
    /// The command's deadline passed: never retried.
    Deadline(Duration),
}

impl Expired {
    /// What happened, for a message that already names the registry and the operation.
    pub(crate) fn describe(self) -> String {
        match self {
            Expired::Stall(d) => format!(
                "nothing received or sent for {} s (the stall limit, --stall-timeout)",
                d.as_secs_f64()
            ),
            Expired::Deadline(d) => format!(
                "the command's time limit of {} s (--timeout) ran out",
                d.as_secs_f64()
            ),
        }
    }
}

/// Await `fut` unless `activity` shows no progress for `stall`, or `deadline` passes first.
pub(crate) async fn watch<F: Future>(
    fut: F,
    activity: &Activity,
    stall: Duration,
    deadline: Option<Deadline>,
) -> Result<F::Output, Expired> {
    tokio::pin!(fut);
    loop {
        let stall_at = activity.last() + activity.limit(stall);
        let wake = deadline.map_or(stall_at, |d| d.at.min(stall_at));
        tokio::select! {
            biased;
            v = &mut fut => return Ok(v),
            _ = tokio::time::sleep_until(wake.into()) => {
                let now = Instant::now();
                if let Some(d) = deadline.filter(|d| now >= d.at) {
                    return Err(Expired::Deadline(d.limit));
                }
                if now >= activity.last() + activity.limit(stall) {
                    return Err(Expired::Stall(activity.limit(stall)));
                }
            }
        }
    }
}

/// Sleep for `d` (a backoff), but not past `deadline`: reaching it is an error.
pub(crate) async fn pause(d: Duration, deadline: Option<Deadline>) -> Result<(), Expired> {
    match deadline {
        Some(dl) if Instant::now() + d >= dl.at => {
            tokio::time::sleep_until(dl.at.into()).await;
            Err(Expired::Deadline(dl.limit))
        }
        _ => {
            tokio::time::sleep(d).await;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_wait_without_progress_stalls_and_progress_keeps_it_alive() {
        let a = Activity::new();
        let stall = Duration::from_millis(150);
        let got = watch(std::future::pending::<()>(), &a, stall, None).await;
        assert_eq!(got, Err(Expired::Stall(stall)));

        // Progress every 50 ms for 400 ms: longer than the stall limit, never stalled.
        let a = Activity::new();
        let toucher = a.clone();
        let work = async move {
            for _ in 0..8 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                toucher.touch();
            }
            7
        };
        assert_eq!(watch(work, &a, stall, None).await, Ok(7));

        // Once a body has gone out, the answer gets more time, but not forever.
        let a = Activity::new();
        a.body_sent();
        let answer = async {
            tokio::time::sleep(stall * 2).await;
            1
        };
        assert_eq!(watch(answer, &a, stall, None).await, Ok(1));
        let got = watch(std::future::pending::<()>(), &a, stall, None).await;
        assert_eq!(got, Err(Expired::Stall(stall * ANSWER_AFTER_UPLOAD)));
    }

    #[tokio::test]
    async fn the_deadline_ends_a_wait_that_makes_progress() {
        let a = Activity::new();
        let toucher = a.clone();
        let trickle = async move {
            loop {
                tokio::time::sleep(Duration::from_millis(20)).await;
                toucher.touch();
            }
        };
        let limit = Duration::from_millis(200);
        let dl = Deadline::after(Instant::now(), limit);
        let got = watch(trickle, &a, Duration::from_secs(5), Some(dl)).await;
        assert_eq!(got, Err(Expired::Deadline(limit)));
        assert_eq!(
            pause(Duration::from_secs(60), Some(dl)).await,
            Err(Expired::Deadline(limit))
        );
    }
}
