//! Committed changes that are kept out of redb until the next checkpoint: outbox entries,
//! counters, seen marks and conversation states.
//!
//! Why: at saturation a healthy sink acknowledges an entry a few milliseconds after it was
//! queued, so an entry inserted into redb's outbox table at one commit was removed from it
//! a commit or two later: about 10 of a commit's 35 page writes and an eighth of the
//! writer's instructions went to rows that never reached a checkpoint (BENCHMARKS.md). The
//! counters table cost another 3 pages a commit for a handful of numbers. The redo log
//! already makes every change durable (its record is synced before the commit returns), so
//! these changes are recorded in the log (as "key K is now V" and "key K is gone", which
//! the replay applies as it applies any other) and then held here instead of in redb.
//!
//! Seen marks and conversation states are held for another reason: they are what every
//! event writes into redb, so each ingest commit inserted two B-tree rows per event and
//! then committed redb's transaction (its page allocation, checksums and table roots),
//! whether it carried one event or 25. Held here, an ingest commit changes nothing in redb
//! (its record in the log is the commit) and redb's transaction is dropped. The writer
//! moves them into redb a few hundred rows per commit without a sync
//! ([`super::Store::write_back_held`]: the rows stay in the log, so a crash still replays
//! them) when it is idle, and between its commits when it is not (once a few hundred are
//! held), and a checkpoint writes whatever is left. That write-back is what keeps the
//! checkpoint short: left to the checkpoint alone, a second of intake inserted at once
//! stalled every write (ack p99.9 at saturation 37-192 ms), and 1 MiB of it at a time still
//! set the ack p99 there (13 ms; BENCHMARKS.md). They are bounded by [`HELD_ROWS_BYTES`] in
//! all: past it, the next commit is a checkpoint.
//!
//! A checkpoint writes what is held here (the seen marks and states, the entries still
//! queued and the counters' latest values) into redb in its durable commit, then empties
//! it; after a crash, the log's replay puts the same changes into redb. Readers
//! ([`super::Store::outbox_head`], [`super::Store::counter`], [`super::Store::conversation`],
//! [`super::Store::seen_events`]) take what they need of what is held here and open their
//! redb snapshot under this one lock, and a commit makes its redb changes and its held
//! changes visible under the same lock (see `Store::write_with`; a checkpoint commits and
//! empties this under it, a write-back commits and forgets what it wrote), so a reader
//! sees a transaction whole or not at all, and every row in one of the two places.
//!
//! A transaction's own changes are [`Staged`] and published here only after its record is
//! synced and its redb transaction committed (or, when it changed nothing in redb,
//! dropped), so no reader sees a change that could be lost, and a failed transaction
//! leaves nothing behind. Each sink has [`HELD_BYTES_PER_SINK`]: past it, that sink's new
//! entries go into redb at their commit, so a sink that is down for long grows the file,
//! not memory, and costs the other sinks nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// The maps of seen marks and states: each row is hashed four or five times on its way
/// (staged, published, looked up, forgotten), and with std's SipHash that made the writer
/// 3 % more instructions at batches of 25 than writing the rows into redb at each commit
/// (`writer_cost --ack` under callgrind); with Fx it is even. Fx is not keyed, which
/// matters little here: the keys come from signature-checked webhooks and Front's API.
type RowMap<V> = rustc_hash::FxHashMap<String, V>;

/// Bytes of one sink's outbox entries (their JSON) held here at most; past it, that sink's
/// entries are inserted into redb at their commit as before. An estimate, not a measurement:
/// a sink that keeps up has its last few milliseconds of Highlights in flight (at 22,000
/// webhooks/s and 1.5 KB each, 33 KB a millisecond, and the JSONL p50 at saturation is about
/// 4 ms), well under this; 1 MiB a sink bounds what a stopped sink holds, with the maps' own
/// overhead on top.
pub const HELD_BYTES_PER_SINK: usize = 1 << 20;

