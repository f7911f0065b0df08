//! Authenticated revokers (issue 9, item 4) through the real binary: in
//! terminate mode the LangSmith and Codegen endpoints revoke "every token of
//! the current user", so the current user must come from a JWT verified
//! against the JWKS (served by a real HTTP server here, or a file) or from
//! trusted identity headers. Every forgery gets the vendor's 401 and revokes
//! nothing, proven by the victim's token still reaching the upstream (its
//! counter) and the admin API listing no scope rule.

mod support;

use std::time::Duration;

use jsonwebtoken::Algorithm;
use support::jwks::{hs256, jwks, unsigned, JwksServer, SigningKey};
use support::*;

const NOT_AUTHENTICATED: &str = r#"{"detail":"Not authenticated"}"#;
const ISS: &str = "https://idp.test/";
const AUD: &str = "revgate-tests";

/// The claims of a caller's token that verification accepts.
fn caller(sub: &str) -> serde_json::Value {
    let t = now();
    serde_json::json!({"sub": sub, "iss": ISS, "aud": AUD, "iat": t - 5, "exp": t + 600})
}

/// A victim's token (judged by peeked claims, so it need not be signed).
fn victim(sub: &str) -> String {
    jwt(&serde_json::json!({"sub": sub, "org_id": 7, "provider": "github", "iat": now() - 60}))
}

fn verify_toml(source: &str, extra: &str) -> String {
    format!(
        "[tokens.verify]\n{source}\nissuers = [\"{ISS}\"]\naudiences = [\"{AUD}\"]\nleeway = \"30s\"\n{extra}"
    )
}

fn terminate_with(up: &RunningUpstream, toml: &str) -> RunningGateway {
    Gateway::new()
        .upstream(&up.url)
        .arg("--revoke-mode")
        .arg("terminate")
        .toml(toml)
        .spawn()
}

/// The two scope dialects: (method, URL of a well-formed call).
fn scope_calls(gw: &RunningGateway) -> [(&'static str, String); 2] {
    [
        (
            "DELETE",
            format!("{}/v2/auth/tokens?provider_id=github", gw.url),
        ),
        (
            "POST",
            format!("{}/v1/oauth/tokens/revoke?provider=github&org_id=7", gw.url),
        ),
    ]
}

/// LangSmith's success answer to `provider_id=github` (what
/// `langchain-auth` reads back; src/dialect/langsmith.rs).
const LANGSMITH_OK: &str = r#"{"message":"Tokens revoked","provider_id":"github"}"#;

/// The success body of a `scope_calls` call: LangSmith's (DELETE) or
/// Codegen's (POST, `{}`).
fn ok_body(method: &str) -> &'static str {
    if method == "DELETE" {
        LANGSMITH_OK
    } else {
        "{}"
    }
}

async fn revoke_as(method: &str, url: &str, token: &str) -> Got {
    let auth = format!("Bearer {token}");
    send(call(method, url, &[("authorization", &auth)], b"")).await
}

async fn scopes(gw: &RunningGateway) -> Vec<serde_json::Value> {
    let r = fetch(&format!("{}/admin/v1/scopes", gw.admin_url), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["scopes"].as_array().unwrap().clone()
}

/// Every call is refused with the vendor's 401 on both dialects, and
/// nothing is revoked.
async fn assert_refused(gw: &RunningGateway, up: &RunningUpstream, what: &str, token: &str) {
    let before = scopes(gw).await;
    for (method, url) in scope_calls(gw) {
        let r = revoke_as(method, &url, token).await;
        assert_eq!(
            (r.status, r.text().as_str(), r.header("content-type")),
            (401, NOT_AUTHENTICATED, Some("application/json")),
            "{what} on {url}"
        );
    }
    let after = scopes(gw).await;
    assert_eq!(after, before, "{what}: a scope rule was recorded");
    assert!(after.iter().all(|r| r["sub"] != "victim"), "{what}");
    assert_passes(gw, up, &victim("victim")).await;
}

// === the hole, reproduced ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsigned_jwt_cannot_revoke_another_users_tokens() {
    // No [tokens.verify], no identity headers: nothing can identify a
    // terminate-mode scope revoker, least of all a hand-made token.
    let up = Upstream::new().spawn().await;
    let gw = terminate_with(&up, "");
    assert_passes(&gw, &up, &victim("victim")).await;
    assert!(scopes(&gw).await.is_empty());
    let forged = unsigned(&caller("victim"));
    assert_refused(&gw, &up, "alg none without a verifier", &forged).await;
    // The old test helper's shape: a JWT with an HS256 header and junk
    // signature.
    let junk = jwt(&caller("victim"));
    assert_refused(&gw, &up, "junk signature without a verifier", &junk).await;
    assert!(scopes(&gw).await.is_empty());
    assert!(
        gw.logs().contains("cannot identify a caller"),
        "{}",
        gw.logs()
    );
}

