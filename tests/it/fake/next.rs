//! [`FakeNext`]: an in-process fake of the NEXT AI receiver on `127.0.0.1:0`, for the
//! `next` sink's scenario tests.
//!
//! It runs on its own thread with its own tokio runtime, so synchronous `#[test]` functions
//! start it with [`FakeNext::start`] and it stops when dropped. Point a `[sinks.NAME]` of
//! `type = "next"` at [`FakeNext::endpoint`] with teamspace [`TEAMSPACE`] and a token file
//! holding [`TOKEN`].
//!
//! It behaves like an idempotent API: `POST /v1/teamspaces/{TEAMSPACE}/highlights` with a
//! Highlight body and `Idempotency-Key: {id}:{revision}` *creates* that key once; a repeated
//! key answers [`FakeNext::set_duplicate_status`] (200 by default, or 409) and creates
//! nothing. `.../highlights:batch` with `{"highlights":[...]}` creates each item by its own
//! `{id}:{revision}`.
//!
//! A request goes through, in order:
//!
//! 1. **down** ([`FakeNext::set_down`]): the connection is closed without an answer. New
//!    connections are accepted and closed at once (counted by
//!    [`FakeNext::refused_connections`]); a request on a kept-alive connection is recorded
//!    with status 0 and its connection closed.
//! 2. Recorded ([`FakeNext::requests`]): method, path, every header, body, arrival time.
//! 3. **hang** ([`FakeNext::hang`]): never answered; the connection is closed when the hang
//!    ends ([`FakeNext::stop_hanging`] or its deadline). With `create_first`, the request is
//!    processed (its key created) before hanging: a lost answer, the case idempotency keys
//!    exist for.
//! 4. **scripted answers** ([`FakeNext::answer_next`]): the next N requests get a status
//!    (with `Retry-After` when given) and create nothing.
//! 5. Checks: `POST` only (405), the path (404), `Authorization: Bearer` [`TOKEN`] (401),
//!    a JSON Highlight body whose `{id}:{revision}` is the `Idempotency-Key` (400 otherwise).
//! 6. Create, or answer the duplicate status. Answers come after [`FakeNext::set_latency`].

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::server::{self, FakeServer};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::{Value, json};

/// The bearer token the fake accepts.
pub const TOKEN: &str = "next-test-token";
/// The teamspace in the fake's path.
pub const TEAMSPACE: &str = "ts_test";

/// A running fake NEXT. Stops (closing its listener and every connection) when dropped.
pub struct FakeNext {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    _server: FakeServer,
}

/// One request as the fake saw it.
#[derive(Debug, Clone)]
pub struct NextRequest {
    pub method: String,
    pub path: String,
    /// Every header, names lowercase, values lossy UTF-8.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The status answered; 0 when the connection was closed instead (down, hang).
    pub status: u16,
    /// Whether this request created its key (or, for a batch, any item).
    pub created: bool,
    pub at: Instant,
}

impl NextRequest {
    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The `Idempotency-Key` header.
    pub fn key(&self) -> Option<&str> {
        self.header("idempotency-key")
    }
}

/// One creation: the first accepted request for a key.
#[derive(Debug, Clone)]
pub struct Created {
    /// `{id}:{revision}`.
    pub key: String,
    /// The Highlight as received.
    pub highlight: Value,
    pub at: Instant,
}

struct Scripted {
    status: u16,
    retry_after: Option<String>,
    remaining: usize,
}

struct Hang {
    create_first: bool,
    until: Option<Instant>,
}

#[derive(Default)]
struct State {
    requests: Vec<NextRequest>,
    created: Vec<Created>,
    keys: HashSet<String>,
    scripted: VecDeque<Scripted>,
    down: bool,
    refused: usize,
    hang: Option<Hang>,
    latency: Duration,
    duplicate_status: Option<u16>,
}

impl State {
    fn hanging(&self) -> Option<&Hang> {
        self.hang
            .as_ref()
            .filter(|h| h.until.is_none_or(|t| Instant::now() < t))
    }
}

impl FakeNext {
    /// Binds `127.0.0.1:0` and serves on a new thread with its own tokio runtime.
    pub fn start() -> FakeNext {
        let (listener, addr) = server::bind("fake next");
        let state = Arc::new(Mutex::new(State::default()));
        let admit = {
            let state = Arc::clone(&state);
            move || {
                let mut st = state.lock().unwrap_or_else(PoisonError::into_inner);
                st.refused += usize::from(st.down);
                !st.down
            }
        };
        let handler = {
            let state = Arc::clone(&state);
            move |req| handle(req, Arc::clone(&state))
        };
        FakeNext {
            addr,
            state,
            _server: FakeServer::serve("fake-next", listener, admit, handler),
        }
    }

    /// `http://127.0.0.1:PORT/v1`: the sink's `endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The path single Highlights are posted to.
    pub fn highlights_path() -> String {
        format!("/v1/teamspaces/{TEAMSPACE}/highlights")
    }

    /// While on, connections are closed without an answer.
    pub fn set_down(&self, down: bool) {
        self.lock().down = down;
    }

    /// Connections closed at once because the fake was down.
    pub fn refused_connections(&self) -> usize {
        self.lock().refused
    }

    /// The next `n` requests (that get past "down" and "hang") are answered `status`, with
    /// `Retry-After: {retry_after}` when given, and create nothing. Queued after any
    /// earlier script.
    pub fn answer_next(&self, n: usize, status: u16, retry_after: Option<&str>) {
        self.lock().scripted.push_back(Scripted {
            status,
            retry_after: retry_after.map(str::to_owned),
            remaining: n,
        });
    }

