//! [`FakeFront`]: an in-process fake of Front's Core API on `127.0.0.1:0`, for polling tests.
//!
//! It runs on its own thread with its own tokio runtime, so synchronous `#[test]` functions
//! start it with [`FakeFront::start`] and it stops when dropped. Point a connection's
//! `api_base` at [`FakeFront::base_url`] and its `token` at [`DEFAULT_TOKEN`].
//!
//! Behaviour, in the order a request goes through it:
//!
//! 1. Every request is recorded ([`FakeFront::requests`]) before it is answered, whatever
//!    the answer (401, 429, injected faults; a reset connection is recorded with status 0).
//! 2. `Authorization: Bearer <token>` is checked: anything else gets Front's 401 body.
//!    A 401 does not count against the rate limit.
//! 3. The rate limit (a sliding 60 s window, [`FakeFront::set_rate_limit`]): over it, 429
//!    with `retry-after`. 429s do not count against the window either.
//! 4. The first queued [`Fault`] whose `path_prefix` matches is consumed (requests stopped
//!    at steps 2 and 3 consume none).
//! 5. The route answers. Only `GET` is served (405 otherwise); unknown paths get 404.
//!
//! Every response is `application/json` and carries `x-ratelimit-limit`,
//! `x-ratelimit-remaining` and `x-ratelimit-reset` (Unix seconds, 3 decimals). Errors are
//! Front's `{"_error":{"status","title","message"}}`.
//!
//! Lists (`/events`, `/conversations/{id}/messages`) use Front's envelope. `_pagination.next`
//! is an absolute URL on this fake's host that repeats the request's query (without its old
//! `page_token`) plus a new `page_token`, and is `null` on the last page. A page token is
//! self-contained: it holds the filters, the order, the page size and the position (the
//! last returned `(timestamp, id)`), so a walk is stable while events are added, a saved
//! `next` URL can be replayed later, and the other query parameters sent alongside a
//! `page_token` are ignored (as with Front, whose next URLs carry the base call's query).
//!
//! The `_links.self` of stored events, conversations and messages (top level and embedded)
//! is rewritten to this fake's host, as Front's links point at the company's API host.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::server::{self, FakeServer};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::{Map, Value, json};

/// The token accepted until [`FakeFront::set_token`] changes it.
pub const DEFAULT_TOKEN: &str = "test-token";
/// The requests per minute allowed until [`FakeFront::set_rate_limit`]: high enough never
/// to throttle a test that does not ask for it.
pub const DEFAULT_RATE_LIMIT: u32 = 10_000;
/// Largest `limit` of `GET /events` (Front: "max 15"), also its default.
pub const EVENTS_MAX_LIMIT: usize = 15;
/// Largest `limit` of `GET /conversations/{id}/messages` (Front: 100).
pub const MESSAGES_MAX_LIMIT: usize = 100;
/// `limit` of `GET /conversations/{id}/messages` when absent (Front states none).
pub const MESSAGES_DEFAULT_LIMIT: usize = 50;
/// The inbox [`FakeFront::seed_inbound`] uses (the same as `harness::inbound_event`).
pub const SEED_INBOX: &str = "inb_123";

/// The rate-limit window.
const WINDOW: Duration = Duration::from_secs(60);

/// Front's event types (SPEC enum); `q[types]` accepts only these.
const EVENT_TYPES: &[&str] = &[
    "assign",
    "unassign",
    "archive",
    "reopen",
    "trash",
    "restore",
    "reminder",
    "comment",
    "mention",
    "inbound",
    "outbound",
    "out_reply",
    "move",
    "forward",
    "tag",
    "untag",
    "sending_error",
    "message_bounce_error",
    "conversations_merged",
    "link_added",
    "link_removed",
    "custom_field_updated",
    "macro_triggered",
    "topic_identified",
    "ticket_status_update",
    "call_started",
    "call_abandoned",
    "call_queued",
    "call_on_hold",
    "call_parked",
    "call_resumed",
    "call_connected",
    "call_missed",
    "call_hangup",
    "call_transferred",
    "call_transcript_added",
    "call_voicemail_transcript_added",
];

/// A running fake Front. Stops (closing its listener and every connection) when dropped.
pub struct FakeFront {
    addr: SocketAddr,
    base: String,
    state: Arc<Mutex<State>>,
    _server: FakeServer,
}

/// One request as the fake saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path, as sent (e.g. `/events`, `/conversations/cnv_1/messages`).
    pub path: String,
    /// The raw query string, still percent-encoded; empty when there is none.
    pub query: String,
    /// Whether an `Authorization` header was sent (right or wrong).
    pub has_authorization: bool,
    /// The status answered; 0 when the connection was reset by a fault.
    pub status: u16,
    /// When the request arrived.
    pub at: Instant,
}

impl Recorded {
    /// The decoded values of query parameter `key` (exact decoded key, e.g. `q[types]`).
    pub fn params(&self, key: &str) -> Vec<String> {
        parse_query(&self.query)
            .into_iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v)
            .collect()
    }

    /// The first decoded value of query parameter `key`.
    pub fn param(&self, key: &str) -> Option<String> {
        self.params(key).into_iter().next()
    }
}

