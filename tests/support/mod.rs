//! Test harness: a real upstream that records what reached it, the real
//! `revgate` binary on ephemeral ports, and a real HTTP client.
//!
//! `Upstream::new().spawn()` serves on 127.0.0.1:0. Paths it knows:
//! `/download/<n>` streams n bytes; `/upload` consumes the body and answers
//! its length (without recording it); `/hang` never answers; `/panic`
//! panics (a panic in any server task fails the test when the server is
//! dropped: see `tasks.rs`); `/status/<code>`
//! answers that status; `/ws` accepts a WebSocket-style upgrade and echoes
//! (each upgraded connection recorded as an [`UpgradeSeen`]: what arrived on
//! it, and when it closed); `/drip` streams a small chunk every 20 ms (at
//! most 60 s), recorded as a [`DripSeen`]; `/sink` records its request body
//! as it arrives (an [`UpgradeSeen`] in `Seen::sinks`) and answers 200 only
//! once it has ended; anything else answers the configured status and
//! records the request.
//!
//! `Gateway::new().upstream(url).spawn()` starts the binary with
//! `--listen 127.0.0.1:0 --admin-listen 127.0.0.1:0` and reads the bound
//! ports from its first stdout line; it is killed on drop.
#![allow(dead_code)]

pub mod certs;
pub mod jwks;
pub mod prometheus;
pub mod raw;
pub mod tasks;

/// One request on a fresh raw connection ([`raw::RawClient`]).
#[allow(unused_imports)]
pub use raw::{raw_http, status_of};

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

// === Upstream ===

/// What reached the upstream.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: Method,
    pub uri: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The request's trailer section, if it had one.
    pub trailers: Option<HeaderMap>,
}

pub struct Upstream {
    status: u16,
}

pub struct RunningUpstream {
    pub addr: SocketAddr,
    pub url: String,
    pub hits: Arc<AtomicUsize>,
    pub recorded: Arc<Mutex<Vec<Recorded>>>,
    pub seen: Arc<Seen>,
    tasks: tasks::Tasks,
}

/// Long-lived exchanges the upstream has served.
#[derive(Default)]
pub struct Seen {
    pub upgrades: Mutex<Vec<Arc<UpgradeSeen>>>,
    pub drips: Mutex<Vec<Arc<DripSeen>>>,
    pub sinks: Mutex<Vec<Arc<UpgradeSeen>>>,
    /// Every task of the server (connections, drips, upgrades, downloads).
    pub tasks: tasks::Tasks,
}

/// One upgraded connection, as the upstream saw it.
pub struct UpgradeSeen {
    /// The upgrade request's `Authorization`.
    pub authorization: Option<String>,
    /// Every byte that arrived on it.
    pub received: Mutex<Vec<u8>>,
    closed: tokio::sync::watch::Sender<bool>,
}

impl UpgradeSeen {
    pub fn received(&self) -> Vec<u8> {
        self.received.lock().unwrap().clone()
    }

    pub fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    /// Waits until the gateway closed its side (EOF or error); false past `limit`.
    pub async fn wait_closed(&self, limit: Duration) -> bool {
        let mut rx = self.closed.subscribe();
        let r = tokio::time::timeout(limit, rx.wait_for(|c| *c)).await;
        r.is_ok()
    }
}

/// One `/drip` response, as the upstream saw it.
pub struct DripSeen {
    pub authorization: Option<String>,
    /// Chunks handed to the connection so far.
    pub sent: AtomicUsize,
    gone: tokio::sync::watch::Sender<bool>,
}

impl DripSeen {
    pub fn sent(&self) -> usize {
        self.sent.load(Ordering::SeqCst)
    }

    pub fn is_gone(&self) -> bool {
        *self.gone.borrow()
    }

    /// Waits until the response was abandoned (its receiver dropped); false past `limit`.
    pub async fn wait_gone(&self, limit: Duration) -> bool {
        let mut rx = self.gone.subscribe();
        let r = tokio::time::timeout(limit, rx.wait_for(|c| *c)).await;
        r.is_ok()
    }
}

/// The entries of `list` whose request carried `Bearer <token>`.
fn bearing<T>(
    list: &Mutex<Vec<Arc<T>>>,
    token: &str,
    authorization: impl Fn(&T) -> Option<&str>,
) -> Vec<Arc<T>> {
    let want = format!("Bearer {token}");
    list.lock()
        .unwrap()
        .iter()
        .filter(|u| authorization(u) == Some(want.as_str()))
        .cloned()
        .collect()
}

