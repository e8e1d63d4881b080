//! Pushing: every blob HEAD-checked first, mounted from another repository when lamina knows
//! where it lives, else uploaded in chunks (POST, PATCH…, PUT ?digest=) whose offsets come from
//! the bytes sent; after a failure they resume from the registry's `Range` where that can be
//! trusted. The manifest goes last, with the exact bytes hashed.

use std::collections::HashSet;
use std::io::{Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;

use futures_util::StreamExt;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION, RANGE};
use serde::Serialize;
use tokio::io::AsyncReadExt;

use super::Client;
use super::scope::{Scope, Scopes};
use super::timing::Activity;
use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::image::Rendered;
use crate::progress::Blob as Bar;
use crate::reference::RegistryRef;

/// What happened to one blob of a push.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Fate {
    /// Uploaded (also while the layer was being built).
    Pushed,
    /// The registry had it already.
    Skipped,
    /// Mounted from another repository of the same registry.
    Mounted,
}

impl Fate {
    fn word(self) -> &'static str {
        match self {
            Fate::Pushed => "pushed",
            Fate::Skipped => "skipped",
            Fate::Mounted => "mounted",
        }
    }
}

/// One blob of a push and what happened to it.
#[derive(Serialize, Clone, Debug)]
pub struct BlobFate {
    /// The blob.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// Pushed, skipped or mounted.
    pub fate: Fate,
}

#[derive(Serialize, Clone, Debug)]
#[serde(rename_all = "camelCase")]
pub struct PushReport {
    pub reference: String,
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    pub blobs: Vec<BlobFate>,
}

/// Where a blob's bytes are.
#[derive(Clone)]
enum Data {
    File(PathBuf),
    Bytes(Arc<Vec<u8>>),
}

struct Job {
    digest: Digest,
    size: u64,
    data: Data,
    /// Another repository of the same registry known to hold the blob.
    mount_from: Option<String>,
}

/// Push `img` to `r`: blobs in parallel (bounded), then the manifest. The blobs in `streamed`
/// were uploaded and committed while the image was built ([`stream_blob`]): they are reported
/// as pushed, with no request made for them.
pub async fn push(
    client: Arc<Client>,
    r: &RegistryRef,
    img: &Rendered,
    streamed: &HashSet<Digest>,
) -> Result<PushReport> {
    // ECR refuses pushes to a repository that does not exist.
    client.ensure_repository(&r.repository).await?;
    let (jobs, scope) = jobs_of(&client, r, img);
    let scope = Arc::new(scope);

    let mut tasks = Vec::new();
    for job in jobs {
        let (client, scope, repo) = (client.clone(), scope.clone(), r.repository.clone());
        let uploaded = streamed.contains(&job.digest);
        tasks.push(async move {
            let bar = client
                .opts
                .progress
                .blob("push", &job.digest.to_string(), job.size);
            let fate = if uploaded {
                Fate::Pushed
            } else {
                push_blob(&client, &scope, &repo, &job, &bar).await?
            };
            bar.finish(fate.word());
            Ok(BlobFate {
                digest: job.digest,
                size: job.size,
                fate,
            })
        });
    }
    let done = super::bounded(client.opts.jobs, tasks).await?;

    // The manifest last: a registry never names an image whose blobs it lacks.
    let target = r
        .tag
        .clone()
        .unwrap_or_else(|| img.manifest_digest.to_string());
    if let Some(d) = &r.digest
        && d != &img.manifest_digest
    {
        return Err(Error::Usage(format!(
            "the destination names digest {d}, but the image's manifest digest is {}",
            img.manifest_digest
        )));
    }
    let url = client.url(&format!("/v2/{}/manifests/{target}", r.repository));
    let media_type = img.media_type.to_string();
    let body = Arc::new(img.manifest.clone());
    for attempt in 1.. {
        let resp = client
            .send(&scope, true, &|http| {
                Ok(http
                    .put(url.clone())
                    .header(CONTENT_TYPE, media_type.clone())
                    .body(body.as_ref().clone()))
            })
            .await?;
        if resp.status().is_success() {
            break;
        }
        let e = client
            .unexpected(
                &format!("putting manifest {target} of {}", r.repository),
                resp,
            )
            .await;
        if attempt >= MANIFEST_ATTEMPTS || !blob_race(&e) {
            return Err(e);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50 * attempt as u64)).await;
    }
    Ok(PushReport {
        reference: format!("docker://{r}"),
        digest: img.manifest_digest.clone(),
        size: img.manifest.len() as u64,
        media_type,
        blobs: done,
    })
}

