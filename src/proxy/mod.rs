//! The request's path, stage by stage, and the forwarding to upstreams.
//!
//! ```text
//! Gateway::handle            logs, maps Refusal -> response (the one "rescue")
//!   handle_inner             early returns, in order:
//!     1. route               host / longest path prefix -> upstream (404 if none)
//!     1b. feed?              an identity provider's feed path -> feeds::handle
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
//!
//! Files: [`runtime`] (what SIGHUP replaces), [`revoke`] (revoke endpoints;
//! intent -> command), [`body`] (client bodies), [`upstream`] (forwarding,
//! upgrades, live sessions); shared with the fast path:
//! `crate::admission`, `crate::hygiene`, `crate::refusal`.

pub mod body;
pub mod issuance;
pub mod revoke;
pub mod runtime;
pub mod upstream;

pub(crate) use crate::hygiene::*;
pub(crate) use body::*;
pub(crate) use revoke::*;
pub(crate) use runtime::DialectEntry;
pub use runtime::{retry_after, Runtime, RuntimeError, ScopeAdmission};
pub(crate) use upstream::*;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use tokio_util::sync::CancellationToken;

use crate::admission::{self, Routed};
use crate::credentials::{self};
use crate::dialect::{RevokeCall, RevokeMode};
use crate::refusal::Refusal;
use crate::store::live::{self, Admitted, LiveSession, SessionKind};
use crate::store::RevocationStore;

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
    /// The feeds' replay memory (kept across reloads).
    feeds: crate::feeds::FeedState,
    /// The access log's writer (kept across reloads; each runtime holds it).
    access: Option<Arc<crate::accesslog::AccessLog>>,
}

pub use crate::metrics::Outcome;

