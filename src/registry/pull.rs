//! Pulling: manifests (following an index to one platform) and blobs, streamed into the local
//! cache and verified before they become visible there.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::StreamExt;
use oci_spec::image::{Descriptor, ImageManifest, MediaType};
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt;

use super::scope::Scopes;
use super::timing::{Activity, Expired};
use super::{Client, MANIFEST_ACCEPT, MANIFEST_CAP, show_cap};
use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::reference::RegistryRef;

/// Save small bytes into the cache under their digest.
pub(crate) fn store(blobs: &Path, digest: &Digest, bytes: &[u8]) -> Result<()> {
    let path = blobs.join(digest.hex());
    if path.is_file() {
        return Ok(());
    }
    std::fs::create_dir_all(blobs).at("creating", blobs)?;
    let tmp = crate::staging::file_in(blobs, ".pull-").at("creating a temporary file in", blobs)?;
    std::fs::write(tmp.path(), bytes).at("writing", tmp.path())?;
    tmp.persist(&path).at("saving", &path)?;
    Ok(())
}

/// GET a manifest (or index) by tag or digest: its bytes, media type and digest.
pub async fn get_manifest(
    client: &Client,
    r: &RegistryRef,
    reference: &str,
) -> Result<(Vec<u8>, MediaType, Digest)> {
    let url = client.url(&format!("/v2/{}/manifests/{reference}", r.repository));
    let resp = client
        .send(&Scopes::pull(&r.repository), true, &|http| {
            Ok(http.get(url.clone()).header(ACCEPT, MANIFEST_ACCEPT))
        })
        .await?;
    if resp.status() == StatusCode::NOT_FOUND {
        return Err(Error::image(
            format!("docker://{r}"),
            format!(
                "not found in {} (no manifest `{reference}` in {})",
                client.registry(),
                r.repository
            ),
        ));
    }
    if !resp.status().is_success() {
        return Err(client
            .unexpected(
                &format!("fetching manifest {reference} of {}", r.repository),
                resp,
            )
            .await);
    }
    // Capped while read, not after: a registry sending an endless body must not fill memory.
    let too_large = || {
        Error::image(
            format!("docker://{r}"),
            format!(
                "registry {} sent a manifest `{reference}` larger than {}, the most lamina reads of a manifest or index",
                client.registry(),
                show_cap(MANIFEST_CAP)
            ),
        )
    };
    if resp
        .content_length()
        .is_some_and(|l| l > MANIFEST_CAP as u64)
    {
        return Err(too_large());
    }
    let ct = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.split(';').next().unwrap_or(s).trim().to_owned());
    let body = client
        .read_capped(
            resp,
            MANIFEST_CAP,
            &format!("reading manifest {reference} of {}", r.repository),
        )
        .await?;
    if body.over {
        return Err(too_large());
    }
    let bytes = body.bytes;
    let digest = Digest::of(&bytes);
    if let Ok(want) = reference.parse::<Digest>()
        && want != digest
    {
        return Err(Error::image(
            format!("docker://{r}"),
            format!("the registry sent a manifest whose digest is {digest}, not {want}"),
        ));
    }
    // The document's own mediaType wins over a vague Content-Type.
    let declared = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| {
            v.get("mediaType")
                .and_then(|m| m.as_str())
                .map(str::to_owned)
        });
    let mt = declared
        .or(ct)
        .ok_or_else(|| Error::image(format!("docker://{r}"), "the manifest has no media type"))?;
    Ok((bytes, MediaType::from(mt.as_str()), digest))
}

