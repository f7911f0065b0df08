//! Validation: [`Config::validate`] checks the file section by section, each
//! section's function returning the typed parts it builds, and assembles the
//! [`Settings`]. Every error names the offending key.
//!
//! Every configured duration has an upper bound (and most a lower one):
//! deadlines are computed as `Instant + Duration` on the request path and
//! in background tasks, and std's addition panics on overflow, so a
//! duration absurdly large in the file must be refused here, at start-up
//! or on SIGHUP, never discovered on a request. The bounds are generous
//! (a day for anything on a request's path) and are in the error message.

use std::net::SocketAddr;
use std::time::Duration;

use super::{
    Config, ConfigError, DialectSetting, RateLimitConfig, Route, Settings, UpstreamUrl,
    VerifyConfig,
};
use crate::credentials::{AttributeSources, CredentialSources, IdentityHeaders};
use crate::dialect::{DialectKind, DialectSecrets};

pub(super) const MINUTE: Duration = Duration::from_secs(60);
pub(super) const HOUR: Duration = Duration::from_secs(3600);
pub(super) const DAY: Duration = Duration::from_secs(24 * 3600);
/// humantime's year (365.25 days), so that the bound prints as "10years".
pub(super) const YEAR: Duration = Duration::from_secs(31_557_600);

/// Refuses `d` outside `min..=max`; the message says both bounds (e.g.
/// "must be between 1ms and 1day").
pub(super) fn within(
    key: &str,
    d: Duration,
    min: Duration,
    max: Duration,
) -> Result<(), ConfigError> {
    if d < min || d > max {
        let message = if min.is_zero() {
            format!("must be at most {}", humantime::format_duration(max))
        } else {
            format!(
                "must be between {} and {}",
                humantime::format_duration(min),
                humantime::format_duration(max)
            )
        };
        return Err(ConfigError::new(key, message));
    }
    Ok(())
}

/// The least a duration that must be "more than 0" may be.
pub(super) const MIN: Duration = Duration::from_millis(1);

impl Config {
    /// Checks every key and builds the [`Settings`].
    pub fn validate(&self) -> Result<Settings, ConfigError> {
        let listen = self.validate_server()?;
        self.validate_upstream()?;
        let routes = self.validate_routes()?;
        let (credential_sources, attribute_sources, verify) = self.validate_tokens()?;
        self.validate_store()?;
        let (dialects, dialect_secrets) = self.validate_revoke()?;
        let admin_listen = self.validate_admin()?;
        self.validate_log()?;
        self.validate_issuance()?;
        let introspection = self.validate_identity()?;
        self.validate_tracing()?;
        let paths: Vec<&str> = dialects.iter().map(|d| d.path.as_str()).collect();
        let feeds = self.feeds.validate(&paths)?;
        Ok(Settings {
            raw: self.clone(),
            listen,
            admin_listen,
            routes,
            credential_sources,
            attribute_sources,
            dialects,
            dialect_secrets,
            verify,
            introspection,
            feeds,
        })
    }

    /// `[[identity.issuance]]`: each token endpoint a path and a method,
    /// each field name and static value non-empty.
    fn validate_issuance(&self) -> Result<(), ConfigError> {
        for (i, e) in self.identity.issuance.iter().enumerate() {
            let key = |k: &str| format!("identity.issuance[{i}].{k}");
            if !e.path.starts_with('/') {
                return Err(ConfigError::new(key("path"), "must start with /"));
            }
            if http::Method::from_bytes(e.method.as_bytes()).is_err() {
                return Err(ConfigError::new(key("method"), "is not an HTTP method"));
            }
            let named = [
                ("fields.sub", &e.fields.sub),
                ("fields.org", &e.fields.org),
                ("fields.provider", &e.fields.provider),
                ("provider", &e.provider),
                ("org", &e.org),
            ];
            for (k, v) in named {
                if v.as_deref().is_some_and(str::is_empty) {
                    return Err(ConfigError::new(key(k), "must not be empty"));
                }
            }
        }
        Ok(())
    }

