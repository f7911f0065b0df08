//! Raw HTTP/1.1 on both sides of the gateway, byte for byte: a scripted
//! upstream that records exactly what each connection received and answers
//! with scripted bytes, and a client that writes bytes and reads with a
//! deadline. A small HTTP/1.1 message parser (Content-Length, chunked,
//! close-delimited) lets both sides find where each message ends.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The default deadline of every wait.
pub const WAIT: Duration = Duration::from_secs(5);

// === messages ===

/// One HTTP/1.1 message as it was on the wire.
#[derive(Clone, Debug, Default)]
pub struct Message {
    /// The request line or status line, without CRLF.
    pub start: String,
    /// Header fields in wire order: name as sent, value with OWS trimmed.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The payload (chunked framing removed).
    pub body: Vec<u8>,
    /// The exact bytes of the whole message.
    pub raw: Vec<u8>,
    /// The exact bytes of the head (through the blank line).
    pub head: Vec<u8>,
}

impl Message {
    /// Every value of a header (case-insensitive name), in wire order.
    pub fn all(&self, name: &str) -> Vec<&[u8]> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
            .collect()
    }

    /// The first value of a header, as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.all(name)
            .first()
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// Whether the header is present.
    pub fn has(&self, name: &str) -> bool {
        !self.all(name).is_empty()
    }

    /// The status code of a response (0 if unparsable).
    pub fn status(&self) -> u16 {
        self.start
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Header names in wire order, lowercased.
    pub fn names(&self) -> Vec<String> {
        self.headers
            .iter()
            .map(|(n, _)| n.to_ascii_lowercase())
            .collect()
    }
}

