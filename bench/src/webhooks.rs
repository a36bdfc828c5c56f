//! `webhooks`: the same pre-signed load against the daemon and against the baseline server,
//! alternating, `--runs` times each; prints medians with min/max and frontsync/baseline.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::load::{self, LoadSpec, NONE, Payloads, Tail};
use crate::server::{self, RssSampler, Server};
use crate::stats::{self, Figures, Spread, fmt_num, ms, quantile};

/// The rule secret written to the temp config.
pub const RULE_SECRET: &str = "bench-rule-secret";
const ROUTE: &str = "/webhooks/front/acme";

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub common: crate::DaemonArgs,
    /// Measured webhooks per run (distinct event and conversation ids).
    #[arg(long, default_value_t = 20_000)]
    pub n: usize,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Open loop: send at this many requests per second (default: closed loop, as fast as
    /// answers come back).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Runs of each target (alternating frontsync, baseline).
    #[arg(long, default_value_t = 1)]
    pub runs: usize,
    /// Webhooks sent (closed loop) before measuring, on every run.
    #[arg(long, default_value_t = 1_000)]
    pub warmup: usize,
    /// Also configure a stdout sink (the daemon's stdout goes to /dev/null).
    #[arg(long)]
    pub stdout_sink: bool,
    /// Start the daemon on a copy of this state file (e.g. one made by `seen-ids --keep`).
    #[arg(long, value_name = "PATH")]
    pub seed_state: Option<PathBuf>,
    /// Only measure frontsync.
    #[arg(long)]
    pub no_baseline: bool,
    /// Before each run, wait up to this many seconds for other processes to use less than
    /// 0.2 cores (a shared machine). 0 = do not wait.
    #[arg(long, default_value_t = 10)]
    pub quiet_wait: u64,
    /// Run the daemon with the writer's per-commit debug line on and report commits,
    /// operations per commit and commit time (costs one log line per commit).
    #[arg(long)]
    pub commit_stats: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Frontsync,
    Baseline,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Frontsync => "frontsync",
            Target::Baseline => "baseline",
        }
    }
}

/// Rows of the table: metric key, label, whether frontsync/baseline is meaningful.
const ROWS: &[(&str, &str, bool)] = &[
    ("throughput", "throughput (acks/s)", true),
    ("ack_p50_ms", "ack latency p50 (ms)", true),
    ("ack_p99_ms", "ack latency p99 (ms)", true),
    ("ack_p999_ms", "ack latency p99.9 (ms)", true),
    ("ack_max_ms", "ack latency max (ms)", true),
    ("send_lag_p99_ms", "open-loop send lag p99 (ms)", false),
    ("e2e_p50_ms", "webhook->jsonl p50 (ms)", false),
    ("e2e_p99_ms", "webhook->jsonl p99 (ms)", false),
    ("e2e_max_ms", "webhook->jsonl max (ms)", false),
    ("e2e_missing", "jsonl lines missing", false),
    ("ready_ms", "start -> ready (ms)", true),
    ("rss_idle_mb", "RSS idle after ready (MB)", true),
    ("rss_load_mb", "RSS max sampled in run (MB)", true),
    ("rss_hwm_mb", "RSS high-water VmHWM (MB)", true),
    ("cpu_cores", "server CPU during load (cores)", true),
    ("cpu_us_per_ack", "server CPU per ack (us)", true),
    ("client_cpu_cores", "load generator CPU (cores)", true),
    ("other_cpu_cores", "other processes CPU (cores)", false),
    ("stop_max_ms", "longest machine stop seen (ms)", false),
    ("commits_per_s", "writer commits per s", false),
    ("ops_per_commit", "writer ops per commit (mean)", false),
    ("commit_p50_ms", "writer commit time p50 (ms)", false),
    ("commit_p99_ms", "writer commit time p99 (ms)", false),
    ("non_200", "non-200 answers", false),
    ("errors", "transport errors", false),
];

