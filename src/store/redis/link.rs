//! The connection to Redis: where it is (a URL, or Sentinel naming the
//! master), the current command connection, and whether it is up.
//!
//! Two connections per instance, both `Conn`s made by
//! [`Link::connect`]: one for commands (lookups, writes, scans: many requests
//! in flight on one socket), one only for the stream tail, because a blocking
//! `XREAD` would hold up every request queued behind it on a shared socket.
//!
//! Requests never dial: they use the command connection if there is one and
//! fail fast otherwise (a bloom hit then fails closed). Only the sync task
//! (see `sync.rs`) reconnects, with backoff, asking Sentinel for the current
//! master on every attempt, so a fail-over is followed by reconnecting. An
//! error that means "this connection or this node is no longer usable" (I/O,
//! timeout, `READONLY` from a demoted master, `LOADING`, `MASTERDOWN`) drops
//! the command connection and wakes the sync task; logging happens once per
//! state change, never per request.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ::redis::cluster::{ClusterClient, ClusterConfig};
use ::redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use ::redis::{
    AsyncConnectionConfig, Client, ErrorKind, RedisConnectionInfo, RedisError, ServerErrorKind,
    TlsMode,
};
use arc_swap::ArcSwapOption;
use tokio::sync::Notify;

use super::conn::Conn;
use crate::store::StoreError;

/// How long one connection attempt may take, Sentinel lookup included.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a command may wait for its answer before the connection is
/// considered lost.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one `XREAD` blocks at most (see [`tail_block`]).
pub const TAIL_BLOCK: Duration = Duration::from_millis(1000);

/// How long one `XREAD` blocks: each answer (events or none) counts as a
/// sync, so the block must be well under `store.max_staleness` for a healthy
/// instance never to look stale.
pub fn tail_block(max_staleness: Option<Duration>) -> Duration {
    match max_staleness {
        Some(m) => (m / 4).clamp(Duration::from_millis(50), TAIL_BLOCK),
        None => TAIL_BLOCK,
    }
}

/// Where Redis is.
enum Target {
    /// `redis://` or `rediss://`.
    Direct(Client),
    /// `redis+sentinel://`: asked for the master on every (re)connect.
    Sentinel {
        client: tokio::sync::Mutex<SentinelClient>,
        master: String,
    },
    /// `redis+cluster://`: redis-rs's cluster client (see `conn.rs`).
    Cluster(ClusterClient),
}

/// A parsed store URL, for logs (never carries a password).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// What to show in logs: the URL without credentials.
    pub display: String,
}

/// The connection to Redis.
pub struct Link {
    target: Target,
    /// The endpoint, for logs.
    pub endpoint: Endpoint,
    conn: ArcSwapOption<Conn>,
    /// Revocation writes when `store.redis.min_replicas_acked` > 0: `WAIT`
    /// blocks its connection, and must not hold up the lookups queued on
    /// the command connection.
    writer: ArcSwapOption<Conn>,
    connected: AtomicBool,
    /// The deployment's hash tag, `{prefix}`: its slot, in a cluster.
    tag: String,
    /// Wakes the sync task: a connection was lost, or the outbox has work.
    pub wake: Notify,
}

impl Link {
    /// Parses the store URL for the deployment under `prefix`; connects
    /// nothing yet.
    pub fn new(url: &str, prefix: &str) -> Result<Link, StoreError> {
        let (target, endpoint) = parse(url)?;
        Ok(Link {
            tag: format!("{{{prefix}}}"),
            target,
            endpoint,
            conn: ArcSwapOption::empty(),
            writer: ArcSwapOption::empty(),
            connected: AtomicBool::new(false),
            wake: Notify::new(),
        })
    }

    /// The command connection, when Redis is up.
    pub fn conn(&self) -> Option<Conn> {
        self.conn.load().as_deref().cloned()
    }

