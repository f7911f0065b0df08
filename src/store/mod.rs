//! The revocation store: what a revocation is, and the trait both stores
//! implement.
//!
//! ```text
//!   RevocationStore (trait): apply(cmd) -> durable ack, is_token_revoked(fp)
//!          |                                   |
//!   MemoryStore (embedded default)       RedisStore (shared, many instances)
//!          \_______ LocalCache (bloom of revoked fingerprints + scope rules) _/
//! ```
//!
//! The per-request check is split in two so the hot path never allocates or
//! awaits: [`LocalCache`] answers "definitely not revoked" synchronously for
//! almost every token, and only a bloom hit calls the store's async exact
//! lookup. Scope rules are few and kept whole in every instance's cache, so
//! they are always matched locally.
//!
//! Times are unix seconds throughout: JWT `iat`/`exp` are seconds, and a
//! token issued in the same second as a scope revocation is revoked (fail
//! closed).

pub mod cache;
pub mod family;
pub mod journal;
pub mod live;
pub mod memory;
pub mod principal;
pub mod redis;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

pub use cache::LocalCache;
pub use family::{FamilyRule, Member};
pub use principal::Binding;

use crate::credentials::{Attributes, Fingerprint};

/// Now, in unix seconds.
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// "This fingerprint is revoked until `expires_at`."
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRule {
    /// The revoked token's fingerprint.
    pub fingerprint: Fingerprint,
    /// Unix seconds after which the rule may be forgotten (the token has expired).
    pub expires_at: u64,
}

/// What a scope rule covers: subject, and optionally org and provider
/// (`None` = any).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ScopeKey {
    /// Subject (user id); required.
    pub sub: String,
    /// Organisation, or any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
    /// Provider, or any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
}

/// "Every token of `key` issued at or before `revoked_at` is revoked", until
/// `expires_at`, when every token it could cover has expired anyway.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeRule {
    /// Who is covered.
    #[serde(flatten)]
    pub key: ScopeKey,
    /// T: tokens issued at or before this unix second are revoked.
    pub revoked_at: u64,
    /// Unix seconds after which the rule may be forgotten.
    pub expires_at: u64,
}

impl ScopeRule {
    /// Whether a credential with these attributes is covered at `now`.
    /// A credential with no known issue time is covered until the rule
    /// expires (fail closed).
    pub fn matches(&self, attrs: &Attributes, now: u64) -> bool {
        if now >= self.expires_at {
            return false;
        }
        if attrs.sub.as_deref() != Some(self.key.sub.as_str()) {
            return false;
        }
        if let Some(org) = &self.key.org {
            if attrs.org.as_deref() != Some(org.as_str()) {
                return false;
            }
        }
        if let Some(p) = &self.key.provider {
            if attrs.provider.as_deref() != Some(p.as_str()) {
                return false;
            }
        }
        match attrs.iat {
            Some(iat) => iat <= self.revoked_at,
            None => true,
        }
    }

    /// Merges a later revocation of the same key: the latest T and expiry win,
    /// so revoking twice is one rule.
    pub fn merge(&mut self, other: &ScopeRule) {
        self.revoked_at = self.revoked_at.max(other.revoked_at);
        self.expires_at = self.expires_at.max(other.expires_at);
    }
}

/// One revocation, as the dialects and the admin API produce it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RevocationCommand {
    /// Revoke one token.
    Token(TokenRule),
    /// Revoke every token of a scope issued up to now.
    Scope(ScopeRule),
    /// Un-revoke (admin only), or forget a binding.
    Remove(RevocationTarget),
    /// Record who holds a credential ([`principal`]): not a revocation
    /// itself, but it rides the same journal and shared store, and a scope
    /// rule already there may cover it at once.
    Bind(Binding),
    /// Record that a token belongs to a family ([`family`]); a rule of the
    /// family already there may revoke it at once.
    Join(Member),
    /// Revoke a family's tokens (all, or one generation's): one command,
    /// one journal record, one stream event, however many members.
    Family(FamilyRule),
    /// Revoke a token and its family, resolved by the store when it
    /// records it ([`family::FamilyOf`]).
    FamilyOf(family::FamilyOf),
}

/// What an un-revoke names.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevocationTarget {
    /// A token rule.
    Token(Fingerprint),
    /// A scope rule.
    Scope(ScopeKey),
    /// A credential's binding (and what scope rules derived from it).
    Binding(Fingerprint),
}

/// The latest expiry a store records: 9999-12-31T23:59:59Z. Redis's
/// `EXAT` takes at most ~9.2e15 seconds and refuses the whole write beyond
/// it, and an expiry comes from input nobody vouched for (an unverified
/// JWT `exp`, an import line's `expires_at`), so the Redis store records a
/// later one as this: revoked as good as forever, and never a write Redis
/// refuses on every outbox replay (issue 18 review).
pub const MAX_EXPIRES_AT: u64 = 253_402_300_799;

