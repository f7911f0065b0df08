//! Principals: who holds a credential that does not say so itself.
//!
//! A JWT names its subject; an opaque access token or API key does not. A
//! [`Binding`] maps a credential's fingerprint to the attributes a scope
//! rule filters on (subject, org, provider) and its issue time and expiry.
//! Bindings come from the admin API (`/admin/v1/principals`) and from token
//! issuance seen in passing (`crate::proxy::issuance`); they are stored like
//! rules (journal, Redis) and expire with the credential.
//!
//! **How a scope rule covers a bound credential without touching the hot
//! path.** The per-request check for a credential that is not revoked stays
//! one bloom-filter probe: no binding is looked up per request. Instead a
//! scope rule is *expanded* when it is applied: every bound credential it
//! covers (same subject, its org/provider filter, issued at or before the
//! rule's time) gets a **derived token rule**, which goes into the bloom
//! filter and the exact set like any revoked token. And a binding recorded
//! after the rule is checked against the rules already there when it is
//! recorded, so a credential bound late but issued before the rule is
//! rejected too, while one issued after it passes (not-before).
//!
//! Derived rules are kept apart from explicit token revocations (in the
//! embedded store a map of their own; in Redis `{P}:dtok:` keys), because
//! they are a function of the bindings and the scope rules: un-revoking a
//! scope rule (admin `DELETE`) withdraws what it alone derived, and
//! removing a binding (admin `DELETE`) withdraws its derived rule. Nothing
//! else withdraws one: rebinding a revoked credential to someone no rule
//! covers (a token endpoint's answer naming it again) leaves it revoked. The embedded store does
//! not journal them (replay derives them again from the bindings and the
//! rules it replayed); Redis keeps them as keys, written by the same Lua
//! script that writes the rule or the binding, so the two orders (rule
//! then binding, binding then rule) cannot race between instances.
//!
//! Memory (embedded; BENCHMARKS.md, "Principals"): a binding is one
//! 36-byte slot of a `Vec` (fingerprint, principal id, two `u32` times,
//! and the previous and next slot of its principal's member list, so an
//! unbind is O(1)), found through a hashbrown table of `u32` slot ids (5
//! bytes a bucket); a freed slot is reused by the next binding. A
//! principal is stored once, its three strings in one allocation, found by
//! its subject's hash and chained to its subject's other principals; it is
//! released with its last binding, so principals whose credentials all
//! expired do not accumulate.
//!
//! Locking: one `RwLock` covers slots and principals. A bind or unbind
//! holds it for O(1) work (plus a walk of its subject's principals), a
//! lookup shares it, expiry and snapshots take it a chunk of 65,536 slots
//! at a time. Binds were already serialized (on the principal table's
//! mutex) when the bindings were in a DashMap. The per-request verdict
//! never takes it: it reads the bloom filter and the derived rules' map.

use std::hash::BuildHasher;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use dashmap::DashMap;
use hashbrown::{DefaultHashBuilder, HashTable};
use serde::{Deserialize, Serialize};

use super::{ScopeKey, ScopeRule, TokenRule};
use crate::credentials::{Attributes, Fingerprint};

/// "The credential with this fingerprint belongs to `who`, issued at
/// `issued_at`, valid until `expires_at`."
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    /// The credential's fingerprint (never the credential).
    pub fingerprint: Fingerprint,
    /// Who holds it: the attributes scope rules filter on (`None` here
    /// means the credential has none, and only a rule that does not filter
    /// on it covers the credential).
    #[serde(flatten)]
    pub who: ScopeKey,
    /// Unix seconds the credential was issued.
    pub issued_at: u64,
    /// Unix seconds after which the credential (and the binding) expires.
    pub expires_at: u64,
}

impl Binding {
    /// The attributes the binding gives its credential.
    pub fn attributes(&self) -> Attributes {
        Attributes {
            sub: Some(self.who.sub.clone()),
            org: self.who.org.clone(),
            provider: self.who.provider.clone(),
            iat: Some(self.issued_at),
            exp: Some(self.expires_at),
            jti: None,
            iss: None,
        }
    }

