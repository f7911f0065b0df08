//! The request's path, stage by stage, and the forwarding to upstreams.
//!
//! ```text
//! Gateway::handle            logs, maps ProxyError -> response (the one "rescue")
//!   handle_inner             early returns, in order:
//!     1. route               host / longest path prefix -> upstream (404 if none)
//!     2. revoke endpoint?    a dialect's path -> revoke(): per-client-IP rate limit
//!                            (429), then forward or terminate; a scope revocation
//!                            past revoke.max_scopes_per_subject is refused (429)
//!     3. verdict             credential -> fingerprint -> bloom -> store (401/400/503)
//!     4. forward             header hygiene, pooled upstream client, streaming both ways
//! ```
//!
//! Bodies stream: the client's `Incoming` is handed to the upstream client as
//! it arrives and the upstream's response body likewise, so memory stays flat
//! whatever the size. Only a revoke endpoint whose dialect needs the body
//! (OneLogin, RFC 7009) reads it, under `revoke.max_body_bytes` (413 past it),
//! and then forwards exactly those bytes.
//!
//! Who revokes a scope (LangSmith, Codegen: "every token of the current
//! user"): in terminate mode the current user comes only from a verified
//! source, a JWT in the call's credential that `identity::Verifier` accepted
//! or the trusted identity headers, else the dialect's 401 and nothing is
//! revoked; in forward mode the command waits for the upstream's 2xx, which
//! authenticates the caller, so the peeked claims may name it
//! ([`Runtime::command`]).
//!
//! Header hygiene (RFC 9110 §7.6.1): hop-by-hop headers and those named in
//! `Connection` are removed both ways; `X-Forwarded-For` is appended to,
//! `X-Forwarded-Proto` and `X-Forwarded-Host` are set to what this hop saw,
//! `Via` is appended to. The upstream sees its own authority as `Host`.
//! `Upgrade` (WebSocket) requests keep their upgrade headers and, on a 101,
//! the two upgraded connections are spliced together.
//!
//! The query string is never logged: it may carry `access_token` or Nylas's
//! `token`.
//!
//! Revocation reaches live traffic ([`crate::store::live`]): an upgrade
//! request or an HTTP/2 stream that passes the verdict with a credential is
//! registered as a live session before it is forwarded. Its request body,
//! the wait for the upstream's head, its response body and, after a 101,
//! the splice of the two upgraded connections all race the session's
//! cancellation: once a revocation covers the credential, the splice drops
//! both connections, and a body ends with an error, so hyper resets the h2
//! stream (the connection's other streams go on) or closes an HTTP/1.1
//! connection. A revocation that lands before the upstream's head is
//! answered 401 as the verdict would. Plain HTTP/1.1 requests are not
//! registered: each is judged anew, and the keep-alive connection's next
//! request is too.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio_util::sync::CancellationToken;

use crate::config::{Route, Settings};
use crate::credentials::{self, FingerprintKey};
use crate::dialect::{self, Dialect, DialectResponse, RevokeCall, RevokeIntent, RevokeMode};
use crate::store::live::{self, Admitted, LiveSession, SessionKind};
use crate::store::{
    now_unix, LocalCache, RevocationCommand, RevocationStore, ScopeKey, ScopeRule, TokenRule,
};
use crate::verdict::{self, Checker, Verdict};

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

/// Errors boxed into response bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type of every request forwarded and every response answered.
pub type Body = http_body_util::combinators::BoxBody<Bytes, BoxError>;

/// A body from bytes.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A client's request body as forwarded: its trailer section is dropped
/// (as nginx does), since a trailer field could carry a credential that
/// was never judged, and it fails when it makes no progress for
/// `server.body_idle_timeout` ([`crate::idle`]).
fn incoming_request(rt: &Runtime, body: Incoming) -> Body {
    let body = body.map_frame(|frame| {
        if frame.is_trailers() {
            http_body::Frame::data(Bytes::new())
        } else {
            frame
        }
    });
    crate::idle::IdleBody::new(body, rt.settings.raw.server.body_idle_timeout).boxed()
}

type UpstreamClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Body>;

// === ProxyError: the one mapping from cause to response ===

/// Why a request was answered by the gateway instead of the upstream.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No route matches the host and path: 404 `no_route`.
    #[error("no route")]
    NoRoute,
    /// The upstream refused or reset the connection, or answered garbage: 502.
    #[error("upstream unavailable: {0}")]
    UpstreamUnavailable(String),
    /// Connecting, or waiting for the response head, took too long: 504.
    #[error("upstream timed out")]
    UpstreamTimeout,
    /// The client's body failed while being read: 400.
    #[error("client body: {0}")]
    ClientBody(String),
    /// The client stopped sending its body (`server.body_idle_timeout`): 408.
    #[error("client body timed out")]
    ClientTimeout,
    /// An HTTP/1.1 request without a `Host`, or with more than one
    /// (RFC 9112 §3.2): 400.
    #[error("missing or duplicate Host")]
    BadHost,
    /// A form-encoded body larger than `tokens.form_body_limit`: it could
    /// carry an `access_token` that cannot be judged: 413.
    #[error("form body too large to judge")]
    FormTooLarge,
    /// A request transfer coding other than `chunked` alone (RFC 9112 §6.1:
    /// 501); relaying it would hand the upstream coded bytes as plain ones.
    #[error("unsupported transfer coding")]
    TransferCoding,
    /// The credential was revoked while the request waited for the
    /// upstream's head: 401 `invalid_token`, as the verdict answers.
    #[error("credential revoked in flight")]
    RevokedInFlight,
}

