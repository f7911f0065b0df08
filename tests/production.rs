//! What operators need, against the real binary: TLS on the listener (h1 and
//! h2 via ALPN, certificate rotation under a live download), TLS and mTLS to
//! upstreams, /metrics, graceful shutdown on SIGTERM, config reload on
//! SIGHUP, the admin token, and raw tokens never in any log line.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::certs::{write_atomic, write_pki, TestCa};
use support::*;

// === a TLS client ===

fn client_config(
    ca: &Path,
    alpn: &[&[u8]],
    client: Option<(&Path, &Path)>,
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in revgate::tls::read_certs(ca).unwrap() {
        roots.add(c).unwrap();
    }
    let b = rustls::ClientConfig::builder_with_provider(revgate::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut cfg = match client {
        Some((c, k)) => b
            .with_client_auth_cert(
                revgate::tls::read_certs(c).unwrap(),
                revgate::tls::read_key(k).unwrap(),
            )
            .unwrap(),
        None => b.with_no_client_auth(),
    };
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(cfg)
}

type TlsIo = TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

async fn tls_connect(
    addr: SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
    sni: &str,
) -> Result<TlsIo, String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name =
        rustls_pki_types::ServerName::try_from(sni.to_string()).map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    Ok(TokioIo::new(tls))
}

/// One GET over TLS with the negotiated protocol; (status, ALPN, body).
async fn tls_get(
    addr: SocketAddr,
    ca: &Path,
    sni: &str,
    h2: bool,
    path: &str,
) -> Result<(u16, String, Bytes), String> {
    let alpn: &[&[u8]] = if h2 { &[b"h2"] } else { &[b"http/1.1"] };
    let io = tls_connect(addr, client_config(ca, alpn, None), sni).await?;
    let proto = String::from_utf8_lossy(io.inner().get_ref().1.alpn_protocol().unwrap_or_default())
        .to_string();
    let req = Request::builder()
        .uri(format!("https://{sni}{path}"))
        .header("authorization", "Bearer tls-token")
        .body(Full::<Bytes>::default())
        .unwrap();
    let resp = if h2 {
        let (mut s, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        s.send_request(req).await.map_err(|e| e.to_string())?
    } else {
        let (mut s, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let mut req = req;
        req.headers_mut().insert("host", sni.parse().unwrap());
        s.send_request(req).await.map_err(|e| e.to_string())?
    };
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, proto, body))
}

