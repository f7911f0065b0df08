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
use crate::store::{now_unix, Binding, ListError, ListedToken, StoreError, TokenPage};

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
    let Some(mut conn) = inner.link.conn() else {
        return Err(StoreError::Redis("redis is not connected".into()).into());
    };
    let fail = |e: RedisError| {
        if is_fatal(&e) {
            inner.note_lost(&e);
        }
        ListError::Store(StoreError::Redis(e.to_string()))
    };
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
    let Some(mut conn) = inner.link.conn() else {
        return Err(StoreError::Redis("redis is not connected".into()));
    };
    let fail = |e: RedisError| {
        if is_fatal(&e) {
            inner.note_lost(&e);
        }
        StoreError::Redis(e.to_string())
    };
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
