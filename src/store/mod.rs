//! The state database: a typed facade over one redb file and its redo log (`wal`). redb
//! types never leave this module; callers see seen-event marks, conversation states,
//! per-sink outboxes, dead letters, counters and cursors.
//!
//! Writes happen in [`Store::write`], which runs a closure inside one write transaction and
//! makes it durable before returning (one append to the redo log and one `fdatasync`). The
//! daemon funnels all writes through one writer thread (see `ingest`) so many requests
//! share one commit.
//!
//! Only one process may open the file: redb locks it, and [`StoreError::AlreadyInUse`] says so.

mod deferred;
mod oauth;
mod tables;
mod wal;

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use frontsync_sinks::Delivery;
use redb::{
    Database, DatabaseError, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    Table, TableDefinition, TableHandle,
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use deferred::{Deferred, Rows, Staged};
pub use oauth::OAuthGrant;
use tables::*;
pub use wal::CHECKPOINT_EVERY;
use wal::{LogStart, Logged, TableId, Wal, WalError};

/// The store format this build writes. 2: conversation states in MessagePack
/// (`conversations_v2`), outbox sequence numbers among the counters; a format-1 file is
/// converted when opened.
const SCHEMA_VERSION: u64 = 2;

/// Conversation states converted per transaction when a format-1 file is opened.
const MIGRATE_CHUNK: usize = 5_000;

/// redb's page cache. Its default (1 GiB) lets memory grow with the file: a sink down for
/// hours would hold its whole outbox in RAM. Bounded, the outbox really stays on disk;
/// this is far more than one commit (at most `MAX_BATCH_OPS` events) or the hot pages of
/// the tables (outbox heads and tails, recent conversations) need. 16 MiB keeps the
/// daemon under 50 MB of RSS at saturation, mimalloc's own overhead included; 24 MiB gave
/// 57-60 MB over 150,000 webhooks and no more throughput, at 1,000/s and with 1,000,000
/// seen ids in the file neither (BENCHMARKS.md, "Held rows bounded").
const CACHE_BYTES: usize = 16 << 20;

/// Why the state database failed. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "state database {0} is already in use by another frontsync process (only one may run per state file)"
    )]
    AlreadyInUse(PathBuf),
    #[error("cannot open state database {path}: {message}")]
    Open { path: PathBuf, message: String },
    #[error(
        "state database {path} was written by a newer frontsync (format {found}, this build reads {SCHEMA_VERSION})"
    )]
    NewerFormat { path: PathBuf, found: u64 },
    #[error("state database {path}: {message}")]
    Db { path: PathBuf, message: String },
    /// The redo log beside the state file (its message names the log).
    #[error("state database {0}")]
    Wal(#[from] WalError),
    #[error("state database {path}: corrupt record in {table}: {message}")]
    Corrupt {
        path: PathBuf,
        table: &'static str,
        message: String,
    },
}

/// A Highlight that a sink rejected for good, kept for the operator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The Highlight as it was queued.
    pub highlight: serde_json::Value,
    /// Why it was rejected (lowercase, one line).
    pub error: String,
    /// HTTP status, for HTTP sinks.
    pub status: Option<u16>,
    /// A bounded excerpt of the receiver's answer.
    pub body_excerpt: Option<String>,
    /// Delivery attempts made.
    pub attempts: u32,
    /// Unix ms when it was dead-lettered.
    pub at_ms: u64,
}

/// Why a sink rejected a Highlight for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Lowercase, one line.
    pub error: String,
    /// HTTP status, for HTTP sinks.
    pub status: Option<u16>,
    /// A bounded excerpt of the receiver's answer.
    pub body_excerpt: Option<String>,
    /// Delivery attempts made.
    pub attempts: u32,
}

/// Which dead letters of a sink an operator command applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeadLetterSelection {
    /// Every dead letter of the sink.
    All,
    /// These dead letters, by the seq they are listed under.
    Seqs(Vec<u64>),
}

/// One dead letter an operator command acted on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LetterMoved {
    /// The seq it was listed under as a dead letter.
    pub seq: u64,
    /// Its new outbox seq, when it was requeued (at the end of the outbox).
    pub new_seq: Option<u64>,
    /// The Highlight's `id` (empty when the stored record has none).
    pub highlight_id: String,
    /// The Highlight's `revision` (0 when the stored record has none).
    pub revision: u64,
}

/// What a requeue or drop of dead letters did. A refused command changed nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeadLetterOutcome {
    /// Done, one entry per dead letter, in seq order.
    Done(Vec<LetterMoved>),
    /// These seqs are not dead letters of the sink; nothing was changed.
    Unknown(Vec<u64>),
    /// These dead letters hold no usable Highlight and cannot be resent (drop them);
    /// nothing was changed.
    Unresendable(Vec<u64>),
}

/// The state database. Cheap to clone; all clones share one open file.
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
    path: Arc<PathBuf>,
    wal: Arc<WalHandle>,
}

/// The redo log, shared by every clone of a [`Store`], with the committed changes that are
/// held out of redb until the next checkpoint; the last clone to go takes a checkpoint, so
/// a cleanly closed state file needs no replay.
struct WalHandle {
    db: Arc<Database>,
    path: Arc<PathBuf>,
    wal: Mutex<Wal>,
    held: Mutex<Deferred>,
}

impl WalHandle {
    fn lock(&self) -> MutexGuard<'_, Wal> {
        // A panic while holding it left the log as whole records (appends are all or
        // nothing), so the lock is still good.
        self.wal
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn held(&self) -> MutexGuard<'_, Deferred> {
        lock_held(&self.held)
    }
}

/// Locks what is held out of redb. It is only changed by whole `publish` or `clear` calls,
/// which cannot stop halfway, so a lock poisoned by a panic elsewhere is still good.
fn lock_held(held: &Mutex<Deferred>) -> MutexGuard<'_, Deferred> {
    held.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The bytes redb stores for the outbox key `(sink, seq)`, as the redo log records them.
fn outbox_key_bytes(sink: &str, seq: u64) -> Vec<u8> {
    <(&str, u64) as redb::Value>::as_bytes(&(sink, seq))
}

/// Writes what is held out of redb into a checkpoint's transaction: the entries still
/// queued (but those `staged` removed) and the counters (but those `overridden`, which the
/// transaction writes itself).
fn write_held(
    held: &Deferred,
    staged: &Staged,
    overridden: &HashMap<String, u64>,
    outbox: &mut Table<'_, (&'static str, u64), &'static [u8]>,
    counters: &mut Table<'_, &'static str, u64>,
) -> Result<(), redb::StorageError> {
    for (sink, seq, json) in held.entries() {
        if !staged.removed_held(sink, seq) {
            outbox.insert((sink, seq), json)?;
        }
    }
    for (key, value) in held.counters() {
        if !overridden.contains_key(key) {
            counters.insert(key, value)?;
        }
    }
    Ok(())
}

/// Writes seen marks and conversation states held out of redb into a transaction: all of
/// them in a checkpoint (and at close), some in a write-back.
fn write_held_rows<K: AsRef<str>, V: AsRef<[u8]>>(
    rows: &Rows<K, V>,
    seen: &mut Table<'_, &'static str, u64>,
    conversations: &mut Table<'_, &'static str, &'static [u8]>,
) -> Result<(), redb::StorageError> {
    for (key, first_seen) in &rows.seen {
        seen.insert(key.as_ref(), *first_seen)?;
    }
    for (key, packed) in &rows.conversations {
        conversations.insert(key.as_ref(), packed.as_ref())?;
    }
    Ok(())
}

impl Drop for WalHandle {
    fn drop(&mut self) {
        let mut wal = self.lock();
        if !wal.holds_records() {
            // Only a logged commit holds anything out of redb.
            debug_assert!(self.held().is_empty());
            return;
        }
        // A durable commit makes every earlier commit durable.
        let start = wal.start_after_checkpoint();
        let mut held = lock_held(&self.held);
        let checkpoint = self
            .db
            .begin_write()
            .map_err(|e| e.to_string())
            .and_then(|txn| {
                {
                    let mut seen = txn.open_table(SEEN_EVENTS).map_err(|e| e.to_string())?;
                    let mut conversations =
                        txn.open_table(CONVERSATIONS).map_err(|e| e.to_string())?;
                    write_held_rows(&held.rows(usize::MAX), &mut seen, &mut conversations)
                        .map_err(|e| e.to_string())?;
                    let mut outbox = txn.open_table(OUTBOX).map_err(|e| e.to_string())?;
                    let mut counters = txn.open_table(COUNTERS).map_err(|e| e.to_string())?;
                    write_held(
                        &held,
                        &Staged::default(),
                        &HashMap::new(),
                        &mut outbox,
                        &mut counters,
                    )
                    .map_err(|e| e.to_string())?;
                }
                store_log_start(&txn, start).map_err(|e| e.to_string())?;
                txn.commit().map_err(|e| e.to_string())
            });
        match checkpoint {
            Ok(()) => {
                wal.emptied();
                held.clear();
            }
            Err(error) => tracing::warn!(
                state = %self.path.display(),
                %error,
                "closing the state database without a checkpoint; its redo log is replayed when it is next opened"
            ),
        }
    }
}

/// `wal_start` in the meta table: where the redo log starts after this (durable) commit.
const WAL_START: &str = "wal_start";

/// Records in a checkpoint's transaction the sequence number the log starts at after it.
fn store_log_start(txn: &redb::WriteTransaction, seq: u64) -> Result<(), redb::Error> {
    txn.open_table(META)?.insert(WAL_START, seq)?;
    Ok(())
}

