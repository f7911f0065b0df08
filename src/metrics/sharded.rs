//! The series every proxied request records (`revgate_requests_total`,
//! `revgate_overhead_seconds`, `revgate_upstream_seconds`): relaxed atomic
//! adds into per-thread shards, summed and rendered as Prometheus text by
//! [`render`] beside the exporter's output.
//!
//! Why not the exporter's own handles: its histogram keeps every sample
//! (a push into a lock-free bucket list under an epoch guard, plus a clock
//! read) until a scrape or the upkeep drains it, and both I/O threads push
//! into, and count into, the same cache lines. Per request that was ~490
//! instructions (callgrind) and ~1.5 % of the proxy's CPU with a cache
//! line bouncing between the cores (perf, issue 16); here it is a bucket
//! search and three uncontended adds.
//!
//! ```text
//! let s = Series::histogram(&OVERHEAD_FAMILY, "");   // resolved once (RouteMetrics::new)
//! s.observe(duration);                               // per request
//! let c = Series::counter(&REQUESTS_FAMILY, r#"route="x""#);
//! c.add(outcome_index, 1);
//! render(&mut text);                                 // every family, summed over shards
//! ```
//!
//! A series is identified by its family and rendered labels: asking again
//! for the same pair (a reload rebuilding a route's handles) returns the
//! same cells, so counts survive reloads, as the exporter's did.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Shards per series: threads are spread over them round-robin, so the
/// I/O threads (one per core) each get their own.
const SHARDS: usize = 8;
/// Cells per cache line.
const LINE: usize = 8;

/// What a family's series are.
pub(crate) enum Kind {
    /// One counter per label value of `values` (rendered as the label
    /// `label`), e.g. the outcomes of `revgate_requests_total`.
    Counters {
        label: &'static str,
        values: &'static [&'static str],
    },
    /// A histogram with these upper bounds, in seconds.
    Histogram { bounds: &'static [f64] },
}

/// A metric family: its name, help, kind and series.
pub(crate) struct Family {
    pub(crate) name: &'static str,
    pub(crate) help: &'static str,
    pub(crate) kind: Kind,
    series: Mutex<Vec<Arc<Cells>>>,
}

impl Family {
    pub(crate) const fn new(name: &'static str, help: &'static str, kind: Kind) -> Family {
        Family {
            name,
            help,
            kind,
            series: Mutex::new(Vec::new()),
        }
    }

    fn width(&self) -> usize {
        match self.kind {
            Kind::Counters { values, .. } => values.len(),
            // A count per bucket, +Inf's, and the sum in nanoseconds.
            Kind::Histogram { bounds } => bounds.len() + 2,
        }
    }

    /// The series with `labels` (rendered: `route="x"`, or empty), made on
    /// first use.
    fn series(&self, labels: &str) -> Arc<Cells> {
        let mut all = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = all.iter().find(|s| s.labels == labels) {
            return s.clone();
        }
        let width = self.width();
        let stride = width.div_ceil(LINE) * LINE;
        let s = Arc::new(Cells {
            labels: labels.to_owned(),
            stride,
            bounds_ns: match self.kind {
                Kind::Histogram { bounds } => {
                    bounds.iter().map(|b| (b * 1e9).round() as u64).collect()
                }
                Kind::Counters { .. } => Box::new([]),
            },
            cells: (0..stride * SHARDS + LINE)
                .map(|_| AtomicU64::new(0))
                .collect(),
        });
        all.push(s.clone());
        s
    }
}

/// One series' cells: `SHARDS` rows of `stride` counters, each row starting
/// on its own cache line.
struct Cells {
    labels: String,
    stride: usize,
    bounds_ns: Box<[u64]>,
    cells: Box<[AtomicU64]>,
}

impl Cells {
    /// Where the first whole cache line of `cells` starts (the allocation's
    /// first line may be partial: `LINE` spare cells cover the offset).
    #[inline]
    fn base(&self) -> usize {
        (LINE - (self.cells.as_ptr() as usize / 8) % LINE) % LINE
    }

    /// The first cell of this thread's row.
    #[inline]
    fn row(&self) -> usize {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        thread_local! {
            static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
        }
        let shard = SHARD.try_with(|s| *s).unwrap_or(0);
        self.base() + shard * self.stride
    }

    /// Adds `v` to cell `i` of the row starting at `row`.
    #[inline]
    fn add(&self, row: usize, i: usize, v: u64) {
        if let Some(c) = self.cells.get(row + i) {
            c.fetch_add(v, Ordering::Relaxed);
        }
    }

    /// Cell `i` summed over every shard.
    fn total(&self, i: usize) -> u64 {
        let base = self.base();
        (0..SHARDS)
            .filter_map(|s| self.cells.get(base + s * self.stride + i))
            .map(|c| c.load(Ordering::Relaxed))
            .fold(0u64, u64::wrapping_add)
    }
}

/// A handle on one series, resolved once; cheap to clone.
#[derive(Clone)]
pub(crate) struct Series(Arc<Cells>);

impl std::fmt::Debug for Series {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Series").field(&self.0.labels).finish()
    }
}

impl Series {
    /// The series of `family` with `labels` (rendered, e.g. `route="x"`).
    pub(crate) fn of(family: &Family, labels: &str) -> Series {
        Series(family.series(labels))
    }

