//! The RFC 8936 poller: one instance at a time polls the transmitter,
//! applies the SETs it returns, and acknowledges only what it has durably
//! applied.
//!
//! ```text
//! loop (until shutdown):
//!   lease       Redis store: SET {P}:feed:ssf-poll-lease <me> NX PX <lease>
//!               (or renew it when it is mine, one script); not mine -> wait
//!               a third of the lease and try again. Embedded store: one
//!               instance, no lease.
//!   poll        POST url {"ack":[...], "setErrs":{...}, "maxEvents":n,
//!               "returnImmediately":true}  (Authorization when configured)
//!   apply       each SET as a push would be (ssf::process):
//!                 applied, or applied before (replay memory) -> ack next poll
//!                 refused (signature, issuer, claims...)    -> setErrs next poll
//!                 store or keys unavailable                 -> neither: redelivered
//!   wait        moreAvailable -> poll again at once; else `interval`
//! ```
//!
//! # Exactly once in effect
//!
//! A SET is acknowledged only after `apply` answered Ok for all its events
//! (durable: fsync'd journal, Redis, or the outbox). If the poller dies
//! between applying and acknowledging, the transmitter redelivers it to the
//! next lease holder, whose replay check (shared through Redis) recognises
//! it: acknowledged, not counted again. Re-applying would be harmless anyway
//! (a scope rule merges), so "never lost, duplicates harmless" holds even if
//! the replay memory forgot it. Acks not yet sent when a poll fails are sent
//! with the next one (acknowledging twice is allowed, RFC 8936 §2.4).
//!
//! # One poller
//!
//! The lease is valid for this instance until `lease` × 2/3 after the
//! renewal was sent (Redis counts the full lease from when it ran the
//! script), and a poll starts only when its `timeout` fits in what is left,
//! so two instances do not poll at the same time unless a poll's processing
//! outlasts the lease (then both may apply the same SETs: harmless). On
//! shutdown the lease is released at once. When Redis cannot be reached no
//! lease can be had, and nobody polls: the SETs wait at the transmitter.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{json, Map, Value};
use tokio_util::sync::CancellationToken;

use super::set::Rejection;
use super::Delivery;
use crate::proxy::Gateway;

/// The largest poll response read (1,000 SETs of a few KiB each).
pub const MAX_POLL_RESPONSE_BYTES: usize = 16 << 20;

const LEASE_SCRIPT: &str = r"
local v = redis.call('GET', KEYS[1])
if v == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0";

const RELEASE_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0";

/// What is owed to the transmitter on the next poll.
#[derive(Default)]
struct Owed {
    ack: Vec<String>,
    errs: Map<String, Value>,
}

/// Polls until `shutdown` (see the module doc). Reads the gateway's current
/// runtime at every round, so a reload's `[feeds.ssf.poll]` applies.
pub async fn run(gw: Arc<Gateway>, shutdown: CancellationToken) {
    let mut owed = Owed::default();
    let mut held = false;
    let mut lease_until: Option<Instant> = None;
    let lease_key = gw
        .feed_state()
        .replay
        .shared()
        .map(|r| r.key("ssf-poll-lease"));
    loop {
        let rt = gw.runtime();
        let Some((feed, poll)) = rt
            .feeds
            .ssf
            .as_ref()
            .and_then(|f| f.settings.poll.as_ref().map(|p| (f, p.clone())))
        else {
            if sleep(&shutdown, Duration::from_secs(1)).await {
                break;
            }
            continue;
        };
        // The lease (shared store only).
        if let Some(key) = &lease_key {
            let sent = Instant::now();
            let ok = renew(&gw, key, poll.lease).await;
            if ok {
                lease_until = Some(sent + poll.lease * 2 / 3);
            }
            let now_held = ok && lease_until.is_some_and(|u| Instant::now() + poll.timeout < u);
            if now_held != held {
                held = now_held;
                crate::metrics::feed_poll_lease(held);
                tracing::info!(
                    held,
                    "SSF poll lease {}",
                    if held { "taken" } else { "not held" }
                );
            }
            if !held {
                if sleep(&shutdown, poll.lease / 3).await {
                    break;
                }
                continue;
            }
        } else if !held {
            held = true;
            crate::metrics::feed_poll_lease(true);
        }
        let more = match poll_once(&gw, &rt, feed, &poll, &mut owed).await {
            Ok(more) => {
                crate::metrics::feed_poll("ok");
                more
            }
            Err(e) => {
                crate::metrics::feed_poll("error");
                tracing::warn!(url = %poll.url, error = %e, "SSF poll failed; retrying after the interval");
                false
            }
        };
        // Acks owed go out at once rather than an interval later.
        let wait = if more || !owed.ack.is_empty() || !owed.errs.is_empty() {
            Duration::ZERO
        } else {
            poll.interval
        };
        if sleep(&shutdown, wait).await {
            break;
        }
    }
    if let (Some(key), true) = (&lease_key, held) {
        release(&gw, key).await;
        crate::metrics::feed_poll_lease(false);
    }
}

