//! The single writer: every state change goes through one thread that owns redb writes.
//!
//! Callers (webhook requests, the poller, sink tasks) send [`WriteOp`]s through a [`Writer`].
//! The thread takes whatever is queued (up to [`MAX_BATCH_OPS`]), applies it all in one
//! write transaction, commits once (one `fdatasync`, see `store`), then answers every waiting caller. A caller
//! that hears `Ok` knows its work is durable; a failed commit answers everyone with an error
//! and writes nothing, so nothing is acknowledged that was not persisted.
//!
//! Applying an event: mark its id seen (a repeat is a no-op), then for each subscription of
//! its connection merge the event's [`Snapshot`] into the stored conversation state,
//! [`decide`] whether a Highlight is due, and append it to the outbox of each of the
//! subscription's sinks.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use frontsync_sinks::{Change, Highlight};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::config::Subscription;
use crate::metrics::Metrics;
use crate::normalize::{self, Snapshot};
use crate::secret::SecretValue;
use crate::store::{
    DeadLetterOutcome, DeadLetterSelection, OAuthGrant, PruneStep, Rejection, Store, StoreError,
    Txn,
};

/// The most operations applied in one commit. Bounded so one commit stays short.
pub const MAX_BATCH_OPS: usize = 512;

/// Queue depth before callers wait for the writer (back-pressure, not loss).
const QUEUE_DEPTH: usize = 4096;

/// The idle writer moves held seen marks and states into redb (see
/// [`Store::write_back_held`]) once at least this many are held: two per event, so every 64
/// events. Fewer would bring back a redb commit per event at low rates, which is what holding
/// them saves.
const WRITE_BACK_MIN_ROWS: usize = 128;

/// ... and at most this many in one commit, which bounds how long an event arriving meanwhile
/// waits: callgrind counts about 10 K instructions per row inserted (`writer_cost --ack`,
/// batch 25), so 2.6 M, on the order of a millisecond on the benchmark machine.
const WRITE_BACK_MAX_ROWS: usize = 256;

/// A writer that is never idle (saturation) moves held rows into redb between its commits
/// once this many are held, so that the inserts are spread over the second in
/// [`WRITE_BACK_MAX_ROWS`] pieces instead of piling up for the checkpoint, which would
/// insert them all at once while every write waits (BENCHMARKS.md: ack p99 13 ms at
/// saturation when the checkpoints did it, 1 MiB of rows at a time).
const WRITE_BACK_BUSY_ROWS: usize = WRITE_BACK_MAX_ROWS;

/// An event ready to be recorded: its connection, its id and what it says.
#[derive(Debug, Clone)]
pub struct IncomingEvent {
    pub connection: String,
    pub event_id: String,
    pub snapshot: Snapshot,
    /// Route only to this subscription (the backfill of a subscription added later). Its
    /// seen-mark is kept apart from the connection's, so events other subscriptions already
    /// had still reach it; `decide` makes replays harmless.
    pub only_subscription: Option<String>,
    /// This completes a webhook preview kept in the pending table: remove it.
    pub completes_preview: bool,
}

impl IncomingEvent {
    /// An event for every matching subscription of its connection.
    pub fn new(connection: &str, event_id: &str, snapshot: Snapshot) -> Self {
        IncomingEvent {
            connection: connection.to_string(),
            event_id: event_id.to_string(),
            snapshot,
            only_subscription: None,
            completes_preview: false,
        }
    }
}

/// A cursor to store in the same transaction as the events it covers.
#[derive(Debug, Clone)]
pub struct CursorUpdate {
    pub kind: String,
    pub name: String,
    pub value: serde_json::Value,
}

/// What a batch of events did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestOutcome {
    pub new_events: usize,
    pub duplicates: usize,
    pub highlights: usize,
}

/// Why a write was not done. Nothing of the failed operation was persisted.
#[derive(Debug, Clone, thiserror::Error)]
pub enum IngestError {
    #[error("{0}")]
    Store(String),
    #[error("the state writer has stopped")]
    Stopped,
}

impl From<StoreError> for IngestError {
    fn from(e: StoreError) -> Self {
        IngestError::Store(e.to_string())
    }
}

/// The per-conversation state kept for each subscription. Stored as an array of its fields
/// in this order (see `store::tables::CONVERSATIONS`): never remove or reorder one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationState {
    /// Revision of the last Highlight emitted; 0 = never emitted.
    pub revision: u64,
    /// `Snapshot::content_hash` at the last emission.
    pub content_hash: u64,
    /// Everything known about the conversation, merged over all its events.
    pub snapshot: Snapshot,
}

/// One subscription as the writer routes with it: its config and its inbox filter resolved
/// to ids.
#[derive(Debug, Clone)]
pub struct Route {
    pub subscription: Subscription,
    pub inbox_ids: Vec<String>,
}

/// Subscriptions by connection. Swapped whole on reload.
#[derive(Debug, Clone, Default)]
pub struct Routing {
    by_connection: HashMap<String, Vec<Route>>,
}