// === forgeries against a JWKS served over HTTP ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_expired_and_misaddressed_callers_revoke_nothing() {
    let rsa = SigningKey::rsa('a', "rsa-1", Algorithm::RS256);
    let ec = SigningKey::es256("ec-1");
    let idp = JwksServer::spawn(jwks(&[&rsa, &ec])).await;
    let up = Upstream::new().spawn().await;
    let gw = terminate_with(
        &up,
        &verify_toml(&format!("jwks_url = \"{}\"", idp.url), ""),
    );
    // The keys are loaded, so every refusal below is the token's fault.
    assert!(
        eventually(Duration::from_secs(10), async || gw
            .logs()
            .contains("JWKS loaded"))
        .await,
        "{}",
        gw.logs()
    );

    let t = now();
    let mut expired = caller("victim");
    expired["exp"] = (t - 3600).into();
    expired["iat"] = (t - 7200).into();
    let mut wrong_aud = caller("victim");
    wrong_aud["aud"] = "someone-else".into();
    let mut wrong_iss = caller("victim");
    wrong_iss["iss"] = "https://evil.test/".into();
    let mut no_exp = caller("victim");
    no_exp.as_object_mut().unwrap().remove("exp");
    let mut future = caller("victim");
    future["nbf"] = (t + 3600).into();
    let other_rsa = SigningKey::rsa('b', "rsa-1", Algorithm::RS256);
    let other_ec = SigningKey::es256("ec-1");
    let cases: Vec<(&str, String)> = vec![
        ("alg none", unsigned(&caller("victim"))),
        (
            "wrong RSA key, right kid",
            other_rsa.sign(&caller("victim")),
        ),
        ("wrong EC key, right kid", other_ec.sign(&caller("victim"))),
        ("expired", rsa.sign(&expired)),
        ("wrong aud", rsa.sign(&wrong_aud)),
        ("wrong iss", ec.sign(&wrong_iss)),
        ("no exp", rsa.sign(&no_exp)),
        ("nbf ahead", rsa.sign(&future)),
        (
            "HS256 keyed with the RSA public key",
            hs256("rsa-1", &rsa.public_bytes(), &caller("victim")),
        ),
        (
            "HS256 keyed with the EC public key",
            hs256("ec-1", &ec.public_bytes(), &caller("victim")),
        ),
        (
            "RS256 token naming the EC key",
            rsa.sign_as("ec-1", &caller("victim")),
        ),
        ("opaque token", "opaque-victim".to_string()),
    ];
    for (what, token) in &cases {
        assert_refused(&gw, &up, what, token).await;
    }
    let logs = gw.logs();
    for (_, token) in &cases {
        assert!(!logs.contains(token.as_str()), "a token was logged");
    }
    assert!(logs.contains("caller's JWT not verified"), "{logs}");
    assert!(scopes(&gw).await.is_empty());
    assert_eq!(
        idp.hits(),
        1,
        "forgeries naming known kids refetched the JWKS"
    );
    // The same gateway takes a correctly signed caller.
    let r = revoke_as(
        "DELETE",
        &scope_calls(&gw)[0].1,
        &rsa.sign(&caller("someone")),
    )
    .await;
    assert_eq!((r.status, r.text().as_str()), (200, LANGSMITH_OK));
    assert_eq!(scopes(&gw).await.len(), 1);
}

