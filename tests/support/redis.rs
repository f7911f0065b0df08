//! Real `redis-server` processes for tests: a builder that starts one on a
//! free loopback port in its own temp dir (plain, with AOF, as a replica, or
//! as a sentinel), restarts it on the same port and data, and kills it on
//! drop. Also [`TcpRelay`], a cuttable TCP forwarder to simulate a network
//! drop between one instance and Redis, which can also hold an instance's
//! commands right after a given one ([`TcpRelay::hold_after`]), so a test
//! changes Redis at an exact point of the instance's sequence of commands.
//!
//! A missing `redis-server` fails the test with a message saying how to get
//! it: these tests never skip.
#![allow(dead_code)]

use std::net::TcpListener as StdListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// Fails loudly when redis-server is not installed.
pub fn require_redis_server() {
    let ok = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "redis-server is not installed: these tests need a real one \
         (apt-get update && apt-get install -y redis-server)"
    );
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    let l = StdListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// How to start a redis-server.
#[derive(Clone, Debug, Default)]
pub struct RedisBuilder {
    aof: bool,
    tls: Option<(PathBuf, PathBuf)>,
    replica_of: Option<u16>,
    sentinel: Option<(String, u16)>,
    cluster: bool,
}

impl RedisBuilder {
    /// A plain, non-persistent server.
    pub fn new() -> Self {
        Self::default()
    }

    /// Append-only file on, fsync'd on every write.
    pub fn aof(mut self) -> Self {
        self.aof = true;
        self
    }

    /// TLS only (no plain port), with this certificate and key (PEM);
    /// clients are not asked for certificates. [`RedisServer::url`] is then
    /// `rediss://`.
    pub fn tls(mut self, cert: &std::path::Path, key: &std::path::Path) -> Self {
        self.tls = Some((cert.to_path_buf(), key.to_path_buf()));
        self
    }

    /// A replica of the server on `port`.
    pub fn replica_of(mut self, port: u16) -> Self {
        self.replica_of = Some(port);
        self
    }

    /// A Redis Cluster node (`cluster-enabled`); see [`RedisCluster`].
    pub fn cluster(mut self) -> Self {
        self.cluster = true;
        self
    }

    /// A sentinel monitoring `master_name` at `master_port` (quorum 2, fast
    /// fail-over timings).
    pub fn sentinel(mut self, master_name: &str, master_port: u16) -> Self {
        self.sentinel = Some((master_name.to_string(), master_port));
        self
    }

    /// Starts it and waits until it answers PING.
    pub fn spawn(self) -> RedisServer {
        require_redis_server();
        let dir = tempfile::tempdir().expect("temp dir");
        let mut last_err = String::new();
        for _ in 0..5 {
            // A retry takes a new port: a sentinel config names the old one.
            let _ = std::fs::remove_file(dir.path().join("sentinel.conf"));
            let mut server = RedisServer {
                child: None,
                port: free_port(),
                dir: dir.path().to_path_buf(),
                _tmp: None,
                spec: self.clone(),
            };
            match server.start_inner() {
                Ok(()) => {
                    server._tmp = Some(dir);
                    return server;
                }
                Err(e) => last_err = e,
            }
        }
        panic!("redis-server did not start: {last_err}");
    }
}

/// A running redis-server (or sentinel); killed on drop.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    spec: RedisBuilder,
}

impl RedisServer {
    /// A builder.
    pub fn builder() -> RedisBuilder {
        RedisBuilder::new()
    }

    /// A plain server.
    pub fn spawn() -> RedisServer {
        RedisBuilder::new().spawn()
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>` (`rediss://` with TLS).
    pub fn url(&self) -> String {
        let scheme = if self.spec.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Its data directory.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// A synchronous connection, for assertions.
    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .expect("client")
            .get_connection_with_timeout(Duration::from_secs(5))
            .expect("connect to test redis")
    }

    /// Whether the process is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    fn args(&self) -> Vec<String> {
        let mut a: Vec<String> = Vec::new();
        if let Some((name, master)) = &self.spec.sentinel {
            let conf = self.dir.join("sentinel.conf");
            // A sentinel rewrites its config; write it only the first time.
            if !conf.exists() {
                let text = format!(
                    "port {port}\nbind 127.0.0.1\ndir {dir}\nlogfile {dir}/sentinel.log\n\
                     sentinel monitor {name} 127.0.0.1 {master} 2\n\
                     sentinel down-after-milliseconds {name} 1000\n\
                     sentinel failover-timeout {name} 4000\n\
                     sentinel parallel-syncs {name} 1\n",
                    port = self.port,
                    dir = self.dir.display(),
                );
                std::fs::write(&conf, text).expect("write sentinel.conf");
            }
            a.push(conf.display().to_string());
            a.push("--sentinel".into());
            return a;
        }
        if let Some((cert, key)) = &self.spec.tls {
            for (k, v) in [
                ("--port", "0".to_string()),
                ("--tls-port", self.port.to_string()),
                ("--tls-cert-file", cert.display().to_string()),
                ("--tls-key-file", key.display().to_string()),
                ("--tls-auth-clients", "no".into()),
            ] {
                a.push(k.into());
                a.push(v);
            }
        } else {
            a.push("--port".into());
            a.push(self.port.to_string());
        }
        for (k, v) in [
            ("--bind", "127.0.0.1".into()),
            ("--dir", self.dir.display().to_string()),
            (
                "--logfile",
                self.dir.join("redis.log").display().to_string(),
            ),
            ("--save", String::new()),
            (
                "--appendonly",
                if self.spec.aof { "yes" } else { "no" }.into(),
            ),
            ("--appendfsync", "always".into()),
            ("--daemonize", "no".into()),
        ] {
            a.push(k.into());
            a.push(v);
        }
        if self.spec.cluster {
            for (k, v) in [
                ("--cluster-enabled", "yes"),
                ("--cluster-config-file", "nodes.conf"),
                ("--cluster-node-timeout", "2000"),
            ] {
                a.push(k.into());
                a.push(v.into());
            }
        }
        if let Some(m) = self.spec.replica_of {
            a.push("--replicaof".into());
            a.push("127.0.0.1".into());
            a.push(m.to_string());
        }
        a
    }

