//! Confirmed consistency (`store.consistency = "confirmed"`): leases,
//! applied positions, fencing, and the wait that holds a revoke's success
//! answer until every live instance has applied it.
//!
//! ```text
//!   {P}:leases    ZSET  member -> lease expiry (Redis TIME, ms)
//!   {P}:applied   HASH  member -> stream id it has applied up to
//!   {P}:born      STRING Redis TIME (ms) when these keys were first written
//!
//!   member task (every lease/4, and on every tail batch):
//!     publish applied ──► HSET {P}:applied (monotonic, capped at the stream's last id)
//!     heartbeat ──► ZADD {P}:leases now+lease, only if caught up (below)
//!   revoke: write ──► WAIT? ──► confirm waiter: poll min(applied of live others) >= target
//! ```
//!
//! **The rule an instance serves by.** It may judge credentials only while
//! its boot clock (`CLOCK_BOOTTIME`: it keeps counting through a `SIGSTOP`
//! and a suspended VM) is before `valid_until` = *the moment it sent its
//! last successful renewal* + `lease` × 7/8. Redis set that lease's expiry
//! from its own `TIME` when the script ran, i.e. after the send, so as long
//! as the two clocks' *rates* differ by less than 1/8 over one lease
//! (the clock assumption, `docs/consistency.md`), the instance stops
//! serving before Redis considers its lease expired. The check is a clock
//! read on the request path, not a flag set by a task, so a process resumed
//! from `SIGSTOP` is fenced from its first instruction, before any task ran.
//!
//! **What a revoker waits for.** After its write, every member whose lease
//! is live (by Redis's clock, in the same script) must have published an
//! applied position at or past the revocation's event; a member whose lease
//! expired is dropped and counted as fenced. The revoker itself applied the
//! command before waiting, so it is not waited for. The target is the
//! stream's last id as seen by the first poll after the write (at or past
//! the write's own event), so no script change on the write path is needed.
//! One waiter task per instance polls for all revokes in flight (back to
//! back for a revoke's first 3 ms, then one script call per millisecond
//! while any wait), not one loop per revoke.
//!
//! **Renewal.** A renewal of a lease that is still live needs the member to
//! have applied what the stream held at its previous heartbeat (it has not
//! fallen more than a heartbeat behind); a member that has not fences itself
//! at once and stops renewing. A member that is fenced, or whose lease is
//! gone or expired, re-joins only when its applied position is the stream's
//! last id at that instant (checked inside the script): every revoke
//! confirmed without it was written before, so it has applied them all.
//! Either way the member is waited for again from its re-join on.
//!
//! **Redis forgetting the leases** (restarted empty, or a fail-over that
//! lost them): `{P}:born` is gone too; whoever first writes it again starts
//! a settling period of one lease, during which no revoke is confirmed,
//! so every instance that held a lease before has fenced by then. A stream
//! that went backwards makes an applied position past its end meaningless:
//! it counts as `0-0` until the member has resynced.
//!
//! All three keys share the deployment's hash tag, like every other key.
//! Every instance of a deployment must run the same mode: an instance in
//! eventual mode holds no lease and is never waited for.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::conn::Conn;
use ::redis::{RedisError, Script};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::keys::EventId;
use super::link::{is_fatal, Link};

/// Milliseconds on `CLOCK_BOOTTIME`: monotonic, and counting while the
/// process is stopped or the machine suspended (`Instant` does not count
/// a suspend on Linux).
pub(crate) fn boot_ms() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    (t.tv_sec as u64)
        .saturating_mul(1000)
        .saturating_add(t.tv_nsec as u64 / 1_000_000)
}

/// How often a waiting revoke's confirmation is polled, once it has
/// waited [`EAGER`]: before that, polls go back to back (one in flight at a
/// time, so at most one round trip's worth of load on Redis): the usual
/// confirmation arrives within a millisecond or two, and tokio's timer
/// cannot sleep for less than one.
const POLL: Duration = Duration::from_millis(1);
/// See [`POLL`].
const EAGER: Duration = Duration::from_millis(3);

/// Shared Lua helpers: stream-id comparison and the stream's last id.
const LUA_PRELUDE: &str = r#"
local function parse(id)
  local a, b = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(a) or 0, tonumber(b) or 0