pub fn main(args: Args) -> anyhow::Result<()> {
    if args.n == 0 || args.concurrency == 0 || args.runs == 0 {
        bail!("--n, --concurrency and --runs must be at least 1");
    }
    if args.rate.is_some_and(|r| r.is_nan() || r <= 0.0) {
        bail!("--rate must be above 0");
    }
    let daemon = std::fs::canonicalize(&args.common.daemon).with_context(|| {
        format!(
            "daemon binary {} (build it with `cargo build --release`)",
            args.common.daemon.display()
        )
    })?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    eprintln!(
        "preparing and signing {} + {} webhooks...",
        args.n, args.warmup
    );
    let payloads = Arc::new(Payloads::build("b", args.n, RULE_SECRET.as_bytes()));
    let warmup = Arc::new(Payloads::build("w", args.warmup, RULE_SECRET.as_bytes()));
    let mut runs: Vec<(Target, Figures)> = Vec::new();
    for run in 0..args.runs {
        let mut targets = vec![Target::Frontsync];
        if !args.no_baseline {
            targets.push(Target::Baseline);
        }
        for target in targets {
            eprintln!("run {}/{}: {}...", run + 1, args.runs, target.name());
            let figures = run_once(&rt, &args, &daemon, target, &payloads, &warmup)?;
            let get = |k: &str| figures.get(k).copied().unwrap_or(f64::NAN);
            eprintln!(
                "  {:.0} acks/s, ack p99 {:.2} ms, jsonl p99 {:.2} ms, other processes {:.2} cores",
                get("throughput"),
                get("ack_p99_ms"),
                get("e2e_p99_ms"),
                get("other_cpu_cores"),
            );
            runs.push((target, figures));
        }
    }
    report(&args, payloads.mean_body_bytes(), &runs)
}

