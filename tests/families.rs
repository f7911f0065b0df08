//! Token families (issue 13) against the real binary: the tokens of one
//! grant, learned from a token endpoint proxied through revgate, revoked
//! together as far as each dialect's documented reach goes.
//!
//! A test authorization server (a real HTTP server here) issues rotating
//! access/refresh tokens: issue -> refresh -> refresh gives three
//! generations (`at0 rt0`, `at1 rt1`, `at2 rt2`). Then one member is
//! revoked through each dialect, in both revoke modes, and the exact set of
//! members rejected (401, upstream counter unchanged) and passing is
//! asserted: Nylas the grant, OneLogin the pair, RFC 7009 the grant for a
//! refresh token and the token alone for an access token, the admin API
//! with `"family": true` the grant. A refresh with a revoked refresh token
//! gets `400 invalid_grant` and never reaches the token endpoint; a
//! superseded refresh token presented again revokes the family on every
//! instance of a shared real Redis; a server that does not rotate never
//! trips it. Families and their rules survive kill -9 (both stores).

#[path = "support/redis.rs"]
mod redis_support;
mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use redis_support::RedisServer;
use serde_json::json;
use support::*;

const FP_KEY: &str = "66616d696c6965732d746573742d6b65792d33322d62797465732d2121212121";
const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");
const INVALID_GRANT: &str = r#"{"error":"invalid_grant","error_description":"The refresh token is revoked or was already used"}"#;

/// A token endpoint issuing `<tag>-at<n>` / `<tag>-rt<n>`, a new pair per
/// call; `rotating = false` answers a refresh with the refresh token it
/// was given.
struct TokenServer {
    url: String,
    calls: Arc<AtomicUsize>,
    _task: tokio::task::JoinHandle<()>,
}

