//! Per-client-IP rate limits for the revoke endpoints and the admin API: one
//! token bucket per client, answered by the caller as 429 with `Retry-After`.
//!
//! # The bucket
//!
//! Each client has a bucket of `burst` tokens refilled at `per_second`; a
//! call takes one token or is refused. It is kept as GCRA (the "virtual
//! scheduling" form of a token bucket, as in `governor` and nginx's
//! `limit_req`): one `u64` per client, its *theoretical arrival time* (TAT).
//! A call at `now` is allowed when `max(TAT, now) - now <= (burst - 1) * T`
//! (`T = 1 / per_second`), and then moves the TAT on by `T`; refused, it
//! learns exactly when it would be allowed, which is its `Retry-After`
//! (rounded up to whole seconds, at least 1). A client whose TAT has passed
//! has a full bucket: forgetting it changes nothing, which is what makes
//! eviction safe.
//!
//! # Bounded memory
//!
//! An attacker with many addresses must not grow the table without bound:
//! - **Keys**: an IPv4 address is one client; an IPv6 address is keyed by its
//!   /64 (one subscriber's usual allocation: a host picks any of 2^64
//!   addresses at will); an IPv4-mapped IPv6 address is its IPv4 address.
//! - **Idle eviction**: clients whose bucket is full again are dropped by a
//!   sweep, run when a new client arrives and the last sweep is older than
//!   [`SWEEP_EVERY`], or the table is full (at most once per second then, so
//!   a full table of active clients cannot make every call pay a sweep).
//! - **At most `max_clients` entries** (default 100,000, a few MiB): when
//!   the table is full of active clients even after a sweep, every new client
//!   shares one *overflow* bucket with the same limits. Known clients keep
//!   their own allowance; the newcomers are limited together, so a flood
//!   from many addresses is throttled instead of growing memory.
//!
//! The limiter lives in the gateway's runtime: a config reload starts with
//! empty buckets, which can only let a client through sooner.
//!
//! # Which address
//!
//! The TCP peer's. Behind a load balancer that is the balancer's address,
//! shared by all its clients: raise the limits there (or turn them off and
//! rate-limit at the balancer), since `X-Forwarded-For` is not trusted.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::config::RateLimitConfig;

/// How often idle clients are swept when the table is not full.
pub const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Least time between two sweeps of a full table.
const FULL_SWEEP_EVERY: Duration = Duration::from_secs(1);

/// A refused call: when to come back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limited {
    /// Whole seconds until a call would be allowed (at least 1), for
    /// `Retry-After`.
    pub retry_after_secs: u64,
}

/// Token buckets per client address.
pub struct RateLimiter {
    /// Nanoseconds per token (T).
    interval: u64,
    /// How far ahead of now a TAT may be and the call still pass: (burst - 1) * T.
    tolerance: u64,
    max_clients: usize,
    epoch: Instant,
    buckets: DashMap<IpAddr, u64>,
    overflow: Mutex<u64>,
    last_sweep: AtomicU64,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("interval_ns", &self.interval)
            .field("tolerance_ns", &self.tolerance)
            .field("clients", &self.buckets.len())
            .finish()
    }
}

/// The address a bucket is kept for (see the module doc).
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

impl RateLimiter {
    /// A limiter for checked settings; `None` when the limit is off.
    pub fn from_config(c: &RateLimitConfig) -> Option<Self> {
        c.enabled
            .then(|| Self::new(c.per_second, c.burst, c.max_clients))
    }

    /// `per_second` (> 0) tokens a second, `burst` (>= 1) at once, at most
    /// `max_clients` (>= 1) buckets.
    pub fn new(per_second: f64, burst: u32, max_clients: usize) -> Self {
        let interval = (1e9 / per_second).round().clamp(1.0, u64::MAX as f64 / 4.0) as u64;
        RateLimiter {
            interval,
            tolerance: interval.saturating_mul(u64::from(burst.max(1) - 1)),
            max_clients: max_clients.max(1),
            epoch: Instant::now(),
            buckets: DashMap::new(),
            overflow: Mutex::new(0),
            last_sweep: AtomicU64::new(0),
        }
    }