    /// The derived token rule when any of `rules` covers this binding at
    /// `now`: kept as long as the credential lives.
    pub fn derived(&self, rules: &[ScopeRule], now: u64) -> Option<TokenRule> {
        let attrs = self.attributes();
        rules
            .iter()
            .any(|r| r.matches(&attrs, now))
            .then_some(TokenRule {
                fingerprint: self.fingerprint,
                expires_at: self.expires_at,
            })
    }
}

/// "No slot / no principal" in a link field.
const NONE: u32 = u32::MAX;

/// Slots expired or snapshotted per lock hold: a bind waits for at most
/// one chunk's work (about a millisecond), never a scan of every binding.
const CHUNK: usize = 1 << 16;

/// One binding as the embedded store holds it (36 bytes): the fingerprint,
/// its interned principal, two times (`u32` unix seconds: until 2106) and
/// its links in the principal's member list. A free slot has `principal ==
/// NONE` and `next` in the free list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Slot {
    fingerprint: Fingerprint,
    principal: u32,
    issued_at: u32,
    expires_at: u32,
    prev: u32,
    next: u32,
}

// What the module doc and BENCHMARKS.md count on.
const _: () = assert!(std::mem::size_of::<Slot>() == 36);

fn secs(t: u64) -> u32 {
    t.min(u64::from(u32::MAX)) as u32
}

/// A distinct principal, stored once: its three strings in one allocation.
struct Principal {
    /// `sub`, `org` and `provider` back to back.
    text: Box<str>,
    sub_end: u32,
    org_end: u32,
    /// Bit 0: has an org; bit 1: has a provider.
    has: u8,
    /// First slot of its member list (`NONE`: no member, the principal is
    /// released).
    head: u32,
    /// The next principal of the same subject (`NONE`: the last).
    next_of_sub: u32,
}

impl Principal {
    fn new(who: &ScopeKey) -> Self {
        let org = who.org.as_deref().unwrap_or_default();
        let provider = who.provider.as_deref().unwrap_or_default();
        let mut text = String::with_capacity(who.sub.len() + org.len() + provider.len());
        text.push_str(&who.sub);
        text.push_str(org);
        text.push_str(provider);
        Principal {
            text: text.into_boxed_str(),
            sub_end: who.sub.len() as u32,
            org_end: (who.sub.len() + org.len()) as u32,
            has: u8::from(who.org.is_some()) | (u8::from(who.provider.is_some()) << 1),
            head: NONE,
            next_of_sub: NONE,
        }
    }

    fn part(&self, from: u32, to: Option<u32>) -> &str {
        let from = from as usize;
        let part = match to {
            Some(to) => self.text.get(from..to as usize),
            None => self.text.get(from..),
        };
        part.unwrap_or_default()
    }

    fn sub(&self) -> &str {
        self.part(0, Some(self.sub_end))
    }

    fn org(&self) -> Option<&str> {
        (self.has & 1 != 0).then(|| self.part(self.sub_end, Some(self.org_end)))
    }

    fn provider(&self) -> Option<&str> {
        (self.has & 2 != 0).then(|| self.part(self.org_end, None))
    }

    fn is(&self, who: &ScopeKey) -> bool {
        self.sub() == who.sub
            && self.org() == who.org.as_deref()
            && self.provider() == who.provider.as_deref()
    }

    fn key(&self) -> ScopeKey {
        ScopeKey {
            sub: self.sub().to_owned(),
            org: self.org().map(str::to_owned),
            provider: self.provider().map(str::to_owned),
        }
    }
}

