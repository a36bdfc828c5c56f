//! What parsing one webhook body costs, for counting under callgrind rather than timing:
//! `parse_webhook_body` on the bench body (`common`), N times, and with `--snapshot` each
//! event's `snapshot_from_event` too. Run it twice with different N under
//! `valgrind --tool=callgrind` and divide the difference of the two totals by the
//! difference of the Ns: start-up cancels out, and what is left is instructions per parse.
//! Uses the system allocator, as `hot_path` does (the daemon's mimalloc costs fewer
//! instructions per allocation; BENCHMARKS.md has both).
//!
//! `cargo bench -p frontsync --bench parse_cost --no-run`, then the binary it names:
//! `parse_cost N [--snapshot]` (N defaults to 1000).

mod common;

use std::hint::black_box;

use frontsync::front::model::{WebhookBody, parse_webhook_body};
use frontsync::normalize::snapshot_from_event;

fn main() {
    let mut n: usize = 1000;
    let mut snapshot = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--snapshot" => snapshot = true,
            // `cargo bench` passes `--bench`: nothing to do for it.
            "--bench" => {}
            other => match other.parse() {
                Ok(v) => n = v,
                Err(_) => {
                    eprintln!("usage: parse_cost [N] [--snapshot]");
                    std::process::exit(2);
                }
            },
        }
    }
    let body = common::body("evt_bench1", "cnv_bench1");
    for _ in 0..n {
        let parsed = parse_webhook_body(black_box(&body)).expect("the bench body parses");
        if snapshot && let WebhookBody::Rule(event) = &parsed {
            black_box(snapshot_from_event(event).expect("the bench body names a conversation"));
        }
        black_box(parsed);
    }
}
