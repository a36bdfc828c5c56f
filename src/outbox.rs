//! One task per sink drains that sink's durable outbox, in order, independently of the
//! others: a slow or broken sink only grows its own outbox (on disk).
//!
//! The checkpoint rule is deliver, then acknowledge, then delete: an entry leaves the
//! outbox (through the writer) only after the sink said it was delivered. At start the sink
//! is asked which head entries it already holds ([`Sink::already_delivered`]), which is how
//! the JSONL sink stays exactly-once across a crash between its write and the delete.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use frontsync_sinks::{Delivery, Sink, SinkError, SinkErrorKind};
use tokio_util::sync::CancellationToken;

use crate::ingest::{SinkBell, Writer};
use crate::store::{Rejection, Store};

/// First retry delay after a retryable failure; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// Cap of the retry delay.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Live figures of one sink, for `/status` and `/metrics`.
#[derive(Debug, Default)]
pub struct SinkStats {
    pub delivered: AtomicU64,
    pub failures: AtomicU64,
    pub last_error: std::sync::Mutex<Option<String>>,
}

impl SinkStats {
    fn set_error(&self, e: Option<String>) {
        if let Ok(mut g) = self.last_error.lock() {
            *g = e;
        }
    }

    /// The last delivery error, cleared by the next success.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|g| g.clone())
    }
}

/// Everything a sink task needs.
pub struct SinkTask {
    pub sink: Box<dyn Sink>,
    pub ctx: SinkCtx,
}

/// The sink task's surroundings (everything but the sink itself, which need not be `Sync`).
pub struct SinkCtx {
    pub name: String,
    pub store: Store,
    pub writer: Writer,
    pub bell: Arc<SinkBell>,
    pub stats: Arc<SinkStats>,
    /// Cancelled when intake has stopped: drain what is left, then return.
    pub drain: CancellationToken,
    /// Cancelled to stop at once, even mid-delivery (the grace period ran out).
    pub stop: CancellationToken,
    /// Cancelled to stop after the delivery in progress, if any (reload replaces the sink).
    pub retire: CancellationToken,
}

impl SinkTask {
    /// Runs until stopped, or until drained after intake stopped.
    pub async fn run(self) {
        let SinkTask { mut sink, ctx } = self;
        ctx.run(sink.as_mut()).await
    }
}

impl SinkCtx {
    async fn run(self, sink: &mut dyn Sink) {
        let max_batch = sink.max_batch().max(1);
        let bell = self.bell.bell(&self.name);
        if let Err(e) = self.recover(sink, max_batch).await {
            tracing::warn!(sink = %self.name, error = %e, "could not check what the sink already holds; entries may be delivered again");
        }
        let mut backoff = FIRST_BACKOFF;
        let mut attempts: u32 = 0;
        loop {
            if self.stop.is_cancelled() || self.retire.is_cancelled() {
                return;
            }
            let head = match self.head(max_batch).await {
                Ok(h) => h,
                Err(e) => {
                    tracing::error!(sink = %self.name, error = %e, "cannot read the outbox");
                    if self.pause(backoff).await {
                        return;
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            if head.is_empty() {
                if self.drain.is_cancelled() {
                    return;
                }
                tokio::select! {
                    _ = bell.notified() => {}
                    _ = self.drain.cancelled() => {}
                    _ = self.stop.cancelled() => return,
                    _ = self.retire.cancelled() => return,
                }
                continue;
            }
            attempts += 1;
            let result = tokio::select! {
                r = sink.deliver(&head) => r,
                _ = self.stop.cancelled() => return,
            };
            match result {
                Ok(()) => {
                    if self.acknowledge(&head).await.is_err() {
                        return;
                    }
                    self.stats.set_error(None);
                    backoff = FIRST_BACKOFF;
                    attempts = 0;
                }
                Err(err) => {
                    self.stats.failures.fetch_add(1, Ordering::Relaxed);
                    let done = err.delivered.min(head.len());
                    if done > 0 && self.acknowledge(&head[..done]).await.is_err() {
                        return;
                    }
                    if let Some(next) = head.get(done)
                        && !err.is_retryable()
                    {
                        self.reject(next, &err, attempts).await;
                        attempts = 0;
                        continue;
                    }
                    let delay = err.retry_after().unwrap_or_else(|| jitter(backoff));
                    tracing::warn!(
                        sink = %self.name,
                        error = %err,
                        retry_in_ms = delay.as_millis() as u64,
                        attempts,
                        "delivery failed; will retry"
                    );
                    self.stats.set_error(Some(err.to_string()));
                    if self.drain.is_cancelled() || self.pause(delay).await {
                        // Shutting down: what is left stays in the outbox for the next start.
                        return;
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    async fn head(&self, max: usize) -> Result<Vec<Delivery>, crate::store::StoreError> {
        let store = self.store.clone();
        let name = self.name.clone();
        tokio::task::spawn_blocking(move || store.outbox_head(&name, max))
            .await
            .unwrap_or_else(|e| {
                Err(crate::store::StoreError::Db {
                    path: Default::default(),
                    message: e.to_string(),
                })
            })
    }

    async fn recover(&self, sink: &mut dyn Sink, max: usize) -> Result<(), String> {
        let head = self.head(max).await.map_err(|e| e.to_string())?;
        if head.is_empty() {
            return Ok(());
        }
        let held = sink
            .already_delivered(&head)
            .await
            .map_err(|e| e.to_string())?
            .min(head.len());
        if held > 0 {
            tracing::info!(sink = %self.name, entries = held, "sink already held entries written before a restart; not delivering them again");
            self.acknowledge(&head[..held])
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    async fn acknowledge(&self, delivered: &[Delivery]) -> Result<(), crate::ingest::IngestError> {
        let seqs = delivered.iter().map(|d| d.seq).collect();
        match self.writer.ack(&self.name, seqs).await {
            Ok(()) => {
                self.stats
                    .delivered
                    .fetch_add(delivered.len() as u64, Ordering::Relaxed);
                tracing::debug!(sink = %self.name, entries = delivered.len(), "delivered");
                Ok(())
            }
            Err(e) => {
                // Delivered but not deleted: the next start asks the sink again.
                tracing::error!(sink = %self.name, error = %e, "cannot record delivery; stopping this sink");
                Err(e)
            }
        }
    }

    async fn reject(&self, entry: &Delivery, err: &SinkError, attempts: u32) {
        let (status, body_excerpt) = match &err.kind {
            SinkErrorKind::Rejected {
                status,
                body_excerpt,
                ..
            } => (*status, body_excerpt.clone()),
            SinkErrorKind::Retryable { .. } => (None, None),
        };
        tracing::error!(
            sink = %self.name,
            highlight = %entry.key(),
            error = %err,
            "sink rejected a highlight; moved to dead letters (see `frontsync status`)"
        );
        self.stats.set_error(Some(err.to_string()));
        let info = Rejection {
            error: err.to_string(),
            status,
            body_excerpt,
            attempts,
        };
        if let Err(e) = self.writer.dead_letter(&self.name, entry.seq, info).await {
            tracing::error!(sink = %self.name, error = %e, "cannot record dead letter");
        }
    }

    /// Sleeps, or returns true early when asked to stop.
    async fn pause(&self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => false,
            _ = self.stop.cancelled() => true,
            _ = self.drain.cancelled() => true,
            _ = self.retire.cancelled() => true,
        }
    }
}

/// Spreads retries: a delay between half and the full `d`.
pub fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    let frac = 0.5 + (nanos % 1000) as f64 / 2000.0;
    d.mul_f64(frac)
}