    /// Requests are never answered until [`FakeNext::stop_hanging`] or `for_at_most`
    /// passed; then their connections are closed. With `create_first` each is processed
    /// (its key created) before it hangs.
    pub fn hang(&self, create_first: bool, for_at_most: Option<Duration>) {
        self.lock().hang = Some(Hang {
            create_first,
            until: for_at_most.map(|d| Instant::now() + d),
        });
    }

    /// Ends a hang: waiting requests get their connection closed, new ones are served.
    pub fn stop_hanging(&self) {
        self.lock().hang = None;
    }

    /// Answers (not creations) are sent after `latency`.
    pub fn set_latency(&self, latency: Duration) {
        self.lock().latency = latency;
    }

    /// The answer to a key already created: 200 (default) or e.g. 409.
    pub fn set_duplicate_status(&self, status: u16) {
        self.lock().duplicate_status = Some(status);
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<NextRequest> {
        self.lock().requests.clone()
    }

    /// Every creation, in order.
    pub fn created(&self) -> Vec<Created> {
        self.lock().created.clone()
    }

    /// How many keys were created.
    pub fn created_count(&self) -> usize {
        self.lock().created.len()
    }

    /// The created keys, in creation order.
    pub fn created_keys(&self) -> Vec<String> {
        self.lock().created.iter().map(|c| c.key.clone()).collect()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Returned by the service to make hyper close the connection without answering.
#[derive(Debug)]
struct Closed;

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection closed by the fake")
    }
}

impl std::error::Error for Closed {}

enum Outcome {
    Answer(u16, Vec<(&'static str, String)>, Value, Duration),
    Close,
    Hang,
}

async fn handle(
    req: Request<Incoming>,
    state: Arc<Mutex<State>>,
) -> Result<Response<Full<Bytes>>, Closed> {
    let at = Instant::now();
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let headers = req
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes().to_vec(),
        Err(_) => return Err(Closed),
    };
    let mut request = NextRequest {
        method,
        path,
        headers,
        body,
        status: 0,
        created: false,
        at,
    };
    let outcome = {
        let mut st = state.lock().unwrap_or_else(PoisonError::into_inner);
        let outcome = decide(&mut st, &mut request);
        st.requests.push(request);
        outcome
    };
    match outcome {
        Outcome::Close => Err(Closed),
        Outcome::Hang => loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if state
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .hanging()
                .is_none()
            {
                return Err(Closed);
            }
        },
        Outcome::Answer(status, extra, body, latency) => {
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            let mut builder = Response::builder()
                .status(status)
                .header("content-type", "application/json");
            for (name, value) in extra {
                builder = builder.header(name, value);
            }
            Ok(builder
                .body(Full::new(Bytes::from(
                    serde_json::to_vec(&body).unwrap_or_default(),
                )))
                .expect("valid response"))
        }
    }
}

/// Everything but the waiting: what to answer, and the creations it makes.
fn decide(st: &mut State, req: &mut NextRequest) -> Outcome {
    if st.down {
        return Outcome::Close;
    }
    if let Some(hang) = st.hanging() {
        if hang.create_first {
            let _ = process(st, req);
        }
        req.status = 0;
        return Outcome::Hang;
    }
    if let Some(script) = st.scripted.front_mut() {
        script.remaining = script.remaining.saturating_sub(1);
        let status = script.status;
        let extra = script
            .retry_after
            .clone()
            .map(|v| vec![("retry-after", v)])
            .unwrap_or_default();
        if script.remaining == 0 {
            st.scripted.pop_front();
        }
        req.status = status;
        let body = json!({"error": format!("scripted {status}")});
        return Outcome::Answer(status, extra, body, st.latency);
    }
    let (status, body) = process(st, req);
    req.status = status;
    Outcome::Answer(status, Vec::new(), body, st.latency)
}

/// Validates and creates; returns the answer.
fn process(st: &mut State, req: &mut NextRequest) -> (u16, Value) {
    let single = FakeNext::highlights_path();
    let batch = format!("{single}:batch");
    if req.path != single && req.path != batch {
        return (404, json!({"error": "not found"}));
    }
    if req.method != "POST" {
        return (405, json!({"error": "use POST"}));
    }
    if req.header("authorization") != Some(&format!("Bearer {TOKEN}")) {
        return (401, json!({"error": "bad token"}));
    }
    let Ok(body) = serde_json::from_slice::<Value>(&req.body) else {
        return (400, json!({"error": "body is not json"}));
    };
    let items = if req.path == batch {
        match body["highlights"].as_array() {
            Some(a) => a.clone(),
            None => return (400, json!({"error": "no highlights array"})),
        }
    } else {
        let Some(key) = req.key() else {
            return (400, json!({"error": "no idempotency-key"}));
        };
        if highlight_key(&body).as_deref() != Some(key) {
            return (
                400,
                json!({"error": "idempotency-key does not match the body"}),
            );
        }
        vec![body]
    };
    let mut keys = Vec::with_capacity(items.len());
    for item in &items {
        match highlight_key(item) {
            Some(k) => keys.push(k),
            None => return (400, json!({"error": "not a highlight"})),
        }
    }
    let mut created = 0;
    for (key, item) in keys.into_iter().zip(items) {
        if st.keys.insert(key.clone()) {
            created += 1;
            st.created.push(Created {
                key,
                highlight: item,
                at: Instant::now(),
            });
        }
    }
    req.created = created > 0;
    if created == 0 {
        let status = st.duplicate_status.unwrap_or(200);
        return (status, json!({"status": "duplicate"}));
    }
    (201, json!({"status": "created", "created": created}))
}

fn highlight_key(h: &Value) -> Option<String> {
    if h["schema"] != "frontsync.highlight.v1" {
        return None;
    }
    Some(format!("{}:{}", h["id"].as_str()?, h["revision"].as_u64()?))
}
