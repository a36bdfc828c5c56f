//! What the state writer costs per webhook event, counted rather than timed: the writer
//! thread's CPU time (from the kernel's per-thread run time, which leaves out time the
//! host stole from this VM), the bytes and write calls it hands the kernel, and the wall
//! time of a commit. Batches of 25 events are what the writer commits at saturation with
//! 64 connections; 1 is a quiet hour.
//!
//! On a shared host the wall times of a load run swing by 20 % and more; the writer's CPU
//! per event swings far less, so this is the number to compare before and after a change
//! to the commit path.
//!
//! By default nothing reads the outbox, as if the sink were down: its entries are held up
//! to the held budget, then written into redb. With `--ack` a sink keeps up, as the JSONL
//! sink does in the daemon: before each batch, the entries the batches before it left are
//! acknowledged, in a commit of their own (2 commits per batch). In the daemon at
//! saturation an acknowledgement mostly shares a commit with intake; sent together here it
//! would share one or not by a race with the writer's wake-up, so the bench keeps it apart
//! and its figures are an upper bound by one small commit per batch.
//!
//! `cargo bench -p frontsync --bench writer_cost` (about 30 s). Options after `--`:
//! `--events N` per run (default 20000), `--runs R` (default 5), `--batch B` (only this
//! batch size), `--ack`.

mod common;

use std::time::Instant;

