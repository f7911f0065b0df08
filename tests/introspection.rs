//! RFC 7662 introspection through the real gateway: a real introspection
//! endpoint written here (it checks the gateway's HTTP Basic client
//! authentication, reads the form, and counts the calls for each token)
//! gives opaque credentials their attributes, and scope rules recorded
//! through the admin API and the LangSmith and Codegen dialects cover them.
//! Proof of enforcement is the upstream's counter; proof of the cache is the
//! endpoint's.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use support::tasks::Tasks;
use support::*;

const CLIENT_ID: &str = "revgate-rs";
const CLIENT_SECRET: &str = "rs:secret";

/// The 503 of a credential that could not be introspected.
const IDENTITY_UNAVAILABLE: &str = r#"{"error":"temporarily_unavailable","error_description":"The credential's identity could not be checked"}"#;

// === the authorization server's introspection endpoint ===

/// How the endpoint answers one token.
#[derive(Clone)]
enum Reply {
    /// `{"active": true, ...members}`, after `delay`.
    Active(serde_json::Value, Duration),
    /// This status, with a JSON error body.
    Status(u16),
    /// Never answers (the gateway's timeout must end the call).
    Stall,
}

fn active(members: serde_json::Value) -> Reply {
    Reply::Active(members, Duration::ZERO)
}

/// An RFC 7662 endpoint: `POST /introspect`, client authentication by HTTP
/// Basic (`CLIENT_ID`, `CLIENT_SECRET`, each form-urlencoded first), a
/// form body with `token`. Tokens it was not told about are inactive.
struct AuthServer {
    url: String,
    /// Calls per token, counted when they arrive.
    calls: Arc<Mutex<HashMap<String, usize>>>,
    /// Calls refused for bad client authentication or a bad request.
    refused: Arc<Mutex<Vec<String>>>,
    tasks: Tasks,
}

impl Drop for AuthServer {
    fn drop(&mut self) {
        self.tasks.finish();
    }
}

