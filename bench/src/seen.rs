//! `seen-ids`: writes a state file holding N seen event ids through the library's `Store`,
//! then starts the daemon on it and on an empty state, alternating, and compares the time
//! from process start to the `ready` line and the idle RSS.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use frontsync::store::Store;

use crate::server::{self, Server};
use crate::stats::{self, Figures, fmt_num};
use crate::webhooks::RULE_SECRET;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub common: crate::DaemonArgs,
    /// Seen event ids to put in the state file.
    #[arg(long, default_value_t = 1_000_000)]
    pub n: usize,
    /// Starts of each variant (alternating empty, seeded).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Event ids per write transaction while preparing.
    #[arg(long, default_value_t = 50_000)]
    pub batch: usize,
    /// Keep the prepared state file here (reuse it with `webhooks --seed-state`).
    #[arg(long, value_name = "PATH")]
    pub keep: Option<PathBuf>,
    /// Before each start, wait up to this many seconds for other processes to use less
    /// than 0.2 cores. 0 = do not wait.
    #[arg(long, default_value_t = 10)]
    pub quiet_wait: u64,
}

/// A Front-looking event id (`evt_` + 16 hex digits), distinct for every `i` (multiplying by
/// an odd constant is a bijection on u64), in no particular order, like real ids arrive.
fn event_id(i: u64) -> String {
    format!("evt_{:016x}", i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// Writes `n` seen ids for connection `acme` into a new state file at `path`.
fn prepare(path: &Path, n: usize, batch: usize) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let store = Store::open(path)?;
    let now = frontsync::ingest::now_ms();
    let mut i = 0u64;
    while (i as usize) < n {
        let end = (i + batch.max(1) as u64).min(n as u64);
        store.write(|t| {
            for k in i..end {
                t.mark_seen("acme", &event_id(k), now)?;
            }
            Ok(())
        })?;
        i = end;
    }
    let count = store.seen_events()?;
    drop(store);
    if count != n as u64 {
        bail!("prepared state holds {count} seen ids, wanted {n}");
    }
    Ok(started.elapsed())
}

pub fn main(args: Args) -> anyhow::Result<()> {
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let daemon = std::fs::canonicalize(&args.common.daemon).with_context(|| {
        format!(
            "daemon binary {} (build it with `cargo build --release`)",
            args.common.daemon.display()
        )
    })?;
    let seeded = tempfile::Builder::new()
        .prefix("frontsync-bench-seen")
        .tempdir()?;
    let state = seeded.path().join("state/frontsync.redb");
    eprintln!("writing {} seen event ids...", args.n);
    let prep = prepare(&state, args.n, args.batch)?;
    let state_bytes = std::fs::metadata(&state)?.len();
    eprintln!(
        "  {:.1} s ({:.0} ids/s), state file {:.1} MB",
        prep.as_secs_f64(),
        args.n as f64 / prep.as_secs_f64(),
        state_bytes as f64 / 1e6
    );
    let seeded_config =
        server::write_frontsync_config(seeded.path(), RULE_SECRET, "state/frontsync.redb", false)?;

    let mut empty_runs = Vec::new();
    let mut seeded_runs = Vec::new();
    for run in 0..args.runs {
        eprintln!("run {}/{}", run + 1, args.runs);
        let empty = tempfile::Builder::new()
            .prefix("frontsync-bench-empty")
            .tempdir()?;
        let config = server::write_frontsync_config(
            empty.path(),
            RULE_SECRET,
            "state/frontsync.redb",
            false,
        )?;
        empty_runs.push(start_once(&daemon, &config, args.quiet_wait)?);
        seeded_runs.push(start_once(&daemon, &seeded_config, args.quiet_wait)?);
    }
    let after = std::fs::metadata(&state)?.len();
    if let Some(keep) = &args.keep {
        std::fs::copy(&state, keep)
            .with_context(|| format!("cannot copy to {}", keep.display()))?;
    }

    let e = stats::summarize(&empty_runs.iter().collect::<Vec<_>>());
    let s = stats::summarize(&seeded_runs.iter().collect::<Vec<_>>());
    if args.common.json {
        let m = |x: &std::collections::BTreeMap<&'static str, stats::Spread>| {
            x.iter()
                .map(|(k, v)| (k.to_string(), v.to_json()))
                .collect::<serde_json::Map<_, _>>()
        };
        let doc = serde_json::json!({
            "command": "seen-ids",
            "params": { "n": args.n, "runs": args.runs, "batch": args.batch },
            "machine": crate::machine(),
            "prepare_s": prep.as_secs_f64(),
            "state_bytes": state_bytes,
            "state_bytes_after_runs": after,
            "empty": m(&e),
            "seeded": m(&s),
            "runs_empty": empty_runs,
            "runs_seeded": seeded_runs,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    println!(
        "seen-ids: n={} ({:.1} MB state file, prepared in {:.1} s), {} start(s) each",
        args.n,
        state_bytes as f64 / 1e6,
        prep.as_secs_f64(),
        args.runs
    );
    println!(
        "{:<28} {:>26} {:>26} {:>8}",
        "metric (median [min..max])",
        "empty state",
        format!("{} seen ids", args.n),
        "ratio"
    );
    for (key, label) in [
        ("ready_ms", "start -> ready (ms)"),
        ("rss_idle_mb", "RSS idle after ready (MB)"),
        ("rss_hwm_mb", "RSS high-water (MB)"),
    ] {
        let cell = |m: &std::collections::BTreeMap<&'static str, stats::Spread>| {
            m.get(key)
                .map(|s| {
                    format!(
                        "{} [{}..{}]",
                        fmt_num(s.median),
                        fmt_num(s.min),
                        fmt_num(s.max)
                    )
                })
                .unwrap_or_else(|| "-".into())
        };
        let ratio = match (e.get(key), s.get(key)) {
            (Some(a), Some(b)) if a.median != 0.0 => format!("{:.3}", b.median / a.median),
            _ => "-".into(),
        };
        println!(
            "{:<28} {:>26} {:>26} {:>8}",
            label,
            cell(&e),
            cell(&s),
            ratio
        );
    }
    Ok(())
}

fn start_once(daemon: &Path, config: &Path, quiet_wait: u64) -> anyhow::Result<Figures> {
    if quiet_wait > 0 {
        server::wait_quiet(Duration::from_secs(quiet_wait), 0.2);
    }
    let srv = Server::spawn(
        server::frontsync_command(daemon, config, false),
        "frontsync",
    )?;
    let mut f = Figures::new();
    f.insert("ready_ms", srv.ready_after.as_secs_f64() * 1e3);
    // Idle: give the sink tasks and the allocator a moment to settle.
    std::thread::sleep(Duration::from_millis(500));
    if let Some((rss, hwm)) = server::memory_kib(srv.pid) {
        f.insert("rss_idle_mb", rss as f64 / 1024.0);
        f.insert("rss_hwm_mb", hwm as f64 / 1024.0);
    }
    let status = srv.stop()?;
    if !status.success() {
        eprintln!("warning: frontsync exited with {status}");
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_are_distinct_and_front_shaped() {
        let ids: std::collections::HashSet<_> = (0..10_000).map(event_id).collect();
        assert_eq!(ids.len(), 10_000);
        assert!(event_id(1).starts_with("evt_") && event_id(1).len() == 20);
    }

    #[test]
    fn prepares_a_small_state() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        prepare(&path, 250, 100).unwrap();
        assert_eq!(Store::open(&path).unwrap().seen_events().unwrap(), 250);
    }
}