impl TokenServer {
    async fn spawn(rotating: bool) -> TokenServer {
        use hyper::service::service_fn;
        use hyper_util::rt::{TokioExecutor, TokioIo};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((s, _)) = listener.accept().await else {
                    continue;
                };
                let counter = counter.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let counter = counter.clone();
                        async move {
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let form: Vec<(String, String)> =
                                form_urlencoded::parse(&body).into_owned().collect();
                            let get =
                                |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
                            let n = counter.fetch_add(1, Ordering::SeqCst);
                            let tag = get("tag").unwrap_or_default();
                            let refresh = match (get("grant_type").as_deref(), rotating) {
                                (Some("refresh_token"), false) => get("refresh_token").unwrap(),
                                _ => format!("{tag}-rt{n}"),
                            };
                            let mut answer = json!({
                                "access_token": format!("{tag}-at{n}"),
                                "token_type": "Bearer",
                                "expires_in": 3600,
                                "refresh_token": refresh,
                            });
                            // Keycloak names the session in its answer.
                            if let Some(s) = get("session") {
                                answer["session_state"] = json!(s);
                            }
                            let mut r =
                                hyper::Response::new(Full::new(Bytes::from(answer.to_string())));
                            r.headers_mut()
                                .insert("content-type", "application/json".parse().unwrap());
                            Ok::<_, std::convert::Infallible>(r)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        TokenServer {
            url,
            calls,
            _task: task,
        }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

/// The gateway's config: the token endpoint routed to `ts`, the vendors'
/// revoke callers' secrets, the shared fingerprint key.
fn config(ts: &TokenServer, mode: &str, extra: &str) -> String {
    format!(
        "[[routes]]\npath_prefix = \"/oauth/token\"\nupstream = \"{}\"\n\
         [tokens]\nfingerprint_key = \"{FP_KEY}\"\n\
         [revoke]\nmode = \"{mode}\"\n\
         [revoke.onelogin]\nclients = [{{ client_id = \"cid\", client_secret = \"csecret\" }}]\n\
         [revoke.nylas]\napi_keys = [\"nyk\"]\n{extra}",
        ts.url
    )
}

async fn token_call(gw: &RunningGateway, body: &str) -> Got {
    send(call(
        "POST",
        &format!("{}/oauth/token", gw.url),
        &[FORM],
        body.as_bytes(),
    ))
    .await
}

/// issue -> refresh -> refresh through `gw`: the three generations'
/// (access, refresh) tokens.
async fn three_generations(gw: &RunningGateway, tag: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut body = format!("grant_type=authorization_code&code=c&tag={tag}");
    for _ in 0..3 {
        let r = token_call(gw, &body).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let j = r.json();
        let pair = (
            j["access_token"].as_str().unwrap().to_owned(),
            j["refresh_token"].as_str().unwrap().to_owned(),
        );
        body = format!(
            "grant_type=refresh_token&refresh_token={}&tag={tag}",
            pair.1
        );
        out.push(pair);
    }
    out
}

/// Which of the tokens are rejected (`true`) on `gw`, each checked as a
/// request's Bearer credential against `up`'s counter.
async fn rejected(gw: &RunningGateway, up: &RunningUpstream, tokens: &[&str]) -> Vec<bool> {
    let mut out = Vec::new();
    for t in tokens {
        let hits = up.hits();
        let r = get_bearer(&format!("{}/data", gw.url), t).await;
        match r.status {
            401 => {
                assert_revoked_response(&r);
                assert_eq!(
                    up.hits(),
                    hits,
                    "{t}: a rejected token reached the upstream"
                );
                out.push(true);
            }
            200 => {
                assert_eq!(up.hits(), hits + 1, "{t}");
                out.push(false);
            }
            other => panic!("{t}: {other} {}", r.text()),
        }
    }
    out
}

fn flat(g: &[(String, String)]) -> Vec<&str> {
    g.iter()
        .flat_map(|(a, r)| [a.as_str(), r.as_str()])
        .collect()
}

/// One dialect's revoke of `token` (an access token unless `refresh`).
async fn revoke(gw: &RunningGateway, dialect: &str, token: &str, refresh: bool) -> Got {
    let r = match dialect {
        "nylas" => {
            send(call(
                "POST",
                &format!("{}/v3/connect/revoke?token={token}", gw.url),
                &[("authorization", "Bearer nyk")],
                b"",
            ))
            .await
        }
        "onelogin" => {
            send(call(
                "POST",
                &format!("{}/auth/oauth2/revoke", gw.url),
                &[
                    ("authorization", "client_id:cid, client_secret:csecret"),
                    ("content-type", "application/json"),
                ],
                json!({ "access_token": token }).to_string().as_bytes(),
            ))
            .await
        }
        "rfc7009" => {
            let hint = if refresh {
                "refresh_token"
            } else {
                "access_token"
            };
            send(call(
                "POST",
                &format!("{}/oauth/revoke", gw.url),
                &[FORM],
                format!("token={token}&token_type_hint={hint}").as_bytes(),
            ))
            .await
        }
        "admin" => {
            post_json(
                &format!("{}/admin/v1/revocations", gw.admin_url),
                &json!({ "token": token, "family": true }),
            )
            .await
        }
        other => panic!("{other}"),
    };
    assert_eq!(r.status, 200, "{dialect}: {}", r.text());
    r
}

/// (dialect, revoke generation 1's access token or refresh token, the
/// expected rejected set over at0 rt0 at1 rt1 at2 rt2).
const CASES: [(&str, bool, [bool; 6]); 5] = [
    ("nylas", false, [true; 6]),
    ("onelogin", false, [false, false, true, true, false, false]),
    ("rfc7009", true, [true; 6]),
    ("rfc7009", false, [false, false, true, false, false, false]),
    ("admin", false, [true; 6]),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_dialect_revokes_its_documented_share_of_the_family_in_both_modes() {
    let ts = TokenServer::spawn(true).await;
    let up = Upstream::new().spawn().await;
    for mode in ["terminate", "forward"] {
        let gw = Gateway::new()
            .upstream(&up.url)
            .toml(&config(&ts, mode, ""))
            .spawn();
        for (i, (dialect, refresh, expected)) in CASES.iter().enumerate() {
            let tag = format!("{mode}-{i}-{dialect}");
            let g = three_generations(&gw, &tag).await;
            let all = flat(&g);
            assert_eq!(rejected(&gw, &up, &all).await, [false; 6], "{tag}");
            let named = if *refresh { &g[1].1 } else { &g[1].0 };
            revoke(&gw, dialect, named, *refresh).await;
            assert_eq!(
                rejected(&gw, &up, &all).await,
                *expected,
                "{tag}: rejected set over at0 rt0 at1 rt1 at2 rt2"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis_a_family_revoke_through_one_instance_is_enforced_by_the_other() {
    let redis = RedisServer::spawn();
    let ts = TokenServer::spawn(true).await;
    let up = Upstream::new().spawn().await;
    let a = redis_gateway(&redis, &up.url, &ts);
    let b = redis_gateway(&redis, &up.url, &ts);
    ready(&a).await;
    ready(&b).await;
    for (i, (dialect, refresh, expected)) in CASES.iter().enumerate() {
        let tag = format!("redis-{i}-{dialect}");
        let g = three_generations(&a, &tag).await;
        let all = flat(&g);
        settles(&b, &up, &all, &[false; 6]).await;
        let named = if *refresh { &g[1].1 } else { &g[1].0 };
        revoke(&a, dialect, named, *refresh).await;
        assert_eq!(rejected(&a, &up, &all).await, *expected, "{tag} on A");
        settles(&b, &up, &all, expected).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dialects_family_setting_overrides_its_default() {
    let ts = TokenServer::spawn(true).await;
    let up = Upstream::new().spawn().await;
    // `config` ends inside `[revoke.nylas]`.
    let gw = Gateway::new()
        .upstream(&up.url)
        .toml(&config(&ts, "terminate", "family = \"token\"\n"))
        .spawn();
    let g = three_generations(&gw, "override").await;
    revoke(&gw, "nylas", &g[1].0, false).await;
    assert_eq!(
        rejected(&gw, &up, &flat(&g)).await,
        [false, false, true, false, false, false]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_of_one_session_share_a_family() {
    let ts = TokenServer::spawn(true).await;
    let up = Upstream::new().spawn().await;
    let gw = Gateway::new()
        .upstream(&up.url)
        .toml(&config(&ts, "terminate", ""))
        .spawn();
    let mut logins = Vec::new();
    for (tag, session) in [("s1", "sess-A"), ("s2", "sess-A"), ("s3", "sess-B")] {
        let r = token_call(
            &gw,
            &format!("grant_type=authorization_code&code=c&tag={tag}&session={session}"),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let j = r.json();
        logins.push((
            j["access_token"].as_str().unwrap().to_owned(),
            j["refresh_token"].as_str().unwrap().to_owned(),
        ));
    }
    // The first login's refresh token, revoked through RFC 7009: its grant
    // is the session's, so the second login of the session goes too.
    revoke(&gw, "rfc7009", &logins[0].1, true).await;
    assert_eq!(
        rejected(&gw, &up, &flat(&logins)).await,
        [true, true, true, true, false, false]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_refresh_token_is_invalid_grant_and_never_reaches_the_token_endpoint() {
    let ts = TokenServer::spawn(true).await;
    let up = Upstream::new().spawn().await;
    for (name, paths) in PATHS {
        let gw = Gateway::new()
            .upstream(&up.url)
            .toml(&format!("{paths}{}", config(&ts, "terminate", "")))
            .spawn();
        let tag = format!("closed-{}", name.replace(' ', "-"));
        let g = three_generations(&gw, &tag).await;
        // OneLogin revokes generation 1's pair: its refresh token can no
        // longer be exchanged, in any spelling of the request.
        revoke(&gw, "onelogin", &g[1].0, false).await;
        let calls = ts.calls();
        for body in [
            format!("grant_type=refresh_token&refresh_token={}", g[1].1),
            format!("refresh_token={}&grant_type=refresh_token", g[1].1),
            format!(
                "grant_type=refresh_token&refresh_token=x&refresh_token={}",
                g[1].1
            ),
            format!("grant_type=refresh_token&%72efresh_token={}", g[1].1),
        ] {
            let r = token_call(&gw, &body).await;
            assert_eq!(
                (r.status, r.text().as_str()),
                (400, INVALID_GRANT),
                "{name}: {body}"
            );
            assert_eq!(r.header("cache-control"), Some("no-store"));
        }
        let r = send(call(
            "POST",
            &format!(
                "{}/oauth/token?grant_type=refresh_token&refresh_token={}",
                gw.url, g[1].1
            ),
            &[FORM],
            b"",
        ))
        .await;
        assert_eq!(
            (r.status, r.text().as_str()),
            (400, INVALID_GRANT),
            "{name}: in the query"
        );
        let json_body = json!({"grant_type": "refresh_token", "refresh_token": g[1].1});
        let r = send(call(
            "POST",
            &format!("{}/oauth/token", gw.url),
            &[("content-type", "application/json")],
            json_body.to_string().as_bytes(),
        ))
        .await;
        assert_eq!(
            (r.status, r.text().as_str()),
            (400, INVALID_GRANT),
            "{name}: JSON"
        );
        assert_eq!(
            ts.calls(),
            calls,
            "{name}: a revoked refresh token reached the token endpoint"
        );
        // A token request too large to check is refused, not forwarded.
        let big = format!("grant_type=refresh_token&pad={}", "p".repeat(70 * 1024));
        let r = token_call(&gw, &big).await;
        assert_eq!(r.status, 413, "{name}: {}", r.text());
        assert_eq!(
            r.text(),
            r#"{"error":"invalid_request","error_description":"The token request is too large to be checked"}"#
        );
        assert_eq!(ts.calls(), calls);
        // Generation 2 (not revoked) still refreshes, and what it yields
        // joins the family: a grant revoke through Nylas takes it along.
        let r = token_call(
            &gw,
            &format!(
                "grant_type=refresh_token&refresh_token={}&tag={tag}",
                g[2].1
            ),
        )
        .await;
        assert_eq!(r.status, 200, "{name}: {}", r.text());
        let at3 = r.json()["access_token"].as_str().unwrap().to_owned();
        assert_eq!(ts.calls(), calls + 1);
        revoke(&gw, "nylas", &g[0].0, false).await;
        let mut all = flat(&g);
        all.push(&at3);
        assert_eq!(rejected(&gw, &up, &all).await, [true; 7], "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_joins_a_revoked_family_later_is_revoked_as_it_joins() {
    let up = Upstream::new().spawn().await;
    let gw = Gateway::new()
        .upstream(&up.url)
        .toml(&format!("[tokens]\nfingerprint_key = \"{FP_KEY}\""))
        .spawn();
    let principals = format!("{}/admin/v1/principals", gw.admin_url);
    let bind = |credential: &str| json!({"credential": credential, "sub": "fam-user", "family": "grant-7"});
    let r = post_json(&principals, &bind("joined-first")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["generation"], json!(0));
    revoke(&gw, "admin", "joined-first", false).await;
    let r = post_json(&principals, &bind("joined-later")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["revoked"], json!(true), "{}", r.text());
    assert_eq!(
        rejected(&gw, &up, &["joined-first", "joined-later"]).await,
        [true, true]
    );
    // Another family is untouched.
    let other = json!({"credential": "other-family", "sub": "fam-user", "family": "grant-8"});
    assert_eq!(post_json(&principals, &other).await.status, 200);
    assert_eq!(rejected(&gw, &up, &["other-family"]).await, [false]);
    // The admin API's bad inputs, nothing recorded.
    for (body, msg) in [
        (
            json!({"fingerprint": "00".repeat(16), "family": true}),
            "family goes with token",
        ),
        (
            json!({"scope": {"sub": "x"}, "family": true}),
            "family goes with token",
        ),
    ] {
        let r = post_json(&format!("{}/admin/v1/revocations", gw.admin_url), &body).await;
        assert_eq!(r.status, 400);
        assert_eq!(r.json()["error_description"], json!(msg), "{}", r.text());
    }
    let bad = json!({"credential": "c", "sub": "s", "token_type": "refresh_token"});
    let r = post_json(&principals, &bad).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["error_description"],
        json!("token_type goes with family")
    );
}

fn redis_gateway(redis: &RedisServer, up: &str, ts: &TokenServer) -> RunningGateway {
    Gateway::new()
        .upstream(up)
        .arg("--store")
        .arg(&redis.url())
        .toml(&format!(
            "{}[store]\nkey_prefix = \"fam\"",
            config(ts, "terminate", "")
        ))
        .spawn()
}

async fn ready(g: &RunningGateway) {
    let url = format!("{}/readyz", g.admin_url);
    wait_for("/readyz 200", Duration::from_secs(20), || async {
        fetch(&url, &[]).await.status == 200
    })
    .await;
}

/// Polls until `gw` rejects exactly `expected` (propagation is a stream
/// event away), then asserts it once more.
async fn settles(gw: &RunningGateway, up: &RunningUpstream, tokens: &[&str], expected: &[bool]) {
    for _ in 0..100 {
        if rejected(gw, up, tokens).await == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(rejected(gw, up, tokens).await, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reuse_of_a_superseded_refresh_token_revokes_the_family_on_every_instance_and_survives_kill_9(
) {
    let redis = RedisServer::spawn();
    let ts = TokenServer::spawn(true).await;
    let up = Upstream::new().spawn().await;
    let mut a = redis_gateway(&redis, &up.url, &ts);
    let mut b = redis_gateway(&redis, &up.url, &ts);
    ready(&a).await;
    ready(&b).await;
    let g = three_generations(&a, "reuse").await;
    let all = flat(&g);
    settles(&b, &up, &all, &[false; 6]).await;
    // rt0 was exchanged for rt1: presenting it again (through the other
    // instance) is reuse.
    let calls = ts.calls();
    let r = token_call(
        &b,
        &format!("grant_type=refresh_token&refresh_token={}", g[0].1),
    )
    .await;
    assert_eq!((r.status, r.text().as_str()), (400, INVALID_GRANT));
    assert_eq!(
        ts.calls(),
        calls,
        "the reused refresh token reached the token endpoint"
    );
    let metrics = fetch(&format!("{}/metrics", b.admin_url), &[]).await.text();
    let m = prometheus::parse(&metrics).unwrap();
    assert_eq!(
        m.value("revgate_refresh_refused_total", &[("reason", "reused")]),
        Some(1.0)
    );
    assert_eq!(
        m.value("revgate_families_revoked_total", &[("source", "reuse")]),
        Some(1.0)
    );
    settles(&a, &up, &all, &[true; 6]).await;
    assert_eq!(rejected(&b, &up, &all).await, [true; 6]);
    // One family rule in Redis, and its event on the stream.
    let mut conn = redis.conn();
    let fam_keys: Vec<String> = redis::cmd("KEYS")
        .arg("{fam}:fam:*")
        .query(&mut conn)
        .unwrap();
    assert_eq!(fam_keys.len(), 1, "{fam_keys:?}");
    let rev: Option<String> = redis::cmd("HGET")
        .arg(&fam_keys[0])
        .arg("rev")
        .query(&mut conn)
        .unwrap();
    assert!(rev.is_some(), "no grant rule in {}", fam_keys[0]);
    // Another grant on the same instances is untouched; both instances
    // come back from kill -9 with the family revoked.
    let other = three_generations(&a, "reuse-other").await;
    a.kill9();
    b.kill9();
    a.restart();
    b.restart();
    ready(&a).await;
    ready(&b).await;
    for gw in [&a, &b] {
        assert_eq!(rejected(gw, &up, &all).await, [true; 6]);
        assert_eq!(rejected(gw, &up, &flat(&other)).await, [false; 6]);
    }
    // Raw tokens never reach Redis.
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn).unwrap();
    for k in &keys {
        let dump: Vec<u8> = redis::cmd("DUMP")
            .arg(k)
            .query(&mut conn)
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&dump);
        assert!(!text.contains("reuse-"), "{k} holds a raw token");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_does_not_rotate_never_trips_reuse_detection() {
    let ts = TokenServer::spawn(false).await;
    let up = Upstream::new().spawn().await;
    let gw = Gateway::new()
        .upstream(&up.url)
        .toml(&config(&ts, "terminate", ""))
        .spawn();
    let r = token_call(&gw, "grant_type=authorization_code&code=c&tag=still").await;
    let rt = r.json()["refresh_token"].as_str().unwrap().to_owned();
    let mut issued = vec![r.json()["access_token"].as_str().unwrap().to_owned()];
    for _ in 0..3 {
        let calls = ts.calls();
        let r = token_call(&gw, &format!("grant_type=refresh_token&refresh_token={rt}")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["refresh_token"], json!(rt));
        assert_eq!(ts.calls(), calls + 1);
        issued.push(r.json()["access_token"].as_str().unwrap().to_owned());
    }
    let mut all: Vec<&str> = issued.iter().map(String::as_str).collect();
    all.push(&rt);
    assert_eq!(rejected(&gw, &up, &all).await, vec![false; 5]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_reuse_grace_a_retried_refresh_is_forwarded_and_embedded_families_survive_kill_9() {
    let ts = TokenServer::spawn(true).await;
    let up = Upstream::new().spawn().await;
    let mut gw = Gateway::new()
        .upstream(&up.url)
        .toml(&config(
            &ts,
            "terminate",
            "[families]\nreuse_grace = \"1h\"\n",
        ))
        .spawn();
    let g = three_generations(&gw, "grace").await;
    let calls = ts.calls();
    // Within the grace: forwarded, nothing revoked.
    let r = token_call(
        &gw,
        &format!("grant_type=refresh_token&refresh_token={}", g[0].1),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(ts.calls(), calls + 1);
    assert_eq!(rejected(&gw, &up, &flat(&g)).await, [false; 6]);
    // A pair revoked, then kill -9: the family and its rule are replayed.
    revoke(&gw, "onelogin", &g[2].0, false).await;
    gw.kill9();
    gw.restart();
    assert_eq!(
        rejected(&gw, &up, &flat(&g)).await,
        [false, false, false, false, true, true]
    );
    // The family is still known after the restart: a grant revoke of a
    // generation-0 token reaches every member.
    revoke(&gw, "nylas", &g[0].0, false).await;
    assert_eq!(rejected(&gw, &up, &flat(&g)).await, [true; 6]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_family_revoke_made_while_redis_is_away_is_resolved_when_the_outbox_replays() {
    let redis = RedisServer::spawn();
    let relay = redis_support::TcpRelay::spawn(redis.port()).await;
    let ts = TokenServer::spawn(true).await;
    let up = Upstream::new().spawn().await;
    let toml = format!(
        "{}[store]\nkey_prefix = \"fam\"",
        config(&ts, "terminate", "")
    );
    let a = Gateway::new()
        .upstream(&up.url)
        .arg("--store")
        .arg(&relay.url())
        .toml(&toml)
        .spawn();
    let b = redis_gateway(&redis, &up.url, &ts);
    ready(&a).await;
    ready(&b).await;
    let g = three_generations(&a, "outage").await;
    let all = flat(&g);
    settles(&b, &up, &all, &[false; 6]).await;
    // A cut off from Redis: its Nylas revoke (the grant) is recorded in
    // the outbox and answered; the token itself is refused on A at once.
    relay.cut();
    revoke(&a, "nylas", &g[1].0, false).await;
    assert_eq!(rejected(&a, &up, &[g[1].0.as_str()]).await, [true]);
    // Back: the replay resolves the family against Redis's memberships, and
    // both instances refuse all of it.
    relay.restore();
    settles(&b, &up, &all, &[true; 6]).await;
    settles(&a, &up, &all, &[true; 6]).await;
}
