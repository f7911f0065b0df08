//! Metrics: the Prometheus recorder and one typed function per thing
//! revgate counts, so metric names and labels live in this file only.
//!
//! # API (what `server.rs`, `proxy.rs`, `admin.rs` and the stores call)
//!
//! ```text
//! let handle = metrics::install()?;            // at start-up, before anything records
//! tokio::spawn(metrics::upkeep(handle.clone(), cancel.child_token()));
//! GET /metrics  ->  200, CONTENT_TYPE, metrics::render()
//!
//! metrics::request(&route.name, Outcome::Forwarded);   // one per request
//! metrics::overhead(secs);  metrics::upstream_time(&route.name, secs);
//! let m = RouteMetrics::new(&route.name);              // same, pre-resolved (hot path)
//! metrics::revocation_applied("nylas" | "admin", "forward" | "terminate" | "api");
//! metrics::revocation_apply_failed(source);  metrics::unidentified_revoke(dialect);
//! metrics::bloom(fill_ratio, bits, capacity);  metrics::bloom_false_positive();
//! metrics::store(connected, staleness_secs, journal_backlog, token_rules, scope_rules);
//! metrics::store_gauges(store.as_ref());   // both of the above, from a RevocationStore
//! metrics::reload("config" | "tls", ok);
//! metrics::rate_limited("revoke" | "admin");   // one per 429 from a rate limit
//! metrics::introspection("active" | "inactive" | "error" | "timeout");  // one per RFC 7662 call
//! metrics::introspection_cache_hit();
//! metrics::feed_event(feed, outcome);  metrics::feed_rejected(feed, reason);
//! metrics::feed_replay_evicted(live);  metrics::feed_poll(result);  metrics::feed_poll_lease(held);
//! let text = metrics::render();            // the handle's render, installing if needed
//! ```
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `revgate_requests_total` | counter | `route`, `outcome` |
//! | `revgate_overhead_seconds` | histogram | |
//! | `revgate_upstream_seconds` | histogram | `route` |
//! | `revgate_revocations_applied_total` | counter | `source`, `mode` |
//! | `revgate_revocation_apply_failures_total` | counter | `source` |
//! | `revgate_unidentified_revokes_total` | counter | `dialect` |
//! | `revgate_bloom_fill_ratio`, `revgate_bloom_bits`, `revgate_bloom_capacity` | gauge | |
//! | `revgate_bloom_false_positives_total` | counter | |
//! | `revgate_store_connected`, `revgate_store_staleness_seconds`, `revgate_store_journal_backlog`, `revgate_store_token_rules`, `revgate_store_scope_rules` | gauge | |
//! | `revgate_reloads_total` | counter | `what`, `result` |
//! | `revgate_rate_limited_total` | counter | `surface` (`revoke`, `admin`, `feed`) |
//! | `revgate_live_sessions_closed_total` | counter | `kind` (`upgrade`, `h2_stream`) |
//! | `revgate_connections_open` | gauge | |
//! | `revgate_connections_limited_total` | counter | |
//! | `revgate_access_log_dropped_total` | counter | (lines the access log's writer could not take in time, or failed to write) |
//! | `revgate_bindings_recorded_total` | counter | `source` (`admin`, `issuance`) |
//! | `revgate_store_bindings` | gauge | (embedded store; Redis holds them remotely) |
//! | `revgate_refresh_refused_total` | counter | `reason` (`revoked`, `reused`): token requests answered `invalid_grant` |
//! | `revgate_families_revoked_total` | counter | `source` (dialect, `admin`, `reuse`, `feed`) |
//! | `revgate_introspection_requests_total` | counter | `outcome` (`active`, `inactive`, `error`, `timeout`) |
//! | `revgate_introspection_cache_hits_total` | counter | |
//! | `revgate_store_fenced` | gauge | |
//! | `revgate_feed_events_total` | counter | `feed` (`backchannel_logout`, `ssf`), `outcome` |
//! | `revgate_feed_rejections_total` | counter | `feed`, `reason` |
//! | `revgate_feed_replay_evictions_total` | counter | |
//! | `revgate_feed_polls_total` | counter | `result` (`ok`, `error`) |
//! | `revgate_feed_poll_lease_held` | gauge | |
//! | `revgate_build_info` | gauge (always 1) | `version`, `commit` |
//! | `process_cpu_seconds_total`, `process_resident_memory_bytes`, `process_virtual_memory_bytes`, `process_open_fds`, `process_max_fds`, `process_start_time_seconds`, `process_threads` | gauge/counter | |
//!
//! Every counter whose labels are a fixed set is exported at 0 from
//! [`install`] on (`export_at_zero`); `revgate_requests_total` from the
//! moment a route's [`RouteMetrics`] is made, for every outcome.
//!
//! # Decisions
//!
//! - The `metrics` facade is process-global by design, so [`install`] keeps
//!   its handle in a `OnceLock`: a second call (a test starting several
//!   gateways in one process) returns the same handle instead of failing.
//!   The flip side: gateways in one process share their counters, so tests
//!   compare before/after values rather than absolute ones.
//! - Before [`install`] every function here is a no-op (the facade's
//!   default); [`RouteMetrics`] made before it stay no-ops, so build them
//!   after.
//! - Histograms are true Prometheus histograms (explicit buckets), not
//!   summaries: they aggregate across instances. `overhead` buckets run from
//!   10 µs to 1 s (the gateway's own work), `upstream` from 100 µs to 60 s.
//! - The series every request records (`revgate_requests_total` and both
//!   histograms) are [`sharded`]: relaxed adds into per-thread shards,
//!   rendered after the exporter's text, since the exporter's handles cost
//!   ~490 instructions and a cache line shared by the I/O threads per
//!   request (issue 16). Everything else goes through the `metrics` facade.
//! - Labels are bounded: routes come from the config, dialects, modes and
//!   outcomes are fixed sets. Nothing derived from a request (path, token,
//!   subject) is ever a label.
//! - With no HTTP listener from the exporter crate, nothing drains the
//!   histograms between scrapes; [`upkeep`] does, so memory stays bounded
//!   when nobody scrapes.
//!
//! - Process metrics are the standard `process_*` series (the names every
//!   Prometheus client library exports, so stock dashboards work), from the
//!   `metrics-process` crate, read at each render: a scrape costs one read
//!   of `/proc/self`, a request nothing.
//!
//! Size: ~460 lines of code (every metric in one file, by design) and ~140
//! of tests.

