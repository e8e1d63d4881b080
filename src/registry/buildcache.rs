//! The registry as the build cache: a small OCI artifact that maps layer content keys
//! ([`crate::layer::key`]) to the layer descriptors built from them, so that a fresh CI runner
//! skips reading, tarring, compressing and uploading every layer that did not change.
//!
//! The artifact is an OCI image manifest (not an index) with its own `artifactType`
//! ([`ARTIFACT_TYPE`]), the empty config the OCI image spec (1.1) prescribes for artifacts
//! without a config, and one layer: the mapping document ([`DATA_TYPE`], JSON). It lives under
//! its own tag (`lamina-cache` in the destination repository by default), never the
//! function's.
//!
//! Reading trusts nothing it cannot check: a manifest of another type, a document that is not
//! this version's JSON, or a blob whose digest differs is ignored with a warning (the build
//! then builds). The cache is as trusted as write access to its repository: whoever can push
//! there can map a key to another layer. `--cache-verify` rebuilds every layer found and fails
//! when the bytes differ.
//!
//! Writing approximates a compare-and-swap (the distribution API has no conditional PUT): read
//! the artifact, merge the new entries, upload the document, check that the tag still names
//! what was read, PUT the manifest, wait a moment and read it back; if another runner's write
//! replaced it without our entries, start again (a bounded number of times). Entries are only
//! added, so the merge is a union, and the oldest entries are dropped past [`MAX_ENTRIES`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::ACCEPT;
use serde::{Deserialize, Serialize};

use super::scope::Scopes;
use super::{Client, MANIFEST_CAP};
use crate::digest::Digest;
use crate::error::Result;
use crate::image::fsindex;
use crate::layer::{LayerBlob, Provenance};
use crate::reference::{ImageRef, RegistryRef};

/// The cache artifact's `artifactType`.
pub const ARTIFACT_TYPE: &str = "application/vnd.lamina.cache.v1+json";
/// The media type of the mapping document (the artifact's one layer).
pub const DATA_TYPE: &str = "application/vnd.lamina.cache.data.v1+json";
/// The tag the cache has in the destination repository unless `--cache` names another.
pub const DEFAULT_TAG: &str = crate::reference::BUILD_CACHE_TAG;
/// The most entries the cache keeps (the oldest are dropped).
pub const MAX_ENTRIES: usize = 4096;
/// The largest mapping document read (about 500 bytes an entry).
const DATA_CAP: usize = 4 << 20;
/// How many times a write is tried again when another runner moved the tag.
const WRITE_ATTEMPTS: usize = 8;
/// How long a write waits, at least and at most, before reading its own write back. The wait
/// scales with what the write's own check-and-put took (twice it), so a slow registry or
/// a loaded machine widens it; the floor only covers a loopback registry's sub-millisecond
/// round trips. Every push that records a layer pays it (three times: two read-backs), so it
/// is kept small: a lost entry costs one rebuild later, never a wrong image.
const SETTLE: Duration = Duration::from_millis(10);
const MAX_SETTLE: Duration = Duration::from_secs(2);

const EMPTY_TYPE: &str = "application/vnd.oci.empty.v1+json";
const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

/// A blob by digest and size (a layer's file-system index).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Blob {
    /// `sha256:…`.
    pub digest: String,
    /// Bytes.
    pub size: u64,
}

/// One mapping: a content key and the layer built from it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// The compressed layer's digest (the manifest's descriptor).
    pub digest: String,
    /// The uncompressed tar's digest (the config's `rootfs.diff_ids`).
    pub diff_id: String,
    /// Compressed size.
    pub size: u64,
    /// The layer's media type.
    pub media_type: String,
    /// The layer's file-system index (what the Lambda checks read), when it was uploaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<Blob>,
    /// When the entry was added (seconds since the epoch): the oldest go first.
    pub added: u64,
}

impl Entry {
    /// The digests, parsed; `None` for an entry that does not parse (ignored).
    pub fn digests(&self) -> Option<(Digest, Digest)> {
        Some((self.digest.parse().ok()?, self.diff_id.parse().ok()?))
    }
}

/// The mapping document.
#[derive(Serialize, Deserialize, Default, Debug)]
struct Document {
    version: u32,
    entries: BTreeMap<String, Entry>,
}

