//! Revocations pushed (or polled) from identity providers: OIDC
//! Back-Channel Logout 1.0 ([`backchannel`]) and a Shared Signals receiver
//! ([`ssf`]: RFC 8935 push, and [`poll`]: RFC 8936), turned into the scope
//! rules revgate already enforces.
//!
//! ```text
//! POST <feed path> (client listener; both connection paths: the fast path
//!   hands a feed path to hyper)   admission::route -> Routed::Feed
//!   -> POST? (405) -> per-client-IP rate limit (429, [revoke.rate_limit]
//!      values, a bucket table of its own) -> body <= revoke.max_body_bytes (413)
//!   -> set::verify       signature (the feed's own JWKS), iss, aud, iat/exp
//!                        within leeway, jti, events          (400)
//!   -> feed rules        logout event + no nonce | SSF events + subjects
//!   -> replay?           replay.rs: (iss, jti) already applied
//!   -> apply             every effect through RevocationStore::apply: the same
//!                        store, propagation and consistency mode as a vendor
//!                        revoke; then the jti is remembered       (503 on error)
//!   -> 200 no-store (logout) | 202 (SET)
//! ```
//!
//! # What a revocation is here
//!
//! A subject's scope rule ([`crate::store::ScopeRule`], no org or provider
//! unless `tenant_org` maps one): every credential of that `sub` issued at
//! or before the event time is refused, JWTs by their claims and opaque
//! credentials through their bindings (`store::principal`). The event time
//! is a logout token's `iat`, a SET event's `event_timestamp` (else the
//! SET's `iat`), never later than now. The rule is kept as long as the
//! dialects' and the admin API's (`tokens.max_lifetime` + `clock_skew` from
//! now: [`crate::proxy::Runtime::scope_rule`]). An event older than that
//! covers no live credential: acknowledged and counted `stale`, nothing
//! written. Feed rules are always a subject's unscoped rule, so they merge
//! (one per subject) and are not held to `revoke.max_scopes_per_subject`.
//!
//! A `sid` (a logout token's, or a complex subject's `session`) names a
//! session's token family (`crate::store::family`): [`session_revocation`]
//! revokes it whole, under the token's issuer and under none (a family
//! named by a token endpoint's `session_state` without an issuer), and
//! closes it: a token that joins it later is revoked as it joins.
//!
//! # When the store fails
//!
//! `apply` failing (or, with `store.consistency = "confirmed"`, recording
//! without confirmation: `StoreError::Unconfirmed`) answers 503 with
//! `Retry-After: 1` and does not remember the `jti`: the provider's retry
//! applies again (revocations merge) instead of being taken for a replay.
//! A logout token therefore gets 503 rather than the spec's 400, which an
//! OP would read as "bad token" and not retry.
//!
//! Each applied revocation is logged (feed, event type, issuer, the subject's
//! fingerprint, `jti`) and counted (`revgate_revocations_applied_total`
//! with `source` = `backchannel_logout` | `ssf`, `mode` = `push` | `poll`;
//! `revgate_feed_events_total`, `revgate_feed_rejections_total`).

pub mod backchannel;
pub mod poll;
pub(crate) mod replay;
pub(crate) mod set;
pub mod ssf;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;

use crate::config::SsfSubjectsConfig;
use crate::identity::{Verifier, VerifySettings};
use crate::proxy::{Body, ClientConn, Gateway, Runtime};
use crate::store::{RevocationCommand, ScopeKey, StoreError};
use set::{Rejection, Verified};

// === settings ===

/// Checked `[feeds]`.
#[derive(Clone, Debug, Default)]
pub struct FeedSettings {
    /// `[feeds.backchannel_logout]`, when enabled.
    pub backchannel: Option<SourceSettings>,
    /// `[feeds.ssf]`, when enabled.
    pub ssf: Option<SsfSettings>,
    /// `feeds.replay_capacity`.
    pub replay_capacity: usize,
}

