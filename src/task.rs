//! Scheduling on the caller's tokio runtime. The library creates no runtime: its entry points
//! are async, and blocking work (tar, gzip, hashing, unpacking, waiting for a credential
//! helper) goes to the runtime's blocking pool through [`blocking`], so it never stalls the
//! executor's threads.

use crate::error::{Error, Result};

/// Run blocking (CPU- or disk-bound) work `f` on the blocking pool and await its result;
/// `what` names it if it panics (a bug, reported as [`Error::Internal`]).
pub async fn blocking<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("{what} failed: {e}")))?
}
