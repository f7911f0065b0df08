//! The access log: one line per request, formatted on the thread that
//! served it straight into that thread's buffer, and written by one writer
//! thread, so that serving a request never waits for a write (issue 16:
//! the `tracing` event it replaces doubled revgate's p99 with logs on).
//!
//! ```text
//! each thread that serves requests            the writer thread (one)
//!   Runtime::account -> AccessLog::write        wakes on a handed-over buffer,
//!     the line formatted into this thread's     every 100 ms, on SIGUSR1 and at
//!     buffer (reused; no allocation)            close; writes each buffer whole
//!     >= 64 KiB: handed to the queue  ------>   (stderr or the file) and gives
//!     (at most 16 buffers queued)               it back for reuse; every 100 ms
//!                                               takes every thread's partial
//!                                               buffer too
//! ```
//!
//! # API
//!
//! ```text
//! let log = AccessLog::start(Destination::File(path))?;    // lib::start, once
//! let request = Request::capture(format, method, path, version, headers); // per request, when on
//! log.write(format, &Line { request: &request, status, .. }); // Runtime::account
//! log.reopen();                        // SIGUSR1 (logrotate)
//! log.retarget(destination);           // SIGHUP with a new log.access_log_path
//! log.close(Duration::from_secs(5));   // shutdown: every buffer written
//! ```
//!
//! # Decisions
//!
//! - **Never blocking a request.** A thread's buffer is behind a mutex only
//!   the writer's 100 ms sweep ever contends for; the hand-over of a full
//!   buffer swaps in an empty one (recycled from the writer). When the
//!   writer is behind (a slow disk, a pipe nobody reads) and 16 buffers are
//!   queued, the thread keeps filling its own buffer up to 1 MiB and past
//!   that drops the line: each one is counted in
//!   `revgate_access_log_dropped_total` (and [`AccessLog::dropped`]). A
//!   write that fails loses its buffer's lines: counted there too, and
//!   warned about once a second at most.
//! - **Order.** A thread's lines are written in the order it served them
//!   (the sweep takes the queued buffers before a thread's partial one);
//!   lines of different I/O threads interleave by buffer, as the lines of
//!   nginx's workers do. Each line carries its own timestamp.
//! - **Shutdown.** [`AccessLog::close`] (called by `lib.rs` once the I/O
//!   threads have drained) has the writer take every queued and partial
//!   buffer, write it and flush, bounded in time: SIGTERM loses no line of a
//!   request that finished before the drain ended.
//! - **Where.** stderr by default (as the `tracing` line was, so existing
//!   setups see the same output); `log.access_log_path` appends to a file,
//!   reopened on SIGUSR1 (as nginx does for logrotate) and when a SIGHUP
//!   changes the path; a file that cannot be reopened leaves the old one in
//!   use, with an error logged. Writes to stderr take std's stderr lock for
//!   the whole buffer, so the other log lines never land inside an access
//!   line.
//! - **Formats.** `text` and `json` are byte for byte the lines the
//!   `tracing` subscriber wrote before (same field names and order, the
//!   same RFC 3339 UTC timestamp with microseconds, `level` and `target`),
//!   so log pipelines keep parsing them; `combined` is nginx's combined
//!   format. No ANSI colours, ever. The default follows `log.format`.
//! - **Filter.** Lines are still subject to the `revgate::access` target
//!   of `log.filter` / `RUST_LOG` (`revgate::access=off` silences them), as
//!   before; the check is `tracing`'s cached callsite interest, a load.
//! - **Secrets.** The path is logged without its query (tokens live there:
//!   RFC 6750's `access_token`, Nylas's), the credential at most as
//!   [`Fingerprint::short`]; `$remote_user` is always `-` (a Basic
//!   credential's user is never logged). `combined` adds the `User-Agent`
//!   and `Referer` values, escaped as nginx escapes them (`\xHH` for `"`,
//!   `\` and bytes outside printable ASCII), with the referer's query cut
//!   off too: a referring page's URL may carry a token.
//! - **`$body_bytes_sent`.** The response's `Content-Length` when its body
//!   was sent in full; `0` for a body without a length (chunked, or until
//!   the upstream closed: counting them would mean counting in the relay),
//!   for `HEAD`, 1xx, 204 and 304, and when the relay broke off. On the hyper
//!   path the line is written when the response head is ready: the length
//!   there is the body's exact size when known (its `Content-Length`).
//! - **`$time_local`.** UTC (`+0000`): a container's local time is UTC, and
//!   reading the host's zone rules is not worth a dependency.
//! - **A request in flight** holds what its line needs of the head
//!   ([`Request`]: method, path, and for `combined` the agent and referer)
//!   in a buffer taken from a per-thread free list and given back when the
//!   request ends: no allocation per request in the steady state.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

pub use crate::config::AccessLogFormat as Format;
use crate::credentials::{Fingerprint, Headers};
use crate::metrics::Outcome;

/// A thread's buffer is handed to the writer once it holds this much.
pub const FLUSH_AT: usize = 64 * 1024;
/// The writer takes every thread's partial buffer this often.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Most full buffers waiting for the writer.
pub const QUEUE: usize = 16;
/// Most bytes a thread's buffer holds while the queue is full; lines past
/// it are dropped (and counted).
pub const MAX_PENDING: usize = 1024 * 1024;
/// The writer thread's nice value (the I/O threads run at 0).
const WRITER_NICE: i32 = 5;
/// Emptied buffers kept for reuse.
const SPARES: usize = 8;
/// A thread's free list of [`Request`] buffers: at most this many, each at
/// most [`POOLED_CAPACITY`] bytes (a larger one, from a huge user agent, is
/// freed).
const POOLED: usize = 256;
const POOLED_CAPACITY: usize = 4096;

