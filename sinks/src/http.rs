//! The generic `http` sink: POSTs each Highlight (or a batch of them) as JSON to an HTTP
//! endpoint, and classifies the answer for the daemon's outbox loop.
//!
//! # Requests
//! - **One at a time** (`batch_size = 1`, the default): `POST {endpoint}` with the
//!   Highlight's JSON bytes exactly as they came from the outbox as the body.
//! - **Batches** (`batch_size > 1`): `POST {batch_endpoint}` with
//!   `{"highlights":[<json>,<json>,...]}`, built by concatenating the stored bytes (nothing
//!   is re-serialized), items in outbox order, at most `batch_size` per request.
//! - Every request carries `Content-Type: application/json` (unless a configured header
//!   sets its own), `User-Agent: frontsync/<version>`, the configured headers and, when set,
//!   `Authorization: Bearer <token>`.
//! - **Idempotency** (`idempotency_header`): a single request carries
//!   `Idempotency-Key: {id}:{revision}`. A batch request carries the lowercase hex SHA-256 of
//!   its items' `{id}:{revision}` keys joined by `\n`, so a retried identical batch carries
//!   the same key and a different batch never does. A batch cut differently after a
//!   restart gets another key, so a receiver that deduplicates batches item by item should
//!   use each Highlight's own `id` and `revision`, which are in the body.
//! - **Signing** (`signing_secret`): `X-Frontsync-Timestamp: <unix seconds>` and
//!   `X-Frontsync-Signature: sha256=<hex>`, where `<hex>` is the lowercase hex
//!   HMAC-SHA256, keyed with the secret's UTF-8 bytes, of `{timestamp}.{raw body}`. A receiver
//!   recomputes it over the exact bytes it received, compares in constant time, and should
//!   refuse timestamps more than a few minutes from its clock (that is what makes a replayed
//!   request detectable). A fresh timestamp is signed for every attempt.
//!
//! # Answers
//! - `2xx` and `409 Conflict` (the receiver already holds it) mean delivered.
//! - `408`, `429`, `5xx`, timeouts and connection errors are [`SinkErrorKind::Retryable`].
//!   `Retry-After` (delta-seconds or an HTTP date, any of the three formats of RFC 9110) is
//!   passed on as `retry_after`, capped at [`MAX_RETRY_AFTER`]; a zero or past delay is
//!   dropped so the daemon's own backoff applies and a receiver cannot make it spin.
//! - Redirects are never followed (a `302` turned into a `GET` would look like success
//!   while creating nothing, and would carry the token elsewhere): a `3xx`, like any other
//!   unexpected status, is retryable, so nothing is lost while the endpoint is fixed.
//! - Any other `4xx` is [`SinkErrorKind::Rejected`], with the status and the first
//!   [`BODY_EXCERPT_BYTES`] of the body as lossy UTF-8.
//!
//! # Guarantees
//! - **In order, stopping at the first failure.** Items go out in the order given and the
//!   first failure ends the call; [`SinkError::delivered`] counts exactly the items the
//!   receiver confirmed before it, so the daemon never skips or reorders one.
//! - **A bad item in a batch is isolated.** When a batch request gets a non-retryable
//!   `4xx`, the same call sends that batch's items one by one to `endpoint`, so exactly the
//!   bad item is rejected and the ones before it count as delivered. Should the receiver
//!   have kept part of the refused batch, each single carries its own idempotency key (and
//!   each Highlight its `id` and `revision`), so it can tell.
//! - **No long waits inside the sink.** Each request is bounded by `timeout` (connecting by
//!   at most 10 s of it); retries and their delays are the daemon's job.
//! - **Secrets stay secret.** Header values, the bearer token and the signing secret never
//!   appear in `Debug` output, logs or error messages; they are marked sensitive in the
//!   requests, and scrubbed from body excerpts should a receiver echo them back. URLs in
//!   messages lose their query and user info.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use reqwest::header::{
    AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER,
};
use reqwest::{Method, Response, StatusCode, Url};
use sha2::{Digest, Sha256};

use crate::{BoxFuture, Delivery, Sink, SinkError, SinkErrorKind};

