//! "Revoked means revoked": every spelling, placement and parser difference
//! an attacker could use to get a revoked credential to an upstream (issue
//! 9), each against the real binary on both connection paths (the HTTP/1.1
//! fast path and hyper), proven by the upstream's counter.
//!
//! Each case first reproduced a hole in the release before the fix (run with
//! `REVGATE_TEST_BIN=<older build>` to see it fail).

mod support;

use std::time::Duration;

use support::jwks::{respellings, SigningKey};
use support::*;

fn body_of(resp: &[u8]) -> String {
    let text = String::from_utf8_lossy(resp);
    text.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

/// Sends a raw request; asserts it was refused with `status` and that the
/// upstream saw nothing more.
fn assert_refused(gw: &RunningGateway, up: &RunningUpstream, req: &[u8], status: u16, what: &str) {
    let before = up.hits();
    let resp = raw_http(gw.addr, req);
    assert_eq!(
        status_of(&resp),
        status,
        "{what}: {}",
        String::from_utf8_lossy(&resp)
    );
    if status == 401 {
        assert_eq!(body_of(&resp), REVOKED_BODY, "{what}");
    }
    assert_eq!(up.hits(), before, "{what}: reached the upstream");
}

fn get(path: &str, extra: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n{extra}\r\n").into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_encoded_and_re_signed_jwts_are_the_same_revoked_token() {
    let now = now();
    for (path, toml) in PATHS {
        let up = Upstream::new().spawn().await;
        let gw = Gateway::new().upstream(&up.url).toml(toml).spawn();
        for signer in [
            SigningKey::es256("k1"),
            SigningKey::es384("k1"),
            SigningKey::rsa('a', "k1", jsonwebtoken::Algorithm::RS256),
        ] {
            let alg = format!("{:?}", signer.alg);
            let claims = serde_json::json!({"sub": "u1", "iat": now, "exp": now + 600, "alg_": alg, "p": path});
            let token = signer.sign(&claims);
            let mut variants = respellings(&token);
            variants.extend(signer.malleate(&token));
            assert!(!variants.is_empty());
            // Each variant is the same token to a lenient verifier...
            for v in &variants {
                assert_ne!(v, &token);
                assert!(signer.verifies(v), "{alg}: {v} must verify");
            }
            // ...and passes before the revocation.
            for v in variants.iter().chain([&token]) {
                let r = get_bearer(&format!("{}/a", gw.url), v).await;
                assert_eq!(r.status, 200, "{path} {alg} before: {}", r.text());
            }
            admin_revoke(&gw, &token).await;
            for v in variants.iter().chain([&token]) {
                let extra = format!("authorization: Bearer {v}\r\n");
                assert_refused(
                    &gw,
                    &up,
                    &get("/a", &extra),
                    401,
                    &format!("{path} {alg} {v}"),
                );
                assert_refused(
                    &gw,
                    &up,
                    &get(&format!("/a?access_token={v}"), ""),
                    401,
                    &format!("{path} {alg} query {v}"),
                );
            }
            // Revoking a variant revokes the original too.
            let other =
                signer.sign(&serde_json::json!({"sub": "u2", "iat": now, "p": path, "a": alg}));
            let other_variant = signer
                .malleate(&other)
                .unwrap_or_else(|| respellings(&other)[0].clone());
            admin_revoke(&gw, &other_variant).await;
            let extra = format!("authorization: Bearer {other}\r\n");
            assert_refused(
                &gw,
                &up,
                &get("/a", &extra),
                401,
                &format!("{path} {alg} original of a revoked variant"),
            );
        }
        // Control: a token of the same signer and shape that was never revoked passes.
        let fresh =
            SigningKey::es256("k1").sign(&serde_json::json!({"sub": "u1", "iat": now, "n": 3}));
        assert_eq!(
            get_bearer(&format!("{}/a", gw.url), &fresh).await.status,
            200,
            "{path}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_through_rfc7009_names_the_jws_not_its_spelling() {
    let up = Upstream::new().spawn().await;
    let gw = Gateway::new()
        .upstream(&up.url)
        .toml("[revoke]\nmode = \"terminate\"\n")
        .spawn();
    let signer = SigningKey::es256("k1");
    let token = signer.sign(&serde_json::json!({"sub": "u1", "iat": now()}));
    let r = send(
        http::Request::post(format!("{}/oauth/revoke", gw.url))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(http_body_util::Full::new(bytes::Bytes::from(format!(
                "token={}",
                signer.malleate(&token).unwrap()
            ))))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let extra = format!("authorization: Bearer {token}\r\n");
    assert_refused(
        &gw,
        &up,
        &get("/a", &extra),
        401,
        "original after its n-s twin was revoked",
    );
    assert_eq!(up.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_spellings_servers_accept_are_judged_or_refused() {
    for (path, toml) in PATHS {
        let up = Upstream::new().spawn().await;
        let gw = Gateway::new().upstream(&up.url).toml(toml).spawn();
        admin_revoke(&gw, "tok-r").await;
        let cases: &[(&[u8], u16)] = &[
            (b"Bearer\ttok-r", 401),
            (b"Bearer \t tok-r \t", 401),
            (b"bEaReR tok-r", 401),
            (b"Token tok-r", 401),
            (b"JWT tok-r", 401),
            (b"tok-r", 401),
            (b"Bearer\xa0tok-r", 400),
            (b"BearerX tok-r", 400),
            (b"Bearertok-r", 400),
            (b"Bearer tok-r,tok-r", 400),
            (b"Bearer tok-r x", 400),
        ];
        for (value, status) in cases {
            let mut req =
                b"GET /a HTTP/1.1\r\nhost: x\r\nconnection: close\r\nauthorization: ".to_vec();
            req.extend_from_slice(value);
            req.extend_from_slice(b"\r\n\r\n");
            assert_refused(
                &gw,
                &up,
                &req,
                *status,
                &format!("{path} {:?}", String::from_utf8_lossy(value)),
            );
        }
        // Controls: Digest's auth-params are not a token; an unrevoked token passes.
        for value in [
            r#"Digest username="u", realm="r", nonce="n", uri="/a", response="0""#,
            "Bearer\ttok-ok",
        ] {
            let resp = raw_http(gw.addr, &get("/a", &format!("authorization: {value}\r\n")));
            assert_eq!(status_of(&resp), 200, "{path} {value}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_names_that_decode_to_access_token_are_judged() {
    for (path, toml) in PATHS {
        let up = Upstream::new().spawn().await;
        let gw = Gateway::new().upstream(&up.url).toml(toml).spawn();
        admin_revoke(&gw, "tok-r").await;
        for q in [
            "acc%65ss_token=tok-r",
            "%61ccess%5ftoken=tok-r",
            "ACCESS_TOKEN=tok-r",
            "access.token=tok-r",
            "access+token=tok-r",
            "access[token=tok-r",
            "access_token[]=tok-r",
            "x=1;access_token=tok-r",
            "access_token=tok%2Dr",
        ] {
            assert_refused(
                &gw,
                &up,
                &get(&format!("/a?{q}"), ""),
                401,
                &format!("{path} {q}"),
            );
        }
        for q in ["access_token=tok-r;x=1", "access_token=a&ACCESS_TOKEN=b"] {
            assert_refused(
                &gw,
                &up,
                &get(&format!("/a?{q}"), ""),
                400,
                &format!("{path} {q}"),
            );
        }
        let resp = raw_http(gw.addr, &get("/a?access_tokens=tok-r&x=access_token", ""));
        assert_eq!(
            status_of(&resp),
            200,
            "{path}: other names are not the token"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_token_in_a_form_body_is_judged_and_an_unjudgeable_one_refused() {
    for (path, toml) in PATHS {
        let up = Upstream::new().spawn().await;
        let gw = Gateway::new()
            .upstream(&up.url)
            .toml(&format!("{toml}[tokens]\nform_body_limit = 1024\n"))
            .spawn();
        admin_revoke(&gw, "tok-r").await;
        let post = |ctype: &str, body: &str, extra: &str| {
            format!(
                "POST /a HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\n{extra}\r\n{body}",
                body.len()
            )
            .into_bytes()
        };
        let form = "application/x-www-form-urlencoded";
        assert_refused(
            &gw,
            &up,
            &post(form, "a=1&access_token=tok-r", ""),
            401,
            path,
        );
        assert_refused(
            &gw,
            &up,
            &post(
                "Application/X-WWW-Form-Urlencoded; charset=UTF-8",
                "access_token=tok-r",
                "",
            ),
            401,
            path,
        );
        let chunked = format!(
            "POST /a HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: {form}\r\ntransfer-encoding: chunked\r\n\r\n6\r\naccess\r\n10\r\n_token=tok-r&b=2\r\n0\r\n\r\n"
        );
        assert_refused(
            &gw,
            &up,
            chunked.as_bytes(),
            401,
            &format!("{path} chunked"),
        );
        // Two methods at once (RFC 6750 §3.1), and a body too large to judge.
        assert_refused(
            &gw,
            &up,
            &post(
                form,
                "access_token=tok-r",
                "authorization: Bearer tok-ok\r\n",
            ),
            400,
            path,
        );
        let big = format!("access_token=tok-r&pad={}", "x".repeat(2000));
        let before = up.hits();
        let resp = raw_http(
            gw.addr,
            &post(form, &big, "authorization: Bearer tok-ok\r\n"),
        );
        assert_eq!(
            status_of(&resp),
            413,
            "{path}: {}",
            String::from_utf8_lossy(&resp)
        );
        assert_eq!(
            body_of(&resp),
            r#"{"error":"invalid_request","error_description":"The form body is too large to be checked for an access token"}"#
        );
        assert_eq!(up.hits(), before);
        // Controls: a form with an unrevoked token, and a small form without one, pass whole.
        let resp = raw_http(gw.addr, &post(form, "access_token=tok-ok&x=%41", ""));
        assert_eq!(status_of(&resp), 200, "{path}");
        assert_eq!(
            up.last().unwrap().body.as_ref(),
            b"access_token=tok-ok&x=%41"
        );
        let resp = raw_http(gw.addr, &post("text/plain", "access_token=tok-r", ""));
        assert_eq!(status_of(&resp), 200, "{path}: not a form");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_headers_are_judged_under_every_cgi_spelling() {
    for (path, toml) in PATHS {
        let up = Upstream::new().spawn().await;
        let gw = Gateway::new()
            .upstream(&up.url)
            .toml(&format!(
                "{toml}[tokens]\napi_key_headers = [\"x-api-key\"]\n"
            ))
            .spawn();
        admin_revoke(&gw, "key-r").await;
        for name in ["X_Api_Key", "x_api_key", "X-API_KEY", "x-api-key"] {
            assert_refused(
                &gw,
                &up,
                &get("/a", &format!("{name}: key-r\r\n")),
                401,
                &format!("{path} {name}"),
            );
        }
        assert_refused(
            &gw,
            &up,
            &get("/a", "x-api-key: key-ok\r\nx_api_key: key-r\r\n"),
            400,
            path,
        );
        let resp = raw_http(gw.addr, &get("/a", "x_api_key: key-ok\r\n"));
        assert_eq!(status_of(&resp), 200, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_jwt_payload_does_not_hide_its_subject_from_a_scope_rule() {
    for (path, toml) in PATHS {
        let up = Upstream::new().spawn().await;
        let gw = Gateway::new().upstream(&up.url).toml(toml).spawn();
        let token = jwt(
            &serde_json::json!({"sub": "victim", "iat": now() - 10, "pad": "x".repeat(20 * 1024)}),
        );
        assert!(token.len() > 16 * 1024 * 4 / 3);
        assert_eq!(
            get_bearer(&format!("{}/a", gw.url), &token).await.status,
            200
        );
        let r = post_json(
            &format!("{}/admin/v1/revocations", gw.admin_url),
            &serde_json::json!({"scope": {"sub": "victim"}}),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let extra = format!("authorization: Bearer {token}\r\n");
        assert_refused(&gw, &up, &get("/a", &extra), 401, path);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_trailers_never_reach_the_upstream() {
    for (path, toml) in PATHS {
        let up = Upstream::new().spawn().await;
        let gw = Gateway::new().upstream(&up.url).toml(toml).spawn();
        admin_revoke(&gw, "tok-r").await;
        let req = b"POST /a HTTP/1.1\r\nhost: x\r\nconnection: close\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nauthorization: Bearer tok-r\r\nx-api-key: tok-r\r\n\r\n";
        let resp = raw_http(gw.addr, req);
        assert_eq!(
            status_of(&resp),
            200,
            "{path}: {}",
            String::from_utf8_lossy(&resp)
        );
        let seen = up.last().unwrap();
        assert_eq!(seen.body.as_ref(), b"hello", "{path}");
        assert!(
            seen.trailers.as_ref().is_none_or(|t| t.is_empty()),
            "{path}: trailers relayed: {:?}",
            seen.trailers
        );
        assert!(!seen.headers.contains_key("authorization"), "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_revoke_calls_are_judged_by_the_callers_own_credential() {
    let up = Upstream::new().spawn().await;
    let gw = Gateway::new().upstream(&up.url).spawn();
    admin_revoke(&gw, "caller-r").await;
    let call = |auth: &str, token: &str| {
        let body = format!("token={token}");
        format!(
            "POST /oauth/revoke HTTP/1.1\r\nhost: x\r\nconnection: close\r\nauthorization: Bearer {auth}\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    };
    // Nylas: the caller's credential in the header, the token in the query.
    let nylas = |auth: &str| {
        format!("POST /v3/connect/revoke?token=t1 HTTP/1.1\r\nhost: x\r\nconnection: close\r\nauthorization: Bearer {auth}\r\ncontent-length: 0\r\n\r\n").into_bytes()
    };
    assert_refused(
        &gw,
        &up,
        &call("caller-r", "t1"),
        401,
        "rfc7009 with a revoked caller",
    );
    assert_refused(
        &gw,
        &up,
        &nylas("caller-r"),
        401,
        "nylas with a revoked caller",
    );
    // Control: a caller in good standing is forwarded, and its revocation applied.
    let resp = raw_http(gw.addr, &call("caller-ok", "t2"));
    assert_eq!(status_of(&resp), 200, "{}", String::from_utf8_lossy(&resp));
    assert_eq!(up.hits(), 1);
    assert!(
        eventually(Duration::from_secs(5), async || {
            get_bearer(&format!("{}/a", gw.url), "t2").await.status == 401
        })
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_by_jti_matches_the_claims_of_any_spelling() {
    for (path, toml) in PATHS {
        let up = Upstream::new().spawn().await;
        let gw = Gateway::new()
            .upstream(&up.url)
            .toml(&format!("{toml}[tokens]\nrevoke_by_jti = true\n"))
            .spawn();
        let signer = SigningKey::es256("k1");
        let idp_a = signer.sign(&serde_json::json!({"jti": "j-1", "iss": "https://a", "sub": "u"}));
        let idp_b = signer.sign(&serde_json::json!({"jti": "j-1", "iss": "https://b", "sub": "u"}));
        let any = signer.sign(&serde_json::json!({"jti": "j-2", "iss": "https://c"}));
        let revoke = |body: serde_json::Value| {
            let url = format!("{}/admin/v1/revocations", gw.admin_url);
            async move { post_json(&url, &body).await }
        };
        let r = revoke(serde_json::json!({"jti": "j-1", "iss": "https://a"})).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(!r.text().contains("j-1"), "answers name fingerprints only");
        let r = revoke(serde_json::json!({"jti": "j-2"})).await;
        assert_eq!(r.status, 200, "{}", r.text());
        for t in [&idp_a, &signer.malleate(&idp_a).unwrap(), &any] {
            let extra = format!("authorization: Bearer {t}\r\n");
            assert_refused(&gw, &up, &get("/a", &extra), 401, &format!("{path} {t}"));
        }
        // The same jti from another issuer is another token.
        assert_eq!(
            get_bearer(&format!("{}/a", gw.url), &idp_b).await.status,
            200,
            "{path}"
        );
        // Looked up and removed by jti, like a token.
        let lookup = post_json(
            &format!("{}/admin/v1/revocations/lookup", gw.admin_url),
            &serde_json::json!({"jti": "j-2"}),
        )
        .await;
        assert_eq!(lookup.status, 200);
        assert_eq!(lookup.json()["revoked"], true);
        let del = send(
            http::Request::delete(format!("{}/admin/v1/revocations", gw.admin_url))
                .body(http_body_util::Full::new(bytes::Bytes::from(
                    r#"{"jti":"j-2"}"#,
                )))
                .unwrap(),
        )
        .await;
        assert_eq!(del.status, 200, "{}", del.text());
        assert_eq!(
            get_bearer(&format!("{}/a", gw.url), &any).await.status,
            200,
            "{path}"
        );
        // Bad input gets a clear answer.
        for (body, want) in [
            (serde_json::json!({"iss": "https://a"}), "iss goes with jti"),
            (
                serde_json::json!({"jti": ""}),
                "jti (and iss, when given) must be non-empty",
            ),
            (
                serde_json::json!({"jti": "x", "token": "t"}),
                "give exactly one of token, fingerprint, scope or jti",
            ),
        ] {
            let r = revoke(body).await;
            assert_eq!(r.status, 400);
            assert_eq!(r.json()["error_description"], want);
        }
    }
    // Off by default: refused, not silently ignored.
    let up = Upstream::new().spawn().await;
    let gw = Gateway::new().upstream(&up.url).spawn();
    let r = post_json(
        &format!("{}/admin/v1/revocations", gw.admin_url),
        &serde_json::json!({"jti": "j-1"}),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["error_description"],
        "revocation by jti is off: set tokens.revoke_by_jti = true on every instance"
    );
}