/// A one-shot misbehaviour. Faults wait in a queue; each request that passed the token and
/// rate-limit checks consumes the first fault whose `path_prefix` (compared with the path,
/// no query) matches, `None` matching every path.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer `code` with a Front-style `_error` body, and `retry-after` (seconds, written
    /// with up to 3 decimals) when given. E.g. 429, 500, 502, 503, 401, 403.
    Status {
        code: u16,
        retry_after: Option<f64>,
        path_prefix: Option<String>,
    },
    /// Answer normally, but only after `delay` (to trip client timeouts). The answer is
    /// computed and recorded on arrival.
    Slow {
        delay: Duration,
        path_prefix: Option<String>,
    },
    /// Answer 200 with the normal body cut in half (invalid JSON).
    TruncatedJson { path_prefix: Option<String> },
    /// Close the connection without answering (recorded with status 0).
    ResetConnection { path_prefix: Option<String> },
    /// The next list page (`/events` or `/conversations/{id}/messages`) answers with a
    /// `_pagination.next` that is this very page's URL. Only list requests consume it.
    RepeatNext { path_prefix: Option<String> },
}

impl Fault {
    fn path_prefix(&self) -> Option<&str> {
        match self {
            Fault::Status { path_prefix, .. }
            | Fault::Slow { path_prefix, .. }
            | Fault::TruncatedJson { path_prefix }
            | Fault::ResetConnection { path_prefix }
            | Fault::RepeatNext { path_prefix } => path_prefix.as_deref(),
        }
    }

    fn matches(&self, path: &str) -> bool {
        let prefix_ok = self.path_prefix().is_none_or(|p| path.starts_with(p));
        let list_ok = !matches!(self, Fault::RepeatNext { .. }) || is_list_path(path);
        prefix_ok && list_ok
    }
}

impl FakeFront {
    /// Binds `127.0.0.1:0` and serves on a new thread with its own tokio runtime.
    pub fn start() -> FakeFront {
        let (listener, addr) = server::bind("fake front");
        let base = format!("http://{addr}");
        let state = Arc::new(Mutex::new(State::new(base.clone())));
        let handler = {
            let state = Arc::clone(&state);
            move |req| handle(req, Arc::clone(&state))
        };
        let server = FakeServer::serve("fake-front", listener, || true, handler);
        FakeFront {
            addr,
            base,
            state,
            _server: server,
        }
    }

    /// `http://127.0.0.1:PORT`, no trailing slash: the connection's `api_base`.
    pub fn base_url(&self) -> String {
        self.base.clone()
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The token every request must carry as `Authorization: Bearer <token>`
    /// (default [`DEFAULT_TOKEN`]).
    pub fn set_token(&self, token: &str) {
        self.lock().token = token.to_owned();
    }

    /// Adds (or replaces) an inbox listed by `GET /inboxes`.
    pub fn add_inbox(&self, id: &str, name: &str, is_private: bool) {
        let mut st = self.lock();
        let base = st.base.clone();
        let inbox = json!({
            "_links": {
                "self": format!("{base}/inboxes/{id}"),
                "related": {
                    "teammates": format!("{base}/inboxes/{id}/teammates"),
                    "conversations": format!("{base}/inboxes/{id}/conversations"),
                    "channels": format!("{base}/inboxes/{id}/channels"),
                    "owner": format!("{base}/teams/tim_fake")
                }
            },
            "id": id,
            "name": name,
            "is_private": is_private,
            "is_public": !is_private,
            "custom_fields": {}
        });
        match st.inboxes.iter_mut().find(|i| i["id"] == id) {
            Some(existing) => *existing = inbox,
            None => st.inboxes.push(inbox),
        }
    }

    /// Adds (or replaces) a full event: `id` and `emitted_at` are required (panics
    /// otherwise). Its embedded `conversation` is stored as that conversation, and a
    /// `target` of `_meta.type` `message` as a message of it (last write wins, so the latest
    /// event gives the conversation's current state).
    pub fn add_event(&self, event: Value) {
        self.lock().add_event(event);
    }

    /// Adds (or replaces) a conversation (needs `id`), served by `GET /conversations/{id}`.
    pub fn add_conversation(&self, conversation: Value) {
        self.lock().add_conversation(conversation);
    }

    /// Adds (or replaces) a message (needs `id`; `created_at` orders the list) of
    /// `conversation_id`, served by `/messages/{id}` and `/conversations/{cnv}/messages`.
    pub fn add_message(&self, conversation_id: &str, message: Value) {
        self.lock().add_message(conversation_id, message);
    }

    /// Makes `GET /conversations/{from_id}` (and `.../messages`) answer 301 with
    /// `Location: {base}/conversations/{into_id}` (the query is kept), as Front does for a
    /// conversation merged into another.
    pub fn merge(&self, from_id: &str, into_id: &str) {
        self.lock()
            .merged
            .insert(from_id.to_owned(), into_id.to_owned());
    }

    /// Adds `n` conversations `cnv_seed_{i}` (i from 0), each with one full `inbound` event
    /// `evt_seed_{i}` (message `msg_seed_{i}`, subject `Seed subject {i}`, text
    /// `Seed message {i}`) through inbox [`SEED_INBOX`] (added as "Support" if absent),
    /// emitted at `first_emitted_at + i * step_secs` (rounded to the millisecond). Returns
    /// the event ids in order.
    pub fn seed_inbound(&self, n: usize, first_emitted_at: f64, step_secs: f64) -> Vec<String> {
        if !self.lock().inboxes.iter().any(|i| i["id"] == SEED_INBOX) {
            self.add_inbox(SEED_INBOX, "Support", false);
        }
        (0..n)
            .map(|i| {
                let id = format!("evt_seed_{i}");
                let emitted_at = round_ms(first_emitted_at + i as f64 * step_secs);
                let mut event = inbound_event_at(
                    &id,
                    &format!("cnv_seed_{i}"),
                    emitted_at,
                    &format!("Seed subject {i}"),
                    &format!("Seed message {i}"),
                );
                event["target"]["data"]["id"] = json!(format!("msg_seed_{i}"));
                self.add_event(event);
                id
            })
            .collect()
    }

    /// Every request so far (since the last [`FakeFront::reset_requests`]), oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone()
    }