impl RevocationCommand {
    /// The command with every expiry in it at most [`MAX_EXPIRES_AT`].
    pub fn clamped(&self) -> RevocationCommand {
        let c = |t: &mut u64| *t = (*t).min(MAX_EXPIRES_AT);
        let mut cmd = self.clone();
        match &mut cmd {
            RevocationCommand::Token(t) => c(&mut t.expires_at),
            RevocationCommand::Scope(s) => c(&mut s.expires_at),
            RevocationCommand::Bind(b) => c(&mut b.expires_at),
            RevocationCommand::Join(m) => c(&mut m.expires_at),
            RevocationCommand::Family(f) => *f = f.clamped(),
            RevocationCommand::FamilyOf(f) => {
                c(&mut f.expires_at);
                c(&mut f.token.expires_at);
            }
            RevocationCommand::Remove(_) => {}
        }
        cmd
    }

    /// The rule the command writes, when it is one rule: two commands
    /// naming the same one must reach a store in their order (a revocation
    /// and its removal do not commute), two naming different ones need
    /// not. `None` (a family's commands, resolved against memberships)
    /// keeps its order with every command.
    pub fn ordered_target(&self) -> Option<RevocationTarget> {
        match self {
            RevocationCommand::Token(t) => Some(RevocationTarget::Token(t.fingerprint)),
            RevocationCommand::Scope(s) => Some(RevocationTarget::Scope(s.key.clone())),
            RevocationCommand::Bind(b) => Some(RevocationTarget::Binding(b.fingerprint)),
            RevocationCommand::Remove(t) => Some(t.clone()),
            RevocationCommand::Join(_)
            | RevocationCommand::Family(_)
            | RevocationCommand::FamilyOf(_) => None,
        }
    }

    /// Unix seconds after which the command no longer matters (for
    /// compaction); `None` for removals, which matter until compaction.
    pub fn expires_at(&self) -> Option<u64> {
        match self {
            RevocationCommand::Token(t) => Some(t.expires_at),
            RevocationCommand::Scope(s) => Some(s.expires_at),
            RevocationCommand::Bind(b) => Some(b.expires_at),
            RevocationCommand::Join(m) => Some(m.expires_at),
            RevocationCommand::Family(f) => Some(f.expires_at),
            RevocationCommand::FamilyOf(f) => Some(f.expires_at.max(f.token.expires_at)),
            RevocationCommand::Remove(_) => None,
        }
    }
}

/// What `apply` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// A new rule (or a removal that removed something).
    Changed,
    /// The rule was already there (idempotent revoke) or nothing to remove.
    Unchanged,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Disk I/O on the journal failed: the command was not acknowledged.
    #[error("journal: {0}")]
    Journal(#[from] std::io::Error),
    /// Redis could not be reached or answered an error.
    #[error("redis: {0}")]
    Redis(String),
    /// The store is shutting down.
    #[error("store is closed")]
    Closed,
    /// The revocation is recorded, but what `store.consistency = "confirmed"`
    /// or `store.redis.min_replicas_acked` promises could not be had in
    /// time: the revoke answers 503, and a retry is safe (it merges).
    #[error("recorded but not confirmed: {0}")]
    Unconfirmed(String),
}

/// Why [`RevocationStore::list_tokens`] gave no page.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    /// The cursor is not one this store gave out.
    #[error("bad cursor")]
    BadCursor,
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How the per-request check must behave, given how fresh the store is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckMode {
    /// Local cache answers; a bloom hit asks the store.
    Local,
    /// Stale beyond `store.max_staleness`, configured to refuse: answer 503.
    Reject,
    /// Stale beyond `store.max_staleness`, configured to ask the store for
    /// every request.
    AlwaysLookup,
    /// Confirmed consistency, and this instance holds no live lease or has
    /// fallen behind: answer 503 to every credentialed request until it has
    /// caught up (see `store::redis::lease`).
    Fenced,
}

/// A store's state, for `/readyz` and metrics.
#[derive(Clone, Debug, Default)]
pub struct StoreStatus {
    /// Start-up load done: `/readyz` answers 200.
    pub ready: bool,
    /// The shared backend is reachable (always true for the embedded store).
    pub connected: bool,
    /// Time since the last successful sync with the shared backend.
    pub staleness: Option<Duration>,
    /// Revocations acknowledged but not yet in the shared backend.
    pub journal_backlog: u64,
    /// Token rules known (exact set size, where known locally).
    pub token_rules: u64,
    /// Scope rules known.
    pub scope_rules: u64,
    /// Credential bindings known (embedded store; Redis counts none
    /// locally: they live in Redis only).
    pub bindings: u64,
}