/// How many times an image manifest is put when the registry answers with a blob race.
const MANIFEST_ATTEMPTS: usize = 3;

/// A manifest `PUT` refused because the registry did not see a blob it names, though the blob
/// was uploaded: a race, not a refusal. Distribution's filesystem driver rewrites a
/// repository's blob link in place (truncate, then write) whenever the same blob is uploaded
/// again; another push of the same blob at that moment makes the check of our manifest read an
/// empty link, which the registry answers with `DIGEST_INVALID` and `MANIFEST_BLOB_UNKNOWN`
/// (400). Tried again (a bounded number of times), it succeeds; a blob really missing fails
/// the same way each time and is reported.
pub(crate) fn blob_race(e: &Error) -> bool {
    const RACY: [&str; 3] = ["MANIFEST_BLOB_UNKNOWN", "DIGEST_INVALID", "BLOB_UNKNOWN"];
    match e {
        Error::Registry {
            status: Some(400),
            code,
            message,
            ..
        } => {
            code.as_deref().is_some_and(|c| RACY.contains(&c))
                || message.contains("MANIFEST_BLOB_UNKNOWN")
        }
        _ => false,
    }
}

/// The blobs of `img` to push (each once; layers with the repository to mount them from, when
/// lamina knows one of this registry holds them) and the scopes that needs.
fn jobs_of(client: &Client, r: &RegistryRef, img: &Rendered) -> (Vec<Job>, Scopes) {
    let mut jobs: Vec<Job> = Vec::new();
    let mut scope = Scopes::push(&r.repository);
    for l in &img.layers {
        if jobs.iter().any(|j| j.digest == l.digest) {
            continue;
        }
        let mount_from = l
            .from
            .as_ref()
            .filter(|(reg, repo)| reg == client.registry() && repo != &r.repository)
            .map(|(_, repo)| repo.clone());
        if let Some(m) = &mount_from {
            scope = scope.with(Scope::pull(m));
        }
        jobs.push(Job {
            digest: l.digest.clone(),
            size: l.size,
            data: Data::File(l.path.clone()),
            mount_from,
        });
    }
    jobs.push(Job {
        digest: img.config_digest.clone(),
        size: img.config.len() as u64,
        data: Data::Bytes(Arc::new(img.config.clone())),
        mount_from: None,
    });
    (jobs, scope)
}

async fn exists(client: &Client, scope: &Scopes, repo: &str, digest: &Digest) -> Result<bool> {
    let url = client.url(&format!("/v2/{repo}/blobs/{digest}"));
    let resp = client
        .send(scope, true, &|http| Ok(http.head(url.clone())))
        .await?;
    match resp.status() {
        s if s.is_success() => Ok(true),
        StatusCode::NOT_FOUND => Ok(false),
        _ => Err(client
            .unexpected(&format!("checking blob {digest} in {repo}"), resp)
            .await),
    }
}

fn location(client: &Client, resp: &reqwest::Response, what: &str) -> Result<reqwest::Url> {
    let loc = resp
        .headers()
        .get(LOCATION)
        .and_then(|l| l.to_str().ok())
        .ok_or_else(|| {
            client.fail(
                Some(resp.status()),
                format!(
                    "registry {}: {what}: no Location in the answer",
                    client.registry()
                ),
            )
        })?;
    Ok(client.url(loc))
}

async fn push_blob(
    client: &Client,
    scope: &Scopes,
    repo: &str,
    job: &Job,
    bar: &Bar,
) -> Result<Fate> {
    if exists(client, scope, repo, &job.digest).await? {
        return Ok(Fate::Skipped);
    }
    let mut start = None;
    if let Some(from) = &job.mount_from {
        let mut url = client.url(&format!("/v2/{repo}/blobs/uploads/"));
        url.query_pairs_mut()
            .append_pair("mount", &job.digest.to_string())
            .append_pair("from", from);
        let resp = client
            .send(scope, true, &|http| {
                Ok(http.post(url.clone()).header(CONTENT_LENGTH, 0))
            })
            .await?;
        match resp.status() {
            StatusCode::CREATED => return Ok(Fate::Mounted),
            // Not mounted: the answer opened an upload session instead.
            StatusCode::ACCEPTED => start = Some(location(client, &resp, "starting an upload")?),
            _ => {}
        }
    }
    // ECR keeps every PATCH chunk but its `Range` stops advancing after the first, and it
    // answers 201 to each (aws/containers-roadmap#2831): offsets come from the bytes sent,
    // never from its `Range`, and there the whole blob goes in one streamed PATCH, as docker
    // and crane send it.
    let mut whole = crate::registry::ecr::parse_host(client.registry()).is_some();
    let mut attempt = 0;
    loop {
        match upload(client, scope, repo, job, start.take(), whole, bar).await {
            Ok(()) => return Ok(Fate::Pushed),
            Err((Next::Whole, _)) if !whole => whole = true,
            Err((Next::Retry(after), _)) if attempt < client.opts.retries => {
                attempt += 1;
                let wait = after.unwrap_or(super::backoff(attempt));
                client
                    .pause(wait, &format!("uploading blob {}", job.digest))
                    .await?;
            }
            Err((Next::Whole, _)) if attempt < client.opts.retries => {
                attempt += 1;
                let wait = super::backoff(attempt);
                client
                    .pause(wait, &format!("uploading blob {}", job.digest))
                    .await?;
            }
            Err((_, e)) => return Err(e),
        }
    }
}

