//! Benchmarks of the Redis store (issue 4), against the release `revgate`
//! binary and real `redis-server` processes on free loopback ports:
//!
//! * `propagation`: two instances A and B on one Redis; N revocations through
//!   A's admin API; for each, the time from A's 200 to B's first 401 for that
//!   token (B polled in a tight loop on a kept-alive connection).
//! * `coldstart`: Redis seeded with N token rules in the store's key layout
//!   (fingerprints made with the same key, through
//!   [`revgate::credentials::FingerprintKey`]); time from spawning an instance
//!   to `/readyz` 200, repeated; then a sample of the seeded tokens must be
//!   401 through it (the layout is the store's, not a guess). Before the
//!   timed runs, one untimed instance starts, loads by `SCAN` and writes the
//!   store's bloom snapshot (`{revgate}:snapshot`), as any running
//!   deployment would have; the timed starts load from it.
//! * `memory`: VmRSS of an instance on an empty Redis, then of one with N
//!   token rules in Redis (after its bloom filter settled), with the default
//!   `store.bloom_capacity` and with one sized for N.
//!
//! * `propagation_load` (issue 14): A and B on one Redis, B under `wrk`
//!   load (nginx upstream); from A's 200 to a revoke, how many probes of B
//!   still passed and when B first answered 401.
//! * `confirmed`: three instances in confirmed consistency: revoke latency
//!   and revocations/s (and the same in eventual mode).
//! * `confirmed_throughput`: proxy req/s, confirmed vs eventual, `wrk`
//!   rounds interleaved.
//!
//! ```text
//! cargo bench --bench redis_store -- [propagation] [coldstart] [memory]
//! cargo bench --bench redis_store -- propagation_load | confirmed | confirmed_throughput
//! REVGATE_BENCH_N_PROP=1000 REVGATE_BENCH_N_COLD=1000000 REVGATE_BENCH_N_MEM=10000000
//! REVGATE_BENCH_UPSTREAM=builtin:ok   # every gateway on the built-in upstream
//! ```
//!
//! No argument runs all three. Every loop is bounded in count and time; every
//! child process gets `PR_SET_PDEATHSIG` (it dies with the bench) and is
//! killed on drop. Results are printed as text and one JSON line per figure
//! (`{"bench":...}`) for BENCHMARKS.md.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use revgate::credentials::FingerprintKey;
use tokio_util::sync::CancellationToken;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Res<T> = Result<T, BoxError>;

const PREFIX_TAG: &str = "{revgate}";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

fn revgate_bin() -> PathBuf {
    std::env::var_os("REVGATE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_revgate")))
}

