//! Listeners: the accept loop, the I/O threads, optional TLS, the HTTP/1.1
//! fast path ([`crate::h1`]) with hyper-util's auto builder (HTTP/1.1 + h2,
//! and h2c with prior knowledge) behind it, and graceful shutdown.
//!
//! Thread per core: `server.io_threads` I/O threads each run their own
//! single-threaded tokio runtime, and each accepts on its own socket of the
//! client address (`SO_REUSEPORT`, [`listen`]). The kernel's hash spreads
//! the connections at random, so each accept goes through [`placement`]:
//! the connection stays on the accepting thread unless another has at least
//! two fewer open, then it is handed to that one. When the listener cannot
//! have such siblings, thread 0 accepts alone and the same rule deals its
//! connections. Each thread keeps the
//! connection for its whole life: the client socket, the upstream sockets
//! (the fast path's pools have a shard per thread) and their timers all
//! live on that thread, so a request never waits for another thread's
//! scheduler, is never stolen, and wakes nothing across cores. The store,
//! the admin listener and signal handling stay on the shared runtime.
//!
//! Each connection starts on the fast path (unless `server.h1_fast_path` is
//! off, or TLS negotiated h2); when a request arrives that the fast path does
//! not take, the connection is handed to hyper together with the bytes
//! already read, and hyper serves it from then on.
//!
//! Shutdown: when `shutdown` is cancelled the listener is dropped (new
//! connections are refused), every open connection finishes its in-flight
//! request and closes (idle fast-path connections at once, hyper's through
//! `graceful_shutdown`, as in hyper-util's `server_graceful` example), and
//! each I/O thread waits for its connections up to `drain_timeout`.
//!
//! Limits: a request head over `server.max_header_bytes` is answered 431 by
//! hyper (HTTP/1.1) or refused by h2 (HTTP/2); a client that does not finish
//! its request head within [`HEADER_READ_TIMEOUT`] is disconnected.

mod hyper_conn;
pub mod listen;
use hyper_conn::*;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::h1::{self, rewind::Rewind};
use crate::proxy::{ClientConn, Gateway};

/// Time a client has to send its whole request head.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Time a client has to complete a TLS handshake.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How the listener serves connections.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Largest request head.
    pub max_header_bytes: usize,
    /// Whether connections start on the HTTP/1.1 fast path.
    pub fast_path: bool,
    /// How long in-flight requests may take to finish after shutdown.
    pub drain_timeout: Duration,
    /// I/O threads (at least 1).
    pub io_threads: usize,
    /// Longest a body may make no progress on the fast path.
    pub body_idle_timeout: Duration,
    /// Most client connections open at once (accepting pauses beyond it).
    pub max_connections: usize,
    /// HTTP/2 keep-alive ping interval.
    pub h2_keepalive_interval: Duration,
    /// HTTP/2 keep-alive ping answer timeout.
    pub h2_keepalive_timeout: Duration,
    /// HTTP/2 concurrent streams per connection.
    pub h2_max_concurrent_streams: u32,
}

/// What every connection task shares.
struct Shared {
    gateway: Arc<Gateway>,
    builder: auto::Builder<TokioExecutor>,
    /// hyper's HTTP/1 alone, set up as `builder`'s: for the HTTP/1
    /// connections that are parked while idle ([`hyper_h1`]).
    http1: http1::Builder,
    limits: h1::Limits,
    fast_path: bool,
    /// Cancelled at shutdown: stop accepting, finish in-flight requests,
    /// close idle connections.
    drain: CancellationToken,
    tls: Option<TlsAcceptor>,
    drain_timeout: Duration,
    /// One permit per open client connection (`server.max_connections`).
    slots: Arc<Semaphore>,
    /// Each I/O thread's inbox for the connections another thread places
    /// on it ([`placement`]), by thread index.
    inboxes: Vec<UnboundedSender<Dealt>>,
    /// Each I/O thread's open client connections, by thread index.
    open: Arc<[AtomicUsize]>,
}

/// A connection accepted on one I/O thread and placed on another.
type Dealt = (std::net::TcpStream, SocketAddr, Slot);

