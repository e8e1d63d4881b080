//! A bearer-token server for the registry's `auth.token` flavour: RS256 JWTs signed with the
//! `openssl` CLI.

use std::fs;
use std::io;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use super::{
    LoopServer, RequestHead, base64, basic_auth_header, bind_loopback, parse_form, read_head,
    read_simple_body, respond, run_tool_ok,
};

pub const TOKEN_SERVICE: &str = "lamina-test";
pub const TOKEN_ISSUER: &str = "lamina-test-issuer";

/// URL-safe base64 without padding (RFC 4648 §5), as in JWTs.
pub fn base64url(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
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
        "GET" => (get_caller(&head, st), head.query()),
        "POST" => {
            let form = parse_form(&String::from_utf8_lossy(&body));
            match post_caller(&form, st) {
                Some(caller) => (caller, form),
                None => {
                    let answer = br#"{"error":"unsupported_grant_type"}"#;
                    return respond(&mut stream, 400, &[json_type()], answer, false);
                }
            }
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
            let challenge = (
                "WWW-Authenticate",
                "Basic realm=\"lamina-test-token\"".into(),
            );
            return respond(&mut stream, 401, &[json_type(), challenge], body, false);
        }
        Caller::User(u) => Some(u),
        Caller::Anonymous => None,
    };
    if service.as_deref().is_some_and(|s| s != TOKEN_SERVICE) {
        return respond(&mut stream, 400, &[], b"unknown service", false);
    }
    // The right user gets every action asked for; anonymous gets nothing.
    let access = if user.is_some() {
        granted_access(&scopes)
    } else {
        Vec::new()
    };
    st.log.lock().unwrap().push(TokenRequest {
        user: user.clone(),
        scopes,
        status: 200,
    });
    let body = token_answer(st, user.unwrap_or_default(), access);
    respond(
        &mut stream,
        200,
        &[json_type()],
        body.to_string().as_bytes(),
        false,
    )
}

/// The `Content-Type` header of a JSON answer.
fn json_type() -> (&'static str, String) {
    ("Content-Type", "application/json".into())
}

/// The caller of a `GET /token`, by its HTTP Basic credentials.
fn get_caller(head: &RequestHead, st: &TokenState) -> Caller {
    match head.header("authorization") {
        None => Caller::Anonymous,
        Some(v) if v == basic_auth_header(&st.user, &st.password) => Caller::User(st.user.clone()),
        Some(_) => Caller::BadCredentials,
    }
}

/// The caller of an OAuth2 `POST /token`; `None` unless it is a password grant.
fn post_caller(form: &[(String, String)], st: &TokenState) -> Option<Caller> {
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    if get("grant_type") != Some("password") {
        return None;
    }
    Some(
        if get("username") == Some(st.user.as_str())
            && get("password") == Some(st.password.as_str())
        {
            Caller::User(st.user.clone())
        } else {
            Caller::BadCredentials
        },
    )
}

/// The `access` claim granting every known action on each `repository:NAME:ACTIONS` scope.
fn granted_access(scopes: &[String]) -> Vec<Value> {
    let mut access = Vec::new();
    for scope in scopes {
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
    access
}

/// The token endpoint's JSON answer: an RS256 JWT for `sub` with `access`, valid five minutes.
fn token_answer(st: &TokenState, sub: String, access: Vec<Value>) -> Value {
    let now = unix_now();
    let header = json!({"typ": "JWT", "alg": "RS256", "x5c": [st.x5c]});
    let claims = json!({
        "iss": TOKEN_ISSUER,
        "sub": sub,
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
    json!({
        "token": jwt,
        "access_token": jwt,
        "expires_in": 300,
        "issued_at": rfc3339(now),
    })
}
