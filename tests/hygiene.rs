//! Strict HTTP hygiene (issue 10, item 4), against the real binary: one
//! `Host` per HTTP/1.1 request, an admin listener off loopback only with a
//! token, the admin API's scheme in any case, and warnings a client can
//! repeat at will written at most once a second; and the connection
//! limits: accepting pauses at `server.max_connections`, and connections
//! spread evenly over the I/O threads.

mod support;

use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_1_1_request_needs_exactly_one_host() {
    const BODY: &str = r#"{"error":"invalid_request","error_description":"An HTTP/1.1 request needs exactly one Host header"}"#;
    for (path, toml) in PATHS {
        let up = Upstream::new().spawn().await;
        let gw = Gateway::new().upstream(&up.url).toml(toml).spawn();
        for req in [
            &b"GET /a HTTP/1.1\r\nhost: a\r\nhost: b\r\nconnection: close\r\n\r\n"[..],
            b"GET /a HTTP/1.1\r\nconnection: close\r\n\r\n",
            b"GET /a HTTP/1.1\r\nhost: a\r\nHost: a\r\nauthorization: Bearer t\r\nconnection: close\r\n\r\n",
        ] {
            let resp = raw_http(gw.addr, req);
            assert_eq!(status_of(&resp), 400, "{path}: {}", String::from_utf8_lossy(&resp));
            assert!(String::from_utf8_lossy(&resp).ends_with(BODY), "{path}");
        }
        assert_eq!(up.hits(), 0, "{path}");
        // HTTP/1.0 may go without; one Host is served.
        let resp = raw_http(gw.addr, b"GET /a HTTP/1.0\r\n\r\n");
        assert_eq!(status_of(&resp), 200, "{path}");
        let resp = raw_http(
            gw.addr,
            b"GET /a HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n",
        );
        assert_eq!(status_of(&resp), 200, "{path}");
        assert_eq!(up.hits(), 2, "{path}");
    }
}

