//! The configuration file's shape: one serde type per TOML section, with
//! the defaults a key takes when it is absent, and [`Config::from_toml`],
//! which refuses unknown keys and names the line of any parse error.
//!
//! Nothing here is checked beyond its type: [`Config::validate`]
//! (`validate.rs`) does that and builds the [`Settings`](super::Settings).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;
use crate::credentials::ClaimNames;
use crate::dialect::{DialectKind, RevokeMode};

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
    /// Who holds a credential: principals learned from token issuance.
    pub identity: IdentityConfig,
    /// Request ids and OpenTelemetry traces (`otel.rs`).
    pub tracing: TracingConfig,
    /// Token families (`crate::store::family`): reuse detection.
    pub families: FamiliesConfig,
    /// Revocations pushed (or polled) from identity providers (`feeds/`).
    pub feeds: FeedsConfig,
}

/// `[families]`: what token endpoints proxied through revgate enforce of
/// refresh-token rotation (`crate::proxy::issuance`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FamiliesConfig {
    /// A refresh token presented again after it was exchanged for a new
    /// refresh token revokes its whole family (RFC 9700 §4.14.2), answered
    /// `invalid_grant` without reaching the token endpoint.
    pub reuse_detection: bool,
    /// How long after the exchange a superseded refresh token may still be
    /// presented without tripping reuse detection (clients that retry a
    /// refresh whose answer they lost); forwarded to the token endpoint.
    #[serde(with = "humantime_serde")]
    pub reuse_grace: Duration,
}

impl Default for FamiliesConfig {
    fn default() -> Self {
        FamiliesConfig {
            reuse_detection: true,
            reuse_grace: Duration::ZERO,
        }
    }
}

/// `[identity]`: where credential bindings (`crate::store::principal`)
/// come from besides the admin API, and where a credential's attributes
/// come from beyond its own claims (introspection).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdentityConfig {
    /// Bind the tokens that token endpoints proxied through revgate issue
    /// (`POST /oauth/token`, Nylas `POST /v3/connect/token`, OneLogin
    /// `POST /auth/oauth2/v2/token`, and `issuance`).
    pub learn_from_issuance: bool,
    /// More token endpoints.
    pub issuance: Vec<IssuanceConfig>,
    /// RFC 7662 token introspection (`[identity.introspection]`); off when unset.
    pub introspection: Option<IntrospectionConfig>,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        IdentityConfig {
            learn_from_issuance: true,
            issuance: Vec::new(),
            introspection: None,
        }
    }
}

/// `[[identity.issuance]]`: one token endpoint whose answers bind the
/// tokens they issue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuanceConfig {
    /// The endpoint's path, as clients send it.
    pub path: String,
    /// Its method.
    #[serde(default = "post")]
    pub method: String,
    /// Which fields of the JSON answer name the subject, org and provider
    /// (defaults: `sub` then `user_id` then `account_id`; `org_id`;
    /// `provider`), read when the answer's `id_token` does not say.
    #[serde(default)]
    pub fields: IssuanceFields,
    /// A provider every token of this endpoint has.
    #[serde(default)]
    pub provider: Option<String>,
    /// An org every token of this endpoint has.
    #[serde(default)]
    pub org: Option<String>,
}

fn post() -> String {
    "POST".into()
}

/// `[identity.issuance.fields]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IssuanceFields {
    /// The subject's field.
    pub sub: Option<String>,
    /// The org's field.
    pub org: Option<String>,
    /// The provider's field.
    pub provider: Option<String>,
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
    /// runtime, listening socket and upstream pools (connections are kept
    /// within two of each other across them); 0 = one per CPU.
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
    /// PEM certificate chain: the default, for a client that sends no SNI
    /// name or one no `certificates` entry lists.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// `[[server.tls.certificates]]`: more certificates on the same
    /// listener, each chosen when the client's SNI name is one of its
    /// `names` (`api.example.com`, or `*.example.com` for one label).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<SniCertificateConfig>,
}