/// One finished request, as [`Runtime::account`] records it.
pub(crate) struct Finished<'a> {
    /// When the request's head had been read.
    pub start: Instant,
    /// What the access line needs of the request, when the access log is on.
    pub logged: Option<&'a crate::accesslog::Request>,
    /// Status sent to the client.
    pub status: u16,
    /// The access log's `$body_bytes_sent` (see [`crate::accesslog`]).
    pub body_bytes: u64,
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
    /// The request id, when `tracing.request_id` is on.
    pub request_id: Option<&'a crate::otel::RequestId>,
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
    /// A gateway over a runtime and a store, without an access log.
    pub fn new(
        runtime: Runtime,
        store: Arc<dyn RevocationStore>,
        shutdown: CancellationToken,
    ) -> Self {
        Self::with_access_log(runtime, store, shutdown, None)
    }

    /// A gateway whose requests are written to `access` (when
    /// `log.access_log` is on).
    pub fn with_access_log(
        mut runtime: Runtime,
        store: Arc<dyn RevocationStore>,
        shutdown: CancellationToken,
        access: Option<Arc<crate::accesslog::AccessLog>>,
    ) -> Self {
        runtime.access = access.clone();
        let s = runtime.settings.store();
        let feeds = crate::feeds::FeedState::new(
            runtime.settings.feeds().replay_capacity,
            &s.url,
            &s.key_prefix,
        );
        Gateway {
            runtime: ArcSwap::from_pointee(runtime),
            store,
            shutdown,
            feeds,
            access,
        }
    }

    /// The access log's writer, when there is one (SIGUSR1 reopens it).
    pub fn access_log(&self) -> Option<&Arc<crate::accesslog::AccessLog>> {
        self.access.as_ref()
    }

    /// Replaces the runtime (config reload); in-flight requests finish on the
    /// old one. A JWKS already fetched from an unchanged URL is carried over;
    /// the access log follows a new `log.access_log_path`.
    pub fn reload(&self, mut runtime: Runtime) {
        if let Some(a) = &self.access {
            a.retarget(runtime.settings.access_log_destination());
        }
        runtime.access = self.access.clone();
        if let (Some(new), Some(old)) = (&runtime.verifier, &self.runtime.load().verifier) {
            new.adopt_keys(old);
        }
        runtime.feeds.adopt_keys(&self.runtime.load().feeds);
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

    /// The feeds' state that outlives a reload.
    pub fn feed_state(&self) -> &crate::feeds::FeedState {
        &self.feeds
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
        let mut req = req;
        // Copied only when they will be logged.
        let logged = rt.capture(
            req.method().as_str(),
            req.uri().path(),
            req.version(),
            req.headers(),
        );
        let head = *req.method() == http::Method::HEAD;
        let trace = crate::otel::Trace::for_hyper(&rt.settings, &mut req);
        let h = self.handle_inner(&rt, req, conn).await;
        let status = h.response.status().as_u16();
        // The length of a body not sent yet (the line is written with the
        // response head): known when it has one.
        let body_bytes = if head || status < 200 || status == 204 || status == 304 {
            0
        } else {
            http_body::Body::size_hint(h.response.body())
                .exact()
                .unwrap_or(0)
        };
        rt.account(
            &Finished {
                start,
                logged: logged.as_ref(),
                status,
                body_bytes,
                route: h.route,
                outcome: h.outcome,
                upstream_time: h.upstream_time,
                fingerprint: h.fingerprint.as_ref(),
                peer: conn.addr,
                request_id: trace.id.as_ref(),
            },
            trace.span,
        );
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
        match self.admit_and_forward(rt, req, conn, &mut h).await {
            Ok(response) => h.response = response,
            Err(refusal) => {
                if matches!(
                    refusal,
                    Refusal::UpstreamUnavailable(_) | Refusal::UpstreamTimeout
                ) {
                    if let Some(suppressed) = rt.warnings.upstream.admit() {
                        let route = h.route.map(|i| rt.settings.routes[i].name.as_str());
                        tracing::warn!(error = %refusal, route = route.unwrap_or("-"), suppressed, "upstream error");
                    }
                }
                h.outcome = refusal.outcome();
                h.fingerprint = h.fingerprint.or(refusal.fingerprint());
                h.response = refusal.into_response();
            }
        }
        h
    }

    /// The request's stages on this path; a [`Refusal`] is answered by
    /// [`Gateway::handle_inner`], the one place this path turns one into a
    /// response. `h` collects what the access log and metrics need.
    async fn admit_and_forward(
        &self,
        rt: &Runtime,
        req: Request<Incoming>,
        conn: ClientConn,
        h: &mut Handled,
    ) -> Result<Response<Body>, Refusal> {
        // 0. a transfer coding hyper removed the chunking of but that is not
        // ours to undo (e.g. `gzip, chunked`): refuse, and close.
        if req
            .headers()
            .get(header::TRANSFER_ENCODING)
            .is_some_and(|te| !crate::h1::framing::is_chunked(te.as_bytes()))
        {
            return Err(Refusal::TransferCoding);
        }

        // 1. route, and revoke calls
        let (parts, body) = req.into_parts();
        let authority = parts
            .uri
            .authority()
            .map(|a| a.as_str().as_bytes())
            .or_else(|| parts.headers.get(header::HOST).map(|v| v.as_bytes()));
        let head = admission::Head {
            http11: parts.version == http::Version::HTTP_11,
            method: parts.method.as_str(),
            path: parts.uri.path(),
            query: parts.uri.query(),
            authority,
            hosts: parts.headers.get_all(header::HOST).iter().count(),
            headers: &parts.headers,
        };
        let (index, revoke_path) = match admission::route(rt, &head)? {
            Routed::RevokeCall { route, dialect: d } => {
                h.route = Some(route);
                h.outcome = Outcome::RevokeCall;
                let started = Instant::now();
                let answer = self
                    .revoke(rt, d, &rt.settings.routes[route], parts, body, conn)
                    .await;
                h.upstream_time = (d.mode == RevokeMode::Forward).then(|| started.elapsed());
                return match answer {
                    Ok(Revoked::Answered(r)) => Ok(r),
                    // Forwarding, the caller's own credential was refused.
                    Ok(Revoked::Refused(refusal)) => Err(refusal),
                    // Counted as a revoke call whatever went wrong.
                    Err(e) => {
                        if let Some(suppressed) = rt.warnings.revoke_call.admit() {
                            tracing::warn!(error = %e, dialect = d.dialect.kind().name(), suppressed, "revoke call failed");
                        }
                        Ok(e.into_response())
                    }
                };
            }
            // An identity provider's feed (`crate::feeds`): answered here.
            Routed::Feed(kind) => {
                h.outcome = Outcome::RevokeCall;
                // Type-erased: the feed's future is large, and this one is
                // nested deep (the compiler's Send proof would overflow).
                let answer: std::pin::Pin<
                    Box<dyn std::future::Future<Output = Response<Body>> + Send + '_>,
                > = Box::pin(crate::feeds::handle(self, rt, kind, parts, body, conn));
                return Ok(answer.await);
            }
            Routed::Ordinary { route, revoke_path } => (route, revoke_path),
        };
        h.route = Some(index);
        let route = &rt.settings.routes[index];

        // 2. verdict; a form-encoded body may carry the token too (RFC 6750
        // §2.2), so it is read first, within `tokens.form_body_limit`.
        // A token endpoint's request is read whole (bounded): the refresh
        // token it presents is judged too (`issuance`).
        let endpoint = rt.issuance(parts.method.as_str(), parts.uri.path());
        let (form, body, token_request) = match endpoint {
            Some(_) => {
                let bytes = read_limited(rt, &parts.headers, body, issuance::MAX_REQUEST)
                    .await
                    .map_err(|e| match e {
                        BodyError::TooLarge => Refusal::TokenRequestTooLarge,
                        BodyError::Read(e) => Refusal::ClientBody(e),
                        BodyError::Idle => Refusal::ClientTimeout,
                    })?;
                let form = (rt.settings.form_body_limit() > 0
                    && credentials::is_form(&parts.headers))
                .then(|| bytes.clone());
                (form, full(bytes.clone()), Some(bytes))
            }
            None => {
                let (form, body) = read_form(rt, &parts.headers, body).await?;
                (form, body, None)
            }
        };
        h.fingerprint = admission::judge(rt, &**self.store(), &head, form.as_deref()).await?;
        let presented = match &token_request {
            Some(bytes) => {
                rt.token_request(&**self.store(), parts.uri.query(), bytes)
                    .await?
            }
            None => None,
        };

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
            return match d.dialect.parse(&call) {
                Err(vendor_error) => Ok(render(d, vendor_error)),
                Ok(_) => Err(Refusal::NoRoute),
            };
        }

        // 3a. a built-in upstream answers here (no live session to
        // register: nothing is forwarded).
        if let Some(answer) = upstream::builtin_answer(rt, route, &parts) {
            return Ok(answer);
        }

        // 3. forward; an upgrade or an h2 stream as a live session, closed
        // when a revocation covers its credential.
        let session = match h.fingerprint {
            Some(fp) => match live_kind(parts.version, &parts.headers) {
                Some(kind) => Some(self.admit_live(rt, &parts, form.as_deref(), fp, kind).await),
                None => None,
            },
            None => None,
        };
        if session.as_ref().is_some_and(LiveSession::is_revoked) {
            return Err(Refusal::RevokedInFlight);
        }
        // A token endpoint: its answer binds what it issued (`issuance`).
        let learning = endpoint.map(|endpoint| (endpoint, issuance::Asked::of(&parts, presented)));
        let started = Instant::now();
        let result = forward(rt, route, parts, body, conn, session).await;
        h.upstream_time = Some(started.elapsed());
        match (learning, result) {
            (Some((endpoint, asked)), Ok(resp)) => {
                Ok(rt.learn(&**self.store(), endpoint, asked, resp).await)
            }
            (_, result) => result,
        }
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
            if let (None, Some(introspector)) = (&admitted.attributes.sub, &checker.introspection) {
                // Judged by its introspected subject: registered under it.
                if let Some(introspected) = introspector.cached_attributes(fp).await {
                    admitted.attributes = (*introspected).clone();
                }
            }
        }
        live::admit(&*self.store, admitted, kind).await
    }
}

impl Refusal {
    /// The hyper path's response for this refusal.
    pub(crate) fn into_response(self) -> Response<Body> {
        self.response().map(full)
    }
}