impl Routing {
    /// Builds the routing table; `resolve_inbox` maps a configured inbox (id or name) to an id.
    pub fn new(
        subscriptions: &[Subscription],
        resolve_inbox: impl Fn(&Subscription, &str) -> Option<String>,
    ) -> Self {
        let mut by_connection: HashMap<String, Vec<Route>> = HashMap::new();
        for sub in subscriptions {
            let inbox_ids = sub
                .inboxes
                .iter()
                .filter_map(|i| resolve_inbox(sub, i))
                .collect();
            by_connection
                .entry(sub.front.clone())
                .or_default()
                .push(Route {
                    subscription: sub.clone(),
                    inbox_ids,
                });
        }
        Routing { by_connection }
    }

    /// The subscriptions fed by a connection.
    pub fn routes(&self, connection: &str) -> &[Route] {
        self.by_connection
            .get(connection)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }
}

/// Inbox names resolved through `GET /inboxes`, per connection (name -> id).
#[derive(Debug, Default)]
pub struct InboxNames {
    by_connection: RwLock<HashMap<String, HashMap<String, String>>>,
}

impl InboxNames {
    /// Replaces what is known of one connection's inboxes.
    pub fn set(&self, connection: &str, names: HashMap<String, String>) {
        let mut map = match self.by_connection.write() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        map.insert(connection.to_string(), names);
    }

    /// The id of a configured inbox: an `inb_` id as is, a name when resolved.
    pub fn resolve(&self, connection: &str, inbox: &str) -> Option<String> {
        if inbox.starts_with("inb_") {
            return Some(inbox.to_string());
        }
        let map = match self.by_connection.read() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        map.get(connection)?.get(inbox).cloned()
    }

    /// Builds the routing table with what is resolved so far. An unresolved name matches
    /// nothing (a subscription scoped only to unresolved names receives nothing yet).
    pub fn routing(&self, subscriptions: &[Subscription]) -> Routing {
        Routing::new(subscriptions, |sub, inbox| self.resolve(&sub.front, inbox))
    }
}

/// Wakes sink tasks when their outbox grew. Shared between the writer and the sinks.
#[derive(Debug, Default)]
pub struct SinkBell {
    bells: RwLock<HashMap<String, Arc<Notify>>>,
}

impl SinkBell {
    /// The bell of one sink, created on first use.
    pub fn bell(&self, sink: &str) -> Arc<Notify> {
        if let Ok(map) = self.bells.read()
            && let Some(b) = map.get(sink)
        {
            return b.clone();
        }
        let mut map = match self.bells.write() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.entry(sink.to_string()).or_default().clone()
    }

    /// Wakes whoever waits on this bell.
    pub fn ring(&self, sink: &str) {
        self.bell(sink).notify_one();
    }
}

/// An operation for the writer thread.
enum WriteOp {
    Ingest {
        events: Vec<IncomingEvent>,
        cursors: Vec<CursorUpdate>,
        reply: oneshot::Sender<Result<IngestOutcome, IngestError>>,
    },
    Ack {
        sink: String,
        seqs: Vec<u64>,
        reply: oneshot::Sender<Result<(), IngestError>>,
    },
    DropPreview {
        connection: String,
        event_id: String,
        reply: oneshot::Sender<Result<(), IngestError>>,
    },
    PruneSeen {
        cutoff_ms: u64,
        after: Option<String>,
        max_scan: usize,
        reply: oneshot::Sender<Result<PruneStep, IngestError>>,
    },
    Defer {
        connection: String,
        event_id: String,
        event_json: Vec<u8>,
        reply: oneshot::Sender<Result<bool, IngestError>>,
    },
    DeadLetter {
        sink: String,
        seq: u64,
        letter: Rejection,
        reply: oneshot::Sender<Result<(), IngestError>>,
    },
    /// Operator: dead letters back to the end of the outbox (`frontsync outbox retry`).
    RequeueDead {
        sink: String,
        selection: DeadLetterSelection,
        reply: oneshot::Sender<Result<DeadLetterOutcome, IngestError>>,
    },
    /// Operator: dead letters deleted (`frontsync outbox drop`).
    DropDead {
        sink: String,
        selection: DeadLetterSelection,
        reply: oneshot::Sender<Result<DeadLetterOutcome, IngestError>>,
    },
    /// An OAuth grant: a new authorization (`replaces: None`, always stored) or the result
    /// of a refresh, stored only if the stored grant still has the refresh token
    /// `replaces`. Answers whether it was stored.
    PutGrant {
        connection: String,
        grant: OAuthGrant,
        replaces: Option<SecretValue>,
        reply: oneshot::Sender<Result<bool, IngestError>>,
    },
}

/// The handle callers use to reach the writer thread. Cheap to clone; the thread stops
/// once every clone is dropped and the queue is drained.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<WriteOp>,
}

