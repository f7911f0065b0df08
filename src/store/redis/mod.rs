//! The shared store on Redis: many gateway instances agree on what is
//! revoked, within milliseconds, through Redis restarts, fail-overs and
//! network drops.
//!
//! ```text
//!  apply(cmd) ──► Lua: rule key (TTL) + XADD event ──► Redis ──► XREAD BLOCK (every instance)
//!      │ Redis away?                                               │
//!      └──► outbox journal (fsync) ──► replayed in order ──►───────┘   ──► LocalCache
//!                                                                         (bloom + scopes)
//!  request: bloom miss ──► pass (no I/O)
//!           bloom hit  ──► confirmed-answer cache ──► one GET per fingerprint in flight
//! ```
//!
//! * **Source of truth**: one Redis key per rule, expiring with the rule.
//!   Fingerprints only: a raw token never leaves the process. Layout (`P` =
//!   `store.key_prefix`, braces = one Cluster hash tag; details in `keys.rs`):
//!
//!   ```text
//!   {P}:tok:<fingerprint hex>   STRING "<expires_at>"        EXPIREAT expires_at
//!   {P}:scope:<blake3(key)>     STRING ScopeRule JSON        EXPIREAT expires_at
//!   {P}:events                  STREAM c=<RevocationCommand JSON>, MAXLEN ~ stream_maxlen
//!   {P}:snapshot                STRING bloom snapshot (binary: stream id, filter words,
//!                                      token-rule count, scope rules JSON), no TTL
//!   ```
//! * **Propagation**: each write also appends an event to a stream, in the
//!   same Lua script (atomic, and it merges with what is there: the later
//!   expiry and scope time win, so a late outbox replay never moves a rule
//!   backwards). Each instance tails the stream from its last id and updates
//!   its [`LocalCache`]. After a reconnect it resumes from that id, unless the
//!   stream was trimmed past it (or went backwards: a fail-over that lost
//!   writes, a Redis that restarted empty), in which case it resyncs fully.
//! * **Bulk** (`apply_batch`, the admin import's batches): the token rules
//!   of a batch go in one pipeline of native `SET NX EXAT`s (no `MULTI`,
//!   no script), then only the rules whose `SET NX` found one already go
//!   through a merge script (`keys.rs`, `TOKEN_MERGE_LUA`: the later
//!   expiry wins, as a single write merges), then ONE stream event naming
//!   every rule of the batch (field `tb`: 24 bytes per rule, binary; every
//!   other event keeps its `c` JSON, which every build reads): the event
//!   after every write it announces (see `write_token_batch` for why no
//!   transaction). Other commands are written one by one; `WAIT`/
//!   confirmation runs once for the batch, at the end. With Redis away the
//!   whole batch goes to the outbox with one fsync, and is replayed as
//!   batches.
//! * **Expiries** past `MAX_EXPIRES_AT` (year 9999; `EXAT` refuses more
//!   than ~9.2e15) are written as it, so no input (an unverified JWT
//!   `exp`, an import line) makes a write Redis refuses on every replay.
//! * **Start-up**: from the snapshot when there is a usable one, else by
//!   scanning; [`StoreStatus::ready`] is false until then, and tailing
//!   starts from the id the load used, so nothing falls in between.
//!   *Scan*: note the stream's last id, load everything with `SCAN` (scope
//!   values fetched with `MGET`), then tail from that id.
//!   *Snapshot* (`{P}:snapshot`, written after every successful scan: this
//!   load's or a maintenance rebuild's, by any instance, last writer wins):
//!   the bloom filter's words and the scope rules as of a scan, and the
//!   stream id noted before that scan began. It is used only when the stream
//!   still holds every event after that id (not trimmed past it, not gone
//!   backwards); its filter is installed, its scope rules replace the local
//!   ones, and tailing from its id applies everything since. One `GET` of a
//!   few MB instead of a `SCAN` of every key: with 1M rules, start-up stops
//!   being Redis's `SCAN` time. A corrupt or foreign value (checked: magic,
//!   version, sizes, checksum) is ignored. Fingerprints that expired since
//!   the snapshot stay in the filter: they only cause bloom false positives
//!   (the exact `GET` answers "not revoked"), and the next rebuild sheds them.
//! * **Bloom generations**: every `store.maintenance_interval` the filter is
//!   rebuilt from a `SCAN` and swapped in, shedding expired fingerprints
//!   (and a new snapshot is written).
//!   Inserts made meanwhile reach both filters ([`LocalCache::begin_rebuild`]),
//!   and requests never wait.
//! * **Redis away**: bloom hits fail closed (the lookup returns `Err`), bloom
//!   misses pass; revocations go to a local outbox ([`Journal`], fsync'd
//!   before the acknowledgement) and to this instance's cache, and are
//!   replayed to Redis in order when it is back; until then new revocations
//!   queue behind them, so order is kept. A non-empty outbox left by a
//!   previous run is replayed too.
//! * **Redis refusing a write** (a foreign value at a rule's key:
//!   `WRONGTYPE`): the command goes to the outbox, stays there (enforced by
//!   this instance, retried on a backoff) with every later command naming
//!   the same rule, and the rest is written past it; the instance stays
//!   connected and tailing. Redis refusing every write (`OOM`,
//!   `NOREPLICAS`, ...) stops the replay in order until the next try
//!   (`sync::replay_outbox`). Past `store.max_staleness` without a sync,
//!   [`RevocationStore::check_mode`] turns to `Reject` or `AlwaysLookup`.
//!
//! URLs: `redis://[user:pass@]host:port[/db]`, `rediss://...` (TLS, rustls
//! with the system roots; `#insecure` skips verification), and
//! `redis+sentinel://[user:pass@]host:port[,host:port...]/master-name[/db]`
//! (or `rediss+sentinel://`): the sentinels are asked for the master on every
//! reconnect, so the store follows a fail-over. Credentials in a sentinel URL
//! are the master's; the sentinels themselves are reached without.
//!
//! Metrics (counters; gauges come from [`RevocationStore::status`]):
//! `revgate_redis_lookups_total{outcome}`, `revgate_redis_events_total`,
//! `revgate_redis_resyncs_total`, `revgate_redis_connects_total`,
//! `revgate_redis_outbox_appends_total`, `revgate_redis_outbox_replayed_total`,
//! `revgate_redis_outbox_refused_total`,
//! `revgate_redis_snapshot_loads_total`, `revgate_redis_snapshot_writes_total`.
//!
//! Redis should run with `maxmemory-policy noeviction`: an evicted rule key
//! is a forgotten revocation, while a refused write only goes to the outbox.
//!
//! Redis Cluster (`redis+cluster://host:port,host:port`, redis-rs's
//! cluster client; `conn.rs`): every key of a deployment shares one hash
//! tag, so the scripts and `SCAN` work within one slot, on one master;
//! separate deployments (prefixes) spread over the cluster.
//!
//! Replication is asynchronous, so a fail-over can lose writes Redis had
//! acknowledged; the store notices (the stream went backwards) and resyncs.
//! `store.redis.min_replicas_acked` (`wait.rs`) closes the gap: a
//! revocation is acknowledged only once that many replicas have it.
//!
//! `store.consistency = "confirmed"` (`lease.rs`): each instance holds a
//! lease in Redis and publishes the stream position it applied; a revoke is
//! acknowledged once every live member applied it, and an instance that
//! cannot renew its lease or falls behind fences itself
//! ([`CheckMode::Fenced`]). The sync task (and the lease tasks) run on the
//! store's own thread (`thread.rs`), so the tail never queues behind
//! request work.

