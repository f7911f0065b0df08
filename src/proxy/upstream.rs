//! Forwarding to an upstream on the hyper path: the request rewritten
//! (target, header hygiene), sent through the pooled client, its response
//! streamed back; upgrades spliced; live sessions' bodies and splices cut
//! when a revocation covers their credential.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio_util::sync::CancellationToken;

#[allow(clippy::wildcard_imports)]
use super::*;
use crate::config::Route;
use crate::refusal::Refusal;
use crate::store::live::{LiveSession, SessionKind};

/// Whether a request that passed with a credential is registered as a live
/// session, and as what: upgrades and HTTP/2 streams, never plain HTTP/1.x.
pub(crate) fn live_kind(version: http::Version, headers: &HeaderMap) -> Option<SessionKind> {
    if version == http::Version::HTTP_2 {
        Some(SessionKind::Stream)
    } else if is_upgrade(headers) {
        Some(SessionKind::Upgrade)
    } else {
        None
    }
}

pub(crate) fn upstream_uri(route: &Route, uri: &Uri) -> Result<Uri, Refusal> {
    let pq = if route.upstream.base_path.is_empty() {
        uri.path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"))
    } else {
        let pq = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        http::uri::PathAndQuery::try_from(format!("{}{}", route.upstream.base_path, pq))
            .map_err(|e| Refusal::UpstreamUnavailable(format!("bad upstream URI: {e}")))?
    };
    Uri::builder()
        .scheme(route.upstream.scheme.clone())
        .authority(route.upstream.authority.clone())
        .path_and_query(pq)
        .build()
        .map_err(|e| Refusal::UpstreamUnavailable(format!("bad upstream URI: {e}")))
}

pub(crate) fn is_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
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

/// A built-in upstream's answer ([`crate::builtin`]), when the route has
/// one: the request goes nowhere.
pub(crate) fn builtin_answer(
    rt: &Runtime,
    route: &Route,
    parts: &http::request::Parts,
) -> Option<Response<Body>> {
    let builtin = route.upstream.builtin?;
    let answer = builtin.respond(
        parts.method.as_str(),
        parts.uri.path(),
        &parts.headers,
        &rt.settings.credential_sources.api_key_headers,
    );
    Some(answer.map(full))
}

/// Sends a request to the route's upstream and returns its response, with
/// hygiene applied both ways; splices upgraded connections on a 101. With a
/// live `session`, both bodies, the wait for the head and the splice end
/// when it is revoked (see the module docs).
pub(crate) async fn forward(
    rt: &Runtime,
    route: &Route,
    mut parts: http::request::Parts,
    body: Body,
    conn: ClientConn,
    session: Option<LiveSession>,
) -> Result<Response<Body>, Refusal> {
    // A forward-mode revoke call to a built-in upstream: its 200 is the
    // upstream's 2xx, so the revocation is applied.
    if let Some(answer) = builtin_answer(rt, route, &parts) {
        return Ok(answer);
    }
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
    strip_hop_by_hop(headers, crate::hygiene::Direction::Request, upgrade);
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
    let timeout = rt.settings.response_header_timeout();
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
        _ = deadline => Err(Refusal::UpstreamTimeout),
        _ = revoked_wait => Err(Refusal::RevokedInFlight),
    };
    let mut resp = match result {
        Err(e) => return Err(e),
        // The client's body stopped (hyper's client reports our body's error).
        Ok(Err(e)) if crate::idle::is_idle(&e) => return Err(Refusal::ClientTimeout),
        Ok(Err(e)) if is_timeout(&e) => return Err(Refusal::UpstreamTimeout),
        Ok(Err(e)) => {
            return Err(Refusal::UpstreamUnavailable(crate::telemetry::error_chain(
                &e,
            )));
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
                rt.settings.upgrade_idle_timeout(),
            ));
        }
    }
    let (mut rparts, rbody) = resp.into_parts();
    strip_hop_by_hop(
        &mut rparts.headers,
        crate::hygiene::Direction::Response,
        switching,
    );
    append_static(&mut rparts.headers, header::VIA, crate::hygiene::VIA);
    // An upstream that stops mid-body is given up like a client that does.
    let rbody = crate::idle::IdleBody::new(rbody, rt.settings.body_idle_timeout()).boxed();
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
pub(crate) async fn splice(
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
pub(crate) struct EndOnRevoke {
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
pub(crate) struct RevokedStream;

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
pub(crate) struct SignalOnEnd {
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
