//! Bounded revoke surfaces (issue 10, item 3), through the real binary:
//! length limits on every dialect parameter (answered in the vendor's own
//! validation format, nothing recorded), the per-subject cap of scope rules,
//! per-client-IP rate limits on the revoke endpoints and the admin API (429 +
//! `Retry-After`, then recovery), and the paginated scope listing.
//!
//! "Nothing recorded" is proven where it matters: a token refused by a revoke
//! endpoint still reaches the upstream (its counter moves), and a refused
//! scope revoke leaves `GET /admin/v1/scopes` as it was.

mod support;

use std::time::Duration;

use support::*;

const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");
const JSON: (&str, &str) = ("content-type", "application/json");

/// A terminate-mode gateway with known dialect credentials, plus `toml`.
fn terminate(up: &RunningUpstream, toml: &str) -> RunningGateway {
    Gateway::new()
        .upstream(&up.url)
        .arg("--revoke-mode")
        .arg("terminate")
        .toml("[tokens.identity_headers]\nsub = \"x-user\"\n[revoke.onelogin]\nclients = [{ client_id = \"cid\", client_secret = \"csecret\" }]\n[revoke.nylas]\napi_keys = [\"nyk\"]")
        .toml(toml)
        .spawn()
}

/// Every scope rule, walking the listing page by page.
async fn all_scopes(gw: &RunningGateway) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..1000 {
        let url = match &cursor {
            Some(c) => format!("{}/admin/v1/scopes?cursor={c}", gw.admin_url),
            None => format!("{}/admin/v1/scopes", gw.admin_url),
        };
        let r = fetch(&url, &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        out.extend(v["scopes"].as_array().unwrap().iter().cloned());
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => {
                assert!(v["next_cursor"].is_null(), "next_cursor missing: {v}");
                return out;
            }
        }
    }
    panic!("the listing never ended");
}

/// A terminate-mode caller: named by the trusted identity header
/// (`x-user`), since unverified JWT claims never identify a revoker.
fn caller(sub: &str) -> String {
    sub.to_string()
}

/// A forward-mode caller: its peeked JWT claims (the upstream's 2xx vouches).
fn caller_jwt(sub: &str) -> String {
    format!(
        "Bearer {}",
        jwt(&serde_json::json!({"sub": sub, "iat": now() - 5}))
    )
}

// === the reported hole, bounded ===

/// 200 unauthenticated scope revokes with a 30 KB `provider_id`, each from
/// another "user" (the issue's attack): every one is refused in LangSmith's 422,
/// the journal stays small, and the listing is one short page. (200 calls
/// fit in the default burst, so only the parameter bounds are at work.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_huge_scope_revokes_records_nothing() {
    let up = Upstream::new().spawn().await;
    let gw = terminate(&up, "");
    let huge = "p".repeat(30 * 1024);
    let c = client();
    for i in 0..200 {
        let auth = caller(&format!("attacker-{i}"));
        let r = send_with(
            &c,
            call(
                "DELETE",
                &format!("{}/v2/auth/tokens?provider_id={huge}", gw.url),
                &[("x-user", &auth)],
                b"",
            ),
        )
        .await;
        assert_eq!(r.status, 422, "call {i}: {}", r.text());
    }
    let journal = std::fs::metadata(gw.journal())
        .map(|m| m.len())
        .unwrap_or(0);
    assert!(
        journal < 64 * 1024,
        "the journal grew to {journal} bytes from refused calls"
    );
    let r = fetch(&format!("{}/admin/v1/scopes", gw.admin_url), &[]).await;
    assert_eq!(r.text(), r#"{"scopes":[],"next_cursor":null}"#);
}

