//! One function: look it up, check the deploy can go ahead, then create it or send only what
//! changed (code, then configuration), waiting after each write; publish and alias last.

use std::time::Instant;

use aws_sdk_lambda::types::{Architecture, FunctionCode, FunctionConfiguration, PackageType};
use serde::Serialize;

use super::aws::{api_error, lambda_endpoint};
use super::code::{Ready, ZipVia, secs};
use super::config::{self, apply_changes};
use super::wait::{self, Status, status_of};
use super::{Phases, Target};
use crate::error::{Error, Result};
use crate::registry::ecr::EcrRegistry;

/// What Lambda has for a function.
#[derive(Clone, Debug)]
pub struct Found {
    /// Its configuration.
    pub config: FunctionConfiguration,
    /// `Code.ImageUri` and `Code.ResolvedImageUri` of an image function.
    pub image_uri: (Option<String>, Option<String>),
}

/// What happened to one function, as `--json` prints it.
#[derive(Serialize, Clone, Debug)]
#[serde(rename_all = "camelCase")]
pub struct FunctionReport {
    /// The name the spec or flags gave.
    pub function_name: String,
    /// The function's ARN.
    pub arn: String,
    /// `created`, `updated` or `unchanged`.
    pub outcome: String,
    /// The code identity sent or found: the pinned ImageUri or the zip's CodeSha256.
    pub code: String,
    /// What changed: `Code` and the configuration fields by their API names.
    pub changed: Vec<String>,
    /// The version published (`--publish`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The alias created or moved (`--alias`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// Seconds spent in each phase.
    pub phases: Phases,
}

/// The Lambda client, its region and the settings every function shares.
pub struct Ctx<'a> {
    /// The Lambda API.
    pub client: &'a aws_sdk_lambda::Client,
    /// Its region.
    pub region: String,
    /// The deploy's plan.
    pub plan: &'a super::Plan,
    /// Progress lines.
    pub log: &'a (dyn Fn(String) + Sync),
}

impl Ctx<'_> {
    fn err<E>(&self, what: &str, name: &str, e: aws_sdk_lambda::error::SdkError<E>) -> Error
    where
        E: std::error::Error + aws_sdk_lambda::error::ProvideErrorMetadata + 'static,
    {
        api_error(
            &format!("Lambda {what}"),
            &format!("function {name}"),
            &lambda_endpoint(&self.region),
            e,
        )
    }

    async fn settle(&self, name: &str, phases: &mut Phases) -> Result<Status> {
        let started = Instant::now();
        let deadline = Instant::now() + self.plan.wait_timeout;
        let s = wait::until_settled(self.client, name, &self.region, deadline).await?;
        let waited = secs(started);
        if waited >= 1.0 {
            (self.log)(format!("function {name}: settled after {waited:.1}s"));
        }
        *phases.entry("wait".into()).or_default() += waited;
        Ok(s)
    }
}

/// GetFunction: `None` when the function does not exist.
pub async fn lookup(ctx: &Ctx<'_>, name: &str) -> Result<Option<Found>> {
    match ctx.client.get_function().function_name(name).send().await {
        Ok(out) => {
            let config = out.configuration().cloned().ok_or_else(|| {
                Error::registry(
                    lambda_endpoint(&ctx.region),
                    format!("Lambda GetFunction for function {name} returned no configuration"),
                )
            })?;
            let code = out.code();
            Ok(Some(Found {
                config,
                image_uri: (
                    code.and_then(|c| c.image_uri()).map(str::to_owned),
                    code.and_then(|c| c.resolved_image_uri()).map(str::to_owned),
                ),
            }))
        }
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_not_found_exception()) =>
        {
            Ok(None)
        }
        Err(e) => Err(ctx.err("GetFunction", name, e)),
    }
}

/// The account of an ARN (`arn:PARTITION:SERVICE:REGION:ACCOUNT:...`).
fn arn_account(arn: &str) -> Option<&str> {
    let mut parts = arn.split(':');
    (parts.next() == Some("arn")).then_some(())?;
    parts.nth(3).filter(|a| !a.is_empty())
}