    fn start_inner(&mut self) -> Result<(), String> {
        let child = Command::new("redis-server")
            .args(self.args())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawn redis-server: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        let client = redis::Client::open(self.url()).map_err(|e| e.to_string())?;
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    self.child = None;
                    return Err(format!(
                        "redis-server exited at start ({status}); log in {}",
                        self.dir.display()
                    ));
                }
            }
            if self.spec.tls.is_some() {
                // The test process does not trust the test CA: a listening
                // TLS port is as far as it checks.
                if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                    return Ok(());
                }
            } else if let Ok(mut conn) =
                client.get_connection_with_timeout(Duration::from_millis(200))
            {
                let pong: redis::RedisResult<String> = redis::cmd("PING").query(&mut conn);
                if pong.is_ok() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                self.kill();
                return Err("redis-server did not answer PING within 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Starts it again on the same port, with the same data dir.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "already running");
        self.start_inner().expect("restart redis-server");
    }

    /// Graceful stop (SIGTERM: an AOF server finishes its writes), then waits.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                if Instant::now() > deadline {
                    let _ = c.kill();
                    let _ = c.wait();
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// SIGKILL, then waits.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A TCP forwarder to a local port that can be cut (every connection closed,
/// new ones refused) and restored: a network drop between one client and
/// Redis, while Redis itself stays up.
pub struct TcpRelay {
    port: u16,
    cut: Arc<AtomicBool>,
    hold: Arc<Mutex<Option<HoldSpec>>>,
    /// Open (true) unless a hold fired and is not released yet.
    gate: Arc<tokio::sync::watch::Sender<bool>>,
    conns: Arc<Mutex<CancellationToken>>,
    stop: CancellationToken,
}

impl TcpRelay {
    /// Starts forwarding a fresh loopback port to `target_port`.
    pub async fn spawn(target_port: u16) -> TcpRelay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind relay");
        let port = listener.local_addr().expect("relay addr").port();
        let cut = Arc::new(AtomicBool::new(false));
        let hold: Arc<Mutex<Option<HoldSpec>>> = Arc::default();
        let gate = Arc::new(tokio::sync::watch::Sender::new(true));
        let conns = Arc::new(Mutex::new(CancellationToken::new()));
        let stop = CancellationToken::new();
        {
            let (cut, conns, stop) = (cut.clone(), conns.clone(), stop.clone());
            let (hold, gate) = (hold.clone(), gate.clone());
            tokio::spawn(async move {
                loop {
                    let accepted = tokio::select! {
                        _ = stop.cancelled() => return,
                        a = listener.accept() => a,
                    };
                    let Ok((mut inbound, _)) = accepted else {
                        continue;
                    };
                    if cut.load(Ordering::SeqCst) {
                        drop(inbound);
                        continue;
                    }
                    let gen = conns.lock().unwrap().clone();
                    let (hold, gate) = (hold.clone(), gate.clone());
                    tokio::spawn(async move {
                        let Ok(outbound) =
                            tokio::net::TcpStream::connect(("127.0.0.1", target_port)).await
                        else {
                            return;
                        };
                        let (mut from_client, mut to_client) = inbound.split();
                        let (mut from_server, mut to_server) = outbound.into_split();
                        tokio::select! {
                            _ = gen.cancelled() => {}
                            _ = tokio::io::copy(&mut from_server, &mut to_client) => {}
                            _ = forward_holding(&mut from_client, &mut to_server, &hold, &gate) => {}
                        }
                    });
                }
            });
        }
        TcpRelay {
            port,
            cut,
            hold,
            gate,
            conns,
            stop,
        }
    }

    /// `redis://127.0.0.1:<relay port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Closes every relayed connection and refuses new ones.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        let mut g = self.conns.lock().unwrap();
        g.cancel();
        *g = CancellationToken::new();
    }

    /// Relays again.
    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }

    /// Arms a hold: the next time a client sends bytes containing `pattern`
    /// (e.g. `b"XINFO"`, a command's name), those bytes go to Redis, then
    /// every relayed connection's later commands wait in the relay (Redis's
    /// answers still flow back) until [`Hold::release`]. Fires once.
    pub fn hold_after(&self, pattern: &[u8]) -> Hold {
        let (reached_tx, reached) = tokio::sync::oneshot::channel();
        let (release, release_rx) = tokio::sync::oneshot::channel();
        *self.hold.lock().unwrap() = Some(HoldSpec {
            pattern: pattern.to_vec(),
            reached: reached_tx,
            release: release_rx,
        });
        Hold { reached, release }
    }
}

