//! The redo log beside the state file (`<state file>-wal`): what makes a commit durable
//! without a durable redb commit.
//!
//! A durable redb commit writes every page a transaction touched, scattered over the file,
//! and waits for `fdatasync`: about 0.45 ms, 15 `pwrite`s and 53 KiB even for one event
//! (`writer_cost` in BENCHMARKS.md). So [`super::Store::write`] records the transaction's changes here
//! instead: every insert and remove, as the bytes redb would store, appended as one record
//! with one write and one `fdatasync`. Only then is the redb transaction committed, without
//! its own sync (`Durability::None`), which makes it visible to readers: nothing a reader
//! (a sink) sees can be lost in a crash, and no caller hears `Ok` before its record is on
//! disk.
//!
//! A checkpoint is a durable redb commit, which makes every commit before it durable in the
//! state file itself; the log is then emptied. One is taken every [`CHECKPOINT_EVERY`] or
//! [`CHECKPOINT_BYTES`] of log, and when the store is closed. After a crash, redb reopens
//! at its last checkpoint and [`replay`] applies the log's records on top of it, in order.
//!
//! Records hold whole values ("key K of table T is now V", "key K is gone"), so replaying a
//! record whose changes the checkpoint already has changes nothing: a crash between a
//! checkpoint and the emptying of the log is harmless. A record is framed by its length,
//! a sequence number one above the record before it, and a CRC-32 of both and the body: a
//! record torn by a crash (its `fdatasync` never returned, so no caller was answered) fails
//! the check, and reading stops there.

use std::borrow::Borrow;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::ops::{Deref, RangeBounds};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use redb::{AccessGuard, StorageError, Table};

use super::tables::*;

/// Log bytes after which the next write is a checkpoint. Bounds the log file, and the
/// replay after a crash (at most this much to read and apply before the daemon is ready).
pub const CHECKPOINT_BYTES: u64 = 16 << 20;

/// Time after which the next write is a checkpoint. Bounds how much work a crash leaves to
/// replay, and how long redb keeps the pages freed since the last checkpoint (a
/// non-durable commit cannot reuse them).
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

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

/// A table of a write transaction whose changes are also recorded in the transaction's
/// capture. Reads go to the table (`Deref`); the only ways to change it are the methods
/// here, so no change can miss the log.
pub struct Logged<'s, 't, K: redb::Key + 'static, V: redb::Value + 'static> {
    pub(super) table: &'s mut Table<'t, K, V>,
    pub(super) id: TableId,
    pub(super) capture: &'s mut Capture,
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
    /// Bytes of whole records in the file; the next record goes here.
    len: u64,
    /// The sequence number of the next record.
    next_seq: u64,
    last_checkpoint: Instant,
    /// A record was appended since the last checkpoint (records found on open do not
    /// count: they are only ever checkpointed by a successful replay).
    appended: bool,
    /// The last transaction's capture buffer, reused by the next one.
    spare: Vec<u8>,
}

/// The log's path: the state file's, with `-wal` appended.
pub fn path_for(state: &Path) -> PathBuf {
    let mut name = state.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

/// One record read back: its sequence number and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    pub body: Vec<u8>,
}

/// What reading the log found.
#[derive(Debug, Default)]
pub struct ReadBack {
    pub records: Vec<Record>,
    /// Bytes after the last whole record (a record torn by a crash), when any.
    pub torn_bytes: u64,
}

fn crc(seq: u64, body: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&(body.len() as u32).to_le_bytes());
    h.update(&seq.to_le_bytes());
    h.update(body);
    h.finalize()
}

/// The whole records at the start of `bytes`, in order. Stops at the first that is
/// incomplete, fails its CRC, or does not follow the one before it.
pub fn read_records(bytes: &[u8]) -> ReadBack {
    let mut records: Vec<Record> = Vec::new();
    let mut at = 0usize;
    while let Some(header) = bytes.get(at..at + HEADER_BYTES) {
        let word = |r: std::ops::Range<usize>| header.get(r).unwrap_or_default();
        if word(0..4) != MAGIC {
            break;
        }
        let len = u32::from_le_bytes(word(4..8).try_into().unwrap_or_default()) as usize;
        let seq = u64::from_le_bytes(word(8..16).try_into().unwrap_or_default());
        let sum = u32::from_le_bytes(word(16..20).try_into().unwrap_or_default());
        let Some(body) = bytes.get(at + HEADER_BYTES..at + HEADER_BYTES + len) else {
            break;
        };
        if crc(seq, body) != sum {
            break;
        }
        if records.last().is_some_and(|r| r.seq.wrapping_add(1) != seq) {
            break;
        }
        records.push(Record {
            seq,
            body: body.to_vec(),
        });
        at += HEADER_BYTES + len;
    }
    ReadBack {
        records,
        torn_bytes: (bytes.len() - at) as u64,
    }
}