/// Where the redo log of `db` starts, as its last checkpoint stored it.
fn log_start(db: &Database) -> Result<LogStart, redb::Error> {
    let txn = db.begin_read()?;
    let meta = match txn.open_table(META) {
        Ok(meta) => meta,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(LogStart::NewState),
        Err(e) => return Err(e.into()),
    };
    Ok(match meta.get(WAL_START)? {
        Some(seq) => LogStart::At(seq.value()),
        None if meta.get("schema")?.is_some() => LogStart::Unrecorded,
        None => LogStart::NewState,
    })
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

/// The minimum of a queued Highlight needed to hand it to a sink.
#[derive(Debug, PartialEq, Deserialize)]
struct OutboxKey {
    id: String,
    revision: u64,
}

impl OutboxKey {
    /// Reads the key of a queued Highlight. Every entry is read again for each delivery
    /// attempt, and a full parse walks the whole text (under callgrind it was four fifths of
    /// the instructions of reading an outbox head), so the opening serde_json writes for a
    /// `Highlight` is read directly and anything else falls back to a parse.
    fn read(json: &[u8]) -> Result<OutboxKey, serde_json::Error> {
        match Self::read_prefix(json) {
            Some(key) => Ok(key),
            None => serde_json::from_slice(json),
        }
    }

    /// `{"schema":"…","id":"…","revision":N,` with no escape in the two strings, exactly as
    /// `serde_json::to_vec(&Highlight)` begins; `None` for any other shape. The rest is not
    /// checked: outbox entries are only ever written by serde_json (and redb checksums the
    /// pages), and the strings read here are the ones a parse would return.
    fn read_prefix(json: &[u8]) -> Option<OutboxKey> {
        /// The string at the start of `s` up to its closing quote, if it has no escapes.
        fn plain_str(s: &[u8]) -> Option<(&str, &[u8])> {
            let end = s
                .iter()
                .position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
            if s[end] != b'"' {
                return None;
            }
            Some((std::str::from_utf8(&s[..end]).ok()?, &s[end + 1..]))
        }
        let (_schema, rest) = plain_str(json.strip_prefix(br#"{"schema":""#)?)?;
        let (id, rest) = plain_str(rest.strip_prefix(br#","id":""#)?)?;
        let rest = rest.strip_prefix(br#","revision":"#)?;
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        // A JSON number has no leading zero; `1e3` or `1.0` would not be a u64 to serde.
        let valid_end = matches!(rest.get(digits), Some(b',' | b'}'));
        if digits == 0 || (digits > 1 && rest[0] == b'0') || !valid_end {
            return None;
        }
        let revision = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
        Some(OutboxKey {
            id: id.to_owned(),
            revision,
        })
    }
}

impl Store {
    /// Opens (or creates, mode 0600 in a 0700 folder) the state database.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let open_err = |message: String| StoreError::Open {
            path: path.to_path_buf(),
            message,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(|e| open_err(format!("cannot create folder {}: {e}", parent.display())))?;
        }
        // redb would create the file with the umask's mode; create it first so it is 0600.
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|e| open_err(e.to_string()))?;
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(|e| match e {
                DatabaseError::DatabaseAlreadyOpen => StoreError::AlreadyInUse(path.to_path_buf()),
                other => open_err(other.to_string()),
            })?;
        let db = Arc::new(db);
        let start = log_start(&db).map_err(|e| open_err(e.to_string()))?;
        let (wal, found) = Wal::open(path, start)?;
        let path = Arc::new(path.to_path_buf());
        let store = Store {
            wal: Arc::new(WalHandle {
                db: Arc::clone(&db),
                path: Arc::clone(&path),
                wal: Mutex::new(wal),
                held: Mutex::new(Deferred::default()),
            }),
            db,
            path,
        };
        store.recover(found)?;
        store.init_schema()?;
        Ok(store)
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn db_err(&self, e: impl std::fmt::Display) -> StoreError {
        db_err(&self.path, e)
    }

    /// Applies what the redo log holds beyond the last checkpoint (after a crash), as one
    /// checkpoint; a clean close leaves nothing to do.
    fn recover(&self, found: wal::Found) -> Result<(), StoreError> {
        if found.torn {
            // Only a record whose write never completed is torn, and its caller was never
            // answered.
            tracing::warn!(
                log = %wal::path_for(&self.path).display(),
                "redo log ends in a torn record; it was never acknowledged and is dropped"
            );
        }
        if found.records == 0 {
            return Ok(());
        }
        let mut wal = self.wal.lock();
        let txn = self.db.begin_write().map_err(|e| self.db_err(e))?;
        {
            let mut replayer = wal::Replayer::new(&txn, &self.path)?;
            wal.replay(|seq, body| replayer.apply(seq, body))?;
        }
        store_log_start(&txn, wal.start_after_checkpoint()).map_err(|e| self.db_err(e))?;
        txn.commit().map_err(|e| self.db_err(e))?;
        wal.emptied();
        tracing::info!(
            state = %self.path.display(),
            commits = found.records,
            "replayed the redo log of an unclean shutdown"
        );
        Ok(())
    }

    fn init_schema(&self) -> Result<(), StoreError> {
        let found = self.write_durable(|txn| {
            let meta = txn.txn.open_table(META).map_err(|e| txn.err(e))?;
            let found = meta
                .get("schema")
                .map_err(|e| txn.err(e))?
                .map(|v| v.value());
            match found {
                Some(v) if v > SCHEMA_VERSION => Err(StoreError::NewerFormat {
                    path: txn.path.to_path_buf(),
                    found: v,
                }),
                _ => Ok(found),
            }
        })?;
        // Create every table so readers never meet a missing one, and drop the retired ones.
        self.write_durable(|txn| {
            if txn
                .txn
                .delete_table(RETIRED_SEEN_BY_TIME)
                .map_err(|e| txn.err(e))?
            {
                tracing::info!(
                    table = RETIRED_SEEN_BY_TIME.name(),
                    "deleted the retired age index of seen event ids"
                );
            }
            txn.seen()?;
            txn.conversations()?;
            txn.outbox()?;
            txn.dead_letters()?;
            txn.counters_table()?;
            txn.cursors()?;
            txn.pending_previews()?;
            txn.oauth_grants()?;
            Ok(())
        })?;
        if found.is_some_and(|v| v < 2) {
            self.migrate_outbox_seqs_to_counters()?;
            self.migrate_conversations_to_v2()?;
        }
        if found != Some(SCHEMA_VERSION) {
            self.write_durable(|txn| {
                txn.txn
                    .open_table(META)
                    .map_err(|e| txn.err(e))?
                    .insert("schema", SCHEMA_VERSION)
                    .map_err(|e| txn.err(e))?;
                Ok(())
            })?;
        }
        Ok(())
    }

    /// Format 1 -> 2: the next outbox sequence number of each sink becomes its
    /// `outbox_next_seq` counter (one transaction: a few rows).
    fn migrate_outbox_seqs_to_counters(&self) -> Result<(), StoreError> {
        self.write_durable(|txn| {
            let path = txn.path;
            let seqs: Vec<(String, u64)> = {
                let old = txn
                    .txn
                    .open_table(RETIRED_OUTBOX_SEQ_V1)
                    .map_err(|e| db_err(path, e))?;
                old.iter()
                    .map_err(|e| db_err(path, e))?
                    .map(|row| {
                        row.map(|(k, v)| (k.value().to_string(), v.value()))
                            .map_err(|e| db_err(path, e))
                    })
                    .collect::<Result<_, _>>()?
            };
            let mut table = txn.counters_table()?;
            for (sink, next) in &seqs {
                table
                    .insert(compound(counters::OUTBOX_NEXT_SEQ, sink).as_str(), *next)
                    .map_err(|e| db_err(path, e))?;
            }
            txn.txn
                .delete_table(RETIRED_OUTBOX_SEQ_V1)
                .map_err(|e| db_err(path, e))?;
            Ok(())
        })
    }

    /// Format 1 -> 2: moves every JSON conversation state to `conversations_v2` as
    /// MessagePack, [`MIGRATE_CHUNK`] per transaction (a state is in exactly one of the two
    /// tables at every commit, so a crash midway resumes here on the next open), then
    /// deletes the old table. The conversion goes through `serde_json::Value`, so it needs
    /// no knowledge of the state's type and keeps every field.
    fn migrate_conversations_to_v2(&self) -> Result<(), StoreError> {
        let total = {
            let txn = self.db.begin_read().map_err(|e| self.db_err(e))?;
            match txn.open_table(RETIRED_CONVERSATIONS_V1) {
                Ok(t) => t.len().map_err(|e| self.db_err(e))?,
                Err(redb::TableError::TableDoesNotExist(_)) => 0,
                Err(e) => return Err(self.db_err(e)),
            }
        };
        if total > 0 {
            tracing::info!(
                states = total,
                "converting conversation states to the format-2 encoding"
            );
        }
        let mut moved = 0u64;
        loop {
            let n = self.write_durable(|txn| {
                let path = txn.path;
                let mut old = txn
                    .txn
                    .open_table(RETIRED_CONVERSATIONS_V1)
                    .map_err(|e| db_err(path, e))?;
                let mut chunk = Vec::with_capacity(MIGRATE_CHUNK);
                for row in old.iter().map_err(|e| db_err(path, e))?.take(MIGRATE_CHUNK) {
                    let (k, v) = row.map_err(|e| db_err(path, e))?;
                    let corrupt = |message: String| StoreError::Corrupt {
                        path: path.to_path_buf(),
                        table: "conversations_v1",
                        message,
                    };
                    let value: serde_json::Value = serde_json::from_slice(v.value())
                        .map_err(|e| corrupt(format!("{}: {e}", k.value())))?;
                    let packed = rmp_serde::to_vec_named(&value)
                        .map_err(|e| corrupt(format!("{}: {e}", k.value())))?;
                    chunk.push((k.value().to_string(), packed));
                }
                for (key, _) in &chunk {
                    old.remove(key.as_str()).map_err(|e| db_err(path, e))?;
                }
                drop(old);
                let mut new = txn.conversations()?;
                for (key, packed) in &chunk {
                    new.insert(key.as_str(), packed.as_slice())
                        .map_err(|e| db_err(path, e))?;
                }
                if chunk.is_empty() {
                    txn.txn
                        .delete_table(RETIRED_CONVERSATIONS_V1)
                        .map_err(|e| db_err(path, e))?;
                }
                Ok(chunk.len())
            })?;
            if n == 0 {
                break;
            }
            moved += n as u64;
            tracing::info!(
                converted = moved,
                of = total,
                "converting conversation states"
            );
        }
        Ok(())
    }

    /// Runs `f` in one write transaction and makes it durable before returning: its changes
    /// are appended to the redo log and synced, then the transaction is committed and its
    /// held changes published (see `wal` and `deferred`); every [`wal::CHECKPOINT_EVERY`]
    /// the commit is a durable one instead, which also writes what is held into redb. If
    /// `f` fails nothing is written.
    pub fn write<R>(
        &self,
        f: impl FnOnce(&mut Txn<'_>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        self.write_with(false, f)
    }

    /// [`Store::write`] with a durable redb commit (a checkpoint), for transactions that
    /// change the file in ways the redo log does not record: the schema and its migrations.
    fn write_durable<R>(
        &self,
        f: impl FnOnce(&mut Txn<'_>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        self.write_with(true, f)
    }

    fn write_with<R>(
        &self,
        checkpoint: bool,
        f: impl FnOnce(&mut Txn<'_>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let mut txn = self.db.begin_write().map_err(|e| self.db_err(e))?;
        // redb lets one write transaction run at a time, so records reach the log in commit
        // order.
        let mut wal = self.wal.lock();
        let checkpoint = checkpoint || wal.checkpoint_due() || self.wal.held().rows_over_budget();
        if !checkpoint {
            txn.set_durability(Durability::None)
                .map_err(|e| self.db_err(e))?;
        }
        let capture = (!checkpoint).then(|| wal.capture());
        let mut t = Txn::new(&txn, &self.path, capture, &self.wal.held);
        // A checkpoint writes the held seen marks and states first, so that what `f` does
        // to them lands on top (the held outbox entries and counters go in at its end, by
        // `Txn::finish`, minus what `f` changed).
        let written = if checkpoint {
            t.write_held_rows()
        } else {
            Ok(())
        };
        let result = written
            .and_then(|()| f(&mut t))
            .and_then(|r| t.finish().map(|()| r));
        let capture = t.capture.take();
        let staged = std::mem::take(&mut t.staged);
        let changed_redb = t.changed_redb;
        // The open tables borrow the transaction; they close before it commits.
        drop(t);
        let r = match result {
            Ok(r) => r,
            Err(e) => {
                // Dropping aborts; an abort error is less interesting than the cause.
                let _ = txn.abort();
                return Err(e);
            }
        };
        match capture {
            None => {
                store_log_start(&txn, wal.start_after_checkpoint()).map_err(|e| self.db_err(e))?;
                // `Txn::finish` wrote what is held into this commit, but for what this
                // transaction removed: readers must see the commit and the held set
                // emptied together (see the other branch), or an entry this transaction
                // acknowledged would show from memory beside redb's new snapshot. This
                // blocks readers for the checkpoint's sync, once a second.
                let mut held = self.wal.held();
                txn.commit().map_err(|e| self.db_err(e))?;
                wal.emptied();
                held.clear();
            }
            Some(capture) if wal::is_empty(&capture) => {
                // Every change is recorded, so a transaction that recorded none changed
                // nothing: there is nothing to commit.
                debug_assert!(staged.is_empty() && !changed_redb);
                wal.recycle(capture);
                txn.abort().map_err(|e| self.db_err(e))?;
            }
            Some(mut capture) => {
                // On error the transaction is dropped, which aborts it.
                wal.append(&mut capture)?;
                let record_bytes = capture.len() as u64;
                wal.recycle(capture);
                // Readers copy what is held and open their redb snapshot under this lock, so
                // holding it across the commit and the publish shows them the transaction
                // whole: never a later entry that went into redb without an earlier one
                // that is held.
                let mut held = self.wal.held();
                // A transaction that changed only what is held (an acknowledgement of held
                // entries, most often) leaves redb as it was: the record is the commit.
                let done = if changed_redb {
                    txn.commit()
                } else {
                    txn.abort().map_err(redb::CommitError::from)
                };
                if let Err(e) = done {
                    drop(held);
                    wal.drop_last(record_bytes);
                    return Err(self.db_err(e));
                }
                held.publish(staged);
            }
        }
        Ok(r)
    }

    /// Moves up to `max` of the seen marks and conversation states held out of redb (see
    /// `deferred`) into redb, in a commit without a sync, when at least `min` are held;
    /// returns how many it moved. The writer calls this when it has nothing else to do, so
    /// that a checkpoint finds few rows left to insert: it stalls every write for as long
    /// as that takes. The rows' records stay in the redo log, which the next checkpoint
    /// empties, so nothing changes for a crash: redb reopens at its last checkpoint and the
    /// log brings the rows back. Nothing is recorded: what readers see does not change.
    pub fn write_back_held(&self, min: usize, max: usize) -> Result<usize, StoreError> {
        if self.wal.held().rows_count() < min.max(1) {
            return Ok(0);
        }
        let mut txn = self.db.begin_write().map_err(|e| self.db_err(e))?;
        txn.set_durability(Durability::None)
            .map_err(|e| self.db_err(e))?;
        // Held rows change only in a write transaction's commit, and this one excludes all
        // others until it ends, so the copies stay exact until the rows are forgotten.
        // Copied, so that readers are not kept waiting on the lock while they are inserted.
        let rows = self.wal.held().rows(max).to_owned();
        {
            let mut seen = txn.open_table(SEEN_EVENTS).map_err(|e| self.db_err(e))?;
            let mut states = txn.open_table(CONVERSATIONS).map_err(|e| self.db_err(e))?;
            write_held_rows(&rows, &mut seen, &mut states).map_err(|e| self.db_err(e))?;
        }
        // Commit and forget under the lock readers take with their snapshot (as in
        // `write_with`): a reader finds each row in one of the two, never in neither.
        let mut held = self.wal.held();
        txn.commit().map_err(|e| self.db_err(e))?;
        held.forget_rows(&rows);
        Ok(rows.len())
    }

    /// Seen marks and states held out of redb (tests of the writer's write-back).
    #[cfg(test)]
    pub(crate) fn held_rows(&self) -> usize {
        self.wal.held().rows_count()
    }

    /// Tests: commits are checkpoints only when asked (no budget of held rows, no timed
    /// checkpoints), so what is held is what the write-back left.
    #[cfg(test)]
    pub(crate) fn checkpoint_only_when_asked(&self) {
        self.wal.held().set_rows_budget(usize::MAX);
        self.wal.lock().postpone_timed_checkpoints();
    }

    /// Up to `limit` outbox entries of `sink`, oldest first: those held out of redb (see
    /// `deferred`) and those in it.
    pub fn outbox_head(&self, sink: &str, limit: usize) -> Result<Vec<Delivery>, StoreError> {
        // The held entries and the redb snapshot are taken under one lock, which a commit
        // holds across its redb commit and its publish (a checkpoint: its commit and the
        // emptying of the held set): both halves of a commit or neither.
        let (mut entries, txn) = {
            let held = self.wal.held();
            let entries = held.head(sink, limit);
            (entries, self.db.begin_read().map_err(|e| self.db_err(e))?)
        };
        let table = txn.open_table(OUTBOX).map_err(|e| self.db_err(e))?;
        let held = entries.len();
        for row in table
            .range((sink, 0u64)..=(sink, u64::MAX))
            .map_err(|e| self.db_err(e))?
            .take(limit)
        {
            let (k, v) = row.map_err(|e| self.db_err(e))?;
            entries.push((k.value().1, v.value().to_vec()));
        }
        if held > 0 && entries.len() > held {
            // Two runs in seq order, with no entry in both (the lock above).
            entries.sort_by_key(|(seq, _)| *seq);
            debug_assert!(entries.windows(2).all(|w| w[0].0 < w[1].0));
        }
        entries.truncate(limit);
        entries
            .into_iter()
            .map(|(seq, json)| {
                let key = OutboxKey::read(&json).map_err(|e| StoreError::Corrupt {
                    path: self.path.to_path_buf(),
                    table: "outbox_v1",
                    message: e.to_string(),
                })?;
                Ok(Delivery {
                    seq,
                    id: key.id,
                    revision: key.revision,
                    json,
                })
            })
            .collect()
    }

    /// A counter's value (0 when never set).
    pub fn counter(&self, name: &str, scope: &str) -> Result<u64, StoreError> {
        let key = compound(name, scope);
        // Under the lock, as in `outbox_head`.
        let txn = {
            let held = self.wal.held();
            if let Some(value) = held.counter(&key) {
                return Ok(value);
            }
            self.db.begin_read().map_err(|e| self.db_err(e))?
        };
        let table = txn.open_table(COUNTERS).map_err(|e| self.db_err(e))?;
        Ok(table
            .get(key.as_str())
            .map_err(|e| self.db_err(e))?
            .map(|v| v.value())
            .unwrap_or(0))
    }

    /// Entries waiting in `sink`'s outbox.
    pub fn outbox_depth(&self, sink: &str) -> Result<u64, StoreError> {
        self.counter(counters::OUTBOX_DEPTH, sink)
    }

    /// Every dead letter of `sink`, oldest first.
    pub fn dead_letters(&self, sink: &str) -> Result<Vec<(u64, DeadLetter)>, StoreError> {
        self.dead_letters_head(sink, usize::MAX)
    }

    /// Up to `limit` dead letters of `sink`, oldest first (a listing must stay bounded
    /// however many a misconfigured receiver produced).
    pub fn dead_letters_head(
        &self,
        sink: &str,
        limit: usize,
    ) -> Result<Vec<(u64, DeadLetter)>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.db_err(e))?;
        let table = txn.open_table(DEAD_LETTERS).map_err(|e| self.db_err(e))?;
        let mut out = Vec::new();
        for row in table
            .range((sink, 0u64)..=(sink, u64::MAX))
            .map_err(|e| self.db_err(e))?
        {
            if out.len() >= limit {
                break;
            }
            let (k, v) = row.map_err(|e| self.db_err(e))?;
            out.push((k.value().1, self.parse_letter(v.value())?));
        }
        Ok(out)
    }

    fn parse_letter(&self, bytes: &[u8]) -> Result<DeadLetter, StoreError> {
        serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
            path: self.path.to_path_buf(),
            table: "dead_letters_v1",
            message: e.to_string(),
        })
    }

    /// A cursor's stored value.
    pub fn cursor<T: DeserializeOwned>(
        &self,
        kind: &str,
        name: &str,
    ) -> Result<Option<T>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.db_err(e))?;
        let table = txn.open_table(CURSORS).map_err(|e| self.db_err(e))?;
        get_json(&table, &compound(kind, name), &self.path, "cursors_v1")
    }

    /// The stored state of a conversation in a subscription.
    pub fn conversation<T: DeserializeOwned>(
        &self,
        subscription: &str,
        conversation_id: &str,
    ) -> Result<Option<T>, StoreError> {
        let key = compound(subscription, conversation_id);
        // Under the lock, as in `outbox_head`.
        let txn = {
            let held = self.wal.held();
            if let Some(packed) = held.conversation(&key) {
                return unpack(packed, &self.path).map(Some);
            }
            self.db.begin_read().map_err(|e| self.db_err(e))?
        };
        let table = txn.open_table(CONVERSATIONS).map_err(|e| self.db_err(e))?;
        get_packed(&table, &key, &self.path)
    }

    /// Up to `limit` webhook previews of `connection` waiting to be completed, oldest id first.
    pub fn pending_previews(
        &self,
        connection: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.db_err(e))?;
        let table = txn
            .open_table(PENDING_PREVIEWS)
            .map_err(|e| self.db_err(e))?;
        let mut out = Vec::new();
        for row in table
            .range((connection, "")..)
            .map_err(|e| self.db_err(e))?
        {
            let (k, v) = row.map_err(|e| self.db_err(e))?;
            let (conn, id) = k.value();
            if conn != connection || out.len() >= limit {
                break;
            }
            out.push((id.to_string(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// How many event ids are remembered as seen.
    pub fn seen_events(&self) -> Result<u64, StoreError> {
        // Under the lock, as in `outbox_head`; no held id is in redb.
        let (held, txn) = {
            let held = self.wal.held();
            let count = held.seen_count() as u64;
            (count, self.db.begin_read().map_err(|e| self.db_err(e))?)
        };
        let table = txn.open_table(SEEN_EVENTS).map_err(|e| self.db_err(e))?;
        Ok(held + table.len().map_err(|e| self.db_err(e))?)
    }
}

/// Names of the counters kept in the state database.
pub mod counters {
    /// Entries in a sink's outbox (scope: sink).
    pub const OUTBOX_DEPTH: &str = "outbox_depth";
    /// Highlights a sink delivered, ever (scope: sink).
    pub const DELIVERED: &str = "delivered_total";
    /// Dead letters of a sink (scope: sink).
    pub const DEAD_LETTERS: &str = "dead_letters";
    /// The next outbox sequence number to hand out (scope: sink); absent = 1.
    pub const OUTBOX_NEXT_SEQ: &str = "outbox_next_seq";
}

/// The bytes to queue again for a dead letter's Highlight, and its key; `None` when the
/// record cannot be delivered (no `id`/`revision`, so `outbox_head` could not read it).
fn resend_bytes(highlight: &serde_json::Value) -> Option<(Vec<u8>, OutboxKey)> {
    let key: OutboxKey = serde_json::from_value(highlight.clone()).ok()?;
    // Through the Highlight type, so the bytes are the original ones (field order is the
    // wire order); a serde_json map would sort the keys.
    let json = match serde_json::from_value::<frontsync_sinks::Highlight>(highlight.clone()) {
        Ok(h) => serde_json::to_vec(&h).ok()?,
        Err(_) => serde_json::to_vec(highlight).ok()?,
    };
    Some((json, key))
}

fn compound(a: &str, b: &str) -> String {
    let mut k = String::with_capacity(a.len() + b.len() + 1);
    k.push_str(a);
    k.push('\0');
    k.push_str(b);
    k
}

fn get_json<T: DeserializeOwned>(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
    path: &Path,
    name: &'static str,
) -> Result<Option<T>, StoreError> {
    let db_err = |e: redb::StorageError| StoreError::Db {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    match table.get(key).map_err(db_err)? {
        None => Ok(None),
        Some(v) => serde_json::from_slice(v.value())
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                path: path.to_path_buf(),
                table: name,
                message: e.to_string(),
            }),
    }
}

/// The MessagePack value under `key` in the conversations table.
fn get_packed<T: DeserializeOwned>(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
    path: &Path,
) -> Result<Option<T>, StoreError> {
    match table.get(key).map_err(|e| db_err(path, e))? {
        None => Ok(None),
        Some(v) => unpack(v.value(), path).map(Some),
    }
}

/// A conversation state from its MessagePack bytes.
fn unpack<T: DeserializeOwned>(packed: &[u8], path: &Path) -> Result<T, StoreError> {
    rmp_serde::from_slice(packed).map_err(|e| StoreError::Corrupt {
        path: path.to_path_buf(),
        table: "conversations_v2",
        message: e.to_string(),
    })
}

/// A dead letter's seq and stored bytes.
type RawLetter = (u64, Vec<u8>);

/// One open write transaction, with typed operations.
///
/// Tables are opened on first use and kept open until the commit, and the outbox sequence
/// numbers and counters an operation touches are kept in memory and recorded once, by
/// [`Txn::finish`]: one commit applies up to `MAX_BATCH_OPS` events, and reopening a table
/// or rewriting a counter row for each of them cost the writer as much as the rows
/// themselves. New outbox entries, counter values, seen marks and conversation states are
/// staged to be held out of redb (see `deferred`), but in a checkpoint, which writes them
/// into redb.
pub struct Txn<'a> {
    txn: &'a redb::WriteTransaction,
    path: &'a Path,
    tables: OpenTables<'a>,
    /// Counter values touched in this transaction (outbox sequence numbers included), by
    /// `compound(name, scope)`.
    counters: HashMap<String, u64>,
    /// One buffer to serialize values into, reused by every write of the transaction: a
    /// state or a Highlight is 0.5-1 KB, and a `Vec` grown from empty reallocates four or
    /// five times on the way there, for every event.
    scratch: Vec<u8>,
    /// The changes made so far, for the redo log; `None` in a checkpoint.
    capture: wal::Capture,
    /// What is held out of redb since earlier commits (see `deferred`).
    held: &'a Mutex<Deferred>,
    /// This transaction's changes to it, published when it has committed.
    staged: Staged,
    /// True once a redb table was changed (see [`Logged`]).
    changed_redb: bool,
}

/// Where [`Txn::remove_unwritten`] found an outbox entry.
enum Unwritten {
    /// Not held out of redb: look in redb.
    NotHeld,
    /// Removed, and its JSON when it was asked for.
    Removed(Option<Vec<u8>>),
    /// Already removed earlier in this transaction.
    Gone,
}

/// The tables a [`Txn`] has opened so far. redb refuses to open a table twice at once, so
/// every access inside a transaction goes through these slots.
#[derive(Default)]
struct OpenTables<'t> {
    seen: Option<Table<'t, &'static str, u64>>,
    conversations: Option<Table<'t, &'static str, &'static [u8]>>,
    outbox: Option<Table<'t, (&'static str, u64), &'static [u8]>>,
    dead_letters: Option<Table<'t, (&'static str, u64), &'static [u8]>>,
    counters_table: Option<Table<'t, &'static str, u64>>,
    cursors: Option<Table<'t, &'static str, &'static [u8]>>,
    pending_previews: Option<Table<'t, (&'static str, &'static str), &'static [u8]>>,
    oauth_grants: Option<Table<'t, &'static str, &'static [u8]>>,
}