use std::sync::OnceLock;
use std::time::Duration;

mod sharded;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use sharded::{Family, Kind, Series};
use tokio_util::sync::CancellationToken;

/// `Content-Type` of [`PrometheusHandle::render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

const REQUESTS: &str = "revgate_requests_total";
const OVERHEAD: &str = "revgate_overhead_seconds";
const UPSTREAM: &str = "revgate_upstream_seconds";
const APPLIED: &str = "revgate_revocations_applied_total";
const APPLY_FAILED: &str = "revgate_revocation_apply_failures_total";
const UNIDENTIFIED: &str = "revgate_unidentified_revokes_total";
const BLOOM_FILL: &str = "revgate_bloom_fill_ratio";
const BLOOM_BITS: &str = "revgate_bloom_bits";
const BLOOM_CAPACITY: &str = "revgate_bloom_capacity";
const BLOOM_FP: &str = "revgate_bloom_false_positives_total";
/// Commands of the Redis outbox that Redis refused (kept, retried;
/// `store::redis::sync`). Exported at 0 with every store: an alert on it
/// needs no Redis-specific rule.
pub const OUTBOX_REFUSED: &str = "revgate_redis_outbox_refused_total";
const STORE_CONNECTED: &str = "revgate_store_connected";
const STORE_STALENESS: &str = "revgate_store_staleness_seconds";
const STORE_BACKLOG: &str = "revgate_store_journal_backlog";
const STORE_TOKEN_RULES: &str = "revgate_store_token_rules";
const STORE_SCOPE_RULES: &str = "revgate_store_scope_rules";
const RELOADS: &str = "revgate_reloads_total";
const LIVE_CLOSED: &str = "revgate_live_sessions_closed_total";
const CONNECTIONS_OPEN: &str = "revgate_connections_open";
const IO_THREAD_CONNECTIONS: &str = "revgate_io_thread_connections";
const CONNECTIONS_LIMITED: &str = "revgate_connections_limited_total";
const CONNECTIONS_PLACED: &str = "revgate_connections_placed_total";
const ACCESS_LOG_DROPPED: &str = "revgate_access_log_dropped_total";
const RATE_LIMITED: &str = "revgate_rate_limited_total";
const BINDINGS_RECORDED: &str = "revgate_bindings_recorded_total";
const REFRESH_REFUSED: &str = "revgate_refresh_refused_total";
const FAMILIES_REVOKED: &str = "revgate_families_revoked_total";
const STORE_BINDINGS: &str = "revgate_store_bindings";
const INTROSPECTIONS: &str = "revgate_introspection_requests_total";
const INTROSPECTION_HITS: &str = "revgate_introspection_cache_hits_total";
const BUILD_INFO: &str = "revgate_build_info";
const STORE_FENCED: &str = "revgate_store_fenced";
const FEED_EVENTS: &str = "revgate_feed_events_total";
const FEED_REJECTIONS: &str = "revgate_feed_rejections_total";
const FEED_REPLAY_EVICTIONS: &str = "revgate_feed_replay_evictions_total";
const FEED_POLLS: &str = "revgate_feed_polls_total";
const FEED_POLL_LEASE: &str = "revgate_feed_poll_lease_held";

