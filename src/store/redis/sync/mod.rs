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
use super::link::{is_fatal, refuses_every_write, tail_block};
use super::{snapshot, Inner, TOKEN_BATCH_MAX};
use crate::store::cache::AtomicBloom;
use crate::store::live::Rule;
use crate::store::{now_unix, RevocationCommand, RevocationTarget, ScopeRule, TokenRule};
use crate::telemetry::Throttle;

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
    // What Redis refuses stays in the outbox and is tried again on a
    // backoff (or when a new command is queued); the session goes on.
    let mut retry = Retry::default();
    let kept = replay_outbox(inner, cmd, &retry.log).await?;
    retry.after(kept);
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
    let mut woken = false;
    loop {
        if !inner.link.is_connected() {
            return Err(Ended::Lost);
        }
        if inner.backlog.load(Ordering::Acquire) > 0 && (woken || retry.due()) {
            let kept = replay_outbox(inner, cmd, &retry.log).await?;
            retry.after(kept);
        }
        woken = false;
        let read = tokio::select! {
            // Biased: a pending wake-up is taken before an XREAD is even sent.
            biased;
            _ = stop.cancelled() => return Ok(()),
            // Woken: a request lost the connection, or the outbox has work.
            // Dropping the XREAD is safe: `at` only moves on what was applied.
            _ = inner.link.wake.notified() => {
                woken = true;
                continue;
            }
            _ = retry.wait() => continue,
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

/// When the outbox is tried again after a replay left commands in it:
/// 100 ms, doubling to 5 s while Redis keeps refusing.
struct Retry {
    at: Option<tokio::time::Instant>,
    backoff: Duration,
    /// The refusal warning, at most once a second (a pass also runs on
    /// every queued command).
    log: Throttle,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            at: None,
            backoff: BACKOFF_MIN,
            log: Throttle::default(),
        }
    }
}

impl Retry {
    /// A replay kept `kept` commands.
    fn after(&mut self, kept: usize) {
        if kept == 0 {
            self.at = None;
            self.backoff = BACKOFF_MIN;
        } else {
            self.at = Some(tokio::time::Instant::now() + self.backoff);
            self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        }
    }

    fn due(&self) -> bool {
        self.at.is_none_or(|t| tokio::time::Instant::now() >= t)
    }

    /// Until the next try; forever when none is waiting.
    async fn wait(&self) {
        match self.at {
            Some(t) => tokio::time::sleep_until(t).await,
            None => std::future::pending().await,
        }
    }
}

/// Commands of the outbox read per lock while replaying (two token batches).
const REPLAY_WINDOW: usize = 2 * TOKEN_BATCH_MAX;

/// Refusals in a row after which a replay stops until its next try: Redis
/// refusing that many different commands is refusing them all.
const REFUSED_IN_A_ROW_MAX: usize = 32;