/// An armed [`TcpRelay::hold_after`].
struct HoldSpec {
    pattern: Vec<u8>,
    reached: tokio::sync::oneshot::Sender<()>,
    release: tokio::sync::oneshot::Receiver<()>,
}

/// The test's side of a [`TcpRelay::hold_after`].
pub struct Hold {
    reached: tokio::sync::oneshot::Receiver<()>,
    release: tokio::sync::oneshot::Sender<()>,
}

impl Hold {
    /// Waits until the pattern went through and the connection is held.
    pub async fn reached(&mut self, limit: Duration) {
        tokio::time::timeout(limit, &mut self.reached)
            .await
            .expect("the held command was never sent")
            .expect("relay gone");
    }

    /// Lets the held connection go on.
    pub fn release(self) {
        let _ = self.release.send(());
    }
}

/// Client-to-Redis bytes, forwarded, through the relay's gate: an armed
/// hold's pattern closes it (before those bytes go on, so whatever the
/// client sends after their answer finds it closed), and every connection's
/// bytes wait at it until the hold is released.
async fn forward_holding(
    from: &mut (impl tokio::io::AsyncRead + Unpin),
    to: &mut (impl tokio::io::AsyncWrite + Unpin),
    hold: &Mutex<Option<HoldSpec>>,
    gate: &tokio::sync::watch::Sender<bool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut open = gate.subscribe();
    let mut buf = vec![0u8; 64 * 1024];
    // The end of the previous read, for a pattern split across reads.
    let mut tail: Vec<u8> = Vec::new();
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let fired = {
            let mut h = hold.lock().unwrap();
            let hit = h.as_ref().is_some_and(|spec| {
                let p = spec.pattern.len();
                let mut seen = tail.clone();
                seen.extend_from_slice(&buf[..n]);
                // Only windows that end in the new bytes.
                seen.windows(p)
                    .enumerate()
                    .any(|(i, w)| i + p > tail.len() && w == spec.pattern)
            });
            if hit {
                h.take()
            } else {
                None
            }
        };
        match fired {
            Some(spec) => {
                gate.send_replace(false);
                if to.write_all(&buf[..n]).await.is_err() {
                    gate.send_replace(true);
                    return;
                }
                let _ = spec.reached.send(());
                let _ = spec.release.await;
                gate.send_replace(true);
            }
            None => {
                if open.wait_for(|o| *o).await.is_err() {
                    return;
                }
                if to.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
        tail.clear();
        tail.extend_from_slice(&buf[n.saturating_sub(16)..n]);
    }
}

impl Drop for TcpRelay {
    fn drop(&mut self) {
        self.stop.cancel();
        self.conns.lock().unwrap().cancel();
    }
}

/// A Redis Cluster of `n` masters (no replicas), each with AOF, made with
/// `redis-cli --cluster create`; ready when every node says `cluster_state:ok`.
pub struct RedisCluster {
    /// The nodes, in the order given to `--cluster create`.
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts the nodes and creates the cluster.
    pub fn spawn(n: usize) -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..n)
            .map(|_| RedisServer::builder().cluster().aof().spawn())
            .collect();
        let mut cmd = Command::new("redis-cli");
        cmd.arg("--cluster").arg("create");
        for node in &nodes {
            cmd.arg(format!("127.0.0.1:{}", node.port()));
        }
        let out = cmd
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let cluster = RedisCluster { nodes };
        cluster.wait_ok();
        cluster
    }

    /// Waits (bounded) until every running node says `cluster_state:ok`.
    pub fn wait_ok(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = self.nodes.iter().filter(|n| n.is_running()).all(|n| {
                let mut c = n.conn();
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query(&mut c)
                    .unwrap_or_default();
                info.contains("cluster_state:ok")
            });
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "cluster never reached cluster_state:ok"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `redis+cluster://` naming every node.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        format!("redis+cluster://{}", hosts.join(","))
    }
}