/// `revgate_feed_events_total{outcome}` values.
const FEED_OUTCOMES: [&str; 6] = [
    "applied",
    "duplicate",
    "ignored",
    "unmapped",
    "stale",
    "verification",
];

/// `revgate_requests_total`'s `outcome` values, in [`Outcome::ALL`]'s order.
const OUTCOMES: [&str; Outcome::ALL.len()] = {
    let mut v = [""; Outcome::ALL.len()];
    let mut i = 0;
    while i < v.len() {
        v[i] = Outcome::ALL[i].as_str();
        i += 1;
    }
    v
};

// The per-request series live outside the exporter ([`sharded`]: per-thread
// shards, rendered by [`render`]).
static REQUESTS_FAMILY: Family = Family::new(
    REQUESTS,
    "Requests handled, by route and outcome.",
    Kind::Counters {
        label: "outcome",
        values: &OUTCOMES,
    },
);
static OVERHEAD_FAMILY: Family = Family::new(
    OVERHEAD,
    "Time spent in the gateway per request, upstream time excluded.",
    Kind::Histogram {
        bounds: OVERHEAD_BUCKETS,
    },
);
static UPSTREAM_FAMILY: Family = Family::new(
    UPSTREAM,
    "Time from sending a request upstream to its response headers.",
    Kind::Histogram {
        bounds: UPSTREAM_BUCKETS,
    },
);

/// The process-metrics collector (`process_*`), made once.
fn process() -> &'static metrics_process::Collector {
    static PROCESS: OnceLock<metrics_process::Collector> = OnceLock::new();
    PROCESS.get_or_init(metrics_process::Collector::default)
}

/// Buckets for the gateway's own time per request: 10 µs .. 1 s.
pub const OVERHEAD_BUCKETS: &[f64] = &[
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0,
];

/// Buckets for upstream response time (to response headers): 100 µs .. 60 s.
pub const UPSTREAM_BUCKETS: &[f64] = &[
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];

/// The recorder could not be installed (another recorder owns the process).
#[derive(Clone, Debug, thiserror::Error)]
#[error("cannot install the Prometheus recorder: {0}")]
pub struct MetricsError(String);

static HANDLE: OnceLock<Result<PrometheusHandle, MetricsError>> = OnceLock::new();

/// Installs the Prometheus recorder as the process's `metrics` recorder and
/// returns the handle `/metrics` renders. Idempotent: later calls return
/// the first call's handle (or its error).
pub fn install() -> Result<PrometheusHandle, MetricsError> {
    HANDLE.get_or_init(build_and_install).clone()
}

fn build_and_install() -> Result<PrometheusHandle, MetricsError> {
    let err = |e: metrics_exporter_prometheus::BuildError| MetricsError(e.to_string());
    let handle = PrometheusBuilder::new().install_recorder().map_err(err)?;
    describe();
    export_at_zero();
    Ok(handle)
}

