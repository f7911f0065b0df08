//! The Redis data layout: key names, stream event ids, and the Lua scripts
//! that write a rule and its stream event in one atomic step.
//!
//! ```text
//!   {P}:tok:<fingerprint hex>   STRING  "<expires_at>"            EXPIREAT expires_at
//!   {P}:scope:<blake3(key)>     STRING  ScopeRule JSON            EXPIREAT expires_at
//!   {P}:events                  STREAM  field "c" = RevocationCommand JSON, or
//!                                       field "tb" = a batch of token rules (binary), MAXLEN ~ N
//!   {P}:snapshot                STRING  bloom snapshot (binary, see `snapshot.rs`), no TTL
//!   {P}:bind:<fingerprint hex>  STRING  Binding JSON              EXPIREAT expires_at
//!   {P}:subj:<blake3(sub)>      ZSET    fingerprint hex -> issued_at, EXPIREAT latest member's
//!   {P}:dtok:<fingerprint hex>  STRING  "<expires_at>"            EXPIREAT expires_at
//!   {P}:fmem:<fingerprint hex>  STRING  a token's family membership (see `family.rs`)
//!   {P}:fam:<family hex>        HASH    a family's members and rules (see `family.rs`)
//! ```
//!
//! `bind`, `subj` and `dtok` are the principals of `crate::store::principal`:
//! a credential's binding, each subject's bound credentials by issue time
//! (what a scope rule expands over), and the token rules scope rules derived
//! from bindings (a lookup asks `tok` and `dtok` together). The scope and
//! bind scripts read and write them in the same atomic step as the rule, so
//! a binding and a rule recorded at once on two instances cannot miss each
//! other. The scripts name `bind`/`dtok` keys they find in a `subj` set from
//! the prefix passed to them: all share the deployment's hash tag, so they
//! are in the script's slot.
//!
//! `P` is `store.key_prefix`. The braces make it a Cluster hash tag, so every
//! key of one deployment lives in one slot and a script may touch a rule and
//! the stream together. A scope key is named by a hash of the [`ScopeKey`]'s
//! JSON so arbitrary subject strings never end up in a key name's syntax; the
//! value carries the rule whole. Only fingerprints are written, never tokens.
//!
//! Why Lua rather than a bare `MULTI`: a script is just as atomic (the rule
//! and its event land together or not at all), and it can also *merge* with
//! what is there: the later expiry and the later scope time `T` win. That
//! matters when an outbox written during an outage is replayed after other
//! instances have written newer rules: a plain `SET` would move a scope's `T`
//! backwards and un-revoke tokens. It also lets an idempotent revoke skip the
//! stream, and answer [`Applied::Unchanged`](crate::store::Applied).
//!
//! The bulk import's batches are the exception, for speed: a script's
//! per-call overhead was ~10 µs of Redis's single thread per rule (issue
//! 18), so a batch of token rules is a pipeline of native `SET NX EXAT`s,
//! then, only for the keys whose `SET NX` found a rule, a merge script
//! ([`TOKEN_MERGE_LUA`], later expiry wins), then the batch's one `XADD`:
//! not atomic, but in order, so the event exists only once every rule it
//! names is written (`mod.rs`, `write_token_batch`). The batch is
//! acknowledged only after all three.

use std::fmt;

use ::redis::Script;

use crate::credentials::Fingerprint;
use crate::store::ScopeKey;

/// The names of one deployment's keys.
#[derive(Clone, Debug)]
pub struct Keys {
    token_prefix: String,
    scope_prefix: String,
    bind_prefix: String,
    subject_prefix: String,
    derived_prefix: String,
    member_prefix: String,
    family_prefix: String,
    stream: String,
    snapshot: String,
    scan_pattern: String,
}

impl Keys {
    /// The layout under `prefix` (validated by config: no braces or spaces).
    pub fn new(prefix: &str) -> Keys {
        let tag = format!("{{{prefix}}}");
        Keys {
            token_prefix: format!("{tag}:tok:"),
            scope_prefix: format!("{tag}:scope:"),
            bind_prefix: format!("{tag}:bind:"),
            subject_prefix: format!("{tag}:subj:"),
            derived_prefix: format!("{tag}:dtok:"),
            member_prefix: format!("{tag}:fmem:"),
            family_prefix: format!("{tag}:fam:"),
            stream: format!("{tag}:events"),
            snapshot: format!("{tag}:snapshot"),
            scan_pattern: format!("{}:*", glob_escape(&tag)),
        }
    }