impl Writer {
    /// Sends one operation to the writer thread and waits for its commit.
    async fn call<T>(
        &self,
        op: impl FnOnce(oneshot::Sender<Result<T, IngestError>>) -> WriteOp,
    ) -> Result<T, IngestError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(op(reply))
            .await
            .map_err(|_| IngestError::Stopped)?;
        rx.await.map_err(|_| IngestError::Stopped)?
    }

    /// Records events (and optionally a cursor) durably.
    pub async fn ingest(
        &self,
        events: Vec<IncomingEvent>,
        cursors: Vec<CursorUpdate>,
    ) -> Result<IngestOutcome, IngestError> {
        self.call(|reply| WriteOp::Ingest {
            events,
            cursors,
            reply,
        })
        .await
    }

    /// One step of forgetting seen event ids first recorded before `cutoff_ms`: looks at up
    /// to `max_scan` ids after `after` (see [`crate::store::Txn::prune_seen`]).
    pub async fn prune_seen(
        &self,
        cutoff_ms: u64,
        after: Option<String>,
        max_scan: usize,
    ) -> Result<PruneStep, IngestError> {
        self.call(|reply| WriteOp::PruneSeen {
            cutoff_ms,
            after,
            max_scan,
            reply,
        })
        .await
    }

    /// Forgets a pending webhook preview that cannot be completed.
    pub async fn drop_preview(&self, connection: &str, event_id: &str) -> Result<(), IngestError> {
        self.call(|reply| WriteOp::DropPreview {
            connection: connection.to_string(),
            event_id: event_id.to_string(),
            reply,
        })
        .await
    }

    /// Keeps a webhook preview durably until it is completed through the API. Returns false
    /// when the event was already seen.
    pub async fn defer_preview(
        &self,
        connection: &str,
        event_id: &str,
        event_json: Vec<u8>,
    ) -> Result<bool, IngestError> {
        self.call(|reply| WriteOp::Defer {
            connection: connection.to_string(),
            event_id: event_id.to_string(),
            event_json,
            reply,
        })
        .await
    }

    /// Removes delivered entries from a sink's outbox.
    pub async fn ack(&self, sink: &str, seqs: Vec<u64>) -> Result<(), IngestError> {
        self.call(|reply| WriteOp::Ack {
            sink: sink.to_string(),
            seqs,
            reply,
        })
        .await
    }

    /// Moves one outbox entry to the sink's dead letters.
    pub async fn dead_letter(
        &self,
        sink: &str,
        seq: u64,
        letter: Rejection,
    ) -> Result<(), IngestError> {
        self.call(|reply| WriteOp::DeadLetter {
            sink: sink.to_string(),
            seq,
            letter,
            reply,
        })
        .await
    }
}

impl Writer {
    /// Moves dead letters of `sink` back to the END of its outbox (new seqs), then wakes
    /// the sink. All or nothing: unknown seqs are answered as [`DeadLetterOutcome::Unknown`]
    /// and change nothing (they never fail the other operations of the same commit).
    pub async fn requeue_dead_letters(
        &self,
        sink: &str,
        selection: DeadLetterSelection,
    ) -> Result<DeadLetterOutcome, IngestError> {
        self.call(|reply| WriteOp::RequeueDead {
            sink: sink.to_string(),
            selection,
            reply,
        })
        .await
    }

    /// Deletes dead letters of `sink`; all or nothing, like
    /// [`Writer::requeue_dead_letters`].
    pub async fn drop_dead_letters(
        &self,
        sink: &str,
        selection: DeadLetterSelection,
    ) -> Result<DeadLetterOutcome, IngestError> {
        self.call(|reply| WriteOp::DropDead {
            sink: sink.to_string(),
            selection,
            reply,
        })
        .await
    }

    /// Stores an OAuth grant durably: a new authorization when `replaces` is `None`, else a
    /// refresh's result, stored only if the stored refresh token is still `replaces`.
    /// Answers whether it was stored (`false`: the stored grant changed meanwhile).
    pub async fn put_oauth_grant(
        &self,
        connection: &str,
        grant: OAuthGrant,
        replaces: Option<SecretValue>,
    ) -> Result<bool, IngestError> {
        self.call(|reply| WriteOp::PutGrant {
            connection: connection.to_string(),
            grant,
            replaces,
            reply,
        })
        .await
    }
}

/// Shared, swappable routing table (replaced on reload).
pub type SharedRouting = Arc<RwLock<Arc<Routing>>>;

/// Starts the writer thread. Join the handle after dropping every [`Writer`] clone.
pub fn spawn_writer(
    store: Store,
    routing: SharedRouting,
    bell: Arc<SinkBell>,
    metrics: Arc<Metrics>,
) -> std::io::Result<(Writer, std::thread::JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
    let handle = std::thread::Builder::new()
        .name("frontsync-writer".into())
        .spawn(move || writer_loop(store, routing, bell, metrics, rx))?;
    Ok((Writer { tx }, handle))
}

