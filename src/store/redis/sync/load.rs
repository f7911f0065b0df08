//! Loading: the start-up load and full resync (from the bloom snapshot
//! when the stream still reaches back to it, else a `SCAN` of every key),
//! the periodic bloom rebuild, and the ordering that keeps the outbox's and
//! the scan-time rules enforced throughout a swap.

use super::*;

/// What a scan found.
pub(super) struct Scanned {
    pub(super) tokens: u64,
    pub(super) scopes: Vec<ScopeRule>,
}

/// Scans every key of the deployment: token fingerprints go into `rebuild`,
/// scope rules are fetched (`MGET`) when `with_scopes`.
pub(super) async fn scan(
    inner: &Inner,
    cmd: &mut Conn,
    rebuild: &crate::store::cache::BloomRebuild,
    with_scopes: bool,
) -> Result<Scanned, RedisError> {
    let mut out = Scanned {
        tokens: 0,
        scopes: Vec::new(),
    };
    let mut scope_keys: Vec<Vec<u8>> = Vec::new();
    let pattern = inner.keys.scan_pattern().to_string();
    // The next page is always in flight while this one is processed: Redis
    // scans while this side parses and fills the filter.
    let page = |conn: Conn, cursor: u64| {
        let pattern = pattern.clone();
        tokio::spawn(async move {
            let mut conn = conn;
            ::redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(SCAN_COUNT)
                .query_async::<(u64, Vec<Vec<u8>>)>(&mut conn)
                .await
        })
    };
    let mut in_flight = Some(page(cmd.clone(), 0));
    while let Some(task) = in_flight.take() {
        let (next, keys) = task
            .await
            .map_err(|e| RedisError::from(std::io::Error::other(format!("scan task: {e}"))))??;
        if next != 0 {
            in_flight = Some(page(cmd.clone(), next));
        }
        for k in keys {
            match inner.keys.classify(&k) {
                KeyKind::Token(fp) => {
                    rebuild.insert(&fp);
                    out.tokens += 1;
                }
                KeyKind::Scope if with_scopes => scope_keys.push(k),
                _ => {}
            }
        }
        if scope_keys.len() >= MGET_BATCH {
            fetch_scopes(cmd, &mut scope_keys, &mut out.scopes).await?;
        }
    }
    if !scope_keys.is_empty() {
        fetch_scopes(cmd, &mut scope_keys, &mut out.scopes).await?;
    }
    Ok(out)
}

pub(super) async fn fetch_scopes(
    cmd: &mut Conn,
    keys: &mut Vec<Vec<u8>>,
    into: &mut Vec<ScopeRule>,
) -> Result<(), RedisError> {
    let values: Vec<Option<Vec<u8>>> = ::redis::cmd("MGET").arg(&keys[..]).query_async(cmd).await?;
    keys.clear();
    let now = now_unix();
    for v in values.into_iter().flatten() {
        match serde_json::from_slice::<ScopeRule>(&v) {
            Ok(rule) if rule.expires_at > now => into.push(rule),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "unreadable scope rule in redis; skipped"),
        }
    }
    Ok(())
}

/// The start-up load (and full resync): returns the stream id to tail from.
/// From the snapshot when there is a usable one, else by `SCAN` (which then
/// writes a new snapshot).
pub(super) async fn full_load(inner: &Inner, cmd: &mut Conn) -> Result<EventId, RedisError> {
    let _one = inner.rebuild_gate.lock().await;
    metrics::counter!("revgate_redis_resyncs_total").increment(1);
    let started = std::time::Instant::now();
    match load_snapshot(inner, cmd, started).await {
        Ok(Some(at)) => return Ok(at),
        Ok(None) => {}
        Err(e) if is_fatal(&e) => return Err(e),
        Err(e) => {
            tracing::warn!(error = %e, "could not read the redis snapshot; loading with SCAN")
        }
    }
    loop {
        if let Some(at) = scan_load(inner, cmd, started).await? {
            return Ok(at);
        }
        // The stream was trimmed past the scan's id before its catch-up
        // read it: what was written during the scan may be in neither.
        tracing::info!("the revocation stream was trimmed past this load; scanning again");
    }
}

