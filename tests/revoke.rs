//! The revoke endpoints through the real gateway, in terminate and forward
//! modes: success, then enforcement (the upstream's counter proves a revoked
//! token never reaches it), each documented error with exact status and
//! body, and byte-identical forwarding.

mod support;

use support::jwks;
use support::*;

fn terminate(up: &RunningUpstream) -> RunningGateway {
    Gateway::new()
        .upstream(&up.url)
        .arg("--revoke-mode")
        .arg("terminate")
        .toml("[revoke.onelogin]\nclients = [{ client_id = \"cid\", client_secret = \"csecret\" }]\n[revoke.nylas]\napi_keys = [\"nyk\"]")
        .spawn()
}

/// Terminate mode with `[tokens.verify]` over a JWKS file: scope revokers
/// (LangSmith, Codegen) must present a JWT signed by the returned key.
fn terminate_verified(
    up: &RunningUpstream,
) -> (RunningGateway, jwks::SigningKey, tempfile::TempDir) {
    let key = jwks::SigningKey::rsa('a', "revoke-tests", jsonwebtoken::Algorithm::RS256);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, jwks::jwks(&[&key]).to_string()).unwrap();
    let gw = Gateway::new()
        .upstream(&up.url)
        .arg("--revoke-mode")
        .arg("terminate")
        .toml(&format!(
            "[tokens.verify]\njwks_file = {:?}\nissuers = [\"https://idp.test/\"]\naudiences = [\"revgate\"]",
            path.display().to_string()
        ))
        .spawn();
    (gw, key, dir)
}

/// A verifiable caller token for `sub`, issued `iat_ago` seconds ago.
fn signed_caller(key: &jwks::SigningKey, sub: &str, iat_ago: u64) -> String {
    let t = now();
    key.sign(&serde_json::json!({
        "sub": sub, "iss": "https://idp.test/", "aud": "revgate",
        "iat": t - iat_ago, "exp": t + 600,
    }))
}