pub(crate) mod conn;
mod family;
mod keys;
pub mod lease;
pub(crate) mod link;
mod list;
mod lookup;
mod principals;
#[doc(hidden)]
pub mod snapshot;
mod sync;
mod thread;
mod wait;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use self::conn::Conn;
use ::redis::{ErrorKind, RedisError, Value};
use dashmap::DashMap;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use self::keys::{Keys, Scripts};
use self::link::{is_fatal, Link};
use self::lookup::{Confirmed, MAX_CONFIRMED};
use super::journal::Journal;
use super::{
    now_unix, Applied, Binding, CheckMode, LocalCache, Member, RevocationCommand, RevocationStore,
    RevocationTarget, StoreError, StoreStatus, MAX_EXPIRES_AT,
};
use crate::config::{Consistency, StaleAction, StoreConfig};
use crate::credentials::Fingerprint;

/// The Redis-backed revocation store; see the module docs.
pub struct RedisStore {
    inner: Arc<Inner>,
    stop: CancellationToken,
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

/// Revocations acknowledged while Redis was away, in order.
struct Outbox {
    journal: Journal,
    pending: Vec<RevocationCommand>,
}

/// What the store and its background tasks share.
struct Inner {
    cfg: StoreConfig,
    keys: Keys,
    scripts: Scripts,
    binding_scripts: principals::BindingScripts,
    family_scripts: family::FamilyScripts,
    link: Link,
    cache: LocalCache,
    confirmed: Confirmed,
    outbox: tokio::sync::Mutex<Outbox>,
    /// Token rules in the outbox: exact answers while Redis does not have them.
    outbox_tokens: DashMap<Fingerprint, u64>,
    backlog: AtomicU64,
    /// Writes may go straight to Redis (the outbox is empty and Redis is up).
    direct: AtomicBool,
    ready: AtomicBool,
    closed: AtomicBool,
    origin: Instant,
    /// Milliseconds after `origin` of the last successful sync.
    last_sync_ms: AtomicU64,
    token_rules: AtomicU64,
    /// Loads served from the snapshot.
    snapshot_loads: AtomicU64,
    /// One bloom rebuild at a time (start-up load, resync, maintenance).
    rebuild_gate: tokio::sync::Mutex<()>,
    /// Asks the maintenance task for a rebuild now (a load found the filter
    /// undersized).
    rebuild_now: tokio::sync::Notify,
    /// Confirmed consistency: this instance's lease (see `lease.rs`).
    lease: Option<Arc<lease::Lease>>,
    /// `WAIT` / `WAITAOF` after each revocation (see `wait.rs`).
    durability: wait::Durability,
}

impl RedisStore {
    /// Parses `url`, opens the outbox at `cfg.journal` (applying what a
    /// previous run left there to the local cache at once) and starts the
    /// background tasks; returns without waiting for Redis, which may be
    /// down: [`StoreStatus::ready`] turns true once the start-up load is done.
    /// The tasks stop when `shutdown` is cancelled or the store is dropped.
    pub async fn start(
        url: &str,
        cfg: &StoreConfig,
        shutdown: CancellationToken,
    ) -> Result<Arc<RedisStore>, StoreError> {
        let link = Link::new(url, &cfg.key_prefix)?;
        let (journal, replayed, report) = Journal::open(&cfg.journal)?;
        if report.torn_bytes > 0 {
            tracing::warn!(
                path = %cfg.journal.display(),
                torn_bytes = report.torn_bytes,
                "redis outbox had a torn tail; kept the good prefix"
            );
        }
        let inner = Arc::new(Inner {
            cfg: cfg.clone(),
            keys: Keys::new(&cfg.key_prefix),
            scripts: Scripts::new(),
            binding_scripts: principals::BindingScripts::new(),
            family_scripts: family::FamilyScripts::new(),
            link,
            cache: LocalCache::new(cfg.bloom_capacity, cfg.bloom_fp_rate),
            confirmed: Confirmed::new(cfg.confirm_ttl, MAX_CONFIRMED),
            outbox: tokio::sync::Mutex::new(Outbox {
                journal,
                pending: Vec::new(),
            }),
            outbox_tokens: DashMap::new(),
            backlog: AtomicU64::new(0),
            direct: AtomicBool::new(false),
            ready: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            origin: Instant::now(),
            last_sync_ms: AtomicU64::new(0),
            token_rules: AtomicU64::new(0),
            snapshot_loads: AtomicU64::new(0),
            rebuild_gate: tokio::sync::Mutex::new(()),
            rebuild_now: tokio::sync::Notify::new(),
            lease: (cfg.consistency == Consistency::Confirmed)
                .then(|| Arc::new(lease::Lease::new(&cfg.key_prefix, cfg.lease))),
            durability: wait::Durability::new(&cfg.redis),
        });
        if !replayed.is_empty() {
            tracing::info!(
                pending = replayed.len(),
                "redis outbox from a previous run: enforcing now, replaying once redis is reachable"
            );
            let mut ob = inner.outbox.lock().await;
            for cmd in &replayed {
                inner.apply_local(cmd);
            }
            ob.pending = replayed;
            inner.index_outbox(&ob.pending);
        }
        tracing::info!(endpoint = %inner.link.endpoint.display, prefix = %cfg.key_prefix, "redis store starting");
        let stop = shutdown.child_token();
        let own = thread::StoreThread::start(stop.clone())
            .map_err(|e| StoreError::Redis(format!("cannot start the store thread: {e}")))?;
        let mut tasks = vec![
            own.spawn(sync::run(inner.clone(), stop.clone())),
            tokio::spawn(sync::maintain(inner.clone(), stop.clone())),
        ];
        if let Some(l) = &inner.lease {
            tracing::info!(member = %l.member(), lease = ?cfg.lease, "confirmed consistency: fenced until the first lease renewal");
            tasks.push(own.spawn(lease::member(l.clone(), inner.clone(), stop.clone())));
            tasks.push(own.spawn(lease::waiter(l.clone(), inner.clone(), stop.clone())));
        }
        Ok(Arc::new(RedisStore {
            inner,
            stop,
            tasks: std::sync::Mutex::new(tasks),
        }))
    }

