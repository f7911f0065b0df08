//! The HTTP/1.1 fast path: plain keep-alive requests relayed by one task per
//! client connection, without hyper's per-request machinery.
//!
//! ```text
//! client bytes -> httparse head -> eligible? --no--> hand the connection to hyper
//!                                    | yes            (bytes put back: Rewind)
//!                                    v
//!                 route -> revoke path? (-> hyper) -> verdict: the admission
//!                 stages the hyper path shares (crate::admission); a Refusal
//!                 (401/400/404/503) answered here
//!                                    v
//!                 upstream head composed straight from the client's bytes
//!                 (hop-by-hop removed, X-Forwarded-*, Via) -> pooled upstream
//!                 connection -> response head rewritten -> bodies relayed as
//!                 they arrive, framed by Content-Length or a chunk scanner
//! ```
//!
//! Files: this one (the connection's idle and busy phases, hand-over),
//! `request.rs` (eligibility, admission, the upstream request head),
//! `conn.rs` (one exchange: answer or forward), `response.rs` (response
//! heads, the gateway's own answers), `relay.rs` (body relay), `framing.rs`,
//! `pool.rs`, `rewind.rs`.
//!
//! Why: behind hyper's server and hyper-util's pooled client, a proxied
//! request cost ~24 µs of CPU here against nginx's ~11 µs (BENCHMARKS.md):
//! two tasks per exchange, channels between them, a pool checkout future,
//! two timers, a `HeaderMap` built and re-serialised each way. This path
//! does one task, no channels, the client's header bytes copied once into
//! the upstream head, and two lazily re-armed timers per connection.
//!
//! What it takes: HTTP/1.1 requests with an origin-form target of plain URI
//! characters and a body framed by one valid
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

mod conn;
mod relay;
mod request;
mod response;

