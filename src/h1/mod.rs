//! The HTTP/1.1 fast path: plain keep-alive requests relayed by one task per
//! client connection, without hyper's per-request machinery.
//!
//! ```text
//! client bytes -> httparse head -> eligible? --no--> hand the connection to hyper
//!                                    | yes            (bytes put back: Rewind)
//!                                    v
//!                 route -> revoke path? (-> hyper) -> verdict (401/400/503 answered here)
//!                                    v
//!                 upstream head composed straight from the client's bytes
//!                 (hop-by-hop removed, X-Forwarded-*, Via) -> pooled upstream
//!                 connection -> response head rewritten -> bodies relayed as
//!                 they arrive, framed by Content-Length or a chunk scanner
//! ```
//!
//! Why: behind hyper's server and hyper-util's pooled client, a proxied
//! request cost ~24 µs of CPU here against nginx's ~11 µs (BENCHMARKS.md):
//! two tasks per exchange, channels between them, a pool checkout future,
//! two timers, a `HeaderMap` built and re-serialised each way. This path
//! does one task, no channels, the client's header bytes copied once into
//! the upstream head, and two lazily re-armed timers per connection.
//!
//! What it takes: HTTP/1.1 requests with an origin-form target of plain URI
//! characters, exactly one `Host`, and a body framed by one valid
//! `Content-Length` or by `Transfer-Encoding: chunked` alone, on a route
//! whose upstream is `http://`. Everything else — HTTP/1.0, HTTP/2 (h2c
//! prior knowledge), `Upgrade`, `Expect`, `CONNECT`, absolute-form or odd
//! targets, duplicate or conflicting framing headers, heads over the size
//! limit or with more than [`MAX_HEADERS`] fields, revoke endpoints,
//! `https://` upstreams, form-encoded bodies (whose `access_token` hyper's
//! path reads and judges) — is handed to hyper with the bytes read so far
//! ([`End::Handover`]), and hyper serves the rest of that connection exactly
//! as it serves connections that never took this path. Answers to malformed
//! input therefore come from one place (hyper), and this path never has to
//! guess at a message it does not fully understand.
//!
//! A chunked request body's trailer section is dropped on the way
//! ([`framing::Framing::take_request`]): a trailer field could carry a
//! credential nobody judged.
//!
//! Upstream responses are relayed when they are HTTP/1.x with a valid
//! head; a response with conflicting or unknown framing (`Content-Length`
//! twice or with `Transfer-Encoding`, a coding other than `chunked`) or a
//! `101` nobody asked for is answered 502, as nginx does. A response without
//! a length is relayed until the upstream closes and then the client
//! connection is closed too. 1xx responses other than `100` are passed on.
//!
//! A request body is streamed to the upstream as it arrives. When the
//! upstream answers before it has all of it (a 413, a 401), that answer is
//! relayed and both connections are closed afterwards; when a pooled
//! connection fails before any response byte, an idempotent request whose
//! bytes are all still in memory is sent again on a fresh connection.
//!
//! Timeouts: a body relay that makes no progress for
//! `server.body_idle_timeout` is given up (408, 504, or a closed
//! connection once a response has begun; the hyper path has no body
//! timeout). As on the hyper path: the next request head within
//! `HEADER_READ_TIMEOUT` (idle keep-alive time included), the upstream's
//! response head within `upstream.response_header_timeout` of the request
//! body being sent in full, the connect within `upstream.connect_timeout`.

pub mod framing;
pub mod pool;
pub mod rewind;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Response;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use self::framing::{content_length, is_chunked, tokens, Chunks, Framing};
use self::pool::{ConnectError, Pool};
use crate::admission::{self, Routed};
use crate::credentials::Fingerprint;
use crate::proxy::{ClientConn, Finished, Gateway, Outcome, Runtime};
use crate::refusal::Refusal;

/// Most header fields in a head this path reads (hyper's default too).
pub const MAX_HEADERS: usize = 100;
/// Largest upstream response head relayed; past it, 502.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Initial size of a connection's read buffer.
const INITIAL_BUFFER: usize = 8 * 1024;
/// How long a connection may sit idle between requests before it gives its
/// buffers and request state back (see [`serve`]).
pub const IDLE_RELEASE: Duration = Duration::from_secs(1);
/// Bytes asked for per read while relaying a body.
const RELAY_CHUNK: usize = 16 * 1024;
/// Largest unread request body read and dropped after the gateway answered
/// (a 401 to a POST, say) so that the connection can carry the next request;
/// past it the connection is closed instead.
const DISCARD_LIMIT: u64 = 64 * 1024;
/// Request connection-named fields, at most; more goes to hyper.
const MAX_CONNECTION_TOKENS: usize = 8;

/// How a connection left the fast path.
pub enum End<IO> {
    /// Closed: by the client, after `Connection: close`, on an error, or
    /// while draining.
    Closed,
    /// A request this path does not take arrived: serve the rest of the
    /// connection with hyper, starting with these bytes.
    Handover(IO, Bytes),
}

/// Limits that come from the listener's settings.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest request head; a longer one is handed to hyper (which answers 431).
    pub max_header_bytes: usize,
    /// Time for a whole request head to arrive, idle keep-alive included.
    pub header_read_timeout: Duration,
    /// Longest a body relay may make no progress.
    pub body_idle_timeout: Duration,
}

