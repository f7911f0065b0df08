//! Token families on Redis (`crate::store::family`): the scripts that
//! record a member and revoke a family, each checking the other in the same
//! atomic step, and the member lookup.
//!
//! ```text
//!   {P}:fmem:<fingerprint hex>  STRING "<family hex> <generation> <refresh 0|1> <expires_at> <superseded_at>"
//!                                      EXPIREAT expires_at
//!   {P}:fam:<family hex>        HASH   <member fingerprint hex> -> "<generation> <expires_at>",
//!                                      rev -> expires_at (the grant's rule),
//!                                      rev:<generation> -> expires_at (a pair's rule);
//!                                      EXPIREAT its latest member or rule
//! ```
//!
//! A family rule expands in its script into ordinary `tok` keys (so a
//! lookup finds them as it finds any revoked token) and **one** stream event
//! carrying the members it revoked, which every instance applies as one
//! command (bloom filter inserts); a member that joins a revoked family gets
//! its `tok` key and a token event from the join script. Both scripts touch
//! only keys under the deployment's hash tag (one Cluster slot).

use ::redis::{RedisError, Script};

use super::conn::Conn;
use super::Inner;
use crate::credentials::Fingerprint;
use crate::store::{FamilyRule, Member, RevocationCommand, TokenRule};

/// KEYS: fmem key, fam key, stream. ARGV: fingerprint hex, family hex,
/// generation, refresh (0/1), expires_at, superseded_at, now, maxlen, tok
/// prefix. A token stays in the family it first joined (only its expiry,
/// supersession and refresh flag grow). Returns 1 when the membership
/// changed, plus 2 when a rule of the family revokes the token.
const JOIN_LUA: &str = r#"
local fp = ARGV[1]
local exp = tonumber(ARGV[5])
local sup = tonumber(ARGV[6])
local now = tonumber(ARGV[7])
if exp <= now then return 0 end
local fam, gen, refresh = ARGV[2], ARGV[3], ARGV[4]
local old = redis.call('GET', KEYS[1])
if old then
  local f, g, r, e, s = string.match(old, '^(%x+) (%d+) ([01]) (%d+) (%d+)$')
  if f then
    fam, gen = f, g
    if r == '1' then refresh = '1' end
    if tonumber(e) > exp then exp = tonumber(e) end
    if tonumber(s) > sup then sup = tonumber(s) end
  end
end
if fam ~= ARGV[2] then
  KEYS[2] = string.sub(KEYS[2], 1, #KEYS[2] - #ARGV[2]) .. fam
end
local val = fam .. ' ' .. gen .. ' ' .. refresh .. ' ' .. exp .. ' ' .. sup
local changed = 0
if old ~= val then
  redis.call('SET', KEYS[1], val, 'EXAT', exp)
  redis.call('HSET', KEYS[2], fp, gen .. ' ' .. exp)
  if redis.call('EXPIRETIME', KEYS[2]) < exp then
    redis.call('EXPIREAT', KEYS[2], exp)
  end
  changed = 1
end
local covered = false
for _, field in ipairs({'rev', 'rev:' .. gen}) do
  local x = tonumber(redis.call('HGET', KEYS[2], field) or '0') or 0
  if x > now then covered = true end
end
if covered then
  local tk = ARGV[9] .. fp
  local cur = tonumber(redis.call('GET', tk) or '0') or 0
  if cur < exp then
    redis.call('SET', tk, tostring(exp), 'EXAT', exp)
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[8], '*', 'c',
      cjson.encode({kind = 'token', fingerprint = fp, expires_at = exp}))
  end
  return changed + 2
end
return changed
"#;

/// KEYS: fam key, stream. ARGV: family hex, generation (-1: every one),
/// revoked_at, expires_at, now, maxlen, tok prefix, then the named tokens
/// as fingerprint hex / expires_at pairs. Records the rule (the later expiry
/// wins), revokes every live member it covers and the named tokens (`tok`
/// keys), and publishes one event carrying them all. Returns the revoked
/// members as a flat array of fingerprint hex, expires_at.
const FAMILY_LUA: &str = r#"
local gen = ARGV[2]
local x = tonumber(ARGV[4])
local now = tonumber(ARGV[5])
if x <= now then return {} end
local field = 'rev'
if gen ~= '-1' then field = 'rev:' .. gen end
local cur = tonumber(redis.call('HGET', KEYS[1], field) or '0') or 0
if cur < x then
  redis.call('HSET', KEYS[1], field, tostring(x))
  if redis.call('EXPIRETIME', KEYS[1]) < x then
    redis.call('EXPIREAT', KEYS[1], x)
  end
end
local revoked, flat, seen = {}, {}, {}
local function revoke(fp, e)
  if seen[fp] or e <= now then return end
  seen[fp] = true
  local tk = ARGV[7] .. fp
  local c = tonumber(redis.call('GET', tk) or '0') or 0
  if c < e then redis.call('SET', tk, tostring(e), 'EXAT', e) end
  table.insert(revoked, {fingerprint = fp, expires_at = e})
  table.insert(flat, fp)
  table.insert(flat, tostring(e))
end
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local f = all[i]
  if string.sub(f, 1, 3) ~= 'rev' then
    local g, e = string.match(all[i + 1], '^(%d+) (%d+)$')
    e = tonumber(e)
    if e and e <= now then
      redis.call('HDEL', KEYS[1], f)
    elseif e and (gen == '-1' or g == gen) then
      revoke(f, e)
    end
  end