// === correctly signed callers ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256_es256_and_eddsa_callers_revoke_their_own_scope() {
    let rsa = SigningKey::rsa('a', "rsa-1", Algorithm::RS256);
    let ec = SigningKey::es256("ec-1");
    let ed = SigningKey::ed25519("ed-1");
    let ps = SigningKey::rsa('b', "rsa-pss", Algorithm::PS256);
    let idp = JwksServer::spawn(jwks(&[&rsa, &ec, &ed, &ps])).await;
    let up = Upstream::new().spawn().await;
    let gw = terminate_with(
        &up,
        &verify_toml(&format!("jwks_url = \"{}\"", idp.url), ""),
    );
    let mut expected_rules = 0;
    for (key, user) in [(&rsa, "u-rsa"), (&ec, "u-ec"), (&ed, "u-ed"), (&ps, "u-ps")] {
        for (i, (method, url)) in scope_calls(&gw).into_iter().enumerate() {
            let user = format!("{user}-{i}");
            let mine = victim(&user);
            let bystander = victim(&format!("{user}-bystander"));
            assert_passes(&gw, &up, &mine).await;
            let r = revoke_as(method, &url, &key.sign(&caller(&user))).await;
            assert_eq!(
                (r.status, r.text().as_str()),
                (200, ok_body(method)),
                "{:?} {url}",
                key.alg
            );
            expected_rules += 1;
            assert_revoked(&gw, &up, &mine).await;
            assert_passes(&gw, &up, &bystander).await;
        }
    }
    let rules = scopes(&gw).await;
    assert_eq!(rules.len(), expected_rules);
    assert!(rules
        .iter()
        .any(|r| r["sub"] == "u-ed-1" && r["org"] == "7"));
    assert_eq!(idp.hits(), 1, "every key was known from the first fetch");
}

