//! API economy, measured (not asserted on time): a backfill against the fake Front at a real
//! plan's rate limit, printing requests per event against ⌈events/15⌉, requests per idle
//! poll, 429s, and how much of the rate-limit budget the backfill used. Run on demand:
//!
//! ```sh
//! cargo test --release --test it economy -- --ignored --nocapture
//! ```
//!
//! `FRONTSYNC_ECONOMY_EVENTS` (default 600) and `FRONTSYNC_ECONOMY_RPM` (default 120) size it.

use std::time::Duration;

use crate::fake::front::FakeFront;
use crate::harness::*;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
#[ignore = "a measurement: run with --ignored --nocapture (see BENCHMARKS.md)"]
fn economy_of_a_backfill_and_of_idle_polls() {
    let events = env_or("FRONTSYNC_ECONOMY_EVENTS", 600);
    let rpm = env_or("FRONTSYNC_ECONOMY_RPM", 120) as u32;
    let front = FakeFront::start();
    // The fake enforces the plan's limit like Front: a 429 would show here.
    front.set_rate_limit(rpm);
    let now = now_ms() as f64 / 1000.0;
    front.seed_inbound(events, now - 3000.0, 3000.0 / events as f64 / 2.0);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("front.token"), "test-token").unwrap();
    let config = base_config(dir.path(), "backfill = \"1h\"\npoll_interval = \"5s\"").replace(
        "[front.acme]\n",
        &format!(
            "[front.acme]\napi_base = \"{}\"\ntoken = {{ file = \"front.token\" }}\nrate_limit_rpm = {rpm}\n",
            front.base_url()
        ),
    );
    let d = TestDaemon::start(dir.path(), &config);
    let lines = wait_until(Duration::from_secs(600), "the backfill", || {
        let l = read_jsonl(&d.jsonl_path());
        (l.len() >= events).then_some(l)
    });
    let walk: Vec<_> = front
        .requests()
        .into_iter()
        .filter(|r| r.path == "/events")
        .collect();
    let pages = walk.len();
    let throttled = front.requests().iter().filter(|r| r.status == 429).count();
    let first = walk.first().unwrap().at;
    let last = walk.last().unwrap().at;
    let span = last.duration_since(first).as_secs_f64();
    let ideal = events.div_ceil(15);
    // The limiter allows a small burst, then one request every 60/rpm seconds.
    let burst = (rpm as usize / 10).clamp(1, 5);
    let bound = pages.saturating_sub(burst) as f64 * 60.0 / rpm as f64;

    // Idle polls: nothing new for a few intervals.
    front.reset_requests();
    std::thread::sleep(Duration::from_secs(16));
    let idle: Vec<_> = front
        .requests()
        .into_iter()
        .filter(|r| r.path == "/events")
        .collect();
    // A poll starts with a `q[after]` query; following pages carry only a page token.
    let polls = idle
        .iter()
        .filter(|r| r.param("q[after]").is_some())
        .count()
        .max(1);

    println!(
        "economy: {events} events, {} highlights, plan {rpm} rpm",
        lines.len()
    );
    println!(
        "economy: backfill requests {pages} vs ideal ceil(events/15) = {ideal} ({:+.1}%), {:.4} requests/event",
        (pages as f64 / ideal as f64 - 1.0) * 100.0,
        pages as f64 / events as f64
    );
    println!("economy: 429 responses {throttled}");
    println!(
        "economy: backfill wall {span:.1} s vs rate-limit bound {bound:.1} s: {:.0}% of the budget used",
        if span > 0.0 {
            bound / span * 100.0
        } else {
            100.0
        }
    );
    println!(
        "economy: idle: {} requests over {polls} polls = {:.2} per poll",
        idle.len(),
        idle.len() as f64 / polls as f64
    );
    assert_eq!(throttled, 0, "no 429 with the limit known");
    assert_eq!(lines.len(), events);
}
