//! Configuration: a TOML file, then command-line flags (each also read from
//! `REVGATE_<NAME>`), then validation whose errors name the offending key.
//!
//! Pipeline: `Config::from_toml` (serde, unknown keys refused) →
//! [`Overrides::apply`] → [`Config::validate`] → [`Settings`], the checked,
//! parsed form the rest of the gateway uses. Every key is documented in
//! `config/revgate.example.toml`; durations are humantime strings ("30s",
//! "24h").

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::credentials::{AttributeSources, ClaimNames, CredentialSources, IdentityHeaders};
use crate::dialect::{DialectKind, DialectSecrets, RevokeMode};

/// A configuration error: which key, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    /// Dotted path of the key, e.g. `routes[1].upstream`.
    pub key: String,
    /// What is wrong with it.
    pub message: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// The whole configuration file.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The client-facing listener.
    pub server: ServerConfig,
    /// The default upstream (the sidecar case).
    pub upstream: UpstreamConfig,
    /// Host / path-prefix routes; longest prefix wins, `upstream.url` is the default.
    pub routes: Vec<RouteConfig>,
    /// Credentials: sources, fingerprint key, lifetimes, claims.
    pub tokens: TokensConfig,
    /// The revocation store.
    pub store: StoreConfig,
    /// The revoke-endpoint dialects.
    pub revoke: RevokeConfig,
    /// The admin listener.
    pub admin: AdminConfig,
    /// Logging.
    pub log: LogConfig,
}

/// `[server]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: String,
    /// Largest request head (request line + headers) accepted; beyond it, 431.
    pub max_header_bytes: usize,
    /// How long in-flight requests may take to finish after SIGTERM.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// The longest a request or response body may make no progress (no
    /// byte read or written) before the exchange is given up, on both
    /// connection paths: 408 for a client that stops sending, 504 (fast
    /// path) for an upstream that stops reading, the connection (or HTTP/2
    /// stream) closed once a response has begun.
    #[serde(with = "humantime_serde")]
    pub body_idle_timeout: Duration,
    /// TLS on the listener, when set.
    pub tls: Option<ServerTlsConfig>,
    /// Relay plain HTTP/1.1 requests on the fast path (`src/h1`); `false`
    /// sends every connection through hyper.
    pub h1_fast_path: bool,
    /// Threads serving client connections, each with its own single-threaded
    /// runtime and upstream pools (connections are dealt to them in turn);
    /// 0 = one per CPU.
    pub io_threads: usize,
    /// Most client connections open at once; beyond it the listener stops
    /// accepting (new connections wait in the kernel's backlog) until one
    /// closes. Counted in `revgate_connections_open` and
    /// `revgate_connections_limited_total`.
    pub max_connections: usize,
    /// HTTP/2: how often an idle connection is pinged...
    #[serde(with = "humantime_serde")]
    pub h2_keepalive_interval: Duration,
    /// ...and how long the answer may take before the connection is closed.
    #[serde(with = "humantime_serde")]
    pub h2_keepalive_timeout: Duration,
    /// HTTP/2: most streams a client may have open on one connection.
    pub h2_max_concurrent_streams: u32,
    /// An upgraded (WebSocket) connection on which nothing moved either way
    /// for this long is closed.
    #[serde(with = "humantime_serde")]
    pub upgrade_idle_timeout: Duration,
}

impl ServerConfig {
    /// The number of I/O threads, `io_threads` resolved (0 = CPUs).
    pub fn io_thread_count(&self) -> usize {
        match self.io_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".into(),
            max_header_bytes: 32 * 1024,
            drain_timeout: Duration::from_secs(30),
            body_idle_timeout: Duration::from_secs(60),
            tls: None,
            h1_fast_path: true,
            io_threads: 0,
            max_connections: 10_000,
            h2_keepalive_interval: Duration::from_secs(30),
            h2_keepalive_timeout: Duration::from_secs(10),
            h2_max_concurrent_streams: 256,
            upgrade_idle_timeout: Duration::from_secs(600),
        }
    }
}

/// `[server.tls]`
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerTlsConfig {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// `[upstream]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamConfig {
    /// The default upstream, e.g. `http://127.0.0.1:3000`.
    pub url: Option<String>,
    /// Upstream TCP (+TLS) connect timeout; past it, 504.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Time to the upstream's response headers; past it, 504.
    #[serde(with = "humantime_serde")]
    pub response_header_timeout: Duration,
    /// Idle pooled connections are closed after this long.
    #[serde(with = "humantime_serde")]
    pub pool_idle_timeout: Duration,
    /// Idle pooled connections kept per upstream host.
    pub pool_max_idle_per_host: usize,
    /// PEM CA bundle for `https://` upstreams, instead of the system roots.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain (mTLS to upstreams).
    pub client_cert: Option<PathBuf>,
    /// PEM client key (mTLS to upstreams).
    pub client_key: Option<PathBuf>,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            url: None,
            connect_timeout: Duration::from_secs(5),
            response_header_timeout: Duration::from_secs(60),
            pool_idle_timeout: Duration::from_secs(90),
            pool_max_idle_per_host: 1024,
            ca_file: None,
            client_cert: None,
            client_key: None,
        }
    }
}

/// `[[routes]]`
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouteConfig {
    /// Name for metrics and logs (defaults to the upstream's authority).
    pub name: Option<String>,
    /// Match this `Host` (without port), if set.
    pub host: Option<String>,
    /// Match paths starting with this prefix, if set.
    pub path_prefix: Option<String>,
    /// Where matching requests go.
    pub upstream: String,
}

