//! [`RedirectRegistry`]: a tiny read-only registry serving an OCI layout that requires basic
//! auth and answers blob GETs with a 307 to a storage server on another host name, which
//! records whether credentials reached it.

use std::fs;
use std::io;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;

use super::{
    LoopServer, MT_INDEX, MT_MANIFEST, REF_NAME, base64, basic_auth_header, bind_loopback, hex_of,
    is_sha256_digest, read_head, respond,
};

#[derive(Default)]
struct RedirectState {
    layout: PathBuf,
    user: String,
    password: String,
    storage_port: AtomicUsize,
    front_requests: AtomicUsize,
    front_authorized: AtomicUsize,
    redirects: AtomicUsize,
    storage_requests: AtomicUsize,
    storage_with_auth: AtomicUsize,
}

/// A read-only registry on `127.0.0.1` serving one OCI layout under any repository name. Every
/// route needs HTTP Basic credentials; blob GETs are answered with a `307` to a storage server
/// addressed as `localhost`, which serves the blob and records whether an `Authorization`
/// header reached it. Stopped on drop.
pub struct RedirectRegistry {
    /// `127.0.0.1:PORT` of the registry.
    pub host: String,
    /// `localhost:PORT` of the storage server.
    pub storage_host: String,
    pub user: String,
    pub password: String,
    state: Arc<RedirectState>,
    _front: LoopServer,
    _storage: LoopServer,
}

/// Serve `layout` (tags are its `org.opencontainers.image.ref.name` annotations) as described
/// on [`RedirectRegistry`].
pub fn redirect_server(layout: &Path, user: &str, password: &str) -> RedirectRegistry {
    let state = Arc::new(RedirectState {
        layout: layout.to_path_buf(),
        user: user.to_owned(),
        password: password.to_owned(),
        ..RedirectState::default()
    });
    let st = state.clone();
    let storage = LoopServer::start(bind_loopback(), move |s| {
        let _ = storage_conn(s, &st);
    });
    state
        .storage_port
        .store(usize::from(storage.addr.port()), Ordering::SeqCst);
    let st = state.clone();
    let front = LoopServer::start(bind_loopback(), move |s| {
        let _ = front_conn(s, &st);
    });
    RedirectRegistry {
        host: front.host(),
        storage_host: format!("localhost:{}", storage.addr.port()),
        user: user.to_owned(),
        password: password.to_owned(),
        state,
        _front: front,
        _storage: storage,
    }
}

impl RedirectRegistry {
    pub fn reference(&self, repo_tag: &str) -> String {
        format!("docker://{}/{repo_tag}", self.host)
    }
    /// Requests the registry (not the storage) received.
    pub fn front_requests(&self) -> usize {
        self.state.front_requests.load(Ordering::SeqCst)
    }
    /// Registry requests that carried the right credentials.
    pub fn front_authorized(&self) -> usize {
        self.state.front_authorized.load(Ordering::SeqCst)
    }
    /// Blob GETs answered with a redirect.
    pub fn redirects(&self) -> usize {
        self.state.redirects.load(Ordering::SeqCst)
    }
    /// Requests the storage server received.
    pub fn storage_requests(&self) -> usize {
        self.state.storage_requests.load(Ordering::SeqCst)
    }
    /// Storage requests that carried any `Authorization` header.
    pub fn storage_with_auth(&self) -> usize {
        self.state.storage_with_auth.load(Ordering::SeqCst)
    }
    /// `base64(user:password)`
    pub fn auth_b64(&self) -> String {
        base64(format!("{}:{}", self.user, self.password).as_bytes())
    }
}

fn layout_blob(layout: &Path, digest: &str) -> Option<Vec<u8>> {
    if !is_sha256_digest(digest) {
        return None;
    }
    fs::read(layout.join("blobs/sha256").join(hex_of(digest))).ok()
}