/// Bytes of seen marks and conversation states (keys and values) held at most: once more
/// are held, the next commit is a checkpoint. The writer's write-back keeps far fewer held
/// (a few hundred rows, busy or idle); this bounds them, and with them the checkpoint's
/// stall, which inserts them all at once, when the write-back does not keep up or fails.
/// 1 MiB is about 1,700 events of the benchmark's (0.6 KB of state and keys each). Measured
/// at saturation over 150,000 webhooks, before the busy writer wrote back (BENCHMARKS.md):
/// with 16 MiB (and a 24 MiB page cache), peak RSS 68-90 MB and ack p99.9 70-144 ms in 5
/// runs; with 1 MiB (and 16 MiB), 45-47 MB and 24-25 ms in 2, at the same throughput.
pub const HELD_ROWS_BYTES: usize = 1 << 20;

/// One sink's held entries.
#[derive(Debug, Default)]
struct SinkEntries {
    /// Seq -> the Highlight's JSON.
    entries: BTreeMap<u64, Vec<u8>>,
    /// Bytes of JSON in `entries`.
    bytes: usize,
}

/// Outbox entries and counter values that are committed but not yet in redb.
#[derive(Debug)]
pub struct Deferred {
    /// By sink.
    outbox: HashMap<String, SinkEntries>,
    /// `compound(name, scope)` -> value.
    counters: HashMap<String, u64>,
    /// Seen marks: `compound(connection, event_id)` -> first seen (ms). None of these ids is
    /// in redb: an id is held only when neither redb nor this set had it.
    seen: RowMap<u64>,
    /// Conversation states: `compound(subscription, conversation)` -> the packed state.
    conversations: RowMap<Vec<u8>>,
    /// Bytes of keys and values in `seen` and `conversations`.
    rows_bytes: usize,
    /// Bytes of them held at most ([`HELD_ROWS_BYTES`]; tests set less).
    rows_budget: usize,
    /// Bytes of one sink's entries held at most ([`HELD_BYTES_PER_SINK`]; tests set less).
    budget: usize,
}

impl Default for Deferred {
    fn default() -> Self {
        Deferred {
            outbox: HashMap::new(),
            counters: HashMap::new(),
            seen: RowMap::default(),
            conversations: RowMap::default(),
            rows_bytes: 0,
            rows_budget: HELD_ROWS_BYTES,
            budget: HELD_BYTES_PER_SINK,
        }
    }
}

impl Deferred {
    /// True when `more` bytes of `sink`'s entries, on top of those held and the
    /// `staged` ones, stay within the sink's budget.
    pub fn has_room(&self, sink: &str, staged: &Staged, more: usize) -> bool {
        self.sink_bytes(sink) + staged.sink_bytes(sink) + more <= self.budget
    }

    /// Sets the per-sink budget (tests).
    #[cfg(test)]
    pub fn set_budget(&mut self, bytes: usize) {
        self.budget = bytes;
    }

    /// The entry `seq` of `sink`'s outbox, if held here.
    pub fn entry(&self, sink: &str, seq: u64) -> Option<&[u8]> {
        self.outbox.get(sink)?.entries.get(&seq).map(Vec::as_slice)
    }

    /// Up to `limit` entries of `sink`, oldest first.
    pub fn head(&self, sink: &str, limit: usize) -> Vec<(u64, Vec<u8>)> {
        self.outbox.get(sink).map_or_else(Vec::new, |held| {
            held.entries
                .iter()
                .take(limit)
                .map(|(&seq, json)| (seq, json.clone()))
                .collect()
        })
    }

    /// A counter's value, if held here.
    pub fn counter(&self, key: &str) -> Option<u64> {
        self.counters.get(key).copied()
    }

    /// Bytes of `sink`'s outbox entries held.
    pub fn sink_bytes(&self, sink: &str) -> usize {
        self.outbox.get(sink).map_or(0, |held| held.bytes)
    }

