//! Identity-provider feeds (issue 15) through the real binary: OIDC
//! Back-Channel Logout and the Shared Signals receiver (RFC 8935 push, RFC
//! 8936 poll), against a test identity provider (a real HTTP server serving
//! a JWKS of generated RS256 and ES256 keys, rotated mid-test) that signs
//! logout tokens and SETs.
//!
//! Covered: every event type revokes its subject's JWTs and opaque bound
//! credentials issued before the event on two instances sharing a real
//! redis-server (401, the upstream's counter unchanged) and passes those
//! issued after; every bad input (forged signature, wrong issuer or
//! audience, `alg: none`, HMAC, missing `events`, a `nonce`, a replayed
//! `jti`, an oversized body, a wrong content type, a missing or wrong
//! transmitter authorization, the wrong method, a rate limit) gets its
//! documented status and exact body and revokes nothing (the store's scope
//! listing stays empty); a revocation recorded but not confirmed (Redis
//! away, `consistency = "confirmed"`) answers 503 and its retry applies; a feed path on a plain keep-alive HTTP/1.1
//! connection on both connection paths; key rotation, a key rotated in
//! inside `min_refresh_interval` answered 503 (retried), not 400 (lost);
//! and the poller: a
//! transmitter holding 1,000 SETs, the polling instance killed -9 midway,
//! every SET applied exactly once in effect and acknowledged only once its
//! rule was in Redis.
#[path = "support/redis.rs"]
mod redis_support;
mod support;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use jsonwebtoken::Algorithm;
use redis_support::RedisServer;
use serde_json::{json, Value};
use support::jwks::{hs256, jwks, unsigned, JwksServer, SigningKey};
use support::prometheus;
use support::raw::RawClient;
use support::*;

const ISS: &str = "https://idp.test/";
const BCL_AUD: &str = "revgate-rp";
const SSF_AUD: &str = "https://revgate.test/ssf";
const PUSH_AUTH: &str = "Bearer ssf-push-secret-0123456789";
const LOGOUT: &str = "http://schemas.openid.net/event/backchannel-logout";
const FP_KEY: &str = "66656564732d746573742d6b65792d33322d62797465732d2121212121212121";
const CAEP: &str = "https://schemas.openid.net/secevent/caep/event-type/";
const RISC: &str = "https://schemas.openid.net/secevent/risc/event-type/";

/// The six SSF event types that revoke.
const REVOKING: [&str; 6] = [
    "caep/session-revoked",
    "caep/credential-change",
    "risc/account-disabled",
    "risc/account-purged",
    "risc/credential-compromise",
    "risc/sessions-revoked",
];

fn event_uri(short: &str) -> String {
    match short.split_once('/') {
        Some(("caep", e)) => format!("{CAEP}{e}"),
        Some(("risc", e)) => format!("{RISC}{e}"),
        _ => short.to_string(),
    }
}

fn jti() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!("jti-{}-{}", now(), N.fetch_add(1, Ordering::SeqCst))
}

// === the test identity provider ===

/// A JWKS server and the keys it serves (RS256 and ES256 at first).
struct Idp {
    jwks: JwksServer,
    rsa: SigningKey,
    ec: SigningKey,
}

impl Idp {
    async fn spawn() -> Idp {
        let rsa = SigningKey::rsa('a', "rsa-1", Algorithm::RS256);
        let ec = SigningKey::es256("ec-1");
        let jwks = JwksServer::spawn(jwks(&[&rsa, &ec])).await;
        Idp { jwks, rsa, ec }
    }
}

fn logout_claims(sub: &str, iat: u64) -> Value {
    json!({
        "iss": ISS, "aud": BCL_AUD, "iat": iat, "exp": now() + 300, "jti": jti(),
        "sub": sub, "sid": "session-1", "events": { LOGOUT: {} },
    })
}

fn set_claims(event: &str, sub: &str, at: u64) -> Value {
    json!({
        "iss": ISS, "aud": SSF_AUD, "iat": now(), "jti": jti(),
        "events": { event_uri(event): {
            "subject": {"format": "iss_sub", "iss": ISS, "sub": sub},
            "event_timestamp": at,
        }},
    })
}

fn with(mut v: Value, f: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
    f(v.as_object_mut().unwrap());
    v
}

/// The `[feeds]` of every gateway here (`extra` appended inside `[feeds.ssf]`).
fn feeds_toml(jwks_url: &str, extra_ssf: &str) -> String {
    format!(
        r#"[tokens]
fingerprint_key = "{FP_KEY}"
[store]
key_prefix = "fd"
[feeds.backchannel_logout]
enabled = true
issuer = "{ISS}"
audience = "{BCL_AUD}"
jwks_url = "{jwks_url}"
min_refresh_interval = "10ms"
[feeds.ssf]
enabled = true
issuer = "{ISS}"
audience = "{SSF_AUD}"
jwks_url = "{jwks_url}"
min_refresh_interval = "10ms"
authorization_header = "{PUSH_AUTH}"
{extra_ssf}
"#
    )
}

async fn logout(gw: &RunningGateway, token: &str) -> Got {
    let body = form_urlencoded::Serializer::new(String::new())
        .append_pair("logout_token", token)
        .finish();
    send(call(
        "POST",
        &format!("{}/backchannel-logout", gw.url),
        &[("content-type", "application/x-www-form-urlencoded")],
        body.as_bytes(),
    ))
    .await
}

