//! Amazon ECR: recognise its registry hosts, get registry passwords through the AWS credential
//! chain (GetAuthorizationToken), and create repositories on request.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use aws_sdk_ecr::error::ProvideErrorMetadata;
use base64::Engine;

use crate::error::{Error, Result};
use crate::registry::auth::Credentials;

/// An ECR registry named by its host.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EcrRegistry {
    pub account: String,
    pub region: String,
    pub fips: bool,
    pub dual_stack: bool,
}

/// Parse an ECR registry host (an optional `:port` is ignored):
/// `<account>.dkr.ecr[-fips].<region>.amazonaws.com[.cn]` and the dual-stack
/// `<account>.dkr-ecr[-fips].<region>.on.aws` (or `.on.amazonwebservices.com.cn`).
pub fn parse_host(registry: &str) -> Option<EcrRegistry> {
    let host = registry.split(':').next()?.to_ascii_lowercase();
    let (account, rest) = host.split_once('.')?;
    if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (kind, rest) = rest.split_once('.')?;
    let (region, domain) = rest.split_once('.')?;
    let (fips, dual_stack) = match kind {
        "dkr" => {
            // `dkr.ecr[-fips]`: the region is one label further.
            let (ecr, after) = (region, domain);
            let (region, domain) = after.split_once('.')?;
            let fips = match ecr {
                "ecr" => false,
                "ecr-fips" => true,
                _ => return None,
            };
            if !matches!(domain, "amazonaws.com" | "amazonaws.com.cn") || !valid_region(region) {
                return None;
            }
            return Some(EcrRegistry {
                account: account.to_owned(),
                region: region.to_owned(),
                fips,
                dual_stack: false,
            });
        }
        "dkr-ecr" => (false, true),
        "dkr-ecr-fips" => (true, true),
        _ => return None,
    };
    if !matches!(domain, "on.aws" | "on.amazonwebservices.com.cn") || !valid_region(region) {
        return None;
    }
    Some(EcrRegistry {
        account: account.to_owned(),
        region: region.to_owned(),
        fips,
        dual_stack,
    })
}

fn valid_region(r: &str) -> bool {
    !r.is_empty()
        && r.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// How to reach the ECR API.
#[derive(Clone, Debug, Default)]
pub struct EcrOptions {
    /// AWS profile (`--profile`); else `AWS_PROFILE` and the default chain.
    pub profile: Option<String>,
    /// Create a missing repository instead of failing.
    pub create_repo: bool,
    /// `MUTABLE` or `IMMUTABLE` for created repositories (ECR's default when unset).
    pub tag_mutability: Option<String>,
    /// Scan on push for created repositories (ECR's default when unset).
    pub scan_on_push: Option<bool>,
}

async fn client(r: &EcrRegistry, o: &EcrOptions) -> aws_sdk_ecr::Client {
    // The standard chain: env, shared files and profiles, SSO, web identity, ECS/IMDS; and
    // AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_ECR for stand-ins.
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(r.region.clone()));
    if let Some(p) = &o.profile {
        loader = loader.profile_name(p);
    }
    if r.fips {
        loader = loader.use_fips(true);
    }
    if r.dual_stack {
        loader = loader.use_dual_stack(true);
    }
    aws_sdk_ecr::Client::new(&loader.load().await)
}

fn api_error<E: std::error::Error + ProvideErrorMetadata + 'static>(
    what: &str,
    r: &EcrRegistry,
    e: aws_sdk_ecr::error::SdkError<E>,
) -> Error {
    sdk_error(
        &format!("ECR {what} for account {} in {}", r.account, r.region),
        api_endpoint(r),
        e,
    )
}