    /// The first-seen time of a held seen mark.
    pub fn seen(&self, key: &str) -> Option<u64> {
        self.seen.get(key).copied()
    }

    /// Seen marks held (none of them is in redb).
    pub fn seen_count(&self) -> usize {
        self.seen.len()
    }

    /// Held seen marks first seen before `cutoff_ms`.
    pub fn seen_before(&self, cutoff_ms: u64) -> Vec<String> {
        self.seen
            .iter()
            .filter(|&(_, &at)| at < cutoff_ms)
            .map(|(key, _)| key.clone())
            .collect()
    }

    /// A held conversation state, packed.
    pub fn conversation(&self, key: &str) -> Option<&[u8]> {
        self.conversations.get(key).map(Vec::as_slice)
    }

    /// True when the seen marks and states held reached their budget
    /// ([`HELD_ROWS_BYTES`]): the next commit is to be a checkpoint.
    pub fn rows_over_budget(&self) -> bool {
        self.rows_bytes >= self.rows_budget
    }

    /// Sets the budget of seen marks and states (tests).
    #[cfg(test)]
    pub fn set_rows_budget(&mut self, bytes: usize) {
        self.rows_budget = bytes;
    }

    /// Seen marks and conversation states held.
    pub fn rows_count(&self) -> usize {
        self.seen.len() + self.conversations.len()
    }

    /// Up to `max` held seen marks and states (marks first), each table's in key order, so
    /// that inserting them into redb reaches each B-tree page once, not once per key.
    pub fn rows(&self, max: usize) -> Rows<&str, &[u8]> {
        let mut seen: Vec<_> = self
            .seen
            .iter()
            .take(max)
            .map(|(k, &v)| (k.as_str(), v))
            .collect();
        let mut conversations: Vec<_> = self
            .conversations
            .iter()
            .take(max - seen.len())
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect();
        seen.sort_unstable_by(|a, b| a.0.cmp(b.0));
        conversations.sort_unstable_by(|a, b| a.0.cmp(b.0));
        Rows {
            seen,
            conversations,
        }
    }

    /// Forgets rows that were written into redb (taken by [`Deferred::rows`], unchanged
    /// since).
    pub fn forget_rows<K: AsRef<str>, V>(&mut self, rows: &Rows<K, V>) {
        for (key, _) in &rows.seen {
            if self.seen.remove(key.as_ref()).is_some() {
                self.rows_bytes -= key.as_ref().len() + 8;
            }
        }
        for (key, _) in &rows.conversations {
            if let Some(packed) = self.conversations.remove(key.as_ref()) {
                self.rows_bytes -= key.as_ref().len() + packed.len();
            }
        }
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.outbox.is_empty()
            && self.counters.is_empty()
            && self.seen.is_empty()
            && self.conversations.is_empty()
    }

    /// Every outbox entry held, with its sink and seq.
    pub fn entries(&self) -> impl Iterator<Item = (&str, u64, &[u8])> {
        self.outbox.iter().flat_map(|(sink, held)| {
            held.entries
                .iter()
                .map(move |(&seq, json)| (sink.as_str(), seq, json.as_slice()))
        })
    }

    /// Every counter held, by `compound(name, scope)`.
    pub fn counters(&self) -> impl Iterator<Item = (&str, u64)> {
        self.counters.iter().map(|(k, &v)| (k.as_str(), v))
    }

