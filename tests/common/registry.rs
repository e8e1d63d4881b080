//! Registry peers for the end-to-end tests, all on loopback and all state in temporary
//! directories:
//!
//! - [`Registry`]: CNCF distribution (`docker-registry serve`) in three flavours: plain HTTP,
//!   TLS + htpasswd basic auth, TLS + bearer-token auth served by a token server written here
//!   (RS256 JWTs signed with the `openssl` CLI). TLS material is generated at test time.
//! - [`FaultProxy`]: an HTTP/1.1 proxy in front of a plain registry, one request per connection,
//!   that can answer 503 or cut a request body mid-way, and counts what it saw.
//! - [`RedirectRegistry`]: a tiny read-only registry serving an OCI layout that requires basic
//!   auth and answers blob GETs with a 307 to a storage server on another host name, which records
//!   whether credentials reached it.
//!
//! Every wait is bounded; every process and server is stopped on drop.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tempfile::TempDir;

use super::{MT_INDEX, MT_MANIFEST, REF_NAME, describe, hex_of, require_tool, sha256_digest};

/// How long a peer may take to come up.
pub const STARTUP_DEADLINE: Duration = Duration::from_secs(20);
/// Socket timeouts of the servers written here.
const IO_TIMEOUT: Duration = Duration::from_secs(60);

pub const TOKEN_SERVICE: &str = "lamina-test";
pub const TOKEN_ISSUER: &str = "lamina-test-issuer";

// ---------------------------------------------------------------------------------------------
// base64
// ---------------------------------------------------------------------------------------------

const B64_STD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const B64_URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn b64_encode(data: &[u8], alphabet: &[u8; 64], pad: bool) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = [
            alphabet[(n >> 18) as usize & 63],
            alphabet[(n >> 12) as usize & 63],
            alphabet[(n >> 6) as usize & 63],
            alphabet[n as usize & 63],
        ];
        let keep = chunk.len() + 1;
        for (i, c) in chars.iter().enumerate() {
            if i < keep {
                out.push(*c as char);
            } else if pad {
                out.push('=');
            }
        }
    }
    out
}

/// Standard base64 with padding (RFC 4648 §4), as in HTTP Basic and docker's config.json.
pub fn base64(data: &[u8]) -> String {
    b64_encode(data, B64_STD, true)
}

/// URL-safe base64 without padding (RFC 4648 §5), as in JWTs.
pub fn base64url(data: &[u8]) -> String {
    b64_encode(data, B64_URL, false)
}

/// `Basic base64(user:password)`
pub fn basic_auth_header(user: &str, password: &str) -> String {
    format!("Basic {}", base64(format!("{user}:{password}").as_bytes()))
}

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

/// Run `cmd` to completion, feeding it `stdin`; kill it and panic if it takes longer than
/// `timeout`. Stdout and stderr are captured.
pub fn run_bounded(cmd: &mut Command, stdin: Option<&[u8]>, timeout: Duration) -> Output {
    let what = format!("{cmd:?}");
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let feeder = stdin.map(|data| {
        let data = data.to_vec();
        let mut pipe = child.stdin.take().expect("stdin pipe");
        thread::spawn(move || {
            let _ = pipe.write_all(&data);
        })
    });
    let mut out_pipe = child.stdout.take().expect("stdout pipe");
    let mut err_pipe = child.stderr.take().expect("stderr pipe");
    let out_reader = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out_pipe.read_to_end(&mut v);
        v
    });
    let err_reader = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err_pipe.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                let stdout = out_reader.join().unwrap_or_default();
                let stderr = err_reader.join().unwrap_or_default();
                panic!(
                    "{what} did not finish within {timeout:?}; killed it\n--- stdout ---\n{}\n--- stderr ---\n{}",
                    String::from_utf8_lossy(&stdout),
                    String::from_utf8_lossy(&stderr)
                );
            }
            Err(e) => panic!("waiting for {what}: {e}"),
        }
    };
    if let Some(f) = feeder {
        let _ = f.join();
    }
    Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    }
}