    /// The key of a token rule.
    pub fn token(&self, fp: &Fingerprint) -> String {
        let mut k = String::with_capacity(self.token_prefix.len() + 32);
        k.push_str(&self.token_prefix);
        let hex = hex32(fp);
        // Hex digits are ASCII.
        k.push_str(std::str::from_utf8(&hex).unwrap_or_default());
        k
    }

    /// [`Keys::token`] written into `buf` (cleared first): no allocation
    /// once `buf` has room (a bulk import's batch builds 10,000 of them).
    pub fn token_into(&self, fp: &Fingerprint, buf: &mut Vec<u8>) {
        buf.clear();
        buf.extend_from_slice(self.token_prefix.as_bytes());
        buf.extend_from_slice(&hex32(fp));
    }

    /// Bytes of a token rule's key.
    pub fn token_len(&self) -> usize {
        self.token_prefix.len() + 32
    }

    /// The key of a derived token rule (see the module doc).
    pub fn derived(&self, fp: &Fingerprint) -> String {
        format!("{}{}", self.derived_prefix, fp.to_hex())
    }

    /// The key of a token's family membership.
    pub fn member(&self, fp: &Fingerprint) -> String {
        format!("{}{}", self.member_prefix, fp.to_hex())
    }

    /// The key of a family (its members and rules).
    pub fn family(&self, family: &Fingerprint) -> String {
        format!("{}{}", self.family_prefix, family.to_hex())
    }

    /// The prefix of token rule keys, for the scripts that name them from
    /// a family's members.
    pub fn token_prefix(&self) -> &str {
        &self.token_prefix
    }

    /// The key of a binding.
    pub fn binding(&self, fp: &Fingerprint) -> String {
        format!("{}{}", self.bind_prefix, fp.to_hex())
    }

    /// The prefixes of binding and derived keys, for the scripts that
    /// name them from a subject's members.
    pub fn binding_prefix(&self) -> &str {
        &self.bind_prefix
    }

    /// See [`Keys::binding_prefix`].
    pub fn derived_prefix(&self) -> &str {
        &self.derived_prefix
    }

    /// The set of a subject's bound credentials (named by a hash: subject
    /// strings never enter a key name's syntax).
    pub fn subject(&self, sub: &str) -> String {
        let hash = blake3::hash(sub.as_bytes());
        format!(
            "{}{}",
            self.subject_prefix,
            hex::encode(&hash.as_bytes()[..16])
        )
    }

    /// The `SCAN MATCH` pattern of every token rule (admin listing).
    pub fn token_pattern(&self) -> String {
        format!("{}*", glob_escape(&self.token_prefix))
    }

    /// The `SCAN MATCH` pattern of every binding (export).
    pub fn binding_pattern(&self) -> String {
        format!("{}*", glob_escape(&self.bind_prefix))
    }

    /// The `SCAN MATCH` pattern of every family hash (export).
    pub fn family_pattern(&self) -> String {
        format!("{}*", glob_escape(&self.family_prefix))
    }

    /// The `SCAN MATCH` pattern of every family membership (export).
    pub fn member_pattern(&self) -> String {
        format!("{}*", glob_escape(&self.member_prefix))
    }

    /// The family a family hash's key names.
    pub fn family_of(&self, key: &str) -> Option<Fingerprint> {
        Fingerprint::from_hex(key.strip_prefix(&self.family_prefix)?)
    }

    /// The token a membership's key names.
    pub fn member_of(&self, key: &str) -> Option<Fingerprint> {
        Fingerprint::from_hex(key.strip_prefix(&self.member_prefix)?)
    }

    /// The fingerprint a token rule's key names.
    pub fn token_of(&self, key: &str) -> Option<Fingerprint> {
        Fingerprint::from_hex(key.strip_prefix(&self.token_prefix)?)
    }

    /// The key of a scope rule.
    pub fn scope(&self, key: &ScopeKey) -> String {
        // Serializing a ScopeKey cannot fail (strings and options only); the
        // fallback keeps the name deterministic anyway.
        let json = serde_json::to_vec(key).unwrap_or_else(|_| key.sub.as_bytes().to_vec());
        let hash = blake3::hash(&json);
        format!(
            "{}{}",
            self.scope_prefix,
            hex::encode(&hash.as_bytes()[..16])
        )
    }

    /// The event stream.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The bloom snapshot (see `snapshot.rs`).
    pub fn snapshot(&self) -> &str {
        &self.snapshot
    }

    /// `SCAN MATCH` pattern covering every key of this deployment.
    pub fn scan_pattern(&self) -> &str {
        &self.scan_pattern
    }