/// One `SCAN` load (see [`full_load`]): the id to tail from, or `None` when
/// the stream no longer reached back to the scan's id by its catch-up.
async fn scan_load(
    inner: &Inner,
    cmd: &mut Conn,
    started: std::time::Instant,
) -> Result<Option<EventId>, RedisError> {
    let at = last_event_id(inner, cmd).await?;
    // Size the filter for what is there before filling it: at start-up the
    // count of known rules is 0, and a filter sized only by
    // `store.bloom_capacity` would be over-full with more rules than that
    // (most requests would then look revoked and go to Redis until a
    // right-sized rebuild). DBSIZE counts every key of the database: an
    // upper bound, and O(1).
    let keys_in_db: u64 = ::redis::cmd("DBSIZE").query_async(cmd).await.unwrap_or(0);
    let estimate = (inner.token_rules.load(Ordering::Relaxed)).max(keys_in_db) as usize;
    let rebuild = inner.cache.begin_rebuild(estimate);
    let sized_for = rebuild.capacity();
    reapply_outbox(inner).await;
    let scanned = match scan(inner, cmd, &rebuild, true).await {
        Ok(s) => s,
        Err(e) => {
            inner.cache.abandon_rebuild(rebuild);
            return Err(e);
        }
    };
    inner.cache.finish_rebuild(rebuild);
    save_snapshot(inner, cmd, at, scanned.tokens, scanned.scopes.clone());
    inner.token_rules.store(scanned.tokens, Ordering::Relaxed);
    let scanned_from = at;
    let mut later_scopes = Vec::new();
    let Some(at) = catch_up(inner, cmd, at, Some(&mut later_scopes)).await? else {
        return Ok(None);
    };
    install_scopes(inner, scanned.scopes, &later_scopes).await;
    inner.confirmed.clear();
    if scanned.tokens as usize > sized_for {
        // Complete (no false negatives) but over-full: a high false-positive
        // rate sends many requests to Redis. A right-sized generation is
        // built in the background, while tailing goes on.
        tracing::info!(
            token_rules = scanned.tokens,
            sized_for,
            "bloom filter undersized (raise store.bloom_capacity); rebuilding it now"
        );
        inner.rebuild_now.notify_one();
    }
    tracing::info!(
        token_rules = scanned.tokens,
        scope_rules = inner.cache.scope_rule_count(),
        from = %scanned_from,
        caught_up_to = %at,
        source = "scan",
        took_ms = started.elapsed().as_millis() as u64,
        "revocations loaded from redis"
    );
    Ok(Some(at))
}

