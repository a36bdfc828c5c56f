//! The HTTP client of one Front connection (one company, one token).
//!
//! Every request is paced by the connection's shared [`RateLimiter`] and teaches it from the
//! response headers. Transient failures (5xx, timeouts, connection errors) are retried here
//! with exponential backoff and jitter; 429s pause the whole connection for `retry-after` and
//! are retried without counting as failures. What is left reaches the caller as a
//! [`FrontError`] that knows whether trying again later can help and, for 401/403, says what
//! the operator must fix.
//!
//! Lists are walked with a [`Pager`], which follows `_pagination.next` verbatim (Front puts
//! the whole query in it, on a company host such as `https://acme.api.frontapp.com`) and
//! exposes it so a caller can persist it as a resume point.

use std::collections::HashSet;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, HeaderValue, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tracing::Instrument;

use super::oauth::{OAuthError, OAuthSource};
use super::ratelimit::{RateLimiter, jitter_fraction};
use crate::secret::SecretValue;

/// Longest excerpt of a non-JSON error body kept in an error message.
const EXCERPT_CHARS: usize = 200;

/// Timeouts and retry budget of a [`FrontClient`].
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Time to establish the TCP and TLS connection.
    pub connect_timeout: Duration,
    /// Time for the whole request, body included.
    pub request_timeout: Duration,
    /// Retries after a 5xx, a timeout or a connection error, before giving up.
    pub max_retries: u32,
    /// Consecutive 429s tolerated for one request. Each already waited `retry-after`, so
    /// reaching this means our pacing is badly wrong (or another client hogs the company).
    pub max_throttled: u32,
    /// First backoff delay; doubled on each retry.
    pub backoff_base: Duration,
    /// Upper bound of one backoff delay.
    pub backoff_max: Duration,
    /// Redirects followed per request (Front answers 301 for merged conversations).
    pub max_redirects: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_retries: 5,
            max_throttled: 10,
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(60),
            max_redirects: 5,
        }
    }
}

/// Why a Front request failed. URLs in it never carry a query string.
#[derive(Debug, thiserror::Error)]
pub enum FrontError {
    /// 401 or 403: the token is wrong or lacks rights. Retrying will not help until an
    /// operator changes the token or its permissions.
    #[error("front connection \"{connection}\": {}", auth_advice(*status, message, url, *oauth, connection))]
    Auth {
        connection: String,
        status: u16,
        /// Front's `_error` title and message, e.g. `unauthenticated: invalid token`.
        message: String,
        url: String,
        /// The token came from an OAuth grant (a 401 was answered even after a refresh).
        oauth: bool,
    },
    /// No access token could be had for an OAuth connection: no grant yet, a refused
    /// grant, or the token endpoint failing.
    #[error("front connection \"{connection}\": {error}")]
    OAuth {
        connection: String,
        error: OAuthError,
    },
    /// Any other 4xx, with Front's `_error` body (or an excerpt of a non-JSON one).
    #[error("front connection \"{connection}\": GET {url}: {status} {title}: {message}")]
    Api {
        connection: String,
        url: String,
        status: u16,
        title: String,
        message: String,
    },
    /// A 2xx whose body is not the JSON we expect.
    #[error("front connection \"{connection}\": cannot decode the response of GET {url}: {error}")]
    Decode {
        connection: String,
        url: String,
        error: String,
    },
    /// Timeouts and connection errors, after every retry.
    #[error("front connection \"{connection}\": GET {url} failed {attempts} times: {error}")]
    Transport {
        connection: String,
        url: String,
        attempts: u32,
        error: String,
    },
    /// 5xx (or 408), after every retry.
    #[error(
        "front connection \"{connection}\": GET {url} answered {status} {attempts} times: {message}"
    )]
    Server {
        connection: String,
        url: String,
        status: u16,
        attempts: u32,
        message: String,
    },
    /// Still 429 after [`ClientOptions::max_throttled`] waits.
    #[error(
        "front connection \"{connection}\": GET {url} still rate limited after {attempts} waits"
    )]
    RateLimited {
        connection: String,
        url: String,
        attempts: u32,
    },
    /// `_pagination.next` pointed at a page already requested in this walk.
    #[error(
        "front connection \"{connection}\": pagination loops back to {url}, already requested in this walk"
    )]
    PaginationLoop { connection: String, url: String },
    /// More redirects than [`ClientOptions::max_redirects`], or a redirect loop.
    #[error("front connection \"{connection}\": too many redirects from GET {url}")]
    TooManyRedirects { connection: String, url: String },
    /// An absolute URL (a `next` link) outside api_base's domain: the token is not sent there.
    #[error(
        "front connection \"{connection}\": refusing to send the token to {url}, which is outside the domain of api_base"
    )]
    UntrustedUrl { connection: String, url: String },
    /// A malformed api_base, path or `next` link.
    #[error("front connection \"{connection}\": invalid url {url:?}: {error}")]
    InvalidUrl {
        connection: String,
        url: String,
        error: String,
    },
    /// The token cannot be sent as an HTTP header (a stray control character).
    #[error(
        "front connection \"{connection}\": the token contains characters not allowed in an http header"
    )]
    InvalidToken { connection: String },
    /// The HTTP client could not be built (TLS setup).
    #[error("front connection \"{connection}\": cannot build the http client: {error}")]
    Build { connection: String, error: String },
}

impl FrontError {
    /// Whether the same request may succeed later without anyone changing anything.
    pub fn is_retryable(&self) -> bool {
        match self {
            FrontError::Transport { .. }
            | FrontError::Server { .. }
            | FrontError::RateLimited { .. } => true,
            FrontError::OAuth { error, .. } => error.is_retryable(),
            _ => false,
        }
    }

    /// Whether the token was rejected (401) or lacks rights (403): stop the connection and
    /// tell the operator.
    pub fn is_auth(&self) -> bool {
        match self {
            FrontError::Auth { .. } => true,
            FrontError::OAuth { error, .. } => error.needs_operator(),
            _ => false,
        }
    }

    /// The OAuth problem behind this error, for an OAuth connection.
    pub fn oauth(&self) -> Option<&OAuthError> {
        match self {
            FrontError::OAuth { error, .. } => Some(error),
            _ => None,
        }
    }