    /// Applies a committed transaction's changes: its removals, then its new entries and
    /// counter values.
    pub fn publish(&mut self, staged: Staged) {
        for (sink, seqs) in staged.removed {
            let Some(held) = self.outbox.get_mut(&sink) else {
                continue;
            };
            for seq in seqs {
                if let Some(json) = held.entries.remove(&seq) {
                    held.bytes -= json.len();
                }
            }
            if held.entries.is_empty() {
                self.outbox.remove(&sink);
            }
        }
        for (sink, added) in staged.added {
            if added.entries.is_empty() {
                continue;
            }
            let held = self.outbox.entry(sink).or_default();
            held.bytes += added.bytes;
            held.entries.extend(added.entries);
        }
        self.counters.extend(staged.counters);
        for (key, first_seen) in staged.seen {
            let bytes = key.len() + 8;
            match first_seen {
                Some(at) => {
                    if self.seen.insert(key, at).is_none() {
                        self.rows_bytes += bytes;
                    }
                }
                None => {
                    if self.seen.remove(&key).is_some() {
                        self.rows_bytes -= bytes;
                    }
                }
            }
        }
        for (key, packed) in staged.conversations {
            let (key_bytes, new_bytes) = (key.len(), packed.len());
            match self.conversations.insert(key, packed) {
                Some(old) => self.rows_bytes = self.rows_bytes - old.len() + new_bytes,
                None => self.rows_bytes += key_bytes + new_bytes,
            }
        }
    }

    /// Forgets everything held: a checkpoint has written it into redb.
    pub fn clear(&mut self) {
        self.outbox.clear();
        self.counters.clear();
        self.seen.clear();
        self.conversations.clear();
        self.rows_bytes = 0;
    }
}

/// Seen marks (`compound(connection, event_id)` -> first seen, ms) and conversation states
/// (`compound(subscription, conversation)` -> the packed state), each in key order:
/// borrowed from what is held (`Rows<&str, &[u8]>`) or copied out of it
/// (`Rows<String, Vec<u8>>`).
#[derive(Debug, Default)]
pub struct Rows<K, V> {
    pub seen: Vec<(K, u64)>,
    pub conversations: Vec<(K, V)>,
}

impl<K, V> Rows<K, V> {
    /// Rows in all.
    pub fn len(&self) -> usize {
        self.seen.len() + self.conversations.len()
    }
}

impl Rows<&str, &[u8]> {
    /// A copy that does not borrow what is held.
    pub fn to_owned(&self) -> Rows<String, Vec<u8>> {
        Rows {
            seen: self.seen.iter().map(|&(k, v)| (k.to_owned(), v)).collect(),
            conversations: self
                .conversations
                .iter()
                .map(|&(k, v)| (k.to_owned(), v.to_vec()))
                .collect(),
        }
    }
}

/// One transaction's changes to what is [`Deferred`], applied only once it has committed.
#[derive(Debug, Default)]
pub struct Staged {
    /// Entries this transaction queued, by sink.
    added: HashMap<String, SinkEntries>,
    /// Held entries this transaction removed: sink -> seqs.
    removed: HashMap<String, BTreeSet<u64>>,
    /// Counter values this transaction wrote.
    counters: HashMap<String, u64>,
    /// Seen marks this transaction added (`Some(first seen)`) or pruned from the held
    /// ones (`None`).
    seen: RowMap<Option<u64>>,
    /// Conversation states this transaction wrote, packed.
    conversations: RowMap<Vec<u8>>,
}

impl Staged {
    /// Queues an entry.
    pub fn add(&mut self, sink: &str, seq: u64, json: &[u8]) {
        let added = match self.added.get_mut(sink) {
            Some(added) => added,
            None => self.added.entry(sink.to_owned()).or_default(),
        };
        added.bytes += json.len();
        added.entries.insert(seq, json.to_vec());
    }

    /// Takes back an entry this transaction queued.
    pub fn take_added(&mut self, sink: &str, seq: u64) -> Option<Vec<u8>> {
        let added = self.added.get_mut(sink)?;
        let json = added.entries.remove(&seq)?;
        added.bytes -= json.len();
        if added.entries.is_empty() {
            self.added.remove(sink);
        }
        Some(json)
    }

