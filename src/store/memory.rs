//! The embedded store, used when no Redis is configured: the exact set of
//! revoked fingerprints in a DashMap, scope rules in the [`LocalCache`], and
//! every change written to the [`Journal`] (fsync'd) before it is
//! acknowledged. At start the journal is replayed; [`MemoryStore::maintain`]
//! (run periodically by the server) drops expired rules, rebuilds the bloom
//! filter without them and compacts the journal to the live rules.
//!
//! Compaction never loses an acknowledged rule (issue 10): an apply holds a
//! shared *gate* from its journal append until its memory update, and
//! compaction takes the gate exclusively only to take the journal's
//! [`Mark`](super::journal::Mark), so every record before the mark is in the
//! maps it then snapshots, and every record after it is copied into the new
//! journal by [`Journal::install`]. Applies wait at most one fsync batch for
//! that exclusive moment (tokio's lock is fair, so compaction is not starved
//! either); the snapshot itself is written while applies go on. The snapshot
//! is streamed to disk (on a blocking-capable thread), copying token rules
//! out of the map in passes of at most 4M (96 MiB), so compacting 10M rules
//! needs no full copy of them in memory and holds no shard lock across I/O.
//!
//! A bulk import's batch ([`RevocationStore::apply_batch`]) is one journal
//! job: every record that changes anything is written with one `write` and
//! one `fdatasync`, then the whole batch is applied to memory, under the
//! same gate as a single apply.
//!
//! Replay at start fills the map only (sized from the journal's length) and
//! builds the bloom filter once from it afterwards.
//!
//! Concurrent applies of a rule and of its removal are ordered by the journal
//! for replay and by the map for memory; the two orders can differ, as they
//! always could (neither caller was answered before the other was sent).
//!
//! Memory: one entry is a 16-byte fingerprint and an 8-byte expiry in the
//! map, plus about 1.2 bytes of bloom filter at a 1% false-positive rate.

use std::path::Path;

use dashmap::DashMap;

use super::family::Families;
use super::journal::{Journal, ReplayReport, Snapshot};
use super::principal::Principals;
use super::{
    now_unix, Applied, Binding, LocalCache, Member, RevocationCommand, RevocationStore,
    RevocationTarget, StoreError, StoreStatus, TokenRule,
};
use crate::credentials::Fingerprint;

/// Bytes of a token rule in the journal (see [`super::journal::record`]).
const TOKEN_RECORD_BYTES: u64 = 33;

/// The embedded revocation store.
pub struct MemoryStore {
    tokens: DashMap<Fingerprint, u64>,
    cache: LocalCache,
    /// Bindings, and the token rules scope rules derive from them
    /// ([`super::principal`]).
    principals: Principals,
    /// Token families ([`super::family`]); what their rules revoke is in
    /// `tokens`.
    families: Families,
    journal: Journal,
    /// Shared by an apply from its journal append to its memory update;
    /// exclusive while compaction takes its mark (see the module doc).
    gate: tokio::sync::RwLock<()>,
    /// One compaction at a time.
    compaction: tokio::sync::Mutex<()>,
    /// Most token rules copied out of the map in one snapshot pass.
    pass_size: usize,
    /// Test seam: the next apply stops between its append and its memory
    /// update, says so on the first `Notify` and waits for the second.
    #[cfg(test)]
    pause_after_append: std::sync::Mutex<Option<PausePoint>>,
}

#[cfg(test)]
type PausePoint = (
    std::sync::Arc<tokio::sync::Notify>,
    std::sync::Arc<tokio::sync::Notify>,
);

/// What [`MemoryStore::maintain`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Maintenance {
    /// Token rules dropped as expired.
    pub expired_tokens: usize,
    /// Scope rules dropped as expired.
    pub expired_scopes: usize,
    /// Live rules written back to the compacted journal.
    pub live: usize,
    /// Records journaled while the snapshot was written, copied after it.
    pub tail: u64,
}

