//! [`FakeOAuth`]: an in-process fake of Front's OAuth endpoints on `127.0.0.1:0`, for the
//! OAuth scenarios. Like [`super::front::FakeFront`] it runs on its own thread with its own
//! tokio runtime and stops when dropped.
//!
//! - `GET /oauth/authorize?response_type=code&client_id&redirect_uri&state`: as if an admin
//!   approved at once: `302` to `redirect_uri?code=...&state=...` (a test "browser"
//!   follows it to `frontsync auth`'s loopback listener).
//! - `POST /oauth/token` with HTTP Basic `client_id:client_secret` and a form body:
//!   - `grant_type=authorization_code&code&redirect_uri`: a code issued by the fake, once,
//!     with the same `redirect_uri`;
//!   - `grant_type=refresh_token&refresh_token`: a valid refresh token.
//!
//!   Answers `{access_token, refresh_token, expires_at, token_type: "Bearer"}` with
//!   `expires_at` in Unix seconds (or ms, see [`FakeOAuth::set_expires_at_ms`]), or RFC 6749
//!   errors: `401 invalid_client`, `400 invalid_grant`.
//!
//! Refresh tokens follow a [`Rotation`]. With the default, [`Rotation::Grace`], each
//! refresh issues a new refresh token and the one presented stays valid until its
//! successor is presented: what many rotating providers do, and what lets a client that
//! crashed before storing a rotated token recover with the previous one.
//!
//! Tokens look like `fake-access-token-N-...` / `fake-refresh-token-N-...`, so a test can
//! search logs for the prefixes. [`FakeOAuth::on_issue`] is told each new access token
//! (to make a [`super::front::FakeFront`] accept it).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::server::{self, FakeServer};
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::{Value, json};

/// The app's client id the fake accepts.
pub const CLIENT_ID: &str = "cli_fake_app";
/// The app's client secret the fake accepts.
pub const CLIENT_SECRET: &str = "fake-client-secret-9d1c";
/// Prefix of every access token issued.
pub const ACCESS_PREFIX: &str = "fake-access-token-";
/// Prefix of every refresh token issued.
pub const REFRESH_PREFIX: &str = "fake-refresh-token-";

/// What a refresh does to the refresh token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotation {
    /// The same refresh token comes back.
    Same,
    /// A new one; the presented one stays valid until the new one is presented.
    Grace,
    /// A new one; the presented one is invalid at once.
    Strict,
}

/// One `POST /oauth/token` as the fake saw it.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub grant_type: String,
    pub code: Option<String>,
    pub redirect_uri: Option<String>,
    pub refresh_token: Option<String>,
    /// Whether HTTP Basic carried the right client id and secret.
    pub client_ok: bool,
    pub content_type: Option<String>,
    /// The status answered.
    pub status: u16,
}

type Hook = Arc<dyn Fn(&str) + Send + Sync>;
type Once = Box<dyn FnOnce() + Send>;

struct RefreshState {
    valid: bool,
    /// The token this one was issued from, invalidated when this one is first presented.
    parent: Option<String>,
}

struct State {
    /// code -> redirect_uri it was issued for.
    codes: HashMap<String, String>,
    refresh: HashMap<String, RefreshState>,
    rotation: Rotation,
    lifetime: Duration,
    expires_at_ms: bool,
    revoked: bool,
    counter: u64,
    issued_access: Vec<String>,
    issued_refresh: Vec<String>,
    requests: Vec<TokenRequest>,
    on_issue: Option<Hook>,
    before_refresh_answer: Option<Once>,
}

/// A running fake OAuth server.
pub struct FakeOAuth {
    base: String,
    state: Arc<Mutex<State>>,
    _server: FakeServer,
}

