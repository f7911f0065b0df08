//! Body relay on the fast path: bytes copied between the two sockets within
//! the body idle timeout, re-chunked when the upstream's body has no length.

use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::framing::Framing;
#[allow(clippy::wildcard_imports)]
use super::*;

#[derive(Debug)]
pub(super) enum RelayError {
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
pub(super) struct Stall<'a> {
    pub(super) timer: &'a mut Deadline,
    pub(super) limit: Duration,
}

impl Stall<'_> {
    /// `f`, or `None` once it has made no progress for the limit.
    pub(super) async fn bound<T>(&mut self, f: impl std::future::Future<Output = T>) -> Option<T> {
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
pub(super) async fn relay<R, W>(
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
pub(super) fn push_chunk(out: &mut Vec<u8>, data: &[u8]) {
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
pub(super) async fn relay_rechunked<R, W>(
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
pub(super) struct Deadline {
    pub(super) sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
    pub(super) at: Instant,
}

impl Deadline {
    /// A deadline that does not fire, made at `now` (the caller's clock
    /// read: a new connection makes three of these).
    pub(super) fn new(now: Instant) -> Self {
        let far = now + Duration::from_secs(365 * 24 * 3600);
        Deadline {
            sleep: Box::pin(tokio::time::sleep_until(far.into())),
            at: far,
        }
    }

    pub(super) fn set(&mut self, at: Instant) {
        self.at = at;
        if at < self.sleep.deadline().into_std() {
            self.sleep.as_mut().reset(at.into());
        }
    }

    /// Completes once the current deadline has passed.
    pub(super) async fn wait(&mut self) {
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