fn run_once(
    rt: &tokio::runtime::Runtime,
    args: &Args,
    daemon: &Path,
    target: Target,
    payloads: &Arc<Payloads>,
    warmup: &Arc<Payloads>,
) -> anyhow::Result<Figures> {
    let dir = tempfile::Builder::new()
        .prefix("frontsync-bench")
        .tempdir()?;
    let (cmd, jsonl) = match target {
        Target::Frontsync => {
            let config = server::write_frontsync_config(
                dir.path(),
                RULE_SECRET,
                "state/frontsync.redb",
                args.stdout_sink,
            )?;
            if let Some(seed) = &args.seed_state {
                std::fs::create_dir_all(dir.path().join("state"))?;
                std::fs::copy(seed, dir.path().join("state/frontsync.redb"))
                    .with_context(|| format!("cannot copy {}", seed.display()))?;
                // Flush the copy now, or the daemon's first commit (fsync) would pay for
                // writing back hundreds of MB of dirty pages and its ready time with it.
                std::fs::File::open(dir.path().join("state/frontsync.redb"))?.sync_all()?;
            }
            (
                server::frontsync_command(daemon, &config, args.commit_stats),
                Some(dir.path().join("out/highlights.jsonl")),
            )
        }
        Target::Baseline => (server::baseline_command()?, None),
    };
    if args.quiet_wait > 0 {
        server::wait_quiet(Duration::from_secs(args.quiet_wait), 0.2);
    }
    let srv = Server::spawn(cmd, target.name())?;
    let mut f = Figures::new();
    f.insert("ready_ms", srv.ready_after.as_secs_f64() * 1e3);
    std::thread::sleep(Duration::from_millis(300));
    if let Some((rss, _)) = server::memory_kib(srv.pid) {
        f.insert("rss_idle_mb", rss as f64 / 1024.0);
    }
    let base = Instant::now();
    let closed = LoadSpec {
        concurrency: args.concurrency,
        rate: None,
    };
    if !warmup.is_empty() {
        let conns = rt.block_on(load::connect_all(srv.addr, args.concurrency))?;
        let w = rt.block_on(load::run(
            srv.addr,
            conns,
            warmup.requests(srv.addr, ROUTE),
            closed,
            base,
        ))?;
        if w.ok != warmup.len() {
            bail!(
                "{}: warmup got {} of {} acknowledged; server stderr:\n{}",
                target.name(),
                w.ok,
                warmup.len(),
                srv.stderr_tail()
            );
        }
        // Let the sink catch up with the warmup before measuring.
        std::thread::sleep(Duration::from_millis(300));
    }
    // Built before the CPU window opens, like the bodies and signatures.
    let requests = payloads.requests(srv.addr, ROUTE);
    let connected = Instant::now();
    let conns = rt.block_on(load::connect_all(srv.addr, args.concurrency))?;
    let connect_ms = connected.elapsed().as_secs_f64() * 1e3;
    let _ = srv.take_commits();
    let tail = jsonl.map(|p| Tail::start(p, "b", payloads.len(), base));
    let sampler = RssSampler::start(srv.pid);
    let pid = srv.pid.to_string();
    let window = Instant::now();
    let cpu0 = server::cpu_seconds(&pid).context("cannot read server CPU time")?;
    let client0 = server::cpu_seconds("self").unwrap_or(0.0);
    let machine0 = server::machine_busy_seconds().unwrap_or(0.0);
    let spec = LoadSpec {
        concurrency: args.concurrency,
        rate: args.rate,
    };
    let res = rt.block_on(load::run(srv.addr, conns, requests, spec, base))?;
    let cpu1 = server::cpu_seconds(&pid).unwrap_or(cpu0);
    let client1 = server::cpu_seconds("self").unwrap_or(client0);
    let machine1 = server::machine_busy_seconds().unwrap_or(machine0);
    let elapsed = res.elapsed.as_secs_f64().max(1e-9);
    // CPU shares are over the measured window (a little longer than `elapsed`).
    let window = window.elapsed().as_secs_f64().max(1e-9);

    // End to end: wait for the acknowledged events' lines.
    if let Some(tail) = tail {
        let seen = tail.finish(res.ok, Duration::from_secs(60))?;
        let mut e2e: Vec<u64> = seen
            .iter()
            .zip(res.sent_ns.iter())
            .filter_map(|(s, t)| {
                let (s, t) = (s.load(Ordering::Relaxed), t.load(Ordering::Relaxed));
                (s != NONE && t != NONE).then(|| s.saturating_sub(t))
            })
            .collect();
        e2e.sort_unstable();
        f.insert("e2e_missing", res.ok.saturating_sub(e2e.len()) as f64);
        if let Some(v) = quantile(&e2e, 0.5) {
            f.insert("e2e_p50_ms", ms(v));
        }
        if let Some(v) = quantile(&e2e, 0.99) {
            f.insert("e2e_p99_ms", ms(v));
        }
        if let Some(v) = e2e.last() {
            f.insert("e2e_max_ms", ms(*v));
        }
    }
    let cpu_done = server::cpu_seconds(&pid).unwrap_or(cpu1);
    let mut commits = srv.take_commits();
    let (rss_load, sampler_late) = sampler.finish();
    f.insert("stop_max_ms", sampler_late.as_secs_f64() * 1e3);
    let hwm = server::memory_kib(srv.pid).map(|(_, h)| h);
    let status = srv.stop()?;
    if !commits.is_empty() {
        let n = commits.len() as f64;
        f.insert("commits_per_s", n / elapsed);
        f.insert(
            "ops_per_commit",
            commits.iter().map(|c| c.0).sum::<u64>() as f64 / n,
        );
        let mut us: Vec<u64> = commits.drain(..).map(|c| c.1 * 1000).collect();
        us.sort_unstable();
        if let (Some(p50), Some(p99)) = (quantile(&us, 0.5), quantile(&us, 0.99)) {
            f.insert("commit_p50_ms", ms(p50));
            f.insert("commit_p99_ms", ms(p99));
        }
    }
    if target == Target::Frontsync && !status.success() {
        eprintln!("warning: frontsync exited with {status}");
    }

    let mut lat = res.latencies_ns;
    lat.sort_unstable();
    let mut lag = res.lag_ns;
    lag.sort_unstable();
    f.insert("throughput", res.ok as f64 / elapsed);
    for (key, q) in [
        ("ack_p50_ms", 0.5),
        ("ack_p99_ms", 0.99),
        ("ack_p999_ms", 0.999),
        ("ack_max_ms", 1.0),
    ] {
        if let Some(v) = quantile(&lat, q) {
            f.insert(key, ms(v));
        }
    }
    if let Some(v) = quantile(&lag, 0.99) {
        f.insert("send_lag_p99_ms", ms(v));
    }
    f.insert("rss_load_mb", rss_load as f64 / 1024.0);
    if let Some(h) = hwm {
        f.insert("rss_hwm_mb", h as f64 / 1024.0);
    }
    f.insert("cpu_cores", (cpu1 - cpu0) / window);
    // Includes delivering the lines to the sink after the last ack.
    f.insert(
        "cpu_us_per_ack",
        (cpu_done - cpu0) / res.ok.max(1) as f64 * 1e6,
    );
    f.insert("client_cpu_cores", (client1 - client0) / window);
    f.insert(
        "other_cpu_cores",
        ((machine1 - machine0) - (cpu1 - cpu0) - (client1 - client0)).max(0.0) / window,
    );
    f.insert("non_200", res.non_200 as f64);
    f.insert("errors", res.errors as f64);
    f.insert("elapsed_s", elapsed);
    f.insert("connect_ms", connect_ms);
    f.insert("ok", res.ok as f64);
    if res.non_200 > 0 || res.errors > 0 {
        eprintln!(
            "warning: {}: {} non-200 answers, {} transport errors",
            target.name(),
            res.non_200,
            res.errors
        );
    }
    Ok(f)
}

