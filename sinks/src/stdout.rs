//! The `stdout` sink: one Highlight per line on standard output, for `frontsync | jq`.
//!
//! # Guarantees
//! - **Only Highlights.** This sink writes exactly one compact JSON object per line,
//!   `\n`-terminated, and nothing else; logs go to stderr. An item that is not one line of
//!   JSON (empty, or holding a newline) is rejected instead of written.
//! - **Batches are not interleaved.** A batch is written as one buffer with the stdout lock
//!   held for the whole batch, then flushed, so other writers in this process that go through
//!   [`std::io::stdout`] cannot slip between its lines.
//! - **At-least-once only.** Standard output cannot be read back, so
//!   [`Sink::already_delivered`] keeps its default (nothing is known delivered): after a
//!   crash, or a failed write that had already passed some lines to the reader, those lines
//!   are written again.
//! - **A reader going away is not fatal.** Rust ignores `SIGPIPE`, so when the reader exits
//!   (`| head`) writes fail with `EPIPE`; that is a retryable error with a clear message,
//!   never a panic or an exit.
//! - **Never stalls the runtime.** Writes run in `spawn_blocking`, so a slow reader blocks
//!   only a blocking-pool thread.

use std::fmt;
use std::io::{self, Write};
use std::sync::{Arc, Mutex, PoisonError};

use crate::{BoxFuture, Delivery, Sink, SinkError, SinkErrorKind};

/// Writes Highlights to standard output (or, in tests, to any writer); see the
/// [module docs](self).
pub struct StdoutSink {
    target: Target,
}

/// Where the lines go. Shared with the blocking task so a dropped `deliver` future never
/// loses the writer.
#[derive(Clone)]
enum Target {
    Stdout,
    Writer(Arc<Mutex<Box<dyn Write + Send>>>),
}

impl StdoutSink {
    /// A sink writing to the process's standard output.
    pub fn new() -> StdoutSink {
        StdoutSink {
            target: Target::Stdout,
        }
    }

    /// A sink writing to `writer` instead, so tests can capture the output.
    pub fn with_writer(writer: Box<dyn Write + Send>) -> StdoutSink {
        StdoutSink {
            target: Target::Writer(Arc::new(Mutex::new(writer))),
        }
    }
}

impl Default for StdoutSink {
    fn default() -> Self {
        StdoutSink::new()
    }
}

impl fmt::Debug for StdoutSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let target = match self.target {
            Target::Stdout => "stdout",
            Target::Writer(_) => "writer",
        };
        f.debug_struct("StdoutSink")
            .field("target", &target)
            .finish()
    }
}

impl Sink for StdoutSink {
    fn kind(&self) -> &'static str {
        "stdout"
    }

    fn deliver<'a>(&'a mut self, batch: &'a [Delivery]) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            // Everything before the first item that cannot be one line is written; that item
            // is rejected rather than allowed to break the one-object-per-line format.
            let valid = batch
                .iter()
                .position(|d| d.json.is_empty() || d.json.contains(&b'\n'))
                .unwrap_or(batch.len());
            if valid > 0 {
                let good = &batch[..valid];
                let mut buf = Vec::with_capacity(good.iter().map(|d| d.json.len() + 1).sum());
                for d in good {
                    buf.extend_from_slice(&d.json);
                    buf.push(b'\n');
                }
                let target = self.target.clone();
                match tokio::task::spawn_blocking(move || write_batch(&target, &buf)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Err(write_error(&e)),
                    Err(e) => {
                        return Err(SinkError::retryable(
                            0,
                            format!(
                                "stdout sink: the task writing to standard output {}",
                                if e.is_panic() {
                                    "panicked"
                                } else {
                                    "was cancelled"
                                }
                            ),
                        ));
                    }
                }
            }
            match batch.get(valid) {
                None => Ok(()),
                Some(bad) => Err(SinkError {
                    delivered: valid,
                    kind: SinkErrorKind::Rejected {
                        message: format!(
                            "stdout sink: item {} is not one line of json (empty or contains a newline); not written to standard output",
                            bad.key()
                        ),
                        status: None,
                        body_excerpt: None,
                    },
                }),
            }
        })
    }
}

/// Writes the whole batch and flushes, holding the lock throughout.
fn write_batch(target: &Target, buf: &[u8]) -> io::Result<()> {
    match target {
        Target::Stdout => {
            let mut out = io::stdout().lock();
            out.write_all(buf)?;
            out.flush()
        }
        Target::Writer(writer) => {
            // A panic while writing leaves nothing to repair: a torn line is already out.
            let mut out = writer.lock().unwrap_or_else(PoisonError::into_inner);
            out.write_all(buf)?;
            out.flush()
        }
    }
}

