//! The admin listener (loopback by default): `/healthz`, `/readyz`, `/metrics` (Prometheus
//! text, `frontsync_` prefix) and `/status` (JSON: per subscription and per sink).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use serde_json::json;

use crate::http::{Resp, error, respond};
use crate::outbox::SinkStats;
use crate::store::{Store, counters};
use crate::webhook::WebhookState;

/// What the admin endpoints report on. Fields behind locks are replaced on reload.
pub struct AdminState {
    pub store: Store,
    /// The daemon's single writer: operator commands commit in its order with everything else.
    pub writer: crate::ingest::Writer,
    pub ready: AtomicBool,
    pub sinks: RwLock<BTreeMap<String, Arc<SinkStats>>>,
    pub subscriptions: RwLock<Vec<String>>,
    pub webhook: Option<Arc<WebhookState>>,
    pub polls: Arc<crate::front::poller::PollStatus>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The rate limiter of each Front connection with a token (replaced on reload).
    pub limiters: RwLock<BTreeMap<String, Arc<crate::front::ratelimit::RateLimiter>>>,
    /// The token source of each OAuth connection (replaced on reload), for
    /// `POST /oauth/{connection}/grant`.
    pub oauth: RwLock<BTreeMap<String, Arc<crate::front::oauth::OAuthSource>>>,
    pub started: std::time::Instant,
}

/// Handles one admin request.
pub async fn handle(state: Arc<AdminState>, req: Request<Incoming>, peer: SocketAddr) -> Resp {
    // `/outbox` also takes POSTs (retry, drop): see `outbox_admin`.
    let path = req.uri().path();
    if path == "/outbox" || path.starts_with("/outbox/") {
        return crate::outbox_admin::handle(state, req, peer).await;
    }
    // `frontsync auth` hands a new OAuth grant to the running daemon: see `auth`.
    if path.starts_with("/oauth/") {
        return crate::auth::handle_admin(state, req, peer).await;
    }
    if req.method() != Method::GET {
        return error(StatusCode::METHOD_NOT_ALLOWED, "use GET");
    }
    match req.uri().path() {
        "/healthz" => respond(StatusCode::OK, "text/plain", "ok\n"),
        "/readyz" => {
            if state.ready.load(Ordering::Acquire) {
                respond(StatusCode::OK, "text/plain", "ready\n")
            } else {
                respond(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "starting\n")
            }
        }
        "/status" => {
            let s = state.clone();
            match tokio::task::spawn_blocking(move || status_json(&s)).await {
                Ok(Ok(v)) => crate::http::json(StatusCode::OK, &v),
                Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, &e),
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
            }
        }
        "/metrics" => {
            let s = state.clone();
            match tokio::task::spawn_blocking(move || metrics_text(&s)).await {
                Ok(text) => respond(StatusCode::OK, "text/plain; version=0.0.4", text),
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
            }
        }
        _ => error(StatusCode::NOT_FOUND, "not found"),
    }
}

fn sink_stats(state: &AdminState) -> BTreeMap<String, Arc<SinkStats>> {
    match state.sinks.read() {
        Ok(m) => m.clone(),
        Err(p) => p.into_inner().clone(),
    }
}

/// The `/status` document.
pub fn status_json(state: &AdminState) -> Result<serde_json::Value, String> {
    let mut sinks = serde_json::Map::new();
    for (name, stats) in sink_stats(state) {
        let depth = state.store.outbox_depth(&name).map_err(|e| e.to_string())?;
        let dead = state
            .store
            .counter(counters::DEAD_LETTERS, &name)
            .map_err(|e| e.to_string())?;
        let delivered = state
            .store
            .counter(counters::DELIVERED, &name)
            .map_err(|e| e.to_string())?;
        sinks.insert(
            name,
            json!({
                "outbox_depth": depth,
                "dead_letters": dead,
                "delivered_total": delivered,
                "last_error": stats.last_error(),
            }),
        );
    }
    let names = match state.subscriptions.read() {
        Ok(v) => v.clone(),
        Err(p) => p.into_inner().clone(),
    };
    let mut subscriptions = serde_json::Map::new();
    for name in names {
        // Webhook-only subscriptions have no polling state: all null.
        let s = state.polls.get(&name).unwrap_or_default();
        subscriptions.insert(
            name,
            json!({
                "cursor": s.cursor,
                "lag_seconds": s.lag_seconds,
                "last_poll_at": s.last_poll_at,
                "last_error": s.last_error,
            }),
        );
    }
    Ok(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "ready": state.ready.load(Ordering::Acquire),
        "uptime_seconds": state.started.elapsed().as_secs(),
        "subscriptions": subscriptions,
        "sinks": sinks,
    }))
}