/// `[[server.tls.certificates]]`
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SniCertificateConfig {
    /// The SNI names this certificate answers: host names, or `*.domain`.
    pub names: Vec<String>,
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

/// `[identity.introspection]`: an RFC 7662 endpoint asked for the
/// attributes of credentials whose own claims name no subject (see
/// `identity::introspection`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IntrospectionConfig {
    /// The introspection endpoint: `https://`, or `http://` to a loopback
    /// host only (raw tokens and the client secret travel in the request).
    pub url: String,
    /// HTTP Basic client id (RFC 7662 §2.1); set with `client_secret`.
    pub client_id: Option<String>,
    /// HTTP Basic client secret.
    pub client_secret: Option<String>,
    /// The bound on one call (connect, request, response together).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// How long an `active: true` answer is kept (never past its `exp`).
    #[serde(with = "humantime_serde")]
    pub cache_ttl: Duration,
    /// How long an `active: false` answer is kept.
    #[serde(with = "humantime_serde")]
    pub negative_ttl: Duration,
    /// Most answers kept; past it the least likely to be used again are
    /// dropped (and asked for again when next seen).
    pub max_entries: u64,
    /// What a request whose credential could not be introspected gets.
    pub on_error: IntrospectionOnError,
    /// Names of the response's members; each unset one is the
    /// `[tokens.claims]` name.
    pub fields: IntrospectionFields,
}

impl Default for IntrospectionConfig {
    fn default() -> Self {
        IntrospectionConfig {
            url: String::new(),
            client_id: None,
            client_secret: None,
            timeout: Duration::from_secs(2),
            cache_ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_secs(10),
            max_entries: 100_000,
            on_error: IntrospectionOnError::Reject,
            fields: IntrospectionFields::default(),
        }
    }
}

/// `identity.introspection.on_error`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IntrospectionOnError {
    /// 503: an unknown identity is never taken as one no rule covers.
    #[default]
    Reject,
    /// Judge the credential as one with no attributes (scope rules cannot
    /// match it).
    Pass,
}

/// `[identity.introspection.fields]`: the response members that carry each
/// attribute; unset ones are the `[tokens.claims]` names.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IntrospectionFields {
    /// Subject member.
    pub sub: Option<String>,
    /// Organisation member.
    pub org: Option<String>,
    /// Provider member.
    pub provider: Option<String>,
    /// Issued-at member.
    pub iat: Option<String>,
    /// Expiry member.
    pub exp: Option<String>,
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
    /// `redis+sentinel://host:port,host:port/master-name`, or
    /// `redis+cluster://host:port,host:port`.
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
    /// `eventual` (default) or `confirmed`: whether a revoke's success
    /// answer waits until every live instance has applied it (see
    /// `docs/consistency.md`).
    pub consistency: Consistency,
    /// Confirmed mode: how long an instance's lease in Redis lasts; the
    /// bound on a confirmed revoke's wait for a paused or cut-off instance.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// Confirmed mode: how long a revoke waits for every live instance
    /// before it answers the dialect's 503 (the revocation stays recorded).
    #[serde(with = "humantime_serde")]
    pub confirm_timeout: Duration,
    /// `[store.redis]`: Redis-only durability settings.
    pub redis: RedisDurability,
}

/// `store.consistency`: what a revoke's success answer promises.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    /// Answered once recorded; other instances learn it within milliseconds.
    #[default]
    Eventual,
    /// Answered once every instance with a live lease has applied it (or
    /// has fenced itself).
    Confirmed,
}

/// `[store.redis]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisDurability {
    /// Replicas that must acknowledge a revocation (`WAIT n`) before it is
    /// acknowledged; 0 (default) sends no `WAIT`.
    pub min_replicas_acked: u32,
    /// How long `WAIT` (and `WAITAOF`) may block.
    #[serde(with = "humantime_serde")]
    pub wait_timeout: Duration,
    /// Also `WAITAOF 1 <min_replicas_acked>` (the write is in the AOF of the
    /// primary and of that many replicas); used only on Redis >= 7.2.
    pub wait_aof: bool,
}

