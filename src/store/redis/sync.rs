//! The background work of a [`RedisStore`](super::RedisStore): keeping the
//! connection, replaying the outbox, the start-up load, tailing the stream,
//! resyncing when the stream no longer reaches back far enough, and the
//! periodic bloom rebuild.
//!
//! One task ([`run`]) owns the order of things on each (re)connect:
//!
//! ```text
//! connect (Sentinel: ask for the master) ─► replay outbox ─► first time: load
//!   │                                                        later: trimmed past us? ─► load
//!   └◄── error: drop connections, back off (100 ms .. 5 s) ◄── tail: XREAD BLOCK from last id
//! ```
//!
//! A load notes the stream's last id *before* scanning, so an event written
//! during the scan is applied afterwards (applying twice is harmless: every
//! event is idempotent on the cache).
//! The bloom filter being built receives every insert made during the scan
//! ([`LocalCache::begin_rebuild`](crate::store::LocalCache::begin_rebuild)),
//! and the outbox's rules (not in Redis yet) before the scan begins
//! (see `reapply_outbox`).
//!
//! A load first tries the bloom snapshot (`snapshot.rs`): when the stream
//! still holds every event after the snapshot's id (the same check as a
//! resume, [`needs_resync`]), its filter and scope rules are installed;
//! else (absent, corrupt, too old) it scans as above. Every successful scan
//! (a load's or a maintenance rebuild's) writes a new snapshot, its id
//! noted before the scan began.
//!
//! Either way a load ends by *catching up*: every event the stream holds
//! after the load's id is applied (non-blocking `XREAD` pages; for a
//! snapshot, before its filter is swapped in) and tailing starts from the
//! last one. Only then is the instance ready. Without it, an instance
//! loaded from a snapshot said ready while missing everything revoked
//! since that snapshot, and passed those tokens until its tail caught up
//! (found by the chaos test's reasoning; `tests/redis_store.rs`
//! `an_instance_loaded_from_the_snapshot_is_ready_only_with_what_came_after_it`).
//!
//! Live sessions ([`crate::store::live`]) learn a load's rules as every
//! other rule: a scan's fingerprints and every scope rule pass through the
//! cache. A snapshot's bits carry no fingerprints, so after installing one
//! the open sessions whose credential the new filter may hold are looked up
//! exactly ([`recheck_live`]) and closed when revoked.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use ::redis::aio::MultiplexedConnection;
use ::redis::streams::StreamReadReply;
use ::redis::{RedisError, Value};
use tokio_util::sync::CancellationToken;

use super::keys::{EventId, KeyKind};
use super::link::{is_fatal, tail_block};
use super::{snapshot, Inner};
use crate::store::cache::AtomicBloom;
use crate::store::live::Rule;
use crate::store::{now_unix, RevocationCommand, RevocationTarget, ScopeRule};

/// Keys asked for per `SCAN` page.
const SCAN_COUNT: usize = 10_000;
/// Scope values fetched per `MGET`.
const MGET_BATCH: usize = 512;
/// Events read per `XREAD`.
const XREAD_COUNT: usize = 1_000;
/// Reconnect backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Why a session with Redis ended.
enum Ended {
    /// Shutdown.
    Stopped,
    /// Redis failed; reconnect.
    Failed(RedisError),
    /// A request found the command connection unusable; reconnect.
    Lost,
}

impl From<RedisError> for Ended {
    fn from(e: RedisError) -> Self {
        Ended::Failed(e)
    }
}