fn run_tool_ok(tool: &str, args: &[&str], stdin: Option<&[u8]>, cwd: &Path) -> Vec<u8> {
    let bin = require_tool(tool);
    let out = run_bounded(
        Command::new(&bin).args(args).current_dir(cwd),
        stdin,
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "{tool} {args:?} failed:\n{}",
        describe(&out)
    );
    out.stdout
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a Unix time.
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

// ---------------------------------------------------------------------------------------------
// TLS material
// ---------------------------------------------------------------------------------------------

/// A CA and a server certificate for `127.0.0.1` and `localhost` signed by it.
pub struct TlsFiles {
    /// PEM CA certificate (for `lamina --ca-cert`).
    pub ca_cert: PathBuf,
    /// A directory holding only `ca.crt` (for skopeo `--cert-dir`).
    pub cert_dir: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

/// Generate [`TlsFiles`] under `dir` with the openssl CLI (P-256 keys, valid for two days).
pub fn make_tls(dir: &Path) -> TlsFiles {
    fs::create_dir_all(dir).expect("mkdir tls");
    let cnf = dir.join("openssl.cnf");
    fs::write(
        &cnf,
        "[req]\n\
         distinguished_name = dn\n\
         prompt = no\n\
         [dn]\n\
         CN = lamina test CA\n\
         [v3_ca]\n\
         basicConstraints = critical,CA:TRUE\n\
         keyUsage = critical,keyCertSign,cRLSign\n\
         subjectKeyIdentifier = hash\n\
         [v3_server]\n\
         basicConstraints = critical,CA:FALSE\n\
         keyUsage = critical,digitalSignature,keyEncipherment\n\
         extendedKeyUsage = serverAuth\n\
         subjectAltName = IP:127.0.0.1,DNS:localhost\n\
         subjectKeyIdentifier = hash\n\
         authorityKeyIdentifier = keyid\n",
    )
    .expect("write openssl.cnf");
    let cnf_s = cnf.to_str().expect("utf-8 path");
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    let mut ca_args = vec!["req", "-x509", "-new", "-nodes", "-config", cnf_s];
    ca_args.extend_from_slice(&ec);
    ca_args.extend_from_slice(&[
        "-extensions",
        "v3_ca",
        "-days",
        "2",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    ]);
    run_tool_ok("openssl", &ca_args, None, dir);
    let mut csr_args = vec![
        "req",
        "-new",
        "-nodes",
        "-config",
        cnf_s,
        "-subj",
        "/CN=127.0.0.1",
    ];
    csr_args.extend_from_slice(&ec);
    csr_args.extend_from_slice(&["-keyout", "server.key", "-out", "server.csr"]);
    run_tool_ok("openssl", &csr_args, None, dir);
    run_tool_ok(
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-set_serial",
            "2",
            "-days",
            "2",
            "-extfile",
            cnf_s,
            "-extensions",
            "v3_server",
            "-out",
            "server.crt",
        ],
        None,
        dir,
    );
    let cert_dir = dir.join("certs.d");
    fs::create_dir_all(&cert_dir).expect("mkdir certs.d");
    fs::copy(dir.join("ca.crt"), cert_dir.join("ca.crt")).expect("copy ca.crt");
    TlsFiles {
        ca_cert: dir.join("ca.crt"),
        cert_dir,
        server_cert: dir.join("server.crt"),
        server_key: dir.join("server.key"),
    }
}

// ---------------------------------------------------------------------------------------------
// Minimal HTTP/1.1 plumbing for the servers written here
// ---------------------------------------------------------------------------------------------

/// A parsed request head.
#[derive(Clone, Debug)]
pub struct RequestHead {
    pub method: String,
    /// The request target as sent (path and query).
    pub target: String,
    pub headers: Vec<(String, String)>,
}

impl RequestHead {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    pub fn query(&self) -> Vec<(String, String)> {
        match self.target.split_once('?') {
            Some((_, q)) => parse_form(q),
            None => Vec::new(),
        }
    }
}

/// Decode `a=b&c=d` (percent-decoding, `+` as space).
pub fn parse_form(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Read a request head. `Ok(None)` when the peer sent nothing or something that is not HTTP
/// (for instance a TLS ClientHello from a client probing for HTTPS): the caller just closes.
/// Also returns the bytes read past the head.
fn read_head(stream: &mut TcpStream) -> io::Result<Option<(RequestHead, Vec<u8>)>> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    let end = loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
        if !buf[0].is_ascii_uppercase() {
            return Ok(None);
        }
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos;
        }
        if buf.len() > 64 * 1024 {
            return Ok(None);
        }
    };
    let leftover = buf[end + 4..].to_vec();
    let text = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or("");
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Ok(None);
    };
    if !version.starts_with("HTTP/1.") {
        return Ok(None);
    }
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Ok(Some((
        RequestHead {
            method: method.to_owned(),
            target: target.to_owned(),
            headers,
        },
        leftover,
    )))
}

