//! The webhook listener: `POST /webhooks/front/{connection}` receives Front's rule and
//! application webhooks, verifies them, and answers `200` only once the event is durably
//! committed by the writer.
//!
//! Status codes (the contract): `200` committed (or a duplicate, or a challenge answered),
//! `400` malformed JSON or not a Front event, `401` bad or missing signature or stale
//! timestamp, `404` unknown connection or path, `405` wrong method, `408` body too slow,
//! `413` body over `max_body_bytes`, `503` shutting down or state not writable. A rejected
//! request changes no state.

pub mod verify;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_LENGTH, HeaderValue, RETRY_AFTER};
use hyper::{Method, Request, StatusCode};
use tokio_util::sync::CancellationToken;

use crate::front::model::{WebhookBody, parse_webhook_body};
use crate::http::{Resp, error, json};
use crate::ingest::{IncomingEvent, Writer};
use crate::normalize::snapshot_from_event;
use crate::secret::SecretValue;

/// Path prefix of the webhook route.
pub const PATH_PREFIX: &str = "/webhooks/front/";

/// The `connection` label of requests to a connection that is not configured (names are
/// `[a-z0-9_-]+`, so no real connection has this one).
pub const UNKNOWN_CONNECTION_LABEL: &str = "(unknown)";

/// How long a client may take to send the body once the head arrived.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// The verification secrets of one Front connection.
#[derive(Debug, Clone, Default)]
pub struct ConnectionSecrets {
    /// Rule webhooks: HMAC-SHA1 key.
    pub rule: Option<SecretValue>,
    /// Application webhooks: HMAC-SHA256 key.
    pub app: Option<SecretValue>,
    /// The connection has an API token: previews are completed with `GET /events/{id}`.
    pub can_enrich: bool,
}

/// Shared state of the listener. `connections` is swapped on reload.
pub struct WebhookState {
    pub connections: RwLock<Arc<HashMap<String, ConnectionSecrets>>>,
    pub writer: Writer,
    /// Bodies larger than this get 413 (changed by reload).
    pub max_body_bytes: std::sync::atomic::AtomicUsize,
    /// Cancelled at shutdown: new requests get 503.
    pub draining: CancellationToken,
    /// Requests by connection and outcome, for metrics.
    pub outcomes: Mutex<BTreeMap<String, BTreeMap<&'static str, u64>>>,
    /// Connections already warned about previews they cannot complete (no token).
    pub preview_warned: Mutex<std::collections::BTreeSet<String>>,
}

impl WebhookState {
    fn count(&self, connection: &str, outcome: &'static str) {
        if let Ok(mut m) = self.outcomes.lock() {
            // Looked up by &str first: the name is copied only the first time it is seen.
            let by_outcome = match m.get_mut(connection) {
                Some(b) => b,
                None => m.entry(connection.to_string()).or_default(),
            };
            *by_outcome.entry(outcome).or_default() += 1;
        }
    }
}

/// Handles one request.
pub async fn handle(state: Arc<WebhookState>, req: Request<Incoming>, peer: SocketAddr) -> Resp {
    let Some(connection) = req
        .uri()
        .path()
        .strip_prefix(PATH_PREFIX)
        .map(str::to_string)
    else {
        return error(StatusCode::NOT_FOUND, "not found");
    };
    let connections = match state.connections.read() {
        Ok(m) => m.clone(),
        Err(p) => p.into_inner().clone(),
    };
    let secrets = connections.get(&connection);
    let mut resp = handle_connection(&state, req, &connection, secrets).await;
    if matches!(resp.status().as_u16(), 408 | 413) {
        // The body was not read to its end, so this connection cannot carry another request:
        // say so, or a client would reuse it from its pool and meet a closed socket.
        resp.headers_mut()
            .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
    }
    let outcome = outcome_name(resp.status());
    // The name comes from the request path: counting every unknown one under its own name
    // would let anyone grow this map (and /metrics) without bound and put any text in a
    // label value. Unknown names share one label that no connection can have.
    state.count(
        if secrets.is_some() {
            &connection
        } else {
            UNKNOWN_CONNECTION_LABEL
        },
        outcome,
    );
    if resp.status() != StatusCode::OK {
        tracing::info!(connection = %connection, %peer, status = resp.status().as_u16(), "webhook refused");
    }
    resp
}

fn outcome_name(status: StatusCode) -> &'static str {
    match status.as_u16() {
        200 => "accepted",
        400 => "malformed",
        401 => "unauthorized",
        404 => "unknown_connection",
        405 => "bad_method",
        408 => "timeout",
        413 => "too_large",
        503 => "unavailable",
        _ => "other",
    }
}