/// Registers every counter series whose labels are a fixed set, so that
/// `/metrics` shows each documented counter at 0 from start-up: a `rate()`
/// or an alert on a series that appears only at its first increment misses
/// that increment. (`revgate_requests_total` is registered per route, for
/// every outcome, by [`RouteMetrics::new`].) `increment(0)` registers
/// without changing a value.
fn export_at_zero() {
    use crate::dialect::DialectKind;
    let dialects = DialectKind::ALL.map(DialectKind::name);
    for source in dialects {
        for mode in ["forward", "terminate"] {
            metrics::counter!(APPLIED, "source" => source, "mode" => mode).increment(0);
        }
        metrics::counter!(APPLY_FAILED, "source" => source).increment(0);
        metrics::counter!(UNIDENTIFIED, "dialect" => source).increment(0);
    }
    metrics::counter!(APPLIED, "source" => "admin", "mode" => "api").increment(0);
    for feed in ["backchannel_logout", "ssf"] {
        for mode in ["push", "poll"] {
            if feed == "ssf" || mode == "push" {
                metrics::counter!(APPLIED, "source" => feed, "mode" => mode).increment(0);
            }
        }
        metrics::counter!(APPLY_FAILED, "source" => feed).increment(0);
        for outcome in FEED_OUTCOMES {
            metrics::counter!(FEED_EVENTS, "feed" => feed, "outcome" => outcome).increment(0);
        }
        for reason in crate::feeds::set::Rejection::REASONS {
            metrics::counter!(FEED_REJECTIONS, "feed" => feed, "reason" => reason).increment(0);
        }
    }
    metrics::counter!(FEED_REPLAY_EVICTIONS).increment(0);
    for result in ["ok", "error"] {
        metrics::counter!(FEED_POLLS, "result" => result).increment(0);
    }
    metrics::gauge!(FEED_POLL_LEASE).set(0.0);
    metrics::counter!(APPLY_FAILED, "source" => "admin").increment(0);
    metrics::counter!(BLOOM_FP).increment(0);
    metrics::counter!(OUTBOX_REFUSED).increment(0);
    for what in ["config", "tls"] {
        for result in ["ok", "error"] {
            metrics::counter!(RELOADS, "what" => what, "result" => result).increment(0);
        }
    }
    for kind in [
        crate::store::live::SessionKind::Upgrade,
        crate::store::live::SessionKind::Stream,
    ] {
        metrics::counter!(LIVE_CLOSED, "kind" => kind.as_str()).increment(0);
    }
    for surface in ["revoke", "admin", "feed"] {
        metrics::counter!(RATE_LIMITED, "surface" => surface).increment(0);
    }
    metrics::counter!(CONNECTIONS_LIMITED).increment(0);
    metrics::counter!(CONNECTIONS_PLACED).increment(0);
    metrics::counter!(ACCESS_LOG_DROPPED).increment(0);
    metrics::gauge!(CONNECTIONS_OPEN).set(0.0);
    for source in ["admin", "issuance"] {
        metrics::counter!(BINDINGS_RECORDED, "source" => source).increment(0);
    }
    for reason in ["revoked", "reused"] {
        metrics::counter!(REFRESH_REFUSED, "reason" => reason).increment(0);
    }
    for source in ["nylas", "onelogin", "rfc7009", "admin", "reuse", "feed"] {
        metrics::counter!(FAMILIES_REVOKED, "source" => source).increment(0);
    }
    for outcome in ["active", "inactive", "error", "timeout"] {
        metrics::counter!(INTROSPECTIONS, "outcome" => outcome).increment(0);
    }
    metrics::counter!(INTROSPECTION_HITS).increment(0);
    metrics::gauge!(
        BUILD_INFO,
        "version" => env!("CARGO_PKG_VERSION"),
        "commit" => crate::cli::COMMIT
    )
    .set(1.0);
    process().collect();
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, Unit};
    describe_counter!(
        APPLIED,
        "Revocations applied, by source (dialect or admin) and mode."
    );
    describe_counter!(APPLY_FAILED, "Revocations the store failed to apply.");
    describe_counter!(
        OUTBOX_REFUSED,
        "Commands of the Redis outbox that Redis refused: kept, enforced by this instance, retried."
    );
    describe_counter!(
        UNIDENTIFIED,
        "Revoke calls whose caller or token could not be identified."
    );
    describe_gauge!(BLOOM_FILL, "Fraction of the bloom filter's bits set.");
    describe_gauge!(BLOOM_BITS, "Size of the bloom filter in bits.");
    describe_gauge!(
        BLOOM_CAPACITY,
        "Revoked tokens the bloom filter is sized for."
    );
    describe_counter!(
        BLOOM_FP,
        "Bloom hits that the exact set answered as not revoked."
    );
    describe_gauge!(STORE_CONNECTED, "1 when the store is reachable, else 0.");
    describe_gauge!(
        STORE_STALENESS,
        Unit::Seconds,
        "Time since the last successful sync with the store."
    );
    describe_gauge!(
        STORE_BACKLOG,
        "Revocations journaled locally and not yet in the shared store."
    );
    describe_gauge!(STORE_TOKEN_RULES, "Live token revocations.");
    describe_gauge!(STORE_SCOPE_RULES, "Live scope revocations.");
    describe_counter!(RELOADS, "Reloads (config, tls) by result.");
    describe_counter!(
        LIVE_CLOSED,
        "Upgraded connections and HTTP/2 streams closed because a revocation covered their credential, by kind."
    );
    describe_gauge!(CONNECTIONS_OPEN, "Client connections open.");
    describe_gauge!(
        IO_THREAD_CONNECTIONS,
        "Client connections open on each I/O thread (read every 250 ms)."
    );
    describe_counter!(
        CONNECTIONS_PLACED,
        "Connections handed at accept to another I/O thread, which had fewer open."
    );
    describe_counter!(
        CONNECTIONS_LIMITED,
        "Times accepting paused at server.max_connections."
    );
    describe_counter!(
        ACCESS_LOG_DROPPED,
        "Access-log lines dropped because the writer was behind, or lost to a failed write."
    );
    describe_gauge!(
        STORE_FENCED,
        "1 while the store is stale past store.max_staleness: requests are refused (stale_action = reject) or each looked up."
    );
    describe_gauge!(
        BUILD_INFO,
        "Always 1; its labels say which version and commit is running."
    );
    process().describe();
    describe_counter!(
        RATE_LIMITED,
        "Calls refused with 429 by a per-client rate limit, by surface (revoke, admin)."
    );
    describe_counter!(
        BINDINGS_RECORDED,
        "Credential bindings (who holds a credential) recorded, by source (admin, issuance)."
    );
    describe_gauge!(STORE_BINDINGS, "Credential bindings held (embedded store).");
    describe_counter!(
        REFRESH_REFUSED,
        "Token requests answered invalid_grant by revgate, by reason (revoked, reused refresh token)."
    );
    describe_counter!(
        FAMILIES_REVOKED,
        "Token families revoked, by source (a dialect, admin, reuse detection)."
    );
    describe_counter!(
        INTROSPECTIONS,
        "RFC 7662 introspection calls made, by outcome (active, inactive, error, timeout)."
    );
    describe_counter!(
        FEED_EVENTS,
        "Events of verified identity-provider tokens (logout tokens, SETs), by feed and outcome (applied, duplicate, ignored, unmapped, stale, verification)."
    );
    describe_counter!(
        FEED_REJECTIONS,
        "Feed deliveries refused (nothing revoked), by feed and reason."
    );
    describe_counter!(
        FEED_REPLAY_EVICTIONS,
        "Live jti entries the full replay memory forgot to make room (feeds.replay_capacity)."
    );
    describe_counter!(
        FEED_POLLS,
        "RFC 8936 polls of the SSF transmitter, by result."
    );
    describe_gauge!(
        FEED_POLL_LEASE,
        "1 while this instance holds the SSF poll lease (is the one poller)."
    );
    describe_counter!(
        INTROSPECTION_HITS,
        "Introspection answers served from the cache."
    );
}