// === length limits, one per dialect ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nylas_token_over_8_kib_is_its_400_and_nothing_is_revoked() {
    let up = Upstream::new().spawn().await;
    let gw = terminate(&up, "");
    let url = format!("{}/v3/connect/revoke", gw.url);
    let long = "n".repeat(8193);
    let r = send(call(
        "POST",
        &format!("{url}?token={long}"),
        &[("authorization", "Bearer nyk")],
        b"",
    ))
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.text(),
        r#"{"error":"invalid_request","error_description":"The token query parameter must be at most 8192 bytes.","error_uri":"https://developer.nylas.com/docs/api/errors/400-response/","error_code":"400"}"#
    );
    assert_passes(&gw, &up, &long).await;
    // 8 KiB exactly is a token (JWTs are long).
    let max = "m".repeat(8192);
    let r = send(call(
        "POST",
        &format!("{url}?token={max}"),
        &[("authorization", "Bearer nyk")],
        b"",
    ))
    .await;
    assert_eq!((r.status, r.text().as_str()), (200, "{}"));
    assert_revoked(&gw, &up, &max).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onelogin_token_over_8_kib_is_its_400_and_nothing_is_revoked() {
    let up = Upstream::new().spawn().await;
    let gw = terminate(&up, "[revoke]\nmax_body_bytes = 65536");
    let url = format!("{}/auth/oauth2/revoke", gw.url);
    let auth = ("authorization", "client_id:cid, client_secret:csecret");
    let long = "o".repeat(8193);
    let body = format!(r#"{{"access_token":"{long}"}}"#);
    let r = send(call("POST", &url, &[auth, JSON], body.as_bytes())).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.text(),
        r#"{"status":{"error":true,"code":400,"type":"bad request","message":"Access Token is too long"}}"#
    );
    assert_passes(&gw, &up, &long).await;
    // An over-long client id is no client pair.
    let id = "c".repeat(257);
    let auth = format!("client_id:{id}, client_secret:csecret");
    let r = send(call(
        "POST",
        &url,
        &[("authorization", &auth), JSON],
        br#"{"access_token":"ol-x"}"#,
    ))
    .await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (
            400,
            r#"{"status":{"error":true,"code":400,"type":"bad request","message":"The authorization information is missing"}}"#
        )
    );
    assert_passes(&gw, &up, "ol-x").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc7009_token_and_hint_limits_are_invalid_request() {
    let up = Upstream::new().spawn().await;
    let gw = terminate(&up, "[revoke]\nmax_body_bytes = 65536");
    let url = format!("{}/oauth/revoke", gw.url);
    let long = "r".repeat(8193);
    let r = send(call(
        "POST",
        &url,
        &[FORM],
        format!("token={long}").as_bytes(),
    ))
    .await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (
            400,
            r#"{"error":"invalid_request","error_description":"The token is longer than 8192 bytes."}"#
        )
    );
    assert_passes(&gw, &up, &long).await;
    let hint = "h".repeat(257);
    let r = send(call(
        "POST",
        &url,
        &[FORM],
        format!("token=rfc-short&token_type_hint={hint}").as_bytes(),
    ))
    .await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (
            400,
            r#"{"error":"invalid_request","error_description":"The token_type_hint is longer than 256 bytes."}"#
        )
    );
    assert_passes(&gw, &up, "rfc-short").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn langsmith_provider_id_over_256_characters_is_its_422() {
    let up = Upstream::new().spawn().await;
    let gw = terminate(&up, "");
    let auth = caller("u1");
    let r = send(call(
        "DELETE",
        &format!("{}/v2/auth/tokens?provider_id={}", gw.url, "p".repeat(257)),
        &[("x-user", &auth)],
        b"",
    ))
    .await;
    assert_eq!(r.status, 422);
    assert_eq!(
        r.text(),
        r#"{"detail":[{"loc":["query","provider_id"],"msg":"String should have at most 256 characters","type":"string_too_long"}]}"#
    );
    assert!(all_scopes(&gw).await.is_empty());
    // 256 characters (of two bytes each) is a provider.
    let r = send(call(
        "DELETE",
        &format!(
            "{}/v2/auth/tokens?provider_id={}",
            gw.url,
            "%C3%BC".repeat(256)
        ),
        &[("x-user", &auth)],
        b"",
    ))
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["provider_id"], "\u{fc}".repeat(256));
    assert_eq!(all_scopes(&gw).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codegen_provider_and_org_limits_are_its_422() {
    let up = Upstream::new().spawn().await;
    let gw = terminate(&up, "");
    let auth = caller("dev");
    let url = format!("{}/v1/oauth/tokens/revoke", gw.url);
    let r = send(call(
        "POST",
        &format!(
            "{url}?provider={}&org_id={}",
            "s".repeat(257),
            "9".repeat(30)
        ),
        &[("x-user", &auth)],
        b"",
    ))
    .await;
    assert_eq!(r.status, 422);
    assert_eq!(
        r.text(),
        r#"{"detail":[{"loc":["query","provider"],"msg":"String should have at most 256 characters","type":"string_too_long"},{"loc":["query","org_id"],"msg":"Input should be less than or equal to 9223372036854775807","type":"less_than_equal"}]}"#
    );
    let r = send(call(
        "POST",
        &format!("{url}?provider=slack&org_id=-9223372036854775809"),
        &[("x-user", &auth)],
        b"",
    ))
    .await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (
            422,
            r#"{"detail":[{"loc":["query","org_id"],"msg":"Input should be greater than or equal to -9223372036854775808","type":"greater_than_equal"}]}"#
        )
    );
    assert!(all_scopes(&gw).await.is_empty());
}