impl Default for RedisDurability {
    fn default() -> Self {
        RedisDurability {
            min_replicas_acked: 0,
            wait_timeout: Duration::from_millis(500),
            wait_aof: false,
        }
    }
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
            consistency: Consistency::Eventual,
            lease: Duration::from_secs(2),
            confirm_timeout: Duration::from_secs(5),
            redis: RedisDurability::default(),
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
    /// How much of a revoked token's family goes with it (Nylas, OneLogin,
    /// RFC 7009): `token`, `pair` or `grant`. Default: Nylas `grant`,
    /// OneLogin `pair`, RFC 7009 `grant` for a refresh token and `token`
    /// for an access token (by `token_type_hint`, else what revgate knows
    /// of the token).
    pub family: Option<crate::store::family::Reach>,
}

impl Default for DialectConfig {
    fn default() -> Self {
        DialectConfig {
            enabled: true,
            path: None,
            mode: None,
            api_keys: Vec::new(),
            clients: Vec::new(),
            family: None,
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

/// Access-log line format (`log.access_log_format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AccessLogFormat {
    /// `key=value` fields after a timestamp, level and target (the text
    /// log's line).
    Text,
    /// One JSON object per line (the JSON log's line).
    Json,
    /// nginx's `combined` format.
    Combined,
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
    /// The access log's line format; unset: `text` or `json`, as `format`.
    pub access_log_format: Option<AccessLogFormat>,
    /// File the access log is appended to (reopened on SIGUSR1); unset:
    /// stderr.
    pub access_log_path: Option<PathBuf>,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            filter: "info".into(),
            access_log: true,
            access_log_format: None,
            access_log_path: None,
        }
    }
}

/// `[tracing]` (see `otel.rs`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TracingConfig {
    /// Keep the client's `x-request-id` (or make one), send it upstream,
    /// log it.
    pub request_id: bool,
    /// OTLP/HTTP traces endpoint (`http://host:4318/v1/traces`); empty:
    /// no traces.
    pub otlp_endpoint: String,
    /// `service.name` of the spans.
    pub service_name: String,
    /// Fraction of the traces revgate starts that are sampled (a caller's
    /// `traceparent` decides for its own).
    pub sample_ratio: f64,
    /// How often batched spans are sent.
    #[serde(with = "humantime_serde")]
    pub export_interval: Duration,
    /// How long one export may take.
    #[serde(with = "humantime_serde")]
    pub export_timeout: Duration,
}

impl Default for TracingConfig {
    fn default() -> Self {
        TracingConfig {
            request_id: true,
            otlp_endpoint: String::new(),
            service_name: "revgate".into(),
            sample_ratio: 1.0,
            export_interval: Duration::from_secs(5),
            export_timeout: Duration::from_secs(10),
        }
    }
}

