//! The operator's kit against the real binary (issue 17): the `revgate
//! admin` CLI through a real admin listener, the admin API's token listing,
//! config errors that name file and key (all at once), the journal check,
//! `build_info` and process metrics, `--version`, completions, and a demo
//! that starts fresh.

mod support;

#[path = "support/redis.rs"]
mod redis_support;

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::*;

const ADMIN_TOKEN: &str = "adm-0123456789abcdef";

fn bin() -> Command {
    let bin = std::env::var_os("REVGATE_TEST_BIN")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_revgate").into());
    let mut cmd = Command::new(bin);
    for (k, _) in std::env::vars() {
        if k.starts_with("REVGATE_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// `revgate admin ARGS` against `gw`, with `stdin` on standard input.
fn admin(gw: &RunningGateway, token: Option<&str>, args: &[&str], stdin: &str) -> Output {
    let mut cmd = bin();
    cmd.arg("admin")
        .args(args)
        .env("REVGATE_ADMIN_URL", &gw.admin_url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(t) = token {
        cmd.env("REVGATE_ADMIN_TOKEN", t);
    }
    let mut child = cmd.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn ok_json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn guarded_gateway(up: &RunningUpstream) -> RunningGateway {
    Gateway::new()
        .upstream(&up.url)
        .toml(&format!("[admin]\ntoken = \"{ADMIN_TOKEN}\""))
        .spawn()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_revokes_looks_up_lists_and_unrevokes_through_the_admin_api() {
    let up = Upstream::new().spawn().await;
    let gw = guarded_gateway(&up);
    let tok = Some(ADMIN_TOKEN);

    // revoke: tokens from standard input, one per line, blank lines skipped.
    let out = admin(
        &gw,
        tok,
        &["revoke", "-o", "json"],
        "tok-alpha\n\n tok-beta \n",
    );
    let revoked = ok_json(&out);
    let revoked = revoked.as_array().unwrap();
    assert_eq!(revoked.len(), 2, "{revoked:?}");
    for r in revoked {
        assert_eq!(r["recorded"]["kind"], "token");
        assert_eq!(r["changed"], true);
        assert_eq!(r["recorded"]["fingerprint"].as_str().unwrap().len(), 32);
    }
    let stdout = text(&out.stdout);
    assert!(
        !stdout.contains("tok-alpha") && !stdout.contains("tok-beta"),
        "{stdout}"
    );
    assert_revoked(&gw, &up, "tok-alpha").await;
    assert_revoked(&gw, &up, "tok-beta").await;
    assert_passes(&gw, &up, "tok-gamma").await;
    let fp_alpha = revoked[0]["recorded"]["fingerprint"]
        .as_str()
        .unwrap()
        .to_string();
    let fp_beta = revoked[1]["recorded"]["fingerprint"]
        .as_str()
        .unwrap()
        .to_string();

    // lookup: tokens from --file; the table names fingerprints only.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens");
    std::fs::write(&file, "tok-alpha\ntok-gamma\n").unwrap();
    let out = admin(&gw, tok, &["lookup", "--file", file.to_str().unwrap()], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["FINGERPRINT", "REVOKED"]
    );
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        [fp_alpha.as_str(), "true"]
    );
    assert_eq!(lines[2].split_whitespace().nth(1), Some("false"));
    assert!(!table.contains("tok-"), "{table}");

    // list: every page walked (page size 1), both rules, expiry and source.
    let listed = ok_json(&admin(
        &gw,
        tok,
        &["list", "--page-size", "1", "-o", "json"],
        "",
    ));
    let mut fps: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["fingerprint"].as_str().unwrap())
        .collect();
    fps.sort_unstable();
    let mut want = vec![fp_alpha.as_str(), fp_beta.as_str()];
    want.sort_unstable();
    assert_eq!(fps, want);
    for r in listed.as_array().unwrap() {
        assert_eq!(r["source"], "journal");
        assert!(r["expires_at"].as_u64().unwrap() > now(), "{r}");
    }
    let out = admin(&gw, tok, &["list"], "");
    let table = text(&out.stdout);
    assert_eq!(
        table
            .lines()
            .next()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["FINGERPRINT", "EXPIRES_AT", "SOURCE"]
    );
    assert_eq!(table.lines().count(), 3, "{table}");

    // unrevoke one by token (stdin), one by fingerprint.
    let out = ok_json(&admin(&gw, tok, &["unrevoke", "-o", "json"], "tok-alpha\n"));
    assert_eq!(out[0]["removed"], true);
    assert_eq!(out[0]["fingerprint"], fp_alpha.as_str());
    assert_passes(&gw, &up, "tok-alpha").await;
    let out = ok_json(&admin(
        &gw,
        tok,
        &["unrevoke", "--fingerprint", &fp_beta, "-o", "json"],
        "",
    ));
    assert_eq!(out[0]["removed"], true);
    assert_passes(&gw, &up, "tok-beta").await;
    let listed = ok_json(&admin(&gw, tok, &["list", "-o", "json"], ""));
    assert_eq!(listed, serde_json::json!([]));

    // Scope rules: revoke, list, unrevoke.
    let out = ok_json(&admin(
        &gw,
        tok,
        &[
            "revoke",
            "--scope-sub",
            "alice",
            "--scope-org",
            "acme",
            "-o",
            "json",
        ],
        "",
    ));
    assert_eq!(out[0]["recorded"]["kind"], "scope");
    assert_eq!(out[0]["recorded"]["sub"], "alice");
    let listed = ok_json(&admin(&gw, tok, &["list", "scopes", "-o", "json"], ""));
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["org"], "acme");
    let out = ok_json(&admin(
        &gw,
        tok,
        &[
            "unrevoke",
            "--scope-sub",
            "alice",
            "--scope-org",
            "acme",
            "-o",
            "json",
        ],
        "",
    ));
    assert_eq!(out[0]["removed"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_refusals_are_clear_and_tokens_never_come_from_argv() {
    let up = Upstream::new().spawn().await;
    let gw = guarded_gateway(&up);
    // Without the admin token: the API's 401, exit 1, nothing recorded.
    let out = admin(&gw, None, &["revoke"], "tok-x\n");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr).trim(),
        "revgate admin: 401 Unauthorized: admin token required"
    );
    assert_passes(&gw, &up, "tok-x").await;
    // A wrong token likewise.
    let out = admin(&gw, Some("wrong"), &["list"], "");
    assert_eq!(out.status.code(), Some(1));
    // A token as an argument is not accepted at all (usage error, exit 2).
    let out = admin(&gw, Some(ADMIN_TOKEN), &["revoke", "tok-x"], "");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(!text(&out.stdout).contains("tok-x"));
    assert_passes(&gw, &up, "tok-x").await;
    // Nothing on stdin: said so.
    let out = admin(&gw, Some(ADMIN_TOKEN), &["revoke"], "\n");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr).trim(),
        "revgate admin: no token read: give tokens on standard input or in --file, one per line (never as arguments)"
    );
    // Revoking by fingerprint is refused before any call.
    let out = admin(
        &gw,
        Some(ADMIN_TOKEN),
        &[
            "revoke",
            "--fingerprint",
            "00112233445566778899aabbccddeeff",
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("a fingerprint alone does not say when the token expires"));
    // Nobody listening: the URL is named.
    drop(gw);
    let mut cmd = bin();
    let out = cmd
        .args(["admin", "--admin-url", "http://127.0.0.1:9", "list"])
        .env("REVGATE_ADMIN_TOKEN", ADMIN_TOKEN)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).starts_with("revgate admin: http://127.0.0.1:9: "),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_lists_token_revocations_page_by_page() {
    let up = Upstream::new().spawn().await;
    let gw = Gateway::new().upstream(&up.url).spawn();
    let mut fps = Vec::new();
    for i in 0..5 {
        let r = admin_revoke(&gw, &format!("page-tok-{i}")).await;
        fps.push(
            r.json()["recorded"]["fingerprint"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    fps.sort();
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut url = format!("{}/admin/v1/revocations?limit=2", gw.admin_url);
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let r = fetch(&url, &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        let page = v["revocations"].as_array().unwrap();
        assert!(page.len() <= 2);
        for t in page {
            assert_eq!(t["source"], "journal");
            assert!(t["expires_at"].as_u64().unwrap() > now());
            seen.push(t["fingerprint"].as_str().unwrap().to_string());
        }
        pages += 1;
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    // In fingerprint order, each once.
    assert_eq!(seen, fps);
    let r = fetch(
        &format!("{}/admin/v1/revocations?cursor=zz", gw.admin_url),
        &[],
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.text(),
        r#"{"error":"invalid_request","error_description":"cursor is not one this API gave out"}"#
    );
    let r = fetch(
        &format!("{}/admin/v1/revocations?limit=0", gw.admin_url),
        &[],
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.text(),
        r#"{"error":"invalid_request","error_description":"limit must be an integer from 1 to 1000"}"#
    );
}

fn check_config(config: &Path, extra: &[&str]) -> Output {
    bin()
        .arg("check-config")
        .arg("--config")
        .arg(config)
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn config_errors_name_the_file_and_every_key_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(
        &config,
        "[server]\nmax_header_bytes = \"32k\"\nbogus = 1\n\
         [upstream]\nurl = \"http://127.0.0.1:1\"\nconnect_timeout = \"soon\"\n\
         [store]\nbloom_capacity = 0\n[admin]\nlisten = \"nope\"\n",
    )
    .unwrap();
    let out = check_config(&config, &[]);
    assert_eq!(out.status.code(), Some(2));
    let f = config.display();
    let want = format!(
        "revgate: invalid configuration:\n\
         {f}: server.bogus: unknown field `bogus`, expected one of `listen`, `max_header_bytes`, `drain_timeout`, `body_idle_timeout`, `tls`, `h1_fast_path`, `io_threads`, `max_connections`, `h2_keepalive_interval`, `h2_keepalive_timeout`, `h2_max_concurrent_streams`, `upgrade_idle_timeout`\n\
         {f}: server.max_header_bytes: invalid type: string \"32k\", expected usize\n\
         {f}: upstream.connect_timeout: invalid value: string \"soon\", expected a duration\n\
         {f}: store.bloom_capacity: must be positive\n\
         {f}: admin.listen: expected ip:port, got \"nope\"\n"
    );
    assert_eq!(text(&out.stderr), want);
    // `run` refuses the same file with the same report, before listening.
    let out = bin()
        .arg("run")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(text(&out.stderr), want);
    assert_eq!(text(&out.stdout), "");
    // A syntax error names its line.
    std::fs::write(&config, "[upstream]\nurl = \"http://u\"\n[server\n").unwrap();
    let out = check_config(&config, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).starts_with(&format!("revgate: invalid configuration:\n{f}: line 3: ")),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn check_config_names_several_bad_keys_of_one_section_and_of_every_section() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    // The journal's directory is a file: the one check of the machine is
    // reported with the rest.
    let not_dir = dir.path().join("file");
    std::fs::write(&not_dir, "x").unwrap();
    std::fs::write(
        &config,
        format!(
            "[server]\nmax_connections = 0\nmax_header_bytes = 100\n\
         [upstream]\nurl = \"http://127.0.0.1:1\"\nconnect_timeout = \"2h\"\n\
         [store]\nbloom_capacity = 0\nbloom_fp_rate = 0.9\njournal = {:?}\n\
         [admin]\nlisten = \"nope\"\n[admin.rate_limit]\nburst = 0\nmax_clients = 0\n\
         [identity.introspection]\nurl = \"http://example.com/introspect\"\nmax_entries = 0\n",
            not_dir.join("j")
        ),
    )
    .unwrap();
    let f = config.display();
    let want = format!(
        "revgate: invalid configuration:\n\
         {f}: server.max_connections: must be positive\n\
         {f}: server.max_header_bytes: must be at least 8192\n\
         {f}: upstream.connect_timeout: must be between 1ms and 1h\n\
         {f}: store.bloom_capacity: must be positive\n\
         {f}: store.bloom_fp_rate: must be between 0 and 0.5\n\
         {f}: admin.listen: expected ip:port, got \"nope\"\n\
         {f}: admin.rate_limit.burst: must be between 1 and 1000000\n\
         {f}: admin.rate_limit.max_clients: must be between 1 and 10000000\n\
         {f}: identity.introspection.url: must be https:// (http:// only to a loopback host): raw tokens and the client secret would cross the network in the clear\n\
         {f}: identity.introspection.max_entries: must be between 1 and 100000000\n\
         {f}: store.journal: {} is not a directory\n",
        not_dir.display()
    );
    let out = check_config(&config, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(text(&out.stderr), want);
    // Once fixed, the file passes: nothing else was hiding behind them.
    std::fs::write(
        &config,
        format!(
            "[upstream]\nurl = \"http://127.0.0.1:1\"\n[store]\njournal = {:?}\n",
            dir.path().join("j")
        ),
    )
    .unwrap();
    let out = check_config(&config, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn an_unwritable_journal_fails_check_config_and_run_before_listening() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ok.toml");
    std::fs::write(&config, "[upstream]\nurl = \"http://127.0.0.1:1\"\n").unwrap();
    // Root may write anywhere: a journal "inside" a regular file fails for
    // everyone.
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, "x").unwrap();
    let journal = blocker.join("revgate.journal");
    let out = check_config(&config, &["--journal", journal.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stderr),
        format!(
            "revgate: invalid configuration:\n{}: store.journal: {} is not a directory\n",
            config.display(),
            blocker.display()
        )
    );
    let out = bin()
        .args([
            "run",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .arg("--config")
        .arg(&config)
        .arg("--journal")
        .arg(&journal)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    // Nothing claimed to listen: the store failed first.
    assert_eq!(text(&out.stdout), "");
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("revgate: store: ") && stderr.contains("Not a directory"),
        "{stderr}"
    );
    // A good journal directory passes.
    let out = check_config(
        &config,
        &["--journal", dir.path().join("j").to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "configuration ok\n");
}

fn git_head() -> String {
    let out = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(out.status.success(), "the tests run in a git checkout");
    text(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_info_and_process_metrics_are_exported_from_start_up() {
    let up = Upstream::new().spawn().await;
    let gw = Gateway::new().upstream(&up.url).spawn();
    let r = fetch(&format!("{}/metrics", gw.admin_url), &[]).await;
    assert_eq!(r.status, 200);
    let m = prometheus::parse(&r.text()).unwrap_or_else(|e| panic!("{e}\n{}", r.text()));
    let commit = git_head();
    assert_eq!(
        m.value(
            "revgate_build_info",
            &[
                ("version", env!("CARGO_PKG_VERSION")),
                ("commit", commit.as_str())
            ]
        ),
        Some(1.0),
        "{}",
        r.text()
    );
    for name in [
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
        "process_threads",
        "process_cpu_seconds_total",
    ] {
        assert!(
            m.family_type(name).is_some(),
            "{name} missing:\n{}",
            r.text()
        );
    }
    assert!(m.sum("process_resident_memory_bytes", &[]) > 1e6);
    assert!(m.sum("process_open_fds", &[]) >= 3.0);
    assert_eq!(m.sum("revgate_connections_open", &[]), 0.0);
    assert_eq!(up.hits(), 0);
}

#[test]
fn version_names_the_commit_and_completions_cover_every_shell() {
    let out = bin().arg("--version").output().unwrap();
    assert_eq!(
        text(&out.stdout),
        format!(
            "revgate {} (commit {})\n",
            env!("CARGO_PKG_VERSION"),
            git_head()
        )
    );
    for (shell, marker) in [
        ("bash", "complete -F _revgate"),
        ("zsh", "#compdef revgate"),
        ("fish", "complete -c revgate"),
    ] {
        let out = bin().args(["completions", shell]).output().unwrap();
        assert!(out.status.success(), "{shell}");
        let script = text(&out.stdout);
        assert!(script.contains(marker), "{shell}: {script}");
        for word in ["check-config", "admin", "unrevoke", "admin-url"] {
            assert!(script.contains(word), "{shell} lacks {word}");
        }
    }
    let out = bin().args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// Runs `revgate demo` with its temp dir in `tmp` until it listens; the
/// child, and the gateway's URL.
fn demo(tmp: &Path) -> (std::process::Child, String, String) {
    use std::io::BufRead as _;
    let mut child = bin()
        .args([
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .env("TMPDIR", tmp)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let v: Value = serde_json::from_str(&line).unwrap();
    (
        child,
        format!("http://{}", v["listen"].as_str().unwrap()),
        format!("http://{}", v["admin"].as_str().unwrap()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_starts_fresh_each_run() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut first, url, _) = demo(tmp.path());
    assert_eq!(
        get_bearer(&format!("{url}/hello"), "demo-token")
            .await
            .status,
        200
    );
    let r = send(
        http::Request::post(format!("{url}/oauth/revoke"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(http_body_util::Full::new(bytes::Bytes::from(
                "token=demo-token",
            )))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = get_bearer(&format!("{url}/hello"), "demo-token").await;
    assert_revoked_response(&r);
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(tmp.path().join("revgate-demo.journal").exists());
    let (mut second, url, _) = demo(tmp.path());
    let r = get_bearer(&format!("{url}/hello"), "demo-token").await;
    assert_eq!(
        r.status, 200,
        "the second demo run kept the first one's revocation"
    );
    second.kill().unwrap();
    second.wait().unwrap();
}

/// The metric names an expression text mentions (`revgate_*`, `process_*`),
/// histogram series folded into their family.
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    for prefix in ["revgate_", "process_"] {
        for (i, _) in text.match_indices(prefix) {
            if i > 0 && text.as_bytes()[i - 1].is_ascii_alphanumeric() {
                continue;
            }
            let name: String = text[i..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            let name = ["_bucket", "_count", "_sum"]
                .iter()
                .fold(name.as_str(), |n, s| n.strip_suffix(s).unwrap_or(n))
                .to_string();
            out.insert(name);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_rules_and_the_dashboard_use_only_series_exported_at_start_up() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes/monitoring");
    let rules = std::fs::read_to_string(root.join("prometheusrule.yaml")).unwrap();
    let exprs: String = rules
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    let mut names = metric_names(&exprs);
    for alert in [
        "RevgateStoreStale",
        "RevgateStoreFenced",
        "RevgateRevocationApplyFailures",
        "RevgateJournalBacklog",
        "RevgateRevokedRequestSpike",
        "RevgateUpstreamErrors",
    ] {
        assert!(rules.contains(&format!("alert: {alert}\n")), "{alert}");
    }
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("revgate-dashboard.json")).unwrap(),
    )
    .unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 12);
    for p in panels {
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{}", p["title"]);
        for t in targets {
            names.extend(metric_names(t["expr"].as_str().unwrap()));
        }
    }
    assert!(names.len() >= 15, "{names:?}");
    let up = Upstream::new().spawn().await;
    let gw = Gateway::new().upstream(&up.url).spawn();
    let r = fetch(&format!("{}/metrics", gw.admin_url), &[]).await;
    let m = prometheus::parse(&r.text()).unwrap();
    for name in &names {
        assert!(
            m.family_type(name).is_some(),
            "{name} is used by an alert or the dashboard but not exported at start-up"
        );
    }
    assert_eq!(m.sum("revgate_store_fenced", &[]), 0.0);
}

/// The leaf certificate the listener at `addr` presents for SNI `sni`,
/// verified against `ca` for that name (`Err` when it does not cover it).
async fn served_cert(addr: std::net::SocketAddr, ca: &str, sni: &str) -> Result<Vec<u8>, String> {
    use rustls_pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from_pem_slice(ca.as_bytes()).unwrap())
        .unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(revgate::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from(sni.to_string()).unwrap();
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    Ok(tls.get_ref().1.peer_certificates().unwrap()[0].to_vec())
}

fn der(pem: &str) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject as _;
    rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_listener_serves_several_certificates_chosen_by_sni() {
    let ca = support::certs::TestCa::new("sni test CA");
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    let mut pems = Vec::new();
    for (i, sans) in [&["default.test"][..], &["api.test"], &["*.apps.test"]]
        .iter()
        .enumerate()
    {
        let (cert, key) = ca.issue_server(sans);
        let (c, k) = (
            dir.path().join(format!("{i}.crt")),
            dir.path().join(format!("{i}.key")),
        );
        std::fs::write(&c, &cert).unwrap();
        std::fs::write(&k, &key).unwrap();
        files.push((c, k));
        pems.push(cert);
    }
    let up = Upstream::new().spawn().await;
    let gw = Gateway::new()
        .upstream(&up.url)
        .toml(&format!(
            "[server.tls]\ncert = {:?}\nkey = {:?}\n\
             [[server.tls.certificates]]\nnames = [\"API.test\"]\ncert = {:?}\nkey = {:?}\n\
             [[server.tls.certificates]]\nnames = [\"*.apps.test\"]\ncert = {:?}\nkey = {:?}\n",
            files[0].0, files[0].1, files[1].0, files[1].1, files[2].0, files[2].1
        ))
        .spawn();
    let ca_pem = ca.cert_pem();
    assert_eq!(
        served_cert(gw.addr, ca_pem, "default.test").await,
        Ok(der(&pems[0]))
    );
    assert_eq!(
        served_cert(gw.addr, ca_pem, "api.test").await,
        Ok(der(&pems[1]))
    );
    assert_eq!(
        served_cert(gw.addr, ca_pem, "x.apps.test").await,
        Ok(der(&pems[2]))
    );
    // A wildcard covers one label only: a.b.apps.test gets the default,
    // which does not cover it either, and the client refuses it.
    let err = served_cert(gw.addr, ca_pem, "a.b.apps.test")
        .await
        .unwrap_err();
    assert!(
        err.contains(r#"only valid for DnsName("default.test")"#),
        "{err}"
    );
    assert_eq!(up.hits(), 0);

    // Bad entries are refused, naming the entry.
    let config = dir.path().join("bad.toml");
    for (entry, want) in [
        (
            format!("names = [\"api.test\", \"API.TEST\"]\ncert = {:?}\nkey = {:?}", files[1].0, files[1].1),
            "server.tls.certificates[0].names: \"API.TEST\" is already listed by server.tls.certificates[0]",
        ),
        (
            format!("names = [\"bad name\"]\ncert = {:?}\nkey = {:?}", files[1].0, files[1].1),
            "server.tls.certificates[0].names: \"bad name\" is not a host name or *.domain",
        ),
        (
            format!("names = []\ncert = {:?}\nkey = {:?}", files[1].0, files[1].1),
            "server.tls.certificates[0].names: must list at least one name",
        ),
        (
            format!("names = [\"x.test\"]\ncert = \"/nonexistent.crt\"\nkey = {:?}", files[1].1),
            "server.tls.certificates[0].cert: no such file: /nonexistent.crt",
        ),
    ] {
        std::fs::write(
            &config,
            format!(
                "[upstream]\nurl = \"http://127.0.0.1:1\"\n[server.tls]\ncert = {:?}\nkey = {:?}\n[[server.tls.certificates]]\n{entry}\n",
                files[0].0, files[0].1
            ),
        )
        .unwrap();
        let out = check_config(&config, &[]);
        assert_eq!(out.status.code(), Some(2));
        assert_eq!(
            text(&out.stderr),
            format!("revgate: invalid configuration:\n{}: {want}\n", config.display())
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_lists_token_revocations_kept_in_redis_across_instances() {
    let redis = redis_support::RedisServer::spawn();
    let up = Upstream::new().spawn().await;
    let shared = |up: &RunningUpstream| {
        Gateway::new()
            .upstream(&up.url)
            .arg("--store")
            .arg(&redis.url())
            .toml(&format!(
                "[tokens]\nfingerprint_key = \"{}\"\n[store]\nkey_prefix = \"opkit\"\n[admin]\ntoken = \"{ADMIN_TOKEN}\"",
                "cd".repeat(32)
            ))
            .spawn()
    };
    let a = shared(&up);
    let b = shared(&up);
    for g in [&a, &b] {
        wait_for("ready", Duration::from_secs(20), async || {
            fetch(&format!("{}/readyz", g.admin_url), &[]).await.status == 200
        })
        .await;
    }
    let tokens: Vec<String> = (0..7).map(|i| format!("redis-tok-{i}")).collect();
    let revoked = ok_json(&admin(
        &a,
        Some(ADMIN_TOKEN),
        &["revoke", "-o", "json"],
        &tokens.join("\n"),
    ));
    let mut want: Vec<String> = revoked
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["recorded"]["fingerprint"].as_str().unwrap().to_string())
        .collect();
    want.sort();
    // Listed through the other instance, page by page (SCAN), from Redis.
    let listed = ok_json(&admin(
        &b,
        Some(ADMIN_TOKEN),
        &["list", "--page-size", "2", "-o", "json"],
        "",
    ));
    let mut got: Vec<String> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r["source"], "redis", "{r}");
            r["fingerprint"].as_str().unwrap().to_string()
        })
        .collect();
    got.sort();
    got.dedup();
    assert_eq!(got, want);
    // The API's own cursor is Redis's; a bad one is refused.
    let r = fetch(
        &format!("{}/admin/v1/revocations?cursor=nope", b.admin_url),
        &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))],
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_revoked(&b, &up, "redis-tok-3").await;
}

#[tokio::test]
async fn cli_binds_looks_up_and_unbinds_principals_through_the_admin_api() {
    let up = Upstream::new().spawn().await;
    let gw = guarded_gateway(&up);
    let tok = Some(ADMIN_TOKEN);
    // bind: credentials from standard input, never echoed.
    let issued = now() - 60;
    let out = admin(
        &gw,
        tok,
        &[
            "principals",
            "bind",
            "--sub",
            "cli-user",
            "--provider",
            "github",
            "--issued-at",
            &issued.to_string(),
            "-o",
            "json",
        ],
        "cli-opaque-1\ncli-opaque-2\n",
    );
    let bound = ok_json(&out);
    let bound = bound.as_array().unwrap();
    assert_eq!(bound.len(), 2, "{bound:?}");
    for b in bound {
        assert_eq!(b["sub"], "cli-user");
        assert_eq!(b["provider"], "github");
        assert_eq!(b["issued_at"], issued);
        assert_eq!(b["fingerprint"].as_str().unwrap().len(), 32);
    }
    assert!(
        !text(&out.stdout).contains("cli-opaque"),
        "{}",
        text(&out.stdout)
    );
    // A scope rule for the holder now covers the bound credentials.
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let r = send(call(
        "POST",
        &format!("{}/admin/v1/revocations", gw.admin_url),
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        br#"{"scope":{"sub":"cli-user"}}"#,
    ))
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_revoked(&gw, &up, "cli-opaque-1").await;
    // lookup: a table naming the holder; one not bound says so.
    let out = admin(
        &gw,
        tok,
        &["principals", "lookup"],
        "cli-opaque-2\nnot-bound\n",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        [
            "FINGERPRINT",
            "HOLDER",
            "ISSUED_AT",
            "EXPIRES_AT",
            "REVOKED"
        ]
    );
    assert!(
        lines[1].contains("sub=cli-user") && lines[1].ends_with("true"),
        "{table}"
    );
    assert!(lines[2].contains("(not bound)"), "{table}");
    // unbind by fingerprint: the derived rule goes with the binding.
    let fp = bound[0]["fingerprint"].as_str().unwrap();
    let out = admin(
        &gw,
        tok,
        &["principals", "unbind", "--fingerprint", fp, "-o", "json"],
        "",
    );
    assert_eq!(ok_json(&out), serde_json::json!([{"removed": true}]));
    assert_passes(&gw, &up, "cli-opaque-1").await;
    assert_revoked(&gw, &up, "cli-opaque-2").await;
}
