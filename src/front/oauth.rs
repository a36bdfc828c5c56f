//! OAuth connections: Front's token endpoint, and the token source a
//! [`FrontClient`](crate::front::client::FrontClient) uses instead of a fixed API token.
//!
//! Front's OAuth is the authorization-code grant only. `frontsync auth front NAME` obtains
//! the first grant (see `crate::auth`); from then on an [`OAuthSource`] keeps it alive:
//!
//! - **Ahead of expiry.** An access token lives an hour. It is refreshed when less than
//!   [`REFRESH_AHEAD`] (or half its lifetime, for short-lived ones) is left, and once more
//!   when Front answers 401 with it. A failed refresh ahead of expiry keeps using the
//!   still-valid token and tries again on the next request.
//! - **One refresh at a time.** The source's state sits behind a tokio mutex: concurrent
//!   requests of a connection wait for the refresh in flight and use its result.
//! - **Commit before use.** Front answers a refresh with a new access token and "the same,
//!   or a new" refresh token. The new grant is committed to the state database (through
//!   the single writer, fsync) before the new access token is used and before the old
//!   refresh token is forgotten in memory. A crash before that commit leaves the previous
//!   grant stored: if the token endpoint rotated the refresh token in that window, the
//!   next start presents the previous one, which works as long as the endpoint still
//!   honours it (rotating providers commonly keep it valid until the new one is used;
//!   Front does not document this). The refresh runs in its own task, so a poller
//!   stopped mid-refresh (shutdown, reload) does not abandon a rotated token either.
//! - **Compare and set.** A refresh's result is stored only if the stored grant is still
//!   the one it started from: a grant stored meanwhile by `frontsync auth` wins.
//! - **A refused grant.** `invalid_grant` means the authorization was revoked or expired:
//!   the connection stops with an error that says to run `frontsync auth` again, and the
//!   refused refresh token is not tried again until another grant is stored.
//!
//! Tokens are [`SecretValue`]s: they never reach logs, errors or `Debug` output.

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderValue};
use serde::Deserialize;
use tokio::sync::{Mutex, OwnedMutexGuard, watch};

use crate::config::OAuthConfig;
use crate::ingest::{Writer, now_ms};
use crate::normalize::format_ms;
use crate::secret::{SecretError, SecretValue};
use crate::store::{OAuthGrant, Store};

/// How long before expiry an access token is refreshed (at most half its lifetime).
pub const REFRESH_AHEAD: Duration = Duration::from_secs(300);
/// Front's documented access-token lifetime, used when the answer has no usable expiry.
const DEFAULT_LIFETIME_MS: i64 = 3_600_000;
/// `expires_at` values at or above this are milliseconds, below it seconds (10^11 s is
/// the year 5138; 10^11 ms is 1973): Front's unit is not documented.
const MS_THRESHOLD: f64 = 1e11;
/// Timeout of one token-endpoint request.
const ENDPOINT_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest excerpt of a token-endpoint error kept in a message.
const EXCERPT_CHARS: usize = 200;

/// Why an access token could not be had. Never holds a token.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OAuthError {
    /// Nothing stored yet: the operator has to authorize.
    #[error(
        "no oauth grant is stored for this connection yet: run `{command}` to authorize frontsync"
    )]
    NoGrant { command: String },
    /// The token endpoint refused the refresh token or the code (`invalid_grant`).
    #[error(
        "the token endpoint refused the grant (invalid_grant{detail}): the authorization was revoked, expired or already used; run `{command}` again"
    )]
    InvalidGrant { detail: String, command: String },
    /// `invalid_client` (or a 401 from the token endpoint): the app's credentials.
    #[error(
        "the token endpoint refused the client credentials ({status} {error}): check client_id and client_secret in auth.oauth"
    )]
    Client { status: u16, error: String },
    /// Any other 4xx.
    #[error("the token endpoint refused the request ({status} {error})")]
    Refused { status: u16, error: String },
    /// 5xx, 408 or 429: worth trying again.
    #[error("the token endpoint answered {status} {error}")]
    Server { status: u16, error: String },
    /// Timeouts and connection errors.
    #[error("cannot reach the token endpoint {url}: {error}")]
    Transport { url: String, error: String },
    /// A 2xx that is not a token response (e.g. a proxy's page).
    #[error("the token endpoint answered something that is not a token response: {0}")]
    Decode(String),
    /// The state database could not be read or written.
    #[error("oauth grant: {0}")]
    Store(String),
    /// The token has characters an HTTP header cannot carry.
    #[error("the access token contains characters not allowed in an http header")]
    InvalidToken,
    /// The client could not be built, or the client secret read.
    #[error("{0}")]
    Setup(String),
}

