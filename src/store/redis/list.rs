//! The admin listing of token revocations over Redis: `SCAN` of the token
//! keys, one page per call, with the outbox's rules (acknowledged here, not
//! yet in Redis) on the first page.
//!
//! The cursor is Redis's own `SCAN` cursor, so a walk holds no state here
//! and costs Redis nothing between pages. `SCAN` returns every key that
//! exists throughout the walk at least once, but may return one twice and
//! may return fewer than `limit` per page (even none, with a next cursor):
//! a client walks until `next` is `None`. Rules whose key expired between
//! the `SCAN` and the `MGET` are left out.

use ::redis::RedisError;

use super::link::is_fatal;
use super::Inner;
use crate::store::{
    now_unix, Binding, ExportPage, FamilyRule, ListError, ListedToken, RevocationCommand,
    StoreError, TokenPage,
};

/// A connection for a listing, or why there is none.
fn conn(inner: &Inner) -> Result<super::conn::Conn, StoreError> {
    inner
        .link
        .conn()
        .ok_or_else(|| StoreError::Redis("redis is not connected".into()))
}

/// A listing's Redis error as a store error, noting a lost link first.
fn failed(inner: &Inner, e: RedisError) -> StoreError {
    if is_fatal(&e) {
        inner.note_lost(&e);
    }
    StoreError::Redis(e.to_string())
}

pub(super) async fn tokens(
    inner: &Inner,
    cursor: Option<&str>,
    limit: usize,
) -> Result<TokenPage, ListError> {
    let from: u64 = match cursor {
        None => 0,
        Some(c) => match c.parse::<u64>() {
            Ok(n) if n != 0 => n,
            _ => return Err(ListError::BadCursor),
        },
    };
    let now = now_unix();
    let mut tokens = Vec::new();
    if cursor.is_none() {
        for e in inner.outbox_tokens.iter() {
            if *e.value() > now {
                tokens.push(ListedToken {
                    fingerprint: *e.key(),
                    expires_at: *e.value(),
                    source: "outbox",
                });
            }
        }
    }
    let mut conn = conn(inner)?;
    let pattern = inner.keys.token_pattern();
    let (next, keys) = scan_step(inner, &mut conn, &pattern, from, limit).await?;
    if !keys.is_empty() {
        let values: Vec<Option<String>> = mget(inner, &mut conn, &keys).await?;
        for (key, value) in keys.iter().zip(values) {
            let (Some(fingerprint), Some(value)) = (inner.keys.token_of(key), value) else {
                continue;
            };
            let expires_at = value.parse::<u64>().unwrap_or(u64::MAX);
            if expires_at > now {
                tokens.push(ListedToken {
                    fingerprint,
                    expires_at,
                    source: "redis",
                });
            }
        }
    }
    Ok(TokenPage {
        tokens,
        next: (next != 0).then(|| next.to_string()),
    })
}

/// One `SCAN` step over `pattern` from `from`: the next cursor (0 after
/// the last step) and the keys found.
async fn scan_step(
    inner: &Inner,
    conn: &mut super::conn::Conn,
    pattern: &str,
    from: u64,
    count: usize,
) -> Result<(u64, Vec<String>), ListError> {
    ::redis::cmd("SCAN")
        .arg(from)
        .arg("MATCH")
        .arg(pattern)
        .arg("COUNT")
        .arg(count)
        .query_async(conn)
        .await
        .map_err(|e| ListError::Store(failed(inner, e)))
}

/// The values of `keys`, by one `MGET` (`None` for a key gone since).
async fn mget<T: ::redis::FromRedisValue>(
    inner: &Inner,
    conn: &mut super::conn::Conn,
    keys: &[String],
) -> Result<Vec<Option<T>>, ListError> {
    ::redis::cmd("MGET")
        .arg(keys)
        .query_async(conn)
        .await
        .map_err(|e| ListError::Store(failed(inner, e)))
}

/// Keys asked for per `SCAN` step of an export's bindings or families.
const EXPORT_SCAN: usize = 1000;

