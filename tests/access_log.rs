//! The access log through the real binary: each format's line for a known
//! request on the fast path and on hyper's, field by field; secrets never in
//! it; every line written by a SIGTERM; the file, its reopening on SIGUSR1,
//! and the `check-config` errors; the dropped-lines counter.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::raw::*;
use support::*;

const LIMIT: Duration = Duration::from_secs(10);
const BODY: &[u8] = b"hello";
const USER_AGENT: &str = "agent/1.0 \"quoted\" \\ end";
const SECRETS: [&str; 4] = [
    "SeCrEt-query",
    "SeCrEt-bearer",
    "SeCrEt-cookie",
    "SeCrEt-referer",
];

/// An upstream answering `hello` to everything.
fn hello() -> RawUpstream {
    RawUpstream::start(|_| Reply::Send(ok(BODY)))
}

fn gateway(up: &RawUpstream, dir: &Path, toml: &str) -> RunningGateway {
    Gateway::new().upstream(&up.url).dir(dir).toml(toml).spawn()
}

/// The known request: a token in `Authorization` and in a cookie, a secret
/// in the query (a token there too would be a second credential: 400), a
/// referer with one in its query, a user agent to escape.
fn known_request(path_and_query: &str) -> String {
    format!(
        "GET {path_and_query} HTTP/1.1\r\nHost: gw.test\r\nAuthorization: Bearer SeCrEt-bearer\r\n\
         Cookie: session=SeCrEt-cookie\r\nReferer: https://app.example/page?token=SeCrEt-referer\r\n\
         User-Agent: {USER_AGENT}\r\nX-Request-Id: req-known-1\r\n\r\n"
    )
}

