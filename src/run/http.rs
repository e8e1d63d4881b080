//! What the two HTTP servers of `lamina run` share: JSON responses and the accept loop.
//!
//! hyper 1 (with hyper-util's tokio glue) is the server: reqwest already builds it, so it adds
//! no code to the build, and HTTP/1.1 is all either side speaks.

use std::convert::Infallible;
use std::time::Duration;

use std::pin::Pin;
use std::task::{Context, Poll};

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Frame;
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// A response body: whole (`respond`), or streamed from a channel ([`ChannelBody`]).
pub(super) type Body = BoxBody<Bytes, Infallible>;

pub(super) fn respond(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).boxed());
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

pub(super) fn api_error(status: StatusCode, error_type: &str, message: &str) -> Response<Body> {
    let body = json!({"errorMessage": message, "errorType": error_type});
    respond(status, serde_json::to_vec(&body).expect("JSON serializes"))
}

pub(super) fn header(req: &Request<Incoming>, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Accept connections until aborted; aborting drops (and so closes) every connection too.
pub(super) async fn accept_loop<F, Fut>(listener: TcpListener, handler: F)
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
                    // A connection's error (the peer hung up) concerns only that connection.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// A request body read with a cap: what was read (at most `cap + 1` bytes, so a caller can
/// tell it was over), and the body's length — exact up to [`COUNT_LIMIT`] times `cap`, past
/// which the rest is not read. Memory stays bounded whatever the client sends; `None` when the
/// body could not be read.
pub(super) async fn read_capped(body: Incoming, cap: usize) -> Option<(Bytes, u64)> {
    let mut body = body;
    let mut kept = Vec::new();
    let mut len = 0u64;
    let stop = (cap as u64).saturating_mul(COUNT_LIMIT);
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.ok()?.into_data() else {
            continue;
        };
        len += data.len() as u64;
        let room = (cap + 1).saturating_sub(kept.len());
        kept.extend_from_slice(&data[..data.len().min(room)]);
        if len > stop {
            break;
        }
    }
    Some((Bytes::from(kept), len))
}

/// How far past the cap a body is still counted (to report its size as Lambda does).
const COUNT_LIMIT: u64 = 16;

/// A body whose frames (data, then perhaps trailers) arrive on a channel; it ends when the
/// sender is dropped. Memory stays bounded by the channel's capacity.
pub(super) struct ChannelBody(pub(super) mpsc::Receiver<Frame<Bytes>>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|f| f.map(Ok))
    }
}