/// True when shutdown came first.
async fn sleep(shutdown: &CancellationToken, d: Duration) -> bool {
    if d.is_zero() {
        return shutdown.is_cancelled();
    }
    tokio::select! {
        _ = shutdown.cancelled() => true,
        _ = tokio::time::sleep(d) => false,
    }
}

async fn renew(gw: &Gateway, key: &str, lease: Duration) -> bool {
    let state = gw.feed_state();
    let Some(shared) = state.replay.shared() else {
        return false;
    };
    let Some(mut c) = shared.conn().await else {
        return false;
    };
    let r: Result<i64, _> = ::redis::Script::new(LEASE_SCRIPT)
        .key(key)
        .arg(&state.instance)
        .arg(lease.as_millis() as u64)
        .invoke_async(&mut c)
        .await;
    match r {
        Ok(n) => n == 1,
        Err(e) => {
            tracing::warn!(error = %e, "SSF poll lease could not be renewed");
            shared.failed(&e).await;
            false
        }
    }
}

async fn release(gw: &Gateway, key: &str) {
    let state = gw.feed_state();
    let Some(shared) = state.replay.shared() else {
        return;
    };
    if let Some(mut c) = shared.conn().await {
        let r: Result<i64, _> = ::redis::Script::new(RELEASE_SCRIPT)
            .key(key)
            .arg(&state.instance)
            .invoke_async(&mut c)
            .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "SSF poll lease not released (it lapses on its own)");
        }
    }
}

/// One poll: sends what is owed, applies what comes back; whether the
/// transmitter has more.
async fn poll_once(
    gw: &Gateway,
    rt: &crate::proxy::Runtime,
    feed: &super::SsfFeed,
    poll: &super::PollSettings,
    owed: &mut Owed,
) -> Result<bool, String> {
    let body = json!({
        "ack": owed.ack,
        "setErrs": owed.errs,
        "maxEvents": poll.max_events,
        "returnImmediately": true,
    });
    let mut req = Request::post(poll.url.clone())
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCEPT, "application/json")
        .header(
            header::USER_AGENT,
            concat!("revgate/", env!("CARGO_PKG_VERSION")),
        );
    if let Some(auth) = &poll.authorization {
        req = req.header(header::AUTHORIZATION, auth.clone());
    }
    let req = req
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| e.to_string())?;
    let work = async {
        let resp = feed
            .client
            .request(req)
            .await
            .map_err(|e| crate::telemetry::error_chain(&e))?;
        if resp.status() != StatusCode::OK {
            return Err(format!(
                "answered {} (expected 200)",
                resp.status().as_u16()
            ));
        }
        let body = http_body_util::Limited::new(resp.into_body(), MAX_POLL_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok::<_, String>(body)
    };
    let body = tokio::time::timeout(poll.timeout, work)
        .await
        .map_err(|_| "timed out".to_string())??;
    // The transmitter has what was owed.
    owed.ack.clear();
    owed.errs.clear();
    let v: Value = serde_json::from_slice(&body).map_err(|_| "answer is not JSON".to_string())?;
    let more = v
        .get("moreAvailable")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let Some(sets) = v.get("sets").and_then(Value::as_object) else {
        return Err("answer has no sets object".into());
    };
    let mut stalled = false;
    for (jti, set) in sets {
        let Some(token) = set.as_str() else {
            owed.errs.insert(
                jti.clone(),
                super::ssf::set_error(&Rejection::InvalidRequest("not a JWS compact token")),
            );
            continue;
        };
        match super::ssf::process(gw, rt, feed, token, Delivery::Poll).await {
            Ok((verified_jti, _)) if &verified_jti == jti => owed.ack.push(jti.clone()),
            Ok(_) => {
                // Applied (it verified), but filed under another name: the
                // transmitter must not take this key as acknowledged.
                owed.errs.insert(
                    jti.clone(),
                    super::ssf::set_error(&Rejection::InvalidRequest(
                        "the SET's jti is not the key it was delivered under",
                    )),
                );
            }
            Err(Rejection::Unavailable(why)) => {
                stalled = true;
                tracing::warn!(
                    reason = why,
                    "polled SET not applied: left unacknowledged for redelivery"
                );
            }
            Err(r) => {
                crate::metrics::feed_rejected("ssf", r.reason());
                tracing::info!(
                    reason = r.reason(),
                    description = r.description(),
                    "polled SET refused: reported in setErrs, nothing revoked"
                );
                owed.errs.insert(jti.clone(), super::ssf::set_error(&r));
            }
        }
    }
    // Redelivery of what could not be applied waits for the interval.
    Ok(more && !stalled)
}