end
for i = 8, #ARGV, 2 do
  revoke(ARGV[i], tonumber(ARGV[i + 1]) or 0)
end
local ev = {kind = 'family', family = ARGV[1], revoked_at = tonumber(ARGV[3]), expires_at = x}
if gen ~= '-1' then ev.generation = tonumber(gen) end
if #revoked > 0 then ev.members = revoked end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[6], '*', 'c', cjson.encode(ev))
return flat
"#;

/// The family scripts (loaded lazily, like the others).
pub(super) struct FamilyScripts {
    join: Script,
    family: Script,
}

impl FamilyScripts {
    pub(super) fn new() -> FamilyScripts {
        FamilyScripts {
            join: Script::new(JOIN_LUA),
            family: Script::new(FAMILY_LUA),
        }
    }
}

impl Inner {
    /// Records a member; true when anything changed (its membership, or a
    /// rule of its family revoked it).
    pub(super) async fn write_join(
        &self,
        conn: &mut Conn,
        m: &Member,
        now: u64,
    ) -> Result<bool, RedisError> {
        let mut inv = self.family_scripts.join.prepare_invoke();
        inv.key(self.keys.member(&m.fingerprint))
            .key(self.keys.family(&m.family))
            .key(self.keys.stream())
            .arg(m.fingerprint.to_hex())
            .arg(m.family.to_hex())
            .arg(m.generation)
            .arg(u8::from(m.refresh))
            .arg(m.expires_at)
            .arg(m.superseded_at)
            .arg(now)
            .arg(self.cfg.stream_maxlen)
            .arg(self.keys.token_prefix());
        let n: i64 = inv.invoke_async(conn).await?;
        if n & 2 != 0 {
            // Revoked as it joined: this instance knows at once.
            self.apply_local(&RevocationCommand::Token(TokenRule {
                fingerprint: m.fingerprint,
                expires_at: m.expires_at,
            }));
        }
        Ok(n > 0)
    }

    /// Records a family rule and revokes what it covers; returns the token
    /// rules it revoked (for this instance's cache).
    pub(super) async fn write_family(
        &self,
        conn: &mut Conn,
        rule: &FamilyRule,
        now: u64,
    ) -> Result<Vec<TokenRule>, RedisError> {
        let mut inv = self.family_scripts.family.prepare_invoke();
        inv.key(self.keys.family(&rule.family))
            .key(self.keys.stream())
            .arg(rule.family.to_hex())
            .arg(rule.generation.map_or(-1, i64::from))
            .arg(rule.revoked_at)
            .arg(rule.expires_at)
            .arg(now)
            .arg(self.cfg.stream_maxlen)
            .arg(self.keys.token_prefix());
        for t in &rule.members {
            inv.arg(t.fingerprint.to_hex()).arg(t.expires_at);
        }
        let flat: Vec<String> = inv.invoke_async(conn).await?;
        Ok(flat
            .chunks_exact(2)
            .filter_map(|pair| {
                Some(TokenRule {
                    fingerprint: Fingerprint::from_hex(&pair[0])?,
                    expires_at: pair[1].parse().ok()?,
                })
            })
            .collect())
    }

    /// The membership of a fingerprint, read from Redis.
    pub(super) async fn read_member(
        &self,
        conn: &mut Conn,
        fp: &Fingerprint,
        now: u64,
    ) -> Result<Option<Member>, RedisError> {
        let raw: Option<String> = ::redis::cmd("GET")
            .arg(self.keys.member(fp))
            .query_async(conn)
            .await?;
        Ok(raw
            .and_then(|v| parse_member(fp, &v))
            .filter(|m| m.expires_at > now))
    }
}

/// A `fmem` value (see the module doc).
pub(super) fn parse_member(fp: &Fingerprint, v: &str) -> Option<Member> {
    let mut it = v.split(' ');
    let m = Member {
        fingerprint: *fp,
        family: Fingerprint::from_hex(it.next()?)?,
        generation: it.next()?.parse().ok()?,
        refresh: match it.next()? {
            "0" => false,
            "1" => true,
            _ => return None,
        },
        expires_at: it.next()?.parse().ok()?,
        superseded_at: it.next()?.parse().ok()?,
    };
    it.next().is_none().then_some(m)
}

/// What a family rule's event and command look like when its expansion is
/// known: `rule` with `members` set.
pub(super) fn expanded(rule: &FamilyRule, members: Vec<TokenRule>) -> RevocationCommand {
    RevocationCommand::Family(FamilyRule {
        members,
        ..rule.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_value_parses_and_nothing_else_does() {
        let fp = Fingerprint::from_bytes([1; 16]);
        let fam = "ab".repeat(16);
        let m = parse_member(&fp, &format!("{fam} 3 1 1800000000 1700000000")).unwrap();
        assert_eq!(m.family, Fingerprint::from_hex(&fam).unwrap());
        assert_eq!((m.generation, m.refresh), (3, true));
        assert_eq!(
            (m.expires_at, m.superseded_at),
            (1_800_000_000, 1_700_000_000)
        );
        for bad in [
            format!("{fam} 3 2 1 1"),
            format!("{fam} 3 1 1"),
            format!("{fam} 3 1 1 1 extra"),
            "zz 1 1 1 1".to_string(),
        ] {
            assert_eq!(parse_member(&fp, &bad), None, "{bad}");
        }
    }
}
