//! The baseline: the least an HTTP/1 server on the same stack (tokio multi-thread, hyper 1,
//! TCP_NODELAY, keep-alive) can do per webhook: read the whole body, answer 200 with a
//! small JSON body. No verification, no parsing, no storage. It logs the same JSON lines
//! the daemon does so the driver starts both the same way.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

const ANSWER: &[u8] = br#"{"status":"accepted","highlights":1}"#;

async fn answer(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let status = match req.into_body().collect().await {
        Ok(body) => {
            std::hint::black_box(body.to_bytes());
            hyper::StatusCode::OK
        }
        Err(_) => hyper::StatusCode::BAD_REQUEST,
    };
    let mut resp = Response::new(Full::new(Bytes::from_static(ANSWER)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(resp)
}

/// Serves until killed. Same runtime shape as the daemon: tokio's default multi-thread
/// runtime (one worker per core).
pub fn serve(listen: SocketAddr) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        eprintln!(
            "{}",
            serde_json::json!({"message": "listening", "listener": "webhook", "addr": addr.to_string()})
        );
        eprintln!("{}", serde_json::json!({"message": "ready"}));
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), hyper::service::service_fn(answer))
                    .await;
            });
        }
    })
}