    /// How many recorded requests have a path starting with `path_prefix` (so `/events`
    /// counts `/events/{id}` too; filter [`FakeFront::requests`] for finer questions).
    pub fn count(&self, path_prefix: &str) -> usize {
        self.lock()
            .requests
            .iter()
            .filter(|r| r.path.starts_with(path_prefix))
            .count()
    }

    /// Forgets the recorded requests (not the rate-limit window).
    pub fn reset_requests(&self) {
        self.lock().requests.clear();
    }

    /// Allows `per_minute` requests in any sliding 60 s window (0 refuses everything) and
    /// starts a fresh, empty window. Default [`DEFAULT_RATE_LIMIT`].
    pub fn set_rate_limit(&self, per_minute: u32) {
        let mut st = self.lock();
        st.rate_limit = per_minute;
        st.window.clear();
    }

    /// Queues a one-shot fault (see [`Fault`]).
    pub fn inject(&self, fault: Fault) {
        self.lock().faults.push_back(fault);
    }

    /// Faults still queued.
    pub fn pending_faults(&self) -> usize {
        self.lock().faults.len()
    }

    /// When on, `GET /events` returns event previews: `source`/`target` keep `_meta` and
    /// reduce `data` (each item of an array) to `{_links.self, id}`, `conversation` becomes
    /// `{_links.self, id}`. `GET /events/{id}` stays full. Default off.
    pub fn set_previews(&self, on: bool) {
        self.lock().previews = on;
    }

    /// Whether `q[after]` keeps events emitted exactly at that time (`>=`, the default: the
    /// harsher choice, since Front does not document it) or not (`>`). Timestamps compare at
    /// millisecond precision. `q[before]` is always exclusive (`<`). A page token keeps the
    /// setting of the walk's first page.
    pub fn set_after_inclusive(&self, inclusive: bool) {
        self.lock().after_inclusive = inclusive;
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A full `inbound` event like `harness::inbound_event` (inbox [`SEED_INBOX`]), emitted at
/// `emitted_at`, which also becomes the message's `created_at` and the conversation's
/// `created_at`/`updated_at`.
pub fn inbound_event_at(
    event_id: &str,
    conversation_id: &str,
    emitted_at: f64,
    subject: &str,
    text: &str,
) -> Value {
    let mut event = crate::harness::inbound_event(event_id, conversation_id, subject, text);
    event["emitted_at"] = json!(emitted_at);
    event["target"]["data"]["created_at"] = json!(emitted_at);
    event["conversation"]["created_at"] = json!(emitted_at);
    event["conversation"]["updated_at"] = json!(emitted_at);
    event
}

// ---------------------------------------------------------------------------------------
// Server

/// Returned by the service to make hyper close the connection without answering.
#[derive(Debug)]
struct ResetByFault;

impl std::fmt::Display for ResetByFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection reset by an injected fault")
    }
}

impl std::error::Error for ResetByFault {}

async fn handle(
    req: Request<Incoming>,
    state: Arc<Mutex<State>>,
) -> Result<Response<Full<Bytes>>, ResetByFault> {
    let at = Instant::now();
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let authorization = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let outcome = state.lock().unwrap_or_else(PoisonError::into_inner).answer(
        &method,
        &path,
        &query,
        authorization.as_deref(),
        at,
    );
    match outcome {
        Outcome::Reset => Err(ResetByFault),
        Outcome::Reply(reply, delay) => {
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
            }
            Ok(reply.into_response())
        }
    }
}

enum Outcome {
    Reply(Reply, Option<Duration>),
    Reset,
}

struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn json(status: u16, value: &Value) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: serde_json::to_vec(value).expect("serialize"),
        }
    }

    fn error(status: u16, message: &str) -> Reply {
        Reply::json(
            status,
            &json!({"_error": {"status": status, "title": title(status), "message": message}}),
        )
    }

    fn header(mut self, name: &'static str, value: String) -> Reply {
        self.headers.push((name, value));
        self
    }

    fn into_response(self) -> Response<Full<Bytes>> {
        let mut builder = Response::builder()
            .status(self.status)
            .header("content-type", "application/json");
        for (name, value) in self.headers {
            builder = builder.header(name, value);
        }
        builder
            .body(Full::new(Bytes::from(self.body)))
            .expect("valid response")
    }
}

fn title(status: u16) -> &'static str {
    match status {
        400 => "Bad request",
        401 => "Unauthenticated",
        403 => "Forbidden",
        404 => "Not found",
        405 => "Method not allowed",
        409 => "Conflict",
        429 => "Too many requests",
        500 => "Internal server error",
        502 => "Bad gateway",
        503 => "Service unavailable",
        504 => "Gateway timeout",
        _ => "Error",
    }
}