    /// Bytes of the entries this transaction queued for `sink`.
    pub fn sink_bytes(&self, sink: &str) -> usize {
        self.added.get(sink).map_or(0, |added| added.bytes)
    }

    /// Marks a held entry as removed; false when this transaction already removed it.
    pub fn remove_held(&mut self, sink: &str, seq: u64) -> bool {
        match self.removed.get_mut(sink) {
            Some(seqs) => seqs.insert(seq),
            None => {
                self.removed.insert(sink.to_owned(), BTreeSet::from([seq]));
                true
            }
        }
    }

    /// True when this transaction removed the held entry `seq` of `sink`.
    pub fn removed_held(&self, sink: &str, seq: u64) -> bool {
        self.removed.get(sink).is_some_and(|s| s.contains(&seq))
    }

    /// Records a counter's new value.
    pub fn set_counter(&mut self, key: String, value: u64) {
        self.counters.insert(key, value);
    }

    /// What this transaction did to the seen mark `key`: `Some(Some(at))` added it,
    /// `Some(None)` pruned it, `None` nothing.
    pub fn seen(&self, key: &str) -> Option<Option<u64>> {
        self.seen.get(key).copied()
    }

    /// Records a new seen mark.
    pub fn add_seen(&mut self, key: String, first_seen: u64) {
        self.seen.insert(key, Some(first_seen));
    }

    /// Records that a held seen mark was pruned.
    pub fn prune_seen(&mut self, key: String) {
        self.seen.insert(key, None);
    }

    /// A conversation state this transaction wrote, packed.
    pub fn conversation(&self, key: &str) -> Option<&[u8]> {
        self.conversations.get(key).map(Vec::as_slice)
    }

    /// Records a conversation's new state.
    pub fn put_conversation(&mut self, key: String, packed: Vec<u8>) {
        self.conversations.insert(key, packed);
    }

    /// True when the transaction changed nothing held.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.counters.is_empty()
            && self.seen.is_empty()
            && self.conversations.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_changes_are_read_back_and_counted() {
        let mut held = Deferred::default();
        let mut staged = Staged::default();
        staged.add("a", 1, b"one");
        staged.add("a", 2, b"two");
        staged.add("b", 1, b"bee");
        staged.set_counter("c\0a".into(), 7);
        assert_eq!(staged.sink_bytes("a"), 6);
        assert_eq!(staged.sink_bytes("b"), 3);
        held.publish(staged);
        assert_eq!(held.sink_bytes("a"), 6);
        assert_eq!(held.sink_bytes("b"), 3);
        assert_eq!(held.entry("a", 2), Some(&b"two"[..]));
        assert_eq!(held.head("a", 1), vec![(1, b"one".to_vec())]);
        assert_eq!(held.counter("c\0a"), Some(7));

        let mut staged = Staged::default();
        assert!(staged.remove_held("a", 1));
        assert!(
            !staged.remove_held("a", 1),
            "a second removal is not counted"
        );
        assert!(staged.removed_held("a", 1));
        assert!(!staged.removed_held("a", 2));
        held.publish(staged);
        assert_eq!(held.head("a", 10), vec![(2, b"two".to_vec())]);
        assert_eq!(held.sink_bytes("a"), 3);
        assert_eq!(held.entries().count(), 2);

        held.clear();
        assert!(held.is_empty());
        assert_eq!(held.sink_bytes("a"), 0);
    }

    #[test]
    fn an_entry_taken_back_in_its_own_transaction_is_never_published() {
        let mut staged = Staged::default();
        staged.add("a", 5, b"five");
        assert_eq!(staged.take_added("a", 5), Some(b"five".to_vec()));
        assert_eq!(staged.take_added("a", 5), None);
        assert_eq!(staged.sink_bytes("a"), 0);
        assert!(staged.is_empty());
        let mut held = Deferred::default();
        held.publish(staged);
        assert_eq!(held.entry("a", 5), None);
        assert!(held.is_empty());
    }
}
