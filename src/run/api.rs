//! The two HTTP sides of `lamina run` and the supervisor between them.
//!
//! - The Lambda Runtime API, served to the function on an ephemeral port of 127.0.0.1 (a new
//!   listener for each process started, so nothing a killed process sent can reach the next):
//!   `GET /2018-06-01/runtime/invocation/next`, `POST .../invocation/{id}/response`,
//!   `POST .../invocation/{id}/error`, `POST /2018-06-01/runtime/init/error`.
//! - The invoke side, served to the user on 127.0.0.1 as AWS's Runtime Interface Emulator takes
//!   it: `POST /2015-03-31/functions/{name}/invocations`, the body the event, the answer the
//!   function's response, or its error with `X-Amz-Function-Error: Unhandled`.
//!
//! The [`Supervisor`] owns the function's process and runs one invocation at a time, as a
//! Lambda execution environment does: it starts the process when an invocation needs one (init
//! limited to 10 seconds, then retried within the invocation's own timeout, as Lambda does),
//! hands invocations to the runtime's `next`, and reports timeouts (the process is killed and
//! the next invocation starts a new one), crashes and init errors in Lambda's words. It also
//! prints Lambda's `START`, `END` and `REPORT` lines on stderr.
//!
//! hyper 1 (with hyper-util's tokio glue) is the server: reqwest already builds it, so it adds
//! no code to the build, and HTTP/1.1 is all either side speaks.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io;
use std::time::{Duration, Instant, SystemTime};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};

use super::sandbox::{LaunchError, Launched};
use crate::error::{Error, IoContext, Result};

/// Lambda's limit on synchronous request and response payloads.
pub const MAX_PAYLOAD: usize = 6 * 1024 * 1024;
/// Lambda's limit on the init phase (before it is retried within the invocation).
pub const INIT_TIMEOUT: Duration = Duration::from_secs(10);

/// The function's configuration, as Lambda would hold it.
#[derive(Clone, Debug)]
pub struct Settings {
    pub timeout: Duration,
    pub function_name: String,
    pub memory_mb: u32,
    pub region: String,
}

impl Settings {
    pub fn arn(&self) -> String {
        format!(
            "arn:aws:lambda:{}:012345678912:function:{}",
            self.region, self.function_name
        )
    }
}

/// One invocation's request.
#[derive(Clone, Debug, Default)]
pub struct Invoke {
    pub payload: Bytes,
    /// `X-Amzn-Trace-Id` of the invoke request (one is made up otherwise).
    pub trace_id: Option<String>,
    /// The client context (`X-Amz-Client-Context`, base64-decoded).
    pub client_context: Option<String>,
}

/// One invocation's result, as Lambda's Invoke API returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub body: Bytes,
    /// The `errorType` when the invocation failed (the answer then carries
    /// `X-Amz-Function-Error: Unhandled`).
    pub error_type: Option<String>,
}

impl Outcome {
    fn ok(body: Bytes) -> Outcome {
        Outcome {
            body,
            error_type: None,
        }
    }

    /// An error Lambda itself reports: `{"errorType": ..., "errorMessage": ...}`.
    fn error(error_type: &str, message: String) -> Outcome {
        let body = json!({"errorType": error_type, "errorMessage": message});
        Outcome {
            body: Bytes::from(serde_json::to_vec(&body).expect("JSON serializes")),
            error_type: Some(error_type.to_owned()),
        }
    }

    /// An error the function posted (`/error`, `/init/error`): its body is returned as posted
    /// when it is a JSON object; anything else is wrapped as an `errorMessage`.
    fn posted(body: Bytes, header_type: Option<String>) -> Outcome {
        if let Ok(Value::Object(o)) = serde_json::from_slice::<Value>(&body) {
            let t = o
                .get("errorType")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .or(header_type)
                .unwrap_or_else(|| "Unhandled".to_owned());
            return Outcome {
                body,
                error_type: Some(t),
            };
        }
        Outcome::error(
            header_type.as_deref().unwrap_or("Unhandled"),
            String::from_utf8_lossy(&body).into_owned(),
        )
    }
}

/// Starts the function's process, given the address of its Runtime API (`127.0.0.1:PORT`).
pub type Launcher = Box<dyn FnMut(&str) -> Result<Launched, LaunchError> + Send>;

/// What the invoke side sends the supervisor.
struct Submit {
    invoke: Invoke,
    reply: oneshot::Sender<Outcome>,
}