// ---------------------------------------------------------------------------------------
// State and routing

struct State {
    base: String,
    token: String,
    inboxes: Vec<Value>,
    events: HashMap<String, Value>,
    conversations: HashMap<String, Value>,
    /// Message id -> (conversation id, message).
    messages: HashMap<String, (String, Value)>,
    /// Merged conversation id -> the conversation it was merged into.
    merged: HashMap<String, String>,
    requests: Vec<Recorded>,
    rate_limit: u32,
    /// Arrival times of the requests counted in the current window, oldest first.
    window: VecDeque<Instant>,
    faults: VecDeque<Fault>,
    previews: bool,
    after_inclusive: bool,
}

/// `(milliseconds, id)`: the order of events and messages.
type Key = (i64, String);

impl State {
    fn new(base: String) -> State {
        State {
            base,
            token: DEFAULT_TOKEN.to_owned(),
            inboxes: Vec::new(),
            events: HashMap::new(),
            conversations: HashMap::new(),
            messages: HashMap::new(),
            merged: HashMap::new(),
            requests: Vec::new(),
            rate_limit: DEFAULT_RATE_LIMIT,
            window: VecDeque::new(),
            faults: VecDeque::new(),
            previews: false,
            after_inclusive: true,
        }
    }

    fn add_event(&mut self, mut event: Value) {
        let id = event["id"]
            .as_str()
            .expect("FakeFront::add_event: the event needs a string `id`")
            .to_owned();
        assert!(
            event["emitted_at"].is_number(),
            "FakeFront::add_event: event {id} needs a numeric `emitted_at`"
        );
        set_self_link(&mut event, format!("{}/events/{id}", self.base));
        let conversation_id = event["conversation"]["id"].as_str().map(str::to_owned);
        if let Some(cnv) = &conversation_id {
            self.link_conversation(&mut event["conversation"], cnv);
            self.add_conversation(event["conversation"].clone());
        }
        if event["target"]["_meta"]["type"] == "message"
            && let Some(msg_id) = event["target"]["data"]["id"].as_str().map(str::to_owned)
        {
            self.link_message(
                &mut event["target"]["data"],
                &msg_id,
                conversation_id.as_deref(),
            );
            if let Some(cnv) = &conversation_id {
                self.add_message(cnv, event["target"]["data"].clone());
            }
        }
        self.events.insert(id, event);
    }

    fn add_conversation(&mut self, mut conversation: Value) {
        let id = conversation["id"]
            .as_str()
            .expect("FakeFront::add_conversation: the conversation needs a string `id`")
            .to_owned();
        self.link_conversation(&mut conversation, &id);
        self.conversations.insert(id, conversation);
    }

    fn add_message(&mut self, conversation_id: &str, mut message: Value) {
        let id = message["id"]
            .as_str()
            .expect("FakeFront::add_message: the message needs a string `id`")
            .to_owned();
        self.link_message(&mut message, &id, Some(conversation_id));
        self.messages
            .insert(id, (conversation_id.to_owned(), message));
    }

    fn link_conversation(&self, conversation: &mut Value, id: &str) {
        set_self_link(conversation, format!("{}/conversations/{id}", self.base));
        set_related_link(
            conversation,
            "messages",
            format!("{}/conversations/{id}/messages", self.base),
        );
    }

    fn link_message(&self, message: &mut Value, id: &str, conversation_id: Option<&str>) {
        set_self_link(message, format!("{}/messages/{id}", self.base));
        if let Some(cnv) = conversation_id {
            set_related_link(
                message,
                "conversation",
                format!("{}/conversations/{cnv}", self.base),
            );
        }
    }

    /// Records the request and decides its answer (steps 1-5 of the module doc).
    fn answer(
        &mut self,
        method: &str,
        path: &str,
        query: &str,
        authorization: Option<&str>,
        at: Instant,
    ) -> Outcome {
        let (outcome, status) = self.decide(method, path, query, authorization, at);
        self.requests.push(Recorded {
            method: method.to_owned(),
            path: path.to_owned(),
            query: query.to_owned(),
            has_authorization: authorization.is_some(),
            status,
            at,
        });
        outcome
    }

