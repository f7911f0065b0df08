//! Logs: the tracing subscriber (human-readable or JSON, `RUST_LOG`-style
//! filters). The access log's lines are written by [`crate::accesslog`],
//! which formats them itself (the same lines this subscriber wrote for them
//! before) and obeys the same filter for their target, [`ACCESS_TARGET`].
//!
//! # API (what `main.rs` and `proxy.rs` call)
//!
//! ```text
//! telemetry::init(config.log.format, &config.log.filter);   // first thing in main
//! if telemetry::access_enabled() { /* write the access line */ }  // once per request
//!
//! // tests: capture every log line of the process
//! let logs = telemetry::LogCapture::new();
//! telemetry::init_with_writer(LogFormat::Json, "debug", logs.clone());
//! assert!(!logs.contents().contains(raw_token));
//! ```
//!
//! # Decisions
//!
//! - Output goes to stderr (stdout stays free for `check-config`'s
//!   answer); ANSI colours only when stderr is a terminal, so container logs
//!   carry no escape codes.
//! - Filter: `RUST_LOG`, when set and valid, wins over `log.filter` (an
//!   invalid `RUST_LOG` is reported and ignored, never fatal). Access lines
//!   count as `info` on target `revgate::access`, so
//!   `log.filter = "info,revgate::access=off"` silences them.
//! - JSON: one object per line, event fields flattened to the top level
//!   (`{"timestamp","level","target","message",...fields}`), which is what
//!   log pipelines (Loki, Elasticsearch, Cloud Logging) index directly.
//! - `log` records (rustls, redis) are bridged into tracing, so they obey
//!   the same filter and format.
//! - Secrets: the access log writes the path without its query (RFC 6750
//!   and Nylas put tokens there) and at most
//!   [`crate::credentials::Fingerprint::short`] of the credential. Nothing
//!   else in revgate logs a request's headers or query.
//! - Installing is process-global and first-wins: a second `init*` is a
//!   no-op that returns `false`, so tests that start several gateways can
//!   call it freely.

use std::io::{self, IsTerminal};
use std::sync::{Arc, Mutex};

use tracing::Dispatch;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Target of the per-request access-log lines.
pub const ACCESS_TARGET: &str = "revgate::access";

/// Installs the process's subscriber, writing to stderr: `format`, and
/// `RUST_LOG` if set and valid, else `filter` (else `info`). Returns `true`
/// if this call installed it, `false` if one was installed already.
pub fn init(format: LogFormat, filter: &str) -> bool {
    let rust_log = std::env::var("RUST_LOG").ok();
    let (filter, warning) = choose_filter(rust_log.as_deref(), filter);
    let ansi = io::stderr().is_terminal();
    let installed = dispatch(format, filter, io::stderr, ansi)
        .try_init()
        .is_ok();
    if let (true, Some(w)) = (installed, warning) {
        tracing::warn!("{w}");
    }
    installed
}

/// Like [`init`], writing to `writer` (e.g. a [`LogCapture`]) without
/// colours, and with `filter` used as given (`RUST_LOG` is not read, so a
/// test's capture does not depend on the environment; an invalid filter
/// falls back to `info`).
pub fn init_with_writer<W>(format: LogFormat, filter: &str, writer: W) -> bool
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let (filter, _) = choose_filter(None, filter);
    dispatch(format, filter, writer, false).try_init().is_ok()
}

/// The filter to use, and a warning to log once logging is up.
fn choose_filter(rust_log: Option<&str>, configured: &str) -> (EnvFilter, Option<String>) {
    let mut warning = None;
    if let Some(env) = rust_log.filter(|v| !v.trim().is_empty()) {
        match EnvFilter::try_new(env) {
            Ok(f) => return (f, None),
            Err(e) => warning = Some(format!("ignoring RUST_LOG={env:?}: {e}")),
        }
    }
    let configured = if configured.trim().is_empty() {
        "info"
    } else {
        configured
    };
    match EnvFilter::try_new(configured) {
        Ok(f) => (f, warning),
        Err(e) => (
            EnvFilter::new("info"),
            Some(format!("ignoring log.filter={configured:?}: {e}")),
        ),
    }
}

fn dispatch<W>(format: LogFormat, filter: EnvFilter, writer: W, ansi: bool) -> Dispatch
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Text => Dispatch::new(
            registry.with(
                tracing_subscriber::fmt::layer()
                    .with_writer(writer)
                    .with_ansi(ansi)
                    .with_target(true),
            ),
        ),
        LogFormat::Json => Dispatch::new(
            registry.with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(writer),
            ),
        ),
    }
}

/// Whether the filter lets access lines through (`info` on
/// [`ACCESS_TARGET`]): `tracing`'s cached interest in one callsite, a load
/// per call.
pub fn access_enabled() -> bool {
    tracing::enabled!(target: ACCESS_TARGET, tracing::Level::INFO)
}

// === impl LogCapture ===