/// The cache as read: its entries, and the manifest digest the tag named (none when absent).
#[derive(Default, Debug)]
pub struct Loaded {
    /// Content key → layer.
    pub entries: BTreeMap<String, Entry>,
    /// The artifact's manifest digest when it was read.
    pub manifest: Option<Digest>,
}

/// Read the cache at `r` (a tag). A missing tag is an empty cache; an unreachable, foreign or
/// corrupt one is an empty cache and a warning to `warn`: the build goes on and builds.
pub async fn load(
    client: &Client,
    r: &RegistryRef,
    warn: &mut (dyn FnMut(String) + Send),
) -> Loaded {
    match try_load(client, r).await {
        Ok(l) => l,
        Err(why) => {
            warn(one_line(format!(
                "warning: registry cache docker://{r} ignored: {why}"
            )));
            Loaded::default()
        }
    }
}

/// Why the cache was not read: the registry could not be asked (perhaps for a moment), or
/// what it holds under the tag is not a lamina cache (it is then replaced by the next write).
#[derive(Debug)]
enum Unread {
    Unreachable(String),
    Foreign(String),
}

impl std::fmt::Display for Unread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unread::Unreachable(m) | Unread::Foreign(m) => f.write_str(m),
        }
    }
}

impl From<String> for Unread {
    fn from(m: String) -> Unread {
        Unread::Foreign(m)
    }
}

impl From<&str> for Unread {
    fn from(m: &str) -> Unread {
        Unread::Foreign(m.to_owned())
    }
}

fn tag(r: &RegistryRef) -> &str {
    r.tag.as_deref().unwrap_or(DEFAULT_TAG)
}

/// GET `url` into memory, at most `cap` bytes: `None` for 404.
async fn get_capped(
    client: &Client,
    r: &RegistryRef,
    url: reqwest::Url,
    accept: &str,
    cap: usize,
    what: &str,
) -> std::result::Result<Option<Vec<u8>>, Unread> {
    let unreachable = |e: crate::error::Error| Unread::Unreachable(e.to_string());
    let resp = client
        .send(&Scopes::pull(&r.repository), true, &|http| {
            Ok(http.get(url.clone()).header(ACCEPT, accept))
        })
        .await
        .map_err(unreachable)?;
    if resp.status() == StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if !resp.status().is_success() {
        let m = format!("{what}: the registry answered {}", resp.status());
        return Err(Unread::Unreachable(m));
    }
    let body = client
        .read_capped(resp, cap, what)
        .await
        .map_err(unreachable)?;
    if body.over {
        return Err(format!("{what} is larger than {cap} bytes").into());
    }
    Ok(Some(body.bytes))
}

async fn try_load(client: &Client, r: &RegistryRef) -> std::result::Result<Loaded, Unread> {
    let url = client.url(&format!("/v2/{}/manifests/{}", r.repository, tag(r)));
    let Some(bytes) = get_capped(
        client,
        r,
        url,
        MANIFEST_TYPE,
        MANIFEST_CAP,
        "the cache manifest",
    )
    .await?
    else {
        return Ok(Loaded::default());
    };
    let manifest = Digest::of(&bytes);
    let data = data_descriptor(&bytes)?;
    let url = client.url(&format!("/v2/{}/blobs/{}", r.repository, data.digest));
    let doc = get_capped(client, r, url, "*/*", DATA_CAP, "the cache document")
        .await?
        .ok_or_else(|| format!("its document {} is missing", data.digest))?;
    let got = Digest::of(&doc);
    if got.to_string() != data.digest || doc.len() as u64 != data.size {
        return Err(format!(
            "its document should be {} ({} bytes) but is {got} ({} bytes)",
            data.digest,
            data.size,
            doc.len()
        )
        .into());
    }
    let doc: Document = serde_json::from_slice(&doc)
        .map_err(|e| format!("its document is not lamina's cache JSON: {e}"))?;
    if doc.version != 1 {
        return Err(format!("its document is version {}, not 1", doc.version).into());
    }
    Ok(Loaded {
        entries: doc.entries,
        manifest: Some(manifest),
    })
}

