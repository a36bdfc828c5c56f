//! Polling Front's event stream: catch-up after missed webhooks, backfill of history, and
//! completion of webhook previews. One [`Connection`] per `[front.NAME]` with a token or
//! an OAuth app (its client refreshes the grant; see `front::oauth`).
//!
//! **The stream.** `GET /events?q[after]=<cursor>&sort_order=asc&limit=15`, following
//! `_pagination.next`, costs ⌈new events / 15⌉ requests and 1 when idle. After each page
//! the events and the new cursor (the last `emitted_at` in ms, plus the ids seen at exactly
//! that time, since Front does not document whether `q[after]` is inclusive) are committed
//! in one transaction: a crash repeats no work and loses none. The query asks from one
//! millisecond before the cursor and drops what the cursor says was seen.
//!
//! **Backfill.** The first start of a connection begins the stream `backfill` ago (the
//! longest of its subscriptions). A subscription added later gets its own resumable walk
//! from its `backfill` horizon up to where the stream was, routed to it alone.
//!
//! **Previews.** An event without its conversation or message is completed with one
//! `GET /events/{id}`. Webhook previews are committed first (Front gets its 200 at once)
//! and completed here by [`run_enricher`].
//!
//! **Failures.** 401/403 stop the connection with one ERROR saying what to fix and are
//! retried every few minutes; so do an OAuth connection without a grant or with a refused
//! one (woken at once when `frontsync auth` hands the daemon a new grant). Other errors
//! back off with jitter. None affects other connections or webhook intake.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::config::Subscription;
use crate::front::client::{FrontClient, FrontError};
use crate::front::model::{Event, Inbox, secs_to_ms};
use crate::ingest::{
    CursorUpdate, InboxNames, IncomingEvent, IngestError, Routing, SinkBell, Writer, now_ms,
    preview_bell,
};
use crate::normalize::{format_ms, snapshot_from_event};
use crate::store::Store;

/// Event types that carry a message: what `created` needs.
pub const MESSAGE_TYPES: [&str; 3] = ["inbound", "outbound", "out_reply"];
/// Event types that change what an `updated` Highlight shows.
pub const UPDATE_TYPES: [&str; 9] = [
    "assign", "unassign", "archive", "reopen", "trash", "restore", "tag", "untag", "move",
];

/// How long to wait before trying a connection again after 401/403.
const AUTH_RETRY: Duration = Duration::from_secs(300);
/// How often a long walk logs its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// What `/status` shows per subscription.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SubscriptionStatus {
    /// RFC 3339 time up to which the event stream has been read.
    pub cursor: Option<String>,
    /// Seconds since the stream was last read to its end (how stale our view may be).
    pub lag_seconds: Option<f64>,
    /// RFC 3339 time of the last poll that reached the end of the stream.
    pub last_poll_at: Option<String>,
    /// The last polling error, cleared by the next success.
    pub last_error: Option<String>,
    #[serde(skip)]
    caught_up_ms: Option<i64>,
}

/// Status of every polled subscription, shared with the admin listener.
#[derive(Debug, Default)]
pub struct PollStatus {
    subs: Mutex<BTreeMap<String, SubscriptionStatus>>,
}

impl PollStatus {
    /// A copy of one subscription's status, with `lag_seconds` computed now.
    pub fn get(&self, subscription: &str) -> Option<SubscriptionStatus> {
        let map = self.subs.lock().ok()?;
        let mut s = map.get(subscription)?.clone();
        s.lag_seconds = s
            .caught_up_ms
            .map(|t| ((now_ms() as i64 - t).max(0) as f64) / 1000.0);
        Some(s)
    }

    fn update(&self, subs: &[String], f: impl Fn(&mut SubscriptionStatus)) {
        if let Ok(mut map) = self.subs.lock() {
            for name in subs {
                f(map.entry(name.clone()).or_default());
            }
        }
    }
}

/// Where a walk of the event stream stands. Stored as a cursor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamCursor {
    /// `emitted_at` of the last event taken, in ms.
    pub after_ms: i64,
    /// Ids of the events taken at exactly `after_ms`.
    pub ids: Vec<String>,
    /// For a subscription's own backfill: where it stops (the stream's position when it
    /// began). `None` for the connection's stream.
    #[serde(default)]
    pub until_ms: Option<i64>,
}

impl StreamCursor {
    /// Whether `event_ms`/`id` is past this cursor (not taken yet).
    pub fn is_new(&self, event_ms: i64, id: &str) -> bool {
        event_ms > self.after_ms || (event_ms == self.after_ms && !self.ids.iter().any(|i| i == id))
    }