/// The request timeout when none is configured.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest accepted `batch_size`; also the largest batch the daemon hands over.
pub const MAX_BATCH_SIZE: usize = 512;

/// How much of a rejecting receiver's body is kept as `body_excerpt`.
pub const BODY_EXCERPT_BYTES: usize = 1024;

/// The longest `Retry-After` passed on to the daemon.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// The idempotency header.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

/// The signature header; see the [module docs](self) for the scheme.
pub const SIGNATURE_HEADER: &str = "x-frontsync-signature";

/// The header carrying the signed unix timestamp.
pub const TIMESTAMP_HEADER: &str = "x-frontsync-timestamp";

/// Connecting never takes longer than this, even with a long request timeout.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A successful answer's body is read up to this much, so the connection can be reused.
const DRAIN_BYTES: usize = 64 * 1024;

/// Headers the sink owns; configuring them would break framing or signing.
const RESERVED_HEADERS: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "connection",
    "host",
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
];

/// How to reach an HTTP receiver. Start from [`HttpSinkConfig::new`] or `Default`.
#[derive(Clone, PartialEq, Eq)]
pub struct HttpSinkConfig {
    /// Full URL single Highlights are POSTed to (and batch items when a batch is refused).
    pub endpoint: String,
    /// Full URL batches are POSTed to; required when `batch_size > 1`.
    pub batch_endpoint: Option<String>,
    /// Extra request headers, values already resolved; values may be secret and are never
    /// logged.
    pub headers: Vec<(String, String)>,
    /// Sent as `Authorization: Bearer <token>`; secret.
    pub bearer_token: Option<String>,
    /// Bound on one whole request, answer included.
    pub timeout: Duration,
    /// Highlights per request, `1..=`[`MAX_BATCH_SIZE`]; above 1 uses `batch_endpoint`.
    pub batch_size: usize,
    /// Key for `X-Frontsync-Signature`; secret.
    pub signing_secret: Option<String>,
    /// Send `Idempotency-Key`.
    pub idempotency_header: bool,
    /// URL for [`HttpSink::health_check`] to `GET`; without it the check sends `HEAD` to
    /// `endpoint` and only looks for reachability and an accepted token.
    pub health_endpoint: Option<String>,
}

impl HttpSinkConfig {
    /// A config posting single Highlights to `endpoint` with the defaults: 10 s timeout,
    /// batch size 1, no auth, no signing, idempotency keys on.
    pub fn new(endpoint: impl Into<String>) -> HttpSinkConfig {
        HttpSinkConfig {
            endpoint: endpoint.into(),
            ..HttpSinkConfig::default()
        }
    }
}

impl Default for HttpSinkConfig {
    fn default() -> Self {
        HttpSinkConfig {
            endpoint: String::new(),
            batch_endpoint: None,
            headers: Vec::new(),
            bearer_token: None,
            timeout: DEFAULT_TIMEOUT,
            batch_size: 1,
            signing_secret: None,
            idempotency_header: true,
            health_endpoint: None,
        }
    }
}

impl fmt::Debug for HttpSinkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(name, _)| (name.as_str(), "***"))
            .collect();
        f.debug_struct("HttpSinkConfig")
            .field("endpoint", &self.endpoint)
            .field("batch_endpoint", &self.batch_endpoint)
            .field("headers", &headers)
            .field("bearer_token", &self.bearer_token.as_ref().map(|_| "***"))
            .field("timeout", &self.timeout)
            .field("batch_size", &self.batch_size)
            .field(
                "signing_secret",
                &self.signing_secret.as_ref().map(|_| "***"),
            )
            .field("idempotency_header", &self.idempotency_header)
            .field("health_endpoint", &self.health_endpoint)
            .finish()
    }
}

/// POSTs Highlights to an HTTP endpoint; see the [module docs](self).
pub struct HttpSink {
    /// `http`, or the kind of the sink wrapping this one (`next`); names it in messages.
    kind: &'static str,
    client: reqwest::Client,
    endpoint: Url,
    batch_endpoint: Option<Url>,
    health_endpoint: Option<Url>,
    /// Configured headers plus `Authorization`, all marked sensitive.
    headers: HeaderMap,
    batch_size: usize,
    timeout: Duration,
    /// Keyed once at construction and cloned per request, so signing cannot fail later.
    mac: Option<Hmac<Sha256>>,
    idempotency: bool,
    /// Secret strings scrubbed from body excerpts.
    secrets: Vec<String>,
}

