//! Listeners: the accept loop, optional TLS, HTTP/1.1 + h2 (and h2c with
//! prior knowledge) through hyper-util's auto builder, and graceful shutdown.
//!
//! Shutdown follows hyper-util's `server_graceful` example: when `shutdown`
//! is cancelled the listener is dropped (new connections are refused), every
//! open connection is told to finish its in-flight requests and close, and
//! the server waits for them up to `drain_timeout`.
//!
//! Limits: a request head over `server.max_header_bytes` is answered 431 by
//! hyper (HTTP/1.1) or refused by h2 (HTTP/2); a client that does not finish
//! its request head within [`HEADER_READ_TIMEOUT`] is disconnected.

use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::proxy::{ClientConn, Gateway};

/// Time a client has to send its whole request head.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Time a client has to complete a TLS handshake.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the gateway on an already-bound listener until `shutdown`, then
/// drains for at most `drain_timeout`.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    gateway: Arc<Gateway>,
    max_header_bytes: usize,
    shutdown: CancellationToken,
    drain_timeout: Duration,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .max_buf_size(max_header_bytes.max(8192))
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder
        .http2()
        .max_header_list_size(max_header_bytes as u32)
        .timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();

    loop {
        let (stream, addr) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let conn = ClientConn {
            addr,
            tls: tls.is_some(),
        };
        let gw = gateway.clone();
        let service = service_fn(move |req| gw.clone().handle(req, conn));
        let builder = builder.clone();
        match &tls {
            None => {
                let c = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                let c = graceful.watch(c.into_owned());
                tokio::spawn(async move {
                    if let Err(e) = c.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let tls_stream =
                        match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                            .await
                        {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                tracing::debug!(error = %e, client = %addr, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(client = %addr, "TLS handshake timed out");
                                return;
                            }
                        };
                    let c =
                        builder.serve_connection_with_upgrades(TokioIo::new(tls_stream), service);
                    if let Err(e) = watcher.watch(c.into_owned()).await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
        }
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all connections drained"),
        _ = tokio::time::sleep(drain_timeout) => {
            tracing::warn!(timeout = ?drain_timeout, "drain timeout: closing remaining connections");
        }
    }
}
