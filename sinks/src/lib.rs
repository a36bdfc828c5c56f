//! The Highlight record and the sinks frontsync delivers it to.
//!
//! A sink receives batches of [`Delivery`] items taken, in order, from its own durable
//! outbox (kept by the daemon in its state database). The daemon deletes an item from the
//! outbox only after [`Sink::deliver`] reported it delivered, so a sink sees every item at
//! least once; sinks that can tell what they already wrote (see
//! [`Sink::already_delivered`]) turn that into exactly once across crashes.
//!
//! # Layout
//! - [`highlight`]: the `frontsync.highlight.v1` record.
//! - [`http`]: POST to any HTTP endpoint, singly or in batches, with idempotency keys and
//!   optional signing.
//! - [`jsonl`]: append to a file, fsync per batch, exactly once across crashes.
//! - [`next`]: push to NEXT AI, an [`http`] sink with NEXT's URL layout and token.
//! - [`stdout`]: one JSON line per Highlight on standard output (for `| jq`).
#![deny(missing_docs)]

pub mod highlight;
pub mod http;
pub mod jsonl;
pub mod next;
pub mod stdout;

pub use highlight::{Assignee, Change, Highlight, Requester, SCHEMA_V1, Source, Status};

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// A boxed future, so [`Sink`] stays object safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One outbox entry handed to a sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Outbox sequence number; strictly increasing per sink.
    pub seq: u64,
    /// The Highlight id (`subscription:cnv_...`).
    pub id: String,
    /// The Highlight revision.
    pub revision: u64,
    /// The Highlight serialized as one line of compact JSON, without the trailing newline.
    pub json: Vec<u8>,
}

impl Delivery {
    /// The key a sink must never deliver twice: `{id}:{revision}`.
    pub fn key(&self) -> String {
        format!("{}:{}", self.id, self.revision)
    }
}

/// What went wrong delivering a batch, and how far the batch got.
#[derive(Debug, thiserror::Error)]
#[error("{kind}")]
pub struct SinkError {
    /// How many items at the front of the batch were delivered before the failure.
    pub delivered: usize,
    /// What failed.
    pub kind: SinkErrorKind,
}

/// The kinds of delivery failure; the daemon branches on [`SinkError::is_retryable`].
#[derive(Debug, thiserror::Error)]
pub enum SinkErrorKind {
    /// Worth trying again later (I/O error, timeout, 5xx, 429...).
    #[error("{message}")]
    Retryable {
        /// Lowercase, one line, no secrets.
        message: String,
        /// A delay the receiver asked for (`Retry-After`).
        retry_after: Option<Duration>,
    },
    /// The item at index `delivered` will never be accepted: move it to dead letters.
    #[error("{message}")]
    Rejected {
        /// Lowercase, one line, no secrets.
        message: String,
        /// HTTP status, for HTTP sinks.
        status: Option<u16>,
        /// A bounded excerpt of the receiver's answer.
        body_excerpt: Option<String>,
    },
}

impl SinkError {
    /// A retryable failure after `delivered` items went through.
    pub fn retryable(delivered: usize, message: impl Into<String>) -> Self {
        SinkError {
            delivered,
            kind: SinkErrorKind::Retryable {
                message: message.into(),
                retry_after: None,
            },
        }
    }

    /// True when the same batch may succeed later.
    pub fn is_retryable(&self) -> bool {
        matches!(self.kind, SinkErrorKind::Retryable { .. })
    }

    /// The delay the receiver asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match &self.kind {
            SinkErrorKind::Retryable { retry_after, .. } => *retry_after,
            SinkErrorKind::Rejected { .. } => None,
        }
    }
}

/// A destination for Highlights. Each sink runs in its own task and is driven by the
/// daemon's outbox loop: `already_delivered` once at start, then `deliver` per batch.
pub trait Sink: Send {
    /// The sink's kind, for logs (`jsonl`, `stdout`, `next`...).
    fn kind(&self) -> &'static str;

    /// Called once before the first `deliver`, with the head of the outbox (oldest first).
    /// Returns how many items at the front of `head` the destination already holds, for
    /// example because the process crashed after writing them but before the outbox
    /// deletion was committed. The daemon removes those without delivering them again.
    fn already_delivered<'a>(
        &'a mut self,
        head: &'a [Delivery],
    ) -> BoxFuture<'a, Result<usize, SinkError>> {
        let _ = head;
        Box::pin(async { Ok(0) })
    }

    /// Delivers a batch, in order. `Ok` means every item is durably delivered.
    fn deliver<'a>(&'a mut self, batch: &'a [Delivery]) -> BoxFuture<'a, Result<(), SinkError>>;

    /// Reopens files or connections (SIGHUP, after log rotation). Default: nothing to do.
    fn reopen(&mut self) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async { Ok(()) })
    }

    /// The most items worth handing to one `deliver` call.
    fn max_batch(&self) -> usize {
        512
    }
}