impl MemoryStore {
    /// Opens the journal at `path`, replays it, and sizes the bloom filter for
    /// `capacity` revoked tokens at `fp_rate`.
    pub fn open(
        path: &Path,
        capacity: usize,
        fp_rate: f64,
    ) -> std::io::Result<(Self, ReplayReport)> {
        // Sized once for what the file can hold (a token rule is the
        // smallest common record), instead of rehashing as it grows.
        let estimate = std::fs::metadata(path)
            .map(|m| m.len() / TOKEN_RECORD_BYTES)
            .unwrap_or(0)
            .min(1 << 27) as usize;
        let tokens: DashMap<Fingerprint, u64> = DashMap::with_capacity(estimate);
        let cache = LocalCache::new(capacity, fp_rate);
        let principals = Principals::new();
        let families = Families::new();
        let now = now_unix();
        let (journal, report) = Journal::open_with(path, |cmd| match cmd {
            // The bloom filter is built once from the map below; filling it
            // record by record as well doubled the cost of a replay.
            RevocationCommand::Token(rule) => {
                if rule.expires_at > now {
                    tokens
                        .entry(rule.fingerprint)
                        .and_modify(|exp| *exp = (*exp).max(rule.expires_at))
                        .or_insert(rule.expires_at);
                }
            }
            other => {
                let state = State {
                    tokens: &tokens,
                    cache: &cache,
                    principals: &principals,
                    families: &families,
                };
                state.apply(&other, now, false);
            }
        })?;
        // Sized for a journal of token rules only: give back what other
        // records (bindings, scope rules) left unused.
        if tokens.len() < tokens.capacity() / 2 {
            tokens.shrink_to_fit();
        }
        // Derived rules are not journaled: derived once here from what was
        // replayed (the bloom filter built below includes them).
        for sub in cache.scope_subjects() {
            principals.rederive(&sub, &cache.scope_rules_of(&sub), now);
        }
        principals.shrink();
        let store = MemoryStore {
            tokens,
            cache,
            principals,
            families,
            journal,
            gate: tokio::sync::RwLock::new(()),
            compaction: tokio::sync::Mutex::new(()),
            pass_size: 4 << 20,
            #[cfg(test)]
            pause_after_append: std::sync::Mutex::new(None),
        };
        store.rebuild_bloom();
        Ok((store, report))
    }

    /// Applies a command to memory only; true when it changed anything.
    fn apply_local(&self, cmd: &RevocationCommand, now: u64) -> bool {
        self.state().apply(cmd, now, true)
    }