/// Installs the snapshot, if there is one the stream still reaches back
/// to: `Some(id to tail from)`; `None` when there is none or it is unusable
/// (the caller scans instead).
///
/// The header is read first (`GETRANGE`) so the new filter, shaped like the
/// snapshot's, can receive inserts (through [`LocalCache::begin_install`])
/// before the bits arrive: nothing inserted during the `GET` is lost.
///
/// [`LocalCache::begin_install`]: crate::store::LocalCache::begin_install
pub(super) async fn load_snapshot(
    inner: &Inner,
    cmd: &mut Conn,
    started: std::time::Instant,
) -> Result<Option<EventId>, RedisError> {
    let key = inner.keys.snapshot();
    let (head, len): (Vec<u8>, u64) = ::redis::pipe()
        .cmd("GETRANGE")
        .arg(key)
        .arg(0)
        .arg(snapshot::HEADER_LEN - 1)
        .cmd("STRLEN")
        .arg(key)
        .query_async(cmd)
        .await?;
    if head.is_empty() {
        return Ok(None);
    }
    // The length must match the header's before anything is allocated for it.
    let header = snapshot::Header::parse(&head).filter(|h| h.total_len() == len);
    let Some(h) = header else {
        tracing::warn!(
            "the redis snapshot is unreadable (corrupt or another version); loading with SCAN"
        );
        return Ok(None);
    };
    if needs_resync(inner, cmd, h.at).await? {
        tracing::info!(snapshot_at = %h.at, "the redis snapshot is older than the stream reaches back; loading with SCAN");
        return Ok(None);
    }
    let shell = AtomicBloom::with_shape(h.bits, h.hashes, h.capacity as usize);
    let Some(shell) = shell else {
        return Ok(None);
    };
    let install = inner.cache.begin_install(shell);
    reapply_outbox(inner).await;
    let blob: Option<Vec<u8>> = match ::redis::cmd("GET").arg(key).query_async(cmd).await {
        Ok(b) => b,
        Err(e) => {
            inner.cache.abandon_rebuild(install);
            return Err(e);
        }
    };
    let snap = blob
        .as_deref()
        .and_then(snapshot::decode)
        .filter(|s| s.header == h);
    let Some(snap) = snap.filter(|s| install.merge_words_le(s.words_le)) else {
        inner.cache.abandon_rebuild(install);
        tracing::warn!(
            "the redis snapshot is corrupt, or was replaced while read; loading with SCAN"
        );
        return Ok(None);
    };
    // What came after the snapshot, before the filter is swapped in (see
    // `catch_up`): its tokens reach the new filter too.
    inner.token_rules.store(h.token_rules, Ordering::Relaxed);
    let mut later_scopes = Vec::new();
    let at = match catch_up(inner, cmd, h.at, Some(&mut later_scopes)).await {
        Ok(Some(at)) => at,
        Ok(None) => {
            // Trimmed past the snapshot since the check above: the events
            // in between are gone from the stream.
            inner.cache.abandon_rebuild(install);
            tracing::info!(snapshot_at = %h.at, "the revocation stream was trimmed past the snapshot during its load; loading with SCAN");
            return Ok(None);
        }
        Err(e) => {
            inner.cache.abandon_rebuild(install);
            return Err(e);
        }
    };
    inner.cache.finish_rebuild(install);
    let now = now_unix();
    let scopes = snap.scopes.into_iter().filter(|r| r.expires_at > now);
    install_scopes(inner, scopes, &later_scopes).await;
    inner.confirmed.clear();
    inner.snapshot_loads.fetch_add(1, Ordering::Relaxed);
    metrics::counter!("revgate_redis_snapshot_loads_total").increment(1);
    recheck_live(inner, cmd).await;
    if h.token_rules > h.capacity {
        // Sized by whoever wrote it, for fewer rules: complete but over-full.
        inner.rebuild_now.notify_one();
    }
    tracing::info!(
        token_rules = h.token_rules,
        scope_rules = inner.cache.scope_rule_count(),
        from = %h.at,
        caught_up_to = %at,
        source = "snapshot",
        took_ms = started.elapsed().as_millis() as u64,
        "revocations loaded from redis"
    );
    Ok(Some(at))
}

/// Closes the live sessions whose credential a freshly installed snapshot
/// revoked: a bloom hit is looked up exactly (`GET`); one that cannot be
/// answered closes the session (fail closed, as the verdict would).
pub(super) async fn recheck_live(inner: &Inner, cmd: &mut Conn) {
    let live = inner.cache.live();
    let now = now_unix();
    for fp in live.fingerprints() {
        if !inner.cache.may_contain(&fp) {
            continue;
        }
        let value: Result<Option<String>, RedisError> = ::redis::cmd("GET")
            .arg(inner.keys.token(&fp))
            .query_async(cmd)
            .await;
        let revoked = match value {
            Ok(None) => false,
            Ok(Some(v)) => v.parse::<u64>().map_or(true, |exp| exp > now),
            Err(_) => true,
        };
        if revoked {
            live.revoked(Rule::Token(&fp));
        }
    }
}

