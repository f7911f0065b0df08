//! The core gateway against real processes: the revgate binary, a real
//! upstream that counts what reached it, real HTTP/1.1 and h2c clients.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_tokens_are_rejected_by_header_query_and_api_key_and_never_reach_upstream() {
    let up = Upstream::new().spawn().await;
    let gw = Gateway::new()
        .upstream(&up.url)
        .toml("[tokens]\napi_key_headers = [\"x-api-key\"]")
        .spawn();

    // Before: all pass.
    assert_eq!(
        get_bearer(&format!("{}/a", gw.url), "tok-1").await.status,
        200
    );
    assert_eq!(up.hits(), 1);

    let r = admin_revoke(&gw, "tok-1").await;
    let v = r.json();
    assert_eq!(v["recorded"]["kind"], "token");
    assert_eq!(v["recorded"]["fingerprint"].as_str().unwrap().len(), 32);
    assert!(
        !r.text().contains("tok-1"),
        "the admin API must not echo the token"
    );
    admin_revoke(&gw, "key-9").await;

    let before = up.hits();
    assert_revoked_response(&get_bearer(&format!("{}/a", gw.url), "tok-1").await);
    assert_revoked_response(&fetch(&format!("{}/a?x=1&access_token=tok-1", gw.url), &[]).await);
    assert_revoked_response(&fetch(&format!("{}/a", gw.url), &[("x-api-key", "key-9")]).await);
    // Scheme is case-insensitive.
    assert_revoked_response(
        &fetch(
            &format!("{}/a", gw.url),
            &[("authorization", "bEaReR tok-1")],
        )
        .await,
    );
    assert_eq!(up.hits(), before, "a revoked token reached the upstream");

    // Other tokens still pass.
    assert_eq!(
        get_bearer(&format!("{}/a", gw.url), "tok-2").await.status,
        200
    );
    assert_eq!(up.hits(), before + 1);

    // The raw token is never logged.
    let logs = gw.logs();
    assert!(
        !logs.contains("tok-1") && !logs.contains("key-9"),
        "token in logs:\n{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_pass_untouched_except_hop_by_hop_headers() {
    let up = Upstream::new().spawn().await;
    let gw = Gateway::new().upstream(&up.url).spawn();
    let body = Bytes::from_static(b"\x00binary\xffbody bytes");
    let r = send(
        Request::builder()
            .method("PATCH")
            .uri(format!("{}/some/path?q=1&r=%20x", gw.url))
            .header("authorization", "Bearer fine-token")
            .header("x-custom", "kept")
            .header("connection", "x-hop")
            .header("x-hop", "dropped")
            .header("keep-alive", "timeout=5")
            .header("x-forwarded-for", "10.0.0.1")
            .body(Full::new(body.clone()))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-upstream"), Some("1"));
    assert!(r.header("via").unwrap().contains("revgate"));
    let got = up.last().unwrap();
    assert_eq!(got.method, "PATCH");
    assert_eq!(got.uri, "/some/path?q=1&r=%20x");
    assert_eq!(got.body, body);
    assert_eq!(got.headers["authorization"], "Bearer fine-token");
    assert_eq!(got.headers["x-custom"], "kept");
    assert!(got.headers.get("x-hop").is_none());
    assert!(got.headers.get("keep-alive").is_none());
    assert_eq!(got.headers["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
    assert_eq!(got.headers["x-forwarded-proto"], "http");
    assert_eq!(got.headers["x-forwarded-host"], gw.addr.to_string());
    assert_eq!(got.headers["via"], "1.1 revgate");
    assert_eq!(got.headers["host"], up.addr.to_string());

    // No credential at all: passes too.
    let r = fetch(&format!("{}/open", gw.url), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(up.last().unwrap().uri, "/open");
    assert!(up.last().unwrap().headers.get("authorization").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_prior_knowledge_is_served_and_judged() {
    let up = Upstream::new().spawn().await;
    let gw = Gateway::new().upstream(&up.url).spawn();
    admin_revoke(&gw, "h2-revoked").await;
    let c = h2c_client();
    let ok = send_with(
        &c,
        get(&format!("{}/x", gw.url))
            .header("authorization", "Bearer h2-fine")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(ok.status, 200);
    assert_eq!(up.last().unwrap().headers["via"], "2 revgate");
    let hits = up.hits();
    let r = send_with(
        &c,
        get(&format!("{}/x", gw.url))
            .header("authorization", "Bearer h2-revoked")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_revoked_response(&r);
    assert_eq!(up.hits(), hits);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scope_rules_match_subject_provider_and_issue_time() {
    let up = Upstream::new().spawn().await;
    let gw = Gateway::new().upstream(&up.url).spawn();
    let r = post_json(
        &format!("{}/admin/v1/revocations", gw.admin_url),
        &serde_json::json!({"scope": {"sub": "u1", "provider": "github"}}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let t = r.json()["recorded"]["revoked_at"].as_u64().unwrap();
    let url = format!("{}/api", gw.url);
    let hits = up.hits();
    let before = jwt(
        &serde_json::json!({"sub": "u1", "provider": "github", "iat": t - 10, "exp": t + 3600}),
    );
    assert_revoked_response(&get_bearer(&url, &before).await);
    let same_second = jwt(&serde_json::json!({"sub": "u1", "provider": "github", "iat": t}));
    assert_revoked_response(&get_bearer(&url, &same_second).await);
    let no_iat = jwt(&serde_json::json!({"sub": "u1", "provider": "github"}));
    assert_revoked_response(&get_bearer(&url, &no_iat).await);
    assert_eq!(up.hits(), hits);

    let after = jwt(&serde_json::json!({"sub": "u1", "provider": "github", "iat": t + 5}));
    assert_eq!(get_bearer(&url, &after).await.status, 200);
    let other_provider =
        jwt(&serde_json::json!({"sub": "u1", "provider": "gitlab", "iat": t - 10}));
    assert_eq!(get_bearer(&url, &other_provider).await.status, 200);
    let other_user = jwt(&serde_json::json!({"sub": "u2", "provider": "github", "iat": t - 10}));
    assert_eq!(get_bearer(&url, &other_user).await.status, 200);
    assert_eq!(up.hits(), hits + 3);

    let scopes = fetch(&format!("{}/admin/v1/scopes", gw.admin_url), &[]).await;
    assert_eq!(scopes.json()["scopes"][0]["sub"], "u1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_headers_supply_attributes_of_opaque_tokens() {
    let up = Upstream::new().spawn().await;
    let gw = Gateway::new()
        .upstream(&up.url)
        .toml("[tokens.identity_headers]\nsub = \"x-auth-user\"\nprovider = \"x-auth-provider\"")
        .spawn();
    post_json(
        &format!("{}/admin/v1/revocations", gw.admin_url),
        &serde_json::json!({"scope": {"sub": "alice", "provider": "google"}}),
    )
    .await;
    let req = |user: &str| {
        get(&format!("{}/x", gw.url))
            .header("authorization", "Bearer opaque-abc")
            .header("x-auth-user", user)
            .header("x-auth-provider", "google")
            .body(Full::default())
            .unwrap()
    };
    assert_revoked_response(&send(req("alice")).await);
    assert_eq!(send(req("bob")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_survive_kill_9_and_a_torn_journal_tail() {
    let up = Upstream::new().spawn().await;
    let mut gw = Gateway::new().upstream(&up.url).spawn();
    for i in 0..20 {
        admin_revoke(&gw, &format!("durable-{i}")).await;
    }
    post_json(
        &format!("{}/admin/v1/revocations", gw.admin_url),
        &serde_json::json!({"scope": {"sub": "u7", "org": "42", "provider": "slack"}}),
    )
    .await;
    gw.kill9();
    // A torn tail: half a record, as a kill -9 mid-write leaves it.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(gw.journal())
        .unwrap();
    std::io::Write::write_all(&mut f, &[200, 0, 0, 0, 1, 2, 3, 4, b'{', b'"']).unwrap();
    drop(f);
    gw.restart();
    let hits = up.hits();
    for i in 0..20 {
        assert_revoked_response(
            &get_bearer(&format!("{}/x", gw.url), &format!("durable-{i}")).await,
        );
    }
    let scoped = jwt(
        &serde_json::json!({"sub": "u7", "org_id": 42, "provider": "slack", "iat": now() - 100}),
    );
    assert_revoked_response(&get_bearer(&format!("{}/x", gw.url), &scoped).await);
    assert_eq!(up.hits(), hits);
    assert_eq!(
        get_bearer(&format!("{}/x", gw.url), "never-revoked")
            .await
            .status,
        200
    );
    let logs = gw.logs();
    assert!(
        logs.contains("torn or corrupt tail"),
        "the torn tail must be reported:\n{logs}"
    );
    // The same fingerprint key was kept beside the journal.
    assert!(gw.dir.join("revgate.journal.key").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_rules_are_gone_after_compaction() {
    let up = Upstream::new().spawn().await;
    let gw = Gateway::new()
        .upstream(&up.url)
        .toml("[tokens]\nclock_skew = \"0s\"\n[store]\nmaintenance_interval = \"1s\"")
        .spawn();
    let short = jwt(&serde_json::json!({"sub": "s", "exp": now() + 2}));
    admin_revoke(&gw, &short).await;
    admin_revoke(&gw, "long-lived").await;
    assert_revoked_response(&get_bearer(&format!("{}/x", gw.url), &short).await);
    let journal = gw.journal();
    let compacted = eventually(Duration::from_secs(10), async || {
        let bytes = std::fs::read(&journal).unwrap_or_default();
        records(&bytes) == 1
    })
    .await;
    assert!(compacted, "the expired rule is still in the journal");
    assert_revoked_response(&get_bearer(&format!("{}/x", gw.url), "long-lived").await);
}

/// Counts the records of a journal file (an 8-byte header, then
/// `[len][crc][payload]` framing).
fn records(bytes: &[u8]) -> usize {
    assert_eq!(bytes.get(..4), Some(&b"RVGJ"[..]), "journal header");
    let (mut at, mut n) = (8, 0);
    while bytes.len() >= at + 8 {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        if bytes.len() < at + 8 + len {
            break;
        }
        at += 8 + len;
        n += 1;
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_credentials_are_400_invalid_request() {
    let up = Upstream::new().spawn().await;
    let gw = Gateway::new().upstream(&up.url).spawn();
    let check = |r: Got, desc: &str| {
        assert_eq!(r.status, 400, "{}", r.text());
        assert_eq!(
            r.header("www-authenticate"),
            Some(format!(r#"Bearer error="invalid_request", error_description="{desc}""#).as_str())
        );
        assert_eq!(
            r.json(),
            serde_json::json!({"error": "invalid_request", "error_description": desc})
        );
    };
    let two = fetch(
        &format!("{}/x", gw.url),
        &[("authorization", "Bearer a"), ("authorization", "Bearer b")],
    )
    .await;
    check(two, "more than one Authorization header");
    let both = fetch(
        &format!("{}/x?access_token=b", gw.url),
        &[("authorization", "Bearer a")],
    )
    .await;
    check(both, "more than one method of passing the access token");
    let non_utf8 = send(
        get(&format!("{}/x", gw.url))
            .header(
                "authorization",
                http::HeaderValue::from_bytes(b"Bearer \xff\xfe\x80").unwrap(),
            )
            .body(Full::default())
            .unwrap(),
    )
    .await;
    check(non_utf8, "malformed access token");
    let empty = fetch(&format!("{}/x", gw.url), &[("authorization", "Bearer")]).await;
    check(empty, "malformed access token");
    assert_eq!(
        up.hits(),
        0,
        "malformed requests must not reach the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_get_431() {
    let up = Upstream::new().spawn().await;
    let gw = Gateway::new().upstream(&up.url).spawn();
    let big = "a".repeat(64 * 1024);
    let req = format!("GET /x HTTP/1.1\r\nHost: t\r\nX-Big: {big}\r\n\r\n");
    let out = raw_http(gw.addr, req.as_bytes());
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.starts_with("HTTP/1.1 431"),
        "{}",
        &text[..text.len().min(200)]
    );
    assert_eq!(up.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_is_502_and_hanging_upstream_is_504() {
    // A port with nothing listening.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let gw = Gateway::new().upstream(&format!("http://{dead}")).spawn();
    let r = get_bearer(&format!("{}/x", gw.url), "t").await;
    assert_eq!(r.status, 502);
    assert_eq!(
        r.json(),
        serde_json::json!({"error": "bad_gateway", "error_description": "The upstream service is unavailable"})
    );

    let up = Upstream::new().spawn().await;
    let gw = Gateway::new()
        .upstream(&up.url)
        .toml("[upstream]\nresponse_header_timeout = \"1s\"")
        .spawn();
    let r = get_bearer(&format!("{}/hang", gw.url), "t").await;
    assert_eq!(r.status, 504);
    assert_eq!(
        r.json(),
        serde_json::json!({"error": "gateway_timeout", "error_description": "The upstream service did not answer in time"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_pick_the_longest_prefix_and_host() {
    let a = Upstream::new().spawn().await;
    let b = Upstream::new().spawn().await;
    let d = Upstream::new().spawn().await;
    let gw = Gateway::new()
        .upstream(&d.url)
        .toml(&format!(
            "[[routes]]\npath_prefix = \"/api\"\nupstream = \"{}\"\n[[routes]]\npath_prefix = \"/api/v2\"\nupstream = \"{}/base\"\n",
            a.url, b.url
        ))
        .spawn();
    assert_eq!(
        get_bearer(&format!("{}/api/x", gw.url), "t").await.status,
        200
    );
    assert_eq!(a.last().unwrap().uri, "/api/x");
    assert_eq!(
        get_bearer(&format!("{}/api/v2/y?z=1", gw.url), "t")
            .await
            .status,
        200
    );
    assert_eq!(b.last().unwrap().uri, "/base/api/v2/y?z=1");
    assert_eq!(
        get_bearer(&format!("{}/apix", gw.url), "t").await.status,
        200
    );
    assert_eq!(d.last().unwrap().uri, "/apix");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrades_pass_through() {
    let up = Upstream::new().spawn().await;
    let gw = Gateway::new().upstream(&up.url).spawn();
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(gw.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nAuthorization: Bearer ws-ok\r\n\r\n").unwrap();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: websocket"),
        "{head}"
    );
    s.write_all(b"ping-through-the-tunnel").unwrap();
    let mut got = Vec::new();
    while got.len() < 23 {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(&got, b"ping-through-the-tunnel");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_rejects_bad_input_clearly() {
    let up = Upstream::new().spawn().await;
    let gw = Gateway::new().upstream(&up.url).spawn();
    let url = format!("{}/admin/v1/revocations", gw.admin_url);
    let bad = |r: Got, desc: &str| {
        assert_eq!(r.status, 400, "{}", r.text());
        assert_eq!(r.json()["error"], "invalid_request");
        assert!(
            r.json()["error_description"]
                .as_str()
                .unwrap()
                .contains(desc),
            "{}",
            r.text()
        );
    };
    let raw = |body: &'static str| {
        Request::builder()
            .method("POST")
            .uri(&url)
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap()
    };
    bad(send(raw("{not json")).await, "not valid JSON");
    bad(send(raw(r#"{"token": 5}"#)).await, "expected");
    bad(
        send(raw(r#"{"token":"a","scope":{"sub":"u"}}"#)).await,
        "exactly one",
    );
    bad(send(raw(r#"{"token":""}"#)).await, "non-empty");
    bad(send(raw(r#"{"scope":{"provider":"p"}}"#)).await, "expected");
    bad(send(raw(r#"{"fingerprint":"abc"}"#)).await, "fingerprint");
    let secret = r#"{"token":"sekrit-value", "extra": 1}"#;
    let r = send(raw(secret)).await;
    assert_eq!(r.status, 400);
    assert!(
        !r.text().contains("sekrit"),
        "a token was echoed: {}",
        r.text()
    );
    let big = "x".repeat(70 * 1024);
    let r = send(
        Request::builder()
            .method("POST")
            .uri(&url)
            .body(Full::new(Bytes::from(big)))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 413);

    // Lookup and un-revoke.
    admin_revoke(&gw, "to-remove").await;
    let look = post_json(
        &format!("{url}/lookup"),
        &serde_json::json!({"token": "to-remove"}),
    )
    .await;
    assert_eq!(look.json()["revoked"], true);
    assert_revoked_response(&get_bearer(&format!("{}/x", gw.url), "to-remove").await);
    let del = send(
        Request::builder()
            .method("DELETE")
            .uri(&url)
            .body(Full::new(Bytes::from(r#"{"token":"to-remove"}"#)))
            .unwrap(),
    )
    .await;
    assert_eq!(del.json(), serde_json::json!({"removed": true}));
    assert_eq!(
        get_bearer(&format!("{}/x", gw.url), "to-remove")
            .await
            .status,
        200
    );
    assert!(gw
        .logs()
        .contains("revocation removed through the admin API"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_names_the_bad_key() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.toml");
    std::fs::write(
        &p,
        "[upstream]\nurl = \"http://127.0.0.1:1\"\n[store]\nbloom_fp_rate = 2.0\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_revgate"))
        .args(["check-config", "--config"])
        .arg(&p)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("store.bloom_fp_rate"));
    std::fs::write(&p, "[upstream]\nurl = \"http://127.0.0.1:1\"\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_revgate"))
        .args(["check-config", "--config"])
        .arg(&p)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Env vars are flags too.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_revgate"))
        .args(["check-config", "--config"])
        .arg(&p)
        .env("REVGATE_STORE", "mongo://x")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("store.url"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gigabyte_streams_both_ways_with_flat_memory() {
    const GIB: u64 = 1 << 30;
    let up = Upstream::new().spawn().await;
    let gw = Gateway::new().upstream(&up.url).spawn();

    // Download 1 GiB.
    let resp = client()
        .request(
            get(&format!("{}/download/{GIB}", gw.url))
                .header("authorization", "Bearer big")
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut n = 0u64;
    use http_body_util::BodyExt;
    while let Some(f) = body.frame().await {
        if let Some(d) = f.unwrap().data_ref() {
            n += d.len() as u64;
        }
    }
    assert_eq!(n, GIB);

    // Upload 1 GiB, streamed from a generator.
    let (tx, body) = channel_body(4);
    tokio::spawn(async move {
        let chunk = Bytes::from(vec![b'u'; 256 * 1024]);
        for _ in 0..(GIB / chunk.len() as u64) {
            if tx
                .send(Ok(hyper::body::Frame::data(chunk.clone())))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let resp = post_streaming(&format!("{}/upload", gw.url), Some("big"), body).await;
    assert_eq!(resp.status(), 200);
    let got = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(String::from_utf8_lossy(&got), GIB.to_string());

    let peak = gw.peak_rss_kib();
    assert!(peak > 0);
    assert!(
        peak < 64 * 1024,
        "gateway peak RSS {peak} KiB while streaming 1 GiB each way"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_header_timeout_starts_after_the_upload() {
    let up = Upstream::new().spawn().await;
    let gw = Gateway::new()
        .upstream(&up.url)
        .toml("[upstream]\nresponse_header_timeout = \"1s\"")
        .spawn();
    // An upload that takes ~2.4 s, longer than the 1 s timeout.
    let (tx, body) = channel_body(1);
    tokio::spawn(async move {
        for _ in 0..6 {
            tokio::time::sleep(Duration::from_millis(400)).await;
            let frame = hyper::body::Frame::data(Bytes::from_static(b"0123456789"));
            if tx.send(Ok(frame)).await.is_err() {
                return;
            }
        }
    });
    let resp = post_streaming(&format!("{}/upload", gw.url), None, body).await;
    assert_eq!(resp.status(), 200);
    use http_body_util::BodyExt;
    assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "60");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_routes_match_the_host_without_its_port() {
    let api = Upstream::new().spawn().await;
    let d = Upstream::new().spawn().await;
    let gw = Gateway::new()
        .upstream(&d.url)
        .toml(&format!(
            "[[routes]]\nhost = \"api.example\"\nupstream = \"{}\"\n",
            api.url
        ))
        .spawn();
    let with_host = |h: &str| {
        get(&format!("{}/v1/x", gw.url))
            .header("host", h)
            .body(Full::default())
            .unwrap()
    };
    assert_eq!(send(with_host("API.example:8443")).await.status, 200);
    assert_eq!((api.hits(), d.hits()), (1, 0));
    assert_eq!(
        api.last().unwrap().headers["x-forwarded-host"],
        "API.example:8443"
    );
    assert_eq!(send(with_host("other.example")).await.status, 200);
    assert_eq!((api.hits(), d.hits()), (1, 1));
}

/// The harness itself: a panic in a test server's task is not swallowed
/// with the task; dropping the server fails the test with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[should_panic(expected = "a test server task panicked: the upstream was asked to panic")]
async fn a_panic_in_a_test_server_task_fails_the_test() {
    let up = Upstream::new().spawn().await;
    let gw = Gateway::new().upstream(&up.url).spawn();
    let r = get_bearer(&format!("{}/panic", gw.url), "t").await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(up.hits(), 1);
    drop(up);
}
