//! The local cache every instance keeps: a bloom filter of every revoked
//! fingerprint, and every live scope rule.
//!
//! The bloom filter is the hot path's first and usually only step, so it is a
//! lock-free bit array of `AtomicU64` words: a check is `k` relaxed loads, an
//! insert `k` relaxed `fetch_or`s, neither takes a lock or allocates. Its bit
//! positions come straight from the fingerprint's two 64-bit halves
//! (Kirsch–Mitzenmacher double hashing): the fingerprint is already a keyed,
//! uniform hash, so hashing it again (as the `bloomfilter` crate's SipHash
//! does) would only cost time. `benches/verdict.rs` compares it against the
//! `bloomfilter` crate behind a lock, and against DashMap alone.
//!
//! Expired fingerprints cannot be removed from a bloom filter, so it is
//! rebuilt in generations from the exact set ([`LocalCache::rebuild`]) and
//! swapped in atomically. While a rebuild runs, inserts go to both the current
//! filter and the one being built, so nothing inserted meanwhile is lost;
//! requests never wait for a rebuild.
//!
//! The cache also owns the registry of live sessions ([`super::live`]):
//! every rule that reaches the cache (`insert_token`, `upsert_scope`, a
//! rebuild's `BloomRebuild::insert`) is handed to it, so upgraded
//! connections and HTTP/2 streams admitted with a credential the rule now
//! covers are closed, whichever store and whichever path the rule came by.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};
use dashmap::DashMap;

use super::live::{LiveSessions, Rule};
use super::{ScopeKey, ScopeRule};
use crate::credentials::{Attributes, Fingerprint};

// === impl AtomicBloom ===

/// A fixed-size, lock-free bloom filter over fingerprints.
pub struct AtomicBloom {
    words: Box<[AtomicU64]>,
    bits: u64,
    hashes: u32,
    inserted: AtomicUsize,
    capacity: usize,
}

impl AtomicBloom {
    /// A filter sized for `capacity` items at false-positive rate `fp_rate`.
    pub fn new(capacity: usize, fp_rate: f64) -> Self {
        let n = capacity.max(1) as f64;
        let p = fp_rate.clamp(1e-9, 0.5);
        let ln2 = std::f64::consts::LN_2;
        let bits = ((-n * p.ln()) / (ln2 * ln2)).ceil().max(64.0) as u64;
        let words = bits.div_ceil(64);
        let bits = words * 64;
        let hashes = ((bits as f64 / n) * ln2).round().clamp(1.0, 30.0) as u32;
        let words = (0..words).map(|_| AtomicU64::new(0)).collect();
        AtomicBloom {
            words,
            bits,
            hashes,
            inserted: AtomicUsize::new(0),
            capacity,
        }
    }