/// One chunk of the live bindings in Redis, for an export: one `SCAN` step
/// of the binding keys (the cursor is Redis's), values by `MGET`. `SCAN`
/// may return a key twice: the export may hold a binding twice, which an
/// import applies as once. Bindings still in the outbox are not among them
/// (exported once written).
pub(super) async fn bindings(inner: &Inner, cursor: Option<&str>) -> Result<ExportPage, ListError> {
    let from = match cursor {
        None => 0,
        Some(c) => match c.parse::<u64>() {
            Ok(n) if n != 0 => n,
            _ => return Err(ListError::BadCursor),
        },
    };
    let mut conn = conn(inner)?;
    let now = now_unix();
    let pattern = inner.keys.binding_pattern();
    let (next, keys) = scan_step(inner, &mut conn, &pattern, from, EXPORT_SCAN).await?;
    let mut cmds = Vec::new();
    if !keys.is_empty() {
        let values: Vec<Option<Vec<u8>>> = mget(inner, &mut conn, &keys).await?;
        cmds.extend(
            values
                .into_iter()
                .flatten()
                .filter_map(|v| serde_json::from_slice::<Binding>(&v).ok())
                .filter(|b| b.expires_at > now)
                .map(RevocationCommand::Bind),
        );
    }
    Ok(ExportPage {
        cmds,
        next: (next != 0).then(|| next.to_string()),
    })
}

/// One chunk of the live family rules and memberships in Redis, for an
/// export: one `SCAN` step of the family hashes (their `rev` /
/// `rev:<generation>` fields, `HGETALL` pipelined), then, once those are
/// walked, of the memberships (`MGET`). The cursor is the phase and
/// Redis's cursor (`f:<n>`, `m:<n>`). Redis keeps no rule's `revoked_at`:
/// the export's is now (it only dates the event). Those still in the
/// outbox are exported once written; `SCAN` may return one twice.
pub(super) async fn families(inner: &Inner, cursor: Option<&str>) -> Result<ExportPage, ListError> {
    let (rules_phase, from) = match cursor {
        None => (true, 0),
        Some(c) => match c.split_once(':').map(|(p, n)| (p, n.parse::<u64>())) {
            Some(("f", Ok(n))) if n != 0 => (true, n),
            Some(("m", Ok(n))) => (false, n),
            _ => return Err(ListError::BadCursor),
        },
    };
    let mut conn = conn(inner)?;
    let fail = |e: RedisError| ListError::Store(failed(inner, e));
    let now = now_unix();
    let pattern = if rules_phase {
        inner.keys.family_pattern()
    } else {
        inner.keys.member_pattern()
    };
    let (next, keys) = scan_step(inner, &mut conn, &pattern, from, EXPORT_SCAN).await?;
    let mut cmds = Vec::new();
    if !keys.is_empty() && rules_phase {
        let mut pipe = ::redis::pipe();
        for k in &keys {
            pipe.cmd("HGETALL").arg(k);
        }
        let hashes: Vec<std::collections::HashMap<String, String>> =
            pipe.query_async(&mut conn).await.map_err(fail)?;
        for (key, fields) in keys.iter().zip(hashes) {
            let Some(family) = inner.keys.family_of(key) else {
                continue;
            };
            for (field, value) in fields {
                let generation = match field.strip_prefix("rev") {
                    Some("") => None,
                    Some(g) => match g.strip_prefix(':').and_then(|g| g.parse().ok()) {
                        Some(g) => Some(g),
                        None => continue,
                    },
                    None => continue,
                };
                let Ok(expires_at) = value.parse::<u64>() else {
                    continue;
                };
                if expires_at > now {
                    cmds.push(RevocationCommand::Family(FamilyRule {
                        family,
                        generation,
                        revoked_at: now,
                        expires_at,
                        members: Vec::new(),
                    }));
                }
            }
        }
    } else if !keys.is_empty() {
        let values: Vec<Option<String>> = mget(inner, &mut conn, &keys).await?;
        for (key, value) in keys.iter().zip(values) {
            let (Some(fp), Some(v)) = (inner.keys.member_of(key), value) else {
                continue;
            };
            if let Some(m) = super::family::parse_member(&fp, &v) {
                if m.expires_at > now {
                    cmds.push(RevocationCommand::Join(m));
                }
            }
        }
    }
    let next = match (next, rules_phase) {
        (0, true) => Some("m:0".to_string()),
        (0, false) => None,
        (n, true) => Some(format!("f:{n}")),
        (n, false) => Some(format!("m:{n}")),
    };
    Ok(ExportPage { cmds, next })
}
