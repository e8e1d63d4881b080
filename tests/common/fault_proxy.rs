//! [`FaultProxy`]: an HTTP/1.1 proxy in front of a plain registry, one request per
//! connection, that can answer 503 or cut a request body mid-way, and counts what it saw
//! (method, target and request headers).

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{IO_TIMEOUT, LoopServer, RequestHead, bind_loopback, read_head, respond};

/// Which requests a fault applies to: any of `methods` (all when empty) whose path contains
/// `path`.
#[derive(Clone, Debug)]
pub struct Match {
    pub methods: Vec<String>,
    pub path: String,
}

impl Match {
    pub fn new(methods: &[&str], path_contains: &str) -> Match {
        Match {
            methods: methods.iter().map(|m| (*m).to_owned()).collect(),
            path: path_contains.to_owned(),
        }
    }

    pub fn matches(&self, method: &str, path: &str) -> bool {
        (self.methods.is_empty() || self.methods.iter().any(|m| m.eq_ignore_ascii_case(method)))
            && path.contains(&self.path)
    }
}

#[derive(Clone, Debug)]
enum Fault {
    /// Answer with this status (and `Retry-After` when given) instead of forwarding.
    Status {
        code: u16,
        retry_after: Option<String>,
        /// The distribution error code in the body (`UNAVAILABLE` when none).
        error: Option<String>,
    },
    /// Cut the request body after this many bytes.
    CutAfter { bytes: u64 },
    /// Forward the request, but relay only this many bytes of the answer, then close.
    CutResponse { bytes: u64 },
}

#[derive(Debug)]
struct Rule {
    fault: Fault,
    matching: Match,
    remaining: usize,
    fired: usize,
}

/// One request seen by the proxy.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    /// Request target (path and query).
    pub target: String,
    /// What the proxy did: "forwarded", "503" or "cut".
    pub outcome: &'static str,
    /// When its head arrived.
    pub at: Instant,
    /// Its request headers, as sent by the client.
    pub headers: Vec<(String, String)>,
    /// The first [`BODY_KEPT`] bytes of its body as they came (chunk framing included).
    pub body: Vec<u8>,
}

/// How much of each request body [`Seen`] keeps.
pub const BODY_KEPT: usize = 64 * 1024;

impl Seen {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct ProxyState {
    rules: Mutex<Vec<Rule>>,
    seen: Mutex<Vec<Seen>>,
    /// Upload sessions (by the id in `/blobs/uploads/ID`) with a PATCH or PUT in progress, each
    /// with its number of such requests; and the most sessions there ever were at once. Counted
    /// by session, since one session's PUT may start while the proxy still relays the end of
    /// its PATCH's answer.
    uploads_now: Mutex<BTreeMap<String, usize>>,
    uploads_max: AtomicUsize,
}

/// Counts one upload request in progress, under its session, for as long as it lives.
struct InFlight<'a> {
    st: &'a ProxyState,
    session: String,
}