/// A request body of `len` bytes of the blob from `offset`, streamed from disk; every chunk
/// sent is progress for the stall limit (`activity`) and the bar.
fn body(
    data: &Data,
    offset: u64,
    len: u64,
    bar: &Bar,
    activity: &Activity,
) -> Result<reqwest::Body> {
    match data {
        Data::Bytes(b) => {
            // Small (a config): handed over at once.
            activity.body_sent();
            Ok(reqwest::Body::from(
                b[offset as usize..(offset + len) as usize].to_vec(),
            ))
        }
        Data::File(p) => {
            let mut f = std::fs::File::open(p).at("opening", p)?;
            f.seek(SeekFrom::Start(offset)).at("reading", p)?;
            let reader = tokio::fs::File::from_std(f).take(len);
            let bar_inc = bar.incrementer();
            let activity = activity.clone();
            let mut left = len;
            let stream =
                tokio_util::io::ReaderStream::with_capacity(reader, 1 << 20).map(move |c| {
                    if let Ok(c) = &c {
                        bar_inc(c.len() as u64);
                        left = left.saturating_sub(c.len() as u64);
                        if left == 0 {
                            activity.body_sent();
                        } else {
                            activity.touch();
                        }
                    }
                    c
                });
            Ok(reqwest::Body::wrap_stream(stream))
        }
    }
}

/// `0-1234` or `bytes=0-1234` → the next offset, 1235.
fn next_offset(resp: &reqwest::Response) -> Option<u64> {
    let r = resp.headers().get(RANGE)?.to_str().ok()?;
    let r = r.trim().trim_start_matches("bytes=");
    let (_, end) = r.split_once('-')?;
    end.trim().parse::<u64>().ok().map(|e| e + 1)
}

/// What to do after a failed upload session.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// Give up: starting over would fail the same way.
    Fatal,
    /// Start a new session (after the registry's `Retry-After`, if it sent one).
    Retry(Option<std::time::Duration>),
    /// The registry mishandled chunks: start over with the whole blob in one PATCH.
    Whole,
}

