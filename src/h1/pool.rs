//! The fast path's upstream connections: one pool per route, plain TCP,
//! keep-alive HTTP/1.1.
//!
//! Each I/O thread has its own shard of every pool (a connection is used
//! on the runtime whose reactor it is registered with): the shard is
//! `Limits::pool_shard`, passed to each connection by its I/O thread, not
//! hidden state. A request takes the most recently returned connection (LIFO
//! keeps few connections warm) and gives it back once its response has been relayed
//! in full; a connection whose message framing was broken, or whose peer
//! said `Connection: close`, is dropped instead. Connections idle longer
//! than `upstream.pool_idle_timeout` are closed when the pool is next used,
//! and at most `upstream.pool_max_idle_per_host` are kept. A pooled
//! connection the upstream has closed meanwhile is noticed from the
//! readiness tokio already holds (no system call) and skipped; one that
//! fails anyway is retried once on a fresh connection by the caller when
//! the request can be replayed. The server sweeps idle connections
//! periodically ([`Pool::sweep`]) so that a quiet pool does not hold
//! connections its upstream has closed.

use std::io;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

type Idle = Mutex<Vec<(TcpStream, Instant)>>;

/// Idle keep-alive connections to one upstream.
pub struct Pool {
    /// `host:port` to connect to.
    addr: String,
    /// One per I/O thread, plus one for every other thread.
    shards: Box<[Idle]>,
    max_idle: usize,
    idle_timeout: Duration,
    connect_timeout: Duration,
}

/// Why no upstream connection could be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Refused, unreachable, or the name did not resolve: 502.
    #[error("connect to {0}: {1}")]
    Failed(String, io::Error),
    /// `upstream.connect_timeout` passed: 504.
    #[error("connect to {0}: timed out")]
    TimedOut(String),
}

impl Pool {
    /// A pool for `authority` (`host[:port]`, port 80 when absent), with a
    /// shard for each of `threads` I/O threads; `max_idle` is per shard.
    pub fn new(
        authority: &http::uri::Authority,
        threads: usize,
        max_idle: usize,
        idle_timeout: Duration,
        connect_timeout: Duration,
    ) -> Pool {
        let addr = match authority.port_u16() {
            Some(_) => authority.as_str().to_owned(),
            None => format!("{}:80", authority.host()),
        };
        Pool {
            addr,
            shards: (0..=threads).map(|_| Mutex::new(Vec::new())).collect(),
            max_idle,
            idle_timeout,
            connect_timeout,
        }
    }

    /// A pooled connection that still looks open, if any.
    pub fn take(&self, shard: usize, now: Instant) -> Option<TcpStream> {
        let mut idle = self.shard(shard).lock().ok()?;
        while let Some((conn, since)) = idle.pop() {
            if now.saturating_duration_since(since) < self.idle_timeout && still_open(&conn) {
                return Some(conn);
            }
        }
        None
    }

    /// Returns a connection whose last response was relayed in full.
    pub fn put(&self, shard: usize, conn: TcpStream, now: Instant) {
        let Ok(mut idle) = self.shard(shard).lock() else {
            return;
        };
        // Oldest first: drop those past their idle time.
        let expired = idle
            .iter()
            .take_while(|(_, since)| now.saturating_duration_since(*since) >= self.idle_timeout)
            .count();
        idle.drain(..expired);
        if idle.len() < self.max_idle {
            idle.push((conn, now));
        }
    }

    /// Closes idle connections past their idle time or closed by the
    /// upstream (run periodically, so an idle pool does not hold them).
    pub fn sweep(&self, now: Instant) {
        for shard in self.shards.iter() {
            if let Ok(mut idle) = shard.lock() {
                idle.retain(|(conn, since)| {
                    now.saturating_duration_since(*since) < self.idle_timeout && still_open(conn)
                });
            }
        }
    }

    fn shard(&self, i: usize) -> &Idle {
        &self.shards[i % self.shards.len()]
    }

    /// How often [`Pool::sweep`] is worth running.
    pub fn sweep_interval(&self) -> Duration {
        (self.idle_timeout / 2).max(Duration::from_secs(1))
    }

    /// Opens a new connection (no delay, TCP keep-alive 60 s).
    pub async fn connect(&self) -> Result<TcpStream, ConnectError> {
        let conn = match tokio::time::timeout(self.connect_timeout, TcpStream::connect(&self.addr))
            .await
        {
            Err(_) => return Err(ConnectError::TimedOut(self.addr.clone())),
            Ok(Err(e)) => return Err(ConnectError::Failed(self.addr.clone(), e)),
            Ok(Ok(c)) => c,
        };
        let _ = conn.set_nodelay(true);
        let keepalive = socket2::TcpKeepalive::new().with_time(Duration::from_secs(60));
        let _ = socket2::SockRef::from(&conn).set_tcp_keepalive(&keepalive);
        Ok(conn)
    }

    /// How many connections sit idle (for tests).
    #[cfg(test)]
    fn idle_count(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|i| i.len()).unwrap_or(0))
            .sum()
    }
}

/// False when an idle connection has become readable: the upstream closed
/// it or sent bytes nobody asked for; either way it cannot carry a request.
fn still_open(conn: &TcpStream) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    match conn.poll_read_ready(&mut cx) {
        Poll::Pending => true,
        // Readiness may be stale: look.
        Poll::Ready(Ok(())) => {
            matches!(conn.try_read(&mut [0u8; 1]), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
        }
        Poll::Ready(Err(_)) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn closed_and_expired_connections_are_not_handed_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority: http::uri::Authority =
            listener.local_addr().unwrap().to_string().parse().unwrap();
        let pool = Pool::new(
            &authority,
            1,
            2,
            Duration::from_secs(60),
            Duration::from_secs(5),
        );
        let a = pool.connect().await.unwrap();
        let (mut peer_a, _) = listener.accept().await.unwrap();
        let b = pool.connect().await.unwrap();
        let (_peer_b, _) = listener.accept().await.unwrap();
        let c = pool.connect().await.unwrap();
        let (_peer_c, _) = listener.accept().await.unwrap();
        let now = Instant::now();
        pool.put(0, a, now);
        pool.put(0, b, now);
        pool.put(0, c, now); // over max_idle: closed
        assert_eq!(pool.idle_count(), 2);

        // The peer closes `a`; `b` (taken first, LIFO) is fine.
        peer_a.shutdown().await.unwrap();
        drop(peer_a);
        let b = pool.take(0, Instant::now()).unwrap();
        // Give the reactor a moment to see the FIN on `a`.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            pool.take(0, Instant::now()).is_none(),
            "closed connection handed out"
        );

        pool.put(0, b, now);
        assert!(
            pool.take(0, now + Duration::from_secs(61)).is_none(),
            "expired connection handed out"
        );
    }

    #[tokio::test]
    async fn refused_connections_are_errors() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let authority: http::uri::Authority = addr.to_string().parse().unwrap();
        let pool = Pool::new(
            &authority,
            1,
            2,
            Duration::from_secs(60),
            Duration::from_secs(5),
        );
        assert!(matches!(
            pool.connect().await,
            Err(ConnectError::Failed(..))
        ));
    }
}