/// The subject of a scope revoke comes from the caller's credential: one
/// over 256 bytes names no user revgate will record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scope_revoke_for_an_over_long_subject_is_unauthenticated() {
    let up = Upstream::new().spawn().await;
    let gw = terminate(&up, "");
    let auth = caller(&"s".repeat(257));
    let r = send(call(
        "DELETE",
        &format!("{}/v2/auth/tokens?provider_id=github", gw.url),
        &[("x-user", &auth)],
        b"",
    ))
    .await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (401, r#"{"detail":"Not authenticated"}"#)
    );
    let r = post_json(
        &format!("{}/admin/v1/revocations", gw.admin_url),
        &serde_json::json!({"scope": {"sub": "s".repeat(257)}}),
    )
    .await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (
            400,
            r#"{"error":"invalid_request","error_description":"scope.sub, scope.org and scope.provider are at most 256 bytes each"}"#
        )
    );
    let r = post_json(
        &format!("{}/admin/v1/revocations", gw.admin_url),
        &serde_json::json!({"token": "t".repeat(8193)}),
    )
    .await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (
            400,
            r#"{"error":"invalid_request","error_description":"token is at most 8192 bytes"}"#
        )
    );
    assert!(all_scopes(&gw).await.is_empty());
    // 256 bytes is a subject.
    let auth = caller(&"s".repeat(256));
    let r = send(call(
        "DELETE",
        &format!("{}/v2/auth/tokens?provider_id=github", gw.url),
        &[("x-user", &auth)],
        b"",
    ))
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(all_scopes(&gw).await.len(), 1);
}