/// Fetch the config and (with `layers`) the layers of a stored manifest into the cache.
pub async fn fetch_blobs(
    client: Arc<Client>,
    r: &RegistryRef,
    desc: &Descriptor,
    blobs: &Path,
    layers: bool,
) -> Result<()> {
    let shown = format!("docker://{r}");
    let digest = Digest::from_oci(desc.digest()).map_err(|e| Error::image(&shown, e))?;
    let bytes = std::fs::read(blobs.join(digest.hex())).at("reading", &blobs.join(digest.hex()))?;
    let m = ImageManifest::from_reader(&bytes[..])
        .map_err(|e| Error::image(&shown, format!("manifest {digest} is not valid: {e}")))?;
    // A config is read into memory later (capped at 8 MiB there): do not download more.
    const CONFIG_CAP: u64 = 8 << 20;
    if m.config().size() > CONFIG_CAP {
        return Err(Error::image(
            &shown,
            format!(
                "manifest {digest} names a config of {} bytes: more than 8 MiB is not a plausible config, not downloaded",
                m.config().size()
            ),
        ));
    }
    let mut wanted = vec![m.config().clone()];
    if layers {
        wanted.extend(m.layers().iter().cloned());
    }
    let mut tasks = Vec::new();
    for d in wanted {
        let digest = Digest::from_oci(d.digest()).map_err(|e| Error::image(&shown, e))?;
        let (client, blobs, repo) = (client.clone(), blobs.to_owned(), r.repository.clone());
        tasks.push(async move { fetch_blob(&client, &repo, &digest, d.size(), &blobs).await });
    }
    super::bounded(client.opts.jobs, tasks).await.map(|_| ())
}

/// Stream one blob into the cache: hashed while written, renamed into place only when its
/// digest and size match. Already-cached blobs are not fetched again.
pub async fn fetch_blob(
    client: &Client,
    repo: &str,
    digest: &Digest,
    size: u64,
    blobs: &Path,
) -> Result<PathBuf> {
    let path = blobs.join(digest.hex());
    let bar = client.opts.progress.blob("pull", &digest.to_string(), size);
    if std::fs::metadata(&path).is_ok_and(|m| m.len() == size) {
        bar.finish("cached");
        return Ok(path);
    }
    std::fs::create_dir_all(blobs).at("creating", blobs)?;
    let url = client.url(&format!("/v2/{repo}/blobs/{digest}"));
    let scope = Scopes::pull(repo);
    let mut attempt = 0;
    loop {
        bar.reset();
        let tmp =
            crate::staging::file_in(blobs, ".pull-").at("creating a temporary file in", blobs)?;
        let resp = client
            .send(&scope, true, &|http| Ok(http.get(url.clone())))
            .await?;
        if !resp.status().is_success() {
            return Err(client
                .unexpected(&format!("fetching blob {digest} of {repo}"), resp)
                .await);
        }
        let mut file = tokio::fs::File::from_std(tmp.reopen().at("opening", tmp.path())?);
        let mut hasher = Sha256::new();
        let mut len = 0u64;
        let mut stream = resp.bytes_stream();
        let mut failed = None;
        let activity = Activity::new();
        let what = format!("downloading blob {digest} of {repo}");
        loop {
            let chunk = match client.timed(stream.next(), &activity).await {
                Ok(Some(c)) => c,
                Ok(None) => break,
                Err(e @ Expired::Deadline(_)) => return Err(client.expired(e, &what)),
                Err(e) => {
                    failed = Some(e.describe());
                    break;
                }
            };
            activity.touch();
            match chunk {
                Ok(c) => {
                    hasher.update(&c);
                    len += c.len() as u64;
                    if len > size {
                        break;
                    }
                    file.write_all(&c).await.at("writing", tmp.path())?;
                    bar.inc(c.len() as u64);
                }
                Err(e) => {
                    failed = Some(super::net_message(&e));
                    break;
                }
            }
        }
        if let Some(e) = failed {
            if attempt < client.opts.retries {
                attempt += 1;
                client.pause(super::backoff(attempt), &what).await?;
                continue;
            }
            return Err(client.fail(None, format!("registry {}: {what}: {e}", client.registry())));
        }
        file.flush().await.at("writing", tmp.path())?;
        let got = Digest::of_hasher(hasher);
        if len != size || &got != digest {
            return Err(client.fail(
                None,
                format!(
                    "registry {} sent {len} bytes with digest {got} for blob {digest} ({size} bytes) of {repo}: not kept",
                    client.registry()
                ),
            ));
        }
        tmp.persist(&path).at("saving", &path)?;
        bar.finish("pulled");
        return Ok(path);
    }
}