/// One feed's path and how its tokens are verified.
#[derive(Clone, Debug)]
pub struct SourceSettings {
    /// The endpoint's path.
    pub path: String,
    /// Issuer, audience, keys, leeway (`exp` required of logout tokens only).
    pub verify: VerifySettings,
}

/// Checked `[feeds.ssf]`.
#[derive(Clone, Debug)]
pub struct SsfSettings {
    /// Path and verification.
    pub source: SourceSettings,
    /// The `Authorization` a pushing transmitter must send, when set.
    pub authorization: Option<HeaderValue>,
    /// Subject identifier formats -> attributes.
    pub subjects: SsfSubjectsConfig,
    /// `[feeds.ssf.poll]`, when set.
    pub poll: Option<PollSettings>,
}

/// Checked `[feeds.ssf.poll]`.
#[derive(Clone, Debug)]
pub struct PollSettings {
    /// The transmitter's poll endpoint.
    pub url: http::Uri,
    /// The wait between polls when nothing more is available.
    pub interval: Duration,
    /// The `Authorization` sent, when set.
    pub authorization: Option<HeaderValue>,
    /// `maxEvents` per poll.
    pub max_events: u32,
    /// The poller's lease in Redis.
    pub lease: Duration,
    /// The bound on one poll request.
    pub timeout: Duration,
}

// === what a runtime holds ===

/// Which feed a path is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeedKind {
    /// OIDC Back-Channel Logout.
    BackchannelLogout,
    /// The SSF push endpoint.
    Ssf,
}

impl FeedKind {
    /// The metric and log label.
    pub fn name(self) -> &'static str {
        match self {
            FeedKind::BackchannelLogout => "backchannel_logout",
            FeedKind::Ssf => "ssf",
        }
    }
}

/// How a feed's token arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// POSTed to revgate.
    Push,
    /// Fetched by revgate's poller.
    Poll,
}

impl Delivery {
    /// The `mode` label.
    pub fn name(self) -> &'static str {
        match self {
            Delivery::Push => "push",
            Delivery::Poll => "poll",
        }
    }
}

pub(crate) type PollClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// One feed's verifier and checked settings.
pub(crate) struct Feed {
    pub settings: SourceSettings,
    pub verifier: Verifier,
}

/// The SSF feed: verification, subject mapping, poll client.
pub(crate) struct SsfFeed {
    pub feed: Feed,
    pub settings: SsfSettings,
    pub client: PollClient,
}

/// The feeds of a runtime (what a SIGHUP replaces): a verifier per feed,
/// built from the feed's own issuer, audience and keys.
#[derive(Default)]
pub struct Feeds {
    pub(crate) backchannel: Option<Feed>,
    pub(crate) ssf: Option<SsfFeed>,
    limiter: Option<crate::ratelimit::RateLimiter>,
}

impl Feeds {
    /// The feeds of checked settings; `tls` fetches JWKS and polls.
    pub fn new(
        settings: &FeedSettings,
        tls: rustls::ClientConfig,
        rate: &crate::config::RateLimitConfig,
    ) -> Feeds {
        let feed = |s: &SourceSettings| Feed {
            settings: s.clone(),
            verifier: Verifier::new(&s.verify, tls.clone()),
        };
        let enabled = settings.backchannel.is_some() || settings.ssf.is_some();
        Feeds {
            backchannel: settings.backchannel.as_ref().map(feed),
            ssf: settings.ssf.as_ref().map(|s| SsfFeed {
                feed: feed(&s.source),
                settings: s.clone(),
                client: crate::tls::OutboundClient {
                    connect_timeout: s
                        .poll
                        .as_ref()
                        .map_or(Duration::from_secs(5), |p| p.timeout),
                    tcp_keepalive: Some(Duration::from_secs(60)),
                    pool_idle_timeout: Duration::from_secs(60),
                    pool_max_idle_per_host: 1,
                }
                .build(tls.clone()),
            }),
            limiter: enabled
                .then(|| crate::ratelimit::RateLimiter::from_config(rate))
                .flatten(),
        }
    }

