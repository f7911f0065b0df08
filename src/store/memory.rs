//! The embedded store, used when no Redis is configured: the exact set of
//! revoked fingerprints in a DashMap, scope rules in the [`LocalCache`], and
//! every change written to the [`Journal`] (fsync'd) before it is
//! acknowledged. At start the journal is replayed; [`MemoryStore::maintain`]
//! (run periodically by the server) drops expired rules, rebuilds the bloom
//! filter without them and compacts the journal to the live rules.
//!
//! Memory: one entry is a 16-byte fingerprint and an 8-byte expiry in the
//! map, plus about 1.2 bytes of bloom filter at a 1% false-positive rate.

use std::path::Path;

use dashmap::DashMap;

use super::journal::{Journal, ReplayReport};
use super::{
    now_unix, Applied, LocalCache, RevocationCommand, RevocationStore, RevocationTarget,
    StoreError, StoreStatus, TokenRule,
};
use crate::credentials::Fingerprint;

/// The embedded revocation store.
pub struct MemoryStore {
    tokens: DashMap<Fingerprint, u64>,
    cache: LocalCache,
    journal: Journal,
}

/// What [`MemoryStore::maintain`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Maintenance {
    /// Token rules dropped as expired.
    pub expired_tokens: usize,
    /// Scope rules dropped as expired.
    pub expired_scopes: usize,
    /// Live rules written back to the compacted journal.
    pub live: usize,
}

impl MemoryStore {
    /// Opens the journal at `path`, replays it, and sizes the bloom filter for
    /// `capacity` revoked tokens at `fp_rate`.
    pub fn open(
        path: &Path,
        capacity: usize,
        fp_rate: f64,
    ) -> std::io::Result<(Self, ReplayReport)> {
        let tokens = DashMap::new();
        let cache = LocalCache::new(capacity, fp_rate);
        let now = now_unix();
        let (journal, report) = Journal::open_with(path, |cmd| {
            apply_to(&tokens, &cache, &cmd, now);
        })?;
        let store = MemoryStore {
            tokens,
            cache,
            journal,
        };
        store.rebuild_bloom();
        Ok((store, report))
    }

    /// Applies a command to memory only; true when it changed anything.
    fn apply_local(&self, cmd: &RevocationCommand, now: u64) -> bool {
        apply_to(&self.tokens, &self.cache, cmd, now)
    }

    /// Would this command change anything? (Idempotent revokes skip the journal.)
    fn would_change(&self, cmd: &RevocationCommand, now: u64) -> bool {
        match cmd {
            RevocationCommand::Token(rule) => {
                rule.expires_at > now
                    && self
                        .tokens
                        .get(&rule.fingerprint)
                        .is_none_or(|exp| *exp < rule.expires_at)
            }
            RevocationCommand::Scope(rule) => {
                rule.expires_at > now
                    && self.cache.scope_rule(&rule.key).is_none_or(|r| {
                        r.revoked_at < rule.revoked_at || r.expires_at < rule.expires_at
                    })
            }
            RevocationCommand::Remove(RevocationTarget::Token(fp)) => self.tokens.contains_key(fp),
            RevocationCommand::Remove(RevocationTarget::Scope(key)) => {
                self.cache.scope_rule(key).is_some()
            }
        }
    }

    fn rebuild_bloom(&self) {
        self.cache.rebuild(self.tokens.len(), |insert| {
            for e in self.tokens.iter() {
                insert(e.key());
            }
        });
    }

    /// Drops expired rules, rebuilds the bloom filter and compacts the journal.
    pub async fn maintain(&self) -> Result<Maintenance, StoreError> {
        let now = now_unix();
        let before = self.tokens.len();
        self.tokens.retain(|_, exp| *exp > now);
        let expired_tokens = before - self.tokens.len();
        let expired_scopes = self.cache.expire_scopes(now);
        self.rebuild_bloom();
        // Snapshot the live rules: appends that race with it are ordered by the
        // journal's writer after the rewrite, or are already in the snapshot.
        let mut live: Vec<RevocationCommand> = self
            .tokens
            .iter()
            .map(|e| {
                RevocationCommand::Token(TokenRule {
                    fingerprint: *e.key(),
                    expires_at: *e.value(),
                })
            })
            .collect();
        live.extend(
            self.cache
                .scope_rules()
                .into_iter()
                .map(RevocationCommand::Scope),
        );
        let count = live.len();
        self.journal.rewrite(live).await?;
        Ok(Maintenance {
            expired_tokens,
            expired_scopes,
            live: count,
        })
    }

    /// Token rules held.
    pub fn token_count(&self) -> usize {
        self.tokens.len()
    }
}

