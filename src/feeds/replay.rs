//! `jti` replay memory for the feeds: which logout tokens and SETs were
//! already applied, so a re-delivered one is recognised (a logout token:
//! refused; a SET: acknowledged, not counted again).
//!
//! # What is kept, and for how long
//!
//! An entry names `(iss, jti)` by a BLAKE3 hash (never the token) and is
//! kept until the token's lifetime has passed (`exp`, else `iat` +
//! `tokens.max_lifetime`, plus the feed's leeway), capped at
//! `tokens.max_lifetime` + leeway from now: past that, every credential its
//! revocation could cover has expired, so a replay has no effect anyway.
//!
//! An entry is written only once the token's revocations were durably
//! applied (`apply` answered Ok): a delivery answered 503 is retried by the
//! provider and must not then be taken for a replay.
//!
//! # Bounded
//!
//! At most `feeds.replay_capacity` entries on each instance. When full, the
//! entry that would expire soonest is forgotten to make room. Refusing new
//! tokens instead (fail closed) would refuse *logouts*, which is the wrong
//! way round: forgetting an entry only means that a replay of that token
//! re-applies a revocation that is already in force (revocations merge),
//! so the worst a flood can do is an uncounted duplicate.
//!
//! # Shared through Redis
//!
//! With the Redis store, entries are also `SET {P}:feed:jti:<hash> 1 NX
//! EX <seconds left>` (same hash tag as the store's keys), so a replay to another
//! instance is caught too. Redis is asked after this instance's own memory;
//! when it cannot be reached, the local memory alone answers (a replay to
//! another instance is then re-applied: harmless, see above).

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::store::redis::conn::Conn;
use crate::store::redis::link::{is_fatal, Link};

/// A token's name in the replay memory.
pub(crate) type ReplayKey = [u8; 32];

/// The key of `(iss, jti)`.
pub(crate) fn replay_key(iss: &str, jti: &str) -> ReplayKey {
    let mut h = blake3::Hasher::new();
    h.update(b"revgate feed jti\0");
    h.update(iss.as_bytes());
    h.update(b"\0");
    h.update(jti.as_bytes());
    *h.finalize().as_bytes()
}

/// The replay memory (see the module doc). Lives on the gateway, so a
/// reload keeps it.
pub(crate) struct Replay {
    local: Mutex<Local>,
    redis: Option<SharedReplay>,
}

struct Local {
    capacity: usize,
    until: HashMap<ReplayKey, u64>,
    by_expiry: BTreeSet<(u64, ReplayKey)>,
}

impl Local {
    fn seen(&mut self, key: &ReplayKey, now: u64) -> bool {
        match self.until.get(key) {
            Some(&t) if t > now => true,
            Some(&t) => {
                self.until.remove(key);
                self.by_expiry.remove(&(t, *key));
                false
            }
            None => false,
        }
    }

    /// Records `key` until `until`; false when it was there already.
    fn mark(&mut self, key: ReplayKey, until: u64, now: u64) -> bool {
        if self.seen(&key, now) {
            return false;
        }
        // Expired entries first, then the soonest-expiring.
        while self.until.len() >= self.capacity {
            let Some(first) = self.by_expiry.pop_first() else {
                break;
            };
            self.until.remove(&first.1);
            crate::metrics::feed_replay_evicted(first.0 > now);
        }
        self.until.insert(key, until);
        self.by_expiry.insert((until, key));
        true
    }
}

impl Replay {
    /// Memory for `capacity` entries; shared through the Redis of `url`
    /// (under `prefix`) when the store is Redis.
    pub(crate) fn new(capacity: usize, store_url: &str, prefix: &str) -> Replay {
        let redis = (store_url != "memory")
            .then(|| SharedReplay::new(store_url, prefix))
            .flatten();
        Replay {
            local: Mutex::new(Local {
                capacity: capacity.max(1),
                until: HashMap::new(),
                by_expiry: BTreeSet::new(),
            }),
            redis,
        }
    }

    /// The Redis link, for the poller's lease.
    pub(crate) fn shared(&self) -> Option<&SharedReplay> {
        self.redis.as_ref()
    }

    /// Whether `key` was applied already (here, or on another instance).
    pub(crate) async fn seen(&self, key: &ReplayKey) -> bool {
        let now = crate::store::now_unix();
        if self.lock().seen(key, now) {
            return true;
        }
        match &self.redis {
            Some(r) => r.exists(key).await.unwrap_or(false),
            None => false,
        }
    }