/// Submits invocations to a running [`Supervisor`].
#[derive(Clone)]
pub struct Handle {
    tx: mpsc::UnboundedSender<Submit>,
}

impl Handle {
    /// Run one invocation; `None` if the supervisor stopped first.
    pub async fn invoke(&self, invoke: Invoke) -> Option<Outcome> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Submit { invoke, reply }).ok()?;
        rx.await.ok()
    }
}

/// A running supervisor: stop it to kill the function and wait for it.
pub struct Running {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<()>>,
}

impl Running {
    /// Kill the function, wait for it to end, and return what ended the supervisor (an error
    /// when the sandbox could not be set up).
    pub async fn stop(mut self) -> Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.finished().await
    }

    /// Wait for the supervisor to end by itself (it only does on a fatal error).
    pub async fn finished(&mut self) -> Result<()> {
        match (&mut self.task).await {
            Ok(r) => r,
            Err(e) => Err(Error::Usage(format!("the supervisor failed: {e}"))),
        }
    }
}

/// Start a supervisor for the function `launch` starts. With `eager`, the function is started
/// at once (as `lamina run` does, so that its init shows up before the first invocation);
/// otherwise with the first invocation.
pub fn start(settings: Settings, launch: Launcher, eager: bool) -> (Handle, Running) {
    let (tx, submit_rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = oneshot::channel();
    let (rt_tx, rt_rx) = mpsc::unbounded_channel();
    let (exit_tx, exit_rx) = mpsc::unbounded_channel();
    let sup = Supervisor {
        settings,
        launch,
        generation: 0,
        proc: None,
        current: None,
        queue: VecDeque::new(),
        rt_tx,
        exit_tx,
        announced: false,
    };
    let task = tokio::spawn(sup.run(submit_rx, rt_rx, exit_rx, stop_rx, eager));
    (
        Handle { tx },
        Running {
            stop: Some(stop_tx),
            task,
        },
    )
}

/// What the Runtime API hands the runtime for one invocation.
struct Delivery {
    id: String,
    payload: Bytes,
    deadline_ms: u128,
    arn: String,
    trace_id: String,
    client_context: Option<String>,
}

/// The supervisor's answer to a runtime's POST.
enum Ack {
    Accepted,
    UnknownId(String),
    InvalidState(String),
    TooLarge,
}

/// What the Runtime API handlers tell the supervisor, tagged with the process generation
/// whose listener received it.
enum RtEvent {
    Next {
        generation: u64,
        reply: oneshot::Sender<Delivery>,
    },
    Response {
        generation: u64,
        id: String,
        body: Bytes,
        ack: oneshot::Sender<Ack>,
    },
    Error {
        generation: u64,
        id: String,
        body: Bytes,
        error_type: Option<String>,
        ack: oneshot::Sender<Ack>,
    },
    InitError {
        generation: u64,
        body: Bytes,
        error_type: Option<String>,
        ack: oneshot::Sender<Ack>,
    },
}

struct Pending {
    id: String,
    invoke: Invoke,
    reply: oneshot::Sender<Outcome>,
    /// Set when init is retried within this invocation: its timeout counts from here.
    budget_from: Option<Instant>,
}

struct Current {
    generation: u64,
    id: String,
    reply: oneshot::Sender<Outcome>,
    started: Instant,
    deadline: Instant,
    init: Option<Duration>,
}

/// One process of the function.
struct Proc {
    generation: u64,
    /// Dropping (or firing) it kills the process.
    kill: Option<oneshot::Sender<()>>,
    server: JoinHandle<()>,
    started: Instant,
    init_deadline: Option<Instant>,
    /// It has asked for an invocation (init is over).
    ready: bool,
    init: Option<Duration>,
    waiter: Option<oneshot::Sender<Delivery>>,
    /// Being killed: what it does from now on does not count.
    killed: bool,
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.server.abort();
    }
}

pub struct Supervisor {
    settings: Settings,
    launch: Launcher,
    generation: u64,
    proc: Option<Proc>,
    current: Option<Current>,
    queue: VecDeque<Pending>,
    rt_tx: mpsc::UnboundedSender<RtEvent>,
    exit_tx: mpsc::UnboundedSender<(u64, io::Result<std::process::ExitStatus>)>,
    announced: bool,
}