/// Where the lines go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    /// The process's stderr (the default).
    Stderr,
    /// Appended to this file.
    File(PathBuf),
}

// === Request ===

/// What a request's line needs of its head, copied before the head's buffer
/// is reused: method, path (its query cut off), and for `combined` the
/// `User-Agent` and `Referer` values (the referer's query cut off too).
pub struct Request {
    buf: Vec<u8>,
    /// Ends in `buf` of the method, the path, the agent, the referer.
    ends: [u32; 4],
    agent: bool,
    referer: bool,
    version: http::Version,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("method", &String::from_utf8_lossy(self.method()))
            .field("path", &String::from_utf8_lossy(self.path()))
            .finish_non_exhaustive()
    }
}

thread_local! {
    static FREE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

impl Request {
    /// Copies what `format`'s line needs of a request head.
    pub fn capture<H: Headers + ?Sized>(
        format: Format,
        method: &str,
        path: &str,
        version: http::Version,
        headers: &H,
    ) -> Request {
        let mut buf = FREE
            .try_with(|f| f.borrow_mut().pop())
            .ok()
            .flatten()
            .unwrap_or_else(|| Vec::with_capacity(256));
        buf.clear();
        buf.extend_from_slice(method.as_bytes());
        let m = buf.len();
        buf.extend_from_slice(without_query(path.as_bytes()));
        let p = buf.len();
        let (mut agent, mut referer) = (false, false);
        if format == Format::Combined {
            if let Some(v) = headers.first("user-agent") {
                buf.extend_from_slice(v);
                agent = true;
            }
        }
        let a = buf.len();
        if format == Format::Combined {
            if let Some(v) = headers.first("referer") {
                buf.extend_from_slice(without_query(v));
                referer = true;
            }
        }
        let r = buf.len();
        let end = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Request {
            ends: [end(m), end(p), end(a), end(r)],
            buf,
            agent,
            referer,
            version,
        }
    }

    fn part(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        self.buf.get(start..self.ends[i] as usize).unwrap_or(b"")
    }

    /// The method.
    pub fn method(&self) -> &[u8] {
        self.part(0)
    }

    /// The path, without its query.
    pub fn path(&self) -> &[u8] {
        self.part(1)
    }

    /// `User-Agent`, when captured and sent.
    pub fn agent(&self) -> Option<&[u8]> {
        self.agent.then(|| self.part(2))
    }

    /// `Referer` without its query, when captured and sent.
    pub fn referer(&self) -> Option<&[u8]> {
        self.referer.then(|| self.part(3))
    }

    /// The client's HTTP version.
    pub fn version(&self) -> http::Version {
        self.version
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        if buf.capacity() == 0 || buf.capacity() > POOLED_CAPACITY {
            return;
        }
        let _ = FREE.try_with(|f| {
            let mut f = f.borrow_mut();
            if f.len() < POOLED {
                f.push(buf);
            }
        });
    }
}

fn without_query(v: &[u8]) -> &[u8] {
    match memchr::memchr(b'?', v) {
        Some(i) => &v[..i],
        None => v,
    }
}

// === Line ===

/// One finished request's line.
#[derive(Clone, Copy, Debug)]
pub struct Line<'a> {
    /// The request's head, as captured.
    pub request: &'a Request,
    /// Status sent to the client.
    pub status: u16,
    /// Route name (`-` when none matched).
    pub route: &'a str,
    /// How the request ended.
    pub outcome: Outcome,
    /// Total time in the gateway, upstream included.
    pub duration: Duration,
    /// Upstream time to response headers, when forwarded.
    pub upstream: Option<Duration>,
    /// The credential's fingerprint; only its first 8 hex characters are
    /// written.
    pub fingerprint: Option<&'a Fingerprint>,
    /// Client address.
    pub peer: SocketAddr,
    /// The request id, when `tracing.request_id` is on.
    pub request_id: Option<&'a str>,
    /// `$body_bytes_sent` (see the module doc).
    pub body_bytes: u64,
}

// === AccessLog ===