/// A lamina error for a failed AWS SDK call (ECR's here, Lambda's and S3's in `deploy`: one
/// SDK error type): `what` says what was asked about what (`ECR GetAuthorizationToken for
/// account 1 in us-east-1`), `endpoint` where it went. The message holds the error's and its
/// causes' messages (each once, without the SDK's debug dumps) and a hint for the usual causes.
/// Credentials refused or lacking permission are [`Error::Auth`] (retrying will not help); the
/// rest [`Error::Registry`] naming `endpoint`, with the service's code and HTTP status.
pub(crate) fn sdk_error<E: std::error::Error + ProvideErrorMetadata + 'static>(
    what: &str,
    endpoint: String,
    e: aws_sdk_ecr::error::SdkError<E>,
) -> Error {
    use aws_sdk_ecr::error::SdkError;
    let code = e.code().map(str::to_owned);
    let refused = matches!(
        code.as_deref(),
        Some("UnrecognizedClientException" | "InvalidSignatureException" | "ExpiredTokenException")
    );
    let hint = match code.as_deref() {
        _ if refused => " (check the AWS credentials: environment, profile, SSO login)",
        Some("AccessDeniedException") => " (the AWS identity lacks the permission)",
        _ => match &e {
            SdkError::DispatchFailure(_) => {
                " (no AWS credentials were found, or the API cannot be reached: check the \
                 network, AWS_ENDPOINT_URL and the credentials)"
            }
            SdkError::TimeoutError(_) => " (the API did not answer in time)",
            _ => "",
        },
    };
    let mut msgs: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(c) = cur {
        let m = c.to_string();
        if !m.is_empty() && !msgs.iter().any(|p| p.contains(&m)) {
            msgs.push(m);
        }
        cur = c.source();
    }
    if let Some(m) = e.message()
        && !msgs.iter().any(|p| p.contains(m))
    {
        msgs.push(m.to_owned());
    }
    let message = format!("{what}: {}{hint}", msgs.join(": "));
    if refused || code.as_deref() == Some("AccessDeniedException") {
        return Error::Auth(message);
    }
    Error::Registry {
        registry: endpoint,
        status: e.raw_response().map(|resp| resp.status().as_u16()),
        code,
        message,
    }
}

/// The ECR API endpoint of a registry's region, naming where an API error came from.
fn api_endpoint(r: &EcrRegistry) -> String {
    format!("api.ecr.{}.amazonaws.com", r.region)
}

/// An [`Error::Registry`] for an ECR API answer lamina cannot use.
fn api_answer(r: &EcrRegistry, message: String) -> Error {
    Error::registry(api_endpoint(r), message)
}

/// ECR registry passwords by registry and AWS profile, each with the time it stops being
/// reused. Shared through [`super::Options::ecr_tokens`]; the caller decides its lifetime.
#[derive(Default)]
pub struct TokenCache {
    tokens: Mutex<HashMap<TokenKey, (Credentials, SystemTime)>>,
}

/// A registry and the AWS profile its token was obtained with.
type TokenKey = (EcrRegistry, Option<String>);

impl TokenCache {
    fn get(&self, key: &TokenKey) -> Option<Credentials> {
        let tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        let (c, until) = tokens.get(key)?;
        (SystemTime::now() < *until).then(|| c.clone())
    }

    fn put(&self, key: TokenKey, c: Credentials, until: SystemTime) {
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        tokens.insert(key, (c, until));
    }
}

/// The registry password from GetAuthorizationToken, kept in `tokens` until five minutes before
/// it expires.
pub async fn credentials(
    r: &EcrRegistry,
    o: &EcrOptions,
    tokens: &TokenCache,
) -> Result<Credentials> {
    let key = (r.clone(), o.profile.clone());
    if let Some(c) = tokens.get(&key) {
        return Ok(c);
    }
    let out = client(r, o)
        .await
        .get_authorization_token()
        .send()
        .await
        .map_err(|e| api_error("GetAuthorizationToken", r, e))?;
    let data = out.authorization_data().first().ok_or_else(|| {
        api_answer(
            r,
            format!(
                "ECR GetAuthorizationToken for {} returned no token",
                r.account
            ),
        )
    })?;
    let token = data.authorization_token().ok_or_else(|| {
        api_answer(
            r,
            "ECR GetAuthorizationToken returned an empty token".into(),
        )
    })?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| {
            api_answer(
                r,
                "ECR GetAuthorizationToken returned a token that is not base64".into(),
            )
        })?;
    let (user, password) = decoded.split_once(':').ok_or_else(|| {
        api_answer(
            r,
            "ECR GetAuthorizationToken returned a token that is not USER:PASSWORD".into(),
        )
    })?;
    let creds = Credentials {
        username: user.to_owned(),
        password: password.to_owned(),
    };
    let until = data
        .expires_at()
        .and_then(|t| SystemTime::try_from(*t).ok())
        .unwrap_or_else(|| SystemTime::now() + Duration::from_secs(3600))
        .checked_sub(Duration::from_secs(300))
        .unwrap_or(SystemTime::UNIX_EPOCH);
    tokens.put(key, creds.clone(), until);
    Ok(creds)
}