fn writer_loop(
    store: Store,
    routing: SharedRouting,
    bell: Arc<SinkBell>,
    metrics: Arc<Metrics>,
    mut rx: mpsc::Receiver<WriteOp>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH_OPS);
    let mut write_back_failing = false;
    // Moves some of what is held out of redb into it, a little at a time, so the next
    // checkpoint (which stalls every write) has little left to do; true if it moved any.
    let mut write_back = |min_rows: usize| {
        match store.write_back_held(min_rows, WRITE_BACK_MAX_ROWS) {
            Ok(0) => false,
            Ok(_) => {
                write_back_failing = false;
                true
            }
            Err(e) => {
                // Harmless: the rows stay held and the checkpoint writes them (or fails as
                // loudly as any other write).
                if !write_back_failing {
                    tracing::warn!(error = %e, "could not move held rows into the state file");
                }
                write_back_failing = true;
                false
            }
        }
    };
    loop {
        let first = match rx.try_recv() {
            Ok(op) => op,
            Err(mpsc::error::TryRecvError::Disconnected) => break,
            Err(mpsc::error::TryRecvError::Empty) => {
                if write_back(WRITE_BACK_MIN_ROWS) {
                    continue;
                }
                match rx.blocking_recv() {
                    Some(op) => op,
                    None => break,
                }
            }
        };
        batch.push(first);
        while batch.len() < MAX_BATCH_OPS {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let routing = match routing.read() {
            Ok(r) => r.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        commit_batch(&store, &routing, &bell, &metrics, &mut batch);
        // Busy: keep pace with intake between commits (see `WRITE_BACK_BUSY_ROWS`).
        write_back(WRITE_BACK_BUSY_ROWS);
    }
    tracing::debug!("state writer stopped");
}

/// Applies and commits one batch, then answers every caller in it.
fn commit_batch(
    store: &Store,
    routing: &Routing,
    bell: &SinkBell,
    metrics: &Metrics,
    batch: &mut Vec<WriteOp>,
) {
    let started = std::time::Instant::now();
    let now = now_ms();
    let mut touched = BTreeSet::new();
    let mut emitted = Vec::new();
    let mut pruned = std::collections::VecDeque::new();
    let mut deferred = BTreeSet::new();
    // Answers of the dead-letter operations, in batch order.
    let mut letters = std::collections::VecDeque::new();
    // Answers of the grant operations, in batch order.
    let mut grants = std::collections::VecDeque::new();
    let result = store.write(|txn| {
        let mut outcomes = Vec::with_capacity(batch.len());
        for op in batch.iter_mut() {
            outcomes.push(match op {
                WriteOp::Ingest {
                    events, cursors, ..
                } => {
                    let mut outcome = IngestOutcome::default();
                    for ev in events {
                        apply_event(
                            txn,
                            routing,
                            ev,
                            now,
                            &mut outcome,
                            &mut touched,
                            &mut emitted,
                        )?;
                    }
                    for c in cursors {
                        txn.set_cursor(&c.kind, &c.name, &c.value)?;
                    }
                    Some(outcome)
                }
                WriteOp::Ack { sink, seqs, .. } => {
                    txn.ack(sink, seqs)?;
                    None
                }
                WriteOp::DropPreview {
                    connection,
                    event_id,
                    ..
                } => {
                    txn.remove_pending_preview(connection, event_id)?;
                    None
                }
                WriteOp::PruneSeen {
                    cutoff_ms,
                    after,
                    max_scan,
                    ..
                } => {
                    pruned.push_back(txn.prune_seen(*cutoff_ms, after.as_deref(), *max_scan)?);
                    None
                }
                WriteOp::Defer {
                    connection,
                    event_id,
                    event_json,
                    ..
                } => {
                    let added = txn.add_pending_preview(connection, event_id, event_json)?;
                    if added {
                        deferred.insert(connection.clone());
                    }
                    Some(IngestOutcome {
                        new_events: usize::from(added),
                        duplicates: usize::from(!added),
                        highlights: 0,
                    })
                }
                WriteOp::DeadLetter {
                    sink, seq, letter, ..
                } => {
                    txn.dead_letter(sink, *seq, letter, now)?;
                    None
                }
                WriteOp::RequeueDead {
                    sink, selection, ..
                } => {
                    let outcome = txn.requeue_dead_letters(sink, selection)?;
                    if matches!(&outcome, DeadLetterOutcome::Done(moved) if !moved.is_empty()) {
                        touched.insert(sink.clone());
                    }
                    letters.push_back(outcome);
                    None
                }
                WriteOp::DropDead {
                    sink, selection, ..
                } => {
                    letters.push_back(txn.drop_dead_letters(sink, selection)?);
                    None
                }
                WriteOp::PutGrant {
                    connection,
                    grant,
                    replaces,
                    ..
                } => {
                    grants.push_back(match replaces {
                        None => txn.put_oauth_grant(connection, grant).map(|()| true)?,
                        Some(previous) => txn.replace_oauth_grant(connection, grant, previous)?,
                    });
                    None
                }
            });
        }
        Ok(outcomes)
    });
    let ops = batch.len();
    metrics.batch_size.observe(ops as f64);
    metrics
        .commit_seconds
        .observe(started.elapsed().as_secs_f64());
    match result {
        Ok(outcomes) => {
            metrics.add_highlights(&emitted);
            for o in outcomes.iter().flatten() {
                metrics
                    .events_ingested
                    .fetch_add(o.new_events as u64, std::sync::atomic::Ordering::Relaxed);
                metrics
                    .events_duplicate
                    .fetch_add(o.duplicates as u64, std::sync::atomic::Ordering::Relaxed);
            }
            for sink in &touched {
                bell.ring(sink);
            }
            for connection in &deferred {
                bell.ring(&preview_bell(connection));
            }
            for (op, outcome) in batch.drain(..).zip(outcomes) {
                match op {
                    WriteOp::Ingest { reply, .. } => {
                        let _ = reply.send(Ok(outcome.unwrap_or_default()));
                    }
                    WriteOp::Ack { reply, .. }
                    | WriteOp::DeadLetter { reply, .. }
                    | WriteOp::DropPreview { reply, .. } => {
                        let _ = reply.send(Ok(()));
                    }
                    WriteOp::Defer { reply, .. } => {
                        let _ = reply.send(Ok(outcome.is_some_and(|o| o.new_events > 0)));
                    }
                    WriteOp::RequeueDead { reply, .. } | WriteOp::DropDead { reply, .. } => {
                        let answer = letters.pop_front().ok_or_else(|| {
                            IngestError::Store("dead letter outcome missing".into())
                        });
                        let _ = reply.send(answer);
                    }
                    WriteOp::PutGrant { reply, .. } => {
                        let answer = grants
                            .pop_front()
                            .ok_or_else(|| IngestError::Store("grant outcome missing".into()));
                        let _ = reply.send(answer);
                    }
                    WriteOp::PruneSeen { reply, .. } => {
                        let answer = pruned
                            .pop_front()
                            .ok_or_else(|| IngestError::Store("prune outcome missing".into()));
                        let _ = reply.send(answer);
                    }
                }
            }
            tracing::debug!(
                ops,
                elapsed_us = started.elapsed().as_micros() as u64,
                "committed"
            );
        }
        Err(e) => {
            metrics
                .commit_failures
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::error!(
                ops,
                error = %e,
                "state commit failed; nothing in this batch was acknowledged (check the disk holding the state file)"
            );
            let err = IngestError::from(e);
            for op in batch.drain(..) {
                match op {
                    WriteOp::Ingest { reply, .. } => {
                        let _ = reply.send(Err(err.clone()));
                    }
                    WriteOp::Ack { reply, .. }
                    | WriteOp::DeadLetter { reply, .. }
                    | WriteOp::DropPreview { reply, .. } => {
                        let _ = reply.send(Err(err.clone()));
                    }
                    WriteOp::Defer { reply, .. } => {
                        let _ = reply.send(Err(err.clone()));
                    }
                    WriteOp::RequeueDead { reply, .. } | WriteOp::DropDead { reply, .. } => {
                        let _ = reply.send(Err(err.clone()));
                    }
                    WriteOp::PutGrant { reply, .. } => {
                        let _ = reply.send(Err(err.clone()));
                    }
                    WriteOp::PruneSeen { reply, .. } => {
                        let _ = reply.send(Err(err.clone()));
                    }
                }
            }
        }
    }
}

/// Applies one event. Its snapshot is moved into the state of the last subscription it
/// reaches (and cloned for the others before it): the caller answers from the batch's
/// outcomes, never from the event, and a snapshot is about 1 KB of strings.
fn apply_event(
    txn: &mut Txn<'_>,
    routing: &Routing,
    ev: &mut IncomingEvent,
    now: u64,
    outcome: &mut IngestOutcome,
    touched: &mut BTreeSet<String>,
    emitted: &mut Vec<(String, &'static str)>,
) -> Result<(), StoreError> {
    if ev.completes_preview {
        txn.remove_pending_preview(&ev.connection, &ev.event_id)?;
    }
    let seen_scope = match &ev.only_subscription {
        Some(sub) => format!("{}/{sub}", ev.connection),
        None => ev.connection.clone(),
    };
    if !txn.mark_seen(&seen_scope, &ev.event_id, now)? {
        outcome.duplicates += 1;
        return Ok(());
    }
    outcome.new_events += 1;
    let only = ev.only_subscription.as_deref();
    let mut reached = routing
        .routes(&ev.connection)
        .iter()
        .filter(|route| only.is_none_or(|only| only == route.subscription.name))
        .peekable();
    while let Some(route) = reached.next() {
        let sub = &route.subscription;
        let incoming = if reached.peek().is_none() {
            std::mem::take(&mut ev.snapshot)
        } else {
            ev.snapshot.clone()
        };
        let cnv = incoming.conversation_id.clone();
        let prev: Option<ConversationState> = txn.conversation(&sub.name, &cnv)?;
        let (state, emission) = decide(sub, &route.inbox_ids, prev, incoming);
        txn.put_conversation(&sub.name, &cnv, &state)?;
        if let Some(highlight) = emission {
            txn.enqueue_json(&sub.sinks, &highlight)?;
            for sink in &sub.sinks {
                if !touched.contains(sink) {
                    touched.insert(sink.clone());
                }
            }
            outcome.highlights += 1;
            let change = match highlight.change {
                Change::Created => "created",
                Change::Updated => "updated",
            };
            emitted.push((sub.name.clone(), change));
        }
    }
    Ok(())
}

/// Merges an incoming snapshot into a conversation's state and decides whether a Highlight
/// is due. Pure: the whole emission policy lives here.
///
/// - A conversation is emitted as `created` (revision 1) the first time it matches the
///   subscription's filters.
/// - After that, when `updated` is in `emit`, a change of status, tags, assignee or latest
///   message (the content hash) emits `updated` with the next revision.
/// - An event older than what is already known (polling catching up behind webhooks) only
///   fills gaps; it never emits.
pub fn decide(
    sub: &Subscription,
    inbox_filter: &[String],
    prev: Option<ConversationState>,
    incoming: Snapshot,
) -> (ConversationState, Option<Highlight>) {
    let (merged, fresh, revision, emitted_hash) = match prev {
        None => (incoming, true, 0, 0),
        Some(prev) => {
            let stale = matches!(
                (incoming.event_at_ms, prev.snapshot.event_at_ms),
                (Some(new), Some(old)) if new < old
            );
            if stale {
                let mut merged = prev.snapshot;
                merged.merge_older(&incoming);
                (merged, false, prev.revision, prev.content_hash)
            } else {
                let mut merged = incoming;
                merged.merge_older(&prev.snapshot);
                (merged, true, prev.revision, prev.content_hash)
            }
        }
    };
    let hash = merged.content_hash();
    let keep = |snapshot: Snapshot| ConversationState {
        revision,
        content_hash: emitted_hash,
        snapshot,
    };
    if !normalize::matches(sub, inbox_filter, &merged) {
        return (keep(merged), None);
    }
    if revision == 0 {
        let highlight = sub
            .emit_created
            .then(|| normalize::highlight(sub, &merged, 1, Change::Created));
        let state = ConversationState {
            revision: 1,
            content_hash: hash,
            snapshot: merged,
        };
        return (state, highlight);
    }
    if !fresh || hash == emitted_hash {
        return (keep(merged), None);
    }
    let next = revision + 1;
    if sub.emit_updated {
        let highlight = normalize::highlight(sub, &merged, next, Change::Updated);
        let state = ConversationState {
            revision: next,
            content_hash: hash,
            snapshot: merged,
        };
        (state, Some(highlight))
    } else {
        // Not re-emitting: remember the content so a later `updated` opt-in starts from here.
        let state = ConversationState {
            revision,
            content_hash: hash,
            snapshot: merged,
        };
        (state, None)
    }
}

/// The bell name that wakes a connection's preview enricher.
pub fn preview_bell(connection: &str) -> String {
    format!("preview-enricher\0{connection}")
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Rejection;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn dead_letter_ops_go_through_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let json = serde_json::to_vec(&serde_json::json!({"id": "s:c1", "revision": 1})).unwrap();
        store.write(|t| t.enqueue("a", &json)).unwrap();
        let bell = Arc::new(SinkBell::default());
        let routing: SharedRouting = Arc::new(RwLock::new(Arc::new(Routing::default())));
        let (writer, thread) =
            spawn_writer(store.clone(), routing, bell.clone(), Default::default()).unwrap();
        let rt = rt();
        let rejection = Rejection {
            error: "rejected".into(),
            status: Some(400),
            body_excerpt: None,
            attempts: 1,
        };
        rt.block_on(writer.dead_letter("a", 1, rejection)).unwrap();

        let attached = writer.clone();
        let (unknown, requeued) = rt.block_on(async {
            // Both in flight at once, likely one commit: the refused one fails nothing.
            tokio::join!(
                attached.drop_dead_letters("a", DeadLetterSelection::Seqs(vec![9])),
                writer.requeue_dead_letters("a", DeadLetterSelection::All),
            )
        });
        assert_eq!(unknown.unwrap(), DeadLetterOutcome::Unknown(vec![9]));
        let DeadLetterOutcome::Done(moved) = requeued.unwrap() else {
            panic!("requeue refused")
        };
        assert_eq!(moved.len(), 1);
        assert_eq!(moved[0].new_seq, Some(2));
        assert_eq!(store.outbox_depth("a").unwrap(), 1);
        // The commit rang the sink's bell.
        rt.block_on(async {
            tokio::time::timeout(std::time::Duration::from_secs(5), bell.bell("a").notified())
                .await
                .expect("bell rung")
        });

        // Once every handle is gone the writer stops.
        drop(attached);
        drop(writer);
        thread.join().unwrap();
    }

    /// A writer that never runs out of work still moves held rows into redb, between its
    /// commits, so they do not pile up for the checkpoint. Its queue holds three full batches
    /// when it starts and the sender is gone, so it never waits and never takes the idle
    /// write-back.
    #[test]
    fn a_busy_writer_writes_held_rows_back_between_commits() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        // No checkpoint by size or time: what is left held is what the write-back left.
        store.checkpoint_only_when_asked();
        let routing = Routing::new(&[decide_tests::sub(false, vec![])], |_, _| None);
        let routing: SharedRouting = Arc::new(RwLock::new(Arc::new(routing)));
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let commits = 3;
        let mut replies = Vec::new();
        for i in 0..commits * MAX_BATCH_OPS {
            let mut snapshot = decide_tests::snap(1, "assigned", "msg_1");
            snapshot.conversation_id = format!("cnv_{i}");
            let (reply, answer) = oneshot::channel();
            let events = vec![IncomingEvent::new("acme", &format!("evt_{i}"), snapshot)];
            let op = WriteOp::Ingest {
                events,
                cursors: Vec::new(),
                reply,
            };
            assert!(tx.try_send(op).is_ok(), "the queue holds every op");
            replies.push(answer);
        }
        drop(tx);
        writer_loop(
            store.clone(),
            routing,
            Arc::new(SinkBell::default()),
            Default::default(),
            rx,
        );
        for answer in replies {
            assert_eq!(answer.blocking_recv().unwrap().unwrap().new_events, 1);
        }
        // Each event holds two rows (its seen mark and its conversation's state); after each
        // commit one write-back took WRITE_BACK_MAX_ROWS of them.
        let rows_per_commit = 2 * MAX_BATCH_OPS;
        assert_eq!(
            store.held_rows(),
            commits * (rows_per_commit - WRITE_BACK_MAX_ROWS)
        );
        assert_eq!(
            store.seen_events().unwrap(),
            (commits * MAX_BATCH_OPS) as u64
        );
    }

    /// The writer moves an event's snapshot into the last subscription it reaches and clones
    /// it for the others: each must still get the whole of it.
    #[test]
    fn an_event_reaches_every_subscription_of_its_connection_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let subs: Vec<Subscription> = ["first", "middle", "last"]
            .into_iter()
            .map(|name| Subscription {
                name: name.into(),
                sinks: vec![format!("to-{name}")],
                ..decide_tests::sub(false, vec![])
            })
            .collect();
        let routing = Routing::new(&subs, |_, _| None);
        let routing: SharedRouting = Arc::new(RwLock::new(Arc::new(routing)));
        let bell = Arc::new(SinkBell::default());
        let (writer, thread) =
            spawn_writer(store.clone(), routing, bell, Default::default()).unwrap();
        let rt = rt();
        let event = |id: &str, cnv: &str, only: Option<&str>| {
            let mut snapshot = decide_tests::snap(1, "assigned", "msg_1");
            snapshot.conversation_id = cnv.into();
            let mut ev = IncomingEvent::new("acme", id, snapshot);
            ev.only_subscription = only.map(str::to_string);
            ev
        };
        let all = rt
            .block_on(writer.ingest(vec![event("evt_1", "cnv_1", None)], Vec::new()))
            .unwrap();
        assert_eq!((all.new_events, all.highlights), (1, 3));
        // A backfill of one subscription: the last route is not the one it reaches.
        let one = rt
            .block_on(writer.ingest(vec![event("evt_2", "cnv_2", Some("middle"))], Vec::new()))
            .unwrap();
        assert_eq!((one.new_events, one.highlights), (1, 1));
        drop(writer);
        thread.join().unwrap();

        let highlights = |sink: &str| -> Vec<serde_json::Value> {
            store
                .outbox_head(sink, 10)
                .unwrap()
                .iter()
                .map(|d| serde_json::from_slice(&d.json).unwrap())
                .collect()
        };
        for (sink, subscription, conversations) in [
            ("to-first", "first", vec!["cnv_1"]),
            ("to-middle", "middle", vec!["cnv_1", "cnv_2"]),
            ("to-last", "last", vec!["cnv_1"]),
        ] {
            let got = highlights(sink);
            let ids: Vec<&str> = got.iter().map(|h| h["id"].as_str().unwrap()).collect();
            let want: Vec<String> = conversations
                .iter()
                .map(|c| format!("{subscription}:{c}"))
                .collect();
            assert_eq!(ids, want, "{sink}");
            for h in &got {
                assert_eq!(h["text"], "text of msg_1", "{sink}: {h}");
                assert_eq!(h["title"], "Subject", "{sink}: {h}");
            }
        }
    }
}

