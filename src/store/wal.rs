//! The redo log beside the state file (`<state file>-wal`): what makes a commit durable
//! without a durable redb commit.
//!
//! A durable redb commit writes every page a transaction touched, scattered over the file,
//! and waits for `fdatasync`: about 0.45 ms, 15 `pwrite`s and 53 KiB even for one event
//! (`writer_cost` in BENCHMARKS.md). So [`super::Store::write`] records the transaction's changes here
//! instead: every insert and remove, as the bytes redb would store, appended as one record
//! with one synchronous write (`O_DIRECT | O_DSYNC` where the filesystem takes it, see
//! `Direct`; else a `pwrite` and an `fdatasync`). Only then is the redb transaction committed, without
//! its own sync (`Durability::None`), and the changes held out of redb (outbox entries and
//! counters, see `deferred`) published, which makes them visible to readers: nothing a
//! reader (a sink) sees can be lost in a crash, and no caller hears `Ok` before its record
//! is on disk. A transaction that changed only what is held drops its redb transaction
//! instead: its record is the whole commit.
//!
//! A checkpoint is a durable redb commit, which makes every commit before it durable in the
//! state file itself. One is taken every [`CHECKPOINT_EVERY`] or [`CHECKPOINT_BYTES`] of
//! log, and when the store is closed. In the same commit it stores where the log starts
//! next (`wal_start` in the meta table): a new random sequence number, which the first
//! record after the checkpoint carries, written at the log's first byte. After a crash,
//! redb reopens at its last checkpoint and [`Wal::replay`] applies the records that follow
//! it, in order: the run of records at the start of the file whose first carries
//! `wal_start` and each the number one above the record before it. The log is read in
//! pieces, twice (checked and counted on open, then applied), never held whole in memory.
//!
//! The file is not cut at a checkpoint but written over: it grows in [`GROW_BYTES`] steps of
//! zeros, written once, so that appending a record changes no file size or block map and
//! its sync writes the record alone (on ext4, a size change costs the sync a second
//! write, of the inode). What lies beyond the newest record, zeros and records from before
//! the checkpoint, never reads as part of the log: those records carry numbers from another
//! random start.
//!
//! Records hold whole values ("key K of table T is now V", "key K is gone"). A record is
//! framed by its length, its sequence number and a CRC-32 of both and the body: a record
//! torn by a crash (its `fdatasync` never returned, so no caller was answered) fails the
//! check, and reading stops there.

use std::borrow::Borrow;
use std::fs::{File, OpenOptions};
use std::ops::{Deref, RangeBounds};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use redb::{AccessGuard, StorageError, Table};

use super::tables::*;

/// Log bytes after which the next write is a checkpoint. Bounds the log file, and the
/// replay after a crash (at most this much to read and apply before the daemon is ready),
/// when [`CHECKPOINT_EVERY`] does not come first. A checkpoint stalls the writer while redb
/// writes out every page buffered since the last one (20-50 ms at saturation), so this is
/// set above a second of log at the highest rate measured (about 18,000 webhooks/s, 30 MB):
/// at 16 MiB, saturation took two checkpoints a second (BENCHMARKS.md).
pub const CHECKPOINT_BYTES: u64 = 64 << 20;

/// Time after which the next write is a checkpoint. Bounds how much work a crash leaves to
/// replay, and how long redb keeps the pages freed since the last checkpoint (a
/// non-durable commit cannot reuse them).
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// The log file grows by this many bytes of zeros at a time (see the module notes).
pub const GROW_BYTES: u64 = 1 << 20;

/// What the file grows with, a piece at a time. A static that is never written costs no
/// memory (its pages are the kernel's shared zero page), where a fresh 1 MiB buffer per step
/// stayed in the allocator's keeping.
static ZEROS: [u8; 64 << 10] = [0; 64 << 10];

/// The log is read back in pieces of this size, so a long log is not read whole.
const READ_BYTES: usize = 256 << 10;

/// `FSW1`: frontsync redo log, record format 1.
const MAGIC: [u8; 4] = *b"FSW1";
/// Magic, body length (u32), sequence number (u64), CRC-32 (u32), all little-endian.
pub const HEADER_BYTES: usize = 20;

const PUT: u8 = 1;
const DEL: u8 = 2;

/// The tables a record names, by a number that never changes meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum TableId {
    Seen = 1,
    Conversations = 2,
    Outbox = 3,
    DeadLetters = 4,
    Counters = 5,
    Cursors = 6,
    PendingPreviews = 7,
    OAuthGrants = 8,
}

impl TableId {
    fn from_u8(v: u8) -> Option<TableId> {
        use TableId::*;
        [
            Seen,
            Conversations,
            Outbox,
            DeadLetters,
            Counters,
            Cursors,
            PendingPreviews,
            OAuthGrants,
        ]
        .into_iter()
        .find(|t| *t as u8 == v)
    }
}

/// The changes of one transaction, encoded as a record body as they are made. `None` when
/// the transaction is a checkpoint (a durable commit needs no record).
pub type Capture = Option<Vec<u8>>;

/// A capture buffer larger than this is not kept for the next transaction (one of
/// `MAX_BATCH_OPS` large events can reach a few MiB).
const KEEP_BUFFER_BYTES: usize = 1 << 20;

/// True when the capture holds no change (a read-only transaction).
pub fn is_empty(capture: &[u8]) -> bool {
    capture.len() <= HEADER_BYTES
}

fn put_bytes(buf: &mut Vec<u8>, table: TableId, key: &[u8], value: &[u8]) {
    buf.push(PUT);
    buf.push(table as u8);
    buf.extend_from_slice(&(key.len() as u32).to_le_bytes());
    buf.extend_from_slice(key);
    buf.extend_from_slice(&(value.len() as u32).to_le_bytes());
    buf.extend_from_slice(value);
}

fn del_bytes(buf: &mut Vec<u8>, table: TableId, key: &[u8]) {
    buf.push(DEL);
    buf.push(table as u8);
    buf.extend_from_slice(&(key.len() as u32).to_le_bytes());
    buf.extend_from_slice(key);
}

/// Records "key `key` of `table` is now `value`" for a change made outside redb (see
/// `deferred`); nothing in a checkpoint, which needs no record.
pub fn record_put(capture: &mut Capture, table: TableId, key: &[u8], value: &[u8]) {
    if let Some(buf) = capture {
        put_bytes(buf, table, key, value);
    }
}

/// Records "key `key` of `table` is gone" for a change made outside redb.
pub fn record_del(capture: &mut Capture, table: TableId, key: &[u8]) {
    if let Some(buf) = capture {
        del_bytes(buf, table, key);
    }
}

