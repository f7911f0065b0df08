//! Live sessions: upgraded connections and HTTP/2 streams still carrying
//! traffic under a credential judged once, at their start, and closed the
//! moment a revocation covers that credential.
//!
//! ```text
//! proxy (upgrade or h2 request passed)    LocalCache (every path that learns a rule)
//!   admit(store, fp, attrs) ──register──► LiveSessions ◄──revoked(rule)── insert_token
//!   │  re-check the cache (race, below)    │ covers(rule, entry)?          upsert_scope
//!   ▼                                      │  yes: cancel, count, log      BloomRebuild::insert
//!   LiveSession ─ token ─► splice / body   ▼                               (Redis scan)
//!   (drop: entry removed)               entry removed
//! ```
//!
//! One mechanism for every store and every origin of a rule: the registry is
//! owned by [`LocalCache`](super::LocalCache), and a rule reaches the cache
//! whichever way it comes (this instance's `apply`, the admin API, a dialect,
//! the Redis stream tail, a full Redis resync by `SCAN`), so it reaches the
//! registry too. Closing is event-driven: the rule's arrival cancels the
//! session's [`CancellationToken`] synchronously, and the task carrying the
//! session (the upgrade splice, or the response body being polled) wakes at
//! once. The bound is therefore the rule's propagation to this instance (a
//! few ms through the Redis stream), not a polling period.
//!
//! Which rules cover which session is decided in ONE place, [`covers`]. A
//! session is known by every name the verdict judges its credential by
//! ([`Admitted::names`]): its token's identity, a second token sent with it,
//! and (with `tokens.revoke_by_jti`) its `jti` under its issuer and under
//! any. `jti` revocations are token rules on those names, so they need no arm
//! of their own; token families would add names the same way. A new rule
//! kind adds a [`Rule`] variant and an arm in [`covers`], and is then tried on
//! every open entry; narrowing the entries it is tried on, as token rules do
//! with the index of names, is optional.
//!
//! The race between the verdict and the registration: a rule that arrives
//! after the request was judged but before [`admit`] registered it would find
//! no entry. So [`admit`] registers first and then re-checks the cache (and,
//! on a bloom hit, the store's exact set); the registry's one mutex orders
//! the two sides: either the rule's sweep runs after the entry is in (and
//! cancels it), or the cache update it follows is visible to the re-check.
//!
//! Cost: nothing for plain HTTP/1.1 requests (fast path or hyper), which are
//! judged per request anyway. An upgrade or an HTTP/2 stream pays a second
//! credential extraction and one JWT peek for its attributes, one
//! mutex-guarded map insert and remove, a bloom check per name, and a few
//! small allocations (the entry's attributes, its cancellation token, the
//! cancellation future of its body); `benches/live.rs`, BENCHMARKS.md. A revocation pays one uncontended lock
//! and an index lookup per token rule (also per key of a Redis `SCAN`), and
//! a pass over every live entry per scope rule (scope rules are rare).
//!
//! Closing means: an upgraded connection's two sides are dropped (a TCP
//! close; revgate does not speak the upgraded protocol, so a WebSocket sees
//! no close frame), an HTTP/2 stream is reset (the connection's other
//! streams go on), and a request still waiting for the upstream's head is
//! answered 401 `invalid_token`, as the verdict would now.
//!
//! Not covered: a long response to a plain HTTP/1.1 request (e.g. Server-Sent
//! Events) is not registered, so it runs to its end; its next request is
//! judged again. A full Redis resync that installs the bloom snapshot
//! carries no fingerprints: [`LiveSessions::fingerprints`] lets the store
//! re-check the live ones against it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio_util::sync::CancellationToken;

use super::{now_unix, RevocationStore, ScopeRule};
use crate::credentials::{Attributes, Fingerprint};

/// What kind of traffic a session carries (a metric label and a log field).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionKind {
    /// An upgraded connection (WebSocket or any `Upgrade`), spliced through.
    Upgrade,
    /// One HTTP/2 stream (its request and response bodies).
    Stream,
}

impl SessionKind {
    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            SessionKind::Upgrade => "upgrade",
            SessionKind::Stream => "h2_stream",
        }
    }
}

/// What a session was admitted with: the credential as the rules see it.
#[derive(Clone, Debug)]
pub struct Admitted {
    /// The credential's fingerprint (its token's identity): the name logs show.
    pub fingerprint: Fingerprint,
    /// Every other name a token rule may revoke it by: a second token that
    /// came with it, its `jti` (under its issuer, and under any).
    pub also: Vec<Fingerprint>,
    /// Its attributes (peeked claims, identity headers), for scope rules.
    pub attributes: Attributes,
}

