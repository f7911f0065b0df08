//! Bindings on Redis (`crate::store::principal`): the scripts that record
//! and forget a binding, and withdraw what an un-revoked scope rule derived,
//! each with the rule checks in the same atomic step; and the binding
//! lookup. Key layout in `keys.rs`.

use ::redis::{RedisError, Script};

use super::conn::Conn;
use super::{to_json, Inner};
use crate::credentials::Fingerprint;
use crate::store::{Binding, RevocationCommand, RevocationTarget, ScopeKey, ScopeRule, TokenRule};

/// KEYS: bind key, subj set, dtok key, stream, then the keys of the scope
/// rules that could cover the binding (its subject with and without its
/// org and provider). ARGV: binding JSON, fingerprint hex, issued_at,
/// expires_at, now, maxlen, token event.
/// Records the binding, then derives its token rule when a covering rule
/// is there. A rebinding never withdraws a derived rule (see
/// `store::principal`). Returns 1 when anything changed.
const BIND_LUA: &str = r#"
local iat = tonumber(ARGV[3])
local exp = tonumber(ARGV[4])
local now = tonumber(ARGV[5])
if exp <= now then return 0 end
local changed = 0
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'EXAT', exp)
  redis.call('ZADD', KEYS[2], iat, ARGV[2])
  if redis.call('EXPIRETIME', KEYS[2]) < exp then
    redis.call('EXPIREAT', KEYS[2], exp)
  end
  changed = 1
end
local covered = false
for i = 5, #KEYS do
  local raw = redis.call('GET', KEYS[i])
  if raw then
    local ok, rule = pcall(cjson.decode, raw)
    if ok and type(rule) == 'table' and (tonumber(rule.revoked_at) or 0) >= iat
       and (tonumber(rule.expires_at) or 0) > now then
      covered = true
    end
  end
end
if covered then
  local cur = tonumber(redis.call('GET', KEYS[3]) or '0') or 0
  if cur < exp then
    redis.call('SET', KEYS[3], ARGV[4], 'EXAT', exp)
    redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[6], '*', 'c', ARGV[7])
    changed = 1
  end
end
return changed
"#;

/// KEYS: bind key, dtok key, stream. ARGV: maxlen, removal event.
/// Forgets a binding and its derived rule (the `subj` member goes when a
/// scope expansion next finds it without a binding). Returns 1 when there
/// was a binding.
const UNBIND_LUA: &str = r#"
local n = redis.call('DEL', KEYS[1])
if redis.call('DEL', KEYS[2]) == 1 then
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[1], '*', 'c', ARGV[2])
end
return n
"#;

/// KEYS: scope key, stream, subj set. ARGV: maxlen, removal event (of the
/// scope), bind prefix, dtok prefix, the subject's remaining scope rules
/// (JSON array). Deletes the rule, then withdraws every derived rule of the
/// subject's credentials that no remaining rule covers, each with a token
/// removal event (so instances drop cached answers). Returns how many rule
/// keys were deleted.
const UNSCOPE_LUA: &str = r#"
local n = redis.call('DEL', KEYS[1])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', 'c', ARGV[2])
local rules = cjson.decode(ARGV[5])
for _, fp in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do
  local dk = ARGV[4] .. fp
  if redis.call('EXISTS', dk) == 1 then
    local keep = false
    local raw = redis.call('GET', ARGV[3] .. fp)
    if raw then
      local ok, b = pcall(cjson.decode, raw)
      if ok and type(b) == 'table' then
        for _, rule in ipairs(rules) do
          if b.sub == rule.sub
             and (rule.org == nil or rule.org == b.org)
             and (rule.provider == nil or rule.provider == b.provider)
             and (tonumber(b.issued_at) or 0) <= (tonumber(rule.revoked_at) or 0) then
            keep = true
          end
        end
      end
    end
    if not keep then
      redis.call('DEL', dk)
      redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', 'c',
        cjson.encode({kind = 'remove', token = fp}))
    end
  end
end
return n
"#;

/// The binding scripts (loaded lazily, like the others).
pub(super) struct BindingScripts {
    bind: Script,
    unbind: Script,
    unscope: Script,
}

impl BindingScripts {
    pub(super) fn new() -> BindingScripts {
        BindingScripts {
            bind: Script::new(BIND_LUA),
            unbind: Script::new(UNBIND_LUA),
            unscope: Script::new(UNSCOPE_LUA),
        }
    }
}

