//! [`FakeRegistry`]: a registry on 127.0.0.1 whose answers the test writes itself — endless,
//! trickling or silent bodies, odd token realms — recording the head of every request. Every
//! answer is bounded in time and bytes; the server stops on drop.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::{LoopServer, RequestHead, bind_loopback, read_head, respond};

/// A fake registry (see the module doc).
pub struct FakeRegistry {
    /// `127.0.0.1:PORT`
    pub host: String,
    log: Arc<Mutex<Vec<RequestHead>>>,
    _server: LoopServer,
}

impl FakeRegistry {
    /// Serve on a fresh loopback port: `answer` gets each request's head and the connection
    /// to write its answer on (one request per connection).
    pub fn start<F>(answer: F) -> FakeRegistry
    where
        F: Fn(&RequestHead, &mut Conn) -> io::Result<()> + Send + Sync + 'static,
    {
        let log = Arc::new(Mutex::new(Vec::new()));
        let l = log.clone();
        let server = LoopServer::start(bind_loopback(), move |mut stream| {
            let Ok(Some((head, leftover))) = read_head(&mut stream) else {
                return;
            };
            l.lock().unwrap().push(head.clone());
            let _ = answer(&head, &mut Conn { stream, leftover });
        });
        FakeRegistry {
            host: server.host(),
            log,
            _server: server,
        }
    }

    /// `docker://HOST/REPO_TAG`
    pub fn reference(&self, repo_tag: &str) -> String {
        format!("docker://{}/{repo_tag}", self.host)
    }

    /// The heads of the requests received so far.
    pub fn requests(&self) -> Vec<RequestHead> {
        self.log.lock().unwrap().clone()
    }
}

/// A connection to a [`FakeRegistry`]: the stream (through `Deref`), and what was read of the
/// request body with its head.
pub struct Conn {
    stream: TcpStream,
    leftover: Vec<u8>,
}

impl Conn {
    /// Up to `n` bytes of the request body (fewer if the client stops sending).
    pub fn body_up_to(&mut self, n: u64) -> io::Result<Vec<u8>> {
        let mut body = std::mem::take(&mut self.leftover);
        body.truncate(n as usize);
        let mut buf = vec![0u8; 1 << 16];
        while (body.len() as u64) < n {
            let want = (n - body.len() as u64).min(buf.len() as u64) as usize;
            let got = self.stream.read(&mut buf[..want])?;
            if got == 0 {
                break;
            }
            body.extend_from_slice(&buf[..got]);
        }
        Ok(body)
    }

    /// The request body as its `Content-Length` says.
    pub fn body(&mut self, head: &RequestHead) -> io::Result<Vec<u8>> {
        let len = head
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        self.body_up_to(len)
    }
}

impl std::ops::Deref for Conn {
    type Target = TcpStream;
    fn deref(&self) -> &TcpStream {
        &self.stream
    }
}

impl std::ops::DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut TcpStream {
        &mut self.stream
    }
}

/// Answer `GET /v2/` as an open registry does; `false` for any other request.
pub fn answer_ping(head: &RequestHead, stream: &mut TcpStream) -> io::Result<bool> {
    if head.path() != "/v2/" {
        return Ok(false);
    }
    respond(stream, 200, &[], b"{}", head.method == "HEAD")?;
    Ok(true)
}

/// Write a response head with no `Content-Length`: the body runs until the connection closes.
pub fn open_head(stream: &mut TcpStream, status: u16, content_type: &str) -> io::Result<()> {
    write!(
        stream,
        "HTTP/1.1 {status} Status\r\nContent-Type: {content_type}\r\nConnection: close\r\n\r\n"
    )?;
    stream.flush()
}

/// Send an endless body (`{` then spaces, in 64 KiB blocks) until the client hangs up, `limit`
/// bytes went out, or a minute passed. Returns the bytes written.
pub fn endless_body(stream: &mut TcpStream, limit: u64) -> u64 {
    let block = [b' '; 64 * 1024];
    let started = Instant::now();
    let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
    let mut sent = match stream.write_all(b"{") {
        Ok(()) => 1,
        Err(_) => return 0,
    };
    while sent < limit && started.elapsed() < Duration::from_secs(60) {
        if stream.write_all(&block).is_err() {
            break;
        }
        sent += block.len() as u64;
    }
    sent
}