impl ProxyError {
    /// The status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::UpstreamUnavailable(_) => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::ClientBody(_) => StatusCode::BAD_REQUEST,
            ProxyError::TransferCoding => StatusCode::NOT_IMPLEMENTED,
            ProxyError::FormTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::BadHost => StatusCode::BAD_REQUEST,
            ProxyError::ClientTimeout => StatusCode::REQUEST_TIMEOUT,
            ProxyError::RevokedInFlight => StatusCode::UNAUTHORIZED,
        }
    }

    /// The response: a generic JSON message (the cause goes to the log only).
    pub fn into_response(self) -> Response<Body> {
        self.response().map(full)
    }

    /// The response, with its body as bytes.
    pub fn response(&self) -> Response<Bytes> {
        let (error, description) = match &self {
            ProxyError::NoRoute => ("no_route", "No route for this host and path"),
            ProxyError::UpstreamUnavailable(_) => {
                ("bad_gateway", "The upstream service is unavailable")
            }
            ProxyError::UpstreamTimeout => (
                "gateway_timeout",
                "The upstream service did not answer in time",
            ),
            ProxyError::ClientBody(_) => ("invalid_request", "The request body could not be read"),
            ProxyError::ClientTimeout => {
                ("request_timeout", "The request body did not arrive in time")
            }
            ProxyError::BadHost => (
                "invalid_request",
                "An HTTP/1.1 request needs exactly one Host header",
            ),
            ProxyError::FormTooLarge => (
                "invalid_request",
                "The form body is too large to be checked for an access token",
            ),
            ProxyError::TransferCoding => (
                "not_implemented",
                "The request's transfer coding is not supported",
            ),
            ProxyError::RevokedInFlight => return verdict::revoked(),
        };
        let body = serde_json::json!({"error": error, "error_description": description});
        verdict::json_response(self.status(), Bytes::from(body.to_string()))
    }
}

// === Runtime: what SIGHUP can replace ===

struct DialectEntry {
    path: String,
    mode: RevokeMode,
    dialect: Box<dyn Dialect>,
}