/// The bindings and their principals, behind one lock.
struct Table {
    /// Bindings by slot; a slot never moves while its binding lives.
    slots: Vec<Slot>,
    /// First free slot (`NONE`: none).
    free_slot: u32,
    /// Slots in use.
    len: usize,
    /// Slot of each fingerprint: 4 bytes a bucket (plus a control byte)
    /// instead of the 28-byte entry of a map holding the binding itself.
    by_fingerprint: HashTable<u32>,
    /// Principals by id (`None`: released, its id in `free_principals`).
    principals: Vec<Option<Principal>>,
    free_principals: Vec<u32>,
    /// The first principal of each subject (the rest follow `next_of_sub`),
    /// keyed by the subject's hash.
    by_sub: HashTable<u32>,
    hasher: DefaultHashBuilder,
}

impl Default for Table {
    fn default() -> Self {
        Table {
            slots: Vec::new(),
            free_slot: NONE,
            len: 0,
            by_fingerprint: HashTable::new(),
            principals: Vec::new(),
            free_principals: Vec::new(),
            by_sub: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
        }
    }
}

impl Table {
    fn principal(&self, id: u32) -> Option<&Principal> {
        self.principals.get(id as usize)?.as_ref()
    }

    fn principal_mut(&mut self, id: u32) -> Option<&mut Principal> {
        self.principals.get_mut(id as usize)?.as_mut()
    }

    fn slot_of(&self, fp: &Fingerprint) -> Option<u32> {
        let hash = self.hasher.hash_one(fp);
        let slots = &self.slots;
        self.by_fingerprint
            .find(hash, |&i| slots[i as usize].fingerprint == *fp)
            .copied()
    }

    /// The first principal of `sub`, if it has one.
    fn first_of(&self, sub: &str) -> Option<u32> {
        let hash = self.hasher.hash_one(sub);
        let principals = &self.principals;
        self.by_sub
            .find(hash, |&p| {
                principals[p as usize]
                    .as_ref()
                    .is_some_and(|x| x.sub() == sub)
            })
            .copied()
    }

    /// The id of `who`, interned on first sight.
    fn intern(&mut self, who: &ScopeKey) -> u32 {
        let first = self.first_of(&who.sub);
        let mut at = first.unwrap_or(NONE);
        while let Some(p) = self.principal(at) {
            if p.is(who) {
                return at;
            }
            at = p.next_of_sub;
        }
        let mut principal = Principal::new(who);
        let id = match self.free_principals.pop() {
            Some(id) => id,
            None => {
                self.principals.push(None);
                (self.principals.len() - 1) as u32
            }
        };
        // Second in its subject's list when it has one (the index entry
        // stays as it is), else the first.
        if let Some(head) = first.and_then(|f| self.principal_mut(f)) {
            principal.next_of_sub = head.next_of_sub;
            head.next_of_sub = id;
        }
        self.principals[id as usize] = Some(principal);
        if first.is_none() {
            let hash = self.hasher.hash_one(who.sub.as_str());
            let Table {
                by_sub,
                principals,
                hasher,
                ..
            } = self;
            by_sub.insert_unique(hash, id, |&p| {
                hasher.hash_one(principals[p as usize].as_ref().map_or("", |x| x.sub()))
            });
        }
        id
    }

    /// Gives a principal's id back once its last member is gone, so
    /// principals whose bindings all expired do not accumulate.
    fn release(&mut self, id: u32) {
        let Some(gone) = self.principals.get_mut(id as usize).and_then(Option::take) else {
            return;
        };
        self.free_principals.push(id);
        let Table {
            by_sub,
            principals,
            hasher,
            ..
        } = self;
        let hash = hasher.hash_one(gone.sub());
        let Ok(entry) = by_sub.find_entry(hash, |&p| {
            p == id
                || principals[p as usize]
                    .as_ref()
                    .is_some_and(|x| x.sub() == gone.sub())
        }) else {
            return;
        };
        let first = *entry.get();
        if first == id {
            if gone.next_of_sub == NONE {
                entry.remove();
            } else {
                *entry.into_mut() = gone.next_of_sub;
            }
            return;
        }
        let mut at = first;
        while let Some(p) = self.principal_mut(at) {
            if p.next_of_sub == id {
                p.next_of_sub = gone.next_of_sub;
                return;
            }
            at = p.next_of_sub;
        }
    }