/// `key` of each frontsync run over that of the baseline run made right after it (the runs
/// alternate, so the i-th of each list are a pair), for the pairs where both have it.
///
/// The ratio of the two medians hides how the pairs spread, and on some hosts the baseline
/// runs in two modes minutes apart (BENCHMARKS.md: 9-10.5 or 11.5-16.5 us per request), so
/// the tool shows the pairs too.
fn pair_ratios(frontsync: &[&Figures], baseline: &[&Figures], key: &str) -> Vec<f64> {
    frontsync
        .iter()
        .zip(baseline)
        .filter_map(|(a, b)| match (a.get(key), b.get(key)) {
            (Some(a), Some(b)) if *b != 0.0 => Some(a / b),
            _ => None,
        })
        .collect()
}

/// The frontsync median of `key` over the baseline's best run (the most its runs reached),
/// and that best: against the physical limit the baseline stands for, not against its
/// median, which a slow mode of the host can lower.
fn over_best_baseline(
    frontsync: &BTreeMap<&'static str, Spread>,
    baseline: &BTreeMap<&'static str, Spread>,
    key: &str,
) -> Option<(f64, f64)> {
    let (f, b) = (frontsync.get(key)?, baseline.get(key)?);
    (b.max != 0.0).then(|| (f.median / b.max, b.max))
}