    /// Moves past an event.
    pub fn advance(&mut self, event_ms: i64, id: &str) {
        if event_ms > self.after_ms {
            self.after_ms = event_ms;
            self.ids.clear();
        }
        if event_ms == self.after_ms && !self.ids.iter().any(|i| i == id) {
            self.ids.push(id.to_string());
        }
    }
}

/// Why a walk stopped early.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error(transparent)]
    Front(#[from] FrontError),
    #[error("cannot record polled events: {0}")]
    Ingest(#[from] IngestError),
    #[error("stopped")]
    Stopped,
}

/// Cursor kinds in the state database.
const STREAM: &str = "events";
const BACKFILL: &str = "backfill";

/// The event types to ask for: messages always, changes when a subscription emits updates.
pub fn event_types(subs: &[Subscription]) -> Vec<&'static str> {
    let mut types: Vec<&'static str> = MESSAGE_TYPES.to_vec();
    if subs.iter().any(|s| s.emit_updated) {
        types.extend(UPDATE_TYPES);
    }
    types
}

/// `q[inboxes]` for the stream: only when every subscription of the connection is scoped to
/// inboxes and all of them are resolved; otherwise empty (all inboxes).
pub fn inbox_scope(subs: &[Subscription], names: &InboxNames) -> Vec<String> {
    let mut ids = Vec::new();
    for sub in subs {
        if sub.inboxes.is_empty() {
            return Vec::new();
        }
        for inbox in &sub.inboxes {
            match names.resolve(&sub.front, inbox) {
                Some(id) => ids.push(id),
                None => return Vec::new(),
            }
        }
    }
    ids.sort();
    ids.dedup();
    ids
}

/// One Front connection's polling.
pub struct Connection {
    pub name: String,
    pub client: FrontClient,
    /// Every subscription of this connection (routing fans events out to all of them).
    pub subscriptions: Vec<Subscription>,
    /// All subscriptions of the config, to rebuild routing after inbox names resolve.
    pub all_subscriptions: Arc<Vec<Subscription>>,
    pub names: Arc<InboxNames>,
    pub routing: Arc<RwLock<Arc<Routing>>>,
    pub store: Store,
    pub writer: Writer,
    pub status: Arc<PollStatus>,
    pub stop: CancellationToken,
}

impl Connection {
    fn sub_names(&self) -> Vec<String> {
        self.subscriptions.iter().map(|s| s.name.clone()).collect()
    }

    /// Whether this connection reads the event stream at all (polling or a backfill).
    pub fn polls(subscriptions: &[Subscription]) -> bool {
        subscriptions
            .iter()
            .any(|s| !s.poll_interval.is_zero() || !s.backfill.is_zero())
    }