/// The body of a simple request (Content-Length only; anything else is taken as empty).
fn read_simple_body(
    stream: &mut TcpStream,
    head: &RequestHead,
    mut leftover: Vec<u8>,
) -> io::Result<Vec<u8>> {
    let len: usize = head
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if len > 16 * 1024 * 1024 {
        return Err(io::Error::other("request body too large"));
    }
    while leftover.len() < len {
        let mut chunk = vec![0u8; len - leftover.len()];
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        leftover.extend_from_slice(&chunk[..n]);
    }
    leftover.truncate(len);
    Ok(leftover)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        307 => "Temporary Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// Write a complete response with `Content-Length` and `Connection: close`; for HEAD requests
/// (`head_only`) the body is left out but its length still announced.
fn respond(
    stream: &mut TcpStream,
    status: u16,
    headers: &[(&str, String)],
    body: &[u8],
    head_only: bool,
) -> io::Result<()> {
    let mut out = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    let mut bytes = out.into_bytes();
    if !head_only {
        bytes.extend_from_slice(body);
    }
    stream.write_all(&bytes)?;
    stream.flush()?;
    let _ = stream.shutdown(Shutdown::Write);
    // Let the client read the response before the socket goes away.
    let mut sink = [0u8; 1024];
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    while let Ok(n) = stream.read(&mut sink) {
        if n == 0 {
            break;
        }
    }
    Ok(())
}

/// A loopback accept loop running `handler` on a thread per connection; stopped on drop
/// (a shutdown flag plus a connection to itself to unblock `accept`).
struct LoopServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl LoopServer {
    fn start<F>(listener: TcpListener, handler: F) -> LoopServer
    where
        F: Fn(TcpStream) + Send + Sync + 'static,
    {
        let addr = listener.local_addr().expect("listener address");
        let stop = Arc::new(AtomicBool::new(false));
        let handler = Arc::new(handler);
        let flag = stop.clone();
        let accept = thread::spawn(move || {
            for conn in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                match conn {
                    Ok(stream) => {
                        let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
                        let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
                        let h = handler.clone();
                        thread::spawn(move || h(stream));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        LoopServer {
            addr,
            stop,
            accept: Some(accept),
        }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.addr.port())
    }
}

impl Drop for LoopServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn bind_loopback() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0")
}

// ---------------------------------------------------------------------------------------------
// Token server
// ---------------------------------------------------------------------------------------------

/// One request the token server answered.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    /// `None` for anonymous requests.
    pub user: Option<String>,
    pub scopes: Vec<String>,
    /// HTTP status of the answer.
    pub status: u16,
}

struct TokenState {
    user: String,
    password: String,
    key: PathBuf,
    x5c: String,
    count: Arc<AtomicUsize>,
    log: Mutex<Vec<TokenRequest>>,
}

/// A bearer-token server (the `realm` of distribution's `auth.token`), answering
/// `GET /token?service=..&scope=..` (and the OAuth2 `POST /token` password grant).
pub struct TokenServer {
    server: LoopServer,
    /// PEM of the self-signed RSA certificate the tokens are signed with (the registry's
    /// `rootcertbundle`).
    pub cert: PathBuf,
    state: Arc<TokenState>,
}

impl TokenServer {
    pub fn start(dir: &Path, user: &str, password: &str, count: Arc<AtomicUsize>) -> TokenServer {
        fs::create_dir_all(dir).expect("mkdir token dir");
        fs::write(
            dir.join("token.cnf"),
            "[req]\n\
             distinguished_name = dn\n\
             prompt = no\n\
             [dn]\n\
             CN = lamina test token signer\n\
             [v3_token]\n\
             basicConstraints = critical,CA:TRUE\n\
             keyUsage = critical,digitalSignature,keyCertSign\n\
             subjectKeyIdentifier = hash\n",
        )
        .expect("write token.cnf");
        run_tool_ok(
            "openssl",
            &[
                "req",
                "-x509",
                "-new",
                "-nodes",
                "-config",
                "token.cnf",
                "-extensions",
                "v3_token",
                "-newkey",
                "rsa:2048",
                "-days",
                "2",
                "-keyout",
                "token.key",
                "-out",
                "token.crt",
            ],
            None,
            dir,
        );
        let der = run_tool_ok(
            "openssl",
            &["x509", "-in", "token.crt", "-outform", "DER"],
            None,
            dir,
        );
        let state = Arc::new(TokenState {
            user: user.to_owned(),
            password: password.to_owned(),
            key: dir.join("token.key"),
            x5c: base64(&der),
            count,
            log: Mutex::new(Vec::new()),
        });
        let s = state.clone();
        let server = LoopServer::start(bind_loopback(), move |stream| {
            let _ = token_conn(stream, &s);
        });
        TokenServer {
            server,
            cert: dir.join("token.crt"),
            state,
        }
    }

    pub fn realm(&self) -> String {
        format!("http://{}/token", self.server.host())
    }

    pub fn requests(&self) -> Vec<TokenRequest> {
        self.state.log.lock().unwrap().clone()
    }
}

/// Who asks the token server for a token.
enum Caller {
    Anonymous,
    User(String),
    BadCredentials,
}

fn token_conn(mut stream: TcpStream, st: &TokenState) -> io::Result<()> {
    let Some((head, leftover)) = read_head(&mut stream)? else {
        return Ok(());
    };
    let body = read_simple_body(&mut stream, &head, leftover)?;
    st.count.fetch_add(1, Ordering::SeqCst);
    if head.path() != "/token" {
        return respond(&mut stream, 404, &[], b"not found", false);
    }
    let (caller, params) = match head.method.as_str() {
        "GET" => {
            let caller = match head.header("authorization") {
                None => Caller::Anonymous,
                Some(v) if v == basic_auth_header(&st.user, &st.password) => {
                    Caller::User(st.user.clone())
                }
                Some(_) => Caller::BadCredentials,
            };
            (caller, head.query())
        }
        "POST" => {
            let form = parse_form(&String::from_utf8_lossy(&body));
            let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
            if get("grant_type").as_deref() != Some("password") {
                let answer = br#"{"error":"unsupported_grant_type"}"#;
                return respond(
                    &mut stream,
                    400,
                    &[("Content-Type", "application/json".into())],
                    answer,
                    false,
                );
            }
            let caller = if get("username").as_deref() == Some(st.user.as_str())
                && get("password").as_deref() == Some(st.password.as_str())
            {
                Caller::User(st.user.clone())
            } else {
                Caller::BadCredentials
            };
            (caller, form)
        }
        _ => return respond(&mut stream, 405, &[], b"method not allowed", false),
    };
    let scopes: Vec<String> = params
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split(' ').map(str::to_owned).collect::<Vec<_>>())
        .filter(|s| !s.is_empty())
        .collect();
    let service = params
        .iter()
        .find(|(k, _)| k == "service")
        .map(|(_, v)| v.clone());
    let user = match caller {
        Caller::BadCredentials => {
            st.log.lock().unwrap().push(TokenRequest {
                user: None,
                scopes,
                status: 401,
            });
            let body = br#"{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}"#;
            return respond(
                &mut stream,
                401,
                &[
                    ("Content-Type", "application/json".into()),
                    (
                        "WWW-Authenticate",
                        "Basic realm=\"lamina-test-token\"".into(),
                    ),
                ],
                body,
                false,
            );
        }
        Caller::User(u) => Some(u),
        Caller::Anonymous => None,
    };
    if service.as_deref().is_some_and(|s| s != TOKEN_SERVICE) {
        return respond(&mut stream, 400, &[], b"unknown service", false);
    }
    // The right user gets every action asked for; anonymous gets nothing.
    let mut access = Vec::new();
    if user.is_some() {
        for scope in &scopes {
            let Some((kind_name, actions)) = scope.rsplit_once(':') else {
                continue;
            };
            let Some((kind, name)) = kind_name.split_once(':') else {
                continue;
            };
            let granted: Vec<&str> = actions
                .split(',')
                .filter(|a| ["pull", "push", "delete", "*"].contains(a))
                .collect();
            if kind == "repository" && !granted.is_empty() {
                access.push(json!({"type": kind, "name": name, "actions": granted}));
            }
        }
    }
    st.log.lock().unwrap().push(TokenRequest {
        user: user.clone(),
        scopes,
        status: 200,
    });
    let now = unix_now();
    let header = json!({"typ": "JWT", "alg": "RS256", "x5c": [st.x5c]});
    let claims = json!({
        "iss": TOKEN_ISSUER,
        "sub": user.unwrap_or_default(),
        "aud": TOKEN_SERVICE,
        "exp": now + 300,
        "nbf": now - 10,
        "iat": now,
        "jti": format!("lamina-{now}-{}", st.count.load(Ordering::SeqCst)),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        base64url(header.to_string().as_bytes()),
        base64url(claims.to_string().as_bytes())
    );
    let key = st.key.to_str().expect("utf-8 key path");
    let sig = run_tool_ok(
        "openssl",
        &["dgst", "-sha256", "-sign", key],
        Some(signing_input.as_bytes()),
        Path::new("/"),
    );
    let jwt = format!("{signing_input}.{}", base64url(&sig));
    let body = json!({
        "token": jwt,
        "access_token": jwt,
        "expires_in": 300,
        "issued_at": rfc3339(now),
    });
    respond(
        &mut stream,
        200,
        &[("Content-Type", "application/json".into())],
        body.to_string().as_bytes(),
        false,
    )
}

// ---------------------------------------------------------------------------------------------
// The registry
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flavour {
    Plain,
    TlsBasic,
    TlsToken,
}

/// A `docker-registry serve` on 127.0.0.1 with all its state in a temporary directory; killed
/// on drop.
pub struct Registry {
    /// `127.0.0.1:PORT`
    pub host: String,
    /// The CA certificate (PEM) when the registry speaks TLS.
    pub ca: Option<PathBuf>,
    /// A directory holding `ca.crt` (skopeo's `--cert-dir`) when the registry speaks TLS.
    pub cert_dir: Option<PathBuf>,
    pub user: Option<String>,
    pub password: Option<String>,
    /// Requests the token server answered (token flavour only; stays 0 otherwise).
    pub token_requests: Arc<AtomicUsize>,
    /// Root of the temporary directory (config, data, log, certificates).
    pub dir: PathBuf,
    log: PathBuf,
    child: Child,
    token_server: Option<TokenServer>,
    _tmp: Option<TempDir>,
}

impl Registry {
    /// Plain HTTP, no authentication.
    pub fn plain() -> Registry {
        Registry::start(Flavour::Plain, None)
    }

    /// TLS (a CA generated for the test) and htpasswd basic authentication.
    pub fn tls_basic(user: &str, password: &str) -> Registry {
        Registry::start(Flavour::TlsBasic, Some((user, password)))
    }

    /// TLS and bearer tokens from a [`TokenServer`] that knows `user`/`password`.
    pub fn token(user: &str, password: &str) -> Registry {
        Registry::start(Flavour::TlsToken, Some((user, password)))
    }

    fn start(flavour: Flavour, creds: Option<(&str, &str)>) -> Registry {
        let bin = require_tool("docker-registry");
        let tmp = TempDir::new().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let data = dir.join("data");
        fs::create_dir_all(&data).expect("mkdir data");
        let q = |p: &Path| serde_json::to_string(p.to_str().expect("utf-8 path")).unwrap();

        let tls = (flavour != Flavour::Plain).then(|| make_tls(&dir.join("tls")));
        let token_requests = Arc::new(AtomicUsize::new(0));
        let mut token_server = None;
        let auth = match flavour {
            Flavour::Plain => String::new(),
            Flavour::TlsBasic => {
                let (user, password) = creds.expect("credentials");
                let line = run_tool_ok("htpasswd", &["-Bbn", user, password], None, &dir);
                let path = dir.join("htpasswd");
                fs::write(
                    &path,
                    String::from_utf8_lossy(&line).trim().to_owned() + "\n",
                )
                .expect("write htpasswd");
                format!(
                    "auth:\n  htpasswd:\n    realm: \"lamina-test\"\n    path: {}\n",
                    q(&path)
                )
            }
            Flavour::TlsToken => {
                let (user, password) = creds.expect("credentials");
                let ts =
                    TokenServer::start(&dir.join("token"), user, password, token_requests.clone());
                let auth = format!(
                    "auth:\n  token:\n    realm: \"{}\"\n    service: \"{TOKEN_SERVICE}\"\n    \
                     issuer: \"{TOKEN_ISSUER}\"\n    rootcertbundle: {}\n",
                    ts.realm(),
                    q(&ts.cert)
                );
                token_server = Some(ts);
                auth
            }
        };
        let tls_cfg = match &tls {
            Some(t) => format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                q(&t.server_cert),
                q(&t.server_key)
            ),
            None => String::new(),
        };
        let log = dir.join("registry.log");
        let mut last_log = String::new();
        for _attempt in 0..5 {
            let port = free_port();
            let host = format!("127.0.0.1:{port}");
            let config = format!(
                "version: 0.1\n\
                 log:\n  level: warn\n  formatter: text\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  \
                 maintenance:\n    uploadpurging:\n      enabled: false\n\
                 http:\n  addr: \"{host}\"\n  secret: \"lamina-test-http-secret\"\n{tls_cfg}\
                 {auth}",
                q(&data)
            );
            let config_path = dir.join("config.yml");
            fs::write(&config_path, &config).expect("write config.yml");
            let log_file = fs::File::create(&log).expect("create registry.log");
            let child = Command::new(&bin)
                .arg("serve")
                .arg(&config_path)
                .current_dir(&dir)
                .stdin(Stdio::null())
                .stdout(log_file.try_clone().expect("dup log"))
                .stderr(log_file)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
            let mut reg = Registry {
                host,
                ca: tls.as_ref().map(|t| t.ca_cert.clone()),
                cert_dir: tls.as_ref().map(|t| t.cert_dir.clone()),
                user: creds.map(|c| c.0.to_owned()),
                password: creds.map(|c| c.1.to_owned()),
                token_requests: token_requests.clone(),
                dir: dir.clone(),
                log: log.clone(),
                child,
                token_server: None,
                _tmp: None,
            };
            match reg.wait_ready() {
                Ok(()) => {
                    reg.token_server = token_server;
                    reg._tmp = Some(tmp);
                    return reg;
                }
                Err(Some(text)) if text.contains("address already in use") => {
                    last_log = text;
                    continue;
                }
                Err(text) => panic!(
                    "docker-registry ({flavour:?}) did not come up on {}:\n--- config.yml ---\n\
                     {config}\n--- registry.log ---\n{}",
                    reg.host,
                    text.unwrap_or_else(|| reg.log())
                ),
            }
        }
        panic!("docker-registry could not bind a port after 5 tries:\n{last_log}")
    }

    /// Poll `GET /v2/` until it answers 200 or 401. `Err(Some(log))` if the process died,
    /// `Err(None)` on timeout.
    fn wait_ready(&mut self) -> Result<(), Option<String>> {
        let deadline = Instant::now() + STARTUP_DEADLINE;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(Some(format!("exited with {status}\n{}", self.log())));
            }
            if Instant::now() > deadline {
                return Err(None);
            }
            let status = match &self.ca {
                None => http_status(&self.host, "/v2/"),
                Some(ca) => https_status(&self.host, "/v2/", ca),
            };
            if matches!(status, Some(200) | Some(401)) {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// The registry's log so far (stdout and stderr of `docker-registry`).
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn is_tls(&self) -> bool {
        self.ca.is_some()
    }

    /// `docker://HOST/REPO_TAG`
    pub fn reference(&self, repo_tag: &str) -> String {
        format!("docker://{}/{repo_tag}", self.host)
    }

    /// Flags lamina needs for this registry: `--ca-cert CA` for the TLS flavours.
    pub fn lamina_flags(&self) -> Vec<String> {
        match &self.ca {
            Some(ca) => vec!["--ca-cert".into(), ca.display().to_string()],
            None => Vec::new(),
        }
    }

    /// Token requests answered so far.
    pub fn token_count(&self) -> usize {
        self.token_requests.load(Ordering::SeqCst)
    }

    /// Every token request answered so far (token flavour only).
    pub fn token_log(&self) -> Vec<TokenRequest> {
        self.token_server
            .as_ref()
            .map(TokenServer::requests)
            .unwrap_or_default()
    }

    /// `base64(user:password)`, the `auth` of a docker config.json entry.
    pub fn auth_b64(&self) -> Option<String> {
        match (&self.user, &self.password) {
            (Some(u), Some(p)) => Some(base64(format!("{u}:{p}").as_bytes())),
            _ => None,
        }
    }

    /// Write `DIR/config.json` holding this registry's credentials (docker's `auths` format).
    pub fn write_docker_config(&self, dir: &Path) {
        let auth = self.auth_b64().expect("registry without credentials");
        write_docker_auths(dir, &[(&self.host, &auth)]);
    }

    /// skopeo flags to use this registry as a source (`prefix` "src") or destination ("dest");
    /// with an empty prefix, the flags of `skopeo inspect`.
    pub fn skopeo_flags(&self, prefix: &str) -> Vec<String> {
        let p = if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}-")
        };
        let mut v = Vec::new();
        match &self.cert_dir {
            Some(d) => {
                v.push(format!("--{p}cert-dir"));
                v.push(d.display().to_string());
            }
            None => v.push(format!("--{p}tls-verify=false")),
        }
        if let (Some(u), Some(pw)) = (&self.user, &self.password) {
            v.push(format!("--{p}creds"));
            v.push(format!("{u}:{pw}"));
        }
        v
    }

    /// `skopeo copy [--all] SRC docker://HOST/REPO_TAG`, which must succeed.
    pub fn skopeo_push(&self, src: &str, repo_tag: &str, all: bool) {
        let mut args: Vec<String> = vec!["copy".into()];
        if all {
            args.push("--all".into());
        }
        args.extend(self.skopeo_flags("dest"));
        args.push(src.into());
        args.push(self.reference(repo_tag));
        super::skopeo_ok(&args);
    }

    /// `skopeo copy docker://HOST/REPO_TAG DEST`, which must succeed.
    pub fn skopeo_pull(&self, repo_tag: &str, dest: &str) {
        let mut args: Vec<String> = vec!["copy".into()];
        args.extend(self.skopeo_flags("src"));
        args.push(self.reference(repo_tag));
        args.push(dest.into());
        super::skopeo_ok(&args);
    }

    /// The manifest bytes as the registry serves them (`skopeo inspect --raw`).
    pub fn raw_manifest(&self, repo_tag: &str) -> Vec<u8> {
        let mut args: Vec<String> = vec!["inspect".into(), "--raw".into()];
        args.extend(self.skopeo_flags(""));
        args.push(self.reference(repo_tag));
        super::skopeo_ok(&args)
    }

    /// sha256 of [`Registry::raw_manifest`].
    pub fn manifest_digest(&self, repo_tag: &str) -> String {
        sha256_digest(&self.raw_manifest(repo_tag))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Write `DIR/config.json` with `{"auths": {HOST: {"auth": AUTH}}}`.
pub fn write_docker_auths(dir: &Path, entries: &[(&str, &str)]) {
    let auths: serde_json::Map<String, Value> = entries
        .iter()
        .map(|(h, a)| ((*h).to_owned(), json!({ "auth": a })))
        .collect();
    fs::create_dir_all(dir).expect("mkdir docker config dir");
    fs::write(
        dir.join("config.json"),
        serde_json::to_vec_pretty(&json!({ "auths": auths })).unwrap(),
    )
    .expect("write config.json");
}

/// Status of `GET PATH` over plain HTTP, `None` if there is no answer (yet).
pub fn http_status(host: &str, path: &str) -> Option<u16> {
    let addr: SocketAddr = host.parse().ok()?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(3))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).ok()?;
    parse_status_line(&line)
}