async fn handle_connection(
    state: &WebhookState,
    req: Request<Incoming>,
    connection: &str,
    secrets: Option<&ConnectionSecrets>,
) -> Resp {
    if req.method() != Method::POST {
        let mut r = error(StatusCode::METHOD_NOT_ALLOWED, "use POST");
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("POST"));
        return r;
    }
    let Some(secrets) = secrets else {
        return error(StatusCode::NOT_FOUND, "unknown front connection");
    };
    if state.draining.is_cancelled() {
        return unavailable("shutting down");
    }
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let max_body_bytes = state
        .max_body_bytes
        .load(std::sync::atomic::Ordering::Relaxed);
    if declared.is_some_and(|n| n > max_body_bytes as u64) {
        return error(StatusCode::PAYLOAD_TOO_LARGE, "body too large");
    }
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let signature = header("x-front-signature");
    let timestamp = header("x-front-request-timestamp");
    let challenge = header("x-front-challenge");

    let body = match read_body(req.into_body(), max_body_bytes).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };

    let verified = match &timestamp {
        Some(ts) => match &secrets.app {
            Some(secret) => verify::verify_app(
                secret.expose().as_bytes(),
                &body,
                ts,
                signature.as_deref(),
                crate::ingest::now_ms() as i64,
            ),
            None => Err(verify::SignatureError::NoSecret("app_webhook_secret")),
        },
        None => match &secrets.rule {
            Some(secret) => {
                verify::verify_rule(secret.expose().as_bytes(), &body, signature.as_deref())
            }
            None => Err(verify::SignatureError::NoSecret("rule_webhook_secret")),
        },
    };
    if let Err(e) = verified {
        tracing::warn!(connection, reason = %e, "webhook signature refused");
        return error(StatusCode::UNAUTHORIZED, "invalid signature");
    }

    if let Some(challenge) = challenge {
        if timestamp.is_none() {
            return error(
                StatusCode::BAD_REQUEST,
                "a challenge must be an application webhook",
            );
        }
        tracing::info!(connection, "answered front application webhook challenge");
        return json(
            StatusCode::OK,
            &serde_json::json!({ "challenge": challenge }),
        );
    }

    let event = match parse_webhook_body(&body) {
        Ok(WebhookBody::Rule(event)) => event,
        Ok(WebhookBody::App {
            event: Some(event), ..
        }) => event,
        Ok(WebhookBody::App {
            event: None, type_, ..
        }) => {
            tracing::debug!(connection, kind = %type_, "application webhook without an event; nothing to do");
            return json_ok("ignored", 0);
        }
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    if event.is_preview() {
        if secrets.can_enrich {
            // Commit the preview now (Front gets its 200 at once); the enricher completes it
            // with GET /events/{id} and only then is a Highlight made.
            let json = serde_json::to_vec(&event).unwrap_or_default();
            return match state
                .writer
                .defer_preview(connection, &event.id, json)
                .await
            {
                Ok(added) => json_ok(if added { "accepted" } else { "duplicate" }, 0),
                Err(e) => {
                    tracing::error!(connection, error = %e, "webhook not acknowledged: state not writable");
                    unavailable("state not writable; retry later")
                }
            };
        }
        let first = state
            .preview_warned
            .lock()
            .map(|mut w| w.insert(connection.to_string()))
            .unwrap_or(false);
        if first {
            tracing::warn!(
                connection,
                "webhook payloads are previews and this connection has no token: Highlights will carry ids only; set token in [front.{connection}] or turn on \"Send Full Event Data\" in the Front rule"
            );
        }
    }
    let snapshot = match snapshot_from_event(&event) {
        Ok(s) => s,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let incoming = IncomingEvent::new(connection, &event.id, snapshot);
    match state.writer.ingest(vec![incoming], Vec::new()).await {
        Ok(outcome) => {
            tracing::debug!(connection, event = %event.id, highlights = outcome.highlights, duplicate = outcome.duplicates > 0, "webhook committed");
            json_ok(
                if outcome.duplicates > 0 {
                    "duplicate"
                } else {
                    "accepted"
                },
                outcome.highlights,
            )
        }
        Err(e) => {
            tracing::error!(connection, error = %e, "webhook not acknowledged: state not writable");
            unavailable("state not writable; retry later")
        }
    }
}

async fn read_body(body: Incoming, max: usize) -> Result<Bytes, Resp> {
    let collected = tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, max).collect()).await;
    match collected {
        Err(_) => Err(error(
            StatusCode::REQUEST_TIMEOUT,
            "body not received in time",
        )),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            Err(error(StatusCode::PAYLOAD_TOO_LARGE, "body too large"))
        }
        Ok(Err(_)) => Err(error(StatusCode::BAD_REQUEST, "could not read body")),
        Ok(Ok(c)) => Ok(c.to_bytes()),
    }
}

/// `{"status": ..., "highlights": n}`, written directly: `status` is one of our own
/// constants (nothing to escape), and this is the answer to every accepted webhook.
fn json_ok(status: &'static str, highlights: usize) -> Resp {
    crate::http::respond(
        StatusCode::OK,
        "application/json",
        format!(r#"{{"status":"{status}","highlights":{highlights}}}"#),
    )
}

fn unavailable(message: &str) -> Resp {
    let mut r = error(StatusCode::SERVICE_UNAVAILABLE, message);
    r.headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static("5"));
    r
}