    /// What a scanned key is.
    pub fn classify(&self, key: &[u8]) -> KeyKind {
        if let Some(hex) = key.strip_prefix(self.token_prefix.as_bytes()) {
            return std::str::from_utf8(hex)
                .ok()
                .and_then(Fingerprint::from_hex)
                .map_or(KeyKind::Other, KeyKind::Token);
        }
        // A derived rule is a revoked fingerprint like any other, for the
        // bloom filter.
        if let Some(hex) = key.strip_prefix(self.derived_prefix.as_bytes()) {
            return std::str::from_utf8(hex)
                .ok()
                .and_then(Fingerprint::from_hex)
                .map_or(KeyKind::Other, KeyKind::Token);
        }
        if key.starts_with(self.scope_prefix.as_bytes()) {
            return KeyKind::Scope;
        }
        KeyKind::Other
    }
}

/// What a key under the prefix holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// A token rule (explicit or derived), for this fingerprint.
    Token(Fingerprint),
    /// A scope rule (its value is the rule).
    Scope,
    /// The stream, the snapshot, or something this version does not know.
    Other,
}

/// A fingerprint's 32 hex characters, on the stack.
fn hex32(fp: &Fingerprint) -> [u8; 32] {
    let mut out = [0u8; 32];
    // 16 bytes always fit 32 hex characters.
    let _ = hex::encode_to_slice(fp.as_bytes(), &mut out);
    out
}

/// Escapes Redis glob metacharacters.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\' | '^') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

// === impl EventId ===

/// A stream entry id, `<ms>-<seq>`, ordered as Redis orders them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventId {
    /// Milliseconds part.
    pub ms: u64,
    /// Sequence part.
    pub seq: u64,
}

impl EventId {
    /// `0-0`: before every entry.
    pub const ZERO: EventId = EventId { ms: 0, seq: 0 };