    /// How many loads (start-up or resync) installed the Redis snapshot
    /// rather than scanning.
    pub fn snapshot_loads(&self) -> u64 {
        self.inner.snapshot_loads.load(Ordering::Relaxed)
    }

    /// This instance's lease, in confirmed consistency.
    pub fn lease(&self) -> Option<&lease::Lease> {
        self.inner.lease.as_deref()
    }

    /// Confirmed answers currently cached (for metrics).
    pub fn confirmed_answers(&self) -> usize {
        self.inner.confirmed.len()
    }
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

// === impl Inner ===

impl Inner {
    /// The command's effect on this instance's cache; true when it changed
    /// anything there (always for tokens: the bloom filter cannot tell).
    fn apply_local(&self, cmd: &RevocationCommand) -> bool {
        match cmd {
            RevocationCommand::Token(rule) => {
                self.cache.insert_token(&rule.fingerprint);
                self.confirmed.invalidate(&rule.fingerprint);
                true
            }
            RevocationCommand::Scope(rule) => self.cache.upsert_scope(rule),
            RevocationCommand::Remove(RevocationTarget::Token(fp)) => {
                // A bloom filter cannot forget; the exact lookup will.
                self.confirmed.invalidate(fp);
                true
            }
            RevocationCommand::Remove(RevocationTarget::Scope(key)) => self.cache.remove_scope(key),
            // Bindings live in Redis only; what they derive arrives as
            // token events.
            RevocationCommand::Bind(_)
            | RevocationCommand::Remove(RevocationTarget::Binding(_))
            | RevocationCommand::Join(_) => true,
            // The members the rule revoked, as its script or event names them.
            RevocationCommand::Family(rule) => {
                for t in &rule.members {
                    self.cache.insert_token(&t.fingerprint);
                    self.confirmed.invalidate(&t.fingerprint);
                }
                true
            }
            RevocationCommand::FamilyOf(f) => {
                self.cache.insert_token(&f.token.fingerprint);
                self.confirmed.invalidate(&f.token.fingerprint);
                true
            }
        }
    }

