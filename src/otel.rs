//! Request ids and OpenTelemetry traces (`[tracing]`), for both paths.
//!
//! ```text
//! [tracing]
//! request_id = true        # keep the client's x-request-id or make one; upstream + access log
//! otlp_endpoint = ""       # e.g. "http://otel-collector:4318/v1/traces": OTLP/HTTP traces; empty = off
//! service_name = "revgate"
//! sample_ratio = 1.0       # of traces revgate starts; a caller's sampled flag is followed
//! ```
//!
//! # Request ids
//!
//! A request's `x-request-id` is kept when it is 1 to 64 visible ASCII
//! characters (a client's or an outer proxy's id); otherwise (absent, too
//! long, or sent twice) the gateway makes one: 32 hex characters, a random
//! per-process prefix and a counter, unique without a random draw per
//! request. It replaces any incoming `x-request-id` upstream and is the
//! access line's `request_id`. [`RequestId`] is inline (no allocation).
//!
//! # Traces
//!
//! Off unless `otlp_endpoint` is set, and then a span per request: kind
//! server, named by the method, with `http.request.method`, `url.path` (no
//! query: tokens travel there), `http.route` (the route's name),
//! `http.response.status_code`, `revgate.verdict` (the outcome:
//! `forwarded`, `revoked`, ...) and `revgate.request_id`; status error for
//! a 5xx. Its parent is the caller's W3C `traceparent` when valid. The
//! upstream gets a `traceparent` naming this span (replacing the caller's;
//! `tracestate` passes through unchanged). Spans leave in batches from a
//! thread of the SDK's own (OTLP/HTTP protobuf, `reqwest`'s blocking client),
//! never from a request's task; [`shutdown`] flushes them at exit.
//!
//! With tracing off the request path pays one `OnceLock` read; with the
//! request id off, one settings flag. `[tracing]` is read at start-up: a
//! SIGHUP reload keeps the tracer it started with (the request-id flag
//! follows the reload).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt as _, Tracer as _};
use opentelemetry::KeyValue;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};

use crate::config::TracingConfig;

/// Header name of the request id.
pub const REQUEST_ID: &str = "x-request-id";

/// Header name of the W3C trace context.
pub const TRACEPARENT: &str = "traceparent";

/// Longest incoming request id kept as it is.
pub const MAX_REQUEST_ID: usize = 64;

/// A request id, inline.
#[derive(Clone, Copy)]
pub struct RequestId {
    bytes: [u8; MAX_REQUEST_ID],
    len: u8,
}

impl std::fmt::Debug for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl RequestId {
    /// The id for a request whose `x-request-id` values are `incoming`.
    pub fn for_request<'a>(mut incoming: impl Iterator<Item = &'a [u8]>) -> RequestId {
        match (incoming.next(), incoming.next()) {
            (Some(v), None) if Self::keepable(v) => {
                let mut bytes = [0u8; MAX_REQUEST_ID];
                bytes[..v.len()].copy_from_slice(v);
                RequestId {
                    bytes,
                    len: v.len() as u8,
                }
            }
            _ => Self::generate(),
        }
    }

    fn keepable(v: &[u8]) -> bool {
        (1..=MAX_REQUEST_ID).contains(&v.len()) && v.iter().all(|b| (0x21..=0x7e).contains(b))
    }

    /// A new id: 16 hex of a per-process random prefix, 16 of a counter.
    pub fn generate() -> RequestId {
        // The prefix's hex, formatted once.
        static PREFIX: OnceLock<[u8; 16]> = OnceLock::new();
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let prefix = PREFIX.get_or_init(|| {
            let mut b = [0u8; 8];
            // A failed draw leaves the pid and time: still distinct per process.
            if getrandom::fill(&mut b).is_err() {
                let t = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64);
                b = (t ^ u64::from(std::process::id())).to_le_bytes();
            }
            let mut hex = [0u8; 16];
            hex_u64(u64::from_le_bytes(b), &mut hex);
            hex
        });
        // Each thread numbers from a block of its own, so that two I/O
        // threads do not bounce one counter's cache line per request.
        thread_local! {
            static BLOCK: std::cell::Cell<(u64, u64)> = const { std::cell::Cell::new((0, 0)) };
        }
        const BLOCK_LEN: u64 = 1024;
        let n = BLOCK
            .try_with(|b| {
                let (mut next, mut end) = b.get();
                if next == end {
                    next = COUNTER.fetch_add(BLOCK_LEN, Ordering::Relaxed);
                    end = next + BLOCK_LEN;
                }
                b.set((next + 1, end));
                next
            })
            .unwrap_or_else(|_| COUNTER.fetch_add(1, Ordering::Relaxed));
        let mut bytes = [0u8; MAX_REQUEST_ID];
        bytes[..16].copy_from_slice(prefix);
        hex_u64(n, &mut bytes[16..32]);
        RequestId { bytes, len: 32 }
    }

    /// The id's bytes (visible ASCII).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        // Visible ASCII by construction.
        std::str::from_utf8(self.as_bytes()).unwrap_or("-")
    }
}

