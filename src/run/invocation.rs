//! One invocation as Lambda sees it: the function's settings, the request, the outcome, and
//! Lambda's words for a runtime that ended.

use std::io;
use std::time::Duration;

use hyper::body::Bytes;
use serde_json::{Value, json};

/// Lambda's limit on synchronous request and response payloads.
pub const MAX_PAYLOAD: usize = 6 * 1024 * 1024;

/// The function's configuration, as Lambda would hold it.
#[derive(Clone, Debug)]
pub struct Settings {
    /// How long one invocation may run before it is stopped, as Lambda's timeout.
    pub timeout: Duration,
    /// The function's name, as `AWS_LAMBDA_FUNCTION_NAME` shows it.
    pub function_name: String,
    /// The memory size Lambda would give it, in MB.
    pub memory_mb: u32,
    /// The AWS region the function pretends to run in.
    pub region: String,
    /// The handler (`_HANDLER`), told to extensions when they register.
    pub handler: String,
}

impl Settings {
    /// The function ARN Lambda would show (a fixed, made-up account).
    pub fn arn(&self) -> String {
        format!(
            "arn:aws:lambda:{}:012345678912:function:{}",
            self.region, self.function_name
        )
    }
}

/// One invocation's request.
#[derive(Clone, Debug, Default)]
pub struct Invoke {
    /// The event (JSON), as the function receives it.
    pub payload: Bytes,
    /// `X-Amzn-Trace-Id` of the invoke request (one is made up otherwise).
    pub trace_id: Option<String>,
    /// The client context (`X-Amz-Client-Context`, base64-decoded).
    pub client_context: Option<String>,
}

/// One invocation's result, as Lambda's Invoke API returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The response body, or the error document when the invocation failed.
    pub body: Bytes,
    /// The `errorType` when the invocation failed (the answer then carries
    /// `X-Amz-Function-Error: Unhandled`).
    pub error_type: Option<String>,
}

impl Outcome {
    pub(super) fn ok(body: Bytes) -> Outcome {
        Outcome {
            body,
            error_type: None,
        }
    }

    /// An error Lambda itself reports: `{"errorType": ..., "errorMessage": ...}`.
    pub(super) fn error(error_type: &str, message: String) -> Outcome {
        let body = json!({"errorType": error_type, "errorMessage": message});
        Outcome {
            body: Bytes::from(serde_json::to_vec(&body).expect("JSON serializes")),
            error_type: Some(error_type.to_owned()),
        }
    }

    /// An error the function posted (`/error`, `/init/error`): its body is returned as posted
    /// when it is a JSON object; anything else is wrapped as an `errorMessage`.
    pub(super) fn posted(body: Bytes, header_type: Option<String>) -> Outcome {
        if let Ok(Value::Object(o)) = serde_json::from_slice::<Value>(&body) {
            let t = o
                .get("errorType")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .or(header_type)
                .unwrap_or_else(|| "Unhandled".to_owned());
            return Outcome {
                body,
                error_type: Some(t),
            };
        }
        Outcome::error(
            header_type.as_deref().unwrap_or("Unhandled"),
            String::from_utf8_lossy(&body).into_owned(),
        )
    }
}

/// Lambda's words for a runtime that ended: `Runtime exited with error: exit status 3`, or
/// `Runtime exited without providing a reason` when it exited with status 0.
pub fn exit_error(status: &io::Result<std::process::ExitStatus>) -> String {
    match status {
        Ok(s) if s.code() == Some(0) => "Runtime exited without providing a reason".to_owned(),
        _ => format!("Runtime exited with error: {}", describe_exit(status)),
    }
}

pub(super) fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// How Lambda words a process's end: `exit status 3`, `signal: killed`.
pub fn describe_exit(status: &io::Result<std::process::ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(c), _) => format!("exit status {c}"),
            (None, Some(sig)) => {
                let name = match sig {
                    libc::SIGKILL => "killed".to_owned(),
                    libc::SIGTERM => "terminated".to_owned(),
                    libc::SIGINT => "interrupt".to_owned(),
                    libc::SIGSEGV => "segmentation fault".to_owned(),
                    libc::SIGABRT => "aborted".to_owned(),
                    libc::SIGBUS => "bus error".to_owned(),
                    libc::SIGILL => "illegal instruction".to_owned(),
                    libc::SIGFPE => "floating point exception".to_owned(),
                    n => format!("signal {n}"),
                };
                format!("signal: {name}")
            }
            _ => "exited".to_owned(),
        },
        Err(e) => format!("unknown status: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn posted_errors_pass_through_or_are_wrapped() {
        let o = Outcome::posted(
            Bytes::from_static(br#"{"errorMessage":"boom","errorType":"MyError"}"#),
            None,
        );
        assert_eq!(o.error_type.as_deref(), Some("MyError"));
        assert_eq!(
            &o.body[..],
            br#"{"errorMessage":"boom","errorType":"MyError"}"#
        );
        let o = Outcome::posted(Bytes::from_static(b"not json"), Some("Custom.Type".into()));
        let v: Value = serde_json::from_slice(&o.body).unwrap();
        assert_eq!(
            v,
            json!({"errorMessage": "not json", "errorType": "Custom.Type"})
        );
    }

    #[test]
    fn exits_are_worded_as_lambda_words_them() {
        use std::os::unix::process::ExitStatusExt;
        let s = |raw| Ok(std::process::ExitStatus::from_raw(raw));
        assert_eq!(describe_exit(&s(3 << 8)), "exit status 3");
        assert_eq!(describe_exit(&s(libc::SIGKILL)), "signal: killed");
        assert_eq!(
            exit_error(&s(libc::SIGKILL)),
            "Runtime exited with error: signal: killed"
        );
        assert_eq!(
            exit_error(&s(0)),
            "Runtime exited without providing a reason"
        );
    }
}