    /// Rebuilds the exact index of the outbox's token rules.
    fn index_outbox(&self, pending: &[RevocationCommand]) {
        self.outbox_tokens.clear();
        for cmd in pending {
            self.index_outbox_one(cmd);
        }
        self.backlog.store(pending.len() as u64, Ordering::Release);
    }

    fn index_outbox_one(&self, cmd: &RevocationCommand) {
        match cmd {
            RevocationCommand::Token(rule) => {
                let mut e = self.outbox_tokens.entry(rule.fingerprint).or_insert(0);
                *e = (*e).max(rule.expires_at);
            }
            RevocationCommand::Remove(RevocationTarget::Token(fp)) => {
                self.outbox_tokens.remove(fp);
            }
            // Its token is revoked here at once; its family when replayed.
            RevocationCommand::FamilyOf(f) => {
                let mut e = self.outbox_tokens.entry(f.token.fingerprint).or_insert(0);
                *e = (*e).max(f.token.expires_at);
            }
            _ => {}
        }
    }

    /// Writes one command to Redis (rule + event, atomically); true when
    /// Redis changed.
    async fn write(
        &self,
        conn: &mut Conn,
        cmd: &RevocationCommand,
        now: u64,
    ) -> Result<bool, RedisError> {
        // An expiry past what `EXAT` takes would fail this write on every
        // outbox replay, and every write queued behind it with it.
        let clamped = cmd.clamped();
        let cmd = &clamped;
        let maxlen = self.cfg.stream_maxlen;
        let n: i64 = match cmd {
            RevocationCommand::Token(rule) => {
                let event = to_json(cmd)?;
                let mut inv = self.scripts.token.prepare_invoke();
                inv.key(self.keys.token(&rule.fingerprint))
                    .key(self.keys.stream())
                    .arg(rule.expires_at)
                    .arg(now)
                    .arg(maxlen)
                    .arg(event);
                inv.invoke_async(conn).await?
            }
            RevocationCommand::Scope(rule) => {
                let body = to_json(rule)?;
                let mut inv = self.scripts.scope.prepare_invoke();
                inv.key(self.keys.scope(&rule.key))
                    .key(self.keys.stream())
                    .key(self.keys.subject(&rule.key.sub))
                    .arg(body)
                    .arg(now)
                    .arg(maxlen)
                    .arg(self.keys.binding_prefix())
                    .arg(self.keys.derived_prefix());
                inv.invoke_async(conn).await?
            }
            RevocationCommand::Remove(RevocationTarget::Token(fp)) => {
                let event = to_json(cmd)?;
                let mut inv = self.scripts.remove.prepare_invoke();
                inv.key(self.keys.token(fp))
                    .key(self.keys.stream())
                    .arg(maxlen)
                    .arg(event);
                inv.invoke_async(conn).await?
            }
            RevocationCommand::Remove(RevocationTarget::Scope(key)) => {
                return self.write_unscope(conn, key, to_json(cmd)?).await;
            }
            RevocationCommand::Bind(b) => return self.write_bind(conn, b, now).await,
            RevocationCommand::Remove(RevocationTarget::Binding(fp)) => {
                return self.write_unbind(conn, fp).await;
            }
            RevocationCommand::Join(m) => return self.write_join(conn, m, now).await,
            // Resolved against the membership Redis holds now (an outbox
            // replay's), then written as what it is.
            RevocationCommand::FamilyOf(f) => {
                let m = self.read_member(conn, &f.token.fingerprint, now).await?;
                let resolved = f.resolve(m.as_ref());
                return Box::pin(self.write(conn, &resolved, now)).await;
            }
            RevocationCommand::Family(rule) => {
                return Ok(!self.write_family(conn, rule, now).await?.is_empty());
            }
        };
        Ok(n > 0)
    }

