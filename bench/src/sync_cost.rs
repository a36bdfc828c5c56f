//! `sync-cost`: what one commit's I/O costs on this machine, without redb: N pages written,
//! then `fdatasync`, as scattered 4 KiB writes (as a B-tree's copy-on-write pages land),
//! as adjacent 4 KiB writes, and as one write of N pages. Then what one redo-log append
//! costs, written the two ways the store's log can write a record: `pwrite` + `fdatasync`
//! at the log's end, or one `O_DIRECT | O_DSYNC` write of the block the end falls in, the
//! record and zeros to a block's end (the store's layout, modelled here in a few lines).
//! Reports wall time and the thread's CPU time (user + kernel, from its schedstat) per
//! commit or append, and for appends the device's write and flush requests per append.
//! Last, the tail: for `--stall-secs`, 4 KiB direct, synchronous writes with a 1 ms pause
//! after each (about 800 a second, a redo log near 1,000 commits/s), with its latency's percentiles and how many
//! writes stood still past 10 and 50 ms: a device whose flush sometimes takes a few hundred
//! milliseconds holds every acknowledgement for as long, whatever the daemon does.

use std::fs::File;
#[cfg(target_os = "linux")]
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
#[cfg(target_os = "linux")]
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Folder for the scratch file (the state file's disk): 64 MiB, deleted at the end.
    #[arg(long, value_name = "DIR", default_value = "target")]
    dir: PathBuf,
    /// Commits (or log appends) per measurement.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    commits: u64,
    /// Seconds of the tail measurement (4 KiB direct writes, 1 ms apart); 0 skips it.
    #[arg(long, default_value_t = 10)]
    stall_secs: u64,
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
    appends(scratch.path(), file, args.commits)?;
    if args.stall_secs > 0 {
        match open_direct(scratch.path()) {
            Ok(direct) => stalls(&direct, Duration::from_secs(args.stall_secs))?,
            Err(e) => println!("\n(tail not measured: this filesystem refuses O_DIRECT: {e})"),
        }
    }
    Ok(())
}

/// The tail row: one block written directly and synchronously, then a 1 ms pause, for
/// `secs`, each write timed.
fn stalls(file: &File, secs: Duration) -> anyhow::Result<()> {
    let buffer = vec![0x5Au8; 2 * BLOCK];
    let offset = block_aligned(&buffer)?;
    let block = &buffer[offset..offset + BLOCK];
    let mut took = Vec::new();
    let started = Instant::now();
    let mut i = 0u64;
    while started.elapsed() < secs {
        let t = Instant::now();
        file.write_all_at(block, (i % 256) * PAGE)?;
        took.push(t.elapsed().as_nanos() as u64);
        i += 1;
        std::thread::sleep(Duration::from_millis(1));
    }
    took.sort_unstable();
    let q = |p| crate::stats::quantile(&took, p).map_or(f64::NAN, crate::stats::ms);
    println!();
    println!(
        "tail: {} direct 4 KiB writes, 1 ms apart, over {} s: p50 {:.3} ms, p99 {:.3}, p99.9 {:.3}, max {:.1}; {} over 10 ms, {} over 50 ms",
        took.len(),
        secs.as_secs(),
        q(0.5),
        q(0.99),
        q(0.999),
        q(1.0),
        over(&took, Duration::from_millis(10)),
        over(&took, Duration::from_millis(50)),
    );
    Ok(())
}

/// Where the first block-aligned byte of `buffer` is (`O_DIRECT` writes from aligned memory);
/// a buffer one block longer than what it must hold always has one early enough.
fn block_aligned(buffer: &[u8]) -> anyhow::Result<usize> {
    let offset = buffer.as_ptr().align_offset(BLOCK);
    anyhow::ensure!(offset < BLOCK, "no block-aligned buffer");
    Ok(offset)
}

/// How many of the `sorted` nanosecond times are longer than `limit`.
fn over(sorted: &[u64], limit: Duration) -> usize {
    let limit = limit.as_nanos() as u64;
    sorted.len() - sorted.partition_point(|&ns| ns <= limit)
}

/// Redo-log record sizes measured: about one webhook's transaction (1.5-1.8 KB), and about
/// 12 and 25 of them folded into one commit's record (25 new events make a 40.2 KB record).
const RECORD_BYTES: [usize; 3] = [2_048, 20_480, 40_960];

/// The block `O_DIRECT` writes in (the store's `BLOCK`): a page.
const BLOCK: usize = PAGE as usize;

#[derive(Clone, Copy, Debug)]
enum Append {
    /// `pwrite` at the log's end, then `fdatasync`.
    Buffered,
    /// One `pwrite` through an `O_DIRECT | O_DSYNC` handle.
    Direct,
}

