//! Tailing the event stream: `XREAD` pages decoded into revocation
//! commands and applied to the cache, the catch-up that ends every load,
//! and the stream-position checks (`needs_resync`, `read_was_whole`, `last_event_id`) that
//! decide whether a resume can tail or must load again.

use super::*;

pub(super) async fn xread(
    inner: &Inner,
    tail: &mut Conn,
    at: EventId,
) -> Result<Option<StreamReadReply>, RedisError> {
    ::redis::cmd("XREAD")
        .arg("COUNT")
        .arg(XREAD_COUNT)
        .arg("BLOCK")
        .arg(tail_block(inner.cfg.max_staleness).as_millis() as u64)
        .arg("STREAMS")
        .arg(inner.keys.stream())
        .arg(at.to_string())
        .query_async(tail)
        .await
}

/// Applies one stream event to the local cache.
pub(super) fn apply_event(inner: &Inner, fields: &std::collections::HashMap<String, Value>) {
    let cmds = decode_event(fields);
    for cmd in &cmds {
        apply_command(inner, cmd);
    }
    // Once per event, not per command: a batch event's 10,000 rules each
    // looked the counter up in the recorder (2 % of a bulk import's CPU).
    metrics::counter!("revgate_redis_events_total").increment(cmds.len() as u64);
}

/// The commands an event carries: one (`c`, a command's JSON), or a bulk
/// import's batch of token rules (`tb`, see `super::super::keys::TOKEN_BATCH_RECORD`);
/// none, logged, when unreadable.
pub(super) fn decode_event(
    fields: &std::collections::HashMap<String, Value>,
) -> Vec<RevocationCommand> {
    let bytes = |v: &Value| match v {
        Value::BulkString(b) => Some(b.clone()),
        Value::SimpleString(s) => Some(s.as_bytes().to_vec()),
        _ => None,
    };
    if let Some(batch) = fields.get("tb").and_then(bytes) {
        if batch.len() % super::super::keys::TOKEN_BATCH_RECORD == 0 {
            return batch
                .chunks_exact(super::super::keys::TOKEN_BATCH_RECORD)
                .map(|r| {
                    let mut fp = [0u8; 16];
                    fp.copy_from_slice(&r[..16]);
                    let mut exp = [0u8; 8];
                    exp.copy_from_slice(&r[16..]);
                    RevocationCommand::Token(crate::store::TokenRule {
                        fingerprint: crate::credentials::Fingerprint::from_bytes(fp),
                        expires_at: u64::from_le_bytes(exp),
                    })
                })
                .collect();
        }
    } else if let Some(one) = fields
        .get("c")
        .and_then(bytes)
        .and_then(|b| serde_json::from_slice::<RevocationCommand>(&b).ok())
    {
        return vec![one];
    }
    tracing::warn!("unreadable revocation event in the stream; skipped");
    Vec::new()
}

/// Applies one event's command to the local cache.
pub(super) fn apply_command(inner: &Inner, cmd: &RevocationCommand) {
    match cmd {
        RevocationCommand::Token(rule) if rule.expires_at <= now_unix() => return,
        RevocationCommand::Token(_) => {
            inner.token_rules.fetch_add(1, Ordering::Relaxed);
        }
        RevocationCommand::Family(rule) => {
            inner
                .token_rules
                .fetch_add(rule.members.len() as u64, Ordering::Relaxed);
        }
        RevocationCommand::Remove(RevocationTarget::Token(_)) => {
            let _ = inner
                .token_rules
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    Some(n.saturating_sub(1))
                });
        }
        _ => {}
    }
    inner.apply_local(cmd);
}

