//! Every redb table frontsync uses, in one place. Names carry a version suffix so a future
//! format change can migrate table by table instead of guessing what bytes mean.

use redb::TableDefinition;

/// `"schema"` -> the store format version; `"wal_start"` -> the sequence number of the redo
/// log's first record after the last checkpoint (see `store::wal`).
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta_v1");

/// `"{connection}\0{evt_id}"` -> Unix ms when the event was first committed. Pruned by a
/// resumable scan in key order (see `Txn::prune_seen`), so no second index is kept.
pub const SEEN_EVENTS: TableDefinition<&str, u64> = TableDefinition::new("seen_events_v1");

/// Retired: `(Unix ms, "{connection}\0{evt_id}")`, an age index of the seen marks that cost
/// a second B-tree insert per event. Deleted when a store is opened.
pub const RETIRED_SEEN_BY_TIME: TableDefinition<(u64, &str), ()> =
    TableDefinition::new("seen_by_time_v1");

/// `"{subscription}\0{cnv_id}"` -> `ConversationState` as MessagePack (no text to escape:
/// the state is rewritten on every event). Written as an array of the fields in declaration
/// order; states written by earlier builds are maps with field names, and both read alike.
/// So fields may only be added, at the end, with a default (`Snapshot` has
/// `#[serde(default)]`), never removed or reordered.
pub const CONVERSATIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("conversations_v2");

/// Retired: the same states as JSON (store format 1). Moved to `conversations_v2` when a
/// store is opened, then deleted.
pub const RETIRED_CONVERSATIONS_V1: TableDefinition<&str, &[u8]> =
    TableDefinition::new("conversations_v1");

/// `(sink, seq)` -> one Highlight as compact JSON. Drained in seq order by the sink's task.
pub const OUTBOX: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("outbox_v1");

/// Retired: `sink` -> the next outbox sequence number to hand out (store format 1). Now the
/// `outbox_next_seq` counter, so an ingest commit touches one table less. Moved to
/// `counters_v1` when a store is opened, then deleted.
pub const RETIRED_OUTBOX_SEQ_V1: TableDefinition<&str, u64> = TableDefinition::new("outbox_seq_v1");

/// `(sink, seq)` -> JSON `DeadLetter`: Highlights a sink rejected for good.
pub const DEAD_LETTERS: TableDefinition<(&str, u64), &[u8]> =
    TableDefinition::new("dead_letters_v1");

/// `"{name}\0{sink-or-subscription}"` -> a counter (deliveries, outbox depth, the next
/// outbox sequence number of a sink: see `store::counters`).
pub const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters_v1");

/// `"{kind}\0{name}"` -> JSON cursor of a poller or backfill.
pub const CURSORS: TableDefinition<&str, &[u8]> = TableDefinition::new("cursors_v1");

/// `(connection, evt_id)` -> a webhook event preview committed before it could be completed
/// with `GET /events/{id}`; removed in the transaction that ingests the full event.
pub const PENDING_PREVIEWS: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("pending_previews_v1");

/// `connection` -> JSON `StoredGrant`: the OAuth access and refresh tokens of a
/// `[front.NAME]` with `auth = { oauth = ... }` (see `store::oauth`).
pub const OAUTH_GRANTS: TableDefinition<&str, &[u8]> = TableDefinition::new("oauth_grants_v1");
