//! The reloadable part of the gateway ([`Runtime`]): what a SIGHUP can
//! replace — routes, dialects, credential settings, upstream clients and
//! pools, rate limiters — and what each request reads from it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{self, HeaderValue};
use http::Response;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;

#[allow(clippy::wildcard_imports)]
use super::*;
use crate::config::Settings;
use crate::credentials::FingerprintKey;
use crate::dialect::{self, Dialect, RevokeMode};
use crate::verdict::Checker;

/// Whether a revocation may be recorded ([`Runtime::scope_admission`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScopeAdmission {
    /// Not a scope revocation, or one within the bounds.
    Admitted,
    /// The subject is longer than an identifier may be: answered as "no
    /// current user" (401 on the dialects; the admin API refuses it earlier
    /// with a 400).
    SubjectTooLong,
    /// The subject already has `revoke.max_scopes_per_subject` rules: 429.
    CapReached,
}

pub(crate) type UpstreamClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Body>;

// === Runtime: what SIGHUP can replace ===

pub(crate) struct DialectEntry {
    pub(crate) path: String,
    pub(crate) mode: RevokeMode,
    pub(crate) dialect: Box<dyn Dialect>,
    /// How far a token revoke reaches into the token's family (`None`: by
    /// what the token is; see `Runtime::widen`).
    pub(crate) family: Option<crate::store::family::Reach>,
}

/// The reloadable part of the gateway: routes, dialects, credential settings,
/// the upstream client.
pub struct Runtime {
    pub(crate) settings: Settings,
    pub(crate) checker: Checker,
    pub(crate) dialects: Vec<DialectEntry>,
    pub(crate) client: UpstreamClient,
    /// Per-route metric handles, parallel to `settings.routes`, resolved once
    /// so the hot path allocates no labels.
    pub(crate) route_metrics: Vec<crate::metrics::RouteMetrics>,
    pub(crate) no_route_metrics: crate::metrics::RouteMetrics,
    /// The HTTP/1.1 fast path's upstream pools, parallel to `settings.routes`
    /// (`None` for `https://` upstreams, which go through `client`).
    pub(crate) pools: Vec<Option<Arc<crate::h1::pool::Pool>>>,
    /// Whether any route matches on host (else the host is not read).
    pub(crate) host_routes: bool,
    /// Verifies the JWT of a terminate-mode scope revoker (`[tokens.verify]`).
    pub(crate) verifier: Option<crate::identity::Verifier>,
    /// Repeated warnings, one line a second each (both paths).
    pub(crate) warnings: Warnings,
    /// `[revoke.rate_limit]`, `None` when off.
    pub(crate) revoke_limiter: Option<crate::ratelimit::RateLimiter>,
    /// `[admin.rate_limit]`, `None` when off.
    pub(crate) admin_limiter: Option<crate::ratelimit::RateLimiter>,
    /// Token endpoints whose answers bind what they issue.
    pub(crate) issuance: Vec<super::issuance::Issuance>,
    /// Identity-provider feeds (`[feeds]`): their verifiers and paths.
    pub(crate) feeds: crate::feeds::Feeds,
    /// The access log's writer: the gateway's, put here by
    /// `Gateway::new` and `Gateway::reload` (`None`: no access log, as in
    /// a gateway built without one).
    pub(crate) access: Option<Arc<crate::accesslog::AccessLog>>,
}

/// The warnings a client or a failing upstream can repeat at will, each
/// throttled ([`crate::telemetry::Throttle`]).
#[derive(Debug, Default)]
pub(crate) struct Warnings {
    /// An upstream refused, reset or timed out.
    pub upstream: crate::telemetry::Throttle,
    /// A revoke call could not be read or answered.
    pub revoke_call: crate::telemetry::Throttle,
}

/// Why a runtime could not be built.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// Upstream TLS settings could not be loaded.
    #[error("upstream TLS: {0}")]
    Tls(String),
}