    fn decide(
        &mut self,
        method: &str,
        path: &str,
        query: &str,
        authorization: Option<&str>,
        at: Instant,
    ) -> (Outcome, u16) {
        let now = Instant::now();
        while self
            .window
            .front()
            .is_some_and(|&t| now.duration_since(t) >= WINDOW)
        {
            self.window.pop_front();
        }
        if authorization != Some(format!("Bearer {}", self.token).as_str()) {
            let reply = self.with_rate_headers(Reply::error(401, "Invalid token"), now);
            return (Outcome::Reply(reply, None), 401);
        }
        if self.window.len() >= self.rate_limit as usize {
            let wait = self.window_frees_in(now).max(Duration::from_millis(1));
            let reply = Reply::error(
                429,
                &format!(
                    "Rate limit exceeded. Please retry in {} milliseconds.",
                    wait.as_millis()
                ),
            )
            .header("retry-after", format!("{:.3}", wait.as_secs_f64()));
            let reply = self.with_rate_headers(reply, now);
            return (Outcome::Reply(reply, None), 429);
        }
        self.window.push_back(at);

        let fault = self
            .faults
            .iter()
            .position(|f| f.matches(path))
            .and_then(|i| self.faults.remove(i));
        let (reply, delay) = match fault {
            Some(Fault::ResetConnection { .. }) => return (Outcome::Reset, 0),
            Some(Fault::Status {
                code, retry_after, ..
            }) => {
                let mut reply = Reply::error(code, "Injected fault");
                if let Some(secs) = retry_after {
                    reply = reply.header("retry-after", format_secs(secs));
                }
                (reply, None)
            }
            Some(Fault::Slow { delay, .. }) => {
                (self.route(method, path, query, false), Some(delay))
            }
            Some(Fault::TruncatedJson { .. }) => {
                let mut reply = self.route(method, path, query, false);
                reply.status = 200;
                reply.body.truncate(reply.body.len() / 2);
                (reply, None)
            }
            Some(Fault::RepeatNext { .. }) => (self.route(method, path, query, true), None),
            None => (self.route(method, path, query, false), None),
        };
        let reply = self.with_rate_headers(reply, now);
        let status = reply.status;
        (Outcome::Reply(reply, delay), status)
    }

    /// Time until the oldest request of the window leaves it.
    fn window_frees_in(&self, now: Instant) -> Duration {
        match self.window.front() {
            Some(&oldest) => (oldest + WINDOW).saturating_duration_since(now),
            None => WINDOW,
        }
    }

    fn with_rate_headers(&self, reply: Reply, now: Instant) -> Reply {
        let remaining = (self.rate_limit as usize).saturating_sub(self.window.len());
        let reset = if self.window.is_empty() {
            unix_now()
        } else {
            unix_now() + self.window_frees_in(now).as_secs_f64()
        };
        reply
            .header("x-ratelimit-limit", self.rate_limit.to_string())
            .header("x-ratelimit-remaining", remaining.to_string())
            .header("x-ratelimit-reset", format!("{reset:.3}"))
    }

    fn route(&self, method: &str, path: &str, query: &str, repeat_next: bool) -> Reply {
        let segments: Vec<&str> = path.strip_prefix('/').unwrap_or(path).split('/').collect();
        if segments.iter().any(|s| s.is_empty()) {
            return Reply::error(404, &format!("Unknown path {path}"));
        }
        let known = matches!(
            segments.as_slice(),
            ["me"]
                | ["inboxes"]
                | ["events"]
                | ["events", _]
                | ["conversations", _]
                | ["conversations", _, "messages"]
                | ["messages", _]
        );
        if !known {
            return Reply::error(404, &format!("Unknown path {path}"));
        }
        if method != "GET" {
            return Reply::error(405, &format!("{method} is not supported by this fake"));
        }
        match segments.as_slice() {
            ["me"] => Reply::json(
                200,
                &json!({
                    "_links": {"self": format!("{}/me", self.base)},
                    "id": "cmp_fake",
                    "name": "Fake Co"
                }),
            ),
            ["inboxes"] => Reply::json(
                200,
                &json!({
                    "_links": {"self": format!("{}/inboxes", self.base)},
                    "_results": self.inboxes
                }),
            ),
            ["events"] => self.list_events(path, query, repeat_next),
            ["events", id] => match self.events.get(*id) {
                Some(event) => Reply::json(200, event),
                None => Reply::error(404, &format!("Event {id} not found")),
            },
            ["conversations", id] => {
                if let Some(into) = self.merged.get(*id) {
                    return self.moved(&format!("/conversations/{into}"), query);
                }
                match self.conversations.get(*id) {
                    Some(conversation) => Reply::json(200, conversation),
                    None => Reply::error(404, &format!("Conversation {id} not found")),
                }
            }
            ["conversations", id, "messages"] => {
                if let Some(into) = self.merged.get(*id) {
                    return self.moved(&format!("/conversations/{into}/messages"), query);
                }
                self.list_messages(id, path, query, repeat_next)
            }
            ["messages", id] => match self.messages.get(*id) {
                Some((_, message)) => Reply::json(200, message),
                None => Reply::error(404, &format!("Message {id} not found")),
            },
            _ => unreachable!("checked above"),
        }
    }

    fn moved(&self, to_path: &str, query: &str) -> Reply {
        let mut location = format!("{}{to_path}", self.base);
        if !query.is_empty() {
            location = format!("{location}?{query}");
        }
        Reply::json(301, &json!({"_links": {"self": location}})).header("location", location)
    }

    fn list_events(&self, path: &str, query: &str, repeat_next: bool) -> Reply {
        let cursor = match EventsCursor::from_query(query, self.after_inclusive) {
            Ok(c) => c,
            Err(message) => return Reply::error(400, &message),
        };
        let conversation_inboxes = self.conversation_inboxes();
        let mut matching: Vec<(Key, &Value)> = self
            .events
            .values()
            .map(|e| (event_key(e), e))
            .filter(|(key, e)| cursor.matches(key, e, &conversation_inboxes))
            .collect();
        sort_keyed(&mut matching, cursor.asc);
        let (page, more) = take_page(matching, cursor.pos.as_ref(), cursor.asc, cursor.limit);
        let next_token = page.last().filter(|_| more).map(|(key, _)| {
            let mut next = cursor.clone();
            next.pos = Some(key.clone());
            next.to_token()
        });
        let results: Vec<Value> = page
            .iter()
            .map(|(_, e)| {
                if self.previews {
                    self.preview(e)
                } else {
                    (*e).clone()
                }
            })
            .collect();
        self.envelope(path, query, results, next_token, repeat_next)
    }