impl AuthServer {
    async fn spawn(replies: Vec<(&str, Reply)>) -> AuthServer {
        let replies: Arc<HashMap<String, Reply>> = Arc::new(
            replies
                .into_iter()
                .map(|(t, r)| (t.to_string(), r))
                .collect(),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let calls = Arc::new(Mutex::new(HashMap::new()));
        let refused = Arc::new(Mutex::new(Vec::new()));
        let tasks = Tasks::default();
        let (c, f, t) = (calls.clone(), refused.clone(), tasks.clone());
        tasks.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (c, f, r) = (c.clone(), f.clone(), replies.clone());
                t.spawn(async move {
                    let svc = service_fn(move |req| {
                        let (c, f, r) = (c.clone(), f.clone(), r.clone());
                        async move {
                            Ok::<_, std::convert::Infallible>(introspect(req, &c, &f, &r).await)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        AuthServer {
            url: format!("http://{addr}/introspect"),
            calls,
            refused,
            tasks,
        }
    }

    fn calls(&self, token: &str) -> usize {
        self.calls.lock().unwrap().get(token).copied().unwrap_or(0)
    }

    fn total_calls(&self) -> usize {
        self.calls.lock().unwrap().values().sum()
    }

    fn refused(&self) -> Vec<String> {
        self.refused.lock().unwrap().clone()
    }
}

fn json(status: u16, body: serde_json::Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

async fn introspect(
    req: Request<Incoming>,
    calls: &Mutex<HashMap<String, usize>>,
    refused: &Mutex<Vec<String>>,
    replies: &HashMap<String, Reply>,
) -> Response<Full<Bytes>> {
    let refuse = |why: &str, status: u16, error: &str| {
        refused.lock().unwrap().push(why.to_string());
        json(status, serde_json::json!({ "error": error }))
    };
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD
            .encode(format!("{CLIENT_ID}:{}", CLIENT_SECRET.replace(':', "%3A")))
    );
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if auth.as_deref() != Some(expected.as_str()) {
        return refuse(&format!("authorization {auth:?}"), 401, "invalid_client");
    }
    if req.method() != "POST" || req.uri().path() != "/introspect" {
        return refuse("method or path", 404, "not_found");
    }
    if req
        .headers()
        .get("content-type")
        .is_none_or(|v| v != "application/x-www-form-urlencoded")
    {
        return refuse("content-type", 400, "invalid_request");
    }
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let form: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    let Some(token) = form.get("token") else {
        return refuse("no token", 400, "invalid_request");
    };
    if form.get("token_type_hint").map(String::as_str) != Some("access_token") {
        return refuse("token_type_hint", 400, "invalid_request");
    }
    *calls.lock().unwrap().entry(token.clone()).or_default() += 1;
    match replies.get(token) {
        Some(Reply::Active(members, delay)) => {
            tokio::time::sleep(*delay).await;
            let mut body = members.clone();
            body["active"] = serde_json::Value::Bool(true);
            json(200, body)
        }
        Some(Reply::Status(status)) => json(*status, serde_json::json!({"error": "server_error"})),
        Some(Reply::Stall) => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            json(200, serde_json::json!({"active": false}))
        }
        None => json(200, serde_json::json!({"active": false})),
    }
}

// === the gateway ===

/// `[identity.introspection]` for `server`, with these extra keys.
fn introspection_toml(server: &AuthServer, extra: &str) -> String {
    format!(
        "[identity.introspection]\nurl = {:?}\nclient_id = {CLIENT_ID:?}\nclient_secret = {CLIENT_SECRET:?}\n{extra}\n",
        server.url
    )
}

fn gateway(up: &RunningUpstream, server: &AuthServer, extra: &str) -> RunningGateway {
    Gateway::new()
        .upstream(&up.url)
        .toml(&introspection_toml(server, extra))
        .spawn()
}

/// Records a scope rule through the admin API.
async fn revoke_scope(gw: &RunningGateway, scope: serde_json::Value) {
    let r = post_json(
        &format!("{}/admin/v1/revocations", gw.admin_url),
        &serde_json::json!({ "scope": scope }),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

async fn metrics(gw: &RunningGateway) -> prometheus::Exposition {
    let r = fetch(&format!("{}/metrics", gw.admin_url), &[]).await;
    assert_eq!(r.status, 200);
    prometheus::parse(&r.text()).unwrap()
}

fn introspections(m: &prometheus::Exposition, outcome: &str) -> f64 {
    m.value(
        "revgate_introspection_requests_total",
        &[("outcome", outcome)],
    )
    .unwrap_or_else(|| panic!("no introspection counter for {outcome}"))
}

/// `token` is answered with the 503 of an unknown identity and does not
/// reach `up`.
async fn assert_identity_unavailable(gw: &RunningGateway, up: &RunningUpstream, token: &str) {
    let hits = up.hits();
    let r = get_bearer(&format!("{}/data", gw.url), token).await;
    assert_eq!((r.status, r.text().as_str()), (503, IDENTITY_UNAVAILABLE));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(
        up.hits(),
        hits,
        "an unjudged credential reached the upstream"
    );
}

// === judging requests ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scope_rule_covers_opaque_credentials_by_their_introspected_subject() {
    let t0 = now();
    let server = AuthServer::spawn(vec![
        (
            "op-alice",
            active(serde_json::json!({"sub": "alice", "provider": "github", "iat": t0 - 60, "exp": t0 + 3600})),
        ),
        (
            "op-alice-gitlab",
            active(serde_json::json!({"sub": "alice", "provider": "gitlab", "iat": t0 - 60})),
        ),
        (
            "op-bob",
            active(serde_json::json!({"sub": "bob", "provider": "github", "iat": t0 - 60})),
        ),
        (
            // Issued after the rule (whose time is the revoke's second).
            "op-alice-new",
            active(serde_json::json!({"sub": "alice", "provider": "github", "iat": t0 + 30})),
        ),
        (
            // No issue time: covered until the rule expires (fail closed).
            "op-alice-no-iat",
            active(serde_json::json!({"sub": "alice", "provider": "github"})),
        ),
    ])
    .await;
    let up = Upstream::new().spawn().await;
    let gw = gateway(&up, &server, "");

    // With no scope rule nothing needs a subject: no credential is sent out.
    assert_passes(&gw, &up, "op-alice").await;
    assert_eq!(server.total_calls(), 0, "introspected with no scope rule");

    revoke_scope(
        &gw,
        serde_json::json!({"sub": "alice", "provider": "github"}),
    )
    .await;
    let before = metrics(&gw).await;
    for _ in 0..3 {
        assert_revoked(&gw, &up, "op-alice").await;
        assert_revoked(&gw, &up, "op-alice-no-iat").await;
        assert_passes(&gw, &up, "op-bob").await;
        assert_passes(&gw, &up, "op-alice-new").await;
        assert_passes(&gw, &up, "op-alice-gitlab").await;
    }
    // Inactive: no attributes, so no rule covers it; the upstream judges it.
    assert_passes(&gw, &up, "op-unknown").await;
    assert_passes(&gw, &up, "op-unknown").await;
    // A JWT that names its subject is judged on its claims, not introspected.
    let jwt_alice = jwt(&serde_json::json!({"sub": "alice", "provider": "github", "iat": t0 - 60}));
    assert_revoked(&gw, &up, &jwt_alice).await;

    // One call per credential within cache_ttl (and negative_ttl).
    for token in [
        "op-alice",
        "op-alice-no-iat",
        "op-bob",
        "op-alice-new",
        "op-alice-gitlab",
        "op-unknown",
    ] {
        assert_eq!(server.calls(token), 1, "{token}");
    }
    assert_eq!(server.total_calls(), 6);
    assert_eq!(server.refused(), Vec::<String>::new());
    let after = metrics(&gw).await;
    let delta = |outcome| introspections(&after, outcome) - introspections(&before, outcome);
    assert_eq!(delta("active"), 5.0);
    assert_eq!(delta("inactive"), 1.0);
    assert_eq!(delta("error") + delta("timeout"), 0.0);
    let hits = |m: &prometheus::Exposition| {
        m.value("revgate_introspection_cache_hits_total", &[])
            .unwrap()
    };
    assert_eq!(hits(&after) - hits(&before), 11.0);
    // The raw tokens never reach the log.
    let logs = gw.logs();
    assert!(!logs.contains("op-alice"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_first_requests_make_one_call() {
    let t0 = now();
    // The answers take a while, so every request arrives during the call.
    let slow = Duration::from_millis(300);
    let server = AuthServer::spawn(vec![
        (
            "op-crowd-carol",
            Reply::Active(serde_json::json!({"sub": "carol", "iat": t0 - 60}), slow),
        ),
        (
            "op-crowd-alice",
            Reply::Active(serde_json::json!({"sub": "alice", "iat": t0 - 60}), slow),
        ),
    ])
    .await;
    let up = Upstream::new().spawn().await;
    let gw = gateway(&up, &server, "timeout = \"5s\"");
    revoke_scope(&gw, serde_json::json!({"sub": "alice"})).await;

    for (token, status) in [("op-crowd-carol", 200), ("op-crowd-alice", 401)] {
        let hits = up.hits();
        let url = format!("{}/data", gw.url);
        let mut all = tokio::task::JoinSet::new();
        for _ in 0..100 {
            let url = url.clone();
            all.spawn(async move { get_bearer(&url, token).await });
        }
        let mut statuses = Vec::new();
        while let Some(r) = all.join_next().await {
            statuses.push(r.unwrap().status);
        }
        assert_eq!(statuses, vec![status; 100], "{token}");
        assert_eq!(server.calls(token), 1, "{token}: one call for 100 requests");
        let passed = if status == 200 { 100 } else { 0 };
        assert_eq!(up.hits(), hits + passed, "{token}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_and_timeouts_are_refused_unless_on_error_is_pass() {
    let t0 = now();
    let server = AuthServer::spawn(vec![
        ("op-500", Reply::Status(500)),
        ("op-stall", Reply::Stall),
        (
            "op-dave",
            active(serde_json::json!({"sub": "dave", "iat": t0 - 60})),
        ),
    ])
    .await;
    let up = Upstream::new().spawn().await;
    let reject = gateway(&up, &server, "timeout = \"300ms\"");
    let pass = gateway(&up, &server, "timeout = \"300ms\"\non_error = \"pass\"");
    for gw in [&reject, &pass] {
        // A rule for someone else: every subject-less credential needs asking.
        revoke_scope(gw, serde_json::json!({"sub": "zed"})).await;
    }

    let before = metrics(&reject).await;
    assert_identity_unavailable(&reject, &up, "op-500").await;
    assert_identity_unavailable(&reject, &up, "op-stall").await;
    // Errors are not cached: the next request asks again.
    assert_identity_unavailable(&reject, &up, "op-500").await;
    assert_eq!(server.calls("op-500"), 2);
    assert_eq!(server.calls("op-stall"), 1);
    // What the server does answer still passes.
    assert_passes(&reject, &up, "op-dave").await;
    let after = metrics(&reject).await;
    let delta = |outcome| introspections(&after, outcome) - introspections(&before, outcome);
    assert_eq!(delta("error"), 2.0);
    assert_eq!(delta("timeout"), 1.0);
    assert_eq!(delta("active"), 1.0);
    let requests = |m: &prometheus::Exposition| {
        m.value(
            "revgate_requests_total",
            &[("route", "default"), ("outcome", "identity_unavailable")],
        )
        .unwrap()
    };
    assert_eq!(requests(&after) - requests(&before), 3.0);

    // on_error = "pass": judged as a credential with no attributes.
    assert_passes(&pass, &up, "op-500").await;
    assert_passes(&pass, &up, "op-stall").await;
    assert_eq!(server.calls("op-500"), 3);
    assert_eq!(server.calls("op-stall"), 2);

    // A gateway the server does not accept as a client: every call fails.
    let wrong = Gateway::new()
        .upstream(&up.url)
        .toml(&introspection_toml(&server, "").replace(CLIENT_SECRET, "wrong"))
        .spawn();
    revoke_scope(&wrong, serde_json::json!({"sub": "zed"})).await;
    assert_identity_unavailable(&wrong, &up, "op-dave").await;
    assert_eq!(server.refused().len(), 1, "{:?}", server.refused());
    assert_eq!(
        server.calls("op-dave"),
        1,
        "refused calls are not counted as answered"
    );
}

// === revokers identified by their own credential ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_mode_revokers_are_identified_by_introspecting_their_key() {
    let t0 = now();
    let server = AuthServer::spawn(vec![
        (
            "ls-key-alice",
            active(serde_json::json!({"sub": "alice", "iat": t0 - 600})),
        ),
        (
            "cg-key-dev",
            active(serde_json::json!({"sub": "dev", "iat": t0 - 600})),
        ),
        (
            "op-alice-github",
            active(serde_json::json!({"sub": "alice", "provider": "github", "iat": t0 - 60})),
        ),
        (
            "op-dev-slack-7",
            active(serde_json::json!({"sub": "dev", "org_id": "7", "provider": "slack", "iat": t0 - 60})),
        ),
        (
            "op-dev-slack-8",
            active(serde_json::json!({"sub": "dev", "org_id": "8", "provider": "slack", "iat": t0 - 60})),
        ),
        ("cg-key-broken", Reply::Status(503)),
    ])
    .await;
    let up = Upstream::new().spawn().await;
    // No [tokens.verify], no identity headers: introspection alone names the
    // caller. LangSmith's clients send their key in `x-api-key`.
    let gw = Gateway::new()
        .upstream(&up.url)
        .arg("--revoke-mode")
        .arg("terminate")
        .toml("[tokens]\napi_key_headers = [\"x-api-key\"]")
        .toml(&introspection_toml(&server, ""))
        .spawn();

    // LangSmith: DELETE /v2/auth/tokens?provider_id=github, key in x-api-key.
    let ls = format!("{}/v2/auth/tokens?provider_id=github", gw.url);
    assert_passes(&gw, &up, "op-alice-github").await;
    let r = send(call("DELETE", &ls, &[("x-api-key", "ls-key-alice")], b"")).await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (
            200,
            r#"{"message":"Tokens revoked","provider_id":"github"}"#
        )
    );
    assert_revoked(&gw, &up, "op-alice-github").await;
    // An unknown key (inactive) identifies no one, as before.
    let r = send(call("DELETE", &ls, &[("x-api-key", "ls-key-nobody")], b"")).await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (401, r#"{"detail":"Not authenticated"}"#)
    );

    // Codegen: POST /v1/oauth/tokens/revoke?provider=slack&org_id=7, an
    // opaque bearer API key.
    let cg = format!("{}/v1/oauth/tokens/revoke?provider=slack&org_id=7", gw.url);
    let r = send(call(
        "POST",
        &cg,
        &[("authorization", "Bearer cg-key-dev")],
        b"",
    ))
    .await;
    assert_eq!((r.status, r.text().as_str()), (200, "{}"));
    assert_revoked(&gw, &up, "op-dev-slack-7").await;
    assert_passes(&gw, &up, "op-dev-slack-8").await;
    for (key, why) in [
        ("cg-key-nobody", "inactive"),
        ("cg-key-broken", "the server failed"),
    ] {
        let r = send(call(
            "POST",
            &cg,
            &[("authorization", &format!("Bearer {key}"))],
            b"",
        ))
        .await;
        assert_eq!(
            (r.status, r.text().as_str()),
            (401, r#"{"detail":"Not authenticated"}"#),
            "{why}"
        );
    }

    // Exactly the two rules, for the introspected subjects.
    let scopes = fetch(&format!("{}/admin/v1/scopes", gw.admin_url), &[]).await;
    let mut keys: Vec<(String, String, String)> = scopes.json()["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let field = |k: &str| s[k].as_str().unwrap_or("-").to_string();
            (field("sub"), field("org"), field("provider"))
        })
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        vec![
            ("alice".into(), "-".into(), "github".into()),
            ("dev".into(), "7".into(), "slack".into()),
        ],
        "{}",
        scopes.text()
    );
}

// === live sessions ===

/// Opens the upstream's `/ws` through the gateway with `Bearer <token>`
/// and reads the 101.
async fn open_ws(gw: &RunningGateway, token: &str) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: live.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut b))
            .await
            .expect("101 in time")
            .unwrap();
        assert_eq!(
            n,
            1,
            "closed before the 101: {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s
}

/// Sends `msg` and reads it back: `None` when the connection closed instead.
async fn echo(s: &mut tokio::net::TcpStream, msg: &[u8]) -> Option<()> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    s.write_all(msg).await.ok()?;
    let mut got = vec![0u8; msg.len()];
    match tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut got)).await {
        Ok(Ok(_)) => {
            assert_eq!(got, msg);
            Some(())
        }
        Ok(Err(_)) => None,
        Err(_) => panic!("neither an echo nor a close in 5 s"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgraded_connection_is_closed_by_a_scope_rule_on_its_introspected_subject() {
    use tokio::io::AsyncReadExt as _;
    let t0 = now();
    let server = AuthServer::spawn(vec![
        (
            "op-ws-erin",
            active(serde_json::json!({"sub": "erin", "iat": t0 - 60})),
        ),
        (
            "op-ws-frank",
            active(serde_json::json!({"sub": "frank", "iat": t0 - 60})),
        ),
    ])
    .await;
    let up = Upstream::new().spawn().await;
    let gw = gateway(&up, &server, "");
    // A rule exists, so the connections' credentials are introspected as
    // they are judged, and registered under their subjects.
    revoke_scope(&gw, serde_json::json!({"sub": "zed"})).await;
    let mut ws = open_ws(&gw, "op-ws-erin").await;
    let mut control = open_ws(&gw, "op-ws-frank").await;
    assert_eq!(echo(&mut ws, b"hi").await, Some(()));
    assert_eq!(echo(&mut control, b"hi").await, Some(()));

    revoke_scope(&gw, serde_json::json!({"sub": "erin"})).await;
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), ws.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "the connection of a covered subject stayed open: {read:?}"
    );
    assert_eq!(echo(&mut control, b"still here").await, Some(()));
    assert_revoked(&gw, &up, "op-ws-erin").await;
    assert_eq!(server.calls("op-ws-erin"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_mode_revokers_are_identified_by_introspection_after_the_upstreams_2xx() {
    let t0 = now();
    let server = AuthServer::spawn(vec![
        (
            "ls-key-gina",
            active(serde_json::json!({"sub": "gina", "iat": t0 - 600})),
        ),
        (
            "op-gina-github",
            active(serde_json::json!({"sub": "gina", "provider": "github", "iat": t0 - 60})),
        ),
    ])
    .await;
    let up = Upstream::new().spawn().await;
    let refusing = Upstream::new().respond(401).spawn().await;
    let gw = gateway(&up, &server, "");
    let gw_refused = gateway(&refusing, &server, "");

    // The upstream vouches (2xx): the introspected caller's scope is recorded.
    let r = send(call(
        "DELETE",
        &format!("{}/v2/auth/tokens?provider_id=github", gw.url),
        &[("authorization", "Bearer ls-key-gina")],
        b"",
    ))
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_revoked(&gw, &up, "op-gina-github").await;
    // The upstream refuses the caller: nothing is recorded.
    let r = send(call(
        "DELETE",
        &format!("{}/v2/auth/tokens?provider_id=github", gw_refused.url),
        &[("authorization", "Bearer ls-key-gina")],
        b"",
    ))
    .await;
    assert_eq!(r.status, 401, "{}", r.text());
    let scopes = fetch(&format!("{}/admin/v1/scopes", gw_refused.admin_url), &[]).await;
    assert_eq!(scopes.json()["scopes"], serde_json::json!([]));
}