/// The reloadable part of the gateway: routes, dialects, credential settings,
/// the upstream client.
pub struct Runtime {
    settings: Settings,
    checker: Checker,
    dialects: Vec<DialectEntry>,
    client: UpstreamClient,
    /// Per-route metric handles, parallel to `settings.routes`, resolved once
    /// so the hot path allocates no labels.
    route_metrics: Vec<crate::metrics::RouteMetrics>,
    no_route_metrics: crate::metrics::RouteMetrics,
    /// The HTTP/1.1 fast path's upstream pools, parallel to `settings.routes`
    /// (`None` for `https://` upstreams, which go through `client`).
    pools: Vec<Option<Arc<crate::h1::pool::Pool>>>,
    /// Whether any route matches on host (else the host is not read).
    host_routes: bool,
    /// Verifies the JWT of a terminate-mode scope revoker (`[tokens.verify]`).
    verifier: Option<crate::identity::Verifier>,
    /// Repeated warnings, one line a second each (both paths).
    pub(crate) warnings: Warnings,
    /// `[revoke.rate_limit]`, `None` when off.
    revoke_limiter: Option<crate::ratelimit::RateLimiter>,
    /// `[admin.rate_limit]`, `None` when off.
    admin_limiter: Option<crate::ratelimit::RateLimiter>,
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
        let up = &settings.raw.upstream;
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(up.connect_timeout));
        http.set_nodelay(true);
        http.enforce_http(false);
        http.set_keepalive(Some(Duration::from_secs(60)));
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
        warn_unidentifiable_revokers(&settings);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(up.pool_idle_timeout)
            .pool_max_idle_per_host(up.pool_max_idle_per_host)
            .build(connector);
        let dialects = settings
            .dialects
            .iter()
            .map(|d| DialectEntry {
                path: d.path.clone(),
                mode: d.mode,
                dialect: dialect::build(d.kind, &settings.dialect_secrets),
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
                (r.upstream.scheme == http::uri::Scheme::HTTP).then(|| {
                    Arc::new(crate::h1::pool::Pool::new(
                        &r.upstream.authority,
                        settings.raw.server.io_thread_count(),
                        up.pool_max_idle_per_host,
                        up.pool_idle_timeout,
                        up.connect_timeout,
                    ))
                })
            })
            .collect();
        Ok(Runtime {
            verifier,
            revoke_limiter: crate::ratelimit::RateLimiter::from_config(
                &settings.raw.revoke.rate_limit,
            ),
            admin_limiter: crate::ratelimit::RateLimiter::from_config(
                &settings.raw.admin.rate_limit,
            ),
            pools,
            host_routes: settings.routes.iter().any(|r| r.host.is_some()),
            warnings: Warnings::default(),
            route_metrics,
            no_route_metrics: crate::metrics::RouteMetrics::new("-"),
            checker: Checker {
                key,
                sources: settings.credential_sources.clone(),
                attributes: settings.attribute_sources.clone(),
                jti: settings.raw.tokens.revoke_by_jti,
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

    /// Turns a dialect's intent into a store command; `None` when a scope
    /// revocation's current user cannot be identified.
    ///
    /// Who "the current user" of a scope revoke is depends on `mode` (see
    /// `identity`): in **terminate** mode only a JWT the verifier accepted or
    /// the trusted identity headers name it, so a forged unsigned token
    /// cannot revoke someone else's tokens; in **forward** mode the
    /// upstream's 2xx authenticates the caller (the command is applied only
    /// then), so the peeked claims may name it. Token revokes do not depend
    /// on the mode.
    pub async fn command(
        &self,
        intent: RevokeIntent,
        headers: &HeaderMap,
        query: Option<&str>,
        mode: RevokeMode,
    ) -> Option<RevocationCommand> {
        match intent {
            RevokeIntent::Token(raw) => {
                let fingerprint = self.checker.key.token_fingerprint(&raw);
                let exp = credentials::peek_jwt(&raw, &self.settings.attribute_sources.claims)
                    .and_then(|a| a.exp);
                Some(RevocationCommand::Token(self.token_rule(fingerprint, exp)))
            }
            RevokeIntent::Scope { org, provider } => {
                let sub = match mode {
                    RevokeMode::Forward => self.peeked_revoker(headers, query),
                    RevokeMode::Terminate => self.verified_revoker(headers, query).await,
                }?;
                Some(RevocationCommand::Scope(self.scope_rule(ScopeKey {
                    sub,
                    org,
                    provider: Some(provider),
                })))
            }
        }
    }

    /// A token rule for `fingerprint`, kept until the token's own expiry
    /// (plus `tokens.clock_skew`) or, without one, `tokens.max_lifetime`.
    pub fn token_rule(
        &self,
        fingerprint: crate::credentials::Fingerprint,
        exp: Option<u64>,
    ) -> TokenRule {
        let tokens = &self.settings.raw.tokens;
        let expires_at = exp
            .map(|exp| exp.saturating_add(tokens.clock_skew.as_secs()))
            .unwrap_or_else(|| now_unix().saturating_add(tokens.max_lifetime.as_secs()));
        TokenRule {
            fingerprint,
            expires_at,
        }
    }

    /// The caller's subject from its credential's peeked claims, else the
    /// identity headers: only for forward mode, where the upstream vouches.
    fn peeked_revoker(&self, headers: &HeaderMap, query: Option<&str>) -> Option<String> {
        let mut attrs = match self.checker.credential(headers, query, None) {
            Ok(Some(c)) => {
                credentials::attributes(c.token(), headers, &self.settings.attribute_sources)
            }
            _ => Default::default(),
        };
        credentials::identity_fill(
            &mut attrs,
            headers,
            &self.settings.attribute_sources.identity_headers,
        );
        attrs.sub
    }

    /// The caller's subject from a verified source only: its credential's
    /// JWT if the verifier accepts it, else the trusted identity headers.
    async fn verified_revoker(&self, headers: &HeaderMap, query: Option<&str>) -> Option<String> {
        let sources = &self.settings.attribute_sources;
        if let (Some(verifier), Ok(Some(cred))) = (
            &self.verifier,
            self.checker.credential(headers, query, None),
        ) {
            if let Ok(claims) = verifier.verify(cred.token()).await {
                match claims.text(&sources.claims.sub) {
                    Some(sub) => return Some(sub),
                    None => tracing::warn!(
                        kid = ?claims.kid(),
                        claim = %sources.claims.sub,
                        "caller's JWT verified but names no subject"
                    ),
                }
            }
        }
        let mut attrs = credentials::Attributes::default();
        credentials::identity_fill(&mut attrs, headers, &sources.identity_headers);
        attrs.sub
    }

    /// A scope rule revoking every token of `key` issued up to now, kept
    /// until every such token has expired.
    pub fn scope_rule(&self, key: ScopeKey) -> ScopeRule {
        let tokens = &self.settings.raw.tokens;
        let now = now_unix();
        ScopeRule {
            key,
            revoked_at: now,
            expires_at: now
                .saturating_add(tokens.max_lifetime.as_secs())
                .saturating_add(tokens.clock_skew.as_secs()),
        }
    }

    /// The one check every scope revocation (each dialect in both modes,
    /// and the admin API) passes before it is applied or forwarded:
    /// - a subject over 256 bytes names no user revgate will record (the
    ///   dialect answers as for no current user);
    /// - the per-subject cap (`revoke.max_scopes_per_subject`): a *new* rule
    ///   for a subject that already has the cap is refused; revoking a scope
    ///   the subject already has merges into its rule and passes. Read from
    ///   this instance's cache, so the cap is soft by the calls in flight at
    ///   once (and, with Redis, by what other instances applied but this one
    ///   has not seen yet).
    pub fn scope_admission(&self, cmd: &RevocationCommand, cache: &LocalCache) -> ScopeAdmission {
        let RevocationCommand::Scope(rule) = cmd else {
            return ScopeAdmission::Admitted;
        };
        if rule.key.sub.len() > dialect::MAX_ID_LEN {
            return ScopeAdmission::SubjectTooLong;
        }
        let cap = self.settings.raw.revoke.max_scopes_per_subject;
        if cache.subject_scope_count(&rule.key.sub) >= cap && cache.scope_rule(&rule.key).is_none()
        {
            return ScopeAdmission::CapReached;
        }
        ScopeAdmission::Admitted
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

    /// Records one finished request: metrics, and the access log when on.
    pub(crate) fn account(&self, f: &Finished<'_>) {
        let elapsed = f.start.elapsed();
        let metrics = f
            .route
            .and_then(|i| self.route_metrics.get(i))
            .unwrap_or(&self.no_route_metrics);
        metrics.request(f.outcome);
        metrics.overhead(
            elapsed
                .saturating_sub(f.upstream_time.unwrap_or_default())
                .as_secs_f64(),
        );
        if let Some(t) = f.upstream_time {
            metrics.upstream_time(t.as_secs_f64());
        }
        if let Some((method, path)) = f.logged {
            crate::telemetry::access(&crate::telemetry::AccessLog {
                method,
                path,
                version: f.version,
                status: f.status,
                route: f
                    .route
                    .and_then(|i| self.settings.routes.get(i))
                    .map_or("-", |r| r.name.as_str()),
                outcome: f.outcome,
                duration: elapsed,
                upstream: f.upstream_time,
                fingerprint: f.fingerprint,
                peer: Some(f.peer),
            });
        }
    }

    pub(crate) fn route(&self, host: Option<&str>, path: &str) -> Option<usize> {
        self.settings.routes.iter().position(|r| {
            r.host.as_deref().is_none_or(|h| host == Some(h))
                && prefix_matches(&r.path_prefix, path)
        })
    }

    pub(crate) fn is_revoke_path(&self, path: &str) -> bool {
        self.dialect(path).is_some()
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

    fn dialect(&self, path: &str) -> Option<&DialectEntry> {
        self.dialects.iter().find(|d| d.path == path)
    }
}

/// Says loudly when a terminate-mode scope dialect can never identify its
/// caller (no `[tokens.verify]`, no identity header for the subject): every
/// such call will be a 401.
fn warn_unidentifiable_revokers(settings: &Settings) {
    if settings.verify.is_some() || settings.attribute_sources.identity_headers.sub.is_some() {
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
fn rate(
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
fn prefix_matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// Who is on the other end of a client connection.
#[derive(Clone, Copy, Debug)]
pub struct ClientConn {
    /// Peer address.
    pub addr: SocketAddr,
    /// Whether the connection is TLS.
    pub tls: bool,
}

// === Gateway ===

/// The gateway: the reloadable runtime, the store, the fingerprint key.
pub struct Gateway {
    runtime: ArcSwap<Runtime>,
    store: Arc<dyn RevocationStore>,
    shutdown: CancellationToken,
}

pub use crate::metrics::Outcome;

/// One finished request, as [`Runtime::account`] records it.
pub(crate) struct Finished<'a> {
    /// When the request's head had been read.
    pub start: Instant,
    /// Method and path, when the access log is on.
    pub logged: Option<(&'a str, &'a str)>,
    /// The client's HTTP version.
    pub version: http::Version,
    /// Status sent to the client.
    pub status: u16,
    /// Index of the matched route.
    pub route: Option<usize>,
    /// How it ended.
    pub outcome: Outcome,
    /// Time to the upstream's response head, when forwarded.
    pub upstream_time: Option<Duration>,
    /// The credential's fingerprint.
    pub fingerprint: Option<&'a crate::credentials::Fingerprint>,
    /// Client address.
    pub peer: SocketAddr,
}

struct Handled {
    response: Response<Body>,
    outcome: Outcome,
    /// Index of the matched route in `settings.routes`.
    route: Option<usize>,
    fingerprint: Option<crate::credentials::Fingerprint>,
    upstream_time: Option<Duration>,
}

impl Gateway {
    /// A gateway over a runtime and a store.
    pub fn new(
        runtime: Runtime,
        store: Arc<dyn RevocationStore>,
        shutdown: CancellationToken,
    ) -> Self {
        Gateway {
            runtime: ArcSwap::from_pointee(runtime),
            store,
            shutdown,
        }
    }

    /// Replaces the runtime (config reload); in-flight requests finish on the
    /// old one. A JWKS already fetched from an unchanged URL is carried over.
    pub fn reload(&self, runtime: Runtime) {
        if let (Some(new), Some(old)) = (&runtime.verifier, &self.runtime.load().verifier) {
            new.adopt_keys(old);
        }
        self.runtime.store(Arc::new(runtime));
    }

    /// The current runtime.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }

    /// The current runtime when it is not `current` (after a reload).
    pub fn runtime_if_changed(&self, current: &Arc<Runtime>) -> Option<Arc<Runtime>> {
        let now = self.runtime.load();
        (!Arc::ptr_eq(current, &now)).then(|| Arc::clone(&now))
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn RevocationStore> {
        &self.store
    }

    /// Handles one request; never fails (errors become responses).
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        conn: ClientConn,
    ) -> Result<Response<Body>, std::convert::Infallible> {
        let start = Instant::now();
        let rt = self.runtime.load_full();
        // Copied only when they will be logged.
        let logged = rt
            .settings
            .raw
            .log
            .access_log
            .then(|| (req.method().clone(), req.uri().path().to_owned()));
        let version = req.version();
        let h = self.handle_inner(&rt, req, conn).await;
        rt.account(&Finished {
            start,
            logged: logged.as_ref().map(|(m, p)| (m.as_str(), p.as_str())),
            version,
            status: h.response.status().as_u16(),
            route: h.route,
            outcome: h.outcome,
            upstream_time: h.upstream_time,
            fingerprint: h.fingerprint.as_ref(),
            peer: conn.addr,
        });
        Ok(h.response)
    }

    async fn handle_inner(
        &self,
        rt: &Runtime,
        req: Request<Incoming>,
        conn: ClientConn,
    ) -> Handled {
        let mut h = Handled {
            response: Response::new(full(Bytes::new())),
            outcome: Outcome::Forwarded,
            route: None,
            fingerprint: None,
            upstream_time: None,
        };
        // 0. a transfer coding hyper removed the chunking of but that is not
        // ours to undo (e.g. `gzip, chunked`): refuse, and close.
        if req
            .headers()
            .get(header::TRANSFER_ENCODING)
            .is_some_and(|te| !crate::h1::framing::is_chunked(te.as_bytes()))
        {
            h.outcome = Outcome::BadRequest;
            h.response = ProxyError::TransferCoding.into_response();
            h.response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return h;
        }

        // RFC 9112 §3.2: an HTTP/1.1 request carries exactly one Host (the
        // fast path hands such requests here, so this is the one place).
        if req.version() == http::Version::HTTP_11
            && req.headers().get_all(header::HOST).iter().count() != 1
        {
            h.outcome = Outcome::BadRequest;
            h.response = ProxyError::BadHost.into_response();
            return h;
        }

        // 1. route
        let host = if rt.host_routes {
            request_host(&req)
        } else {
            None
        };
        let Some(index) = rt.route(host.as_deref(), req.uri().path()) else {
            h.outcome = Outcome::NoRoute;
            h.response = ProxyError::NoRoute.into_response();
            return h;
        };
        h.route = Some(index);
        let route = &rt.settings.routes[index];

        // 2. revoke endpoint? Only with the vendor's method: anything else on
        // that path is an ordinary request and is judged like any other.
        let revoke_path = rt.dialect(req.uri().path());
        let (parts, body) = req.into_parts();
        if let Some(d) = revoke_path.filter(|d| parts.method == d.dialect.method()) {
            h.outcome = Outcome::RevokeCall;
            let started = Instant::now();
            h.response = match self.revoke(rt, d, route, parts, body, conn).await {
                Ok(Revoked::Answered(r)) => r,
                Ok(Revoked::Refused(refusal)) => {
                    h.outcome = refusal.outcome;
                    h.fingerprint = refusal.fingerprint;
                    refusal.response
                }
                Err(e) => {
                    if let Some(suppressed) = rt.warnings.revoke_call.admit() {
                        tracing::warn!(error = %e, dialect = d.dialect.kind().name(), suppressed, "revoke call failed");
                    }
                    e.into_response()
                }
            };
            h.upstream_time = (d.mode == RevokeMode::Forward).then(|| started.elapsed());
            return h;
        }

        // 3. verdict; a form-encoded body may carry the token too (RFC 6750
        // §2.2), so it is read first, within `tokens.form_body_limit`.
        let (form, body) = match read_form(rt, &parts.headers, body).await {
            Ok(read) => read,
            Err(e) => {
                h.outcome = Outcome::BadRequest;
                h.response = e.into_response();
                return h;
            }
        };
        let verdict = rt
            .checker
            .judge(
                &parts.headers,
                parts.uri.query(),
                form.as_deref(),
                &*self.store,
            )
            .await;
        match Refusal::of(verdict) {
            Admit::Pass(fp) => h.fingerprint = fp,
            Admit::Refuse(refusal) => {
                h.outcome = refusal.outcome;
                h.fingerprint = refusal.fingerprint;
                h.response = refusal.response;
                return h;
            }
        }

        // A terminating revoke path answers a wrong method itself, in the
        // vendor's format (OneLogin's 404, the others' 405).
        if let Some(d) = revoke_path.filter(|d| d.mode == RevokeMode::Terminate) {
            h.outcome = Outcome::RevokeCall;
            let call = RevokeCall {
                method: &parts.method,
                query: parts.uri.query(),
                headers: &parts.headers,
                body: &[],
            };
            h.response = match d.dialect.parse(&call) {
                Err(vendor_error) => render(d, vendor_error),
                Ok(_) => ProxyError::NoRoute.into_response(),
            };
            return h;
        }

        // 4. forward; an upgrade or an h2 stream as a live session, closed
        // when a revocation covers its credential.
        let session = match h.fingerprint {
            Some(fp) => match live_kind(parts.version, &parts.headers) {
                Some(kind) => Some(self.admit_live(rt, &parts, form.as_deref(), fp, kind).await),
                None => None,
            },
            None => None,
        };
        if session.as_ref().is_some_and(LiveSession::is_revoked) {
            h.outcome = Outcome::Revoked;
            h.response = verdict::revoked().map(full);
            return h;
        }
        let started = Instant::now();
        let result = forward(rt, route, parts, body, conn, session).await;
        h.upstream_time = Some(started.elapsed());
        h.response = match result {
            Ok(r) => r,
            Err(ProxyError::RevokedInFlight) => {
                h.outcome = Outcome::Revoked;
                ProxyError::RevokedInFlight.into_response()
            }
            Err(e) => {
                h.outcome = Outcome::UpstreamError;
                if let Some(suppressed) = rt.warnings.upstream.admit() {
                    tracing::warn!(error = %e, route = %route.name, suppressed, "upstream error");
                }
                e.into_response()
            }
        };
        h
    }

    /// Registers a request that passed with credential `fp` as a live
    /// session, under every name the verdict judged it by (its token, a
    /// second token that came with it, its `jti` when that revocation is
    /// on) and with its attributes, for scope rules.
    async fn admit_live(
        &self,
        rt: &Runtime,
        parts: &http::request::Parts,
        form: Option<&[u8]>,
        fp: crate::credentials::Fingerprint,
        kind: SessionKind,
    ) -> LiveSession {
        let headers = &parts.headers;
        let checker = &rt.checker;
        let mut admitted = Admitted::new(fp);
        if let Ok(Some(c)) = checker.credential(headers, parts.uri.query(), form) {
            if let Some(extra) = c.extra() {
                admitted.also(checker.key.token_fingerprint(extra));
            }
            let attributes =
                credentials::attributes(c.token(), headers, &rt.settings.attribute_sources);
            if let (true, Some(jti)) = (checker.jti, attributes.jti.as_deref()) {
                if let Some(iss) = attributes.iss.as_deref() {
                    admitted.also(checker.key.jti_fingerprint(Some(iss), jti));
                }
                admitted.also(checker.key.jti_fingerprint(None, jti));
            }
            admitted.attributes = attributes;
        }
        live::admit(&*self.store, admitted, kind).await
    }

    // === revoke endpoints ===

    async fn revoke(
        &self,
        rt: &Runtime,
        d: &DialectEntry,
        route: &Route,
        parts: http::request::Parts,
        body: Incoming,
        conn: ClientConn,
    ) -> Result<Revoked, ProxyError> {
        // Rate-limited before anything is read, forwarded or applied.
        if let Err(limited) = rt.revoke_rate(conn.addr.ip()) {
            let mut resp = render(d, d.dialect.too_many_requests());
            retry_after(&mut resp, limited);
            return Ok(Revoked::Answered(resp));
        }
        let forwarding = d.mode == RevokeMode::Forward;
        // The body is read when the dialect needs it (under its own limit,
        // answered in the vendor's format past it), or, forwarding, when it
        // is a form that may carry the caller's own token.
        let (buffered, stream) = if d.dialect.needs_body() {
            let limit = rt.settings.raw.revoke.max_body_bytes;
            match read_limited(rt, &parts.headers, body, limit).await {
                Ok(bytes) => (Some(bytes), None),
                Err(BodyError::TooLarge) => {
                    return Ok(Revoked::Answered(render(d, d.dialect.payload_too_large())))
                }
                Err(BodyError::Read(e)) => return Err(ProxyError::ClientBody(e)),
                Err(BodyError::Idle) => return Err(ProxyError::ClientTimeout),
            }
        } else if forwarding {
            match read_form(rt, &parts.headers, body).await? {
                (Some(bytes), _) => (Some(bytes), None),
                (None, stream) => (None, Some(stream)),
            }
        } else {
            (None, Some(incoming_request(rt, body)))
        };
        // Forwarding, the call is an ordinary request to the upstream as well:
        // its caller's own credential is judged like any other.
        if forwarding {
            let form = buffered
                .as_deref()
                .filter(|_| credentials::is_form(&parts.headers));
            let verdict = rt
                .checker
                .judge(&parts.headers, parts.uri.query(), form, &*self.store)
                .await;
            if let Admit::Refuse(refusal) = Refusal::of(verdict) {
                return Ok(Revoked::Refused(refusal));
            }
        }
        let call = RevokeCall {
            method: &parts.method,
            query: parts.uri.query(),
            headers: &parts.headers,
            body: buffered.as_deref().unwrap_or_default(),
        };
        let parsed = d.dialect.parse(&call);
        let source = d.dialect.kind().name();
        let answered = match d.mode {
            RevokeMode::Terminate => {
                let intent = match parsed {
                    Ok(i) => i,
                    Err(vendor_error) => return Ok(Revoked::Answered(render(d, vendor_error))),
                };
                let command = rt.command(intent, &parts.headers, parts.uri.query(), d.mode);
                let Some(cmd) = command.await else {
                    return Ok(Revoked::Answered(render(d, d.dialect.unauthenticated())));
                };
                if let Some(refused) = refuse_scope(rt, d, &cmd, self.store.cache()) {
                    return Ok(Revoked::Answered(refused));
                }
                match self.store.apply(cmd).await {
                    Ok(_) => {
                        crate::metrics::revocation_applied(source, "terminate");
                        render(d, d.dialect.success())
                    }
                    Err(e) => {
                        crate::metrics::revocation_apply_failed(source);
                        tracing::error!(error = %e, dialect = source, "revocation not recorded");
                        render(d, d.dialect.unavailable())
                    }
                }
            }
            RevokeMode::Forward => {
                // Decide what would be applied before the request is handed on.
                let cmd = match parsed {
                    Ok(intent) => Some(
                        rt.command(intent, &parts.headers, parts.uri.query(), d.mode)
                            .await,
                    ),
                    Err(_) => None,
                };
                // A scope revocation revgate will not record (over the cap, or
                // an over-long subject) is not forwarded either: the upstream
                // and revgate agree that nothing was revoked.
                if let Some(Some(c)) = &cmd {
                    if let Some(refused) = refuse_scope(rt, d, c, self.store.cache()) {
                        return Ok(Revoked::Answered(refused));
                    }
                }
                let body = match (buffered, stream) {
                    (Some(bytes), _) => full(bytes),
                    (None, Some(s)) => s,
                    (None, None) => full(Bytes::new()),
                };
                let resp = forward(rt, route, parts, body, conn, None).await?;
                if resp.status().is_success() {
                    match cmd {
                        Some(Some(cmd)) => self.apply_or_retry(cmd, source).await,
                        Some(None) => {
                            crate::metrics::unidentified_revoke(source);
                            tracing::warn!(
                                dialect = source,
                                "revoke call forwarded, but its current user could not be identified: nothing applied"
                            );
                        }
                        None => {}
                    }
                }
                resp
            }
        };
        Ok(Revoked::Answered(answered))
    }

    /// Applies a forwarded revocation; on failure keeps retrying in the
    /// background (with backoff) until it is recorded or the gateway stops.
    async fn apply_or_retry(&self, cmd: RevocationCommand, source: &'static str) {
        match self.store.apply(cmd.clone()).await {
            Ok(_) => crate::metrics::revocation_applied(source, "forward"),
            Err(e) => {
                crate::metrics::revocation_apply_failed(source);
                tracing::error!(error = %e, dialect = source, "revocation not recorded; retrying in the background");
                let store = self.store.clone();
                let shutdown = self.shutdown.clone();
                tokio::spawn(async move {
                    let mut delay = Duration::from_millis(100);
                    loop {
                        tokio::select! {
                            _ = shutdown.cancelled() => {
                                tracing::error!(dialect = source, "gateway stopping with a revocation still unrecorded");
                                return;
                            }
                            _ = tokio::time::sleep(delay) => {}
                        }
                        match store.apply(cmd.clone()).await {
                            Ok(_) => {
                                crate::metrics::revocation_applied(source, "forward");
                                tracing::info!(dialect = source, "revocation recorded after retry");
                                return;
                            }
                            Err(e) => {
                                crate::metrics::revocation_apply_failed(source);
                                tracing::warn!(error = %e, dialect = source, "revocation retry failed");
                                delay = (delay * 2).min(Duration::from_secs(30));
                            }
                        }
                    }
                });
            }
        }
    }
}

/// The dialect's answer when [`Runtime::scope_admission`] refuses `cmd`.
fn refuse_scope(
    rt: &Runtime,
    d: &DialectEntry,
    cmd: &RevocationCommand,
    cache: &LocalCache,
) -> Option<Response<Body>> {
    match rt.scope_admission(cmd, cache) {
        ScopeAdmission::Admitted => None,
        ScopeAdmission::SubjectTooLong => Some(render(d, d.dialect.unauthenticated())),
        ScopeAdmission::CapReached => Some(render(d, d.dialect.scope_limit_reached())),
    }
}

fn render(d: &DialectEntry, r: DialectResponse) -> Response<Body> {
    let mut resp = Response::new(full(r.body));
    *resp.status_mut() = r.status;
    if let Some(ct) = r.content_type {
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    }
    if r.status == StatusCode::METHOD_NOT_ALLOWED {
        if let Ok(allow) = HeaderValue::from_str(d.dialect.method().as_str()) {
            resp.headers_mut().insert(header::ALLOW, allow);
        }
    }
    resp
}

/// How a revoke call ended.
enum Revoked {
    /// Answered: by the dialect, or by the upstream it was forwarded to.
    Answered(Response<Body>),
    /// Forwarding, the caller's own credential was refused.
    Refused(Refusal),
}

/// A verdict that refuses the request: its answer and how it is counted.
struct Refusal {
    response: Response<Body>,
    outcome: Outcome,
    fingerprint: Option<crate::credentials::Fingerprint>,
}

/// What a verdict means for the request.
enum Admit {
    /// On, with the credential's fingerprint if it had one.
    Pass(Option<crate::credentials::Fingerprint>),
    /// Refused.
    Refuse(Refusal),
}

impl Refusal {
    /// The verdict as an admission: on, or refused with its answer.
    fn of(v: Verdict) -> Admit {
        let (response, outcome, fingerprint) = match v {
            Verdict::Pass(fp) => return Admit::Pass(Some(fp)),
            Verdict::NoCredential => return Admit::Pass(None),
            Verdict::Revoked(fp) => (verdict::revoked(), Outcome::Revoked, Some(fp)),
            Verdict::BadRequest(e) => (verdict::bad_request(e), Outcome::BadRequest, None),
            Verdict::Unavailable => (verdict::unavailable(), Outcome::Unavailable, None),
        };
        Admit::Refuse(Refusal {
            response: response.map(full),
            outcome,
            fingerprint,
        })
    }
}

/// Reads a form-encoded request body (when `tokens.form_body_limit` is on)
/// so that its `access_token` can be judged; returns it with the body to
/// forward. Past the limit the request is refused: forwarding it would hand
/// the upstream a token nobody judged.
async fn read_form(
    rt: &Runtime,
    headers: &HeaderMap,
    body: Incoming,
) -> Result<(Option<Bytes>, Body), ProxyError> {
    let limit = rt.settings.raw.tokens.form_body_limit;
    if limit == 0 || !credentials::is_form(headers) || http_body::Body::is_end_stream(&body) {
        return Ok((None, incoming_request(rt, body)));
    }
    match read_limited(rt, headers, body, limit).await {
        Ok(bytes) => Ok((Some(bytes.clone()), full(bytes))),
        Err(BodyError::TooLarge) => Err(ProxyError::FormTooLarge),
        Err(BodyError::Read(e)) => Err(ProxyError::ClientBody(e)),
        Err(BodyError::Idle) => Err(ProxyError::ClientTimeout),
    }
}

enum BodyError {
    TooLarge,
    Read(String),
    /// No progress for `server.body_idle_timeout`.
    Idle,
}

async fn read_limited(
    rt: &Runtime,
    headers: &HeaderMap,
    body: Incoming,
    limit: usize,
) -> Result<Bytes, BodyError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge);
    }
    let body = crate::idle::IdleBody::new(body, rt.settings.raw.server.body_idle_timeout);
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(BodyError::TooLarge),
        Err(e) if crate::idle::is_idle(&*e) => Err(BodyError::Idle),
        Err(e) => Err(BodyError::Read(e.to_string())),
    }
}

// === forwarding ===

fn request_host<B>(req: &Request<B>) -> Option<String> {
    match req.uri().authority() {
        Some(a) => Some(a.host().to_ascii_lowercase()),
        None => host_of(req.headers().get(header::HOST)?.as_bytes()),
    }
}

/// The host of a `Host` header value, lower-cased and without its port
/// (IPv6 brackets kept); `None` when it is not visible ASCII.
pub(crate) fn host_of(value: &[u8]) -> Option<String> {
    let h = std::str::from_utf8(value).ok()?;
    if !h.bytes().all(|b| (0x21..0x7f).contains(&b)) {
        return None;
    }
    let host = match h.rsplit_once(':') {
        Some((host, port))
            if !host.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && !h.ends_with(']') =>
        {
            host
        }
        _ => h,
    };
    Some(host.to_ascii_lowercase())
}

/// Hop-by-hop fields (RFC 9110 §7.6.1) besides `Upgrade`, which is kept on
/// upgrade requests; removed both ways on both paths.
pub(crate) static HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Whether a request that passed with a credential is registered as a live
/// session, and as what: upgrades and HTTP/2 streams, never plain HTTP/1.x.
fn live_kind(version: http::Version, headers: &HeaderMap) -> Option<SessionKind> {
    if version == http::Version::HTTP_2 {
        Some(SessionKind::Stream)
    } else if is_upgrade(headers) {
        Some(SessionKind::Upgrade)
    } else {
        None
    }
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Removes hop-by-hop headers and those named in `Connection`; keeps
/// `Upgrade` + `Connection: upgrade` when `upgrade` is set.
fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    if !headers.contains_key(header::CONNECTION) {
        for name in &HOP_BY_HOP {
            headers.remove(name);
        }
        if !upgrade {
            headers.remove(header::UPGRADE);
        }
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named {
        if !(upgrade && name == header::UPGRADE) {
            headers.remove(&name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::UPGRADE);
    }
}

fn append_header(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    let v = match headers.get(&name).and_then(|v| v.to_str().ok()) {
        Some(prev) if !prev.is_empty() => HeaderValue::from_str(&format!("{prev}, {value}")),
        _ => HeaderValue::from_str(value),
    };
    if let Ok(v) = v {
        headers.insert(name, v);
    }
}

/// An IP address as text, formatted into a stack buffer (no allocation).
pub(crate) fn ip_text(ip: std::net::IpAddr, buf: &mut [u8; 64]) -> &str {
    use std::io::Write as _;
    let mut cur = std::io::Cursor::new(&mut buf[..]);
    let _ = write!(cur, "{ip}");
    let n = cur.position() as usize;
    std::str::from_utf8(&buf[..n]).unwrap_or("")
}

fn append_static(headers: &mut HeaderMap, name: HeaderName, value: &'static str) {
    if headers.contains_key(&name) {
        append_header(headers, name, value);
    } else {
        headers.insert(name, HeaderValue::from_static(value));
    }
}

fn via_value(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_2 => "2 revgate",
        http::Version::HTTP_10 => "1.0 revgate",
        _ => "1.1 revgate",
    }
}

fn upstream_uri(route: &Route, uri: &Uri) -> Result<Uri, ProxyError> {
    let pq = if route.upstream.base_path.is_empty() {
        uri.path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"))
    } else {
        let pq = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        http::uri::PathAndQuery::try_from(format!("{}{}", route.upstream.base_path, pq))
            .map_err(|e| ProxyError::UpstreamUnavailable(format!("bad upstream URI: {e}")))?
    };
    Uri::builder()
        .scheme(route.upstream.scheme.clone())
        .authority(route.upstream.authority.clone())
        .path_and_query(pq)
        .build()
        .map_err(|e| ProxyError::UpstreamUnavailable(format!("bad upstream URI: {e}")))
}

fn is_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return true;
            }
        }
        if err.to_string().contains("timed out") || err.to_string().contains("deadline has elapsed")
        {
            return true;
        }
        cur = err.source();
    }
    false
}