/// An open connection's place under `server.max_connections` and in its
/// I/O thread's count of open connections, given back (and the
/// open-connections gauge lowered) when the connection ends.
struct Slot {
    _permit: OwnedSemaphorePermit,
    open: Arc<[AtomicUsize]>,
    thread: usize,
}

impl Slot {
    /// Counts a new connection on I/O thread `thread`.
    fn new(permit: OwnedSemaphorePermit, open: Arc<[AtomicUsize]>, thread: usize) -> Self {
        crate::metrics::connection_opened();
        if let Some(n) = open.get(thread) {
            n.fetch_add(1, Ordering::Relaxed);
        }
        Slot {
            _permit: permit,
            open,
            thread,
        }
    }

    /// Moves the connection's count to I/O thread `to`.
    fn move_to(&mut self, to: usize) {
        if let (Some(from), Some(n)) = (self.open.get(self.thread), self.open.get(to)) {
            from.fetch_sub(1, Ordering::Relaxed);
            n.fetch_add(1, Ordering::Relaxed);
            self.thread = to;
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        crate::metrics::connection_closed();
        if let Some(n) = self.open.get(self.thread) {
            n.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Which I/O thread serves a connection accepted on thread `me`: `me`,
/// unless another thread has at least two fewer open connections, then
/// the one with the fewest.
///
/// The kernel's `SO_REUSEPORT` hash spreads connections at random: 64
/// long-lived connections land 27 / 38 on two threads as often as not
/// (measured with `strace -e accept4`), and the busier thread's clients
/// wait longer, which is the p99 (issue 16). With this rule the counts
/// stay within two of each other, and only the connections that would
/// widen the gap pay the hand-off (two `epoll_ctl` and a wake-up of the
/// other thread); when the listener has no siblings and thread 0 accepts
/// alone, the same rule deals its connections.
fn placement(open: &[AtomicUsize], me: usize) -> usize {
    let mine = open.get(me).map_or(0, |n| n.load(Ordering::Relaxed));
    let (least, fewest) = open
        .iter()
        .map(|n| n.load(Ordering::Relaxed))
        .enumerate()
        .min_by_key(|&(_, n)| n)
        .unwrap_or((me, mine));
    if fewest + 2 <= mine {
        least
    } else {
        me
    }
}

/// Added to the count of an I/O thread that takes no more connections (its
/// runtime failed, or it stopped at shutdown), so that [`placement`] never
/// picks it again: without it, a dead thread's count of 0 would make every
/// accept try a hand-off that fails. Added, not stored, so that the
/// connections counted there concurrently still subtract what they added.
const RETIRED: usize = usize::MAX / 4;

/// Marks I/O thread `thread` as taking no more connections (once).
fn retire(open: &[AtomicUsize], thread: usize) {
    if let Some(n) = open.get(thread) {
        let _ = n.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
            (v < RETIRED).then(|| v + RETIRED)
        });
    }
}

/// What an I/O thread serves: its own socket of the client address (none
/// on threads 1.. when the listener has no siblings), and the connections
/// other threads place on it.
struct Role {
    listener: Option<std::net::TcpListener>,
    inbox: UnboundedReceiver<Dealt>,
}

/// Serves the gateway on an already-bound listener until `shutdown`, then
/// drains for at most `options.drain_timeout`.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    gateway: Arc<Gateway>,
    options: Options,
    shutdown: CancellationToken,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .max_buf_size(options.max_header_bytes.max(8192))
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    // HTTP/2 connections are bounded like HTTP/1's: pings find a peer that
    // went silent (an h2c preface and then nothing), and a client's streams
    // are capped.
    builder
        .http2()
        .max_header_list_size(options.max_header_bytes as u32)
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(options.h2_keepalive_interval))
        .keep_alive_timeout(options.h2_keepalive_timeout)
        .max_concurrent_streams(options.h2_max_concurrent_streams);
    let mut h1_only = http1::Builder::new();
    h1_only
        .max_buf_size(options.max_header_bytes.max(8192))
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let n = options.io_threads.max(1);
    let (senders, inboxes): (Vec<_>, Vec<_>) = (0..n)
        .map(|_| tokio::sync::mpsc::unbounded_channel())
        .unzip();
    let shared = Arc::new(Shared {
        gateway,
        builder,
        http1: h1_only,
        limits: h1::Limits {
            max_header_bytes: options.max_header_bytes,
            header_read_timeout: HEADER_READ_TIMEOUT,
            body_idle_timeout: options.body_idle_timeout,
            pool_shard: 0,
        },
        fast_path: options.fast_path,
        drain: shutdown.clone(),
        tls,
        drain_timeout: options.drain_timeout,
        slots: Arc::new(Semaphore::new(
            options.max_connections.clamp(1, Semaphore::MAX_PERMITS),
        )),
        inboxes: senders,
        open: (0..n).map(|_| AtomicUsize::new(0)).collect(),
    });
    tokio::spawn(sweep_pools(shared.gateway.clone(), shutdown.clone()));
    let listener = match listener.into_std() {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "listener unusable: not serving");
            return;
        }
    };

    // Every thread accepts on its own socket; without siblings thread 0
    // accepts alone. Either way `placement` decides who serves.
    let listeners: Vec<Option<std::net::TcpListener>> = match listen::siblings(&listener, n - 1) {
        Ok(siblings) => std::iter::once(listener)
            .chain(siblings)
            .map(Some)
            .collect(),
        Err(e) => {
            if n > 1 {
                tracing::info!(error = %e, "one listening socket: I/O thread 0 deals the connections");
            }
            std::iter::once(Some(listener))
                .chain((1..n).map(|_| None))
                .collect()
        }
    };
    let roles = listeners
        .into_iter()
        .zip(inboxes)
        .map(|(listener, inbox)| Role { listener, inbox });
    let mut threads = Vec::new();
    for (i, role) in roles.enumerate() {
        let shared = shared.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("revgate-io-{i}"))
            .spawn(move || io_thread(i, role, shared));
        match spawned {
            Ok(t) => threads.push(t),
            // Thread 0 failing means nothing is served; another failing
            // only drops its queue (thread 0 then keeps its share).
            Err(e) => tracing::error!(error = %e, thread = i, "cannot start an I/O thread"),
        }
    }

    shutdown.cancelled().await;
    let joined = async {
        for t in threads {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    };
    // Each thread bounds its own drain by the drain timeout; this bound
    // covers a thread stuck past it.
    tokio::select! {
        _ = joined => tracing::info!("all connections drained"),
        _ = tokio::time::sleep(options.drain_timeout + Duration::from_secs(1)) => {
            tracing::warn!(timeout = ?options.drain_timeout, "drain timeout: closing remaining connections");
        }
    }
}