/// A provider's retries of one logout token: sent again (every 100 ms, for
/// 20 s at most) while it answers 503; the first other answer.
async fn logout_until_not_503(gw: &RunningGateway, token: &str) -> Got {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = logout(gw, token).await;
        if r.status != 503 || std::time::Instant::now() >= deadline {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn push(gw: &RunningGateway, set: &str) -> Got {
    send(call(
        "POST",
        &format!("{}/ssf/events", gw.url),
        &[
            ("content-type", "application/secevent+jwt"),
            ("authorization", PUSH_AUTH),
        ],
        set.as_bytes(),
    ))
    .await
}

/// Every scope rule the instance holds (the admin listing, all pages).
async fn scopes(gw: &RunningGateway) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(c) => format!("{}/admin/v1/scopes?limit=1000&cursor={c}", gw.admin_url),
            None => format!("{}/admin/v1/scopes?limit=1000", gw.admin_url),
        };
        let r = fetch(&url, &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        out.extend(v["scopes"].as_array().unwrap().iter().cloned());
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return out,
        }
    }
}

async fn metric(gw: &RunningGateway, name: &str, labels: &[(&str, &str)]) -> f64 {
    let r = fetch(&format!("{}/metrics", gw.admin_url), &[]).await;
    prometheus::parse(&r.text())
        .unwrap()
        .value(name, labels)
        .unwrap_or_else(|| panic!("{name} {labels:?} not exported"))
}

async fn ready(g: &RunningGateway) {
    let url = format!("{}/readyz", g.admin_url);
    wait_for("/readyz 200", Duration::from_secs(20), || async {
        fetch(&url, &[]).await.status == 200
    })
    .await;
}