impl Admitted {
    /// A credential known by its fingerprint alone (no attributes yet).
    pub fn new(fingerprint: Fingerprint) -> Self {
        Admitted {
            fingerprint,
            also: Vec::new(),
            attributes: Attributes::default(),
        }
    }

    /// Adds a name a token rule may revoke it by.
    pub fn also(&mut self, name: Fingerprint) {
        if !self.names().any(|n| *n == name) {
            self.also.push(name);
        }
    }

    /// Every name a token rule may revoke it by, its fingerprint first.
    pub fn names(&self) -> impl Iterator<Item = &Fingerprint> {
        std::iter::once(&self.fingerprint).chain(&self.also)
    }
}

/// A newly applied rule, as the registry sees it.
#[derive(Clone, Copy, Debug)]
pub enum Rule<'a> {
    /// A token rule: this fingerprint is revoked.
    Token(&'a Fingerprint),
    /// A new or merged scope rule.
    Scope(&'a ScopeRule),
}

impl Rule<'_> {
    /// The label in logs.
    pub const fn name(self) -> &'static str {
        match self {
            Rule::Token(_) => "token",
            Rule::Scope(_) => "scope",
        }
    }
}

/// Whether `rule` covers a session admitted with `admitted` at `now`: the
/// one place this is decided (see the module docs).
pub fn covers(rule: Rule<'_>, admitted: &Admitted, now: u64) -> bool {
    match rule {
        Rule::Token(fp) => admitted.names().any(|n| n == fp),
        Rule::Scope(scope) => scope.matches(&admitted.attributes, now),
    }
}

struct Entry {
    admitted: Admitted,
    kind: SessionKind,
    cancel: CancellationToken,
}

/// The registry's state, behind one mutex.
#[derive(Default)]
struct Registry {
    entries: HashMap<u64, Entry>,
    /// Entry ids by each of their names: a token rule finds its few entries at once.
    by_fingerprint: HashMap<Fingerprint, Vec<u64>>,
}

impl Registry {
    /// The ids of the entries `rule` covers. Token rules try only the
    /// entries of their fingerprint; any other kind tries every entry.
    fn covered(&self, rule: Rule<'_>, now: u64) -> Vec<u64> {
        let hit = |id: &u64, e: &Entry| covers(rule, &e.admitted, now).then_some(*id);
        match rule {
            Rule::Token(fp) => self
                .by_fingerprint
                .get(fp)
                .into_iter()
                .flatten()
                .filter_map(|id| self.entries.get(id).and_then(|e| hit(id, e)))
                .collect(),
            _ => self
                .entries
                .iter()
                .filter_map(|(id, e)| hit(id, e))
                .collect(),
        }
    }

    fn remove(&mut self, id: u64) -> Option<Entry> {
        let entry = self.entries.remove(&id)?;
        for fp in entry.admitted.names() {
            if let Some(ids) = self.by_fingerprint.get_mut(fp) {
                ids.retain(|i| *i != id);
                if ids.is_empty() {
                    self.by_fingerprint.remove(fp);
                }
            }
        }
        Some(entry)
    }
}

/// Every live session of this instance.
#[derive(Default)]
pub struct LiveSessions {
    registry: Mutex<Registry>,
    next_id: AtomicU64,
}

impl LiveSessions {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        // Nothing under this lock can leave the maps half-updated.
        self.registry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers a session; it stays until the returned handle is dropped
    /// or a rule covering it arrives. Prefer [`admit`], which also closes
    /// the race with a rule that arrived since the verdict.
    pub fn register(self: &Arc<Self>, admitted: Admitted, kind: SessionKind) -> LiveSession {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let cancel = CancellationToken::new();
        let fp = admitted.fingerprint;
        let mut reg = self.lock();
        for name in admitted.names() {
            reg.by_fingerprint.entry(*name).or_default().push(id);
        }
        reg.entries.insert(
            id,
            Entry {
                admitted,
                kind,
                cancel: cancel.clone(),
            },
        );
        drop(reg);
        LiveSession {
            registry: self.clone(),
            id,
            fingerprint: fp,
            cancel,
        }
    }