end
local function lt(x, y)
  local a1, b1 = parse(x)
  local a2, b2 = parse(y)
  return a1 < a2 or (a1 == a2 and b1 < b2)
end
local function stream_last(k)
  local info = redis.pcall('XINFO', 'STREAM', k)
  if type(info) ~= 'table' or info.err then return '0-0' end
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then return info[i + 1] end
  end
  return '0-0'
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if not redis.call('GET', KEYS[3]) then redis.call('SET', KEYS[3], now) end
"#;

/// KEYS: leases, applied, born, stream. ARGV: member, lease ms, applied
/// position, need (`last` or an id), renew (`1`) or publish only (`0`).
/// Returns `{renewed, stream last id}`.
const HEARTBEAT_LUA: &str = r#"
local last = stream_last(KEYS[4])
local pos = ARGV[3]
-- Past the stream's end: the stream went backwards, nothing of it applied.
if lt(last, pos) then pos = '0-0' end
local cur = redis.call('HGET', KEYS[2], ARGV[1])
if (not cur) or lt(cur, pos) or lt(last, cur) then
  redis.call('HSET', KEYS[2], ARGV[1], pos)
end
if ARGV[5] ~= '1' then return {0, last} end
local need = ARGV[4]
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if need == 'last' or (not score) or tonumber(score) <= now then need = last end
if lt(pos, need) then return {0, last} end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return {1, last}
"#;

/// KEYS: leases, applied, born, stream. ARGV: this member, lease ms.
/// Drops expired leases; returns `{stream last id, min applied of the other
/// live members or '', settled (1/0)}`.
const CONFIRM_LUA: &str = r#"
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
if #expired > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  redis.call('HDEL', KEYS[2], unpack(expired))
end
local last = stream_last(KEYS[4])
local live = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')
local min = nil
for _, m in ipairs(live) do
  if m ~= ARGV[1] then
    local p = redis.call('HGET', KEYS[2], m) or '0-0'
    if lt(last, p) then p = '0-0' end
    if min == nil or lt(p, min) then min = p end
  end
end
local born = tonumber(redis.call('GET', KEYS[3])) or now
local settled = 0
if now - born >= tonumber(ARGV[2]) then settled = 1 end
return {last, min or '', settled}
"#;

/// KEYS: leases, applied. ARGV: member. A clean leave.
const LEAVE_LUA: &str = r#"
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
"#;

/// One revoke waiting for its confirmation.
struct Waiter {
    /// Set by the first poll after registration.
    target: Option<EventId>,
    since: std::time::Instant,
    done: oneshot::Sender<()>,
}

/// This instance's membership: its lease, its applied position, and the
/// confirmation of its revokes.
pub struct Lease {
    member: String,
    lease: Duration,
    /// `boot_ms()` before which this instance may serve; 0: fenced.
    valid_until: AtomicU64,
    applied: watch::Sender<EventId>,
    register: mpsc::UnboundedSender<Waiter>,
    inbox: std::sync::Mutex<Option<mpsc::UnboundedReceiver<Waiter>>>,
    keys: [String; 4],
    heartbeat: Script,
    confirm: Script,
    leave: Script,
    /// Fenced periods entered (for logs and metrics).
    fences: AtomicU64,
}

impl Lease {
    /// A new member of the deployment under `prefix`, fenced until its
    /// first renewal.
    pub fn new(prefix: &str, lease: Duration) -> Lease {
        let mut id = [0u8; 12];
        // Without randomness two instances could share a name; the pid and
        // time still tell them apart well enough.
        if getrandom::fill(&mut id).is_err() {
            id[..4].copy_from_slice(&std::process::id().to_le_bytes());
            id[4..].copy_from_slice(&boot_ms().to_le_bytes());
        }
        let tag = format!("{{{prefix}}}");
        let (register, inbox) = mpsc::unbounded_channel();
        Lease {
            member: hex::encode(id),
            lease,
            valid_until: AtomicU64::new(0),
            applied: watch::Sender::new(EventId::ZERO),
            register,
            inbox: std::sync::Mutex::new(Some(inbox)),
            keys: [
                format!("{tag}:leases"),
                format!("{tag}:applied"),
                format!("{tag}:born"),
                format!("{tag}:events"),
            ],
            heartbeat: Script::new(&format!("{LUA_PRELUDE}{HEARTBEAT_LUA}")),
            confirm: Script::new(&format!("{LUA_PRELUDE}{CONFIRM_LUA}")),
            leave: Script::new(LEAVE_LUA),
            fences: AtomicU64::new(0),
        }
    }