    /// Puts slot `i` first in its principal's member list.
    fn link(&mut self, i: u32) {
        let id = self.slots[i as usize].principal;
        let Some(p) = self.principal_mut(id) else {
            return;
        };
        let next = std::mem::replace(&mut p.head, i);
        let slot = &mut self.slots[i as usize];
        slot.prev = NONE;
        slot.next = next;
        if next != NONE {
            self.slots[next as usize].prev = i;
        }
    }

    /// Takes slot `i` out of its principal's member list (releasing the
    /// principal when it was the last member).
    fn unlink(&mut self, i: u32) {
        let Slot {
            principal,
            prev,
            next,
            ..
        } = self.slots[i as usize];
        if prev == NONE {
            if let Some(p) = self.principal_mut(principal) {
                p.head = next;
            }
        } else {
            self.slots[prev as usize].next = next;
        }
        if next != NONE {
            self.slots[next as usize].prev = prev;
        }
        if self.principal(principal).is_some_and(|p| p.head == NONE) {
            self.release(principal);
        }
    }

    fn insert(&mut self, slot: Slot) {
        let i = if self.free_slot == NONE {
            self.slots.push(slot);
            (self.slots.len() - 1) as u32
        } else {
            let i = self.free_slot;
            self.free_slot = self.slots[i as usize].next;
            self.slots[i as usize] = slot;
            i
        };
        let hash = self.hasher.hash_one(slot.fingerprint);
        let Table {
            by_fingerprint,
            slots,
            hasher,
            ..
        } = self;
        by_fingerprint.insert_unique(hash, i, |&j| hasher.hash_one(slots[j as usize].fingerprint));
        self.link(i);
        self.len += 1;
    }

    fn remove(&mut self, i: u32) {
        let hash = self.hasher.hash_one(self.slots[i as usize].fingerprint);
        if let Ok(entry) = self.by_fingerprint.find_entry(hash, |&j| j == i) {
            entry.remove();
        }
        self.unlink(i);
        let slot = &mut self.slots[i as usize];
        slot.principal = NONE;
        slot.next = self.free_slot;
        self.free_slot = i;
        self.len -= 1;
    }

    fn binding(&self, slot: &Slot) -> Option<Binding> {
        Some(Binding {
            fingerprint: slot.fingerprint,
            who: self.principal(slot.principal)?.key(),
            issued_at: u64::from(slot.issued_at),
            expires_at: u64::from(slot.expires_at),
        })
    }
}

/// The embedded store's bindings and the token rules derived from them.
#[derive(Default)]
pub struct Principals {
    table: RwLock<Table>,
    /// Token rules derived from a binding and a scope rule (see the module
    /// doc): fingerprint -> expiry.
    derived: DashMap<Fingerprint, u64>,
}

impl Principals {
    /// An empty set.
    pub fn new() -> Self {
        Principals::default()
    }