/// Serves a client connection until it closes or must be handed to hyper.
///
/// Two phases, so that an idle connection costs little: while it is idle
/// (no bytes of a next request yet) this future holds the socket, the
/// header timer and a few words, and waits for readability without a
/// buffer; once bytes arrive, the busy phase ([`busy`], boxed: its request
/// machinery is most of this path's state) takes the buffers and serves
/// requests until the connection has been idle for [`IDLE_RELEASE`], then
/// gives everything back. The steady state under load stays allocation-free:
/// a connection that keeps sending never leaves the busy phase.
pub async fn serve<IO>(
    gateway: Arc<Gateway>,
    io: IO,
    peer: ClientConn,
    limits: Limits,
    drain: CancellationToken,
) -> End<IO>
where
    IO: AsyncRead + AsyncWrite + Readiness + Unpin + Send,
{
    let mut io = io;
    let mut head_timer = Deadline::new();
    // The runtime is re-read per request but only re-cloned after a reload
    // (a shared reference count touched per request costs cache misses).
    let mut rt = gateway.runtime();
    loop {
        if IO::PARKS {
            // The idle keep-alive time counts towards the next head's timeout.
            head_timer.set(Instant::now() + limits.header_read_timeout);
            let woke = tokio::select! {
                biased;
                r = std::future::poll_fn(|cx| io.poll_read_ready(cx)) => r.is_ok(),
                _ = drain.cancelled() => return End::Closed,
                _ = head_timer.wait() => return End::Closed,
            };
            if !woke {
                return End::Closed;
            }
        }
        let busy = Box::pin(busy(
            &gateway, &mut rt, io, peer, limits, &drain, head_timer,
        ));
        match busy.await {
            Phase::Idle(back, timer) => {
                io = back;
                head_timer = timer;
            }
            Phase::End(end) => return end,
        }
    }
}

/// How a busy phase ended.
enum Phase<IO> {
    /// Idle for [`IDLE_RELEASE`] with nothing buffered: wait for the next
    /// request without buffers. Carries the socket and the header timer.
    Idle(IO, Deadline),
    /// The connection is done with this path.
    End(End<IO>),
}

/// Serves requests until the connection closes, must be handed to hyper,
/// or has sat idle (no byte of a next request) for [`IDLE_RELEASE`] when
/// `IO` can wait for readability without reading.
async fn busy<IO>(
    gateway: &Gateway,
    rt: &mut Arc<Runtime>,
    io: IO,
    peer: ClientConn,
    limits: Limits,
    drain: &CancellationToken,
    head_timer: Deadline,
) -> Phase<IO>
where
    IO: AsyncRead + AsyncWrite + Readiness + Unpin + Send,
{
    let mut ip_buf = [0u8; 64];
    let ip = crate::proxy::ip_text(peer.addr.ip(), &mut ip_buf);
    let mut c = Conn {
        io,
        buf: Vec::with_capacity(INITIAL_BUFFER),
        ubuf: Vec::new(),
        out: Vec::with_capacity(1024),
        peer,
        limits,
        head_timer,
        response_timer: Deadline::new(),
        idle_timer: Deadline::new(),
    };
    loop {
        let now = Instant::now();
        c.head_timer.set(now + limits.header_read_timeout);
        c.idle_timer.set(now + IDLE_RELEASE);
        // Read until a whole head is here, then plan the request while its
        // fields still borrow the buffer.
        let (plan, head_len, start) = loop {
            let mut fields = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
            let mut req = httparse::Request::new(&mut []);
            match req.parse_with_uninit_headers(&c.buf, &mut fields) {
                Ok(httparse::Status::Complete(n)) => {
                    let start = Instant::now();
                    // Checked once the request is here: a reload while
                    // this connection sat idle applies to it.
                    if let Some(newer) = gateway.runtime_if_changed(rt) {
                        *rt = newer;
                    }
                    let plan = plan(gateway, rt, &req, &mut c.out, peer, ip).await;
                    break (plan, n, start);
                }
                Ok(httparse::Status::Partial) => {}
                Err(_) => return Phase::End(c.handover()),
            }
            if c.buf.len() >= limits.max_header_bytes {
                return Phase::End(c.handover());
            }
            if c.buf.capacity() - c.buf.len() < 1024 {
                c.buf.reserve(INITIAL_BUFFER);
            }
            let idle = c.buf.is_empty();
            let read = tokio::select! {
                biased;
                r = c.io.read_buf(&mut c.buf) => r,
                _ = drain.cancelled(), if idle => return Phase::End(End::Closed),
                _ = c.head_timer.wait() => return Phase::End(End::Closed),
                _ = c.idle_timer.wait(), if idle && IO::PARKS => {
                    return Phase::Idle(c.io, c.head_timer);
                }
            };
            match read {
                Ok(0) | Err(_) => return Phase::End(End::Closed),
                Ok(_) => {}
            }
        };
        let next = match plan {
            Plan::Handover => return Phase::End(c.handover()),
            Plan::Answer(a) => c.answer(rt, a, head_len, start).await,
            Plan::Forward(f) => c.forward(rt, f, head_len, start).await,
        };
        if next == Next::Close || drain.is_cancelled() {
            let _ = c.io.shutdown().await;
            return Phase::End(End::Closed);
        }
    }
}