impl Wal {
    /// Opens (or creates, mode 0600) the log of `state` and reads what it holds.
    pub fn open(state: &Path) -> Result<(Wal, ReadBack), WalError> {
        let path = path_for(state);
        let io = |source| WalError::Io {
            path: path.clone(),
            source,
        };
        let created = !path.exists();
        let mut file = OpenOptions::new()
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
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io)?;
        let back = read_records(&bytes);
        let next_seq = back.records.last().map_or(0, |r| r.seq.wrapping_add(1));
        let wal = Wal {
            file,
            len: bytes.len() as u64 - back.torn_bytes,
            path,
            next_seq,
            last_checkpoint: Instant::now(),
            appended: false,
            spare: Vec::new(),
        };
        Ok((wal, back))
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

    /// True when the next write should be a checkpoint.
    pub fn checkpoint_due(&self) -> bool {
        self.len >= CHECKPOINT_BYTES || self.last_checkpoint.elapsed() >= CHECKPOINT_EVERY
    }

    /// Writes `capture` (made by [`capture`]) as the next record and waits until it is on
    /// disk. On failure the file is cut back to the records before it, so a record whose
    /// transaction was not committed is never replayed.
    pub fn append(&mut self, capture: &mut [u8]) -> Result<(), WalError> {
        let body_len = capture.len() - HEADER_BYTES;
        let (header, body) = capture.split_at_mut(HEADER_BYTES);
        let seq = self.next_seq;
        header[0..4].copy_from_slice(&MAGIC);
        header[4..8].copy_from_slice(&(body_len as u32).to_le_bytes());
        header[8..16].copy_from_slice(&seq.to_le_bytes());
        header[16..20].copy_from_slice(&crc(seq, body).to_le_bytes());
        let written = self
            .file
            .write_all_at(capture, self.len)
            .and_then(|()| self.file.sync_data());
        match written {
            Ok(()) => {
                self.len += capture.len() as u64;
                self.next_seq = seq.wrapping_add(1);
                self.appended = true;
                Ok(())
            }
            Err(source) => {
                self.cut_to_len();
                Err(WalError::Io {
                    path: self.path.clone(),
                    source,
                })
            }
        }
    }

    /// Cuts the file back to its whole records (`len`).
    fn cut_to_len(&mut self) {
        // Best effort: if even this fails, the record stays, and a crash before the next
        // checkpoint would replay a transaction its caller was told failed.
        let _ = self.file.set_len(self.len);
        let _ = self.file.sync_data();
    }

    /// Forgets the record [`Wal::append`] just wrote, when its transaction then failed to
    /// commit.
    pub fn drop_last(&mut self, record_bytes: u64) {
        self.len -= record_bytes;
        self.next_seq = self.next_seq.wrapping_sub(1);
        self.cut_to_len();
    }

    /// True when records were appended since the last checkpoint.
    pub fn holds_records(&self) -> bool {
        self.appended
    }

    /// After a checkpoint: every record is in the state file now, so the log starts over.
    /// Sequence numbers go on rising, so a record left behind by a failed or lost
    /// truncation never reads as following a newer one. If the file cannot be cut, new
    /// records follow the old ones, and a replay applies both (harmless, see the module
    /// notes).
    pub fn emptied(&mut self) {
        self.last_checkpoint = Instant::now();
        self.appended = false;
        match self.file.set_len(0) {
            Ok(()) => self.len = 0,
            Err(error) => tracing::warn!(
                log = %self.path.display(),
                %error,
                "cannot empty the redo log after a checkpoint; it keeps growing until the next one"
            ),
        }
    }
}

