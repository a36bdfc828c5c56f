//! The `jsonl` sink: one Highlight per line appended to a file, fsync per batch, exactly
//! once across crashes.
//!
//! # Guarantees
//! - **Durable before acknowledged.** A batch is appended with one write of one buffer and
//!   made durable with `fdatasync` before [`Sink::deliver`] returns `Ok`. The folder is
//!   fsynced whenever the file is opened, so a newly created file survives a power loss.
//! - **Whole lines only.** A batch that fails half way is cut back to the length the file
//!   had before it, before anything else is written, so a line is never torn or followed by
//!   another. A torn last line left by a crash is cut off when the file is opened: it was
//!   never acknowledged, so the daemon delivers that item again.
//! - **Exactly once across crashes.** [`Sink::already_delivered`] reads only the file's tail
//!   (backwards, in blocks; a multi-GB file is never read whole) and reports which items at
//!   the head of the outbox are already there: written and fsynced, but the outbox deletion
//!   was never committed. The tail covers the largest batch one `deliver` can write, so
//!   every line of a crashed batch is seen. A `deliver` future dropped before it finished
//!   (a timeout) is handled the same way: the next `deliver` first skips the leading items
//!   the file already holds.
//! - **Log rotation.** [`Sink::reopen`] closes and reopens the path, so after logrotate's
//!   rename the next line goes to a new file at the configured path.
//! - **Never stalls the runtime.** Blocking file I/O runs in `spawn_blocking`.
//! - New files are created `0600` and missing folders `0700`; an existing file keeps its mode.
//!
//! # Limits
//! Deduplication looks at the current file only: if a crash is followed by a rotation before
//! the restart, the last unacknowledged batch can be written again into the new file.

use std::collections::HashMap;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::Deserialize;

use crate::{BoxFuture, Delivery, Sink, SinkError, SinkErrorKind};

/// The most items handed to one `deliver`; also bounds the tail read by `already_delivered`.
pub const MAX_BATCH: usize = 512;

/// Extra lines read beyond the largest batch, so the tail surely covers a crashed batch.
const TAIL_MARGIN: usize = 16;

/// Read size when walking the file backwards.
const BLOCK: u64 = 64 * 1024;

/// Where the `jsonl` sink writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonlSinkConfig {
    /// The file Highlights are appended to; created `0600` (its folder `0700`) when missing.
    pub path: PathBuf,
}