impl<'a> InFlight<'a> {
    fn start(st: &'a ProxyState, session: &str) -> InFlight<'a> {
        let mut now = st.uploads_now.lock().unwrap();
        *now.entry(session.to_owned()).or_insert(0) += 1;
        st.uploads_max.fetch_max(now.len(), Ordering::SeqCst);
        InFlight {
            st,
            session: session.to_owned(),
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut now = self.st.uploads_now.lock().unwrap();
        if let Some(n) = now.get_mut(&self.session) {
            *n -= 1;
            if *n == 0 {
                now.remove(&self.session);
            }
        }
    }
}

/// The upload session id of a PATCH or PUT to `/v2/REPO/blobs/uploads/ID[?…]`.
fn upload_session(head: &RequestHead) -> Option<&str> {
    if head.method != "PATCH" && head.method != "PUT" {
        return None;
    }
    let (_, rest) = head.path().split_once("/blobs/uploads/")?;
    Some(rest).filter(|id| !id.is_empty())
}

/// A loopback HTTP/1.1 proxy in front of a plain-HTTP registry. It handles one request per
/// client connection (`Connection: close` both ways), forwarding the request head and body
/// (Content-Length or chunked) and then the response until EOF, unless a fault rule says
/// otherwise. The `Host` header is passed unchanged, so the registry's `Location` headers point
/// back at the proxy. Stopped on drop.
pub struct FaultProxy {
    upstream: String,
    state: Arc<ProxyState>,
    server: LoopServer,
}

impl FaultProxy {
    /// A proxy in front of `upstream` (`127.0.0.1:PORT`, plain HTTP).
    pub fn new(upstream: &str) -> FaultProxy {
        let state = Arc::new(ProxyState::default());
        let st = state.clone();
        let up = upstream.to_owned();
        let server = LoopServer::start(bind_loopback(), move |client| {
            let _ = proxy_conn(client, &up, &st);
        });
        FaultProxy {
            upstream: upstream.to_owned(),
            state,
            server,
        }
    }

    /// `127.0.0.1:PORT` of the proxy.
    pub fn addr(&self) -> String {
        self.server.host()
    }

    pub fn upstream(&self) -> &str {
        &self.upstream
    }

    /// `docker://PROXY/REPO_TAG`
    pub fn reference(&self, repo_tag: &str) -> String {
        format!("docker://{}/{repo_tag}", self.addr())
    }

    /// Answer the next `n` matching requests with `503 Service Unavailable` (with
    /// `Retry-After: 1` when `retry_after`), after reading their bodies.
    pub fn fail_503(&self, n: usize, matching: Match, retry_after: bool) {
        self.fail_status(n, 503, matching, retry_after.then(|| "1".to_owned()));
    }

    /// Answer the next `n` matching requests with status `code` (and this `Retry-After` value:
    /// seconds or an HTTP date), after reading their bodies.
    pub fn fail_status(&self, n: usize, code: u16, matching: Match, retry_after: Option<String>) {
        self.add_rule(
            Fault::Status {
                code,
                retry_after,
                error: None,
            },
            matching,
            n,
        );
    }

    /// Answer the next `n` matching requests with status `code` and a distribution error body
    /// whose code is `error` (`MANIFEST_BLOB_UNKNOWN`, say), after reading their bodies.
    pub fn fail_with_error(&self, n: usize, code: u16, error: &str, matching: Match) {
        self.add_rule(
            Fault::Status {
                code,
                retry_after: None,
                error: Some(error.to_owned()),
            },
            matching,
            n,
        );
    }

    /// For the next `n` matching requests, forward the request but relay only the first
    /// `bytes` of the answer (head included), then close the connection.
    pub fn cut_response_after(&self, n: usize, bytes: u64, matching: Match) {
        self.add_rule(Fault::CutResponse { bytes }, matching, n);
    }

    /// For the next `n` matching requests whose body is longer than `bytes`, forward only the
    /// first `bytes` of the body (as sent on the wire: chunked framing counts) and then close
    /// both connections.
    pub fn cut_after(&self, n: usize, bytes: u64, matching: Match) {
        self.add_rule(Fault::CutAfter { bytes }, matching, n);
    }

    fn add_rule(&self, fault: Fault, matching: Match, n: usize) {
        self.state.rules.lock().unwrap().push(Rule {
            fault,
            matching,
            remaining: n,
            fired: 0,
        });
    }

    /// How many faults (503s and cuts) were injected so far.
    pub fn faults_injected(&self) -> usize {
        self.state
            .rules
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.fired)
            .sum()
    }

    /// Every request seen, in arrival order.
    pub fn requests(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// Requests seen whose header `name` has a value ending with `suffix` (the AWS SDK names
    /// its operation in `X-Amz-Target: SERVICE.OPERATION`).
    pub fn count_header(&self, name: &str, suffix: &str) -> usize {
        self.state
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.header(name).is_some_and(|v| v.ends_with(suffix)))
            .count()
    }

    /// Requests seen by method.
    pub fn counts_by_method(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for s in self.state.seen.lock().unwrap().iter() {
            *m.entry(s.method.clone()).or_insert(0) += 1;
        }
        m
    }

    /// Requests seen with `method` (any when empty) whose target contains `path_contains`.
    pub fn count(&self, method: &str, path_contains: &str) -> usize {
        self.state
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| {
                (method.is_empty() || s.method.eq_ignore_ascii_case(method))
                    && s.target.contains(path_contains)
            })
            .count()
    }

    /// The most blob upload sessions that had a request (PATCH or PUT under
    /// `/blobs/uploads/`) in progress at once, from its request head to the end of its answer.
    pub fn max_concurrent_uploads(&self) -> usize {
        self.state.uploads_max.load(Ordering::SeqCst)
    }

    /// Forget the requests seen so far (rules stay).
    pub fn reset_counts(&self) {
        self.state.seen.lock().unwrap().clear();
    }
}

/// Reads the bytes already buffered first, then the stream.
struct Prefixed<R> {
    buf: Vec<u8>,
    pos: usize,
    inner: R,
}

impl<R: Read> Read for Prefixed<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos < self.buf.len() {
            let n = out.len().min(self.buf.len() - self.pos);
            out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
            self.pos += n;
            return Ok(n);
        }
        self.inner.read(out)
    }
}