    /// The connection revocations are written on: the writer when there is
    /// one, else the command connection.
    pub fn writer(&self) -> Option<Conn> {
        match self.writer.load().as_deref() {
            Some(w) => Some(w.clone()),
            None => self.conn(),
        }
    }

    /// Installs the writer connection (see [`Link::writer`]).
    pub fn set_writer(&self, conn: Option<Conn>) {
        self.writer.store(conn.map(std::sync::Arc::new));
    }

    /// Whether the command connection is up.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// Installs a fresh command connection; true when this is a change of
    /// state (for the one log line per change).
    pub fn set_connected(&self, conn: Conn) -> bool {
        self.conn.store(Some(std::sync::Arc::new(conn)));
        !self.connected.swap(true, Ordering::AcqRel)
    }

    /// Drops the command connection after an error that makes it unusable;
    /// true when this is a change of state. Wakes the sync task either way.
    pub fn lost(&self) -> bool {
        self.conn.store(None);
        self.writer.store(None);
        let was = self.connected.swap(false, Ordering::AcqRel);
        self.wake.notify_one();
        was
    }

    /// Opens a command connection and a tail connection to the current
    /// master.
    pub async fn connect(&self, with_writer: bool) -> Result<Connected, RedisError> {
        let attempt = async {
            let client = match &self.target {
                Target::Direct(c) => c.clone(),
                Target::Sentinel { client, .. } => client.lock().await.async_get_client().await?,
                Target::Cluster(c) => return self.connect_cluster(c, with_writer).await,
            };
            let cmd_cfg = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(CONNECT_TIMEOUT))
                .set_response_timeout(Some(RESPONSE_TIMEOUT));
            let tail_cfg = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(CONNECT_TIMEOUT))
                .set_response_timeout(Some(TAIL_BLOCK + RESPONSE_TIMEOUT));
            let mut cmd = Conn::Single(
                client
                    .get_multiplexed_async_connection_with_config(&cmd_cfg)
                    .await?,
            );
            // A Sentinel may still name a master that has just been demoted:
            // only a node that says it is master is worth writing to.
            // Connecting is not enough (a proxy or a half-open path may accept
            // and drop): the node must answer.
            let () = ::redis::cmd("PING").query_async(&mut cmd).await?;
            if let Target::Sentinel { master, .. } = &self.target {
                let role: Vec<::redis::Value> = ::redis::cmd("ROLE").query_async(&mut cmd).await?;
                let is_master = matches!(role.first(),
                    Some(::redis::Value::BulkString(b)) if b == b"master");
                if !is_master {
                    return Err(RedisError::from((
                        ErrorKind::Server(ServerErrorKind::ReadOnly),
                        "sentinel named a node that is not master",
                        master.clone(),
                    )));
                }
            }
            let tail = Conn::Single(
                client
                    .get_multiplexed_async_connection_with_config(&tail_cfg)
                    .await?,
            );
            let writer = if with_writer {
                Some(Conn::Single(
                    client
                        .get_multiplexed_async_connection_with_config(&cmd_cfg)
                        .await?,
                ))
            } else {
                None
            };
            Ok((cmd, tail, writer))
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
            Ok(r) => r,
            Err(_) => Err(RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connecting to redis timed out",
            ))),
        }
    }
}

impl Link {
    /// [`Link::connect`] for a cluster: three cluster connections (each
    /// with its own connection per node: the tail's blocking `XREAD` must
    /// not hold up the command connection's node socket either).
    async fn connect_cluster(
        &self,
        client: &ClusterClient,
        with_writer: bool,
    ) -> Result<Connected, RedisError> {
        let config = |response| {
            ClusterConfig::new()
                .set_connection_timeout(CONNECT_TIMEOUT)
                .set_response_timeout(response)
        };
        let open = |response| async move {
            let c = client
                .get_async_connection_with_config(config(response))
                .await?;
            Ok::<_, RedisError>(Conn::cluster(c, &self.tag))
        };
        let mut cmd = open(RESPONSE_TIMEOUT).await?;
        // The deployment's slot must be served: a `DBSIZE` goes to its master.
        let _: i64 = ::redis::cmd("DBSIZE").query_async(&mut cmd).await?;
        let tail = open(TAIL_BLOCK + RESPONSE_TIMEOUT).await?;
        let writer = if with_writer {
            Some(open(RESPONSE_TIMEOUT).await?)
        } else {
            None
        };
        Ok((cmd, tail, writer))
    }
}