impl OAuthError {
    /// Whether trying again later may help without anyone doing anything.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            OAuthError::Server { .. }
                | OAuthError::Transport { .. }
                | OAuthError::Decode(_)
                | OAuthError::Store(_)
        )
    }

    /// Whether an operator has to act (authorize again, fix the app's credentials).
    pub fn needs_operator(&self) -> bool {
        !self.is_retryable()
    }
}

/// An OAuth app of one connection, with its client secret read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthApp {
    pub client_id: String,
    pub client_secret: SecretValue,
    pub authorize_url: String,
    pub token_url: String,
    pub redirect_uri: String,
}

impl OAuthApp {
    /// Reads the client secret named by the configuration.
    pub fn from_config(config: &OAuthConfig) -> Result<OAuthApp, SecretError> {
        Ok(OAuthApp {
            client_id: config.client_id.clone(),
            client_secret: config.client_secret.resolve()?,
            authorize_url: config.authorize_url.clone(),
            token_url: config.token_url.clone(),
            redirect_uri: config.redirect_uri.clone(),
        })
    }

    /// The URL to open in a browser: Front's consent page, which redirects to
    /// `redirect_uri` with `code` and `state`.
    pub fn authorize_url(&self, state: &str) -> Result<String, String> {
        let mut url = reqwest::Url::parse(&self.authorize_url)
            .map_err(|e| format!("invalid authorize_url {:?}: {e}", self.authorize_url))?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.client_id)
            .append_pair("redirect_uri", &self.redirect_uri)
            .append_pair("state", state);
        Ok(url.into())
    }
}

/// What the token endpoint answered, parsed.
pub struct Tokens {
    pub access_token: SecretValue,
    /// `None` when the answer had none (a refresh then keeps the previous one).
    pub refresh_token: Option<SecretValue>,
    /// Unix ms.
    pub expires_at_ms: i64,
}

impl Tokens {
    /// The grant these tokens make, keeping `previous_refresh` when no new refresh token
    /// came. `None` when there is no refresh token at all.
    pub fn into_grant(
        self,
        previous_refresh: Option<&SecretValue>,
        obtained_at_ms: i64,
    ) -> Option<OAuthGrant> {
        let refresh_token = self.refresh_token.or_else(|| previous_refresh.cloned())?;
        Some(OAuthGrant {
            access_token: self.access_token,
            access_expires_at_ms: self.expires_at_ms,
            refresh_token,
            obtained_at_ms,
        })
    }
}

/// The token endpoint's JSON. Never given `Debug`: it holds tokens.
#[derive(Deserialize)]
struct TokenBody {
    access_token: String,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    expires_at: Option<serde_json::Value>,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
}

/// Front's token endpoint for one app.
#[derive(Clone)]
pub struct TokenEndpoint {
    app: OAuthApp,
    http: reqwest::Client,
}

impl std::fmt::Debug for TokenEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenEndpoint")
            .field("token_url", &self.app.token_url)
            .field("client_id", &self.app.client_id)
            .finish_non_exhaustive()
    }
}