/// `[tokens]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokensConfig {
    /// 64 hex characters shared by all instances (or `REVGATE_FINGERPRINT_KEY`).
    /// On the embedded store, generated and kept beside the journal if unset.
    pub fingerprint_key: Option<String>,
    /// Lifetime assumed for a token with no `exp`.
    #[serde(with = "humantime_serde")]
    pub max_lifetime: Duration,
    /// Added to a JWT's `exp` when deciding how long to keep its revocation.
    #[serde(with = "humantime_serde")]
    pub clock_skew: Duration,
    /// Read `access_token` from the query (RFC 6750 §2.3).
    pub query_param: bool,
    /// Headers whose whole value is an API key, e.g. `["x-api-key"]`.
    pub api_key_headers: Vec<String>,
    /// JWT claim names.
    pub claims: ClaimNames,
    /// Trusted identity headers set by an auth layer in front (none by default).
    pub identity_headers: IdentityHeadersConfig,
    /// Largest `application/x-www-form-urlencoded` request body read to look
    /// for an `access_token` (RFC 6750 §2.2); a larger one is refused (413),
    /// since an upstream could read a token revgate did not judge. 0 turns
    /// the check off (form bodies then pass unjudged).
    pub form_body_limit: usize,
    /// Accept revocations by JWT `jti` (+ `iss`) through the admin API; every
    /// JWT's `jti` and `iss` are then peeked on every request (~1 µs).
    pub revoke_by_jti: bool,
    /// JWT verification of revokers (`[tokens.verify]`); none by default.
    pub verify: Option<VerifyConfig>,
}

impl Default for TokensConfig {
    fn default() -> Self {
        TokensConfig {
            fingerprint_key: None,
            max_lifetime: Duration::from_secs(24 * 3600),
            clock_skew: Duration::from_secs(60),
            query_param: true,
            api_key_headers: Vec::new(),
            claims: ClaimNames::default(),
            identity_headers: IdentityHeadersConfig::default(),
            form_body_limit: 64 * 1024,
            revoke_by_jti: false,
            verify: None,
        }
    }
}

/// `[tokens.verify]`: how the JWT of a terminate-mode scope revoker is
/// verified (see `identity`). Exactly one of `jwks_url`, `jwks_file`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VerifyConfig {
    /// The identity provider's JWKS: `https://`, or `http://` to a loopback
    /// host only.
    pub jwks_url: Option<String>,
    /// A JWKS file, read at start and on SIGHUP.
    pub jwks_file: Option<PathBuf>,
    /// Accepted `iss` values (at least one).
    pub issuers: Vec<String>,
    /// Accepted `aud` values (at least one).
    pub audiences: Vec<String>,
    /// Clock tolerance for `exp`, `nbf`, `iat`.
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    /// How often `jwks_url` is refetched.
    #[serde(with = "humantime_serde")]
    pub refresh_interval: Duration,
    /// The least time between two fetches of `jwks_url` (an unknown `kid`
    /// refetches, but not more often than this).
    #[serde(with = "humantime_serde")]
    pub min_refresh_interval: Duration,
    /// The bound on one fetch of `jwks_url`.
    #[serde(with = "humantime_serde")]
    pub fetch_timeout: Duration,
}

impl Default for VerifyConfig {
    fn default() -> Self {
        VerifyConfig {
            jwks_url: None,
            jwks_file: None,
            issuers: Vec::new(),
            audiences: Vec::new(),
            leeway: Duration::from_secs(60),
            refresh_interval: Duration::from_secs(300),
            min_refresh_interval: Duration::from_secs(30),
            fetch_timeout: Duration::from_secs(5),
        }
    }
}

impl VerifyConfig {
    /// Checks the section; reads `jwks_file`.
    fn validate(&self) -> Result<crate::identity::VerifySettings, ConfigError> {
        use crate::identity::{KeySet, KeySource, Policy, VerifySettings};
        let source = match (&self.jwks_url, &self.jwks_file) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    "tokens.verify.jwks_url",
                    "set jwks_url or jwks_file, not both",
                ))
            }
            (None, None) => {
                return Err(ConfigError::new(
                    "tokens.verify.jwks_url",
                    "required (or jwks_file): where are the signature keys?",
                ))
            }
            (Some(url), None) => KeySource::Url(jwks_url("tokens.verify.jwks_url", url)?),
            (None, Some(path)) => {
                let keys = KeySet::load_file(path).map_err(|e| {
                    ConfigError::new(
                        "tokens.verify.jwks_file",
                        format!("{}: {e}", path.display()),
                    )
                })?;
                KeySource::File {
                    path: path.clone(),
                    keys: std::sync::Arc::new(keys),
                }
            }
        };
        for (key, values) in [
            ("tokens.verify.issuers", &self.issuers),
            ("tokens.verify.audiences", &self.audiences),
        ] {
            if values.is_empty() {
                return Err(ConfigError::new(
                    key,
                    "at least one is required: a token minted for anyone else must not pass",
                ));
            }
            if let Some(i) = values.iter().position(|v| v.is_empty()) {
                return Err(ConfigError::new(format!("{key}[{i}]"), "must not be empty"));
            }
        }
        if self.leeway > Duration::from_secs(600) {
            return Err(ConfigError::new(
                "tokens.verify.leeway",
                "at most 10m: clocks that far apart need fixing, not tolerating",
            ));
        }
        if self.fetch_timeout.is_zero() {
            return Err(ConfigError::new(
                "tokens.verify.fetch_timeout",
                "must be more than 0",
            ));
        }
        if self.min_refresh_interval.is_zero() {
            return Err(ConfigError::new(
                "tokens.verify.min_refresh_interval",
                "must be more than 0: it is what stops an unknown-kid spray from hammering the identity provider",
            ));
        }
        if self.refresh_interval < self.min_refresh_interval {
            return Err(ConfigError::new(
                "tokens.verify.refresh_interval",
                "must be at least min_refresh_interval",
            ));
        }
        Ok(VerifySettings {
            source,
            policy: Policy {
                issuers: self.issuers.clone(),
                audiences: self.audiences.clone(),
                leeway: self.leeway,
            },
            refresh_interval: self.refresh_interval,
            min_refresh_interval: self.min_refresh_interval,
            fetch_timeout: self.fetch_timeout,
        })
    }
}