/// The command, tail and (optional) writer connections of one session.
pub type Connected = (Conn, Conn, Option<Conn>);

/// True when an error means the connection (or the node behind it) must be
/// replaced, not just that one command failed.
pub fn is_fatal(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_timeout()
        || e.is_unrecoverable_error()
        || matches!(
            e.kind(),
            ErrorKind::Server(
                ServerErrorKind::ReadOnly
                    | ServerErrorKind::BusyLoading
                    | ServerErrorKind::MasterDown
            )
        )
}

/// True when Redis refused a write for a reason that is not the write's
/// own: it refuses every write for now (out of memory under `noeviction`,
/// too few replicas, a busy script, a failed disk write, a slot moving, an
/// ACL without the command). A replay stops there and tries again later,
/// in order; any other refusal (`WRONGTYPE`: a foreign value at the rule's
/// key) is the command's own, and only that command waits.
pub fn refuses_every_write(e: &RedisError) -> bool {
    matches!(
        e.code(),
        Some("OOM" | "NOREPLICAS" | "BUSY" | "MISCONF" | "TRYAGAIN" | "CLUSTERDOWN" | "NOPERM")
    )
}

fn bad_url(why: impl Into<String>) -> StoreError {
    StoreError::Redis(format!("store.url: {}", why.into()))
}

/// Parses `redis://`, `rediss://`, `redis+sentinel://`,
/// `rediss+sentinel://`, `redis+cluster://` and `rediss+cluster://` URLs.
///
/// Sentinel: `redis+sentinel://[user:password@]host:port[,host:port...]/master-name[/db]`.
/// The user and password, if any, are the master's (the sentinels are
/// reached without them); `rediss+sentinel` uses TLS to sentinels and master.
fn parse(url: &str) -> Result<(Target, Endpoint), StoreError> {
    for (prefix, scheme) in [
        ("redis+cluster://", "redis"),
        ("rediss+cluster://", "rediss"),
    ] {
        if let Some(rest) = url.strip_prefix(prefix) {
            return parse_cluster(scheme, rest);
        }
    }
    let (tls, rest) = if let Some(r) = url.strip_prefix("redis+sentinel://") {
        (false, r)
    } else if let Some(r) = url.strip_prefix("rediss+sentinel://") {
        (true, r)
    } else {
        let client = Client::open(url).map_err(|e| bad_url(e.to_string()))?;
        let display = strip_credentials(url);
        return Ok((Target::Direct(client), Endpoint { display }));
    };
    let (userinfo, rest) = match rest.rsplit_once('@') {
        Some((u, r)) => (Some(u), r),
        None => (None, rest),
    };
    let (hosts, path) = rest
        .split_once('/')
        .ok_or_else(|| bad_url("sentinel URL needs /master-name after the hosts"))?;
    let mut parts = path.split('/').filter(|s| !s.is_empty());
    let master = parts
        .next()
        .ok_or_else(|| bad_url("sentinel URL needs a master name"))?
        .to_string();
    let db: i64 = match parts.next() {
        Some(d) => d
            .parse()
            .map_err(|_| bad_url(format!("bad database number {d:?}")))?,
        None => 0,
    };
    let scheme = if tls { "rediss" } else { "redis" };
    let nodes: Vec<String> = hosts
        .split(',')
        .filter(|h| !h.is_empty())
        .map(|h| format!("{scheme}://{h}"))
        .collect();
    if nodes.is_empty() {
        return Err(bad_url("sentinel URL names no sentinel host"));
    }
    let mut info = RedisConnectionInfo::default().set_db(db);
    if let Some(u) = userinfo {
        let (user, pass) = u.split_once(':').unwrap_or((u, ""));
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .to_string()
        };
        if !user.is_empty() {
            info = info.set_username(decode(user));
        }
        if !pass.is_empty() {
            info = info.set_password(decode(pass));
        }
    }
    let mut node_info = SentinelNodeConnectionInfo::default().set_redis_connection_info(info);
    if tls {
        node_info = node_info.set_tls_mode(TlsMode::Secure);
    }
    let client = SentinelClient::build(
        nodes,
        master.clone(),
        Some(node_info),
        SentinelServerType::Master,
    )
    .map_err(|e| bad_url(e.to_string()))?;
    let display = format!(
        "{}+sentinel://{hosts}/{master}",
        if tls { "rediss" } else { "redis" }
    );
    Ok((
        Target::Sentinel {
            client: tokio::sync::Mutex::new(client),
            master,
        },
        Endpoint { display },
    ))
}

