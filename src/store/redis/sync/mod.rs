//! The background work of a [`RedisStore`](super::RedisStore): keeping the
//! connection, replaying the outbox, the start-up load, tailing the stream,
//! resyncing when the stream no longer reaches back far enough, and the
//! periodic bloom rebuild.
//!
//! One task ([`run`]) owns the order of things on each (re)connect:
//!
//! ```text
//! connect (Sentinel: ask for the master) ─► replay outbox ─► first time: load
//!   │                                         later: catch up; trimmed past us? ─► load
//!   └◄── error: drop connections, back off (100 ms .. 5 s) ◄── tail: XREAD BLOCK from last id
//! ```
//!
//! Every read of the stream is followed by the check that the stream still
//! reaches back to where the read began (`read_was_whole`); a read whose
//! start was trimmed past may have skipped events, so the instance loads
//! again. The check comes *after* the read: other instances' writes trim
//! the stream at any moment, so a check made before a read (as the resume,
//! the loads' catch-up and the tail once did) let the events trimmed in
//! between go unseen while the position moved past them, and an
//! acknowledged revocation, in Redis, stayed unknown to that instance for
//! good (found by `tests/chaos.rs`: LOST 5; `tests/redis_store.rs`
//! `a_stream_trimmed_past_*`, one per path).
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
//!
//! ```text
//! mod.rs    the session loop (connect, replay the outbox, load, tail), maintenance
//! tail.rs   XREAD, event decoding and apply, catch-up, stream-position checks
//! load.rs   full load (snapshot or SCAN), bloom rebuild, outbox/scope ordering
//! ```

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::conn::Conn;
use ::redis::streams::StreamReadReply;
use ::redis::{RedisError, Value};
use tokio_util::sync::CancellationToken;

use super::keys::{EventId, KeyKind};
use super::link::{is_fatal, tail_block};
use super::{snapshot, Inner, TOKEN_BATCH_MAX};
use crate::store::cache::AtomicBloom;
use crate::store::live::Rule;
use crate::store::{now_unix, RevocationCommand, RevocationTarget, ScopeRule, TokenRule};

mod load;
mod tail;

use load::*;
use tail::*;

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
            c = inner.link.connect(inner.cfg.redis.min_replicas_acked > 0) => c,
        };
        let ended = match connected {
            Ok((cmd, tail, writer)) => {
                metrics::counter!("revgate_redis_connects_total").increment(1);
                inner.link.set_writer(writer);
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
    mut cmd: Conn,
    mut tail: Conn,
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
    cmd: &mut Conn,
    tail: &mut Conn,
    pos: &mut Option<EventId>,
) -> Result<(), Ended> {
    replay_outbox(inner, cmd).await?;
    let mut at = match *pos {
        None => {
            let at = full_load(inner, cmd).await?;
            inner.ready.store(true, Ordering::Release);
            at
        }
        // Resume: what came meanwhile, read and then checked (a check
        // before reading says nothing about the read; see `catch_up`).
        Some(p) => match catch_up(inner, cmd, p, None).await? {
            Some(at) => at,
            None => full_load(inner, cmd).await?,
        },
    };
    *pos = Some(at);
    inner.touch_sync();
    inner.note_applied(at);
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
        let from = at;
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
        // Did the answer hold everything after `from`? The trimming may
        // have passed it since the last read (this instance a whole
        // `stream_maxlen` behind): then the events in between are gone and
        // only a load brings them back. Checked after every answer with
        // events, as `catch_up` does: before, only a full page was checked,
        // and from its end, which says nothing about what it skipped.
        if n > 0 && !read_was_whole(inner, cmd, from).await? {
            at = full_load(inner, cmd).await?;
            *pos = Some(at);
        }
        inner.note_applied(at);
    }
}

/// Writes the outbox to Redis in order, then empties it: runs of token
/// rules as batches (see `Inner::write_token_batch`), the rest one by one.
/// On failure, what was written is dropped from the outbox and the rest
/// stays.
async fn replay_outbox(inner: &Inner, cmd: &mut Conn) -> Result<(), RedisError> {
    let mut ob = inner.outbox.lock().await;
    if ob.pending.is_empty() {
        inner.direct.store(true, Ordering::Release);
        return Ok(());
    }
    let total = ob.pending.len();
    let now = now_unix();
    let mut done = 0;
    let mut failed = None;
    while done < total {
        // A run of token rules (a bulk import's batch queued whole, or
        // single revokes in a row) goes as one batch, one pipeline and one
        // event, as `apply_batch` writes it; anything else one by one, in
        // order.
        let run = ob.pending[done..]
            .iter()
            .take(TOKEN_BATCH_MAX)
            .take_while(|c| matches!(c, RevocationCommand::Token(_)))
            .count();
        let written = if run > 1 {
            let rules: Vec<TokenRule> = ob.pending[done..done + run]
                .iter()
                .filter_map(|c| match c {
                    RevocationCommand::Token(r) => Some(*r),
                    _ => None,
                })
                .collect();
            inner.write_token_batch(cmd, &rules, now).await.map(|_| run)
        } else {
            inner.write(cmd, &ob.pending[done], now).await.map(|_| 1)
        };
        match written {
            Ok(n) => done += n,
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