/// Why the JSONL file could not be opened or checked.
#[derive(Debug, thiserror::Error)]
pub enum JsonlError {
    /// The folder of the file could not be created.
    #[error("cannot create folder {}: {source}", path.display())]
    CreateFolder {
        /// The folder.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The file could not be opened for append.
    #[error("cannot open {} for append: {source}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The path exists but is not a regular file (a folder, a FIFO, a device...).
    #[error("{} is not a regular file", path.display())]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// A path on the way to the file exists but is not a folder.
    #[error("{} is not a folder", path.display())]
    NotAFolder {
        /// The path.
        path: PathBuf,
    },
    /// The torn last line left by a crash could not be cut off.
    #[error("cannot repair the torn last line of {}: {source}", path.display())]
    Repair {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The folder could not be fsynced after opening the file.
    #[error("cannot fsync folder {}: {source}", path.display())]
    SyncFolder {
        /// The folder.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A path could not be inspected.
    #[error("cannot inspect {}: {source}", path.display())]
    Inspect {
        /// The path.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// No file can be created in the folder.
    #[error("folder {} is not writable: {source}", path.display())]
    NotWritable {
        /// The folder.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

impl From<JsonlError> for SinkError {
    /// Opening may work later (the folder is fixed, the disk remounted), so retry.
    fn from(e: JsonlError) -> Self {
        SinkError::retryable(0, e.to_string())
    }
}

/// Appends Highlights to a file, one per line; see the [module docs](self).
#[derive(Debug)]
pub struct JsonlSink {
    path: PathBuf,
    /// Shared with the blocking task doing the I/O; the lock also orders a task left running
    /// by a dropped `deliver` future before the next operation.
    inner: Arc<Mutex<Inner>>,
    /// Set while a `deliver` is in flight. Still set at the next `deliver` means the previous
    /// future was dropped without seeing its result, so its batch may already be in the file.
    uncertain: bool,
}

impl JsonlSink {
    /// Opens (creating if needed) the file for append and cuts off a torn last line.
    ///
    /// This does blocking I/O; call it at startup, not from a busy async task.
    pub fn open(config: JsonlSinkConfig) -> Result<JsonlSink, JsonlError> {
        let (file, len) = open_file(&config.path)?;
        Ok(JsonlSink {
            path: config.path.clone(),
            inner: Arc::new(Mutex::new(Inner {
                path: config.path,
                file: Some(file),
                log: Log::clean(len),
            })),
            uncertain: false,
        })
    }

    /// The configured path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Sink for JsonlSink {
    fn kind(&self) -> &'static str {
        "jsonl"
    }

    fn already_delivered<'a>(
        &'a mut self,
        head: &'a [Delivery],
    ) -> BoxFuture<'a, Result<usize, SinkError>> {
        Box::pin(async move {
            if head.is_empty() {
                return Ok(0);
            }
            let keys = keys_of(head);
            let found = run(&self.inner, &self.path, move |inner| {
                inner.already_delivered(&keys)
            })
            .await?;
            if found > 0 {
                tracing::info!(
                    path = %self.path.display(),
                    found,
                    "items at the head of the outbox are already in the file; not writing them again"
                );
            }
            Ok(found)
        })
    }

    fn deliver<'a>(&'a mut self, batch: &'a [Delivery]) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            // Everything before the first item that cannot be one line is written; that item
            // is rejected rather than allowed to break the one-object-per-line format.
            let valid = batch
                .iter()
                .position(|d| !is_one_line(&d.json))
                .unwrap_or(batch.len());
            if valid > 0 {
                let good = &batch[..valid];
                let mut buf = Vec::with_capacity(good.iter().map(|d| d.json.len() + 1).sum());
                let mut ends = Vec::with_capacity(valid);
                for d in good {
                    buf.extend_from_slice(&d.json);
                    buf.push(b'\n');
                    ends.push(buf.len());
                }
                // Keys are only needed to deduplicate after a dropped `deliver` future.
                let keys = self.uncertain.then(|| keys_of(good));
                self.uncertain = true;
                let result = run(&self.inner, &self.path, move |inner| {
                    inner.append_batch(&buf, &ends, keys.as_deref())
                })
                .await;
                self.uncertain = false;
                result?;
            }
            match batch.get(valid) {
                None => Ok(()),
                Some(bad) => Err(SinkError {
                    delivered: valid,
                    kind: SinkErrorKind::Rejected {
                        message: format!(
                            "item {} is not one line of json (empty or contains a newline); not written to {}",
                            bad.key(),
                            self.path.display()
                        ),
                        status: None,
                        body_excerpt: None,
                    },
                }),
            }
        })
    }

    fn reopen(&mut self) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async move { run(&self.inner, &self.path, Inner::reopen).await })
    }

    fn max_batch(&self) -> usize {
        MAX_BATCH
    }
}

/// Runs `op` on the sink's state in a blocking thread, so a slow disk never stalls the
/// runtime's worker threads.
async fn run<T, F>(inner: &Arc<Mutex<Inner>>, path: &Path, op: F) -> Result<T, SinkError>
where
    T: Send + 'static,
    F: FnOnce(&mut Inner) -> Result<T, SinkError> + Send + 'static,
{
    let inner = Arc::clone(inner);
    match tokio::task::spawn_blocking(move || op(&mut lock(&inner))).await {
        Ok(result) => result,
        Err(e) => Err(SinkError::retryable(
            0,
            format!(
                "i/o task for {} {}",
                path.display(),
                if e.is_panic() {
                    "panicked"
                } else {
                    "was cancelled"
                }
            ),
        )),
    }
}