/// One I/O thread: a single-threaded runtime serving its connections (and,
/// on thread 0, accepting) until shutdown, then draining them for at most
/// the drain timeout (the runtime's drop cuts what is left).
fn io_thread(index: usize, role: Role, shared: Arc<Shared>) {
    // This thread's shard of every upstream pool, passed to each connection.
    let shard = index + 1;
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .on_thread_park(yield_before_park)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, thread = index, "cannot build an I/O thread's runtime");
            return;
        }
    };
    rt.block_on(async move {
        let beat = tokio::spawn(heartbeat(index, shared.open.clone()));
        let tracker = TaskTracker::new();
        let Role { listener, inbox } = role;
        let accepting = async {
            if let Some(listener) = listener {
                accept(listener, &shared, &tracker, index, shard).await;
            }
        };
        tokio::join!(accepting, placed(inbox, &shared, &tracker, shard));
        tracker.close();
        tokio::select! {
            _ = tracker.wait() => {}
            _ = tokio::time::sleep(shared.drain_timeout) => {}
        }
        beat.abort();
    });
}

/// What an I/O thread does when it runs out of work, before it sleeps in
/// `epoll_wait`: yield the core once.
///
/// With two I/O threads, wrk and the upstream on two cores, a thread that
/// sleeps the moment its queue is empty is woken a few microseconds later
/// by the next request, and the wake-up costs a context switch and often a
/// preemption of whatever ran there (0.20 context switches per request,
/// nginx 0.05). Yielding first lets the upstream or the client run and
/// answer, so the thread more often finds its next event ready. Measured in
/// one interleaved `benches/load.sh` A/B (issue 16): throughput 1.19 →
/// 1.26× nginx, p99 1.19 → 1.07×, CPU per request 0.84 → 0.79×; with one I/O
/// thread 1.04 → 1.14×, p99 1.41 → 1.01×. Spinning instead (20 µs) cost
/// CPU and doubled the p99. The cost: one `sched_yield` per park.
fn yield_before_park() {
    std::thread::yield_now();
}

