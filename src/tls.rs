//! TLS: the listener's certificate (reloadable without dropping
//! connections) and the client configuration for `https://` upstreams.
//!
//! # API (what `server.rs` and `proxy.rs` call)
//!
//! ```text
//! // listener
//! let resolver = Arc::new(tls::ReloadingCertResolver::load(&cert_path, &key_path)?);
//! let acceptor = tokio_rustls::TlsAcceptor::from(tls::server_config(resolver.clone())?);
//! tokio::spawn(tls::watch(resolver.clone(), Duration::from_secs(5), cancel.child_token()));
//! // on SIGHUP:
//! if let Err(e) = resolver.reload() { /* logged by reload(); old cert keeps serving */ }
//! // after accept: tls_stream.get_ref().1.alpn_protocol() == Some(b"h2") -> HTTP/2
//!
//! // upstreams
//! let client = tls::upstream_client_config(ca_file, client_cert, client_key)?;
//! let https = hyper_rustls::HttpsConnectorBuilder::new()
//!     .with_tls_config(client).https_or_http().enable_http1().wrap_connector(http);
//! ```
//!
//! # Decisions
//!
//! - Crypto provider: `ring`, passed explicitly to every builder
//!   ([`provider`]), so nothing depends on a process-wide default being
//!   installed and the build needs only a C compiler (no cmake/Go as
//!   aws-lc-rs would).
//! - Rotation: [`ReloadingCertResolver`] hands rustls the current
//!   `Arc<CertifiedKey>` from an `ArcSwap` on each handshake. A reload swaps
//!   the pointer: sessions already established keep the key they were
//!   negotiated with, new handshakes get the new one, no connection drops.
//!   A reload that fails (unreadable file, bad PEM, key not matching the
//!   certificate) leaves the old certificate serving and returns the error.
//! - Several certificates on one listener, by SNI: [`SniResolver`]
//!   (`tls/sni.rs`), each of them a [`ReloadingCertResolver`].
//! - File watching polls metadata (mtime, size, inode) of both files rather
//!   than using inotify: no extra crate, and it works for Kubernetes secret
//!   volumes, whose files are replaced through a `..data` symlink swap
//!   (`metadata` follows symlinks, so the inode changes). A failed reload
//!   is retried on every tick until it succeeds, because a certificate
//!   manager may write the chain and the key at different moments.
//! - Upstream ALPN is left empty on purpose: `hyper_rustls` asserts that the
//!   config it is given has no ALPN protocols and sets them itself from
//!   `enable_http1()` / `enable_http2()`. An HTTP/1-only connector sends no
//!   ALPN, which every server reads as HTTP/1.1.
//! - Upstream trust: the configured CA bundle *replaces* the system roots
//!   (an internal CA is the usual reason to set it; trusting both would let
//!   any public CA impersonate an internal service).
//!
//! Size: ~410 lines of code and ~300 of tests (generated certificates,
//! reload, client auth), kept beside what they test.

pub mod sni;

pub use sni::SniResolver;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_util::sync::CancellationToken;

/// ALPN protocols offered by the listener, in preference order.
pub const SERVER_ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// A TLS set-up error. Start-up errors; none occur on the request path.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("{path}: {source}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// Why.
        source: rustls_pki_types::pem::Error,
    },
    /// A certificate file held no certificate.
    #[error("{0}: no certificate found")]
    NoCertificate(PathBuf),
    /// rustls refused the material (unsupported key type, key does not match
    /// the certificate, bad CA certificate...).
    #[error("{context}: {source}")]
    Rustls {
        /// What was being done, naming the file when there is one.
        context: String,
        /// Why.
        source: rustls::Error,
    },
    /// No system root certificate could be loaded (and no CA file is set).
    #[error("no system root certificates found ({0}); set upstream.ca_file")]
    NoSystemRoots(String),
}

/// The crypto provider used everywhere in revgate: `ring`.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads every certificate from a PEM file (a chain, leaf first).
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = |source| TlsError::Pem {
        path: path.to_owned(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(pem)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(path.to_owned()));
    }
    Ok(certs)
}

/// Reads the first private key (PKCS#8, PKCS#1 or SEC1) from a PEM file.
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|source| TlsError::Pem {
        path: path.to_owned(),
        source,
    })
}