    /// Writes a bulk import's token rules in three steps, each one round
    /// trip: a pipeline of `SET <key> <exp> NX EXAT <exp>` per rule; for
    /// the keys whose `SET NX` found a rule already, the merge script
    /// (later expiry wins, as [`Inner::write`] merges); then the batch's
    /// ONE stream event naming every rule. Returns, per rule, whether Redis
    /// changed.
    ///
    /// The event comes last, after every write of the batch, the merge
    /// included: an instance that applies it and then looks a fingerprint
    /// up reads the rule as it stays. With the event inside a `MULTI` and
    /// the merge after it (the first version), an older rule that expired
    /// between the two was read as "not revoked" and that answer cached
    /// (no event after it to drop it) past the batch's acknowledgement
    /// (`tests/bulk.rs`, `an_import_batch_s_stream_event_follows_*`).
    ///
    /// No `MULTI`: it bought nothing here. A transaction does not roll
    /// back a command that fails when run (an `EXAT` out of range failed
    /// alone and the rest of the batch, event included, was applied), and
    /// it costs Redis a queued copy and a `QUEUED` reply per command (~9 %
    /// of its CPU per rule, `BENCHMARKS.md`). What atomicity gave, the
    /// order gives: Redis runs one connection's commands in order, so when
    /// the event exists every rule it names is written. If the batch fails
    /// part-way, it is not acknowledged; it goes whole to the outbox and
    /// is replayed (every write merges; the replay writes the event). Only
    /// a gateway killed between the writes and the event leaves rules in
    /// Redis that no event announced: never acknowledged (the importer
    /// retries, which writes the event), enforced by every lookup, and in
    /// every instance's filter from its next rebuild or load.
    ///
    /// Expiries past [`MAX_EXPIRES_AT`] are recorded as it (`EXAT`'s range).
    async fn write_token_batch(
        &self,
        conn: &mut Conn,
        rules: &[super::TokenRule],
        now: u64,
    ) -> Result<Vec<bool>, RedisError> {
        let mut changed = vec![false; rules.len()];
        // An expired rule is nothing to write (as in `TOKEN_LUA`); `SET`
        // with an `EXAT` in the past would delete the key.
        let live: Vec<(usize, super::TokenRule)> = rules
            .iter()
            .enumerate()
            .filter(|(_, r)| r.expires_at > now)
            .map(|(i, r)| {
                (
                    i,
                    super::TokenRule {
                        fingerprint: r.fingerprint,
                        expires_at: r.expires_at.min(MAX_EXPIRES_AT),
                    },
                )
            })
            .collect();
        if live.is_empty() {
            return Ok(changed);
        }
        // Sized up front: two allocations per command (its argument
        // table and bytes) instead of a dozen regrowths and a key string.
        let mut pipe = ::redis::Pipeline::with_capacity(live.len());
        let mut key = Vec::with_capacity(self.keys.token_len());
        for (_, r) in &live {
            self.keys.token_into(&r.fingerprint, &mut key);
            let mut set = ::redis::Cmd::with_capacity(6, key.len() + 2 * 20 + 9);
            set.arg("SET")
                .arg(&key[..])
                .arg(r.expires_at)
                .arg("NX")
                .arg("EXAT")
                .arg(r.expires_at);
            pipe.add_command(set);
        }
        let set: Vec<Value> = pipe.query_async(conn).await?;
        if set.len() != live.len() {
            return Err(RedisError::from((
                ErrorKind::Client,
                "unexpected reply",
                format!("{} answers to {} SETs", set.len(), live.len()),
            )));
        }
        let mut existing = Vec::new();
        for (&(i, r), v) in live.iter().zip(&set) {
            match v {
                Value::Nil => existing.push((i, r)),
                Value::Okay => changed[i] = true,
                Value::SimpleString(s) if s == "OK" => changed[i] = true,
                other => {
                    return Err(RedisError::from((
                        ErrorKind::Client,
                        "unexpected reply",
                        format!("SET NX answered {other:?}"),
                    )))
                }
            }
        }
        for chunk in existing.chunks(TOKEN_BATCH_MAX) {
            let mut inv = self.scripts.token_merge.prepare_invoke();
            for (_, r) in chunk {
                inv.key(self.keys.token(&r.fingerprint));
            }
            inv.arg(now);
            for (_, r) in chunk {
                inv.arg(r.expires_at);
            }
            let flags: Vec<i64> = inv.invoke_async(conn).await?;
            for ((i, _), f) in chunk.iter().zip(flags) {
                changed[*i] = f > 0;
            }
        }
        let mut blob = Vec::with_capacity(live.len() * keys::TOKEN_BATCH_RECORD);
        for (_, r) in &live {
            blob.extend_from_slice(r.fingerprint.as_bytes());
            blob.extend_from_slice(&r.expires_at.to_le_bytes());
        }
        let _: Value = ::redis::cmd("XADD")
            .arg(self.keys.stream())
            .arg("MAXLEN")
            .arg("~")
            .arg(self.cfg.stream_maxlen)
            .arg("*")
            .arg("tb")
            .arg(blob)
            .query_async(conn)
            .await?;
        Ok(changed)
    }

