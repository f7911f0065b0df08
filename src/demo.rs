//! `revgate demo`: the gateway on the embedded store in front of a built-in
//! echo upstream, in terminate mode, so a newcomer can revoke a token and see
//! the 401 with nothing else installed.
//!
//! The echo upstream answers every request with a small JSON description of
//! what reached it (method, path, and whether a credential came through —
//! never the credential itself).

use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Starts the echo upstream on a free loopback port; returns its address.
pub async fn spawn_echo_upstream(shutdown: CancellationToken) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                _ = shutdown.cancelled() => return,
                a = listener.accept() => match a { Ok((s, _)) => s, Err(_) => continue },
            };
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<Incoming>| async move {
                    let body = serde_json::json!({
                        "upstream": "revgate demo echo",
                        "method": req.method().as_str(),
                        "path": req.uri().path(),
                        "authorized": req.headers().contains_key(http::header::AUTHORIZATION),
                    });
                    let mut r = Response::new(Full::new(Bytes::from(format!("{body}\n"))));
                    r.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("application/json"),
                    );
                    Ok::<_, std::convert::Infallible>(r)
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}
