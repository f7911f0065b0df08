//! Principals (issue 12) against the real binary: who holds an opaque
//! credential, recorded through the admin API or learned from a token
//! endpoint's answer, so that a scope revocation covers it.
//!
//! Covered, on the embedded store and on two instances sharing a real
//! redis-server: a scope rule rejects the bound opaque credentials issued at
//! or before it (401, the upstream's counter unchanged) and passes those
//! issued after it and other subjects' (not-before), also when the binding
//! arrives after the rule; un-revoking the scope and removing a binding
//! withdraw what they derived; everything survives kill -9. The admin API's
//! contract (fingerprint never credential, lookup 404, exact 400s). A
//! LangSmith revoke whose caller sends a bound opaque key in `x-api-key`,
//! and a Codegen revoke with a bound opaque bearer, in terminate mode. A
//! token endpoint upstream's answer relayed byte for byte and its tokens
//! bound.

#[path = "support/redis.rs"]
mod redis_support;
mod support;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use redis_support::RedisServer;
use serde_json::json;
use support::*;

const FP_KEY: &str = "7072696e636970616c732d746573742d6b65792d33322d62797465732d212121";

async fn bind(gw: &RunningGateway, body: serde_json::Value) -> Got {
    post_json(&format!("{}/admin/v1/principals", gw.admin_url), &body).await
}

