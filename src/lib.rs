//! # revgate
//!
//! A reverse-proxy gateway that makes OAuth / bearer-token revocation real:
//! it records revocations made through vendors' revoke endpoints (or its
//! admin API) and rejects every later request carrying a revoked token before
//! it reaches an upstream, on every instance.
//!
//! # The request's path
//!
//! ```text
//! server   accept (TCP | TLS); HTTP/1.1 on the fast path (h1/), anything
//!          else handed to hyper (HTTP/1.1 + h2, auto) with the bytes read
//! admission (both paths; the hyper path's flow in proxy/, the fast path's in h1/)
//!          1. route          host / path prefix -> upstream
//!          2. revoke call?   dialect parses -> forward (apply on 2xx) | terminate (apply, answer);
//!                            a feed path (feeds/) -> verify, apply, answer
//!          3. verdict        credential -> fingerprint -> bloom -> store -> 401 | 400 | pass
//!          4. forward        streaming both ways, pooled upstream connections
//! ```
//!
//! # Layout
//!
//! ```text
//! config/          TOML (file.rs) + flags + env (overrides.rs) -> checked
//!                  (validate.rs, verify.rs: one check per section, every
//!                  duration bounded) -> Settings and its accessors (settings.rs)
//! server/          listeners, TLS, accept loop, I/O threads, graceful shutdown;
//!                  hyper_conn.rs: h2c sniffing, idle hyper connections parked
//! admission.rs     the stages both paths share: route (+ Host rule, revoke
//!                  call?), the verdict
//! refusal.rs       Refusal: every gateway-made error -> status, outcome, response
//! hygiene.rs       which header fields cross a hop (one classifier, both paths)
//! h1/              the HTTP/1.1 fast path: mod.rs (idle/busy phases, hand-over
//!                  to hyper), request.rs (eligibility, admission, upstream head),
//!                  conn.rs (one exchange), response.rs, relay.rs, framing.rs
//!                  (chunk scanner), pool.rs (upstream pool), rewind.rs
//! idle.rs          bodies that give up when they make no progress (hyper path)
//! proxy/           the hyper path: mod.rs (Gateway, the request's flow, the one
//!                  place a refusal is answered), runtime.rs (what SIGHUP
//!                  replaces), revoke.rs (revoke endpoints; intent -> command,
//!                  also the admin API's), body.rs, upstream.rs (forwarding,
//!                  upgrades, live sessions' bodies), issuance.rs (token
//!                  endpoints: what they issue is bound and joins its family,
//!                  the refresh tokens they are shown are judged)
//! credentials/     grammar.rs (every place a server may read a token),
//!                  params.rs (`access_token`), identity.rs (a JWS by its
//!                  signing input), fingerprint.rs, attributes.rs (claim peek)
//! verdict.rs       the per-request revocation check and the 401 it answers
//! dialect/         the vendors' revoke endpoints (pure parse/render pairs);
//!                  shared: form.rs (query/form decoding), secrets.rs,
//!                  fastapi.rs (LangSmith's and Codegen's FastAPI shapes)
//! identity/        principals: the verified identity of a revoker (JWT
//!                  against a JWKS, or trusted identity headers);
//!                  introspection.rs (RFC 7662, cached, single-flight)
//! store/           RevocationStore trait, LocalCache (bloom + scopes), live
//!                  (open upgrades and h2 streams a revocation must close),
//!                  journal/ (record format, replay, group-commit writer,
//!                  lossless compaction), MemoryStore (embedded), redis/
//!                  (RedisStore: keys, link, lookup, snapshot, sync/ (tail, load),
//!                  principals.rs (binding scripts), family.rs (family scripts)),
//!                  principal.rs (who holds a credential: bindings, scope rules
//!                  expanded into derived token rules), family.rs (token
//!                  families: one revoke for a grant)
//! feeds/           revocations identity providers push or we poll: mod.rs
//!                  (endpoint, effects -> store), set.rs (shared token
//!                  checks), backchannel.rs (OIDC Back-Channel Logout),
//!                  ssf.rs (SSF push, events, subjects), poll.rs (RFC 8936
//!                  poller, Redis lease), replay.rs (bounded jti memory)
//! admin.rs         /healthz /readyz /metrics and the admin revocation API;
//!                  admin/principals.rs (`/admin/v1/principals*`)
//! ratelimit.rs     per-client-IP token buckets (revoke endpoints, admin API)
//! tls.rs           rustls configs, certificate reload
//! metrics.rs       Prometheus metrics
//! telemetry.rs     logging, throttled warnings
//! accesslog.rs     the access log: per-thread buffers, one writer thread
//!                  (text | json | nginx combined; stderr or a file)
//! otel.rs          request ids, OpenTelemetry traces (OTLP)
//! builtin.rs       `builtin:ok` / `builtin:echo` upstreams, answered in the
//!                  gateway after the verdict (load tests, demos)
//! demo.rs          `revgate demo`: the gateway in front of a built-in echo upstream
//! cli/             `revgate admin ...` (the admin API from a shell), the version
//! ```
//!
//! The design, and this map in more detail: `docs/architecture.md`.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod accesslog;
pub mod admin;
pub(crate) mod admission;
pub mod builtin;
pub mod cli;
pub mod config;
pub mod credentials;
pub mod demo;
pub mod dialect;
pub mod feeds;
pub mod h1;
pub(crate) mod hygiene;
pub mod identity;
pub mod idle;
pub mod metrics;
pub mod otel;
pub mod proxy;
pub mod ratelimit;
pub mod refusal;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod verdict;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::credentials::FingerprintKey;
use crate::proxy::{Gateway, Runtime};
use crate::store::memory::MemoryStore;
use crate::store::RevocationStore;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A setting is wrong (names the key).
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The store could not be opened.
    #[error("store: {0}")]
    Store(String),
    /// TLS material could not be loaded.
    #[error("tls: {0}")]
    Tls(String),
    /// The OTLP exporter could not start.
    #[error(transparent)]
    Tracing(#[from] otel::OtelError),
    /// A listener could not be bound.
    #[error("bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

/// The fingerprint key: configured, or (embedded store only) generated once
/// and kept beside the journal.
pub fn fingerprint_key(settings: &Settings) -> Result<FingerprintKey, StartError> {
    if let Some(hex) = settings.fingerprint_key_hex() {
        return FingerprintKey::from_hex(hex).map_err(|e| {
            StartError::Config(config::ConfigError {
                key: "tokens.fingerprint_key".into(),
                message: e.to_string(),
            })
        });
    }
    let mut path = settings.store().journal.clone().into_os_string();
    path.push(".key");
    FingerprintKey::load_or_create(std::path::Path::new(&path))
        .map_err(|e| StartError::Store(e.to_string()))
}

/// Opens the configured store and starts its background maintenance.
pub async fn open_store(
    settings: &Settings,
    shutdown: CancellationToken,
) -> Result<Arc<dyn RevocationStore>, StartError> {
    let s = settings.store();
    if s.url == "memory" {
        let (store, report) = MemoryStore::open(&s.journal, s.bloom_capacity, s.bloom_fp_rate)
            .map_err(|e| StartError::Store(format!("journal {}: {e}", s.journal.display())))?;
        if report.torn_bytes > 0 {
            tracing::warn!(
                journal = %s.journal.display(),
                records = report.records,
                torn_bytes = report.torn_bytes,
                "journal had a torn or corrupt tail: kept the good prefix"
            );
        } else {
            tracing::info!(journal = %s.journal.display(), records = report.records, "journal replayed");
        }
        let store = Arc::new(store);
        let every = s.maintenance_interval;
        let st = store.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                match st.maintain().await {
                    Ok(m) => tracing::debug!(?m, "store maintenance"),
                    Err(e) => tracing::error!(error = %e, "store maintenance failed"),
                }
            }
        });
        Ok(store)
    } else {
        open_shared_store(&s.url, s, shutdown).await
    }
}