    #[inline]
    fn positions(&self, fp: &Fingerprint) -> impl Iterator<Item = u64> + '_ {
        let (h1, h2) = fp.halves();
        let h2 = h2 | 1;
        let bits = self.bits;
        (0..self.hashes as u64).map(move |i| {
            let h = h1.wrapping_add(i.wrapping_mul(h2));
            // Lemire's multiply-shift: a uniform index in [0, bits) without `%`.
            ((h as u128 * bits as u128) >> 64) as u64
        })
    }

    /// Adds a fingerprint.
    #[inline]
    pub fn insert(&self, fp: &Fingerprint) {
        for pos in self.positions(fp) {
            self.words[(pos / 64) as usize].fetch_or(1 << (pos % 64), Ordering::Relaxed);
        }
        self.inserted.fetch_add(1, Ordering::Relaxed);
    }

    /// False: definitely never inserted. True: maybe.
    #[inline]
    pub fn may_contain(&self, fp: &Fingerprint) -> bool {
        self.positions(fp).all(|pos| {
            self.words[(pos / 64) as usize].load(Ordering::Relaxed) & (1 << (pos % 64)) != 0
        })
    }

    /// Size in bits.
    pub fn bits(&self) -> u64 {
        self.bits
    }

    /// Number of hash functions.
    pub fn hashes(&self) -> u32 {
        self.hashes
    }

    /// Inserts so far (counting repeats).
    pub fn inserted(&self) -> usize {
        self.inserted.load(Ordering::Relaxed)
    }

    /// The item count it was sized for.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Fraction of bits set (0..1): the fill metric.
    pub fn fill_ratio(&self) -> f64 {
        let set: u64 = self
            .words
            .iter()
            .map(|w| w.load(Ordering::Relaxed).count_ones() as u64)
            .sum();
        set as f64 / self.bits as f64
    }

    /// Bytes of bit array.
    pub fn memory_bytes(&self) -> usize {
        self.words.len() * 8
    }

    /// A filter of exactly these dimensions holding `words` (as written by
    /// [`AtomicBloom::to_words`], e.g. in a snapshot); `None` when they do
    /// not fit together (`bits` must be `64 * words.len()`, `hashes` 1..=30).
    pub fn from_words(bits: u64, hashes: u32, words: &[u64], capacity: usize) -> Option<Self> {
        if bits != words.len() as u64 * 64 {
            return None;
        }
        let b = AtomicBloom::with_shape(bits, hashes, capacity)?;
        b.merge_words(words);
        Some(b)
    }

    /// An empty filter of exactly these dimensions (`bits` a positive
    /// multiple of 64, `hashes` 1..=30), e.g. to receive a snapshot's words.
    pub fn with_shape(bits: u64, hashes: u32, capacity: usize) -> Option<Self> {
        if bits == 0 || !bits.is_multiple_of(64) || !(1..=30).contains(&hashes) {
            return None;
        }
        Some(AtomicBloom {
            words: (0..bits / 64).map(|_| AtomicU64::new(0)).collect(),
            bits,
            hashes,
            inserted: AtomicUsize::new(0),
            capacity,
        })
    }

    /// The bit array's words (a racing insert may or may not be in them).
    pub fn to_words(&self) -> Vec<u64> {
        self.words
            .iter()
            .map(|w| w.load(Ordering::Relaxed))
            .collect()
    }

    /// Appends the bit array's words to `out` as little-endian bytes (what
    /// [`AtomicBloom::merge_words_le`] reads), without an intermediate copy.
    pub fn write_words_le(&self, out: &mut Vec<u8>) {
        out.reserve(self.words.len() * 8);
        for w in self.words.iter() {
            out.extend_from_slice(&w.load(Ordering::Relaxed).to_le_bytes());
        }
    }

    /// [`AtomicBloom::merge_words`] from little-endian bytes (8 per word).
    pub fn merge_words_le(&self, bytes: &[u8]) -> bool {
        if bytes.len() != self.words.len() * 8 {
            return false;
        }
        for (mine, c) in self.words.iter().zip(bytes.chunks_exact(8)) {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            let w = u64::from_le_bytes(b);
            if w != 0 {
                mine.fetch_or(w, Ordering::Relaxed);
            }
        }
        true
    }

    /// Sets every bit set in `words` (same length as this filter's); false,
    /// changing nothing, when the lengths differ.
    pub fn merge_words(&self, words: &[u64]) -> bool {
        if words.len() != self.words.len() {
            return false;
        }
        for (mine, w) in self.words.iter().zip(words) {
            if *w != 0 {
                mine.fetch_or(*w, Ordering::Relaxed);
            }
        }
        true
    }
}

/// A bloom filter being filled by [`LocalCache::begin_rebuild`].
pub struct BloomRebuild {
    next: Arc<AtomicBloom>,
    live: Arc<LiveSessions>,
}

impl BloomRebuild {
    /// Adds a live fingerprint to the filter being built. A full resync
    /// learns rules this way only, so open sessions are told too.
    #[inline]
    pub fn insert(&self, fp: &Fingerprint) {
        self.next.insert(fp);
        self.live.revoked(Rule::Token(fp));
    }

    /// The item count the new filter is sized for.
    pub fn capacity(&self) -> usize {
        self.next.capacity()
    }

    /// Adds a prepared filter's bits (see [`AtomicBloom::merge_words`]).
    pub fn merge_words(&self, words: &[u64]) -> bool {
        self.next.merge_words(words)
    }

    /// Adds a prepared filter's bits (see [`AtomicBloom::merge_words_le`]).
    pub fn merge_words_le(&self, bytes: &[u8]) -> bool {
        self.next.merge_words_le(bytes)
    }
}

// === impl LocalCache ===

/// Bloom filter of revoked fingerprints plus every live scope rule.
pub struct LocalCache {
    bloom: ArcSwap<AtomicBloom>,
    /// The filter being built by a rebuild, which inserts must also reach.
    next: ArcSwapOption<AtomicBloom>,
    rebuild_lock: std::sync::Mutex<()>,
    capacity: usize,
    fp_rate: f64,
    /// Scope rules by subject: a request's subject finds its few rules in one lookup.
    scopes: DashMap<String, Vec<ScopeRule>>,
    scope_count: AtomicUsize,
    /// Bloom hits that the exact set did not confirm (false positives or
    /// expired/removed rules): a metric.
    false_positives: AtomicU64,
    /// Upgraded connections and HTTP/2 streams open under a credential.
    live: Arc<LiveSessions>,
}