fn tls_gateway(up: &RunningUpstream, dir: &Path, cert: &Path, key: &Path) -> RunningGateway {
    Gateway::new()
        .upstream(&up.url)
        .dir(dir)
        .toml(&format!("[server.tls]\ncert = {:?}\nkey = {:?}", cert, key))
        .spawn()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listener_serves_h1_and_h2_and_refuses_wrong_names_and_cas() {
    let up = Upstream::new().spawn().await;
    let dir = tempfile::tempdir().unwrap();
    let pki = write_pki(dir.path(), &["localhost"]);
    let gw = tls_gateway(&up, dir.path(), &pki.server_cert, &pki.server_key);
    let (status, proto, _) = tls_get(gw.addr, &pki.ca_cert, "localhost", false, "/one")
        .await
        .unwrap();
    assert_eq!((status, proto.as_str()), (200, "http/1.1"));
    assert_eq!(up.last().unwrap().headers["x-forwarded-proto"], "https");
    let (status, proto, _) = tls_get(gw.addr, &pki.ca_cert, "localhost", true, "/two")
        .await
        .unwrap();
    assert_eq!((status, proto.as_str()), (200, "h2"));
    assert_eq!(up.last().unwrap().uri, "/two");

    // A name the certificate does not cover, and a CA that did not sign it.
    let err = tls_get(gw.addr, &pki.ca_cert, "other.example", false, "/")
        .await
        .unwrap_err();
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    let other = tempfile::tempdir().unwrap();
    let stranger = TestCa::new("stranger");
    let ca2 = other.path().join("ca.pem");
    write_atomic(&ca2, stranger.cert_pem());
    let err = tls_get(gw.addr, &ca2, "localhost", false, "/")
        .await
        .unwrap_err();
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    assert_eq!(up.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_rotation_is_picked_up_while_a_download_continues() {
    let up = Upstream::new().spawn().await;
    let dir = tempfile::tempdir().unwrap();
    let pki = write_pki(dir.path(), &["localhost"]);
    let gw = tls_gateway(&up, dir.path(), &pki.server_cert, &pki.server_key);

    // A long download on the old certificate, read slowly.
    let total: u64 = 64 << 20;
    let io = tls_connect(
        gw.addr,
        client_config(&pki.ca_cert, &[b"http/1.1"], None),
        "localhost",
    )
    .await
    .unwrap();
    let (mut s, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(conn);
    let resp = s
        .send_request(
            Request::builder()
                .uri(format!("/download/{total}"))
                .header("host", "localhost")
                .body(Full::<Bytes>::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let download = tokio::spawn(async move {
        let mut body = resp.into_body();
        let mut n = 0u64;
        let mut frames = 0u64;
        while let Some(f) = body.frame().await {
            if let Some(d) = f.unwrap().data_ref() {
                n += d.len() as u64;
            }
            frames += 1;
            // ~10 MB/s: the 64 MiB take several seconds, longer than the
            // certificate watcher needs to notice the rotation.
            if frames.is_multiple_of(8) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        n
    });

    // Rotate to a certificate from a new CA.
    let new_ca = TestCa::new("rotated CA");
    let (cert, key) = new_ca.issue_server(&["localhost"]);
    write_atomic(&pki.server_key, &key);
    write_atomic(&pki.server_cert, &cert);
    let new_ca_path = dir.path().join("new-ca.pem");
    write_atomic(&new_ca_path, new_ca.cert_pem());
    let rotated = eventually(Duration::from_secs(15), async || {
        tls_get(gw.addr, &new_ca_path, "localhost", false, "/after")
            .await
            .is_ok()
    })
    .await;
    assert!(rotated, "the new certificate was not picked up");
    assert!(
        tls_get(gw.addr, &pki.ca_cert, "localhost", false, "/")
            .await
            .is_err(),
        "the old certificate is still served"
    );
    assert!(
        !download.is_finished(),
        "the download ended before the rotation was seen"
    );
    assert_eq!(
        download.await.unwrap(),
        total,
        "the download on the old certificate was cut"
    );
}

// === TLS and mTLS to the upstream ===

async fn tls_upstream(
    pki: &support::certs::Pki,
    require_client: bool,
) -> (SocketAddr, support::tasks::Tasks) {
    let provider = revgate::tls::provider();
    let b = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let b = if require_client {
        let mut roots = rustls::RootCertStore::empty();
        for c in revgate::tls::read_certs(&pki.ca_cert).unwrap() {
            roots.add(c).unwrap();
        }
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
        b.with_client_cert_verifier(verifier)
    } else {
        b.with_no_client_auth()
    };
    let cfg = b
        .with_single_cert(
            revgate::tls::read_certs(&pki.server_cert).unwrap(),
            revgate::tls::read_key(&pki.server_key).unwrap(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tasks = support::tasks::Tasks::default();
    let t = tasks.clone();
    tasks.spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            t.spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let client_cert = tls.get_ref().1.peer_certificates().is_some();
                let svc = hyper::service::service_fn(
                    move |_req: Request<hyper::body::Incoming>| async move {
                        let body = format!(r#"{{"tls":true,"client_cert":{client_cert}}}"#);
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            Bytes::from(body),
                        )))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (addr, tasks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstreams_over_tls_and_mtls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = write_pki(dir.path(), &["localhost"]);
    let (addr, t) = tls_upstream(&pki, false).await;
    let gw = Gateway::new()
        .toml(&format!(
            "[upstream]\nurl = \"https://localhost:{}\"\nca_file = {:?}",
            addr.port(),
            pki.ca_cert
        ))
        .spawn();
    let r = get_bearer(&format!("{}/x", gw.url), "t").await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, r#"{"tls":true,"client_cert":false}"#)
    );

    let (maddr, t2) = tls_upstream(&pki, true).await;
    let with_cert = Gateway::new()
        .toml(&format!(
            "[upstream]\nurl = \"https://localhost:{}\"\nca_file = {:?}\nclient_cert = {:?}\nclient_key = {:?}",
            maddr.port(),
            pki.ca_cert,
            pki.client_cert,
            pki.client_key
        ))
        .spawn();
    let r = get_bearer(&format!("{}/x", with_cert.url), "t").await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, r#"{"tls":true,"client_cert":true}"#)
    );
    let without = Gateway::new()
        .toml(&format!(
            "[upstream]\nurl = \"https://localhost:{}\"\nca_file = {:?}",
            maddr.port(),
            pki.ca_cert
        ))
        .spawn();
    assert_eq!(
        get_bearer(&format!("{}/x", without.url), "t").await.status,
        502
    );
    // An upstream certificate from an unknown CA is refused.
    let other = tempfile::tempdir().unwrap();
    let stranger_ca = other.path().join("ca.pem");
    write_atomic(&stranger_ca, TestCa::new("stranger").cert_pem());
    let distrust = Gateway::new()
        .toml(&format!(
            "[upstream]\nurl = \"https://localhost:{}\"\nca_file = {:?}",
            addr.port(),
            stranger_ca
        ))
        .spawn();
    assert_eq!(
        get_bearer(&format!("{}/x", distrust.url), "t").await.status,
        502
    );
    // The servers' tasks are joined: a panic in one fails the test.
    t.finish();
    t2.finish();
}

// === metrics ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_move() {
    let up = Upstream::new().spawn().await;
    let gw = Gateway::new().upstream(&up.url).spawn();
    let scrape = async || {
        let r = fetch(&format!("{}/metrics", gw.admin_url), &[]).await;
        assert_eq!(r.status, 200);
        prometheus::parse(&r.text())
            .unwrap_or_else(|e| panic!("not Prometheus text: {e}\n{}", r.text()))
    };
    admin_revoke(&gw, "m-revoked").await;
    for _ in 0..3 {
        get_bearer(&format!("{}/x", gw.url), "m-ok").await;
    }
    get_bearer(&format!("{}/x", gw.url), "m-revoked").await;
    fetch(
        &format!("{}/x", gw.url),
        &[("authorization", "Bearer a"), ("authorization", "Bearer b")],
    )
    .await;
    // A request is counted once its answer has been written: wait for the
    // last one rather than racing it.
    let counted = |m: &prometheus::Exposition, outcome: &str| {
        m.value(
            "revgate_requests_total",
            &[("route", "default"), ("outcome", outcome)],
        )
        .unwrap_or(0.0)
    };
    assert!(
        eventually(Duration::from_secs(5), async || {
            let m = scrape().await;
            counted(&m, "forwarded") == 3.0
                && counted(&m, "revoked") == 1.0
                && counted(&m, "bad_request") == 1.0
        })
        .await
    );
    let m = scrape().await;
    let count = |outcome: &str| {
        m.value(
            "revgate_requests_total",
            &[("route", "default"), ("outcome", outcome)],
        )
        .unwrap_or(0.0)
    };
    assert_eq!(count("forwarded"), 3.0);
    assert_eq!(count("revoked"), 1.0);
    assert_eq!(count("bad_request"), 1.0);
    assert!(m.sum("revgate_revocations_applied_total", &[]) >= 1.0);
    assert_eq!(m.value("revgate_store_token_rules", &[]), Some(1.0));
    get_bearer(&format!("{}/x", gw.url), "m-revoked").await;
    let m = scrape().await;
    assert_eq!(
        m.value(
            "revgate_requests_total",
            &[("route", "default"), ("outcome", "revoked")]
        ),
        Some(2.0)
    );
}

/// Every metric the operator docs and the README name is on `/metrics` from
/// start-up, and every counter among them reads 0 before any traffic: an
/// alert on `rate()` must see the first increment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_metric_is_exported_from_start_up_and_counters_at_0() {
    let up = Upstream::new().spawn().await;
    let gw = Gateway::new().upstream(&up.url).spawn();
    let mut documented = std::collections::BTreeSet::new();
    for doc in ["docs/operations.md", "README.md", "src/metrics.rs"] {
        let text =
            std::fs::read_to_string(format!("{}/{doc}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        // Of the source, only the module doc's table documents anything.
        let text: String = if doc.ends_with(".rs") {
            text.lines().filter(|l| l.starts_with("//!")).collect()
        } else {
            text
        };
        for (i, _) in text.match_indices("revgate_") {
            let name: String = text[i..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            // `revgate_overhead_seconds_bucket` is a series of the histogram.
            let name = ["_bucket", "_count", "_sum"]
                .iter()
                .fold(name.as_str(), |n, suffix| {
                    n.strip_suffix(suffix).unwrap_or(n)
                })
                .to_string();
            if name.len() > "revgate_".len() && !name.ends_with('_') {
                documented.insert(name);
            }
        }
    }
    assert!(documented.len() >= 20, "{documented:?}");
    let r = fetch(&format!("{}/metrics", gw.admin_url), &[]).await;
    assert_eq!(r.status, 200);
    let m = prometheus::parse(&r.text()).unwrap_or_else(|e| panic!("{e}\n{}", r.text()));
    for name in &documented {
        let kind = m.family_type(name);
        assert!(
            kind.is_some(),
            "{name} is documented but not exported:\n{}",
            r.text()
        );
        if kind == Some("counter") {
            let series = m.samples.iter().filter(|s| &s.name == name).count();
            assert!(series > 0, "{name} has no series");
            assert_eq!(m.sum(name, &[]), 0.0, "{name} before any traffic");
        }
    }
    for outcome in [
        "forwarded",
        "revoked",
        "bad_request",
        "upstream_error",
        "no_route",
        "revoke_call",
        "unavailable",
    ] {
        assert_eq!(
            m.value(
                "revgate_requests_total",
                &[("route", "default"), ("outcome", outcome)]
            ),
            Some(0.0),
            "{outcome}"
        );
    }
    for (what, result) in [
        ("config", "ok"),
        ("config", "error"),
        ("tls", "ok"),
        ("tls", "error"),
    ] {
        assert_eq!(
            m.value(
                "revgate_reloads_total",
                &[("what", what), ("result", result)]
            ),
            Some(0.0)
        );
    }
    assert_eq!(up.hits(), 0);
}

// === shutdown and reload ===

/// SIGHUP with a good file counts `{what="config",result="ok"}`, with a bad
/// one `{result="error"}`, each exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_are_counted_by_result() {
    let a = Upstream::new().spawn().await;
    let b = Upstream::new().spawn().await;
    let gw = Gateway::new()
        .toml(&format!("[upstream]\nurl = \"{}\"", a.url))
        .spawn();
    let config = gw.dir.join("revgate.toml");
    let reloads = async || {
        let r = fetch(&format!("{}/metrics", gw.admin_url), &[]).await;
        assert_eq!(r.status, 200);
        let m = prometheus::parse(&r.text()).unwrap();
        let v = |result| {
            m.value(
                "revgate_reloads_total",
                &[("what", "config"), ("result", result)],
            )
        };
        (v("ok"), v("error"))
    };
    assert_eq!(reloads().await, (Some(0.0), Some(0.0)));

    std::fs::write(&config, format!("[upstream]\nurl = \"{}\"\n", b.url)).unwrap();
    gw.signal("HUP");
    let counted = eventually(Duration::from_secs(5), async || {
        reloads().await == (Some(1.0), Some(0.0))
    })
    .await;
    assert!(counted, "{:?}\n{}", reloads().await, gw.logs());
    assert_eq!(get_bearer(&format!("{}/x", gw.url), "t").await.status, 200);
    assert_eq!((a.hits(), b.hits()), (0, 1), "the reloaded route serves");

    std::fs::write(&config, "[upstream]\nurl = \"ftp://nope\"\n").unwrap();
    gw.signal("HUP");
    let counted = eventually(Duration::from_secs(5), async || {
        reloads().await == (Some(1.0), Some(1.0))
    })
    .await;
    assert!(counted, "{:?}\n{}", reloads().await, gw.logs());
    assert!(gw.logs().contains("upstream.url"), "{}", gw.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_a_slow_download_refuses_new_connections_and_exits_0() {
    let up = Upstream::new().spawn().await;
    let mut gw = Gateway::new()
        .upstream(&up.url)
        .toml("[server]\ndrain_timeout = \"30s\"")
        .spawn();
    let total: u64 = 32 << 20;
    let resp = client()
        .request(
            get(&format!("{}/download/{total}", gw.url))
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    let download = tokio::spawn(async move {
        let mut body = resp.into_body();
        let mut n = 0u64;
        while let Some(f) = body.frame().await {
            if let Some(d) = f.unwrap().data_ref() {
                n += d.len() as u64;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        n
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    gw.signal("TERM");
    let addr = gw.addr;
    let refused = eventually(Duration::from_secs(5), async || {
        tokio::net::TcpStream::connect(addr).await.is_err()
    })
    .await;
    assert!(refused, "new connections are still accepted after SIGTERM");
    assert!(
        !download.is_finished(),
        "the download should still be running (slow reader)"
    );
    assert_eq!(
        download.await.unwrap(),
        total,
        "the in-flight download was cut"
    );
    let code = tokio::task::spawn_blocking(move || gw.wait(Duration::from_secs(20)))
        .await
        .unwrap();
    assert_eq!(code, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_keeps_the_old_config_when_the_new_one_is_broken_and_applies_a_good_one() {
    let a = Upstream::new().spawn().await;
    let b = Upstream::new().spawn().await;
    let gw = Gateway::new()
        .toml(&format!("[upstream]\nurl = \"{}\"", a.url))
        .spawn();
    let config = gw.dir.join("revgate.toml");
    assert_eq!(get_bearer(&format!("{}/x", gw.url), "t").await.status, 200);
    assert_eq!(a.hits(), 1);

    std::fs::write(
        &config,
        format!(
            "[upstream]\nurl = \"{}\"\n[store]\nbloom_fp_rate = 7\n",
            b.url
        ),
    )
    .unwrap();
    gw.signal("HUP");
    let logged = eventually(Duration::from_secs(5), async || {
        gw.logs().contains("new configuration rejected")
    })
    .await;
    assert!(logged, "{}", gw.logs());
    assert!(gw.logs().contains("store.bloom_fp_rate"));
    assert_eq!(get_bearer(&format!("{}/x", gw.url), "t").await.status, 200);
    assert_eq!(
        (a.hits(), b.hits()),
        (2, 0),
        "the old routes must keep serving"
    );

    std::fs::write(&config, format!("[upstream]\nurl = \"{}\"\n", b.url)).unwrap();
    gw.signal("HUP");
    let applied = eventually(Duration::from_secs(5), async || {
        gw.logs().contains("configuration reloaded")
    })
    .await;
    assert!(applied);
    assert_eq!(get_bearer(&format!("{}/x", gw.url), "t").await.status, 200);
    assert_eq!((a.hits(), b.hits()), (2, 1), "the new route must serve");
}

// === admin token and secrecy ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_needs_its_token() {
    let up = Upstream::new().spawn().await;
    let gw = Gateway::new()
        .upstream(&up.url)
        .toml("[admin]\ntoken = \"0123456789abcdef-admin\"")
        .spawn();
    let admin = |path: &str, token: Option<&str>| {
        let mut b = get(&format!("{}{path}", gw.admin_url));
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        b.body(Full::default()).unwrap()
    };
    assert_eq!(send(admin("/healthz", None)).await.status, 200);
    assert_eq!(send(admin("/readyz", None)).await.status, 200);
    for path in ["/metrics", "/admin/v1/scopes"] {
        let r = send(admin(path, None)).await;
        assert_eq!(r.status, 401, "{path}");
        assert_eq!(r.json()["error"], "invalid_token");
        assert_eq!(
            send(admin(path, Some("wrong-token-xxxxxxx"))).await.status,
            401
        );
        assert_eq!(
            send(admin(path, Some("0123456789abcdef-admin")))
                .await
                .status,
            200
        );
    }
    let r = post_json(
        &format!("{}/admin/v1/revocations", gw.admin_url),
        &serde_json::json!({"token": "t"}),
    )
    .await;
    assert_eq!(r.status, 401);
    let ok = send(
        Request::builder()
            .method("POST")
            .uri(format!("{}/admin/v1/revocations", gw.admin_url))
            .header("authorization", "Bearer 0123456789abcdef-admin")
            .body(Full::new(Bytes::from(r#"{"token":"t"}"#)))
            .unwrap(),
    )
    .await;
    assert_eq!(ok.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_tokens_never_reach_any_log_line() {
    let up = Upstream::new().spawn().await;
    let gw = Gateway::new()
        .upstream(&up.url)
        .arg("--log-format")
        .arg("json")
        .arg("--revoke-mode")
        .arg("terminate")
        .toml("[tokens]\napi_key_headers = [\"x-api-key\"]")
        .env("RUST_LOG", "debug")
        .spawn();
    let secrets = [
        "SeCrEt-hdr-1",
        "SeCrEt-query-2",
        "SeCrEt-key-3",
        "SeCrEt-rfc-4",
        "SeCrEt-nylas-5",
        "SeCrEt-ol-6",
    ];
    get_bearer(&format!("{}/a", gw.url), secrets[0]).await;
    fetch(&format!("{}/a?access_token={}", gw.url, secrets[1]), &[]).await;
    send(
        get(&format!("{}/a", gw.url))
            .header("x-api-key", secrets[2])
            .body(Full::default())
            .unwrap(),
    )
    .await;
    admin_revoke(&gw, secrets[0]).await;
    get_bearer(&format!("{}/a", gw.url), secrets[0]).await;
    send(
        Request::builder()
            .method("POST")
            .uri(format!("{}/oauth/revoke", gw.url))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(format!("token={}", secrets[3]))))
            .unwrap(),
    )
    .await;
    send(
        Request::builder()
            .method("POST")
            .uri(format!("{}/v3/connect/revoke?token={}", gw.url, secrets[4]))
            .header("authorization", "Bearer nylas-api-key")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    send(
        Request::builder()
            .method("POST")
            .uri(format!("{}/auth/oauth2/revoke", gw.url))
            .header("authorization", "client_id:a, client_secret:b")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(format!(
                r#"{{"access_token":"{}"}}"#,
                secrets[5]
            ))))
            .unwrap(),
    )
    .await;
    // Access lines are written by the access log's writer thread within its
    // flush interval (100 ms), not at once.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut logs = gw.logs();
    while logs.lines().count() < 8 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        logs = gw.logs();
    }
    assert!(logs.lines().count() >= 8, "expected access lines:\n{logs}");
    for line in logs.lines() {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_ok(),
            "not JSON: {line}"
        );
        assert!(!line.contains("SeCrEt"), "a raw token in the log: {line}");
    }
}