/// Applies every event the stream holds after `at` right now (`XREAD`
/// without `BLOCK`, page by page) and returns the id of the last one, or
/// `None` when the stream was trimmed past a page's start before that page
/// was read (the events in between are gone: the caller loads again).
///
/// A load ends with this: the snapshot is as old as its last writer's
/// scan, and a scan misses what is written while it runs, so without it
/// an instance would be ready (and pass bloom misses) before it knew
/// revocations made before it started, until its tail caught up. Scope
/// events go to `defer_scopes` when given (the caller is about to replace
/// the scope rules and applies them after); tokens are applied at once
/// (during an install they reach both filters).
///
/// Whether the stream still reached back is checked *after* each read
/// ([`read_was_whole`]): a check before it says nothing about the read,
/// since other instances' writes trim meanwhile. Checked before, a stream
/// trimmed between the check and the read lost its trimmed events without
/// a word, and the position moved past them for good (found by
/// `tests/chaos.rs`; `tests/redis_store.rs` `a_stream_trimmed_past_*`).
pub(super) async fn catch_up(
    inner: &Inner,
    cmd: &mut Conn,
    mut at: EventId,
    mut defer_scopes: Option<&mut Vec<RevocationCommand>>,
) -> Result<Option<EventId>, RedisError> {
    loop {
        let from = at;
        let reply: Option<StreamReadReply> = ::redis::cmd("XREAD")
            .arg("COUNT")
            .arg(XREAD_COUNT)
            .arg("STREAMS")
            .arg(inner.keys.stream())
            .arg(at.to_string())
            .query_async(cmd)
            .await?;
        if !read_was_whole(inner, cmd, from).await? {
            return Ok(None);
        }
        let Some(reply) = reply else {
            return Ok(Some(at));
        };
        let mut n = 0;
        for key in reply.keys {
            for entry in key.ids {
                n += 1;
                let cmds = decode_event(&entry.map);
                metrics::counter!("revgate_redis_events_total").increment(cmds.len() as u64);
                for c in cmds {
                    let scope = matches!(
                        c,
                        RevocationCommand::Scope(_)
                            | RevocationCommand::Remove(RevocationTarget::Scope(_))
                    );
                    match defer_scopes.as_deref_mut() {
                        Some(later) if scope => later.push(c),
                        _ => apply_command(inner, &c),
                    }
                }
                match EventId::parse(&entry.id) {
                    Some(id) => at = id,
                    None => tracing::warn!(id = %entry.id, "unreadable stream id"),
                }
            }
        }
        if n < XREAD_COUNT {
            return Ok(Some(at));
        }
    }
}

/// Asked right after an `XREAD` from `from` was answered: whether that
/// answer held every event after `from` (the stream still reaches back to
/// it now, so it did then: trimming only moves forwards). False (logged)
/// when the trimming passed `from` (or the stream went backwards or is
/// gone): the read may have skipped events, and the instance must load
/// again. Spurious only when the trimming passed `from` after the read,
/// i.e. the instance was a whole `store.stream_maxlen` behind anyway.
///
/// An empty answer needs no check when the stream has had events after
/// `from`: `MAXLEN ~` always keeps the newest ones, which the read would
/// have returned. [`catch_up`] checks it anyway (a load's position may be
/// a snapshot's, from long ago).
pub(super) async fn read_was_whole(
    inner: &Inner,
    cmd: &mut Conn,
    from: EventId,
) -> Result<bool, RedisError> {
    Ok(!needs_resync(inner, cmd, from).await?)
}

/// Whether the stream no longer holds every event after `pos`: trimmed past
/// it (its oldest entry is newer than `pos`), gone, or moved backwards (fail-over that lost writes, restart without
/// persistence).
pub(super) async fn needs_resync(
    inner: &Inner,
    cmd: &mut Conn,
    pos: EventId,
) -> Result<bool, RedisError> {
    let info: Result<Value, RedisError> = ::redis::cmd("XINFO")
        .arg("STREAM")
        .arg(inner.keys.stream())
        .query_async(cmd)
        .await;
    let info = match info {
        Ok(v) => v,
        Err(e) if !is_fatal(&e) && e.to_string().contains("no such key") => {
            if pos > EventId::ZERO {
                tracing::warn!("the revocation stream is gone from redis; resyncing fully");
                return Ok(true);
            }
            return Ok(false);
        }
        Err(e) => return Err(e),
    };
    let last = field(&info, "last-generated-id").and_then(value_id);
    if last.is_some_and(|l| l < pos) {
        tracing::warn!(
            at = %pos,
            "the revocation stream went backwards (fail-over lost writes, or redis restarted empty); resyncing fully"
        );
        return Ok(true);
    }
    // From `0-0` (the stream was absent or empty when this instance
    // loaded) every entry is newer than the position, so the first entry
    // says nothing; the count of entries ever added does (Redis 7): none
    // trimmed while every one is still there. Without it, as below (a
    // spurious resync costs a scan).
    if pos == EventId::ZERO {
        let int = |name| match field(&info, name) {
            Some(Value::Int(n)) => Some(*n),
            _ => None,
        };
        if let (Some(added), Some(length)) = (int("entries-added"), int("length")) {
            let trimmed = added > length;
            if trimmed {
                tracing::info!(at = %pos, "the revocation stream was trimmed past this instance; resyncing fully");
            }
            return Ok(trimmed);
        }
    }
    // Trimming leaves no record of what it dropped (`max-deleted-entry-id`
    // only counts XDEL), so: the oldest entry is newer than our position, or
    // the stream is empty yet has had entries past it. A spurious resync
    // (our own entry was the last one trimmed) costs a scan, nothing more.
    let first = match field(&info, "first-entry") {
        Some(Value::Array(entry)) => entry.first().and_then(value_id),
        _ => None,
    };
    let trimmed = match first {
        Some(first) => first > pos,
        None => last.is_some_and(|l| l > pos),
    };
    if trimmed {
        tracing::info!(at = %pos, "the revocation stream was trimmed past this instance; resyncing fully");
    }
    Ok(trimmed)
}