    fn list_messages(&self, id: &str, path: &str, query: &str, repeat_next: bool) -> Reply {
        let known =
            self.conversations.contains_key(id) || self.messages.values().any(|(cnv, _)| cnv == id);
        if !known {
            return Reply::error(404, &format!("Conversation {id} not found"));
        }
        let cursor = match MessagesCursor::from_query(query, id) {
            Ok(c) => c,
            Err(message) => return Reply::error(400, &message),
        };
        let mut matching: Vec<(Key, &Value)> = self
            .messages
            .values()
            .filter(|(cnv, _)| cnv == id)
            .map(|(_, m)| ((seconds_to_ms(&m["created_at"]), id_of(m)), m))
            .collect();
        sort_keyed(&mut matching, cursor.asc);
        let (page, more) = take_page(matching, cursor.pos.as_ref(), cursor.asc, cursor.limit);
        let next_token = page.last().filter(|_| more).map(|(key, _)| {
            let mut next = cursor.clone();
            next.pos = Some(key.clone());
            next.to_token()
        });
        let results = page.into_iter().map(|(_, m)| m.clone()).collect();
        self.envelope(path, query, results, next_token, repeat_next)
    }

    fn envelope(
        &self,
        path: &str,
        query: &str,
        results: Vec<Value>,
        next_token: Option<String>,
        repeat_next: bool,
    ) -> Reply {
        let self_url = if query.is_empty() {
            format!("{}{path}", self.base)
        } else {
            format!("{}{path}?{query}", self.base)
        };
        let next = if repeat_next {
            Some(self_url.clone())
        } else {
            next_token.map(|token| {
                let mut parts: Vec<&str> = query
                    .split('&')
                    .filter(|p| {
                        !p.is_empty() && decode(p.split('=').next().unwrap_or("")) != "page_token"
                    })
                    .collect();
                let token_part = format!("page_token={token}");
                parts.push(&token_part);
                format!("{}{path}?{}", self.base, parts.join("&"))
            })
        };
        Reply::json(
            200,
            &json!({
                "_pagination": {"next": next},
                "_links": {"self": self_url},
                "_results": results
            }),
        )
    }

    /// Conversation id -> the inboxes its events went through (source or target inboxes).
    fn conversation_inboxes(&self) -> HashMap<String, HashSet<String>> {
        let mut map: HashMap<String, HashSet<String>> = HashMap::new();
        for event in self.events.values() {
            if let Some(cnv) = event["conversation"]["id"].as_str() {
                map.entry(cnv.to_owned())
                    .or_default()
                    .extend(event_inboxes(event));
            }
        }
        map
    }

    /// An event preview: ids, links and types only.
    fn preview(&self, event: &Value) -> Value {
        let mut preview = Map::new();
        for key in ["_links", "id", "type", "emitted_at"] {
            if let Some(v) = event.get(key) {
                preview.insert(key.to_owned(), v.clone());
            }
        }
        for key in ["source", "target"] {
            let reduced = match event.get(key) {
                Some(Value::Object(side)) => {
                    let meta_type = side
                        .get("_meta")
                        .and_then(|m| m.get("type"))
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    let data = match side.get("data") {
                        Some(Value::Array(items)) => {
                            Value::Array(items.iter().map(|i| self.reduce(i, meta_type)).collect())
                        }
                        Some(obj @ Value::Object(_)) => self.reduce(obj, meta_type),
                        Some(other) => other.clone(),
                        None => Value::Null,
                    };
                    json!({"_meta": side.get("_meta").cloned().unwrap_or(Value::Null), "data": data})
                }
                Some(other) => other.clone(),
                None => continue,
            };
            preview.insert(key.to_owned(), reduced);
        }
        if let Some(cnv) = event["conversation"]["id"].as_str() {
            preview.insert(
                "conversation".to_owned(),
                json!({
                    "_links": {"self": format!("{}/conversations/{cnv}", self.base)},
                    "id": cnv
                }),
            );
        }
        Value::Object(preview)
    }

    /// `{_links.self, id}` of a resource of `_meta.type` `meta_type`.
    fn reduce(&self, resource: &Value, meta_type: &str) -> Value {
        let Some(id) = resource.get("id").cloned() else {
            return json!({});
        };
        let link = resource["_links"]["self"]
            .as_str()
            .map(str::to_owned)
            .or_else(|| {
                let collection = match meta_type {
                    "message" => "messages",
                    "inboxes" => "inboxes",
                    "teammate" => "teammates",
                    "tag" => "tags",
                    "comment" => "comments",
                    "rule" => "rules",
                    "link" => "links",
                    "recipient" => "contacts",
                    _ => return None,
                };
                Some(format!(
                    "{}/{collection}/{}",
                    self.base,
                    id.as_str().unwrap_or("")
                ))
            });
        match link {
            Some(link) => json!({"_links": {"self": link}, "id": id}),
            None => json!({"id": id}),
        }
    }
}

fn is_list_path(path: &str) -> bool {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    matches!(
        segments.as_slice(),
        ["events"] | ["conversations", _, "messages"]
    )
}