    /// Writes a batch to Redis: token rules in pipelines of at most
    /// [`TOKEN_BATCH_MAX`] (one event each), every other command as
    /// [`Inner::write`] does. Per command, whether Redis changed.
    async fn write_batch(
        &self,
        conn: &mut Conn,
        cmds: &[RevocationCommand],
        now: u64,
    ) -> Result<Vec<bool>, RedisError> {
        let mut changed = vec![false; cmds.len()];
        let mut run: Vec<(usize, super::TokenRule)> = Vec::new();
        for (i, cmd) in cmds.iter().enumerate() {
            match cmd {
                RevocationCommand::Token(rule) => run.push((i, *rule)),
                // This instance learns what the rule revoked from its
                // script, as in `apply` (the batch's own command names
                // no members).
                RevocationCommand::Family(rule) => {
                    let members = self.write_family(conn, &rule.clamped(), now).await?;
                    changed[i] = !members.is_empty();
                    self.apply_local(&family::expanded(rule, members));
                }
                other => changed[i] = self.write(conn, other, now).await?,
            }
        }
        for chunk in run.chunks(TOKEN_BATCH_MAX) {
            let rules: Vec<super::TokenRule> = chunk.iter().map(|(_, r)| *r).collect();
            let flags = self.write_token_batch(conn, &rules, now).await?;
            for ((i, _), f) in chunk.iter().zip(flags) {
                changed[*i] = f;
            }
        }
        Ok(changed)
    }

    /// Queues a batch in the outbox with one journal append (one fsync)
    /// and applies it locally.
    async fn append_outbox_batch(
        &self,
        cmds: Vec<RevocationCommand>,
    ) -> Result<Vec<Applied>, StoreError> {
        let out = {
            let mut ob = self.outbox.lock().await;
            ob.journal.append_batch(&cmds).await?;
            self.direct.store(false, Ordering::Release);
            let mut out = Vec::with_capacity(cmds.len());
            for cmd in &cmds {
                self.index_outbox_one(cmd);
                out.push(if self.apply_local(cmd) {
                    Applied::Changed
                } else {
                    Applied::Unchanged
                });
            }
            let n = cmds.len() as u64;
            ob.pending.extend(cmds);
            self.backlog
                .store(ob.pending.len() as u64, Ordering::Release);
            metrics::counter!("revgate_redis_outbox_appends_total").increment(n);
            out
        };
        self.link.wake.notify_one();
        Ok(out)
    }

    /// Records that the connection is unusable; logs on the change of state only.
    fn note_lost(&self, e: &RedisError) {
        if self.link.lost() {
            tracing::warn!(
                endpoint = %self.link.endpoint.display,
                error = %e,
                "redis connection lost: bloom hits fail closed, revocations go to the outbox"
            );
        }
    }

    /// Queues a command in the outbox (fsync'd) and applies it locally.
    async fn append_outbox(&self, cmd: RevocationCommand) -> Result<Applied, StoreError> {
        let changed = {
            let mut ob = self.outbox.lock().await;
            ob.journal.append(&cmd).await?;
            // Later writes queue behind this one until the outbox is replayed.
            self.direct.store(false, Ordering::Release);
            self.index_outbox_one(&cmd);
            ob.pending.push(cmd.clone());
            self.backlog
                .store(ob.pending.len() as u64, Ordering::Release);
            self.apply_local(&cmd)
        };
        self.link.wake.notify_one();
        metrics::counter!("revgate_redis_outbox_appends_total").increment(1);
        Ok(if changed {
            Applied::Changed
        } else {
            Applied::Unchanged
        })
    }

    /// The tail has applied every event up to `at`.
    fn note_applied(&self, at: keys::EventId) {
        if let Some(l) = &self.lease {
            l.applied(at);
        }
    }

    /// What a revocation written to Redis still needs before it is
    /// acknowledged: `WAIT`/`WAITAOF`, then, confirmed, every live instance.
    async fn settle(&self, conn: &mut Conn) -> Result<(), StoreError> {
        self.durability
            .wait(conn)
            .await
            .map_err(StoreError::Unconfirmed)?;
        if let Some(l) = &self.lease {
            l.confirm(self.cfg.confirm_timeout)
                .await
                .map_err(StoreError::Unconfirmed)?;
        }
        Ok(())
    }

    fn touch_sync(&self) {
        let ms = self.origin.elapsed().as_millis() as u64;
        self.last_sync_ms.store(ms, Ordering::Release);
    }

    fn staleness(&self) -> Duration {
        let now = self.origin.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_sync_ms.load(Ordering::Acquire)))
    }
}

/// Most token rules in one batch pipeline (one stream event): about
/// 240 KB of event and 900 KB of commands.
const TOKEN_BATCH_MAX: usize = 10_000;

/// JSON for a script argument (cannot fail for these types; mapped anyway).
fn to_json<T: serde::Serialize>(v: &T) -> Result<String, RedisError> {
    serde_json::to_string(v)
        .map_err(|e| RedisError::from((ErrorKind::Client, "serialize", e.to_string())))
}