/// Loads a certificate chain and its key, checking that they belong together.
pub fn load_certified_key(
    cert_path: &Path,
    key_path: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let certs = read_certs(cert_path)?;
    let key = read_key(key_path)?;
    CertifiedKey::from_der(certs, key, provider).map_err(|source| TlsError::Rustls {
        context: format!("{} with {}", cert_path.display(), key_path.display()),
        source,
    })
}

// === impl ReloadingCertResolver ===

/// The listener's certificate, swappable at run time.
///
/// Implements rustls' [`ResolvesServerCert`]: every handshake (whatever its
/// SNI) gets the current certificate. See the module docs for how reloads
/// behave.
pub struct ReloadingCertResolver {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    current: ArcSwap<CertifiedKey>,
}

impl fmt::Debug for ReloadingCertResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingCertResolver")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .finish_non_exhaustive()
    }
}

impl ReloadingCertResolver {
    /// Loads the PEM chain at `cert_path` and key at `key_path`.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, TlsError> {
        let provider = provider();
        let key = load_certified_key(cert_path, key_path, &provider)?;
        Ok(ReloadingCertResolver {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            provider,
            current: ArcSwap::from_pointee(key),
        })
    }

    /// Re-reads both files. On success new handshakes use the new
    /// certificate; on failure the old one stays and the error is returned
    /// (and logged at `warn`).
    pub fn reload(&self) -> Result<(), TlsError> {
        match load_certified_key(&self.cert_path, &self.key_path, &self.provider) {
            Ok(key) => {
                self.current.store(Arc::new(key));
                crate::metrics::reload("tls", true);
                tracing::info!(cert = %self.cert_path.display(), "TLS certificate reloaded");
                Ok(())
            }
            Err(e) => {
                crate::metrics::reload("tls", false);
                tracing::warn!(error = %e, "TLS certificate reload failed; keeping the current certificate");
                Err(e)
            }
        }
    }

    /// The certificate new handshakes get.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.load_full()
    }

    /// The certificate and key files.
    pub fn paths(&self) -> (&Path, &Path) {
        (&self.cert_path, &self.key_path)
    }

    fn stamp(&self) -> Option<(FileStamp, FileStamp)> {
        Some((
            FileStamp::of(&self.cert_path)?,
            FileStamp::of(&self.key_path)?,
        ))
    }
}

impl ResolvesServerCert for ReloadingCertResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// What the watcher compares between polls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

impl FileStamp {
    fn of(path: &Path) -> Option<FileStamp> {
        let m = std::fs::metadata(path).ok()?;
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(&m);
        #[cfg(not(unix))]
        let inode = 0;
        Some(FileStamp {
            modified: m.modified().ok(),
            len: m.len(),
            inode,
        })
    }
}

/// Polls the resolver's files every `interval` and reloads when either
/// changed, until `cancel` fires. Spawn it: `tokio::spawn(watch(..))`.
///
/// A missing file or a failed reload keeps the current certificate; the
/// reload is retried on each tick until it succeeds (one `warn` per distinct
/// failing state, not one per tick).
pub async fn watch(
    resolver: Arc<ReloadingCertResolver>,
    interval: Duration,
    cancel: CancellationToken,
) {
    let mut loaded = resolver.stamp();
    let mut failed: Option<(FileStamp, FileStamp)> = None;
    let mut tick = tokio::time::interval(interval.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = resolver.stamp();
        if now.is_none() || now == loaded {
            continue;
        }
        match load_certified_key(&resolver.cert_path, &resolver.key_path, &resolver.provider) {
            Ok(key) => {
                resolver.current.store(Arc::new(key));
                crate::metrics::reload("tls", true);
                tracing::info!(cert = %resolver.cert_path.display(), "TLS certificate files changed; reloaded");
                loaded = now;
                failed = None;
            }
            Err(e) => {
                if failed != now {
                    crate::metrics::reload("tls", false);
                    tracing::warn!(error = %e, "TLS certificate files changed but do not load; keeping the current certificate");
                    failed = now;
                }
            }
        }
    }
}