/// Prometheus text exposition.
pub fn metrics_text(state: &AdminState) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP frontsync_up 1 while the daemon runs.\n# TYPE frontsync_up gauge\nfrontsync_up 1"
    );
    let _ = writeln!(
        out,
        "# HELP frontsync_ready 1 once the state is open and listeners are bound.\n# TYPE frontsync_ready gauge\nfrontsync_ready {}",
        u8::from(state.ready.load(Ordering::Acquire))
    );
    if let Some(w) = &state.webhook {
        let _ = writeln!(
            out,
            "# HELP frontsync_webhooks_received_total Webhook requests by connection and outcome.\n# TYPE frontsync_webhooks_received_total counter"
        );
        if let Ok(m) = w.outcomes.lock() {
            for (conn, by_outcome) in m.iter() {
                for (outcome, n) in by_outcome {
                    let _ = writeln!(
                        out,
                        "frontsync_webhooks_received_total{{connection=\"{}\",outcome=\"{outcome}\"}} {n}",
                        escape(conn)
                    );
                }
            }
        }
    }
    state.metrics.render(&mut out);
    let limiters = match state.limiters.read() {
        Ok(l) => l.clone(),
        Err(p) => p.into_inner().clone(),
    };
    let _ = writeln!(
        out,
        "# HELP frontsync_front_requests_total Front API responses by connection and HTTP status.\n# TYPE frontsync_front_requests_total counter"
    );
    for (name, limiter) in &limiters {
        for (status, n) in limiter.status_counts() {
            let _ = writeln!(
                out,
                "frontsync_front_requests_total{{connection=\"{}\",status=\"{status}\"}} {n}",
                escape(name)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP frontsync_front_ratelimit_remaining Requests left in Front's window (x-ratelimit-remaining).\n# TYPE frontsync_front_ratelimit_remaining gauge"
    );
    for (name, limiter) in &limiters {
        if let Some(r) = limiter.stats().remaining {
            let _ = writeln!(
                out,
                "frontsync_front_ratelimit_remaining{{connection=\"{}\"}} {r}",
                escape(name)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP frontsync_front_ratelimit_limit The pace in requests per minute (configured, or Front's lower limit).\n# TYPE frontsync_front_ratelimit_limit gauge"
    );
    for (name, limiter) in &limiters {
        let _ = writeln!(
            out,
            "frontsync_front_ratelimit_limit{{connection=\"{}\"}} {}",
            escape(name),
            limiter.stats().limit
        );
    }
    let subscriptions = match state.subscriptions.read() {
        Ok(v) => v.clone(),
        Err(p) => p.into_inner().clone(),
    };
    let _ = writeln!(
        out,
        "# HELP frontsync_poll_lag_seconds Seconds since the event stream was last read to its end.\n# TYPE frontsync_poll_lag_seconds gauge"
    );
    for sub in subscriptions {
        if let Some(lag) = state.polls.get(&sub).and_then(|s| s.lag_seconds) {
            let _ = writeln!(
                out,
                "frontsync_poll_lag_seconds{{subscription=\"{}\"}} {lag}",
                escape(&sub)
            );
        }
    }
    let sinks = sink_stats(state);
    let _ = writeln!(
        out,
        "# HELP frontsync_sink_delivered_total Highlights delivered by sink.\n# TYPE frontsync_sink_delivered_total counter"
    );
    for name in sinks.keys() {
        let n = state.store.counter(counters::DELIVERED, name).unwrap_or(0);
        let _ = writeln!(
            out,
            "frontsync_sink_delivered_total{{sink=\"{}\"}} {n}",
            escape(name)
        );
    }
    let _ = writeln!(
        out,
        "# HELP frontsync_sink_failures_total Failed delivery attempts by sink since start.\n# TYPE frontsync_sink_failures_total counter"
    );
    for (name, s) in &sinks {
        let n = s.failures.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "frontsync_sink_failures_total{{sink=\"{}\"}} {n}",
            escape(name)
        );
    }
    let _ = writeln!(
        out,
        "# HELP frontsync_outbox_depth Highlights waiting per sink.\n# TYPE frontsync_outbox_depth gauge"
    );
    for name in sinks.keys() {
        let n = state.store.outbox_depth(name).unwrap_or(0);
        let _ = writeln!(
            out,
            "frontsync_outbox_depth{{sink=\"{}\"}} {n}",
            escape(name)
        );
    }
    let _ = writeln!(
        out,
        "# HELP frontsync_dead_letters Highlights a sink rejected for good.\n# TYPE frontsync_dead_letters gauge"
    );
    for name in sinks.keys() {
        let n = state
            .store
            .counter(counters::DEAD_LETTERS, name)
            .unwrap_or(0);
        let _ = writeln!(
            out,
            "frontsync_dead_letters{{sink=\"{}\"}} {n}",
            escape(name)
        );
    }
    out
}

use crate::metrics::escape;