impl Config {
    /// Parses TOML; every error (unknown key, wrong type, bad duration)
    /// names its dotted key. Only the first error: [`Config::from_toml_all`]
    /// gathers them all.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_all(text).map_err(|mut errors| errors.swap_remove(0))
    }

    /// Parses TOML and reports every key that does not fit, not just the
    /// first. Never an empty `Err`.
    pub fn from_toml_all(text: &str) -> Result<Config, Vec<ConfigError>> {
        match Config::from_toml_salvaged(text) {
            (Some(config), errors) if errors.is_empty() => Ok(config),
            (_, errors) => Err(errors),
        }
    }

    /// Parses TOML, dropping each key that does not fit (its default stands
    /// in) and parsing the rest again, so that one pass lists every such
    /// key: the errors, and the config made of what did fit (for the
    /// section checks to look at too). A syntax error stops at once, names
    /// its line, and salvages nothing.
    pub fn from_toml_salvaged(text: &str) -> (Option<Config>, Vec<ConfigError>) {
        let mut table: toml::Table = match toml::from_str(text) {
            Ok(t) => t,
            Err(e) => {
                let line = e
                    .span()
                    .map(|s| {
                        let upto = &text.as_bytes()[..s.start.min(text.len())];
                        upto.iter().filter(|b| **b == b'\n').count() + 1
                    })
                    .map_or_else(|| "config".to_string(), |l| format!("line {l}"));
                return (
                    None,
                    vec![ConfigError::new(line, e.message().trim().to_string())],
                );
            }
        };
        let mut errors = Vec::new();
        // Bounded: each round drops one key, and a file has finitely many;
        // the cap only guards against a key that cannot be dropped.
        for _ in 0..64 {
            match serde_path_to_error::deserialize::<_, Config>(toml::Value::Table(table.clone())) {
                Ok(config) => return (Some(config), errors),
                Err(e) => {
                    let key = dotted(e.path());
                    let message = e.inner().message().trim().to_string();
                    let dropped = drop_key(&mut table, e.path(), &message);
                    errors.push(ConfigError::new(
                        if key.is_empty() { "config".into() } else { key },
                        message,
                    ));
                    if !dropped {
                        return (None, errors);
                    }
                }
            }
        }
        (None, errors)
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

/// The dotted form of a serde path: `server.max_header_bytes`, `routes[1].upstream`.
fn dotted(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for seg in path.iter() {
        match seg {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Unknown => {}
        }
    }
    out
}

/// Removes what `path` names from `table` so that the next parse gets past
/// it; an unknown key is named by the message (serde's "unknown field
/// `x`"), not the path. False when nothing could be removed.
fn drop_key(table: &mut toml::Table, path: &serde_path_to_error::Path, message: &str) -> bool {
    use serde_path_to_error::Segment;
    let mut segs: Vec<&Segment> = path.iter().collect();
    let unknown = message
        .strip_prefix("unknown field `")
        .and_then(|m| m.split('`').next());
    let mut owned_last = None;
    if let Some(field) = unknown {
        if !matches!(segs.last(), Some(Segment::Map { key }) if key == field) {
            owned_last = Some(field.to_string());
        }
    }
    let last_key = match &owned_last {
        Some(k) => k.clone(),
        None => match segs.pop() {
            Some(Segment::Map { key }) => key.clone(),
            Some(Segment::Seq { index }) => {
                return parent(table, &segs).is_some_and(|v| match v {
                    toml::Value::Array(a) if *index < a.len() => {
                        a.remove(*index);
                        true
                    }
                    _ => false,
                })
            }
            _ => return false,
        },
    };
    match parent(table, &segs) {
        Some(toml::Value::Table(t)) => t.remove(&last_key).is_some(),
        None if segs.is_empty() => table.remove(&last_key).is_some(),
        _ => false,
    }
}

/// The value `segs` leads to (`None` for the root or a missing path).
fn parent<'a>(
    table: &'a mut toml::Table,
    segs: &[&serde_path_to_error::Segment],
) -> Option<&'a mut toml::Value> {
    use serde_path_to_error::Segment;
    let (first, rest) = segs.split_first()?;
    let Segment::Map { key } = first else {
        return None;
    };
    let mut v = table.get_mut(key.as_str())?;
    for seg in rest {
        v = match (seg, v) {
            (Segment::Map { key }, toml::Value::Table(t)) => t.get_mut(key.as_str())?,
            (Segment::Seq { index }, toml::Value::Array(a)) => a.get_mut(*index)?,
            _ => return None,
        };
    }
    Some(v)
}

/// `[feeds]`: revocations identity providers announce (`crate::feeds`):
/// OIDC Back-Channel Logout and a Shared Signals (SSF) receiver.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FeedsConfig {
    /// `[feeds.backchannel_logout]`.
    pub backchannel_logout: BackchannelLogoutConfig,
    /// `[feeds.ssf]`.
    pub ssf: SsfConfig,
    /// Most `jti`s remembered for replay detection on this instance (the
    /// soonest-expiring is forgotten first when full; see `feeds/replay.rs`).
    pub replay_capacity: usize,
}