    /// Adds `v` to counter `i` (an index into the family's values).
    #[inline]
    pub(crate) fn add(&self, i: usize, v: u64) {
        self.0.add(self.0.row(), i, v);
    }

    /// Records one sample of a histogram family.
    #[inline]
    pub(crate) fn observe(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let b = &self.0.bounds_ns;
        let i = b.iter().position(|&up| ns <= up).unwrap_or(b.len());
        let row = self.0.row();
        self.0.add(row, i, 1);
        self.0.add(row, b.len() + 1, ns);
    }
}

/// Writes `families` in the Prometheus text format (as the exporter writes
/// its own: `# HELP`, `# TYPE`, the series, a blank line).
pub(crate) fn render(out: &mut String, families: &[&Family]) {
    for f in families {
        let all: Vec<Arc<Cells>> = f
            .series
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if all.is_empty() {
            continue;
        }
        let kind = match f.kind {
            Kind::Counters { .. } => "counter",
            Kind::Histogram { .. } => "histogram",
        };
        let _ = writeln!(out, "# HELP {} {}", f.name, f.help);
        let _ = writeln!(out, "# TYPE {} {kind}", f.name);
        for s in &all {
            match f.kind {
                Kind::Counters { label, values } => {
                    for (i, v) in values.iter().enumerate() {
                        let _ = writeln!(
                            out,
                            "{}{{{}{label}=\"{v}\"}} {}",
                            f.name,
                            with_comma(&s.labels),
                            s.total(i)
                        );
                    }
                }
                Kind::Histogram { bounds } => {
                    let mut cumulative = 0u64;
                    for (i, b) in bounds.iter().enumerate() {
                        cumulative = cumulative.wrapping_add(s.total(i));
                        let _ = writeln!(
                            out,
                            "{}_bucket{{{}le=\"{b}\"}} {cumulative}",
                            f.name,
                            with_comma(&s.labels)
                        );
                    }
                    cumulative = cumulative.wrapping_add(s.total(bounds.len()));
                    let _ = writeln!(
                        out,
                        "{}_bucket{{{}le=\"+Inf\"}} {cumulative}",
                        f.name,
                        with_comma(&s.labels)
                    );
                    let sum = s.total(bounds.len() + 1) as f64 / 1e9;
                    let braces = |l: &str| {
                        if l.is_empty() {
                            String::new()
                        } else {
                            format!("{{{l}}}")
                        }
                    };
                    let _ = writeln!(out, "{}_sum{} {sum}", f.name, braces(&s.labels));
                    let _ = writeln!(out, "{}_count{} {cumulative}", f.name, braces(&s.labels));
                }
            }
        }
        out.push('\n');
    }
}

fn with_comma(labels: &str) -> String {
    if labels.is_empty() {
        String::new()
    } else {
        format!("{labels},")
    }
}

/// `name="value"`, the value escaped as the text format wants (`\\`, `\"`,
/// `\n`).
pub(crate) fn label(name: &str, value: &str) -> String {
    let mut s = String::with_capacity(name.len() + value.len() + 3);
    s.push_str(name);
    s.push_str("=\"");
    for c in value.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    static H: Family = Family::new(
        "test_sharded_seconds",
        "A test histogram.",
        Kind::Histogram {
            bounds: &[0.001, 0.01, 1.0],
        },
    );
    static C: Family = Family::new(
        "test_sharded_total",
        "A test counter.",
        Kind::Counters {
            label: "outcome",
            values: &["a", "b"],
        },
    );

    #[test]
    fn samples_from_many_threads_sum_into_cumulative_buckets() {
        let s = Series::of(&H, &label("route", "r\"1"));
        let c = Series::of(&C, "");
        std::thread::scope(|scope| {
            for _ in 0..10 {
                scope.spawn(|| {
                    for _ in 0..100 {
                        s.observe(Duration::from_micros(500)); // <= 0.001
                        s.observe(Duration::from_millis(5)); // <= 0.01
                        s.observe(Duration::from_secs(2)); // +Inf only
                        c.add(1, 2);
                    }
                });
            }
        });
        // The same labels: the same cells.
        Series::of(&H, &label("route", "r\"1")).observe(Duration::from_millis(1));
        let mut text = String::new();
        render(&mut text, &[&H, &C]);
        let want = "# HELP test_sharded_seconds A test histogram.\n\
            # TYPE test_sharded_seconds histogram\n\
            test_sharded_seconds_bucket{route=\"r\\\"1\",le=\"0.001\"} 1001\n\
            test_sharded_seconds_bucket{route=\"r\\\"1\",le=\"0.01\"} 2001\n\
            test_sharded_seconds_bucket{route=\"r\\\"1\",le=\"1\"} 2001\n\
            test_sharded_seconds_bucket{route=\"r\\\"1\",le=\"+Inf\"} 3001\n\
            test_sharded_seconds_sum{route=\"r\\\"1\"} 2005.501\n\
            test_sharded_seconds_count{route=\"r\\\"1\"} 3001\n\
            \n\
            # HELP test_sharded_total A test counter.\n\
            # TYPE test_sharded_total counter\n\
            test_sharded_total{outcome=\"a\"} 0\n\
            test_sharded_total{outcome=\"b\"} 2000\n\
            \n";
        assert_eq!(text, want);
    }
}