/// Random hex digits (from the kernel's generator).
fn random_hex(bytes: usize) -> String {
    use std::io::Read;
    let mut buf = vec![0u8; bytes];
    let filled = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut buf));
    if filled.is_err() {
        // Not secret, only unique: time and a counter will do.
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let t = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let seed = format!("{t}-{n}-{}", std::process::id());
        let d = crate::digest::Digest::of(seed.as_bytes());
        return d.hex()[..bytes * 2].to_owned();
    }
    hex::encode(buf)
}

/// A version 4 UUID, as Lambda's request ids are.
pub fn request_id() -> String {
    let mut b = hex::decode(random_hex(16)).expect("hex decodes");
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// An X-Ray trace header, as Lambda makes one for an untraced request.
fn trace_id() -> String {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    format!(
        "Root=1-{secs:08x}-{};Parent={};Sampled=0",
        random_hex(12),
        random_hex(8)
    )
}

/// `2024-05-01T12:00:00.123Z`, as Lambda timestamps its log lines.
pub fn timestamp(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let s = crate::image::rfc3339(d.as_secs());
    format!("{}.{:03}Z", s.trim_end_matches('Z'), d.subsec_millis())
}

fn epoch_ms(at: Instant) -> u128 {
    let now = Instant::now();
    let wall = if at >= now {
        SystemTime::now() + (at - now)
    } else {
        SystemTime::now() - (now - at)
    };
    wall.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
}

/// Lambda's words for a runtime that ended: `Runtime exited with error: exit status 3`, or
/// `Runtime exited without providing a reason` when it exited with status 0.
pub fn exit_error(status: &io::Result<std::process::ExitStatus>) -> String {
    match status {
        Ok(s) if s.code() == Some(0) => "Runtime exited without providing a reason".to_owned(),
        _ => format!("Runtime exited with error: {}", describe_exit(status)),
    }
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// How Lambda words a process's end: `exit status 3`, `signal: killed`.
pub fn describe_exit(status: &io::Result<std::process::ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(c), _) => format!("exit status {c}"),
            (None, Some(sig)) => {
                let name = match sig {
                    libc::SIGKILL => "killed".to_owned(),
                    libc::SIGTERM => "terminated".to_owned(),
                    libc::SIGINT => "interrupt".to_owned(),
                    libc::SIGSEGV => "segmentation fault".to_owned(),
                    libc::SIGABRT => "aborted".to_owned(),
                    libc::SIGBUS => "bus error".to_owned(),
                    libc::SIGILL => "illegal instruction".to_owned(),
                    libc::SIGFPE => "floating point exception".to_owned(),
                    n => format!("signal {n}"),
                };
                format!("signal: {name}")
            }
            _ => "exited".to_owned(),
        },
        Err(e) => format!("unknown status: {e}"),
    }
}