/// Sends a request to the route's upstream and returns its response, with
/// hygiene applied both ways; splices upgraded connections on a 101. With a
/// live `session`, both bodies, the wait for the head and the splice end
/// when it is revoked (see the module docs).
async fn forward(
    rt: &Runtime,
    route: &Route,
    mut parts: http::request::Parts,
    body: Body,
    conn: ClientConn,
    session: Option<LiveSession>,
) -> Result<Response<Body>, ProxyError> {
    let revoked = session.as_ref().map(|s| s.token().clone());
    let body = match &revoked {
        Some(token) => EndOnRevoke::new(body, token.clone(), None).boxed(),
        None => body,
    };
    let upgrade = is_upgrade(&parts.headers);
    let client_upgrade = if upgrade {
        parts.extensions.remove::<hyper::upgrade::OnUpgrade>()
    } else {
        None
    };
    let original_host = match parts.uri.authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).ok(),
        None => parts.headers.get(header::HOST).cloned(),
    };
    let uri = upstream_uri(route, &parts.uri)?;
    let version = parts.version;
    let headers = &mut parts.headers;
    strip_hop_by_hop(headers, upgrade);
    headers.remove(header::HOST);
    let mut ip_buf = [0u8; 64];
    append_header(
        headers,
        HeaderName::from_static("x-forwarded-for"),
        ip_text(conn.addr.ip(), &mut ip_buf),
    );
    headers.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static(if conn.tls { "https" } else { "http" }),
    );
    if let Some(h) = original_host {
        headers.insert(HeaderName::from_static("x-forwarded-host"), h);
    }
    append_static(headers, header::VIA, via_value(version));

    let mut up_req = Request::new(body);
    *up_req.method_mut() = parts.method;
    *up_req.uri_mut() = uri;
    *up_req.headers_mut() = parts.headers;
    *up_req.version_mut() = http::Version::HTTP_11;

    // The response-header timeout runs from the moment the request body has
    // been sent in full, so a long upload is not cut short by it.
    let timeout = rt.settings.raw.upstream.response_header_timeout;
    let (sent_tx, sent_rx) = tokio::sync::oneshot::channel();
    let up_req = up_req.map(|b| SignalOnEnd::new(b, sent_tx).boxed());
    let request = rt.client.request(up_req);
    let deadline = async move {
        let _ = sent_rx.await;
        tokio::time::sleep(timeout).await;
    };
    let revoked_wait = async {
        match &revoked {
            Some(token) => token.cancelled().await,
            None => std::future::pending().await,
        }
    };
    let result = tokio::select! {
        r = request => Ok(r),
        _ = deadline => Err(ProxyError::UpstreamTimeout),
        _ = revoked_wait => Err(ProxyError::RevokedInFlight),
    };
    let mut resp = match result {
        Err(e) => return Err(e),
        // The client's body stopped (hyper's client reports our body's error).
        Ok(Err(e)) if crate::idle::is_idle(&e) => return Err(ProxyError::ClientTimeout),
        Ok(Err(e)) if is_timeout(&e) => return Err(ProxyError::UpstreamTimeout),
        Ok(Err(e)) => {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(": ");
                msg.push_str(&s.to_string());
                src = s.source();
            }
            return Err(ProxyError::UpstreamUnavailable(msg));
        }
        Ok(Ok(r)) => r,
    };

    let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    let mut session = session;
    if switching {
        if let (Some(client_side), Ok(upstream_side)) =
            (client_upgrade, hyper::upgrade::on(&mut resp).await)
        {
            // The session (and its registry entry) lives as long as the splice.
            let session = session.take();
            tokio::spawn(splice(
                client_side,
                upstream_side,
                session,
                rt.settings.raw.server.upgrade_idle_timeout,
            ));
        }
    }
    let (mut rparts, rbody) = resp.into_parts();
    strip_hop_by_hop(&mut rparts.headers, switching);
    append_static(&mut rparts.headers, header::VIA, "1.1 revgate");
    // An upstream that stops mid-body is given up like a client that does.
    let rbody = crate::idle::IdleBody::new(rbody, rt.settings.raw.server.body_idle_timeout).boxed();
    let rbody = match session {
        Some(s) => EndOnRevoke::new(rbody, s.token().clone(), Some(s)).boxed(),
        None => rbody,
    };
    Ok(Response::from_parts(rparts, rbody))
}