/// Waits until `path` holds at least `n` lines; returns them.
fn lines_of(path: &Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + LIMIT;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "{} lines of {n} in {}:\n{text}",
            lines.len(),
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn is_hex8(s: &str) -> bool {
    s.len() == 8
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// `2026-12-02T07:10:55.123456Z`
fn assert_rfc3339_micros(ts: &str) {
    let b = ts.as_bytes();
    assert_eq!(b.len(), 27, "{ts}");
    for (i, c) in b.iter().enumerate() {
        match i {
            4 | 7 => assert_eq!(*c, b'-', "{ts}"),
            10 => assert_eq!(*c, b'T', "{ts}"),
            13 | 16 => assert_eq!(*c, b':', "{ts}"),
            19 => assert_eq!(*c, b'.', "{ts}"),
            26 => assert_eq!(*c, b'Z', "{ts}"),
            _ => assert!(c.is_ascii_digit(), "{ts}"),
        }
    }
}

/// A text line's `key=value` fields after `access`, in order.
fn text_fields(line: &str) -> (String, Vec<(String, String)>) {
    let (ts, rest) = line.split_once(' ').unwrap();
    let rest = rest
        .strip_prefix(" INFO revgate::access: access ")
        .unwrap_or_else(|| panic!("{line}"));
    let mut fields = Vec::new();
    let mut s = rest;
    while !s.is_empty() {
        let (k, v) = s.split_once('=').unwrap();
        let (value, next) = if let Some(q) = v.strip_prefix('"') {
            // A Debug-quoted value: up to the unescaped closing quote.
            let mut end = 0;
            let bytes = q.as_bytes();
            while bytes[end] != b'"' {
                end += if bytes[end] == b'\\' { 2 } else { 1 };
            }
            (format!("\"{}\"", &q[..end]), &q[end + 1..])
        } else {
            match v.split_once(' ') {
                Some((a, b)) => (a.to_string(), b),
                None => (v.to_string(), ""),
            }
        };
        fields.push((k.to_string(), value));
        s = next.trim_start();
    }
    (ts.to_string(), fields)
}

/// Each format's line for the known request, on the fast path and on
/// hyper's (`server.h1_fast_path = false`), field by field; and no secret
/// anywhere in the file.
#[test]
fn each_format_writes_its_exact_line_on_both_paths() {
    for fast in [true, false] {
        for format in ["text", "json", "combined"] {
            let up = hello();
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("access.log");
            let gw = gateway(
                &up,
                dir.path(),
                &format!(
                    "[server]\nh1_fast_path = {fast}\n[log]\naccess_log_format = \"{format}\"\naccess_log_path = \"{}\"\n",
                    path.display()
                ),
            );
            let mut c = RawClient::connect(gw.addr);
            let port = c.stream.local_addr().unwrap().port();
            c.send(known_request("/logged/path?signature=SeCrEt-query&x=1").as_bytes());
            let r = c.response();
            assert_eq!((r.status(), r.body.as_slice()), (200, BODY));
            let lines = lines_of(&path, 1);
            assert_eq!(lines.len(), 1, "{lines:?}");
            let line = &lines[0];
            let what = format!("{format}, fast path {fast}: {line}");
            match format {
                "text" => {
                    let (ts, fields) = text_fields(line);
                    assert_rfc3339_micros(&ts);
                    let keys: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
                    assert_eq!(
                        keys,
                        [
                            "method",
                            "path",
                            "version",
                            "status",
                            "route",
                            "outcome",
                            "duration_us",
                            "upstream_us",
                            "fp",
                            "peer",
                            "request_id"
                        ],
                        "{what}"
                    );
                    let v = |k: &str| fields.iter().find(|(n, _)| n == k).unwrap().1.clone();
                    assert_eq!(v("method"), "GET", "{what}");
                    assert_eq!(v("path"), "\"/logged/path\"", "{what}");
                    assert_eq!(v("version"), "HTTP/1.1", "{what}");
                    assert_eq!(v("status"), "200", "{what}");
                    assert_eq!(v("route"), "\"default\"", "{what}");
                    assert_eq!(v("outcome"), "\"forwarded\"", "{what}");
                    let d: u64 = v("duration_us").parse().unwrap();
                    let u: u64 = v("upstream_us").parse().unwrap();
                    assert!(u <= d, "{what}");
                    let fp = v("fp");
                    assert!(is_hex8(fp.trim_matches('"')), "{what}");
                    assert_eq!(v("peer"), format!("127.0.0.1:{port}"), "{what}");
                    assert_eq!(v("request_id"), "\"req-known-1\"", "{what}");
                }
                "json" => {
                    let j: serde_json::Value = serde_json::from_str(line).unwrap();
                    let o = j.as_object().unwrap();
                    let keys: Vec<&str> = o.keys().map(String::as_str).collect();
                    let mut want = vec![
                        "duration_us",
                        "fp",
                        "level",
                        "message",
                        "method",
                        "outcome",
                        "path",
                        "peer",
                        "request_id",
                        "route",
                        "status",
                        "target",
                        "timestamp",
                        "upstream_us",
                        "version",
                    ];
                    want.sort();
                    let mut keys = keys;
                    keys.sort();
                    assert_eq!(keys, want, "{what}");
                    assert_rfc3339_micros(j["timestamp"].as_str().unwrap());
                    assert_eq!(j["level"], "INFO", "{what}");
                    assert_eq!(j["target"], "revgate::access", "{what}");
                    assert_eq!(j["message"], "access", "{what}");
                    assert_eq!(j["method"], "GET", "{what}");
                    assert_eq!(j["path"], "/logged/path", "{what}");
                    assert_eq!(j["version"], "HTTP/1.1", "{what}");
                    assert_eq!(j["status"], 200, "{what}");
                    assert_eq!(j["route"], "default", "{what}");
                    assert_eq!(j["outcome"], "forwarded", "{what}");
                    assert!(
                        j["upstream_us"].as_u64().unwrap() <= j["duration_us"].as_u64().unwrap(),
                        "{what}"
                    );
                    assert!(is_hex8(j["fp"].as_str().unwrap()), "{what}");
                    assert_eq!(j["peer"], format!("127.0.0.1:{port}"), "{what}");
                    assert_eq!(j["request_id"], "req-known-1", "{what}");
                }
                _ => {
                    // 127.0.0.1 - - [02/Dec/2026:07:10:55 +0000] "GET ..." ...
                    let (head, rest) = line.split_once(" [").unwrap();
                    assert_eq!(head, "127.0.0.1 - -", "{what}");
                    let (time, rest) = rest.split_once("] ").unwrap();
                    assert_eq!(time.len(), 26, "{what}");
                    assert!(time.ends_with(" +0000"), "{what}");
                    let t = time.as_bytes();
                    assert_eq!(
                        (t[2], t[6], t[11], t[14], t[17]),
                        (b'/', b'/', b':', b':', b':')
                    );
                    assert!(
                        [
                            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct",
                            "Nov", "Dec"
                        ]
                        .contains(&&time[3..6]),
                        "{what}"
                    );
                    assert_eq!(
                        rest,
                        "\"GET /logged/path HTTP/1.1\" 200 5 \"https://app.example/page\" \"agent/1.0 \\x22quoted\\x22 \\x5C end\"",
                        "{what}"
                    );
                }
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for s in SECRETS {
                assert!(!text.contains(s), "{s} in the {format} log: {text}");
            }
        }
    }
}

/// HTTP/2 (h2c, always hyper's) in `combined`: `HTTP/2.0` in `$request`, the
/// length of the body sent, a 401's line too.
#[tokio::test]
async fn an_h2_request_and_a_refusal_in_combined() {
    let up = Upstream::new().spawn().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let gw = Gateway::new()
        .upstream(&up.url)
        .dir(dir.path())
        .toml(&format!(
            "[log]\naccess_log_format = \"combined\"\naccess_log_path = \"{}\"\n",
            path.display()
        ))
        .spawn();
    admin_revoke(&gw, "revoked-SeCrEt").await;
    let r = send_with(
        &h2c_client(),
        get(&format!("{}/h2/path?q=SeCrEt-query", gw.url))
            .header("authorization", "Bearer SeCrEt-bearer")
            .header("user-agent", "h2-agent")
            .body(Default::default())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200);
    let sent = r.body.len();
    let r = get_bearer(&format!("{}/refused?page=2", gw.url), "revoked-SeCrEt").await;
    assert_revoked_response(&r);
    let refusal_len = r.body.len();
    let lines = lines_of(&path, 2);
    let h2 = lines.iter().find(|l| l.contains("/h2/path")).unwrap();
    assert!(
        h2.ends_with(&format!(
            "] \"GET /h2/path HTTP/2.0\" 200 {sent} \"-\" \"h2-agent\""
        )),
        "{h2}"
    );
    let refused = lines.iter().find(|l| l.contains("/refused")).unwrap();
    assert!(
        refused.ends_with(&format!(
            "] \"GET /refused HTTP/1.1\" 401 {refusal_len} \"-\" \"-\""
        )),
        "{refused}"
    );
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains("SeCrEt"), "{text}");
}

/// A token in the query, in `Authorization` and in a cookie never reaches
/// the file, in any format, on either path, allowed or revoked.
#[tokio::test]
async fn a_token_in_the_query_authorization_or_a_cookie_never_reaches_the_file() {
    for format in ["text", "json", "combined"] {
        for fast in [true, false] {
            let up = Upstream::new().spawn().await;
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("access.log");
            let gw = Gateway::new()
                .upstream(&up.url)
                .dir(dir.path())
                .toml(&format!(
                    "[server]\nh1_fast_path = {fast}\n[log]\naccess_log_format = \"{format}\"\naccess_log_path = \"{}\"\n",
                    path.display()
                ))
                .spawn();
            admin_revoke(&gw, "SeCrEt-revoked").await;
            for (target, auth, cookie) in [
                ("/q?access_token=SeCrEt-query-1", None, None),
                ("/h", Some("Bearer SeCrEt-header-1"), None),
                ("/c", None, Some("token=SeCrEt-cookie-1")),
                ("/r?access_token=SeCrEt-revoked", None, None),
                (
                    "/rh",
                    Some("Bearer SeCrEt-revoked"),
                    Some("a=SeCrEt-cookie-2"),
                ),
            ] {
                let mut headers = vec![];
                if let Some(a) = auth {
                    headers.push(("authorization", a));
                }
                if let Some(c) = cookie {
                    headers.push(("cookie", c));
                }
                let r = fetch(&format!("{}{target}", gw.url), &headers).await;
                assert!(r.status == 200 || r.status == 401, "{target}: {}", r.status);
            }
            let lines = lines_of(&path, 5);
            assert_eq!(lines.len(), 5, "{lines:?}");
            let text = lines.join("\n");
            assert!(!text.contains("SeCrEt"), "{format}, fast {fast}: {text}");
            assert!(text.contains("401"), "{text}");
        }
    }
}

/// SIGTERM after N requests: exactly N lines, one per request, none lost in
/// a thread's buffer (two I/O threads, four connections).
#[test]
fn sigterm_after_n_requests_leaves_exactly_n_lines() {
    const N: usize = 5000;
    let up = hello();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let mut gw = gateway(
        &up,
        dir.path(),
        &format!(
            "[server]\nio_threads = 2\n[log]\naccess_log_format = \"combined\"\naccess_log_path = \"{}\"\n",
            path.display()
        ),
    );
    let mut clients: Vec<RawClient> = (0..4).map(|_| RawClient::connect(gw.addr)).collect();
    for i in 0..N {
        let c = &mut clients[i % 4];
        c.send(format!("GET /n/{i} HTTP/1.1\r\nHost: gw.test\r\n\r\n").as_bytes());
        assert_eq!(c.response().status(), 200, "request {i}");
    }
    gw.signal("TERM");
    assert_eq!(gw.wait(Duration::from_secs(30)), Some(0), "{}", gw.logs());
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), N, "lines written");
    let seen: BTreeSet<usize> = lines
        .iter()
        .map(|l| {
            let target = l.split(' ').nth(6).unwrap();
            target.strip_prefix("/n/").unwrap().parse().unwrap()
        })
        .collect();
    assert_eq!(seen.len(), N, "one line per request");
    assert_eq!(seen.last(), Some(&(N - 1)));
    assert!(lines.iter().all(|l| l.ends_with("\" 200 5 \"-\" \"-\"")));
}