impl TokenEndpoint {
    pub fn new(app: OAuthApp) -> Result<TokenEndpoint, OAuthError> {
        let http = reqwest::Client::builder()
            .timeout(ENDPOINT_TIMEOUT)
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("frontsync/", env!("CARGO_PKG_VERSION")))
            // A redirect would resend the client credentials elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| OAuthError::Setup(format!("cannot build the http client: {e}")))?;
        Ok(TokenEndpoint { app, http })
    }

    pub fn app(&self) -> &OAuthApp {
        &self.app
    }

    /// `grant_type=authorization_code`: the code from the redirect.
    pub async fn exchange_code(&self, code: &str, command: &str) -> Result<Tokens, OAuthError> {
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", self.app.redirect_uri.as_str()),
        ];
        self.request(&form, command).await
    }

    /// `grant_type=refresh_token`.
    pub async fn refresh(
        &self,
        refresh_token: &SecretValue,
        command: &str,
    ) -> Result<Tokens, OAuthError> {
        let form = [
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token.expose()),
        ];
        self.request(&form, command).await
    }

    async fn request(&self, form: &[(&str, &str)], command: &str) -> Result<Tokens, OAuthError> {
        let url = shown_url(&self.app.token_url);
        let sent = self
            .http
            .post(&self.app.token_url)
            .basic_auth(&self.app.client_id, Some(self.app.client_secret.expose()))
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(ACCEPT, "application/json")
            .body(form_urlencoded(form))
            .send()
            .await;
        let response = sent.map_err(|e| OAuthError::Transport {
            url: url.clone(),
            error: error_chain(&e.without_url()),
        })?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| OAuthError::Transport {
            url: url.clone(),
            error: error_chain(&e.without_url()),
        })?;
        if status.is_success() {
            return parse_tokens(&body, now_ms() as i64);
        }
        let (code, description) = endpoint_error(status, &body);
        let detail = if description.is_empty() {
            code.clone()
        } else {
            format!("{code}: {description}")
        };
        if code == "invalid_grant" {
            return Err(OAuthError::InvalidGrant {
                detail: if description.is_empty() {
                    String::new()
                } else {
                    format!(": {description}")
                },
                command: command.to_string(),
            });
        }
        if code == "invalid_client" || status == StatusCode::UNAUTHORIZED {
            return Err(OAuthError::Client {
                status: status.as_u16(),
                error: detail,
            });
        }
        if status.is_server_error()
            || status == StatusCode::REQUEST_TIMEOUT
            || status == StatusCode::TOO_MANY_REQUESTS
        {
            return Err(OAuthError::Server {
                status: status.as_u16(),
                error: detail,
            });
        }
        Err(OAuthError::Refused {
            status: status.as_u16(),
            error: detail,
        })
    }
}

/// Parses a successful token answer. serde's messages are not kept: they may quote a value.
fn parse_tokens(body: &[u8], now: i64) -> Result<Tokens, OAuthError> {
    let parsed: TokenBody = serde_json::from_slice(body).map_err(|e| {
        OAuthError::Decode(format!(
            "no access_token in a json object (line {} column {})",
            e.line(),
            e.column()
        ))
    })?;
    if parsed.access_token.trim().is_empty() {
        return Err(OAuthError::Decode("the access_token is empty".into()));
    }
    let expires_at_ms = expiry_ms(parsed.expires_at.as_ref(), parsed.expires_in.as_ref(), now);
    Ok(Tokens {
        access_token: SecretValue::new(parsed.access_token),
        refresh_token: parsed
            .refresh_token
            .filter(|r| !r.trim().is_empty())
            .map(SecretValue::new),
        expires_at_ms,
    })
}

/// When the access token expires, in Unix ms: `expires_at` in seconds or milliseconds
/// (Front's unit is not documented), else `expires_in` seconds, else Front's documented
/// hour. A time already past (a clock far off) also falls back to the hour: refreshing on
/// every request would be worse, and a token that really expired is refreshed on its 401.
fn expiry_ms(
    expires_at: Option<&serde_json::Value>,
    expires_in: Option<&serde_json::Value>,
    now: i64,
) -> i64 {
    let number = |v: &serde_json::Value| {
        v.as_f64()
            .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
            .filter(|x: &f64| x.is_finite() && *x > 0.0)
    };
    let at = expires_at
        .and_then(number)
        .map(|x| {
            if x >= MS_THRESHOLD {
                x as i64
            } else {
                (x * 1000.0) as i64
            }
        })
        .or_else(|| {
            expires_in
                .and_then(number)
                .map(|s| now.saturating_add((s * 1000.0) as i64))
        });
    match at {
        Some(at) if at > now => at,
        Some(_) => {
            tracing::warn!(
                "the token endpoint says the new access token has already expired (is this host's clock right?); assuming Front's documented hour"
            );
            now + DEFAULT_LIFETIME_MS
        }
        None => now + DEFAULT_LIFETIME_MS,
    }
}