/// The listener's rustls configuration: certificates from `resolver`, ALPN
/// `h2` then `http/1.1`, no client authentication, TLS 1.2 and 1.3. (The
/// error cannot happen with ring, which implements both versions; it is
/// returned rather than unwrapped so the library has no panic path.)
pub fn server_config(
    resolver: Arc<dyn ResolvesServerCert>,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(rustls::DEFAULT_VERSIONS)?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = SERVER_ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// The client configuration for `https://` upstreams.
///
/// Trust: the certificates in `ca_file` when set (instead of the system
/// roots), else the system roots (`rustls-native-certs`, honouring
/// `SSL_CERT_FILE` / `SSL_CERT_DIR`). With `client_cert` and `client_key`
/// both set, that certificate is presented when the upstream asks (mTLS).
/// ALPN is left empty for `hyper_rustls` to fill (see the module docs).
pub fn upstream_client_config(
    ca_file: Option<&Path>,
    client_cert: Option<&Path>,
    client_key: Option<&Path>,
) -> Result<ClientConfig, TlsError> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in read_certs(path)? {
                roots.add(cert).map_err(|source| TlsError::Rustls {
                    context: format!("{}: CA certificate", path.display()),
                    source,
                })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = found
                    .errors
                    .first()
                    .map(|e| e.to_string())
                    .unwrap_or_else(|| "none installed".into());
                return Err(TlsError::NoSystemRoots(why));
            }
            for e in &found.errors {
                tracing::debug!(error = %e, "skipped a system root certificate source");
            }
        }
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Rustls {
            context: "client TLS versions".into(),
            source,
        })?
        .with_root_certificates(roots);
    let config = match (client_cert, client_key) {
        (Some(cert_path), Some(key_path)) => {
            let certs = read_certs(cert_path)?;
            let key = read_key(key_path)?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|source| TlsError::Rustls {
                    context: format!(
                        "client certificate {} with {}",
                        cert_path.display(),
                        key_path.display()
                    ),
                    source,
                })?
        }
        (None, None) => builder.with_no_client_auth(),
        (Some(p), None) | (None, Some(p)) => {
            return Err(TlsError::Rustls {
                context: format!("{}: client_cert and client_key go together", p.display()),
                source: rustls::Error::General("incomplete client certificate".into()),
            })
        }
    };
    Ok(config)
}

/// An outbound HTTP client (HTTP/1.1, `https://` or plain `http://`) over
/// `tls`, the one way revgate builds one (upstreams, the JWKS fetch).
pub struct OutboundClient {
    /// `TCP_NODELAY` is always on; the connect timeout.
    pub connect_timeout: Duration,
    /// TCP keep-alive probes, when wanted.
    pub tcp_keepalive: Option<Duration>,
    /// How long an idle pooled connection is kept.
    pub pool_idle_timeout: Duration,
    /// Idle pooled connections kept per host.
    pub pool_max_idle_per_host: usize,
}

impl OutboundClient {
    /// The client, for request bodies of type `B`.
    pub fn build<B>(
        &self,
        tls: ClientConfig,
    ) -> hyper_util::client::legacy::Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        B,
    >
    where
        B: http_body::Body + Send + 'static,
        B::Data: Send,
    {
        let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
        http.set_connect_timeout(Some(self.connect_timeout));
        http.set_nodelay(true);
        http.enforce_http(false);
        http.set_keepalive(self.tcp_keepalive);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(self.pool_idle_timeout)
            .pool_max_idle_per_host(self.pool_max_idle_per_host)
            .build(connector)
    }
}

#[cfg(test)]
#[path = "../tests/support/certs.rs"]
mod test_certs;

#[cfg(test)]
mod tests {
    use super::test_certs::{write_atomic, write_pki, Pki};
    use super::*;
    use rustls::pki_types::ServerName;
    use rustls::server::WebPkiClientVerifier;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    const LIMIT: Duration = Duration::from_secs(10);

    fn pki() -> (tempfile::TempDir, Pki) {
        let dir = tempfile::tempdir().unwrap();
        let pki = write_pki(dir.path(), &["localhost", "127.0.0.1"]);
        (dir, pki)
    }