/// A JWKS URL: `https://`, or `http://` to a loopback host (where no one
/// can tamper with the keys in transit).
fn jwks_url(key: &str, v: &str) -> Result<http::Uri, ConfigError> {
    let uri: http::Uri = v
        .parse()
        .map_err(|_| ConfigError::new(key, format!("not a URL: {v:?}")))?;
    let host = uri
        .host()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| ConfigError::new(key, "needs a host"))?;
    match uri.scheme_str() {
        Some("https") => Ok(uri),
        Some("http") => {
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            let loopback = bare.eq_ignore_ascii_case("localhost")
                || bare
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if loopback {
                Ok(uri)
            } else {
                Err(ConfigError::new(
                    key,
                    "must be https:// (http:// only to a loopback host): keys fetched in the clear can be replaced in transit",
                ))
            }
        }
        _ => Err(ConfigError::new(key, "scheme must be https")),
    }
}

/// `[tokens.identity_headers]`
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdentityHeadersConfig {
    /// Header carrying the subject.
    pub sub: Option<String>,
    /// Header carrying the organisation.
    pub org: Option<String>,
    /// Header carrying the provider.
    pub provider: Option<String>,
    /// Header carrying the issue time (unix seconds).
    pub iat: Option<String>,
}

/// What a stale instance does once `store.max_staleness` is exceeded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StaleAction {
    /// Answer 503 to every request carrying a credential.
    #[default]
    Reject,
    /// Ask the store about every credential, not just bloom hits.
    Lookup,
}

/// `[store]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// `memory`, `redis://host:port/db`, `rediss://...`, or
    /// `redis+sentinel://host:port,host:port/master-name`.
    pub url: String,
    /// Journal file (embedded store), or outbox while Redis is away.
    pub journal: PathBuf,
    /// Revoked tokens the bloom filter is sized for (it grows on rebuild).
    pub bloom_capacity: usize,
    /// Bloom filter false-positive rate.
    pub bloom_fp_rate: f64,
    /// How often expired rules are dropped, the bloom rebuilt and the journal compacted.
    #[serde(with = "humantime_serde")]
    pub maintenance_interval: Duration,
    /// Redis key prefix, so several deployments can share one Redis.
    pub key_prefix: String,
    /// Approximate cap of the Redis event stream (`XADD MAXLEN ~`).
    pub stream_maxlen: usize,
    /// After this long without a sync, apply `stale_action` (off when unset).
    #[serde(with = "humantime_serde")]
    pub max_staleness: Option<Duration>,
    /// What a stale instance does.
    pub stale_action: StaleAction,
    /// How long a confirmed Redis answer is cached locally.
    #[serde(with = "humantime_serde")]
    pub confirm_ttl: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: "memory".into(),
            journal: PathBuf::from("revgate.journal"),
            bloom_capacity: 1_000_000,
            bloom_fp_rate: 0.01,
            maintenance_interval: Duration::from_secs(300),
            key_prefix: "revgate".into(),
            stream_maxlen: 1_000_000,
            max_staleness: None,
            stale_action: StaleAction::Reject,
            confirm_ttl: Duration::from_secs(1),
        }
    }
}

/// `[revoke]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RevokeConfig {
    /// Mode of every dialect that does not set its own.
    pub mode: RevokeMode,
    /// Largest revoke-call body read; beyond it, 413.
    pub max_body_bytes: usize,
    /// Most scope rules one subject may have; a new scope revoke beyond it
    /// is refused (429 in the dialect's shape), nothing recorded.
    pub max_scopes_per_subject: usize,
    /// Per-client-IP rate limit on every revoke endpoint (both modes).
    pub rate_limit: RateLimitConfig,
    /// Nylas (`api_keys` checks the Bearer API key when set).
    pub nylas: DialectConfig,
    /// OneLogin (`clients` checks the client pair when set).
    pub onelogin: DialectConfig,
    /// LangSmith.
    pub langsmith: DialectConfig,
    /// Codegen.
    pub codegen: DialectConfig,
    /// RFC 7009.
    pub rfc7009: DialectConfig,
}

impl Default for RevokeConfig {
    fn default() -> Self {
        RevokeConfig {
            mode: RevokeMode::Forward,
            max_body_bytes: 64 * 1024,
            max_scopes_per_subject: 64,
            rate_limit: RateLimitConfig::default(),
            nylas: DialectConfig::default(),
            onelogin: DialectConfig::default(),
            langsmith: DialectConfig::default(),
            codegen: DialectConfig::default(),
            rfc7009: DialectConfig::default(),
        }
    }
}

/// `[revoke.rate_limit]`, `[admin.rate_limit]`: a token bucket per client
/// address (see `ratelimit.rs`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// On by default.
    pub enabled: bool,
    /// Sustained calls per second per client (may be fractional).
    pub per_second: f64,
    /// Calls a client may make at once after being idle.
    pub burst: u32,
    /// Most clients tracked at once; beyond, newcomers share one bucket.
    pub max_clients: usize,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            enabled: true,
            per_second: 100.0,
            burst: 200,
            max_clients: 100_000,
        }
    }
}

impl RateLimitConfig {
    fn validate(&self, key: &str) -> Result<(), ConfigError> {
        if !self.per_second.is_finite() || self.per_second <= 0.0 || self.per_second > 1e9 {
            return Err(ConfigError::new(
                format!("{key}.per_second"),
                "must be a number above 0 and at most 1e9",
            ));
        }
        if self.burst == 0 || self.burst > 1_000_000 {
            return Err(ConfigError::new(
                format!("{key}.burst"),
                "must be between 1 and 1000000",
            ));
        }
        if self.max_clients == 0 || self.max_clients > 10_000_000 {
            return Err(ConfigError::new(
                format!("{key}.max_clients"),
                "must be between 1 and 10000000",
            ));
        }
        Ok(())
    }
}

/// `[revoke.<dialect>]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DialectConfig {
    /// On by default.
    pub enabled: bool,
    /// Path, default the vendor's documented one.
    pub path: Option<String>,
    /// Mode, default `revoke.mode`.
    pub mode: Option<RevokeMode>,
    /// Nylas only: accepted API keys.
    pub api_keys: Vec<String>,
    /// OneLogin only: accepted client pairs.
    pub clients: Vec<ClientPair>,
}