fn hex_u64(v: u64, out: &mut [u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, o) in out.iter_mut().enumerate().take(16) {
        *o = HEX[((v >> (60 - 4 * i)) & 0xf) as usize];
    }
}

struct Tracing {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

static TRACING: OnceLock<Tracing> = OnceLock::new();

/// Why the tracer could not start (a start-up error).
#[derive(Debug, thiserror::Error)]
#[error("tracing: {0}")]
pub struct OtelError(String);

/// Starts the OTLP exporter when `otlp_endpoint` is set; a no-op when it is
/// empty or a tracer is already running (several gateways in one process).
pub fn init(cfg: &TracingConfig) -> Result<(), OtelError> {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
    if cfg.otlp_endpoint.is_empty() || TRACING.get().is_some() {
        return Ok(());
    }
    let client = reqwest_client(cfg.export_timeout)?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_endpoint(cfg.otlp_endpoint.clone())
        .with_timeout(cfg.export_timeout)
        .build()
        .map_err(|e| OtelError(e.to_string()))?;
    let batch = opentelemetry_sdk::trace::BatchConfigBuilder::default()
        .with_scheduled_delay(cfg.export_interval)
        .build();
    let processor = opentelemetry_sdk::trace::BatchSpanProcessor::builder(exporter)
        .with_batch_config(batch)
        .build();
    let sampler = opentelemetry_sdk::trace::Sampler::ParentBased(Box::new(
        opentelemetry_sdk::trace::Sampler::TraceIdRatioBased(cfg.sample_ratio),
    ));
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(sampler)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(cfg.service_name.clone())
                .with_attribute(KeyValue::new(
                    "service.version",
                    crate::cli::VERSION.to_string(),
                ))
                .build(),
        )
        .build();
    let tracer = provider.tracer("revgate");
    let _ = TRACING.set(Tracing { provider, tracer });
    Ok(())
}

fn reqwest_client(timeout: std::time::Duration) -> Result<reqwest::blocking::Client, OtelError> {
    // Built on a thread of its own: reqwest's blocking client refuses to be
    // made (or dropped) inside an async runtime, which `init` runs in.
    std::thread::spawn(move || {
        reqwest::blocking::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| OtelError(e.to_string()))
    })
    .join()
    .map_err(|_| OtelError("cannot build the OTLP client".into()))?
}

/// Whether spans are being made.
pub fn enabled() -> bool {
    TRACING.get().is_some()
}

/// Flushes and stops the exporter (at exit).
pub fn shutdown() {
    if let Some(t) = TRACING.get() {
        if let Err(e) = t.provider.shutdown() {
            tracing::warn!(error = %e, "tracing: spans not flushed at exit");
        }
    }
}

/// One request's span, ended by [`RequestSpan::finish`] (or on drop).
/// Boxed: the SDK's span is hundreds of bytes, and a request's state (which
/// holds an `Option<RequestSpan>`) is moved several times per request on the
/// fast path whether tracing is on or not (callgrind, issue 16).
#[derive(Debug)]
pub struct RequestSpan {
    span: Box<opentelemetry_sdk::trace::Span>,
}

/// What a `traceparent` carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Parent {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    sampled: bool,
}

/// Parses a W3C `traceparent` (version 00 exactly; a later version is read
/// by its first four fields, as the spec asks). `None` when invalid.
fn parse_traceparent(v: &[u8]) -> Option<Parent> {
    let s = std::str::from_utf8(v).ok()?.trim();
    let mut parts = s.split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version.len() != 2 || version == "ff" || (version == "00" && parts.next().is_some()) {
        return None;
    }
    let lower_hex = |x: &str| {
        x.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if !lower_hex(version) || !lower_hex(trace) || !lower_hex(span) || !lower_hex(flags) {
        return None;
    }
    let mut trace_id = [0u8; 16];
    let mut span_id = [0u8; 8];
    let mut fl = [0u8; 1];
    hex::decode_to_slice(trace, &mut trace_id).ok()?;
    hex::decode_to_slice(span, &mut span_id).ok()?;
    hex::decode_to_slice(flags, &mut fl).ok()?;
    if trace_id == [0; 16] || span_id == [0; 8] {
        return None;
    }
    Some(Parent {
        trace_id,
        span_id,
        sampled: fl[0] & 1 == 1,
    })
}

/// Starts a request's span when tracing is on: child of the request's
/// first `traceparent` when it is valid.
pub fn start<'a>(
    method: &str,
    path: &str,
    mut traceparents: impl Iterator<Item = &'a [u8]>,
) -> Option<RequestSpan> {
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
    let t = TRACING.get()?;
    let parent = traceparents.next().and_then(parse_traceparent);
    let cx = match parent {
        Some(p) => opentelemetry::Context::new().with_remote_span_context(SpanContext::new(
            TraceId::from_bytes(p.trace_id),
            SpanId::from_bytes(p.span_id),
            if p.sampled {
                TraceFlags::SAMPLED
            } else {
                TraceFlags::default()
            },
            true,
            TraceState::default(),
        )),
        None => opentelemetry::Context::new(),
    };
    let span = t
        .tracer
        .span_builder(method.to_owned())
        .with_kind(SpanKind::Server)
        .with_attributes([
            KeyValue::new("http.request.method", method.to_owned()),
            KeyValue::new("url.path", path.to_owned()),
        ])
        .start_with_context(&t.tracer, &cx);
    Some(RequestSpan {
        span: Box::new(span),
    })
}