/// Refuse a deploy that cannot succeed, before anything is pushed or changed: a package type
/// switch, a function to create without a role (or without a runtime and handler, for a zip), an ECR repository in another account
/// or region than the function.
pub fn guard(
    ctx: &Ctx<'_>,
    t: &Target,
    found: Option<&Found>,
    image: bool,
    ecr: Option<&EcrRegistry>,
) -> Result<()> {
    let name = &t.name;
    let want = if image { "Image" } else { "Zip" };
    let mut account = arn_account(name).map(str::to_owned);
    if let Some(f) = found {
        let have = f.config.package_type().map_or("Zip", |p| p.as_str());
        if have != want {
            return Err(Error::usage(format!(
                "Lambda function {name} is a {have} function and this deploy is a {want} package: Lambda cannot change a function's package type; deploy under a new function name (or delete {name} first)"
            )));
        }
        account = account.or(f
            .config
            .function_arn()
            .and_then(arn_account)
            .map(str::to_owned));
    } else {
        let Some(role) = &t.config.role else {
            return Err(Error::usage(format!(
                "Lambda function {name} does not exist and no execution role is given to create it: set [deploy] role, or pass --role ARN"
            )));
        };
        account = account.or(arn_account(role).map(str::to_owned));
        if !image && (t.config.runtime.is_none() || t.config.handler.is_none()) {
            return Err(Error::usage(format!(
                "Lambda function {name} does not exist, and a .zip function needs a runtime and a handler to be created: set [function] runtime and handler (or [deploy] handler)"
            )));
        }
    }
    if let Some(e) = ecr {
        if e.region != ctx.region {
            return Err(Error::usage(format!(
                "the ECR repository is in {} and Lambda function {name} in {}: Lambda runs images from its own region's ECR; push to {}.dkr.ecr.{}.amazonaws.com",
                e.region, ctx.region, e.account, ctx.region
            )));
        }
        if let Some(a) = account
            && a != e.account
        {
            return Err(Error::usage(format!(
                "the ECR repository is in account {} and Lambda function {name} in account {a}: Lambda runs images from its own account's ECR; push to {a}.dkr.ecr.{}.amazonaws.com",
                e.account, ctx.region
            )));
        }
    }
    Ok(())
}

/// Whether Lambda already runs this code.
fn same_code(f: &Found, code: &Ready) -> bool {
    match code {
        Ready::Image { uri, .. } => {
            f.image_uri.0.as_deref() == Some(uri) || f.image_uri.1.as_deref() == Some(uri)
        }
        Ready::Zip { code_sha256, .. } => f.config.code_sha256() == Some(code_sha256),
    }
}

fn function_code(code: &Ready) -> FunctionCode {
    let b = FunctionCode::builder();
    match code {
        Ready::Image { uri, .. } => b.image_uri(uri),
        Ready::Zip { via, .. } => match via {
            ZipVia::Direct(bytes) => b.zip_file(bytes.clone()),
            ZipVia::S3 { bucket, key } => b.s3_bucket(bucket).s3_key(key),
            ZipVia::Unsent => b,
        },
    }
    .build()
}

/// Create the function, or update what differs; then publish and alias as asked.
pub async fn apply(
    ctx: &Ctx<'_>,
    t: &Target,
    found: Option<Found>,
    code: &Ready,
) -> Result<FunctionReport> {
    let name = t.name.as_str();
    let image = matches!(code, Ready::Image { .. });
    let mut phases = Phases::new();
    let mut changed = Vec::new();
    let (arn, outcome, mut status) = match found {
        None => {
            let started = Instant::now();
            let arch = Architecture::from(code.platform().lambda_name());
            let req = ctx
                .client
                .create_function()
                .function_name(name)
                .code(function_code(code))
                .package_type(if image {
                    PackageType::Image
                } else {
                    PackageType::Zip
                })
                .architectures(arch);
            let out = apply_changes!(req, &config::all(&t.config, image))
                .send()
                .await
                .map_err(|e| ctx.err("CreateFunction", name, e))?;
            phases.insert("create".into(), secs(started));
            (ctx.log)(format!("function {name}: created"));
            changed.push("Created".to_owned());
            let arn = out.function_arn().unwrap_or(name).to_owned();
            (arn, "created", ctx.settle(name, &mut phases).await?)
        }
        Some(f) => update(ctx, t, f, code, &mut phases, &mut changed).await?,
    };
    if outcome == "unchanged" {
        (ctx.log)(format!("function {name}: unchanged"));
    }
    let mut report = FunctionReport {
        function_name: name.to_owned(),
        arn,
        outcome: outcome.to_owned(),
        code: code.identity().to_owned(),
        changed,
        version: None,
        alias: None,
        phases,
    };
    if ctx.plan.publish || ctx.plan.alias.is_some() {
        publish(ctx, name, &mut status, &mut report).await?;
    }
    Ok(report)
}