/// The table in `slot`, opening it first if this transaction has not yet.
fn opened<'s, 't, K: redb::Key + 'static, V: redb::Value + 'static>(
    slot: &'s mut Option<Table<'t, K, V>>,
    txn: &'t redb::WriteTransaction,
    definition: TableDefinition<K, V>,
    path: &Path,
) -> Result<&'s mut Table<'t, K, V>, StoreError> {
    if slot.is_none() {
        *slot = Some(txn.open_table(definition).map_err(|e| db_err(path, e))?);
    }
    slot.as_mut()
        .ok_or_else(|| db_err(path, "table could not be opened"))
}

/// What one [`Txn::prune_seen`] step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PruneStep {
    /// Seen-marks removed.
    pub removed: usize,
    /// The last key looked at, to pass as `after` to the next step; `None` once the scan
    /// reached the end of the table.
    pub resume_after: Option<String>,
}

/// A redb failure on the file at `path`.
fn db_err(path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Db {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// One accessor per table: `self.seen()?` is the open `seen_events_v1` table.
macro_rules! table_accessors {
    ($($name:ident: $definition:ident ($id:ident) => $k:ty, $v:ty;)*) => {
        $(
            fn $name(&mut self) -> Result<Logged<'_, 'a, $k, $v>, StoreError> {
                let table = opened(&mut self.tables.$name, self.txn, $definition, self.path)?;
                Ok(Logged {
                    table,
                    id: TableId::$id,
                    capture: &mut self.capture,
                    changed: &mut self.changed_redb,
                })
            }
        )*
    };
}

impl<'a> Txn<'a> {
    fn new(
        txn: &'a redb::WriteTransaction,
        path: &'a Path,
        capture: wal::Capture,
        held: &'a Mutex<Deferred>,
    ) -> Self {
        Txn {
            txn,
            path,
            tables: OpenTables::default(),
            counters: HashMap::new(),
            scratch: Vec::new(),
            capture,
            held,
            staged: Staged::default(),
            changed_redb: false,
        }
    }

    table_accessors! {
        seen: SEEN_EVENTS (Seen) => &'static str, u64;
        conversations: CONVERSATIONS (Conversations) => &'static str, &'static [u8];
        outbox: OUTBOX (Outbox) => (&'static str, u64), &'static [u8];
        dead_letters: DEAD_LETTERS (DeadLetters) => (&'static str, u64), &'static [u8];
        counters_table: COUNTERS (Counters) => &'static str, u64;
        cursors: CURSORS (Cursors) => &'static str, &'static [u8];
        pending_previews: PENDING_PREVIEWS (PendingPreviews) => (&'static str, &'static str), &'static [u8];
        oauth_grants: OAUTH_GRANTS (OAuthGrants) => &'static str, &'static [u8];
    }

    /// Writes what was kept in memory (sequence numbers, counters): into the redo log and
    /// the staged changes, or, in a checkpoint, into redb together with everything held
    /// out of it since the last checkpoint. Called once, before the commit.
    fn finish(&mut self) -> Result<(), StoreError> {
        let path = self.path;
        let counters = std::mem::take(&mut self.counters);
        if self.defers() {
            for (key, value) in counters {
                wal::record_put(
                    &mut self.capture,
                    TableId::Counters,
                    key.as_bytes(),
                    &<u64 as redb::Value>::as_bytes(&value),
                );
                self.staged.set_counter(key, value);
            }
            return Ok(());
        }
        let held = lock_held(self.held);
        let staged = std::mem::take(&mut self.staged);
        // Both tables at once: redb lets a transaction open a table once, and these slots
        // are where this one keeps them.
        let txn = self.txn;
        let outbox = opened(&mut self.tables.outbox, txn, OUTBOX, path)?;
        let table = opened(&mut self.tables.counters_table, txn, COUNTERS, path)?;
        write_held(&held, &staged, &counters, outbox, table).map_err(|e| db_err(path, e))?;
        for (key, value) in &counters {
            table
                .insert(key.as_str(), *value)
                .map_err(|e| db_err(path, e))?;
        }
        Ok(())
    }

    /// Writes the seen marks and conversation states held out of redb into this (a
    /// checkpoint's) transaction.
    fn write_held_rows(&mut self) -> Result<(), StoreError> {
        let (path, txn, held) = (self.path, self.txn, self.held);
        let held = lock_held(held);
        if held.rows_count() == 0 {
            return Ok(());
        }
        let seen = opened(&mut self.tables.seen, txn, SEEN_EVENTS, path)?;
        let conversations = opened(&mut self.tables.conversations, txn, CONVERSATIONS, path)?;
        write_held_rows(&held.rows(usize::MAX), seen, conversations)
            .map_err(|e| db_err(path, e))?;
        self.changed_redb = true;
        Ok(())
    }

    /// True when `key` is a seen mark: added by this transaction, held since an earlier
    /// one, or in redb.
    fn is_seen(&mut self, key: &str) -> Result<bool, StoreError> {
        if let Some(added) = self.staged.seen(key) {
            // Pruned in this transaction: held ones are not in redb.
            return Ok(added.is_some());
        }
        // In a checkpoint the held marks are in redb already (`write_held_rows`), under
        // this transaction's own changes: there, only redb tells.
        if self.defers() && lock_held(self.held).seen(key).is_some() {
            return Ok(true);
        }
        let path = self.path;
        Ok(self
            .seen()?
            .get(key)
            .map_err(|e| db_err(path, e))?
            .is_some())
    }

    /// A counter's committed value: held out of redb, or in it.
    fn committed_counter(&mut self, key: &str) -> Result<Option<u64>, StoreError> {
        if let Some(value) = lock_held(self.held).counter(key) {
            return Ok(Some(value));
        }
        let path = self.path;
        Ok(self
            .counters_table()?
            .get(key)
            .map_err(|e| db_err(path, e))?
            .map(|v| v.value()))
    }

    /// Removes the outbox entry `seq` of `sink` if it is not in redb (queued by this
    /// transaction, or held since an earlier one), recording the removal.
    fn remove_unwritten(&mut self, sink: &str, seq: u64, want_json: bool) -> Unwritten {
        let found = if let Some(json) = self.staged.take_added(sink, seq) {
            Unwritten::Removed(want_json.then_some(json))
        } else if self.staged.removed_held(sink, seq) {
            Unwritten::Gone
        } else {
            let json = match lock_held(self.held).entry(sink, seq) {
                None => return Unwritten::NotHeld,
                Some(json) => want_json.then(|| json.to_vec()),
            };
            self.staged.remove_held(sink, seq);
            Unwritten::Removed(json)
        };
        if matches!(found, Unwritten::Removed(_)) {
            wal::record_del(
                &mut self.capture,
                TableId::Outbox,
                &outbox_key_bytes(sink, seq),
            );
        }
        found
    }

    fn err(&self, e: impl std::fmt::Display) -> StoreError {
        db_err(self.path, e)
    }

    /// True when new outbox entries, counter values, seen marks and conversation states are
    /// held out of redb: in any transaction but a checkpoint (the one without a capture),
    /// which writes what is held into redb instead.
    fn defers(&self) -> bool {
        self.capture.is_some()
    }

    /// Records `event_id` of `connection` as seen. Returns false when it already was.
    ///
    /// Between checkpoints a new mark is held out of redb (see `deferred`). In a checkpoint,
    /// where marks go into redb, new ids are the common case, so this inserts first and looks
    /// at what the insert replaced: one B-tree descent per new id instead of a lookup and
    /// then an insert. A repeat puts its first-seen time back (pruning reads it), a second
    /// write that only repeats pay.
    pub fn mark_seen(
        &mut self,
        connection: &str,
        event_id: &str,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        let path = self.path;
        let key = compound(connection, event_id);
        if self.defers() {
            if self.is_seen(&key)? {
                return Ok(false);
            }
            wal::record_put(
                &mut self.capture,
                TableId::Seen,
                key.as_bytes(),
                &<u64 as redb::Value>::as_bytes(&now_ms),
            );
            self.staged.add_seen(key, now_ms);
            return Ok(true);
        }
        let mut seen = self.seen()?;
        let first_seen = seen
            .insert(key.as_str(), now_ms)
            .map_err(|e| db_err(path, e))?
            .map(|previous| previous.value());
        match first_seen {
            None => Ok(true),
            Some(first_seen) => {
                seen.insert(key.as_str(), first_seen)
                    .map_err(|e| db_err(path, e))?;
                Ok(false)
            }
        }
    }

    /// One step of forgetting seen-marks first committed before `cutoff_ms`: looks at up to
    /// `max_scan` marks in key order after `after` (from the start when `None`) and removes
    /// the old ones. Safe once no source can bring those events back: webhooks are not
    /// redelivered after days, and the poller's cursor never moves backwards.
    ///
    /// Scanning in key order instead of keeping an age index costs a full pass per prune
    /// (hourly, in bounded steps) but saves a second B-tree insert on every event.
    pub fn prune_seen(
        &mut self,
        cutoff_ms: u64,
        after: Option<&str>,
        max_scan: usize,
    ) -> Result<PruneStep, StoreError> {
        use std::ops::Bound;
        let path = self.path;
        let mut seen = self.seen()?;
        let start = match after {
            Some(key) => Bound::Excluded(key),
            None => Bound::Unbounded,
        };
        let mut old = Vec::new();
        let mut scanned = 0;
        let mut last = None;
        for row in seen
            .range::<&str>((start, Bound::Unbounded))
            .map_err(|e| db_err(path, e))?
        {
            if scanned == max_scan {
                break;
            }
            scanned += 1;
            let (k, v) = row.map_err(|e| db_err(path, e))?;
            if v.value() < cutoff_ms {
                old.push(k.value().to_string());
            }
            last = Some(k.value().to_string());
        }
        for key in &old {
            seen.remove(key.as_str()).map_err(|e| db_err(path, e))?;
        }
        let mut removed = old.len();
        if self.defers() && after.is_none() {
            // A pass begins: the marks held out of redb are looked at once (they are the
            // newest, so in practice none is old).
            let held_old = lock_held(self.held).seen_before(cutoff_ms);
            for key in held_old {
                if self.staged.seen(&key).is_none() {
                    wal::record_del(&mut self.capture, TableId::Seen, key.as_bytes());
                    self.staged.prune_seen(key);
                    removed += 1;
                }
            }
        }
        Ok(PruneStep {
            removed,
            resume_after: if scanned == max_scan { last } else { None },
        })
    }

    /// The stored state of a conversation in a subscription.
    pub fn conversation<T: DeserializeOwned>(
        &mut self,
        subscription: &str,
        conversation_id: &str,
    ) -> Result<Option<T>, StoreError> {
        let path = self.path;
        let key = compound(subscription, conversation_id);
        if self.defers() {
            if let Some(packed) = self.staged.conversation(&key) {
                return unpack(packed, path).map(Some);
            }
            if let Some(packed) = lock_held(self.held).conversation(&key) {
                return unpack(packed, path).map(Some);
            }
        }
        // In a checkpoint the held states are in redb already, under this transaction's
        // own changes (see `is_seen`).
        get_packed(&*self.conversations()?, &key, path)
    }

    /// Replaces the stored state of a conversation in a subscription.
    ///
    /// Written as a MessagePack array of the fields in declaration order: the field names
    /// were 212 of the benchmark state's 760 bytes, and this table's pages are the largest
    /// share of what a commit writes. States written before with names (maps) read the same
    /// way, since serde's derived structs accept either, so no migration is needed; a state
    /// is rewritten without names by the next event about its conversation.
    pub fn put_conversation<T: Serialize>(
        &mut self,
        subscription: &str,
        conversation_id: &str,
        state: &T,
    ) -> Result<(), StoreError> {
        self.with_scratch(|txn, bytes| {
            rmp_serde::encode::write(bytes, state).map_err(|e| txn.err(e))?;
            let path = txn.path;
            let key = compound(subscription, conversation_id);
            if txn.defers() {
                // Held out of redb until the next checkpoint (see `deferred`).
                wal::record_put(
                    &mut txn.capture,
                    TableId::Conversations,
                    key.as_bytes(),
                    bytes,
                );
                txn.staged.put_conversation(key, bytes.clone());
                return Ok(());
            }
            txn.conversations()?
                .insert(key.as_str(), bytes.as_slice())
                .map_err(|e| db_err(path, e))?;
            Ok(())
        })
    }

    /// Serializes `highlight` as compact JSON once and appends it to the outbox of each of
    /// `sinks`.
    pub fn enqueue_json<T: Serialize>(
        &mut self,
        sinks: &[String],
        highlight: &T,
    ) -> Result<(), StoreError> {
        self.with_scratch(|txn, json| {
            serde_json::to_writer(&mut *json, highlight)
                .map_err(|e| txn.err(format!("cannot serialize highlight: {e}")))?;
            for sink in sinks {
                txn.enqueue(sink, json)?;
            }
            Ok(())
        })
    }

    /// Runs `f` with the transaction's serialization buffer, emptied, and keeps the buffer
    /// (and its capacity) for the next value.
    fn with_scratch<R>(&mut self, f: impl FnOnce(&mut Self, &mut Vec<u8>) -> R) -> R {
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        let result = f(self, &mut buf);
        self.scratch = buf;
        result
    }

    /// Appends a serialized Highlight to `sink`'s outbox; returns its sequence number.
    pub fn enqueue(&mut self, sink: &str, highlight_json: &[u8]) -> Result<u64, StoreError> {
        let path = self.path;
        let key = compound(counters::OUTBOX_NEXT_SEQ, sink);
        let seq = match self.counters.get(&key) {
            Some(&seq) => seq,
            None => self.committed_counter(&key)?.unwrap_or(1),
        };
        self.counters.insert(key, seq + 1);
        let hold = self.defers()
            && lock_held(self.held).has_room(sink, &self.staged, highlight_json.len());
        if hold {
            wal::record_put(
                &mut self.capture,
                TableId::Outbox,
                &outbox_key_bytes(sink, seq),
                highlight_json,
            );
            self.staged.add(sink, seq, highlight_json);
        } else {
            self.outbox()?
                .insert((sink, seq), highlight_json)
                .map_err(|e| db_err(path, e))?;
        }
        self.add_counter(counters::OUTBOX_DEPTH, sink, 1)?;
        Ok(seq)
    }

    /// Removes delivered entries from `sink`'s outbox. Unknown seqs are ignored (an ack may
    /// be repeated after a crash).
    pub fn ack(&mut self, sink: &str, seqs: &[u64]) -> Result<u64, StoreError> {
        let mut removed = 0;
        // A sink that keeps up acknowledges entries that are still held out of redb.
        let mut in_redb = Vec::new();
        for &seq in seqs {
            match self.remove_unwritten(sink, seq, false) {
                Unwritten::Removed(_) => removed += 1,
                Unwritten::Gone => {}
                Unwritten::NotHeld => in_redb.push(seq),
            }
        }
        if !in_redb.is_empty() {
            removed += self.remove_from_redb(sink, &in_redb)?;
        }
        self.sub_counter(counters::OUTBOX_DEPTH, sink, removed)?;
        self.add_counter(counters::DELIVERED, sink, removed)?;
        Ok(removed)
    }

    /// Removes `seqs` of `sink` from redb's outbox table; returns how many were there.
    fn remove_from_redb(&mut self, sink: &str, seqs: &[u64]) -> Result<u64, StoreError> {
        let path = self.path;
        let mut outbox = self.outbox()?;
        let mut removed = 0;
        let contiguous = seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1));
        match (seqs.first(), seqs.last()) {
            // A sink acknowledges the head it was handed: consecutive seqs, removed in one
            // scan of the range instead of one tree descent each.
            (Some(&first), Some(&last)) if contiguous && first <= last => {
                outbox
                    .retain_in((sink, first)..=(sink, last), |_, _| {
                        removed += 1;
                        false
                    })
                    .map_err(|e| db_err(path, e))?;
            }
            _ => {
                for &seq in seqs {
                    if outbox
                        .remove((sink, seq))
                        .map_err(|e| db_err(path, e))?
                        .is_some()
                    {
                        removed += 1;
                    }
                }
            }
        }
        Ok(removed)
    }

    /// Moves an outbox entry to the sink's dead letters.
    pub fn dead_letter(
        &mut self,
        sink: &str,
        seq: u64,
        rejection: &Rejection,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        let path = self.path;
        let json = match self.remove_unwritten(sink, seq, true) {
            Unwritten::Removed(json) => json,
            Unwritten::Gone => None,
            Unwritten::NotHeld => self
                .outbox()?
                .remove((sink, seq))
                .map_err(|e| db_err(path, e))?
                .map(|v| v.value().to_vec()),
        };
        let Some(json) = json else {
            return Ok(false);
        };
        let letter = DeadLetter {
            highlight: serde_json::from_slice(&json).unwrap_or(serde_json::Value::Null),
            error: rejection.error.clone(),
            status: rejection.status,
            body_excerpt: rejection.body_excerpt.clone(),
            attempts: rejection.attempts,
            at_ms: now_ms,
        };
        let bytes = serde_json::to_vec(&letter).map_err(|e| self.err(e))?;
        self.dead_letters()?
            .insert((sink, seq), bytes.as_slice())
            .map_err(|e| db_err(path, e))?;
        self.sub_counter(counters::OUTBOX_DEPTH, sink, 1)?;
        self.add_counter(counters::DEAD_LETTERS, sink, 1)?;
        Ok(true)
    }

    /// The seqs of `selection` that are not dead letters of `sink`, in the order given.
    pub fn missing_dead_letters(
        &mut self,
        sink: &str,
        selection: &DeadLetterSelection,
    ) -> Result<Vec<u64>, StoreError> {
        let DeadLetterSelection::Seqs(seqs) = selection else {
            return Ok(Vec::new());
        };
        let path = self.path;
        let dead = self.dead_letters()?;
        let mut missing = Vec::new();
        for &seq in seqs {
            if dead
                .get((sink, seq))
                .map_err(|e| db_err(path, e))?
                .is_none()
                && !missing.contains(&seq)
            {
                missing.push(seq);
            }
        }
        Ok(missing)
    }

    /// The selected dead letters of `sink` (seq order, no repeats), or the seqs that are
    /// not dead letters of it.
    fn selected_letters(
        &mut self,
        sink: &str,
        selection: &DeadLetterSelection,
    ) -> Result<Result<Vec<RawLetter>, Vec<u64>>, StoreError> {
        let missing = self.missing_dead_letters(sink, selection)?;
        if !missing.is_empty() {
            return Ok(Err(missing));
        }
        let path = self.path;
        let dead = self.dead_letters()?;
        let mut out = Vec::new();
        match selection {
            DeadLetterSelection::All => {
                for row in dead
                    .range((sink, 0u64)..=(sink, u64::MAX))
                    .map_err(|e| db_err(path, e))?
                {
                    let (k, v) = row.map_err(|e| db_err(path, e))?;
                    out.push((k.value().1, v.value().to_vec()));
                }
            }
            DeadLetterSelection::Seqs(seqs) => {
                let mut seqs = seqs.clone();
                seqs.sort_unstable();
                seqs.dedup();
                for seq in seqs {
                    if let Some(v) = dead.get((sink, seq)).map_err(|e| db_err(path, e))? {
                        out.push((seq, v.value().to_vec()));
                    }
                }
            }
        }
        Ok(Ok(out))
    }

    fn parse_letter(&self, bytes: &[u8]) -> Result<DeadLetter, StoreError> {
        serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
            path: self.path.to_path_buf(),
            table: "dead_letters_v1",
            message: e.to_string(),
        })
    }

    /// Moves dead letters of `sink` back into its outbox, each at the END with a new seq
    /// (the outbox is FIFO by seq and a dead letter's old slot may be long past), so a
    /// requeued revision can arrive after later revisions of the same Highlight. All or
    /// nothing: an unknown seq or an unusable record refuses the whole command.
    pub fn requeue_dead_letters(
        &mut self,
        sink: &str,
        selection: &DeadLetterSelection,
    ) -> Result<DeadLetterOutcome, StoreError> {
        let letters = match self.selected_letters(sink, selection)? {
            Ok(l) => l,
            Err(missing) => return Ok(DeadLetterOutcome::Unknown(missing)),
        };
        let mut ready = Vec::with_capacity(letters.len());
        let mut unusable = Vec::new();
        for (seq, bytes) in letters {
            let letter = self.parse_letter(&bytes)?;
            match resend_bytes(&letter.highlight) {
                Some((json, key)) => ready.push((seq, json, key)),
                None => unusable.push(seq),
            }
        }
        if !unusable.is_empty() {
            return Ok(DeadLetterOutcome::Unresendable(unusable));
        }
        let mut moved = Vec::with_capacity(ready.len());
        for (seq, json, key) in ready {
            self.remove_dead_letter(sink, seq)?;
            let new_seq = self.enqueue(sink, &json)?;
            moved.push(LetterMoved {
                seq,
                new_seq: Some(new_seq),
                highlight_id: key.id,
                revision: key.revision,
            });
        }
        Ok(DeadLetterOutcome::Done(moved))
    }

    /// Deletes dead letters of `sink` for good. All or nothing: an unknown seq refuses the
    /// whole command.
    pub fn drop_dead_letters(
        &mut self,
        sink: &str,
        selection: &DeadLetterSelection,
    ) -> Result<DeadLetterOutcome, StoreError> {
        let letters = match self.selected_letters(sink, selection)? {
            Ok(l) => l,
            Err(missing) => return Ok(DeadLetterOutcome::Unknown(missing)),
        };
        let mut dropped = Vec::with_capacity(letters.len());
        for (seq, bytes) in letters {
            // A record too damaged to read can still be dropped: that is how it goes away.
            let key = self
                .parse_letter(&bytes)
                .ok()
                .and_then(|l| serde_json::from_value::<OutboxKey>(l.highlight).ok());
            self.remove_dead_letter(sink, seq)?;
            dropped.push(LetterMoved {
                seq,
                new_seq: None,
                highlight_id: key.as_ref().map(|k| k.id.clone()).unwrap_or_default(),
                revision: key.map(|k| k.revision).unwrap_or(0),
            });
        }
        Ok(DeadLetterOutcome::Done(dropped))
    }

    fn remove_dead_letter(&mut self, sink: &str, seq: u64) -> Result<(), StoreError> {
        let path = self.path;
        let removed = self
            .dead_letters()?
            .remove((sink, seq))
            .map_err(|e| db_err(path, e))?
            .is_some();
        if removed {
            self.sub_counter(counters::DEAD_LETTERS, sink, 1)?;
        }
        Ok(())
    }

    /// Adds `n` to a counter.
    pub fn add_counter(&mut self, name: &str, scope: &str, n: u64) -> Result<(), StoreError> {
        self.adjust_counter(name, scope, n, u64::saturating_add)
    }

    fn sub_counter(&mut self, name: &str, scope: &str, n: u64) -> Result<(), StoreError> {
        self.adjust_counter(name, scope, n, u64::saturating_sub)
    }

    /// Applies `op` to a counter's value in memory, reading it from the table the first
    /// time this transaction touches it; [`Txn::finish`] writes it.
    fn adjust_counter(
        &mut self,
        name: &str,
        scope: &str,
        n: u64,
        op: fn(u64, u64) -> u64,
    ) -> Result<(), StoreError> {
        if n == 0 {
            return Ok(());
        }
        let key = compound(name, scope);
        let value = match self.counters.get(&key) {
            Some(&v) => v,
            None => self.committed_counter(&key)?.unwrap_or(0),
        };
        self.counters.insert(key, op(value, n));
        Ok(())
    }

    /// Keeps a webhook preview until it is completed. Returns false when the event was
    /// already seen (nothing to complete).
    pub fn add_pending_preview(
        &mut self,
        connection: &str,
        event_id: &str,
        event_json: &[u8],
    ) -> Result<bool, StoreError> {
        let path = self.path;
        if self.is_seen(&compound(connection, event_id))? {
            return Ok(false);
        }
        self.pending_previews()?
            .insert((connection, event_id), event_json)
            .map_err(|e| db_err(path, e))?;
        Ok(true)
    }

    /// Forgets a pending preview (completed, or given up on).
    pub fn remove_pending_preview(
        &mut self,
        connection: &str,
        event_id: &str,
    ) -> Result<(), StoreError> {
        let path = self.path;
        self.pending_previews()?
            .remove((connection, event_id))
            .map_err(|e| db_err(path, e))?;
        Ok(())
    }

    /// Stores a cursor.
    pub fn set_cursor<T: Serialize>(
        &mut self,
        kind: &str,
        name: &str,
        value: &T,
    ) -> Result<(), StoreError> {
        let path = self.path;
        let bytes = serde_json::to_vec(value).map_err(|e| self.err(e))?;
        self.cursors()?
            .insert(compound(kind, name).as_str(), bytes.as_slice())
            .map_err(|e| db_err(path, e))?;
        Ok(())
    }

    /// Reads a cursor inside the transaction.
    pub fn cursor<T: DeserializeOwned>(
        &mut self,
        kind: &str,
        name: &str,
    ) -> Result<Option<T>, StoreError> {
        let path = self.path;
        get_json(&*self.cursors()?, &compound(kind, name), path, "cursors_v1")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn highlight_json(id: &str, revision: u64) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({"id": id, "revision": revision, "x": 1})).unwrap()
    }

    #[test]
    fn seen_marks_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let first = store.write(|t| t.mark_seen("acme", "evt_1", 5)).unwrap();
        let again = store.write(|t| t.mark_seen("acme", "evt_1", 6)).unwrap();
        let other = store.write(|t| t.mark_seen("other", "evt_1", 6)).unwrap();
        assert!(first && !again && other);
        assert_eq!(store.seen_events().unwrap(), 2);
        // The repeat kept the first-seen time: a prune at 6 forgets evt_1 of acme (seen at
        // 5), not of other (seen at 6).
        let step = store.write(|t| t.prune_seen(6, None, 10)).unwrap();
        assert_eq!(step.removed, 1);
        assert!(store.write(|t| t.mark_seen("acme", "evt_1", 7)).unwrap());
        assert!(!store.write(|t| t.mark_seen("other", "evt_1", 7)).unwrap());
    }

    #[test]
    fn old_seen_marks_are_pruned_and_new_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let store = Store::open(&path).unwrap();
        store
            .write(|t| {
                t.mark_seen("acme", "evt_old1", 100)?;
                t.mark_seen("acme", "evt_old2", 200)?;
                t.mark_seen("acme", "evt_new", 1_000)
            })
            .unwrap();
        // Closing takes a checkpoint: the marks are in redb's table, which is scanned.
        drop(store);
        let store = Store::open(&path).unwrap();
        // Keys sort as evt_new < evt_old1 < evt_old2: two marks per step, then the rest.
        let step = store.write(|t| t.prune_seen(500, None, 2)).unwrap();
        assert_eq!(
            step,
            PruneStep {
                removed: 1,
                resume_after: Some("acme\0evt_old1".into())
            }
        );
        let step = store
            .write(|t| t.prune_seen(500, step.resume_after.as_deref(), 2))
            .unwrap();
        assert_eq!(
            step,
            PruneStep {
                removed: 1,
                resume_after: None
            }
        );
        let again = store.write(|t| t.prune_seen(500, None, 10)).unwrap();
        assert_eq!(again.removed, 0);
        assert_eq!(store.seen_events().unwrap(), 1);
        // A pruned id counts as new again; the kept one is still a duplicate.
        assert!(marks_new(&store, "evt_old1", 2_000));
        assert!(!marks_new(&store, "evt_new", 2_000));
    }

    /// Marks `id` of connection `acme` seen at `at` in a transaction of its own; true when
    /// it was new.
    fn marks_new(store: &Store, id: &str, at: u64) -> bool {
        store.write(|t| t.mark_seen("acme", id, at)).unwrap()
    }

    /// The conversation state and seen mark of `key` in redb's own tables.
    fn rows_in_redb(store: &Store, key: &str) -> (Option<Vec<u8>>, Option<u64>) {
        let txn = store.db.begin_read().unwrap();
        let states = txn.open_table(CONVERSATIONS).unwrap();
        let seen = txn.open_table(SEEN_EVENTS).unwrap();
        let state = states
            .get(compound("support", key).as_str())
            .unwrap()
            .map(|v| v.value().to_vec());
        let mark = seen
            .get(compound("acme", key).as_str())
            .unwrap()
            .map(|v| v.value());
        (state, mark)
    }

    #[test]
    fn held_states_and_marks_go_into_redb_at_a_checkpoint_under_its_own_changes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        store
            .write(|t| {
                t.mark_seen("acme", "a", 1)?;
                t.put_conversation("support", "a", &"first")?;
                t.put_conversation("support", "b", &"kept")
            })
            .unwrap();
        assert_eq!(rows_in_redb(&store, "a"), (None, None), "held, not in redb");
        let read: Option<String> = store.conversation("support", "a").unwrap();
        assert_eq!(read.as_deref(), Some("first"));
        assert_eq!(store.seen_events().unwrap(), 1);
        // A checkpoint that changes a held state and sees a held mark.
        let was_new = store
            .write_durable(|t| {
                let held: Option<String> = t.conversation("support", "a")?;
                assert_eq!(held.as_deref(), Some("first"));
                t.put_conversation("support", "a", &"second")?;
                t.mark_seen("acme", "a", 2)
            })
            .unwrap();
        assert!(!was_new, "a held mark is seen inside a checkpoint too");
        assert!(!marks_new(&store, "a", 3));
        assert!(store.wal.held().is_empty());
        let packed = |s: &str| rmp_serde::to_vec(s).unwrap();
        assert_eq!(rows_in_redb(&store, "a"), (Some(packed("second")), Some(1)));
        assert_eq!(rows_in_redb(&store, "b").0, Some(packed("kept")));
        assert_eq!(store.seen_events().unwrap(), 1);
    }

    #[test]
    fn held_rows_written_back_between_checkpoints_read_the_same_and_survive_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let store = Store::open(&path).unwrap();
        store
            .write(|t| {
                for i in 0..100u64 {
                    t.mark_seen("acme", &format!("k{i}"), 1_000 + i)?;
                    t.put_conversation("support", &format!("k{i}"), &format!("state {i}"))?;
                }
                Ok(())
            })
            .unwrap();
        assert_eq!(store.wal.held().rows_count(), 200);
        assert_eq!(
            store.write_back_held(201, 50).unwrap(),
            0,
            "fewer than the least"
        );
        assert_eq!(store.write_back_held(10, 150).unwrap(), 150);
        assert_eq!(store.wal.held().rows_count(), 50);
        assert_eq!(store.write_back_held(10, 150).unwrap(), 50);
        assert!(store.wal.held().is_empty());
        let packed = |s: &str| rmp_serde::to_vec(s).unwrap();
        let check = |store: &Store| {
            assert_eq!(store.seen_events().unwrap(), 100);
            for i in 0..100u64 {
                let state: Option<String> =
                    store.conversation("support", &format!("k{i}")).unwrap();
                assert_eq!(state, Some(format!("state {i}")));
            }
            assert!(
                !marks_new(store, "k7", 5_000),
                "a mark written back is still seen"
            );
        };
        check(&store);
        assert_eq!(
            rows_in_redb(&store, "k3"),
            (Some(packed("state 3")), Some(1_003))
        );
        // Written back without a sync: a crash falls back to the last checkpoint, and the
        // redo log brings the rows back.
        let crashed = dir.path().join("crashed.redb");
        let without_log = dir.path().join("without-log.redb");
        crash_copy(&path, &crashed, true);
        crash_copy(&path, &without_log, false);
        drop(store);
        check(&Store::open(&crashed).unwrap());
        assert_eq!(Store::open(&without_log).unwrap().seen_events().unwrap(), 0);
    }

    #[test]
    fn a_checkpoint_reads_its_own_writes_over_what_is_held() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        store
            .write(|t| {
                t.put_conversation("support", "a", &"first")?;
                t.mark_seen("acme", "old", 100)
            })
            .unwrap();
        let (state, pending_added) = store
            .write_durable(|t| {
                t.put_conversation("support", "a", &"second")?;
                let state: Option<String> = t.conversation("support", "a")?;
                // Prunes the held mark, which the checkpoint wrote into redb first.
                assert_eq!(t.prune_seen(500, None, 10)?.removed, 1);
                let added = t.add_pending_preview("acme", "old", b"{}")?;
                Ok((state, added))
            })
            .unwrap();
        assert_eq!(state.as_deref(), Some("second"));
        assert!(pending_added, "a pruned mark is not seen any more");
        assert_eq!(store.seen_events().unwrap(), 0);
    }

    #[test]
    fn a_state_held_over_one_written_back_is_the_one_read_and_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let store = Store::open(&path).unwrap();
        store
            .write(|t| t.put_conversation("support", "a", &"v1"))
            .unwrap();
        assert_eq!(store.write_back_held(1, 10).unwrap(), 1);
        store
            .write(|t| t.put_conversation("support", "a", &"v2"))
            .unwrap();
        let packed = |s: &str| rmp_serde::to_vec(s).unwrap();
        assert_eq!(rows_in_redb(&store, "a").0, Some(packed("v1")));
        let read = |store: &Store| store.conversation::<String>("support", "a").unwrap();
        assert_eq!(read(&store).as_deref(), Some("v2"));
        let in_txn: Option<String> = store.write(|t| t.conversation("support", "a")).unwrap();
        assert_eq!(in_txn.as_deref(), Some("v2"));
        let crashed = dir.path().join("crashed.redb");
        crash_copy(&path, &crashed, true);
        drop(store);
        assert_eq!(read(&Store::open(&crashed).unwrap()).as_deref(), Some("v2"));
        assert_eq!(read(&Store::open(&path).unwrap()).as_deref(), Some("v2"));
    }

    #[test]
    fn held_rows_past_their_budget_make_the_next_commit_a_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        store.wal.held().set_rows_budget(3_000);
        let state = "x".repeat(1_000);
        for i in 0..3 {
            store
                .write(|t| t.put_conversation("support", &format!("c{i}"), &state))
                .unwrap();
        }
        assert!(store.wal.held().rows_over_budget());
        assert!(
            !store.wal.held().is_empty() && rows_in_redb(&store, "c2").0.is_none(),
            "held until now"
        );
        store.write(|t| t.mark_seen("acme", "next", 1)).unwrap();
        assert!(store.wal.held().is_empty(), "that commit was a checkpoint");
        assert!(rows_in_redb(&store, "c2").0.is_some());
        assert_eq!(rows_in_redb(&store, "next").1, Some(1));
    }

    #[test]
    fn seen_marks_held_out_of_redb_are_pruned_as_a_pass_begins() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        store
            .write(|t| {
                t.mark_seen("acme", "evt_old", 100)?;
                t.mark_seen("acme", "evt_new", 1_000)
            })
            .unwrap();
        assert_eq!(store.wal.held().seen_count(), 2, "not in redb yet");
        // Not on a pass's later steps: the held marks are looked at once per pass.
        let later = store
            .write(|t| t.prune_seen(500, Some("acme\0evt_a"), 10))
            .unwrap();
        assert_eq!(later.removed, 0);
        let step = store.write(|t| t.prune_seen(500, None, 10)).unwrap();
        assert_eq!(
            step,
            PruneStep {
                removed: 1,
                resume_after: None
            }
        );
        assert_eq!(store.seen_events().unwrap(), 1);
        assert!(marks_new(&store, "evt_old", 2_000));
        assert!(!marks_new(&store, "evt_new", 2_000));
        // The prune is in the log like any other change: replayed after a crash, and
        // written into redb by a checkpoint.
        drop(store);
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        assert!(store.wal.held().is_empty());
        assert_eq!(store.seen_events().unwrap(), 2);
        assert!(!marks_new(&store, "evt_old", 3_000));
    }

    #[test]
    fn a_prune_pass_in_small_steps_visits_every_mark_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        store
            .write(|t| {
                for i in 0..100u64 {
                    // Every third mark is old.
                    let at = if i % 3 == 0 { 10 } else { 1_000 };
                    t.mark_seen(if i % 2 == 0 { "a" } else { "b" }, &format!("evt_{i}"), at)?;
                }
                Ok(())
            })
            .unwrap();
        drop(store);
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let (mut after, mut removed, mut steps) = (None::<String>, 0, 0);
        loop {
            let step = store
                .write(|t| t.prune_seen(500, after.as_deref(), 7))
                .unwrap();
            removed += step.removed;
            steps += 1;
            after = step.resume_after;
            if after.is_none() {
                break;
            }
        }
        assert_eq!(removed, 34);
        assert_eq!(steps, 15, "100 marks in steps of 7");
        assert_eq!(store.seen_events().unwrap(), 66);
    }

    /// Writes straight to a redb file (no `Store`), in one transaction: a file as another
    /// version left it.
    fn raw_write(path: &Path, f: impl FnOnce(&redb::WriteTransaction)) {
        let db = redb::Database::create(path).unwrap();
        let txn = db.begin_write().unwrap();
        f(&txn);
        txn.commit().unwrap();
    }

    /// The names of the tables in a redb file.
    fn table_names(path: &Path) -> Vec<String> {
        let db = redb::Database::open(path).unwrap();
        let txn = db.begin_read().unwrap();
        txn.list_tables()
            .unwrap()
            .map(|t| t.name().to_string())
            .collect()
    }

    /// A state file as format 1 wrote it: JSON conversation states in `conversations_v1`.
    fn format_1_file(path: &Path, states: usize) {
        raw_write(path, |txn| format_1_tables(txn, states));
    }

    fn format_1_tables(txn: &redb::WriteTransaction, states: usize) {
        txn.open_table(META).unwrap().insert("schema", 1).unwrap();
        {
            let mut t = txn.open_table(RETIRED_CONVERSATIONS_V1).unwrap();
            for i in 0..states {
                let json = serde_json::json!({
                    "revision": i,
                    "content_hash": u64::MAX - i as u64,
                    "snapshot": {"conversation_id": format!("cnv_{i}"), "message_text": "a \"quoted\" line\né",
                                 "created_at_ms": -5, "tags": ["vip"], "future_field": {"x": [1, 2.5]}}
                });
                t.insert(
                    format!("support\0cnv_{i}").as_str(),
                    serde_json::to_vec(&json).unwrap().as_slice(),
                )
                .unwrap();
            }
        }
        txn.open_table(RETIRED_OUTBOX_SEQ_V1)
            .unwrap()
            .insert("archive", 42)
            .unwrap();
    }

    #[test]
    fn a_format_1_file_keeps_its_outbox_sequence_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        format_1_file(&path, 1);
        let store = Store::open(&path).unwrap();
        let (continued, fresh) = store
            .write(|t| {
                let continued = t.enqueue("archive", &highlight_json("s:c1", 1))?;
                let fresh = t.enqueue("other", &highlight_json("s:c1", 1))?;
                Ok((continued, fresh))
            })
            .unwrap();
        assert_eq!((continued, fresh), (42, 1));
        let next = store
            .write(|t| t.enqueue("archive", &highlight_json("s:c2", 1)))
            .unwrap();
        assert_eq!(next, 43);
        drop(store);
        let names = table_names(&path);
        assert!(!names.contains(&"outbox_seq_v1".to_string()), "{names:?}");
    }

    #[test]
    fn a_format_1_file_is_converted_in_chunks_and_keeps_every_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let n = MIGRATE_CHUNK + 7;
        format_1_file(&path, n);
        let store = Store::open(&path).unwrap();
        for i in [0, 1, MIGRATE_CHUNK, n - 1] {
            let got: serde_json::Value = store
                .conversation("support", &format!("cnv_{i}"))
                .unwrap()
                .unwrap();
            assert_eq!(got["revision"], i);
            assert_eq!(got["content_hash"], u64::MAX - i as u64);
            assert_eq!(got["snapshot"]["message_text"], "a \"quoted\" line\né");
            assert_eq!(got["snapshot"]["created_at_ms"], -5);
            assert_eq!(got["snapshot"]["future_field"]["x"][1], 2.5);
        }
        // The typed state reads too (unknown fields ignored).
        let typed: crate::ingest::ConversationState =
            store.conversation("support", "cnv_3").unwrap().unwrap();
        assert_eq!(typed.revision, 3);
        assert_eq!(typed.snapshot.tags, Some(vec!["vip".to_string()]));
        drop(store);
        let names = table_names(&path);
        assert!(
            !names.contains(&"conversations_v1".to_string()),
            "{names:?}"
        );
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_read().unwrap();
        assert_eq!(
            txn.open_table(CONVERSATIONS).unwrap().len().unwrap(),
            n as u64
        );
        let schema = txn
            .open_table(META)
            .unwrap()
            .get("schema")
            .unwrap()
            .unwrap()
            .value();
        assert_eq!(schema, SCHEMA_VERSION);
    }

    #[test]
    fn a_file_from_a_newer_format_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        raw_write(&path, |txn| {
            txn.open_table(META)
                .unwrap()
                .insert("schema", SCHEMA_VERSION + 1)
                .unwrap();
        });
        let err = Store::open(&path).map(|_| ()).unwrap_err();
        assert!(
            matches!(err, StoreError::NewerFormat { found, .. } if found == SCHEMA_VERSION + 1),
            "{err}"
        );
        assert_eq!(table_names(&path), ["meta_v1"], "nothing created");
    }

    /// A conversation state with unusual values in many fields.
    fn sample_state() -> crate::ingest::ConversationState {
        crate::ingest::ConversationState {
            revision: 7,
            content_hash: u64::MAX,
            snapshot: crate::normalize::Snapshot {
                conversation_id: "cnv_1".into(),
                message_text: Some("line \"one\"\nline two é".into()),
                created_at_ms: Some(-1),
                tags: Some(vec![]),
                requester: Some(frontsync_sinks::Requester {
                    name: None,
                    handle: "ada@example.com".into(),
                }),
                assignee: Some(frontsync_sinks::Assignee {
                    id: "tea_1".into(),
                    name: Some("Grace".into()),
                    email: None,
                }),
                inbox_ids: vec!["inb_1".into()],
                event_at_ms: Some(i64::MAX),
                ..Default::default()
            },
        }
    }

    #[test]
    fn conversation_states_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let state = sample_state();
        store
            .write(|t| t.put_conversation("support", "cnv_1", &state))
            .unwrap();
        let back: crate::ingest::ConversationState =
            store.conversation("support", "cnv_1").unwrap().unwrap();
        assert_eq!(back, state);
        let in_txn: Option<crate::ingest::ConversationState> =
            store.write(|t| t.conversation("support", "cnv_1")).unwrap();
        assert_eq!(in_txn, Some(state));
    }

    /// Puts `bytes` straight into the file (no `Store`) as the state of `support`/`cnv`, as
    /// another build would have stored it, then reads it through a `Store`.
    fn read_foreign_state(
        path: &Path,
        cnv: &str,
        bytes: &[u8],
    ) -> crate::ingest::ConversationState {
        raw_write(path, |txn| {
            txn.open_table(CONVERSATIONS)
                .unwrap()
                .insert(compound("support", cnv).as_str(), bytes)
                .unwrap();
        });
        let store = Store::open(path).unwrap();
        store.conversation("support", cnv).unwrap().unwrap()
    }

    #[test]
    fn states_are_written_without_field_names_and_named_ones_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let state = sample_state();
        let store = Store::open(&path).unwrap();
        store
            .write(|t| t.put_conversation("support", "cnv_new", &state))
            .unwrap();
        // Held out of redb until a checkpoint: closing takes one.
        drop(store);
        let store = Store::open(&path).unwrap();
        let written = {
            let txn = store.db.begin_read().unwrap();
            let table = txn.open_table(CONVERSATIONS).unwrap();
            let value = table.get(compound("support", "cnv_new").as_str()).unwrap();
            value.unwrap().value().to_vec()
        };
        drop(store);
        // 0x93: a MessagePack array of the three fields of `ConversationState`.
        assert_eq!(written.first(), Some(&0x93));
        let named = rmp_serde::to_vec_named(&state).unwrap();
        assert!(
            written.len() < named.len(),
            "{} vs {}",
            written.len(),
            named.len()
        );
        // A state as the builds before this one wrote it: a map with field names.
        assert_eq!(read_foreign_state(&path, "cnv_old", &named), state);
        let store = Store::open(&path).unwrap();
        let back: crate::ingest::ConversationState =
            store.conversation("support", "cnv_new").unwrap().unwrap();
        assert_eq!(back, state);
    }

    #[test]
    fn a_state_written_before_a_snapshot_field_was_added_still_reads() {
        // As a later release would meet a state of this one after adding fields at the end
        // of `Snapshot`: the stored array is shorter than the type, and the missing fields
        // take their defaults.
        let short = rmp_serde::to_vec(&(7u64, 9u64, ("cnv_1", Some("Refund")))).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        drop(Store::open(&path).unwrap());
        let expected = crate::ingest::ConversationState {
            revision: 7,
            content_hash: 9,
            snapshot: crate::normalize::Snapshot {
                conversation_id: "cnv_1".into(),
                subject: Some("Refund".into()),
                ..Default::default()
            },
        };
        assert_eq!(read_foreign_state(&path, "cnv_1", &short), expected);
    }

    #[test]
    fn the_retired_seen_index_is_deleted_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        raw_write(&path, |txn| {
            txn.open_table(RETIRED_SEEN_BY_TIME)
                .unwrap()
                .insert((1, "acme\0evt_1"), ())
                .unwrap();
        });
        drop(Store::open(&path).unwrap());
        let names = table_names(&path);
        assert!(!names.contains(&"seen_by_time_v1".to_string()), "{names:?}");
        assert!(names.contains(&"seen_events_v1".to_string()), "{names:?}");
    }

    #[test]
    fn outbox_is_fifo_per_sink_and_counts_depth() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        store
            .write(|t| {
                t.enqueue("a", &highlight_json("s:c1", 1))?;
                t.enqueue("b", &highlight_json("s:c1", 1))?;
                t.enqueue("a", &highlight_json("s:c2", 1))?;
                Ok(())
            })
            .unwrap();
        let head = store.outbox_head("a", 10).unwrap();
        assert_eq!(
            head.iter()
                .map(|d| (d.seq, d.id.as_str()))
                .collect::<Vec<_>>(),
            vec![(1, "s:c1"), (2, "s:c2")]
        );
        assert_eq!(store.outbox_depth("a").unwrap(), 2);
        store.write(|t| t.ack("a", &[1])).unwrap();
        // A repeated ack changes nothing.
        store.write(|t| t.ack("a", &[1])).unwrap();
        assert_eq!(store.outbox_depth("a").unwrap(), 1);
        assert_eq!(store.counter(counters::DELIVERED, "a").unwrap(), 1);
        assert_eq!(store.outbox_head("b", 10).unwrap().len(), 1);
    }

    #[test]
    fn acks_remove_exactly_the_given_seqs_of_one_sink() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        store
            .write(|t| {
                for i in 0..10 {
                    t.enqueue("a", &highlight_json(&format!("s:c{i}"), 1))?;
                    t.enqueue("b", &highlight_json(&format!("s:c{i}"), 1))?;
                }
                Ok(())
            })
            .unwrap();
        let seqs = |sink: &str| -> Vec<u64> {
            store
                .outbox_head(sink, 100)
                .unwrap()
                .iter()
                .map(|d| d.seq)
                .collect()
        };
        // Consecutive (the range scan), then scattered, then overlapping what is gone.
        assert_eq!(store.write(|t| t.ack("a", &[1, 2, 3])).unwrap(), 3);
        assert_eq!(store.write(|t| t.ack("a", &[5, 7])).unwrap(), 2);
        assert_eq!(store.write(|t| t.ack("a", &[2, 3, 4])).unwrap(), 1);
        assert_eq!(store.write(|t| t.ack("a", &[])).unwrap(), 0);
        // Two acks of the same batch in one transaction count once.
        store
            .write(|t| {
                t.ack("a", &[9, 10])?;
                t.ack("a", &[9, 10])
            })
            .unwrap();
        assert_eq!(seqs("a"), vec![6, 8]);
        assert_eq!(store.outbox_depth("a").unwrap(), 2);
        assert_eq!(store.counter(counters::DELIVERED, "a").unwrap(), 8);
        assert_eq!(seqs("b"), (1..=10).collect::<Vec<_>>());
        assert_eq!(store.outbox_depth("b").unwrap(), 10);
    }

    #[test]
    fn dead_letter_moves_entry() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let seq = store
            .write(|t| t.enqueue("a", &highlight_json("s:c1", 1)))
            .unwrap();
        store
            .write(|t| {
                t.dead_letter(
                    "a",
                    seq,
                    &Rejection {
                        error: "rejected".into(),
                        status: Some(400),
                        body_excerpt: Some("bad".into()),
                        attempts: 1,
                    },
                    9,
                )
            })
            .unwrap();
        assert!(store.outbox_head("a", 10).unwrap().is_empty());
        let dead = store.dead_letters("a").unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].1.status, Some(400));
        assert_eq!(store.counter(counters::DEAD_LETTERS, "a").unwrap(), 1);
    }

    fn rejection() -> Rejection {
        Rejection {
            error: "rejected with 400".into(),
            status: Some(400),
            body_excerpt: None,
            attempts: 1,
        }
    }

    fn reject(store: &Store, sink: &str, seq: u64) {
        assert!(
            store
                .write(|t| t.dead_letter(sink, seq, &rejection(), 1))
                .unwrap()
        );
    }

    fn real_highlight_json(id: &str, revision: u64) -> Vec<u8> {
        let h = frontsync_sinks::Highlight {
            schema: frontsync_sinks::SCHEMA_V1.into(),
            id: id.into(),
            revision,
            change: frontsync_sinks::Change::Created,
            subscription: "s".into(),
            title: "t".into(),
            text: "x".into(),
            requester: None,
            assignee: None,
            status: frontsync_sinks::Status::Open,
            front_status: "assigned".into(),
            tags: vec![],
            labels: vec![],
            inbox_ids: vec![],
            created_at: "2026-11-21T09:14:03.012Z".into(),
            updated_at: "2026-11-21T09:14:03.012Z".into(),
            source: frontsync_sinks::Source {
                system: "front".into(),
                conversation_id: "c".into(),
                message_id: None,
                event_id: None,
                url: "https://app.frontapp.com/open/c".into(),
            },
        };
        serde_json::to_vec(&h).unwrap()
    }

    #[test]
    fn outbox_key_is_read_from_the_opening_of_a_highlight() {
        let json = real_highlight_json("support:cnv_1", 12);
        let expected = OutboxKey {
            id: "support:cnv_1".into(),
            revision: 12,
        };
        assert_eq!(OutboxKey::read_prefix(&json), Some(expected));
    }

    #[test]
    fn outbox_keys_of_other_shapes_are_parsed() {
        // Keys in another order (a dead letter re-queued from a JSON map), escapes in the
        // id, and numbers serde_json would refuse: the prefix reader declines each.
        /// A stored entry and the key it holds (`None`: not a readable Highlight).
        type Case = (&'static [u8], Option<(&'static str, u64)>);
        let cases: [Case; 8] = [
            (br#"{"id":"a","revision":3,"schema":"s"}"#, Some(("a", 3))),
            (
                br#"{"schema":"s","id":"a\"b","revision":3}"#,
                Some(("a\"b", 3)),
            ),
            (
                br#"{"schema":"s","id":"a\u0041","revision":3}"#,
                Some(("aA", 3)),
            ),
            (br#"{"schema":"s","id":"a","revision":03}"#, None),
            (br#"{"schema":"s","id":"a","revision":3.5}"#, None),
            (br#"{"schema":"s","id":"a","revision":-3}"#, None),
            (br#"{"schema":"s","id":"a","revision":}"#, None),
            (b"{\"schema\":\"s\",\"id\":\"a\tb\",\"revision\":3}", None),
        ];
        for (json, want) in cases {
            assert_eq!(
                OutboxKey::read_prefix(json),
                None,
                "{}",
                String::from_utf8_lossy(json)
            );
            let got = OutboxKey::read(json).ok().map(|k| (k.id, k.revision));
            let want = want.map(|(id, r)| (id.to_string(), r));
            assert_eq!(got, want, "{}", String::from_utf8_lossy(json));
        }
    }

    mod outbox_key_properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig {
                failure_persistence: None,
                ..ProptestConfig::default()
            })]

            /// Any Highlight as queued: the key read equals the key a full parse gives, and
            /// the prefix reader takes every id without characters JSON must escape.
            #[test]
            fn read_agrees_with_a_full_parse(id in any::<String>(), revision in any::<u64>()) {
                let json = real_highlight_json(&id, revision);
                let parsed: OutboxKey = serde_json::from_slice(&json).unwrap();
                prop_assert_eq!(OutboxKey::read(&json).unwrap(), parsed);
                let plain = !id.chars().any(|c| c == '"' || c == '\\' || c < ' ');
                prop_assert_eq!(OutboxKey::read_prefix(&json).is_some(), plain);
            }

            /// On bytes a full parse accepts, the prefix reader reads the same key, and it
            /// declines only what it does not handle: an id with a quote or an escape, or a
            /// revision that is not plain digits (spaces, `-0`).
            #[test]
            fn prefix_reader_never_disagrees(
                id in "[a-z\"\\\\:,0-9 ]{0,6}",
                revision in "[0-9.eE+,}\" -]{0,5}",
            ) {
                let json = format!(r#"{{"schema":"s","id":"{id}","revision":{revision},"x":1}}"#);
                let fast = OutboxKey::read_prefix(json.as_bytes());
                if let Ok(full) = serde_json::from_slice::<OutboxKey>(json.as_bytes()) {
                    match fast {
                        Some(fast) => prop_assert_eq!(fast, full),
                        None => {
                            let plain_id = !id.contains(['"', '\\']);
                            let plain_revision = revision.bytes().all(|b| b.is_ascii_digit());
                            prop_assert!(!(plain_id && plain_revision), "declined {}", json);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn requeue_moves_dead_letters_to_the_end_with_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let original = real_highlight_json("s:c1", 1);
        store
            .write(|t| {
                t.enqueue("a", &original)?;
                t.enqueue("a", &highlight_json("s:c2", 1))
            })
            .unwrap();
        reject(&store, "a", 1);
        store
            .write(|t| t.enqueue("a", &highlight_json("s:c3", 1)))
            .unwrap();
        assert_eq!(store.counter(counters::DEAD_LETTERS, "a").unwrap(), 1);
        assert_eq!(store.outbox_depth("a").unwrap(), 2);

        let outcome = store
            .write(|t| t.requeue_dead_letters("a", &DeadLetterSelection::Seqs(vec![1, 1])))
            .unwrap();
        assert_eq!(
            outcome,
            DeadLetterOutcome::Done(vec![LetterMoved {
                seq: 1,
                new_seq: Some(4),
                highlight_id: "s:c1".into(),
                revision: 1,
            }])
        );
        let head = store.outbox_head("a", 10).unwrap();
        assert_eq!(
            head.iter()
                .map(|d| (d.seq, d.id.as_str()))
                .collect::<Vec<_>>(),
            vec![(2, "s:c2"), (3, "s:c3"), (4, "s:c1")]
        );
        assert_eq!(head[2].json, original);
        assert!(store.dead_letters("a").unwrap().is_empty());
        assert_eq!(store.counter(counters::DEAD_LETTERS, "a").unwrap(), 0);
        assert_eq!(store.outbox_depth("a").unwrap(), 3);
    }

    #[test]
    fn unknown_seqs_refuse_the_whole_command() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        store
            .write(|t| {
                t.enqueue("a", &highlight_json("s:c1", 1))?;
                t.enqueue("b", &highlight_json("s:c1", 1))
            })
            .unwrap();
        reject(&store, "a", 1);
        reject(&store, "b", 1);
        // Seq 1 exists in sink b, not in a's seq 7: refused, and seq 1 of a stays.
        for outcome in [
            store
                .write(|t| t.requeue_dead_letters("a", &DeadLetterSelection::Seqs(vec![1, 7])))
                .unwrap(),
            store
                .write(|t| t.drop_dead_letters("a", &DeadLetterSelection::Seqs(vec![7, 1, 7])))
                .unwrap(),
        ] {
            assert_eq!(outcome, DeadLetterOutcome::Unknown(vec![7]));
        }
        assert_eq!(store.dead_letters("a").unwrap().len(), 1);
        assert_eq!(store.counter(counters::DEAD_LETTERS, "a").unwrap(), 1);
        assert_eq!(store.outbox_depth("a").unwrap(), 0);
    }

    #[test]
    fn drop_deletes_only_the_selected_sink_and_counts_down() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        store
            .write(|t| {
                t.enqueue("a", &highlight_json("s:c1", 1))?;
                t.enqueue("a", &highlight_json("s:c2", 1))?;
                t.enqueue("b", &highlight_json("s:c1", 1))
            })
            .unwrap();
        reject(&store, "a", 1);
        reject(&store, "a", 2);
        reject(&store, "b", 1);
        let outcome = store
            .write(|t| t.drop_dead_letters("a", &DeadLetterSelection::Seqs(vec![2])))
            .unwrap();
        assert!(
            matches!(&outcome, DeadLetterOutcome::Done(v) if v.len() == 1 && v[0].highlight_id == "s:c2")
        );
        assert_eq!(store.counter(counters::DEAD_LETTERS, "a").unwrap(), 1);
        let all = store
            .write(|t| t.drop_dead_letters("a", &DeadLetterSelection::All))
            .unwrap();
        assert!(matches!(&all, DeadLetterOutcome::Done(v) if v.len() == 1 && v[0].seq == 1));
        assert_eq!(store.counter(counters::DEAD_LETTERS, "a").unwrap(), 0);
        assert_eq!(store.counter(counters::DEAD_LETTERS, "b").unwrap(), 1);
        assert_eq!(store.dead_letters_head("b", 10).unwrap().len(), 1);
        assert_eq!(store.dead_letters_head("b", 0).unwrap().len(), 0);
        // Nothing left: `All` is a successful no-op.
        assert_eq!(
            store
                .write(|t| t.requeue_dead_letters("a", &DeadLetterSelection::All))
                .unwrap(),
            DeadLetterOutcome::Done(vec![])
        );
    }

    #[test]
    fn a_dead_letter_without_a_highlight_is_not_requeued() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        // Not JSON: `dead_letter` keeps `null` as the Highlight.
        store.write(|t| t.enqueue("a", b"not json")).unwrap();
        reject(&store, "a", 1);
        assert_eq!(
            store
                .write(|t| t.requeue_dead_letters("a", &DeadLetterSelection::All))
                .unwrap(),
            DeadLetterOutcome::Unresendable(vec![1])
        );
        assert_eq!(store.outbox_depth("a").unwrap(), 0);
        assert!(matches!(
            store
                .write(|t| t.drop_dead_letters("a", &DeadLetterSelection::All))
                .unwrap(),
            DeadLetterOutcome::Done(v) if v.len() == 1 && v[0].highlight_id.is_empty()
        ));
    }

    #[test]
    fn failed_closure_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let store = Store::open(&path).unwrap();
        store
            .write(|t| t.enqueue("a", &highlight_json("s:c1", 1)))
            .unwrap();
        let log_before = std::fs::read(wal::path_for(&path)).unwrap();
        let r: Result<(), _> = store.write(|t| {
            t.mark_seen("acme", "evt_1", 1)?;
            t.enqueue("a", &highlight_json("s:c2", 1))?;
            Err(StoreError::Db {
                path: PathBuf::new(),
                message: "boom".into(),
            })
        });
        assert!(r.is_err());
        // Not in the redo log either: a crash now brings back the first write only.
        assert_eq!(std::fs::read(wal::path_for(&path)).unwrap(), log_before);
        let crashed = dir.path().join("crashed.redb");
        crash_copy(&path, &crashed, true);
        assert!(store.write(|t| t.mark_seen("acme", "evt_1", 1)).unwrap());
        drop(store);
        assert_eq!(Store::open(&crashed).unwrap().outbox_depth("a").unwrap(), 1);
    }

    #[test]
    fn second_open_is_refused_clearly_and_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/s.redb");
        let _store = Store::open(&path).unwrap();
        let err = Store::open(&path).unwrap_err();
        assert!(err.to_string().contains("already in use"), "{err}");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn state_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        {
            let store = Store::open(&path).unwrap();
            store
                .write(|t| {
                    t.set_cursor("events", "acme", &serde_json::json!({"after": 1.5}))?;
                    t.enqueue("a", &highlight_json("s:c1", 1))
                })
                .unwrap();
        }
        let store = Store::open(&path).unwrap();
        let c: serde_json::Value = store.cursor("events", "acme").unwrap().unwrap();
        assert_eq!(c["after"], 1.5);
        assert_eq!(store.outbox_depth("a").unwrap(), 1);
    }

    /// Everything the crash tests write: seen marks, states, outbox entries and an ack,
    /// over several transactions.
    fn write_between_checkpoints(store: &Store) {
        for i in 0..5u64 {
            store
                .write(|t| {
                    t.mark_seen("acme", &format!("evt_{i}"), 1_000 + i)?;
                    t.put_conversation("support", &format!("cnv_{i}"), &sample_state())?;
                    t.enqueue("jsonl", &highlight_json(&format!("support:cnv_{i}"), 1))?;
                    Ok(())
                })
                .unwrap();
        }
        store.write(|t| t.ack("jsonl", &[1, 2])).unwrap();
        store
            .write(|t| t.set_cursor("events", "acme", &serde_json::json!({"after": 7})))
            .unwrap();
    }

    /// What [`write_between_checkpoints`] leaves, as one comparable value.
    fn written(store: &Store) -> (u64, Vec<String>, u64, bool, Option<serde_json::Value>) {
        let head = store.outbox_head("jsonl", 100).unwrap();
        let state: Option<crate::ingest::ConversationState> =
            store.conversation("support", "cnv_4").unwrap();
        let seen = store
            .write(|t| Ok(!t.mark_seen("acme", "evt_4", 9_999)?))
            .unwrap();
        (
            store.outbox_depth("jsonl").unwrap(),
            head.iter().map(|d| d.id.clone()).collect(),
            store.seen_events().unwrap(),
            seen && state == Some(sample_state()),
            store.cursor("events", "acme").unwrap(),
        )
    }

    /// A fresh store in a temporary folder, after [`write_between_checkpoints`].
    fn store_between_checkpoints() -> (tempfile::TempDir, PathBuf, Store) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let store = Store::open(&path).unwrap();
        write_between_checkpoints(&store);
        (dir, path, store)
    }

    /// A crash, as the disk has it: both files copied while the store is open, between
    /// checkpoints.
    fn crash_copy(path: &Path, to: &Path, with_log: bool) {
        std::fs::copy(path, to).unwrap();
        if with_log {
            std::fs::copy(wal::path_for(path), wal::path_for(to)).unwrap();
        }
    }

    /// Where the redo log of the (closed) state file at `path` starts.
    fn stored_start(path: &Path) -> LogStart {
        log_start(&Database::open(path).unwrap()).unwrap()
    }

    /// How many records of the redo log of the (closed) state file at `path` an open would
    /// replay.
    fn replayable(path: &Path) -> usize {
        Wal::open(path, stored_start(path)).unwrap().1.records
    }

    #[test]
    fn a_crash_between_checkpoints_loses_no_committed_write() {
        let (dir, path, store) = store_between_checkpoints();
        let expected = (
            3,
            vec![
                "support:cnv_2".into(),
                "support:cnv_3".into(),
                "support:cnv_4".into(),
            ],
            5,
            true,
            Some(serde_json::json!({"after": 7})),
        );
        let crashed = dir.path().join("crashed.redb");
        let without_log = dir.path().join("without-log.redb");
        crash_copy(&path, &crashed, true);
        crash_copy(&path, &without_log, false);
        drop(store);
        assert_eq!(replayable(&crashed), 7);

        let recovered = Store::open(&crashed).unwrap();
        assert_eq!(written(&recovered), expected);
        // The replay was a checkpoint: nothing is left to replay, and a clean reopen agrees.
        drop(recovered);
        assert_eq!(replayable(&crashed), 0);
        assert_eq!(written(&Store::open(&crashed).unwrap()), expected);

        // The state file alone is back at the last checkpoint (the one `open` took): the
        // log is what kept the writes.
        let bare = Store::open(&without_log).unwrap();
        assert_eq!(bare.outbox_depth("jsonl").unwrap(), 0);
        assert_eq!(bare.seen_events().unwrap(), 0);
    }

    #[test]
    fn a_log_from_before_a_checkpoint_is_not_replayed() {
        let (_dir, path, store) = store_between_checkpoints();
        drop(store);
        // The log still holds the records of before the close's checkpoint, in place.
        let old_log = std::fs::read(wal::path_for(&path)).unwrap();
        assert_eq!(
            wal::read_records(&old_log, None).records.len(),
            7,
            "the records are still in the file"
        );
        assert_eq!(replayable(&path), 0);
        // Acknowledge the rest of the outbox, close, and put the old log back: replaying
        // its records would bring the acknowledged entries back.
        let store = Store::open(&path).unwrap();
        store.write(|t| t.ack("jsonl", &[3, 4, 5])).unwrap();
        drop(store);
        std::fs::write(wal::path_for(&path), &old_log).unwrap();
        let store = Store::open(&path).unwrap();
        assert_eq!(store.outbox_depth("jsonl").unwrap(), 0);
        assert_eq!(store.seen_events().unwrap(), 5);
    }

    #[test]
    fn a_log_whose_state_file_was_deleted_is_ignored() {
        let (dir, path, store) = store_between_checkpoints();
        let crashed = dir.path().join("crashed.redb");
        crash_copy(&path, &crashed, true);
        drop(store);
        std::fs::remove_file(&crashed).unwrap();
        let store = Store::open(&crashed).unwrap();
        assert_eq!(store.outbox_depth("jsonl").unwrap(), 0);
        assert_eq!(store.seen_events().unwrap(), 0);
    }

    /// The seqs of up to `limit` head entries of `sink`, as its sink would be handed them.
    fn head_seqs(store: &Store, sink: &str, limit: usize) -> Vec<u64> {
        store
            .outbox_head(sink, limit)
            .unwrap()
            .iter()
            .map(|d| d.seq)
            .collect()
    }

    /// The outbox entries of `sink` and the counter `key` as redb itself has them now,
    /// leaving out what is held in memory.
    fn in_redb(store: &Store, sink: &str, key: &str) -> (Vec<u64>, Option<u64>) {
        let txn = store.db.begin_read().unwrap();
        let outbox = txn.open_table(OUTBOX).unwrap();
        let seqs = outbox
            .range((sink, 0u64)..=(sink, u64::MAX))
            .unwrap()
            .map(|row| row.unwrap().0.value().1)
            .collect();
        let counters = txn.open_table(COUNTERS).unwrap();
        let value = counters.get(key).unwrap().map(|v| v.value());
        (seqs, value)
    }

    #[test]
    fn entries_acknowledged_between_checkpoints_never_reach_redb() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let store = Store::open(&path).unwrap();
        let depth = compound(counters::OUTBOX_DEPTH, "a");
        for i in 1..=3 {
            store
                .write(|t| t.enqueue("a", &highlight_json(&format!("s:c{i}"), 1)))
                .unwrap();
        }
        store.write(|t| t.ack("a", &[1, 2])).unwrap();
        // Committed and readable, but redb has none of it yet.
        assert_eq!(in_redb(&store, "a", &depth), (vec![], None));
        assert_eq!(head_seqs(&store, "a", 10), [3]);
        assert_eq!(store.outbox_depth("a").unwrap(), 1);
        assert_eq!(store.counter(counters::DELIVERED, "a").unwrap(), 2);
        // A checkpoint writes what is left, once; the head still shows it once.
        store.write_durable(|_| Ok(())).unwrap();
        assert_eq!(in_redb(&store, "a", &depth), (vec![3], Some(1)));
        assert!(store.wal.held().is_empty());
        assert_eq!(head_seqs(&store, "a", 10), [3]);
        // An entry in redb and one held, acknowledged together.
        store
            .write(|t| t.enqueue("a", &highlight_json("s:c4", 1)))
            .unwrap();
        assert_eq!(store.write(|t| t.ack("a", &[3, 4, 4, 9])).unwrap(), 2);
        assert_eq!(store.outbox_depth("a").unwrap(), 0);
        assert_eq!(store.counter(counters::DELIVERED, "a").unwrap(), 4);
        drop(store);
        let store = Store::open(&path).unwrap();
        assert_eq!(in_redb(&store, "a", &depth), (vec![], Some(0)));
        assert_eq!(store.counter(counters::DELIVERED, "a").unwrap(), 4);
        assert_eq!(
            store
                .write(|t| t.enqueue("a", &highlight_json("s:c5", 1)))
                .unwrap(),
            5,
            "the next seq survived the close"
        );
    }

    #[test]
    fn past_its_budget_a_sinks_entries_go_to_redb_and_its_head_keeps_seq_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let store = Store::open(&path).unwrap();
        let padding = "x".repeat(deferred::HELD_BYTES_PER_SINK / 4);
        let big = |i: u64| {
            let mut json = highlight_json(&format!("s:c{i}"), 1);
            json.pop();
            json.extend_from_slice(format!(r#","pad":"{padding}"}}"#).as_bytes());
            json
        };
        for i in 1..=5 {
            store.write(|t| t.enqueue("a", &big(i))).unwrap();
        }
        // Another sink's entries are still held: the budget is per sink.
        store
            .write(|t| t.enqueue("b", &highlight_json("s:c1", 1)))
            .unwrap();
        let (in_db, _) = in_redb(&store, "a", "");
        assert_eq!(in_db, [4, 5], "the first three fit in the budget");
        assert_eq!(in_redb(&store, "b", "").0, Vec::<u64>::new());
        assert!(store.wal.held().sink_bytes("a") <= deferred::HELD_BYTES_PER_SINK);
        assert_eq!(head_seqs(&store, "a", 10), [1, 2, 3, 4, 5]);
        assert_eq!(store.outbox_head("a", 10).unwrap()[3].json, big(4));
        assert_eq!(head_seqs(&store, "a", 2), [1, 2]);
        // A crash now: the log brings back both kinds.
        let crashed = dir.path().join("crashed.redb");
        crash_copy(&path, &crashed, true);
        assert_eq!(store.write(|t| t.ack("a", &[1, 2, 3, 4, 5])).unwrap(), 5);
        assert!(store.outbox_head("a", 10).unwrap().is_empty());
        drop(store);
        let recovered = Store::open(&crashed).unwrap();
        assert_eq!(head_seqs(&recovered, "a", 10), [1, 2, 3, 4, 5]);
        assert_eq!(recovered.outbox_depth("a").unwrap(), 5);
        assert_eq!(recovered.outbox_depth("b").unwrap(), 1);
    }

    /// Readers beside the writer, as in the daemon: with a budget so small that
    /// transactions put some of their entries in redb and keep others held, every head a
    /// reader sees must be a run of consecutive seqs. A reader that saw a commit's redb half
    /// without its held half would see a later entry without an earlier one. One thread
    /// acknowledges what it reads, as a sink does; another only reads and checks.
    #[test]
    fn readers_beside_the_writer_never_see_a_gap_in_the_outbox() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let entry = highlight_json("s:c1", 1);
        store.wal.held().set_budget(entry.len() * 4);
        const ENTRIES: u64 = 6_000;
        let writer = {
            let (store, entry) = (store.clone(), entry.clone());
            std::thread::spawn(move || {
                for _ in 0..ENTRIES / 3 {
                    store
                        .write(|t| (0..3).try_for_each(|_| t.enqueue("a", &entry).map(drop)))
                        .unwrap();
                }
            })
        };
        let done = Arc::new(AtomicBool::new(false));
        let checker = {
            let (store, done) = (store.clone(), Arc::clone(&done));
            std::thread::spawn(move || {
                let mut gaps = Vec::new();
                while !done.load(Ordering::Relaxed) {
                    let seqs = head_seqs(&store, "a", 64);
                    if seqs.windows(2).any(|w| w[1] != w[0] + 1) {
                        gaps.push(seqs);
                    }
                }
                gaps
            })
        };
        let mut next = 1;
        while next <= ENTRIES {
            let seqs = head_seqs(&store, "a", 64);
            assert!(
                seqs.first().is_none_or(|&first| first == next),
                "{next}: {seqs:?}"
            );
            if let Some(&last) = seqs.last() {
                store.write(|t| t.ack("a", &seqs)).unwrap();
                next = last + 1;
            }
        }
        writer.join().unwrap();
        done.store(true, Ordering::Relaxed);
        let gaps = checker.join().unwrap();
        assert!(
            gaps.is_empty(),
            "{} heads with a gap, first: {:?}",
            gaps.len(),
            gaps.first()
        );
        assert_eq!(store.outbox_depth("a").unwrap(), 0);
        assert_eq!(store.counter(counters::DELIVERED, "a").unwrap(), ENTRIES);
    }

    #[test]
    fn a_held_entry_can_be_dead_lettered_in_the_transaction_that_queued_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let moved = store
            .write(|t| {
                let seq = t.enqueue("a", &highlight_json("s:c1", 1))?;
                let first = t.dead_letter("a", seq, &rejection(), 5)?;
                let again = t.dead_letter("a", seq, &rejection(), 5)?;
                Ok((first, again))
            })
            .unwrap();
        assert_eq!(moved, (true, false));
        assert!(store.outbox_head("a", 10).unwrap().is_empty());
        assert_eq!(store.outbox_depth("a").unwrap(), 0);
        assert_eq!(store.dead_letters("a").unwrap().len(), 1);
    }

    #[test]
    fn a_log_from_a_newer_build_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        drop(Store::open(&path).unwrap());
        let (mut log, _) = Wal::open(&path, stored_start(&path)).unwrap();
        let mut record = log.capture();
        // A change to table 200, which this build does not know.
        record.extend_from_slice(&[1, 200, 1, 0, 0, 0, b'k', 1, 0, 0, 0, b'v']);
        log.append(&mut record).unwrap();
        drop(log);
        let before = std::fs::read(wal::path_for(&path)).unwrap();
        let err = Store::open(&path).unwrap_err().to_string();
        assert!(
            err.contains("newer frontsync") && err.contains("s.redb-wal"),
            "{err}"
        );
        assert_eq!(std::fs::read(wal::path_for(&path)).unwrap(), before);
    }
}