/// `redis+cluster://[user:password@]host:port[,host:port...][/]`: the
/// nodes to learn the slot map from (any subset of the cluster); the
/// credentials are every node's.
fn parse_cluster(scheme: &str, rest: &str) -> Result<(Target, Endpoint), StoreError> {
    let (userinfo, hosts) = match rest.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, rest),
    };
    let hosts = hosts.trim_end_matches('/');
    if hosts.contains('/') {
        return Err(bad_url(
            "a cluster URL names nodes only (a cluster has no database numbers)",
        ));
    }
    let nodes: Vec<String> = hosts
        .split(',')
        .filter(|h| !h.is_empty())
        .map(|h| match userinfo {
            Some(u) => format!("{scheme}://{u}@{h}"),
            None => format!("{scheme}://{h}"),
        })
        .collect();
    if nodes.is_empty() {
        return Err(bad_url("cluster URL names no node"));
    }
    // Few, short retries: a request must fail fast (a bloom hit then fails
    // closed, a revocation goes to the outbox) rather than wait out the
    // client's default of 16 retries while a node is down.
    let client = ClusterClient::builder(nodes)
        .retries(2)
        .min_retry_wait(10)
        .max_retry_wait(200)
        .connection_timeout(CONNECT_TIMEOUT)
        .response_timeout(RESPONSE_TIMEOUT)
        .overall_response_timeout(Some(RESPONSE_TIMEOUT))
        .build()
        .map_err(|e| bad_url(e.to_string()))?;
    let display = format!("{scheme}+cluster://{hosts}");
    Ok((Target::Cluster(client), Endpoint { display }))
}

fn strip_credentials(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}{}", &url[..s + 3], &url[at + 1..]),
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_logs_never_show_passwords() {
        let (_, e) = parse("redis://:secret@127.0.0.1:6379/2").unwrap();
        assert_eq!(e.display, "redis://127.0.0.1:6379/2");
        let (t, e) =
            parse("redis+sentinel://u:p%40ss@10.0.0.1:26379,10.0.0.2:26379/mymaster/1").unwrap();
        assert_eq!(
            e.display,
            "redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/mymaster"
        );
        assert!(matches!(t, Target::Sentinel { master, .. } if master == "mymaster"));
        assert!(parse("redis+sentinel://10.0.0.1:26379").is_err());
        assert!(parse("redis+sentinel://10.0.0.1:26379/").is_err());
        assert!(parse("redis+sentinel://h:1/m/notanumber").is_err());
        let (t, e) = parse("redis+cluster://u:secret@10.0.0.1:7000,10.0.0.2:7001/").unwrap();
        assert_eq!(e.display, "redis+cluster://10.0.0.1:7000,10.0.0.2:7001");
        assert!(matches!(t, Target::Cluster(_)));
        assert!(parse("redis+cluster://").is_err());
        assert!(parse("redis+cluster://h:1/0").is_err());
    }
}
