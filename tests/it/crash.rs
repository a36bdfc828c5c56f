//! The crash test: webhooks sent concurrently and events polled from the fake Front while the
//! daemon is `kill -9`ed at pseudo-random moments, round after round. Afterwards every
//! acknowledged webhook and every polled event is in the JSONL sink exactly once (no torn
//! line) and created at the fake NEXT exactly once.
//!
//! `FRONTSYNC_CRASH_ROUNDS` sets the number of rounds (default 20; a soak uses more).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::fake::front::{FakeFront, inbound_event_at};
use crate::fake::next::{FakeNext, TEAMSPACE, TOKEN};
use crate::harness::*;

/// A cheap pseudo-random number (no `rand` dependency): a splitmix64 step.
fn next_random(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn config(dir: &std::path::Path, front: &FakeFront, next: &FakeNext) -> String {
    std::fs::write(dir.join("front.token"), "test-token").unwrap();
    std::fs::write(dir.join("next.token"), TOKEN).unwrap();
    base_config(dir, "backfill = \"1h\"\npoll_interval = \"1s\"")
        .replace(
            "[front.acme]\n",
            &format!(
                "[front.acme]\napi_base = \"{}\"\ntoken = {{ file = \"front.token\" }}\nrate_limit_rpm = 6000\n",
                front.base_url()
            ),
        )
        .replace("sinks = [\"archive\", \"console\"]", "sinks = [\"archive\", \"next\"]")
        .replace(
            "[sinks.console]\ntype = \"stdout\"\n",
            &format!(
                "[sinks.next]\ntype = \"next\"\nendpoint = \"{}\"\nteamspace = \"{TEAMSPACE}\"\ntoken = {{ file = \"next.token\" }}\ntimeout = \"2s\"\n",
                next.endpoint()
            ),
        )
}

#[test]
fn kill_9_at_random_moments_loses_nothing_and_duplicates_nothing() {
    let rounds: usize = std::env::var("FRONTSYNC_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let front = FakeFront::start();
    let next = FakeNext::start();
    next.set_latency(Duration::from_millis(2));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.toml"),
        config(dir.path(), &front, &next),
    )
    .unwrap();

    let mut seed = now_ms();
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let sent = Arc::new(Mutex::new(BTreeSet::new()));
    let mut polled = BTreeSet::new();
    let base_secs = now_ms() as f64 / 1000.0 - 1800.0;
    let mut polled_n = 0usize;

    for round in 0..rounds {
        let d = TestDaemon::start_existing(dir.path());
        // Events that only polling will bring in.
        for _ in 0..5 {
            let cnv = format!("cnv_poll_{polled_n}");
            front.add_event(inbound_event_at(
                &format!("evt_poll_{polled_n}"),
                &cnv,
                base_secs + polled_n as f64 * 0.25,
                "Polled",
                "from the stream",
            ));
            polled.insert(format!("support:{cnv}"));
            polled_n += 1;
        }
        // Webhooks from 4 concurrent senders until the kill.
        let url = d.webhook_url("acme");
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let senders: Vec<_> = (0..4)
            .map(|t| {
                let (url, acked, sent, stop) =
                    (url.clone(), acked.clone(), sent.clone(), stop.clone());
                std::thread::spawn(move || {
                    let rt = runtime();
                    let client = reqwest::Client::builder()
                        .timeout(Duration::from_secs(5))
                        .build()
                        .unwrap();
                    let mut i = 0;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let cnv = format!("cnv_wh_{round}_{t}_{i}");
                        let body = serde_json::to_vec(&inbound_event(
                            &format!("evt_wh_{round}_{t}_{i}"),
                            &cnv,
                            "Hooked",
                            "by webhook",
                        ))
                        .unwrap();
                        sent.lock().unwrap().insert(format!("support:{cnv}"));
                        let ok = rt.block_on(async {
                            let req = client
                                .post(&url)
                                .header("x-front-signature", sign_rule(&body))
                                .body(body.clone())
                                .send()
                                .await;
                            matches!(req, Ok(r) if r.status() == 200)
                        });
                        if ok {
                            acked.lock().unwrap().insert(format!("support:{cnv}"));
                        } else {
                            break;
                        }
                        i += 1;
                    }
                })
            })
            .collect();
        let delay = 30 + next_random(&mut seed) % 400;
        std::thread::sleep(Duration::from_millis(delay));
        d.kill9();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for s in senders {
            s.join().unwrap();
        }
    }

    // A last, calm run delivers everything that was committed.
    let d = TestDaemon::start_existing(dir.path());
    let acked = acked.lock().unwrap().clone();
    let sent = sent.lock().unwrap().clone();
    let must: BTreeSet<String> = acked.union(&polled).cloned().collect();
    wait_until(
        Duration::from_secs(60),
        "every acknowledged highlight",
        || {
            let ids: BTreeSet<String> = read_jsonl(&d.jsonl_path())
                .iter()
                .map(|l| l["id"].as_str().unwrap().to_string())
                .collect();
            must.is_subset(&ids).then_some(())
        },
    );
    wait_until(
        Duration::from_secs(60),
        "every acknowledged highlight at NEXT",
        || {
            let keys: BTreeSet<String> = next.created_keys().into_iter().collect();
            must.iter()
                .all(|id| keys.contains(&format!("{id}:1")))
                .then_some(keys)
        },
    );
    // Both outboxes drained: everything committed has been delivered.
    wait_until(Duration::from_secs(60), "empty outboxes", || {
        let v: serde_json::Value = d.try_status()?;
        (v["sinks"]["archive"]["outbox_depth"] == 0 && v["sinks"]["next"]["outbox_depth"] == 0)
            .then_some(())
    });
    // Caught up only now: webhooks whose answer the kill cut off (one per sender) may have
    // committed after every acknowledged one, and reach the file after it had them all.
    let lines = read_jsonl(&d.jsonl_path());
    std::thread::sleep(Duration::from_millis(500));
    let created: BTreeSet<String> = next.created_keys().into_iter().collect();
    let lines_after = read_jsonl(&d.jsonl_path());
    assert_eq!(
        lines_after.len(),
        lines.len(),
        "nothing more arrives once caught up"
    );

    // Exactly once in the JSONL: no (id, revision) twice.
    let mut seen = BTreeSet::new();
    for l in &lines_after {
        let key = format!("{}:{}", l["id"].as_str().unwrap(), l["revision"]);
        assert!(seen.insert(key.clone()), "{key} appears twice in the JSONL");
        // Anything present was at least sent (unacknowledged webhooks may have committed).
        let id = l["id"].as_str().unwrap();
        assert!(sent.contains(id) || polled.contains(id), "unexpected {id}");
    }
    // Exactly once at NEXT: every created key is unique by construction; every line's key
    // was created, and nothing else.
    let jsonl_keys: BTreeSet<String> = seen;
    assert_eq!(next.created_count(), created.len());
    assert_eq!(
        created, jsonl_keys,
        "NEXT and the JSONL hold the same Highlights"
    );
    eprintln!(
        "crash test: {rounds} rounds, {} webhooks acknowledged, {} polled events, {} highlights, {} NEXT requests",
        acked.len(),
        polled.len(),
        lines_after.len(),
        next.requests().len()
    );
    assert!(acked.len() >= rounds, "the senders got through at all");
}

#[test]
fn a_clean_stop_leaves_the_state_file_whole_without_its_redo_log() {
    let dir = tempfile::tempdir().unwrap();
    let d = TestDaemon::start(dir.path(), &base_config(dir.path(), ""));
    let rt = runtime();
    let client = reqwest::Client::new();
    for i in 0..5 {
        assert_eq!(
            post_inbound(&rt, &client, &d, &format!("c{i}")).status(),
            200
        );
    }
    let log = dir.path().join("state/frontsync.redb-wal");
    // Until the stop, the five events may be in the log only.
    let (code, _) = d.terminate();
    assert_eq!(code, 0);
    // The stop took a checkpoint, so the redb file alone holds everything: without its
    // log, a restart knows all five events and delivers none again.
    std::fs::remove_file(&log).unwrap();
    let d = TestDaemon::start_existing(dir.path());
    let resp = post_inbound(&rt, &client, &d, "c0");
    assert_eq!(resp.status(), 200);
    let v: serde_json::Value = rt.block_on(resp.json()).unwrap();
    assert_eq!(v["status"], "duplicate");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(read_jsonl(&d.jsonl_path()).len(), 5);
}