/// Children die with this process, even on SIGKILL of the bench.
fn die_with_parent(cmd: &mut Command) {
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

fn stop_child(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A redis-server on a free port, in its own temp dir; killed on drop.
struct Redis {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Redis {
    fn spawn() -> Res<Redis> {
        let dir = tempfile::tempdir()?;
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port();
            let mut cmd = Command::new("redis-server");
            cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .args(["--maxmemory-policy", "noeviction"])
                .arg("--dir")
                .arg(dir.path())
                .args(["--logfile", "redis.log"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            die_with_parent(&mut cmd);
            let mut child = cmd.spawn()?;
            let client = redis::Client::open(format!("redis://127.0.0.1:{port}/0"))?;
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if let Ok(mut c) = client.get_connection_with_timeout(Duration::from_millis(200)) {
                    if redis::cmd("PING").query::<String>(&mut c).is_ok() {
                        return Ok(Redis {
                            child,
                            port,
                            _dir: dir,
                        });
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            stop_child(&mut child);
            last = format!("redis-server on port {port} did not answer PING");
        }
        Err(last.into())
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    async fn conn(&self) -> Res<redis::aio::MultiplexedConnection> {
        // No response timeout: a 10,000-command pipeline into a dict that
        // is rehashing can take longer than the crate's 500 ms default.
        let cfg = redis::AsyncConnectionConfig::new().set_response_timeout(None);
        Ok(redis::Client::open(self.url())?
            .get_multiplexed_async_connection_with_config(&cfg)
            .await?)
    }

    async fn info_memory(&self) -> Res<(u64, u64)> {
        let mut c = self.conn().await?;
        let info: String = redis::cmd("INFO").arg("memory").query_async(&mut c).await?;
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok((field("used_memory:"), field("used_memory_rss:")))
    }

    async fn dbsize(&self) -> Res<u64> {
        let mut c = self.conn().await?;
        Ok(redis::cmd("DBSIZE").query_async(&mut c).await?)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

/// A release revgate instance; killed on drop.
struct Gateway {
    child: Child,
    listen: SocketAddr,
    admin: SocketAddr,
    dir: tempfile::TempDir,
    /// When the process was spawned.
    spawned: Instant,
    /// When its "listening" line arrived.
    listening: Instant,
}

impl Gateway {
    fn spawn(
        redis_url: &str,
        upstream: SocketAddr,
        fp_key: &str,
        toml: Option<&str>,
    ) -> Res<Gateway> {
        let dir = tempfile::tempdir()?;
        let mut cmd = Command::new(revgate_bin());
        // REVGATE_BENCH_UPSTREAM=builtin:ok: every gateway answers from the
        // built-in upstream (no upstream process competing for the cores).
        let upstream = std::env::var("REVGATE_BENCH_UPSTREAM")
            .unwrap_or_else(|_| format!("http://{upstream}"));
        cmd.arg("run")
            .args(["--upstream", &upstream])
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .arg("--journal")
            .arg(dir.path().join("outbox.journal"))
            .args(["--store", redis_url]);
        if let Some(t) = toml {
            let path = dir.path().join("revgate.toml");
            std::fs::write(&path, t)?;
            cmd.arg("--config").arg(path);
        }
        // Access lines off: the figures are the gateway's, not its logger's.
        cmd.env("REVGATE_FINGERPRINT_KEY", fp_key)
            .env("RUST_LOG", "info,revgate::access=off")
            .env("REVGATE_LOG_FORMAT", "json")
            .env_remove("REVGATE_STORE")
            .env_remove("REVGATE_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.path().join("stderr.log"))?);
        die_with_parent(&mut cmd);
        let spawned = Instant::now();
        let mut child = cmd.spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send((line, Instant::now()));
            // Keep the pipe open (and drained) for the child's lifetime.
        });
        let (line, listening) = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(v) => v,
            Err(_) => {
                stop_child(&mut child);
                return Err("revgate printed no listening line within 30 s".into());
            }
        };
        let v: serde_json::Value = match serde_json::from_str(line.trim()) {
            Ok(v) => v,
            Err(e) => {
                stop_child(&mut child);
                let log =
                    std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
                return Err(format!("bad listening line {line:?}: {e}; stderr: {log}").into());
            }
        };
        let addr =
            |k: &str| -> Res<SocketAddr> { Ok(v[k].as_str().ok_or("missing address")?.parse()?) };
        let (listen, admin) = match (addr("listen"), addr("admin")) {
            (Ok(l), Ok(a)) => (l, a),
            _ => {
                stop_child(&mut child);
                return Err(format!("bad listening line {line:?}").into());
            }
        };
        Ok(Gateway {
            child,
            listen,
            admin,
            dir,
            spawned,
            listening,
        })
    }

    /// Polls `/readyz` until 200; returns when it first answered 200.
    async fn wait_ready(&self, limit: Duration) -> Res<Instant> {
        let deadline = Instant::now() + limit;
        let mut c = Conn::open(self.admin).await?;
        while Instant::now() < deadline {
            let (status, _) = c.send("GET", "/readyz", None, None).await?;
            if status == 200 {
                return Ok(Instant::now());
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        Err(format!("not ready within {limit:?}; log: {}", self.log_tail()).into())
    }

    fn status_kib(&self, field: &str) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        s.lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS:")
    }

    fn hwm_kib(&self) -> u64 {
        self.status_kib("VmHWM:")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let l = self.log();
        let mut from = l.len().saturating_sub(2000);
        while !l.is_char_boundary(from) {
            from += 1;
        }
        l[from..].to_string()
    }

    /// `took_ms` of the last "revocations loaded from redis" log line.
    fn load_took_ms(&self) -> Option<u64> {
        self.log()
            .lines()
            .rev()
            .filter(|l| l.contains("revocations loaded from redis"))
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find_map(|v| v["fields"]["took_ms"].as_u64().or(v["took_ms"].as_u64()))
    }

    /// `source` (snapshot or scan) of the last "revocations loaded from redis" log line.
    fn load_source(&self) -> Option<String> {
        self.log()
            .lines()
            .rev()
            .filter(|l| l.contains("revocations loaded from redis"))
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find_map(|v| {
                v["fields"]["source"]
                    .as_str()
                    .or(v["source"].as_str())
                    .map(str::to_string)
            })
    }

    /// A gauge from `/metrics` (no labels).
    async fn gauge(&self, name: &str) -> Res<Option<f64>> {
        let mut c = Conn::open(self.admin).await?;
        let (_, body) = c.send("GET", "/metrics", None, None).await?;
        let text = String::from_utf8_lossy(&body);
        Ok(text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
            .and_then(|v| v.trim().parse().ok()))
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

/// One kept-alive HTTP/1.1 connection.
struct Conn {
    addr: SocketAddr,
    tx: SendRequest<Full<Bytes>>,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Res<Conn> {
        let s = tokio::net::TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn { addr, tx })
    }

    async fn send(
        &mut self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: Option<String>,
    ) -> Res<(u16, Bytes)> {
        if self.tx.ready().await.is_err() {
            *self = Conn::open(self.addr).await?;
        }
        let mut b = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.to_string());
        if let Some(t) = bearer {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        if body.is_some() {
            b = b.header("content-type", "application/json");
        }
        let req = b.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
        let resp = self.tx.send_request(req).await?;
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await?.to_bytes();
        Ok((status, bytes))
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    // Nearest rank.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn report(bench: &str, v: serde_json::Value) {
    let mut v = v;
    v["bench"] = serde_json::Value::from(bench);
    println!("{v}");
}

fn new_key_hex() -> Res<String> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| format!("getrandom: {e}"))?;
    Ok(hex::encode(b))
}

async fn propagation(upstream: SocketAddr) -> Res<()> {
    let n = env_usize("REVGATE_BENCH_N_PROP", 1000);
    let warmup = 50;
    let redis = Redis::spawn()?;
    let key = new_key_hex()?;
    let a = Gateway::spawn(&redis.url(), upstream, &key, None)?;
    let b = Gateway::spawn(&redis.url(), upstream, &key, None)?;
    a.wait_ready(Duration::from_secs(30)).await?;
    b.wait_ready(Duration::from_secs(30)).await?;
    let mut admin = Conn::open(a.admin).await?;
    let mut poll = Conn::open(b.listen).await?;
    let run = &key[..8];
    let mut lat = Vec::with_capacity(n);
    let mut acks = Vec::with_capacity(n);
    let mut polls_total = 0u64;
    let mut poll_time = Duration::ZERO;
    let mut misses = 0usize;
    // Revocations whose first poll after the ack was already 401.
    let mut first_poll = 0usize;
    let started = Instant::now();
    for i in 0..(warmup + n) {
        if started.elapsed() > Duration::from_secs(300) {
            return Err(format!("propagation: over 300 s after {i} revocations").into());
        }
        let token = format!("rbench-prop-{run}-{i}");
        // B passes it before the revocation (and the upstream answers).
        let (s, _) = poll.send("GET", "/p", Some(&token), None).await?;
        if s != 200 {
            return Err(format!("B answered {s} before the revocation of #{i}").into());
        }
        let body = serde_json::json!({ "token": token }).to_string();
        let sent = Instant::now();
        let (s, resp) = admin
            .send("POST", "/admin/v1/revocations", None, Some(body))
            .await?;
        let acked = Instant::now();
        if s != 200 {
            return Err(format!(
                "A answered {s} to revocation #{i}: {}",
                String::from_utf8_lossy(&resp)
            )
            .into());
        }
        let mut got = None;
        let mut k = 0u64;
        while k < 1_000_000 && acked.elapsed() < Duration::from_secs(5) {
            let t = Instant::now();
            let (s, _) = poll.send("GET", "/p", Some(&token), None).await?;
            let now = Instant::now();
            k += 1;
            if i >= warmup {
                poll_time += now - t;
                polls_total += 1;
            }
            if s == 401 {
                got = Some(now);
                break;
            }
        }
        let Some(seen) = got else {
            misses += 1;
            continue;
        };
        if i >= warmup {
            if k == 1 {
                first_poll += 1;
            }
            lat.push((seen - acked).as_secs_f64() * 1e3);
            acks.push((acked - sent).as_secs_f64() * 1e3);
        }
    }
    lat.sort_by(|x, y| x.total_cmp(y));
    acks.sort_by(|x, y| x.total_cmp(y));
    let mean_poll_us = poll_time.as_secs_f64() * 1e6 / polls_total.max(1) as f64;
    let p50 = percentile(&lat, 50.0);
    let p99 = percentile(&lat, 99.0);
    println!(
        "propagation: n={} (after {warmup} warm-up), missed={misses}, p50={p50:.3} ms, p90={:.3} ms, p99={p99:.3} ms, max={:.3} ms; \
         A's ack p50={:.3} ms p99={:.3} ms; B poll round trip mean={mean_poll_us:.0} us ({:.2} polls per revocation; first poll already 401: {first_poll})",
        lat.len(),
        percentile(&lat, 90.0),
        lat.last().copied().unwrap_or(f64::NAN),
        percentile(&acks, 50.0),
        percentile(&acks, 99.0),
        polls_total as f64 / lat.len().max(1) as f64,
    );
    report(
        "propagation",
        serde_json::json!({
            "n": lat.len(), "missed": misses, "p50_ms": p50, "p90_ms": percentile(&lat, 90.0), "p99_ms": p99,
            "max_ms": lat.last(), "ack_p50_ms": percentile(&acks, 50.0), "ack_p99_ms": percentile(&acks, 99.0),
            "poll_rtt_mean_us": mean_poll_us, "first_poll_401": first_poll, "target_p99_ms": 5.0, "met": misses == 0 && p99 <= 5.0,
        }),
    );
    Ok(())
}

/// Writes `n` token rules named `{label}-{i}` in the store's layout, with
/// their TTL, pipelined (several batches in flight).
async fn seed(
    redis: &Redis,
    key_hex: &str,
    label: &str,
    n: usize,
    expires_at: u64,
) -> Res<Duration> {
    let key = FingerprintKey::from_hex(key_hex).map_err(|e| format!("key: {e}"))?;
    let conn = redis.conn().await?;
    let started = Instant::now();
    const BATCH: usize = 10_000;
    const IN_FLIGHT: usize = 4;
    let value = expires_at.to_string();
    let mut pending = tokio::task::JoinSet::new();
    let mut start = 0;
    while start < n {
        if started.elapsed() > Duration::from_secs(600) {
            return Err("seeding took over 600 s".into());
        }
        let end = (start + BATCH).min(n);
        let mut p = redis::pipe();
        for i in start..end {
            let fp = key.fingerprint(format!("{label}-{i}").as_bytes());
            p.cmd("SET")
                .arg(format!("{PREFIX_TAG}:tok:{}", fp.to_hex()))
                .arg(&value)
                .arg("EXAT")
                .arg(expires_at)
                .ignore();
        }
        let mut c = conn.clone();
        pending.spawn(async move { p.query_async::<()>(&mut c).await });
        while pending.len() >= IN_FLIGHT {
            if let Some(r) = pending.join_next().await {
                r??;
            }
        }
        start = end;
    }
    while let Some(r) = pending.join_next().await {
        r??;
    }
    Ok(started.elapsed())
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A sample of seeded tokens must be 401 through `gw`, an unseeded one 200.
async fn verify_sample(gw: &Gateway, label: &str, n: usize) -> Res<()> {
    let mut c = Conn::open(gw.listen).await?;
    let step = (n / 200).max(1);
    let mut i = 0;
    while i < n {
        let (s, _) = c
            .send("GET", "/v", Some(&format!("{label}-{i}")), None)
            .await?;
        if s != 401 {
            return Err(format!("seeded token {label}-{i} answered {s}, not 401").into());
        }
        i += step;
    }
    let (s, _) = c
        .send("GET", "/v", Some(&format!("{label}-not-seeded")), None)
        .await?;
    if s != 200 {
        return Err(format!("an unseeded token answered {s}, not 200").into());
    }
    Ok(())
}

async fn coldstart(upstream: SocketAddr) -> Res<()> {
    let n = env_usize("REVGATE_BENCH_N_COLD", 1_000_000);
    let runs = env_usize("REVGATE_BENCH_COLD_RUNS", 3);
    let redis = Redis::spawn()?;
    let key = new_key_hex()?;
    let seeded = seed(&redis, &key, "rbench-cold", n, now_unix() + 6 * 3600).await?;
    let dbsize = redis.dbsize().await?;
    println!(
        "coldstart: seeded {n} token rules in {:.1} s (DBSIZE {dbsize})",
        seeded.as_secs_f64()
    );
    // One untimed start: its SCAN load writes the snapshot the timed starts use.
    let primed = {
        let gw = Gateway::spawn(&redis.url(), upstream, &key, None)?;
        let at = gw.wait_ready(Duration::from_secs(120)).await?;
        let mut conn = redis.conn().await?;
        let limit = Instant::now() + Duration::from_secs(60);
        loop {
            let n: i64 = redis::cmd("EXISTS")
                .arg(format!("{PREFIX_TAG}:snapshot"))
                .query_async(&mut conn)
                .await?;
            if n == 1 {
                break;
            }
            if Instant::now() > limit {
                return Err("no snapshot written within 60 s of the priming start".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (at - gw.spawned).as_secs_f64()
    };
    println!("coldstart: priming start (SCAN load, writes the snapshot): /readyz 200 after {primed:.3} s");
    let mut ready = Vec::new();
    for r in 0..runs {
        let gw = Gateway::spawn(&redis.url(), upstream, &key, None)?;
        let at = gw.wait_ready(Duration::from_secs(120)).await?;
        let total = (at - gw.spawned).as_secs_f64();
        let to_listen = (gw.listening - gw.spawned).as_secs_f64();
        let took = gw.load_took_ms();
        let source = gw.load_source();
        verify_sample(&gw, "rbench-cold", n).await?;
        println!(
            "coldstart run {}: /readyz 200 after {total:.3} s (listening after {to_listen:.3} s; store's own load log: {took:?} ms from {source:?})",
            r + 1
        );
        ready.push((total, to_listen, took));
        drop(gw);
    }
    let scans = scan_costs(&redis).await?;
    let mut totals: Vec<f64> = ready.iter().map(|r| r.0).collect();
    totals.sort_by(|x, y| x.total_cmp(y));
    let median = totals[totals.len() / 2];
    report(
        "coldstart",
        serde_json::json!({
            "n": n, "runs": ready.iter().map(|r| serde_json::json!({"ready_s": r.0, "listening_s": r.1, "load_took_ms": r.2})).collect::<Vec<_>>(),
            "median_ready_s": median, "priming_scan_ready_s": primed, "seed_s": seeded.as_secs_f64(), "target_s": 2.0, "met": median <= 2.0,
            "bare_scan": scans,
        }),
    );
    Ok(())
}

/// Where a start-up load's time goes: a bare `SCAN` loop from this process
/// (replies read and dropped), with the store's parameters and variants,
/// and Redis's own time per `SCAN` call (`INFO commandstats`).
async fn scan_costs(redis: &Redis) -> Res<serde_json::Value> {
    let mut c = redis.conn().await?;
    let pattern = format!("{PREFIX_TAG}:*");
    let mut out = Vec::new();
    for (count, with_match) in [
        (10_000usize, true),
        (10_000, false),
        (100_000, true),
        (100_000, false),
    ] {
        let _: () = redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query_async(&mut c)
            .await?;
        let started = Instant::now();
        let mut cursor: u64 = 0;
        let mut keys_seen = 0usize;
        let mut calls = 0usize;
        loop {
            let mut cmd = redis::cmd("SCAN");
            cmd.arg(cursor);
            if with_match {
                cmd.arg("MATCH").arg(&pattern);
            }
            cmd.arg("COUNT").arg(count);
            let (next, keys): (u64, Vec<Vec<u8>>) = cmd.query_async(&mut c).await?;
            keys_seen += keys.len();
            calls += 1;
            cursor = next;
            if cursor == 0 || calls > 100_000 {
                break;
            }
        }
        let wall = started.elapsed().as_secs_f64();
        let stats: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut c)
            .await?;
        let server_us = stats
            .lines()
            .find(|l| l.starts_with("cmdstat_scan:"))
            .and_then(|l| l.split(',').find_map(|f| f.strip_prefix("usec=")))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        println!(
            "coldstart: bare SCAN COUNT {count}{}: {keys_seen} keys in {calls} calls, {wall:.3} s wall, {:.3} s inside Redis",
            if with_match { " MATCH" } else { "" },
            server_us as f64 / 1e6
        );
        out.push(serde_json::json!({"count": count, "match": with_match, "keys": keys_seen, "calls": calls,
            "wall_s": wall, "redis_s": server_us as f64 / 1e6}));
    }
    Ok(serde_json::Value::from(out))
}

/// Waits until the instance's bloom filter holds `n` at its capacity and its
/// RSS stopped moving; returns (VmRSS, VmHWM) in KiB and how long after the
/// call the filter reached that capacity.
async fn settle(gw: &Gateway, n: usize) -> Res<(u64, u64, f64)> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(180);
    let mut sized_after = f64::NAN;
    while Instant::now() < deadline {
        let cap = gw.gauge("revgate_bloom_capacity").await?.unwrap_or(0.0);
        if cap >= n as f64 {
            sized_after = started.elapsed().as_secs_f64();
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut last = 0u64;
    let mut stable = 0;
    while Instant::now() < deadline && stable < 4 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rss = gw.rss_kib();
        if rss.abs_diff(last) <= 64 {
            stable += 1;
        } else {
            stable = 0;
        }
        last = rss;
    }
    Ok((gw.rss_kib(), gw.hwm_kib(), sized_after))
}

async fn memory(upstream: SocketAddr) -> Res<()> {
    let n = env_usize("REVGATE_BENCH_N_MEM", 10_000_000);
    let redis = Redis::spawn()?;
    let key = new_key_hex()?;
    let sized = format!("[store]\nbloom_capacity = {n}\n");
    let configs: [(&str, Option<&str>); 2] = [
        ("default bloom_capacity (1,000,000)", None),
        ("bloom_capacity = N", Some(&sized)),
    ];
    let mut empty = Vec::new();
    for (name, toml) in configs {
        let gw = Gateway::spawn(&redis.url(), upstream, &key, toml)?;
        gw.wait_ready(Duration::from_secs(30)).await?;
        verify_sample(&gw, "rbench-mem-none", 1).await.ok();
        let (rss, hwm, _) = settle(&gw, 0).await?;
        println!("memory: empty Redis, {name}: VmRSS {rss} KiB, VmHWM {hwm} KiB");
        empty.push((rss, hwm));
    }
    let seeded = seed(&redis, &key, "rbench-mem", n, now_unix() + 6 * 3600).await?;
    let (used, rss_redis) = redis.info_memory().await?;
    println!(
        "memory: seeded {n} token rules in {:.1} s; redis used_memory {:.0} MiB, rss {:.0} MiB",
        seeded.as_secs_f64(),
        used as f64 / 1048576.0,
        rss_redis as f64 / 1048576.0
    );
    let mut rows = Vec::new();
    for (idx, (name, toml)) in configs.iter().enumerate() {
        let gw = Gateway::spawn(&redis.url(), upstream, &key, *toml)?;
        let at = gw.wait_ready(Duration::from_secs(300)).await?;
        let ready_s = (at - gw.spawned).as_secs_f64();
        let (rss, hwm, sized_after) = settle(&gw, n).await?;
        verify_sample(&gw, "rbench-mem", n).await?;
        let cap = gw.gauge("revgate_bloom_capacity").await?.unwrap_or(0.0);
        let bits = gw.gauge("revgate_bloom_bits").await?.unwrap_or(0.0);
        let (e_rss, e_hwm) = empty[idx];
        let delta_mib = (rss as f64 - e_rss as f64) / 1024.0;
        let delta_hwm_mib = (hwm as f64 - e_hwm as f64) / 1024.0;
        println!(
            "memory: {n} in Redis, {name}: ready after {ready_s:.2} s, filter sized for N {sized_after:.1} s after that; VmRSS {rss} KiB (+{delta_mib:.1} MiB over empty), \
             VmHWM {hwm} KiB (+{delta_hwm_mib:.1} MiB); bloom capacity {cap:.0}, {:.1} MiB of bits",
            bits / 8.0 / 1048576.0
        );
        rows.push(serde_json::json!({
            "config": name, "ready_s": ready_s, "filter_sized_after_ready_s": sized_after, "empty_rss_kib": e_rss, "rss_kib": rss, "delta_rss_mib": delta_mib,
            "empty_hwm_kib": e_hwm, "hwm_kib": hwm, "delta_hwm_mib": delta_hwm_mib,
            "bloom_capacity": cap, "bloom_mib": bits / 8.0 / 1048576.0, "target_mib": 32.0, "met": delta_mib <= 32.0,
        }));
    }
    report(
        "memory",
        serde_json::json!({"n": n, "redis_used_memory_mib": used as f64 / 1048576.0, "rows": rows}),
    );
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let all = args.is_empty();
    let want = |name: &str| all || args.iter().any(|a| a == name);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let result: Res<()> = rt.block_on(async {
        let stop = CancellationToken::new();
        let upstream = revgate::demo::spawn_echo_upstream(stop.clone()).await?;
        println!(
            "redis_store bench: revgate {}, {}, {} cores",
            revgate_bin().display(),
            String::from_utf8_lossy(
                &Command::new("redis-server")
                    .arg("--version")
                    .output()?
                    .stdout
            )
            .trim(),
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0)
        );
        if want("propagation") {
            propagation(upstream).await?;
        }
        if want("coldstart") {
            coldstart(upstream).await?;
        }
        if want("memory") {
            memory(upstream).await?;
        }
        // Issue 14's figures: named only (they need wrk and nginx).
        let named = |name: &str| args.iter().any(|a| a == name);
        if named("propagation_load") {
            propagation_load(upstream).await?;
        }
        if named("confirmed") {
            confirmed(upstream).await?;
        }
        if named("confirmed_throughput") {
            confirmed_throughput(upstream).await?;
        }
        stop.cancel();
        Ok(())
    });
    if let Err(e) = result {
        eprintln!("redis_store bench failed: {e}");
        // A bench binary: nothing to flush, and the failure must show in the exit code.
        #[allow(clippy::disallowed_methods)]
        std::process::exit(1);
    }
}

// === issue 14: propagation under load, confirmed consistency ===

/// nginx answering `200 ok` on a free port (1 worker, no logging), for the
/// load figures: the in-process echo upstream would share the bench's
/// runtime with its probes.
struct Nginx {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Nginx {
    fn spawn() -> Res<Nginx> {
        let dir = tempfile::tempdir()?;
        let port = free_port();
        let d = dir.path().display();
        let conf = format!(
            "worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
             events {{ worker_connections 4096; }}\nhttp {{ access_log off; client_body_temp_path {d}/b; \
             proxy_temp_path {d}/p; fastcgi_temp_path {d}/f; uwsgi_temp_path {d}/u; scgi_temp_path {d}/s; \
             keepalive_requests 100000000; keepalive_timeout 120s; \
             server {{ listen 127.0.0.1:{port}; location / {{ return 200 \"ok\"; }} }} }}\n"
        );
        std::fs::write(dir.path().join("nginx.conf"), conf)?;
        let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .ok_or("needs nginx")?;
        let mut cmd = Command::new(nginx);
        cmd.arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        die_with_parent(&mut cmd);
        let child = cmd.spawn()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err("nginx did not listen within 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Nginx {
            child,
            port,
            _dir: dir,
        })
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

/// `wrk -t1 -c<conns> -d<secs>s` against `target`, every request with a
/// bearer token out of 1,000 (none revoked); returns the child (its stdout
/// has the report).
fn wrk(target: SocketAddr, conns: usize, secs: u64, dir: &std::path::Path) -> Res<Child> {
    let script = dir.join("tokens.lua");
    std::fs::write(
        &script,
        "local n = 0\nrequest = function()\n  n = n + 1\n  return wrk.format(\"GET\", \"/load\", {[\"Authorization\"] = \"Bearer load-token-\" .. (n % 1000)})\nend\n",
    )?;
    let mut cmd = Command::new("wrk");
    cmd.args([
        "-t1",
        &format!("-c{conns}"),
        &format!("-d{secs}s"),
        "--latency",
    ])
    .arg("-s")
    .arg(&script)
    .arg(format!("http://{target}/"))
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    die_with_parent(&mut cmd);
    Ok(cmd.spawn()?)
}

/// Waits for wrk (bounded) and returns its Requests/sec.
fn wrk_rate(child: Child, limit: Duration) -> Res<f64> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = rx
        .recv_timeout(limit)
        .map_err(|_| "wrk did not finish in time")??;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("no Requests/sec in wrk output: {text}").into())
}

const LOAD_TOML: &str =
    "[log]\naccess_log = false\n[admin.rate_limit]\nenabled = false\n[revoke.rate_limit]\nenabled = false\n";

/// `propagation_load`: A and B (eventual) on one Redis, B under wrk load;
/// for each revocation through A's admin API, from A's 200: every probe of
/// B (kept-alive, back to back) until B's first 401. Reports A's 200 → B's
/// first 401 and, the figure that matters, how many probes sent after A's
/// 200 still passed (reached the upstream), and how long after the 200 the
/// last of them was sent.
async fn propagation_load(_upstream: SocketAddr) -> Res<()> {
    let n = env_usize("REVGATE_BENCH_N_PROP", 600);
    let conns = env_usize("REVGATE_BENCH_CONNS", 64);
    let secs = env_usize("REVGATE_BENCH_SECS", 40) as u64;
    let nginx = Nginx::spawn()?;
    let redis = Redis::spawn()?;
    let key = new_key_hex()?;
    let toml = std::env::var("REVGATE_BENCH_TOML").unwrap_or_else(|_| LOAD_TOML.into());
    let a = Gateway::spawn(&redis.url(), nginx.addr(), &key, Some(&toml))?;
    let b = Gateway::spawn(&redis.url(), nginx.addr(), &key, Some(&toml))?;
    a.wait_ready(Duration::from_secs(30)).await?;
    b.wait_ready(Duration::from_secs(30)).await?;
    let load = wrk(b.listen, conns, secs, b.dir.path())?;
    // wrk's connections warm up before the first revocation.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut admin = Conn::open(a.admin).await?;
    let mut poll = Conn::open(b.listen).await?;
    let run = &key[..8];
    let (mut first_401, mut window) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let mut passed_after = 0usize;
    let mut revocations_with_pass = 0usize;
    let started = Instant::now();
    let budget = Duration::from_secs(secs.saturating_sub(6));
    let mut done = 0;
    for i in 0..n {
        if started.elapsed() > budget {
            break;
        }
        let token = format!("rbench-load-{run}-{i}");
        let (s, _) = poll.send("GET", "/p", Some(&token), None).await?;
        if s != 200 {
            return Err(format!("B answered {s} before the revocation of #{i}").into());
        }
        let body = serde_json::json!({ "token": token }).to_string();
        let (s, _) = admin
            .send("POST", "/admin/v1/revocations", None, Some(body))
            .await?;
        let acked = Instant::now();
        if s != 200 {
            return Err(format!("A answered {s} to revocation #{i}").into());
        }
        let mut last_pass = None;
        let mut seen = None;
        while acked.elapsed() < Duration::from_secs(5) {
            let t = Instant::now();
            let (s, _) = poll.send("GET", "/p", Some(&token), None).await?;
            if s == 401 {
                seen = Some(Instant::now());
                break;
            }
            last_pass = Some(t);
            passed_after += 1;
        }
        let Some(seen) = seen else {
            return Err(format!("B never rejected #{i}").into());
        };
        first_401.push((seen - acked).as_secs_f64() * 1e3);
        window.push(last_pass.map_or(0.0, |t| (t - acked).as_secs_f64() * 1e3));
        if last_pass.is_some() {
            revocations_with_pass += 1;
        }
        done += 1;
    }
    let rate = wrk_rate(load, Duration::from_secs(secs + 30))?;
    first_401.sort_by(|x, y| x.total_cmp(y));
    window.sort_by(|x, y| x.total_cmp(y));
    println!(
        "propagation_load: B at {rate:.0} req/s (wrk -c{conns}), n={done}; A's 200 -> B's first 401: p50={:.3} p99={:.3} max={:.3} ms; \
         probes passed after A's 200: {passed_after} (in {revocations_with_pass} revocations); last passing probe sent after the 200: p99={:.3} max={:.3} ms",
        percentile(&first_401, 50.0),
        percentile(&first_401, 99.0),
        first_401.last().copied().unwrap_or(f64::NAN),
        percentile(&window, 99.0),
        window.last().copied().unwrap_or(f64::NAN),
    );
    report(
        "propagation_load",
        serde_json::json!({
            "b_req_per_s": rate, "n": done, "p50_ms": percentile(&first_401, 50.0), "p99_ms": percentile(&first_401, 99.0),
            "max_ms": first_401.last(), "passed_after_ack": passed_after, "revocations_with_pass": revocations_with_pass,
            "window_p99_ms": percentile(&window, 99.0), "window_max_ms": window.last(), "target_p99_ms": 5.0,
        }),
    );
    Ok(())
}

const CONFIRMED_TOML: &str = "[log]\naccess_log = false\n[admin.rate_limit]\nenabled = false\n[revoke.rate_limit]\nenabled = false\n[store]\nconsistency = \"confirmed\"\n";

/// `confirmed`: three instances in confirmed consistency on one Redis.
/// Revoke latency through A's admin API (sequential, N), then revocations/s
/// with 32 concurrent revokers for 5 s; the same two figures in eventual
/// mode for comparison.
async fn confirmed(_upstream: SocketAddr) -> Res<()> {
    let n = env_usize("REVGATE_BENCH_N_CONFIRMED", 1000);
    let nginx = Nginx::spawn()?;
    for (mode, toml) in [("confirmed", CONFIRMED_TOML), ("eventual", LOAD_TOML)] {
        let redis = Redis::spawn()?;
        let key = new_key_hex()?;
        let gws = (0..3)
            .map(|_| Gateway::spawn(&redis.url(), nginx.addr(), &key, Some(toml)))
            .collect::<Res<Vec<_>>>()?;
        for g in &gws {
            g.wait_ready(Duration::from_secs(30)).await?;
            // Serving (its lease held): a credentialed request passes.
            let mut c = Conn::open(g.listen).await?;
            let deadline = Instant::now() + Duration::from_secs(20);
            while c.send("GET", "/", Some("probe"), None).await?.0 != 200 {
                if Instant::now() > deadline {
                    return Err("an instance never held its lease".into());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let a = &gws[0];
        let mut admin = Conn::open(a.admin).await?;
        let mut lat = Vec::with_capacity(n);
        let started = Instant::now();
        // Not counted: a fresh deployment confirms nothing for its first
        // lease (`{P}:born`, docs/consistency.md).
        let warmup = 20;
        for i in 0..n + warmup {
            if started.elapsed() > Duration::from_secs(120) {
                break;
            }
            let body = serde_json::json!({ "token": format!("conf-{mode}-{i}") }).to_string();
            let t = Instant::now();
            let (s, resp) = admin
                .send("POST", "/admin/v1/revocations", None, Some(body))
                .await?;
            if s != 200 {
                return Err(format!("revoke #{i}: {s} {}", String::from_utf8_lossy(&resp)).into());
            }
            if i >= warmup {
                lat.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
        // Where a slow revoke came from: an instance that fenced itself.
        for (i, g) in gws.iter().enumerate() {
            for l in g
                .log()
                .lines()
                .filter(|l| l.contains("fenced") || l.contains("lease held"))
            {
                println!("  instance {i}: {l}");
            }
        }
        let slow: Vec<(usize, f64)> = lat
            .iter()
            .copied()
            .enumerate()
            .filter(|(_, l)| *l > 50.0)
            .collect();
        if !slow.is_empty() {
            println!("  revokes over 50 ms (index, ms): {slow:?}");
        }
        lat.sort_by(|x, y| x.total_cmp(y));
        // Throughput: 32 revokers on their own connections for 5 s.
        let stop_at = Instant::now() + Duration::from_secs(5);
        let mut set = tokio::task::JoinSet::new();
        for w in 0..32 {
            let addr = a.admin;
            let mode = mode.to_string();
            set.spawn(async move {
                let mut c = Conn::open(addr).await?;
                let mut k = 0u64;
                while Instant::now() < stop_at {
                    let body =
                        serde_json::json!({ "token": format!("tp-{mode}-{w}-{k}") }).to_string();
                    let (s, _) = c
                        .send("POST", "/admin/v1/revocations", None, Some(body))
                        .await?;
                    if s != 200 {
                        return Err::<u64, BoxError>(format!("throughput revoke: {s}").into());
                    }
                    k += 1;
                }
                Ok(k)
            });
        }
        let t0 = Instant::now();
        let mut total = 0u64;
        while let Some(r) = set.join_next().await {
            total += r??;
        }
        let per_s = total as f64 / t0.elapsed().as_secs_f64();
        println!(
            "confirmed bench [{mode}], 3 instances: revoke latency p50={:.3} p99={:.3} max={:.3} ms (n={}); {per_s:.0} revocations/s with 32 concurrent revokers",
            percentile(&lat, 50.0),
            percentile(&lat, 99.0),
            lat.last().copied().unwrap_or(f64::NAN),
            lat.len(),
        );
        report(
            "confirmed",
            serde_json::json!({"mode": mode, "n": lat.len(), "p50_ms": percentile(&lat, 50.0), "p99_ms": percentile(&lat, 99.0),
                "max_ms": lat.last(), "revocations_per_s": per_s, "target_p99_ms": 10.0}),
        );
    }
    Ok(())
}

/// `confirmed_throughput`: proxy throughput of one instance in confirmed
/// mode against one in eventual mode (same Redis, own prefixes), wrk
/// rounds interleaved; the ratio of the medians.
async fn confirmed_throughput(_upstream: SocketAddr) -> Res<()> {
    let rounds = env_usize("REVGATE_BENCH_ROUNDS", 3);
    let secs = env_usize("REVGATE_BENCH_SECS", 10) as u64;
    let conns = env_usize("REVGATE_BENCH_CONNS", 64);
    let nginx = Nginx::spawn()?;
    let redis = Redis::spawn()?;
    let key = new_key_hex()?;
    let e_toml = format!("{LOAD_TOML}[store]\nkey_prefix = \"ev\"\n");
    let c_toml = format!("{CONFIRMED_TOML}key_prefix = \"cf\"\n");
    let e = Gateway::spawn(&redis.url(), nginx.addr(), &key, Some(&e_toml))?;
    let c = Gateway::spawn(&redis.url(), nginx.addr(), &key, Some(&c_toml))?;
    e.wait_ready(Duration::from_secs(30)).await?;
    c.wait_ready(Duration::from_secs(30)).await?;
    let mut probe = Conn::open(c.listen).await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while probe.send("GET", "/", Some("probe"), None).await?.0 != 200 {
        if Instant::now() > deadline {
            return Err("the confirmed instance never held its lease".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (mut ev, mut cf) = (Vec::new(), Vec::new());
    for r in 0..rounds {
        let order: [(&Gateway, &mut Vec<f64>); 2] = if r % 2 == 0 {
            [(&e, &mut ev), (&c, &mut cf)]
        } else {
            [(&c, &mut cf), (&e, &mut ev)]
        };
        for (g, into) in order {
            let child = wrk(g.listen, conns, secs, g.dir.path())?;
            into.push(wrk_rate(child, Duration::from_secs(secs + 30))?);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|x, y| x.total_cmp(y));
        v[v.len() / 2]
    };
    let (me, mc) = (median(&mut ev), median(&mut cf));
    println!(
        "confirmed_throughput: eventual {me:.0} req/s {ev:?}, confirmed {mc:.0} req/s {cf:?}; ratio {:.3}",
        mc / me
    );
    report(
        "confirmed_throughput",
        serde_json::json!({"eventual": ev, "confirmed": cf, "ratio": mc / me, "target": 0.98}),
    );
    Ok(())
}