impl fmt::Debug for HttpSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<&str> = self.headers.keys().map(HeaderName::as_str).collect();
        f.debug_struct("HttpSink")
            .field("kind", &self.kind)
            .field("endpoint", &shown_url(&self.endpoint))
            .field(
                "batch_endpoint",
                &self.batch_endpoint.as_ref().map(shown_url),
            )
            .field("header_names", &headers)
            .field("batch_size", &self.batch_size)
            .field("timeout", &self.timeout)
            .field("signing", &self.mac.is_some())
            .field("idempotency_header", &self.idempotency)
            .finish_non_exhaustive()
    }
}

impl HttpSink {
    /// Checks `config` and builds the sink and its HTTP client. The error is one lowercase
    /// line without any secret.
    pub fn new(config: HttpSinkConfig) -> Result<HttpSink, String> {
        HttpSink::with_kind("http", config)
    }

    /// [`HttpSink::new`] for a sink built on this one, named `kind` in messages and logs.
    pub(crate) fn with_kind(
        kind: &'static str,
        config: HttpSinkConfig,
    ) -> Result<HttpSink, String> {
        let endpoint = parse_url("endpoint", &config.endpoint)?;
        let batch_endpoint = config
            .batch_endpoint
            .as_deref()
            .map(|u| parse_url("batch_endpoint", u))
            .transpose()?;
        let health_endpoint = config
            .health_endpoint
            .as_deref()
            .map(|u| parse_url("health_endpoint", u))
            .transpose()?;
        if config.batch_size == 0 || config.batch_size > MAX_BATCH_SIZE {
            return Err(format!(
                "batch_size must be between 1 and {MAX_BATCH_SIZE}, not {}",
                config.batch_size
            ));
        }
        if config.batch_size > 1 && batch_endpoint.is_none() {
            return Err("batch_size above 1 needs a batch endpoint".to_owned());
        }
        if config.timeout.is_zero() {
            return Err("timeout must be longer than 0s".to_owned());
        }

        let mut secrets = Vec::new();
        let mut headers = HeaderMap::new();
        for (name, value) in &config.headers {
            let header = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("header name {name:?} is not a valid http header name"))?;
            if RESERVED_HEADERS.contains(&header.as_str())
                || (header == AUTHORIZATION && config.bearer_token.is_some())
                || (header.as_str() == IDEMPOTENCY_KEY_HEADER && config.idempotency_header)
            {
                return Err(format!(
                    "header {name} is set by the sink and cannot be configured"
                ));
            }
            secrets.extend(secret_to_scrub(value));
            let mut value = HeaderValue::from_str(value)
                .map_err(|_| format!("the value of header {name} is not a valid header value"))?;
            value.set_sensitive(true);
            // `append`, so a header configured twice is sent twice, as written.
            headers.append(header, value);
        }
        if let Some(token) = &config.bearer_token {
            if token.is_empty() {
                return Err("the bearer token is empty".to_owned());
            }
            let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| "the bearer token is not a valid header value".to_owned())?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
            secrets.extend(secret_to_scrub(token));
        }
        let mac = match &config.signing_secret {
            None => None,
            Some(secret) if secret.is_empty() => {
                return Err("the signing secret is empty".to_owned());
            }
            Some(secret) => {
                secrets.extend(secret_to_scrub(secret));
                Some(
                    <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
                        .map_err(|_| "the signing secret cannot key hmac-sha256".to_owned())?,
                )
            }
        };

        if endpoint.scheme() == "http" && !is_loopback(&endpoint) {
            tracing::warn!(
                sink = kind,
                endpoint = %shown_url(&endpoint),
                "the endpoint is plain http: highlights and credentials travel unencrypted"
            );
        }

        let client = reqwest::Client::builder()
            .connect_timeout(config.timeout.min(MAX_CONNECT_TIMEOUT))
            .timeout(config.timeout)
            .user_agent(concat!("frontsync/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("cannot build the http client: {}", root_cause(&e)))?;

        Ok(HttpSink {
            kind,
            client,
            endpoint,
            batch_endpoint,
            health_endpoint,
            headers,
            batch_size: config.batch_size,
            timeout: config.timeout,
            mac,
            idempotency: config.idempotency_header,
            secrets,
        })
    }

    /// The URL single Highlights are POSTed to.
    pub fn endpoint(&self) -> &str {
        self.endpoint.as_str()
    }

    /// The URL batches are POSTed to, when batching.
    pub fn batch_endpoint(&self) -> Option<&str> {
        self.batch_endpoint.as_ref().map(Url::as_str)
    }

    /// Highlights per request.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// One authenticated request that creates nothing: `GET health_endpoint` when
    /// configured (any `2xx` is healthy), else `HEAD endpoint` (any answer but `401`, `403`
    /// and `5xx` is healthy: the receiver is up and did not refuse the credentials).
    /// `401`/`403` fail with "token rejected"; a timeout or connection error fails too.
    pub async fn health_check(&self) -> Result<(), SinkError> {
        let (method, url) = match &self.health_endpoint {
            Some(url) => (Method::GET, url),
            None => (Method::HEAD, &self.endpoint),
        };
        let mut headers = self.headers.clone();
        self.sign(&mut headers, b"");
        let result = self
            .client
            .request(method, url.clone())
            .headers(headers)
            .send()
            .await;
        let shown = shown_url(url);
        let mut response = match result {
            Ok(response) => response,
            Err(e) => {
                return Err(SinkError::retryable(
                    0,
                    format!(
                        "{} health check: {}",
                        self.kind,
                        self.transport_message(&e, &shown)
                    ),
                ));
            }
        };
        let status = response.status();
        let ok = if self.health_endpoint.is_some() {
            status.is_success()
        } else {
            !matches!(status.as_u16(), 401 | 403) && !status.is_server_error()
        };
        if ok {
            drain(&mut response).await;
            return Ok(());
        }
        let mut message = format!(
            "{} health check: {shown} answered {}",
            self.kind,
            status_text(status)
        );
        if matches!(status.as_u16(), 401 | 403) {
            message.push_str(": token rejected");
        }
        if status.is_client_error() {
            let body_excerpt = Some(self.excerpt(&mut response).await);
            Err(SinkError {
                delivered: 0,
                kind: SinkErrorKind::Rejected {
                    message,
                    status: Some(status.as_u16()),
                    body_excerpt,
                },
            })
        } else {
            Err(SinkError::retryable(0, message))
        }
    }

    async fn deliver_all(&self, batch: &[Delivery]) -> Result<(), SinkError> {
        let mut delivered = 0;
        let batch_endpoint = match &self.batch_endpoint {
            Some(url) if self.batch_size > 1 => url,
            _ => {
                for item in batch {
                    self.send_one(item).await.at(delivered)?;
                    delivered += 1;
                }
                return Ok(());
            }
        };
        for chunk in batch.chunks(self.batch_size) {
            match self.send_batch(batch_endpoint, chunk).await {
                Outcome::Delivered => delivered += chunk.len(),
                Outcome::Rejected {
                    message, status, ..
                } => {
                    // A batch is refused as a whole; only singles tell which item is bad.
                    tracing::warn!(
                        sink = self.kind,
                        status,
                        reason = %message,
                        items = chunk.len(),
                        "batch refused; sending its items one by one"
                    );
                    for item in chunk {
                        self.send_one(item).await.at(delivered)?;
                        delivered += 1;
                    }
                }
                retry @ Outcome::Retry { .. } => retry.at(delivered)?,
            }
        }
        Ok(())
    }

    async fn send_one(&self, item: &Delivery) -> Outcome {
        let what = What::One(item);
        let key = if self.idempotency {
            match HeaderValue::from_str(&item.key()) {
                Ok(key) => Some(key),
                Err(_) => {
                    return Outcome::Rejected {
                        message: format!(
                            "{} cannot send {what}: its key is not a valid idempotency-key header",
                            self.kind
                        ),
                        status: None,
                        body_excerpt: None,
                    };
                }
            }
        } else {
            None
        };
        self.post(&self.endpoint, item.json.clone(), key, what)
            .await
    }

    async fn send_batch(&self, url: &Url, chunk: &[Delivery]) -> Outcome {
        const HEAD: &[u8] = br#"{"highlights":["#;
        const TAIL: &[u8] = b"]}";
        let size = HEAD.len() + TAIL.len() + chunk.iter().map(|d| d.json.len() + 1).sum::<usize>();
        let mut body = Vec::with_capacity(size);
        body.extend_from_slice(HEAD);
        for (i, item) in chunk.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(&item.json);
        }
        body.extend_from_slice(TAIL);
        // Hex is always a valid header value.
        let key = self
            .idempotency
            .then(|| batch_key(chunk))
            .and_then(|key| HeaderValue::from_str(&key).ok());
        self.post(url, body, key, What::Many(chunk)).await
    }

    async fn post(
        &self,
        url: &Url,
        body: Vec<u8>,
        idempotency_key: Option<HeaderValue>,
        what: What<'_>,
    ) -> Outcome {
        let mut headers = self.headers.clone();
        headers
            .entry(CONTENT_TYPE)
            .or_insert_with(|| HeaderValue::from_static("application/json"));
        if let Some(key) = idempotency_key {
            headers.insert(IDEMPOTENCY_KEY_HEADER, key);
        }
        self.sign(&mut headers, &body);
        let result = self
            .client
            .post(url.clone())
            .headers(headers)
            .body(body)
            .send()
            .await;
        let mut response = match result {
            Ok(response) => response,
            Err(e) => {
                return Outcome::Retry {
                    message: format!(
                        "{}: {} ({what})",
                        self.kind,
                        self.transport_message(&e, &shown_url(url))
                    ),
                    retry_after: None,
                };
            }
        };
        let status = response.status();
        tracing::debug!(sink = self.kind, status = status.as_u16(), %what, "answered");
        if status.is_success() || status == StatusCode::CONFLICT {
            drain(&mut response).await;
            return Outcome::Delivered;
        }
        if matches!(status.as_u16(), 401 | 403) {
            // Not the record's fault: a revoked or wrong token would otherwise dead-letter
            // the whole outbox, one Highlight after another. Keep them and retry.
            return Outcome::Retry {
                message: format!(
                    "{} answered {} for {what}: the token was rejected; fix the sink's token",
                    self.kind,
                    status_text(status)
                ),
                retry_after: None,
            };
        }
        if status.is_client_error()
            && status != StatusCode::REQUEST_TIMEOUT
            && status != StatusCode::TOO_MANY_REQUESTS
        {
            let body_excerpt = Some(self.excerpt(&mut response).await);
            return Outcome::Rejected {
                message: format!("{} rejected {what}: {}", self.kind, status_text(status)),
                status: Some(status.as_u16()),
                body_excerpt,
            };
        }
        // 408, 429, 5xx, and anything unexpected (3xx: redirects are not followed).
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let mut message = format!("{} answered {} for {what}", self.kind, status_text(status));
        if status.is_redirection() {
            message.push_str("; redirects are not followed, check the endpoint");
        }
        Outcome::Retry {
            message,
            retry_after,
        }
    }

    /// Adds the timestamp and signature headers when a signing secret is configured.
    fn sign(&self, headers: &mut HeaderMap, body: &[u8]) {
        let Some(mac) = &self.mac else { return };
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            .to_string();
        let mut mac = mac.clone();
        mac.update(ts.as_bytes());
        mac.update(b".");
        mac.update(body);
        let signature = format!("sha256={}", hex(&mac.finalize().into_bytes()));
        // Both are ASCII digits or hex, always valid header values.
        if let (Ok(ts), Ok(signature)) = (
            HeaderValue::from_str(&ts),
            HeaderValue::from_str(&signature),
        ) {
            headers.insert(TIMESTAMP_HEADER, ts);
            headers.insert(SIGNATURE_HEADER, signature);
        }
    }

    /// Describes a failed request without the URL reqwest would print (it may hold a query).
    fn transport_message(&self, e: &reqwest::Error, shown: &str) -> String {
        if e.is_timeout() {
            format!(
                "no answer from {shown} within {}",
                humantime::format_duration(self.timeout)
            )
        } else if e.is_connect() {
            format!("cannot connect to {shown}: {}", root_cause(e))
        } else {
            format!("request to {shown} failed: {}", root_cause(e))
        }
    }

    /// The first [`BODY_EXCERPT_BYTES`] of the answer as lossy UTF-8, cut at a character
    /// boundary, with secrets a receiver might echo back replaced by `***`.
    async fn excerpt(&self, response: &mut Response) -> String {
        let bytes = read_prefix(response, BODY_EXCERPT_BYTES + 1).await;
        let mut text = excerpt_of(&bytes, BODY_EXCERPT_BYTES);
        for secret in &self.secrets {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), "***");
            }
        }
        text
    }
}