    /// `[identity]`: `[identity.introspection]` (the endpoint, its client
    /// pair, timings, the cache bound, the response's member names).
    fn validate_identity(
        &self,
    ) -> Result<Option<crate::identity::IntrospectionSettings>, ConfigError> {
        let Some(i) = &self.identity.introspection else {
            return Ok(None);
        };
        let uri = super::verify::secure_url(
            "identity.introspection.url",
            &i.url,
            "raw tokens and the client secret would cross the network in the clear",
        )?;
        let authorization = match (&i.client_id, &i.client_secret) {
            (Some(id), Some(secret)) => {
                if id.is_empty() {
                    return Err(ConfigError::new(
                        "identity.introspection.client_id",
                        "must not be empty",
                    ));
                }
                Some(
                    crate::identity::introspection::basic_authorization(id, secret).ok_or_else(
                        || {
                            ConfigError::new(
                                "identity.introspection.client_id",
                                "cannot be sent in an Authorization header",
                            )
                        },
                    )?,
                )
            }
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "identity.introspection.client_secret",
                    "required with client_id",
                ))
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "identity.introspection.client_id",
                    "required with client_secret",
                ))
            }
        };
        within("identity.introspection.timeout", i.timeout, MIN, MINUTE)?;
        within("identity.introspection.cache_ttl", i.cache_ttl, MIN, DAY)?;
        within(
            "identity.introspection.negative_ttl",
            i.negative_ttl,
            MIN,
            DAY,
        )?;
        if !(1..=100_000_000).contains(&i.max_entries) {
            return Err(ConfigError::new(
                "identity.introspection.max_entries",
                "must be between 1 and 100000000",
            ));
        }
        let claims = &self.tokens.claims;
        let f = &i.fields;
        let mut fields = crate::credentials::ClaimNames::default();
        for (key, target, set, default) in [
            ("sub", &mut fields.sub, &f.sub, &claims.sub),
            ("org", &mut fields.org, &f.org, &claims.org),
            (
                "provider",
                &mut fields.provider,
                &f.provider,
                &claims.provider,
            ),
            ("iat", &mut fields.iat, &f.iat, &claims.iat),
            ("exp", &mut fields.exp, &f.exp, &claims.exp),
        ] {
            match set {
                Some(name) if name.is_empty() => {
                    return Err(ConfigError::new(
                        format!("identity.introspection.fields.{key}"),
                        "must not be empty",
                    ))
                }
                Some(name) => *target = name.clone(),
                None => *target = default.clone(),
            }
        }
        Ok(Some(crate::identity::IntrospectionSettings {
            uri,
            authorization,
            timeout: i.timeout,
            cache_ttl: i.cache_ttl,
            negative_ttl: i.negative_ttl,
            max_entries: i.max_entries,
            on_error: i.on_error,
            fields,
        }))
    }

    /// Every error at once, one per section at most (a section stops at its
    /// first bad key, since later checks in it build on earlier ones), for
    /// `check-config` and start-up. Empty when [`Config::validate`] passes.
    pub fn check_all(&self) -> Vec<ConfigError> {
        let errors: Vec<ConfigError> = [
            self.validate_server().err(),
            self.validate_upstream().err(),
            self.validate_routes().err(),
            self.validate_tokens().err(),
            self.validate_store().err(),
            self.validate_revoke().err(),
            self.validate_admin().err(),
            self.validate_log().err(),
            self.validate_tracing().err(),
        ]
        .into_iter()
        .flatten()
        .collect();
        if errors.is_empty() {
            // Whatever `validate` checks across sections.
            return self.validate().err().into_iter().collect();
        }
        errors
    }

    /// `[tracing]`: the OTLP endpoint (plain `http://`: a collector beside
    /// the gateway), the sample ratio, the export times.
    fn validate_tracing(&self) -> Result<(), ConfigError> {
        let t = &self.tracing;
        if !t.otlp_endpoint.is_empty() {
            let ok = t
                .otlp_endpoint
                .parse::<http::Uri>()
                .ok()
                .is_some_and(|u| u.scheme_str() == Some("http") && u.host().is_some());
            if !ok {
                return Err(ConfigError::new(
                    "tracing.otlp_endpoint",
                    format!(
                        "expected http://host:port/v1/traces (OTLP/HTTP), got {:?}",
                        t.otlp_endpoint
                    ),
                ));
            }
        }
        if t.service_name.is_empty() {
            return Err(ConfigError::new(
                "tracing.service_name",
                "must not be empty",
            ));
        }
        if !(0.0..=1.0).contains(&t.sample_ratio) {
            return Err(ConfigError::new(
                "tracing.sample_ratio",
                "must be between 0 and 1",
            ));
        }
        within("tracing.export_interval", t.export_interval, MIN, HOUR)?;
        within("tracing.export_timeout", t.export_timeout, MIN, HOUR)?;
        Ok(())
    }

    /// `[server]`: the listen address, limits, timeouts, TLS files.
    fn validate_server(&self) -> Result<SocketAddr, ConfigError> {
        let s = &self.server;
        let listen = parse_addr("server.listen", &s.listen)?;
        if s.io_threads > 1024 {
            return Err(ConfigError::new(
                "server.io_threads",
                "must be at most 1024 (0 = one per CPU)",
            ));
        }
        if s.max_connections == 0 {
            return Err(ConfigError::new(
                "server.max_connections",
                "must be positive",
            ));
        }
        if s.h2_max_concurrent_streams == 0 {
            return Err(ConfigError::new(
                "server.h2_max_concurrent_streams",
                "must be positive",
            ));
        }
        for (key, d) in [
            ("server.body_idle_timeout", s.body_idle_timeout),
            ("server.h2_keepalive_interval", s.h2_keepalive_interval),
            ("server.h2_keepalive_timeout", s.h2_keepalive_timeout),
            ("server.upgrade_idle_timeout", s.upgrade_idle_timeout),
        ] {
            within(key, d, MIN, DAY)?;
        }
        // 0 is allowed: stop at once, cutting in-flight requests.
        within("server.drain_timeout", s.drain_timeout, Duration::ZERO, DAY)?;
        if s.max_header_bytes < 8192 {
            return Err(ConfigError::new(
                "server.max_header_bytes",
                "must be at least 8192",
            ));
        }
        if let Some(tls) = &s.tls {
            for (key, path) in [("server.tls.cert", &tls.cert), ("server.tls.key", &tls.key)] {
                if !path.is_file() {
                    return Err(ConfigError::new(
                        key,
                        format!("no such file: {}", path.display()),
                    ));
                }
            }
            crate::tls::sni::validate(&tls.certificates)?;
        }
        Ok(listen)
    }

    /// `[upstream]`: TLS files and timeouts (the URL is checked with the routes).
    fn validate_upstream(&self) -> Result<(), ConfigError> {
        let u = &self.upstream;
        if u.client_cert.is_some() != u.client_key.is_some() {
            return Err(ConfigError::new(
                "upstream.client_cert",
                "client_cert and client_key go together",
            ));
        }
        for (key, path) in [
            ("upstream.ca_file", &u.ca_file),
            ("upstream.client_cert", &u.client_cert),
            ("upstream.client_key", &u.client_key),
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
        within("upstream.connect_timeout", u.connect_timeout, MIN, HOUR)?;
        within(
            "upstream.response_header_timeout",
            u.response_header_timeout,
            MIN,
            DAY,
        )?;
        within(
            "upstream.pool_idle_timeout",
            u.pool_idle_timeout,
            Duration::ZERO,
            DAY,
        )?;
        Ok(())
    }

    /// `[[routes]]` and `upstream.url`: most specific first, the default last.
    fn validate_routes(&self) -> Result<Vec<Route>, ConfigError> {
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
        Ok(routes)
    }

    /// `[tokens]`: the key, limits, lifetimes, where credentials and
    /// attributes are read from, and `[tokens.verify]`.
    #[allow(clippy::type_complexity)]
    fn validate_tokens(
        &self,
    ) -> Result<
        (
            CredentialSources,
            AttributeSources,
            Option<crate::identity::VerifySettings>,
        ),
        ConfigError,
    > {
        let t = &self.tokens;
        if let Some(k) = &t.fingerprint_key {
            crate::credentials::FingerprintKey::from_hex(k)
                .map_err(|e| ConfigError::new("tokens.fingerprint_key", e.to_string()))?;
        }
        if t.form_body_limit > 16 * 1024 * 1024 {
            return Err(ConfigError::new(
                "tokens.form_body_limit",
                "must be at most 16777216 bytes (it is held in memory while judged)",
            ));
        }
        // A revocation kept beyond ten years is a mistake in the file.
        within(
            "tokens.max_lifetime",
            t.max_lifetime,
            Duration::from_secs(1),
            10 * YEAR,
        )?;
        within("tokens.clock_skew", t.clock_skew, Duration::ZERO, HOUR)?;
        let mut api_key_headers = Vec::new();
        for (i, h) in t.api_key_headers.iter().enumerate() {
            let name = header_name(&format!("tokens.api_key_headers[{i}]"), h)?;
            if name == http::header::AUTHORIZATION {
                return Err(ConfigError::new(
                    format!("tokens.api_key_headers[{i}]"),
                    "Authorization is read as a Bearer header already",
                ));
            }
            api_key_headers.push(name);
        }
        let ih = &t.identity_headers;
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
            ("tokens.claims.sub", &t.claims.sub),
            ("tokens.claims.org", &t.claims.org),
            ("tokens.claims.provider", &t.claims.provider),
            ("tokens.claims.iat", &t.claims.iat),
            ("tokens.claims.exp", &t.claims.exp),
        ] {
            if v.is_empty() {
                return Err(ConfigError::new(key, "must not be empty"));
            }
        }
        let verify = t.verify.as_ref().map(VerifyConfig::validate).transpose()?;
        Ok((
            CredentialSources {
                query_param: t.query_param,
                api_key_headers,
            },
            AttributeSources {
                claims: t.claims.clone(),
                identity_headers,
            },
            verify,
        ))
    }

    /// `[store]`: the URL (and the key a shared store needs), journal,
    /// bloom sizing, intervals.
    fn validate_store(&self) -> Result<(), ConfigError> {
        let s = &self.store;
        let url_ok = s.url == "memory"
            || [
                "redis://",
                "rediss://",
                "redis+sentinel://",
                "rediss+sentinel://",
                "redis+cluster://",
                "rediss+cluster://",
            ]
            .iter()
            .any(|p| s.url.starts_with(p) && s.url.len() > p.len());
        if !url_ok {
            return Err(ConfigError::new(
                "store.url",
                format!("expected memory, redis://host:port/db, rediss://..., redis+sentinel://host:port,.../master or redis+cluster://host:port,...; got {:?}", s.url),
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
        within(
            "store.maintenance_interval",
            s.maintenance_interval,
            MIN,
            DAY,
        )?;
        if let Some(d) = s.max_staleness {
            within("store.max_staleness", d, MIN, DAY)?;
        }
        // 0 is allowed: every bloom hit asks Redis.
        within("store.confirm_ttl", s.confirm_ttl, Duration::ZERO, HOUR)?;
        if s.key_prefix.is_empty() || s.key_prefix.contains(['{', '}', ' ']) {
            return Err(ConfigError::new(
                "store.key_prefix",
                "must be non-empty, without braces or spaces",
            ));
        }
        if s.stream_maxlen == 0 {
            return Err(ConfigError::new("store.stream_maxlen", "must be positive"));
        }
        within(
            "store.lease",
            s.lease,
            Duration::from_millis(200),
            Duration::from_secs(60),
        )?;
        if s.confirm_timeout <= s.lease || s.confirm_timeout > Duration::from_secs(120) {
            return Err(ConfigError::new(
                "store.confirm_timeout",
                "must be longer than store.lease (a paused instance is waited for that long) and at most 2m",
            ));
        }
        if s.redis.min_replicas_acked > 16 {
            return Err(ConfigError::new(
                "store.redis.min_replicas_acked",
                "must be between 0 and 16",
            ));
        }
        within(
            "store.redis.wait_timeout",
            s.redis.wait_timeout,
            MIN,
            Duration::from_secs(60),
        )?;
        Ok(())
    }

    /// `[revoke]`: limits, the rate limit, each dialect's path, mode and secrets.
    fn validate_revoke(&self) -> Result<(Vec<DialectSetting>, DialectSecrets), ConfigError> {
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
        let secrets = DialectSecrets {
            nylas_api_keys: r.nylas.api_keys.clone(),
            onelogin_clients: r
                .onelogin
                .clients
                .iter()
                .map(|c| (c.client_id.clone(), c.client_secret.clone()))
                .collect(),
        };
        Ok((dialects, secrets))
    }

    /// `[admin]`: the listener, its token (required off loopback), its rate limit.
    fn validate_admin(&self) -> Result<SocketAddr, ConfigError> {
        let admin_listen = parse_addr("admin.listen", &self.admin.listen)?;
        self.admin.rate_limit.validate("admin.rate_limit")?;
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
        Ok(admin_listen)
    }

    /// `[log]`: the filter parses.
    fn validate_log(&self) -> Result<(), ConfigError> {
        if !self.log.filter.is_empty() {
            tracing_subscriber::EnvFilter::try_new(&self.log.filter)
                .map_err(|e| ConfigError::new("log.filter", e.to_string()))?;
        }
        Ok(())
    }
}

// === impl RateLimitConfig ===

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
