//! The [`Supervisor`] owns the function's process and runs one invocation at a time, as a
//! Lambda execution environment does: it starts the process when an invocation needs one (init
//! limited to 10 seconds, then retried within the invocation's own timeout, as Lambda does),
//! hands invocations to the runtime's `next`, and reports timeouts (the process is killed and
//! the next invocation starts a new one), crashes and init errors in Lambda's words. It also
//! prints Lambda's `START`, `END` and `REPORT` lines on stderr.
//!
//! Replies go through `oneshot` channels whose `send` fails only when the other side (an HTTP
//! request, an invoke) went away: there is then no one to tell, so those results are ignored.

use std::collections::VecDeque;
use std::io;
use std::time::{Duration, Instant, SystemTime};

use hyper::body::{Bytes, Frame};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use super::runtime_api::ERROR_TYPE_TRAILER;
use tokio::task::JoinHandle;

use super::cgroup::Limit;
use super::extensions::{ExtRequest, Extensions};
use super::ids::{epoch_ms, request_id, timestamp, trace_id};
use super::invocation::{
    Invoke, MAX_PAYLOAD, Outcome, Settings, describe_exit, exit_error, millis,
};
use super::runtime_api::{Ack, Delivery, RtEvent, serve_runtime_api};
use super::sandbox::{LaunchError, Launched};
use crate::error::{Error, IoContext, Result};
use std::sync::Arc;

/// Lambda's limit on the init phase (before it is retried within the invocation).
pub const INIT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long extensions may take over `SHUTDOWN` (Lambda's shutdown phase with external
/// extensions: 2 s).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Starts the function's process, given the address of its Runtime API (`127.0.0.1:PORT`).
pub type Launcher = Box<dyn FnMut(&str) -> Result<Launched, LaunchError> + Send>;

/// What a [`Handle`] sends the supervisor.
enum Msg {
    Invoke(Submit),
    /// Start no invocation until `Release` or `Swap` (new code is being built).
    Hold,
    /// Go on with the code in place.
    Release,
    /// Run the function `launch` starts from now on: the process in place is stopped once no
    /// invocation runs, and a new one started.
    Swap(Launcher),
}

/// What the invoke side sends the supervisor.
struct Submit {
    invoke: Invoke,
    reply: Replier,
}

/// An invocation's answer: whole, or streamed by the runtime
/// (`Lambda-Runtime-Function-Response-Mode: streaming`): its data frames, then perhaps the
/// trailers naming an error.
pub enum Reply {
    /// The whole outcome.
    Whole(Outcome),
    /// The frames, as the runtime sends them.
    Stream(mpsc::Receiver<Frame<Bytes>>),
}

/// The sending side of an invocation's [`Reply`], used once.
struct Replier(Option<oneshot::Sender<Reply>>);

impl Replier {
    /// Answer with the whole outcome (nothing happens when it was streamed already, or the
    /// caller went away).
    fn send(mut self, o: Outcome) -> std::result::Result<(), ()> {
        match self.0.take() {
            Some(tx) => tx.send(Reply::Whole(o)).map_err(drop),
            None => Err(()),
        }
    }

    /// Answer with a stream; false if the caller went away.
    fn stream(&mut self, frames: mpsc::Receiver<Frame<Bytes>>) -> bool {
        self.0
            .take()
            .is_some_and(|tx| tx.send(Reply::Stream(frames)).is_ok())
    }
}

/// Submits invocations to a running [`Supervisor`].
#[derive(Clone)]
pub struct Handle {
    tx: mpsc::UnboundedSender<Msg>,
}

impl Handle {
    /// Run one invocation; `None` if the supervisor stopped first.
    pub async fn invoke(&self, invoke: Invoke) -> Option<Outcome> {
        match self.invoke_reply(invoke).await? {
            Reply::Whole(o) => Some(o),
            Reply::Stream(mut frames) => {
                // Gathered whole (the runtime side caps a stream's size).
                let mut body = Vec::new();
                let mut error_type = None;
                while let Some(f) = frames.recv().await {
                    match f.into_data() {
                        Ok(d) => body.extend_from_slice(&d),
                        Err(f) => {
                            error_type = f.trailers_ref().and_then(|t| {
                                t.get(ERROR_TYPE_TRAILER)?.to_str().ok().map(str::to_owned)
                            })
                        }
                    }
                }
                Some(Outcome {
                    body: Bytes::from(body),
                    error_type,
                })
            }
        }
    }

    /// Run one invocation; its reply, whole or streamed; `None` if the supervisor stopped
    /// first.
    pub async fn invoke_reply(&self, invoke: Invoke) -> Option<Reply> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::Invoke(Submit {
                invoke,
                reply: Replier(Some(reply)),
            }))
            .ok()?;
        rx.await.ok()
    }

    /// Hold invocations (they wait) until [`Handle::release`] or [`Handle::swap`]: the code is
    /// being rebuilt, and a request arriving now must get the new code.
    pub fn hold(&self) {
        // A stopped supervisor has nothing to hold.
        let _ = self.tx.send(Msg::Hold);
    }

    /// Go on with the code in place (a rebuild failed).
    pub fn release(&self) {
        // As above.
        let _ = self.tx.send(Msg::Release);
    }

    /// Run new code: the process in place is stopped between invocations and `launch` starts
    /// the next; held invocations then go on.
    pub fn swap(&self, launch: Launcher) {
        // As above.
        let _ = self.tx.send(Msg::Swap(launch));
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
            Err(e) => Err(Error::Internal(format!("the supervisor failed: {e}"))),
        }
    }
}

