//! `sync-cost`: what one commit's I/O costs on this machine, without redb: N pages written,
//! then `fdatasync`, as scattered 4 KiB writes (as a B-tree's copy-on-write pages land),
//! as adjacent 4 KiB writes, and as one write of N pages. Reports wall time and the
//! thread's CPU time (user + kernel, from its schedstat) per commit.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Folder for the scratch file (the state file's disk): 64 MiB, deleted at the end.
    #[arg(long, value_name = "DIR", default_value = "target")]
    dir: PathBuf,
    /// Commits per measurement.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    commits: u64,
}

const PAGE: u64 = 4096;
/// Pages in the scratch file.
const FILE_PAGES: u64 = 16_384;
/// Page distance between the scattered writes (prime, so they spread over the file).
const SCATTER_STRIDE: u64 = 37;

#[derive(Clone, Copy, Debug)]
enum Layout {
    Scattered,
    Adjacent,
    OneWrite,
}

/// Pages per commit measured in every layout (after a row with the sync alone).
const PAGE_COUNTS: [u64; 4] = [1, 4, 15, 30];

impl Layout {
    const ALL: [Layout; 3] = [Layout::Scattered, Layout::Adjacent, Layout::OneWrite];

    fn name(&self) -> &'static str {
        match self {
            Layout::Scattered => "scattered",
            Layout::Adjacent => "adjacent",
            Layout::OneWrite => "one write",
        }
    }
}

pub fn main(args: Args) -> anyhow::Result<()> {
    let scratch = tempfile::Builder::new()
        .prefix("frontsync-sync-cost")
        .tempfile_in(&args.dir)
        .with_context(|| format!("cannot create a scratch file in {}", args.dir.display()))?;
    let file = scratch.as_file();
    file.set_len(FILE_PAGES * PAGE)?;
    // The file's blocks are allocated up front, as a state file's are.
    file.write_all_at(&vec![0u8; (FILE_PAGES * PAGE) as usize], 0)?;
    file.sync_all()?;
    println!(
        "sync-cost: {} commits each, scratch file in {}",
        args.commits,
        args.dir.display()
    );
    println!(
        "{:>6}  {:<10}  {:>16}  {:>16}",
        "pages", "layout", "wall us/commit", "CPU us/commit"
    );
    let (wall, cpu) = measure(file, 0, Layout::OneWrite, args.commits)?;
    println!("{:>6}  {:<10}  {wall:>16.0}  {cpu:>16.0}", 0, "sync only");
    for pages in PAGE_COUNTS {
        for layout in Layout::ALL {
            let (wall, cpu) = measure(file, pages, layout, args.commits)?;
            println!(
                "{pages:>6}  {:<10}  {wall:>16.0}  {cpu:>16.0}",
                layout.name()
            );
        }
    }
    Ok(())
}

/// Mean wall and CPU microseconds per commit of `pages` pages laid out as `layout`.
fn measure(file: &File, pages: u64, layout: Layout, commits: u64) -> anyhow::Result<(f64, f64)> {
    let page = vec![0xA5u8; PAGE as usize];
    let run = vec![0x5Au8; (pages * PAGE) as usize];
    let cpu0 = thread_run_ns()?;
    let started = Instant::now();
    for commit in 0..commits {
        // Each commit starts elsewhere in the file, so no page is written twice in a row.
        let first = commit * pages * SCATTER_STRIDE;
        match layout {
            Layout::Scattered => {
                for p in 0..pages {
                    let at = (first + p * SCATTER_STRIDE) % FILE_PAGES;
                    file.write_all_at(&page, at * PAGE)?;
                }
            }
            Layout::Adjacent => {
                let base = first % (FILE_PAGES - pages);
                for p in 0..pages {
                    file.write_all_at(&page, (base + p) * PAGE)?;
                }
            }
            Layout::OneWrite if pages > 0 => {
                let base = first % (FILE_PAGES - pages);
                file.write_all_at(&run, base * PAGE)?;
            }
            Layout::OneWrite => {}
        }
        file.sync_data()?;
    }
    let wall = started.elapsed().as_secs_f64() * 1e6 / commits as f64;
    let cpu = (thread_run_ns()? - cpu0) as f64 / 1e3 / commits as f64;
    Ok((wall, cpu))
}

/// Nanoseconds this thread has run on a CPU, user and kernel (first field of schedstat).
/// Not `server::cpu_seconds`: `/proc/PID/stat` counts 10 ms ticks, coarser than the whole
/// of a 300-commit measurement of a few pages.
fn thread_run_ns() -> anyhow::Result<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat")
        .context("cannot read /proc/thread-self/schedstat")?;
    s.split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .context("unexpected /proc/thread-self/schedstat")
}