/// What every I/O thread's [`heartbeat`] also runs, once a tick (the
/// binary's allocator purge: `main.rs`).
static HEARTBEAT_HOOK: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// Sets what each I/O thread runs on its heartbeat (first call wins).
pub fn on_heartbeat(hook: fn()) {
    let _ = HEARTBEAT_HOOK.set(hook);
}

/// How often an I/O thread's [`heartbeat`] wakes.
const HEARTBEAT: Duration = Duration::from_millis(250);

/// Keeps a timer due within [`HEARTBEAT`] on the I/O thread, always.
///
/// tokio's timer driver writes to its runtime's eventfd whenever a timer
/// is armed that is due before the driver's next planned wake-up, even from
/// the runtime's own thread: a new connection's header and idle timers
/// (due in 30 s and 1 s) were two such writes on a thread whose other
/// timers were all later, or absent, measured with `strace` as two
/// `write`s per connection (issue 16). With this heartbeat due sooner than
/// any connection timer, arming them costs no system call. An idle thread
/// wakes four times a second for it, sets the thread's connection gauge
/// and runs the [`on_heartbeat`] hook.
async fn heartbeat(thread: usize, open: Arc<[AtomicUsize]>) {
    const _: () = assert!(HEARTBEAT.as_millis() < h1::IDLE_RELEASE.as_millis());
    let gauge = crate::metrics::io_thread_connections(thread);
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Some(n) = open.get(thread) {
            gauge.set(n.load(Ordering::Relaxed) as f64);
        }
        if let Some(hook) = HEARTBEAT_HOOK.get() {
            hook();
        }
    }
}

/// An accept loop on I/O thread `me`: each connection is served where
/// [`placement`] puts it (this thread, or another thread's inbox); a
/// connection whose thread has stopped is served here.
async fn accept(
    listener: std::net::TcpListener,
    shared: &Arc<Shared>,
    tracker: &TaskTracker,
    me: usize,
    shard: usize,
) {
    // Set once here, it comes with every accepted connection (Linux).
    let inherits_nodelay = listen::nodelay(&listener);
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "cannot register the listener: not serving");
            return;
        }
    };
    let limited = crate::telemetry::Throttle::default();
    loop {
        // A place for the next connection first: at `server.max_connections`
        // accepting waits (the kernel's backlog holds the newcomers).
        let permit = match shared.slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                crate::metrics::connections_limited();
                if let Some(suppressed) = limited.admit() {
                    tracing::warn!(
                        suppressed,
                        "server.max_connections reached: accepting paused"
                    );
                }
                tokio::select! {
                    _ = shared.drain.cancelled() => break,
                    p = shared.slots.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                }
            }
        };
        let (stream, addr) = tokio::select! {
            _ = shared.drain.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if !inherits_nodelay {
            let _ = stream.set_nodelay(true);
        }
        let to = placement(&shared.open, me);
        let slot = Slot::new(permit, shared.open.clone(), to);
        let inbox = shared.inboxes.get(to);
        let (stream, slot) = match inbox.filter(|_| to != me) {
            None => (stream, slot),
            Some(inbox) => match stream.into_std() {
                Ok(s) => match inbox.send((s, addr, slot)) {
                    Ok(()) => {
                        crate::metrics::connection_placed();
                        continue;
                    }
                    Err(tokio::sync::mpsc::error::SendError((s, _, mut slot))) => {
                        // Its thread has stopped (or never started): served
                        // here, and never chosen again.
                        retire(&shared.open, to);
                        slot.move_to(me);
                        match TcpStream::from_std(s) {
                            Ok(s) => (s, slot),
                            Err(e) => {
                                tracing::warn!(error = %e, "cannot register a connection");
                                continue;
                            }
                        }
                    }
                },
                Err(e) => {
                    tracing::warn!(error = %e, "accepted connection unusable");
                    continue;
                }
            },
        };
        spawn_connection(tracker, accepted(shared.clone(), stream, addr, slot, shard));
    }
}