/// `error` and `error_description` of an RFC 6749 error answer, or Front's `_error`, or a
/// bounded excerpt of the body.
fn endpoint_error(status: StatusCode, body: &[u8]) -> (String, String) {
    #[derive(Deserialize)]
    struct Rfc {
        error: String,
        #[serde(default)]
        error_description: Option<String>,
    }
    #[derive(Deserialize)]
    struct Front {
        #[serde(rename = "_error")]
        error: FrontBody,
    }
    #[derive(Deserialize)]
    struct FrontBody {
        #[serde(default)]
        title: Option<String>,
        #[serde(default)]
        message: Option<String>,
    }
    if let Ok(e) = serde_json::from_slice::<Rfc>(body) {
        return (
            excerpt(&e.error),
            excerpt(e.error_description.as_deref().unwrap_or("")),
        );
    }
    let reason = status.canonical_reason().unwrap_or("error").to_lowercase();
    if let Ok(Front { error }) = serde_json::from_slice::<Front>(body) {
        let message = error.message.unwrap_or_default();
        let code = if message.contains("invalid_grant") {
            "invalid_grant".to_string()
        } else {
            error.title.map_or(reason, |t| t.to_lowercase())
        };
        return (code, excerpt(&message));
    }
    let text = String::from_utf8_lossy(body);
    if text.contains("invalid_grant") {
        return ("invalid_grant".into(), String::new());
    }
    (reason, excerpt(text.trim()))
}

fn excerpt(text: &str) -> String {
    let mut chars = text.chars();
    let mut out: String = chars.by_ref().take(EXCERPT_CHARS).collect();
    if chars.next().is_some() {
        out.push_str("...");
    }
    out.replace(['\n', '\r'], " ")
}

/// The token URL without query or fragment, for messages.
fn shown_url(url: &str) -> String {
    url.split(['?', '#']).next().unwrap_or_default().to_string()
}

/// `application/x-www-form-urlencoded` (reqwest's `form` feature is not enabled): the
/// unreserved characters as is, space as `+`, every other byte as `%XX`.
pub fn form_urlencoded(pairs: &[(&str, &str)]) -> String {
    fn push(out: &mut String, s: &str) {
        for b in s.bytes() {
            match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                    out.push(char::from(b))
                }
                b' ' => out.push('+'),
                _ => out.push_str(&format!("%{b:02X}")),
            }
        }
    }
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        push(&mut out, k);
        out.push('=');
        push(&mut out, v);
    }
    out
}

fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

// ---------------------------------------------------------------------------------------
// The token source

/// How a refreshed grant is committed.
#[derive(Clone)]
pub enum Persist {
    /// Through the daemon's single writer.
    Writer(Writer),
    /// Straight into the store: a command that holds the state file itself (no daemon runs).
    Store,
}

/// An access token to send, and which one it is (to tell a 401 on it from a 401 on an
/// older one).
#[derive(Clone)]
pub struct Bearer {
    /// `Bearer <token>`, marked sensitive.
    pub header: HeaderValue,
    pub generation: u64,
}

/// The grant in memory.
struct Current {
    grant: OAuthGrant,
    header: HeaderValue,
}

#[derive(Default)]
struct SourceState {
    current: Option<Current>,
    /// Bumped whenever `current` changes.
    generation: u64,
    /// A refreshed grant whose commit failed: committed before anything else, since the
    /// endpoint may have retired the stored refresh token already.
    pending: Option<(OAuthGrant, SecretValue)>,
    /// The refresh token the endpoint refused: not presented again until the store holds
    /// another grant.
    refused: Option<SecretValue>,
}

impl SourceState {
    fn set(&mut self, grant: OAuthGrant) -> Result<(), OAuthError> {
        let header = bearer_header(&grant.access_token)?;
        self.current = Some(Current { grant, header });
        self.generation += 1;
        Ok(())
    }

    fn bearer(&self) -> Option<Bearer> {
        self.current.as_ref().map(|c| Bearer {
            header: c.header.clone(),
            generation: self.generation,
        })
    }
}

fn bearer_header(token: &SecretValue) -> Result<HeaderValue, OAuthError> {
    let mut header = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
        .map_err(|_| OAuthError::InvalidToken)?;
    header.set_sensitive(true);
    Ok(header)
}

/// Whether an access token is due for a refresh at `now`: within [`REFRESH_AHEAD`] of its
/// expiry, or within half its lifetime for short-lived tokens.
pub fn due(grant: &OAuthGrant, now: i64) -> bool {
    let lifetime = (grant.access_expires_at_ms - grant.obtained_at_ms).max(0);
    let ahead = (REFRESH_AHEAD.as_millis() as i64).min(lifetime / 2);
    now >= grant.access_expires_at_ms - ahead
}