/// Relays an upgraded connection both ways until either side closes,
/// nothing moves for `server.upgrade_idle_timeout`, or the session's
/// credential is revoked: then both connections are dropped (closed) at
/// once, whatever either side still has in flight.
async fn splice(
    client_side: hyper::upgrade::OnUpgrade,
    upstream_side: hyper::upgrade::Upgraded,
    session: Option<LiveSession>,
    idle_timeout: Duration,
) {
    let client_io = match client_side.await {
        Ok(io) => io,
        Err(e) => {
            tracing::debug!(error = %e, "client upgrade failed");
            return;
        }
    };
    let activity = crate::idle::Activity::new();
    let mut client_io = crate::idle::Watched::new(TokioIo::new(client_io), activity.clone());
    let mut upstream_io = crate::idle::Watched::new(TokioIo::new(upstream_side), activity.clone());
    let relay = tokio::io::copy_bidirectional(&mut client_io, &mut upstream_io);
    let revoked = async {
        match &session {
            Some(s) => s.token().cancelled().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = relay => {}
        _ = revoked => {}
        _ = activity.quiet_for(idle_timeout) => {
            tracing::debug!(timeout = ?idle_timeout, "upgraded connection idle: closed");
        }
    }
}

/// A body that ends with an error once its session is revoked: hyper then
/// resets the h2 stream, or closes the HTTP/1.1 connection, instead of
/// carrying on. It may own the session, whose registry entry then lives as
/// long as the body.
///
/// A frame costs one atomic load while the body has data ready; the
/// cancellation's waker is registered only when the body would wait.
struct EndOnRevoke {
    inner: Body,
    token: CancellationToken,
    revoked: std::pin::Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
    ended: bool,
    _session: Option<LiveSession>,
}

impl EndOnRevoke {
    fn new(inner: Body, token: CancellationToken, session: Option<LiveSession>) -> Self {
        EndOnRevoke {
            inner,
            revoked: Box::pin(token.clone().cancelled_owned()),
            token,
            ended: false,
            _session: session,
        }
    }

    fn end(&mut self) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        self.ended = true;
        // Drop what the upstream (or client) still had for this stream.
        self.inner = full(Bytes::new());
        std::task::Poll::Ready(Some(Err(Box::new(RevokedStream))))
    }
}

