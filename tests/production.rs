//! Production features against the real binary: TLS on the listener (HTTP/1.1
//! and h2 through ALPN, wrong name and untrusted CA refused, certificate
//! rotation while a long download continues), TLS and mTLS to upstreams,
//! and `/metrics` (valid Prometheus text whose counters move), with a check
//! that no raw token reaches the logs.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use support::certs::{write_atomic, write_pki, Pki};
use support::prometheus;
use support::*;

const LIMIT: Duration = Duration::from_secs(20);

type TlsStream = tokio_rustls::client::TlsStream<TcpStream>;

/// A TLS connection to `addr` as `name`, trusting `ca`, offering `alpn`.
async fn tls_connect(
    addr: SocketAddr,
    ca: &Path,
    name: &str,
    alpn: &[&[u8]],
) -> std::io::Result<TlsStream> {
    let mut config = revgate::tls::upstream_client_config(Some(ca), None, None).unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(name.to_string()).unwrap();
    tokio::time::timeout(
        LIMIT,
        TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
    .map_err(|_| std::io::Error::other("handshake timed out"))?
}

fn leaf(s: &TlsStream) -> Vec<u8> {
    s.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// Sends one GET over an established TLS stream, HTTP/2 if ALPN chose it.
async fn tls_get(stream: TlsStream, path: &str, token: &str) -> Response<Incoming> {
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    let io = TokioIo::new(stream);
    let req = |uri: String| {
        Request::get(uri)
            .header("host", "localhost")
            .header("authorization", format!("Bearer {token}"))
            .body(Full::<Bytes>::default())
            .unwrap()
    };
    let send = async {
        if h2 {
            let (mut tx, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .unwrap();
            tokio::spawn(conn);
            tx.send_request(req(format!("https://localhost{path}")))
                .await
                .unwrap()
        } else {
            let (mut tx, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            tx.send_request(req(path.to_string())).await.unwrap()
        }
    };
    tokio::time::timeout(LIMIT, send)
        .await
        .expect("response head")
}

fn tls_gateway(pki: &Pki, upstream: &str) -> RunningGateway {
    Gateway::new()
        .upstream(upstream)
        .toml(&format!(
            "[server.tls]\ncert = {:?}\nkey = {:?}\n",
            pki.server_cert, pki.server_key
        ))
        .spawn()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listener_serves_h1_and_h2_and_refuses_wrong_names_and_cas() {
    let up = Upstream::new().spawn().await;
    let dir = tempfile::tempdir().unwrap();
    let pki = write_pki(dir.path(), &["localhost", "127.0.0.1"]);
    let other = tempfile::tempdir().unwrap();
    let other_pki = write_pki(other.path(), &["localhost"]);
    let g = tls_gateway(&pki, &up.url);

    for (alpn, want) in [
        (&[b"http/1.1".as_slice()][..], "http/1.1"),
        (&[b"h2".as_slice(), b"http/1.1".as_slice()][..], "h2"),
    ] {
        let s = tls_connect(g.addr, &pki.ca_cert, "localhost", alpn)
            .await
            .unwrap();
        assert_eq!(s.get_ref().1.alpn_protocol(), Some(want.as_bytes()));
        let r = tls_get(s, "/hello", "tok-tls-valid").await;
        assert_eq!(r.status(), StatusCode::OK, "over {want}");
    }
    assert_eq!(up.hits(), 2);

    assert!(
        tls_connect(g.addr, &pki.ca_cert, "evil.example", &[])
            .await
            .is_err(),
        "a name outside the certificate"
    );
    assert!(
        tls_connect(g.addr, &other_pki.ca_cert, "localhost", &[])
            .await
            .is_err(),
        "a CA the client does not trust"
    );
    // Plain HTTP on the TLS port gets nowhere near the upstream.
    let _ = raw_http(g.addr, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n");
    assert_eq!(up.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_rotation_is_picked_up_while_a_long_download_continues() {
    let up = Upstream::new().spawn().await;
    let dir = tempfile::tempdir().unwrap();
    let pki = write_pki(dir.path(), &["localhost"]);
    let g = tls_gateway(&pki, &up.url);

    const SIZE: u64 = 64 * 1024 * 1024;
    let s = tls_connect(g.addr, &pki.ca_cert, "localhost", &[b"http/1.1"])
        .await
        .unwrap();
    let old_leaf = leaf(&s);
    let resp = tls_get(s, &format!("/download/{SIZE}"), "tok-long-download").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let mut got = 0u64;
    // Read a little, then rotate while the rest is still to come.
    while got < 1024 * 1024 {
        let f = tokio::time::timeout(LIMIT, body.frame())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        got += f.data_ref().map_or(0, |d| d.len() as u64);
    }

    let (cert, key) = pki.ca.issue_server(&["localhost"]);
    write_atomic(&pki.server_key, &key);
    write_atomic(&pki.server_cert, &cert);
    let deadline = Instant::now() + LIMIT;
    loop {
        let s = tls_connect(g.addr, &pki.ca_cert, "localhost", &[])
            .await
            .unwrap();
        if leaf(&s) != old_leaf {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    while let Some(f) = tokio::time::timeout(LIMIT, body.frame()).await.unwrap() {
        got += f.unwrap().data_ref().map_or(0, |d| d.len() as u64);
    }
    assert_eq!(
        got, SIZE,
        "the download begun before the rotation completed"
    );
}

// === upstream TLS ===

/// An HTTPS upstream; with `require_client_cert`, only clients presenting a
/// certificate from the PKI's CA get through. Answers 200 with the client
/// certificate's presence in `x-client-cert`.
async fn tls_upstream(pki: &Pki, require_client_cert: bool) -> SocketAddr {
    use rustls::server::WebPkiClientVerifier;
    let provider = revgate::tls::provider();
    let certs = revgate::tls::read_certs(&pki.server_cert).unwrap();
    let key = revgate::tls::read_key(&pki.server_key).unwrap();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let config = if require_client_cert {
        let mut roots = rustls::RootCertStore::empty();
        for c in revgate::tls::read_certs(&pki.ca_cert).unwrap() {
            roots.add(c).unwrap();
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .unwrap();
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    }
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let presented = tls.get_ref().1.peer_certificates().is_some();
                let svc = service_fn(move |_req: Request<Incoming>| async move {
                    let mut r = Response::new(Full::new(Bytes::from_static(b"tls upstream")));
                    r.headers_mut().insert(
                        "x-client-cert",
                        if presented { "yes" } else { "no" }.parse().unwrap(),
                    );
                    Ok::<_, std::convert::Infallible>(r)
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    addr
}

fn upstream_tls_toml(pki: &Pki, ca: bool, client: bool) -> String {
    let mut t = String::from("[upstream]\n");
    if ca {
        t += &format!("ca_file = {:?}\n", pki.ca_cert);
    }
    if client {
        t += &format!(
            "client_cert = {:?}\nclient_key = {:?}\n",
            pki.client_cert, pki.client_key
        );
    }
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstreams_over_tls_and_mtls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = write_pki(dir.path(), &["localhost", "127.0.0.1"]);
    let plain = tls_upstream(&pki, false).await;
    let mutual = tls_upstream(&pki, true).await;

    let cases = [
        // (upstream, trust our CA, present a client cert, status, client cert seen)
        (plain, true, false, 200, Some("no")),
        (mutual, true, true, 200, Some("yes")),
        (mutual, true, false, 502, None),
        (plain, false, false, 502, None),
    ];
    for (addr, ca, client, status, seen) in cases {
        let g = Gateway::new()
            .upstream(&format!("https://127.0.0.1:{}", addr.port()))
            .toml(&upstream_tls_toml(&pki, ca, client))
            .spawn();
        let r = get_bearer(&format!("{}/x", g.url), "tok-upstream-tls").await;
        let what = format!("ca={ca} client_cert={client} -> {}", addr.port());
        assert_eq!(r.status, status, "{what}: {}", r.text());
        assert_eq!(r.header("x-client-cert"), seen, "{what}");
        if status == 200 {
            assert_eq!(r.text(), "tls upstream");
        }
    }
}

// === metrics ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_move_as_requests_pass_and_are_rejected() {
    let up = Upstream::new().spawn().await;
    let g = Gateway::new().upstream(&up.url).spawn();
    let scrape = || async {
        let r = send(
            get(&format!("{}/metrics", g.admin_url))
                .body(Full::default())
                .unwrap(),
        )
        .await;
        assert_eq!(r.status, 200);
        let ct = r.header("content-type").unwrap_or_default().to_string();
        assert!(ct.starts_with("text/plain"), "content-type {ct}");
        prometheus::parse(&r.text()).unwrap_or_else(|e| panic!("{e}\n{}", r.text()))
    };
    let requests = |m: &prometheus::Exposition, outcome: &str| {
        m.sum("revgate_requests_total", &[("outcome", outcome)])
    };

    let before = scrape().await;
    let (valid, revoked) = ("tok-metrics-valid-5b1d9", "tok-metrics-revoked-77c2e");
    assert_eq!(get_bearer(&format!("{}/a", g.url), valid).await.status, 200);
    admin_revoke(&g, revoked).await;
    assert_eq!(
        get_bearer(&format!("{}/b", g.url), revoked).await.status,
        401
    );
    assert_eq!(
        get_bearer(&format!("{}/c", g.url), revoked).await.status,
        401
    );
    let after = scrape().await;

    assert_eq!(
        requests(&after, "forwarded") - requests(&before, "forwarded"),
        1.0
    );
    assert_eq!(
        requests(&after, "revoked") - requests(&before, "revoked"),
        2.0
    );
    assert_eq!(after.family_type("revgate_requests_total"), Some("counter"));
    assert_eq!(
        after.family_type("revgate_overhead_seconds"),
        Some("histogram")
    );
    assert!(after.sum("revgate_overhead_seconds_count", &[]) >= 3.0);
    assert!(after.sum("revgate_upstream_seconds_count", &[]) >= 1.0);
    assert!(after.sum("revgate_revocations_applied_total", &[("source", "admin")]) >= 1.0);
    assert_eq!(after.value("revgate_store_connected", &[]), Some(1.0));
    assert!(after.value("revgate_bloom_bits", &[]).unwrap() > 0.0);
    assert_eq!(up.hits(), 1, "the revoked token never reached the upstream");

    let logs = g.logs();
    for raw in [valid, revoked] {
        assert!(!logs.contains(raw), "raw token {raw} in the logs:\n{logs}");
    }
}