async fn bind(gw: &RunningGateway, credential: &str, sub: &str, issued_at: u64) {
    let r = post_json(
        &format!("{}/admin/v1/principals", gw.admin_url),
        &json!({"credential": credential, "sub": sub, "issued_at": issued_at}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

fn redis_gateway(redis: &RedisServer, up: &str, toml: &str) -> RunningGateway {
    Gateway::new()
        .upstream(up)
        .arg("--store")
        .arg(&redis.url())
        .toml(toml)
        .spawn()
}

// === push: every event type, two instances ===

#[tokio::test]
async fn every_event_type_revokes_earlier_jwts_and_bound_credentials_on_both_instances() {
    let idp = Idp::spawn().await;
    let redis = RedisServer::spawn();
    let up = Upstream::new().spawn().await;
    let toml = feeds_toml(&idp.jwks.url, "");
    let a = redis_gateway(&redis, &up.url, &toml);
    let b = redis_gateway(&redis, &up.url, &toml);
    ready(&a).await;
    ready(&b).await;

    // One subject per event type; the logout token first.
    let mut events: Vec<String> = vec!["backchannel-logout".into()];
    events.extend(REVOKING.iter().map(|s| s.to_string()));
    let t = now() - 50;
    let bystander = jwt(&json!({"sub": "bystander", "iat": t - 50}));
    for (i, event) in events.iter().enumerate() {
        let sub = format!("user-{i}");
        let before = jwt(&json!({"sub": sub, "iat": t - 50}));
        let after = jwt(&json!({"sub": sub, "iat": t + 20}));
        let opaque_before = format!("opaque-{i}-before");
        let opaque_after = format!("opaque-{i}-after");
        bind(&a, &opaque_before, &sub, t - 50).await;
        bind(&a, &opaque_after, &sub, t + 20).await;
        for gw in [&a, &b] {
            assert_passes(gw, &up, &before).await;
            assert_passes(gw, &up, &opaque_before).await;
        }
        // Alternate the receiving instance, and the signing key.
        let (to, other) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let key = if i % 2 == 0 { &idp.rsa } else { &idp.ec };
        let signed = if event == "backchannel-logout" {
            key.sign(&logout_claims(&sub, t))
        } else {
            key.sign(&set_claims(event, &sub, t))
        };
        let r = if event == "backchannel-logout" {
            logout(to, &signed).await
        } else {
            push(to, &signed).await
        };
        if event == "backchannel-logout" {
            assert_eq!(r.status, 200, "{event}: {}", r.text());
            assert_eq!(r.header("cache-control"), Some("no-store"));
        } else {
            assert_eq!(r.status, 202, "{event}: {}", r.text());
        }
        assert_eq!(r.text(), "", "{event}");
        // The receiver enforces at once; the other once it has the event.
        assert_revoked(to, &up, &before).await;
        // Replayed to the other instance: caught there too (through Redis).
        if event == "backchannel-logout" {
            let r = logout(other, &signed).await;
            assert_eq!(r.status, 400, "{}", r.text());
            assert_eq!(
                r.json()["error_description"],
                json!("token already received (jti replayed)")
            );
        } else {
            assert_eq!(push(other, &signed).await.status, 202);
        }
        let url = format!("{}/data", other.url);
        wait_for(
            &format!("{event} reaches the other instance"),
            Duration::from_secs(10),
            || async { get_bearer(&url, &before).await.status == 401 },
        )
        .await;
        for gw in [&a, &b] {
            assert_revoked(gw, &up, &before).await;
            assert_revoked(gw, &up, &opaque_before).await;
            assert_passes(gw, &up, &after).await;
            assert_passes(gw, &up, &opaque_after).await;
            assert_passes(gw, &up, &bystander).await;
        }
    }
    for gw in [&a, &b] {
        let rules = scopes(gw).await;
        assert_eq!(rules.len(), events.len(), "{rules:?}");
        for rule in &rules {
            assert_eq!(rule["revoked_at"], json!(t), "{rule}");
            assert!(
                rule.get("org").is_none() && rule.get("provider").is_none(),
                "{rule}"
            );
        }
    }
    // Counted where applied: 4 of the 7 on a (even indexes), 3 on b.
    async fn applied(gw: &RunningGateway, source: &str, mode: &str) -> f64 {
        metric(
            gw,
            "revgate_revocations_applied_total",
            &[("source", source), ("mode", mode)],
        )
        .await
    }
    assert_eq!(applied(&a, "backchannel_logout", "push").await, 1.0);
    assert_eq!(applied(&a, "ssf", "push").await, 3.0);
    assert_eq!(applied(&b, "ssf", "push").await, 3.0);
    // The SETs replayed to the other instance were recognised, not re-applied.
    let dup = [("feed", "ssf"), ("outcome", "duplicate")];
    assert_eq!(
        metric(&a, "revgate_feed_events_total", &dup).await
            + metric(&b, "revgate_feed_events_total", &dup).await,
        6.0
    );
    assert!(a.logs().contains("feed revocation applied"));
    // Raw tokens and subjects never reach the logs (the subject as its fingerprint).
    for gw in [&a, &b] {
        let logs = gw.logs();
        assert!(
            !logs.contains("user-0\"") && !logs.contains("opaque-0-before"),
            "{logs}"
        );
    }
}

// === bad input: the documented error, nothing revoked ===

#[tokio::test]
async fn bad_logout_tokens_get_400_and_revoke_nothing() {
    let idp = Idp::spawn().await;
    let up = Upstream::new().spawn().await;
    let gw = Gateway::new()
        .upstream(&up.url)
        .toml(&feeds_toml(&idp.jwks.url, ""))
        .toml("[revoke]\nmax_body_bytes = 4096")
        .spawn();
    let victim = jwt(&json!({"sub": "victim", "iat": now() - 100}));
    assert_passes(&gw, &up, &victim).await;
    let t = now() - 10;
    let good = || logout_claims("victim", t);
    let stranger = SigningKey::rsa('b', "rsa-1", Algorithm::RS256);
    #[rustfmt::skip]
    let cases: Vec<(&str, String, &str)> = vec![
        ("forged signature", stranger.sign(&good()), "bad signature"),
        ("wrong issuer", idp.rsa.sign(&with(good(), |c| { c.insert("iss".into(), json!("https://evil/")); })), "issuer not accepted"),
        ("wrong audience", idp.rsa.sign(&with(good(), |c| { c.insert("aud".into(), json!("someone-else")); })), "audience not accepted"),
        ("alg none", unsigned(&good()), "unsigned token (alg none)"),
        ("HS256 keyed with the public key", hs256("rsa-1", &idp.rsa.public_bytes(), &good()), "symmetric algorithm refused"),
        ("unknown kid", idp.ec.sign_as("nope", &good()), "unknown key"),
        ("missing events", idp.rsa.sign(&with(good(), |c| { c.remove("events"); })), "events missing or not an object"),
        ("events without the logout event", idp.rsa.sign(&with(good(), |c| { c.insert("events".into(), json!({"urn:other": {}})); })), "events has no backchannel-logout member"),
        ("a nonce (an ID token)", idp.rsa.sign(&with(good(), |c| { c.insert("nonce".into(), json!("n-1")); })), "a logout token must not contain nonce"),
        ("no sub nor sid", idp.rsa.sign(&with(good(), |c| { c.remove("sub"); c.remove("sid"); })), "sub or sid is required"),
        ("no jti", idp.rsa.sign(&with(good(), |c| { c.remove("jti"); })), "jti missing or malformed"),
        ("no iat", idp.rsa.sign(&with(good(), |c| { c.remove("iat"); })), "iat missing or malformed"),
        ("iat ahead", idp.rsa.sign(&with(good(), |c| { c.insert("iat".into(), json!(now() + 3600)); })), "issued in the future"),
        ("expired", idp.rsa.sign(&with(good(), |c| { c.insert("exp".into(), json!(now() - 3600)); })), "expired"),
        ("no exp", idp.rsa.sign(&with(good(), |c| { c.remove("exp"); })), "exp missing or malformed"),
        ("not a JWT", "opaque-token".into(), "not a JWS compact token"),
    ];
    for (what, token, description) in cases {
        let r = logout(&gw, &token).await;
        assert_eq!(r.status, 400, "{what}: {}", r.text());
        assert_eq!(
            r.json(),
            json!({"error": "invalid_request", "error_description": description}),
            "{what}"
        );
        assert_eq!(r.header("cache-control"), Some("no-store"), "{what}");
    }
    let form = |ct: &str, body: &str| {
        send(call(
            "POST",
            &format!("{}/backchannel-logout", gw.url),
            &[("content-type", ct)],
            body.as_bytes(),
        ))
    };
    let token = idp.rsa.sign(&good());
    #[rustfmt::skip]
    let shapes: Vec<(&str, Got, u16, &str)> = vec![
        ("wrong content type", form("application/json", &format!("logout_token={token}")).await, 400, "content type must be application/x-www-form-urlencoded"),
        ("no logout_token", form("application/x-www-form-urlencoded", "token=x").await, 400, "logout_token is required"),
        ("logout_token twice", form("application/x-www-form-urlencoded", &format!("logout_token={token}&logout_token={token}")).await, 400, "logout_token given twice"),
        ("oversized body", form("application/x-www-form-urlencoded", &format!("logout_token={token}&pad={}", "x".repeat(5000))).await, 413, "body too large"),
        ("GET", send(call("GET", &format!("{}/backchannel-logout", gw.url), &[], b"")).await, 405, "use POST"),
    ];
    for (what, r, status, description) in shapes {
        assert_eq!(r.status, status, "{what}: {}", r.text());
        assert_eq!(
            r.json(),
            json!({"error": "invalid_request", "error_description": description}),
            "{what}"
        );
    }
    assert!(
        scopes(&gw).await.is_empty(),
        "a refused token revoked something"
    );
    assert_passes(&gw, &up, &victim).await;
    assert!(
        metric(
            &gw,
            "revgate_feed_rejections_total",
            &[("feed", "backchannel_logout"), ("reason", "invalid_key")]
        )
        .await
            >= 4.0
    );

    // The good token once: 200; the same token again: the replay's 400, and
    // the rule is not moved.
    let r = logout(&gw, &token).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_revoked(&gw, &up, &victim).await;
    let rules = scopes(&gw).await;
    assert_eq!(rules.len(), 1);
    let r = logout(&gw, &token).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json(),
        json!({"error": "invalid_request", "error_description": "token already received (jti replayed)"})
    );
    assert_eq!(scopes(&gw).await, rules);
    assert_eq!(
        metric(
            &gw,
            "revgate_revocations_applied_total",
            &[("source", "backchannel_logout"), ("mode", "push")]
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn bad_sets_get_the_rfc8935_error_and_revoke_nothing() {
    let idp = Idp::spawn().await;
    let up = Upstream::new().spawn().await;
    let gw = Gateway::new()
        .upstream(&up.url)
        .toml(&feeds_toml(&idp.jwks.url, ""))
        .toml("[revoke]\nmax_body_bytes = 4096")
        .spawn();
    let victim = jwt(&json!({"sub": "victim", "iat": now() - 100}));
    let t = now() - 10;
    let good = || set_claims("caep/credential-change", "victim", t);
    let stranger = SigningKey::es256("ec-1");
    #[rustfmt::skip]
    let cases: Vec<(&str, String, &str, &str)> = vec![
        ("forged signature", stranger.sign(&good()), "invalid_key", "bad signature"),
        ("alg none", unsigned(&good()), "invalid_key", "unsigned token (alg none)"),
        ("HS256", hs256("ec-1", &idp.ec.public_bytes(), &good()), "invalid_key", "symmetric algorithm refused"),
        ("wrong issuer", idp.ec.sign(&with(good(), |c| { c.insert("iss".into(), json!("https://evil/")); })), "invalid_issuer", "issuer not accepted"),
        ("wrong audience", idp.ec.sign(&with(good(), |c| { c.insert("aud".into(), json!("other")); })), "invalid_audience", "audience not accepted"),
        ("missing events", idp.ec.sign(&with(good(), |c| { c.remove("events"); })), "invalid_request", "events missing or not an object"),
        ("empty events", idp.ec.sign(&with(good(), |c| { c.insert("events".into(), json!({})); })), "invalid_request", "events missing or not an object"),
        ("no subject", idp.ec.sign(&with(good(), |c| { c.insert("events".into(), json!({event_uri("risc/account-disabled"): {}})); })), "invalid_request", "event has no subject (nor sub_id)"),
        ("not a JWS", "x.y".into(), "invalid_request", "not a JWS compact token"),
    ];
    for (what, token, err, description) in cases {
        let r = push(&gw, &token).await;
        assert_eq!(r.status, 400, "{what}: {}", r.text());
        assert_eq!(
            r.json(),
            json!({"err": err, "description": description}),
            "{what}"
        );
    }
    let token = idp.ec.sign(&good());
    let post = |headers: Vec<(&'static str, &'static str)>, body: String| {
        send(call(
            "POST",
            &format!("{}/ssf/events", gw.url),
            &headers,
            body.as_bytes(),
        ))
    };
    let ct = ("content-type", "application/secevent+jwt");
    #[rustfmt::skip]
    let shapes: Vec<(&str, Got, u16, &str, &str)> = vec![
        ("no authorization", post(vec![ct], token.clone()).await, 400, "authentication_failed", "transmitter authorization missing or wrong"),
        ("wrong authorization", post(vec![ct, ("authorization", "Bearer guess")], token.clone()).await, 400, "authentication_failed", "transmitter authorization missing or wrong"),
        ("wrong content type", post(vec![("content-type", "application/jwt"), ("authorization", PUSH_AUTH)], token.clone()).await, 400, "invalid_request", "content type must be application/secevent+jwt"),
        ("oversized body", post(vec![ct, ("authorization", PUSH_AUTH)], format!("{token}{}", " ".repeat(5000))).await, 413, "invalid_request", "body too large"),
        ("GET", send(call("GET", &format!("{}/ssf/events", gw.url), &[], b"")).await, 405, "invalid_request", "use POST"),
    ];
    for (what, r, status, err, description) in shapes {
        assert_eq!(r.status, status, "{what}: {}", r.text());
        assert_eq!(
            r.json(),
            json!({"err": err, "description": description}),
            "{what}"
        );
    }
    assert!(
        scopes(&gw).await.is_empty(),
        "a refused SET revoked something"
    );
    assert_passes(&gw, &up, &victim).await;

    // Unknown event types (and the stream verification event) are accepted,
    // ignored, counted.
    let ignored = idp.ec.sign(&with(good(), |c| {
        c.insert(
            "events".into(),
            json!({
                format!("{CAEP}token-claims-change"): {"subject": {"format": "iss_sub", "iss": ISS, "sub": "victim"}},
                "https://schemas.openid.net/secevent/ssf/event-type/verification": {"state": "x"},
            }),
        );
    }));
    let r = push(&gw, &ignored).await;
    assert_eq!(r.status, 202, "{}", r.text());
    assert!(scopes(&gw).await.is_empty());
    assert_eq!(
        metric(
            &gw,
            "revgate_feed_events_total",
            &[("feed", "ssf"), ("outcome", "ignored")]
        )
        .await,
        1.0
    );
    assert_eq!(
        metric(
            &gw,
            "revgate_feed_events_total",
            &[("feed", "ssf"), ("outcome", "verification")]
        )
        .await,
        1.0
    );
    // An email subject is not mapped by default: accepted, nothing revoked.
    let email = idp.ec.sign(&with(good(), |c| {
        c.insert("events".into(), json!({event_uri("risc/account-disabled"): {"subject": {"format": "email", "email": "victim@example.com"}}}));
    }));
    assert_eq!(push(&gw, &email).await.status, 202);
    assert!(scopes(&gw).await.is_empty());

    // The good SET: 202 and revoked; delivered again: 202, applied once.
    assert_eq!(push(&gw, &token).await.status, 202);
    assert_revoked(&gw, &up, &victim).await;
    let rules = scopes(&gw).await;
    assert_eq!(rules.len(), 1);
    let r = push(&gw, &token).await;
    assert_eq!((r.status, r.text()), (202, String::new()));
    assert_eq!(scopes(&gw).await, rules);
    assert_eq!(
        metric(
            &gw,
            "revgate_revocations_applied_total",
            &[("source", "ssf"), ("mode", "push")]
        )
        .await,
        1.0
    );
    assert_eq!(
        metric(
            &gw,
            "revgate_feed_events_total",
            &[("feed", "ssf"), ("outcome", "duplicate")]
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn feed_calls_are_rate_limited_per_client() {
    let idp = Idp::spawn().await;
    let up = Upstream::new().spawn().await;
    let gw = Gateway::new()
        .upstream(&up.url)
        .toml(&feeds_toml(&idp.jwks.url, ""))
        .toml("[revoke.rate_limit]\nper_second = 0.01\nburst = 2")
        .spawn();
    for _ in 0..2 {
        assert_eq!(logout(&gw, "x").await.status, 400);
    }
    let r = logout(&gw, &idp.rsa.sign(&logout_claims("u", now()))).await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(r.header("retry-after").is_some());
    assert_eq!(
        r.json(),
        json!({"error": "too_many_requests", "error_description": "too many requests; retry later"})
    );
    assert!(scopes(&gw).await.is_empty());
    assert_eq!(
        metric(&gw, "revgate_rate_limited_total", &[("surface", "feed")]).await,
        1.0
    );
}

#[tokio::test]
async fn keys_that_cannot_be_loaded_answer_503_so_the_provider_retries() {
    // A JWKS URL nothing listens on.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/jwks.json", l.local_addr().unwrap())
    };
    let idp = Idp::spawn().await;
    let up = Upstream::new().spawn().await;
    let gw = Gateway::new()
        .upstream(&up.url)
        .toml(&feeds_toml(&dead, ""))
        .spawn();
    let r = push(
        &gw,
        &idp.ec
            .sign(&set_claims("risc/account-disabled", "u", now())),
    )
    .await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(
        r.json(),
        json!({"err": "temporarily_unavailable", "description": "signature keys not loaded yet"})
    );
    let r = logout(&gw, &idp.rsa.sign(&logout_claims("u", now()))).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({"error": "temporarily_unavailable", "error_description": "signature keys not loaded yet"})
    );
    assert!(scopes(&gw).await.is_empty());
}

/// With `store.consistency = "confirmed"` and Redis away, a feed's
/// revocation is recorded (the outbox) but not confirmed: 503 with
/// `Retry-After: 1` in each feed's error format, and the `jti` is not
/// remembered, so the provider's retry of the very same token, once Redis
/// is back, is applied (200 / 202), not refused as a replay.
#[tokio::test]
async fn an_unconfirmed_feed_revocation_answers_503_and_its_retry_is_not_a_replay() {
    let idp = Idp::spawn().await;
    let mut redis = RedisServer::spawn();
    let up = Upstream::new().spawn().await;
    let toml = feeds_toml(&idp.jwks.url, "").replace("[store]\n", "[store]\nlease = \"1s\"\n");
    let gw = Gateway::new()
        .upstream(&up.url)
        .arg("--store")
        .arg(&redis.url())
        .arg("--consistency")
        .arg("confirmed")
        .toml(&toml)
        .spawn();
    ready(&gw).await;
    let logout_token = idp.rsa.sign(&logout_claims("lou", now() - 10));
    let set = idp
        .ec
        .sign(&set_claims("risc/account-disabled", "sam", now() - 10));

    redis.stop();
    let r = logout(&gw, &logout_token).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(
        r.json(),
        json!({"error": "temporarily_unavailable", "error_description": "revocation recorded but not confirmed; retry"})
    );
    // A logout naming only a session: its family's revocation, the same.
    let session_only = idp
        .rsa
        .sign(&with(logout_claims("unused", now() - 10), |c| {
            c.remove("sub");
            c.insert("sid".into(), json!("sess-u"));
        }));
    let r = logout(&gw, &session_only).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({"error": "temporarily_unavailable", "error_description": "revocation recorded but not confirmed; retry"})
    );
    let r = push(&gw, &set).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(
        r.json(),
        json!({"err": "temporarily_unavailable", "description": "revocation recorded but not confirmed; retry"})
    );

    // The provider retries the same token until it is applied: 503 while
    // the instance reconnects, then 200 (202), never the replay's 400.
    redis.start();
    let r = logout_until_not_503(&gw, &logout_token).await;
    assert_eq!(
        r.status,
        200,
        "the retry is applied, not a replay: {}",
        r.text()
    );
    let r = logout(&gw, &session_only).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = push(&gw, &set).await;
    assert_eq!(
        r.status,
        202,
        "the retry is applied, not a replay: {}",
        r.text()
    );
    // And the same token once more: now it is a replay.
    let r = logout(&gw, &logout_token).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({"error": "invalid_request", "error_description": "token already received (jti replayed)"})
    );
    let subs: HashSet<String> = scopes(&gw)
        .await
        .iter()
        .filter_map(|s| s["sub"].as_str().map(str::to_string))
        .collect();
    assert_eq!(subs.len(), 2, "{subs:?}");
}

// === key rotation ===

#[tokio::test]
async fn a_rotated_key_is_fetched_on_its_unknown_kid() {
    let idp = Idp::spawn().await;
    let up = Upstream::new().spawn().await;
    let gw = Gateway::new()
        .upstream(&up.url)
        .toml(&feeds_toml(&idp.jwks.url, ""))
        .spawn();
    let early = jwt(&json!({"sub": "rotated", "iat": now() - 100}));
    // The first set loads (in the background) before a token can verify.
    let r = logout(&gw, &idp.rsa.sign(&logout_claims("first", now() - 5))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Rotation: the provider now signs with new RSA and EC keys only.
    let rsa2 = SigningKey::rsa('b', "rsa-2", Algorithm::RS256);
    let ec2 = SigningKey::es256("ec-2");
    idp.jwks.set(jwks(&[&rsa2, &ec2]));
    // Past `min_refresh_interval` (10ms) since the last fetch, which the first
    // logout may have made a moment ago: inside it an unknown kid is not
    // refetched (the anti-spray bound), and the set would fail as "unknown key".
    tokio::time::sleep(Duration::from_millis(50)).await;
    let r = logout(&gw, &rsa2.sign(&logout_claims("rotated", now() - 5))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_revoked(&gw, &up, &early).await;
    let r = push(
        &gw,
        &ec2.sign(&set_claims("risc/account-purged", "rotated-2", now() - 5)),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(scopes(&gw).await.len(), 3);
}

/// A key the provider rotated in right after revgate's last fetch: inside
/// `min_refresh_interval` revgate does not fetch again (the anti-spray
/// bound), and it answered 400 "unknown key", which a provider takes as
/// final: the logout or event was lost. Not fetched for, the key is not
/// known to be unknown: 503 with `Retry-After`, nothing revoked, and the
/// provider's retry past the interval is applied.
#[tokio::test]
async fn a_key_rotated_in_inside_min_refresh_interval_gets_503_and_its_retry_is_applied() {
    let idp = Idp::spawn().await;
    let up = Upstream::new().spawn().await;
    let toml = feeds_toml(&idp.jwks.url, "").replace(
        "min_refresh_interval = \"10ms\"",
        "min_refresh_interval = \"3s\"",
    );
    let gw = Gateway::new().upstream(&up.url).toml(&toml).spawn();
    let r = logout(&gw, &idp.rsa.sign(&logout_claims("first", now() - 5))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let rsa2 = SigningKey::rsa('b', "rsa-2", Algorithm::RS256);
    let ec2 = SigningKey::es256("ec-2");
    // An unknown kid first (a spray's, or the new key a moment before the
    // provider publishes it): fetched for now, or held back by a fetch
    // under 3 s ago. Either way the last fetch is recent, however long the
    // gateway took to start.
    let early = logout(&gw, &rsa2.sign(&logout_claims("early", now() - 5))).await;
    assert!(matches!(early.status, 400 | 503), "{}", early.text());
    // Rotated in at the provider, used at once.
    idp.jwks.set(jwks(&[&idp.rsa, &idp.ec, &rsa2, &ec2]));
    let logout_token = rsa2.sign(&logout_claims("rotated", now() - 5));
    let set = ec2.sign(&set_claims("risc/account-purged", "rotated-2", now() - 5));
    let r = logout(&gw, &logout_token).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(
        r.json(),
        json!({"error": "temporarily_unavailable", "error_description": "signature key not known yet; retry"})
    );
    let r = push(&gw, &set).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({"err": "temporarily_unavailable", "description": "signature key not known yet; retry"})
    );
    assert_eq!(
        scopes(&gw).await.len(),
        1,
        "nothing revoked by a refused token"
    );

    // The provider retries the same tokens; past the interval they apply.
    let r = logout_until_not_503(&gw, &logout_token).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = push(&gw, &set).await;
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(scopes(&gw).await.len(), 3);
}

// === both connection paths, one keep-alive connection ===

#[tokio::test]
async fn a_feed_path_works_on_a_keep_alive_http11_connection_on_both_paths() {
    let idp = Idp::spawn().await;
    for (name, fragment) in PATHS {
        let up = Upstream::new().spawn().await;
        let gw = Gateway::new()
            .upstream(&up.url)
            .toml(&feeds_toml(&idp.jwks.url, ""))
            .toml(fragment)
            .spawn();
        let sub = format!("keepalive-{}", name.replace(' ', "-"));
        let token = jwt(&json!({"sub": sub, "iat": now() - 100}));
        let other = jwt(&json!({"sub": "someone-else", "iat": now() - 100}));
        let logout_token = idp.rsa.sign(&logout_claims(&sub, now() - 5));
        let addr = gw.addr;
        let hits = up.hits();
        let (statuses, bodies) = tokio::task::spawn_blocking(move || {
            let mut c = RawClient::connect(addr);
            let get = |t: &str| {
                format!("GET /data HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {t}\r\n\r\n")
            };
            let form = format!("logout_token={logout_token}");
            let mut statuses = Vec::new();
            let mut bodies = Vec::new();
            for req in [
                get(&token),
                format!(
                    "POST /backchannel-logout HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}",
                    form.len()
                ),
                get(&token),
                get(&other),
            ] {
                c.send(req.as_bytes());
                let m = c.response();
                statuses.push(m.status());
                bodies.push(m.text());
            }
            (statuses, bodies)
        })
        .await
        .unwrap();
        assert_eq!(statuses, vec![200, 200, 401, 200], "{name}: {bodies:?}");
        assert_eq!(bodies[2], REVOKED_BODY, "{name}");
        assert_eq!(
            up.hits(),
            hits + 2,
            "{name}: a revoked token reached the upstream"
        );
    }
}

// === poll: 1,000 SETs, the poller killed midway ===

/// A test RFC 8936 transmitter holding SETs. It serves only the first
/// `gate` SETs until the gate opens; once all of those were delivered, a
/// poll carrying acks is held (its acks unprocessed) until the gate opens,
/// so the poller can be killed with a batch applied but not acknowledged.
struct Transmitter {
    url: String,
    state: Arc<Mutex<TxState>>,
    held: Arc<AtomicUsize>,
    tasks: support::tasks::Tasks,
}

struct TxState {
    /// (jti, token, subject), in order.
    sets: Vec<(String, String, String)>,
    gate: usize,
    open: bool,
    delivered: HashMap<String, usize>,
    acked: HashSet<String>,
    /// Acks of SETs whose rule was not in Redis when the ack arrived.
    premature: Vec<String>,
    set_errs: Vec<String>,
    /// Who polled (its Authorization), in order, before the gate opened.
    pollers: Vec<String>,
    pollers_after: Vec<String>,
    redis: redis::Connection,
}

impl Drop for Transmitter {
    fn drop(&mut self) {
        self.tasks.finish();
    }
}

/// The subjects whose scope rule is in Redis under prefix `fd`.
fn subjects_in_redis(conn: &mut redis::Connection) -> HashSet<String> {
    let mut subs = HashSet::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg("{fd}:scope:*")
            .arg("COUNT")
            .arg(1000)
            .query(conn)
            .unwrap();
        if !keys.is_empty() {
            let values: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query(conn).unwrap();
            for v in values.into_iter().flatten() {
                let rule: Value = serde_json::from_str(&v).unwrap();
                subs.insert(rule["sub"].as_str().unwrap().to_string());
            }
        }
        if next == 0 {
            return subs;
        }
        cursor = next;
    }
}

impl Transmitter {
    async fn spawn(sets: Vec<(String, String, String)>, gate: usize, redis: &RedisServer) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/poll", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(TxState {
            sets,
            gate,
            open: false,
            delivered: HashMap::new(),
            acked: HashSet::new(),
            premature: Vec::new(),
            set_errs: Vec::new(),
            pollers: Vec::new(),
            pollers_after: Vec::new(),
            redis: redis.conn(),
        }));
        let held = Arc::new(AtomicUsize::new(0));
        let tasks = support::tasks::Tasks::default();
        let t = tasks.clone();
        let (s, h) = (state.clone(), held.clone());
        tasks.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let (s, h) = (s.clone(), h.clone());
                t.spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let (s, h) = (s.clone(), h.clone());
                        async move { Ok::<_, std::convert::Infallible>(Self::serve(s, h, req).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Transmitter {
            url,
            state,
            held,
            tasks,
        }
    }

    async fn serve(
        state: Arc<Mutex<TxState>>,
        held: Arc<AtomicUsize>,
        req: Request<Incoming>,
    ) -> Response<Full<Bytes>> {
        let who = req
            .headers()
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let asked: Value = serde_json::from_slice(&body).unwrap();
        let acks: Vec<String> = asked["ack"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        // Hold a poll that acknowledges the gate's last batch.
        let hold = {
            let st = state.lock().unwrap();
            !st.open
                && !acks.is_empty()
                && st.sets[..st.gate]
                    .iter()
                    .all(|(j, _, _)| st.delivered.contains_key(j))
        };
        if hold {
            held.fetch_add(1, Ordering::SeqCst);
            while !state.lock().unwrap().open {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let mut r = Response::new(Full::new(Bytes::from_static(b"held")));
            *r.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
            return r;
        }
        let max = asked["maxEvents"].as_u64().unwrap() as usize;
        let mut st = state.lock().unwrap();
        if st.open {
            st.pollers_after.push(who);
        } else {
            st.pollers.push(who);
        }
        if !acks.is_empty() {
            let present = tokio::task::block_in_place(|| subjects_in_redis(&mut st.redis));
            for jti in acks {
                let sub = st
                    .sets
                    .iter()
                    .find(|(j, _, _)| *j == jti)
                    .map(|(_, _, s)| s.clone());
                match sub {
                    Some(sub) if present.contains(&sub) => {}
                    _ => st.premature.push(jti.clone()),
                }
                st.acked.insert(jti);
            }
        }
        if let Some(errs) = asked["setErrs"].as_object() {
            let keys: Vec<String> = errs.keys().cloned().collect();
            st.set_errs.extend(keys);
        }
        let limit = if st.open { st.sets.len() } else { st.gate };
        let pending: Vec<(String, String)> = st.sets[..limit]
            .iter()
            .filter(|(j, _, _)| !st.acked.contains(j))
            .map(|(j, t, _)| (j.clone(), t.clone()))
            .collect();
        let batch: serde_json::Map<String, Value> = pending
            .iter()
            .take(max)
            .map(|(j, t)| (j.clone(), json!(t)))
            .collect();
        for j in batch.keys() {
            *st.delivered.entry(j.clone()).or_default() += 1;
        }
        let more = pending.len() > batch.len();
        let body = json!({"sets": batch, "moreAvailable": more}).to_string();
        let mut r = Response::new(Full::new(Bytes::from(body)));
        r.headers_mut()
            .insert("content-type", "application/json".parse().unwrap());
        r
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_poller_loses_no_set_and_applies_none_twice() {
    const N: usize = 1000;
    const GATE: usize = 400;
    const BATCH: usize = 20;
    let idp = Idp::spawn().await;
    let redis = RedisServer::spawn();
    let up = Upstream::new().spawn().await;
    let at = now() - 100;
    let sets: Vec<(String, String, String)> = (0..N)
        .map(|i| {
            let sub = format!("poll-user-{i}");
            let mut claims = set_claims("caep/credential-change", &sub, at);
            let jti = format!("set-{i}");
            claims["jti"] = json!(jti);
            (jti, idp.ec.sign(&claims), sub)
        })
        .collect();
    let tx = Transmitter::spawn(sets, GATE, &redis).await;
    let poll = |who: &str| {
        format!(
            "[feeds.ssf.poll]\nurl = \"{}\"\ninterval = \"50ms\"\nauthorization_header = \"Bearer {who}\"\nmax_events = {BATCH}\nlease = \"3s\"\ntimeout = \"1s\"",
            tx.url
        )
    };
    let mut a = redis_gateway(
        &redis,
        &up.url,
        &feeds_toml(&idp.jwks.url, &poll("poller-a")),
    );
    let mut b = redis_gateway(
        &redis,
        &up.url,
        &feeds_toml(&idp.jwks.url, &poll("poller-b")),
    );

    // The lease holder polls up to the gate, then is held acknowledging
    // its last batch: killed there, that batch is applied, not acknowledged.
    wait_for(
        "the poller reaches the gate",
        Duration::from_secs(60),
        || async { tx.held.load(Ordering::SeqCst) > 0 },
    )
    .await;
    let first = {
        let st = tx.state.lock().unwrap();
        let who: HashSet<&String> = st.pollers.iter().collect();
        assert_eq!(who.len(), 1, "two instances polled at once: {who:?}");
        assert_eq!(st.acked.len(), GATE - BATCH);
        st.pollers[0].clone()
    };
    let (killed, survivor) = if first == "Bearer poller-a" {
        (&mut a, &b)
    } else {
        (&mut b, &a)
    };
    killed.kill9();
    tx.state.lock().unwrap().open = true;

    wait_for(
        "every SET acknowledged",
        Duration::from_secs(90),
        || async { tx.state.lock().unwrap().acked.len() == N },
    )
    .await;
    {
        let st = tx.state.lock().unwrap();
        assert!(
            st.premature.is_empty(),
            "acknowledged before applied: {:?}",
            st.premature
        );
        assert!(st.set_errs.is_empty(), "{:?}", st.set_errs);
        let after: HashSet<&String> = st.pollers_after.iter().collect();
        assert!(!after.contains(&first), "the killed instance polled again");
        // The held batch was delivered twice (applied by the killed poller,
        // recognised by the survivor); nothing else was.
        let twice = st.delivered.values().filter(|n| **n > 1).count();
        assert_eq!(twice, BATCH, "redelivered");
    }

    // Exactly once in effect: one rule per SET, at the event's time.
    let rules = scopes(survivor).await;
    assert_eq!(rules.len(), N);
    assert!(rules.iter().all(|r| r["revoked_at"] == json!(at)));
    let mut conn = redis.conn();
    assert_eq!(subjects_in_redis(&mut conn).len(), N);
    let events = |o| [("feed", "ssf"), ("outcome", o)];
    assert_eq!(
        metric(survivor, "revgate_feed_events_total", &events("applied")).await,
        (N - GATE) as f64
    );
    assert_eq!(
        metric(survivor, "revgate_feed_events_total", &events("duplicate")).await,
        BATCH as f64
    );
    assert_eq!(
        metric(
            survivor,
            "revgate_revocations_applied_total",
            &[("source", "ssf"), ("mode", "poll")]
        )
        .await,
        (N - GATE) as f64
    );
    assert_eq!(
        metric(survivor, "revgate_feed_poll_lease_held", &[]).await,
        1.0
    );
    // And enforced: an early token of a polled subject is refused.
    assert_revoked(
        survivor,
        &up,
        &jwt(&json!({"sub": "poll-user-7", "iat": at - 10})),
    )
    .await;
}

// === sid: the session's token family ===

#[tokio::test]
async fn a_logout_naming_only_a_session_revokes_that_sessions_family_and_nothing_else() {
    let idp = Idp::spawn().await;
    let up = Upstream::new().spawn().await;
    let gw = Gateway::new()
        .upstream(&up.url)
        .toml(&feeds_toml(&idp.jwks.url, ""))
        .spawn();
    // Two credentials of one user: one in session "sess-9"'s family (as a
    // token endpoint answering `session_state` records it, or an operator
    // names it), one in another session's.
    for (credential, family) in [("in-sess-9", "sess-9"), ("in-sess-10", "sess-10")] {
        let r = post_json(
            &format!("{}/admin/v1/principals", gw.admin_url),
            &json!({"credential": credential, "sub": "u-sid", "family": family}),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_passes(&gw, &up, "in-sess-9").await;
    let claims = with(logout_claims("unused", now() - 5), |c| {
        c.remove("sub");
        c.insert("sid".into(), json!("sess-9"));
    });
    let r = logout(&gw, &idp.rsa.sign(&claims)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_revoked(&gw, &up, "in-sess-9").await;
    assert_passes(&gw, &up, "in-sess-10").await;
    // No subject named: no scope rule.
    assert!(scopes(&gw).await.is_empty());
    // Closed: a credential that joins the session later is revoked at once.
    let r = post_json(
        &format!("{}/admin/v1/principals", gw.admin_url),
        &json!({"credential": "late-sess-9", "sub": "u-sid", "family": "sess-9"}),
    )
    .await;
    assert_eq!(r.json()["revoked"], json!(true), "{}", r.text());
    assert_revoked(&gw, &up, "late-sess-9").await;
}