/// The access log's writer thread and the buffers it takes; shared by every
/// thread that serves requests.
pub struct AccessLog {
    shared: Arc<Shared>,
    done: Mutex<Option<mpsc::Receiver<()>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog")
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

/// One thread's buffer of lines not yet handed over.
struct Slot {
    buf: Vec<u8>,
    /// Lines in `buf`.
    lines: u64,
    clock: Clock,
}

/// A buffer handed to the writer.
struct Batch {
    buf: Vec<u8>,
    lines: u64,
}

struct Queue {
    full: VecDeque<Batch>,
    spare: Vec<Vec<u8>>,
}

struct Shared {
    /// Tells this log's thread slots from another's (tests run several
    /// gateways in one process).
    id: usize,
    slots: Mutex<Vec<Arc<Mutex<Slot>>>>,
    queue: Mutex<Queue>,
    wake: Condvar,
    closing: AtomicBool,
    reopen: AtomicBool,
    target: Mutex<Destination>,
    dropped: AtomicU64,
    /// Failed writes, warned about once a second.
    failing: crate::telemetry::Throttle,
}

thread_local! {
    /// This thread's slot, and the id of the log it belongs to.
    static SLOT: RefCell<Option<(usize, Arc<Mutex<Slot>>)>> = const { RefCell::new(None) };
}

static NEXT_ID: AtomicUsize = AtomicUsize::new(1);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl AccessLog {
    /// Opens `destination` and starts the writer thread.
    pub fn start(destination: Destination) -> io::Result<Arc<AccessLog>> {
        let out = Output::open(&destination)?;
        let shared = Arc::new(Shared {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            slots: Mutex::new(Vec::new()),
            queue: Mutex::new(Queue {
                full: VecDeque::with_capacity(QUEUE),
                spare: Vec::new(),
            }),
            wake: Condvar::new(),
            closing: AtomicBool::new(false),
            reopen: AtomicBool::new(false),
            target: Mutex::new(destination),
            dropped: AtomicU64::new(0),
            failing: crate::telemetry::Throttle::default(),
        });
        let (done_tx, done_rx) = mpsc::channel();
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("revgate-access-log".into())
            .spawn(move || s.run(out, done_tx))?;
        Ok(Arc::new(AccessLog {
            shared,
            done: Mutex::new(Some(done_rx)),
            thread: Mutex::new(Some(thread)),
        }))
    }

    /// Appends `line` in `format` to this thread's buffer. Never waits for
    /// a write; drops (and counts) the line when the writer is far behind.
    pub fn write(&self, format: Format, line: &Line<'_>) {
        let shared = &*self.shared;
        let written = SLOT.try_with(|cell| {
            let mut cell = cell.borrow_mut();
            if !matches!(&*cell, Some((id, _)) if *id == shared.id) {
                *cell = Some((shared.id, shared.register()));
            }
            if let Some((_, slot)) = &*cell {
                shared.append(slot, format, line);
            }
        });
        if written.is_err() {
            // This thread is exiting: its slot is gone.
            shared.lost(1);
        }
    }

    /// Reopens the file (SIGUSR1, after logrotate moved it); nothing for
    /// stderr.
    pub fn reopen(&self) {
        self.shared.reopen.store(true, Ordering::Release);
        self.shared.wake.notify_one();
    }

    /// Writes to `destination` from now on (a SIGHUP that changed
    /// `log.access_log_path`); a no-op when it is the current one.
    pub fn retarget(&self, destination: Destination) {
        let mut t = lock(&self.shared.target);
        if *t != destination {
            *t = destination;
            drop(t);
            self.reopen();
        }
    }

    /// Lines dropped or lost so far (the writer was behind, or a write
    /// failed).
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Has the writer write every line buffered so far, flush and stop;
    /// waits for it at most `limit`. `true` when it finished in time. Lines
    /// written after it are not written (the process is exiting).
    pub fn close(&self, limit: Duration) -> bool {
        self.shared.closing.store(true, Ordering::Release);
        self.shared.wake.notify_one();
        let Some(done) = lock(&self.done).take() else {
            return true;
        };
        let finished = match done.recv_timeout(limit) {
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => true,
            Err(mpsc::RecvTimeoutError::Timeout) => false,
        };
        if finished {
            if let Some(t) = lock(&self.thread).take() {
                let _ = t.join();
            }
        }
        finished
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        // The writer writes what is left and stops on its own.
        self.shared.closing.store(true, Ordering::Release);
        self.shared.wake.notify_one();
    }
}

// === the serving threads' side ===

impl Shared {
    fn register(&self) -> Arc<Mutex<Slot>> {
        let slot = Arc::new(Mutex::new(Slot {
            buf: Vec::with_capacity(FLUSH_AT + FLUSH_AT / 4),
            lines: 0,
            clock: Clock::default(),
        }));
        lock(&self.slots).push(slot.clone());
        slot
    }

    fn append(&self, slot: &Mutex<Slot>, format: Format, line: &Line<'_>) {
        let mut guard = lock(slot);
        let s = &mut *guard;
        if s.buf.len() >= MAX_PENDING {
            drop(guard);
            self.lost(1);
            return;
        }
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        s.clock.set(now.as_secs());
        format_line(&mut s.buf, &s.clock, now.subsec_micros(), format, line);
        s.lines += 1;
        if s.buf.len() >= FLUSH_AT {
            self.hand_over(s);
        }
    }

    /// Queues `s`'s buffer for the writer, unless the queue is full (then
    /// the thread keeps filling its own).
    fn hand_over(&self, s: &mut Slot) {
        let mut q = lock(&self.queue);
        if q.full.len() >= QUEUE {
            return;
        }
        let fresh = q
            .spare
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(FLUSH_AT + FLUSH_AT / 4));
        let buf = std::mem::replace(&mut s.buf, fresh);
        q.full.push_back(Batch {
            buf,
            lines: std::mem::take(&mut s.lines),
        });
        drop(q);
        self.wake.notify_one();
    }

    fn lost(&self, lines: u64) {
        self.dropped.fetch_add(lines, Ordering::Relaxed);
        crate::metrics::access_log_dropped(lines);
    }
}

// === the writer thread ===

/// Where the writer writes.
enum Output {
    Stderr,
    File(std::fs::File),
}

impl Output {
    fn open(d: &Destination) -> io::Result<Output> {
        match d {
            Destination::Stderr => Ok(Output::Stderr),
            Destination::File(path) => std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map(Output::File),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            // One lock for the whole buffer: no other log line lands inside.
            Output::Stderr => io::stderr().lock().write_all(buf),
            Output::File(f) => f.write_all(buf),
        }
    }

    fn flush(&mut self) {
        match self {
            Output::Stderr => {
                let _ = io::stderr().lock().flush();
            }
            Output::File(f) => {
                let _ = f.flush();
            }
        }
    }
}

