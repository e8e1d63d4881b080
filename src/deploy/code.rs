//! The code a deploy sends: an image in ECR pinned by digest (built and pushed by the one build
//! code path, or named with `--image`), or a .zip package (written from the spec, or named with
//! `--zip`) sent directly or through S3.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use base64::Engine;
use serde::Serialize;
use sha2::Digest as _;

use super::aws::api_error;
use super::{Code, Phases, Plan};
use crate::error::{Error, IoContext, Result};
use crate::platform::Platform;
use crate::reference::{ImageRef, RegistryRef};
use crate::registry::Options;
use crate::registry::ecr::{self, EcrRegistry};
use crate::registry::push::BlobFate;

/// Lambda's limit on a .zip sent in the request itself (`ZipFile`): 50 MB zipped. Above it
/// the package goes through S3.
pub const DIRECT_UPLOAD_LIMIT: u64 = 50 * 1024 * 1024;

/// The code, ready to be sent.
#[derive(Clone, Debug)]
pub enum Ready {
    /// An image in ECR: `ImageUri` is `repo@sha256:...`.
    Image {
        /// `REGISTRY/REPOSITORY@sha256:...`.
        uri: String,
        /// Its platform.
        platform: Platform,
    },
    /// A .zip package.
    Zip {
        /// Base64 SHA-256 of the zip: Lambda's `CodeSha256`.
        code_sha256: String,
        /// Its platform (the function's architecture).
        platform: Platform,
        /// The zip's bytes (direct upload) or where S3 holds it.
        via: ZipVia,
    },
}

/// How a .zip reaches Lambda.
#[derive(Clone, Debug)]
pub enum ZipVia {
    /// `ZipFile`: the bytes in the request.
    Direct(aws_sdk_lambda::primitives::Blob),
    /// Not sent: every function already runs this code.
    Unsent,
    /// `S3Bucket` / `S3Key`.
    S3 {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
    },
}

impl Ready {
    /// What identifies the code: the pinned image URI, or the zip's `CodeSha256`.
    pub fn identity(&self) -> &str {
        match self {
            Ready::Image { uri, .. } => uri,
            Ready::Zip { code_sha256, .. } => code_sha256,
        }
    }

    /// The platform the code runs on.
    pub fn platform(&self) -> Platform {
        match self {
            Ready::Image { platform, .. } | Ready::Zip { platform, .. } => *platform,
        }
    }
}

/// What `--json` says about the code.
#[derive(Serialize, Clone, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct CodeReport {
    /// `image` or `zip`.
    pub package: String,
    /// The pinned image URI (images).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_uri: Option<String>,
    /// The manifest digest (images).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// `CodeSha256` (zips).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code_sha256: Option<String>,
    /// Bytes of the zip (zips).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Lambda's architecture name.
    pub architecture: String,
    /// What happened to each blob of a pushed image (each blob once).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blobs: Option<Vec<BlobFate>>,
    /// `s3://BUCKET/KEY` of a zip sent through S3.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3: Option<String>,
    /// Whether that object was uploaded now (false: it was already there).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3_uploaded: Option<bool>,
    /// Seconds spent in each phase (build, push, package, upload).
    pub phases: Phases,
}

/// The ECR registry and repository of an image deploy's destination; anything else is a usage
/// error naming it.
pub fn ecr_destination(r: &ImageRef, what: &str) -> Result<(EcrRegistry, RegistryRef)> {
    let ImageRef::Docker(rr) = r else {
        return Err(Error::usage(format!(
            "{what} {r}: an image deploy needs an ECR repository (docker://ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPO[:TAG])"
        )));
    };
    let e = ecr::parse_host(&rr.registry).ok_or_else(|| {
        Error::usage(format!(
            "{what} {r}: Lambda runs images from Amazon ECR only, and {} is not an ECR registry (ACCOUNT.dkr.ecr.REGION.amazonaws.com)",
            rr.registry
        ))
    })?;
    Ok((e, rr.clone()))
}

/// A platform from the `os/arch[/variant]` string of a report.
fn platform_of(s: &str, r: &ImageRef) -> Result<Platform> {
    s.parse::<Platform>().map_err(|_| {
        Error::image(
            r,
            format!("is built for {s}, which Lambda does not run (linux/amd64 or linux/arm64)"),
        )
    })
}