    /// Takes one token for `ip` now.
    pub fn check(&self, ip: IpAddr) -> Result<(), Limited> {
        self.check_at(client_key(ip), || self.now())
    }

    /// Clients currently tracked (for tests and metrics).
    pub fn clients(&self) -> usize {
        self.buckets.len()
    }

    fn now(&self) -> u64 {
        // Offset by one so that 0 never means "now" (a fresh TAT of 0 is
        // always in the past).
        u64::try_from(self.epoch.elapsed().as_nanos())
            .unwrap_or(u64::MAX / 2)
            .saturating_add(1)
    }

    /// The GCRA step on one TAT.
    fn take(&self, tat: &mut u64, now: u64) -> Result<(), Limited> {
        let start = (*tat).max(now);
        let ahead = start - now;
        if ahead > self.tolerance {
            let wait = ahead - self.tolerance;
            return Err(Limited {
                retry_after_secs: wait.div_ceil(1_000_000_000).max(1),
            });
        }
        *tat = start.saturating_add(self.interval);
        Ok(())
    }

    /// One call from `key`. The clock is read only once the bucket is
    /// locked: read before, a thread delayed between the two (a loaded
    /// machine) would judge with a `now` older than the TAT another thread
    /// has since moved on, and refuse a call that is within its limit.
    fn check_at(&self, key: IpAddr, now: impl Fn() -> u64) -> Result<(), Limited> {
        if let Some(mut tat) = self.buckets.get_mut(&key) {
            return self.take(&mut tat, now());
        }
        self.maybe_sweep(now());
        if self.buckets.len() >= self.max_clients {
            let mut tat = self
                .overflow
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            return self.take(&mut tat, now());
        }
        let mut tat = self.buckets.entry(key).or_insert(0);
        self.take(&mut tat, now())
    }

    /// Drops clients whose bucket is full again, when one is due.
    fn maybe_sweep(&self, now: u64) {
        let last = self.last_sweep.load(Ordering::Relaxed);
        let full = self.buckets.len() >= self.max_clients;
        let every = if full { FULL_SWEEP_EVERY } else { SWEEP_EVERY };
        if now.saturating_sub(last) < every.as_nanos() as u64 {
            return;
        }
        // One sweeper at a time; the others go on without waiting.
        if self
            .last_sweep
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        self.buckets.retain(|_, tat| *tat > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const SEC: u64 = 1_000_000_000;

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(n))
    }

    #[test]
    fn a_bucket_allows_its_burst_then_refills_at_its_rate() {
        let l = RateLimiter::new(2.0, 3, 10);
        let t0 = 10 * SEC;
        for _ in 0..3 {
            assert_eq!(l.check_at(ip(1), || t0), Ok(()));
        }
        assert_eq!(
            l.check_at(ip(1), || t0),
            Err(Limited {
                retry_after_secs: 1
            })
        );
        // Another client has its own bucket.
        assert_eq!(l.check_at(ip(2), || t0), Ok(()));
        // One token back after T = 0.5 s, not before.
        assert!(l.check_at(ip(1), || t0 + SEC / 2 - 1).is_err());
        assert_eq!(l.check_at(ip(1), || t0 + SEC / 2), Ok(()));
        assert!(l.check_at(ip(1), || t0 + SEC / 2).is_err());
        // Idle long enough, the whole burst is back (and no more).
        let later = t0 + 100 * SEC;
        for _ in 0..3 {
            assert_eq!(l.check_at(ip(1), || later), Ok(()));
        }
        assert!(l.check_at(ip(1), || later).is_err());
    }