impl Shared {
    fn run(self: Arc<Self>, mut out: Output, done: mpsc::Sender<()>) {
        // Below the I/O threads (nice +5, this thread only on Linux): a
        // sweep's write then waits for a free core instead of preempting
        // one serving requests. Its share under full load is still ~30 %
        // of one I/O thread's, far more than writing lines takes.
        let _ = rustix::process::setpriority_process(Some(rustix::thread::gettid()), WRITER_NICE);
        let mut next_sweep = Instant::now() + FLUSH_EVERY;
        let mut batches = Vec::with_capacity(QUEUE);
        loop {
            {
                let mut q = lock(&self.queue);
                while q.full.is_empty()
                    && !self.closing.load(Ordering::Acquire)
                    && !self.reopen.load(Ordering::Acquire)
                {
                    let now = Instant::now();
                    if now >= next_sweep {
                        break;
                    }
                    q = match self.wake.wait_timeout(q, next_sweep - now) {
                        Ok((g, _)) => g,
                        Err(e) => e.into_inner().0,
                    };
                }
                batches.extend(q.full.drain(..));
            }
            for b in batches.drain(..) {
                self.emit(&mut out, b);
            }
            if self.reopen.swap(false, Ordering::AcqRel) {
                self.reopen_output(&mut out);
            }
            let closing = self.closing.load(Ordering::Acquire);
            if closing || Instant::now() >= next_sweep {
                self.sweep(&mut out);
                next_sweep = Instant::now() + FLUSH_EVERY;
            }
            if closing {
                out.flush();
                let _ = done.send(());
                return;
            }
        }
    }

    /// Takes every thread's buffer: first (under that thread's lock) what
    /// is queued, so a thread's lines stay in order, then its partial one.
    fn sweep(&self, out: &mut Output) {
        let slots: Vec<Arc<Mutex<Slot>>> = lock(&self.slots).clone();
        let mut earlier = Vec::new();
        for slot in &slots {
            // The same lock order as a serving thread's: its slot, then
            // the queue.
            let partial = {
                let mut s = lock(slot);
                let mut q = lock(&self.queue);
                earlier.extend(q.full.drain(..));
                if s.buf.is_empty() {
                    None
                } else {
                    let fresh = q.spare.pop().unwrap_or_default();
                    drop(q);
                    let buf = std::mem::replace(&mut s.buf, fresh);
                    Some(Batch {
                        buf,
                        lines: std::mem::take(&mut s.lines),
                    })
                }
            };
            for b in earlier.drain(..) {
                self.emit(out, b);
            }
            if let Some(b) = partial {
                self.emit(out, b);
            }
        }
        earlier.extend(lock(&self.queue).full.drain(..));
        for b in earlier {
            self.emit(out, b);
        }
        drop(slots);
        // A thread that has exited leaves its slot here alone: forget it
        // once it is empty.
        lock(&self.slots).retain(|s| Arc::strong_count(s) > 1 || !lock(s).buf.is_empty());
    }

    fn emit(&self, out: &mut Output, mut b: Batch) {
        if b.buf.is_empty() {
            return;
        }
        if let Err(e) = out.write_all(&b.buf) {
            self.lost(b.lines);
            if let Some(suppressed) = self.failing.admit() {
                tracing::error!(error = %e, lines = b.lines, suppressed, "access log: write failed; lines lost");
            }
        }
        b.buf.clear();
        if b.buf.capacity() <= 2 * FLUSH_AT {
            let mut q = lock(&self.queue);
            if q.spare.len() < SPARES {
                q.spare.push(b.buf);
            }
        }
    }

    fn reopen_output(&self, out: &mut Output) {
        let target = lock(&self.target).clone();
        match Output::open(&target) {
            Ok(o) => {
                out.flush();
                *out = o;
            }
            Err(e) => {
                let path = match &target {
                    Destination::File(p) => p.display().to_string(),
                    Destination::Stderr => "stderr".into(),
                };
                tracing::error!(error = %e, path, "access log: cannot reopen; still writing to the old file");
            }
        }
    }
}

// === formats ===

/// A thread's cache of the current second, formatted both ways.
#[derive(Default)]
struct Clock {
    secs: u64,
    /// `2026-12-02T07:10:55`
    rfc3339: [u8; 19],
    /// `02/Dec/2026:07:10:55 +0000`
    clf: [u8; 26],
}

const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

impl Clock {
    fn set(&mut self, secs: u64) {
        if secs == self.secs && self.rfc3339[0] != 0 {
            return;
        }
        self.secs = secs;
        let days = (secs / 86_400) as i64;
        let rem = secs % 86_400;
        let (y, m, d) = civil_from_days(days);
        let (hh, mm, ss) = (rem / 3600, rem / 60 % 60, rem % 60);
        let two = |v: u64| [b'0' + (v / 10 % 10) as u8, b'0' + (v % 10) as u8];
        let y = y.clamp(0, 9999) as u64;
        let year = [
            b'0' + (y / 1000) as u8,
            b'0' + (y / 100 % 10) as u8,
            b'0' + (y / 10 % 10) as u8,
            b'0' + (y % 10) as u8,
        ];
        let (mo, dd, h, mi, s) = (two(m as u64), two(d as u64), two(hh), two(mm), two(ss));
        let r = &mut self.rfc3339;
        r[..4].copy_from_slice(&year);
        r[4] = b'-';
        r[5..7].copy_from_slice(&mo);
        r[7] = b'-';
        r[8..10].copy_from_slice(&dd);
        r[10] = b'T';
        r[11..13].copy_from_slice(&h);
        r[13] = b':';
        r[14..16].copy_from_slice(&mi);
        r[16] = b':';
        r[17..19].copy_from_slice(&s);
        let c = &mut self.clf;
        c[..2].copy_from_slice(&dd);
        c[2] = b'/';
        c[3..6].copy_from_slice(MONTHS[(m as usize).clamp(1, 12) - 1]);
        c[6] = b'/';
        c[7..11].copy_from_slice(&year);
        c[11] = b':';
        c[12..14].copy_from_slice(&h);
        c[14] = b':';
        c[15..17].copy_from_slice(&mi);
        c[17] = b':';
        c[18..20].copy_from_slice(&s);
        c[20..].copy_from_slice(b" +0000");
    }

