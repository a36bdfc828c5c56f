//! Committed changes that are kept out of redb until the next checkpoint: outbox entries and
//! counters.
//!
//! Why: at saturation a healthy sink acknowledges an entry a few milliseconds after it was
//! queued, so an entry inserted into redb's outbox table at one commit was removed from it
//! a commit or two later: about 10 of a commit's 35 page writes and an eighth of the
//! writer's instructions went to rows that never reached a checkpoint (BENCHMARKS.md). The
//! counters table cost another 3 pages a commit for a handful of numbers. The redo log
//! already makes every change durable (its record is synced before the commit returns), so
//! these changes are recorded in the log as usual and then held here instead of in redb.
//!
//! A checkpoint writes what is held here (the entries still queued and the counters' latest
//! values) into redb in its durable commit, then empties it; after a crash, the log's
//! replay puts the same changes into redb. Readers ([`super::Store::outbox_head`],
//! [`super::Store::counter`]) look here first, then in redb.
//!
//! A transaction's own changes are [`Staged`] and published here only after its record is
//! synced and its redb commit succeeded, so no reader sees a change that could be lost, and a
//! failed transaction leaves nothing behind. Entries beyond [`HELD_BYTES`] go to redb at
//! once, so a sink that is down for long does not grow memory: its outbox stays on disk.

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Bytes of outbox entries held here at most; past it, entries are inserted into redb at
/// their commit as before. A second of the highest rate measured is about 30 MB of
/// Highlights, more than a sink that keeps up ever has in flight; 4 MiB keeps a stopped
/// sink's entries from raising RSS by more than that.
pub const HELD_BYTES: usize = 4 << 20;

/// Outbox entries and counter values that are committed but not yet in redb.
#[derive(Debug, Default)]
pub struct Deferred {
    /// Sink -> seq -> the Highlight's JSON.
    outbox: HashMap<String, BTreeMap<u64, Vec<u8>>>,
    /// Bytes of JSON in `outbox`.
    outbox_bytes: usize,
    /// `compound(name, scope)` -> value.
    counters: HashMap<String, u64>,
}

impl Deferred {
    /// The entry `seq` of `sink`'s outbox, if held here.
    pub fn entry(&self, sink: &str, seq: u64) -> Option<&[u8]> {
        self.outbox.get(sink)?.get(&seq).map(Vec::as_slice)
    }

    /// Up to `limit` entries of `sink`, oldest first.
    pub fn head(&self, sink: &str, limit: usize) -> Vec<(u64, Vec<u8>)> {
        self.outbox.get(sink).map_or_else(Vec::new, |entries| {
            entries
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

    /// Bytes of outbox entries held.
    pub fn outbox_bytes(&self) -> usize {
        self.outbox_bytes
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.outbox.is_empty() && self.counters.is_empty()
    }

    /// Every outbox entry held, with its sink and seq.
    pub fn entries(&self) -> impl Iterator<Item = (&str, u64, &[u8])> {
        self.outbox.iter().flat_map(|(sink, entries)| {
            entries
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
            let Some(entries) = self.outbox.get_mut(&sink) else {
                continue;
            };
            for seq in seqs {
                if let Some(json) = entries.remove(&seq) {
                    self.outbox_bytes -= json.len();
                }
            }
            if entries.is_empty() {
                self.outbox.remove(&sink);
            }
        }
        for (sink, added) in staged.added {
            if added.is_empty() {
                continue;
            }
            self.outbox_bytes += added.values().map(Vec::len).sum::<usize>();
            self.outbox.entry(sink).or_default().extend(added);
        }
        self.counters.extend(staged.counters);
    }

    /// Forgets everything held: a checkpoint has written it into redb.
    pub fn clear(&mut self) {
        *self = Deferred::default();
    }
}

/// One transaction's changes to what is [`Deferred`], applied only once it has committed.
#[derive(Debug, Default)]
pub struct Staged {
    /// Entries this transaction queued: sink -> seq -> JSON.
    added: HashMap<String, BTreeMap<u64, Vec<u8>>>,
    /// Bytes of JSON in `added`.
    added_bytes: usize,
    /// Held entries this transaction removed: sink -> seqs.
    removed: HashMap<String, BTreeSet<u64>>,
    /// Counter values this transaction wrote.
    counters: HashMap<String, u64>,
}

impl Staged {
    /// Queues an entry.
    pub fn add(&mut self, sink: &str, seq: u64, json: &[u8]) {
        self.added_bytes += json.len();
        match self.added.get_mut(sink) {
            Some(entries) => {
                entries.insert(seq, json.to_vec());
            }
            None => {
                self.added
                    .insert(sink.to_owned(), BTreeMap::from([(seq, json.to_vec())]));
            }
        }
    }

    /// Takes back an entry this transaction queued.
    pub fn take_added(&mut self, sink: &str, seq: u64) -> Option<Vec<u8>> {
        let json = self.added.get_mut(sink)?.remove(&seq)?;
        self.added_bytes -= json.len();
        Some(json)
    }

    /// Bytes of the entries this transaction queued.
    pub fn added_bytes(&self) -> usize {
        self.added_bytes
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

    /// True when the transaction changed nothing held.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.counters.is_empty()
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
        assert_eq!(staged.added_bytes(), 9);
        held.publish(staged);
        assert_eq!(held.outbox_bytes(), 9);
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
        assert_eq!(held.outbox_bytes(), 6);
        assert_eq!(held.entries().count(), 2);

        held.clear();
        assert!(held.is_empty());
        assert_eq!(held.outbox_bytes(), 0);
    }

    #[test]
    fn an_entry_taken_back_in_its_own_transaction_is_never_published() {
        let mut staged = Staged::default();
        staged.add("a", 5, b"five");
        assert_eq!(staged.take_added("a", 5), Some(b"five".to_vec()));
        assert_eq!(staged.take_added("a", 5), None);
        assert_eq!(staged.added_bytes(), 0);
        let mut held = Deferred::default();
        held.publish(staged);
        assert_eq!(held.entry("a", 5), None);
        assert_eq!(held.outbox_bytes(), 0);
    }
}