    fn state(&self) -> State<'_> {
        State {
            tokens: &self.tokens,
            cache: &self.cache,
            principals: &self.principals,
            families: &self.families,
        }
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
            RevocationCommand::Bind(b) => {
                b.expires_at > now && self.principals.get(&b.fingerprint, now).as_ref() != Some(b)
            }
            RevocationCommand::Remove(RevocationTarget::Binding(fp)) => {
                self.principals.get(fp, now).is_some()
            }
            RevocationCommand::Join(m) => self.families.would_join(m, now),
            RevocationCommand::FamilyOf(_) => true,
            RevocationCommand::Family(rule) => {
                self.families.would_revoke(rule, now)
                    || rule
                        .members
                        .iter()
                        .any(|t| !self.tokens.contains_key(&t.fingerprint))
            }
        }
    }

    fn rebuild_bloom(&self) {
        let live = self.tokens.len() + self.principals.derived_count();
        self.cache.rebuild(live, |insert| {
            for e in self.tokens.iter() {
                insert(e.key());
            }
            self.principals.for_each_derived(|fp| insert(fp));
        });
    }

    /// Drops expired rules, rebuilds the bloom filter and compacts the
    /// journal without losing a rule acknowledged before or during it.
    pub async fn maintain(&self) -> Result<Maintenance, StoreError> {
        let _one = self.compaction.lock().await;
        let now = now_unix();
        // Counted inside, not as a difference of lengths: applies racing
        // with it change the length (that difference once underflowed).
        let mut expired_tokens = 0;
        self.tokens.retain(|_, exp| {
            let live = *exp > now;
            expired_tokens += usize::from(!live);
            live
        });
        let expired_scopes = self.cache.expire_scopes(now);
        self.principals.expire(now);
        self.families.expire(now);
        self.rebuild_bloom();
        let mark = {
            // No apply is between its append and its memory update now, so
            // every record before the mark is in the maps snapshotted below.
            let _quiet = self.gate.write().await;
            self.journal.mark().await?
        };
        let mut snapshot = self.journal.snapshot(mark)?;
        let on_worker = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        // Writing millions of records is seconds of blocking I/O: let the
        // runtime move this worker's other tasks elsewhere meanwhile.
        let live = if on_worker {
            tokio::task::block_in_place(|| self.write_snapshot(&mut snapshot))
        } else {
            self.write_snapshot(&mut snapshot)
        }?;
        let installed = self.journal.install(snapshot).await?;
        Ok(Maintenance {
            expired_tokens,
            expired_scopes,
            live,
            tail: installed.tail_records,
        })
    }

    /// Streams the live rules into a compaction snapshot; returns their count.
    ///
    /// Token rules are copied out of the map in passes (by the first byte of
    /// the fingerprint, uniform for a keyed hash) and encoded after each
    /// pass's locks are released: an apply never waits for encoding or disk
    /// I/O on a shard lock, and the copy held at once stays a fraction of the
    /// map (24 bytes per rule, 4M rules at most per pass: 96 MiB; each pass
    /// scans the whole map, so fewer, larger passes are cheaper). A rule added
    /// between passes may be missed or copied twice: missed ones are in the
    /// journal's tail after the mark, and a duplicate is harmless on replay.
    fn write_snapshot(&self, snapshot: &mut Snapshot) -> std::io::Result<usize> {
        let passes = self.tokens.len().div_ceil(self.pass_size).clamp(1, 16);
        let mut live = 0;
        let mut chunk: Vec<(Fingerprint, u64)> = Vec::new();
        for pass in 0..passes {
            chunk.clear();
            chunk.extend(
                self.tokens
                    .iter()
                    .filter(|e| passes == 1 || e.key().as_bytes()[0] as usize % passes == pass)
                    .map(|e| (*e.key(), *e.value())),
            );
            for &(fingerprint, expires_at) in &chunk {
                snapshot.push(&RevocationCommand::Token(TokenRule {
                    fingerprint,
                    expires_at,
                }))?;
            }
            live += chunk.len();
        }
        for rule in self.cache.scope_rules() {
            snapshot.push(&RevocationCommand::Scope(rule))?;
            live += 1;
        }
        // A chunk (a pass) at a time, as an export walks them: never a copy
        // of every binding or membership at once.
        let now = now_unix();
        let mut from = Some(0);
        while let Some(f) = from {
            let (page, next) = self.principals.page(f, now);
            for binding in page {
                snapshot.push(&RevocationCommand::Bind(binding))?;
                live += 1;
            }
            from = next;
        }
        let passes = passes_for(self.families.len(), FAMILY_PASS);
        for pass in 0..passes {
            for cmd in self.families.pass(now, pass, passes) {
                snapshot.push(&cmd)?;
                live += 1;
            }
        }
        Ok(live)
    }

    /// Token rules held (explicit ones; derived rules are
    /// [`MemoryStore::derived_count`]).
    pub fn token_count(&self) -> usize {
        self.tokens.len()
    }

    /// Token-family members held.
    pub fn family_members(&self) -> usize {
        self.families.len()
    }

    /// Token rules derived from bindings by scope rules.
    pub fn derived_count(&self) -> usize {
        self.principals.derived_count()
    }
}

/// The in-memory state a command changes.
struct State<'a> {
    tokens: &'a DashMap<Fingerprint, u64>,
    cache: &'a LocalCache,
    principals: &'a Principals,
    families: &'a Families,
}