fn check_config(toml: &str, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.toml");
    std::fs::write(&p, toml).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_revgate"));
    cmd.args(["check-config", "--config"]).arg(&p);
    cmd.env_remove("REVGATE_ADMIN_TOKEN");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn an_admin_listener_off_loopback_needs_a_token() {
    let base = "[upstream]\nurl = \"http://127.0.0.1:1\"\n[admin]\nlisten = \"0.0.0.0:9090\"\n";
    let (code, err) = check_config(base, &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("admin.token"), "{err}");
    assert!(err.contains("not a loopback address"), "{err}");
    for (toml, env) in [
        (format!("{base}token = \"0123456789abcdef0123\"\n"), vec![]),
        (format!("{base}allow_unauthenticated = true\n"), vec![]),
        (
            base.to_string(),
            vec![("REVGATE_ADMIN_TOKEN", "0123456789abcdef0123")],
        ),
        (
            "[upstream]\nurl = \"http://127.0.0.1:1\"\n[admin]\nlisten = \"[::1]:9090\"\n".into(),
            vec![],
        ),
    ] {
        let (code, err) = check_config(&toml, &env);
        assert_eq!(code, Some(0), "{toml} {env:?}: {err}");
    }
    // `run` refuses it the same way, before binding anything.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.toml");
    std::fs::write(&p, base).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_revgate"))
        .args(["run", "--config"])
        .arg(&p)
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "0.0.0.0:0"])
        .arg("--journal")
        .arg(dir.path().join("j"))
        .env_remove("REVGATE_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty(), "it must not say it is listening");
    assert!(String::from_utf8_lossy(&out.stderr).contains("admin.token"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_bearer_scheme_is_case_insensitive() {
    let up = Upstream::new().spawn().await;
    let token = "0123456789abcdef-admin";
    let gw = Gateway::new()
        .upstream(&up.url)
        .toml(&format!("[admin]\ntoken = \"{token}\"\n"))
        .spawn();
    let scopes = format!("{}/admin/v1/scopes", gw.admin_url);
    for (auth, want) in [
        (format!("Bearer {token}"), 200),
        (format!("BEARER {token}"), 200),
        (format!("bEaReR  {token}"), 200),
        (format!("Bearer\t{token}"), 200),
        (format!("Bearer {token}x"), 401),
        (format!("Basic {token}"), 401),
        (token.to_string(), 401),
    ] {
        let r = fetch(&scopes, &[("authorization", &auth)]).await;
        assert_eq!(r.status, want, "{auth}: {}", r.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted_revoke_calls_do_not_flood_the_log() {
    let up = Upstream::new().spawn().await;
    let gw = Gateway::new().upstream(&up.url).spawn();
    const ABORTS: usize = 200;
    for _ in 0..ABORTS {
        let mut s = std::net::TcpStream::connect(gw.addr).unwrap();
        s.write_all(b"POST /oauth/revoke HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: 100\r\n\r\ntoken").unwrap();
        // Closing with the body unsent is the abort.
        drop(s);
    }
    // One ordinary request after them: once it is answered and logged, the
    // aborts before it have been handled (each on its own connection, so
    // wait for the log to stop growing rather than for a fixed time).
    let mut last = String::new();
    assert!(
        eventually(Duration::from_secs(10), async || {
            let now = gw.logs();
            let settled = now == last && now.contains("revoke call failed");
            last = now;
            if !settled {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            settled
        })
        .await,
        "no revoke-call warning at all"
    );
    let lines = last.matches("revoke call failed").count();
    assert!(
        (1..20).contains(&lines),
        "{lines} warning lines for {ABORTS} aborted calls"
    );
    let mut s = std::net::TcpStream::connect(gw.addr).unwrap();
    s.write_all(b"GET /a HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    assert_eq!(status_of(&out), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepting_pauses_at_max_connections_and_resumes_when_one_closes() {
    let up = Upstream::new().spawn().await;
    let gw = Gateway::new()
        .upstream(&up.url)
        .toml("[server]\nmax_connections = 2\nio_threads = 1\n")
        .spawn();
    let metric = async |name: &str| {
        let r = fetch(&format!("{}/metrics", gw.admin_url), &[]).await;
        support::prometheus::parse(&r.text())
            .unwrap()
            .value(name, &[])
            .unwrap_or(-1.0)
    };
    assert_eq!(metric("revgate_connections_open").await, 0.0);
    assert_eq!(metric("revgate_connections_limited_total").await, 0.0);
    // Two keep-alive connections hold both places.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = support::raw::RawClient::connect(gw.addr);
        c.send(b"GET /a HTTP/1.1\r\nhost: x\r\n\r\n");
        assert_eq!(c.response().status(), 200);
        held.push(c);
    }
    assert_eq!(metric("revgate_connections_open").await, 2.0);
    // A third is not served while they are open: accepting has paused.
    let mut third = support::raw::RawClient::connect(gw.addr);
    third.send(b"GET /a HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    assert!(
        eventually(Duration::from_secs(5), async || {
            metric("revgate_connections_limited_total").await >= 1.0
        })
        .await
    );
    assert_eq!(up.hits(), 2);
    // One closes: the third is accepted and answered.
    drop(held.pop());
    assert_eq!(third.response().status(), 200);
    assert_eq!(up.hits(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_lived_connections_are_spread_evenly_over_the_io_threads() {
    // The kernel's SO_REUSEPORT hash lands 100 connections within two of
    // each other on two threads about one time in four (the binomial
    // odds); placement at accept keeps the counts within two always, and
    // a connection placed on the other thread is served there.
    let up = Upstream::new().spawn().await;
    let gw = Gateway::new()
        .upstream(&up.url)
        .toml("[server]\nio_threads = 2\n")
        .spawn();
    let mut clients = Vec::new();
    for _ in 0..100 {
        let mut c = support::raw::RawClient::connect(gw.addr);
        c.send(b"GET /a HTTP/1.1\r\nhost: x\r\n\r\n");
        assert_eq!(c.response().status(), 200);
        clients.push(c);
    }
    let per_thread = async || {
        let r = fetch(&format!("{}/metrics", gw.admin_url), &[]).await;
        let m = support::prometheus::parse(&r.text()).unwrap();
        let n = |t: &str| m.value("revgate_io_thread_connections", &[("thread", t)]);
        (n("0"), n("1"), m.value("revgate_connections_open", &[]))
    };
    // The per-thread gauges are set on each thread's 250 ms heartbeat.
    assert!(
        eventually(Duration::from_secs(5), async || {
            let (a, b, _) = per_thread().await;
            a.unwrap_or(0.0) + b.unwrap_or(0.0) == 100.0
        })
        .await,
        "{:?}",
        per_thread().await
    );
    let (a, b, open) = per_thread().await;
    let (a, b) = (a.unwrap_or(-1.0), b.unwrap_or(-1.0));
    assert_eq!(open, Some(100.0));
    assert!((a - b).abs() <= 2.0, "thread 0: {a}, thread 1: {b}");
    // The hand-offs are counted (how many depends on the kernel's hash).
    let r = fetch(&format!("{}/metrics", gw.admin_url), &[]).await;
    let placed = support::prometheus::parse(&r.text())
        .unwrap()
        .value("revgate_connections_placed_total", &[]);
    assert!(
        placed.is_some_and(|n| (0.0..=100.0).contains(&n)),
        "{placed:?}"
    );
    // Every connection, wherever it was placed, serves its next request.
    for c in &mut clients {
        c.send(b"GET /b HTTP/1.1\r\nhost: x\r\n\r\n");
        assert_eq!(c.response().status(), 200);
    }
    assert_eq!(up.hits(), 200);
}

#[test]
fn a_silent_h2c_connection_is_closed_by_keepalive() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let up = rt.block_on(Upstream::new().spawn());
    let gw = Gateway::new()
        .upstream(&up.url)
        .toml("[server]\nh2_keepalive_interval = \"200ms\"\nh2_keepalive_timeout = \"200ms\"\n")
        .spawn();
    let mut s = std::net::TcpStream::connect(gw.addr).unwrap();
    // The h2c preface and an empty SETTINGS frame, then silence: no SETTINGS
    // ack, no PING answer.
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(_) => break false,
        }
    };
    assert!(closed, "the silent connection is still open after 20 s");
    drop(rt);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_is_given_up_on_the_hyper_path_too() {
    const TIMEOUT_BODY: &str = r#"{"error":"request_timeout","error_description":"The request body did not arrive in time"}"#;
    let up = Upstream::new().spawn().await;
    let gw = Gateway::new()
        .upstream(&up.url)
        .toml("[server]\nbody_idle_timeout = \"1s\"\nh1_fast_path = false\n[revoke]\nmode = \"terminate\"\n")
        .spawn();
    // A revoke call that sends 5 of its 100 body bytes, and an ordinary
    // upload through hyper that stops half way: each answered 408, the
    // upstream never sees a whole request.
    for (what, head) in [
        ("revoke call", "POST /oauth/revoke HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: 100\r\n\r\ntoken"),
        ("form", "POST /a HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: 100\r\n\r\nacces"),
        ("upload", "POST /upload HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\nhello"),
    ] {
        let mut c = support::raw::RawClient::connect(gw.addr);
        c.send(head.as_bytes());
        let r = c.response();
        assert_eq!(r.status(), 408, "{what}: {}", r.text());
        assert_eq!(r.text(), TIMEOUT_BODY, "{what}");
    }
    assert!(
        up.all().iter().all(|r| r.uri != "/a"),
        "a cut form reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_upgraded_connection_is_closed_and_a_busy_one_is_not() {
    let up = Upstream::new().spawn().await;
    let gw = Gateway::new()
        .upstream(&up.url)
        .toml("[server]\nupgrade_idle_timeout = \"1s\"\n")
        .spawn();
    let open = || {
        let mut c = support::raw::RawClient::connect(gw.addr);
        c.send(b"GET /ws HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n");
        assert_eq!(c.head_response().status(), 101);
        c
    };
    // A busy one: a byte echoed every 300 ms, 10 times (3 s, well past the
    // timeout), stays open.
    let mut busy = open();
    for i in 0..10u8 {
        std::thread::sleep(Duration::from_millis(300));
        busy.send(&[b'a' + i]);
        assert!(
            busy.read_until(Duration::from_secs(5), |b, _| b.ends_with(&[b'a' + i])),
            "busy connection stopped echoing at {i}"
        );
    }
    // An idle one is closed (waited for as an event).
    let mut idle = open();
    assert!(idle.closed(), "idle upgraded connection still open");
}