/// The emission policy of [`decide`], case by case.
#[cfg(test)]
mod decide_tests {
    use super::*;
    use frontsync_sinks::Status;
    use std::time::Duration;

    pub(super) fn sub(emit_updated: bool, statuses: Vec<Status>) -> Subscription {
        Subscription {
            name: "support".into(),
            front: "acme".into(),
            inboxes: vec![],
            statuses,
            tags_any: vec![],
            tags_none: vec![],
            backfill: Duration::ZERO,
            poll_interval: Duration::ZERO,
            emit_created: true,
            emit_updated,
            sinks: vec!["archive".into()],
            labels: vec![],
        }
    }

    pub(super) fn snap(at_ms: i64, status: &str, message: &str) -> Snapshot {
        Snapshot {
            conversation_id: "cnv_1".into(),
            subject: Some("Subject".into()),
            message_id: Some(message.into()),
            message_text: Some(format!("text of {message}")),
            front_status: Some(status.into()),
            tags: Some(vec![]),
            event_id: Some(format!("evt_{at_ms}")),
            event_at_ms: Some(at_ms),
            ..Default::default()
        }
    }

    #[test]
    fn first_match_is_created_with_revision_1() {
        let (state, h) = decide(&sub(false, vec![]), &[], None, snap(1, "assigned", "msg_1"));
        let h = h.expect("a highlight");
        assert_eq!((h.revision, h.change), (1, Change::Created));
        assert_eq!(state.revision, 1);
    }