impl State<'_> {
    /// Applies a command; true when it changed anything. `derive`:
    /// re-derive the token rules a scope or binding change implies (off
    /// during replay, which derives once at its end).
    fn apply(&self, cmd: &RevocationCommand, now: u64, derive: bool) -> bool {
        let (tokens, cache, principals) = (self.tokens, self.cache, self.principals);
        let rederive = |sub: &str| {
            if derive {
                for rule in principals.rederive(sub, &cache.scope_rules_of(sub), now) {
                    cache.insert_token(&rule.fingerprint);
                }
            }
        };
        match cmd {
            RevocationCommand::Token(rule) => self.revoke_token(rule, now),
            RevocationCommand::Scope(rule) => {
                let changed = rule.expires_at > now && cache.upsert_scope(rule);
                if changed {
                    rederive(&rule.key.sub);
                }
                changed
            }
            RevocationCommand::Remove(RevocationTarget::Token(fp)) => tokens.remove(fp).is_some(),
            RevocationCommand::Remove(RevocationTarget::Scope(key)) => {
                let changed = cache.remove_scope(key);
                if changed {
                    rederive(&key.sub);
                }
                changed
            }
            RevocationCommand::Bind(b) => bind(cache, principals, b, now, derive),
            RevocationCommand::Remove(RevocationTarget::Binding(fp)) => principals.unbind(fp),
            // Resolved here when it comes from elsewhere (`apply` resolves
            // before journaling).
            RevocationCommand::FamilyOf(f) => {
                let resolved = f.resolve(self.families.get(&f.token.fingerprint, now).as_ref());
                self.apply(&resolved, now, derive)
            }
            RevocationCommand::Join(m) => {
                let (changed, covered) = self.families.join(m, now);
                match covered {
                    Some(rule) => self.revoke_token(&rule, now) || changed,
                    None => changed,
                }
            }
            RevocationCommand::Family(rule) => {
                let (mut changed, covered) = self.families.revoke(rule, now);
                for t in covered.iter().chain(&rule.members) {
                    changed |= self.revoke_token(t, now);
                }
                changed
            }
        }
    }

    /// A token rule into the exact set and the bloom filter.
    fn revoke_token(&self, rule: &TokenRule, now: u64) -> bool {
        if rule.expires_at <= now {
            return false;
        }
        let mut changed = false;
        self.tokens
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
        self.cache.insert_token(&rule.fingerprint);
        changed
    }
}

/// Records a binding; a scope rule already there may cover it at once.
fn bind(cache: &LocalCache, principals: &Principals, b: &Binding, now: u64, derive: bool) -> bool {
    if b.expires_at <= now {
        return false;
    }
    let rules = if derive {
        cache.scope_rules_of(&b.who.sub)
    } else {
        Vec::new()
    };
    let (changed, derived) = principals.bind(b, &rules, now);
    if let Some(rule) = derived {
        cache.insert_token(&rule.fingerprint);
    }
    changed
}

/// Memberships (and their families' rules) per pass of an export or a
/// compaction, as tokens per pass of `export_tokens`: ~104 MiB of commands
/// at most at once. Smaller passes held more, not less: each pass's vector
/// stayed resident while the next was built (31 passes of 32,768: +180 MiB
/// exporting 1,000,000 memberships, against +96 MiB in one pass;
/// `benches/export_memory.sh`).
const FAMILY_PASS: usize = 1 << 20;

/// Passes a walk of `len` entries takes at about `per_pass` each (at most
/// 256: a pass is a fingerprint's first byte modulo the passes).
fn passes_for(len: usize, per_pass: usize) -> usize {
    len.div_ceil(per_pass).clamp(1, 256)
}

/// An export cursor "<pass>/<passes>" (`None`: the first pass of a walk of
/// `len` entries, about `per_pass` per pass).
fn pass_cursor(
    cursor: Option<&str>,
    len: usize,
    per_pass: usize,
) -> Result<(usize, usize), super::ListError> {
    let Some(c) = cursor else {
        return Ok((0, passes_for(len, per_pass)));
    };
    let parsed = c
        .split_once('/')
        .and_then(|(p, n)| Some((p.parse::<usize>().ok()?, n.parse::<usize>().ok()?)));
    match parsed {
        Some((p, n)) if (1..=256).contains(&n) && p < n => Ok((p, n)),
        _ => Err(super::ListError::BadCursor),
    }
}