impl Runtime {
    /// Builds the runtime for checked settings.
    pub fn new(settings: Settings, key: Arc<FingerprintKey>) -> Result<Self, RuntimeError> {
        let up = settings.upstream();
        let tls = crate::tls::upstream_client_config(
            up.ca_file.as_deref(),
            up.client_cert.as_deref(),
            up.client_key.as_deref(),
        )
        .map_err(|e| RuntimeError::Tls(e.to_string()))?;
        // The JWKS is fetched with the same outbound TLS settings as upstreams.
        let verifier = settings
            .verify
            .as_ref()
            .map(|v| crate::identity::Verifier::new(v, tls.clone()));
        // So is the introspection endpoint.
        let introspection = settings
            .introspection()
            .map(|i| crate::identity::Introspector::new(i, tls.clone()));
        warn_unidentifiable_revokers(&settings);
        // And the feeds' JWKS and poll endpoint.
        let feeds =
            crate::feeds::Feeds::new(settings.feeds(), tls.clone(), settings.revoke_rate_limit());
        let client = crate::tls::OutboundClient {
            connect_timeout: up.connect_timeout,
            tcp_keepalive: Some(Duration::from_secs(60)),
            pool_idle_timeout: up.pool_idle_timeout,
            pool_max_idle_per_host: up.pool_max_idle_per_host,
        }
        .build(tls);
        let dialects = settings
            .dialects
            .iter()
            .map(|d| DialectEntry {
                path: d.path.clone(),
                mode: d.mode,
                dialect: dialect::build(d.kind, &settings.dialect_secrets),
                family: d.family.or_else(|| d.kind.family()),
            })
            .collect();
        let route_metrics = settings
            .routes
            .iter()
            .map(|r| crate::metrics::RouteMetrics::new(&r.name))
            .collect();
        let pools = settings
            .routes
            .iter()
            .map(|r| {
                // A built-in upstream has nothing to connect to.
                (r.upstream.scheme == http::uri::Scheme::HTTP && r.upstream.builtin.is_none()).then(
                    || {
                        Arc::new(crate::h1::pool::Pool::new(
                            &r.upstream.authority,
                            settings.io_threads(),
                            up.pool_max_idle_per_host,
                            up.pool_idle_timeout,
                            up.connect_timeout,
                        ))
                    },
                )
            })
            .collect();
        Ok(Runtime {
            access: None,
            issuance: super::issuance::Issuance::all(settings.identity()),
            feeds,
            verifier,
            revoke_limiter: crate::ratelimit::RateLimiter::from_config(
                settings.revoke_rate_limit(),
            ),
            admin_limiter: crate::ratelimit::RateLimiter::from_config(settings.admin_rate_limit()),
            pools,
            host_routes: settings.routes.iter().any(|r| r.host.is_some()),
            warnings: Warnings::default(),
            route_metrics,
            no_route_metrics: crate::metrics::RouteMetrics::new("-"),
            checker: Checker {
                key,
                sources: settings.credential_sources.clone(),
                attributes: settings.attribute_sources.clone(),
                jti: settings.revoke_by_jti(),
                introspection,
            },
            dialects,
            client,
            settings,
        })
    }

    /// The settings this runtime was built from.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Takes a token from the client's revoke-endpoint bucket; counted when
    /// refused.
    pub fn revoke_rate(&self, ip: std::net::IpAddr) -> Result<(), crate::ratelimit::Limited> {
        rate(self.revoke_limiter.as_ref(), ip, "revoke")
    }

    /// Takes a token from the client's admin-API bucket; counted when refused.
    pub fn admin_rate(&self, ip: std::net::IpAddr) -> Result<(), crate::ratelimit::Limited> {
        rate(self.admin_limiter.as_ref(), ip, "admin")
    }

    /// The fingerprint key.
    pub fn key(&self) -> &FingerprintKey {
        &self.checker.key
    }

    /// Records one finished request: metrics, the access log when on, and
    /// ends its span when traced.
    pub(crate) fn account(&self, f: &Finished<'_>, span: Option<crate::otel::RequestSpan>) {
        let elapsed = f.start.elapsed();
        let metrics = f
            .route
            .and_then(|i| self.route_metrics.get(i))
            .unwrap_or(&self.no_route_metrics);
        metrics.request(f.outcome);
        metrics.overhead(elapsed.saturating_sub(f.upstream_time.unwrap_or_default()));
        if let Some(t) = f.upstream_time {
            metrics.upstream_time(t);
        }
        let route = || {
            f.route
                .and_then(|i| self.settings.routes.get(i))
                .map_or("-", |r| r.name.as_str())
        };
        if let Some(span) = span {
            span.finish(f.status, f.outcome.as_str(), route(), f.request_id);
        }
        if let (Some(request), Some(log)) = (f.logged, &self.access) {
            if crate::telemetry::access_enabled() {
                log.write(
                    self.settings.access_log_format(),
                    &crate::accesslog::Line {
                        request,
                        status: f.status,
                        route: route(),
                        outcome: f.outcome,
                        duration: elapsed,
                        upstream: f.upstream_time,
                        fingerprint: f.fingerprint,
                        peer: f.peer,
                        request_id: f.request_id.map(crate::otel::RequestId::as_str),
                        body_bytes: f.body_bytes,
                    },
                );
            }
        }
    }

