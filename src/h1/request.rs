//! A request head on the fast path: whether this path takes it (framing it
//! can relay, a plain target), the shared admission stages, and the upstream
//! request head written with the header hygiene both paths apply.

use std::sync::Arc;

use super::framing::{content_length, is_chunked, tokens, Chunks, Framing};
use super::pool::Pool;
#[allow(clippy::wildcard_imports)]
use super::*;
use crate::admission::{self, Routed};
use crate::credentials::Fingerprint;
use crate::hygiene::{self, Direction, Fate};
use crate::proxy::{ClientConn, Gateway, Runtime};
use crate::refusal::Refusal;

/// What to do with a request whose head has been read.
pub(super) enum Plan {
    /// Not for this path.
    Handover,
    /// The gateway answers itself.
    Answer(Answer),
    /// Relay to the upstream; `Conn::out` holds the upstream request head.
    Forward(Forward),
    /// A built-in upstream answers, here ([`crate::builtin`]).
    Local(Local),
}

/// A request a built-in upstream answers, admitted.
pub(super) struct Local {
    pub(super) route: usize,
    /// The echo's answer; `None` for `builtin:ok` (written without one).
    /// Boxed: a `Plan` is moved per request, and most are not echoes.
    pub(super) echo: Option<Box<http::Response<bytes::Bytes>>>,
    pub(super) fingerprint: Option<Fingerprint>,
    /// The request's body, to read and drop.
    pub(super) body: Framing,
    pub(super) meta: Meta,
}

pub(super) struct Answer {
    /// Why: rendered, counted and logged as on the hyper path.
    pub(super) refusal: Refusal,
    pub(super) route: Option<usize>,
    /// The credential's fingerprint, when it passed before the refusal.
    pub(super) fingerprint: Option<Fingerprint>,
    /// The request's body, unread: the connection is closed after answering.
    pub(super) body: Framing,
    pub(super) meta: Meta,
}

pub(super) struct Forward {
    pub(super) route: usize,
    /// RFC 9110 §9.2.2: safe to send again when a reused connection fails.
    pub(super) idempotent: bool,
    pub(super) pool: Arc<Pool>,
    pub(super) fingerprint: Option<Fingerprint>,
    pub(super) body: Framing,
    pub(super) meta: Meta,
}

/// What is kept of the request head once its buffer is reused.
pub(super) struct Meta {
    /// The client sent `Connection: close`.
    pub(super) close: bool,
    /// A `HEAD` request (its response has no body).
    pub(super) head: bool,
    /// What the access line needs of the head, copied only when the
    /// access log is on.
    pub(super) logged: Option<crate::accesslog::Request>,
    /// Request id and span, each only when on.
    pub(super) trace: crate::otel::Trace,
}

/// Target bytes taken as they are: RFC 3986 unreserved, sub-delims, `:`,
/// `@`, `/`, `?` and `%`. Anything else (spaces, quotes, braces, non-ASCII,
/// `#`) goes to hyper, which decides.
pub(super) fn plain_target(target: &str) -> bool {
    target.starts_with('/')
        && target.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'-' | b'.'
                        | b'_'
                        | b'~'
                        | b'!'
                        | b'$'
                        | b'&'
                        | b'\''
                        | b'('
                        | b')'
                        | b'*'
                        | b'+'
                        | b','
                        | b';'
                        | b'='
                        | b':'
                        | b'@'
                        | b'/'
                        | b'?'
                        | b'%'
                )
        })
}