impl LocalCache {
    /// A cache whose bloom filter is sized for `capacity` at `fp_rate`.
    pub fn new(capacity: usize, fp_rate: f64) -> Self {
        LocalCache {
            bloom: ArcSwap::from_pointee(AtomicBloom::new(capacity, fp_rate)),
            next: ArcSwapOption::empty(),
            rebuild_lock: std::sync::Mutex::new(()),
            capacity,
            fp_rate,
            scopes: DashMap::new(),
            scope_count: AtomicUsize::new(0),
            false_positives: AtomicU64::new(0),
            live: Arc::new(LiveSessions::new()),
        }
    }

    /// The live sessions this cache closes when a rule covers them.
    pub fn live(&self) -> &Arc<LiveSessions> {
        &self.live
    }

    /// Records a revoked fingerprint.
    pub fn insert_token(&self, fp: &Fingerprint) {
        // Order matters: the building filter first, then the current one, so a
        // swap between the two steps loses nothing (see module docs).
        if let Some(next) = self.next.load().as_ref() {
            next.insert(fp);
        }
        self.bloom.load().insert(fp);
        // After the filter: a session registered meanwhile re-checks it.
        self.live.revoked(Rule::Token(fp));
    }

    /// False: definitely not revoked. True: ask the exact set.
    #[inline]
    pub fn may_contain(&self, fp: &Fingerprint) -> bool {
        self.bloom.load().may_contain(fp)
    }

    /// Counts a bloom hit the exact set did not confirm.
    pub fn note_false_positive(&self) {
        self.false_positives.fetch_add(1, Ordering::Relaxed);
    }

    /// Bloom hits not confirmed, so far.
    pub fn false_positives(&self) -> u64 {
        self.false_positives.load(Ordering::Relaxed)
    }

    /// The current filter (for metrics).
    pub fn bloom(&self) -> Arc<AtomicBloom> {
        self.bloom.load_full()
    }

    /// Rebuilds the bloom filter from the exact set of live fingerprints.
    ///
    /// `fill` is handed an insert function and must call it for every live
    /// fingerprint; `live` is the expected count, used to size the new filter
    /// (never below the configured capacity, with half again as headroom).
    /// Inserts that race with the rebuild reach the new filter too.
    pub fn rebuild(&self, live: usize, fill: impl FnOnce(&mut dyn FnMut(&Fingerprint))) {
        let _one_at_a_time = self
            .rebuild_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let size = self.capacity.max(live.saturating_add(live / 2));
        let next = Arc::new(AtomicBloom::new(size, self.fp_rate));
        self.next.store(Some(next.clone()));
        fill(&mut |fp| next.insert(fp));
        self.bloom.store(next);
        self.next.store(None);
    }

    /// Starts a rebuild whose filling spans awaits (a store that scans a
    /// remote exact set, like Redis): from now until
    /// [`LocalCache::finish_rebuild`], every [`LocalCache::insert_token`]
    /// reaches the new filter too. `live` sizes it as in [`LocalCache::rebuild`].
    /// The caller runs one such rebuild at a time and does not mix it with
    /// [`LocalCache::rebuild`].
    pub fn begin_rebuild(&self, live: usize) -> BloomRebuild {
        let size = self.capacity.max(live.saturating_add(live / 2));
        let next = Arc::new(AtomicBloom::new(size, self.fp_rate));
        self.next.store(Some(next.clone()));
        BloomRebuild {
            next,
            live: self.live.clone(),
        }
    }

    /// Like [`LocalCache::begin_rebuild`], but the new filter is `filter`,
    /// prepared by the caller (e.g. shaped like a snapshot's, whose bits
    /// are then added with [`BloomRebuild::merge_words`]): inserts from now
    /// on reach it, so none made while it is filled is lost.
    pub fn begin_install(&self, filter: AtomicBloom) -> BloomRebuild {
        let next = Arc::new(filter);
        self.next.store(Some(next.clone()));
        BloomRebuild {
            next,
            live: self.live.clone(),
        }
    }

    /// Swaps in the filter of a rebuild begun by [`LocalCache::begin_rebuild`]
    /// (or [`LocalCache::begin_install`]).
    pub fn finish_rebuild(&self, rebuild: BloomRebuild) {
        self.bloom.store(rebuild.next);
        self.next.store(None);
    }

    /// Drops a rebuild that could not be filled; the current filter stays.
    pub fn abandon_rebuild(&self, rebuild: BloomRebuild) {
        drop(rebuild);
        self.next.store(None);
    }

