//! [`RedirectRegistry`]: a real `docker-registry` (TLS + htpasswd basic auth) whose own
//! `redirect` storage middleware answers every blob read with a `307` to a storage server on
//! another host name; only that storage server is written here, to record whether credentials
//! reached it.

use std::fs;
use std::io;
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use super::{LoopServer, Registry, bind_loopback, read_head, respond};

/// Where distribution's filesystem driver keeps blobs, below its root directory; the redirect
/// middleware appends this path (and the blob's) to its base URL.
const BLOBS: &str = "docker/registry/v2/blobs/sha256/";

#[derive(Default)]
struct StorageState {
    /// The registry's storage root (its `rootdirectory`), known once the registry is up.
    root: OnceLock<PathBuf>,
    requests: AtomicUsize,
    with_auth: AtomicUsize,
}

/// A [`Registry::tls_basic_redirecting`] at `127.0.0.1`, redirecting blob reads to a storage
/// server addressed as `localhost` (another host, as far as an HTTP client can tell) that serves
/// the registry's own blob files and records whether an `Authorization` header reached it.
/// Stopped on drop.
pub struct RedirectRegistry {
    /// The registry (`127.0.0.1:PORT`, its CA, its credentials).
    pub registry: Registry,
    /// `127.0.0.1:PORT` of the registry.
    pub host: String,
    /// `localhost:PORT` of the storage server.
    pub storage_host: String,
    state: Arc<StorageState>,
    _storage: LoopServer,
}

/// Start a [`RedirectRegistry`] that knows `user`/`password`; it holds nothing yet.
pub fn redirect_registry(user: &str, password: &str) -> RedirectRegistry {
    let state = Arc::new(StorageState::default());
    let st = state.clone();
    let storage = LoopServer::start(bind_loopback(), move |s| {
        let _ = storage_conn(s, &st);
    });
    let storage_host = format!("localhost:{}", storage.addr.port());
    let registry =
        Registry::tls_basic_redirecting(user, password, &format!("http://{storage_host}/"));
    state
        .root
        .set(registry.dir.join("data"))
        .expect("storage root set once");
    RedirectRegistry {
        host: registry.host.clone(),
        registry,
        storage_host,
        state,
        _storage: storage,
    }
}

impl RedirectRegistry {
    /// `docker://HOST/REPO_TAG`
    pub fn reference(&self, repo_tag: &str) -> String {
        self.registry.reference(repo_tag)
    }
    /// Blob GETs the registry answered with a redirect (from its access log).
    pub fn redirected_gets(&self) -> usize {
        self.registry
            .log()
            .lines()
            .filter(|l| l.contains("\"GET /v2/") && l.contains("/blobs/sha256:"))
            .filter(|l| l.contains("\" 307 "))
            .count()
    }
    /// Requests the storage server received.
    pub fn storage_requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }
    /// Storage requests that carried any `Authorization` header.
    pub fn storage_with_auth(&self) -> usize {
        self.state.with_auth.load(Ordering::SeqCst)
    }
}

/// The file of the blob at `path` (`/docker/registry/v2/blobs/sha256/XX/HEX/data`, nothing
/// else) in the registry's storage.
fn blob_file(st: &StorageState, path: &str) -> Option<PathBuf> {
    let rel = path.strip_prefix('/')?;
    let (prefix, hex) = rel
        .strip_prefix(BLOBS)?
        .strip_suffix("/data")?
        .split_once('/')?;
    let hex_ok = hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit());
    if !(hex_ok && prefix.len() == 2 && hex.starts_with(prefix)) {
        return None;
    }
    Some(st.root.get()?.join(rel))
}

fn storage_conn(mut stream: TcpStream, st: &StorageState) -> io::Result<()> {
    let Some((head, _)) = read_head(&mut stream)? else {
        return Ok(());
    };
    st.requests.fetch_add(1, Ordering::SeqCst);
    if head.header("authorization").is_some() {
        st.with_auth.fetch_add(1, Ordering::SeqCst);
    }
    let head_only = head.method == "HEAD";
    match blob_file(st, head.path()).and_then(|f| fs::read(f).ok()) {
        Some(bytes) => respond(
            &mut stream,
            200,
            &[("Content-Type", "application/octet-stream".into())],
            &bytes,
            head_only,
        ),
        None => respond(&mut stream, 404, &[], b"no such blob", head_only),
    }
}