/// The log-append rows: each record size, written each way, appended one after another
/// from the start of the (pre-written) scratch file.
fn appends(path: &Path, file: &File, appends: u64) -> anyhow::Result<()> {
    let direct = open_direct(path);
    let device = Device::of(file);
    println!();
    println!(
        "{:>6}  {:<10}  {:>16}  {:>16}  {:>14}  {:>14}",
        "bytes", "log append", "wall us/append", "CPU us/append", "writes/append", "flushes/append"
    );
    for bytes in RECORD_BYTES {
        for way in [Append::Buffered, Append::Direct] {
            let name = match way {
                Append::Buffered => "+fdatasync",
                Append::Direct => "O_DIRECT",
            };
            let handle = match (way, &direct) {
                (Append::Buffered, _) => file,
                (Append::Direct, Ok(handle)) => handle,
                (Append::Direct, Err(e)) => {
                    println!("{bytes:>6}  {name:<10}  (this filesystem refuses O_DIRECT: {e})");
                    continue;
                }
            };
            let before = device.as_ref().and_then(Device::requests);
            let (wall, cpu) = measure_appends(handle, way, bytes, appends)?;
            let after = device.as_ref().and_then(Device::requests);
            let (writes, flushes) = match (before, after) {
                (Some((w0, f0)), Some((w1, f1))) => (
                    format!("{:.2}", w1.saturating_sub(w0) as f64 / appends as f64),
                    format!("{:.2}", f1.saturating_sub(f0) as f64 / appends as f64),
                ),
                _ => ("-".to_owned(), "-".to_owned()),
            };
            println!(
                "{bytes:>6}  {name:<10}  {wall:>16.0}  {cpu:>16.0}  {writes:>14}  {flushes:>14}"
            );
        }
    }
    match device {
        Some(device) => println!(
            "(requests counted on the whole device, {}: other writers on it count too)",
            device.stat.display()
        ),
        None => println!("(no block device found for the scratch file: requests not counted)"),
    }
    Ok(())
}

/// `path` opened for direct, synchronous writes, as the store opens its log.
fn open_direct(path: &Path) -> std::io::Result<File> {
    #[cfg(target_os = "linux")]
    {
        OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT | libc::O_DSYNC)
            .open(path)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = path;
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "the store writes its log directly on Linux only",
        ))
    }
}

/// Mean wall and CPU microseconds per append of `appends` records of `bytes` bytes.
fn measure_appends(
    file: &File,
    way: Append,
    bytes: usize,
    appends: u64,
) -> anyhow::Result<(f64, f64)> {
    let record = vec![0xC3u8; bytes];
    let end_of_file = FILE_PAGES * PAGE;
    // Bytes of the block the log's end falls in, up to the end (what a direct write repeats).
    let mut tail: Vec<u8> = Vec::with_capacity(BLOCK);
    let mut buffer = vec![0u8; bytes.div_ceil(BLOCK) * BLOCK + 2 * BLOCK];
    let offset = block_aligned(&buffer)?;
    let mut len = 0u64;
    let cpu0 = thread_run_ns()?;
    let started = Instant::now();
    for _ in 0..appends {
        if len + bytes as u64 + BLOCK as u64 > end_of_file {
            len = 0;
            tail.clear();
        }
        match way {
            Append::Buffered => {
                file.write_all_at(&record, len)?;
                file.sync_data()?;
            }
            Append::Direct => {
                let used = tail.len() + bytes;
                let padded = used.div_ceil(BLOCK) * BLOCK;
                let out = &mut buffer[offset..offset + padded];
                out[..tail.len()].copy_from_slice(&tail);
                out[tail.len()..used].copy_from_slice(&record);
                out[used..].fill(0);
                file.write_all_at(out, len - tail.len() as u64)?;
                tail.clear();
                tail.extend_from_slice(&out[used / BLOCK * BLOCK..used]);
            }
        }
        len += bytes as u64;
    }
    let wall = started.elapsed().as_secs_f64() * 1e6 / appends as f64;
    let cpu = (thread_run_ns()? - cpu0) as f64 / 1e3 / appends as f64;
    Ok((wall, cpu))
}

/// The block device a file lives on, whose request counters the append rows read.
struct Device {
    /// `/sys/dev/block/MAJOR:MINOR/stat`.
    stat: PathBuf,
}

impl Device {
    /// `None` where the file's filesystem has no block device (overlay, tmpfs) or sysfs is
    /// not mounted.
    fn of(file: &File) -> Option<Device> {
        #[cfg(target_os = "linux")]
        {
            let dev = file.metadata().ok()?.dev();
            let stat = PathBuf::from(format!(
                "/sys/dev/block/{}:{}/stat",
                libc::major(dev),
                libc::minor(dev)
            ));
            let device = Device { stat };
            device.requests().map(|_| device)
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = file;
            None
        }
    }

    /// Write requests and flush requests the device has completed (fields 5 and 16 of its
    /// stat, Documentation/block/stat.rst; flushes are counted from Linux 5.5).
    fn requests(&self) -> Option<(u64, u64)> {
        let s = std::fs::read_to_string(&self.stat).ok()?;
        let fields: Vec<u64> = s
            .split_whitespace()
            .map(|v| v.parse().ok())
            .collect::<Option<_>>()?;
        Some((*fields.get(4)?, *fields.get(15)?))
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn over_counts_only_the_times_past_the_limit() {
        let ms = |n: u64| n * 1_000_000;
        let sorted = [ms(1), ms(10), ms(11), ms(50), ms(300)];
        assert_eq!(over(&sorted, Duration::from_millis(10)), 3);
        assert_eq!(over(&sorted, Duration::from_millis(50)), 1);
        assert_eq!(over(&sorted, Duration::from_millis(300)), 0);
        assert_eq!(over(&sorted, Duration::ZERO), 5);
        assert_eq!(over(&[], Duration::ZERO), 0);
    }
}