/// The access tokens of one OAuth connection. Shared by its clients (poller, enricher).
pub struct OAuthSource {
    connection: String,
    /// `frontsync auth front NAME --config PATH`, for messages.
    command: String,
    endpoint: TokenEndpoint,
    store: Store,
    persist: Persist,
    state: Arc<Mutex<SourceState>>,
    /// Bumped when an operator stores a new grant, so a stopped poller wakes up.
    changes: watch::Sender<u64>,
}

impl std::fmt::Debug for OAuthSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthSource")
            .field("connection", &self.connection)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

/// The command that authorizes a connection, as printed in messages.
pub fn auth_command(connection: &str, config_path: &std::path::Path) -> String {
    format!(
        "frontsync auth front {connection} --config {}",
        config_path.display()
    )
}

impl OAuthSource {
    /// A source reading and writing the grant of `connection` in `store`. Nothing is read
    /// until the first token is asked for.
    pub fn new(
        connection: &str,
        config_path: &std::path::Path,
        app: OAuthApp,
        store: Store,
        persist: Persist,
    ) -> Result<Arc<OAuthSource>, OAuthError> {
        Ok(Arc::new(OAuthSource {
            connection: connection.to_string(),
            command: auth_command(connection, config_path),
            endpoint: TokenEndpoint::new(app)?,
            store,
            persist,
            state: Arc::new(Mutex::new(SourceState::default())),
            changes: watch::channel(0).0,
        }))
    }

    pub fn connection(&self) -> &str {
        &self.connection
    }

    pub fn app(&self) -> &OAuthApp {
        self.endpoint.app()
    }

    /// Notified when an operator stores a new grant (see [`OAuthSource::replace`]).
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// The access token to send now, refreshed first when it is due.
    pub async fn bearer(self: &Arc<Self>) -> Result<Bearer, OAuthError> {
        self.obtain(None).await
    }

    /// Front answered 401 to the token of `generation`: refresh it, once (a token newer
    /// than that one is returned as is).
    pub async fn rejected(self: &Arc<Self>, generation: u64) -> Result<Bearer, OAuthError> {
        self.obtain(Some(generation)).await
    }

    /// A grant an operator just stored (`frontsync auth` while the daemon runs): use it
    /// from now on, and wake whoever waits for one.
    pub async fn replace(&self, grant: OAuthGrant) -> Result<(), OAuthError> {
        let mut state = self.state.lock().await;
        state.pending = None;
        state.refused = None;
        state.set(grant)?;
        drop(state);
        self.changes.send_modify(|n| *n += 1);
        Ok(())
    }

    /// Waits until no refresh is in flight (at shutdown: a refresh already answered is
    /// committed before the process exits).
    pub async fn idle(&self) {
        drop(self.state.lock().await);
    }

    async fn obtain(self: &Arc<Self>, rejected: Option<u64>) -> Result<Bearer, OAuthError> {
        let state = self.state.clone().lock_owned().await;
        if state.pending.is_none()
            && rejected != Some(state.generation)
            && let Some(current) = &state.current
            && !due(&current.grant, now_ms() as i64)
            && let Some(bearer) = state.bearer()
        {
            return Ok(bearer);
        }
        // The slow path runs in its own task, holding the lock: if the caller is dropped
        // (a poller stopping) a refresh already answered is still committed.
        let this = Arc::clone(self);
        tokio::spawn(async move { this.slow(state, rejected).await })
            .await
            .map_err(|e| OAuthError::Store(format!("the refresh task failed: {e}")))?
    }

