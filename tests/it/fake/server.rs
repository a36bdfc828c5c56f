//! The HTTP side every fake shares: a listener on `127.0.0.1:0`, served on a thread of its
//! own with a current-thread tokio runtime (so a fake keeps answering while a test blocks),
//! hyper HTTP/1 with keep-alive, and a stop on drop that closes the listener and every
//! connection.

use std::error::Error;
use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};

/// A listener bound to `127.0.0.1:0`, ready for [`FakeServer::serve`]; its address is known
/// before the fake's state is built (some fakes put their own URL in what they answer).
pub fn bind(name: &str) -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind {name}: {e}"));
    listener
        .set_nonblocking(true)
        .expect("non-blocking listener");
    let addr = listener.local_addr().expect("listener address");
    (listener, addr)
}

/// A running fake server. Dropping it stops the server and joins its thread.
pub struct FakeServer {
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeServer {
    /// Serves `listener` with `handler` until dropped. `admit` is asked before each new
    /// connection is served; `false` closes it before a byte is read (a service that is down).
    pub fn serve<H, Fut, E>(
        name: &str,
        listener: TcpListener,
        admit: impl Fn() -> bool + Send + 'static,
        handler: H,
    ) -> FakeServer
    where
        H: Fn(Request<Incoming>) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = Result<Response<Full<Bytes>>, E>> + Send + 'static,
        E: Into<Box<dyn Error + Send + Sync>>,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("fake server runtime");
                rt.block_on(accept_loop(listener, admit, handler, rx));
                // Dropping `rt` here drops every connection task.
            })
            .expect("spawn fake server thread");
        FakeServer {
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn accept_loop<H, Fut, E>(
    listener: TcpListener,
    admit: impl Fn() -> bool,
    handler: H,
    mut shutdown: tokio::sync::oneshot::Receiver<()>,
) where
    H: Fn(Request<Incoming>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<Response<Full<Bytes>>, E>> + Send + 'static,
    E: Into<Box<dyn Error + Send + Sync>>,
{
    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
    loop {
        let stream = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        if !admit() {
            // Dropping the stream closes it before a byte is read.
            continue;
        }
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service_fn(handler))
                .await;
        });
    }
}