/// One live token revocation, as the admin API lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ListedToken {
    /// The revoked token's fingerprint (never the token).
    pub fingerprint: Fingerprint,
    /// Unix seconds when the rule lapses (the token's own expiry).
    pub expires_at: u64,
    /// Where this instance found the rule: `journal` (embedded store),
    /// `redis`, or `outbox` (acknowledged here, not yet written to Redis).
    pub source: &'static str,
}

/// One page of [`RevocationStore::list_tokens`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenPage {
    /// About the page size asked for: exactly at most that from the
    /// embedded store; from Redis, what one `SCAN` step found (fewer, or a
    /// few more), plus the outbox on the first page.
    pub tokens: Vec<ListedToken>,
    /// Pass back to get the next page; `None` on the last.
    pub next: Option<String>,
}

/// One chunk of [`RevocationStore::export_bindings`] or
/// [`RevocationStore::export_families`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExportPage {
    /// What the chunk holds, as the commands an import applies.
    pub cmds: Vec<RevocationCommand>,
    /// Pass back to get the next chunk; `None` on the last.
    pub next: Option<String>,
}

/// The store the gateway checks and revokes against.
#[async_trait::async_trait]
pub trait RevocationStore: Send + Sync + 'static {
    /// Records a command durably; returns once it survives a crash (fsync'd
    /// journal, or Redis write, or the local outbox when Redis is away).
    /// Also updates this instance's [`LocalCache`] before returning, so the
    /// next request through this instance is already judged by it.
    async fn apply(&self, cmd: RevocationCommand) -> Result<Applied, StoreError>;

    /// Records many commands durably in one go (a bulk import's batch):
    /// one answer per command, in order, once every one of them survives a
    /// crash. The embedded store writes the batch with one journal group
    /// commit (one fsync), Redis with pipelined writes and one stream event
    /// per batch of token rules, and confirmed consistency waits once for
    /// the whole batch. On `Err` some commands may be recorded and others
    /// not; a retry of the whole batch is safe (every command merges).
    /// This default applies them one by one.
    async fn apply_batch(&self, cmds: Vec<RevocationCommand>) -> Result<Vec<Applied>, StoreError> {
        let mut out = Vec::with_capacity(cmds.len());
        for cmd in cmds {
            out.push(self.apply(cmd).await?);
        }
        Ok(out)
    }

    /// The exact answer for a fingerprint the bloom filter did not rule out.
    async fn is_token_revoked(&self, fp: &Fingerprint) -> Result<bool, StoreError>;

    /// The binding of a credential's fingerprint, if one is recorded and
    /// live ([`principal`]).
    async fn binding(&self, fp: &Fingerprint) -> Result<Option<Binding>, StoreError>;

    /// The family membership of a token's fingerprint, if recorded and
    /// live ([`family`]).
    async fn member(&self, fp: &Fingerprint) -> Result<Option<Member>, StoreError>;

    /// The local cache this store keeps current.
    fn cache(&self) -> &LocalCache;

    /// How the per-request check must behave now.
    fn check_mode(&self) -> CheckMode {
        CheckMode::Local
    }

    /// State for `/readyz` and `/metrics`.
    fn status(&self) -> StoreStatus;

    /// One page of live token revocations, `limit` at most, after `cursor`
    /// (a [`TokenPage::next`] this store gave out; `None` for the first).
    async fn list_tokens(&self, cursor: Option<&str>, limit: usize)
        -> Result<TokenPage, ListError>;

    /// One chunk of every live token rule, for an export: like
    /// [`RevocationStore::list_tokens`] but in whatever order and chunk
    /// size is cheapest for the store over millions of rules (the embedded
    /// store walks its map in passes instead of sorting it per page). Walk
    /// until `next` is `None`; a rule that exists throughout the walk is
    /// in it at least once.
    async fn export_tokens(&self, cursor: Option<&str>) -> Result<TokenPage, ListError> {
        self.list_tokens(cursor, 10_000).await
    }

    /// One chunk of every live binding (`Bind` commands), for an export:
    /// walked as [`RevocationStore::export_tokens`], a chunk at a time, so
    /// an export of millions holds one chunk (this default knows none).
    async fn export_bindings(&self, cursor: Option<&str>) -> Result<ExportPage, ListError> {
        let _ = cursor;
        Ok(ExportPage::default())
    }

    /// One chunk of every live family rule and family membership (`Family`
    /// and `Join` commands), for an export, walked the same way (this
    /// default knows none). A membership is not a revocation, but without
    /// it a migrated family rule could not reach a token that joins later,
    /// nor a later revocation of the family its earlier tokens (issue 18;
    /// `crate::admin::bulk`). Either order imports the same: a rule
    /// revokes the members already there, a member joining a revoked
    /// family is revoked as it joins.
    async fn export_families(&self, cursor: Option<&str>) -> Result<ExportPage, ListError> {
        let _ = cursor;
        Ok(ExportPage::default())
    }
    /// Flushes whatever is buffered (journal) before shutdown.
    async fn flush(&self) -> Result<(), StoreError>;
}