/// The same with the default destination, stderr: the last lines come out
/// before the process exits.
#[test]
fn sigterm_flushes_stderr_too() {
    const N: usize = 300;
    let up = hello();
    let mut gw = Gateway::new()
        .upstream(&up.url)
        .toml("[log]\nformat = \"json\"\n")
        .spawn();
    let mut c = RawClient::connect(gw.addr);
    for i in 0..N {
        c.send(format!("GET /e/{i} HTTP/1.1\r\nHost: gw.test\r\n\r\n").as_bytes());
        assert_eq!(c.response().status(), 200);
    }
    gw.signal("TERM");
    assert_eq!(gw.wait(Duration::from_secs(30)), Some(0), "{}", gw.logs());
    let lines: BTreeSet<String> = gw
        .logs()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "revgate::access")
        .map(|v| v["path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(lines.len(), N, "{}", gw.logs());
}

/// `access_log_path` appends to what is there; after a rename and SIGUSR1
/// the lines go to a new file at the path; none is lost.
#[test]
fn the_file_is_appended_to_and_reopened_on_sigusr1() {
    let up = hello();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let rotated = dir.path().join("access.log.1");
    std::fs::write(&path, "an earlier line\n").unwrap();
    let mut gw = gateway(
        &up,
        dir.path(),
        &format!(
            "[log]\naccess_log_format = \"combined\"\naccess_log_path = \"{}\"\n",
            path.display()
        ),
    );
    let mut c = RawClient::connect(gw.addr);
    let mut get = |p: &str| {
        c.send(format!("GET {p} HTTP/1.1\r\nHost: gw.test\r\n\r\n").as_bytes());
        assert_eq!(c.response().status(), 200);
    };
    get("/before/1");
    get("/before/2");
    let lines = lines_of(&path, 3);
    assert_eq!(lines[0], "an earlier line");
    std::fs::rename(&path, &rotated).unwrap();
    get("/between");
    gw.signal("USR1");
    let deadline = Instant::now() + LIMIT;
    while !path.exists() {
        assert!(Instant::now() < deadline, "not reopened: {}", gw.logs());
        std::thread::sleep(Duration::from_millis(20));
    }
    get("/after/1");
    get("/after/2");
    gw.signal("TERM");
    assert_eq!(gw.wait(Duration::from_secs(30)), Some(0), "{}", gw.logs());
    let old = std::fs::read_to_string(&rotated).unwrap();
    let new = std::fs::read_to_string(&path).unwrap();
    assert!(old.starts_with("an earlier line\n"), "{old}");
    assert!(
        old.contains("/before/1 ") && old.contains("/before/2 "),
        "{old}"
    );
    assert!(
        new.contains("/after/1 ") && new.contains("/after/2 "),
        "{new}"
    );
    assert!(!new.contains("/before/"), "{new}");
    assert!(!old.contains("/after/"), "{old}");
    assert_eq!(
        old.matches("/between ").count() + new.matches("/between ").count(),
        1,
        "old: {old}\nnew: {new}"
    );
    assert_eq!(old.lines().count() + new.lines().count(), 6);
    assert!(gw.logs().contains("SIGUSR1: reopening the access log"));
}

fn check_config(dir: &Path, toml: &str) -> (Option<i32>, String) {
    let p = dir.join("c.toml");
    std::fs::write(
        &p,
        format!(
            "[upstream]\nurl = \"http://127.0.0.1:1\"\n[store]\njournal = \"{}\"\n{toml}",
            dir.join("j").display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_revgate"))
        .args(["check-config", "--config"])
        .arg(&p)
        .env_remove("REVGATE_ADMIN_TOKEN")
        .env_remove("REVGATE_ACCESS_LOG_PATH")
        .env_remove("REVGATE_ACCESS_LOG_FORMAT")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A path that cannot be opened is a `check-config` error naming the key,
/// reported beside the file's other errors; `run` refuses it before
/// listening; a bad format names its key too.
#[test]
fn check_config_names_an_access_log_that_cannot_be_opened() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir").join("access.log");
    let (code, err) = check_config(
        dir.path(),
        &format!(
            "[log]\nfilter = \"=[bad\"\naccess_log_path = \"{}\"\n",
            missing.display()
        ),
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("log.filter"), "every error at once: {err}");
    assert!(
        err.contains(&format!(
            "log.access_log_path: cannot create {}: directory {} does not exist",
            missing.display(),
            missing.parent().unwrap().display()
        )),
        "{err}"
    );
    let (code, err) = check_config(
        dir.path(),
        &format!("[log]\naccess_log_path = \"{}\"\n", dir.path().display()),
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "log.access_log_path: {} is a directory, not a file",
            dir.path().display()
        )),
        "{err}"
    );
    let (code, err) = check_config(dir.path(), "[log]\naccess_log_path = \"\"\n");
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("log.access_log_path: must not be empty"),
        "{err}"
    );
    let (code, err) = check_config(dir.path(), "[log]\naccess_log_format = \"apache\"\n");
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("log.access_log_format"), "{err}");
    assert!(err.contains("combined"), "the choices are named: {err}");
    // A good one passes and creates nothing.
    let good = dir.path().join("access.log");
    let (code, err) = check_config(
        dir.path(),
        &format!(
            "[log]\naccess_log_format = \"combined\"\naccess_log_path = \"{}\"\n",
            good.display()
        ),
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(!good.exists());

    // `run` stops before `listening`, exit 2, naming the key.
    let out = Command::new(env!("CARGO_BIN_EXE_revgate"))
        .args([
            "run",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .arg("--journal")
        .arg(dir.path().join("j"))
        .args(["--upstream", "http://127.0.0.1:1", "--access-log-path"])
        .arg(&missing)
        .env_remove("REVGATE_ADMIN_TOKEN")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("log.access_log_path"), "{err}");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("listening"),
        "{err}"
    );
}