/// One upload session: chunks of `chunk_size`, or the whole blob in one PATCH with `whole`.
async fn upload(
    client: &Client,
    scope: &Scopes,
    repo: &str,
    job: &Job,
    start: Option<reqwest::Url>,
    whole: bool,
    bar: &Bar,
) -> std::result::Result<(), (Next, Error)> {
    let retriable = |e: Error| (Next::Retry(None), e);
    let mut loc = match start {
        Some(l) => l,
        None => start_upload(client, scope, repo).await?,
    };
    bar.reset();
    let chunk = if whole {
        job.size.max(1)
    } else {
        client.opts.chunk_size.max(super::MIN_CHUNK)
    };
    let mut offset = 0u64;
    let mut recoveries = 0;
    while offset < job.size {
        let len = chunk.min(job.size - offset);
        let sent = send_chunk(client, scope, &loc, &job.data, offset, len, bar).await;
        match sent {
            // 202 by the spec; ECR answers 201.
            Ok(resp) if resp.status().is_success() => {
                let reported = next_offset(&resp);
                if reported.is_some_and(|n| n != offset + len) && offset + len < job.size {
                    let message = format!(
                        "registry {} took chunk {offset}-{} of blob {} as ending at {}",
                        client.registry(),
                        offset + len - 1,
                        job.digest,
                        reported.unwrap_or(0)
                    );
                    return Err((Next::Whole, client.fail(Some(resp.status()), message)));
                }
                offset += len;
                loc = location(client, &resp, "uploading a chunk").unwrap_or(loc);
            }
            Ok(resp)
                if resp.status().is_client_error()
                    && resp.status() != StatusCode::REQUEST_TIMEOUT
                    && resp.status() != StatusCode::TOO_MANY_REQUESTS
                    && resp.status() != StatusCode::RANGE_NOT_SATISFIABLE =>
            {
                return Err((
                    Next::Fatal,
                    client
                        .unexpected(&format!("uploading blob {} to {repo}", job.digest), resp)
                        .await,
                ));
            }
            failed => {
                recoveries += 1;
                // Resume from what the registry says it has, unless its `Range` cannot be
                // trusted (ECR's, or one that misreported a chunk: `whole` then): start over.
                if whole || recoveries > client.opts.retries {
                    let e = match failed {
                        Ok(resp) => {
                            let what = format!("uploading blob {} to {repo}", job.digest);
                            client.unexpected(&what, resp).await
                        }
                        Err(e) => e,
                    };
                    return Err(retriable(e));
                }
                let what = format!("uploading blob {} to {repo}", job.digest);
                client
                    .pause(super::backoff(recoveries), &what)
                    .await
                    .map_err(|e| (Next::Fatal, e))?;
                (offset, loc) = upload_status(client, scope, loc).await.map_err(retriable)?;
                bar.reset();
                bar.inc(offset);
            }
        }
    }
    commit_upload(client, scope, repo, job, loc).await
}

/// PATCH `len` bytes of the blob from `offset` to the session at `loc`.
async fn send_chunk(
    client: &Client,
    scope: &Scopes,
    loc: &reqwest::Url,
    data: &Data,
    offset: u64,
    len: u64,
    bar: &Bar,
) -> Result<reqwest::Response> {
    client
        .send_tracked(scope, false, &|http, activity| {
            Ok(http
                .patch(loc.clone())
                .header(CONTENT_TYPE, "application/octet-stream")
                .header(CONTENT_LENGTH, len)
                .header(CONTENT_RANGE, format!("{offset}-{}", offset + len - 1))
                .body(body(data, offset, len, bar, activity)?))
        })
        .await
}

/// How much of an upload session the registry has: the next offset, and the location to go on
/// at.
async fn upload_status(
    client: &Client,
    scope: &Scopes,
    loc: reqwest::Url,
) -> Result<(u64, reqwest::Url)> {
    let url = loc.clone();
    let status = client
        .send(scope, true, &|http| Ok(http.get(url.clone())))
        .await?;
    if status.status() != StatusCode::NO_CONTENT && !status.status().is_success() {
        return Err(client.unexpected("asking for upload status", status).await);
    }
    let offset = next_offset(&status).unwrap_or(0);
    let loc = location(client, &status, "asking for upload status").unwrap_or(loc);
    Ok((offset, loc))
}

/// Open an upload session: its location.
async fn start_upload(
    client: &Client,
    scope: &Scopes,
    repo: &str,
) -> std::result::Result<reqwest::Url, (Next, Error)> {
    let retriable = |e: Error| (Next::Retry(None), e);
    let url = client.url(&format!("/v2/{repo}/blobs/uploads/"));
    // No request-level retries here: the session loop in `push_blob` retries, and
    // nesting both would multiply the attempts.
    let resp = client
        .send(scope, false, &|http| {
            Ok(http.post(url.clone()).header(CONTENT_LENGTH, 0))
        })
        .await
        .map_err(|e| match e {
            Error::Auth(_) => (Next::Fatal, e),
            e => (Next::Retry(None), e),
        })?;
    if resp.status() != StatusCode::ACCEPTED {
        let status = resp.status();
        let fatal = status.is_client_error()
            && status != StatusCode::REQUEST_TIMEOUT
            && status != StatusCode::TOO_MANY_REQUESTS;
        let after = super::retry_after(&resp);
        return Err((
            if fatal {
                Next::Fatal
            } else {
                Next::Retry(after)
            },
            client
                .unexpected(&format!("starting an upload to {repo}"), resp)
                .await,
        ));
    }
    location(client, &resp, "starting an upload").map_err(retriable)
}

