//! Identity-provider feeds (issue 15) against the real binary (release
//! build), a real redis-server and a real upstream: how many verified SETs
//! one instance applies per second, and how long after a push's `202` on
//! instance A a second instance B refuses the subject's token.
//!
//! - `throughput`: N SETs (distinct subjects, signed before timing, RS256
//!   and ES256 runs) pushed to one instance over C kept-alive connections;
//!   SETs applied per second = N / wall time (each answered 202: verified,
//!   applied to the store, jti remembered). Embedded store and Redis.
//! - `enforcement`: A and B on one Redis; for each of M events (after 20
//!   not counted), B first passes the subject's token (200), the SET is
//!   pushed to A, and from A's 202 B is asked on a kept-alive connection
//!   until it answers 401 (bounded: 5 s per event). p50 / p90 / p99 / max.
//!
//! `REVGATE_BENCH_SETS` (default 4000), `REVGATE_BENCH_CONNS` (8),
//! `REVGATE_BENCH_EVENTS` (1000). Output: one JSON line per result.
#[path = "../tests/support/redis.rs"]
mod redis_support;
#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::Algorithm;
use serde_json::json;
use support::jwks::{jwks, JwksServer, SigningKey};
use support::*;

const ISS: &str = "https://idp.bench/";
const AUD: &str = "https://revgate.bench/ssf";
const FP_KEY: &str = "66656564732d746573742d6b65792d33322d62797465732d2121212121212121";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

fn toml(jwks_url: &str) -> String {
    format!(
        r#"[tokens]
fingerprint_key = "{FP_KEY}"
[store]
key_prefix = "fb"
[revoke.rate_limit]
enabled = false
[log]
access_log = false
filter = "warn"
[feeds.ssf]
enabled = true
issuer = "{ISS}"
audience = "{AUD}"
jwks_url = "{jwks_url}"
"#
    )
}

fn set(key: &SigningKey, sub: &str, jti: &str) -> String {
    key.sign(&json!({
        "iss": ISS, "aud": AUD, "iat": now(), "jti": jti,
        "events": {"https://schemas.openid.net/secevent/caep/event-type/credential-change": {
            "subject": {"format": "iss_sub", "iss": ISS, "sub": sub},
            "event_timestamp": now() - 1,
        }},
    }))
}

fn push_req(gw: &RunningGateway, token: &str) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    call(
        "POST",
        &format!("{}/ssf/events", gw.url),
        &[("content-type", "application/secevent+jwt")],
        token.as_bytes(),
    )
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn ready(g: &RunningGateway) {
    let url = format!("{}/readyz", g.admin_url);
    wait_for("/readyz", Duration::from_secs(30), || async {
        fetch(&url, &[]).await.status == 200
    })
    .await;
}

async fn throughput(
    store: &str,
    key: &SigningKey,
    jwks_url: &str,
    redis: Option<&redis_support::RedisServer>,
) {
    let n = env_usize("REVGATE_BENCH_SETS", 4000);
    let conns = env_usize("REVGATE_BENCH_CONNS", 8);
    let up = Upstream::new().spawn().await;
    let mut g = Gateway::new().upstream(&up.url).toml(&toml(jwks_url));
    if let Some(r) = redis {
        g = g.arg("--store").arg(&r.url());
    }
    let gw = Arc::new(g.spawn());
    ready(&gw).await;
    // Keys loaded (one warm-up SET, not counted).
    let tag = format!("{store}-{:?}-{}", key.alg, now());
    let r = send(push_req(
        &gw,
        &set(key, &format!("warm-{tag}"), &format!("warm-{tag}")),
    ))
    .await;
    assert_eq!(r.status, 202, "{}", r.text());
    let tokens: Vec<String> = (0..n)
        .map(|i| set(key, &format!("u-{tag}-{i}"), &format!("j-{tag}-{i}")))
        .collect();
    let tokens = Arc::new(tokens);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (gw, tokens, next) = (gw.clone(), tokens.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let c = client();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= tokens.len() {
                    return;
                }
                let r = send_with(&c, push_req(&gw, &tokens[i])).await;
                assert_eq!(r.status, 202, "{}", r.text());
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({"bench": "feeds/throughput", "store": store, "alg": format!("{:?}", key.alg),
               "sets": n, "conns": conns, "seconds": secs, "sets_per_second": n as f64 / secs})
    );
}

async fn enforcement(key: &SigningKey, jwks_url: &str, redis: &redis_support::RedisServer) {
    let m = env_usize("REVGATE_BENCH_EVENTS", 1000);
    let up = Upstream::new().spawn().await;
    let a = Gateway::new()
        .upstream(&up.url)
        .arg("--store")
        .arg(&redis.url())
        .toml(&toml(jwks_url))
        .spawn();
    let b = Gateway::new()
        .upstream(&up.url)
        .arg("--store")
        .arg(&redis.url())
        .toml(&toml(jwks_url))
        .spawn();
    ready(&a).await;
    ready(&b).await;
    let (ca, cb) = (client(), client());
    let mut samples = Vec::new();
    let mut first_poll_401 = 0usize;
    let tag = now();
    for i in 0..(m + 20) {
        let sub = format!("e-{tag}-{i}");
        let token = jwt(&json!({"sub": sub, "iat": now() - 100}));
        let url = format!("{}/data", b.url);
        let bearer = |t: &str| {
            get(&url)
                .header("authorization", format!("Bearer {t}"))
                .body(Default::default())
                .unwrap()
        };
        assert_eq!(send_with(&cb, bearer(&token)).await.status, 200);
        let s = set(key, &sub, &format!("e-{tag}-{i}"));
        let r = send_with(&ca, push_req(&a, &s)).await;
        assert_eq!(r.status, 202, "{}", r.text());
        let acked = Instant::now();
        let mut polls = 0;
        loop {
            polls += 1;
            if send_with(&cb, bearer(&token)).await.status == 401 {
                break;
            }
            assert!(
                acked.elapsed() < Duration::from_secs(5),
                "not enforced on B in 5 s"
            );
        }
        if i >= 20 {
            samples.push(acked.elapsed().as_secs_f64() * 1000.0);
            if polls == 1 {
                first_poll_401 += 1;
            }
        }
    }
    samples.sort_by(|x, y| x.partial_cmp(y).unwrap());
    println!(
        "{}",
        json!({"bench": "feeds/enforcement", "events": samples.len(),
               "p50_ms": percentile(&samples, 0.5), "p90_ms": percentile(&samples, 0.9),
               "p99_ms": percentile(&samples, 0.99), "max_ms": samples.last(),
               "first_poll_401": first_poll_401})
    );
}

fn main() {
    let which: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wants = |name: &str| which.is_empty() || which.iter().any(|w| name.contains(w.as_str()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let rsa = SigningKey::rsa('a', "rsa-1", Algorithm::RS256);
        let ec = SigningKey::es256("ec-1");
        let idp = JwksServer::spawn(jwks(&[&rsa, &ec])).await;
        let redis = redis_support::RedisServer::spawn();
        if wants("throughput") {
            for key in [&rsa, &ec] {
                throughput("memory", key, &idp.url, None).await;
                throughput("redis", key, &idp.url, Some(&redis)).await;
            }
        }
        if wants("enforcement") {
            enforcement(&ec, &idp.url, &redis).await;
        }
    });
}