    /// A rule was applied to the local state: closes every session it
    /// covers. Returns how many.
    pub fn revoked(&self, rule: Rule<'_>) -> usize {
        let now = now_unix();
        let mut closed = Vec::new();
        {
            let mut reg = self.lock();
            if reg.entries.is_empty() {
                return 0;
            }
            for id in reg.covered(rule, now) {
                if let Some(e) = reg.remove(id) {
                    closed.push(e);
                }
            }
        }
        let n = closed.len();
        close(closed, rule.name());
        n
    }

    /// Closes one session (its credential was found covered by `rule`).
    fn close_one(&self, session: &LiveSession, rule: &'static str) {
        let entry = self.lock().remove(session.id);
        close(entry, rule);
    }

    /// Sessions open now.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// True when no session is open.
    pub fn is_empty(&self) -> bool {
        self.lock().entries.is_empty()
    }

    /// The distinct fingerprints of the open sessions (for a store that
    /// learned rules without their fingerprints, e.g. from a bloom snapshot,
    /// to re-check them).
    pub fn fingerprints(&self) -> Vec<Fingerprint> {
        self.lock().by_fingerprint.keys().copied().collect()
    }
}

/// Cancels the closed entries (outside the lock), counts and logs each.
fn close(closed: impl IntoIterator<Item = Entry>, rule: &'static str) {
    for e in closed {
        e.cancel.cancel();
        crate::metrics::live_session_closed(e.kind.as_str());
        tracing::info!(
            fingerprint = %e.admitted.fingerprint.short(),
            kind = e.kind.as_str(),
            rule,
            "revoked credential: live session closed"
        );
    }
}

/// One registered session: its cancellation, and its registry entry,
/// removed when this is dropped.
pub struct LiveSession {
    registry: Arc<LiveSessions>,
    id: u64,
    fingerprint: Fingerprint,
    cancel: CancellationToken,
}

impl LiveSession {
    /// Cancelled when a revocation covers the session's credential.
    pub fn token(&self) -> &CancellationToken {
        &self.cancel
    }

    /// The credential's fingerprint.
    pub fn fingerprint(&self) -> &Fingerprint {
        &self.fingerprint
    }

    /// Whether a revocation has closed it.
    pub fn is_revoked(&self) -> bool {
        self.cancel.is_cancelled()
    }
}

impl Drop for LiveSession {
    fn drop(&mut self) {
        self.registry.lock().remove(self.id);
    }
}

impl std::fmt::Debug for LiveSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveSession")
            .field("fingerprint", &self.fingerprint)
            .field("revoked", &self.is_revoked())
            .finish()
    }
}