/// Writes the snapshot of a finished scan that began after stream id `at`
/// (the current filter, which holds at least what the scan found), in the
/// background: one `SET`, last writer wins. A scan that found nothing
/// deletes it instead (an empty snapshot saves no time; an older one would
/// only carry stale bits).
pub(super) fn save_snapshot(
    inner: &Inner,
    cmd: &Conn,
    at: EventId,
    token_rules: u64,
    scopes: Vec<ScopeRule>,
) {
    let key = inner.keys.snapshot().to_string();
    let bloom = inner.cache.bloom();
    let mut conn = cmd.clone();
    tokio::spawn(async move {
        let r: Result<(), RedisError> = if token_rules == 0 && scopes.is_empty() {
            ::redis::cmd("DEL").arg(&key).query_async(&mut conn).await
        } else {
            let value = snapshot::encode(at, &bloom, token_rules, &scopes);
            let bytes = value.len();
            let r = ::redis::cmd("SET")
                .arg(&key)
                .arg(value)
                .query_async(&mut conn)
                .await;
            if r.is_ok() {
                metrics::counter!("revgate_redis_snapshot_writes_total").increment(1);
                tracing::debug!(at = %at, bytes, token_rules, "redis snapshot written");
            }
            r
        };
        if let Err(e) = r {
            tracing::warn!(error = %e, "could not write the redis snapshot");
        }
    });
}

/// The outbox's rules are not in Redis yet: a rebuild from Redis must not
/// drop them from the cache. Called right after a rebuild (or install)
/// begins, before its scan: what is in the outbox then reaches the new
/// filter (whether a replay writes it before or during the scan: it
/// leaves the outbox only after it was written), and what is queued later
/// reaches both filters as it is applied. Applied only after the swap, as it once was, a replay
/// that emptied the outbox during the scan left those tokens out of the
/// filter until the tail brought their events back (found by
/// `tests/chaos.rs`; `tests/redis_store.rs`
/// `an_outbox_replayed_during_a_bloom_rebuild_stays_enforced_throughout`).
pub(super) async fn reapply_outbox(inner: &Inner) {
    let ob = inner.outbox.lock().await;
    for c in &ob.pending {
        inner.apply_local(c);
    }
}

/// Replaces the scope rules with a load's, then applies the scope events
/// read after it and the outbox's rules, all under the outbox lock with no
/// await in between, so no rule is missing for a moment.
pub(super) async fn install_scopes(
    inner: &Inner,
    scopes: impl IntoIterator<Item = ScopeRule>,
    later: &[RevocationCommand],
) {
    let ob = inner.outbox.lock().await;
    inner.cache.replace_scopes(scopes);
    metrics::counter!("revgate_redis_events_total").increment(later.len() as u64);
    for c in later {
        apply_command(inner, c);
    }
    for c in &ob.pending {
        inner.apply_local(c);
    }
}

pub(super) async fn rebuild_bloom(inner: &Inner, cmd: &mut Conn) -> Result<u64, RedisError> {
    let _one = inner.rebuild_gate.lock().await;
    // Noted before the scan, for the snapshot (as in `full_load`).
    let at = last_event_id(inner, cmd).await?;
    let estimate = inner.token_rules.load(Ordering::Relaxed) as usize;
    let rebuild = inner.cache.begin_rebuild(estimate);
    reapply_outbox(inner).await;
    // Scope rules too (they are few): the snapshot carries them.
    match scan(inner, cmd, &rebuild, true).await {
        Ok(s) => {
            inner.cache.finish_rebuild(rebuild);
            save_snapshot(inner, cmd, at, s.tokens, s.scopes);
            inner.token_rules.store(s.tokens, Ordering::Relaxed);
            Ok(s.tokens)
        }
        Err(e) => {
            inner.cache.abandon_rebuild(rebuild);
            Err(e)
        }
    }
}