/// Start a supervisor for the function `launch` starts. With `eager`, the function is started
/// at once (as `lamina run` does, so that its init shows up before the first invocation);
/// otherwise with the first invocation.
pub fn start(
    settings: Settings,
    launch: Launcher,
    eager: bool,
    limit: Option<Arc<Limit>>,
) -> (Handle, Running) {
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
        limit,
        oom_seen: 0,
        held: false,
        swap: None,
        restart: false,
        eager,
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

struct Pending {
    id: String,
    invoke: Invoke,
    reply: Replier,
    /// Set when init is retried within this invocation: its timeout counts from here.
    budget_from: Option<Instant>,
}

struct Current {
    generation: u64,
    id: String,
    reply: Replier,
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
    /// Its external extensions.
    extensions: Extensions,
    /// The runtime and every extension have asked for their next event once.
    init_done: bool,
    /// After an invocation, extensions still busy must ask for their next event by then.
    drain_deadline: Option<Instant>,
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
    /// The memory limit the function runs under, when enforced.
    limit: Option<Arc<Limit>>,
    /// The cgroup's OOM kills already accounted for.
    oom_seen: u64,
    /// No invocation starts (new code is being built).
    held: bool,
    /// New code to swap in once no invocation runs.
    swap: Option<Launcher>,
    /// Start a process as soon as the old one is gone (after a swap, when eager).
    restart: bool,
    /// Processes start before their first invocation (`lamina run`).
    eager: bool,
}

impl Supervisor {
    async fn run(
        mut self,
        mut submit_rx: mpsc::UnboundedReceiver<Msg>,
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
                        Some(Msg::Invoke(Submit { invoke, reply })) => self.queue.push_back(Pending {
                            id: request_id(),
                            invoke,
                            reply,
                            budget_from: None,
                        }),
                        Some(Msg::Hold) => self.held = true,
                        Some(Msg::Release) => self.held = false,
                        Some(Msg::Swap(launch)) => {
                            self.held = false;
                            self.swap = Some(launch);
                        }
                        None => return Ok(()),
                    },
                }
            }
        }
        .await;
        self.shut_extensions_down(&mut rt_rx).await;
        // Kill the function and wait (boundedly) for it to be gone.
        if let Some(mut p) = self.proc.take() {
            let generation = p.generation;
            if let Some(k) = p.kill.take() {
                let _ = k.send(());
            }
            // Bounded: a process that will not die within 5 s is left to the kernel (it is
            // killed with the runtime's worker threads, see `sandbox`).
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

    /// Lambda's shutdown phase for extensions: `SHUTDOWN` (reason `spindown`) to those that
    /// subscribed to it, then at most [`SHUTDOWN_GRACE`] for them to finish (ask for their next
    /// event) before everything is killed.
    async fn shut_extensions_down(&mut self, rt_rx: &mut mpsc::UnboundedReceiver<RtEvent>) {
        let until = Instant::now() + SHUTDOWN_GRACE;
        let Some(p) = self.proc.as_mut().filter(|p| !p.killed) else {
            return;
        };
        if p.extensions.shutdown("spindown", epoch_ms(until)) == 0 {
            return;
        }
        // Bounded by the grace period; what is left is killed below.
        let _ = tokio::time::timeout_at(until.into(), async {
            while let Some(ev) = rt_rx.recv().await {
                // The runtime's own requests are taken as usual (its `next` is held, not
                // refused: a refused runtime exits, and takes its extensions with it).
                self.on_runtime(ev);
                if !self
                    .proc
                    .as_ref()
                    .is_some_and(|p| p.extensions.shutting_down())
                {
                    break;
                }
            }
        })
        .await;
    }

    fn next_deadline(&self) -> Option<Instant> {
        let mut d: Option<Instant> = self.current.as_ref().map(|c| c.deadline);
        let mut consider = |t: Instant| d = Some(d.map_or(t, |x| x.min(t)));
        if let Some(p) = &self.proc
            && let Some(t) = p.drain_deadline
            && !p.killed
            && !p.extensions.ready()
        {
            consider(t);
        }
        if let Some(p) = &self.proc
            && !p.init_done
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
        let launched_extensions = launched.extensions.clone();
        self.announce(&launched);
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
            extensions: Extensions::new(launched_extensions),
            init_done: false,
            drain_deadline: None,
        });
        Ok(())
    }

    /// Say which extensions start, and (once) which isolation is in use.
    fn announce(&mut self, launched: &Launched) {
        if !launched.extensions.is_empty() {
            eprintln!(
                "lamina: starting the extensions {}",
                launched.extensions.join(", ")
            );
        }
        if !self.announced {
            eprintln!("lamina: isolation: {}", launched.how);
            if let Some(c) = &launched.caveat {
                eprintln!("lamina: note: {c}");
            }
            self.announced = true;
        }
    }

    /// Start a process or hand the next invocation to the runtime, when the time has come.
    fn progress(&mut self) -> Result<()> {
        if self.current.is_none()
            && let Some(launch) = self.swap.take()
        {
            self.launch = launch;
            self.kill_proc();
            self.restart = self.eager;
            eprintln!("lamina: swapping in the new code: the runtime starts again");
        }
        if self.restart && self.proc.is_none() && !self.held {
            self.restart = false;
            self.start_proc()?;
        }
        loop {
            if self.held || self.current.is_some() || self.queue.is_empty() {
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
            if !p.init_done || !p.extensions.ready() || p.waiter.is_none() {
                return Ok(()); // the runtime or an extension is not ready for the next one
            }
            let waiter = p.waiter.take().expect("checked");
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
            let (arn, trace) = (delivery.arn.clone(), delivery.trace_id.clone());
            if waiter.send(delivery).is_err() {
                // The runtime's request went away: wait for its next one.
                self.queue.push_front(front);
                continue;
            }
            p.extensions
                .invoke(&front.id, epoch_ms(deadline), &arn, &trace);
            p.drain_deadline = None;
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
        let max_used = self
            .limit
            .as_ref()
            .and_then(|l| l.peak_bytes())
            .map(|b| format!("Max Memory Used: {} MB\t", b.div_ceil(1024 * 1024)))
            .unwrap_or_default();
        eprintln!(
            "REPORT RequestId: {}\t{init}Duration: {:.2} ms\tBilled Duration: {} ms\tMemory Size: {} MB\t{max_used}",
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
            RtEvent::Next { generation, reply } => self.on_next(generation, reply),
            RtEvent::Response {
                generation,
                id,
                body,
                ack,
            } => {
                let Some((cur, ack)) = self.take_current(generation, id, ack) else {
                    return;
                };
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
                let Some((cur, ack)) = self.take_current(generation, id, ack) else {
                    return;
                };
                let _ = ack.send(Ack::Accepted);
                self.finish(cur, Outcome::posted(body, error_type));
            }
            RtEvent::InitError {
                generation,
                body,
                error_type,
                ack,
            } => self.on_init_error(generation, Outcome::posted(body, error_type), ack),
            RtEvent::Extension {
                generation,
                request,
            } => self.on_extension(generation, request),
            RtEvent::StreamStart {
                generation,
                id,
                frames,
                ack,
            } => self.on_stream_start(generation, id, frames, ack),
            RtEvent::StreamEnd {
                generation,
                id,
                error_type,
                ack,
            } => self.on_stream_end(generation, id, error_type, ack),
        }
    }

    /// The runtime starts streaming the response of `id`: the caller gets the stream now.
    fn on_stream_start(
        &mut self,
        generation: u64,
        id: String,
        frames: mpsc::Receiver<Frame<Bytes>>,
        ack: oneshot::Sender<Ack>,
    ) {
        if !self.is_current(generation, &id) {
            let _ = ack.send(Ack::UnknownId(id));
            return;
        }
        let cur = self.current.as_mut().expect("checked");
        // A caller gone away: the stream is read and dropped all the same.
        cur.reply.stream(frames);
        let _ = ack.send(Ack::Accepted);
    }

    /// The streamed response of `id` ended: the invocation is over.
    fn on_stream_end(
        &mut self,
        generation: u64,
        id: String,
        error_type: Option<String>,
        ack: oneshot::Sender<Ack>,
    ) {
        let Some((cur, ack)) = self.take_current(generation, id, ack) else {
            return;
        };
        let _ = ack.send(Ack::Accepted);
        let outcome = Outcome {
            body: Bytes::new(),
            error_type,
        };
        self.finish(cur, outcome);
    }

    /// The runtime of process `generation` asks for an invocation (its init is over).
    fn on_next(&mut self, generation: u64, reply: oneshot::Sender<Delivery>) {
        let Some(p) = self
            .proc
            .as_mut()
            .filter(|p| p.generation == generation && !p.killed)
        else {
            return; // a process being killed: its request is dropped
        };
        p.ready = true;
        p.waiter = Some(reply);
        Self::check_init(p);
    }

    /// Init is over once the runtime and every extension have asked for their next event.
    fn check_init(p: &mut Proc) {
        if !p.init_done && p.ready && p.extensions.ready() {
            p.init_done = true;
            p.init_deadline = None;
            p.init = Some(p.started.elapsed());
        }
    }

    /// A request of the Extensions API from process `generation`.
    fn on_extension(&mut self, generation: u64, request: ExtRequest) {
        let function = (
            self.settings.function_name.clone(),
            self.settings.handler.clone(),
        );
        let Some(p) = self
            .proc
            .as_mut()
            .filter(|p| p.generation == generation && !p.killed)
        else {
            // Dropping the request's reply answers it (the environment is going away).
            return;
        };
        match request {
            ExtRequest::Register {
                name,
                events,
                reply,
            } => {
                let r = if p.init_done {
                    Err("extensions register during init only".to_owned())
                } else {
                    p.extensions
                        .register(name.clone(), &events, (&function.0, &function.1))
                };
                if r.is_ok() {
                    eprintln!(
                        "lamina: extension {name} registered for {}",
                        events.join(", ")
                    );
                }
                let _ = reply.send(r);
            }
            ExtRequest::Next { id, reply } => {
                if p.extensions.next(&id, reply) {
                    Self::check_init(p);
                }
            }
            ExtRequest::Error {
                id,
                exit,
                error_type,
                ack,
            } => {
                let Some(name) = p.extensions.name_of(&id).map(str::to_owned) else {
                    let _ = ack.send(false);
                    return;
                };
                let _ = ack.send(true);
                let phase = if exit { "exit" } else { "init" };
                eprintln!("lamina: extension {name} reported an {phase} error: {error_type}");
                if !exit {
                    // As Lambda: an extension's init error fails the init.
                    eprintln!(
                        "INIT_REPORT Init Duration: {:.2} ms\tPhase: init\tStatus: error\tError Type: {error_type}",
                        millis(p.started.elapsed())
                    );
                    self.kill_proc();
                    if let Some(front) = self.queue.pop_front() {
                        let _ = front.reply.send(Outcome::error(
                            &error_type,
                            format!(
                                "RequestId: {} Error: extension {name} failed its init",
                                front.id
                            ),
                        ));
                    }
                }
            }
        }
    }

    /// The invocation `id` a runtime answers (with the acknowledgement still to send), if it is
    /// the one in progress in its process; otherwise the runtime is told so.
    fn take_current(
        &mut self,
        generation: u64,
        id: String,
        ack: oneshot::Sender<Ack>,
    ) -> Option<(Current, oneshot::Sender<Ack>)> {
        if !self.is_current(generation, &id) {
            let _ = ack.send(Ack::UnknownId(id));
            return None;
        }
        let cur = self.current.take()?;
        if let Some(p) = self.proc.as_mut() {
            p.drain_deadline = Some(cur.deadline);
        }
        Some((cur, ack))
    }

    /// The runtime of process `generation` reports that its init failed with `outcome`.
    fn on_init_error(&mut self, generation: u64, outcome: Outcome, ack: oneshot::Sender<Ack>) {
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
        // Killed by the OOM killer in the function's cgroup: Lambda's Runtime.OutOfMemory
        // (RIE: rapid/shutdown.go, `event.OomKilled()` gives `ErrorRuntimeOutOfMemory`, with
        // the same "Runtime exited with error: signal: killed" message).
        let kind = match self.limit.as_ref().map(|l| l.oom_kills()) {
            Some(n) if n > self.oom_seen => {
                self.oom_seen = n;
                "Runtime.OutOfMemory"
            }
            _ => "Runtime.ExitError",
        };
        if let Some(cur) = self.current.take_if(|c| c.generation == generation) {
            let message = format!("RequestId: {} Error: {error}", cur.id);
            eprintln!("{message}\n{kind}");
            self.finish(cur, Outcome::error(kind, message));
        } else if !p.init_done {
            eprintln!(
                "INIT_REPORT Init Duration: {:.2} ms\tPhase: init\tStatus: error\tError Type: {kind}",
                millis(p.started.elapsed())
            );
            match self.queue.pop_front() {
                Some(front) => {
                    let message = format!("RequestId: {} Error: {error}", front.id);
                    eprintln!("{message}\n{kind}");
                    let _ = front.reply.send(Outcome::error(kind, message));
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

    /// Past a deadline: the invocation's timeout, or init's.
    ///
    /// A timeout answers `Sandbox.Timedout` with `RequestId: ID Error: Task timed out after
    /// N.NN seconds`, as Lambda does. Checked against AWS's runtime interface emulator
    /// (github.com/aws/aws-lambda-runtime-interface-emulator): its Lambda model names the
    /// error `ErrorSandboxTimedout = "Sandbox.Timedout"`
    /// (internal/lambda-managed-instances/rapid/model/customer_error.go) with the message
    /// `fmt.Sprintf("Task timed out after %.2f seconds", ...)`
    /// (internal/lambda-managed-instances/invoke/utils.go, `BuildInvokeAppError`), wrapped as
    /// `"RequestId: %s Error: %v"` (internal/lambda-managed-instances/interop/model.go).
    /// `Sandbox.Timeout` (internal/lambda/fatalerror) is the older internal name, which the
    /// emulator's classic invoke handler never shows: it answers a bare `Task timed out after
    /// N.00 seconds` text (internal/lambda/rie/handlers.go).
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
        if let Some(p) = self.proc.as_ref().filter(|p| !p.killed)
            && p.drain_deadline.is_some_and(|d| now >= d)
            && !p.extensions.ready()
        {
            eprintln!(
                "lamina: the extensions {} did not ask for their next event within the invocation's timeout: the environment is reset",
                p.extensions.busy().join(", ")
            );
            self.kill_proc();
            return;
        }
        let Some(p) = self.proc.as_ref().filter(|p| !p.init_done && !p.killed) else {
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