/// Send one byte of `body` every `every`, until it is all sent, the client hangs up, or
/// `max` passed.
pub fn trickle(stream: &mut TcpStream, body: &[u8], every: Duration, max: Duration) {
    let started = Instant::now();
    for b in body {
        if started.elapsed() > max || stream.write_all(&[*b]).is_err() || stream.flush().is_err() {
            return;
        }
        thread::sleep(every);
    }
}

/// Say nothing more until the client hangs up or `max` passed.
pub fn hold_silent(stream: &mut TcpStream, max: Duration) {
    let started = Instant::now();
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = [0u8; 4096];
    while started.elapsed() < max {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

/// What an [`EcrLikeRegistry`] saw of one PATCH.
#[derive(Clone, Debug)]
pub struct Patch {
    /// The upload session.
    pub session: String,
    /// Its `Content-Range` header, if any.
    pub content_range: Option<String>,
    /// Bytes of the session before this PATCH.
    pub held_before: u64,
    /// Cut by the registry before its body was read.
    pub cut: bool,
}

#[derive(Default)]
struct EcrState {
    next: u64,
    /// Session id ─► (bytes held, end of the first PATCH's data: the `Range` ECR keeps answering).
    sessions: std::collections::HashMap<String, (Vec<u8>, Option<u64>)>,
    blobs: std::collections::HashMap<String, Vec<u8>>,
    manifests: std::collections::HashMap<String, Vec<u8>>,
    patches: Vec<Patch>,
    status_gets: usize,
    cut_over: Option<u64>,
    /// Read PATCH bodies 1 MiB at a time, pausing this long after each.
    slow: Option<Duration>,
}

/// An open registry that takes uploads the way ECR does (aws/containers-roadmap#2831): it keeps
/// every PATCH's bytes, answers 201 to each, and its `Range` stays at the end of a session's
/// first PATCH. With `cut_over`, the first PATCH longer than that many bytes is cut after 1 MiB
/// (what arrived is kept). Blobs are committed only when their bytes match the digest.
pub struct EcrLikeRegistry {
    pub reg: FakeRegistry,
    state: Arc<Mutex<EcrState>>,
}

impl EcrLikeRegistry {
    pub fn start(cut_over: Option<u64>) -> EcrLikeRegistry {
        EcrLikeRegistry::with(cut_over, None)
    }

    /// [`EcrLikeRegistry::start`], reading upload bodies 1 MiB at a time with a pause of
    /// `slow` after each (a slow link).
    pub fn with(cut_over: Option<u64>, slow: Option<Duration>) -> EcrLikeRegistry {
        let state = Arc::new(Mutex::new(EcrState {
            cut_over,
            slow,
            ..EcrState::default()
        }));
        let st = state.clone();
        let reg = FakeRegistry::start(move |head, s| ecr_like_answer(head, s, &st));
        EcrLikeRegistry { reg, state }
    }

    /// Every PATCH, in order.
    pub fn patches(&self) -> Vec<Patch> {
        self.state.lock().unwrap().patches.clone()
    }

    /// GETs of an upload's status (what a client asks to resume from `Range`).
    pub fn status_gets(&self) -> usize {
        self.state.lock().unwrap().status_gets
    }

    /// A committed blob's bytes.
    pub fn blob(&self, digest: &str) -> Option<Vec<u8>> {
        self.state.lock().unwrap().blobs.get(digest).cloned()
    }

    /// A pushed manifest's bytes, by tag.
    pub fn manifest(&self, tag: &str) -> Option<Vec<u8>> {
        self.state.lock().unwrap().manifests.get(tag).cloned()
    }
}

fn ecr_like_answer(head: &RequestHead, s: &mut Conn, st: &Mutex<EcrState>) -> io::Result<()> {
    if answer_ping(head, s)? {
        return Ok(());
    }
    let path = head.path().to_owned();
    let Some((repo, rest)) = path.strip_prefix("/v2/").and_then(|p| {
        p.split_once("/blobs/")
            .or_else(|| p.split_once("/manifests/"))
    }) else {
        return respond(s, 404, &[], b"", false);
    };
    let is_manifest = path.contains("/manifests/");
    let upload_loc = |id: &str| format!("/v2/{repo}/blobs/uploads/{id}");
    match (head.method.as_str(), rest) {
        ("PUT", tag) if is_manifest => {
            let body = s.body(head)?;
            st.lock().unwrap().manifests.insert(tag.to_owned(), body);
            respond(s, 201, &[], b"", false)
        }
        ("HEAD", digest) if !is_manifest && !rest.starts_with("uploads") => {
            let len = st.lock().unwrap().blobs.get(digest).map(Vec::len);
            match len {
                Some(n) => respond(
                    s,
                    200,
                    &[("Docker-Content-Digest", digest.to_owned())],
                    &vec![0; n],
                    true,
                ),
                None => respond(s, 404, &[], b"", true),
            }
        }
        ("POST", "uploads/") => {
            let id = {
                let mut g = st.lock().unwrap();
                g.next += 1;
                let id = format!("s{}", g.next);
                g.sessions.insert(id.clone(), (Vec::new(), None));
                id
            };
            respond(s, 202, &[("Location", upload_loc(&id))], b"", false)
        }
        ("PATCH", r) => ecr_like_patch(head, s, st, r.trim_start_matches("uploads/"), &upload_loc),
        ("GET", r) if r.starts_with("uploads/") => {
            let id = r.trim_start_matches("uploads/");
            let mut g = st.lock().unwrap();
            g.status_gets += 1;
            let range = g.sessions.get(id).and_then(|x| x.1).unwrap_or(0);
            drop(g);
            respond(
                s,
                204,
                &[
                    ("Location", upload_loc(id)),
                    ("Range", format!("0-{range}")),
                ],
                b"",
                false,
            )
        }
        ("PUT", r) if r.starts_with("uploads/") => {
            let id = r.trim_start_matches("uploads/");
            let digest = head
                .query()
                .into_iter()
                .find(|(k, _)| k == "digest")
                .map(|(_, v)| v);
            let mut g = st.lock().unwrap();
            let data = g.sessions.get(id).map(|x| x.0.clone()).unwrap_or_default();
            match digest {
                Some(d) if super::sha256_digest(&data) == d => {
                    g.blobs.insert(d, data);
                    drop(g);
                    respond(s, 201, &[], b"", false)
                }
                _ => {
                    drop(g);
                    respond(
                        s,
                        400,
                        &[],
                        b"{\"errors\":[{\"code\":\"DIGEST_INVALID\"}]}",
                        false,
                    )
                }
            }
        }
        _ => respond(s, 404, &[], b"", false),
    }
}

fn ecr_like_patch(
    head: &RequestHead,
    s: &mut Conn,
    st: &Mutex<EcrState>,
    id: &str,
    upload_loc: &dyn Fn(&str) -> String,
) -> io::Result<()> {
    let len: u64 = head
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let (held_before, cut) = {
        let mut g = st.lock().unwrap();
        let held = g.sessions.get(id).map_or(0, |x| x.0.len() as u64);
        let cut = g.cut_over.is_some_and(|c| len > c);
        if cut {
            g.cut_over = None;
        }
        g.patches.push(Patch {
            session: id.to_owned(),
            content_range: head.header("content-range").map(str::to_owned),
            held_before: held,
            cut,
        });
        (held, cut)
    };
    let want = if cut { 1 << 20 } else { len };
    let slow = st.lock().unwrap().slow;
    let body = match slow {
        None => s.body_up_to(want)?,
        Some(pause) => {
            let mut body = Vec::new();
            while (body.len() as u64) < want {
                let step = s.body_up_to((want - body.len() as u64).min(1 << 20))?;
                if step.is_empty() {
                    break;
                }
                body.extend_from_slice(&step);
                thread::sleep(pause);
            }
            body
        }
    };
    let range = {
        let mut g = st.lock().unwrap();
        let sess = g.sessions.entry(id.to_owned()).or_default();
        sess.0.extend_from_slice(&body);
        *sess.1.get_or_insert(held_before + body.len() as u64 - 1)
    };
    if cut {
        let _ = s.shutdown(std::net::Shutdown::Both);
        return Ok(());
    }
    respond(
        s,
        201,
        &[
            ("Location", upload_loc(id)),
            ("Range", format!("0-{range}")),
        ],
        b"",
        false,
    )
}