/// The flag and the environment variable set the format and the path.
#[test]
fn the_flags_and_environment_set_format_and_path() {
    let up = hello();
    let dir = tempfile::tempdir().unwrap();
    let by_flag = dir.path().join("flag.log");
    let gw = Gateway::new()
        .upstream(&up.url)
        .arg("--access-log-format")
        .arg("combined")
        .arg("--access-log-path")
        .arg(by_flag.to_str().unwrap())
        .spawn();
    let mut c = RawClient::connect(gw.addr);
    c.send(b"GET /flag HTTP/1.1\r\nHost: gw.test\r\n\r\n");
    assert_eq!(c.response().status(), 200);
    let line = lines_of(&by_flag, 1).remove(0);
    assert!(
        line.ends_with("] \"GET /flag HTTP/1.1\" 200 5 \"-\" \"-\""),
        "{line}"
    );

    let by_env = dir.path().join("env.log");
    let gw = Gateway::new()
        .upstream(&up.url)
        .env("REVGATE_ACCESS_LOG_FORMAT", "json")
        .env("REVGATE_ACCESS_LOG_PATH", by_env.to_str().unwrap())
        .spawn();
    let mut c = RawClient::connect(gw.addr);
    c.send(b"GET /env HTTP/1.1\r\nHost: gw.test\r\n\r\n");
    assert_eq!(c.response().status(), 200);
    let line = lines_of(&by_env, 1).remove(0);
    let j: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(j["path"], "/env", "{line}");
}