/// A field of an `XINFO` reply (RESP2 flat array or RESP3 map).
pub(super) fn field<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    let is = |k: &Value| match k {
        Value::BulkString(b) => b == name.as_bytes(),
        Value::SimpleString(s) => s == name,
        _ => false,
    };
    match v {
        Value::Array(items) => items.chunks_exact(2).find(|kv| is(&kv[0])).map(|kv| &kv[1]),
        Value::Map(pairs) => pairs.iter().find(|(k, _)| is(k)).map(|(_, v)| v),
        _ => None,
    }
}

pub(super) fn value_id(v: &Value) -> Option<EventId> {
    match v {
        Value::BulkString(b) => std::str::from_utf8(b).ok().and_then(EventId::parse),
        Value::SimpleString(s) => EventId::parse(s),
        _ => None,
    }
}

/// The stream's last generated id (its newest entry's, or the last one
/// trimmed or deleted when it is empty now), or `0-0` when there is no
/// stream. Not the newest *entry*: for a stream emptied by an `XTRIM`, that
/// would be `0-0`, which every later check would take for "trimmed past".
pub(super) async fn last_event_id(inner: &Inner, cmd: &mut Conn) -> Result<EventId, RedisError> {
    let info: Result<Value, RedisError> = ::redis::cmd("XINFO")
        .arg("STREAM")
        .arg(inner.keys.stream())
        .query_async(cmd)
        .await;
    match info {
        Ok(v) => Ok(field(&v, "last-generated-id")
            .and_then(value_id)
            .unwrap_or(EventId::ZERO)),
        Err(e) if !is_fatal(&e) && e.to_string().contains("no such key") => Ok(EventId::ZERO),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn an_event_carries_one_command_or_a_batch_of_token_rules() {
        let fp = crate::credentials::Fingerprint::from_bytes([7; 16]);
        let one = RevocationCommand::Token(crate::store::TokenRule {
            fingerprint: fp,
            expires_at: 42,
        });
        let c = HashMap::from([(
            "c".to_string(),
            Value::BulkString(serde_json::to_vec(&one).unwrap()),
        )]);
        assert_eq!(decode_event(&c), vec![one.clone()]);
        let mut blob = Vec::new();
        for i in 0..3u8 {
            blob.extend_from_slice(&[i; 16]);
            blob.extend_from_slice(&(100 + u64::from(i)).to_le_bytes());
        }
        let tb = HashMap::from([("tb".to_string(), Value::BulkString(blob.clone()))]);
        let got = decode_event(&tb);
        assert_eq!(got.len(), 3);
        assert_eq!(
            got[2],
            RevocationCommand::Token(crate::store::TokenRule {
                fingerprint: crate::credentials::Fingerprint::from_bytes([2; 16]),
                expires_at: 102,
            })
        );
        // A torn batch or an unknown field is skipped whole.
        blob.pop();
        let torn = HashMap::from([("tb".to_string(), Value::BulkString(blob))]);
        assert!(decode_event(&torn).is_empty());
        let other = HashMap::from([("x".to_string(), Value::BulkString(b"1".to_vec()))]);
        assert!(decode_event(&other).is_empty());
    }
}
