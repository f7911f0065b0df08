//! The checked configuration the rest of the gateway reads: [`Settings`],
//! built only by [`Config::validate`](super::Config::validate), so every
//! value here has passed its section's checks (durations within their caps,
//! addresses parsed, routes ordered).
//!
//! Modules read settings through the typed accessors below rather than
//! through `raw`, which stays public only until the request paths
//! (`proxy.rs`, `h1/`) move to the accessors.

use std::net::SocketAddr;
use std::time::Duration;

use super::{
    AdminConfig, Config, LogConfig, LogFormat, RateLimitConfig, ServerTlsConfig, StoreConfig,
    UpstreamConfig,
};
use crate::credentials::{AttributeSources, CredentialSources};
use crate::dialect::{DialectKind, DialectSecrets, RevokeMode};

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
    /// `builtin:ok` / `builtin:echo`: answered in the gateway, nothing
    /// forwarded ([`crate::builtin`]; load tests and demos only). The
    /// other fields then hold a placeholder (`http://builtin.invalid`).
    pub builtin: Option<crate::builtin::Builtin>,
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
    /// `family`, when set (else the dialect's default).
    pub family: Option<crate::store::family::Reach>,
}

/// The checked configuration.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The file as loaded (for the parts used as-is).
    pub(super) raw: Config,
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
    /// `[identity.introspection]`, checked.
    pub(super) introspection: Option<crate::identity::IntrospectionSettings>,
    /// `[feeds]`, checked.
    pub(super) feeds: crate::feeds::FeedSettings,
}

// === impl Settings ===

/// The listener's connection settings, as `server.rs` takes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerSettings {
    /// `server.max_header_bytes`.
    pub max_header_bytes: usize,
    /// `server.h1_fast_path`.
    pub fast_path: bool,
    /// `server.io_threads`, resolved (0 = one per CPU).
    pub io_threads: usize,
    /// `server.body_idle_timeout`.
    pub body_idle_timeout: Duration,
    /// `server.drain_timeout`.
    pub drain_timeout: Duration,
    /// `server.max_connections`.
    pub max_connections: usize,
    /// `server.h2_keepalive_interval`.
    pub h2_keepalive_interval: Duration,
    /// `server.h2_keepalive_timeout`.
    pub h2_keepalive_timeout: Duration,
    /// `server.h2_max_concurrent_streams`.
    pub h2_max_concurrent_streams: u32,
    /// `server.upgrade_idle_timeout`.
    pub upgrade_idle_timeout: Duration,
}

/// How long a revocation is kept: `tokens.clock_skew` past a JWT's `exp`,
/// `tokens.max_lifetime` for a token without one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lifetimes {
    /// `tokens.max_lifetime`.
    pub max_lifetime: Duration,
    /// `tokens.clock_skew`.
    pub clock_skew: Duration,
}

impl Settings {
    /// The listener's connection settings (`[server]`).
    pub fn server(&self) -> ServerSettings {
        let s = &self.raw.server;
        ServerSettings {
            max_header_bytes: s.max_header_bytes,
            fast_path: s.h1_fast_path,
            io_threads: s.io_thread_count(),
            body_idle_timeout: s.body_idle_timeout,
            drain_timeout: s.drain_timeout,
            max_connections: s.max_connections,
            h2_keepalive_interval: s.h2_keepalive_interval,
            h2_keepalive_timeout: s.h2_keepalive_timeout,
            h2_max_concurrent_streams: s.h2_max_concurrent_streams,
            upgrade_idle_timeout: s.upgrade_idle_timeout,
        }
    }

    /// `[server.tls]`, when TLS is on (both files checked to exist).
    pub fn tls(&self) -> Option<&ServerTlsConfig> {
        self.raw.server.tls.as_ref()
    }

    /// `server.body_idle_timeout` (at most 24h).
    pub fn body_idle_timeout(&self) -> Duration {
        self.raw.server.body_idle_timeout
    }

    /// `server.upgrade_idle_timeout` (at most 24h).
    pub fn upgrade_idle_timeout(&self) -> Duration {
        self.raw.server.upgrade_idle_timeout
    }

    /// `server.io_threads`, resolved (0 = one per CPU).
    pub fn io_threads(&self) -> usize {
        self.raw.server.io_thread_count()
    }

