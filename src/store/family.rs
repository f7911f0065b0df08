//! Token families: the tokens of one grant, so that revoking one token can
//! revoke its grant (issue 13).
//!
//! A **family** is named by a fingerprint-sized id: the fingerprint of the
//! first token revgate saw issued for the grant (its refresh token, else
//! its access token), or of the session (`sid`) the tokens carry, or of a
//! name an operator gave (`"family"` on `POST /admin/v1/principals`).
//! A [`Member`] is one token of it: its fingerprint, the family, the
//! *generation* it was issued in (0 at the first issuance, one more at each
//! refresh), whether it is a refresh token, its expiry, and, for a refresh
//! token exchanged for a *different* refresh token (rotation), when it was
//! superseded (what reuse detection looks for, `crate::proxy::issuance`).
//! A token belongs to the family it first joined: a later join naming
//! another family only updates what it says of the token itself (its
//! supersession, its expiry), so no answer can move a token out of a
//! revoked grant.
//!
//! A [`FamilyRule`] revokes a family: every member (`generation: None`,
//! the grant) or the members issued together at one generation (the access
//! token and the refresh token issued with it: `pair`). It is one record in
//! the journal and one event on the stream; applying it turns every member
//! it covers into an ordinary token rule (bloom filter + exact set), so the
//! per-request check is unchanged. The rule is kept (until `expires_at`,
//! like a scope rule: as long as a token it covers could live), and a token
//! that joins the family later and is covered is revoked when it joins
//! ("closed after revocation": a refresh the upstream honoured anyway
//! yields tokens that do not pass).
//!
//! The embedded store holds members and rules here ([`Families`]); Redis
//! holds them as `{P}:fmem:` and `{P}:fam:` keys (`store::redis::family`).
//! The token rules a family rule expands into are explicit token rules:
//! un-revoking one (admin `DELETE`) withdraws it until the family's rule is
//! applied again (a restart of the embedded store re-expands it from the
//! journal): un-revoke a family's tokens by waiting out its rule.

use std::sync::Mutex;

use dashmap::DashMap;
use serde::{Deserialize, Serialize};

use super::TokenRule;
use crate::credentials::Fingerprint;

/// How much of a token's family one revocation reaches (per dialect,
/// `revoke.<dialect>.family`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reach {
    /// The token alone.
    Token,
    /// The token and the tokens issued with it (an access token and its
    /// refresh token).
    Pair,
    /// Every token of the grant: the token, the tokens refreshed from it,
    /// the refresh token it came from.
    Grant,
}

/// One token of a family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The token's fingerprint.
    pub fingerprint: Fingerprint,
    /// The family's id.
    pub family: Fingerprint,
    /// 0 at the first issuance, one more at each refresh.
    pub generation: u32,
    /// A refresh token (else an access token).
    pub refresh: bool,
    /// Unix seconds after which the token (and the membership) expires.
    pub expires_at: u64,
    /// Unix seconds when this refresh token was exchanged for another
    /// refresh token; 0 when it was not.
    #[serde(default)]
    pub superseded_at: u64,
}

/// "The members of `family` (all of them, or those of one generation) are
/// revoked", kept until `expires_at`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FamilyRule {
    /// The family's id.
    pub family: Fingerprint,
    /// `None`: every member (grant); `Some(g)`: the members issued at `g`
    /// (pair).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u32>,
    /// Unix seconds of the revocation.
    pub revoked_at: u64,
    /// Unix seconds after which the rule may be forgotten.
    pub expires_at: u64,
    /// The token rules the rule expanded into where it was applied (filled
    /// by the store; what the stream event carries to other instances).
    /// Never journaled: replay expands again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<TokenRule>,
}

impl FamilyRule {
    /// The rule with its expiry and its members' at most
    /// [`super::MAX_EXPIRES_AT`] (see [`super::RevocationCommand::clamped`]).
    pub fn clamped(&self) -> FamilyRule {
        let mut f = self.clone();
        f.expires_at = f.expires_at.min(super::MAX_EXPIRES_AT);
        for t in &mut f.members {
            t.expires_at = t.expires_at.min(super::MAX_EXPIRES_AT);
        }
        f
    }