impl Sink for HttpSink {
    fn kind(&self) -> &'static str {
        self.kind
    }

    fn deliver<'a>(&'a mut self, batch: &'a [Delivery]) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(self.deliver_all(batch))
    }

    fn max_batch(&self) -> usize {
        self.batch_size
    }
}

/// What one request carried, for messages.
#[derive(Clone, Copy)]
enum What<'a> {
    One(&'a Delivery),
    Many(&'a [Delivery]),
}

impl fmt::Display for What<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            What::One(item) => write!(f, "highlight {}", item.key()),
            What::Many(items) => match (items.first(), items.last()) {
                (Some(first), Some(last)) => write!(
                    f,
                    "batch of {} highlights {}..{}",
                    items.len(),
                    first.key(),
                    last.key()
                ),
                _ => f.write_str("empty batch"),
            },
        }
    }
}

/// How one request ended.
enum Outcome {
    Delivered,
    Retry {
        message: String,
        retry_after: Option<Duration>,
    },
    Rejected {
        message: String,
        status: Option<u16>,
        body_excerpt: Option<String>,
    },
}

impl Outcome {
    /// `Ok` when delivered, else the error for a batch whose first `delivered` items went
    /// through.
    fn at(self, delivered: usize) -> Result<(), SinkError> {
        let kind = match self {
            Outcome::Delivered => return Ok(()),
            Outcome::Retry {
                message,
                retry_after,
            } => SinkErrorKind::Retryable {
                message,
                retry_after,
            },
            Outcome::Rejected {
                message,
                status,
                body_excerpt,
            } => SinkErrorKind::Rejected {
                message,
                status,
                body_excerpt,
            },
        };
        Err(SinkError { delivered, kind })
    }
}