/// Keeps this instance in sync with Redis until `stop`.
pub(super) async fn run(inner: Arc<Inner>, stop: CancellationToken) {
    let mut backoff = BACKOFF_MIN;
    // The stream position this instance has applied up to; None until the
    // start-up load is done.
    let mut pos: Option<EventId> = None;
    // Whether "unreachable" has been logged for the current outage.
    let mut told_down = false;
    loop {
        if stop.is_cancelled() {
            return;
        }
        let connected = tokio::select! {
            _ = stop.cancelled() => return,
            c = inner.link.connect() => c,
        };
        let ended = match connected {
            Ok((cmd, tail)) => {
                metrics::counter!("revgate_redis_connects_total").increment(1);
                if inner.link.set_connected(cmd.clone()) || told_down {
                    tracing::info!(endpoint = %inner.link.endpoint.display, "redis connected");
                }
                told_down = false;
                backoff = BACKOFF_MIN;
                session(&inner, &stop, cmd, tail, &mut pos).await
            }
            Err(e) => Ended::Failed(e),
        };
        match ended {
            Ended::Stopped => return,
            Ended::Failed(e) => {
                let was_up = inner.link.lost();
                if was_up || !told_down {
                    tracing::warn!(
                        endpoint = %inner.link.endpoint.display,
                        error = %e,
                        "redis unreachable: bloom hits fail closed, revocations go to the outbox; reconnecting"
                    );
                    told_down = true;
                } else {
                    tracing::debug!(error = %e, "redis reconnect failed");
                }
            }
            Ended::Lost => {
                // note_lost() has logged it already.
                inner.link.lost();
                told_down = true;
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// One connected period: replay, load or resume, tail.
async fn session(
    inner: &Inner,
    stop: &CancellationToken,
    mut cmd: MultiplexedConnection,
    mut tail: MultiplexedConnection,
    pos: &mut Option<EventId>,
) -> Ended {
    match session_inner(inner, stop, &mut cmd, &mut tail, pos).await {
        Ok(()) => Ended::Stopped,
        Err(e) => e,
    }
}

async fn session_inner(
    inner: &Inner,
    stop: &CancellationToken,
    cmd: &mut MultiplexedConnection,
    tail: &mut MultiplexedConnection,
    pos: &mut Option<EventId>,
) -> Result<(), Ended> {
    replay_outbox(inner, cmd).await?;
    let mut at = match *pos {
        None => {
            let at = full_load(inner, cmd).await?;
            inner.ready.store(true, Ordering::Release);
            at
        }
        Some(p) => {
            if needs_resync(inner, cmd, p).await? {
                full_load(inner, cmd).await?
            } else {
                p
            }
        }
    };
    *pos = Some(at);
    inner.touch_sync();
    loop {
        if !inner.link.is_connected() {
            return Err(Ended::Lost);
        }
        if inner.backlog.load(Ordering::Acquire) > 0 {
            replay_outbox(inner, cmd).await?;
        }
        let read = tokio::select! {
            // Biased: a pending wake-up is taken before an XREAD is even sent.
            biased;
            _ = stop.cancelled() => return Ok(()),
            // Woken: a request lost the connection, or the outbox has work.
            // Dropping the XREAD is safe: `at` only moves on what was applied.
            _ = inner.link.wake.notified() => continue,
            r = xread(inner, tail, at) => r?,
        };
        inner.touch_sync();
        let Some(reply) = read else { continue };
        let mut n = 0;
        for key in reply.keys {
            for entry in key.ids {
                n += 1;
                apply_event(inner, &entry.map);
                match EventId::parse(&entry.id) {
                    Some(id) => at = id,
                    None => tracing::warn!(id = %entry.id, "unreadable stream id"),
                }
            }
        }
        *pos = Some(at);
        // A full page: this instance is behind; make sure it is not behind
        // the trimming too.
        if n >= XREAD_COUNT && needs_resync(inner, cmd, at).await? {
            at = full_load(inner, cmd).await?;
            *pos = Some(at);
        }
    }
}

async fn xread(
    inner: &Inner,
    tail: &mut MultiplexedConnection,
    at: EventId,
) -> Result<Option<StreamReadReply>, RedisError> {
    ::redis::cmd("XREAD")
        .arg("COUNT")
        .arg(XREAD_COUNT)
        .arg("BLOCK")
        .arg(tail_block(inner.cfg.max_staleness).as_millis() as u64)
        .arg("STREAMS")
        .arg(inner.keys.stream())
        .arg(at.to_string())
        .query_async(tail)
        .await
}

/// Applies one stream event to the local cache.
fn apply_event(inner: &Inner, fields: &std::collections::HashMap<String, Value>) {
    if let Some(cmd) = decode_event(fields) {
        apply_command(inner, &cmd);
    }
}

/// The command an event carries (`None`, logged, when unreadable).
fn decode_event(fields: &std::collections::HashMap<String, Value>) -> Option<RevocationCommand> {
    let cmd = match fields.get("c") {
        Some(Value::BulkString(b)) => serde_json::from_slice::<RevocationCommand>(b).ok(),
        Some(Value::SimpleString(s)) => serde_json::from_str::<RevocationCommand>(s).ok(),
        _ => None,
    };
    if cmd.is_none() {
        tracing::warn!("unreadable revocation event in the stream; skipped");
    }
    cmd
}

/// Applies one event's command to the local cache.
fn apply_command(inner: &Inner, cmd: &RevocationCommand) {
    match cmd {
        RevocationCommand::Token(rule) if rule.expires_at <= now_unix() => return,
        RevocationCommand::Token(_) => {
            inner.token_rules.fetch_add(1, Ordering::Relaxed);
        }
        RevocationCommand::Remove(RevocationTarget::Token(_)) => {
            let _ = inner
                .token_rules
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    Some(n.saturating_sub(1))
                });
        }
        _ => {}
    }
    metrics::counter!("revgate_redis_events_total").increment(1);
    inner.apply_local(cmd);
}

/// Applies every event the stream holds after `at` right now (`XREAD`
/// without `BLOCK`, page by page) and returns the id of the last one.
///
/// A load ends with this: the snapshot is as old as its last writer's
/// scan, and a scan misses what is written while it runs, so without it
/// an instance would be ready (and pass bloom misses) before it knew
/// revocations made before it started, until its tail caught up. Scope
/// events go to `defer_scopes` when given (the caller is about to replace
/// the scope rules and applies them after); tokens are applied at once
/// (during an install they reach both filters).
async fn catch_up(
    inner: &Inner,
    cmd: &mut MultiplexedConnection,
    mut at: EventId,
    mut defer_scopes: Option<&mut Vec<RevocationCommand>>,
) -> Result<EventId, RedisError> {
    loop {
        let reply: Option<StreamReadReply> = ::redis::cmd("XREAD")
            .arg("COUNT")
            .arg(XREAD_COUNT)
            .arg("STREAMS")
            .arg(inner.keys.stream())
            .arg(at.to_string())
            .query_async(cmd)
            .await?;
        let Some(reply) = reply else { return Ok(at) };
        let mut n = 0;
        for key in reply.keys {
            for entry in key.ids {
                n += 1;
                if let Some(c) = decode_event(&entry.map) {
                    let scope = matches!(
                        c,
                        RevocationCommand::Scope(_)
                            | RevocationCommand::Remove(RevocationTarget::Scope(_))
                    );
                    match defer_scopes.as_deref_mut() {
                        Some(later) if scope => later.push(c),
                        _ => apply_command(inner, &c),
                    }
                }
                match EventId::parse(&entry.id) {
                    Some(id) => at = id,
                    None => tracing::warn!(id = %entry.id, "unreadable stream id"),
                }
            }
        }
        if n < XREAD_COUNT {
            return Ok(at);
        }
        if needs_resync(inner, cmd, at).await? {
            // Trimmed past while reading: load again from the start.
            return Err(RedisError::from((
                ::redis::ErrorKind::Client,
                "the revocation stream was trimmed past this instance during its load",
            )));
        }
    }
}

/// Writes the outbox to Redis in order, then empties it. On failure, what
/// was written is dropped from the outbox and the rest stays.
async fn replay_outbox(inner: &Inner, cmd: &mut MultiplexedConnection) -> Result<(), RedisError> {
    let mut ob = inner.outbox.lock().await;
    if ob.pending.is_empty() {
        inner.direct.store(true, Ordering::Release);
        return Ok(());
    }
    let total = ob.pending.len();
    let now = now_unix();
    let mut done = 0;
    let mut failed = None;
    for c in &ob.pending {
        match inner.write(cmd, c, now).await {
            Ok(_) => done += 1,
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    if done > 0 {
        let rest: Vec<RevocationCommand> = ob.pending.split_off(done);
        ob.pending = rest;
        // Already in Redis: replaying them again after a crash here would be
        // harmless (the scripts merge), so a failed rewrite only costs that.
        if let Err(e) = ob.journal.rewrite(ob.pending.clone()).await {
            tracing::error!(error = %e, "could not rewrite the redis outbox after replay");
        }
        inner.index_outbox(&ob.pending);
    }
    if let Some(e) = failed {
        tracing::warn!(replayed = done, left = total - done, error = %e, "redis outbox replay interrupted");
        return Err(e);
    }
    metrics::counter!("revgate_redis_outbox_replayed_total").increment(total as u64);
    tracing::info!(replayed = total, "redis outbox replayed");
    inner.direct.store(true, Ordering::Release);
    Ok(())
}

/// Whether the stream no longer holds every event after `pos`: trimmed past
/// it (its oldest entry is newer than `pos`), gone, or moved backwards (fail-over that lost writes, restart without
/// persistence).
async fn needs_resync(
    inner: &Inner,
    cmd: &mut MultiplexedConnection,
    pos: EventId,
) -> Result<bool, RedisError> {
    let info: Result<Value, RedisError> = ::redis::cmd("XINFO")
        .arg("STREAM")
        .arg(inner.keys.stream())
        .query_async(cmd)
        .await;
    let info = match info {
        Ok(v) => v,
        Err(e) if !is_fatal(&e) && e.to_string().contains("no such key") => {
            if pos > EventId::ZERO {
                tracing::warn!("the revocation stream is gone from redis; resyncing fully");
                return Ok(true);
            }
            return Ok(false);
        }
        Err(e) => return Err(e),
    };
    let last = field(&info, "last-generated-id").and_then(value_id);
    if last.is_some_and(|l| l < pos) {
        tracing::warn!(
            at = %pos,
            "the revocation stream went backwards (fail-over lost writes, or redis restarted empty); resyncing fully"
        );
        return Ok(true);
    }
    // Trimming leaves no record of what it dropped (`max-deleted-entry-id`
    // only counts XDEL), so: the oldest entry is newer than our position, or
    // the stream is empty yet has had entries past it. A spurious resync
    // (our own entry was the last one trimmed) costs a scan, nothing more.
    let first = match field(&info, "first-entry") {
        Some(Value::Array(entry)) => entry.first().and_then(value_id),
        _ => None,
    };
    let trimmed = match first {
        Some(first) => first > pos,
        None => last.is_some_and(|l| l > pos),
    };
    if trimmed {
        tracing::info!(at = %pos, "the revocation stream was trimmed past this instance; resyncing fully");
    }
    Ok(trimmed)
}

/// A field of an `XINFO` reply (RESP2 flat array or RESP3 map).
fn field<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    let is = |k: &Value| match k {
        Value::BulkString(b) => b == name.as_bytes(),
        Value::SimpleString(s) => s == name,
        _ => false,
    };
    match v {
        Value::Array(items) => items.chunks_exact(2).find(|kv| is(&kv[0])).map(|kv| &kv[1]),
        Value::Map(pairs) => pairs.iter().find(|(k, _)| is(k)).map(|(_, v)| v),
        _ => None,
    }
}

fn value_id(v: &Value) -> Option<EventId> {
    match v {
        Value::BulkString(b) => std::str::from_utf8(b).ok().and_then(EventId::parse),
        Value::SimpleString(s) => EventId::parse(s),
        _ => None,
    }
}

/// The id of the stream's newest entry, or `0-0`.
async fn last_event_id(
    inner: &Inner,
    cmd: &mut MultiplexedConnection,
) -> Result<EventId, RedisError> {
    let v: Value = ::redis::cmd("XREVRANGE")
        .arg(inner.keys.stream())
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(cmd)
        .await?;
    Ok(match v {
        Value::Array(entries) => entries
            .first()
            .and_then(|e| match e {
                Value::Array(parts) => parts.first().and_then(value_id),
                _ => None,
            })
            .unwrap_or(EventId::ZERO),
        _ => EventId::ZERO,
    })
}

/// What a scan found.
struct Scanned {
    tokens: u64,
    scopes: Vec<ScopeRule>,
}

/// Scans every key of the deployment: token fingerprints go into `rebuild`,
/// scope rules are fetched (`MGET`) when `with_scopes`.
async fn scan(
    inner: &Inner,
    cmd: &mut MultiplexedConnection,
    rebuild: &crate::store::cache::BloomRebuild,
    with_scopes: bool,
) -> Result<Scanned, RedisError> {
    let mut out = Scanned {
        tokens: 0,
        scopes: Vec::new(),
    };
    let mut scope_keys: Vec<Vec<u8>> = Vec::new();
    let pattern = inner.keys.scan_pattern().to_string();
    // The next page is always in flight while this one is processed: Redis
    // scans while this side parses and fills the filter.
    let page = |conn: MultiplexedConnection, cursor: u64| {
        let pattern = pattern.clone();
        tokio::spawn(async move {
            let mut conn = conn;
            ::redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(SCAN_COUNT)
                .query_async::<(u64, Vec<Vec<u8>>)>(&mut conn)
                .await
        })
    };
    let mut in_flight = Some(page(cmd.clone(), 0));
    while let Some(task) = in_flight.take() {
        let (next, keys) = task
            .await
            .map_err(|e| RedisError::from(std::io::Error::other(format!("scan task: {e}"))))??;
        if next != 0 {
            in_flight = Some(page(cmd.clone(), next));
        }
        for k in keys {
            match inner.keys.classify(&k) {
                KeyKind::Token(fp) => {
                    rebuild.insert(&fp);
                    out.tokens += 1;
                }
                KeyKind::Scope if with_scopes => scope_keys.push(k),
                _ => {}
            }
        }
        if scope_keys.len() >= MGET_BATCH {
            fetch_scopes(cmd, &mut scope_keys, &mut out.scopes).await?;
        }
    }
    if !scope_keys.is_empty() {
        fetch_scopes(cmd, &mut scope_keys, &mut out.scopes).await?;
    }
    Ok(out)
}

async fn fetch_scopes(
    cmd: &mut MultiplexedConnection,
    keys: &mut Vec<Vec<u8>>,
    into: &mut Vec<ScopeRule>,
) -> Result<(), RedisError> {
    let values: Vec<Option<Vec<u8>>> = ::redis::cmd("MGET").arg(&keys[..]).query_async(cmd).await?;
    keys.clear();
    let now = now_unix();
    for v in values.into_iter().flatten() {
        match serde_json::from_slice::<ScopeRule>(&v) {
            Ok(rule) if rule.expires_at > now => into.push(rule),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "unreadable scope rule in redis; skipped"),
        }
    }
    Ok(())
}

/// The start-up load (and full resync): returns the stream id to tail from.
/// From the snapshot when there is a usable one, else by `SCAN` (which then
/// writes a new snapshot).
async fn full_load(inner: &Inner, cmd: &mut MultiplexedConnection) -> Result<EventId, RedisError> {
    let _one = inner.rebuild_gate.lock().await;
    metrics::counter!("revgate_redis_resyncs_total").increment(1);
    let started = std::time::Instant::now();
    match load_snapshot(inner, cmd, started).await {
        Ok(Some(at)) => return Ok(at),
        Ok(None) => {}
        Err(e) if is_fatal(&e) => return Err(e),
        Err(e) => {
            tracing::warn!(error = %e, "could not read the redis snapshot; loading with SCAN")
        }
    }
    let at = last_event_id(inner, cmd).await?;
    // Size the filter for what is there before filling it: at start-up the
    // count of known rules is 0, and a filter sized only by
    // `store.bloom_capacity` would be over-full with more rules than that
    // (most requests would then look revoked and go to Redis until a
    // right-sized rebuild). DBSIZE counts every key of the database: an
    // upper bound, and O(1).
    let keys_in_db: u64 = ::redis::cmd("DBSIZE").query_async(cmd).await.unwrap_or(0);
    let estimate = (inner.token_rules.load(Ordering::Relaxed)).max(keys_in_db) as usize;
    let rebuild = inner.cache.begin_rebuild(estimate);
    let sized_for = rebuild.capacity();
    reapply_outbox(inner).await;
    let scanned = match scan(inner, cmd, &rebuild, true).await {
        Ok(s) => s,
        Err(e) => {
            inner.cache.abandon_rebuild(rebuild);
            return Err(e);
        }
    };
    inner.cache.finish_rebuild(rebuild);
    save_snapshot(inner, cmd, at, scanned.tokens, scanned.scopes.clone());
    inner.token_rules.store(scanned.tokens, Ordering::Relaxed);
    let scanned_from = at;
    let mut later_scopes = Vec::new();
    let at = catch_up(inner, cmd, at, Some(&mut later_scopes)).await?;
    install_scopes(inner, scanned.scopes, &later_scopes).await;
    inner.confirmed.clear();
    if scanned.tokens as usize > sized_for {
        // Complete (no false negatives) but over-full: a high false-positive
        // rate sends many requests to Redis. A right-sized generation is
        // built in the background, while tailing goes on.
        tracing::info!(
            token_rules = scanned.tokens,
            sized_for,
            "bloom filter undersized (raise store.bloom_capacity); rebuilding it now"
        );
        inner.rebuild_now.notify_one();
    }
    tracing::info!(
        token_rules = scanned.tokens,
        scope_rules = inner.cache.scope_rule_count(),
        from = %scanned_from,
        caught_up_to = %at,
        source = "scan",
        took_ms = started.elapsed().as_millis() as u64,
        "revocations loaded from redis"
    );
    Ok(at)
}

/// Installs the snapshot, if there is one the stream still reaches back
/// to: `Some(id to tail from)`; `None` when there is none or it is unusable
/// (the caller scans instead).
///
/// The header is read first (`GETRANGE`) so the new filter, shaped like the
/// snapshot's, can receive inserts (through [`LocalCache::begin_install`])
/// before the bits arrive: nothing inserted during the `GET` is lost.
///
/// [`LocalCache::begin_install`]: crate::store::LocalCache::begin_install
async fn load_snapshot(
    inner: &Inner,
    cmd: &mut MultiplexedConnection,
    started: std::time::Instant,
) -> Result<Option<EventId>, RedisError> {
    let key = inner.keys.snapshot();
    let (head, len): (Vec<u8>, u64) = ::redis::pipe()
        .cmd("GETRANGE")
        .arg(key)
        .arg(0)
        .arg(snapshot::HEADER_LEN - 1)
        .cmd("STRLEN")
        .arg(key)
        .query_async(cmd)
        .await?;
    if head.is_empty() {
        return Ok(None);
    }
    // The length must match the header's before anything is allocated for it.
    let header = snapshot::Header::parse(&head).filter(|h| h.total_len() == len);
    let Some(h) = header else {
        tracing::warn!(
            "the redis snapshot is unreadable (corrupt or another version); loading with SCAN"
        );
        return Ok(None);
    };
    if needs_resync(inner, cmd, h.at).await? {
        tracing::info!(snapshot_at = %h.at, "the redis snapshot is older than the stream reaches back; loading with SCAN");
        return Ok(None);
    }
    let shell = AtomicBloom::with_shape(h.bits, h.hashes, h.capacity as usize);
    let Some(shell) = shell else {
        return Ok(None);
    };
    let install = inner.cache.begin_install(shell);
    reapply_outbox(inner).await;
    let blob: Option<Vec<u8>> = match ::redis::cmd("GET").arg(key).query_async(cmd).await {
        Ok(b) => b,
        Err(e) => {
            inner.cache.abandon_rebuild(install);
            return Err(e);
        }
    };
    let snap = blob
        .as_deref()
        .and_then(snapshot::decode)
        .filter(|s| s.header == h);
    let Some(snap) = snap.filter(|s| install.merge_words_le(s.words_le)) else {
        inner.cache.abandon_rebuild(install);
        tracing::warn!(
            "the redis snapshot is corrupt, or was replaced while read; loading with SCAN"
        );
        return Ok(None);
    };
    // What came after the snapshot, before the filter is swapped in (see
    // `catch_up`): its tokens reach the new filter too.
    inner.token_rules.store(h.token_rules, Ordering::Relaxed);
    let mut later_scopes = Vec::new();
    let at = match catch_up(inner, cmd, h.at, Some(&mut later_scopes)).await {
        Ok(at) => at,
        Err(e) => {
            inner.cache.abandon_rebuild(install);
            return Err(e);
        }
    };
    inner.cache.finish_rebuild(install);
    let now = now_unix();
    let scopes = snap.scopes.into_iter().filter(|r| r.expires_at > now);
    install_scopes(inner, scopes, &later_scopes).await;
    inner.confirmed.clear();
    inner.snapshot_loads.fetch_add(1, Ordering::Relaxed);
    metrics::counter!("revgate_redis_snapshot_loads_total").increment(1);
    recheck_live(inner, cmd).await;
    if h.token_rules > h.capacity {
        // Sized by whoever wrote it, for fewer rules: complete but over-full.
        inner.rebuild_now.notify_one();
    }
    tracing::info!(
        token_rules = h.token_rules,
        scope_rules = inner.cache.scope_rule_count(),
        from = %h.at,
        caught_up_to = %at,
        source = "snapshot",
        took_ms = started.elapsed().as_millis() as u64,
        "revocations loaded from redis"
    );
    Ok(Some(at))
}

/// Closes the live sessions whose credential a freshly installed snapshot
/// revoked: a bloom hit is looked up exactly (`GET`); one that cannot be
/// answered closes the session (fail closed, as the verdict would).
async fn recheck_live(inner: &Inner, cmd: &mut MultiplexedConnection) {
    let live = inner.cache.live();
    let now = now_unix();
    for fp in live.fingerprints() {
        if !inner.cache.may_contain(&fp) {
            continue;
        }
        let value: Result<Option<String>, RedisError> = ::redis::cmd("GET")
            .arg(inner.keys.token(&fp))
            .query_async(cmd)
            .await;
        let revoked = match value {
            Ok(None) => false,
            Ok(Some(v)) => v.parse::<u64>().map_or(true, |exp| exp > now),
            Err(_) => true,
        };
        if revoked {
            live.revoked(Rule::Token(&fp));
        }
    }
}

/// Writes the snapshot of a finished scan that began after stream id `at`
/// (the current filter, which holds at least what the scan found), in the
/// background: one `SET`, last writer wins. A scan that found nothing
/// deletes it instead (an empty snapshot saves no time; an older one would
/// only carry stale bits).
fn save_snapshot(
    inner: &Inner,
    cmd: &MultiplexedConnection,
    at: EventId,
    token_rules: u64,
    scopes: Vec<ScopeRule>,
) {
    let key = inner.keys.snapshot().to_string();
    let bloom = inner.cache.bloom();
    let mut conn = cmd.clone();
    tokio::spawn(async move {
        let r: Result<(), RedisError> = if token_rules == 0 && scopes.is_empty() {
            ::redis::cmd("DEL").arg(&key).query_async(&mut conn).await
        } else {
            let value = snapshot::encode(at, &bloom, token_rules, &scopes);
            let bytes = value.len();
            let r = ::redis::cmd("SET")
                .arg(&key)
                .arg(value)
                .query_async(&mut conn)
                .await;
            if r.is_ok() {
                metrics::counter!("revgate_redis_snapshot_writes_total").increment(1);
                tracing::debug!(at = %at, bytes, token_rules, "redis snapshot written");
            }
            r
        };
        if let Err(e) = r {
            tracing::warn!(error = %e, "could not write the redis snapshot");
        }
    });
}

/// The outbox's rules are not in Redis yet: a rebuild from Redis must not
/// drop them from the cache. Called right after a rebuild (or install)
/// begins, before its scan: what is in the outbox then reaches the new
/// filter, and what leaves the outbox later (replayed) was written to
/// Redis before the scan began, since the replay holds the outbox lock
/// while it writes. Applied only after the swap, as it once was, a replay
/// that emptied the outbox during the scan left those tokens out of the
/// filter until the tail brought their events back (found by
/// `tests/chaos.rs`; `tests/redis_store.rs`
/// `an_outbox_replayed_during_a_bloom_rebuild_stays_enforced_throughout`).
async fn reapply_outbox(inner: &Inner) {
    let ob = inner.outbox.lock().await;
    for c in &ob.pending {
        inner.apply_local(c);
    }
}

/// Replaces the scope rules with a load's, then applies the scope events
/// read after it and the outbox's rules, all under the outbox lock with no
/// await in between, so no rule is missing for a moment.
async fn install_scopes(
    inner: &Inner,
    scopes: impl IntoIterator<Item = ScopeRule>,
    later: &[RevocationCommand],
) {
    let ob = inner.outbox.lock().await;
    inner.cache.replace_scopes(scopes);
    for c in later {
        apply_command(inner, c);
    }
    for c in &ob.pending {
        inner.apply_local(c);
    }
}

/// Rebuilds the bloom filter from Redis every `store.maintenance_interval`
/// (shedding expired fingerprints), and drops expired scope rules and
/// confirmed answers.
pub(super) async fn maintain(inner: Arc<Inner>, stop: CancellationToken) {
    let every = inner.cfg.maintenance_interval;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
            _ = inner.rebuild_now.notified() => {}
        }
        inner.cache.expire_scopes(now_unix());
        inner.confirmed.sweep();
        if !inner.ready.load(Ordering::Acquire) {
            continue;
        }
        let Some(mut cmd) = inner.link.conn() else {
            continue;
        };
        let r = tokio::select! {
            _ = stop.cancelled() => return,
            r = rebuild_bloom(&inner, &mut cmd) => r,
        };
        match r {
            Ok(tokens) => tracing::debug!(token_rules = tokens, "bloom filter rebuilt from redis"),
            Err(e) if is_fatal(&e) => inner.note_lost(&e),
            Err(e) => {
                tracing::warn!(error = %e, "bloom rebuild from redis failed; keeping the current filter")
            }
        }
    }
}

async fn rebuild_bloom(inner: &Inner, cmd: &mut MultiplexedConnection) -> Result<u64, RedisError> {
    let _one = inner.rebuild_gate.lock().await;
    // Noted before the scan, for the snapshot (as in `full_load`).
    let at = last_event_id(inner, cmd).await?;
    let estimate = inner.token_rules.load(Ordering::Relaxed) as usize;
    let rebuild = inner.cache.begin_rebuild(estimate);
    reapply_outbox(inner).await;
    // Scope rules too (they are few): the snapshot carries them.
    match scan(inner, cmd, &rebuild, true).await {
        Ok(s) => {
            inner.cache.finish_rebuild(rebuild);
            save_snapshot(inner, cmd, at, s.tokens, s.scopes);
            inner.token_rules.store(s.tokens, Ordering::Relaxed);
            Ok(s.tokens)
        }
        Err(e) => {
            inner.cache.abandon_rebuild(rebuild);
            Err(e)
        }
    }
}