/// A table of a write transaction whose changes are also recorded in the transaction's
/// capture. Reads go to the table (`Deref`); the only ways to change it are the methods
/// here, so no change can miss the log.
pub struct Logged<'s, 't, K: redb::Key + 'static, V: redb::Value + 'static> {
    pub(super) table: &'s mut Table<'t, K, V>,
    pub(super) id: TableId,
    pub(super) capture: &'s mut Capture,
    /// Set by every change: a transaction that changed no table needs no redb commit.
    pub(super) changed: &'s mut bool,
}

impl<'t, K: redb::Key + 'static, V: redb::Value + 'static> Deref for Logged<'_, 't, K, V> {
    type Target = Table<'t, K, V>;

    fn deref(&self) -> &Self::Target {
        self.table
    }
}

impl<K: redb::Key + 'static, V: redb::Value + 'static> Logged<'_, '_, K, V> {
    pub fn insert<'k, 'v>(
        &mut self,
        key: impl Borrow<K::SelfType<'k>>,
        value: impl Borrow<V::SelfType<'v>>,
    ) -> Result<Option<AccessGuard<'_, V>>, StorageError> {
        *self.changed = true;
        if let Some(buf) = self.capture {
            put_bytes(
                buf,
                self.id,
                K::as_bytes(key.borrow()).as_ref(),
                V::as_bytes(value.borrow()).as_ref(),
            );
        }
        self.table.insert(key, value)
    }

    pub fn remove<'k>(
        &mut self,
        key: impl Borrow<K::SelfType<'k>>,
    ) -> Result<Option<AccessGuard<'_, V>>, StorageError> {
        *self.changed = true;
        if let Some(buf) = self.capture {
            // Recorded whether or not the key exists: removing a missing key on replay is
            // as harmless as it was here.
            del_bytes(buf, self.id, K::as_bytes(key.borrow()).as_ref());
        }
        self.table.remove(key)
    }

    /// Removes the entries of `range` for which `keep` is false, recording each one.
    pub fn retain_in<'a, KR, F>(
        &mut self,
        range: impl RangeBounds<KR> + 'a,
        mut keep: F,
    ) -> Result<(), StorageError>
    where
        KR: Borrow<K::SelfType<'a>> + 'a,
        F: for<'f> FnMut(K::SelfType<'f>, V::SelfType<'f>) -> bool,
    {
        let id = self.id;
        let capture = &mut *self.capture;
        let changed = &mut *self.changed;
        self.table.retain_in(range, |k, v| {
            // Recorded before `keep` takes the key, and taken back if it is kept.
            let mark = capture.as_mut().map(|buf| {
                let mark = buf.len();
                del_bytes(buf, id, K::as_bytes(&k).as_ref());
                mark
            });
            let kept = keep(k, v);
            if let (true, Some(buf), Some(mark)) = (kept, capture.as_mut(), mark) {
                buf.truncate(mark);
            }
            *changed |= !kept;
            kept
        })
    }
}

/// Why the log could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("redo log {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "redo log {path}: record {seq} was written by a newer frontsync (unknown table {table}); it was left untouched"
    )]
    UnknownTable { path: PathBuf, seq: u64, table: u8 },
    #[error("redo log {path}: record {seq} is malformed: {message}")]
    Malformed {
        path: PathBuf,
        seq: u64,
        message: String,
    },
}

/// The open log file, owned by the one holder of the state file's lock.
pub struct Wal {
    file: File,
    path: PathBuf,
    /// Bytes of the records written since the last checkpoint; the next record goes here.
    len: u64,
    /// The sequence number the records found on open start at (`None`: any).
    first: Option<u64>,
    /// The file's size: what lies beyond `len` was written before (zeros or old records),
    /// so writing there changes no size or block map.
    allocated: u64,
    /// The sequence number of the next record.
    next_seq: u64,
    /// The sequence number the log starts at after the next checkpoint.
    start_after_checkpoint: u64,
    last_checkpoint: Instant,
    /// A record was appended since the last checkpoint (records found on open do not
    /// count: they are only ever checkpointed by a successful replay).
    appended: bool,
    /// The last transaction's capture buffer, reused by the next one.
    spare: Vec<u8>,
    /// Records are written through this second handle, opened `O_DIRECT | O_DSYNC`, when the
    /// filesystem allows it (see [`Direct`]); `None`: `pwrite` then `fdatasync` on `file`.
    direct: Option<Direct>,
}

/// The block size records are written in through `O_DIRECT`: buffer address, file offset and
/// length must all be multiples of the device's logical block size, which is at most this on
/// the disks the daemon runs on (512 or 4096).
const BLOCK: usize = 4096;

/// Writing records with one `pwrite` on a file opened `O_DIRECT | O_DSYNC`, instead of a
/// `pwrite` into the page cache and an `fdatasync`: the same guarantee (the call returns
/// once the data is on disk, by POSIX's definition of `O_DSYNC`), without copying the record
/// into the page cache and writing it back from there. On this VM that halved the CPU of a
/// 2 KB append and took 10-25 % off a 20-40 KB one (`frontsync-bench sync-cost`, BENCHMARKS.md,
/// "The redo log written directly"), for one copy of the record into the aligned buffer.
///
/// `O_DIRECT` writes whole blocks, so the block the log's end falls in is written again with
/// each record: `tail` keeps its bytes up to the end, and the record follows them in an
/// aligned buffer, padded with zeros to the block's end. Rewriting those earlier bytes with
/// the same bytes cannot damage them even if a crash tears the write: every sector reads as
/// its old or its new contents, the same for those bytes. The zeros land beyond the newest
/// record, where only zeros and records from before the last checkpoint lie.
struct Direct {
    file: File,
    /// The log's bytes from the start of the block `len` falls in up to `len` (see
    /// [`read_tail`]).
    tail: Vec<u8>,
    /// Where a record is laid out for writing; over-allocated by a block to be aligned.
    buffer: Vec<u8>,
    /// Tests: the next write fails with this OS error instead of writing.
    #[cfg(test)]
    fail_next: Option<i32>,
}