impl Default for DialectConfig {
    fn default() -> Self {
        DialectConfig {
            enabled: true,
            path: None,
            mode: None,
            api_keys: Vec::new(),
            clients: Vec::new(),
        }
    }
}

/// A OneLogin client pair.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientPair {
    /// client_id
    pub client_id: String,
    /// client_secret
    pub client_secret: String,
}

/// `[admin]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Admin listener address (loopback by default).
    pub listen: String,
    /// When set, the admin API (not `/healthz`, `/readyz`) requires
    /// `Authorization: Bearer <token>` (or `REVGATE_ADMIN_TOKEN`, e.g. from a
    /// Kubernetes Secret).
    pub token: Option<String>,
    /// Start with an admin listener off loopback and no token (anyone who
    /// reaches it can revoke and un-revoke). Off by default: such a
    /// configuration is refused.
    pub allow_unauthenticated: bool,
    /// Per-client-IP rate limit on the admin API (not `/healthz`, `/readyz`).
    pub rate_limit: RateLimitConfig,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: "127.0.0.1:9090".into(),
            token: None,
            allow_unauthenticated: false,
            rate_limit: RateLimitConfig::default(),
        }
    }
}

/// Log format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[log]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// Output format.
    pub format: LogFormat,
    /// `RUST_LOG`-style filter (the `RUST_LOG` variable wins when set).
    pub filter: String,
    /// One access-log line per request (target `revgate::access`).
    pub access_log: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            filter: "info".into(),
            access_log: true,
        }
    }
}

/// The command-line flags that override the file (the fixed contract).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct Overrides {
    /// Configuration file (TOML).
    #[arg(long, env = "REVGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Listen address, e.g. 127.0.0.1:8080.
    #[arg(long, env = "REVGATE_LISTEN")]
    pub listen: Option<String>,
    /// Default upstream URL.
    #[arg(long, env = "REVGATE_UPSTREAM")]
    pub upstream: Option<String>,
    /// Admin listen address.
    #[arg(long, env = "REVGATE_ADMIN_LISTEN")]
    pub admin_listen: Option<String>,
    /// `memory` or a Redis URL.
    #[arg(long, env = "REVGATE_STORE")]
    pub store: Option<String>,
    /// Journal path.
    #[arg(long, env = "REVGATE_JOURNAL")]
    pub journal: Option<PathBuf>,
    /// Mode of every revoke endpoint.
    #[arg(long, env = "REVGATE_REVOKE_MODE", value_parser = parse_mode)]
    pub revoke_mode: Option<RevokeMode>,
    /// Log format.
    #[arg(long, env = "REVGATE_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
}

fn parse_mode(s: &str) -> Result<RevokeMode, String> {
    match s {
        "forward" => Ok(RevokeMode::Forward),
        "terminate" => Ok(RevokeMode::Terminate),
        other => Err(format!("expected forward or terminate, got {other:?}")),
    }
}

impl Overrides {
    /// Loads the file named by `--config` (or defaults), then applies the flags.
    pub fn load(&self) -> Result<Config, ConfigError> {
        let mut config = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    ConfigError::new("--config", format!("cannot read {}: {e}", path.display()))
                })?;
                Config::from_toml(&text)?
            }
            None => Config::default(),
        };
        self.apply(&mut config);
        Ok(config)
    }

    /// Applies the flags over a loaded file.
    pub fn apply(&self, c: &mut Config) {
        if let Some(v) = &self.listen {
            c.server.listen = v.clone();
        }
        if let Some(v) = &self.upstream {
            c.upstream.url = Some(v.clone());
        }
        if let Some(v) = &self.admin_listen {
            c.admin.listen = v.clone();
        }
        if let Some(v) = &self.store {
            c.store.url = v.clone();
        }
        if let Some(v) = &self.journal {
            c.store.journal = v.clone();
        }
        if let Some(v) = self.revoke_mode {
            c.revoke.mode = v;
            for d in [
                &mut c.revoke.nylas,
                &mut c.revoke.onelogin,
                &mut c.revoke.langsmith,
                &mut c.revoke.codegen,
                &mut c.revoke.rfc7009,
            ] {
                d.mode = None;
            }
        }
        if let Some(v) = self.log_format {
            c.log.format = v;
        }
        if c.tokens.fingerprint_key.is_none() {
            if let Ok(k) = std::env::var("REVGATE_FINGERPRINT_KEY") {
                c.tokens.fingerprint_key = Some(k);
            }
        }
        if c.admin.token.is_none() {
            if let Ok(t) = std::env::var("REVGATE_ADMIN_TOKEN") {
                c.admin.token = Some(t);
            }
        }
    }
}

/// A parsed upstream URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamUrl {
    /// The full URI as given.
    pub uri: http::Uri,
    /// `http` or `https`.
    pub scheme: http::uri::Scheme,
    /// host:port.
    pub authority: http::uri::Authority,
    /// Path prefix to prepend to forwarded paths ("" when the URL has none).
    pub base_path: String,
}

/// One checked route.
#[derive(Clone, Debug)]
pub struct Route {
    /// Name for metrics and logs.
    pub name: String,
    /// Host to match (lower-case, no port).
    pub host: Option<String>,
    /// Path prefix to match.
    pub path_prefix: String,
    /// Where it goes.
    pub upstream: UpstreamUrl,
}

/// One enabled dialect, checked.
#[derive(Clone, Debug)]
pub struct DialectSetting {
    /// Which.
    pub kind: DialectKind,
    /// Its path.
    pub path: String,
    /// Its mode.
    pub mode: RevokeMode,
}