fn dropped(metrics: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("revgate_access_log_dropped_total "))
        .unwrap_or_else(|| panic!("no revgate_access_log_dropped_total in {metrics}"))
        .trim()
        .parse()
        .unwrap()
}

/// A writer that cannot write (a FIFO nobody reads) never holds a request
/// up: every request is answered and reaches the upstream, and the lines
/// that did not fit are counted in `revgate_access_log_dropped_total`
/// (exported at 0 from the start).
#[tokio::test]
async fn a_stuck_writer_drops_and_counts_lines_instead_of_stalling() {
    use std::os::unix::fs::OpenOptionsExt;
    const N: usize = 1500;
    let up = hello();
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("access.fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    // Opened for reading (and never read), so the gateway's open for
    // writing does not wait for a reader.
    let _reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .unwrap();
    let gw = gateway(
        &up,
        dir.path(),
        &format!(
            "[server]\nio_threads = 1\n[log]\naccess_log_format = \"combined\"\naccess_log_path = \"{}\"\n",
            fifo.display()
        ),
    );
    let metrics_url = format!("{}/metrics", gw.admin_url);
    assert_eq!(dropped(&fetch(&metrics_url, &[]).await.text()), 0.0);
    // Lines of ~4 KiB: N of them are far more than the pipe, the queue and
    // a thread's buffer hold together (~2.3 MiB).
    let agent = "a".repeat(4000);
    let addr = gw.addr;
    let answered = tokio::task::spawn_blocking(move || {
        let mut c = RawClient::connect(addr);
        let mut ok = 0;
        for i in 0..N {
            c.send(
                format!("GET /s/{i} HTTP/1.1\r\nHost: gw.test\r\nUser-Agent: {agent}\r\n\r\n")
                    .as_bytes(),
            );
            if c.response().status() == 200 {
                ok += 1;
            }
        }
        ok
    })
    .await
    .unwrap();
    assert_eq!(answered, N);
    assert_eq!(up.wait_seen(N, LIMIT).len(), N);
    let d = dropped(&fetch(&metrics_url, &[]).await.text());
    assert!(d > 0.0 && d < N as f64, "dropped {d}");
}