/// Status of `GET PATH` over TLS verified against `ca` (with `openssl s_client`).
fn https_status(host: &str, path: &str, ca: &Path) -> Option<u16> {
    let bin = require_tool("openssl");
    let request = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n");
    let out = run_bounded(
        Command::new(bin)
            .args(["s_client", "-quiet", "-connect", host, "-CAfile"])
            .arg(ca)
            .args(["-verify_return_error", "-verify_ip", "127.0.0.1"]),
        Some(request.as_bytes()),
        Duration::from_secs(10),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    parse_status_line(text.lines().next()?)
}

fn parse_status_line(line: &str) -> Option<u16> {
    let mut parts = line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    parts.next()?.parse().ok()
}

// ---------------------------------------------------------------------------------------------
// Fault-injecting proxy
// ---------------------------------------------------------------------------------------------

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

#[derive(Clone, Copy, Debug)]
enum Fault {
    Fail503 { retry_after: bool },
    CutAfter { bytes: u64 },
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
}

#[derive(Default)]
struct ProxyState {
    rules: Mutex<Vec<Rule>>,
    seen: Mutex<Vec<Seen>>,
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
        self.add_rule(Fault::Fail503 { retry_after }, matching, n);
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
}

impl Budget<'_> {
    /// Forward `data`; `Ok(false)` once the body was cut.
    fn put(&mut self, data: &[u8]) -> io::Result<bool> {
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
    let path = head.path().to_owned();
    // Pick the fault: 503 rules are consumed here, cut rules only when the cut happens.
    let mut fault = None;
    {
        let mut rules = st.rules.lock().unwrap();
        for (i, rule) in rules.iter_mut().enumerate() {
            if rule.remaining == 0 || !rule.matching.matches(&head.method, &path) {
                continue;
            }
            if let Fault::Fail503 { .. } = rule.fault {
                rule.remaining -= 1;
                rule.fired += 1;
            }
            fault = Some((i, rule.fault));
            break;
        }
    }
    let record = |outcome: &'static str| {
        st.seen.lock().unwrap().push(Seen {
            method: head.method.clone(),
            target: head.target.clone(),
            outcome,
            at: arrived,
        })
    };
    let kind = body_kind(&head);
    let mut src = Prefixed {
        buf: leftover,
        pos: 0,
        inner: client.try_clone()?,
    };

    if let Some((_, Fault::Fail503 { retry_after })) = fault {
        record("503");
        let mut sink = io::sink();
        let mut never = || false;
        let mut budget = Budget {
            out: &mut sink,
            written: 0,
            limit: None,
            on_limit: &mut never,
            cut: false,
        };
        forward_body(&kind, &mut src, &mut budget)?;
        let mut headers = vec![("Content-Type", "application/json".to_owned())];
        if retry_after {
            headers.push(("Retry-After", "1".to_owned()));
        }
        let body = br#"{"errors":[{"code":"UNAVAILABLE","message":"injected by FaultProxy"}]}"#;
        return respond(&mut client, 503, &headers, body, head.method == "HEAD");
    }

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
    };
    let complete = forward_body(&kind, &mut src, &mut budget)?;
    if !complete || budget.cut {
        record("cut");
        let _ = up.shutdown(Shutdown::Both);
        let _ = client.shutdown(Shutdown::Both);
        return Ok(());
    }
    record("forwarded");
    up.flush()?;
    let _ = io::copy(&mut up, &mut client);
    let _ = client.flush();
    let _ = client.shutdown(Shutdown::Write);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Redirecting registry