/// Serves the connections other I/O threads place on this one, until
/// shutdown; then closes the inbox (a thread placing one after that serves
/// it itself) and serves the ones already in it, which answer their
/// in-flight request and close like every other connection.
async fn placed(
    mut inbox: UnboundedReceiver<Dealt>,
    shared: &Arc<Shared>,
    tracker: &TaskTracker,
    shard: usize,
) {
    loop {
        let (stream, addr, slot) = tokio::select! {
            _ = shared.drain.cancelled() => {
                inbox.close();
                match inbox.recv().await {
                    Some(d) => d,
                    None => break,
                }
            }
            dealt = inbox.recv() => match dealt {
                Some(d) => d,
                None => break,
            },
        };
        match TcpStream::from_std(stream) {
            Ok(s) => {
                spawn_connection(tracker, accepted(shared.clone(), s, addr, slot, shard));
            }
            Err(e) => tracing::warn!(error = %e, "cannot register a connection"),
        }
    }
}

/// Spawns a connection's task with its future boxed in place: the task
/// then holds a pointer where it held the whole connection state, which
/// spawning, tracking and finishing the task copied several times per
/// connection (callgrind: ~1,300 instructions of `memcpy`).
fn spawn_connection(
    tracker: &TaskTracker,
    conn: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let boxed = Box::into_pin(Box::write(Box::new_uninit(), conn));
    tracker.spawn(boxed);
}

/// Serves an accepted connection: the TLS handshake first when the listener
/// has TLS.
///
/// The task's future is the size of its largest state, and an idle
/// connection pays for it all its life: what only some connections need
/// (the TLS handshake and TLS connection state, hyper's connection) is
/// boxed, once per connection, so that an idle plain connection's task
/// holds little more than its socket (issue 16).
async fn accepted(
    shared: Arc<Shared>,
    stream: TcpStream,
    addr: SocketAddr,
    _slot: Slot,
    shard: usize,
) {
    let Some(acceptor) = shared.tls.clone() else {
        let conn = ClientConn { addr, tls: false };
        return connection(shared, stream, conn, true, shard).await;
    };
    Box::pin(tls_connection(shared, acceptor, stream, addr, shard)).await
}

/// Serves a connection of a TLS listener: the handshake, then the
/// connection.
async fn tls_connection(
    shared: Arc<Shared>,
    acceptor: TlsAcceptor,
    stream: TcpStream,
    addr: SocketAddr,
    shard: usize,
) {
    let tls_stream =
        match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, client = %addr, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(client = %addr, "TLS handshake timed out");
                return;
            }
        };
    let h2 = tls_stream.get_ref().1.alpn_protocol() == Some(b"h2");
    let conn = ClientConn { addr, tls: true };
    connection(shared, tls_stream, conn, !h2, shard).await;
}

/// Closes idle upstream connections of the fast path's pools periodically.
async fn sweep_pools(gateway: Arc<Gateway>, shutdown: CancellationToken) {
    loop {
        let every = gateway.runtime().sweep_interval();
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => gateway.runtime().sweep_pools(),
        }
    }
}

