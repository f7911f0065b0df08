//! The exact lookup behind a bloom hit: a small cache of confirmed answers,
//! and one Redis `GET` per fingerprint at a time however many requests ask.
//!
//! Like pingora's `RTCache`, concurrent lookups of the same fingerprint share
//! one flight: the first caller's `GET` answers them all (a `OnceCell`, so if
//! that caller is cancelled a waiter takes over). Answers are cached for
//! `store.confirm_ttl`; the cache is bounded (expired entries are swept when
//! it fills, and past the bound answers are simply not cached).
//!
//! A revocation that arrives while a lookup is in flight must not be
//! overwritten by that lookup's older "not revoked": every token event bumps
//! an epoch, and an answer is cached only if the epoch did not move during
//! its flight. Token events also drop the fingerprint's cached answer.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use tokio::sync::OnceCell;

use crate::credentials::Fingerprint;

/// Most confirmed answers kept.
pub const MAX_CONFIRMED: usize = 65_536;

type Flight = Arc<OnceCell<Result<bool, String>>>;

/// Confirmed answers and in-flight lookups.
pub struct Confirmed {
    answers: DashMap<Fingerprint, (bool, Instant)>,
    flights: DashMap<Fingerprint, Flight>,
    ttl: Duration,
    cap: usize,
    epoch: AtomicU64,
}

impl Confirmed {
    /// A cache keeping answers for `ttl`, at most `cap` of them.
    pub fn new(ttl: Duration, cap: usize) -> Confirmed {
        Confirmed {
            answers: DashMap::new(),
            flights: DashMap::new(),
            ttl,
            cap,
            epoch: AtomicU64::new(0),
        }
    }

    /// A fresh cached answer, if any.
    pub fn cached(&self, fp: &Fingerprint) -> Option<bool> {
        let e = self.answers.get(fp)?;
        (e.1.elapsed() < self.ttl).then_some(e.0)
    }

    /// Forgets what is known about `fp` (a token event concerning it).
    pub fn invalidate(&self, fp: &Fingerprint) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.answers.remove(fp);
    }

    /// Forgets everything (after a full resync).
    pub fn clear(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.answers.clear();
    }

    /// Drops expired answers.
    pub fn sweep(&self) {
        let ttl = self.ttl;
        self.answers.retain(|_, (_, at)| at.elapsed() < ttl);
    }

    /// Answers held (for tests and metrics).
    pub fn len(&self) -> usize {
        self.answers.len()
    }

    fn remember(&self, fp: Fingerprint, revoked: bool) {
        if self.ttl.is_zero() {
            return;
        }
        if self.answers.len() >= self.cap {
            self.sweep();
            if self.answers.len() >= self.cap {
                return;
            }
        }
        self.answers.insert(fp, (revoked, Instant::now()));
    }

    /// The cached answer, or `lookup`'s, sharing one flight per fingerprint.
    pub async fn get_or_lookup<F, Fut>(&self, fp: &Fingerprint, lookup: F) -> Result<bool, String>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<bool, String>>,
    {
        if let Some(answer) = self.cached(fp) {
            return Ok(answer);
        }
        let flight: Flight = self
            .flights
            .entry(*fp)
            .or_insert_with(|| Arc::new(OnceCell::new()))
            .clone();
        let result = flight
            .get_or_init(|| async {
                let epoch = self.epoch.load(Ordering::Acquire);
                let r = lookup().await;
                if let Ok(revoked) = r {
                    if self.epoch.load(Ordering::Acquire) == epoch {
                        self.remember(*fp, revoked);
                    }
                }
                r
            })
            .await
            .clone();
        self.flights.remove_if(fp, |_, f| Arc::ptr_eq(f, &flight));
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[tokio::test]
    async fn concurrent_lookups_share_one_flight_and_answers_are_cached() {
        let c = Arc::new(Confirmed::new(Duration::from_secs(60), 10));
        let calls = Arc::new(AtomicUsize::new(0));
        let fp = Fingerprint::from_bytes([1; 16]);
        let tasks: Vec<_> = (0..32)
            .map(|_| {
                let c = c.clone();
                let calls = calls.clone();
                tokio::spawn(async move {
                    c.get_or_lookup(&fp, || async {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok(true)
                    })
                    .await
                })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap(), Ok(true));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(c.cached(&fp), Some(true));
        c.invalidate(&fp);
        assert_eq!(c.cached(&fp), None);
    }

    #[tokio::test]
    async fn an_answer_overtaken_by_an_event_is_not_cached_and_the_cache_is_bounded() {
        let c = Confirmed::new(Duration::from_secs(60), 2);
        let fp = Fingerprint::from_bytes([2; 16]);
        let r = c
            .get_or_lookup(&fp, || async {
                c.invalidate(&Fingerprint::from_bytes([9; 16]));
                Ok(false)
            })
            .await;
        assert_eq!(r, Ok(false));
        assert_eq!(c.cached(&fp), None);
        for i in 0..5u8 {
            let fp = Fingerprint::from_bytes([i + 10; 16]);
            c.get_or_lookup(&fp, || async { Ok(false) }).await.unwrap();
        }
        assert_eq!(c.len(), 2);
        let err = c
            .get_or_lookup(&fp, || async { Err("down".to_string()) })
            .await;
        assert!(err.is_err());
    }
}