/// Make sure `repository` exists: create it with `--create-repo`, else fail naming it and the flag.
/// Returns whether it was created.
pub async fn ensure_repository(r: &EcrRegistry, repository: &str, o: &EcrOptions) -> Result<bool> {
    let c = client(r, o).await;
    match c
        .describe_repositories()
        .registry_id(&r.account)
        .repository_names(repository)
        .send()
        .await
    {
        Ok(_) => return Ok(false),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_repository_not_found_exception()) => {}
        Err(e) => return Err(api_error("DescribeRepositories", r, e)),
    }
    if !o.create_repo {
        return Err(Error::Registry {
            registry: api_endpoint(r),
            status: None,
            code: Some("RepositoryNotFoundException".to_owned()),
            message: format!(
                "ECR repository `{repository}` does not exist in account {} ({}); create it, or pass --create-repo to let lamina create it",
                r.account, r.region
            ),
        });
    }
    let mut req = c
        .create_repository()
        .registry_id(&r.account)
        .repository_name(repository);
    if let Some(m) = &o.tag_mutability {
        req = req.image_tag_mutability(aws_sdk_ecr::types::ImageTagMutability::from(
            m.to_ascii_uppercase().as_str(),
        ));
    }
    if let Some(s) = o.scan_on_push {
        req = req.image_scanning_configuration(
            aws_sdk_ecr::types::ImageScanningConfiguration::builder()
                .scan_on_push(s)
                .build(),
        );
    }
    match req.send().await {
        Ok(_) => Ok(true),
        // Created meanwhile by someone else: fine.
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_repository_already_exists_exception()) =>
        {
            Ok(false)
        }
        Err(e) => Err(api_error("CreateRepository", r, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_shared_by_option_clones_until_they_lapse() {
        let opts = crate::registry::Options::new("cache".into(), "docker".into());
        let copy = opts.clone();
        let r = parse_host("123456789012.dkr.ecr.us-east-1.amazonaws.com").unwrap();
        let c = Credentials {
            username: "AWS".into(),
            password: "p".into(),
        };
        let later = SystemTime::now() + Duration::from_secs(60);
        opts.ecr_tokens.put((r.clone(), None), c, later);
        assert!(copy.ecr_tokens.get(&(r.clone(), None)).is_some());
        assert!(
            copy.ecr_tokens
                .get(&(r.clone(), Some("p".into())))
                .is_none()
        );
        let c = Credentials {
            username: "AWS".into(),
            password: "q".into(),
        };
        opts.ecr_tokens.put((r.clone(), None), c, SystemTime::now());
        assert!(copy.ecr_tokens.get(&(r, None)).is_none());
        let fresh = crate::registry::Options::new("cache".into(), "docker".into());
        assert!(!std::sync::Arc::ptr_eq(&fresh.ecr_tokens, &opts.ecr_tokens));
    }

    #[test]
    fn hosts_parse() {
        let r = parse_host("123456789012.dkr.ecr.us-east-1.amazonaws.com").unwrap();
        assert_eq!(
            (r.account.as_str(), r.region.as_str(), r.fips, r.dual_stack),
            ("123456789012", "us-east-1", false, false)
        );
        let r = parse_host("123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com").unwrap();
        assert!(r.fips && r.region == "us-gov-west-1");
        let r = parse_host("123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn").unwrap();
        assert_eq!(r.region, "cn-north-1");
        let r = parse_host("123456789012.dkr-ecr.eu-west-1.on.aws").unwrap();
        assert!(r.dual_stack && !r.fips && r.region == "eu-west-1");
        let r = parse_host("123456789012.dkr-ecr-fips.us-east-1.on.aws:443").unwrap();
        assert!(r.dual_stack && r.fips);
        for h in [
            "public.ecr.aws",
            "12345.dkr.ecr.us-east-1.amazonaws.com",
            "123456789012.dkr.ecr.us-east-1.example.com",
            "123456789012.dkr.ecs.us-east-1.amazonaws.com",
            "127.0.0.1:5000",
        ] {
            assert_eq!(parse_host(h), None, "{h}");
        }
    }
}
