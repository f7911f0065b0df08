//! One client connection's state on the fast path while it is busy, and an
//! exchange: answer a refusal, or forward to a pooled upstream connection and
//! relay both ways; every request accounted once.

use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::framing::Framing;
use super::pool::{ConnectError, Pool};
#[allow(clippy::wildcard_imports)]
use super::*;
use crate::credentials::Fingerprint;
use crate::proxy::{ClientConn, Finished, Outcome, Runtime};
use crate::refusal::Refusal;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Next {
    KeepAlive,
    Close,
}

/// Why an exchange with the upstream failed before the client saw anything.
pub(super) enum ExchangeError {
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

pub(super) struct Conn<IO> {
    pub(super) io: IO,
    /// Client bytes read and not yet used.
    pub(super) buf: Vec<u8>,
    /// Upstream bytes read and not yet relayed.
    pub(super) ubuf: Vec<u8>,
    /// A head being written.
    pub(super) out: Vec<u8>,
    pub(super) peer: ClientConn,
    pub(super) limits: Limits,
    pub(super) head_timer: Deadline,
    pub(super) response_timer: Deadline,
    /// When an idle connection gives its buffers back.
    pub(super) idle_timer: Deadline,
}

impl<IO: AsyncRead + AsyncWrite + Unpin + Send> Conn<IO> {
    pub(super) fn handover(self) -> End<IO> {
        // A copy of just the bytes read: the buffer's whole capacity would
        // otherwise stay with the connection for as long as hyper serves it.
        End::Handover(self.io, Bytes::copy_from_slice(&self.buf))
    }

    pub(super) async fn answer(
        &mut self,
        rt: &Runtime,
        mut a: Answer,
        head_len: usize,
        start: Instant,
    ) -> Next {
        self.buf.drain(..head_len);
        let mut body = a.body;
        let may_discard = discardable(&body);
        let close = a.meta.close || !may_discard || a.refusal.closes();
        let response = a.refusal.response();
        write_response(&mut self.out, &response, close, a.meta.head);
        let written = self.io.write_all(&self.out).await.is_ok();
        let written = written && (close || self.discard(&mut body).await);
        let sent = if a.meta.head {
            0
        } else {
            response.body().len()
        };
        account(
            rt,
            self.peer,
            start,
            &mut a.meta,
            (response.status().as_u16(), sent as u64),
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

    /// A built-in upstream's answer ([`crate::builtin`]): written at once,
    /// then the request's body read and dropped as for a refusal.
    pub(super) async fn local(
        &mut self,
        rt: &Runtime,
        mut l: Local,
        head_len: usize,
        start: Instant,
    ) -> Next {
        self.buf.drain(..head_len);
        let mut body = l.body;
        let may_discard = discardable(&body);
        let close = l.meta.close || !may_discard;
        let (status, len) = match &l.echo {
            Some(r) => {
                write_response(&mut self.out, r, close, l.meta.head);
                (r.status().as_u16(), r.body().len())
            }
            None => {
                write_ok(&mut self.out, close, l.meta.head);
                (200, crate::builtin::OK_BODY.len())
            }
        };
        let sent = if l.meta.head { 0 } else { len as u64 };
        let written = self.io.write_all(&self.out).await.is_ok();
        let written = written && (close || self.discard(&mut body).await);
        account(
            rt,
            self.peer,
            start,
            &mut l.meta,
            (status, sent),
            Some(l.route),
            Outcome::Forwarded,
            None,
            l.fingerprint.as_ref(),
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
    pub(super) async fn discard(&mut self, body: &mut Framing) -> bool {
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

    pub(super) async fn forward(
        &mut self,
        rt: &Runtime,
        f: Forward,
        head_len: usize,
        start: Instant,
    ) -> Next {
        let Forward {
            route,
            idempotent,
            pool,
            fingerprint,
            mut body,
            mut meta,
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
            length,
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
            pool.put(self.limits.pool_shard, up, sent);
        }
        account(
            rt,
            self.peer,
            start,
            &mut meta,
            (status, if ok { length.unwrap_or(0) } else { 0 }),
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
    pub(super) async fn exchange(
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
            let mut up = match (fresh, pool.take(self.limits.pool_shard, sent)) {
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
            let timeout = rt.settings().response_header_timeout();
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
    pub(super) async fn response_head(
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

/// `(status, body_bytes)`: the status sent and the access log's
/// `$body_bytes_sent`.
#[allow(clippy::too_many_arguments)]
pub(super) fn account(
    rt: &Runtime,
    peer: ClientConn,
    start: Instant,
    meta: &mut Meta,
    (status, body_bytes): (u16, u64),
    route: Option<usize>,
    outcome: Outcome,
    upstream_time: Option<Duration>,
    fingerprint: Option<&Fingerprint>,
) {
    rt.account(
        &Finished {
            start,
            logged: meta.logged.as_ref(),
            status,
            body_bytes,
            route,
            outcome,
            upstream_time,
            fingerprint,
            peer: peer.addr,
            request_id: meta.trace.id.as_ref(),
        },
        meta.trace.span.take(),
    );
}

/// Whether a request body the gateway answered without reading may be read
/// and dropped to keep the connection (short enough, and delimited).
fn discardable(body: &Framing) -> bool {
    match body {
        Framing::Done | Framing::Chunked(_) => true,
        Framing::Length(n) => *n <= DISCARD_LIMIT,
        Framing::UntilClose => false,
    }
}