/// A panic in a blocking task cannot leave a torn line unnoticed (`Log::dirty` is set before
/// writing), so a poisoned lock is safe to take over.
fn lock(inner: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    inner.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The sink's file and what it knows about it; only touched from blocking threads.
#[derive(Debug)]
struct Inner {
    path: PathBuf,
    /// `None` after a failed reopen; the next operation tries to open again.
    file: Option<File>,
    log: Log,
}

impl Inner {
    /// The open file, opening it first when a previous reopen failed.
    fn open(&mut self) -> Result<(&File, &mut Log, &Path), JsonlError> {
        let file = match self.file.take() {
            Some(file) => file,
            None => {
                let (file, len) = open_file(&self.path)?;
                self.log = Log::clean(len);
                file
            }
        };
        Ok((self.file.insert(file), &mut self.log, &self.path))
    }

    fn already_delivered(&mut self, keys: &[(String, u64)]) -> Result<usize, SinkError> {
        let (file, log, path) = self.open()?;
        log.restore(file)
            .map_err(|e| JsonlError::Repair {
                path: path.to_path_buf(),
                source: e,
            })
            .and_then(|()| repair_torn_tail(file, path))?;
        leading_in_tail(file, keys).map_err(|e| {
            SinkError::retryable(
                0,
                format!("cannot read the tail of {}: {e}", path.display()),
            )
        })
    }

    /// Appends `buf` (whole lines; `ends[i]` is where item `i` ends). With `keys`, first
    /// skips the leading items the file already holds (see `JsonlSink::uncertain`).
    fn append_batch(
        &mut self,
        buf: &[u8],
        ends: &[usize],
        keys: Option<&[(String, u64)]>,
    ) -> Result<(), SinkError> {
        let (file, log, path) = self.open()?;
        let mut start = 0;
        if let Some(keys) = keys {
            let skip = log
                .restore(file)
                .and_then(|()| leading_in_tail(file, keys))
                .map_err(|e| {
                    SinkError::retryable(
                        0,
                        format!("cannot read the tail of {}: {e}", path.display()),
                    )
                })?;
            if skip > 0 {
                tracing::info!(
                    path = %path.display(),
                    skip,
                    "an interrupted delivery already wrote these items; not writing them again"
                );
                start = ends[skip - 1];
            }
        }
        if start == buf.len() {
            return Ok(());
        }
        log.append(file, path, &buf[start..]).map_err(|e| {
            SinkError::retryable(0, format!("cannot append to {}: {e}", path.display()))
        })
    }

    fn reopen(&mut self) -> Result<(), SinkError> {
        if let Some(old) = self.file.take() {
            // The old file may already be renamed; still leave it without a torn line.
            if let Err(e) = self.log.restore(&old) {
                tracing::warn!(
                    path = %self.path.display(),
                    error = %e,
                    "cannot cut a failed batch off the file being closed; it may end with a torn line"
                );
            }
        }
        let (file, len) = open_file(&self.path)?;
        self.file = Some(file);
        self.log = Log::clean(len);
        tracing::debug!(path = %self.path.display(), len, "reopened");
        Ok(())
    }
}

/// The length bookkeeping that keeps lines whole.
#[derive(Debug, Default)]
struct Log {
    /// The file's length before the current (or last failed) batch.
    good_len: u64,
    /// A batch failed (or is being written) and bytes past `good_len` may be torn.
    dirty: bool,
    #[cfg(test)]
    faults: Faults,
}

/// Failures injected by tests, since real write errors cannot be produced reliably as root.
#[cfg(test)]
#[derive(Debug, Default)]
struct Faults {
    /// Write only this many bytes of the batch, then fail.
    write_after: Option<usize>,
    /// Fail every truncation.
    truncate: bool,
    /// How many times data was fsynced.
    syncs: usize,
}

impl Log {
    fn clean(len: u64) -> Log {
        Log {
            good_len: len,
            ..Log::default()
        }
    }

    /// Cuts off whatever a failed batch left past `good_len`, before anything else is written.
    fn restore(&mut self, file: &File) -> io::Result<()> {
        if !self.dirty {
            return Ok(());
        }
        // Only ever shrink: after logrotate's copytruncate the file may already be shorter.
        if file.metadata()?.len() > self.good_len {
            self.set_len(file, self.good_len)?;
            self.sync(file)?;
        }
        self.dirty = false;
        Ok(())
    }

    /// Writes `buf` in one go and fsyncs; on failure cuts the file back (or stays dirty so
    /// the next operation does).
    fn append(&mut self, file: &File, path: &Path, buf: &[u8]) -> io::Result<()> {
        self.restore(file)?;
        let before = file.metadata()?.len();
        self.good_len = before;
        self.dirty = true;
        if let Err(e) = self.write(file, buf).and_then(|()| self.sync(file)) {
            if let Err(cut) = self.restore(file) {
                tracing::warn!(
                    path = %path.display(),
                    error = %cut,
                    "cannot cut a failed batch off the file; will retry before the next write"
                );
            }
            return Err(e);
        }
        self.dirty = false;
        self.good_len = before + buf.len() as u64;
        Ok(())
    }

    fn write(&self, mut file: &File, buf: &[u8]) -> io::Result<()> {
        #[cfg(test)]
        if let Some(n) = self.faults.write_after {
            file.write_all(&buf[..n.min(buf.len())])?;
            return Err(io::Error::other("injected write failure"));
        }
        file.write_all(buf)
    }

    fn sync(&mut self, file: &File) -> io::Result<()> {
        #[cfg(test)]
        {
            self.faults.syncs += 1;
        }
        file.sync_data()
    }

    fn set_len(&self, file: &File, len: u64) -> io::Result<()> {
        #[cfg(test)]
        if self.faults.truncate {
            return Err(io::Error::other("injected truncate failure"));
        }
        file.set_len(len)
    }
}

/// The folder a file lives in (`.` for a bare file name).
fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Opens `path` for append (creating it `0600`, its folder `0700`), cuts off a torn last
/// line and fsyncs the folder. Returns the file and its length.
fn open_file(path: &Path) -> Result<(File, u64), JsonlError> {
    let folder = folder_of(path);
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(folder)
        .map_err(|source| JsonlError::CreateFolder {
            path: folder.to_path_buf(),
            source,
        })?;
    // `read` too: the tail is read back for deduplication and torn-line repair.
    let file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| JsonlError::Open {
            path: path.to_path_buf(),
            source,
        })?;
    let meta = file.metadata().map_err(|source| JsonlError::Inspect {
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.is_file() {
        return Err(JsonlError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    let len = repair_torn_tail(&file, path)?;
    // Makes a newly created file's name durable; without it a power loss could drop the
    // whole file, acknowledged lines included.
    File::open(folder)
        .and_then(|dir| dir.sync_all())
        .map_err(|source| JsonlError::SyncFolder {
            path: folder.to_path_buf(),
            source,
        })?;
    Ok((file, len))
}

/// If the file does not end with `\n`, cuts it back to just after its last `\n`: that
/// partial line was never acknowledged. Returns the resulting length.
fn repair_torn_tail(file: &File, path: &Path) -> Result<u64, JsonlError> {
    let err = |source| JsonlError::Repair {
        path: path.to_path_buf(),
        source,
    };
    let len = file.metadata().map_err(err)?.len();
    if len == 0 {
        return Ok(0);
    }
    let mut last = [0u8; 1];
    file.read_exact_at(&mut last, len - 1).map_err(err)?;
    if last[0] == b'\n' {
        return Ok(len);
    }
    let mut keep = 0;
    let mut end = len;
    let mut block = vec![0u8; BLOCK as usize];
    while end > 0 {
        let start = end.saturating_sub(BLOCK);
        let chunk = &mut block[..(end - start) as usize];
        file.read_exact_at(chunk, start).map_err(err)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            keep = start + i as u64 + 1;
            break;
        }
        end = start;
    }
    file.set_len(keep).map_err(err)?;
    file.sync_data().map_err(err)?;
    tracing::warn!(
        path = %path.display(),
        dropped_bytes = len - keep,
        "cut off a torn last line left by a crash; its item will be written again"
    );
    Ok(keep)
}

/// Reads the end of the file backwards in blocks until it holds `max_lines` whole lines or
/// reaches the start. Returns those bytes (possibly with a partial first line).
fn read_tail(file: &File, max_lines: usize) -> io::Result<Vec<u8>> {
    let mut pos = file.metadata()?.len();
    let mut chunks = Vec::new();
    let mut newlines = 0;
    // `max_lines` whole lines need one newline more: the one ending the line before them.
    while pos > 0 && newlines <= max_lines {
        let start = pos.saturating_sub(BLOCK);
        let mut chunk = vec![0u8; (pos - start) as usize];
        file.read_exact_at(&mut chunk, start)?;
        newlines += chunk.iter().filter(|&&b| b == b'\n').count();
        chunks.push(chunk);
        pos = start;
    }
    chunks.reverse();
    Ok(chunks.concat())
}

/// The part of a line this sink needs; other fields are ignored.
#[derive(Deserialize)]
struct LineKey {
    id: String,
    revision: u64,
}

/// The (id, revisions) of the last `max_lines` whole lines of `tail`; unparseable lines are
/// skipped.
fn tail_keys(tail: &[u8], max_lines: usize) -> HashMap<String, Vec<u64>> {
    let mut keys: HashMap<String, Vec<u64>> = HashMap::new();
    // The first piece is what follows the last `\n`: empty, or a fragment never acknowledged.
    for line in tail.rsplit(|&b| b == b'\n').skip(1).take(max_lines) {
        if let Ok(k) = serde_json::from_slice::<LineKey>(line) {
            keys.entry(k.id).or_default().push(k.revision);
        }
    }
    keys
}

/// How many leading `keys` appear among the file's last lines. The tail read covers the
/// largest batch one `deliver` writes, plus a margin.
fn leading_in_tail(file: &File, keys: &[(String, u64)]) -> io::Result<usize> {
    let max_lines = keys.len().max(MAX_BATCH) + TAIL_MARGIN;
    let found = tail_keys(&read_tail(file, max_lines)?, max_lines);
    Ok(keys
        .iter()
        .take_while(|(id, rev)| found.get(id).is_some_and(|revs| revs.contains(rev)))
        .count())
}

fn keys_of(items: &[Delivery]) -> Vec<(String, u64)> {
    items.iter().map(|d| (d.id.clone(), d.revision)).collect()
}

/// A line must be non-empty and hold no newline, or the file stops being one object per line.
fn is_one_line(json: &[u8]) -> bool {
    !json.is_empty() && !json.contains(&b'\n')
}

/// For `frontsync check --online`: the file's folder exists (or can be created) and accepts
/// new files, and the file, when present, is a regular file that can be opened for append.
/// Creates nothing and writes nothing to the file (a probe file in the folder is created and
/// removed).
pub fn check_writable(path: &Path) -> Result<(), JsonlError> {
    match std::fs::metadata(path) {
        Ok(meta) if !meta.is_file() => {
            return Err(JsonlError::NotAFile {
                path: path.to_path_buf(),
            });
        }
        // Opening for append writes nothing and leaves the file's times alone.
        Ok(_) => {
            OpenOptions::new()
                .append(true)
                .open(path)
                .map_err(|source| JsonlError::Open {
                    path: path.to_path_buf(),
                    source,
                })?;
        }
        // A file on the way (`NotADirectory`) is reported by the folder walk below.
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) => {}
        Err(source) => {
            return Err(JsonlError::Inspect {
                path: path.to_path_buf(),
                source,
            });
        }
    }
    // The nearest existing folder must accept new entries: the file's own folder, or the
    // ancestor in which the missing folders would be created.
    let mut folder = folder_of(path).to_path_buf();
    loop {
        match std::fs::metadata(&folder) {
            Ok(meta) if meta.is_dir() => break,
            Ok(_) => return Err(JsonlError::NotAFolder { path: folder }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let up = folder_of(&folder).to_path_buf();
                if up == folder {
                    return Err(JsonlError::Inspect {
                        path: folder,
                        source: e,
                    });
                }
                folder = up;
            }
            Err(source) => {
                return Err(JsonlError::Inspect {
                    path: folder,
                    source,
                });
            }
        }
    }
    probe_folder(&folder)
}

/// Creates and removes a uniquely named file: the only test of writability that also holds
/// for root, ACLs and read-only mounts.
fn probe_folder(folder: &Path) -> Result<(), JsonlError> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let probe = folder.join(format!(".frontsync-check-{}-{nanos}", std::process::id()));
    let not_writable = |source| JsonlError::NotWritable {
        path: folder.to_path_buf(),
        source,
    };
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&probe)
        .map_err(not_writable)?;
    std::fs::remove_file(&probe).map_err(not_writable)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufWriter, Read};
    use std::os::unix::fs::PermissionsExt;

    fn item(seq: u64, id: &str, revision: u64) -> Delivery {
        let json = serde_json::to_vec(&serde_json::json!({
            "schema": "frontsync.highlight.v1",
            "id": id,
            "revision": revision,
            "title": format!("title {seq}"),
        }))
        .expect("serialize");
        Delivery {
            seq,
            id: id.to_string(),
            revision,
            json,
        }
    }

    fn items(range: std::ops::Range<u64>) -> Vec<Delivery> {
        range
            .map(|i| item(i, &format!("support:cnv_{i}"), 1))
            .collect()
    }

    fn lines_of(items: &[Delivery]) -> Vec<u8> {
        let mut out = Vec::new();
        for d in items {
            out.extend_from_slice(&d.json);
            out.push(b'\n');
        }
        out
    }

    fn open(path: &Path) -> JsonlSink {
        JsonlSink::open(JsonlSinkConfig {
            path: path.to_path_buf(),
        })
        .expect("open")
    }

    fn read(path: &Path) -> Vec<u8> {
        std::fs::read(path).expect("read")
    }

    /// Every (id, revision) in the file with how many times it appears; panics on a bad line.
    fn counts(path: &Path) -> HashMap<(String, u64), usize> {
        let mut out = HashMap::new();
        let bytes = read(path);
        assert!(
            bytes.is_empty() || bytes.ends_with(b"\n"),
            "file ends with a torn line"
        );
        for line in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let k: LineKey = serde_json::from_slice(line).expect("whole json line");
            *out.entry((k.id, k.revision)).or_default() += 1;
        }
        out
    }

    fn assert_each_once(path: &Path, expected: &[Delivery]) {
        let counts = counts(path);
        assert_eq!(counts.len(), expected.len(), "{counts:?}");
        for d in expected {
            assert_eq!(
                counts.get(&(d.id.clone(), d.revision)),
                Some(&1),
                "{}",
                d.key()
            );
        }
    }

    #[tokio::test]
    async fn appends_lines_in_order_with_exact_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("h.jsonl");
        let mut sink = open(&path);
        assert_eq!(sink.kind(), "jsonl");
        assert_eq!(sink.max_batch(), 512);
        let all = items(0..5);
        sink.deliver(&all[..3]).await.expect("first batch");
        sink.deliver(&all[3..]).await.expect("second batch");
        sink.deliver(&[]).await.expect("empty batch");
        assert_eq!(read(&path), lines_of(&all));
    }

    #[tokio::test]
    async fn fsyncs_once_per_batch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("h.jsonl");
        let mut sink = open(&path);
        let all = items(0..4);
        sink.deliver(&all[..2]).await.expect("deliver");
        sink.deliver(&all[2..]).await.expect("deliver");
        assert_eq!(lock(&sink.inner).log.faults.syncs, 2);
    }

    #[test]
    fn creates_file_0600_and_folders_0700_and_keeps_existing_modes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a/b/h.jsonl");
        let _sink = open(&path);
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.path().join("a")), 0o700);
        assert_eq!(mode(&dir.path().join("a/b")), 0o700);

        let existing = dir.path().join("existing.jsonl");
        std::fs::write(&existing, b"").expect("write");
        std::fs::set_permissions(&existing, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let _sink = open(&existing);
        assert_eq!(mode(&existing), 0o644);
    }

    #[tokio::test]
    async fn already_delivered_on_empty_file_is_zero() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("h.jsonl");
        let mut sink = open(&path);
        assert_eq!(sink.already_delivered(&items(0..3)).await.expect("ad"), 0);
        assert_eq!(sink.already_delivered(&[]).await.expect("ad"), 0);
    }

    #[tokio::test]
    async fn already_delivered_counts_leading_items_found_in_the_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("h.jsonl");
        let mut sink = open(&path);
        let all = items(0..10);
        sink.deliver(&all[..6]).await.expect("deliver");
        // The last batch was items 3..6; the outbox still holds them plus 6..10.
        assert_eq!(sink.already_delivered(&all[3..]).await.expect("ad"), 3);
        // Only leading items count.
        assert_eq!(sink.already_delivered(&all[6..]).await.expect("ad"), 0);
        let mut gap = vec![all[7].clone()];
        gap.extend_from_slice(&all[..3]);
        assert_eq!(sink.already_delivered(&gap).await.expect("ad"), 0);
        // Same id, other revision: not delivered.
        let newer = item(99, &all[5].id, 2);
        assert_eq!(sink.already_delivered(&[newer]).await.expect("ad"), 0);
    }

    #[tokio::test]
    async fn already_delivered_is_zero_when_file_holds_other_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("h.jsonl");
        let mut sink = open(&path);
        sink.deliver(&items(0..5)).await.expect("deliver");
        assert_eq!(sink.already_delivered(&items(5..8)).await.expect("ad"), 0);
    }

    #[tokio::test]
    async fn unparseable_lines_are_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("h.jsonl");
        let all = items(0..2);
        let mut bytes = lines_of(&all[..1]);
        bytes.extend_from_slice(b"not json\n");
        bytes.extend_from_slice(&lines_of(&all[1..]));
        std::fs::write(&path, bytes).expect("write");
        let mut sink = open(&path);
        assert_eq!(sink.already_delivered(&all).await.expect("ad"), 2);
    }

    #[tokio::test]
    async fn torn_last_line_is_cut_on_open_and_written_again_exactly_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("h.jsonl");
        let all = items(0..3);
        // A crash persisted item 1 but not its newline.
        let mut bytes = lines_of(&all[..1]);
        bytes.extend_from_slice(&all[1].json);
        std::fs::write(&path, &bytes).expect("write");

        let mut sink = open(&path);
        assert_eq!(read(&path), lines_of(&all[..1]));
        let head = &all[1..];
        let n = sink.already_delivered(head).await.expect("ad");
        assert_eq!(n, 0);
        sink.deliver(&head[n..]).await.expect("deliver");
        assert_eq!(read(&path), lines_of(&all));
        assert_each_once(&path, &all);
    }

    #[test]
    fn torn_line_without_any_newline_is_cut_to_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("h.jsonl");
        // Longer than one block, to walk backwards more than once.
        std::fs::write(&path, vec![b'x'; 3 * BLOCK as usize + 7]).expect("write");
        let _sink = open(&path);
        assert_eq!(read(&path), b"");
    }

    #[tokio::test]
    async fn crash_before_outbox_deletion_yields_each_item_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("h.jsonl");
        let outbox = items(0..8);
        let mut sink = open(&path);
        sink.deliver(&outbox[..2]).await.expect("deliver");
        let mut outbox = outbox[2..].to_vec(); // the daemon deleted the first batch
        sink.deliver(&outbox[..4]).await.expect("deliver");
        // Crash: the sink is gone and the outbox deletion of the second batch never happened.
        drop(sink);

        let mut sink = open(&path);
        let n = sink.already_delivered(&outbox).await.expect("ad");
        assert_eq!(n, 4);
        outbox.drain(..n);
        sink.deliver(&outbox).await.expect("deliver the rest");
        assert_each_once(&path, &items(0..8));
        assert_eq!(read(&path), lines_of(&items(0..8)));
    }

    #[tokio::test]
    async fn dropped_deliver_future_does_not_duplicate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("h.jsonl");
        let all = items(0..6);
        let mut sink = open(&path);
        sink.deliver(&all[..3]).await.expect("deliver");
        // As if that future had been dropped (a timeout) after its blocking task wrote the batch.
        sink.uncertain = true;
        sink.deliver(&all).await.expect("retry of a longer batch");
        assert_each_once(&path, &all);
        assert_eq!(read(&path), lines_of(&all));
    }

    #[tokio::test]
    async fn reads_only_the_tail_of_a_large_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("h.jsonl");
        let all = items(0..100_000);
        {
            let mut w = BufWriter::new(File::create(&path).expect("create"));
            w.write_all(&lines_of(&all)).expect("write");
            w.flush().expect("flush");
        }
        let file_len = std::fs::metadata(&path).expect("meta").len();
        let mut sink = open(&path);

        // The last batch (3 items) is the head of the outbox.
        let head: Vec<_> = all[99_997..]
            .iter()
            .cloned()
            .chain(items(100_000..100_002))
            .collect();
        assert_eq!(sink.already_delivered(&head).await.expect("ad"), 3);
        // A line far from the end is outside the tail.
        assert_eq!(sink.already_delivered(&all[..1]).await.expect("ad"), 0);

        let max_lines = MAX_BATCH + TAIL_MARGIN;
        let tail = read_tail(
            sink.inner
                .lock()
                .expect("lock")
                .file
                .as_ref()
                .expect("file"),
            max_lines,
        )
        .expect("tail");
        let longest = all
            .iter()
            .map(|d| d.json.len() as u64 + 1)
            .max()
            .unwrap_or(0);
        assert!((tail.len() as u64) < (max_lines as u64 + 1) * longest + BLOCK);
        assert!((tail.len() as u64) < file_len / 10);
        assert_eq!(tail_keys(&tail, max_lines).len(), max_lines);
    }

    #[tokio::test]
    async fn tail_covers_a_head_longer_than_max_batch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("h.jsonl");
        let all = items(0..1_000);
        let mut sink = open(&path);
        sink.deliver(&all).await.expect("deliver");
        assert_eq!(sink.already_delivered(&all).await.expect("ad"), 1_000);
    }

    #[tokio::test]
    async fn reopen_after_rename_writes_to_a_new_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("h.jsonl");
        let rotated = dir.path().join("h.jsonl.1");
        let all = items(0..4);
        let mut sink = open(&path);
        sink.deliver(&all[..2]).await.expect("deliver");
        std::fs::rename(&path, &rotated).expect("rename");
        sink.reopen().await.expect("reopen");
        sink.deliver(&all[2..]).await.expect("deliver");
        assert_eq!(read(&rotated), lines_of(&all[..2]));
        assert_eq!(read(&path), lines_of(&all[2..]));
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[tokio::test]
    async fn failed_write_is_cut_back_and_retryable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("h.jsonl");
        let all = items(0..5);
        let mut sink = open(&path);
        sink.deliver(&all[..2]).await.expect("deliver");

        lock(&sink.inner).log.faults.write_after = Some(all[2].json.len() + 5);
        let err = sink.deliver(&all[2..]).await.expect_err("injected failure");
        assert!(err.is_retryable());
        assert_eq!(err.delivered, 0);
        let msg = err.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains("injected write failure"), "{msg}");
        // Cut back at once: no torn line, not even the whole first line of the batch.
        assert_eq!(read(&path), lines_of(&all[..2]));

        lock(&sink.inner).log.faults.write_after = None;
        sink.deliver(&all[2..]).await.expect("retry");
        assert_eq!(read(&path), lines_of(&all));
    }

    #[tokio::test]
    async fn failed_cut_back_is_done_before_the_next_write() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("h.jsonl");
        let all = items(0..5);
        let mut sink = open(&path);
        sink.deliver(&all[..2]).await.expect("deliver");

        {
            let mut inner = lock(&sink.inner);
            inner.log.faults.write_after = Some(all[2].json.len() + all[3].json.len() / 2);
            inner.log.faults.truncate = true;
        }
        let err = sink.deliver(&all[2..]).await.expect_err("injected failure");
        assert!(err.is_retryable());
        assert!(
            !read(&path).ends_with(b"\n"),
            "the torn bytes are still there"
        );

        // Still failing to truncate: nothing more may be written after the torn bytes.
        lock(&sink.inner).log.faults.write_after = None;
        let torn = read(&path);
        let err = sink
            .deliver(&all[2..])
            .await
            .expect_err("cut back still failing");
        assert!(err.is_retryable());
        assert_eq!(read(&path), torn);

        lock(&sink.inner).log.faults.truncate = false;
        sink.deliver(&all[2..]).await.expect("retry");
        assert_eq!(read(&path), lines_of(&all));
        assert_each_once(&path, &all);
    }

    #[tokio::test]
    async fn item_that_is_not_one_line_is_rejected_after_the_ones_before_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("h.jsonl");
        let mut all = items(0..3);
        all[1].json = b"{\"id\":\n1}".to_vec();
        let mut sink = open(&path);
        let err = sink.deliver(&all).await.expect_err("rejected");
        assert!(!err.is_retryable());
        assert_eq!(err.delivered, 1);
        assert_eq!(read(&path), lines_of(&all[..1]));
        all[1].json.clear();
        let err = sink.deliver(&all[1..]).await.expect_err("rejected");
        assert_eq!(err.delivered, 0);
        assert_eq!(read(&path), lines_of(&all[..1]));
    }

    #[tokio::test]
    async fn a_folder_at_the_path_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("h.jsonl");
        std::fs::create_dir(&path).expect("mkdir");
        let err = JsonlSink::open(JsonlSinkConfig { path: path.clone() }).expect_err("a folder");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );

        // Rotated away and replaced by a folder: reopen and deliver fail, retryably, and
        // recover once the path is usable again.
        let path = dir.path().join("g.jsonl");
        let all = items(0..3);
        let mut sink = open(&path);
        sink.deliver(&all[..1]).await.expect("deliver");
        std::fs::rename(&path, dir.path().join("g.jsonl.1")).expect("rename");
        std::fs::create_dir(&path).expect("mkdir");
        let err = sink.reopen().await.expect_err("reopen onto a folder");
        assert!(err.is_retryable());
        let err = sink
            .deliver(&all[1..])
            .await
            .expect_err("deliver onto a folder");
        assert!(err.is_retryable());
        assert_eq!(err.delivered, 0);
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
        std::fs::remove_dir(&path).expect("rmdir");
        sink.deliver(&all[1..])
            .await
            .expect("deliver after the fix");
        assert_eq!(read(&path), lines_of(&all[1..]));
    }

    #[test]
    fn check_writable_creates_and_writes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let nested = dir.path().join("x/y/h.jsonl");
        check_writable(&nested).expect("creatable");
        assert!(!dir.path().join("x").exists());

        let existing = dir.path().join("h.jsonl");
        std::fs::write(&existing, b"line\n").expect("write");
        let before = std::fs::metadata(&existing)
            .expect("meta")
            .modified()
            .expect("mtime");
        check_writable(&existing).expect("writable");
        let mut content = String::new();
        File::open(&existing)
            .expect("open")
            .read_to_string(&mut content)
            .expect("read");
        assert_eq!(content, "line\n");
        let after = std::fs::metadata(&existing)
            .expect("meta")
            .modified()
            .expect("mtime");
        assert_eq!(before, after);
        let names: Vec<_> = std::fs::read_dir(dir.path()).expect("ls").collect();
        assert_eq!(names.len(), 1, "the probe file was removed");

        let err = check_writable(dir.path()).expect_err("a folder");
        assert!(matches!(err, JsonlError::NotAFile { .. }), "{err}");
        let err = check_writable(&existing.join("h.jsonl")).expect_err("under a file");
        assert!(matches!(err, JsonlError::NotAFolder { .. }), "{err}");
        assert!(
            err.to_string().contains(&existing.display().to_string()),
            "{err}"
        );
    }
}