    async fn slow(
        &self,
        mut state: OwnedMutexGuard<SourceState>,
        rejected: Option<u64>,
    ) -> Result<Bearer, OAuthError> {
        // 1. A refreshed grant not committed yet goes first.
        if let Some((grant, replaces)) = state.pending.take() {
            match self.persist(grant.clone(), Some(replaces.clone())).await {
                Ok(true) => state.set(grant)?,
                Ok(false) => state.current = None,
                Err(e) => {
                    state.pending = Some((grant, replaces));
                    return Err(e);
                }
            }
        }
        // 2. Nothing in memory: the store (first use, or after a refused grant).
        if state.current.is_none() {
            let stored = self.load().await?;
            let Some(grant) = stored else {
                return Err(OAuthError::NoGrant {
                    command: self.command.clone(),
                });
            };
            if state.refused.as_ref() == Some(&grant.refresh_token) {
                return Err(OAuthError::InvalidGrant {
                    detail: String::new(),
                    command: self.command.clone(),
                });
            }
            state.refused = None;
            state.set(grant)?;
        }
        let Some(current) = state.current.as_ref() else {
            return Err(OAuthError::NoGrant {
                command: self.command.clone(),
            });
        };
        let now = now_ms() as i64;
        let forced = rejected == Some(state.generation);
        if !forced && !due(&current.grant, now) {
            return state.bearer().ok_or(OAuthError::InvalidToken);
        }
        let still_valid = !forced && now < current.grant.access_expires_at_ms;
        let old = current.grant.refresh_token.clone();

        // 3. Refresh.
        let tokens = match self.endpoint.refresh(&old, &self.command).await {
            Ok(tokens) => tokens,
            Err(e @ OAuthError::InvalidGrant { .. }) => {
                // Perhaps an operator authorized again while this refresh was under way.
                if let Ok(Some(stored)) = self.load().await
                    && stored.refresh_token != old
                {
                    state.set(stored)?;
                    return state.bearer().ok_or(OAuthError::InvalidToken);
                }
                state.current = None;
                state.refused = Some(old);
                return Err(e);
            }
            Err(e) if still_valid && e.is_retryable() => {
                tracing::warn!(connection = %self.connection, error = %e, "cannot refresh the oauth access token ahead of its expiry; using it while it lasts");
                return state.bearer().ok_or(OAuthError::InvalidToken);
            }
            Err(e) => return Err(e),
        };
        let rotated = tokens.refresh_token.as_ref().is_some_and(|r| *r != old);
        let obtained = now_ms() as i64;
        let Some(grant) = tokens.into_grant(Some(&old), obtained) else {
            return Err(OAuthError::Decode("no refresh token".into()));
        };
        let expires = grant.access_expires_at_ms;

        // 4. Durable before use: until this commit the old refresh token stays both stored
        // and in memory.
        match self.persist(grant.clone(), Some(old.clone())).await {
            Ok(true) => {
                state.set(grant)?;
                tracing::info!(
                    connection = %self.connection,
                    expires_at = %format_ms(expires),
                    rotated,
                    "oauth access token refreshed"
                );
            }
            Ok(false) => {
                // An operator stored a new grant meanwhile: it wins.
                state.current = None;
                match self.load().await? {
                    Some(stored) => state.set(stored)?,
                    None => {
                        return Err(OAuthError::NoGrant {
                            command: self.command.clone(),
                        });
                    }
                }
            }
            Err(e) => {
                state.pending = Some((grant, old));
                return Err(e);
            }
        }
        state.bearer().ok_or(OAuthError::InvalidToken)
    }

    async fn load(&self) -> Result<Option<OAuthGrant>, OAuthError> {
        let store = self.store.clone();
        let connection = self.connection.clone();
        tokio::task::spawn_blocking(move || store.oauth_grant(&connection))
            .await
            .map_err(|e| OAuthError::Store(e.to_string()))?
            .map_err(|e| OAuthError::Store(e.to_string()))
    }