    /// The HTTP status Front answered, when the error comes from one.
    pub fn status(&self) -> Option<u16> {
        match self {
            FrontError::Auth { status, .. }
            | FrontError::Api { status, .. }
            | FrontError::Server { status, .. } => Some(*status),
            FrontError::RateLimited { .. } => Some(429),
            _ => None,
        }
    }
}

fn auth_advice(status: u16, message: &str, url: &str, oauth: bool, connection: &str) -> String {
    if oauth && status == 403 {
        return format!(
            "forbidden ({status} {message}, GET {url}); oauth tokens only reach shared resources: \
             private inboxes need an api token with the private resources namespace"
        );
    }
    if oauth {
        return format!(
            "access token rejected even after a refresh ({status} {message}); run \
             `frontsync auth front {connection}` again"
        );
    }
    if status == 403 {
        format!(
            "forbidden ({status} {message}, GET {url}); the token lacks a permission or namespace: \
             private inboxes need a token with the private resources namespace"
        )
    } else {
        format!(
            "token rejected ({status} {message}); create a new API token in Front \
             (settings > developers > api tokens) and update the secret"
        )
    }
}

/// The client of one Front connection. Cheap to clone; clones share the connection pool and
/// the rate limiter.
#[derive(Clone)]
pub struct FrontClient {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    base: Url,
    auth: Auth,
    http: reqwest::Client,
    limiter: Arc<RateLimiter>,
    options: ClientOptions,
}

/// Where the `Authorization` header comes from.
enum Auth {
    /// An API token: `Bearer <token>`, marked sensitive so `http`'s Debug hides it.
    Fixed(HeaderValue),
    /// An OAuth grant, refreshed as needed.
    OAuth(Arc<OAuthSource>),
}

impl fmt::Debug for FrontClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrontClient")
            .field("name", &self.inner.name)
            .field("api_base", &self.inner.base.as_str())
            .field("token", &"***")
            .finish_non_exhaustive()
    }
}

impl FrontClient {
    /// A client with the default [`ClientOptions`]. `name` is the connection's name in the
    /// config, used in errors and logs.
    pub fn new(
        name: &str,
        api_base: &str,
        token: SecretValue,
        limiter: Arc<RateLimiter>,
    ) -> Result<FrontClient, FrontError> {
        FrontClient::with_options(name, api_base, token, limiter, ClientOptions::default())
    }

    /// A client with explicit timeouts and retry budget.
    pub fn with_options(
        name: &str,
        api_base: &str,
        token: SecretValue,
        limiter: Arc<RateLimiter>,
        options: ClientOptions,
    ) -> Result<FrontClient, FrontError> {
        let mut auth =
            HeaderValue::from_str(&format!("Bearer {}", token.expose())).map_err(|_| {
                FrontError::InvalidToken {
                    connection: name.to_owned(),
                }
            })?;
        auth.set_sensitive(true);
        FrontClient::build(name, api_base, Auth::Fixed(auth), limiter, options)
    }

    /// A client whose access tokens come from an OAuth grant (`auth = { oauth = ... }`).
    pub fn with_oauth(
        name: &str,
        api_base: &str,
        source: Arc<OAuthSource>,
        limiter: Arc<RateLimiter>,
        options: ClientOptions,
    ) -> Result<FrontClient, FrontError> {
        FrontClient::build(name, api_base, Auth::OAuth(source), limiter, options)
    }