/// What parsing a buffer found.
#[derive(Debug)]
pub enum Parse {
    /// A whole message and the number of bytes it used.
    Done(Message, usize),
    /// Not enough bytes yet.
    Partial,
    /// Not a valid message.
    Invalid(String),
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if from > hay.len() {
        return None;
    }
    hay[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

fn trim(v: &[u8]) -> &[u8] {
    let s = v
        .iter()
        .position(|b| *b != b' ' && *b != b'\t')
        .unwrap_or(v.len());
    let e = v
        .iter()
        .rposition(|b| *b != b' ' && *b != b'\t')
        .map_or(s, |p| p + 1);
    &v[s..e.max(s)]
}

/// Parses one message from the front of `buf`. `response`: a status line is
/// expected; `no_body`: the answer to a HEAD; `eof`: the peer has closed, so a
/// close-delimited response ends here.
pub fn parse(buf: &[u8], response: bool, no_body: bool, eof: bool) -> Parse {
    let Some(head_end) = find(buf, b"\r\n\r\n", 0) else {
        return Parse::Partial;
    };
    let head = &buf[..head_end + 4];
    let mut lines = head[..head_end].split(|b| *b == b'\n');
    let start = lines.next().unwrap_or_default();
    let start = String::from_utf8_lossy(start.strip_suffix(b"\r").unwrap_or(start)).into_owned();
    let mut headers = Vec::new();
    for line in lines {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            return Parse::Invalid(format!("header line without colon: {line:?}"));
        };
        headers.push((
            String::from_utf8_lossy(&line[..colon]).into_owned(),
            trim(&line[colon + 1..]).to_vec(),
        ));
    }
    let mut msg = Message {
        start,
        headers,
        head: head.to_vec(),
        ..Default::default()
    };
    let body_start = head_end + 4;
    let status = msg.status();
    let bodiless =
        no_body || (response && ((100..200).contains(&status) || status == 204 || status == 304));
    if bodiless {
        msg.raw = head.to_vec();
        return Parse::Done(msg, body_start);
    }
    let te = msg.all("transfer-encoding");
    if !te.is_empty() {
        let last = te
            .last()
            .and_then(|v| v.split(|b| *b == b',').next_back())
            .map(trim)
            .unwrap_or_default();
        if !last.eq_ignore_ascii_case(b"chunked") {
            return Parse::Invalid("transfer-encoding does not end in chunked".into());
        }
        let mut pos = body_start;
        let mut body = Vec::new();
        loop {
            let Some(eol) = find(buf, b"\r\n", pos) else {
                return Parse::Partial;
            };
            let line = &buf[pos..eol];
            let size = line
                .split(|b| *b == b';')
                .next()
                .map(trim)
                .unwrap_or_default();
            let Ok(size) = usize::from_str_radix(&String::from_utf8_lossy(size), 16) else {
                return Parse::Invalid(format!("bad chunk size {line:?}"));
            };
            pos = eol + 2;
            if size == 0 {
                // Trailers until an empty line.
                loop {
                    let Some(eol) = find(buf, b"\r\n", pos) else {
                        return Parse::Partial;
                    };
                    let empty = eol == pos;
                    pos = eol + 2;
                    if empty {
                        break;
                    }
                }
                break;
            }
            if buf.len() < pos + size + 2 {
                return Parse::Partial;
            }
            body.extend_from_slice(&buf[pos..pos + size]);
            if &buf[pos + size..pos + size + 2] != b"\r\n" {
                return Parse::Invalid("chunk not followed by CRLF".into());
            }
            pos += size + 2;
        }
        msg.body = body;
        msg.raw = buf[..pos].to_vec();
        return Parse::Done(msg, pos);
    }
    let cls = msg.all("content-length");
    if !cls.is_empty() {
        let first = cls[0].to_vec();
        if cls.iter().any(|v| *v != first.as_slice()) {
            return Parse::Invalid("conflicting content-length".into());
        }
        let Ok(n) = String::from_utf8_lossy(&first).parse::<usize>() else {
            return Parse::Invalid("bad content-length".into());
        };
        if buf.len() < body_start + n {
            return Parse::Partial;
        }
        msg.body = buf[body_start..body_start + n].to_vec();
        msg.raw = buf[..body_start + n].to_vec();
        return Parse::Done(msg, body_start + n);
    }
    if response {
        if !eof {
            return Parse::Partial;
        }
        msg.body = buf[body_start..].to_vec();
        msg.raw = buf.to_vec();
        return Parse::Done(msg, buf.len());
    }
    msg.raw = head.to_vec();
    Parse::Done(msg, body_start)
}

// === upstream ===

/// How the upstream answers one request.
#[derive(Clone, Debug)]
pub enum Reply {
    /// Writes these bytes; the connection stays open for more requests.
    Send(Vec<u8>),
    /// Writes these bytes, then closes (a partial body is just short bytes).
    SendClose(Vec<u8>),
    /// Writes these bytes, keeps the connection idle this long, then closes it.
    SendIdleClose(Vec<u8>, Duration),
    /// Closes right after reading the request, answering nothing.
    Close,
    /// Sleeps, then does the inner reply.
    After(Duration, Box<Reply>),
}

/// A 200 with a Content-Length body.
pub fn ok(body: &[u8]) -> Vec<u8> {
    let mut v = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    v.extend_from_slice(body);
    v
}

/// A request as the upstream saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    /// Which accepted connection (0-based, in accept order).
    pub conn: usize,
    /// Its position on that connection (0-based).
    pub on_conn: usize,
    /// Its position among all requests (0-based).
    pub n: usize,
    /// The request.
    pub msg: Message,
}

type Script = dyn Fn(&Seen) -> Reply + Send + Sync;

#[derive(Default)]
struct Shared {
    conns: Mutex<Vec<Vec<u8>>>,
    seen: Mutex<Vec<Seen>>,
    errors: Mutex<Vec<String>>,
    /// Connections whose thread has returned (peer closed, or scripted close).
    ended: std::sync::atomic::AtomicUsize,
}

/// Counts its connection as ended when its thread returns, even by a panic.
struct EndGuard(Arc<Shared>);

impl Drop for EndGuard {
    fn drop(&mut self) {
        self.0.ended.fetch_add(1, Ordering::SeqCst);
    }
}