/// Commit an upload session as `job`'s blob (`PUT ?digest=`).
async fn commit_upload(
    client: &Client,
    scope: &Scopes,
    repo: &str,
    job: &Job,
    loc: reqwest::Url,
) -> std::result::Result<(), (Next, Error)> {
    let retriable = |e: Error| (Next::Retry(None), e);
    let mut url = loc.clone();
    url.query_pairs_mut()
        .append_pair("digest", &job.digest.to_string());
    // The registry may check the whole blob before it answers: the time an answer after an
    // upload gets.
    let put = client
        .send_tracked(scope, true, &|http, activity| {
            activity.body_sent();
            Ok(http.put(url.clone()).header(CONTENT_LENGTH, 0))
        })
        .await;
    match put {
        Ok(resp) if resp.status().is_success() => Ok(()),
        other => {
            // The commit may have landed even if its answer was lost.
            if exists(client, scope, repo, &job.digest)
                .await
                .unwrap_or(false)
            {
                return Ok(());
            }
            let e = match other {
                Ok(resp) => {
                    client
                        .unexpected(&format!("committing blob {} to {repo}", job.digest), resp)
                        .await
                }
                Err(e) => e,
            };
            Err(retriable(e))
        }
    }
}

/// The end of a streamed upload: commit it under the layer's digest, or cancel it.
pub enum Commit {
    /// The layer was built with this digest and size: commit if that is what was sent.
    Blob(Digest, u64),
    /// The build failed or the image was refused: cancel the upload session.
    Cancel,
}

/// Upload a blob while it is being written: one streamed PATCH fed by `chunks` (ended when
/// the sender is dropped), committed with `PUT ?digest=` only when `commit` says so and the
/// bytes sent are exactly the layer's. Nothing is visible in the registry before the commit.
/// Returns the digest if the blob was committed; any failure leaves the blob to the normal push.
pub async fn stream_blob(
    client: Arc<Client>,
    scope: Scopes,
    repo: String,
    chunks: tokio::sync::mpsc::Receiver<Vec<u8>>,
    commit: tokio::sync::oneshot::Receiver<Commit>,
) -> Option<Digest> {
    let url = client.url(&format!("/v2/{repo}/blobs/uploads/"));
    let resp = client
        .send(&scope, true, &|http| {
            Ok(http.post(url.clone()).header(CONTENT_LENGTH, 0))
        })
        .await
        .ok()?;
    if resp.status() != StatusCode::ACCEPTED {
        return None;
    }
    let loc = location(&client, &resp, "starting an upload").ok()?;
    let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = sent.clone();
    let chunks = std::sync::Mutex::new(Some(chunks));
    let patched = client
        .send_tracked(&scope, false, &|http, activity| {
            // The body can be sent once; a retry would have nothing to send.
            let rx = chunks
                .lock()
                .expect("lock")
                .take()
                .ok_or_else(|| Error::Internal("a streamed upload cannot be retried".into()))?;
            let (counter, activity) = (counter.clone(), activity.clone());
            let done = activity.clone();
            let stream = tokio_stream_from(rx, move || done.body_sent()).map(move |c| {
                counter.fetch_add(c.len() as u64, std::sync::atomic::Ordering::Relaxed);
                activity.touch();
                Ok::<_, std::io::Error>(c)
            });
            Ok(http
                .patch(loc.clone())
                .header(CONTENT_TYPE, "application/octet-stream")
                .body(reqwest::Body::wrap_stream(stream)))
        })
        .await;
    let loc = match patched {
        Ok(r) if r.status().is_success() => location(&client, &r, "uploading").unwrap_or(loc),
        _ => return None,
    };
    let cancel = |loc: reqwest::Url| {
        let client = client.clone();
        let scope = scope.clone();
        async move {
            // Cancelling an abandoned upload is a courtesy: the registry expires it anyway.
            let _ = client
                .send(&scope, false, &|http| Ok(http.delete(loc.clone())))
                .await;
        }
    };
    match commit.await {
        Ok(Commit::Blob(digest, size))
            if size == sent.load(std::sync::atomic::Ordering::Relaxed) =>
        {
            let mut put = loc.clone();
            put.query_pairs_mut()
                .append_pair("digest", &digest.to_string());
            match client
                .send_tracked(&scope, true, &|http, activity| {
                    activity.body_sent();
                    Ok(http.put(put.clone()).header(CONTENT_LENGTH, 0))
                })
                .await
            {
                Ok(r) if r.status().is_success() => Some(digest),
                _ => None,
            }
        }
        _ => {
            cancel(loc).await;
            None
        }
    }
}