impl Direct {
    /// Opens `path` for direct, synchronous writes; `None` where the filesystem refuses
    /// `O_DIRECT` (tmpfs on older kernels, for one).
    fn open(path: &Path) -> Option<File> {
        #[cfg(target_os = "linux")]
        {
            OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_DIRECT | libc::O_DSYNC)
                .open(path)
                .ok()
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = path;
            None
        }
    }

    /// Writes `record` at `at` (the log's end): `tail`, the record and zeros to the end of a
    /// block, from the start of `tail`'s block. Returns `None` when no aligned buffer could be
    /// had (the write then goes the buffered way).
    fn write(&mut self, record: &[u8], at: u64) -> Option<std::io::Result<()>> {
        #[cfg(test)]
        if let Some(code) = self.fail_next.take() {
            return Some(Err(std::io::Error::from_raw_os_error(code)));
        }
        let start = at - self.tail.len() as u64;
        let used = self.tail.len() + record.len();
        let padded = used.div_ceil(BLOCK) * BLOCK;
        if self.buffer.len() < padded + BLOCK {
            self.buffer = vec![0; padded + BLOCK];
        }
        // `align_offset` may in principle decline (usize::MAX): correctness must not rest on it.
        let offset = self.buffer.as_ptr().align_offset(BLOCK);
        if offset >= BLOCK {
            return None;
        }
        let out = &mut self.buffer[offset..offset + padded];
        out[..self.tail.len()].copy_from_slice(&self.tail);
        out[self.tail.len()..used].copy_from_slice(record);
        out[used..].fill(0);
        let written = self.file.write_all_at(out, start);
        if written.is_ok() {
            self.tail.clear();
            self.tail
                .extend_from_slice(&out[used / BLOCK * BLOCK..used]);
        }
        if self.buffer.len() > KEEP_BUFFER_BYTES + BLOCK {
            self.buffer = Vec::new();
        }
        Some(written)
    }
}

/// The bytes of the block the log's end `len` falls in, up to `len`: what the next record's
/// direct write repeats before it.
fn read_tail(file: &File, len: u64) -> std::io::Result<Vec<u8>> {
    let in_block = len % BLOCK as u64;
    let mut tail = vec![0; in_block as usize];
    file.read_exact_at(&mut tail, len - in_block)?;
    Ok(tail)
}

/// The log's path: the state file's, with `-wal` appended.
pub fn path_for(state: &Path) -> PathBuf {
    let mut name = state.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

/// One record read back: its sequence number and body.
#[cfg(test)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    pub body: Vec<u8>,
}

/// What reading the log found, without the records themselves.
#[derive(Debug, Default, Clone, Copy)]
pub struct Found {
    /// Whole records that follow the last checkpoint.
    pub records: usize,
    /// The sequence number of the last of them.
    pub last_seq: Option<u64>,
    /// Reading stopped at a record that carries the next sequence number but is cut short
    /// or fails its CRC: one whose write a crash interrupted.
    pub torn: bool,
    /// Reading stopped because the bytes ended inside a record (more of the file may hold
    /// the rest).
    incomplete: bool,
    /// Bytes of the whole records read.
    bytes: u64,
}

/// The records at the start of some bytes, and what reading them found.
#[cfg(test)]
#[derive(Debug, Default)]
pub struct ReadBack {
    pub records: Vec<Record>,
    pub found: Found,
}

fn crc(seq: u64, body: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&(body.len() as u32).to_le_bytes());
    h.update(&seq.to_le_bytes());
    h.update(body);
    h.finalize()
}

/// Hands `each` the log's records at the start of `bytes`, in order: the first must carry
/// `first` (any number when `None`, for a store no checkpoint has told where its log
/// starts) and each the number one above the record before it. Stops at the first header
/// that does not follow (zeros, an older record, the end) or a record that is incomplete
/// or fails its CRC.
fn scan<E>(
    bytes: &[u8],
    first: Option<u64>,
    mut each: impl FnMut(u64, &[u8]) -> Result<(), E>,
) -> Result<Found, E> {
    let mut found = Found::default();
    let mut expected = first;
    let mut at = 0usize;
    loop {
        let Some(header) = bytes.get(at..at + HEADER_BYTES) else {
            let rest = bytes.get(at..).unwrap_or_default();
            found.incomplete = !rest.is_empty();
            // A header cut short by the end of the file; zeros there are only the file's end.
            found.torn = rest.iter().any(|&b| b != 0);
            break;
        };
        let word = |r: std::ops::Range<usize>| header.get(r).unwrap_or_default();
        let len = u32::from_le_bytes(word(4..8).try_into().unwrap_or_default()) as usize;
        let seq = u64::from_le_bytes(word(8..16).try_into().unwrap_or_default());
        let sum = u32::from_le_bytes(word(16..20).try_into().unwrap_or_default());
        if word(0..4) != MAGIC || expected.is_some_and(|e| e != seq) {
            break;
        }
        let Some(body) = bytes.get(at + HEADER_BYTES..at + HEADER_BYTES + len) else {
            found.incomplete = true;
            found.torn = true;
            break;
        };
        if crc(seq, body) != sum {
            found.torn = true;
            break;
        }
        each(seq, body)?;
        found.records += 1;
        found.last_seq = Some(seq);
        expected = Some(seq.wrapping_add(1));
        at += HEADER_BYTES + len;
    }
    found.bytes = at as u64;
    Ok(found)
}

/// The log's records at the start of `bytes` (see [`scan`]).
#[cfg(test)]
pub fn read_records(bytes: &[u8], first: Option<u64>) -> ReadBack {
    let mut records = Vec::new();
    let found = scan(bytes, first, |seq, body| {
        records.push(Record {
            seq,
            body: body.to_vec(),
        });
        Ok::<(), std::convert::Infallible>(())
    });
    let found = match found {
        Ok(found) => found,
        Err(never) => match never {},
    };
    ReadBack { records, found }
}

/// Why reading the file stopped early: it could not be read, or `each` failed.
enum ReadError<E> {
    Io(std::io::Error),
    Each(E),
}

/// [`scan`] over the first `size` bytes of the file, read in [`READ_BYTES`] pieces as far
/// as records go, so that no more than a piece (or the largest record) is in memory. A
/// header whose length was damaged is read on to the length it claims, at most `size`.
fn read_file<E>(
    file: &File,
    size: u64,
    first: Option<u64>,
    mut each: impl FnMut(u64, &[u8]) -> Result<(), E>,
) -> Result<Found, ReadError<E>> {
    let mut out = Found::default();
    // The bytes not yet read as records; `base` is where they start in the file.
    let mut pending: Vec<u8> = Vec::new();
    let mut base = 0u64;
    let mut expected = first;
    loop {
        let end = (base + pending.len() as u64 + READ_BYTES as u64).min(size);
        let from = pending.len();
        pending.resize((end - base) as usize, 0);
        file.read_exact_at(&mut pending[from..], base + from as u64)
            .map_err(ReadError::Io)?;
        let found = scan(&pending, expected, &mut each).map_err(ReadError::Each)?;
        if let Some(last) = found.last_seq {
            expected = Some(last.wrapping_add(1));
            out.last_seq = Some(last);
        }
        out.records += found.records;
        out.bytes += found.bytes;
        pending.drain(..found.bytes as usize);
        base += found.bytes;
        // Read on only while the reader ran out of bytes inside a record.
        if !found.incomplete || end >= size {
            out.torn = found.torn;
            out.incomplete = found.incomplete;
            return Ok(out);
        }
    }
}