/// The error a revoked session's body ends with (never shown to a client).
#[derive(Debug, thiserror::Error)]
#[error("the credential of this stream was revoked")]
struct RevokedStream;

impl http_body::Body for EndOnRevoke {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        if self.ended {
            return std::task::Poll::Ready(None);
        }
        if self.token.is_cancelled() {
            return self.end();
        }
        match std::pin::Pin::new(&mut self.inner).poll_frame(cx) {
            std::task::Poll::Pending => {
                if std::future::Future::poll(self.revoked.as_mut(), cx).is_ready() {
                    return self.end();
                }
                std::task::Poll::Pending
            }
            ready => ready,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A body that reports when it has been read to its end (or dropped).
struct SignalOnEnd {
    inner: Body,
    done: Option<tokio::sync::oneshot::Sender<()>>,
}

impl SignalOnEnd {
    fn new(inner: Body, done: tokio::sync::oneshot::Sender<()>) -> Self {
        let mut me = SignalOnEnd {
            inner,
            done: Some(done),
        };
        if http_body::Body::is_end_stream(&me.inner) {
            me.fire();
        }
        me
    }

    fn fire(&mut self) {
        if let Some(tx) = self.done.take() {
            let _ = tx.send(());
        }
    }
}

impl http_body::Body for SignalOnEnd {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            std::task::Poll::Ready(None) | std::task::Poll::Ready(Some(Err(_))) => self.fire(),
            _ if self.inner.is_end_stream() => self.fire(),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
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

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-secret-hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("upgrade", HeaderValue::from_static("h2c"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, false);
        let names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-keep"]);

        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("Upgrade"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        assert!(is_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
    }

    #[test]
    fn hosts_lose_their_port() {
        let r = Request::builder()
            .header("host", "API.example.com:8080")
            .body(())
            .unwrap();
        assert_eq!(request_host(&r).as_deref(), Some("api.example.com"));
        let r = Request::builder().header("host", "[::1]").body(()).unwrap();
        assert_eq!(request_host(&r).as_deref(), Some("[::1]"));
    }
}