/// Registers a session admitted with `admitted` in `store`'s cache, then
/// re-checks the credential against what arrived since its verdict (see the
/// module docs): a session already covered is returned cancelled. A bloom
/// hit the store cannot answer counts as revoked, as in the verdict.
pub async fn admit(
    store: &dyn RevocationStore,
    admitted: Admitted,
    kind: SessionKind,
) -> LiveSession {
    let cache = store.cache();
    let session = cache.live().register(admitted.clone(), kind);
    let mut revoked_token = false;
    for name in admitted.names() {
        if cache.may_contain(name) && store.is_token_revoked(name).await.unwrap_or(true) {
            revoked_token = true;
            break;
        }
    }
    if revoked_token {
        cache.live().close_one(&session, "token");
    } else if cache.has_scope_rules() && cache.scope_matches(&admitted.attributes, now_unix()) {
        cache.live().close_one(&session, "scope");
    }
    session
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::FingerprintKey;
    use crate::store::ScopeKey;

    fn fp(i: u8) -> Fingerprint {
        FingerprintKey::from_bytes([1; 32]).fingerprint(&[i])
    }

    fn admitted(i: u8, sub: Option<&str>, iat: Option<u64>) -> Admitted {
        let mut a = Admitted::new(fp(i));
        a.attributes = Attributes {
            sub: sub.map(Into::into),
            iat,
            ..Default::default()
        };
        a
    }

    fn scope(sub: &str, revoked_at: u64) -> ScopeRule {
        ScopeRule {
            key: ScopeKey {
                sub: sub.into(),
                org: None,
                provider: None,
            },
            revoked_at,
            expires_at: now_unix() + 3600,
        }
    }

    #[test]
    fn covers_is_the_rule_of_each_kind() {
        let now = now_unix();
        let a = admitted(1, Some("alice"), Some(now - 10));
        assert!(covers(Rule::Token(&fp(1)), &a, now));
        assert!(!covers(Rule::Token(&fp(2)), &a, now));
        assert!(covers(Rule::Scope(&scope("alice", now)), &a, now));
        assert!(
            !covers(Rule::Scope(&scope("alice", now - 20)), &a, now),
            "issued after the rule's T"
        );
        assert!(!covers(Rule::Scope(&scope("bob", now)), &a, now));
        // A second name (a jti's, another token's) is covered like the first.
        let mut b = a.clone();
        b.also(fp(9));
        b.also(fp(9));
        b.also(fp(1));
        assert_eq!(b.also, [fp(9)], "names are kept once");
        assert!(covers(Rule::Token(&fp(9)), &b, now));
        assert!(covers(Rule::Token(&fp(1)), &b, now));
    }

    #[test]
    fn a_rule_cancels_exactly_the_sessions_it_covers_and_drop_unregisters() {
        let live = Arc::new(LiveSessions::new());
        let now = now_unix();
        let t1 = live.register(admitted(1, Some("alice"), Some(now)), SessionKind::Upgrade);
        let t1b = live.register(admitted(1, None, None), SessionKind::Stream);
        let other = live.register(admitted(2, Some("bob"), Some(now)), SessionKind::Stream);
        let alice = live.register(admitted(3, Some("alice"), None), SessionKind::Upgrade);
        let mut two = admitted(4, None, None);
        two.also(fp(5));
        let two = live.register(two, SessionKind::Stream);
        assert_eq!(live.len(), 5);
        assert_eq!(live.revoked(Rule::Token(&fp(5))), 1, "by its second name");
        assert!(two.is_revoked());
        assert_eq!(live.fingerprints().len(), 3, "both names unindexed");
        assert_eq!(live.len(), 4);

        assert_eq!(live.revoked(Rule::Token(&fp(1))), 2);
        assert!(t1.is_revoked() && t1b.is_revoked());
        assert!(!other.is_revoked() && !alice.is_revoked());
        assert_eq!(live.len(), 2, "closed entries leave the registry");
        assert_eq!(live.revoked(Rule::Token(&fp(1))), 0, "closed once");

        assert_eq!(live.revoked(Rule::Scope(&scope("alice", now))), 1);
        assert!(alice.is_revoked() && !other.is_revoked());

        drop(other);
        assert!(live.is_empty());
        assert!(live.fingerprints().is_empty());
        drop((t1, t1b, alice));
        assert!(live.is_empty());
    }

    #[tokio::test]
    async fn admit_closes_a_session_whose_rule_arrived_after_its_verdict() {
        use crate::store::memory::MemoryStore;
        use crate::store::{RevocationCommand, TokenRule};
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = MemoryStore::open(&dir.path().join("j"), 1000, 0.01).unwrap();
        let now = now_unix();
        // Rules applied between the verdict and the registration.
        store
            .apply(RevocationCommand::Token(TokenRule {
                fingerprint: fp(1),
                expires_at: now + 60,
            }))
            .await
            .unwrap();
        store
            .apply(RevocationCommand::Scope(scope("alice", now)))
            .await
            .unwrap();
        let t = admit(&store, admitted(1, None, None), SessionKind::Upgrade).await;
        assert!(t.is_revoked(), "token rule");
        let s = admit(
            &store,
            admitted(2, Some("alice"), Some(now)),
            SessionKind::Stream,
        )
        .await;
        assert!(s.is_revoked(), "scope rule");
        let ok = admit(
            &store,
            admitted(3, Some("bob"), Some(now)),
            SessionKind::Stream,
        )
        .await;
        assert!(!ok.is_revoked());
        assert_eq!(
            store.cache().live().len(),
            1,
            "only the open one is registered"
        );

        // And a rule after the registration closes it through the cache.
        store
            .apply(RevocationCommand::Token(TokenRule {
                fingerprint: fp(3),
                expires_at: now + 60,
            }))
            .await
            .unwrap();
        assert!(ok.is_revoked());
        assert!(store.cache().live().is_empty());
    }

    #[test]
    fn a_rebuilds_fingerprints_reach_the_sessions() {
        let cache = crate::store::LocalCache::new(100, 0.01);
        let s = cache
            .live()
            .register(admitted(7, None, None), SessionKind::Upgrade);
        let other = cache
            .live()
            .register(admitted(8, None, None), SessionKind::Upgrade);
        let rebuild = cache.begin_rebuild(10);
        rebuild.insert(&fp(7));
        cache.finish_rebuild(rebuild);
        assert!(s.is_revoked());
        assert!(!other.is_revoked());
    }
}