/// Writes body bytes upstream until an optional limit; at the limit, asks `on_limit` whether to
/// cut there.
struct Budget<'a> {
    out: &'a mut dyn Write,
    written: u64,
    limit: Option<u64>,
    on_limit: &'a mut dyn FnMut() -> bool,
    cut: bool,
    /// The first [`BODY_KEPT`] bytes forwarded.
    kept: Vec<u8>,
}

impl Budget<'_> {
    /// Forward `data`; `Ok(false)` once the body was cut.
    fn put(&mut self, data: &[u8]) -> io::Result<bool> {
        let room = BODY_KEPT.saturating_sub(self.kept.len()).min(data.len());
        self.kept.extend_from_slice(&data[..room]);
        if let Some(limit) = self.limit
            && self.written + data.len() as u64 > limit
        {
            if (self.on_limit)() {
                let allowed = (limit - self.written) as usize;
                self.out.write_all(&data[..allowed])?;
                self.out.flush()?;
                self.written += allowed as u64;
                self.cut = true;
                return Ok(false);
            }
            self.limit = None;
        }
        self.out.write_all(data)?;
        self.written += data.len() as u64;
        Ok(true)
    }
}

enum BodyKind {
    None,
    Length(u64),
    Chunked,
}

fn body_kind(head: &RequestHead) -> BodyKind {
    if head
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        BodyKind::Chunked
    } else if let Some(n) = head
        .header("content-length")
        .and_then(|v| v.trim().parse().ok())
    {
        BodyKind::Length(n)
    } else {
        BodyKind::None
    }
}

/// Copy a request body from `src` to `budget` per `kind`. `Ok(false)` if it was cut.
fn forward_body(kind: &BodyKind, src: &mut dyn Read, budget: &mut Budget) -> io::Result<bool> {
    match kind {
        BodyKind::None => Ok(true),
        BodyKind::Length(n) => {
            let mut left = *n;
            let mut buf = vec![0u8; 64 * 1024];
            while left > 0 {
                let want = buf.len().min(left as usize);
                let got = src.read(&mut buf[..want])?;
                if got == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                if !budget.put(&buf[..got])? {
                    return Ok(false);
                }
                left -= got as u64;
            }
            Ok(true)
        }
        BodyKind::Chunked => {
            let mut r = BufReader::new(src);
            loop {
                let mut line = Vec::new();
                if r.read_until(b'\n', &mut line)? == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                if !budget.put(&line)? {
                    return Ok(false);
                }
                let text = String::from_utf8_lossy(&line);
                let size_text = text
                    .trim()
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_owned();
                let size = u64::from_str_radix(&size_text, 16)
                    .map_err(|_| io::Error::other(format!("bad chunk size {size_text:?}")))?;
                if size == 0 {
                    // Trailers, up to the empty line.
                    loop {
                        let mut t = Vec::new();
                        if r.read_until(b'\n', &mut t)? == 0 {
                            return Err(io::ErrorKind::UnexpectedEof.into());
                        }
                        if !budget.put(&t)? {
                            return Ok(false);
                        }
                        if t == b"\r\n" || t == b"\n" {
                            return Ok(true);
                        }
                    }
                }
                let mut left = size + 2; // data and its CRLF
                let mut buf = vec![0u8; 64 * 1024];
                while left > 0 {
                    let want = buf.len().min(left as usize);
                    let got = r.read(&mut buf[..want])?;
                    if got == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                    if !budget.put(&buf[..got])? {
                        return Ok(false);
                    }
                    left -= got as u64;
                }
            }
        }
    }
}