    /// The feed served at `path`, if any.
    pub(crate) fn at(&self, path: &str) -> Option<FeedKind> {
        if self
            .backchannel
            .as_ref()
            .is_some_and(|f| f.settings.path == path)
        {
            return Some(FeedKind::BackchannelLogout);
        }
        if self
            .ssf
            .as_ref()
            .is_some_and(|f| f.feed.settings.path == path)
        {
            return Some(FeedKind::Ssf);
        }
        None
    }

    /// After a reload: keeps the previous verifiers' keys for unchanged URLs.
    pub(crate) fn adopt_keys(&self, previous: &Feeds) {
        if let (Some(n), Some(o)) = (&self.backchannel, &previous.backchannel) {
            n.verifier.adopt_keys(&o.verifier);
        }
        if let (Some(n), Some(o)) = (&self.ssf, &previous.ssf) {
            n.feed.verifier.adopt_keys(&o.feed.verifier);
        }
    }

    /// Whether `[feeds.ssf.poll]` is set.
    pub fn polls(&self) -> bool {
        self.ssf.as_ref().is_some_and(|s| s.settings.poll.is_some())
    }
}

// === what a gateway holds (kept across reloads) ===

/// The feeds' state that outlives a reload: the `jti` replay memory (and
/// through it the feeds' Redis connection).
pub struct FeedState {
    pub(crate) replay: replay::Replay,
    /// This process's name in the poll lease.
    pub(crate) instance: String,
}

impl FeedState {
    /// For the store at `store_url` (`memory` or a Redis URL) under `prefix`.
    pub fn new(capacity: usize, store_url: &str, prefix: &str) -> FeedState {
        // Unique, not secret: std's randomly keyed hasher, the pid and the clock.
        use std::hash::{BuildHasher as _, Hasher as _};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        FeedState {
            replay: replay::Replay::new(capacity, store_url, prefix),
            instance: format!("{}-{:016x}", std::process::id(), h.finish()),
        }
    }
}

// === one effect of a verified token ===

/// What one verified event asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Effect {
    /// Revoke every credential of `key` issued at or before `at`.
    Revoke {
        /// The event type's short name (for logs).
        event: &'static str,
        /// Who.
        key: ScopeKey,
        /// Unix seconds.
        at: u64,
    },
    /// A session (`sid`) ended.
    Session {
        /// The event type's short name.
        event: &'static str,
        /// The session id.
        sid: String,
        /// Unix seconds.
        at: u64,
    },
    /// An event type revgate does not act on.
    Ignored,
    /// A known event whose subject maps to no attribute.
    Unmapped,
    /// The SSF stream verification event.
    Verification,
}

/// The revocations of a session's token family (`sid`): a grant rule on
/// the family `iss` + `sid` names, and on the one `sid` names alone (see
/// `proxy::issuance`), kept as long as a scope rule made at `at`.
pub(crate) fn session_revocation(
    rt: &Runtime,
    iss: &str,
    sid: &str,
    at: u64,
) -> Vec<RevocationCommand> {
    let (_, expires_at) = rt.rule_times();
    [Some(iss), None]
        .into_iter()
        .map(|iss| {
            RevocationCommand::Family(crate::store::FamilyRule {
                family: rt.key().family_fingerprint(iss, sid),
                generation: None,
                revoked_at: at,
                expires_at,
                members: Vec::new(),
            })
        })
        .collect()
}

/// How a verified token's effects went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Applied {
    /// Applied (or nothing to apply) and remembered.
    Done,
    /// Applied before (here or on another instance): nothing done again
    /// (and nothing counted but `duplicate`).
    Duplicate,
}