impl Supervisor {
    async fn run(
        mut self,
        mut submit_rx: mpsc::UnboundedReceiver<Submit>,
        mut rt_rx: mpsc::UnboundedReceiver<RtEvent>,
        mut exit_rx: mpsc::UnboundedReceiver<(u64, io::Result<std::process::ExitStatus>)>,
        mut stop_rx: oneshot::Receiver<()>,
        eager: bool,
    ) -> Result<()> {
        let outcome = async {
            if eager {
                self.start_proc()?;
            }
            loop {
                self.progress()?;
                let deadline = self.next_deadline();
                let sleep = tokio::time::sleep_until(
                    deadline
                        .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600))
                        .into(),
                );
                tokio::select! {
                    biased;
                    _ = &mut stop_rx => return Ok(()),
                    Some(ev) = rt_rx.recv() => self.on_runtime(ev),
                    Some((generation, status)) = exit_rx.recv() => self.on_exit(generation, status),
                    _ = sleep, if deadline.is_some() => self.on_deadline(Instant::now()),
                    s = submit_rx.recv() => match s {
                        Some(Submit { invoke, reply }) => self.queue.push_back(Pending {
                            id: request_id(),
                            invoke,
                            reply,
                            budget_from: None,
                        }),
                        None => return Ok(()),
                    },
                }
            }
        }
        .await;
        // Kill the function and wait (boundedly) for it to be gone.
        if let Some(mut p) = self.proc.take() {
            let generation = p.generation;
            if let Some(k) = p.kill.take() {
                let _ = k.send(());
            }
            let _ = tokio::time::timeout(Duration::from_secs(5), async {
                while let Some((g, _)) = exit_rx.recv().await {
                    if g == generation {
                        break;
                    }
                }
            })
            .await;
        }
        outcome
    }

    fn next_deadline(&self) -> Option<Instant> {
        let mut d: Option<Instant> = self.current.as_ref().map(|c| c.deadline);
        let mut consider = |t: Instant| d = Some(d.map_or(t, |x| x.min(t)));
        if let Some(p) = &self.proc
            && !p.ready
            && !p.killed
        {
            if let Some(t) = p.init_deadline {
                consider(t);
            }
            if let Some(b) = self.queue.front().and_then(|f| f.budget_from) {
                consider(b + self.settings.timeout);
            }
        }
        d
    }

    /// Start a process (and its Runtime API listener).
    fn start_proc(&mut self) -> Result<()> {
        self.generation += 1;
        let generation = self.generation;
        let std_listener = std::net::TcpListener::bind(("127.0.0.1", 0))
            .ctx(|| "listening on 127.0.0.1 for the Runtime API".to_owned())?;
        std_listener
            .set_nonblocking(true)
            .ctx(|| "listening on 127.0.0.1 for the Runtime API".to_owned())?;
        let addr = std_listener
            .local_addr()
            .ctx(|| "listening on 127.0.0.1 for the Runtime API".to_owned())?;
        let listener = TcpListener::from_std(std_listener)
            .ctx(|| "listening on 127.0.0.1 for the Runtime API".to_owned())?;
        let server = tokio::spawn(serve_runtime_api(listener, generation, self.rt_tx.clone()));
        let mut launched = match (self.launch)(&addr.to_string()) {
            Ok(l) => l,
            Err(LaunchError::Exec(msg)) => {
                server.abort();
                match self.queue.pop_front() {
                    Some(front) => {
                        eprintln!(
                            "RequestId: {} Error: {msg}\nRuntime.InvalidEntrypoint",
                            front.id
                        );
                        let _ = front.reply.send(Outcome::error(
                            "Runtime.InvalidEntrypoint",
                            format!("RequestId: {} Error: {msg}", front.id),
                        ));
                    }
                    None => eprintln!("Error: {msg}\nRuntime.InvalidEntrypoint"),
                }
                return Ok(());
            }
            Err(LaunchError::Sandbox(e)) => {
                server.abort();
                return Err(e);
            }
        };
        if !self.announced {
            eprintln!("lamina: isolation: {}", launched.how);
            self.announced = true;
        }
        let (kill_tx, kill_rx) = oneshot::channel::<()>();
        let exit_tx = self.exit_tx.clone();
        tokio::spawn(async move {
            let status = tokio::select! {
                s = launched.wait() => s,
                _ = kill_rx => {
                    launched.kill().await;
                    launched.wait().await
                }
            };
            let _ = exit_tx.send((generation, status));
        });
        let budgeted = self.queue.front().is_some_and(|f| f.budget_from.is_some());
        let now = Instant::now();
        self.proc = Some(Proc {
            generation,
            kill: Some(kill_tx),
            server,
            started: now,
            init_deadline: (!budgeted).then_some(now + INIT_TIMEOUT),
            ready: false,
            init: None,
            waiter: None,
            killed: false,
        });
        Ok(())
    }

    /// Start a process or hand the next invocation to the runtime, when the time has come.
    fn progress(&mut self) -> Result<()> {
        loop {
            if self.current.is_some() || self.queue.is_empty() {
                return Ok(());
            }
            let Some(p) = self.proc.as_mut() else {
                self.start_proc()?;
                if self.proc.is_none() {
                    continue; // the launch failed for this invocation; try the next one
                }
                return Ok(());
            };
            if p.killed {
                return Ok(()); // a new process starts once this one is gone
            }
            let Some(waiter) = p.waiter.take() else {
                return Ok(());
            };
            let front = self.queue.pop_front().expect("the queue is not empty");
            let now = Instant::now();
            let deadline = front.budget_from.unwrap_or(now) + self.settings.timeout;
            let delivery = Delivery {
                id: front.id.clone(),
                payload: front.invoke.payload.clone(),
                deadline_ms: epoch_ms(deadline),
                arn: self.settings.arn(),
                trace_id: front.invoke.trace_id.clone().unwrap_or_else(trace_id),
                client_context: front.invoke.client_context.clone(),
            };
            if waiter.send(delivery).is_err() {
                // The runtime's request went away: wait for its next one.
                self.queue.push_front(front);
                continue;
            }
            eprintln!("START RequestId: {} Version: $LATEST", front.id);
            self.current = Some(Current {
                generation: p.generation,
                id: front.id,
                reply: front.reply,
                started: front.budget_from.unwrap_or(now),
                deadline,
                init: p.init.take(),
            });
        }
    }

    fn kill_proc(&mut self) {
        if let Some(p) = self.proc.as_mut() {
            p.killed = true;
            p.waiter = None;
            if let Some(k) = p.kill.take() {
                let _ = k.send(());
            }
        }
    }

    /// Report an invocation's end (Lambda's END and REPORT lines) and answer it.
    fn finish(&self, cur: Current, outcome: Outcome) {
        let d = cur.started.elapsed().min(self.settings.timeout);
        eprintln!("END RequestId: {}", cur.id);
        let init = cur
            .init
            .map(|i| format!("Init Duration: {:.2} ms\t", millis(i)))
            .unwrap_or_default();
        eprintln!(
            "REPORT RequestId: {}\t{init}Duration: {:.2} ms\tBilled Duration: {} ms\tMemory Size: {} MB\t",
            cur.id,
            millis(d),
            millis(d).ceil() as u64,
            self.settings.memory_mb
        );
        let _ = cur.reply.send(outcome);
    }

    fn is_current(&self, generation: u64, id: &str) -> bool {
        self.current
            .as_ref()
            .is_some_and(|c| c.generation == generation && c.id == id)
    }

    fn on_runtime(&mut self, ev: RtEvent) {
        match ev {
            RtEvent::Next { generation, reply } => {
                let Some(p) = self
                    .proc
                    .as_mut()
                    .filter(|p| p.generation == generation && !p.killed)
                else {
                    return; // a process being killed: its request is dropped
                };
                if !p.ready {
                    p.ready = true;
                    p.init_deadline = None;
                    p.init = Some(p.started.elapsed());
                }
                p.waiter = Some(reply);
            }
            RtEvent::Response {
                generation,
                id,
                body,
                ack,
            } => {
                if !self.is_current(generation, &id) {
                    let _ = ack.send(Ack::UnknownId(id));
                    return;
                }
                let cur = self.current.take().expect("checked");
                if body.len() > MAX_PAYLOAD {
                    let _ = ack.send(Ack::TooLarge);
                    let o = Outcome::error(
                        "Function.ResponseSizeTooLarge",
                        format!(
                            "Response payload size exceeded maximum allowed payload size ({MAX_PAYLOAD} bytes)."
                        ),
                    );
                    self.finish(cur, o);
                } else {
                    let _ = ack.send(Ack::Accepted);
                    self.finish(cur, Outcome::ok(body));
                }
            }
            RtEvent::Error {
                generation,
                id,
                body,
                error_type,
                ack,
            } => {
                if !self.is_current(generation, &id) {
                    let _ = ack.send(Ack::UnknownId(id));
                    return;
                }
                let cur = self.current.take().expect("checked");
                let _ = ack.send(Ack::Accepted);
                self.finish(cur, Outcome::posted(body, error_type));
            }
            RtEvent::InitError {
                generation,
                body,
                error_type,
                ack,
            } => {
                let Some(p) = self
                    .proc
                    .as_ref()
                    .filter(|p| p.generation == generation && !p.killed)
                else {
                    let _ = ack.send(Ack::InvalidState("the runtime is being stopped".into()));
                    return;
                };
                if p.ready {
                    let _ = ack.send(Ack::InvalidState(
                        "init/error after the runtime asked for an invocation".into(),
                    ));
                    return;
                }
                let _ = ack.send(Ack::Accepted);
                let outcome = Outcome::posted(body, error_type);
                eprintln!(
                    "INIT_REPORT Init Duration: {:.2} ms\tPhase: init\tStatus: error\tError Type: {}",
                    millis(p.started.elapsed()),
                    outcome.error_type.as_deref().unwrap_or("Unhandled")
                );
                self.kill_proc();
                match self.queue.pop_front() {
                    Some(front) => {
                        let _ = front.reply.send(outcome);
                    }
                    None => eprintln!(
                        "lamina: the function failed its init; the next invocation starts it again"
                    ),
                }
            }
        }
    }

    fn on_exit(&mut self, generation: u64, status: io::Result<std::process::ExitStatus>) {
        if self
            .proc
            .as_ref()
            .is_none_or(|p| p.generation != generation)
        {
            return;
        }
        let p = self.proc.take().expect("checked");
        if p.killed {
            return; // already reported (timeout, init error, shutdown)
        }
        let why = describe_exit(&status);
        let error = exit_error(&status);
        if let Some(cur) = self.current.take_if(|c| c.generation == generation) {
            let message = format!("RequestId: {} Error: {error}", cur.id);
            eprintln!("{message}\nRuntime.ExitError");
            self.finish(cur, Outcome::error("Runtime.ExitError", message));
        } else if !p.ready {
            eprintln!(
                "INIT_REPORT Init Duration: {:.2} ms\tPhase: init\tStatus: error\tError Type: Runtime.ExitError",
                millis(p.started.elapsed())
            );
            match self.queue.pop_front() {
                Some(front) => {
                    let message = format!("RequestId: {} Error: {error}", front.id);
                    eprintln!("{message}\nRuntime.ExitError");
                    let _ = front
                        .reply
                        .send(Outcome::error("Runtime.ExitError", message));
                }
                None => eprintln!(
                    "lamina: the function exited during init ({why}); the next invocation starts it again"
                ),
            }
        } else {
            eprintln!(
                "lamina: the function exited between invocations ({why}); the next invocation starts it again"
            );
        }
    }

    fn on_deadline(&mut self, now: Instant) {
        let secs = self.settings.timeout.as_secs_f64();
        if let Some(cur) = self.current.take_if(|c| now >= c.deadline) {
            eprintln!(
                "{} {} Task timed out after {secs:.2} seconds",
                timestamp(SystemTime::now()),
                cur.id
            );
            self.kill_proc();
            let message = format!(
                "RequestId: {} Error: Task timed out after {secs:.2} seconds",
                cur.id
            );
            self.finish(cur, Outcome::error("Sandbox.Timedout", message));
            return;
        }
        let Some(p) = self.proc.as_ref().filter(|p| !p.ready && !p.killed) else {
            return;
        };
        if p.init_deadline.is_some_and(|d| now >= d) {
            eprintln!(
                "INIT_REPORT Init Duration: {:.2} ms\tPhase: init\tStatus: timeout",
                millis(INIT_TIMEOUT)
            );
            self.kill_proc();
            // As Lambda does: init is tried again within the waiting invocation's timeout.
            if let Some(front) = self.queue.front_mut() {
                front.budget_from = Some(now);
            }
            return;
        }
        let expired = self
            .queue
            .front()
            .and_then(|f| f.budget_from)
            .is_some_and(|b| now >= b + self.settings.timeout);
        if expired {
            self.kill_proc();
            let front = self.queue.pop_front().expect("checked");
            eprintln!(
                "{} {} Task timed out after {secs:.2} seconds",
                timestamp(SystemTime::now()),
                front.id
            );
            let message = format!(
                "RequestId: {} Error: Task timed out after {secs:.2} seconds",
                front.id
            );
            let _ = front
                .reply
                .send(Outcome::error("Sandbox.Timedout", message));
        }
    }
}