    #[test]
    fn no_match_emits_nothing_but_remembers_what_it_saw() {
        let s = sub(true, vec![Status::Archived]);
        let (state, h) = decide(&s, &[], None, snap(1, "assigned", "msg_1"));
        assert!(h.is_none());
        assert_eq!(state.revision, 0);
        // When it later matches, it is created (revision 1) with the remembered text.
        let mut archive = snap(2, "archived", "msg_1");
        archive.message_text = None;
        archive.message_id = None;
        archive.tags = None;
        let (state, h) = decide(&s, &[], Some(state), archive);
        let h = h.expect("created on first match");
        assert_eq!(
            (h.revision, h.change, h.text.as_str()),
            (1, Change::Created, "text of msg_1")
        );
        assert_eq!(state.revision, 1);
    }

    #[test]
    fn a_change_emits_updated_only_when_asked() {
        let first = snap(1, "assigned", "msg_1");
        let change = snap(2, "archived", "msg_1");
        let (state, _) = decide(&sub(true, vec![]), &[], None, first.clone());
        let (state, h) = decide(&sub(true, vec![]), &[], Some(state), change.clone());
        let h = h.expect("updated");
        assert_eq!((h.revision, h.change), (2, Change::Updated));
        assert_eq!(state.revision, 2);

        let (state, _) = decide(&sub(false, vec![]), &[], None, first.clone());
        let (state, h) = decide(&sub(false, vec![]), &[], Some(state), change.clone());
        assert!(h.is_none());
        assert_eq!(state.revision, 1, "revisions only grow with emissions");
    }