    /// `[upstream]`: connect and response timeouts (capped), pool, TLS files.
    pub fn upstream(&self) -> &UpstreamConfig {
        &self.raw.upstream
    }

    /// `upstream.response_header_timeout` (at most 24h).
    pub fn response_header_timeout(&self) -> Duration {
        self.raw.upstream.response_header_timeout
    }

    /// `tokens.fingerprint_key` (checked to be 64 hex characters).
    pub fn fingerprint_key_hex(&self) -> Option<&str> {
        self.raw.tokens.fingerprint_key.as_deref()
    }

    /// `tokens.max_lifetime` and `tokens.clock_skew`.
    pub fn lifetimes(&self) -> Lifetimes {
        Lifetimes {
            max_lifetime: self.raw.tokens.max_lifetime,
            clock_skew: self.raw.tokens.clock_skew,
        }
    }

    /// `[families]`.
    pub fn families(&self) -> &super::FamiliesConfig {
        &self.raw.families
    }

    /// `tokens.form_body_limit` (0 = form bodies pass unjudged).
    pub fn form_body_limit(&self) -> usize {
        self.raw.tokens.form_body_limit
    }

    /// `[identity]`.
    pub fn identity(&self) -> &super::IdentityConfig {
        &self.raw.identity
    }

    /// `tokens.revoke_by_jti`.
    pub fn revoke_by_jti(&self) -> bool {
        self.raw.tokens.revoke_by_jti
    }

    /// `[store]`.
    pub fn store(&self) -> &StoreConfig {
        &self.raw.store
    }

    /// `revoke.max_body_bytes`.
    pub fn revoke_max_body_bytes(&self) -> usize {
        self.raw.revoke.max_body_bytes
    }

    /// `revoke.max_scopes_per_subject`.
    pub fn max_scopes_per_subject(&self) -> usize {
        self.raw.revoke.max_scopes_per_subject
    }

    /// `[revoke.rate_limit]`.
    pub fn revoke_rate_limit(&self) -> &RateLimitConfig {
        &self.raw.revoke.rate_limit
    }

    /// `[admin]`.
    pub fn admin(&self) -> &AdminConfig {
        &self.raw.admin
    }

    /// `admin.token` (at least 16 characters), when set.
    pub fn admin_token(&self) -> Option<&str> {
        self.raw.admin.token.as_deref()
    }

    /// `[admin.rate_limit]`.
    pub fn admin_rate_limit(&self) -> &RateLimitConfig {
        &self.raw.admin.rate_limit
    }

    /// `[log]`.
    pub fn log(&self) -> &LogConfig {
        &self.raw.log
    }

    /// `log.format`.
    pub fn log_format(&self) -> LogFormat {
        self.raw.log.format
    }

    /// `[identity.introspection]`, when set: the endpoint (https or
    /// loopback http), its Basic authorization, timings within their bounds,
    /// the member names resolved against `[tokens.claims]`.
    pub fn introspection(&self) -> Option<&crate::identity::IntrospectionSettings> {
        self.introspection.as_ref()
    }

    /// `[feeds]`: the enabled feeds, their key sources read or parsed.
    pub fn feeds(&self) -> &crate::feeds::FeedSettings {
        &self.feeds
    }

    /// `log.access_log`.
    pub fn access_log(&self) -> bool {
        self.raw.log.access_log
    }

    /// `log.access_log_format`, or the one `log.format` implies.
    pub fn access_log_format(&self) -> super::AccessLogFormat {
        use super::AccessLogFormat;
        self.raw
            .log
            .access_log_format
            .unwrap_or(match self.raw.log.format {
                LogFormat::Text => AccessLogFormat::Text,
                LogFormat::Json => AccessLogFormat::Json,
            })
    }

    /// Where the access log goes (`log.access_log_path`, else stderr).
    pub fn access_log_destination(&self) -> crate::accesslog::Destination {
        match &self.raw.log.access_log_path {
            Some(p) => crate::accesslog::Destination::File(p.clone()),
            None => crate::accesslog::Destination::Stderr,
        }
    }

    /// `tracing.request_id`.
    pub fn request_id(&self) -> bool {
        self.raw.tracing.request_id
    }

    /// `[tracing]`.
    pub fn tracing(&self) -> &super::TracingConfig {
        &self.raw.tracing
    }
}