/// One event of a verified feed token, by outcome.
pub fn feed_event(feed: &'static str, outcome: &'static str) {
    metrics::counter!(FEED_EVENTS, "feed" => feed, "outcome" => outcome).increment(1);
}

/// A feed delivery refused (nothing revoked).
pub fn feed_rejected(feed: &'static str, reason: &'static str) {
    metrics::counter!(FEED_REJECTIONS, "feed" => feed, "reason" => reason).increment(1);
}

/// The feeds' replay memory, full, forgot an entry (`live`: not yet expired;
/// only those are counted).
pub fn feed_replay_evicted(live: bool) {
    if live {
        metrics::counter!(FEED_REPLAY_EVICTIONS).increment(1);
    }
}

/// One RFC 8936 poll, `ok` or `error`.
pub fn feed_poll(result: &'static str) {
    metrics::counter!(FEED_POLLS, "result" => result).increment(1);
}

/// Whether this instance holds the SSF poll lease.
pub fn feed_poll_lease(held: bool) {
    metrics::gauge!(FEED_POLL_LEASE).set(if held { 1.0 } else { 0.0 });
}

/// Drains histogram samples every 5 s until `cancel` fires, so memory stays
/// bounded between scrapes. Spawn it once, next to [`install`].
pub async fn upkeep(handle: PrometheusHandle, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => handle.run_upkeep(),
        }
    }
}

/// How a request ended, as counted in `revgate_requests_total{outcome}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Passed the check and was forwarded (whatever the upstream answered).
    Forwarded,
    /// Carried a revoked credential: 401.
    Revoked,
    /// Refused before forwarding as malformed or unsupported: 400, 413,
    /// 431, 501.
    BadRequest,
    /// The client stopped sending its request body in time: 408.
    ClientTimeout,
    /// The upstream could not be reached or timed out: 502, 504.
    UpstreamError,
    /// No route matched: 404.
    NoRoute,
    /// A call to a revoke endpoint (either mode, any answer).
    RevokeCall,
    /// Refused because the store is too stale to decide: 503.
    Unavailable,
    /// Refused because the credential's identity could not be introspected
    /// (`identity.introspection.on_error = "reject"`): 503.
    IdentityUnavailable,
}

impl Outcome {
    /// Every outcome, in a stable order.
    pub const ALL: [Outcome; 9] = [
        Outcome::Forwarded,
        Outcome::Revoked,
        Outcome::BadRequest,
        Outcome::ClientTimeout,
        Outcome::UpstreamError,
        Outcome::NoRoute,
        Outcome::RevokeCall,
        Outcome::Unavailable,
        Outcome::IdentityUnavailable,
    ];

    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Forwarded => "forwarded",
            Outcome::Revoked => "revoked",
            Outcome::BadRequest => "bad_request",
            Outcome::ClientTimeout => "client_timeout",
            Outcome::UpstreamError => "upstream_error",
            Outcome::NoRoute => "no_route",
            Outcome::RevokeCall => "revoke_call",
            Outcome::Unavailable => "unavailable",
            Outcome::IdentityUnavailable => "identity_unavailable",
        }
    }
}

/// Counts one RFC 7662 introspection call by how it ended (`active`,
/// `inactive`, `error`, `timeout`).
pub fn introspection(outcome: &'static str) {
    metrics::counter!(INTROSPECTIONS, "outcome" => outcome).increment(1);
}

/// Counts one introspection answer served from the cache.
pub fn introspection_cache_hit() {
    metrics::counter!(INTROSPECTION_HITS).increment(1);
}