    #[test]
    fn replaying_the_same_event_emits_nothing() {
        let s = sub(true, vec![]);
        let e = snap(5, "assigned", "msg_1");
        let (state, _) = decide(&s, &[], None, e.clone());
        let (again, h) = decide(&s, &[], Some(state.clone()), e);
        assert!(h.is_none());
        assert_eq!(again.revision, state.revision);
    }

    #[test]
    fn an_older_event_never_emits_and_never_overrides_newer_facts() {
        let s = sub(true, vec![]);
        let (state, _) = decide(&s, &[], None, snap(10, "archived", "msg_2"));
        let (state, h) = decide(&s, &[], Some(state), snap(5, "assigned", "msg_1"));
        assert!(h.is_none(), "a late, older event is not news");
        assert_eq!(state.snapshot.front_status.as_deref(), Some("archived"));
        assert_eq!(state.snapshot.message_id.as_deref(), Some("msg_2"));
    }

    #[test]
    fn each_update_takes_the_next_revision() {
        let s = sub(true, vec![]);
        let (mut state, _) = decide(&s, &[], None, snap(1, "assigned", "msg_1"));
        for (i, msg) in ["msg_2", "msg_3", "msg_4"].iter().enumerate() {
            let (next, h) = decide(&s, &[], Some(state), snap(2 + i as i64, "assigned", msg));
            assert_eq!(h.expect("updated").revision, 2 + i as u64);
            state = next;
        }
    }

    #[test]
    fn without_created_the_first_sight_is_recorded_silently() {
        let mut s = sub(true, vec![]);
        s.emit_created = false;
        let (state, h) = decide(&s, &[], None, snap(1, "assigned", "msg_1"));
        assert!(h.is_none());
        assert_eq!(state.revision, 1);
        let (_, h) = decide(&s, &[], Some(state), snap(2, "archived", "msg_1"));
        assert_eq!(h.expect("updated").revision, 2);
    }
}