/// Writes the outbox to Redis in order: runs of token rules as batches
/// (see `Inner::write_token_batch`), the rest one by one; what was written
/// leaves the outbox. Returns how many of the commands it went through
/// stay (refused, or behind a refusal).
///
/// A command Redis refuses (not a lost connection) stays in the outbox,
/// enforced here and tried again by the next replay, and so does every
/// later command naming the same rule ([`RevocationCommand::ordered_target`]:
/// a removal must not overtake the revocation it removes); the others are
/// written past it. Before, the replay ended the session on the first
/// refusal, every retry refused the same command again, and the instance
/// stopped tailing (what the others revoked passed it) while everything
/// queued behind that command stayed on this instance for good (a foreign
/// `WRONGTYPE` value at one rule's key was enough; `tests/redis_store.rs`
/// `a_revocation_redis_refuses_*`). A refusal of every write
/// ([`refuses_every_write`]: out of memory, too few replicas) stops the
/// replay where it is, in order, until the next try; a lost connection
/// ends the session as before.
async fn replay_outbox(inner: &Inner, cmd: &mut Conn, log: &Throttle) -> Result<usize, RedisError> {
    let total = {
        let ob = inner.outbox.lock().await;
        if ob.pending.is_empty() {
            inner.direct.store(true, Ordering::Release);
            return Ok(0);
        }
        ob.pending.len()
    };
    let now = now_unix();
    let mut written = vec![false; total];
    let mut held = Held::default();
    let mut lost = None;
    let mut refused = 0;
    let mut in_a_row = 0;
    let mut last_refusal = None;
    // Entries before this one go one by one (their batch was refused).
    let mut singles_until = 0;
    // The outbox is read a window at a time and not held while its
    // commands are written: a revocation queued meanwhile (appended after
    // `total`; only this task takes commands out) does not wait for a
    // replay's round trips, nor does an admin lookup of what it holds.
    let mut window: Vec<RevocationCommand> = Vec::new();
    let mut base = 0;
    let mut i = 0;
    while i < total {
        if i >= base + window.len() {
            base = i;
            let ob = inner.outbox.lock().await;
            let end = total.min(base + REPLAY_WINDOW).min(ob.pending.len());
            window = ob.pending.get(base..end).unwrap_or_default().to_vec();
            if window.is_empty() {
                break;
            }
        }
        let here = &window[i - base..];
        let c = &here[0];
        if held.holds(c) {
            held.add(c);
            i += 1;
            continue;
        }
        // A run of token rules (a bulk import's batch queued whole, or
        // single revokes in a row) goes as one batch, one pipeline and one
        // event, as `apply_batch` writes it; anything else one by one.
        let run = if i < singles_until {
            1
        } else {
            here.iter()
                .take(TOKEN_BATCH_MAX)
                .take_while(|c| matches!(c, RevocationCommand::Token(_)) && !held.holds(c))
                .count()
                .max(1)
        };
        let rules: Vec<TokenRule> = here[..run]
            .iter()
            .filter_map(|c| match c {
                RevocationCommand::Token(r) => Some(*r),
                _ => None,
            })
            .collect();
        // A token rule of a refused batch goes as a batch of one: the
        // batch's `SET NX` may have written it already, and only a batch
        // announces a rule it finds unchanged (the single write's script
        // adds no event then, and no instance would learn it).
        let result = if run > 1 || i < singles_until && !rules.is_empty() {
            inner.write_token_batch(cmd, &rules, now).await.map(|_| ())
        } else {
            inner.write(cmd, c, now).await.map(|_| ())
        };
        match result {
            Ok(()) => {
                written[i..i + run].fill(true);
                i += run;
                in_a_row = 0;
            }
            Err(e) if is_fatal(&e) => {
                lost = Some(e);
                break;
            }
            Err(e) if refuses_every_write(&e) => {
                last_refusal = Some(e);
                break;
            }
            // Which rule of the batch was refused? One by one tells.
            Err(_) if run > 1 => singles_until = i + run,
            Err(e) => {
                tracing::debug!(error = %e, "redis refused a command of the outbox");
                held.add(c);
                refused += 1;
                in_a_row += 1;
                last_refusal = Some(e);
                i += 1;
                if in_a_row >= REFUSED_IN_A_ROW_MAX {
                    break;
                }
            }
        }
    }
    let done = written.iter().filter(|w| **w).count();
    let kept = total - done;
    let mut ob = inner.outbox.lock().await;
    if done > 0 {
        // The first `total` are the commands this replay went through;
        // what was queued meanwhile follows them.
        let went_through = total.min(ob.pending.len());
        let later = ob.pending.split_off(went_through);
        let replayed = std::mem::take(&mut ob.pending);
        ob.pending = replayed
            .into_iter()
            .zip(written)
            .filter_map(|(c, w)| (!w).then_some(c))
            .chain(later)
            .collect();
        // Already in Redis: replaying them again after a crash here would be
        // harmless (the scripts merge), so a failed rewrite only costs that.
        if let Err(e) = ob.journal.rewrite(ob.pending.clone()).await {
            tracing::error!(error = %e, "could not rewrite the redis outbox after replay");
        }
        inner.index_outbox(&ob.pending);
        metrics::counter!("revgate_redis_outbox_replayed_total").increment(done as u64);
    }
    let left = ob.pending.len();
    if refused > 0 {
        metrics::counter!(crate::metrics::OUTBOX_REFUSED).increment(refused);
    }
    if let Some(e) = lost {
        tracing::warn!(replayed = done, left, error = %e, "redis outbox replay interrupted");
        return Err(e);
    }
    if left == 0 {
        tracing::info!(replayed = done, "redis outbox replayed");
        inner.direct.store(true, Ordering::Release);
    }
    if let Some(e) = last_refusal {
        if let Some(suppressed) = log.admit() {
            tracing::warn!(
                replayed = done,
                refused,
                left,
                suppressed,
                error = %e,
                "redis refused commands of the outbox: they stay there (enforced by this instance, retried), with what names the same rules; the rest was written"
            );
        }
    }
    // What was queued meanwhile is not "kept": the wake-up its append sent
    // brings the next replay at once, without the backoff of a refusal.
    Ok(kept)
}

/// The rules of the outbox's commands kept back in one replay: a later
/// command naming one of them waits too.
#[derive(Default)]
struct Held {
    targets: std::collections::HashSet<RevocationTarget>,
    /// A command kept back names no one rule (a family's): everything after
    /// it waits.
    all: bool,
}

impl Held {
    fn holds(&self, c: &RevocationCommand) -> bool {
        self.all
            || match c.ordered_target() {
                Some(t) => self.targets.contains(&t),
                None => !self.targets.is_empty(),
            }
    }

    fn add(&mut self, c: &RevocationCommand) {
        match c.ordered_target() {
            Some(t) => {
                self.targets.insert(t);
            }
            None => self.all = true,
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::Fingerprint;
    use crate::store::FamilyRule;

    fn token(b: u8) -> RevocationCommand {
        RevocationCommand::Token(TokenRule {
            fingerprint: Fingerprint::from_bytes([b; 16]),
            expires_at: 42,
        })
    }

    fn unrevoke(b: u8) -> RevocationCommand {
        RevocationCommand::Remove(RevocationTarget::Token(Fingerprint::from_bytes([b; 16])))
    }

    fn family() -> RevocationCommand {
        RevocationCommand::Family(FamilyRule {
            family: Fingerprint::from_bytes([9; 16]),
            generation: None,
            revoked_at: 1,
            expires_at: 42,
            members: Vec::new(),
        })
    }

    #[test]
    fn a_held_command_holds_what_names_its_rule_and_a_family_s_holds_everything() {
        let mut held = Held::default();
        assert!(!held.holds(&token(1)) && !held.holds(&family()));
        held.add(&token(1));
        assert!(
            held.holds(&unrevoke(1)),
            "a removal waits for its revocation"
        );
        assert!(held.holds(&token(1)));
        assert!(!held.holds(&token(2)) && !held.holds(&unrevoke(2)));
        assert!(
            held.holds(&family()),
            "a family's command keeps its order with all"
        );

        let mut held = Held::default();
        held.add(&family());
        assert!(held.holds(&token(2)) && held.holds(&unrevoke(3)));
    }
}
