//! The durable part: one commit through `Store` (fsync dominates) and the writer applying a
//! batch of 1, 64 or 512 new events (seen mark, conversation state, Highlight to the
//! outbox) in one transaction, in a temp dir on the same disk as /tmp.
//!
//! `cargo bench --bench ingest`

mod common;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use frontsync::front::model::{WebhookBody, parse_webhook_body};
use frontsync::ingest::{InboxNames, IncomingEvent, SinkBell, spawn_writer};
use frontsync::normalize::{Snapshot, snapshot_from_event};
use frontsync::store::Store;

fn template() -> Snapshot {
    let body = common::body("evt_0", "cnv_0");
    let WebhookBody::Rule(event) = parse_webhook_body(&body).unwrap() else {
        panic!("a rule webhook")
    };
    snapshot_from_event(&event).unwrap()
}

fn events(template: &Snapshot, next: &mut u64, n: usize) -> Vec<IncomingEvent> {
    (0..n)
        .map(|_| {
            *next += 1;
            let mut s = template.clone();
            s.conversation_id = format!("cnv_{next}");
            s.event_id = Some(format!("evt_{next}"));
            IncomingEvent::new("acme", &format!("evt_{next}"), s)
        })
        .collect()
}

fn store_commit(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("state.redb")).unwrap();
    let mut g = c.benchmark_group("store_commit");
    g.bench_function("empty transaction (fsync floor)", |b| {
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
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("state.redb")).unwrap();
    let config = common::config();
    let routing = Arc::new(RwLock::new(Arc::new(
        InboxNames::default().routing(&config.subscriptions),
    )));
    let (writer, thread) = spawn_writer(
        store,
        routing,
        Arc::new(SinkBell::default()),
        Default::default(),
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let template = template();
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

fn short() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30)
}

criterion_group! {
    name = benches;
    config = short();
    targets = store_commit, writer_batches
}
criterion_main!(benches);