    /// An echo server on a loopback port: each connection answers one line
    /// with "<alpn>:<line>", then keeps echoing until EOF.
    async fn echo_server(config: Arc<ServerConfig>) -> (std::net::SocketAddr, CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = TlsAcceptor::from(config);
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = tokio::select! {
                    _ = stop.cancelled() => return,
                    r = listener.accept() => r.unwrap(),
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let alpn = tls
                        .get_ref()
                        .1
                        .alpn_protocol()
                        .map(|p| String::from_utf8_lossy(p).into_owned())
                        .unwrap_or_default();
                    let mut buf = [0u8; 256];
                    loop {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                let reply =
                                    format!("{alpn}:{}", String::from_utf8_lossy(&buf[..n]));
                                if tls.write_all(reply.as_bytes()).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        (addr, cancel)
    }

    fn client_with_ca(ca: &Path, alpn: &[&[u8]]) -> Arc<ClientConfig> {
        let mut c = upstream_client_config(Some(ca), None, None).unwrap();
        c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(c)
    }

    type Client = tokio_rustls::client::TlsStream<TcpStream>;

    async fn connect(
        config: Arc<ClientConfig>,
        addr: std::net::SocketAddr,
        name: &str,
    ) -> std::io::Result<Client> {
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::try_from(name.to_string()).unwrap();
        tokio::time::timeout(LIMIT, TlsConnector::from(config).connect(name, tcp))
            .await
            .map_err(|_| std::io::Error::other("handshake timed out"))?
    }

    async fn roundtrip(c: &mut Client, msg: &str) -> String {
        c.write_all(msg.as_bytes()).await.unwrap();
        let mut buf = [0u8; 256];
        let n = tokio::time::timeout(LIMIT, c.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    fn leaf(c: &Client) -> Vec<u8> {
        c.get_ref().1.peer_certificates().unwrap()[0].to_vec()
    }

    #[tokio::test]
    async fn handshake_with_the_ca_succeeds_and_negotiates_alpn() {
        let (_d, pki) = pki();
        let resolver =
            Arc::new(ReloadingCertResolver::load(&pki.server_cert, &pki.server_key).unwrap());
        let (addr, stop) = echo_server(server_config(resolver).unwrap()).await;

        let mut h2 = connect(
            client_with_ca(&pki.ca_cert, &[b"h2", b"http/1.1"]),
            addr,
            "localhost",
        )
        .await
        .unwrap();
        assert_eq!(roundtrip(&mut h2, "hi").await, "h2:hi");
        let mut h1 = connect(
            client_with_ca(&pki.ca_cert, &[b"http/1.1"]),
            addr,
            "127.0.0.1",
        )
        .await
        .unwrap();
        assert_eq!(roundtrip(&mut h1, "hi").await, "http/1.1:hi");
        stop.cancel();
    }

    #[tokio::test]
    async fn wrong_name_or_untrusted_ca_fails() {
        let (_d, pki) = pki();
        let (_d2, other) = self::pki();
        let resolver =
            Arc::new(ReloadingCertResolver::load(&pki.server_cert, &pki.server_key).unwrap());
        let (addr, stop) = echo_server(server_config(resolver).unwrap()).await;

        let wrong_name = connect(client_with_ca(&pki.ca_cert, &[]), addr, "evil.example").await;
        assert!(wrong_name.is_err(), "a name outside the SANs must fail");
        let untrusted = connect(client_with_ca(&other.ca_cert, &[]), addr, "localhost").await;
        assert!(
            untrusted.is_err(),
            "a certificate from another CA must fail"
        );
        stop.cancel();
    }

    #[tokio::test]
    async fn reload_swaps_for_new_handshakes_and_keeps_open_sessions() {
        let (_d, pki) = pki();
        let resolver =
            Arc::new(ReloadingCertResolver::load(&pki.server_cert, &pki.server_key).unwrap());
        let (addr, stop) = echo_server(server_config(resolver.clone()).unwrap()).await;
        let client = client_with_ca(&pki.ca_cert, &[]);

        let mut before = connect(client.clone(), addr, "localhost").await.unwrap();
        let old_leaf = leaf(&before);

        let (cert, key) = pki.ca.issue_server(&["localhost"]);
        write_atomic(&pki.server_cert, &cert);
        write_atomic(&pki.server_key, &key);
        resolver.reload().unwrap();

        let after = connect(client, addr, "localhost").await.unwrap();
        assert_ne!(
            leaf(&after),
            old_leaf,
            "new handshakes get the new certificate"
        );
        assert_eq!(
            roundtrip(&mut before, "still here").await,
            ":still here",
            "the session opened before the reload keeps working"
        );
        stop.cancel();
    }

    #[test]
    fn a_broken_file_keeps_the_old_certificate() {
        let (_d, pki) = pki();
        let resolver =
            Arc::new(ReloadingCertResolver::load(&pki.server_cert, &pki.server_key).unwrap());
        let old = resolver.current();

        write_atomic(
            &pki.server_cert,
            "-----BEGIN CERTIFICATE-----\nnot base64!\n",
        );
        assert!(resolver.reload().is_err());
        assert!(Arc::ptr_eq(&old, &resolver.current()));

        // A valid certificate with the wrong key is refused too.
        let (cert, _key) = pki.ca.issue_server(&["localhost"]);
        write_atomic(&pki.server_cert, &cert);
        let err = resolver.reload().unwrap_err();
        assert!(matches!(err, TlsError::Rustls { .. }), "{err}");
        assert!(Arc::ptr_eq(&old, &resolver.current()));

        std::fs::remove_file(&pki.server_key).unwrap();
        assert!(resolver.reload().is_err());
        assert!(Arc::ptr_eq(&old, &resolver.current()));
    }

    #[tokio::test]
    async fn the_watcher_picks_up_changed_files_and_survives_broken_ones() {
        let (_d, pki) = pki();
        let resolver =
            Arc::new(ReloadingCertResolver::load(&pki.server_cert, &pki.server_key).unwrap());
        let cancel = CancellationToken::new();
        let task = tokio::spawn(watch(
            resolver.clone(),
            Duration::from_millis(20),
            cancel.clone(),
        ));

        // Broken first: nothing changes.
        let first = resolver.current();
        write_atomic(&pki.server_cert, "garbage");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(Arc::ptr_eq(&first, &resolver.current()));

        // Then a good pair: picked up within the bound.
        let (cert, key) = pki.ca.issue_server(&["localhost"]);
        write_atomic(&pki.server_key, &key);
        write_atomic(&pki.server_cert, &cert);
        let deadline = tokio::time::Instant::now() + LIMIT;
        while Arc::ptr_eq(&first, &resolver.current()) {
            assert!(tokio::time::Instant::now() < deadline, "not reloaded");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let new_leaf = read_certs(&pki.server_cert).unwrap().remove(0);
        assert_eq!(resolver.current().cert[0], new_leaf);

        cancel.cancel();
        tokio::time::timeout(LIMIT, task).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn mtls_client_presents_its_certificate() {
        let (_d, pki) = pki();
        let mut roots = RootCertStore::empty();
        for c in read_certs(&pki.ca_cert).unwrap() {
            roots.add(c).unwrap();
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .unwrap();
        let key = load_certified_key(&pki.server_cert, &pki.server_key, &provider()).unwrap();
        let server = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(key.cert.clone(), read_key(&pki.server_key).unwrap())
            .unwrap();
        let (addr, stop) = echo_server(Arc::new(server)).await;

        let with_cert = Arc::new(
            upstream_client_config(
                Some(&pki.ca_cert),
                Some(&pki.client_cert),
                Some(&pki.client_key),
            )
            .unwrap(),
        );
        assert!(
            with_cert.alpn_protocols.is_empty(),
            "hyper-rustls sets ALPN"
        );
        let mut c = connect(with_cert, addr, "localhost").await.unwrap();
        assert_eq!(roundtrip(&mut c, "mtls").await, ":mtls");

        // Without a client certificate the server refuses. In TLS 1.3 the
        // client learns it on its first read, after the handshake.
        let without = client_with_ca(&pki.ca_cert, &[]);
        let refused = match connect(without, addr, "localhost").await {
            Err(_) => true,
            Ok(mut c) => {
                let _ = c.write_all(b"x").await;
                let mut buf = [0u8; 16];
                !matches!(
                    tokio::time::timeout(LIMIT, c.read(&mut buf)).await,
                    Ok(Ok(n)) if n > 0
                )
            }
        };
        assert!(refused, "a client without a certificate must be refused");
        stop.cancel();
    }

    #[test]
    fn incomplete_client_pair_and_bad_ca_are_errors() {
        let (_d, pki) = pki();
        assert!(upstream_client_config(Some(&pki.ca_cert), Some(&pki.client_cert), None).is_err());
        let missing = pki.ca_cert.with_file_name("nope.pem");
        assert!(matches!(
            upstream_client_config(Some(&missing), None, None),
            Err(TlsError::Pem { .. })
        ));
        let empty = pki.ca_cert.with_file_name("empty.pem");
        std::fs::write(&empty, "").unwrap();
        assert!(matches!(
            upstream_client_config(Some(&empty), None, None),
            Err(TlsError::NoCertificate(_))
        ));
    }
}
