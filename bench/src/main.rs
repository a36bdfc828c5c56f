//! `frontsync-bench`: measures the frontsync daemon against a bare hyper baseline, side by
//! side, on this machine.
//!
//! ```text
//! cargo build --release && cargo build --release -p frontsync-bench
//! target/release/frontsync-bench webhooks --daemon target/release/frontsync --n 20000 --concurrency 64
//! target/release/frontsync-bench webhooks --daemon target/release/frontsync --n 10000 --concurrency 32 --rate 1000
//! target/release/frontsync-bench seen-ids --daemon target/release/frontsync --n 1000000
//! target/release/frontsync-bench sync-cost
//! ```
//!
//! See BENCHMARKS.md for what each figure means and the measured results.

mod baseline;
mod load;
mod seen;
mod server;
mod stats;
mod sync_cost;
mod webhooks;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Load generator and benchmarks for frontsync.
#[derive(Debug, Parser)]
#[command(name = "frontsync-bench", about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Signed rule webhooks against the daemon, then the same load against a bare hyper
    /// server; throughput, ack latency, webhook -> JSONL latency, RSS, CPU, and the ratios.
    Webhooks(webhooks::Args),
    /// Daemon ready time and idle RSS with N seen event ids in the state file vs none.
    SeenIds(seen::Args),
    /// What one commit's I/O costs on this machine: N pages written (scattered, adjacent,
    /// or in one write), then fdatasync; wall and CPU time per commit.
    SyncCost(sync_cost::Args),
    /// The baseline server (started by `webhooks` as a child process).
    #[command(hide = true)]
    BaselineServer {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
    },
}

/// Options shared by the subcommands that start the daemon.
#[derive(Debug, clap::Args)]
pub struct DaemonArgs {
    /// The frontsync binary to test (a release build).
    #[arg(long, value_name = "PATH", default_value = "target/release/frontsync")]
    pub daemon: PathBuf,
    /// Print one JSON document instead of the table.
    #[arg(long)]
    pub json: bool,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Webhooks(args) => webhooks::main(args),
        Cmd::SeenIds(args) => seen::main(args),
        Cmd::SyncCost(args) => sync_cost::main(args),
        Cmd::BaselineServer { listen } => baseline::serve(listen),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            for cause in e.chain() {
                eprintln!("error: {cause}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}

/// The machine, for the report.
pub fn machine() -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|r| r.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    serde_json::json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu_model": cpu,
        "kernel": kernel,
    })
}