// ---------------------------------------------------------------------------------------------

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
    if !super::is_sha256_digest(digest) {
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
    let api = ("Docker-Distribution-API-Version", "registry/2.0".to_owned());
    if head.header("authorization") != Some(basic_auth_header(&st.user, &st.password).as_str()) {
        let body = br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#;
        return respond(
            &mut stream,
            401,
            &[
                api,
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
        return respond(&mut stream, 200, &[api], b"{}", head_only);
    }
    let not_found = |stream: &mut TcpStream, code: &str| {
        let body = format!(r#"{{"errors":[{{"code":"{code}","message":"not found"}}]}}"#);
        respond(
            stream,
            404,
            &[
                ("Content-Type", "application/json".into()),
                ("Docker-Distribution-API-Version", "registry/2.0".to_owned()),
            ],
            body.as_bytes(),
            head_only,
        )
    };
    if let Some((_, reference)) = path.rsplit_once("/manifests/") {
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
                None => return not_found(&mut stream, "MANIFEST_UNKNOWN"),
            }
        };
        let Some(bytes) = layout_blob(&st.layout, &digest) else {
            return not_found(&mut stream, "MANIFEST_UNKNOWN");
        };
        let media_type = media_type.unwrap_or_else(|| {
            let doc: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            match doc["mediaType"].as_str() {
                Some(m) => m.to_owned(),
                None if doc.get("manifests").is_some() => MT_INDEX.to_owned(),
                None => MT_MANIFEST.to_owned(),
            }
        });
        return respond(
            &mut stream,
            200,
            &[
                api,
                ("Content-Type", media_type),
                ("Docker-Content-Digest", digest),
            ],
            &bytes,
            head_only,
        );
    }
    if let Some((_, digest)) = path.rsplit_once("/blobs/") {
        if layout_blob(&st.layout, digest).is_none() {
            return not_found(&mut stream, "BLOB_UNKNOWN");
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
            &[api, ("Location", location)],
            b"",
            head_only,
        );
    }
    not_found(&mut stream, "NAME_UNKNOWN")
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

// --- helpers shared by the registry and ECR tests -------------------------------------------

/// stdout must be one JSON object.
pub fn parse_json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}):\n{}", describe(out)))
}