/// Update an existing function: its code when it differs, then the configuration fields that
/// differ, waiting after each.
async fn update(
    ctx: &Ctx<'_>,
    t: &Target,
    f: Found,
    code: &Ready,
    phases: &mut Phases,
    changed: &mut Vec<String>,
) -> Result<(String, &'static str, Status)> {
    let name = t.name.as_str();
    let image = matches!(code, Ready::Image { .. });
    let arn = f.config.function_arn().unwrap_or(name).to_owned();
    let mut status = status_of!(&f.config);
    if wait::settled(&status, name, &ctx.region).is_none() {
        (ctx.log)(format!(
            "function {name}: waiting for an update in progress"
        ));
        status = ctx.settle(name, phases).await?;
    }
    // Lambda changes a function's instruction set with its code (`Architectures` of
    // UpdateFunctionCode), so code built for the other one is sent with it.
    let arch = code.platform().lambda_name();
    let moved = f
        .config
        .architectures()
        .first()
        .map(|a| a.as_str())
        .filter(|have| *have != arch);
    if !same_code(&f, code) || moved.is_some() {
        let started = Instant::now();
        let mut req = ctx.client.update_function_code().function_name(name);
        if let Some(have) = moved {
            (ctx.log)(format!(
                "function {name}: architecture {have} -> {arch} ({})",
                code.platform()
            ));
            req = req.architectures(Architecture::from(arch));
            changed.push("Architectures".to_owned());
        }
        let req = match code {
            Ready::Image { uri, .. } => req.image_uri(uri),
            Ready::Zip { via, .. } => match via {
                ZipVia::Direct(b) => req.zip_file(b.clone()),
                ZipVia::S3 { bucket, key } => req.s3_bucket(bucket).s3_key(key),
                ZipVia::Unsent => {
                    return Err(Error::Internal(format!(
                        "the .zip for function {name} was not prepared for sending"
                    )));
                }
            },
        };
        req.send()
            .await
            .map_err(|e| ctx.err("UpdateFunctionCode", name, e))?;
        phases.insert("code".into(), secs(started));
        (ctx.log)(format!(
            "function {name}: code updated to {}",
            code.identity()
        ));
        changed.push("Code".to_owned());
        status = ctx.settle(name, phases).await?;
    }
    let ch = config::diff(&t.config, &f.config, image);
    if !ch.fields.is_empty() {
        let started = Instant::now();
        let req = ctx
            .client
            .update_function_configuration()
            .function_name(name);
        apply_changes!(req, &ch)
            .send()
            .await
            .map_err(|e| ctx.err("UpdateFunctionConfiguration", name, e))?;
        phases.insert("config".into(), secs(started));
        (ctx.log)(format!(
            "function {name}: configuration updated ({})",
            ch.fields.join(", ")
        ));
        changed.extend(ch.fields.iter().map(|s| (*s).to_owned()));
        status = ctx.settle(name, phases).await?;
    }
    let outcome = if changed.is_empty() {
        "unchanged"
    } else {
        "updated"
    };
    Ok((arn, outcome, status))
}

/// PublishVersion (pinned to the CodeSha256 just waited for) and create or move the alias.
async fn publish(
    ctx: &Ctx<'_>,
    name: &str,
    status: &mut Status,
    report: &mut FunctionReport,
) -> Result<()> {
    let started = Instant::now();
    let out = ctx
        .client
        .publish_version()
        .function_name(name)
        .set_code_sha256(status.code_sha256.clone())
        .send()
        .await
        .map_err(|e| ctx.err("PublishVersion", name, e))?;
    let version = out.version().unwrap_or("$LATEST").to_owned();
    report.phases.insert("publish".into(), secs(started));
    (ctx.log)(format!("function {name}: version {version}"));
    *status = ctx.settle(name, &mut report.phases).await?;
    report.version = Some(version.clone());
    let Some(alias) = &ctx.plan.alias else {
        return Ok(());
    };
    let started = Instant::now();
    let current = match ctx
        .client
        .get_alias()
        .function_name(name)
        .name(alias)
        .send()
        .await
    {
        Ok(a) => Some(a.function_version().unwrap_or_default().to_owned()),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_not_found_exception()) =>
        {
            None
        }
        Err(e) => return Err(ctx.err("GetAlias", name, e)),
    };
    match current {
        None => {
            ctx.client
                .create_alias()
                .function_name(name)
                .name(alias)
                .function_version(&version)
                .send()
                .await
                .map_err(|e| ctx.err("CreateAlias", name, e))?;
            (ctx.log)(format!(
                "function {name}: alias {alias} created at {version}"
            ));
        }
        Some(v) if v != version => {
            ctx.client
                .update_alias()
                .function_name(name)
                .name(alias)
                .function_version(&version)
                .send()
                .await
                .map_err(|e| ctx.err("UpdateAlias", name, e))?;
            (ctx.log)(format!(
                "function {name}: alias {alias} moved from {v} to {version}"
            ));
        }
        Some(_) => (ctx.log)(format!(
            "function {name}: alias {alias} already at {version}"
        )),
    }
    report.phases.insert("alias".into(), secs(started));
    report.alias = Some(alias.clone());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_of_arns() {
        assert_eq!(
            arn_account("arn:aws:iam::123456789012:role/r"),
            Some("123456789012")
        );
        assert_eq!(
            arn_account("arn:aws:lambda:us-east-1:123456789012:function:f"),
            Some("123456789012")
        );
        assert_eq!(arn_account("my-function"), None);
    }
}