/// Serves one connection: on the fast path while it takes the requests
/// (`h1` and the fast path enabled), then with hyper, which is asked to
/// finish its in-flight requests and close when the drain starts.
async fn connection<IO>(shared: Arc<Shared>, io: IO, conn: ClientConn, h1: bool, shard: usize)
where
    IO: AsyncRead + AsyncWrite + h1::Readiness + Unpin + Send + 'static,
{
    let (io, pre) = if h1 && shared.fast_path {
        match h1::serve(
            shared.gateway.clone(),
            io,
            conn,
            h1::Limits {
                pool_shard: shard,
                ..shared.limits
            },
            shared.drain.clone(),
        )
        .await
        {
            h1::End::Closed => return,
            h1::End::Handover(io, pre) => (io, pre),
        }
    } else {
        (io, Bytes::new())
    };
    let (io, pre) = if h1 && IO::PARKS {
        match sniff_h2(io, pre).await {
            Some((io, pre, false)) => return Box::pin(hyper_h1(&shared, io, pre, conn)).await,
            Some((io, pre, true)) => (io, pre),
            None => return,
        }
    } else {
        (io, pre)
    };
    let gw = shared.gateway.clone();
    // hyper keeps a slot the size of the service's future for the whole
    // connection: boxed per request (hyper's path allocates per request
    // anyway), the slot is a pointer and an idle connection does not pay
    // for the request machinery.
    let service = service_fn(move |req| Box::pin(gw.clone().handle(req, conn)));
    let c = shared
        .builder
        .serve_connection_with_upgrades(TokioIo::new(Rewind::new(io, pre)), service);
    let mut c = Box::pin(c);
    let ended = tokio::select! {
        r = c.as_mut() => r,
        _ = shared.drain.cancelled() => {
            c.as_mut().graceful_shutdown();
            c.await
        }
    };
    if let Err(e) = ended {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(n: &[usize]) -> Vec<AtomicUsize> {
        n.iter().map(|&n| AtomicUsize::new(n)).collect()
    }

    #[test]
    fn a_connection_stays_unless_another_thread_has_two_fewer() {
        assert_eq!(placement(&counts(&[0, 0]), 0), 0);
        assert_eq!(placement(&counts(&[0, 0]), 1), 1);
        assert_eq!(placement(&counts(&[1, 0]), 0), 0);
        assert_eq!(placement(&counts(&[2, 0]), 0), 1);
        assert_eq!(placement(&counts(&[5, 9]), 1), 0);
        assert_eq!(placement(&counts(&[5, 6]), 1), 1);
        // The fewest wins among several.
        assert_eq!(placement(&counts(&[7, 4, 2, 3]), 0), 2);
        // One thread, or an index past the end: stays.
        assert_eq!(placement(&counts(&[9]), 0), 0);
        assert_eq!(placement(&counts(&[]), 0), 0);
    }

    #[test]
    fn a_retired_thread_is_never_chosen_and_its_connections_still_count_down() {
        let open = counts(&[6, 0, 3]);
        assert_eq!(placement(&open, 0), 1);
        retire(&open, 1);
        retire(&open, 1); // once only
        assert_eq!(open[1].load(Ordering::Relaxed), RETIRED);
        assert_eq!(placement(&open, 0), 2);
        assert_eq!(placement(&open, 2), 2);
        // A connection counted there before the retirement is still taken off.
        open[1].fetch_add(1, Ordering::Relaxed);
        retire(&open, 1);
        open[1].fetch_sub(1, Ordering::Relaxed);
        assert_eq!(open[1].load(Ordering::Relaxed), RETIRED);
        retire(&open, 7); // past the end: nothing
    }

    #[test]
    fn placing_every_accept_on_one_thread_keeps_the_counts_within_two() {
        // The worst the kernel can do: every connection accepted on thread
        // 0 (a listener without siblings does exactly this).
        let open = counts(&[0, 0, 0]);
        for _ in 0..100 {
            let to = placement(&open, 0);
            open[to].fetch_add(1, Ordering::Relaxed);
            let n: Vec<usize> = open.iter().map(|n| n.load(Ordering::Relaxed)).collect();
            let (lo, hi) = (n.iter().min().unwrap(), n.iter().max().unwrap());
            assert!(hi - lo <= 2, "{n:?}");
        }
    }
}