/// Applies a command to the in-memory state; true when it changed anything.
fn apply_to(
    tokens: &DashMap<Fingerprint, u64>,
    cache: &LocalCache,
    cmd: &RevocationCommand,
    now: u64,
) -> bool {
    match cmd {
        RevocationCommand::Token(rule) => {
            if rule.expires_at <= now {
                return false;
            }
            let mut changed = false;
            tokens
                .entry(rule.fingerprint)
                .and_modify(|exp| {
                    if rule.expires_at > *exp {
                        *exp = rule.expires_at;
                    }
                })
                .or_insert_with(|| {
                    changed = true;
                    rule.expires_at
                });
            cache.insert_token(&rule.fingerprint);
            changed
        }
        RevocationCommand::Scope(rule) => rule.expires_at > now && cache.upsert_scope(rule),
        RevocationCommand::Remove(RevocationTarget::Token(fp)) => tokens.remove(fp).is_some(),
        RevocationCommand::Remove(RevocationTarget::Scope(key)) => cache.remove_scope(key),
    }
}

#[async_trait::async_trait]
impl RevocationStore for MemoryStore {
    async fn apply(&self, cmd: RevocationCommand) -> Result<Applied, StoreError> {
        let now = now_unix();
        if !self.would_change(&cmd, now) {
            return Ok(Applied::Unchanged);
        }
        self.journal.append(&cmd).await?;
        Ok(if self.apply_local(&cmd, now) {
            Applied::Changed
        } else {
            Applied::Unchanged
        })
    }

    async fn is_token_revoked(&self, fp: &Fingerprint) -> Result<bool, StoreError> {
        let now = now_unix();
        Ok(self.tokens.get(fp).is_some_and(|exp| *exp > now))
    }

    fn cache(&self) -> &LocalCache {
        &self.cache
    }

    fn status(&self) -> StoreStatus {
        StoreStatus {
            ready: true,
            connected: true,
            staleness: None,
            journal_backlog: 0,
            token_rules: self.tokens.len() as u64,
            scope_rules: self.cache.scope_rule_count() as u64,
        }
    }

    async fn flush(&self) -> Result<(), StoreError> {
        // Every acknowledged append is already fsync'd; closing waits for the
        // writer to finish whatever is queued.
        self.journal.close();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{ScopeKey, ScopeRule};

    fn token(i: u8, exp: u64) -> RevocationCommand {
        RevocationCommand::Token(TokenRule {
            fingerprint: Fingerprint::from_bytes([i; 16]),
            expires_at: exp,
        })
    }

    #[tokio::test]
    async fn revocations_survive_reopen_and_are_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("j");
        let later = now_unix() + 3600;
        {
            let (s, _) = MemoryStore::open(&p, 100, 0.01).unwrap();
            assert_eq!(s.apply(token(1, later)).await.unwrap(), Applied::Changed);
            assert_eq!(s.apply(token(1, later)).await.unwrap(), Applied::Unchanged);
            let scope = ScopeRule {
                key: ScopeKey {
                    sub: "u".into(),
                    org: None,
                    provider: Some("p".into()),
                },
                revoked_at: now_unix(),
                expires_at: later,
            };
            assert_eq!(
                s.apply(RevocationCommand::Scope(scope.clone()))
                    .await
                    .unwrap(),
                Applied::Changed
            );
            assert_eq!(
                s.apply(RevocationCommand::Scope(scope)).await.unwrap(),
                Applied::Unchanged
            );
        }
        let (s, report) = MemoryStore::open(&p, 100, 0.01).unwrap();
        assert_eq!(report.records, 2);
        let fp = Fingerprint::from_bytes([1; 16]);
        assert!(s.cache().may_contain(&fp));
        assert!(s.is_token_revoked(&fp).await.unwrap());
        assert_eq!(s.cache().scope_rule_count(), 1);
    }

    #[tokio::test]
    async fn maintenance_drops_expired_rules_from_memory_bloom_and_journal() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("j");
        let now = now_unix();
        let (s, _) = MemoryStore::open(&p, 100, 0.0001).unwrap();
        s.apply(token(1, now + 3600)).await.unwrap();
        s.apply(token(2, now + 1)).await.unwrap();
        // Let token 2 expire.
        tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
        let m = s.maintain().await.unwrap();
        assert_eq!(m.expired_tokens, 1);
        assert_eq!(m.live, 1);
        assert!(!s.cache().may_contain(&Fingerprint::from_bytes([2; 16])));
        drop(s);
        let (s, report) = MemoryStore::open(&p, 100, 0.01).unwrap();
        assert_eq!(report.records, 1);
        assert_eq!(s.token_count(), 1);
    }

    #[tokio::test]
    async fn removal_unrevokes() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = MemoryStore::open(&dir.path().join("j"), 100, 0.01).unwrap();
        let fp = Fingerprint::from_bytes([5; 16]);
        s.apply(token(5, now_unix() + 60)).await.unwrap();
        let rm = RevocationCommand::Remove(RevocationTarget::Token(fp));
        assert_eq!(s.apply(rm.clone()).await.unwrap(), Applied::Changed);
        assert_eq!(s.apply(rm).await.unwrap(), Applied::Unchanged);
        assert!(!s.is_token_revoked(&fp).await.unwrap());
    }
}