/// Where the log's records begin, as the state file knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStart {
    /// The last checkpoint stored the sequence number of the first record after it.
    At(u64),
    /// A state file from a build that emptied its log at each checkpoint instead of storing
    /// where it starts: whatever records the file holds follow the last checkpoint.
    Unrecorded,
    /// The state file was just created: a log beside it belongs to a state file that is
    /// gone, and nothing in it applies.
    NewState,
}

/// A sequence number no earlier record of this log is likely to carry: each checkpoint
/// starts the log at a new random one, so no record left in the file from before a
/// checkpoint can read as following a newer one (nor can one left by a state file that
/// was deleted or restored from a backup).
fn random_start() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    h.write_u128(now.as_nanos());
    h.write_u32(std::process::id());
    h.finish()
}

impl Wal {
    /// Opens (or creates, mode 0600) the log of `state` and reads the records that follow
    /// the state file's last checkpoint.
    pub fn open(state: &Path, start: LogStart) -> Result<(Wal, Found), WalError> {
        let path = path_for(state);
        let io = |source| WalError::Io {
            path: path.clone(),
            source,
        };
        let created = !path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        if created {
            // A record synced into a file whose name a crash then loses would be lost too.
            let folder = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            File::open(folder).and_then(|f| f.sync_all()).map_err(io)?;
        }
        let allocated = file.metadata().map_err(io)?.len();
        let first = match start {
            LogStart::At(seq) => Some(seq),
            LogStart::Unrecorded | LogStart::NewState => None,
        };
        // A first pass checks the records and counts them; [`Wal::replay`] reads them again
        // to apply them, so a long log is never held in memory whole.
        let mut found = match read_file(&file, allocated, first, |_, _| {
            Ok::<(), std::convert::Infallible>(())
        }) {
            Ok(found) => found,
            Err(ReadError::Io(e)) => return Err(io(e)),
            Err(ReadError::Each(never)) => match never {},
        };
        if start == LogStart::NewState {
            if found.records > 0 {
                tracing::warn!(
                    log = %path.display(),
                    records = found.records,
                    "the state file is new but its redo log holds records; they belong to a state file that is gone and are ignored"
                );
            }
            found = Found::default();
        }
        let next_seq = match (found.last_seq, start) {
            (Some(last), _) => last.wrapping_add(1),
            (None, LogStart::At(seq)) => seq,
            (None, _) => random_start(),
        };
        let direct = match Direct::open(&path) {
            Some(direct) => Some(Direct {
                file: direct,
                tail: read_tail(&file, found.bytes).map_err(io)?,
                buffer: Vec::new(),
                #[cfg(test)]
                fail_next: None,
            }),
            None => {
                tracing::debug!(log = %path.display(), "the filesystem refuses O_DIRECT; the redo log is written through the page cache");
                None
            }
        };
        let wal = Wal {
            direct,
            file,
            len: found.bytes,
            first,
            allocated,
            path,
            next_seq,
            start_after_checkpoint: random_start(),
            last_checkpoint: Instant::now(),
            appended: false,
            spare: Vec::new(),
        };
        Ok((wal, found))
    }

    /// Hands `each` the records [`Wal::open`] found, in order, read from the file again in
    /// pieces.
    pub fn replay<E: From<WalError>>(
        &self,
        each: impl FnMut(u64, &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        match read_file(&self.file, self.len, self.first, each) {
            Ok(_) => Ok(()),
            Err(ReadError::Each(e)) => Err(e),
            Err(ReadError::Io(source)) => Err(E::from(WalError::Io {
                path: self.path.clone(),
                source,
            })),
        }
    }

    /// An empty capture for the next transaction: room for the header, filled in by
    /// [`Wal::append`].
    pub fn capture(&mut self) -> Vec<u8> {
        let mut buf = std::mem::take(&mut self.spare);
        buf.clear();
        buf.resize(HEADER_BYTES, 0);
        buf
    }

    /// Gives a capture back once its transaction is done, for the next one.
    pub fn recycle(&mut self, buf: Vec<u8>) {
        if buf.capacity() <= KEEP_BUFFER_BYTES {
            self.spare = buf;
        }
    }

    /// Tests: no checkpoint comes by time for a day, so a test that counts what is held is
    /// not raced by the clock on a slow machine.
    #[cfg(test)]
    pub fn postpone_timed_checkpoints(&mut self) {
        self.last_checkpoint = Instant::now() + Duration::from_secs(24 * 3600);
    }

    /// True when the next write should be a checkpoint.
    pub fn checkpoint_due(&self) -> bool {
        self.len >= CHECKPOINT_BYTES || self.last_checkpoint.elapsed() >= CHECKPOINT_EVERY
    }

    /// The sequence number the first record after the next checkpoint will carry: a
    /// checkpoint stores it (as `wal_start`) in its durable commit, then calls
    /// [`Wal::emptied`].
    pub fn start_after_checkpoint(&self) -> u64 {
        self.start_after_checkpoint
    }

    /// Writes `capture` (made by [`capture`]) as the next record and waits until it is on
    /// disk. On failure the record is wiped, so a record whose transaction was not
    /// committed is never replayed.
    pub fn append(&mut self, capture: &mut [u8]) -> Result<(), WalError> {
        let body_len = capture.len() - HEADER_BYTES;
        let (header, body) = capture.split_at_mut(HEADER_BYTES);
        let seq = self.next_seq;
        header[0..4].copy_from_slice(&MAGIC);
        header[4..8].copy_from_slice(&(body_len as u32).to_le_bytes());
        header[8..16].copy_from_slice(&seq.to_le_bytes());
        header[16..20].copy_from_slice(&crc(seq, body).to_le_bytes());
        let end = self.len + capture.len() as u64;
        let written = self.grow_to(end).and_then(|()| self.write_synced(capture));
        match written {
            Ok(()) => {
                self.len = end;
                self.next_seq = seq.wrapping_add(1);
                self.appended = true;
                Ok(())
            }
            Err(source) => {
                self.wipe_next();
                Err(WalError::Io {
                    path: self.path.clone(),
                    source,
                })
            }
        }
    }

    /// Writes `record` at the log's end and waits until it is on disk: directly when the
    /// filesystem allows (see [`Direct`]), else through the page cache and `fdatasync`.
    fn write_synced(&mut self, record: &[u8]) -> std::io::Result<()> {
        if let Some(direct) = &mut self.direct {
            match direct.write(record, self.len) {
                Some(Err(e))
                    if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EOPNOTSUPP)) =>
                {
                    // The device wants larger blocks than ours, or the filesystem accepted
                    // the flag on open but not the write: the buffered way from now on.
                    tracing::warn!(log = %self.path.display(), error = %e, "the redo log cannot be written with O_DIRECT here; writing it through the page cache");
                    self.direct = None;
                }
                Some(written) => return written,
                None => {
                    // Written the buffered way, this record would leave `tail` behind the
                    // log's end; a later direct write from it would overwrite the record.
                    tracing::warn!(log = %self.path.display(), "no aligned buffer for an O_DIRECT write; writing the redo log through the page cache");
                    self.direct = None;
                }
            }
        }
        self.file.write_all_at(record, self.len)?;
        self.file.sync_data()
    }

    /// Makes the file at least `end` bytes long, in [`GROW_BYTES`] steps of zeros (synced
    /// with the record that needed them, or, when records are written directly, at once,
    /// so that every direct write lands in blocks that already hold data: then `end` is
    /// taken to the end of its block, which the direct write fills with padding, and the
    /// file counts as grown only once the zeros are on disk).
    fn grow_to(&mut self, end: u64) -> std::io::Result<()> {
        let end = match self.direct {
            Some(_) => end.div_ceil(BLOCK as u64) * BLOCK as u64,
            None => end,
        };
        if end <= self.allocated {
            return Ok(());
        }
        let to = end.div_ceil(GROW_BYTES) * GROW_BYTES;
        let mut at = self.allocated;
        while at < to {
            let n = (to - at).min(ZEROS.len() as u64) as usize;
            self.file.write_all_at(&ZEROS[..n], at)?;
            at += n as u64;
        }
        if self.direct.is_some() {
            self.file.sync_data()?;
        }
        self.allocated = at;
        Ok(())
    }

    /// Zeros the header at `len`, where the record that failed was written (in part or
    /// whole), and syncs.
    fn wipe_next(&mut self) {
        // Best effort: if even this fails, the record stays, and a crash before the next
        // checkpoint would replay a transaction its caller was told failed.
        if self.len < self.allocated {
            let _ = self.file.write_all_at(&[0; HEADER_BYTES], self.len);
            let _ = self.file.sync_data();
        }
    }

    /// Forgets the record [`Wal::append`] just wrote, when its transaction then failed to
    /// commit.
    pub fn drop_last(&mut self, record_bytes: u64) {
        self.len -= record_bytes;
        self.next_seq = self.next_seq.wrapping_sub(1);
        if let Some(direct) = &mut self.direct {
            // The record began at the new `len`, so the bytes before it in its block are
            // still the file's; if they cannot be read, the buffered way needs none.
            match read_tail(&self.file, self.len) {
                Ok(tail) => direct.tail = tail,
                Err(_) => self.direct = None,
            }
        }
        self.wipe_next();
    }

    /// True when records were appended since the last checkpoint.
    pub fn holds_records(&self) -> bool {
        self.appended
    }

    /// After a checkpoint that stored [`Wal::start_after_checkpoint`]: every record is in
    /// the state file now, so the log starts over at its first byte, with that sequence
    /// number. The file keeps its size; the old records in it no longer read as the log.
    pub fn emptied(&mut self) {
        self.last_checkpoint = Instant::now();
        self.appended = false;
        self.len = 0;
        if let Some(direct) = &mut self.direct {
            direct.tail.clear();
        }
        self.next_seq = self.start_after_checkpoint;
        self.first = Some(self.next_seq);
        self.start_after_checkpoint = random_start();
    }
}