/// Counts access-log lines dropped (the writer was behind) or lost (a
/// write failed).
pub fn access_log_dropped(lines: u64) {
    metrics::counter!(ACCESS_LOG_DROPPED).increment(lines);
}

/// Counts one call refused by a per-client rate limit on `surface`.
pub fn rate_limited(surface: &'static str) {
    metrics::counter!(RATE_LIMITED, "surface" => surface).increment(1);
}

/// Counts one request on `route` (use `"-"` when no route matched).
pub fn request(route: &str, outcome: Outcome) {
    RouteMetrics::new(route).request(outcome);
}

/// Records the gateway's own time for one request.
pub fn overhead(d: Duration) {
    Series::of(&OVERHEAD_FAMILY, "").observe(d);
}

/// Records the upstream's time to response headers on `route`.
pub fn upstream_time(route: &str, d: Duration) {
    RouteMetrics::new(route).upstream_time(d);
}

// === impl RouteMetrics ===

/// The per-route metrics, resolved once (at config load) so the hot path
/// does no label allocation or registry lookup. Cheap to clone.
#[derive(Clone, Debug)]
pub struct RouteMetrics {
    requests: Series,
    upstream: Series,
    overhead: Series,
}

impl RouteMetrics {
    /// Handles for `route`; every outcome's counter shows from now on.
    pub fn new(route: &str) -> RouteMetrics {
        let labels = sharded::label("route", route);
        RouteMetrics {
            requests: Series::of(&REQUESTS_FAMILY, &labels),
            upstream: Series::of(&UPSTREAM_FAMILY, &labels),
            overhead: Series::of(&OVERHEAD_FAMILY, ""),
        }
    }

    /// Same as [`overhead`], through a handle resolved once.
    pub fn overhead(&self, d: Duration) {
        self.overhead.observe(d);
    }

    /// Same as [`request`] for this route.
    pub fn request(&self, outcome: Outcome) {
        // ALL lists every variant in declaration order.
        self.requests.add(outcome as usize, 1);
    }

    /// Same as [`upstream_time`] for this route.
    pub fn upstream_time(&self, d: Duration) {
        self.upstream.observe(d);
    }
}

/// `revgate_connections_open`'s handle, looked up once the recorder is
/// installed (a `gauge!` per call hashes and looks the key up: twice per
/// connection, a new connection per request's largest metrics cost).
fn connections_open() -> Option<&'static metrics::Gauge> {
    static GAUGE: OnceLock<metrics::Gauge> = OnceLock::new();
    if let Some(g) = GAUGE.get() {
        return Some(g);
    }
    // Before `install` a handle would stay a no-op for good.
    HANDLE.get()?.as_ref().ok()?;
    Some(GAUGE.get_or_init(|| metrics::gauge!(CONNECTIONS_OPEN)))
}

/// A client connection opened.
pub fn connection_opened() {
    if let Some(g) = connections_open() {
        g.increment(1.0);
    }
}

/// The gauge of I/O thread `thread`'s open client connections.
pub fn io_thread_connections(thread: usize) -> metrics::Gauge {
    metrics::gauge!(IO_THREAD_CONNECTIONS, "thread" => thread.to_string())
}

/// A client connection closed.
pub fn connection_closed() {
    if let Some(g) = connections_open() {
        g.decrement(1.0);
    }
}

/// Accepting paused at `server.max_connections`.
pub fn connections_limited() {
    metrics::counter!(CONNECTIONS_LIMITED).increment(1);
}

/// A connection accepted on one I/O thread was handed to another.
pub fn connection_placed() {
    metrics::counter!(CONNECTIONS_PLACED).increment(1);
}

/// Counts one revocation applied. `source` is the dialect's name
/// (`nylas`, `onelogin`, `langsmith`, `codegen`, `rfc7009`) or `admin`;
/// `mode` is `forward`, `terminate`, or `api` for the admin API.
pub fn revocation_applied(source: &str, mode: &str) {
    metrics::counter!(APPLIED, "source" => source.to_owned(), "mode" => mode.to_owned())
        .increment(1);
}

/// Counts a credential binding recorded (`source`: `admin`, `issuance`).
pub fn binding_recorded(source: &'static str) {
    metrics::counter!(BINDINGS_RECORDED, "source" => source).increment(1);
}

/// Counts a token request answered `invalid_grant` (`reason`: `revoked`,
/// `reused`).
pub fn refresh_refused(reason: &'static str) {
    metrics::counter!(REFRESH_REFUSED, "reason" => reason).increment(1);
}

/// Counts a family revoked (`source`: a dialect's name, `admin`, `reuse`).
pub fn family_revoked(source: &'static str) {
    metrics::counter!(FAMILIES_REVOKED, "source" => source).increment(1);
}

/// Counts a revocation the store failed to apply (`source` as above).
pub fn revocation_apply_failed(source: &str) {
    metrics::counter!(APPLY_FAILED, "source" => source.to_owned()).increment(1);
}

