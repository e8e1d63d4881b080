//! Reaching the Lambda and S3 APIs: the AWS configuration chain (environment, shared files and
//! profiles, SSO, web identity, ECS/IMDS; `AWS_ENDPOINT_URL` and the per-service
//! `AWS_ENDPOINT_URL_LAMBDA` / `AWS_ENDPOINT_URL_S3` for stand-ins), as ECR's client does, and
//! API errors turned into lamina's, naming the operation and the function.

use std::time::Duration;

use aws_sdk_lambda::error::{ProvideErrorMetadata, SdkError};

use crate::error::{Error, Result};

/// Connection and read limits on every Lambda and S3 call: a silent endpoint is an error, not
/// a hang.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// The shared AWS configuration for `profile` (else `AWS_PROFILE` and the default chain).
/// Without a region from the chain, a usage error says where to set one.
pub async fn config(profile: Option<&str>) -> Result<aws_config::SdkConfig> {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest()).timeout_config(
        aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .build(),
    );
    if let Some(p) = profile {
        loader = loader.profile_name(p);
    }
    let conf = loader.load().await;
    if conf.region().is_none() {
        return Err(Error::usage(
            "no AWS region for the Lambda API: set AWS_REGION, or `region` in the AWS profile",
        ));
    }
    Ok(conf)
}

/// The Lambda API's host in `region`, naming where an error came from.
pub fn lambda_endpoint(region: &str) -> String {
    format!("lambda.{region}.amazonaws.com")
}

/// A lamina error for a failed AWS call `what` (`"Lambda UpdateFunctionCode"`) about
/// `subject` (`"function fn"`), with a hint for the usual causes. Credentials refused are
/// [`Error::Auth`]; the rest [`Error::Registry`] naming `endpoint`, with the service's code.
pub fn api_error<E>(what: &str, subject: &str, endpoint: &str, e: SdkError<E>) -> Error
where
    E: std::error::Error + ProvideErrorMetadata + 'static,
{
    crate::registry::ecr::sdk_error(&format!("{what} for {subject}"), endpoint.to_owned(), e)
}
