//! Starting a server under test (the frontsync daemon, or this binary's own baseline
//! server) as a child process, finding its address from its JSON log lines, sampling its
//! memory and CPU from `/proc`, and stopping it with SIGTERM.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// `/proc/PID/stat` times are in USER_HZ ticks, which Linux fixes at 100 for userspace on
/// every architecture this runs on (x86_64, aarch64).
pub const USER_HZ: f64 = 100.0;

/// What the stderr reader saw.
enum LogEvent {
    Listening(SocketAddr),
    Ready(Instant),
}

/// A running server process.
pub struct Server {
    child: Option<Child>,
    pub pid: u32,
    /// The webhook (or baseline) listener.
    pub addr: SocketAddr,
    /// Process start (just before `spawn`) to the `ready` log line being read.
    pub ready_after: Duration,
    log: Arc<Mutex<LogState>>,
}

/// What the stderr reader keeps.
#[derive(Default)]
struct LogState {
    /// The last lines.
    tail: Vec<String>,
    /// `(ops, elapsed_us)` of each writer commit logged (daemon at `frontsync::ingest=debug`).
    commits: Vec<(u64, u64)>,
}

impl Server {
    /// Spawns `cmd` (stderr is taken over; stdout goes to /dev/null) and waits for the
    /// `{"message":"listening","listener":"webhook",...}` and `{"message":"ready"}` lines.
    pub fn spawn(mut cmd: Command, what: &str) -> anyhow::Result<Server> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .env_remove("RUST_LOG")
            .env_remove("FRONTSYNC_LOG")
            .env_remove("JOURNAL_STREAM")
            .env_remove("NOTIFY_SOCKET");
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {what}"))?;
        let pid = child.id();
        let stderr = child.stderr.take().context("no stderr pipe")?;
        let log = Arc::new(Mutex::new(LogState::default()));
        let (tx, rx) = mpsc::channel();
        {
            let log = log.clone();
            std::thread::Builder::new()
                .name("server-stderr".into())
                .spawn(move || read_log(stderr, tx, log))?;
        }
        let deadline = started + Duration::from_secs(60);
        let mut addr = None;
        let ready_at = loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(LogEvent::Listening(a)) => addr = Some(a),
                Ok(LogEvent::Ready(at)) => break at,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = child.wait().ok();
                    bail!(
                        "{what} exited before it was ready ({status:?}); stderr:\n{}",
                        log.lock().map(|l| l.tail.join("\n")).unwrap_or_default()
                    );
                }
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("{what} was not ready within 60s");
            }
        };
        let addr = addr.with_context(|| format!("{what} logged no webhook listening address"))?;
        Ok(Server {
            child: Some(child),
            pid,
            addr,
            ready_after: ready_at.duration_since(started),
            log,
        })
    }

    /// SIGTERM, then waits (SIGKILL after 40 s).
    pub fn stop(mut self) -> anyhow::Result<ExitStatus> {
        let mut child = self.child.take().context("already stopped")?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Ok(child.wait()?);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The writer commits logged since the last call: `(ops, elapsed_us)` each.
    pub fn take_commits(&self) -> Vec<(u64, u64)> {
        self.log
            .lock()
            .map(|mut l| std::mem::take(&mut l.commits))
            .unwrap_or_default()
    }

    /// The last lines the server wrote to stderr.
    pub fn stderr_tail(&self) -> String {
        self.log
            .lock()
            .map(|l| l.tail.join("\n"))
            .unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn read_log(stderr: impl std::io::Read, tx: mpsc::Sender<LogEvent>, log: Arc<Mutex<LogState>>) {
    let mut ready_sent = false;
    for line in BufReader::new(stderr).lines() {
        let Ok(line) = line else { break };
        let now = Instant::now();
        let commit = line.contains("\"committed\"");
        if (!ready_sent || commit)
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
        {
            match (v["message"].as_str(), v["listener"].as_str()) {
                (Some("listening"), Some("webhook")) => {
                    if let Some(a) = v["addr"].as_str().and_then(|a| a.parse().ok()) {
                        let _ = tx.send(LogEvent::Listening(a));
                    }
                }
                (Some("ready"), _) => {
                    let _ = tx.send(LogEvent::Ready(now));
                    ready_sent = true;
                }
                (Some("committed"), _) => {
                    if let (Some(ops), Some(us)) = (v["ops"].as_u64(), v["elapsed_us"].as_u64())
                        && let Ok(mut l) = log.lock()
                    {
                        l.commits.push((ops, us));
                    }
                    continue;
                }
                _ => {}
            }
        }
        if let Ok(mut l) = log.lock() {
            if l.tail.len() >= 40 {
                l.tail.remove(0);
            }
            l.tail.push(line);
        }
    }
}

/// `VmRSS` and `VmHWM` of a process, in KiB.
pub fn memory_kib(pid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status(&text)
}

fn parse_status(text: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// utime + stime of a process (all its threads), in seconds.
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_ticks(&text).map(|t| t as f64 / USER_HZ)
}

fn parse_stat_ticks(text: &str) -> Option<u64> {
    // The command name (field 2) may hold spaces and parentheses: start after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Busy CPU time of the whole machine since boot (all CPUs, everything but idle and
/// iowait), in seconds. Subtracting the server's and the load generator's own time from
/// its growth gives what other processes used during a run.
pub fn machine_busy_seconds() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    parse_machine_busy(&text).map(|t| t as f64 / USER_HZ)
}

fn parse_machine_busy(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let busy = v.iter().take(8).sum::<u64>() - v.get(3)? - v.get(4)?;
    Some(busy)
}

/// Waits (up to `limit`) until other processes use less than `max_cores` over 1 s, so
/// runs do not overlap with, say, a compiler on a shared machine. Returns the load seen
/// last (cores).
pub fn wait_quiet(limit: Duration, max_cores: f64) -> f64 {
    let deadline = Instant::now() + limit;
    let mut warned = false;
    loop {
        let (Some(a), t) = (machine_busy_seconds(), Instant::now()) else {
            return 0.0;
        };
        std::thread::sleep(Duration::from_secs(1));
        let Some(b) = machine_busy_seconds() else {
            return 0.0;
        };
        let load = (b - a) / t.elapsed().as_secs_f64();
        if load < max_cores || Instant::now() >= deadline {
            if load >= max_cores {
                eprintln!("  warning: machine still busy ({load:.2} cores used by others)");
            }
            return load;
        }
        if !warned {
            eprintln!("  waiting for the machine to be quiet ({load:.2} cores busy)...");
            warned = true;
        }
    }
}

/// Samples a process's RSS every 20 ms until stopped; reports the largest `VmRSS` seen, and
/// the longest its own 20 ms sleep overran.
///
/// The overrun tells when the VM itself stopped during a run: on the shared host of
/// BENCHMARKS.md every thread of the machine, the load generator's included, sometimes
/// stands still for 100 ms and more, which then shows in the ack latency's p99.9 as if the
/// server had stalled. A sampler waiting for a CPU behind a busy run queue also oversleeps,
/// by a few milliseconds at most; what is far above that is the machine.
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    max_kib: Arc<AtomicU64>,
    max_late_us: Arc<AtomicU64>,
    handle: Option<JoinHandle<()>>,
}

const RSS_PERIOD: Duration = Duration::from_millis(20);

impl RssSampler {
    pub fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let max_kib = Arc::new(AtomicU64::new(0));
        let max_late_us = Arc::new(AtomicU64::new(0));
        let handle = {
            let (stop, max_kib, max_late_us) = (stop.clone(), max_kib.clone(), max_late_us.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some((rss, _)) = memory_kib(pid) {
                        max_kib.fetch_max(rss, Ordering::Relaxed);
                    }
                    let asleep = Instant::now();
                    std::thread::sleep(RSS_PERIOD);
                    let late = asleep.elapsed().saturating_sub(RSS_PERIOD);
                    max_late_us.fetch_max(late.as_micros() as u64, Ordering::Relaxed);
                }
            })
        };
        RssSampler {
            stop,
            max_kib,
            max_late_us,
            handle: Some(handle),
        }
    }

    /// Stops sampling; the largest VmRSS seen, in KiB, and the longest overrun of the
    /// sampler's sleep.
    pub fn finish(mut self) -> (u64, Duration) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        (
            self.max_kib.load(Ordering::Relaxed),
            Duration::from_micros(self.max_late_us.load(Ordering::Relaxed)),
        )
    }
}

