//! Lambda's Extensions API (`/2020-01-01/extension/...`), served beside the Runtime API on
//! the same address (`AWS_LAMBDA_RUNTIME_API`), and the extensions of one process.
//!
//! An external extension (an executable in `/opt/extensions`, started by the sandbox before
//! the runtime) registers (`POST register` with `Lambda-Extension-Name`, its file name; body
//! `{"events": ["INVOKE", "SHUTDOWN"]}`; answered with `Lambda-Extension-Identifier`), then
//! asks for events (`GET event/next` with that identifier). Init is over when the runtime and
//! every extension have asked for their next event; each invocation is sent to the extensions
//! that subscribed to `INVOKE`, and the next invocation waits until all of them have asked
//! again. On stop, `SHUTDOWN` goes to those that subscribed to it. `init/error` and
//! `exit/error` are accepted and reported. JSON shapes as in AWS's "Lambda Extensions API"
//! reference.

use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use super::http::{Body, api_error, header, read_capped, respond};
use super::ids::request_id;
use super::runtime_api::RtEvent;

/// What an extension's request asks of the supervisor.
pub(super) enum ExtRequest {
    /// `register`: name and subscribed events; answered with the identifier or a refusal.
    Register {
        name: String,
        events: Vec<String>,
        reply: oneshot::Sender<Result<(String, String), String>>,
    },
    /// `event/next`: answered with the next event's JSON (or dropped on shutdown).
    Next {
        id: String,
        reply: oneshot::Sender<Value>,
    },
    /// `init/error` or `exit/error`.
    Error {
        id: String,
        exit: bool,
        error_type: String,
        ack: oneshot::Sender<bool>,
    },
}

/// Lambda's limit on the size of an extension request body that lamina reads.
const MAX_BODY: usize = 64 * 1024;

/// Serve one request under `/2020-01-01/extension/` (`rest` is the path after it).
pub(super) async fn extension_api(
    req: Request<Incoming>,
    rest: &str,
    generation: u64,
    events: &mpsc::UnboundedSender<RtEvent>,
) -> Response<Body> {
    let id = header(&req, "lambda-extension-identifier");
    let send = |request| {
        // A closed channel means the supervisor is gone; the dropped reply then answers.
        let _ = events.send(RtEvent::Extension {
            generation,
            request,
        });
    };
    match (req.method().clone(), rest) {
        (Method::POST, "register") => register(req, send).await,
        (Method::GET, "event/next") => {
            let Some(id) = id else {
                return missing_id();
            };
            let (reply, rx) = oneshot::channel();
            send(ExtRequest::Next { id, reply });
            match rx.await {
                Ok(event) => {
                    let mut r = respond(
                        StatusCode::OK,
                        serde_json::to_vec(&event).expect("JSON serializes"),
                    );
                    if let Ok(v) = HeaderValue::from_str(&request_id()) {
                        r.headers_mut()
                            .insert("lambda-extension-event-identifier", v);
                    }
                    r
                }
                Err(_) => api_error(
                    StatusCode::FORBIDDEN,
                    "Extension.UnknownExtension",
                    "unknown extension identifier, or the environment is shutting down",
                ),
            }
        }
        (Method::POST, what @ ("init/error" | "exit/error")) => {
            let Some(id) = id else {
                return missing_id();
            };
            let error_type = header(&req, "lambda-extension-function-error-type")
                .unwrap_or_else(|| "Extension.Unknown".to_owned());
            let (ack, rx) = oneshot::channel();
            send(ExtRequest::Error {
                id,
                exit: what == "exit/error",
                error_type,
                ack,
            });
            match rx.await {
                Ok(true) => respond(StatusCode::ACCEPTED, r#"{"status":"OK"}"#),
                _ => api_error(
                    StatusCode::FORBIDDEN,
                    "Extension.UnknownExtension",
                    "unknown extension identifier",
                ),
            }
        }
        _ => api_error(StatusCode::NOT_FOUND, "NotFound", "unknown path"),
    }
}

/// `POST register`: the name from `Lambda-Extension-Name`, the events from the body.
async fn register(req: Request<Incoming>, send: impl Fn(ExtRequest)) -> Response<Body> {
    let Some(name) = header(&req, "lambda-extension-name") else {
        return api_error(
            StatusCode::BAD_REQUEST,
            "InvalidRequest",
            "missing Lambda-Extension-Name header",
        );
    };
    let body = read_capped(req.into_body(), MAX_BODY).await;
    let events_of = body
        .and_then(|(b, _)| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| v.get("events").cloned())
        .and_then(|e| serde_json::from_value::<Vec<String>>(e).ok());
    let Some(subscribed) = events_of else {
        return api_error(
            StatusCode::BAD_REQUEST,
            "InvalidRequest",
            r#"the body must be {"events": ["INVOKE", "SHUTDOWN"]} (a subset)"#,
        );
    };
    if let Some(bad) = subscribed
        .iter()
        .find(|e| !matches!(e.as_str(), "INVOKE" | "SHUTDOWN"))
    {
        return api_error(
            StatusCode::BAD_REQUEST,
            "InvalidEventType",
            &format!("unknown event type {bad} (INVOKE, SHUTDOWN)"),
        );
    }
    let (reply, rx) = oneshot::channel();
    send(ExtRequest::Register {
        name,
        events: subscribed,
        reply,
    });
    registered(rx.await)
}

fn missing_id() -> Response<Body> {
    api_error(
        StatusCode::FORBIDDEN,
        "Extension.MissingExtensionIdentifier",
        "missing Lambda-Extension-Identifier header",
    )
}

type Registered = Result<(String, String), String>;

fn registered(r: Result<Registered, oneshot::error::RecvError>) -> Response<Body> {
    match r {
        Ok(Ok((id, body))) => {
            let mut resp = respond(StatusCode::OK, body);
            if let Ok(v) = HeaderValue::from_str(&id) {
                resp.headers_mut().insert("lambda-extension-identifier", v);
            }
            resp
        }
        Ok(Err(m)) => api_error(StatusCode::FORBIDDEN, "Extension.InvalidRegistration", &m),
        Err(_) => api_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ServiceException",
            "the environment is shutting down",
        ),
    }
}

