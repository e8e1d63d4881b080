//! Publishing the spec's Lambda layers (`[function] layers`) for a .zip deploy: each layer's
//! zip (the .zip file as it is, or a directory packaged as a layer zip) is hashed, and a new
//! version is published only when the layer's latest version holds other bytes; otherwise that
//! version's ARN is used as it is.

use std::path::{Path, PathBuf};
use std::time::Instant;

use aws_sdk_lambda::types::{Architecture, LayerVersionContentInput, Runtime};
use serde::Serialize;

use super::Plan;
use super::aws::{api_error, lambda_endpoint};
use super::code::{self, ZipVia, secs};
use crate::error::{Error, Result};
use crate::platform::Platform;

/// One Lambda layer of the spec.
#[derive(Clone, Debug)]
pub struct LayerSource {
    /// The layer's name in Lambda.
    pub name: String,
    /// A .zip file, or a directory whose files go under /opt.
    pub path: PathBuf,
}

impl LayerSource {
    /// A layer named after its file or directory (`deps.zip` → `deps`), with the characters
    /// Lambda refuses in a layer name replaced by `-`.
    pub fn named_after(path: PathBuf) -> LayerSource {
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "layer".into());
        let name: String = stem
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '-'
                }
            })
            .take(64)
            .collect();
        LayerSource { name, path }
    }
}

/// What happened to one layer, as `--json` prints it.
#[derive(Serialize, Clone, Debug)]
#[serde(rename_all = "camelCase")]
pub struct LayerReport {
    /// The layer's name.
    pub name: String,
    /// The layer version's ARN the functions use.
    pub arn: String,
    /// Base64 SHA-256 of its zip.
    pub code_sha256: String,
    /// Whether a version was published now (false: the latest one holds these bytes).
    pub published: bool,
    /// Seconds spent on it.
    pub seconds: f64,
}

/// The zip of a layer: the file itself, or the directory packaged into `dir`.
async fn layer_zip(l: &LayerSource, dir: &Path) -> Result<PathBuf> {
    if !l.path.is_dir() {
        return Ok(l.path.clone());
    }
    use crate::lambda::package;
    let to = dir.join(format!("layer-{}.zip", l.name));
    let (src, to2) = (l.path.clone(), to.clone());
    crate::task::blocking("writing a layer .zip", move || {
        let contents = package::from_layers_excluding(
            &[crate::spec::flags::plain_layer(src, "/opt")],
            package::Package::Layer,
            false,
            &[&to2],
        )?;
        let opts = package::ZipOptions {
            mtime: 0,
            compression_level: crate::spec::DEFAULT_COMPRESSION_LEVEL,
            with_layers: Vec::new(),
        };
        package::write(contents, &to2, &opts)
    })
    .await?;
    Ok(to)
}

/// The latest version of layer `name`: (ARN, CodeSha256), or `None` when it has none.
async fn latest(
    client: &aws_sdk_lambda::Client,
    name: &str,
    region: &str,
) -> Result<Option<(String, String)>> {
    let err =
        |what: &str, e| api_error(what, &format!("layer {name}"), &lambda_endpoint(region), e);
    let out = match client.list_layer_versions().layer_name(name).send().await {
        Ok(o) => o,
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_not_found_exception()) =>
        {
            return Ok(None);
        }
        Err(e) => {
            return Err(api_error(
                "Lambda ListLayerVersions",
                &format!("layer {name}"),
                &lambda_endpoint(region),
                e,
            ));
        }
    };
    let Some(v) = out.layer_versions().iter().max_by_key(|v| v.version()) else {
        return Ok(None);
    };
    let got = client
        .get_layer_version()
        .layer_name(name)
        .version_number(v.version())
        .send()
        .await
        .map_err(|e| err("Lambda GetLayerVersion", e))?;
    let sha = got
        .content()
        .and_then(|c| c.code_sha256())
        .unwrap_or_default();
    Ok(got
        .layer_version_arn()
        .map(|arn| (arn.to_owned(), sha.to_owned())))
}

/// Publish each of `plan`'s layers whose zip changed; the ARNs to attach, in order.
pub async fn publish(
    client: &aws_sdk_lambda::Client,
    region: &str,
    (plan, platform, dir): (&Plan, Platform, &Path),
    conf: &aws_config::SdkConfig,
    log: &(dyn Fn(String) + Sync),
) -> Result<Vec<LayerReport>> {
    let mut reports = Vec::new();
    for l in &plan.layers {
        let started = Instant::now();
        let zip = layer_zip(l, dir).await?;
        let (hex, sha, size) = code::hash(&zip).await?;
        if let Some((arn, have)) = latest(client, &l.name, region).await?
            && have == sha
        {
            log(format!("layer {}: unchanged ({arn})", l.name));
            reports.push(LayerReport {
                name: l.name.clone(),
                arn,
                code_sha256: sha,
                published: false,
                seconds: secs(started),
            });
            continue;
        }
        let (via, _) = code::zip_via(&zip, (&hex, size), plan, conf, log).await?;
        let content = match via {
            ZipVia::Direct(b) => LayerVersionContentInput::builder().zip_file(b),
            ZipVia::S3 { bucket, key } => LayerVersionContentInput::builder()
                .s3_bucket(bucket)
                .s3_key(key),
            ZipVia::Unsent => LayerVersionContentInput::builder(),
        }
        .build();
        let runtime = plan.functions.iter().find_map(|t| t.config.runtime.clone());
        let out = client
            .publish_layer_version()
            .layer_name(&l.name)
            .content(content)
            .compatible_architectures(Architecture::from(platform.lambda_name()))
            .set_compatible_runtimes(runtime.map(|r| vec![Runtime::from(r.as_str())]))
            .send()
            .await
            .map_err(|e| {
                api_error(
                    "Lambda PublishLayerVersion",
                    &format!("layer {}", l.name),
                    &lambda_endpoint(region),
                    e,
                )
            })?;
        let arn = out.layer_version_arn().map(str::to_owned).ok_or_else(|| {
            Error::registry(
                lambda_endpoint(region),
                format!(
                    "Lambda PublishLayerVersion for layer {} returned no ARN",
                    l.name
                ),
            )
        })?;
        log(format!("layer {}: published {arn}", l.name));
        reports.push(LayerReport {
            name: l.name.clone(),
            arn,
            code_sha256: sha,
            published: true,
            seconds: secs(started),
        });
    }
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_names_are_what_lambda_takes() {
        assert_eq!(LayerSource::named_after("a/deps.zip".into()).name, "deps");
        assert_eq!(
            LayerSource::named_after("my layer.v2".into()).name,
            "my-layer"
        );
        assert_eq!(LayerSource::named_after("x/py_libs".into()).name, "py_libs");
    }
}