    /// This member's name in `{P}:leases`.
    pub fn member(&self) -> &str {
        &self.member
    }

    /// Whether this instance must refuse credentialed requests now: one
    /// clock read and one atomic load.
    #[inline]
    pub fn fenced(&self) -> bool {
        boot_ms() >= self.valid_until.load(Ordering::Acquire)
    }

    /// The tail applied everything up to `at` to the local cache.
    pub fn applied(&self, at: EventId) {
        self.applied.send_if_modified(|cur| {
            let moved = *cur != at;
            *cur = at;
            moved
        });
    }

    /// Waits until every other live member has applied what the stream held
    /// when this was called (or has fenced), at most `timeout`.
    pub async fn confirm(&self, timeout: Duration) -> Result<(), String> {
        let (done, wait) = oneshot::channel();
        self.register
            .send(Waiter {
                target: None,
                since: std::time::Instant::now(),
                done,
            })
            .map_err(|_| "the confirmation task is not running".to_string())?;
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err("the confirmation task stopped".into()),
            Err(_) => Err(format!(
                "not every live instance applied it within {}",
                humantime::format_duration(timeout)
            )),
        }
    }

    /// Fences now (fell behind); the member task logs it.
    fn fence(&self) {
        self.valid_until.store(0, Ordering::Release);
    }

    /// Counts and logs the start of a fenced period.
    fn fenced_now(&self, why: &str) {
        self.fences.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("revgate_redis_fences_total").increment(1);
        tracing::warn!(member = %self.member, why, "fenced: answering 503 to credentialed requests until caught up");
    }

    /// How many times this instance fenced itself while serving.
    pub fn fences(&self) -> u64 {
        self.fences.load(Ordering::Relaxed)
    }

    async fn call(
        &self,
        conn: &mut Conn,
        pos: EventId,
        need: &str,
        renew: bool,
    ) -> Result<(i64, String), RedisError> {
        let mut inv = self.heartbeat.prepare_invoke();
        for k in &self.keys {
            inv.key(k);
        }
        inv.arg(&self.member)
            .arg(self.lease.as_millis() as u64)
            .arg(pos.to_string())
            .arg(need)
            .arg(if renew { "1" } else { "0" });
        inv.invoke_async(conn).await
    }

    /// Removes this member's lease (a clean shutdown: revokers stop waiting
    /// for it at once).
    pub async fn leave(&self, link: &Link) {
        self.valid_until.store(0, Ordering::Release);
        let Some(mut conn) = link.conn() else { return };
        let mut inv = self.leave.prepare_invoke();
        inv.key(&self.keys[0]).key(&self.keys[1]).arg(&self.member);
        let r: Result<i64, RedisError> = inv.invoke_async(&mut conn).await;
        if let Err(e) = r {
            tracing::debug!(error = %e, "could not remove the lease");
        }
    }
}