    /// Resolves inbox names, then polls until stopped. Returns early when nothing polls
    /// (no `poll_interval`: after the backfill, or at once).
    pub async fn run(self) {
        let interval = self
            .subscriptions
            .iter()
            .map(|s| s.poll_interval)
            .filter(|d| !d.is_zero())
            .min();
        let polls = Self::polls(&self.subscriptions);
        let mut backoff = Duration::from_secs(1);
        let mut auth_reported = false;
        // An OAuth connection waiting for an operator wakes as soon as a grant is stored.
        let mut grant_changes = self.client.oauth().map(|s| s.changes());
        let mut names_resolved = !self
            .subscriptions
            .iter()
            .flat_map(|s| &s.inboxes)
            .any(|i| !i.starts_with("inb_"));
        loop {
            let result = async {
                if !names_resolved {
                    self.resolve_inbox_names().await?;
                    names_resolved = true;
                }
                if polls {
                    self.poll_once().await
                } else {
                    Ok(())
                }
            }
            .await;
            let wait = match result {
                Ok(()) => {
                    backoff = Duration::from_secs(1);
                    if auth_reported {
                        tracing::info!(connection = %self.name, "front accepts the token again; polling resumed");
                        auth_reported = false;
                    }
                    match interval {
                        Some(i) => i,
                        None => {
                            if polls {
                                tracing::info!(connection = %self.name, "backfill done; polling is off (poll_interval = \"0s\")");
                            }
                            return;
                        }
                    }
                }
                Err(PollError::Stopped) => return,
                Err(PollError::Front(e)) if e.is_auth() => {
                    if !auth_reported {
                        tracing::error!(connection = %self.name, error = %e, retry_in_s = AUTH_RETRY.as_secs(), "polling stopped for this connection");
                        auth_reported = true;
                    }
                    self.set_error(&e.to_string());
                    AUTH_RETRY
                }
                Err(e) => {
                    tracing::warn!(connection = %self.name, error = %e, retry_in_ms = backoff.as_millis() as u64, "poll failed; will retry");
                    self.set_error(&e.to_string());
                    let w = crate::outbox::jitter(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(300));
                    w
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = grant_changed(&mut grant_changes) => {}
                _ = self.stop.cancelled() => return,
            }
        }
    }

    fn set_error(&self, e: &str) {
        self.status
            .update(&self.sub_names(), |s| s.last_error = Some(e.to_string()));
    }

    /// Resolves inbox names through `GET /inboxes` and swaps the routing table.
    pub async fn resolve_inbox_names(&self) -> Result<(), PollError> {
        let inboxes: Vec<Inbox> = self.client.inboxes().await?;
        let map: HashMap<String, String> = inboxes.into_iter().map(|i| (i.name, i.id)).collect();
        for sub in &self.subscriptions {
            for inbox in sub.inboxes.iter().filter(|i| !i.starts_with("inb_")) {
                if !map.contains_key(inbox) {
                    tracing::error!(
                        connection = %self.name,
                        subscription = %sub.name,
                        inbox = %inbox,
                        "no inbox of that name is visible to the token; check the name (`frontsync inboxes`) or, for a private inbox, use a token with the private resources namespace"
                    );
                }
            }
        }
        self.names.set(&self.name, map);
        let routing = Arc::new(self.names.routing(&self.all_subscriptions));
        match self.routing.write() {
            Ok(mut r) => *r = routing,
            Err(p) => *p.into_inner() = routing,
        }
        Ok(())
    }

    /// One round: pending backfills of subscriptions added later, then the stream to its end.
    async fn poll_once(&self) -> Result<(), PollError> {
        let stream = self.stream_cursor().await?;
        for sub in &self.subscriptions {
            if let Some(job) = self.store_cursor(BACKFILL, &sub.name).await?
                && job.until_ms.is_some_and(|until| job.after_ms < until)
            {
                self.walk(job, Some(&sub.name)).await?;
            }
        }
        let end = self.walk(stream, None).await?;
        let at = now_ms() as i64;
        self.status.update(&self.sub_names(), |s| {
            s.cursor = Some(format_ms(end.after_ms));
            s.last_poll_at = Some(format_ms(at));
            s.caught_up_ms = Some(at);
            s.last_error = None;
        });
        Ok(())
    }

    async fn store_cursor(
        &self,
        kind: &str,
        name: &str,
    ) -> Result<Option<StreamCursor>, PollError> {
        let store = self.store.clone();
        let (kind, name) = (kind.to_string(), name.to_string());
        tokio::task::spawn_blocking(move || store.cursor::<StreamCursor>(&kind, &name))
            .await
            .map_err(|e| PollError::Ingest(IngestError::Store(e.to_string())))?
            .map_err(|e| PollError::Ingest(e.into()))
    }

    /// The connection's stream cursor; on the very first start, `backfill` ago. A
    /// subscription that was not there when the stream began gets its own backfill job.
    async fn stream_cursor(&self) -> Result<StreamCursor, PollError> {
        let now = now_ms() as i64;
        let horizon = |sub: &Subscription| now - sub.backfill.as_millis() as i64;
        let mut updates = Vec::new();
        let existing = self.store_cursor(STREAM, &self.name).await?;
        let stream_is_new = existing.is_none();
        let stream = match existing {
            Some(c) => c,
            None => {
                let start = self.subscriptions.iter().map(horizon).min().unwrap_or(now);
                let c = StreamCursor {
                    after_ms: start,
                    ids: Vec::new(),
                    until_ms: None,
                };
                tracing::info!(connection = %self.name, from = %format_ms(start), "first start: reading the event stream from here");
                updates.push(cursor_update(STREAM, &self.name, &c));
                c
            }
        };
        for sub in &self.subscriptions {
            if self.store_cursor(BACKFILL, &sub.name).await?.is_some() {
                continue;
            }
            // A job that starts at or after the stream's start has nothing to do: mark it done.
            let from = horizon(sub);
            let stream_began_after = !stream_is_new && from < stream.after_ms;
            let job = StreamCursor {
                after_ms: from,
                ids: Vec::new(),
                until_ms: Some(if stream_began_after {
                    stream.after_ms
                } else {
                    from
                }),
            };
            if stream_began_after {
                tracing::info!(subscription = %sub.name, from = %format_ms(from), "new subscription: backfilling it on its own");
            }
            updates.push(cursor_update(BACKFILL, &sub.name, &job));
        }
        if !updates.is_empty() {
            self.writer.ingest(Vec::new(), updates).await?;
        }
        Ok(stream)
    }

    /// Reads the stream from `cursor` to its end (or to `until_ms`), committing each page with
    /// its cursor. `target` routes to one subscription (its own backfill).
    async fn walk(
        &self,
        mut cursor: StreamCursor,
        target: Option<&str>,
    ) -> Result<StreamCursor, PollError> {
        let types = event_types(&self.subscriptions);
        let inboxes = inbox_scope(&self.subscriptions, &self.names);
        let (kind, key) = match target {
            Some(sub) => (BACKFILL, sub.to_string()),
            None => (STREAM, self.name.clone()),
        };
        // One millisecond early: `q[after]` may be exclusive, and events at exactly the
        // cursor's time may not all have been taken.
        let after = (cursor.after_ms - 1) as f64 / 1000.0;
        let mut pager = self
            .client
            .events_page::<Event>(Some(after), &types, &inboxes);
        let started = Instant::now();
        let requests_before = self.client.limiter().stats().requests_total;
        let start_ms = cursor.after_ms;
        let mut last_progress = Instant::now();
        let (mut read, mut made) = (0usize, 0usize);
        loop {
            let page = tokio::select! {
                p = pager.next_page() => p?,
                _ = self.stop.cancelled() => return Err(PollError::Stopped),
            };
            let Some((mut events, _next)) = page else {
                break;
            };
            events.sort_by(|a, b| {
                let ka = a.emitted_at.and_then(secs_to_ms).unwrap_or(i64::MAX);
                let kb = b.emitted_at.and_then(secs_to_ms).unwrap_or(i64::MAX);
                (ka, &a.id).cmp(&(kb, &b.id))
            });
            let mut batch = Vec::with_capacity(events.len());
            let mut reached_end = false;
            for event in events {
                let Some(ms) = event.emitted_at.and_then(secs_to_ms) else {
                    tracing::warn!(connection = %self.name, event = %event.id, "event without emitted_at; skipped");
                    continue;
                };
                if !cursor.is_new(ms, &event.id) {
                    continue;
                }
                if cursor.until_ms.is_some_and(|until| ms > until) {
                    reached_end = true;
                    break;
                }
                read += 1;
                let event = if event.is_preview() {
                    self.client.event::<Event>(&event.id).await?
                } else {
                    event
                };
                match snapshot_from_event(&event) {
                    Ok(snapshot) => {
                        let mut incoming = IncomingEvent::new(&self.name, &event.id, snapshot);
                        incoming.only_subscription = target.map(str::to_string);
                        batch.push(incoming);
                    }
                    Err(e) => tracing::warn!(connection = %self.name, error = %e, "event skipped"),
                }
                cursor.advance(ms, &event.id);
            }
            if reached_end && let Some(until) = cursor.until_ms {
                // Done: mark the job complete even if the last page had nothing for it.
                cursor.after_ms = cursor.after_ms.max(until);
            }
            let outcome = self
                .writer
                .ingest(batch, vec![cursor_update(kind, &key, &cursor)])
                .await?;
            made += outcome.highlights;
            if last_progress.elapsed() >= PROGRESS_EVERY {
                last_progress = Instant::now();
                let now = now_ms() as i64;
                let covered = (cursor.after_ms - start_ms).max(0) as f64;
                let behind = (now - cursor.after_ms).max(0) as f64;
                let speed = covered / started.elapsed().as_secs_f64().max(0.001);
                let eta_s = if speed > 0.0 {
                    behind / speed
                } else {
                    f64::NAN
                };
                tracing::info!(
                    connection = %self.name,
                    subscription = target.unwrap_or("*"),
                    events = read,
                    highlights = made,
                    requests = self.client.limiter().stats().requests_total - requests_before,
                    at = %format_ms(cursor.after_ms),
                    eta_s = eta_s.round(),
                    "reading the event stream"
                );
            }
            if reached_end {
                break;
            }
        }
        if let Some(until) = cursor.until_ms.filter(|u| cursor.after_ms < *u) {
            // The stream ended before `until`: the job is complete.
            cursor.after_ms = until;
            self.writer
                .ingest(Vec::new(), vec![cursor_update(kind, &key, &cursor)])
                .await?;
        }
        if read > 0 {
            tracing::info!(
                connection = %self.name,
                subscription = target.unwrap_or("*"),
                events = read,
                highlights = made,
                requests = self.client.limiter().stats().requests_total - requests_before,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "event stream read"
            );
        }
        Ok(cursor)
    }
}

/// Resolves when an operator stored a new OAuth grant; never without a token source.
async fn grant_changed(changes: &mut Option<tokio::sync::watch::Receiver<u64>>) {
    match changes {
        Some(rx) => {
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending::<()>().await,
    }
}

fn cursor_update(kind: &str, name: &str, cursor: &StreamCursor) -> CursorUpdate {
    CursorUpdate {
        kind: kind.to_string(),
        name: name.to_string(),
        value: serde_json::to_value(cursor).unwrap_or(serde_json::Value::Null),
    }
}

/// Completes webhook previews of one connection: `GET /events/{id}` for each pending
/// preview, then ingests the full event (removing the preview in the same commit).
pub async fn run_enricher(
    connection: String,
    client: FrontClient,
    store: Store,
    writer: Writer,
    bell: Arc<SinkBell>,
    stop: CancellationToken,
) {
    let wake = bell.bell(&preview_bell(&connection));
    let mut backoff = Duration::from_secs(1);
    let mut auth_reported = false;
    let mut grant_changes = client.oauth().map(|s| s.changes());
    loop {
        let pending = {
            let store = store.clone();
            let c = connection.clone();
            tokio::task::spawn_blocking(move || store.pending_previews(&c, 32)).await
        };
        let pending = match pending {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                tracing::error!(connection = %connection, error = %e, "cannot read pending previews");
                Vec::new()
            }
            Err(_) => Vec::new(),
        };
        if pending.is_empty() {
            tokio::select! {
                _ = wake.notified() => continue,
                _ = tokio::time::sleep(Duration::from_secs(30)) => continue,
                _ = stop.cancelled() => return,
            }
        }
        let mut failed = None;
        for (id, preview_json) in pending {
            let fetched = tokio::select! {
                r = client.event::<Event>(&id) => r,
                _ = stop.cancelled() => return,
            };
            let event = match fetched {
                Ok(full) => Some(full),
                Err(e) if e.status() == Some(404) => {
                    tracing::warn!(connection = %connection, event = %id, "front no longer has this event; keeping the preview's ids");
                    serde_json::from_slice::<Event>(&preview_json).ok()
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            };
            let incoming = event.and_then(|ev| match snapshot_from_event(&ev) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(connection = %connection, error = %e, "preview cannot be completed; dropped");
                    None
                }
            });
            let result = match incoming {
                Some(snapshot) => {
                    let mut ev = IncomingEvent::new(&connection, &id, snapshot);
                    ev.completes_preview = true;
                    writer.ingest(vec![ev], Vec::new()).await.map(|_| ())
                }
                None => writer.drop_preview(&connection, &id).await,
            };
            if result.is_err() {
                // The writer stopped (shutdown): the preview stays pending for the next start.
                return;
            }
            backoff = Duration::from_secs(1);
        }
        if let Some(e) = failed {
            let wait = if e.is_auth() {
                // An OAuth connection's missing or refused grant stays one ERROR until it
                // is fixed (the poller reports it too); an API token's every few minutes.
                if !(e.oauth().is_some() && auth_reported) {
                    tracing::error!(connection = %connection, error = %e, "cannot complete webhook previews");
                }
                auth_reported = true;
                AUTH_RETRY
            } else {
                tracing::warn!(connection = %connection, error = %e, "cannot complete a webhook preview yet; will retry");
                let w = crate::outbox::jitter(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(300));
                w
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = grant_changed(&mut grant_changes) => {}
                _ = stop.cancelled() => return,
            }
        } else {
            auth_reported = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_takes_each_event_once_at_equal_times() {
        let mut c = StreamCursor {
            after_ms: 1000,
            ids: vec!["evt_a".into()],
            until_ms: None,
        };
        assert!(!c.is_new(999, "evt_z"));
        assert!(!c.is_new(1000, "evt_a"));
        assert!(c.is_new(1000, "evt_b"));
        c.advance(1000, "evt_b");
        assert_eq!(c.ids, vec!["evt_a", "evt_b"]);
        assert!(!c.is_new(1000, "evt_b"));
        c.advance(1001, "evt_c");
        assert_eq!(
            (c.after_ms, c.ids.clone()),
            (1001, vec!["evt_c".to_string()])
        );
    }
}