impl Seen {
    /// The upgraded connections whose request carried `Bearer <token>`.
    pub fn upgrades_of(&self, token: &str) -> Vec<Arc<UpgradeSeen>> {
        bearing(&self.upgrades, token, |u| u.authorization.as_deref())
    }

    /// The `/sink` requests whose request carried `Bearer <token>`.
    pub fn sinks_of(&self, token: &str) -> Vec<Arc<UpgradeSeen>> {
        bearing(&self.sinks, token, |u| u.authorization.as_deref())
    }

    /// The `/drip` responses whose request carried `Bearer <token>`.
    pub fn drips_of(&self, token: &str) -> Vec<Arc<DripSeen>> {
        bearing(&self.drips, token, |u| u.authorization.as_deref())
    }
}

impl Drop for RunningUpstream {
    /// Stops the server; a panic in any of its tasks fails the test here.
    fn drop(&mut self) {
        self.tasks.finish();
    }
}

impl RunningUpstream {
    /// Requests that reached the upstream.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn last(&self) -> Option<Recorded> {
        self.recorded.lock().unwrap().last().cloned()
    }

    pub fn all(&self) -> Vec<Recorded> {
        self.recorded.lock().unwrap().clone()
    }
}

type UpBody = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

fn up_full(b: impl Into<Bytes>) -> UpBody {
    Full::new(b.into()).boxed()
}

impl Upstream {
    pub fn new() -> Self {
        Upstream { status: 200 }
    }