async fn scope(gw: &RunningGateway, sub: &str, extra: serde_json::Value) -> Got {
    let mut s = json!({"sub": sub});
    if let (Some(o), Some(e)) = (s.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    let r = post_json(
        &format!("{}/admin/v1/revocations", gw.admin_url),
        &json!({ "scope": s }),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r
}

async fn delete(gw: &RunningGateway, path: &str, body: serde_json::Value) -> Got {
    send(call(
        "DELETE",
        &format!("{}{path}", gw.admin_url),
        &[("content-type", "application/json")],
        body.to_string().as_bytes(),
    ))
    .await
}

async fn ready(g: &RunningGateway) {
    let url = format!("{}/readyz", g.admin_url);
    wait_for("/readyz 200", Duration::from_secs(20), || async {
        fetch(&url, &[]).await.status == 200
    })
    .await;
}

fn redis_gateway(redis: &RedisServer, up: &str) -> RunningGateway {
    Gateway::new()
        .upstream(up)
        .arg("--store")
        .arg(&redis.url())
        .toml(&format!(
            "[tokens]\nfingerprint_key = \"{FP_KEY}\"\n[store]\nkey_prefix = \"pr\""
        ))
        .spawn()
}

#[tokio::test]
async fn the_admin_api_binds_looks_up_and_forgets_without_echoing_the_credential() {
    let up = Upstream::new().spawn().await;
    let gw = Gateway::new().upstream(&up.url).spawn();
    let cred = "opaque-key-8f2c1d";
    let r = bind(
        &gw,
        json!({"credential": cred, "sub": "u1", "org": "42", "provider": "github", "issued_at": 1000}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!r.text().contains(cred), "the credential was echoed");
    let v = r.json();
    let fp = v["fingerprint"].as_str().unwrap().to_string();
    assert_eq!(fp.len(), 32);
    assert_eq!(
        (&v["sub"], &v["org"], &v["provider"], &v["issued_at"]),
        (&json!("u1"), &json!("42"), &json!("github"), &json!(1000))
    );
    assert_eq!(v["revoked"], json!(false));
    assert_eq!(v["changed"], json!(true));
    // Expiry: tokens.max_lifetime (24 h by default) from now.
    let exp = v["expires_at"].as_u64().unwrap();
    assert!(
        exp > now() + 23 * 3600 && exp <= now() + 24 * 3600 + 5,
        "{exp}"
    );

    let lookup = format!("{}/admin/v1/principals/lookup", gw.admin_url);
    let r = post_json(&lookup, &json!({ "credential": cred })).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["fingerprint"], json!(fp));
    assert!(!r.text().contains(cred));
    let r = post_json(&lookup, &json!({ "fingerprint": fp })).await;
    assert_eq!(r.json()["sub"], json!("u1"));
    let r = post_json(&lookup, &json!({ "credential": "someone-else" })).await;
    assert_eq!(r.status, 404);
    assert_eq!(
        r.text(),
        r#"{"error":"not_found","error_description":"no binding for this credential"}"#
    );

    // Bad input: exact 400s, nothing recorded.
    for (body, description) in [
        (
            json!({"sub": "u1"}),
            r#"expected {"credential":"...","sub":"...","org":"...","provider":"...","issued_at":<unix>,"expires_at":<unix>}"#,
        ),
        (
            json!({"credential": "a b", "sub": "u1"}),
            "credential must be non-empty visible ASCII",
        ),
        (
            json!({"credential": "x", "sub": ""}),
            "sub is required; org and provider, when given, must be non-empty",
        ),
        (
            json!({"credential": "x", "sub": "s".repeat(257)}),
            "sub, org and provider are at most 256 bytes each",
        ),
        (
            json!({"credential": "x", "sub": "u", "expires_at": 5}),
            "expires_at is in the past",
        ),
        (
            json!({"credential": "x".repeat(8193), "sub": "u"}),
            "credential is at most 8192 bytes",
        ),
    ] {
        let r = bind(&gw, body).await;
        assert_eq!(r.status, 400);
        assert_eq!(
            r.json(),
            json!({"error": "invalid_request", "error_description": description})
        );
    }
    let r = post_json(&lookup, &json!({ "credential": "x", "fingerprint": fp })).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["error_description"],
        json!("give exactly one of credential or fingerprint")
    );

    let r = delete(&gw, "/admin/v1/principals", json!({ "credential": cred })).await;
    assert_eq!((r.status, r.text()), (200, r#"{"removed":true}"#.into()));
    let r = delete(&gw, "/admin/v1/principals", json!({ "credential": cred })).await;
    assert_eq!((r.status, r.text()), (200, r#"{"removed":false}"#.into()));
    assert_eq!(
        post_json(&lookup, &json!({ "fingerprint": fp }))
            .await
            .status,
        404
    );
    // The journal holds fingerprints only.
    let journal = std::fs::read(gw.journal()).unwrap();
    assert!(!journal.windows(cred.len()).any(|w| w == cred.as_bytes()));
}

/// The whole not-before story on one deployment (`gws[0]` records,
/// every instance in `gws` enforces).
async fn scope_rules_cover_bound_credentials(gws: &[&RunningGateway], up: &RunningUpstream) {
    let a = gws[0];
    let t = now();
    for (cred, sub, iat) in [
        ("opaque-before-1", "alice", t - 60),
        ("opaque-before-2", "alice", t - 30),
        ("opaque-after", "alice", t + 3600),
        ("opaque-bob", "bob", t - 60),
    ] {
        let r = bind(
            a,
            json!({"credential": cred, "sub": sub, "provider": "github", "issued_at": iat}),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    for g in gws {
        assert_passes(g, up, "opaque-before-1").await;
    }
    let r = scope(a, "alice", json!({"provider": "github"})).await;
    assert_eq!(r.json()["changed"], json!(true));
    for g in gws {
        wait_for(
            "the scope's derived rules",
            Duration::from_secs(5),
            || async {
                get_bearer(&format!("{}/data", g.url), "opaque-before-2")
                    .await
                    .status
                    == 401
            },
        )
        .await;
        assert_revoked(g, up, "opaque-before-1").await;
        assert_revoked(g, up, "opaque-before-2").await;
        assert_passes(g, up, "opaque-after").await;
        assert_passes(g, up, "opaque-bob").await;
    }
    // Rebinding a revoked credential to someone no rule covers (as a token
    // endpoint's answer naming it again would) does not un-revoke it.
    let r = bind(
        a,
        json!({"credential": "opaque-before-2", "sub": "mallory", "issued_at": t - 30}),
    )
    .await;
    assert_eq!(r.json()["revoked"], json!(true), "{}", r.text());
    for g in gws {
        assert_revoked(g, up, "opaque-before-2").await;
    }
    bind(
        a,
        json!({"credential": "opaque-before-2", "sub": "alice", "provider": "github", "issued_at": t - 30}),
    )
    .await;
    // Bound after the rule: issued before it is covered, after it is not.
    let r = bind(
        a,
        json!({"credential": "opaque-late", "sub": "alice", "provider": "github", "issued_at": t - 10}),
    )
    .await;
    assert_eq!(r.json()["revoked"], json!(true), "{}", r.text());
    bind(
        a,
        json!({"credential": "opaque-late-new", "sub": "alice", "provider": "github", "issued_at": t + 10}),
    )
    .await;
    // Another provider's credential of the same user is not this rule's.
    bind(
        a,
        json!({"credential": "opaque-gitlab", "sub": "alice", "provider": "gitlab", "issued_at": t - 60}),
    )
    .await;
    for g in gws {
        wait_for(
            "the late binding's derived rule",
            Duration::from_secs(5),
            || async {
                get_bearer(&format!("{}/data", g.url), "opaque-late")
                    .await
                    .status
                    == 401
            },
        )
        .await;
        assert_revoked(g, up, "opaque-late").await;
        assert_passes(g, up, "opaque-late-new").await;
        assert_passes(g, up, "opaque-gitlab").await;
    }
}

/// After `scope_rules_cover_bound_credentials`: removing a binding and
/// un-revoking the scope withdraw what they derived.
async fn withdrawals(gws: &[&RunningGateway], up: &RunningUpstream) {
    let a = gws[0];
    let r = delete(
        a,
        "/admin/v1/principals",
        json!({"credential": "opaque-before-1"}),
    )
    .await;
    assert_eq!(r.text(), r#"{"removed":true}"#);
    let r = delete(
        a,
        "/admin/v1/revocations",
        json!({"scope": {"sub": "alice", "provider": "github"}}),
    )
    .await;
    assert_eq!(r.text(), r#"{"removed":true}"#);
    for g in gws {
        wait_for("withdrawn", Duration::from_secs(5), || async {
            get_bearer(&format!("{}/data", g.url), "opaque-before-2")
                .await
                .status
                == 200
        })
        .await;
        assert_passes(g, up, "opaque-before-1").await;
        assert_passes(g, up, "opaque-late").await;
    }
}

#[tokio::test]
async fn a_scope_rule_covers_bound_opaque_credentials_on_the_embedded_store_and_after_kill_9() {
    let up = Upstream::new().spawn().await;
    let mut gw = Gateway::new().upstream(&up.url).spawn();
    scope_rules_cover_bound_credentials(&[&gw], &up).await;
    gw.kill9();
    gw.restart();
    // Replay derives the rules again from bindings and scope rules.
    assert_revoked(&gw, &up, "opaque-before-1").await;
    assert_revoked(&gw, &up, "opaque-late").await;
    assert_passes(&gw, &up, "opaque-after").await;
    withdrawals(&[&gw], &up).await;
    gw.kill9();
    gw.restart();
    assert_passes(&gw, &up, "opaque-before-2").await;
}

#[tokio::test]
async fn bindings_and_scope_matches_agree_across_two_instances_on_redis_and_survive_kill_9() {
    let redis = RedisServer::spawn();
    let up = Upstream::new().spawn().await;
    let mut a = redis_gateway(&redis, &up.url);
    let b = redis_gateway(&redis, &up.url);
    ready(&a).await;
    ready(&b).await;
    scope_rules_cover_bound_credentials(&[&a, &b], &up).await;
    // A binding recorded through B is looked up through A.
    bind(&b, json!({"credential": "opaque-via-b", "sub": "carol"})).await;
    let r = post_json(
        &format!("{}/admin/v1/principals/lookup", a.admin_url),
        &json!({"credential": "opaque-via-b"}),
    )
    .await;
    assert_eq!(r.json()["sub"], json!("carol"), "{}", r.text());
    // Redis holds fingerprints only: no credential in any key or value.
    let mut conn = redis.conn();
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn).unwrap();
    assert!(keys.iter().any(|k| k.starts_with("{pr}:bind:")), "{keys:?}");
    assert!(keys.iter().any(|k| k.starts_with("{pr}:dtok:")), "{keys:?}");
    for k in &keys {
        assert!(!k.contains("opaque"), "{k}");
        let t: String = redis::cmd("TYPE").arg(k).query(&mut conn).unwrap();
        if t == "string" {
            let v: Vec<u8> = redis::cmd("GET").arg(k).query(&mut conn).unwrap();
            assert!(!v.windows(6).any(|w| w == b"opaque"), "{k}");
        }
    }
    a.kill9();
    a.restart();
    ready(&a).await;
    assert_revoked(&a, &up, "opaque-before-1").await;
    assert_revoked(&a, &up, "opaque-late").await;
    assert_passes(&a, &up, "opaque-after").await;
    withdrawals(&[&a, &b], &up).await;
}

#[tokio::test]
async fn langsmith_and_codegen_callers_are_known_by_their_bound_opaque_keys() {
    let up = Upstream::new().spawn().await;
    let gw = Gateway::new()
        .upstream(&up.url)
        .arg("--revoke-mode")
        .arg("terminate")
        .spawn();
    let t = now();
    bind(
        &gw,
        json!({"credential": "ls-api-key-1", "sub": "dana", "issued_at": t - 100}),
    )
    .await;
    bind(
        &gw,
        json!({"credential": "dana-github-token", "sub": "dana", "provider": "github", "issued_at": t - 50}),
    )
    .await;
    let revoke = format!("{}/v2/auth/tokens?provider_id=github", gw.url);
    // Unknown key: the dialect's 401, nothing revoked.
    let r = send(call(
        "DELETE",
        &revoke,
        &[("x-api-key", "unknown-key")],
        b"",
    ))
    .await;
    assert_eq!(
        (r.status, r.text()),
        (401, r#"{"detail":"Not authenticated"}"#.into())
    );
    assert_passes(&gw, &up, "dana-github-token").await;
    // The bound key in LangSmith's own header.
    let r = send(call(
        "DELETE",
        &revoke,
        &[("x-api-key", "ls-api-key-1")],
        b"",
    ))
    .await;
    assert_eq!(
        (r.status, r.text()),
        (
            200,
            r#"{"message":"Tokens revoked","provider_id":"github"}"#.into()
        )
    );
    assert_revoked(&gw, &up, "dana-github-token").await;
    // The API key itself has no provider: not covered by a github rule.
    assert_passes(&gw, &up, "ls-api-key-1").await;
    // Once the key itself is revoked it names no one: a stolen key its
    // holder revoked cannot go on revoking their other tokens.
    bind(
        &gw,
        json!({"credential": "dana-gitlab-token", "sub": "dana", "provider": "gitlab", "issued_at": t - 50}),
    )
    .await;
    admin_revoke(&gw, "ls-api-key-1").await;
    let gitlab = format!("{}/v2/auth/tokens?provider_id=gitlab", gw.url);
    let r = send(call(
        "DELETE",
        &gitlab,
        &[("x-api-key", "ls-api-key-1")],
        b"",
    ))
    .await;
    assert_eq!(
        (r.status, r.text()),
        (401, r#"{"detail":"Not authenticated"}"#.into())
    );
    assert_passes(&gw, &up, "dana-gitlab-token").await;

    // Codegen: an opaque bearer API key, bound to its user.
    bind(
        &gw,
        json!({"credential": "cg-key-1", "sub": "erin", "issued_at": t - 100}),
    )
    .await;
    bind(
        &gw,
        json!({"credential": "erin-org7-token", "sub": "erin", "org": "7", "provider": "github", "issued_at": t - 50}),
    )
    .await;
    let cg = format!("{}/v1/oauth/tokens/revoke?provider=github&org_id=7", gw.url);
    let r = send(call(
        "POST",
        &cg,
        &[("authorization", "Bearer cg-unknown")],
        b"",
    ))
    .await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_passes(&gw, &up, "erin-org7-token").await;
    let r = send(call(
        "POST",
        &cg,
        &[("authorization", "Bearer cg-key-1")],
        b"",
    ))
    .await;
    assert_eq!((r.status, r.text()), (200, "{}".into()));
    assert_revoked(&gw, &up, "erin-org7-token").await;
    // A revoked bearer names no one either.
    bind(
        &gw,
        json!({"credential": "erin-org8-token", "sub": "erin", "org": "8", "provider": "github", "issued_at": t - 50}),
    )
    .await;
    admin_revoke(&gw, "cg-key-1").await;
    let cg8 = format!("{}/v1/oauth/tokens/revoke?provider=github&org_id=8", gw.url);
    let r = send(call(
        "POST",
        &cg8,
        &[("authorization", "Bearer cg-key-1")],
        b"",
    ))
    .await;
    assert_eq!(
        (r.status, r.text()),
        (401, r#"{"detail":"Not authenticated"}"#.into())
    );
    assert_passes(&gw, &up, "erin-org8-token").await;
}

/// An authorization-code exchange at the gateway's `/oauth/token`.
async fn code_exchange(gw: &RunningGateway) -> Got {
    send(call(
        "POST",
        &format!("{}/oauth/token", gw.url),
        &[("content-type", "application/x-www-form-urlencoded")],
        b"grant_type=authorization_code&code=abc",
    ))
    .await
}

/// A token endpoint that answers as an authorization server does.
async fn token_endpoint(answer: &'static str) -> (String, tokio::task::JoinHandle<()>) {
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = service_fn(
                    move |_req: hyper::Request<hyper::body::Incoming>| async move {
                        let mut r =
                            hyper::Response::new(Full::new(Bytes::from_static(answer.as_bytes())));
                        r.headers_mut()
                            .insert("content-type", "application/json".parse().unwrap());
                        r.headers_mut().insert("x-issuer", "test".parse().unwrap());
                        Ok::<_, std::convert::Infallible>(r)
                    },
                );
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (url, task)
}

#[tokio::test]
async fn a_token_endpoints_answer_is_relayed_unchanged_and_binds_what_it_issued() {
    const ANSWER: &str = r#"{"access_token":"issued-opaque-at-1","token_type":"Bearer","expires_in":3600,"refresh_token":"issued-opaque-rt-1","user_id":"frank","provider":"google"}"#;
    let (token_url, _task) = token_endpoint(ANSWER).await;
    let up = Upstream::new().spawn().await;
    for (name, paths) in PATHS {
        let gw = Gateway::new()
            .upstream(&up.url)
            .toml(&format!(
                "{paths}[[routes]]\npath_prefix = \"/oauth/token\"\nupstream = \"{token_url}\"\n"
            ))
            .spawn();
        let r = code_exchange(&gw).await;
        assert_eq!(r.status, 200, "{name}");
        assert_eq!(
            r.text(),
            ANSWER,
            "{name}: the answer was not relayed byte for byte"
        );
        assert_eq!(r.header("x-issuer"), Some("test"), "{name}");
        let lookup = format!("{}/admin/v1/principals/lookup", gw.admin_url);
        for token in ["issued-opaque-at-1", "issued-opaque-rt-1"] {
            let b = post_json(&lookup, &json!({ "credential": token })).await;
            assert_eq!(b.status, 200, "{name}: {token} not bound: {}", b.text());
            assert_eq!(b.json()["sub"], json!("frank"), "{name}");
            assert_eq!(b.json()["provider"], json!("google"), "{name}");
        }
        let at = post_json(&lookup, &json!({ "credential": "issued-opaque-at-1" })).await;
        let exp = at.json()["expires_at"].as_u64().unwrap();
        assert!(
            exp >= now() + 3600 && exp <= now() + 3600 + 400,
            "{name}: {exp}"
        );
        assert_passes(&gw, &up, "issued-opaque-at-1").await;
        scope(&gw, "frank", json!({"provider": "google"})).await;
        assert_revoked(&gw, &up, "issued-opaque-at-1").await;
        assert_revoked(&gw, &up, "issued-opaque-rt-1").await;
    }
}

#[tokio::test]
async fn an_answer_that_names_no_holder_binds_to_the_requests_own_bound_caller() {
    const ANSWER: &str = r#"{"access_token":"issued-no-holder-1","expires_in":600}"#;
    let (token_url, _task) = token_endpoint(ANSWER).await;
    let up = Upstream::new().spawn().await;
    let gw = Gateway::new()
        .upstream(&up.url)
        .toml(&format!(
            "[[routes]]\npath_prefix = \"/v3/connect/token\"\nupstream = \"{token_url}\"\n"
        ))
        .spawn();
    let lookup = format!("{}/admin/v1/principals/lookup", gw.admin_url);
    // Without a caller the tokens it issued are bound to no one.
    let r = send(call(
        "POST",
        &format!("{}/v3/connect/token", gw.url),
        &[],
        b"",
    ))
    .await;
    assert_eq!((r.status, r.text()), (200, ANSWER.into()));
    let b = post_json(&lookup, &json!({"credential": "issued-no-holder-1"})).await;
    assert_eq!(b.status, 404, "{}", b.text());
    // With a bound caller, they are its holder's.
    bind(
        &gw,
        json!({"credential": "grace-refreshing-key", "sub": "grace"}),
    )
    .await;
    let r = send(call(
        "POST",
        &format!("{}/v3/connect/token", gw.url),
        &[("authorization", "Bearer grace-refreshing-key")],
        b"",
    ))
    .await;
    assert_eq!((r.status, r.text()), (200, ANSWER.into()));
    let b = post_json(&lookup, &json!({"credential": "issued-no-holder-1"})).await;
    assert_eq!(b.status, 200, "{}", b.text());
    assert_eq!(b.json()["sub"], json!("grace"));
}

/// A token endpoint's `id_token` signed with a key the provider rotated in
/// after revgate's last JWKS fetch: inside `min_refresh_interval` (an hour
/// here) revgate did not fetch for its `kid`, the id_token failed
/// verification, and the tokens of that answer were bound to no one, so a
/// later revocation of their holder missed them for their whole life. Its
/// `kid` is chosen by the provider, not by a caller: it is fetched for
/// after one second, and the tokens are bound.
#[tokio::test]
async fn tokens_issued_with_an_id_token_under_a_just_rotated_key_are_bound() {
    use support::jwks::{jwks, JwksServer, SigningKey};
    let old = SigningKey::es256("idp-old");
    let new = SigningKey::es256("idp-new");
    let idp = JwksServer::spawn(jwks(&[&old])).await;
    let id_token = new.sign(&json!({
        "iss": "https://idp.example/", "aud": "client-1", "sub": "heidi",
        "iat": now() - 5, "exp": now() + 600,
    }));
    let answer: &'static str = Box::leak(
        json!({"access_token": "issued-after-rotation-at", "token_type": "Bearer",
               "expires_in": 600, "id_token": id_token})
        .to_string()
        .into_boxed_str(),
    );
    let (token_url, _task) = token_endpoint(answer).await;
    let up = Upstream::new().spawn().await;
    let gw = Gateway::new()
        .upstream(&up.url)
        .toml(&format!(
            "[tokens.verify]\njwks_url = \"{}\"\nissuers = [\"https://idp.example/\"]\naudiences = [\"client-1\"]\nmin_refresh_interval = \"1h\"\nrefresh_interval = \"2h\"\n[[routes]]\npath_prefix = \"/oauth/token\"\nupstream = \"{token_url}\"\n",
            idp.url
        ))
        .spawn();
    wait_for("the first JWKS fetch", Duration::from_secs(10), || async {
        idp.hits() >= 1
    })
    .await;
    // Rotated in at the provider after that fetch, and used at once (past
    // the one second an id_token's unknown kid waits for).
    idp.set(jwks(&[&old, &new]));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let r = code_exchange(&gw).await;
    assert_eq!((r.status, r.text()), (200, answer.to_string()));
    let b = post_json(
        &format!("{}/admin/v1/principals/lookup", gw.admin_url),
        &json!({"credential": "issued-after-rotation-at"}),
    )
    .await;
    assert_eq!(b.status, 200, "not bound: {}", b.text());
    assert_eq!(b.json()["sub"], json!("heidi"));
    assert_passes(&gw, &up, "issued-after-rotation-at").await;
    scope(&gw, "heidi", json!({})).await;
    assert_revoked(&gw, &up, "issued-after-rotation-at").await;
}