#[async_trait::async_trait]
impl RevocationStore for RedisStore {
    async fn list_tokens(
        &self,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<super::TokenPage, super::ListError> {
        list::tokens(&self.inner, cursor, limit).await
    }

    async fn apply(&self, cmd: RevocationCommand) -> Result<Applied, StoreError> {
        let inner = &self.inner;
        if inner.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        let now = now_unix();
        if cmd.expires_at().is_some_and(|exp| exp <= now) {
            return Ok(Applied::Unchanged);
        }
        let mut cmd = cmd;
        if inner.direct.load(Ordering::Acquire) {
            if let Some(mut conn) = inner.link.writer() {
                if let RevocationCommand::FamilyOf(f) = &cmd {
                    match inner
                        .read_member(&mut conn, &f.token.fingerprint, now)
                        .await
                    {
                        Ok(m) => cmd = f.resolve(m.as_ref()),
                        Err(e) if is_fatal(&e) => inner.note_lost(&e),
                        Err(_) => {}
                    }
                }
                let written = match &cmd {
                    // This instance learns what the rule revoked from its
                    // script, as the others do from its event.
                    RevocationCommand::Family(rule) => inner
                        .write_family(&mut conn, rule, now)
                        .await
                        .map(|members| {
                            (!members.is_empty(), Some(family::expanded(rule, members)))
                        }),
                    _ => inner.write(&mut conn, &cmd, now).await.map(|c| (c, None)),
                };
                match written {
                    Ok((changed, expanded)) => {
                        inner.apply_local(expanded.as_ref().unwrap_or(&cmd));
                        inner.settle(&mut conn).await?;
                        return Ok(if changed {
                            Applied::Changed
                        } else {
                            Applied::Unchanged
                        });
                    }
                    Err(e) if is_fatal(&e) => inner.note_lost(&e),
                    Err(e) => {
                        tracing::warn!(error = %e, "redis refused a revocation; it goes to the outbox");
                    }
                }
            }
        }
        let queued = inner.append_outbox(cmd).await?;
        if inner.lease.is_some() {
            // Recorded (the outbox replays it), but no other instance can
            // have it yet.
            return Err(StoreError::Unconfirmed(
                "redis is unreachable: queued in the outbox".into(),
            ));
        }
        Ok(queued)
    }

    async fn export_bindings(
        &self,
        cursor: Option<&str>,
    ) -> Result<super::ExportPage, super::ListError> {
        list::bindings(&self.inner, cursor).await
    }

    async fn export_families(
        &self,
        cursor: Option<&str>,
    ) -> Result<super::ExportPage, super::ListError> {
        list::families(&self.inner, cursor).await
    }

    async fn apply_batch(&self, cmds: Vec<RevocationCommand>) -> Result<Vec<Applied>, StoreError> {
        let inner = &self.inner;
        if inner.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        let now = now_unix();
        let live: Vec<bool> = cmds
            .iter()
            .map(|c| c.expires_at().is_none_or(|exp| exp > now))
            .collect();
        let todo: Vec<RevocationCommand> = cmds
            .into_iter()
            .zip(&live)
            .filter(|(_, &l)| l)
            .map(|(c, _)| c)
            .collect();
        // Answers for the live commands, in order; the expired ones are
        // `Unchanged` without a write, as in `apply`.
        let spread = |answers: Vec<Applied>| {
            let mut answers = answers.into_iter();
            live.iter()
                .map(|&l| {
                    if l {
                        answers.next().unwrap_or(Applied::Unchanged)
                    } else {
                        Applied::Unchanged
                    }
                })
                .collect::<Vec<_>>()
        };
        if todo.is_empty() {
            return Ok(spread(Vec::new()));
        }
        if inner.direct.load(Ordering::Acquire) {
            if let Some(mut conn) = inner.link.writer() {
                match inner.write_batch(&mut conn, &todo, now).await {
                    Ok(changed) => {
                        for cmd in &todo {
                            inner.apply_local(cmd);
                        }
                        // WAIT / confirmation once for the whole batch.
                        inner.settle(&mut conn).await?;
                        return Ok(spread(
                            changed
                                .into_iter()
                                .map(|c| {
                                    if c {
                                        Applied::Changed
                                    } else {
                                        Applied::Unchanged
                                    }
                                })
                                .collect(),
                        ));
                    }
                    Err(e) if is_fatal(&e) => inner.note_lost(&e),
                    Err(e) => {
                        tracing::warn!(error = %e, "redis refused a batch of revocations; it goes to the outbox");
                    }
                }
            }
        }
        // Part of the batch may be in Redis already: the outbox replays
        // all of it, and every write merges, so nothing moves backwards.
        let queued = inner.append_outbox_batch(todo).await?;
        if inner.lease.is_some() {
            return Err(StoreError::Unconfirmed(
                "redis is unreachable: queued in the outbox".into(),
            ));
        }
        Ok(spread(queued))
    }

    async fn is_token_revoked(&self, fp: &Fingerprint) -> Result<bool, StoreError> {
        let inner = &self.inner;
        let now = now_unix();
        if inner.outbox_tokens.get(fp).is_some_and(|exp| *exp > now) {
            return Ok(true);
        }
        let answer = inner
            .confirmed
            .get_or_lookup(fp, || async {
                let Some(mut conn) = inner.link.conn() else {
                    return Err("redis is not connected".to_string());
                };
                // The explicit rule and the one a scope rule derived from a
                // binding (`principal`), in one round trip.
                let value: Result<[Option<String>; 2], RedisError> = ::redis::cmd("MGET")
                    .arg(inner.keys.token(fp))
                    .arg(inner.keys.derived(fp))
                    .query_async(&mut conn)
                    .await;
                match value {
                    // Unreadable value: the key exists, so revoked (fail closed).
                    Ok(values) => Ok(values
                        .iter()
                        .flatten()
                        .any(|v| v.parse::<u64>().map_or(true, |exp| exp > now))),
                    Err(e) => {
                        if is_fatal(&e) {
                            inner.note_lost(&e);
                        }
                        Err(e.to_string())
                    }
                }
            })
            .await;
        let outcome = match answer {
            Ok(true) => "revoked",
            Ok(false) => "not_revoked",
            Err(_) => "error",
        };
        metrics::counter!("revgate_redis_lookups_total", "outcome" => outcome).increment(1);
        answer.map_err(StoreError::Redis)
    }

    async fn member(&self, fp: &Fingerprint) -> Result<Option<Member>, StoreError> {
        let inner = &self.inner;
        let now = now_unix();
        // A membership still in the outbox is the latest word.
        {
            let ob = inner.outbox.lock().await;
            if let Some(m) = ob.pending.iter().rev().find_map(|cmd| match cmd {
                RevocationCommand::Join(m) if m.fingerprint == *fp => Some(*m),
                _ => None,
            }) {
                return Ok((m.expires_at > now).then_some(m));
            }
        }
        let Some(mut conn) = inner.link.conn() else {
            return Err(StoreError::Redis("redis is not connected".into()));
        };
        inner.read_member(&mut conn, fp, now).await.map_err(|e| {
            if is_fatal(&e) {
                inner.note_lost(&e);
            }
            StoreError::Redis(e.to_string())
        })
    }

    async fn binding(&self, fp: &Fingerprint) -> Result<Option<Binding>, StoreError> {
        let inner = &self.inner;
        let now = now_unix();
        // A binding or unbinding still in the outbox is the latest word.
        {
            let ob = inner.outbox.lock().await;
            for cmd in ob.pending.iter().rev() {
                match cmd {
                    RevocationCommand::Bind(b) if b.fingerprint == *fp => {
                        return Ok((b.expires_at > now).then(|| b.clone()));
                    }
                    RevocationCommand::Remove(RevocationTarget::Binding(f)) if f == fp => {
                        return Ok(None);
                    }
                    _ => {}
                }
            }
        }
        let Some(mut conn) = inner.link.conn() else {
            return Err(StoreError::Redis("redis is not connected".into()));
        };
        inner.read_binding(&mut conn, fp, now).await.map_err(|e| {
            if is_fatal(&e) {
                inner.note_lost(&e);
            }
            StoreError::Redis(e.to_string())
        })
    }

    fn cache(&self) -> &LocalCache {
        &self.inner.cache
    }

    fn check_mode(&self) -> CheckMode {
        let inner = &self.inner;
        if inner.lease.as_ref().is_some_and(|l| l.fenced()) {
            return CheckMode::Fenced;
        }
        if !inner.ready.load(Ordering::Acquire) {
            // The start-up load is not done: the filter may not hold every
            // revoked fingerprint yet. Ask Redis about every credential while
            // it can answer; refuse while it cannot (fail closed).
            return if inner.link.is_connected() {
                CheckMode::AlwaysLookup
            } else {
                CheckMode::Reject
            };
        }
        match inner.cfg.max_staleness {
            Some(max) if inner.staleness() > max => match inner.cfg.stale_action {
                StaleAction::Reject => CheckMode::Reject,
                StaleAction::Lookup => CheckMode::AlwaysLookup,
            },
            _ => CheckMode::Local,
        }
    }

    fn status(&self) -> StoreStatus {
        let inner = &self.inner;
        StoreStatus {
            // Fenced (confirmed mode) is not ready either: a load balancer
            // sends the traffic to the instances that can judge it.
            ready: inner.ready.load(Ordering::Acquire)
                && !inner.lease.as_ref().is_some_and(|l| l.fenced()),
            connected: inner.link.is_connected(),
            staleness: Some(inner.staleness()),
            journal_backlog: inner.backlog.load(Ordering::Acquire),
            token_rules: inner.token_rules.load(Ordering::Relaxed),
            scope_rules: inner.cache.scope_rule_count() as u64,
            bindings: 0,
        }
    }

    async fn flush(&self) -> Result<(), StoreError> {
        let inner = &self.inner;
        inner.closed.store(true, Ordering::Release);
        if let Some(l) = &inner.lease {
            l.leave(&inner.link).await;
        }
        self.stop.cancel();
        let tasks: Vec<_> =
            std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for t in tasks {
            // The tasks stop at their next await; a rebuild's SCAN page is the longest.
            if tokio::time::timeout(Duration::from_secs(5), t)
                .await
                .is_err()
            {
                tracing::warn!("redis store task did not stop in time");
            }
        }
        // Every outbox append was fsync'd before it was acknowledged; closing
        // waits for anything still queued.
        let ob = inner.outbox.lock().await;
        let backlog = ob.pending.len();
        ob.journal.close();
        if backlog > 0 {
            tracing::warn!(
                backlog,
                path = %ob.journal.path().display(),
                "redis store closed with revocations still in the outbox; the next start replays them"
            );
        }
        Ok(())
    }
}