// === terminate mode ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nylas_terminate() {
    let up = Upstream::new().spawn().await;
    let gw = terminate(&up);
    let url = format!("{}/v3/connect/revoke", gw.url);
    assert_passes(&gw, &up, "nylas-tok").await;
    let r = send(call(
        "POST",
        &format!("{url}?token=nylas-tok"),
        &[("authorization", "Bearer nyk")],
        b"",
    ))
    .await;
    assert_eq!((r.status, r.text().as_str()), (200, "{}"));
    assert_revoked(&gw, &up, "nylas-tok").await;
    assert_passes(&gw, &up, "nylas-other").await;
    // Idempotent.
    let r = send(call(
        "POST",
        &format!("{url}?token=nylas-tok"),
        &[("authorization", "Bearer nyk")],
        b"",
    ))
    .await;
    assert_eq!(r.status, 200);

    // Errors: the four documented fields, never the token.
    let r = send(call("POST", &url, &[("authorization", "Bearer nyk")], b"")).await;
    assert_eq!(r.status, 400);
    let v = r.json();
    for f in ["error", "error_description", "error_uri", "error_code"] {
        assert!(v[f].is_string(), "{f} in {v}");
    }
    assert_eq!(v["error"], "invalid_request");
    let r = send(call("POST", &format!("{url}?token=secret-x"), &[], b"")).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "invalid_client");
    assert!(!r.text().contains("secret-x"));
    let r = send(call(
        "POST",
        &format!("{url}?token=secret-x"),
        &[("authorization", "Bearer wrong")],
        b"",
    ))
    .await;
    assert_eq!(r.status, 401);
    assert_passes(&gw, &up, "secret-x").await;
    assert_eq!(
        up.all().iter().filter(|r| r.uri.starts_with("/v3")).count(),
        0,
        "terminate mode forwarded a revoke call"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onelogin_terminate_with_the_documented_bodies() {
    let up = Upstream::new().spawn().await;
    let gw = terminate(&up);
    let url = format!("{}/auth/oauth2/revoke", gw.url);
    let auth = ("authorization", "client_id:cid, client_secret:csecret");
    let json = ("content-type", "application/json");
    let r = send(call(
        "POST",
        &url,
        &[auth, json],
        br#"{"access_token":"ol-tok"}"#,
    ))
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.text(),
        r#"{"status":{"error":false,"code":200,"type":"success","message":"Success"}}"#
    );
    assert_revoked(&gw, &up, "ol-tok").await;
    // charset parameter is still JSON.
    let r = send(call(
        "POST",
        &url,
        &[auth, ("content-type", "application/json; charset=utf-8")],
        br#"{"access_token":"ol-2"}"#,
    ))
    .await;
    assert_eq!(r.status, 200);
    assert_revoked(&gw, &up, "ol-2").await;

    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a [u8], u16, &'a str);
    let cases: &[Case] = &[
        (
            "POST",
            &[auth, ("content-type", "text/plain")],
            br#"{"access_token":"x"}"#,
            400,
            r#"{"status":{"error":true,"code":400,"type":"bad request","message":"Content Type is not specified or specified incorrectly. Content-Type header must be set to application/json"}}"#,
        ),
        (
            "POST",
            &[auth],
            br#"{"access_token":"x"}"#,
            400,
            r#"{"status":{"error":true,"code":400,"type":"bad request","message":"Content Type is not specified or specified incorrectly. Content-Type header must be set to application/json"}}"#,
        ),
        (
            "POST",
            &[auth, json],
            br#"{}"#,
            400,
            r#"{"status":{"error":true,"code":400,"type":"bad request","message":"Access Token Missing"}}"#,
        ),
        (
            "POST",
            &[auth, json],
            br#"{"access_token": 12"#,
            400,
            r#"{"status":{"error":true,"code":400,"type":"bad request","message":"Access Token Missing"}}"#,
        ),
        (
            "POST",
            &[auth, json],
            b"\xff\xfe",
            400,
            r#"{"status":{"error":true,"code":400,"type":"bad request","message":"Access Token Missing"}}"#,
        ),
        (
            "POST",
            &[json],
            br#"{"access_token":"x"}"#,
            400,
            r#"{"status":{"error":true,"code":400,"type":"bad request","message":"The authorization information is missing"}}"#,
        ),
        (
            "POST",
            &[("authorization", "client_id=cid"), json],
            br#"{"access_token":"x"}"#,
            400,
            r#"{"status":{"error":true,"code":400,"type":"bad request","message":"The authorization information is missing"}}"#,
        ),
        (
            "POST",
            &[("authorization", "client_id:cid, client_secret:nope"), json],
            br#"{"access_token":"x"}"#,
            401,
            r#"{"status":{"error":true,"code":401,"type":"Unauthorized","message":"Authentication Failure"}}"#,
        ),
        (
            "GET",
            &[auth, json],
            b"",
            404,
            r#"{"status":{"error":true,"code":404,"type":"not found","message":"No Route Exists"}}"#,
        ),
    ];
    for (method, headers, body, status, want) in cases {
        let r = send(call(method, &url, headers, body)).await;
        assert_eq!(
            (r.status, r.text().as_str()),
            (*status, *want),
            "{method} {headers:?} {:?}",
            String::from_utf8_lossy(body)
        );
    }
    assert_passes(&gw, &up, "x").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn langsmith_terminate_revokes_the_current_users_scope() {
    let up = Upstream::new().spawn().await;
    let (gw, key, _jwks) = terminate_verified(&up);
    let url = format!("{}/v2/auth/tokens", gw.url);
    let t0 = now();
    let mine = jwt(&serde_json::json!({"sub": "u1", "provider": "github", "iat": t0 - 60}));
    let my_other_provider =
        jwt(&serde_json::json!({"sub": "u1", "provider": "gitlab", "iat": t0 - 60}));
    let theirs = jwt(&serde_json::json!({"sub": "u2", "provider": "github", "iat": t0 - 60}));
    let caller = signed_caller(&key, "u1", 5);
    let auth = format!("Bearer {caller}");
    // The same claims unsigned identify no one (see tests/verify.rs).
    let forged = format!(
        "Bearer {}",
        jwt(
            &serde_json::json!({"sub": "u1", "iss": "https://idp.test/", "aud": "revgate", "exp": t0 + 600})
        )
    );
    let r = send(call(
        "DELETE",
        &format!("{url}?provider_id=github"),
        &[("authorization", &forged)],
        b"",
    ))
    .await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (401, r#"{"detail":"Not authenticated"}"#)
    );
    assert_passes(&gw, &up, &mine).await;
    let r = send(call(
        "DELETE",
        &format!("{url}?provider_id=github"),
        &[("authorization", &auth)],
        b"",
    ))
    .await;
    // What langchain-auth's `revoke_tokens` reads back (src/dialect/langsmith.rs).
    assert_eq!(
        (r.status, r.text().as_str()),
        (
            200,
            r#"{"message":"Tokens revoked","provider_id":"github"}"#
        )
    );
    assert_revoked(&gw, &up, &mine).await;
    assert_passes(&gw, &up, &my_other_provider).await;
    assert_passes(&gw, &up, &theirs).await;
    let fresh = jwt(&serde_json::json!({"sub": "u1", "provider": "github", "iat": now() + 5}));
    assert_passes(&gw, &up, &fresh).await;

    let r = send(call("DELETE", &url, &[("authorization", &auth)], b"")).await;
    assert_eq!(r.status, 422);
    assert_eq!(
        r.text(),
        r#"{"detail":[{"loc":["query","provider_id"],"msg":"Field required","type":"missing"}]}"#
    );
    let r = send(call(
        "DELETE",
        &format!("{url}?provider_id=github"),
        &[],
        b"",
    ))
    .await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (401, r#"{"detail":"Not authenticated"}"#)
    );
    let opaque = send(call(
        "DELETE",
        &format!("{url}?provider_id=github"),
        &[("authorization", "Bearer opaque")],
        b"",
    ))
    .await;
    assert_eq!(opaque.status, 401, "an opaque token names no user");
    // Twice is one rule.
    send(call(
        "DELETE",
        &format!("{url}?provider_id=github"),
        &[("authorization", &auth)],
        b"",
    ))
    .await;
    let scopes = fetch(&format!("{}/admin/v1/scopes", gw.admin_url), &[]).await;
    assert_eq!(scopes.json()["scopes"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codegen_terminate_revokes_the_users_org_scope() {
    let up = Upstream::new().spawn().await;
    let (gw, key, _jwks) = terminate_verified(&up);
    let url = format!("{}/v1/oauth/tokens/revoke", gw.url);
    let t0 = now();
    let caller = signed_caller(&key, "dev", 5);
    let auth = format!("Bearer {caller}");
    let r = send(call(
        "POST",
        &format!("{url}?provider=slack&org_id=7"),
        &[("authorization", &auth)],
        b"",
    ))
    .await;
    assert_eq!((r.status, r.text().as_str()), (200, "{}"));
    let in_org =
        jwt(&serde_json::json!({"sub": "dev", "org_id": 7, "provider": "slack", "iat": t0 - 60}));
    let other_org =
        jwt(&serde_json::json!({"sub": "dev", "org_id": 8, "provider": "slack", "iat": t0 - 60}));
    assert_revoked(&gw, &up, &in_org).await;
    assert_passes(&gw, &up, &other_org).await;

    let missing_both = send(call("POST", &url, &[("authorization", &auth)], b"")).await;
    assert_eq!(missing_both.status, 422);
    assert_eq!(
        missing_both.text(),
        r#"{"detail":[{"loc":["query","provider"],"msg":"Field required","type":"missing"},{"loc":["query","org_id"],"msg":"Field required","type":"missing"}]}"#
    );
    let bad_int = send(call(
        "POST",
        &format!("{url}?provider=slack&org_id=seven"),
        &[("authorization", &auth)],
        b"",
    ))
    .await;
    assert_eq!(bad_int.status, 422);
    let v = bad_int.json();
    assert_eq!(v["detail"][0]["type"], "int_parsing");
    assert_eq!(
        v["detail"][0]["loc"],
        serde_json::json!(["query", "org_id"])
    );
    assert_eq!(
        v["detail"][0]["msg"],
        "Input should be a valid integer, unable to parse string as an integer"
    );
    assert_eq!(v["detail"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc7009_terminate() {
    let up = Upstream::new().spawn().await;
    let gw = Gateway::new()
        .upstream(&up.url)
        .arg("--revoke-mode")
        .arg("terminate")
        .toml("[revoke]\nmax_body_bytes = 1024")
        .spawn();
    let url = format!("{}/oauth/revoke", gw.url);
    let form = ("content-type", "application/x-www-form-urlencoded");
    let r = send(call(
        "POST",
        &url,
        &[form],
        b"token=rfc-tok&token_type_hint=access_token",
    ))
    .await;
    assert_eq!((r.status, r.text().as_str()), (200, ""));
    assert_revoked(&gw, &up, "rfc-tok").await;
    // Unknown or already revoked: 200 too.
    assert_eq!(
        send(call("POST", &url, &[form], b"token=rfc-tok"))
            .await
            .status,
        200
    );
    assert_eq!(
        send(call("POST", &url, &[form], b"token=never-seen"))
            .await
            .status,
        200
    );
    // Percent-encoding is decoded before fingerprinting.
    assert_eq!(
        send(call("POST", &url, &[form], b"token=a%2Fb"))
            .await
            .status,
        200
    );
    assert_revoked(&gw, &up, "a/b").await;

    let r = send(call("POST", &url, &[form], b"token_type_hint=access_token")).await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (400, r#"{"error":"invalid_request"}"#)
    );
    let r = send(call("POST", &url, &[form], b"token=a&token=b")).await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (400, r#"{"error":"invalid_request"}"#)
    );
    let r = send(call(
        "POST",
        &url,
        &[("content-type", "application/json")],
        br#"{"token":"x"}"#,
    ))
    .await;
    assert_eq!(r.status, 415);
    let big = format!("token={}", "x".repeat(4096));
    let r = send(call("POST", &url, &[form], big.as_bytes())).await;
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["error"], "invalid_request");
    assert_eq!(
        up.hits(),
        0,
        "terminate mode answered every call itself; revoked tokens never reached the upstream"
    );
}

// === forward mode ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_mode_passes_the_call_byte_identical_and_applies_on_2xx() {
    let up = Upstream::new().spawn().await;
    let gw = Gateway::new().upstream(&up.url).spawn();
    let body = br#"{"access_token":"fwd-ol",  "extra": [1,2]}"#;
    let headers = [
        ("authorization", "client_id:c, client_secret:s"),
        ("content-type", "application/json"),
        ("x-request-id", "abc-123"),
    ];
    let r = send(call(
        "POST",
        &format!("{}/auth/oauth2/revoke?x=%2F", gw.url),
        &headers,
        body,
    ))
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("x-upstream"),
        Some("1"),
        "the upstream's answer comes back"
    );
    let got = up.last().unwrap();
    assert_eq!(got.method, "POST");
    assert_eq!(got.uri, "/auth/oauth2/revoke?x=%2F");
    assert_eq!(&got.body[..], &body[..]);
    for (k, v) in headers {
        assert_eq!(got.headers[k], v, "{k}");
    }
    assert_revoked(&gw, &up, "fwd-ol").await;

    // Nylas and RFC 7009 in forward mode.
    send(call(
        "POST",
        &format!("{}/v3/connect/revoke?token=fwd-ny", gw.url),
        &[("authorization", "Bearer k")],
        b"",
    ))
    .await;
    assert_eq!(up.last().unwrap().uri, "/v3/connect/revoke?token=fwd-ny");
    assert_revoked(&gw, &up, "fwd-ny").await;
    let form = b"token=fwd-rfc";
    send(call(
        "POST",
        &format!("{}/oauth/revoke", gw.url),
        &[("content-type", "application/x-www-form-urlencoded")],
        form,
    ))
    .await;
    assert_eq!(&up.last().unwrap().body[..], form);
    assert_revoked(&gw, &up, "fwd-rfc").await;

    // LangSmith forward: applied with the caller's subject.
    let caller = jwt(&serde_json::json!({"sub": "fw-user"}));
    send(call(
        "DELETE",
        &format!("{}/v2/auth/tokens?provider_id=gh", gw.url),
        &[("authorization", &format!("Bearer {caller}"))],
        b"",
    ))
    .await;
    let victim = jwt(&serde_json::json!({"sub": "fw-user", "provider": "gh", "iat": now() - 30}));
    assert_revoked(&gw, &up, &victim).await;

    // Unidentified user: forwarded, nothing applied, a warning.
    let hits = up.hits();
    let r = send(call(
        "POST",
        &format!("{}/v1/oauth/tokens/revoke?provider=p&org_id=1", gw.url),
        &[],
        b"",
    ))
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(up.hits(), hits + 1);
    assert_eq!(
        fetch(&format!("{}/admin/v1/scopes", gw.admin_url), &[])
            .await
            .json()["scopes"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert!(gw.logs().contains("could not be identified"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_mode_applies_nothing_when_the_upstream_refuses() {
    for status in [400u16, 401, 500, 503] {
        let up = Upstream::new().respond(status).spawn().await;
        let gw = Gateway::new().upstream(&up.url).spawn();
        let r = send(call(
            "POST",
            &format!("{}/oauth/revoke", gw.url),
            &[("content-type", "application/x-www-form-urlencoded")],
            b"token=kept",
        ))
        .await;
        assert_eq!(r.status, status, "the upstream's answer is passed back");
        let r = send(call(
            "POST",
            &format!("{}/v3/connect/revoke?token=kept", gw.url),
            &[("authorization", "Bearer k")],
            b"",
        ))
        .await;
        assert_eq!(r.status, status);
        // The token was not revoked: the request reaches the upstream (which
        // answers its configured status), not the gateway's 401.
        let hits = up.hits();
        let r = get_bearer(&format!("{}/data", gw.url), "kept").await;
        assert_eq!(r.status, status);
        assert_eq!(up.hits(), hits + 1);
        let look = post_json(
            &format!("{}/admin/v1/revocations/lookup", gw.admin_url),
            &serde_json::json!({"token": "kept"}),
        )
        .await;
        assert_eq!(look.json()["revoked"], false);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dialects_can_be_moved_disabled_and_moded_separately() {
    let up = Upstream::new().spawn().await;
    let gw = Gateway::new()
        .upstream(&up.url)
        .toml("[revoke.rfc7009]\npath = \"/custom/revoke\"\nmode = \"terminate\"\n[revoke.nylas]\nenabled = false")
        .spawn();
    let form = ("content-type", "application/x-www-form-urlencoded");
    let r = send(call(
        "POST",
        &format!("{}/custom/revoke", gw.url),
        &[form],
        b"token=moved",
    ))
    .await;
    assert_eq!(r.status, 200);
    assert_revoked(&gw, &up, "moved").await;
    // The old path is an ordinary request now.
    let hits = up.hits();
    send(call(
        "POST",
        &format!("{}/oauth/revoke", gw.url),
        &[form],
        b"token=plain",
    ))
    .await;
    assert_eq!(up.hits(), hits + 1);
    assert_passes(&gw, &up, "plain").await;
    // Nylas disabled: proxied, nothing applied.
    send(call(
        "POST",
        &format!("{}/v3/connect/revoke?token=ny", gw.url),
        &[("authorization", "Bearer k")],
        b"",
    ))
    .await;
    assert_passes(&gw, &up, "ny").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_methods_on_a_revoke_path_are_judged_like_any_request() {
    // Forward mode: a GET on a revoke path is an ordinary request.
    let up = Upstream::new().spawn().await;
    let gw = Gateway::new().upstream(&up.url).spawn();
    admin_revoke(&gw, "r1").await;
    for path in [
        "/v2/auth/tokens",
        "/oauth/revoke?x=1",
        "/v3/connect/revoke?token=zzz",
        "/auth/oauth2/revoke",
    ] {
        let hits = up.hits();
        let r = get_bearer(&format!("{}{path}", gw.url), "r1").await;
        assert_eq!((r.status, r.text().as_str()), (401, REVOKED_BODY), "{path}");
        assert_eq!(
            up.hits(),
            hits,
            "{path}: a revoked token reached the upstream"
        );
        // A valid token's GET is forwarded and revokes nothing.
        assert_eq!(
            get_bearer(&format!("{}{path}", gw.url), "fine")
                .await
                .status,
            200,
            "{path}"
        );
    }
    assert_passes(&gw, &up, "zzz").await;

    // Terminate mode: judged first, then the vendor's wrong-method answer.
    let up = Upstream::new().spawn().await;
    let gw = terminate(&up);
    admin_revoke(&gw, "r2").await;
    let r = get_bearer(&format!("{}/oauth/revoke", gw.url), "r2").await;
    assert_eq!(r.status, 401);
    let r = get_bearer(&format!("{}/oauth/revoke", gw.url), "fine").await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("POST"));
    assert_eq!(r.json()["error"], "invalid_request");
    let r = get_bearer(&format!("{}/v2/auth/tokens?provider_id=x", gw.url), "fine").await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (405, r#"{"detail":"Method Not Allowed"}"#)
    );
    assert_eq!(r.header("allow"), Some("DELETE"));
    assert_eq!(up.hits(), 0);
}