/// The scope keys whose rules could cover a credential of `who`: its
/// subject with each of its org and provider, or any.
fn covering_keys(who: &ScopeKey) -> Vec<ScopeKey> {
    let orgs = [None, who.org.clone()];
    let providers = [None, who.provider.clone()];
    let mut keys = Vec::with_capacity(4);
    for (i, org) in orgs.iter().enumerate() {
        if i == 1 && org.is_none() {
            continue;
        }
        for (j, provider) in providers.iter().enumerate() {
            if j == 1 && provider.is_none() {
                continue;
            }
            keys.push(ScopeKey {
                sub: who.sub.clone(),
                org: org.clone(),
                provider: provider.clone(),
            });
        }
    }
    keys
}

impl Inner {
    /// Records a binding (and its derived rule, when a rule covers it).
    pub(super) async fn write_bind(
        &self,
        conn: &mut Conn,
        b: &Binding,
        now: u64,
    ) -> Result<bool, RedisError> {
        let hex = b.fingerprint.to_hex();
        let token_event = to_json(&RevocationCommand::Token(TokenRule {
            fingerprint: b.fingerprint,
            expires_at: b.expires_at,
        }))?;
        let mut inv = self.binding_scripts.bind.prepare_invoke();
        inv.key(self.keys.binding(&b.fingerprint))
            .key(self.keys.subject(&b.who.sub))
            .key(self.keys.derived(&b.fingerprint))
            .key(self.keys.stream());
        for k in covering_keys(&b.who) {
            inv.key(self.keys.scope(&k));
        }
        inv.arg(to_json(b)?)
            .arg(hex)
            .arg(b.issued_at)
            .arg(b.expires_at)
            .arg(now)
            .arg(self.cfg.stream_maxlen)
            .arg(token_event);
        let n: i64 = inv.invoke_async(conn).await?;
        Ok(n > 0)
    }

    /// Forgets a binding and its derived rule.
    pub(super) async fn write_unbind(
        &self,
        conn: &mut Conn,
        fp: &Fingerprint,
    ) -> Result<bool, RedisError> {
        let removal = to_json(&RevocationCommand::Remove(RevocationTarget::Token(*fp)))?;
        let mut inv = self.binding_scripts.unbind.prepare_invoke();
        inv.key(self.keys.binding(fp))
            .key(self.keys.derived(fp))
            .key(self.keys.stream())
            .arg(self.cfg.stream_maxlen)
            .arg(removal);
        let n: i64 = inv.invoke_async(conn).await?;
        Ok(n > 0)
    }

    /// Deletes a scope rule and withdraws what it alone derived. The
    /// subject's other rules are this instance's view of them: an un-revoke
    /// racing a new scope revoke of the same subject on another instance
    /// may withdraw what that one derived (revoke again to restore it).
    pub(super) async fn write_unscope(
        &self,
        conn: &mut Conn,
        key: &ScopeKey,
        event: String,
    ) -> Result<bool, RedisError> {
        let remaining: Vec<ScopeRule> = self
            .cache
            .scope_rules_of(&key.sub)
            .into_iter()
            .filter(|r| &r.key != key)
            .collect();
        let mut inv = self.binding_scripts.unscope.prepare_invoke();
        inv.key(self.keys.scope(key))
            .key(self.keys.stream())
            .key(self.keys.subject(&key.sub))
            .arg(self.cfg.stream_maxlen)
            .arg(event)
            .arg(self.keys.binding_prefix())
            .arg(self.keys.derived_prefix())
            .arg(to_json(&remaining)?);
        let n: i64 = inv.invoke_async(conn).await?;
        Ok(n > 0)
    }

    /// The binding of a fingerprint, read from Redis.
    pub(super) async fn read_binding(
        &self,
        conn: &mut Conn,
        fp: &Fingerprint,
        now: u64,
    ) -> Result<Option<Binding>, RedisError> {
        let raw: Option<Vec<u8>> = ::redis::cmd("GET")
            .arg(self.keys.binding(fp))
            .query_async(conn)
            .await?;
        Ok(raw
            .and_then(|v| serde_json::from_slice::<Binding>(&v).ok())
            .filter(|b| b.fingerprint == *fp && b.expires_at > now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_covering_keys_are_the_subject_with_and_without_each_filter() {
        let who = |org: Option<&str>, provider: Option<&str>| ScopeKey {
            sub: "u".into(),
            org: org.map(Into::into),
            provider: provider.map(Into::into),
        };
        assert_eq!(covering_keys(&who(None, None)), vec![who(None, None)]);
        assert_eq!(
            covering_keys(&who(Some("o"), Some("p"))),
            vec![
                who(None, None),
                who(None, Some("p")),
                who(Some("o"), None),
                who(Some("o"), Some("p"))
            ]
        );
        assert_eq!(
            covering_keys(&who(None, Some("p"))),
            vec![who(None, None), who(None, Some("p"))]
        );
    }
}