    fn read(&self) -> RwLockReadGuard<'_, Table> {
        self.table.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Table> {
        self.table.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Records (or replaces) a binding; returns the derived rule when one
    /// of `rules` (the subject's scope rules) covers it. `false` in the
    /// second place when nothing changed.
    pub fn bind(&self, b: &Binding, rules: &[ScopeRule], now: u64) -> (bool, Option<TokenRule>) {
        {
            let mut t = self.write();
            let principal = t.intern(&b.who);
            let (issued_at, expires_at) = (secs(b.issued_at), secs(b.expires_at));
            match t.slot_of(&b.fingerprint) {
                Some(i) => {
                    let old = t.slots[i as usize];
                    if old.principal == principal
                        && old.issued_at == issued_at
                        && old.expires_at == expires_at
                    {
                        drop(t);
                        return (false, self.derived_rule(&b.fingerprint));
                    }
                    if old.principal != principal {
                        t.unlink(i);
                        t.slots[i as usize].principal = principal;
                        t.link(i);
                    }
                    let slot = &mut t.slots[i as usize];
                    slot.issued_at = issued_at;
                    slot.expires_at = expires_at;
                }
                None => t.insert(Slot {
                    fingerprint: b.fingerprint,
                    principal,
                    issued_at,
                    expires_at,
                    prev: NONE,
                    next: NONE,
                }),
            }
        }
        // A rebinding never withdraws a derived rule: a credential a scope
        // rule revoked stays revoked whoever it is bound to next (only an
        // operator's unbind or un-revoke withdraws), so a token endpoint's
        // answer naming a revoked token cannot un-revoke it.
        let derived = b.derived(rules, now);
        if let Some(rule) = derived {
            self.derived.insert(rule.fingerprint, rule.expires_at);
        }
        (true, derived)
    }

    fn derived_rule(&self, fp: &Fingerprint) -> Option<TokenRule> {
        self.derived.get(fp).map(|e| TokenRule {
            fingerprint: *fp,
            expires_at: *e,
        })
    }

    /// Removes a binding and what it derived; true when there was one.
    pub fn unbind(&self, fp: &Fingerprint) -> bool {
        {
            let mut t = self.write();
            let Some(i) = t.slot_of(fp) else {
                return false;
            };
            t.remove(i);
        }
        self.derived.remove(fp);
        true
    }

    /// The binding of a fingerprint, if any and live at `now`.
    pub fn get(&self, fp: &Fingerprint, now: u64) -> Option<Binding> {
        let t = self.read();
        let slot = t.slots[t.slot_of(fp)? as usize];
        if u64::from(slot.expires_at) <= now {
            return None;
        }
        t.binding(&slot)
    }

    /// Gives back what replay's growth left unused (the slots and the
    /// index grow by doubling).
    pub fn shrink(&self) {
        let mut t = self.write();
        let Table {
            slots,
            by_fingerprint,
            principals,
            free_principals,
            by_sub,
            hasher,
            ..
        } = &mut *t;
        slots.shrink_to_fit();
        by_fingerprint.shrink_to_fit(|&j| hasher.hash_one(slots[j as usize].fingerprint));
        by_sub.shrink_to_fit(|&p| {
            hasher.hash_one(principals[p as usize].as_ref().map_or("", |x| x.sub()))
        });
        principals.shrink_to_fit();
        free_principals.shrink_to_fit();
    }

    /// Bindings held (live or not yet dropped by maintenance).
    pub fn len(&self) -> usize {
        self.read().len
    }

    /// True when no binding is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a derived rule revokes this fingerprint at `now`.
    pub fn is_derived_revoked(&self, fp: &Fingerprint, now: u64) -> bool {
        self.derived.get(fp).is_some_and(|exp| *exp > now)
    }

    /// Every live binding of `sub`.
    fn bindings_of(&self, sub: &str, now: u64) -> Vec<Binding> {
        let t = self.read();
        let mut out = Vec::new();
        let mut at = t.first_of(sub).unwrap_or(NONE);
        while let Some(p) = t.principal(at) {
            let who = p.key();
            let mut i = p.head;
            while let Some(slot) = t.slots.get(i as usize) {
                if u64::from(slot.expires_at) > now {
                    out.push(Binding {
                        fingerprint: slot.fingerprint,
                        who: who.clone(),
                        issued_at: u64::from(slot.issued_at),
                        expires_at: u64::from(slot.expires_at),
                    });
                }
                i = slot.next;
            }
            at = p.next_of_sub;
        }
        out
    }

    /// Re-derives the rules of every binding of `sub` from `rules` (the
    /// subject's scope rules now, after one was added, merged or removed);
    /// returns the derived rules added (for the bloom filter and live
    /// sessions).
    pub fn rederive(&self, sub: &str, rules: &[ScopeRule], now: u64) -> Vec<TokenRule> {
        let mut added = Vec::new();
        for b in self.bindings_of(sub, now) {
            match b.derived(rules, now) {
                Some(rule) => {
                    if self
                        .derived
                        .insert(rule.fingerprint, rule.expires_at)
                        .is_none()
                    {
                        added.push(rule);
                    }
                }
                None => {
                    self.derived.remove(&b.fingerprint);
                }
            }
        }
        added
    }

    /// Every derived fingerprint (for a bloom rebuild).
    pub fn for_each_derived(&self, mut f: impl FnMut(&Fingerprint)) {
        for e in self.derived.iter() {
            f(e.key());
        }
    }

    /// Derived rules held.
    pub fn derived_count(&self) -> usize {
        self.derived.len()
    }

    /// Drops expired bindings (and principals left without one) and
    /// derived rules; returns the bindings dropped.
    pub fn expire(&self, now: u64) -> usize {
        let mut gone = 0;
        let mut from = 0;
        loop {
            let mut t = self.write();
            let to = t.slots.len().min(from + CHUNK);
            if from >= to {
                break;
            }
            for i in from..to {
                let slot = t.slots[i];
                if slot.principal != NONE && u64::from(slot.expires_at) <= now {
                    t.remove(i as u32);
                    gone += 1;
                }
            }
            from = to;
        }
        self.derived.retain(|_, exp| *exp > now);
        gone
    }

    /// The live bindings of one chunk of slots, from slot `from`, and the
    /// slot the next chunk starts at (`None` after the last). Slots do not
    /// move, so a walk from 0 holds one chunk at a time and has every
    /// binding live throughout in exactly one chunk; one bound or removed
    /// meanwhile may be in it or not (for a compaction, the journal's tail
    /// has it).
    pub fn page(&self, from: usize, now: u64) -> (Vec<Binding>, Option<usize>) {
        let t = self.read();
        let to = t.slots.len().min(from.saturating_add(CHUNK));
        let out = t
            .slots
            .get(from..to)
            .unwrap_or_default()
            .iter()
            .filter(|s| s.principal != NONE && u64::from(s.expires_at) > now)
            .filter_map(|s| t.binding(s))
            .collect();
        (out, (to < t.slots.len()).then_some(to))
    }

    /// Every live binding (tests; the store walks [`Principals::page`]).
    #[cfg(test)]
    pub fn snapshot(&self, now: u64) -> Vec<Binding> {
        let mut out = Vec::new();
        let mut from = Some(0);
        while let Some(f) = from {
            let (page, next) = self.page(f, now);
            out.extend(page);
            from = next;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(sub: &str, org: Option<&str>) -> ScopeKey {
        ScopeKey {
            sub: sub.into(),
            org: org.map(Into::into),
            provider: Some("github".into()),
        }
    }

    fn binding(i: u8, sub: &str, issued_at: u64) -> Binding {
        Binding {
            fingerprint: Fingerprint::from_bytes([i; 16]),
            who: who(sub, Some("42")),
            issued_at,
            expires_at: issued_at + 3600,
        }
    }

    fn rule(sub: &str, org: Option<&str>, revoked_at: u64) -> ScopeRule {
        ScopeRule {
            key: ScopeKey {
                sub: sub.into(),
                org: org.map(Into::into),
                provider: None,
            },
            revoked_at,
            expires_at: revoked_at + 7200,
        }
    }

    #[test]
    fn a_rule_covers_the_bindings_issued_before_it_and_withdraws_with_it() {
        let now = 1_800_000_000;
        let p = Principals::new();
        assert_eq!(p.bind(&binding(1, "u1", now - 10), &[], now), (true, None));
        assert_eq!(p.bind(&binding(1, "u1", now - 10), &[], now), (false, None));
        p.bind(&binding(2, "u1", now + 10), &[], now);
        p.bind(&binding(3, "u2", now - 10), &[], now);
        let rules = [rule("u1", None, now)];
        let added = p.rederive("u1", &rules, now);
        assert_eq!(added.len(), 1);
        assert_eq!(added[0].fingerprint, Fingerprint::from_bytes([1; 16]));
        assert!(p.is_derived_revoked(&Fingerprint::from_bytes([1; 16]), now));
        // Issued after the rule, another subject: not covered.
        assert!(!p.is_derived_revoked(&Fingerprint::from_bytes([2; 16]), now));
        assert!(!p.is_derived_revoked(&Fingerprint::from_bytes([3; 16]), now));
        // A binding that arrives after the rule, issued before it: covered.
        let (_, d) = p.bind(&binding(4, "u1", now - 5), &rules, now);
        assert!(d.is_some());
        // An org filter that does not match covers nothing.
        assert!(binding(5, "u1", now - 5)
            .derived(&[rule("u1", Some("other"), now)], now)
            .is_none());
        // The rule is removed: what it derived is withdrawn.
        assert!(p.rederive("u1", &[], now).is_empty());
        assert_eq!(p.derived_count(), 0);
        // Unbinding drops the binding and its derived rule.
        p.rederive("u1", &rules, now);
        assert!(p.unbind(&Fingerprint::from_bytes([1; 16])));
        assert!(!p.is_derived_revoked(&Fingerprint::from_bytes([1; 16]), now));
        assert!(p.get(&Fingerprint::from_bytes([1; 16]), now).is_none());
        assert_eq!(
            p.get(&Fingerprint::from_bytes([3; 16]), now),
            Some(binding(3, "u2", now - 10))
        );
        // Expiry drops bindings and their derived rules.
        assert_eq!(p.expire(now + 4000), 3);
        assert_eq!(p.derived_count(), 0);
        assert!(p.snapshot(now).is_empty());
    }

    #[test]
    fn rebinding_to_another_principal_moves_the_member_and_never_unrevokes() {
        let now = 1_800_000_000;
        let p = Principals::new();
        p.bind(&binding(1, "u1", now - 10), &[], now);
        p.bind(&binding(1, "u2", now - 10), &[], now);
        assert!(p.rederive("u1", &[rule("u1", None, now)], now).is_empty());
        assert_eq!(p.rederive("u2", &[rule("u2", None, now)], now).len(), 1);
        // Revoked through u2's rule, then rebound to u3 (no rule): still
        // revoked.
        let fp = Fingerprint::from_bytes([1; 16]);
        assert_eq!(p.bind(&binding(1, "u3", now - 10), &[], now), (true, None));
        assert!(p.is_derived_revoked(&fp, now));
    }

    fn fp(i: u32) -> Fingerprint {
        let mut b = [0u8; 16];
        b[..4].copy_from_slice(&i.to_le_bytes());
        Fingerprint::from_bytes(b)
    }

    /// What the table holds, for comparing with a model: every binding
    /// by fingerprint, and the principals still interned.
    fn held(p: &Principals, now: u64) -> (Vec<Binding>, usize) {
        let mut all = p.snapshot(now);
        all.sort_by_key(|b| b.fingerprint);
        let t = p.read();
        (all, t.principals.iter().flatten().count())
    }

    #[test]
    fn principals_of_one_subject_are_found_and_released_with_their_last_member() {
        let now = 1_800_000_000;
        let p = Principals::new();
        let orgs = [Some("a"), Some("b"), None, Some("c")];
        for (i, org) in orgs.iter().enumerate() {
            for j in 0..3 {
                let b = Binding {
                    fingerprint: fp((i * 10 + j) as u32),
                    who: who("u1", *org),
                    issued_at: now - 10,
                    expires_at: now + 100,
                };
                assert_eq!(p.bind(&b, &[], now), (true, None));
            }
        }
        p.bind(&binding(200, "u2", now - 10), &[], now);
        assert_eq!(p.len(), 13);
        assert_eq!(p.bindings_of("u1", now).len(), 12);
        assert_eq!(held(&p, now).1, 5);
        // The org filter picks one principal's members.
        assert_eq!(
            p.rederive("u1", &[rule("u1", Some("b"), now)], now).len(),
            3
        );
        // Release principals at the head and in the middle of u1's list.
        for j in 0..3 {
            assert!(p.unbind(&fp(10 + j)));
            assert!(p.unbind(&fp(j)));
        }
        assert!(!p.unbind(&fp(0)));
        assert_eq!(held(&p, now).1, 3);
        let left = p.bindings_of("u1", now);
        assert_eq!(left.len(), 6);
        assert!(left
            .iter()
            .all(|b| b.who.org.is_none() || b.who.org.as_deref() == Some("c")));
        // A released principal is interned again on its next binding.
        let again = Binding {
            fingerprint: fp(99),
            who: who("u1", Some("a")),
            issued_at: now - 1,
            expires_at: now + 100,
        };
        p.bind(&again, &[], now);
        assert_eq!(p.get(&fp(99), now), Some(again));
        assert_eq!(p.bindings_of("u1", now).len(), 7);
        // Expiry releases every principal and every slot's index entry.
        assert_eq!(p.expire(now + 100), 7);
        assert_eq!(p.len(), 1);
        assert_eq!(p.expire(now + 4000), 1);
        assert_eq!(p.expire(now + 4000), 0);
        let t = p.read();
        assert_eq!((t.len, t.by_fingerprint.len(), t.by_sub.len()), (0, 0, 0));
        assert_eq!(t.principals.iter().flatten().count(), 0);
    }

    /// Random binds, rebinds, unbinds and expiries, checked against a plain
    /// map after each step: the slots, the index, the member lists and the
    /// subject lists must agree with it.
    #[test]
    fn the_table_agrees_with_a_map_through_random_changes() {
        let now = 1_800_000_000;
        let p = Principals::new();
        let mut model: std::collections::HashMap<Fingerprint, Binding> = Default::default();
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move |n: u64| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) % n
        };
        let mut clock = now;
        for step in 0..4000 {
            let f = fp(next(300) as u32);
            match next(10) {
                0..=5 => {
                    let sub = format!("u{}", next(7));
                    let org = ["x", "y", "z"].get(next(4) as usize).copied();
                    let b = Binding {
                        fingerprint: f,
                        who: ScopeKey {
                            sub,
                            org: org.map(Into::into),
                            provider: (next(3) > 0).then(|| "github".into()),
                        },
                        issued_at: clock - next(50),
                        expires_at: clock + 1 + next(400),
                    };
                    let changed = model.get(&f) != Some(&b);
                    assert_eq!(p.bind(&b, &[], clock).0, changed, "step {step}");
                    model.insert(f, b);
                }
                6..=7 => assert_eq!(p.unbind(&f), model.remove(&f).is_some(), "step {step}"),
                8 => {
                    clock += next(60);
                    let before = model.len();
                    model.retain(|_, b| b.expires_at > clock);
                    assert_eq!(p.expire(clock), before - model.len(), "step {step}");
                }
                _ => assert_eq!(p.get(&f, clock), model.get(&f).cloned(), "step {step}"),
            }
            let mut want: Vec<Binding> = model.values().cloned().collect();
            want.sort_by_key(|b| b.fingerprint);
            let (got, principals) = held(&p, clock);
            assert_eq!(got, want, "step {step}");
            let distinct: std::collections::HashSet<&ScopeKey> =
                model.values().map(|b| &b.who).collect();
            assert_eq!(principals, distinct.len(), "step {step}");
            assert_eq!(p.len(), model.len());
            for s in 0..7 {
                let sub = format!("u{s}");
                let mut of: Vec<Binding> = p.bindings_of(&sub, clock);
                of.sort_by_key(|b| b.fingerprint);
                let mine: Vec<Binding> =
                    want.iter().filter(|b| b.who.sub == sub).cloned().collect();
                assert_eq!(of, mine, "step {step}, {sub}");
            }
        }
    }
}