fn proxy_conn(mut client: TcpStream, upstream: &str, st: &ProxyState) -> io::Result<()> {
    let Some((head, leftover)) = read_head(&mut client)? else {
        return Ok(());
    };
    let arrived = Instant::now();
    let _upload = upload_session(&head).map(|id| InFlight::start(st, id));
    let fault = pick_fault(st, &head);
    let record = |outcome: &'static str, body: Vec<u8>| {
        st.seen.lock().unwrap().push(Seen {
            method: head.method.clone(),
            target: head.target.clone(),
            outcome,
            at: arrived,
            headers: head.headers.clone(),
            body,
        })
    };
    let kind = body_kind(&head);
    let mut src = Prefixed {
        buf: leftover,
        pos: 0,
        inner: client.try_clone()?,
    };

    if let Some((
        _,
        Fault::Status {
            code,
            retry_after,
            error,
        },
    )) = &fault
    {
        record(if *code == 503 { "503" } else { "status" }, Vec::new());
        return answer_status(
            &mut client,
            &head,
            &kind,
            &mut src,
            (*code, error.as_deref().unwrap_or("UNAVAILABLE")),
            retry_after.as_deref(),
        );
    }
    let response_limit = match &fault {
        Some((_, Fault::CutResponse { bytes })) => Some(*bytes),
        _ => None,
    };

    let mut up = send_head_upstream(upstream, &head)?;
    let (limit, rule_index) = match fault {
        Some((i, Fault::CutAfter { bytes })) => (Some(bytes), Some(i)),
        _ => (None, None),
    };
    let mut take_cut = || {
        let Some(i) = rule_index else { return false };
        let mut rules = st.rules.lock().unwrap();
        let rule = &mut rules[i];
        if rule.remaining == 0 {
            return false;
        }
        rule.remaining -= 1;
        rule.fired += 1;
        true
    };
    let mut upw = up.try_clone()?;
    let mut budget = Budget {
        out: &mut upw,
        written: 0,
        limit,
        on_limit: &mut take_cut,
        cut: false,
        kept: Vec::new(),
    };
    let complete = match forward_body(&kind, &mut src, &mut budget) {
        Ok(c) => c,
        // The upstream answered and stopped reading before the whole body was sent (a
        // registry refusing an unknown upload does): relay its answer, as a proxy does.
        Err(_) if !budget.cut => {
            record("answered early", std::mem::take(&mut budget.kept));
            let _ = io::copy(&mut up, &mut client);
            let _ = client.flush();
            let _ = client.shutdown(Shutdown::Write);
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    if !complete || budget.cut {
        record("cut", std::mem::take(&mut budget.kept));
        let _ = up.shutdown(Shutdown::Both);
        let _ = client.shutdown(Shutdown::Both);
        return Ok(());
    }
    record("forwarded", std::mem::take(&mut budget.kept));
    up.flush()?;
    if let Some(n) = response_limit {
        // Relay the first bytes of the answer, then drop both connections mid-answer.
        let _ = io::copy(&mut (&mut up).take(n), &mut client);
        let _ = client.flush();
        let _ = client.shutdown(Shutdown::Both);
        let _ = up.shutdown(Shutdown::Both);
        return Ok(());
    }
    let _ = io::copy(&mut up, &mut client);
    let _ = client.flush();
    let _ = client.shutdown(Shutdown::Write);
    Ok(())
}

/// The first live rule matching `head`, by index. 503 rules are consumed here, cut rules only
/// when the cut happens.
fn pick_fault(st: &ProxyState, head: &RequestHead) -> Option<(usize, Fault)> {
    let path = head.path();
    let mut rules = st.rules.lock().unwrap();
    for (i, rule) in rules.iter_mut().enumerate() {
        if rule.remaining == 0 || !rule.matching.matches(&head.method, path) {
            continue;
        }
        if let Fault::Status { .. } | Fault::CutResponse { .. } = rule.fault {
            rule.remaining -= 1;
            rule.fired += 1;
        }
        return Some((i, rule.fault.clone()));
    }
    None
}

/// Read the request body to its end, then answer 503 (with `Retry-After: 1` when
/// `retry_after`).
fn answer_status(
    client: &mut TcpStream,
    head: &RequestHead,
    kind: &BodyKind,
    src: &mut dyn Read,
    (code, error): (u16, &str),
    retry_after: Option<&str>,
) -> io::Result<()> {
    let mut sink = io::sink();
    let mut never = || false;
    let mut budget = Budget {
        out: &mut sink,
        written: 0,
        limit: None,
        on_limit: &mut never,
        cut: false,
        kept: Vec::new(),
    };
    forward_body(kind, src, &mut budget)?;
    let mut headers = vec![("Content-Type", "application/json".to_owned())];
    if let Some(v) = retry_after {
        headers.push(("Retry-After", v.to_owned()));
    }
    let body = format!(r#"{{"errors":[{{"code":"{error}","message":"injected by FaultProxy"}}]}}"#);
    respond(
        client,
        code,
        &headers,
        body.as_bytes(),
        head.method == "HEAD",
    )
}

/// Connect to `upstream` and send it `head` with `Connection: close` instead of the client's
/// connection headers.
fn send_head_upstream(upstream: &str, head: &RequestHead) -> io::Result<TcpStream> {
    let up_addr: SocketAddr = upstream
        .parse()
        .map_err(|_| io::Error::other("bad upstream"))?;
    let mut up = TcpStream::connect_timeout(&up_addr, Duration::from_secs(5))?;
    up.set_read_timeout(Some(IO_TIMEOUT))?;
    up.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut out = format!("{} {} HTTP/1.1\r\n", head.method, head.target);
    for (k, v) in &head.headers {
        let lk = k.to_ascii_lowercase();
        if lk == "connection" || lk == "keep-alive" || lk == "proxy-connection" {
            continue;
        }
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("Connection: close\r\n\r\n");
    up.write_all(out.as_bytes())?;
    Ok(up)
}
