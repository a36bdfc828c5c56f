//! Process-wide counters and histograms for `/metrics`, updated lock-free on hot paths
//! (the writer thread and webhook handlers) and rendered in Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// A Prometheus histogram with fixed bucket bounds.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    /// Sum in millionths, so it fits an atomic integer.
    sum_micros: AtomicU64,
}

impl Histogram {
    /// A histogram with these upper bounds (ascending; `+Inf` is implied).
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// Records one value.
    pub fn observe(&self, v: f64) {
        for (bound, bucket) in self.bounds.iter().zip(&self.buckets) {
            if v <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add((v.max(0.0) * 1e6) as u64, Ordering::Relaxed);
    }

    /// How many values were recorded.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Appends the exposition lines of this histogram.
    pub fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (bound, bucket) in self.bounds.iter().zip(&self.buckets) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{bound}\"}} {}",
                bucket.load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// Everything the writer counts.
#[derive(Debug)]
pub struct Metrics {
    /// Events recorded for the first time.
    pub events_ingested: AtomicU64,
    /// Events already seen (repeated webhooks, webhook/poll overlap).
    pub events_duplicate: AtomicU64,
    /// Highlights emitted by (subscription, change).
    pub highlights: Mutex<BTreeMap<(String, &'static str), u64>>,
    /// Operations per commit.
    pub batch_size: Histogram,
    /// Seconds per commit (including fsync).
    pub commit_seconds: Histogram,
    /// Commits that failed (nothing in them was acknowledged).
    pub commit_failures: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            events_ingested: AtomicU64::new(0),
            events_duplicate: AtomicU64::new(0),
            highlights: Mutex::new(BTreeMap::new()),
            batch_size: Histogram::new(&[
                1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0,
            ]),
            commit_seconds: Histogram::new(&[
                0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0,
            ]),
            commit_failures: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    /// Counts emitted Highlights once their commit succeeded.
    pub fn add_highlights(&self, emitted: &[(String, &'static str)]) {
        if emitted.is_empty() {
            return;
        }
        if let Ok(mut m) = self.highlights.lock() {
            for key in emitted {
                *m.entry(key.clone()).or_default() += 1;
            }
        }
    }

    /// Appends the writer's metrics.
    pub fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP frontsync_events_ingested_total Events recorded, by result.\n# TYPE frontsync_events_ingested_total counter"
        );
        let _ = writeln!(
            out,
            "frontsync_events_ingested_total{{result=\"new\"}} {}",
            self.events_ingested.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "frontsync_events_ingested_total{{result=\"duplicate\"}} {}",
            self.events_duplicate.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP frontsync_highlights_emitted_total Highlights emitted, by subscription and change.\n# TYPE frontsync_highlights_emitted_total counter"
        );
        if let Ok(m) = self.highlights.lock() {
            for ((sub, change), n) in m.iter() {
                let _ = writeln!(
                    out,
                    "frontsync_highlights_emitted_total{{subscription=\"{}\",change=\"{change}\"}} {n}",
                    escape(sub)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP frontsync_commit_failures_total State commits that failed.\n# TYPE frontsync_commit_failures_total counter\nfrontsync_commit_failures_total {}",
            self.commit_failures.load(Ordering::Relaxed)
        );
        self.batch_size.render(
            out,
            "frontsync_ingest_batch_size",
            "Operations applied per state commit.",
        );
        self.commit_seconds.render(
            out,
            "frontsync_ingest_commit_seconds",
            "Time per state commit, fsync included.",
        );
    }
}

/// Escapes a label value.
pub fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::new(&[1.0, 10.0]);
        h.observe(0.5);
        h.observe(5.0);
        h.observe(50.0);
        let mut out = String::new();
        h.render(&mut out, "x", "help");
        assert!(out.contains("x_bucket{le=\"1\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"10\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_sum 55.5\nx_count 3\n"), "{out}");
    }
}