    /// Parses `<ms>-<seq>` (or a bare `<ms>`).
    pub fn parse(s: &str) -> Option<EventId> {
        let (ms, seq) = s.split_once('-').unwrap_or((s, "0"));
        Some(EventId {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

// === scripts ===

/// KEYS: token key, stream. ARGV: expires_at, now, maxlen, event.
/// Returns 1 when written (new rule or later expiry), 0 when not needed.
const TOKEN_LUA: &str = r#"
local exp = tonumber(ARGV[1])
if exp <= tonumber(ARGV[2]) then return 0 end
local cur = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if cur >= exp then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EXAT', ARGV[1])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'c', ARGV[4])
return 1
"#;

/// KEYS: scope key, stream, the subject's `subj` set. ARGV: rule JSON, now,
/// maxlen, bind prefix, dtok prefix.
/// Merges with the stored rule (latest `revoked_at` and `expires_at` win);
/// the event carries the merged rule. Then expands it: every credential
/// bound to the subject, issued at or before `revoked_at`, whose binding the
/// rule's org/provider filters admit, gets a derived rule (`dtok`) and a
/// token event. Returns 1 when anything changed.
const SCOPE_LUA: &str = r#"
local rule = cjson.decode(ARGV[1])
local r = tonumber(rule.revoked_at)
local x = tonumber(rule.expires_at)
local now = tonumber(ARGV[2])
if x <= now then return 0 end
local old = redis.call('GET', KEYS[1])
if old then
  local ok, cur = pcall(cjson.decode, old)
  if ok and type(cur) == 'table' then
    local cr = tonumber(cur.revoked_at) or 0
    local cx = tonumber(cur.expires_at) or 0
    if cr >= r and cx >= x then return 0 end
    if cr > r then r = cr end
    if cx > x then x = cx end
  end
end
rule.revoked_at = r
rule.expires_at = x
redis.call('SET', KEYS[1], cjson.encode(rule), 'EXAT', x)
rule.kind = 'scope'
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'c', cjson.encode(rule))
local members = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', r)
for _, fp in ipairs(members) do
  local raw = redis.call('GET', ARGV[4] .. fp)
  if not raw then
    redis.call('ZREM', KEYS[3], fp)
  else
    local ok, b = pcall(cjson.decode, raw)
    if ok and type(b) == 'table' and b.sub == rule.sub
       and (rule.org == nil or rule.org == b.org)
       and (rule.provider == nil or rule.provider == b.provider)
       and (tonumber(b.issued_at) or 0) <= r then
      local bx = tonumber(b.expires_at) or 0
      local dk = ARGV[5] .. fp
      local cur = tonumber(redis.call('GET', dk) or '0') or 0
      if bx > now and cur < bx then
        redis.call('SET', dk, tostring(bx), 'EXAT', bx)
        redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'c',
          cjson.encode({kind = 'token', fingerprint = fp, expires_at = bx}))
      end
    end
  end
end
return 1
"#;

/// KEYS: rule key, stream. ARGV: maxlen, event. Deletes the rule and always
/// publishes the removal (an instance may hold the rule locally even when
/// Redis no longer does). Returns how many keys were deleted.
const REMOVE_LUA: &str = r#"
local n = redis.call('DEL', KEYS[1])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', 'c', ARGV[2])
return n
"#;

/// KEYS: token keys that already existed when a bulk import's batch was
/// written (its `SET NX` found them). ARGV: now, then their expiries.
/// The merge step of the batch path (`mod.rs`, `write_token_batch`): each
/// rule merges as in `TOKEN_LUA`, the later expiry wins. No stream event:
/// the batch's one event, written after this step, names these
/// fingerprints (an instance keeps no token expiry, only the
/// bloom filter and the exact lookup). Returns one 0/1 per key: written
/// or not needed.
const TOKEN_MERGE_LUA: &str = r#"
local now = tonumber(ARGV[1])
local changed = {}
for i = 1, #KEYS do
  local exp = tonumber(ARGV[i + 1])
  local flag = 0
  if exp > now then
    local cur = tonumber(redis.call('GET', KEYS[i]) or '0') or 0
    if cur < exp then
      redis.call('SET', KEYS[i], ARGV[i + 1], 'EXAT', ARGV[i + 1])
      flag = 1
    end
  end
  changed[i] = flag
end
return changed
"#;

/// Bytes of one token rule in a batch event's `tb` field: the fingerprint
/// (16) and `expires_at` (u64 little-endian). An event carries either `c`
/// (one command's JSON, every event before issue 18) or `tb`; a build that
/// predates `tb` skips such an event with a warning (upgrade every instance
/// before importing in bulk). A `tb` event names every rule of its batch,
/// new or already in Redis (written after them and their merge): to an instance it means "these fingerprints are revoked
/// in Redis now", which is all it keeps of a token rule (its bloom filter;
/// the exact answer is Redis's `GET`). The expiry is the one asked for, not
/// necessarily the one Redis holds after the merge.
pub const TOKEN_BATCH_RECORD: usize = 24;

/// The write scripts (loaded lazily: `EVALSHA`, falling back to `EVAL`).
pub struct Scripts {
    /// Token rule + event.
    pub token: Script,
    /// Scope rule (merged) + event.
    pub scope: Script,
    /// Removal + event.
    pub remove: Script,
    /// The merge step of a batch of token rules (no event).
    pub token_merge: Script,
}

impl Scripts {
    /// The write scripts.
    pub fn new() -> Scripts {
        Scripts {
            token: Script::new(TOKEN_LUA),
            scope: Script::new(SCOPE_LUA),
            remove: Script::new(REMOVE_LUA),
            token_merge: Script::new(TOKEN_MERGE_LUA),
        }
    }
}

impl Default for Scripts {
    fn default() -> Self {
        Scripts::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_one_hash_tag_and_never_hold_raw_input() {
        let k = Keys::new("prod");
        let fp = Fingerprint::from_bytes([0xab; 16]);
        assert_eq!(k.token(&fp), format!("{{prod}}:tok:{}", "ab".repeat(16)));
        let mut buf = b"old".to_vec();
        k.token_into(&fp, &mut buf);
        assert_eq!(buf, k.token(&fp).into_bytes());
        assert_eq!(k.token_len(), buf.len());
        assert_eq!(k.stream(), "{prod}:events");
        let scope = k.scope(&ScopeKey {
            sub: "alice {evil}*".into(),
            org: None,
            provider: Some("github".into()),
        });
        assert!(scope.starts_with("{prod}:scope:"));
        assert!(!scope.contains("alice"));
        assert_eq!(k.classify(k.token(&fp).as_bytes()), KeyKind::Token(fp));
        assert_eq!(k.classify(scope.as_bytes()), KeyKind::Scope);
        assert_eq!(k.classify(b"{prod}:events"), KeyKind::Other);
        assert_eq!(k.snapshot(), "{prod}:snapshot");
        assert_eq!(k.classify(k.snapshot().as_bytes()), KeyKind::Other);
        assert_eq!(Keys::new("a*b").scan_pattern(), "{a\\*b}:*");
    }

    #[test]
    fn event_ids_order_like_redis() {
        let a = EventId::parse("1700000000000-5").unwrap();
        let b = EventId::parse("1700000000000-12").unwrap();
        let c = EventId::parse("1700000000001").unwrap();
        assert!(EventId::ZERO < a && a < b && b < c);
        assert_eq!(b.to_string(), "1700000000000-12");
        assert_eq!(EventId::parse("x-1"), None);
    }
}