/// Decides what to do with a request and, when it is forwarded, writes the
/// upstream request head into `out`.
pub(super) async fn plan(
    gw: &Gateway,
    rt: &Runtime,
    req: &httparse::Request<'_, '_>,
    out: &mut Vec<u8>,
    peer: ClientConn,
    ip: &str,
) -> Plan {
    let (Some(method), Some(target), Some(1)) = (req.method, req.path, req.version) else {
        return Plan::Handover;
    };
    if method == "CONNECT" || !plain_target(target) {
        return Plan::Handover;
    }
    let fields: &[httparse::Header<'_>] = req.headers;
    let mut host: Option<&[u8]> = None;
    let mut hosts = 0;
    let mut length: Option<u64> = None;
    let mut lengths = 0;
    let mut chunked = false;
    let mut codings = 0;
    let mut close = false;
    let mut form = false;
    let mut named: [&[u8]; MAX_CONNECTION_TOKENS] = [&[]; MAX_CONNECTION_TOKENS];
    let mut n_named = 0;
    for f in fields {
        let name = f.name.as_bytes();
        if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
            host = Some(f.value);
        } else if name.eq_ignore_ascii_case(b"content-length") {
            lengths += 1;
            length = content_length(f.value);
            if length.is_none() {
                return Plan::Handover;
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            codings += 1;
            chunked = is_chunked(f.value);
        } else if name.eq_ignore_ascii_case(b"connection") {
            for t in tokens(f.value) {
                if t.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if !t.eq_ignore_ascii_case(b"keep-alive") {
                    if n_named == MAX_CONNECTION_TOKENS {
                        return Plan::Handover;
                    }
                    named[n_named] = t;
                    n_named += 1;
                }
            }
        } else if name.eq_ignore_ascii_case(b"content-type") {
            form |= crate::credentials::is_form_content_type(f.value);
        } else if name.eq_ignore_ascii_case(b"upgrade")
            || name.eq_ignore_ascii_case(b"expect")
            || name.eq_ignore_ascii_case(b"http2-settings")
        {
            return Plan::Handover;
        }
    }
    if lengths > 1 || codings > 1 || (codings == 1 && (!chunked || lengths > 0)) {
        return Plan::Handover;
    }
    let body = match (chunked, length) {
        (true, _) => Framing::Chunked(Chunks::default()),
        (false, Some(n)) if n > 0 => Framing::Length(n),
        _ => Framing::Done,
    };
    // A form body may carry an `access_token`: hyper's path reads and judges it.
    if form && !body.is_done() && rt.settings().form_body_limit() > 0 {
        return Plan::Handover;
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    // Made only once this path keeps the request (a hand-over makes its own
    // on the hyper path): the request id and the span, each when on.
    let traced = || {
        let mut trace = crate::otel::Trace::default();
        if rt.settings().request_id() {
            trace.id = Some(crate::otel::RequestId::for_request(
                fields
                    .iter()
                    .filter(|f| f.name.eq_ignore_ascii_case(crate::otel::REQUEST_ID))
                    .map(|f| f.value),
            ));
        }
        if crate::otel::enabled() {
            trace.span = crate::otel::start(
                method,
                path,
                fields
                    .iter()
                    .filter(|f| f.name.eq_ignore_ascii_case(crate::otel::TRACEPARENT))
                    .map(|f| f.value),
            );
        }
        trace
    };
    let meta = Meta {
        close,
        head: method == "HEAD",
        logged: rt.capture(method, path, http::Version::HTTP_11, fields),
        trace: crate::otel::Trace::default(),
    };

    // 1. route (the Host rule, revoke calls): the stages the hyper path
    // shares ([`crate::admission`]).
    let head = admission::Head {
        http11: true,
        method,
        path,
        query,
        authority: host,
        hosts,
        headers: fields,
    };
    let refuse = |refusal, route, body, mut meta: Meta| {
        if meta.trace.id.is_none() && meta.trace.span.is_none() {
            meta.trace = traced();
        }
        Plan::Answer(Answer {
            refusal,
            route,
            fingerprint: None,
            body,
            meta,
        })
    };
    let index = match admission::route(rt, &head) {
        Err(refusal) => return refuse(refusal, None, body, meta),
        // Revoke endpoints (any method: a terminating one answers a wrong
        // method in the vendor's format) and feeds are the hyper path's.
        Ok(
            Routed::RevokeCall { .. }
            | Routed::Feed(_)
            | Routed::Ordinary {
                revoke_path: Some(_),
                ..
            },
        ) => return Plan::Handover,
        // Token endpoints' answers are read for what they issue (hyper path).
        Ok(Routed::Ordinary { .. }) if rt.issuance(method, path).is_some() => {
            return Plan::Handover
        }
        Ok(Routed::Ordinary { route, .. }) => route,
    };
    // 2. upstreams this path does not speak to; a built-in one it answers
    let builtin = rt.settings().routes[index].upstream.builtin;
    let pool = match rt.pool(index) {
        Some(pool) => Some(pool),
        None if builtin.is_some() => None,
        None => return Plan::Handover,
    };
    let mut meta = meta;
    meta.trace = traced();
    // 3. verdict
    let fingerprint = match admission::judge(rt, &**gw.store(), &head, None).await {
        Ok(fp) => fp,
        Err(refusal) => return refuse(refusal, Some(index), body, meta),
    };
    let Some(pool) = pool else {
        let echo = match builtin {
            Some(crate::builtin::Builtin::Echo) => Some(Box::new(crate::builtin::echo_response(
                method,
                path,
                fields,
                &rt.settings().credential_sources.api_key_headers,
            ))),
            _ => None,
        };
        return Plan::Local(Local {
            route: index,
            echo,
            fingerprint,
            body,
            meta,
        });
    };

    // 4. the upstream request head
    let route = &rt.settings().routes[index];
    out.clear();
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(route.upstream.base_path.as_bytes());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(route.upstream.authority.as_str().as_bytes());
    out.extend_from_slice(b"\r\n");
    let named = &named[..n_named];
    // Ours replace the client's (when on).
    let own_id = meta.trace.id.is_some();
    let own_parent = meta.trace.span.is_some();
    for f in fields {
        let name = f.name.as_bytes();
        let connection_named = named.iter().any(|n| name.eq_ignore_ascii_case(n));
        // This path never relays an upgrade (those go to hyper).
        if hygiene::field_fate(name, Direction::Request, connection_named, false) == Fate::Keep
            && !(own_id && name.eq_ignore_ascii_case(crate::otel::REQUEST_ID.as_bytes()))
            && !(own_parent && name.eq_ignore_ascii_case(crate::otel::TRACEPARENT.as_bytes()))
        {
            push_field(out, name, f.value);
        }
    }
    if let Some(id) = &meta.trace.id {
        push_field(out, crate::otel::REQUEST_ID.as_bytes(), id.as_bytes());
    }
    if let Some(span) = &meta.trace.span {
        push_field(
            out,
            crate::otel::TRACEPARENT.as_bytes(),
            &span.traceparent(),
        );
    }
    push_joined(out, fields, "x-forwarded-for", ip.as_bytes());
    out.extend_from_slice(if peer.tls {
        b"x-forwarded-proto: https\r\n".as_slice()
    } else {
        b"x-forwarded-proto: http\r\n".as_slice()
    });
    if let Some(h) = host {
        push_field(out, b"x-forwarded-host", h);
    }
    push_joined(out, fields, "via", hygiene::VIA.as_bytes());
    if chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Plan::Forward(Forward {
        route: index,
        idempotent: matches!(
            method,
            "GET" | "HEAD" | "PUT" | "DELETE" | "OPTIONS" | "TRACE"
        ),
        pool,
        fingerprint,
        body,
        meta,
    })
}

pub(super) fn push_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// `name: <every earlier value, comma-joined>, <ours>`.
pub(super) fn push_joined(
    out: &mut Vec<u8>,
    fields: &[httparse::Header<'_>],
    name: &str,
    ours: &[u8],
) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    for f in fields {
        if f.name.eq_ignore_ascii_case(name) {
            let v = framing::trim(f.value);
            if !v.is_empty() {
                out.extend_from_slice(v);
                out.extend_from_slice(b", ");
            }
        }
    }
    out.extend_from_slice(ours);
    out.extend_from_slice(b"\r\n");
}