    /// `2026-12-02T07:10:55.123456Z`, as `tracing-subscriber` writes it.
    fn push_rfc3339(&self, buf: &mut Vec<u8>, micros: u32) {
        buf.extend_from_slice(&self.rfc3339);
        buf.push(b'.');
        let mut digits = [b'0'; 6];
        let mut v = micros.min(999_999);
        for d in digits.iter_mut().rev() {
            *d = b'0' + (v % 10) as u8;
            v /= 10;
        }
        buf.extend_from_slice(&digits);
        buf.push(b'Z');
    }
}

/// Days since 1970-01-01 -> (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = (if mp < 10 { mp + 3 } else { mp - 9 }) as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn format_line(buf: &mut Vec<u8>, clock: &Clock, micros: u32, format: Format, l: &Line<'_>) {
    match format {
        Format::Text => text(buf, clock, micros, l),
        Format::Json => json(buf, clock, micros, l),
        Format::Combined => combined(buf, clock, l),
    }
}

fn push_u64(buf: &mut Vec<u8>, v: u64) {
    buf.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

fn version_str(v: http::Version) -> &'static [u8] {
    match v {
        http::Version::HTTP_09 => b"HTTP/0.9",
        http::Version::HTTP_10 => b"HTTP/1.0",
        http::Version::HTTP_11 => b"HTTP/1.1",
        http::Version::HTTP_2 => b"HTTP/2.0",
        http::Version::HTTP_3 => b"HTTP/3.0",
        _ => b"HTTP/?",
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// `tracing-subscriber`'s default text line:
/// `<timestamp>  INFO revgate::access: access method=GET path="/x" ...`.
fn text(buf: &mut Vec<u8>, clock: &Clock, us: u32, l: &Line<'_>) {
    clock.push_rfc3339(buf, us);
    buf.extend_from_slice(b"  INFO revgate::access: access method=");
    buf.extend_from_slice(l.request.method());
    buf.extend_from_slice(b" path=");
    debug_str(buf, l.request.path());
    buf.extend_from_slice(b" version=");
    buf.extend_from_slice(version_str(l.request.version()));
    buf.extend_from_slice(b" status=");
    push_u64(buf, u64::from(l.status));
    buf.extend_from_slice(b" route=");
    debug_str(buf, l.route.as_bytes());
    buf.extend_from_slice(b" outcome=");
    debug_str(buf, l.outcome.as_str().as_bytes());
    buf.extend_from_slice(b" duration_us=");
    push_u64(buf, micros(l.duration));
    if let Some(u) = l.upstream {
        buf.extend_from_slice(b" upstream_us=");
        push_u64(buf, micros(u));
    }
    if let Some(fp) = l.fingerprint {
        buf.extend_from_slice(b" fp=\"");
        buf.extend_from_slice(&fp.short_hex());
        buf.push(b'"');
    }
    buf.extend_from_slice(b" peer=");
    push_peer(buf, l.peer);
    if let Some(id) = l.request_id {
        buf.extend_from_slice(b" request_id=");
        debug_str(buf, id.as_bytes());
    }
    buf.push(b'\n');
}

/// `tracing-subscriber`'s JSON line (event fields flattened).
fn json(buf: &mut Vec<u8>, clock: &Clock, us: u32, l: &Line<'_>) {
    buf.extend_from_slice(b"{\"timestamp\":\"");
    clock.push_rfc3339(buf, us);
    buf.extend_from_slice(b"\",\"level\":\"INFO\",\"message\":\"access\",\"method\":");
    json_str(buf, l.request.method());
    buf.extend_from_slice(b",\"path\":");
    json_str(buf, l.request.path());
    buf.extend_from_slice(b",\"version\":\"");
    buf.extend_from_slice(version_str(l.request.version()));
    buf.extend_from_slice(b"\",\"status\":");
    push_u64(buf, u64::from(l.status));
    buf.extend_from_slice(b",\"route\":");
    json_str(buf, l.route.as_bytes());
    buf.extend_from_slice(b",\"outcome\":\"");
    buf.extend_from_slice(l.outcome.as_str().as_bytes());
    buf.extend_from_slice(b"\",\"duration_us\":");
    push_u64(buf, micros(l.duration));
    if let Some(u) = l.upstream {
        buf.extend_from_slice(b",\"upstream_us\":");
        push_u64(buf, micros(u));
    }
    if let Some(fp) = l.fingerprint {
        buf.extend_from_slice(b",\"fp\":\"");
        buf.extend_from_slice(&fp.short_hex());
        buf.push(b'"');
    }
    buf.extend_from_slice(b",\"peer\":\"");
    push_peer(buf, l.peer);
    buf.push(b'"');
    if let Some(id) = l.request_id {
        buf.extend_from_slice(b",\"request_id\":");
        json_str(buf, id.as_bytes());
    }
    buf.extend_from_slice(b",\"target\":\"revgate::access\"}\n");
}

/// nginx's `combined`: `$remote_addr - $remote_user [$time_local]
/// "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent"`.
fn combined(buf: &mut Vec<u8>, clock: &Clock, l: &Line<'_>) {
    push_ip(buf, l.peer.ip());
    buf.extend_from_slice(b" - - [");
    buf.extend_from_slice(&clock.clf);
    buf.extend_from_slice(b"] \"");
    nginx_escape(buf, l.request.method());
    buf.push(b' ');
    nginx_escape(buf, l.request.path());
    buf.push(b' ');
    buf.extend_from_slice(version_str(l.request.version()));
    buf.extend_from_slice(b"\" ");
    push_u64(buf, u64::from(l.status));
    buf.push(b' ');
    push_u64(buf, l.body_bytes);
    buf.extend_from_slice(b" \"");
    match l.request.referer() {
        Some(r) => nginx_escape(buf, r),
        None => buf.push(b'-'),
    }
    buf.extend_from_slice(b"\" \"");
    match l.request.agent() {
        Some(a) => nginx_escape(buf, a),
        None => buf.push(b'-'),
    }
    buf.extend_from_slice(b"\"\n");
}

/// `ip:port` as `SocketAddr`'s `Display` writes it (`[v6]:port`), without
/// `core::fmt` for IPv4 (~1,300 instructions a line through it: callgrind).
fn push_peer(buf: &mut Vec<u8>, peer: SocketAddr) {
    match peer {
        SocketAddr::V4(a) => {
            push_ip(buf, std::net::IpAddr::V4(*a.ip()));
            buf.push(b':');
            push_u64(buf, u64::from(a.port()));
        }
        SocketAddr::V6(_) => {
            let _ = write!(buf, "{peer}");
        }
    }
}

/// An address as `IpAddr`'s `Display` writes it.
fn push_ip(buf: &mut Vec<u8>, ip: std::net::IpAddr) {
    let mut text = [0u8; 64];
    buf.extend_from_slice(crate::hygiene::ip_text(ip, &mut text).as_bytes());
}

/// Copies the longest prefix of `s` that `escaped` leaves alone in one
/// go and returns the rest (starting at the first byte to escape): the
/// fields of a line seldom hold any.
fn plain_prefix<'a>(buf: &mut Vec<u8>, s: &'a [u8], escaped: impl Fn(u8) -> bool) -> &'a [u8] {
    let n = s.iter().position(|&b| escaped(b)).unwrap_or(s.len());
    buf.extend_from_slice(&s[..n]);
    &s[n..]
}

