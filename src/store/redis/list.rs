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
    now_unix, Binding, FamilyRule, ListError, ListedToken, Member, StoreError, TokenPage,
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
    let fail = |e: RedisError| ListError::Store(failed(inner, e));
    let (next, keys): (u64, Vec<String>) = ::redis::cmd("SCAN")
        .arg(from)
        .arg("MATCH")
        .arg(inner.keys.token_pattern())
        .arg("COUNT")
        .arg(limit)
        .query_async(&mut conn)
        .await
        .map_err(fail)?;
    if !keys.is_empty() {
        let values: Vec<Option<String>> = ::redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut conn)
            .await
            .map_err(fail)?;
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

/// Every live binding in Redis, for an export: a whole `SCAN` of the
/// binding keys, values by `MGET`. Bindings still in the outbox are not
/// among them (exported once written).
pub(super) async fn bindings(inner: &Inner) -> Result<Vec<Binding>, StoreError> {
    let mut conn = conn(inner)?;
    let fail = |e: RedisError| failed(inner, e);
    let now = now_unix();
    let mut out = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = ::redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(inner.keys.binding_pattern())
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
            .map_err(fail)?;
        if !keys.is_empty() {
            let values: Vec<Option<Vec<u8>>> = ::redis::cmd("MGET")
                .arg(&keys)
                .query_async(&mut conn)
                .await
                .map_err(fail)?;
            out.extend(
                values
                    .into_iter()
                    .flatten()
                    .filter_map(|v| serde_json::from_slice::<Binding>(&v).ok())
                    .filter(|b| b.expires_at > now),
            );
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
    // SCAN may return a key twice.
    out.sort_by_key(|b| b.fingerprint);
    out.dedup_by_key(|b| b.fingerprint);
    Ok(out)
}

/// Every live family rule and membership in Redis, for an export: a whole
/// `SCAN` of the family hashes (their `rev` / `rev:<generation>` fields,
/// `HGETALL` pipelined per page) and of the memberships (`MGET`). Redis
/// keeps no rule's `revoked_at`: the export's is now (it only dates the
/// event). Those still in the outbox are exported once written.
pub(super) async fn families(inner: &Inner) -> Result<(Vec<FamilyRule>, Vec<Member>), StoreError> {
    let mut conn = conn(inner)?;
    let fail = |e: RedisError| failed(inner, e);
    let now = now_unix();
    let mut rules = Vec::new();
    let mut members = Vec::new();
    for (pattern, families) in [
        (inner.keys.family_pattern(), true),
        (inner.keys.member_pattern(), false),
    ] {
        let mut cursor = 0u64;
        loop {
            let (next, keys): (u64, Vec<String>) = ::redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .map_err(fail)?;
            if !keys.is_empty() && families {
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
                            rules.push(FamilyRule {
                                family,
                                generation,
                                revoked_at: now,
                                expires_at,
                                members: Vec::new(),
                            });
                        }
                    }
                }
            } else if !keys.is_empty() {
                let values: Vec<Option<String>> = ::redis::cmd("MGET")
                    .arg(&keys)
                    .query_async(&mut conn)
                    .await
                    .map_err(fail)?;
                for (key, value) in keys.iter().zip(values) {
                    let (Some(fp), Some(v)) = (inner.keys.member_of(key), value) else {
                        continue;
                    };
                    if let Some(m) = super::family::parse_member(&fp, &v) {
                        if m.expires_at > now {
                            members.push(m);
                        }
                    }
                }
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    // SCAN may return a key twice.
    rules.sort_by_key(|r| (r.family, r.generation));
    rules.dedup_by_key(|r| (r.family, r.generation));
    members.sort_by_key(|m| m.fingerprint);
    members.dedup_by_key(|m| m.fingerprint);
    Ok((rules, members))
}