    /// Records `key` as applied until `until` (unix seconds); false when
    /// some instance had recorded it already (a concurrent duplicate).
    pub(crate) async fn mark(&self, key: ReplayKey, until: u64) -> bool {
        let now = crate::store::now_unix();
        let fresh = self.lock().mark(key, until, now);
        match &self.redis {
            Some(r) => match r.set_nx(&key, until).await {
                Some(set) => set && fresh,
                None => fresh,
            },
            None => fresh,
        }
    }

    /// Entries held on this instance.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().until.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Local> {
        // A panic while holding it leaves a consistent map (each step is one
        // insert or remove): keep using it.
        self.local.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The feeds' own connection to the store's Redis (the store's URL and
/// topology: standalone, Sentinel or Cluster), opened on first use and
/// again after an error, at most once a second.
pub(crate) struct SharedReplay {
    link: Link,
    prefix: String,
    conn: tokio::sync::Mutex<(Option<Conn>, Option<Instant>)>,
}

impl SharedReplay {
    fn new(url: &str, prefix: &str) -> Option<SharedReplay> {
        match Link::new(url, prefix) {
            Ok(link) => Some(SharedReplay {
                link,
                prefix: prefix.to_string(),
                conn: tokio::sync::Mutex::new((None, None)),
            }),
            Err(e) => {
                tracing::error!(error = %e, "feeds: store URL unusable; jti replay memory is local only");
                None
            }
        }
    }

    /// A key of this deployment (its hash tag): `{P}:feed:<what>`.
    pub(crate) fn key(&self, what: &str) -> String {
        format!("{{{}}}:feed:{what}", self.prefix)
    }

    /// A connection, or `None` while Redis cannot be reached.
    pub(crate) async fn conn(&self) -> Option<Conn> {
        let mut guard = self.conn.lock().await;
        if let Some(c) = &guard.0 {
            return Some(c.clone());
        }
        if guard
            .1
            .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return None;
        }
        guard.1 = Some(Instant::now());
        match self.link.connect(false).await {
            Ok((cmd, _tail, _)) => {
                guard.0 = Some(cmd.clone());
                Some(cmd)
            }
            Err(e) => {
                tracing::warn!(error = %e, "feeds: redis unreachable");
                None
            }
        }
    }

    /// Forgets the connection after an error that made it unusable.
    pub(crate) async fn failed(&self, e: &::redis::RedisError) {
        if is_fatal(e) {
            self.conn.lock().await.0 = None;
        }
    }

    async fn exists(&self, key: &ReplayKey) -> Option<bool> {
        let mut c = self.conn().await?;
        let k = self.key(&format!("jti:{}", hex::encode(&key[..16])));
        let r: Result<i64, _> = ::redis::cmd("EXISTS").arg(&k).query_async(&mut c).await;
        match r {
            Ok(n) => Some(n > 0),
            Err(e) => {
                self.failed(&e).await;
                None
            }
        }
    }

    async fn set_nx(&self, key: &ReplayKey, until: u64) -> Option<bool> {
        let mut c = self.conn().await?;
        let k = self.key(&format!("jti:{}", hex::encode(&key[..16])));
        let r: Result<Option<String>, _> = ::redis::cmd("SET")
            .arg(&k)
            .arg(1)
            .arg("NX")
            .arg("EX")
            .arg(until.saturating_sub(crate::store::now_unix()).max(1))
            .query_async(&mut c)
            .await;
        match r {
            Ok(v) => Some(v.is_some()),
            Err(e) => {
                self.failed(&e).await;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn full_memory_forgets_the_soonest_expiring_and_takes_the_new() {
        let r = Replay::new(2, "memory", "p");
        let now = crate::store::now_unix();
        let (a, b, c) = (
            replay_key("i", "a"),
            replay_key("i", "b"),
            replay_key("i", "c"),
        );
        assert!(r.mark(a, now + 100).await);
        assert!(r.mark(b, now + 10).await);
        assert!(!r.mark(a, now + 100).await, "a duplicate");
        assert!(r.seen(&b).await);
        assert!(r.mark(c, now + 50).await, "full: still taken");
        assert_eq!(r.len(), 2);
        assert!(!r.seen(&b).await, "the soonest-expiring went");
        assert!(r.seen(&a).await && r.seen(&c).await);
        // Another issuer's jti is another token.
        assert!(!r.seen(&replay_key("j", "a")).await);
    }

    #[tokio::test]
    async fn an_entry_past_its_time_is_not_a_replay() {
        let r = Replay::new(10, "memory", "p");
        let k = replay_key("i", "old");
        assert!(r.mark(k, crate::store::now_unix().saturating_sub(1)).await);
        assert!(!r.seen(&k).await);
    }
}
