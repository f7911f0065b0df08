//! Issue 18 against the real binary: bulk import and export of revocations
//! through `revgate admin import|export` and the streamed admin endpoints,
//! and the built-in upstreams `builtin:ok` / `builtin:echo`.
//!
//! Covered: 100,000 plain-line tokens and 1,000 NDJSON scope rules imported
//! through the CLI into the embedded store (enforced, and again after a
//! kill -9) and into a real redis-server (enforced on two instances: the
//! second learns them from the batch stream events); a malformed line
//! reported with its number while the rest apply; every per-line error of
//! the endpoint by number, exactly; a kill -9 of the gateway during an
//! import loses nothing the CLI's summary counted as accepted; export ->
//! import into a fresh deployment with the same fingerprint key enforces
//! the same rules (tokens, scopes, jti, bindings) and the export holds no
//! raw token; in confirmed consistency an import's answer means every
//! instance enforces it (one confirmation per batch); an import over rules
//! Redis already holds keeps the later expiry (in Redis's value and key
//! expiry, and on a second instance), on one Redis and on a Redis Cluster,
//! where each batch is written in the deployment's slot; an import
//! queued in the outbox while Redis is away reaches it as batches (one
//! event per 10,000 rules) when it returns on the same port; principal
//! lines (`{"credential":..,"sub":..}`) are recorded as the principals API
//! records them, with its errors; token families (their rules and
//! memberships) come along in an export -> import, embedded and Redis; an
//! expiry past Redis's `EXAT` range neither fails nor blocks the outbox;
//! a batch's stream event follows every write of it (`MONITOR`); the admin token
//! guards both endpoints; `builtin:ok` and
//! `builtin:echo` answer as documented on the fast path and on hyper (h1
//! and h2c), after the verdict, with no upstream listening anywhere; an
//! unknown `builtin:` URL is refused at start. Proof is the upstream's hit
//! counter where there is an upstream, the exact status and body, and the
//! store's own answers (admin lookups, export) where there is none.

#[path = "support/redis.rs"]
mod redis_support;
mod support;

use std::io::{BufRead as _, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use redis_support::RedisServer;
use serde_json::{json, Value};
use support::*;

const FP_KEY: &str = "62756c6b2d696d706f72742d746573742d6b65792d33322d62797465732d2121";

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_revgate")
}