    /// Adds or merges a scope rule; true when it changed anything. A
    /// change closes the live sessions the merged rule covers.
    pub fn upsert_scope(&self, rule: &ScopeRule) -> bool {
        let merged = {
            let mut rules = self.scopes.entry(rule.key.sub.clone()).or_default();
            if let Some(existing) = rules.iter_mut().find(|r| r.key == rule.key) {
                let before = existing.clone();
                existing.merge(rule);
                (*existing != before).then(|| existing.clone())
            } else {
                rules.push(rule.clone());
                self.scope_count.fetch_add(1, Ordering::Relaxed);
                Some(rule.clone())
            }
        };
        // Outside the map's shard lock (the sweep takes the registry's).
        match merged {
            Some(r) => {
                self.live.revoked(Rule::Scope(&r));
                true
            }
            None => false,
        }
    }

    /// The rule for exactly this key, if any.
    pub fn scope_rule(&self, key: &ScopeKey) -> Option<ScopeRule> {
        self.scopes
            .get(&key.sub)
            .and_then(|rules| rules.iter().find(|r| &r.key == key).cloned())
    }

    /// Removes a scope rule; true when there was one.
    pub fn remove_scope(&self, key: &ScopeKey) -> bool {
        let mut removed = false;
        if let Some(mut rules) = self.scopes.get_mut(&key.sub) {
            let before = rules.len();
            rules.retain(|r| &r.key != key);
            removed = rules.len() < before;
        }
        if removed {
            self.scope_count.fetch_sub(1, Ordering::Relaxed);
            self.scopes.remove_if(&key.sub, |_, rules| rules.is_empty());
        }
        removed
    }

    /// Drops scope rules expired at `now`; returns how many.
    pub fn expire_scopes(&self, now: u64) -> usize {
        let mut dropped = 0;
        self.scopes.retain(|_, rules| {
            let before = rules.len();
            rules.retain(|r| r.expires_at > now);
            dropped += before - rules.len();
            !rules.is_empty()
        });
        self.scope_count.fetch_sub(dropped, Ordering::Relaxed);
        dropped
    }

    /// Replaces every scope rule (after a full resync).
    pub fn replace_scopes(&self, rules: impl IntoIterator<Item = ScopeRule>) {
        self.scopes.clear();
        self.scope_count.store(0, Ordering::Relaxed);
        for r in rules {
            self.upsert_scope(&r);
        }
    }

    /// True when any scope rule exists: only then are a request's attributes worth reading.
    #[inline]
    pub fn has_scope_rules(&self) -> bool {
        self.scope_count.load(Ordering::Relaxed) > 0
    }

    /// Number of scope rules.
    pub fn scope_rule_count(&self) -> usize {
        self.scope_count.load(Ordering::Relaxed)
    }

    /// Number of scope rules of one subject (for `revoke.max_scopes_per_subject`).
    pub fn subject_scope_count(&self, sub: &str) -> usize {
        self.scopes.get(sub).map_or(0, |rules| rules.len())
    }

    /// Whether any scope rule covers these attributes at `now`.
    pub fn scope_matches(&self, attrs: &Attributes, now: u64) -> bool {
        let Some(sub) = attrs.sub.as_deref() else {
            return false;
        };
        self.scopes
            .get(sub)
            .is_some_and(|rules| rules.iter().any(|r| r.matches(attrs, now)))
    }

    /// The scope rules of one subject.
    pub fn scope_rules_of(&self, sub: &str) -> Vec<ScopeRule> {
        self.scopes
            .get(sub)
            .map_or_else(Vec::new, |rules| rules.clone())
    }

    /// The subjects that have scope rules.
    pub fn scope_subjects(&self) -> Vec<String> {
        self.scopes.iter().map(|e| e.key().clone()).collect()
    }