    fn build(
        name: &str,
        api_base: &str,
        auth: Auth,
        limiter: Arc<RateLimiter>,
        options: ClientOptions,
    ) -> Result<FrontClient, FrontError> {
        let invalid = |error: String| FrontError::InvalidUrl {
            connection: name.to_owned(),
            url: api_base.to_owned(),
            error,
        };
        let mut base = Url::parse(api_base).map_err(|e| invalid(e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(invalid("api_base must be an http(s) url".into()));
        }
        base.set_query(None);
        base.set_fragment(None);

        // Redirects: reqwest keeps Authorization when the next hop has the same scheme, host
        // and port, and drops it otherwise. Front's 301 for a merged conversation stays on the
        // same host, so it is followed with the token (tested below).
        let http = reqwest::Client::builder()
            .connect_timeout(options.connect_timeout)
            .timeout(options.request_timeout)
            .user_agent(concat!("frontsync/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::limited(options.max_redirects))
            .build()
            .map_err(|e| FrontError::Build {
                connection: name.to_owned(),
                error: error_chain(&e),
            })?;

        Ok(FrontClient {
            inner: Arc::new(Inner {
                name: name.to_owned(),
                base,
                auth,
                http,
                limiter,
                options,
            }),
        })
    }

    /// The connection's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The OAuth token source, for an OAuth connection.
    pub fn oauth(&self) -> Option<&Arc<OAuthSource>> {
        match &self.inner.auth {
            Auth::OAuth(source) => Some(source),
            Auth::Fixed(_) => None,
        }
    }

    /// The limiter this client draws from (for `/metrics`).
    pub fn limiter(&self) -> &Arc<RateLimiter> {
        &self.inner.limiter
    }

    /// GET a path relative to api_base (`/me`, `conversations/cnv_1`), or an absolute URL such
    /// as a `_pagination.next`, which is requested verbatim. `query` pairs are appended in
    /// order, so a repeated key makes an array: `q[types]=inbound&q[types]=outbound`.
    pub async fn get<T: DeserializeOwned>(
        &self,
        path_or_url: &str,
        query: &[(&str, String)],
    ) -> Result<T, FrontError> {
        let url = with_query(self.resolve(path_or_url)?, query);
        self.fetch(&url).await
    }

    /// Walks a list endpoint page by page.
    pub fn pager<T: DeserializeOwned>(&self, path: &str, query: &[(&str, String)]) -> Pager<T> {
        Pager::new(
            self.clone(),
            self.resolve(path).map(|u| with_query(u, query)),
        )
    }

    /// Resumes a walk at a `next` URL saved from an earlier [`Pager`].
    pub fn resume<T: DeserializeOwned>(&self, next_url: &str) -> Pager<T> {
        Pager::new(self.clone(), self.resolve(next_url))
    }

    /// `GET /me`: the company the token belongs to.
    pub async fn me<T: DeserializeOwned>(&self) -> Result<T, FrontError> {
        self.fetch(&self.segments(&["me"])?).await
    }

    /// `GET /inboxes`, every page: the inboxes the token can see.
    pub async fn inboxes<T: DeserializeOwned>(&self) -> Result<Vec<T>, FrontError> {
        Pager::new(self.clone(), self.segments(&["inboxes"]))
            .collect_all()
            .await
    }

    /// `GET /events/{id}`: the full event behind a webhook preview.
    pub async fn event<T: DeserializeOwned>(&self, id: &str) -> Result<T, FrontError> {
        self.fetch(&self.segments(&["events", id])?).await
    }

    /// `GET /conversations/{id}` (follows the 301 of a merged conversation).
    pub async fn conversation<T: DeserializeOwned>(&self, id: &str) -> Result<T, FrontError> {
        self.fetch(&self.segments(&["conversations", id])?).await
    }

    /// `GET /conversations/{id}/messages`, newest first, `limit` (at most 100) per page.
    pub fn conversation_messages<T: DeserializeOwned>(&self, id: &str, limit: u32) -> Pager<T> {
        let query = [("limit", limit.clamp(1, 100).to_string())];
        let url = self
            .segments(&["conversations", id, "messages"])
            .map(|u| with_query(u, &query));
        Pager::new(self.clone(), url)
    }

    /// `GET /messages/{id}`.
    pub async fn message<T: DeserializeOwned>(&self, id: &str) -> Result<T, FrontError> {
        self.fetch(&self.segments(&["messages", id])?).await
    }

    /// `GET /events`, oldest first, 15 per page (Front's maximum), after `after` (Unix
    /// seconds, sent with 3 decimals), of the given types and inboxes (empty = all).
    pub fn events_page<T: DeserializeOwned>(
        &self,
        after: Option<f64>,
        types: &[&str],
        inboxes: &[String],
    ) -> Pager<T> {
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(after) = after.filter(|a| a.is_finite()) {
            query.push(("q[after]", format!("{after:.3}")));
        }
        query.extend(types.iter().map(|t| ("q[types]", (*t).to_owned())));
        query.extend(inboxes.iter().map(|i| ("q[inboxes]", i.clone())));
        // sort_by=created_at is the only accepted value; sent so sort_order is unambiguous.
        query.push(("sort_by", "created_at".to_owned()));
        query.push(("sort_order", "asc".to_owned()));
        query.push(("limit", "15".to_owned()));
        let url = self.segments(&["events"]).map(|u| with_query(u, &query));
        Pager::new(self.clone(), url)
    }

    /// api_base plus path segments, each percent-encoded: an id from a webhook can never
    /// escape its segment (`cnv_1/../x` stays one segment).
    fn segments(&self, segments: &[&str]) -> Result<Url, FrontError> {
        let mut url = self.inner.base.clone();
        url.path_segments_mut()
            .map_err(|()| self.invalid_url(self.inner.base.as_str(), "cannot be a base"))?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    fn resolve(&self, path_or_url: &str) -> Result<Url, FrontError> {
        match Url::parse(path_or_url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => {
                if self.trusts(&url) {
                    Ok(url)
                } else {
                    Err(FrontError::UntrustedUrl {
                        connection: self.inner.name.clone(),
                        url: shown(&url),
                    })
                }
            }
            Ok(_) => Err(self.invalid_url(path_or_url, "only http(s) urls are supported")),
            Err(_) => {
                // A path: appended to api_base's own path (which may be a prefix such as a
                // proxy's `/front`), keeping any query it carries.
                let base = self.inner.base.as_str().trim_end_matches('/');
                let joined = format!("{base}/{}", path_or_url.trim_start_matches('/'));
                Url::parse(&joined).map_err(|e| self.invalid_url(path_or_url, &e.to_string()))
            }
        }
    }

    /// Whether the token may be sent to an absolute URL: api_base's own origin, or an https
    /// host under api_base's parent domain (`api2.frontapp.com` -> `*.frontapp.com`, where
    /// Front's company hosts such as `acme.api.frontapp.com` live).
    fn trusts(&self, url: &Url) -> bool {
        let base = &self.inner.base;
        if url.origin() == base.origin() {
            return true;
        }
        let (Some(host), Some(base_host)) = (url.domain(), base.domain()) else {
            return false;
        };
        let Some((_, parent)) = base_host.split_once('.') else {
            return false;
        };
        url.scheme() == "https"
            && parent.contains('.')
            && (host == parent || host.ends_with(&format!(".{parent}")))
    }

    fn invalid_url(&self, url: &str, error: &str) -> FrontError {
        FrontError::InvalidUrl {
            connection: self.inner.name.clone(),
            url: url.split('?').next().unwrap_or_default().to_owned(),
            error: error.to_owned(),
        }
    }

    /// One logical GET: paced, retried, decoded.
    async fn fetch<T: DeserializeOwned>(&self, url: &Url) -> Result<T, FrontError> {
        let span = tracing::info_span!("front", connection = %self.inner.name);
        self.fetch_inner(url).instrument(span).await
    }

    async fn fetch_inner<T: DeserializeOwned>(&self, url: &Url) -> Result<T, FrontError> {
        let inner = &*self.inner;
        let options = &inner.options;
        let shown_url = shown(url);
        let connection = || inner.name.clone();
        let mut failures = 0u32;
        let mut throttled = 0u32;
        // An OAuth token is refreshed at most once per request after a 401.
        let mut reauthorized = false;
        loop {
            // Before the rate limiter: a connection without a usable grant spends nothing.
            let (authorization, generation) = match &inner.auth {
                Auth::Fixed(header) => (header.clone(), 0),
                Auth::OAuth(source) => match source.bearer().await {
                    Ok(bearer) => (bearer.header, bearer.generation),
                    Err(error) => {
                        return Err(FrontError::OAuth {
                            connection: connection(),
                            error,
                        });
                    }
                },
            };
            inner.limiter.acquire().await;
            let sent = inner
                .http
                .get(url.clone())
                .header(AUTHORIZATION, authorization)
                .header(ACCEPT, "application/json")
                .send()
                .await;
            let response = match sent {
                Ok(response) => response,
                Err(e) if e.is_redirect() => {
                    return Err(FrontError::TooManyRedirects {
                        connection: connection(),
                        url: shown_url,
                    });
                }
                Err(e) if e.is_builder() => {
                    return Err(self.invalid_url(url.as_str(), &error_chain(&e)));
                }
                Err(e) => {
                    failures += 1;
                    let error = error_chain(&e.without_url());
                    if failures > options.max_retries {
                        return Err(FrontError::Transport {
                            connection: connection(),
                            url: shown_url,
                            attempts: failures,
                            error,
                        });
                    }
                    self.backoff(failures, None, &shown_url, &error).await;
                    continue;
                }
            };

            inner.limiter.observe(response.headers());
            let status = response.status();
            inner.limiter.record_status(status.as_u16());

            if status == StatusCode::TOO_MANY_REQUESTS {
                throttled += 1;
                let headers = response.headers();
                let tier = headers.get("x-front-tier").and_then(|v| v.to_str().ok());
                inner.limiter.on_429(seconds(headers, RETRY_AFTER), tier);
                if throttled >= options.max_throttled {
                    return Err(FrontError::RateLimited {
                        connection: connection(),
                        url: shown_url,
                        attempts: throttled,
                    });
                }
                continue;
            }
            throttled = 0;

            if status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT {
                failures += 1;
                let retry_after = seconds(response.headers(), RETRY_AFTER);
                let body = response.bytes().await.unwrap_or_default();
                let message = ErrorDetail::parse(status, &body).message;
                if failures > options.max_retries {
                    return Err(FrontError::Server {
                        connection: connection(),
                        url: shown_url,
                        status: status.as_u16(),
                        attempts: failures,
                        message,
                    });
                }
                let error = format!("{} {message}", status.as_u16());
                self.backoff(failures, retry_after, &shown_url, &error)
                    .await;
                continue;
            }

            let body = match response.bytes().await {
                Ok(body) => body,
                // The body timed out or the connection broke halfway: as transient as a
                // failed connect.
                Err(e) => {
                    failures += 1;
                    let error = error_chain(&e.without_url());
                    if failures > options.max_retries {
                        return Err(FrontError::Transport {
                            connection: connection(),
                            url: shown_url,
                            attempts: failures,
                            error,
                        });
                    }
                    self.backoff(failures, None, &shown_url, &error).await;
                    continue;
                }
            };

            if status.is_success() {
                return serde_json::from_slice(&body).map_err(|e| FrontError::Decode {
                    connection: connection(),
                    url: shown_url,
                    error: e.to_string(),
                });
            }

            let detail = ErrorDetail::parse(status, &body);
            if status == StatusCode::UNAUTHORIZED
                && !reauthorized
                && let Auth::OAuth(source) = &inner.auth
            {
                // Expired early or revoked: one refresh (or a newer token another request
                // already got), then the same request again.
                reauthorized = true;
                tracing::info!(url = %shown_url, "front rejected the oauth access token (401); refreshing it");
                if let Err(error) = source.rejected(generation).await {
                    return Err(FrontError::OAuth {
                        connection: connection(),
                        error,
                    });
                }
                continue;
            }
            if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
                return Err(FrontError::Auth {
                    connection: connection(),
                    status: status.as_u16(),
                    message: format!("{}: {}", detail.title, detail.message).to_lowercase(),
                    url: shown_url,
                    oauth: matches!(inner.auth, Auth::OAuth(_)),
                });
            }
            return Err(FrontError::Api {
                connection: connection(),
                url: shown_url,
                status: status.as_u16(),
                title: detail.title,
                message: detail.message,
            });
        }
    }

    /// Sleeps before retry number `attempt` (1-based): 0.5 s, 1 s, 2 s... up to the cap, plus
    /// up to 25% jitter, and at least what a `retry-after` asked for.
    async fn backoff(&self, attempt: u32, retry_after: Option<f64>, url: &str, error: &str) {
        let options = &self.inner.options;
        let exponent = attempt.saturating_sub(1).min(20);
        let nominal = options
            .backoff_base
            .saturating_mul(1 << exponent)
            .min(options.backoff_max);
        let mut delay = nominal.mul_f64(1.0 + 0.25 * jitter_fraction());
        if let Some(secs) = retry_after {
            delay = delay.max(Duration::from_secs_f64(secs));
        }
        let delay = delay.min(options.backoff_max);
        tracing::warn!(
            url,
            error,
            attempt,
            max_retries = options.max_retries,
            delay_secs = delay.as_secs_f64(),
            "front request failed; retrying"
        );
        tokio::time::sleep(delay).await;
    }
}

/// Walks one paginated list. Each [`Pager::next_page`] returns a page and the `next` URL
/// (persist it to resume with [`FrontClient::resume`]); `None` once `next` was null.
///
/// After a failed request the same page is tried again by the next call, so a caller may
/// retry a retryable error without restarting the walk.
pub struct Pager<T> {
    client: FrontClient,
    next: Option<Result<Url, FrontError>>,
    requested: HashSet<String>,
    _items: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for Pager<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pager")
            .field("connection", &self.client.inner.name)
            .field("next", &self.next_url())
            .field("pages", &self.requested.len())
            .finish()
    }
}

impl<T> Pager<T> {
    /// The URL the next call will request, if any: the resume point.
    pub fn next_url(&self) -> Option<&str> {
        match &self.next {
            Some(Ok(url)) => Some(url.as_str()),
            _ => None,
        }
    }
}

impl<T: DeserializeOwned> Pager<T> {
    fn new(client: FrontClient, first: Result<Url, FrontError>) -> Pager<T> {
        Pager {
            client,
            next: Some(first),
            requested: HashSet::new(),
            _items: PhantomData,
        }
    }

    /// The next page's items and the URL of the page after it, or `None` when the walk is
    /// over.
    pub async fn next_page(&mut self) -> Result<Option<(Vec<T>, Option<String>)>, FrontError> {
        let url = match self.next.take() {
            None => return Ok(None),
            Some(Err(e)) => return Err(e),
            Some(Ok(url)) => url,
        };
        // Checked when the page is about to be requested rather than when its link arrived,
        // so the caller still got the items of the page that carried the looping link.
        if self.requested.contains(url.as_str()) {
            return Err(FrontError::PaginationLoop {
                connection: self.client.inner.name.clone(),
                url: shown(&url),
            });
        }
        let envelope: Envelope<T> = match self.client.fetch(&url).await {
            Ok(envelope) => envelope,
            Err(e) => {
                self.next = Some(Ok(url));
                return Err(e);
            }
        };
        self.requested.insert(url.into());
        let next = envelope
            .pagination
            .and_then(|p| p.next)
            .filter(|n| !n.trim().is_empty());
        self.next = next.as_deref().map(|n| self.client.resolve(n));
        Ok(Some((envelope.results, next)))
    }

    /// Every remaining item, page after page.
    pub async fn collect_all(mut self) -> Result<Vec<T>, FrontError> {
        let mut all = Vec::new();
        while let Some((items, _)) = self.next_page().await? {
            all.extend(items);
        }
        Ok(all)
    }
}

/// Front's collection envelope; only what pagination needs.
#[derive(Deserialize)]
struct Envelope<T> {
    #[serde(rename = "_results")]
    results: Vec<T>,
    /// Absent on some lists (`/inboxes`), null on the last page.
    #[serde(rename = "_pagination", default)]
    pagination: Option<PaginationLinks>,
}

#[derive(Deserialize)]
struct PaginationLinks {
    #[serde(default)]
    next: Option<String>,
}

/// Front's `{"_error": {status, title, message, details}}`.
#[derive(Deserialize)]
struct ErrorEnvelope {
    #[serde(rename = "_error")]
    error: ErrorBody,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    details: Option<Vec<serde_json::Value>>,
}

/// Title and message of an error response, from `_error` or a bounded excerpt of the body.
struct ErrorDetail {
    title: String,
    message: String,
}

impl ErrorDetail {
    fn parse(status: StatusCode, body: &[u8]) -> ErrorDetail {
        let reason = status.canonical_reason().unwrap_or("error").to_lowercase();
        if let Ok(ErrorEnvelope { error }) = serde_json::from_slice::<ErrorEnvelope>(body) {
            let mut message = error.message.unwrap_or_default();
            let details: Vec<String> = error
                .details
                .unwrap_or_default()
                .into_iter()
                .map(|d| match d {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                })
                .collect();
            if !details.is_empty() {
                message = format!("{message} ({})", details.join("; "));
            }
            return ErrorDetail {
                title: error.title.map_or(reason, |t| t.to_lowercase()),
                message: excerpt(&message),
            };
        }
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        ErrorDetail {
            title: reason,
            message: if text.is_empty() {
                "empty body".to_owned()
            } else {
                excerpt(text)
            },
        }
    }
}

fn excerpt(text: &str) -> String {
    let mut chars = text.chars();
    let mut out: String = chars.by_ref().take(EXCERPT_CHARS).collect();
    if chars.next().is_some() {
        out.push_str("...");
    }
    out.replace(['\n', '\r'], " ")
}

fn with_query(mut url: Url, query: &[(&str, String)]) -> Url {
    if !query.is_empty() {
        let mut pairs = url.query_pairs_mut();
        for (key, value) in query {
            pairs.append_pair(key, value);
        }
    }
    url
}

/// A URL fit for errors and logs: no query (page tokens are long and say nothing).
fn shown(url: &Url) -> String {
    let mut url = url.clone();
    url.set_query(None);
    url.set_fragment(None);
    url.into()
}

/// A header holding (possibly fractional) seconds. HTTP dates are ignored: Front sends numbers.
fn seconds(headers: &HeaderMap, name: impl reqwest::header::AsHeaderName) -> Option<f64> {
    let secs = headers
        .get(name)?
        .to_str()
        .ok()?
        .trim()
        .parse::<f64>()
        .ok()?;
    (secs.is_finite() && secs >= 0.0).then_some(secs)
}

/// An error and its causes on one line; reqwest's own Display is only the outermost layer
/// ("error sending request"), the useful part ("connection refused") is in the sources.
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::sync::Mutex;

    use bytes::Bytes;
    use http_body_util::Full;
    use hyper::body::Incoming;
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper::{Request, Response};
    use hyper_util::rt::TokioIo;
    use tokio::net::TcpListener;

    const TOKEN: &str = "tok_very_secret_42";

    /// What the fake Front saw of one request.
    #[derive(Debug, Clone)]
    struct Seen {
        path_and_query: String,
        authorization: Option<String>,
        user_agent: Option<String>,
    }

    struct Reply {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: String,
        delay: Duration,
    }

    impl Reply {
        fn json(status: u16, body: impl Into<String>) -> Reply {
            Reply {
                status,
                headers: vec![("content-type", "application/json".into())],
                body: body.into(),
                delay: Duration::ZERO,
            }
        }

        fn header(mut self, name: &'static str, value: impl Into<String>) -> Reply {
            self.headers.push((name, value.into()));
            self
        }

        fn delayed(mut self, delay: Duration) -> Reply {
            self.delay = delay;
            self
        }
    }

    type Handler = dyn Fn(&Seen, usize, &str) -> Reply + Send + Sync;

    /// A loopback HTTP/1 server answering with `handler(request, index, base_url)`.
    struct FakeFront {
        base: String,
        seen: Arc<Mutex<Vec<Seen>>>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Drop for FakeFront {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    impl FakeFront {
        async fn start(
            handler: impl Fn(&Seen, usize, &str) -> Reply + Send + Sync + 'static,
        ) -> FakeFront {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr: SocketAddr = listener.local_addr().unwrap();
            let base = format!("http://{addr}");
            let seen = Arc::new(Mutex::new(Vec::new()));
            let handler: Arc<Handler> = Arc::new(handler);
            let task = {
                let (seen, base) = (Arc::clone(&seen), base.clone());
                tokio::spawn(async move {
                    while let Ok((stream, _)) = listener.accept().await {
                        let (seen, base, handler) =
                            (Arc::clone(&seen), base.clone(), Arc::clone(&handler));
                        let service = service_fn(move |req: Request<Incoming>| {
                            let (seen, base, handler) =
                                (Arc::clone(&seen), base.clone(), Arc::clone(&handler));
                            async move {
                                let header = |name: &str| {
                                    req.headers()
                                        .get(name)
                                        .and_then(|v| v.to_str().ok())
                                        .map(str::to_owned)
                                };
                                let request = Seen {
                                    path_and_query: req
                                        .uri()
                                        .path_and_query()
                                        .map(|p| p.as_str().to_owned())
                                        .unwrap_or_default(),
                                    authorization: header("authorization"),
                                    user_agent: header("user-agent"),
                                };
                                let index = {
                                    let mut seen = seen.lock().unwrap();
                                    seen.push(request.clone());
                                    seen.len() - 1
                                };
                                let reply = handler(&request, index, &base);
                                tokio::time::sleep(reply.delay).await;
                                let mut response = Response::builder().status(reply.status);
                                for (name, value) in reply.headers {
                                    response = response.header(name, value);
                                }
                                Ok::<_, Infallible>(
                                    response.body(Full::new(Bytes::from(reply.body))).unwrap(),
                                )
                            }
                        });
                        tokio::spawn(async move {
                            let _ = http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        });
                    }
                })
            };
            FakeFront { base, seen, task }
        }

        fn seen(&self) -> Vec<Seen> {
            self.seen.lock().unwrap().clone()
        }
    }

    fn quick_options() -> ClientOptions {
        ClientOptions {
            request_timeout: Duration::from_secs(5),
            max_retries: 2,
            backoff_base: Duration::from_millis(10),
            backoff_max: Duration::from_millis(50),
            ..ClientOptions::default()
        }
    }

    fn client_with(base: &str, options: ClientOptions) -> FrontClient {
        FrontClient::with_options(
            "acme",
            base,
            SecretValue::new(TOKEN),
            RateLimiter::new(6000),
            options,
        )
        .unwrap()
    }

    fn client(fake: &FakeFront) -> FrontClient {
        client_with(&fake.base, quick_options())
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Item {
        id: String,
    }

    fn page(ids: &[&str], next: Option<&str>) -> String {
        let results: Vec<_> = ids
            .iter()
            .map(|id| serde_json::json!({ "id": id }))
            .collect();
        serde_json::json!({ "_pagination": { "next": next }, "_results": results }).to_string()
    }

    fn ids(items: &[Item]) -> Vec<&str> {
        items.iter().map(|i| i.id.as_str()).collect()
    }

    #[tokio::test]
    async fn sends_bearer_token_and_user_agent() {
        let fake =
            FakeFront::start(|_, _, _| Reply::json(200, r#"{"id":"cmp_1","name":"Acme"}"#)).await;
        let client = client(&fake);
        let me: Item = client.me().await.unwrap();
        assert_eq!(me.id, "cmp_1");
        let seen = fake.seen();
        assert_eq!(seen[0].path_and_query, "/me");
        assert_eq!(
            seen[0].authorization.as_deref(),
            Some("Bearer tok_very_secret_42")
        );
        assert!(
            seen[0]
                .user_agent
                .as_deref()
                .unwrap()
                .starts_with("frontsync/")
        );
        assert_eq!(client.limiter().stats().requests_total, 1);
        assert!(!format!("{client:?}").contains(TOKEN));
    }

    #[tokio::test]
    async fn events_query_repeats_keys_and_follows_absolute_and_relative_next() {
        let fake = FakeFront::start(|seen, _, base| {
            let p = &seen.path_and_query;
            if p.contains("page_token=p2") {
                Reply::json(200, page(&["evt_3"], Some("/events?page_token=p3")))
            } else if p.contains("page_token=p3") {
                Reply::json(200, page(&["evt_4"], None))
            } else {
                let next = format!("{base}/events?page_token=p2");
                Reply::json(200, page(&["evt_1", "evt_2"], Some(&next)))
            }
        })
        .await;
        let client = client(&fake);
        let inboxes = vec!["inb_1".to_owned(), "inb_2".to_owned()];
        let mut pager =
            client.events_page::<Item>(Some(1_700_000_000.5), &["inbound", "outbound"], &inboxes);

        let (items, next) = pager.next_page().await.unwrap().unwrap();
        assert_eq!(ids(&items), ["evt_1", "evt_2"]);
        let next = next.unwrap();
        assert!(next.ends_with("/events?page_token=p2"), "{next}");
        assert_eq!(pager.next_url(), Some(next.as_str()));

        let (items, next) = pager.next_page().await.unwrap().unwrap();
        assert_eq!(ids(&items), ["evt_3"]);
        assert_eq!(next.as_deref(), Some("/events?page_token=p3"));
        let (items, next) = pager.next_page().await.unwrap().unwrap();
        assert_eq!((ids(&items), next), (vec!["evt_4"], None));
        assert!(pager.next_page().await.unwrap().is_none());

        let seen = fake.seen();
        assert_eq!(seen.len(), 3);
        assert_eq!(
            seen[0].path_and_query,
            "/events?q%5Bafter%5D=1700000000.500&q%5Btypes%5D=inbound&q%5Btypes%5D=outbound\
             &q%5Binboxes%5D=inb_1&q%5Binboxes%5D=inb_2&sort_by=created_at&sort_order=asc&limit=15"
        );
        assert_eq!(seen[1].path_and_query, "/events?page_token=p2");
        assert_eq!(seen[2].path_and_query, "/events?page_token=p3");
        assert!(seen.iter().all(|s| s.authorization.is_some()));
    }

    #[tokio::test]
    async fn resume_starts_at_a_saved_next_url() {
        let fake = FakeFront::start(|_, _, _| Reply::json(200, page(&["evt_9"], None))).await;
        let client = client(&fake);
        let saved = format!("{}/events?page_token=zz", fake.base);
        let all = client.resume::<Item>(&saved).collect_all().await.unwrap();
        assert_eq!(ids(&all), ["evt_9"]);
        assert_eq!(fake.seen()[0].path_and_query, "/events?page_token=zz");
    }

    #[tokio::test]
    async fn pagination_loop_is_detected_after_yielding_the_page() {
        // Like Prism's static mock: `next` keeps pointing at the same page.
        let fake = FakeFront::start(|_, _, base| {
            let next = format!("{base}/events?page_token=same");
            Reply::json(200, page(&["evt_1"], Some(&next)))
        })
        .await;
        let client = client(&fake);
        let mut pager = client.pager::<Item>("/events", &[]);
        assert!(pager.next_page().await.unwrap().is_some());
        assert!(pager.next_page().await.unwrap().is_some());
        let err = pager.next_page().await.unwrap_err();
        assert!(matches!(err, FrontError::PaginationLoop { .. }), "{err}");
        assert!(!err.is_retryable());
        assert!(err.to_string().contains("pagination loops back to"));
        assert_eq!(fake.seen().len(), 2);
    }

    #[tokio::test]
    async fn next_outside_api_base_domain_is_refused() {
        let fake = FakeFront::start(|_, _, _| {
            Reply::json(
                200,
                page(&["evt_1"], Some("https://evil.example/events?page_token=x")),
            )
        })
        .await;
        let client = client(&fake);
        let mut pager = client.pager::<Item>("events", &[]);
        assert!(pager.next_page().await.unwrap().is_some());
        let err = pager.next_page().await.unwrap_err();
        assert!(matches!(err, FrontError::UntrustedUrl { .. }), "{err}");
        assert_eq!(fake.seen().len(), 1);
    }

    #[test]
    fn company_hosts_under_front_domain_are_trusted() {
        let client = client_with("https://api2.frontapp.com", quick_options());
        let trusts = |u: &str| client.trusts(&Url::parse(u).unwrap());
        assert!(trusts("https://api2.frontapp.com/events?page_token=1"));
        assert!(trusts("https://acme.api.frontapp.com/events?page_token=1"));
        assert!(!trusts("http://acme.api.frontapp.com/events"));
        assert!(!trusts("https://frontapp.com.evil.example/events"));
        assert!(!trusts("https://evilfrontapp.com/events"));
        assert!(!trusts("https://127.0.0.1/events"));
    }

    #[tokio::test]
    async fn too_many_requests_waits_retry_after_then_succeeds() {
        let fake = FakeFront::start(|_, index, _| {
            if index == 0 {
                Reply::json(
                    429,
                    r#"{"_error":{"status":429,"title":"Too many requests","message":"Rate limit exceeded"}}"#,
                )
                .header("retry-after", "0.5")
                .header("x-front-tier", "tier-2")
                .header("x-ratelimit-remaining", "12")
            } else {
                Reply::json(200, r#"{"id":"cnv_1"}"#)
            }
        })
        .await;
        let client = client(&fake);
        let start = std::time::Instant::now();
        let conversation: Item = client.conversation("cnv_1").await.unwrap();
        assert_eq!(conversation.id, "cnv_1");
        // 0.5 s is raised to the 1 s floor, and the limiter (not a local sleep) enforced it.
        assert!(
            start.elapsed() >= Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
        let stats = client.limiter().stats();
        assert_eq!((stats.throttled_total, stats.requests_total), (1, 2));
        assert_eq!(fake.seen().len(), 2);
    }

    #[tokio::test]
    async fn server_error_is_retried_with_backoff() {
        let fake = FakeFront::start(|_, index, _| {
            if index == 0 {
                Reply::json(502, "<html>bad gateway</html>")
            } else {
                Reply::json(200, r#"{"id":"msg_1"}"#)
            }
        })
        .await;
        let message: Item = client(&fake).message("msg_1").await.unwrap();
        assert_eq!(message.id, "msg_1");
        assert_eq!(fake.seen().len(), 2);
    }

    #[tokio::test]
    async fn persistent_server_error_gives_up_retryable() {
        let fake = FakeFront::start(|_, _, _| Reply::json(503, "")).await;
        let err = client(&fake).me::<Item>().await.unwrap_err();
        assert!(
            matches!(
                err,
                FrontError::Server {
                    status: 503,
                    attempts: 3,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.is_retryable());
        assert_eq!(fake.seen().len(), 3, "one try and max_retries = 2");
    }

    #[tokio::test]
    async fn unauthorized_names_the_fix_and_hides_the_token() {
        let fake = FakeFront::start(|_, _, _| {
            Reply::json(
                401,
                r#"{"_error":{"status":401,"title":"Unauthenticated","message":"Invalid token"}}"#,
            )
        })
        .await;
        let err = client(&fake).me::<Item>().await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "front connection \"acme\": token rejected (401 unauthenticated: invalid token); \
             create a new API token in Front (settings > developers > api tokens) and update the secret"
        );
        assert!(err.is_auth() && !err.is_retryable());
        assert_eq!(err.status(), Some(401));
        assert!(!format!("{err} {err:?}").contains(TOKEN));
        assert_eq!(fake.seen().len(), 1, "auth errors are not retried");
    }

    #[tokio::test]
    async fn forbidden_points_at_the_private_resources_namespace() {
        let fake = FakeFront::start(|_, _, _| {
            Reply::json(
                403,
                r#"{"_error":{"status":403,"title":"Forbidden","message":"Missing scope"}}"#,
            )
        })
        .await;
        let err = client(&fake).inboxes::<Item>().await.unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("front connection \"acme\": forbidden (403 forbidden: missing scope"),
            "{text}"
        );
        assert!(text.ends_with(
            "the token lacks a permission or namespace: private inboxes need a token with the private resources namespace"
        ));
        assert!(err.is_auth() && !err.is_retryable());
    }

    #[tokio::test]
    async fn not_found_surfaces_front_error_body() {
        let fake = FakeFront::start(|seen, _, _| {
            if seen.path_and_query.contains("cnv_gone") {
                Reply::json(
                    404,
                    r#"{"_error":{"status":404,"title":"Not found","message":"Conversation not found","details":["cnv_gone"]}}"#,
                )
            } else {
                Reply::json(404, "<html>\nnothing here\n</html>".repeat(50))
            }
        })
        .await;
        let client = client(&fake);
        let err = client.conversation::<Item>("cnv_gone").await.unwrap_err();
        match &err {
            FrontError::Api {
                status,
                title,
                message,
                ..
            } => {
                assert_eq!(*status, 404);
                assert_eq!(title, "not found");
                assert_eq!(message, "Conversation not found (cnv_gone)");
            }
            other => panic!("{other:?}"),
        }
        assert!(!err.is_retryable());
        assert!(
            err.to_string()
                .contains("/conversations/cnv_gone: 404 not found")
        );

        let err = client.event::<Item>("evt_x").await.unwrap_err();
        let FrontError::Api { message, .. } = &err else {
            panic!("{err:?}")
        };
        assert!(message.len() <= EXCERPT_CHARS + 3 && message.ends_with("..."));
        assert!(!message.contains('\n'));
        assert_eq!(fake.seen().len(), 2);
    }

    #[tokio::test]
    async fn merged_conversation_redirect_keeps_the_token() {
        let fake = FakeFront::start(|seen, _, _| {
            if seen.path_and_query == "/conversations/cnv_old" {
                Reply::json(301, "").header("location", "/conversations/cnv_new")
            } else if seen.authorization.as_deref() == Some("Bearer tok_very_secret_42") {
                Reply::json(200, r#"{"id":"cnv_new"}"#)
            } else {
                Reply::json(
                    401,
                    r#"{"_error":{"status":401,"title":"Unauthenticated","message":"no token"}}"#,
                )
            }
        })
        .await;
        let conversation: Item = client(&fake).conversation("cnv_old").await.unwrap();
        assert_eq!(conversation.id, "cnv_new");
        let seen = fake.seen();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[1].path_and_query, "/conversations/cnv_new");
    }

    #[tokio::test]
    async fn timeout_is_retried_and_then_retryable() {
        let fake = FakeFront::start(|seen, index, _| {
            let reply = Reply::json(200, r#"{"id":"cmp_1"}"#);
            if (seen.path_and_query == "/me" && index == 0)
                || seen.path_and_query.starts_with("/slow")
            {
                reply.delayed(Duration::from_millis(600))
            } else {
                reply
            }
        })
        .await;
        let options = ClientOptions {
            request_timeout: Duration::from_millis(150),
            ..quick_options()
        };
        let client = client_with(&fake.base, options);
        let me: Item = client.me().await.unwrap();
        assert_eq!(me.id, "cmp_1");

        let err = client.get::<Item>("/slow", &[]).await.unwrap_err();
        assert!(
            matches!(err, FrontError::Transport { attempts: 3, .. }),
            "{err}"
        );
        assert!(err.is_retryable());
    }

    #[tokio::test]
    async fn connection_refused_is_retryable() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let err = client_with(&base, quick_options())
            .me::<Item>()
            .await
            .unwrap_err();
        assert!(matches!(err, FrontError::Transport { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains(&format!("GET {base}/me failed 3 times: ")),
            "{text}"
        );
        assert!(
            text.contains("onnect"),
            "the cause is in the message: {text}"
        );
        assert!(err.is_retryable());
    }

    #[tokio::test]
    async fn bad_json_is_a_decode_error_without_query() {
        let fake = FakeFront::start(|_, _, _| Reply::json(200, "{not json")).await;
        let client = client(&fake);
        let err = client
            .get::<Item>("/events", &[("page_token", "abc".to_owned())])
            .await
            .unwrap_err();
        let FrontError::Decode { url, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(url, &format!("{}/events", fake.base));
        assert!(!err.is_retryable());
    }

    #[tokio::test]
    async fn ids_stay_inside_their_path_segment() {
        let fake = FakeFront::start(|_, _, _| Reply::json(200, r#"{"id":"x"}"#)).await;
        let _: Item = client(&fake).conversation("cnv_1/../x?y").await.unwrap();
        assert_eq!(
            fake.seen()[0].path_and_query,
            "/conversations/cnv_1%2F..%2Fx%3Fy"
        );
    }

    #[tokio::test]
    async fn inboxes_without_pagination_and_messages_with_limit() {
        let fake = FakeFront::start(|seen, _, _| {
            if seen.path_and_query == "/inboxes" {
                Reply::json(
                    200,
                    r#"{"_links":{},"_results":[{"id":"inb_1"},{"id":"inb_2"}]}"#,
                )
            } else {
                Reply::json(200, page(&["msg_2", "msg_1"], None))
            }
        })
        .await;
        let client = client(&fake);
        let inboxes: Vec<Item> = client.inboxes().await.unwrap();
        assert_eq!(ids(&inboxes), ["inb_1", "inb_2"]);
        let messages: Vec<Item> = client
            .conversation_messages("cnv_1", 500)
            .collect_all()
            .await
            .unwrap();
        assert_eq!(ids(&messages), ["msg_2", "msg_1"]);
        assert_eq!(
            fake.seen()[1].path_and_query,
            "/conversations/cnv_1/messages?limit=100"
        );
    }

    #[tokio::test]
    async fn rate_headers_teach_the_limiter() {
        let fake = FakeFront::start(|_, _, _| {
            Reply::json(200, r#"{"id":"cmp_1"}"#)
                .header("x-ratelimit-limit", "50")
                .header("x-ratelimit-remaining", "49")
                .header("x-ratelimit-reset", "1764000060")
        })
        .await;
        let client = client(&fake);
        let _: Item = client.me().await.unwrap();
        let stats = client.limiter().stats();
        assert_eq!((stats.limit, stats.remaining), (50, Some(49)));
    }

    #[tokio::test]
    async fn api_base_with_a_path_prefix_is_kept() {
        let fake = FakeFront::start(|_, _, _| Reply::json(200, r#"{"id":"x"}"#)).await;
        let client = client_with(&format!("{}/front/", fake.base), quick_options());
        let _: Item = client.get("me", &[]).await.unwrap();
        let _: Item = client.event("evt_1").await.unwrap();
        let seen = fake.seen();
        assert_eq!(seen[0].path_and_query, "/front/me");
        assert_eq!(seen[1].path_and_query, "/front/events/evt_1");
    }

    #[test]
    fn bad_api_base_and_token_are_rejected_without_echoing_the_token() {
        let limiter = RateLimiter::new(50);
        let err = FrontClient::new("acme", "ftp://x", SecretValue::new("t"), limiter.clone())
            .unwrap_err();
        assert!(matches!(err, FrontError::InvalidUrl { .. }), "{err}");
        let err = FrontClient::new(
            "acme",
            "https://api2.frontapp.com",
            SecretValue::new("bad\ntoken"),
            limiter,
        )
        .unwrap_err();
        assert!(matches!(err, FrontError::InvalidToken { .. }));
        assert!(!format!("{err} {err:?}").contains("bad"));
    }
}
