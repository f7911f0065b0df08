//! hyper's side of a client connection: whether it speaks h2c with prior
//! knowledge ([`sniff_h2`]), and HTTP/1.1 served by hyper with its idle
//! connections *parked* ([`hyper_h1`]): once nothing has moved and nothing
//! is in flight for [`crate::h1::IDLE_RELEASE`], hyper's connection (its
//! read and write buffers, its state) is ended without closing the socket,
//! and a new one is started on the next readable with any bytes hyper had
//! read but not used put back. That is what keeps an idle keep-alive
//! connection through hyper small (BENCHMARKS.md, idle connections).

#[allow(clippy::wildcard_imports)]
use super::*;

/// The HTTP/2 connection preface (RFC 9113 §3.4).
pub(super) const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads until `pre` and what follows show whether the client speaks h2c
/// with prior knowledge (as hyper-util's auto builder decides); `None` when
/// the connection closes or fails first, or sends nothing within
/// [`HEADER_READ_TIMEOUT`].
pub(super) async fn sniff_h2<IO>(mut io: IO, pre: Bytes) -> Option<(IO, Bytes, bool)>
where
    IO: AsyncRead + Unpin,
{
    use tokio::io::AsyncReadExt;
    let undecided = |b: &[u8]| b.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(b);
    if !undecided(&pre) {
        let h2 = pre.starts_with(H2_PREFACE);
        return Some((io, pre, h2));
    }
    let mut buf = Vec::with_capacity(H2_PREFACE.len());
    buf.extend_from_slice(&pre);
    let read = async {
        while undecided(&buf) {
            let mut more = [0u8; 24];
            let want = H2_PREFACE.len() - buf.len();
            match io.read(&mut more[..want]).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => buf.extend_from_slice(&more[..n]),
            }
        }
        true
    };
    match tokio::time::timeout(HEADER_READ_TIMEOUT, read).await {
        Ok(true) => {}
        _ => return None,
    }
    let h2 = buf.starts_with(H2_PREFACE);
    Some((io, Bytes::from(buf), h2))
}