/// An in-memory log sink for tests: clone it into [`init_with_writer`],
/// read it with [`contents`](LogCapture::contents).
#[derive(Clone, Debug, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl LogCapture {
    /// An empty capture.
    pub fn new() -> LogCapture {
        LogCapture::default()
    }

    /// Everything written so far.
    pub fn contents(&self) -> String {
        let buf = self.0.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// Forgets what was written so far.
    pub fn clear(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// The writer a [`LogCapture`] hands out per event.
#[derive(Debug)]
pub struct CaptureWriter(Arc<Mutex<Vec<u8>>>);

impl io::Write for CaptureWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogCapture {
    type Writer = CaptureWriter;

    fn make_writer(&'a self) -> CaptureWriter {
        CaptureWriter(self.0.clone())
    }
}

// === Throttle ===

/// A repeated warning written at most once a second, the lines held back
/// counted into the next one (`suppressed = N`): an attacker who aborts
/// thousands of calls, or an upstream that is down under load, must not
/// flood the log. Lock-free; only error paths call it.
#[derive(Debug, Default)]
pub struct Throttle {
    /// Unix milliseconds before which no line is written.
    next_at: std::sync::atomic::AtomicU64,
    suppressed: std::sync::atomic::AtomicU64,
}

impl Throttle {
    /// How long one line holds back the next.
    pub const EVERY_MS: u64 = 1000;

    /// `Some(n)` when a line may be written now, `n` lines having been held
    /// back since the last; `None` to hold this one back.
    pub fn admit(&self) -> Option<u64> {
        use std::sync::atomic::Ordering;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let next = self.next_at.load(Ordering::Relaxed);
        if now >= next
            && self
                .next_at
                .compare_exchange(
                    next,
                    now + Self::EVERY_MS,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::AcqRel));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

/// An error and its chain of sources, `: `-joined, for a log line or a
/// refusal's cause (hyper's errors say little without their sources).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one test that installs the process-wide subscriber.
    #[test]
    fn json_capture_global_and_idempotent() {
        let logs = LogCapture::new();
        assert!(init_with_writer(LogFormat::Json, "info", logs.clone()));
        assert!(!init_with_writer(
            LogFormat::Text,
            "trace",
            LogCapture::new()
        ));
        assert!(!init(LogFormat::Text, "debug"));

        assert!(access_enabled(), "access lines pass at info");
        tracing::info!(target: "revgate::telemetry_test", status = 401, "shown at info");
        tracing::debug!(target: "revgate::telemetry_test", "filtered out at info");

        let text = logs.contents();
        assert!(!text.contains("filtered out at info"), "{text}");
        let line = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["target"] == "revgate::telemetry_test")
            .unwrap_or_else(|| panic!("no line in {text}"));
        assert_eq!(line["message"], "shown at info");
        assert_eq!(line["status"], 401);
        assert_eq!(line["level"], "INFO");
    }

    #[test]
    fn text_format_and_filters_without_touching_the_global() {
        let logs = LogCapture::new();
        let (filter, warning) = choose_filter(None, "warn,revgate::access=info");
        assert!(warning.is_none());
        let d = dispatch(LogFormat::Text, filter, logs.clone(), false);
        tracing::dispatcher::with_default(&d, || {
            assert!(access_enabled());
            tracing::info!(target: ACCESS_TARGET, status = 401, path = "/v1/things", "access");
            tracing::info!(target: "revgate::other", "not shown");
        });
        let off = dispatch(
            LogFormat::Text,
            choose_filter(None, "info,revgate::access=off").0,
            LogCapture::new(),
            false,
        );
        tracing::dispatcher::with_default(&off, || assert!(!access_enabled()));
        let text = logs.contents();
        assert!(text.contains("revgate::access"), "{text}");
        assert!(text.contains("status=401"), "{text}");
        assert!(text.contains("path=\"/v1/things\""), "{text}");
        assert!(!text.contains("not shown"), "{text}");
        assert!(!text.contains('\u{1b}'), "no ANSI codes: {text:?}");
    }

    #[test]
    fn rust_log_wins_and_bad_filters_fall_back() {
        let (f, w) = choose_filter(Some("debug"), "warn");
        assert_eq!(f.to_string(), "debug");
        assert!(w.is_none());
        let (f, w) = choose_filter(Some("=[bad"), "warn");
        assert_eq!(f.to_string(), "warn");
        assert!(w.unwrap().contains("RUST_LOG"));
        let (f, _) = choose_filter(Some("  "), "revgate=debug");
        assert_eq!(f.to_string(), "revgate=debug");
        let (f, w) = choose_filter(None, "=[bad");
        assert_eq!(f.to_string(), "info");
        assert!(w.unwrap().contains("log.filter"));
        let (f, _) = choose_filter(None, "");
        assert_eq!(f.to_string(), "info");
    }

    #[test]
    fn a_throttle_writes_one_line_a_second_and_counts_the_rest() {
        let t = Throttle::default();
        assert_eq!(t.admit(), Some(0));
        for _ in 0..1000 {
            assert_eq!(t.admit(), None);
        }
        t.next_at.store(0, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(t.admit(), Some(1000));
        assert_eq!(t.admit(), None);
    }
}