// The daemon's allocator, so allocation costs match what the daemon pays.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The writer thread's id, found by its name. The thread names itself once it runs, which
/// may be a moment after it was spawned: look again for up to a second.
fn writer_tid() -> u32 {
    for _ in 0..100 {
        let tasks = std::fs::read_dir("/proc/self/task").expect("/proc/self/task");
        for t in tasks.flatten() {
            let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            if comm.trim() == "frontsync-write" {
                return t.file_name().to_string_lossy().parse().expect("a tid");
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("no frontsync-writer thread")
}

/// Nanoseconds the thread has run on a CPU (first field of schedstat).
fn run_ns(tid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).expect("schedstat");
    s.split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .expect("schedstat run time")
}

/// (`wchar`, `syscw`) of this process: bytes and write calls handed to the kernel.
fn io() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/self/io").expect("/proc/self/io");
    let field = |name: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    (field("wchar:"), field("syscw:"))
}

/// The block device's own counters (`/sys/dev/block/M:m/stat`) for the device holding
/// `path`: (write requests, KiB written). The whole device's, so other processes' writes
/// count too; `/proc/self/io`'s `write_bytes` is not used because it counts every page a
/// write dirties, and with large page-cache folios a 1 KiB write into a file region
/// written before counts as a whole folio of up to 2 MiB although only its dirty blocks
/// reach the disk.
fn device_writes(path: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(path).ok()?.dev();
    let (major, minor) = ((dev >> 8) & 0xfff, (dev & 0xff) | ((dev >> 12) & 0xfff00));
    let s = std::fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/stat")).ok()?;
    let f: Vec<u64> = s
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    Some((*f.get(4)?, *f.get(6)? / 2))
}

struct Run {
    cpu_us_per_event: f64,
    wall_us_per_event: f64,
    kib_per_event: f64,
    writes_per_commit: f64,
    disk_kib_per_event: f64,
    disk_requests_per_commit: f64,
    commits_per_batch: f64,
}

fn median(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn main() {
    let mut events = 20_000u64;
    let mut runs = 5usize;
    let mut batches = vec![1u64, 25, 64];
    let mut ack = false;
    let args: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < args.len() {
        match args[i].as_str() {
            "--events" => {
                events = args[i + 1].parse().expect("--events N");
                i += 1;
            }
            "--runs" => {
                runs = args[i + 1].parse().expect("--runs R");
                i += 1;
            }
            "--batch" => {
                batches = vec![args[i + 1].parse().expect("--batch B")];
                i += 1;
            }
            "--ack" => ack = true,
            _ => {} // cargo bench passes --bench
        }
        i += 1;
    }

    let common::WriterParts {
        dir,
        store,
        writer,
        thread,
        metrics,
    } = common::writer_parts();
    let sink = common::config()
        .sinks
        .keys()
        .next()
        .expect("the bench config has a sink")
        .clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let template = common::template();
    let tid = writer_tid();
    let mut next = 0u64;
    let mut send = |n: u64, batch: u64| {
        let mut left = n;
        while left > 0 {
            let k = left.min(batch);
            let evs: Vec<_> = (0..k)
                .map(|_| {
                    next += 1;
                    common::incoming(&template, next)
                })
                .collect();
            // What the previous batches left in the outbox, read as the JSONL sink reads it,
            // acknowledged before this one.
            let delivered: Vec<u64> = if ack {
                let head = store.outbox_head(&sink, frontsync_sinks::jsonl::MAX_BATCH);
                head.expect("outbox head").iter().map(|d| d.seq).collect()
            } else {
                Vec::new()
            };
            if !delivered.is_empty() {
                rt.block_on(writer.ack(&sink, delivered)).expect("ack");
            }
            let out = rt.block_on(writer.ingest(evs, Vec::new())).expect("ingest");
            assert_eq!(out.new_events as u64, k);
            left -= k;
        }
    };
    // Warm-up: a state file that is not empty, pages in the cache, and a redo log file
    // grown to 8 MiB and then started over by a checkpoint (the next commit after a
    // second), as in a daemon that has run a while: the runs below write over it instead
    // of growing it (the 1,000 batch-1 commits of a default run take 1.7 MiB of log).
    send(5_000, 25);
    std::thread::sleep(frontsync::store::CHECKPOINT_EVERY + std::time::Duration::from_millis(50));
    send(1, 1);

    println!(
        "writer cost per event ({events} new events per run, median of {runs} [min..max]; {})",
        if ack {
            "the sink acknowledges each batch before the next, in a commit of its own"
        } else {
            "nothing acknowledged: the sink is down"
        }
    );
    println!(
        "{:>6} {:>22} {:>22} {:>12} {:>14} {:>10} {:>16} {:>15}",
        "batch",
        "writer CPU us/event",
        "wall us/event",
        "KiB written",
        "writes/commit",
        "disk KiB",
        "disk reqs/commit",
        "commits/batch"
    );
    for batch in batches {
        let n = if batch == 1 { events / 10 } else { events };
        let mut all = Vec::new();
        for _ in 0..runs {
            let (w0, s0) = io();
            let (r0, d0) = device_writes(dir.path()).unwrap_or_default();
            let m0 = metrics.batch_size.count();
            let c0 = run_ns(tid);
            let t0 = Instant::now();
            send(n, batch);
            let wall = t0.elapsed().as_secs_f64() * 1e6;
            let c1 = run_ns(tid);
            let (w1, s1) = io();
            let (r1, d1) = device_writes(dir.path()).unwrap_or_default();
            let commits = (metrics.batch_size.count() - m0) as f64;
            all.push(Run {
                cpu_us_per_event: (c1 - c0) as f64 / 1e3 / n as f64,
                wall_us_per_event: wall / n as f64,
                kib_per_event: (w1 - w0) as f64 / 1024.0 / n as f64,
                writes_per_commit: (s1 - s0) as f64 / commits,
                disk_kib_per_event: (d1 - d0) as f64 / n as f64,
                disk_requests_per_commit: (r1 - r0) as f64 / commits,
                commits_per_batch: commits / n.div_ceil(batch) as f64,
            });
        }
        let show = |f: fn(&Run) -> f64| {
            let (m, lo, hi) = median(all.iter().map(f).collect());
            format!("{m:.1} [{lo:.1}..{hi:.1}]")
        };
        println!(
            "{batch:>6} {:>22} {:>22} {:>12} {:>14} {:>10} {:>16} {:>15}",
            show(|r| r.cpu_us_per_event),
            show(|r| r.wall_us_per_event),
            format!(
                "{:.2}",
                median(all.iter().map(|r| r.kib_per_event).collect()).0
            ),
            format!(
                "{:.1}",
                median(all.iter().map(|r| r.writes_per_commit).collect()).0
            ),
            format!(
                "{:.2}",
                median(all.iter().map(|r| r.disk_kib_per_event).collect()).0
            ),
            format!(
                "{:.2}",
                median(all.iter().map(|r| r.disk_requests_per_commit).collect()).0
            ),
            format!(
                "{:.2}",
                median(all.iter().map(|r| r.commits_per_batch).collect()).0
            ),
        );
    }
    drop(writer);
    thread.join().expect("writer thread");
}
