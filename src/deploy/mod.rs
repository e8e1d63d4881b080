//! `lamina deploy`: from the spec to Lambda functions running the new code. The code is built
//! (and pushed to ECR, by digest) or packaged once, whatever the number of functions; each
//! function is then created, or updated only where it differs (code identity and each
//! configuration field compared with `GetFunction`), waiting after every write until Lambda
//! has settled, with bounded parallelism across functions.
//!
//! Every check that can refuse a deploy (package type, role, ECR account and region, the
//! Lambda gate) runs before anything is pushed or changed.

mod aws;
mod code;
mod config;
mod function;
mod layers;
mod wait;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures_util::{StreamExt, TryStreamExt};
use serde::Serialize;

pub use code::{CodeReport, DIRECT_UPLOAD_LIMIT};
pub use config::FunctionConfig;
pub use function::FunctionReport;
pub use layers::{LayerReport, LayerSource};

use crate::error::{Error, Result};
use crate::platform::Platform;
use crate::reference::ImageRef;
use crate::registry::Options;
use crate::spec::BuildSpec;

/// Seconds spent in each phase, by name.
pub type Phases = BTreeMap<String, f64>;

/// The code to deploy.
#[derive(Clone, Debug)]
pub enum Code {
    /// Build the spec and push the image to its `to`, an ECR repository.
    BuildImage(Box<BuildSpec>),
    /// An image already in ECR (`--image`), for `platform` if it names an index.
    Image {
        /// The image (`docker://ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPO[:TAG|@DIGEST]`).
        reference: ImageRef,
        /// The platform to pick from an index.
        platform: Option<Platform>,
    },
    /// Write the spec's files as a .zip deployment package.
    BuildZip(Box<BuildSpec>),
    /// A .zip already written (`--zip`), for `platform`.
    Zip {
        /// The file.
        path: PathBuf,
        /// The architecture the function runs on.
        platform: Platform,
    },
}

/// One function to deploy.
#[derive(Clone, Debug)]
pub struct Target {
    /// Its name or ARN.
    pub name: String,
    /// Its wanted configuration.
    pub config: FunctionConfig,
}

/// A whole deploy.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The code, shared by every function.
    pub code: Code,
    /// The functions, in the order they are reported.
    pub functions: Vec<Target>,
    /// S3 bucket for .zip packages (else direct upload, up to [`DIRECT_UPLOAD_LIMIT`]).
    pub s3_bucket: Option<String>,
    /// Address S3 buckets by path (`https://HOST/BUCKET/KEY`), as stand-ins on a custom
    /// endpoint need.
    pub s3_path_style: bool,
    /// Publish a version after the update (`--publish`).
    pub publish: bool,
    /// Create or move this alias to the version published (implies publishing).
    pub alias: Option<String>,
    /// How long to wait for each function to settle after a write.
    pub wait_timeout: Duration,
    /// Functions deployed at once.
    pub jobs: usize,
    /// Run the Lambda gate on an `--image` before deploying it (a build runs it before its push).
    pub lambda_check: bool,
    /// Lambda layers to publish (when their zip changed) and attach before the functions'
    /// own layer ARNs: .zip deploys only.
    pub layers: Vec<LayerSource>,
}

/// What a deploy did, as `--json` prints it.
#[derive(Serialize, Clone, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// The code sent.
    pub code: CodeReport,
    /// Each function, in the plan's order.
    pub functions: Vec<FunctionReport>,
    /// The Lambda layers published or found unchanged.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<LayerReport>,
    /// Seconds for the whole deploy.
    pub seconds: f64,
}