    /// Whether the rule covers a member of generation `g` at `now`.
    pub fn covers(&self, generation: u32, now: u64) -> bool {
        now < self.expires_at && self.generation.is_none_or(|g| g == generation)
    }
}

/// "Revoke this token and its family as far as `reach` goes", for the
/// store to resolve when it records it: what a revoke makes when the
/// token's membership could not be read (Redis away: the outbox keeps it,
/// and its replay resolves it against the memberships Redis holds then).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FamilyOf {
    /// The token's own rule (revoked whatever its family).
    pub token: TokenRule,
    /// How far; `None`: by what the token is (a refresh token's grant, an
    /// access token alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reach: Option<Reach>,
    /// Unix seconds of the revocation.
    pub revoked_at: u64,
    /// How long the family rule is kept (at least the token's own expiry).
    pub expires_at: u64,
}

impl FamilyOf {
    /// What it is once the token's membership `m` is known: the token's
    /// rule alone (no family, or reach `token`), or the family rule that
    /// carries it.
    pub fn resolve(&self, m: Option<&Member>) -> super::RevocationCommand {
        let token = super::RevocationCommand::Token(self.token);
        let Some(m) = m else {
            return token;
        };
        let reach = self.reach.unwrap_or(if m.refresh {
            Reach::Grant
        } else {
            Reach::Token
        });
        if reach == Reach::Token {
            return token;
        }
        super::RevocationCommand::Family(FamilyRule {
            family: m.family,
            generation: (reach == Reach::Pair).then_some(m.generation),
            revoked_at: self.revoked_at,
            expires_at: self.expires_at.max(m.expires_at),
            members: vec![TokenRule {
                fingerprint: self.token.fingerprint,
                expires_at: self.token.expires_at.max(m.expires_at),
            }],
        })
    }
}

fn secs(t: u64) -> u32 {
    t.min(u64::from(u32::MAX)) as u32
}

/// A member as the embedded store holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Slot {
    family: Fingerprint,
    generation: u32,
    expires_at: u32,
    superseded_at: u32,
    refresh: bool,
}

/// A family's members and rules.
#[derive(Default)]
struct Family {
    members: Vec<Fingerprint>,
    /// `(generation or None, expires_at)`, merged by generation.
    rules: Vec<(Option<u32>, u64)>,
}

impl Family {
    fn covers(&self, generation: u32, now: u64) -> bool {
        self.rules
            .iter()
            .any(|&(g, exp)| exp > now && g.is_none_or(|g| g == generation))
    }
}

/// The embedded store's families.
#[derive(Default)]
pub struct Families {
    members: DashMap<Fingerprint, Slot>,
    /// One lock for every family's lists: joins and revokes are token
    /// endpoint and revoke calls, never the per-request check.
    families: Mutex<std::collections::HashMap<Fingerprint, Family>>,
}

impl Families {
    /// No families.
    pub fn new() -> Self {
        Families::default()
    }