/// A stream of the chunks a channel receives; `ended` runs when the channel closes.
fn tokio_stream_from(
    rx: tokio::sync::mpsc::Receiver<Vec<u8>>,
    ended: impl Fn() + Send + Sync + 'static,
) -> impl futures_util::Stream<Item = Vec<u8>> {
    futures_util::stream::unfold((rx, ended), |(mut rx, ended)| async move {
        match rx.recv().await {
            Some(c) => Some((c, (rx, ended))),
            None => {
                ended();
                None
            }
        }
    })
}

/// Upload small `bytes` as a blob of `repo` (the registry cache's documents) unless the
/// registry has it already; its digest.
pub(crate) async fn push_bytes(client: &Client, repo: &str, bytes: Vec<u8>) -> Result<Digest> {
    let job = Job {
        digest: Digest::of(&bytes),
        size: bytes.len() as u64,
        data: Data::Bytes(Arc::new(bytes)),
        mount_from: None,
    };
    push_one(client, repo, job).await
}

/// Upload the blob file at `path` to `repo` unless the registry has it already.
pub(crate) async fn push_file(
    client: &Client,
    repo: &str,
    digest: &Digest,
    size: u64,
    path: &std::path::Path,
) -> Result<()> {
    let job = Job {
        digest: digest.clone(),
        size,
        data: Data::File(path.to_owned()),
        mount_from: None,
    };
    push_one(client, repo, job).await.map(|_| ())
}

/// One blob pushed on its own, with its progress line; its digest.
async fn push_one(client: &Client, repo: &str, job: Job) -> Result<Digest> {
    let bar = client
        .opts
        .progress
        .blob("push", &job.digest.to_string(), job.size);
    let fate = push_blob(client, &Scopes::push(repo), repo, &job, &bar).await?;
    bar.finish(fate.word());
    Ok(job.digest)
}

/// Whether `repo` holds blob `digest` (a HEAD request).
pub(crate) async fn has_blob(client: &Client, repo: &str, digest: &Digest) -> Result<bool> {
    exists(client, &Scopes::push(repo), repo, digest).await
}

/// The size `repo` says blob `digest` has (a HEAD request's `Content-Length`); `None` when it
/// does not hold the blob.
pub(crate) async fn blob_size(client: &Client, repo: &str, digest: &Digest) -> Result<Option<u64>> {
    let url = client.url(&format!("/v2/{repo}/blobs/{digest}"));
    let resp = client
        .send(
            &Scopes::push(repo),
            true,
            &|http| Ok(http.head(url.clone())),
        )
        .await?;
    match resp.status() {
        s if s.is_success() => Ok(Some(
            resp.headers()
                .get(CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        )),
        StatusCode::NOT_FOUND => Ok(None),
        _ => Err(client
            .unexpected(&format!("checking blob {digest} in {repo}"), resp)
            .await),
    }
}

/// Mount blob `digest` from repository `from` of the same registry into `repo`: true when the
/// registry mounted it (an upload session it opened instead is cancelled).
pub(crate) async fn mount_blob(
    client: &Client,
    repo: &str,
    from: &str,
    digest: &Digest,
) -> Result<bool> {
    let scope = Scopes::push(repo).with(Scope::pull(from));
    let mut url = client.url(&format!("/v2/{repo}/blobs/uploads/"));
    url.query_pairs_mut()
        .append_pair("mount", &digest.to_string())
        .append_pair("from", from);
    let resp = client
        .send(&scope, true, &|http| {
            Ok(http.post(url.clone()).header(CONTENT_LENGTH, 0))
        })
        .await?;
    match resp.status() {
        StatusCode::CREATED => Ok(true),
        StatusCode::ACCEPTED => {
            if let Ok(loc) = location(client, &resp, "starting an upload") {
                let _ = client
                    .send(&scope, false, &|http| Ok(http.delete(loc.clone())))
                    .await;
            }
            Ok(false)
        }
        _ => Ok(false),
    }
}

/// PUT a manifest's exact `bytes` under `reference` (a tag) of `repo`.
pub(crate) async fn put_manifest(
    client: &Client,
    repo: &str,
    reference: &str,
    media_type: &str,
    bytes: Vec<u8>,
) -> Result<()> {
    let url = client.url(&format!("/v2/{repo}/manifests/{reference}"));
    let resp = client
        .send(&Scopes::push(repo), true, &|http| {
            Ok(http
                .put(url.clone())
                .header(CONTENT_TYPE, media_type)
                .body(bytes.clone()))
        })
        .await?;
    if !resp.status().is_success() {
        return Err(client
            .unexpected(&format!("putting manifest {reference} of {repo}"), resp)
            .await);
    }
    Ok(())
}