/// The mapping document's descriptor in a cache manifest, if the manifest is lamina's cache.
fn data_descriptor(bytes: &[u8]) -> std::result::Result<Blob, String> {
    let m: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("its manifest is not JSON: {e}"))?;
    let s = |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned);
    if s(&m, "mediaType").as_deref() != Some(MANIFEST_TYPE) {
        return Err(format!(
            "its manifest's mediaType is {:?}, not {MANIFEST_TYPE}",
            s(&m, "mediaType")
        ));
    }
    if s(&m, "artifactType").as_deref() != Some(ARTIFACT_TYPE) {
        return Err(format!(
            "its artifactType is {:?}, not {ARTIFACT_TYPE}: not a lamina cache",
            s(&m, "artifactType")
        ));
    }
    let layer = match m.get("layers").and_then(|l| l.as_array()).map(|l| &l[..]) {
        Some([one]) if s(one, "mediaType").as_deref() == Some(DATA_TYPE) => one,
        _ => return Err(format!("it does not hold exactly one {DATA_TYPE} layer")),
    };
    let digest = s(layer, "digest").ok_or("its document has no digest")?;
    digest
        .parse::<Digest>()
        .map_err(|e| format!("its document's digest: {e}"))?;
    let size = layer
        .get("size")
        .and_then(|x| x.as_u64())
        .ok_or("its document has no size")?;
    Ok(Blob { digest, size })
}

/// The manifest of a cache artifact whose document is `data`.
fn manifest_bytes(data: &Blob) -> Vec<u8> {
    let m = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "artifactType": ARTIFACT_TYPE,
        "config": {
            "mediaType": EMPTY_TYPE,
            "digest": Digest::of(b"{}").to_string(),
            "size": 2,
            "data": "e30="
        },
        "layers": [{
            "mediaType": DATA_TYPE,
            "digest": data.digest,
            "size": data.size
        }],
        "annotations": { "org.opencontainers.image.title": "lamina build cache" }
    });
    serde_json::to_vec(&m).expect("JSON serializes")
}

/// `entries` with `new` added (existing keys kept as they are), at most [`MAX_ENTRIES`]: the
/// oldest dropped. Whether anything was added.
fn merge(entries: &mut BTreeMap<String, Entry>, new: &BTreeMap<String, Entry>) -> bool {
    let mut changed = false;
    for (k, e) in new {
        if !entries.contains_key(k) {
            entries.insert(k.clone(), e.clone());
            changed = true;
        }
    }
    if entries.len() > MAX_ENTRIES {
        let mut by_age: Vec<(u64, String)> =
            entries.iter().map(|(k, e)| (e.added, k.clone())).collect();
        by_age.sort();
        let extra = entries.len() - MAX_ENTRIES;
        for (_, k) in by_age.into_iter().take(extra) {
            entries.remove(&k);
        }
    }
    changed
}

