//! A minimal hyper HTTP/1 server loop shared by the webhook and admin listeners: a
//! connection limit, a header read timeout, keep-alive, and graceful shutdown (in-flight
//! requests finish, idle connections close).
//!
//! What the limits guarantee: a connection holds one of `max_connections` permits, and it
//! cannot hold it silently for longer than `header_timeout`. hyper starts the head deadline
//! when it begins reading a request head, including the next one on a kept-alive
//! connection, so a client that never sends a byte, dribbles its head (slowloris) or sits
//! idle after a response is cut at `header_timeout`. Connections beyond the limit wait in
//! the kernel backlog, first come first served, so a good request queued behind N silent
//! ones is answered within about `ceil((N + 1) / max_connections) * header_timeout`.
//! A body, once its head arrived, has the handler's own deadline (30 s for webhooks).
//! `tests/it/security.rs` measures all of this against the real binary.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The response type every handler returns.
pub type Resp = Response<Full<Bytes>>;

/// Limits applied to every connection.
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    /// How long a client may take to send a request head.
    pub header_timeout: Duration,
    /// Connections served at once; further ones wait in the kernel backlog.
    pub max_connections: usize,
}

/// Accepts connections until `shutdown`, serving each with `handler`. Returns once the
/// listener is closed; connection tasks are tracked by `tracker`.
pub async fn serve<H, F>(
    listener: TcpListener,
    name: &'static str,
    opts: ServeOptions,
    handler: Arc<H>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Send + Sync + 'static,
    F: Future<Output = Resp> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(opts.max_connections.max(1)));
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = shutdown.cancelled() => return,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: wait a little rather than spin.
                    tracing::warn!(listener = name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let _permit = permit;
            let svc = hyper::service::service_fn(move |req| {
                let fut = handler(req, peer);
                async move { Ok::<_, Infallible>(fut.await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(opts.header_timeout)
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), svc);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(listener = name, %peer, error = %e, "connection ended with an error");
                    }
                }
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
}

/// A response with a body and content type.
pub fn respond(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

/// A JSON `{"error": "..."}` (or other) body.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Resp {
    let body = serde_json::to_vec(value).unwrap_or_default();
    respond(status, "application/json", body)
}

/// A JSON error body `{"error": message}`.
pub fn error(status: StatusCode, message: &str) -> Resp {
    json(status, &serde_json::json!({ "error": message }))
}

/// The checks every state-changing admin route makes: `POST`, from a loopback address (even
/// with `allow_remote`), with a JSON body (a web page cannot send that cross-origin without
/// a preflight). `None` when the request passes; else the response to send.
pub fn guard_local_json_post<B>(req: &Request<B>, peer: SocketAddr, what: &str) -> Option<Resp> {
    if req.method() != hyper::Method::POST {
        return Some(error(StatusCode::METHOD_NOT_ALLOWED, "use POST"));
    }
    if !peer.ip().to_canonical().is_loopback() {
        return Some(error(
            StatusCode::FORBIDDEN,
            &format!("{what} are accepted only from loopback addresses"),
        ));
    }
    let is_json = req
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Some(error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the body as application/json",
        ));
    }
    None
}