type Body = Full<Bytes>;

fn respond(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn api_error(status: StatusCode, error_type: &str, message: &str) -> Response<Body> {
    let body = json!({"errorMessage": message, "errorType": error_type});
    respond(status, serde_json::to_vec(&body).expect("JSON serializes"))
}

fn header(req: &Request<Incoming>, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Accept connections until aborted; aborting drops (and so closes) every connection too.
async fn accept_loop<F, Fut>(listener: TcpListener, handler: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<Body>> + Send + 'static,
{
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    // Out of descriptors, most likely: let connections finish first.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let h = handler.clone();
                conns.spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let h = h.clone();
                        async move { Ok::<_, Infallible>(h(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

async fn serve_runtime_api(
    listener: TcpListener,
    generation: u64,
    events: mpsc::UnboundedSender<RtEvent>,
) {
    accept_loop(listener, move |req| {
        runtime_api(req, generation, events.clone())
    })
    .await;
}

async fn ack_response(rx: oneshot::Receiver<Ack>) -> Response<Body> {
    match rx.await {
        Ok(Ack::Accepted) => respond(StatusCode::ACCEPTED, r#"{"status":"OK"}"#),
        Ok(Ack::UnknownId(id)) => api_error(
            StatusCode::BAD_REQUEST,
            "InvalidRequestID",
            &format!("Invalid request ID: {id} is not the invocation in progress"),
        ),
        Ok(Ack::InvalidState(m)) => api_error(StatusCode::FORBIDDEN, "InvalidStateTransition", &m),
        Ok(Ack::TooLarge) => api_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            &format!(
                "Response payload size exceeded maximum allowed payload size ({MAX_PAYLOAD} bytes)."
            ),
        ),
        Err(_) => api_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ServiceException",
            "the environment is shutting down",
        ),
    }
}

async fn runtime_api(
    req: Request<Incoming>,
    generation: u64,
    events: mpsc::UnboundedSender<RtEvent>,
) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let Some(rest) = path.strip_prefix("/2018-06-01/runtime/") else {
        return api_error(StatusCode::NOT_FOUND, "NotFound", "unknown path");
    };
    let error_type = header(&req, "lambda-runtime-function-error-type");
    match (method, rest) {
        (Method::GET, "invocation/next") => {
            let (reply, rx) = oneshot::channel();
            if events.send(RtEvent::Next { generation, reply }).is_err() {
                return api_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "ServiceException",
                    "the environment is shutting down",
                );
            }
            let Ok(d) = rx.await else {
                return api_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "ServiceException",
                    "the environment is shutting down",
                );
            };
            let mut r = respond(StatusCode::OK, d.payload);
            let h = r.headers_mut();
            let mut set = |name: &'static str, value: &str| {
                if let Ok(v) = HeaderValue::from_str(value) {
                    h.insert(name, v);
                }
            };
            set("lambda-runtime-aws-request-id", &d.id);
            set("lambda-runtime-deadline-ms", &d.deadline_ms.to_string());
            set("lambda-runtime-invoked-function-arn", &d.arn);
            set("lambda-runtime-trace-id", &d.trace_id);
            if let Some(cc) = &d.client_context {
                set("lambda-runtime-client-context", cc);
            }
            r
        }
        (Method::POST, "init/error") => {
            let Ok(body) = req.into_body().collect().await.map(|b| b.to_bytes()) else {
                return api_error(StatusCode::BAD_REQUEST, "InvalidRequest", "unreadable body");
            };
            let (ack, rx) = oneshot::channel();
            let _ = events.send(RtEvent::InitError {
                generation,
                body,
                error_type,
                ack,
            });
            ack_response(rx).await
        }
        (Method::POST, r) if r.starts_with("invocation/") => {
            let parts: Vec<&str> = r.split('/').collect();
            let (id, what) = match parts.as_slice() {
                ["invocation", id, what] => (id.to_string(), *what),
                _ => return api_error(StatusCode::NOT_FOUND, "NotFound", "unknown path"),
            };
            if what != "response" && what != "error" {
                return api_error(StatusCode::NOT_FOUND, "NotFound", "unknown path");
            }
            let Ok(body) = req.into_body().collect().await.map(|b| b.to_bytes()) else {
                return api_error(StatusCode::BAD_REQUEST, "InvalidRequest", "unreadable body");
            };
            let (ack, rx) = oneshot::channel();
            let ev = if what == "response" {
                RtEvent::Response {
                    generation,
                    id,
                    body,
                    ack,
                }
            } else {
                RtEvent::Error {
                    generation,
                    id,
                    body,
                    error_type,
                    ack,
                }
            };
            let _ = events.send(ev);
            ack_response(rx).await
        }
        _ => api_error(StatusCode::NOT_FOUND, "NotFound", "unknown path"),
    }
}

/// Serve the invoke side on `listener` until the task is dropped or aborted.
pub async fn serve_invoke(listener: TcpListener, handle: Handle) {
    accept_loop(listener, move |req| invoke_api(req, handle.clone())).await;
}

fn user_error(status: StatusCode, error_type: &str, message: &str) -> Response<Body> {
    let body = json!({"Type": "User", "message": message});
    let mut r = respond(status, serde_json::to_vec(&body).expect("JSON serializes"));
    if let Ok(v) = HeaderValue::from_str(error_type) {
        r.headers_mut().insert("x-amzn-errortype", v);
    }
    r
}

/// The body of an invoke request as the function gets it: JSON (empty means `{}`).
pub fn event_payload(body: &[u8]) -> std::result::Result<Bytes, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Bytes::from_static(b"{}"));
    }
    if body.len() > MAX_PAYLOAD {
        return Err(format!(
            "{} byte payload is too large for the RequestResponse invocation type ({MAX_PAYLOAD})",
            body.len()
        ));
    }
    serde_json::from_slice::<serde::de::IgnoredAny>(body)
        .map_err(|e| format!("Could not parse request body into json: {e}"))?;
    Ok(Bytes::copy_from_slice(body))
}