    /// The status of ordinary answers.
    pub fn respond(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    pub async fn spawn(self) -> RunningUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let recorded = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::new(Seen::default());
        let status = self.status;
        let (h, r, sn) = (hits.clone(), recorded.clone(), seen.clone());
        let tasks = seen.tasks.clone();
        let t = tasks.clone();
        tasks.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (h, r, sn) = (h.clone(), r.clone(), sn.clone());
                t.spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let (h, r, sn) = (h.clone(), r.clone(), sn.clone());
                        async move {
                            Ok::<_, std::convert::Infallible>(serve(req, status, h, r, sn).await)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        RunningUpstream {
            addr,
            url: format!("http://{addr}"),
            hits,
            recorded,
            seen,
            tasks,
        }
    }
}

async fn serve(
    mut req: Request<Incoming>,
    status: u16,
    hits: Arc<AtomicUsize>,
    recorded: Arc<Mutex<Vec<Recorded>>>,
    seen: Arc<Seen>,
) -> Response<UpBody> {
    hits.fetch_add(1, Ordering::SeqCst);
    let path = req.uri().path().to_string();
    let authorization = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if path == "/panic" {
        // For the harness's own test: a panic in a server task fails the test.
        panic!("the upstream was asked to panic");
    }
    if path == "/sink" {
        let sink = Arc::new(UpgradeSeen {
            authorization,
            received: Mutex::new(Vec::new()),
            closed: tokio::sync::watch::channel(false).0,
        });
        seen.sinks.lock().unwrap().push(sink.clone());
        let mut body = req.into_body();
        let mut clean = false;
        loop {
            match body.frame().await {
                Some(Ok(f)) => {
                    if let Some(d) = f.data_ref() {
                        sink.received.lock().unwrap().extend_from_slice(d);
                    }
                }
                Some(Err(_)) => break,
                None => {
                    clean = true;
                    break;
                }
            }
        }
        sink.closed.send_replace(true);
        let n = sink.received().len();
        return Response::new(up_full(if clean { n.to_string() } else { "cut".into() }));
    }
    if path == "/drip" {
        let drip = Arc::new(DripSeen {
            authorization,
            sent: AtomicUsize::new(0),
            gone: tokio::sync::watch::channel(false).0,
        });
        seen.drips.lock().unwrap().push(drip.clone());
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        seen.tasks.spawn(async move {
            // Bounded: 3000 chunks of 20 ms is 60 s at most.
            for i in 0..3000u32 {
                let chunk = Bytes::from(format!("chunk {i}\n"));
                if tx.send(Ok(Frame::data(chunk))).await.is_err() {
                    break;
                }
                drip.sent.fetch_add(1, Ordering::SeqCst);
                tokio::select! {
                    _ = tx.closed() => break,
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                }
            }
            drip.gone.send_replace(true);
        });
        return Response::new(StreamBody::new(tokio_stream_from(rx)).boxed());
    }
    if let Some(n) = path.strip_prefix("/download/") {
        let total: u64 = n.parse().unwrap_or(0);
        let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
        let stream = futures_stream(&seen.tasks, total, chunk);
        return Response::new(StreamBody::new(stream).boxed());
    }
    if path == "/upload" {
        let mut body = req.into_body();
        let mut n: u64 = 0;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => {
                    if let Some(d) = f.data_ref() {
                        n += d.len() as u64;
                    }
                }
                Err(_) => break,
            }
        }
        return Response::new(up_full(n.to_string()));
    }
    if path == "/hang" {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    if path == "/ws" {
        let on = hyper::upgrade::on(&mut req);
        let up = Arc::new(UpgradeSeen {
            authorization,
            received: Mutex::new(Vec::new()),
            closed: tokio::sync::watch::channel(false).0,
        });
        seen.upgrades.lock().unwrap().push(up.clone());
        seen.tasks.spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            if let Ok(upgraded) = on.await {
                let mut io = TokioIo::new(upgraded);
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    match io.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            up.received.lock().unwrap().extend_from_slice(&buf[..n]);
                            if io.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            }
            up.closed.send_replace(true);
        });
        let mut resp = Response::new(up_full(Bytes::new()));
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        resp.headers_mut()
            .insert("upgrade", "websocket".parse().unwrap());
        resp.headers_mut()
            .insert("connection", "upgrade".parse().unwrap());
        return resp;
    }
    let code = path
        .strip_prefix("/status/")
        .and_then(|c| c.parse().ok())
        .unwrap_or(status);
    let (parts, body) = req.into_parts();
    let (body, trailers) = match body.collect().await {
        Ok(c) => {
            let trailers = c.trailers().cloned();
            (c.to_bytes(), trailers)
        }
        Err(_) => (Bytes::new(), None),
    };
    recorded.lock().unwrap().push(Recorded {
        method: parts.method,
        uri: parts.uri.to_string(),
        headers: parts.headers,
        body,
        trailers,
    });
    let mut resp = Response::new(up_full(r#"{"upstream":"ok"}"#));
    *resp.status_mut() = StatusCode::from_u16(code).unwrap();
    resp.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    resp.headers_mut()
        .insert("x-upstream", "1".parse().unwrap());
    resp
}

fn futures_stream(
    tasks: &tasks::Tasks,
    total: u64,
    chunk: Bytes,
) -> impl futures_core::Stream<Item = Result<Frame<Bytes>, std::convert::Infallible>> + Send {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tasks.spawn(async move {
        let mut sent = 0u64;
        while sent < total {
            let n = (total - sent).min(chunk.len() as u64) as usize;
            if tx.send(Ok(Frame::data(chunk.slice(..n)))).await.is_err() {
                return;
            }
            sent += n as u64;
        }
    });
    tokio_stream_from(rx)
}

fn tokio_stream_from<T>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_core::Stream<Item = T> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

// === Gateway (the real binary) ===

pub struct Gateway {
    args: Vec<String>,
    toml: String,
    dir: Option<PathBuf>,
    env: Vec<(String, String)>,
}

pub struct RunningGateway {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub url: String,
    pub admin_url: String,
    pub dir: PathBuf,
    pub log: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    spec: (Vec<String>, String, Vec<(String, String)>),
}

impl Gateway {
    pub fn new() -> Self {
        Gateway {
            args: Vec::new(),
            toml: String::new(),
            dir: None,
            env: Vec::new(),
        }
    }

    pub fn upstream(mut self, url: &str) -> Self {
        self.args.extend(["--upstream".into(), url.into()]);
        self
    }

    pub fn arg(mut self, a: &str) -> Self {
        self.args.push(a.into());
        self
    }

    /// TOML appended to the config file.
    pub fn toml(mut self, t: &str) -> Self {
        self.toml.push_str(t);
        self.toml.push('\n');
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    /// Work directory (journal, config, log); a fresh temp dir by default.
    pub fn dir(mut self, d: &Path) -> Self {
        self.dir = Some(d.to_path_buf());
        self
    }

    pub fn spawn(self) -> RunningGateway {
        let (tmp, dir) = match self.dir {
            Some(d) => (None, d),
            None => {
                let t = tempfile::tempdir().unwrap();
                let d = t.path().to_path_buf();
                (Some(t), d)
            }
        };
        let mut g = start(&dir, &self.args, &self.toml, &self.env);
        g._tmp = tmp;
        g
    }
}

fn start(dir: &Path, args: &[String], toml: &str, env: &[(String, String)]) -> RunningGateway {
    let config = dir.join("revgate.toml");
    std::fs::write(&config, toml).unwrap();
    let log = dir.join("revgate.log");
    let logf = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .unwrap();
    // REVGATE_TEST_BIN runs the tests against another build (e.g. an older
    // release, to show that a test reproduces a reported hole).
    let bin = std::env::var_os("REVGATE_TEST_BIN")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_revgate").into());
    let mut cmd = Command::new(bin);
    cmd.arg("run")
        .arg("--config")
        .arg(&config)
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .arg("--journal")
        .arg(dir.join("revgate.journal"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(logf));
    for (k, _) in std::env::vars() {
        if k.starts_with("REVGATE_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("RUST_LOG", "info");
    cmd.env("NO_COLOR", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("start revgate");
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    let mut reader = BufReader::new(stdout);
    reader.read_line(&mut line).unwrap();
    if line.is_empty() {
        let status = child.wait().unwrap();
        panic!(
            "revgate exited ({status}) before listening; log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut sink = String::new();
        while reader.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
            sink.clear();
        }
    });
    let v: serde_json::Value = serde_json::from_str(&line).expect("listening line");
    let addr: SocketAddr = v["listen"].as_str().unwrap().parse().unwrap();
    let admin: SocketAddr = v["admin"].as_str().unwrap().parse().unwrap();
    RunningGateway {
        child: Some(child),
        addr,
        admin,
        url: format!("http://{addr}"),
        admin_url: format!("http://{admin}"),
        dir: dir.to_path_buf(),
        log,
        _tmp: None,
        spec: (args.to_vec(), toml.to_string(), env.to_vec()),
    }
}

impl RunningGateway {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn journal(&self) -> PathBuf {
        self.dir.join("revgate.journal")
    }

    /// SIGKILL, no goodbye.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends a signal by name (TERM, HUP, INT).
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for exit; returns the exit code.
    pub fn wait(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        let child = self.child.as_mut()?;
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                self.child = None;
                return s.code();
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the same gateway again in the same directory (new ports).
    pub fn restart(&mut self) {
        self.kill9();
        let (args, toml, env) = self.spec.clone();
        let mut g = start(&self.dir, &args, &toml, &env);
        g._tmp = self._tmp.take();
        *self = g;
    }

    /// Peak resident memory (VmHWM), KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmHWM:")
    }

    /// Resident memory now (VmRSS), KiB.
    pub fn rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmRSS:")
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for RunningGateway {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

// === HTTP client ===

pub type TestClient = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

pub fn h2c_client() -> TestClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(HttpConnector::new())
}

/// The sending end of a request body fed frame by frame.
pub type FrameTx = tokio::sync::mpsc::Sender<Result<Frame<Bytes>, std::convert::Infallible>>;

/// A request body fed through a channel (bounded to `buffer` frames), for
/// uploads generated on the fly or paced in time.
pub fn channel_body(
    buffer: usize,
) -> (
    FrameTx,
    StreamBody<
        impl futures_core::Stream<Item = Result<Frame<Bytes>, std::convert::Infallible>>
            + Send
            + 'static,
    >,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(buffer);
    (tx, StreamBody::new(tokio_stream_from(rx)))
}

/// POSTs a streamed body; returns the response with its body unread.
pub async fn post_streaming<S>(
    url: &str,
    bearer: Option<&str>,
    body: StreamBody<S>,
) -> Response<Incoming>
where
    S: futures_core::Stream<Item = Result<Frame<Bytes>, std::convert::Infallible>>
        + Send
        + Unpin
        + 'static,
{
    let c: Client<HttpConnector, StreamBody<S>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let mut req = Request::builder().method("POST").uri(url);
    if let Some(t) = bearer {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    c.request(req.body(body).unwrap()).await.unwrap()
}

/// A response, fully read.
#[derive(Debug)]
pub struct Got {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Got {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub async fn send_with(c: &TestClient, req: Request<Full<Bytes>>) -> Got {
    let resp = tokio::time::timeout(Duration::from_secs(30), c.request(req))
        .await
        .expect("request timed out")
        .expect("request failed");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Got {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    }
}

pub async fn send(req: Request<Full<Bytes>>) -> Got {
    send_with(&client(), req).await
}

/// A request with these headers and body.
pub fn call(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Request<Full<Bytes>> {
    let mut b = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(Bytes::copy_from_slice(body))).unwrap()
}

/// GETs `url` with these headers, through a fresh HTTP/1.1 client.
pub async fn fetch(url: &str, headers: &[(&str, &str)]) -> Got {
    send(call("GET", url, headers, b"")).await
}

pub fn get(url: &str) -> http::request::Builder {
    Request::builder().method("GET").uri(url)
}

pub async fn get_bearer(url: &str, token: &str) -> Got {
    send(
        get(url)
            .header("authorization", format!("Bearer {token}"))
            .body(Full::default())
            .unwrap(),
    )
    .await
}

/// POSTs JSON.
pub async fn post_json(url: &str, body: &serde_json::Value) -> Got {
    send(
        Request::builder()
            .method("POST")
            .uri(url)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap(),
    )
    .await
}

/// Revokes a raw token through the admin API.
pub async fn admin_revoke(g: &RunningGateway, token: &str) -> Got {
    let r = post_json(
        &format!("{}/admin/v1/revocations", g.admin_url),
        &serde_json::json!({ "token": token }),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r
}

// === what the gateway answered, what reached the upstream ===

/// The body of the 401 a revoked credential is answered with.
pub const REVOKED_BODY: &str =
    r#"{"error":"invalid_token","error_description":"The access token has been revoked"}"#;
/// Its `WWW-Authenticate` challenge (RFC 6750 §3).
pub const REVOKED_CHALLENGE: &str =
    r#"Bearer error="invalid_token", error_description="The access token has been revoked""#;

/// `r` is the gateway's answer to a revoked credential, exactly: 401, the
/// challenge, JSON, the body.
pub fn assert_revoked_response(r: &Got) {
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.header("www-authenticate"), Some(REVOKED_CHALLENGE));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.text(), REVOKED_BODY);
}

/// `token` is revoked: `GET /data` carrying it as a Bearer token is answered
/// as revoked ([`assert_revoked_response`]) and does not reach `up`.
pub async fn assert_revoked(gw: &RunningGateway, up: &RunningUpstream, token: &str) {
    let hits = up.hits();
    let r = get_bearer(&format!("{}/data", gw.url), token).await;
    assert_revoked_response(&r);
    assert_eq!(up.hits(), hits, "a revoked token reached the upstream");
}

/// `token` is not revoked: `GET /data` carrying it is answered 200 and
/// reaches `up` once.
pub async fn assert_passes(gw: &RunningGateway, up: &RunningUpstream, token: &str) {
    let hits = up.hits();
    let r = get_bearer(&format!("{}/data", gw.url), token).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.hits(), hits + 1, "the token did not reach the upstream");
}

/// The two connection paths a wire-level case runs on: the HTTP/1.1 fast
/// path (the default) and hyper (`server.h1_fast_path = false`), as
/// (name, config fragment).
pub const PATHS: [(&str, &str); 2] = [
    ("fast path", ""),
    ("hyper path", "[server]\nh1_fast_path = false\n"),
];

/// A JWT with these claims (unsigned: the gateway only peeks).
pub fn jwt(claims: &serde_json::Value) -> String {
    use base64::Engine as _;
    let e = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    format!(
        "{}.{}.c2ln",
        e(r#"{"alg":"HS256","typ":"JWT"}"#),
        e(&claims.to_string())
    )
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Polls (every 20 ms) until `f` is true or the limit passes; whether it
/// became true. The one polling loop of the tests: wait on a condition,
/// never for a fixed time.
pub async fn eventually(limit: Duration, mut f: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if f().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// [`eventually`], failing the test with `what` if the limit passes first.
pub async fn wait_for(what: &str, limit: Duration, f: impl AsyncFnMut() -> bool) {
    assert!(eventually(limit, f).await, "timed out waiting for: {what}");
}
