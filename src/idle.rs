//! Bodies that give up when they make no progress: the hyper path's
//! counterpart of the fast path's `server.body_idle_timeout` (issue 10).
//!
//! A body relayed through hyper (a request body on its way upstream, a
//! revoke call's or form's body being read, an upstream's response body on
//! its way to the client) is wrapped in [`IdleBody`]: when no frame arrives
//! for the timeout, it ends with a [`BodyIdle`] error. hyper then resets the
//! HTTP/2 stream or closes the HTTP/1 connection, and a body being read for
//! judging is answered 408. Without it a client that sends 5 of its 100
//! promised bytes, or an upstream that stops mid-body, holds a connection
//! pair (and its memory) for as long as the peer likes.
//!
//! Upgraded connections (WebSocket) are spliced through [`Watched`] I/O
//! that marks one shared [`Activity`]: the splice ends when nothing has
//! moved either way for `server.upgrade_idle_timeout`.
//!
//! The deadline moves on each frame; the timer is re-armed only when it
//! fires before the current deadline (as the fast path's `Deadline` does),
//! so a busy body costs a clock read per frame, not a timer operation.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::proxy::BoxError;

/// The error an [`IdleBody`] ends with.
#[derive(Debug, thiserror::Error)]
#[error("body made no progress for {0:?}")]
pub struct BodyIdle(pub Duration);

/// Whether an error (or one of its sources) is a [`BodyIdle`].
pub fn is_idle(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.is::<BodyIdle>() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// A body that fails with [`BodyIdle`] after `timeout` without a frame.
pub struct IdleBody<B> {
    inner: B,
    timeout: Duration,
    deadline: Instant,
    sleep: Pin<Box<Sleep>>,
}

impl<B> IdleBody<B> {
    /// Wraps `inner`.
    pub fn new(inner: B, timeout: Duration) -> Self {
        let deadline = Instant::now() + timeout;
        IdleBody {
            inner,
            timeout,
            deadline,
            sleep: Box::pin(tokio::time::sleep_until(deadline)),
        }
    }
}

impl<B> Body for IdleBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(r) => {
                this.deadline = Instant::now() + this.timeout;
                return Poll::Ready(r.map(|r| r.map_err(Into::into)));
            }
            Poll::Pending => {}
        }
        loop {
            match this.sleep.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(()) if Instant::now() >= this.deadline => {
                    return Poll::Ready(Some(Err(Box::new(BodyIdle(this.timeout)))));
                }
                // Frames arrived since the timer was set: wait for the
                // deadline they moved it to.
                Poll::Ready(()) => this.sleep.as_mut().reset(this.deadline),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

// === upgraded connections ===

/// When the last byte moved on a spliced pair of connections, shared by
/// both sides' [`Watched`] wrappers.
#[derive(Debug)]
pub struct Activity {
    base: Instant,
    /// Milliseconds after `base`.
    last_ms: std::sync::atomic::AtomicU64,
}

impl Activity {
    /// Active now.
    pub fn new() -> std::sync::Arc<Self> {
        std::sync::Arc::new(Activity {
            base: Instant::now(),
            last_ms: std::sync::atomic::AtomicU64::new(0),
        })
    }

    fn touch(&self) {
        let ms = self.base.elapsed().as_millis() as u64;
        self.last_ms
            .fetch_max(ms, std::sync::atomic::Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.base + Duration::from_millis(self.last_ms.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Resolves once nothing has moved for `timeout`.
    pub async fn quiet_for(&self, timeout: Duration) {
        loop {
            let deadline = self.last() + timeout;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// An I/O object that marks its [`Activity`] on every byte read or written.
pub struct Watched<T> {
    inner: T,
    activity: std::sync::Arc<Activity>,
}

impl<T> Watched<T> {
    /// Wraps `inner`.
    pub fn new(inner: T, activity: std::sync::Arc<Activity>) -> Self {
        Watched { inner, activity }
    }
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    fn channel() -> (
        tokio::sync::mpsc::Sender<Result<Frame<Bytes>, BoxError>>,
        impl Body<Data = Bytes, Error = BoxError> + Unpin,
    ) {
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        (tx, StreamBody::new(stream))
    }

    #[tokio::test]
    async fn a_stalled_body_fails_and_a_moving_one_does_not() {
        let (tx, body) = channel();
        let mut body = IdleBody::new(body, Duration::from_secs(2));
        // Frames every 100 ms: never 2 s without one.
        for _ in 0..8 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            tx.send(Ok(Frame::data(Bytes::from_static(b"x"))))
                .await
                .unwrap();
            let f = body.frame().await.unwrap().unwrap();
            assert_eq!(f.into_data().unwrap(), "x");
        }
        // Then silence.
        let e = body.frame().await.unwrap().unwrap_err();
        assert!(is_idle(&*e), "{e}");
        drop(tx);
    }
}
