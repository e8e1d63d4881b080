//! The invoke side, served to the user on 127.0.0.1 as AWS's Runtime Interface Emulator takes
//! it: `POST /2015-03-31/functions/{name}/invocations`, the body the event, the answer the
//! function's response, or its error with `X-Amz-Function-Error: Unhandled`.

use hyper::body::{Bytes, Incoming};
use hyper::header::HeaderValue;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;
use tokio::net::TcpListener;

use super::http::ChannelBody;
use super::http::{Body, accept_loop, header, read_capped, respond};
use super::invocation::{Invoke, MAX_PAYLOAD};
use super::supervisor::{Handle, Reply};
use crate::error::{Error, Result};

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

/// The body of an invoke request as the function gets it: JSON (empty means `{}`). A body that
/// is too large or not JSON is the caller's error ([`Error::Usage`]).
pub fn event_payload(body: &[u8]) -> Result<Bytes> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Bytes::from_static(b"{}"));
    }
    if body.len() > MAX_PAYLOAD {
        return Err(Error::Usage(format!(
            "{} byte payload is too large for the RequestResponse invocation type ({MAX_PAYLOAD})",
            body.len()
        )));
    }
    serde_json::from_slice::<serde::de::IgnoredAny>(body)
        .map_err(|e| Error::Usage(format!("Could not parse request body into json: {e}")))?;
    Ok(Bytes::copy_from_slice(body))
}

async fn invoke_api(req: Request<Incoming>, handle: Handle) -> Response<Body> {
    let (invoke, asynchronous) = match invocation_of(req).await {
        Ok(i) => i,
        Err(refused) => return refused,
    };
    if asynchronous {
        tokio::spawn(async move {
            // An event invocation has no one waiting for its outcome.
            let _ = handle.invoke(invoke).await;
        });
        return respond(StatusCode::ACCEPTED, Bytes::new());
    }
    let outcome = match handle.invoke_reply(invoke).await {
        Some(Reply::Whole(o)) => o,
        Some(Reply::Stream(frames)) => return streamed(frames),
        None => {
            return user_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "ServiceException",
                "the function's environment stopped",
            );
        }
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

/// A response the function streams: passed on chunk by chunk (chunked transfer encoding), the
/// runtime's error trailers (`Lambda-Runtime-Function-Error-Type`, `-Error-Body`) last — sent
/// by HTTP/1.1 only to a client that asked for trailers (`TE: trailers`).
fn streamed(frames: tokio::sync::mpsc::Receiver<hyper::body::Frame<Bytes>>) -> Response<Body> {
    use http_body_util::BodyExt;
    let mut r = Response::new(ChannelBody(frames).boxed());
    let h = r.headers_mut();
    h.insert(
        "content-type",
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(
        "x-amz-executed-version",
        HeaderValue::from_static("$LATEST"),
    );
    h.insert(
        "lambda-runtime-function-response-mode",
        HeaderValue::from_static("streaming"),
    );
    h.insert(
        "trailer",
        HeaderValue::from_static(
            "Lambda-Runtime-Function-Error-Type, Lambda-Runtime-Function-Error-Body",
        ),
    );
    r
}

/// The invocation an invoke request asks for, and whether it is asynchronous (`Event`); or the
/// answer refusing it.
async fn invocation_of(
    req: Request<Incoming>,
) -> std::result::Result<(Invoke, bool), Response<Body>> {
    let path = req.uri().path().to_owned();
    let is_invoke = path
        .strip_prefix("/2015-03-31/functions/")
        .and_then(|r| r.strip_suffix("/invocations"))
        .is_some_and(|name| !name.is_empty() && !name.contains('/'));
    if !is_invoke {
        return Err(user_error(
            StatusCode::NOT_FOUND,
            "ResourceNotFoundException",
            "unknown path: invoke with POST /2015-03-31/functions/function/invocations",
        ));
    }
    if req.method() != Method::POST {
        return Err(user_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "invoke with POST",
        ));
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
    let Some((body, len)) = read_capped(req.into_body(), MAX_PAYLOAD).await else {
        return Err(user_error(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContentException",
            "unreadable body",
        ));
    };
    if len > MAX_PAYLOAD as u64 {
        return Err(user_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLargeException",
            &format!(
                "{len} byte payload is too large for the RequestResponse invocation type ({MAX_PAYLOAD})"
            ),
        ));
    }
    let payload = event_payload(&body).map_err(|e| {
        let (status, error_type) = if body.len() > MAX_PAYLOAD {
            (
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLargeException",
            )
        } else {
            (StatusCode::BAD_REQUEST, "InvalidRequestContentException")
        };
        user_error(status, error_type, &e.to_string())
    })?;
    let invoke = Invoke {
        payload,
        trace_id,
        client_context,
    };
    Ok((invoke, asynchronous))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_must_be_json() {
        assert_eq!(&event_payload(b"").unwrap()[..], b"{}");
        assert_eq!(&event_payload(b"[1]").unwrap()[..], b"[1]");
        assert!(
            event_payload(b"{nope")
                .unwrap_err()
                .to_string()
                .contains("Could not parse")
        );
    }
}