/// The checked configuration.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The file as loaded (for the parts used as-is).
    pub raw: Config,
    /// Client listener.
    pub listen: SocketAddr,
    /// Admin listener.
    pub admin_listen: SocketAddr,
    /// Routes, most specific first; the default route last.
    pub routes: Vec<Route>,
    /// Credential sources.
    pub credential_sources: CredentialSources,
    /// Attribute sources.
    pub attribute_sources: AttributeSources,
    /// Enabled dialects.
    pub dialects: Vec<DialectSetting>,
    /// Secrets the dialects check.
    pub dialect_secrets: DialectSecrets,
    /// JWT verification of revokers, when `[tokens.verify]` is set.
    pub verify: Option<crate::identity::VerifySettings>,
}

impl Config {
    /// Parses TOML; unknown keys are errors that name them.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let key = e
                .span()
                .map(|s| {
                    let line = text.as_bytes()[..s.start.min(text.len())]
                        .iter()
                        .filter(|b| **b == b'\n')
                        .count()
                        + 1;
                    format!("line {line}")
                })
                .unwrap_or_else(|| "config".into());
            ConfigError::new(key, e.message().to_string())
        })
    }

    /// Checks every key and builds the [`Settings`].
    pub fn validate(&self) -> Result<Settings, ConfigError> {
        let listen = parse_addr("server.listen", &self.server.listen)?;
        let admin_listen = parse_addr("admin.listen", &self.admin.listen)?;
        if self.server.body_idle_timeout.is_zero() {
            return Err(ConfigError::new(
                "server.body_idle_timeout",
                "must be more than 0",
            ));
        }
        if self.server.io_threads > 1024 {
            return Err(ConfigError::new(
                "server.io_threads",
                "must be at most 1024 (0 = one per CPU)",
            ));
        }
        if self.server.max_connections == 0 {
            return Err(ConfigError::new(
                "server.max_connections",
                "must be positive",
            ));
        }
        if self.server.h2_max_concurrent_streams == 0 {
            return Err(ConfigError::new(
                "server.h2_max_concurrent_streams",
                "must be positive",
            ));
        }
        for (key, d) in [
            (
                "server.h2_keepalive_interval",
                self.server.h2_keepalive_interval,
            ),
            (
                "server.h2_keepalive_timeout",
                self.server.h2_keepalive_timeout,
            ),
            (
                "server.upgrade_idle_timeout",
                self.server.upgrade_idle_timeout,
            ),
            // Capped so that no deadline computed from it can overflow.
            ("server.body_idle_timeout", self.server.body_idle_timeout),
        ] {
            if d.is_zero() || d > Duration::from_secs(24 * 3600) {
                return Err(ConfigError::new(key, "must be between 1ms and 24h"));
            }
        }
        if self.server.max_header_bytes < 8192 {
            return Err(ConfigError::new(
                "server.max_header_bytes",
                "must be at least 8192",
            ));
        }
        if let Some(tls) = &self.server.tls {
            for (key, path) in [("server.tls.cert", &tls.cert), ("server.tls.key", &tls.key)] {
                if !path.is_file() {
                    return Err(ConfigError::new(
                        key,
                        format!("no such file: {}", path.display()),
                    ));
                }
            }
        }
        if self.upstream.client_cert.is_some() != self.upstream.client_key.is_some() {
            return Err(ConfigError::new(
                "upstream.client_cert",
                "client_cert and client_key go together",
            ));
        }
        for (key, path) in [
            ("upstream.ca_file", &self.upstream.ca_file),
            ("upstream.client_cert", &self.upstream.client_cert),
            ("upstream.client_key", &self.upstream.client_key),
        ] {
            if let Some(p) = path {
                if !p.is_file() {
                    return Err(ConfigError::new(
                        key,
                        format!("no such file: {}", p.display()),
                    ));
                }
            }
        }
        if self.upstream.connect_timeout.is_zero() {
            return Err(ConfigError::new(
                "upstream.connect_timeout",
                "must be positive",
            ));
        }
        if self.upstream.response_header_timeout.is_zero() {
            return Err(ConfigError::new(
                "upstream.response_header_timeout",
                "must be positive",
            ));
        }

        let mut routes = Vec::new();
        for (i, r) in self.routes.iter().enumerate() {
            let key = format!("routes[{i}]");
            let upstream = parse_upstream(&format!("{key}.upstream"), &r.upstream)?;
            let path_prefix = match &r.path_prefix {
                Some(p) if !p.starts_with('/') => {
                    return Err(ConfigError::new(
                        format!("{key}.path_prefix"),
                        "must start with '/'",
                    ))
                }
                Some(p) => p.clone(),
                None => "/".into(),
            };
            let host = match &r.host {
                Some(h) if h.is_empty() || h.contains('/') || h.contains(' ') => {
                    return Err(ConfigError::new(
                        format!("{key}.host"),
                        "must be a host name",
                    ))
                }
                Some(h) => Some(h.to_ascii_lowercase()),
                None => None,
            };
            if host.is_none() && r.path_prefix.is_none() {
                return Err(ConfigError::new(
                    key,
                    "a route needs a host or a path_prefix (upstream.url is the default route)",
                ));
            }
            routes.push(Route {
                name: r
                    .name
                    .clone()
                    .unwrap_or_else(|| upstream.authority.to_string()),
                host,
                path_prefix,
                upstream,
            });
        }
        // Most specific first: a host match beats none, then the longest prefix.
        routes.sort_by(|a, b| {
            b.host
                .is_some()
                .cmp(&a.host.is_some())
                .then(b.path_prefix.len().cmp(&a.path_prefix.len()))
        });
        if let Some(url) = &self.upstream.url {
            let upstream = parse_upstream("upstream.url", url)?;
            routes.push(Route {
                name: "default".into(),
                host: None,
                path_prefix: "/".into(),
                upstream,
            });
        }
        if routes.is_empty() {
            return Err(ConfigError::new(
                "upstream.url",
                "required (or at least one [[routes]] entry): where do requests go?",
            ));
        }

        if let Some(k) = &self.tokens.fingerprint_key {
            crate::credentials::FingerprintKey::from_hex(k)
                .map_err(|e| ConfigError::new("tokens.fingerprint_key", e.to_string()))?;
        }
        if self.tokens.form_body_limit > 16 * 1024 * 1024 {
            return Err(ConfigError::new(
                "tokens.form_body_limit",
                "must be at most 16777216 bytes (it is held in memory while judged)",
            ));
        }
        if self.tokens.max_lifetime.is_zero() {
            return Err(ConfigError::new("tokens.max_lifetime", "must be positive"));
        }
        let mut api_key_headers = Vec::new();
        for (i, h) in self.tokens.api_key_headers.iter().enumerate() {
            let name = header_name(&format!("tokens.api_key_headers[{i}]"), h)?;
            if name == http::header::AUTHORIZATION {
                return Err(ConfigError::new(
                    format!("tokens.api_key_headers[{i}]"),
                    "Authorization is read as a Bearer header already",
                ));
            }
            api_key_headers.push(name);
        }
        let ih = &self.tokens.identity_headers;
        let opt_header =
            |key: &str, v: &Option<String>| -> Result<Option<http::HeaderName>, ConfigError> {
                v.as_deref().map(|h| header_name(key, h)).transpose()
            };
        let identity_headers = IdentityHeaders {
            sub: opt_header("tokens.identity_headers.sub", &ih.sub)?,
            org: opt_header("tokens.identity_headers.org", &ih.org)?,
            provider: opt_header("tokens.identity_headers.provider", &ih.provider)?,
            iat: opt_header("tokens.identity_headers.iat", &ih.iat)?,
        };
        for (key, v) in [
            ("tokens.claims.sub", &self.tokens.claims.sub),
            ("tokens.claims.org", &self.tokens.claims.org),
            ("tokens.claims.provider", &self.tokens.claims.provider),
            ("tokens.claims.iat", &self.tokens.claims.iat),
            ("tokens.claims.exp", &self.tokens.claims.exp),
        ] {
            if v.is_empty() {
                return Err(ConfigError::new(key, "must not be empty"));
            }
        }
        let verify = self
            .tokens
            .verify
            .as_ref()
            .map(VerifyConfig::validate)
            .transpose()?;

        let s = &self.store;
        let url_ok = s.url == "memory"
            || [
                "redis://",
                "rediss://",
                "redis+sentinel://",
                "rediss+sentinel://",
            ]
            .iter()
            .any(|p| s.url.starts_with(p) && s.url.len() > p.len());
        if !url_ok {
            return Err(ConfigError::new(
                "store.url",
                format!("expected memory, redis://host:port/db, rediss://... or redis+sentinel://host:port,.../master; got {:?}", s.url),
            ));
        }
        if s.url != "memory" && self.tokens.fingerprint_key.is_none() {
            return Err(ConfigError::new(
                "tokens.fingerprint_key",
                "required with a shared store: every instance must fingerprint tokens alike (or set REVGATE_FINGERPRINT_KEY)",
            ));
        }
        if s.journal.as_os_str().is_empty() {
            return Err(ConfigError::new("store.journal", "must be a file path"));
        }
        if s.bloom_capacity == 0 {
            return Err(ConfigError::new("store.bloom_capacity", "must be positive"));
        }
        if !(s.bloom_fp_rate > 0.0 && s.bloom_fp_rate < 0.5) {
            return Err(ConfigError::new(
                "store.bloom_fp_rate",
                "must be between 0 and 0.5",
            ));
        }
        if s.maintenance_interval.is_zero() {
            return Err(ConfigError::new(
                "store.maintenance_interval",
                "must be positive",
            ));
        }
        if s.key_prefix.is_empty() || s.key_prefix.contains(['{', '}', ' ']) {
            return Err(ConfigError::new(
                "store.key_prefix",
                "must be non-empty, without braces or spaces",
            ));
        }
        if s.stream_maxlen == 0 {
            return Err(ConfigError::new("store.stream_maxlen", "must be positive"));
        }

        let r = &self.revoke;
        if r.max_body_bytes == 0 || r.max_body_bytes > 16 * 1024 * 1024 {
            return Err(ConfigError::new(
                "revoke.max_body_bytes",
                "must be between 1 and 16 MiB",
            ));
        }
        if r.max_scopes_per_subject == 0 || r.max_scopes_per_subject > 100_000 {
            return Err(ConfigError::new(
                "revoke.max_scopes_per_subject",
                "must be between 1 and 100000",
            ));
        }
        r.rate_limit.validate("revoke.rate_limit")?;
        self.admin.rate_limit.validate("admin.rate_limit")?;
        let mut dialects = Vec::new();
        for kind in DialectKind::ALL {
            let d = self.dialect(kind);
            let key = format!("revoke.{}", kind.name());
            if !d.api_keys.is_empty() && kind != DialectKind::Nylas {
                return Err(ConfigError::new(
                    format!("{key}.api_keys"),
                    "only Nylas checks API keys",
                ));
            }
            if !d.clients.is_empty() && kind != DialectKind::OneLogin {
                return Err(ConfigError::new(
                    format!("{key}.clients"),
                    "only OneLogin checks client pairs",
                ));
            }
            if !d.enabled {
                continue;
            }
            let path = d
                .path
                .clone()
                .unwrap_or_else(|| kind.default_path().to_string());
            if !path.starts_with('/') || path.contains('?') {
                return Err(ConfigError::new(
                    format!("{key}.path"),
                    "must start with '/' and have no query",
                ));
            }
            if let Some(other) = dialects.iter().find(|o: &&DialectSetting| o.path == path) {
                return Err(ConfigError::new(
                    format!("{key}.path"),
                    format!("{path} is already the {} endpoint", other.kind.name()),
                ));
            }
            dialects.push(DialectSetting {
                kind,
                path,
                mode: d.mode.unwrap_or(r.mode),
            });
        }
        for (i, c) in r.onelogin.clients.iter().enumerate() {
            if c.client_id.is_empty() || c.client_secret.is_empty() {
                return Err(ConfigError::new(
                    format!("revoke.onelogin.clients[{i}]"),
                    "client_id and client_secret must be non-empty",
                ));
            }
        }
        if r.nylas.api_keys.iter().any(|k| k.is_empty()) {
            return Err(ConfigError::new(
                "revoke.nylas.api_keys",
                "keys must be non-empty",
            ));
        }
        if let Some(t) = &self.admin.token {
            if t.len() < 16 {
                return Err(ConfigError::new(
                    "admin.token",
                    "must be at least 16 characters",
                ));
            }
        } else if !admin_listen.ip().is_loopback() && !self.admin.allow_unauthenticated {
            return Err(ConfigError::new(
                "admin.token",
                format!(
                    "required when admin.listen ({admin_listen}) is not a loopback address \
                     (or REVGATE_ADMIN_TOKEN; admin.allow_unauthenticated = true to run without one)"
                ),
            ));
        }
        if !self.log.filter.is_empty() {
            tracing_subscriber::EnvFilter::try_new(&self.log.filter)
                .map_err(|e| ConfigError::new("log.filter", e.to_string()))?;
        }

        Ok(Settings {
            raw: self.clone(),
            listen,
            admin_listen,
            routes,
            credential_sources: CredentialSources {
                query_param: self.tokens.query_param,
                api_key_headers,
            },
            attribute_sources: AttributeSources {
                claims: self.tokens.claims.clone(),
                identity_headers,
            },
            dialects,
            dialect_secrets: DialectSecrets {
                nylas_api_keys: r.nylas.api_keys.clone(),
                onelogin_clients: r
                    .onelogin
                    .clients
                    .iter()
                    .map(|c| (c.client_id.clone(), c.client_secret.clone()))
                    .collect(),
            },
            verify,
        })
    }

    /// The settings of one dialect.
    pub fn dialect(&self, kind: DialectKind) -> &DialectConfig {
        match kind {
            DialectKind::Nylas => &self.revoke.nylas,
            DialectKind::OneLogin => &self.revoke.onelogin,
            DialectKind::LangSmith => &self.revoke.langsmith,
            DialectKind::Codegen => &self.revoke.codegen,
            DialectKind::Rfc7009 => &self.revoke.rfc7009,
        }
    }
}

