//! The durable part: one commit through `Store` (fsync dominates) and the writer applying a
//! batch of 1, 64 or 512 new events (seen mark, conversation state, Highlight to the
//! outbox) in one transaction, in a temp dir on the same disk as /tmp.
//!
//! `cargo bench --bench ingest`

mod common;

use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use frontsync::ingest::IncomingEvent;
use frontsync::normalize::Snapshot;
use frontsync::store::Store;

fn events(template: &Snapshot, next: &mut u64, n: usize) -> Vec<IncomingEvent> {
    (0..n)
        .map(|_| {
            *next += 1;
            common::incoming(template, *next)
        })
        .collect()
}

fn store_commit(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("state.redb")).unwrap();
    let mut g = c.benchmark_group("store_commit");
    g.bench_function("empty transaction", |b| {
        b.iter(|| store.write(|_| Ok(())).unwrap())
    });
    let mut next = 0u64;
    g.throughput(Throughput::Elements(512));
    g.bench_function("mark_seen x512", |b| {
        b.iter(|| {
            store
                .write(|t| {
                    for _ in 0..512 {
                        next += 1;
                        t.mark_seen("acme", &format!("evt_{next}"), 1)?;
                    }
                    Ok(())
                })
                .unwrap()
        })
    });
    g.finish();
}

fn writer_batches(c: &mut Criterion) {
    let (_dir, writer, thread) = common::writer();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let template = common::template();
    let mut next = 0u64;
    let mut g = c.benchmark_group("writer_ingest");
    for n in [1usize, 64, 512] {
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(format!("batch {n}"), |b| {
            b.iter_batched(
                || events(&template, &mut next, n),
                |batch| {
                    let out = rt.block_on(writer.ingest(batch, Vec::new())).unwrap();
                    assert_eq!(out.new_events, n);
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
    drop(writer);
    thread.join().unwrap();
}

/// The storage floor for the same rows the writer writes per event (seen mark, conversation
/// state, outbox entry; sizes taken from a real event), with each table opened
/// once per transaction and the values serialized beforehand: what a batch would cost
/// without per-operation table opening, counters and JSON in the commit path.
fn redb_floor(c: &mut Criterion) {
    use redb::{ReadableTable, TableDefinition};
    const SEEN: TableDefinition<&str, u64> = TableDefinition::new("seen");
    const CONV: TableDefinition<&str, &[u8]> = TableDefinition::new("conv");
    const OUTBOX: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("outbox");

    let snapshot = common::template();
    let state = rmp_serde::to_vec(&frontsync::ingest::ConversationState {
        revision: 1,
        content_hash: 1,
        snapshot: snapshot.clone(),
    })
    .unwrap();
    let highlight = serde_json::to_vec(&frontsync::normalize::highlight(
        &common::subscription(),
        &snapshot,
        1,
        frontsync_sinks::Change::Created,
    ))
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = redb::Database::builder()
        .set_cache_size(32 << 20)
        .create(dir.path().join("raw.redb"))
        .unwrap();
    let mut next = 0u64;
    let mut g = c.benchmark_group("redb_floor");
    for n in [1usize, 64, 512] {
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(format!("batch {n}"), |b| {
            b.iter_batched(
                || {
                    (0..n)
                        .map(|_| {
                            next += 1;
                            (
                                format!("acme\0evt_{next}"),
                                format!("support\0cnv_{next}"),
                                next,
                            )
                        })
                        .collect::<Vec<_>>()
                },
                |keys| {
                    let txn = db.begin_write().unwrap();
                    {
                        let mut seen = txn.open_table(SEEN).unwrap();
                        let mut conv = txn.open_table(CONV).unwrap();
                        let mut outbox = txn.open_table(OUTBOX).unwrap();
                        for (evt, cnv, seq) in &keys {
                            if seen.get(evt.as_str()).unwrap().is_none() {
                                seen.insert(evt.as_str(), 1).unwrap();
                            }
                            let _ = conv.get(cnv.as_str()).unwrap();
                            conv.insert(cnv.as_str(), state.as_slice()).unwrap();
                            outbox
                                .insert(("archive", *seq), highlight.as_slice())
                                .unwrap();
                        }
                    }
                    txn.commit().unwrap();
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

fn short() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30)
}

criterion_group! {
    name = benches;
    config = short();
    targets = store_commit, writer_batches, redb_floor
}
criterion_main!(benches);