/// Applies a verified token's effects (see the module doc) unless its
/// `(iss, jti)` was applied already; remembers it once all are durable.
pub(crate) async fn apply(
    gw: &Gateway,
    rt: &Runtime,
    feed: FeedKind,
    delivery: Delivery,
    token: &Verified,
    effects: Vec<Effect>,
    leeway: Duration,
) -> Result<Applied, Rejection> {
    let state = gw.feed_state();
    let key = replay::replay_key(&token.iss, &token.jti);
    if state.replay.seen(&key).await {
        crate::metrics::feed_event(feed.name(), "duplicate");
        return Ok(Applied::Duplicate);
    }
    let now = crate::store::now_unix();
    let lifetimes = rt.settings().lifetimes();
    let horizon = lifetimes.max_lifetime.as_secs() + lifetimes.clock_skew.as_secs();
    let jti: String = token.jti.chars().take(64).collect();
    let source = feed.name();
    let mode = delivery.name();
    // A session revoked with its subject is one event applied, counted by
    // the subject's rule.
    let with_subject = effects.iter().any(|e| matches!(e, Effect::Revoke { .. }));
    for effect in effects {
        match effect {
            Effect::Revoke { event, key, at } => {
                let at = at.min(now);
                if at.saturating_add(horizon) < now {
                    crate::metrics::feed_event(source, "stale");
                    tracing::info!(feed = source, event, iss = %token.iss, jti = %jti, "feed event older than tokens.max_lifetime: nothing left to revoke");
                    continue;
                }
                let subject = rt.key().token_fingerprint(&key.sub);
                let mut rule = rt.scope_rule(key);
                rule.revoked_at = at;
                match gw.store().apply(RevocationCommand::Scope(rule)).await {
                    Ok(_) => {
                        crate::metrics::revocation_applied(source, mode);
                        crate::metrics::feed_event(source, "applied");
                        tracing::info!(feed = source, mode, event, iss = %token.iss, subject = %subject, jti = %jti, revoked_at = at, "feed revocation applied");
                    }
                    Err(e) => {
                        crate::metrics::revocation_apply_failed(source);
                        let unconfirmed = matches!(e, StoreError::Unconfirmed(_));
                        tracing::warn!(feed = source, mode, event, error = %e, jti = %jti, unconfirmed, "feed revocation not recorded (or not confirmed): answered 503, not remembered");
                        return Err(not_recorded(&e));
                    }
                }
            }
            Effect::Session { event, sid, at } => {
                for cmd in session_revocation(rt, &token.iss, &sid, at.min(now)) {
                    if let Err(e) = gw.store().apply(cmd).await {
                        crate::metrics::revocation_apply_failed(source);
                        let unconfirmed = matches!(e, StoreError::Unconfirmed(_));
                        tracing::warn!(feed = source, event, error = %e, jti = %jti, unconfirmed, "session revocation not recorded (or not confirmed): answered 503");
                        return Err(not_recorded(&e));
                    }
                }
                if !with_subject {
                    crate::metrics::revocation_applied(source, mode);
                    crate::metrics::feed_event(source, "applied");
                }
                crate::metrics::family_revoked("feed");
                tracing::info!(feed = source, mode, event, iss = %token.iss, jti = %jti, "session's token family revoked");
            }
            Effect::Ignored => crate::metrics::feed_event(source, "ignored"),
            Effect::Unmapped => {
                crate::metrics::feed_event(source, "unmapped");
                tracing::info!(feed = source, iss = %token.iss, jti = %jti, "feed event's subject maps to no attribute: nothing revoked");
            }
            Effect::Verification => crate::metrics::feed_event(source, "verification"),
        }
    }
    let until = token
        .exp
        .unwrap_or_else(|| token.iat.saturating_add(horizon))
        .min(now.saturating_add(horizon))
        .saturating_add(leeway.as_secs());
    if !state.replay.mark(key, until).await {
        // Another instance applied the same token at the same moment: both
        // applied it (revocations merge), and both answer success.
        tracing::debug!(feed = source, jti = %jti, "token applied concurrently elsewhere too");
    }
    Ok(Applied::Done)
}

// === the endpoint ===