#[async_trait::async_trait]
impl RevocationStore for MemoryStore {
    async fn list_tokens(
        &self,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<super::TokenPage, super::ListError> {
        // The cursor is the last fingerprint of the previous page (keyset):
        // a walk never repeats or skips a rule that exists throughout it.
        // Sorting every call is O(n log n): fine for an operator's listing.
        let after = match cursor {
            None => None,
            Some(c) => Some(Fingerprint::from_hex(c).ok_or(super::ListError::BadCursor)?),
        };
        let now = now_unix();
        let mut all: Vec<(Fingerprint, u64)> = self
            .tokens
            .iter()
            .filter(|e| *e.value() > now && after.is_none_or(|a| *e.key() > a))
            .map(|e| (*e.key(), *e.value()))
            .collect();
        all.sort_unstable();
        let more = all.len() > limit;
        all.truncate(limit);
        let next = if more {
            all.last().map(|(fp, _)| fp.to_hex())
        } else {
            None
        };
        let tokens = all
            .into_iter()
            .map(|(fingerprint, expires_at)| super::ListedToken {
                fingerprint,
                expires_at,
                source: "journal",
            })
            .collect();
        Ok(super::TokenPage { tokens, next })
    }

    async fn apply(&self, cmd: RevocationCommand) -> Result<Applied, StoreError> {
        let _applying = self.gate.read().await;
        let now = now_unix();
        // Journaled as what it resolves to.
        let cmd = match cmd {
            RevocationCommand::FamilyOf(f) => {
                f.resolve(self.families.get(&f.token.fingerprint, now).as_ref())
            }
            other => other,
        };
        if !self.would_change(&cmd, now) {
            return Ok(Applied::Unchanged);
        }
        self.journal.append(&cmd).await?;
        #[cfg(test)]
        {
            let pause = self.pause_after_append.lock().unwrap().take();
            if let Some((paused, resume)) = pause {
                paused.notify_one();
                resume.notified().await;
            }
        }
        Ok(if self.apply_local(&cmd, now) {
            Applied::Changed
        } else {
            Applied::Unchanged
        })
    }

    async fn apply_batch(&self, cmds: Vec<RevocationCommand>) -> Result<Vec<Applied>, StoreError> {
        // One journal job for the whole batch: one write, one fsync. The
        // gate is held across it as for one apply, so a compaction waits
        // at most one batch's fsync.
        let _applying = self.gate.read().await;
        let now = now_unix();
        let changing: Vec<bool> = cmds.iter().map(|c| self.would_change(c, now)).collect();
        self.journal
            .append_batch(
                cmds.iter()
                    .zip(&changing)
                    .filter(|(_, &c)| c)
                    .map(|(cmd, _)| cmd),
            )
            .await?;
        Ok(cmds
            .iter()
            .zip(changing)
            .map(|(cmd, changing)| {
                if changing && self.apply_local(cmd, now) {
                    Applied::Changed
                } else {
                    Applied::Unchanged
                }
            })
            .collect())
    }

    async fn export_families(
        &self,
        cursor: Option<&str>,
    ) -> Result<super::ExportPage, super::ListError> {
        // In passes as `export_tokens`; the rules' `revoked_at` is not
        // kept: the export's is now.
        let (pass, passes) = pass_cursor(cursor, self.families.len(), FAMILY_PASS)?;
        let cmds = self.families.pass(now_unix(), pass, passes);
        let next = (pass + 1 < passes).then(|| format!("{}/{passes}", pass + 1));
        Ok(super::ExportPage { cmds, next })
    }

    async fn export_tokens(
        &self,
        cursor: Option<&str>,
    ) -> Result<super::TokenPage, super::ListError> {
        // Cursor "<pass>/<passes>": the map is walked in passes by the
        // fingerprint's first byte (uniform for a keyed hash), each copying
        // about 1M rules (24 MiB) at most, so an export of 10M rules holds
        // a tenth of them at once and never sorts them. A rule added or
        // removed during the walk may be missed or not, as with any walk
        // of a live set; one that exists throughout is in exactly one pass.
        let (pass, passes) = pass_cursor(cursor, self.tokens.len(), 1 << 20)?;
        let now = now_unix();
        let tokens = self
            .tokens
            .iter()
            .filter(|e| {
                *e.value() > now && (passes == 1 || e.key().as_bytes()[0] as usize % passes == pass)
            })
            .map(|e| super::ListedToken {
                fingerprint: *e.key(),
                expires_at: *e.value(),
                source: "journal",
            })
            .collect();
        let next = (pass + 1 < passes).then(|| format!("{}/{passes}", pass + 1));
        Ok(super::TokenPage { tokens, next })
    }

    async fn export_bindings(
        &self,
        cursor: Option<&str>,
    ) -> Result<super::ExportPage, super::ListError> {
        // The cursor is a slot index (slots do not move; `Principals::page`).
        let from = match cursor {
            None => 0,
            Some(c) => c
                .parse::<usize>()
                .map_err(|_| super::ListError::BadCursor)?,
        };
        let (page, next) = self.principals.page(from, now_unix());
        Ok(super::ExportPage {
            cmds: page.into_iter().map(RevocationCommand::Bind).collect(),
            next: next.map(|n| n.to_string()),
        })
    }

    async fn is_token_revoked(&self, fp: &Fingerprint) -> Result<bool, StoreError> {
        let now = now_unix();
        Ok(self.tokens.get(fp).is_some_and(|exp| *exp > now)
            || self.principals.is_derived_revoked(fp, now))
    }

    async fn binding(&self, fp: &Fingerprint) -> Result<Option<Binding>, StoreError> {
        Ok(self.principals.get(fp, now_unix()))
    }

    async fn member(&self, fp: &Fingerprint) -> Result<Option<Member>, StoreError> {
        Ok(self.families.get(fp, now_unix()))
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
            bindings: self.principals.len() as u64,
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
    async fn a_batch_is_answered_per_command_written_once_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("j");
        let later = now_unix() + 3600;
        let scope = RevocationCommand::Scope(ScopeRule {
            key: ScopeKey {
                sub: "u".into(),
                org: None,
                provider: None,
            },
            revoked_at: now_unix(),
            expires_at: later,
        });
        {
            let (s, _) = MemoryStore::open(&p, 100, 0.01).unwrap();
            s.apply(token(1, later)).await.unwrap();
            let batch = vec![
                token(1, later),     // already there
                token(2, later),     // new
                token(2, later),     // twice in one batch
                token(3, 1),         // expired
                scope.clone(),       // new
                token(4, later + 1), // new
            ];
            let answers = s.apply_batch(batch).await.unwrap();
            use Applied::{Changed as C, Unchanged as U};
            assert_eq!(answers, vec![U, C, U, U, C, C]);
            // Appended: the first apply, then the batch's four changing
            // records (token 2 twice: both were new when judged).
            assert_eq!(s.journal.appended_since_rewrite(), 1 + 4);
            assert!(s.apply_batch(Vec::new()).await.unwrap().is_empty());
        }
        let (s, report) = MemoryStore::open(&p, 100, 0.01).unwrap();
        assert_eq!(report.records, 5);
        assert_eq!(s.token_count(), 3);
        assert_eq!(s.cache().scope_rule_count(), 1);
        for i in [1, 2, 4] {
            assert!(s
                .is_token_revoked(&Fingerprint::from_bytes([i; 16]))
                .await
                .unwrap());
        }
    }

    #[tokio::test]
    async fn an_export_of_bindings_and_families_walks_chunks_and_refuses_foreign_cursors() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = MemoryStore::open(&dir.path().join("j"), 100, 0.01).unwrap();
        let later = now_unix() + 600;
        let batch: Vec<RevocationCommand> = (0..500u32)
            .map(|i| {
                RevocationCommand::Bind(Binding {
                    fingerprint: fp(i, 3),
                    who: crate::store::ScopeKey {
                        sub: format!("u{i}"),
                        org: None,
                        provider: None,
                    },
                    issued_at: 1,
                    expires_at: later,
                })
            })
            .collect();
        s.apply_batch(batch).await.unwrap();
        let mut seen = std::collections::HashSet::new();
        let mut cursor = None;
        loop {
            let page = s.export_bindings(cursor.as_deref()).await.unwrap();
            for c in page.cmds {
                let RevocationCommand::Bind(b) = c else {
                    panic!("not a binding: {c:?}")
                };
                assert!(seen.insert(b.fingerprint), "exported twice");
            }
            match page.next {
                Some(n) => cursor = Some(n),
                None => break,
            }
        }
        assert_eq!(seen.len(), 500);
        assert!(matches!(
            s.export_bindings(Some("x")).await,
            Err(crate::store::ListError::BadCursor)
        ));
        // Past the last slot: an empty last chunk, not an error.
        let past = s.export_bindings(Some("999999999")).await.unwrap();
        assert_eq!(past, crate::store::ExportPage::default());
        let page = s.export_families(None).await.unwrap();
        assert_eq!(page, crate::store::ExportPage::default());
        for bad in ["x", "3/2", "0/0", "1/999"] {
            assert!(matches!(
                s.export_families(Some(bad)).await,
                Err(crate::store::ListError::BadCursor)
            ));
        }
    }