impl RequestSpan {
    /// The `traceparent` to send upstream: this span as the parent.
    pub fn traceparent(&self) -> [u8; 55] {
        let sc = self.span.span_context();
        let mut out = [0u8; 55];
        out[..3].copy_from_slice(b"00-");
        let trace = sc.trace_id().to_bytes();
        let span = sc.span_id().to_bytes();
        let _ = hex::encode_to_slice(trace, &mut out[3..35]);
        out[35] = b'-';
        let _ = hex::encode_to_slice(span, &mut out[36..52]);
        out[52] = b'-';
        let flags = [sc.trace_flags().to_u8()];
        let _ = hex::encode_to_slice(flags, &mut out[53..55]);
        out
    }

    /// Ends the span with what the request came to.
    pub fn finish(
        mut self,
        status: u16,
        verdict: &'static str,
        route: &str,
        request_id: Option<&RequestId>,
    ) {
        self.span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
        self.span
            .set_attribute(KeyValue::new("revgate.verdict", verdict));
        self.span
            .set_attribute(KeyValue::new("http.route", route.to_owned()));
        if let Some(id) = request_id {
            self.span
                .set_attribute(KeyValue::new("revgate.request_id", id.as_str().to_owned()));
        }
        if status >= 500 {
            self.span.set_status(Status::error(verdict));
        }
        self.span.end();
    }
}

/// What a request carries for tracing: its id and span, each when on.
#[derive(Debug, Default)]
pub struct Trace {
    /// The request id (with `tracing.request_id`).
    pub id: Option<RequestId>,
    /// The span (with an OTLP endpoint).
    pub span: Option<RequestSpan>,
}

impl Trace {
    /// The hyper path's: the id and our `traceparent` set on the request
    /// (replacing the caller's), so that forwarding sends them upstream.
    pub fn for_hyper<B>(settings: &crate::config::Settings, req: &mut http::Request<B>) -> Trace {
        let mut trace = Trace::default();
        if settings.request_id() {
            let id = RequestId::for_request(
                req.headers()
                    .get_all(REQUEST_ID)
                    .iter()
                    .map(http::HeaderValue::as_bytes),
            );
            if let Ok(v) = http::HeaderValue::from_bytes(id.as_bytes()) {
                req.headers_mut()
                    .insert(http::HeaderName::from_static(REQUEST_ID), v);
            }
            trace.id = Some(id);
        }
        if enabled() {
            trace.span = start(
                req.method().as_str(),
                req.uri().path(),
                req.headers()
                    .get_all(TRACEPARENT)
                    .iter()
                    .map(http::HeaderValue::as_bytes),
            );
            if let Some(span) = &trace.span {
                if let Ok(v) = http::HeaderValue::from_bytes(&span.traceparent()) {
                    req.headers_mut()
                        .insert(http::HeaderName::from_static(TRACEPARENT), v);
                }
            }
        }
        trace
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_kept_when_sane_and_made_otherwise() {
        let kept = RequestId::for_request([b"abc-123".as_slice()].into_iter());
        assert_eq!(kept.as_str(), "abc-123");
        for bad in [&b""[..], b"has space", &[b'x'; 65], "é".as_bytes()] {
            let id = RequestId::for_request([bad].into_iter());
            assert_eq!(id.as_str().len(), 32, "{bad:?}");
        }
        let twice = RequestId::for_request([b"a".as_slice(), b"b"].into_iter());
        assert_eq!(twice.as_str().len(), 32);
        let a = RequestId::generate();
        let b = RequestId::generate();
        assert_ne!(a.as_str(), b.as_str());
        assert_eq!(a.as_str()[..16], b.as_str()[..16]);
        assert!(a.as_str().bytes().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn traceparents_parse_strictly() {
        let ok = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let p = parse_traceparent(ok).unwrap();
        assert!(p.sampled);
        assert_eq!(hex::encode(p.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex::encode(p.span_id), "00f067aa0ba902b7");
        for bad in [
            &b"00-00000000000000000000000000000000-00f067aa0ba902b7-01"[..],
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            b"00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            b"garbage",
        ] {
            assert_eq!(
                parse_traceparent(bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        // A later version: its first four fields.
        assert!(parse_traceparent(
            b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-future"
        )
        .is_some_and(|p| !p.sampled));
    }
}