/// Deploy `plan`: look up every function, refuse what cannot succeed, build or package the
/// code once, then create or update the functions (at most `plan.jobs` at once), each
/// waited for until it has settled. Progress lines go to `log`.
pub async fn deploy(plan: &Plan, opts: &Options, log: &(dyn Fn(String) + Sync)) -> Result<Report> {
    let started = Instant::now();
    if plan.functions.is_empty() {
        return Err(Error::usage(
            "no function to deploy: set [deploy] function_name (or [[deploy.functions]]) in lamina.toml, or pass --function-name",
        ));
    }
    let conf = aws::config(opts.ecr.profile.as_deref()).await?;
    let client = aws_sdk_lambda::Client::new(&conf);
    let ctx = function::Ctx {
        client: &client,
        region: conf.region().map(|r| r.to_string()).unwrap_or_default(),
        plan,
        log,
    };
    let jobs = plan.jobs.max(1);
    let lookup_started = Instant::now();
    let found: Vec<Option<function::Found>> = futures_util::stream::iter(
        plan.functions
            .iter()
            .map(|t| function::lookup(&ctx, &t.name)),
    )
    .buffered(jobs)
    .try_collect()
    .await?;
    let lookup = code::secs(lookup_started);

    let resolved = check(&ctx, opts, &found).await?;
    let mut targets = plan.functions.clone();
    let (ready, code_report, layers, _zip_dir) = match (&plan.code, resolved) {
        (_, Some((ready, report))) => (ready, report, Vec::new(), None),
        (Code::BuildImage(spec), None) => {
            let (ready, report) = code::build_image(spec, opts, log).await?;
            (ready, report, Vec::new(), None)
        }
        _ => {
            let (ready, report, layers, dir) =
                zip_code(&ctx, (opts, &conf), &found, &mut targets).await?;
            (ready, report, layers, Some(dir))
        }
    };

    let mut functions: Vec<FunctionReport> = futures_util::stream::iter(
        targets
            .iter()
            .zip(found)
            .map(|(t, f)| function::apply(&ctx, t, f, &ready)),
    )
    .buffered(jobs)
    .try_collect()
    .await?;
    for f in &mut functions {
        f.phases.insert("lookup".into(), lookup);
    }
    Ok(Report {
        code: code_report,
        functions,
        layers,
        seconds: code::secs(started),
    })
}

/// Refuse what cannot succeed (see [`function::guard`]) before anything is pushed or changed;
/// an `--image` is read first (its platform is what the functions are checked against) and
/// returned ready to send.
async fn check(
    ctx: &function::Ctx<'_>,
    opts: &Options,
    found: &[Option<function::Found>],
) -> Result<Option<(code::Ready, CodeReport)>> {
    let plan = ctx.plan;
    let mut resolved = None;
    if let Code::Image {
        reference,
        platform,
    } = &plan.code
    {
        resolved = Some(
            code::resolve_image(reference, *platform, plan.lambda_check, opts, ctx.log).await?,
        );
    }
    let (image, ecr) = match &plan.code {
        Code::BuildImage(spec) => (true, Some(code::ecr_destination(&spec.to, "`to`")?.0)),
        Code::Image { reference, .. } => {
            (true, Some(code::ecr_destination(reference, "--image")?.0))
        }
        Code::BuildZip(_) | Code::Zip { .. } => (false, None),
    };
    if image && !plan.layers.is_empty() {
        return Err(Error::usage(
            "Lambda layers are published for .zip functions only: an image holds its layers' files itself ([function] layers are built into /opt)",
        ));
    }
    for (t, f) in plan.functions.iter().zip(found) {
        function::guard(ctx, t, f.as_ref(), image, ecr.as_ref())?;
    }
    Ok(resolved)
}

/// The .zip code of a deploy, ready to send (not uploaded when every function already runs
/// it), with the plan's Lambda layers published and put first in each of `targets`' layers.
/// The staging directory holding the zips is returned: it must outlive the upload.
async fn zip_code(
    ctx: &function::Ctx<'_>,
    (opts, conf): (&Options, &aws_config::SdkConfig),
    found: &[Option<function::Found>],
    targets: &mut [Target],
) -> Result<(
    code::Ready,
    CodeReport,
    Vec<LayerReport>,
    crate::staging::Dir,
)> {
    let plan = ctx.plan;
    // Removed on drop, and on SIGINT/SIGTERM by the staging module.
    let dir =
        crate::staging::dir_in(ensure_dir(&opts.cache_dir)?, "deploy-").map_err(|e| Error::Io {
            context: format!("creating a directory in {}", opts.cache_dir.display()),
            cause: e,
        })?;
    let (path, platform, phases) = code::zip_file(plan, dir.path()).await?;
    let mut layers = Vec::new();
    if !plan.layers.is_empty() {
        layers = layers::publish(
            ctx.client,
            &ctx.region,
            (plan, platform, dir.path()),
            conf,
            ctx.log,
        )
        .await?;
        for t in targets.iter_mut() {
            let mut arns: Vec<String> = layers.iter().map(|l| l.arn.clone()).collect();
            arns.extend(t.config.layers.take().unwrap_or_default());
            t.config.layers = Some(arns);
        }
    }
    let needs = |sha: &str| {
        found.iter().any(|f| {
            f.as_ref()
                .is_none_or(|f| f.config.code_sha256() != Some(sha))
        })
    };
    let (ready, report) =
        code::ready_zip(&path, platform, phases, (plan, &needs), conf, ctx.log).await?;
    Ok((ready, report, layers, dir))
}

/// `dir`, created if missing.
fn ensure_dir(dir: &std::path::Path) -> Result<&std::path::Path> {
    std::fs::create_dir_all(dir).map_err(|e| Error::Io {
        context: format!("creating {}", dir.display()),
        cause: e,
    })?;
    Ok(dir)
}