/// Applies the changes of `records`, in order, to the tables of `txn`.
pub fn replay(
    txn: &redb::WriteTransaction,
    path: &Path,
    records: &[Record],
) -> Result<(), super::StoreError> {
    let db_err = |e: &dyn std::fmt::Display| super::db_err(path, e);
    let mut seen = txn.open_table(SEEN_EVENTS).map_err(|e| db_err(&e))?;
    let mut conversations = txn.open_table(CONVERSATIONS).map_err(|e| db_err(&e))?;
    let mut outbox = txn.open_table(OUTBOX).map_err(|e| db_err(&e))?;
    let mut dead_letters = txn.open_table(DEAD_LETTERS).map_err(|e| db_err(&e))?;
    let mut counters = txn.open_table(COUNTERS).map_err(|e| db_err(&e))?;
    let mut cursors = txn.open_table(CURSORS).map_err(|e| db_err(&e))?;
    let mut pending = txn.open_table(PENDING_PREVIEWS).map_err(|e| db_err(&e))?;
    let mut oauth = txn.open_table(OAUTH_GRANTS).map_err(|e| db_err(&e))?;
    let wal_path = path_for(path);
    for record in records {
        let malformed = |message: &str| {
            super::StoreError::Wal(WalError::Malformed {
                path: wal_path.clone(),
                seq: record.seq,
                message: message.to_string(),
            })
        };
        let mut rest = record.body.as_slice();
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
                    path: wal_path.clone(),
                    seq: record.seq,
                    table,
                }));
            };
            let change = Change {
                put: op == PUT,
                key,
                value,
            };
            let applied = match id {
                TableId::Seen => change.apply(&mut seen),
                TableId::Conversations => change.apply(&mut conversations),
                TableId::Outbox => change.apply(&mut outbox),
                TableId::DeadLetters => change.apply(&mut dead_letters),
                TableId::Counters => change.apply(&mut counters),
                TableId::Cursors => change.apply(&mut cursors),
                TableId::PendingPreviews => change.apply(&mut pending),
                TableId::OAuthGrants => change.apply(&mut oauth),
            };
            applied.map_err(|e| match e {
                Applied::Storage(e) => db_err(&e),
                Applied::Width(what) => malformed(what),
            })?;
        }
    }
    Ok(())
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
        let back = read_records(&log_of(3, 41));
        assert_eq!(
            back.records.iter().map(|r| r.seq).collect::<Vec<_>>(),
            [41, 42, 43]
        );
        assert_eq!(back.torn_bytes, 0);
        let (op, table, key, rest) = take_op(&back.records[1].body).unwrap();
        assert_eq!((op, table, key), (PUT, TableId::Cursors as u8, &b"k1"[..]));
        let (value, rest) = take_bytes(rest).unwrap();
        assert_eq!(value, b"v");
        let (op, table, key, rest) = take_op(rest).unwrap();
        assert_eq!((op, table, key), (DEL, TableId::Seen as u8, &b"gone1"[..]));
        assert!(rest.is_empty());
    }

    #[test]
    fn reading_stops_at_a_record_out_of_sequence() {
        // Records 5, 6, then a stale 2 (left by a truncation the disk lost).
        let mut bytes = log_of(2, 5);
        let stale = log_of(1, 2);
        bytes.extend_from_slice(&stale);
        let back = read_records(&bytes);
        assert_eq!(back.records.len(), 2);
        assert_eq!(back.torn_bytes, stale.len() as u64);
    }

    #[test]
    fn reading_stops_at_a_changed_byte() {
        let bytes = log_of(3, 0);
        let one = bytes.len() / 3;
        for at in one..2 * one {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x01;
            let back = read_records(&damaged);
            assert_eq!(back.records.len(), 1, "byte {at}");
        }
    }

    #[test]
    fn appends_survive_reopen_and_a_torn_tail_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("s.redb");
        let (mut wal, back) = Wal::open(&state).unwrap();
        assert!(back.records.is_empty());
        for i in 0..3u8 {
            let mut record = wal.capture();
            put_bytes(&mut record, TableId::Counters, &[i], &[0; 8]);
            wal.append(&mut record).unwrap();
        }
        drop(wal);
        let whole = std::fs::read(path_for(&state)).unwrap();
        // A fourth record, cut short by a crash.
        let mut torn = whole.clone();
        torn.extend_from_slice(&log_of(1, 3)[..25]);
        std::fs::write(path_for(&state), &torn).unwrap();

        let (mut wal, back) = Wal::open(&state).unwrap();
        assert_eq!(
            back.records.iter().map(|r| r.seq).collect::<Vec<_>>(),
            [0, 1, 2]
        );
        assert_eq!(back.torn_bytes, 25);
        // The next record overwrites the torn one and follows record 2.
        let mut record = wal.capture();
        put_bytes(&mut record, TableId::Counters, &[9], &[0; 8]);
        wal.append(&mut record).unwrap();
        let back = read_records(&std::fs::read(path_for(&state)).unwrap());
        assert_eq!(
            back.records.iter().map(|r| r.seq).collect::<Vec<_>>(),
            [0, 1, 2, 3]
        );
        // Emptied after a checkpoint, with sequence numbers going on.
        wal.emptied();
        assert_eq!(std::fs::metadata(path_for(&state)).unwrap().len(), 0);
        let mut empty = wal.capture();
        wal.append(&mut empty).unwrap();
        let back = read_records(&std::fs::read(path_for(&state)).unwrap());
        assert_eq!(back.records[0].seq, 4);
    }

    proptest::proptest! {
        #[test]
        fn any_cut_of_a_log_reads_as_a_prefix(n in 0u64..6, cut in 0usize..400) {
            let bytes = log_of(n, 7);
            let cut = cut.min(bytes.len());
            let back = read_records(&bytes[..cut]);
            let whole = read_records(&bytes);
            proptest::prop_assert_eq!(&back.records[..], &whole.records[..back.records.len()]);
            let kept: usize = back.records.iter().map(|r| HEADER_BYTES + r.body.len()).sum();
            proptest::prop_assert_eq!(kept as u64 + back.torn_bytes, cut as u64);
        }
    }
}