impl FakeOAuth {
    /// Binds `127.0.0.1:0` and serves on a new thread.
    pub fn start() -> FakeOAuth {
        let (listener, addr) = server::bind("fake oauth");
        let base = format!("http://{addr}");
        let state = Arc::new(Mutex::new(State {
            codes: HashMap::new(),
            refresh: HashMap::new(),
            rotation: Rotation::Grace,
            lifetime: Duration::from_secs(3600),
            expires_at_ms: false,
            revoked: false,
            counter: 0,
            issued_access: Vec::new(),
            issued_refresh: Vec::new(),
            requests: Vec::new(),
            on_issue: None,
            before_refresh_answer: None,
        }));
        let handler = {
            let state = Arc::clone(&state);
            move |req| handle(req, Arc::clone(&state))
        };
        let server = FakeServer::serve("fake-oauth", listener, || true, handler);
        FakeOAuth {
            base,
            state,
            _server: server,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        self.base.clone()
    }

    pub fn authorize_url(&self) -> String {
        format!("{}/oauth/authorize", self.base)
    }

    pub fn token_url(&self) -> String {
        format!("{}/oauth/token", self.base)
    }

    /// A valid, single-use code for `redirect_uri` (what an admin's approval would yield).
    pub fn issue_code(&self, redirect_uri: &str) -> String {
        let mut st = self.lock();
        st.counter += 1;
        let code = format!("fake-code-{}", st.counter);
        st.codes.insert(code.clone(), redirect_uri.to_string());
        code
    }

    pub fn set_rotation(&self, rotation: Rotation) {
        self.lock().rotation = rotation;
    }

    /// How long issued access tokens live (`expires_at` = now + this). Default one hour.
    pub fn set_lifetime(&self, lifetime: Duration) {
        self.lock().lifetime = lifetime;
    }

    /// Writes `expires_at` in milliseconds instead of seconds.
    pub fn set_expires_at_ms(&self, on: bool) {
        self.lock().expires_at_ms = on;
    }

    /// Every refresh token is refused with `invalid_grant` from now on (the admin
    /// revoked the app).
    pub fn revoke_all(&self) {
        self.lock().revoked = true;
    }

    /// Called with each access token issued, before it is answered.
    pub fn on_issue(&self, hook: impl Fn(&str) + Send + Sync + 'static) {
        self.lock().on_issue = Some(Arc::new(hook));
    }

    /// Runs `f` once, inside the next successful refresh: after the new tokens are issued
    /// (and the refresh token rotated), before the answer is sent.
    pub fn before_next_refresh_answer(&self, f: impl FnOnce() + Send + 'static) {
        self.lock().before_refresh_answer = Some(Box::new(f));
    }

    pub fn requests(&self) -> Vec<TokenRequest> {
        self.lock().requests.clone()
    }

    /// The successful refreshes so far.
    pub fn refreshes(&self) -> Vec<TokenRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.grant_type == "refresh_token" && r.status == 200)
            .collect()
    }

    pub fn issued_access_tokens(&self) -> Vec<String> {
        self.lock().issued_access.clone()
    }

    pub fn issued_refresh_tokens(&self) -> Vec<String> {
        self.lock().issued_refresh.clone()
    }

    /// Every secret a log must never show: the issued tokens and the client secret.
    pub fn secrets(&self) -> Vec<String> {
        let st = self.lock();
        let mut out = vec![CLIENT_SECRET.to_string()];
        out.extend(st.issued_access.iter().cloned());
        out.extend(st.issued_refresh.iter().cloned());
        out
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn reply(status: u16, body: &Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("cache-control", "no-store")
        .body(Full::new(Bytes::from(
            serde_json::to_vec(body).expect("json"),
        )))
        .expect("response")
}

fn oauth_error(status: u16, error: &str, description: &str) -> Response<Full<Bytes>> {
    reply(
        status,
        &json!({ "error": error, "error_description": description }),
    )
}

/// Decoded `application/x-www-form-urlencoded` (or query) pairs, first of each name.
pub fn decode_form(text: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    if let Ok(url) = reqwest::Url::parse(&format!("http://x/?{text}")) {
        for (k, v) in url.query_pairs() {
            out.entry(k.into_owned()).or_insert_with(|| v.into_owned());
        }
    }
    out
}

async fn handle(
    req: Request<Incoming>,
    state: Arc<Mutex<State>>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let method = req.method().clone();
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let authorization = header("authorization");
    let content_type = header("content-type");
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let lock = || state.lock().unwrap_or_else(PoisonError::into_inner);
    Ok(match (method.as_str(), path.as_str()) {
        ("GET", "/oauth/authorize") => {
            let q = decode_form(&query);
            if q.get("client_id").map(String::as_str) != Some(CLIENT_ID)
                || q.get("response_type").map(String::as_str) != Some("code")
            {
                return Ok(oauth_error(
                    400,
                    "invalid_request",
                    "bad client_id or response_type",
                ));
            }
            let Some(redirect_uri) = q.get("redirect_uri") else {
                return Ok(oauth_error(400, "invalid_request", "no redirect_uri"));
            };
            let code = {
                let mut st = lock();
                st.counter += 1;
                let code = format!("fake-code-{}", st.counter);
                st.codes.insert(code.clone(), redirect_uri.clone());
                code
            };
            let mut location = reqwest::Url::parse(redirect_uri).expect("redirect_uri is a url");
            location
                .query_pairs_mut()
                .append_pair("code", &code)
                .append_pair("state", q.get("state").map(String::as_str).unwrap_or(""));
            Response::builder()
                .status(302)
                .header("location", location.as_str())
                .body(Full::new(Bytes::new()))
                .expect("response")
        }
        ("POST", "/oauth/token") => {
            let form = decode_form(&String::from_utf8_lossy(&body));
            let client_ok = authorization
                .as_deref()
                .and_then(|a| a.strip_prefix("Basic "))
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                .is_some_and(|raw| raw == format!("{CLIENT_ID}:{CLIENT_SECRET}").as_bytes());
            let mut request = TokenRequest {
                grant_type: form.get("grant_type").cloned().unwrap_or_default(),
                code: form.get("code").cloned(),
                redirect_uri: form.get("redirect_uri").cloned(),
                refresh_token: form.get("refresh_token").cloned(),
                client_ok,
                content_type,
                status: 0,
            };
            let (response, hook, once) = token(&mut lock(), &request);
            request.status = response.status().as_u16();
            lock().requests.push(request);
            // Outside the lock: a hook may take time (or kill a process).
            if let Some((hook, access)) = hook {
                hook(&access);
            }
            if let Some(once) = once {
                once();
            }
            response
        }
        _ => oauth_error(404, "not_found", "no such endpoint"),
    })
}

type Answer = (Response<Full<Bytes>>, Option<(Hook, String)>, Option<Once>);

fn token(st: &mut State, request: &TokenRequest) -> Answer {
    if !request.client_ok {
        return (
            oauth_error(401, "invalid_client", "bad client credentials"),
            None,
            None,
        );
    }
    match request.grant_type.as_str() {
        "authorization_code" => {
            let Some(code) = &request.code else {
                return (oauth_error(400, "invalid_request", "no code"), None, None);
            };
            match st.codes.remove(code) {
                Some(uri) if Some(&uri) == request.redirect_uri.as_ref() => {}
                Some(_) => {
                    return (
                        oauth_error(400, "invalid_grant", "redirect_uri mismatch"),
                        None,
                        None,
                    );
                }
                None => {
                    return (
                        oauth_error(400, "invalid_grant", "unknown or used code"),
                        None,
                        None,
                    );
                }
            }
            let refresh = new_refresh(st, None);
            issue(st, refresh, None)
        }
        "refresh_token" => {
            let Some(presented) = request.refresh_token.clone() else {
                return (
                    oauth_error(400, "invalid_request", "no refresh_token"),
                    None,
                    None,
                );
            };
            let valid = st.refresh.get(&presented).is_some_and(|r| r.valid);
            if st.revoked || !valid {
                return (
                    oauth_error(
                        400,
                        "invalid_grant",
                        "the refresh token is invalid or revoked",
                    ),
                    None,
                    None,
                );
            }
            // Presenting a token retires the one it replaced.
            if let Some(parent) = st.refresh.get(&presented).and_then(|r| r.parent.clone())
                && let Some(p) = st.refresh.get_mut(&parent)
            {
                p.valid = false;
            }
            let refresh = match st.rotation {
                Rotation::Same => presented.clone(),
                Rotation::Grace => new_refresh(st, Some(presented.clone())),
                Rotation::Strict => {
                    if let Some(r) = st.refresh.get_mut(&presented) {
                        r.valid = false;
                    }
                    new_refresh(st, None)
                }
            };
            let once = st.before_refresh_answer.take();
            issue(st, refresh, once)
        }
        _ => (
            oauth_error(400, "unsupported_grant_type", "unknown grant_type"),
            None,
            None,
        ),
    }
}

fn new_refresh(st: &mut State, parent: Option<String>) -> String {
    st.counter += 1;
    let token = format!("{REFRESH_PREFIX}{}-{:x}", st.counter, nanos());
    st.refresh.insert(
        token.clone(),
        RefreshState {
            valid: true,
            parent,
        },
    );
    st.issued_refresh.push(token.clone());
    token
}

fn issue(st: &mut State, refresh: String, once: Option<Once>) -> Answer {
    st.counter += 1;
    let access = format!("{ACCESS_PREFIX}{}-{:x}", st.counter, nanos());
    st.issued_access.push(access.clone());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let at = now + st.lifetime.as_secs_f64();
    let expires_at = if st.expires_at_ms {
        json!((at * 1000.0).round() as i64)
    } else {
        json!((at * 1000.0).round() / 1000.0)
    };
    let body = json!({
        "access_token": access,
        "refresh_token": refresh,
        "expires_at": expires_at,
        "token_type": "Bearer",
    });
    let hook = st.on_issue.clone().map(|h| (h, access));
    (reply(200, &body), hook, once)
}

fn nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}