/// A scripted raw upstream on 127.0.0.1:0; stops on drop.
pub struct RawUpstream {
    /// Its address.
    pub addr: SocketAddr,
    /// `http://addr`.
    pub url: String,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    tasks: super::tasks::Tasks,
}

impl Drop for RawUpstream {
    /// Stops the threads; a panic in any of them (a script's assertion)
    /// fails the test here.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.tasks.finish();
    }
}

impl RawUpstream {
    /// Answers every request with `script(request)`.
    pub fn start(script: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
        let stop = Arc::new(AtomicBool::new(false));
        let script: Arc<Script> = Arc::new(script);
        let (sh, st) = (shared.clone(), stop.clone());
        let tasks = super::tasks::Tasks::default();
        let t = tasks.clone();
        tasks.thread(move || {
            while !st.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let id = {
                            let mut c = sh.conns.lock().unwrap();
                            c.push(Vec::new());
                            c.len() - 1
                        };
                        let (sh, st, script) = (sh.clone(), st.clone(), script.clone());
                        t.thread(move || {
                            let _ended = EndGuard(sh.clone());
                            serve_conn(s, id, &sh, &st, &*script)
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        RawUpstream {
            addr,
            url: format!("http://{addr}"),
            shared,
            stop,
            tasks,
        }
    }

    /// Answers requests with these replies in order, then with `ok(b"ok")`.
    pub fn queue(replies: Vec<Reply>) -> Self {
        let q = Mutex::new(std::collections::VecDeque::from(replies));
        Self::start(move |_| {
            q.lock()
                .unwrap()
                .pop_front()
                .unwrap_or(Reply::Send(ok(b"ok")))
        })
    }

    /// Exactly the bytes each connection received, in accept order.
    pub fn conns(&self) -> Vec<Vec<u8>> {
        self.shared.conns.lock().unwrap().clone()
    }

    /// Every byte received on any connection, concatenated.
    pub fn all_bytes(&self) -> Vec<u8> {
        self.conns().concat()
    }

    /// The requests parsed so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// Bytes it could not parse as a request.
    pub fn errors(&self) -> Vec<String> {
        self.shared.errors.lock().unwrap().clone()
    }

    /// Waits (at most `limit`) until every connection it accepted has ended:
    /// after the gateway is gone, everything it sent is then recorded.
    /// Whether they all did.
    pub fn wait_ended(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            let accepted = self.shared.conns.lock().unwrap().len();
            if self.shared.ended.load(Ordering::SeqCst) >= accepted {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits until `n` requests were seen (or the deadline); returns them.
    pub fn wait_seen(&self, n: usize, limit: Duration) -> Vec<Seen> {
        let deadline = Instant::now() + limit;
        loop {
            let s = self.seen();
            if s.len() >= n || Instant::now() > deadline {
                return s;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn serve_conn(mut s: TcpStream, id: usize, sh: &Shared, stop: &AtomicBool, script: &Script) {
    let _ = s.set_nodelay(true);
    let _ = s.set_read_timeout(Some(Duration::from_millis(50)));
    let mut buf = Vec::new();
    let mut on_conn = 0;
    let mut chunk = [0u8; 64 * 1024];
    loop {
        match parse(&buf, false, false, false) {
            Parse::Done(msg, used) => {
                buf.drain(..used);
                let seen = {
                    let mut all = sh.seen.lock().unwrap();
                    let seen = Seen {
                        conn: id,
                        on_conn,
                        n: all.len(),
                        msg,
                    };
                    all.push(seen.clone());
                    seen
                };
                on_conn += 1;
                let mut reply = script(&seen);
                loop {
                    match reply {
                        Reply::After(d, inner) => {
                            std::thread::sleep(d);
                            reply = *inner;
                        }
                        Reply::Send(b) => {
                            if s.write_all(&b).is_err() {
                                return;
                            }
                            break;
                        }
                        Reply::SendClose(b) => {
                            let _ = s.write_all(&b);
                            let _ = s.shutdown(Shutdown::Both);
                            return;
                        }
                        Reply::SendIdleClose(b, d) => {
                            let _ = s.write_all(&b);
                            std::thread::sleep(d);
                            let _ = s.shutdown(Shutdown::Both);
                            return;
                        }
                        Reply::Close => return,
                    }
                }
                continue;
            }
            Parse::Invalid(e) => {
                sh.errors.lock().unwrap().push(e);
                return;
            }
            Parse::Partial => {}
        }
        match s.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                sh.conns.lock().unwrap()[id].extend_from_slice(&chunk[..n]);
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}

// === client ===

/// A raw client connection; every read has a deadline.
pub struct RawClient {
    /// The connection.
    pub stream: TcpStream,
    /// Bytes read and not yet consumed as a response.
    pub buf: Vec<u8>,
    /// Whether the peer closed (EOF or reset).
    pub eof: bool,
}

impl RawClient {
    /// Connects.
    pub fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_nodelay(true).unwrap();
        RawClient {
            stream,
            buf: Vec::new(),
            eof: false,
        }
    }

    /// Writes all of `bytes` (errors ignored: the peer may have closed).
    pub fn send(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes);
    }

    /// One read, waiting at most until `deadline`; false on timeout or EOF.
    fn fill(&mut self, deadline: Instant) -> bool {
        if self.eof {
            return false;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let _ = self
            .stream
            .set_read_timeout(Some(left.min(Duration::from_millis(100))));
        let mut chunk = [0u8; 64 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => {
                self.eof = true;
                false
            }
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                true
            }
            Err(_) => {
                self.eof = true;
                false
            }
        }
    }

    /// Reads until `pred(buf, eof)` holds, EOF, or `limit`; returns whether it held.
    pub fn read_until(&mut self, limit: Duration, pred: impl Fn(&[u8], bool) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if pred(&self.buf, self.eof) {
                return true;
            }
            if self.eof || Instant::now() >= deadline {
                return false;
            }
            self.fill(deadline);
        }
    }

    /// The next response, or why there is none within [`WAIT`].
    pub fn try_response(&mut self, head_request: bool) -> Result<Message, String> {
        let deadline = Instant::now() + WAIT;
        loop {
            match parse(&self.buf, true, head_request, self.eof) {
                Parse::Done(m, used) => {
                    self.buf.drain(..used);
                    return Ok(m);
                }
                Parse::Invalid(e) => {
                    return Err(format!("invalid response ({e}): {:?}", self.text()))
                }
                Parse::Partial if self.eof => {
                    return Err(format!(
                        "closed mid-response or before one: {:?}",
                        self.text()
                    ))
                }
                Parse::Partial if Instant::now() >= deadline => {
                    return Err(format!("no whole response in time: {:?}", self.text()))
                }
                Parse::Partial => {
                    self.fill(deadline);
                }
            }
        }
    }

    /// The next response; panics if none comes within [`WAIT`].
    pub fn response(&mut self) -> Message {
        self.try_response(false).unwrap()
    }

    /// The next response to a HEAD request.
    pub fn head_response(&mut self) -> Message {
        self.try_response(true).unwrap()
    }

    /// Waits (within [`WAIT`]) for the peer to close; true if it did.
    pub fn closed(&mut self) -> bool {
        self.read_until(WAIT, |_, eof| eof)
    }

    /// The unconsumed bytes, as lossy text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf).into_owned()
    }
}

/// Writes `request` on a new connection and returns every byte read back
/// through the end of the first whole response, or until the gateway
/// closes, or 10 s: one exchange, for tests that only need the answer.
pub fn raw_http(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut c = RawClient::connect(addr);
    c.send(request);
    c.read_until(Duration::from_secs(10), |b, eof| {
        eof || matches!(parse(b, true, false, eof), Parse::Done(..))
    });
    c.buf
}

/// The status code of a raw HTTP/1.1 response (the test fails without one).
pub fn status_of(resp: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(resp);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"))
}