async fn open_shared_store(
    url: &str,
    cfg: &config::StoreConfig,
    shutdown: CancellationToken,
) -> Result<Arc<dyn RevocationStore>, StartError> {
    let store = crate::store::redis::RedisStore::start(url, cfg, shutdown)
        .await
        .map_err(|e| StartError::Store(e.to_string()))?;
    Ok(store)
}

/// The bound listeners.
pub struct Listeners {
    /// Client-facing.
    pub http: TcpListener,
    /// Admin.
    pub admin: TcpListener,
}

impl Listeners {
    /// Binds both listeners of the settings.
    pub async fn bind(settings: &Settings) -> Result<Self, StartError> {
        let addr = settings.listen;
        // The client listener takes siblings, one per I/O thread
        // (`server::listen`).
        let http = server::listen::bind(addr)
            .and_then(TcpListener::from_std)
            .map_err(|source| StartError::Bind { addr, source })?;
        let addr = settings.admin_listen;
        let admin = TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })?;
        Ok(Listeners { http, admin })
    }
}

/// A running gateway's handles.
pub struct Running {
    /// The gateway (for reloads).
    pub gateway: Arc<Gateway>,
    /// Certificate reloader, when TLS is on.
    pub tls: Option<Arc<tls::SniResolver>>,
}

/// Builds the gateway over an opened store.
pub fn build(
    settings: Settings,
    store: Arc<dyn RevocationStore>,
    key: FingerprintKey,
    shutdown: CancellationToken,
) -> Result<Arc<Gateway>, StartError> {
    build_with(settings, store, key, shutdown, None)
}

fn build_with(
    settings: Settings,
    store: Arc<dyn RevocationStore>,
    key: FingerprintKey,
    shutdown: CancellationToken,
    access: Option<Arc<accesslog::AccessLog>>,
) -> Result<Arc<Gateway>, StartError> {
    let runtime =
        Runtime::new(settings, Arc::new(key)).map_err(|e| StartError::Tls(e.to_string()))?;
    Ok(Arc::new(Gateway::with_access_log(
        runtime, store, shutdown, access,
    )))
}