fn parse_addr(key: &str, v: &str) -> Result<SocketAddr, ConfigError> {
    v.parse()
        .map_err(|_| ConfigError::new(key, format!("expected ip:port, got {v:?}")))
}

fn header_name(key: &str, v: &str) -> Result<http::HeaderName, ConfigError> {
    http::HeaderName::from_bytes(v.as_bytes())
        .map_err(|_| ConfigError::new(key, format!("not a valid header name: {v:?}")))
}

/// Parses an upstream URL: `http://` or `https://`, a host, no query.
pub fn parse_upstream(key: &str, v: &str) -> Result<UpstreamUrl, ConfigError> {
    let uri: http::Uri = v
        .parse()
        .map_err(|_| ConfigError::new(key, format!("not a URL: {v:?}")))?;
    let scheme = uri
        .scheme()
        .cloned()
        .ok_or_else(|| ConfigError::new(key, "needs a scheme: http:// or https://"))?;
    if scheme != http::uri::Scheme::HTTP && scheme != http::uri::Scheme::HTTPS {
        return Err(ConfigError::new(key, "scheme must be http or https"));
    }
    let authority = uri
        .authority()
        .cloned()
        .ok_or_else(|| ConfigError::new(key, "needs a host"))?;
    if uri.query().is_some() {
        return Err(ConfigError::new(key, "must not have a query"));
    }
    let base_path = uri.path().trim_end_matches('/').to_string();
    Ok(UpstreamUrl {
        uri,
        scheme,
        authority,
        base_path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(toml: &str) -> Result<Settings, ConfigError> {
        Config::from_toml(toml)?.validate()
    }

    #[test]
    fn defaults_with_an_upstream_are_valid() {
        let s = check("[upstream]\nurl = \"http://127.0.0.1:3000\"\n").unwrap();
        assert_eq!(s.routes.len(), 1);
        assert_eq!(s.dialects.len(), 5);
        assert!(s.dialects.iter().all(|d| d.mode == RevokeMode::Forward));
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            ("", "upstream.url"),
            ("[upstream]\nurl = \"ftp://x\"", "upstream.url"),
            (
                "[upstream]\nurl = \"http://u\"\n[server]\nlisten = \"nope\"",
                "server.listen",
            ),
            (
                "[upstream]\nurl = \"http://u\"\n[store]\nurl = \"mongo://x\"",
                "store.url",
            ),
            (
                "[upstream]\nurl = \"http://u\"\n[store]\nbloom_fp_rate = 0.9",
                "store.bloom_fp_rate",
            ),
            (
                "[upstream]\nurl = \"http://u\"\n[tokens]\nfingerprint_key = \"abc\"",
                "tokens.fingerprint_key",
            ),
            (
                "[upstream]\nurl = \"http://u\"\n[tokens]\napi_key_headers = [\"bad header\"]",
                "tokens.api_key_headers[0]",
            ),
            (
                "[[routes]]\nupstream = \"http://u\"\npath_prefix = \"v1\"",
                "routes[0].path_prefix",
            ),
            ("[[routes]]\nupstream = \"http://u\"", "routes[0]"),
            (
                "[upstream]\nurl = \"http://u\"\n[revoke.codegen]\npath = \"/oauth/revoke\"",
                "revoke.rfc7009.path",
            ),
            (
                "[upstream]\nurl = \"http://u\"\n[revoke.codegen]\napi_keys = [\"k\"]",
                "revoke.codegen.api_keys",
            ),
            (
                "[upstream]\nurl = \"http://u\"\n[revoke]\nmax_scopes_per_subject = 0",
                "revoke.max_scopes_per_subject",
            ),
            (
                "[upstream]\nurl = \"http://u\"\n[revoke.rate_limit]\nper_second = 0.0",
                "revoke.rate_limit.per_second",
            ),
            (
                "[upstream]\nurl = \"http://u\"\n[revoke.rate_limit]\nburst = 0",
                "revoke.rate_limit.burst",
            ),
            (
                "[upstream]\nurl = \"http://u\"\n[admin.rate_limit]\nmax_clients = 0",
                "admin.rate_limit.max_clients",
            ),
            (
                "[upstream]\nurl = \"http://u\"\n[admin.rate_limit]\nper_second = nan",
                "admin.rate_limit.per_second",
            ),
            (
                "[upstream]\nurl = \"http://u\"\n[server]\nmax_header_bytes = 10",
                "server.max_header_bytes",
            ),
            (
                "[upstream]\nurl = \"http://u\"\n[server]\nio_threads = 5000",
                "server.io_threads",
            ),
            (
                "[upstream]\nurl = \"http://u\"\n[server]\nbody_idle_timeout = \"0s\"",
                "server.body_idle_timeout",
            ),
            (
                "[upstream]\nurl = \"http://u\"\n[tokens.verify]\nissuers = [\"i\"]\naudiences = [\"a\"]",
                "tokens.verify.jwks_url",
            ),
            (
                "[upstream]\nurl = \"http://u\"\n[tokens.verify]\njwks_url = \"http://10.0.0.1/k\"\nissuers = [\"i\"]\naudiences = [\"a\"]",
                "tokens.verify.jwks_url",
            ),
            (
                "[upstream]\nurl = \"http://u\"\n[tokens.verify]\njwks_url = \"https://i/k\"\naudiences = [\"a\"]",
                "tokens.verify.issuers",
            ),
            (
                "[upstream]\nurl = \"http://u\"\n[tokens.verify]\njwks_url = \"https://i/k\"\nissuers = [\"i\"]",
                "tokens.verify.audiences",
            ),
            (
                "[upstream]\nurl = \"http://u\"\n[tokens.verify]\njwks_file = \"/nonexistent/jwks.json\"\nissuers = [\"i\"]\naudiences = [\"a\"]",
                "tokens.verify.jwks_file",
            ),
        ];
        for (toml, key) in cases {
            let err = check(toml).unwrap_err();
            assert_eq!(err.key, key, "{toml}: {err}");
        }
    }

    #[test]
    fn jwks_urls_are_https_or_loopback() {
        for ok in [
            "https://idp.example/jwks",
            "http://127.0.0.1:8080/jwks",
            "http://[::1]/jwks",
            "http://localhost/jwks",
        ] {
            assert!(jwks_url("k", ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://idp.example/jwks",
            "http://10.0.0.1/jwks",
            "ftp://idp.example/jwks",
            "/jwks",
            "idp.example/jwks",
            "https:///jwks",
        ] {
            assert_eq!(jwks_url("k", bad).unwrap_err().key, "k", "{bad}");
        }
        let s = check(
            "[upstream]\nurl = \"http://u\"\n[tokens.verify]\njwks_url = \"https://i/k\"\nissuers = [\"i\"]\naudiences = [\"a\"]",
        )
        .unwrap();
        let v = s.verify.unwrap();
        assert_eq!(v.policy.leeway, Duration::from_secs(60));
        assert!(v.min_refresh_interval <= v.refresh_interval);
        assert!(check("[upstream]\nurl = \"http://u\"")
            .unwrap()
            .verify
            .is_none());
    }

    #[test]
    fn unknown_keys_and_bad_types_are_refused_with_a_line() {
        let err = check("[upstream]\nurl = \"http://u\"\nbogus = 1\n").unwrap_err();
        assert_eq!(err.key, "line 3");
        assert!(err.message.contains("bogus"), "{err}");
        let err = check("[upstream]\nconnect_timeout = \"soon\"\n").unwrap_err();
        assert!(err.key.starts_with("line"), "{err}");
    }

    #[test]
    fn routes_most_specific_first() {
        let s = check(
            "[upstream]\nurl = \"http://d\"\n\
             [[routes]]\npath_prefix = \"/a\"\nupstream = \"http://a\"\n\
             [[routes]]\npath_prefix = \"/a/b\"\nupstream = \"http://ab\"\n\
             [[routes]]\nhost = \"API.example\"\nupstream = \"http://h\"\n",
        )
        .unwrap();
        let order: Vec<_> = s
            .routes
            .iter()
            .map(|r| r.upstream.authority.to_string())
            .collect();
        assert_eq!(order, ["h", "ab", "a", "d"]);
        assert_eq!(s.routes[0].host.as_deref(), Some("api.example"));
    }

    #[test]
    fn shipped_configs_are_valid() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/config");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "toml") {
                continue;
            }
            let mut c = Config::from_toml(&std::fs::read_to_string(&path).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            if c.upstream.url.is_none() && c.routes.is_empty() {
                c.upstream.url = Some("http://127.0.0.1:3000".into());
            }
            if c.store.url != "memory" {
                c.tokens.fingerprint_key = Some("ab".repeat(32));
            }
            // As deployed: an admin listener off loopback gets its token
            // from REVGATE_ADMIN_TOKEN (the config says so).
            if c.admin.token.is_none() && !c.admin.listen.starts_with("127.") {
                c.admin.token = Some("placeholder-admin-token".into());
            }
            c.validate()
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            seen += 1;
        }
        assert!(seen >= 3);
    }

    #[test]
    fn a_shared_store_needs_a_fingerprint_key() {
        let err =
            check("[upstream]\nurl = \"http://u\"\n[store]\nurl = \"redis://127.0.0.1:6379\"")
                .unwrap_err();
        assert_eq!(err.key, "tokens.fingerprint_key");
    }

    #[test]
    fn flags_override_the_file() {
        let mut c = Config::from_toml(
            "[upstream]\nurl = \"http://file\"\n[revoke.nylas]\nmode = \"forward\"",
        )
        .unwrap();
        let o = Overrides {
            upstream: Some("http://flag".into()),
            revoke_mode: Some(RevokeMode::Terminate),
            ..Default::default()
        };
        o.apply(&mut c);
        let s = c.validate().unwrap();
        assert_eq!(s.routes[0].upstream.authority.as_str(), "flag");
        assert!(s.dialects.iter().all(|d| d.mode == RevokeMode::Terminate));
    }
}
