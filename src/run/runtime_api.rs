//! The Lambda Runtime API, served to the function on an ephemeral port of 127.0.0.1 (a new
//! listener for each process started, so nothing a killed process sent can reach the next):
//! `GET /2018-06-01/runtime/invocation/next`, `POST .../invocation/{id}/response`,
//! `POST .../invocation/{id}/error`, `POST /2018-06-01/runtime/init/error`; and the Extensions
//! API on the same address (`extensions`).

use hyper::body::Bytes;
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use super::extensions::{ExtRequest, extension_api};
use super::http::{Body, accept_loop, api_error, header, read_capped, respond};
use super::invocation::MAX_PAYLOAD;

/// What the Runtime API hands the runtime for one invocation.
pub(super) struct Delivery {
    pub(super) id: String,
    pub(super) payload: Bytes,
    pub(super) deadline_ms: u128,
    pub(super) arn: String,
    pub(super) trace_id: String,
    pub(super) client_context: Option<String>,
}

/// The supervisor's answer to a runtime's POST.
pub(super) enum Ack {
    Accepted,
    UnknownId(String),
    InvalidState(String),
    TooLarge,
}

/// What the Runtime API handlers tell the supervisor, tagged with the process generation
/// whose listener received it.
pub(super) enum RtEvent {
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
    /// A request of the Extensions API.
    Extension {
        generation: u64,
        request: ExtRequest,
    },
}

pub(super) async fn serve_runtime_api(
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
        Err(_) => shutting_down(),
    }
}

fn shutting_down() -> Response<Body> {
    api_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "ServiceException",
        "the environment is shutting down",
    )
}

fn not_found() -> Response<Body> {
    api_error(StatusCode::NOT_FOUND, "NotFound", "unknown path")
}

// A failed `events.send` below means the supervisor is gone; the handler then answers from the
// dropped acknowledgement (`ack_response`), so the send's result may be ignored.
async fn runtime_api(
    req: Request<Incoming>,
    generation: u64,
    events: mpsc::UnboundedSender<RtEvent>,
) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    if let Some(rest) = path.strip_prefix("/2020-01-01/extension/") {
        return extension_api(req, rest, generation, &events).await;
    }
    let Some(rest) = path.strip_prefix("/2018-06-01/runtime/") else {
        return not_found();
    };
    let error_type = header(&req, "lambda-runtime-function-error-type");
    match (method, rest) {
        (Method::GET, "invocation/next") => next_invocation(generation, &events).await,
        (Method::POST, "init/error") => {
            // At most one byte over Lambda's limit is kept: the supervisor refuses what is over.
            let Some((body, _)) = read_capped(req.into_body(), MAX_PAYLOAD).await else {
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
                ["invocation", id, what @ ("response" | "error")] => (id.to_string(), *what),
                _ => return not_found(),
            };
            // At most one byte over Lambda's limit is kept: the supervisor refuses what is over.
            let Some((body, _)) = read_capped(req.into_body(), MAX_PAYLOAD).await else {
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
        _ => not_found(),
    }
}

/// `GET invocation/next`: wait for the supervisor to hand over an invocation.
async fn next_invocation(
    generation: u64,
    events: &mpsc::UnboundedSender<RtEvent>,
) -> Response<Body> {
    let (reply, rx) = oneshot::channel();
    if events.send(RtEvent::Next { generation, reply }).is_err() {
        return shutting_down();
    }
    let Ok(d) = rx.await else {
        return shutting_down();
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
