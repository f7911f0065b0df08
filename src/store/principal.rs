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
//! Memory (embedded): a binding is its fingerprint, an interned principal
//! id and two `u32` times in a map, plus the fingerprint once more in its
//! principal's member list; distinct principals are stored once
//! (BENCHMARKS.md, "Principals").

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use dashmap::DashMap;
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

/// A binding as the embedded store holds it: an interned principal and
/// two times (`u32` unix seconds: until 2106).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Bound {
    principal: u32,
    issued_at: u32,
    expires_at: u32,
}

fn secs(t: u64) -> u32 {
    t.min(u64::from(u32::MAX)) as u32
}

/// The distinct principals, each stored once, and their members.
#[derive(Default)]
struct Table {
    ids: HashMap<Arc<ScopeKey>, u32>,
    keys: Vec<Arc<ScopeKey>>,
    /// Principal ids by subject (a scope rule names a subject).
    by_sub: HashMap<String, Vec<u32>>,
    /// Fingerprints bound to each principal, by id.
    members: Vec<Vec<Fingerprint>>,
}

impl Table {
    fn intern(&mut self, who: &ScopeKey) -> u32 {
        if let Some(&id) = self.ids.get(who) {
            return id;
        }
        let id = self.keys.len() as u32;
        let shared = Arc::new(who.clone());
        self.ids.insert(shared.clone(), id);
        self.keys.push(shared);
        self.members.push(Vec::new());
        self.by_sub.entry(who.sub.clone()).or_default().push(id);
        id
    }
}

/// The embedded store's bindings and the token rules derived from them.
#[derive(Default)]
pub struct Principals {
    bindings: DashMap<Fingerprint, Bound>,
    table: Mutex<Table>,
    /// Token rules derived from a binding and a scope rule (see the module
    /// doc): fingerprint -> expiry.
    derived: DashMap<Fingerprint, u64>,
}

impl Principals {
    /// An empty set.
    pub fn new() -> Self {
        Principals::default()
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records (or replaces) a binding; returns the derived rule when one
    /// of `rules` (the subject's scope rules) covers it. `false` in the
    /// second place when nothing changed.
    pub fn bind(&self, b: &Binding, rules: &[ScopeRule], now: u64) -> (bool, Option<TokenRule>) {
        {
            let mut t = self.table();
            let principal = t.intern(&b.who);
            let bound = Bound {
                principal,
                issued_at: secs(b.issued_at),
                expires_at: secs(b.expires_at),
            };
            match self.bindings.insert(b.fingerprint, bound) {
                Some(old) if old == bound => return (false, self.derived_rule(&b.fingerprint)),
                Some(old) => {
                    if old.principal != principal {
                        t.members[old.principal as usize].retain(|f| f != &b.fingerprint);
                        t.members[principal as usize].push(b.fingerprint);
                    }
                }
                None => t.members[principal as usize].push(b.fingerprint),
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
        let Some((_, old)) = self.bindings.remove(fp) else {
            return false;
        };
        self.table().members[old.principal as usize].retain(|f| f != fp);
        self.derived.remove(fp);
        true
    }

    /// The binding of a fingerprint, if any and live at `now`.
    pub fn get(&self, fp: &Fingerprint, now: u64) -> Option<Binding> {
        let bound = *self.bindings.get(fp)?;
        if u64::from(bound.expires_at) <= now {
            return None;
        }
        let who = ScopeKey::clone(self.table().keys.get(bound.principal as usize)?);
        Some(Binding {
            fingerprint: *fp,
            who,
            issued_at: u64::from(bound.issued_at),
            expires_at: u64::from(bound.expires_at),
        })
    }

    /// Gives back what replay's growth left unused (member lists grow by
    /// doubling).
    pub fn shrink(&self) {
        for m in &mut self.table().members {
            m.shrink_to_fit();
        }
    }

    /// Bindings held (live or not yet dropped by maintenance).
    pub fn len(&self) -> usize {
        self.bindings.len()
    }

    /// True when no binding is held.
    pub fn is_empty(&self) -> bool {
        self.bindings.is_empty()
    }

    /// Whether a derived rule revokes this fingerprint at `now`.
    pub fn is_derived_revoked(&self, fp: &Fingerprint, now: u64) -> bool {
        self.derived.get(fp).is_some_and(|exp| *exp > now)
    }

    /// Every live binding of `sub` (whose principal `key`'s filters admit,
    /// when given).
    fn bindings_of(&self, sub: &str, now: u64) -> Vec<Binding> {
        let members: Vec<(ScopeKey, Vec<Fingerprint>)> = {
            let t = self.table();
            t.by_sub
                .get(sub)
                .into_iter()
                .flatten()
                .map(|&id| {
                    (
                        ScopeKey::clone(&t.keys[id as usize]),
                        t.members[id as usize].clone(),
                    )
                })
                .collect()
        };
        let mut out = Vec::new();
        for (who, fps) in members {
            for fp in fps {
                let Some(bound) = self.bindings.get(&fp).map(|b| *b) else {
                    continue;
                };
                if u64::from(bound.expires_at) <= now {
                    continue;
                }
                out.push(Binding {
                    fingerprint: fp,
                    who: who.clone(),
                    issued_at: u64::from(bound.issued_at),
                    expires_at: u64::from(bound.expires_at),
                });
            }
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

    /// Drops expired bindings and derived rules; returns the bindings dropped.
    pub fn expire(&self, now: u64) -> usize {
        let mut gone = Vec::new();
        self.bindings.retain(|fp, b| {
            let live = u64::from(b.expires_at) > now;
            if !live {
                gone.push((*fp, b.principal));
            }
            live
        });
        if !gone.is_empty() {
            let mut t = self.table();
            for (fp, p) in &gone {
                t.members[*p as usize].retain(|f| f != fp);
            }
        }
        self.derived.retain(|_, exp| *exp > now);
        gone.len()
    }

    /// Every live binding (for a compaction snapshot).
    pub fn snapshot(&self, now: u64) -> Vec<Binding> {
        let keys = self.table().keys.clone();
        self.bindings
            .iter()
            .filter(|e| u64::from(e.value().expires_at) > now)
            .filter_map(|e| {
                let b = *e.value();
                Some(Binding {
                    fingerprint: *e.key(),
                    who: ScopeKey::clone(keys.get(b.principal as usize)?),
                    issued_at: u64::from(b.issued_at),
                    expires_at: u64::from(b.expires_at),
                })
            })
            .collect()
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
}