async fn invoke_api(req: Request<Incoming>, handle: Handle) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let is_invoke = path
        .strip_prefix("/2015-03-31/functions/")
        .and_then(|r| r.strip_suffix("/invocations"))
        .is_some_and(|name| !name.is_empty() && !name.contains('/'));
    if !is_invoke {
        return user_error(
            StatusCode::NOT_FOUND,
            "ResourceNotFoundException",
            "unknown path: invoke with POST /2015-03-31/functions/function/invocations",
        );
    }
    if req.method() != Method::POST {
        return user_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "invoke with POST",
        );
    }
    let trace_id = header(&req, "x-amzn-trace-id");
    let client_context = header(&req, "x-amz-client-context").and_then(|c| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(c)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
    });
    let asynchronous = header(&req, "x-amz-invocation-type").as_deref() == Some("Event");
    let Ok(body) = req.into_body().collect().await.map(|b| b.to_bytes()) else {
        return user_error(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContentException",
            "unreadable body",
        );
    };
    let payload = match event_payload(&body) {
        Ok(p) => p,
        Err(m) if body.len() > MAX_PAYLOAD => {
            return user_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLargeException",
                &m,
            );
        }
        Err(m) => {
            return user_error(
                StatusCode::BAD_REQUEST,
                "InvalidRequestContentException",
                &m,
            );
        }
    };
    let invoke = Invoke {
        payload,
        trace_id,
        client_context,
    };
    if asynchronous {
        tokio::spawn(async move {
            let _ = handle.invoke(invoke).await;
        });
        return respond(StatusCode::ACCEPTED, Bytes::new());
    }
    let Some(outcome) = handle.invoke(invoke).await else {
        return user_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ServiceException",
            "the function's environment stopped",
        );
    };
    let mut r = respond(StatusCode::OK, outcome.body);
    r.headers_mut().insert(
        "x-amz-executed-version",
        HeaderValue::from_static("$LATEST"),
    );
    if outcome.error_type.is_some() {
        r.headers_mut().insert(
            "x-amz-function-error",
            HeaderValue::from_static("Unhandled"),
        );
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_v4_uuids() {
        let id = request_id();
        let parts: Vec<&str> = id.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(parts[2].starts_with('4'));
        assert!(matches!(&parts[3][..1], "8" | "9" | "a" | "b"));
        assert_ne!(request_id(), id);
    }

    #[test]
    fn posted_errors_pass_through_or_are_wrapped() {
        let o = Outcome::posted(
            Bytes::from_static(br#"{"errorMessage":"boom","errorType":"MyError"}"#),
            None,
        );
        assert_eq!(o.error_type.as_deref(), Some("MyError"));
        assert_eq!(
            &o.body[..],
            br#"{"errorMessage":"boom","errorType":"MyError"}"#
        );
        let o = Outcome::posted(Bytes::from_static(b"not json"), Some("Custom.Type".into()));
        let v: Value = serde_json::from_slice(&o.body).unwrap();
        assert_eq!(
            v,
            json!({"errorMessage": "not json", "errorType": "Custom.Type"})
        );
    }

    #[test]
    fn exits_are_worded_as_lambda_words_them() {
        use std::os::unix::process::ExitStatusExt;
        let s = |raw| Ok(std::process::ExitStatus::from_raw(raw));
        assert_eq!(describe_exit(&s(3 << 8)), "exit status 3");
        assert_eq!(describe_exit(&s(libc::SIGKILL)), "signal: killed");
        assert_eq!(
            exit_error(&s(libc::SIGKILL)),
            "Runtime exited with error: signal: killed"
        );
        assert_eq!(
            exit_error(&s(0)),
            "Runtime exited without providing a reason"
        );
    }

    #[test]
    fn events_must_be_json() {
        assert_eq!(&event_payload(b"").unwrap()[..], b"{}");
        assert_eq!(&event_payload(b"[1]").unwrap()[..], b"[1]");
        assert!(
            event_payload(b"{nope")
                .unwrap_err()
                .contains("Could not parse")
        );
    }

    #[test]
    fn timestamps_have_milliseconds() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_714_564_800_123);
        assert_eq!(timestamp(t), "2024-05-01T12:00:00.123Z");
    }
}
