//! Waiting the way Lambda requires: after a create or an update, a function's `State` is
//! `Pending` or its `LastUpdateStatus` is `InProgress` for a while, and another update or a
//! version publish in that window fails with `ResourceConflictException`. Poll
//! `GetFunctionConfiguration` with bounded backoff until the function has settled.

use std::time::{Duration, Instant};

use aws_sdk_lambda::types::{LastUpdateStatus, State};

use super::aws::{api_error, lambda_endpoint};
use crate::error::{Error, Result};

/// The first pause between polls; it doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(200);
/// The longest pause between polls.
const MAX_PAUSE: Duration = Duration::from_secs(5);

/// What the wait reads of a function's configuration (from `GetFunction`,
/// `GetFunctionConfiguration` or an update's answer: the SDK has a type for each).
#[derive(Clone, Debug, Default)]
pub struct Status {
    /// `State`.
    pub state: Option<State>,
    /// `StateReason` and `StateReasonCode`.
    pub state_reason: (Option<String>, Option<String>),
    /// `LastUpdateStatus`.
    pub last_update: Option<LastUpdateStatus>,
    /// `LastUpdateStatusReason` and `LastUpdateStatusReasonCode`.
    pub last_update_reason: (Option<String>, Option<String>),
    /// `CodeSha256`.
    pub code_sha256: Option<String>,
}

/// [`Status`] from any of the SDK's configuration types (they share the getters).
macro_rules! status_of {
    ($c:expr) => {{
        let c = $c;
        $crate::deploy::wait::Status {
            state: c.state().cloned(),
            state_reason: (
                c.state_reason().map(str::to_owned),
                c.state_reason_code().map(|s| s.as_str().to_owned()),
            ),
            last_update: c.last_update_status().cloned(),
            last_update_reason: (
                c.last_update_status_reason().map(str::to_owned),
                c.last_update_status_reason_code()
                    .map(|s| s.as_str().to_owned()),
            ),
            code_sha256: c.code_sha256().map(str::to_owned),
        }
    }};
}
pub(crate) use status_of;

/// Whether a configuration has settled (`Some(Ok)`), failed (`Some(Err)` with Lambda's
/// reasons), or is still changing (`None`).
pub fn settled(c: &Status, name: &str, region: &str) -> Option<Result<()>> {
    let failed = |what: &str, (reason, code): &(Option<String>, Option<String>)| {
        Some(Err(Error::Registry {
            registry: lambda_endpoint(region),
            status: None,
            code: code.clone(),
            message: format!(
                "Lambda function {name}: {what}: {}",
                reason.as_deref().unwrap_or("Lambda gave no reason")
            ),
        }))
    };
    if c.state == Some(State::Failed) {
        return failed("State is Failed", &c.state_reason);
    }
    if c.last_update == Some(LastUpdateStatus::Failed) {
        return failed("LastUpdateStatus is Failed", &c.last_update_reason);
    }
    let state_ok = !matches!(c.state, Some(State::Pending));
    let update_ok = !matches!(c.last_update, Some(LastUpdateStatus::InProgress));
    (state_ok && update_ok).then_some(Ok(()))
}

/// Poll until `name` has settled (see [`settled`]); an error when it fails (with Lambda's
/// `StateReason` / `LastUpdateStatusReason`) or when `deadline` passes first.
pub async fn until_settled(
    client: &aws_sdk_lambda::Client,
    name: &str,
    region: &str,
    deadline: Instant,
) -> Result<Status> {
    let mut pause = FIRST_PAUSE;
    loop {
        let c = client
            .get_function_configuration()
            .function_name(name)
            .send()
            .await
            .map_err(|e| {
                api_error(
                    "Lambda GetFunctionConfiguration",
                    &format!("function {name}"),
                    &lambda_endpoint(region),
                    e,
                )
            })?;
        let c = status_of!(&c);
        match settled(&c, name, region) {
            Some(Ok(())) => return Ok(c),
            Some(Err(e)) => return Err(e),
            None => {}
        }
        let now = Instant::now();
        if now + pause > deadline {
            return Err(Error::Registry {
                registry: lambda_endpoint(region),
                status: None,
                code: None,
                message: format!(
                    "Lambda function {name} was still changing (State {}, LastUpdateStatus {}) when the wait's time limit ran out (--wait-timeout)",
                    c.state.as_ref().map_or("-", |s| s.as_str()),
                    c.last_update.as_ref().map_or("-", |s| s.as_str()),
                ),
            });
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_and_in_progress_wait_failed_says_why() {
        let c = |s: State, u: Option<LastUpdateStatus>| Status {
            state: Some(s),
            last_update: u,
            state_reason: (Some("bad image".into()), None),
            last_update_reason: (Some("no such digest".into()), None),
            code_sha256: None,
        };
        assert!(settled(&c(State::Pending, None), "f", "r").is_none());
        assert!(
            settled(
                &c(State::Active, Some(LastUpdateStatus::InProgress)),
                "f",
                "r"
            )
            .is_none()
        );
        assert!(matches!(
            settled(
                &c(State::Active, Some(LastUpdateStatus::Successful)),
                "f",
                "r"
            ),
            Some(Ok(()))
        ));
        assert!(matches!(
            settled(&c(State::Active, None), "f", "r"),
            Some(Ok(()))
        ));
        let e = settled(&c(State::Failed, None), "f", "r")
            .unwrap()
            .unwrap_err();
        assert!(e.to_string().contains("bad image"), "{e}");
        let e = settled(&c(State::Active, Some(LastUpdateStatus::Failed)), "f", "r")
            .unwrap()
            .unwrap_err();
        assert!(e.to_string().contains("no such digest"), "{e}");
    }
}