/// Add `new` to the cache at `r`: read, merge, write, read back, again while another runner's
/// write replaced ours (see the module's documentation). Returns how many attempts it took;
/// an error when the registry refused the write or the tag kept moving. Each attempt is told
/// to `trace` (the digests before, written and read back).
pub async fn update(
    client: &Client,
    r: &RegistryRef,
    new: &BTreeMap<String, Entry>,
    trace: &mut (dyn FnMut(String) + Send),
) -> Result<usize> {
    let repo = &r.repository;
    for attempt in 1..=WRITE_ATTEMPTS {
        let Some((before, read)) = read_for_update(client, r, attempt, trace).await? else {
            backoff(attempt).await;
            continue;
        };
        let mut entries = read.entries;
        let seen = entries.len();
        if !merge(&mut entries, new) && before.is_some() && read.manifest == before {
            trace(format!(
                "attempt {attempt}: before {}: every entry already there",
                show(&before)
            ));
            return Ok(attempt);
        }
        // What the read-back must find: ours, and every entry that was there (a writer that
        // replaced the document with one lacking them lost them: merge them back).
        let wanted: Vec<String> = entries.keys().cloned().collect();
        // A cache artifact read from this repository names the empty config already there.
        let config_there = read.manifest.is_some();
        let manifest = upload_document(client, repo, entries, config_there).await?;
        let written = Digest::of(&manifest);
        // The tag must still name what was read: otherwise merge with the newer one first.
        let started = std::time::Instant::now();
        let now = current(client, r).await?;
        if now != before {
            trace(format!(
                "attempt {attempt}: before {}, the tag moved to {}: merging again",
                show(&before),
                show(&now)
            ));
            backoff(attempt).await;
            continue;
        }
        match super::push::put_manifest(client, repo, tag(r), MANIFEST_TYPE, manifest).await {
            Ok(()) => {}
            Err(e) if super::push::blob_race(&e) => {
                trace(format!(
                    "attempt {attempt}: the registry did not see a blob the manifest names ({}): again",
                    one_line(e.to_string())
                ));
                backoff(attempt).await;
                continue;
            }
            Err(e) => return Err(e),
        }
        // Another writer is at risk of overwriting us if it checked the tag before our PUT and
        // puts after our read-back: wait twice what that check-and-put took us, so a slow
        // registry or a loaded machine widens the wait with the window.
        // Read back twice: a writer descheduled between its check and its PUT (a loaded CI
        // machine) lands later than the first read-back; the second, after twice as long
        // again, catches most of those. Without a conditional PUT in the distribution API
        // this narrows the window but cannot close it: a lost entry costs a rebuild later,
        // never a wrong image.
        let settle = (started.elapsed() * 2).clamp(SETTLE, MAX_SETTLE);
        let (kept, backs) = read_back(client, r, settle, &written, &wanted).await;
        trace(format!(
            "attempt {attempt}: before {} ({seen} entries), wrote {written} ({} entries, {} new), settle {settle:?}, read back {}: {}",
            show(&before),
            wanted.len(),
            new.len(),
            backs.iter().map(show).collect::<Vec<_>>().join(", "),
            if kept {
                "kept"
            } else {
                "replaced, merging again"
            }
        ));
        if kept {
            return Ok(attempt);
        }
        backoff(attempt).await;
    }
    Err(client.fail(
        None,
        format!(
            "registry cache docker://{r}: other builds kept replacing it; {} new entries not saved after {WRITE_ATTEMPTS} attempts",
            new.len()
        ),
    ))
}

/// Upload the document holding `entries` (and the empty config, unless `config_there`): the
/// manifest that names it.
async fn upload_document(
    client: &Client,
    repo: &str,
    entries: BTreeMap<String, Entry>,
    config_there: bool,
) -> Result<Vec<u8>> {
    let doc = serde_json::to_vec(&Document {
        version: 1,
        entries,
    })
    .expect("JSON serializes");
    let size = doc.len() as u64;
    let digest = super::push::push_bytes(client, repo, doc).await?;
    if !config_there {
        super::push::push_bytes(client, repo, b"{}".to_vec()).await?;
    }
    Ok(manifest_bytes(&Blob {
        digest: digest.to_string(),
        size,
    }))
}

/// Read the cache back after `settle`, and again after twice as long, while it still holds
/// every key in `wanted`: whether it did, and the manifest digests read. A tag that still
/// names what was `written` holds them (one `HEAD`); only another document is read whole.
async fn read_back(
    client: &Client,
    r: &RegistryRef,
    settle: Duration,
    written: &Digest,
    wanted: &[String],
) -> (bool, Vec<Option<Digest>>) {
    let mut backs = Vec::new();
    for wait in [settle, settle * 2] {
        tokio::time::sleep(wait).await;
        let now = current(client, r).await.ok().flatten();
        if now.as_ref() == Some(written) {
            backs.push(now);
            continue;
        }
        let back = try_load(client, r).await.unwrap_or_default();
        backs.push(back.manifest.clone());
        if !wanted.iter().all(|k| back.entries.contains_key(k)) {
            return (false, backs);
        }
    }
    (true, backs)
}

/// A digest the tag named, or `none`, for the debug trace.
fn show(d: &Option<Digest>) -> String {
    d.as_ref()
        .map_or_else(|| "none".to_owned(), Digest::to_string)
}

/// How long a tag seen absent, or a cache seen unreadable or foreign, is left before it is
/// looked at again and believed (then written over).
const RECHECK: Duration = Duration::from_millis(20);