    /// Every scope rule, sorted by key (for the admin API and snapshots).
    pub fn scope_rules(&self) -> Vec<ScopeRule> {
        let mut all: Vec<ScopeRule> = self.scopes.iter().flat_map(|e| e.value().clone()).collect();
        all.sort_by(|a, b| a.key.cmp(&b.key));
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::FingerprintKey;

    fn fp(i: u64) -> Fingerprint {
        FingerprintKey::from_bytes([7; 32]).fingerprint(&i.to_le_bytes())
    }

    #[test]
    fn bloom_has_no_false_negatives_and_few_false_positives() {
        let b = AtomicBloom::new(10_000, 0.01);
        for i in 0..10_000 {
            b.insert(&fp(i));
        }
        assert!((0..10_000).all(|i| b.may_contain(&fp(i))));
        let fps = (10_000..110_000).filter(|i| b.may_contain(&fp(*i))).count();
        assert!(fps < 2_000, "false positives: {fps} of 100000");
    }

    #[test]
    fn rebuild_keeps_racing_inserts_and_drops_the_rest() {
        let c = LocalCache::new(1000, 0.001);
        c.insert_token(&fp(1));
        c.insert_token(&fp(2));
        c.rebuild(1, |insert| {
            insert(&fp(1));
            // An insert racing with the rebuild.
            c.insert_token(&fp(3));
        });
        assert!(c.may_contain(&fp(1)));
        assert!(c.may_contain(&fp(3)));
        assert!(!c.may_contain(&fp(2)));
    }

    #[test]
    fn a_filter_survives_its_words_and_an_install_keeps_racing_inserts() {
        let b = AtomicBloom::new(1000, 0.01);
        for i in 0..1000 {
            b.insert(&fp(i));
        }
        let copy = AtomicBloom::from_words(b.bits(), b.hashes(), &b.to_words(), 1000).unwrap();
        assert!((0..1000).all(|i| copy.may_contain(&fp(i))));
        assert!(AtomicBloom::from_words(b.bits() + 64, b.hashes(), &b.to_words(), 1).is_none());
        assert!(AtomicBloom::from_words(b.bits(), 0, &b.to_words(), 1).is_none());
        let mut le = Vec::new();
        b.write_words_le(&mut le);
        let again = AtomicBloom::with_shape(b.bits(), b.hashes(), 1000).unwrap();
        assert!(AtomicBloom::with_shape(100, 3, 1).is_none());
        assert!(again.merge_words_le(&le));
        assert!(!again.merge_words_le(&le[8..]));
        assert_eq!(again.to_words(), b.to_words());

        let c = LocalCache::new(10, 0.01);
        c.insert_token(&fp(5000));
        let words = b.to_words();
        let shell = AtomicBloom::from_words(b.bits(), b.hashes(), &vec![0; words.len()], 1000);
        let install = c.begin_install(shell.unwrap());
        c.insert_token(&fp(5001));
        assert!(install.merge_words(&words));
        assert!(!install.merge_words(&words[1..]));
        c.finish_rebuild(install);
        assert!((0..1000).all(|i| c.may_contain(&fp(i))));
        assert!(c.may_contain(&fp(5001)), "an insert during the install");
    }

    fn rule(sub: &str, org: Option<&str>, provider: Option<&str>, t: u64) -> ScopeRule {
        ScopeRule {
            key: ScopeKey {
                sub: sub.into(),
                org: org.map(Into::into),
                provider: provider.map(Into::into),
            },
            revoked_at: t,
            expires_at: t + 100,
        }
    }

    fn attrs(sub: &str, org: Option<&str>, provider: Option<&str>, iat: Option<u64>) -> Attributes {
        Attributes {
            sub: Some(sub.into()),
            org: org.map(Into::into),
            provider: provider.map(Into::into),
            iat,
            exp: None,
            ..Default::default()
        }
    }

    #[test]
    fn scope_rules_match_by_attributes_and_issue_time() {
        let c = LocalCache::new(10, 0.01);
        assert!(c.upsert_scope(&rule("u1", None, Some("github"), 1000)));
        assert!(
            !c.upsert_scope(&rule("u1", None, Some("github"), 1000)),
            "idempotent"
        );
        assert_eq!(c.scope_rule_count(), 1);
        assert!(c.scope_matches(&attrs("u1", None, Some("github"), Some(999)), 1001));
        assert!(c.scope_matches(&attrs("u1", None, Some("github"), Some(1000)), 1001));
        assert!(!c.scope_matches(&attrs("u1", None, Some("github"), Some(1001)), 1001));
        assert!(!c.scope_matches(&attrs("u1", None, Some("gitlab"), Some(999)), 1001));
        assert!(!c.scope_matches(&attrs("u2", None, Some("github"), Some(999)), 1001));
        assert!(
            c.scope_matches(&attrs("u1", Some("o"), Some("github"), None), 1001),
            "no iat: fail closed"
        );
        assert!(
            !c.scope_matches(&attrs("u1", None, Some("github"), None), 1100),
            "expired"
        );
        c.upsert_scope(&rule("u1", Some("7"), Some("slack"), 1000));
        assert!(!c.scope_matches(&attrs("u1", Some("8"), Some("slack"), Some(1)), 1001));
        assert!(c.scope_matches(&attrs("u1", Some("7"), Some("slack"), Some(1)), 1001));
        assert_eq!(c.expire_scopes(1100), 2);
        assert!(!c.has_scope_rules());
    }
}