/// Writes a frontsync config for one `acme` connection (rule secret in a file), a jsonl
/// sink (and optionally a stdout sink) and one subscription into `dir`; returns its path.
pub fn write_frontsync_config(
    dir: &Path,
    rule_secret: &str,
    state_path: &str,
    stdout_sink: bool,
) -> anyhow::Result<PathBuf> {
    std::fs::write(dir.join("rule.secret"), rule_secret)?;
    let (console, sinks) = if stdout_sink {
        (
            "\n[sinks.console]\ntype = \"stdout\"\n",
            r#"["archive", "console"]"#,
        )
    } else {
        ("", r#"["archive"]"#)
    };
    let text = format!(
        r#"[state]
path = "{state_path}"

[webhook]
listen = "127.0.0.1:0"
max_body_bytes = 1048576
max_connections = 1024

[admin]
listen = "127.0.0.1:0"

[front.acme]
rule_webhook_secret = {{ file = "rule.secret" }}

[sinks.archive]
type = "jsonl"
path = "out/highlights.jsonl"
{console}
[[subscription]]
name = "support"
front = "acme"
sinks = {sinks}
emit = ["created"]
"#
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, text)?;
    Ok(path)
}

/// The command that runs the daemon on `config`.
/// `commit_log` also turns on the writer's per-commit debug line (`ops`, `elapsed_us`).
pub fn frontsync_command(daemon: &Path, config: &Path, commit_log: bool) -> Command {
    let level = if commit_log {
        "info,frontsync::ingest=debug"
    } else {
        "info"
    };
    let mut cmd = Command::new(daemon);
    cmd.args([
        "--log-format",
        "json",
        "--log-level",
        level,
        "run",
        "--config",
    ])
    .arg(config);
    cmd
}

/// The command that runs this binary's baseline server.
pub fn baseline_command() -> anyhow::Result<Command> {
    let exe = std::env::current_exe().context("cannot find this executable")?;
    let mut cmd = Command::new(exe);
    cmd.args(["baseline-server", "--listen", "127.0.0.1:0"]);
    Ok(cmd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_status_and_stat() {
        let status = "Name:\tx\nVmHWM:\t   12345 kB\nVmRSS:\t    2048 kB\n";
        assert_eq!(parse_status(status), Some((2048, 12345)));
        let stat = "42 (a b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0 1";
        assert_eq!(parse_stat_ticks(stat), Some(325));
        let proc_stat = "cpu  100 5 50 1000 20 3 2 1 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n";
        assert_eq!(parse_machine_busy(proc_stat), Some(161));
    }

    #[test]
    fn reads_own_process() {
        let pid = std::process::id();
        let (rss, hwm) = memory_kib(pid).unwrap();
        assert!(rss > 0 && hwm >= rss);
        assert!(cpu_seconds("self").is_some());
    }
}