/// The tag's digest and the cache it names, for an update: `None` when it could not be read
/// (try again later; never write over entries that could not be read). A tag seen absent and
/// a cache seen foreign or corrupt are believed only when a second look, a moment later, sees
/// the same: an update that believed a passing state (a registry whose storage is eventually
/// consistent, a read racing another writer's PUT) would write only its own entries over
/// everyone else's. (Distribution's filesystem driver, which rewrites a tag's link in place,
/// answers a read of the emptied link with a 500, which the client retries.)
async fn read_for_update(
    client: &Client,
    r: &RegistryRef,
    attempt: usize,
    trace: &mut (dyn FnMut(String) + Send),
) -> Result<Option<(Option<Digest>, Loaded)>> {
    let mut looked = None;
    for look in 0..2 {
        let before = current(client, r).await?;
        let read = try_load(client, r).await;
        let state = match &read {
            Ok(l) if before.is_some() && l.manifest.is_some() => {
                return Ok(Some((before, read.unwrap_or_default())));
            }
            Ok(l) => format!("absent (tag {}, read {})", show(&before), show(&l.manifest)),
            Err(Unread::Foreign(why)) => format!("foreign ({why})"),
            Err(Unread::Unreachable(why)) => {
                trace(format!("attempt {attempt}: unreadable: {why}"));
                return Ok(None);
            }
        };
        trace(format!(
            "attempt {attempt}, look {look}: the cache is {state}"
        ));
        match looked.replace(state.clone()) {
            Some(first) if first == state => {
                return Ok(Some((before, read.unwrap_or_default())));
            }
            _ if look == 0 => tokio::time::sleep(RECHECK).await,
            _ => {}
        }
    }
    Ok(None)
}

/// A short, varying pause so that two runners retrying together drift apart.
async fn backoff(attempt: usize) {
    let jitter = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64 % 100);
    tokio::time::sleep(Duration::from_millis(20 * attempt as u64 + jitter)).await;
}

/// The digest the cache's tag names now (a HEAD request), `None` when it names nothing.
async fn current(client: &Client, r: &RegistryRef) -> Result<Option<Digest>> {
    let url = client.url(&format!("/v2/{}/manifests/{}", r.repository, tag(r)));
    let resp = client
        .send(&Scopes::pull(&r.repository), true, &|http| {
            Ok(http.head(url.clone()).header(ACCEPT, MANIFEST_TYPE))
        })
        .await?;
    if resp.status() == StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if !resp.status().is_success() {
        return Err(client
            .unexpected(&format!("checking the cache tag of {}", r.repository), resp)
            .await);
    }
    Ok(resp
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok()))
}

/// A build's use of the registry cache: the entries read before the layers are built, the
/// lookups the layer builders make (from blocking threads), and the entries added afterwards.
pub struct Shared {
    /// Where the cache is.
    pub at: RegistryRef,
    client: Arc<Client>,
    rt: tokio::runtime::Handle,
    /// Read when first needed: a build whose layers all come from the local cache (an
    /// unchanged rebuild) never asks the registry about the cache.
    entries: tokio::sync::OnceCell<BTreeMap<String, Entry>>,
    /// A registry destination on the cache's registry: its client and repository (a hit is
    /// checked, or mounted, there instead of downloaded).
    dest: Option<(Arc<Client>, String)>,
    /// The Lambda checks will read the new layers: a hit whose blob is not downloaded needs
    /// its file-system index.
    need_index: bool,
    cache_dir: PathBuf,
    warnings: Mutex<Vec<String>>,
}

impl Shared {
    /// The cache at `at` over `client`, read when first needed; `dest` is a registry
    /// destination on the same registry, if the build has one.
    pub fn open(
        at: RegistryRef,
        client: Arc<Client>,
        dest: Option<(Arc<Client>, String)>,
        need_index: bool,
        cache_dir: PathBuf,
    ) -> Shared {
        Shared {
            at,
            client,
            rt: tokio::runtime::Handle::current(),
            entries: tokio::sync::OnceCell::new(),
            dest,
            need_index,
            cache_dir,
            warnings: Mutex::new(Vec::new()),
        }
    }

    /// The cache's entries, read (once) now if they were not yet: what reading it said (how
    /// many entries, or a warning) goes to the build's log with the lookups' warnings.
    async fn entries(&self) -> &BTreeMap<String, Entry> {
        self.entries
            .get_or_init(|| async {
                let mut said = Vec::new();
                let loaded = load(&self.client, &self.at, &mut |m| said.push(m)).await;
                said.push(format!(
                    "registry cache docker://{}: {} entries",
                    self.at,
                    loaded.entries.len()
                ));
                self.warnings
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend(said);
                loaded.entries
            })
            .await
    }