/// Whether `skopeo inspect --raw` finds `repo_tag`.
pub fn registry_has(reg: &Registry, repo_tag: &str) -> bool {
    let mut args = strings(&["inspect", "--raw"]);
    args.extend(reg.skopeo_flags(""));
    args.push(reg.reference(repo_tag));
    super::skopeo(&args).status.success()
}

pub fn strings(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| (*s).to_owned()).collect()
}

/// `blobs` of a push report, by digest: (size, fate).
pub fn blob_fates(report: &Value) -> BTreeMap<String, (u64, String)> {
    report["blobs"]
        .as_array()
        .unwrap_or_else(|| panic!("no blobs array in {report}"))
        .iter()
        .map(|b| {
            (
                b["digest"].as_str().expect("blob digest").to_owned(),
                (
                    b["size"].as_u64().expect("blob size"),
                    b["fate"].as_str().expect("blob fate").to_owned(),
                ),
            )
        })
        .collect()
}

/// Config and layers of an image manifest, by digest: size.
pub fn manifest_blobs(manifest: &Value) -> BTreeMap<String, u64> {
    std::iter::once(&manifest["config"])
        .chain(manifest["layers"].as_array().expect("layers"))
        .map(|d| {
            (
                d["digest"].as_str().expect("digest").to_owned(),
                d["size"].as_u64().expect("size"),
            )
        })
        .collect()
}
