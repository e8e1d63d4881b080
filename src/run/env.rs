//! The environment Lambda gives a function, as its documentation lists it ("Defined runtime
//! environment variables"): set over the image's own, under the user's `--env`.

use std::time::SystemTime;

use super::{RunOptions, ids};
use crate::error::{Error, Result};
use crate::spec::runtime::{self, Family};

/// `AWS_EXECUTION_ENV` for the managed runtime `name` (`python3.12` gives
/// `AWS_Lambda_python3.12`); `None` for the OS-only runtimes (`provided.*`), for which Lambda
/// does not define it. An unknown name is a usage error offering the nearest known one.
pub fn execution_env(name: &str) -> Result<Option<String>> {
    let r = runtime::find(name).map_err(|e| Error::Usage(format!("--managed-runtime: {e}")))?;
    Ok((r.family != Family::Provided).then(|| format!("AWS_Lambda_{}", r.name)))
}

/// The `AWS_LAMBDA_LOG_STREAM_NAME` Lambda would give a new environment:
/// `YYYY/MM/DD/[$LATEST]` and 32 hex digits.
pub(super) fn log_stream_name() -> String {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let date = crate::image::rfc3339(secs);
    format!(
        "{}/{}/{}/[$LATEST]{}",
        &date[..4],
        &date[5..7],
        &date[8..10],
        ids::request_id().replace('-', "")
    )
}

/// Lambda's variables for a function run with `o`, its Runtime API at `runtime_api`.
pub(super) fn lambda_vars(o: &RunOptions, runtime_api: &str) -> Vec<(&'static str, String)> {
    let name = &o.function_name;
    let mut vars = vec![
        ("AWS_LAMBDA_RUNTIME_API", runtime_api.to_owned()),
        ("AWS_LAMBDA_FUNCTION_NAME", name.clone()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_owned()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", o.memory_mb.to_string()),
        ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand".to_owned()),
        ("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}")),
        ("AWS_LAMBDA_LOG_STREAM_NAME", log_stream_name()),
        ("AWS_REGION", o.region.clone()),
        ("AWS_DEFAULT_REGION", o.region.clone()),
        ("LAMBDA_TASK_ROOT", "/var/task".to_owned()),
        ("LAMBDA_RUNTIME_DIR", "/var/runtime".to_owned()),
        ("TZ", ":UTC".to_owned()),
    ];
    if let Some(e) = &o.execution_env {
        vars.push(("AWS_EXECUTION_ENV", e.clone()));
    }
    vars
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn execution_env_names_managed_runtimes_only() {
        assert_eq!(
            execution_env("python3.12").unwrap().as_deref(),
            Some("AWS_Lambda_python3.12")
        );
        assert_eq!(
            execution_env("nodejs20.x").unwrap().as_deref(),
            Some("AWS_Lambda_nodejs20.x")
        );
        assert_eq!(execution_env("provided.al2023").unwrap(), None);
        let e = execution_env("python3.21").unwrap_err().to_string();
        assert!(e.contains("python3.12"), "{e}");
    }

    #[test]
    fn the_log_stream_is_dated_and_latest() {
        let s = log_stream_name();
        let (date, rest) = s.split_at(11);
        assert_eq!(date.matches('/').count(), 3, "{s}");
        let id = rest.strip_prefix("[$LATEST]").unwrap();
        assert_eq!(id.len(), 32, "{s}");
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()), "{s}");
    }
}