/// One registered extension.
struct Extension {
    id: String,
    name: String,
    invoke: bool,
    shutdown: bool,
    /// Its pending `event/next`, when it waits for an event.
    waiter: Option<oneshot::Sender<Value>>,
    /// `SHUTDOWN` was sent to it.
    shutdown_sent: bool,
    /// It asked for an event again after `SHUTDOWN`: done with it.
    shutdown_done: bool,
}

/// The extensions of one process.
#[derive(Default)]
pub(super) struct Extensions {
    /// The names of the executables found in `/opt/extensions`, which must all register.
    expected: Vec<String>,
    registered: Vec<Extension>,
    /// The `SHUTDOWN` event, once the environment shuts down.
    shutdown_event: Option<Value>,
}

impl Extensions {
    /// The extensions of a process started with these executables (file names).
    pub(super) fn new(expected: Vec<String>) -> Extensions {
        Extensions {
            expected,
            registered: Vec::new(),
            shutdown_event: None,
        }
    }

    /// Register `name`: its identifier and the body to answer with.
    pub(super) fn register(
        &mut self,
        name: String,
        events: &[String],
        function: (&str, &str),
    ) -> Registered {
        if self.registered.iter().any(|e| e.name == name) {
            return Err(format!("extension {name} is already registered"));
        }
        let id = request_id();
        self.registered.push(Extension {
            id: id.clone(),
            name,
            invoke: events.iter().any(|e| e == "INVOKE"),
            shutdown: events.iter().any(|e| e == "SHUTDOWN"),
            waiter: None,
            shutdown_sent: false,
            shutdown_done: false,
        });
        let body = json!({
            "functionName": function.0,
            "functionVersion": "$LATEST",
            "handler": function.1,
        });
        Ok((id, body.to_string()))
    }

    /// The extension `id` waits for its next event; false if there is no such extension.
    pub(super) fn next(&mut self, id: &str, reply: oneshot::Sender<Value>) -> bool {
        let Some(e) = self.registered.iter_mut().find(|e| e.id == id) else {
            return false;
        };
        match &self.shutdown_event {
            Some(event) if e.shutdown && !e.shutdown_sent => {
                e.shutdown_sent = true;
                // Gone already: it gets nothing and its exit ends it.
                let _ = reply.send(event.clone());
            }
            Some(_) if e.shutdown => {
                e.shutdown_done = true;
                e.waiter = Some(reply);
            }
            _ => e.waiter = Some(reply),
        }
        true
    }