use conn::*;
use relay::*;
use request::*;
use response::*;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use self::framing::Framing;
use crate::proxy::{ClientConn, Gateway, Runtime};

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
    /// The shard of every upstream pool this connection's I/O thread uses
    /// (I/O thread `i` uses `i + 1`; [`pool::Pool`]).
    pub pool_shard: usize,
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
    let mut now = Instant::now();
    let mut head_timer = Deadline::new(now);
    // The runtime is re-read per request but only re-cloned after a reload
    // (a shared reference count touched per request costs cache misses).
    let mut rt = gateway.runtime();
    loop {
        if IO::PARKS {
            // The idle keep-alive time counts towards the next head's timeout.
            head_timer.set(now + limits.header_read_timeout);
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
        // Written into its box in place (an unstarted future is its
        // arguments; `Box::pin(busy(..))` built all 5.7 KB on the stack and
        // copied them, per busy phase).
        let busy = Box::into_pin(Box::write(
            Box::new_uninit(),
            busy(&gateway, &mut rt, io, peer, limits, &drain, head_timer),
        ));
        match busy.await {
            Phase::Idle(back, timer) => {
                io = back;
                head_timer = timer;
                now = Instant::now();
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
    // One clock read per request: this one serves the first.
    let mut now = Instant::now();
    let mut c = Conn {
        io,
        buf: Vec::with_capacity(INITIAL_BUFFER),
        ubuf: Vec::new(),
        out: Vec::with_capacity(1024),
        peer,
        limits,
        head_timer,
        response_timer: Deadline::new(now),
        idle_timer: Deadline::new(now),
    };
    loop {
        c.head_timer.set(now + limits.header_read_timeout);
        c.idle_timer.set(now + IDLE_RELEASE);
        let (plan, head_len, start) = match next_head(gateway, rt, &mut c, peer, ip, drain).await {
            Head::Planned(plan, head_len, start) => (plan, head_len, start),
            Head::Handover => return Phase::End(c.handover()),
            Head::Closed => return Phase::End(End::Closed),
            Head::Idle => return Phase::Idle(c.io, c.head_timer),
        };
        let next = match plan {
            Plan::Handover => return Phase::End(c.handover()),
            Plan::Answer(a) => c.answer(rt, a, head_len, start).await,
            Plan::Forward(f) => c.forward(rt, f, head_len, start).await,
            Plan::Local(l) => c.local(rt, l, head_len, start).await,
        };
        if next == Next::Close || drain.is_cancelled() {
            if IO::SHUTDOWN_BEFORE_CLOSE {
                let _ = c.io.shutdown().await;
            }
            return Phase::End(End::Closed);
        }
        now = Instant::now();
    }
}

/// What reading a connection's next request head came to.
///
/// Returned by value once per head and moved straight into the busy phase;
/// boxing the plan would cost an allocation per request.
#[allow(clippy::large_enum_variant)]
enum Head {
    /// A whole head, planned: the plan, the head's length, when it was
    /// complete.
    Planned(Plan, usize, Instant),
    /// A head this path does not take (or not parseable): to hyper.
    Handover,
    /// The client closed, the header timer fired, or the drain began while
    /// no request was under way.
    Closed,
    /// Idle for [`IDLE_RELEASE`] with nothing read.
    Idle,
}

/// Reads until a whole request head is in `c.buf`, then plans the request
/// while its fields still borrow the buffer.
///
/// Its own future: the parsed fields (3.2 KB) are live across the plan's
/// await, and inlined in [`busy`] the compiler laid them beside the forward
/// exchange's state instead of over it, so that every busy phase's box was
/// 8.5 KB, copied in full at each `Box::pin` (a new connection's largest
/// user-space cost, issue 16).
async fn next_head<IO>(
    gateway: &Gateway,
    rt: &mut Arc<Runtime>,
    c: &mut Conn<IO>,
    peer: ClientConn,
    ip: &str,
    drain: &CancellationToken,
) -> Head
where
    IO: AsyncRead + AsyncWrite + Readiness + Unpin + Send,
{
    loop {
        // A block, so that the fields are not kept across the read below.
        {
            let mut fields = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
            let mut req = httparse::Request::new(&mut []);
            match req.parse_with_uninit_headers(&c.buf, &mut fields) {
                Ok(httparse::Status::Complete(n)) => {
                    let start = Instant::now();
                    // Checked once the request is here: a reload while this
                    // connection sat idle applies to it.
                    if let Some(newer) = gateway.runtime_if_changed(rt) {
                        *rt = newer;
                    }
                    let plan = plan(gateway, rt, &req, &mut c.out, peer, ip).await;
                    return Head::Planned(plan, n, start);
                }
                Ok(httparse::Status::Partial) => {}
                Err(_) => return Head::Handover,
            }
        }
        if c.buf.len() >= c.limits.max_header_bytes {
            return Head::Handover;
        }
        if c.buf.capacity() - c.buf.len() < 1024 {
            c.buf.reserve(INITIAL_BUFFER);
        }
        let idle = c.buf.is_empty();
        let read = tokio::select! {
            biased;
            r = c.io.read_buf(&mut c.buf) => r,
            _ = drain.cancelled(), if idle => return Head::Closed,
            _ = c.head_timer.wait() => return Head::Closed,
            _ = c.idle_timer.wait(), if idle && IO::PARKS => return Head::Idle,
        };
        match read {
            Ok(0) | Err(_) => return Head::Closed,
            Ok(_) => {}
        }
    }
}

/// An I/O object that can wait until a read would find something without
/// reading (and so without a buffer).
pub trait Readiness {
    /// Whether [`Readiness::poll_read_ready`] means anything for this type:
    /// when false, a connection keeps its buffers while idle.
    const PARKS: bool;
    /// Whether closing needs an explicit shutdown first: TLS sends its
    /// `close_notify` there; a TCP socket's close sends the FIN by itself
    /// (one system call fewer per closed connection, as nginx closes).
    const SHUTDOWN_BEFORE_CLOSE: bool;
    /// Ready when a read would return bytes, end of stream or an error
    /// (possibly spuriously: a read may then still wait).
    fn poll_read_ready(
        &self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>>;
}

impl Readiness for TcpStream {
    const PARKS: bool = true;
    const SHUTDOWN_BEFORE_CLOSE: bool = false;
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
    const SHUTDOWN_BEFORE_CLOSE: bool = true;
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
            Plan::Local(l) => ("local", Vec::new(), l.body, n),
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

    /// The fast path's response rewriting drops exactly what the shared
    /// classifier's table drops, and writes `Via` itself.
    #[test]
    fn response_heads_render_the_shared_table() {
        use crate::hygiene::{Direction, Fate, FIELD_TABLE};
        for &(name, dir, named, upgrade, fate) in FIELD_TABLE {
            // This path relays no upgrade, and frames bodies itself.
            if dir != Direction::Response
                || upgrade
                || name.eq_ignore_ascii_case("transfer-encoding")
                || name.eq_ignore_ascii_case("content-length")
            {
                continue;
            }
            let connection = if named && !name.eq_ignore_ascii_case("connection") {
                format!("Connection: {name}\r\n")
            } else {
                String::new()
            };
            let raw = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n{connection}{name}: marker-value\r\n\r\n"
            );
            let (out, head) = parse_response(raw.as_bytes());
            assert!(head.is_ok(), "{name}");
            let text = String::from_utf8(out).unwrap().to_ascii_lowercase();
            let kept = text.contains(&format!("{}: marker-value\r\n", name.to_ascii_lowercase()));
            assert_eq!(kept, fate == Fate::Keep, "{name} named={named}: {text}");
            assert!(text.contains("via: 1.1 revgate\r\n") || text.contains(", 1.1 revgate\r\n"));
        }
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