/// An image already in ECR (`--image`): its digest and platform read from the registry, the
/// Lambda gate run on it unless `lambda_check` is off.
pub async fn resolve_image(
    r: &ImageRef,
    platform: Option<Platform>,
    lambda_check: bool,
    opts: &Options,
    log: &(dyn Fn(String) + Sync),
) -> Result<(Ready, CodeReport)> {
    let started = Instant::now();
    let (_, rr) = ecr_destination(r, "--image")?;
    let inspected = crate::build::inspect(r, platform, opts).await?;
    let platform = platform_of(&inspected.report.platform, r)?;
    if lambda_check {
        let checked = crate::lambda::check(r, Some(platform), opts).await?;
        crate::lambda::gate(&checked, r, &mut |s| log(s))?;
    }
    let digest = inspected.report.digest.to_string();
    let uri = format!("{}/{}@{digest}", rr.registry, rr.repository);
    log(format!("image {uri} ({platform})"));
    let report = CodeReport {
        package: "image".into(),
        image_uri: Some(uri.clone()),
        digest: Some(digest),
        architecture: platform.lambda_name().into(),
        phases: [("resolve".to_owned(), secs(started))].into(),
        ..Default::default()
    };
    Ok((Ready::Image { uri, platform }, report))
}

/// Build the spec and push it to its ECR destination through [`crate::build::build`] (layer
/// cache, Lambda gate before the push, each blob uploaded once).
pub async fn build_image(
    spec: &crate::spec::BuildSpec,
    opts: &Options,
    log: &(dyn Fn(String) + Sync),
) -> Result<(Ready, CodeReport)> {
    let started = Instant::now();
    let (_, rr) = ecr_destination(&spec.to, "`to`")?;
    let built = crate::build::build(spec, opts, &mut |s| log(s)).await?;
    let digest = built.digest.to_string();
    let uri = format!("{}/{}@{digest}", rr.registry, rr.repository);
    log(format!("pushed {uri} ({})", spec.platform));
    let report = CodeReport {
        package: "image".into(),
        image_uri: Some(uri.clone()),
        digest: Some(digest),
        architecture: spec.platform.lambda_name().into(),
        blobs: built.blobs,
        phases: [("build".to_owned(), secs(started))].into(),
        ..Default::default()
    };
    Ok((
        Ready::Image {
            uri,
            platform: spec.platform,
        },
        report,
    ))
}

/// A zip's SHA-256, read in chunks: (hex, base64).
fn hash_file(path: &Path) -> Result<(String, String, u64)> {
    let mut f = crate::image::blob::open_regular(path).at("reading the .zip", path)?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).at("reading the .zip", path)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
    let sum = h.finalize();
    Ok((
        hex::encode(sum),
        base64::engine::general_purpose::STANDARD.encode(sum),
        size,
    ))
}

/// Seconds since `t`, to the millisecond.
pub fn secs(t: Instant) -> f64 {
    (t.elapsed().as_secs_f64() * 1000.0).round() / 1000.0
}

/// The .zip of a zip deploy: written from the spec's layers into `dir`, or the file given.
pub async fn zip_file(plan: &Plan, dir: &Path) -> Result<(PathBuf, Platform, Phases)> {
    let started = Instant::now();
    match &plan.code {
        Code::Zip { path, platform } => Ok((path.clone(), *platform, Phases::new())),
        Code::BuildZip(spec) => {
            use crate::lambda::package;
            let to = dir.join("function.zip");
            let platform = spec.platform;
            let (spec, to2) = (spec.clone(), to.clone());
            crate::task::blocking("writing the .zip", move || {
                let contents = package::from_layers_excluding(
                    &spec.zip_layers,
                    package::Package::Function,
                    spec.fix_permissions,
                    &[&to2],
                )?;
                let opts = package::ZipOptions {
                    mtime: spec.timestamp,
                    compression_level: spec.compression_level,
                    with_layers: Vec::new(),
                };
                package::write(contents, &to2, &opts)
            })
            .await?;
            Ok((to, platform, [("package".to_owned(), secs(started))].into()))
        }
        _ => Err(Error::Internal(
            "zip_file called for an image deploy".into(),
        )),
    }
}

/// A zip's SHA-256 as (hex, base64: Lambda's `CodeSha256`) and its size, read on the
/// blocking pool.
pub async fn hash(path: &Path) -> Result<(String, String, u64)> {
    let p = path.to_owned();
    crate::task::blocking("hashing the .zip", move || hash_file(&p)).await
}