/// `revgate admin --admin-url URL -o json ARGS..`: exit code, stdout's last
/// line as JSON, stderr.
fn admin_cli(admin_url: &str, args: &[&str], stdin: Option<&Path>) -> (i32, Value, String) {
    let mut cmd = Command::new(bin());
    cmd.args(["admin", "--admin-url", admin_url, "-o", "json"])
        .args(args)
        .env_remove("REVGATE_ADMIN_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match stdin {
        Some(p) => cmd.stdin(std::fs::File::open(p).unwrap()),
        None => cmd.stdin(Stdio::null()),
    };
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let last = stdout.lines().last().unwrap_or("null");
    let v = serde_json::from_str(last).unwrap_or(Value::String(stdout.clone()));
    (
        out.status.code().unwrap_or(-1),
        v,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The token of import line `i` (1-based among the token lines).
fn token(prefix: &str, i: usize) -> String {
    format!("{prefix}-{i:06}-opaque")
}

/// Writes the issue's input: 100,000 raw tokens (one malformed line after
/// the 50,000th), then 1,000 NDJSON scope rules (`sub` = `<prefix>-user-<n>`).
/// Returns the malformed line's number.
fn write_input(path: &Path, prefix: &str) -> u64 {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut line = 0u64;
    let mut bad = 0;
    for i in 1..=100_000 {
        writeln!(f, "{}", token(prefix, i)).unwrap();
        line += 1;
        if i == 50_000 {
            writeln!(f, r#"{{"token": "#).unwrap();
            line += 1;
            bad = line;
        }
    }
    for n in 0..1_000 {
        writeln!(
            f,
            "{}",
            json!({"scope": {"sub": format!("{prefix}-user-{n}"), "provider": "github"}})
        )
        .unwrap();
    }
    f.flush().unwrap();
    bad
}

fn assert_issue_summary(v: &Value, bad_line: u64) {
    assert_eq!(v["accepted"], json!(101_000), "{v}");
    assert_eq!(v["changed"], json!(101_000), "{v}");
    assert_eq!(v["rejected"], json!(1), "{v}");
    assert_eq!(v["lines"], json!(101_001), "{v}");
    assert_eq!(v["complete"], json!(true), "{v}");
    assert_eq!(
        v["errors"],
        json!([{"line": bad_line, "error": "the line is not valid JSON"}]),
        "{v}"
    );
}

/// A JWT of scope subject `sub` (provider github) issued a minute ago.
fn scoped_jwt(sub: &str) -> String {
    jwt(&json!({"sub": sub, "provider": "github", "iat": now() - 60, "exp": now() + 3600}))
}

/// The issue's samples: tokens across the file and scope subjects are
/// refused and never reach `up`; a token not imported, and a subject with
/// no rule, pass.
async fn assert_samples(gw: &RunningGateway, up: &RunningUpstream, prefix: &str) {
    for i in [1, 2, 49_999, 50_000, 50_001, 77_777, 99_999, 100_000] {
        assert_revoked(gw, up, &token(prefix, i)).await;
    }
    for n in [0, 500, 999] {
        assert_revoked(gw, up, &scoped_jwt(&format!("{prefix}-user-{n}"))).await;
    }
    assert_passes(gw, up, &token(prefix, 100_001)).await;
    assert_passes(gw, up, &scoped_jwt(&format!("{prefix}-user-1000"))).await;
}

/// A gateway on the Redis at `url` with the tests' shared fingerprint key,
/// its keys under `prefix`.
fn on_redis(upstream: &str, url: &str, prefix: &str) -> RunningGateway {
    Gateway::new()
        .upstream(upstream)
        .arg("--store")
        .arg(url)
        .toml(&format!(
            "[tokens]\nfingerprint_key = \"{FP_KEY}\"\n[store]\nkey_prefix = \"{prefix}\""
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_imports_100k_tokens_and_1k_scope_rules_into_the_embedded_store() {
    let up = Upstream::new().spawn().await;
    let mut gw = Gateway::new().upstream(&up.url).spawn();
    let input = gw.dir.join("input.ndjson");
    let bad = write_input(&input, "emb");
    let (code, v, stderr) = admin_cli(
        &gw.admin_url,
        &["import", "--file", input.to_str().unwrap()],
        None,
    );
    assert_eq!(code, 0, "{stderr}");
    assert_issue_summary(&v, bad);
    assert!(
        stderr.contains("import: 100000 lines"),
        "no progress line: {stderr}"
    );
    assert_samples(&gw, &up, "emb").await;
    // Durable: a kill -9 right after the summary keeps every rule.
    gw.restart();
    assert_samples(&gw, &up, "emb").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_imports_into_redis_and_both_instances_enforce_it() {
    redis_support::require_redis_server();
    let redis = RedisServer::spawn();
    let up = Upstream::new().spawn().await;
    let instance = || on_redis(&up.url, &redis.url(), "bulk");
    let (a, b) = (instance(), instance());
    ready(&a).await;
    ready(&b).await;
    let input = a.dir.join("input.ndjson");
    let bad = write_input(&input, "red");
    let (code, v, stderr) = admin_cli(
        &a.admin_url,
        &["import", "--file", input.to_str().unwrap()],
        None,
    );
    assert_eq!(code, 0, "{stderr}");
    assert_issue_summary(&v, bad);
    // In Redis: one key per token rule, fingerprints only.
    let mut conn = redis.conn();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("{bulk}:tok:*")
        .query(&mut conn)
        .unwrap();
    assert_eq!(keys.len(), 100_000);
    let stream: Vec<redis::Value> = redis::cmd("XRANGE")
        .arg("{bulk}:events")
        .arg("-")
        .arg("+")
        .query(&mut conn)
        .unwrap();
    // One event per batch of tokens, one per scope rule: the CLI's first
    // request (lines 1 to 100,000) is ten batches, the second holds the
    // last token and the scope rules (one more batch).
    assert_eq!(stream.len(), 11 + 1_000, "stream events");
    // B learned every batch from the stream.
    let last = token("red", 100_000);
    wait_for(
        "instance B has the last batch",
        Duration::from_secs(10),
        || async { get_bearer(&format!("{}/data", b.url), &last).await.status == 401 },
    )
    .await;
    assert_samples(&a, &up, "red").await;
    assert_samples(&b, &up, "red").await;
    // The export from either instance: every rule once, bindings too.
    let r = post_json(
        &format!("{}/admin/v1/principals", a.admin_url),
        &json!({"credential": "opaque-red-key", "sub": "red-bound"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let exported = b.dir.join("export.ndjson");
    let (code, _, stderr) = admin_cli(
        &b.admin_url,
        &["export", "--file", exported.to_str().unwrap()],
        None,
    );
    assert_eq!(code, 0, "{stderr}");
    let text = std::fs::read_to_string(&exported).unwrap();
    let mut kinds = std::collections::BTreeMap::new();
    let mut fingerprints = std::collections::HashSet::new();
    for l in text.lines() {
        let v: Value = serde_json::from_str(l).unwrap();
        *kinds
            .entry(v["kind"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
        if v["kind"] == json!("token") {
            assert_eq!(v["source"], json!("redis"));
            fingerprints.insert(v["fingerprint"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(fingerprints.len(), 100_000);
    assert_eq!(kinds.get("scope"), Some(&1_000));
    assert_eq!(kinds.get("bind"), Some(&1));
    assert!(!text.contains("opaque"), "the export holds a raw token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoint_reports_each_bad_line_by_number_and_applies_the_rest() {
    let up = Upstream::new().spawn().await;
    let gw = Gateway::new().upstream(&up.url).spawn();
    let long = "x".repeat(20 * 1024);
    let mut body = Vec::new();
    let lines: Vec<&[u8]> = vec![
        b"good-token-1",                                                   // 1
        b"",                                                               // 2 blank
        b"{not json",                                                      // 3
        br#"{"token":"good-token-2"}"#,                                    // 4
        br#"{"tokn":"typo"}"#,                                             // 5
        long.as_bytes(),                                                   // 6
        b"bad\xfftoken",                                                   // 7
        br#"{"kind":"token","fingerprint":"zz","expires_at":9999999999}"#, // 8
        br#"{"kind":"token","fingerprint":"00112233445566778899aabbccddeeff","expires_at":1}"#, // 9 expired
        br#"{"jti":"j-1"}"#,        // 10 (jti off)
        br#"{"scope":{"sub":""}}"#, // 11
        br#"{"kind":"remove","fingerprint":"00112233445566778899aabbccddeeff"}"#, // 12
        b"good token 3",            // 13 (space)
        br#"{"scope":{"sub":"u-9","provider":"github"}}"#, // 14
        b"good-token-4\r",          // 15 (CRLF)
    ];
    for l in &lines {
        body.extend_from_slice(l);
        body.push(b'\n');
    }
    // The last line without its newline.
    body.extend_from_slice(b"good-token-5");
    let r = send(call(
        "POST",
        &format!("{}/admin/v1/revocations/import", gw.admin_url),
        &[("content-type", "application/x-ndjson")],
        &body,
    ))
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({
            "lines": 16, "accepted": 5, "changed": 5, "expired": 1, "rejected": 9,
            "errors": [
                {"line": 3, "error": "the line is not valid JSON"},
                {"line": 5, "error": "unknown field or wrong type: see the import's line forms"},
                {"line": 6, "error": "the line is over 16 KiB"},
                {"line": 7, "error": "the line is not UTF-8"},
                {"line": 8, "error": "fingerprint must be 32 hex characters"},
                {"line": 10, "error": "revocation by jti is off: set tokens.revoke_by_jti = true on every instance"},
                {"line": 11, "error": "scope.sub is required; scope.org and scope.provider, when given, must be non-empty"},
                {"line": 12, "error": "unknown kind: token, scope, bind, family and join are imported"},
                {"line": 13, "error": "a token must be non-empty visible ASCII"},
            ],
            "errors_truncated": false,
        })
    );
    assert!(!r.text().contains("typo") && !r.text().contains("good"));
    for t in [
        "good-token-1",
        "good-token-2",
        "good-token-4",
        "good-token-5",
    ] {
        assert_revoked(&gw, &up, t).await;
    }
    assert_revoked(&gw, &up, &scoped_jwt("u-9")).await;
    assert_passes(&gw, &up, "good-token-6").await;
}

/// Every way a `family` or `join` line (the export's family forms) can be
/// wrong is reported with its number and a reason, and the good lines of
/// the same body still apply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_family_and_join_lines_are_reported_by_number() {
    let up = Upstream::new().spawn().await;
    let gw = Gateway::new().upstream(&up.url).spawn();
    let fam = "00112233445566778899aabbccddeeff";
    let fp = "ffeeddccbbaa99887766554433221100";
    let far = 9_999_999_999u64;
    let lines = [
        format!(r#"{{"kind":"family","family":"nothex","expires_at":{far}}}"#), // 1
        format!(r#"{{"kind":"family","family":"{fam}"}}"#),                     // 2
        format!(r#"{{"kind":"family","family":"{fam}","revoked_at":{far},"expires_at":{far}}}"#), // 3
        format!(
            r#"{{"kind":"join","fingerprint":"{fp}","family":"short","generation":0,"expires_at":{far}}}"#
        ), // 4
        format!(
            r#"{{"kind":"join","fingerprint":"xyz","family":"{fam}","generation":0,"expires_at":{far}}}"#
        ), // 5
        format!(r#"{{"kind":"join","fingerprint":"{fp}","family":"{fam}","expires_at":{far}}}"#), // 6
        format!(
            r#"{{"kind":"join","fingerprint":"{fp}","family":"{fam}","generation":"one","expires_at":{far}}}"#
        ), // 7
        r#"{"credential":"cred-1","sub":"u-1","family":"grant-1"}"#.to_owned(), // 8
        "family-good-token".to_owned(),                                         // 9
    ];
    let body = lines.join("\n");
    let r = send(call(
        "POST",
        &format!("{}/admin/v1/revocations/import", gw.admin_url),
        &[("content-type", "application/x-ndjson")],
        body.as_bytes(),
    ))
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(
        (&v["lines"], &v["accepted"], &v["rejected"]),
        (&json!(9), &json!(1), &json!(8)),
        "{v}"
    );
    let errors: Vec<(u64, String)> = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["line"].as_u64().unwrap(),
                e["error"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let want = [
        (1, "family must be 32 hex characters"),
        (2, "a family rule needs expires_at"),
        (3, "revoked_at is in the future"),
        (4, "family must be 32 hex characters"),
        (5, "fingerprint must be 32 hex characters"),
        (6, "a family membership needs generation and expires_at"),
        (
            7,
            "unknown field or wrong type: see the import's line forms",
        ),
    ];
    for (line, error) in want {
        assert!(
            errors.iter().any(|(l, e)| *l == line && e == error),
            "line {line}: want {error:?} in {errors:?}"
        );
    }
    assert!(
        errors
            .iter()
            .any(|(l, e)| *l == 8 && e.contains(r#"{"kind":"join"}"#)),
        "line 8 points to join lines: {errors:?}"
    );
    assert_revoked(&gw, &up, "family-good-token").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_during_an_import_loses_nothing_the_summary_counted() {
    let up = Upstream::new().spawn().await;
    // The lookups below are 20,000 admin calls.
    let mut gw = Gateway::new()
        .upstream(&up.url)
        .toml("[admin.rate_limit]\nenabled = false")
        .spawn();
    let mut cli = Command::new(bin())
        .args(["admin", "--admin-url", &gw.admin_url, "-o", "json"])
        .args(["import", "--request-lines", "10000"])
        .env_remove("REVGATE_ADMIN_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = cli.stdin.take().unwrap();
    let stderr = cli.stderr.take().unwrap();
    let (progress_tx, progress) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = progress_tx.send(line);
        }
    });
    let write = |stdin: &mut std::process::ChildStdin, from: usize, to: usize| {
        let mut chunk = String::new();
        for i in from..=to {
            chunk.push_str(&token("k9", i));
            chunk.push('\n');
        }
        stdin.write_all(chunk.as_bytes()).unwrap();
        stdin.flush().unwrap();
    };
    // Two requests' worth, answered; then a third in flight when the
    // gateway dies.
    write(&mut stdin, 1, 20_000);
    let mut answered = 0;
    while answered < 2 {
        let line = progress
            .recv_timeout(Duration::from_secs(20))
            .expect("progress line");
        assert!(line.starts_with("import: "), "{line}");
        answered += 1;
    }
    write(&mut stdin, 20_001, 25_000);
    gw.kill9();
    drop(stdin);
    let out = cli.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "the import must fail");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(v["complete"], json!(false), "{v}");
    let accepted = v["accepted"].as_u64().unwrap();
    assert!(accepted >= 20_000, "{v}");
    assert_eq!(v["lines"].as_u64().unwrap(), accepted, "{v}");
    // Every line the summary counted is enforced after a restart.
    gw.restart();
    let counted = gw.dir.join("counted.txt");
    {
        let mut f = std::fs::File::create(&counted).unwrap();
        for i in 1..=accepted as usize {
            writeln!(f, "{}", token("k9", i)).unwrap();
        }
    }
    let (code, looked, stderr) = admin_cli(
        &gw.admin_url,
        &["lookup", "--file", counted.to_str().unwrap()],
        None,
    );
    assert_eq!(code, 0, "{stderr}");
    let looked = looked.as_array().unwrap();
    assert_eq!(looked.len(), accepted as usize);
    let lost: Vec<_> = looked
        .iter()
        .filter(|l| l["revoked"] != json!(true))
        .collect();
    assert!(
        lost.is_empty(),
        "{} counted revocations lost: {:?}",
        lost.len(),
        &lost[..lost.len().min(3)]
    );
    assert_revoked(&gw, &up, &token("k9", accepted as usize)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_then_import_into_a_fresh_deployment_enforces_the_same_rules() {
    let up = Upstream::new().spawn().await;
    let deployment = || {
        Gateway::new()
            .upstream(&up.url)
            .toml(&format!(
                "[tokens]\nfingerprint_key = \"{FP_KEY}\"\nrevoke_by_jti = true"
            ))
            .spawn()
    };
    let a = deployment();
    let input = a.dir.join("input.txt");
    {
        let mut f = std::fs::File::create(&input).unwrap();
        for i in 1..=1_000 {
            writeln!(f, "{}", token("ex", i)).unwrap();
        }
        writeln!(
            f,
            "{}",
            json!({"scope": {"sub": "ex-user", "provider": "github"}})
        )
        .unwrap();
        writeln!(f, "{}", json!({"jti": "jti-ex-1"})).unwrap();
    }
    let (code, v, stderr) = admin_cli(
        &a.admin_url,
        &["import", "--file", input.to_str().unwrap()],
        None,
    );
    assert_eq!((code, &v["accepted"]), (0, &json!(1_002)), "{v} {stderr}");
    // A binding: an opaque credential held by a subject a scope rule covers.
    let r = post_json(
        &format!("{}/admin/v1/principals", a.admin_url),
        &json!({"credential": "opaque-ex-key", "sub": "ex-bound", "issued_at": now() - 100}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = post_json(
        &format!("{}/admin/v1/revocations", a.admin_url),
        &json!({"scope": {"sub": "ex-bound"}}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_revoked(&a, &up, "opaque-ex-key").await;

    let exported = a.dir.join("export.ndjson");
    let (code, _, stderr) = admin_cli(
        &a.admin_url,
        &["export", "--file", exported.to_str().unwrap()],
        None,
    );
    assert_eq!(code, 0, "{stderr}");
    let text = std::fs::read_to_string(&exported).unwrap();
    // 1,000 tokens + the jti rule, 2 scope rules, 1 binding.
    assert_eq!(text.lines().count(), 1_004, "{stderr}");
    assert!(stderr.contains("export: 1004 rules"), "{stderr}");
    for secret in ["ex-000001-opaque", "opaque-ex-key", "jti-ex-1"] {
        assert!(!text.contains(secret), "the export holds a raw token");
    }
    let kinds = |k: &str| {
        text.lines()
            .filter(|l| serde_json::from_str::<Value>(l).unwrap()["kind"] == json!(k))
            .count()
    };
    assert_eq!(
        (kinds("token"), kinds("scope"), kinds("bind")),
        (1_001, 2, 1)
    );

    let b = deployment();
    // Nothing yet on B.
    assert_passes(&b, &up, &token("ex", 1)).await;
    let (code, v, stderr) = admin_cli(
        &b.admin_url,
        &["import", "--file", exported.to_str().unwrap()],
        None,
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        (&v["accepted"], &v["rejected"]),
        (&json!(1_004), &json!(0)),
        "{v}"
    );
    for i in [1, 500, 1_000] {
        assert_revoked(&b, &up, &token("ex", i)).await;
    }
    assert_revoked(&b, &up, &scoped_jwt("ex-user")).await;
    assert_revoked(
        &b,
        &up,
        &jwt(&json!({"jti": "jti-ex-1", "exp": now() + 600})),
    )
    .await;
    assert_revoked(&b, &up, "opaque-ex-key").await;
    assert_passes(&b, &up, &token("ex", 1_001)).await;
    // Importing the same export again changes nothing.
    let (_, v, _) = admin_cli(
        &b.admin_url,
        &["import", "--file", exported.to_str().unwrap()],
        None,
    );
    assert_eq!(
        (&v["accepted"], &v["changed"]),
        (&json!(1_004), &json!(0)),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_and_export_need_the_admin_token() {
    let up = Upstream::new().spawn().await;
    let gw = Gateway::new()
        .upstream(&up.url)
        .toml("[admin]\ntoken = \"admin-secret-bulk-0123456789\"")
        .spawn();
    let url = format!("{}/admin/v1/revocations/import", gw.admin_url);
    let r = send(call("POST", &url, &[], b"tok-a\n")).await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({"error": "invalid_token", "error_description": "admin token required"})
    );
    let r = fetch(
        &format!("{}/admin/v1/revocations/export", gw.admin_url),
        &[],
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_passes(&gw, &up, "tok-a").await;
    let r = send(call(
        "POST",
        &url,
        &[("authorization", "Bearer admin-secret-bulk-0123456789")],
        b"tok-a\n",
    ))
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["accepted"], json!(1));
    assert_revoked(&gw, &up, "tok-a").await;
    let r = fetch(
        &format!("{}/admin/v1/revocations/export", gw.admin_url),
        &[],
    )
    .await;
    assert_eq!(r.status, 401);
    // The CLI with the token in the environment.
    let out = Command::new(bin())
        .args(["admin", "--admin-url", &gw.admin_url, "export"])
        .env("REVGATE_ADMIN_TOKEN", "admin-secret-bulk-0123456789")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
    // A wrong method is named.
    let r = fetch(
        &url,
        &[("authorization", "Bearer admin-secret-bulk-0123456789")],
    )
    .await;
    assert_eq!(r.status, 405, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtin_ok_and_echo_answer_after_the_verdict_with_no_upstream_anywhere() {
    for (name, path_toml) in PATHS {
        let ok = Gateway::new()
            .upstream("builtin:ok")
            .toml(path_toml)
            .spawn();
        admin_revoke(&ok, "revoked-builtin").await;
        for _ in 0..3 {
            let r = get_bearer(&format!("{}/any/path", ok.url), "valid-builtin").await;
            assert_eq!(r.status, 200, "{name}: {}", r.text());
            assert_eq!(r.text(), "ok\n", "{name}");
            assert_eq!(r.header("content-type"), Some("text/plain"), "{name}");
        }
        // A body is read and dropped; the answer is the same.
        let r = send(call(
            "POST",
            &format!("{}/upload", ok.url),
            &[("authorization", "Bearer valid-builtin")],
            &[b'x'; 10_000],
        ))
        .await;
        assert_eq!((r.status, r.text().as_str()), (200, "ok\n"), "{name}");
        let r = get_bearer(&format!("{}/any/path", ok.url), "revoked-builtin").await;
        assert_revoked_response(&r);
        // A forward-mode revoke call (RFC 7009): the built-in's 200 is the
        // upstream's 2xx, so the revocation is applied.
        let r = send(call(
            "POST",
            &format!("{}/oauth/revoke", ok.url),
            &[("content-type", "application/x-www-form-urlencoded")],
            b"token=revoked-by-call",
        ))
        .await;
        assert_eq!((r.status, r.text().as_str()), (200, "ok\n"), "{name}");
        let r = get_bearer(&format!("{}/any/path", ok.url), "revoked-by-call").await;
        assert_revoked_response(&r);
        // HTTP/2 (always the hyper path).
        let r = send_with(
            &h2c_client(),
            get(&format!("{}/h2", ok.url))
                .header("authorization", "Bearer valid-builtin")
                .body(Default::default())
                .unwrap(),
        )
        .await;
        assert_eq!((r.status, r.text().as_str()), (200, "ok\n"), "{name} h2");
        let r = send_with(
            &h2c_client(),
            get(&format!("{}/h2", ok.url))
                .header("authorization", "Bearer revoked-builtin")
                .body(Default::default())
                .unwrap(),
        )
        .await;
        assert_revoked_response(&r);
        // Counted as forwarded, with no upstream time.
        let metrics = fetch(&format!("{}/metrics", ok.admin_url), &[])
            .await
            .text();
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("revgate_requests_total")
                    && l.contains("outcome=\"forwarded\"")),
            "{name}: {metrics}"
        );

        let echo = Gateway::new()
            .upstream("builtin:echo")
            .toml(path_toml)
            .spawn();
        let r = fetch(
            &format!("{}/p/q?q=secret-in-query", echo.url),
            &[
                ("authorization", "Bearer secret-in-header"),
                ("cookie", "s=secret-cookie"),
                ("x-demo", "1"),
            ],
        )
        .await;
        assert_eq!(r.status, 200, "{name}: {}", r.text());
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert!(
            !r.text().contains("secret"),
            "{name}: a credential was echoed: {}",
            r.text()
        );
        let v = r.json();
        assert_eq!(v["upstream"], json!("revgate builtin:echo"));
        assert_eq!(v["method"], json!("GET"));
        assert_eq!(v["path"], json!("/p/q"));
        assert_eq!(v["authorized"], json!(true));
        assert_eq!(v["headers"]["x-demo"], json!("1"));
        assert!(v["headers"].get("authorization").is_none());
        admin_revoke(&echo, "revoked-echo").await;
        let r = get_bearer(&format!("{}/p", echo.url), "revoked-echo").await;
        assert_revoked_response(&r);
    }
}

#[test]
fn an_unknown_builtin_upstream_is_refused_at_start() {
    let out = Command::new(bin())
        .args(["check-config", "--upstream", "builtin:nope"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Bad configuration exits 2, as every config error does.
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("upstream.url") && stderr.contains("builtin:ok or builtin:echo"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirmed_import_is_enforced_by_every_instance_the_moment_it_is_answered() {
    redis_support::require_redis_server();
    let redis = RedisServer::spawn();
    let up = Upstream::new().spawn().await;
    let instance = || {
        Gateway::new()
            .upstream(&up.url)
            .arg("--store")
            .arg(&redis.url())
            .arg("--consistency")
            .arg("confirmed")
            .toml(&format!(
                "[tokens]\nfingerprint_key = \"{FP_KEY}\"\n[store]\nkey_prefix = \"conf\"\nlease = \"1s\"\nconfirm_timeout = \"4s\""
            ))
            .spawn()
    };
    let (a, b) = (instance(), instance());
    for g in [&a, &b] {
        ready(g).await;
        let url = format!("{}/probe", g.url);
        wait_for(
            "the instance holds its lease",
            Duration::from_secs(20),
            || async { get_bearer(&url, "probe-token").await.status == 200 },
        )
        .await;
    }
    let hits = up.hits();
    let mut body = String::new();
    for i in 1..=25_000 {
        body.push_str(&token("conf", i));
        body.push('\n');
    }
    let r = send(call(
        "POST",
        &format!("{}/admin/v1/revocations/import", a.admin_url),
        &[],
        body.as_bytes(),
    ))
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["accepted"], json!(25_000));
    // Answered: B already has every batch (three of them), no waiting.
    for i in [1, 9_999, 10_000, 10_001, 20_001, 25_000] {
        let r = get_bearer(&format!("{}/after", b.url), &token("conf", i)).await;
        assert_revoked_response(&r);
    }
    assert_eq!(up.hits(), hits, "a revoked token reached the upstream");
}

/// A raw token's fingerprint, as the gateway's lookup names it.
async fn fingerprint_of(gw: &RunningGateway, token: &str) -> String {
    let r = post_json(
        &format!("{}/admin/v1/revocations/lookup", gw.admin_url),
        &json!({ "token": token }),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["fingerprint"].as_str().unwrap().to_string()
}

/// Imports token rules (fingerprint, expires_at) as the export's lines,
/// through the CLI; its summary.
fn import_rules(gw: &RunningGateway, name: &str, rules: &[(&str, u64)]) -> Value {
    let path = gw.dir.join(name);
    let mut text = String::new();
    for (fp, exp) in rules {
        text.push_str(&json!({"kind": "token", "fingerprint": fp, "expires_at": exp}).to_string());
        text.push('\n');
    }
    std::fs::write(&path, text).unwrap();
    let (code, v, stderr) = admin_cli(
        &gw.admin_url,
        &["import", "--file", path.to_str().unwrap()],
        None,
    );
    assert_eq!(code, 0, "{stderr}");
    v
}

/// Every token rule an instance exports: fingerprint -> expires_at.
fn exported_tokens(gw: &RunningGateway) -> std::collections::HashMap<String, u64> {
    let path = gw.dir.join("export-tokens.ndjson");
    let (code, _, stderr) = admin_cli(
        &gw.admin_url,
        &["export", "--file", path.to_str().unwrap()],
        None,
    );
    assert_eq!(code, 0, "{stderr}");
    std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["kind"] == json!("token"))
        .map(|v| {
            (
                v["fingerprint"].as_str().unwrap().to_string(),
                v["expires_at"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// An import over rules Redis holds already: a later expiry wins, an
/// earlier or equal one changes nothing, a new rule is written; checked in
/// Redis (the value and the key's own expiry, on whichever of `servers`
/// holds the deployment), in the import's counts, and on the second
/// instance `b` (enforced, and its export, read from Redis, shows the
/// merged expiries).
async fn an_import_merges_with_what_redis_holds(
    a: &RunningGateway,
    b: &RunningGateway,
    up: &RunningUpstream,
    prefix: &str,
    servers: &[RedisServer],
) {
    let names = ["later", "earlier", "same", "new"];
    let tokens: Vec<String> = names.iter().map(|n| format!("{prefix}-{n}")).collect();
    let mut fps = Vec::new();
    for t in &tokens {
        fps.push(fingerprint_of(a, t).await);
    }
    let (later, earlier, same, new) = (&fps[0], &fps[1], &fps[2], &fps[3]);
    let t1 = now() + 3_600;
    let v = import_rules(a, "first.ndjson", &[(later, t1), (earlier, t1), (same, t1)]);
    assert_eq!(
        (&v["accepted"], &v["changed"], &v["rejected"]),
        (&json!(3), &json!(3), &json!(0)),
        "{v}"
    );
    let v = import_rules(
        a,
        "second.ndjson",
        &[
            (later, t1 + 3_600),
            (earlier, t1 - 1_800),
            (same, t1),
            (new, t1),
        ],
    );
    // Changed: the later expiry and the new rule.
    assert_eq!(
        (&v["accepted"], &v["changed"], &v["rejected"]),
        (&json!(4), &json!(2), &json!(0)),
        "{v}"
    );
    let want = [(later, t1 + 3_600), (earlier, t1), (same, t1), (new, t1)];
    // The node with the deployment's stream (a Cluster node answers MOVED
    // for another slot's key).
    let stream = format!("{{{prefix}}}:events");
    let mut conns: Vec<redis::Connection> = servers.iter().map(|s| s.conn()).collect();
    let at = conns
        .iter_mut()
        .position(|c| {
            redis::cmd("EXISTS")
                .arg(&stream)
                .query::<i64>(c)
                .unwrap_or(0)
                == 1
        })
        .expect("a node holds the deployment's stream");
    let redis = &mut conns[at];
    for (fp, exp) in want {
        let key = format!("{{{prefix}}}:tok:{fp}");
        let value: String = redis::cmd("GET").arg(&key).query(redis).unwrap();
        assert_eq!(value, exp.to_string(), "{key}");
        let at: u64 = redis::cmd("EXPIRETIME").arg(&key).query(redis).unwrap();
        assert_eq!(at, exp, "{key}'s expiry");
    }
    // Two batches, one stream event each.
    let events: u64 = redis::cmd("XLEN").arg(&stream).query(redis).unwrap();
    assert_eq!(events, 2, "stream events");
    let last = &tokens[3];
    wait_for(
        "instance B has the second batch",
        Duration::from_secs(10),
        || async { get_bearer(&format!("{}/data", b.url), last).await.status == 401 },
    )
    .await;
    for t in &tokens {
        assert_revoked(a, up, t).await;
        assert_revoked(b, up, t).await;
    }
    let exported = exported_tokens(b);
    for (fp, exp) in want {
        assert_eq!(exported.get(fp.as_str()), Some(&exp), "B's export of {fp}");
    }
    assert_eq!(exported.len(), 4, "{exported:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_over_rules_in_redis_keeps_the_later_expiry_on_every_instance() {
    redis_support::require_redis_server();
    let redis = RedisServer::spawn();
    let up = Upstream::new().spawn().await;
    let instance = || on_redis(&up.url, &redis.url(), "merge");
    let (a, b) = (instance(), instance());
    ready(&a).await;
    ready(&b).await;
    an_import_merges_with_what_redis_holds(&a, &b, &up, "merge", std::slice::from_ref(&redis))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_redis_cluster_an_import_writes_every_batch_in_the_deployment_slot() {
    redis_support::require_redis_server();
    let cluster = redis_support::RedisCluster::spawn(3);
    let up = Upstream::new().spawn().await;
    let instance = |prefix: &str| on_redis(&up.url, &cluster.url(), prefix);
    let (a, b) = (instance("clu"), instance("clu"));
    ready(&a).await;
    ready(&b).await;
    // 20,001 tokens: two full batches and one of a single rule, in one
    // CLI request.
    let input = a.dir.join("input.txt");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&input).unwrap());
        for i in 1..=20_001 {
            writeln!(f, "{}", token("clu", i)).unwrap();
        }
    }
    let (code, v, stderr) = admin_cli(
        &a.admin_url,
        &["import", "--file", input.to_str().unwrap()],
        None,
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        (&v["accepted"], &v["changed"], &v["rejected"]),
        (&json!(20_001), &json!(20_001), &json!(0)),
        "{v}"
    );
    // One deployment, one slot: every key on one node, three events.
    let per_node: Vec<i64> = cluster
        .nodes
        .iter()
        .map(|n| redis::cmd("DBSIZE").query(&mut n.conn()).unwrap())
        .collect();
    let holders: Vec<usize> = (0..per_node.len()).filter(|&i| per_node[i] > 0).collect();
    assert_eq!(holders.len(), 1, "keys per node: {per_node:?}");
    let mut conn = cluster.nodes[holders[0]].conn();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("{clu}:tok:*")
        .query(&mut conn)
        .unwrap();
    assert_eq!(keys.len(), 20_001);
    let events: u64 = redis::cmd("XLEN")
        .arg("{clu}:events")
        .query(&mut conn)
        .unwrap();
    assert_eq!(events, 3, "stream events");
    let last = token("clu", 20_001);
    wait_for(
        "instance B has the last batch",
        Duration::from_secs(10),
        || async { get_bearer(&format!("{}/data", b.url), &last).await.status == 401 },
    )
    .await;
    for i in [1, 10_000, 10_001, 20_000, 20_001] {
        assert_revoked(&a, &up, &token("clu", i)).await;
        assert_revoked(&b, &up, &token("clu", i)).await;
    }
    assert_passes(&b, &up, &token("clu", 20_002)).await;
    // The merge step runs in the slot too (another deployment, same cluster).
    let (c, d) = (instance("clum"), instance("clum"));
    ready(&c).await;
    ready(&d).await;
    an_import_merges_with_what_redis_holds(&c, &d, &up, "clum", &cluster.nodes).await;
}

/// While Redis is away an import fills the outbox (journaled, and held in
/// memory until replayed) only up to `BACKLOG_MAX` (100,000): the batch
/// after it is refused with 503 and the counts of what was recorded, which
/// is enforced and reaches Redis when it is back; nothing past it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_while_redis_is_away_stops_at_the_backlog_bound() {
    redis_support::require_redis_server();
    let mut redis = RedisServer::spawn();
    let up = Upstream::new().spawn().await;
    let a = on_redis(&up.url, &redis.url(), "bound");
    ready(&a).await;
    redis.stop();
    let mut body = String::new();
    for i in 1..=130_000 {
        body.push_str(&token("bound", i));
        body.push('\n');
    }
    let r = send(call(
        "POST",
        &format!("{}/admin/v1/revocations/import", a.admin_url),
        &[],
        body.as_bytes(),
    ))
    .await;
    assert_eq!(r.status, 503, "{}", r.text());
    let v = r.json();
    assert_eq!(
        (&v["accepted"], &v["error"]),
        (&json!(100_000), &json!("temporarily_unavailable")),
        "{v}"
    );
    let why = v["error_description"].as_str().unwrap();
    assert!(
        why.contains("100000 revocations not yet written to Redis") && why.contains("import again"),
        "{why}"
    );
    assert_revoked(&a, &up, &token("bound", 1)).await;
    assert_revoked(&a, &up, &token("bound", 100_000)).await;
    assert_passes(&a, &up, &token("bound", 100_001)).await;
    assert_passes(&a, &up, &token("bound", 130_000)).await;
    // What was acknowledged reaches Redis once it is back; nothing more.
    redis.start();
    let mut conn = redis.conn();
    wait_for("the outbox reaches Redis", Duration::from_secs(60), || {
        let n: usize = redis::cmd("KEYS")
            .arg("{bound}:tok:*")
            .query::<Vec<String>>(&mut conn)
            .map(|k| k.len())
            .unwrap_or(0);
        async move { n == 100_000 }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_queued_while_redis_is_away_is_replayed_as_batches_when_it_returns() {
    redis_support::require_redis_server();
    let mut redis = RedisServer::spawn();
    let up = Upstream::new().spawn().await;
    let instance = || on_redis(&up.url, &redis.url(), "away");
    let (a, b) = (instance(), instance());
    ready(&a).await;
    ready(&b).await;
    redis.stop();
    // 25,000 tokens while Redis is away: three batches into A's outbox.
    let mut body = String::new();
    for i in 1..=25_000 {
        body.push_str(&token("away", i));
        body.push('\n');
    }
    let r = send(call(
        "POST",
        &format!("{}/admin/v1/revocations/import", a.admin_url),
        &[],
        body.as_bytes(),
    ))
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        (&r.json()["accepted"], &r.json()["changed"]),
        (&json!(25_000), &json!(25_000)),
        "{}",
        r.text()
    );
    // Enforced by A at once, from its outbox.
    for i in [1, 12_345, 25_000] {
        assert_revoked(&a, &up, &token("away", i)).await;
    }
    // Redis back on the same port (empty: no persistence): the outbox
    // reaches it as batches, one pipeline and one event per 10,000 rules
    // (25,000 single writes and events before).
    redis.start();
    let mut conn = redis.conn();
    let count = |conn: &mut redis::Connection| -> usize {
        redis::cmd("KEYS")
            .arg("{away}:tok:*")
            .query::<Vec<String>>(conn)
            .map(|k| k.len())
            .unwrap_or(0)
    };
    wait_for("the outbox reaches Redis", Duration::from_secs(30), || {
        let n = count(&mut conn);
        async move { n == 25_000 }
    })
    .await;
    let events: u64 = redis::cmd("XLEN")
        .arg("{away}:events")
        .query(&mut conn)
        .unwrap();
    assert_eq!(events, 3, "stream events of the replay");
    let value: String = redis::cmd("GET")
        .arg(format!(
            "{{away}}:tok:{}",
            fingerprint_of(&a, &token("away", 777)).await
        ))
        .query(&mut conn)
        .unwrap();
    assert!(value.parse::<u64>().unwrap() > now(), "{value}");
    // B, which was connected before the outage, learns them from Redis.
    let last = token("away", 25_000);
    wait_for(
        "B has the replayed import",
        Duration::from_secs(20),
        || async { get_bearer(&format!("{}/data", b.url), &last).await.status == 401 },
    )
    .await;
    for i in [1, 10_000, 10_001, 20_001, 25_000] {
        assert_revoked(&b, &up, &token("away", i)).await;
    }
    assert_passes(&b, &up, &token("away", 25_001)).await;
    // A's outbox is empty.
    let url = format!("{}/metrics", a.admin_url);
    wait_for("A's outbox drains", Duration::from_secs(10), || async {
        fetch(&url, &[])
            .await
            .text()
            .lines()
            .any(|l| l == "revgate_store_journal_backlog 0")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn principal_lines_are_imported_as_the_principals_api_records_them() {
    let up = Upstream::new().spawn().await;
    let gw = Gateway::new().upstream(&up.url).spawn();
    let lines = [
        json!({"credential": "opaque-p-1", "sub": "p-user", "provider": "github"}).to_string(), // 1
        json!({"credential": "opaque-p-2", "sub": "p-other", "org": "42", "expires_at": now() + 600}).to_string(), // 2
        json!({"credential": "opaque-p-3", "sub": "p-user", "provider": "github", "expires_at": 1}).to_string(), // 3 expired
        json!({"credential": "opaque-p-4"}).to_string(), // 4
        json!({"credential": "", "sub": "p-user"}).to_string(), // 5
        json!({"credential": "opaque-p-5", "sub": "p-user", "family": "f"}).to_string(), // 6
        json!({"credential": "opaque-p-6", "sub": "p-user", "token": "t"}).to_string(), // 7
        json!({"credential": "opaque-p-7", "sub": "p-user", "issued_at": now() + 900, "expires_at": now() + 600}).to_string(), // 8
        json!({"credential": "opaque-p-8", "sub": "x".repeat(257)}).to_string(), // 9
        // After the bindings: the subject's scope rule covers its credentials.
        json!({"scope": {"sub": "p-user", "provider": "github"}}).to_string(), // 10
    ];
    let r = send(call(
        "POST",
        &format!("{}/admin/v1/revocations/import", gw.admin_url),
        &[("content-type", "application/x-ndjson")],
        lines.join("\n").as_bytes(),
    ))
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({
            "lines": 10, "accepted": 3, "changed": 3, "expired": 1, "rejected": 6,
            "errors": [
                {"line": 4, "error": "sub is required; org and provider, when given, must be non-empty"},
                {"line": 5, "error": "credential must be non-empty visible ASCII"},
                {"line": 6, "error": "family is not imported on a principal line: give the membership as a {\"kind\":\"join\"} line (as the export writes it), or record it with POST /admin/v1/principals"},
                {"line": 7, "error": r#"a principal line is {"credential","sub","org","provider","issued_at","expires_at"} alone"#},
                {"line": 8, "error": "issued_at is after expires_at"},
                {"line": 9, "error": "sub, org and provider are at most 256 bytes each"},
            ],
            "errors_truncated": false,
        })
    );
    assert!(!r.text().contains("opaque"), "a credential echoed");
    // The bindings, as the principals API shows them.
    let url = format!("{}/admin/v1/principals/lookup", gw.admin_url);
    let lookup = |c: &str| {
        let url = url.clone();
        let body = json!({ "credential": c });
        async move { post_json(&url, &body).await }
    };
    let p1 = lookup("opaque-p-1").await;
    assert_eq!(p1.status, 200, "{}", p1.text());
    assert_eq!(
        (
            &p1.json()["sub"],
            &p1.json()["provider"],
            &p1.json()["revoked"]
        ),
        (&json!("p-user"), &json!("github"), &json!(true)),
        "{}",
        p1.text()
    );
    let p2 = lookup("opaque-p-2").await;
    assert_eq!(p2.status, 200, "{}", p2.text());
    assert_eq!(
        (&p2.json()["sub"], &p2.json()["org"], &p2.json()["revoked"]),
        (&json!("p-other"), &json!("42"), &json!(false)),
        "{}",
        p2.text()
    );
    for c in ["opaque-p-3", "opaque-p-5"] {
        assert_eq!(lookup(c).await.status, 404, "{c} was not imported");
    }
    // Enforced: the scope rule revokes the bound credential, not the other.
    assert_revoked(&gw, &up, "opaque-p-1").await;
    assert_passes(&gw, &up, "opaque-p-2").await;
}

/// An expiry Redis cannot hold (`EXAT` takes at most ~9.2e15): an import
/// line's `expires_at`, or an unverified JWT `exp` a client forged and then
/// revoked. Redis refused the whole write (inside a `MULTI` it even applied
/// the batch's other `SET`s and then failed), the batch went to the outbox,
/// and every replay failed on it again: nothing revoked on that instance
/// after it ever reached Redis or another instance. The store now records
/// such a rule until `MAX_EXPIRES_AT` (year 9999).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiry_past_redis_range_is_recorded_and_never_blocks_later_revocations() {
    redis_support::require_redis_server();
    let redis = RedisServer::spawn();
    let up = Upstream::new().spawn().await;
    let instance = || on_redis(&up.url, &redis.url(), "far");
    let (a, b) = (instance(), instance());
    ready(&a).await;
    ready(&b).await;
    let far: u64 = 100_000_000_000_000_000;
    let fp_far = fingerprint_of(&a, "far-import").await;
    let fp_next = fingerprint_of(&a, "far-next").await;
    let v = import_rules(
        &a,
        "far.ndjson",
        &[(&fp_far, far), (&fp_next, now() + 3_600)],
    );
    assert_eq!(
        (&v["accepted"], &v["rejected"]),
        (&json!(2), &json!(0)),
        "{v}"
    );
    // The single path: a JWT whose (unverified) exp is past the range.
    let forged = jwt(&json!({"sub": "far-user", "exp": far}));
    let r = admin_revoke(&a, &forged).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = admin_revoke(&a, "far-after").await;
    assert_eq!(r.status, 200, "{}", r.text());
    // B learns every one of them from Redis.
    wait_for(
        "instance B has the revocation made after the far ones",
        Duration::from_secs(10),
        || async {
            get_bearer(&format!("{}/data", b.url), "far-after")
                .await
                .status
                == 401
        },
    )
    .await;
    for t in ["far-import", "far-next", forged.as_str(), "far-after"] {
        assert_revoked(&b, &up, t).await;
    }
    let mut conn = redis.conn();
    let held: u64 = redis::cmd("GET")
        .arg(format!("{{far}}:tok:{fp_far}"))
        .query(&mut conn)
        .unwrap();
    assert_eq!(held, 253_402_300_799, "kept until the year 9999");
    let url = format!("{}/metrics", a.admin_url);
    assert!(
        fetch(&url, &[])
            .await
            .text()
            .lines()
            .any(|l| l == "revgate_store_journal_backlog 0"),
        "A's outbox is empty"
    );
}

/// The order Redis executed an import's writes in, from `MONITOR`: the
/// batch's stream event comes after every write of its rules, the merge of
/// the rules that existed included. With the event inside the `MULTI` and
/// the merge after it, another instance applied the event, could look the
/// fingerprint up while an older rule had just expired and the merge had
/// not run yet, and cache that "not revoked" (the event was behind it, so
/// nothing dropped the answer) for `store.confirm_ttl` after the batch was
/// acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_batch_s_stream_event_follows_every_write_of_its_rules() {
    redis_support::require_redis_server();
    let redis = RedisServer::spawn();
    let up = Upstream::new().spawn().await;
    let a = on_redis(&up.url, &redis.url(), "mon");
    ready(&a).await;
    let old = fingerprint_of(&a, "mon-old").await;
    let new = fingerprint_of(&a, "mon-new").await;
    let t1 = now() + 3_600;
    import_rules(&a, "first.ndjson", &[(&old, t1)]);
    let log = a.dir.join("monitor.txt");
    let mut monitor = Command::new("redis-cli")
        .args(["-p", &redis.port().to_string(), "monitor"])
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_for("MONITOR is on", Duration::from_secs(10), || {
        let on = read().starts_with("OK");
        async move { on }
    })
    .await;
    let v = import_rules(&a, "second.ndjson", &[(&old, t1 + 3_600), (&new, t1)]);
    assert_eq!(
        (&v["accepted"], &v["changed"]),
        (&json!(2), &json!(2)),
        "{v}"
    );
    let xadd = |text: &str| {
        text.lines()
            .position(|l| l.contains("\"XADD\"") && l.contains("{mon}:events"))
    };
    wait_for("MONITOR shows the event", Duration::from_secs(10), || {
        let seen = xadd(&read()).is_some();
        async move { seen }
    })
    .await;
    let _ = monitor.kill();
    let _ = monitor.wait();
    let text = read();
    let event = xadd(&text).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    for fp in [&old, &new] {
        let key = format!("{{mon}}:tok:{fp}");
        let writes: Vec<usize> = (0..lines.len())
            .filter(|&i| lines[i].contains(&key))
            .collect();
        assert!(
            !writes.is_empty(),
            "MONITOR shows no write of {key}:\n{text}"
        );
        assert!(
            writes.iter().all(|&i| i < event),
            "a write of {key} after the batch's event (line {event}):\n{text}"
        );
    }
}

/// Records `credential` in the token family named `family` (principals API).
async fn join_family(gw: &RunningGateway, credential: &str, family: &str, refresh: bool) {
    let token_type = if refresh {
        "refresh_token"
    } else {
        "access_token"
    };
    let r = post_json(
        &format!("{}/admin/v1/principals", gw.admin_url),
        &json!({"credential": credential, "sub": "fam-user", "family": family, "token_type": token_type}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// Export from `a` -> import into `b` (a fresh deployment, same
/// fingerprint key): the family rules and memberships come along. On `a`:
/// grant `g1` (access + refresh) revoked as a family, grant `g2` only
/// recorded. On `b` after the import: `g1`'s tokens revoked (token rules,
/// as before), a token that joins `g1` afterwards is revoked as it joins
/// (the family rule came along; it passed before), and revoking `g2`'s
/// refresh token's grant on `b` reaches `g2`'s access token (the
/// memberships came along; it passed before).
async fn families_survive_export_and_import(
    a: &RunningGateway,
    b: &RunningGateway,
    up: &RunningUpstream,
) {
    join_family(a, "fam-g1-access", "g1", false).await;
    join_family(a, "fam-g1-refresh", "g1", true).await;
    join_family(a, "fam-g2-access", "g2", false).await;
    join_family(a, "fam-g2-refresh", "g2", true).await;
    let r = post_json(
        &format!("{}/admin/v1/revocations", a.admin_url),
        &json!({"token": "fam-g1-refresh", "family": true}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_revoked(a, up, "fam-g1-access").await;
    assert_passes(a, up, "fam-g2-access").await;

    let exported = a.dir.join("families.ndjson");
    let (code, _, stderr) = admin_cli(
        &a.admin_url,
        &["export", "--file", exported.to_str().unwrap()],
        None,
    );
    assert_eq!(code, 0, "{stderr}");
    let text = std::fs::read_to_string(&exported).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kind = |k: &str| lines.iter().filter(|v| v["kind"] == json!(k)).count();
    // g1's grant rule; four memberships; g1's two tokens as token rules;
    // four bindings.
    assert_eq!(
        (kind("family"), kind("join"), kind("token"), kind("bind")),
        (1, 4, 2, 4),
        "{text}"
    );
    let rule = lines.iter().find(|v| v["kind"] == json!("family")).unwrap();
    assert!(rule.get("generation").is_none(), "a grant rule: {rule}");
    assert!(rule["expires_at"].as_u64().unwrap() > now(), "{rule}");
    for secret in ["fam-g1", "fam-g2", "\"g1\"", "\"g2\""] {
        assert!(!text.contains(secret), "the export names {secret}");
    }

    assert_passes(b, up, "fam-g1-access").await;
    let (code, v, stderr) = admin_cli(
        &b.admin_url,
        &["import", "--file", exported.to_str().unwrap()],
        None,
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        (&v["accepted"], &v["rejected"]),
        (&json!(lines.len()), &json!(0)),
        "{v}"
    );
    assert_revoked(b, up, "fam-g1-access").await;
    assert_revoked(b, up, "fam-g1-refresh").await;
    assert_passes(b, up, "fam-g2-access").await;
    // The family rule: closed to a token that joins it later.
    join_family(b, "fam-g1-late", "g1", false).await;
    assert_revoked(b, up, "fam-g1-late").await;
    // The memberships: a grant revoked after the move reaches its tokens.
    let r = post_json(
        &format!("{}/admin/v1/revocations", b.admin_url),
        &json!({"token": "fam-g2-refresh", "family": true}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_revoked(b, up, "fam-g2-access").await;
    assert_revoked(b, up, "fam-g2-refresh").await;
    // Importing the same export again changes nothing.
    let (_, v, _) = admin_cli(
        &b.admin_url,
        &["import", "--file", exported.to_str().unwrap()],
        None,
    );
    assert_eq!(
        (&v["accepted"], &v["rejected"]),
        (&json!(lines.len()), &json!(0)),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_families_are_exported_and_imported_with_the_embedded_store() {
    let up = Upstream::new().spawn().await;
    let deployment = || {
        Gateway::new()
            .upstream(&up.url)
            .toml(&format!("[tokens]\nfingerprint_key = \"{FP_KEY}\""))
            .spawn()
    };
    let (a, b) = (deployment(), deployment());
    families_survive_export_and_import(&a, &b, &up).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_families_are_exported_and_imported_with_redis() {
    redis_support::require_redis_server();
    let redis = RedisServer::spawn();
    let up = Upstream::new().spawn().await;
    let deployment = |prefix: &str| on_redis(&up.url, &redis.url(), prefix);
    let (a, b) = (deployment("fama"), deployment("famb"));
    ready(&a).await;
    ready(&b).await;
    families_survive_export_and_import(&a, &b, &up).await;
}

/// Imports `n` bindings and `n` memberships (and one family rule), exports,
/// and checks every one came out (at least once: a Redis `SCAN` may return
/// a key twice), walked in chunks: the store hands the export bindings and
/// families a chunk at a time (one `SCAN` step from Redis, rules then
/// memberships), never all of them at once.
async fn many_bindings_and_members_export_in_chunks(gw: &RunningGateway, n: u64) {
    let later = now() + 3600;
    let hex = |tag: u64, i: u64| format!("{:016x}{:016x}", tag, i);
    let input = gw.dir.join("principals.ndjson");
    {
        let mut f = std::fs::File::create(&input).unwrap();
        for i in 0..n {
            let bind = json!({"kind": "bind", "fingerprint": hex(0xb1, i), "sub": format!("u-{i}"),
                "issued_at": now() - 10, "expires_at": later});
            let join = json!({"kind": "join", "fingerprint": hex(0x10, i), "family": hex(0xfa, i % 7),
                "generation": 0, "refresh": false, "expires_at": later});
            writeln!(f, "{bind}\n{join}").unwrap();
        }
        let rule = json!({"kind": "family", "family": hex(0xfa, 3), "revoked_at": now() - 5, "expires_at": later});
        writeln!(f, "{rule}").unwrap();
    }
    let (code, v, stderr) = admin_cli(
        &gw.admin_url,
        &["import", "--file", input.to_str().unwrap()],
        None,
    );
    assert_eq!(code, 0, "{v} {stderr}");
    assert_eq!(
        (&v["accepted"], &v["rejected"]),
        (&json!(2 * n + 1), &json!(0)),
        "{v}"
    );

    let exported = gw.dir.join("principals-export.ndjson");
    let (code, _, stderr) = admin_cli(
        &gw.admin_url,
        &["export", "--file", exported.to_str().unwrap()],
        None,
    );
    assert_eq!(code, 0, "{stderr}");
    let text = std::fs::read_to_string(&exported).unwrap();
    let mut binds = std::collections::HashSet::new();
    let mut joins = std::collections::HashSet::new();
    let mut families = 0;
    for l in text.lines() {
        let v: Value = serde_json::from_str(l).unwrap();
        match v["kind"].as_str().unwrap() {
            "bind" => {
                assert_eq!(v["expires_at"], json!(later), "{v}");
                binds.insert(v["fingerprint"].as_str().unwrap().to_string());
            }
            "join" => {
                joins.insert(v["fingerprint"].as_str().unwrap().to_string());
            }
            "family" => families += 1,
            _ => {}
        }
    }
    assert_eq!(binds.len() as u64, n);
    assert_eq!(joins.len() as u64, n);
    assert!((1..=2).contains(&families), "{families}");
    assert!(binds.contains(&hex(0xb1, n - 1)) && joins.contains(&hex(0x10, 0)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bindings_and_members_export_in_chunks_from_the_embedded_store() {
    let up = Upstream::new().spawn().await;
    let gw = Gateway::new()
        .upstream(&up.url)
        .toml(&format!("[tokens]\nfingerprint_key = \"{FP_KEY}\""))
        .spawn();
    ready(&gw).await;
    many_bindings_and_members_export_in_chunks(&gw, 3_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bindings_and_members_export_in_chunks_from_redis() {
    redis_support::require_redis_server();
    let redis = RedisServer::spawn();
    let up = Upstream::new().spawn().await;
    let gw = on_redis(&up.url, &redis.url(), "chunks");
    ready(&gw).await;
    many_bindings_and_members_export_in_chunks(&gw, 3_000).await;
}