fn front_conn(mut stream: TcpStream, st: &RedirectState) -> io::Result<()> {
    let Some((head, _)) = read_head(&mut stream)? else {
        return Ok(());
    };
    st.front_requests.fetch_add(1, Ordering::SeqCst);
    let head_only = head.method == "HEAD";
    if head.method != "GET" && !head_only {
        return respond(&mut stream, 405, &[], b"read-only registry", false);
    }
    if head.header("authorization") != Some(basic_auth_header(&st.user, &st.password).as_str()) {
        let body = br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#;
        return respond(
            &mut stream,
            401,
            &[
                api_version(),
                ("Content-Type", "application/json".into()),
                ("WWW-Authenticate", "Basic realm=\"lamina-redirect\"".into()),
            ],
            body,
            head_only,
        );
    }
    st.front_authorized.fetch_add(1, Ordering::SeqCst);
    let path = head.path().to_owned();
    if path == "/v2/" || path == "/v2" {
        return respond(&mut stream, 200, &[api_version()], b"{}", head_only);
    }
    if let Some((_, reference)) = path.rsplit_once("/manifests/") {
        return serve_manifest(&mut stream, st, reference, head_only);
    }
    if let Some((_, digest)) = path.rsplit_once("/blobs/") {
        if layout_blob(&st.layout, digest).is_none() {
            return not_found(&mut stream, "BLOB_UNKNOWN", head_only);
        }
        st.redirects.fetch_add(1, Ordering::SeqCst);
        let location = format!(
            "http://localhost:{}/storage/{}?X-Signature=lamina-test",
            st.storage_port.load(Ordering::SeqCst),
            hex_of(digest)
        );
        return respond(
            &mut stream,
            307,
            &[api_version(), ("Location", location)],
            b"",
            head_only,
        );
    }
    not_found(&mut stream, "NAME_UNKNOWN", head_only)
}

fn api_version() -> (&'static str, String) {
    ("Docker-Distribution-API-Version", "registry/2.0".to_owned())
}

/// A registry 404 with the error `code`.
fn not_found(stream: &mut TcpStream, code: &str, head_only: bool) -> io::Result<()> {
    let body = format!(r#"{{"errors":[{{"code":"{code}","message":"not found"}}]}}"#);
    respond(
        stream,
        404,
        &[("Content-Type", "application/json".into()), api_version()],
        body.as_bytes(),
        head_only,
    )
}

/// Answer a manifest GET/HEAD for `reference` (a digest, or a tag of the layout's index).
fn serve_manifest(
    stream: &mut TcpStream,
    st: &RedirectState,
    reference: &str,
    head_only: bool,
) -> io::Result<()> {
    let (digest, media_type) = if reference.starts_with("sha256:") {
        (reference.to_owned(), None)
    } else {
        let index = fs::read(st.layout.join("index.json")).unwrap_or_default();
        let index: Value = serde_json::from_slice(&index).unwrap_or(Value::Null);
        let found = index["manifests"].as_array().and_then(|ds| {
            ds.iter()
                .find(|d| d["annotations"][REF_NAME].as_str() == Some(reference))
        });
        match found {
            Some(d) => (
                d["digest"].as_str().unwrap_or("").to_owned(),
                d["mediaType"].as_str().map(str::to_owned),
            ),
            None => return not_found(stream, "MANIFEST_UNKNOWN", head_only),
        }
    };
    let Some(bytes) = layout_blob(&st.layout, &digest) else {
        return not_found(stream, "MANIFEST_UNKNOWN", head_only);
    };
    let media_type = media_type.unwrap_or_else(|| {
        let doc: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        match doc["mediaType"].as_str() {
            Some(m) => m.to_owned(),
            None if doc.get("manifests").is_some() => MT_INDEX.to_owned(),
            None => MT_MANIFEST.to_owned(),
        }
    });
    respond(
        stream,
        200,
        &[
            api_version(),
            ("Content-Type", media_type),
            ("Docker-Content-Digest", digest),
        ],
        &bytes,
        head_only,
    )
}

fn storage_conn(mut stream: TcpStream, st: &RedirectState) -> io::Result<()> {
    let Some((head, _)) = read_head(&mut stream)? else {
        return Ok(());
    };
    st.storage_requests.fetch_add(1, Ordering::SeqCst);
    if head.header("authorization").is_some() {
        st.storage_with_auth.fetch_add(1, Ordering::SeqCst);
    }
    let head_only = head.method == "HEAD";
    let hex = head.path().strip_prefix("/storage/").unwrap_or("");
    match layout_blob(&st.layout, &format!("sha256:{hex}")) {
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