/// Lines may have reached the reader before the error, but not knowing how many, the whole
/// batch is retried (at-least-once).
fn write_error(e: &io::Error) -> SinkError {
    let message = if e.kind() == io::ErrorKind::BrokenPipe {
        "stdout sink: the reader of standard output went away (broken pipe); will retry".to_string()
    } else {
        format!("stdout sink: cannot write to standard output: {e}")
    };
    SinkError::retryable(0, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer the test can read back.
    #[derive(Clone, Default)]
    struct Capture {
        bytes: Arc<Mutex<Vec<u8>>>,
        flushes: Arc<Mutex<usize>>,
    }

    impl Write for Capture {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.bytes.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            *self.flushes.lock().expect("lock") += 1;
            Ok(())
        }
    }

    /// Accepts `room` bytes, then fails as a closed pipe does.
    struct ClosedPipe {
        room: usize,
    }

    impl Write for ClosedPipe {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::Error::from(io::ErrorKind::BrokenPipe));
            }
            let n = buf.len().min(self.room);
            self.room -= n;
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn item(seq: u64) -> Delivery {
        let id = format!("support:cnv_{seq}");
        let json = serde_json::to_vec(&serde_json::json!({
            "schema": "frontsync.highlight.v1",
            "id": id,
            "revision": 1,
            "text": "caf\u{e9} \"quoted\"",
        }))
        .expect("serialize");
        Delivery {
            seq,
            id,
            revision: 1,
            json,
        }
    }

    #[tokio::test]
    async fn writes_exactly_one_line_per_item_and_flushes() {
        let capture = Capture::default();
        let mut sink = StdoutSink::with_writer(Box::new(capture.clone()));
        assert_eq!(sink.kind(), "stdout");
        let batch: Vec<_> = (0..3).map(item).collect();
        sink.deliver(&batch[..2]).await.expect("deliver");
        sink.deliver(&batch[2..]).await.expect("deliver");
        sink.deliver(&[]).await.expect("empty batch");

        let mut expected = Vec::new();
        for d in &batch {
            expected.extend_from_slice(&d.json);
            expected.push(b'\n');
        }
        assert_eq!(*capture.bytes.lock().expect("lock"), expected);
        assert_eq!(*capture.flushes.lock().expect("lock"), 2);
    }

    #[tokio::test]
    async fn nothing_is_known_delivered() {
        let mut sink = StdoutSink::with_writer(Box::new(Capture::default()));
        let batch: Vec<_> = (0..3).map(item).collect();
        sink.deliver(&batch).await.expect("deliver");
        assert_eq!(sink.already_delivered(&batch).await.expect("ad"), 0);
    }

    #[tokio::test]
    async fn broken_pipe_is_retryable() {
        for room in [0, 10] {
            let mut sink = StdoutSink::with_writer(Box::new(ClosedPipe { room }));
            let err = sink
                .deliver(&[item(1), item(2)])
                .await
                .expect_err("broken pipe");
            assert!(err.is_retryable());
            assert_eq!(err.delivered, 0);
            assert!(err.to_string().contains("broken pipe"), "{err}");
            // The sink stays usable; the next attempt fails the same way, without panicking.
            let err = sink.deliver(&[item(1)]).await.expect_err("still broken");
            assert!(err.is_retryable());
        }
    }

    #[tokio::test]
    async fn other_write_errors_are_retryable_and_named() {
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::other("no space left"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut sink = StdoutSink::with_writer(Box::new(Full));
        let err = sink.deliver(&[item(1)]).await.expect_err("fails");
        assert!(err.is_retryable());
        assert!(err.to_string().contains("standard output"), "{err}");
        assert!(err.to_string().contains("no space left"), "{err}");
    }

    #[tokio::test]
    async fn item_that_is_not_one_line_is_rejected_after_the_ones_before_it() {
        let capture = Capture::default();
        let mut sink = StdoutSink::with_writer(Box::new(capture.clone()));
        let mut batch: Vec<_> = (0..3).map(item).collect();
        batch[1].json = b"{\n}".to_vec();
        let err = sink.deliver(&batch).await.expect_err("rejected");
        assert!(!err.is_retryable());
        assert_eq!(err.delivered, 1);
        let mut expected = batch[0].json.clone();
        expected.push(b'\n');
        assert_eq!(*capture.bytes.lock().expect("lock"), expected);
    }

    #[tokio::test]
    async fn real_stdout_accepts_an_empty_batch() {
        // Writing real lines would pollute the test harness's output; an empty batch still
        // exercises construction and the trait defaults.
        let mut sink = StdoutSink::default();
        sink.deliver(&[]).await.expect("empty");
        sink.reopen().await.expect("reopen");
        assert_eq!(sink.max_batch(), 512);
        assert_eq!(format!("{sink:?}"), "StdoutSink { target: \"stdout\" }");
    }
}