/// Counts a revoke call that named no identifiable token or subject (e.g. a
/// LangSmith call whose credential carries no `sub`).
pub fn unidentified_revoke(dialect: &str) {
    metrics::counter!(UNIDENTIFIED, "dialect" => dialect.to_owned()).increment(1);
}

/// Counts one live session (`kind`: `upgrade` or `h2_stream`) closed by a
/// revocation.
pub fn live_session_closed(kind: &'static str) {
    metrics::counter!(LIVE_CLOSED, "kind" => kind).increment(1);
}

/// Sets the bloom filter gauges (after each rebuild or periodically).
pub fn bloom(fill_ratio: f64, bits: u64, capacity: u64) {
    metrics::gauge!(BLOOM_FILL).set(fill_ratio);
    metrics::gauge!(BLOOM_BITS).set(bits as f64);
    metrics::gauge!(BLOOM_CAPACITY).set(capacity as f64);
}

/// Counts one bloom hit that the exact set answered "not revoked".
pub fn bloom_false_positive() {
    metrics::counter!(BLOOM_FP).increment(1);
}

/// Sets the store gauges (from `RevocationStore::status()`, periodically).
pub fn store(
    connected: bool,
    staleness_secs: f64,
    journal_backlog: u64,
    token_rules: u64,
    scope_rules: u64,
) {
    metrics::gauge!(STORE_CONNECTED).set(if connected { 1.0 } else { 0.0 });
    metrics::gauge!(STORE_STALENESS).set(staleness_secs);
    metrics::gauge!(STORE_BACKLOG).set(journal_backlog as f64);
    metrics::gauge!(STORE_TOKEN_RULES).set(token_rules as f64);
    metrics::gauge!(STORE_SCOPE_RULES).set(scope_rules as f64);
}

/// Sets the bloom and store gauges from `store` (its [`StoreStatus`] and
/// its [`LocalCache`](crate::store::LocalCache)'s filter): call before each
/// render. The false-positive counter is raised to the cache's own count,
/// so use this or [`bloom_false_positive`], not both.
///
/// [`StoreStatus`]: crate::store::StoreStatus
pub fn store_gauges(store: &dyn crate::store::RevocationStore) {
    let status = store.status();
    self::store(
        status.connected,
        status.staleness.map_or(0.0, |d| d.as_secs_f64()),
        status.journal_backlog,
        status.token_rules,
        status.scope_rules,
    );
    metrics::gauge!(STORE_BINDINGS).set(status.bindings as f64);
    let fenced = store.check_mode() != crate::store::CheckMode::Local;
    metrics::gauge!(STORE_FENCED).set(if fenced { 1.0 } else { 0.0 });
    let cache = store.cache();
    let filter = cache.bloom();
    bloom(filter.fill_ratio(), filter.bits(), filter.capacity() as u64);
    metrics::counter!(BLOOM_FP).absolute(cache.false_positives());
}

/// The Prometheus text of everything recorded, installing the recorder if
/// [`install`] was not called (then only what is recorded from now on
/// shows). Empty if another recorder owns the process.
pub fn render() -> String {
    process().collect();
    install()
        .map(|h| {
            let mut text = h.render();
            if !text.is_empty() && !text.ends_with("\n\n") {
                text.push('\n');
            }
            sharded::render(
                &mut text,
                &[&REQUESTS_FAMILY, &OVERHEAD_FAMILY, &UPSTREAM_FAMILY],
            );
            text
        })
        .unwrap_or_default()
}

/// Counts one reload of `what` (`config` or `tls`) and whether it took.
pub fn reload(what: &'static str, ok: bool) {
    let result = if ok { "ok" } else { "error" };
    metrics::counter!(RELOADS, "what" => what, "result" => result).increment(1);
}

#[cfg(test)]
#[path = "../tests/support/prometheus.rs"]
mod prometheus_text;

#[cfg(test)]
mod tests {
    use super::prometheus_text::{parse, Exposition};
    use super::*;

    fn scrape(_: &PrometheusHandle) -> Exposition {
        let text = render();
        parse(&text).unwrap_or_else(|e| panic!("{e}\n---\n{text}"))
    }

    #[test]
    fn install_is_idempotent() {
        let a = install().unwrap();
        let b = install().unwrap();
        request("idem", Outcome::Forwarded);
        let labels = [("route", "idem"), ("outcome", "forwarded")];
        let va = scrape(&a).value(REQUESTS, &labels);
        assert!(va.is_some_and(|v| v >= 1.0));
        assert_eq!(va, scrape(&b).value(REQUESTS, &labels), "one recorder");
    }

