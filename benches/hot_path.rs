//! CPU cost of the per-webhook work that is not I/O: signature checks, JSON parsing,
//! normalizing, building and serializing the Highlight, HTML to text.
//!
//! `cargo bench --bench hot_path`

mod common;

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use frontsync::front::model::{Event, WebhookBody, parse_webhook_body};
use frontsync::normalize::{highlight, snapshot_from_event};
use frontsync::webhook::verify::{sign_app, sign_rule, verify_app, verify_rule};
use frontsync_sinks::Change;

fn parse_event(body: &[u8]) -> Event<'_> {
    match parse_webhook_body(body).expect("valid body") {
        WebhookBody::Rule(e) => e,
        _ => panic!("a rule webhook"),
    }
}

fn verify(c: &mut Criterion) {
    let body = common::body("evt_1", "cnv_1");
    let mut g = c.benchmark_group("verify");
    g.throughput(Throughput::Bytes(body.len() as u64));
    let secret = b"rule-secret";
    let sig = sign_rule(secret, &body);
    g.bench_function(format!("rule_sha1_{}B", body.len()), |b| {
        b.iter(|| verify_rule(black_box(secret), black_box(&body), Some(black_box(&sig))).unwrap())
    });
    let ts = "1763716443012";
    let sig = sign_app(secret, ts, &body);
    g.bench_function(format!("app_sha256_{}B", body.len()), |b| {
        b.iter(|| {
            verify_app(
                black_box(secret),
                black_box(&body),
                ts,
                Some(black_box(&sig)),
                1_763_716_443_012,
            )
            .unwrap()
        })
    });
    g.finish();
}

fn normalize(c: &mut Criterion) {
    let body = common::body("evt_1", "cnv_1");
    let sub = common::subscription();
    let event = parse_event(&body);
    let snapshot = snapshot_from_event(&event).unwrap();
    let mut g = c.benchmark_group("normalize");
    g.bench_function("parse_webhook_body", |b| {
        b.iter(|| parse_webhook_body(black_box(&body)).unwrap())
    });
    // The first step of the lenient path, which a well-shaped body skips (read straight into
    // the typed Event) and any other body takes: JSON text to a serde_json::Value tree.
    g.bench_function("parse_webhook_body part: bytes to Value", |b| {
        b.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(&body)).unwrap())
    });
    // For comparison: the typed Event straight from the bytes through its own (lenient)
    // Deserialize, as the poller reads API responses: each field goes through a Value.
    g.bench_function("alternative: bytes to Event directly", |b| {
        b.iter(|| serde_json::from_slice::<Event>(black_box(&body)).unwrap())
    });
    g.bench_function("snapshot_from_event", |b| {
        b.iter(|| snapshot_from_event(black_box(&event)).unwrap())
    });
    g.bench_function("highlight+to_vec", |b| {
        b.iter(|| {
            let h = highlight(&sub, black_box(&snapshot), 1, Change::Created);
            serde_json::to_vec(&h).unwrap()
        })
    });
    g.bench_function("all: parse+snapshot+highlight+to_vec", |b| {
        b.iter(|| {
            let event = parse_event(black_box(&body));
            let snapshot = snapshot_from_event(&event).unwrap();
            let h = highlight(&sub, &snapshot, 1, Change::Created);
            serde_json::to_vec(&h).unwrap()
        })
    });
    // What the writer stores per conversation (ConversationState is this snapshot in
    // MessagePack), and the JSON it replaced.
    g.bench_function("snapshot msgpack to_vec+from_slice", |b| {
        b.iter(|| {
            let bytes = rmp_serde::to_vec(black_box(&snapshot)).unwrap();
            rmp_serde::from_slice::<frontsync::normalize::Snapshot>(&bytes).unwrap()
        })
    });
    g.bench_function("snapshot json to_vec+from_slice", |b| {
        b.iter(|| {
            let bytes = serde_json::to_vec(black_box(&snapshot)).unwrap();
            serde_json::from_slice::<frontsync::normalize::Snapshot>(&bytes).unwrap()
        })
    });
    g.finish();
}

fn html(c: &mut Criterion) {
    // html_to_text is private: measure snapshot_from_event on the same message with and
    // without its plain `text`; the difference is the HTML conversion.
    let with_text: frontsync::front::model::Event =
        serde_json::from_value(common::event("evt_1", "cnv_1", true)).unwrap();
    let html_only: frontsync::front::model::Event =
        serde_json::from_value(common::event("evt_1", "cnv_1", false)).unwrap();
    let s = snapshot_from_event(&html_only).unwrap();
    assert!(s.message_text.is_some_and(|t| t.contains("charged twice")));
    let mut g = c.benchmark_group("html_to_text");
    g.throughput(Throughput::Bytes(common::html_body().len() as u64));
    g.bench_function("snapshot, text present", |b| {
        b.iter(|| snapshot_from_event(black_box(&with_text)).unwrap())
    });
    g.bench_function("snapshot, html body only", |b| {
        b.iter(|| snapshot_from_event(black_box(&html_only)).unwrap())
    });
    g.finish();
}

fn short() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50)
}

criterion_group! {
    name = benches;
    config = short();
    targets = verify, normalize, html
}
criterion_main!(benches);