    /// What reading the cache and the lookups said (a blob that was gone or did not match),
    /// once.
    pub fn take_warnings(&self) -> Vec<String> {
        std::mem::take(&mut *self.warnings.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn warn(&self, m: String) {
        self.warnings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(one_line(format!(
                "warning: registry cache docker://{}: {m}",
                self.at
            )));
    }

    /// The layer the cache maps `key` to, made available: present in the destination
    /// registry (checked, or mounted from the cache's repository), or downloaded into `blobs`
    /// and verified by digest, size and diff_id. Called from blocking code.
    pub fn lookup(&self, key: &str, blobs: &Path) -> Option<LayerBlob> {
        let e = self.rt.block_on(self.entries()).get(key)?;
        let Some((digest, diff_id)) = e.digests() else {
            self.warn(format!("entry {key} does not parse; ignored"));
            return None;
        };
        let found = self.rt.block_on(self.fetch(e, &digest, &diff_id, blobs));
        match found {
            Ok(path) => Some(LayerBlob {
                path: path.unwrap_or_else(|| blobs.join(digest.hex())),
                digest,
                diff_id,
                size: e.size,
            }),
            Err(why) => {
                self.warn(format!(
                    "{digest} for {key}: {why}; building the layer instead"
                ));
                None
            }
        }
    }

    /// Make the blob available; the local path when it was downloaded.
    async fn fetch(
        &self,
        e: &Entry,
        digest: &Digest,
        diff_id: &Digest,
        blobs: &Path,
    ) -> std::result::Result<Option<PathBuf>, String> {
        if let Some((dest, repo)) = &self.dest {
            let mut size = super::push::blob_size(dest, repo, digest)
                .await
                .ok()
                .flatten();
            if size.is_none()
                && repo != &self.at.repository
                && super::push::mount_blob(dest, repo, &self.at.repository, digest)
                    .await
                    .unwrap_or(false)
            {
                size = super::push::blob_size(dest, repo, digest)
                    .await
                    .ok()
                    .flatten();
            }
            if let Some(s) = size
                && s != e.size
            {
                return Err(format!(
                    "the registry has it with {s} bytes, the entry says {}",
                    e.size
                ));
            }
            if size.is_some() && (!self.need_index || self.index_ready(e, diff_id).await) {
                return Ok(None);
            }
        }
        let repo = &self.at.repository;
        let path = super::pull::fetch_blob(&self.client, repo, digest, e.size, blobs)
            .await
            .map_err(|e| e.to_string())?;
        let p = path.clone();
        let got = tokio::task::spawn_blocking(move || diff_id_of(&p))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("reading it: {e}"))?;
        if &got != diff_id {
            let _ = std::fs::remove_file(&path);
            return Err(format!("its uncompressed digest is {got}, not {diff_id}"));
        }
        Ok(Some(path))
    }

    /// The layer's file-system index is remembered locally (downloaded and verified from the
    /// cache's entry if need be), so the Lambda checks need not read the layer.
    async fn index_ready(&self, e: &Entry, diff_id: &Digest) -> bool {
        if fsindex::load(&self.cache_dir, diff_id).is_some() {
            return true;
        }
        let Some(ix) = &e.index else { return false };
        let url = self
            .client
            .url(&format!("/v2/{}/blobs/{}", self.at.repository, ix.digest));
        let cap = fsindex::MAX_INDEX_BYTES as usize;
        let Ok(Some(bytes)) = get_capped(&self.client, &self.at, url, "*/*", cap, "an index").await
        else {
            return false;
        };
        if Digest::of(&bytes).to_string() != ix.digest {
            self.warn(format!(
                "index {} does not match its digest; ignored",
                ix.digest
            ));
            return false;
        }
        match serde_json::from_slice::<fsindex::FsIndex>(&bytes) {
            Ok(index) => {
                fsindex::save(&self.cache_dir, diff_id, &index);
                fsindex::load(&self.cache_dir, diff_id).is_some()
            }
            Err(_) => false,
        }
    }

    /// After the build: add the layers built (not found) to the cache, their blobs made
    /// present in the cache's repository and their indexes uploaded. `built` are the content
    /// keys and layers built. Returns how many entries were added and the attempts the write
    /// took. Failing to record never fails the build: the reason is returned as a warning.
    pub async fn record(
        &self,
        built: &[(String, LayerBlob)],
        trace: &mut (dyn FnMut(String) + Send),
    ) -> std::result::Result<(usize, usize), String> {
        if built.is_empty() {
            return Ok((0, 0));
        }
        let entries = self.entries().await;
        let mut new = BTreeMap::new();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        for (key, b) in built {
            if entries.contains_key(key) || new.contains_key(key) {
                continue;
            }
            self.ensure_blob(b).await.map_err(|e| e.to_string())?;
            new.insert(
                key.clone(),
                Entry {
                    digest: b.digest.to_string(),
                    diff_id: b.diff_id.to_string(),
                    size: b.size,
                    media_type: LAYER_TYPE.to_owned(),
                    index: self.push_index(&b.diff_id).await,
                    added: now,
                },
            );
        }
        if new.is_empty() {
            return Ok((0, 0));
        }
        // ECR refuses pushes to a repository that does not exist (created with --create-repo).
        self.client
            .ensure_repository(&self.at.repository)
            .await
            .map_err(|e| e.to_string())?;
        update(&self.client, &self.at, &new, trace)
            .await
            .map(|attempts| (new.len(), attempts))
            .map_err(|e| e.to_string())
    }

    /// The layer's blob in the cache's repository: already there, mounted from the
    /// destination's, or uploaded from the file built.
    async fn ensure_blob(&self, b: &LayerBlob) -> Result<()> {
        let repo = &self.at.repository;
        // The image was just pushed to this very repository: its blobs are there (a blob is
        // never asked about again once its upload is committed).
        if self.dest.as_ref().is_some_and(|(_, d)| d == repo) {
            return Ok(());
        }
        if super::push::has_blob(&self.client, repo, &b.digest).await? {
            return Ok(());
        }
        if let Some((_, from)) = &self.dest
            && from != repo
            && super::push::mount_blob(&self.client, repo, from, &b.digest).await?
        {
            return Ok(());
        }
        super::push::push_file(&self.client, repo, &b.digest, b.size, &b.path).await
    }

    /// Upload the layer's remembered file-system index (when the Lambda checks made one).
    async fn push_index(&self, diff_id: &Digest) -> Option<Blob> {
        let index = fsindex::load(&self.cache_dir, diff_id)?;
        let bytes = serde_json::to_vec(&index).ok()?;
        let size = bytes.len() as u64;
        let digest = super::push::push_bytes(&self.client, &self.at.repository, bytes)
            .await
            .ok()?;
        Some(Blob {
            digest: digest.to_string(),
            size,
        })
    }
}

/// The layers a build actually built, by content key (what it records in the registry
/// cache), after telling `log` what the cache's lookups warned about.
pub fn built_by_key(
    got: &[(Provenance, Option<String>)],
    built: &[LayerBlob],
    shared: Option<&Shared>,
    log: &mut (dyn FnMut(String) + Send),
) -> Vec<(String, LayerBlob)> {
    let Some(c) = shared else { return Vec::new() };
    c.take_warnings().into_iter().for_each(&mut *log);
    got.iter()
        .zip(built)
        .filter(|((p, _), _)| *p == Provenance::Built)
        .filter_map(|((_, k), b)| Some((k.clone()?, b.clone())))
        .collect()
}

impl Shared {
    /// The registry cache of a build to `to` (`--cache` at `at`, or the default), read when a
    /// layer first needs it; `None` without one, or when its registry cannot be reached (a warning to `log`:
    /// the build goes on without it). `session` is the build's connection to a registry
    /// destination, reused when the cache is on the same registry.
    pub async fn for_build(
        at: Option<RegistryRef>,
        to: &ImageRef,
        session: Option<Arc<Client>>,
        lambda_check: bool,
        opts: &super::Options,
        log: &mut (dyn FnMut(String) + Send),
    ) -> Option<Arc<Shared>> {
        let at = at?;
        let same = session.filter(|c| c.registry() == at.registry);
        let client = match &same {
            Some(c) => c.clone(),
            None => match Client::connect(&at.registry, at.api_host(), opts).await {
                Ok(c) => Arc::new(c),
                Err(e) => {
                    log(one_line(format!(
                        "warning: registry cache docker://{at} not used: {e}"
                    )));
                    return None;
                }
            },
        };
        let dest = match (to, same) {
            (ImageRef::Docker(r), Some(c)) => Some((c, r.repository.clone())),
            _ => None,
        };
        let need_index = lambda_check && matches!(to, ImageRef::Docker(_));
        let cache_dir = opts.cache_dir.clone();
        Some(Arc::new(Shared::open(
            at, client, dest, need_index, cache_dir,
        )))
    }