// ---------------------------------------------------------------------------------------
// Page cursors (self-contained page tokens)

#[derive(Debug, Clone)]
struct EventsCursor {
    after: Option<i64>,
    after_inclusive: bool,
    before: Option<i64>,
    types: Vec<String>,
    inboxes: Vec<String>,
    asc: bool,
    limit: usize,
    pos: Option<Key>,
}

impl EventsCursor {
    fn from_query(query: &str, after_inclusive: bool) -> Result<EventsCursor, String> {
        let pairs = parse_query(query);
        if let Some((_, token)) = pairs.iter().find(|(k, _)| k == "page_token") {
            let v = decode_token(token, "events")?;
            let strings = |key: &str| -> Vec<String> {
                v[key]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|s| s.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            return Ok(EventsCursor {
                after: v["after"].as_i64(),
                after_inclusive: v["after_inclusive"].as_bool().unwrap_or(true),
                before: v["before"].as_i64(),
                types: strings("types"),
                inboxes: strings("inboxes"),
                asc: v["asc"].as_bool().unwrap_or(false),
                limit: v["limit"].as_u64().unwrap_or(EVENTS_MAX_LIMIT as u64) as usize,
                pos: token_pos(&v),
            });
        }
        let mut cursor = EventsCursor {
            after: None,
            after_inclusive,
            before: None,
            types: Vec::new(),
            inboxes: Vec::new(),
            asc: false,
            limit: EVENTS_MAX_LIMIT,
            pos: None,
        };
        for (key, value) in &pairs {
            match key.as_str() {
                "q[after]" => cursor.after = Some(parse_timestamp(key, value)?),
                "q[before]" => cursor.before = Some(parse_timestamp(key, value)?),
                "q[types]" | "q[types][]" => {
                    if !EVENT_TYPES.contains(&value.as_str()) {
                        return Err(format!("Invalid q[types]: unknown event type {value:?}"));
                    }
                    cursor.types.push(value.clone());
                }
                "q[inboxes]" | "q[inboxes][]" => cursor.inboxes.push(value.clone()),
                "sort_by" => sort_by(value)?,
                "sort_order" => cursor.asc = sort_order(value)?,
                "limit" => cursor.limit = parse_limit(value, EVENTS_MAX_LIMIT)?,
                k if k.starts_with("q[") || k == "q" => {
                    return Err(format!("Invalid query parameter {k:?}"));
                }
                _ => {}
            }
        }
        Ok(cursor)
    }

    fn to_token(&self) -> String {
        encode_token(&json!({
            "kind": "events",
            "after": self.after,
            "after_inclusive": self.after_inclusive,
            "before": self.before,
            "types": self.types,
            "inboxes": self.inboxes,
            "asc": self.asc,
            "limit": self.limit,
            "pos": self.pos.as_ref().map(|(ms, id)| json!([ms, id])),
        }))
    }

    fn matches(
        &self,
        key: &Key,
        event: &Value,
        conversation_inboxes: &HashMap<String, HashSet<String>>,
    ) -> bool {
        let ms = key.0;
        if let Some(after) = self.after
            && (ms < after || (ms == after && !self.after_inclusive))
        {
            return false;
        }
        if self.before.is_some_and(|before| ms >= before) {
            return false;
        }
        if !self.types.is_empty()
            && !self
                .types
                .iter()
                .any(|t| event["type"].as_str() == Some(t.as_str()))
        {
            return false;
        }
        if !self.inboxes.is_empty() {
            let mut inboxes: HashSet<String> = event_inboxes(event).into_iter().collect();
            if let Some(cnv) = event["conversation"]["id"].as_str()
                && let Some(more) = conversation_inboxes.get(cnv)
            {
                inboxes.extend(more.iter().cloned());
            }
            if !self.inboxes.iter().any(|i| inboxes.contains(i)) {
                return false;
            }
        }
        true
    }
}

#[derive(Debug, Clone)]
struct MessagesCursor {
    conversation: String,
    asc: bool,
    limit: usize,
    pos: Option<Key>,
}

impl MessagesCursor {
    fn from_query(query: &str, conversation: &str) -> Result<MessagesCursor, String> {
        let pairs = parse_query(query);
        if let Some((_, token)) = pairs.iter().find(|(k, _)| k == "page_token") {
            let v = decode_token(token, "messages")?;
            if v["conversation"].as_str() != Some(conversation) {
                return Err("Invalid page_token: it belongs to another conversation".to_owned());
            }
            return Ok(MessagesCursor {
                conversation: conversation.to_owned(),
                asc: v["asc"].as_bool().unwrap_or(false),
                limit: v["limit"].as_u64().unwrap_or(MESSAGES_DEFAULT_LIMIT as u64) as usize,
                pos: token_pos(&v),
            });
        }
        let mut cursor = MessagesCursor {
            conversation: conversation.to_owned(),
            asc: false,
            limit: MESSAGES_DEFAULT_LIMIT,
            pos: None,
        };
        for (key, value) in &pairs {
            match key.as_str() {
                "sort_by" => sort_by(value)?,
                "sort_order" => cursor.asc = sort_order(value)?,
                "limit" => cursor.limit = parse_limit(value, MESSAGES_MAX_LIMIT)?,
                _ => {}
            }
        }
        Ok(cursor)
    }