    #[tokio::test]
    async fn an_export_walks_every_live_rule_once_in_passes() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = MemoryStore::open(&dir.path().join("j"), 10_000, 0.01).unwrap();
        let later = now_unix() + 3600;
        let batch: Vec<_> = (0..3000u32)
            .map(|i| {
                RevocationCommand::Token(TokenRule {
                    fingerprint: fp(i, 7),
                    expires_at: later,
                })
            })
            .collect();
        s.apply_batch(batch).await.unwrap();
        let mut seen = std::collections::HashSet::new();
        let mut cursor = None;
        loop {
            let page = s.export_tokens(cursor.as_deref()).await.unwrap();
            for t in page.tokens {
                assert!(seen.insert(t.fingerprint), "exported twice");
            }
            match page.next {
                Some(n) => cursor = Some(n),
                None => break,
            }
        }
        assert_eq!(seen.len(), 3000);
        for bad in ["x", "3/2", "0/0", "1/999"] {
            assert!(matches!(
                s.export_tokens(Some(bad)).await,
                Err(crate::store::ListError::BadCursor)
            ));
        }
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn compaction_racing_with_applies_loses_none_of_them() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("j");
        let later = now_unix() + 3600;
        let (mut s, _) = MemoryStore::open(&p, 10_000, 0.01).unwrap();
        // Several passes per snapshot, as with millions of rules.
        s.pass_size = 64;
        for i in 0..500u32 {
            s.apply(RevocationCommand::Token(TokenRule {
                fingerprint: fp(i, 0),
                expires_at: later,
            }))
            .await
            .unwrap();
        }
        let s = std::sync::Arc::new(s);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let compactor = {
            let (s, stop) = (s.clone(), stop.clone());
            tokio::spawn(async move {
                let mut runs = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    s.maintain().await.unwrap();
                    runs += 1;
                    tokio::task::yield_now().await;
                }
                runs
            })
        };
        let writers: Vec<_> = (1..=4u32)
            .map(|w| {
                let s = s.clone();
                tokio::spawn(async move {
                    for i in 0..300u32 {
                        let cmd = RevocationCommand::Token(TokenRule {
                            fingerprint: fp(i, w),
                            expires_at: later,
                        });
                        assert_eq!(s.apply(cmd).await.unwrap(), Applied::Changed);
                    }
                })
            })
            .collect();
        for w in writers {
            w.await.unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let runs = compactor.await.unwrap();
        assert!(runs > 0);
        s.maintain().await.unwrap();
        drop(s);
        let (s, report) = MemoryStore::open(&p, 10_000, 0.01).unwrap();
        assert_eq!(report.torn_bytes, 0);
        assert_eq!(s.token_count(), 500 + 4 * 300);
        for w in 1..=4u32 {
            for i in 0..300u32 {
                assert!(s.is_token_revoked(&fp(i, w)).await.unwrap());
            }
        }
    }

    fn fp(i: u32, w: u32) -> Fingerprint {
        let mut b = [0u8; 16];
        b[..4].copy_from_slice(&i.to_le_bytes());
        b[4..8].copy_from_slice(&w.to_le_bytes());
        Fingerprint::from_bytes(b)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_compaction_waits_for_an_apply_between_its_append_and_its_memory_update() {
        use std::sync::Arc;
        use tokio::sync::Notify;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("j");
        let later = now_unix() + 3600;
        let (s, _) = MemoryStore::open(&p, 100, 0.01).unwrap();
        let s = Arc::new(s);
        let (paused, resume) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        *s.pause_after_append.lock().unwrap() = Some((paused.clone(), resume.clone()));
        let apply = {
            let s = s.clone();
            tokio::spawn(async move { s.apply(token(9, later)).await })
        };
        // The record is on disk, not yet in the map.
        paused.notified().await;
        let compaction = {
            let s = s.clone();
            tokio::spawn(async move { s.maintain().await })
        };
        // Give the compaction every chance to run past the apply (it must
        // not: without the gate it snapshots the map without the rule and
        // renames over the only file that has it).
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        resume.notify_one();
        assert_eq!(apply.await.unwrap().unwrap(), Applied::Changed);
        compaction.await.unwrap().unwrap();
        drop(s);
        let (s, _) = MemoryStore::open(&p, 100, 0.01).unwrap();
        assert!(
            s.is_token_revoked(&Fingerprint::from_bytes([9; 16]))
                .await
                .unwrap(),
            "an acknowledged rule was lost by the compaction"
        );
    }
}