/// Serves an HTTP/1 connection with hyper, parked while idle: once no
/// request is in flight and no byte has moved either way for
/// [`h1::IDLE_RELEASE`], hyper's connection (its 8-16 KiB read buffer, 8 KiB
/// write buffer and state) is ended without closing the socket
/// ([`graceful_shutdown`] of an idle HTTP/1 connection closes nothing
/// mid-message; its shutdown of the I/O is skipped), and the socket waits
/// for readability on its own; its next bytes start a new hyper
/// connection. Bytes hyper had read and not used are put back first (and
/// that connection is not parked again). The
/// idle time before and after parking is bounded by [`HEADER_READ_TIMEOUT`],
/// as hyper bounds it. An upgraded connection (WebSocket) is never parked.
///
/// [`graceful_shutdown`]: hyper::server::conn::http1::UpgradeableConnection::graceful_shutdown
pub(super) async fn hyper_h1<IO>(shared: &Arc<Shared>, io: IO, pre: Bytes, conn: ClientConn)
where
    IO: AsyncRead + AsyncWrite + h1::Readiness + Unpin + Send + 'static,
{
    let (mut io, mut pre) = (io, pre);
    // A connection that resumes from parking with bytes of a head hyper
    // had read is not parked again: each new hyper connection restarts the
    // header timeout, and a client trickling a head could otherwise hold
    // the connection for ever.
    let mut may_park = true;
    loop {
        let quiet = Arc::new(Quiet::default());
        let gw = shared.gateway.clone();
        let q = quiet.clone();
        let service = service_fn(move |req| {
            let flight = InFlight::new(&q);
            let gw = gw.clone();
            Box::pin(async move {
                let resp = gw.handle(req, conn).await?;
                Ok::<_, std::convert::Infallible>(resp.map(|inner| Tracked {
                    inner,
                    _flight: flight,
                }))
            })
        });
        let wrapped = QuietIo {
            inner: Rewind::new(io, pre),
            quiet: quiet.clone(),
        };
        let mut c = Box::pin(
            shared
                .http1
                .serve_connection(TokioIo::new(wrapped), service)
                .with_upgrades(),
        );
        let ended = tokio::select! {
            r = c.as_mut() => Some(r),
            _ = shared.drain.cancelled() => {
                c.as_mut().graceful_shutdown();
                None
            }
            _ = quiet.settled(h1::IDLE_RELEASE), if may_park => {
                quiet.parking.store(true, Ordering::Relaxed);
                c.as_mut().graceful_shutdown();
                match c.as_mut().await {
                    Ok(()) => Some(Ok(())),
                    Err(e) => Some(Err(e)),
                }
            }
        };
        let parking = match ended {
            None => {
                if let Err(e) = c.await {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            Some(Err(e)) => {
                tracing::debug!(error = %e, "connection ended with an error");
                return;
            }
            Some(Ok(())) => quiet.parking.load(Ordering::Relaxed),
        };
        // Closed by the client or by hyper (`Connection: close`), or
        // upgraded: nothing to park.
        if !parking {
            return;
        }
        // In a block of its own, so that what is left of hyper's connection
        // (its read buffer, even when empty, and the service) is freed
        // before the wait below: a parked connection holds only its socket.
        let (back, rest) = {
            let Some(parts) = Pin::into_inner(c).into_parts() else {
                return;
            };
            let (back, rest) = parts.io.into_inner().inner.into_parts();
            let rest = match (parts.read_buf.is_empty(), rest.is_empty()) {
                (true, _) => rest,
                (false, true) => parts.read_buf,
                (false, false) => {
                    let mut b = bytes::BytesMut::from(&parts.read_buf[..]);
                    b.extend_from_slice(&rest);
                    b.freeze()
                }
            };
            (back, rest)
        };
        io = back;
        // An empty remainder may still own a buffer: use a fresh one.
        pre = if rest.is_empty() { Bytes::new() } else { rest };
        may_park = pre.is_empty();
        if pre.is_empty() {
            let woke = tokio::select! {
                biased;
                r = std::future::poll_fn(|cx| io.poll_read_ready(cx)) => r.is_ok(),
                _ = shared.drain.cancelled() => false,
                _ = tokio::time::sleep(HEADER_READ_TIMEOUT.saturating_sub(h1::IDLE_RELEASE)) => false,
            };
            if !woke {
                return;
            }
        }
    }
}

/// What a parkable hyper connection's I/O, service and park timer share.
#[derive(Default)]
pub(super) struct Quiet {
    /// Requests answered or being answered whose response body is not done.
    in_flight: AtomicUsize,
    /// Something moved (a byte either way, a write waiting, a request)
    /// since the park timer last looked.
    moved: AtomicBool,
    /// Set when hyper is ended to park: its shutdown of the I/O is skipped.
    parking: AtomicBool,
}

impl Quiet {
    fn touch(&self) {
        self.moved.store(true, Ordering::Relaxed);
    }

    /// Resolves once nothing has moved and nothing has been in flight for
    /// a whole `period` (looked at once per period: a busy connection costs
    /// one timer wake-up a period).
    async fn settled(&self, period: Duration) {
        loop {
            self.moved.store(false, Ordering::Relaxed);
            tokio::time::sleep(period).await;
            if !self.moved.load(Ordering::Relaxed) && self.in_flight.load(Ordering::Relaxed) == 0 {
                return;
            }
        }
    }
}

/// One request in flight on a parkable connection, until its response body
/// is dropped (sent, or abandoned).
pub(super) struct InFlight(Arc<Quiet>);

impl InFlight {
    fn new(q: &Arc<Quiet>) -> Self {
        q.in_flight.fetch_add(1, Ordering::Relaxed);
        q.touch();
        InFlight(q.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// A response body that keeps its request [`InFlight`].
pub(super) struct Tracked<B> {
    inner: B,
    _flight: InFlight,
}

impl<B: http_body::Body + Unpin> http_body::Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The I/O of a parkable connection: marks [`Quiet`] on every byte read or
/// written and on every write that has to wait, and skips the shutdown
/// when the connection is being parked.
pub(super) struct QuietIo<IO> {
    inner: IO,
    quiet: Arc<Quiet>,
}

impl<IO: AsyncRead + Unpin> AsyncRead for QuietIo<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.quiet.touch();
        }
        r
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for QuietIo<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.quiet.touch();
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.quiet.touch();
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.quiet.parking.load(Ordering::Relaxed) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