    /// Whether the cache lives in the destination's own repository (the default): its entries
    /// then name blobs the image push puts there, and recording can run alongside that push.
    pub fn in_destination(&self) -> bool {
        self.dest
            .as_ref()
            .is_some_and(|(_, d)| *d == self.at.repository)
    }

    /// [`Shared::record`], telling `log` what was added, or why nothing could be.
    pub async fn record_logged(
        &self,
        built: &[(String, LayerBlob)],
        log: &mut (dyn FnMut(String) + Send),
    ) {
        let at = &self.at;
        let mut traces = Vec::new();
        let got = self.record(built, &mut |t| traces.push(t)).await;
        // Reading the cache for the record (a `--no-cache` build looked nothing up) said so.
        self.take_warnings().into_iter().for_each(&mut *log);
        if self.client.opts.debug {
            for t in traces {
                log(format!("debug: registry cache docker://{at}: {t}"));
            }
        }
        match got {
            Ok((0, _)) => {}
            Ok((n, 1)) => log(format!("registry cache docker://{at}: {n} entries added")),
            Ok((n, k)) => log(format!(
                "registry cache docker://{at}: {n} entries added (another build wrote it too: {k} attempts)"
            )),
            Err(e) => log(one_line(format!(
                "warning: registry cache docker://{at} not updated: {e}; the image is not affected"
            ))),
        }
    }
}

/// A warning on one line: the cache is an optimization, so whatever went wrong with it (a
/// registry's multi-line error body included) takes one line of the build's output.
fn one_line(m: String) -> String {
    m.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The media type of the layers lamina builds.
const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// The sha256 of a gzip blob's uncompressed bytes.
fn diff_id_of(path: &Path) -> std::io::Result<Digest> {
    let f = crate::image::blob::open_regular(path)?;
    let gz = flate2::read::MultiGzDecoder::new(std::io::BufReader::with_capacity(1 << 20, f));
    crate::digest::hash_reader(gz).map(|(d, _)| d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(added: u64) -> Entry {
        Entry {
            digest: Digest::of(&added.to_le_bytes()).to_string(),
            diff_id: Digest::of(b"x").to_string(),
            size: 1,
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            index: None,
            added,
        }
    }

    /// Merging keeps existing entries, adds new ones, and drops the oldest past the bound.
    #[test]
    fn merge_is_a_bounded_union() {
        let mut have: BTreeMap<String, Entry> = (0..MAX_ENTRIES as u64)
            .map(|i| (format!("k{i}"), entry(i + 10)))
            .collect();
        let new: BTreeMap<String, Entry> = [("new".to_owned(), entry(99_999))].into();
        assert!(merge(&mut have, &new));
        assert_eq!(have.len(), MAX_ENTRIES);
        assert!(have.contains_key("new"));
        assert!(!have.contains_key("k0"), "the oldest entry is dropped");
        assert!(!merge(&mut have, &new), "nothing new: no change");
    }

    /// A manifest of another artifactType is not read as the cache.
    #[test]
    fn a_foreign_artifact_is_refused() {
        let data = Blob {
            digest: Digest::of(b"{}").to_string(),
            size: 2,
        };
        let ours = manifest_bytes(&data);
        assert_eq!(data_descriptor(&ours).unwrap(), data);
        let foreign = String::from_utf8(ours)
            .unwrap()
            .replace(ARTIFACT_TYPE, "application/vnd.example+json");
        let why = data_descriptor(foreign.as_bytes()).unwrap_err();
        assert!(why.contains("not a lamina cache"), "{why}");
    }
}