/// How long shutdown waits for the access log's last lines to be written.
const ACCESS_LOG_CLOSE: Duration = Duration::from_secs(5);

/// A gateway ready to serve: store opened (journal replayed or Redis
/// loaded), TLS loaded, nothing listening yet. [`start`] makes it; print
/// `listening` only after it, so a store that cannot open fails start-up
/// before anyone is told the gateway is up.
pub struct Started {
    gateway: Arc<Gateway>,
    store: Arc<dyn RevocationStore>,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    resolver: Option<Arc<tls::SniResolver>>,
    options: server::Options,
}

/// Opens the store, loads TLS and builds the gateway: everything that can
/// fail at start-up but binding.
pub async fn start(settings: Settings, shutdown: CancellationToken) -> Result<Started, StartError> {
    let key = fingerprint_key(&settings)?;
    // Opened whether or not `log.access_log` is on: a SIGHUP may turn it on.
    let access = accesslog::AccessLog::start(settings.access_log_destination()).map_err(|e| {
        let target = match settings.access_log_destination() {
            accesslog::Destination::File(p) => p.display().to_string(),
            accesslog::Destination::Stderr => "stderr".into(),
        };
        StartError::Config(config::ConfigError {
            key: "log.access_log_path".into(),
            message: format!("cannot open {target} for appending: {e}"),
        })
    })?;
    match metrics::install() {
        Ok(handle) => {
            tokio::spawn(metrics::upkeep(handle, shutdown.clone()));
        }
        Err(e) => tracing::warn!(error = %e, "metrics disabled"),
    }
    otel::init(settings.tracing())?;
    let store = open_store(&settings, shutdown.clone()).await?;
    let server = settings.server();
    let options = server::Options {
        max_header_bytes: server.max_header_bytes,
        fast_path: server.fast_path,
        io_threads: server.io_threads,
        body_idle_timeout: server.body_idle_timeout,
        drain_timeout: server.drain_timeout,
        max_connections: server.max_connections,
        h2_keepalive_interval: server.h2_keepalive_interval,
        h2_keepalive_timeout: server.h2_keepalive_timeout,
        h2_max_concurrent_streams: server.h2_max_concurrent_streams,
    };
    let (acceptor, resolver) = match settings.tls() {
        Some(t) => {
            let resolver =
                Arc::new(tls::SniResolver::load(t).map_err(|e| StartError::Tls(e.to_string()))?);
            for r in resolver.resolvers() {
                tokio::spawn(tls::watch(
                    r.clone(),
                    Duration::from_secs(2),
                    shutdown.clone(),
                ));
            }
            let cfg =
                tls::server_config(resolver.clone()).map_err(|e| StartError::Tls(e.to_string()))?;
            (Some(tokio_rustls::TlsAcceptor::from(cfg)), Some(resolver))
        }
        None => (None, None),
    };
    let gateway = build_with(settings, store.clone(), key, shutdown.clone(), Some(access))?;
    Ok(Started {
        gateway,
        store,
        acceptor,
        resolver,
        options,
    })
}

impl Started {
    /// The handles a caller keeps (reloads).
    pub fn running(&self) -> Running {
        Running {
            gateway: self.gateway.clone(),
            tls: self.resolver.clone(),
        }
    }

    /// Serves on bound listeners until `shutdown`, drains, writes the
    /// access log's last lines, flushes the store.
    pub async fn serve(self, listeners: Listeners, shutdown: CancellationToken) {
        feeds::spawn_poller(self.gateway.clone(), shutdown.clone());
        let access = self.gateway.access_log().cloned();
        let admin = tokio::spawn(admin::serve(
            listeners.admin,
            self.gateway.clone(),
            shutdown.clone(),
        ));
        server::serve(
            listeners.http,
            self.acceptor,
            self.gateway,
            self.options,
            shutdown,
        )
        .await;
        // Every I/O thread has drained: the lines of every request served
        // are in the access log's buffers; written before the process exits.
        if let Some(log) = access {
            let closed = tokio::task::spawn_blocking(move || log.close(ACCESS_LOG_CLOSE)).await;
            if !matches!(closed, Ok(true)) {
                tracing::warn!(timeout = ?ACCESS_LOG_CLOSE, "access log: last lines not all written in time");
            }
        }
        let _ = admin.await;
        if let Err(e) = self.store.flush().await {
            tracing::error!(error = %e, "store flush at shutdown failed");
        }
        // The last spans, from a blocking thread: the exporter's client is.
        let _ = tokio::task::spawn_blocking(otel::shutdown).await;
    }
}

/// Runs the gateway on bound listeners until `shutdown` is cancelled, then
/// drains in-flight requests (up to `server.drain_timeout`) and flushes the
/// store. `on_start` receives the handles once serving.
pub async fn run(
    listeners: Listeners,
    settings: Settings,
    shutdown: CancellationToken,
    on_start: impl FnOnce(&Running),
) -> Result<(), StartError> {
    let started = start(settings, shutdown.clone()).await?;
    on_start(&started.running());
    started.serve(listeners, shutdown).await;
    Ok(())
}