/// Parses an endpoint URL: absolute http(s), with a host, without credentials.
pub(crate) fn parse_url(what: &str, url: &str) -> Result<Url, String> {
    let parsed = Url::parse(url).map_err(|e| format!("{what} is not a valid url: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("{what} must be an http or https url"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("{what} has no host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(format!(
            "{what} must not hold credentials; use a token or headers"
        ));
    }
    Ok(parsed)
}

fn is_loopback(url: &Url) -> bool {
    let host = url.host_str().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A URL fit for messages: no user info, query or fragment.
fn shown_url(url: &Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
}

/// `400 bad request`.
fn status_text(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("{} {}", status.as_u16(), reason.to_lowercase()),
        None => status.as_u16().to_string(),
    }
}

/// The innermost cause of an error (`connection refused`), lowercase, on one line. Inner
/// causes never carry the request URL or headers.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    one_line(&cause.to_string().to_lowercase())
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Secrets short enough to occur by chance in any text are not worth scrubbing.
fn secret_to_scrub(s: &str) -> Option<String> {
    (s.len() >= 6).then(|| s.to_owned())
}

/// Reads the answer's body until `limit` bytes or its end; a read error ends it early.
async fn read_prefix(response: &mut Response, limit: usize) -> Vec<u8> {
    let mut bytes = Vec::new();
    while bytes.len() < limit {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    bytes
}

/// Reads a small answer to its end so the connection goes back to the pool.
async fn drain(response: &mut Response) {
    let _ = read_prefix(response, DRAIN_BYTES).await;
}

/// At most `limit` bytes of `bytes` as lossy UTF-8, never cutting a character in two.
fn excerpt_of(bytes: &[u8], limit: usize) -> String {
    let mut end = bytes.len().min(limit);
    if end < bytes.len() {
        // Back off over continuation bytes (at most 3) to the start of the cut character.
        let floor = end.saturating_sub(3);
        let mut cut = end;
        while cut > floor && (bytes[cut] & 0xC0) == 0x80 {
            cut -= 1;
        }
        if (bytes[cut] & 0xC0) != 0x80 {
            end = cut;
        }
    }
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// The idempotency key of a batch: hex SHA-256 of its items' keys joined by `\n`.
pub fn batch_key(items: &[Delivery]) -> String {
    let mut hasher = Sha256::new();
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            hasher.update(b"\n");
        }
        hasher.update(item.key().as_bytes());
    }
    hex(&hasher.finalize())
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xF)]));
    }
    out
}