/// Applies records, in order, to the tables of one write transaction.
pub struct Replayer<'t> {
    seen: Table<'t, &'static str, u64>,
    conversations: Table<'t, &'static str, &'static [u8]>,
    outbox: Table<'t, (&'static str, u64), &'static [u8]>,
    dead_letters: Table<'t, (&'static str, u64), &'static [u8]>,
    counters: Table<'t, &'static str, u64>,
    cursors: Table<'t, &'static str, &'static [u8]>,
    pending: Table<'t, (&'static str, &'static str), &'static [u8]>,
    oauth: Table<'t, &'static str, &'static [u8]>,
    wal_path: PathBuf,
    state_path: &'t Path,
}

impl<'t> Replayer<'t> {
    pub fn new(txn: &'t redb::WriteTransaction, path: &'t Path) -> Result<Self, super::StoreError> {
        let db_err = |e: &dyn std::fmt::Display| super::db_err(path, e);
        Ok(Replayer {
            seen: txn.open_table(SEEN_EVENTS).map_err(|e| db_err(&e))?,
            conversations: txn.open_table(CONVERSATIONS).map_err(|e| db_err(&e))?,
            outbox: txn.open_table(OUTBOX).map_err(|e| db_err(&e))?,
            dead_letters: txn.open_table(DEAD_LETTERS).map_err(|e| db_err(&e))?,
            counters: txn.open_table(COUNTERS).map_err(|e| db_err(&e))?,
            cursors: txn.open_table(CURSORS).map_err(|e| db_err(&e))?,
            pending: txn.open_table(PENDING_PREVIEWS).map_err(|e| db_err(&e))?,
            oauth: txn.open_table(OAUTH_GRANTS).map_err(|e| db_err(&e))?,
            wal_path: path_for(path),
            state_path: path,
        })
    }

    /// Applies the changes of record `seq`.
    pub fn apply(&mut self, seq: u64, body: &[u8]) -> Result<(), super::StoreError> {
        let malformed = |message: &str| {
            super::StoreError::Wal(WalError::Malformed {
                path: self.wal_path.clone(),
                seq,
                message: message.to_string(),
            })
        };
        let mut rest = body;
        while !rest.is_empty() {
            let (op, table, key, value);
            (op, table, key, rest) = take_op(rest).ok_or_else(|| malformed("truncated change"))?;
            if op == PUT {
                (value, rest) = take_bytes(rest).ok_or_else(|| malformed("truncated value"))?;
            } else if op == DEL {
                value = &[];
            } else {
                return Err(malformed("unknown change"));
            }
            let Some(id) = TableId::from_u8(table) else {
                return Err(super::StoreError::Wal(WalError::UnknownTable {
                    path: self.wal_path.clone(),
                    seq,
                    table,
                }));
            };
            let change = Change {
                put: op == PUT,
                key,
                value,
            };
            let applied = match id {
                TableId::Seen => change.apply(&mut self.seen),
                TableId::Conversations => change.apply(&mut self.conversations),
                TableId::Outbox => change.apply(&mut self.outbox),
                TableId::DeadLetters => change.apply(&mut self.dead_letters),
                TableId::Counters => change.apply(&mut self.counters),
                TableId::Cursors => change.apply(&mut self.cursors),
                TableId::PendingPreviews => change.apply(&mut self.pending),
                TableId::OAuthGrants => change.apply(&mut self.oauth),
            };
            applied.map_err(|e| match e {
                Applied::Storage(e) => super::db_err(self.state_path, e),
                Applied::Width(what) => malformed(what),
            })?;
        }
        Ok(())
    }
}

fn take_bytes(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    let data = bytes.get(4..4 + len)?;
    Some((data, bytes.get(4 + len..)?))
}