    #[test]
    fn retry_after_is_the_wait_rounded_up() {
        let l = RateLimiter::new(0.1, 1, 10);
        let t0 = SEC;
        assert_eq!(l.check_at(ip(1), || t0), Ok(()));
        assert_eq!(
            l.check_at(ip(1), || t0),
            Err(Limited {
                retry_after_secs: 10
            })
        );
        assert_eq!(
            l.check_at(ip(1), || t0 + 9 * SEC + 1),
            Err(Limited {
                retry_after_secs: 1
            })
        );
        assert_eq!(l.check_at(ip(1), || t0 + 10 * SEC), Ok(()));
        // A refused call costs nothing.
        let l = RateLimiter::new(1.0, 1, 10);
        assert_eq!(l.check_at(ip(1), || t0), Ok(()));
        for _ in 0..100 {
            assert!(l.check_at(ip(1), || t0).is_err());
        }
        assert_eq!(l.check_at(ip(1), || t0 + SEC), Ok(()));
    }

    #[test]
    fn the_table_is_bounded_and_newcomers_share_the_overflow_bucket() {
        let l = RateLimiter::new(1.0, 2, 4);
        let t0 = SEC;
        for n in 0..4 {
            assert_eq!(l.check_at(ip(n), || t0), Ok(()));
        }
        // Full of active clients: 1000 new addresses share one bucket of 2.
        let allowed = (100..1100)
            .filter(|&n| l.check_at(ip(n), || t0).is_ok())
            .count();
        assert_eq!(allowed, 2);
        assert_eq!(l.clients(), 4);
        // Known clients keep their own allowance.
        assert_eq!(l.check_at(ip(0), || t0), Ok(()));
        // Once the known ones are idle (full again), a sweep makes room.
        let later = t0 + 10 * SEC;
        assert_eq!(l.check_at(ip(5000), || later), Ok(()));
        assert_eq!(l.clients(), 1);
    }

    #[test]
    fn idle_clients_are_swept() {
        let l = RateLimiter::new(10.0, 1, 1000);
        let t0 = SEC;
        for n in 0..100 {
            l.check_at(ip(n), || t0).unwrap();
        }
        assert_eq!(l.clients(), 100);
        l.check_at(ip(1000), || t0 + SWEEP_EVERY.as_nanos() as u64 + SEC)
            .unwrap();
        assert_eq!(l.clients(), 1);
    }

    #[test]
    fn ipv6_is_keyed_by_its_64_and_mapped_v4_by_its_v4() {
        let a: Ipv6Addr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: Ipv6Addr = "2001:db8:1:2:ffff:1:2:3".parse().unwrap();
        let c: Ipv6Addr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a.into()), client_key(b.into()));
        assert_ne!(client_key(a.into()), client_key(c.into()));
        assert_eq!(
            client_key(a.into()),
            "2001:db8:1:2::".parse::<IpAddr>().unwrap()
        );
        let mapped: Ipv6Addr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(
            client_key(mapped.into()),
            "192.0.2.7".parse::<IpAddr>().unwrap()
        );
        let l = RateLimiter::new(1.0, 1, 10);
        assert!(l.check(a.into()).is_ok());
        assert!(l.check(b.into()).is_err(), "same /64, same bucket");
        assert!(l.check(c.into()).is_ok());
    }

    /// Threads racing on one bucket within its limit are never refused
    /// (the clock is read under the bucket's lock: read before it, a thread
    /// preempted in between judged with a stale `now`, and refused).
    #[test]
    fn racing_calls_within_the_limit_are_never_refused() {
        let l = std::sync::Arc::new(RateLimiter::new(1e9, 1_000_000, 10));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let l = l.clone();
                std::thread::spawn(move || (0..50_000).filter(|_| l.check(ip(1)).is_err()).count())
            })
            .collect();
        let refused: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(refused, 0);
    }

    #[test]
    fn extreme_settings_do_not_overflow() {
        let fast = RateLimiter::new(1e12, u32::MAX, 1);
        for _ in 0..1000 {
            assert!(fast.check_at(ip(1), || SEC).is_ok());
        }
        let slow = RateLimiter::new(1e-9, 1, 1);
        assert!(slow.check_at(ip(1), || SEC).is_ok());
        let r = slow.check_at(ip(1), || SEC).unwrap_err();
        assert!(r.retry_after_secs > 1_000_000);
    }
}