// === key rotation and refetch limits ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_is_picked_up_without_a_restart() {
    let old = SigningKey::es256("2026-01");
    let new = SigningKey::ed25519("2026-02");
    let idp = JwksServer::spawn(jwks(&[&old])).await;
    let up = Upstream::new().spawn().await;
    let gw = terminate_with(
        &up,
        &verify_toml(
            &format!("jwks_url = \"{}\"", idp.url),
            "refresh_interval = \"1h\"\nmin_refresh_interval = \"200ms\"",
        ),
    );
    let url = &scope_calls(&gw)[0].1;
    let r = revoke_as("DELETE", url, &old.sign(&caller("before"))).await;
    assert_eq!((r.status, r.text().as_str()), (200, LANGSMITH_OK));
    // The provider rotates: the new key is published, tokens are signed with it.
    idp.set(jwks(&[&old, &new]));
    let before = idp.hits();
    // Past the minimum interval since the last fetch.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mine = victim("after");
    assert_passes(&gw, &up, &mine).await;
    let r = revoke_as("DELETE", url, &new.sign(&caller("after"))).await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, LANGSMITH_OK),
        "{}",
        gw.logs()
    );
    assert_eq!(idp.hits(), before + 1, "one refetch for the unknown kid");
    assert_revoked(&gw, &up, &mine).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spraying_unknown_kids_does_not_hammer_the_identity_provider() {
    let key = SigningKey::rsa('a', "rsa-1", Algorithm::RS256);
    let idp = JwksServer::spawn(jwks(&[&key])).await;
    let up = Upstream::new().spawn().await;
    let gw = terminate_with(
        &up,
        &verify_toml(
            &format!("jwks_url = \"{}\"", idp.url),
            "refresh_interval = \"1h\"\nmin_refresh_interval = \"1h\"",
        ),
    );
    let url = scope_calls(&gw)[0].1.clone();
    let r = revoke_as("DELETE", &url, &key.sign(&caller("legit"))).await;
    assert_eq!((r.status, r.text().as_str()), (200, LANGSMITH_OK));
    assert_eq!(idp.hits(), 1);
    // 60 calls, each naming a kid no one has published, 6 at a time.
    let mut tasks = Vec::new();
    for batch in 0..10 {
        for j in 0..6 {
            let token = key.sign_as(&format!("spray-{batch}-{j}"), &caller("victim"));
            let url = url.clone();
            tasks.push(tokio::spawn(async move {
                revoke_as("DELETE", &url, &token).await
            }));
        }
        for t in tasks.drain(..) {
            let r = t.await.unwrap();
            assert_eq!((r.status, r.text().as_str()), (401, NOT_AUTHENTICATED));
        }
    }
    assert_eq!(
        idp.hits(),
        1,
        "an unknown kid refetched within the minimum interval"
    );
    assert_eq!(scopes(&gw).await.len(), 1);
    assert_passes(&gw, &up, &victim("victim")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_jwks_refuses_scope_revokes_and_keeps_proxying() {
    let key = SigningKey::es256("ec-1");
    // A port that was free a moment ago: nothing answers there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let up = Upstream::new().spawn().await;
    let gw = terminate_with(
        &up,
        &verify_toml(
            &format!("jwks_url = \"http://{addr}/jwks.json\""),
            "fetch_timeout = \"1s\"\nmin_refresh_interval = \"1h\"\nrefresh_interval = \"1h\"",
        ),
    );
    assert_refused(
        &gw,
        &up,
        "valid token, keys never loaded",
        &key.sign(&caller("victim")),
    )
    .await;
    assert!(
        gw.logs().contains("JWKS could not be loaded"),
        "{}",
        gw.logs()
    );
    let r = fetch(&format!("{}/readyz", gw.admin_url), &[]).await;
    assert_eq!(
        r.status, 200,
        "the proxy stays ready: judging needs no keys"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwks_answer_that_is_not_200_too_large_or_not_jwks_is_not_trusted() {
    let key = SigningKey::es256("ec-1");
    let idp = JwksServer::spawn(jwks(&[&key])).await;
    idp.set_raw(500, "{}".into());
    let up = Upstream::new().spawn().await;
    let gw = terminate_with(
        &up,
        &verify_toml(
            &format!("jwks_url = \"{}\"", idp.url),
            "refresh_interval = \"1h\"\nmin_refresh_interval = \"100ms\"",
        ),
    );
    let token = key.sign(&caller("victim"));
    let big = format!(
        "{{\"keys\":[{}],\"pad\":\"{}\"}}",
        key.jwk,
        "x".repeat(2 << 20)
    );
    for (status, body, logged) in [
        (500, "{}".to_string(), "answered 500"),
        (200, big, "larger than 1048576 bytes"),
        (200, "not json".to_string(), "not a JWKS document"),
        (
            200,
            r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#.to_string(),
            "no usable signature key",
        ),
    ] {
        idp.set_raw(status, body);
        // Past the minimum interval: the unknown kid refetches.
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_refused(&gw, &up, logged, &token).await;
        assert!(gw.logs().contains(logged), "{logged}: {}", gw.logs());
    }
    idp.set(jwks(&[&key]));
    tokio::time::sleep(Duration::from_millis(150)).await;
    let mine = victim("recovered");
    let r = revoke_as(
        "DELETE",
        &scope_calls(&gw)[0].1,
        &key.sign(&caller("recovered")),
    )
    .await;
    assert_eq!((r.status, r.text().as_str()), (200, LANGSMITH_OK));
    assert_revoked(&gw, &up, &mine).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_while_the_identity_provider_is_down_keeps_the_keys() {
    let key = SigningKey::ed25519("ed-1");
    let idp = JwksServer::spawn(jwks(&[&key])).await;
    let up = Upstream::new().spawn().await;
    let gw = terminate_with(
        &up,
        &verify_toml(&format!("jwks_url = \"{}\"", idp.url), ""),
    );
    let url = scope_calls(&gw)[0].1.clone();
    let r = revoke_as("DELETE", &url, &key.sign(&caller("first"))).await;
    assert_eq!((r.status, r.text().as_str()), (200, LANGSMITH_OK));
    idp.set_raw(503, "down".into());
    let before = idp.hits();
    gw.signal("HUP");
    assert!(
        eventually(Duration::from_secs(10), async || {
            gw.logs().contains("SIGHUP: configuration reloaded") && idp.hits() > before
        })
        .await,
        "no reload, or the reloaded verifier did not fetch: {}",
        gw.logs()
    );
    let mine = victim("second");
    assert_passes(&gw, &up, &mine).await;
    let r = revoke_as("DELETE", &url, &key.sign(&caller("second"))).await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, LANGSMITH_OK),
        "{}",
        gw.logs()
    );
    assert_revoked(&gw, &up, &mine).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwks_url_is_fetched_with_the_outbound_tls_settings() {
    let key = SigningKey::rsa('b', "tls-1", Algorithm::RS384);
    let dir = tempfile::tempdir().unwrap();
    let pki = support::certs::write_pki(dir.path(), &["localhost"]);
    let idp = JwksServer::spawn_tls(jwks(&[&key]), &pki).await;
    let up = Upstream::new().spawn().await;
    let source = format!("jwks_url = \"{}\"", idp.url);
    // Trusting upstream.ca_file: the IdP's certificate verifies.
    let gw = terminate_with(
        &up,
        &format!(
            "[upstream]\nca_file = {:?}\n{}",
            pki.ca_cert.display().to_string(),
            verify_toml(&source, "")
        ),
    );
    let mine = victim("tls-user");
    let r = revoke_as(
        "DELETE",
        &scope_calls(&gw)[0].1,
        &key.sign(&caller("tls-user")),
    )
    .await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, LANGSMITH_OK),
        "{}",
        gw.logs()
    );
    assert_revoked(&gw, &up, &mine).await;
    // The system roots do not know the test CA: no keys, nothing revoked.
    let gw = terminate_with(
        &up,
        &verify_toml(
            &source,
            "min_refresh_interval = \"1h\"\nrefresh_interval = \"1h\"",
        ),
    );
    assert_refused(
        &gw,
        &up,
        "untrusted JWKS certificate",
        &key.sign(&caller("victim")),
    )
    .await;
    assert!(
        gw.logs().contains("JWKS could not be loaded"),
        "{}",
        gw.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwks_server_that_never_answers_is_cut_off_by_fetch_timeout() {
    let key = SigningKey::es256("ec-1");
    // Accepts connections (the kernel's backlog) and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let up = Upstream::new().spawn().await;
    let gw = terminate_with(
        &up,
        &verify_toml(
            &format!("jwks_url = \"http://{addr}/jwks.json\""),
            "fetch_timeout = \"300ms\"\nmin_refresh_interval = \"1h\"\nrefresh_interval = \"1h\"",
        ),
    );
    assert_refused(&gw, &up, "silent JWKS server", &key.sign(&caller("victim"))).await;
    assert!(
        eventually(Duration::from_secs(10), async || gw
            .logs()
            .contains("timed out"))
        .await,
        "{}",
        gw.logs()
    );
    drop(silent);
}

// === jwks_file and SIGHUP ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwks_file_is_read_at_start_and_on_sighup() {
    let first = SigningKey::rsa('a', "file-1", Algorithm::RS256);
    let second = SigningKey::es256("file-2");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, jwks(&[&first]).to_string()).unwrap();
    let up = Upstream::new().spawn().await;
    let gw = terminate_with(
        &up,
        &verify_toml(&format!("jwks_file = {:?}", path.display().to_string()), ""),
    );
    let url = scope_calls(&gw)[1].1.clone();
    assert_refused(
        &gw,
        &up,
        "key not in the file yet",
        &second.sign(&caller("victim")),
    )
    .await;
    let r = revoke_as("POST", &url, &first.sign(&caller("filer"))).await;
    assert_eq!((r.status, r.text().as_str()), (200, "{}"));

    std::fs::write(&path, jwks(&[&first, &second]).to_string()).unwrap();
    gw.signal("HUP");
    let mine = victim("late");
    assert_passes(&gw, &up, &mine).await;
    let token = second.sign(&caller("late"));
    assert!(
        eventually(Duration::from_secs(10), async || {
            revoke_as("POST", &url, &token).await.status == 200
        })
        .await,
        "the reloaded file's key was not accepted: {}",
        gw.logs()
    );
    assert_revoked(&gw, &up, &mine).await;

    // A file that no longer loads is a rejected configuration: the keys
    // loaded before stay.
    std::fs::write(&path, "{\"keys\": \"garbage\"}").unwrap();
    gw.signal("HUP");
    assert!(
        eventually(Duration::from_secs(10), async || {
            gw.logs().contains("tokens.verify.jwks_file")
        })
        .await,
        "{}",
        gw.logs()
    );
    let third = victim("after-bad-file");
    let r = revoke_as("POST", &url, &second.sign(&caller("after-bad-file"))).await;
    assert_eq!((r.status, r.text().as_str()), (200, "{}"));
    assert_revoked(&gw, &up, &third).await;
}

// === identity headers ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_identity_headers_identify_a_revoker() {
    let up = Upstream::new().spawn().await;
    let gw = terminate_with(&up, "[tokens.identity_headers]\nsub = \"x-auth-subject\"");
    let mine = victim("hdr-user");
    assert_passes(&gw, &up, &mine).await;
    let r = send(call(
        "POST",
        &scope_calls(&gw)[1].1,
        &[("x-auth-subject", "hdr-user")],
        b"",
    ))
    .await;
    assert_eq!((r.status, r.text().as_str()), (200, "{}"));
    assert_revoked(&gw, &up, &mine).await;
    // An unsigned JWT is no identity, header or not for someone else.
    let r = revoke_as(
        "DELETE",
        &scope_calls(&gw)[0].1,
        &unsigned(&caller("victim")),
    )
    .await;
    assert_eq!((r.status, r.text().as_str()), (401, NOT_AUTHENTICATED));
    assert_passes(&gw, &up, &victim("victim")).await;
}

// === check-config ===

#[test]
fn check_config_names_the_bad_verify_key() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("jwks.json");
    std::fs::write(
        &good,
        jwks(&[&SigningKey::rsa('a', "k", Algorithm::RS256)]).to_string(),
    )
    .unwrap();
    let not_json = dir.path().join("bad.json");
    std::fs::write(&not_json, "{\"keys\": 3}").unwrap();
    let only_hmac = dir.path().join("hmac.json");
    std::fs::write(
        &only_hmac,
        r#"{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"h"}]}"#,
    )
    .unwrap();
    let file = |p: &std::path::Path| format!("jwks_file = {:?}", p.display().to_string());
    let head = "[upstream]\nurl = \"http://127.0.0.1:1\"\n";
    let cases: Vec<(String, &str)> = vec![
        (verify_toml("", ""), "tokens.verify.jwks_url"),
        (
            verify_toml(&format!("jwks_url = \"https://i/\"\n{}", file(&good)), ""),
            "tokens.verify.jwks_url",
        ),
        (
            verify_toml("jwks_url = \"http://idp.example/jwks\"", ""),
            "tokens.verify.jwks_url",
        ),
        (
            verify_toml("jwks_url = \"ftp://idp.example/jwks\"", ""),
            "tokens.verify.jwks_url",
        ),
        (verify_toml(&file(&not_json), ""), "tokens.verify.jwks_file"),
        (
            verify_toml(&file(&only_hmac), ""),
            "tokens.verify.jwks_file",
        ),
        (
            verify_toml(&file(&dir.path().join("missing")), ""),
            "tokens.verify.jwks_file",
        ),
        (
            format!("[tokens.verify]\n{}\naudiences = [\"a\"]", file(&good)),
            "tokens.verify.issuers",
        ),
        (
            format!(
                "[tokens.verify]\n{}\nissuers = [\"i\"]\naudiences = [\"\"]",
                file(&good)
            ),
            "tokens.verify.audiences[0]",
        ),
        (
            verify_toml(&file(&good), "min_refresh_interval = \"0s\""),
            "tokens.verify.min_refresh_interval",
        ),
        (
            verify_toml(
                &file(&good),
                "min_refresh_interval = \"10m\"\nrefresh_interval = \"1m\"",
            ),
            "tokens.verify.refresh_interval",
        ),
        (
            verify_toml(&file(&good), "fetch_timeout = \"0s\""),
            "tokens.verify.fetch_timeout",
        ),
        (
            format!(
                "[tokens.verify]\n{}\nissuers = [\"i\"]\naudiences = [\"a\"]\nleeway = \"1h\"",
                file(&good)
            ),
            "tokens.verify.leeway",
        ),
    ];
    let p = dir.path().join("revgate.toml");
    let run = |toml: &str| {
        std::fs::write(&p, format!("{head}{toml}")).unwrap();
        std::process::Command::new(env!("CARGO_BIN_EXE_revgate"))
            .args(["check-config", "--config"])
            .arg(&p)
            .output()
            .unwrap()
    };
    for (toml, key) in &cases {
        let out = run(toml);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{toml}: {stderr}");
        assert!(
            stderr.contains(&format!("{key}:")),
            "{toml}: wanted {key}, got {stderr}"
        );
    }
    for ok in [
        verify_toml(&file(&good), ""),
        verify_toml(
            "jwks_url = \"https://idp.example/.well-known/jwks.json\"",
            "",
        ),
        verify_toml("jwks_url = \"http://127.0.0.1:9/jwks\"", ""),
    ] {
        let out = run(&ok);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{ok}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