const HEX_LOWER: &[u8; 16] = b"0123456789abcdef";
const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// A string as Rust's `{:?}` writes it (what `tracing`'s text format did),
/// for the ASCII the fields hold; other bytes are copied.
fn debug_str(buf: &mut Vec<u8>, s: &[u8]) {
    buf.push(b'"');
    let s = plain_prefix(buf, s, |b| b == b'"' || b == b'\\' || b < 0x20 || b == 0x7f);
    for &b in s {
        match b {
            b'"' => buf.extend_from_slice(b"\\\""),
            b'\\' => buf.extend_from_slice(b"\\\\"),
            b'\n' => buf.extend_from_slice(b"\\n"),
            b'\r' => buf.extend_from_slice(b"\\r"),
            b'\t' => buf.extend_from_slice(b"\\t"),
            0 => buf.extend_from_slice(b"\\0"),
            c if c < 0x20 || c == 0x7f => {
                buf.extend_from_slice(b"\\u{");
                if c >= 0x10 {
                    buf.push(HEX_LOWER[usize::from(c >> 4)]);
                }
                buf.push(HEX_LOWER[usize::from(c & 0xf)]);
                buf.push(b'}');
            }
            c => buf.push(c),
        }
    }
    buf.push(b'"');
}

/// A JSON string, escaped as serde_json escapes it.
fn json_str(buf: &mut Vec<u8>, s: &[u8]) {
    buf.push(b'"');
    let s = plain_prefix(buf, s, |b| b == b'"' || b == b'\\' || b < 0x20);
    for &b in s {
        match b {
            b'"' => buf.extend_from_slice(b"\\\""),
            b'\\' => buf.extend_from_slice(b"\\\\"),
            b'\n' => buf.extend_from_slice(b"\\n"),
            b'\r' => buf.extend_from_slice(b"\\r"),
            b'\t' => buf.extend_from_slice(b"\\t"),
            0x08 => buf.extend_from_slice(b"\\b"),
            0x0c => buf.extend_from_slice(b"\\f"),
            c if c < 0x20 => {
                buf.extend_from_slice(b"\\u00");
                buf.push(HEX_LOWER[usize::from(c >> 4)]);
                buf.push(HEX_LOWER[usize::from(c & 0xf)]);
            }
            c => buf.push(c),
        }
    }
    buf.push(b'"');
}

