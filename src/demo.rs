//! `revgate demo`: the gateway on the embedded store in front of a built-in
//! echo upstream, in terminate mode, so a newcomer can revoke a token and see
//! the 401 with nothing else installed.
//!
//! The demo's upstream is `builtin:echo` ([`crate::builtin`]): every
//! request answered inside the gateway with a small JSON description of
//! what reached it (method, path, whether a credential came through, the
//! header fields minus credentials — never a credential itself).
//! [`spawn_echo_upstream`] serves the same answer from a real socket, for
//! benchmarks that need an upstream across the loopback.

use std::net::SocketAddr;

use http::Request;
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
                    let r = crate::builtin::echo_response(
                        req.method().as_str(),
                        req.uri().path(),
                        req.headers(),
                        &[],
                    );
                    Ok::<_, std::convert::Infallible>(r.map(Full::new))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}
