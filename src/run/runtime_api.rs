//! The Lambda Runtime API, served to the function on an ephemeral port of 127.0.0.1 (a new
//! listener for each process started, so nothing a killed process sent can reach the next):
//! `GET /2018-06-01/runtime/invocation/next`, `POST .../invocation/{id}/response`,
//! `POST .../invocation/{id}/error`, `POST /2018-06-01/runtime/init/error`; and the Extensions
//! API on the same address (`extensions`).

use http_body_util::BodyExt;
use hyper::body::{Bytes, Frame, Incoming};
use hyper::header::HeaderMap;
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
    /// The runtime starts streaming the response of invocation `id` into `frames`.
    StreamStart {
        generation: u64,
        id: String,
        frames: mpsc::Receiver<Frame<Bytes>>,
        ack: oneshot::Sender<Ack>,
    },
    /// The streamed response of `id` ended; `error_type` from its trailers.
    StreamEnd {
        generation: u64,
        id: String,
        error_type: Option<String>,
        ack: oneshot::Sender<Ack>,
    },
}

/// The trailer (and header) naming a streamed response's error.
pub(super) const ERROR_TYPE_TRAILER: &str = "lambda-runtime-function-error-type";
/// The trailer carrying a streamed response's error body (base64).
const ERROR_BODY_TRAILER: &str = "lambda-runtime-function-error-body";

/// Lambda's limit on a streamed response (20 MB).
pub(super) const MAX_STREAMED: u64 = 20 * 1024 * 1024;

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

async fn ack_response(
    rx: impl std::future::Future<Output = Result<Ack, oneshot::error::RecvError>>,
) -> Response<Body> {
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
            let streaming = header(&req, "lambda-runtime-function-response-mode")
                .is_some_and(|m| m.eq_ignore_ascii_case("streaming"));
            if what == "response" && streaming {
                return stream_response(req.into_body(), generation, id, &events).await;
            }
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

/// A response the runtime streams (`Lambda-Runtime-Function-Response-Mode: streaming`,
/// chunked): each chunk is passed on to the invoke side as it arrives, then the runtime's
/// trailers (`Lambda-Runtime-Function-Error-Type`, `Lambda-Runtime-Function-Error-Body`).
/// Past Lambda's 20 MB the rest is dropped and the error trailer says
/// `Function.ResponseSizeTooLarge`; a runtime that breaks off mid-stream gives
/// `Runtime.TruncatedResponse` (the emulator's names, internal/lambda/fatalerror).
async fn stream_response(
    mut body: Incoming,
    generation: u64,
    id: String,
    events: &mpsc::UnboundedSender<RtEvent>,
) -> Response<Body> {
    let (tx, frames) = mpsc::channel(16);
    let (ack, rx) = oneshot::channel();
    let _ = events.send(RtEvent::StreamStart {
        generation,
        id: id.clone(),
        frames,
        ack,
    });
    match rx.await {
        Ok(Ack::Accepted) => {}
        other => return ack_response(async { other }).await,
    }
    let mut len = 0u64;
    let mut trailers: Option<HeaderMap> = None;
    let mut failure = None;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            failure = Some("Runtime.TruncatedResponse");
            break;
        };
        match frame.into_data() {
            Ok(data) => {
                len += data.len() as u64;
                if len > MAX_STREAMED {
                    failure = Some("Function.ResponseSizeTooLarge");
                    continue; // read on, pass nothing more
                }
                // A caller gone away: the rest is read and dropped.
                let _ = tx.send(Frame::data(data)).await;
            }
            Err(frame) => trailers = frame.into_trailers().ok(),
        }
    }
    let mut trailers = trailers.unwrap_or_default();
    if let Some(kind) = failure {
        trailers.insert(ERROR_TYPE_TRAILER, HeaderValue::from_static(kind));
        trailers.remove(ERROR_BODY_TRAILER);
    }
    let error_type = trailers
        .get(ERROR_TYPE_TRAILER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if !trailers.is_empty() {
        let _ = tx.send(Frame::trailers(trailers)).await;
    }
    drop(tx);
    let (ack, rx) = oneshot::channel();
    let _ = events.send(RtEvent::StreamEnd {
        generation,
        id,
        error_type,
        ack,
    });
    ack_response(rx).await
}