    fn families(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<Fingerprint, Family>> {
        self.families.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a member; returns whether anything changed and, when a rule
    /// of its family covers it, the token rule that revokes it.
    pub fn join(&self, m: &Member, now: u64) -> (bool, Option<TokenRule>) {
        if m.expires_at <= now {
            return (false, None);
        }
        let mut families = self.families();
        let mut changed = true;
        let slot = match self.members.get(&m.fingerprint).map(|s| *s) {
            // A token stays in the family it first joined.
            Some(old) => {
                let new = Slot {
                    expires_at: old.expires_at.max(secs(m.expires_at)),
                    superseded_at: old.superseded_at.max(secs(m.superseded_at)),
                    refresh: old.refresh || m.refresh,
                    ..old
                };
                changed = new != old;
                new
            }
            None => {
                families
                    .entry(m.family)
                    .or_default()
                    .members
                    .push(m.fingerprint);
                Slot {
                    family: m.family,
                    generation: m.generation,
                    expires_at: secs(m.expires_at),
                    superseded_at: secs(m.superseded_at),
                    refresh: m.refresh,
                }
            }
        };
        if changed {
            self.members.insert(m.fingerprint, slot);
        }
        let covered = families
            .get(&slot.family)
            .is_some_and(|f| f.covers(slot.generation, now))
            .then_some(TokenRule {
                fingerprint: m.fingerprint,
                expires_at: u64::from(slot.expires_at),
            });
        (changed, covered)
    }

    /// Records a family rule; returns the token rules of the live members
    /// it covers (its expansion), and whether the rule was new or later.
    pub fn revoke(&self, rule: &FamilyRule, now: u64) -> (bool, Vec<TokenRule>) {
        if rule.expires_at <= now {
            return (false, Vec::new());
        }
        let mut families = self.families();
        let family = families.entry(rule.family).or_default();
        let changed = match family.rules.iter_mut().find(|(g, _)| *g == rule.generation) {
            Some((_, exp)) if *exp >= rule.expires_at => false,
            Some((_, exp)) => {
                *exp = rule.expires_at;
                true
            }
            None => {
                family.rules.push((rule.generation, rule.expires_at));
                true
            }
        };
        let covered = family
            .members
            .iter()
            .filter_map(|fp| {
                let s = *self.members.get(fp)?;
                (u64::from(s.expires_at) > now && rule.covers(s.generation, now)).then_some(
                    TokenRule {
                        fingerprint: *fp,
                        expires_at: u64::from(s.expires_at),
                    },
                )
            })
            .collect();
        (changed, covered)
    }

    /// Whether applying `rule` would change anything.
    pub fn would_revoke(&self, rule: &FamilyRule, now: u64) -> bool {
        rule.expires_at > now
            && self.families().get(&rule.family).is_none_or(|f| {
                !f.rules
                    .iter()
                    .any(|&(g, exp)| g == rule.generation && exp >= rule.expires_at)
            })
    }

    /// Whether recording `m` would change anything.
    pub fn would_join(&self, m: &Member, now: u64) -> bool {
        m.expires_at > now
            && self.members.get(&m.fingerprint).is_none_or(|s| {
                s.expires_at < secs(m.expires_at)
                    || s.superseded_at < secs(m.superseded_at)
                    || (m.refresh && !s.refresh)
            })
    }

    /// The member with this fingerprint, if live at `now`.
    pub fn get(&self, fp: &Fingerprint, now: u64) -> Option<Member> {
        let s = *self.members.get(fp)?;
        (u64::from(s.expires_at) > now).then_some(Member {
            fingerprint: *fp,
            family: s.family,
            generation: s.generation,
            refresh: s.refresh,
            expires_at: u64::from(s.expires_at),
            superseded_at: u64::from(s.superseded_at),
        })
    }

    /// Members held.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// True when no member is held.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Drops expired members and rules, and families left with neither.
    pub fn expire(&self, now: u64) {
        self.members.retain(|_, s| u64::from(s.expires_at) > now);
        let mut families = self.families();
        families.retain(|_, f| {
            f.members.retain(|fp| self.members.contains_key(fp));
            f.rules.retain(|&(_, exp)| exp > now);
            !f.members.is_empty() || !f.rules.is_empty()
        });
    }

    /// The live family rules and memberships of one pass of `passes`
    /// (those whose family's, or member's, fingerprint's first byte is
    /// `pass` modulo `passes`: uniform for a keyed hash), as the commands
    /// that record them, rules first: a walk holds a `passes`-th of them at
    /// a time, in one vector sized for it up front (not grown by doubling).
    /// The rules' `revoked_at` is `now` (not kept).
    pub fn pass(&self, now: u64, pass: usize, passes: usize) -> Vec<super::RevocationCommand> {
        use super::RevocationCommand as C;
        let ours = |fp: &Fingerprint| passes <= 1 || fp.as_bytes()[0] as usize % passes == pass;
        let share = self.members.len() / passes.max(1);
        let mut out = Vec::with_capacity(share + share / 8 + 16);
        for (id, f) in self.families().iter().filter(|(id, _)| ours(id)) {
            for &(generation, expires_at) in f.rules.iter().filter(|&&(_, exp)| exp > now) {
                out.push(C::Family(FamilyRule {
                    family: *id,
                    generation,
                    revoked_at: now,
                    expires_at,
                    members: Vec::new(),
                }));
            }
        }
        // From the entry itself: a lookup of the map while iterating it
        // would take its shard's lock a second time.
        out.extend(self.members.iter().filter_map(|e| {
            let s = *e.value();
            (ours(e.key()) && u64::from(s.expires_at) > now).then_some(C::Join(Member {
                fingerprint: *e.key(),
                family: s.family,
                generation: s.generation,
                refresh: s.refresh,
                expires_at: u64::from(s.expires_at),
                superseded_at: u64::from(s.superseded_at),
            }))
        }));
        out
    }

    /// Every live family rule and membership, in one pass (tests).
    #[cfg(test)]
    pub fn snapshot(&self, now: u64) -> (Vec<FamilyRule>, Vec<Member>) {
        let (mut rules, mut members) = (Vec::new(), Vec::new());
        for c in self.pass(now, 0, 1) {
            match c {
                super::RevocationCommand::Family(r) => rules.push(r),
                super::RevocationCommand::Join(m) => members.push(m),
                _ => {}
            }
        }
        (rules, members)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(i: u8) -> Fingerprint {
        Fingerprint::from_bytes([i; 16])
    }

    fn member(i: u8, family: u8, generation: u32, refresh: bool, now: u64) -> Member {
        Member {
            fingerprint: fp(i),
            family: fp(family),
            generation,
            refresh,
            expires_at: now + 3600,
            superseded_at: 0,
        }
    }

    fn rule(family: u8, generation: Option<u32>, now: u64) -> FamilyRule {
        FamilyRule {
            family: fp(family),
            generation,
            revoked_at: now,
            expires_at: now + 7200,
            members: Vec::new(),
        }
    }

    #[test]
    fn a_pair_rule_covers_its_generation_and_a_grant_rule_closes_the_family() {
        let now = 1_800_000_000;
        let f = Families::new();
        // generation 0: access 1 + refresh 2; generation 1: access 3 + refresh 4.
        for m in [
            member(1, 9, 0, false, now),
            member(2, 9, 0, true, now),
            member(3, 9, 1, false, now),
            member(4, 9, 1, true, now),
            member(5, 8, 0, false, now),
        ] {
            assert_eq!(f.join(&m, now), (true, None));
        }
        let fps = |rules: Vec<TokenRule>| {
            let mut v: Vec<_> = rules.iter().map(|r| r.fingerprint).collect();
            v.sort();
            v
        };
        let (changed, pair) = f.revoke(&rule(9, Some(1), now), now);
        assert!(changed);
        assert_eq!(fps(pair), vec![fp(3), fp(4)]);
        assert!(!f.would_revoke(&rule(9, Some(1), now), now));
        // A later member of generation 2 is not covered by the pair rule.
        assert_eq!(f.join(&member(6, 9, 2, false, now), now).1, None);
        let (_, grant) = f.revoke(&rule(9, None, now), now);
        assert_eq!(fps(grant), vec![fp(1), fp(2), fp(3), fp(4), fp(6)]);
        // Closed: a token that joins later is revoked as it joins.
        let (_, covered) = f.join(&member(7, 9, 3, false, now), now);
        assert_eq!(covered.map(|r| r.fingerprint), Some(fp(7)));
        // Another family is untouched.
        assert_eq!(f.join(&member(10, 8, 1, false, now), now).1, None);
    }

    #[test]
    fn a_family_of_resolves_by_reach_and_by_role() {
        use super::super::RevocationCommand;
        let now = 1_800_000_000;
        let of = |reach| FamilyOf {
            token: TokenRule {
                fingerprint: fp(1),
                expires_at: now + 10,
            },
            reach,
            revoked_at: now,
            expires_at: now + 7200,
        };
        let access = member(1, 9, 4, false, now);
        let refresh = member(1, 9, 4, true, now);
        // No membership, or reach token: the token alone.
        assert_eq!(
            of(None).resolve(None),
            RevocationCommand::Token(of(None).token)
        );
        assert!(matches!(
            of(Some(Reach::Token)).resolve(Some(&refresh)),
            RevocationCommand::Token(_)
        ));
        // By role: an access token alone, a refresh token's grant.
        assert!(matches!(
            of(None).resolve(Some(&access)),
            RevocationCommand::Token(_)
        ));
        let RevocationCommand::Family(grant) = of(None).resolve(Some(&refresh)) else {
            panic!("a refresh token's grant");
        };
        assert_eq!((grant.family, grant.generation), (fp(9), None));
        assert_eq!(grant.members[0].expires_at, now + 3600);
        let RevocationCommand::Family(pair) = of(Some(Reach::Pair)).resolve(Some(&access)) else {
            panic!("the pair");
        };
        assert_eq!(pair.generation, Some(4));
        assert_eq!(pair.expires_at, now + 7200);
    }

    #[test]
    fn passes_hold_every_rule_and_member_in_exactly_one_of_them() {
        let now = 1_800_000_000;
        let f = Families::new();
        for i in 0..40u8 {
            f.join(&member(i, 100 + i % 5, 0, false, now), now);
        }
        for family in 100..105u8 {
            f.revoke(&rule(family, None, now), now);
        }
        let (all_rules, all_members) = f.snapshot(now);
        assert_eq!((all_rules.len(), all_members.len()), (5, 40));
        let (mut rules, mut members) = (Vec::new(), Vec::new());
        for pass in 0..3 {
            for c in f.pass(now, pass, 3) {
                match c {
                    crate::store::RevocationCommand::Family(r) => rules.push(r.family),
                    crate::store::RevocationCommand::Join(m) => members.push(m.fingerprint),
                    other => panic!("not a family's: {other:?}"),
                }
            }
        }
        rules.sort();
        members.sort();
        let mut want: Vec<_> = all_members.iter().map(|m| m.fingerprint).collect();
        want.sort();
        assert_eq!(members, want, "each member in one pass");
        let mut want: Vec<_> = all_rules.iter().map(|r| r.family).collect();
        want.sort();
        assert_eq!(rules, want, "each rule in one pass");
    }

    #[test]
    fn a_token_stays_in_its_first_family_and_supersession_only_grows() {
        let now = 1_800_000_000;
        let f = Families::new();
        f.join(&member(1, 9, 0, true, now), now);
        let moved = Member {
            superseded_at: now,
            ..member(1, 8, 4, true, now)
        };
        assert!(f.would_join(&moved, now));
        assert_eq!(f.join(&moved, now), (true, None));
        let m = f.get(&fp(1), now).unwrap();
        assert_eq!((m.family, m.generation, m.superseded_at), (fp(9), 0, now));
        // Joining again with no supersession does not clear it.
        assert!(!f.would_join(&member(1, 9, 0, true, now), now));
        assert!(!f.join(&member(1, 9, 0, true, now), now).0);
        assert_eq!(f.get(&fp(1), now).unwrap().superseded_at, now);
        // Expiry drops members, rules and empty families.
        f.revoke(&rule(9, None, now), now);
        f.expire(now + 8000);
        assert!(f.is_empty());
        assert_eq!(f.snapshot(now + 8000), (Vec::new(), Vec::new()));
    }
}