    fn to_token(&self) -> String {
        encode_token(&json!({
            "kind": "messages",
            "conversation": self.conversation,
            "asc": self.asc,
            "limit": self.limit,
            "pos": self.pos.as_ref().map(|(ms, id)| json!([ms, id])),
        }))
    }
}

fn sort_by(value: &str) -> Result<(), String> {
    if value == "created_at" {
        Ok(())
    } else {
        Err(format!(
            "Invalid sort_by {value:?}: only created_at is supported"
        ))
    }
}

fn sort_order(value: &str) -> Result<bool, String> {
    match value {
        "asc" => Ok(true),
        "desc" => Ok(false),
        _ => Err(format!("Invalid sort_order {value:?}: use asc or desc")),
    }
}

fn parse_limit(value: &str, max: usize) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!(
            "Invalid limit {value:?}: must be between 1 and {max}"
        )),
    }
}

/// Seconds with up to 3 decimals (`1454453901`, `1454453901.012`) -> milliseconds.
fn parse_timestamp(key: &str, value: &str) -> Result<i64, String> {
    let bad = || format!("Invalid {key} {value:?}: expected seconds with up to 3 decimals");
    let (int, frac) = value.split_once('.').unwrap_or((value, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || !digits(int) || !digits(frac) || frac.len() > 3 {
        return Err(bad());
    }
    if value.contains('.') && frac.is_empty() {
        return Err(bad());
    }
    let int: i64 = int.parse().map_err(|_| bad())?;
    let frac: i64 = format!("{frac:0<3}").parse().map_err(|_| bad())?;
    int.checked_mul(1000)
        .and_then(|ms| ms.checked_add(frac))
        .ok_or_else(bad)
}

fn encode_token(value: &Value) -> String {
    serde_json::to_vec(value)
        .expect("serialize token")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn decode_token(token: &str, kind: &str) -> Result<Value, String> {
    let bad = || format!("Invalid page_token {token:?}");
    if !token.len().is_multiple_of(2) || !token.is_ascii() {
        return Err(bad());
    }
    let bytes = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&token[i..i + 2], 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| bad())?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    if value["kind"].as_str() != Some(kind) {
        return Err(bad());
    }
    Ok(value)
}

fn token_pos(token: &Value) -> Option<Key> {
    let pos = token["pos"].as_array()?;
    Some((pos.first()?.as_i64()?, pos.get(1)?.as_str()?.to_owned()))
}

// ---------------------------------------------------------------------------------------
// Helpers

fn sort_keyed(items: &mut [(Key, &Value)], asc: bool) {
    items.sort_by(|a, b| a.0.cmp(&b.0));
    if !asc {
        items.reverse();
    }
}

/// The page after `pos` of the sorted `items`, and whether more follow it.
fn take_page<'a>(
    items: Vec<(Key, &'a Value)>,
    pos: Option<&Key>,
    asc: bool,
    limit: usize,
) -> (Vec<(Key, &'a Value)>, bool) {
    let mut rest: Vec<(Key, &'a Value)> = items
        .into_iter()
        .filter(|(key, _)| match pos {
            None => true,
            Some(pos) if asc => key > pos,
            Some(pos) => key < pos,
        })
        .collect();
    let more = rest.len() > limit;
    rest.truncate(limit);
    (rest, more)
}

fn event_key(event: &Value) -> Key {
    (seconds_to_ms(&event["emitted_at"]), id_of(event))
}

fn id_of(value: &Value) -> String {
    value["id"].as_str().unwrap_or("").to_owned()
}

fn seconds_to_ms(value: &Value) -> i64 {
    value
        .as_f64()
        .map(|s| (s * 1000.0).round() as i64)
        .unwrap_or(0)
}

fn round_ms(seconds: f64) -> f64 {
    (seconds * 1000.0).round() / 1000.0
}

/// The inbox ids in an event's `source` and `target` of `_meta.type` `inboxes`.
fn event_inboxes(event: &Value) -> Vec<String> {
    let mut ids = Vec::new();
    for side in ["source", "target"] {
        if event[side]["_meta"]["type"] != "inboxes" {
            continue;
        }
        match &event[side]["data"] {
            Value::Array(items) => ids.extend(
                items
                    .iter()
                    .filter_map(|i| i["id"].as_str().map(str::to_owned)),
            ),
            obj @ Value::Object(_) => ids.extend(obj["id"].as_str().map(str::to_owned)),
            _ => {}
        }
    }
    ids
}

fn set_self_link(resource: &mut Value, url: String) {
    if let Value::Object(obj) = resource {
        let links = obj.entry("_links").or_insert_with(|| json!({}));
        if !links.is_object() {
            *links = json!({});
        }
        links["self"] = json!(url);
    }
}

fn set_related_link(resource: &mut Value, name: &str, url: String) {
    if let Value::Object(obj) = resource {
        let links = obj.entry("_links").or_insert_with(|| json!({}));
        if !links.is_object() {
            *links = json!({});
        }
        if !links["related"].is_object() {
            links["related"] = json!({});
        }
        links["related"][name] = json!(url);
    }
}

fn format_secs(secs: f64) -> String {
    let text = format!("{secs:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    text.to_owned()
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// `a=1&b=%5Bx%5D` -> `[("a","1"), ("b","[x]")]`, `+` read as a space.
fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' if i + 3 <= bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
