//! Durable acknowledgement across a fail-over (`store.redis.min_replicas_acked`):
//! after a revocation is written, `WAIT n timeout` on the same connection
//! (it counts that client's writes), and with `store.redis.wait_aof` on a
//! Redis >= 7.2 also `WAITAOF 1 n timeout`; the revoke is acknowledged only
//! when `n` replicas have it.
//!
//! Redis replicates asynchronously: a primary that acknowledged a write and
//! died before sending it lets Sentinel promote a replica without it, and
//! that revocation is gone. `WAIT` closes the gap for this write (the chosen
//! replica has it), at one replication round trip per revocation. It is a
//! promise about *this* write only: pair it with the primary's
//! `min-replicas-to-write n` / `min-replicas-max-lag`, so a primary cut off
//! from its replicas refuses writes (they go to the outbox) rather than
//! taking writes a promoted replica will never see (`docs/operations.md`).
//!
//! Fewer than `n` acknowledgements within `store.redis.wait_timeout` is an
//! error: the revocation is in the primary (and in this instance's cache)
//! but not acknowledged: the revoke answers 503 and a retry merges.
//!
//! `WAITAOF` needs Redis 7.2; the version is read once per connection
//! (`INFO server`) and an older server gets `WAIT` alone, logged once.

use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use super::conn::Conn;
use ::redis::RedisError;

use crate::config::RedisDurability;

/// What to wait for after a write.
pub struct Durability {
    replicas: u32,
    timeout: Duration,
    wait_aof: bool,
    /// 0: unknown, 1: the server has WAITAOF, 2: it has not.
    has_waitaof: AtomicU8,
}

impl Durability {
    /// From `[store.redis]`.
    pub fn new(cfg: &RedisDurability) -> Durability {
        Durability {
            replicas: cfg.min_replicas_acked,
            timeout: cfg.wait_timeout,
            wait_aof: cfg.wait_aof,
            has_waitaof: AtomicU8::new(0),
        }
    }

    /// Waits for the replicas after a write on `conn`; `Err` says why the
    /// write is not acknowledged.
    pub async fn wait(&self, conn: &mut Conn) -> Result<(), String> {
        if self.replicas == 0 {
            return Ok(());
        }
        let ms = self.timeout.as_millis() as u64;
        let acked: u32 = ::redis::cmd("WAIT")
            .arg(self.replicas)
            .arg(ms)
            .query_async(conn)
            .await
            .map_err(|e| format!("WAIT: {e}"))?;
        if acked < self.replicas {
            metrics::counter!("revgate_redis_wait_short_total").increment(1);
            return Err(format!(
                "{acked} of {} replicas acknowledged within {}",
                self.replicas,
                humantime::format_duration(self.timeout)
            ));
        }
        if self.wait_aof && self.waitaof_supported(conn).await {
            let (local, replicas): (u32, u32) = ::redis::cmd("WAITAOF")
                .arg(1)
                .arg(self.replicas)
                .arg(ms)
                .query_async(conn)
                .await
                .map_err(|e| format!("WAITAOF: {e}"))?;
            if local < 1 || replicas < self.replicas {
                return Err(format!(
                    "WAITAOF: local {local}, {replicas} of {} replicas fsync'd in time",
                    self.replicas
                ));
            }
        }
        Ok(())
    }

    async fn waitaof_supported(&self, conn: &mut Conn) -> bool {
        match self.has_waitaof.load(Ordering::Relaxed) {
            1 => return true,
            2 => return false,
            _ => {}
        }
        let info: Result<String, RedisError> =
            ::redis::cmd("INFO").arg("server").query_async(conn).await;
        let Ok(info) = info else { return false };
        let version = info
            .lines()
            .find_map(|l| l.strip_prefix("redis_version:"))
            .map(str::trim)
            .unwrap_or("");
        let has = version_at_least(version, (7, 2));
        if !has {
            tracing::warn!(
                version,
                "store.redis.wait_aof needs Redis >= 7.2; using WAIT alone"
            );
        }
        self.has_waitaof
            .store(if has { 1 } else { 2 }, Ordering::Relaxed);
        has
    }
}

/// Whether a `major.minor.patch` version is at least `min`.
fn version_at_least(v: &str, min: (u32, u32)) -> bool {
    let mut it = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let major = it.next().unwrap_or(0);
    let minor = it.next().unwrap_or(0);
    (major, minor) >= min
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waitaof_is_gated_on_7_2() {
        assert!(!version_at_least("7.0.15", (7, 2)));
        assert!(version_at_least("7.2.0", (7, 2)));
        assert!(version_at_least("8.0.1", (7, 2)));
        assert!(!version_at_least("", (7, 2)));
        assert!(!version_at_least("6.2.14", (7, 2)));
    }
}
