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
        F: Fn(&RequestHead, &mut TcpStream) -> io::Result<()> + Send + Sync + 'static,
    {
        let log = Arc::new(Mutex::new(Vec::new()));
        let l = log.clone();
        let server = LoopServer::start(bind_loopback(), move |mut stream| {
            let Ok(Some((head, _))) = read_head(&mut stream) else {
                return;
            };
            l.lock().unwrap().push(head.clone());
            let _ = answer(&head, &mut stream);
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