    /// The name of extension `id`.
    pub(super) fn name_of(&self, id: &str) -> Option<&str> {
        self.registered
            .iter()
            .find(|e| e.id == id)
            .map(|e| e.name.as_str())
    }

    /// Every expected extension has registered and every registered one waits for an event:
    /// init (or the previous invocation) is over for the extensions.
    pub(super) fn ready(&self) -> bool {
        let all_registered = self
            .expected
            .iter()
            .all(|n| self.registered.iter().any(|e| &e.name == n));
        all_registered && self.registered.iter().all(|e| e.waiter.is_some())
    }

    /// The names of the extensions not yet registered or still busy, for a message.
    pub(super) fn busy(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .expected
            .iter()
            .filter(|n| !self.registered.iter().any(|e| &e.name == *n))
            .cloned()
            .collect();
        names.extend(
            self.registered
                .iter()
                .filter(|e| e.waiter.is_none())
                .map(|e| e.name.clone()),
        );
        names
    }

    /// Send an `INVOKE` event to the extensions that subscribed to it.
    pub(super) fn invoke(&mut self, request_id: &str, deadline_ms: u128, arn: &str, trace: &str) {
        let event = json!({
            "eventType": "INVOKE",
            "deadlineMs": deadline_ms,
            "requestId": request_id,
            "invokedFunctionArn": arn,
            "tracing": {"type": "X-Amzn-Trace-Id", "value": trace},
        });
        for e in self.registered.iter_mut().filter(|e| e.invoke) {
            if let Some(w) = e.waiter.take() {
                // An extension whose request went away gets no event; it asks again.
                let _ = w.send(event.clone());
            }
        }
    }

    /// Send a `SHUTDOWN` event (`reason`: `spindown`, `timeout`, `failure`) to the extensions
    /// that subscribed to it: now to those waiting for an event, to the others when they next
    /// ask. The number of extensions subscribed.
    pub(super) fn shutdown(&mut self, reason: &str, deadline_ms: u128) -> usize {
        let event = json!({
            "eventType": "SHUTDOWN",
            "shutdownReason": reason,
            "deadlineMs": deadline_ms,
        });
        let mut subscribed = 0;
        for e in self.registered.iter_mut().filter(|e| e.shutdown) {
            subscribed += 1;
            if let Some(w) = e.waiter.take() {
                e.shutdown_sent = true;
                // One whose request went away gets nothing: it is exiting.
                let _ = w.send(event.clone());
            }
        }
        self.shutdown_event = Some(event);
        subscribed
    }

    /// Any extension subscribed to `SHUTDOWN` has not finished with it (asked again).
    pub(super) fn shutting_down(&self) -> bool {
        self.registered
            .iter()
            .any(|e| e.shutdown && !e.shutdown_done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invocations_wait_for_every_extension() {
        let mut x = Extensions::new(vec!["a".into(), "b".into()]);
        assert!(!x.ready());
        let (a_id, body) = x
            .register("a".into(), &["INVOKE".into()], ("f", "h"))
            .unwrap();
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["functionName"], "f");
        assert!(x.register("a".into(), &[], ("f", "h")).is_err());
        let (tx, mut rx) = oneshot::channel();
        assert!(x.next(&a_id, tx));
        assert!(!x.ready(), "b has not registered");
        assert_eq!(x.busy(), ["b"]);
        let (b_id, _) = x
            .register("b".into(), &["SHUTDOWN".into()], ("f", "h"))
            .unwrap();
        let (tb, mut rb) = oneshot::channel();
        assert!(x.next(&b_id, tb));
        assert!(x.ready());
        x.invoke("req", 1, "arn", "Root=1");
        assert_eq!(rx.try_recv().unwrap()["eventType"], "INVOKE");
        assert!(rb.try_recv().is_err(), "b did not subscribe to INVOKE");
        assert!(!x.ready(), "a is busy with the invocation");
        assert_eq!(x.shutdown("spindown", 2), 1);
        assert_eq!(rb.try_recv().unwrap()["shutdownReason"], "spindown");
        assert!(x.shutting_down());
        assert!(!x.next("nope", oneshot::channel().0));
    }
}