/// How a zip of `size` bytes whose SHA-256 is `hex` reaches Lambda: its bytes in the request
/// (up to [`DIRECT_UPLOAD_LIMIT`]) or, with an S3 bucket, an S3 object put once (an object
/// already holding these bytes under the same key is not sent again). With S3, also
/// `s3://BUCKET/KEY` and whether it was uploaded now.
pub async fn zip_via(
    path: &Path,
    (hex, size): (&str, u64),
    plan: &Plan,
    conf: &aws_config::SdkConfig,
    log: &(dyn Fn(String) + Sync),
) -> Result<(ZipVia, Option<(String, bool)>)> {
    match &plan.s3_bucket {
        None if size > DIRECT_UPLOAD_LIMIT => Err(Error::usage(format!(
            "{}: the .zip is {size} bytes, over Lambda's direct upload limit of {DIRECT_UPLOAD_LIMIT} bytes (50 MB); name an S3 bucket to upload it through (--s3-bucket or [deploy] s3_bucket)",
            path.display()
        ))),
        None => {
            let bytes = std::fs::read(path).at("reading the .zip", path)?;
            Ok((
                ZipVia::Direct(aws_sdk_lambda::primitives::Blob::new(bytes)),
                None,
            ))
        }
        Some(bucket) => {
            let key = format!("lamina/{hex}.zip");
            let uploaded = put_once(conf, plan.s3_path_style, bucket, &key, path, size).await?;
            let url = format!("s3://{bucket}/{key}");
            log(format!(
                "{url}: {}",
                if uploaded {
                    "uploaded"
                } else {
                    "already there"
                }
            ));
            let via = ZipVia::S3 {
                bucket: bucket.clone(),
                key,
            };
            Ok((via, Some((url, uploaded))))
        }
    }
}

/// Hash the zip and make it sendable (see [`zip_via`]); not read or uploaded at all when no
/// function `needs` it (they all run this `CodeSha256`).
pub async fn ready_zip(
    path: &Path,
    platform: Platform,
    mut phases: Phases,
    (plan, needs): (&Plan, &dyn Fn(&str) -> bool),
    conf: &aws_config::SdkConfig,
    log: &(dyn Fn(String) + Sync),
) -> Result<(Ready, CodeReport)> {
    let (hex, code_sha256, size) = hash(path).await?;
    let mut report = CodeReport {
        package: "zip".into(),
        code_sha256: Some(code_sha256.clone()),
        size: Some(size),
        architecture: platform.lambda_name().into(),
        ..Default::default()
    };
    let via = if needs(&code_sha256) {
        let started = Instant::now();
        let (via, s3) = zip_via(path, (&hex, size), plan, conf, log).await?;
        if let Some((url, uploaded)) = s3 {
            phases.insert("upload".into(), secs(started));
            report.s3 = Some(url);
            report.s3_uploaded = Some(uploaded);
        }
        via
    } else {
        ZipVia::Unsent
    };
    report.phases = phases;
    Ok((
        Ready::Zip {
            code_sha256,
            platform,
            via,
        },
        report,
    ))
}

/// Put `path` at `s3://bucket/key` unless an object of the same size is there (the key names
/// the content's SHA-256). Returns whether it was uploaded.
async fn put_once(
    conf: &aws_config::SdkConfig,
    path_style: bool,
    bucket: &str,
    key: &str,
    path: &Path,
    size: u64,
) -> Result<bool> {
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(conf)
            .force_path_style(path_style)
            .build(),
    );
    let endpoint = format!(
        "s3.{}.amazonaws.com",
        conf.region().map_or("", |r| r.as_ref())
    );
    let subject = format!("s3://{bucket}/{key}");
    match s3.head_object().bucket(bucket).key(key).send().await {
        Ok(h) if h.content_length() == i64::try_from(size).ok() => return Ok(false),
        Ok(_) => {}
        Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => {}
        Err(e) => return Err(api_error("S3 HeadObject", &subject, &endpoint, e)),
    }
    let body = aws_sdk_s3::primitives::ByteStream::from_path(path)
        .await
        .map_err(|e| Error::Io {
            context: format!("reading {}", path.display()),
            cause: std::io::Error::other(e),
        })?;
    s3.put_object()
        .bucket(bucket)
        .key(key)
        .body(body)
        .send()
        .await
        .map_err(|e| api_error("S3 PutObject", &subject, &endpoint, e))?;
    Ok(true)
}