    async fn persist(
        &self,
        grant: OAuthGrant,
        replaces: Option<SecretValue>,
    ) -> Result<bool, OAuthError> {
        match &self.persist {
            Persist::Writer(writer) => writer
                .put_oauth_grant(&self.connection, grant, replaces)
                .await
                .map_err(|e| OAuthError::Store(format!("cannot store the refreshed grant: {e}"))),
            Persist::Store => {
                let store = self.store.clone();
                let connection = self.connection.clone();
                tokio::task::spawn_blocking(move || {
                    store.write(|t| match &replaces {
                        None => t.put_oauth_grant(&connection, &grant).map(|()| true),
                        Some(previous) => t.replace_oauth_grant(&connection, &grant, previous),
                    })
                })
                .await
                .map_err(|e| OAuthError::Store(e.to_string()))?
                .map_err(|e| OAuthError::Store(format!("cannot store the refreshed grant: {e}")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_bodies_are_percent_encoded() {
        assert_eq!(
            form_urlencoded(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", "a b&c=d/é+")
            ]),
            "grant_type=refresh_token&refresh_token=a+b%26c%3Dd%2F%C3%A9%2B"
        );
    }

    #[test]
    fn expiry_accepts_seconds_milliseconds_and_expires_in() {
        let now = 1_800_000_000_000;
        let v = |x: serde_json::Value| x;
        assert_eq!(
            expiry_ms(Some(&v(serde_json::json!(1_800_003_600))), None, now),
            1_800_003_600_000
        );
        assert_eq!(
            expiry_ms(
                Some(&v(serde_json::json!(1_800_003_600_123_i64))),
                None,
                now
            ),
            1_800_003_600_123
        );
        assert_eq!(
            expiry_ms(Some(&v(serde_json::json!("1800003600.5"))), None, now),
            1_800_003_600_500
        );
        assert_eq!(
            expiry_ms(None, Some(&v(serde_json::json!(60))), now),
            now + 60_000
        );
        // Nothing usable, or already past: Front's documented hour.
        assert_eq!(expiry_ms(None, None, now), now + DEFAULT_LIFETIME_MS);
        assert_eq!(
            expiry_ms(Some(&v(serde_json::json!(5))), None, now),
            now + DEFAULT_LIFETIME_MS
        );
    }

    #[test]
    fn refresh_is_due_five_minutes_early_or_at_half_life() {
        let grant = |obtained: i64, expires: i64| OAuthGrant {
            access_token: SecretValue::new("a"),
            access_expires_at_ms: expires,
            refresh_token: SecretValue::new("r"),
            obtained_at_ms: obtained,
        };
        let hour = grant(0, 3_600_000);
        assert!(!due(&hour, 3_600_000 - 300_001));
        assert!(due(&hour, 3_600_000 - 300_000));
        let short = grant(0, 4_000);
        assert!(!due(&short, 1_999));
        assert!(due(&short, 2_000));
    }

    #[test]
    fn token_answers_are_parsed_without_echoing_them() {
        let t = parse_tokens(
            br#"{"access_token":"at_1","refresh_token":"rt_1","expires_at":1800003600,"token_type":"Bearer"}"#,
            0,
        )
        .unwrap();
        assert_eq!(t.access_token.expose(), "at_1");
        assert_eq!(
            t.refresh_token.as_ref().map(SecretValue::expose),
            Some("rt_1")
        );
        assert_eq!(t.expires_at_ms, 1_800_003_600_000);
        // A refresh answer without a refresh token keeps the previous one.
        let t = parse_tokens(br#"{"access_token":"at_2"}"#, 0).unwrap();
        let g = t.into_grant(Some(&SecretValue::new("rt_1")), 5).unwrap();
        assert_eq!(g.refresh_token.expose(), "rt_1");
        // A wrong type is reported without quoting the value.
        let err = parse_tokens(br#"{"access_token":["secret_token_value"]}"#, 0)
            .err()
            .unwrap()
            .to_string();
        assert!(!err.contains("secret_token_value"), "{err}");
    }

    #[test]
    fn endpoint_errors_are_classified() {
        let (code, desc) = endpoint_error(
            StatusCode::BAD_REQUEST,
            br#"{"error":"invalid_grant","error_description":"revoked"}"#,
        );
        assert_eq!((code.as_str(), desc.as_str()), ("invalid_grant", "revoked"));
        let (code, _) = endpoint_error(
            StatusCode::BAD_REQUEST,
            br#"{"_error":{"status":400,"title":"Bad request","message":"invalid_grant"}}"#,
        );
        assert_eq!(code, "invalid_grant");
        let (code, desc) = endpoint_error(StatusCode::BAD_GATEWAY, b"<html>oops</html>");
        assert_eq!(
            (code.as_str(), desc.as_str()),
            ("bad gateway", "<html>oops</html>")
        );
    }

    #[test]
    fn the_authorize_url_carries_the_app_and_the_state() {
        let app = OAuthApp {
            client_id: "cli 1".into(),
            client_secret: SecretValue::new("s"),
            authorize_url: "https://app.frontapp.com/oauth/authorize".into(),
            token_url: "https://app.frontapp.com/oauth/token".into(),
            redirect_uri: "http://127.0.0.1:8790/callback".into(),
        };
        assert_eq!(
            app.authorize_url("abc").unwrap(),
            "https://app.frontapp.com/oauth/authorize?response_type=code&client_id=cli+1&redirect_uri=http%3A%2F%2F127.0.0.1%3A8790%2Fcallback&state=abc"
        );
        assert!(!format!("{app:?}").contains("\"s\""));
    }
}