/// Answers a request to a feed's path (the hyper path; the fast path hands
/// feed paths over).
pub(crate) async fn handle(
    gw: &Gateway,
    rt: &Runtime,
    kind: FeedKind,
    parts: http::request::Parts,
    body: Incoming,
    conn: ClientConn,
) -> Response<Body> {
    let render = |r: Rejection| match kind {
        FeedKind::BackchannelLogout => backchannel::reject(r),
        FeedKind::Ssf => ssf::reject(r),
    };
    if parts.method != http::Method::POST {
        crate::metrics::feed_rejected(kind.name(), Rejection::Method.reason());
        return render(Rejection::Method);
    }
    if let Err(limited) =
        crate::proxy::runtime::rate(rt.feeds.limiter.as_ref(), conn.addr.ip(), "feed")
    {
        let mut resp = match kind {
            FeedKind::BackchannelLogout => backchannel::too_many_requests(),
            FeedKind::Ssf => ssf::too_many_requests(),
        };
        crate::proxy::retry_after(&mut resp, limited);
        return resp;
    }
    let limit = rt.settings().revoke_max_body_bytes();
    let bytes = match crate::proxy::read_limited(rt, &parts.headers, body, limit).await {
        Ok(b) => b,
        Err(crate::proxy::BodyError::TooLarge) => {
            crate::metrics::feed_rejected(kind.name(), Rejection::TooLarge.reason());
            return render(Rejection::TooLarge);
        }
        Err(_) => {
            let r = Rejection::InvalidRequest("body could not be read");
            crate::metrics::feed_rejected(kind.name(), r.reason());
            return render(r);
        }
    };
    let result = match kind {
        FeedKind::BackchannelLogout => backchannel::handle(gw, rt, &parts.headers, &bytes).await,
        FeedKind::Ssf => ssf::push(gw, rt, &parts.headers, &bytes).await,
    };
    match result {
        Ok(resp) => resp,
        Err(r) => {
            crate::metrics::feed_rejected(kind.name(), r.reason());
            if !matches!(r, Rejection::Unavailable(_)) {
                tracing::info!(
                    feed = kind.name(),
                    reason = r.reason(),
                    description = r.description(),
                    "feed delivery refused: nothing revoked"
                );
            }
            render(r)
        }
    }
}

/// A JSON answer with `Cache-Control: no-store`.
pub(crate) fn json(status: StatusCode, body: &serde_json::Value) -> Response<Body> {
    let mut resp = Response::new(crate::proxy::full(body.to_string()));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// The 503 of a revocation the store did not record, or recorded without
/// confirmation (`consistency = "confirmed"`, Redis away): the provider
/// retries either way, and the `jti` is not remembered.
fn not_recorded(e: &StoreError) -> Rejection {
    Rejection::Unavailable(if matches!(e, StoreError::Unconfirmed(_)) {
        "revocation recorded but not confirmed; retry"
    } else {
        "revocation could not be recorded; retry"
    })
}

/// The status of a rejection (the same for both feeds).
pub(crate) fn status(r: &Rejection) -> StatusCode {
    match r {
        Rejection::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        Rejection::Method => StatusCode::METHOD_NOT_ALLOWED,
        Rejection::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// Adds what a status needs beside the body: `Allow` on a 405,
/// `Retry-After` on a 503.
pub(crate) fn finish(mut resp: Response<Body>) -> Response<Body> {
    match resp.status() {
        StatusCode::METHOD_NOT_ALLOWED => {
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
        }
        StatusCode::SERVICE_UNAVAILABLE => {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        _ => {}
    }
    resp
}

/// Whether the request's media type is `want` (parameters ignored,
/// case-insensitive).
pub(crate) fn media_type_is(headers: &http::HeaderMap, want: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim())
        .is_some_and(|m| m.eq_ignore_ascii_case(want))
}

/// Starts the RFC 8936 poller when `[feeds.ssf.poll]` is set (see
/// [`poll`]); it stops with `shutdown`.
pub fn spawn_poller(gw: Arc<Gateway>, shutdown: tokio_util::sync::CancellationToken) {
    if gw.runtime().feeds.polls() {
        tokio::spawn(poll::run(gw, shutdown));
    }
}