/// A `Retry-After` value as a delay from `now`: delta-seconds or an HTTP date. Zero, past
/// and unparsable values give `None`; long ones are capped at [`MAX_RETRY_AFTER`].
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let delay = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // All digits: only an overflow fails, and that is "very long".
        Duration::from_secs(value.parse::<u64>().unwrap_or(u64::MAX))
    } else {
        parse_http_date(value)?.duration_since(now).ok()?
    };
    (!delay.is_zero()).then(|| delay.min(MAX_RETRY_AFTER))
}

/// An HTTP date (RFC 9110 section 5.6.7) in any of its three formats:
/// `Sun, 06 Nov 1994 08:49:37 GMT` (IMF-fixdate), `Sunday, 06-Nov-94 08:49:37 GMT`
/// (RFC 850) and `Sun Nov  6 08:49:37 1994` (asctime). Dates before 1970 give `None`.
pub fn parse_http_date(s: &str) -> Option<SystemTime> {
    let parts: Vec<&str> = s.split_ascii_whitespace().collect();
    let (weekday, day, month, year, time) = match parts.as_slice() {
        [weekday, day, month, year, time, "GMT"] => {
            if year.len() != 4 || day.len() != 2 {
                return None;
            }
            (
                weekday.strip_suffix(',')?,
                *day,
                *month,
                year.parse().ok()?,
                *time,
            )
        }
        [weekday, date, time, "GMT"] => {
            let mut dmy = date.split('-');
            let (day, month, yy) = (dmy.next()?, dmy.next()?, dmy.next()?);
            if dmy.next().is_some() || yy.len() != 2 || day.len() != 2 {
                return None;
            }
            let yy: i64 = yy.parse().ok()?;
            // RFC 9110: a two-digit year more than 50 years ahead is in the past century;
            // this pivot is right for any clock between 1970 and 2069.
            let year = if yy < 70 { 2000 + yy } else { 1900 + yy };
            (weekday.strip_suffix(',')?, day, month, year, *time)
        }
        [weekday, month, day, time, year] => {
            if year.len() != 4 || day.is_empty() || day.len() > 2 {
                return None;
            }
            (*weekday, *day, *month, year.parse().ok()?, *time)
        }
        _ => return None,
    };
    if weekday.is_empty() || !weekday.bytes().all(|b| b.is_ascii_alphabetic()) {
        return None;
    }
    let month = match month {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let day: u32 = digits(day)?;
    if year < 1970 || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    let mut hms = time.split(':');
    let (h, m, sec) = (hms.next()?, hms.next()?, hms.next()?);
    if hms.next().is_some() || h.len() != 2 || m.len() != 2 || sec.len() != 2 {
        return None;
    }
    let (h, m, sec): (u64, u64, u64) = (digits(h)?, digits(m)?, digits(sec)?);
    // 60 is a leap second.
    if h > 23 || m > 59 || sec > 60 {
        return None;
    }
    let days = u64::try_from(days_from_civil(year, month, day)).ok()?;
    let secs = days * 86_400 + h * 3600 + m * 60 + sec;
    UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

fn digits<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let (month, day) = (i64::from(month), i64::from(day));
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year - era * 400;
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn http_dates_in_all_three_formats() {
        let expected = Some(at(784_111_777));
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"), expected);
        assert_eq!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), expected);
        assert_eq!(parse_http_date("Sun Nov  6 08:49:37 1994"), expected);
        assert_eq!(
            parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"),
            Some(at(0))
        );
        assert_eq!(
            parse_http_date("Tue, 29 Feb 2028 23:59:59 GMT"),
            Some(at(1_835_481_599))
        );
        assert_eq!(
            parse_http_date("Wednesday, 01-Mar-34 00:00:00 GMT"),
            Some(at(2_024_784_000))
        );
    }

    #[test]
    fn malformed_http_dates_are_refused() {
        for bad in [
            "",
            "soon",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 6 Nov 1994 08:49:37 GMT",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "Sun, 31 Nov 1994 08:49:37 GMT",
            "Sun, 29 Feb 2100 08:49:37 GMT",
            "Sun, 06 Nov 1994 24:00:00 GMT",
            "Sun, 06 Nov 1994 08:49 GMT",
            "Sun, 06 Nov 1969 08:49:37 GMT",
            "Sun, 06 Nov +994 08:49:37 GMT",
            "Sunday, 06-Nov-1994 08:49:37 GMT",
            "Sun Nov  6 08:49:37 94",
            "2026-11-21T09:14:03Z",
        ] {
            assert_eq!(parse_http_date(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn retry_after_as_seconds_or_date() {
        let now = at(1_000_000);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after("0", now), None);
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(parse_retry_after("86400", now), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(parse_retry_after("1.5", now), None);

        let now = at(784_111_777 - 30);
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(Duration::from_secs(30))
        );
        // In the past, or now: the daemon's own backoff applies.
        let now = at(784_111_777);
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            None
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", at(784_111_800)),
            None
        );
    }

    #[test]
    fn excerpt_never_cuts_a_character() {
        assert_eq!(excerpt_of(b"short", 10), "short");
        assert_eq!(excerpt_of(b"0123456789abc", 10), "0123456789");
        // "é" is two bytes: a cut in its middle drops it whole.
        let text = "aaaaaaaaaé".as_bytes();
        assert_eq!(excerpt_of(text, 10), "aaaaaaaaa");
        let text = "aaaaaaaa€x".as_bytes();
        assert_eq!(excerpt_of(text, 9), "aaaaaaaa");
        assert_eq!(excerpt_of(text, 10), "aaaaaaaa");
        assert_eq!(excerpt_of(text, 11), "aaaaaaaa€");
        // Invalid bytes stay lossy, never panic.
        assert_eq!(
            excerpt_of(&[0x80, 0x80, 0x80, 0x80, 0x80], 2),
            "\u{fffd}\u{fffd}"
        );
    }

    #[test]
    fn batch_key_is_stable_and_order_sensitive() {
        let item = |id: &str, revision| Delivery {
            seq: 0,
            id: id.to_owned(),
            revision,
            json: Vec::new(),
        };
        let a = [item("s:cnv_1", 1), item("s:cnv_2", 3)];
        let b = [item("s:cnv_2", 3), item("s:cnv_1", 1)];
        assert_eq!(batch_key(&a), batch_key(&a));
        assert_ne!(batch_key(&a), batch_key(&b));
        assert_eq!(batch_key(&a).len(), 64);
        assert_eq!(batch_key(&a[..1]), hex(&Sha256::digest(b"s:cnv_1:1")));
    }

    #[test]
    fn status_text_is_lowercase() {
        assert_eq!(status_text(StatusCode::BAD_REQUEST), "400 bad request");
        assert_eq!(
            status_text(StatusCode::from_u16(599).expect("status")),
            "599"
        );
    }

    #[test]
    fn shown_urls_lose_credentials_and_query() {
        let url = Url::parse("https://u:p@example.com:8443/hook/x?token=abc#f").expect("url");
        assert_eq!(shown_url(&url), "https://example.com:8443/hook/x");
    }
}