    #[test]
    fn rendered_output_parses_and_counters_move() {
        let h = install().unwrap();
        let route = "metrics-test";
        let fwd = [("route", route), ("outcome", "forwarded")];
        let rev = [("route", route), ("outcome", "revoked")];

        request(route, Outcome::Forwarded);
        let before = scrape(&h);
        let f0 = before.value(REQUESTS, &fwd).unwrap();
        let r0 = before.value(REQUESTS, &rev).unwrap_or(0.0);

        let m = RouteMetrics::new(route);
        request(route, Outcome::Forwarded);
        m.request(Outcome::Forwarded);
        m.request(Outcome::Revoked);
        for o in Outcome::ALL {
            m.request(o);
        }
        overhead(Duration::from_micros(300));
        upstream_time(route, Duration::from_millis(20));
        m.upstream_time(Duration::from_secs(120));
        revocation_applied("nylas", "terminate");
        revocation_apply_failed("admin");
        unidentified_revoke("langsmith");
        bloom(0.25, 1 << 20, 100_000);
        bloom_false_positive();
        store(true, 1.5, 3, 10, 2);
        reload("tls", false);

        let after = scrape(&h);
        assert_eq!(after.value(REQUESTS, &fwd).unwrap(), f0 + 3.0);
        assert_eq!(after.value(REQUESTS, &rev).unwrap(), r0 + 2.0);
        assert_eq!(after.family_type(REQUESTS), Some("counter"));
        assert_eq!(after.family_type(OVERHEAD), Some("histogram"));
        assert_eq!(after.family_type(STORE_CONNECTED), Some("gauge"));

        // Histogram: cumulative buckets, +Inf equal to _count, per-route label.
        let up = [("route", route)];
        let count = after.value("revgate_upstream_seconds_count", &up).unwrap();
        assert!(count >= 2.0);
        let inf = [("route", route), ("le", "+Inf")];
        assert_eq!(
            after.value("revgate_upstream_seconds_bucket", &inf),
            Some(count)
        );
        let le_60 = [("route", route), ("le", "60")];
        assert_eq!(
            after.value("revgate_upstream_seconds_bucket", &le_60),
            Some(count - 1.0),
            "the 120 s sample is only in +Inf"
        );
        assert!(
            after
                .value("revgate_overhead_seconds_bucket", &[("le", "0.0005")])
                .unwrap()
                >= 1.0
        );

        for (name, labels, at_least) in [
            (
                APPLIED,
                vec![("source", "nylas"), ("mode", "terminate")],
                1.0,
            ),
            (APPLY_FAILED, vec![("source", "admin")], 1.0),
            (UNIDENTIFIED, vec![("dialect", "langsmith")], 1.0),
            (BLOOM_FP, vec![], 1.0),
            (RELOADS, vec![("what", "tls"), ("result", "error")], 1.0),
        ] {
            let v = after.value(name, &labels).unwrap_or(0.0);
            assert!(v >= at_least, "{name}{labels:?} = {v}");
        }
        assert_eq!(after.value(BLOOM_FILL, &[]), Some(0.25));
        assert_eq!(after.value(STORE_BACKLOG, &[]), Some(3.0));
        assert_eq!(after.value(STORE_STALENESS, &[]), Some(1.5));
    }

    #[tokio::test]
    async fn store_gauges_read_a_real_store() {
        use crate::credentials::Fingerprint;
        use crate::store::memory::MemoryStore;
        use crate::store::{now_unix, RevocationCommand, RevocationStore, TokenRule};

        install().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = MemoryStore::open(&dir.path().join("j"), 1000, 0.01).unwrap();
        for i in 0..3u8 {
            let rule = TokenRule {
                fingerprint: Fingerprint::from_bytes([i; 16]),
                expires_at: now_unix() + 3600,
            };
            store.apply(RevocationCommand::Token(rule)).await.unwrap();
        }
        store_gauges(&store);
        let m = parse(&render()).unwrap();
        // Other tests set these gauges too; the store's values are at least
        // plausible and the families are all there.
        assert_eq!(m.family_type(STORE_TOKEN_RULES), Some("gauge"));
        assert!(m.value(BLOOM_BITS, &[]).unwrap() > 0.0);
        assert!(m.value(BLOOM_FP, &[]).is_some());
    }

    #[test]
    fn the_parser_rejects_malformed_text() {
        for bad in [
            "revgate_x{route=\"a} 1\n",
            "revgate x 1\n",
            "revgate_x{route=\"a\"} one\n",
            "# TYPE revgate_x counter\n# TYPE revgate_x counter\n",
            "# TYPE revgate_x sideways\n",
            "9bad 1\n",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should not parse");
        }
        let ok = parse("# HELP a_b Some help.\n# TYPE a_b counter\na_b{x=\"q\\\"\\n\"} 2 1700000000000\n\nc NaN\n").unwrap();
        assert_eq!(ok.value("a_b", &[("x", "q\"\n")]), Some(2.0));
        assert!(ok.value("c", &[]).unwrap().is_nan());
    }
}