impl Default for FeedsConfig {
    fn default() -> Self {
        FeedsConfig {
            backchannel_logout: BackchannelLogoutConfig::default(),
            ssf: SsfConfig::default(),
            replay_capacity: 100_000,
        }
    }
}

/// What every feed shares: whose tokens it takes and where their keys are.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FeedSourceConfig {
    /// Off by default.
    pub enabled: bool,
    /// The endpoint's path on the client listener.
    pub path: Option<String>,
    /// The provider's `iss`.
    pub issuer: Option<String>,
    /// The `aud` its tokens must name (revgate's client id, or the SSF
    /// stream's audience).
    pub audience: Option<String>,
    /// The provider's JWKS: `https://`, or `http://` to a loopback host.
    pub jwks_url: Option<String>,
    /// A JWKS file, read at start and on SIGHUP.
    pub jwks_file: Option<PathBuf>,
    /// Clock tolerance for `iat`, `exp`, `nbf`.
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    /// How often `jwks_url` is refetched (an unknown `kid` refetches too).
    #[serde(with = "humantime_serde")]
    pub refresh_interval: Duration,
    /// The least time between two fetches of `jwks_url`.
    #[serde(with = "humantime_serde")]
    pub min_refresh_interval: Duration,
    /// The bound on one fetch of `jwks_url`.
    #[serde(with = "humantime_serde")]
    pub fetch_timeout: Duration,
}

impl Default for FeedSourceConfig {
    fn default() -> Self {
        FeedSourceConfig {
            enabled: false,
            path: None,
            issuer: None,
            audience: None,
            jwks_url: None,
            jwks_file: None,
            leeway: Duration::from_secs(60),
            refresh_interval: Duration::from_secs(300),
            min_refresh_interval: Duration::from_secs(30),
            fetch_timeout: Duration::from_secs(5),
        }
    }
}

/// `[feeds.backchannel_logout]`: OIDC Back-Channel Logout 1.0 (path
/// default `/backchannel-logout`).
pub type BackchannelLogoutConfig = FeedSourceConfig;

/// `[feeds.ssf]`: a Shared Signals receiver (RFC 8935 push, RFC 8936 poll;
/// path default `/ssf/events`). The first ten keys are those of
/// [`FeedSourceConfig`] ([`SsfConfig::source`]).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SsfConfig {
    /// Off by default.
    pub enabled: bool,
    /// The push endpoint's path on the client listener.
    pub path: Option<String>,
    /// The transmitter's `iss`.
    pub issuer: Option<String>,
    /// The stream's `aud`.
    pub audience: Option<String>,
    /// The transmitter's JWKS: `https://`, or `http://` to a loopback host.
    pub jwks_url: Option<String>,
    /// A JWKS file, read at start and on SIGHUP.
    pub jwks_file: Option<PathBuf>,
    /// Clock tolerance for `iat`, `exp`, `nbf`.
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    /// How often `jwks_url` is refetched.
    #[serde(with = "humantime_serde")]
    pub refresh_interval: Duration,
    /// The least time between two fetches of `jwks_url`.
    #[serde(with = "humantime_serde")]
    pub min_refresh_interval: Duration,
    /// The bound on one fetch of `jwks_url`.
    #[serde(with = "humantime_serde")]
    pub fetch_timeout: Duration,
    /// The exact `Authorization` value a pushing transmitter must send
    /// (e.g. `"Bearer <secret>"`); unset, pushes are authenticated by
    /// their signature alone.
    pub authorization_header: Option<String>,
    /// How subject identifiers map to revgate attributes.
    pub subjects: SsfSubjectsConfig,
    /// `[feeds.ssf.poll]`: poll the transmitter (as well as taking pushes
    /// when `path` is served).
    pub poll: Option<SsfPollConfig>,
}