// === the per-subject cap ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scope_rules_per_subject_are_capped() {
    let up = Upstream::new().spawn().await;
    let gw = terminate(&up, "[revoke]\nmax_scopes_per_subject = 3");
    let auth = caller("capped");
    let revoke = |provider: String| {
        let auth = auth.clone();
        let url = format!("{}/v2/auth/tokens?provider_id={provider}", gw.url);
        async move { send(call("DELETE", &url, &[("x-user", &auth)], b"")).await }
    };
    for p in ["a", "b", "c"] {
        let r = revoke(p.into()).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(
            r.text(),
            format!(r#"{{"message":"Tokens revoked","provider_id":"{p}"}}"#)
        );
    }
    let r = revoke("d".into()).await;
    assert_eq!(r.status, 429);
    assert_eq!(
        r.text(),
        r#"{"detail":"Too many active scope revocations for this user"}"#
    );
    assert_eq!(r.header("retry-after"), None, "waiting does not lift a cap");
    // Revoking an existing scope again is no new rule: still answered.
    let r = revoke("b".into()).await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, r#"{"message":"Tokens revoked","provider_id":"b"}"#)
    );
    // Another subject has its own allowance.
    let other = caller("someone-else");
    let r = send(call(
        "DELETE",
        &format!("{}/v2/auth/tokens?provider_id=d", gw.url),
        &[("x-user", &other)],
        b"",
    ))
    .await;
    assert_eq!(r.status, 200);
    // The admin API is held to the same cap, in its own error shape.
    let r = post_json(
        &format!("{}/admin/v1/revocations", gw.admin_url),
        &serde_json::json!({"scope": {"sub": "capped", "provider": "e"}}),
    )
    .await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (
            429,
            r#"{"error":"too_many_scopes","error_description":"this subject already has revoke.max_scopes_per_subject scope rules"}"#
        )
    );
    let subs: Vec<String> = all_scopes(&gw)
        .await
        .iter()
        .map(|s| {
            format!(
                "{}/{}",
                s["sub"].as_str().unwrap(),
                s["provider"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(subs, ["capped/a", "capped/b", "capped/c", "someone-else/d"]);
}

// === rate limits ===

async fn rfc7009_revoke(gw: &RunningGateway, token: &str) -> Got {
    send(call(
        "POST",
        &format!("{}/oauth/revoke", gw.url),
        &[FORM],
        format!("token={token}").as_bytes(),
    ))
    .await
}

fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    support::prometheus::parse(text)
        .unwrap()
        .value(name, labels)
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_calls_are_rate_limited_per_client_ip_then_recover() {
    let up = Upstream::new().spawn().await;
    let gw = terminate(&up, "[revoke.rate_limit]\nper_second = 2.0\nburst = 2");
    assert_eq!(rfc7009_revoke(&gw, "rl-1").await.status, 200);
    assert_eq!(rfc7009_revoke(&gw, "rl-2").await.status, 200);
    let r = rfc7009_revoke(&gw, "rl-3").await;
    assert_eq!(r.status, 429);
    assert_eq!(
        r.text(),
        r#"{"error":"temporarily_unavailable","error_description":"Too many requests; retry after the Retry-After delay."}"#
    );
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_passes(&gw, &up, "rl-3").await;
    // Every dialect answers in its own shape, from the same bucket.
    let r = send(call(
        "POST",
        &format!("{}/v3/connect/revoke?token=rl-n", gw.url),
        &[("authorization", "Bearer nyk")],
        b"",
    ))
    .await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (
            429,
            r#"{"error":"temporarily_unavailable","error_description":"Too many requests. Retry after the delay in the Retry-After header.","error_uri":"https://developer.nylas.com/docs/api/errors/400-response/","error_code":"429"}"#
        )
    );
    let r = send(call(
        "POST",
        &format!("{}/auth/oauth2/revoke", gw.url),
        &[
            ("authorization", "client_id:cid, client_secret:csecret"),
            JSON,
        ],
        br#"{"access_token":"rl-o"}"#,
    ))
    .await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (
            429,
            r#"{"status":{"error":true,"code":429,"type":"too many requests","message":"Too Many Requests"}}"#
        )
    );
    let auth = caller("rl-user");
    for url in [
        format!("{}/v1/oauth/tokens/revoke?provider=p&org_id=1", gw.url),
        format!("{}/v2/auth/tokens?provider_id=p", gw.url),
    ] {
        let method = if url.contains("/v2/") {
            "DELETE"
        } else {
            "POST"
        };
        let r = send(call(method, &url, &[("x-user", &auth)], b"")).await;
        assert_eq!(
            (r.status, r.text().as_str()),
            (429, r#"{"detail":"Too Many Requests"}"#)
        );
        assert!(r.header("retry-after").is_some());
    }
    assert!(all_scopes(&gw).await.is_empty());
    let m = fetch(&format!("{}/metrics", gw.admin_url), &[])
        .await
        .text();
    assert!(
        metric(&m, "revgate_rate_limited_total", &[("surface", "revoke")]) >= 5.0,
        "{m}"
    );
    // Ordinary traffic is not limited by the revoke bucket.
    assert_passes(&gw, &up, "anything").await;
    // The bucket refills: wait on the answer, not on a clock.
    let mut recovered = None;
    let ok = eventually(Duration::from_secs(10), async || {
        let r = rfc7009_revoke(&gw, "rl-4").await;
        let done = r.status == 200;
        recovered = Some(r);
        done
    })
    .await;
    assert!(ok, "never recovered: {:?}", recovered.map(|r| r.text()));
    assert_revoked(&gw, &up, "rl-4").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_mode_rate_limited_calls_never_reach_the_upstream() {
    let up = Upstream::new().spawn().await;
    let gw = Gateway::new()
        .upstream(&up.url)
        .toml("[revoke.rate_limit]\nper_second = 1.0\nburst = 1")
        .spawn();
    assert_eq!(rfc7009_revoke(&gw, "fw-1").await.status, 200);
    let hits = up.hits();
    assert_eq!(hits, 1);
    let r = rfc7009_revoke(&gw, "fw-2").await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(up.hits(), hits, "a rate-limited revoke call was forwarded");
    assert_passes(&gw, &up, "fw-2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_is_rate_limited_then_recovers() {
    let up = Upstream::new().spawn().await;
    let gw = terminate(&up, "[admin.rate_limit]\nper_second = 2.0\nburst = 2");
    let scopes = format!("{}/admin/v1/scopes", gw.admin_url);
    assert_eq!(fetch(&scopes, &[]).await.status, 200);
    assert_eq!(fetch(&scopes, &[]).await.status, 200);
    let r = fetch(&scopes, &[]).await;
    assert_eq!(r.status, 429);
    assert_eq!(
        r.text(),
        r#"{"error":"too_many_requests","error_description":"too many admin requests from this address; retry after the Retry-After delay"}"#
    );
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    // Nothing is applied while limited.
    let r = post_json(
        &format!("{}/admin/v1/revocations", gw.admin_url),
        &serde_json::json!({"token": "adm-limited"}),
    )
    .await;
    assert_eq!(r.status, 429);
    assert_passes(&gw, &up, "adm-limited").await;
    // Probes are never limited.
    for _ in 0..5 {
        assert_eq!(
            fetch(&format!("{}/healthz", gw.admin_url), &[])
                .await
                .status,
            200
        );
    }
    let ok = eventually(Duration::from_secs(10), async || {
        fetch(&scopes, &[]).await.status == 200
    })
    .await;
    assert!(ok, "the admin bucket never refilled");
    let mut limited = 0.0;
    let ok = eventually(Duration::from_secs(10), async || {
        let r = fetch(&format!("{}/metrics", gw.admin_url), &[]).await;
        if r.status == 200 {
            limited = metric(
                &r.text(),
                "revgate_rate_limited_total",
                &[("surface", "admin")],
            );
        }
        r.status == 200
    })
    .await;
    assert!(ok);
    assert!(limited >= 2.0, "admin 429s counted: {limited}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_can_be_turned_off() {
    let up = Upstream::new().spawn().await;
    let gw = terminate(
        &up,
        "[revoke.rate_limit]\nenabled = false\nper_second = 1.0\nburst = 1",
    );
    for i in 0..20 {
        assert_eq!(rfc7009_revoke(&gw, &format!("off-{i}")).await.status, 200);
    }
}

// === pagination ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scope_listing_is_paginated_in_a_stable_order() {
    let up = Upstream::new().spawn().await;
    let gw = terminate(&up, "[admin.rate_limit]\nenabled = false");
    let c = client();
    for i in 0..250 {
        let r = send_with(
            &c,
            call(
                "POST",
                &format!("{}/admin/v1/revocations", gw.admin_url),
                &[JSON],
                serde_json::json!({"scope": {"sub": format!("user-{i:03}"), "provider": "gh"}})
                    .to_string()
                    .as_bytes(),
            ),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let base = format!("{}/admin/v1/scopes", gw.admin_url);
    let first = fetch(&base, &[]).await.json();
    assert_eq!(
        first["scopes"].as_array().unwrap().len(),
        100,
        "default page"
    );
    let cursor = first["next_cursor"].as_str().unwrap().to_owned();
    let page = fetch(&format!("{base}?limit=120&cursor={cursor}"), &[])
        .await
        .json();
    let subs: Vec<&str> = page["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["sub"].as_str().unwrap())
        .collect();
    assert_eq!(subs.len(), 120);
    assert_eq!((subs[0], subs[119]), ("user-100", "user-219"));
    let all = all_scopes(&gw).await;
    let subs: Vec<String> = all
        .iter()
        .map(|s| s["sub"].as_str().unwrap().to_owned())
        .collect();
    let want: Vec<String> = (0..250).map(|i| format!("user-{i:03}")).collect();
    assert_eq!(subs, want, "every rule once, in key order");
    let last = fetch(&format!("{base}?limit=1000"), &[]).await.json();
    assert_eq!(last["scopes"].as_array().unwrap().len(), 250);
    assert!(last["next_cursor"].is_null());

    for (query, description) in [
        ("limit=0", "limit must be an integer from 1 to 1000"),
        ("limit=1001", "limit must be an integer from 1 to 1000"),
        ("limit=ten", "limit must be an integer from 1 to 1000"),
        ("cursor=not-a-cursor", "cursor is not one this API gave out"),
    ] {
        let r = fetch(&format!("{base}?{query}"), &[]).await;
        assert_eq!(r.status, 400, "{query}");
        assert_eq!(
            r.json(),
            serde_json::json!({"error": "invalid_request", "error_description": description}),
            "{query}"
        );
    }
}

/// Forward mode: a scope revoke past the cap is refused before it is
/// forwarded, so the upstream and revgate agree that nothing was revoked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_mode_scope_revokes_past_the_cap_never_reach_the_upstream() {
    let up = Upstream::new().spawn().await;
    let gw = Gateway::new()
        .upstream(&up.url)
        .toml("[revoke]\nmax_scopes_per_subject = 1")
        .spawn();
    let auth = caller_jwt("fw-user");
    let revoke = |p: &str| {
        call(
            "POST",
            &format!("{}/v1/oauth/tokens/revoke?provider={p}&org_id=7", gw.url),
            &[("authorization", &auth)],
            b"",
        )
    };
    let r = send(revoke("slack")).await;
    assert_eq!((r.status, r.text().as_str()), (200, r#"{"upstream":"ok"}"#));
    assert_eq!(up.hits(), 1);
    let ok = eventually(Duration::from_secs(5), async || {
        all_scopes(&gw).await.len() == 1
    })
    .await;
    assert!(ok, "the forwarded revoke was not applied");
    let r = send(revoke("github")).await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (
            429,
            r#"{"detail":"Too many active scope revocations for this user"}"#
        )
    );
    assert_eq!(up.hits(), 1, "a revoke past the cap was forwarded");
    // The same scope again is no new rule: forwarded as usual.
    assert_eq!(send(revoke("slack")).await.status, 200);
    assert_eq!(up.hits(), 2);
    assert_eq!(all_scopes(&gw).await.len(), 1);
}