/// The member task: publishes the applied position on every change, and
/// renews the lease every `lease / 4` (see the module docs).
pub(super) async fn member(lease: Arc<Lease>, inner: Arc<super::Inner>, stop: CancellationToken) {
    let every = lease.lease / 4;
    let margin = lease.lease / 8;
    let mut changed = lease.applied.subscribe();
    let mut must_reach = EventId::ZERO;
    let mut next = tokio::time::Instant::now();
    // Whether this instance was serving when last looked at: a lease that
    // ran out (no renewal: Redis away, the process paused) fences by the
    // clock alone, and is logged here, at the first look after it.
    let mut serving = false;
    loop {
        let beat = tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep_until(next) => true,
            r = changed.changed() => {
                if r.is_err() { return }
                false
            }
        };
        if serving && lease.fenced() {
            serving = false;
            lease.fenced_now("the lease ran out before it was renewed");
        }
        let Some(mut conn) = inner.link.conn() else {
            if beat {
                next += every;
            }
            continue;
        };
        let pos = *changed.borrow_and_update();
        let fenced = lease.fenced();
        // A fenced member that has caught up re-joins at once rather than at
        // its next beat.
        let renew = beat || fenced;
        let need = if fenced {
            "last".to_string()
        } else {
            must_reach.to_string()
        };
        let sent = boot_ms();
        let r = tokio::time::timeout(every, lease.call(&mut conn, pos, &need, renew)).await;
        if beat {
            next = tokio::time::Instant::now() + every;
        }
        match r {
            Ok(Ok((renewed, last))) => {
                if !renew {
                    continue;
                }
                let last = EventId::parse(&last).unwrap_or(EventId::ZERO);
                if renewed == 1 {
                    let until = sent + (lease.lease - margin).as_millis() as u64;
                    lease.valid_until.store(until, Ordering::Release);
                    if !serving {
                        serving = true;
                        tracing::info!(member = %lease.member, at = %pos, "lease held: serving");
                    }
                } else if !fenced {
                    lease.fence();
                    serving = false;
                    lease.fenced_now("fell behind the revocation stream");
                }
                must_reach = last;
            }
            Ok(Err(e)) => {
                if is_fatal(&e) {
                    inner.link.lost();
                }
                tracing::debug!(error = %e, "lease renewal failed");
            }
            Err(_) => tracing::debug!("lease renewal timed out"),
        }
    }
}

/// The confirmation task: while revokes wait, polls every [`POLL`] for the
/// least applied position among the other live members.
pub(super) async fn waiter(lease: Arc<Lease>, inner: Arc<super::Inner>, stop: CancellationToken) {
    let Some(mut inbox) = lease.inbox.lock().unwrap_or_else(|p| p.into_inner()).take() else {
        return;
    };
    let mut pending: Vec<Waiter> = Vec::new();
    loop {
        if pending.is_empty() {
            tokio::select! {
                _ = stop.cancelled() => return,
                w = inbox.recv() => match w {
                    Some(w) => pending.push(w),
                    None => return,
                },
            }
        }
        while let Ok(w) = inbox.try_recv() {
            pending.push(w);
        }
        pending.retain(|w| !w.done.is_closed());
        if pending.is_empty() {
            continue;
        }
        let polled = match inner.link.conn() {
            Some(mut conn) => poll(&lease, &mut conn).await,
            None => Err(RedisError::from(std::io::Error::other("not connected"))),
        };
        match polled {
            Ok((last, min, settled)) => {
                let mut still = Vec::with_capacity(pending.len());
                for mut w in pending.drain(..) {
                    let target = *w.target.get_or_insert(last);
                    if settled && min.is_none_or(|m| m >= target) {
                        let _ = w.done.send(());
                    } else {
                        still.push(w);
                    }
                }
                pending = still;
            }
            Err(e) => {
                if is_fatal(&e) {
                    inner.link.lost();
                }
                tracing::debug!(error = %e, "confirmation poll failed");
            }
        }
        let eager = pending.iter().any(|w| w.since.elapsed() < EAGER);
        if !pending.is_empty() && !eager {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(POLL) => {}
            }
        } else if eager {
            // Let the tail and member tasks of this thread run in between.
            tokio::task::yield_now().await;
        }
    }
}

/// One confirmation poll: the stream's last id, the least applied position
/// of the other live members (`None`: there are none), and whether the
/// membership is settled.
async fn poll(
    lease: &Lease,
    conn: &mut Conn,
) -> Result<(EventId, Option<EventId>, bool), RedisError> {
    let mut inv = lease.confirm.prepare_invoke();
    for k in &lease.keys {
        inv.key(k);
    }
    inv.arg(&lease.member).arg(lease.lease.as_millis() as u64);
    let (last, min, settled): (String, String, i64) = inv.invoke_async(conn).await?;
    let last = EventId::parse(&last).unwrap_or(EventId::ZERO);
    let min = if min.is_empty() {
        None
    } else {
        Some(EventId::parse(&min).unwrap_or(EventId::ZERO))
    };
    Ok((last, min, settled == 1))
}