impl Default for SsfConfig {
    fn default() -> Self {
        let d = FeedSourceConfig::default();
        SsfConfig {
            enabled: d.enabled,
            path: d.path,
            issuer: d.issuer,
            audience: d.audience,
            jwks_url: d.jwks_url,
            jwks_file: d.jwks_file,
            leeway: d.leeway,
            refresh_interval: d.refresh_interval,
            min_refresh_interval: d.min_refresh_interval,
            fetch_timeout: d.fetch_timeout,
            authorization_header: None,
            subjects: SsfSubjectsConfig::default(),
            poll: None,
        }
    }
}

impl SsfConfig {
    /// The keys every feed shares.
    pub fn source(&self) -> FeedSourceConfig {
        FeedSourceConfig {
            enabled: self.enabled,
            path: self.path.clone(),
            issuer: self.issuer.clone(),
            audience: self.audience.clone(),
            jwks_url: self.jwks_url.clone(),
            jwks_file: self.jwks_file.clone(),
            leeway: self.leeway,
            refresh_interval: self.refresh_interval,
            min_refresh_interval: self.min_refresh_interval,
            fetch_timeout: self.fetch_timeout,
        }
    }
}

/// Where a subject identifier format's value goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubjectTarget {
    /// The credential attribute `sub` (what scope rules match).
    Sub,
    /// Not mapped: an event naming only such a subject revokes nothing
    /// (counted as `unmapped`).
    Ignore,
}

/// `[feeds.ssf.subjects]`: subject identifier formats (RFC 9493) ->
/// attributes. A `complex` subject's `user` member is mapped by its own
/// format; its `tenant` member becomes the rule's `org` when `tenant_org`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SsfSubjectsConfig {
    /// `iss_sub`: its `sub` (default `sub`).
    pub iss_sub: SubjectTarget,
    /// `email`: the address (default `ignore`; `sub` when tokens name users
    /// by email).
    pub email: SubjectTarget,
    /// `opaque`: its `id` (default `ignore`).
    pub opaque: SubjectTarget,
    /// `phone_number` (default `ignore`).
    pub phone_number: SubjectTarget,
    /// Accepted `iss` of `iss_sub` subjects; empty: the feed's issuer only.
    pub iss_sub_issuers: Vec<String>,
    /// A complex subject's `tenant` (`opaque` `id` or `iss_sub` `sub`)
    /// becomes the scope rule's `org`.
    pub tenant_org: bool,
}

impl Default for SsfSubjectsConfig {
    fn default() -> Self {
        SsfSubjectsConfig {
            iss_sub: SubjectTarget::Sub,
            email: SubjectTarget::Ignore,
            opaque: SubjectTarget::Ignore,
            phone_number: SubjectTarget::Ignore,
            iss_sub_issuers: Vec::new(),
            tenant_org: false,
        }
    }
}

/// `[feeds.ssf.poll]`: RFC 8936 polling.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SsfPollConfig {
    /// The transmitter's poll endpoint (`https://`, or loopback `http://`).
    pub url: String,
    /// The wait between polls when the transmitter has nothing more.
    #[serde(default = "poll_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// The `Authorization` value sent (e.g. `"Bearer <token>"`).
    #[serde(default)]
    pub authorization_header: Option<String>,
    /// Most SETs asked for per poll (`maxEvents`).
    #[serde(default = "poll_max_events")]
    pub max_events: u32,
    /// How long the poller's lease in Redis lasts (renewed every third of
    /// it): the longest polling stops after the poller dies.
    #[serde(default = "poll_lease", with = "humantime_serde")]
    pub lease: Duration,
    /// The bound on one poll request.
    #[serde(default = "poll_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

fn poll_interval() -> Duration {
    Duration::from_secs(5)
}
fn poll_max_events() -> u32 {
    100
}
fn poll_lease() -> Duration {
    Duration::from_secs(15)
}
fn poll_timeout() -> Duration {
    Duration::from_secs(5)
}