fn take_op(bytes: &[u8]) -> Option<(u8, u8, &[u8], &[u8])> {
    let (&op, rest) = bytes.split_first()?;
    let (&table, rest) = rest.split_first()?;
    let (key, rest) = take_bytes(rest)?;
    Some((op, table, key, rest))
}

/// One recorded change, as bytes.
struct Change<'b> {
    put: bool,
    key: &'b [u8],
    value: &'b [u8],
}

enum Applied {
    Storage(StorageError),
    Width(&'static str),
}

impl Change<'_> {
    fn apply<K: redb::Key + 'static, V: redb::Value + 'static>(
        &self,
        table: &mut Table<'_, K, V>,
    ) -> Result<(), Applied> {
        // redb's fixed-width types (u64) read their bytes without a check.
        if K::fixed_width().is_some_and(|w| w != self.key.len()) {
            return Err(Applied::Width("key of the wrong width"));
        }
        if self.put && V::fixed_width().is_some_and(|w| w != self.value.len()) {
            return Err(Applied::Width("value of the wrong width"));
        }
        let key = K::from_bytes(self.key);
        if self.put {
            table
                .insert(key, V::from_bytes(self.value))
                .map_err(Applied::Storage)?;
        } else {
            table.remove(key).map_err(Applied::Storage)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A log of `n` records, each putting key `k{i}` and removing key `gone{i}`.
    fn log_of(n: u64, first_seq: u64) -> Vec<u8> {
        let mut bytes = Vec::new();
        for i in 0..n {
            let mut record = vec![0; HEADER_BYTES];
            put_bytes(
                &mut record,
                TableId::Cursors,
                format!("k{i}").as_bytes(),
                b"v",
            );
            del_bytes(&mut record, TableId::Seen, format!("gone{i}").as_bytes());
            let seq = first_seq + i;
            let body_len = record.len() - HEADER_BYTES;
            let sum = crc(seq, &record[HEADER_BYTES..]);
            record[0..4].copy_from_slice(&MAGIC);
            record[4..8].copy_from_slice(&(body_len as u32).to_le_bytes());
            record[8..16].copy_from_slice(&seq.to_le_bytes());
            record[16..20].copy_from_slice(&sum.to_le_bytes());
            bytes.extend_from_slice(&record);
        }
        bytes
    }

    #[test]
    fn records_read_back_in_order() {
        let back = read_records(&log_of(3, 41), Some(41));
        assert_eq!(
            back.records.iter().map(|r| r.seq).collect::<Vec<_>>(),
            [41, 42, 43]
        );
        assert!(!back.found.torn && !back.found.incomplete);
        assert_eq!(back.found.bytes, log_of(3, 41).len() as u64);
        let (op, table, key, rest) = take_op(&back.records[1].body).unwrap();
        assert_eq!((op, table, key), (PUT, TableId::Cursors as u8, &b"k1"[..]));
        let (value, rest) = take_bytes(rest).unwrap();
        assert_eq!(value, b"v");
        let (op, table, key, rest) = take_op(rest).unwrap();
        assert_eq!((op, table, key), (DEL, TableId::Seen as u8, &b"gone1"[..]));
        assert!(rest.is_empty());
    }

    #[test]
    fn only_records_from_the_stored_start_are_the_log() {
        // Records 5, 6, then 2 (from before a checkpoint), then zeros.
        let mut bytes = log_of(2, 5);
        let live = bytes.len() as u64;
        bytes.extend_from_slice(&log_of(1, 2));
        bytes.extend_from_slice(&[0; 64]);
        let back = read_records(&bytes, Some(5));
        assert_eq!(back.records.len(), 2);
        assert_eq!(back.found.bytes, live);
        assert!(!back.found.torn, "an older record is not a torn one");
        // A checkpoint stored another start: none of it is the log.
        let back = read_records(&bytes, Some(7));
        assert!(back.records.is_empty() && !back.found.torn);
        // Without a stored start (an older build's file), any first number goes.
        assert_eq!(read_records(&bytes, None).records.len(), 2);
    }

    #[test]
    fn reading_stops_at_a_changed_byte() {
        let bytes = log_of(3, 0);
        let one = bytes.len() / 3;
        for at in one..2 * one {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x01;
            let back = read_records(&damaged, Some(0));
            assert_eq!(back.records.len(), 1, "byte {at}");
        }
        // A changed byte in the body (not the header) is a torn record.
        let mut damaged = bytes.clone();
        damaged[one + HEADER_BYTES + 1] ^= 0x01;
        assert!(read_records(&damaged, Some(0)).found.torn);
    }

    /// A log beside a state file that does not exist yet, starting at `start`.
    fn new_log(start: u64) -> (tempfile::TempDir, PathBuf, Wal, Found) {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("s.redb");
        let (wal, found) = Wal::open(&state, LogStart::At(start)).unwrap();
        (dir, state, wal, found)
    }

    /// The records `wal` found on open, as [`Wal::replay`] hands them out.
    fn replayed(wal: &Wal) -> Vec<Record> {
        let mut records = Vec::new();
        wal.replay(|seq, body| {
            records.push(Record {
                seq,
                body: body.to_vec(),
            });
            Ok::<(), WalError>(())
        })
        .unwrap();
        records
    }

    fn seqs(records: &[Record]) -> Vec<u64> {
        records.iter().map(|r| r.seq).collect()
    }

    /// `n` records of one change each, appended to `wal`.
    fn append_n(wal: &mut Wal, n: u8) {
        for i in 0..n {
            let mut record = wal.capture();
            put_bytes(&mut record, TableId::Counters, &[i], &[0; 8]);
            wal.append(&mut record).unwrap();
        }
    }

    #[test]
    fn appends_survive_reopen_and_a_torn_tail_is_dropped() {
        let (_dir, state, mut wal, found) = new_log(100);
        assert_eq!(found.records, 0);
        append_n(&mut wal, 3);
        let end = wal.len;
        drop(wal);
        // The file grew by a step of zeros, not by the records' length.
        let mut bytes = std::fs::read(path_for(&state)).unwrap();
        assert_eq!(bytes.len() as u64, GROW_BYTES);
        // A fourth record, cut short by a crash.
        let fourth = log_of(1, 103);
        bytes[end as usize..end as usize + 25].copy_from_slice(&fourth[..25]);
        std::fs::write(path_for(&state), &bytes).unwrap();

        let (mut wal, found) = Wal::open(&state, LogStart::At(100)).unwrap();
        assert_eq!(seqs(&replayed(&wal)), [100, 101, 102]);
        assert!(found.torn);
        // The next record overwrites the torn one and follows record 102.
        append_n(&mut wal, 1);
        let back = read_records(&std::fs::read(path_for(&state)).unwrap(), Some(100));
        assert_eq!(
            back.records.iter().map(|r| r.seq).collect::<Vec<_>>(),
            [100, 101, 102, 103]
        );
        // After a checkpoint the log starts over at the first byte, from a new number, and
        // the records of before are no longer read as the log.
        let start = wal.start_after_checkpoint();
        wal.emptied();
        append_n(&mut wal, 1);
        drop(wal);
        let (wal, found) = Wal::open(&state, LogStart::At(start)).unwrap();
        assert_eq!(found.records, 1);
        assert_eq!(seqs(&replayed(&wal)), [start]);
        assert!(!found.torn);
        let (wal, found) = Wal::open(&state, LogStart::At(100)).unwrap();
        assert_eq!(found.records, 0);
        assert!(replayed(&wal).is_empty());
    }

    #[test]
    fn a_log_beside_a_new_state_file_is_ignored() {
        let (_dir, state, mut wal, _) = new_log(0);
        append_n(&mut wal, 2);
        drop(wal);
        let (_, found) = Wal::open(&state, LogStart::NewState).unwrap();
        assert_eq!(found.records, 0);
        let (_, found) = Wal::open(&state, LogStart::Unrecorded).unwrap();
        assert_eq!(found.records, 2);
    }

    #[test]
    fn a_long_log_is_read_whole_in_pieces() {
        let (_dir, state, mut wal, _) = new_log(9);
        // Records larger than a piece and many small ones, across several growth steps.
        for i in 0..8u8 {
            let mut record = wal.capture();
            put_bytes(&mut record, TableId::Cursors, &[i], &vec![i; 300_000]);
            wal.append(&mut record).unwrap();
        }
        append_n(&mut wal, 200);
        let end = wal.len;
        drop(wal);
        assert!(std::fs::metadata(path_for(&state)).unwrap().len() > 2 * GROW_BYTES);
        let (wal, found) = Wal::open(&state, LogStart::At(9)).unwrap();
        assert_eq!(found.records, 208);
        assert_eq!(wal.len, end);
        assert!(!found.torn);
        let records = replayed(&wal);
        assert_eq!(seqs(&records), (9..217).collect::<Vec<_>>());
        assert_eq!(records[7].body.len(), 2 + 4 + 1 + 4 + 300_000);
        assert!(records[7].body.ends_with(&[7; 100]));
    }

    #[test]
    fn a_failed_commit_wipes_its_record() {
        let (_dir, state, mut wal, _) = new_log(0);
        append_n(&mut wal, 2);
        let mut record = wal.capture();
        put_bytes(&mut record, TableId::Counters, b"x", &[0; 8]);
        wal.append(&mut record).unwrap();
        wal.drop_last(record.len() as u64);
        let back = read_records(&std::fs::read(path_for(&state)).unwrap(), Some(0));
        assert_eq!(back.records.len(), 2);
        // The next record takes its place and number.
        append_n(&mut wal, 1);
        let back = read_records(&std::fs::read(path_for(&state)).unwrap(), Some(0));
        assert_eq!(back.records.last().map(|r| r.seq), Some(2));
    }

    /// What a step of [`direct_and_buffered_writes_leave_the_same_log`] does.
    #[derive(Debug, Clone)]
    enum Step {
        /// Appends a record with a value of this many bytes.
        Append(usize),
        /// Appends one, then takes it back as a failed commit would.
        AppendAndDrop(usize),
        /// Closes the log and opens it again (the tail block is read back from the file).
        Reopen,
        /// A checkpoint: the log starts over at its first byte, over the old records.
        Checkpoint,
        /// Closes the log, cuts or extends its file to this many bytes past the live log's
        /// end (a length that is no multiple of a block, as a log of an older build can
        /// have), and opens it again.
        ReopenUneven(u16),
    }

    fn any_step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        // Values around a block, so records start and end anywhere in one and cross it.
        // Now and then one large enough that a few take the file past a `GROW_BYTES` step.
        let size = prop_oneof![
            3 => 0usize..64,
            3 => 4000usize..4200,
            3 => 0usize..20_000,
            1 => 100_000usize..400_000,
        ];
        prop_oneof![
            6 => size.clone().prop_map(Step::Append),
            1 => size.prop_map(Step::AppendAndDrop),
            1 => Just(Step::Reopen),
            1 => Just(Step::Checkpoint),
            1 => (1u16..4096).prop_map(Step::ReopenUneven),
        ]
    }

    /// True when the filesystem of `state`'s folder takes `O_DIRECT`.
    fn direct_here(state: &Path) -> bool {
        let probe = state.with_extension("probe");
        std::fs::write(&probe, b"").unwrap();
        Direct::open(&probe).is_some()
    }

    /// Runs `steps` on a fresh log, written directly or through the page cache, and returns
    /// the live log's length and its records as a reopen finds them.
    fn run_steps(steps: &[Step], direct: bool) -> (usize, Vec<Record>) {
        let (_dir, state, mut wal, _) = new_log(50);
        let mut start = 50;
        let open = |state: &Path, start: u64| {
            let (mut wal, _) = Wal::open(state, LogStart::At(start)).unwrap();
            if !direct {
                wal.direct = None;
            }
            wal
        };
        if !direct {
            wal.direct = None;
        }
        let record = |wal: &mut Wal, i: usize, size: usize| {
            let mut record = wal.capture();
            put_bytes(
                &mut record,
                TableId::Cursors,
                &i.to_le_bytes(),
                &vec![i as u8; size],
            );
            record
        };
        for (i, step) in steps.iter().enumerate() {
            match *step {
                Step::Append(size) => {
                    let mut r = record(&mut wal, i, size);
                    wal.append(&mut r).unwrap();
                }
                Step::AppendAndDrop(size) => {
                    let mut r = record(&mut wal, i, size);
                    wal.append(&mut r).unwrap();
                    wal.drop_last(r.len() as u64);
                }
                Step::Reopen => {
                    drop(wal);
                    wal = open(&state, start);
                }
                Step::Checkpoint => {
                    start = wal.start_after_checkpoint();
                    wal.emptied();
                }
                Step::ReopenUneven(past) => {
                    let mut to = wal.len + u64::from(past);
                    if to % BLOCK as u64 == 0 {
                        to += 1;
                    }
                    drop(wal);
                    let file = OpenOptions::new()
                        .write(true)
                        .open(path_for(&state))
                        .unwrap();
                    file.set_len(to).unwrap();
                    drop(file);
                    wal = open(&state, start);
                }
            }
            // Neither way writes past what the log counts as allocated: no append changes
            // the file's size or block map but the growth that is synced with it.
            let on_disk = std::fs::metadata(path_for(&state)).unwrap().len();
            assert_eq!(on_disk, wal.allocated, "after step {i}: {step:?}");
        }
        let live = wal.len as usize;
        // Still writing directly: nothing fell back to the page cache on the way.
        assert_eq!(wal.direct.is_some(), direct && direct_here(&state));
        drop(wal);
        (live, replayed(&open(&state, start)))
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        #[test]
        fn direct_and_buffered_writes_leave_the_same_log(
            steps in proptest::collection::vec(any_step(), 1..24),
        ) {
            // The sequence numbers differ (each checkpoint draws a random start), so the
            // records are compared by their bodies, and the logs by their length: every
            // byte of it read back as a whole record.
            let (direct_len, direct) = run_steps(&steps, true);
            let (buffered_len, buffered) = run_steps(&steps, false);
            let bodies = |r: &[Record]| r.iter().map(|r| r.body.clone()).collect::<Vec<_>>();
            proptest::prop_assert_eq!(bodies(&direct), bodies(&buffered));
            proptest::prop_assert_eq!(direct_len, buffered_len);
            let kept: usize = direct.iter().map(|r| HEADER_BYTES + r.body.len()).sum();
            proptest::prop_assert_eq!(kept, direct_len);
            // Only what the steps left: appends since the last checkpoint, but those dropped.
            let since = steps
                .iter()
                .rposition(|s| matches!(s, Step::Checkpoint))
                .map_or(0, |at| at + 1);
            let appended = steps[since..]
                .iter()
                .filter(|s| matches!(s, Step::Append(_)))
                .count();
            proptest::prop_assert_eq!(direct.len(), appended);
        }
    }

    /// A record of `size` bytes of `fill`.
    fn record_of(wal: &mut Wal, fill: u8, size: usize) -> Vec<u8> {
        let mut record = wal.capture();
        put_bytes(&mut record, TableId::Cursors, &[fill], &vec![fill; size]);
        record
    }

    #[test]
    fn a_direct_write_the_filesystem_refuses_goes_the_buffered_way_and_loses_nothing() {
        let (_dir, state, mut wal, _) = new_log(0);
        if !direct_here(&state) {
            return; // nothing written directly here to fall back from
        }
        let mut first = record_of(&mut wal, 1, 3000);
        wal.append(&mut first).unwrap();
        // The device wants larger blocks than ours: this record and all later ones go
        // through the page cache, after the record written directly.
        wal.direct.as_mut().unwrap().fail_next = Some(libc::EINVAL);
        let mut second = record_of(&mut wal, 2, 3000);
        wal.append(&mut second).unwrap();
        assert!(wal.direct.is_none());
        let mut third = record_of(&mut wal, 3, 10);
        wal.append(&mut third).unwrap();
        drop(wal);
        let (wal, found) = Wal::open(&state, LogStart::At(0)).unwrap();
        assert_eq!(found.records, 3);
        let bodies: Vec<u8> = replayed(&wal)
            .iter()
            .map(|r| r.body[r.body.len() - 1])
            .collect();
        assert_eq!(bodies, [1, 2, 3]);
    }

    #[test]
    fn a_failed_direct_write_is_wiped_and_the_next_record_takes_its_place() {
        let (_dir, state, mut wal, _) = new_log(0);
        if !direct_here(&state) {
            return;
        }
        let mut first = record_of(&mut wal, 1, 5000);
        wal.append(&mut first).unwrap();
        let (len, tail) = (wal.len, wal.direct.as_ref().unwrap().tail.clone());
        wal.direct.as_mut().unwrap().fail_next = Some(libc::EIO);
        let mut failed = record_of(&mut wal, 2, 100);
        assert!(wal.append(&mut failed).is_err());
        // Nothing moved: the log still ends after the first record, written directly.
        assert_eq!(wal.len, len);
        assert_eq!(wal.direct.as_ref().unwrap().tail, tail);
        let mut next = record_of(&mut wal, 3, 100);
        wal.append(&mut next).unwrap();
        assert!(wal.direct.is_some());
        drop(wal);
        let (wal, found) = Wal::open(&state, LogStart::At(0)).unwrap();
        let back = replayed(&wal);
        assert_eq!(found.records, 2);
        assert_eq!(back[0].seq, 0);
        assert_eq!(
            back[1].seq, 1,
            "the record after the failed one takes its number"
        );
        assert_eq!(back[1].body[back[1].body.len() - 1], 3);
    }

    #[test]
    fn records_are_written_directly_where_the_filesystem_allows() {
        let (_dir, state, mut wal, _) = new_log(0);
        assert_eq!(wal.direct.is_some(), direct_here(&state));
        // A record that ends inside the second block: the tail keeps that block's bytes.
        let mut record = wal.capture();
        put_bytes(&mut record, TableId::Cursors, b"k", &[3; 5000]);
        wal.append(&mut record).unwrap();
        // Still direct after the write: it did not fall back to the page cache.
        assert_eq!(wal.direct.is_some(), direct_here(&state));
        if let Some(direct) = &wal.direct {
            assert_eq!(direct.tail.len(), record.len() - BLOCK);
            assert_eq!(direct.tail[..], record[BLOCK..]);
        }
        let bytes = std::fs::read(path_for(&state)).unwrap();
        assert_eq!(bytes[..record.len()], record[..]);
        assert!(bytes[record.len()..].iter().all(|&b| b == 0));
    }

    proptest::proptest! {
        #[test]
        fn any_cut_of_a_log_reads_as_a_prefix(n in 0u64..6, cut in 0usize..400) {
            let bytes = log_of(n, 7);
            let cut = cut.min(bytes.len());
            let back = read_records(&bytes[..cut], Some(7));
            let whole = read_records(&bytes, Some(7));
            proptest::prop_assert_eq!(&back.records[..], &whole.records[..back.records.len()]);
            let kept: usize = back.records.iter().map(|r| HEADER_BYTES + r.body.len()).sum();
            proptest::prop_assert_eq!(kept as u64, back.found.bytes);
            // Bytes left after the last whole record are a torn record.
            proptest::prop_assert_eq!(back.found.torn, (kept as u64) < cut as u64);
        }

        #[test]
        fn a_log_written_over_an_older_one_reads_as_the_newer(
            old in 0u64..8, new in 0u64..8, old_start in 0u64..1000, new_start in 0u64..1000,
        ) {
            proptest::prop_assume!(old_start.abs_diff(new_start) > 16);
            let mut bytes = log_of(old, old_start);
            bytes.resize(bytes.len() + 100, 0);
            let newer = log_of(new, new_start);
            if newer.len() > bytes.len() {
                bytes.resize(newer.len(), 0);
            }
            bytes[..newer.len()].copy_from_slice(&newer);
            let back = read_records(&bytes, Some(new_start));
            proptest::prop_assert_eq!(back.records.len() as u64, new);
            proptest::prop_assert!(!back.found.torn);
        }
    }
}