    /// What the access line will need of a request head, when the access
    /// log is on (`None` otherwise: nothing copied).
    pub(crate) fn capture<H: crate::credentials::Headers + ?Sized>(
        &self,
        method: &str,
        path: &str,
        version: http::Version,
        headers: &H,
    ) -> Option<crate::accesslog::Request> {
        (self.access.is_some() && self.settings.access_log()).then(|| {
            crate::accesslog::Request::capture(
                self.settings.access_log_format(),
                method,
                path,
                version,
                headers,
            )
        })
    }

    pub(crate) fn route(&self, host: Option<&str>, path: &str) -> Option<usize> {
        self.settings.routes.iter().position(|r| {
            r.host.as_deref().is_none_or(|h| host == Some(h))
                && prefix_matches(&r.path_prefix, path)
        })
    }

    /// The checker of credentials.
    pub(crate) fn checker(&self) -> &Checker {
        &self.checker
    }

    /// The fast path's connection pool for route `index`; `None` when that
    /// route's upstream is not plain `http://`.
    pub(crate) fn pool(&self, index: usize) -> Option<Arc<crate::h1::pool::Pool>> {
        self.pools.get(index)?.clone()
    }

    /// Closes idle fast-path upstream connections past their time.
    pub(crate) fn sweep_pools(&self) {
        let now = Instant::now();
        for pool in self.pools.iter().flatten() {
            pool.sweep(now);
        }
    }

    /// How often [`Runtime::sweep_pools`] is worth running.
    pub(crate) fn sweep_interval(&self) -> Duration {
        self.pools
            .iter()
            .flatten()
            .map(|p| p.sweep_interval())
            .min()
            .unwrap_or(Duration::from_secs(30))
    }

    /// Whether any route matches on host.
    pub(crate) fn host_routes(&self) -> bool {
        self.host_routes
    }

    /// The identity-provider feed served at `path`, if any.
    pub(crate) fn feed(&self, path: &str) -> Option<crate::feeds::FeedKind> {
        self.feeds.at(path)
    }

    pub(crate) fn dialect(&self, path: &str) -> Option<&DialectEntry> {
        self.dialects.iter().find(|d| d.path == path)
    }
}

/// Says loudly when a terminate-mode scope dialect can never identify its
/// caller (no `[tokens.verify]`, no `[identity.introspection]`, no identity
/// header for the subject): every
/// such call will be a 401.
pub(crate) fn warn_unidentifiable_revokers(settings: &Settings) {
    if settings.verify.is_some()
        || settings.introspection().is_some()
        || settings.attribute_sources.identity_headers.sub.is_some()
    {
        return;
    }
    for d in &settings.dialects {
        if d.mode == RevokeMode::Terminate
            && matches!(
                d.kind,
                dialect::DialectKind::LangSmith | dialect::DialectKind::Codegen
            )
        {
            tracing::warn!(
                dialect = d.kind.name(),
                "terminate mode with neither [tokens.verify] nor tokens.identity_headers.sub: its revoke calls cannot identify a caller and will all be answered 401"
            );
        }
    }
}

/// Takes a token from `limiter` (none: always allowed), counting refusals.
pub(crate) fn rate(
    limiter: Option<&crate::ratelimit::RateLimiter>,
    ip: std::net::IpAddr,
    surface: &'static str,
) -> Result<(), crate::ratelimit::Limited> {
    let Some(limiter) = limiter else {
        return Ok(());
    };
    limiter
        .check(ip)
        .inspect_err(|_| crate::metrics::rate_limited(surface))
}

/// Sets `Retry-After` (whole seconds) on a 429.
pub fn retry_after<B>(resp: &mut Response<B>, limited: crate::ratelimit::Limited) {
    let mut buf = itoa::Buffer::new();
    if let Ok(v) = HeaderValue::from_str(buf.format(limited.retry_after_secs)) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
}

/// `/api` matches `/api`, `/api/` and `/api/x`, not `/apix`.
pub(crate) fn prefix_matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_match_on_segment_boundaries() {
        assert!(prefix_matches("/", "/anything"));
        assert!(prefix_matches("/api", "/api"));
        assert!(prefix_matches("/api", "/api/x"));
        assert!(!prefix_matches("/api", "/apix"));
        assert!(prefix_matches("/api/", "/api/x"));
    }
}