fn report(args: &Args, body_bytes: usize, runs: &[(Target, Figures)]) -> anyhow::Result<()> {
    let of = |t: Target| -> Vec<&Figures> {
        runs.iter()
            .filter(|(x, _)| *x == t)
            .map(|(_, f)| f)
            .collect()
    };
    let (fs_runs, bl_runs) = (of(Target::Frontsync), of(Target::Baseline));
    let fs = stats::summarize(&fs_runs);
    let bl = stats::summarize(&bl_runs);
    let ratio = |key: &str| -> Option<f64> {
        let (a, b) = (fs.get(key)?.median, bl.get(key)?.median);
        (b != 0.0).then(|| a / b)
    };
    let pairs = pair_ratios(&fs_runs, &bl_runs, "throughput");
    let over_best = over_best_baseline(&fs, &bl, "throughput");
    let mode = match args.rate {
        Some(r) => format!("open loop {r} req/s"),
        None => "closed loop".to_string(),
    };
    if args.common.json {
        let spread_map = |m: &BTreeMap<&'static str, Spread>| {
            m.iter()
                .map(|(k, s)| (k.to_string(), s.to_json()))
                .collect::<serde_json::Map<_, _>>()
        };
        let ratios: serde_json::Map<_, _> = ROWS
            .iter()
            .filter(|(_, _, r)| *r)
            .filter_map(|(k, _, _)| ratio(k).map(|v| (k.to_string(), v.into())))
            .collect();
        let doc = serde_json::json!({
            "command": "webhooks",
            "params": {
                "n": args.n, "concurrency": args.concurrency, "rate": args.rate,
                "runs": args.runs, "warmup": args.warmup, "stdout_sink": args.stdout_sink,
                "seed_state": args.seed_state, "body_bytes": body_bytes,
            },
            "machine": crate::machine(),
            "runs": runs.iter().map(|(t, f)| serde_json::json!({
                "target": t.name(), "figures": f,
            })).collect::<Vec<_>>(),
            "frontsync": spread_map(&fs),
            "baseline": spread_map(&bl),
            "ratio_frontsync_over_baseline": ratios,
            "throughput_ratio_per_pair": Spread::of(&pairs).map(Spread::to_json),
            "throughput_over_best_baseline": over_best.map(|(r, _)| r),
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    println!(
        "webhooks: n={} concurrency={} {mode}, body {body_bytes} B, warmup {}, {} run(s) each{}{}",
        args.n,
        args.concurrency,
        args.warmup,
        args.runs,
        if args.stdout_sink {
            ", jsonl+stdout sinks"
        } else {
            ", jsonl sink"
        },
        args.seed_state
            .as_ref()
            .map(|p| format!(", seeded from {}", p.display()))
            .unwrap_or_default(),
    );
    let cell = |s: Option<&Spread>| match s {
        None => "-".to_string(),
        Some(s) if s.runs == 1 => fmt_num(s.median),
        Some(s) => format!(
            "{} [{}..{}]",
            fmt_num(s.median),
            fmt_num(s.min),
            fmt_num(s.max)
        ),
    };
    println!(
        "{:<32} {:>28} {:>28} {:>8}",
        "metric (median [min..max])", "frontsync", "baseline", "ratio"
    );
    for (key, label, has_ratio) in ROWS {
        let (a, b) = (fs.get(key), bl.get(key));
        if a.is_none() && b.is_none() {
            continue;
        }
        let r = if *has_ratio {
            ratio(key).map(|r| format!("{r:.3}"))
        } else {
            None
        };
        println!(
            "{:<32} {:>28} {:>28} {:>8}",
            label,
            cell(a),
            cell(b),
            r.unwrap_or_else(|| "-".into())
        );
    }
    if let Some(p) = Spread::of(&pairs) {
        println!(
            "throughput ratio per pair (each frontsync run / the baseline run after it): {:.3} [{:.3}..{:.3}] over {} pairs",
            p.median, p.min, p.max, p.runs
        );
    }
    if let Some((r, best)) = over_best {
        println!(
            "throughput ratio against the baseline's best run ({}): {r:.3}",
            fmt_num(best)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(throughput: f64) -> Figures {
        let mut f = Figures::new();
        f.insert("throughput", throughput);
        f
    }

    #[test]
    fn pairs_each_frontsync_run_with_the_baseline_run_after_it() {
        let (f1, f2, f3) = (figures(30.0), figures(20.0), figures(28.0));
        let (b1, b2, b3) = (figures(100.0), figures(50.0), figures(70.0));
        let (fs, bl) = ([&f1, &f2, &f3], [&b1, &b2, &b3]);
        assert_eq!(pair_ratios(&fs, &bl, "throughput"), vec![0.3, 0.4, 0.4]);
        assert!(pair_ratios(&fs, &bl, "no such figure").is_empty());
        // The frontsync median (28) over the best baseline run (100), not its median (70).
        let (fs, bl) = (stats::summarize(&fs), stats::summarize(&bl));
        assert_eq!(
            over_best_baseline(&fs, &bl, "throughput"),
            Some((0.28, 100.0))
        );
    }

    #[test]
    fn without_a_baseline_there_is_no_ratio() {
        let (f1, f2) = (figures(30.0), figures(20.0));
        let fs = [&f1, &f2];
        assert!(pair_ratios(&fs, &[], "throughput").is_empty());
        let empty = stats::summarize(&[]);
        assert_eq!(
            over_best_baseline(&stats::summarize(&fs), &empty, "throughput"),
            None
        );
    }
}