/// nginx's log escaping: `"`, `\` and bytes outside printable ASCII as
/// `\xHH`.
fn nginx_escape(buf: &mut Vec<u8>, s: &[u8]) {
    let s = plain_prefix(buf, s, |b| {
        b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b)
    });
    for &b in s {
        if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
            buf.extend_from_slice(b"\\x");
            buf.push(HEX_UPPER[usize::from(b >> 4)]);
            buf.push(HEX_UPPER[usize::from(b & 0xf)]);
        } else {
            buf.push(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(format: Format, headers: &http::HeaderMap) -> Request {
        Request::capture(
            format,
            "GET",
            "/v1/things?access_token=SECRET-raw-token&x=1",
            http::Version::HTTP_11,
            headers,
        )
    }

    fn line<'a>(r: &'a Request, fp: &'a Fingerprint) -> Line<'a> {
        Line {
            request: r,
            status: 401,
            route: "default",
            outcome: Outcome::Revoked,
            duration: Duration::from_micros(1234),
            upstream: None,
            fingerprint: Some(fp),
            peer: "127.0.0.1:5555".parse().unwrap(),
            request_id: Some("req-42"),
            body_bytes: 17,
        }
    }

    fn clock(secs: u64) -> Clock {
        let mut c = Clock::default();
        c.set(secs);
        c
    }

    fn formatted(format: Format, l: &Line<'_>, secs: u64, micros: u32) -> String {
        let mut buf = Vec::new();
        format_line(&mut buf, &clock(secs), micros, format, l);
        String::from_utf8(buf).unwrap()
    }

    /// 2026-12-02T07:10:55Z
    const WHEN: u64 = 1_796_195_455;

    #[test]
    fn text_is_the_tracing_line_it_replaces() {
        let fp = Fingerprint::from_bytes([0xab; 16]);
        let r = request(Format::Text, &http::HeaderMap::new());
        let got = formatted(Format::Text, &line(&r, &fp), WHEN, 42);
        assert_eq!(
            got,
            "2026-12-02T07:10:55.000042Z  INFO revgate::access: access method=GET path=\"/v1/things\" version=HTTP/1.1 status=401 route=\"default\" outcome=\"revoked\" duration_us=1234 fp=\"abababab\" peer=127.0.0.1:5555 request_id=\"req-42\"\n"
        );
    }

    /// The line `tracing-subscriber` writes for the same event, installed
    /// locally the way `telemetry` installs it, field for field.
    #[test]
    fn text_and_json_match_tracing_subscriber() {
        use tracing_subscriber::layer::SubscriberExt;
        let fp = Fingerprint::from_bytes([7; 16]);
        let r = request(Format::Json, &http::HeaderMap::new());
        let mut l = line(&r, &fp);
        l.upstream = Some(Duration::from_micros(900));
        l.route = "we\"ird\\route";
        for format in [Format::Text, Format::Json] {
            let logs = crate::telemetry::LogCapture::new();
            let layer = tracing_subscriber::fmt::layer()
                .with_writer(logs.clone())
                .with_ansi(false);
            let d = match format {
                Format::Json => tracing::Dispatch::new(
                    tracing_subscriber::registry().with(
                        layer
                            .json()
                            .flatten_event(true)
                            .with_current_span(true)
                            .with_span_list(false),
                    ),
                ),
                _ => tracing::Dispatch::new(tracing_subscriber::registry().with(layer)),
            };
            tracing::dispatcher::with_default(&d, || {
                tracing::info!(
                    target: "revgate::access",
                    method = %"GET",
                    path = "/v1/things",
                    version = ?http::Version::HTTP_11,
                    status = l.status,
                    route = l.route,
                    outcome = l.outcome.as_str(),
                    duration_us = 1234u64,
                    upstream_us = Some(900u64),
                    fp = Some("07070707"),
                    peer = Some(tracing::field::display(l.peer)),
                    request_id = Some("req-42"),
                    "access"
                );
            });
            let theirs = logs.contents();
            let ours = formatted(format, &l, WHEN, 0);
            // Everything after the timestamp is the same bytes.
            let cut = |s: &str| {
                s.split_once(if format == Format::Json {
                    "\"level\""
                } else {
                    "Z "
                })
                .map(|(_, b)| b.to_string())
            };
            assert_eq!(
                cut(&ours),
                cut(&theirs),
                "{format:?}\nours:   {ours}theirs: {theirs}"
            );
            assert_eq!(
                ours.len(),
                theirs.len(),
                "{format:?}: the timestamps' widths"
            );
        }
    }

    #[test]
    fn json_parses_field_by_field() {
        let fp = Fingerprint::from_bytes([0xab; 16]);
        let r = request(Format::Json, &http::HeaderMap::new());
        let text = formatted(Format::Json, &line(&r, &fp), WHEN, 123_456);
        assert!(!text.contains("SECRET"), "{text}");
        assert!(
            !text.contains(&fp.to_hex()),
            "only a prefix of the fingerprint"
        );
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["timestamp"], "2026-12-02T07:10:55.123456Z");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["target"], "revgate::access");
        assert_eq!(v["message"], "access");
        assert_eq!(v["method"], "GET");
        assert_eq!(v["path"], "/v1/things");
        assert_eq!(v["version"], "HTTP/1.1");
        assert_eq!(v["status"], 401);
        assert_eq!(v["route"], "default");
        assert_eq!(v["outcome"], "revoked");
        assert_eq!(v["duration_us"], 1234);
        assert!(v.get("upstream_us").is_none());
        assert_eq!(v["fp"], "abababab");
        assert_eq!(v["peer"], "127.0.0.1:5555");
        assert_eq!(v["request_id"], "req-42");
        assert_eq!(v.as_object().unwrap().len(), 14, "{text}");
    }

    #[test]
    fn combined_is_nginxs() {
        let fp = Fingerprint::from_bytes([0xab; 16]);
        let mut h = http::HeaderMap::new();
        h.insert(
            "user-agent",
            "curl/8.5 \"quoted\" back\\slash".parse().unwrap(),
        );
        h.insert(
            "referer",
            http::HeaderValue::from_bytes(b"https://app.example/p\xc3\xa9?access_token=SECRET-ref")
                .unwrap(),
        );
        h.insert("authorization", "Bearer SECRET-auth".parse().unwrap());
        h.insert("cookie", "s=SECRET-cookie".parse().unwrap());
        let r = request(Format::Combined, &h);
        let got = formatted(Format::Combined, &line(&r, &fp), WHEN, 0);
        assert_eq!(
            got,
            "127.0.0.1 - - [02/Dec/2026:07:10:55 +0000] \"GET /v1/things HTTP/1.1\" 401 17 \"https://app.example/p\\xC3\\xA9\" \"curl/8.5 \\x22quoted\\x22 back\\x5Cslash\"\n"
        );
        // Absent headers are `-`; an IPv6 peer is written without brackets.
        let r = Request::capture(
            Format::Combined,
            "POST",
            "/a\x01b",
            http::Version::HTTP_2,
            &http::HeaderMap::new(),
        );
        let mut l = line(&r, &fp);
        l.peer = "[::1]:443".parse().unwrap();
        let got = formatted(Format::Combined, &l, 0, 0);
        assert_eq!(
            got,
            "::1 - - [01/Jan/1970:00:00:00 +0000] \"POST /a\\x01b HTTP/2.0\" 401 17 \"-\" \"-\"\n"
        );
    }

    #[test]
    fn dates_agree_with_httpdate() {
        for secs in [
            0u64,
            951_782_400,
            1_709_164_800,
            WHEN,
            4_102_444_799,
            4_107_542_400,
        ] {
            let c = clock(secs);
            let http = httpdate::fmt_http_date(SystemTime::UNIX_EPOCH + Duration::from_secs(secs));
            // "Wed, 02 Dec 2026 07:10:55 GMT"
            let p: Vec<&str> = http.split(' ').collect();
            let clf = format!("{}/{}/{}:{} +0000", p[1], p[2], p[3], p[4]);
            assert_eq!(std::str::from_utf8(&c.clf).unwrap(), clf, "{secs}");
            let month = MONTHS.iter().position(|m| m == &p[2].as_bytes()).unwrap() + 1;
            let rfc = format!("{}-{month:02}-{}T{}", p[3], p[1], p[4]);
            assert_eq!(std::str::from_utf8(&c.rfc3339).unwrap(), rfc, "{secs}");
        }
    }

    #[test]
    fn escapes() {
        let mut b = Vec::new();
        debug_str(&mut b, b"a\"b\\c\nd\x1b\x7f\x00");
        assert_eq!(
            String::from_utf8(b).unwrap(),
            format!("{:?}", "a\"b\\c\nd\x1b\x7f\x00")
        );
        let mut b = Vec::new();
        let s = "a\"b\\c\nd\x1b\x7f\x08\x0c\u{e9}";
        json_str(&mut b, s.as_bytes());
        assert_eq!(
            String::from_utf8(b).unwrap(),
            serde_json::to_string(s).unwrap()
        );
        let mut b = Vec::new();
        nginx_escape(&mut b, b"ok ~\"\\\x00\x1f\x7f\xff");
        assert_eq!(
            String::from_utf8(b).unwrap(),
            "ok ~\\x22\\x5C\\x00\\x1F\\x7F\\xFF"
        );
    }

    #[test]
    fn peers_print_as_display_does() {
        for p in [
            "127.0.0.1:40000",
            "0.0.0.0:0",
            "255.255.255.255:65535",
            "10.1.20.3:8",
            "[::1]:443",
            "[2001:db8::ff00:42:8329]:80",
            "[::ffff:192.0.2.1]:9",
        ] {
            let a: SocketAddr = p.parse().unwrap();
            let mut b = Vec::new();
            push_peer(&mut b, a);
            assert_eq!(String::from_utf8(b).unwrap(), a.to_string());
            let mut b = Vec::new();
            push_ip(&mut b, a.ip());
            assert_eq!(String::from_utf8(b).unwrap(), a.ip().to_string());
        }
        // Nothing to escape: copied whole, and the same as escaping would write.
        let mut b = Vec::new();
        debug_str(&mut b, b"/v1/things");
        assert_eq!(String::from_utf8(b).unwrap(), format!("{:?}", "/v1/things"));
        let mut b = Vec::new();
        json_str(&mut b, b"/v1/things");
        assert_eq!(b, b"\"/v1/things\"");
        let mut b = Vec::new();
        nginx_escape(&mut b, b"curl/8.0");
        assert_eq!(b, b"curl/8.0");
    }

    #[test]
    fn request_buffers_are_reused() {
        let h = http::HeaderMap::new();
        let r = request(Format::Text, &h);
        let p = r.buf.as_ptr();
        drop(r);
        let r = request(Format::Text, &h);
        assert_eq!(r.buf.as_ptr(), p, "taken back from the free list");
        assert_eq!(r.method(), b"GET");
        assert_eq!(r.path(), b"/v1/things");
        assert_eq!(r.agent(), None);
    }

    /// Lines reach the file in order: some through full buffers, the rest
    /// through the sweep and `close`.
    #[test]
    fn every_line_reaches_the_file_by_close() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let log = AccessLog::start(Destination::File(path.clone())).unwrap();
        let n = 3000u64;
        let threads: Vec<_> = (0..3)
            .map(|t| {
                let log = log.clone();
                std::thread::spawn(move || {
                    let fp = Fingerprint::from_bytes([1; 16]);
                    let r = request(Format::Json, &http::HeaderMap::new());
                    for i in 0..n {
                        let mut l = line(&r, &fp);
                        l.body_bytes = t * n + i;
                        l.status = 200;
                        log.write(Format::Combined, &l);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(log.close(Duration::from_secs(10)));
        let text = std::fs::read_to_string(&path).unwrap();
        let mut per_thread = [Vec::new(), Vec::new(), Vec::new()];
        for l in text.lines() {
            let bytes: u64 = l.split(' ').nth(9).unwrap().parse().unwrap();
            per_thread[(bytes / n) as usize].push(bytes % n);
        }
        for seen in per_thread {
            assert_eq!(seen, (0..n).collect::<Vec<_>>());
        }
        assert_eq!(log.dropped(), 0);
    }
}