/// An I/O object that can wait until a read would find something without
/// reading (and so without a buffer).
pub trait Readiness {
    /// Whether [`Readiness::poll_read_ready`] means anything for this type:
    /// when false, a connection keeps its buffers while idle.
    const PARKS: bool;
    /// Ready when a read would return bytes, end of stream or an error
    /// (possibly spuriously: a read may then still wait).
    fn poll_read_ready(
        &self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>>;
}

impl Readiness for TcpStream {
    const PARKS: bool = true;
    fn poll_read_ready(
        &self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        TcpStream::poll_read_ready(self, cx)
    }
}

/// TLS keeps decrypted bytes of its own that socket readiness does not
/// show (and rustls's buffers dwarf ours): such connections keep their
/// buffers while idle.
impl<IO> Readiness for tokio_rustls::server::TlsStream<IO> {
    const PARKS: bool = false;
    fn poll_read_ready(
        &self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// Fuzzing entry (`fuzz/`, `tests/fuzz_corpus.rs`): parses `bytes` as
/// [`serve`] parses a request head and plans it against `gateway`, without
/// a connection. `None`: the head is partial or invalid. Otherwise what the
/// plan decided (`"handover"`, `"answer"` or `"forward"`), the upstream
/// request head written (forward only), the body framing, and the head's
/// length in `bytes`.
#[doc(hidden)]
pub async fn plan_for_fuzzing(
    gateway: &Gateway,
    bytes: &[u8],
) -> Option<(&'static str, Vec<u8>, Framing, usize)> {
    let mut fields = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let Ok(httparse::Status::Complete(n)) = req.parse_with_uninit_headers(bytes, &mut fields)
    else {
        return None;
    };
    let rt = gateway.runtime();
    let peer = ClientConn {
        addr: std::net::SocketAddr::from(([127, 0, 0, 1], 40000)),
        tls: false,
    };
    let mut out = Vec::new();
    Some(
        match plan(gateway, &rt, &req, &mut out, peer, "127.0.0.1").await {
            Plan::Handover => ("handover", out, Framing::Done, n),
            Plan::Answer(a) => ("answer", Vec::new(), a.body, n),
            Plan::Forward(f) => ("forward", out, f.body, n),
        },
    )
}

/// What [`response_head_for_fuzzing`] found: status, body framing, upstream
/// connection reusable, client head written, head length.
#[doc(hidden)]
pub type FuzzedResponseHead = (u16, Framing, bool, Vec<u8>, usize);

/// Fuzzing entry (`fuzz/`, `tests/fuzz_corpus.rs`): parses `bytes` as an
/// upstream response head the way the relay does, then inspects its framing
/// and writes the client's head. `None`: partial or invalid head.
/// `Some(Err(reason))`: refused (answered 502). `Some(Ok(..))`: the status,
/// body framing, whether the upstream connection is reusable, the client
/// head written, and the head's length in `bytes`.
#[doc(hidden)]
pub fn response_head_for_fuzzing(
    bytes: &[u8],
    head_request: bool,
    close_client: bool,
) -> Option<Result<FuzzedResponseHead, String>> {
    let mut fields = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        bytes,
        &mut fields,
    );
    let Ok(httparse::Status::Complete(n)) = parsed else {
        return None;
    };
    let mut out = Vec::new();
    if (100..200).contains(&resp.code.unwrap_or(0)) {
        rewrite_response(&mut out, &resp, &Framing::Done, false);
        return Some(Ok((resp.code.unwrap_or(0), Framing::Done, true, out, n)));
    }
    Some(match inspect_response(&resp, head_request) {
        Ok(head) => {
            rewrite_response(&mut out, &resp, &head.body, close_client);
            Ok((head.status, head.body, head.reusable, out, n))
        }
        Err(HeadError::Invalid(why) | HeadError::Closed(why)) => Err(why),
        Err(HeadError::TimedOut) => Err("timed out".into()),
    })
}

/// What to do with a request whose head has been read.
enum Plan {
    /// Not for this path.
    Handover,
    /// The gateway answers itself.
    Answer(Answer),
    /// Relay to the upstream; `Conn::out` holds the upstream request head.
    Forward(Forward),
}

struct Answer {
    /// Why: rendered, counted and logged as on the hyper path.
    refusal: Refusal,
    route: Option<usize>,
    /// The credential's fingerprint, when it passed before the refusal.
    fingerprint: Option<Fingerprint>,
    /// The request's body, unread: the connection is closed after answering.
    body: Framing,
    meta: Meta,
}

struct Forward {
    route: usize,
    /// RFC 9110 §9.2.2: safe to send again when a reused connection fails.
    idempotent: bool,
    pool: Arc<Pool>,
    fingerprint: Option<Fingerprint>,
    body: Framing,
    meta: Meta,
}

/// What is kept of the request head once its buffer is reused.
struct Meta {
    /// The client sent `Connection: close`.
    close: bool,
    /// A `HEAD` request (its response has no body).
    head: bool,
    /// Method and path, copied only when the access log is on.
    logged: Option<(String, String)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Next {
    KeepAlive,
    Close,
}

/// A hop-by-hop field (RFC 9110 §7.6.1): the hyper path's list
/// ([`crate::proxy::HOP_BY_HOP`]) plus `Upgrade`, which this path never
/// relays. Dropped both ways.
fn is_hop_by_hop(name: &[u8]) -> bool {
    name.eq_ignore_ascii_case(b"upgrade")
        || crate::proxy::HOP_BY_HOP
            .iter()
            .any(|h| name.eq_ignore_ascii_case(h.as_str().as_bytes()))
}

/// Request fields the gateway writes itself (the client's values are
/// replaced, or joined into ours).
const SET_BY_GATEWAY: [&str; 5] = [
    "host",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "via",
];

/// Framing fields, never dropped because `Connection` names them: the
/// relay depends on them.
fn is_framing(name: &[u8]) -> bool {
    name.eq_ignore_ascii_case(b"content-length")
        || name.eq_ignore_ascii_case(b"transfer-encoding")
        || name.eq_ignore_ascii_case(b"host")
}

/// Target bytes taken as they are: RFC 3986 unreserved, sub-delims, `:`,
/// `@`, `/`, `?` and `%`. Anything else (spaces, quotes, braces, non-ASCII,
/// `#`) goes to hyper, which decides.
fn plain_target(target: &str) -> bool {
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
async fn plan(
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
    if form && !body.is_done() && rt.settings().raw.tokens.form_body_limit > 0 {
        return Plan::Handover;
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let meta = Meta {
        close,
        head: method == "HEAD",
        logged: rt
            .settings()
            .raw
            .log
            .access_log
            .then(|| (method.to_owned(), path.to_owned())),
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
    let refuse = |refusal, route, body, meta| {
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
        // method in the vendor's format) are the hyper path's.
        Ok(
            Routed::RevokeCall { .. }
            | Routed::Ordinary {
                revoke_path: Some(_),
                ..
            },
        ) => return Plan::Handover,
        Ok(Routed::Ordinary { route, .. }) => route,
    };
    // 2. upstreams this path does not speak to
    let Some(pool) = rt.pool(index) else {
        return Plan::Handover;
    };
    // 3. verdict
    let fingerprint = match admission::judge(rt, &**gw.store(), &head, None).await {
        Ok(fp) => fp,
        Err(refusal) => return refuse(refusal, Some(index), body, meta),
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
    for f in fields {
        let name = f.name.as_bytes();
        let dropped = is_hop_by_hop(name)
            || SET_BY_GATEWAY
                .iter()
                .any(|d| name.eq_ignore_ascii_case(d.as_bytes()))
            || (!is_framing(name) && named.iter().any(|n| name.eq_ignore_ascii_case(n)));
        if !dropped {
            push_field(out, name, f.value);
        }
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
    push_joined(out, fields, "via", b"1.1 revgate");
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

fn push_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// `name: <every earlier value, comma-joined>, <ours>`.
fn push_joined(out: &mut Vec<u8>, fields: &[httparse::Header<'_>], name: &str, ours: &[u8]) {
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

/// What the upstream's response head said, once rewritten into `out`.
struct ResponseHead {
    status: u16,
    body: Framing,
    /// The upstream connection can carry another request afterwards.
    reusable: bool,
    /// The client connection is closed after this response (its request
    /// body was not read to the end).
    close_client: bool,
}

/// Why an exchange with the upstream failed before the client saw anything.
enum ExchangeError {
    Connect(ConnectError),
    /// The upstream closed, reset or failed before a response head.
    Unavailable(String),
    /// No response head within the response-header timeout.
    TimedOut,
    /// The client's body broke off or was malformed: close without answering
    /// more than 400.
    ClientBody,
    /// The client stopped sending its body: 408, then close.
    ClientStalled,
}

struct Conn<IO> {
    io: IO,
    /// Client bytes read and not yet used.
    buf: Vec<u8>,
    /// Upstream bytes read and not yet relayed.
    ubuf: Vec<u8>,
    /// A head being written.
    out: Vec<u8>,
    peer: ClientConn,
    limits: Limits,
    head_timer: Deadline,
    response_timer: Deadline,
    /// When an idle connection gives its buffers back.
    idle_timer: Deadline,
}

impl<IO: AsyncRead + AsyncWrite + Unpin + Send> Conn<IO> {
    fn handover(self) -> End<IO> {
        // A copy of just the bytes read: the buffer's whole capacity would
        // otherwise stay with the connection for as long as hyper serves it.
        End::Handover(self.io, Bytes::copy_from_slice(&self.buf))
    }

    async fn answer(&mut self, rt: &Runtime, a: Answer, head_len: usize, start: Instant) -> Next {
        self.buf.drain(..head_len);
        let mut body = a.body;
        let may_discard = match &body {
            Framing::Done | Framing::Chunked(_) => true,
            Framing::Length(n) => *n <= DISCARD_LIMIT,
            Framing::UntilClose => false,
        };
        let close = a.meta.close || !may_discard || a.refusal.closes();
        let response = a.refusal.response();
        write_response(&mut self.out, &response, close, a.meta.head);
        let written = self.io.write_all(&self.out).await.is_ok();
        let written = written && (close || self.discard(&mut body).await);
        account(
            rt,
            self.peer,
            start,
            &a.meta,
            response.status().as_u16(),
            a.route,
            a.refusal.outcome(),
            None,
            a.fingerprint.or(a.refusal.fingerprint()).as_ref(),
        );
        if close || !written {
            Next::Close
        } else {
            Next::KeepAlive
        }
    }

    /// Reads and drops the rest of a request body the gateway answered
    /// without forwarding, up to [`DISCARD_LIMIT`] bytes and within the
    /// header timeout; false when that fails (the connection is closed).
    async fn discard(&mut self, body: &mut Framing) -> bool {
        let mut budget = DISCARD_LIMIT;
        self.head_timer
            .set(Instant::now() + self.limits.header_read_timeout);
        while !body.is_done() {
            if self.buf.is_empty() {
                self.buf.reserve(RELAY_CHUNK);
                let read = tokio::select! {
                    biased;
                    r = self.io.read_buf(&mut self.buf) => r,
                    _ = self.head_timer.wait() => return false,
                };
                if !matches!(read, Ok(n) if n > 0) {
                    return false;
                }
            }
            let Ok(k) = body.take(&self.buf) else {
                return false;
            };
            let Some(left) = budget.checked_sub(k as u64) else {
                return false;
            };
            budget = left;
            self.buf.drain(..k);
        }
        true
    }

    async fn forward(&mut self, rt: &Runtime, f: Forward, head_len: usize, start: Instant) -> Next {
        let Forward {
            route,
            idempotent,
            pool,
            fingerprint,
            mut body,
            meta,
        } = f;
        self.buf.drain(..head_len);
        // The body bytes already read go out with the head.
        let first = match body.take_request(&self.buf) {
            Ok(t) => t,
            Err(_) => {
                // Past a malformed chunk nothing can be read: it closes.
                let a = Answer {
                    refusal: bad_body(),
                    route: Some(route),
                    fingerprint,
                    body,
                    meta,
                };
                return self.answer(rt, a, 0, start).await;
            }
        };
        self.out.extend_from_slice(&self.buf[..first.keep]);
        self.out.extend_from_slice(first.end);
        self.buf.drain(..first.consumed);

        let sent = Instant::now();
        let (mut up, head) = match self
            .exchange(rt, &pool, &mut body, &meta, idempotent, sent)
            .await
        {
            Ok(x) => x,
            Err(e) => {
                let refusal = match e {
                    ExchangeError::Connect(ConnectError::TimedOut(_)) | ExchangeError::TimedOut => {
                        Refusal::UpstreamTimeout
                    }
                    ExchangeError::Connect(e) => Refusal::UpstreamUnavailable(e.to_string()),
                    ExchangeError::Unavailable(e) => Refusal::UpstreamUnavailable(e),
                    ExchangeError::ClientBody => bad_body(),
                    ExchangeError::ClientStalled => Refusal::ClientTimeout,
                };
                // The one log line of this path's upstream failures.
                if refusal.outcome() == Outcome::UpstreamError {
                    if let Some(suppressed) = rt.warnings.upstream.admit() {
                        tracing::warn!(error = %refusal, route = %rt.settings().routes[route].name, suppressed, "upstream error");
                    }
                }
                let a = Answer {
                    refusal,
                    route: Some(route),
                    fingerprint,
                    body,
                    meta,
                };
                return self.answer(rt, a, 0, start).await;
            }
        };
        let upstream_time = sent.elapsed();
        let ResponseHead {
            status,
            body: mut rbody,
            mut reusable,
            close_client,
        } = head;
        // `out` holds the client's response head and the body bytes that
        // came with it. A body without a length is sent on chunked.
        let rechunk = matches!(rbody, Framing::UntilClose);
        let mut ok = self.io.write_all(&self.out).await.is_ok();
        if ok && !rbody.is_done() {
            let mut stall = Stall {
                timer: &mut self.response_timer,
                limit: self.limits.body_idle_timeout,
            };
            ok = if rechunk {
                relay_rechunked(
                    &mut self.ubuf,
                    &mut up,
                    &mut self.io,
                    &mut self.out,
                    &mut stall,
                )
                .await
            } else {
                relay(
                    &mut rbody,
                    false,
                    &mut self.ubuf,
                    &mut up,
                    &mut self.io,
                    &mut stall,
                )
                .await
                .is_ok()
            };
        }
        reusable &= ok && self.ubuf.is_empty();
        if reusable {
            pool.put(up, sent);
        }
        account(
            rt,
            self.peer,
            start,
            &meta,
            status,
            Some(route),
            Outcome::Forwarded,
            Some(upstream_time),
            fingerprint.as_ref(),
        );
        if !ok || meta.close || close_client {
            Next::Close
        } else {
            Next::KeepAlive
        }
    }

    /// Sends `out` (the request head and the body bytes already read) and
    /// the rest of the body, and reads the response head into `out`. A
    /// pooled connection that fails before any response byte is replaced by
    /// a fresh one and the request sent again, when the method is idempotent
    /// and nothing of the body had to be streamed (the whole request is
    /// still in `out`).
    async fn exchange(
        &mut self,
        rt: &Runtime,
        pool: &Pool,
        body: &mut Framing,
        meta: &Meta,
        idempotent: bool,
        sent: Instant,
    ) -> Result<(TcpStream, ResponseHead), ExchangeError> {
        let streamed = !body.is_done();
        let replayable = idempotent && !streamed;
        let mut request = std::mem::take(&mut self.out);
        let mut fresh = false;
        let result = loop {
            let mut up = match (fresh, pool.take(sent)) {
                (false, Some(c)) => c,
                _ => {
                    fresh = true;
                    match pool.connect().await {
                        Ok(c) => c,
                        Err(e) => break Err(ExchangeError::Connect(e)),
                    }
                }
            };
            let retry = replayable && !fresh;
            if let Err(e) = up.write_all(&request).await {
                if retry {
                    fresh = true;
                    continue;
                }
                break Err(ExchangeError::Unavailable(format!("write: {e}")));
            }
            // While the body streams, the upstream may answer early (a 413,
            // a 401) and stop reading: then stop sending and relay its
            // answer; the rest of the body is never sent, so neither
            // connection can carry another request.
            let mut cut_short = false;
            if !body.is_done() {
                let (mut rd, mut wr) = up.split();
                let mut one = [0u8; 1];
                let mut stall = Stall {
                    timer: &mut self.head_timer,
                    limit: self.limits.body_idle_timeout,
                };
                let relayed = tokio::select! {
                    biased;
                    _ = rd.peek(&mut one) => None,
                    r = relay(body, true, &mut self.buf, &mut self.io, &mut wr, &mut stall) => Some(r),
                };
                match relayed {
                    Some(Ok(())) => {}
                    // It answered, or stopped reading and may have answered
                    // (then closed): look for the answer.
                    None | Some(Err(RelayError::Write)) => cut_short = true,
                    Some(Err(RelayError::ReadStalled)) => break Err(ExchangeError::ClientStalled),
                    Some(Err(_)) => break Err(ExchangeError::ClientBody),
                }
            }
            let timeout = rt.settings().raw.upstream.response_header_timeout;
            let body_sent = if streamed { Instant::now() } else { sent };
            self.response_timer.set(body_sent + timeout);
            match self
                .response_head(&mut up, &mut request, meta.head, cut_short || meta.close)
                .await
            {
                Ok(mut head) => {
                    if cut_short {
                        head.reusable = false;
                        head.close_client = true;
                    }
                    break Ok((up, head));
                }
                Err(HeadError::Closed(_)) if retry => {
                    fresh = true;
                    continue;
                }
                Err(HeadError::Closed(e)) | Err(HeadError::Invalid(e)) => {
                    break Err(ExchangeError::Unavailable(e))
                }
                Err(HeadError::TimedOut) => break Err(ExchangeError::TimedOut),
            }
        };
        // `request` now holds the response head (or is spare): keep its
        // allocation for the next request.
        self.out = request;
        result
    }

    /// Reads the upstream's response head, skipping `100 Continue` and
    /// passing other 1xx heads to the client, and writes the client's
    /// response head into `out` followed by the body bytes that came with it.
    async fn response_head(
        &mut self,
        up: &mut TcpStream,
        out: &mut Vec<u8>,
        head_request: bool,
        close_client: bool,
    ) -> Result<ResponseHead, HeadError> {
        self.ubuf.clear();
        // Whether any byte came back: only a connection that answered
        // nothing at all may be retried.
        let mut received = false;
        loop {
            let mut fields = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
            let mut resp = httparse::Response::new(&mut []);
            let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
                &mut resp,
                &self.ubuf,
                &mut fields,
            );
            match parsed {
                Ok(httparse::Status::Complete(n)) => {
                    let code = resp.code.unwrap_or(0);
                    if (100..200).contains(&code) {
                        if code == 101 {
                            return Err(HeadError::Invalid("101 without an upgrade".into()));
                        }
                        if code != 100 {
                            rewrite_response(out, &resp, &Framing::Done, false);
                            if self.io.write_all(out).await.is_err() {
                                return Err(HeadError::Invalid("client gone".into()));
                            }
                        }
                        self.ubuf.drain(..n);
                        continue;
                    }
                    let mut head = inspect_response(&resp, head_request)?;
                    rewrite_response(out, &resp, &head.body, close_client);
                    if matches!(head.body, Framing::UntilClose) {
                        // Relayed chunked: the rest of the buffer is body.
                        push_chunk(out, &self.ubuf[n..]);
                        self.ubuf.clear();
                        return Ok(head);
                    }
                    let k = head
                        .body
                        .take(&self.ubuf[n..])
                        .map_err(|_| HeadError::Invalid("malformed chunked body".into()))?;
                    out.extend_from_slice(&self.ubuf[n..n + k]);
                    self.ubuf.drain(..n + k);
                    return Ok(head);
                }
                Ok(httparse::Status::Partial) => {}
                Err(e) => return Err(HeadError::Invalid(format!("response head: {e}"))),
            }
            if self.ubuf.len() >= MAX_RESPONSE_HEAD {
                return Err(HeadError::Invalid("response head too large".into()));
            }
            if self.ubuf.capacity() - self.ubuf.len() < 1024 {
                self.ubuf.reserve(INITIAL_BUFFER);
            }
            let read = tokio::select! {
                biased;
                r = up.read_buf(&mut self.ubuf) => r,
                _ = self.response_timer.wait() => return Err(HeadError::TimedOut),
            };
            match read {
                Ok(0) if !received => {
                    return Err(HeadError::Closed("closed before a response".into()))
                }
                Ok(0) => return Err(HeadError::Invalid("closed inside a response head".into())),
                Ok(_) => received = true,
                Err(e) if !received => return Err(HeadError::Closed(e.to_string())),
                Err(e) => return Err(HeadError::Invalid(e.to_string())),
            }
        }
    }
}

enum HeadError {
    /// Closed or reset before any byte of a response (a stale connection).
    Closed(String),
    /// Garbage, or a response this path refuses to relay.
    Invalid(String),
    TimedOut,
}

/// Checks the framing of an upstream response head.
fn inspect_response(
    resp: &httparse::Response<'_, '_>,
    head_request: bool,
) -> Result<ResponseHead, HeadError> {
    let code = resp.code.unwrap_or(0);
    let mut length = None;
    let mut lengths = 0;
    let mut codings = 0;
    let mut chunked = false;
    let mut close = resp.version != Some(1);
    for f in resp.headers.iter() {
        let name = f.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            lengths += 1;
            length = content_length(f.value);
            if length.is_none() {
                return Err(HeadError::Invalid("bad Content-Length".into()));
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            codings += 1;
            chunked = is_chunked(f.value);
        } else if name.eq_ignore_ascii_case(b"connection") {
            close |= tokens(f.value).any(|t| t.eq_ignore_ascii_case(b"close"));
        }
    }
    if lengths > 1 || codings > 1 || (codings == 1 && (!chunked || lengths > 0)) {
        return Err(HeadError::Invalid(
            "conflicting or unsupported response framing".into(),
        ));
    }
    let body = if head_request || code == 204 || code == 304 {
        Framing::Done
    } else if chunked {
        Framing::Chunked(Chunks::default())
    } else {
        match length {
            Some(0) => Framing::Done,
            Some(n) => Framing::Length(n),
            None => Framing::UntilClose,
        }
    };
    let reusable = !close && !matches!(body, Framing::UntilClose);
    Ok(ResponseHead {
        status: code,
        body,
        reusable,
        close_client: false,
    })
}

/// Writes the client's response head: the upstream's status and fields,
/// hop-by-hop fields (and those its `Connection` names) removed, `Via`
/// appended to, `Transfer-Encoding: chunked` when the body is relayed
/// chunked (as it came, or re-framed from a body that ran until close), and
/// `Connection: close` when `close`.
fn rewrite_response(
    out: &mut Vec<u8>,
    resp: &httparse::Response<'_, '_>,
    body: &Framing,
    close: bool,
) {
    let code = resp.code.unwrap_or(502);
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa3(code).as_slice());
    out.push(b' ');
    out.extend_from_slice(resp.reason.unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let fields: &[httparse::Header<'_>] = resp.headers;
    let connection = fields
        .iter()
        .any(|f| f.name.eq_ignore_ascii_case("connection"));
    let mut chunked = false;
    for f in fields {
        let name = f.name.as_bytes();
        if name.eq_ignore_ascii_case(b"transfer-encoding") {
            chunked = true;
        }
        // `Via` is joined into ours below.
        let dropped = is_hop_by_hop(name)
            || name.eq_ignore_ascii_case(b"via")
            || (connection && !is_framing(name) && names_field(fields, name));
        if !dropped {
            push_field(out, name, f.value);
        }
    }
    push_joined(out, fields, "via", b"1.1 revgate");
    let chunked = match body {
        Framing::Chunked(_) | Framing::UntilClose => true,
        // HEAD, 204, 304: the fields describe the body not sent.
        Framing::Done => chunked,
        Framing::Length(_) => false,
    };
    if chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Whether a `Connection` field among `fields` names `name`.
fn names_field(fields: &[httparse::Header<'_>], name: &[u8]) -> bool {
    fields
        .iter()
        .filter(|f| f.name.eq_ignore_ascii_case("connection"))
        .any(|f| tokens(f.value).any(|t| t.eq_ignore_ascii_case(name)))
}

fn itoa3(code: u16) -> [u8; 3] {
    let c = code.min(999);
    [
        b'0' + (c / 100) as u8,
        b'0' + (c / 10 % 10) as u8,
        b'0' + (c % 10) as u8,
    ]
}

/// A gateway-made response, serialised with its length (no body for HEAD).
fn write_response(out: &mut Vec<u8>, resp: &Response<Bytes>, close: bool, head: bool) {
    let status = resp.status();
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    // `Connection` is this hop's: written below from `close` alone.
    for (name, value) in resp.headers() {
        if name != http::header::CONNECTION {
            push_field(out, name.as_str().as_bytes(), value.as_bytes());
        }
    }
    let mut len = itoa::Buffer::new();
    push_field(
        out,
        b"content-length",
        len.format(resp.body().len()).as_bytes(),
    );
    push_field(out, b"date", date::now().as_bytes());
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head {
        out.extend_from_slice(resp.body());
    }
}

fn bad_body() -> Refusal {
    Refusal::ClientBody("malformed or incomplete request body".into())
}

#[allow(clippy::too_many_arguments)]
fn account(
    rt: &Runtime,
    peer: ClientConn,
    start: Instant,
    meta: &Meta,
    status: u16,
    route: Option<usize>,
    outcome: Outcome,
    upstream_time: Option<Duration>,
    fingerprint: Option<&Fingerprint>,
) {
    rt.account(&Finished {
        start,
        logged: meta.logged.as_ref().map(|(m, p)| (m.as_str(), p.as_str())),
        version: http::Version::HTTP_11,
        status,
        route,
        outcome,
        upstream_time,
        fingerprint,
        peer: peer.addr,
    });
}

#[derive(Debug)]
enum RelayError {
    /// The source failed or closed before the body ended.
    Read,
    /// The source sent nothing for the body idle timeout.
    ReadStalled,
    /// The body's framing is broken.
    Framing,
    /// The destination failed, or took nothing for the body idle timeout.
    Write,
}

/// How long a body relay may make no progress, on a connection's timer.
struct Stall<'a> {
    timer: &'a mut Deadline,
    limit: Duration,
}

impl Stall<'_> {
    /// `f`, or `None` once it has made no progress for the limit.
    async fn bound<T>(&mut self, f: impl std::future::Future<Output = T>) -> Option<T> {
        self.timer.set(Instant::now() + self.limit);
        tokio::select! {
            biased;
            r = f => Some(r),
            _ = self.timer.wait() => None,
        }
    }
}

/// Relays the rest of a body from `src` to `dst`. `buf` holds bytes already
/// read from `src` and, on return, those read past the body's end. A
/// request body (`request`) loses its trailer section on the way
/// ([`Framing::take_request`]).
async fn relay<R, W>(
    body: &mut Framing,
    request: bool,
    buf: &mut Vec<u8>,
    src: &mut R,
    dst: &mut W,
    stall: &mut Stall<'_>,
) -> Result<(), RelayError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    while !body.is_done() {
        if buf.is_empty() {
            buf.reserve(RELAY_CHUNK);
            match stall.bound(src.read_buf(buf)).await {
                None => return Err(RelayError::ReadStalled),
                Some(Ok(0)) if matches!(body, Framing::UntilClose) => {
                    *body = Framing::Done;
                    break;
                }
                Some(Ok(0) | Err(_)) => return Err(RelayError::Read),
                Some(Ok(_)) => {}
            }
        }
        let t = if request {
            body.take_request(buf)
        } else {
            body.take(buf).map(|n| framing::Taken {
                consumed: n,
                keep: n,
                end: b"",
            })
        }
        .map_err(|_| RelayError::Framing)?;
        for part in [&buf[..t.keep], t.end] {
            if part.is_empty() {
                continue;
            }
            match stall.bound(dst.write_all(part)).await {
                Some(Ok(())) => {}
                None | Some(Err(_)) => return Err(RelayError::Write),
            }
        }
        buf.drain(..t.consumed);
    }
    Ok(())
}

/// Appends `data` as one chunk (nothing when empty: an empty chunk would
/// end the body).
fn push_chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    use std::io::Write as _;
    let _ = write!(out, "{:x}\r\n", data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// Relays a body that runs until `src` closes, re-framed as chunks, then
/// the last chunk. `scratch` is reused for each framed piece.
async fn relay_rechunked<R, W>(
    buf: &mut Vec<u8>,
    src: &mut R,
    dst: &mut W,
    scratch: &mut Vec<u8>,
    stall: &mut Stall<'_>,
) -> bool
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    loop {
        buf.clear();
        buf.reserve(RELAY_CHUNK);
        scratch.clear();
        match stall.bound(src.read_buf(buf)).await {
            Some(Ok(0)) => {
                return matches!(stall.bound(dst.write_all(b"0\r\n\r\n")).await, Some(Ok(())));
            }
            // The upstream broke off or stalled: the client must not take
            // the cut body for a whole one, so no last chunk.
            None | Some(Err(_)) => return false,
            Some(Ok(_)) => {}
        }
        push_chunk(scratch, buf);
        if !matches!(stall.bound(dst.write_all(scratch)).await, Some(Ok(()))) {
            return false;
        }
    }
}

/// A per-connection timer re-armed lazily: moving the deadline later is a
/// store; the tokio timer is reset only when it fires before the current
/// deadline, about once per timeout period instead of once per request.
struct Deadline {
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
    at: Instant,
}

impl Deadline {
    fn new() -> Self {
        let far = Instant::now() + Duration::from_secs(365 * 24 * 3600);
        Deadline {
            sleep: Box::pin(tokio::time::sleep_until(far.into())),
            at: far,
        }
    }

    fn set(&mut self, at: Instant) {
        self.at = at;
        if at < self.sleep.deadline().into_std() {
            self.sleep.as_mut().reset(at.into());
        }
    }

    /// Completes once the current deadline has passed.
    async fn wait(&mut self) {
        loop {
            self.sleep.as_mut().await;
            if Instant::now() >= self.at {
                return;
            }
            let at = self.at;
            self.sleep.as_mut().reset(at.into());
        }
    }
}

/// The `Date` value for gateway-made responses, formatted once a second
/// per thread.
mod date {
    use std::cell::RefCell;
    use std::time::SystemTime;

    thread_local! {
        static CACHE: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
    }

    pub fn now() -> String {
        let t = SystemTime::now();
        let secs = t
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        CACHE.with(|c| {
            let mut c = c.borrow_mut();
            if c.0 != secs || c.1.is_empty() {
                *c = (secs, httpdate::fmt_http_date(t));
            }
            c.1.clone()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_response(raw: &[u8]) -> (Vec<u8>, Result<ResponseHead, HeadError>) {
        let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut fields);
        assert!(resp.parse(raw).unwrap().is_complete());
        let head = inspect_response(&resp, false);
        let mut out = Vec::new();
        if let Ok(h) = &head {
            rewrite_response(&mut out, &resp, &h.body, false);
        }
        (out, head)
    }

    #[test]
    fn response_heads_lose_hop_by_hop_fields_and_gain_via() {
        let (out, head) = parse_response(
            b"HTTP/1.1 200 OK\r\nConnection: x-hop, keep-alive\r\nx-hop: 1\r\nKeep-Alive: timeout=5\r\n\
              Content-Length: 2\r\nVia: 1.1 edge\r\nX-Keep: yes\r\n\r\n",
        );
        let head = head.ok().unwrap();
        assert_eq!(head.body, Framing::Length(2));
        assert!(head.reusable);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Keep: yes\r\nvia: 1.1 edge, 1.1 revgate\r\n\r\n"
        );
    }

    #[test]
    fn response_framing_is_checked() {
        let (out, head) = parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert!(matches!(head.ok().unwrap().body, Framing::Chunked(_)));
        assert!(String::from_utf8(out)
            .unwrap()
            .contains("transfer-encoding: chunked\r\n"));
        let (out, head) = parse_response(b"HTTP/1.1 200 OK\r\nServer: x\r\n\r\n");
        let head = head.ok().unwrap();
        assert_eq!(head.body, Framing::UntilClose);
        assert!(!head.reusable);
        assert!(String::from_utf8(out)
            .unwrap()
            .ends_with("transfer-encoding: chunked\r\n\r\n"));
        for bad in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        ] {
            assert!(matches!(parse_response(bad).1, Err(HeadError::Invalid(_))));
        }
        let (_, head) = parse_response(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n");
        assert_eq!(head.ok().unwrap().body, Framing::Done);
        let (_, head) = parse_response(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n");
        assert!(!head.ok().unwrap().reusable);
    }

    #[test]
    fn only_plain_origin_form_targets_are_taken() {
        assert!(plain_target("/a/b?x=1&access_token=abc%2F"));
        assert!(!plain_target("*"));
        assert!(!plain_target("http://example/x"));
        assert!(!plain_target("/a b"));
        assert!(!plain_target("/a\"b"));
        assert!(!plain_target("/a#frag"));
        assert!(!plain_target("/caf\u{e9}"));
    }

    #[test]
    fn gateway_responses_carry_length_date_and_close() {
        use crate::verdict;
        let mut out = Vec::new();
        write_response(&mut out, &verdict::revoked(), true, false);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 401 Unauthorized\r\n"));
        assert!(text.contains(&format!(
            "content-length: {}\r\n",
            verdict::REVOKED_BODY.len()
        )));
        assert!(text.contains("\r\ndate: "));
        assert!(text.contains("connection: close\r\n"));
        assert!(text.ends_with(&format!("\r\n\r\n{}", verdict::REVOKED_BODY)));
    }
}
